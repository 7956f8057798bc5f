//! The fleet (`[cluster]`): decisions shared with other nodes through one Redis.
//!
//! Redis holds the truth as data: a hash of the decisions in force (field `LIST PREFIX`,
//! value [`wire::Decision`] as JSON, with an absolute expiry), a sorted set of their
//! expiries (to clean the hash), a sorted set of removals (tombstones, so that a node that
//! was away learns what was lifted meanwhile), a heartbeat hash of the nodes, and a
//! stream of every change. A node reads the stream's last id, then the whole hash in
//! chunks (a resync: each chunk is applied while the next is read), then follows the
//! stream from that id: nothing made meanwhile is missed, and a change seen twice is
//! applied once. It publishes each change as one transaction (hash, sets and stream
//! together).
//!
//! Local safety wins: every decision read from Redis goes through
//! [`crate::controller::Controller::apply_shared`], which refuses what the API would
//! refuse without `force`, anything touching the whitelist, and never shortens a local
//! entry. While Redis is away the node keeps filtering and deciding; what it must publish
//! waits in a bounded queue, persisted in the state directory, and a resync publishes
//! again what this node holds and the set lacks (an empty, restarted Redis).

pub mod link;
mod outbox;
pub mod wire;

pub use link::run;

pub use link::{Credentials, FleetReports};
