//! T2: `[geo]` in the daemon. Test MaxMind databases (made with mmdb-writer), the daemon
//! on a veth pair: countries and an AS compiled into the tables drop real traffic, the
//! whitelist and the host's own address win, explain names the country and AS, and a
//! replaced database file is picked up without a reload. Needs root and IPGUARD_BIN.

use std::{thread::sleep, time::Duration};

use ipguard_tests::{
    daemon::{cli_ok, ping, testbed, Daemon},
    pytools::make_mmdb,
};
use serde_json::Value;

fn explain(bed: &ipguard_tests::netns::Testbed, ip: &str) -> Value {
    serde_json::from_str(&cli_ok(bed, &["status", ip, "--json"])).expect("JSON")
}

#[test]
fn countries_and_asns_drop_at_packet_level_and_a_new_database_is_picked_up() {
    let bed = testbed("g");
    let dir = tempfile::tempdir().unwrap();
    // XA 192.0.2.0/24, XB 198.51.100.0/24, XC (registered only) 203.0.113.0/24;
    // AS64501 198.51.100.0/24, AS64502 203.0.113.0/24.
    let country = make_mmdb(dir.path(), "country.mmdb", &["country"]);
    let asn = make_mmdb(dir.path(), "asn.mmdb", &["asn"]);
    let config = format!(
        r#"
[lists]
whitelist = ["127.0.0.0/8", "::1", "203.0.113.200"]
[geo]
database = "{}"
block_countries = ["XA", "XC", "ZZ"]
asn_database = "{}"
block_asns = [64501]
"#,
        country.display(),
        asn.display()
    );
    // check-config opens the databases and says what they compile to.
    std::fs::write(dir.path().join("check.toml"), &config).unwrap();
    let out = cli_ok(
        &bed,
        &[
            "check-config",
            dir.path().join("check.toml").to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("geo: ") && out.contains("not in the databases: ZZ"),
        "{out}"
    );

    let daemon = Daemon::start(&bed, dir.path(), &config);
    // XC (by registered country), XA and AS64501 are dropped; the whitelist wins.
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"), "XC passed");
    assert!(!ping(&bed, "198.51.100.8", "192.0.2.1"), "AS64501 passed");
    assert!(!ping(&bed, "192.0.2.2", "192.0.2.1"), "XA passed");
    assert!(
        ping(&bed, "203.0.113.200", "192.0.2.1"),
        "whitelisted source dropped"
    );
    let x = explain(&bed, "203.0.113.5");
    assert_eq!(x["verdict"], "drop", "{x}");
    assert_eq!(x["source"], "geo", "{x}");
    assert_eq!(x["country"], "XC", "{x}");
    assert_eq!(x["asn"], 64502, "{x}");
    assert_eq!(x["reason"], "geo: country XC, AS64502", "{x}");
    let x = explain(&bed, "198.51.100.8");
    assert_eq!(
        (x["verdict"].as_str(), x["asn_org"].as_str()),
        (Some("drop"), Some("Example Hosting")),
        "{x}"
    );
    // The host's own address is punched out of XA's /24: never dropped by geo.
    let x = explain(&bed, "192.0.2.1");
    assert_eq!(x["verdict"], "pass", "{x}");
    assert_eq!(x["country"], "XA", "{x}");
    let text = cli_ok(&bed, &["status", "203.0.113.5"]);
    assert!(
        text.contains("country   XC") || text.contains("country  XC"),
        "{text}"
    );

    // A new release of the database: 203.0.113.0/24 moves to XB, which is not blocked.
    // Written beside it and renamed over it, as a database updater does.
    make_mmdb(dir.path(), "country.new", &["country-moved"]);
    std::fs::rename(dir.path().join("country.new"), &country).unwrap();
    let t = std::time::Instant::now();
    while explain(&bed, "203.0.113.5")["country"] != "XB" || ping_dropped(&bed) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the new database was not applied: {}",
            daemon.log()
        );
        sleep(Duration::from_millis(200));
    }
    // Passed now (neither XB nor AS64502 is blocked), and nothing else moved.
    let x = explain(&bed, "203.0.113.5");
    assert_eq!(
        (x["verdict"].as_str(), x["list"].as_str()),
        (Some("pass"), None),
        "{x}"
    );
    assert!(!ping(&bed, "198.51.100.8", "192.0.2.1"), "AS64501 passed");
    assert!(
        daemon
            .wait_log(&["a database changed; recompiled"], Duration::from_secs(1))
            .is_some(),
        "{}",
        daemon.log()
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// Whether 203.0.113.5 is still dropped.
fn ping_dropped(bed: &ipguard_tests::netns::Testbed) -> bool {
    !ping(bed, "203.0.113.5", "192.0.2.1")
}
