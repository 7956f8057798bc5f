//! ipguard's daemon and CLI as a library, so the privileged tests can drive the same code.
//!
//! Layers, each using only the ones below it (ARCHITECTURE.md has the picture):
//! - `daemon` (the `run` event loop) and `api`, `cli`, `metrics` (the edges);
//! - `controller`: the one writer of the kernel's tables and of the persisted state;
//! - `policy` (pure decisions), `dataplane` (the XDP program and its tables), `store`
//!   (persisted state), `decision_log`;
//! - `config`, and the shared vocabulary `model`, `duration`, `net`.
//!
//! Outside tests no code may `unwrap` or `expect`: a panic on the controller's path would
//! take the daemon down under attack; errors are returned and answered instead.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod decision_log;
pub mod duration;
pub mod feeds;
pub mod geo;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod net;
pub mod policy;
pub mod store;
#[cfg(test)]
mod testing;
