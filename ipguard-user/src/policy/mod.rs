//! The policy: pure logic, tested without a kernel. Time is passed in; decisions come out
//! as table operations that the controller writes to the kernel.
//!
//! [`Policy`] joins the two halves: the [`engine`] decides what is listed (strikes,
//! escalation, reports, expiry) and [`compile`] turns those memberships, with the ordered
//! rules, into the prefix → verdict table the XDP program reads. Every change is a
//! transaction: the controller commits it once the kernel has it, or rolls it back.

pub mod compile;
pub mod engine;
mod lens;
pub mod monitor;
pub mod window;

use std::{net::IpAddr, time::Duration};

use ipguard_common::ListEntry;
use ipnet::IpNet;

use self::{
    compile::{Change, ListState},
    engine::{Command, Engine, EngineState, Entry, JournalOp, Outcome, Promotion},
};
use crate::{
    config::{Escalation, ReportRule},
    model::{Compiled, Layer, ListKind, Origin, Scope, Scopes, TableOp, Ts},
};

/// What one policy step changed: the engine's commands (for logs and records) and the
/// table operations that carry them out, in the order that never lets a listed address
/// pass in between.
#[derive(Debug, Default)]
#[must_use = "a change must be written to the tables, then committed or rolled back"]
pub struct Changed {
    pub commands: Vec<Command>,
    pub ops: Vec<TableOp>,
    /// Prefixes banned in place of host bans (their Block and the hosts' Unblocks are in
    /// `commands`).
    pub promotions: Vec<Promotion>,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.ops.is_empty()
    }

    /// Joins a later change of the same transaction. The table operations become the net
    /// difference, in the compiler's safe order (writes deepest first, then deletes): the
    /// last operation on each prefix is what the tables must end with.
    pub fn extend(&mut self, later: Changed) {
        self.commands.extend(later.commands);
        self.promotions.extend(later.promotions);
        if later.ops.is_empty() {
            return;
        }
        let mut last = std::collections::BTreeMap::new();
        let mut scopes = std::collections::BTreeMap::new();
        for op in self.ops.drain(..).chain(later.ops) {
            match op {
                TableOp::Write(net, _) | TableOp::Delete(net) => last.insert(net, op),
                TableOp::ScopeWrite(key, _) | TableOp::ScopeDelete(key) => scopes.insert(key, op),
            };
        }
        let (writes, deletes): (Vec<_>, Vec<_>) = last
            .into_values()
            .partition(|op| matches!(op, TableOp::Write(..)));
        let (scope_writes, scope_deletes): (Vec<_>, Vec<_>) = scopes
            .into_values()
            .partition(|op| matches!(op, TableOp::ScopeWrite(..)));
        self.ops = scope_writes
            .into_iter()
            .chain(writes.into_iter().rev())
            .chain(deletes)
            .chain(scope_deletes)
            .collect();
    }
}

/// The engine's commands as membership changes of the compiled table.
fn changes(cmds: &[Command]) -> impl Iterator<Item = Change> + '_ {
    cmds.iter().map(|c| match c {
        Command::Block { net, list, .. } => Change::Insert(*net, list.layer()),
        Command::Unblock { net, list } => Change::Remove(*net, list.layer()),
    })
}

/// The engine and the compiled table, kept in step.
pub struct Policy {
    engine: Engine,
    compiled: ListState,
    /// Prefixes of sources in monitor mode (see [`monitor`]).
    monitored: monitor::Monitored,
}

impl Policy {
    pub fn new(esc: Escalation, report: Option<ReportRule>) -> Self {
        Self {
            engine: Engine::new(esc, report),
            compiled: ListState::new(),
            monitored: monitor::Monitored::default(),
        }
    }

    /// Read access to the engine's state (entries, strikes, counts).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What the tables must hold.
    pub fn compiled(&self) -> &Compiled {
        self.compiled.written()
    }

    /// What the kernel's scope map must hold (see `policy::compile::scope`).
    pub fn scopes(&self) -> Scopes {
        self.compiled.scopes()
    }

    /// Scope groups named by the compiled entries.
    pub fn scope_groups(&self) -> usize {
        self.compiled.scope_groups()
    }

    /// Scoped decisions that kept the prefix's own verdict for want of a scope group id.
    pub fn scope_overflows(&self) -> u64 {
        self.compiled.scope_overflows()
    }

    /// The id of `scope` for scoped rules and entries; `None` past
    /// [`compile::MAX_SCOPES`] distinct scopes.
    pub fn intern_scope(&mut self, scope: &Scope) -> Option<compile::ScopeId> {
        self.compiled.intern_scope(scope)
    }

    /// Replaces the config's scoped list entries (prefix, layer, scope). Like rules they are
    /// no engine state. `None` past [`compile::MAX_SCOPES`] distinct scopes (nothing changed).
    pub fn set_scoped_entries(
        &mut self,
        entries: &[(IpNet, Layer, Scope)],
    ) -> Option<Vec<TableOp>> {
        let mut wanted = Vec::with_capacity(entries.len());
        for (net, layer, scope) in entries {
            wanted.push((*net, *layer, self.compiled.intern_scope(scope)?));
        }
        let layers = [
            Layer::White,
            Layer::Gray,
            Layer::Black,
            Layer::MonitorGray,
            Layer::MonitorBlack,
        ];
        Some(self.compiled.set_scoped(&layers, &wanted))
    }

    /// The (protocol, port) atoms the scopes in use split packets into (port 0: the
    /// protocol's other ports); empty without scoped rules or entries.
    pub fn atoms(&self) -> Vec<(u8, u16)> {
        self.compiled.atoms()
    }

    /// The decision for a packet of `proto` to `port` from `ip` (see
    /// [`ListState::decide_for`]).
    pub fn decide_for(&self, ip: IpAddr, proto: u8, port: u16) -> Option<(IpNet, ListEntry)> {
        self.compiled.decide_for(ip, proto, port)
    }

    /// The decision for `ip` and the prefix that made it (see [`ListState::decide`]).
    pub fn decide(&self, ip: IpAddr) -> Option<(IpNet, ListEntry)> {
        self.compiled.decide(ip)
    }

    /// Start-up: the config's lists in bulk (no command per entry), then the persisted
    /// state. Not a transaction: nothing is written yet.
    pub fn load(&mut self, config_lists: &[Vec<IpNet>; 3], state: Option<EngineState>, now: Ts) {
        let mut all = Vec::with_capacity(config_lists.iter().map(Vec::len).sum());
        for (list, nets) in ListKind::ALL.into_iter().zip(config_lists) {
            self.engine.add_config(list, nets, "config", now);
            all.extend(nets.iter().map(|net| Change::Insert(*net, list.layer())));
        }
        let cmds = match state {
            Some(state) => self.engine.restore(state),
            None => {
                self.engine.set_journaling(false);
                Vec::new()
            }
        };
        all.extend(changes(&cmds));
        // The ops are not needed: the tables are synced to the whole result.
        let _ = self.compiled.apply(all);
    }

    fn step(&mut self, commands: Vec<Command>) -> Changed {
        let ops = self.compiled.apply(changes(&commands));
        let promotions = self.engine.take_promotions();
        Changed {
            commands,
            ops,
            promotions,
        }
    }

    /// Puts `entries` (prefix, ttl, reason) on `list` as one transaction; also returns how
    /// many were new and how many replaced an entry.
    pub fn add(
        &mut self,
        list: ListKind,
        entries: &[(IpNet, Option<Duration>, String)],
        origin: Origin,
        now: Ts,
    ) -> (Changed, (u64, u64)) {
        self.engine.begin();
        let (mut added, mut replaced) = (0, 0);
        let mut cmds = Vec::with_capacity(entries.len());
        for (net, ttl, reason) in entries {
            if self.engine.entry(list, *net).is_some() {
                replaced += 1;
            } else {
                added += 1;
            }
            cmds.extend(
                self.engine
                    .add(list, *net, *ttl, reason.clone(), origin, now),
            );
        }
        (self.step(cmds), (added, replaced))
    }

    /// Removes `net` from `list`; `None` (and no transaction) if it is not there.
    pub fn remove(&mut self, list: ListKind, net: IpNet) -> Option<(Entry, Changed)> {
        self.engine.begin();
        match self.engine.remove(list, net) {
            Some((entry, cmds)) => Some((entry, self.step(cmds))),
            None => {
                self.engine.commit();
                None
            }
        }
    }

    /// A confirmed rate violation by `ip`.
    pub fn violation(&mut self, ip: IpAddr, reason: String, now: Ts) -> (Outcome, Changed) {
        self.engine.begin();
        let (outcome, cmds) = self.engine.violation(ip, reason, now);
        (outcome, self.step(cmds))
    }

    /// A report from the protected application.
    pub fn report(
        &mut self,
        ip: IpAddr,
        reason: String,
        fleet: Option<u32>,
        now: Ts,
    ) -> (Outcome, Changed) {
        self.engine.begin();
        let (outcome, cmds) = self.engine.report(ip, reason, fleet, now);
        (outcome, self.step(cmds))
    }

    /// Strikes of bans other nodes made (see [`Engine::fleet_strike`]), as one
    /// transaction without table changes.
    pub fn fleet_strikes(&mut self, strikes: &[(IpAddr, ListKind, Ts)], now: Ts) {
        self.engine.begin();
        for (ip, list, at) in strikes {
            self.engine.fleet_strike(*ip, *list, *at, now);
        }
        self.engine.commit();
    }

    /// Expiries and retention due by `now` (see [`Engine::tick`]).
    pub fn tick(&mut self, now: Ts, last_drop: impl FnMut(IpNet) -> Option<Ts>) -> Changed {
        self.engine.begin();
        let cmds = self.engine.tick(now, last_drop);
        self.step(cmds)
    }

    /// The config's lists changed from `old` to `new` (a reload): entries added to the
    /// file are added, entries gone from it are removed unless something else (the API,
    /// the policy) owns them now.
    pub fn reload_lists(
        &mut self,
        old: &[Vec<IpNet>; 3],
        new: &[Vec<IpNet>; 3],
        now: Ts,
    ) -> Changed {
        use std::collections::HashSet;
        self.engine.begin();
        let mut cmds = Vec::new();
        for (i, list) in ListKind::ALL.into_iter().enumerate() {
            let old_set: HashSet<IpNet> = old[i].iter().map(|n| n.trunc()).collect();
            let new_set: HashSet<IpNet> = new[i].iter().map(|n| n.trunc()).collect();
            // Added to the file, or missing from the engine (an operator removed it with
            // force): the file is what counts at a reload.
            let missing: Vec<IpNet> = new_set
                .iter()
                .filter(|n| !old_set.contains(n) || self.engine.entry(list, **n).is_none())
                .copied()
                .collect();
            for net in &missing {
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
        self.step(cmds)
    }

    /// A host ban (`ban`: its list and end) did not fit the kernel's table: ban the host's
    /// prefix instead if enough of it is banned already (see [`Engine::promote`]). A
    /// transaction of its own.
    pub fn promote(
        &mut self,
        ip: IpAddr,
        min: u32,
        ban: (ListKind, Option<Ts>),
        now: Ts,
    ) -> Option<(IpNet, Changed)> {
        self.engine.begin();
        match self.engine.promote(ip, min, ban, now) {
            Some((prefix, cmds)) => Some((prefix, self.step(cmds))),
            None => {
                self.engine.commit();
                None
            }
        }
    }

    /// Replaces the protected networks (never banned by the policy).
    pub fn set_protected(&mut self, nets: Vec<IpNet>) {
        self.engine.set_protected(nets);
    }

    /// Replaces the rule layer by resolved rules (index, deny, nets). Rules are no engine
    /// state: a failed write is repaired by writing them again.
    pub fn set_rules(&mut self, rules: &[compile::RuleNets]) -> Vec<TableOp> {
        self.compiled.set_rules(rules)
    }

    /// The kernel holds the last change: keep it.
    pub fn commit(&mut self) {
        self.engine.commit();
    }

    /// The kernel refused the last change: take it back. Returns the operations that bring
    /// the tables from the change back to before it.
    pub fn rollback(&mut self) -> Vec<TableOp> {
        let cmds = self.engine.rollback();
        self.compiled.apply(changes(&cmds))
    }

    /// Replaces the escalation and report settings (a reload); state is kept.
    pub fn reconfigure(&mut self, esc: Escalation, report: Option<ReportRule>) {
        self.engine.reconfigure(esc, report);
    }

    /// The journal ops since the last call (see [`Engine::take_journal`]).
    pub fn take_journal(&mut self) -> Vec<JournalOp> {
        self.engine.take_journal()
    }

    /// The whole persisted state (see [`Engine::snapshot`]).
    pub fn snapshot(&self) -> EngineState {
        self.engine.snapshot()
    }

    /// When [`Policy::tick`] next has work.
    pub fn next_deadline(&self) -> Option<Ts> {
        self.engine.next_deadline()
    }
}

#[cfg(test)]
mod tests;
