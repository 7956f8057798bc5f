use std::net::IpAddr;

use std::net::Ipv6Addr;

use ipguard_common::{
    ANCHOR_OVERFLOW, LIST_BLACKLIST, LIST_GRAYLIST, LIST_NONE, LIST_WHITELIST, TABLE_FLAG_V6_SHORT,
    V6_ANCHOR_LENS,
};
use proptest::prelude::*;

use super::*;
use crate::dataplane::MemoryStore;
use crate::testing::{ip, net as n};

fn e(list: u32, rule_id: u32) -> ListEntry {
    ListEntry::new(list, rule_id)
}

/// Longest-prefix match over the entries: what every layout must answer.
fn naive(entries: &Compiled, ip: IpAddr) -> ListCode {
    entries
        .iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
        .map_or(LIST_NONE, |(_, e)| e.list)
}

#[test]
fn sync_inserts_updates_and_removes() {
    let mut t = Layout::new(MemoryStore::default());
    let a = n("192.0.2.0/24");
    let b = n("2001:db8::/32");
    let c = n("198.51.100.7/32");
    t.insert(a, e(LIST_GRAYLIST, 1)).unwrap();
    t.insert(c, e(LIST_BLACKLIST, 1)).unwrap();
    let desired: Compiled = [(a, e(LIST_BLACKLIST, 1)), (b, e(LIST_BLACKLIST, 2))].into();
    let r = t.sync(&desired, &Default::default()).unwrap();
    // Counted in map keys and /24 slots: a's slot changes, b's anchor is new, c's host
    // key and its /24's host flag go.
    assert_eq!(
        r,
        SyncReport {
            inserted: 1,
            updated: 1,
            removed: 2
        }
    );
    assert_eq!(t.entries(), desired);
    assert_eq!(
        t.sync(&desired, &Default::default()).unwrap(),
        SyncReport::default()
    );
}

#[test]
fn v4_longest_prefix_across_slots_and_hosts() {
    let mut t = Layout::new(MemoryStore::default());
    t.insert(n("10.0.0.0/8"), e(LIST_BLACKLIST, 0)).unwrap();
    t.insert(n("10.1.0.0/16"), e(LIST_WHITELIST, 0)).unwrap();
    t.insert(n("10.1.2.128/25"), e(LIST_GRAYLIST, 0)).unwrap();
    t.insert(n("10.1.2.200/32"), e(LIST_NONE, 0)).unwrap();
    let s = t.store();
    assert_eq!(s.lookup(ip("10.9.9.9")), LIST_BLACKLIST);
    assert_eq!(s.lookup(ip("10.1.9.9")), LIST_WHITELIST);
    assert_eq!(s.lookup(ip("10.1.2.1")), LIST_WHITELIST);
    assert_eq!(s.lookup(ip("10.1.2.129")), LIST_GRAYLIST);
    assert_eq!(s.lookup(ip("10.1.2.200")), LIST_NONE);
    assert_eq!(s.lookup(ip("11.0.0.1")), LIST_NONE);
    // 128 addresses of the /25, the /32 among them.
    assert_eq!(s.hosts.len(), 128);
    t.remove(n("10.1.0.0/16")).unwrap();
    assert_eq!(t.store().lookup(ip("10.1.9.9")), LIST_BLACKLIST);
    assert_eq!(t.store().lookup(ip("10.1.2.129")), LIST_GRAYLIST);
    t.remove(n("10.1.2.128/25")).unwrap();
    t.remove(n("10.1.2.200/32")).unwrap();
    assert!(t.store().hosts.is_empty());
    assert_eq!(t.store().slot(0x0a0102) & SLOT_HOSTS, 0, "flag cleared");
    assert_eq!(t.store().lookup(ip("10.1.2.200")), LIST_BLACKLIST);
}

#[test]
fn a_host_entry_writes_one_key_and_one_slot() {
    let mut t = Layout::new(MemoryStore::default());
    t.insert(n("10.0.0.0/8"), e(LIST_BLACKLIST, 0)).unwrap();
    let before = t.store().writes;
    t.insert(n("10.2.3.4/32"), e(LIST_WHITELIST, 0)).unwrap();
    assert_eq!(t.store().writes - before, 2);
    let before = t.store().writes;
    t.insert(n("10.2.3.5/32"), e(LIST_WHITELIST, 0)).unwrap();
    assert_eq!(t.store().writes - before, 1, "the slot is flagged already");
}

#[test]
fn v6_anchors_longs_and_short_prefixes() {
    let mut t = Layout::new(MemoryStore::default());
    t.insert(n("2001:db8::/32"), e(LIST_BLACKLIST, 0)).unwrap();
    t.insert(n("2001:db8:1::/48"), e(LIST_WHITELIST, 0))
        .unwrap();
    t.insert(n("2001:db8:1::7/128"), e(LIST_GRAYLIST, 0))
        .unwrap();
    t.insert(n("2001::/16"), e(LIST_GRAYLIST, 0)).unwrap();
    let s = t.store();
    assert_eq!(s.lookup(ip("2001:db8:2::1")), LIST_BLACKLIST);
    assert_eq!(s.lookup(ip("2001:db8:1::1")), LIST_WHITELIST);
    assert_eq!(s.lookup(ip("2001:db8:1::7")), LIST_GRAYLIST);
    assert_eq!(s.lookup(ip("2001:dead::1")), LIST_GRAYLIST, "short prefix");
    assert_eq!(s.lookup(ip("2002::1")), LIST_NONE);
    assert_eq!(s.anchors.len(), 1);
    assert_eq!(s.anchors[&0x2001_0db8].lens[..2], [128, 48]);
    assert_eq!(s.flags, TABLE_FLAG_V6_SHORT);
    t.remove(n("2001::/16")).unwrap();
    t.remove(n("2001:db8::/32")).unwrap();
    assert_eq!(t.store().flags, 0);
    assert_eq!(t.store().lookup(ip("2001:db8:2::1")), LIST_NONE);
    assert_eq!(t.store().lookup(ip("2001:db8:1::1")), LIST_WHITELIST);
}

#[test]
fn a_v6_region_is_marked_while_it_holds_anchors() {
    let mut t = Layout::new(MemoryStore::default());
    let marked = |t: &Layout<MemoryStore>, region: u32| {
        t.store().regions.get(&(region / 64)).copied().unwrap_or(0) >> (region % 64) & 1 != 0
    };
    // Two /32s of the region 2001:d00::/24, one of the region next to it.
    t.insert(n("2001:db8::/32"), e(LIST_BLACKLIST, 0)).unwrap();
    t.insert(n("2001:db9:1::/48"), e(LIST_BLACKLIST, 0))
        .unwrap();
    t.insert(n("2001:e00::1/128"), e(LIST_GRAYLIST, 0)).unwrap();
    assert!(marked(&t, 0x20010d) && marked(&t, 0x20010e));
    // A short prefix needs no region: the trie answers it.
    t.insert(n("2400::/12"), e(LIST_BLACKLIST, 0)).unwrap();
    assert!(!marked(&t, 0x240000));
    assert_eq!(t.store().lookup(ip("2400::1")), LIST_BLACKLIST);
    // The region stays marked until its last anchor goes.
    t.remove(n("2001:db8::/32")).unwrap();
    assert!(marked(&t, 0x20010d));
    assert_eq!(t.store().lookup(ip("2001:db9:1::5")), LIST_BLACKLIST);
    t.remove(n("2001:db9:1::/48")).unwrap();
    assert!(!marked(&t, 0x20010d) && marked(&t, 0x20010e));
    assert_eq!(t.store().lookup(ip("2001:e00::1")), LIST_GRAYLIST);
    // A sync clears a bit no anchor needs (left by an earlier run) and sets missing ones.
    let mut stale = MemoryStore::default();
    stale.regions.insert(0, 1);
    let mut s = Layout::new(stale);
    s.sync(&t.entries(), &Default::default()).unwrap();
    assert_eq!(s.store().regions, t.store().regions);
    assert_eq!(s.store().lookup(ip("2001:e00::1")), LIST_GRAYLIST);
}

#[test]
fn an_anchor_with_too_many_lengths_falls_back_to_the_trie() {
    let mut t = Layout::new(MemoryStore::default());
    let mut want = Compiled::new();
    for len in 33..=(33 + V6_ANCHOR_LENS as u8) {
        let net = Ipv6Net::new(ip6("2001:db8:ffff:ffff::"), len)
            .unwrap()
            .trunc();
        let entry = e(
            if len % 2 == 0 {
                LIST_WHITELIST
            } else {
                LIST_BLACKLIST
            },
            0,
        );
        t.insert(IpNet::V6(net), entry).unwrap();
        want.insert(IpNet::V6(net), entry);
    }
    let a = t.store().anchors[&0x2001_0db8];
    assert_ne!(a.flags & ANCHOR_OVERFLOW, 0);
    assert_eq!(t.store().lpm.len(), V6_ANCHOR_LENS + 1);
    for probe in ["2001:db8:ffff:ffff::1", "2001:db8:8000::1", "2001:db8::1"] {
        assert_eq!(
            t.store().lookup(ip(probe)),
            naive(&want, ip(probe)),
            "{probe}"
        );
    }
    // Back under the limit: the trie empties again.
    t.remove(n("2001:db8:ffff:ffff::/33").trunc()).unwrap();
    assert_eq!(t.store().anchors[&0x2001_0db8].flags & ANCHOR_OVERFLOW, 0);
    assert!(t.store().lpm.is_empty());
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn sync_reads_back_what_the_maps_hold_and_fixes_it() {
    // A store left by a previous run: a stale host and anchor, and one entry kept.
    let mut old = Layout::new(MemoryStore::default());
    old.insert(n("192.0.2.7/32"), e(LIST_BLACKLIST, 0)).unwrap();
    old.insert(n("198.51.100.0/24"), e(LIST_BLACKLIST, 0))
        .unwrap();
    old.insert(n("2001:db8::/64"), e(LIST_GRAYLIST, 0)).unwrap();
    let mut t = Layout::new(old.store);
    let desired: Compiled = [(n("198.51.100.0/24"), e(LIST_BLACKLIST, 0))].into();
    let r = t.sync(&desired, &Default::default()).unwrap();
    // host + its slot flag, anchor + long.
    assert_eq!(r.removed, 4, "{r:?}");
    assert_eq!(r.inserted + r.updated, 0, "{r:?}");
    let s = t.store();
    assert_eq!(s.lookup(ip("192.0.2.7")), LIST_NONE);
    assert_eq!(s.lookup(ip("198.51.100.9")), LIST_BLACKLIST);
    assert_eq!(s.lookup(ip("2001:db8::1")), LIST_NONE);
    assert!(s.hosts.is_empty() && s.anchors.is_empty() && s.longs.is_empty());
    assert_eq!(
        t.sync(&desired, &Default::default()).unwrap(),
        SyncReport::default()
    );
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    // Few distinct high bits, so that prefixes nest and share /24s and /32s.
    prop_oneof![
        (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
            let a = (10 << 24) | (hi << 22) | (lo & 0x3f_ffff);
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len.max(6)).unwrap().trunc())
        }),
        (0u128..4, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
            let a = (0x2001_0db8u128 << 96) | (hi << 94) | (lo >> 34);
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(a), len.max(12))
                    .unwrap()
                    .trunc(),
            )
        }),
    ]
}

fn arb_entry() -> impl Strategy<Value = ListEntry> {
    (0u32..=5).prop_map(|list| e(list, 0))
}

fn probes(entries: &Compiled) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for net in entries.keys() {
        out.push(net.network());
        out.push(net.broadcast());
        match net {
            IpNet::V4(n) => {
                let a = u32::from(n.network());
                out.push(IpAddr::V4(Ipv4Addr::from(a.wrapping_sub(1))));
                out.push(IpAddr::V4(Ipv4Addr::from(
                    u32::from(n.broadcast()).wrapping_add(1),
                )));
            }
            IpNet::V6(n) => {
                let a = u128::from(n.network());
                out.push(IpAddr::V6(Ipv6Addr::from(a.wrapping_sub(1))));
                out.push(IpAddr::V6(Ipv6Addr::from(
                    u128::from(n.broadcast()).wrapping_add(1),
                )));
            }
        }
    }
    out
}

/// The region bitmap's words that the anchors `anchors` need: exactly their /24s.
fn regions_of(
    anchors: &crate::dataplane::map_store::HashMap<u32, ipguard_common::V6Anchor>,
) -> crate::dataplane::map_store::HashMap<u32, u64> {
    let mut words = crate::dataplane::map_store::HashMap::default();
    for top in anchors.keys() {
        let (w, bit) = ipguard_common::v6_region_bit(*top);
        *words.entry(w).or_default() |= bit;
    }
    words
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any sequence of inserts and removes answers like longest-prefix match, and a
    /// whole-table sync of the result gives the same maps.
    #[test]
    fn layout_answers_like_longest_prefix_match(
        ops in prop::collection::vec((arb_net(), prop::option::of(arb_entry())), 1..60),
    ) {
        let mut t = Layout::new(MemoryStore::default());
        let mut want = Compiled::new();
        for (net, entry) in ops {
            match entry {
                Some(en) => {
                    t.insert(net, en).unwrap();
                    want.insert(net, en);
                }
                None => {
                    t.remove(net).unwrap();
                    want.remove(&net);
                }
            }
        }
        prop_assert_eq!(t.entries(), want.clone());
        for p in probes(&want) {
            prop_assert_eq!(t.store().lookup(p), naive(&want, p), "{}", p);
        }
        let mut fresh = Layout::new(MemoryStore::default());
        fresh.sync(&want, &Default::default()).unwrap();
        prop_assert_eq!(&fresh.store().hosts, &t.store().hosts);
        prop_assert_eq!(&fresh.store().anchors, &t.store().anchors);
        prop_assert_eq!(&t.store().regions, &regions_of(&t.store().anchors));
        prop_assert_eq!(&fresh.store().regions, &t.store().regions);
        prop_assert_eq!(&fresh.store().longs, &t.store().longs);
        prop_assert_eq!(&fresh.store().lpm, &t.store().lpm);
        prop_assert_eq!(fresh.store().flags, t.store().flags);
        prop_assert_eq!(t.usage(), TableUsage {
            v4: t.store().hosts.len() as u64,
            v6: t.store().anchors.len().max(t.store().longs.len()) as u64,
        });
        prop_assert_eq!(fresh.usage(), t.usage());
        prop_assert!(fresh.store().slots == t.store().slots);
        // And syncing the incremental one to the same entries changes nothing.
        prop_assert_eq!(t.sync(&want, &Default::default()).unwrap(), SyncReport::default());
    }

    /// A batch (writes, then deletes, as the compiler orders them) leaves the maps as
    /// the same changes one by one would.
    #[test]
    fn a_batch_equals_its_changes_one_by_one(
        first in prop::collection::vec((arb_net(), arb_entry()), 0..40),
        writes in prop::collection::vec((arb_net(), arb_entry()), 0..40),
        deletes in prop::collection::vec(arb_net(), 0..20),
    ) {
        let mut batched = Layout::new(MemoryStore::default());
        let mut single = Layout::new(MemoryStore::default());
        for (net, e) in &first {
            batched.insert(*net, *e).unwrap();
            single.insert(*net, *e).unwrap();
        }
        // Deletes of what is there (and was not just written), like the compiler's.
        let written: std::collections::HashSet<_> = writes.iter().map(|(n, _)| *n).collect();
        let mut ops: Vec<TableOp> = writes.iter().map(|(n, e)| TableOp::Write(*n, *e)).collect();
        ops.extend(
            deletes
                .iter()
                .chain(first.iter().map(|(n, _)| n))
                .filter(|n| !written.contains(n))
                .take(20)
                .map(|n| TableOp::Delete(*n)),
        );
        batched.apply(&ops).unwrap();
        for op in &ops {
            match *op {
                TableOp::Write(n, e) => single.insert(n, e).unwrap(),
                TableOp::Delete(n) => single.remove(n).unwrap(),
                TableOp::ScopeWrite(..) | TableOp::ScopeDelete(_) => unreachable!(),
            }
        }
        prop_assert_eq!(batched.entries(), single.entries());
        prop_assert_eq!(&batched.store().hosts, &single.store().hosts);
        prop_assert_eq!(&batched.store().anchors, &single.store().anchors);
        prop_assert_eq!(&batched.store().regions, &regions_of(&batched.store().anchors));
        prop_assert_eq!(&batched.store().regions, &single.store().regions);
        prop_assert_eq!(&batched.store().longs, &single.store().longs);
        prop_assert_eq!(&batched.store().lpm, &single.store().lpm);
        prop_assert_eq!(batched.store().flags, single.store().flags);
        prop_assert!(batched.store().slots == single.store().slots);
        prop_assert_eq!(batched.usage(), single.usage());
    }
}

/// A change that would not fit the maps is refused before anything is written: the maps,
/// the layout and its usage are as before.
#[test]
fn a_batch_past_capacity_is_refused_before_any_write() {
    let maps = crate::config::MapsConfig {
        sources_capacity: 16,
        lpm_v4_capacity: 3,
        lpm_v6_capacity: 2,
    };
    let mut t = Layout::new(MemoryStore::with_capacity(&maps));
    let host = |a: &str| TableOp::Write(n(a), e(LIST_BLACKLIST, 0));
    t.apply(&[host("192.0.2.1/32"), host("192.0.2.2/32")])
        .unwrap();
    let (writes, before, usage) = (t.store().writes, t.entries(), t.usage());
    for ops in [
        // Two more IPv4 hosts: 4 > 3.
        vec![host("198.51.100.1/32"), host("198.51.100.2/32")],
        // A /30 expands to 4 hosts.
        vec![host("203.0.113.0/30")],
        // IPv6: three long prefixes under three anchors: 3 > 2.
        vec![
            host("2001:db8::1/128"),
            host("2001:db9::1/128"),
            host("2001:dba::1/128"),
        ],
    ] {
        let err = t.apply(&ops).unwrap_err();
        assert!(matches!(err, TableError::Full { .. }), "{err}");
        assert_eq!(t.store().writes, writes, "nothing written for {ops:?}");
        assert_eq!(t.entries(), before);
        assert_eq!(t.usage(), usage);
    }
    // What fits still goes in, and a sync past capacity is refused too.
    t.apply(&[host("198.51.100.1/32")]).unwrap();
    assert_eq!(t.store().lookup(ip("198.51.100.1")), LIST_BLACKLIST);
    let too_big: Compiled = ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32", "10.0.0.4/32"]
        .iter()
        .map(|a| (n(a), e(LIST_BLACKLIST, 0)))
        .collect();
    let writes = t.store().writes;
    assert!(matches!(
        t.sync(&too_big, &Default::default()),
        Err(TableError::Full { .. })
    ));
    assert_eq!(t.store().writes, writes);
    assert_eq!(t.store().lookup(ip("198.51.100.1")), LIST_BLACKLIST);
    assert_eq!(t.entries().len(), 3);
}
