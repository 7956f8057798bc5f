//! The tables in memory, for tests and for the controller's tests: [`MemoryStore`] holds
//! what the kernel's maps would (with their capacities, if asked), and answers lookups
//! with the XDP program's own code (`ipguard_common::lookup`); [`MemoryBackend`] is a whole
//! [`Backend`] over the real [`Layout`].

use std::net::{IpAddr, Ipv6Addr};

use ipguard_common::{
    lookup, v6_region_bit, FloodConfig, ListCode, RateConfig, ScopeHint, ScopeKey, SourceCounters,
    Tbl24Slot, V6Anchor, V6LongKey, LIST_NONE, MAP_V4_HOSTS, MAP_V6_ANCHORS, MAP_V6_LONG,
    MAP_V6_LPM, V4_TBL24_SLOTS,
};
use ipnet::{IpNet, Ipv6Net};

use super::{
    kernel_store::long_net,
    map_store::{Capacity, HashMap, MapStore, SyncReport, TableError, TableUsage},
    Backend, DataplaneError, GlobalStats, Layout,
};
use crate::{
    config::MapsConfig,
    model::{Compiled, Scopes, TableOp},
};

/// The tables in memory, looked up the way the XDP program does.
pub struct MemoryStore {
    pub(in crate::dataplane) slots: Vec<Tbl24Slot>,
    pub hosts: HashMap<u32, ListCode>,
    pub anchors: HashMap<u32, V6Anchor>,
    /// The IPv6 region bitmap's words that are not zero.
    pub regions: HashMap<u32, u64>,
    pub longs: HashMap<V6LongKey, ListCode>,
    pub lpm: HashMap<Ipv6Net, ListCode>,
    pub scopes: HashMap<ScopeKey, ListCode>,
    pub hints: HashMap<u32, ScopeHint>,
    pub flags: u32,
    /// Map writes made (slots included), to check that a change writes little.
    pub writes: usize,
    /// (IPv4 hosts, each IPv6 map) entries at most; `None`: unbounded.
    capacity: Option<(usize, usize)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            // Zeroed allocation: pages are only touched when written.
            slots: vec![0; V4_TBL24_SLOTS as usize],
            hosts: HashMap::default(),
            anchors: HashMap::default(),
            regions: HashMap::default(),
            longs: HashMap::default(),
            lpm: HashMap::default(),
            scopes: HashMap::default(),
            hints: HashMap::default(),
            flags: 0,
            writes: 0,
            capacity: None,
        }
    }
}

impl MemoryStore {
    /// The table code the XDP program would find for `ip` (list and scope group): its own
    /// lookup, over these maps.
    pub fn lookup(&self, ip: IpAddr) -> ListCode {
        match ip {
            IpAddr::V4(a) => lookup::lookup_v4(self, a.octets()),
            IpAddr::V6(a) => lookup::lookup_v6(self, &a.octets()),
        }
    }

    /// The `LIST_*` code that decides a packet from `ip` of protocol `proto` to port
    /// `port` (0: none), as the XDP program finds it.
    pub fn verdict(&self, ip: IpAddr, proto: u8, port: u16) -> ListCode {
        lookup::scoped(self, self.lookup(ip), proto, port)
    }

    /// Limits the maps to the capacities the kernel's would have (`[maps]`): a write past
    /// them fails as the kernel's does.
    pub fn with_capacity(maps: &MapsConfig) -> Self {
        Self {
            capacity: Some((maps.lpm_v4_capacity as usize, maps.lpm_v6_capacity as usize)),
            ..Self::default()
        }
    }

    fn room(&self, map: &'static str, len: usize, net: IpNet) -> Result<(), TableError> {
        let Some((v4, v6)) = self.capacity else {
            return Ok(());
        };
        let (cap, setting) = if map == MAP_V4_HOSTS {
            (v4, "maps.lpm_v4_capacity")
        } else {
            (v6, "maps.lpm_v6_capacity")
        };
        if len >= cap {
            return Err(TableError::Full { net, map, setting });
        }
        Ok(())
    }
}

impl lookup::Tables for MemoryStore {
    fn slot(&self, s24: u32) -> Tbl24Slot {
        self.slots.get(s24 as usize).copied().unwrap_or(0)
    }
    fn host(&self, addr: &[u8; 4]) -> Option<ListCode> {
        self.hosts.get(&u32::from_be_bytes(*addr)).copied()
    }
    fn region_word(&self, w: u32) -> u64 {
        self.regions.get(&w).copied().unwrap_or(0)
    }
    fn anchor(&self, top: &[u8; 4]) -> Option<V6Anchor> {
        self.anchors.get(&u32::from_be_bytes(*top)).copied()
    }
    fn long(&self, key: &V6LongKey) -> Option<ListCode> {
        self.longs.get(key).copied()
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    /// Longest-prefix match, as the kernel's LPM trie answers it.
    fn lpm(&self, addr: &[u8; 16]) -> ListCode {
        let a = Ipv6Addr::from(*addr);
        (0..=128u8)
            .rev()
            .find_map(|l| self.lpm.get(&Ipv6Net::new(a, l).ok()?.trunc()))
            .copied()
            .unwrap_or(LIST_NONE)
    }

    fn scope(&self, key: &ScopeKey) -> Option<ListCode> {
        self.scopes.get(key).copied()
    }

    fn hint(&self, group: u32) -> Option<ScopeHint> {
        self.hints.get(&group).copied()
    }
}

impl MapStore for MemoryStore {
    fn capacity(&self) -> Capacity {
        match self.capacity {
            Some((v4, v6)) => Capacity {
                hosts: v4,
                anchors: v6,
                longs: v6,
            },
            None => Capacity::UNBOUNDED,
        }
    }
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
        if !self.hosts.contains_key(&addr) {
            self.room(
                MAP_V4_HOSTS,
                self.hosts.len(),
                IpNet::from(IpAddr::from(addr.to_be_bytes())),
            )?;
        }
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
    fn region_word(&self, w: u32) -> u64 {
        self.regions.get(&w).copied().unwrap_or(0)
    }
    fn set_region_word(&mut self, w: u32, bits: u64) {
        // The layout's ordering, checked at every write in debug builds: a region is
        // unmarked only once no anchor is left in it.
        #[cfg(debug_assertions)]
        if self.regions.get(&w).copied().unwrap_or(0) & !bits != 0 {
            for &top in self.anchors.keys() {
                let (at, bit) = v6_region_bit(top);
                assert!(
                    at != w || bits & bit != 0,
                    "the region of the anchor {top:#010x} unmarked while the anchor is there"
                );
            }
        }
        self.writes += 1;
        if bits == 0 {
            self.regions.remove(&w);
        } else {
            self.regions.insert(w, bits);
        }
    }
    fn anchor_put(&mut self, top: u32, anchor: &V6Anchor) -> Result<(), TableError> {
        if !self.anchors.contains_key(&top) {
            let net = Ipv6Net::new(Ipv6Addr::from(u128::from(top) << 96), 32)
                .map_or_else(|_| IpNet::from(IpAddr::from([0u8; 16])), IpNet::V6);
            self.room(MAP_V6_ANCHORS, self.anchors.len(), net)?;
        }
        // And an anchor is written only in a marked region (the program would not read it).
        debug_assert!(
            {
                let (w, bit) = v6_region_bit(top);
                lookup::Tables::region_word(self, w) & bit != 0
            },
            "anchor {top:#010x} written in an unmarked region"
        );
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
        if !self.longs.contains_key(&key) {
            self.room(MAP_V6_LONG, self.longs.len(), long_net(&key))?;
        }
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
        if !self.lpm.contains_key(&net) {
            self.room(MAP_V6_LPM, self.lpm.len(), IpNet::V6(net))?;
        }
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
    fn scope_put(&mut self, key: ScopeKey, code: ListCode) -> Result<(), TableError> {
        self.writes += 1;
        self.scopes.insert(key, code);
        Ok(())
    }
    fn scope_del(&mut self, key: ScopeKey) -> Result<(), TableError> {
        self.writes += 1;
        self.scopes.remove(&key);
        Ok(())
    }
    fn scopes(&self) -> Result<HashMap<ScopeKey, ListCode>, TableError> {
        Ok(self.scopes.clone())
    }
    fn hint(&self, group: u32) -> Result<ScopeHint, TableError> {
        Ok(self.hints.get(&group).copied().unwrap_or_default())
    }
    fn set_hint(&mut self, group: u32, hint: &ScopeHint) -> Result<(), TableError> {
        self.writes += 1;
        if *hint == ScopeHint::default() {
            self.hints.remove(&group);
        } else {
            self.hints.insert(group, *hint);
        }
        Ok(())
    }
}

/// A whole dataplane in memory: the real [`Layout`] over a [`MemoryStore`], and counters as
/// the test sets them.
pub struct MemoryBackend {
    pub table: Layout<MemoryStore>,
    pub stats: GlobalStats,
    pub sources: std::collections::HashMap<IpAddr, Vec<SourceCounters>>,
    pub rates: RateConfig,
    pub flood: FloodConfig,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new(MemoryStore::default())
    }
}

impl MemoryBackend {
    pub fn new(store: MemoryStore) -> Self {
        Self {
            table: Layout::new(store),
            stats: GlobalStats::default(),
            sources: std::collections::HashMap::new(),
            rates: RateConfig::default(),
            flood: FloodConfig::default(),
        }
    }

    /// The table code the XDP program would find for `ip`.
    pub fn lookup(&self, ip: IpAddr) -> ListCode {
        self.table.store().lookup(ip)
    }

    /// The `LIST_*` code that decides a packet (see [`MemoryStore::verdict`]).
    pub fn verdict(&self, ip: IpAddr, proto: u8, port: u16) -> ListCode {
        self.table.store().verdict(ip, proto, port)
    }
}

impl Backend for MemoryBackend {
    fn apply(&mut self, ops: &[TableOp]) -> Result<(), TableError> {
        self.table.apply(ops)
    }

    fn sync(&mut self, compiled: &Compiled, scopes: &Scopes) -> Result<SyncReport, TableError> {
        self.table.sync(compiled, scopes)
    }

    fn usage(&self) -> TableUsage {
        self.table.usage()
    }

    fn stats(&self) -> Result<GlobalStats, DataplaneError> {
        Ok(self.stats)
    }

    fn source_per_cpu(&self, ip: IpAddr) -> Result<Option<Vec<SourceCounters>>, DataplaneError> {
        Ok(self.sources.get(&ip).cloned())
    }

    fn set_rates(&mut self, rates: &RateConfig) -> Result<(), DataplaneError> {
        self.rates = *rates;
        Ok(())
    }

    fn set_flood(&mut self, flood: &FloodConfig) -> Result<(), DataplaneError> {
        self.flood = *flood;
        Ok(())
    }
}
