//! The kernel's view of the lists.
//!
//! The compiler (`policy::compile`) produces prefix → verdict where the longest prefix
//! wins. [`Layout`] lays that out in the XDP program's tables so that a lookup costs the
//! same whatever the list size (see `ipguard_common`): IPv4 as a verdict per /24
//! ([`MAP_V4_TBL24`], written as memory) plus the addresses of the /24s that hold longer
//! prefixes ([`MAP_V4_HOSTS`]); IPv6 as an anchor per /32 listing the longer prefix
//! lengths under it ([`MAP_V6_ANCHORS`], [`MAP_V6_LONG`]) plus a trie of the rare prefixes
//! shorter than /32. Every change writes only the slots and keys whose value changes, in an
//! order that never lets an address that stays listed pass in between (new values before
//! the flags that make the program read them, flags cleared before the values go).
//!
//! [`Store`] is the physical storage: the kernel maps ([`KernelStore`]), or memory
//! ([`MemoryStore`], which also answers lookups the way the XDP program does) so that the
//! layout is tested without a kernel.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU16, Ordering},
};

use aya::maps::{
    lpm_trie::LpmTrie, Array, HashMap as BpfHashMap, IterableMap as _, MapData, MapError,
};
use ipguard_common::{
    user::{v6_key, v6_net},
    ListCode, ListEntry, Tbl24Slot, V6Anchor, V6LongKey, ANCHOR_OVERFLOW, ANCHOR_OWN, LIST_NONE,
    MAP_TABLE_CFG, MAP_V4_HOSTS, MAP_V4_TBL24, MAP_V6_ANCHORS, MAP_V6_LONG, MAP_V6_LPM, SLOT_HOSTS,
    SLOT_LIST, TABLE_FLAG_V6_SHORT, V4_TBL24_SLOTS, V6_ANCHOR_BITS, V6_ANCHOR_LENS,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use crate::{lists::Compiled, policy::compile::TrieOp};

/// Hash maps of map keys: integers and addresses, hashed fast (no untrusted input here).
type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The kernel refused a map operation (map full, no memory, ...).
    #[error("cannot {op} {net} in {map}: {source}")]
    Map {
        op: &'static str,
        net: IpNet,
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    /// A map holds as many entries as it can (`ENOSPC`/`E2BIG` from the kernel).
    #[error("cannot write {net}: {map} is full (raise {setting}; an IPv4 prefix longer than /24 takes one entry per address)")]
    Full {
        net: IpNet,
        map: &'static str,
        setting: &'static str,
    },
    /// Reading a map back failed.
    #[error("cannot read {map}: {source}")]
    Read {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    /// The IPv4 /24 table could not be mapped into memory.
    #[error("cannot map {MAP_V4_TBL24} into memory: {0}")]
    Mmap(#[source] std::io::Error),
}

/// The kernel's view of the lists: prefix → entry, longest prefix wins. Implementations
/// write through at once.
pub trait ListTable {
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError>;
    /// Removing an absent prefix is not an error.
    fn remove(&mut self, net: IpNet) -> Result<(), TableError>;
    fn entries(&self) -> Result<Compiled, TableError>;

    /// Applies compiled changes in order (as [`ListTable::insert`] and
    /// [`ListTable::remove`] would); a table may batch them.
    fn apply(&mut self, ops: &[TrieOp]) -> Result<(), TableError> {
        for op in ops {
            match *op {
                TrieOp::Write(net, entry) => self.insert(net, entry)?,
                TrieOp::Delete(net) => self.remove(net)?,
            }
        }
        Ok(())
    }

    /// Entries used in the maps whose capacity the config sets (`maps.lpm_v4_capacity`,
    /// `maps.lpm_v6_capacity`).
    fn usage(&self) -> TableUsage;

    /// Makes the table hold exactly `desired` (see [`sync`]).
    fn sync_to(&mut self, desired: &Compiled) -> Result<SyncReport, TableError> {
        let current = self.entries()?;
        let mut report = SyncReport::default();
        for (net, entry) in desired {
            match current.get(net) {
                Some(old) if old == entry => {}
                Some(_) => {
                    self.insert(*net, *entry)?;
                    report.updated += 1;
                }
                None => {
                    self.insert(*net, *entry)?;
                    report.inserted += 1;
                }
            }
        }
        for net in current.keys().filter(|n| !desired.contains_key(n)) {
            self.remove(*net)?;
            report.removed += 1;
        }
        Ok(report)
    }
}

/// See [`ListTable::usage`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableUsage {
    pub v4: u64,
    pub v6: u64,
}

/// What [`sync`] changed: entries of the table (for the kernel: map keys and /24 slots).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
}

impl SyncReport {
    fn count<T: PartialEq>(&mut self, old: Option<T>, new: Option<T>) {
        match (old, new) {
            (None, Some(_)) => self.inserted += 1,
            (Some(_), None) => self.removed += 1,
            (Some(a), Some(b)) if a != b => self.updated += 1,
            _ => {}
        }
    }
}

/// Makes `table` hold exactly `desired`, whatever it held (also what a previous run left
/// in pinned maps). New and changed entries are written before stale ones are removed, so
/// a source that is listed before and after is never unlisted in between.
pub fn sync(table: &mut dyn ListTable, desired: &Compiled) -> Result<SyncReport, TableError> {
    table.sync_to(desired)
}

/// In-memory table of prefixes for tests and dry runs.
#[derive(Debug, Default, Clone)]
pub struct MemoryTable(pub Compiled);

impl ListTable for MemoryTable {
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError> {
        self.0.insert(net.trunc(), entry);
        Ok(())
    }

    fn remove(&mut self, net: IpNet) -> Result<(), TableError> {
        self.0.remove(&net.trunc());
        Ok(())
    }

    fn entries(&self) -> Result<Compiled, TableError> {
        Ok(self.0.clone())
    }

    fn usage(&self) -> TableUsage {
        let v4 = self.0.keys().filter(|n| matches!(n, IpNet::V4(_))).count() as u64;
        TableUsage {
            v4,
            v6: self.0.len() as u64 - v4,
        }
    }
}

/// Physical storage of the layout: the XDP program's maps, one operation each.
pub trait Store {
    /// The slot of the /24 `s24` (address >> 8).
    fn slot(&self, s24: u32) -> Tbl24Slot;
    fn set_slot(&mut self, s24: u32, slot: Tbl24Slot);
    /// Makes every slot `slots[s24]`, writing those that differ (counted in `report`).
    fn set_slots(&mut self, slots: &[Tbl24Slot], report: &mut SyncReport) {
        for (s24, &new) in slots.iter().enumerate() {
            let old = self.slot(s24 as u32);
            if new != old {
                self.set_slot(s24 as u32, new);
                report.count((old != 0).then_some(old), (new != 0).then_some(new));
            }
        }
    }
    fn host_put(&mut self, addr: u32, code: ListCode) -> Result<(), TableError>;
    fn host_del(&mut self, addr: u32) -> Result<(), TableError>;
    fn hosts(&self) -> Result<HashMap<u32, ListCode>, TableError>;
    /// Many [`Store::host_put`]s (a whole-table sync); one at a time unless the store can
    /// do better.
    fn host_put_many(&mut self, items: &[(u32, ListCode)]) -> Result<(), TableError> {
        items.iter().try_for_each(|&(a, c)| self.host_put(a, c))
    }
    fn anchor_put(&mut self, top: u32, anchor: &V6Anchor) -> Result<(), TableError>;
    fn anchor_del(&mut self, top: u32) -> Result<(), TableError>;
    fn anchors(&self) -> Result<HashMap<u32, V6Anchor>, TableError>;
    fn anchor_put_many(&mut self, items: &[(u32, V6Anchor)]) -> Result<(), TableError> {
        items.iter().try_for_each(|(t, a)| self.anchor_put(*t, a))
    }
    fn long_put(&mut self, key: V6LongKey, code: ListCode) -> Result<(), TableError>;
    fn long_del(&mut self, key: V6LongKey) -> Result<(), TableError>;
    fn longs(&self) -> Result<HashMap<V6LongKey, ListCode>, TableError>;
    fn long_put_many(&mut self, items: &[(V6LongKey, ListCode)]) -> Result<(), TableError> {
        items.iter().try_for_each(|&(k, c)| self.long_put(k, c))
    }
    fn lpm_put(&mut self, net: Ipv6Net, code: ListCode) -> Result<(), TableError>;
    fn lpm_del(&mut self, net: Ipv6Net) -> Result<(), TableError>;
    fn lpms(&self) -> Result<HashMap<Ipv6Net, ListCode>, TableError>;
    fn flags(&self) -> u32;
    fn set_flags(&mut self, flags: u32) -> Result<(), TableError>;
}

/// The compiled entries laid out in a [`Store`]. Keeps the entries (by family, for range
/// queries) to recompute the part of the layout a change touches.
pub struct Layout<S> {
    store: S,
    v4: BTreeMap<Ipv4Net, ListEntry>,
    v6: BTreeMap<Ipv6Net, ListEntry>,
    /// IPv6 entries shorter than the anchors (in the trie).
    v6_short: usize,
    /// Keys in the host map, the anchor map and the long-prefix map.
    n_hosts: usize,
    n_anchors: usize,
    n_longs: usize,
}

/// The IPv4 layout's tables.
pub type KernelTable = Layout<KernelStore>;

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

impl<S: Store> Layout<S> {
    /// A layout over `store`, which is assumed empty until [`ListTable::sync_to`] says
    /// otherwise.
    pub fn new(store: S) -> Self {
        Self {
            store,
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
            v6_short: 0,
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

    // --- IPv4 ---

    /// The codes of the /24 slots under `net` (at most /24), from the entries of /24 and
    /// less: the longest covering one, then every one inside, shortest first.
    fn v4_codes(&self, net: Ipv4Net) -> Vec<Tbl24Slot> {
        let len = net.prefix_len();
        let base = (0..len)
            .rev()
            .find_map(|l| {
                let outer = Ipv4Net::new(net.network(), l).ok()?.trunc();
                self.v4.get(&outer)
            })
            .map_or(LIST_NONE, |e| e.list);
        let first = u32::from(net.network()) >> 8;
        let mut codes = vec![code_slot(base); 1 << (24 - len)];
        let mut inner: Vec<(Ipv4Net, ListCode)> = self
            .v4
            .range(v4_span(net))
            .filter(|(n, _)| (len..=24).contains(&n.prefix_len()))
            .map(|(n, e)| (*n, e.list))
            .collect();
        inner.sort_by_key(|(n, _)| n.prefix_len());
        for (n, code) in inner {
            let lo = (u32::from(n.network()) >> 8) - first;
            let hi = lo + (1 << (24 - n.prefix_len()));
            codes[lo as usize..hi as usize].fill(code_slot(code));
        }
        codes
    }

    /// Rewrites the /24 slots under `net` (at most /24), keeping their host flags.
    fn v4_write_slots(&mut self, net: Ipv4Net) {
        let first = u32::from(net.network()) >> 8;
        for (i, code) in self.v4_codes(net).into_iter().enumerate() {
            let s24 = first + i as u32;
            let old = self.store.slot(s24);
            let new = (old & SLOT_HOSTS) | code;
            if new != old {
                self.store.set_slot(s24, new);
            }
        }
    }

    /// The host verdicts of the /24 `s24`, from the entries longer than /24 inside it.
    fn v4_hosts(&self, s24: u32) -> Hosts {
        let net = Ipv4Net::new(Ipv4Addr::from(s24 << 8), 24).expect("/24");
        hosts_of(
            self.v4
                .range(v4_span(net))
                .filter(|(n, _)| n.prefix_len() > 24)
                .map(|(n, e)| (*n, e.list)),
        )
    }

    /// Writes the /24 `s24`'s hosts going from `old` to `new`: changed hosts, then the
    /// slot's flag, then the removals.
    fn v4_write_hosts(&mut self, s24: u32, old: &Hosts, new: &Hosts) -> Result<(), TableError> {
        let base = s24 << 8;
        for h in 0..256 {
            if let Some(code) = new[h] {
                if old[h] != Some(code) {
                    self.store.host_put(base | h as u32, code)?;
                    self.n_hosts += usize::from(old[h].is_none());
                }
            }
        }
        let slot = self.store.slot(s24);
        let flagged = new.iter().any(Option::is_some);
        let want = if flagged {
            slot | SLOT_HOSTS
        } else {
            slot & !SLOT_HOSTS
        };
        if want != slot {
            self.store.set_slot(s24, want);
        }
        for h in 0..256 {
            if old[h].is_some() && new[h].is_none() {
                self.store.host_del(base | h as u32)?;
                self.n_hosts -= 1;
            }
        }
        Ok(())
    }

    fn v4_set(&mut self, net: Ipv4Net, entry: Option<ListEntry>) -> Result<(), TableError> {
        if self.v4.get(&net) == entry.as_ref() {
            return Ok(());
        }
        let s24 = u32::from(net.network()) >> 8;
        let old = (net.prefix_len() > 24).then(|| self.v4_hosts(s24));
        match entry {
            Some(e) => self.v4.insert(net, e),
            None => self.v4.remove(&net),
        };
        match old {
            None => {
                self.v4_write_slots(net);
                Ok(())
            }
            Some(old) => {
                let new = self.v4_hosts(s24);
                self.v4_write_hosts(s24, &old, &new)
            }
        }
    }

    // --- IPv6 ---

    fn v6_anchor_plan(&self, top: u32) -> AnchorPlan {
        let net = Ipv6Net::new(Ipv6Addr::from(u128::from(top) << 96), V6_ANCHOR_BITS).expect("/32");
        let entries: Vec<_> = self
            .v6
            .range(v6_span(net))
            .filter(|(n, _)| n.prefix_len() >= V6_ANCHOR_BITS)
            .map(|(n, e)| (*n, e.list))
            .collect();
        plan_of(&entries)
    }

    /// Writes one anchor going from `old` to `new` (see the module's ordering rule).
    fn v6_write_anchor(
        &mut self,
        top: u32,
        old: &AnchorPlan,
        new: &AnchorPlan,
    ) -> Result<(), TableError> {
        let old_longs: HashMap<_, _> = old.longs.iter().copied().collect();
        let old_lpm: HashMap<_, _> = old.lpm.iter().copied().collect();
        for &(key, code) in &new.longs {
            let old = old_longs.get(&key);
            if old != Some(&code) {
                self.store.long_put(key, code)?;
                self.n_longs += usize::from(old.is_none());
            }
        }
        for &(net, code) in &new.lpm {
            if old_lpm.get(&net) != Some(&code) {
                self.store.lpm_put(net, code)?;
            }
        }
        if new.anchor != old.anchor {
            match &new.anchor {
                Some(a) => {
                    self.store.anchor_put(top, a)?;
                    self.n_anchors += usize::from(old.anchor.is_none());
                }
                None => {
                    self.store.anchor_del(top)?;
                    self.n_anchors -= 1;
                }
            }
        }
        let new_longs: HashMap<_, _> = new.longs.iter().copied().collect();
        let new_lpm: HashMap<_, _> = new.lpm.iter().copied().collect();
        for key in old_longs.keys().filter(|k| !new_longs.contains_key(k)) {
            self.store.long_del(*key)?;
            self.n_longs -= 1;
        }
        for net in old_lpm.keys().filter(|n| !new_lpm.contains_key(n)) {
            self.store.lpm_del(*net)?;
        }
        Ok(())
    }

    fn v6_set(&mut self, net: Ipv6Net, entry: Option<ListEntry>) -> Result<(), TableError> {
        let old_entry = self.v6.get(&net).copied();
        if old_entry == entry {
            return Ok(());
        }
        if net.prefix_len() < V6_ANCHOR_BITS {
            match entry {
                Some(e) => {
                    self.v6.insert(net, e);
                    self.store.lpm_put(net, e.list)?;
                    if old_entry.is_none() {
                        self.v6_short += 1;
                    }
                    self.v6_short_flag()
                }
                None => {
                    self.v6.remove(&net);
                    self.v6_short -= 1;
                    self.v6_short_flag()?;
                    self.store.lpm_del(net)
                }
            }
        } else {
            let top = anchor_of(net);
            let old = self.v6_anchor_plan(top);
            match entry {
                Some(e) => self.v6.insert(net, e),
                None => self.v6.remove(&net),
            };
            let new = self.v6_anchor_plan(top);
            self.v6_write_anchor(top, &old, &new)
        }
    }

    /// Sets [`TABLE_FLAG_V6_SHORT`] as the short-prefix count says.
    fn v6_short_flag(&mut self) -> Result<(), TableError> {
        let flags = self.store.flags();
        let want = if self.v6_short > 0 {
            flags | TABLE_FLAG_V6_SHORT
        } else {
            flags & !TABLE_FLAG_V6_SHORT
        };
        if want != flags {
            self.store.set_flags(want)?;
        }
        Ok(())
    }

    // --- whole-table sync ---

    fn sync_v4(&mut self, report: &mut SyncReport) -> Result<(), TableError> {
        let current = self.store.hosts()?;
        let mut want: HashMap<u32, ListCode> =
            HashMap::with_capacity_and_hasher(current.len(), Default::default());
        let all = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0");
        let mut slots = self.v4_codes(all);
        let mut longs = self
            .v4
            .iter()
            .filter(|(n, _)| n.prefix_len() > 24)
            .peekable();
        while let Some((n, e)) = longs.next() {
            let s24 = u32::from(n.network()) >> 8;
            let mut group = vec![(*n, e.list)];
            while let Some((m, f)) = longs.next_if(|(m, _)| u32::from(m.network()) >> 8 == s24) {
                group.push((*m, f.list));
            }
            slots[s24 as usize] |= SLOT_HOSTS;
            for (h, code) in hosts_of(group.into_iter()).iter().enumerate() {
                if let Some(code) = code {
                    want.insert(s24 << 8 | h as u32, *code);
                }
            }
        }
        let mut puts = Vec::new();
        for (&addr, &code) in &want {
            let old = current.get(&addr);
            if old != Some(&code) {
                puts.push((addr, code));
                report.count(old.copied(), Some(code));
            }
        }
        self.store.host_put_many(&puts)?;
        self.store.set_slots(&slots, report);
        for addr in current.keys().filter(|a| !want.contains_key(a)) {
            self.store.host_del(*addr)?;
            report.removed += 1;
        }
        self.n_hosts = want.len();
        Ok(())
    }

    fn sync_v6(&mut self, report: &mut SyncReport) -> Result<(), TableError> {
        let cur_anchors = self.store.anchors()?;
        let cur_longs = self.store.longs()?;
        let cur_lpm = self.store.lpms()?;
        let mut anchors = HashMap::default();
        let mut longs = HashMap::default();
        let mut lpm = HashMap::default();
        let mut items = self.v6.iter().peekable();
        let mut group = Vec::new();
        while let Some((n, e)) = items.next() {
            if n.prefix_len() < V6_ANCHOR_BITS {
                lpm.insert(*n, e.list);
                continue;
            }
            let top = anchor_of(*n);
            group.clear();
            group.push((*n, e.list));
            while let Some((m, f)) =
                items.next_if(|(m, _)| m.prefix_len() >= V6_ANCHOR_BITS && anchor_of(**m) == top)
            {
                group.push((*m, f.list));
            }
            let plan = plan_of(&group);
            longs.extend(plan.longs);
            lpm.extend(plan.lpm);
            if let Some(a) = plan.anchor {
                anchors.insert(top, a);
            }
        }
        self.v6_short = self.v6.keys().filter(|n| n.prefix_len() < 32).count();
        let mut puts = Vec::new();
        for (&key, &code) in &longs {
            let old = cur_longs.get(&key);
            if old != Some(&code) {
                puts.push((key, code));
                report.count(old.copied(), Some(code));
            }
        }
        self.store.long_put_many(&puts)?;
        for (&net, &code) in &lpm {
            let old = cur_lpm.get(&net);
            if old != Some(&code) {
                self.store.lpm_put(net, code)?;
                report.count(old.copied(), Some(code));
            }
        }
        self.v6_short_flag()?;
        let mut puts = Vec::new();
        for (&top, a) in &anchors {
            let old = cur_anchors.get(&top);
            if old != Some(a) {
                puts.push((top, *a));
                report.count(old, Some(a));
            }
        }
        self.store.anchor_put_many(&puts)?;
        for top in cur_anchors.keys().filter(|t| !anchors.contains_key(t)) {
            self.store.anchor_del(*top)?;
            report.removed += 1;
        }
        for key in cur_longs.keys().filter(|k| !longs.contains_key(k)) {
            self.store.long_del(*key)?;
            report.removed += 1;
        }
        for net in cur_lpm.keys().filter(|n| !lpm.contains_key(n)) {
            self.store.lpm_del(*net)?;
            report.removed += 1;
        }
        self.n_anchors = anchors.len();
        self.n_longs = longs.len();
        Ok(())
    }
}

impl<S: Store> ListTable for Layout<S> {
    /// Writes first, then removals (as the compiler orders them). Among the writes, those
    /// of IPv4 prefixes longer than /24 and of IPv6 prefixes of /32 and longer go first and
    /// in one map batch per map (an API batch of /32 bans is one syscall, not one per ban),
    /// the shorter ones after; a more specific entry written first never unlists an
    /// address that a shorter one still lists.
    fn apply(&mut self, ops: &[TrieOp]) -> Result<(), TableError> {
        let split = ops
            .iter()
            .position(|op| matches!(op, TrieOp::Delete(_)))
            .unwrap_or(ops.len());
        let (writes, deletes) = ops.split_at(split);
        if deletes.iter().any(|op| matches!(op, TrieOp::Write(..))) {
            // Not the compiler's order: keep the given one.
            for op in ops {
                match *op {
                    TrieOp::Write(net, entry) => self.insert(net, entry)?,
                    TrieOp::Delete(net) => self.remove(net)?,
                }
            }
            return Ok(());
        }
        let mut short = Vec::new();
        let mut longs4: Vec<(u32, Ipv4Net, ListEntry)> = Vec::new();
        let mut by_anchor: BTreeMap<u32, Vec<(Ipv6Net, ListEntry)>> = BTreeMap::new();
        for op in writes {
            let TrieOp::Write(net, entry) = *op else {
                unreachable!("writes come first")
            };
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
        // IPv4 hosts: every /24's new hosts in one batch, then the /24s' flags. Writes
        // only add or change hosts, never remove one.
        longs4.sort_by_key(|(s24, ..)| *s24);
        let mut puts = Vec::new();
        let mut flag = Vec::new();
        for group in longs4.chunk_by(|a, b| a.0 == b.0) {
            let s24 = group[0].0;
            let net24 = Ipv4Net::new(Ipv4Addr::from(s24 << 8), 24).expect("/24");
            let only_hosts = group.iter().all(|(_, n, _)| n.prefix_len() == 32)
                && self
                    .v4
                    .range(v4_span(net24))
                    .all(|(n, _)| n.prefix_len() <= 24 || n.prefix_len() == 32);
            if only_hosts {
                // The usual case (bans of single addresses): a /32 is its own host.
                for &(_, n, e) in group {
                    let old = self.v4.insert(n, e);
                    if old.map(|o| o.list) != Some(e.list) {
                        puts.push((u32::from(n.network()), e.list));
                    }
                    self.n_hosts += usize::from(old.is_none());
                }
            } else {
                let old = self.v4_hosts(s24);
                for &(_, n, e) in group {
                    self.v4.insert(n, e);
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
        self.store.host_put_many(&puts)?;
        for s24 in flag {
            let slot = self.store.slot(s24);
            if slot & SLOT_HOSTS == 0 {
                self.store.set_slot(s24, slot | SLOT_HOSTS);
            }
        }
        // IPv6: long prefixes (and overflow tries) first, then the anchors.
        let mut long_puts = Vec::new();
        let mut anchor_puts = Vec::new();
        for (top, group) in by_anchor {
            let old = self.v6_anchor_plan(top);
            for (n, e) in group {
                self.v6.insert(n, e);
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
                    self.store.lpm_put(net, code)?;
                }
            }
            if new.anchor != old.anchor {
                let anchor = new.anchor.expect("writes never empty an anchor");
                anchor_puts.push((top, anchor));
                self.n_anchors += usize::from(old.anchor.is_none());
            }
        }
        self.store.long_put_many(&long_puts)?;
        self.store.anchor_put_many(&anchor_puts)?;
        for (net, entry) in short {
            self.insert(net, entry)?;
        }
        for op in deletes {
            if let TrieOp::Delete(net) = *op {
                self.remove(net)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError> {
        match net.trunc() {
            IpNet::V4(n) => self.v4_set(n, Some(entry)),
            IpNet::V6(n) => self.v6_set(n, Some(entry)),
        }
    }

    fn remove(&mut self, net: IpNet) -> Result<(), TableError> {
        match net.trunc() {
            IpNet::V4(n) => self.v4_set(n, None),
            IpNet::V6(n) => self.v6_set(n, None),
        }
    }

    /// IPv4: host addresses (prefixes longer than /24, expanded); IPv6: the fuller of the
    /// anchor and long-prefix maps.
    fn usage(&self) -> TableUsage {
        TableUsage {
            v4: self.n_hosts as u64,
            v6: self.n_anchors.max(self.n_longs) as u64,
        }
    }

    fn entries(&self) -> Result<Compiled, TableError> {
        let v4 = self.v4.iter().map(|(n, e)| (IpNet::V4(*n), *e));
        let v6 = self.v6.iter().map(|(n, e)| (IpNet::V6(*n), *e));
        Ok(v4.chain(v6).collect())
    }

    /// Recomputes the whole layout from `desired` and writes what differs from what the
    /// maps hold (read back: they may come from a previous run). The report counts map
    /// keys and /24 slots.
    fn sync_to(&mut self, desired: &Compiled) -> Result<SyncReport, TableError> {
        // Built from sorted input (bulk, not entry by entry).
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
        self.sync_v4(&mut report)?;
        let v4_s = t.elapsed().as_secs_f64();
        self.sync_v6(&mut report)?;
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
    Ipv4Net::new(net.network(), 0).expect("/0")..=Ipv4Net::new(net.broadcast(), 32).expect("/32")
}

fn v6_span(net: Ipv6Net) -> std::ops::RangeInclusive<Ipv6Net> {
    Ipv6Net::new(net.network(), 0).expect("/0")..=Ipv6Net::new(net.broadcast(), 128).expect("/128")
}

fn code_slot(code: ListCode) -> Tbl24Slot {
    code as Tbl24Slot & SLOT_LIST
}

/// The first 32 bits of an IPv6 network.
fn anchor_of(net: Ipv6Net) -> u32 {
    (u128::from(net.network()) >> 96) as u32
}

fn long_key(net: Ipv6Net) -> V6LongKey {
    let a = u128::from(net.network());
    V6LongKey::new((a >> 64) as u64, a as u64, u32::from(net.prefix_len()))
}

/// Expands prefixes longer than /24 within one /24 to its addresses, longest prefix last.
fn hosts_of(entries: impl Iterator<Item = (Ipv4Net, ListCode)>) -> Hosts {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_by_key(|(n, _)| n.prefix_len());
    let mut hosts = [None; 256];
    for (n, code) in entries {
        let lo = (u32::from(n.network()) & 0xff) as usize;
        let hi = lo + (1usize << (32 - n.prefix_len()));
        hosts[lo..hi].fill(Some(code));
    }
    hosts
}

/// The anchor of one /32 from the prefixes of /32 and longer under it.
fn plan_of(entries: &[(Ipv6Net, ListCode)]) -> AnchorPlan {
    let mut plan = AnchorPlan::default();
    let mut own = None;
    let mut lens: SmallVec<[u8; 8]> = SmallVec::new();
    for &(net, code) in entries {
        if net.prefix_len() == V6_ANCHOR_BITS {
            own = Some(code);
        } else {
            plan.longs.push((long_key(net), code));
            lens.push(net.prefix_len());
        }
    }
    if own.is_none() && lens.is_empty() {
        return plan;
    }
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.dedup();
    let mut anchor = V6Anchor::default();
    if let Some(code) = own {
        anchor.flags |= ANCHOR_OWN;
        anchor.own = code as u8;
    }
    if lens.len() > V6_ANCHOR_LENS {
        anchor.flags |= ANCHOR_OVERFLOW;
        plan.lpm = entries.to_vec();
    } else {
        anchor.n_lens = lens.len() as u8;
        anchor.lens[..lens.len()].copy_from_slice(&lens);
    }
    plan.anchor = Some(anchor);
    plan
}

/// The tables in memory, looked up the way the XDP program does.
pub struct MemoryStore {
    slots: Vec<Tbl24Slot>,
    pub hosts: HashMap<u32, ListCode>,
    pub anchors: HashMap<u32, V6Anchor>,
    pub longs: HashMap<V6LongKey, ListCode>,
    pub lpm: HashMap<Ipv6Net, ListCode>,
    pub flags: u32,
    /// Map writes made (slots included), to check that a change writes little.
    pub writes: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            // Zeroed allocation: pages are only touched when written.
            slots: vec![0; V4_TBL24_SLOTS as usize],
            hosts: HashMap::default(),
            anchors: HashMap::default(),
            longs: HashMap::default(),
            lpm: HashMap::default(),
            flags: 0,
            writes: 0,
        }
    }
}

impl MemoryStore {
    /// The list code the XDP program would find for `ip`.
    pub fn lookup(&self, ip: IpAddr) -> ListCode {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let slot = self.slots[(a >> 8) as usize];
                if slot & SLOT_HOSTS != 0 {
                    if let Some(code) = self.hosts.get(&a) {
                        return *code;
                    }
                }
                ListCode::from(slot & SLOT_LIST)
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let lpm = || {
                    (0..=128u8)
                        .rev()
                        .find_map(|l| {
                            let n = Ipv6Net::new(a, l).ok()?.trunc();
                            self.lpm.get(&n)
                        })
                        .copied()
                        .unwrap_or(LIST_NONE)
                };
                if let Some(anchor) = self.anchors.get(&((bits >> 96) as u32)) {
                    if anchor.flags & ANCHOR_OVERFLOW != 0 {
                        return lpm();
                    }
                    for &len in &anchor.lens[..anchor.n_lens as usize] {
                        let key = V6LongKey::new((bits >> 64) as u64, bits as u64, len.into());
                        if let Some(code) = self.longs.get(&key) {
                            return *code;
                        }
                    }
                    if anchor.flags & ANCHOR_OWN != 0 {
                        return anchor.own.into();
                    }
                }
                if self.flags & TABLE_FLAG_V6_SHORT != 0 {
                    return lpm();
                }
                LIST_NONE
            }
        }
    }
}

impl Store for MemoryStore {
    fn slot(&self, s24: u32) -> Tbl24Slot {
        self.slots[s24 as usize]
    }
    fn set_slot(&mut self, s24: u32, slot: Tbl24Slot) {
        self.writes += 1;
        self.slots[s24 as usize] = slot;
    }
    fn set_slots(&mut self, slots: &[Tbl24Slot], report: &mut SyncReport) {
        // Whole words first: most of the table is equal.
        for (old_chunk, new_chunk) in self.slots.chunks_mut(64).zip(slots.chunks(64)) {
            if old_chunk == new_chunk {
                continue;
            }
            for (old, &new) in old_chunk.iter_mut().zip(new_chunk) {
                if *old != new {
                    report.count((*old != 0).then_some(*old), (new != 0).then_some(new));
                    *old = new;
                    self.writes += 1;
                }
            }
        }
    }
    fn host_put(&mut self, addr: u32, code: ListCode) -> Result<(), TableError> {
        self.writes += 1;
        self.hosts.insert(addr, code);
        Ok(())
    }
    fn host_del(&mut self, addr: u32) -> Result<(), TableError> {
        self.writes += 1;
        self.hosts.remove(&addr);
        Ok(())
    }
    fn hosts(&self) -> Result<HashMap<u32, ListCode>, TableError> {
        Ok(self.hosts.clone())
    }
    fn anchor_put(&mut self, top: u32, anchor: &V6Anchor) -> Result<(), TableError> {
        self.writes += 1;
        self.anchors.insert(top, *anchor);
        Ok(())
    }
    fn anchor_del(&mut self, top: u32) -> Result<(), TableError> {
        self.writes += 1;
        self.anchors.remove(&top);
        Ok(())
    }
    fn anchors(&self) -> Result<HashMap<u32, V6Anchor>, TableError> {
        Ok(self.anchors.clone())
    }
    fn long_put(&mut self, key: V6LongKey, code: ListCode) -> Result<(), TableError> {
        self.writes += 1;
        self.longs.insert(key, code);
        Ok(())
    }
    fn long_del(&mut self, key: V6LongKey) -> Result<(), TableError> {
        self.writes += 1;
        self.longs.remove(&key);
        Ok(())
    }
    fn longs(&self) -> Result<HashMap<V6LongKey, ListCode>, TableError> {
        Ok(self.longs.clone())
    }
    fn lpm_put(&mut self, net: Ipv6Net, code: ListCode) -> Result<(), TableError> {
        self.writes += 1;
        self.lpm.insert(net, code);
        Ok(())
    }
    fn lpm_del(&mut self, net: Ipv6Net) -> Result<(), TableError> {
        self.writes += 1;
        self.lpm.remove(&net);
        Ok(())
    }
    fn lpms(&self) -> Result<HashMap<Ipv6Net, ListCode>, TableError> {
        Ok(self.lpm.clone())
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn set_flags(&mut self, flags: u32) -> Result<(), TableError> {
        self.writes += 1;
        self.flags = flags;
        Ok(())
    }
}

/// The XDP program's table maps.
pub struct KernelStore {
    /// [`MAP_V4_TBL24`] mapped into memory: slot `s` is the `u16` at byte `2 s`.
    tbl24: memmap2::MmapMut,
    hosts: BpfHashMap<MapData, [u8; 4], ListCode>,
    anchors: BpfHashMap<MapData, [u8; 4], V6Anchor>,
    longs: BpfHashMap<MapData, V6LongKey, ListCode>,
    lpm: LpmTrie<MapData, [u8; 16], ListCode>,
    cfg: Array<MapData, u32>,
    flags: u32,
}

/// The maps [`KernelStore::new`] takes, by name.
pub struct KernelMaps {
    pub tbl24: MapData,
    pub hosts: BpfHashMap<MapData, [u8; 4], ListCode>,
    pub anchors: BpfHashMap<MapData, [u8; 4], V6Anchor>,
    pub longs: BpfHashMap<MapData, V6LongKey, ListCode>,
    pub lpm: LpmTrie<MapData, [u8; 16], ListCode>,
    pub cfg: Array<MapData, u32>,
}

impl KernelStore {
    pub fn new(maps: KernelMaps) -> Result<Self, TableError> {
        let bytes = V4_TBL24_SLOTS as usize * std::mem::size_of::<Tbl24Slot>();
        let fd = maps.tbl24.fd().as_fd().as_raw_fd();
        // SAFETY: the map is an array of exactly `bytes` bytes created BPF_F_MMAPABLE; the
        // mapping keeps the map alive, and it is only accessed through atomics (the XDP
        // program reads it concurrently).
        let tbl24 = unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(fd) }
            .map_err(TableError::Mmap)?;
        let flags = maps.cfg.get(&0, 0).map_err(|source| TableError::Read {
            map: MAP_TABLE_CFG,
            source: Box::new(source),
        })?;
        Ok(Self {
            tbl24,
            hosts: maps.hosts,
            anchors: maps.anchors,
            longs: maps.longs,
            lpm: maps.lpm,
            cfg: maps.cfg,
            flags,
        })
    }

    fn slot_ref(&self, s24: u32) -> &AtomicU16 {
        assert!(s24 < V4_TBL24_SLOTS);
        // SAFETY: in bounds (asserted), 2-byte aligned (the mapping is page aligned), and
        // AtomicU16 has the layout of u16.
        unsafe { &*(self.tbl24.as_ptr() as *const AtomicU16).add(s24 as usize) }
    }
}

/// `BPF_MAP_UPDATE_BATCH` (not in aya 0.14): writes `keys[i]` → `values[i]` in chunks, one
/// syscall per chunk instead of one per key (a whole-table sync writes millions), and large
/// batches from two threads (the kernel's hash map locks per bucket; inserting costs about
/// a microsecond per key). On failure, the index of a key that failed.
fn update_batch<K: aya::Pod + Sync, V: aya::Pod + Sync>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, MapError)> {
    const PARALLEL_MIN: usize = 1 << 15;
    assert_eq!(keys.len(), values.len());
    if keys.len() < PARALLEL_MIN {
        return update_batch_serial(map, keys, values);
    }
    let mid = keys.len() / 2;
    let (first, second) = std::thread::scope(|s| {
        let second = s.spawn(|| update_batch_serial(map, &keys[mid..], &values[mid..]));
        let first = update_batch_serial(map, &keys[..mid], &values[..mid]);
        (first, second.join())
    });
    first?;
    match second {
        Ok(r) => r.map_err(|(i, e)| (mid + i, e)),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn update_batch_serial<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, MapError)> {
    const CHUNK: usize = 1 << 16;
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    assert_eq!(keys.len(), values.len());
    let fd = map.fd().as_fd().as_raw_fd();
    let mut done = 0;
    while done < keys.len() {
        let n = (keys.len() - done).min(CHUNK);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: n as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix for this command (the kernel zero-checks
        // the rest of the size it is given), the key and value arrays hold `n` elements of
        // the map's key and value sizes and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            let failed = done + (attr.count as usize).min(n.saturating_sub(1));
            return Err((
                failed,
                MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_batch",
                    io_error: err,
                }),
            ));
        }
        done += n;
    }
    Ok(())
}

fn put_err(map: &'static str, net: IpNet) -> impl FnOnce(MapError) -> TableError {
    move |source| match &source {
        MapError::SyscallError(e)
            if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)) =>
        {
            TableError::Full {
                net,
                map,
                setting: if map == MAP_V4_HOSTS {
                    "maps.lpm_v4_capacity"
                } else {
                    "maps.lpm_v6_capacity"
                },
            }
        }
        _ => TableError::Map {
            op: "write",
            net,
            map,
            source: Box::new(source),
        },
    }
}

fn del_err(map: &'static str, net: IpNet) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Map {
        op: "remove",
        net,
        map,
        source: Box::new(source),
    }
}

fn read_err(map: &'static str) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Read {
        map,
        source: Box::new(source),
    }
}

/// Removing an absent key is not an error.
fn absent_ok(res: Result<(), MapError>) -> Result<(), MapError> {
    match res {
        Err(MapError::KeyNotFound) => Ok(()),
        res => res,
    }
}

fn host_net(addr: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), 32).expect("/32"))
}

fn anchor_net(top: u32) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(u128::from(top) << 96), 32).expect("/32"))
}

fn long_net(key: &V6LongKey) -> IpNet {
    let addr = (u128::from(key.hi) << 64) | u128::from(key.lo);
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), key.len.min(128) as u8).expect("len ≤ 128"))
}

impl Store for KernelStore {
    fn slot(&self, s24: u32) -> Tbl24Slot {
        self.slot_ref(s24).load(Ordering::Acquire)
    }

    fn set_slot(&mut self, s24: u32, slot: Tbl24Slot) {
        self.slot_ref(s24).store(slot, Ordering::Release);
    }

    fn host_put(&mut self, addr: u32, code: ListCode) -> Result<(), TableError> {
        self.hosts
            .insert(addr.to_be_bytes(), code, 0)
            .map_err(put_err(MAP_V4_HOSTS, host_net(addr)))
    }

    fn host_del(&mut self, addr: u32) -> Result<(), TableError> {
        absent_ok(self.hosts.remove(&addr.to_be_bytes()))
            .map_err(del_err(MAP_V4_HOSTS, host_net(addr)))
    }

    fn hosts(&self) -> Result<HashMap<u32, ListCode>, TableError> {
        self.hosts
            .iter()
            .map(|r| r.map(|(k, v)| (u32::from_be_bytes(k), v)))
            .collect::<Result<_, _>>()
            .map_err(read_err(MAP_V4_HOSTS))
    }

    fn host_put_many(&mut self, items: &[(u32, ListCode)]) -> Result<(), TableError> {
        let keys: Vec<[u8; 4]> = items.iter().map(|(a, _)| a.to_be_bytes()).collect();
        let values: Vec<ListCode> = items.iter().map(|(_, c)| *c).collect();
        update_batch(self.hosts.map(), &keys, &values)
            .map_err(|(i, e)| put_err(MAP_V4_HOSTS, host_net(items[i].0))(e))
    }

    fn anchor_put_many(&mut self, items: &[(u32, V6Anchor)]) -> Result<(), TableError> {
        let keys: Vec<[u8; 4]> = items.iter().map(|(t, _)| t.to_be_bytes()).collect();
        let values: Vec<V6Anchor> = items.iter().map(|(_, a)| *a).collect();
        update_batch(self.anchors.map(), &keys, &values)
            .map_err(|(i, e)| put_err(MAP_V6_ANCHORS, anchor_net(items[i].0))(e))
    }

    fn long_put_many(&mut self, items: &[(V6LongKey, ListCode)]) -> Result<(), TableError> {
        let keys: Vec<V6LongKey> = items.iter().map(|(k, _)| *k).collect();
        let values: Vec<ListCode> = items.iter().map(|(_, c)| *c).collect();
        update_batch(self.longs.map(), &keys, &values)
            .map_err(|(i, e)| put_err(MAP_V6_LONG, long_net(&items[i].0))(e))
    }

    fn anchor_put(&mut self, top: u32, anchor: &V6Anchor) -> Result<(), TableError> {
        self.anchors
            .insert(top.to_be_bytes(), anchor, 0)
            .map_err(put_err(MAP_V6_ANCHORS, anchor_net(top)))
    }

    fn anchor_del(&mut self, top: u32) -> Result<(), TableError> {
        absent_ok(self.anchors.remove(&top.to_be_bytes()))
            .map_err(del_err(MAP_V6_ANCHORS, anchor_net(top)))
    }

    fn anchors(&self) -> Result<HashMap<u32, V6Anchor>, TableError> {
        self.anchors
            .iter()
            .map(|r| r.map(|(k, v)| (u32::from_be_bytes(k), v)))
            .collect::<Result<_, _>>()
            .map_err(read_err(MAP_V6_ANCHORS))
    }

    fn long_put(&mut self, key: V6LongKey, code: ListCode) -> Result<(), TableError> {
        self.longs
            .insert(key, code, 0)
            .map_err(put_err(MAP_V6_LONG, long_net(&key)))
    }

    fn long_del(&mut self, key: V6LongKey) -> Result<(), TableError> {
        absent_ok(self.longs.remove(&key)).map_err(del_err(MAP_V6_LONG, long_net(&key)))
    }

    fn longs(&self) -> Result<HashMap<V6LongKey, ListCode>, TableError> {
        self.longs
            .iter()
            .collect::<Result<_, _>>()
            .map_err(read_err(MAP_V6_LONG))
    }

    fn lpm_put(&mut self, net: Ipv6Net, code: ListCode) -> Result<(), TableError> {
        self.lpm
            .insert(&v6_key(net), code, 0)
            .map_err(put_err(MAP_V6_LPM, IpNet::V6(net)))
    }

    fn lpm_del(&mut self, net: Ipv6Net) -> Result<(), TableError> {
        absent_ok(self.lpm.remove(&v6_key(net))).map_err(del_err(MAP_V6_LPM, IpNet::V6(net)))
    }

    fn lpms(&self) -> Result<HashMap<Ipv6Net, ListCode>, TableError> {
        let mut out = HashMap::default();
        for item in self.lpm.iter() {
            let (key, code) = item.map_err(read_err(MAP_V6_LPM))?;
            if let Some(net) = v6_net(&key) {
                out.insert(net, code);
            }
        }
        Ok(out)
    }

    fn flags(&self) -> u32 {
        self.flags
    }

    fn set_flags(&mut self, flags: u32) -> Result<(), TableError> {
        self.cfg
            .set(0, flags, 0)
            .map_err(|source| TableError::Map {
                op: "write",
                net: IpNet::V6(Ipv6Net::default()),
                map: MAP_TABLE_CFG,
                source: Box::new(source),
            })?;
        self.flags = flags;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipguard_common::{LIST_BLACKLIST, LIST_GRAYLIST, LIST_WHITELIST};
    use proptest::prelude::*;

    use super::*;

    fn e(list: u32, rule_id: u32) -> ListEntry {
        ListEntry { list, rule_id }
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Longest-prefix match over the entries: what every layout must answer.
    fn naive(entries: &Compiled, ip: IpAddr) -> ListCode {
        entries
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.prefix_len())
            .map_or(LIST_NONE, |(_, e)| e.list)
    }

    #[test]
    fn memory_table_sync_inserts_updates_and_removes() {
        let mut t = MemoryTable::default();
        let a = n("192.0.2.0/24");
        let b = n("2001:db8::/32");
        let c = n("198.51.100.7/32");
        t.insert(a, e(LIST_GRAYLIST, 1)).unwrap();
        t.insert(c, e(LIST_BLACKLIST, 1)).unwrap();
        let desired: Compiled = [(a, e(LIST_BLACKLIST, 1)), (b, e(LIST_BLACKLIST, 2))].into();
        let r = sync(&mut t, &desired).unwrap();
        assert_eq!(
            r,
            SyncReport {
                inserted: 1,
                updated: 1,
                removed: 1
            }
        );
        assert_eq!(t.0, desired);
        assert_eq!(sync(&mut t, &desired).unwrap(), SyncReport::default());
    }

    #[test]
    fn v4_longest_prefix_across_slots_and_hosts() {
        let mut t = Layout::new(MemoryStore::default());
        t.insert(n("10.0.0.0/8"), e(LIST_BLACKLIST, 0)).unwrap();
        t.insert(n("10.1.0.0/16"), e(LIST_WHITELIST, 0)).unwrap();
        t.insert(n("10.1.2.128/25"), e(LIST_GRAYLIST, 0)).unwrap();
        t.insert(n("10.1.2.200/32"), e(LIST_NONE, 0)).unwrap();
        let s = t.store();
        assert_eq!(s.lookup(ip("10.9.9.9")), LIST_BLACKLIST);
        assert_eq!(s.lookup(ip("10.1.9.9")), LIST_WHITELIST);
        assert_eq!(s.lookup(ip("10.1.2.1")), LIST_WHITELIST);
        assert_eq!(s.lookup(ip("10.1.2.129")), LIST_GRAYLIST);
        assert_eq!(s.lookup(ip("10.1.2.200")), LIST_NONE);
        assert_eq!(s.lookup(ip("11.0.0.1")), LIST_NONE);
        // 128 addresses of the /25, the /32 among them.
        assert_eq!(s.hosts.len(), 128);
        t.remove(n("10.1.0.0/16")).unwrap();
        assert_eq!(t.store().lookup(ip("10.1.9.9")), LIST_BLACKLIST);
        assert_eq!(t.store().lookup(ip("10.1.2.129")), LIST_GRAYLIST);
        t.remove(n("10.1.2.128/25")).unwrap();
        t.remove(n("10.1.2.200/32")).unwrap();
        assert!(t.store().hosts.is_empty());
        assert_eq!(t.store().slot(0x0a0102) & SLOT_HOSTS, 0, "flag cleared");
        assert_eq!(t.store().lookup(ip("10.1.2.200")), LIST_BLACKLIST);
    }

    #[test]
    fn a_host_entry_writes_one_key_and_one_slot() {
        let mut t = Layout::new(MemoryStore::default());
        t.insert(n("10.0.0.0/8"), e(LIST_BLACKLIST, 0)).unwrap();
        let before = t.store().writes;
        t.insert(n("10.2.3.4/32"), e(LIST_WHITELIST, 0)).unwrap();
        assert_eq!(t.store().writes - before, 2);
        let before = t.store().writes;
        t.insert(n("10.2.3.5/32"), e(LIST_WHITELIST, 0)).unwrap();
        assert_eq!(t.store().writes - before, 1, "the slot is flagged already");
    }

    #[test]
    fn v6_anchors_longs_and_short_prefixes() {
        let mut t = Layout::new(MemoryStore::default());
        t.insert(n("2001:db8::/32"), e(LIST_BLACKLIST, 0)).unwrap();
        t.insert(n("2001:db8:1::/48"), e(LIST_WHITELIST, 0))
            .unwrap();
        t.insert(n("2001:db8:1::7/128"), e(LIST_GRAYLIST, 0))
            .unwrap();
        t.insert(n("2001::/16"), e(LIST_GRAYLIST, 0)).unwrap();
        let s = t.store();
        assert_eq!(s.lookup(ip("2001:db8:2::1")), LIST_BLACKLIST);
        assert_eq!(s.lookup(ip("2001:db8:1::1")), LIST_WHITELIST);
        assert_eq!(s.lookup(ip("2001:db8:1::7")), LIST_GRAYLIST);
        assert_eq!(s.lookup(ip("2001:dead::1")), LIST_GRAYLIST, "short prefix");
        assert_eq!(s.lookup(ip("2002::1")), LIST_NONE);
        assert_eq!(s.anchors.len(), 1);
        assert_eq!(s.anchors[&0x2001_0db8].lens[..2], [128, 48]);
        assert_eq!(s.flags, TABLE_FLAG_V6_SHORT);
        t.remove(n("2001::/16")).unwrap();
        t.remove(n("2001:db8::/32")).unwrap();
        assert_eq!(t.store().flags, 0);
        assert_eq!(t.store().lookup(ip("2001:db8:2::1")), LIST_NONE);
        assert_eq!(t.store().lookup(ip("2001:db8:1::1")), LIST_WHITELIST);
    }

    #[test]
    fn an_anchor_with_too_many_lengths_falls_back_to_the_trie() {
        let mut t = Layout::new(MemoryStore::default());
        let mut want = Compiled::new();
        for len in 33..=(33 + V6_ANCHOR_LENS as u8) {
            let net = Ipv6Net::new(ip6("2001:db8:ffff:ffff::"), len)
                .unwrap()
                .trunc();
            let entry = e(
                if len % 2 == 0 {
                    LIST_WHITELIST
                } else {
                    LIST_BLACKLIST
                },
                0,
            );
            t.insert(IpNet::V6(net), entry).unwrap();
            want.insert(IpNet::V6(net), entry);
        }
        let a = t.store().anchors[&0x2001_0db8];
        assert_ne!(a.flags & ANCHOR_OVERFLOW, 0);
        assert_eq!(t.store().lpm.len(), V6_ANCHOR_LENS + 1);
        for probe in ["2001:db8:ffff:ffff::1", "2001:db8:8000::1", "2001:db8::1"] {
            assert_eq!(
                t.store().lookup(ip(probe)),
                naive(&want, ip(probe)),
                "{probe}"
            );
        }
        // Back under the limit: the trie empties again.
        t.remove(n("2001:db8:ffff:ffff::/33").trunc()).unwrap();
        assert_eq!(t.store().anchors[&0x2001_0db8].flags & ANCHOR_OVERFLOW, 0);
        assert!(t.store().lpm.is_empty());
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn sync_reads_back_what_the_maps_hold_and_fixes_it() {
        // A store left by a previous run: a stale host and anchor, and one entry kept.
        let mut old = Layout::new(MemoryStore::default());
        old.insert(n("192.0.2.7/32"), e(LIST_BLACKLIST, 0)).unwrap();
        old.insert(n("198.51.100.0/24"), e(LIST_BLACKLIST, 0))
            .unwrap();
        old.insert(n("2001:db8::/64"), e(LIST_GRAYLIST, 0)).unwrap();
        let mut t = Layout::new(old.store);
        let desired: Compiled = [(n("198.51.100.0/24"), e(LIST_BLACKLIST, 0))].into();
        let r = t.sync_to(&desired).unwrap();
        // host + its slot flag, anchor + long.
        assert_eq!(r.removed, 4, "{r:?}");
        assert_eq!(r.inserted + r.updated, 0, "{r:?}");
        let s = t.store();
        assert_eq!(s.lookup(ip("192.0.2.7")), LIST_NONE);
        assert_eq!(s.lookup(ip("198.51.100.9")), LIST_BLACKLIST);
        assert_eq!(s.lookup(ip("2001:db8::1")), LIST_NONE);
        assert!(s.hosts.is_empty() && s.anchors.is_empty() && s.longs.is_empty());
        assert_eq!(t.sync_to(&desired).unwrap(), SyncReport::default());
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        // Few distinct high bits, so that prefixes nest and share /24s and /32s.
        prop_oneof![
            (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
                let a = (10 << 24) | (hi << 22) | (lo & 0x3f_ffff);
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len.max(6)).unwrap().trunc())
            }),
            (0u128..4, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
                let a = (0x2001_0db8u128 << 96) | (hi << 94) | (lo >> 34);
                IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(a), len.max(12))
                        .unwrap()
                        .trunc(),
                )
            }),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = ListEntry> {
        (0u32..=5).prop_map(|list| e(list, 0))
    }

    fn probes(entries: &Compiled) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for net in entries.keys() {
            out.push(net.network());
            out.push(net.broadcast());
            match net {
                IpNet::V4(n) => {
                    let a = u32::from(n.network());
                    out.push(IpAddr::V4(Ipv4Addr::from(a.wrapping_sub(1))));
                    out.push(IpAddr::V4(Ipv4Addr::from(
                        u32::from(n.broadcast()).wrapping_add(1),
                    )));
                }
                IpNet::V6(n) => {
                    let a = u128::from(n.network());
                    out.push(IpAddr::V6(Ipv6Addr::from(a.wrapping_sub(1))));
                    out.push(IpAddr::V6(Ipv6Addr::from(
                        u128::from(n.broadcast()).wrapping_add(1),
                    )));
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Any sequence of inserts and removes answers like longest-prefix match, and a
        /// whole-table sync of the result gives the same maps.
        #[test]
        fn layout_answers_like_longest_prefix_match(
            ops in prop::collection::vec((arb_net(), prop::option::of(arb_entry())), 1..60),
        ) {
            let mut t = Layout::new(MemoryStore::default());
            let mut want = Compiled::new();
            for (net, entry) in ops {
                match entry {
                    Some(en) => {
                        t.insert(net, en).unwrap();
                        want.insert(net, en);
                    }
                    None => {
                        t.remove(net).unwrap();
                        want.remove(&net);
                    }
                }
            }
            prop_assert_eq!(t.entries().unwrap(), want.clone());
            for p in probes(&want) {
                prop_assert_eq!(t.store().lookup(p), naive(&want, p), "{}", p);
            }
            let mut fresh = Layout::new(MemoryStore::default());
            fresh.sync_to(&want).unwrap();
            prop_assert_eq!(&fresh.store().hosts, &t.store().hosts);
            prop_assert_eq!(&fresh.store().anchors, &t.store().anchors);
            prop_assert_eq!(&fresh.store().longs, &t.store().longs);
            prop_assert_eq!(&fresh.store().lpm, &t.store().lpm);
            prop_assert_eq!(fresh.store().flags, t.store().flags);
            prop_assert_eq!(t.usage(), TableUsage {
                v4: t.store().hosts.len() as u64,
                v6: t.store().anchors.len().max(t.store().longs.len()) as u64,
            });
            prop_assert_eq!(fresh.usage(), t.usage());
            prop_assert!(fresh.store().slots == t.store().slots);
            // And syncing the incremental one to the same entries changes nothing.
            prop_assert_eq!(t.sync_to(&want).unwrap(), SyncReport::default());
        }

        /// A batch (writes, then deletes, as the compiler orders them) leaves the maps as
        /// the same changes one by one would.
        #[test]
        fn a_batch_equals_its_changes_one_by_one(
            first in prop::collection::vec((arb_net(), arb_entry()), 0..40),
            writes in prop::collection::vec((arb_net(), arb_entry()), 0..40),
            deletes in prop::collection::vec(arb_net(), 0..20),
        ) {
            let mut batched = Layout::new(MemoryStore::default());
            let mut single = Layout::new(MemoryStore::default());
            for (net, e) in &first {
                batched.insert(*net, *e).unwrap();
                single.insert(*net, *e).unwrap();
            }
            // Deletes of what is there (and was not just written), like the compiler's.
            let written: std::collections::HashSet<_> = writes.iter().map(|(n, _)| *n).collect();
            let mut ops: Vec<TrieOp> = writes.iter().map(|(n, e)| TrieOp::Write(*n, *e)).collect();
            ops.extend(
                deletes
                    .iter()
                    .chain(first.iter().map(|(n, _)| n))
                    .filter(|n| !written.contains(n))
                    .take(20)
                    .map(|n| TrieOp::Delete(*n)),
            );
            batched.apply(&ops).unwrap();
            for op in &ops {
                match *op {
                    TrieOp::Write(n, e) => single.insert(n, e).unwrap(),
                    TrieOp::Delete(n) => single.remove(n).unwrap(),
                }
            }
            prop_assert_eq!(batched.entries().unwrap(), single.entries().unwrap());
            prop_assert_eq!(&batched.store().hosts, &single.store().hosts);
            prop_assert_eq!(&batched.store().anchors, &single.store().anchors);
            prop_assert_eq!(&batched.store().longs, &single.store().longs);
            prop_assert_eq!(&batched.store().lpm, &single.store().lpm);
            prop_assert_eq!(batched.store().flags, single.store().flags);
            prop_assert!(batched.store().slots == single.store().slots);
            prop_assert_eq!(batched.usage(), single.usage());
        }
    }
}
