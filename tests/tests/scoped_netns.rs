//! T2: rules and list entries scoped to a protocol and destination ports, and rate limits
//! with exempt networks (issue 14 item 4). The daemon on a veth pair, real TCP handshakes
//! and UDP datagrams from several source addresses of the client namespace: tcp/22 only
//! from the admin host, port 25 closed to everyone, one source's udp/5353 blacklisted and
//! nothing else of it; a reload that opens tcp/22; a packet-rate rule that bans one host of
//! a /24 and never the exempt one beside it. Needs root and IPGUARD_BIN.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{connect, http, http_get, listener, ping, testbed, with_state, Daemon},
    netns::{in_netns, InNetns, Testbed},
};
use serde_json::Value;

/// The admin host: the only source let in on tcp/22.
const A: &str = "198.51.100.7";
/// An ordinary source, in the admin host's /24.
const B: &str = "198.51.100.8";
/// A source whose udp/5353 is blacklisted, and nothing else of it.
const C: &str = "203.0.113.5";
/// An ordinary IPv6 source.
const B6: &str = "2001:db8:1::2";
/// An IPv6 source whose udp/5353 is blacklisted.
const C6: &str = "2001:db8:bad::5";

const SRV: &str = "192.0.2.1";
const SRV6: &str = "2001:db8:1::1";

/// The deny tcp/22 rules, removed by the reload.
const DENY_SSH: &str = r#"
[[rules]]
action = "deny"
source = "0.0.0.0/0"
proto = "tcp"
ports = [22]

[[rules]]
action = "deny"
source = "::/0"
proto = "tcp"
ports = [22]
"#;

/// The config of the scope test, with or without [`DENY_SSH`]: rule 0 lets the admin host
/// in on tcp/22, then (with it) tcp/22 is denied to everyone else, then port 25 (TCP and
/// UDP, no proto) to everyone, the admin host included.
fn scoped_config(deny_ssh: bool) -> String {
    format!(
        r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
blacklist = [
    {{ net = "{C}/32", proto = "udp", ports = [5353] }},
    {{ net = "{C6}/128", proto = "udp", ports = [5353] }},
]
[maps]
sources_capacity = 4096

[[rules]]
action = "allow"
source = "{A}/32"
proto = "tcp"
ports = [22]
{}
[[rules]]
action = "deny"
source = "0.0.0.0/0"
ports = [25]
"#,
        if deny_ssh { DENY_SSH } else { "" }
    )
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn explain(bed: &Testbed, ip: &str) -> Value {
    let (code, body) = http_get(bed, &format!("/v1/ips/{ip}"));
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// Packets the XDP program dropped with `list` deciding
/// (`ipguard_packets_total{verdict="drop",list=...}`), 0 when absent.
fn dropped(bed: &Testbed, list: &str) -> u64 {
    let (code, text) = http_get(bed, "/metrics");
    assert_eq!(code, 200, "{text}");
    let series = format!("ipguard_packets_total{{verdict=\"drop\",list=\"{list}\"}}");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series.as_str())?
                .strip_prefix(' ')?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits until `f` holds, polling up to `limit`; panics with `what` otherwise.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        sleep(Duration::from_millis(50));
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A TCP connect from `src` to `dst` that must fail, proven a drop by a deny rule: the
/// rule drop counter grows (a timeout alone could be a slow path).
fn assert_denied_by_rule(bed: &Testbed, src: &str, dst: SocketAddr, what: &str) {
    let before = dropped(bed, "rule");
    assert!(!connect(bed, src, dst), "{what}: {src} connected to {dst}");
    let after = dropped(bed, "rule");
    assert!(
        after > before,
        "{what}: {src} -> {dst} did not connect, but no rule drop was counted ({before} -> {after})"
    );
}

/// A UDP socket in the server namespace that counts what reaches it.
struct UdpSink {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl UdpSink {
    fn bind(bed: &Testbed, addr: SocketAddr) -> UdpSink {
        let sock = in_netns(&bed.srv, move || UdpSocket::bind(addr).unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        UdpSink { sock, addr }
    }

    /// Datagrams received until `want` have come or `limit` has passed.
    fn receive(&self, want: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < want && Instant::now() < deadline {
            if self.sock.recv_from(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Datagrams waiting now (none is waited for).
    fn pending(&self) -> usize {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut n = 0;
        // Bounded: the socket's buffer holds far fewer.
        while n < 100_000 && self.sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        self.sock.set_nonblocking(false).unwrap();
        n
    }
}

/// `n` UDP datagrams from `src` to `dst`, sent at once from the client namespace.
fn send_udp(bed: &Testbed, src: &str, dst: SocketAddr, n: usize) {
    let src: IpAddr = src.parse().unwrap();
    in_netns(&bed.cli, move || {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
        for i in 0..n {
            s.send_to(format!("datagram {i}").as_bytes(), dst).unwrap();
        }
    });
}

/// UDP datagrams from `src` to `dst`, one every millisecond, from a thread in the client
/// namespace until [`Flood::stop`] (or 10 s, or 10 000 datagrams, whichever comes first).
struct Flood {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Flood {
    fn start(bed: &Testbed, src: &str, dst: SocketAddr) -> Flood {
        let src: IpAddr = src.parse().unwrap();
        let ns = bed.cli.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let _inside = InNetns::enter(&ns).unwrap_or_else(|e| panic!("{e:#}"));
            let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) && sent < 10_000 && Instant::now() < deadline {
                if s.send_to(b"probe", dst).is_ok() {
                    sent += 1;
                }
                sleep(Duration::from_millis(1));
            }
            sent
        });
        Flood { stop, thread }
    }

    /// Stops sending; the number of datagrams sent.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the probe thread panicked")
    }
}

/// `n` datagrams from `src` to `sink`, which must receive every one.
fn assert_udp_arrives(bed: &Testbed, src: &str, sink: &UdpSink, n: usize) {
    send_udp(bed, src, sink.addr, n);
    let got = sink.receive(n, Duration::from_secs(5));
    assert_eq!(
        got, n,
        "{src} -> {}: {got} of {n} datagrams arrived",
        sink.addr
    );
}

/// `n` datagrams from `src` to `sink`, all of which the blacklist must drop: the counter
/// shows every one dropped, and none reached the socket.
fn assert_udp_blacklisted(bed: &Testbed, src: &str, sink: &UdpSink, n: usize) {
    let before = dropped(bed, "blacklist");
    send_udp(bed, src, sink.addr, n);
    eventually(
        Duration::from_secs(5),
        &format!("{n} blacklist drops counted for {src} -> {}", sink.addr),
        || dropped(bed, "blacklist") >= before + n as u64,
    );
    assert_eq!(
        dropped(bed, "blacklist"),
        before + n as u64,
        "more blacklist drops than datagrams sent"
    );
    assert_eq!(
        sink.pending(),
        0,
        "{src} -> {}: a blacklisted datagram arrived",
        sink.addr
    );
}

/// tcp/22 only from the admin host, port 25 closed to everyone, one source's udp/5353
/// blacklisted and its other traffic passed; a reload without the deny tcp/22 rules opens
/// tcp/22 to everyone and keeps the rest.
#[test]
fn scoped_rules_and_entries_decide_by_protocol_and_port_and_reload() {
    let bed = testbed("sc");
    let dir = tempfile::tempdir().unwrap();
    let ssh = listener(&bed, &format!("{SRV}:22"));
    let smtp = listener(&bed, &format!("{SRV}:25"));
    let web = listener(&bed, &format!("{SRV}:80"));
    let ssh6 = listener(&bed, &format!("[{SRV6}]:22"));
    let web6 = listener(&bed, &format!("[{SRV6}]:80"));
    let mdns = UdpSink::bind(&bed, sock(SRV, 5353));
    let other = UdpSink::bind(&bed, sock(SRV, 5354));
    let mdns6 = UdpSink::bind(&bed, sock(SRV6, 5353));
    let other6 = UdpSink::bind(&bed, sock(SRV6, 5354));

    // Without the daemon everything gets through: the testbed works.
    assert!(connect(&bed, B, ssh), "testbed broken: {B} -> tcp/22");
    assert_udp_arrives(&bed, C, &mdns, 5);

    let daemon = Daemon::start(&bed, dir.path(), &scoped_config(true));
    let started = Instant::now();

    // The admin host: tcp/22 by the allow rule, tcp/80 by no rule; tcp/25 denied, since the
    // allow rule's scope (tcp/22) does not hold it.
    assert!(connect(&bed, A, ssh), "admin host refused on tcp/22");
    assert!(connect(&bed, A, web), "admin host refused on tcp/80");
    assert_denied_by_rule(&bed, A, smtp, "port 25 is denied to everyone");

    // Anyone else: tcp/80 yes, tcp/22 and tcp/25 no; ICMP is in no rule's scope.
    assert!(connect(&bed, B, web), "{B} refused on tcp/80");
    assert_denied_by_rule(&bed, B, ssh, "tcp/22 is the admin host's only");
    assert_denied_by_rule(&bed, B, smtp, "port 25 is denied to everyone");
    assert!(ping(&bed, B, SRV), "{B}: ping dropped by a tcp rule");

    // Port 25 without proto is UDP's as well.
    let smtp_udp = UdpSink::bind(&bed, sock(SRV, 25));
    let before = dropped(&bed, "rule");
    send_udp(&bed, B, smtp_udp.addr, 5);
    eventually(
        Duration::from_secs(5),
        "5 udp/25 datagrams dropped by the port-25 rule",
        || dropped(&bed, "rule") >= before + 5,
    );
    assert_eq!(
        smtp_udp.pending(),
        0,
        "udp/25 passed a rule on ports = [25]"
    );

    // IPv6: the ::/0 rule closes tcp/22, nothing closes tcp/80.
    assert!(connect(&bed, B6, web6), "{B6} refused on tcp/80");
    assert_denied_by_rule(&bed, B6, ssh6, "tcp/22 is denied to ::/0");

    // The scoped blacklist entries drop udp/5353 of their source and nothing else of it.
    assert_udp_blacklisted(&bed, C, &mdns, 20);
    assert_udp_arrives(&bed, C, &other, 20);
    assert_udp_arrives(&bed, B, &mdns, 20);
    assert!(connect(&bed, C, web), "{C}: tcp/80 dropped by a udp entry");
    assert!(ping(&bed, C, SRV), "{C}: ping dropped by a udp entry");
    assert_udp_blacklisted(&bed, C6, &mdns6, 20);
    assert_udp_arrives(&bed, C6, &other6, 20);
    assert_udp_arrives(&bed, B6, &mdns6, 20);
    assert!(ping(&bed, C6, SRV6), "{C6}: ping dropped by a udp entry");
    eprintln!("explain {C}: {}", explain(&bed, C));

    // A reload without the deny tcp/22 rules: in force when the API answers, tcp/22 open to
    // everyone; port 25, denied before and after, never passes while the tables change.
    let before = dropped(&bed, "rule");
    let probe = Flood::start(&bed, B, smtp_udp.addr);
    let config = dir.path().join("ipguard.toml");
    std::fs::write(&config, with_state(&bed, dir.path(), &scoped_config(false))).unwrap();
    let (code, body) = http(&bed, "POST", "/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    for (src, dst) in [(B, ssh), (B6, ssh6), (A, ssh)] {
        assert!(
            connect(&bed, src, dst),
            "{src} refused on tcp/22 by a reload the API said was done: {}",
            explain(&bed, src)
        );
    }
    let sent = probe.stop();
    assert!(sent > 0, "no udp/25 probe was sent during the reload");
    eventually(
        Duration::from_secs(5),
        &format!("{sent} udp/25 probes dropped by the port-25 rule"),
        || dropped(&bed, "rule") >= before + sent,
    );
    assert_eq!(
        smtp_udp.pending(),
        0,
        "udp/25 passed while the reload changed the rules"
    );
    assert_denied_by_rule(&bed, B, smtp, "port 25 is still denied after the reload");
    assert_udp_blacklisted(&bed, C, &mdns, 10);
    assert_udp_arrives(&bed, C, &other, 10);
    eprintln!("reload: {sent} udp/25 probes sent across it, none passed");
    eprintln!("scoped rules and entries: {:?}", started.elapsed());

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// A packet-rate rule exempting the admin host's /32: 200 datagrams at once ban an
/// ordinary host of the same /24 and never the admin host.
#[test]
fn a_rate_rule_never_bans_its_exempt_network() {
    let bed = testbed("sx");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
[maps]
sources_capacity = 4096

[[rate_limit]]
kind = "packets"
count = 20
window = "1s"
exempt = ["{A}/32"]
"#
    );
    let sink = UdpSink::bind(&bed, sock(SRV, 9999));
    let daemon = Daemon::start(&bed, dir.path(), &config);
    let started = Instant::now();

    // The exempt host first, so that its events are read before the other host's ban.
    // Every datagram of it arrives; some of the other host's may meet its ban already.
    assert_udp_arrives(&bed, A, &sink, 200);
    send_udp(&bed, B, sink.addr, 200);
    eventually(Duration::from_secs(5), &format!("{B} banned"), || {
        explain(&bed, B)["verdict"] == "drop"
    });
    let b = explain(&bed, B);
    assert_eq!(
        (&b["list"], &b["source"]),
        (&Value::from("graylist"), &Value::from("rate_limit")),
        "{b}"
    );

    // The exempt host was counted (the kernel saw all of it) and not banned.
    let a = explain(&bed, A);
    assert_eq!(a["verdict"], "pass", "exempt host banned: {a}");
    assert_eq!(a["list"], Value::Null, "{a}");
    assert!(
        a["counters"]["packets"].as_u64().unwrap_or(0) >= 200,
        "the exempt host's datagrams were not counted: {a}"
    );
    let (code, body) = http_get(&bed, "/v1/lists/graylist");
    assert_eq!(code, 200, "{body}");
    let nets: Vec<String> = json(&body)["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {body}"))
        .iter()
        .map(|e| e["net"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(nets, [format!("{B}/32")], "graylist: {body}");

    // Still exempt, and still let through, after a second burst.
    assert_udp_arrives(&bed, A, &sink, 200);
    assert!(
        ping(&bed, A, SRV),
        "exempt host dropped after a second burst"
    );
    assert_eq!(explain(&bed, A)["verdict"], "pass");
    assert!(!ping(&bed, B, SRV), "the banned host still answered");
    eprintln!("rate exemption: {:?}", started.elapsed());

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
