//! ipguard's daemon and CLI as a library, so the privileged tests can drive the same code.

pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod decision_log;
pub mod duration;
pub mod lists;
pub mod net;
pub mod policy;
pub mod store;
