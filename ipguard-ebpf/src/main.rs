//! ipguard's XDP program: parse → one LPM lookup → count → verdict.
//!
//! The daemon writes the *result* of list precedence into one LPM trie per address family
//! (see `ipguard_common::ListEntry`), so a packet costs exactly one trie lookup. Only
//! passed, unlisted traffic is counted per source: dropped packets must not feed a banned
//! source's rate windows, and whitelisted sources are never rate-limited.
//!
//! The program never returns `XDP_ABORTED`: anything it cannot parse is passed to the
//! kernel stack (which discards what is really broken) and counted.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, LpmTrie, LruPerCpuHashMap, PerCpuArray},
    programs::XdpContext,
};
use ipguard_common::{
    ListEntry, SourceCounters, SourceKey, Stat, StatCounter, DEFAULT_LPM_CAPACITY,
    DEFAULT_SOURCES_CAPACITY, LIST_BLACKLIST, LIST_GRAYLIST, LIST_WHITELIST, STAT_COUNT, V4_BITS,
    V6_BITS,
};
use parse::{Frame, L4};

// Map names are the statics' names and must equal ipguard_common::MAP_*; the daemon's
// loader checks that every expected map exists.
#[map]
static IPG_LPM_V4: LpmTrie<[u8; 4], ListEntry> = LpmTrie::with_max_entries(DEFAULT_LPM_CAPACITY, 0);

#[map]
static IPG_LPM_V6: LpmTrie<[u8; 16], ListEntry> =
    LpmTrie::with_max_entries(DEFAULT_LPM_CAPACITY, 0);

#[map]
static IPG_SOURCES: LruPerCpuHashMap<SourceKey, SourceCounters> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_SOURCES_CAPACITY, 0);

#[map]
static IPG_STATS: PerCpuArray<StatCounter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[xdp]
pub fn ipguard(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match parse::frame(&ctx) {
        Frame::NonIp => pass(Stat::PassNonIp, len),
        Frame::Malformed => pass(Stat::PassMalformed, len),
        Frame::V4 { src, l4 } => {
            let entry = IPG_LPM_V4.get(Key::new(V4_BITS, src));
            verdict(entry, SourceKey::v4(src), l4, len)
        }
        Frame::V6 { src, l4 } => {
            let entry = IPG_LPM_V6.get(Key::new(V6_BITS, src));
            verdict(entry, SourceKey::v6(src), l4, len)
        }
    }
}

#[inline(always)]
fn verdict(entry: Option<&ListEntry>, source: SourceKey, l4: L4, len: u64) -> u32 {
    if let L4::Truncated = l4 {
        count(Stat::L4Truncated, len);
    }
    match entry.map(|e| e.list) {
        Some(LIST_WHITELIST) => pass(Stat::PassWhitelist, len),
        Some(LIST_BLACKLIST) => drop(Stat::DropBlacklist, len),
        Some(LIST_GRAYLIST) => drop(Stat::DropGraylist, len),
        // No entry, or a list code this program does not know: the source is unlisted.
        _ => {
            count_source(&source, len, matches!(l4, L4::Syn));
            pass(Stat::PassUnlisted, len)
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

#[inline(always)]
fn count_source(source: &SourceKey, len: u64, syn: bool) {
    // SAFETY: reads the monotonic clock; no memory is touched.
    let now = unsafe { bpf_ktime_get_ns() };
    let syn = syn as u64;
    match IPG_SOURCES.get_ptr_mut(source) {
        // SAFETY: this CPU's copy of the value; LRU eviction of a live element only
        // recycles it after an RCU grace period, which cannot end inside this program.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
            (*c).syns += syn;
            (*c).last_seen_ns = now;
        },
        None => {
            let first = SourceCounters {
                packets: 1,
                bytes: len,
                syns: syn,
                last_seen_ns: now,
            };
            // BPF_ANY: if another CPU created the element meanwhile, the kernel updates
            // this CPU's copy in place, so no update is lost. A failed insert (no memory)
            // loses one packet's count, never the verdict.
            let _ = IPG_SOURCES.insert(source, first, 0);
        }
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
