//! ipguard's daemon and CLI as a library, so the privileged tests can drive the same code.

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod decision_log;
pub mod duration;
pub mod lists;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod store;
