//! The tables in the kernel: the XDP program's maps, the /24 array written as memory.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU16, AtomicU64, Ordering},
};

use aya::maps::{
    lpm_trie::LpmTrie, Array, HashMap as BpfHashMap, IterableMap as _, MapData, MapError,
};
use ipguard_common::{
    user::{v6_key, v6_net},
    ListCode, ScopeHint, ScopeKey, Tbl24Slot, V6Anchor, V6LongKey, MAP_SCOPES, MAP_SCOPE_HINTS,
    MAP_TABLE_CFG, MAP_V4_HOSTS, MAP_V4_TBL24, MAP_V6_ANCHORS, MAP_V6_LONG, MAP_V6_LPM,
    MAP_V6_REGIONS, V4_TBL24_SLOTS, V6_REGION_WORDS,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::map_store::{Capacity, HashMap, MapStore, TableError};

/// The XDP program's table maps.
pub struct KernelStore {
    /// [`MAP_V4_TBL24`] mapped into memory: slot `s` is the `u16` at byte `2 s`.
    tbl24: memmap2::MmapMut,
    /// [`MAP_V6_REGIONS`] mapped into memory: word `w` is the `u64` at byte `8 w`.
    regions: memmap2::MmapMut,
    hosts: BpfHashMap<MapData, [u8; 4], ListCode>,
    anchors: BpfHashMap<MapData, [u8; 4], V6Anchor>,
    longs: BpfHashMap<MapData, V6LongKey, ListCode>,
    lpm: LpmTrie<MapData, [u8; 16], ListCode>,
    scopes: BpfHashMap<MapData, ScopeKey, ListCode>,
    hints: Array<MapData, ScopeHint>,
    cfg: Array<MapData, u32>,
    flags: u32,
    /// The maps' `max_entries` as created (pinned maps keep the size they were made with).
    capacity: Capacity,
}

/// The table maps [`KernelStore::new`] takes, by name.
pub struct TableMaps {
    pub tbl24: MapData,
    pub regions: MapData,
    pub hosts: BpfHashMap<MapData, [u8; 4], ListCode>,
    pub anchors: BpfHashMap<MapData, [u8; 4], V6Anchor>,
    pub longs: BpfHashMap<MapData, V6LongKey, ListCode>,
    pub lpm: LpmTrie<MapData, [u8; 16], ListCode>,
    pub scopes: BpfHashMap<MapData, ScopeKey, ListCode>,
    pub hints: Array<MapData, ScopeHint>,
    pub cfg: Array<MapData, u32>,
}

impl KernelStore {
    pub fn new(maps: TableMaps) -> Result<Self, TableError> {
        let tbl24 = map_memory(
            &maps.tbl24,
            MAP_V4_TBL24,
            V4_TBL24_SLOTS as usize * std::mem::size_of::<Tbl24Slot>(),
        )?;
        let regions = map_memory(&maps.regions, MAP_V6_REGIONS, V6_REGION_WORDS as usize * 8)?;
        let flags = maps.cfg.get(&0, 0).map_err(|source| TableError::Read {
            map: MAP_TABLE_CFG,
            source: Box::new(source),
        })?;
        let max = |map: &MapData, name: &'static str| {
            map.info()
                .map(|i| i.max_entries() as usize)
                .map_err(|source| TableError::Read {
                    map: name,
                    source: Box::new(source),
                })
        };
        let capacity = Capacity {
            hosts: max(maps.hosts.map(), MAP_V4_HOSTS)?,
            anchors: max(maps.anchors.map(), MAP_V6_ANCHORS)?,
            longs: max(maps.longs.map(), MAP_V6_LONG)?,
        };
        Ok(Self {
            capacity,
            tbl24,
            regions,
            hosts: maps.hosts,
            anchors: maps.anchors,
            longs: maps.longs,
            lpm: maps.lpm,
            scopes: maps.scopes,
            hints: maps.hints,
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

    fn region_ref(&self, w: u32) -> &AtomicU64 {
        assert!(w < V6_REGION_WORDS);
        // SAFETY: in bounds (asserted), 8-byte aligned (the mapping is page aligned), and
        // AtomicU64 has the layout of u64.
        unsafe { &*(self.regions.as_ptr() as *const AtomicU64).add(w as usize) }
    }
}

/// Maps an array created `BPF_F_MMAPABLE` of exactly `bytes` bytes into memory.
fn map_memory(
    map: &MapData,
    name: &'static str,
    bytes: usize,
) -> Result<memmap2::MmapMut, TableError> {
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: the map is an array of exactly `bytes` bytes created BPF_F_MMAPABLE; the
    // mapping keeps the map alive, and it is only accessed through atomics (the XDP program
    // reads it concurrently).
    unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(fd) }
        .map_err(|source| TableError::Mmap { map: name, source })
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
    IpNet::V4(Ipv4Net::from(Ipv4Addr::from(addr)))
}

fn anchor_net(top: u32) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::from(u128::from(top) << 96),
        32,
    ))
}

pub(super) fn long_net(key: &V6LongKey) -> IpNet {
    let addr = (u128::from(key.hi) << 64) | u128::from(key.lo);
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::from(addr),
        key.len.min(128) as u8,
    ))
}

impl MapStore for KernelStore {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

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

    fn region_word(&self, w: u32) -> u64 {
        self.region_ref(w).load(Ordering::Acquire)
    }

    /// What orders a mark before the anchor it allows is the hash map update that follows
    /// (a syscall, after this store); the atomics only keep the accesses whole words.
    fn set_region_word(&mut self, w: u32, bits: u64) {
        self.region_ref(w).store(bits, Ordering::Release);
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

    fn scope_put(&mut self, key: ScopeKey, code: ListCode) -> Result<(), TableError> {
        self.scopes
            .insert(key, code, 0)
            .map_err(|source| TableError::Scope {
                op: "write",
                key,
                source: Box::new(source),
            })
    }

    fn scope_del(&mut self, key: ScopeKey) -> Result<(), TableError> {
        absent_ok(self.scopes.remove(&key)).map_err(|source| TableError::Scope {
            op: "remove",
            key,
            source: Box::new(source),
        })
    }

    fn scopes(&self) -> Result<HashMap<ScopeKey, ListCode>, TableError> {
        self.scopes
            .iter()
            .collect::<Result<_, _>>()
            .map_err(read_err(MAP_SCOPES))
    }

    fn hint(&self, group: u32) -> Result<ScopeHint, TableError> {
        self.hints.get(&group, 0).map_err(read_err(MAP_SCOPE_HINTS))
    }

    fn set_hint(&mut self, group: u32, hint: &ScopeHint) -> Result<(), TableError> {
        self.hints
            .set(group, hint, 0)
            .map_err(|source| TableError::Hint {
                group,
                source: Box::new(source),
            })
    }
}
