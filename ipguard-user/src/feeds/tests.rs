//! The pure parts (formats, hygiene, judgement) here; fetching and the store in `tests/`.

mod fetch;
mod store;

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::*;
use crate::{config::MinPrefix, testing::net};

fn set(nets: &[&str]) -> BTreeSet<IpNet> {
    nets.iter().map(|s| net(s)).collect()
}

fn ok(format: FeedFormat, text: &str) -> Parsed {
    parse(format, text).unwrap_or_else(|e| panic!("{format} body refused: {e}"))
}

fn lines_of(rejected: &[Rejected]) -> Vec<usize> {
    rejected.iter().map(|r| r.line).collect()
}

// ---- formats ----------------------------------------------------------------------------

#[test]
fn format_names_round_trip() {
    for f in FeedFormat::ALL {
        assert_eq!(f.as_str().parse::<FeedFormat>(), Ok(f));
    }
    assert!("firehol".parse::<FeedFormat>().is_err());
}

#[test]
fn netset_takes_comments_blank_lines_crlf_bom_and_ipv6() {
    let text = "\u{feff}#\r\n# FireHOL level1\r\n\r\n1.10.16.0/20\r\n  \r\n\
                198.51.100.7   # a host, trailing comment\r\n2001:db8:bad::/48\r\n\
                1.10.16.0/20\r\n::1\r\n";
    let parsed = ok(FeedFormat::Netset, text);
    assert_eq!(
        parsed.nets,
        set(&[
            "1.10.16.0/20",
            "198.51.100.7/32",
            "2001:db8:bad::/48",
            "::1/128"
        ])
    );
    assert_eq!(parsed.rejected_total, 0);
}

#[test]
fn garbage_lines_are_rejected_and_counted_not_fatal() {
    let text = "1.2.3.0/24\nnot-an-ip\n198.51.100.7/24\n5.6.7.8\n1.2.3.4/33\n9.9.9.9\n10.0.0.1\n";
    let parsed = ok(FeedFormat::Netset, text);
    assert_eq!(
        parsed.nets,
        set(&["1.2.3.0/24", "5.6.7.8/32", "9.9.9.9/32", "10.0.0.1/32"])
    );
    assert_eq!(parsed.rejected_total, 3);
    assert_eq!(lines_of(&parsed.rejected), [2, 3, 5]);
    assert_eq!(parsed.rejected[0].text, "not-an-ip");
    // Host bits set: rejected with the network it may have meant, never truncated.
    assert!(
        parsed.rejected[1]
            .reason
            .contains("did you mean 198.51.100.0/24"),
        "{:?}",
        parsed.rejected[1]
    );
    assert!(parsed.rejected[2].reason.contains("at most 32"));
}

#[test]
fn long_lines_are_rejected_and_samples_are_bounded() {
    let long = "1".repeat(format::MAX_LINE_BYTES + 1);
    let mut text = format!("{long}\n");
    for i in 0..300u32 {
        text.push_str(&format!("junk{i}\n"));
    }
    for i in 0..400u32 {
        text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)));
    }
    let parsed = ok(FeedFormat::Netset, &text);
    assert_eq!(parsed.nets.len(), 400);
    assert_eq!(parsed.rejected_total, 301);
    assert_eq!(parsed.rejected.len(), format::MAX_REJECTED_KEPT);
    assert!(parsed.rejected[0].reason.contains("longer than 1024 bytes"));
    assert!(parsed.rejected[0].text.len() < 300, "the excerpt is cut");
    // A long comment is still a comment.
    let comment = format!("# {long}\n1.2.3.4\n");
    assert_eq!(ok(FeedFormat::Netset, &comment).rejected_total, 0);
    let comment = format!("; {long}\n1.2.3.0/24 ; SBL1\n");
    assert_eq!(ok(FeedFormat::SpamhausDrop, &comment).rejected_total, 0);
}

#[test]
fn spamhaus_drop_text() {
    let text = "; Spamhaus DROP List 2024/01/01 - (c) 2024 The Spamhaus Project\r\n\
                ; Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
                1.10.16.0/20 ; SBL256894\r\n\
                1.19.0.0/16 ; SBL434604\r\n\
                2001:db8:1::/48 ; SBL1\r\n\
                3.3.3.0/24\r\n\
                3.3.3.1/24 ; SBL2\r\n";
    let parsed = ok(FeedFormat::SpamhausDrop, text);
    assert_eq!(
        parsed.nets,
        set(&[
            "1.10.16.0/20",
            "1.19.0.0/16",
            "2001:db8:1::/48",
            "3.3.3.0/24"
        ])
    );
    assert_eq!(lines_of(&parsed.rejected), [7]);
}

#[test]
fn spamhaus_json_lines_skip_the_metadata() {
    let text = r#"{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}
{"cidr":"2001:db8:1::/48","sblid":"SBL1","rir":"ripencc"}

{"cidr":"1.19.0.1/16","sblid":"SBL2","rir":"apnic"}
1.2.3.0/24
{"sblid":"SBL3"}
{"cidr":"9.9.9.0/24","sblid":"SBL4","rir":"arin"}
{"cidr":"8.8.8.0/24","sblid":"SBL5","rir":"arin"}
{"cidr":"7.7.7.0/24","sblid":"SBL6","rir":"arin"}
{"type":"metadata","timestamp":1704067200,"size":1234,"records":7,"copyright":"(c) 2024 The Spamhaus Project SLU","terms":"https://www.spamhaus.org/drop/terms/"}
"#;
    let parsed = ok(FeedFormat::SpamhausJson, &text.replace('\n', "\r\n"));
    assert_eq!(
        parsed.nets,
        set(&[
            "1.10.16.0/20",
            "2001:db8:1::/48",
            "9.9.9.0/24",
            "8.8.8.0/24",
            "7.7.7.0/24"
        ])
    );
    assert_eq!(lines_of(&parsed.rejected), [4, 5, 6]);
    assert!(parsed.rejected[0].reason.contains("host bits"));
    assert!(parsed.rejected[1].reason.starts_with("not a JSON object"));
    assert!(parsed.rejected[2].reason.contains("without \"cidr\""));
}

#[test]
fn html_binary_and_mostly_invalid_bodies_are_errors() {
    let html = "\n  <!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n";
    for format in FeedFormat::ALL {
        let e = parse(format, html).unwrap_err();
        assert!(matches!(e, FeedError::NotAList { .. }), "{e:?}");
        assert!(e.to_string().contains("looks like HTML"), "{e}");
    }
    let e = parse(FeedFormat::Netset, "1.2.3.4\n\0\0\0\n").unwrap_err();
    assert!(e.to_string().contains("binary"), "{e}");

    // A JSON error document served as the netset: every line invalid.
    let e = parse(
        FeedFormat::Netset,
        "{\n \"error\": \"rate limited\",\n \"retry\": 60\n}\n1.2.3.4\n",
    )
    .unwrap_err();
    assert_eq!(
        e,
        FeedError::MostlyInvalid {
            format: FeedFormat::Netset,
            invalid: 4,
            total: 5,
            first_line: 1,
            first_reason: "\"{\" is not a valid IP address or CIDR".to_owned(),
        }
    );
    assert_eq!(
        e.to_string(),
        "4 of 5 entries are not valid netset lines (first, line 1: \"{\" is not a valid IP \
         address or CIDR); the source probably serves something else"
    );
    // Exactly half is still a list.
    assert_eq!(ok(FeedFormat::Netset, "x\n1.2.3.4\n").nets.len(), 1);
}

#[test]
fn empty_and_comment_only_bodies_are_empty_lists() {
    for text in ["", "\n\n", "# nothing today\n", "\u{feff}"] {
        assert_eq!(ok(FeedFormat::Netset, text), Parsed::default());
    }
    assert!(ok(FeedFormat::SpamhausDrop, "; header only\n")
        .nets
        .is_empty());
    let meta_only = r#"{"type":"metadata","timestamp":1,"size":0,"records":0}"#;
    assert!(ok(FeedFormat::SpamhausJson, meta_only).nets.is_empty());
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, len)| IpNet::V4(
            Ipv4Net::new(a.into(), len).map(|n| n.trunc()).unwrap()
        )),
        (any::<u128>(), 0u8..=128).prop_map(|(a, len)| IpNet::V6(
            Ipv6Net::new(a.into(), len).map(|n| n.trunc()).unwrap()
        )),
    ]
}

proptest! {
    /// What `render_netset` writes, `parse` reads back unchanged.
    #[test]
    fn netset_round_trips(nets in prop::collection::btree_set(arb_net(), 0..200)) {
        let parsed = parse(FeedFormat::Netset, &render_netset(&nets)).unwrap();
        prop_assert_eq!(parsed.nets, nets);
        prop_assert_eq!(parsed.rejected_total, 0);
    }

    /// Any text: a list or an error, never a panic; samples bounded.
    #[test]
    fn any_text_parses_or_errs(
        text in ".{0,400}",
        format in prop::sample::select(FeedFormat::ALL.to_vec()),
    ) {
        if let Ok(parsed) = parse(format, &text) {
            prop_assert!(parsed.rejected.len() <= parsed.rejected_total);
        }
    }
}

// ---- hygiene ----------------------------------------------------------------------------

fn hygiene(protected: &[&str], v4: u8, v6: u8, exclude_bogons: bool) -> Hygiene {
    Hygiene {
        protected: protected.iter().map(|s| net(s)).collect(),
        min_prefix: MinPrefix { v4, v6 },
        exclude_bogons,
    }
}

fn dropped(cleaned: &Cleaned) -> Vec<(String, String)> {
    cleaned
        .dropped
        .iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect()
}

#[test]
fn entries_overlapping_protected_networks_either_way_are_dropped() {
    let h = hygiene(
        &[
            "203.0.113.0/24",
            "198.51.100.7/32",
            "2001:db8::/32",
            "10.0.0.0/8",
        ],
        8,
        16,
        false,
    );
    let nets = set(&[
        "203.0.113.128/25", // inside a protected net
        "198.51.100.0/24",  // contains a protected host
        "198.51.101.0/24",  // next to it: kept
        "2001:db8:1::/48",  // inside, IPv6
        "2001:db9::/32",    // beside: kept
        "10.5.0.0/16",      // inside a wide protected net that starts before a narrow one
        "203.0.112.0/24",   // just before: kept
    ]);
    let cleaned = clean(nets, &h);
    assert_eq!(
        cleaned.kept,
        set(&["198.51.101.0/24", "2001:db9::/32", "203.0.112.0/24"])
    );
    let by_net: std::collections::BTreeMap<_, _> = cleaned.dropped.iter().copied().collect();
    assert_eq!(
        by_net[&net("203.0.113.128/25")],
        DropReason::Protected(net("203.0.113.0/24"))
    );
    assert_eq!(
        by_net[&net("198.51.100.0/24")],
        DropReason::Protected(net("198.51.100.7/32"))
    );
    assert_eq!(
        by_net[&net("2001:db8:1::/48")],
        DropReason::Protected(net("2001:db8::/32"))
    );
    assert_eq!(
        by_net[&net("10.5.0.0/16")],
        DropReason::Protected(net("10.0.0.0/8"))
    );
}

#[test]
fn a_wide_protected_net_is_found_past_narrow_ones() {
    // Sorted by start, the /24s sit between the /8 and the entry: the running maximum of
    // ends must still find the /8.
    let h = hygiene(&["10.0.0.0/8", "10.0.0.0/24", "10.1.0.0/24"], 0, 0, false);
    let cleaned = clean(set(&["10.200.0.0/16", "11.0.0.0/16"]), &h);
    assert_eq!(cleaned.kept, set(&["11.0.0.0/16"]));
    assert_eq!(
        dropped(&cleaned),
        [(
            "10.200.0.0/16".to_owned(),
            "overlaps the protected network 10.0.0.0/8".to_owned()
        )]
    );
}

#[test]
fn entries_shorter_than_the_minimum_are_refused() {
    let h = hygiene(&[], 8, 16, false);
    let cleaned = clean(
        set(&[
            "0.0.0.0/0",
            "38.0.0.0/8",
            "38.0.0.0/7",
            "::/0",
            "2000::/3",
            "2001::/16",
        ]),
        &h,
    );
    // "Shorter than the minimum": a /8 with min 8 is kept.
    assert_eq!(cleaned.kept, set(&["38.0.0.0/8", "2001::/16"]));
    assert_eq!(
        dropped(&cleaned),
        [
            (
                "0.0.0.0/0".to_owned(),
                "shorter than the minimum prefix /8".to_owned()
            ),
            (
                "38.0.0.0/7".to_owned(),
                "shorter than the minimum prefix /8".to_owned()
            ),
            (
                "::/0".to_owned(),
                "shorter than the minimum prefix /16".to_owned()
            ),
            (
                "2000::/3".to_owned(),
                "shorter than the minimum prefix /16".to_owned()
            ),
        ]
    );
    // 0/0 overlaps everything protected, but is reported as what it is: too broad.
    let h = hygiene(&["192.0.2.1/32"], 8, 16, true);
    assert_eq!(
        clean(set(&["0.0.0.0/0"]), &h).dropped,
        [(net("0.0.0.0/0"), DropReason::TooBroad { min: 8 })]
    );
}

#[test]
fn bogons_are_dropped_only_when_asked() {
    let firehol = set(&[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "192.168.7.0/24",
        "224.0.0.0/3",
        "1.10.16.0/20",
        "fe80::/10",
        "fd00:1::/48",
        "2a00:1::/32",
    ]);
    let kept_all = clean(firehol.clone(), &hygiene(&[], 0, 0, false));
    assert_eq!(kept_all.kept, firehol);

    let cleaned = clean(firehol, &hygiene(&[], 8, 16, true));
    assert_eq!(cleaned.kept, set(&["1.10.16.0/20", "2a00:1::/32"]));
    let by_net: std::collections::BTreeMap<_, _> = cleaned.dropped.iter().copied().collect();
    assert_eq!(
        by_net[&net("192.168.7.0/24")],
        DropReason::Bogon(net("192.168.0.0/16"))
    );
    assert_eq!(
        by_net[&net("fd00:1::/48")],
        DropReason::Bogon(net("fc00::/7"))
    );
    // 224/3 contains 224/4 and 240/4 but is inside no bogon; with min 8 it is too broad.
    assert_eq!(by_net[&net("224.0.0.0/3")], DropReason::TooBroad { min: 8 });
}

#[test]
fn the_bogon_constants_are_networks() {
    for s in BOGONS_V4 {
        assert!(net(s).addr().is_ipv4(), "{s}");
        assert_eq!(crate::net::parse_net(s), Ok(net(s)), "{s}");
    }
    for s in BOGONS_V6 {
        assert!(net(s).addr().is_ipv6(), "{s}");
        assert_eq!(crate::net::parse_net(s), Ok(net(s)), "{s}");
    }
}

// ---- judgement --------------------------------------------------------------------------

fn v4s(range: std::ops::Range<u32>) -> BTreeSet<IpNet> {
    range
        .map(|i| IpNet::V4(Ipv4Net::new((0x0100_0000 + (i << 8)).into(), 24).unwrap()))
        .collect()
}

#[test]
fn the_first_load_always_applies() {
    let new = v4s(0..10);
    let Judgement::Apply(diff) = judge(&BTreeSet::new(), &new, 0.0) else {
        panic!("first load held")
    };
    assert_eq!(diff.added, new.iter().copied().collect::<Vec<_>>());
    assert!(diff.removed.is_empty());
    assert_eq!(
        judge(&BTreeSet::new(), &BTreeSet::new(), 0.5),
        Judgement::Unchanged
    );
}

#[test]
fn an_unchanged_copy_is_unchanged() {
    assert_eq!(judge(&v4s(0..10), &v4s(0..10), 0.0), Judgement::Unchanged);
}

#[test]
fn a_small_change_applies_with_additions_and_removals() {
    let old = set(&["1.0.0.0/24", "2.0.0.0/24", "3.0.0.0/24", "4.0.0.0/24"]);
    let new = set(&["1.0.0.0/23", "2.0.0.0/24", "3.0.0.0/24", "4.0.0.0/24"]);
    assert_eq!(
        judge(&old, &new, 0.5),
        Judgement::Apply(Diff {
            added: vec![net("1.0.0.0/23")],
            removed: vec![net("1.0.0.0/24")],
        })
    );
}

#[test]
fn a_change_over_max_change_is_held() {
    let old = v4s(0..100);
    // 30 removed, 30 added: 60 % of 100.
    let new = v4s(30..130);
    let Judgement::Hold { reason, diff } = judge(&old, &new, 0.5) else {
        panic!("not held")
    };
    assert_eq!((diff.added.len(), diff.removed.len()), (30, 30));
    assert_eq!(
        reason,
        "the update changes 60.0% of the last good copy (30 added, 30 removed, of 100), \
         more than max_change 50.0%"
    );
    assert!(matches!(judge(&old, &new, 0.6), Judgement::Apply(_)));
    assert!(matches!(
        judge(&old, &new, f64::INFINITY),
        Judgement::Apply(_)
    ));
    assert!(matches!(
        judge(&old, &new, f64::NAN),
        Judgement::Hold { .. }
    ));
}

#[test]
fn an_empty_copy_after_a_non_empty_one_is_held() {
    let old = v4s(0..3);
    let Judgement::Hold { reason, diff } = judge(&old, &BTreeSet::new(), f64::INFINITY) else {
        panic!("not held")
    };
    assert_eq!(
        reason,
        "the feed is empty; the last good copy has 3 entries"
    );
    assert_eq!(diff.removed, old.iter().copied().collect::<Vec<_>>());
}

#[test]
fn a_feed_that_turns_into_0_0_0_0_0_is_held() {
    let h = hygiene(&["192.0.2.0/24"], 8, 16, true);
    let last_good = clean(ok(FeedFormat::Netset, "1.2.3.0/24\n5.6.7.0/24\n").nets, &h).kept;
    let broken = clean(ok(FeedFormat::Netset, "0.0.0.0/0\n").nets, &h);
    assert!(broken.kept.is_empty());
    assert_eq!(broken.dropped.len(), 1);
    assert!(matches!(
        judge(&last_good, &broken.kept, 0.5),
        Judgement::Hold { .. }
    ));
}

#[test]
fn the_diff_is_a_merge() {
    let old = set(&["1.0.0.0/24", "3.0.0.0/24", "::/128", "5.0.0.0/24"]);
    let new = set(&["2.0.0.0/24", "3.0.0.0/24", "::1/128", "6.0.0.0/24"]);
    let d = diff(&old, &new);
    assert_eq!(
        d.added,
        [net("2.0.0.0/24"), net("6.0.0.0/24"), net("::1/128")]
    );
    assert_eq!(
        d.removed,
        [net("1.0.0.0/24"), net("5.0.0.0/24"), net("::/128")]
    );
    assert_eq!(d.len(), 6);
}

/// 200k lines through parse, clean and judge: linear work (no timed assertion; in release
/// it takes a few tens of milliseconds).
#[test]
fn a_200k_line_feed_goes_through() {
    let mut text = String::from("# big\n");
    for i in 0..200_000u32 {
        let a = std::net::Ipv4Addr::from(0x0100_0000 + (i << 8));
        text.push_str(&format!("{a}/24\n"));
    }
    let parsed = ok(FeedFormat::Netset, &text);
    assert_eq!(parsed.nets.len(), 200_000);
    // A few hundred protected networks spread over the same space.
    let protected: Vec<String> = (0..300u32)
        .map(|i| format!("{}/32", std::net::Ipv4Addr::from(0x0100_0001 + (i << 16))))
        .collect();
    let protected: Vec<&str> = protected.iter().map(String::as_str).collect();
    let cleaned = clean(parsed.nets, &hygiene(&protected, 8, 16, true));
    assert_eq!(cleaned.dropped.len(), 300);
    assert_eq!(cleaned.kept.len(), 199_700);
    let mut next = cleaned.kept.clone();
    let first = *next.first().unwrap();
    next.remove(&first);
    assert_eq!(
        judge(&cleaned.kept, &next, 0.5),
        Judgement::Apply(Diff {
            added: vec![],
            removed: vec![first]
        })
    );
}
