//! Boundary types shared by the XDP program (`ipguard-ebpf`) and the daemon (`ipguard-user`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and a compile-time size check,
//! because the kernel copies these structs byte for byte between the two sides.
//! Addresses are stored as network-order byte arrays: the LPM trie matches prefixes
//! on the key's bytes in memory order, so they must be big-endian.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

#[cfg(feature = "user")]
pub mod user;

/// Name of the XDP program (the function name in `ipguard-ebpf`).
pub const PROGRAM_NAME: &str = "ipguard";

/// LPM trie of IPv4 prefixes: `Key<[u8; 4]>` → [`ListEntry`].
pub const MAP_LPM_V4: &str = "IPG_LPM_V4";
/// LPM trie of IPv6 prefixes: `Key<[u8; 16]>` → [`ListEntry`].
pub const MAP_LPM_V6: &str = "IPG_LPM_V6";
/// Per-CPU LRU hash of unlisted sources that passed: [`SourceKey`] → [`SourceCounters`].
pub const MAP_SOURCES: &str = "IPG_SOURCES";
/// Per-CPU array of global counters indexed by [`Stat`]: → [`StatCounter`].
pub const MAP_STATS: &str = "IPG_STATS";
/// Array of one [`RateConfig`]: the rate rules the XDP program counts against.
pub const MAP_RATE_CONFIG: &str = "IPG_RATE_CFG";
/// Ring buffer of [`RateEvent`]s: a source's count for a rule crossed a signal step.
pub const MAP_EVENTS: &str = "IPG_EVENTS";
/// Size of the event ring buffer in bytes (a power of two, multiple of the page size):
/// 16 Ki events of 32 bytes plus headers.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Capacity of the source map when the config does not say (1 Mi entries).
pub const DEFAULT_SOURCES_CAPACITY: u32 = 1 << 20;
/// Capacity of each LPM trie when the config does not say. Tries are not preallocated,
/// so a generous bound costs nothing until it is used.
pub const DEFAULT_LPM_CAPACITY: u32 = 1 << 21;

/// Length of an IPv4 prefix key's data in bits.
pub const V4_BITS: u32 = 32;
/// Length of an IPv6 prefix key's data in bits.
pub const V6_BITS: u32 = 128;

/// Which list decided a trie entry. A `u32` rather than a Rust enum: the kernel may hand
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

/// Value of an LPM trie entry: the daemon writes the *result* of list precedence
/// (whitelist wins), so the data path needs one lookup per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListEntry {
    /// One of `LIST_*`.
    pub list: ListCode,
    /// Identifies the config entry or rule that produced this prefix (0 = none);
    /// lets the daemon explain a verdict without a second lookup.
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<ListEntry>() == 8);

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
    /// `bpf_ktime_get_ns()` when the step was reached.
    pub ktime_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateEvent>() == 32);

/// Key of the source map: IPv6 address, or IPv4 as the IPv4-mapped IPv6 address
/// `::ffff:a.b.c.d`, so both families share one bounded LRU map.
#[repr(C)]
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
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the latest passed packet on this CPU.
    pub last_seen_ns: u64,
    /// Packets dropped by a graylist or blacklist entry.
    pub dropped: u64,
    /// `bpf_ktime_get_ns()` of the latest such drop on this CPU.
    pub last_drop_ns: u64,
    /// Rate windows, indexed like [`RateConfig::rules`].
    pub windows: [RuleWindow; MAX_RATE_RULES],
}
const _: () = assert!(core::mem::size_of::<SourceCounters>() == 112);

/// A global counter pair (one copy per CPU; the daemon sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCounter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<StatCounter>() == 16);

/// Index into [`MAP_STATS`]. Every packet lands in exactly one of the verdict slots
/// (`PassUnlisted` .. `PassMalformed`); `L4Truncated` is counted in addition.
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
    /// Truncated or malformed before the source address: passed, as the stack will
    /// discard it anyway and XDP cannot attribute it to a source.
    PassMalformed = 5,
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
}

/// Number of slots in [`MAP_STATS`].
pub const STAT_COUNT: u32 = 10;

impl Stat {
    /// All slots, in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::PassUnlisted,
        Stat::PassWhitelist,
        Stat::DropGraylist,
        Stat::DropBlacklist,
        Stat::PassNonIp,
        Stat::PassMalformed,
        Stat::L4Truncated,
        Stat::DropRule,
        Stat::EventLost,
        Stat::SourceInserted,
    ];
}
