//! T1: generated frames through the real XDP program (BPF_PROG_TEST_RUN) against a
//! reference of the verdict written here from the documented semantics: at least 100,000
//! frames a run, truncated at every length, 0 to 3 VLAN tags (802.1Q, 802.1ad, 0x9100),
//! IPv4 with any IHL, version and length mismatches, fragments and options, IPv6 with
//! extension chains up to and past the parser's limit, and random bytes. Every frame must
//! get the reference's verdict and counter, and none may abort.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use ipguard::{
    config::{Lists, MapsConfig},
    dataplane::{Backend as _, Dataplane},
    model::longest_match,
    policy::compile::{Change, ListState},
};
use ipguard_common::{
    Stat, LIST_BLACKLIST, LIST_GRAYLIST, LIST_MONITOR_BLACKLIST, LIST_MONITOR_GRAYLIST,
    LIST_MONITOR_RULE, LIST_RULE_DENY, LIST_WHITELIST,
};
use ipguard_tests::{frames::*, require_root};
use ipnet::IpNet;
use proptest::{prelude::*, test_runner::TestRunner};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const FRAMES_PER_CASE: usize = 500;
const CASES: u32 = 200;

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// The compiled table: the lists below plus port- and protocol-scoped rules and entries.
struct Table {
    state: ListState,
}

fn table() -> Table {
    use ipguard::model::{Layer, ListKind, Proto, Scope};
    let mut state = ListState::new();
    let l = lists();
    let mut changes: Vec<Change> = Vec::new();
    for (nets, layer) in [
        (&l.whitelist, ListKind::Whitelist.layer()),
        (&l.graylist, ListKind::Graylist.layer()),
        (&l.blacklist, ListKind::Blacklist.layer()),
        (&l.monitor_graylist, Layer::MonitorGray),
        (&l.monitor_blacklist, Layer::MonitorBlack),
    ] {
        changes.extend(nets.iter().map(|n| Change::Insert(*n, layer)));
    }
    let mut scope = |proto, ports: &[u16]| {
        state
            .intern_scope(&Scope::new(proto, ports.to_vec()).unwrap())
            .unwrap()
    };
    let ssh = scope(Some(Proto::Tcp), &[22]);
    let smtp = scope(None, &[25]);
    let icmp = scope(Some(Proto::Icmp), &[]);
    let dns = scope(Some(Proto::Udp), &[53]);
    let tcp = scope(Some(Proto::Tcp), &[]);
    let rule = |index, deny| Layer::Rule { index, deny };
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    changes.extend([
        // SSH only from one network, SMTP from nowhere, no ping from one /24.
        Change::InsertScoped(net("10.9.8.0/24"), rule(0, false), ssh),
        Change::InsertScoped(net("0.0.0.0/0"), rule(1, true), ssh),
        Change::InsertScoped(net("::/0"), rule(2, true), smtp),
        Change::InsertScoped(net("100.64.0.0/24"), rule(3, true), icmp),
        // A scoped blacklist entry inside a monitored /32, all TCP of another source.
        Change::InsertScoped(net("2001:db9::/32"), Layer::Black, dns),
        Change::InsertScoped(net("2001:db8:1::/64"), Layer::Gray, tcp),
    ]);
    let _ = state.apply(changes);
    Table { state }
}

fn lists() -> Lists {
    Lists {
        whitelist: nets(&["192.0.2.128/25", "2001:db8:1:ffff::/64"]),
        graylist: nets(&["198.51.100.0/24", "2001:db8:6a::/48", "203.0.113.64/26"]),
        blacklist: nets(&[
            "203.0.113.0/24",
            "2001:db8:bad::/48",
            "10.0.0.0/8",
            "198.51.100.7/32",
            "2001:db8:bad:1::5/128",
        ]),
        // Monitor mode: would drop, passes; inside an enforced prefix, enforced.
        monitor_graylist: nets(&["2001:db9::/32"]),
        monitor_blacklist: nets(&["100.64.0.0/24", "10.9.8.0/24"]),
        ..Lists::default()
    }
}

/// The sources the generator picks from: on every list, in overlaps, and on none.
const V4_SOURCES: [[u8; 4]; 8] = [
    [192, 0, 2, 200],
    [192, 0, 2, 9],
    [198, 51, 100, 1],
    [198, 51, 100, 7],
    [203, 0, 113, 1],
    [203, 0, 113, 70],
    [10, 9, 8, 7],
    [100, 64, 0, 1],
];
const V6_SOURCES: [&str; 6] = [
    "2001:db8:1:ffff::1",
    "2001:db8:1::9",
    "2001:db8:6a::1",
    "2001:db8:bad::1",
    "2001:db8:bad:1::5",
    "2001:db9::1",
];

/// The transport layer as the parser reads it: protocol (ICMPv6 as ICMP; 0 when an IPv6
/// extension chain is too long to reach it), destination port (0: none or not read), and
/// whether the TCP or UDP header (or the chain) was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct L4 {
    proto: u8,
    port: u16,
    truncated: bool,
}

fn l4_other(proto: u8) -> L4 {
    L4 {
        proto: if proto == 58 { 1 } else { proto },
        port: 0,
        truncated: false,
    }
}

fn l4_transport(frame: &[u8], proto: u8, off: usize) -> L4 {
    let need = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return l4_other(proto),
    };
    match frame.get(off..off + need) {
        Some(h) => L4 {
            proto,
            port: u16::from_be_bytes([h[2], h[3]]),
            truncated: false,
        },
        None => L4 {
            proto,
            port: 0,
            truncated: true,
        },
    }
}

/// The IPv6 extension chain walk (at most 6 headers), as the parser does it.
fn l4_v6(frame: &[u8], mut next: u8, mut off: usize) -> L4 {
    let cut = L4 {
        proto: 0,
        port: 0,
        truncated: true,
    };
    for _ in 0..6 {
        match next {
            IPPROTO_TCP | IPPROTO_UDP => return l4_transport(frame, next, off),
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Some(h) = frame.get(off..off + 2) else {
                    return cut;
                };
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            51 => {
                let Some(h) = frame.get(off..off + 2) else {
                    return cut;
                };
                next = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let Some(h) = frame.get(off..off + 4) else {
                    return cut;
                };
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    return l4_other(h[0]);
                }
                next = h[0];
                off += 8;
            }
            _ => return l4_other(next),
        }
    }
    match next {
        IPPROTO_TCP | IPPROTO_UDP => l4_transport(frame, next, off),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | 51 | NEXTHDR_FRAGMENT => cut,
        _ => l4_other(next),
    }
}

/// What the program must do with `frame` (the semantics the eBPF parser documents).
fn reference(frame: &[u8], table: &Table) -> (u32, Stat) {
    let malformed = (XDP_DROP, Stat::DropMalformed);
    let be16 = |o: usize| {
        frame
            .get(o..o + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let Some(mut proto) = be16(12) else {
        return malformed;
    };
    let is_vlan = |p: u16| matches!(p, 0x8100 | 0x88a8 | 0x9100);
    let mut off = 14;
    for depth in 0..3 {
        if !is_vlan(proto) {
            break;
        }
        if depth == 2 {
            // A third tag.
            return malformed;
        }
        let Some(p) = be16(off + 2) else {
            return malformed;
        };
        proto = p;
        off += 4;
    }
    let (src, l4): (IpAddr, L4) = match proto {
        0x0800 => {
            let Some(ip) = frame.get(off..off + 20) else {
                return malformed;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 {
                return malformed;
            }
            let l4 = if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                l4_other(ip[9])
            } else {
                l4_transport(frame, ip[9], off + ihl)
            };
            (
                IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
                l4,
            )
        }
        0x86dd => {
            let Some(ip) = frame.get(off..off + 40) else {
                return malformed;
            };
            if ip[0] >> 4 != 6 {
                return malformed;
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&ip[8..24]);
            (IpAddr::V6(Ipv6Addr::from(a)), l4_v6(frame, ip[6], off + 40))
        }
        _ => return (XDP_PASS, Stat::PassNonIp),
    };
    let own = longest_match(table.state.written(), src).map(|(_, e)| e);
    let list = match own {
        // A source with a scope group: decided per packet, and a cut transport header
        // (port unknown) is dropped.
        Some(e) if e.scope != 0 => {
            if l4.truncated {
                return malformed;
            }
            table
                .state
                .decide_for(src, l4.proto, l4.port)
                .map(|(_, e)| e.list)
        }
        own => own.map(|e| e.list),
    };
    match list {
        Some(LIST_WHITELIST) => (XDP_PASS, Stat::PassWhitelist),
        Some(LIST_GRAYLIST) => (XDP_DROP, Stat::DropGraylist),
        Some(LIST_BLACKLIST) => (XDP_DROP, Stat::DropBlacklist),
        Some(LIST_RULE_DENY) => (XDP_DROP, Stat::DropRule),
        Some(LIST_MONITOR_GRAYLIST) => (XDP_PASS, Stat::WouldDropGraylist),
        Some(LIST_MONITOR_BLACKLIST) => (XDP_PASS, Stat::WouldDropBlacklist),
        Some(LIST_MONITOR_RULE) => (XDP_PASS, Stat::WouldDropRule),
        _ => (XDP_PASS, Stat::PassUnlisted),
    }
}

/// One generated frame: a structured one (most of the time) or random bytes, then cut.
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    let tpid = prop_oneof![Just(ETH_P_8021Q), Just(ETH_P_8021AD), Just(ETH_P_QINQ_9100)];
    let tags = prop_oneof![
        6 => prop::collection::vec(tpid.clone(), 0..=2),
        1 => prop::collection::vec(tpid, 3..=4),
    ];
    let v4 = (
        0usize..V4_SOURCES.len(),
        prop_oneof![6 => Just(4u8), 1 => 0u8..16],
        prop_oneof![3 => Just(5u8), 2 => 5u8..16, 1 => 0u8..5],
        prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(1u8), any::<u8>()],
        prop_oneof![Just(0u16), any::<u16>()],
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop_oneof![
            Just(None),
            Just(Some(22u16)),
            Just(Some(25)),
            Just(Some(53))
        ],
    )
        .prop_map(|(s, version, ihl, proto, frag, total, mut rest, port)| {
            // A port the scopes name, at the transport header's destination port.
            let at = usize::from(ihl.saturating_sub(5)) * 4 + 2;
            if let (Some(port), Some(b)) = (port, rest.get_mut(at..at + 2)) {
                b.copy_from_slice(&port.to_be_bytes());
            }
            let src = V4_SOURCES[s];
            let mut h = vec![(version << 4) | ihl, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 1]);
            h.extend_from_slice(&frag.to_be_bytes());
            h.extend_from_slice(&[64, proto, 0, 0]);
            h.extend_from_slice(&src);
            h.extend_from_slice(&[192, 0, 2, 1]);
            h.extend(rest);
            (ETH_P_IP, h)
        });
    let ext_kind = prop_oneof![
        Just(NEXTHDR_HOP),
        Just(NEXTHDR_ROUTING),
        Just(NEXTHDR_DEST),
        Just(NEXTHDR_FRAGMENT),
        Just(51u8),
        Just(IPPROTO_TCP),
        any::<u8>(),
    ];
    let v6 = (
        0usize..V6_SOURCES.len(),
        prop_oneof![6 => Just(6u8), 1 => 0u8..16],
        prop::collection::vec((ext_kind, 0u8..3), 0..10),
        prop::collection::vec(any::<u8>(), 0..48),
        prop_oneof![
            Just(None),
            Just(Some(22u16)),
            Just(Some(25)),
            Just(Some(53))
        ],
    )
        .prop_map(|(s, version, chain, mut tail, port)| {
            if let (Some(port), Some(b)) = (port, tail.get_mut(2..4)) {
                b.copy_from_slice(&port.to_be_bytes());
            }
            let src: Ipv6Addr = V6_SOURCES[s].parse().unwrap();
            let first = chain.first().map_or(IPPROTO_TCP, |(k, _)| *k);
            let mut rest = Vec::new();
            for (i, (_, len)) in chain.iter().enumerate() {
                let next = chain.get(i + 1).map_or(IPPROTO_TCP, |(k, _)| *k);
                rest.extend(ext(next, *len));
            }
            rest.extend(tail);
            let mut h = ipv6(src, "2001:db8:1::1".parse().unwrap(), first, &rest);
            h[0] = (version << 4) | (h[0] & 0x0f);
            (ETH_P_IPV6, h)
        });
    let other = prop_oneof![Just(ETH_P_ARP), any::<u16>()].prop_map(|t| (t, vec![0u8; 28]));
    let structured = (tags, prop_oneof![4 => v4, 4 => v6, 1 => other]).prop_map(
        |(tags, (ethertype, payload))| {
            let mut f = eth(&tags, ethertype);
            f.extend(payload);
            f
        },
    );
    let random = prop::collection::vec(any::<u8>(), 14..120);
    (
        prop_oneof![9 => structured, 1 => random],
        any::<prop::sample::Index>(),
    )
        .prop_map(|(f, cut)| {
            // Any length from an Ethernet header (TestRun's minimum) to the whole frame.
            let len = 14 + cut.index(f.len() - 13);
            f[..len.min(f.len())].to_vec()
        })
}

#[test]
fn generated_frames_get_the_reference_verdict_and_never_abort() {
    require_root();
    let maps = MapsConfig {
        sources_capacity: 4096,
        lpm_v4_capacity: 65536,
        lpm_v6_capacity: 65536,
    };
    let dp = Dataplane::load(&maps).expect("load the XDP program");
    let table = table();
    let mut dp = dp;
    dp.backend
        .sync(table.state.written(), &table.state.scopes())
        .expect("write the tables");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // The runner wants a `Fn`: the program and the tallies go in cells.
    let dp = std::cell::RefCell::new(dp);
    let checked = std::cell::Cell::new(0u64);
    let by_stat = std::cell::RefCell::new(std::collections::BTreeMap::<String, u64>::new());
    runner
        .run(
            &prop::collection::vec(arb_frame(), FRAMES_PER_CASE),
            |frames| {
                let mut dp = dp.borrow_mut();
                // Counters are compared once per case: each one moved by exactly the
                // frames the reference gives it.
                let before = dp.backend.stats().unwrap();
                let mut want = std::collections::BTreeMap::<usize, u64>::new();
                for f in &frames {
                    let got = dp
                        .program
                        .xdp()
                        .unwrap()
                        .test_run(TestRunOptions {
                            data_in: Some(f),
                            repeat: 1,
                            ..TestRunOptions::new()
                        })
                        .expect("BPF_PROG_TEST_RUN")
                        .return_value;
                    prop_assert_ne!(got, XDP_ABORTED, "aborted on {:02x?}", f);
                    let (verdict, stat) = reference(f, &table);
                    prop_assert_eq!(got, verdict, "verdict of {:02x?}", f);
                    *want.entry(stat as usize).or_default() += 1;
                    checked.set(checked.get() + 1);
                    *by_stat.borrow_mut().entry(format!("{stat:?}")).or_default() += 1;
                }
                let after = dp.backend.stats().unwrap();
                for stat in Stat::ALL {
                    if matches!(
                        stat,
                        Stat::L4Truncated | Stat::SourceInserted | Stat::EventLost
                    ) {
                        continue;
                    }
                    prop_assert_eq!(
                        after.get(stat).packets - before.get(stat).packets,
                        want.get(&(stat as usize)).copied().unwrap_or(0),
                        "counter {:?}",
                        stat
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    let checked = checked.get();
    assert!(checked >= 100_000, "only {checked} frames");
    eprintln!(
        "frames fuzzed: {checked}, verdicts checked: {checked}, by counter: {:?}",
        by_stat.borrow()
    );
}
