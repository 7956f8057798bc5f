use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _},
    net::TcpListener,
    thread::JoinHandle,
};

use clap::{error::ErrorKind, Parser};
use serde_json::{json, Value};

use std::time::Duration;

use super::*;
use crate::api::types::ApiError;
use crate::api::types::{IpCounters, ListEntryView, MapFill};
use crate::testing::net;

/// The client commands as `main.rs` mounts them.
#[derive(Debug, Parser)]
#[command(name = "ipguard")]
struct TestCli {
    #[command(subcommand)]
    command: ClientCommand,
}

/// Parses with an explicit `--api` after the arguments, so the environment does not matter.
fn parse(args: &[&str]) -> ClientCommand {
    let mut argv = vec!["ipguard"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--api", DEFAULT_API]);
    TestCli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
        .command
}

fn parse_err(args: &[&str]) -> clap::Error {
    let mut argv = vec!["ipguard"];
    argv.extend_from_slice(args);
    match TestCli::try_parse_from(argv) {
        Ok(cli) => panic!("{args:?} should not parse, got {:?}", cli.command),
        Err(e) => e,
    }
}

fn opts(api: &str) -> ApiOpts {
    ApiOpts {
        api: api.to_owned(),
        token_file: None,
        json: false,
    }
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory as _;
    TestCli::command().debug_assert();
}

#[test]
fn parses_status_with_and_without_ip() {
    assert_eq!(
        parse(&["status"]),
        ClientCommand::Status {
            ip: None,
            proto: None,
            port: None,
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse(&["status", "2001:db8::1"]),
        ClientCommand::Status {
            ip: Some("2001:db8::1".parse().unwrap()),
            proto: None,
            port: None,
            api: opts(DEFAULT_API)
        }
    );
    let err = parse_err(&["status", "203.0.113.0/24"]);
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn status_explains_one_packet_with_proto_and_port() {
    assert_eq!(
        parse(&["status", "192.0.2.9", "--proto", "tcp", "--port", "22"]),
        ClientCommand::Status {
            ip: Some("192.0.2.9".parse().unwrap()),
            proto: Some(crate::model::Proto::Tcp),
            port: Some(22),
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        Call::ip_packet(
            "192.0.2.9".parse().unwrap(),
            Some(crate::model::Proto::Tcp),
            Some(22)
        )
        .path,
        "/v1/ips/192.0.2.9?packet=tcp/22"
    );
    // A port needs a protocol, the protocol an address; port 0 and unknown protocols are
    // refused.
    for bad in [
        &["status", "192.0.2.9", "--port", "22"][..],
        &["status", "--proto", "tcp"],
        &["status", "192.0.2.9", "--proto", "tcp", "--port", "0"],
        &["status", "192.0.2.9", "--proto", "sctp"],
    ] {
        assert_eq!(parse_err(bad).exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn parses_list_with_defaults_and_options() {
    assert_eq!(
        parse(&["list", "blacklist"]),
        ClientCommand::List {
            list: ListKind::Blacklist,
            limit: None,
            all: false,
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse(&["list", "whitelist", "--limit", "10000", "--all", "--json"]),
        ClientCommand::List {
            list: ListKind::Whitelist,
            limit: Some(10_000),
            all: true,
            api: ApiOpts {
                json: true,
                ..opts(DEFAULT_API)
            }
        }
    );
    for bad in ["0", "10001", "-1", "ten"] {
        let err = parse_err(&["list", "graylist", "--limit", bad]);
        assert_eq!(err.exit_code(), 2, "--limit {bad}");
    }
}

#[test]
fn parses_add_with_every_option() {
    assert_eq!(
        parse(&[
            "add",
            "graylist",
            "203.0.113.0/24",
            "2001:db8:bad::/48",
            "--duration",
            "2h",
            "--reason",
            "scanner",
            "--force",
            "--token-file",
            "/etc/ipguard/token",
        ]),
        ClientCommand::Add {
            list: ListKind::Graylist,
            nets: vec![net("203.0.113.0/24"), net("2001:db8:bad::/48")],
            duration: Some("2h".to_owned()),
            reason: Some("scanner".to_owned()),
            force: true,
            api: ApiOpts {
                token_file: Some("/etc/ipguard/token".into()),
                ..opts(DEFAULT_API)
            }
        }
    );
    assert_eq!(
        parse(&["add", "blacklist", "198.51.100.7"]),
        ClientCommand::Add {
            list: ListKind::Blacklist,
            nets: vec![net("198.51.100.7/32")],
            duration: None,
            reason: None,
            force: false,
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse_err(&["add", "blacklist"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
}

#[test]
fn parses_remove_and_report() {
    assert_eq!(
        parse(&["remove", "blacklist", "203.0.113.0/24"]),
        ClientCommand::Remove {
            list: ListKind::Blacklist,
            net: net("203.0.113.0/24"),
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse(&["report", "198.51.100.23", "--reason", "ssh brute force"]),
        ClientCommand::Report {
            ip: "198.51.100.23".parse().unwrap(),
            reason: Some("ssh brute force".to_owned()),
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse_err(&["report", "198.51.100.0/24"]).kind(),
        ErrorKind::ValueValidation
    );
}

#[test]
fn api_url_comes_from_flag_env_or_default() {
    // The only test that depends on IPGUARD_API: the others pass --api or fail earlier.
    let api_of = |args: &[&str]| {
        let mut argv = vec!["ipguard"];
        argv.extend_from_slice(args);
        TestCli::try_parse_from(argv)
            .unwrap()
            .command
            .api_opts()
            .api
            .clone()
    };
    std::env::remove_var(API_ENV);
    assert_eq!(api_of(&["status"]), "http://127.0.0.1:9180");
    std::env::set_var(API_ENV, "http://10.1.2.3:9999/");
    let from_env = api_of(&["list", "blacklist"]);
    let from_flag = api_of(&["status", "--api", "192.0.2.1:9180"]);
    std::env::remove_var(API_ENV);
    assert_eq!(from_env, "http://10.1.2.3:9999");
    assert_eq!(from_flag, "http://192.0.2.1:9180");
}

#[test]
fn api_url_is_validated() {
    assert_eq!(
        parse_api_url("http://[::1]:9180/").unwrap(),
        "http://[::1]:9180"
    );
    assert_eq!(
        parse_api_url("http://gw:8080/ipguard").unwrap(),
        "http://gw:8080/ipguard"
    );
    assert!(parse_api_url("https://127.0.0.1:9180")
        .unwrap_err()
        .contains("only http://"));
    assert!(parse_api_url("http://").is_err());
    assert!(parse_api_url("http://a b:1").is_err());
    assert!(parse_api_url("http://h:1/?x=1").is_err());
    let err = parse_err(&["status", "--api", "ftp://h"]);
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
}

#[test]
fn bad_list_name_is_a_usage_error() {
    for args in [
        &["list", "blocklist"][..],
        &["add", "Blacklist", "198.51.100.7"],
        &["remove", "rules", "198.51.100.7"],
    ] {
        let err = parse_err(args);
        assert_eq!(err.kind(), ErrorKind::InvalidValue, "{args:?}");
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("[possible values: whitelist, graylist, blacklist]"),
            "{text}"
        );
    }
}

/// Bad arguments fail in clap, before a `ClientCommand` (and so a request) exists.
#[test]
fn bad_net_is_a_usage_error_with_a_clear_message() {
    let cases = [
        (
            "198.51.100.7/24",
            "host bits set; did you mean 198.51.100.0/24?",
        ),
        ("198.51.100.0/33", "the prefix length must be at most 32"),
        ("example.com", "is not a valid IP address or CIDR"),
        (" 198.51.100.7", "leading or trailing whitespace"),
    ];
    for (given, expected) in cases {
        for command in ["add", "remove"] {
            let err = parse_err(&[command, "blacklist", given]);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{command} {given}");
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(
                text.lines().next().unwrap().contains(expected),
                "{command} {given}: {text}"
            );
        }
    }
    // One bad entry rejects the whole command.
    parse_err(&["add", "blacklist", "203.0.113.0/24", "203.0.113.1/24"]);
}

#[test]
fn bad_duration_is_a_usage_error() {
    for bad in ["2 h", "1h30m", "0s", "2H", "soon"] {
        let err = parse_err(&["add", "blacklist", "198.51.100.7", "--duration", bad]);
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
    }
    for good in ["90s", "2h", "30d", "forever"] {
        parse(&["add", "blacklist", "198.51.100.7", "--duration", good]);
    }
}

#[test]
fn calls_have_the_documented_method_and_path() {
    assert_eq!(Call::status(), Call::get("/v1/status".into()));
    assert_eq!(
        Call::ip("203.0.113.9".parse().unwrap()).path,
        "/v1/ips/203.0.113.9"
    );
    assert_eq!(
        Call::ip("2001:db8::1".parse().unwrap()).path,
        "/v1/ips/2001:db8::1"
    );
    assert_eq!(
        Call::list(ListKind::Graylist, None, None).path,
        "/v1/lists/graylist"
    );
    assert_eq!(
        Call::list(ListKind::Blacklist, Some(50), Some("abc+/=")).path,
        "/v1/lists/blacklist?limit=50&cursor=abc%2B%2F%3D"
    );
    assert_eq!(
        Call::list(ListKind::Blacklist, None, Some("c1")).path,
        "/v1/lists/blacklist?cursor=c1"
    );
    let add = Call::add(
        ListKind::Blacklist,
        &AddRequest {
            entries: vec![AddEntry {
                net: "203.0.113.0/24".into(),
                duration: Some("2h".into()),
                reason: None,
            }],
            force: true,
        },
    )
    .unwrap();
    assert_eq!(add.method, Method::Post);
    assert_eq!(add.path, "/v1/lists/blacklist");
    assert_eq!(
        serde_json::from_str::<Value>(add.body.as_deref().unwrap()).unwrap(),
        json!({"entries": [{"net": "203.0.113.0/24", "duration": "2h", "reason": null}], "force": true})
    );
    let report = Call::report(&ReportRequest {
        ip: "198.51.100.23".into(),
        reason: Some("ssh".into()),
    })
    .unwrap();
    assert_eq!(
        (report.method, report.path.as_str()),
        (Method::Post, "/v1/report")
    );
    assert_eq!(
        report.body.as_deref(),
        Some(r#"{"ip":"198.51.100.23","reason":"ssh"}"#)
    );
}

#[test]
fn remove_url_encodes_the_cidr_slash() {
    let call = Call::remove(ListKind::Blacklist, &net("203.0.113.0/24"));
    assert_eq!(call.method, Method::Delete);
    assert_eq!(call.path, "/v1/lists/blacklist/203.0.113.0%2F24");
    assert_eq!(call.body, None);
    assert_eq!(
        Call::remove(ListKind::Whitelist, &net("2001:db8:bad::/48")).path,
        "/v1/lists/whitelist/2001:db8:bad::%2F48"
    );
    // A bare address is sent as its host prefix.
    assert_eq!(
        Call::remove(ListKind::Graylist, &net("198.51.100.7/32")).path,
        "/v1/lists/graylist/198.51.100.7%2F32"
    );
    assert_eq!(encode_segment("a/b c%"), "a%2Fb%20c%25");
    assert_eq!(encode_query_value("x:y/é"), "x%3Ay%2F%C3%A9");
}

fn sample_ip_status() -> IpStatus {
    IpStatus {
        ip: "203.0.113.9".into(),
        verdict: "drop".into(),
        list: Some("blacklist".into()),
        would_drop: false,
        prefix: Some("203.0.113.0/24".into()),
        reason: Some("config".into()),
        source: Some("config".into()),
        strikes: 0,
        expires: None,
        retry_after: None,
        counters: IpCounters {
            packets: 0,
            bytes: 0,
            syns: 0,
            dropped: 12,
        },
        node: None,
        country: None,
        asn: None,
        asn_org: None,
        packet: None,
        scoped: vec![],
    }
}

#[test]
fn formats_ip_status() {
    assert_eq!(
        format_ip_status(&sample_ip_status()),
        "\
ip        203.0.113.9
verdict   drop
list      blacklist
prefix    203.0.113.0/24
reason    config
source    config
strikes   0
expires   never
counters  packets 0, bytes 0, syns 0, dropped 12
"
    );
}

#[test]
fn formats_unlisted_and_expiring_ip_status() {
    let unlisted = IpStatus {
        ip: "192.0.2.2".into(),
        verdict: "pass".into(),
        list: None,
        would_drop: false,
        prefix: None,
        reason: None,
        source: None,
        strikes: 1,
        expires: None,
        retry_after: None,
        counters: IpCounters {
            packets: 5,
            bytes: 420,
            syns: 1,
            dropped: 0,
        },
        node: None,
        country: None,
        asn: None,
        asn_org: None,
        packet: None,
        scoped: vec![],
    };
    assert_eq!(
        format_ip_status(&unlisted),
        "\
ip        192.0.2.2
verdict   pass
list      -
prefix    -
reason    -
source    -
strikes   1
expires   -
counters  packets 5, bytes 420, syns 1, dropped 0
"
    );
    let banned = IpStatus {
        expires: Some("2030-01-01T12:00:00Z".into()),
        retry_after: Some(5400),
        reason: Some("rate \x1b[31mlimit\n".into()),
        ..sample_ip_status()
    };
    let text = format_ip_status(&banned);
    assert!(
        text.contains("\nexpires   2030-01-01T12:00:00Z (in 1h 30m)\n"),
        "{text}"
    );
    // Control characters from API callers are shown escaped, never interpreted.
    assert!(
        text.contains("\nreason    rate \\u{1b}[31mlimit\\n\n"),
        "{text}"
    );
}

#[test]
fn formats_report() {
    let report = ReportResponse {
        outcome: "banned".into(),
        reports: Some(3),
        status: IpStatus {
            source: Some("report".into()),
            reason: Some("ssh brute force".into()),
            strikes: 1,
            expires: Some("2030-01-01T00:00:00Z".into()),
            retry_after: Some(3600),
            ..sample_ip_status()
        },
    };
    assert_eq!(
        format_report(&report),
        "\
outcome   banned
reports   3
ip        203.0.113.9
verdict   drop
list      blacklist
prefix    203.0.113.0/24
reason    ssh brute force
source    report
strikes   1
expires   2030-01-01T00:00:00Z (in 1h)
counters  packets 0, bytes 0, syns 0, dropped 12
"
    );
}

fn entry(net: &str, expires: Option<&str>, source: &str, reason: &str) -> ListEntryView {
    ListEntryView {
        net: net.into(),
        expires: expires.map(Into::into),
        reason: reason.into(),
        source: source.into(),
    }
}

#[test]
fn formats_list() {
    let page = ListPage {
        entries: vec![
            entry("203.0.113.0/24", None, "config", "config"),
            entry(
                "2001:db8:bad::/48",
                Some("2030-01-01T00:00:00Z"),
                "api",
                "scanner",
            ),
            entry("198.51.100.7/32", None, "report", ""),
        ],
        next_cursor: None,
    };
    assert_eq!(
        format_list(&page),
        "\
NET                EXPIRES               SOURCE  REASON
203.0.113.0/24     never                 config  config
2001:db8:bad::/48  2030-01-01T00:00:00Z  api     scanner
198.51.100.7/32    never                 report  -
"
    );
    let partial = ListPage {
        entries: page.entries[..1].to_vec(),
        next_cursor: Some("c2".into()),
    };
    assert_eq!(
        format_list(&partial),
        "\
NET             EXPIRES  SOURCE  REASON
203.0.113.0/24  never    config  config
(more entries: use --all to list them all)
"
    );
    let empty = ListPage {
        entries: vec![],
        next_cursor: None,
    };
    assert_eq!(format_list(&empty), "no entries\n");
}

fn traffic(packets: u64, bytes: u64) -> crate::api::types::Traffic {
    crate::api::types::Traffic { packets, bytes }
}

#[test]
fn formats_status() {
    let status = Status {
        interface: "eth0".into(),
        xdp_mode: "native".into(),
        mode: "enforce".into(),
        uptime_seconds: 93_784,
        entries: BTreeMap::from([
            ("blacklist".into(), 3),
            ("graylist".into(), 0),
            ("rules".into(), 2),
            ("whitelist".into(), 2),
        ]),
        tracked_sources: 17,
        verdicts: BTreeMap::from([
            ("drop".into(), traffic(12, 840)),
            ("pass".into(), traffic(1_000, 1_500_000)),
        ]),
        lists: BTreeMap::from([
            ("blacklist".into(), traffic(12, 840)),
            ("unlisted".into(), traffic(990, 1_490_000)),
            ("whitelist".into(), traffic(10, 10_000)),
        ]),
        maps: BTreeMap::from([
            (
                "lpm_v4".into(),
                MapFill {
                    capacity: 65_536,
                    used: 4,
                },
            ),
            (
                "sources".into(),
                MapFill {
                    capacity: 3,
                    used: 2,
                },
            ),
        ]),
        problems: vec![],
    };
    assert_eq!(
        format_status(&status),
        "\
interface        eth0
xdp mode         native
mode             enforce
uptime           1d 2h
tracked sources  17
entries          whitelist 2, graylist 0, blacklist 3, rules 2

VERDICT  PACKETS    BYTES
pass        1000  1500000
drop          12      840

LIST       PACKETS    BYTES
unlisted       990  1490000
whitelist       10    10000
blacklist       12      840

MAP      USED  CAPACITY   FILL
lpm_v4      4     65536   0.0%
sources     2         3  66.6%
"
    );
}

#[test]
fn formats_add_and_remove() {
    assert_eq!(
        format_add(
            ListKind::Blacklist,
            &AddResponse {
                added: 2,
                replaced: 1
            }
        ),
        "blacklist: added 2, replaced 1\n"
    );
    assert_eq!(
        format_remove(
            ListKind::Graylist,
            &RemoveResponse {
                removed: "203.0.113.0/24".into()
            }
        ),
        "graylist: removed 203.0.113.0/24\n"
    );
}

#[test]
fn formats_seconds() {
    assert_eq!(format_seconds(0), "0s");
    assert_eq!(format_seconds(42), "42s");
    assert_eq!(format_seconds(90), "1m 30s");
    assert_eq!(format_seconds(3600), "1h");
    assert_eq!(format_seconds(86_400 + 59), "1d");
    assert_eq!(format_seconds(2 * 86_400 + 3 * 3600 + 7), "2d 3h");
}

#[test]
fn api_errors_are_one_line() {
    let body = r#"{"error":"invalid entry","detail":"198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?","index":1}"#;
    let error: ApiError = serde_json::from_str(body).unwrap();
    let err = ClientError::Api {
        status: 400,
        error,
        hint: None,
    };
    assert_eq!(
        err.to_string(),
        "invalid entry: 198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24? (entry 1)"
    );
    let error: ApiError = serde_json::from_str(
        r#"{"error":"not found","detail":"203.0.113.0/24 is not on the blacklist"}"#,
    )
    .unwrap();
    assert_eq!(
        format_api_error(&error, None),
        "not found: 203.0.113.0/24 is not on the blacklist"
    );
    let error = ApiError {
        error: "bad\nline".into(),
        detail: "x".into(),
        index: None,
    };
    assert_eq!(format_api_error(&error, None), "bad\\nline: x");
    let other = ClientError::Status {
        api: DEFAULT_API.into(),
        status: 502,
        body: "\n  <html>Bad Gateway</html>\nmore".into(),
    };
    assert_eq!(
        other.to_string(),
        "the ipguard API at http://127.0.0.1:9180 answered HTTP 502: <html>Bad Gateway</html>"
    );
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ipguard-cli-test-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn token_comes_from_file_or_env() {
    assert_eq!(resolve_token(None, None).unwrap(), None);
    assert_eq!(resolve_token(None, Some("".into())).unwrap(), None);
    assert_eq!(
        resolve_token(None, Some("s3cret\n".into()))
            .unwrap()
            .as_deref(),
        Some("s3cret")
    );
    let file = temp_file("token", "from-file\n");
    // The file wins over the variable.
    assert_eq!(
        resolve_token(Some(&file), Some("from-env".into()))
            .unwrap()
            .as_deref(),
        Some("from-file")
    );
    std::fs::write(&file, "\n").unwrap();
    let err = resolve_token(Some(&file), None).unwrap_err();
    assert!(matches!(err, ClientError::EmptyToken { .. }), "{err}");
    // Like the daemon: the first line, trimmed.
    std::fs::write(&file, "  first line \nsecond\n").unwrap();
    assert_eq!(
        resolve_token(Some(&file), None).unwrap().as_deref(),
        Some("first line")
    );
    std::fs::write(&file, "t\u{e9}").unwrap();
    let err = resolve_token(Some(&file), None).unwrap_err();
    assert!(matches!(err, ClientError::BadToken { .. }), "{err}");
    let err = resolve_token(None, Some("a\u{7}b".into())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the API token in IPGUARD_TOKEN has control or non-ASCII characters"
    );
    std::fs::remove_file(&file).unwrap();
    let err = resolve_token(Some(&file), None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read the API token file "),
        "{err}"
    );
}

/// What the fake API received: the request line, headers (lower-cased names) and body.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A one-thread HTTP server on 127.0.0.1:0 that answers one connection per canned
/// `(status, body)` and hands back what it received.
fn fake_api(answers: Vec<(u16, String)>) -> (String, JoinHandle<Vec<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut received = Vec::new();
        for (status, body) in answers {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = BTreeMap::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
            }
            let length: usize = headers
                .get("content-length")
                .map_or(0, |v| v.parse().unwrap());
            let mut request_body = vec![0; length];
            reader.read_exact(&mut request_body).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            received.push(Received {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body: String::from_utf8(request_body).unwrap(),
            });
        }
        received
    });
    (api, handle)
}

/// Parses `args` against `api` and executes the command, like `ipguard` does.
fn execute_args(api: &str, token: Option<&str>, args: &[&str]) -> Result<String, ClientError> {
    let command = parse(args);
    execute(&command, &Client::new(api, token.map(Into::into)))
}

fn ip_status_json() -> String {
    serde_json::to_string(&sample_ip_status()).unwrap()
}

#[test]
fn status_ip_sends_the_token_and_prints_a_block() {
    let (api, server) = fake_api(vec![(200, ip_status_json())]);
    let out = execute_args(&api, Some("s3cret"), &["status", "203.0.113.9"]).unwrap();
    assert_eq!(out, format_ip_status(&sample_ip_status()));
    let [request] = <[Received; 1]>::try_from(server.join().unwrap()).unwrap();
    assert_eq!(request.request_line, "GET /v1/ips/203.0.113.9 HTTP/1.1");
    assert_eq!(request.headers["authorization"], "Bearer s3cret");
    assert_eq!(request.headers["accept"], "application/json");
    assert_eq!(request.body, "");
}

#[test]
fn json_mode_prints_the_answer_as_is() {
    let body = r#"{"added":1,"replaced":0}"#.to_owned();
    let (api, server) = fake_api(vec![(200, body.clone())]);
    let out = execute_args(
        &api,
        None,
        &[
            "add",
            "blacklist",
            "203.0.113.0/24",
            "--json",
            "--reason",
            "scan",
        ],
    )
    .unwrap();
    assert_eq!(out, format!("{body}\n"));
    let request = server.join().unwrap().pop().unwrap();
    assert!(!request.headers.contains_key("authorization"));
    assert_eq!(request.request_line, "POST /v1/lists/blacklist HTTP/1.1");
}

#[test]
fn add_posts_all_entries_in_one_request() {
    let (api, server) = fake_api(vec![(200, r#"{"added":1,"replaced":1}"#.into())]);
    let out = execute_args(
        &api,
        Some("t"),
        &[
            "add",
            "blacklist",
            "203.0.113.0/24",
            "2001:DB8:BAD::/48",
            "--duration",
            "2h",
            "--reason",
            "scanner",
            "--force",
        ],
    )
    .unwrap();
    assert_eq!(out, "blacklist: added 1, replaced 1\n");
    let request = server.join().unwrap().pop().unwrap();
    assert_eq!(request.request_line, "POST /v1/lists/blacklist HTTP/1.1");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["authorization"], "Bearer t");
    assert_eq!(
        serde_json::from_str::<Value>(&request.body).unwrap(),
        json!({
            "entries": [
                {"net": "203.0.113.0/24", "duration": "2h", "reason": "scanner"},
                {"net": "2001:db8:bad::/48", "duration": "2h", "reason": "scanner"},
            ],
            "force": true,
        })
    );
    // The body is what the server's own type accepts.
    serde_json::from_str::<AddRequest>(&request.body).unwrap();
}

#[test]
fn remove_sends_delete_with_encoded_cidr() {
    let (api, server) = fake_api(vec![(200, r#"{"removed":"203.0.113.0/24"}"#.into())]);
    let out = execute_args(&api, None, &["remove", "blacklist", "203.0.113.0/24"]).unwrap();
    assert_eq!(out, "blacklist: removed 203.0.113.0/24\n");
    let request = server.join().unwrap().pop().unwrap();
    assert_eq!(
        request.request_line,
        "DELETE /v1/lists/blacklist/203.0.113.0%2F24 HTTP/1.1"
    );
}

#[test]
fn report_posts_ip_and_reason() {
    let answer = ReportResponse {
        outcome: "recorded".into(),
        reports: Some(1),
        status: IpStatus {
            verdict: "pass".into(),
            list: None,
            prefix: None,
            reason: None,
            source: None,
            ..sample_ip_status()
        },
    };
    let (api, server) = fake_api(vec![(200, serde_json::to_string(&answer).unwrap())]);
    let out = execute_args(&api, None, &["report", "203.0.113.9", "--reason", "spam"]).unwrap();
    assert_eq!(out, format_report(&answer));
    assert!(
        out.starts_with("outcome   recorded\nreports   1\n"),
        "{out}"
    );
    let request = server.join().unwrap().pop().unwrap();
    assert_eq!(request.request_line, "POST /v1/report HTTP/1.1");
    assert_eq!(
        serde_json::from_str::<ReportRequest>(&request.body).unwrap(),
        ReportRequest {
            ip: "203.0.113.9".into(),
            reason: Some("spam".into())
        }
    );
}

#[test]
fn list_all_follows_the_cursor() {
    let page1 = ListPage {
        entries: vec![entry("203.0.113.0/24", None, "config", "config")],
        next_cursor: Some("next/page+1".into()),
    };
    let page2 = ListPage {
        entries: vec![entry("198.51.100.7/32", None, "api", "manual")],
        next_cursor: None,
    };
    let (api, server) = fake_api(vec![
        (200, serde_json::to_string(&page1).unwrap()),
        (200, serde_json::to_string(&page2).unwrap()),
    ]);
    let out = execute_args(&api, None, &["list", "blacklist", "--all", "--limit", "1"]).unwrap();
    assert_eq!(
        out,
        "\
NET              EXPIRES  SOURCE  REASON
203.0.113.0/24   never    config  config
198.51.100.7/32  never    api     manual
"
    );
    let lines: Vec<String> = server
        .join()
        .unwrap()
        .into_iter()
        .map(|r| r.request_line)
        .collect();
    assert_eq!(
        lines,
        [
            "GET /v1/lists/blacklist?limit=1 HTTP/1.1",
            "GET /v1/lists/blacklist?limit=1&cursor=next%2Fpage%2B1 HTTP/1.1",
        ]
    );
}

#[test]
fn list_all_in_json_is_one_document() {
    let page1 = ListPage {
        entries: vec![entry("203.0.113.0/24", None, "config", "config")],
        next_cursor: Some("c".into()),
    };
    let page2 = ListPage {
        entries: vec![entry("198.51.100.7/32", None, "api", "manual")],
        next_cursor: None,
    };
    let (api, server) = fake_api(vec![
        (200, serde_json::to_string(&page1).unwrap()),
        (200, serde_json::to_string(&page2).unwrap()),
    ]);
    let out = execute_args(&api, None, &["list", "blacklist", "--all", "--json"]).unwrap();
    let merged: ListPage = serde_json::from_str(&out).unwrap();
    assert_eq!(merged.entries.len(), 2);
    assert_eq!(merged.next_cursor, None);
    let first = server.join().unwrap().remove(0);
    assert_eq!(
        first.request_line,
        format!("GET /v1/lists/blacklist?limit={ALL_PAGE_SIZE} HTTP/1.1")
    );
}

#[test]
fn list_all_stops_on_a_repeated_cursor() {
    let page = ListPage {
        entries: vec![],
        next_cursor: Some("same".into()),
    };
    let body = serde_json::to_string(&page).unwrap();
    let (api, server) = fake_api(vec![(200, body.clone()), (200, body)]);
    let err = execute_args(&api, None, &["list", "blacklist", "--all"]).unwrap_err();
    assert!(matches!(err, ClientError::CursorLoop(_)), "{err}");
    server.join().unwrap();
}

#[test]
fn api_error_answers_become_one_line() {
    let body = r#"{"error":"would lock out","detail":"127.0.0.0/8 covers your own address 127.0.0.1; send \"force\": true to list it anyway","index":0}"#;
    let (api, server) = fake_api(vec![(409, body.into())]);
    let err = execute_args(&api, None, &["add", "blacklist", "127.0.0.0/8"]).unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 409, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "would lock out: 127.0.0.0/8 covers your own address 127.0.0.1; \
         send \"force\": true to list it anyway (entry 0); use --force"
    );
    server.join().unwrap();
}

#[test]
fn unauthorized_without_a_token_says_how_to_give_one() {
    let body = r#"{"error":"unauthorized","detail":"missing bearer token"}"#;
    let (api, server) = fake_api(vec![(401, body.into()), (401, body.into())]);
    let err = execute_args(&api, None, &["status"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unauthorized: missing bearer token; no token given: use --token-file FILE or set IPGUARD_TOKEN"
    );
    let err = execute_args(&api, Some("wrong"), &["status"]).unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: missing bearer token");
    server.join().unwrap();
}

#[test]
fn non_api_error_bodies_are_reported_with_their_status() {
    let (api, server) = fake_api(vec![(413, "length limit exceeded".into())]);
    let err = execute_args(&api, None, &["add", "blacklist", "203.0.113.0/24"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the ipguard API at {api} answered HTTP 413: length limit exceeded")
    );
    server.join().unwrap();
}

#[test]
fn unexpected_success_bodies_are_a_decode_error() {
    let (api, server) = fake_api(vec![(200, "{}".into())]);
    let err = execute_args(&api, None, &["status"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unexpected answer from the ipguard API to /v1/status: missing field"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn unreachable_api_says_so() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let err = execute_args(&api, None, &["status"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach the ipguard API at {api}: connection refused (is the daemon running?)"
        )
    );
}

// ---- openapi.yaml: the documented contract matches the code. ----

fn openapi() -> serde_norway::Value {
    serde_norway::from_str(include_str!("../../../openapi.yaml")).expect("openapi.yaml parses")
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Path template → documented methods.
fn documented_operations() -> BTreeMap<String, BTreeSet<String>> {
    let doc = openapi();
    let paths = doc["paths"].as_mapping().expect("paths is a mapping");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_mapping()
                .unwrap()
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| HTTP_METHODS.contains(k))
                .map(str::to_owned)
                .collect();
            (path.as_str().unwrap().to_owned(), methods)
        })
        .collect()
}

#[test]
fn openapi_documents_exactly_the_api_paths() {
    let doc = openapi();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("/healthz", &["get"][..]),
        ("/metrics", &["get"]),
        ("/v1/status", &["get"]),
        ("/v1/ips/{ip}", &["get"]),
        ("/v1/lists/{list}", &["get", "post"]),
        ("/v1/lists/{list}/{net}", &["delete"]),
        ("/v1/report", &["post"]),
        ("/v1/reload", &["post"]),
        ("/v1/mode", &["get", "put"]),
        ("/v1/cluster", &["get"]),
        ("/v1/offenders", &["get"]),
        ("/v1/feeds", &["get"]),
        ("/v1/feeds/{name}/accept", &["post"]),
    ]
    .into_iter()
    .map(|(p, ms)| (p.to_owned(), ms.iter().map(|m| (*m).to_owned()).collect()))
    .collect();
    assert_eq!(documented_operations(), expected);
    // Bearer auth everywhere except the probes.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"].as_str(),
        Some("bearer")
    );
    assert!(doc["security"][0]["bearerAuth"].is_sequence());
    for open in ["/healthz", "/metrics"] {
        assert_eq!(
            doc["paths"][open]["get"]["security"]
                .as_sequence()
                .map(Vec::len),
            Some(0),
            "{open} needs no token"
        );
    }
}

/// Every call the CLI makes matches a documented path template and method.
#[test]
fn cli_calls_are_documented_in_openapi() {
    let documented = documented_operations();
    let calls = [
        Call::status(),
        Call::ip("2001:db8::1".parse().unwrap()),
        Call::list(ListKind::Graylist, Some(5), Some("c")),
        Call::add(
            ListKind::Whitelist,
            &AddRequest {
                entries: vec![],
                force: false,
            },
        )
        .unwrap(),
        Call::remove(ListKind::Blacklist, &net("203.0.113.0/24")),
        Call::offenders(15),
        Call::reload(),
        Call::mode(None).unwrap(),
        Call::mode(Some(crate::model::Mode::Monitor)).unwrap(),
        Call::get("/v1/feeds".to_owned()),
        Call::feed_accept("spamhaus-drop"),
        Call::get("/v1/cluster".to_owned()),
        Call::report(&ReportRequest {
            ip: "192.0.2.1".into(),
            reason: None,
        })
        .unwrap(),
    ];
    for call in calls {
        let path = call.path.split('?').next().unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        let matched = documented.iter().find(|(template, _)| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        });
        let (template, methods) =
            matched.unwrap_or_else(|| panic!("{} is not documented", call.path));
        assert!(
            methods.contains(&call.method.as_str().to_ascii_lowercase()),
            "{} {template} is not documented",
            call.method.as_str()
        );
    }
}

/// A schema's properties and required fields, `allOf` and `$ref` resolved.
fn schema_fields(
    schemas: &serde_norway::Value,
    schema: &serde_norway::Value,
) -> (BTreeMap<String, serde_norway::Value>, BTreeSet<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return schema_fields(schemas, &schemas[name]);
    }
    let mut properties = BTreeMap::new();
    let mut required = BTreeSet::new();
    for part in schema["allOf"].as_sequence().into_iter().flatten() {
        let (p, r) = schema_fields(schemas, part);
        properties.extend(p);
        required.extend(r);
    }
    for (k, v) in schema["properties"].as_mapping().into_iter().flatten() {
        properties.insert(k.as_str().unwrap().to_owned(), v.clone());
    }
    for r in schema["required"].as_sequence().into_iter().flatten() {
        required.insert(r.as_str().unwrap().to_owned());
    }
    (properties, required)
}

/// For each schema: the JSON of a value with every `Option` set, the JSON of one
/// with every `Option` unset, and the fields the server requires in a request
/// (for answers: every field serde writes).
fn contract_samples() -> Vec<(&'static str, Value, Value, Option<&'static [&'static str]>)> {
    let full_status = IpStatus {
        would_drop: true,
        expires: Some("2030-01-01T00:00:00Z".into()),
        retry_after: Some(5),
        node: Some("web-1".into()),
        country: Some("DE".into()),
        asn: Some(64500),
        asn_org: Some("Example".into()),
        packet: Some("tcp/22".into()),
        scoped: vec![crate::api::types::ScopedVerdictView {
            packets: "tcp/22".into(),
            verdict: "drop".into(),
            would_drop: true,
            list: Some("blacklist".into()),
            prefix: Some("0.0.0.0/0".into()),
            reason: Some("rule 2: deny 0.0.0.0/0 tcp/22".into()),
            source: Some("rule".into()),
        }],
        ..sample_ip_status()
    };
    let empty_status = IpStatus {
        list: None,
        prefix: None,
        reason: None,
        source: None,
        ..sample_ip_status()
    };
    let page = |cursor: Option<&str>| ListPage {
        entries: vec![entry("203.0.113.0/24", None, "config", "config")],
        next_cursor: cursor.map(Into::into),
    };
    let status = Status {
        interface: "eth0".into(),
        xdp_mode: "skb".into(),
        mode: "monitor".into(),
        uptime_seconds: 1,
        entries: BTreeMap::new(),
        tracked_sources: 0,
        verdicts: BTreeMap::new(),
        lists: BTreeMap::new(),
        maps: BTreeMap::new(),
        problems: vec![],
    };
    let report = |status: IpStatus, reports: Option<u32>| ReportResponse {
        outcome: "recorded".into(),
        reports,
        status,
    };
    vec![
        (
            "Health",
            to(&crate::api::types::Health {
                status: "degraded".into(),
                problems: vec!["table_full: IPG_V4_HOSTS is full".into()],
            }),
            to(&crate::api::types::Health {
                status: "ok".into(),
                problems: vec![],
            }),
            None,
        ),
        (
            "ScopedVerdict",
            to(&crate::api::types::ScopedVerdictView {
                packets: "tcp/22".into(),
                verdict: "pass".into(),
                would_drop: true,
                list: Some("graylist".into()),
                prefix: Some("192.0.2.0/24".into()),
                reason: Some("r".into()),
                source: Some("config".into()),
            }),
            to(&crate::api::types::ScopedVerdictView {
                packets: "tcp (other ports)".into(),
                verdict: "drop".into(),
                would_drop: false,
                list: None,
                prefix: None,
                reason: None,
                source: None,
            }),
            None,
        ),
        (
            "ProblemView",
            to(&crate::api::types::ProblemView {
                kind: "persist".into(),
                detail: "d".into(),
                since: "2026-12-03T12:00:00.000Z".into(),
                count: 2,
            }),
            to(&crate::api::types::ProblemView {
                kind: "persist".into(),
                detail: "d".into(),
                since: "2026-12-03T12:00:00.000Z".into(),
                count: 2,
            }),
            None,
        ),
        (
            "ReloadResponse",
            to(&crate::api::types::ReloadResponse {
                reloaded: true,
                restart_needed: vec!["maps".into()],
            }),
            to(&crate::api::types::ReloadResponse {
                reloaded: true,
                restart_needed: vec![],
            }),
            None,
        ),
        ("Traffic", to(&traffic(1, 2)), to(&traffic(1, 2)), None),
        (
            "MapFill",
            to(&MapFill::default()),
            to(&MapFill::default()),
            None,
        ),
        ("Status", to(&status), to(&status), None),
        (
            "ModeView",
            to(&crate::api::types::ModeView {
                mode: "monitor".into(),
                config_mode: "enforce".into(),
            }),
            to(&crate::api::types::ModeView {
                mode: "enforce".into(),
                config_mode: "enforce".into(),
            }),
            None,
        ),
        (
            "ModeRequest",
            to(&crate::api::types::ModeRequest {
                mode: "monitor".into(),
            }),
            to(&crate::api::types::ModeRequest {
                mode: "enforce".into(),
            }),
            Some(&["mode"]),
        ),
        (
            "IpCounters",
            to(&IpCounters::default()),
            to(&IpCounters::default()),
            None,
        ),
        ("IpStatus", to(&full_status), to(&empty_status), None),
        (
            "ListEntryView",
            to(&entry("a", Some("b"), "c", "d")),
            to(&entry("a", None, "c", "d")),
            None,
        ),
        ("ListPage", to(&page(Some("c"))), to(&page(None)), None),
        (
            "AddEntry",
            to(&AddEntry {
                net: "a".into(),
                duration: Some("2h".into()),
                reason: Some("r".into()),
            }),
            to(&AddEntry {
                net: "a".into(),
                duration: None,
                reason: None,
            }),
            Some(&["net"]),
        ),
        (
            "AddRequest",
            to(&AddRequest {
                entries: vec![],
                force: true,
            }),
            to(&AddRequest {
                entries: vec![],
                force: false,
            }),
            Some(&["entries"]),
        ),
        (
            "AddResponse",
            to(&AddResponse {
                added: 1,
                replaced: 0,
            }),
            to(&AddResponse {
                added: 1,
                replaced: 0,
            }),
            None,
        ),
        (
            "RemoveResponse",
            to(&RemoveResponse {
                removed: "a".into(),
            }),
            to(&RemoveResponse {
                removed: "a".into(),
            }),
            None,
        ),
        (
            "ReportRequest",
            to(&ReportRequest {
                ip: "a".into(),
                reason: Some("r".into()),
            }),
            to(&ReportRequest {
                ip: "a".into(),
                reason: None,
            }),
            Some(&["ip"]),
        ),
        (
            "ReportResponse",
            to(&report(full_status, Some(2))),
            to(&report(empty_status, None)),
            None,
        ),
        (
            "OffenderList",
            to(&crate::api::types::OffenderList {
                offenders: vec![offender(true)],
            }),
            to(&crate::api::types::OffenderList { offenders: vec![] }),
            None,
        ),
        (
            "OffenderView",
            to(&offender(true)),
            to(&offender(false)),
            None,
        ),
        (
            "FeedList",
            to(&crate::api::types::FeedList {
                feeds: vec![feed_view(true)],
            }),
            to(&crate::api::types::FeedList { feeds: vec![] }),
            None,
        ),
        (
            "FeedView",
            to(&feed_view(true)),
            to(&feed_view(false)),
            None,
        ),
        (
            "HeldView",
            to(&feed_view(true).held.unwrap()),
            to(&feed_view(true).held.unwrap()),
            None,
        ),
        (
            "ClusterView",
            to(&cluster_view(true)),
            to(&cluster_view(false)),
            None,
        ),
        (
            "ApiError",
            to(&ApiError {
                error: "e".into(),
                detail: "d".into(),
                index: Some(0),
            }),
            to(&ApiError {
                error: "e".into(),
                detail: "d".into(),
                index: None,
            }),
            Some(&["error", "detail"]),
        ),
    ]
}

/// A feed with every optional field set, or none.
pub(super) fn feed_view(full: bool) -> crate::api::types::FeedView {
    let some = |s: &str| full.then(|| s.to_owned());
    crate::api::types::FeedView {
        name: "spamhaus-drop".into(),
        list: "blacklist".into(),
        source: "https://www.spamhaus.org/drop/drop_v4.json".into(),
        format: "spamhaus-json".into(),
        entries: 1500,
        last_fetch: some("2030-01-01T00:00:00Z"),
        last_change: some("2030-01-01T00:00:00Z"),
        last_error: some("feed https://x/ answered HTTP 404 Not Found"),
        next_fetch: "2030-01-01T01:00:00Z".into(),
        fetches: 3,
        failures: 1,
        rejected_lines: 2,
        rejected_samples: vec!["line 7: x: not an address".into()],
        dropped: [("bogon".to_owned(), 2)].into(),
        dropped_samples: vec!["10.0.0.0/8: inside bogon 10.0.0.0/8".into()],
        held: full.then(|| crate::api::types::HeldView {
            reason: "the update changes 80% of the feed (more than 50%)".into(),
            added: 10,
            removed: 1190,
            since: "2030-01-01T00:30:00Z".into(),
        }),
    }
}

/// A top offender with a ban, or without.
fn offender(banned: bool) -> crate::api::types::OffenderView {
    let some = |s: &str| banned.then(|| s.to_owned());
    crate::api::types::OffenderView {
        ip: "198.51.100.7".into(),
        strikes: 2,
        reports: 1,
        last_activity: "2030-01-01T00:00:00Z".into(),
        list: some("graylist"),
        prefix: some("198.51.100.7/32"),
        reason: some("syn rate"),
        expires: some("2030-01-01T00:10:00Z"),
        counters: crate::api::types::IpCounters::default(),
    }
}

/// A fleet view with every optional field set, or none.
fn cluster_view(full: bool) -> crate::api::types::ClusterView {
    let some = |s: &str| full.then(|| s.to_owned());
    crate::api::types::ClusterView {
        enabled: full,
        node: some("web-1"),
        link: "up".into(),
        since: some("2030-01-01T00:00:00Z"),
        last_error: some("connection refused"),
        nodes: vec![],
        shared: 1,
        queued: 0,
        last_lag_ms: full.then_some(1),
        last_resync_ms: full.then_some(2),
        last_resync_decisions: full.then_some(3),
        resyncs: 1,
        published: 1,
        applied: 1,
        rejected: 0,
        skipped: 0,
        removed: 0,
        dropped: 0,
    }
}

fn to<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn openapi_schemas_match_the_types() {
    let doc = openapi();
    let schemas = &doc["components"]["schemas"];
    let samples = contract_samples();
    let sampled: BTreeSet<&str> = samples.iter().map(|(name, ..)| *name).collect();
    // String formats (Address, Position, Duration) are not types of their own.
    let documented: BTreeSet<&str> = schemas
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, schema)| schema["type"].as_str() != Some("string"))
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(
        documented, sampled,
        "every object schema has a sample and vice versa"
    );
    for (name, full, empty, request_required) in samples {
        let (properties, required) = schema_fields(schemas, &schemas[name]);
        let full_keys: BTreeSet<String> = full.as_object().unwrap().keys().cloned().collect();
        let documented_keys: BTreeSet<String> = properties.keys().cloned().collect();
        assert_eq!(documented_keys, full_keys, "{name}: properties");
        let expected_required: BTreeSet<String> = match request_required {
            Some(fields) => fields.iter().map(|f| (*f).to_owned()).collect(),
            // An answer always has the fields serde writes when every Option is unset.
            None => empty.as_object().unwrap().keys().cloned().collect(),
        };
        assert_eq!(required, expected_required, "{name}: required");
        for (field, schema) in &properties {
            let nullable = schema["nullable"].as_bool().unwrap_or(false);
            let null_in_empty = empty.get(field).is_some_and(Value::is_null);
            assert_eq!(nullable, null_in_empty, "{name}.{field}: nullable");
        }
    }
}

#[test]
fn formats_the_fleet_and_a_fleet_decision() {
    use crate::api::types::{ClusterNode, ClusterView};
    let mut x = sample_ip_status();
    x.source = Some("cluster".into());
    x.node = Some("web-2".into());
    assert!(
        format_ip_status(&x).contains("source    cluster (node web-2)"),
        "{}",
        format_ip_status(&x)
    );
    let view = ClusterView {
        enabled: true,
        node: Some("web-1".into()),
        link: "up".into(),
        since: Some("2026-12-06T20:00:00.000Z".into()),
        last_error: None,
        nodes: vec![ClusterNode {
            name: "web-2".into(),
            last_seen: "2026-12-06T20:00:01.000Z".into(),
        }],
        shared: 3,
        queued: 0,
        last_lag_ms: Some(2),
        last_resync_ms: Some(5),
        last_resync_decisions: Some(3),
        resyncs: 1,
        published: 4,
        applied: 2,
        rejected: 1,
        skipped: 0,
        removed: 0,
        dropped: 0,
    };
    let text = format_cluster(&view);
    assert!(
        text.contains("link               up since 2026-12-06T20:00:00.000Z"),
        "{text}"
    );
    assert!(
        text.contains("last resync        3 decisions in 5 ms (1 resyncs)"),
        "{text}"
    );
    assert!(text.contains("web-2  2026-12-06T20:00:01.000Z"), "{text}");
    assert_eq!(
        format_cluster(&ClusterView {
            enabled: false,
            ..view
        }),
        "not in a fleet (no [cluster] in the config)\n"
    );
}

#[test]
fn highlight_colours_verdicts_and_headers_only() {
    let text = "ip       198.51.100.7\nverdict  drop\nlist     graylist\nreason   pass drop\n\nLIST  PACKETS\nblacklist  7\n";
    let out = highlight(text);
    // Stripped of its escapes, the text is unchanged.
    assert_eq!(anstream::adapter::strip_str(&out).to_string(), text);
    assert!(
        out.contains("\u{1b}[1m\u{1b}[31mdrop\u{1b}[0m") || out.contains("drop\u{1b}[0m"),
        "{out:?}"
    );
    assert!(out.contains("graylist\u{1b}[0m"), "{out:?}");
    assert!(out.contains("\u{1b}[1mLIST  PACKETS\u{1b}[0m"), "{out:?}");
    // A reason that says "pass drop" is not a verdict: left alone.
    assert!(out.contains("reason   pass drop\n"), "{out:?}");
    // Nothing to colour, nothing added.
    assert_eq!(
        highlight("blacklist: added 1, replaced 0\n"),
        "blacklist: added 1, replaced 0\n"
    );
}

#[test]
fn top_takes_bounded_interval_and_limit() {
    for (args, ok) in [
        (&["ipguard", "top"][..], true),
        (
            &["ipguard", "top", "--interval", "5", "--limit", "100"],
            true,
        ),
        (&["ipguard", "top", "--interval", "0"], false),
        (&["ipguard", "top", "--limit", "101"], false),
    ] {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            c: ClientCommand,
        }
        assert_eq!(
            <Cli as clap::Parser>::try_parse_from(args).is_ok(),
            ok,
            "{args:?}"
        );
    }
}

#[test]
fn formats_reload() {
    use crate::api::types::ReloadResponse;
    assert_eq!(
        format_reload(&ReloadResponse {
            reloaded: true,
            restart_needed: vec![]
        }),
        "reloaded\n"
    );
    assert_eq!(
        format_reload(&ReloadResponse {
            reloaded: true,
            restart_needed: vec!["maps".into(), "api".into()]
        }),
        "reloaded; these changed settings take effect only after a restart: maps, api\n"
    );
}

#[test]
fn parses_mode_with_and_without_a_mode() {
    use crate::model::Mode;
    assert_eq!(
        parse(&["mode"]),
        ClientCommand::Mode {
            mode: None,
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse(&["mode", "monitor"]),
        ClientCommand::Mode {
            mode: Some(Mode::Monitor),
            api: opts(DEFAULT_API)
        }
    );
    assert_eq!(
        parse_err(&["mode", "dry-run"]).kind(),
        ErrorKind::InvalidValue
    );
    // The request: a GET to show, a PUT with the mode's name to switch.
    let get = Call::mode(None).unwrap();
    assert_eq!((get.method, get.path.as_str()), (Method::Get, "/v1/mode"));
    assert_eq!(get.body, None);
    let put = Call::mode(Some(Mode::Enforce)).unwrap();
    assert_eq!((put.method, put.path.as_str()), (Method::Put, "/v1/mode"));
    assert_eq!(put.body.as_deref(), Some(r#"{"mode":"enforce"}"#));
}

#[test]
fn formats_the_mode_and_a_would_drop_verdict() {
    use crate::api::types::ModeView;
    let view = |mode: &str, config: &str| ModeView {
        mode: mode.into(),
        config_mode: config.into(),
    };
    assert_eq!(format_mode(&view("enforce", "enforce")), "mode  enforce\n");
    let differs = format_mode(&view("monitor", "enforce"));
    assert!(differs.starts_with("mode  monitor\n"), "{differs}");
    assert!(
        differs.contains("the config file says enforce"),
        "{differs}"
    );
    let x = IpStatus {
        verdict: "pass".into(),
        would_drop: true,
        ..sample_ip_status()
    };
    let text = format_ip_status(&x);
    assert!(text.contains("verdict   pass (would drop)\n"), "{text}");
    assert!(text.contains("list      blacklist\n"), "{text}");
    // Coloured as a warning, and the JSON says so only when true.
    assert!(
        highlight(&text).contains("pass (would drop)\u{1b}[0m"),
        "{text:?}"
    );
    assert!(serde_json::to_string(&x)
        .unwrap()
        .contains(r#""would_drop":true"#));
    assert!(!serde_json::to_string(&sample_ip_status())
        .unwrap()
        .contains("would_drop"));
}
