//! Compiles list and rule memberships into the prefix → verdict table the XDP program reads
//! (longest prefix wins; `dataplane::Layout` lays it out in the kernel's maps), and keeps it
//! up to date change by change.
//!
//! The data path does a single longest-prefix-match lookup and acts on the entry's `list`,
//! so the table must hold the *result* of the precedence for every address:
//! 1. any whitelisted prefix containing the address: [`LIST_WHITELIST`];
//! 2. else the longest graylisted or blacklisted prefix containing it (the blacklist wins
//!    on an identical prefix): [`LIST_GRAYLIST`] / [`LIST_BLACKLIST`];
//! 3. else the ordered rules, first match wins: the lowest rule index among the rules with a
//!    prefix containing the address, if it denies ([`LIST_RULE_DENY`], `rule_id` = index + 1;
//!    should one index carry both actions, deny wins);
//! 4. else the longest monitored graylist or blacklist prefix containing it (monitor mode:
//!    would drop, passes; the blacklist wins on an identical prefix):
//!    [`LIST_MONITOR_GRAYLIST`] / [`LIST_MONITOR_BLACKLIST`];
//! 5. else the winning rule of step 3 if it allows ([`LIST_RULE_ALLOW`]);
//! 6. else no decision (no entry, i.e. [`LIST_NONE`]).
//!
//! So a monitored entry never weakens an enforced one, whatever the prefix lengths, and it
//! is reported (would drop) where an allow rule would otherwise pass the address.
//! In [`Mode::Monitor`] (the global mode, [`ListState::set_mode`]) every dropping decision of
//! steps 2 and 3 becomes its monitored code ([`ipguard_common::monitored`]).
//!
//! Lists' entries get `rule_id` 0.
//!
//! # Representation
//! Let P be the set of all member prefixes (every layer, both families). For an address whose
//! longest match within P is `p`, the P-prefixes containing the address are exactly `p` and
//! its ancestors in P, so the decision is constant over that region and is the value to
//! store at `p`. `p` is left out when that decision equals its parent's in P (or is "no
//! decision" without a parent): the kernel's longest match then lands on the nearest written
//! ancestor, which holds the same decision. This form is canonical — a prefix is written iff
//! `decision(p) != decision(parent_P(p))` — so incremental updates and a full rebuild give
//! identical tables, which the tests check.
//!
//! A change at `p` alters the decisions of `p` and its descendants only, and a prefix's
//! written state depends on its own and its parent's decisions only, so only the subtree of
//! `p` is recomputed. `ipnet` orders truncated prefixes by (network address, length): a
//! depth-first order of the prefix tree in which a subtree is one contiguous range, so both
//! the full rebuild and a subtree recomputation are one ordered pass with a stack of
//! ancestors.
//!
//! # Order of the table operations
//! The kernel applies each update atomically, but a batch is applied one element at a time.
//! Writes come first, deepest prefix first (reverse depth-first order), then deletes,
//! shallowest first. With that order every address sees, at every moment, either its
//! decision from before the batch or its decision after it — never a third value, so never
//! a verdict less restrictive than both. (Ancestors first would briefly expose an allowing
//! ancestor's new value to a subtree whose denying entry is not written yet.)

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    rc::Rc,
};

use ipguard_common::ListEntry;
use ipnet::IpNet;

#[cfg(test)]
use self::precedence::NO_DECISION;
pub use self::scope::{ScopeId, MAX_SCOPES};
use self::{
    precedence::{rule_rank, Acc, Decides, Members},
    scope::{Groups, ScopeTable, ScopedMember},
};
use super::lens::LenCounts;
use crate::{
    config::Lists,
    model::{Compiled, Layer, ListKind, Mode, Scope, Scopes, TableOp},
};

/// One membership change, for [`ListState::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Insert(IpNet, Layer),
    Remove(IpNet, Layer),
    /// A membership for the packets of one scope only ([`ListState::intern_scope`]).
    InsertScoped(IpNet, Layer, ScopeId),
    RemoveScoped(IpNet, Layer, ScopeId),
}

/// A membership: of a layer, or of a layer for one scope's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    Plain(Layer),
    Scoped(ScopedMember),
}

impl Change {
    fn parts(self) -> (IpNet, Membership, bool) {
        match self {
            Change::Insert(net, layer) => (net.trunc(), Membership::Plain(layer), true),
            Change::Remove(net, layer) => (net.trunc(), Membership::Plain(layer), false),
            Change::InsertScoped(net, layer, id) => {
                (net.trunc(), Membership::Scoped((id, layer)), true)
            }
            Change::RemoveScoped(net, layer, id) => {
                (net.trunc(), Membership::Scoped((id, layer)), false)
            }
        }
    }
}

/// A batch with more changes than this, and at least 1/[`FULL_REBUILD_FRACTION`] of the
/// known prefixes, is applied by a full rebuild rather than subtree by subtree: each subtree
/// costs a lookup per prefix length present to seed its ancestors, a full pass costs a
/// step per prefix.
const FULL_REBUILD_MIN: usize = 64;
const FULL_REBUILD_FRACTION: usize = 16;

/// How [`ListState::apply_with`] recomputes the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the tests force each path to compare them")
)]
enum Recompute {
    /// By the size of the batch.
    Auto,
    /// One ordered pass over every prefix.
    Full,
    /// The subtree of each changed prefix.
    Subtrees,
}

/// The memberships of every prefix and the table contents they compile to.
#[derive(Debug, Default, Clone)]
pub struct ListState {
    members: BTreeMap<IpNet, Members>,
    /// The prefixes with at least one rule membership, so that [`ListState::set_rules`]
    /// does not scan every list entry.
    rule_nets: BTreeSet<IpNet>,
    /// The prefixes with at least one scoped membership.
    scoped_nets: BTreeSet<IpNet>,
    lens: LenCounts,
    written: Compiled,
    /// The global mode is monitor: dropping decisions are written as monitored codes.
    monitor_all: bool,
    scopes: ScopeTable,
    groups: Groups,
    /// The atoms changed since the last pass: every scoped decision is computed again.
    atoms_changed: bool,
}

/// The per-atom accumulations of a chain (see [`ScopeTable::step`]).
type AtomAccs = Option<Rc<[Acc]>>;

/// What [`desired`] needs besides the memberships.
struct Ctx<'a> {
    monitor_all: bool,
    scopes: &'a ScopeTable,
    groups: &'a mut Groups,
}

impl Ctx<'_> {
    fn entry(&mut self, acc: Acc, atoms: Option<&Rc<[Acc]>>) -> ListEntry {
        let mut entry = acc.decision(self.monitor_all);
        if let Some(atoms) = atoms {
            let cells = self.scopes.cells(entry.list, atoms, self.monitor_all);
            entry.scope = self.groups.intern(cells);
        }
        entry
    }
}

/// The last prefix of `net`'s subtree in `IpNet` order: the subtree is `net..=subtree_end`.
fn subtree_end(net: &IpNet) -> IpNet {
    IpNet::new(net.broadcast(), net.max_prefix_len())
        .unwrap_or(*net)
        .trunc()
}

/// The prefix of length `len` containing `ip` (`len` is at most the family's width).
fn prefix_of(ip: IpAddr, len: u8) -> Option<IpNet> {
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

/// Appends to `out` the entries to write for `iter` — prefixes in `IpNet` order, all inside
/// one subtree (or the whole state) — given `base`, the memberships of their common
/// ancestors outside `iter`.
fn desired<'a>(
    iter: impl Iterator<Item = (&'a IpNet, &'a Members)>,
    base: (Acc, AtomAccs),
    ctx: &mut Ctx<'_>,
    out: &mut Vec<(IpNet, ListEntry)>,
) {
    let base_decision = ctx.entry(base.0, base.1.as_ref());
    // The chain of ancestors of the current prefix within `iter`: at most one per length.
    let mut stack: Vec<(IpNet, Acc, AtomAccs, ListEntry)> = Vec::with_capacity(130);
    for (net, m) in iter {
        while stack.last().is_some_and(|(top, ..)| !top.contains(net)) {
            stack.pop();
        }
        let (parent, parent_atoms, parent_decision) = match stack.last() {
            Some(t) => (t.1, t.2.as_ref(), t.3),
            None => (base.0, base.1.as_ref(), base_decision),
        };
        let acc = parent.with(m);
        let atoms = ctx.scopes.step(parent, parent_atoms, m);
        let decision = ctx.entry(acc, atoms.as_ref());
        if decision != parent_decision {
            out.push((*net, decision));
        }
        stack.push((*net, acc, atoms, decision));
    }
}

/// Merges the current entries `old` and the wanted ones `new` (both sorted) into writes and
/// deletes.
fn diff<'a>(
    old: impl Iterator<Item = (&'a IpNet, &'a ListEntry)>,
    new: &[(IpNet, ListEntry)],
    writes: &mut Vec<(IpNet, ListEntry)>,
    deletes: &mut Vec<IpNet>,
) {
    let mut old = old.peekable();
    let mut new = new.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(&(o, _)), None) => {
                deletes.push(*o);
                old.next();
            }
            (None, Some(&&n)) => {
                writes.push(n);
                new.next();
            }
            (Some(&(o, oe)), Some(&&(n, ne))) => match o.cmp(&n) {
                std::cmp::Ordering::Less => {
                    deletes.push(*o);
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    writes.push((n, ne));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if *oe != ne {
                        writes.push((n, ne));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// The ops for `writes` and `deletes` (each in `IpNet` order) in the safe order (see the
/// module documentation), between the scope map's writes and deletes (`scopes`).
fn ordered_ops(
    writes: Vec<(IpNet, ListEntry)>,
    deletes: Vec<IpNet>,
    scopes: (Vec<TableOp>, Vec<TableOp>),
) -> Vec<TableOp> {
    let mut ops =
        Vec::with_capacity(writes.len() + deletes.len() + scopes.0.len() + scopes.1.len());
    ops.extend(scopes.0);
    ops.extend(writes.into_iter().rev().map(|(n, e)| TableOp::Write(n, e)));
    ops.extend(deletes.into_iter().map(TableOp::Delete));
    ops.extend(scopes.1);
    ops
}

impl ListState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `net` (host bits are cleared) to a layer. Returns the table operations that make
    /// the kernel's tables match, writes first, then deletes (see the module documentation
    /// for why this order). Adding an already-present membership returns no ops.
    pub fn insert(&mut self, net: IpNet, layer: Layer) -> Vec<TableOp> {
        self.apply([Change::Insert(net, layer)])
    }

    /// Removes `net` (host bits are cleared) from a layer; like [`ListState::insert`].
    pub fn remove(&mut self, net: IpNet, layer: Layer) -> Vec<TableOp> {
        self.apply([Change::Remove(net, layer)])
    }

    /// Applies many changes at once, then returns the net table operations (same order as
    /// [`ListState::insert`]). A large batch is applied by one full ordered pass, a small one
    /// by recomputing the subtree of each changed prefix.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) -> Vec<TableOp> {
        self.apply_with(changes, Recompute::Auto)
    }

    fn apply_with(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        strategy: Recompute,
    ) -> Vec<TableOp> {
        let mut changes: Vec<(IpNet, Membership, bool)> =
            changes.into_iter().map(Change::parts).collect();
        let full = match strategy {
            _ if self.atoms_changed => true,
            Recompute::Full => true,
            Recompute::Subtrees => false,
            Recompute::Auto => {
                let n = changes.len();
                n > FULL_REBUILD_MIN && n.saturating_mul(FULL_REBUILD_FRACTION) >= self.len()
            }
        };
        let mut touched = Vec::new();
        let mut any = false;
        if full {
            // In prefix order the map is visited sequentially, which is several times faster
            // than in random order for a million prefixes. The sort is stable: the changes
            // to one prefix keep their order.
            changes.sort_by_key(|c| c.0);
        }
        if full && self.members.is_empty() {
            any = self.build_members(changes);
        } else {
            for (net, member, on) in changes {
                if self.set_member(net, member, on) {
                    any = true;
                    if !full {
                        touched.push(net);
                    }
                }
            }
        }
        if !any && !self.atoms_changed {
            return Vec::new();
        }
        if full {
            self.rebuild()
        } else {
            self.recompute_subtrees(touched)
        }
    }

    /// Fills the empty membership map from `changes` sorted by prefix, by a bulk build;
    /// returns whether any membership resulted.
    fn build_members(&mut self, changes: Vec<(IpNet, Membership, bool)>) -> bool {
        let mut built: Vec<(IpNet, Members)> = Vec::with_capacity(changes.len());
        let set = |m: &mut Members, member: Membership, on: bool| match member {
            Membership::Plain(layer) => m.set(layer, on),
            Membership::Scoped(s) => m.set_scoped(s, on),
        };
        for (net, member, on) in changes {
            match built.last_mut() {
                Some((last, m)) if *last == net => {
                    set(m, member, on);
                }
                _ => {
                    let mut m = Members::default();
                    set(&mut m, member, on);
                    built.push((net, m));
                }
            }
        }
        built.retain(|(_, m)| !m.is_empty());
        for (net, _) in &built {
            *self.lens.of(net) += 1;
        }
        self.rule_nets = built
            .iter()
            .filter(|(_, m)| !m.rules.is_empty())
            .map(|(net, _)| *net)
            .collect();
        self.scoped_nets = built
            .iter()
            .filter(|(_, m)| !m.scoped.is_empty())
            .map(|(net, _)| *net)
            .collect();
        // Sorted and without duplicates: collecting is a linear bulk build.
        self.members = built.into_iter().collect();
        !self.members.is_empty()
    }

    /// Records one membership; returns whether it changed.
    fn set_member(&mut self, net: IpNet, member: Membership, on: bool) -> bool {
        use std::collections::btree_map::Entry;
        let set = |m: &mut Members| match member {
            Membership::Plain(layer) => m.set(layer, on),
            Membership::Scoped(s) => m.set_scoped(s, on),
        };
        let changed = match self.members.entry(net) {
            Entry::Vacant(_) if !on => false,
            Entry::Vacant(v) => {
                set(v.insert(Members::default()));
                *self.lens.of(&net) += 1;
                true
            }
            Entry::Occupied(mut o) => {
                let changed = set(o.get_mut());
                if o.get().is_empty() {
                    o.remove();
                    *self.lens.of(&net) -= 1;
                }
                changed
            }
        };
        if changed && matches!(member, Membership::Plain(Layer::Rule { .. })) {
            if self.members.get(&net).is_some_and(|m| !m.rules.is_empty()) {
                self.rule_nets.insert(net);
            } else {
                self.rule_nets.remove(&net);
            }
        }
        if changed && matches!(member, Membership::Scoped(_)) {
            if self.members.get(&net).is_some_and(|m| !m.scoped.is_empty()) {
                self.scoped_nets.insert(net);
            } else {
                self.scoped_nets.remove(&net);
            }
        }
        changed
    }

    /// Recomputes every entry in one ordered pass.
    fn rebuild(&mut self) -> Vec<TableOp> {
        self.atoms_changed = false;
        let mut new = Vec::with_capacity(self.written.len().max(self.members.len() / 2));
        let mut ctx = Ctx {
            monitor_all: self.monitor_all,
            scopes: &self.scopes,
            groups: &mut self.groups,
        };
        desired(
            self.members.iter(),
            (Acc::default(), None),
            &mut ctx,
            &mut new,
        );
        let (mut writes, mut deletes) = (Vec::new(), Vec::new());
        diff(self.written.iter(), &new, &mut writes, &mut deletes);
        let scopes = self.groups.settle(&self.written, &writes, &deletes);
        // `new` is sorted: collecting it is a linear bulk build.
        self.written = new.into_iter().collect();
        ordered_ops(writes, deletes, scopes)
    }

    /// Recomputes the subtrees of the changed prefixes (`touched`, in any order).
    fn recompute_subtrees(&mut self, mut touched: Vec<IpNet>) -> Vec<TableOp> {
        touched.sort_unstable();
        touched.dedup();
        let (mut writes, mut deletes) = (Vec::new(), Vec::new());
        let mut new = Vec::new();
        // In depth-first order a prefix inside an already-recomputed subtree follows its
        // root, with nothing outside that subtree in between.
        let mut last_root: Option<IpNet> = None;
        for root in touched {
            if last_root.is_some_and(|r| r.contains(&root)) {
                continue;
            }
            last_root = Some(root);
            let range = root..=subtree_end(&root);
            new.clear();
            let base = self.ancestors(&root);
            let mut ctx = Ctx {
                monitor_all: self.monitor_all,
                scopes: &self.scopes,
                groups: &mut self.groups,
            };
            desired(self.members.range(range.clone()), base, &mut ctx, &mut new);
            diff(self.written.range(range), &new, &mut writes, &mut deletes);
        }
        let scopes = self.groups.settle(&self.written, &writes, &deletes);
        for (net, entry) in &writes {
            self.written.insert(*net, *entry);
        }
        for net in &deletes {
            self.written.remove(net);
        }
        ordered_ops(writes, deletes, scopes)
    }

    /// The accumulated memberships of the strict ancestors of `net` in P, and per atom.
    fn ancestors(&self, net: &IpNet) -> (Acc, AtomAccs) {
        self.lens
            .present(net.addr(), net.prefix_len())
            .filter_map(|len| self.members.get(&prefix_of(net.addr(), len)?))
            .fold((Acc::default(), None), |(acc, atoms), m| {
                let atoms = self.scopes.step(acc, atoms.as_ref(), m);
                (acc.with(m), atoms)
            })
    }

    /// The id of `scope` for [`Change::InsertScoped`]; `None` past [`MAX_SCOPES`] distinct
    /// scopes. A scope that splits packets in a new way makes the next change a full pass.
    pub fn intern_scope(&mut self, scope: &Scope) -> Option<ScopeId> {
        let (id, changed) = self.scopes.intern(scope)?;
        self.atoms_changed |= changed;
        Some(id)
    }

    /// The atoms of the scopes in use (see `scope`).
    pub fn atoms(&self) -> Vec<(u8, u16)> {
        self.scopes.atoms().to_vec()
    }

    /// The scope of an id from [`ListState::intern_scope`].
    pub fn scope(&self, id: ScopeId) -> Option<&Scope> {
        self.scopes.get(id)
    }

    /// What the kernel's scope map must hold for [`Self::written`].
    pub fn scopes(&self) -> Scopes {
        self.groups.scopes()
    }

    /// Scope groups named by the written entries.
    pub fn scope_groups(&self) -> usize {
        self.groups.len()
    }

    /// Scoped decisions that found every scope group id in use and kept the prefix's own
    /// verdict instead (0 unless the scopes are pathological).
    pub fn scope_overflows(&self) -> u64 {
        self.groups.overflows
    }

    /// Replaces every scoped membership of the layers `layers` by `wanted` (prefix, layer,
    /// scope): the config's scoped list entries at start and reload. Returns the net table
    /// operations.
    pub fn set_scoped(
        &mut self,
        layers: &[Layer],
        wanted: &[(IpNet, Layer, ScopeId)],
    ) -> Vec<TableOp> {
        let wanted: BTreeSet<(IpNet, ScopedMember)> = wanted
            .iter()
            .map(|&(net, layer, id)| (net.trunc(), (id, layer)))
            .collect();
        let mut changes = Vec::new();
        for net in &self.scoped_nets {
            if let Some(m) = self.members.get(net) {
                changes.extend(
                    m.scoped
                        .iter()
                        .filter(|(_, layer)| layers.contains(layer))
                        .filter(|s| !wanted.contains(&(*net, **s)))
                        .map(|&(id, layer)| Change::RemoveScoped(*net, layer, id)),
                );
            }
        }
        for &(net, (id, layer)) in &wanted {
            if !self
                .members
                .get(&net)
                .is_some_and(|m| m.scoped.contains(&(id, layer)))
            {
                changes.push(Change::InsertScoped(net, layer, id));
            }
        }
        self.apply(changes)
    }

    /// Replaces every Rule-layer membership by `rules` (index, deny, scope, nets) — used
    /// after hostnames are resolved again. Returns the net table operations.
    pub fn set_rules(&mut self, rules: &[RuleNets]) -> Vec<TableOp> {
        let mut wanted: BTreeMap<IpNet, Vec<(u32, bool)>> = BTreeMap::new();
        let mut scoped = Vec::new();
        for (index, deny, scope, nets) in rules {
            for net in nets {
                match scope {
                    None => wanted.entry(net.trunc()).or_default().push((*index, *deny)),
                    Some(id) => scoped.push((
                        net.trunc(),
                        Layer::Rule {
                            index: *index,
                            deny: *deny,
                        },
                        *id,
                    )),
                }
            }
        }
        // Every rule layer that is or will be scoped somewhere: set_scoped replaces those.
        let scoped_rules: Vec<Layer> = self
            .scoped_nets
            .iter()
            .filter_map(|n| self.members.get(n))
            .flat_map(|m| m.scoped.iter().map(|(_, l)| *l))
            .filter(|l| matches!(l, Layer::Rule { .. }))
            .chain(scoped.iter().map(|(_, l, _)| *l))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for v in wanted.values_mut() {
            v.sort_unstable_by_key(rule_rank);
            v.dedup();
        }
        let rule = |(index, deny): (u32, bool)| Layer::Rule { index, deny };
        let mut changes = Vec::new();
        for net in &self.rule_nets {
            let now = self.members.get(net).map_or(&[][..], |m| &m.rules[..]);
            let want = wanted.get(net).map_or(&[][..], |v| &v[..]);
            changes.extend(
                now.iter()
                    .filter(|r| !want.contains(r))
                    .map(|r| Change::Remove(*net, rule(*r))),
            );
        }
        for (net, want) in &wanted {
            let now = self.members.get(net).map_or(&[][..], |m| &m.rules[..]);
            changes.extend(
                want.iter()
                    .filter(|r| !now.contains(r))
                    .map(|r| Change::Insert(*net, rule(*r))),
            );
        }
        let ops = self.apply(changes);
        let later = self.set_scoped(&scoped_rules, &scoped);
        merge_ops(ops, later)
    }

    /// What the tables must hold now (the union of all ops so far).
    pub fn written(&self) -> &Compiled {
        &self.written
    }

    /// Switches the global mode: in [`Mode::Monitor`] every graylist, blacklist and deny
    /// decision is written as its monitored code (passed and counted as would drop), in
    /// [`Mode::Enforce`] as itself. One full pass; the ops come in the safe order (see the
    /// module documentation): every address sees its decision of the old mode or of the
    /// new one, never a third. No ops if the mode is already `mode`.
    pub fn set_mode(&mut self, mode: Mode) -> Vec<TableOp> {
        let monitor_all = mode == Mode::Monitor;
        if monitor_all == self.monitor_all {
            return Vec::new();
        }
        self.monitor_all = monitor_all;
        self.rebuild()
    }

    /// The global mode.
    pub fn mode(&self) -> Mode {
        if self.monitor_all {
            Mode::Monitor
        } else {
            Mode::Enforce
        }
    }

    /// The decision for `ip`, computed from the memberships (not from [`Self::written`]),
    /// with the prefix that decided it, for explaining a verdict: the longest whitelisted
    /// prefix containing `ip`, else the longest banned one, else the longest prefix of the
    /// winning rule if it denies, else the longest monitored one, else the longest prefix of
    /// the winning (allow) rule. `None` when no prefix contains `ip`.
    pub fn decide(&self, ip: IpAddr) -> Option<(IpNet, ListEntry)> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let mut acc = Acc::default();
        let (mut white, mut ban, mut rule, mut mon) = (None, None, None, None);
        for len in self.lens.present(ip, max + 1) {
            let Some(net) = prefix_of(ip, len) else {
                continue;
            };
            let Some(m) = self.members.get(&net) else {
                continue;
            };
            if m.white {
                white = Some(net);
            }
            if m.ban().is_some() {
                ban = Some(net);
            }
            if m.monitored_ban().is_some() {
                mon = Some(net);
            }
            acc = acc.with(m);
            if m.rules.first().is_some_and(|r| Some(*r) == acc.rule) {
                rule = Some(net);
            }
        }
        let by = match acc.decides() {
            Decides::White => white,
            Decides::Ban(_) => ban,
            Decides::Deny(_) | Decides::Allow(_) => rule,
            Decides::Monitored(_) => mon,
            Decides::Nothing => None,
        }?;
        Some((by, acc.decision(self.monitor_all)))
    }

    /// The decision for a packet from `ip` of protocol `proto` (a `PROTO_*` number) to
    /// `port` (0: none), with the prefix that made it: [`ListState::decide`] with the
    /// scoped memberships whose scope holds the packet counted too.
    pub fn decide_for(&self, ip: IpAddr, proto: u8, port: u16) -> Option<(IpNet, ListEntry)> {
        let Some(a) = self.scopes.atom_of(proto, port) else {
            return self.decide(ip);
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let chain: Vec<(IpNet, &Members)> = self
            .lens
            .present(ip, max + 1)
            .filter_map(|len| {
                let net = prefix_of(ip, len)?;
                Some((net, self.members.get(&net)?))
            })
            .collect();
        let acc = self.scopes.acc_for(chain.iter().map(|(_, m)| *m), a);
        // The prefix that decided: the longest one whose memberships for this atom hold the
        // deciding layer.
        let decides = acc.decides();
        let by = chain.iter().rev().find_map(|(net, m)| {
            let m = self.scopes.members_at(m, a);
            let hit = match decides {
                Decides::White => m.white,
                Decides::Ban(_) => m.ban().is_some(),
                Decides::Monitored(_) => m.monitored_ban().is_some(),
                Decides::Deny(i) => m.rules.contains(&(i, true)),
                Decides::Allow(i) => m.rules.contains(&(i, false)),
                Decides::Nothing => false,
            };
            hit.then_some(*net)
        })?;
        Some((by, acc.decision(self.monitor_all)))
    }

    /// Whether `net` (host bits are cleared) is a member of `layer`.
    pub fn contains(&self, net: IpNet, layer: Layer) -> bool {
        self.members.get(&net.trunc()).is_some_and(|m| m.has(layer))
    }

    /// Number of distinct prefixes with at least one membership (the number written is
    /// `written().len()`).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// A resolved rule for [`ListState::set_rules`]: index, deny, scope, networks.
pub type RuleNets = (u32, bool, Option<ScopeId>, Vec<IpNet>);

/// Two op lists applied one after the other as one: the net ops, in the safe order.
fn merge_ops(first: Vec<TableOp>, later: Vec<TableOp>) -> Vec<TableOp> {
    if later.is_empty() {
        return first;
    }
    let mut c = super::Changed {
        ops: first,
        ..Default::default()
    };
    c.extend(super::Changed {
        ops: later,
        ..Default::default()
    });
    c.ops
}

/// Compiles the configured lists alone (no rules, enforce mode) into table entries: what
/// `check-config` reports and what the benchmark loads.
pub fn compile(lists: &Lists) -> Compiled {
    let mut state = ListState::new();
    let monitored = [
        (&lists.monitor_graylist, Layer::MonitorGray),
        (&lists.monitor_blacklist, Layer::MonitorBlack),
    ];
    state.apply(
        ListKind::ALL
            .into_iter()
            .map(|kind| {
                let nets = match kind {
                    ListKind::Whitelist => &lists.whitelist,
                    ListKind::Graylist => &lists.graylist,
                    ListKind::Blacklist => &lists.blacklist,
                };
                (nets, kind.layer())
            })
            .chain(monitored)
            .flat_map(|(nets, layer)| nets.iter().map(move |net| Change::Insert(*net, layer))),
    );
    state.written().clone()
}

mod precedence;
mod scope;
#[cfg(test)]
mod tests;
