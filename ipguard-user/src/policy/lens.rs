//! Prefix lengths in use, per family: finding the prefixes that hold an address costs one
//! lookup per length actually present instead of one per possible length (33 or 129).

use std::net::IpAddr;

use ipnet::IpNet;

/// Number of prefixes per (family, prefix length).
#[derive(Debug, Clone)]
pub struct LenCounts([[u32; 129]; 2]);

impl Default for LenCounts {
    fn default() -> Self {
        LenCounts([[0; 129]; 2])
    }
}

impl LenCounts {
    /// The count of `net`'s family and length.
    pub fn of(&mut self, net: &IpNet) -> &mut u32 {
        &mut self.0[usize::from(net.addr().is_ipv6())][usize::from(net.prefix_len())]
    }

    /// The lengths present in `ip`'s family below `below`, shortest first.
    pub fn present(&self, ip: IpAddr, below: u8) -> impl Iterator<Item = u8> + '_ {
        let counts = &self.0[usize::from(ip.is_ipv6())];
        (0..below).filter(move |&len| counts[usize::from(len)] > 0)
    }

    /// Every length present in `ip`'s family, longest first.
    pub fn present_longest_first(&self, ip: IpAddr) -> impl Iterator<Item = u8> + '_ {
        let max = if ip.is_ipv4() { 32u8 } else { 128 };
        let counts = &self.0[usize::from(ip.is_ipv6())];
        (0..=max)
            .rev()
            .filter(move |&len| counts[usize::from(len)] > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_per_family() {
        let mut l = LenCounts::default();
        *l.of(&"10.0.0.0/8".parse().unwrap()) += 1;
        *l.of(&"10.1.0.0/16".parse().unwrap()) += 1;
        *l.of(&"2001:db8::/32".parse().unwrap()) += 1;
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(l.present(v4, 33).collect::<Vec<_>>(), [8, 16]);
        assert_eq!(l.present(v4, 16).collect::<Vec<_>>(), [8]);
        assert_eq!(l.present_longest_first(v4).collect::<Vec<_>>(), [16, 8]);
        assert_eq!(l.present_longest_first(v6).collect::<Vec<_>>(), [32]);
    }
}
