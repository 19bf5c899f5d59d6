//! Event sources that invoke functions: each module says how its source is
//! configured, how it finds work and how it hands events to control's invoke.
//! `mappings`: Lambda event source mappings from queues.

pub mod mappings;
