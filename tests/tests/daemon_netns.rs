//! T2: the built `ipguard` binary on one end of a veth pair, real traffic from another
//! network namespace. Needs root and IPGUARD_BIN; fails loudly without them.

use std::process::Command;

use ipguard_tests::{
    daemon::{connect, listener, ping, testbed, Daemon},
    ipguard_bin, require_root,
};

const CONFIG: &str = r#"
xdp_mode = "auto"
[lists]
whitelist = ["127.0.0.0/8", "::1", "203.0.113.128/25"]
graylist  = ["198.51.100.64/26"]
blacklist = ["203.0.113.0/24", "198.51.100.7", "2001:db8:bad::/48"]
[maps]
sources_capacity = 4096
"#;

#[test]
fn daemon_drops_listed_sources_and_detaches_on_sigterm() {
    let bed = testbed("a");
    let dir = tempfile::tempdir().unwrap();
    let v4 = listener(&bed, "192.0.2.1:0");
    let v6 = listener(&bed, "[2001:db8:1::1]:0");

    // Before the daemon: everything gets through (proves the testbed itself works).
    assert!(
        ping(&bed, "203.0.113.5", "192.0.2.1"),
        "testbed broken: no ping without filter"
    );
    assert!(
        connect(&bed, "2001:db8:bad::5", v6),
        "testbed broken: no v6 connect without filter"
    );

    let daemon = Daemon::start(&bed, dir.path(), CONFIG);

    // Unlisted and whitelisted sources pass, ping and TCP, v4 and v6.
    assert!(
        ping(&bed, "192.0.2.2", "192.0.2.1"),
        "unlisted v4 ping dropped"
    );
    assert!(
        ping(&bed, "198.51.100.8", "192.0.2.1"),
        "unlisted v4 ping dropped"
    );
    assert!(
        ping(&bed, "2001:db8:1::2", "2001:db8:1::1"),
        "unlisted v6 ping dropped"
    );
    assert!(connect(&bed, "192.0.2.2", v4), "unlisted v4 connect failed");
    assert!(
        connect(&bed, "2001:db8:1::2", v6),
        "unlisted v6 connect failed"
    );
    // Whitelisted /25 inside the blacklisted /24 wins.
    assert!(
        ping(&bed, "203.0.113.200", "192.0.2.1"),
        "whitelisted source dropped"
    );
    assert!(
        connect(&bed, "203.0.113.200", v4),
        "whitelisted connect failed"
    );

    // Blacklisted and graylisted sources are dropped.
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "blacklisted /24 ping passed"
    );
    assert!(
        !ping(&bed, "198.51.100.7", "192.0.2.1"),
        "blacklisted host ping passed"
    );
    assert!(
        !ping(&bed, "198.51.100.70", "192.0.2.1"),
        "graylisted ping passed"
    );
    assert!(
        !ping(&bed, "2001:db8:bad::5", "2001:db8:1::1"),
        "blacklisted v6 ping passed"
    );
    assert!(
        !connect(&bed, "203.0.113.5", v4),
        "blacklisted v4 connect succeeded"
    );
    assert!(
        !connect(&bed, "2001:db8:bad::5", v6),
        "blacklisted v6 connect succeeded"
    );

    let (status, log) = daemon.terminate();
    assert!(
        status.success(),
        "daemon exit status {status} on SIGTERM: {log}"
    );
    assert!(
        !bed.srv_has_xdp(),
        "an XDP program is still attached after SIGTERM: {log}"
    );
    assert!(
        log.contains("detached"),
        "no detach message in the daemon log: {log}"
    );

    // And traffic flows again.
    assert!(
        ping(&bed, "203.0.113.5", "192.0.2.1"),
        "blacklisted source still dropped after exit"
    );
}

#[test]
fn forced_skb_mode_is_honoured() {
    let bed = testbed("k");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        dir.path(),
        &CONFIG.replace(r#"xdp_mode = "auto""#, r#"xdp_mode = "skb""#),
    );
    let out = ipguard_tests::netns::sh(&["ip", "-n", &bed.srv, "link", "show", "dev", &bed.srv_if]);
    let link = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        link.contains("xdpgeneric"),
        "not attached in generic (skb) mode: {link}"
    );
    assert!(
        ping(&bed, "192.0.2.2", "192.0.2.1"),
        "unlisted ping dropped in skb mode"
    );
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "blacklisted ping passed in skb mode"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("mode=\"skb\"") || log.contains("mode=skb"),
        "{log}"
    );
    assert!(!bed.srv_has_xdp());
}

#[test]
fn auto_mode_uses_native_on_veth() {
    let bed = testbed("n");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    let out = ipguard_tests::netns::sh(&["ip", "-n", &bed.srv, "link", "show", "dev", &bed.srv_if]);
    let link = String::from_utf8_lossy(&out.stdout).into_owned();
    // veth has a native XDP driver hook: auto must pick it, not the generic fallback.
    assert!(
        link.contains(" xdp ") && !link.contains("xdpgeneric"),
        "{link}"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

fn run_daemon(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(ipguard_bin())
        .args(args)
        .output()
        .expect("run ipguard");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn daemon_refuses_to_start_on_bad_input() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, CONFIG).unwrap();
    let good = good.to_str().unwrap();

    let (status, err) = run_daemon(&["run", "--config", good, "--interface", "ipg-nosuch0"]);
    assert!(!status.success());
    assert_eq!(
        err.trim(),
        "ipguard: error: unknown interface `ipg-nosuch0` (see `ip link`)"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[lists]\nblacklist = [\"203.0.113.1/24\"]\n").unwrap();
    let (status, err) = run_daemon(&[
        "run",
        "--config",
        bad.to_str().unwrap(),
        "--interface",
        "lo",
    ]);
    assert!(!status.success());
    assert!(
        err.contains("bad.toml:2:14")
            && err.contains("host bits")
            && err.contains("203.0.113.0/24"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "not a single line: {err}");

    let (status, err) = run_daemon(&["run", "--config", good]);
    assert!(!status.success());
    assert!(err.contains("no interface"), "{err}");

    // Without privileges: a clear message, nothing loaded.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(ipguard_bin())
        .args(["run", "--config", good, "--interface", "lo"])
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("missing CAP_BPF") && err.contains("run as root"),
        "{err}"
    );

    // check-config validates without loading anything.
    let out = Command::new(ipguard_bin())
        .args(["check-config", good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("blacklist 3 entries"));
}

/// The systemd notify protocol against a socket of the test's own (PID 1 here is not
/// systemd): READY once filtering, WATCHDOG pings at half `WATCHDOG_USEC`, RELOADING then
/// READY around a SIGHUP, STOPPING at SIGTERM. The same run logs JSON, one object a line.
#[test]
fn systemd_notify_protocol_and_json_logs() {
    use std::{
        os::unix::net::UnixDatagram,
        time::{Duration, Instant},
    };
    let bed = testbed("n");
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = Daemon::start_env(
        &bed,
        dir.path(),
        CONFIG,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &["--log-format", "json"],
    );
    // Every datagram until `until` holds, or 10 s.
    let read_until = |until: &dyn Fn(&[String]) -> bool| {
        let mut got: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while !until(&got) {
            assert!(Instant::now() < deadline, "notifications so far: {got:?}");
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    };
    let got = read_until(&|g| g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3);
    let ready = got
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {got:?}"));
    assert!(got[ready].contains(&format!("STATUS=filtering on {}", bed.srv_if)));
    // Ready only once the program is attached.
    assert!(bed.srv_has_xdp());
    daemon.signal(libc::SIGHUP);
    let got = read_until(&|g| g.iter().any(|m| m.contains("STATUS=config reloaded")));
    let reloading = got
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 in {got:?}"));
    assert!(got[reloading].contains("MONOTONIC_USEC="), "{got:?}");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        rest.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{rest:?}"
    );
    // Every line of the log is one JSON object with the text log's fields.
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        messages.push(v);
    }
    let filtering = messages
        .iter()
        .find(|v| v["message"] == "ipguard is filtering")
        .unwrap_or_else(|| panic!("no start line in {log}"));
    assert_eq!(filtering["interface"], bed.srv_if.as_str());
    assert_eq!(filtering["level"], "INFO");
    assert!(messages
        .iter()
        .any(|v| v["message"] == "SIGHUP: config reloaded"));
}
