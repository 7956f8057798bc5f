//! Compiles list and rule memberships into the contents of the one LPM trie per address
//! family that the XDP program reads, and keeps it up to date change by change.
//!
//! The data path does a single longest-prefix-match lookup and acts on the entry's `list`,
//! so the trie must hold the *result* of the precedence for every address:
//! 1. any whitelisted prefix containing the address: [`LIST_WHITELIST`];
//! 2. else the longest graylisted or blacklisted prefix containing it (the blacklist wins
//!    on an identical prefix): [`LIST_GRAYLIST`] / [`LIST_BLACKLIST`];
//! 3. else the ordered rules, first match wins: the lowest rule index among the rules with a
//!    prefix containing the address ([`LIST_RULE_ALLOW`] / [`LIST_RULE_DENY`], `rule_id` =
//!    index + 1; should one index carry both actions, deny wins);
//! 4. else no decision (no entry, i.e. [`LIST_NONE`]).
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
//! identical tries, which the tests check.
//!
//! A change at `p` alters the decisions of `p` and its descendants only, and a prefix's
//! written state depends on its own and its parent's decisions only, so only the subtree of
//! `p` is recomputed. `ipnet` orders truncated prefixes by (network address, length): a
//! depth-first order of the prefix tree in which a subtree is one contiguous range, so both
//! the full rebuild and a subtree recomputation are one ordered pass with a stack of
//! ancestors.
//!
//! # Order of the trie operations
//! The kernel applies each update atomically, but a batch is applied one element at a time.
//! Writes come first, deepest prefix first (reverse depth-first order), then deletes,
//! shallowest first. With that order every address sees, at every moment, either its
//! decision from before the batch or its decision after it — never a third value, so never
//! a verdict less restrictive than both. (Ancestors first would briefly expose an allowing
//! ancestor's new value to a subtree whose denying entry is not written yet.)

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipguard_common::{
    ListCode, ListEntry, LIST_BLACKLIST, LIST_GRAYLIST, LIST_NONE, LIST_RULE_ALLOW, LIST_RULE_DENY,
    LIST_WHITELIST,
};
use ipnet::IpNet;

/// Where a membership comes from: one of the lists, or an ordered rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    White,
    Gray,
    Black,
    /// Position `index` (0-based) in the ordered rules; `deny` is its action.
    Rule {
        index: u32,
        deny: bool,
    },
}

/// One change to the kernel's LPM trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrieOp {
    Write(IpNet, ListEntry),
    Delete(IpNet),
}

/// One membership change, for [`ListState::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Insert(IpNet, Layer),
    Remove(IpNet, Layer),
}

/// A batch with more changes than this, and at least 1/[`FULL_REBUILD_FRACTION`] of the
/// known prefixes, is applied by a full rebuild rather than subtree by subtree: each subtree
/// costs a lookup per prefix length present to seed its ancestors, a full pass costs a
/// step per prefix.
const FULL_REBUILD_MIN: usize = 64;
const FULL_REBUILD_FRACTION: usize = 16;

/// The entry of an address that nothing decides; never written (see [`Acc::decision`]).
const NO_DECISION: ListEntry = ListEntry {
    list: LIST_NONE,
    rule_id: 0,
};

/// The memberships of one prefix.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Members {
    white: bool,
    gray: bool,
    black: bool,
    /// `(index, deny)`, sorted by [`rule_rank`] so the first element is the one that counts.
    rules: Vec<(u32, bool)>,
}

/// Sort key of a rule: lower wins (lowest index; on one index, deny before allow).
fn rule_rank(&(index, deny): &(u32, bool)) -> (u32, bool) {
    (index, !deny)
}

impl Members {
    fn is_empty(&self) -> bool {
        !self.white && !self.gray && !self.black && self.rules.is_empty()
    }

    fn has(&self, layer: Layer) -> bool {
        match layer {
            Layer::White => self.white,
            Layer::Gray => self.gray,
            Layer::Black => self.black,
            Layer::Rule { index, deny } => self
                .rules
                .binary_search_by_key(&rule_rank(&(index, deny)), rule_rank)
                .is_ok(),
        }
    }

    /// Adds (`on`) or removes a membership; returns whether anything changed.
    fn set(&mut self, layer: Layer, on: bool) -> bool {
        let flag = match layer {
            Layer::White => &mut self.white,
            Layer::Gray => &mut self.gray,
            Layer::Black => &mut self.black,
            Layer::Rule { index, deny } => {
                let rule = (index, deny);
                return match (
                    self.rules
                        .binary_search_by_key(&rule_rank(&rule), rule_rank),
                    on,
                ) {
                    (Err(at), true) => {
                        self.rules.insert(at, rule);
                        true
                    }
                    (Ok(at), false) => {
                        self.rules.remove(at);
                        true
                    }
                    _ => false,
                };
            }
        };
        let changed = *flag != on;
        *flag = on;
        changed
    }

    fn ban(&self) -> Option<ListCode> {
        if self.black {
            Some(LIST_BLACKLIST)
        } else if self.gray {
            Some(LIST_GRAYLIST)
        } else {
            None
        }
    }
}

/// The memberships accumulated along a chain of nested prefixes, shortest first: all that
/// the decision of the innermost one depends on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Acc {
    white: bool,
    /// The ban of the longest banned prefix so far.
    ban: Option<ListCode>,
    /// The winning rule so far (see [`rule_rank`]).
    rule: Option<(u32, bool)>,
}

impl Acc {
    /// Adds a prefix longer than every one accumulated so far.
    fn with(self, m: &Members) -> Acc {
        let rule = match (self.rule, m.rules.first()) {
            (Some(a), Some(b)) if rule_rank(b) < rule_rank(&a) => Some(*b),
            (None, Some(b)) => Some(*b),
            (a, _) => a,
        };
        Acc {
            white: self.white || m.white,
            ban: m.ban().or(self.ban),
            rule,
        }
    }

    fn decision(self) -> ListEntry {
        if self.white {
            ListEntry {
                list: LIST_WHITELIST,
                rule_id: 0,
            }
        } else if let Some(list) = self.ban {
            ListEntry { list, rule_id: 0 }
        } else if let Some((index, deny)) = self.rule {
            ListEntry {
                list: if deny {
                    LIST_RULE_DENY
                } else {
                    LIST_RULE_ALLOW
                },
                rule_id: index.saturating_add(1),
            }
        } else {
            NO_DECISION
        }
    }
}

/// Number of member prefixes per (family, length), so that finding a prefix's ancestors
/// costs one lookup per length actually present rather than one per possible length.
#[derive(Debug, Clone)]
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

    /// The lengths present in `ip`'s family, shortest first, below `below`.
    fn present(&self, ip: IpAddr, below: u8) -> impl Iterator<Item = u8> + '_ {
        let counts = &self.0[usize::from(ip.is_ipv6())];
        (0..below).filter(move |&len| counts[usize::from(len)] > 0)
    }
}

/// How [`ListState::apply_with`] recomputes the trie.
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

/// The memberships of every prefix and the trie contents they compile to.
#[derive(Debug, Default, Clone)]
pub struct ListState {
    members: BTreeMap<IpNet, Members>,
    /// The prefixes with at least one rule membership, so that [`ListState::set_rules`]
    /// does not scan every list entry.
    rule_nets: BTreeSet<IpNet>,
    lens: LenCounts,
    written: BTreeMap<IpNet, ListEntry>,
    /// IPv4 prefixes in `written` (for status answers without a scan).
    written_v4: usize,
}

/// The last prefix of `net`'s subtree in `IpNet` order: the subtree is `net..=subtree_end`.
fn subtree_end(net: &IpNet) -> IpNet {
    IpNet::new(net.broadcast(), net.max_prefix_len())
        .unwrap_or(*net)
        .trunc()
}

fn is_v4(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(_))
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
    base: Acc,
    out: &mut Vec<(IpNet, ListEntry)>,
) {
    let base_decision = base.decision();
    // The chain of ancestors of the current prefix within `iter`: at most one per length.
    let mut stack: Vec<(IpNet, Acc, ListEntry)> = Vec::with_capacity(130);
    for (net, m) in iter {
        while stack.last().is_some_and(|(top, _, _)| !top.contains(net)) {
            stack.pop();
        }
        let (parent, parent_decision) = stack.last().map_or((base, base_decision), |t| (t.1, t.2));
        let acc = parent.with(m);
        let decision = acc.decision();
        if decision != parent_decision {
            out.push((*net, decision));
        }
        stack.push((*net, acc, decision));
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
/// module documentation).
fn ordered_ops(writes: Vec<(IpNet, ListEntry)>, deletes: Vec<IpNet>) -> Vec<TrieOp> {
    let mut ops = Vec::with_capacity(writes.len() + deletes.len());
    ops.extend(writes.into_iter().rev().map(|(n, e)| TrieOp::Write(n, e)));
    ops.extend(deletes.into_iter().map(TrieOp::Delete));
    ops
}

impl ListState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `net` (host bits are cleared) to a layer. Returns the trie operations that make
    /// the kernel's trie match, writes first, then deletes (see the module documentation
    /// for why this order). Adding an already-present membership returns no ops.
    pub fn insert(&mut self, net: IpNet, layer: Layer) -> Vec<TrieOp> {
        self.apply([Change::Insert(net, layer)])
    }

    /// Removes `net` (host bits are cleared) from a layer; like [`ListState::insert`].
    pub fn remove(&mut self, net: IpNet, layer: Layer) -> Vec<TrieOp> {
        self.apply([Change::Remove(net, layer)])
    }

    /// Applies many changes at once, then returns the net trie operations (same order as
    /// [`ListState::insert`]). A large batch is applied by one full ordered pass, a small one
    /// by recomputing the subtree of each changed prefix.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) -> Vec<TrieOp> {
        self.apply_with(changes, Recompute::Auto)
    }

    fn apply_with(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        strategy: Recompute,
    ) -> Vec<TrieOp> {
        let mut changes: Vec<(IpNet, Layer, bool)> = changes
            .into_iter()
            .map(|change| match change {
                Change::Insert(net, layer) => (net.trunc(), layer, true),
                Change::Remove(net, layer) => (net.trunc(), layer, false),
            })
            .collect();
        let full = match strategy {
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
            for (net, layer, on) in changes {
                if self.set_member(net, layer, on) {
                    any = true;
                    if !full {
                        touched.push(net);
                    }
                }
            }
        }
        if !any {
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
    fn build_members(&mut self, changes: Vec<(IpNet, Layer, bool)>) -> bool {
        let mut built: Vec<(IpNet, Members)> = Vec::with_capacity(changes.len());
        for (net, layer, on) in changes {
            match built.last_mut() {
                Some((last, m)) if *last == net => {
                    m.set(layer, on);
                }
                _ => {
                    let mut m = Members::default();
                    m.set(layer, on);
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
        // Sorted and without duplicates: collecting is a linear bulk build.
        self.members = built.into_iter().collect();
        !self.members.is_empty()
    }

    /// Records one membership; returns whether it changed.
    fn set_member(&mut self, net: IpNet, layer: Layer, on: bool) -> bool {
        use std::collections::btree_map::Entry;
        let changed = match self.members.entry(net) {
            Entry::Vacant(_) if !on => false,
            Entry::Vacant(v) => {
                v.insert(Members::default()).set(layer, true);
                *self.lens.of(&net) += 1;
                true
            }
            Entry::Occupied(mut o) => {
                let changed = o.get_mut().set(layer, on);
                if o.get().is_empty() {
                    o.remove();
                    *self.lens.of(&net) -= 1;
                }
                changed
            }
        };
        if changed && matches!(layer, Layer::Rule { .. }) {
            if self.members.get(&net).is_some_and(|m| !m.rules.is_empty()) {
                self.rule_nets.insert(net);
            } else {
                self.rule_nets.remove(&net);
            }
        }
        changed
    }

    /// Recomputes every entry in one ordered pass.
    fn rebuild(&mut self) -> Vec<TrieOp> {
        let mut new = Vec::with_capacity(self.written.len().max(self.members.len() / 2));
        desired(self.members.iter(), Acc::default(), &mut new);
        let (mut writes, mut deletes) = (Vec::new(), Vec::new());
        diff(self.written.iter(), &new, &mut writes, &mut deletes);
        // `new` is sorted: collecting it is a linear bulk build.
        self.written_v4 = new.iter().filter(|(n, _)| is_v4(n)).count();
        self.written = new.into_iter().collect();
        ordered_ops(writes, deletes)
    }

    /// Recomputes the subtrees of the changed prefixes (`touched`, in any order).
    fn recompute_subtrees(&mut self, mut touched: Vec<IpNet>) -> Vec<TrieOp> {
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
            desired(
                self.members.range(range.clone()),
                self.ancestors(&root),
                &mut new,
            );
            diff(self.written.range(range), &new, &mut writes, &mut deletes);
        }
        for (net, entry) in &writes {
            if self.written.insert(*net, *entry).is_none() && is_v4(net) {
                self.written_v4 += 1;
            }
        }
        for net in &deletes {
            if self.written.remove(net).is_some() && is_v4(net) {
                self.written_v4 -= 1;
            }
        }
        ordered_ops(writes, deletes)
    }

    /// The accumulated memberships of the strict ancestors of `net` in P.
    fn ancestors(&self, net: &IpNet) -> Acc {
        self.lens
            .present(net.addr(), net.prefix_len())
            .filter_map(|len| self.members.get(&prefix_of(net.addr(), len)?))
            .fold(Acc::default(), Acc::with)
    }

    /// Replaces every Rule-layer membership by `rules` (index, deny, nets) — used after
    /// hostnames are resolved again. Returns the net trie operations.
    pub fn set_rules(&mut self, rules: &[(u32, bool, Vec<IpNet>)]) -> Vec<TrieOp> {
        let mut wanted: BTreeMap<IpNet, Vec<(u32, bool)>> = BTreeMap::new();
        for (index, deny, nets) in rules {
            for net in nets {
                wanted.entry(net.trunc()).or_default().push((*index, *deny));
            }
        }
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
        self.apply(changes)
    }

    /// What the trie must hold now (the union of all ops so far).
    pub fn written(&self) -> &BTreeMap<IpNet, ListEntry> {
        &self.written
    }

    /// The number of IPv4 and of IPv6 prefixes in [`Self::written`].
    pub fn written_by_family(&self) -> (usize, usize) {
        (self.written_v4, self.written.len() - self.written_v4)
    }

    /// The decision for `ip`, computed from the memberships (not from [`Self::written`]),
    /// with the prefix that decided it, for explaining a verdict: the longest whitelisted
    /// prefix containing `ip`, else the longest banned one, else the longest prefix of the
    /// winning rule. `None` when no prefix contains `ip`.
    pub fn decide(&self, ip: IpAddr) -> Option<(IpNet, ListEntry)> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let mut acc = Acc::default();
        let (mut white, mut ban, mut rule) = (None, None, None);
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
            acc = acc.with(m);
            if m.rules.first().is_some_and(|r| Some(*r) == acc.rule) {
                rule = Some(net);
            }
        }
        let entry = acc.decision();
        let by = match entry.list {
            LIST_WHITELIST => white,
            LIST_GRAYLIST | LIST_BLACKLIST => ban,
            LIST_RULE_ALLOW | LIST_RULE_DENY => rule,
            _ => None,
        }?;
        Some((by, entry))
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

#[cfg(test)]
mod tests {
    use std::{cmp::Reverse, collections::BTreeSet};

    use super::*;
    use crate::lists::longest_match;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entry(list: ListCode, rule_id: u32) -> ListEntry {
        ListEntry { list, rule_id }
    }

    const WHITE: ListEntry = ListEntry {
        list: LIST_WHITELIST,
        rule_id: 0,
    };
    const GRAY: ListEntry = ListEntry {
        list: LIST_GRAYLIST,
        rule_id: 0,
    };
    const BLACK: ListEntry = ListEntry {
        list: LIST_BLACKLIST,
        rule_id: 0,
    };

    fn allow(index: u32) -> Layer {
        Layer::Rule { index, deny: false }
    }

    fn deny(index: u32) -> Layer {
        Layer::Rule { index, deny: true }
    }

    /// What the kernel's trie answers for `addr` (no entry = no decision).
    fn verdict(s: &ListState, addr: &str) -> ListEntry {
        lpm(s.written(), ip(addr))
    }

    fn lpm(w: &BTreeMap<IpNet, ListEntry>, addr: IpAddr) -> ListEntry {
        longest_match(w, addr).map_or(NO_DECISION, |(_, e)| e)
    }

    fn state(members: &[(&str, Layer)]) -> ListState {
        let mut s = ListState::new();
        s.apply(members.iter().map(|&(net, l)| Change::Insert(n(net), l)));
        s
    }

    /// The precedence, evaluated directly over the memberships.
    fn naive(model: &BTreeSet<(IpNet, Layer)>, addr: IpAddr) -> Option<(IpNet, ListEntry)> {
        let containing: Vec<(IpNet, Layer)> = model
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .copied()
            .collect();
        if let Some(net) = containing
            .iter()
            .filter(|(_, l)| *l == Layer::White)
            .map(|(net, _)| *net)
            .max_by_key(IpNet::prefix_len)
        {
            return Some((net, WHITE));
        }
        let ban = containing
            .iter()
            .filter_map(|&(net, l)| match l {
                Layer::Gray => Some((net.prefix_len(), false, net)),
                Layer::Black => Some((net.prefix_len(), true, net)),
                _ => None,
            })
            .max();
        if let Some((_, black, net)) = ban {
            return Some((net, if black { BLACK } else { GRAY }));
        }
        containing
            .iter()
            .filter_map(|&(net, l)| match l {
                Layer::Rule { index, deny } => Some((index, !deny, Reverse(net.prefix_len()), net)),
                _ => None,
            })
            .min()
            .map(|(index, allow, _, net)| {
                let list = if allow {
                    LIST_RULE_ALLOW
                } else {
                    LIST_RULE_DENY
                };
                (net, entry(list, index + 1))
            })
    }

    fn model_of(members: &[(&str, Layer)]) -> BTreeSet<(IpNet, Layer)> {
        members.iter().map(|&(net, l)| (n(net), l)).collect()
    }

    #[test]
    fn whitelist_wins_over_longer_bans_and_rules() {
        let s = state(&[
            ("10.0.0.0/8", Layer::White),
            ("10.1.0.0/16", Layer::Black),
            ("10.1.1.0/24", Layer::Gray),
            ("10.1.1.1/32", deny(0)),
        ]);
        for a in ["10.1.1.1", "10.1.1.2", "10.1.2.1", "10.2.0.0"] {
            assert_eq!(verdict(&s, a), WHITE, "{a}");
        }
        assert_eq!(s.written().len(), 1);
        assert_eq!(verdict(&s, "11.0.0.1"), NO_DECISION);
    }

    #[test]
    fn longest_ban_decides_and_blacklist_wins_a_tie() {
        let s = state(&[
            ("10.0.0.0/8", Layer::Gray),
            ("10.1.0.0/16", Layer::Black),
            ("10.1.1.0/24", Layer::Gray),
            ("10.2.0.0/16", Layer::Gray),
            ("10.2.0.0/16", Layer::Black),
        ]);
        assert_eq!(verdict(&s, "10.0.0.1"), GRAY);
        assert_eq!(verdict(&s, "10.1.0.1"), BLACK);
        assert_eq!(verdict(&s, "10.1.1.1"), GRAY);
        assert_eq!(verdict(&s, "10.2.0.1"), BLACK);
    }

    #[test]
    fn bans_win_over_rules_whatever_the_lengths() {
        let s = state(&[
            ("10.0.0.0/8", Layer::Gray),
            ("10.1.1.0/24", allow(0)),
            ("192.0.2.0/24", allow(0)),
            ("192.0.2.7/32", Layer::Black),
        ]);
        assert_eq!(verdict(&s, "10.1.1.1"), GRAY);
        assert_eq!(verdict(&s, "192.0.2.7"), BLACK);
        assert_eq!(verdict(&s, "192.0.2.8"), entry(LIST_RULE_ALLOW, 1));
    }

    #[test]
    fn first_matching_rule_wins_and_rule_ids_are_index_plus_one() {
        let s = state(&[
            ("10.1.0.0/16", deny(3)),
            ("10.1.1.0/24", allow(5)),
            ("10.0.0.0/8", allow(1)),
            ("10.2.0.0/16", deny(0)),
        ]);
        assert_eq!(verdict(&s, "10.1.1.1"), entry(LIST_RULE_ALLOW, 2));
        assert_eq!(verdict(&s, "10.2.1.1"), entry(LIST_RULE_DENY, 1));
        assert_eq!(verdict(&s, "10.3.1.1"), entry(LIST_RULE_ALLOW, 2));
        // Everything under 10/8 but 10.2/16 is decided by rule 1: only two entries.
        assert_eq!(s.written().len(), 2);
    }

    #[test]
    fn shadowed_later_rule_does_not_win() {
        let s = state(&[("10.0.0.0/8", deny(0)), ("10.1.0.0/16", allow(1))]);
        assert_eq!(verdict(&s, "10.1.2.3"), entry(LIST_RULE_DENY, 1));
        assert_eq!(
            s.written().iter().collect::<Vec<_>>(),
            [(&n("10.0.0.0/8"), &entry(LIST_RULE_DENY, 1))]
        );
        assert_eq!(
            s.decide(ip("10.1.2.3")),
            Some((n("10.0.0.0/8"), entry(LIST_RULE_DENY, 1)))
        );
    }

    #[test]
    fn deny_inside_allow_inside_deny() {
        let s = state(&[
            ("10.1.1.0/24", deny(0)),
            ("10.1.0.0/16", allow(1)),
            ("10.0.0.0/8", deny(2)),
        ]);
        assert_eq!(verdict(&s, "10.1.1.9"), entry(LIST_RULE_DENY, 1));
        assert_eq!(verdict(&s, "10.1.2.9"), entry(LIST_RULE_ALLOW, 2));
        assert_eq!(verdict(&s, "10.2.2.9"), entry(LIST_RULE_DENY, 3));
        assert_eq!(verdict(&s, "11.0.0.1"), NO_DECISION);
        assert_eq!(s.written().len(), 3);
    }

    #[test]
    fn families_do_not_shadow_each_other() {
        let s = state(&[("::/0", Layer::White), ("0.0.0.0/0", Layer::Black)]);
        assert_eq!(verdict(&s, "192.0.2.1"), BLACK);
        assert_eq!(verdict(&s, "::ffff:192.0.2.1"), WHITE);
        assert_eq!(verdict(&s, "2001:db8::1"), WHITE);
        let s = state(&[("0.0.0.0/0", Layer::White), ("::/0", deny(0))]);
        assert_eq!(verdict(&s, "2001:db8::1"), entry(LIST_RULE_DENY, 1));
        assert_eq!(verdict(&s, "192.0.2.1"), WHITE);
    }

    #[test]
    fn entry_equal_to_its_ancestors_decision_is_not_written() {
        let mut s = state(&[("10.0.0.0/8", Layer::Black)]);
        assert!(s.insert(n("10.1.2.3/32"), Layer::Black).is_empty());
        assert!(s.insert(n("10.1.0.0/16"), Layer::Black).is_empty());
        assert!(s.insert(n("10.1.0.0/16"), deny(0)).is_empty());
        assert_eq!(s.written().len(), 1);
        assert_eq!(s.len(), 3);
        // A longer gray entry changes the decision, so it is written; the black /32 under
        // it now differs from its new parent: written too, and before its parent.
        assert_eq!(
            s.insert(n("10.1.2.0/24"), Layer::Gray),
            [
                TrieOp::Write(n("10.1.2.3/32"), BLACK),
                TrieOp::Write(n("10.1.2.0/24"), GRAY)
            ]
        );
        assert_eq!(verdict(&s, "10.1.2.3"), BLACK);
        assert_eq!(verdict(&s, "10.1.2.4"), GRAY);
    }

    #[test]
    fn omission_is_reevaluated_when_an_ancestor_changes() {
        let mut s = state(&[("10.0.0.0/8", Layer::Black), ("10.1.0.0/16", Layer::Black)]);
        assert_eq!(s.written().len(), 1);
        // Removing the /8 leaves the /16 deciding on its own: it must be written first.
        assert_eq!(
            s.remove(n("10.0.0.0/8"), Layer::Black),
            [
                TrieOp::Write(n("10.1.0.0/16"), BLACK),
                TrieOp::Delete(n("10.0.0.0/8"))
            ]
        );
        // Whitelisting above makes both the /16 entry redundant.
        assert_eq!(
            s.insert(n("10.0.0.0/8"), Layer::White),
            [
                TrieOp::Write(n("10.0.0.0/8"), WHITE),
                TrieOp::Delete(n("10.1.0.0/16"))
            ]
        );
        assert_eq!(verdict(&s, "10.1.0.1"), WHITE);
    }

    #[test]
    fn removal_restores_the_ancestors_decision() {
        let mut s = state(&[("10.0.0.0/8", deny(0)), ("10.1.0.0/16", Layer::White)]);
        assert_eq!(verdict(&s, "10.1.0.1"), WHITE);
        assert_eq!(
            s.remove(n("10.1.0.0/16"), Layer::White),
            [TrieOp::Delete(n("10.1.0.0/16"))]
        );
        assert_eq!(verdict(&s, "10.1.0.1"), entry(LIST_RULE_DENY, 1));
        // A ban inside an allowing rule: removing it goes back to the rule.
        let mut s = state(&[("10.0.0.0/8", allow(4))]);
        s.insert(n("10.9.9.9/32"), Layer::Gray);
        assert_eq!(verdict(&s, "10.9.9.9"), GRAY);
        s.remove(n("10.9.9.9/32"), Layer::Gray);
        assert_eq!(verdict(&s, "10.9.9.9"), entry(LIST_RULE_ALLOW, 5));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn identical_prefix_in_several_layers() {
        let mut s = state(&[
            ("192.0.2.0/24", Layer::Gray),
            ("192.0.2.0/24", Layer::Black),
            ("192.0.2.0/24", deny(0)),
        ]);
        assert_eq!(verdict(&s, "192.0.2.1"), BLACK);
        s.insert(n("192.0.2.0/24"), Layer::White);
        assert_eq!(verdict(&s, "192.0.2.1"), WHITE);
        s.remove(n("192.0.2.0/24"), Layer::White);
        s.remove(n("192.0.2.0/24"), Layer::Black);
        assert_eq!(verdict(&s, "192.0.2.1"), GRAY);
        s.remove(n("192.0.2.0/24"), Layer::Gray);
        assert_eq!(verdict(&s, "192.0.2.1"), entry(LIST_RULE_DENY, 1));
        assert!(s.contains(n("192.0.2.0/24"), deny(0)));
        assert!(!s.contains(n("192.0.2.0/24"), Layer::Gray));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn duplicate_and_absent_memberships_give_no_ops() {
        let mut s = state(&[("10.0.0.0/8", Layer::Gray)]);
        assert!(s.insert(n("10.0.0.0/8"), Layer::Gray).is_empty());
        assert!(s.insert(n("10.1.2.3/8"), Layer::Gray).is_empty());
        assert!(s.remove(n("10.0.0.0/8"), Layer::Black).is_empty());
        assert!(s.remove(n("11.0.0.0/8"), Layer::Gray).is_empty());
        assert!(s.apply([]).is_empty());
    }

    #[test]
    fn host_bits_are_cleared() {
        let mut s = ListState::new();
        s.insert(n("10.1.2.3/8"), Layer::Black);
        assert!(s.contains(n("10.0.0.0/8"), Layer::Black));
        assert!(s.contains(n("10.9.9.9/8"), Layer::Black));
        assert_eq!(
            s.written().keys().copied().collect::<Vec<_>>(),
            [n("10.0.0.0/8")]
        );
        s.remove(n("10.200.0.0/8"), Layer::Black);
        assert!(s.is_empty());
        assert!(s.written().is_empty());
    }

    #[test]
    fn set_rules_replaces_only_rule_memberships() {
        let mut s = state(&[("10.0.0.0/8", allow(0)), ("10.1.0.0/16", Layer::Gray)]);
        s.set_rules(&[
            (0, true, vec![n("10.0.0.0/8"), n("2001:db8::/32")]),
            (1, false, vec![n("10.1.0.0/16"), n("10.2.0.0/16")]),
        ]);
        assert!(!s.contains(n("10.0.0.0/8"), allow(0)));
        assert!(s.contains(n("10.1.0.0/16"), Layer::Gray));
        assert_eq!(verdict(&s, "10.3.0.1"), entry(LIST_RULE_DENY, 1));
        assert_eq!(verdict(&s, "10.2.0.1"), entry(LIST_RULE_DENY, 1));
        assert_eq!(verdict(&s, "10.1.0.1"), GRAY);
        assert_eq!(verdict(&s, "2001:db8::1"), entry(LIST_RULE_DENY, 1));
        // Same rules again: nothing to do.
        assert!(s
            .set_rules(&[
                (1, false, vec![n("10.2.0.0/16"), n("10.1.0.0/16")]),
                (0, true, vec![n("2001:db8::/32"), n("10.0.0.0/8")]),
            ])
            .is_empty());
        s.set_rules(&[]);
        assert_eq!(verdict(&s, "10.3.0.1"), NO_DECISION);
        assert_eq!(verdict(&s, "10.1.0.1"), GRAY);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn one_index_with_both_actions_denies() {
        let s = state(&[("10.0.0.0/8", allow(2)), ("10.1.0.0/16", deny(2))]);
        assert_eq!(verdict(&s, "10.1.0.1"), entry(LIST_RULE_DENY, 3));
        assert_eq!(verdict(&s, "10.2.0.1"), entry(LIST_RULE_ALLOW, 3));
    }

    #[test]
    fn decide_names_the_deciding_prefix() {
        let members = [
            ("10.0.0.0/8", Layer::Gray),
            ("10.1.0.0/16", Layer::White),
            ("10.1.1.0/24", Layer::Black),
            ("10.2.0.0/16", Layer::Black),
            ("10.2.2.0/24", deny(0)),
            ("192.0.2.0/24", allow(1)),
            ("192.0.2.128/25", deny(0)),
        ];
        let s = state(&members);
        let model = model_of(&members);
        assert_eq!(s.decide(ip("10.1.1.1")), Some((n("10.1.0.0/16"), WHITE)));
        assert_eq!(s.decide(ip("10.2.2.2")), Some((n("10.2.0.0/16"), BLACK)));
        assert_eq!(
            s.decide(ip("192.0.2.200")),
            Some((n("192.0.2.128/25"), entry(LIST_RULE_DENY, 1)))
        );
        assert_eq!(s.decide(ip("11.0.0.1")), None);
        for a in [
            "10.1.1.1",
            "10.2.2.2",
            "10.3.0.0",
            "192.0.2.1",
            "192.0.2.129",
            "::1",
        ] {
            assert_eq!(s.decide(ip(a)), naive(&model, ip(a)), "{a}");
        }
    }

    #[test]
    fn large_batch_and_subtrees_agree() {
        // More than FULL_REBUILD_MIN changes: the full pass; then each one alone.
        let members: Vec<(IpNet, Layer)> = (0u32..200)
            .map(|i| {
                let layer = [
                    Layer::White,
                    Layer::Gray,
                    Layer::Black,
                    deny(i % 7),
                    allow(i % 5),
                ][(i % 5) as usize];
                let len = [8, 16, 24, 32][(i % 4) as usize];
                let addr =
                    std::net::Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(0x9e37_79b9) >> 8));
                (IpNet::new(addr.into(), len).unwrap().trunc(), layer)
            })
            .collect();
        let mut batch = ListState::new();
        batch.apply(members.iter().map(|&(net, l)| Change::Insert(net, l)));
        let mut one_by_one = ListState::new();
        for &(net, l) in &members {
            one_by_one.insert(net, l);
        }
        assert_eq!(batch.written(), one_by_one.written());
    }

    mod properties {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::{prelude::*, sample::Index};

        use super::*;

        // A small address space so that random prefixes and addresses overlap often.
        fn v4_addr() -> impl Strategy<Value = IpAddr> {
            any::<u8>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, b & 0x0f, b >> 4, b)))
        }
        fn v6_addr() -> impl Strategy<Value = IpAddr> {
            any::<u8>().prop_map(|b| {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    u16::from(b & 3),
                    0,
                    0,
                    0,
                    0,
                    u16::from(b),
                ))
            })
        }
        fn addr() -> impl Strategy<Value = IpAddr> {
            prop_oneof![v4_addr(), v6_addr()]
        }
        fn net() -> impl Strategy<Value = IpNet> {
            prop_oneof![
                (v4_addr(), 0u8..=32).prop_map(|(a, len)| IpNet::new(a, len).unwrap().trunc()),
                (v6_addr(), 0u8..=128).prop_map(|(a, len)| IpNet::new(a, len).unwrap().trunc()),
            ]
        }
        fn layer() -> impl Strategy<Value = Layer> {
            prop_oneof![
                Just(Layer::White),
                Just(Layer::Gray),
                Just(Layer::Black),
                (0u32..4, any::<bool>()).prop_map(|(index, deny)| Layer::Rule { index, deny }),
            ]
        }

        #[derive(Debug, Clone)]
        enum Step {
            Insert(IpNet, Layer),
            Remove(IpNet, Layer),
            /// Removes an existing membership (random removes would mostly miss).
            RemoveExisting(Index),
            SetRules(Vec<(u32, bool, Vec<IpNet>)>),
            /// `(insert?, net, layer)` changes, applied by `strategy`.
            Batch(Vec<(bool, IpNet, Layer)>, Recompute),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (net(), layer()).prop_map(|(n, l)| Step::Insert(n, l)),
                1 => (net(), layer()).prop_map(|(n, l)| Step::Remove(n, l)),
                3 => any::<Index>().prop_map(Step::RemoveExisting),
                1 => prop::collection::vec(
                    (0u32..4, any::<bool>(), prop::collection::vec(net(), 0..3)),
                    0..4
                )
                .prop_map(Step::SetRules),
                1 => (
                    prop::collection::vec((any::<bool>(), net(), layer()), 0..8),
                    prop_oneof![Just(Recompute::Auto), Just(Recompute::Full), Just(Recompute::Subtrees)],
                )
                    .prop_map(|(c, s)| Step::Batch(c, s)),
            ]
        }

        /// Runs one step on both the state and the membership model.
        fn run(
            s: &mut ListState,
            model: &mut BTreeSet<(IpNet, Layer)>,
            step: &Step,
        ) -> Vec<TrieOp> {
            match step {
                Step::Insert(net, l) => {
                    model.insert((net.trunc(), *l));
                    s.insert(*net, *l)
                }
                Step::Remove(net, l) => {
                    model.remove(&(net.trunc(), *l));
                    s.remove(*net, *l)
                }
                Step::RemoveExisting(i) => {
                    let Some(&(net, l)) = (!model.is_empty())
                        .then(|| model.iter().nth(i.index(model.len())))
                        .flatten()
                    else {
                        return Vec::new();
                    };
                    model.remove(&(net, l));
                    s.remove(net, l)
                }
                Step::SetRules(rules) => {
                    model.retain(|(_, l)| !matches!(l, Layer::Rule { .. }));
                    for (index, deny, nets) in rules {
                        for net in nets {
                            model.insert((
                                net.trunc(),
                                Layer::Rule {
                                    index: *index,
                                    deny: *deny,
                                },
                            ));
                        }
                    }
                    s.set_rules(rules)
                }
                Step::Batch(changes, strategy) => {
                    for &(ins, net, l) in changes {
                        if ins {
                            model.insert((net.trunc(), l));
                        } else {
                            model.remove(&(net.trunc(), l));
                        }
                    }
                    s.apply_with(
                        changes.iter().map(|&(ins, net, l)| {
                            if ins {
                                Change::Insert(net, l)
                            } else {
                                Change::Remove(net, l)
                            }
                        }),
                        *strategy,
                    )
                }
            }
        }

        fn op_net(op: &TrieOp) -> IpNet {
            match op {
                TrieOp::Write(net, _) | TrieOp::Delete(net) => *net,
            }
        }

        fn replay(w: &mut BTreeMap<IpNet, ListEntry>, op: &TrieOp) {
            match op {
                TrieOp::Write(net, e) => {
                    w.insert(*net, *e);
                }
                TrieOp::Delete(net) => {
                    w.remove(net);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn incremental_trie_agrees_with_precedence_rebuild_and_its_ops(
                steps in prop::collection::vec(step(), 1..24),
                probes in prop::collection::vec(addr(), 1..24),
            ) {
                let mut s = ListState::new();
                let mut model = BTreeSet::new();
                let mut replayed = BTreeMap::new();
                for step in &steps {
                    let before = s.written().clone();
                    let ops = run(&mut s, &mut model, step);
                    let after = s.written();

                    // (d) writes, then deletes.
                    let first_delete = ops.iter().position(|o| matches!(o, TrieOp::Delete(_)));
                    prop_assert!(
                        ops[first_delete.unwrap_or(ops.len())..]
                            .iter()
                            .all(|o| matches!(o, TrieOp::Delete(_))),
                        "write after delete in {:?}", ops
                    );

                    // (c) the ops replayed give `written`; every address sees its old or its
                    // new decision after each single op.
                    let mut watched = probes.clone();
                    watched.extend(ops.iter().flat_map(|o| {
                        let net = op_net(o);
                        [net.network(), net.broadcast()]
                    }));
                    for op in &ops {
                        replay(&mut replayed, op);
                        for &a in &watched {
                            let now = lpm(&replayed, a);
                            prop_assert!(
                                now == lpm(&before, a) || now == lpm(after, a),
                                "{} sees {:?} during {:?}", a, now, ops
                            );
                        }
                    }
                    prop_assert_eq!(&replayed, after);

                    // (a) the trie and `decide` agree with the naive precedence.
                    for &a in &watched {
                        let want = naive(&model, a);
                        prop_assert_eq!(
                            lpm(after, a),
                            want.map_or(NO_DECISION, |(_, e)| e),
                            "address {} after {:?}", a, step
                        );
                        prop_assert_eq!(s.decide(a), want, "decide {} after {:?}", a, step);
                    }

                    // (b) incremental == a full rebuild of the same memberships.
                    let mut scratch = ListState::new();
                    scratch.apply_with(
                        model.iter().map(|&(net, l)| Change::Insert(net, l)),
                        Recompute::Full,
                    );
                    prop_assert_eq!(scratch.written(), after);
                    let v4 = after.keys().filter(|n| is_v4(n)).count();
                    prop_assert_eq!(s.written_by_family(), (v4, after.len() - v4));
                    prop_assert_eq!(s.len(), model.iter().map(|(net, _)| net).collect::<BTreeSet<_>>().len());
                    for &(net, l) in &model {
                        prop_assert!(s.contains(net, l));
                    }
                }
            }
        }
    }
}
