//! Loading the XDP object (maps sized by the config, pinned for crash safety), attaching
//! the program to an interface, and the pins that let it keep filtering while the daemon
//! is down.

use std::{
    ffi::CString,
    os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::LpmTrie, Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray,
        PerCpuHashMap, RingBuf,
    },
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramError, Xdp, XdpMode as AyaXdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use ipguard_common::{
    MAP_EVENTS, MAP_FLOOD_CFG, MAP_FLOOD_STATE, MAP_RATE_CONFIG, MAP_SCOPES, MAP_SCOPE_HINTS,
    MAP_SOURCES, MAP_STATS, MAP_TABLE_CFG, MAP_V4_HOSTS, MAP_V4_TBL24, MAP_V6_ANCHORS, MAP_V6_LONG,
    MAP_V6_LPM, MAP_V6_REGIONS, PROGRAM_NAME, STAT_COUNT,
};

use super::{
    interface_index, DataplaneError, KernelBackend, KernelStore, Layout, Result, TableMaps,
    EBPF_OBJECT,
};
use crate::{
    config::{MapsConfig, XdpMode},
    model::named_enum,
};

named_enum! {
    /// The mode an attached program actually runs in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum AttachedMode {
        /// In the driver (XDP_FLAGS_DRV_MODE).
        Native = "native",
        /// In the generic network stack path (XDP_FLAGS_SKB_MODE).
        Skb = "skb",
    }
}

/// The XDP object loaded into the kernel: the program (not attached yet), the maps the
/// controller writes, and the ring buffer of rate events. The daemon hands `backend` to
/// the controller and keeps `program` and `events`.
pub struct Dataplane {
    pub program: Program,
    pub backend: KernelBackend,
    /// `None` once taken.
    pub events: Option<RingBuf<MapData>>,
}

/// The loaded program and its links. Dropping it detaches an unpinned link; a pinned one
/// stays (that is what the pin is for).
pub struct Program {
    ebpf: Ebpf,
    attached: Option<(String, AttachedMode, XdpLinkId)>,
    pin_dir: Option<PathBuf>,
    /// The XDP link, pinned so that the program keeps filtering if the daemon dies.
    pinned_link: Option<(String, PinnedLink)>,
}

/// Maps pinned by [`Dataplane::load_pinned`] (all of them: lists, counters, rates, events).
const PINNED_MAPS: [&str; 15] = [
    MAP_V4_TBL24,
    MAP_V6_REGIONS,
    MAP_SCOPES,
    MAP_SCOPE_HINTS,
    MAP_V4_HOSTS,
    MAP_V6_ANCHORS,
    MAP_V6_LONG,
    MAP_V6_LPM,
    MAP_TABLE_CFG,
    MAP_SOURCES,
    MAP_STATS,
    MAP_RATE_CONFIG,
    MAP_EVENTS,
    MAP_FLOOD_CFG,
    MAP_FLOOD_STATE,
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
        // The global counters of an earlier version with fewer counters: started afresh
        // (they hold no policy; the program still attached keeps its own until replaced).
        let stats_pin = pin_dir.join(MAP_STATS);
        if let Ok(old) = aya::maps::MapData::from_pin(&stats_pin) {
            let entries = old.info().map(|i| i.max_entries()).unwrap_or(STAT_COUNT);
            if entries != STAT_COUNT {
                tracing::info!(
                    pinned = entries,
                    now = STAT_COUNT,
                    "the pinned global counters are of another version: starting them afresh"
                );
                let _ = std::fs::remove_file(&stats_pin);
            }
        }
        let adopted = PINNED_MAPS.iter().any(|m| pin_dir.join(m).exists());
        let dp = Self::load_with(maps, Some(pin_dir))?;
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
            // The verifier refuses with EACCES too: only an empty log means privilege.
            ProgramError::LoadError {
                ref io_error,
                ref verifier_log,
            } if io_error.kind() == std::io::ErrorKind::PermissionDenied
                && verifier_log.to_string().trim().is_empty() =>
            {
                DataplaneError::PermissionDenied
            }
            e => DataplaneError::Program(e),
        })?;
        let mut array = |name| match take_map(&mut ebpf, name, Ok)? {
            Map::Array(data) => Ok(data),
            _ => Err(DataplaneError::Missing {
                kind: "array map",
                name,
            }),
        };
        let tbl24 = array(MAP_V4_TBL24)?;
        let regions = array(MAP_V6_REGIONS)?;
        let store = KernelStore::new(TableMaps {
            tbl24,
            regions,
            hosts: take_map(&mut ebpf, MAP_V4_HOSTS, BpfHashMap::try_from)?,
            anchors: take_map(&mut ebpf, MAP_V6_ANCHORS, BpfHashMap::try_from)?,
            longs: take_map(&mut ebpf, MAP_V6_LONG, BpfHashMap::try_from)?,
            lpm: take_map(&mut ebpf, MAP_V6_LPM, LpmTrie::try_from)?,
            scopes: take_map(&mut ebpf, MAP_SCOPES, BpfHashMap::try_from)?,
            hints: take_map(&mut ebpf, MAP_SCOPE_HINTS, Array::try_from)?,
            cfg: take_map(&mut ebpf, MAP_TABLE_CFG, Array::try_from)?,
        })
        .map_err(DataplaneError::Table)?;
        let backend = KernelBackend {
            table: Layout::new(store),
            stats: take_map(&mut ebpf, MAP_STATS, PerCpuArray::try_from)?,
            sources: take_map(&mut ebpf, MAP_SOURCES, PerCpuHashMap::try_from)?,
            rates: take_map(&mut ebpf, MAP_RATE_CONFIG, Array::try_from)?,
            flood: take_map(&mut ebpf, MAP_FLOOD_CFG, Array::try_from)?,
        };
        let events = Some(take_map(&mut ebpf, MAP_EVENTS, RingBuf::try_from)?);
        Ok(Self {
            program: Program {
                ebpf,
                attached: None,
                pin_dir: pin_dir.map(Path::to_owned),
                pinned_link: None,
            },
            backend,
            events,
        })
    }
}

impl Program {
    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp(&mut self) -> Result<&mut Xdp> {
        xdp_program(&mut self.ebpf)
    }

    /// Attaches to `interface`. `Auto` tries native (driver) mode first and falls back to
    /// skb (generic) mode, which every interface supports.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<AttachedMode> {
        if interface_index(interface).is_none() {
            return Err(DataplaneError::UnknownInterface(interface.to_owned()));
        }
        // The modes tried before the last, and the last, whose error is the answer.
        let (first, last): (&[AttachedMode], AttachedMode) = match mode {
            XdpMode::Auto => (&[AttachedMode::Native], AttachedMode::Skb),
            XdpMode::Native => (&[], AttachedMode::Native),
            XdpMode::Skb => (&[], AttachedMode::Skb),
        };
        let program = self.xdp()?;
        let flags = |m| match m {
            AttachedMode::Native => AyaXdpMode::Driver,
            AttachedMode::Skb => AyaXdpMode::Skb,
        };
        for &m in first {
            match program.attach(interface, flags(m)) {
                Ok(link) => {
                    self.attached = Some((interface.to_owned(), m, link));
                    return Ok(m);
                }
                Err(e) => {
                    tracing::debug!(interface, mode = m.as_str(), error = %e, "attach failed");
                }
            }
        }
        let link =
            program
                .attach(interface, flags(last))
                .map_err(|source| DataplaneError::Attach {
                    interface: interface.to_owned(),
                    mode: last.as_str(),
                    source,
                })?;
        self.attached = Some((interface.to_owned(), last, link));
        Ok(last)
    }

    /// Attaches like [`Program::attach`] and pins the link under the pin directory, so the
    /// program keeps filtering (with the pinned maps) if the daemon is killed. If a link is
    /// already pinned there, the new program atomically replaces the old one in it (no
    /// moment without a filter): the result is `None` then, as the mode is the old link's.
    /// A pinned link that was detached meanwhile (`bpftool link detach`) is replaced by a
    /// new one.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<Option<AttachedMode>> {
        let dir = self.pin_dir.clone().ok_or(DataplaneError::NotPinned)?;
        let pin = dir.join(LINK_PIN);
        let pin_err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Pin {
            path: pin.clone(),
            source: e,
        };
        if pin.exists() {
            if pinned_link_ifindex(&pin).is_some_and(|ifindex| ifindex != 0) {
                let pinned = PinnedLink::from_pin(&pin).map_err(|e| pin_err(e.into()))?;
                let link =
                    XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(e.into()))?;
                let program = self.xdp()?;
                let id = program
                    .attach_to_link(link)
                    .map_err(DataplaneError::Program)?;
                // Hand the link back from the program (whose drop would detach it) to a
                // pinned handle: the pin file keeps naming the same link.
                let link = program.take_link(id).map_err(DataplaneError::Program)?;
                drop(FdLink::try_from(link).map_err(|e| pin_err(e.into()))?);
                let pinned = PinnedLink::from_pin(&pin).map_err(|e| pin_err(e.into()))?;
                self.pinned_link = Some((interface.to_owned(), pinned));
                return Ok(None);
            }
            tracing::warn!(pin = %pin.display(), "the pinned XDP link was detached: attaching anew");
            std::fs::remove_file(&pin).map_err(|e| pin_err(e.into()))?;
        }
        let mode = self.attach(interface, mode)?;
        let (_, _, id) = self.attached.take().ok_or(DataplaneError::NotPinned)?;
        let program = self.xdp()?;
        let link = program.take_link(id).map_err(DataplaneError::Program)?;
        let fd = FdLink::try_from(link).map_err(|e| pin_err(e.into()))?;
        let pinned = fd.pin(&pin).map_err(|e| pin_err(e.into()))?;
        self.pinned_link = Some((interface.to_owned(), pinned));
        Ok(Some(mode))
    }

    /// Whether the pinned link still holds the program on `interface`: `Err` says what is
    /// wrong (detached from outside, the pin removed).
    pub fn check_link(&self, interface: &str) -> std::result::Result<(), String> {
        let Some(dir) = &self.pin_dir else {
            return Ok(());
        };
        let pin = dir.join(LINK_PIN);
        match pinned_link_ifindex(&pin) {
            None => Err(format!(
                "the XDP link's pin {} is gone: the program filters, but would stop with the daemon",
                pin.display()
            )),
            Some(0) => Err(format!(
                "the XDP program was detached from {interface} from outside ipguard: nothing is filtered"
            )),
            Some(i) if Some(i) != interface_index(interface) => Err(format!(
                "the XDP link is on interface index {i}, not {interface}"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Attaches again after [`Program::check_link`] found the program detached, or pins
    /// the link again if only its pin went.
    pub fn repair_link(&mut self, interface: &str, mode: XdpMode) -> Result<()> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        let pin = dir.join(LINK_PIN);
        if pinned_link_ifindex(&pin).is_none() {
            if let Some((_, link)) = self.pinned_link.take() {
                // The pin went, the link (held by our fd) did not: pin it again.
                std::fs::create_dir_all(&dir).map_err(|e| DataplaneError::Pin {
                    path: dir.clone(),
                    source: e.into(),
                })?;
                let fd = link.unpin().map_err(|e| DataplaneError::Pin {
                    path: pin.clone(),
                    source: e.into(),
                });
                if let Ok(fd) = fd {
                    if let Ok(pinned) = fd.pin(&pin) {
                        self.pinned_link = Some((interface.to_owned(), pinned));
                        if pinned_link_ifindex(&pin).is_some_and(|i| i != 0) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        self.pinned_link = None;
        self.attach_pinned(interface, mode).map(drop)
    }

    /// Detaches from the interface, if attached, and removes every pin (a clean stop leaves
    /// nothing behind).
    pub fn detach(&mut self) -> Result<()> {
        if let Some((_, _, link)) = self.attached.take() {
            self.xdp()?.detach(link).map_err(DataplaneError::Program)?;
        }
        if let Some((_, pinned)) = self.pinned_link.take() {
            let path = self.pin_dir.clone().unwrap_or_default().join(LINK_PIN);
            // Unpinning and dropping the last fd destroys the link: the program detaches.
            drop(pinned.unpin().map_err(|e| DataplaneError::Pin {
                path,
                source: e.into(),
            })?);
        }
        if let Some(dir) = self.pin_dir.take() {
            remove_pins(&dir);
        }
        Ok(())
    }
}

/// Removes every pin of ipguard's under `dir` (maps and link), and `dir` if then empty.
pub fn remove_pins(dir: &Path) {
    for name in PINNED_MAPS.iter().chain([&LINK_PIN]) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// The interface index of the XDP link pinned at `pin` (0 once detached), or `None` if
/// nothing is pinned there. Read with `BPF_OBJ_GET` and `BPF_OBJ_GET_INFO_BY_FD`: aya's
/// `LinkInfo` does not expose the XDP part of `bpf_link_info`.
fn pinned_link_ifindex(pin: &Path) -> Option<u32> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `bpf_attr` for BPF_OBJ_GET.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    /// `bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let path = CString::new(pin.as_os_str().as_bytes()).ok()?;
    let mut attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: a valid bpf_attr prefix for BPF_OBJ_GET; `path` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then the 8-byte aligned union
    // whose XDP member starts with the ifindex.
    let mut info = [0u64; 16];
    let mut get = GetInfo {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: a valid bpf_attr prefix; `info` is writable for `info_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut get as *mut GetInfo,
            std::mem::size_of::<GetInfo>(),
        )
    };
    if rc < 0 {
        return None;
    }
    Some(info[2] as u32)
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
    use std::io::{Error, ErrorKind};
    let err = |source: Error| DataplaneError::Bpffs {
        path: dir.to_owned(),
        source,
    };
    let parent = dir
        .parent()
        .ok_or_else(|| err(Error::new(ErrorKind::InvalidInput, "no parent directory")))?;
    std::fs::create_dir_all(parent).map_err(err)?;
    if fs_magic(parent) != Some(BPF_FS_MAGIC) {
        let target = CString::new(parent.as_os_str().as_bytes())
            .map_err(|e| err(Error::new(ErrorKind::InvalidInput, e)))?;
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
            return Err(err(Error::last_os_error()));
        }
        tracing::info!(path = %parent.display(), "mounted a BPF filesystem");
    }
    std::fs::create_dir_all(dir).map_err(err)
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-buffer; `c` outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type as i64)
}
