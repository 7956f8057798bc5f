//! Userspace side of the boundary types: `aya::Pod` impls and conversions from `ipnet`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    FloodConfig, FloodSlot, ListEntry, RateConfig, RateEvent, ScopeHint, ScopeKey, SourceCounters,
    SourceKey, StatCounter, V6Anchor, V6LongKey,
};

// SAFETY: all of these are `#[repr(C)]`, made of integers only, with explicit padding
// (sizes asserted in lib.rs), so every bit pattern is a valid value.
unsafe impl aya::Pod for FloodConfig {}
unsafe impl aya::Pod for FloodSlot {}
unsafe impl aya::Pod for ListEntry {}
unsafe impl aya::Pod for RateConfig {}
unsafe impl aya::Pod for RateEvent {}
unsafe impl aya::Pod for ScopeHint {}
unsafe impl aya::Pod for ScopeKey {}
unsafe impl aya::Pod for SourceKey {}
unsafe impl aya::Pod for SourceCounters {}
unsafe impl aya::Pod for StatCounter {}
unsafe impl aya::Pod for V6Anchor {}
unsafe impl aya::Pod for V6LongKey {}

/// LPM key of an IPv4 network: prefix length, then the address in network byte order.
pub fn v4_key(net: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

/// LPM key of an IPv6 network: prefix length, then the address in network byte order.
pub fn v6_key(net: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

/// The network an IPv4 LPM key stands for; `None` for a prefix length over 32.
pub fn v4_net(key: &Key<[u8; 4]>) -> Option<Ipv4Net> {
    let len = u8::try_from(key.prefix_len()).ok()?;
    Ipv4Net::new(Ipv4Addr::from(key.data()), len).ok()
}

/// The network an IPv6 LPM key stands for; `None` for a prefix length over 128.
pub fn v6_net(key: &Key<[u8; 16]>) -> Option<Ipv6Net> {
    let len = u8::try_from(key.prefix_len()).ok()?;
    Ipv6Net::new(Ipv6Addr::from(key.data()), len).ok()
}

impl From<IpAddr> for SourceKey {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => SourceKey::v4(v4.octets()),
            IpAddr::V6(v6) => SourceKey::v6(v6.octets()),
        }
    }
}

impl From<SourceKey> for IpAddr {
    /// IPv4-mapped keys come back as IPv4 addresses.
    fn from(key: SourceKey) -> Self {
        let v6 = Ipv6Addr::from(key.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_built_v4_key_is_the_byte_built_one() {
        for a in [
            [0, 0, 0, 0],
            [192, 0, 2, 1],
            [255, 255, 255, 255],
            [10, 20, 30, 40],
        ] {
            assert_eq!(SourceKey::v4_word(u32::from_ne_bytes(a)), SourceKey::v4(a));
        }
    }

    #[test]
    fn v4_key_is_network_order() {
        let key = v4_key("198.51.100.0/24".parse().unwrap());
        assert_eq!(key.prefix_len(), 24);
        assert_eq!(key.data(), [198, 51, 100, 0]);
        assert_eq!(v4_net(&key), Some("198.51.100.0/24".parse().unwrap()));
    }

    #[test]
    fn v4_key_uses_the_network_address() {
        // A key must never carry host bits: the trie would store them and never match.
        let key = v4_key("10.1.2.3/8".parse().unwrap());
        assert_eq!(key.data(), [10, 0, 0, 0]);
    }

    #[test]
    fn v6_key_round_trips() {
        let net: Ipv6Net = "2001:db8:bad::/48".parse().unwrap();
        let key = v6_key(net);
        assert_eq!(key.prefix_len(), 48);
        assert_eq!(&key.data()[..6], &[0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad]);
        assert_eq!(v6_net(&key), Some(net));
    }

    #[test]
    fn invalid_prefix_length_is_rejected() {
        assert_eq!(v4_net(&Key::new(33, [0; 4])), None);
        assert_eq!(v6_net(&Key::new(129, [0; 16])), None);
    }

    #[test]
    fn source_key_maps_v4_into_v6() {
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        let key = SourceKey::from(v4);
        assert_eq!(
            key.addr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 9]
        );
        assert_eq!(IpAddr::from(key), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(IpAddr::from(SourceKey::from(v6)), v6);
    }

    #[test]
    fn stat_indices_are_dense() {
        for (i, stat) in crate::Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i);
        }
    }
}
