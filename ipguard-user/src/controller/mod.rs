//! The controller keeps the policy and the kernel's tables in step, and is their only
//! writer: every change goes policy → journal → tables through `Controller::carry_out`,
//! and a change the tables refuse is rolled back in the policy.
//! The daemon's event loop and the API handlers reach it through one mutex.
//!
//! It never reads a clock: every call that depends on time takes a [`Now`]. Its answers
//! are domain types ([`view`]); the API turns them into JSON.

mod admin;
mod events;
pub mod fleet;
mod health;
mod mode;
pub mod protect;
mod telemetry;
pub mod view;

use std::{collections::HashMap, net::IpAddr};

use ipguard_common::{
    FloodConfig, RateConfig, FLOOD_SLOT_NS, MAX_FLOOD_CPUS, RATE_FLAG_TRACK_DROPS,
};
use ipnet::IpNet;

pub use self::{
    fleet::SetKey,
    health::{Health, Problem},
    protect::{interface_addresses, Protection, API_CLIENT_TTL},
    telemetry::{BanLabels, Telemetry},
};
use crate::{
    config::{Config, MapsConfig, RateLimit, Rule},
    dataplane::{Backend, DataplaneError, SyncReport, TableError},
    decision_log::{DecisionLog, Record},
    model::{ListKind, Now, Ts},
    policy::{
        engine::{Command, EngineState, Promotion},
        window, Changed, Policy,
    },
    store::{Store, StoreError},
};

/// Why the controller could not carry out a request. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The kernel's tables refused the change (a map is full, out of memory).
    #[error(transparent)]
    Table(#[from] TableError),
    /// Reading counters or writing the rate rules failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The change could not be made durable, so it was not made.
    #[error("cannot persist the change, so it was not made: {0}")]
    Persist(#[source] StoreError),
    /// Entry `index` of a request would lock an operator out (needs `force`).
    #[error("{why}")]
    Lockout { index: usize, why: String },
    /// The entry is the config file's: change the file, or remove it with `force`.
    #[error("{net} on the {list} comes from the config file: remove it there (and reload), or send force to remove it until the next reload")]
    ConfigEntry { list: ListKind, net: IpNet },
    /// The rules and list entries name more distinct `proto`/`ports` scopes than the
    /// compiler keeps apart.
    #[error(
        "more than {} distinct proto/ports scopes in [[rules]] and [lists]",
        crate::policy::compile::MAX_SCOPES
    )]
    TooManyScopes,
}

/// How a change must be made durable before it reaches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Acknowledged to someone (the API): refused unless it is in the journal first.
    Required,
    /// Made by the policy on its own (rate limits, expiries, reports): written to the
    /// kernel even when the disk fails, and the whole state is written once it works again.
    BestEffort,
}

type Result<T, E = ControllerError> = std::result::Result<T, E>;

/// Where the daemon runs, for status answers.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    pub interface: String,
    pub xdp_mode: String,
}

/// What the controller keeps of the config (the rest lives in the policy).
struct Settings {
    rates: Vec<RateLimit>,
    accumulate: bool,
    rules: Vec<Rule>,
    /// The config's `[lists]`, by [`ListKind::index`], to diff at a reload.
    config_lists: [Vec<IpNet>; 3],
    maps: MapsConfig,
    promote_when_full: u32,
    /// The config's `mode`, to tell at a reload whether the file's changed.
    mode: crate::model::Mode,
    /// The config's port- or protocol-scoped list entries.
    scoped_entries: u64,
}

impl Settings {
    fn of(config: &Config) -> Self {
        Self {
            rates: config.rate_limit.clone(),
            accumulate: config.accumulate,
            rules: config.rules.clone(),
            config_lists: config_lists(config),
            maps: config.maps,
            promote_when_full: config.escalation.promote_when_full,
            mode: config.mode,
            scoped_entries: config.lists.scoped.len() as u64,
        }
    }
}

fn config_lists(config: &Config) -> [Vec<IpNet>; 3] {
    [
        config.lists.whitelist.clone(),
        config.lists.graylist.clone(),
        config.lists.blacklist.clone(),
    ]
}

/// See the module doc.
pub struct Controller<B: Backend> {
    backend: B,
    policy: Policy,
    store: Option<Store>,
    log: DecisionLog,
    telemetry: Telemetry,
    placement: Placement,
    settings: Settings,
    started: Now,
    /// Last successful resolution of each hostname in the rules.
    resolved: HashMap<String, Vec<IpNet>>,
    /// Banned hosts: kernel drop count when listed, and at the last `drops` record.
    drops: HashMap<IpNet, (u64, u64)>,
    protection: Protection,
    health: Health,
    /// A journal append failed: its ops are not on disk, so the next write is a whole
    /// snapshot.
    snapshot_owed: bool,
    /// Sources near a rate limit, read again when their window closes.
    rechecks: window::Rechecks,
    /// The fleet this node shares decisions with, if any.
    fleet: Option<fleet::Fleet>,
    /// The compiled `[geo]`, for explanations (its prefixes are in the config lists).
    geo: Option<std::sync::Arc<crate::geo::GeoState>>,
    /// The feeds' entries in force (in the config lists), for explanations.
    feed_sets: crate::feeds::FeedSets,
    /// The feeds' status, as the feed task last published it.
    feed_status: Vec<crate::feeds::FeedStatus>,
}

/// Sources near a limit the controller keeps to read again (about 100 bytes each).
const MAX_RECHECKS: usize = 65_536;

impl<B: Backend> Controller<B> {
    /// Takes over a backend without persisted state (tests, benchmarks): see
    /// [`Controller::start`].
    pub fn new(
        backend: B,
        config: &Config,
        placement: Placement,
        now: Now,
    ) -> Result<(Self, SyncReport)> {
        Self::start(config, placement, None, now, move || Ok(backend))
    }

    /// Compiles the config's lists with the persisted state of `store` (its entries,
    /// expiries, strikes and ban history), then takes over the backend `backend` makes (the
    /// daemon loads the XDP program meanwhile, which preallocates its maps): writes the rate
    /// rules and makes the tables hold exactly the compiled lists. What the tables held that
    /// the lists do not (a previous daemon's pinned maps) is removed, what is missing
    /// written: the report says how much had drifted. Every change is persisted to `store`
    /// from then on.
    pub fn start(
        config: &Config,
        placement: Placement,
        store: Option<(Store, EngineState)>,
        now: Now,
        backend: impl FnOnce() -> Result<B>,
    ) -> Result<(Self, SyncReport)> {
        let mut policy = Policy::new(config.escalation.clone(), config.report);
        let settings = Settings::of(config);
        let protection = Protection::new(config.protect.clone());
        policy.set_protected(protection.nets());
        let (store, state) = match store {
            Some((store, state)) => (Some(store), Some(state)),
            None => (None, None),
        };
        let restored = state.as_ref().map_or(0, |s| s.entries.len());
        policy.load(&settings.config_lists, state, now.wall);
        mode::load(&mut policy, config);
        // The ops are not needed: the tables are synced to the whole result below.
        let _ = policy
            .set_scoped_entries(&admin::scoped_entries(config))
            .ok_or(ControllerError::TooManyScopes)?;
        if store.is_some() {
            tracing::info!(
                entries = restored,
                tracked = policy.engine().tracked(),
                "restored the persisted policy state"
            );
        }
        let mut backend = backend()?;
        backend.set_rates(&rate_config(config))?;
        backend.set_flood(&flood_config(config))?;
        let drift = backend.sync(policy.compiled(), &policy.scopes())?;
        Ok((
            Self {
                backend,
                policy,
                store,
                log: DecisionLog::disabled(),
                telemetry: Telemetry::default(),
                placement,
                settings,
                started: now,
                resolved: HashMap::new(),
                drops: HashMap::new(),
                protection,
                health: Health::default(),
                snapshot_owed: false,
                rechecks: window::Rechecks::new(MAX_RECHECKS),
                fleet: None,
                geo: None,
                feed_sets: Default::default(),
                feed_status: Vec::new(),
            },
            drift,
        ))
    }

    /// The one way a change reaches the kernel. First the journal (write-ahead: a change
    /// the kernel holds is never one a restart forgets), then the tables; if they refuse,
    /// the change is rolled back in the policy and the tables are put back as it says.
    /// `by` is who caused the change (`policy`, `config`, `api:<client>`), `why` why
    /// entries left a list (`expired`, `removed`, `config`).
    fn carry_out(
        &mut self,
        change: Changed,
        by: &str,
        why: &str,
        durability: Durability,
        now: Now,
    ) -> Result<()> {
        if let Err(e) = self.persist(now) {
            if durability == Durability::Required {
                // Nothing reached the kernel; the rollback's journal ops wait for the disk.
                let _ = self.policy.rollback();
                return Err(ControllerError::Persist(e));
            }
        }
        let written = if change.ops.is_empty() {
            Ok(())
        } else {
            self.backend.apply(&change.ops)
        };
        if let Err(e) = written {
            self.health.table_error(&e, now.wall, &self.telemetry);
            let undo = self.policy.rollback();
            // A refusal writes nothing (the tables check room first); any other failure
            // may have written part: put the tables back by the undo operations or,
            // failing that, a whole-table sync.
            if self.backend.apply(&undo).is_err() {
                if let Err(e) = self
                    .backend
                    .sync(self.policy.compiled(), &self.policy.scopes())
                {
                    tracing::error!(error = %e, "cannot restore the tables after a refused change");
                }
            }
            let _ = self.persist(now);
            return Err(e.into());
        }
        if !change.ops.is_empty() {
            self.health.tables_ok(&change.ops);
        }
        self.policy.commit();
        self.record(&change.commands, by, why, &change.promotions);
        self.promoted(&change.promotions);
        self.note_fleet(&change.commands, by, why, now);
        Ok(())
    }

    /// Logs, counts and records the prefixes a carried-out change banned in place of host
    /// bans (the entries themselves are `listed` / `unlisted` records too).
    fn promoted(&mut self, promotions: &[Promotion]) {
        for p in promotions {
            self.telemetry.count_promotion(p.trigger.as_str());
            tracing::warn!(
                prefix = %p.prefix,
                list = p.list.as_str(),
                sources = p.sources,
                released = p.released,
                why = p.trigger.as_str(),
                "banned the whole prefix in place of its hosts and released their entries"
            );
            self.log_record(&Record::Promoted {
                net: p.prefix.to_string(),
                list: p.list.as_str().into(),
                until: p.until.map(Ts::rfc3339),
                sources: p.sources,
                released: p.released,
                why: p.trigger.as_str().into(),
                reason: p.reason.clone(),
            });
        }
    }

    /// Logs the commands of a carried-out change and writes their decision records.
    /// Host entries released by a promotion are `unlisted` with why `promoted`.
    fn record(&mut self, cmds: &[Command], by: &str, why: &str, promotions: &[Promotion]) {
        if cmds.is_empty() {
            return;
        }
        // A batch (an API load, a reload) gets one summary line on stderr; the decision
        // log still has a record per entry.
        let verbose = cmds.len() <= 16;
        if !verbose {
            let listed = cmds
                .iter()
                .filter(|c| matches!(c, Command::Block { .. }))
                .count();
            tracing::info!(
                listed,
                unlisted = cmds.len() - listed,
                by,
                why,
                "lists changed"
            );
        }
        let logging = self.log.is_enabled();
        for c in cmds {
            match c {
                Command::Block {
                    net,
                    list,
                    until,
                    reason,
                    origin,
                } => {
                    if verbose {
                        tracing::info!(
                            net = %net,
                            list = list.as_str(),
                            until = until.map(Ts::rfc3339),
                            origin = origin.as_str(),
                            reason,
                            by,
                            "listed"
                        );
                    }
                    if !logging {
                        continue;
                    }
                    if *list != ListKind::Whitelist && net.prefix_len() == net.max_prefix_len() {
                        // Drop records count from here.
                        let base = self
                            .backend
                            .source(net.addr())
                            .ok()
                            .flatten()
                            .map_or(0, |t| t.dropped);
                        self.drops.insert(*net, (base, base));
                    }
                    self.log_record(&Record::Listed {
                        net: net.to_string(),
                        list: list.as_str().into(),
                        until: until.map(Ts::rfc3339),
                        reason: reason.clone(),
                        origin: origin.as_str().into(),
                        by: by.into(),
                    });
                }
                Command::Unblock { net, list } => {
                    let why = if promotions.iter().any(|p| p.prefix.contains(net)) {
                        "promoted"
                    } else {
                        why
                    };
                    if verbose {
                        tracing::info!(net = %net, list = list.as_str(), why, by, "unlisted");
                    }
                    self.drops.remove(net);
                    if logging {
                        self.log_record(&Record::Unlisted {
                            net: net.to_string(),
                            list: list.as_str().into(),
                            why: why.into(),
                            by: by.into(),
                        });
                    }
                }
            }
        }
    }

    /// Appends the policy's changes to the store's journal (fdatasync), or writes the whole
    /// state when an earlier append failed or the journal has grown. An error is counted
    /// and shown in the status; what could not be written stays owed.
    fn persist(&mut self, now: Now) -> Result<(), StoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let ops = self.policy.take_journal();
        let result = if self.snapshot_owed {
            store.compact(&self.policy.snapshot())
        } else if ops.is_empty() {
            return Ok(());
        } else {
            store.append(&ops).and_then(|()| {
                if store.needs_compaction_for(self.policy.engine().persisted_len() as u64) {
                    store.compact(&self.policy.snapshot())
                } else {
                    Ok(())
                }
            })
        };
        match result {
            Ok(()) => {
                if self.snapshot_owed {
                    tracing::info!("the policy state is written again");
                }
                self.snapshot_owed = false;
                self.health.clear("persist");
                Ok(())
            }
            Err(e) => {
                // The ops taken are not on disk (an append is cut back when it fails):
                // only a whole snapshot can make the store whole again.
                self.snapshot_owed = true;
                self.telemetry.persist_errors.inc();
                self.health.set(
                    "persist",
                    now.wall,
                    format!("the policy state cannot be written: {e}"),
                );
                Err(e)
            }
        }
    }

    /// Retries an owed snapshot (the daemon calls this now and then while one is owed).
    pub fn retry_persist(&mut self, now: Now) {
        if self.snapshot_owed {
            let _ = self.persist(now);
        }
    }

    /// Writes a full snapshot (at a clean stop).
    pub fn checkpoint(&mut self, now: Now) {
        let _ = self.persist(now);
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.compact(&self.policy.snapshot()) {
                tracing::error!(error = %e, "cannot write the policy state snapshot");
            }
        }
    }

    /// Writes a decision-log record; a failing log never stops filtering.
    pub fn log_record(&mut self, record: &Record) {
        if let Err(e) = self.log.write(std::time::SystemTime::now(), record) {
            tracing::warn!(error = %e, "cannot write the decision log");
        }
    }

    /// Sends decision records to `log` from now on.
    pub fn set_log(&mut self, log: DecisionLog) {
        self.log = log;
    }

    /// The mode the program runs in, once attached.
    pub fn set_xdp_mode(&mut self, mode: String) {
        self.placement.xdp_mode = mode;
    }

    /// The compiled `[geo]` now in force (its prefixes came with the config's lists).
    /// The feeds' entries now in the config lists.
    pub fn set_feed_sets(&mut self, sets: crate::feeds::FeedSets) {
        self.feed_sets = sets;
    }

    pub fn set_feed_status(&mut self, status: Vec<crate::feeds::FeedStatus>) {
        self.feed_status = status;
    }

    pub fn feed_status(&self) -> &[crate::feeds::FeedStatus] {
        &self.feed_status
    }

    /// What a feed must never list: the protected addresses and the whitelist.
    pub fn feed_protected(&self) -> Vec<IpNet> {
        let mut nets = self.protection.nets();
        nets.extend(
            self.policy
                .engine()
                .page(ListKind::Whitelist, None, usize::MAX)
                .into_iter()
                .map(|(n, _)| n),
        );
        nets
    }

    /// The shortest prefixes a list takes (`[protect] min_prefix_v4`/`_v6`).
    pub fn min_prefix(&self) -> crate::config::MinPrefix {
        self.protection.min_prefix()
    }

    pub fn set_geo(&mut self, geo: Option<std::sync::Arc<crate::geo::GeoState>>) {
        self.geo = geo;
    }

    /// Read access to the policy (entries, strikes, the compiled table).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Read access to the backend (counters, and in tests the tables' contents).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change what it holds under the controller's feet (tests).
    #[cfg(test)]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The metrics kept as events happen.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// What is wrong now, if anything.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Reports a problem found outside the controller (the daemon's watch of the XDP
    /// link, for example); `None` clears it.
    pub fn set_problem(&mut self, key: &'static str, now: Now, detail: Option<String>) {
        match detail {
            Some(d) => self.health.set(key, now.wall, d),
            None => self.health.clear(key),
        }
    }

    /// Why listing `net` (not on the whitelist) would lock an operator out, if it would.
    pub fn lockout(&self, net: IpNet) -> Option<String> {
        self.protection.lockout(net)
    }

    /// Why `net` is too broad for a list, if it is.
    pub fn too_broad(&self, net: IpNet) -> Option<String> {
        self.protection.too_broad(net)
    }

    /// An authenticated API call from `ip`: it stays protected for an hour.
    pub fn note_api_client(&mut self, ip: IpAddr, now: Now) {
        if self.protection.note_client(ip, now.wall) {
            self.policy.set_protected(self.protection.nets());
        }
    }

    /// The host's own addresses, read again by the daemon.
    pub fn set_interface_addresses(&mut self, addrs: Vec<IpAddr>, now: Now) {
        let expired = self.protection.expire(now.wall);
        if self.protection.set_interfaces(addrs) || expired {
            self.policy.set_protected(self.protection.nets());
        }
    }

    /// The kernel's last recorded drop of `net`'s address (host prefixes only), on the
    /// wall clock.
    fn last_drop(backend: &B, now: Now, net: IpNet) -> Option<Ts> {
        let ip: IpAddr = (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())?;
        let totals = backend.source(ip).ok()??;
        (totals.last_drop_ns > 0).then(|| now.ktime_to_wall(totals.last_drop_ns))
    }
}

/// The kernel's SYN budget for `config`: `flood.unknown_syn_rate` shared out over the CPUs
/// that receive packets, per [`FLOOD_SLOT_NS`] (at least one SYN per CPU and slot).
pub fn flood_config(config: &Config) -> FloodConfig {
    let rate = u64::from(config.flood.unknown_syn_rate);
    if rate == 0 {
        return FloodConfig::default();
    }
    let online = aya::util::online_cpus().map_or(1, |c| c.len()).max(1) as u64;
    let possible = aya::util::nr_cpus().unwrap_or(1) as u32;
    let per_slot = (rate * FLOOD_SLOT_NS)
        .div_ceil(1_000_000_000 * online)
        .max(1);
    FloodConfig {
        syns_per_slot: u32::try_from(per_slot).unwrap_or(u32::MAX),
        cpus: possible.min(MAX_FLOOD_CPUS),
    }
}

/// The kernel's rate configuration for `config`: its rules, and per-source drop tracking
/// when something reads it (relative bans, drop records in the decision log).
pub fn rate_config(config: &Config) -> RateConfig {
    let cpus = aya::util::nr_cpus().unwrap_or(1) as u32;
    let mut rc = window::kernel_rules(&config.rate_limit, cpus);
    if config.escalation.relative_block || config.log.path.is_some() {
        rc.flags |= RATE_FLAG_TRACK_DROPS;
    }
    rc
}

#[cfg(test)]
mod tests;
