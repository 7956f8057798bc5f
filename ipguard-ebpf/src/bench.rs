//! Programs of the benchmark (`cargo xtask bench`), never loaded by the daemon.
//!
//! - `trivial_pass` / `trivial_drop`: baselines, the cost of the harness and of a program that
//!   does nothing (`trivial_drop` counts what it drops per CPU, so the veth testbed can tell
//!   how many packets it handled); `touch_drop` also reads the IPv4 source first.
//! - `live_tx`: the traffic generator. Run through `BPF_PROG_TEST_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` on the sender's veth, it gives every frame a new IPv4
//!   source address (from a per-CPU counter, within a configured range) and transmits it.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// Per CPU: [0] packets `trivial_drop` or `touch_drop` dropped, [1] the XOR of the source
/// addresses `touch_drop` read (so the read cannot be optimised away).
#[map]
static BENCH_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// `live_tx`'s configuration: [0] the first source address (host order), [1] a mask (a
/// power of two minus one): the source of the n-th frame is `base + (n & mask)`.
#[map]
static BENCH_TX_CFG: Array<u32> = Array::with_max_entries(2, 0);

/// `live_tx`'s frame counter, per CPU (index 0).
#[map]
static BENCH_TX_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[xdp]
pub fn trivial_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn trivial_drop(_ctx: XdpContext) -> u32 {
    if let Some(c) = BENCH_DROPPED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP does not preempt itself.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// Drops like `trivial_drop`, after reading the IPv4 source address: the least any filter
/// pays, the first touch of the packet's data (on the veth testbed, a cache line the
/// sender's CPU wrote).
#[xdp]
pub fn touch_drop(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + ETH_HLEN + IPV4_HLEN <= ctx.data_end() {
        // SAFETY: the Ethernet header and a minimal IPv4 header lie within [data, data_end).
        let ip = unsafe { &*((start + ETH_HLEN) as *const [u8; IPV4_HLEN]) };
        let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
        if let Some(x) = BENCH_DROPPED.get_ptr_mut(1) {
            // SAFETY: this CPU's slot.
            unsafe { *x ^= src as u64 };
        }
    }
    if let Some(c) = BENCH_DROPPED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP does not preempt itself.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn live_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_HLEN + IPV4_HLEN > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the Ethernet header and a minimal IPv4 header lie within [data, data_end).
    let eth = unsafe { &*(start as *const [u8; ETH_HLEN]) };
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: as above.
    let ip = unsafe { &mut *((start + ETH_HLEN) as *mut [u8; IPV4_HLEN]) };
    if ip[0] != 0x45 {
        // Only the option-less header the bench builds.
        return xdp_action::XDP_ABORTED;
    }
    let (Some(base), Some(mask)) = (BENCH_TX_CFG.get(0), BENCH_TX_CFG.get(1)) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(counter) = BENCH_TX_COUNT.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot; XDP does not preempt itself.
    let n = unsafe {
        let n = *counter;
        *counter = n + 1;
        n
    };
    let src = base.wrapping_add(n as u32 & *mask);
    let old = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    // The TCP/UDP checksum covers the source address (pseudo-header): patch it for the
    // change from the frame's previous source, which it was right for (RFC 1624), so that
    // the flood's segments are valid for the receiver's stack like a real flood's.
    let l4 = match ip[9] {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        _ => None,
    };
    if let Some(at) = l4 {
        let off = start + ETH_HLEN + IPV4_HLEN + at;
        if off + 2 <= end {
            // SAFETY: the two checksum bytes lie within [data, data_end) (checked).
            let field = unsafe { &mut *(off as *mut [u8; 2]) };
            let hc = u16::from_be_bytes(*field);
            // UDP checksum 0 means none: leave it.
            if !(ip[9] == IPPROTO_UDP && hc == 0) {
                let mut sum = u32::from(!hc)
                    + u32::from(!(old >> 16) as u16)
                    + u32::from(!(old as u16))
                    + (src >> 16)
                    + (src & 0xffff);
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                let mut csum = !(sum as u16);
                if ip[9] == IPPROTO_UDP && csum == 0 {
                    csum = 0xffff;
                }
                *field = csum.to_be_bytes();
            }
        }
    }
    // The page pool recycles frames without restoring them: recompute the whole checksum
    // rather than patching the previous one, so the receiver's stack accepts the header.
    ip[10] = 0;
    ip[11] = 0;
    let mut sum = 0u32;
    for i in 0..IPV4_HLEN / 2 {
        sum += u16::from_be_bytes([ip[2 * i], ip[2 * i + 1]]) as u32;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let csum = !(sum as u16);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    xdp_action::XDP_TX
}

/// Dual-licensed so the kernel lets the programs call GPL-only helpers.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
