//! Feed hygiene: what of a feed is never listed, whatever the feed says.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;

use crate::config::MinPrefix;

/// IPv4 special-purpose ranges (RFC 6890 and its successors) that no public feed
/// should list: an entry inside one is a bogon.
pub const BOGONS_V4: [&str; 15] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
];

/// IPv6 special-purpose ranges, as [`BOGONS_V4`].
pub const BOGONS_V6: [&str; 9] = [
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// What a feed may not list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hygiene {
    /// The whitelist and the protected addresses: an entry overlapping one (either way)
    /// would block an operator or a partner.
    pub protected: Vec<IpNet>,
    /// Entries shorter than this are refused (as for every list).
    pub min_prefix: MinPrefix,
    /// Drop entries inside [`BOGONS_V4`] / [`BOGONS_V6`] (FireHOL level1 lists the
    /// private ranges on purpose; on a host behind NAT that would block the LAN).
    pub exclude_bogons: bool,
}

/// Why an entry was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It overlaps this protected network.
    Protected(IpNet),
    /// It is shorter than the minimum prefix length of its family.
    TooBroad { min: u8 },
    /// It lies inside this special-purpose range.
    Bogon(IpNet),
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Protected(net) => write!(f, "overlaps the protected network {net}"),
            DropReason::TooBroad { min } => write!(f, "shorter than the minimum prefix /{min}"),
            DropReason::Bogon(net) => write!(f, "inside the special-purpose range {net}"),
        }
    }
}

/// A feed's entries after hygiene.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub kept: BTreeSet<IpNet>,
    /// In the order of the entries.
    pub dropped: Vec<(IpNet, DropReason)>,
}

/// Splits `nets` into what may be listed and what not (and why: too broad first, then
/// protected, then bogon). O((n + m) log m) for n entries and m protected networks.
pub fn clean(nets: BTreeSet<IpNet>, hygiene: &Hygiene) -> Cleaned {
    let protected = Ranges::new(hygiene.protected.iter().copied());
    let bogons = if hygiene.exclude_bogons {
        Ranges::new(bogons())
    } else {
        Ranges::default()
    };
    let mut cleaned = Cleaned::default();
    let mut kept = Vec::with_capacity(nets.len());
    for net in nets {
        let reason = if let Some(min) = hygiene.min_prefix.violated_by(&net) {
            Some(DropReason::TooBroad { min })
        } else if let Some(p) = protected.overlapping(&net) {
            Some(DropReason::Protected(p))
        } else {
            bogons.containing(&net).map(DropReason::Bogon)
        };
        match reason {
            Some(reason) => cleaned.dropped.push((net, reason)),
            None => kept.push(net),
        }
    }
    // Sorted already (taken from a BTreeSet in order): a bulk build.
    cleaned.kept = kept.into_iter().collect();
    cleaned
}

/// [`BOGONS_V4`] and [`BOGONS_V6`] as networks.
fn bogons() -> impl Iterator<Item = IpNet> {
    // The constants are valid networks (a test parses every one); a typo would be
    // skipped rather than panic.
    BOGONS_V4
        .iter()
        .chain(BOGONS_V6.iter())
        .filter_map(|s| s.parse().ok())
}

/// Networks as address ranges, to answer "which one overlaps (or contains) this" by
/// binary search instead of a scan.
#[derive(Default)]
struct Ranges {
    v4: Family,
    v6: Family,
}

/// One family's networks sorted by first address, with the running maximum of last
/// addresses: CIDR blocks either nest or are disjoint, so the block reaching furthest
/// among those starting at or before an address is the one to test.
#[derive(Default)]
struct Family {
    /// (first, last, net), sorted.
    ranges: Vec<(u128, u128, IpNet)>,
    /// For each index, the position (≤ index) of the range reaching furthest.
    furthest: Vec<usize>,
}

impl Ranges {
    fn new(nets: impl Iterator<Item = IpNet>) -> Self {
        let mut out = Ranges::default();
        for net in nets {
            let (first, last) = bounds(&net);
            out.family_mut(&net).ranges.push((first, last, net));
        }
        for family in [&mut out.v4, &mut out.v6] {
            family.ranges.sort_unstable();
            let mut best = 0;
            family.furthest = (0..family.ranges.len())
                .map(|i| {
                    if family.ranges[i].1 > family.ranges[best].1 {
                        best = i;
                    }
                    best
                })
                .collect();
        }
        out
    }

    fn family(&self, net: &IpNet) -> &Family {
        match net {
            IpNet::V4(_) => &self.v4,
            IpNet::V6(_) => &self.v6,
        }
    }

    fn family_mut(&mut self, net: &IpNet) -> &mut Family {
        match net {
            IpNet::V4(_) => &mut self.v4,
            IpNet::V6(_) => &mut self.v6,
        }
    }

    /// A network that contains `net` or lies inside it.
    fn overlapping(&self, net: &IpNet) -> Option<IpNet> {
        let family = self.family(net);
        let (first, last) = bounds(net);
        // One starting inside `net` lies inside it.
        let at = family.ranges.partition_point(|r| r.0 < first);
        if let Some(r) = family.ranges.get(at) {
            if r.0 <= last {
                return Some(r.2);
            }
        }
        self.containing(net)
    }

    /// A network that contains `net`.
    fn containing(&self, net: &IpNet) -> Option<IpNet> {
        let family = self.family(net);
        let (first, last) = bounds(net);
        let starts_before = family.ranges.partition_point(|r| r.0 <= first);
        let furthest = family.furthest.get(starts_before.checked_sub(1)?)?;
        let r = family.ranges.get(*furthest)?;
        (r.1 >= last).then_some(r.2)
    }
}

/// First and last address of `net`, IPv4 in the low 32 bits.
fn bounds(net: &IpNet) -> (u128, u128) {
    let num = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    (num(net.network()), num(net.broadcast()))
}
