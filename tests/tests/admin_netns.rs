//! T2: administration of a running daemon: the CLI against the REST API, metrics, SIGHUP,
//! kill -9 and restart with pinned maps and persisted state. Needs root and IPGUARD_BIN.

use std::{thread::sleep, time::Duration};

use ipguard_tests::{
    daemon::{cli, cli_ok, http_get, pin_dir, ping, testbed, with_state, Daemon},
    netns::{in_netns, sh},
};
use serde_json::Value;

const CONFIG: &str = r#"
xdp_mode = "auto"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
blacklist = []
[report]
count = 3
window = "60s"
duration = "10m"
"#;

fn status_json(bed: &ipguard_tests::netns::Testbed, ip: &str) -> Value {
    serde_json::from_str(&cli_ok(bed, &["status", ip, "--json"])).expect("JSON from status --json")
}

#[test]
fn cli_adds_and_removes_entries_that_take_effect_at_once() {
    let bed = testbed("c");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    assert!(ping(&bed, "203.0.113.5", "192.0.2.1"), "testbed broken");

    let out = cli_ok(
        &bed,
        &["add", "blacklist", "203.0.113.0/24", "--reason", "scanner"],
    );
    assert!(out.contains("added 1"), "{out}");
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "blacklisted through the CLI but still answered"
    );
    let s = status_json(&bed, "203.0.113.5");
    assert_eq!(s["verdict"], "drop");
    assert_eq!(s["list"], "blacklist");
    assert_eq!(s["prefix"], "203.0.113.0/24");
    assert_eq!(s["source"], "api");
    assert_eq!(s["reason"], "scanner");
    assert!(s["counters"]["dropped"].as_u64().is_some());
    let table = cli_ok(&bed, &["list", "blacklist"]);
    assert!(
        table.contains("203.0.113.0/24") && table.contains("scanner"),
        "{table}"
    );

    cli_ok(&bed, &["remove", "blacklist", "203.0.113.0/24"]);
    assert!(
        ping(&bed, "203.0.113.5", "192.0.2.1"),
        "removed but still dropped"
    );

    // Never lock the operator out: the CLI's own address (loopback here) needs --force.
    let out = cli(&bed, &["add", "blacklist", "127.0.0.0/8"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("would lock out") && err.contains("force"),
        "{err}"
    );
    // A bad argument is refused by the CLI itself.
    let out = cli(&bed, &["add", "blacklist", "203.0.113.7/24"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits"));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn reports_through_the_cli_ban_after_the_configured_count() {
    let bed = testbed("r");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    for n in 1..=2 {
        let out = cli_ok(
            &bed,
            &["report", "192.0.2.2", "--reason", "failed login", "--json"],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["outcome"].as_str(), v["reports"].as_u64()),
            (Some("recorded"), Some(n)),
            "{out}"
        );
        assert!(ping(&bed, "192.0.2.2", "192.0.2.1"));
    }
    let v: Value = serde_json::from_str(&cli_ok(&bed, &["report", "192.0.2.2", "--json"])).unwrap();
    assert_eq!(v["outcome"], "banned");
    assert_eq!(v["list"], "graylist");
    assert!(
        !ping(&bed, "192.0.2.2", "192.0.2.1"),
        "reported source still answered"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn metrics_parse_and_count_the_traffic_sent() {
    let bed = testbed("m");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        dir.path(),
        &CONFIG.replace("blacklist = []", r#"blacklist = ["203.0.113.0/24"]"#),
    );
    for _ in 0..5 {
        assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));
    }
    for _ in 0..3 {
        assert!(ping(&bed, "192.0.2.2", "192.0.2.1"));
    }
    let (code, text) = http_get(&bed, "/metrics");
    assert_eq!(code, 200, "{text}");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    // Exactly the five echo requests from the blacklisted source were dropped, 98 bytes each.
    assert_eq!(
        value(
            "ipguard_packets_total",
            &[("verdict", "drop"), ("list", "blacklist")]
        ),
        5.0
    );
    assert_eq!(
        value(
            "ipguard_bytes_total",
            &[("verdict", "drop"), ("list", "blacklist")]
        ),
        5.0 * 98.0
    );
    // At least the three passing echo requests (neighbour discovery adds a few).
    assert!(
        value(
            "ipguard_packets_total",
            &[("verdict", "pass"), ("list", "unlisted")]
        ) >= 3.0
    );
    assert_eq!(value("ipguard_list_entries", &[("list", "blacklist")]), 1.0);
    assert_eq!(value("ipguard_list_entries", &[("list", "whitelist")]), 2.0);
    assert!(value("ipguard_map_capacity", &[("map", "lpm_v4")]) > 0.0);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn sighup_applies_an_edited_config() {
    let bed = testbed("h");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    let config = dir.path().join("ipguard.toml");
    assert!(ping(&bed, "203.0.113.5", "192.0.2.1"));

    let edited = with_state(
        &bed,
        dir.path(),
        &CONFIG.replace("blacklist = []", r#"blacklist = ["203.0.113.0/24"]"#),
    );
    std::fs::write(&config, edited).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log(&["config reloaded"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "SIGHUP did not apply the new blacklist entry"
    );

    // An invalid config is refused and the running one kept.
    std::fs::write(&config, "[lists]\nblacklist = [\"nonsense\"]\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log(&["new config is invalid"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "an invalid config changed the lists"
    );

    std::fs::write(&config, with_state(&bed, dir.path(), CONFIG)).unwrap();
    daemon.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon.log().matches("config reloaded").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        sleep(Duration::from_millis(20));
    }
    assert!(
        ping(&bed, "203.0.113.5", "192.0.2.1"),
        "entry removed from the config still drops"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn kill_9_keeps_filtering_and_a_restart_restores_state_and_expiries() {
    let bed = testbed("k");
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&bed, dir.path(), CONFIG);
    cli_ok(
        &bed,
        &[
            "add",
            "graylist",
            "203.0.113.0/24",
            "--duration",
            "1h",
            "--reason",
            "probe",
        ],
    );
    cli_ok(&bed, &["add", "blacklist", "198.51.100.7"]);
    cli_ok(&bed, &["add", "blacklist", "2001:db8:bad::/48"]);
    assert!(!ping(&bed, "2001:db8:bad::5", "2001:db8:1::1"));
    assert!(
        ping(&bed, "2001:db8:1::2", "2001:db8:1::1"),
        "testbed broken"
    );
    let before = status_json(&bed, "203.0.113.5");
    let expires = before["expires"].as_str().expect("an expiry").to_owned();
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));

    daemon.kill();
    // The pinned link keeps the program, and the pinned maps keep the lists.
    assert!(bed.srv_has_xdp(), "no XDP program after kill -9");
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "kill -9 stopped the filtering"
    );
    assert!(!ping(&bed, "198.51.100.7", "192.0.2.1"));
    assert!(ping(&bed, "192.0.2.2", "192.0.2.1"));
    assert!(!ping(&bed, "2001:db8:bad::5", "2001:db8:1::1"));

    // Without the IPv6 region bitmap's pin (as a version without the bitmap leaves the
    // pins) the start makes a new, empty map and fills it before its program replaces the
    // attached one (which, here, keeps reading its own copy until then).
    let regions = format!("{}/IPG_V6_REGIONS", pin_dir(&bed));
    std::fs::remove_file(&regions).unwrap_or_else(|e| panic!("{regions}: {e}"));
    let daemon = Daemon::spawn(&bed, dir.path(), &dir.path().join("ipguard.toml"));
    daemon
        .wait_log(&["adopted the pinned maps"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    let after = status_json(&bed, "203.0.113.5");
    assert_eq!(
        after["expires"].as_str(),
        Some(expires.as_str()),
        "expiry changed across the restart"
    );
    assert_eq!(after["reason"], "probe");
    assert_eq!(status_json(&bed, "198.51.100.7")["list"], "blacklist");
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));
    assert!(!ping(&bed, "2001:db8:bad::5", "2001:db8:1::1"));
    assert!(ping(&bed, "2001:db8:1::2", "2001:db8:1::1"));

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    assert!(!bed.srv_has_xdp(), "XDP still attached after a clean stop");
    assert!(
        !std::path::Path::new(&pin_dir(&bed)).exists(),
        "pins left after a clean stop"
    );
    let _ = sh(&["true"]);
}

/// `ipguard top` off a terminal: one plain snapshot with the rates measured over one
/// interval while traffic flows, and the offender the reports banned.
#[test]
fn top_prints_a_snapshot_of_rates_and_offenders_when_piped() {
    let bed = testbed("t");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    for _ in 0..3 {
        cli_ok(&bed, &["report", "192.0.2.2", "--reason", "failed login"]);
    }
    // Dropped (graylisted) and passed traffic for longer than top's interval.
    let cli_ns = bed.cli.clone();
    let pings: Vec<std::process::Child> = ["192.0.2.2", "198.51.100.8"]
        .into_iter()
        .map(|src| {
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", &cli_ns, "ping", "-q", "-c", "25", "-i", "0.1",
                ])
                .args(["-W", "1", "-I", src, "192.0.2.1"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("ping")
        })
        .collect();
    sleep(Duration::from_millis(300));
    let out = cli_ok(&bed, &["top", "--interval", "1"]);
    for mut p in pings {
        let _ = p.wait();
    }
    assert!(!out.contains('\u{1b}'), "escapes in piped output: {out:?}");
    let rate = |list: &str| -> f64 {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(list))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or_else(|| panic!("no {list} rate in\n{out}"))
    };
    assert!(rate("graylist") > 0.0, "{out}");
    assert!(rate("unlisted") > 0.0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("192.0.2.2 "))
        .unwrap_or_else(|| panic!("no offender row in\n{out}"));
    assert!(
        row.contains("graylist") && row.contains("3 reports"),
        "{row}"
    );
    // Plain status too when piped.
    assert!(!cli_ok(&bed, &["status", "192.0.2.2"]).contains('\u{1b}'));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// An atomic reload: the config's list file is swapped for another of 100k entries, and
/// a source listed in both is never passed while the tables change; `ipguard reload`
/// answers once all of it is applied.
#[test]
fn a_reload_of_100k_entries_never_passes_a_source_listed_before_and_after() {
    use std::{
        net::UdpSocket,
        sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Arc,
        },
    };
    let bed = testbed("l");
    let dir = tempfile::tempdir().unwrap();
    const PROBE: &str = "203.0.113.5";
    let write_list = |name: &str, second_octet: u8| {
        let mut text = String::with_capacity(2 << 20);
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            text.push_str(&format!("100.{}.{b}.{c}\n", second_octet + a));
        }
        text.push_str(PROBE);
        text.push('\n');
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (a, b) = (write_list("a.txt", 64), write_list("b.txt", 96));
    let config = |file: &std::path::Path| {
        format!(
            "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist_files = [\"{}\"]\n",
            file.display()
        )
    };
    let daemon = Daemon::start(&bed, dir.path(), &config(&a));
    assert_eq!(status_json(&bed, PROBE)["verdict"], "drop");

    // A receiver in the server namespace counts what arrives from each source.
    let rx = in_netns(&bed.srv, || UdpSocket::bind("192.0.2.1:0").unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let dst = rx.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (from_probe, from_control) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let receiver = {
        let (stop, p, c) = (stop.clone(), from_probe.clone(), from_control.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = rx.recv_from(&mut buf) {
                    match from.ip().to_string().as_str() {
                        PROBE => p.fetch_add(1, Ordering::Relaxed),
                        _ => c.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        })
    };
    // The probe and an unlisted control source send all along, at most 20 s.
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent, ns) = (stop.clone(), sent.clone(), bed.cli.clone());
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let probe = UdpSocket::bind(format!("{PROBE}:0")).unwrap();
                let control = UdpSocket::bind("192.0.2.2:0").unwrap();
                let t = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(20) {
                    let _ = probe.send_to(b"probe", dst);
                    let _ = control.send_to(b"control", dst);
                    sent.fetch_add(1, Ordering::Relaxed);
                    sleep(Duration::from_micros(200));
                }
            })
        })
    };
    sleep(Duration::from_millis(200));
    std::fs::write(
        dir.path().join("ipguard.toml"),
        with_state(&bed, dir.path(), &config(&b)),
    )
    .unwrap();
    let before = sent.load(Ordering::Relaxed);
    let out = cli_ok(&bed, &["reload"]);
    let during = sent.load(Ordering::Relaxed) - before;
    assert!(out.starts_with("reloaded"), "{out}");
    sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    receiver.join().unwrap();
    let (probe, control) = (
        from_probe.load(Ordering::Relaxed),
        from_control.load(Ordering::Relaxed),
    );
    eprintln!("reload: {during} probe packets sent while it ran; control received {control}");
    assert!(during > 0, "nothing was sent while the reload ran");
    assert!(
        control > 100,
        "the control source did not get through: {control}"
    );
    assert_eq!(probe, 0, "the probe, listed before and after, was passed");
    // The new list is in force, the old one gone.
    assert_eq!(status_json(&bed, "100.96.1.2")["verdict"], "drop");
    assert_eq!(status_json(&bed, "100.64.1.2")["verdict"], "pass");
    let s: Value = serde_json::from_str(&cli_ok(&bed, &["status", "--json"])).unwrap();
    assert_eq!(s["entries"]["blacklist"], 100_001);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
