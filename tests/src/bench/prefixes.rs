//! Random prefixes for the lists, from a fixed seed so every run loads the same ones.
//!
//! Mix of lengths: IPv4 /32 60 %, /24 25 %, /16–/23 15 %; IPv6 /128 50 %, /64 35 %,
//! /48 15 %, in 2000::/3 (global unicast).

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// splitmix64: small, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias of the modulo is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.next_u64() as u32)
    }

    /// An address in 2000::/3.
    pub fn v6(&mut self) -> Ipv6Addr {
        let hi = (self.next_u64() >> 3) | (1 << 61);
        let v = ((hi as u128) << 64) | self.next_u64() as u128;
        Ipv6Addr::from(v)
    }
}

pub fn v4_len(rng: &mut Rng) -> u8 {
    match rng.below(100) {
        0..60 => 32,
        60..85 => 24,
        _ => 16 + rng.below(8) as u8,
    }
}

pub fn v6_len(rng: &mut Rng) -> u8 {
    match rng.below(100) {
        0..50 => 128,
        50..85 => 64,
        _ => 48,
    }
}

pub fn random_v4(rng: &mut Rng) -> Ipv4Net {
    let len = v4_len(rng);
    Ipv4Net::new(rng.v4(), len).expect("len <= 32").trunc()
}

pub fn random_v6(rng: &mut Rng) -> Ipv6Net {
    let len = v6_len(rng);
    Ipv6Net::new(rng.v6(), len).expect("len <= 128").trunc()
}

/// `n` random prefixes of each family, distinct.
pub fn random_nets(rng: &mut Rng, n: usize) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut seen = HashSet::with_capacity(2 * n);
    let mut v4 = Vec::with_capacity(n);
    // Bounded: duplicates are rare, so 4n draws are plenty (the /16s repeat most).
    for _ in 0..4 * n {
        if v4.len() == n {
            break;
        }
        let net = random_v4(rng);
        if seen.insert(IpNet::V4(net)) {
            v4.push(net);
        }
    }
    let mut v6 = Vec::with_capacity(n);
    for _ in 0..4 * n {
        if v6.len() == n {
            break;
        }
        let net = random_v6(rng);
        if seen.insert(IpNet::V6(net)) {
            v6.push(net);
        }
    }
    assert!(
        v4.len() == n && v6.len() == n,
        "too many duplicate random prefixes"
    );
    (v4, v6)
}

/// Which addresses a set of prefixes covers: one hash set of network addresses per length.
#[derive(Default)]
pub struct Coverage {
    v4: BTreeMap<u8, HashSet<u32>>,
    v6: BTreeMap<u8, HashSet<u128>>,
}

impl Coverage {
    pub fn add(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) => {
                self.v4
                    .entry(n.prefix_len())
                    .or_default()
                    .insert(u32::from(n.network()));
            }
            IpNet::V6(n) => {
                self.v6
                    .entry(n.prefix_len())
                    .or_default()
                    .insert(u128::from(n.network()));
            }
        }
    }

    pub fn covers(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.iter().any(|(len, set)| {
                let net = Ipv4Net::new(a, *len).expect("valid length").trunc();
                set.contains(&u32::from(net.network()))
            }),
            IpAddr::V6(a) => self.v6.iter().any(|(len, set)| {
                let net = Ipv6Net::new(a, *len).expect("valid length").trunc();
                set.contains(&u128::from(net.network()))
            }),
        }
    }
}

/// `n` random IPv4 prefixes that overlap neither each other nor `avoid` (an nftables
/// interval set refuses overlaps).
pub fn disjoint_v4(rng: &mut Rng, n: usize, avoid: Ipv4Net) -> Vec<Ipv4Net> {
    // start -> end of every taken range.
    let mut taken: BTreeMap<u32, u32> = BTreeMap::new();
    let range = |net: Ipv4Net| (u32::from(net.network()), u32::from(net.broadcast()));
    let (s, e) = range(avoid);
    taken.insert(s, e);
    let mut out = Vec::with_capacity(n);
    // Bounded: far fewer prefixes than the space holds, so most draws are kept.
    for _ in 0..100 * n {
        if out.len() == n {
            break;
        }
        let net = random_v4(rng);
        let (s, e) = range(net);
        let before = taken.range(..=e).next_back();
        if before.is_some_and(|(_, &end)| end >= s) {
            continue;
        }
        taken.insert(s, e);
        out.push(net);
    }
    assert_eq!(out.len(), n, "cannot draw {n} disjoint prefixes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_prefixes_and_requested_mix() {
        let (a4, a6) = random_nets(&mut Rng::new(7), 2000);
        let (b4, b6) = random_nets(&mut Rng::new(7), 2000);
        assert_eq!((a4.len(), a6.len()), (2000, 2000));
        assert_eq!(a4, b4);
        assert_eq!(a6, b6);
        let host = a4.iter().filter(|n| n.prefix_len() == 32).count();
        assert!((1000..1400).contains(&host), "{host} /32s");
        assert!(a6.iter().all(|n| n.network().segments()[0] >> 13 == 1));
    }

    #[test]
    fn coverage_and_disjoint_sets() {
        let avoid: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let nets = disjoint_v4(&mut Rng::new(1), 3000, avoid);
        let mut ranges: Vec<(u32, u32)> = nets
            .iter()
            .chain([&avoid])
            .map(|n| (u32::from(n.network()), u32::from(n.broadcast())))
            .collect();
        ranges.sort();
        assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0));
        let mut cov = Coverage::default();
        cov.add(IpNet::V4(avoid));
        assert!(cov.covers("10.1.2.3".parse().unwrap()));
        assert!(!cov.covers("11.1.2.3".parse().unwrap()));
    }
}
