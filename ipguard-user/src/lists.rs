//! The three lists and how they combine into one longest-prefix table per family, which
//! the XDP program reads.
//!
//! Precedence, written by [`compile`] so the data path needs a single lookup:
//! - the whitelist wins over graylist and blacklist, whatever the prefix lengths;
//! - between graylist and blacklist the longest (most specific) prefix decides;
//! - on an identical prefix the blacklist wins over the graylist.
//!
//! The compiler itself, which also handles the ordered rules and incremental updates, is
//! [`crate::policy::compile`]; this module names the lists for the config and the CLI.

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use ipguard_common::{ListCode, ListEntry, LIST_BLACKLIST, LIST_GRAYLIST, LIST_WHITELIST};
use ipnet::IpNet;

use crate::{
    config::Lists,
    policy::compile::{Change, Layer, ListState},
};

/// One of the three lists an operator manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Whitelist,
    Graylist,
    Blacklist,
}

impl ListKind {
    pub const ALL: [ListKind; 3] = [ListKind::Whitelist, ListKind::Graylist, ListKind::Blacklist];

    /// The code the XDP program understands.
    pub const fn code(self) -> ListCode {
        match self {
            ListKind::Whitelist => LIST_WHITELIST,
            ListKind::Graylist => LIST_GRAYLIST,
            ListKind::Blacklist => LIST_BLACKLIST,
        }
    }

    pub fn from_code(code: ListCode) -> Option<Self> {
        match code {
            LIST_WHITELIST => Some(ListKind::Whitelist),
            LIST_GRAYLIST => Some(ListKind::Graylist),
            LIST_BLACKLIST => Some(ListKind::Blacklist),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ListKind::Whitelist => "whitelist",
            ListKind::Graylist => "graylist",
            ListKind::Blacklist => "blacklist",
        }
    }

    /// The layer of the compiled policy that holds this list.
    pub const fn layer(self) -> Layer {
        match self {
            ListKind::Whitelist => Layer::White,
            ListKind::Graylist => Layer::Gray,
            ListKind::Blacklist => Layer::Black,
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ListKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ListKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown list `{s}`, expected whitelist, graylist or blacklist"))
    }
}

/// The compiled entries that implement the lists' precedence: prefix → entry (longest
/// prefix wins; `dataplane::Layout` lays them out in the kernel's tables).
pub type Compiled = BTreeMap<IpNet, ListEntry>;

/// Compiles the configured lists into table entries (see [`crate::policy::compile`]).
/// List entries carry `rule_id` 0: the list is the explanation.
///
/// Prefixes whose decision equals their parent's are left out, e.g. gray/black prefixes
/// inside a whitelisted prefix: the longest match for any address in them then lands on the
/// parent.
pub fn compile(lists: &Lists) -> Compiled {
    let mut state = ListState::new();
    state.apply(ListKind::ALL.into_iter().flat_map(|kind| {
        let nets = match kind {
            ListKind::Whitelist => &lists.whitelist,
            ListKind::Graylist => &lists.graylist,
            ListKind::Blacklist => &lists.blacklist,
        };
        nets.iter()
            .map(move |net| Change::Insert(*net, kind.layer()))
    }));
    state.written().clone()
}

/// Longest-prefix match over compiled entries: what the kernel's tables answer for `ip`.
pub fn longest_match(entries: &Compiled, ip: IpAddr) -> Option<(IpNet, ListEntry)> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (0..=max).rev().find_map(|len| {
        let net = IpNet::new(ip, len).ok()?.trunc();
        entries.get(&net).map(|e| (net, *e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn lists(white: &[&str], gray: &[&str], black: &[&str]) -> Lists {
        Lists {
            whitelist: nets(white),
            graylist: nets(gray),
            blacklist: nets(black),
        }
    }

    fn decided(c: &Compiled, ip: &str) -> Option<ListKind> {
        longest_match(c, ip.parse().unwrap()).and_then(|(_, e)| ListKind::from_code(e.list))
    }

    #[test]
    fn more_specific_whitelist_wins_over_blacklist() {
        let c = compile(&lists(&["10.1.0.0/16"], &[], &["10.0.0.0/8"]));
        assert_eq!(decided(&c, "10.1.2.3"), Some(ListKind::Whitelist));
        assert_eq!(decided(&c, "10.2.0.1"), Some(ListKind::Blacklist));
    }

    #[test]
    fn less_specific_whitelist_wins_over_blacklist() {
        let c = compile(&lists(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.9.9.9/32"],
            &["10.1.0.0/16", "2001:db8:bad::/48"],
        ));
        assert_eq!(decided(&c, "10.1.2.3"), Some(ListKind::Whitelist));
        assert_eq!(decided(&c, "10.9.9.9"), Some(ListKind::Whitelist));
        assert_eq!(decided(&c, "2001:db8:bad::1"), Some(ListKind::Whitelist));
        // The covered entries are not written at all.
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn identical_prefix_blacklist_beats_graylist_and_whitelist_beats_both() {
        let c = compile(&lists(&[], &["192.0.2.0/24"], &["192.0.2.0/24"]));
        assert_eq!(decided(&c, "192.0.2.1"), Some(ListKind::Blacklist));
        let c = compile(&lists(
            &["192.0.2.0/24"],
            &["192.0.2.0/24"],
            &["192.0.2.0/24"],
        ));
        assert_eq!(decided(&c, "192.0.2.1"), Some(ListKind::Whitelist));
    }

    #[test]
    fn longest_of_gray_and_black_decides() {
        let c = compile(&lists(&[], &["198.51.100.0/24"], &["198.51.0.0/16"]));
        assert_eq!(decided(&c, "198.51.100.1"), Some(ListKind::Graylist));
        assert_eq!(decided(&c, "198.51.1.1"), Some(ListKind::Blacklist));
        assert_eq!(decided(&c, "203.0.113.1"), None);
    }

    #[test]
    fn families_do_not_shadow_each_other() {
        // ::/0 whitelisted must not whitelist IPv4 sources.
        let c = compile(&lists(&["::/0"], &[], &["0.0.0.0/0"]));
        assert_eq!(decided(&c, "192.0.2.1"), Some(ListKind::Blacklist));
        assert_eq!(decided(&c, "2001:db8::1"), Some(ListKind::Whitelist));
    }

    #[test]
    fn list_entries_have_rule_id_zero() {
        // Only rules carry an id (index + 1); a list entry is explained by its list.
        let c = compile(&lists(
            &["203.0.113.0/24"],
            &["198.51.100.0/24"],
            &["192.0.2.0/24", "198.51.100.7/32"],
        ));
        let e = c[&"198.51.100.7/32".parse::<IpNet>().unwrap()];
        assert_eq!((e.list, e.rule_id), (LIST_BLACKLIST, 0));
        assert_eq!(c.len(), 4);
        assert!(c.values().all(|e| e.rule_id == 0));
    }

    #[test]
    fn list_names_round_trip() {
        for k in ListKind::ALL {
            assert_eq!(k.name().parse::<ListKind>(), Ok(k));
            assert_eq!(ListKind::from_code(k.code()), Some(k));
        }
        assert!("whitelst"
            .parse::<ListKind>()
            .unwrap_err()
            .contains("whitelst"));
    }

    /// The compiled trie must give, for every address, the decision of the naive rule:
    /// any covering whitelist entry wins, else the longest gray/black match (black on a tie).
    fn naive(l: &Lists, ip: IpAddr) -> Option<ListKind> {
        if l.whitelist.iter().any(|n| n.contains(&ip)) {
            return Some(ListKind::Whitelist);
        }
        let best = |v: &Vec<IpNet>| {
            v.iter()
                .filter(|n| n.contains(&ip))
                .map(|n| n.prefix_len())
                .max()
        };
        match (best(&l.graylist), best(&l.blacklist)) {
            (None, None) => None,
            (Some(_), None) => Some(ListKind::Graylist),
            (None, Some(_)) => Some(ListKind::Blacklist),
            (Some(g), Some(b)) if g > b => Some(ListKind::Graylist),
            _ => Some(ListKind::Blacklist),
        }
    }

    mod properties {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::*;

        // A small address space so that random prefixes and addresses overlap often.
        fn v4_net() -> impl Strategy<Value = IpNet> {
            (any::<u8>(), 0u8..=32).prop_map(|(b, len)| {
                IpNet::new(IpAddr::V4(Ipv4Addr::new(10, b & 0x0f, b >> 4, b)), len)
                    .unwrap()
                    .trunc()
            })
        }
        fn v6_net() -> impl Strategy<Value = IpNet> {
            (any::<u8>(), 0u8..=128).prop_map(|(b, len)| {
                let a = Ipv6Addr::new(0x2001, 0xdb8, u16::from(b & 3), 0, 0, 0, 0, u16::from(b));
                IpNet::new(IpAddr::V6(a), len).unwrap().trunc()
            })
        }
        fn net() -> impl Strategy<Value = IpNet> {
            prop_oneof![v4_net(), v6_net()]
        }
        fn addr() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u8>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, b & 0x0f, b >> 4, b))),
                any::<u8>().prop_map(|b| IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    u16::from(b & 3),
                    0,
                    0,
                    0,
                    0,
                    u16::from(b)
                ))),
            ]
        }

        proptest! {
            #[test]
            fn compiled_trie_agrees_with_naive_precedence(
                white in prop::collection::vec(net(), 0..4),
                gray in prop::collection::vec(net(), 0..8),
                black in prop::collection::vec(net(), 0..8),
                probes in prop::collection::vec(addr(), 1..32),
            ) {
                let l = Lists { whitelist: white, graylist: gray, blacklist: black };
                let c = compile(&l);
                for ip in probes {
                    let got = longest_match(&c, ip).and_then(|(_, e)| ListKind::from_code(e.list));
                    prop_assert_eq!(got, naive(&l, ip), "address {}", ip);
                }
            }
        }
    }
}
