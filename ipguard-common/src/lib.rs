//! Boundary types shared by the XDP program (`ipguard-ebpf`) and the daemon (`ipguard-user`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and a compile-time size check,
//! because the kernel copies these structs byte for byte between the two sides.
//! Addresses are stored as network-order byte arrays where they are keys as such (the LPM
//! trie matches prefixes on the key's bytes in memory order, so they must be big-endian).
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod lookup;
#[cfg(feature = "user")]
pub mod user;

/// Name of the XDP program (the function name in `ipguard-ebpf`).
pub const PROGRAM_NAME: &str = "ipguard";

/// IPv4 verdicts by /24, `[u16; 4]` per element (4 slots of [`Tbl24Slot`]), index
/// `(addr >> 8) / 4`: one array load decides every address whose /24 holds no longer
/// prefix. A `BPF_F_MMAPABLE` array, so the daemon writes it as memory.
pub const MAP_V4_TBL24: &str = "IPG_V4_TBL24";
/// IPv4 host verdicts: `[u8; 4]` (network order) → [`ListCode`], for the /24s whose slot
/// has [`SLOT_HOSTS`]: prefixes /25–/32 expanded to their addresses.
pub const MAP_V4_HOSTS: &str = "IPG_V4_HOSTS";
/// IPv6 prefixes of length 32 and more, by their first 32 bits: `[u8; 4]` → [`V6Anchor`].
pub const MAP_V6_ANCHORS: &str = "IPG_V6_ANCHORS";
/// A bit per IPv6 /24 ([`V6_REGION_BITS`]), set at least where an anchor of
/// [`MAP_V6_ANCHORS`] lies (a bit left set costs a lookup, a bit missing would unlist the
/// region): `u64` words, see [`v6_region_bit`]. An unlisted address outside every marked
/// region costs one array load instead of a hash lookup. A `BPF_F_MMAPABLE` array, written
/// as memory.
pub const MAP_V6_REGIONS: &str = "IPG_V6_REGIONS";
/// IPv6 prefixes longer than /32: [`V6LongKey`] → [`ListCode`].
pub const MAP_V6_LONG: &str = "IPG_V6_LONG";
/// LPM trie of the IPv6 prefixes shorter than /32, and of every prefix under an anchor
/// with [`ANCHOR_OVERFLOW`]: `Key<[u8; 16]>` → [`ListCode`]. Usually empty.
pub const MAP_V6_LPM: &str = "IPG_V6_LPM";
/// Array of one `u32` of `TABLE_FLAG_*` bits, written with the tables.
pub const MAP_TABLE_CFG: &str = "IPG_TABLE_CFG";
/// Per-CPU LRU hash of unlisted sources that passed: [`SourceKey`] → [`SourceCounters`].
pub const MAP_SOURCES: &str = "IPG_SOURCES";
/// Per-CPU array of global counters indexed by [`Stat`]: → [`StatCounter`].
pub const MAP_STATS: &str = "IPG_STATS";
/// Array of one [`RateConfig`]: the rate rules the XDP program counts against.
pub const MAP_RATE_CONFIG: &str = "IPG_RATE_CFG";
/// Ring buffer of [`RateEvent`]s: a source's count for a rule crossed a signal step.
pub const MAP_EVENTS: &str = "IPG_EVENTS";
/// Array of one [`FloodConfig`]: the SYN budget for sources not known good.
pub const MAP_FLOOD_CFG: &str = "IPG_FLOOD_CFG";
/// Per-CPU array of one [`FloodSlot`]: this CPU's use of the budget.
pub const MAP_FLOOD_STATE: &str = "IPG_FLOOD_STATE";

/// The SYN budget's time slot: a CPU admits `FloodConfig::syns_per_slot` SYNs of sources
/// not known good per slot.
pub const FLOOD_SLOT_NS: u64 = 100_000_000;
/// CPUs whose copies of a source are looked at to tell whether it is known good (a source
/// known on another CPU than the one its SYN arrives on is not held to the budget).
pub const MAX_FLOOD_CPUS: u32 = 64;

/// The SYN budget: under a spoofed SYN flood, bans cannot keep up with sources the
/// attacker makes up, so TCP SYNs from sources that never sent anything else (not known
/// good: no completed handshake seen) are admitted only up to a rate; the rest is
/// dropped before it costs a source-map insert and a SYN cookie. Sources that sent
/// anything but SYNs before (ACKs of an established connection, UDP) are never held to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodConfig {
    /// SYNs admitted per CPU per [`FLOOD_SLOT_NS`]; 0 = no budget (every SYN passes).
    pub syns_per_slot: u32,
    /// CPUs to look at for a source's other copies (at most [`MAX_FLOOD_CPUS`]).
    pub cpus: u32,
}

/// One CPU's use of the SYN budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodSlot {
    /// `clock / FLOOD_SLOT_NS` of the slot `used` counts in.
    pub slot: u64,
    pub used: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FloodConfig>() == 8);
const _: () = assert!(core::mem::size_of::<FloodSlot>() == 16);
/// Size of the event ring buffer in bytes (a power of two, multiple of the page size):
/// 16 Ki events of 32 bytes plus headers.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Capacity of the source map when the config does not say (1 Mi entries).
pub const DEFAULT_SOURCES_CAPACITY: u32 = 1 << 20;
/// Capacity of the IPv4 host map and of each IPv6 map when the config does not say. They
/// are not preallocated (`BPF_F_NO_PREALLOC`), so a generous bound costs nothing until used.
pub const DEFAULT_LPM_CAPACITY: u32 = 1 << 21;

/// Slots in [`MAP_V4_TBL24`]: one per /24.
pub const V4_TBL24_SLOTS: u32 = 1 << 24;
/// Elements of [`MAP_V4_TBL24`]: an array map rounds values up to 8 bytes, so an element
/// packs 4 slots (32 MiB in all).
pub const V4_TBL24_ELEMS: u32 = V4_TBL24_SLOTS / 4;
/// One [`MAP_V4_TBL24`] element.
pub type Tbl24Elem = [u16; 4];
/// A /24's slot: the [`ListCode`] of its longest prefix of /24 or less (low 4 bits), and
/// [`SLOT_HOSTS`] if some address in it has a longer prefix in [`MAP_V4_HOSTS`].
pub type Tbl24Slot = u16;
/// See [`Tbl24Slot`].
pub const SLOT_HOSTS: Tbl24Slot = 0x8000;

/// Prefix length of a [`MAP_V6_ANCHORS`] key.
pub const V6_ANCHOR_BITS: u8 = 32;
/// Prefix length of a [`MAP_V6_REGIONS`] region: 2^24 regions, a 2 MiB bitmap.
pub const V6_REGION_BITS: u8 = 24;
/// Words of [`MAP_V6_REGIONS`].
pub const V6_REGION_WORDS: u32 = 1 << (V6_REGION_BITS - 6);

/// The [`MAP_V6_REGIONS`] word and bit of the region that holds the anchor `top` (an
/// address's first 32 bits).
#[inline(always)]
pub const fn v6_region_bit(top: u32) -> (u32, u64) {
    let region = top >> (V6_ANCHOR_BITS - V6_REGION_BITS);
    (region / 64, 1 << (region % 64))
}
/// Distinct longer prefix lengths one anchor lists; more set [`ANCHOR_OVERFLOW`].
pub const V6_ANCHOR_LENS: usize = 12;
/// [`V6Anchor::own`] is the verdict of the /32 itself.
pub const ANCHOR_OWN: u8 = 1;
/// Too many prefix lengths under this /32: look the address up in [`MAP_V6_LPM`].
pub const ANCHOR_OVERFLOW: u8 = 2;
/// [`MAP_TABLE_CFG`]: [`MAP_V6_LPM`] holds IPv6 prefixes shorter than /32.
pub const TABLE_FLAG_V6_SHORT: u32 = 1;

/// What is listed at and under one IPv6 /32: its own verdict, and the lengths of the longer
/// prefixes under it, longest first (each one [`MAP_V6_LONG`] lookup), so an address
/// costs one lookup per length actually present in its /32 instead of a trie walk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V6Anchor {
    /// `ANCHOR_*` bits.
    pub flags: u8,
    /// Low byte of the table code (list and scope group) of the /32 itself, if `flags` has
    /// [`ANCHOR_OWN`] (see [`V6Anchor::own_code`]).
    pub own: u8,
    /// Valid entries in `lens`.
    pub n_lens: u8,
    /// High byte of the /32's own table code (its scope group's high bits; was padding,
    /// so anchors pinned by an earlier version read the same).
    pub own_hi: u8,
    /// Prefix lengths (33..=128) present under this /32, longest first.
    pub lens: [u8; V6_ANCHOR_LENS],
}
const _: () = assert!(core::mem::size_of::<V6Anchor>() == 16);

impl V6Anchor {
    /// The /32's own table code.
    #[inline(always)]
    pub fn own_code(&self) -> ListCode {
        self.own as ListCode | ((self.own_hi as ListCode) << 8)
    }

    /// Sets the /32's own table code (at most 16 bits: see [`MAX_SCOPE_GROUP`]).
    pub fn set_own_code(&mut self, code: ListCode) {
        self.own = code as u8;
        self.own_hi = (code >> 8) as u8;
    }
}

/// Key of [`MAP_V6_LONG`]: the prefix's network address as two host-order halves, and its
/// length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct V6LongKey {
    pub hi: u64,
    pub lo: u64,
    pub len: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<V6LongKey>() == 24);

impl V6LongKey {
    /// The key of the `len`-bit prefix (1..=128) holding the address `hi:lo`.
    #[inline(always)]
    pub fn new(hi: u64, lo: u64, len: u32) -> Self {
        let (hi, lo) = if len >= 64 {
            // len in 64..=128: keep all of hi and the top (len - 64) bits of lo.
            let keep = len - 64;
            (
                hi,
                if keep == 0 {
                    0
                } else {
                    lo & (u64::MAX << (64 - keep))
                },
            )
        } else {
            (hi & (u64::MAX << (64 - len)), 0)
        };
        Self {
            hi,
            lo,
            len,
            _pad: 0,
        }
    }
}

/// Length of an IPv4 prefix key's data in bits.
pub const V4_BITS: u32 = 32;
/// Length of an IPv6 prefix key's data in bits.
pub const V6_BITS: u32 = 128;

/// Which list decided an entry. A `u32` rather than a Rust enum: the kernel may hand
/// back any bit pattern, and an invalid enum discriminant would be undefined behaviour.
pub type ListCode = u32;
/// Explicitly unlisted: pass and count. Written where a more specific prefix must undo
/// the decision of a shorter one (e.g. a removed ban inside an allowed network).
pub const LIST_NONE: ListCode = 0;
/// The source is trusted: pass, and never count it against rate rules.
pub const LIST_WHITELIST: ListCode = 1;
/// The source is temporarily banned: drop.
pub const LIST_GRAYLIST: ListCode = 2;
/// The source is banned for long or forever: drop.
pub const LIST_BLACKLIST: ListCode = 3;
/// An ordered `allow` rule decided: pass and count (allowed is not trusted: rate rules apply).
pub const LIST_RULE_ALLOW: ListCode = 4;
/// An ordered `deny` rule decided: drop.
pub const LIST_RULE_DENY: ListCode = 5;
/// Monitor mode: a graylist entry decided, and the packet would be dropped in enforce
/// mode. Passed, counted in [`Stat::WouldDropGraylist`], and otherwise treated like an
/// unlisted source (counted per source and against the rate rules, held to the SYN budget).
/// Monitoring is a property of the compiled entry, so the enforce path pays nothing for it.
pub const LIST_MONITOR_GRAYLIST: ListCode = 6;
/// Monitor mode: a blacklist entry decided (see [`LIST_MONITOR_GRAYLIST`]).
pub const LIST_MONITOR_BLACKLIST: ListCode = 7;
/// Monitor mode: an ordered `deny` rule decided (see [`LIST_MONITOR_GRAYLIST`]).
pub const LIST_MONITOR_RULE: ListCode = 8;
const _: () = assert!(LIST_MONITOR_RULE <= CODE_LIST);

/// The monitored code of a dropping code (graylist, blacklist, deny rule), for monitor
/// mode; every other code is returned as it is.
pub const fn monitored(code: ListCode) -> ListCode {
    match code {
        LIST_GRAYLIST => LIST_MONITOR_GRAYLIST,
        LIST_BLACKLIST => LIST_MONITOR_BLACKLIST,
        LIST_RULE_DENY => LIST_MONITOR_RULE,
        other => other,
    }
}

/// The dropping code a monitored code stands for (the inverse of [`monitored`]); every
/// other code is returned as it is.
pub const fn enforced(code: ListCode) -> ListCode {
    match code {
        LIST_MONITOR_GRAYLIST => LIST_GRAYLIST,
        LIST_MONITOR_BLACKLIST => LIST_BLACKLIST,
        LIST_MONITOR_RULE => LIST_RULE_DENY,
        other => other,
    }
}

/// Protocol numbers a scope is keyed by (ICMPv6 is reported as [`PROTO_ICMP`]).
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// The IPv6 next header of ICMPv6, which the XDP program reports as [`PROTO_ICMP`].
pub const PROTO_ICMPV6: u8 = 58;

/// Bits of a table code above the `LIST_*` code: the scope group of the prefix (0 = none).
/// A prefix where some port- or protocol-scoped entry or rule gives another verdict than
/// the prefix's own has a group, and [`MAP_SCOPES`] holds the group's verdicts by protocol
/// and port; a prefix without one costs nothing more.
pub const SCOPE_SHIFT: u32 = 4;
/// Highest scope group: the group must fit in a [`Tbl24Slot`] beside [`SLOT_HOSTS`].
pub const MAX_SCOPE_GROUP: u32 = (SLOT_CODE as u32) >> SCOPE_SHIFT;
/// The list code and scope group of a [`Tbl24Slot`] (all but [`SLOT_HOSTS`]).
pub const SLOT_CODE: Tbl24Slot = 0x7fff;
/// The `LIST_*` part of a table code.
pub const CODE_LIST: ListCode = 0xf;
/// Key of [`MAP_SCOPES`]: a scope group, a protocol (`PROTO_*` or any other IP protocol
/// number) and a destination port; port 0 holds the group's verdict for the protocol's
/// other ports (and for packets without a readable port).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    pub group: u16,
    pub port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<ScopeKey>() == 8);

impl ScopeKey {
    /// The key as one word (its padding zero): LLVM zeroes the three bytes of padding of
    /// a field-by-field key with a call to `memset` in the XDP program.
    #[inline(always)]
    pub const fn new(group: u16, proto: u8, port: u16) -> Self {
        let word = if cfg!(target_endian = "little") {
            group as u64 | (port as u64) << 16 | (proto as u64) << 32
        } else {
            (group as u64) << 48 | (port as u64) << 32 | (proto as u64) << 24
        };
        // SAFETY: the same size and alignment, and every bit pattern is a valid key.
        unsafe { core::mem::transmute::<u64, ScopeKey>(word) }
    }
}
/// What a scope group has cells for, so that a packet whose port and protocol it does
/// not name costs no hash lookup: a port bit `port % 256` per protocol (a superset: a set
/// bit may find no cell) and a flag per protocol with a port-0 cell.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeHint {
    /// `HINT_*` bits: the group has a port-0 (other ports) cell of that protocol.
    pub other: u32,
    pub _pad: u32,
    pub tcp: [u64; 4],
    pub udp: [u64; 4],
}
const _: () = assert!(core::mem::size_of::<ScopeHint>() == 72);
/// See [`ScopeHint::other`].
pub const HINT_TCP: u32 = 1;
pub const HINT_UDP: u32 = 2;
pub const HINT_ICMP: u32 = 4;
/// Hints of the scope groups, by group: an array of `MAX_SCOPE_GROUP + 1` [`ScopeHint`]s.
pub const MAP_SCOPE_HINTS: &str = "IPG_SCOPE_HINT";

impl ScopeHint {
    /// The `other` bit of a protocol number; 0 for protocols scopes do not name.
    #[inline(always)]
    pub const fn other_bit(proto: u8) -> u32 {
        match proto {
            PROTO_TCP => HINT_TCP,
            PROTO_UDP => HINT_UDP,
            PROTO_ICMP => HINT_ICMP,
            _ => 0,
        }
    }

    /// Whether a cell for `proto`/`port` (port non-zero) may exist.
    #[inline(always)]
    pub fn may_have_port(&self, proto: u8, port: u16) -> bool {
        let bits = match proto {
            PROTO_TCP => &self.tcp,
            PROTO_UDP => &self.udp,
            _ => return false,
        };
        let p = port as usize;
        bits[(p >> 6) & 3] >> (p & 63) & 1 != 0
    }

    /// Notes a cell for `proto`/`port` (port 0: the other ports).
    pub fn add(&mut self, proto: u8, port: u16) {
        if port == 0 {
            self.other |= Self::other_bit(proto);
            return;
        }
        let bits = match proto {
            PROTO_TCP => &mut self.tcp,
            PROTO_UDP => &mut self.udp,
            _ => return,
        };
        let p = port as usize;
        bits[(p >> 6) & 3] |= 1 << (p & 63);
    }

    /// The union of two hints.
    pub fn union(mut self, other: &ScopeHint) -> ScopeHint {
        self.other |= other.other;
        for i in 0..4 {
            self.tcp[i] |= other.tcp[i];
            self.udp[i] |= other.udp[i];
        }
        self
    }
}

/// Verdicts of scope groups: [`ScopeKey`] → `LIST_*` code (no group bits).
pub const MAP_SCOPES: &str = "IPG_SCOPES";
/// Capacity of [`MAP_SCOPES`].
pub const SCOPES_CAPACITY: u32 = 1 << 16;

/// A compiled list entry: the daemon compiles list and rule precedence (whitelist wins)
/// into one verdict per prefix, and the tables hold its `list` (longest prefix wins).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListEntry {
    /// One of `LIST_*`.
    pub list: ListCode,
    /// Identifies the config entry or rule that produced this prefix (0 = none); the
    /// daemon's explanations use it, the kernel tables do not hold it.
    pub rule_id: u32,
    /// The prefix's scope group (0 = none, see [`SCOPE_SHIFT`]).
    pub scope: u32,
}
const _: () = assert!(core::mem::size_of::<ListEntry>() == 12);

impl ListEntry {
    /// An entry without a scope group.
    pub const fn new(list: ListCode, rule_id: u32) -> Self {
        Self {
            list,
            rule_id,
            scope: 0,
        }
    }

    /// The code the kernel tables hold: the list and the scope group.
    pub const fn code(&self) -> ListCode {
        self.list | (self.scope << SCOPE_SHIFT)
    }
}

/// Rate rules the kernel counts (the config's `[[rate_limit]]` entries).
pub const MAX_RATE_RULES: usize = 4;
/// Destination ports one rate rule can be scoped to.
pub const MAX_RULE_PORTS: usize = 8;

/// What a rate rule counts; `u32` for the same reason as [`ListCode`].
pub type RateKind = u32;
/// Unused rule slot.
pub const RATE_OFF: RateKind = 0;
/// TCP SYNs without ACK.
pub const RATE_SYN: RateKind = 1;
/// Packets.
pub const RATE_PACKETS: RateKind = 2;
/// Bytes (whole frame length).
pub const RATE_BYTES: RateKind = 3;

/// One rate rule as the XDP program sees it.
///
/// The kernel keeps, per source and per CPU, a count in fixed windows aligned to
/// multiples of `window_ns` of the monotonic clock (so all CPUs agree on the boundaries),
/// and signals the daemon each time its count grows by `step`. The daemon sums the CPUs
/// and decides: the kernel has no atomics here, so only the daemon sees exact totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateRuleDef {
    /// One of `RATE_*`.
    pub kind: RateKind,
    /// Signal every `step` units counted on one CPU within a window (>= 1).
    pub step: u32,
    pub window_ns: u64,
    /// Number of valid entries in `ports`; 0 = every packet counts.
    pub n_ports: u32,
    /// TCP/UDP destination ports, host byte order.
    pub ports: [u16; MAX_RULE_PORTS],
    /// The rule's count: a CPU whose own count passes it signals at once, so a source
    /// seen by one CPU is caught at exactly `limit + 1`.
    pub limit: u32,
}
const _: () = assert!(core::mem::size_of::<RateRuleDef>() == 40);

/// Record per-source drops (`SourceCounters::dropped`, `last_drop_ns`) of listed
/// sources. Costs a hash lookup per dropped packet, so the daemon sets it only when
/// something reads them (relative bans, drop records in the decision log).
pub const RATE_FLAG_TRACK_DROPS: u32 = 1;

/// The whole rate configuration, read with one map lookup per counted packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateConfig {
    /// Rules in use: `rules[..n_rules]`.
    pub n_rules: u32,
    /// `RATE_FLAG_*` bits.
    pub flags: u32,
    pub rules: [RateRuleDef; MAX_RATE_RULES],
}
const _: () = assert!(core::mem::size_of::<RateConfig>() == 168);

/// One CPU's window for one rule and one source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleWindow {
    /// `ktime / window_ns` of the current window (wrapping).
    pub window_idx: u32,
    /// Units counted in the current window (saturating).
    pub count: u32,
    /// Units counted in the window just before it (0 if that one saw nothing).
    pub prev: u32,
    /// Count at which the next event is sent.
    pub next_signal: u32,
}
const _: () = assert!(core::mem::size_of::<RuleWindow>() == 16);

/// Sent through [`MAP_EVENTS`] when a source's count for a rule reaches a signal step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEvent {
    /// The source, as in [`SourceKey`].
    pub addr: [u8; 16],
    /// Index of the rule in [`RateConfig::rules`].
    pub rule: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC at tick resolution) when the step was
    /// reached: the clock of the rate windows.
    pub ktime_ns: u64,
    /// `bpf_ktime_get_ns()` at the same moment (CLOCK_MONOTONIC, exact; read only when an
    /// event is sent), for measuring the daemon's reaction.
    pub sent_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateEvent>() == 40);

/// Key of the source map: IPv6 address, or IPv4 as the IPv4-mapped IPv6 address
/// `::ffff:a.b.c.d`, so both families share one bounded LRU map. Aligned to 8 so that the
/// XDP program builds and passes it as two 64-bit words instead of sixteen bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SourceKey>() == 16);

impl SourceKey {
    /// The key of an IPv4 source given in network byte order.
    #[inline(always)]
    pub const fn v4(addr: [u8; 4]) -> Self {
        Self {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
            ],
        }
    }

    /// The key of an IPv6 source given in network byte order.
    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self { addr }
    }

    /// [`SourceKey::v4`] from the address as it lies in memory (`u32::from_ne_bytes` of
    /// the network-order bytes): two word stores, where LLVM makes a byte array of the
    /// other (and a call to `memset` for its ten zeros in the XDP program).
    #[inline(always)]
    pub const fn v4_word(addr: u32) -> Self {
        let mut lo = [0u8; 8];
        lo[2] = 0xff;
        lo[3] = 0xff;
        let lo = u64::from_ne_bytes(lo)
            | ((addr as u64)
                << if cfg!(target_endian = "little") {
                    32
                } else {
                    0
                });
        Self::from_words(0, lo)
    }

    /// The key whose bytes are those of `hi` then `lo` as they lie in memory.
    #[inline(always)]
    pub const fn from_words(hi: u64, lo: u64) -> Self {
        // SAFETY: [u64; 2] and [u8; 16] have the same size and every bit pattern is valid.
        Self {
            addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([hi, lo]) },
        }
    }
}

/// Per-source counters (one copy per CPU; the daemon sums them). Traffic that passed as
/// unlisted feeds `packets`, `bytes`, `syns` and the rate windows; dropped packets of a
/// source that already has an entry only feed `dropped` (a banned source's traffic must not
/// count against its windows, but a ban measured from the last attempt needs to know it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    pub packets: u64,
    pub bytes: u64,
    /// TCP segments with SYN set and ACK clear (connection attempts).
    pub syns: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC at tick resolution) of the latest
    /// passed packet on this CPU.
    pub last_seen_ns: u64,
    /// Packets dropped by a graylist or blacklist entry.
    pub dropped: u64,
    /// The coarse clock of the latest such drop on this CPU.
    pub last_drop_ns: u64,
    /// Rate windows, indexed like [`RateConfig::rules`].
    pub windows: [RuleWindow; MAX_RATE_RULES],
}
const _: () = assert!(core::mem::size_of::<SourceCounters>() == 112);

impl SourceCounters {
    /// The CPUs' copies of one source summed: counts added, timestamps the latest. The
    /// rate windows are left empty: they only make sense per CPU (see `RateRuleDef`).
    pub fn total(per_cpu: &[SourceCounters]) -> SourceCounters {
        let mut t = SourceCounters::default();
        for c in per_cpu {
            t.packets += c.packets;
            t.bytes += c.bytes;
            t.syns += c.syns;
            t.last_seen_ns = t.last_seen_ns.max(c.last_seen_ns);
            t.dropped += c.dropped;
            t.last_drop_ns = t.last_drop_ns.max(c.last_drop_ns);
        }
        t
    }
}

/// A global counter pair (one copy per CPU; the daemon sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCounter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<StatCounter>() == 16);

/// Index into [`MAP_STATS`]. Every packet lands in exactly one of the verdict slots
/// (`PassUnlisted` .. `DropMalformed`, `DropRule`, `DropSynBudget` and the `WouldDrop*`
/// slots); `L4Truncated`, `EventLost` and `SourceInserted` are counted in addition.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stat {
    /// IP packet from a source on no list: passed and counted per source.
    PassUnlisted = 0,
    /// IP packet from a whitelisted source: passed.
    PassWhitelist = 1,
    /// IP packet from a graylisted source: dropped.
    DropGraylist = 2,
    /// IP packet from a blacklisted source: dropped.
    DropBlacklist = 3,
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed.
    PassNonIp = 4,
    /// Truncated or malformed before the source address, or behind a third VLAN tag:
    /// dropped (the stack would discard the first kind anyway; the second cannot be
    /// attributed to a source, so it is not let through).
    DropMalformed = 5,
    /// The source was known but the TCP header was cut short or the IPv6 extension
    /// chain was too long to reach it (the packet got its verdict from its source).
    L4Truncated = 6,
    /// IP packet whose source an ordered `deny` rule matched: dropped.
    DropRule = 7,
    /// A rate event the ring buffer had no room for (counted in addition; the next step
    /// of the same source signals again).
    EventLost = 8,
    /// A source entered the source map (counted in addition). The map only loses entries
    /// by LRU eviction when full, so `min(this, capacity)` is its fill.
    SourceInserted = 9,
    /// TCP SYN from a source not known good, past the SYN budget: dropped.
    DropSynBudget = 10,
    /// IP packet from a monitored graylist entry ([`LIST_MONITOR_GRAYLIST`]): passed.
    WouldDropGraylist = 11,
    /// IP packet from a monitored blacklist entry ([`LIST_MONITOR_BLACKLIST`]): passed.
    WouldDropBlacklist = 12,
    /// IP packet whose source a monitored `deny` rule matched ([`LIST_MONITOR_RULE`]): passed.
    WouldDropRule = 13,
}

/// Number of slots in [`MAP_STATS`].
pub const STAT_COUNT: u32 = 14;

impl Stat {
    /// All slots, in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::PassUnlisted,
        Stat::PassWhitelist,
        Stat::DropGraylist,
        Stat::DropBlacklist,
        Stat::PassNonIp,
        Stat::DropMalformed,
        Stat::L4Truncated,
        Stat::DropRule,
        Stat::EventLost,
        Stat::SourceInserted,
        Stat::DropSynBudget,
        Stat::WouldDropGraylist,
        Stat::WouldDropBlacklist,
        Stat::WouldDropRule,
    ];
}
