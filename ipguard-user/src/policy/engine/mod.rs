//! The policy engine: strikes, escalation, reports, expiry. Pure: events and `now` in,
//! [`Command`]s out; no clock, no kernel, no I/O. [`super::Policy`] compiles the commands
//! into table operations, which the controller writes to the kernel.
//!
//! Persistence is pure too: [`Engine::snapshot`] and [`Engine::restore`] move the
//! state that must survive a restart in and out as an [`EngineState`], and
//! [`Engine::take_journal`] hands out every change since the last call as [`JournalOp`]s
//! for the write-ahead journal in `crate::store`. Config-origin entries are neither
//! snapshotted nor journaled: the config file brings them back at each start.
//!
//! Config entries without an expiry (all of a config file's `[lists]`) are kept apart from
//! the per-entry records, as a sorted prefix → (since, reason) map per list: a config can
//! hold millions of them, and they need no expiry, journal or history.

mod promote;
mod query;
mod state;
mod undo;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use smallvec::SmallVec;

pub use self::promote::{Promotion, Trigger};
pub use self::query::OffenderSummary;
pub use self::state::{EngineState, JournalOp, PersistedEntry, PersistedOffender};
use super::lens::LenCounts;
use crate::{
    config::{Escalation, ReportRule},
    duration::{format_duration, Lifetime, MAX_DURATION},
    model::{ListKind, Origin, Ts},
};

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
    /// A protected address (`[protect]`: the operator's networks, the host's own
    /// addresses, API clients, loopback): never banned by the policy, never counted.
    Protected,
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

impl Outcome {
    /// The outcome's name in logs and API answers.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Outcome::Recorded { .. } => "recorded",
            Outcome::Banned { .. } => "banned",
            Outcome::AlreadyBanned { .. } => "already_banned",
            Outcome::Whitelisted => "whitelisted",
            Outcome::Protected => "protected",
            Outcome::Forgiven { .. } => "forgiven",
        }
    }
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
    /// The open transaction, if any (see `undo.rs`).
    undo: Option<undo::Undo>,
    /// Addresses the policy never bans (see [`Outcome::Protected`]), set by the controller.
    protected: Vec<IpNet>,
    /// Host entries the policy made on the graylist or blacklist, with the number of lists
    /// each is on: the members of a prefix the policy promotes (see `promote.rs`).
    policy_hosts: BTreeMap<IpNet, u8>,
    /// The whitelist's entries in `entries` (the config's are in `config`), sorted: no
    /// promoted prefix may hold one.
    white_dynamic: BTreeSet<IpNet>,
    /// Promotions not yet handed out by [`Engine::take_promotions`].
    promotions: Vec<Promotion>,
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
            undo: None,
            protected: Vec::new(),
            policy_hosts: BTreeMap::new(),
            white_dynamic: BTreeSet::new(),
            promotions: Vec::new(),
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
        let l = list.index();
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
        self.save_entry(list, net);
        let l = list.index();
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
        self.saved_entry(list, net, || undo::Saved::Dynamic(old.clone()));
        if is_policy_host(net, &old) {
            self.unindex_policy_host(net);
        }
        if list == ListKind::Whitelist {
            self.white_dynamic.remove(&net);
        }
        if let Some(until) = old.until {
            self.expiries.remove(&(until, list, net));
        }
        if old.origin != Origin::Config {
            self.record(JournalOp::Remove { list, net });
        }
        let l = list.index();
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
        let l = list.index();
        let entry = match self.remove_dynamic(list, net) {
            Some(entry) => entry,
            None => {
                let meta = self.config[l].remove(&net)?;
                self.saved_entry(list, net, || undo::Saved::Config(meta));
                *self.lens[l].of(&net) -= 1;
                self.counts[l] -= 1;
                self.config_entry(list, meta)
            }
        };
        Some((entry, vec![Command::Unblock { net, list }]))
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
        if self.is_protected(ip) {
            return (Outcome::Protected, Vec::new());
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

    /// The protected application reported `ip` (e.g. a failed login). `fleet`: the
    /// reports of `ip` within the window across the fleet, this one included, when the
    /// fleet counted them; the larger of it and this node's count decides.
    pub fn report(
        &mut self,
        ip: IpAddr,
        reason: String,
        fleet: Option<u32>,
        now: Ts,
    ) -> (Outcome, Vec<Command>) {
        let out = self.report_inner(ip, reason, fleet, now);
        self.flush_touched();
        out
    }

    /// The report rule, if there is one.
    pub fn report_rule(&self) -> Option<ReportRule> {
        self.report
    }

    /// Another node of the fleet banned `ip` (a rate rule or reports) at `at`: the strike
    /// and the ban count here too, so that a violation here escalates as if both had
    /// happened here.
    pub fn fleet_strike(&mut self, ip: IpAddr, list: ListKind, at: Ts, now: Ts) {
        let window = self.esc.strike_window;
        let off = self.offender(ip, now);
        let from = now.minus(window);
        off.strikes.retain(|t| *t > from);
        if at > from && !off.strikes.contains(&at) {
            off.strikes.push(at);
            off.strikes.sort_unstable();
        }
        match list {
            ListKind::Blacklist => off.black_bans = off.black_bans.saturating_add(1),
            ListKind::Graylist => off.gray_bans = off.gray_bans.saturating_add(1),
            ListKind::Whitelist => {}
        }
        self.flush_touched();
    }

    fn report_inner(
        &mut self,
        ip: IpAddr,
        reason: String,
        fleet: Option<u32>,
        now: Ts,
    ) -> (Outcome, Vec<Command>) {
        if self.whitelisted(ip).is_some() {
            return (Outcome::Whitelisted, Vec::new());
        }
        if self.is_protected(ip) {
            return (Outcome::Protected, Vec::new());
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
        let reports = (off.reports.len() as u32).max(fleet.unwrap_or(0));
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
        let banned = self.put(
            net,
            Entry {
                list,
                since: now,
                until,
                reason,
                origin,
            },
        );
        let cmds = self
            .promote_by_count(ip, (list, until), origin, now)
            .unwrap_or(banned);
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
        self.save_entry(entry.list, net);
        let key = (entry.list, net);
        let l = entry.list.index();
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
        let was_policy = self
            .entries
            .get(&key)
            .is_some_and(|o| is_policy_host(net, o));
        if is_policy_host(net, &entry) && !was_policy {
            *self.policy_hosts.entry(net).or_default() += 1;
        } else if was_policy && !is_policy_host(net, &entry) {
            self.unindex_policy_host(net);
        }
        if entry.list == ListKind::Whitelist {
            self.white_dynamic.insert(net);
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
        self.save_offender(ip);
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
            if !self.entries.contains_key(&(list, net)) {
                continue;
            }
            self.save_entry(list, net);
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
                self.save_offender(ip);
                if let Some(off) = self.offenders.get_mut(&ip) {
                    off.last_activity = now;
                    let op = JournalOp::Offender(PersistedOffender::new(ip, off));
                    self.record(op);
                }
                self.retention.insert((again, ip));
            } else if let Some(old) = self.offenders.remove(&ip) {
                self.saved_offender(ip, || Some(old.clone()));
                self.record(JournalOp::Forget { ip });
            }
        }
        cmds
    }
}

/// Whether `entry` at `net` is a ban the policy made of one address (see
/// `Engine::policy_hosts`).
fn is_policy_host(net: IpNet, entry: &Entry) -> bool {
    entry.origin.is_policy()
        && entry.list != ListKind::Whitelist
        && net.prefix_len() == net.max_prefix_len()
}

/// The address of a host prefix (/32, /128).
fn host(net: IpNet) -> Option<IpAddr> {
    (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())
}

/// `base × growth^n`, capped at `max`; forever stays forever. A ban grown past
/// [`MAX_DURATION`] (about a century) is forever: no expiry is ever computed that the wall
/// clock and RFC 3339 cannot write.
fn grow(base: Lifetime, growth: f64, n: u32, max: Lifetime) -> Lifetime {
    let Lifetime::For(base) = base else {
        return Lifetime::Forever;
    };
    let factor = growth.powi(i32::try_from(n).unwrap_or(i32::MAX));
    let grown = base.as_secs_f64() * factor;
    let grown = if grown.is_finite() && grown <= MAX_DURATION.as_secs_f64() {
        Lifetime::For(Duration::from_secs_f64(grown))
    } else {
        Lifetime::Forever
    };
    grown.min(max)
}

#[cfg(test)]
mod tests;
