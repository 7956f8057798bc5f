//! The bench's "cluster" section: a fleet of daemons and one Redis on this machine (see
//! [`crate::fleet`]). Propagation of single bans from one node to another, a large batch
//! reaching every node, a new node's resync of a large shared set, and the cost of
//! following the change stream while nothing happens.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::{
    daemon::{http_get, testbed, Daemon},
    fleet::{Hub, Redis, HUB_ADDR, REDIS_PORT},
    netns::Testbed,
    policy_bench::{fig, http_post, peak_rss, proc_usage, quantile, random_prefixes, Figure},
};

fn config(redis: &str, node: &str) -> String {
    format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\n[api]\nmax_body_bytes = 67108864\n\
         [maps]\nlpm_v4_capacity = 4194304\n[cluster]\nredis = \"{redis}\"\nnode = \"{node}\"\nprefix = \"bench\"\n"
    )
}

/// `n` random IPv4 prefixes clear of the nodes' own addresses (testbed, hub, loopback),
/// which every node refuses to ban.
fn prefixes(n: usize, seed: u64) -> Vec<String> {
    let own: [ipnet::IpNet; 3] = [
        "127.0.0.0/8".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
        "198.18.0.0/15".parse().unwrap(),
    ];
    random_prefixes(n + n / 10 + 100, false, seed)
        .into_iter()
        .filter(|p| {
            let net: ipnet::IpNet = p.parse().unwrap();
            !own.iter().any(|o| o.contains(&net) || net.contains(o))
        })
        .take(n)
        .collect()
}

fn cluster_view(bed: &Testbed) -> serde_json::Value {
    serde_json::from_str(&http_get(bed, "/v1/cluster").1).unwrap_or_default()
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return Some(t.elapsed());
        }
        sleep(Duration::from_millis(2));
    }
    None
}

/// Writes `n` decisions of node `seed` straight into Redis (as a node would), through
/// `redis-cli --pipe`.
fn preload(hub: &Hub, n: usize) {
    let until = (std::time::SystemTime::now() + Duration::from_secs(86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &hub.ns.name, "redis-cli", "-h", HUB_ADDR])
        .args(["-p", &REDIS_PORT.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli (cargo xtask setup installs it)");
    let mut input = std::io::BufWriter::new(child.stdin.take().unwrap());
    let resp = |args: &[&str]| {
        let mut s = format!("*{}\r\n", args.len());
        for a in args {
            s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s
    };
    for (i, net) in prefixes(n, 23).iter().enumerate() {
        let key = format!("blacklist {net}");
        // Half of them bans the seed's policy made (a fleet under attack): those carry
        // strikes, which the resync counts too.
        let origin = if i % 2 == 0 { "policy" } else { "manual" };
        let d = format!(
            r#"{{"net":"{net}","list":"blacklist","until":{until},"origin":"{origin}","reason":"preloaded {i}","node":"seed","at":1}}"#
        );
        input
            .write_all(resp(&["HSET", "bench:decisions", &key, &d]).as_bytes())
            .unwrap();
        input
            .write_all(resp(&["ZADD", "bench:expiry", &until.to_string(), &key]).as_bytes())
            .unwrap();
    }
    drop(input);
    let _ = child.wait();
}

/// See the module doc.
pub fn cluster(quick: bool) -> Vec<Figure> {
    let singles = if quick { 50 } else { 1000 };
    let batch = if quick { 10_000 } else { 100_000 };
    let resync_set = if quick { 100_000 } else { 1_000_000 };
    let beds = [testbed("Ka"), testbed("Kb"), testbed("Kc")];
    let mut hub = Hub::new("K");
    for bed in &beds {
        hub.attach(bed);
    }
    let redis = Redis::start(&hub);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize| {
        let d = Daemon::start(
            &beds[i],
            dirs[i].path(),
            &config(&redis.url(), ["a", "b", "c"][i]),
        );
        assert!(
            d.wait_log(
                &["following the fleet's decisions"],
                Duration::from_secs(120)
            )
            .is_some(),
            "{}",
            d.log()
        );
        d
    };
    let (a, b) = (start(0), start(1));
    let mut out = Vec::new();

    // Idle: the cost of following the stream with nothing to apply.
    let (_, cpu0) = proc_usage(b.pid());
    sleep(Duration::from_secs(if quick { 2 } else { 10 }));
    let (rss, cpu1) = proc_usage(b.pid());
    let idle = if quick { 2.0 } else { 10.0 };
    out.push(fig(
        "idle node",
        "CPU while following",
        (cpu1 - cpu0) / idle * 1000.0,
        "ms/s",
        format!(
            "10 ms tick resolution; RSS {:.0} MiB",
            rss as f64 / 1048576.0
        ),
    ));

    // Single bans, one at a time: from the POST on A to the drop verdict on B.
    let mut lat = Vec::new();
    for net in prefixes(singles, 29) {
        let ip = net.split('/').next().unwrap().to_owned();
        let t = Instant::now();
        let (code, body) = http_post(
            &beds[0],
            "/v1/lists/blacklist",
            &format!(r#"{{"entries":[{{"net":"{net}","duration":"1h"}}]}}"#),
        );
        assert_eq!(code, 200, "{body}");
        let path = format!("/v1/ips/{ip}");
        let seen = wait_for(Duration::from_secs(5), || {
            http_get(&beds[1], &path).1.contains("\"verdict\":\"drop\"")
        });
        lat.push(seen.map_or(f64::NAN, |_| t.elapsed().as_secs_f64() * 1000.0));
    }
    let lost = lat.iter().filter(|l| l.is_nan()).count();
    lat.retain(|l| !l.is_nan());
    let note = format!("{singles} single bans, POST on A to the drop verdict on B (API polled every ~2 ms); {lost} not seen within 5 s");
    out.push(fig(
        "single bans A -> B",
        "propagation p50",
        quantile(&mut lat.clone(), 0.5),
        "ms",
        note.clone(),
    ));
    out.push(fig(
        "single bans A -> B",
        "propagation p99",
        quantile(&mut lat, 0.99),
        "ms",
        note,
    ));

    // One large batch on A, until B holds all of it.
    let before = cluster_view(&beds[1])["applied"].as_u64().unwrap_or(0);
    let nets = prefixes(batch, 31);
    let entries: Vec<String> = nets
        .iter()
        .map(|n| format!(r#"{{"net":"{n}","duration":"1d"}}"#))
        .collect();
    let t = Instant::now();
    let (code, body) = http_post(
        &beds[0],
        "/v1/lists/blacklist",
        &format!(r#"{{"entries":[{}]}}"#, entries.join(",")),
    );
    assert_eq!(code, 200, "{}", &body[..body.len().min(300)]);
    let acked = t.elapsed();
    let all = wait_for(Duration::from_secs(120), || {
        cluster_view(&beds[1])["applied"].as_u64().unwrap_or(0) >= before + batch as u64
    });
    out.push(fig(
        format!("batch of {batch} on A"),
        "until every entry is applied on B",
        all.map_or(f64::NAN, |d| (d + acked).as_secs_f64()),
        "s",
        format!(
            "from the POST; A acknowledged after {:.2} s",
            acked.as_secs_f64()
        ),
    ));
    drop(a);
    drop(b);

    // A new node resyncs a large set.
    redis.cli(&[
        "DEL",
        "bench:decisions",
        "bench:expiry",
        "bench:changes",
        "bench:removed",
    ]);
    preload(&hub, resync_set);
    let c = start(2);
    let view = cluster_view(&beds[2]);
    let (rss, _) = proc_usage(c.pid());
    let peak = peak_rss(c.pid());
    out.push(fig(
        format!("new node, {resync_set} shared decisions"),
        "resync (read, check, apply)",
        view["last_resync_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        "s",
        format!(
            "{} decisions read; RSS after {:.0} MiB, peak {:.0} MiB",
            view["last_resync_decisions"],
            rss as f64 / 1048576.0,
            peak as f64 / 1048576.0
        ),
    ));
    if let Some(line) = c.wait_log(&["resynced with the fleet"], Duration::from_secs(1)) {
        eprintln!("  {line}");
    }
    drop(c);
    out
}
