//! Event sources that invoke functions on their own: EventBridge Scheduler
//! schedules (`schedules`) and Lambda event source mappings from queues
//! (`mappings`).
//!
//! Each source owns its rules and its background work: how it is
//! configured, how it finds work, and how it hands events to
//! `nimbus-control`'s invoke (schedules through the store's outbox: the
//! async event is committed with what caused it). This crate must not speak
//! HTTP; `nimbus-api` has the wire formats.

pub mod mappings;
pub mod schedules;
