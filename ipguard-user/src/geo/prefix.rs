//! Set algebra on prefix lists: union ([`aggregate`]), difference ([`subtract`]) and
//! [`complement`], exact and linear after one sort.
//!
//! Prefixes are turned into address ranges per family, the ranges merged and swept,
//! and each resulting range covered with the fewest CIDRs. Working on ranges rather
//! than a trie keeps a country's ~100k prefixes cheap, and makes aggregation fall out:
//! adjacent siblings merge into one range and come back as their parent.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(segments: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        len,
    ))
}

/// Special-purpose and never-globally-routed ranges (IANA's special-purpose registries,
/// RFC 6890 and successors), which `allow_countries` leaves alone: no database places
/// them in a country, and dropping them would cut off the LAN, loopback, link-local
/// neighbours and multicast. Teredo and 6to4 are deliberately absent: they carry
/// Internet traffic.
pub const SPECIAL_PURPOSE: &[IpNet] = &[
    v4(0, 0, 0, 0, 8),                         // "this network"
    v4(10, 0, 0, 0, 8),                        // private (RFC 1918)
    v4(100, 64, 0, 0, 10),                     // shared address space, CGNAT (RFC 6598)
    v4(127, 0, 0, 0, 8),                       // loopback
    v4(169, 254, 0, 0, 16),                    // link-local
    v4(172, 16, 0, 0, 12),                     // private (RFC 1918)
    v4(192, 0, 0, 0, 24),                      // IETF protocol assignments
    v4(192, 0, 2, 0, 24),                      // documentation, TEST-NET-1
    v4(192, 88, 99, 0, 24),                    // former 6to4 relay anycast
    v4(192, 168, 0, 0, 16),                    // private (RFC 1918)
    v4(198, 18, 0, 0, 15),                     // benchmarking
    v4(198, 51, 100, 0, 24),                   // documentation, TEST-NET-2
    v4(203, 0, 113, 0, 24),                    // documentation, TEST-NET-3
    v4(224, 0, 0, 0, 4),                       // multicast
    v4(240, 0, 0, 0, 4),                       // reserved, and the limited broadcast address
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),         // unspecified
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),         // loopback
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),     // IPv4-mapped
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),  // NAT64 well-known prefix
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // NAT64 local use
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only
    v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48),   // benchmarking
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link-local
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
];

/// The whole address space of both families.
const EVERYTHING: &[IpNet] = &[v4(0, 0, 0, 0, 0), v6([0; 8], 0)];

/// An inclusive range of addresses of one family; IPv4 uses the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    start: u128,
    end: u128,
}

/// Ranges of both families, each list sorted, disjoint and non-adjacent.
#[derive(Debug, Default)]
struct Ranges {
    v4: Vec<Range>,
    v6: Vec<Range>,
}

impl Ranges {
    fn of(nets: &[IpNet]) -> Ranges {
        let mut out = Ranges::default();
        for net in nets {
            match net {
                IpNet::V4(n) => out.v4.push(Range {
                    start: u32::from(n.network()).into(),
                    end: u32::from(n.broadcast()).into(),
                }),
                IpNet::V6(n) => out.v6.push(Range {
                    start: u128::from(n.network()),
                    end: u128::from(n.broadcast()),
                }),
            }
        }
        Ranges {
            v4: merge(out.v4),
            v6: merge(out.v6),
        }
    }

    /// The fewest CIDRs covering exactly these ranges, IPv4 first, ascending.
    fn into_nets(self) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(self.v4.len() + self.v6.len());
        for r in &self.v4 {
            cover(*r, 32, &mut out);
        }
        for r in &self.v6 {
            cover(*r, 128, &mut out);
        }
        out
    }
}

/// Sorts and coalesces overlapping or touching ranges.
fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            // `saturating_add`: a range ending at the top of the IPv6 space absorbs the rest.
            Some(last) if r.start <= last.end.saturating_add(1) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `a` minus `b`, both merged (sorted, disjoint).
fn difference(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::with_capacity(a.len());
    let mut first = 0;
    for r in a {
        while first < b.len() && b[first].end < r.start {
            first += 1;
        }
        let mut start = r.start;
        let mut rest = true;
        for hole in b[first..].iter().take_while(|h| h.start <= r.end) {
            if hole.start > start {
                out.push(Range {
                    start,
                    end: hole.start - 1,
                });
            }
            if hole.end >= r.end {
                rest = false;
                break;
            }
            // No overflow: hole.end < r.end.
            start = hole.end + 1;
        }
        if rest {
            out.push(Range { start, end: r.end });
        }
    }
    out
}

/// Appends the fewest CIDRs covering `r` in an address space of `bits` bits: at each
/// step the largest block that is both aligned at `start` and fits before `end`.
fn cover(r: Range, bits: u32, out: &mut Vec<IpNet>) {
    let mut start = r.start;
    loop {
        let align = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        let span = r.end - start; // addresses left, minus one
        let fit = match span.checked_add(1) {
            Some(count) => 127 - count.leading_zeros(),
            None => 128,
        };
        let size_log2 = align.min(fit);
        // Invariant: size_log2 <= bits, so the prefix length is within the family's.
        let prefix_len = (bits - size_log2) as u8;
        out.push(if bits == 32 {
            IpNet::V4(Ipv4Net::new_assert(
                Ipv4Addr::from(start as u32),
                prefix_len,
            ))
        } else {
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(start), prefix_len))
        });
        let last = match 1u128.checked_shl(size_log2) {
            Some(size) => start + (size - 1),
            None => u128::MAX,
        };
        if last >= r.end {
            return;
        }
        start = last + 1;
    }
}

/// The union of `nets` as the fewest prefixes: sorted, deduplicated, nested prefixes
/// absorbed and adjacent siblings merged into their parent.
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    Ranges::of(nets).into_nets()
}

/// The addresses in `nets` and not in `holes`, as the fewest prefixes. Splits prefixes
/// as needed: a /24 with one protected host comes back as eight prefixes (/25 .. /32).
pub fn subtract(nets: &[IpNet], holes: &[IpNet]) -> Vec<IpNet> {
    let a = Ranges::of(nets);
    let b = Ranges::of(holes);
    Ranges {
        v4: difference(&a.v4, &b.v4),
        v6: difference(&a.v6, &b.v6),
    }
    .into_nets()
}

/// Every address, of both families, that is not in `nets`.
pub fn complement(nets: &[IpNet]) -> Vec<IpNet> {
    subtract(EVERYTHING, nets)
}
