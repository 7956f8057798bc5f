//! Benchmarks of the policy and control plane (`cargo xtask bench` sections 3 and 4, and
//! the scale figures of the policy engine): reaction time on the veth testbed, start-up
//! and API load of many prefixes, expiry of many entries, the daemon's cost with many
//! tracked sources, and the engine's tick cost and memory with many offenders.
//! Traffic only between the namespaces the bench creates; every loop is bounded.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard::{
    config::{Escalation, ReportRule},
    model::{ListKind, Origin, Ts},
    policy::engine::Engine,
};

use crate::{
    daemon::{cli_ok, http_get, listener, pin_dir, testbed, Daemon},
    netns::{in_netns, Testbed},
};

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    pub case: String,
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub note: String,
}

pub fn fig(
    case: impl Into<String>,
    metric: &'static str,
    value: f64,
    unit: &'static str,
    note: impl Into<String>,
) -> Figure {
    Figure {
        case: case.into(),
        metric,
        value,
        unit,
        note: note.into(),
    }
}

/// The `q`-quantile (0..=1) of `v` (nearest rank).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Resident set size and CPU seconds (user + system) of a process.
pub fn proc_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (rss_kib * 1024, (ticks(11) + ticks(12)) as f64 / hz)
}

const REACTION_CONFIG: &str = r#"
[lists]
whitelist = ["127.0.0.0/8", "::1"]
[[rate_limit]]
kind = "syn"
count = 20
window = "1s"
[escalation]
graylist_duration = "1h"
"#;

/// Sources each flood just over a 20 SYN/1 s rule; the daemon logs, per ban, the time from
/// the kernel timestamp of the packet that signalled the violation to the ban being
/// written into the trie (the next packet is dropped by XDP).
pub fn reaction(quick: bool) -> Vec<Figure> {
    let sources: u8 = if quick { 20 } else { 60 };
    let bed = testbed("R");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..sources {
        bed.addr(
            &bed.cli.clone(),
            &bed.cli_if.clone(),
            &format!("192.0.2.{}/32", 100 + i),
        );
    }
    let dst = listener(&bed, "192.0.2.1:0");
    let daemon = Daemon::start(&bed, dir.path(), REACTION_CONFIG);
    for i in 0..sources {
        let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + i));
        // 30 SYNs at once from one source: non-blocking connects, closed right after.
        in_netns(&bed.cli, move || {
            let socks: Vec<socket2::Socket> = (0..30)
                .filter_map(|_| {
                    let s =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .ok()?;
                    s.set_nonblocking(true).ok()?;
                    s.bind(&SocketAddr::new(src, 0).into()).ok()?;
                    let _ = s.connect(&dst.into());
                    Some(s)
                })
                .collect();
            sleep(Duration::from_millis(20));
            drop(socks);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ms: Vec<f64>;
    loop {
        ms = daemon
            .log()
            .lines()
            .filter(|l| l.contains("rate violation"))
            .filter_map(|l| {
                l.split("reaction_ms=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        if ms.len() >= usize::from(sources) || Instant::now() > deadline {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let banned = ms.len();
    let (status, _) = daemon.terminate();
    assert!(status.success());
    let note = format!("{banned} of {sources} sources banned; rule 20 syn/1s; 30 SYNs each");
    vec![
        fig(
            "veth, 1 rule",
            "reaction p50",
            quantile(&mut ms, 0.5),
            "ms",
            note.clone(),
        ),
        fig(
            "veth, 1 rule",
            "reaction p99",
            quantile(&mut ms, 0.99),
            "ms",
            note.clone(),
        ),
        fig(
            "veth, 1 rule",
            "reaction max",
            quantile(&mut ms, 1.0),
            "ms",
            note,
        ),
    ]
}

/// Random prefixes with a realistic spread of lengths, distinct, in network form.
pub fn random_prefixes(n: usize, v6: bool, seed: u64) -> Vec<String> {
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64*: enough randomness for addresses, no dependency.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = next();
        let net = if v6 {
            let len = match r % 10 {
                0..=5 => 128,
                6..=8 => 64,
                _ => 48,
            };
            let a = Ipv6Addr::from(
                (u128::from(next()) << 64 | u128::from(next())) | (0x2001_0db8u128 << 96),
            );
            ipnet::IpNet::new(IpAddr::V6(a), len).unwrap().trunc()
        } else {
            let len = match r % 20 {
                0..=11 => 32,
                12..=16 => 24,
                _ => 16 + (r >> 8) as u8 % 8,
            };
            // Avoid loopback and the testbed's own ranges.
            let mut a = (next() >> 32) as u32;
            if a >> 24 == 127 || a >> 24 == 192 || a >> 24 == 0 {
                a ^= 0x4000_0000;
            }
            ipnet::IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len)
                .unwrap()
                .trunc()
        };
        if seen.insert(net) {
            out.push(net.to_string());
        }
    }
    out
}

/// Start-up with many prefixes in the config: from process start to "ipguard is filtering".
pub fn startup(quick: bool) -> Vec<Figure> {
    let n = if quick { 10_000 } else { 1_000_000 };
    let bed = testbed("S");
    let v4 = random_prefixes(n, false, 1);
    let v6 = random_prefixes(n, true, 2);
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    let maps = format!(
        "[maps]\nlpm_v4_capacity = {}\nlpm_v6_capacity = {}\n",
        n + 1024,
        n + 1024
    );
    let inline = format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [\n{},\n{}\n]\n{maps}",
        list(&v4),
        list(&v6),
    );
    // The same prefixes in list files, one per line.
    let feeds = tempfile::tempdir().unwrap();
    let (f4, f6) = (feeds.path().join("v4.txt"), feeds.path().join("v6.txt"));
    std::fs::write(&f4, v4.join("\n")).unwrap();
    std::fs::write(&f6, v6.join("\n")).unwrap();
    let files = format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist_files = [{:?}, {:?}]\n{maps}",
        f4.display().to_string(),
        f6.display().to_string(),
    );
    let mut out = Vec::new();
    for (case, config) in [("in the config", &inline), ("in list files", &files)] {
        let (secs, rss, note) = startup_runs(&bed, config, if quick { 1 } else { 3 });
        out.push(fig(
            format!("{n} v4 + {n} v6 prefixes {case}"),
            "start-up to filtering",
            secs,
            "s",
            format!("parse, compile, write the tables, attach; {note}"),
        ));
        out.push(fig(
            format!("{n} v4 + {n} v6 prefixes {case}"),
            "daemon RSS",
            rss as f64 / 1048576.0,
            "MiB",
            "",
        ));
    }
    out
}

/// Starts the daemon `runs` times on `config`: the median time to "ipguard is filtering"
/// (one start-up is a few seconds of a shared machine's time), the largest RSS, and a note.
fn startup_runs(bed: &Testbed, config: &str, runs: usize) -> (f64, u64, String) {
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        // The kernel frees a stopped daemon's maps (millions of elements) in the background:
        // give it the time, or the next start-up shares the two CPUs with that work.
        sleep(Duration::from_secs(3));
        let state = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let daemon = Daemon::start(bed, state.path(), config);
        daemon
            .wait_log(&["ipguard is filtering"], Duration::from_secs(300))
            .expect("the daemon did not come up");
        times.push(t.elapsed().as_secs_f64());
        rss = rss.max(proc_usage(daemon.pid()).0);
        let (status, _) = daemon.terminate();
        assert!(status.success());
    }
    let all = times
        .iter()
        .map(|t| format!("{t:.2}"))
        .collect::<Vec<_>>()
        .join("/");
    times.sort_by(f64::total_cmp);
    let note = format!("median of {runs} (runs {all} s)");
    (times[times.len() / 2], rss, note)
}

/// Entries/s through `POST /v1/lists/blacklist` in batches of 10k, then the time to expire
/// them all once due.
pub fn api_load_and_expiry(quick: bool) -> Vec<Figure> {
    let total = if quick { 20_000 } else { 200_000 };
    let batch = 10_000;
    let bed = testbed("A");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        dir.path(),
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\n[api]\nmax_body_bytes = 67108864\n",
    );
    let nets = random_prefixes(total, false, 3);
    let mut spent = Duration::ZERO;
    // Long enough for every batch to be in before the first is due.
    let expire_in = if quick { 5u64 } else { 20 };
    let mut added_at = Instant::now();
    for chunk in nets.chunks(batch) {
        let entries: Vec<String> = chunk
            .iter()
            .map(|n| format!("{{\"net\":\"{n}\",\"duration\":\"{expire_in}s\"}}"))
            .collect();
        let body = format!("{{\"entries\":[{}]}}", entries.join(","));
        let t = Instant::now();
        let (code, resp) = http_post(&bed, "/v1/lists/graylist", &body);
        spent += t.elapsed();
        assert_eq!(code, 200, "{resp}");
        added_at = Instant::now();
    }
    let rate = total as f64 / spent.as_secs_f64();
    // Expiry: all entries are due `expire_in` s after their batch; wait for the last one.
    let due = added_at + Duration::from_secs(expire_in);
    let deadline = due + Duration::from_secs(60);
    while Instant::now() < due {
        sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    loop {
        let (_, body) = http_get(&bed, "/v1/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["entries"]["graylist"].as_u64() == Some(0) || Instant::now() > deadline {
            if Instant::now() > deadline {
                eprintln!("expiry did not finish: {body}");
            }
            break;
        }
        sleep(Duration::from_millis(20));
    }
    let expiry = t.elapsed().as_secs_f64();
    let (status, _) = daemon.terminate();
    assert!(status.success());
    vec![
        fig(
            format!("{total} v4 entries, batches of {batch}"),
            "API insert rate",
            rate,
            "entries/s",
            "POST /v1/lists/graylist, with journal fsync",
        ),
        fig(
            format!("{total} entries due within one batch"),
            "expiry: last entry gone after its due time",
            expiry,
            "s",
            "the earliest batches were due up to the insert time earlier",
        ),
    ]
}

/// Peak resident set size (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The largest batch the API takes (`api::MAX_ENTRIES`), posted while a reader polls
/// `/healthz`: how long the batch takes, how long the reader waits at worst, and the
/// daemon's memory per million entries it holds (resident growth after the batches) and
/// at the peak of one batch.
pub fn big_batches(quick: bool) -> Vec<Figure> {
    let batch = ipguard::api::MAX_ENTRIES;
    let batches = if quick { 2 } else { 10 };
    let bed = testbed("G");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        dir.path(),
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\n[api]\nmax_body_bytes = 67108864\n\
         [maps]\nlpm_v4_capacity = 4194304\n",
    );
    let nets = random_prefixes(batch * batches, false, 11);
    let pid = daemon.pid();
    let (rss0, _) = proc_usage(pid);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut took = Vec::new();
    let mut peak = 0u64;
    let worst = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut worst = Duration::ZERO;
            // Bounded: at most 10 minutes of polling.
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                let t = Instant::now();
                let _ = http_get(&bed, "/healthz");
                worst = worst.max(t.elapsed());
                sleep(Duration::from_millis(10));
            }
            worst
        });
        for chunk in nets.chunks(batch) {
            let entries: Vec<String> = chunk
                .iter()
                .map(|n| format!("{{\"net\":\"{n}\",\"duration\":\"1d\"}}"))
                .collect();
            let body = format!("{{\"entries\":[{}]}}", entries.join(","));
            let t = Instant::now();
            let (code, resp) = http_post(&bed, "/v1/lists/blacklist", &body);
            took.push(t.elapsed().as_secs_f64());
            if code != 200 {
                // The reader stops first, so the scope can end.
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("{code}: {}", &resp[..resp.len().min(300)]);
            }
            peak = peak.max(peak_rss(pid));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap_or_default()
    });
    let (rss1, _) = proc_usage(pid);
    let held = (batch * batches) as f64;
    let (status, _) = daemon.terminate();
    assert!(status.success());
    let mib = |b: f64| b / (1024.0 * 1024.0);
    vec![
        fig(
            format!("{batches} batches of {batch} v4 entries"),
            "one batch (median)",
            quantile(&mut took, 0.5),
            "s",
            "POST /v1/lists/blacklist, the largest batch the API takes",
        ),
        fig(
            format!("{batches} batches of {batch} v4 entries"),
            "/healthz: longest wait during the batches",
            worst.as_secs_f64() * 1000.0,
            "ms",
            "polled every 10 ms",
        ),
        fig(
            format!("{batches} batches of {batch} v4 entries"),
            "daemon memory per million entries held",
            mib(rss1.saturating_sub(rss0) as f64) * 1e6 / held,
            "MiB",
            "resident growth after the batches, divided by the entries held",
        ),
        fig(
            format!("{batches} batches of {batch} v4 entries"),
            "daemon peak resident memory",
            mib(peak as f64),
            "MiB",
            format!("VmHWM; {:.0} MiB before the first batch", mib(rss0 as f64)),
        ),
    ]
}

/// HTTP POST of a JSON body to the daemon's API in the server namespace.
pub fn http_post(bed: &Testbed, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = in_netns(&bed.srv, move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9180").expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The daemon with its source map full: N sources written into the pinned map, then its
/// CPU use over an idle period and its RSS. The daemon never scans that map: its periodic
/// work is expiries and retention that are due, and drop records for banned hosts.
pub fn tracked_sources(quick: bool) -> Vec<Figure> {
    use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
    use ipguard_common::{SourceCounters, SourceKey};
    let n: u32 = if quick { 100_000 } else { 1_000_000 };
    let bed = testbed("T");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\n[maps]\nsources_capacity = {n}\n[[rate_limit]]\nkind = \"syn\"\ncount = 20\nwindow = \"1s\"\n[log]\npath = \"{}\"\n",
        dir.path().join("decisions.log").display()
    );
    let daemon = Daemon::start(&bed, dir.path(), &config);
    let map =
        MapData::from_pin(format!("{}/IPG_SOURCES", pin_dir(&bed))).expect("the pinned source map");
    let mut sources: PerCpuHashMap<_, SourceKey, SourceCounters> =
        PerCpuHashMap::try_from(Map::from_map_data(map).unwrap()).unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    for i in 0..n {
        let key = SourceKey::v4(Ipv4Addr::from(0x0a00_0000 + i).octets());
        let v = SourceCounters {
            packets: 1,
            bytes: 64,
            ..Default::default()
        };
        sources
            .insert(key, PerCpuValues::try_from(vec![v; cpus]).unwrap(), 0)
            .unwrap();
    }
    let (_, cpu0) = proc_usage(daemon.pid());
    let idle = Duration::from_secs(if quick { 3 } else { 10 });
    sleep(idle);
    let (rss, cpu1) = proc_usage(daemon.pid());
    // A status query on the full map, for the cost of an operator's look.
    let t = Instant::now();
    let (code, _) = http_get(&bed, "/v1/status");
    let status_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(code, 200);
    let _ = cli_ok(&bed, &["status"]);
    let (status, _) = daemon.terminate();
    assert!(status.success());
    let case = format!("{n} sources in the kernel map");
    vec![
        fig(
            case.clone(),
            "daemon CPU while idle",
            (cpu1 - cpu0) * 1e3 / idle.as_secs_f64(),
            "ms/s",
            "clock-tick resolution (10 ms)",
        ),
        fig(
            case.clone(),
            "daemon RSS",
            rss as f64 / 1048576.0,
            "MiB",
            "",
        ),
        fig(case, "GET /v1/status", status_ms, "ms", ""),
    ]
}

/// The policy engine with many offenders: memory and the cost of its periodic tick.
pub fn engine_scale(quick: bool) -> Vec<Figure> {
    let n: u32 = if quick { 100_000 } else { 1_000_000 };
    let (rss0, _) = proc_usage(std::process::id());
    let esc = Escalation {
        state_retention: Duration::from_secs(3600),
        ..Escalation::default()
    };
    let mut e = Engine::new(
        esc,
        Some(ReportRule {
            count: 1_000,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(60),
        }),
    );
    e.set_journaling(false);
    let t0 = Ts(1_700_000_000_000);
    for i in 0..n {
        // One report each: an offender with history, spread over 10 minutes.
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        e.report(
            ip,
            "bench".into(),
            None,
            t0.plus(Duration::from_millis(u64::from(i) * 600_000 / u64::from(n))),
        );
    }
    // 10% of them banned for 60 s, expiring during the simulated minute measured below.
    for i in (0..n).step_by(10) {
        let net = ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
        e.add(
            ListKind::Graylist,
            net,
            Some(Duration::from_secs(60)),
            "bench".into(),
            Origin::RateLimit,
            t0.plus(Duration::from_secs(600)),
        );
    }
    let (rss1, _) = proc_usage(std::process::id());
    // One simulated minute, ticking every second as the daemon would at most.
    let start = t0.plus(Duration::from_secs(601));
    let t = Instant::now();
    let mut unbanned = 0;
    for s in 0..60 {
        unbanned += e.tick(start.plus(Duration::from_secs(s)), |_| None).len();
    }
    let per_tick = t.elapsed().as_secs_f64() * 1e3 / 60.0;
    // Retention running out for all of them at once: ticks forget a bounded number each.
    let t = Instant::now();
    let mut ticks = 0u32;
    let mut longest = Duration::ZERO;
    while e.tracked() > 0 && ticks < 10_000 {
        let one = Instant::now();
        e.tick(t0.plus(Duration::from_secs(600 + 3600 + 60)), |_| None);
        longest = longest.max(one.elapsed());
        ticks += 1;
    }
    let forget = t.elapsed().as_secs_f64() * 1e3;
    let case = format!("{n} offenders, {} bans", n / 10);
    vec![
        fig(
            case.clone(),
            "engine memory",
            (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
            "MiB",
            format!("{} tracked", n),
        ),
        fig(
            case.clone(),
            "tick cost (1 s steps, bans expiring)",
            per_tick,
            "ms/s",
            format!("{unbanned} unbanned in 60 simulated s"),
        ),
        fig(
            case.clone(),
            "forgetting all at retention",
            forget,
            "ms",
            format!("{ticks} ticks, {} left", e.tracked()),
        ),
        fig(
            case,
            "longest single tick while forgetting",
            longest.as_secs_f64() * 1e3,
            "ms",
            "bounded per tick",
        ),
    ]
}

/// `[geo]` with a country of many prefixes (a database made with mmdb-writer): the time
/// to open the database and compile the country's prefixes, and the daemon's start-up to
/// filtering with it, against the same prefixes given in a list file (the baseline: what
/// geo costs beyond loading its prefixes).
pub fn geo(quick: bool) -> Vec<Figure> {
    use std::collections::BTreeSet;
    let n = if quick { 20_000 } else { 100_000 };
    let dir = tempfile::tempdir().unwrap();
    let db_path = crate::pytools::make_mmdb(
        dir.path(),
        "large.mmdb",
        &["large", "--prefixes", &n.to_string(), "--country", "XL"],
    );
    let codes: BTreeSet<String> = ["XL".to_owned()].into();
    let mut compile = Vec::new();
    let mut nets = Vec::new();
    for _ in 0..if quick { 3 } else { 5 } {
        let t = Instant::now();
        let db = ipguard::geo::GeoDb::open(&db_path).expect("open the test database");
        nets = db.country_networks(&codes).expect("compile").networks;
        compile.push(t.elapsed().as_secs_f64());
    }
    compile.sort_by(f64::total_cmp);
    let list = dir.path().join("xl.txt");
    std::fs::write(
        &list,
        nets.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let maps = format!(
        "[maps]\nlpm_v4_capacity = {0}\nlpm_v6_capacity = {0}\n",
        nets.len() + 1024
    );
    let with_geo = format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\n{maps}[geo]\ndatabase = {:?}\nblock_countries = [\"XL\"]\n",
        db_path.display().to_string()
    );
    let with_file = format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist_files = [{:?}]\n{maps}",
        list.display().to_string()
    );
    let bed = testbed("G");
    let runs = if quick { 1 } else { 3 };
    let (geo_s, _, geo_note) = startup_runs(&bed, &with_geo, runs);
    let (file_s, _, file_note) = startup_runs(&bed, &with_file, runs);
    let case = format!("country of {} prefixes ({n} in the database)", nets.len());
    vec![
        fig(
            case.clone(),
            "open + compile",
            compile[compile.len() / 2],
            "s",
            format!("GeoDb::open + country_networks, median of {}", compile.len()),
        ),
        fig(
            case.clone(),
            "start-up to filtering, [geo]",
            geo_s,
            "s",
            geo_note,
        ),
        fig(
            case.clone(),
            "start-up to filtering, same prefixes in a list file",
            file_s,
            "s",
            file_note,
        ),
        fig(
            case,
            "geo start-up / list-file start-up",
            geo_s / file_s,
            "x",
            "the same prefixes either way: the ratio is what opening and compiling the database adds",
        ),
    ]
}
