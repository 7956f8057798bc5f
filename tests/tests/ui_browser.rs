//! T2: the status page (`GET /ui`) in a real headless browser. The daemon runs with a
//! token on the testbed while a thread sends traffic through the filter; Playwright drives
//! Debian's Chromium (tests/browser/ui_check.py) in the server namespace: token prompt, no
//! console errors under the page's strict CSP, a live chart, offenders, lists with paging
//! and search, hostile reasons shown as text, the explain box, and an address blacklisted
//! through the page, which this test then finds dropped in the kernel. Needs root,
//! IPGUARD_BIN, /usr/bin/chromium and the Python venv of `cargo xtask setup`
//! (target/pytools, with Playwright).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{http, listener, syn_flood_from, testbed, Daemon},
    netns::{in_netns, InNetns, Testbed},
};
use serde_json::{json, Value};

const TOKEN: &str = "ui-browser-test-token-0123456789";
/// A blacklisted host whose reason is an XSS attempt.
const XSS_IP: &str = "203.0.113.66";
const XSS_REASON: &str =
    r#"<img src=x onerror="document.title='pwned'"><script>window.__xss=1</script>"#;
/// A host reported until banned, with another attempt as the reason: the offenders table.
const OFFENDER_IP: &str = "198.51.100.99";
const OFFENDER_REASON: &str = r#"<b>bold</b><svg onload="window.__xss=2">"#;
/// Blacklisted through the page's form; one of the client's addresses.
const ADD_IP: &str = "198.51.100.8";
/// Entries put on the blacklist besides, so that it has more than one page.
const BULK: u8 = 30;
/// One of them, removed through the page.
const REMOVE_IP: &str = "100.64.0.30";
/// The whole browser run, Chromium included, is killed after this.
const BROWSER_LIMIT: Duration = Duration::from_secs(70);

fn config(dir: &Path) -> String {
    format!(
        r#"
xdp_mode = "auto"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
blacklist = ["203.0.113.5"]
[api]
token_file = "{}"
[[rate_limit]]
kind = "syn"
count = 20
window = "1s"
[escalation]
graylist_duration = "10m"
[report]
count = 3
window = "60s"
duration = "10m"
[[feed]]
name = "local"
path = "{}"
refresh = "1s"
"#,
        dir.join("token").display(),
        dir.join("feed.netset").display()
    )
}

/// A request to the API in the server namespace, with the token when `token`: the whole
/// response (head and body).
fn raw(bed: &Testbed, method: &str, path: &str, body: Option<&str>, token: bool) -> String {
    let auth = if token {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    let request = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n"),
    };
    in_netns(&bed.srv, move || {
        let mut s = TcpStream::connect("127.0.0.1:9180").expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// Status code, lower-cased head and body of a response.
fn split(response: &str) -> (u16, String, String) {
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// An authenticated call that must succeed: its JSON body.
fn api(bed: &Testbed, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (code, _, text) = split(&raw(bed, method, path, body.as_deref(), true));
    assert_eq!(code, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends `n` UDP datagrams from `src` (an address of the client namespace) to `dst`.
fn udp_from(bed: &Testbed, src: &str, dst: SocketAddr, n: usize) {
    let src: IpAddr = src.parse().unwrap();
    in_netns(&bed.cli, move || {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
        for _ in 0..n {
            s.send_to(b"ipguard ui test", dst).unwrap();
            sleep(Duration::from_millis(2));
        }
    });
}

/// The sources of the datagrams the sink receives within `wait`.
fn drain(sink: &UdpSocket, wait: Duration) -> Vec<IpAddr> {
    let until = Instant::now() + wait;
    let mut from = Vec::new();
    let mut buf = [0u8; 64];
    while Instant::now() < until {
        if let Ok((_, peer)) = sink.recv_from(&mut buf) {
            from.push(peer.ip());
        }
    }
    from
}

fn count(from: &[IpAddr], ip: &str) -> usize {
    let ip: IpAddr = ip.parse().unwrap();
    from.iter().filter(|&&a| a == ip).count()
}

/// Traffic for the page's chart until dropped (60 s at most): from an unlisted source
/// (pass), a blacklisted one (drop), and one that a SYN burst gets graylisted (an
/// offender with a strike, then graylist drops).
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(bed: &Testbed, dst_udp: SocketAddr, dst_tcp: SocketAddr) -> Traffic {
        let cli = bed.cli.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let _inside = InNetns::enter(&cli).unwrap_or_else(|e| panic!("{e:#}"));
            let socks: Vec<UdpSocket> = ["192.0.2.2", "203.0.113.5", "198.51.100.70"]
                .iter()
                .map(|a| UdpSocket::bind((a.parse::<IpAddr>().unwrap(), 0)).unwrap())
                .collect();
            let start = Instant::now();
            let mut last_burst: Option<Instant> = None;
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                if last_burst.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    syn_flood_from(&cli, &["198.51.100.70".parse().unwrap()], dst_tcp, 30);
                    last_burst = Some(Instant::now());
                }
                // 40, 20 and 10 datagrams per second.
                for (sock, n) in socks.iter().zip([4, 2, 1]) {
                    for _ in 0..n {
                        let _ = sock.send_to(b"ipguard ui traffic", dst_udp);
                    }
                }
                sleep(Duration::from_millis(100));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

/// Stopped when dropped, even when the test fails.
impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the Playwright driver in the server namespace; kills its whole process group
/// (Python, Playwright's driver, Chromium) after [`BROWSER_LIMIT`]. Its status and output.
fn run_browser(bed: &Testbed, dir: &Path, shots: &Path) -> (bool, String) {
    let python = ipguard_tests::pytools::venv_python();
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: `apt-get install chromium` (cargo xtask setup does)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/ui_check.py");
    let out_path = dir.join("browser.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", bed.srv))
        .arg(&python)
        .arg(&script)
        .args(["--url", "http://127.0.0.1:9180", "--token", TOKEN])
        .args(["--xss-ip", XSS_IP, "--xss-reason", XSS_REASON])
        .args([
            "--offender-ip",
            OFFENDER_IP,
            "--offender-reason",
            OFFENDER_REASON,
        ])
        .args(["--add-ip", ADD_IP, "--remove-net", REMOVE_IP])
        .args(["--feed-name", "local", "--feed-path"])
        .arg(dir.join("feed.netset"))
        .args(["--timeout", "60", "--screenshots"])
        .arg(shots)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("start the browser driver");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > BROWSER_LIMIT {
            break None;
        }
        sleep(Duration::from_millis(100));
    };
    // Whatever is left of the group (Chromium's helpers when the driver was killed).
    // SAFETY: signalling the process group this test created.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(s) => (s.success(), output),
        None => (false, format!("killed after {BROWSER_LIMIT:?}\n{output}")),
    }
}

#[test]
fn the_status_page_works_in_a_real_browser() {
    let t0 = Instant::now();
    let bed = testbed("u");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // A feed the page shows, and which the driver empties to accept the held update.
    std::fs::write(dir.path().join("feed.netset"), "198.18.7.1\n198.18.7.2\n").unwrap();
    let daemon = Daemon::start(&bed, dir.path(), &config(dir.path()));

    // The page itself needs no token, and is served with its strict headers.
    let (code, head, page) = split(&raw(&bed, "GET", "/ui", None, false));
    assert_eq!(code, 200, "{head}");
    assert!(
        head.contains(
            "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        ),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    assert!(
        page.contains("/ui/app.js") && !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    let (code, head, _) = split(&raw(&bed, "GET", "/ui/app.js", None, false));
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    let (code, head, _) = split(&raw(&bed, "GET", "/ui/app.css", None, false));
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
    let (code, head, _) = split(&raw(&bed, "GET", "/", None, false));
    assert!(
        (300..400).contains(&code) && head.contains("location: /ui"),
        "{head}"
    );
    // The data does need it.
    assert_eq!(http(&bed, "GET", "/v1/status", None).0, 401);

    // Hostile text where the page shows reasons; enough entries for two pages.
    let mut entries = vec![json!({"net": XSS_IP, "reason": XSS_REASON})];
    entries.extend(
        (1..=BULK).map(|i| json!({"net": format!("100.64.0.{i}"), "reason": format!("bulk {i}")})),
    );
    let added = api(
        &bed,
        "POST",
        "/v1/lists/blacklist",
        Some(json!({"entries": entries})),
    );
    assert_eq!(added["added"], u64::from(BULK) + 1, "{added}");
    // Reported until banned: the ban's reason ends with the reports' reason.
    for outcome in ["recorded", "recorded", "banned"] {
        let r = api(
            &bed,
            "POST",
            "/v1/report",
            Some(json!({"ip": OFFENDER_IP, "reason": OFFENDER_REASON})),
        );
        assert_eq!(r["outcome"], outcome, "{r}");
    }

    // Sinks on the server, so that the traffic meets a socket, not an ICMP error.
    let sink_bg: UdpSocket = in_netns(&bed.srv, || UdpSocket::bind("192.0.2.1:9").unwrap());
    let sink: UdpSocket = in_netns(&bed.srv, || UdpSocket::bind("192.0.2.1:9999").unwrap());
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let check_dst: SocketAddr = "192.0.2.1:9999".parse().unwrap();
    // Before the page blacklists it, ADD_IP gets through.
    udp_from(&bed, ADD_IP, check_dst, 5);
    assert_eq!(
        count(&drain(&sink, Duration::from_millis(500)), ADD_IP),
        5,
        "testbed broken"
    );

    let tcp = listener(&bed, "192.0.2.1:0");
    let traffic = Traffic::start(&bed, sink_bg.local_addr().unwrap(), tcp);
    let shots = std::env::var_os("IPGUARD_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("screenshots"));
    let browser_start = Instant::now();
    let (ok, output) = run_browser(&bed, dir.path(), &shots);
    let browser_secs = browser_start.elapsed().as_secs_f64();
    drop(traffic);
    drop(sink_bg);
    assert!(
        ok,
        "the browser run failed:\n{output}\n--- daemon log ---\n{}",
        daemon.log()
    );
    let report = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON result from the driver:\n{output}"));
    eprintln!("browser run ({browser_secs:.1} s): {report}");
    for scheme in ["light", "dark"] {
        let shot = shots.join(format!("ui-{scheme}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} missing or empty", shot.display());
    }

    // The feed update accepted on the page is in force: its entries are gone.
    let feeds = api(&bed, "GET", "/v1/feeds", None);
    assert_eq!(feeds["feeds"][0]["entries"], 0, "{feeds}");
    assert!(feeds["feeds"][0]["held"].is_null(), "{feeds}");
    let gone = api(&bed, "GET", "/v1/ips/198.18.7.1", None);
    assert_eq!(gone["verdict"], "pass", "{gone}");

    // The address the page blacklisted is dropped by the XDP program.
    let ip = api(&bed, "GET", &format!("/v1/ips/{ADD_IP}"), None);
    assert_eq!(ip["verdict"], "drop", "{ip}");
    assert_eq!(ip["list"], "blacklist", "{ip}");
    assert_eq!(ip["source"], "api", "{ip}");
    assert_eq!(ip["reason"], "added from the status page", "{ip}");
    let removed = api(&bed, "GET", &format!("/v1/ips/{REMOVE_IP}"), None);
    assert_eq!(
        removed["verdict"], "pass",
        "removed through the page: {removed}"
    );
    let blacklisted = |s: &Value| s["lists"]["blacklist"]["packets"].as_u64().unwrap();
    let before = blacklisted(&api(&bed, "GET", "/v1/status", None));
    udp_from(&bed, ADD_IP, check_dst, 20);
    udp_from(&bed, "192.0.2.2", check_dst, 20);
    let from = drain(&sink, Duration::from_millis(500));
    assert_eq!(
        count(&from, "192.0.2.2"),
        20,
        "the unlisted control source lost datagrams"
    );
    assert_eq!(
        count(&from, ADD_IP),
        0,
        "{ADD_IP} blacklisted through the page but still delivered"
    );
    let after = blacklisted(&api(&bed, "GET", "/v1/status", None));
    assert!(
        after >= before + 20,
        "the blacklist drop counter went from {before} to {after}, not up by 20"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    eprintln!("ui_browser: {:.1} s in all", t0.elapsed().as_secs_f64());
}
