//! Hand-built Ethernet frames, byte by byte, so a test controls every field, including
//! the broken ones (truncation, bad lengths) that packet libraries refuse to produce.
//! Checksums are left zero: XDP runs before anything verifies them.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
/// The pre-standard QinQ tag.
pub const ETH_P_QINQ_9100: u16 = 0x9100;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_DEST: u8 = 60;

/// Ethernet header with optional VLAN tags (outer first), then `ethertype`.
pub fn eth(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (with `options`, a multiple of 4 bytes) carrying `payload`.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = (20 + options.len()) / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    h.extend_from_slice(payload);
    h
}

/// IPv6 header; `next` is the first next-header value, `rest` the extension headers and payload.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(rest);
    h
}

/// A generic IPv6 extension header (hop-by-hop, routing, destination options) of
/// `8 * (len8 + 1)` bytes.
pub fn ext(next: u8, len8: u8) -> Vec<u8> {
    let mut h = vec![next, len8];
    h.resize(8 * (len8 as usize + 1), 0);
    h
}

/// An IPv6 fragment header; `offset8` in 8-byte units.
pub fn frag6(next: u8, offset8: u16, more: bool) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset8 << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1]);
    h
}

/// A 20-byte TCP header with the given flags.
pub fn tcp(flags: u8) -> Vec<u8> {
    let mut h = vec![
        0xc3, 0x50, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ];
    h.truncate(20);
    h
}

/// An 8-byte UDP header.
pub fn udp() -> Vec<u8> {
    vec![0xc3, 0x50, 0, 53, 0, 8, 0, 0]
}

/// A full Ethernet + IPv4 frame.
pub fn v4_frame(tags: &[u16], src: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(tags, ETH_P_IP);
    f.extend(ipv4(
        src.parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        proto,
        &[],
        0,
        payload,
    ));
    f
}

/// A full Ethernet + IPv6 frame.
pub fn v6_frame(tags: &[u16], src: &str, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut f = eth(tags, ETH_P_IPV6);
    f.extend(ipv6(
        src.parse().unwrap(),
        "2001:db8:1::1".parse().unwrap(),
        next,
        rest,
    ));
    f
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = eth(&[], ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 192, 0, 2, 2]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 0, 2, 1]);
    f
}
