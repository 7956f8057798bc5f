//! Header parsing with a bounds check before every read, as the verifier requires.
//! Fields are read as byte arrays: packet data has no alignment guarantee.

use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// The pre-standard QinQ tag some switches still use.
const ETH_P_QINQ_9100: u16 = 0x9100;
const VLAN_HLEN: usize = 4;

use ipguard_common::{PROTO_ICMP, PROTO_ICMPV6};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers walked before giving up on finding TCP. Real traffic has one or two;
/// the bound keeps the verifier's state space small.
const MAX_IPV6_EXT: usize = 6;

/// What the packet's transport layer told us.
#[derive(Clone, Copy)]
pub struct L4 {
    /// TCP with SYN set and ACK clear: a connection attempt.
    pub syn: bool,
    /// TCP/UDP header cut short, or the IPv6 extension chain too long to reach it.
    pub truncated: bool,
    /// TCP/UDP destination port (host order); 0 when there is none or it was not reached.
    pub dport: u16,
    /// IP protocol of the transport header (ICMPv6 as ICMP, see `PROTO_ICMP`); 0 when
    /// the IPv6 extension chain was too long to reach it.
    pub proto: u8,
}

impl L4 {
    /// No transport header we look at: ICMP, a later fragment, other protocols.
    #[inline(always)]
    fn other(proto: u8) -> L4 {
        L4 {
            syn: false,
            truncated: false,
            dport: 0,
            proto: if proto == PROTO_ICMPV6 {
                PROTO_ICMP
            } else {
                proto
            },
        }
    }

    /// The transport header of `proto` is cut short.
    #[inline(always)]
    fn truncated(proto: u8) -> L4 {
        L4 {
            syn: false,
            truncated: true,
            dport: 0,
            proto,
        }
    }
}

pub enum Frame {
    NonIp,
    /// Cut short or invalid before the source address could be read (the stack would
    /// discard it), or behind more VLAN tags than are parsed: dropped, so that no frame
    /// from a listed source gets through by being hard to read.
    Malformed,
    V4 {
        /// As it lies in the packet (`u32::from_ne_bytes` of the network-order bytes).
        src: u32,
        l4: L4,
    },
    V6 {
        /// The address's two halves as they lie in the packet (`u64::from_ne_bytes` of the
        /// network-order bytes).
        src: [u64; 2],
        l4: L4,
    },
}

/// A pointer to `N` bytes at `offset`, or `None` if the frame is shorter.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<&[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return None;
    }
    // SAFETY: the range [start+offset, start+offset+N) was checked against data_end.
    Some(unsafe { &*((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: &[u8; 2]) -> u16 {
    u16::from_be_bytes(*b)
}

#[inline(always)]
pub fn frame(ctx: &XdpContext) -> Frame {
    let Some(eth_type) = bytes::<2>(ctx, 12) else {
        return Frame::Malformed;
    };
    let mut proto = be16(eth_type);
    let mut off = ETH_HLEN;
    // Up to two tags: 802.1Q, or an 802.1ad (or 0x9100) outer + 802.1Q inner (QinQ).
    if is_vlan(proto) {
        let Some(tag) = bytes::<4>(ctx, off) else {
            return Frame::Malformed;
        };
        proto = u16::from_be_bytes([tag[2], tag[3]]);
        off += VLAN_HLEN;
        if is_vlan(proto) {
            let Some(tag) = bytes::<4>(ctx, off) else {
                return Frame::Malformed;
            };
            proto = u16::from_be_bytes([tag[2], tag[3]]);
            off += VLAN_HLEN;
            if is_vlan(proto) {
                // A third tag: what it carries is not read, so it is not let through.
                return Frame::Malformed;
            }
        }
    }
    match proto {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        _ => Frame::NonIp,
    }
}

#[inline(always)]
fn is_vlan(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ_9100
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize) -> Frame {
    let Some(ip) = bytes::<IPV4_MIN_HLEN>(ctx, off) else {
        return Frame::Malformed;
    };
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Frame::Malformed;
    }
    let src = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let l4 = if fragment_offset != 0 {
        // A later fragment carries no transport header; the first one does.
        L4::other(ip[9])
    } else {
        transport(ctx, ip[9], off + ihl)
    };
    Frame::V4 { src, l4 }
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, off: usize) -> Frame {
    let Some(ip) = bytes::<IPV6_HLEN>(ctx, off) else {
        return Frame::Malformed;
    };
    if ip[0] >> 4 != 6 {
        return Frame::Malformed;
    }
    let word = |at: usize| {
        u64::from_ne_bytes([
            ip[at],
            ip[at + 1],
            ip[at + 2],
            ip[at + 3],
            ip[at + 4],
            ip[at + 5],
            ip[at + 6],
            ip[at + 7],
        ])
    };
    let src = [word(8), word(16)];
    let mut next = ip[6];
    let mut off = off + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP | IPPROTO_UDP => {
                return Frame::V6 {
                    src,
                    l4: transport(ctx, next, off),
                }
            }
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Some(h) = bytes::<2>(ctx, off) else {
                    return Frame::V6 {
                        src,
                        l4: L4::truncated(0),
                    };
                };
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let Some(h) = bytes::<2>(ctx, off) else {
                    return Frame::V6 {
                        src,
                        l4: L4::truncated(0),
                    };
                };
                next = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let Some(h) = bytes::<4>(ctx, off) else {
                    return Frame::V6 {
                        src,
                        l4: L4::truncated(0),
                    };
                };
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    return Frame::V6 {
                        src,
                        l4: L4::other(h[0]),
                    };
                }
                next = h[0];
                off += 8;
            }
            _ => {
                return Frame::V6 {
                    src,
                    l4: L4::other(next),
                }
            }
        }
    }
    let l4 = match next {
        IPPROTO_TCP | IPPROTO_UDP => transport(ctx, next, off),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT => {
            L4::truncated(0)
        }
        _ => L4::other(next),
    };
    Frame::V6 { src, l4 }
}

#[inline(always)]
fn transport(ctx: &XdpContext, proto: u8, off: usize) -> L4 {
    match proto {
        IPPROTO_TCP => match bytes::<TCP_MIN_HLEN>(ctx, off) {
            Some(t) => L4 {
                syn: t[13] & (TCP_SYN | TCP_ACK) == TCP_SYN,
                truncated: false,
                dport: u16::from_be_bytes([t[2], t[3]]),
                proto,
            },
            None => L4::truncated(proto),
        },
        IPPROTO_UDP => match bytes::<UDP_HLEN>(ctx, off) {
            Some(u) => L4 {
                syn: false,
                truncated: false,
                dport: u16::from_be_bytes([u[2], u[3]]),
                proto,
            },
            None => L4::truncated(proto),
        },
        _ => L4::other(proto),
    }
}
