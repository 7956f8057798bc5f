//! The kernel's view of the lists.
//!
//! The compiler (`policy::compile`) produces prefix → verdict where the longest prefix
//! wins. [`Layout`] lays that out in the XDP program's tables so that a lookup costs the
//! same whatever the list size (see `ipguard_common`): IPv4 as a verdict per /24
//! ([`MAP_V4_TBL24`], written as memory) plus the addresses of the /24s that hold longer
//! prefixes ([`MAP_V4_HOSTS`]); IPv6 as an anchor per /32 listing the longer prefix
//! lengths under it ([`MAP_V6_ANCHORS`], [`MAP_V6_LONG`]), a bit per /24 region that holds
//! anchors (`MAP_V6_REGIONS`: the program reads no anchor elsewhere), plus a trie of the
//! rare prefixes shorter than /32. Every change writes only the slots and keys whose value
//! changes, in an order that never lets an address that stays listed pass in between (new
//! values before the flags that make the program read them, flags cleared before the values
//! go). The region bits are such flags read the other way round: a region is marked before
//! its first anchor is written and unmarked after its last one is removed.
//!
//! [`MapStore`] is the physical storage: the kernel maps ([`KernelStore`]), or memory
//! ([`MemoryStore`], which also answers lookups the way the XDP program does) so that the
//! layout is tested without a kernel.

mod v4;
mod v6;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipguard_common::{
    ListCode, ListEntry, ScopeHint, ScopeKey, Tbl24Slot, V6Anchor, V6LongKey, MAP_V4_HOSTS,
    MAP_V6_ANCHORS, MAP_V6_LONG, SLOT_CODE, SLOT_HOSTS, V6_ANCHOR_BITS,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use self::v6::anchor_of;
use super::map_store::{HashMap, MapStore, SyncReport, TableError, TableUsage};
use crate::model::{Compiled, Scopes, TableOp};

/// The compiled entries laid out in a [`MapStore`]. Keeps the entries (by family, for range
/// queries) to recompute the part of the layout a change touches.
pub struct Layout<S> {
    store: S,
    v4: BTreeMap<Ipv4Net, ListEntry>,
    v6: BTreeMap<Ipv6Net, ListEntry>,
    /// IPv6 entries shorter than the anchors (in the trie).
    v6_short: usize,
    /// The scope groups' verdicts, as in the scope map.
    scopes: Scopes,
    /// Keys in the host map, the anchor map and the long-prefix map.
    n_hosts: usize,
    n_anchors: usize,
    n_longs: usize,
}

/// The verdicts of one /24's addresses that longer prefixes decide.
type Hosts = [Option<ListCode>; 256];

/// What one IPv6 /32 anchor needs in the maps.
#[derive(Debug, Default, PartialEq)]
struct AnchorPlan {
    anchor: Option<V6Anchor>,
    longs: SmallVec<[(V6LongKey, ListCode); 2]>,
    /// Every prefix under the anchor, if it overflows (then looked up in the trie).
    lpm: Vec<(Ipv6Net, ListCode)>,
}

impl<S: MapStore> Layout<S> {
    /// A layout over `store`, which is assumed empty until [`Layout::sync`] says
    /// otherwise.
    pub fn new(store: S) -> Self {
        Self {
            store,
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
            v6_short: 0,
            scopes: Scopes::new(),
            n_hosts: 0,
            n_anchors: 0,
            n_longs: 0,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: MapStore> Layout<S> {
    /// Whether the maps can hold `hosts` IPv4 host keys, `anchors` IPv6 anchors and
    /// `longs` IPv6 long prefixes; the error names the map and the prefix that would not fit.
    pub(super) fn room_for(
        &self,
        hosts: usize,
        anchors: usize,
        longs: usize,
        v4: Option<IpNet>,
        v6: Option<IpNet>,
    ) -> Result<(), TableError> {
        let cap = self.store.capacity();
        let unknown = || IpNet::from(std::net::IpAddr::from([0u8; 4]));
        if hosts > cap.hosts {
            return Err(TableError::Full {
                net: v4.unwrap_or_else(unknown),
                map: MAP_V4_HOSTS,
                setting: "maps.lpm_v4_capacity",
            });
        }
        for (n, max, map) in [
            (anchors, cap.anchors, MAP_V6_ANCHORS),
            (longs, cap.longs, MAP_V6_LONG),
        ] {
            if n > max {
                return Err(TableError::Full {
                    net: v6.unwrap_or_else(unknown),
                    map,
                    setting: "maps.lpm_v6_capacity",
                });
            }
        }
        Ok(())
    }

    /// Writes first, then removals (as the compiler orders them). Among the writes, those
    /// of IPv4 prefixes longer than /24 and of IPv6 prefixes of /32 and longer go first and
    /// in one map batch per map (an API batch of /32 bans is one syscall, not one per ban),
    /// the shorter ones after; a more specific entry written first never unlists an
    /// address that a shorter one still lists.
    pub fn apply(&mut self, ops: &[TableOp]) -> Result<(), TableError> {
        let is_scope =
            |op: &TableOp| matches!(op, TableOp::ScopeWrite(..) | TableOp::ScopeDelete(_));
        if !ops.iter().any(is_scope) {
            return self.apply_entries(ops);
        }
        // A group's verdicts go in before any entry names it, and out once none does; its
        // hint names at least the cells it has at every moment (cells, then the hint, on
        // the way in; the hint after the cells on the way out).
        let mut groups = BTreeSet::new();
        for op in ops {
            if let TableOp::ScopeWrite(key, code) = *op {
                self.store.scope_put(key, code)?;
                self.scopes.insert(key, code);
                groups.insert(u32::from(key.group));
            }
        }
        for &g in &groups {
            let hint = self.store.hint(g)?.union(&self.hint_of(g));
            self.store.set_hint(g, &hint)?;
        }
        let entries: Vec<TableOp> = ops.iter().filter(|op| !is_scope(op)).copied().collect();
        self.apply_entries(&entries)?;
        groups.clear();
        for op in ops {
            if let TableOp::ScopeDelete(key) = *op {
                self.store.scope_del(key)?;
                self.scopes.remove(&key);
                groups.insert(u32::from(key.group));
            }
        }
        for &g in &groups {
            let hint = self.hint_of(g);
            self.store.set_hint(g, &hint)?;
        }
        Ok(())
    }

    /// The hint of group `g` from the cells held.
    fn hint_of(&self, g: u32) -> ScopeHint {
        hint_of(&self.scopes, g)
    }

    /// [`Layout::apply`] of entry writes and deletes.
    fn apply_entries(&mut self, ops: &[TableOp]) -> Result<(), TableError> {
        let split = ops
            .iter()
            .position(|op| matches!(op, TableOp::Delete(_)))
            .unwrap_or(ops.len());
        let (writes, deletes) = ops.split_at(split);
        if deletes.iter().any(|op| matches!(op, TableOp::Write(..))) {
            // Not the compiler's order: keep the given one.
            for op in ops {
                match *op {
                    TableOp::Write(net, entry) => self.insert(net, entry)?,
                    TableOp::Delete(net) => self.remove(net)?,
                    TableOp::ScopeWrite(..) | TableOp::ScopeDelete(_) => {}
                }
            }
            return Ok(());
        }
        let mut short = Vec::new();
        let mut longs4: Vec<(u32, Ipv4Net, ListEntry)> = Vec::new();
        let mut by_anchor: BTreeMap<u32, Vec<(Ipv6Net, ListEntry)>> = BTreeMap::new();
        // `writes` holds only writes (split at the first delete above).
        let writes = writes.iter().filter_map(|op| match *op {
            TableOp::Write(net, entry) => Some((net, entry)),
            _ => None,
        });
        for (net, entry) in writes {
            match net.trunc() {
                IpNet::V4(n) if n.prefix_len() > 24 => {
                    if self.v4.get(&n) != Some(&entry) {
                        longs4.push((u32::from(n.network()) >> 8, n, entry));
                    }
                }
                IpNet::V6(n) if n.prefix_len() >= V6_ANCHOR_BITS => {
                    if self.v6.get(&n) != Some(&entry) {
                        by_anchor.entry(anchor_of(n)).or_default().push((n, entry));
                    }
                }
                net => short.push((net, entry)),
            }
        }
        // Plan the long prefixes' keys first (the mirror changes, the maps do not), so that
        // a batch that does not fit is refused before any of it is written.
        let counts = (self.n_hosts, self.n_anchors, self.n_longs);
        let mut undo4: Vec<(Ipv4Net, Option<ListEntry>)> = Vec::new();
        let mut undo6: Vec<(Ipv6Net, Option<ListEntry>)> = Vec::new();
        // IPv4 hosts: every /24's new hosts in one batch, then the /24s' flags. Writes
        // only add or change hosts, never remove one.
        longs4.sort_by_key(|(s24, ..)| *s24);
        let mut puts = Vec::new();
        let mut flag = Vec::new();
        for group in longs4.chunk_by(|a, b| a.0 == b.0) {
            let s24 = group[0].0;
            let net24 = Ipv4Net::new_assert(Ipv4Addr::from(s24 << 8), 24);
            let only_hosts = group.iter().all(|(_, n, _)| n.prefix_len() == 32)
                && self
                    .v4
                    .range(v4_span(net24))
                    .all(|(n, _)| n.prefix_len() <= 24 || n.prefix_len() == 32);
            if only_hosts {
                // The usual case (bans of single addresses): a /32 is its own host.
                for &(_, n, e) in group {
                    let old = self.v4.insert(n, e);
                    undo4.push((n, old));
                    if old.map(|o| o.code()) != Some(e.code()) {
                        puts.push((u32::from(n.network()), e.code()));
                    }
                    self.n_hosts += usize::from(old.is_none());
                }
            } else {
                let old = self.v4_hosts(s24);
                for &(_, n, e) in group {
                    undo4.push((n, self.v4.insert(n, e)));
                }
                let new = self.v4_hosts(s24);
                let base = s24 << 8;
                for h in 0..256 {
                    if let Some(code) = new[h] {
                        if old[h] != Some(code) {
                            puts.push((base | h as u32, code));
                            self.n_hosts += usize::from(old[h].is_none());
                        }
                    }
                }
            }
            flag.push(s24);
        }
        // IPv6: long prefixes (and overflowing anchors' trie entries) first, then the anchors.
        let mut long_puts = Vec::new();
        let mut lpm_puts = Vec::new();
        let mut anchor_puts = Vec::new();
        for (top, group) in by_anchor {
            let old = self.v6_anchor_plan(top);
            for (n, e) in group {
                undo6.push((n, self.v6.insert(n, e)));
            }
            let new = self.v6_anchor_plan(top);
            let old_longs: HashMap<_, _> = old.longs.iter().copied().collect();
            for &(key, code) in &new.longs {
                let was = old_longs.get(&key);
                if was != Some(&code) {
                    long_puts.push((key, code));
                    self.n_longs += usize::from(was.is_none());
                }
            }
            let old_lpm: HashMap<_, _> = old.lpm.iter().copied().collect();
            for &(net, code) in &new.lpm {
                if old_lpm.get(&net) != Some(&code) {
                    lpm_puts.push((net, code));
                }
            }
            // Writes never empty an anchor (it falls back to the /32's own verdict).
            if let Some(anchor) = new.anchor.filter(|_| new.anchor != old.anchor) {
                anchor_puts.push((top, anchor));
                self.n_anchors += usize::from(old.anchor.is_none());
            }
        }
        if let Err(e) = self.room_for(
            self.n_hosts,
            self.n_anchors,
            self.n_longs,
            undo4.first().map(|(n, _)| IpNet::V4(*n)),
            undo6.first().map(|(n, _)| IpNet::V6(*n)),
        ) {
            for (n, old) in undo4.into_iter().rev() {
                match old {
                    Some(e) => self.v4.insert(n, e),
                    None => self.v4.remove(&n),
                };
            }
            for (n, old) in undo6.into_iter().rev() {
                match old {
                    Some(e) => self.v6.insert(n, e),
                    None => self.v6.remove(&n),
                };
            }
            (self.n_hosts, self.n_anchors, self.n_longs) = counts;
            return Err(e);
        }
        self.store.host_put_many(&puts)?;
        for s24 in flag {
            let slot = self.store.slot(s24);
            if slot & SLOT_HOSTS == 0 {
                self.store.set_slot(s24, slot | SLOT_HOSTS);
            }
        }
        self.store.long_put_many(&long_puts)?;
        for (net, code) in lpm_puts {
            self.store.lpm_put(net, code)?;
        }
        self.v6_mark(anchor_puts.iter().map(|(top, _)| *top));
        self.store.anchor_put_many(&anchor_puts)?;
        for (net, entry) in short {
            self.insert(net, entry)?;
        }
        for op in deletes {
            if let TableOp::Delete(net) = *op {
                self.remove(net)?;
            }
        }
        Ok(())
    }

    /// Writes one prefix (replacing its entry).
    pub fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError> {
        match net.trunc() {
            IpNet::V4(n) => self.v4_set(n, Some(entry)),
            IpNet::V6(n) => self.v6_set(n, Some(entry)),
        }
    }

    /// Removes one prefix; removing an absent one is not an error.
    pub fn remove(&mut self, net: IpNet) -> Result<(), TableError> {
        match net.trunc() {
            IpNet::V4(n) => self.v4_set(n, None),
            IpNet::V6(n) => self.v6_set(n, None),
        }
    }

    /// IPv4: host addresses (prefixes longer than /24, expanded); IPv6: the fuller of the
    /// anchor and long-prefix maps.
    pub fn usage(&self) -> TableUsage {
        TableUsage {
            v4: self.n_hosts as u64,
            v6: self.n_anchors.max(self.n_longs) as u64,
        }
    }

    /// The prefixes held, as compiled.
    pub fn entries(&self) -> Compiled {
        let v4 = self.v4.iter().map(|(n, e)| (IpNet::V4(*n), *e));
        let v6 = self.v6.iter().map(|(n, e)| (IpNet::V6(*n), *e));
        v4.chain(v6).collect()
    }

    /// Recomputes the whole layout from `desired` and writes what differs from what the
    /// maps hold (read back: they may come from a previous run). New and changed keys are
    /// written before stale ones are removed, so a source listed before and after is never
    /// unlisted in between. The report counts map keys and /24 slots.
    pub fn sync(&mut self, desired: &Compiled, scopes: &Scopes) -> Result<SyncReport, TableError> {
        // Groups' verdicts first (an entry may name them), stale ones after the entries;
        // meanwhile the hints name both.
        let old_scopes: Scopes = self.store.scopes()?.into_iter().collect();
        let mut report = SyncReport::default();
        for (key, code) in scopes {
            let old = old_scopes.get(key).copied();
            if old != Some(*code) {
                self.store.scope_put(*key, *code)?;
            }
            report.count(old, Some(*code));
        }
        let groups: BTreeSet<u32> = scopes
            .keys()
            .chain(old_scopes.keys())
            .map(|k| u32::from(k.group))
            .collect();
        for &g in &groups {
            let both = hint_of(scopes, g).union(&hint_of(&old_scopes, g));
            if self.store.hint(g)? != both {
                self.store.set_hint(g, &both)?;
            }
        }
        self.scopes = scopes.clone();
        let mut entries = self.sync_entries(desired)?;
        for key in old_scopes.keys().filter(|k| !scopes.contains_key(k)) {
            self.store.scope_del(*key)?;
            report.removed += 1;
        }
        // Every hint exactly its group's cells (a hint left by an earlier run included).
        for g in 1..=ipguard_common::MAX_SCOPE_GROUP {
            let want = hint_of(scopes, g);
            if self.store.hint(g)? != want {
                self.store.set_hint(g, &want)?;
            }
        }
        entries.inserted += report.inserted;
        entries.updated += report.updated;
        entries.removed += report.removed;
        Ok(entries)
    }

    /// The scope groups' verdicts held.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    fn sync_entries(&mut self, desired: &Compiled) -> Result<SyncReport, TableError> {
        // Built from sorted input (bulk, not entry by entry).
        let old_v4 = std::mem::take(&mut self.v4);
        let old_v6 = std::mem::take(&mut self.v6);
        self.v4 = desired
            .iter()
            .filter_map(|(net, e)| match net.trunc() {
                IpNet::V4(n) => Some((n, *e)),
                IpNet::V6(_) => None,
            })
            .collect();
        self.v6 = desired
            .iter()
            .filter_map(|(net, e)| match net.trunc() {
                IpNet::V6(n) => Some((n, *e)),
                IpNet::V4(_) => None,
            })
            .collect();
        let mut report = SyncReport::default();
        let t = std::time::Instant::now();
        let plan4 = self.plan_v4()?;
        let plan6 = self.plan_v6()?;
        if let Err(e) = self.room_for(
            plan4.peak,
            plan6.peak_anchors,
            plan6.peak_longs,
            self.v4.keys().next().copied().map(IpNet::V4),
            self.v6.keys().next().copied().map(IpNet::V6),
        ) {
            self.v4 = old_v4;
            self.v6 = old_v6;
            return Err(e);
        }
        self.sync_v4(plan4, &mut report)?;
        let v4_s = t.elapsed().as_secs_f64();
        self.sync_v6(plan6, &mut report)?;
        tracing::debug!(
            v4_s,
            v6_s = t.elapsed().as_secs_f64() - v4_s,
            written = report.inserted + report.updated,
            removed = report.removed,
            "list tables synced"
        );
        Ok(report)
    }
}

/// The range of a BTreeMap of networks that holds every network inside `net` (and a few
/// shorter ones that share its first address: callers filter by length).
fn v4_span(net: Ipv4Net) -> std::ops::RangeInclusive<Ipv4Net> {
    Ipv4Net::new_assert(net.network(), 0)..=Ipv4Net::from(net.broadcast())
}

fn v6_span(net: Ipv6Net) -> std::ops::RangeInclusive<Ipv6Net> {
    Ipv6Net::new_assert(net.network(), 0)..=Ipv6Net::from(net.broadcast())
}

/// The hint of group `g` from the cells of `scopes`.
fn hint_of(scopes: &Scopes, g: u32) -> ScopeHint {
    let Ok(group) = u16::try_from(g) else {
        return ScopeHint::default();
    };
    let first = ScopeKey {
        group,
        port: 0,
        proto: 0,
        _pad: [0; 3],
    };
    let mut hint = ScopeHint::default();
    for key in scopes
        .range(first..)
        .map(|(k, _)| k)
        .take_while(|k| k.group == group)
    {
        hint.add(key.proto, key.port);
    }
    hint
}

fn code_slot(code: ListCode) -> Tbl24Slot {
    code as Tbl24Slot & SLOT_CODE
}

#[cfg(test)]
mod tests;
