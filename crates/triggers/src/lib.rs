//! Event sources that invoke functions on their own: EventBridge Scheduler
//! schedules (`schedules`), and later event source mappings.
//!
//! Each source owns its rules and its background work, and reaches Lambda
//! only through `nimbus-control` (is the target invocable?) and the store's
//! outbox (the async event is committed with what caused it). This crate
//! must not speak HTTP; `nimbus-api` has the wire formats.

pub mod schedules;
