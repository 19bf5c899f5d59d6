//! Domain types: the Lambda model's (functions, versions, aliases, layers and
//! their side configurations) and the other services' documents (objects,
//! queues, schedules, event source mappings); the rules AWS applies beyond
//! its published model (`service_rules`; the model itself is
//! `nimbus-model`'s), ARNs, limits, the zip gate, the clock and paging.
//!
//! This crate is a leaf: it does no I/O and knows nothing of HTTP or storage.
//! Its types are serialisable because the store keeps them as documents, but
//! they are not the wire format; `nimbus-wire` mirrors AWS's JSON.

pub mod arn;
pub mod clock;
pub mod error;
pub mod function;
pub mod limits;
pub mod mappings;
pub mod objects;
pub mod paging;
pub mod queues;
pub mod runtime;
pub mod schedules;
pub mod service_rules;
pub mod zipcheck;

pub use arn::{Account, FunctionRef, Qualifier};
pub use error::{Concurrency, Error, Result, ThrottleReason};
