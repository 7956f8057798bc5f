//! The policy engine: strikes, escalation, reports, expiry. Pure: events and `now` in,
//! [`Command`]s out; no clock, no kernel, no I/O. The daemon applies the commands to the
//! maps (through `policy::compile` and `dataplane::ListTable`).
//!
//! Persistence (S15) is pure too: [`Engine::snapshot`] and [`Engine::restore`] move the
//! state that must survive a restart in and out as an [`EngineState`], and
//! [`Engine::take_journal`] hands out every change since the last call as [`JournalOp`]s
//! for the write-ahead journal in `crate::store`. Config-origin entries are neither
//! snapshotted nor journaled: the config file brings them back at each start.
//!
//! Config entries without an expiry (all of a config file's `[lists]`) are kept apart from
//! the per-entry records, as a sorted prefix → (since, reason) map per list: a config can
//! hold millions of them, and they need no expiry, journal or history.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::{
    config::{Escalation, ReportRule},
    duration::{format_duration, Lifetime},
    lists::ListKind,
};

/// Wall-clock time in milliseconds since the UNIX epoch. Bans are persisted and shown to
/// operators, so they live on the wall clock, not the monotonic one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ts(pub u64);

impl Ts {
    pub fn plus(self, d: Duration) -> Ts {
        Ts(self
            .0
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    pub fn minus(self, d: Duration) -> Ts {
        Ts(self
            .0
            .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    pub fn since(self, earlier: Ts) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Who put an entry on a list. Persisted as its [`Origin::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The config file's `[lists]`.
    Config,
    /// An operator, through the API or the CLI.
    Api,
    /// A rate rule violation.
    RateLimit,
    /// Reports from the protected application.
    Report,
}

impl Origin {
    pub const fn name(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
            Origin::RateLimit => "rate_limit",
            Origin::Report => "report",
        }
    }

    /// Bans the policy made itself (and may therefore extend under `relative_block`).
    const fn is_policy(self) -> bool {
        matches!(self, Origin::RateLimit | Origin::Report)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One list entry as the engine knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub list: ListKind,
    pub since: Ts,
    /// `None`: never expires.
    pub until: Option<Ts>,
    pub reason: String,
    pub origin: Origin,
}

/// What the daemon must make the kernel do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Block {
        net: IpNet,
        list: ListKind,
        until: Option<Ts>,
        reason: String,
        origin: Origin,
    },
    Unblock {
        net: IpNet,
        list: ListKind,
    },
}

/// What the engine made of a violation or a report (for logs and API answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Whitelisted: never listed, never counted.
    Whitelisted,
    /// Already graylisted or blacklisted.
    AlreadyBanned { list: ListKind, until: Option<Ts> },
    /// A first-time offender within `grace_violations`.
    Forgiven { violations: u32 },
    /// A report was recorded; not enough of them yet (or no `[report]` rule).
    Recorded { reports: u32 },
    /// Banned now.
    Banned {
        list: ListKind,
        until: Option<Ts>,
        strikes: u32,
    },
}

/// Quiet sources forgotten per tick at most.
const MAX_FORGET_PER_TICK: usize = 10_000;

/// Reports kept per source when no `[report]` rule bounds them by a window.
const MAX_UNRULED_REPORTS: usize = 64;

/// Per-source history; only sources that violated a rule or were reported have one.
#[derive(Clone, Debug, Default)]
struct Offender {
    /// Times of strikes within `strike_window`. Inline: a million offenders must fit in
    /// the daemon's memory budget, and most have one or two.
    strikes: SmallVec<[Ts; 2]>,
    /// Violations ever seen (within retention), for the grace allowance.
    violations: u32,
    /// Earlier graylistings and blacklistings, for ban growth.
    gray_bans: u32,
    black_bans: u32,
    /// Times of reports within the report window (the latest `MAX_UNRULED_REPORTS`
    /// when there is no report rule).
    reports: SmallVec<[Ts; 2]>,
    /// Latest violation, report or ban end: retention counts from here.
    last_activity: Ts,
}

/// The engine's whole state.
pub struct Engine {
    esc: Escalation,
    report: Option<ReportRule>,
    /// Changes not yet handed out by [`Engine::take_journal`].
    journal: Vec<JournalOp>,
    /// Offenders changed since their last journal op (see [`Engine::flush_touched`]).
    touched: Vec<IpAddr>,
    journaling: bool,
    /// Entries other than the config's never-expiring ones.
    entries: HashMap<(ListKind, IpNet), Entry>,
    /// Per list (by [`list_index`]): the config entries without expiry, prefix → index
    /// into `config_meta`. A (list, prefix) is in `entries` or here, never in both.
    config: [BTreeMap<IpNet, u32>; 3],
    /// The distinct (since, reason) of config entries (one per config load, in practice).
    config_meta: Vec<(Ts, String)>,
    /// Per list: entries (of both kinds) per family and prefix length, so that finding the
    /// entries covering an address looks up only the lengths in use.
    lens: [LenCounts; 3],
    /// Per list: the number of entries (of both kinds).
    counts: [usize; 3],
    /// (until, list, net) of every entry that expires.
    expiries: BTreeSet<(Ts, ListKind, IpNet)>,
    offenders: HashMap<IpAddr, Offender>,
    /// (forget at, source): when each offender's retention runs out.
    retention: BTreeSet<(Ts, IpAddr)>,
}

impl Engine {
    pub fn new(esc: Escalation, report: Option<ReportRule>) -> Self {
        Self {
            esc,
            report,
            journal: Vec::new(),
            touched: Vec::new(),
            journaling: true,
            entries: HashMap::new(),
            config: Default::default(),
            config_meta: Vec::new(),
            lens: Default::default(),
            counts: [0; 3],
            expiries: BTreeSet::new(),
            offenders: HashMap::new(),
            retention: BTreeSet::new(),
        }
    }

    /// Replaces the escalation and report settings (config reload); state is kept.
    pub fn reconfigure(&mut self, esc: Escalation, report: Option<ReportRule>) {
        self.esc = esc;
        self.report = report;
    }

    /// Puts `net` on `list` (replacing an entry of the same list and prefix). `ttl: None`
    /// never expires.
    pub fn add(
        &mut self,
        list: ListKind,
        net: IpNet,
        ttl: Option<Duration>,
        reason: String,
        origin: Origin,
        now: Ts,
    ) -> Vec<Command> {
        let net = net.trunc();
        if origin == Origin::Config && ttl.is_none() {
            let cmd = Command::Block {
                net,
                list,
                until: None,
                reason: reason.clone(),
                origin,
            };
            let meta = self.config_meta_id(now, reason);
            self.put_config(list, net, meta);
            return vec![cmd];
        }
        let until = ttl.map(|d| now.plus(d));
        self.put(
            net,
            Entry {
                list,
                since: now,
                until,
                reason,
                origin,
            },
        )
    }

    /// Puts many never-expiring config entries on `list` at once (start-up): like
    /// [`Engine::add`] with `Origin::Config` and no ttl for each, in one sorted bulk build
    /// when the list has no config entries yet. The caller compiles `nets` itself, so no
    /// commands are returned.
    pub fn add_config(&mut self, list: ListKind, nets: &[IpNet], reason: &str, now: Ts) {
        let meta = self.config_meta_id(now, reason.to_owned());
        let l = list_index(list);
        if !self.config[l].is_empty() {
            for net in nets {
                self.put_config(list, net.trunc(), meta);
            }
            return;
        }
        let mut sorted: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
        sorted.sort_unstable();
        sorted.dedup();
        if self.counts[l] > 0 {
            // Entries of other origins on this list give way, as in `put_config`.
            for net in &sorted {
                self.remove_dynamic(list, *net);
            }
        }
        for net in &sorted {
            *self.lens[l].of(net) += 1;
        }
        self.counts[l] += sorted.len();
        // Sorted and without duplicates: collecting is a linear bulk build.
        self.config[l] = sorted.into_iter().map(|net| (net, meta)).collect();
    }

    /// The index of (since, reason) in `config_meta`, added if new.
    fn config_meta_id(&mut self, since: Ts, reason: String) -> u32 {
        match self
            .config_meta
            .iter()
            .rposition(|(t, r)| *t == since && *r == reason)
        {
            Some(i) => i as u32,
            None => {
                self.config_meta.push((since, reason));
                (self.config_meta.len() - 1) as u32
            }
        }
    }

    /// Puts a never-expiring config entry, replacing any entry of the same list and prefix.
    fn put_config(&mut self, list: ListKind, net: IpNet, meta: u32) {
        let l = list_index(list);
        self.remove_dynamic(list, net);
        if self.config[l].insert(net, meta).is_none() {
            *self.lens[l].of(&net) += 1;
            self.counts[l] += 1;
        }
    }

    /// Removes the entry in `entries` at (list, net), if any, journaling the removal of a
    /// persisted one.
    fn remove_dynamic(&mut self, list: ListKind, net: IpNet) -> Option<Entry> {
        let old = self.entries.remove(&(list, net))?;
        if let Some(until) = old.until {
            self.expiries.remove(&(until, list, net));
        }
        if old.origin != Origin::Config {
            self.record(JournalOp::Remove { list, net });
        }
        let l = list_index(list);
        *self.lens[l].of(&net) -= 1;
        self.counts[l] -= 1;
        Some(old)
    }

    /// The config entry at (list, net) as an [`Entry`].
    fn config_entry(&self, list: ListKind, meta: u32) -> Entry {
        let (since, reason) = &self.config_meta[meta as usize];
        Entry {
            list,
            since: *since,
            until: None,
            reason: reason.clone(),
            origin: Origin::Config,
        }
    }

    /// Removes `net` from `list`; returns the removed entry and the commands.
    pub fn remove(&mut self, list: ListKind, net: IpNet) -> Option<(Entry, Vec<Command>)> {
        let net = net.trunc();
        let l = list_index(list);
        let entry = match self.remove_dynamic(list, net) {
            Some(entry) => entry,
            None => {
                let meta = self.config[l].remove(&net)?;
                *self.lens[l].of(&net) -= 1;
                self.counts[l] -= 1;
                self.config_entry(list, meta)
            }
        };
        Some((entry, vec![Command::Unblock { net, list }]))
    }

    /// An entry, if `net` is on `list`.
    pub fn entry(&self, list: ListKind, net: IpNet) -> Option<Cow<'_, Entry>> {
        let net = net.trunc();
        if let Some(e) = self.entries.get(&(list, net)) {
            return Some(Cow::Borrowed(e));
        }
        let meta = *self.config[list_index(list)].get(&net)?;
        Some(Cow::Owned(self.config_entry(list, meta)))
    }

    /// Whether `net` (truncated) is on `list`.
    fn contains(&self, list: ListKind, net: &IpNet) -> bool {
        self.config[list_index(list)].contains_key(net) || self.entries.contains_key(&(list, *net))
    }

    /// Every entry (unordered).
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, Cow<'_, Entry>)> {
        let dynamic = self
            .entries
            .iter()
            .map(|((_, net), e)| (*net, Cow::Borrowed(e)));
        let config = ListKind::ALL.into_iter().flat_map(move |list| {
            self.config[list_index(list)]
                .iter()
                .map(move |(net, meta)| (*net, Cow::Owned(self.config_entry(list, *meta))))
        });
        dynamic.chain(config)
    }

    /// Up to `limit` entries of `list` after `cursor`, ordered by prefix.
    pub fn page(
        &self,
        list: ListKind,
        cursor: Option<IpNet>,
        limit: usize,
    ) -> Vec<(IpNet, Cow<'_, Entry>)> {
        use std::ops::Bound;
        let after = |n: &IpNet| cursor.is_none_or(|c| *n > c);
        let mut dynamic: Vec<(IpNet, &Entry)> = self
            .entries
            .iter()
            .filter(|((l, n), _)| *l == list && after(n))
            .map(|((_, n), e)| (*n, e))
            .collect();
        dynamic.sort_unstable_by_key(|(n, _)| *n);
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut config = self.config[list_index(list)]
            .range((from, Bound::Unbounded))
            .peekable();
        let mut dynamic = dynamic.into_iter().peekable();
        let mut out = Vec::with_capacity(limit.min(self.counts[list_index(list)]));
        while out.len() < limit {
            let take_config = match (config.peek(), dynamic.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((c, _)), Some((d, _))) => *c < d,
            };
            if take_config {
                let (net, meta) = config.next().expect("peeked");
                out.push((*net, Cow::Owned(self.config_entry(list, *meta))));
            } else {
                let (net, e) = dynamic.next().expect("peeked");
                out.push((net, Cow::Borrowed(e)));
            }
        }
        out
    }

    /// The number of entries on `list`.
    pub fn count(&self, list: ListKind) -> usize {
        self.counts[list_index(list)]
    }

    /// The whitelist entry covering `ip`, if any.
    pub fn whitelisted(&self, ip: IpAddr) -> Option<IpNet> {
        self.covering(ListKind::Whitelist, ip)
    }

    /// The longest prefix on `list` containing `ip`.
    pub fn covering(&self, list: ListKind, ip: IpAddr) -> Option<IpNet> {
        self.lens[list_index(list)]
            .present_longest_first(ip)
            .find_map(|len| {
                let net = IpNet::new(ip, len).ok()?.trunc();
                self.contains(list, &net).then_some(net)
            })
    }

    /// Strikes `ip` currently has within the strike window.
    pub fn strikes(&self, ip: IpAddr, now: Ts) -> u32 {
        self.offenders.get(&ip).map_or(0, |o| {
            let from = now.minus(self.esc.strike_window);
            o.strikes.iter().filter(|t| **t > from).count() as u32
        })
    }

    /// The active ban of `ip` (graylist or blacklist entry covering it), most severe first.
    pub fn ban_of(&self, ip: IpAddr) -> Option<(IpNet, Cow<'_, Entry>)> {
        [ListKind::Blacklist, ListKind::Graylist]
            .into_iter()
            .find_map(|list| {
                let net = self.covering(list, ip)?;
                Some((net, self.entry(list, net)?))
            })
    }

    /// A rate rule was exceeded by `ip` (the daemon has confirmed the count).
    pub fn violation(&mut self, ip: IpAddr, reason: String, now: Ts) -> (Outcome, Vec<Command>) {
        let out = self.violation_inner(ip, reason, now);
        self.flush_touched();
        out
    }

    fn violation_inner(&mut self, ip: IpAddr, reason: String, now: Ts) -> (Outcome, Vec<Command>) {
        if self.whitelisted(ip).is_some() {
            return (Outcome::Whitelisted, Vec::new());
        }
        if let Some((_, e)) = self.ban_of(ip) {
            return (
                Outcome::AlreadyBanned {
                    list: e.list,
                    until: e.until,
                },
                Vec::new(),
            );
        }
        let grace = self.esc.grace_violations;
        let off = self.offender(ip, now);
        off.violations = off.violations.saturating_add(1);
        if off.strikes.is_empty()
            && off.gray_bans == 0
            && off.black_bans == 0
            && off.violations <= grace
        {
            let violations = off.violations;
            return (Outcome::Forgiven { violations }, Vec::new());
        }
        let base = self.esc.graylist_duration;
        self.strike(ip, base, Origin::RateLimit, reason, now)
    }

    /// The protected application reported `ip` (e.g. a failed login).
    pub fn report(&mut self, ip: IpAddr, reason: String, now: Ts) -> (Outcome, Vec<Command>) {
        let out = self.report_inner(ip, reason, now);
        self.flush_touched();
        out
    }

    fn report_inner(&mut self, ip: IpAddr, reason: String, now: Ts) -> (Outcome, Vec<Command>) {
        if self.whitelisted(ip).is_some() {
            return (Outcome::Whitelisted, Vec::new());
        }
        let Some(rule) = self.report else {
            let off = self.offender(ip, now);
            if off.reports.len() >= MAX_UNRULED_REPORTS {
                off.reports.remove(0);
            }
            off.reports.push(now);
            let reports = off.reports.len() as u32;
            return (Outcome::Recorded { reports }, Vec::new());
        };
        let banned = self.ban_of(ip).map(|(_, e)| (e.list, e.until));
        let off = self.offender(ip, now);
        let from = now.minus(rule.window);
        off.reports.retain(|t| *t > from);
        off.reports.push(now);
        let reports = off.reports.len() as u32;
        if let Some((list, until)) = banned {
            return (Outcome::AlreadyBanned { list, until }, Vec::new());
        }
        if reports < rule.count {
            return (Outcome::Recorded { reports }, Vec::new());
        }
        off.reports.clear();
        let reason = format!(
            "{reports} reports within {}: {reason}",
            format_duration(rule.window)
        );
        self.strike(ip, rule.duration, Origin::Report, reason, now)
    }

    /// Adds a strike and bans: graylist for `gray_base` (grown), or blacklist when the
    /// strikes within the window reach `strikes_to_blacklist`.
    fn strike(
        &mut self,
        ip: IpAddr,
        gray_base: Duration,
        origin: Origin,
        reason: String,
        now: Ts,
    ) -> (Outcome, Vec<Command>) {
        let esc = self.esc.clone();
        let off = self.offender(ip, now);
        let from = now.minus(esc.strike_window);
        off.strikes.retain(|t| *t > from);
        off.strikes.push(now);
        let strikes = off.strikes.len() as u32;
        let (list, ttl) = if strikes >= esc.strikes_to_blacklist {
            let ttl = grow(
                esc.blacklist_duration,
                esc.ban_growth,
                off.black_bans,
                esc.max_ban,
            );
            off.black_bans = off.black_bans.saturating_add(1);
            if esc.reset_strikes_after_blacklist {
                off.strikes.clear();
            }
            (ListKind::Blacklist, ttl)
        } else {
            let ttl = grow(
                Lifetime::For(gray_base),
                esc.ban_growth,
                off.gray_bans,
                esc.max_ban,
            );
            off.gray_bans = off.gray_bans.saturating_add(1);
            (ListKind::Graylist, ttl)
        };
        let until = match ttl {
            Lifetime::For(d) => Some(now.plus(d)),
            Lifetime::Forever => None,
        };
        let net = IpNet::from(ip);
        let cmds = self.put(
            net,
            Entry {
                list,
                since: now,
                until,
                reason,
                origin,
            },
        );
        (
            Outcome::Banned {
                list,
                until,
                strikes,
            },
            cmds,
        )
    }

    fn put(&mut self, net: IpNet, entry: Entry) -> Vec<Command> {
        let key = (entry.list, net);
        let l = list_index(entry.list);
        let mut replaced_persisted = false;
        if let Some(old) = self.entries.get(&key) {
            replaced_persisted = old.origin != Origin::Config;
            if let Some(until) = old.until {
                self.expiries.remove(&(until, entry.list, net));
            }
        } else if self.config[l].remove(&net).is_none() {
            *self.lens[l].of(&net) += 1;
            self.counts[l] += 1;
        }
        if entry.origin != Origin::Config {
            self.record(JournalOp::Put(PersistedEntry::new(net, &entry)));
        } else if replaced_persisted {
            // A config entry took the place of a persisted one: the store must drop it.
            self.record(JournalOp::Remove {
                list: entry.list,
                net,
            });
        }
        if let Some(until) = entry.until {
            self.expiries.insert((until, entry.list, net));
        }
        let cmd = Command::Block {
            net,
            list: entry.list,
            until: entry.until,
            reason: entry.reason.clone(),
            origin: entry.origin,
        };
        self.entries.insert(key, entry);
        vec![cmd]
    }

    fn offender(&mut self, ip: IpAddr, now: Ts) -> &mut Offender {
        let retention = self.esc.state_retention;
        if self.journaling && self.touched.last() != Some(&ip) {
            self.touched.push(ip);
        }
        let off = self.offenders.entry(ip).or_default();
        if off.last_activity != Ts::default() {
            self.retention
                .remove(&(off.last_activity.plus(retention), ip));
        }
        off.last_activity = off.last_activity.max(now);
        self.retention
            .insert((off.last_activity.plus(retention), ip));
        off
    }

    /// The earliest time at which [`Engine::tick`] has work to do.
    pub fn next_deadline(&self) -> Option<Ts> {
        let expiry = self.expiries.first().map(|(t, _, _)| *t);
        let forget = self.retention.first().map(|(t, _)| *t);
        match (expiry, forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires due entries and forgets quiet sources. `last_drop` tells when the kernel
    /// last dropped a packet from inside a prefix (for `relative_block`).
    pub fn tick(
        &mut self,
        now: Ts,
        mut last_drop: impl FnMut(IpNet) -> Option<Ts>,
    ) -> Vec<Command> {
        let mut cmds = Vec::new();
        while let Some(&(until, list, net)) = self.expiries.first() {
            if until > now {
                break;
            }
            self.expiries.pop_first();
            let Some(entry) = self.entries.get_mut(&(list, net)) else {
                continue;
            };
            if self.esc.relative_block && entry.origin.is_policy() {
                // The ban runs its full length from the source's latest attempt.
                let length = until.since(entry.since);
                if let Some(last) = last_drop(net).filter(|t| *t > entry.since) {
                    let moved = last.plus(length);
                    if moved > now {
                        entry.since = last;
                        entry.until = Some(moved);
                        self.expiries.insert((moved, list, net));
                        let op = JournalOp::Put(PersistedEntry::new(net, entry));
                        self.record(op);
                        continue;
                    }
                }
            }
            self.remove_dynamic(list, net);
            cmds.push(Command::Unblock { net, list });
            if let Some(ip) = host(net).filter(|ip| self.offenders.contains_key(ip)) {
                // A ban that ends is activity: retention counts from the end of the ban.
                self.offender(ip, now);
                self.flush_touched();
            }
        }
        // Bounded: forgetting is never urgent, and a tick must not hold up the daemon's
        // event loop (the next deadline stays due, so the loop comes back at once).
        let mut budget = MAX_FORGET_PER_TICK;
        while let Some(&(at, ip)) = self.retention.first() {
            if at > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.retention.pop_first();
            let banned = self.ban_of(ip).is_some();
            if banned {
                // Keep the history while the source is banned; look again later.
                let again = now.plus(self.esc.state_retention);
                if let Some(off) = self.offenders.get_mut(&ip) {
                    off.last_activity = now;
                    let op = JournalOp::Offender(PersistedOffender::new(ip, off));
                    self.record(op);
                }
                self.retention.insert((again, ip));
            } else if self.offenders.remove(&ip).is_some() {
                self.record(JournalOp::Forget { ip });
            }
        }
        cmds
    }

    /// Sources with policy history (violations, strikes, reports).
    pub fn tracked(&self) -> usize {
        self.offenders.len()
    }

    /// About the number of records in [`Engine::snapshot`] (entries and offenders).
    pub fn persisted_len(&self) -> usize {
        self.entries.len() + self.offenders.len()
    }

    /// Everything that must survive a restart: the entries not from the config file and
    /// every offender, sorted (by list and prefix, by address) so equal engines give equal
    /// snapshots.
    pub fn snapshot(&self) -> EngineState {
        let mut entries: Vec<PersistedEntry> = self
            .entries
            .iter()
            .filter(|(_, e)| e.origin != Origin::Config)
            .map(|((_, net), e)| PersistedEntry::new(*net, e))
            .collect();
        entries.sort_by_key(|e| (e.list, e.net));
        let mut offenders: Vec<PersistedOffender> = self
            .offenders
            .iter()
            .map(|(ip, o)| PersistedOffender::new(*ip, o))
            .collect();
        offenders.sort_by_key(|o| o.ip);
        EngineState { entries, offenders }
    }

    /// Restores persisted state into a fresh engine (after the config entries were added),
    /// rebuilding the expiry and retention queues. A restored entry replaces a config entry
    /// of the same list and prefix, as it did before the restart. Entries whose `until` has
    /// already passed are restored too: the next [`Engine::tick`] expires them, so the
    /// daemon logs and unlists them the usual way. Config-origin entries in `state` (only a
    /// hand-edited file has them) are skipped: the config file is their source.
    ///
    /// Returns the Block commands for the restored entries. Restoring is not journaled:
    /// the store already holds all of it.
    pub fn restore(&mut self, state: EngineState) -> Vec<Command> {
        self.flush_touched();
        let mark = self.journal.len();
        let mut cmds = Vec::new();
        for e in state.entries {
            if e.origin == Origin::Config {
                continue;
            }
            let net = e.net.trunc();
            cmds.extend(self.put(
                net,
                Entry {
                    list: e.list,
                    since: e.since,
                    until: e.until,
                    reason: e.reason,
                    origin: e.origin,
                },
            ));
        }
        let retention = self.esc.state_retention;
        for p in state.offenders {
            if let Some(old) = self.offenders.get(&p.ip) {
                self.retention
                    .remove(&(old.last_activity.plus(retention), p.ip));
            }
            self.retention
                .insert((p.last_activity.plus(retention), p.ip));
            self.offenders.insert(
                p.ip,
                Offender {
                    strikes: SmallVec::from_vec(p.strikes),
                    violations: p.violations,
                    gray_bans: p.gray_bans,
                    black_bans: p.black_bans,
                    reports: SmallVec::from_vec(p.reports),
                    last_activity: p.last_activity,
                },
            );
        }
        self.journal.truncate(mark);
        cmds
    }

    /// The changes since the last call, in order, for the write-ahead journal: every
    /// entry put or removed and every offender touched or forgotten. Applied in order to
    /// the [`EngineState`] that was current at the last call ([`EngineState::replay`]),
    /// they give [`Engine::snapshot`].
    pub fn take_journal(&mut self) -> Vec<JournalOp> {
        self.flush_touched();
        std::mem::take(&mut self.journal)
    }

    /// Turns journaling on (the default) or off. A daemon that persists nothing turns it
    /// off, so the journal does not grow without anyone draining it. Turning it off drops
    /// the pending ops.
    pub fn set_journaling(&mut self, on: bool) {
        self.journaling = on;
        if !on {
            self.journal = Vec::new();
            self.touched = Vec::new();
        }
    }

    fn record(&mut self, op: JournalOp) {
        if self.journaling {
            self.journal.push(op);
        }
    }

    /// Journals the offenders [`Engine::offender`] handed out since the last flush, with
    /// their current state: an offender op carries the whole record, so recording it
    /// after the last change of a batch is enough.
    fn flush_touched(&mut self) {
        for ip in std::mem::take(&mut self.touched) {
            let op = match self.offenders.get(&ip) {
                Some(o) => JournalOp::Offender(PersistedOffender::new(ip, o)),
                None => JournalOp::Forget { ip },
            };
            if self.journal.last() != Some(&op) {
                self.record(op);
            }
        }
    }
}

/// Everything the engine must remember across restarts (config entries excluded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub entries: Vec<PersistedEntry>,
    pub offenders: Vec<PersistedOffender>,
}

/// A list entry as persisted: [`Entry`] with its prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedEntry {
    #[serde(with = "list_name")]
    pub list: ListKind,
    pub net: IpNet,
    /// Milliseconds since the UNIX epoch, like [`Ts`].
    pub since: Ts,
    /// `None`: never expires.
    pub until: Option<Ts>,
    pub reason: String,
    pub origin: Origin,
}

impl PersistedEntry {
    fn new(net: IpNet, e: &Entry) -> Self {
        PersistedEntry {
            list: e.list,
            net,
            since: e.since,
            until: e.until,
            reason: e.reason.clone(),
            origin: e.origin,
        }
    }
}

/// A source's policy history as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedOffender {
    pub ip: IpAddr,
    /// Times of strikes within the strike window, oldest first.
    pub strikes: Vec<Ts>,
    pub violations: u32,
    pub gray_bans: u32,
    pub black_bans: u32,
    /// Times of reports within the report window, oldest first.
    pub reports: Vec<Ts>,
    pub last_activity: Ts,
}

impl PersistedOffender {
    fn new(ip: IpAddr, o: &Offender) -> Self {
        PersistedOffender {
            ip,
            strikes: o.strikes.iter().copied().collect(),
            violations: o.violations,
            gray_bans: o.gray_bans,
            black_bans: o.black_bans,
            reports: o.reports.iter().copied().collect(),
            last_activity: o.last_activity,
        }
    }
}

/// One change to an [`EngineState`], as written to the journal. Each op carries the whole
/// new value of one key (an entry's list and prefix, an offender's address), so applying
/// an op again, or applying ops a snapshot already contains, changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalOp {
    /// An entry was added or changed (upsert).
    Put(PersistedEntry),
    /// An entry was removed or expired (no-op when absent).
    Remove {
        #[serde(with = "list_name")]
        list: ListKind,
        net: IpNet,
    },
    /// An offender's history changed (replace).
    Offender(PersistedOffender),
    /// An offender was forgotten after retention (no-op when absent).
    Forget { ip: IpAddr },
}

impl EngineState {
    /// Applies one journal op. Costs a pass over the state: apply many with
    /// [`EngineState::replay`].
    pub fn apply(&mut self, op: JournalOp) {
        self.replay([op]);
    }

    /// Applies journal ops in order (last op per key wins) and leaves the result sorted
    /// like [`Engine::snapshot`].
    pub fn replay(&mut self, ops: impl IntoIterator<Item = JournalOp>) {
        let mut entries: BTreeMap<(ListKind, IpNet), PersistedEntry> =
            std::mem::take(&mut self.entries)
                .into_iter()
                .map(|e| ((e.list, e.net), e))
                .collect();
        let mut offenders: BTreeMap<IpAddr, PersistedOffender> =
            std::mem::take(&mut self.offenders)
                .into_iter()
                .map(|o| (o.ip, o))
                .collect();
        for op in ops {
            match op {
                JournalOp::Put(e) => {
                    entries.insert((e.list, e.net), e);
                }
                JournalOp::Remove { list, net } => {
                    entries.remove(&(list, net));
                }
                JournalOp::Offender(o) => {
                    offenders.insert(o.ip, o);
                }
                JournalOp::Forget { ip } => {
                    offenders.remove(&ip);
                }
            }
        }
        self.entries = entries.into_values().collect();
        self.offenders = offenders.into_values().collect();
    }
}

/// [`ListKind`] as its name (`"graylist"`), the way operators write it.
mod list_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::lists::ListKind;

    pub fn serialize<S: Serializer>(list: &ListKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(list.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ListKind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

/// The position of `list` in [`ListKind::ALL`] (and the engine's per-list arrays).
const fn list_index(list: ListKind) -> usize {
    match list {
        ListKind::Whitelist => 0,
        ListKind::Graylist => 1,
        ListKind::Blacklist => 2,
    }
}

/// Number of entries per (family, prefix length).
#[derive(Clone, Debug)]
struct LenCounts([[u32; 129]; 2]);

impl Default for LenCounts {
    fn default() -> Self {
        LenCounts([[0; 129]; 2])
    }
}

impl LenCounts {
    fn of(&mut self, net: &IpNet) -> &mut u32 {
        &mut self.0[usize::from(net.addr().is_ipv6())][usize::from(net.prefix_len())]
    }

    /// The prefix lengths in use in `ip`'s family, longest first.
    fn present_longest_first(&self, ip: IpAddr) -> impl Iterator<Item = u8> + '_ {
        let (counts, max) = if ip.is_ipv4() {
            (&self.0[0], 32u8)
        } else {
            (&self.0[1], 128u8)
        };
        (0..=max)
            .rev()
            .filter(move |&len| counts[usize::from(len)] > 0)
    }
}

/// The address of a host prefix (/32, /128).
fn host(net: IpNet) -> Option<IpAddr> {
    (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())
}

/// `base × growth^n`, capped at `max`; forever stays forever.
fn grow(base: Lifetime, growth: f64, n: u32, max: Lifetime) -> Lifetime {
    let Lifetime::For(base) = base else {
        return Lifetime::Forever;
    };
    let factor = growth.powi(i32::try_from(n).unwrap_or(i32::MAX));
    let grown = base.as_secs_f64() * factor;
    let grown = if grown.is_finite() && grown < 1e15 {
        Duration::from_secs_f64(grown)
    } else {
        Duration::MAX
    };
    match max {
        Lifetime::For(max) => Lifetime::For(grown.min(max)),
        Lifetime::Forever if grown == Duration::MAX => Lifetime::Forever,
        Lifetime::Forever => Lifetime::For(grown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const H: Duration = Duration::from_secs(3600);
    const T0: Ts = Ts(1_700_000_000_000);

    fn esc() -> Escalation {
        Escalation {
            graylist_duration: H,
            strikes_to_blacklist: 3,
            strike_window: 24 * H,
            blacklist_duration: Lifetime::For(48 * H),
            ban_growth: 1.0,
            max_ban: Lifetime::Forever,
            relative_block: false,
            reset_strikes_after_blacklist: true,
            state_retention: 240 * H,
            grace_violations: 0,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn no_drops(_: IpNet) -> Option<Ts> {
        None
    }

    /// Violation, then run time forward to the end of the resulting ban.
    fn violate_and_serve(e: &mut Engine, who: IpAddr, now: Ts) -> (Outcome, Ts) {
        let (out, _) = e.violation(who, "test".into(), now);
        let end = match out {
            Outcome::Banned { until: Some(u), .. } => u,
            ref o => panic!("expected a timed ban, got {o:?}"),
        };
        let cmds = e.tick(end, no_drops);
        assert!(cmds.contains(&Command::Unblock {
            net: IpNet::from(who),
            list: match out {
                Outcome::Banned { list, .. } => list,
                _ => unreachable!(),
            }
        }));
        (out, end)
    }

    #[test]
    fn first_violation_graylists_for_the_configured_duration() {
        let mut e = Engine::new(esc(), None);
        let (out, cmds) = e.violation(ip("192.0.2.1"), "25 syn in 1s > 20".into(), T0);
        assert_eq!(
            out,
            Outcome::Banned {
                list: ListKind::Graylist,
                until: Some(T0.plus(H)),
                strikes: 1
            }
        );
        assert_eq!(
            cmds,
            vec![Command::Block {
                net: net("192.0.2.1/32"),
                list: ListKind::Graylist,
                until: Some(T0.plus(H)),
                reason: "25 syn in 1s > 20".into(),
                origin: Origin::RateLimit,
            }]
        );
        assert_eq!(e.strikes(ip("192.0.2.1"), T0), 1);
    }

    #[test]
    fn third_strike_within_the_window_blacklists_and_resets_strikes() {
        let mut e = Engine::new(esc(), None);
        let who = ip("2001:db8::7");
        let (o1, end1) = violate_and_serve(&mut e, who, T0);
        assert!(matches!(
            o1,
            Outcome::Banned {
                list: ListKind::Graylist,
                strikes: 1,
                ..
            }
        ));
        let (o2, end2) = violate_and_serve(&mut e, who, end1.plus(S));
        assert!(matches!(
            o2,
            Outcome::Banned {
                list: ListKind::Graylist,
                strikes: 2,
                ..
            }
        ));
        let (o3, _) = e.violation(who, "x".into(), end2.plus(S));
        assert_eq!(
            o3,
            Outcome::Banned {
                list: ListKind::Blacklist,
                until: Some(end2.plus(S).plus(48 * H)),
                strikes: 3
            }
        );
        assert_eq!(
            e.strikes(who, end2.plus(S)),
            0,
            "reset_strikes_after_blacklist"
        );
        // After the blacklist ends, the ladder starts again from a graylisting.
        let after = end2.plus(S).plus(48 * H);
        e.tick(after, no_drops);
        let (o4, _) = e.violation(who, "x".into(), after.plus(S));
        assert!(
            matches!(
                o4,
                Outcome::Banned {
                    list: ListKind::Graylist,
                    strikes: 1,
                    ..
                }
            ),
            "{o4:?}"
        );
    }

    #[test]
    fn without_reset_the_next_violation_after_a_blacklist_blacklists_again() {
        let mut e = Engine::new(
            Escalation {
                reset_strikes_after_blacklist: false,
                strikes_to_blacklist: 2,
                strike_window: 1000 * H,
                ..esc()
            },
            None,
        );
        let who = ip("192.0.2.2");
        let (_, end) = violate_and_serve(&mut e, who, T0);
        let (o2, end2) = violate_and_serve(&mut e, who, end.plus(S));
        assert!(matches!(
            o2,
            Outcome::Banned {
                list: ListKind::Blacklist,
                ..
            }
        ));
        let (o3, _) = e.violation(who, "x".into(), end2.plus(S));
        assert!(
            matches!(
                o3,
                Outcome::Banned {
                    list: ListKind::Blacklist,
                    strikes: 3,
                    ..
                }
            ),
            "{o3:?}"
        );
    }

    #[test]
    fn strikes_older_than_the_window_do_not_count() {
        let mut e = Engine::new(
            Escalation {
                strike_window: 2 * H,
                strikes_to_blacklist: 2,
                ..esc()
            },
            None,
        );
        let who = ip("192.0.2.3");
        let (_, end) = violate_and_serve(&mut e, who, T0);
        // The first strike (at T0) is exactly strike_window old: out of the window.
        let later = T0.plus(2 * H);
        assert!(later > end);
        let (o, _) = e.violation(who, "x".into(), later);
        assert!(
            matches!(
                o,
                Outcome::Banned {
                    list: ListKind::Graylist,
                    strikes: 1,
                    ..
                }
            ),
            "{o:?}"
        );
        // One millisecond earlier it would have been the second strike.
        let mut e = Engine::new(
            Escalation {
                strike_window: 2 * H,
                strikes_to_blacklist: 2,
                ..esc()
            },
            None,
        );
        violate_and_serve(&mut e, who, T0);
        let (o, _) = e.violation(
            who,
            "x".into(),
            T0.plus(2 * H).minus(Duration::from_millis(1)),
        );
        assert!(
            matches!(
                o,
                Outcome::Banned {
                    list: ListKind::Blacklist,
                    strikes: 2,
                    ..
                }
            ),
            "{o:?}"
        );
    }

    #[test]
    fn bans_grow_by_the_factor_and_stop_at_the_cap() {
        let mut e = Engine::new(
            Escalation {
                ban_growth: 2.0,
                max_ban: Lifetime::For(3 * H),
                strikes_to_blacklist: 100,
                ..esc()
            },
            None,
        );
        let who = ip("192.0.2.4");
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            let (out, end) = violate_and_serve(&mut e, who, now);
            let Outcome::Banned { until: Some(u), .. } = out else {
                unreachable!()
            };
            lengths.push(u.since(now));
            now = end.plus(S);
        }
        assert_eq!(lengths, vec![H, 2 * H, 3 * H, 3 * H]);
    }

    #[test]
    fn blacklist_growth_and_forever() {
        let grown = grow(Lifetime::For(48 * H), 1.5, 2, Lifetime::For(365 * 24 * H));
        assert_eq!(
            grown,
            Lifetime::For(Duration::from_secs_f64(48.0 * 3600.0 * 2.25))
        );
        assert_eq!(
            grow(Lifetime::Forever, 2.0, 0, Lifetime::For(H)),
            Lifetime::Forever
        );
        assert_eq!(
            grow(Lifetime::For(H), 2.0, 5000, Lifetime::Forever),
            Lifetime::Forever
        );
        assert_eq!(
            grow(Lifetime::For(H), 2.0, 5000, Lifetime::For(2 * H)),
            Lifetime::For(2 * H)
        );

        let mut e = Engine::new(
            Escalation {
                strikes_to_blacklist: 1,
                blacklist_duration: Lifetime::Forever,
                ..esc()
            },
            None,
        );
        let who = ip("198.51.100.9");
        let (o, _) = e.violation(who, "x".into(), T0);
        assert_eq!(
            o,
            Outcome::Banned {
                list: ListKind::Blacklist,
                until: None,
                strikes: 1
            }
        );
        assert_eq!(
            e.next_deadline(),
            Some(T0.plus(240 * H)),
            "only retention is scheduled"
        );
        assert!(
            e.tick(T0.plus(1000 * H), no_drops).is_empty(),
            "forever never expires"
        );
        assert!(e.ban_of(who).is_some());
    }

    #[test]
    fn grace_forgives_first_time_offenders_only() {
        let mut e = Engine::new(
            Escalation {
                grace_violations: 2,
                ..esc()
            },
            None,
        );
        let who = ip("192.0.2.5");
        assert_eq!(
            e.violation(who, "x".into(), T0).0,
            Outcome::Forgiven { violations: 1 }
        );
        assert_eq!(
            e.violation(who, "x".into(), T0.plus(S)).0,
            Outcome::Forgiven { violations: 2 }
        );
        let (o, end) = violate_and_serve(&mut e, who, T0.plus(2 * S));
        assert!(matches!(
            o,
            Outcome::Banned {
                list: ListKind::Graylist,
                ..
            }
        ));
        // Not a first-time offender any more: no grace.
        let (o, _) = e.violation(who, "x".into(), end.plus(S));
        assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
    }

    #[test]
    fn quiet_sources_are_forgotten_after_retention() {
        let mut e = Engine::new(
            Escalation {
                ban_growth: 2.0,
                state_retention: 10 * H,
                ..esc()
            },
            None,
        );
        let who = ip("192.0.2.6");
        let (_, end) = violate_and_serve(&mut e, who, T0);
        assert_eq!(e.tracked(), 1);
        // Retention counts from the end of the ban.
        e.tick(end.plus(10 * H).minus(S), no_drops);
        assert_eq!(e.tracked(), 1);
        e.tick(end.plus(10 * H), no_drops);
        assert_eq!(e.tracked(), 0);
        // Forgotten: the next ban is a first graylisting of base length again.
        let now = end.plus(11 * H);
        let (o, _) = e.violation(who, "x".into(), now);
        assert_eq!(
            o,
            Outcome::Banned {
                list: ListKind::Graylist,
                until: Some(now.plus(H)),
                strikes: 1
            }
        );
    }

    #[test]
    fn reports_ban_after_count_within_window_and_count_as_a_strike() {
        let rule = ReportRule {
            count: 3,
            window: 60 * S,
            duration: 600 * S,
        };
        let mut e = Engine::new(
            Escalation {
                strikes_to_blacklist: 2,
                ..esc()
            },
            Some(rule),
        );
        let who = ip("203.0.113.50");
        assert_eq!(
            e.report(who, "bad login".into(), T0).0,
            Outcome::Recorded { reports: 1 }
        );
        assert_eq!(
            e.report(who, "bad login".into(), T0.plus(20 * S)).0,
            Outcome::Recorded { reports: 2 }
        );
        // The first report is now 60 s old: out of the window.
        assert_eq!(
            e.report(who, "bad login".into(), T0.plus(60 * S)).0,
            Outcome::Recorded { reports: 2 }
        );
        let now = T0.plus(61 * S);
        let (o, cmds) = e.report(who, "bad login".into(), now);
        assert_eq!(
            o,
            Outcome::Banned {
                list: ListKind::Graylist,
                until: Some(now.plus(600 * S)),
                strikes: 1
            }
        );
        let Command::Block { origin, reason, .. } = &cmds[0] else {
            panic!()
        };
        assert_eq!(*origin, Origin::Report);
        assert!(
            reason.contains("3 reports within 1m") && reason.contains("bad login"),
            "{reason}"
        );
        // While banned, reports are recorded but do not ban again.
        assert!(matches!(
            e.report(who, "x".into(), now.plus(S)).0,
            Outcome::AlreadyBanned { .. }
        ));
        // The report ban was a strike: a rate violation after it blacklists.
        e.tick(now.plus(600 * S), no_drops);
        let (o, _) = e.violation(who, "x".into(), now.plus(601 * S));
        assert!(
            matches!(
                o,
                Outcome::Banned {
                    list: ListKind::Blacklist,
                    strikes: 2,
                    ..
                }
            ),
            "{o:?}"
        );
    }

    #[test]
    fn reports_without_a_rule_are_only_recorded() {
        let mut e = Engine::new(esc(), None);
        for i in 1..=10 {
            assert_eq!(
                e.report(ip("192.0.2.8"), "x".into(), T0.plus(i * S)).0,
                Outcome::Recorded { reports: i }
            );
        }
        assert!(e.ban_of(ip("192.0.2.8")).is_none());
    }

    #[test]
    fn whitelisted_sources_are_never_banned() {
        let rule = ReportRule {
            count: 1,
            window: 60 * S,
            duration: 600 * S,
        };
        let mut e = Engine::new(esc(), Some(rule));
        e.add(
            ListKind::Whitelist,
            net("10.0.0.0/8"),
            None,
            "ops".into(),
            Origin::Config,
            T0,
        );
        assert_eq!(
            e.violation(ip("10.1.2.3"), "x".into(), T0),
            (Outcome::Whitelisted, vec![])
        );
        assert_eq!(
            e.report(ip("10.1.2.3"), "x".into(), T0),
            (Outcome::Whitelisted, vec![])
        );
        assert_eq!(e.tracked(), 0);
    }

    #[test]
    fn a_banned_source_is_not_banned_twice() {
        let mut e = Engine::new(esc(), None);
        e.add(
            ListKind::Blacklist,
            net("203.0.113.0/24"),
            None,
            "known bad".into(),
            Origin::Config,
            T0,
        );
        let (o, cmds) = e.violation(ip("203.0.113.9"), "x".into(), T0);
        assert_eq!(
            o,
            Outcome::AlreadyBanned {
                list: ListKind::Blacklist,
                until: None
            }
        );
        assert!(cmds.is_empty());
    }

    #[test]
    fn entries_expire_exactly_at_their_time() {
        let mut e = Engine::new(esc(), None);
        let n = net("198.51.100.0/24");
        let cmds = e.add(
            ListKind::Graylist,
            n,
            Some(90 * S),
            "manual".into(),
            Origin::Api,
            T0,
        );
        assert!(matches!(cmds[0], Command::Block { until: Some(u), .. } if u == T0.plus(90 * S)));
        assert_eq!(e.next_deadline(), Some(T0.plus(90 * S)));
        assert!(e
            .tick(T0.plus(90 * S).minus(Duration::from_millis(1)), no_drops)
            .is_empty());
        assert_eq!(
            e.tick(T0.plus(90 * S), no_drops),
            vec![Command::Unblock {
                net: n,
                list: ListKind::Graylist
            }]
        );
        assert_eq!(e.next_deadline(), None);
        assert!(e.entry(ListKind::Graylist, n).is_none());
    }

    #[test]
    fn entries_without_duration_never_expire_and_can_be_removed() {
        let mut e = Engine::new(esc(), None);
        let n = net("2001:db8:bad::/48");
        e.add(
            ListKind::Blacklist,
            n,
            None,
            "manual".into(),
            Origin::Api,
            T0,
        );
        assert!(e.tick(Ts(u64::MAX), no_drops).is_empty());
        let (entry, cmds) = e.remove(ListKind::Blacklist, n).unwrap();
        assert_eq!(entry.reason, "manual");
        assert_eq!(
            cmds,
            vec![Command::Unblock {
                net: n,
                list: ListKind::Blacklist
            }]
        );
        assert!(e.remove(ListKind::Blacklist, n).is_none());
    }

    #[test]
    fn replacing_an_entry_reschedules_its_expiry() {
        let mut e = Engine::new(esc(), None);
        let n = net("192.0.2.0/24");
        e.add(
            ListKind::Graylist,
            n,
            Some(10 * S),
            "a".into(),
            Origin::Api,
            T0,
        );
        e.add(
            ListKind::Graylist,
            n,
            Some(100 * S),
            "b".into(),
            Origin::Api,
            T0,
        );
        assert!(e.tick(T0.plus(50 * S), no_drops).is_empty());
        assert_eq!(e.tick(T0.plus(100 * S), no_drops).len(), 1);
    }

    #[test]
    fn relative_block_moves_the_end_with_the_latest_attempt() {
        let mut e = Engine::new(
            Escalation {
                relative_block: true,
                graylist_duration: 10 * S,
                ..esc()
            },
            None,
        );
        let who = ip("192.0.2.9");
        e.violation(who, "x".into(), T0);
        let attempts = [T0.plus(8 * S)];
        let last = |_: IpNet| attempts.last().copied();
        // Due at T0+10 s, but the source tried again at T0+8 s: the ban runs to T0+18 s.
        assert!(e.tick(T0.plus(10 * S), last).is_empty());
        assert_eq!(e.next_deadline(), Some(T0.plus(18 * S)));
        assert!(e
            .tick(T0.plus(18 * S).minus(Duration::from_millis(1)), last)
            .is_empty());
        assert_eq!(e.tick(T0.plus(18 * S), last).len(), 1);

        // Without relative_block the ban ends at T0+10 s whatever the source did.
        let mut e = Engine::new(
            Escalation {
                relative_block: false,
                graylist_duration: 10 * S,
                ..esc()
            },
            None,
        );
        e.violation(who, "x".into(), T0);
        assert_eq!(e.tick(T0.plus(10 * S), last).len(), 1);
    }

    #[test]
    fn relative_block_leaves_manual_entries_alone() {
        let mut e = Engine::new(
            Escalation {
                relative_block: true,
                ..esc()
            },
            None,
        );
        let n = net("192.0.2.0/24");
        e.add(
            ListKind::Graylist,
            n,
            Some(10 * S),
            "manual".into(),
            Origin::Api,
            T0,
        );
        assert_eq!(e.tick(T0.plus(10 * S), |_| Some(T0.plus(9 * S))).len(), 1);
    }

    /// A small deterministic generator (64-bit LCG) so the journal test needs no seed file.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Settings that make every journaled path happen within a few hundred steps: grace,
    /// growth, blacklisting, report bans, relative blocks and a short retention.
    fn busy_engine() -> Engine {
        Engine::new(
            Escalation {
                graylist_duration: 10 * S,
                strikes_to_blacklist: 3,
                strike_window: 100 * S,
                blacklist_duration: Lifetime::For(60 * S),
                ban_growth: 1.5,
                max_ban: Lifetime::For(300 * S),
                relative_block: true,
                reset_strikes_after_blacklist: true,
                state_retention: 200 * S,
                grace_violations: 1,
            },
            Some(ReportRule {
                count: 2,
                window: 30 * S,
                duration: 20 * S,
            }),
        )
    }

    /// Runs `steps` pseudo-random operations; after each one the journal, replayed onto
    /// the state so far, must equal the snapshot. Returns the kinds of op seen.
    fn replay_run(seed: u64, steps: usize) -> [usize; 4] {
        let mut rng = Lcg(seed);
        let mut e = busy_engine();
        let mut state = EngineState::default();
        let mut now = T0;
        let mut seen = [0; 4];
        let hosts: Vec<IpAddr> = (1..=6)
            .map(|i| IpAddr::from([192, 0, 2, i]))
            .chain([ip("2001:db8::1")])
            .collect();
        let lists = [ListKind::Graylist, ListKind::Blacklist, ListKind::Whitelist];
        for step in 0..steps {
            let who = hosts[rng.next(hosts.len() as u64) as usize];
            let target = if rng.next(4) == 0 {
                net("192.0.2.0/24")
            } else {
                IpNet::from(who)
            };
            // The whitelist stays rare, or it would silence the policy.
            let choices = if rng.next(10) == 0 { 3 } else { 2 };
            let list = lists[rng.next(choices) as usize];
            match rng.next(10) {
                0..=2 => drop(e.violation(who, "rate".into(), now)),
                3 | 4 => drop(e.report(who, "login".into(), now)),
                5 => {
                    let ttl = (rng.next(3) != 0).then(|| Duration::from_secs(rng.next(50)));
                    e.add(list, target, ttl, "api".into(), Origin::Api, now);
                }
                6 => {
                    // Config entries may replace persisted ones (and are replaced by them).
                    e.add(list, target, None, "cfg".into(), Origin::Config, now);
                }
                7 => drop(e.remove(list, target)),
                _ => {
                    now = now.plus(Duration::from_millis(rng.next(40_000)));
                    let back = rng.next(3);
                    e.tick(now, |_| {
                        (back != 0).then(|| now.minus(Duration::from_secs(back * 3)))
                    });
                }
            }
            let ops = e.take_journal();
            for op in &ops {
                let kind = match op {
                    JournalOp::Put(p) => {
                        assert_ne!(p.origin, Origin::Config, "config entry journaled");
                        0
                    }
                    JournalOp::Remove { .. } => 1,
                    JournalOp::Offender(_) => 2,
                    JournalOp::Forget { .. } => 3,
                };
                seen[kind] += 1;
            }
            state.replay(ops);
            assert_eq!(state, e.snapshot(), "seed {seed}, step {step}");
        }
        seen
    }

    #[test]
    fn the_journal_replays_to_the_snapshot() {
        for seed in [1, 2, 3, 42, 0xdead_beef] {
            let seen = replay_run(seed, 2000);
            assert!(seen.iter().all(|n| *n > 0), "seed {seed}: {seen:?}");
        }
    }

    #[test]
    fn relative_block_extensions_are_journaled_with_their_new_times() {
        let mut e = busy_engine();
        let who = ip("192.0.2.9");
        e.violation(who, "x".into(), T0); // forgiven (grace 1)
        e.violation(who, "x".into(), T0.plus(S)); // graylisted until T0+11 s
        e.take_journal();
        e.tick(T0.plus(11 * S), |_| Some(T0.plus(9 * S)));
        let ops = e.take_journal();
        assert_eq!(ops.len(), 1, "{ops:?}");
        let JournalOp::Put(p) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!((p.since, p.until), (T0.plus(9 * S), Some(T0.plus(19 * S))));
    }

    #[test]
    fn config_entries_are_neither_journaled_nor_snapshotted() {
        let mut e = Engine::new(esc(), None);
        let n = net("192.0.2.0/24");
        e.add(
            ListKind::Blacklist,
            n,
            None,
            "cfg".into(),
            Origin::Config,
            T0,
        );
        e.add(
            ListKind::Whitelist,
            net("10.0.0.0/8"),
            Some(H),
            "cfg".into(),
            Origin::Config,
            T0,
        );
        e.tick(T0.plus(H), no_drops);
        e.remove(ListKind::Blacklist, n);
        assert_eq!(e.take_journal(), vec![]);
        assert_eq!(e.snapshot(), EngineState::default());

        // An API entry replaced by a config entry leaves the persisted state.
        e.add(ListKind::Blacklist, n, None, "api".into(), Origin::Api, T0);
        e.add(
            ListKind::Blacklist,
            n,
            None,
            "cfg".into(),
            Origin::Config,
            T0,
        );
        let mut state = EngineState::default();
        state.replay(e.take_journal());
        assert_eq!(state, EngineState::default());
        assert_eq!(e.snapshot(), state);
    }

    #[test]
    fn bulk_config_entries_behave_like_added_ones() {
        let mut e = Engine::new(esc(), None);
        e.add(
            ListKind::Blacklist,
            net("192.0.2.0/24"),
            None,
            "api".into(),
            Origin::Api,
            T0,
        );
        e.take_journal();
        let nets = [
            net("198.51.100.0/24"),
            net("192.0.2.0/24"),
            net("2001:db8::/32"),
            net("198.51.100.0/24"),
        ];
        e.add_config(ListKind::Blacklist, &nets, "config", T0);
        // The API entry gave way to the config one, as `add` does.
        let mut state = EngineState::default();
        state.replay(e.take_journal());
        assert_eq!(state, EngineState::default());
        assert_eq!(e.count(ListKind::Blacklist), 3);
        let entry = e.entry(ListKind::Blacklist, net("192.0.2.0/24")).unwrap();
        assert_eq!(
            (entry.origin, entry.reason.as_str()),
            (Origin::Config, "config")
        );
        assert_eq!(
            e.ban_of(ip("2001:db8::1")).map(|(n, _)| n),
            Some(net("2001:db8::/32"))
        );
        // Pages merge both kinds in prefix order.
        e.add(
            ListKind::Blacklist,
            net("198.51.100.7/32"),
            Some(H),
            "api".into(),
            Origin::Api,
            T0,
        );
        let page: Vec<IpNet> = e
            .page(ListKind::Blacklist, Some(net("192.0.2.0/24")), 2)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(page, vec![net("198.51.100.0/24"), net("198.51.100.7/32")]);
        // An API entry replaces a config one and is persisted; removing it leaves neither.
        e.add(
            ListKind::Blacklist,
            net("2001:db8::/32"),
            None,
            "api".into(),
            Origin::Api,
            T0,
        );
        assert_eq!(e.count(ListKind::Blacklist), 4);
        assert_eq!(e.snapshot().entries.len(), 2);
        let (old, _) = e.remove(ListKind::Blacklist, net("2001:db8::/32")).unwrap();
        assert_eq!(old.origin, Origin::Api);
        assert!(e.ban_of(ip("2001:db8::1")).is_none());
        let (old, _) = e
            .remove(ListKind::Blacklist, net("198.51.100.0/24"))
            .unwrap();
        assert_eq!(old.origin, Origin::Config);
        assert_eq!(e.count(ListKind::Blacklist), 2);
        assert_eq!(e.entries().count(), 2);
    }

    #[test]
    fn restore_rebuilds_queues_and_journals_nothing() {
        let rule = ReportRule {
            count: 2,
            window: 60 * S,
            duration: 600 * S,
        };
        let mut e = Engine::new(esc(), Some(rule));
        let who = ip("192.0.2.20");
        violate_and_serve(&mut e, who, T0);
        e.violation(who, "x".into(), T0.plus(2 * H)); // second strike, graylisted
        e.report(ip("192.0.2.21"), "login".into(), T0.plus(2 * H));
        e.add(
            ListKind::Blacklist,
            net("198.51.100.0/24"),
            None,
            "manual".into(),
            Origin::Api,
            T0,
        );
        let snap = e.snapshot();

        let mut r = Engine::new(esc(), Some(rule));
        r.add(
            ListKind::Whitelist,
            net("10.0.0.0/8"),
            None,
            "cfg".into(),
            Origin::Config,
            T0,
        );
        r.take_journal();
        let cmds = r.restore(snap.clone());
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(cmds.iter().all(|c| matches!(c, Command::Block { .. })));
        assert_eq!(r.take_journal(), vec![]);
        assert_eq!(r.snapshot(), snap);
        assert_eq!(r.next_deadline(), e.next_deadline());
        assert_eq!(r.strikes(who, T0.plus(2 * H)), 2);
        // The third strike blacklists, as it would have without the restart.
        let end = T0.plus(3 * H);
        r.tick(end, no_drops);
        let (o, _) = r.violation(who, "x".into(), end.plus(S));
        assert!(
            matches!(
                o,
                Outcome::Banned {
                    list: ListKind::Blacklist,
                    strikes: 3,
                    ..
                }
            ),
            "{o:?}"
        );
        // Retention still forgets the quiet reporter.
        r.tick(T0.plus(2 * H).plus(240 * H), no_drops);
        assert!(r
            .snapshot()
            .offenders
            .iter()
            .all(|o| o.ip != ip("192.0.2.21")));
    }

    #[test]
    fn past_entries_are_restored_and_expire_on_the_next_tick() {
        let mut e = Engine::new(esc(), None);
        let n = net("192.0.2.0/24");
        e.add(ListKind::Graylist, n, Some(H), "x".into(), Origin::Api, T0);
        let snap = e.snapshot();
        let mut r = Engine::new(esc(), None);
        assert_eq!(r.restore(snap).len(), 1);
        assert!(r.entry(ListKind::Graylist, n).is_some());
        assert_eq!(
            r.tick(T0.plus(2 * H), no_drops),
            vec![Command::Unblock {
                net: n,
                list: ListKind::Graylist
            }]
        );
        assert_eq!(
            r.take_journal(),
            vec![JournalOp::Remove {
                list: ListKind::Graylist,
                net: n
            }]
        );
    }

    #[test]
    fn journaling_can_be_turned_off() {
        let mut e = Engine::new(esc(), None);
        e.set_journaling(false);
        e.violation(ip("192.0.2.1"), "x".into(), T0);
        e.tick(T0.plus(1000 * H), no_drops);
        assert_eq!(e.take_journal(), vec![]);
    }

    #[test]
    fn persisted_types_use_operator_names() {
        let op = JournalOp::Put(PersistedEntry {
            list: ListKind::Graylist,
            net: net("192.0.2.0/24"),
            since: Ts(5),
            until: None,
            reason: "r".into(),
            origin: Origin::RateLimit,
        });
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(
            json,
            r#"{"put":{"list":"graylist","net":"192.0.2.0/24","since":5,"until":null,"reason":"r","origin":"rate_limit"}}"#
        );
        assert_eq!(serde_json::from_str::<JournalOp>(&json).unwrap(), op);
        let forget = JournalOp::Forget {
            ip: ip("2001:db8::1"),
        };
        let json = serde_json::to_string(&forget).unwrap();
        assert_eq!(json, r#"{"forget":{"ip":"2001:db8::1"}}"#);
        assert!(serde_json::from_str::<JournalOp>(
            r#"{"remove":{"list":"purple","net":"192.0.2.0/24"}}"#
        )
        .is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any run's journal, replayed onto the state it started from, gives the
            /// snapshot.
            #[test]
            fn any_journal_replays_to_the_snapshot(seed in any::<u64>()) {
                replay_run(seed, 300);
            }

            /// Whatever the order of additions, replacements, removals and ticks, no entry
            /// is unblocked before its time, and every due entry is unblocked by the tick
            /// that passes its time.
            #[test]
            fn expiry_never_unbans_early(
                ops in prop::collection::vec((0u8..4, 0u8..16, 1u64..5000, 0u64..3000), 1..60),
            ) {
                let mut e = Engine::new(esc(), None);
                let mut now = T0;
                let mut live: HashMap<IpNet, Option<Ts>> = HashMap::new();
                for (op, host, ttl_ms, step_ms) in ops {
                    let n = IpNet::from(IpAddr::from([192, 0, 2, host]));
                    match op {
                        0 | 1 => {
                            let ttl = (op == 0).then(|| Duration::from_millis(ttl_ms));
                            e.add(ListKind::Graylist, n, ttl, "p".into(), Origin::Api, now);
                            live.insert(n, ttl.map(|d| now.plus(d)));
                        }
                        2 => {
                            let removed = e.remove(ListKind::Graylist, n).is_some();
                            prop_assert_eq!(removed, live.remove(&n).is_some());
                        }
                        _ => {
                            now = now.plus(Duration::from_millis(step_ms));
                            for c in e.tick(now, |_| None) {
                                let Command::Unblock { net, .. } = c else { panic!("tick blocked") };
                                let until = live.remove(&net).expect("unblocked an absent entry");
                                prop_assert!(until.is_some_and(|u| u <= now), "early unban of {}", net);
                            }
                            for (n, until) in &live {
                                prop_assert!(until.is_none_or(|u| u > now), "{} overdue", n);
                            }
                        }
                    }
                }
            }
        }
    }
}
