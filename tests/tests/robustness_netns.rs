//! T2: what a black-box probe of the daemon found, each kept as a test: a reload that does
//! not fit, the program detached or its pins removed from outside, a start on a severed
//! pinned link, thousands of idle API connections, SIGTERM during start-up. Needs root and
//! IPGUARD_BIN.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{http, http_get, pin_dir, ping, testbed, with_state, Daemon},
    netns::{in_netns, sh},
};

fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        sleep(Duration::from_millis(100));
    }
}

fn hosts(first: u8, n: u8) -> String {
    (first..first + n)
        .map(|h| format!("\"198.51.100.{h}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A reload whose lists do not fit the maps changes nothing and says why (SIGHUP and
/// `POST /v1/reload`); the daemon stays up with the lists it had.
#[test]
fn a_reload_that_does_not_fit_changes_nothing() {
    let bed = testbed("a");
    let dir = tempfile::tempdir().unwrap();
    let config = |n: u8| {
        format!(
            "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [{}]\n[maps]\nsources_capacity = 4096\nlpm_v4_capacity = 16\n",
            hosts(1, n)
        )
    };
    let daemon = Daemon::start(&bed, dir.path(), &config(12));
    daemon
        .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap();
    let path = dir.path().join("ipguard.toml");
    std::fs::write(&path, with_state(&bed, dir.path(), &config(20))).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log(&["cannot be applied"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    let (code, body) = http(&bed, "POST", "/v1/reload", None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("full"), "{body}");
    let (_, status) = http_get(&bed, "/v1/status");
    assert!(status.contains("\"blacklist\":12"), "{status}");
    // What fits reloads.
    std::fs::write(&path, with_state(&bed, dir.path(), &config(14))).unwrap();
    let (code, body) = http(&bed, "POST", "/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    let (_, status) = http_get(&bed, "/v1/status");
    assert!(status.contains("\"blacklist\":14"), "{status}");
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

const PLAIN: &str = "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [\"203.0.113.0/24\"]\n[maps]\nsources_capacity = 4096\n";

/// The program detached from outside, or its pins removed: noticed, repaired, reported;
/// a start on a pinned link that was detached while no daemon ran replaces it.
#[test]
fn outside_interference_with_the_link_is_repaired() {
    let bed = testbed("l");
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&bed, dir.path(), PLAIN);
    daemon
        .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap();
    let link = format!("{}/xdp_link", pin_dir(&bed));
    // Detached: the daemon may re-attach before a ping could tell; its log says it noticed.
    sh(&["bpftool", "link", "detach", "pinned", &link]);
    eventually(Duration::from_secs(10), "re-attached", || {
        bed.srv_has_xdp() && !ping(&bed, "203.0.113.5", "192.0.2.1")
    });
    assert!(daemon.log().contains("was detached"), "{}", daemon.log());
    // The pins removed: the link is pinned again.
    sh(&["rm", "-rf", &pin_dir(&bed)]);
    eventually(Duration::from_secs(10), "the link pinned again", || {
        std::path::Path::new(&link).exists()
    });
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));
    // Killed, then the pinned link detached while no daemon runs: the next start works.
    daemon.kill();
    assert!(
        bed.srv_has_xdp(),
        "the re-pinned link did not outlive the daemon"
    );
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));
    sh(&["bpftool", "link", "detach", "pinned", &link]);
    let daemon = Daemon::spawn(&bed, dir.path(), &dir.path().join("ipguard.toml"));
    daemon
        .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    assert!(!ping(&bed, "203.0.113.5", "192.0.2.1"));
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

/// Thousands of connections that never finish their headers: the API still answers an
/// operator at once, and they are closed after the header timeout.
#[test]
fn idle_connections_do_not_exhaust_the_api() {
    let bed = testbed("i");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bed, dir.path(), PLAIN);
    daemon
        .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap();
    let srv = bed.srv.clone();
    let idle: Vec<TcpStream> = in_netns(&srv, || {
        (0..3000)
            .filter_map(|_| {
                let mut s = TcpStream::connect("127.0.0.1:9180").ok()?;
                let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.");
                Some(s)
            })
            .collect()
    });
    assert!(idle.len() >= 2000, "opened only {}", idle.len());
    let t = Instant::now();
    let (code, _) = http_get(&bed, "/healthz");
    let took = t.elapsed();
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(2), "healthz took {took:?}");
    eprintln!(
        "{} idle connections open: /healthz answered in {took:?}",
        idle.len()
    );
    // Past the 10 s header timeout the server has closed them: a read ends (EOF or
    // a reset), it does not time out.
    sleep(Duration::from_secs(11));
    let mut closed = 0;
    for mut s in idle.into_iter().take(50) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            _ => closed += 1,
        }
    }
    assert_eq!(
        closed, 50,
        "idle connections still open after the header timeout"
    );
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

/// SIGTERM while the daemon starts: it stops cleanly once it can, and leaves no pins.
#[test]
fn sigterm_during_start_up_stops_cleanly() {
    let bed = testbed("t");
    let dir = tempfile::tempdir().unwrap();
    // A large source map makes the start take a moment.
    let config = PLAIN.replace("sources_capacity = 4096", "sources_capacity = 4194304");
    let path = dir.path().join("ipguard.toml");
    std::fs::write(&path, with_state(&bed, dir.path(), &config)).unwrap();
    let child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", bed.srv))
        .arg(ipguard_tests::ipguard_bin())
        .args(["run", "--config"])
        .arg(&path)
        .args(["--interface", &bed.srv_if])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {log}", out.status);
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(
        !std::path::Path::new(&pin_dir(&bed)).exists(),
        "pins left behind: {log}"
    );
    assert!(!bed.srv_has_xdp());
}
