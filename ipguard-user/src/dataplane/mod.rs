//! Loading the XDP program, attaching it, and access to its maps.

mod table;

use std::{
    ffi::CString,
    net::IpAddr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::LpmTrie, Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray,
        PerCpuHashMap, PerCpuValues, RingBuf,
    },
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramError, Xdp, XdpMode as AyaXdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use ipguard_common::{
    RateConfig, SourceCounters, SourceKey, Stat, StatCounter, MAP_EVENTS, MAP_RATE_CONFIG,
    MAP_SOURCES, MAP_STATS, MAP_TABLE_CFG, MAP_V4_HOSTS, MAP_V4_TBL24, MAP_V6_ANCHORS, MAP_V6_LONG,
    MAP_V6_LPM, PROGRAM_NAME,
};
pub use table::{
    sync, KernelMaps, KernelStore, KernelTable, Layout, ListTable, MemoryStore, MemoryTable, Store,
    SyncReport, TableError, TableUsage,
};

use crate::config::{MapsConfig, XdpMode};

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
    #[error("pin {0}: {1}")]
    Pin(PathBuf, String),
    /// A pinned attach was asked of a dataplane loaded without a pin directory.
    #[error("the dataplane was loaded without a pin directory")]
    NotPinned,
    /// The pin directory is not on a BPF filesystem and one could not be mounted.
    #[error("cannot mount a BPF filesystem for {0}: {1}")]
    Bpffs(PathBuf, String),
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
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// What the controller needs of a dataplane: the tries to write, the counters to read,
/// the rate rules to set. The kernel implements it ([`Dataplane`]), and so does
/// [`MemoryBackend`] for tests that need no kernel.
pub trait Backend: Send + 'static {
    fn table(&mut self) -> &mut dyn ListTable;
    fn stats(&self) -> Result<GlobalStats>;
    fn source_per_cpu(&self, ip: IpAddr) -> Result<Option<Vec<SourceCounters>>>;
    fn set_rates(&mut self, rates: &RateConfig) -> Result<()>;
    /// Fill of the list maps whose capacity the config sets.
    fn table_usage(&self) -> TableUsage;

    /// Counters of one source, summed over CPUs.
    fn source(&self, ip: IpAddr) -> Result<Option<SourceTotals>> {
        Ok(self.source_per_cpu(ip)?.map(|v| SourceTotals::sum(&v)))
    }
}

impl Backend for Dataplane {
    fn table(&mut self) -> &mut dyn ListTable {
        &mut self.table
    }

    fn stats(&self) -> Result<GlobalStats> {
        Dataplane::stats(self)
    }

    fn source_per_cpu(&self, ip: IpAddr) -> Result<Option<Vec<SourceCounters>>> {
        Dataplane::source_per_cpu(self, ip)
    }

    fn set_rates(&mut self, rates: &RateConfig) -> Result<()> {
        Dataplane::set_rates(self, rates)
    }

    fn table_usage(&self) -> TableUsage {
        self.table.usage()
    }
}

/// A dataplane in memory: the tries as a map, counters as the test sets them.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    pub table: MemoryTable,
    pub stats: GlobalStats,
    pub sources: std::collections::HashMap<IpAddr, Vec<SourceCounters>>,
    pub rates: RateConfig,
}

impl Backend for MemoryBackend {
    fn table(&mut self) -> &mut dyn ListTable {
        &mut self.table
    }

    fn stats(&self) -> Result<GlobalStats> {
        Ok(self.stats)
    }

    fn source_per_cpu(&self, ip: IpAddr) -> Result<Option<Vec<SourceCounters>>> {
        Ok(self.sources.get(&ip).cloned())
    }

    fn set_rates(&mut self, rates: &RateConfig) -> Result<()> {
        self.rates = *rates;
        Ok(())
    }

    fn table_usage(&self) -> TableUsage {
        self.table.usage()
    }
}

/// The mode an attached program actually runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// In the generic network stack path (XDP_FLAGS_SKB_MODE).
    Skb,
}

impl AttachedMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
        }
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
        [
            Stat::PassUnlisted,
            Stat::PassWhitelist,
            Stat::PassNonIp,
            Stat::PassMalformed,
        ]
        .iter()
        .map(|s| self.get(*s).packets)
        .sum()
    }

    /// Packets dropped, whatever the list or rule.
    pub fn dropped(&self) -> u64 {
        [Stat::DropGraylist, Stat::DropBlacklist, Stat::DropRule]
            .iter()
            .map(|s| self.get(*s).packets)
            .sum()
    }
}

/// The loaded program and its maps. Dropping it detaches the program (links are owned).
pub struct Dataplane {
    ebpf: Ebpf,
    table: KernelTable,
    stats: PerCpuArray<MapData, StatCounter>,
    sources: PerCpuHashMap<MapData, SourceKey, SourceCounters>,
    rates: Array<MapData, RateConfig>,
    events: Option<RingBuf<MapData>>,
    attached: Option<(String, AttachedMode, XdpLinkId)>,
    pin_dir: Option<PathBuf>,
    /// The XDP link, pinned so that the program keeps filtering if the daemon dies.
    pinned_link: Option<(String, PinnedLink)>,
}

/// Maps pinned by [`Dataplane::load_pinned`] (all of them: lists, counters, rates, events).
const PINNED_MAPS: [&str; 10] = [
    MAP_V4_TBL24,
    MAP_V4_HOSTS,
    MAP_V6_ANCHORS,
    MAP_V6_LONG,
    MAP_V6_LPM,
    MAP_TABLE_CFG,
    MAP_SOURCES,
    MAP_STATS,
    MAP_RATE_CONFIG,
    MAP_EVENTS,
];
/// Pinned maps of earlier versions, removed at load.
const STALE_PINS: [&str; 2] = ["IPG_LPM_V4", "IPG_LPM_V6"];
/// The XDP link's pin, beside the maps.
const LINK_PIN: &str = "xdp_link";
/// `statfs` magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

impl Dataplane {
    /// Loads the maps (sized from `maps`) and the program into the kernel, without attaching.
    pub fn load(maps: &MapsConfig) -> Result<Self> {
        Self::load_with(maps, None)
    }

    /// Like [`Dataplane::load`], with every map pinned under `pin_dir` (on a bpffs, mounted
    /// here if need be). Maps already pinned there, left by a daemon that did not stop
    /// cleanly, are re-used with their contents: the second value is `true` then.
    pub fn load_pinned(maps: &MapsConfig, pin_dir: &Path) -> Result<(Self, bool)> {
        ensure_bpffs(pin_dir)?;
        // Pins of maps that earlier versions used (one LPM trie per family). The program
        // still attached through the pinned link holds them until it is replaced; without
        // their pins they are freed then.
        for stale in STALE_PINS {
            let _ = std::fs::remove_file(pin_dir.join(stale));
        }
        let adopted = PINNED_MAPS.iter().any(|m| pin_dir.join(m).exists());
        let mut dp = Self::load_with(maps, Some(pin_dir))?;
        dp.pin_dir = Some(pin_dir.to_owned());
        Ok((dp, adopted))
    }

    fn load_with(maps: &MapsConfig, pin_dir: Option<&Path>) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_SOURCES, maps.sources_capacity)
            .map_max_entries(MAP_V4_HOSTS, maps.lpm_v4_capacity)
            .map_max_entries(MAP_V6_ANCHORS, maps.lpm_v6_capacity)
            .map_max_entries(MAP_V6_LONG, maps.lpm_v6_capacity)
            .map_max_entries(MAP_V6_LPM, maps.lpm_v6_capacity);
        if let Some(dir) = pin_dir {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| match e {
            EbpfError::MapError(MapError::CreateError { ref io_error, .. })
                if io_error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                DataplaneError::PermissionDenied
            }
            e => DataplaneError::Load(e),
        })?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|e| match e {
            ProgramError::LoadError { ref io_error, .. }
                if io_error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                DataplaneError::PermissionDenied
            }
            e => DataplaneError::Program(e),
        })?;
        let tbl24 = match take_map(&mut ebpf, MAP_V4_TBL24, Ok)? {
            Map::Array(data) => data,
            _ => {
                return Err(DataplaneError::Missing {
                    kind: "array map",
                    name: MAP_V4_TBL24,
                })
            }
        };
        let store = KernelStore::new(KernelMaps {
            tbl24,
            hosts: take_map(&mut ebpf, MAP_V4_HOSTS, BpfHashMap::try_from)?,
            anchors: take_map(&mut ebpf, MAP_V6_ANCHORS, BpfHashMap::try_from)?,
            longs: take_map(&mut ebpf, MAP_V6_LONG, BpfHashMap::try_from)?,
            lpm: take_map(&mut ebpf, MAP_V6_LPM, LpmTrie::try_from)?,
            cfg: take_map(&mut ebpf, MAP_TABLE_CFG, Array::try_from)?,
        })
        .map_err(DataplaneError::Table)?;
        let table = Layout::new(store);
        let stats = take_map(&mut ebpf, MAP_STATS, PerCpuArray::try_from)?;
        let sources = take_map(&mut ebpf, MAP_SOURCES, PerCpuHashMap::try_from)?;
        let rates = take_map(&mut ebpf, MAP_RATE_CONFIG, Array::try_from)?;
        let events = Some(take_map(&mut ebpf, MAP_EVENTS, RingBuf::try_from)?);
        Ok(Self {
            ebpf,
            table,
            stats,
            sources,
            rates,
            events,
            attached: None,
            pin_dir: None,
            pinned_link: None,
        })
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program_mut(&mut self) -> Result<&mut Xdp> {
        xdp_program(&mut self.ebpf)
    }

    /// Attaches to `interface`. `Auto` tries native (driver) mode first and falls back to
    /// skb (generic) mode, which every interface supports.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<AttachedMode> {
        if interface_index(interface).is_none() {
            return Err(DataplaneError::UnknownInterface(interface.to_owned()));
        }
        let tries: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Skb],
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Skb => &[AttachedMode::Skb],
        };
        let program = xdp_program(&mut self.ebpf)?;
        let mut last = None;
        for &m in tries {
            let flags = match m {
                AttachedMode::Native => AyaXdpMode::Driver,
                AttachedMode::Skb => AyaXdpMode::Skb,
            };
            match program.attach(interface, flags) {
                Ok(link) => {
                    self.attached = Some((interface.to_owned(), m, link));
                    return Ok(m);
                }
                Err(e) => {
                    tracing::debug!(interface, mode = m.name(), error = %e, "attach failed");
                    last = Some((m, e));
                }
            }
        }
        let (m, source) = last.expect("at least one mode is tried");
        Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            mode: m.name(),
            source,
        })
    }

    /// Attaches like [`Dataplane::attach`] and pins the link under the pin directory, so the
    /// program keeps filtering (with the pinned maps) if the daemon is killed. If a link is
    /// already pinned there, the new program atomically replaces the old one in it (no
    /// moment without a filter): the result is `None` then, as the mode is the old link's.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<Option<AttachedMode>> {
        let dir = self.pin_dir.clone().ok_or(DataplaneError::NotPinned)?;
        let pin = dir.join(LINK_PIN);
        let pin_err = |e: &dyn std::fmt::Display| DataplaneError::Pin(pin.clone(), e.to_string());
        if pin.exists() {
            let pinned = PinnedLink::from_pin(&pin).map_err(|e| pin_err(&e))?;
            let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(&e))?;
            let program = xdp_program(&mut self.ebpf)?;
            let id = program
                .attach_to_link(link)
                .map_err(DataplaneError::Program)?;
            // Hand the link back from the program (whose drop would detach it) to a
            // pinned handle: the pin file keeps naming the same link.
            let link = program.take_link(id).map_err(DataplaneError::Program)?;
            drop(FdLink::try_from(link).map_err(|e| pin_err(&e))?);
            let pinned = PinnedLink::from_pin(&pin).map_err(|e| pin_err(&e))?;
            self.pinned_link = Some((interface.to_owned(), pinned));
            return Ok(None);
        }
        let mode = self.attach(interface, mode)?;
        let (_, _, id) = self.attached.take().expect("just attached");
        let program = xdp_program(&mut self.ebpf)?;
        let link = program.take_link(id).map_err(DataplaneError::Program)?;
        let fd = FdLink::try_from(link).map_err(|e| pin_err(&e))?;
        let pinned = fd.pin(&pin).map_err(|e| pin_err(&e))?;
        self.pinned_link = Some((interface.to_owned(), pinned));
        Ok(Some(mode))
    }

    /// Detaches from the interface, if attached, and removes every pin (a clean stop leaves
    /// nothing behind).
    pub fn detach(&mut self) -> Result<()> {
        if let Some((_, _, link)) = self.attached.take() {
            xdp_program(&mut self.ebpf)?
                .detach(link)
                .map_err(DataplaneError::Program)?;
        }
        if let Some((_, pinned)) = self.pinned_link.take() {
            let path = self.pin_dir.clone().unwrap_or_default().join(LINK_PIN);
            // Unpinning and dropping the last fd destroys the link: the program detaches.
            drop(
                pinned
                    .unpin()
                    .map_err(|e| DataplaneError::Pin(path, e.to_string()))?,
            );
        }
        if let Some(dir) = self.pin_dir.take() {
            for name in PINNED_MAPS {
                let _ = std::fs::remove_file(dir.join(name));
            }
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Where the program is attached, if it is (through an unpinned link).
    pub fn attached(&self) -> Option<(&str, AttachedMode)> {
        self.attached.as_ref().map(|(i, m, _)| (i.as_str(), *m))
    }

    /// Whether a pinned link holds the program on an interface.
    pub fn is_pinned(&self) -> bool {
        self.pinned_link.is_some()
    }

    pub fn table(&mut self) -> &mut KernelTable {
        &mut self.table
    }

    /// Global counters, summed over CPUs.
    pub fn stats(&self) -> Result<GlobalStats> {
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

    /// Counters of one source, summed over CPUs; `None` if the source has not passed
    /// any packet since it entered the map (or was evicted).
    pub fn source(&self, addr: IpAddr) -> Result<Option<SourceTotals>> {
        Ok(self.source_per_cpu(addr)?.map(|v| SourceTotals::sum(&v)))
    }

    /// One copy of a source's counters per possible CPU.
    pub fn source_per_cpu(&self, addr: IpAddr) -> Result<Option<Vec<SourceCounters>>> {
        match self.sources.get(&SourceKey::from(addr), 0) {
            Ok(per_cpu) => Ok(Some(per_cpu_vec(&per_cpu))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DataplaneError::Read {
                name: MAP_SOURCES,
                source,
            }),
        }
    }

    /// Replaces the rate rules the program counts against.
    pub fn set_rates(&mut self, rates: &RateConfig) -> Result<()> {
        self.rates
            .set(0, rates, 0)
            .map_err(|source| DataplaneError::Read {
                name: MAP_RATE_CONFIG,
                source,
            })
    }

    /// The ring buffer of rate events; `None` once taken.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

/// A source's counters summed over CPUs (latest timestamps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceTotals {
    pub packets: u64,
    pub bytes: u64,
    pub syns: u64,
    pub last_seen_ns: u64,
    pub dropped: u64,
    pub last_drop_ns: u64,
}

impl SourceTotals {
    pub fn sum(per_cpu: &[SourceCounters]) -> Self {
        per_cpu.iter().fold(Self::default(), |a, c| Self {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
            syns: a.syns + c.syns,
            last_seen_ns: a.last_seen_ns.max(c.last_seen_ns),
            dropped: a.dropped + c.dropped,
            last_drop_ns: a.last_drop_ns.max(c.last_drop_ns),
        })
    }
}

fn per_cpu_vec(per_cpu: &PerCpuValues<SourceCounters>) -> Vec<SourceCounters> {
    per_cpu.iter().copied().collect()
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::Missing {
            kind: "program",
            name: PROGRAM_NAME,
        })?
        .try_into()
        .map_err(DataplaneError::Program)
}

fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> std::result::Result<M, MapError>,
) -> Result<M> {
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    convert(map).map_err(|source| DataplaneError::MapType { name, source })
}

/// Makes sure `dir` exists on a BPF filesystem. `/sys/fs/bpf` is not mounted on every
/// system: mount it when the pin directory lies under it.
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let err = |e: String| DataplaneError::Bpffs(dir.to_owned(), e);
    let parent = dir
        .parent()
        .ok_or_else(|| err("no parent directory".into()))?;
    std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    if fs_magic(parent) != Some(BPF_FS_MAGIC) {
        let target = CString::new(parent.as_os_str().as_bytes()).map_err(|e| err(e.to_string()))?;
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(err(format!(
                "mount -t bpf: {}",
                std::io::Error::last_os_error()
            )));
        }
        tracing::info!(path = %parent.display(), "mounted a BPF filesystem");
    }
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-buffer; `c` outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type as i64)
}

/// The XDP program's clock (`bpf_ktime_get_coarse_ns`): `CLOCK_MONOTONIC_COARSE`, which
/// lags `CLOCK_MONOTONIC` by at most one tick. Rate windows and the counters' timestamps
/// are on this clock.
pub fn kernel_clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The interface's index, or `None` if there is no such interface.
pub fn interface_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
