//! T1: the real XDP program under BPF_PROG_TEST_RUN with crafted frames. Asserts both the
//! verdict and the counters it leaves behind. Needs root; fails loudly without it.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use ipguard::{
    config::{Lists, MapsConfig},
    dataplane::{Backend as _, Dataplane, GlobalStats, SyncReport},
    model::TableOp,
    policy::compile::compile,
};
use ipguard_common::SourceCounters;
use ipguard_common::{Stat, StatCounter};
use ipguard_tests::{frames::*, require_root};
use ipnet::IpNet;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// A freshly loaded program whose tables hold `white`/`gray`/`black` after precedence.
fn program(white: &[&str], gray: &[&str], black: &[&str]) -> Dataplane {
    require_root();
    let maps = MapsConfig {
        sources_capacity: 1024,
        // Not preallocated: room for the random lists' expanded IPv4 hosts costs nothing.
        lpm_v4_capacity: 65536,
        lpm_v6_capacity: 65536,
    };
    let mut dp = Dataplane::load(&maps).expect("load the XDP program");
    let l = Lists {
        whitelist: nets(white),
        graylist: nets(gray),
        blacklist: nets(black),
        ..Lists::default()
    };
    dp.backend
        .sync(&compile(&l), &Default::default())
        .expect("write the tables");
    dp
}

/// The usual lists of these tests.
fn standard() -> Dataplane {
    program(
        &["192.0.2.128/25", "2001:db8:1:ffff::/64"],
        &["198.51.100.0/24", "2001:db8:6a::/48"],
        &["203.0.113.0/24", "2001:db8:bad::/48"],
    )
}

fn run(dp: &mut Dataplane, frame: &[u8]) -> u32 {
    let prog = dp.program.xdp().unwrap();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    res.return_value
}

fn stats(dp: &Dataplane) -> GlobalStats {
    dp.backend.stats().expect("read stats")
}

/// Asserts that exactly the given stat slots moved by one packet (and `len` bytes each).
#[track_caller]
fn assert_counted(before: GlobalStats, after: GlobalStats, moved: &[Stat], len: usize) {
    // SourceInserted counts map inserts, not packets: checked on its own below.
    for stat in Stat::ALL.into_iter().filter(|s| *s != Stat::SourceInserted) {
        let (b, a) = (before.get(stat), after.get(stat));
        let expect = if moved.contains(&stat) {
            StatCounter {
                packets: b.packets + 1,
                bytes: b.bytes + len as u64,
            }
        } else {
            b
        };
        assert_eq!(a, expect, "counter {stat:?}");
    }
}

/// Runs one frame; asserts its verdict and the one verdict slot (plus `extra`) it moved.
#[track_caller]
fn check(dp: &mut Dataplane, frame: &[u8], verdict: u32, stat: Stat, extra: &[Stat]) {
    let before = stats(dp);
    assert_eq!(
        run(dp, frame),
        verdict,
        "verdict for {stat:?} frame of {} bytes",
        frame.len()
    );
    let mut moved = vec![stat];
    moved.extend_from_slice(extra);
    assert_counted(before, stats(dp), &moved, frame.len());
}

fn source(dp: &Dataplane, ip: &str) -> Option<SourceCounters> {
    dp.backend
        .source(ip.parse::<IpAddr>().unwrap())
        .expect("read source map")
}

#[test]
fn v4_each_list_and_none() {
    let mut dp = standard();
    let udp = udp();
    check(
        &mut dp,
        &v4_frame(&[], "192.0.2.7", IPPROTO_UDP, &udp),
        XDP_PASS,
        Stat::PassUnlisted,
        &[],
    );
    check(
        &mut dp,
        &v4_frame(&[], "192.0.2.200", IPPROTO_UDP, &udp),
        XDP_PASS,
        Stat::PassWhitelist,
        &[],
    );
    check(
        &mut dp,
        &v4_frame(&[], "198.51.100.9", IPPROTO_UDP, &udp),
        XDP_DROP,
        Stat::DropGraylist,
        &[],
    );
    check(
        &mut dp,
        &v4_frame(&[], "203.0.113.9", IPPROTO_UDP, &udp),
        XDP_DROP,
        Stat::DropBlacklist,
        &[],
    );

    // Only the unlisted source is counted per source; dropped and whitelisted traffic is not.
    let len = v4_frame(&[], "192.0.2.7", IPPROTO_UDP, &udp).len() as u64;
    let s = source(&dp, "192.0.2.7").expect("unlisted source counted");
    assert_eq!((s.packets, s.bytes, s.syns), (1, len, 0));
    assert!(s.last_seen_ns > 0);
    assert_eq!(source(&dp, "192.0.2.200"), None);
    assert_eq!(source(&dp, "198.51.100.9"), None);
    assert_eq!(source(&dp, "203.0.113.9"), None);
    // One source entered the map; a second packet from it inserts nothing.
    assert_eq!(stats(&dp).get(Stat::SourceInserted).packets, 1);
    check(
        &mut dp,
        &v4_frame(&[], "192.0.2.7", IPPROTO_UDP, &udp),
        XDP_PASS,
        Stat::PassUnlisted,
        &[],
    );
    assert_eq!(stats(&dp).get(Stat::SourceInserted).packets, 1);
}

#[test]
fn v6_each_list_and_none() {
    let mut dp = standard();
    let udp = udp();
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:1::2", IPPROTO_UDP, &udp),
        XDP_PASS,
        Stat::PassUnlisted,
        &[],
    );
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:1:ffff::9", IPPROTO_UDP, &udp),
        XDP_PASS,
        Stat::PassWhitelist,
        &[],
    );
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:6a::1", IPPROTO_UDP, &udp),
        XDP_DROP,
        Stat::DropGraylist,
        &[],
    );
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:bad:1::5", IPPROTO_UDP, &udp),
        XDP_DROP,
        Stat::DropBlacklist,
        &[],
    );
    let s = source(&dp, "2001:db8:1::2").expect("unlisted v6 source counted");
    assert_eq!(s.packets, 1);
    assert_eq!(source(&dp, "2001:db8:bad:1::5"), None);
}

#[test]
fn whitelist_wins_over_overlapping_blacklist_both_ways() {
    // More specific whitelist inside a blacklisted prefix, and a less specific whitelist
    // around a more specific blacklisted prefix; same for graylist and for IPv6.
    let mut dp = program(
        &[
            "203.0.113.128/25",
            "10.0.0.0/8",
            "2001:db8:bad:1::/64",
            "2001:db8:f00::/40",
        ],
        &["10.1.2.0/24"],
        &[
            "203.0.113.0/24",
            "10.1.0.0/16",
            "2001:db8:bad::/48",
            "2001:db8:f00:1::/64",
        ],
    );
    let udp = udp();
    for (src, verdict, stat) in [
        ("203.0.113.200", XDP_PASS, Stat::PassWhitelist),
        ("203.0.113.5", XDP_DROP, Stat::DropBlacklist),
        ("10.1.2.3", XDP_PASS, Stat::PassWhitelist),
        ("10.1.9.9", XDP_PASS, Stat::PassWhitelist),
    ] {
        check(
            &mut dp,
            &v4_frame(&[], src, IPPROTO_UDP, &udp),
            verdict,
            stat,
            &[],
        );
    }
    for (src, verdict, stat) in [
        ("2001:db8:bad:1::7", XDP_PASS, Stat::PassWhitelist),
        ("2001:db8:bad:2::7", XDP_DROP, Stat::DropBlacklist),
        ("2001:db8:f00:1::7", XDP_PASS, Stat::PassWhitelist),
    ] {
        check(
            &mut dp,
            &v6_frame(&[], src, IPPROTO_UDP, &udp),
            verdict,
            stat,
            &[],
        );
    }
}

#[test]
fn vlan_and_qinq() {
    let mut dp = standard();
    let syn = tcp(TCP_SYN);
    for tags in [
        &[ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q][..],
        &[ETH_P_8021Q, ETH_P_8021Q][..],
        &[ETH_P_QINQ_9100][..],
        &[ETH_P_QINQ_9100, ETH_P_8021Q][..],
    ] {
        check(
            &mut dp,
            &v4_frame(tags, "203.0.113.1", IPPROTO_TCP, &syn),
            XDP_DROP,
            Stat::DropBlacklist,
            &[],
        );
        check(
            &mut dp,
            &v6_frame(tags, "2001:db8:bad::1", IPPROTO_TCP, &syn),
            XDP_DROP,
            Stat::DropBlacklist,
            &[],
        );
        check(
            &mut dp,
            &v4_frame(tags, "192.0.2.9", IPPROTO_TCP, &syn),
            XDP_PASS,
            Stat::PassUnlisted,
            &[],
        );
    }
    // The SYNs seen through every tag layout were found and counted.
    assert_eq!(source(&dp, "192.0.2.9").unwrap().syns, 5);
    // A third tag is not parsed: the frame cannot be attributed to a source, so it is
    // dropped (fail-closed), whoever sent it; a non-IP frame behind two tags passes.
    for src in ["203.0.113.1", "192.0.2.9"] {
        let mut f = eth(&[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q], ETH_P_IP);
        f.extend(ipv4(
            src.parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            IPPROTO_TCP,
            &[],
            0,
            &syn,
        ));
        check(&mut dp, &f, XDP_DROP, Stat::DropMalformed, &[]);
    }
    let mut arp = eth(&[ETH_P_8021AD, ETH_P_8021Q], 0x0806);
    arp.extend([0u8; 28]);
    check(&mut dp, &arp, XDP_PASS, Stat::PassNonIp, &[]);
}

#[test]
fn ipv4_with_options_finds_tcp() {
    let mut dp = standard();
    let options = [1u8; 12]; // NOPs: IHL 8
    let mut f = eth(&[], ETH_P_IP);
    f.extend(ipv4(
        "192.0.2.44".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        IPPROTO_TCP,
        &options,
        0,
        &tcp(TCP_SYN),
    ));
    check(&mut dp, &f, XDP_PASS, Stat::PassUnlisted, &[]);
    assert_eq!(source(&dp, "192.0.2.44").unwrap().syns, 1);

    // Max IHL (15 words, 40 bytes of options) from a blacklisted source still drops.
    let mut f = eth(&[], ETH_P_IP);
    f.extend(ipv4(
        "203.0.113.4".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        IPPROTO_TCP,
        &[1u8; 40],
        0,
        &tcp(TCP_SYN),
    ));
    check(&mut dp, &f, XDP_DROP, Stat::DropBlacklist, &[]);
}

#[test]
fn ipv4_later_fragment_is_not_a_syn() {
    let mut dp = standard();
    let mut f = eth(&[], ETH_P_IP);
    // Fragment offset 8 (×8 bytes): the bytes after the header are not a TCP header.
    f.extend(ipv4(
        "192.0.2.45".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        IPPROTO_TCP,
        &[],
        8,
        &tcp(TCP_SYN),
    ));
    check(&mut dp, &f, XDP_PASS, Stat::PassUnlisted, &[]);
    assert_eq!(source(&dp, "192.0.2.45").unwrap().syns, 0);
}

#[test]
fn ipv6_extension_headers_before_tcp() {
    let mut dp = standard();
    // hop-by-hop → routing → destination options → fragment (first) → TCP SYN
    let mut rest = ext(NEXTHDR_ROUTING, 0);
    rest.extend(ext(NEXTHDR_DEST, 1));
    rest.extend(ext(NEXTHDR_FRAGMENT, 0));
    rest.extend(frag6(IPPROTO_TCP, 0, true));
    rest.extend(tcp(TCP_SYN));
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:1::50", NEXTHDR_HOP, &rest),
        XDP_PASS,
        Stat::PassUnlisted,
        &[],
    );
    assert_eq!(source(&dp, "2001:db8:1::50").unwrap().syns, 1);

    // A later fragment has no TCP header.
    let mut rest = frag6(IPPROTO_TCP, 10, false);
    rest.extend(tcp(TCP_SYN));
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:1::51", NEXTHDR_FRAGMENT, &rest),
        XDP_PASS,
        Stat::PassUnlisted,
        &[],
    );
    assert_eq!(source(&dp, "2001:db8:1::51").unwrap().syns, 0);

    // A chain longer than the parser's bound: verdict by source, TCP not reached.
    let mut rest = Vec::new();
    for _ in 0..8 {
        rest.extend(ext(NEXTHDR_DEST, 0));
    }
    rest.extend(ext(IPPROTO_TCP, 0));
    rest.extend(tcp(TCP_SYN));
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:bad::52", NEXTHDR_DEST, &rest),
        XDP_DROP,
        Stat::DropBlacklist,
        &[Stat::L4Truncated],
    );
    check(
        &mut dp,
        &v6_frame(&[], "2001:db8:1::52", NEXTHDR_DEST, &rest),
        XDP_PASS,
        Stat::PassUnlisted,
        &[Stat::L4Truncated],
    );
    assert_eq!(source(&dp, "2001:db8:1::52").unwrap().syns, 0);
}

#[test]
fn arp_and_other_non_ip_pass() {
    let mut dp = standard();
    check(&mut dp, &arp(), XDP_PASS, Stat::PassNonIp, &[]);
    let mut lldp = eth(&[], 0x88cc);
    lldp.extend_from_slice(&[0; 32]);
    check(&mut dp, &lldp, XDP_PASS, Stat::PassNonIp, &[]);
}

#[test]
fn syn_counted_but_not_syn_ack_or_ack() {
    let mut dp = standard();
    for (flags, n) in [
        (TCP_SYN, 1),
        (TCP_SYN | TCP_ACK, 1),
        (TCP_ACK, 1),
        (TCP_SYN, 2),
        (0x18, 2),
    ] {
        check(
            &mut dp,
            &v4_frame(&[], "192.0.2.60", IPPROTO_TCP, &tcp(flags)),
            XDP_PASS,
            Stat::PassUnlisted,
            &[],
        );
        assert_eq!(
            source(&dp, "192.0.2.60").unwrap().syns,
            n,
            "after flags {flags:#x}"
        );
        check(
            &mut dp,
            &v6_frame(&[], "2001:db8:1::60", IPPROTO_TCP, &tcp(flags)),
            XDP_PASS,
            Stat::PassUnlisted,
            &[],
        );
        assert_eq!(
            source(&dp, "2001:db8:1::60").unwrap().syns,
            n,
            "after flags {flags:#x}"
        );
    }
    let s = source(&dp, "192.0.2.60").unwrap();
    assert_eq!(s.packets, 5);
}

#[test]
fn malformed_ip_headers_are_dropped_as_malformed() {
    let mut dp = standard();
    // IHL below 5.
    let mut f = v4_frame(&[], "203.0.113.1", IPPROTO_TCP, &tcp(TCP_SYN));
    f[14] = 0x44;
    check(&mut dp, &f, XDP_DROP, Stat::DropMalformed, &[]);
    // Ethertype IPv4 but version 6 in the header.
    let mut f = v4_frame(&[], "203.0.113.1", IPPROTO_TCP, &tcp(TCP_SYN));
    f[14] = 0x65;
    check(&mut dp, &f, XDP_DROP, Stat::DropMalformed, &[]);
    // Ethertype IPv6 but version 4.
    let mut f = v6_frame(&[], "2001:db8:bad::1", IPPROTO_TCP, &tcp(TCP_SYN));
    f[14] = 0x45;
    check(&mut dp, &f, XDP_DROP, Stat::DropMalformed, &[]);
}

/// Cuts a frame at every length and checks what each cut leads to: before the source
/// address is complete → dropped as malformed; inside the TCP header → the source's
/// verdict plus `L4Truncated`; never XDP_ABORTED.
#[track_caller]
fn truncate_everywhere(
    dp: &mut Dataplane,
    full: &[u8],
    src_end: usize,
    l4_start: usize,
    verdict: u32,
    stat: Stat,
) {
    // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
    for cut in 14..=full.len() {
        let f = &full[..cut];
        // The IP header is read whole (20 or 40 bytes) before the source is used.
        if cut < src_end {
            check(dp, f, XDP_DROP, Stat::DropMalformed, &[]);
        } else if cut < l4_start + 20 {
            check(dp, f, verdict, stat, &[Stat::L4Truncated]);
        } else {
            check(dp, f, verdict, stat, &[]);
        }
    }
}

#[test]
fn truncated_at_every_boundary() {
    let mut dp = standard();
    let syn = tcp(TCP_SYN);
    // v4, QinQ: eth 14 + 2 tags 8 → IP at 22, header 20 → TCP at 42.
    let full = v4_frame(
        &[ETH_P_8021AD, ETH_P_8021Q],
        "203.0.113.77",
        IPPROTO_TCP,
        &syn,
    );
    truncate_everywhere(&mut dp, &full, 42, 42, XDP_DROP, Stat::DropBlacklist);
    let full = v4_frame(&[ETH_P_8021Q], "192.0.2.77", IPPROTO_TCP, &syn);
    truncate_everywhere(&mut dp, &full, 38, 38, XDP_PASS, Stat::PassUnlisted);
    // v6 with a hop-by-hop header: IP at 14, 40 bytes → ext at 54, 8 bytes → TCP at 62.
    let mut rest = ext(IPPROTO_TCP, 0);
    rest.extend(syn.clone());
    let full = v6_frame(&[], "2001:db8:bad::77", NEXTHDR_HOP, &rest);
    truncate_everywhere(&mut dp, &full, 54, 62, XDP_DROP, Stat::DropBlacklist);
    // Only complete SYNs were counted for the unlisted source.
    let s = source(&dp, "192.0.2.77").unwrap();
    assert_eq!(s.syns, 1);
    // Every cut from the end of its IPv4 header (38) to the full 58 bytes was attributed.
    assert_eq!(s.packets, 58 - 38 + 1);
}

#[test]
fn loaded_object_has_the_shared_map_names() {
    // Dataplane::load takes every map by its ipguard_common name and fails otherwise;
    // loading at all proves the object and the common crate agree.
    let dp = standard();
    assert_eq!(stats(&dp), GlobalStats::default());
}

/// A small deterministic generator (the test must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

/// Nested random prefixes: v4 under 10.0.0.0/14 (/6../32), v6 under 2001:db8::/30 (/12../128,
/// short ones included), and one /32 with more prefix lengths than an anchor lists.
fn random_lists(seed: u64, n: usize) -> ipguard::model::Compiled {
    use ipguard_common::{
        ListEntry, LIST_BLACKLIST, LIST_GRAYLIST, LIST_NONE, LIST_RULE_ALLOW, LIST_RULE_DENY,
        LIST_WHITELIST,
    };
    use ipnet::{Ipv4Net, Ipv6Net};
    let codes = [
        LIST_NONE,
        LIST_WHITELIST,
        LIST_GRAYLIST,
        LIST_BLACKLIST,
        LIST_RULE_ALLOW,
        LIST_RULE_DENY,
    ];
    let mut rng = Lcg(seed);
    let mut out = ipguard::model::Compiled::new();
    for i in 0..n {
        let list = codes[rng.next() as usize % codes.len()];
        let entry = ListEntry::new(list, 0);
        let net = if i % 2 == 0 {
            let addr = (10u32 << 24) | (rng.next() as u32 & 0x3_ffff);
            let len = 6 + (rng.next() % 27) as u8;
            IpNet::V4(Ipv4Net::new(addr.into(), len).unwrap().trunc())
        } else {
            let addr = (0x2001_0db8u128 << 96) | (u128::from(rng.next() % 4) << 96);
            let addr = addr | u128::from(rng.next()) << 40 | u128::from(rng.next() % 16);
            let len = 12 + (rng.next() % 117) as u8;
            IpNet::V6(Ipv6Net::new(addr.into(), len).unwrap().trunc())
        };
        out.insert(net, entry);
    }
    for len in 40..=56u8 {
        let net = Ipv6Net::new("2001:db8:3:ff00::".parse().unwrap(), len)
            .unwrap()
            .trunc();
        let list = if len % 3 == 0 {
            LIST_WHITELIST
        } else {
            LIST_BLACKLIST
        };
        out.insert(IpNet::V6(net), ListEntry::new(list, 0));
    }
    out
}

/// Longest-prefix match: what the tables must answer.
fn naive_verdict(lists: &ipguard::model::Compiled, ip: IpAddr) -> u32 {
    use ipguard_common::{LIST_BLACKLIST, LIST_GRAYLIST, LIST_RULE_DENY};
    let code = lists
        .iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, e)| e.list);
    match code {
        Some(LIST_BLACKLIST | LIST_GRAYLIST | LIST_RULE_DENY) => XDP_DROP,
        _ => XDP_PASS,
    }
}

fn probes(lists: &ipguard::model::Compiled) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for net in lists.keys() {
        let (a, b) = (net.network(), net.broadcast());
        out.extend([a, b]);
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => out.extend([
                IpAddr::V4((u32::from(a).wrapping_sub(1)).into()),
                IpAddr::V4((u32::from(b).wrapping_add(1)).into()),
            ]),
            (IpAddr::V6(a), IpAddr::V6(b)) => out.extend([
                IpAddr::V6((u128::from(a).wrapping_sub(1)).into()),
                IpAddr::V6((u128::from(b).wrapping_add(1)).into()),
            ]),
            _ => unreachable!(),
        }
    }
    out
}

#[track_caller]
fn assert_verdicts(dp: &mut Dataplane, lists: &ipguard::model::Compiled) {
    let udp = udp();
    let mut checked = 0;
    for ip in probes(lists) {
        let frame = match ip {
            IpAddr::V4(_) => v4_frame(&[], &ip.to_string(), IPPROTO_UDP, &udp),
            IpAddr::V6(_) => v6_frame(&[], &ip.to_string(), IPPROTO_UDP, &udp),
        };
        assert_eq!(
            run(dp, &frame),
            naive_verdict(lists, ip),
            "verdict for {ip}"
        );
        checked += 1;
    }
    assert!(checked > 1000, "only {checked} probes");
}

/// The program's lookup tables (IPv4 /24 slots and hosts, IPv6 anchors, long prefixes and
/// the short-prefix trie) answer like a longest-prefix match, written entry by entry,
/// after removals, and after a whole-table sync.
#[test]
fn tables_answer_like_longest_prefix_match() {
    let mut dp = program(&[], &[], &[]);
    let lists = random_lists(7, 600);
    for (net, entry) in &lists {
        dp.backend.apply(&[TableOp::Write(*net, *entry)]).unwrap();
    }
    assert_verdicts(&mut dp, &lists);
    // Remove every third entry, the overflowing /32's included.
    let mut kept = lists.clone();
    for net in lists.keys().step_by(3) {
        dp.backend.apply(&[TableOp::Delete(*net)]).unwrap();
        kept.remove(net);
    }
    assert_verdicts(&mut dp, &kept);
    // A whole-table sync to other lists writes only the difference and answers the same.
    let other = random_lists(8, 600);
    let report = dp.backend.sync(&other, &Default::default()).unwrap();
    assert!(report.removed > 0 && report.inserted > 0, "{report:?}");
    assert_verdicts(&mut dp, &other);
    assert_eq!(
        dp.backend.sync(&other, &Default::default()).unwrap(),
        SyncReport::default()
    );
}

/// Pinned maps left by a run that did not stop cleanly are read back: a new run's sync
/// removes what it no longer wants and keeps the rest.
#[test]
fn pinned_tables_are_read_back_and_fixed() {
    require_root();
    let maps = MapsConfig {
        sources_capacity: 1024,
        lpm_v4_capacity: 65536,
        lpm_v6_capacity: 65536,
    };
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/ipguard-t1-{}", std::process::id()));
    let old_lists = random_lists(11, 400);
    {
        let (mut dp, adopted) = Dataplane::load_pinned(&maps, &dir).unwrap();
        assert!(!adopted);
        dp.backend.sync(&old_lists, &Default::default()).unwrap();
        // Dropped without detach: the pins stay, like after kill -9.
    }
    let (mut dp, adopted) = Dataplane::load_pinned(&maps, &dir).unwrap();
    assert!(adopted);
    assert_verdicts(&mut dp, &old_lists);
    let new_lists = random_lists(12, 400);
    let report = dp.backend.sync(&new_lists, &Default::default()).unwrap();
    assert!(report.removed > 0, "stale entries removed: {report:?}");
    assert_verdicts(&mut dp, &new_lists);
    assert_verdicts_absent(&mut dp, &old_lists, &new_lists);
    dp.program.detach().unwrap();
    assert!(!dir.exists(), "a clean stop removes the pins");
}

/// Probes of the old lists answer as the new lists say.
fn assert_verdicts_absent(
    dp: &mut Dataplane,
    old: &ipguard::model::Compiled,
    new: &ipguard::model::Compiled,
) {
    let udp = udp();
    for ip in probes(old).into_iter().take(400) {
        let frame = match ip {
            IpAddr::V4(_) => v4_frame(&[], &ip.to_string(), IPPROTO_UDP, &udp),
            IpAddr::V6(_) => v6_frame(&[], &ip.to_string(), IPPROTO_UDP, &udp),
        };
        assert_eq!(run(dp, &frame), naive_verdict(new, ip), "verdict for {ip}");
    }
}

/// Monitor mode, per entry: a monitored entry passes and lands in its would-drop slot (and
/// is counted per source, like an unlisted source), an enforced entry still drops even
/// under a longer monitored prefix, and every packet moves exactly one verdict slot.
#[test]
fn monitored_entries_pass_as_would_drop() {
    let mut dp = program(&[], &[], &[]);
    let l = Lists {
        whitelist: nets(&["192.0.2.128/25"]),
        blacklist: nets(&["203.0.113.0/24"]),
        monitor_graylist: nets(&["100.64.0.0/16", "2001:db8:6a::/48"]),
        monitor_blacklist: nets(&[
            "198.51.100.0/24",
            "203.0.113.7/32",
            "192.0.2.128/26",
            "2001:db8:bad::/48",
        ]),
        ..Lists::default()
    };
    dp.backend
        .sync(&compile(&l), &Default::default())
        .expect("write the tables");
    let udp = udp();
    let v4 = |src: &str| v4_frame(&[], src, IPPROTO_UDP, &udp);
    let v6 = |src: &str| v6_frame(&[], src, IPPROTO_UDP, &udp);
    check(
        &mut dp,
        &v4("198.51.100.9"),
        XDP_PASS,
        Stat::WouldDropBlacklist,
        &[],
    );
    check(
        &mut dp,
        &v4("100.64.3.4"),
        XDP_PASS,
        Stat::WouldDropGraylist,
        &[],
    );
    check(
        &mut dp,
        &v6("2001:db8:bad::1"),
        XDP_PASS,
        Stat::WouldDropBlacklist,
        &[],
    );
    check(
        &mut dp,
        &v6("2001:db8:6a::1"),
        XDP_PASS,
        Stat::WouldDropGraylist,
        &[],
    );
    // A longer monitored prefix never weakens an enforced one, nor the whitelist.
    check(
        &mut dp,
        &v4("203.0.113.7"),
        XDP_DROP,
        Stat::DropBlacklist,
        &[],
    );
    check(
        &mut dp,
        &v4("203.0.113.8"),
        XDP_DROP,
        Stat::DropBlacklist,
        &[],
    );
    check(
        &mut dp,
        &v4("192.0.2.130"),
        XDP_PASS,
        Stat::PassWhitelist,
        &[],
    );
    check(&mut dp, &v4("192.0.2.7"), XDP_PASS, Stat::PassUnlisted, &[]);
    // Counted per source like an unlisted source (so the rate rules see it).
    let c = source(&dp, "198.51.100.9").expect("a would-drop source is counted");
    assert_eq!((c.packets, c.dropped), (1, 0));
    assert!(source(&dp, "203.0.113.7").is_none());
}

/// Monitor mode, global: the compiled table switched to monitor passes every graylist,
/// blacklist and deny-rule decision into its would-drop slot, the whitelist and unlisted
/// sources unchanged; switched back (the ops of one table rewrite), they drop again.
#[test]
fn global_monitor_mode_passes_what_would_drop_and_switches_back() {
    use ipguard::{
        model::{Layer, Mode},
        policy::compile::{Change, ListState},
    };
    let mut dp = program(&[], &[], &[]);
    let mut state = ListState::new();
    let members = [
        ("192.0.2.128/25", Layer::White),
        ("198.51.100.0/24", Layer::Gray),
        ("203.0.113.0/24", Layer::Black),
        (
            "10.1.0.0/16",
            Layer::Rule {
                index: 0,
                deny: false,
            },
        ),
        (
            "10.0.0.0/8",
            Layer::Rule {
                index: 1,
                deny: true,
            },
        ),
        ("10.1.2.0/24", Layer::MonitorBlack),
        ("2001:db8:bad::/48", Layer::Black),
        ("100.64.0.0/16", Layer::MonitorBlack),
    ];
    let _ = state.apply(
        members
            .iter()
            .map(|(n, l)| Change::Insert(n.parse().unwrap(), *l)),
    );
    dp.backend
        .sync(state.written(), &Default::default())
        .expect("write the tables");
    let udp = udp();
    let v4 = |src: &str| v4_frame(&[], src, IPPROTO_UDP, &udp);
    let v6 = |src: &str| v6_frame(&[], src, IPPROTO_UDP, &udp);
    let cases = |monitor: bool| {
        let (drop, gray, black, rule) = if monitor {
            (
                XDP_PASS,
                Stat::WouldDropGraylist,
                Stat::WouldDropBlacklist,
                Stat::WouldDropRule,
            )
        } else {
            (
                XDP_DROP,
                Stat::DropGraylist,
                Stat::DropBlacklist,
                Stat::DropRule,
            )
        };
        vec![
            (v4("198.51.100.1"), drop, gray),
            (v4("203.0.113.1"), drop, black),
            (v6("2001:db8:bad::1"), drop, black),
            (v4("10.9.9.9"), drop, rule),
            // The first matching rule allows; a monitored entry inside it says would drop.
            (v4("10.1.3.3"), XDP_PASS, Stat::PassUnlisted),
            (v4("10.1.2.3"), XDP_PASS, Stat::WouldDropBlacklist),
            (v4("100.64.0.1"), XDP_PASS, Stat::WouldDropBlacklist),
            (v4("192.0.2.200"), XDP_PASS, Stat::PassWhitelist),
            (v4("192.0.2.1"), XDP_PASS, Stat::PassUnlisted),
        ]
    };
    for (frame, verdict, stat) in cases(false) {
        check(&mut dp, &frame, verdict, stat, &[]);
    }
    let ops = state.set_mode(Mode::Monitor);
    assert!(!ops.is_empty());
    dp.backend.apply(&ops).expect("switch to monitor");
    for (frame, verdict, stat) in cases(true) {
        check(&mut dp, &frame, verdict, stat, &[]);
    }
    let ops = state.set_mode(Mode::Enforce);
    dp.backend.apply(&ops).expect("switch back to enforce");
    for (frame, verdict, stat) in cases(false) {
        check(&mut dp, &frame, verdict, stat, &[]);
    }
    // The tables hold exactly what a sync of the enforce table would write.
    assert_eq!(
        dp.backend
            .sync(state.written(), &Default::default())
            .unwrap(),
        SyncReport::default()
    );
}

/// Port- and protocol-scoped rules and entries: the program decides by the packet's
/// protocol and destination port where a scope group says so, keeps the prefix's own
/// verdict everywhere else, and drops a scoped source's packet whose transport header it
/// cannot read.
#[test]
fn scoped_rules_decide_by_protocol_and_port() {
    use ipguard::{
        model::{Layer, Proto, Scope},
        policy::compile::{Change, ListState},
    };
    let mut dp = program(&[], &[], &[]);
    let mut state = ListState::new();
    let ssh = state
        .intern_scope(&Scope::new(Some(Proto::Tcp), vec![22]).unwrap())
        .unwrap();
    let smtp = state
        .intern_scope(&Scope::new(None, vec![25]).unwrap())
        .unwrap();
    let icmp = state
        .intern_scope(&Scope::new(Some(Proto::Icmp), vec![]).unwrap())
        .unwrap();
    let dns = state
        .intern_scope(&Scope::new(Some(Proto::Udp), vec![53]).unwrap())
        .unwrap();
    let rule = |index, deny| Layer::Rule { index, deny };
    let ops = state.apply([
        Change::InsertScoped("192.0.2.0/24".parse().unwrap(), rule(0, false), ssh),
        Change::InsertScoped("0.0.0.0/0".parse().unwrap(), rule(1, true), ssh),
        Change::InsertScoped("::/0".parse().unwrap(), rule(1, true), ssh),
        Change::InsertScoped("0.0.0.0/0".parse().unwrap(), rule(2, true), smtp),
        Change::InsertScoped("10.7.0.0/16".parse().unwrap(), rule(3, true), icmp),
        Change::InsertScoped("198.51.100.0/24".parse().unwrap(), Layer::Black, dns),
        Change::Insert("203.0.113.0/24".parse().unwrap(), Layer::Black),
        Change::Insert("192.0.2.128/25".parse().unwrap(), Layer::White),
    ]);
    dp.backend.apply(&ops).expect("write the tables");
    let tcp_to = |port: u16| {
        let mut t = tcp(TCP_ACK);
        t[2..4].copy_from_slice(&port.to_be_bytes());
        t
    };
    let udp_to = |port: u16| {
        let mut u = udp();
        u[2..4].copy_from_slice(&port.to_be_bytes());
        u
    };
    let icmp_echo = [8u8, 0, 0, 0, 0, 1, 0, 1];
    let v4 = |src: &str, proto: u8, l4: &[u8]| v4_frame(&[], src, proto, l4);
    let cases = [
        // The admin network reaches 22; nobody else does; 25 is closed to all.
        (
            v4("192.0.2.5", IPPROTO_TCP, &tcp_to(22)),
            XDP_PASS,
            Stat::PassUnlisted,
        ),
        (
            v4("10.1.2.3", IPPROTO_TCP, &tcp_to(22)),
            XDP_DROP,
            Stat::DropRule,
        ),
        (
            v4("10.1.2.3", IPPROTO_TCP, &tcp_to(443)),
            XDP_PASS,
            Stat::PassUnlisted,
        ),
        (
            v4("10.1.2.3", IPPROTO_UDP, &udp_to(22)),
            XDP_PASS,
            Stat::PassUnlisted,
        ),
        (
            v4("192.0.2.5", IPPROTO_TCP, &tcp_to(25)),
            XDP_DROP,
            Stat::DropRule,
        ),
        (
            v4("10.1.2.3", IPPROTO_UDP, &udp_to(25)),
            XDP_DROP,
            Stat::DropRule,
        ),
        // ICMP scope: one /16 cannot ping, its TCP passes.
        (v4("10.7.1.1", 1, &icmp_echo), XDP_DROP, Stat::DropRule),
        (
            v4("10.7.1.1", IPPROTO_TCP, &tcp_to(443)),
            XDP_PASS,
            Stat::PassUnlisted,
        ),
        (v4("10.8.1.1", 1, &icmp_echo), XDP_PASS, Stat::PassUnlisted),
        // A scoped blacklist entry: DNS from that /24 dropped, the rest passes.
        (
            v4("198.51.100.9", IPPROTO_UDP, &udp_to(53)),
            XDP_DROP,
            Stat::DropBlacklist,
        ),
        (
            v4("198.51.100.9", IPPROTO_UDP, &udp_to(54)),
            XDP_PASS,
            Stat::PassUnlisted,
        ),
        // Lists keep their precedence over scoped rules.
        (
            v4("203.0.113.9", IPPROTO_TCP, &tcp_to(443)),
            XDP_DROP,
            Stat::DropBlacklist,
        ),
        (
            v4("192.0.2.200", IPPROTO_TCP, &tcp_to(25)),
            XDP_PASS,
            Stat::PassWhitelist,
        ),
        // IPv6: 22 closed to every source.
        (
            v6_frame(&[], "2001:db8:5::1", IPPROTO_TCP, &tcp_to(22)),
            XDP_DROP,
            Stat::DropRule,
        ),
        (
            v6_frame(&[], "2001:db8:5::1", IPPROTO_TCP, &tcp_to(80)),
            XDP_PASS,
            Stat::PassUnlisted,
        ),
    ];
    for (frame, verdict, stat) in &cases {
        check(&mut dp, frame, *verdict, *stat, &[]);
    }
    // A scoped source's TCP header cut short: dropped (its port is unknown), counted as
    // malformed; an unscoped source's passes as before.
    let mut cut = v4("10.1.2.3", IPPROTO_TCP, &tcp_to(22));
    cut.truncate(cut.len() - 10);
    check(
        &mut dp,
        &cut,
        XDP_DROP,
        Stat::DropMalformed,
        &[Stat::L4Truncated],
    );
    let mut cut = v4("203.0.113.200", IPPROTO_TCP, &tcp_to(22));
    cut.truncate(cut.len() - 10);
    check(
        &mut dp,
        &cut,
        XDP_DROP,
        Stat::DropBlacklist,
        &[Stat::L4Truncated],
    );
    // The kernel's scope map is what the compiler says, and a sync finds nothing to fix.
    assert_eq!(
        dp.backend.sync(state.written(), &state.scopes()).unwrap(),
        SyncReport::default()
    );
    // Removing the scoped rules frees their groups: 22 opens again.
    let ops = state.apply([
        Change::RemoveScoped("0.0.0.0/0".parse().unwrap(), rule(1, true), ssh),
        Change::RemoveScoped("::/0".parse().unwrap(), rule(1, true), ssh),
    ]);
    dp.backend.apply(&ops).expect("remove the rules");
    check(
        &mut dp,
        &v4("10.1.2.3", IPPROTO_TCP, &tcp_to(22)),
        XDP_PASS,
        Stat::PassUnlisted,
        &[],
    );
    assert_eq!(
        dp.backend.sync(state.written(), &state.scopes()).unwrap(),
        SyncReport::default()
    );
}
