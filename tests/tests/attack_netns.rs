//! T2: holding under attack. The daemon on a veth pair, real SYN floods from many source
//! addresses of the client namespace: a host table that fills up, spoofed sources that
//! are the operator's or the host's own, a state disk that fills up, a restart in the
//! middle of traffic. Needs root and IPGUARD_BIN.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{
        http, http_get, listener, pin_dir, source_range, syn_flood, syn_flood_from, testbed,
        with_state, Daemon,
    },
    netns::{in_netns, sh, Testbed},
};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn explain(bed: &Testbed, ip: &str) -> Value {
    let (code, body) = http_get(bed, &format!("/v1/ips/{ip}"));
    assert_eq!(code, 200, "{body}");
    json(&body)
}

fn status(bed: &Testbed) -> Value {
    let (code, body) = http_get(bed, "/v1/status");
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// The value of a metric line `name{labels} value` (0 when absent).
fn metric(bed: &Testbed, line_start: &str) -> f64 {
    let (code, body) = http_get(bed, "/metrics");
    assert_eq!(code, 200);
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn hosts(net: [u8; 3], n: u8) -> Vec<IpAddr> {
    (1..=n)
        .map(|h| IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], h)))
        .collect()
}

/// Waits until `f` holds, up to `limit`; panics with `what` otherwise.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        sleep(Duration::from_millis(100));
    }
}

const FULL: &str = r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
[maps]
sources_capacity = 65536
lpm_v4_capacity = 64
[[rate_limit]]
kind = "syn"
count = 10
window = "1s"
[escalation]
graylist_duration = "10s"
strikes_to_blacklist = 100
ban_growth = 1.0
promote_when_full = 4
"#;

/// More offenders than the host table holds (64): the daemon stays up and answers, the
/// refusals are counted, crowded /24s are promoted, nothing banned is let go early, and
/// expiry still empties the table.
#[test]
fn a_full_host_table_degrades_and_keeps_filtering() {
    let bed = testbed("f");
    source_range(&bed, "198.18.0.0/16");
    let dir = tempfile::tempdir().unwrap();
    let dst = listener(&bed, "192.0.2.1:0");
    let daemon = Daemon::start(&bed, dir.path(), FULL);
    let groups = [[198, 18, 1], [198, 18, 2], [198, 18, 3]];
    let mut banned = BTreeSet::new();
    for g in groups {
        let sources = hosts(g, 40);
        syn_flood(&bed, &sources, dst, 25);
        // Every source of the group ends up dropped: by its own entry while there is room,
        // by its /24 once the table is full.
        for src in &sources {
            let ip = src.to_string();
            eventually(Duration::from_secs(5), &format!("{ip} banned"), || {
                explain(&bed, &ip)["verdict"] == "drop"
            });
            banned.insert(ip);
        }
    }
    assert_eq!(banned.len(), 120);
    // Up, answering, and saying what is wrong.
    assert_eq!(http_get(&bed, "/healthz").0, 200);
    let s = status(&bed);
    let used = s["maps"]["lpm_v4"]["used"].as_u64().unwrap();
    assert!(used <= 64, "{s}");
    assert!(
        metric(&bed, "ipguard_table_full_total{map=\"IPG_V4_HOSTS\"}") >= 1.0,
        "no refusal counted"
    );
    assert!(metric(&bed, "ipguard_promotions_total") >= 1.0);
    eprintln!(
        "host table full: {} of 64 host entries used, {} refusals, {} promotions, {} sources dropped",
        used,
        metric(&bed, "ipguard_table_full_total{map=\"IPG_V4_HOSTS\"}"),
        metric(&bed, "ipguard_promotions_total"),
        banned.len()
    );
    let promoted = explain(&bed, "198.18.3.7");
    assert_eq!(promoted["prefix"], "198.18.3.0/24", "{promoted}");
    // Nothing banned was let go.
    for ip in &banned {
        assert_eq!(explain(&bed, ip)["verdict"], "drop", "{ip} let go");
    }
    // Expiry runs: the 10 s bans end and the table empties.
    eventually(Duration::from_secs(25), "every ban expired", || {
        status(&bed)["entries"]["graylist"] == 0
    });
    assert_eq!(explain(&bed, "198.18.1.1")["verdict"], "pass");
    assert_eq!(status(&bed)["maps"]["lpm_v4"]["used"], 0);
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

const PROMOTE: &str = r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
[[rate_limit]]
kind = "syn"
count = 10
window = "1s"
[escalation]
graylist_duration = "5m"
promote_v4_after = 8
promote_window = "10m"
"#;

/// 8 sources of one /24 banned within the window: the /24 is banned in their place and
/// their host entries released; sources of it never seen are dropped, explained by the
/// promotion; a /24 with fewer bans keeps its host entries.
#[test]
fn sources_of_one_slash_24_banned_within_the_window_are_promoted() {
    let bed = testbed("pc");
    source_range(&bed, "198.18.0.0/16");
    let dir = tempfile::tempdir().unwrap();
    let dst = listener(&bed, "192.0.2.1:0");
    let daemon = Daemon::start(&bed, dir.path(), PROMOTE);
    // 25 SYNs a source: split by a window edge, one side still has more than 10.
    let crowd = hosts([198, 18, 5], 12);
    syn_flood(&bed, &crowd, dst, 25);
    let few = hosts([198, 18, 6], 5);
    syn_flood(&bed, &few, dst, 25);
    for src in few.iter().chain(&crowd) {
        let ip = src.to_string();
        eventually(Duration::from_secs(5), &format!("{ip} banned"), || {
            explain(&bed, &ip)["verdict"] == "drop"
        });
    }
    // A 13th source of the crowded /24 that never sent anything.
    let x = explain(&bed, "198.18.5.200");
    assert_eq!(x["verdict"], "drop", "{x}");
    assert_eq!(x["prefix"], "198.18.5.0/24", "{x}");
    assert_eq!(x["list"], "graylist", "{x}");
    assert_eq!(x["source"], "rate_limit", "{x}");
    assert_eq!(
        x["reason"], "promoted: 8 sources of 198.18.5.0/24 banned within 10m",
        "{x}"
    );
    // The crowd's host entries are released (the later sources never got one); the
    // other /24's stay, and it is not promoted.
    let (code, body) = http_get(&bed, "/v1/lists/graylist?limit=1000");
    assert_eq!(code, 200, "{body}");
    let page = json(&body);
    let nets: BTreeSet<String> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["net"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = std::iter::once("198.18.5.0/24".to_owned())
        .chain(few.iter().map(|ip| format!("{ip}/32")))
        .collect();
    assert_eq!(nets, expected, "{body}");
    assert_eq!(status(&bed)["maps"]["lpm_v4"]["used"], 5);
    assert_eq!(explain(&bed, "198.18.6.200")["verdict"], "pass");
    assert_eq!(explain(&bed, "198.18.6.1")["prefix"], "198.18.6.1/32");
    assert_eq!(metric(&bed, "ipguard_promotions_total{why=\"count\"}"), 1.0);
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
    assert!(log.contains("banned the whole prefix"), "{log}");
}

/// A spoofed flood "from" the operator's network or from the host's own address bans
/// nobody; the same flood from anyone else does.
#[test]
fn spoofed_floods_from_protected_addresses_ban_nobody() {
    let bed = testbed("g");
    source_range(&bed, "198.18.0.0/16");
    // A second address of the server itself, used as a spoofed source by the client.
    sh(&[
        "ip",
        "-n",
        &bed.srv,
        "addr",
        "add",
        "192.0.2.100/32",
        "dev",
        &bed.srv_if,
    ]);
    source_range(&bed, "192.0.2.100/32");
    let dir = tempfile::tempdir().unwrap();
    let dst = listener(&bed, "192.0.2.1:0");
    let config = FULL.replace(
        "[maps]",
        "[protect]\nnetworks = [\"198.18.9.0/24\"]\n[maps]",
    );
    let daemon = Daemon::start(&bed, dir.path(), &config);
    let admin: IpAddr = "198.18.9.9".parse().unwrap();
    let own: IpAddr = "192.0.2.100".parse().unwrap();
    let other: IpAddr = "198.18.8.8".parse().unwrap();
    syn_flood(&bed, &[admin, own, other], dst, 30);
    eventually(Duration::from_secs(5), "the other source banned", || {
        explain(&bed, "198.18.8.8")["verdict"] == "drop"
    });
    eventually(
        Duration::from_secs(5),
        "both protected skips counted",
        || metric(&bed, "ipguard_protected_total") >= 2.0,
    );
    for ip in ["198.18.9.9", "192.0.2.100"] {
        let x = explain(&bed, ip);
        assert_eq!(x["verdict"], "pass", "{ip}: {x}");
        assert_eq!(x["list"], Value::Null, "{ip}: {x}");
    }
    // A manual ban of the operator's network needs force.
    let (code, body) = http(
        &bed,
        "POST",
        "/v1/lists/blacklist",
        Some(r#"{"entries":[{"net":"198.18.9.0/24"}]}"#),
    );
    assert_eq!(code, 409, "{body}");
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

/// The state directory on a tiny tmpfs that fills up: the API refuses with 507 what it
/// cannot persist, acknowledges nothing it did not persist, and the daemon keeps filtering;
/// after a kill -9 and a restart every acknowledged entry is back.
#[test]
fn a_full_state_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let bed = testbed("d");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=96k",
        "ipguard-test",
        state.to_str().unwrap(),
    ]);
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let config = "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [\"203.0.113.0/24\"]\n[maps]\nsources_capacity = 4096\n";
    let mut daemon = Daemon::start(&bed, dir.path(), config);
    let mut acked = Vec::new();
    let mut refused = 0;
    for batch in 0..400u32 {
        let entries: Vec<String> = (0..10u32)
            .map(|i| {
                let n = batch * 10 + i;
                format!(
                    r#"{{"net":"10.{}.{}.0/24","duration":"1d","reason":"batch {batch}"}}"#,
                    n / 256,
                    n % 256
                )
            })
            .collect();
        let body = format!(r#"{{"entries":[{}]}}"#, entries.join(","));
        let (code, answer) = http(&bed, "POST", "/v1/lists/graylist", Some(&body));
        match code {
            200 => acked.extend((0..10u32).map(|i| batch * 10 + i)),
            507 => {
                assert!(answer.contains("not persisted"), "{answer}");
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled ({} acked)",
        acked.len()
    );
    assert!(!acked.is_empty());
    eprintln!(
        "state disk full: {} entries acknowledged, {refused} batches refused (507)",
        acked.len()
    );
    // Still filtering, and saying why writes fail.
    assert!(!ipguard_tests::daemon::ping(
        &bed,
        "203.0.113.5",
        "192.0.2.1"
    ));
    let s = status(&bed);
    assert!(
        s["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "persist"),
        "{s}"
    );
    let (code, h) = http_get(&bed, "/healthz");
    assert_eq!(code, 200, "{h}");
    assert_eq!(json(&h)["status"], "degraded", "{h}");
    assert!(metric(&bed, "ipguard_persist_errors_total") >= 1.0);
    let entries_before = s["entries"]["graylist"].as_u64().unwrap();
    assert_eq!(
        entries_before,
        acked.len() as u64,
        "refused entries were applied"
    );
    // A crash, and a start on the same (still full) disk: every acknowledged entry is back.
    daemon.kill();
    let daemon = Daemon::spawn(&bed, dir.path(), &dir.path().join("ipguard.toml"));
    // The pinned program kept filtering: wait for the new daemon itself.
    daemon
        .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    let s = status(&bed);
    assert_eq!(s["entries"]["graylist"], acked.len() as u64, "{s}");
    for n in [acked[0], acked[acked.len() / 2], *acked.last().unwrap()] {
        let ip = format!("10.{}.{}.1", n / 256, n % 256);
        assert_eq!(explain(&bed, &ip)["list"], "graylist", "{ip} lost");
    }
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

/// A restart with the program left attached (`keep_attached`, set by a reload as the
/// README's upgrade steps do): traffic from a blacklisted source is dropped at every
/// moment of it, allowed traffic keeps flowing.
#[test]
fn a_restart_with_keep_attached_leaves_no_unfiltered_moment() {
    let bed = testbed("r");
    let dir = tempfile::tempdir().unwrap();
    let base = "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [\"203.0.113.0/24\"]\n[maps]\nsources_capacity = 4096\n";
    let keep = format!(
        "{base}[state]\ndir = \"{}\"\npin_dir = \"{}\"\nkeep_attached = true\n",
        dir.path().join("state").display(),
        pin_dir(&bed)
    );
    let config = dir.path().join("ipguard.toml");
    // Started without keep_attached; the upgrade procedure sets it with a reload.
    let first = Daemon::start(&bed, dir.path(), base);
    std::fs::write(&config, &keep).unwrap();
    first.signal(libc::SIGHUP);
    first
        .wait_log(&["SIGHUP: config reloaded"], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", first.log()));
    assert!(
        !first.log().contains("need a restart"),
        "keep_attached should not need a restart: {}",
        first.log()
    );
    // Counts datagrams from each source at the server.
    let server: UdpSocket = in_netns(&bed.srv, || UdpSocket::bind("192.0.2.1:9999").unwrap());
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (from_banned, from_allowed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counter = {
        let (stop, b, a) = (stop.clone(), from_banned.clone(), from_allowed.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = server.recv_from(&mut buf) {
                    match from.ip().to_string().as_str() {
                        "203.0.113.5" => b.fetch_add(1, Ordering::Relaxed),
                        "192.0.2.2" => a.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                }
            }
        })
    };
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let cli = bed.cli.clone();
        std::thread::spawn(move || {
            in_netns(&cli, move || {
                let banned = UdpSocket::bind("203.0.113.5:0").unwrap();
                let allowed = UdpSocket::bind("192.0.2.2:0").unwrap();
                let to: SocketAddr = "192.0.2.1:9999".parse().unwrap();
                // One pair every millisecond, for at most a minute.
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let _ = banned.send_to(b"x", to);
                    let _ = allowed.send_to(b"y", to);
                    sent.fetch_add(1, Ordering::Relaxed);
                    sleep(Duration::from_millis(1));
                }
            })
        })
    };
    sleep(Duration::from_millis(500));
    let (exit, log) = first.terminate();
    assert!(exit.success(), "{log}");
    assert!(log.contains("stays attached"), "{log}");
    assert!(bed.srv_has_xdp(), "the program was detached");
    // Between the two daemons, for a moment, no daemon at all.
    sleep(Duration::from_millis(500));
    std::fs::write(&config, with_state(&bed, dir.path(), base)).unwrap();
    let second = Daemon::spawn(&bed, dir.path(), &config);
    second
        .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{}", second.log()));
    sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    counter.join().unwrap();
    let (banned, allowed, sent) = (
        from_banned.load(Ordering::Relaxed),
        from_allowed.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    eprintln!(
        "restart gap: {sent} pairs sent, {allowed} allowed received, {banned} blacklisted received"
    );
    assert!(sent > 500, "sent {sent}");
    assert_eq!(
        banned, 0,
        "{banned} datagrams of a blacklisted source got through"
    );
    assert!(
        allowed * 10 >= sent * 9,
        "allowed traffic lost: {allowed} of {sent}"
    );
    // This one was started without keep_attached: it detaches and unpins.
    let (exit, log) = second.terminate();
    assert!(exit.success(), "{log}");
    assert!(!bed.srv_has_xdp());
}

/// The addresses the kernel's IPv4 host table lists (graylist or blacklist) right now,
/// read from its pin: what the program drops whether a daemon runs or not.
fn kernel_host_bans(bed: &Testbed) -> BTreeSet<String> {
    let out = sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        &format!("{}/IPG_V4_HOSTS", pin_dir(bed)),
        "-j",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let byte = |x: &Value| {
        let s = x.as_str().expect("hex byte");
        u8::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex byte")
    };
    v.as_array()
        .expect("an array of entries")
        .iter()
        .filter_map(|e| {
            let k: Vec<u8> = e["key"].as_array()?.iter().map(byte).collect();
            let code = byte(&e["value"].as_array()?[0]);
            // LIST_GRAYLIST, LIST_BLACKLIST.
            matches!(code, 2 | 3).then(|| Ipv4Addr::new(k[0], k[1], k[2], k[3]).to_string())
        })
        .collect()
}

/// Every entry of the graylist (net → expiry), page by page.
fn graylist(bed: &Testbed) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let (code, body) = http_get(
            bed,
            &format!(
                "/v1/lists/graylist?limit=10000&cursor={}",
                cursor.replace('/', "%2F")
            ),
        );
        assert_eq!(code, 200, "{body}");
        let page = json(&body);
        for e in page["entries"].as_array().unwrap() {
            out.insert(e["net"].as_str().unwrap().to_owned(), e["expires"].clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

const CRASH: &str = r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
[maps]
sources_capacity = 65536
[[rate_limit]]
kind = "syn"
count = 10
window = "1s"
[escalation]
graylist_duration = "1h"
strikes_to_blacklist = 100
ban_growth = 1.0
"#;

/// kill -9 at moments chosen at random while a client posts batches and SYN floods make
/// bans, 20 rounds: after each restart, every entry the API acknowledged and every ban the
/// kernel held is there, with the expiry it had.
#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let bed = testbed("k");
    source_range(&bed, "198.18.0.0/16");
    let dir = tempfile::tempdir().unwrap();
    let dst = listener(&bed, "192.0.2.1:0");
    let mut daemon = Daemon::start(&bed, dir.path(), CRASH);
    let config = dir.path().join("ipguard.toml");
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut known: std::collections::BTreeMap<String, Value> = Default::default();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let (mut posted, mut kernel_checked) = (0usize, 0usize);
    for round in 0..20u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(100 + rng % 600);
        let stop = Arc::new(AtomicBool::new(false));
        // The client: batches of 5 new /24s, as fast as the daemon answers.
        let writer = {
            let (stop, srv) = (stop.clone(), bed.srv.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut batch = 0u32;
                while !stop.load(Ordering::Relaxed) && batch < 200 {
                    let nets: Vec<String> = (0..5)
                        .map(|i| format!("10.{round}.{}.0/24", batch * 5 + i))
                        .collect();
                    let body = format!(
                        r#"{{"entries":[{}]}}"#,
                        nets.iter()
                            .map(|n| format!(r#"{{"net":"{n}","duration":"1h"}}"#))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let answer = in_netns(&srv, move || post_raw(&body));
                    match answer {
                        Some(200) => got.extend(nets),
                        // The daemon died under it: what was not answered is not acknowledged.
                        _ => break,
                    }
                    batch += 1;
                }
                got
            })
        };
        // Offenders: 10 new sources every 50 ms.
        let flooder = {
            let stop = stop.clone();
            let cli = bed.cli.clone();
            std::thread::spawn(move || {
                let mut n = 1u8;
                while !stop.load(Ordering::Relaxed) && n < 250 {
                    let sources: Vec<IpAddr> = (n..n.saturating_add(10))
                        .map(|h| IpAddr::V4(Ipv4Addr::new(198, 18, round as u8 + 1, h)))
                        .collect();
                    syn_flood_from(&cli, &sources, dst, 15);
                    n = n.saturating_add(10);
                    sleep(Duration::from_millis(50));
                }
            })
        };
        sleep(kill_after);
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        let got = writer.join().unwrap();
        flooder.join().unwrap();
        posted += got.len();
        acked.extend(got);
        // What the kernel holds now, with no daemon running.
        let in_kernel = kernel_host_bans(&bed);
        daemon = Daemon::spawn(&bed, dir.path(), &config);
        daemon
            .wait_log(&["ipguard is filtering"], Duration::from_secs(20))
            .unwrap_or_else(|| panic!("round {round}: {}", daemon.log()));
        let now = graylist(&bed);
        for net in &acked {
            assert!(
                now.contains_key(net),
                "round {round}: acknowledged {net} lost"
            );
        }
        for ip in &in_kernel {
            let host = format!("{ip}/32");
            assert!(
                now.contains_key(&host),
                "round {round}: the kernel's ban of {ip} was lost at the restart"
            );
        }
        kernel_checked += in_kernel.len();
        // Expiries stay what they were.
        for (net, expires) in &known {
            assert_eq!(
                now.get(net),
                Some(expires),
                "round {round}: {net}'s expiry moved"
            );
        }
        known = now;
    }
    eprintln!(
        "kill -9: 20 rounds, {posted} entries acknowledged, {kernel_checked} kernel bans checked after restarts, {} entries in the end, 0 lost",
        known.len()
    );
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

/// POST to the API from inside the server namespace; `None` if there was no answer.
fn post_raw(body: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect("127.0.0.1:9180").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "POST /v1/lists/graylist HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// A rule's hostname whose name server never answers: rate events, expiries and the API go
/// on as if nothing were resolving (the lookups run on their own task, each with a timeout).
#[test]
fn a_resolver_that_hangs_stalls_nothing() {
    let bed = testbed("n");
    let dir = tempfile::tempdir().unwrap();
    // A name server in the server namespace that reads every query and answers none.
    let dns: UdpSocket = in_netns(&bed.srv, || UdpSocket::bind("127.0.0.1:53").unwrap());
    dns.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicU64::new(0));
    let server = {
        let (stop, queries) = (stop.clone(), queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if dns.recv_from(&mut buf).is_ok() {
                    queries.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:3 attempts:3\n",
    )
    .unwrap();
    let config = dir.path().join("ipguard.toml");
    std::fs::write(
        &config,
        with_state(
            &bed,
            dir.path(),
            "rules_refresh = \"1s\"\n[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\n[maps]\nsources_capacity = 4096\n[[rules]]\naction = \"allow\"\nsource = \"admin.ipguard.test\"\n",
        ),
    )
    .unwrap();
    let daemon = Daemon::spawn_with(&bed, dir.path(), &config, Some(&resolv));
    daemon
        .wait_log(&["ipguard is filtering"], Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    // While lookups hang: an entry of 2 s expires on time and the API answers at once.
    let t = Instant::now();
    let (code, body) = http(
        &bed,
        "POST",
        "/v1/lists/graylist",
        Some(r#"{"entries":[{"net":"198.51.100.7","duration":"2s"}]}"#),
    );
    assert_eq!(code, 200, "{body}");
    let mut slowest = t.elapsed();
    assert_eq!(explain(&bed, "198.51.100.7")["list"], "graylist");
    while t.elapsed() < Duration::from_millis(2600) {
        let asked = Instant::now();
        let _ = status(&bed);
        slowest = slowest.max(asked.elapsed());
        sleep(Duration::from_millis(100));
    }
    let x = explain(&bed, "198.51.100.7");
    assert_eq!(x["list"], Value::Null, "expired late: {x}");
    assert!(
        slowest < Duration::from_millis(1000),
        "the API waited {slowest:?} while a lookup hung"
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(
        queries.load(Ordering::Relaxed) > 0,
        "the name server was never asked: the test did not test a hanging lookup"
    );
    eprintln!(
        "hanging resolver: {} queries unanswered, slowest API answer {slowest:?}, a 2 s entry expired on time",
        queries.load(Ordering::Relaxed)
    );
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
    assert!(log.contains("cannot resolve rule hostname"), "{log}");
}
