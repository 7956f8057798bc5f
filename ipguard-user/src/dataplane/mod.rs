//! The XDP program in the kernel: loading it ([`Dataplane`]), attaching and pinning it
//! ([`Program`]), and its maps. The controller writes and reads the maps through one trait,
//! [`Backend`]: [`KernelBackend`] over the kernel's maps, [`MemoryBackend`] in memory; both
//! lay the compiled lists out with the same [`Layout`].

mod kernel_store;
mod layout;
mod loader;
mod map_store;
mod memory;

use std::{net::IpAddr, path::PathBuf};

use aya::{
    maps::{Array, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::ProgramError,
    EbpfError,
};
use ipguard_common::{
    FloodConfig, RateConfig, SourceCounters, SourceKey, Stat, StatCounter, MAP_FLOOD_CFG,
    MAP_RATE_CONFIG, MAP_SOURCES, MAP_STATS,
};

pub use self::{
    kernel_store::{KernelStore, TableMaps},
    layout::Layout,
    loader::{remove_pins, AttachedMode, Dataplane, Program},
    map_store::{MapStore, SyncReport, TableError, TableUsage},
    memory::{MemoryBackend, MemoryStore},
};
use crate::model::{Compiled, Scopes, TableOp};

/// The XDP object built from `ipguard-ebpf` by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ipguard"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Loading maps or the program into the kernel was refused as a matter of privilege.
    #[error("permission denied loading the XDP program: run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")]
    PermissionDenied,
    /// The object could not be loaded (maps created, relocations, BTF).
    #[error("cannot load the XDP object: {0}")]
    Load(#[source] EbpfError),
    /// The verifier or the kernel rejected the program.
    #[error("the kernel rejected the XDP program: {0}")]
    Program(#[source] ProgramError),
    /// The object lacks a map or program this daemon expects (built from other sources).
    #[error("the XDP object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    /// A map has an unexpected type.
    #[error("map {name} has the wrong type: {source}")]
    MapType {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// The interface does not exist.
    #[error("unknown interface `{0}`")]
    UnknownInterface(String),
    /// Attaching failed in every mode tried.
    #[error("cannot attach XDP to {interface} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    /// A pin could not be made, opened or removed.
    #[error("pin {}: {source}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pinned attach was asked of a dataplane loaded without a pin directory.
    #[error("the dataplane was loaded without a pin directory")]
    NotPinned,
    /// The pin directory is not on a BPF filesystem and one could not be mounted.
    #[error("cannot mount a BPF filesystem for {}: {source}", path.display())]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The list tables could not be set up (mapping the /24 table, reading flags).
    #[error("cannot set up the list tables: {0}")]
    Table(#[source] TableError),
    /// Reading a counter map failed.
    #[error("cannot read map {name}: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// Writing a configuration map failed.
    #[error("cannot write map {name}: {source}")]
    Write {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// The one seam between the controller and the kernel: the compiled lists go in (a change
/// at a time, or a whole-table sync), counters come out, rate rules are set.
/// [`KernelBackend`] is the kernel's maps, [`MemoryBackend`] memory for tests; both lay
/// the lists out with the real [`Layout`].
pub trait Backend: Send + 'static {
    /// Applies compiled changes in the order given (see [`Layout::apply`]).
    fn apply(&mut self, ops: &[TableOp]) -> Result<(), TableError>;
    /// Makes the tables hold exactly `compiled` and the scope groups `scopes`, whatever they
    /// held (see [`Layout::sync`]).
    fn sync(&mut self, compiled: &Compiled, scopes: &Scopes) -> Result<SyncReport, TableError>;
    /// Fill of the list maps whose capacity the config sets.
    fn usage(&self) -> TableUsage;
    /// Global counters, summed over CPUs.
    fn stats(&self) -> Result<GlobalStats>;
    /// One copy of a source's counters per possible CPU; `None` if the source has not
    /// passed any packet since it entered the map (or was evicted).
    fn source_per_cpu(&self, ip: IpAddr) -> Result<Option<Vec<SourceCounters>>>;
    /// Replaces the rate rules the program counts against.
    fn set_rates(&mut self, rates: &RateConfig) -> Result<()>;
    /// Replaces the SYN budget for sources not known good.
    fn set_flood(&mut self, flood: &FloodConfig) -> Result<()>;

    /// Counters of one source, summed over CPUs (windows left empty).
    fn source(&self, ip: IpAddr) -> Result<Option<SourceCounters>> {
        Ok(self.source_per_cpu(ip)?.map(|v| SourceCounters::total(&v)))
    }
}

/// Global counters summed over CPUs, indexed like [`Stat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats(pub [StatCounter; Stat::ALL.len()]);

impl GlobalStats {
    pub fn get(&self, stat: Stat) -> StatCounter {
        self.0[stat as usize]
    }

    /// Packets passed, whatever the reason.
    pub fn passed(&self) -> u64 {
        [Stat::PassUnlisted, Stat::PassWhitelist, Stat::PassNonIp]
            .iter()
            .map(|s| self.get(*s).packets)
            .sum()
    }

    /// Packets dropped, whatever the list or rule.
    pub fn dropped(&self) -> u64 {
        [
            Stat::DropGraylist,
            Stat::DropBlacklist,
            Stat::DropRule,
            Stat::DropMalformed,
            Stat::DropSynBudget,
        ]
        .iter()
        .map(|s| self.get(*s).packets)
        .sum()
    }
}

/// The kernel's maps, as the controller uses them.
pub struct KernelBackend {
    table: Layout<KernelStore>,
    stats: PerCpuArray<MapData, StatCounter>,
    sources: PerCpuHashMap<MapData, SourceKey, SourceCounters>,
    rates: Array<MapData, RateConfig>,
    flood: Array<MapData, FloodConfig>,
}

impl Backend for KernelBackend {
    fn apply(&mut self, ops: &[TableOp]) -> Result<(), TableError> {
        self.table.apply(ops)
    }

    fn sync(&mut self, compiled: &Compiled, scopes: &Scopes) -> Result<SyncReport, TableError> {
        self.table.sync(compiled, scopes)
    }

    fn usage(&self) -> TableUsage {
        self.table.usage()
    }

    fn stats(&self) -> Result<GlobalStats> {
        let mut out = GlobalStats::default();
        for stat in Stat::ALL {
            let per_cpu =
                self.stats
                    .get(&(stat as u32), 0)
                    .map_err(|source| DataplaneError::Read {
                        name: MAP_STATS,
                        source,
                    })?;
            out.0[stat as usize] =
                per_cpu
                    .iter()
                    .fold(StatCounter::default(), |a, c| StatCounter {
                        packets: a.packets + c.packets,
                        bytes: a.bytes + c.bytes,
                    });
        }
        Ok(out)
    }

    fn source_per_cpu(&self, ip: IpAddr) -> Result<Option<Vec<SourceCounters>>> {
        match self.sources.get(&SourceKey::from(ip), 0) {
            Ok(per_cpu) => Ok(Some(per_cpu.iter().copied().collect())),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DataplaneError::Read {
                name: MAP_SOURCES,
                source,
            }),
        }
    }

    fn set_rates(&mut self, rates: &RateConfig) -> Result<()> {
        self.rates
            .set(0, rates, 0)
            .map_err(|source| DataplaneError::Write {
                name: MAP_RATE_CONFIG,
                source,
            })
    }

    fn set_flood(&mut self, flood: &FloodConfig) -> Result<()> {
        self.flood
            .set(0, flood, 0)
            .map_err(|source| DataplaneError::Write {
                name: MAP_FLOOD_CFG,
                source,
            })
    }
}

impl KernelBackend {
    /// The list tables, e.g. to look at what a test wrote.
    pub fn table(&self) -> &Layout<KernelStore> {
        &self.table
    }
}

/// The interface's index, or `None` if there is no such interface.
pub fn interface_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
