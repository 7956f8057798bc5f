//! T2: the policy in action. The daemon on a veth pair with a 20 SYN/1 s rule and short
//! bans; real TCP connection bursts from the client namespace. Needs root and IPGUARD_BIN.

use std::{
    net::SocketAddr,
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::daemon::{connect, listener, ping, testbed, Daemon};

const CONFIG: &str = r#"
xdp_mode = "auto"
[lists]
whitelist = ["127.0.0.0/8", "::1", "198.51.100.8"]

[[rate_limit]]
kind = "syn"
count = 20
window = "1s"

[escalation]
graylist_duration = "3s"
strikes_to_blacklist = 2
strike_window = "1h"
blacklist_duration = "6s"
ban_growth = 1.0
"#;

/// `n` SYNs from `src` within a few milliseconds (non-blocking connects, closed after
/// 50 ms): well over 20 per second however slow the machine is.
fn burst(bed: &ipguard_tests::netns::Testbed, src: &str, dst: SocketAddr, n: usize) {
    let src: std::net::IpAddr = src.parse().unwrap();
    ipguard_tests::netns::in_netns(&bed.cli, move || {
        let socks: Vec<socket2::Socket> = (0..n)
            .map(|_| {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(dst),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                s.set_nonblocking(true).unwrap();
                s.bind(&SocketAddr::new(src, 0).into()).unwrap();
                let _ = s.connect(&dst.into());
                s
            })
            .collect();
        sleep(Duration::from_millis(50));
        drop(socks);
    });
}

/// Waits until `src` can ping the server again; returns how long that took.
fn until_released(
    bed: &ipguard_tests::netns::Testbed,
    src: &str,
    limit: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if ping(bed, src, "192.0.2.1") {
            return Some(t.elapsed());
        }
    }
    None
}

#[test]
fn syn_burst_graylists_then_releases_then_blacklists_on_second_strike() {
    let bed = testbed("p");
    let dir = tempfile::tempdir().unwrap();
    let dst = listener(&bed, "192.0.2.1:0");
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    let src = "192.0.2.2";

    // Under the limit: 15 SYNs at once do nothing.
    burst(&bed, src, dst, 15);
    assert!(
        connect(&bed, src, dst),
        "banned under the limit: {}",
        daemon.log()
    );
    // Over the limit: 40 SYNs at once get the source graylisted.
    burst(&bed, src, dst, 40);
    let line = daemon
        .wait_log(
            &["listed", "192.0.2.2/32", "graylist", "rate_limit"],
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| panic!("no graylisting logged: {}", daemon.log()));
    assert!(line.contains("rate limit"), "{line}");
    assert!(
        !ping(&bed, src, "192.0.2.1"),
        "graylisted source still answered"
    );
    assert!(!connect(&bed, src, dst), "graylisted source still connects");
    // Released on time: 3 s after the ban (the burst itself took some of it).
    let waited = until_released(&bed, src, Duration::from_secs(8)).expect("never released");
    assert!(waited < Duration::from_secs(5), "released late: {waited:?}");
    assert!(daemon
        .wait_log(
            &["unlisted", "192.0.2.2/32", "graylist"],
            Duration::from_secs(1)
        )
        .is_some());

    // Second burst: the second strike within the window blacklists.
    burst(&bed, src, dst, 40);
    daemon
        .wait_log(
            &["listed", "192.0.2.2/32", "blacklist"],
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| panic!("no blacklisting logged: {}", daemon.log()));
    // Still dropped after the graylist duration has passed ...
    sleep(Duration::from_secs(4));
    assert!(
        !ping(&bed, src, "192.0.2.1"),
        "blacklist ended with the graylist duration"
    );
    // ... and released once the 6 s blacklist is over.
    assert!(
        until_released(&bed, src, Duration::from_secs(6)).is_some(),
        "blacklist never expired"
    );

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn whitelisted_source_is_never_listed_whatever_it_sends() {
    let bed = testbed("w");
    let dir = tempfile::tempdir().unwrap();
    let dst = listener(&bed, "192.0.2.1:0");
    let daemon = Daemon::start(&bed, dir.path(), CONFIG);
    // 60 SYNs at once: three times the limit, from the whitelisted address.
    burst(&bed, "198.51.100.8", dst, 60);
    sleep(Duration::from_millis(300));
    assert!(
        connect(&bed, "198.51.100.8", dst),
        "a whitelisted source was cut off"
    );
    // An unlisted source with the same burst is listed: the rule was live all along.
    burst(&bed, "192.0.2.2", dst, 60);
    daemon
        .wait_log(&["listed", "192.0.2.2/32"], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let banned = log
        .lines()
        .any(|l| l.contains("198.51.100.8") && !l.contains(r#"list="whitelist""#));
    assert!(!banned, "whitelisted source listed: {log}");
}
