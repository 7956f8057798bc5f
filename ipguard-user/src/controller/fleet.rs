//! The controller's side of the fleet (`[cluster]`): which of its decisions it shares,
//! and applying the decisions of other nodes under the same checks as the API's. No I/O
//! here: the link task (`crate::cluster`) carries [`SharedOp`]s to and from Redis.

use std::{sync::Arc, time::Duration};

use ipnet::IpNet;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::Notify;

/// A decision's identity in the shared set (its key in Redis, parsed).
pub type SetKey = (ListKind, IpNet);

use super::{Controller, Durability};
use crate::{
    cluster::wire::{Decision, SharedOp},
    config::{ClusterConfig, SharedOrigin},
    dataplane::Backend,
    duration::MAX_DURATION,
    model::{ListKind, Now, Origin, Ts},
    policy::engine::Command,
};

/// Queued changes to publish beyond which the oldest additions are dropped (a resync
/// publishes what is still in force anyway); removals are kept.
pub const MAX_OUTGOING: usize = 100_000;

/// Decisions applied as one change (one journal write, one table batch).
const APPLY_CHUNK: usize = 100_000;

/// Who made a decision applied from the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub node: String,
    pub origin: SharedOrigin,
    pub at: Ts,
}

/// The state of the link to Redis, as the link task reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    /// Since when it is in this state.
    pub since: Ts,
    pub last_error: Option<String>,
    /// Nodes seen, with their last heartbeat.
    pub nodes: Vec<(String, Ts)>,
    /// Decisions in the shared set at the last count.
    pub shared: u64,
    /// Changes waiting to be published.
    pub queued: u64,
    /// Lag of the last decision applied from another node (its `at` to now).
    pub last_lag: Option<Duration>,
    /// Duration of the last resync and how many decisions it read.
    pub last_resync: Option<(Duration, u64)>,
    pub resyncs: u64,
}

/// Counts of what the fleet did here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    pub published: u64,
    pub applied: u64,
    /// Refused by the local checks (protected, whitelisted, too broad, too far).
    pub rejected: u64,
    /// Not applied: an origin this node does not accept, expired, or no longer than a
    /// local entry.
    pub skipped: u64,
    pub removed: u64,
    /// Additions dropped from a full queue.
    pub dropped: u64,
}

/// See the module doc.
pub struct Fleet {
    pub node: String,
    share: Vec<SharedOrigin>,
    apply: Vec<SharedOrigin>,
    /// Decisions applied from other nodes, by (list, prefix).
    remote: FxHashMap<SetKey, Remote>,
    outgoing: Vec<SharedOp>,
    wake: Arc<Notify>,
    pub link: LinkState,
    pub counts: FleetCounts,
    /// Propagation delay of applied decisions, seconds.
    pub lag: prometheus_client::metrics::histogram::Histogram,
}

impl Fleet {
    pub fn new(config: &ClusterConfig) -> Self {
        Self {
            node: config.node.clone(),
            share: config.share.clone(),
            apply: config.apply.clone(),
            remote: FxHashMap::default(),
            outgoing: Vec::new(),
            wake: Arc::new(Notify::new()),
            link: LinkState::default(),
            counts: FleetCounts::default(),
            lag: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
            ),
        }
    }

    /// Woken whenever there is something to publish.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn push(&mut self, op: SharedOp) {
        if self.outgoing.len() >= MAX_OUTGOING {
            if let Some(i) = self
                .outgoing
                .iter()
                .position(|o| matches!(o, SharedOp::Put(_)))
            {
                self.outgoing.remove(i);
                self.counts.dropped += 1;
            }
        }
        self.outgoing.push(op);
        self.wake.notify_one();
    }

    /// Queues the shareable part of a carried-out change. Changes that came from the fleet
    /// (`by` = `cluster:…`) are not sent back; expiries are not sent (every node expires
    /// at the same absolute time).
    fn note(&mut self, cmds: &[Command], by: &str, why: &str, now: Ts) {
        if by.starts_with("cluster:") {
            return;
        }
        for c in cmds {
            match c {
                Command::Block {
                    net,
                    list,
                    until,
                    reason,
                    origin,
                } => {
                    self.remote.remove(&(*list, *net));
                    let Some(shared) = shared_origin(*origin) else {
                        continue;
                    };
                    if *list == ListKind::Whitelist || !self.share.contains(&shared) {
                        continue;
                    }
                    self.push(SharedOp::Put(Decision {
                        net: *net,
                        list: *list,
                        until: *until,
                        origin: shared,
                        reason: reason.clone(),
                        node: self.node.clone(),
                        at: now,
                    }));
                }
                Command::Unblock { net, list } => {
                    self.remote.remove(&(*list, *net));
                    if why == "removed" && *list != ListKind::Whitelist {
                        self.push(SharedOp::Remove {
                            list: *list,
                            net: *net,
                            node: self.node.clone(),
                            at: now,
                        });
                    }
                }
            }
        }
    }
}

/// The fleet's name for a local origin; `None` for what is never shared (the config's
/// lists, decisions that came from the fleet).
pub fn shared_origin(origin: Origin) -> Option<SharedOrigin> {
    match origin {
        Origin::Api => Some(SharedOrigin::Manual),
        Origin::RateLimit => Some(SharedOrigin::Policy),
        Origin::Report => Some(SharedOrigin::Report),
        Origin::Config | Origin::Cluster => None,
    }
}

impl<B: Backend> Controller<B> {
    /// Shares decisions with the fleet from now on (`[cluster]`).
    pub fn join_fleet(&mut self, config: &ClusterConfig) -> Arc<Notify> {
        let fleet = Fleet::new(config);
        let wake = fleet.wake();
        self.fleet = Some(fleet);
        wake
    }

    /// The fleet state, if this node is in one.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// The link task's report of its state.
    pub fn set_link(&mut self, update: impl FnOnce(&mut LinkState)) {
        if let Some(f) = self.fleet.as_mut() {
            update(&mut f.link);
        }
    }

    /// Changes waiting to be published (taken: the link task keeps them until sent).
    pub fn take_outgoing(&mut self) -> Vec<SharedOp> {
        self.fleet
            .as_mut()
            .map(|f| std::mem::take(&mut f.outgoing))
            .unwrap_or_default()
    }

    /// Counts what the link task published.
    pub fn count_published(&mut self, n: u64) {
        if let Some(f) = self.fleet.as_mut() {
            f.counts.published += n;
        }
    }

    /// The window within which reports count across the fleet, when this node shares
    /// report bans and has a report rule; `None`: reports count here only.
    pub fn fleet_report_window(&self) -> Option<Duration> {
        let f = self.fleet.as_ref()?;
        if !f.share.contains(&SharedOrigin::Report) {
            return None;
        }
        self.policy.engine().report_rule().map(|r| r.window)
    }

    /// Counts messages from Redis refused before they reached the controller.
    pub fn count_rejected(&mut self, n: u64) {
        if let Some(f) = self.fleet.as_mut() {
            f.counts.rejected += n;
        }
    }

    pub(super) fn note_fleet(&mut self, cmds: &[Command], by: &str, why: &str, now: Now) {
        if let Some(f) = self.fleet.as_mut() {
            f.note(cmds, by, why, now.wall);
        }
    }

    /// Who made the entry (list, net), if it came from the fleet.
    pub fn remote(&self, list: ListKind, net: IpNet) -> Option<&Remote> {
        self.fleet.as_ref()?.remote.get(&(list, net))
    }

    /// A whitelisted prefix that holds `net` or lies inside it, if any: the engine's
    /// covering entry, then the compiled table's entries within `net` (in prefix order,
    /// so only those are read).
    fn whitelist_overlap(&self, net: IpNet) -> Option<IpNet> {
        let net = net.trunc();
        let engine = self.policy.engine();
        if let Some(w) = engine
            .covering(ListKind::Whitelist, net.addr())
            .filter(|w| w.prefix_len() <= net.prefix_len())
        {
            return Some(w);
        }
        if net.prefix_len() == net.max_prefix_len() {
            return None;
        }
        let last = net.broadcast();
        self.policy
            .compiled()
            .range(net..)
            .take_while(|(p, _)| p.addr().is_ipv4() == last.is_ipv4() && p.addr() <= last)
            .find(|(p, e)| e.list == ipguard_common::LIST_WHITELIST && net.contains(*p))
            .map(|(p, _)| *p)
    }

    /// Why this node refuses `d` whatever its other entries, if it does: the same checks
    /// as an API request without `force`, and the whitelist.
    fn refuse_shared(&self, d: &Decision, now: Now) -> Option<String> {
        if let Some(why) = self.too_broad(d.net).or_else(|| self.lockout(d.net)) {
            return Some(why);
        }
        if let Some(w) = self.whitelist_overlap(d.net) {
            return Some(format!("{} overlaps the whitelisted {w}", d.net));
        }
        if d.until.is_some_and(|u| u > now.wall.plus(MAX_DURATION)) {
            return Some(format!("{} expires too far in the future", d.net));
        }
        None
    }

    /// Applies decisions of other nodes: each is checked like API input and against this
    /// node's whitelist and protected addresses, and never shortens a local entry. Applied
    /// decisions are automatic changes: written even when the state disk fails.
    pub fn apply_shared(&mut self, decisions: &[Decision], now: Now) -> super::Result<u64> {
        let Some(fleet) = self.fleet.as_ref() else {
            return Ok(0);
        };
        let me = fleet.node.clone();
        let accepted = fleet.apply.clone();
        let mut by_list: FxHashMap<ListKind, Vec<(IpNet, Option<Duration>, String)>> =
            FxHashMap::default();
        let mut metas: Vec<(ListKind, IpNet, Remote)> = Vec::new();
        let (mut rejected, mut skipped) = (0u64, 0u64);
        let mut seen = FxHashSet::default();
        for d in decisions {
            if d.node == me {
                continue;
            }
            if !accepted.contains(&d.origin)
                || d.until.is_some_and(|u| u <= now.wall)
                || !seen.insert((d.list, d.net))
            {
                skipped += 1;
                continue;
            }
            if let Some(why) = self.refuse_shared(d, now) {
                rejected += 1;
                tracing::warn!(net = %d.net, node = d.node, why, "refused a decision of the fleet");
                continue;
            }
            if let Some(local) = self.policy.engine().entry(d.list, d.net) {
                let same = self
                    .remote(d.list, d.net)
                    .is_some_and(|r| r.node == d.node && r.at == d.at);
                let longer = match (local.until, d.until) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(l), Some(s)) => l >= s,
                };
                if same || longer || local.origin == Origin::Config {
                    skipped += 1;
                    continue;
                }
            }
            let ttl = d.until.map(|u| u.since(now.wall));
            by_list
                .entry(d.list)
                .or_default()
                .push((d.net, ttl, d.reason.clone()));
            metas.push((
                d.list,
                d.net,
                Remote {
                    node: d.node.clone(),
                    origin: d.origin,
                    at: d.at,
                },
            ));
        }
        let mut applied = 0;
        let mut result = Ok(());
        // In chunks: a set larger than a full table still applies what fits.
        for (list, entries) in by_list {
            for chunk in entries.chunks(APPLY_CHUNK) {
                let (change, _) = self.policy.add(list, chunk, Origin::Cluster, now.wall);
                match self.carry_out(change, "cluster:fleet", "", Durability::BestEffort, now) {
                    Ok(()) => applied += chunk.len() as u64,
                    Err(e) => {
                        tracing::warn!(error = %e, list = list.as_str(), entries = chunk.len(), "cannot apply decisions of the fleet");
                        result = Err(e);
                    }
                }
            }
        }
        let lags: Vec<Duration> = decisions
            .iter()
            .filter(|d| d.node != me)
            .map(|d| now.wall.since(d.at))
            .collect();
        // What the engine holds now (a promotion may have taken a host's place). Bans
        // another node's policy made: their strikes count here too.
        let metas: Vec<_> = metas
            .into_iter()
            .filter(|(l, n, _)| {
                self.policy
                    .engine()
                    .entry(*l, *n)
                    .is_some_and(|e| e.origin == Origin::Cluster)
            })
            .collect();
        let strikes: Vec<(std::net::IpAddr, ListKind, Ts)> = metas
            .iter()
            .filter(|(_, n, r)| {
                matches!(r.origin, SharedOrigin::Policy | SharedOrigin::Report)
                    && n.prefix_len() == n.max_prefix_len()
            })
            .map(|(l, n, r)| (n.addr(), *l, r.at))
            .collect();
        if !strikes.is_empty() {
            self.policy.fleet_strikes(&strikes, now.wall);
            let _ = self.persist(now);
        }
        if let Some(f) = self.fleet.as_mut() {
            for lag in &lags {
                f.lag.observe(lag.as_secs_f64());
            }
            if let Some(l) = lags.last() {
                f.link.last_lag = Some(*l);
            }
            f.remote.reserve(metas.len());
            for (l, n, r) in metas {
                f.remote.insert((l, n), r);
            }
            f.counts.applied += applied;
            f.counts.rejected += rejected;
            f.counts.skipped += skipped;
        }
        result.map(|()| applied)
    }

    /// A removal published by `node` at `at`: the entry goes if it came from the fleet, or
    /// is this node's own shareable decision made before the removal. The config's entries
    /// stay.
    pub fn remove_shared(
        &mut self,
        list: ListKind,
        net: IpNet,
        node: &str,
        at: Ts,
        now: Now,
    ) -> super::Result<bool> {
        let Some(fleet) = self.fleet.as_ref() else {
            return Ok(false);
        };
        if node == fleet.node || list == ListKind::Whitelist {
            return Ok(false);
        }
        let Some(entry) = self.policy.engine().entry(list, net) else {
            return Ok(false);
        };
        let goes = match entry.origin {
            Origin::Cluster => true,
            o => shared_origin(o).is_some() && entry.since <= at,
        };
        if !goes {
            return Ok(false);
        }
        let Some((_, change)) = self.policy.remove(list, net) else {
            return Ok(false);
        };
        self.carry_out(
            change,
            &format!("cluster:{node}"),
            "removed",
            Durability::BestEffort,
            now,
        )?;
        if let Some(f) = self.fleet.as_mut() {
            f.remote.remove(&(list, net));
            f.counts.removed += 1;
        }
        Ok(true)
    }

    /// After reading the whole shared set (a start, a reconnect): applies it, removes what
    /// was removed meanwhile (`removed`: key → when), and returns what this node holds that
    /// the set lacks (Redis lost it, or it was made while Redis was away), to publish again.
    pub fn resync_shared(
        &mut self,
        decisions: &[Decision],
        removed: &FxHashMap<SetKey, Ts>,
        now: Now,
    ) -> super::Result<Vec<Decision>> {
        let applied = self.apply_shared(decisions, now);
        let in_set: FxHashSet<SetKey> = decisions.iter().map(|d| (d.list, d.net)).collect();
        let republish = self.finish_resync(&in_set, removed, now)?;
        applied?;
        Ok(republish)
    }

    /// The end of a resync whose decisions were applied chunk by chunk
    /// ([`Controller::apply_shared`]): `in_set` holds the keys of the whole set. Removes what
    /// was removed meanwhile and returns what to publish again (see
    /// [`Controller::resync_shared`]).
    pub fn finish_resync(
        &mut self,
        in_set: &FxHashSet<SetKey>,
        removed: &FxHashMap<SetKey, Ts>,
        now: Now,
    ) -> super::Result<Vec<Decision>> {
        let Some(fleet) = self.fleet.as_ref() else {
            return Ok(Vec::new());
        };
        let me = fleet.node.clone();
        let mut gone = Vec::new();
        let mut republish = Vec::new();
        for (net, e) in self.policy.engine().entries() {
            if e.list == ListKind::Whitelist || e.until.is_some_and(|u| u <= now.wall) {
                continue;
            }
            let k = (e.list, net);
            let (node, origin, at) = match e.origin {
                Origin::Cluster => match self.remote(e.list, net) {
                    Some(r) => (r.node.clone(), r.origin, r.at),
                    // Made by a node whose decision this one no longer knows the source
                    // of (restarted while Redis was away): that node publishes it.
                    None => continue,
                },
                o => match shared_origin(o).filter(|s| fleet.share.contains(s)) {
                    Some(s) => (me.clone(), s, e.since),
                    None => continue,
                },
            };
            if let Some(when) = removed.get(&k) {
                if *when >= at {
                    gone.push((e.list, net, *when));
                    continue;
                }
            }
            if !in_set.contains(&k) {
                republish.push(Decision {
                    net,
                    list: e.list,
                    until: e.until,
                    origin,
                    reason: e.reason.clone(),
                    node,
                    at,
                });
            }
        }
        for (list, net, when) in gone {
            if let Some((_, change)) = self.policy.remove(list, net) {
                self.carry_out(
                    change,
                    "cluster:resync",
                    "removed",
                    Durability::BestEffort,
                    now,
                )?;
                if let Some(f) = self.fleet.as_mut() {
                    f.remote.remove(&(list, net));
                    f.counts.removed += 1;
                }
                tracing::info!(net = %net, list = list.as_str(), removed_at = when.rfc3339(), "removed in the fleet while away");
            }
        }
        Ok(republish)
    }
}
