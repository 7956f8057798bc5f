//! The physical storage under [`super::Layout`]: one operation per map operation of the
//! XDP program's tables. [`super::KernelStore`] is the kernel's maps; [`super::MemoryStore`]
//! holds them in memory and answers lookups with the XDP program's own code, so that the
//! layout is tested without a kernel.

use aya::maps::MapError;
use ipguard_common::{ListCode, ScopeHint, ScopeKey, Tbl24Slot, V6Anchor, V6LongKey};
use ipnet::{IpNet, Ipv6Net};

/// Hash maps of map keys: integers and addresses, hashed fast (no untrusted input here).
pub type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

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
    /// The kernel refused a write or removal in the scope map.
    #[error("cannot {op} scope group {} ({}/{}) in {map}: {source}", key.group, key.proto, key.port, map = ipguard_common::MAP_SCOPES)]
    Scope {
        op: &'static str,
        key: ScopeKey,
        #[source]
        source: Box<MapError>,
    },
    /// The kernel refused a scope group's hint.
    #[error("cannot write the hint of scope group {group} in {map}: {source}", map = ipguard_common::MAP_SCOPE_HINTS)]
    Hint {
        group: u32,
        #[source]
        source: Box<MapError>,
    },
    /// An array written as memory (the IPv4 /24 table, the IPv6 region bitmap) could not
    /// be mapped.
    #[error("cannot map {map} into memory: {source}")]
    Mmap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Entries used in the maps whose capacity the config sets (`maps.lpm_v4_capacity`: IPv4
/// host addresses; `maps.lpm_v6_capacity`: the fuller of the IPv6 anchor and long-prefix
/// maps).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableUsage {
    pub v4: u64,
    pub v6: u64,
}

/// What a whole-table sync ([`super::Layout::sync`]) changed: entries of the table (for the kernel: map keys and /24 slots).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
}

impl SyncReport {
    pub(crate) fn count<T: PartialEq>(&mut self, old: Option<T>, new: Option<T>) {
        match (old, new) {
            (None, Some(_)) => self.inserted += 1,
            (Some(_), None) => self.removed += 1,
            (Some(a), Some(b)) if a != b => self.updated += 1,
            _ => {}
        }
    }
}

/// How many keys the maps with a configured size hold at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub hosts: usize,
    pub anchors: usize,
    pub longs: usize,
}

impl Capacity {
    pub const UNBOUNDED: Capacity = Capacity {
        hosts: usize::MAX,
        anchors: usize::MAX,
        longs: usize::MAX,
    };
}

/// Physical storage of the layout: the XDP program's maps, one operation each.
pub trait MapStore {
    /// What the maps can hold: the layout refuses a change that would not fit before it
    /// writes any of it.
    fn capacity(&self) -> Capacity;
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
    /// Many [`MapStore::host_put`]s (a whole-table sync); one at a time unless the store can
    /// do better.
    fn host_put_many(&mut self, items: &[(u32, ListCode)]) -> Result<(), TableError> {
        items.iter().try_for_each(|&(a, c)| self.host_put(a, c))
    }
    /// Word `w` of the IPv6 region bitmap (`MAP_V6_REGIONS`).
    fn region_word(&self, w: u32) -> u64;
    fn set_region_word(&mut self, w: u32, bits: u64);
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
    fn scope_put(&mut self, key: ScopeKey, code: ListCode) -> Result<(), TableError>;
    fn scope_del(&mut self, key: ScopeKey) -> Result<(), TableError>;
    fn scopes(&self) -> Result<HashMap<ScopeKey, ListCode>, TableError>;
    /// A scope group's hint (zero if never written).
    fn hint(&self, group: u32) -> Result<ScopeHint, TableError>;
    fn set_hint(&mut self, group: u32, hint: &ScopeHint) -> Result<(), TableError>;
}
