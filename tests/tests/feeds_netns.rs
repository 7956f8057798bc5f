//! T2: blocklist feeds in the daemon, served over real HTTP by a server the test runs in
//! the daemon's namespace (loopback only). A feed with garbage, a too broad entry and a
//! protected address; then one that turns into 0.0.0.0/0, one that 404s, one that empties (held
//! until accepted), one of 200k lines; and a restart with the source down, which keeps
//! the last good copy. Needs root and IPGUARD_BIN.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{cli, cli_ok, ping, testbed, Daemon},
    netns::{InNetns, Testbed},
};
use serde_json::Value;

/// What the feed server answers: status and body (ETag: a hash of the body).
struct Answer {
    status: u16,
    body: String,
}

/// A small HTTP/1.0 server on 127.0.0.1 in the server namespace, answering every GET
/// with the current [`Answer`], and 304 to a matching If-None-Match.
struct FeedServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    not_modified: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn etag(body: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:x}\"", h.finish())
}

impl FeedServer {
    fn start(bed: &Testbed) -> FeedServer {
        let answer = Arc::new(Mutex::new(Answer {
            status: 404,
            body: String::new(),
        }));
        let not_modified = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (answer, nm, stop, ns) = (
                answer.clone(),
                not_modified.clone(),
                stop.clone(),
                bed.srv.clone(),
            );
            std::thread::spawn(move || {
                let _inside = InNetns::enter(&ns).unwrap();
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        sleep(Duration::from_millis(10));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut if_none_match = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
                            if_none_match = Some(v.trim().to_owned());
                        }
                    }
                    let a = answer.lock().unwrap();
                    let tag = etag(&a.body);
                    let response = if a.status == 200 && if_none_match.as_deref() == Some(&tag) {
                        nm.fetch_add(1, Ordering::Relaxed);
                        format!(
                            "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nConnection: close\r\n\r\n"
                        )
                    } else if a.status == 200 {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: {tag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                            a.body.len(),
                            a.body
                        )
                    } else {
                        format!(
                            "HTTP/1.1 {} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            a.status
                        )
                    };
                    drop(a);
                    let _ = conn.write_all(response.as_bytes());
                }
            })
        };
        FeedServer {
            addr: rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            answer,
            not_modified,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(&self, status: u16, body: impl Into<String>) {
        *self.answer.lock().unwrap() = Answer {
            status,
            body: body.into(),
        };
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn feed(bed: &Testbed) -> Value {
    let v: Value = serde_json::from_str(&cli_ok(bed, &["feeds", "--json"])).unwrap();
    v["feeds"][0].clone()
}

fn explain(bed: &Testbed, ip: &str) -> Value {
    serde_json::from_str(&cli_ok(bed, &["status", ip, "--json"])).unwrap()
}

/// Waits until the feed's status satisfies `f`, up to 20 s.
fn until(bed: &Testbed, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let v = feed(bed);
        if f(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "not within 20 s: {what}: {v}"
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn feeds_apply_with_hygiene_hold_suspicious_updates_and_survive_a_dead_source() {
    let bed = testbed("e");
    let dir = tempfile::tempdir().unwrap();
    let server = FeedServer::start(&bed);
    server.serve(
        200,
        "# a test feed\n198.51.100.7\n203.0.113.0/24\n0.0.0.0/1\n127.0.0.1\nnot-an-address\n",
    );
    let config = format!(
        r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
[[feed]]
name = "test"
url = "http://{}/feed.netset"
refresh = "1s"
"#,
        server.addr
    );
    let daemon = Daemon::start(&bed, dir.path(), &config);

    // Applied, minus the rejected line, the too broad entry and the protected address
    // (the testbed's addresses are documentation ranges: bogons are a T0 test's).
    let f = until(&bed, "the first fetch applied", |f| f["entries"] == 2);
    assert_eq!(f["rejected_lines"], 1, "{f}");
    assert_eq!(f["dropped"]["too_broad"], 1, "{f}");
    assert_eq!(f["dropped"]["protected"], 1, "{f}");
    assert!(f["held"].is_null(), "{f}");
    assert!(
        !ping(&bed, "198.51.100.7", "192.0.2.1"),
        "a feed entry passed"
    );
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "a feed network passed"
    );
    assert!(
        ping(&bed, "192.0.2.2", "192.0.2.1"),
        "an unlisted source was dropped"
    );
    let x = explain(&bed, "198.51.100.7");
    assert_eq!(
        (x["source"].as_str(), x["reason"].as_str()),
        (Some("feed"), Some("feed test")),
        "{x}"
    );
    // Conditional requests: the unchanged feed is answered 304.
    let t = Instant::now();
    while server.not_modified.load(Ordering::Relaxed) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no conditional request"
        );
        sleep(Duration::from_millis(100));
    }

    // The feed turns into 0.0.0.0/0: refused as too broad, so it would empty: held.
    let fetches = feed(&bed)["fetches"].as_u64().unwrap();
    server.serve(200, "0.0.0.0/0\n");
    let f = until(&bed, "the 0.0.0.0/0 update held", |f| !f["held"].is_null());
    assert_eq!(f["entries"], 2, "{f}");
    assert_eq!(f["dropped"]["too_broad"], 1, "{f}");
    assert!(f["fetches"].as_u64().unwrap() > fetches);
    assert!(
        !ping(&bed, "198.51.100.7", "192.0.2.1"),
        "the last good entries went"
    );

    // A 404: the last good entries stay, the error shows.
    server.serve(404, "");
    let f = until(&bed, "the 404 reported", |f| {
        f["last_error"].as_str().is_some_and(|e| e.contains("404"))
    });
    assert_eq!(f["entries"], 2, "{f}");
    assert!(!ping(&bed, "198.51.100.7", "192.0.2.1"));
    let m = cli_ok(&bed, &["feeds"]);
    assert!(m.contains("last error") && m.contains("404"), "{m}");

    // It empties: held until an operator accepts it; then its entries go.
    server.serve(200, "# nothing today\n");
    let f = until(&bed, "the empty update held", |f| {
        f["held"]["reason"].is_string() && f["last_error"].is_null()
    });
    assert_eq!(f["entries"], 2, "{f}");
    let out = cli(&bed, &["feed", "accept", "nosuch"]);
    assert!(!out.status.success());
    let out = cli_ok(&bed, &["feed", "accept", "test"]);
    assert!(out.contains("update applied, 0 entries"), "{out}");
    assert!(
        ping(&bed, "198.51.100.7", "192.0.2.1"),
        "an accepted removal still drops"
    );
    let out = cli(&bed, &["feed", "accept", "test"]);
    assert!(!out.status.success(), "accepting nothing held succeeded");

    // 200k lines: applied whole (the first load after empty), listed in the kernel.
    let mut big = String::with_capacity(4 << 20);
    for i in 0..200_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        big.push_str(&format!("100.{}.{b}.{c}\n", 64 + a));
    }
    big.push_str("198.51.100.7\n");
    let t = Instant::now();
    server.serve(200, big);
    until(&bed, "the 200k-line feed applied", |f| {
        f["entries"] == 200_001
    });
    eprintln!(
        "feed of 200k lines: fetched, parsed and applied in {:?}",
        t.elapsed()
    );
    assert!(!ping(&bed, "198.51.100.7", "192.0.2.1"));
    assert_eq!(explain(&bed, "100.66.13.64")["verdict"], "drop");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");

    // A restart with the source down: the last good copy is in force from the start.
    server.serve(404, "");
    let daemon = Daemon::spawn(&bed, dir.path(), &dir.path().join("ipguard.toml"));
    assert!(
        !ping(&bed, "198.51.100.7", "192.0.2.1"),
        "the last good copy was not used"
    );
    let f = until(&bed, "the failed fetch after the restart", |f| {
        f["failures"].as_u64() > Some(0)
    });
    assert_eq!(f["entries"], 200_001, "{f}");
    let metrics = ipguard_tests::daemon::http_get(&bed, "/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l == "ipguard_feed_entries{feed=\"test\"} 200001"),
        "{metrics}"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
