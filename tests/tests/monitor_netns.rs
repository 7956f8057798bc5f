//! T2: monitor mode (dry run) in the daemon on a veth pair: `ipguard mode monitor` lets a
//! blacklisted source's pings through and counts them as would drop (metrics, explain),
//! `ipguard mode enforce` drops them again, a reload that does not change the file's `mode`
//! keeps the switch; `[geo] mode = "monitor"` passes a blocked country, explained as geo.
//! Needs root and IPGUARD_BIN.

use ipguard_tests::{
    daemon::{cli_ok, http_get, ping, testbed, Daemon},
    netns::Testbed,
    pytools::make_mmdb,
};
use serde_json::Value;

const CONFIG: &str = r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
blacklist = ["203.0.113.0/24"]
"#;

fn explain(bed: &Testbed, ip: &str) -> Value {
    serde_json::from_str(&cli_ok(bed, &["status", ip, "--json"])).expect("JSON from status --json")
}

/// The value of one metric line (`name{labels}`), 0 if absent.
fn metric(bed: &Testbed, series: &str) -> u64 {
    let (code, text) = http_get(bed, "/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const WOULD_DROP_BLACK: &str = "ipguard_would_drop_total{list=\"blacklist\"}";

#[test]
fn mode_monitor_passes_a_blacklisted_source_and_counts_it_then_enforce_drops_again() {
    let bed = testbed("mo");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    assert!(ping(&bed, "192.0.2.2", "192.0.2.1"), "testbed broken");
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "blacklist not enforced"
    );
    assert_eq!(cli_ok(&bed, &["mode"]), "mode  enforce\n");

    let out = cli_ok(&bed, &["mode", "monitor"]);
    assert!(out.starts_with("mode  monitor\n"), "{out}");
    assert!(out.contains("the config file says enforce"), "{out}");
    let before = metric(&bed, WOULD_DROP_BLACK);
    for _ in 0..3 {
        assert!(
            ping(&bed, "203.0.113.5", "192.0.2.1"),
            "monitor mode still drops the blacklisted source"
        );
    }
    // Each echo request counted as would drop (the replies go the other way).
    assert!(
        metric(&bed, WOULD_DROP_BLACK) >= before + 3,
        "would-drop counter: {}",
        metric(&bed, WOULD_DROP_BLACK)
    );
    assert_eq!(metric(&bed, "ipguard_monitor_mode"), 1);
    let x = explain(&bed, "203.0.113.5");
    assert_eq!(
        (&x["verdict"], &x["list"], &x["would_drop"], &x["source"]),
        (
            &Value::from("pass"),
            &Value::from("blacklist"),
            &Value::from(true),
            &Value::from("config")
        ),
        "{x}"
    );
    assert!(x["counters"]["packets"].as_u64().unwrap() >= 3, "{x}");
    let text = cli_ok(&bed, &["status", "203.0.113.5"]);
    assert!(text.contains("pass (would drop)"), "{text}");
    let status = cli_ok(&bed, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("mode") && l.ends_with("monitor")),
        "{status}"
    );

    // A reload that leaves the file's mode as it was keeps the run-time switch.
    cli_ok(&bed, &["reload"]);
    assert!(
        ping(&bed, "203.0.113.5", "192.0.2.1"),
        "a reload ended monitor mode"
    );

    cli_ok(&bed, &["mode", "enforce"]);
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "enforce mode again, but the blacklisted source passes"
    );
    let x = explain(&bed, "203.0.113.5");
    assert_eq!(x["verdict"], "drop", "{x}");
    assert!(x.get("would_drop").is_none(), "{x}");
    assert_eq!(metric(&bed, "ipguard_monitor_mode"), 0);
    assert!(
        daemon
            .wait_log(&["monitor mode:"], std::time::Duration::from_secs(1))
            .is_some(),
        "the switch is logged: {}",
        daemon.log()
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn geo_in_monitor_mode_passes_the_country_and_explains_it() {
    let bed = testbed("mg");
    let dir = tempfile::tempdir().unwrap();
    // XB is 198.51.100.0/24.
    let country = make_mmdb(dir.path(), "c.mmdb", &["country"]);
    let config = format!(
        "{CONFIG}[geo]\ndatabase = \"{}\"\nblock_countries = [\"XB\"]\nmode = \"monitor\"\n",
        country.display()
    );
    let daemon = Daemon::start(&bed, dir.path(), &config);
    let before = metric(&bed, WOULD_DROP_BLACK);
    assert!(
        ping(&bed, "198.51.100.8", "192.0.2.1"),
        "a country in monitor mode was dropped"
    );
    assert!(metric(&bed, WOULD_DROP_BLACK) > before);
    let x = explain(&bed, "198.51.100.8");
    assert_eq!(x["verdict"], "pass", "{x}");
    assert_eq!(x["would_drop"], true, "{x}");
    assert_eq!(x["source"], "geo", "{x}");
    assert_eq!(x["country"], "XB", "{x}");
    assert_eq!(x["reason"], "geo: country XB", "{x}");
    // The config's enforced blacklist still drops; the global mode is enforce.
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));
    assert_eq!(cli_ok(&bed, &["mode"]), "mode  enforce\n");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
