//! The controller keeps the policy engine, the compiled trie contents and the dataplane in
//! step. It is the single writer of the kernel tries: the daemon's event loop and the API
//! handlers reach it through one mutex.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipguard_common::{
    RateConfig, RateEvent, SourceKey, Stat, LIST_BLACKLIST, LIST_GRAYLIST, LIST_RULE_ALLOW,
    LIST_RULE_DENY, LIST_WHITELIST, RATE_FLAG_TRACK_DROPS,
};
use ipnet::IpNet;

use crate::{
    api::types::{IpCounters, IpStatus, ListEntryView, ListPage, MapFill, Status, Traffic},
    config::{Config, MapsConfig, RateLimit, Rule, RuleAction, RuleSource},
    dataplane::{Backend, DataplaneError, SyncReport, TableError, TableUsage},
    decision_log::{DecisionLog, Record},
    duration::format_duration,
    lists::ListKind,
    metrics::{BanLabels, Metrics},
    policy::{
        compile::{Change, Layer, ListState, TrieOp},
        engine::{Command, Engine, EngineState, Entry, Origin, Outcome, Ts},
        window,
    },
    store::Store,
};

/// Why a request could not be carried out. `kind` decides the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub error: &'static str,
    pub detail: String,
    pub index: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Invalid,
    NotFound,
    Conflict,
    TooLarge,
    Internal,
}

impl Failure {
    pub fn new(kind: FailureKind, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            error,
            detail: detail.into(),
            index: None,
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }

    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(FailureKind::Internal, "internal error", detail.to_string())
    }
}

impl From<TableError> for Failure {
    fn from(e: TableError) -> Self {
        Failure::internal(e)
    }
}

impl From<DataplaneError> for Failure {
    fn from(e: DataplaneError) -> Self {
        Failure::internal(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.detail)
    }
}

impl std::error::Error for Failure {}

/// Wall-clock now.
pub fn wall_now() -> Ts {
    Ts(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// `CLOCK_MONOTONIC` in nanoseconds. The XDP program's timestamps are on its coarse
/// variant (see `dataplane::kernel_clock_ns`), at most one tick behind.
pub fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A kernel timestamp on the wall clock.
pub fn ktime_to_wall(ktime_ns: u64) -> Ts {
    let ago_ms = mono_now_ns().saturating_sub(ktime_ns) / 1_000_000;
    Ts(wall_now().0.saturating_sub(ago_ms))
}

/// RFC 3339 (UTC, milliseconds) of a wall-clock time.
pub fn rfc3339(t: Ts) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

pub const fn layer(list: ListKind) -> Layer {
    match list {
        ListKind::Whitelist => Layer::White,
        ListKind::Graylist => Layer::Gray,
        ListKind::Blacklist => Layer::Black,
    }
}

/// Where the daemon runs, for status answers.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    pub interface: String,
    pub xdp_mode: String,
}

/// See the module doc.
pub struct Controller<B: Backend> {
    pub backend: B,
    pub engine: Engine,
    pub lists: ListState,
    pub metrics: Metrics,
    pub placement: Placement,
    rates: Vec<RateLimit>,
    accumulate: bool,
    rules: Vec<Rule>,
    config_lists: [Vec<IpNet>; 3],
    maps: MapsConfig,
    started: Instant,
    /// Last successful resolution of each hostname in the rules.
    pub resolved: HashMap<String, Vec<IpNet>>,
    log: DecisionLog,
    /// Banned hosts: kernel drop count when listed, and at the last `drops` record.
    drops: HashMap<IpNet, (u64, u64)>,
    store: Option<Store>,
}

impl<B: Backend> Controller<B> {
    /// Takes over a backend: writes the rate rules, puts the config's lists into the
    /// engine, and makes the kernel tries match. Entries the tries held that the state
    /// does not (a previous daemon's, adopted from pinned maps) are removed, missing ones
    /// written: the report says how much had drifted.
    pub fn new(
        backend: B,
        config: &Config,
        placement: Placement,
    ) -> Result<(Self, SyncReport), Failure> {
        Self::with_store(backend, config, placement, None)
    }

    /// Like [`Controller::new`], restoring the persisted state of `store` (its entries,
    /// expiries, strikes and ban history) and persisting every change to it from now on.
    pub fn with_store(
        backend: B,
        config: &Config,
        placement: Placement,
        store: Option<(Store, EngineState)>,
    ) -> Result<(Self, SyncReport), Failure> {
        Self::start(config, placement, store, move || Ok(backend))
    }

    /// Like [`Controller::with_store`], with the backend made by `backend` once the lists
    /// are compiled, so that the daemon can load the XDP program (which preallocates its
    /// maps: a second or more with large capacities) while they compile.
    pub fn start(
        config: &Config,
        placement: Placement,
        store: Option<(Store, EngineState)>,
        backend: impl FnOnce() -> Result<B, Failure>,
    ) -> Result<(Self, SyncReport), Failure> {
        let mut engine = Engine::new(config.escalation.clone(), config.report);
        let mut lists = ListState::new();
        let config_lists = [
            config.lists.whitelist.clone(),
            config.lists.graylist.clone(),
            config.lists.blacklist.clone(),
        ];
        let now = wall_now();
        // The config's entries go to the engine and the compiler in bulk, without a
        // command (and its reason string) per entry.
        let mut changes = Vec::with_capacity(config_lists.iter().map(Vec::len).sum());
        for (list, nets) in ListKind::ALL.into_iter().zip(&config_lists) {
            engine.add_config(list, nets, "config", now);
            changes.extend(nets.iter().map(|net| Change::Insert(*net, layer(list))));
        }
        let mut cmds = Vec::new();
        let store = match store {
            Some((store, state)) => {
                let restored = state.entries.len();
                cmds.extend(engine.restore(state));
                tracing::info!(
                    entries = restored,
                    tracked = engine.tracked(),
                    "restored the persisted policy state"
                );
                Some(store)
            }
            None => {
                engine.set_journaling(false);
                None
            }
        };
        changes.extend(commands_to_changes(&cmds));
        lists.apply(changes);
        let mut backend = backend()?;
        backend.set_rates(&rate_config(config))?;
        let mut c = Self {
            backend,
            engine,
            lists,
            metrics: Metrics::default(),
            placement,
            rates: config.rate_limit.clone(),
            accumulate: config.accumulate,
            rules: config.rules.clone(),
            config_lists,
            maps: config.maps,
            started: Instant::now(),
            resolved: HashMap::new(),
            log: DecisionLog::disabled(),
            drops: HashMap::new(),
            store,
        };
        let drift = crate::dataplane::sync(c.backend.table(), c.lists.written())?;
        Ok((c, drift))
    }

    /// Applies engine commands to the compiled lists and writes the difference to the
    /// kernel (writes before deletes). `by` is who caused them (`policy`, `config`,
    /// `api:<client>`), `why` why entries left a list (`expired`, `removed`, `config`).
    pub fn apply(&mut self, cmds: &[Command], by: &str, why: &str) -> Result<(), Failure> {
        if cmds.is_empty() {
            return Ok(());
        }
        let ops = self.lists.apply(commands_to_changes(cmds));
        self.write(&ops)?;
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
        if !verbose && !logging {
            // Nothing per entry to say: no lines on stderr, no decision log.
            for c in cmds {
                if let Command::Unblock { net, .. } = c {
                    self.drops.remove(net);
                }
            }
            return Ok(());
        }
        for c in cmds {
            let record = match c {
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
                            list = list.name(),
                            until = until.map(rfc3339),
                            origin = origin.name(),
                            reason,
                            by,
                            "listed"
                        );
                    }
                    if logging
                        && *list != ListKind::Whitelist
                        && net.prefix_len() == net.max_prefix_len()
                    {
                        // Drop records count from here.
                        let base = self
                            .backend
                            .source(net.addr())
                            .ok()
                            .flatten()
                            .map_or(0, |t| t.dropped);
                        self.drops.insert(*net, (base, base));
                    }
                    Record::Listed {
                        net: net.to_string(),
                        list: list.name().into(),
                        until: until.map(rfc3339),
                        reason: reason.clone(),
                        origin: origin.name().into(),
                        by: by.into(),
                    }
                }
                Command::Unblock { net, list } => {
                    if verbose {
                        tracing::info!(net = %net, list = list.name(), why, by, "unlisted");
                    }
                    self.drops.remove(net);
                    Record::Unlisted {
                        net: net.to_string(),
                        list: list.name().into(),
                        why: why.into(),
                        by: by.into(),
                    }
                }
            };
            if logging {
                self.log_record(&record);
            }
        }
        Ok(())
    }

    /// Appends the engine's changes to the store's journal (compacting when it has grown).
    /// A failing disk never stops filtering: the error is logged and retried next time.
    pub fn persist(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let ops = self.engine.take_journal();
        if ops.is_empty() {
            return;
        }
        if let Err(e) = store.append(&ops) {
            tracing::error!(error = %e, "cannot persist policy state; writing a full snapshot instead");
            if let Err(e) = store.compact(&self.engine.snapshot()) {
                tracing::error!(error = %e, "cannot write the policy state snapshot");
            }
            return;
        }
        if store.needs_compaction_for(self.engine.persisted_len() as u64) {
            if let Err(e) = store.compact(&self.engine.snapshot()) {
                tracing::error!(error = %e, "cannot compact the policy state");
            }
        }
    }

    /// Writes a full snapshot (at a clean stop).
    pub fn checkpoint(&mut self) {
        self.persist();
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.compact(&self.engine.snapshot()) {
                tracing::error!(error = %e, "cannot write the policy state snapshot");
            }
        }
    }

    /// Writes a decision-log record; a failing log never stops filtering.
    pub fn log_record(&mut self, record: &Record) {
        if let Err(e) = self.log.write(SystemTime::now(), record) {
            tracing::warn!(error = %e, "cannot write the decision log");
        }
    }

    /// One aggregated `drops` record per banned host whose drop count moved since the last
    /// call (at most `MAX_DROP_RECORDS` hosts looked at per call).
    pub fn log_drops(&mut self, interval: Duration) {
        const MAX_DROP_RECORDS: usize = 10_000;
        let mut records = Vec::new();
        let nets: Vec<IpNet> = self.drops.keys().take(MAX_DROP_RECORDS).copied().collect();
        for net in nets {
            let Some(totals) = self.backend.source(net.addr()).ok().flatten() else {
                continue;
            };
            let (base, last) = self.drops[&net];
            if totals.dropped <= last {
                continue;
            }
            let list = [ListKind::Blacklist, ListKind::Graylist]
                .into_iter()
                .find(|l| self.engine.entry(*l, net).is_some())
                .map_or("unknown", ListKind::name);
            records.push(Record::Drops {
                source: net.addr().to_string(),
                list: list.into(),
                dropped: totals.dropped - last,
                total: totals.dropped - base,
                first: last == base,
                interval_s: interval.as_secs(),
            });
            self.drops.insert(net, (base, totals.dropped));
        }
        for r in &records {
            self.log_record(r);
        }
    }

    fn write(&mut self, ops: &[TrieOp]) -> Result<(), Failure> {
        Ok(self.backend.table().apply(ops)?)
    }

    /// Sends decision records to `log` from now on.
    pub fn set_log(&mut self, log: DecisionLog) {
        self.log = log;
    }

    /// The rules, for resolving their hostnames outside the lock.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Writes the rule layer from resolved rules: (index, deny, nets).
    pub fn set_rules(&mut self, compiled: &[(u32, bool, Vec<IpNet>)]) -> Result<(), Failure> {
        let ops = self.lists.set_rules(compiled);
        self.write(&ops)
    }

    /// Handles a batch of rate events: sums the CPUs' windows of each signalled source and
    /// rule, and hands confirmed violations to the engine.
    pub fn on_events(&mut self, events: &[RateEvent]) -> Result<(), Failure> {
        self.metrics.events.inc_by(events.len() as u64);
        let mut seen = HashSet::new();
        for ev in events {
            if !seen.insert((ev.addr, ev.rule)) {
                continue;
            }
            let ip = IpAddr::from(SourceKey { addr: ev.addr });
            let Some(rule) = self.rates.get(ev.rule as usize).cloned() else {
                continue;
            };
            let Some(per_cpu) = self.backend.source_per_cpu(ip)? else {
                continue;
            };
            let window_ns = u64::try_from(rule.window.as_nanos()).unwrap_or(u64::MAX);
            let windows = per_cpu.iter().map(|c| c.windows[ev.rule as usize]);
            let count = window::observed(windows, window_ns, ev.ktime_ns, self.accumulate);
            if count <= u64::from(rule.count) {
                continue;
            }
            let ports = if rule.ports.is_empty() {
                String::new()
            } else {
                format!(" to ports {:?}", rule.ports)
            };
            let reason = format!(
                "rate limit: {count} {}{ports} in {} > {} (rule {})",
                rule.kind,
                format_duration(rule.window),
                rule.count,
                ev.rule + 1
            );
            let (outcome, cmds) = self.engine.violation(ip, reason.clone(), wall_now());
            match outcome {
                Outcome::Banned { list, strikes, .. } => {
                    self.apply(&cmds, "policy", "")?;
                    // From the packet that signalled to the ban being in the trie.
                    let reaction = mono_now_ns().saturating_sub(ev.sent_ns) as f64 / 1e9;
                    self.metrics.reaction.observe(reaction);
                    self.count_ban("rate_limit", list);
                    tracing::info!(
                        source = %ip,
                        list = list.name(),
                        strikes,
                        reaction_ms = reaction * 1e3,
                        "rate violation"
                    );
                }
                Outcome::Forgiven { violations } => {
                    tracing::info!(source = %ip, violations, reason, "violation forgiven (grace)")
                }
                _ => {}
            }
            if !self.log.is_enabled() {
                continue;
            }
            self.log_record(&Record::Violation {
                source: ip.to_string(),
                rule: format!(
                    "{} {}/{}",
                    rule.kind,
                    rule.count,
                    format_duration(rule.window)
                ),
                count,
                limit: u64::from(rule.count),
                outcome: outcome_name(&outcome).into(),
            });
        }
        self.persist();
        Ok(())
    }

    fn count_ban(&self, cause: &str, list: ListKind) {
        self.count_bans(cause, list, 1);
    }

    fn count_bans(&self, cause: &str, list: ListKind, n: u64) {
        self.metrics
            .bans
            .get_or_create(&BanLabels {
                cause: cause.into(),
                list: list.name().into(),
            })
            .inc_by(n);
    }

    /// A report from the protected application.
    pub fn report(&mut self, ip: IpAddr, reason: String) -> Result<(Outcome, IpStatus), Failure> {
        let (outcome, cmds) = self.engine.report(ip, reason.clone(), wall_now());
        self.apply(&cmds, "policy", "")?;
        if let Outcome::Banned { list, .. } = outcome {
            self.count_ban("report", list);
        }
        self.log_record(&Record::Report {
            source: ip.to_string(),
            reason,
            outcome: outcome_name(&outcome).into(),
        });
        self.persist();
        Ok((outcome, self.explain(ip)?))
    }

    /// Expiries and retention due by now.
    pub fn tick(&mut self) -> Result<(), Failure> {
        let backend = &self.backend;
        let cmds = self.engine.tick(wall_now(), |net| {
            let ip = (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())?;
            let totals = backend.source(ip).ok()??;
            (totals.last_drop_ns > 0).then(|| ktime_to_wall(totals.last_drop_ns))
        });
        let res = self.apply(&cmds, "policy", "expired");
        self.persist();
        res
    }

    /// When `tick` next has work, as a duration from now.
    pub fn next_deadline(&self) -> Option<Duration> {
        Some(self.engine.next_deadline()?.since(wall_now()))
    }

    /// Adds entries to a list as one change: every entry is validated by the caller; if
    /// the kernel refuses a write, the engine is put back as it was and the tries re-synced.
    pub fn add_entries(
        &mut self,
        list: ListKind,
        entries: &[(IpNet, Option<Duration>, String)],
        origin: Origin,
        by: &str,
    ) -> Result<(u64, u64), Failure> {
        let now = wall_now();
        let mut previous: Vec<(IpNet, Option<Entry>)> = Vec::with_capacity(entries.len());
        let mut cmds = Vec::with_capacity(entries.len());
        let (mut added, mut replaced) = (0, 0);
        for (net, ttl, reason) in entries {
            let old = self.engine.entry(list, *net).map(Cow::into_owned);
            if old.is_some() {
                replaced += 1;
            } else {
                added += 1;
            }
            previous.push((*net, old));
            cmds.extend(
                self.engine
                    .add(list, *net, *ttl, reason.clone(), origin, now),
            );
        }
        if let Err(e) = self.apply(&cmds, by, "") {
            // Undo in the engine, then make lists and kernel match it again.
            let mut undo = Vec::new();
            for (net, old) in previous.into_iter().rev() {
                match old {
                    Some(o) => undo.extend(self.engine.add(
                        list,
                        net,
                        o.until.map(|u| u.since(o.since)),
                        o.reason,
                        o.origin,
                        o.since,
                    )),
                    None => undo.extend(
                        self.engine
                            .remove(list, net)
                            .map(|(_, c)| c)
                            .unwrap_or_default(),
                    ),
                }
            }
            self.lists.apply(commands_to_changes(&undo));
            let _ = crate::dataplane::sync(self.backend.table(), self.lists.written());
            self.persist();
            return Err(e);
        }
        self.persist();
        if origin == Origin::Api && list != ListKind::Whitelist && added > 0 {
            self.count_bans("api", list, added);
        }
        Ok((added, replaced))
    }

    /// Removes one entry; `None` if it was not there.
    pub fn remove_entry(
        &mut self,
        list: ListKind,
        net: IpNet,
        by: &str,
    ) -> Result<Option<Entry>, Failure> {
        let Some((entry, cmds)) = self.engine.remove(list, net) else {
            return Ok(None);
        };
        self.apply(&cmds, by, "removed")?;
        self.persist();
        Ok(Some(entry))
    }

    /// What the data path does with `ip`, and why.
    pub fn explain(&self, ip: IpAddr) -> Result<IpStatus, Failure> {
        let now = wall_now();
        let totals = self.backend.source(ip)?.unwrap_or_default();
        let counters = IpCounters {
            packets: totals.packets,
            bytes: totals.bytes,
            syns: totals.syns,
            dropped: totals.dropped,
        };
        let mut s = IpStatus {
            ip: ip.to_string(),
            verdict: "pass".into(),
            list: None,
            prefix: None,
            reason: None,
            source: None,
            strikes: self.engine.strikes(ip, now),
            expires: None,
            retry_after: None,
            counters,
        };
        let Some((prefix, decided)) = self.lists.decide(ip) else {
            return Ok(s);
        };
        s.prefix = Some(prefix.to_string());
        match decided.list {
            LIST_WHITELIST | LIST_GRAYLIST | LIST_BLACKLIST => {
                let list = ListKind::from_code(decided.list).expect("a list code");
                s.list = Some(list.name().into());
                if list != ListKind::Whitelist {
                    s.verdict = "drop".into();
                }
                if let Some(e) = self.engine.entry(list, prefix) {
                    s.reason = Some(e.reason.clone());
                    s.source = Some(e.origin.name().into());
                    s.expires = e.until.map(rfc3339);
                    s.retry_after = e
                        .until
                        .map(|u| u.since(now).as_millis().div_ceil(1000) as u64);
                }
            }
            LIST_RULE_ALLOW | LIST_RULE_DENY => {
                if decided.list == LIST_RULE_DENY {
                    s.verdict = "drop".into();
                }
                s.source = Some("rule".into());
                let i = decided.rule_id.saturating_sub(1) as usize;
                s.reason = Some(match self.rules.get(i) {
                    Some(r) => format!("rule {}: {} {}", i + 1, r.action, r.source),
                    None => format!("rule {}", i + 1),
                });
            }
            _ => {}
        }
        Ok(s)
    }

    /// One page of a list, ordered by prefix; `cursor` is the last prefix of the page before.
    pub fn list_page(&self, list: ListKind, limit: usize, cursor: Option<IpNet>) -> ListPage {
        let mut nets = self.engine.page(list, cursor, limit.saturating_add(1));
        let more = nets.len() > limit;
        nets.truncate(limit);
        let next_cursor = if more {
            nets.last().map(|(n, _)| n.to_string())
        } else {
            None
        };
        ListPage {
            entries: nets
                .into_iter()
                .map(|(n, e)| ListEntryView {
                    net: n.to_string(),
                    expires: e.until.map(rfc3339),
                    reason: e.reason.clone(),
                    source: e.origin.name().into(),
                })
                .collect(),
            next_cursor,
        }
    }

    /// Everything `GET /v1/status` reports.
    pub fn status(&self) -> Result<(Status, u64), Failure> {
        let stats = self.backend.stats()?;
        let t = |s: Stat| {
            let c = stats.get(s);
            Traffic {
                packets: c.packets,
                bytes: c.bytes,
            }
        };
        let sum = |a: Traffic, b: Traffic| Traffic {
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
        };
        let lists: BTreeMap<String, Traffic> = [
            ("unlisted", t(Stat::PassUnlisted)),
            ("whitelist", t(Stat::PassWhitelist)),
            ("graylist", t(Stat::DropGraylist)),
            ("blacklist", t(Stat::DropBlacklist)),
            ("rule", t(Stat::DropRule)),
            ("non_ip", t(Stat::PassNonIp)),
            ("malformed", t(Stat::PassMalformed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let pass = ["unlisted", "whitelist", "non_ip", "malformed"]
            .iter()
            .fold(Traffic::default(), |a, k| sum(a, lists[*k]));
        let drop = ["graylist", "blacklist", "rule"]
            .iter()
            .fold(Traffic::default(), |a, k| sum(a, lists[*k]));
        // What fills the maps: IPv4 addresses under prefixes longer than /24, IPv6 prefixes.
        let TableUsage { v4, v6 } = self.backend.table_usage();
        let sources_cap = u64::from(self.maps.sources_capacity);
        let maps = [
            (
                "lpm_v4",
                MapFill {
                    capacity: u64::from(self.maps.lpm_v4_capacity),
                    used: v4,
                },
            ),
            (
                "lpm_v6",
                MapFill {
                    capacity: u64::from(self.maps.lpm_v6_capacity),
                    used: v6,
                },
            ),
            (
                "sources",
                MapFill {
                    capacity: sources_cap,
                    used: stats.get(Stat::SourceInserted).packets.min(sources_cap),
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut entries: BTreeMap<String, u64> = ListKind::ALL
            .iter()
            .map(|l| (l.name().to_owned(), self.engine.count(*l) as u64))
            .collect();
        entries.insert("rules".into(), self.rules.len() as u64);
        let status = Status {
            interface: self.placement.interface.clone(),
            xdp_mode: self.placement.xdp_mode.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            entries,
            tracked_sources: self.engine.tracked() as u64,
            verdicts: [("pass".to_owned(), pass), ("drop".to_owned(), drop)]
                .into_iter()
                .collect(),
            lists,
            maps,
        };
        Ok((status, stats.get(Stat::EventLost).packets))
    }

    /// Applies a new config (SIGHUP): list entries from the config, escalation, reports and
    /// rate rules. Interface, mode, map sizes, API and state settings need a restart; the
    /// result names the ones that changed. Rules are applied by the caller once resolved.
    pub fn reload(&mut self, config: &Config, old: &Config) -> Result<Vec<&'static str>, Failure> {
        let now = wall_now();
        let new_lists = [
            config.lists.whitelist.clone(),
            config.lists.graylist.clone(),
            config.lists.blacklist.clone(),
        ];
        let mut cmds = Vec::new();
        for (i, list) in ListKind::ALL.into_iter().enumerate() {
            let old_set: HashSet<IpNet> = self.config_lists[i].iter().map(|n| n.trunc()).collect();
            let new_set: HashSet<IpNet> = new_lists[i].iter().map(|n| n.trunc()).collect();
            for net in new_set.difference(&old_set) {
                cmds.extend(self.engine.add(
                    list,
                    *net,
                    None,
                    "config".into(),
                    Origin::Config,
                    now,
                ));
            }
            for net in old_set.difference(&new_set) {
                if self
                    .engine
                    .entry(list, *net)
                    .is_some_and(|e| e.origin == Origin::Config)
                {
                    cmds.extend(
                        self.engine
                            .remove(list, *net)
                            .map(|(_, c)| c)
                            .unwrap_or_default(),
                    );
                }
            }
        }
        // One batch: additions are written before removals, so no listed source passes
        // in between.
        self.apply(&cmds, "config", "config")?;
        self.persist();
        self.config_lists = new_lists;
        self.engine
            .reconfigure(config.escalation.clone(), config.report);
        self.backend.set_rates(&rate_config(config))?;
        self.rates = config.rate_limit.clone();
        self.accumulate = config.accumulate;
        self.rules = config.rules.clone();
        let mut restart = Vec::new();
        if config.interface != old.interface {
            restart.push("interface");
        }
        if config.xdp_mode != old.xdp_mode {
            restart.push("xdp_mode");
        }
        if config.maps != old.maps {
            restart.push("maps");
        }
        if config.api != old.api {
            restart.push("api");
        }
        if config.state != old.state {
            restart.push("state");
        }
        if config.log != old.log {
            restart.push("log");
        }
        Ok(restart)
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

/// The outcome's name in logs and API answers.
pub fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Recorded { .. } => "recorded",
        Outcome::Banned { .. } => "banned",
        Outcome::AlreadyBanned { .. } => "already_banned",
        Outcome::Whitelisted => "whitelisted",
        Outcome::Forgiven { .. } => "forgiven",
    }
}

/// Engine commands as compiler changes.
pub fn commands_to_changes(cmds: &[Command]) -> Vec<Change> {
    cmds.iter()
        .map(|c| match c {
            Command::Block { net, list, .. } => Change::Insert(*net, layer(*list)),
            Command::Unblock { net, list } => Change::Remove(*net, layer(*list)),
        })
        .collect()
}

/// Resolves the rules' hostnames, keeping `last` answers for names that fail now.
/// Returns the rule layer (index, deny, nets) and the new cache.
pub async fn resolve_rules(
    rules: &[Rule],
    last: &HashMap<String, Vec<IpNet>>,
) -> (Vec<(u32, bool, Vec<IpNet>)>, HashMap<String, Vec<IpNet>>) {
    let mut cache = last.clone();
    let mut compiled = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let nets = match &rule.source {
            RuleSource::Net(net) => vec![*net],
            RuleSource::Host(host) => {
                let lookup = tokio::net::lookup_host((host.as_str(), 0));
                match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                    Ok(Ok(addrs)) => {
                        let mut nets: Vec<IpNet> = addrs.map(|a| IpNet::from(a.ip())).collect();
                        nets.sort();
                        nets.dedup();
                        tracing::debug!(host, addresses = ?nets, "resolved rule hostname");
                        cache.insert(host.clone(), nets.clone());
                        nets
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out after 5s".into(),
                        };
                        let kept = last.get(host).cloned().unwrap_or_default();
                        tracing::warn!(host, error = why, kept = ?kept, "cannot resolve rule hostname; keeping the last known addresses");
                        kept
                    }
                }
            }
        };
        compiled.push((i as u32, rule.action == RuleAction::Deny, nets));
    }
    (compiled, cache)
}
