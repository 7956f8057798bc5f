//! The prefix algebra against its definition, and the small helpers. Tests against real
//! (generated) databases are in `tests/tests/geo_db.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

fn covers(list: &[IpNet], addr: IpAddr) -> bool {
    list.iter().any(|n| n.contains(&addr))
}

#[test]
fn country_codes_are_two_uppercase_ascii_letters() {
    for good in ["DE", "US", "XX", "ZZ"] {
        assert!(is_country_code(good), "{good}");
    }
    for bad in ["", "D", "de", "De", "DEU", "D1", "É", "ÄB", " DE", "--"] {
        assert!(!is_country_code(bad), "{bad:?}");
    }
}

#[test]
fn aggregate_merges_siblings_into_their_parent() {
    let got = aggregate(&nets(&[
        "198.51.100.128/25",
        "198.51.100.0/25",
        "198.51.101.0/24",
    ]));
    assert_eq!(got, nets(&["198.51.100.0/23"]));
}

#[test]
fn aggregate_dedups_absorbs_nested_and_sorts_v4_first() {
    let got = aggregate(&nets(&[
        "2001:db8::/33",
        "203.0.113.0/24",
        "203.0.113.7/32",
        "192.0.2.0/24",
        "2001:db8:8000::/33",
        "192.0.2.0/24",
    ]));
    assert_eq!(
        got,
        nets(&["192.0.2.0/24", "203.0.113.0/24", "2001:db8::/32"])
    );
}

#[test]
fn aggregate_does_not_merge_neighbours_that_are_not_siblings() {
    // Adjacent, but 198.51.101.0/24 and 198.51.102.0/24 have different /23 parents.
    let input = nets(&["198.51.101.0/24", "198.51.102.0/24"]);
    assert_eq!(aggregate(&input), input);
}

#[test]
fn subtracting_a_host_splits_the_prefix() {
    let got = subtract(&nets(&["192.0.2.0/24"]), &nets(&["192.0.2.0/32"]));
    assert_eq!(
        got,
        nets(&[
            "192.0.2.1/32",
            "192.0.2.2/31",
            "192.0.2.4/30",
            "192.0.2.8/29",
            "192.0.2.16/28",
            "192.0.2.32/27",
            "192.0.2.64/26",
            "192.0.2.128/25",
        ])
    );
}

#[test]
fn subtract_handles_holes_larger_than_and_across_the_nets() {
    let got = subtract(
        &nets(&["10.0.0.0/24", "10.0.2.0/24", "2001:db8::/64"]),
        &nets(&["10.0.0.0/16", "2001:db8::/48"]),
    );
    assert_eq!(got, Vec::<IpNet>::new());
    let got = subtract(
        &nets(&["10.0.0.0/23", "10.0.4.0/24"]),
        &nets(&["10.0.1.0/24", "10.0.3.0/24", "10.0.4.128/25"]),
    );
    assert_eq!(got, nets(&["10.0.0.0/24", "10.0.4.0/25"]));
}

#[test]
fn subtract_keeps_the_other_family_apart() {
    let got = subtract(&nets(&["0.0.0.0/0"]), &nets(&["::/0"]));
    assert_eq!(got, nets(&["0.0.0.0/0"]));
}

#[test]
fn complement_of_nothing_is_everything() {
    assert_eq!(complement(&[]), nets(&["0.0.0.0/0", "::/0"]));
    assert_eq!(complement(&nets(&["0.0.0.0/0", "::/0"])), vec![]);
}

#[test]
fn complement_reaches_the_top_of_both_spaces() {
    assert_eq!(
        complement(&nets(&["0.0.0.0/1", "::/1"])),
        nets(&["128.0.0.0/1", "8000::/1"])
    );
    assert_eq!(
        complement(&nets(&[
            "255.255.255.255/32",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
        ]))
        .len(),
        32 + 128
    );
}

#[test]
fn special_purpose_ranges_are_networks_and_disjoint() {
    for n in SPECIAL_PURPOSE {
        assert_eq!(n.trunc(), *n, "{n} has host bits");
    }
    for (i, a) in SPECIAL_PURPOSE.iter().enumerate() {
        for b in &SPECIAL_PURPOSE[i + 1..] {
            assert!(!a.contains(b) && !b.contains(a), "{a} and {b} overlap");
        }
    }
    for lan in [
        "192.168.1.10",
        "10.1.2.3",
        "fe80::1",
        "fd00::1",
        "::1",
        "100.64.0.1",
    ] {
        assert!(covers(SPECIAL_PURPOSE, lan.parse().unwrap()), "{lan}");
    }
    for public in [
        "8.8.8.8",
        "1.1.1.1",
        "2a00:1450::1",
        "2001::1",
        "2002:808:808::1",
    ] {
        assert!(
            !covers(SPECIAL_PURPOSE, public.parse().unwrap()),
            "{public}"
        );
    }
}

#[test]
fn errors_are_one_line_and_name_the_file() {
    let e = GeoError::NoData {
        path: "/var/lib/GeoLite2-ASN.mmdb".into(),
        database_type: "GeoLite2-ASN".into(),
        field: "country",
    };
    assert_eq!(
        e.to_string(),
        "/var/lib/GeoLite2-ASN.mmdb: this GeoLite2-ASN database has no country data; \
         is it the right file?"
    );
}

/// Networks clustered at the bottom, the middle and the top of each address space, so
/// that random sets overlap, touch and reach the edges (where ranges overflow).
fn arb_net() -> impl Strategy<Value = IpNet> {
    let v4_base = prop::sample::select(vec![0u32, 0x0a00_0000, u32::MAX - 0xfff]);
    let v6_base = prop::sample::select(vec![0u128, 0x2001_0db8 << 96, u128::MAX - 0xfff]);
    prop_oneof![
        6 => (v4_base, 0u32..0x1000, 19u8..=32).prop_map(|(base, off, len)| {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base + off), len).unwrap().trunc())
        }),
        1 => (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc())
        }),
        6 => (v6_base, 0u128..0x1000, 115u8..=128).prop_map(|(base, off, len)| {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base + off), len).unwrap().trunc())
        }),
        1 => (any::<u128>(), 0u8..=128).prop_map(|(a, len)| {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc())
        }),
    ]
}

/// Every address where membership in any of `lists` can change: the first and last
/// address of each prefix and their outside neighbours. Membership is constant between
/// consecutive probes, so checking them all checks every address.
fn probes(lists: &[&[IpNet]]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for n in lists.iter().flat_map(|l| l.iter()) {
        match n {
            IpNet::V4(n) => {
                let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                    out.push(IpAddr::V4(a.into()));
                }
            }
            IpNet::V6(n) => {
                let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                    out.push(IpAddr::V6(a.into()));
                }
            }
        }
    }
    out
}

/// Sorted, disjoint, and no two neighbours that are the halves of one parent.
fn assert_canonical(list: &[IpNet]) -> Result<(), TestCaseError> {
    for pair in list.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        prop_assert!(a < b, "{a} not before {b}");
        prop_assert!(!a.contains(&b) && !b.contains(&a), "{a} and {b} overlap");
        if let (Some(pa), Some(pb)) = (a.supernet(), b.supernet()) {
            prop_assert!(pa != pb, "{a} and {b} should have merged into {pa}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn subtract_is_exact(
        a in prop::collection::vec(arb_net(), 0..40),
        b in prop::collection::vec(arb_net(), 0..40),
    ) {
        let got = subtract(&a, &b);
        assert_canonical(&got)?;
        for addr in probes(&[&a, &b, &got]) {
            prop_assert_eq!(
                covers(&got, addr),
                covers(&a, addr) && !covers(&b, addr),
                "at {}", addr
            );
        }
    }

    #[test]
    fn complement_is_exact(a in prop::collection::vec(arb_net(), 0..40)) {
        let got = complement(&a);
        assert_canonical(&got)?;
        for addr in probes(&[&a, &got]) {
            prop_assert_eq!(covers(&got, addr), !covers(&a, addr), "at {}", addr);
        }
        prop_assert_eq!(complement(&got), aggregate(&a));
    }

    #[test]
    fn aggregate_is_the_same_set_and_minimal(a in prop::collection::vec(arb_net(), 0..60)) {
        let got = aggregate(&a);
        assert_canonical(&got)?;
        for addr in probes(&[&a, &got]) {
            prop_assert_eq!(covers(&got, addr), covers(&a, addr), "at {}", addr);
        }
        prop_assert_eq!(aggregate(&got), got);
    }
}
