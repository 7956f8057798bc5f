//! What the policy does on its own: rate events from the kernel, reports from the
//! application, expiries, drop records; and the rules' hostname resolution.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use ipguard_common::{RateEvent, SourceKey};
use ipnet::IpNet;

use super::{view::Explanation, Controller, ControllerError, Durability, Result};
use crate::{
    config::RateLimit,
    dataplane::{Backend, TableError},
    decision_log::Record,
    duration::format_duration,
    model::{ListKind, Now, Ts},
    policy::{engine::Outcome, window, Changed},
};

impl<B: Backend> Controller<B> {
    /// Handles a batch of rate events: sums the CPUs' windows of each signalled source and
    /// rule, and hands confirmed violations to the policy. The whole batch is one change,
    /// journaled once and written to the kernel in one batch (group commit). If the tables
    /// cannot take it all, the violations are taken one at a time: what fits goes in, and a
    /// source whose ban does not fit is promoted with its /24 or /64 when enough of that
    /// network is banned already; the rest is counted, and nothing already banned is lost.
    pub fn on_events(&mut self, events: &[RateEvent], now: Now) -> Result<()> {
        self.telemetry.events.inc_by(events.len() as u64);
        let mut seen = HashSet::new();
        let mut result = Ok(());
        let mut violations = Vec::new();
        for ev in events {
            if !seen.insert((ev.addr, ev.rule)) {
                continue;
            }
            let ip = IpAddr::from(SourceKey { addr: ev.addr });
            // `[[rate_limit]] exempt`: the kernel counts the source like any other, but this
            // rule never judges it, now or when its window closes.
            let rule = self.settings.rates.get(ev.rule as usize);
            if rule.is_some_and(|rule| rule.exempts(ip)) {
                continue;
            }
            match self.count_of(ev.addr, ev.rule, ev.ktime_ns) {
                Ok(Some((rule, count, _))) if window::violated(&rule, ip, count) => {
                    violations.push(Violation {
                        ip,
                        rule,
                        index: ev.rule,
                        count,
                        sent_ns: Some(ev.sent_ns),
                    });
                }
                Ok(Some((rule, count, cpus))) => {
                    // Under the limit now, but the CPUs may still count past it without
                    // signalling again: read it once more when the window has closed.
                    let step = window::step(rule.count, cpus);
                    if window::needs_recheck(count, rule.count, step, cpus) {
                        let (_, end) = window::window_of(ev.ktime_ns, rule_window_ns(&rule));
                        if !self.rechecks.schedule(ev.addr, ev.rule, end) {
                            self.telemetry.rechecks_skipped.inc();
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => result = Err(e),
            }
        }
        self.ban(violations, now).and(result)
    }

    /// The summed count of rule `index` for the source `addr` at `at_ns` (kernel monotonic
    /// time), with the rule and the number of CPUs; `None` if the rule or the source's
    /// counters are gone.
    fn count_of(
        &mut self,
        addr: [u8; 16],
        index: u32,
        at_ns: u64,
    ) -> Result<Option<(RateLimit, u64, u32)>> {
        let Some(rule) = self.settings.rates.get(index as usize).cloned() else {
            return Ok(None);
        };
        let ip = IpAddr::from(SourceKey { addr });
        let per_cpu = match self.backend.source_per_cpu(ip) {
            Ok(Some(per_cpu)) => per_cpu,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.telemetry.count_write_error("read");
                return Err(e.into());
            }
        };
        let windows = per_cpu.iter().map(|c| c.windows[index as usize]);
        let count = window::observed(
            windows,
            rule_window_ns(&rule),
            at_ns,
            self.settings.accumulate,
        );
        Ok(Some((rule, count, per_cpu.len() as u32)))
    }

    /// Reads again the sources near a limit whose window has closed by `now`, and bans
    /// those that passed it after all (at most `MAX` per call; the rest is due at once).
    fn recheck(&mut self, now: Now) -> Result<()> {
        const MAX: usize = 4096;
        let due = self.rechecks.take_due(now.mono_ns, MAX);
        if due.is_empty() {
            return Ok(());
        }
        self.telemetry.rechecks.inc_by(due.len() as u64);
        let mut result = Ok(());
        let mut violations = Vec::new();
        for r in due {
            // Banned meanwhile (by this window's own signal, most often): nothing to add.
            if self
                .policy
                .engine()
                .ban_of(IpAddr::from(SourceKey { addr: r.addr }))
                .is_some()
            {
                continue;
            }
            let ip = IpAddr::from(SourceKey { addr: r.addr });
            match self.count_of(r.addr, r.rule, r.at_ns) {
                // A reload may have exempted the source since the recheck was scheduled.
                Ok(Some((rule, count, _))) if window::violated(&rule, ip, count) => {
                    self.telemetry.recheck_violations.inc();
                    violations.push(Violation {
                        ip,
                        rule,
                        index: r.rule,
                        count,
                        sent_ns: None,
                    });
                }
                Ok(_) => {}
                Err(e) => result = Err(e),
            }
        }
        self.ban(violations, now).and(result)
    }

    /// Hands confirmed violations to the policy: one change, journaled once and written
    /// in one batch; if the tables cannot take it all, one at a time (see `on_events`).
    fn ban(&mut self, violations: Vec<Violation>, now: Now) -> Result<()> {
        if violations.is_empty() {
            return Ok(());
        }
        let mut result = Ok(());
        // All at once.
        let mut batch = Changed::default();
        let mut outcomes = Vec::with_capacity(violations.len());
        for v in &violations {
            let (outcome, change) = self.policy.violation(v.ip, v.reason(), now.wall);
            batch.extend(change);
            outcomes.push(outcome);
        }
        match self.carry_out(batch, "policy", "", Durability::BestEffort, now) {
            Ok(()) => {
                for (v, outcome) in violations.iter().zip(&outcomes) {
                    self.after_violation(v, outcome, now);
                }
            }
            Err(ControllerError::Table(TableError::Full { .. })) => {
                // One at a time (the batch was rolled back whole: the same decisions again).
                for v in &violations {
                    let (outcome, change) = self.policy.violation(v.ip, v.reason(), now.wall);
                    match self.carry_out(change, "policy", "", Durability::BestEffort, now) {
                        Ok(()) => self.after_violation(v, &outcome, now),
                        Err(ControllerError::Table(TableError::Full { .. })) => {
                            if let Outcome::Banned { list, until, .. } = outcome {
                                self.promote(v.ip, (list, until), now);
                            }
                        }
                        Err(e) => result = Err(e),
                    }
                }
            }
            Err(e) => result = Err(e),
        }
        result
    }

    /// Logs, counts and records a violation the tables took.
    fn after_violation(&mut self, v: &Violation, outcome: &Outcome, now: Now) {
        match outcome {
            &Outcome::Banned { list, strikes, .. } => {
                // From the packet that signalled to the ban being in the tables (a ban found
                // by a recheck waited for its window to close on purpose: not a reaction).
                let reaction = v
                    .sent_ns
                    .map_or(0.0, |sent| now.mono_ns.saturating_sub(sent) as f64 / 1e9);
                if v.sent_ns.is_some() {
                    self.telemetry.reaction.observe(reaction);
                }
                self.telemetry.count_bans("rate_limit", list, 1);
                tracing::info!(
                    source = %v.ip,
                    list = list.as_str(),
                    strikes,
                    reaction_ms = reaction * 1e3,
                    "rate violation"
                );
            }
            &Outcome::Forgiven { violations } => {
                tracing::info!(source = %v.ip, violations, reason = v.reason(), "violation forgiven (grace)");
            }
            Outcome::Protected => {
                self.telemetry.protected.inc();
                tracing::info!(source = %v.ip, reason = v.reason(), "violation by a protected address: not banned");
            }
            _ => {}
        }
        if self.log.is_enabled() {
            self.log_record(&Record::Violation {
                source: v.ip.to_string(),
                rule: format!(
                    "{} {}/{}",
                    v.rule.kind,
                    v.rule.count,
                    format_duration(v.rule.window)
                ),
                count: v.count,
                limit: u64::from(v.rule.count),
                outcome: outcome.as_str().into(),
            });
        }
    }

    /// `ip`'s ban (`ban`: its list and end) did not fit the host table: ban its prefix
    /// instead if enough of it is banned already (`[escalation] promote_when_full`; logged
    /// and counted by `carry_out` like a promotion by count).
    fn promote(&mut self, ip: IpAddr, ban: (ListKind, Option<Ts>), now: Now) {
        let min = self.settings.promote_when_full;
        let Some((prefix, change)) = self.policy.promote(ip, min, ban, now.wall) else {
            return;
        };
        if let Err(e) = self.carry_out(change, "policy", "promoted", Durability::BestEffort, now) {
            tracing::debug!(source = %ip, prefix = %prefix, error = %e, "promotion refused too")
        }
    }

    /// A report from the protected application; returns what came of it and the source's
    /// explanation.
    pub fn report(
        &mut self,
        ip: IpAddr,
        reason: String,
        fleet: Option<u32>,
        now: Now,
    ) -> Result<(Outcome, Explanation)> {
        let (outcome, change) = self.policy.report(ip, reason.clone(), fleet, now.wall);
        self.carry_out(change, "policy", "", Durability::Required, now)?;
        match outcome {
            Outcome::Banned { list, .. } => self.telemetry.count_bans("report", list, 1),
            Outcome::Protected => {
                self.telemetry.protected.inc();
            }
            _ => {}
        }
        self.log_record(&Record::Report {
            source: ip.to_string(),
            reason,
            outcome: outcome.as_str().into(),
        });
        Ok((outcome, self.explain(ip, now)?))
    }

    /// Rechecks, expiries and retention due by `now`.
    pub fn tick(&mut self, now: Now) -> Result<()> {
        let rechecked = self.recheck(now);
        let backend = &self.backend;
        let change = self
            .policy
            .tick(now.wall, |net| Self::last_drop(backend, now, net));
        let expired = self.carry_out(change, "policy", "expired", Durability::BestEffort, now);
        rechecked.and(expired)
    }

    /// When [`Controller::tick`] next has work, from `now`.
    pub fn next_deadline(&self, now: Now) -> Option<Duration> {
        let policy = self.policy.next_deadline().map(|t| t.since(now.wall));
        let recheck = self
            .rechecks
            .next_due()
            .map(|due| Duration::from_nanos(due.saturating_sub(now.mono_ns)));
        match (policy, recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
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
            let Some(&(base, last)) = self.drops.get(&net) else {
                continue;
            };
            if totals.dropped <= last {
                continue;
            }
            let engine = self.policy.engine();
            let list = [ListKind::Blacklist, ListKind::Graylist]
                .into_iter()
                .find(|l| engine.entry(*l, net).is_some())
                .map_or("unknown", ListKind::as_str);
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
}

/// A confirmed violation of one rate rule.
struct Violation {
    ip: IpAddr,
    rule: RateLimit,
    /// The rule's index in the config.
    index: u32,
    count: u64,
    /// When the packet that signalled it was seen; `None` for a recheck's find.
    sent_ns: Option<u64>,
}

fn rule_window_ns(rule: &RateLimit) -> u64 {
    u64::try_from(rule.window.as_nanos()).unwrap_or(u64::MAX)
}

impl Violation {
    fn reason(&self) -> String {
        let ports = if self.rule.ports.is_empty() {
            String::new()
        } else {
            format!(" to ports {:?}", self.rule.ports)
        };
        format!(
            "rate limit: {} {}{ports} in {} > {} (rule {})",
            self.count,
            self.rule.kind,
            format_duration(self.rule.window),
            self.rule.count,
            self.index + 1
        )
    }
}
