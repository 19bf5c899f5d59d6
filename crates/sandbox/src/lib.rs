//! Linux isolation for execution environments. It knows nothing of
//! functions: callers say what limits a process gets, not why.
//!
//! Every privileged operation goes through a path the caller chooses (the
//! cgroup filesystem root), so tests run against a fake tree in a temp
//! directory. Namespaces, the root filesystem and seccomp come next (see
//! ARCHITECTURE.md for the plan).

pub mod cgroup;
pub mod factory;
pub mod namespaces;
pub mod seccomp;
pub mod users;
