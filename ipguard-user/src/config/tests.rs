use std::time::Duration;

use ipguard_common::{DEFAULT_LPM_CAPACITY, DEFAULT_SOURCES_CAPACITY, MAX_RATE_RULES};
use ipnet::IpNet;

use super::{list_file::dedup_in_order, *};
use crate::{
    duration::{DurationError, Lifetime},
    model::{Layer, Proto, Scope, UnknownVariant},
    net::NetError,
    testing::net,
};

const EXAMPLE: &str = include_str!("../../../ipguard.example.toml");

const DAY: Duration = Duration::from_secs(86_400);

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "ipguard.toml")
}

/// The error message for `text`, which must be rejected.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted {text:?} as {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn list_files_add_their_entries_after_the_inline_ones() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(
        &feed,
        "# a feed\n198.51.100.0/24\n\n  203.0.113.7  # one host\n2001:db8::/32\n192.0.2.1\n",
    )
    .unwrap();
    let text = format!(
        "[lists]\nblacklist = [\"192.0.2.1\"]\nblacklist_files = [{:?}]\n",
        feed.display().to_string()
    );
    let config = parse(&text).unwrap();
    let got: Vec<String> = config
        .lists
        .blacklist
        .iter()
        .map(|n| n.to_string())
        .collect();
    // Duplicates (192.0.2.1) count once, in first-seen order.
    assert_eq!(
        got,
        [
            "192.0.2.1/32",
            "198.51.100.0/24",
            "203.0.113.7/32",
            "2001:db8::/32"
        ]
    );
}

#[test]
fn list_file_errors_name_the_file_and_line_or_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, "198.51.100.0/24\n# fine\n10.0.0.1/8\n").unwrap();
    let path = feed.display().to_string();
    let text = format!("[lists]\ngraylist_files = [{path:?}]\n");
    assert_eq!(
        error(&text),
        format!("{path}:3: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?")
    );
    assert_eq!(
        error("[lists]\nwhitelist_files = [\"feeds/a.txt\"]\n"),
        "ipguard.toml:2:20: lists.whitelist_files[0]: \"feeds/a.txt\" is not an absolute path"
    );
    let missing = dir.path().join("missing.txt").display().to_string();
    let err = error(&format!("[lists]\nblacklist_files = [{missing:?}]\n"));
    assert!(
        err.starts_with(&format!(
            "ipguard.toml:2:20: lists.blacklist_files[0]: {missing:?} cannot be read: "
        )),
        "{err}"
    );
}

#[test]
fn a_large_list_file_parses_on_two_threads_with_the_right_line_numbers() {
    let mut text = String::new();
    for i in 0..200_000u32 {
        text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)));
    }
    let nets = parse_list_file("big.txt", &text, MinPrefix::default()).unwrap();
    assert_eq!(nets.len(), 200_000);
    assert_eq!(nets[199_999].to_string(), "10.3.13.63/32");
    text.push_str("nope\n");
    let err = parse_list_file("big.txt", &text, MinPrefix::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("big.txt:200001: "), "{err}");
}

#[test]
fn example_file_parses_with_documented_defaults() {
    let config = Config::parse(EXAMPLE, "ipguard.example.toml").unwrap();
    assert_eq!(config.interface.as_deref(), Some("eth0"));
    assert_eq!(config.xdp_mode, XdpMode::Auto);
    assert_eq!(config.lists.whitelist, nets(&["127.0.0.0/8", "::1/128"]));
    assert_eq!(config.lists.graylist, nets(&[]));
    assert_eq!(
        config.lists.blacklist,
        nets(&["203.0.113.0/24", "198.51.100.7/32", "2001:db8:bad::/48"])
    );
    assert_eq!(
        config.maps,
        MapsConfig {
            sources_capacity: 1_048_576,
            lpm_v4_capacity: 2_097_152,
            lpm_v6_capacity: 2_097_152,
        }
    );
    // The values written in the example are the defaults it documents.
    assert_eq!(config.maps, MapsConfig::default());
    assert!(!config.accumulate);
    assert_eq!(config.rules_refresh, DEFAULT_RULES_REFRESH);
    assert_eq!(
        config.rate_limit,
        vec![
            RateLimit {
                kind: RateKind::Syn,
                count: 20,
                window: Duration::from_secs(1),
                ports: vec![],
                exempt: vec![],
            },
            RateLimit {
                kind: RateKind::Syn,
                count: 100,
                window: Duration::from_secs(10),
                ports: vec![80, 443],
                exempt: vec![],
            },
        ]
    );
    assert_eq!(config.escalation, Escalation::default());
    assert_eq!(
        config.report,
        Some(ReportRule {
            count: 3,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
        })
    );
    assert_eq!(config.report, Some(ReportRule::default()));
    // The example's rules are commented out: the demo runs this file.
    assert!(config.rules.is_empty());
}

#[test]
fn example_rules_parse_when_uncommented() {
    let rules: String = EXAMPLE
        .lines()
        .skip_while(|line| !line.starts_with("# Ordered allow/deny rules"))
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| line.starts_with('[') || line.contains(" = "))
        .map(|line| format!("{line}\n"))
        .collect();
    let config = parse(&rules).unwrap();
    assert_eq!(
        config.rules,
        vec![
            Rule {
                action: RuleAction::Allow,
                source: RuleSource::Net(net("203.0.113.0/24")),
                scope: None,
            },
            Rule {
                action: RuleAction::Allow,
                source: RuleSource::Host("monitoring.example.com".into()),
                scope: None,
            },
            Rule {
                action: RuleAction::Deny,
                source: RuleSource::Net(net("0.0.0.0/0")),
                scope: None,
            },
            scoped(RuleAction::Allow, "192.0.2.0/24", Proto::Tcp, &[22]),
            scoped(RuleAction::Deny, "0.0.0.0/0", Proto::Tcp, &[22]),
            scoped(RuleAction::Deny, "::/0", Proto::Tcp, &[22]),
            scoped(RuleAction::Deny, "0.0.0.0/0", Proto::Tcp, &[25]),
            scoped(RuleAction::Deny, "::/0", Proto::Tcp, &[25]),
        ]
    );
}

fn scoped(action: RuleAction, source: &str, proto: Proto, ports: &[u16]) -> Rule {
    Rule {
        action,
        source: RuleSource::Net(net(source)),
        scope: Some(Scope::new(Some(proto), ports.to_vec()).unwrap()),
    }
}

#[test]
fn empty_file_gives_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.interface, None);
    assert_eq!(config.xdp_mode, XdpMode::Auto);
    assert!(config.lists.whitelist.is_empty());
    assert!(config.lists.graylist.is_empty());
    assert!(config.lists.blacklist.is_empty());
    assert_eq!(config.maps.sources_capacity, DEFAULT_SOURCES_CAPACITY);
    assert_eq!(config.maps.lpm_v4_capacity, DEFAULT_LPM_CAPACITY);
    assert_eq!(config.maps.lpm_v6_capacity, DEFAULT_LPM_CAPACITY);
    // Comments and empty sections change nothing.
    assert_eq!(
        parse("# nothing here\n[lists]\n[maps]\n[escalation]\n").unwrap(),
        Config::default()
    );
    assert!(!config.accumulate);
    assert_eq!(config.rules_refresh, Duration::from_secs(300));
    assert!(config.rate_limit.is_empty());
    assert_eq!(config.report, None);
    assert!(config.rules.is_empty());
}

#[test]
fn escalation_defaults() {
    let escalation = parse("").unwrap().escalation;
    assert_eq!(
        escalation,
        Escalation {
            graylist_duration: Duration::from_secs(24 * 3600),
            strikes_to_blacklist: 3,
            strike_window: 7 * DAY,
            blacklist_duration: Lifetime::For(30 * DAY),
            ban_growth: 2.0,
            max_ban: Lifetime::For(365 * DAY),
            relative_block: false,
            reset_strikes_after_blacklist: true,
            state_retention: 30 * DAY,
            grace_violations: 0,
            promote_when_full: 4,
            promote_v4_after: 0,
            promote_v6_after: 0,
            promote_v4_prefix: 24,
            promote_v6_prefix: 64,
            promote_window: Duration::from_secs(600),
        }
    );
    assert_eq!(escalation, Escalation::default());
}

#[test]
fn empty_report_section_gives_report_defaults() {
    assert_eq!(
        parse("[report]\n").unwrap().report,
        Some(ReportRule {
            count: 3,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
        })
    );
    assert_eq!(
        parse("[report]\ncount = 5\nduration = \"1h\"\n")
            .unwrap()
            .report,
        Some(ReportRule {
            count: 5,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(3600),
        })
    );
}

#[test]
fn every_policy_key_is_read() {
    let text = r#"accumulate = true
rules_refresh = "30s"

[[rate_limit]]
kind = "packets"
count = 4294967295
window = "1d"

[[rate_limit]]
kind = "bytes"
count = 1
window = "1ms"
ports = [53]

[escalation]
graylist_duration = "90m"
strikes_to_blacklist = 1
strike_window = "12h"
blacklist_duration = "forever"
ban_growth = 1
max_ban = "forever"
relative_block = true
reset_strikes_after_blacklist = false
state_retention = "90d"
grace_violations = 2
promote_when_full = 0
promote_v4_after = 16
promote_v6_after = 8
promote_v4_prefix = 20
promote_v6_prefix = 56
promote_window = "30m"

[report]
count = 10
window = "5m"
duration = "2h"

[[rules]]
action = "deny"
source = "2001:db8::/32"
"#;
    let config = parse(text).unwrap();
    assert!(config.accumulate);
    assert_eq!(config.rules_refresh, Duration::from_secs(30));
    assert_eq!(
        config.rate_limit,
        vec![
            RateLimit {
                kind: RateKind::Packets,
                count: u32::MAX,
                window: DAY,
                ports: vec![],
                exempt: vec![],
            },
            RateLimit {
                kind: RateKind::Bytes,
                count: 1,
                window: Duration::from_millis(1),
                ports: vec![53],
                exempt: vec![],
            },
        ]
    );
    assert_eq!(
        config.escalation,
        Escalation {
            graylist_duration: Duration::from_secs(90 * 60),
            strikes_to_blacklist: 1,
            strike_window: Duration::from_secs(12 * 3600),
            blacklist_duration: Lifetime::Forever,
            ban_growth: 1.0,
            max_ban: Lifetime::Forever,
            relative_block: true,
            reset_strikes_after_blacklist: false,
            state_retention: 90 * DAY,
            grace_violations: 2,
            promote_when_full: 0,
            promote_v4_after: 16,
            promote_v6_after: 8,
            promote_v4_prefix: 20,
            promote_v6_prefix: 56,
            promote_window: Duration::from_secs(1800),
        }
    );
    assert_eq!(
        config.report,
        Some(ReportRule {
            count: 10,
            window: Duration::from_secs(300),
            duration: Duration::from_secs(7200),
        })
    );
    assert_eq!(
        config.rules,
        vec![Rule {
            action: RuleAction::Deny,
            source: RuleSource::Net(net("2001:db8::/32")),
            scope: None,
        }]
    );
    // Inline tables are the same tables.
    let inline = parse("rate_limit = [{kind = \"syn\", count = 5, window = \"2s\"}]\n").unwrap();
    assert_eq!(
        inline.rate_limit,
        vec![RateLimit {
            kind: RateKind::Syn,
            count: 5,
            window: Duration::from_secs(2),
            ports: vec![],
            exempt: vec![],
        }]
    );
}

#[test]
fn rate_kinds_and_actions_display_and_parse() {
    for kind in RateKind::ALL {
        assert_eq!(kind.to_string().parse::<RateKind>(), Ok(kind));
    }
    assert_eq!(
        ["syn", "packets", "bytes"].map(|s| s.parse::<RateKind>().unwrap()),
        [RateKind::Syn, RateKind::Packets, RateKind::Bytes]
    );
    assert_eq!(RateKind::Bytes.to_string(), "bytes");
    assert_eq!(RuleAction::Allow.to_string(), "allow");
    assert_eq!(RuleAction::Deny.to_string(), "deny");
    assert_eq!("deny".parse::<RuleAction>(), Ok(RuleAction::Deny));
    assert_eq!(
        "Allow".parse::<RuleAction>().unwrap_err().to_string(),
        "unknown variant `Allow`, expected one of `allow`, `deny`"
    );
    assert_eq!(
        RuleSource::Net(net("203.0.113.0/24")).to_string(),
        "203.0.113.0/24"
    );
    assert_eq!(
        RuleSource::Host("example.com".into()).to_string(),
        "example.com"
    );
}

#[test]
fn partial_maps_section_keeps_other_defaults() {
    let config = parse("[maps]\nsources_capacity = 4096\n").unwrap();
    assert_eq!(
        config.maps,
        MapsConfig {
            sources_capacity: 4096,
            lpm_v4_capacity: DEFAULT_LPM_CAPACITY,
            lpm_v6_capacity: DEFAULT_LPM_CAPACITY,
        }
    );
    let config = parse("[maps]\nsources_capacity = 67108864\nlpm_v6_capacity = 1\n").unwrap();
    assert_eq!(config.maps.sources_capacity, MAX_SOURCES_CAPACITY);
    assert_eq!(config.maps.lpm_v6_capacity, 1);
}

#[test]
fn bare_addresses_become_host_prefixes() {
    let config = parse("[lists]\nblacklist = [\"198.51.100.7\", \"2001:db8::1\"]\n").unwrap();
    assert_eq!(
        config.lists.blacklist,
        nets(&["198.51.100.7/32", "2001:db8::1/128"])
    );
    assert_eq!(config.lists.blacklist[0].prefix_len(), 32);
    assert_eq!(config.lists.blacklist[1].prefix_len(), 128);
}

#[test]
fn xdp_modes_parse() {
    for (text, mode) in [
        ("xdp_mode = \"auto\"", XdpMode::Auto),
        ("xdp_mode = \"native\"", XdpMode::Native),
        ("xdp_mode = \"skb\"", XdpMode::Skb),
    ] {
        assert_eq!(parse(text).unwrap().xdp_mode, mode);
    }
}

#[test]
fn xdp_mode_display_and_from_str_round_trip() {
    for mode in XdpMode::ALL {
        assert_eq!(mode.to_string().parse::<XdpMode>(), Ok(mode));
    }
    assert_eq!(XdpMode::Native.to_string(), "native");
    assert_eq!(
        "Native".parse::<XdpMode>(),
        Err(UnknownVariant {
            given: "Native".into(),
            expected: "`auto`, `native`, `skb`".into()
        })
    );
}

#[test]
fn duplicates_within_a_list_are_dropped_and_overlaps_across_lists_kept() {
    let config = parse(
        "[lists]\n\
         whitelist = [\"10.0.0.0/8\"]\n\
         blacklist = [\"10.0.0.0/8\", \"10.1.0.0/16\", \"10.0.0.0/8\"]\n",
    )
    .unwrap();
    assert_eq!(config.lists.whitelist, nets(&["10.0.0.0/8"]));
    assert_eq!(config.lists.blacklist, nets(&["10.0.0.0/8", "10.1.0.0/16"]));
}

#[test]
fn dedup_keeps_first_occurrences_in_file_order() {
    let given = nets(&[
        "10.2.0.0/16",
        "10.1.0.0/16",
        "10.2.0.0/16",
        "::1/128",
        "10.1.0.0/16",
    ]);
    assert_eq!(
        dedup_in_order(given),
        nets(&["10.2.0.0/16", "10.1.0.0/16", "::1/128"])
    );
}

#[test]
fn invalid_entry_names_file_line_column_and_key() {
    let text = "interface = \"eth0\"\n\
                xdp_mode = \"auto\"\n\
                \n\
                [lists]\n\
                blacklist = [\"198.51.100.300\"]\n";
    assert_eq!(
        error(text),
        "ipguard.toml:5:14: lists.blacklist[0]: \"198.51.100.300\" is not a valid IP address or CIDR"
    );
    // The index and position are those of the bad entry, also on a continuation line.
    let text = "[lists]\n\
                whitelist = [\"::1\"]\n\
                graylist = [\n    \"10.0.0.0/8\",\n    \"not-an-ip\",\n]\n";
    assert_eq!(
        error(text),
        "ipguard.toml:5:5: lists.graylist[1]: \"not-an-ip\" is not a valid IP address or CIDR"
    );
    let Err(ConfigError::ListEntry { at, key, error, .. }) = parse(text) else {
        panic!("expected a ListEntry error");
    };
    assert_eq!(at, Position { line: 5, column: 5 });
    assert_eq!(key, "lists.graylist[1]");
    assert_eq!(
        error,
        NetError::Invalid {
            given: "not-an-ip".into()
        }
    );
}

#[test]
fn host_bits_error_suggests_the_network() {
    let text = "interface = \"eth0\"\n\
                \n\
                [lists]\n\
                whitelist = []\n\
                blacklist = [\"203.0.113.1/24\"]\n";
    assert_eq!(
        error(text),
        "ipguard.toml:5:14: lists.blacklist[0]: 203.0.113.1/24 has host bits set; did you mean 203.0.113.0/24?"
    );
}

#[test]
fn entry_errors_from_net_are_reported_with_position() {
    assert_eq!(
        error("[lists]\nwhitelist = [\"10.0.0.0/33\"]\n"),
        "ipguard.toml:2:14: lists.whitelist[0]: \"10.0.0.0/33\": the prefix length must be at most 32 for an IPv4 address"
    );
    assert_eq!(
        error("[lists]\nwhitelist = [\" 10.0.0.1\"]\n"),
        "ipguard.toml:2:14: lists.whitelist[0]: \" 10.0.0.1\" has leading or trailing whitespace; write the address without it"
    );
}

#[test]
fn unknown_field_is_an_error_at_the_key() {
    let text = "interface = \"eth0\"\nxdp_mode = \"auto\"\nwhitelsit = []\n";
    assert_eq!(
        error(text),
        "ipguard.toml:3:1: unknown field `whitelsit`, expected one of `interface`, `xdp_mode`, `accumulate`, `rules_refresh`, `mode`, `lists`, `maps`, `rate_limit`, `escalation`, `report`, `rules`, `api`, `log`, `state`, `protect`, `flood`, `cluster`, `geo`, `feed`"
    );
    assert_eq!(
        error("[lists]\nblacklist = []\nwhitelsit = []\n"),
        "ipguard.toml:3:1: unknown field `whitelsit`, expected one of `whitelist`, `graylist`, `blacklist`, `whitelist_files`, `graylist_files`, `blacklist_files`, `mode`"
    );
    assert_eq!(
        error("[maps]\nsource_capacity = 10\n"),
        "ipguard.toml:2:1: unknown field `source_capacity`, expected one of `sources_capacity`, `lpm_v4_capacity`, `lpm_v6_capacity`"
    );
    assert!(matches!(
        parse("[map]\n"),
        Err(ConfigError::Toml {
            at: Some(Position { line: 1, column: 2 }),
            ..
        })
    ));
}

#[test]
fn bad_xdp_mode_names_the_key_and_the_choices() {
    let text = "interface = \"eth0\"\nxdp_mode = \"fast\"\n";
    assert_eq!(
        error(text),
        "ipguard.toml:2:12: xdp_mode: unknown variant `fast`, expected one of `auto`, `native`, `skb`"
    );
    assert_eq!(
        parse(text),
        Err(ConfigError::XdpMode {
            origin: "ipguard.toml".into(),
            at: Position {
                line: 2,
                column: 12
            },
            error: UnknownVariant {
                given: "fast".into(),
                expected: "`auto`, `native`, `skb`".into()
            },
        })
    );
    assert_eq!(
        error("xdp_mode = 1\n"),
        "ipguard.toml:1:12: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn zero_capacity_is_an_error_naming_the_key() {
    for key in ["sources_capacity", "lpm_v4_capacity", "lpm_v6_capacity"] {
        let max = if key == "sources_capacity" {
            MAX_SOURCES_CAPACITY
        } else {
            u32::MAX
        };
        assert_eq!(
            error(&format!("[maps]\n{key} = 0\n")),
            format!(
                "ipguard.toml:2:{}: maps.{key}: must be between 1 and {max}, got 0",
                key.len() + 4
            )
        );
    }
}

#[test]
fn out_of_range_capacities_are_errors_naming_the_key() {
    assert_eq!(
        error("[maps]\nsources_capacity = 67108865\n"),
        "ipguard.toml:2:20: maps.sources_capacity: must be between 1 and 67108864, got 67108865"
    );
    assert_eq!(
        error("[maps]\nlpm_v4_capacity = -1\n"),
        "ipguard.toml:2:19: maps.lpm_v4_capacity: must be between 1 and 4294967295, got -1"
    );
    assert_eq!(
        error("[maps]\nlpm_v6_capacity = 4294967296\n"),
        "ipguard.toml:2:19: maps.lpm_v6_capacity: must be between 1 and 4294967295, got 4294967296"
    );
    assert_eq!(
        error("[maps]\nlpm_v6_capacity = \"big\"\n"),
        "ipguard.toml:2:19: invalid type: string \"big\", expected i64"
    );
}

#[test]
fn interface_names_the_kernel_rejects_are_errors() {
    assert_eq!(
        parse("interface = \"veth-ipg0\"")
            .unwrap()
            .interface
            .as_deref(),
        Some("veth-ipg0")
    );
    assert_eq!(
        error("interface = \"\"\n"),
        "ipguard.toml:1:13: interface: \"\" is not a valid interface name: it is empty"
    );
    assert_eq!(
        error("interface = \"eth0 \"\n"),
        "ipguard.toml:1:13: interface: \"eth0 \" is not a valid interface name: it contains `/`, `:`, NUL or whitespace"
    );
    assert_eq!(
        error("interface = \"a-very-long-name0\"\n"),
        "ipguard.toml:1:13: interface: \"a-very-long-name0\" is not a valid interface name: it is longer than 15 bytes"
    );
    assert!(matches!(
        parse("interface = \"..\""),
        Err(ConfigError::Interface { .. })
    ));
}

#[test]
fn toml_errors_are_one_line_with_position() {
    // toml's own message for this spans two lines.
    assert_eq!(
        error("interface = \"eth0\"\n[lists\n"),
        "ipguard.toml:2:7: unclosed table, expected `]`"
    );
    assert_eq!(
        error("interface = \"eth0\"\ninterface = \"eth1\"\n"),
        "ipguard.toml:2:1: duplicate key `interface`"
    );
    assert_eq!(
        error("[lists]\nwhitelist = [\"::1\", 3]\n"),
        "ipguard.toml:2:21: invalid type: integer `3`, expected an address or network, or a table with net, and proto or ports"
    );
    assert_eq!(
        error("lists = 3\n"),
        "ipguard.toml:1:9: invalid type: integer `3`, expected the [lists] table"
    );
    for text in ["[lists\n", "a = \"\\q\"\n", "xdp_mode = \"fast\"\n"] {
        assert!(!error(text).contains('\n'), "{text:?}");
    }
}

#[test]
fn position_counts_characters_from_one() {
    let text = "a\n\u{e9}t\u{e9} = 1\n";
    assert_eq!(
        Position::at_offset(text, 0),
        Position { line: 1, column: 1 }
    );
    assert_eq!(
        Position::at_offset(text, 2),
        Position { line: 2, column: 1 }
    );
    // "été" is 5 bytes, 3 characters.
    assert_eq!(
        Position::at_offset(text, 7),
        Position { line: 2, column: 4 }
    );
    // Inside a multi-byte character: the character's own position.
    assert_eq!(
        Position::at_offset(text, 3),
        Position { line: 2, column: 1 }
    );
    assert_eq!(
        Position::at_offset(text, 999),
        Position { line: 3, column: 1 }
    );
    assert_eq!(
        Position {
            line: 5,
            column: 14
        }
        .to_string(),
        "5:14"
    );
}

#[test]
fn missing_file_names_the_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-dir/ipguard.toml");
    let err = Config::from_file(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path.display()
        )
    );
    assert!(matches!(
        err,
        ConfigError::Read {
            kind: std::io::ErrorKind::NotFound,
            ..
        }
    ));
    let err = Config::from_file(Path::new("ipguard.toml-does-not-exist")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ipguard.toml-does-not-exist: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn from_file_reads_and_reports_the_path() {
    let dir = std::env::temp_dir().join(format!("ipguard-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    std::fs::write(&bad, "xdp_mode = \"fast\"\n").unwrap();
    let good_result = Config::from_file(&good);
    let bad_result = Config::from_file(&bad);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(good_result.unwrap(), Config::parse(EXAMPLE, "x").unwrap());
    assert_eq!(
        bad_result.unwrap_err().to_string(),
        format!(
            "{}:1:12: xdp_mode: unknown variant `fast`, expected one of `auto`, `native`, `skb`",
            bad.display()
        )
    );
}
#[test]
fn rule_sources_classify_hosts_and_nets() {
    let source = |s: &str| s.parse::<RuleSource>();
    let host = |s: &str| Ok(RuleSource::Host(s.into()));
    assert_eq!(source("example.com"), host("example.com"));
    assert_eq!(source("EXAMPLE.com."), host("example.com"));
    assert_eq!(source("localhost"), host("localhost"));
    assert_eq!(source("a-b.c0.example"), host("a-b.c0.example"));
    // Digits-only labels are fine as long as some letter is somewhere.
    assert_eq!(source("1.2.3.example"), host("1.2.3.example"));
    assert_eq!(source("10.0.0.1"), Ok(RuleSource::Net(net("10.0.0.1/32"))));
    assert_eq!(source("::1"), Ok(RuleSource::Net(net("::1/128"))));
    assert_eq!(
        source("203.0.113.0/24"),
        Ok(RuleSource::Net(net("203.0.113.0/24")))
    );
    // Longest label (63) and name (253) are accepted, one more is not.
    let label63 = "a".repeat(63);
    assert_eq!(
        source(&format!("{label63}.com")),
        host(&format!("{label63}.com"))
    );
    let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    assert_eq!(name253.len(), 253);
    assert_eq!(source(&name253), host(&name253));
    assert_eq!(source(&format!("{name253}.")), host(&name253));
    for bad in [
        format!("{}.com", "a".repeat(64)),
        format!("{name253}b"),
        "-bad.com".to_owned(),
        "bad-.com".to_owned(),
        "exa mple.com".to_owned(),
        "exa_mple.com".to_owned(),
        "example..com".to_owned(),
        ".example.com".to_owned(),
        "example.com..".to_owned(),
        "".to_owned(),
        "ex\u{e4}mple.com".to_owned(),
        "*.example.com".to_owned(),
    ] {
        assert_eq!(
            source(&bad),
            Err(RuleSourceError::Invalid { given: bad.clone() }),
            "{bad:?}"
        );
    }
    assert_eq!(
        source("-bad.com").unwrap_err().to_string(),
        r#""-bad.com" is neither an IP address, a CIDR nor a valid hostname"#
    );
    // What looks like an address gets the address error.
    assert_eq!(
        source("10.0.0.1/8"),
        Err(RuleSourceError::Net(NetError::HostBitsSet {
            given: "10.0.0.1/8".into(),
            network: net("10.0.0.0/8"),
        }))
    );
    for bad in [
        "300.1.1.1",
        "1.2.3",
        "10.0.0.0/33x",
        "example.com/24",
        "host:80",
        ".",
        "..",
        "1.2.3.4.",
    ] {
        assert!(
            matches!(source(bad), Err(RuleSourceError::Net(_))),
            "{bad:?}: {:?}",
            source(bad)
        );
    }
    assert_eq!(
        source("300.1.1.1").unwrap_err().to_string(),
        r#""300.1.1.1" is not a valid IP address or CIDR"#
    );
    assert_eq!(
        source(" example.com"),
        Err(RuleSourceError::Net(NetError::Whitespace {
            given: " example.com".into()
        }))
    );
}

#[test]
fn rules_keep_file_order_and_duplicates() {
    let text = "[[rules]]\naction = \"deny\"\nsource = \"10.0.0.0/8\"\n\
                [[rules]]\naction = \"allow\"\nsource = \"10.1.0.0/16\"\n\
                [[rules]]\naction = \"deny\"\nsource = \"10.0.0.0/8\"\n";
    let actions: Vec<_> = parse(text)
        .unwrap()
        .rules
        .iter()
        .map(|rule| format!("{} {}", rule.action, rule.source))
        .collect();
    assert_eq!(
        actions,
        ["deny 10.0.0.0/8", "allow 10.1.0.0/16", "deny 10.0.0.0/8"]
    );
}

#[test]
fn rule_errors_name_the_rule() {
    let text = "[[rules]]\n\
                action = \"allow\"\n\
                source = \"example.com\"\n\
                \n\
                [[rules]]\n\
                action = \"deny\"\n\
                source = \"10.0.0.1/8\"\n\
                \n\
                [[rules]]\n\
                action = \"deny\"\n\
                source = \"exa mple.com\"\n";
    assert_eq!(
        error(text),
        "ipguard.toml:7:10: rules[1].source: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
    );
    let text = text.replace("10.0.0.1/8", "10.0.0.0/8");
    assert_eq!(
        error(&text),
        "ipguard.toml:11:10: rules[2].source: \"exa mple.com\" is neither an IP address, a CIDR nor a valid hostname"
    );
    assert_eq!(
        error("[[rules]]\naction = \"permit\"\nsource = \"10.0.0.0/8\"\n"),
        "ipguard.toml:2:10: rules[0].action: unknown variant `permit`, expected one of `allow`, `deny`"
    );
    assert_eq!(
        error("[[rules]]\nsource = \"10.0.0.0/8\"\n"),
        "ipguard.toml:1:1: rules[0]: missing field `action`"
    );
    assert_eq!(
        error("[[rules]]\naction = \"allow\"\nsource = \"::1\"\n\n[[rules]]\naction = \"deny\"\n"),
        "ipguard.toml:5:1: rules[1]: missing field `source`"
    );
    assert_eq!(
        error("[[rules]]\naction = \"deny\"\nsource = \"300.1.1.1\"\n"),
        "ipguard.toml:3:10: rules[0].source: \"300.1.1.1\" is not a valid IP address or CIDR"
    );
    assert_eq!(
        error("[[rules]]\naction = \"deny\"\nsource = \"-bad.com\"\n"),
        "ipguard.toml:3:10: rules[0].source: \"-bad.com\" is neither an IP address, a CIDR nor a valid hostname"
    );
}

#[test]
fn rate_limit_errors_name_the_rule_and_key() {
    let rule = |body: &str| format!("interface = \"eth0\"\n\n[[rate_limit]]\n{body}");
    assert_eq!(
        error(&rule("kind = \"sin\"\ncount = 1\nwindow = \"1s\"\n")),
        "ipguard.toml:4:8: rate_limit[0].kind: unknown variant `sin`, expected one of `syn`, `packets`, `bytes`"
    );
    assert_eq!(
        error(&rule("kind = \"syn\"\ncount = 0\nwindow = \"1s\"\n")),
        "ipguard.toml:5:9: rate_limit[0].count: must be between 1 and 4294967295, got 0"
    );
    assert_eq!(
        error(&rule(
            "kind = \"syn\"\ncount = 4294967296\nwindow = \"1s\"\n"
        )),
        "ipguard.toml:5:9: rate_limit[0].count: must be between 1 and 4294967295, got 4294967296"
    );
    assert_eq!(
        error(&rule("kind = \"syn\"\ncount = -3\nwindow = \"1s\"\n")),
        "ipguard.toml:5:9: rate_limit[0].count: must be between 1 and 4294967295, got -3"
    );
    assert_eq!(
        error(&rule("kind = \"syn\"\nwindow = \"1s\"\n")),
        "ipguard.toml:3:1: rate_limit[0]: missing field `count`"
    );
    assert_eq!(
        error(&rule("count = 1\nwindow = \"1s\"\n")),
        "ipguard.toml:3:1: rate_limit[0]: missing field `kind`"
    );
    assert_eq!(
        error(&rule("kind = \"syn\"\ncount = 1\n")),
        "ipguard.toml:3:1: rate_limit[0]: missing field `window`"
    );
    assert_eq!(
        error("rate_limit = [{kind = \"syn\", count = 1, window = \"1s\"}, {kind = \"syn\"}]\n"),
        "ipguard.toml:1:57: rate_limit[1]: missing field `count`"
    );
    assert_eq!(
        error(&rule("kind = \"syn\"\ncount = 1\nwindow = \"1s\"\nport = [80]\n")),
        "ipguard.toml:7:1: unknown field `port`, expected one of `kind`, `count`, `window`, `ports`, `exempt`"
    );
    assert_eq!(
        error(&rule(
            "kind = \"syn\"\ncount = 1\nwindow = \"1s\"\nports = [80, 443, 0]\n"
        )),
        "ipguard.toml:7:19: rate_limit[0].ports[2]: must be between 1 and 65535, got 0"
    );
    assert_eq!(
        error(&rule(
            "kind = \"syn\"\ncount = 1\nwindow = \"1s\"\nports = [65536]\n"
        )),
        "ipguard.toml:7:10: rate_limit[0].ports[0]: must be between 1 and 65535, got 65536"
    );
}

#[test]
fn rate_limit_windows_are_durations_within_a_day() {
    let text = |window: &str| {
        format!(
            "[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\n\n\
             [[rate_limit]]\nkind = \"packets\"\ncount = 1\nwindow = \"{window}\"\n"
        )
    };
    assert_eq!(
        error(&text("10x")),
        "ipguard.toml:9:10: rate_limit[1].window: \"10x\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error(&text("forever")),
        "ipguard.toml:9:10: rate_limit[1].window: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error(&text("0ms")),
        "ipguard.toml:9:10: rate_limit[1].window: must be longer than 0, got \"0ms\""
    );
    assert_eq!(
        error(&text("25h")),
        "ipguard.toml:9:10: rate_limit[1].window: must be between 1ms and 1d, got 25h"
    );
    assert_eq!(
        error(&text("86400001ms")),
        "ipguard.toml:9:10: rate_limit[1].window: must be between 1ms and 1d, got 86400001ms"
    );
    assert_eq!(parse(&text("24h")).unwrap().rate_limit[1].window, DAY);
    assert_eq!(
        parse(&text("1ms")).unwrap().rate_limit[1].window,
        Duration::from_millis(1)
    );
    assert_eq!(
        error("[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = 1\n"),
        "ipguard.toml:4:10: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn at_most_four_rate_rules() {
    let rule = "[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\n";
    let four = rule.repeat(4);
    assert_eq!(parse(&four).unwrap().rate_limit.len(), MAX_RATE_RULES);
    // The position is that of the first rule too many.
    assert_eq!(
        error(&format!("accumulate = true\n\n{}", rule.repeat(5))),
        "ipguard.toml:19:1: rate_limit: at most 4 rules are supported, found 5"
    );
    assert!(matches!(
        parse(&rule.repeat(7)),
        Err(ConfigError::TooMany {
            found: 7,
            max: MAX_RATE_RULES,
            ..
        })
    ));
}

#[test]
fn rule_ports_at_most_eight_distinct_duplicates_removed() {
    let text = |ports: &str| {
        format!("[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\nports = {ports}\n")
    };
    assert_eq!(
        parse(&text("[443, 80, 443, 80, 22]")).unwrap().rate_limit[0].ports,
        [443, 80, 22]
    );
    assert_eq!(
        parse(&text("[1, 2, 3, 4, 5, 6, 7, 8, 8, 1, 65535]"))
            .unwrap_err()
            .to_string(),
        "ipguard.toml:5:40: rate_limit[0].ports: at most 8 distinct ports are supported, found 9"
    );
    // Eight distinct ports, written with repeats, are fine.
    assert_eq!(
        parse(&text("[1, 2, 3, 4, 5, 6, 7, 8, 8, 1, 2]"))
            .unwrap()
            .rate_limit[0]
            .ports,
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        parse(&text("[]")).unwrap().rate_limit[0].ports,
        Vec::<u16>::new()
    );
}

#[test]
fn escalation_errors_name_the_key() {
    let esc = |body: &str| format!("interface = \"eth0\"\n[escalation]\n{body}\n");
    assert_eq!(
        error(&esc("blacklist_duration = \"ever\"")),
        "ipguard.toml:3:22: escalation.blacklist_duration: \"ever\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\"), or \"forever\""
    );
    assert_eq!(
        error(&esc("max_ban = \"0d\"")),
        "ipguard.toml:3:11: escalation.max_ban: must be longer than 0, got \"0d\""
    );
    assert_eq!(
        error(&esc("graylist_duration = \"forever\"")),
        "ipguard.toml:3:21: escalation.graylist_duration: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error(&esc("strike_window = \"1.5d\"")),
        "ipguard.toml:3:17: escalation.strike_window: \"1.5d\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error(&esc("state_retention = \" 30d\"")),
        "ipguard.toml:3:19: escalation.state_retention: \" 30d\" has leading or trailing whitespace; write the duration without it"
    );
    assert_eq!(
        error(&esc("ban_growth = 0.5")),
        "ipguard.toml:3:14: escalation.ban_growth: must be a finite number >= 1.0, got 0.5"
    );
    for (value, shown) in [
        ("nan", "nan"),
        ("inf", "inf"),
        ("-inf", "-inf"),
        ("0", "0"),
        ("-2.5", "-2.5"),
    ] {
        assert_eq!(
            error(&esc(&format!("ban_growth = {value}"))),
            format!("ipguard.toml:3:14: escalation.ban_growth: must be a finite number >= 1.0, got {shown}")
        );
    }
    assert_eq!(
        parse(&esc("ban_growth = 1.5"))
            .unwrap()
            .escalation
            .ban_growth,
        1.5
    );
    assert_eq!(
        error(&esc("strikes_to_blacklist = 0")),
        "ipguard.toml:3:24: escalation.strikes_to_blacklist: must be between 1 and 4294967295, got 0"
    );
    assert_eq!(
        error(&esc("grace_violations = -1")),
        "ipguard.toml:3:20: escalation.grace_violations: must be between 0 and 4294967295, got -1"
    );
    assert_eq!(
        error(&esc("relative_block = \"yes\"")),
        "ipguard.toml:3:18: invalid type: string \"yes\", expected a boolean"
    );
    assert_eq!(
        error(&esc("strikes = 3")),
        "ipguard.toml:3:1: unknown field `strikes`, expected one of `graylist_duration`, `strikes_to_blacklist`, `strike_window`, `blacklist_duration`, `ban_growth`, `max_ban`, `relative_block`, `reset_strikes_after_blacklist`, `state_retention`, `grace_violations`, `promote_when_full`, `promote_v4_after`, `promote_v6_after`, `promote_v4_prefix`, `promote_v6_prefix`, `promote_window`"
    );
    assert_eq!(
        error(&esc("promote_v4_prefix = 32")),
        "ipguard.toml:3:21: escalation.promote_v4_prefix: must be between 8 and 31, got 32"
    );
    assert_eq!(
        error(&esc("promote_v6_prefix = 15")),
        "ipguard.toml:3:21: escalation.promote_v6_prefix: must be between 16 and 127, got 15"
    );
    assert_eq!(
        error(&esc("promote_v4_after = -1")),
        "ipguard.toml:3:20: escalation.promote_v4_after: must be between 0 and 4294967295, got -1"
    );
    assert!(error(&esc("promote_window = \"0s\""))
        .starts_with("ipguard.toml:3:18: escalation.promote_window: "));
    // A promoted prefix is never broader than the lists take.
    assert_eq!(
        error("[protect]\nmin_prefix_v4 = 16\n[escalation]\npromote_v4_prefix = 12\n"),
        "ipguard.toml:4:21: escalation.promote_v4_prefix: must be between 16 and 31, got 12"
    );
    assert_eq!(
        error("escalation = 3\n"),
        "ipguard.toml:1:14: invalid type: integer `3`, expected the [escalation] table"
    );
}

#[test]
fn report_errors_name_the_key() {
    assert_eq!(
        error("[report]\ncount = 0\n"),
        "ipguard.toml:2:9: report.count: must be between 1 and 4294967295, got 0"
    );
    assert_eq!(
        error("[report]\nwindow = \"60\"\n"),
        "ipguard.toml:2:10: report.window: \"60\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error("[report]\nduration = \"forever\"\n"),
        "ipguard.toml:2:12: report.duration: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
}

#[test]
fn api_log_state_defaults() {
    let config = parse("").unwrap();
    assert_eq!(
        config.api,
        ApiConfig {
            listen: "127.0.0.1:9180".parse().unwrap(),
            token_file: None,
            max_body_bytes: 8 * 1024 * 1024,
            metrics_auth: false,
        }
    );
    assert_eq!(
        config.log,
        LogConfig {
            format: LogFormat::Text,
            path: None,
            max_bytes: 5 * 1024 * 1024,
            backups: 7,
            max_lines_per_sec: 100,
            drop_interval: Duration::from_secs(10),
        }
    );
    assert_eq!(
        config.state,
        StateConfig {
            dir: "/var/lib/ipguard".into(),
            pin_dir: "/sys/fs/bpf/ipguard".into(),
            keep_attached: false,
        }
    );
    assert_eq!(config.api, ApiConfig::default());
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.state, StateConfig::default());
    // Empty sections are the defaults too.
    assert_eq!(parse("[api]\n[log]\n[state]\n").unwrap(), Config::default());
}

#[test]
fn example_api_log_state_are_the_defaults_and_uncomment_cleanly() {
    let config = Config::parse(EXAMPLE, "ipguard.example.toml").unwrap();
    assert_eq!(config.api, ApiConfig::default());
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.state, StateConfig::default());
    // The commented-out keys are valid where they stand.
    let uncommented = EXAMPLE
        .replace(
            "# token_file = \"/etc/ipguard/api-token\"",
            "token_file = \"/etc/ipguard/api-token\"",
        )
        .replace(
            "# path = \"/var/log/ipguard/decisions.log\"",
            "path = \"/var/log/ipguard/decisions.log\"",
        );
    assert_ne!(uncommented, EXAMPLE);
    let config = Config::parse(&uncommented, "ipguard.example.toml").unwrap();
    assert_eq!(
        config.api.token_file.as_deref(),
        Some(Path::new("/etc/ipguard/api-token"))
    );
    assert_eq!(
        config.log.path.as_deref(),
        Some(Path::new("/var/log/ipguard/decisions.log"))
    );
}

#[test]
fn every_api_log_state_key_is_read() {
    let text = r#"[api]
listen = "[::1]:8080"
token_file = "/run/secrets/ipguard token"
max_body_bytes = 1024

[log]
format = "json"
path = "/tmp/ipguard/decisions.log"
max_bytes = 4096
backups = 0
max_lines_per_sec = 1
drop_interval = "1m"

[state]
dir = "/srv/ipguard/"
pin_dir = "/sys/fs/bpf/other"
"#;
    let config = parse(text).unwrap();
    assert_eq!(
        config.api,
        ApiConfig {
            listen: "[::1]:8080".parse().unwrap(),
            token_file: Some("/run/secrets/ipguard token".into()),
            max_body_bytes: 1024,
            metrics_auth: false,
        }
    );
    assert_eq!(
        config.log,
        LogConfig {
            format: LogFormat::Json,
            path: Some("/tmp/ipguard/decisions.log".into()),
            max_bytes: 4096,
            backups: 0,
            max_lines_per_sec: 1,
            drop_interval: Duration::from_secs(60),
        }
    );
    assert_eq!(
        config.state,
        StateConfig {
            dir: "/srv/ipguard/".into(),
            pin_dir: "/sys/fs/bpf/other".into(),
            keep_attached: false,
        }
    );
    // The upper bounds are accepted.
    let config = parse(
        "[api]\nlisten = \"0.0.0.0:0\"\nmax_body_bytes = 268435456\n\
         [log]\nmax_bytes = 9223372036854775807\nbackups = 1000\n\
         max_lines_per_sec = 4294967295\ndrop_interval = \"1s\"\n",
    )
    .unwrap();
    assert_eq!(config.api.listen, "0.0.0.0:0".parse().unwrap());
    assert_eq!(config.api.max_body_bytes, 256 << 20);
    assert_eq!(config.log.max_bytes, i64::MAX as u64);
    assert_eq!(config.log.backups, 1000);
    assert_eq!(config.log.max_lines_per_sec, u32::MAX);
    assert_eq!(config.log.drop_interval, Duration::from_secs(1));
}

#[test]
fn api_errors_name_the_key() {
    assert_eq!(
        error("[api]\n\nlisten = \"localhost:80\"\n"),
        "ipguard.toml:3:10: api.listen: \"localhost:80\" is not an IP address and port (e.g. \"127.0.0.1:9180\")"
    );
    for given in [
        "127.0.0.1",
        "::1:9180",
        "127.0.0.1:65536",
        " 127.0.0.1:80",
        "",
    ] {
        assert_eq!(
            error(&format!("[api]\nlisten = \"{given}\"\n")),
            format!("ipguard.toml:2:10: api.listen: {given:?} is not an IP address and port (e.g. \"127.0.0.1:9180\")")
        );
    }
    assert_eq!(
        error("[api]\nlisten = 9180\n"),
        "ipguard.toml:2:10: invalid type: integer `9180`, expected a string"
    );
    assert_eq!(
        error("[api]\ntoken_file = \"api-token\"\n"),
        "ipguard.toml:2:14: api.token_file: \"api-token\" is not an absolute path"
    );
    assert_eq!(
        error("[api]\ntoken_file = \"/etc/ipguard/\"\n"),
        "ipguard.toml:2:14: api.token_file: \"/etc/ipguard/\" names a directory: give the path of a file"
    );
    assert_eq!(
        error("[api]\nmax_body_bytes = 1023\n"),
        "ipguard.toml:2:18: api.max_body_bytes: must be between 1024 and 268435456, got 1023"
    );
    assert_eq!(
        error("[api]\nmax_body_bytes = 268435457\n"),
        "ipguard.toml:2:18: api.max_body_bytes: must be between 1024 and 268435456, got 268435457"
    );
    assert_eq!(
        error("[api]\ntoken = \"secret\"\n"),
        "ipguard.toml:2:1: unknown field `token`, expected one of `listen`, `token_file`, `max_body_bytes`, `metrics_auth`"
    );
    assert_eq!(
        error("api = 3\n"),
        "ipguard.toml:1:7: invalid type: integer `3`, expected the [api] table"
    );
}

#[test]
fn log_errors_name_the_key() {
    let log = |body: &str| format!("[log]\n{body}\n");
    assert_eq!(
        error(&log("path = \"decisions.log\"")),
        "ipguard.toml:2:8: log.path: \"decisions.log\" is not an absolute path"
    );
    assert_eq!(
        error(&log("path = \"\"")),
        "ipguard.toml:2:8: log.path: \"\" is not an absolute path"
    );
    for dir in ["/var/log/ipguard/", "/", "/var/log/.", "/var/log/.."] {
        assert_eq!(
            error(&log(&format!("path = \"{dir}\""))),
            format!(
                "ipguard.toml:2:8: log.path: {dir:?} names a directory: give the path of a file"
            )
        );
    }
    assert_eq!(
        error(&log("path = \"/var/log/a\\u0000b\"")),
        "ipguard.toml:2:8: log.path: \"/var/log/a\\0b\" contains a NUL byte"
    );
    assert_eq!(
        error(&log("max_bytes = 4095")),
        "ipguard.toml:2:13: log.max_bytes: must be between 4096 and 9223372036854775807, got 4095"
    );
    assert_eq!(
        error(&log("max_bytes = -1")),
        "ipguard.toml:2:13: log.max_bytes: must be between 4096 and 9223372036854775807, got -1"
    );
    assert_eq!(
        error(&log("backups = 1001")),
        "ipguard.toml:2:11: log.backups: must be between 0 and 1000, got 1001"
    );
    assert_eq!(
        error(&log("backups = -1")),
        "ipguard.toml:2:11: log.backups: must be between 0 and 1000, got -1"
    );
    assert_eq!(
        error(&log("max_lines_per_sec = 0")),
        "ipguard.toml:2:21: log.max_lines_per_sec: must be between 1 and 4294967295, got 0"
    );
    assert_eq!(
        error(&log("max_lines_per_sec = 4294967296")),
        "ipguard.toml:2:21: log.max_lines_per_sec: must be between 1 and 4294967295, got 4294967296"
    );
    assert_eq!(
        error(&log("drop_interval = \"500ms\"")),
        "ipguard.toml:2:17: log.drop_interval: must be at least 1s, got 500ms"
    );
    assert_eq!(
        error(&log("drop_interval = \"0s\"")),
        "ipguard.toml:2:17: log.drop_interval: must be longer than 0, got \"0s\""
    );
    assert_eq!(
        error(&log("drop_interval = \"forever\"")),
        "ipguard.toml:2:17: log.drop_interval: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error(&log("drop_interval = 10")),
        "ipguard.toml:2:17: invalid type: integer `10`, expected a string"
    );
    assert_eq!(
        error(&log("file = \"/var/log/x\"")),
        "ipguard.toml:2:1: unknown field `file`, expected one of `format`, `path`, `max_bytes`, `backups`, `max_lines_per_sec`, `drop_interval`"
    );
}

#[test]
fn state_errors_name_the_key() {
    assert_eq!(
        error("[state]\ndir = \"var/lib/ipguard\"\n"),
        "ipguard.toml:2:7: state.dir: \"var/lib/ipguard\" is not an absolute path"
    );
    assert_eq!(
        error("[state]\npin_dir = \"./pins\"\n"),
        "ipguard.toml:2:11: state.pin_dir: \"./pins\" is not an absolute path"
    );
    assert_eq!(
        error("[state]\npin_dir = \"\"\n"),
        "ipguard.toml:2:11: state.pin_dir: \"\" is not an absolute path"
    );
    assert_eq!(
        error("[state]\ndirectory = \"/x\"\n"),
        "ipguard.toml:2:1: unknown field `directory`, expected one of `dir`, `pin_dir`, `keep_attached`"
    );
    assert_eq!(
        parse("[state]\npin_dir = \"/sys/fs/bpf/\"\n")
            .unwrap()
            .state
            .pin_dir,
        Path::new("/sys/fs/bpf/")
    );
}

#[test]
fn api_log_state_errors_are_structured() {
    assert_eq!(
        parse("[api]\nlisten = \"localhost:80\"\n"),
        Err(ConfigError::SocketAddr {
            origin: "ipguard.toml".into(),
            at: Position {
                line: 2,
                column: 10
            },
            key: "api.listen",
            given: "localhost:80".into(),
        })
    );
    assert_eq!(
        parse("[log]\npath = \"x.log\"\n"),
        Err(ConfigError::Path {
            origin: "ipguard.toml".into(),
            at: Position { line: 2, column: 8 },
            key: "log.path",
            given: "x.log".into(),
            problem: "is not an absolute path",
        })
    );
}

#[test]
fn rules_refresh_is_at_least_a_second() {
    assert_eq!(
        parse("rules_refresh = \"1s\"").unwrap().rules_refresh,
        Duration::from_secs(1)
    );
    assert_eq!(parse("rules_refresh = \"1d\"").unwrap().rules_refresh, DAY);
    assert_eq!(
        error("rules_refresh = \"999ms\"\n"),
        "ipguard.toml:1:17: rules_refresh: must be at least 1s, got 999ms"
    );
    assert_eq!(
        error("rules_refresh = \"0s\"\n"),
        "ipguard.toml:1:17: rules_refresh: must be longer than 0, got \"0s\""
    );
    assert_eq!(
        error("rules_refresh = \"5 m\"\n"),
        "ipguard.toml:1:17: rules_refresh: \"5 m\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
    );
    assert_eq!(
        error("accumulate = \"yes\"\n"),
        "ipguard.toml:1:14: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn policy_errors_are_structured() {
    let text = "[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"10x\"\n";
    assert_eq!(
        parse(text),
        Err(ConfigError::Duration {
            origin: "ipguard.toml".into(),
            at: Position {
                line: 4,
                column: 10
            },
            key: "rate_limit[0].window".into(),
            error: DurationError::Invalid {
                given: "10x".into(),
                forever_allowed: false
            },
        })
    );
    assert_eq!(
        parse("[[rules]]\naction = \"deny\"\n"),
        Err(ConfigError::MissingField {
            origin: "ipguard.toml".into(),
            at: Position { line: 1, column: 1 },
            key: "rules[0]".into(),
            field: "source",
        })
    );
}

/// Broken files as an operator (or a bad feed) makes them: every one gets a one-line error
/// that starts with the file's name and a place, and nothing panics.
mod fuzzed {
    use proptest::prelude::*;

    use super::*;

    /// The example config with a few edits: bytes inserted, lines dropped or repeated,
    /// a value swapped for another, the text cut short.
    fn broken_config() -> impl Strategy<Value = String> {
        let edit = prop_oneof![
            (any::<prop::sample::Index>(), "[\\PC]{1,8}").prop_map(|(at, s)| (0u8, at, s)),
            (any::<prop::sample::Index>(), Just(String::new())).prop_map(|(at, s)| (1, at, s)),
            (any::<prop::sample::Index>(), Just(String::new())).prop_map(|(at, s)| (2, at, s)),
            (
                any::<prop::sample::Index>(),
                prop_oneof![
                    Just("\"0.0.0.0/0\"".to_owned()),
                    Just("\"forever\"".to_owned()),
                    Just("-1".to_owned()),
                    Just("99999999999999999999".to_owned()),
                    Just("\"3000000d\"".to_owned()),
                    Just("[]".to_owned()),
                    Just("{".to_owned()),
                    Just("\"\\u0000\"".to_owned()),
                ]
            )
                .prop_map(|(at, s)| (3, at, s)),
            (any::<prop::sample::Index>(), Just(String::new())).prop_map(|(at, s)| (4, at, s)),
        ];
        // The example config, every key documented: valid as it is.
        let base = EXAMPLE.to_owned();
        prop::collection::vec(edit, 1..4).prop_map(move |edits| {
            let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
            for (kind, at, s) in edits {
                if lines.is_empty() {
                    break;
                }
                let i = at.index(lines.len());
                match kind {
                    0 => {
                        let l = &mut lines[i];
                        let mut cut = at.index(l.len() + 1);
                        while !l.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        l.insert_str(cut, &s);
                    }
                    1 => {
                        lines.remove(i);
                    }
                    2 => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    3 => {
                        if let Some((k, _)) = lines[i].clone().split_once('=') {
                            lines[i] = format!("{k}= {s}");
                        }
                    }
                    _ => lines.truncate(i),
                }
            }
            lines.join("\n")
        })
    }

    fn assert_one_line_with_place(message: &str, origin: &str) -> Result<(), TestCaseError> {
        prop_assert!(!message.contains('\n'), "two lines: {message}");
        let rest = message.strip_prefix(origin).unwrap_or("");
        prop_assert!(
            rest.starts_with(':'),
            "does not start with {origin}: {message}"
        );
        // `:line:col: ` or `:line: ` (list files) — a place, then the message.
        let place: Vec<&str> = rest[1..].splitn(3, ':').collect();
        prop_assert!(
            place.first().is_some_and(|p| p.parse::<usize>().is_ok()),
            "no line number: {message}"
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn broken_configs_get_a_one_line_error_with_its_place(text in broken_config()) {
            if let Err(e) = Config::parse(&text, "ipguard.toml") {
                assert_one_line_with_place(&e.to_string(), "ipguard.toml")?;
            }
        }

        #[test]
        fn broken_list_files_get_a_one_line_error_with_its_line(
            lines in prop::collection::vec(
                prop_oneof![
                    Just("203.0.113.0/24".to_owned()),
                    Just("# comment".to_owned()),
                    Just(String::new()),
                    Just("0.0.0.0/0".to_owned()),
                    Just("10.0.0.1/8".to_owned()),
                    Just("2000::/3".to_owned()),
                    "[0-9a-f:./ ]{1,20}",
                    "\\PC{0,30}",
                ],
                0..40,
            )
        ) {
            let text = lines.join("\n");
            if let Err(e) = parse_list_file("feed.txt", &text, MinPrefix::default()) {
                assert_one_line_with_place(&e.to_string(), "feed.txt")?;
            }
        }
    }
}

#[test]
fn a_fifo_or_a_device_as_a_list_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("feed.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; creates a FIFO in our own temp directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [fifo.to_str().unwrap(), "/dev/zero"] {
        let t = std::time::Instant::now();
        let e = error(&format!("[lists]\nblacklist_files = [\"{path}\"]\n"));
        assert!(e.contains("not a regular file"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1), "{path} blocked");
    }
}

#[test]
fn a_huge_value_is_not_echoed_whole() {
    let name = "x".repeat(10 << 20);
    let e = error(&format!("interface = \"{name}\"\n"));
    assert!(e.len() < 1000, "{} bytes of error", e.len());
    assert!(
        e.starts_with("ipguard.toml:1:13: interface:"),
        "{}",
        &e[..100]
    );
}

#[test]
fn broad_list_entries_are_refused_with_their_place() {
    assert_eq!(
        error("[lists]\nblacklist = [\"128.0.0.0/1\"]\n"),
        "ipguard.toml:2:14: lists.blacklist[0]: 128.0.0.0/1 is broader than /8, the shortest prefix the lists take (set protect.min_prefix_v4 to allow it)"
    );
    assert!(error("[lists]\nwhitelist = [\"::/0\"]\n").contains("protect.min_prefix_v6"));
    // The operator can lower the minimum.
    let c = parse("[protect]\nmin_prefix_v4 = 0\n[lists]\nblacklist = [\"0.0.0.0/0\"]\n").unwrap();
    assert_eq!(c.lists.blacklist, nets(&["0.0.0.0/0"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.txt");
    std::fs::write(&file, "# a feed\n203.0.113.0/24\n2000::/3\n").unwrap();
    assert_eq!(
        error(&format!("[lists]\nblacklist_files = [\"{}\"]\n", file.display())),
        format!(
            "{}:3: 2000::/3 is broader than /16, the shortest prefix the lists take (set protect.min_prefix_v6 to allow it)",
            file.display()
        )
    );
}

#[test]
fn flood_budget_is_off_by_default_and_bounded() {
    assert_eq!(
        Config::parse("", "ipguard.toml")
            .unwrap()
            .flood
            .unknown_syn_rate,
        0
    );
    let c = Config::parse("[flood]\nunknown_syn_rate = 2000\n", "ipguard.toml").unwrap();
    assert_eq!(c.flood.unknown_syn_rate, 2000);
    assert_eq!(
        error("[flood]\nunknown_syn_rate = -1\n"),
        "ipguard.toml:2:20: flood.unknown_syn_rate: must be between 0 and 100000000, got -1"
    );
    assert!(error("[flood]\nunknown_syn = 5\n").contains("unknown field `unknown_syn`"));
}

#[test]
fn cluster_is_off_by_default_and_checked_with_its_place() {
    assert_eq!(Config::parse("", "ipguard.toml").unwrap().cluster, None);
    let c = Config::parse(
        "[cluster]\nredis = \"redis://198.18.0.1:6379/2\"\nnode = \"web-1\"\nshare = [\"policy\", \"manual\", \"policy\"]\n",
        "ipguard.toml",
    )
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(c.node, "web-1");
    assert_eq!(c.prefix, "ipguard");
    assert_eq!(c.share, [SharedOrigin::Manual, SharedOrigin::Policy]);
    assert_eq!(c.apply, SharedOrigin::ALL);
    assert!(c.password_file.is_none());
    let tls = Config::parse(
        "[cluster]\nredis = \"rediss://redis.internal:6380/0\"\nca_file = \"/etc/ipguard/ca.pem\"\n",
        "ipguard.toml",
    )
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ipguard/ca.pem"))
    );
    for (text, expected) in [
        (
            "[cluster]\nnode = \"a\"\n",
            "ipguard.toml:1:1: cluster: missing field `redis`",
        ),
        (
            "[cluster]\nredis = \"rediss://h:6379/#insecure\"\n",
            "ipguard.toml:2:9: cluster.redis: rediss:// without certificate checks (#insecure) is refused",
        ),
        (
            "[cluster]\nredis = \"redis://h:6379\"\nca_file = \"/etc/ca.pem\"\n",
            "ipguard.toml:3:11: cluster.ca_file: needs a rediss:// (TLS) URL in cluster.redis",
        ),
        (
            "[cluster]\nredis = \"http://h\"\n",
            "ipguard.toml:2:9: cluster.redis: \"http://h\" is not a redis:// or rediss:// URL",
        ),
        (
            "[cluster]\nredis = \"redis://:secret@h:6379\"\n",
            "ipguard.toml:2:9: cluster.redis: do not put the password in the URL",
        ),
        (
            "[cluster]\nredis = \"redis://h\"\nnode = \"a b\"\n",
            "ipguard.toml:3:8: cluster.node: \"a b\" may hold only letters, digits",
        ),
        (
            "[cluster]\nredis = \"redis://h\"\napply = [\"manual\", \"config\"]\n",
            "ipguard.toml:3:20: cluster.apply[1]: unknown variant `config`",
        ),
        (
            "[cluster]\nredis = \"redis://h\"\npassword_file = \"pw\"\n",
            "ipguard.toml:3:17: cluster.password_file: \"pw\" is not an absolute path",
        ),
    ] {
        let e = error(text);
        assert!(e.starts_with(expected), "{text}: {e}");
    }
}

#[test]
fn log_format_is_text_or_json() {
    assert_eq!(parse("").unwrap().log.format, LogFormat::Text);
    assert_eq!(
        parse("[log]\nformat = \"json\"\n").unwrap().log.format,
        LogFormat::Json
    );
    let e = error("[log]\nformat = \"xml\"\n");
    assert!(
        e.starts_with("ipguard.toml:2:10: log.format: unknown variant `xml`, expected one of"),
        "{e}"
    );
    // Read before the logger exists: the key alone, and nothing for a broken file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ipguard.toml");
    std::fs::write(
        &file,
        "[log]\nformat = \"json\"\n[lists]\nblacklist = [\"x\"]\n",
    )
    .unwrap();
    assert_eq!(Config::peek_log_format(&file), Some(LogFormat::Json));
    std::fs::write(&file, "[log]\nformat = \"json\"\n[[[").unwrap();
    assert_eq!(Config::peek_log_format(&file), None);
    assert_eq!(Config::peek_log_format(&dir.path().join("absent")), None);
}

#[test]
fn geo_section_is_checked_and_named() {
    let ok = parse(
        "[geo]\ndatabase = \"/var/lib/GeoIP/c.mmdb\"\nblock_countries = [\"RU\", \"KP\"]\n\
         asn_database = \"/var/lib/GeoIP/a.mmdb\"\nblock_asns = [64500]\n",
    )
    .unwrap()
    .geo
    .unwrap();
    assert_eq!(
        ok.countries,
        GeoCountries::Block(["KP".to_owned(), "RU".to_owned()].into())
    );
    assert_eq!(ok.block_asns, [64500].into());
    assert_eq!(ok.list, crate::model::ListKind::Blacklist);
    let allow =
        parse("[geo]\ndatabase = \"/g.mmdb\"\nallow_countries = [\"DE\"]\nlist = \"graylist\"\n")
            .unwrap()
            .geo
            .unwrap();
    assert_eq!(
        allow.countries,
        GeoCountries::Allow(["DE".to_owned()].into())
    );
    assert_eq!(allow.list, crate::model::ListKind::Graylist);
    for (text, expected) in [
        (
            "[geo]\ndatabase = \"/g.mmdb\"\nblock_countries = [\"DE\", \"uk\"]\n",
            "ipguard.toml:3:26: geo.block_countries[1]: \"uk\" is not a country code",
        ),
        (
            "[geo]\ndatabase = \"/g.mmdb\"\nblock_countries = [\"DE\"]\nallow_countries = [\"FR\"]\n",
            "ipguard.toml:4:20: geo.allow_countries: set block_countries or allow_countries, not both",
        ),
        (
            "[geo]\ndatabase = \"/g.mmdb\"\nallow_countries = []\n",
            "geo.allow_countries: is empty: that would drop every public address",
        ),
        (
            "[geo]\nblock_countries = [\"DE\"]\n",
            "missing field `database`",
        ),
        (
            "[geo]\ndatabase = \"/g.mmdb\"\nblock_asns = [64500]\n",
            "missing field `asn_database`",
        ),
        (
            "[geo]\nasn_database = \"/a.mmdb\"\nblock_asns = [0]\n",
            "ipguard.toml:3:15: geo.block_asns[0]: 0 is not an AS number",
        ),
        (
            "[geo]\ndatabase = \"/g.mmdb\"\n",
            "names nothing to drop",
        ),
        (
            "[geo]\ndatabase = \"g.mmdb\"\nblock_countries = [\"DE\"]\n",
            "ipguard.toml:2:12: geo.database: \"g.mmdb\" is not an absolute path",
        ),
        (
            "[geo]\ndatabase = \"/g.mmdb\"\nblock_countries = [\"DE\"]\nlist = \"whitelist\"\n",
            "ipguard.toml:4:8: geo.list: \"whitelist\": geo prefixes go on the blacklist or the graylist",
        ),
    ] {
        let e = error(text);
        assert!(e.contains(expected), "{text}: {e}");
    }
}

#[test]
fn mode_keys_are_read_and_checked() {
    use crate::model::Mode;
    assert_eq!(parse("").unwrap().mode, Mode::Enforce);
    assert_eq!(parse("mode = \"monitor\"\n").unwrap().mode, Mode::Monitor);
    assert_eq!(parse("mode = \"enforce\"\n").unwrap().mode, Mode::Enforce);
    // [lists] mode moves the file's graylist and blacklist, never the whitelist.
    let c = parse(
        "[lists]\nwhitelist = [\"192.0.2.0/24\"]\ngraylist = [\"198.51.100.0/24\"]\n\
         blacklist = [\"203.0.113.0/24\"]\nmode = \"monitor\"\n",
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.lists.whitelist, nets(&["192.0.2.0/24"]));
    assert!(c.lists.graylist.is_empty() && c.lists.blacklist.is_empty());
    assert_eq!(c.lists.monitor_graylist, nets(&["198.51.100.0/24"]));
    assert_eq!(c.lists.monitor_blacklist, nets(&["203.0.113.0/24"]));
    let c = parse("[lists]\nblacklist = [\"203.0.113.0/24\"]\nmode = \"enforce\"\n").unwrap();
    assert_eq!(c.lists.blacklist, nets(&["203.0.113.0/24"]));
    assert!(c.lists.monitor_blacklist.is_empty());
    let geo = |mode: &str| {
        parse(&format!(
            "[geo]\ndatabase = \"/g.mmdb\"\nblock_countries = [\"DE\"]\n{mode}"
        ))
        .map(|c| c.geo.unwrap().mode)
    };
    assert_eq!(geo("").unwrap(), Mode::Enforce);
    assert_eq!(geo("mode = \"monitor\"\n").unwrap(), Mode::Monitor);
    for (text, expected) in [
        (
            "mode = \"dry-run\"\n",
            "ipguard.toml:1:8: mode: unknown variant `dry-run`, expected one of `enforce`, `monitor`",
        ),
        (
            "[lists]\nmode = \"Monitor\"\n",
            "ipguard.toml:2:8: lists.mode: unknown variant `Monitor`, expected one of `enforce`, `monitor`",
        ),
        (
            "[geo]\ndatabase = \"/g.mmdb\"\nblock_countries = [\"DE\"]\nmode = \"off\"\n",
            "ipguard.toml:4:8: geo.mode: unknown variant `off`, expected one of `enforce`, `monitor`",
        ),
        ("mode = true\n", "ipguard.toml:1:8: "),
    ] {
        assert_eq!(&error(text)[..expected.len()], expected, "{text}");
    }
}

#[test]
fn feed_tables_are_checked_and_named() {
    let c = parse(
        "[[feed]]\nname = \"drop\"\nurl = \"https://x.example/drop.json\"\nformat = \"spamhaus-json\"\n\
         refresh = \"12h\"\nmax_change = 0.2\n\n[[feed]]\nname = \"local\"\npath = \"/srv/l.netset\"\n\
         list = \"whitelist\"\nexclude_bogons = true\n",
    )
    .unwrap();
    assert_eq!(c.feeds.len(), 2);
    assert_eq!(c.feeds[0].format, crate::feeds::FeedFormat::SpamhausJson);
    assert_eq!(c.feeds[0].refresh, Duration::from_secs(12 * 3600));
    assert_eq!(c.feeds[0].list, crate::model::ListKind::Blacklist);
    assert_eq!(c.feeds[1].list, crate::model::ListKind::Whitelist);
    assert_eq!(c.feeds[1].refresh, DEFAULT_FEED_REFRESH);
    assert!(c.feeds[1].exclude_bogons);
    assert_eq!(c.feeds[0].mode, crate::model::Mode::Enforce);
    let m = parse("[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nmode = \"monitor\"\n").unwrap();
    assert_eq!(m.feeds[0].mode, crate::model::Mode::Monitor);
    for (text, expected) in [
        ("[[feed]]\nurl = \"http://x/\"\n", "missing field `name`"),
        (
            "[[feed]]\nname = \"a b\"\nurl = \"http://x/\"\n",
            "ipguard.toml:2:8: feed[0].name: invalid feed name",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\n[[feed]]\nname = \"a\"\npath = \"/p\"\n",
            "ipguard.toml:5:8: feed[1].name: \"a\" names another feed too",
        ),
        ("[[feed]]\nname = \"a\"\n", "missing field `url`"),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\npath = \"/p\"\n",
            "feed[0].path: set url or path, not both",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"ftp://x/\"\n",
            "ipguard.toml:3:7: feed[0].url: \"ftp://x/\" is not an http:// or https:// URL",
        ),
        (
            "[[feed]]\nname = \"a\"\npath = \"rel.txt\"\n",
            "feed[0].path: \"rel.txt\" is not an absolute path",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nlist = \"greylist\"\n",
            "feed[0].list: unknown variant `greylist`",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nformat = \"csv\"\n",
            "feed[0].format: unknown variant `csv`",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nrefresh = \"0s\"\n",
            "feed[0].refresh",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nmax_change = -1.0\n",
            "ipguard.toml:4:14: feed[0].max_change: -1 is not a positive share",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nmode = \"dry\"\n",
            "feed[0].mode: unknown variant `dry`",
        ),
        (
            "[[feed]]\nname = \"a\"\nurl = \"http://x/\"\nlist = \"whitelist\"\nmode = \"monitor\"\n",
            "ipguard.toml:5:8: feed[0].mode: a whitelist feed drops nothing",
        ),
    ] {
        let e = error(text);
        assert!(e.contains(expected), "{text}: {e}");
    }
}

fn scope(proto: Option<Proto>, ports: &[u16]) -> Scope {
    Scope::new(proto, ports.to_vec()).unwrap()
}

#[test]
fn rules_take_a_proto_and_ports() {
    let rule = |keys: &str| {
        parse(&format!(
            "[[rules]]\naction = \"deny\"\nsource = \"192.0.2.0/24\"\n{keys}"
        ))
        .map(|c| c.rules[0].scope.clone())
    };
    assert_eq!(rule("").unwrap(), None);
    assert_eq!(
        rule("proto = \"tcp\"\n").unwrap(),
        Some(scope(Some(Proto::Tcp), &[]))
    );
    assert_eq!(
        rule("proto = \"icmp\"\n").unwrap(),
        Some(scope(Some(Proto::Icmp), &[]))
    );
    // Sorted, duplicates removed.
    assert_eq!(
        rule("proto = \"udp\"\nports = [5353, 53, 5353]\n").unwrap(),
        Some(Scope {
            proto: Some(Proto::Udp),
            ports: vec![53, 5353],
        })
    );
    // Ports alone: TCP and UDP.
    let both = rule("ports = [443, 22]\n").unwrap().unwrap();
    assert_eq!((both.proto, both.ports.as_slice()), (None, &[22, 443][..]));
    assert_eq!(both.protos(), [Proto::Tcp, Proto::Udp]);
    let many: Vec<String> = (1..=64).map(|p| p.to_string()).collect();
    assert_eq!(
        rule(&format!("ports = [{}, 1]\n", many.join(", ")))
            .unwrap()
            .unwrap()
            .ports
            .len(),
        Scope::MAX_PORTS
    );
    // Inline tables are the same tables.
    let inline = parse(
        "rules = [{ action = \"allow\", source = \"2001:db8::/32\", proto = \"tcp\", ports = [22] }]\n",
    )
    .unwrap();
    assert_eq!(
        inline.rules,
        [scoped(
            RuleAction::Allow,
            "2001:db8::/32",
            Proto::Tcp,
            &[22]
        )]
    );
    // A hostname source takes a scope too.
    let host =
        parse("[[rules]]\naction = \"allow\"\nsource = \"admin.example.com\"\nports = [22]\n")
            .unwrap();
    assert_eq!(
        host.rules[0],
        Rule {
            action: RuleAction::Allow,
            source: RuleSource::Host("admin.example.com".into()),
            scope: Some(scope(None, &[22])),
        }
    );
}

#[test]
fn rule_scope_errors_name_the_rule_and_key() {
    let rules = |keys: &str| {
        format!(
            "[[rules]]\naction = \"allow\"\nsource = \"192.0.2.0/24\"\n\n\
             [[rules]]\naction = \"deny\"\nsource = \"0.0.0.0/0\"\n{keys}"
        )
    };
    for (keys, expected) in [
        (
            "proto = \"sctp\"\n",
            "ipguard.toml:8:9: rules[1].proto: unknown variant `sctp`, expected one of `tcp`, `udp`, `icmp`",
        ),
        (
            "proto = \"TCP\"\n",
            "ipguard.toml:8:9: rules[1].proto: unknown variant `TCP`, expected one of `tcp`, `udp`, `icmp`",
        ),
        (
            "proto = \"tcp\"\nports = [22, 0]\n",
            "ipguard.toml:9:14: rules[1].ports[1]: must be between 1 and 65535, got 0",
        ),
        (
            "ports = [-22]\n",
            "ipguard.toml:8:10: rules[1].ports[0]: must be between 1 and 65535, got -22",
        ),
        (
            "ports = [65536]\n",
            "ipguard.toml:8:10: rules[1].ports[0]: must be between 1 and 65535, got 65536",
        ),
        (
            "proto = \"icmp\"\nports = [8]\n",
            "ipguard.toml:9:9: rules[1].ports: icmp has no ports: leave ports out or name tcp or udp",
        ),
        (
            "proto = \"tcp\"\nports = []\n",
            "ipguard.toml:9:9: rules[1].ports: is empty: list the destination ports, or leave ports out for all of them",
        ),
        (
            "ports = []\n",
            "ipguard.toml:8:9: rules[1].ports: is empty: list the destination ports, or leave ports out for all of them",
        ),
        (
            "proto = 6\n",
            "ipguard.toml:8:9: invalid type: integer `6`, expected a string",
        ),
        (
            "ports = 22\n",
            "ipguard.toml:8:9: invalid type: integer `22`, expected a sequence",
        ),
        (
            "port = [22]\n",
            "ipguard.toml:8:1: unknown field `port`, expected one of `action`, `source`, `proto`, `ports`",
        ),
    ] {
        assert_eq!(error(&rules(keys)), expected, "{keys}");
    }
    // More than 64 distinct ports: the position is that of the first one too many.
    let ports: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
    let text = rules(&format!("ports = [{}]\n", ports.join(",")));
    assert_eq!(
        error(&text),
        "ipguard.toml:8:193: rules[1].ports: at most 64 distinct ports are supported, found 65"
    );
    let Err(ConfigError::Invalid { at, key, .. }) =
        parse(&rules("proto = \"icmp\"\nports = [8]\n"))
    else {
        panic!("expected an Invalid error");
    };
    assert_eq!(
        (at, key.as_str()),
        (Position { line: 9, column: 9 }, "rules[1].ports")
    );
}

#[test]
fn list_entries_may_be_tables_with_a_scope() {
    let text = r#"[lists]
whitelist = ["127.0.0.0/8", { net = "2001:db8::/48", proto = "icmp" }]
graylist = [{ net = "203.0.113.7", ports = [53, 53] }]
blacklist = [
    "198.51.100.7",
    { net = "192.0.2.0/24", proto = "tcp", ports = [25] },
    "198.51.100.0/24",
    { ports = [25], net = "192.0.2.0/24", proto = "tcp" },
    { net = "192.0.2.0/24", proto = "udp" },
]
"#;
    let lists = parse(text).unwrap().lists;
    assert_eq!(lists.whitelist, nets(&["127.0.0.0/8"]));
    assert!(lists.graylist.is_empty());
    assert_eq!(
        lists.blacklist,
        nets(&["198.51.100.7/32", "198.51.100.0/24"])
    );
    let entry = |n: &str, layer, s| ScopedEntry {
        net: net(n),
        layer,
        scope: s,
    };
    // Whitelist, graylist, blacklist; in file order, the same entry once.
    let scoped = vec![
        entry("2001:db8::/48", Layer::White, scope(Some(Proto::Icmp), &[])),
        entry("203.0.113.7/32", Layer::Gray, scope(None, &[53])),
        entry("192.0.2.0/24", Layer::Black, scope(Some(Proto::Tcp), &[25])),
        entry("192.0.2.0/24", Layer::Black, scope(Some(Proto::Udp), &[])),
    ];
    assert_eq!(lists.scoped, scoped);
    // Monitor mode moves the graylist's and the blacklist's scoped entries too.
    let monitored = parse(&format!("{text}mode = \"monitor\"\n")).unwrap().lists;
    let layers: Vec<Layer> = monitored.scoped.iter().map(|e| e.layer).collect();
    assert_eq!(
        layers,
        [
            Layer::White,
            Layer::MonitorGray,
            Layer::MonitorBlack,
            Layer::MonitorBlack
        ]
    );
    assert_eq!(monitored.monitor_blacklist, lists.blacklist);
    // The example's commented-out line is valid.
    let line = EXAMPLE
        .lines()
        .find_map(|l| {
            l.strip_prefix("# blacklist = [")
                .map(|rest| format!("blacklist = [{rest}"))
        })
        .expect("the example shows a scoped entry");
    let example = parse(&format!("[lists]\n{line}\n")).unwrap().lists;
    assert_eq!(example.blacklist, nets(&["198.51.100.7/32"]));
    assert_eq!(
        example.scoped,
        [entry(
            "192.0.2.0/24",
            Layer::Black,
            scope(Some(Proto::Tcp), &[25])
        )]
    );
}

#[test]
fn scoped_list_entry_errors_name_the_entry_and_key() {
    for (entry, expected) in [
        (
            r#"{ net = "192.0.2.1/24", proto = "tcp" }"#,
            "ipguard.toml:2:29: lists.blacklist[1].net: 192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?",
        ),
        (
            r#"{ net = "192.0.2.300", proto = "tcp" }"#,
            "ipguard.toml:2:29: lists.blacklist[1].net: \"192.0.2.300\" is not a valid IP address or CIDR",
        ),
        (
            r#"{ net = "10.0.0.0/7", ports = [25] }"#,
            "ipguard.toml:2:29: lists.blacklist[1].net: 10.0.0.0/7 is broader than /8, the shortest prefix the lists take (set protect.min_prefix_v4 to allow it)",
        ),
        (
            r#"{ proto = "tcp", ports = [25] }"#,
            "ipguard.toml:2:21: lists.blacklist[1]: missing field `net`",
        ),
        (
            r#"{ net = "192.0.2.0/24" }"#,
            "ipguard.toml:2:21: lists.blacklist[1]: a table entry needs proto or ports; for all of the source's packets write the plain string \"192.0.2.0/24\"",
        ),
        (
            r#"{ net = "192.0.2.0/24", proto = "gre" }"#,
            "ipguard.toml:2:53: lists.blacklist[1].proto: unknown variant `gre`, expected one of `tcp`, `udp`, `icmp`",
        ),
        (
            r#"{ net = "192.0.2.0/24", proto = "icmp", ports = [8] }"#,
            "ipguard.toml:2:69: lists.blacklist[1].ports: icmp has no ports: leave ports out or name tcp or udp",
        ),
        (
            r#"{ net = "192.0.2.0/24", ports = [25, 0] }"#,
            "ipguard.toml:2:58: lists.blacklist[1].ports[1]: must be between 1 and 65535, got 0",
        ),
        (
            r#"{ net = "192.0.2.0/24", ports = [] }"#,
            "ipguard.toml:2:53: lists.blacklist[1].ports: is empty: list the destination ports, or leave ports out for all of them",
        ),
        (
            r#"{ net = "192.0.2.0/24", port = [25] }"#,
            "ipguard.toml:2:45: unknown field `port`, expected one of `net`, `proto`, `ports`",
        ),
        (
            "42",
            "ipguard.toml:2:21: invalid type: integer `42`, expected an address or network, or a table with net, and proto or ports",
        ),
    ] {
        let text = format!("[lists]\nblacklist = [\"::1\", {entry}]\n");
        assert_eq!(error(&text), expected, "{entry}");
    }
    // A plain entry's errors are as before.
    assert_eq!(
        error("[lists]\ngraylist = [{ net = \"192.0.2.0/24\", proto = \"udp\" }, \"nope\"]\n"),
        "ipguard.toml:2:54: lists.graylist[1]: \"nope\" is not a valid IP address or CIDR"
    );
    let Err(ConfigError::MissingField { at, key, field, .. }) =
        parse("[lists]\nwhitelist = [\n  { ports = [22] },\n]\n")
    else {
        panic!("expected a MissingField error");
    };
    assert_eq!(
        (at, key.as_str(), field),
        (Position { line: 3, column: 3 }, "lists.whitelist[0]", "net")
    );
}

#[test]
fn rate_limit_exempt_networks_are_checked_like_list_entries() {
    let rule = |exempt: &str| {
        format!("[[rate_limit]]\nkind = \"syn\"\ncount = 20\nwindow = \"1s\"\nexempt = {exempt}\n")
    };
    let config = parse(&rule(
        r#"["198.51.100.0/24", "2001:db8::/48", "192.0.2.1", "198.51.100.0/24"]"#,
    ))
    .unwrap();
    let limit = &config.rate_limit[0];
    // In file order, duplicates removed.
    assert_eq!(
        limit.exempt,
        nets(&["198.51.100.0/24", "2001:db8::/48", "192.0.2.1/32"])
    );
    assert!(limit.exempts("198.51.100.250".parse().unwrap()));
    assert!(limit.exempts("2001:db8:0:1::1".parse().unwrap()));
    assert!(limit.exempts("192.0.2.1".parse().unwrap()));
    assert!(!limit.exempts("192.0.2.2".parse().unwrap()));
    assert!(!limit.exempts("2001:db8:1::1".parse().unwrap()));
    assert!(parse(&rule("[]")).unwrap().rate_limit[0].exempt.is_empty());
    assert!(
        parse("[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\n")
            .unwrap()
            .rate_limit[0]
            .exempt
            .is_empty()
    );
    // Exempting bans less, never more: no shortest prefix.
    assert_eq!(
        parse(&rule(r#"["0.0.0.0/0"]"#)).unwrap().rate_limit[0].exempt,
        nets(&["0.0.0.0/0"])
    );
    for (exempt, expected) in [
        (
            r#"["198.51.100.0/24", "198.51.100.1/24"]"#,
            "ipguard.toml:5:30: rate_limit[0].exempt[1]: 198.51.100.1/24 has host bits set; did you mean 198.51.100.0/24?",
        ),
        (
            r#"["2001:db8::/129"]"#,
            "ipguard.toml:5:11: rate_limit[0].exempt[0]: \"2001:db8::/129\": the prefix length must be at most 128 for an IPv6 address",
        ),
        (
            r#"["office"]"#,
            "ipguard.toml:5:11: rate_limit[0].exempt[0]: \"office\" is not a valid IP address or CIDR",
        ),
        (
            r#""198.51.100.0/24""#,
            "ipguard.toml:5:10: invalid type: string \"198.51.100.0/24\", expected a sequence",
        ),
    ] {
        assert_eq!(error(&rule(exempt)), expected, "{exempt}");
    }
}
