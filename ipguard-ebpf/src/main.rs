//! ipguard's XDP program: parse → table lookup → count → verdict.
//!
//! The daemon compiles list and rule precedence into one verdict per prefix (longest
//! prefix wins) and lays them out so that a lookup costs the same whatever the list size:
//! IPv4 is one array load by /24, plus one hash lookup only in the /24s that hold longer
//! prefixes; IPv6 is one array load by /24 (a bit per /24 that holds prefixes of /32 or
//! longer), then only there one hash lookup by /32, plus one per prefix length present under
//! that /32 (see `ipguard_common::V6Anchor`). Only passed, unlisted traffic (and, in monitor
//! mode, what would have been dropped) is counted per source and against the rate rules:
//! dropped packets must not feed a banned source's rate windows, and whitelisted sources
//! are never rate-limited. Rate windows are counted here, per CPU; when a source's count
//! grows by a rule's `step`, an event on a ring buffer wakes the daemon, which sums the
//! CPUs and decides (see `ipguard_common::RateRuleDef`). With a SYN budget set, a SYN
//! from a source that never sent anything else passes only within the budget (see
//! `ipguard_common::FloodConfig`).
//!
//! The program never returns `XDP_ABORTED`. Non-IP frames (ARP, LLDP) pass; a frame that
//! claims IP but is cut short or invalid before its source address (which the stack
//! would discard anyway), or that hides behind a third VLAN tag, is dropped and counted:
//! fail-closed, so that no listed source gets through by sending frames hard to read.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_map_lookup_percpu_elem},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use ipguard_common::{
    lookup, FloodConfig, FloodSlot, ListCode, RateConfig, RateEvent, RateRuleDef, ScopeHint,
    ScopeKey, SourceCounters, SourceKey, Stat, StatCounter, Tbl24Elem, Tbl24Slot, V6Anchor,
    V6LongKey, CODE_LIST, DEFAULT_LPM_CAPACITY, DEFAULT_SOURCES_CAPACITY, EVENTS_BYTES,
    FLOOD_SLOT_NS, LIST_BLACKLIST, LIST_GRAYLIST, LIST_MONITOR_BLACKLIST, LIST_MONITOR_GRAYLIST,
    LIST_MONITOR_RULE, LIST_NONE, LIST_RULE_DENY, LIST_WHITELIST, MAX_FLOOD_CPUS, MAX_RATE_RULES,
    MAX_RULE_PORTS, MAX_SCOPE_GROUP, RATE_BYTES, RATE_FLAG_TRACK_DROPS, RATE_PACKETS, RATE_SYN,
    SCOPES_CAPACITY, SCOPE_SHIFT, STAT_COUNT, V4_TBL24_ELEMS, V6_BITS, V6_REGION_WORDS,
};
use parse::{Frame, L4};

// Map names are the statics' names and must equal ipguard_common::MAP_*; the daemon's
// loader checks that every expected map exists.
#[map]
static IPG_V4_TBL24: Array<Tbl24Elem> = Array::with_max_entries(V4_TBL24_ELEMS, BPF_F_MMAPABLE);

#[map]
static IPG_V4_HOSTS: HashMap<[u8; 4], ListCode> =
    HashMap::with_max_entries(DEFAULT_LPM_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static IPG_V6_REGIONS: Array<u64> = Array::with_max_entries(V6_REGION_WORDS, BPF_F_MMAPABLE);

#[map]
static IPG_V6_ANCHORS: HashMap<[u8; 4], V6Anchor> =
    HashMap::with_max_entries(DEFAULT_LPM_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static IPG_V6_LONG: HashMap<V6LongKey, ListCode> =
    HashMap::with_max_entries(DEFAULT_LPM_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static IPG_V6_LPM: LpmTrie<[u8; 16], ListCode> =
    LpmTrie::with_max_entries(DEFAULT_LPM_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static IPG_SCOPES: HashMap<ScopeKey, ListCode> =
    HashMap::with_max_entries(SCOPES_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static IPG_SCOPE_HINT: Array<ScopeHint> = Array::with_max_entries(MAX_SCOPE_GROUP + 1, 0);

#[map]
static IPG_TABLE_CFG: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static IPG_SOURCES: LruPerCpuHashMap<SourceKey, SourceCounters> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_SOURCES_CAPACITY, 0);

#[map]
static IPG_STATS: PerCpuArray<StatCounter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map]
static IPG_RATE_CFG: Array<RateConfig> = Array::with_max_entries(1, 0);

#[map]
static IPG_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
static IPG_FLOOD_CFG: Array<FloodConfig> = Array::with_max_entries(1, 0);

#[map]
static IPG_FLOOD_STATE: PerCpuArray<FloodSlot> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn ipguard(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match parse::frame(&ctx) {
        Frame::NonIp => pass(Stat::PassNonIp, len),
        Frame::Malformed => drop(Stat::DropMalformed, len),
        Frame::V4 { src, l4 } => verdict(
            lookup::lookup_v4(&Maps, src.to_ne_bytes()),
            SourceKey::v4_word(src),
            l4,
            len,
        ),
        Frame::V6 { src, l4 } => verdict(
            lookup::lookup_v6_words(&Maps, u64::from_be(src[0]), u64::from_be(src[1])),
            SourceKey::from_words(src[0], src[1]),
            l4,
            len,
        ),
    }
}

/// The list tables as [`lookup::Tables`]: the lookup itself is `ipguard_common::lookup`,
/// shared with the daemon's in-memory tables and tested on the host.
struct Maps;

impl lookup::Tables for Maps {
    #[inline(always)]
    fn slot(&self, s24: u32) -> Tbl24Slot {
        match IPG_V4_TBL24.get(s24 / 4) {
            Some(elem) => elem[(s24 % 4) as usize],
            None => 0,
        }
    }

    #[inline(always)]
    fn host(&self, addr: &[u8; 4]) -> Option<ListCode> {
        // SAFETY: the value is copied out at once; the daemon replaces entries whole.
        unsafe { IPG_V4_HOSTS.get(addr) }.copied()
    }

    #[inline(always)]
    fn region_word(&self, w: u32) -> u64 {
        IPG_V6_REGIONS.get(w).copied().unwrap_or(u64::MAX)
    }

    #[inline(always)]
    fn anchor(&self, top: &[u8; 4]) -> Option<V6Anchor> {
        // SAFETY: copied out at once; the daemon replaces anchors whole.
        IPG_V6_ANCHORS.get_ptr(top).map(|a| unsafe { *a })
    }

    #[inline(always)]
    fn long(&self, key: &V6LongKey) -> Option<ListCode> {
        // SAFETY: copied out at once.
        unsafe { IPG_V6_LONG.get(key) }.copied()
    }

    #[inline(always)]
    fn flags(&self) -> u32 {
        IPG_TABLE_CFG.get(0).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn lpm(&self, addr: &[u8; 16]) -> ListCode {
        IPG_V6_LPM
            .get(Key::new(V6_BITS, *addr))
            .copied()
            .unwrap_or(LIST_NONE)
    }

    #[inline(always)]
    fn scope(&self, key: &ScopeKey) -> Option<ListCode> {
        // SAFETY: copied out at once.
        unsafe { IPG_SCOPES.get(key) }.copied()
    }

    #[inline(always)]
    fn hint(&self, group: u32) -> Option<ScopeHint> {
        IPG_SCOPE_HINT.get(group).copied()
    }
}

#[inline(always)]
fn verdict(code: ListCode, source: SourceKey, l4: L4, len: u64) -> u32 {
    if l4.truncated {
        count(Stat::L4Truncated, len);
    }
    // A prefix with port- or protocol-scoped verdicts (a scope group) is decided by the
    // packet's protocol and port; one whose transport header cannot be read is dropped
    // rather than given the verdict of no port (fail-closed; the stack would not deliver
    // a cut TCP or UDP header anyway). Every other prefix pays one shift and compare.
    let code = if code >> SCOPE_SHIFT != 0 {
        if l4.truncated {
            return drop(Stat::DropMalformed, len);
        }
        lookup::scoped(&Maps, code, l4.proto, l4.dport)
    } else {
        code
    };
    match code & CODE_LIST {
        LIST_WHITELIST => pass(Stat::PassWhitelist, len),
        LIST_BLACKLIST => {
            note_drop(&source);
            drop(Stat::DropBlacklist, len)
        }
        LIST_GRAYLIST => {
            note_drop(&source);
            drop(Stat::DropGraylist, len)
        }
        LIST_RULE_DENY => drop(Stat::DropRule, len),
        // LIST_NONE (no entry), an allow rule, a monitored entry, or a code this program
        // does not know: pass, and count against the rate rules.
        _ => {
            // Monitor mode: what would be dropped passes like an unlisted source (counted
            // per source and against the rate rules: in enforce mode it would not reach
            // the application either way), in its would-drop slot. A property of the table
            // entry: no lookup more, and one count_source for every passing code (the
            // program stays small enough for LLVM to keep it in one function).
            let stat = match code {
                LIST_MONITOR_GRAYLIST => Stat::WouldDropGraylist,
                LIST_MONITOR_BLACKLIST => Stat::WouldDropBlacklist,
                LIST_MONITOR_RULE => Stat::WouldDropRule,
                _ => Stat::PassUnlisted,
            };
            if count_source(&source, len, l4) {
                pass(stat, len)
            } else {
                drop(Stat::DropSynBudget, len)
            }
        }
    }
}

#[inline(always)]
fn pass(stat: Stat, len: u64) -> u32 {
    count(stat, len);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(stat: Stat, len: u64) -> u32 {
    count(stat, len);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn count(stat: Stat, len: u64) {
    if let Some(c) = IPG_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and XDP does not preempt itself.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Records a dropped packet of a banned source that already has an entry (no insert: a
/// flood of dropped spoofed sources must not churn the map).
#[inline(always)]
fn note_drop(source: &SourceKey) {
    let tracked = IPG_RATE_CFG
        .get(0)
        .is_some_and(|r| r.flags & RATE_FLAG_TRACK_DROPS != 0);
    if !tracked {
        return;
    }
    if let Some(c) = IPG_SOURCES.get_ptr_mut(source) {
        let now = clock();
        // SAFETY: this CPU's copy of the value (see count_source).
        unsafe {
            (*c).dropped += 1;
            (*c).last_drop_ns = now;
        }
    }
}

/// CLOCK_MONOTONIC at tick resolution (a few ms): reading a variable instead of the TSC
/// (`bpf_ktime_get_ns` was a sixth of the pass path). Rate windows are whole seconds or
/// fractions of them, `last_seen` is for people, and the daemon compares both with
/// CLOCK_MONOTONIC, which the coarse clock never runs ahead of.
#[inline(always)]
fn clock() -> u64 {
    // SAFETY: reads a kernel variable; no memory of ours is touched.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Counts a passed packet of an unlisted source; `false` if it is a SYN past the SYN
/// budget instead (not counted, not inserted: see [`FloodConfig`]).
#[inline(always)]
fn count_source(source: &SourceKey, len: u64, l4: L4) -> bool {
    let now = clock();
    let rates = IPG_RATE_CFG.get(0);
    match IPG_SOURCES.get_ptr_mut(source) {
        // SAFETY: this CPU's copy of the value; LRU eviction of a live element only
        // recycles it after an RCU grace period, which cannot end inside this program.
        Some(c) => {
            let c = unsafe { &mut *c };
            // Known good on this CPU: it sent something else than SYNs.
            if l4.syn && c.packets == c.syns && !admit_syn(source, true, now) {
                return false;
            }
            update(c, source, rates, len, l4, now);
        }
        None => {
            if l4.syn && !admit_syn(source, false, now) {
                return false;
            }
            let mut first = SourceCounters::default();
            update(&mut first, source, rates, len, l4, now);
            // BPF_ANY: if another CPU created the element meanwhile, the kernel updates
            // this CPU's copy in place, so no update is lost. A failed insert (no memory)
            // loses one packet's count, never the verdict.
            if IPG_SOURCES.insert(source, first, 0).is_ok() {
                count(Stat::SourceInserted, 0);
            }
        }
    }
    true
}

/// Whether a SYN of a source not known good on this CPU passes: always without a budget;
/// with one, if another CPU knows the source as good (`known` says whether the source has
/// an element at all), or if this CPU's budget for the current slot has room.
#[inline(always)]
fn admit_syn(source: &SourceKey, known: bool, now: u64) -> bool {
    let Some(cfg) = IPG_FLOOD_CFG.get(0) else {
        return true;
    };
    if cfg.syns_per_slot == 0 {
        return true;
    }
    if known && known_elsewhere(source, cfg.cpus) {
        return true;
    }
    let Some(b) = IPG_FLOOD_STATE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot; XDP does not preempt itself.
    let b = unsafe { &mut *b };
    let slot = now / FLOOD_SLOT_NS;
    if b.slot != slot {
        b.slot = slot;
        b.used = 0;
    }
    if b.used >= cfg.syns_per_slot {
        return false;
    }
    b.used += 1;
    true
}

/// Whether any CPU's copy of `source` sent something else than SYNs.
#[inline(always)]
fn known_elsewhere(source: &SourceKey, cpus: u32) -> bool {
    let map = core::ptr::addr_of!(IPG_SOURCES) as *mut core::ffi::c_void;
    for cpu in 0..MAX_FLOOD_CPUS {
        if cpu >= cpus {
            break;
        }
        // SAFETY: the map pointer is the map's definition (aya maps are
        // `repr(transparent)` over it); the key is a live reference; the value is only
        // read, and stays valid for the program's run (RCU).
        let v = unsafe { bpf_map_lookup_percpu_elem(map, (source as *const SourceKey).cast(), cpu) }
            as *const SourceCounters;
        if !v.is_null() {
            // SAFETY: see above.
            let c = unsafe { &*v };
            if c.packets > c.syns {
                return true;
            }
        }
    }
    false
}

#[inline(always)]
fn update(
    c: &mut SourceCounters,
    source: &SourceKey,
    rates: Option<&RateConfig>,
    len: u64,
    l4: L4,
    now: u64,
) {
    c.packets += 1;
    c.bytes += len;
    c.syns += l4.syn as u64;
    c.last_seen_ns = now;
    let Some(rates) = rates else {
        return;
    };
    for i in 0..MAX_RATE_RULES {
        if i as u32 >= rates.n_rules {
            break;
        }
        let rule = &rates.rules[i];
        let amount = match rule.kind {
            RATE_SYN => l4.syn as u32,
            RATE_PACKETS => 1,
            RATE_BYTES => len as u32,
            _ => 0,
        };
        if amount == 0 || rule.window_ns == 0 || !port_matches(rule, l4.dport) {
            continue;
        }
        let idx = (now / rule.window_ns) as u32;
        let w = &mut c.windows[i];
        if w.window_idx != idx || w.next_signal == 0 {
            // Windows are aligned to multiples of window_ns so that every CPU agrees on
            // where they start; `prev` feeds the daemon's sliding estimate.
            w.prev = if idx == w.window_idx.wrapping_add(1) {
                w.count
            } else {
                0
            };
            w.count = 0;
            w.window_idx = idx;
            w.next_signal = next_signal(0, rule);
        }
        w.count = w.count.saturating_add(amount);
        if w.count >= w.next_signal {
            // Past the limit this CPU has said all it must for this window: a source the
            // daemon does not ban (protected, exempt, a full table) must not keep the ring
            // buffer busy with one event per step and crowd out other sources' signals.
            w.next_signal = if w.count > rule.limit {
                u32::MAX
            } else {
                next_signal(w.count, rule)
            };
            signal(source, i as u32, now);
        }
    }
}

/// The count at which to signal next: one step on, but never past `limit + 1`, the
/// count at which this CPU alone proves a violation.
#[inline(always)]
fn next_signal(count: u32, rule: &RateRuleDef) -> u32 {
    let next = count.saturating_add(rule.step);
    if count <= rule.limit && next > rule.limit.saturating_add(1) {
        rule.limit.saturating_add(1)
    } else {
        next
    }
}

#[inline(always)]
fn port_matches(rule: &RateRuleDef, dport: u16) -> bool {
    if rule.n_ports == 0 {
        return true;
    }
    for j in 0..MAX_RULE_PORTS {
        if (j as u32) < rule.n_ports && rule.ports[j] == dport {
            return true;
        }
    }
    false
}

#[inline(always)]
fn signal(source: &SourceKey, rule: u32, now: u64) {
    let event = RateEvent {
        addr: source.addr,
        rule,
        _pad: 0,
        ktime_ns: now,
        // SAFETY: reads the monotonic clock; no memory of ours is touched.
        sent_ns: unsafe { bpf_ktime_get_ns() },
    };
    if IPG_EVENTS.output::<RateEvent>(&event, 0).is_err() {
        count(Stat::EventLost, 0);
    }
}

/// Dual-licensed so the kernel lets the program call GPL-only helpers.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
