//! T2: a fleet of three daemons sharing decisions through a real Redis (`[cluster]`).
//! Each daemon filters its own veth pair in namespaces of its own; the Redis server runs
//! in a hub namespace joined to theirs by a bridge. Needs root, IPGUARD_BIN and
//! redis-server (installed by `cargo xtask setup`).

use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{http, http_get, ping, testbed, Daemon},
    fleet::{Hub, Redis},
    netns::Testbed,
};
use serde_json::Value;

fn config(redis: &str, node: &str, whitelist: &str) -> String {
    format!(
        r#"
[lists]
whitelist = [{whitelist}]
[report]
count = 3
window = "60s"
duration = "10m"
[cluster]
redis = "{redis}"
node = "{node}"
prefix = "fleettest"
"#
    )
}

fn get(bed: &Testbed, path: &str) -> Value {
    let (code, body) = http_get(bed, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn verdict(bed: &Testbed, ip: &str) -> Value {
    get(bed, &format!("/v1/ips/{ip}"))
}

/// Waits until `f` holds, for at most `timeout`; returns how long it took.
fn within(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        sleep(Duration::from_millis(10));
    }
}

fn add(bed: &Testbed, list: &str, entries: &str) {
    let (code, body) = http(
        bed,
        "POST",
        &format!("/v1/lists/{list}"),
        Some(&format!(r#"{{"entries":[{entries}]}}"#)),
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_fleet_shares_bans_expiries_and_removals_and_survives_redis_restarts() {
    let beds = [testbed("fa"), testbed("fb"), testbed("fc")];
    let mut hub = Hub::new("f");
    for bed in &beds {
        hub.attach(bed);
    }
    let mut redis = Redis::start(&hub);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // C whitelists 203.0.113.5: a fleet ban of it must not apply there. C speaks TLS to
    // Redis (rediss://, the test CA in ca_file).
    let whitelists = ["", "", "\"203.0.113.5\""];
    let urls = [redis.url(), redis.url(), redis.tls_url()];
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| {
            let mut text = config(&urls[i], ["a", "b", "c"][i], whitelists[i]);
            if i == 2 {
                text.push_str(&format!("ca_file = \"{}\"\n", redis.ca_file().display()));
            }
            Daemon::start(&beds[i], dirs[i].path(), &text)
        })
        .collect();
    for d in &daemons {
        assert!(
            d.wait_log(
                &["following the fleet's decisions"],
                Duration::from_secs(10)
            )
            .is_some(),
            "{}",
            d.log()
        );
    }
    let [a, b, c] = &beds;
    for bed in &beds {
        assert!(ping(bed, "198.51.100.7", "192.0.2.1"), "testbed broken");
    }

    // A ban through A's API drops on B and C; C's whitelist wins there.
    add(
        a,
        "blacklist",
        r#"{"net":"198.51.100.7","duration":"4s","reason":"scanner"},{"net":"203.0.113.5","reason":"brute force"}"#,
    );
    let took = within(Duration::from_secs(2), "ban on B and C", || {
        verdict(b, "198.51.100.7")["verdict"] == "drop"
            && verdict(c, "198.51.100.7")["verdict"] == "drop"
    });
    eprintln!("a ban made on A was in force on B and C after {took:?}");
    assert!(
        !ping(b, "198.51.100.7", "192.0.2.1"),
        "banned on A, still passes on B"
    );
    assert!(
        !ping(c, "198.51.100.7", "192.0.2.1"),
        "banned on A, still passes on C"
    );
    let on_b = verdict(b, "198.51.100.7");
    assert_eq!(on_b["source"], "cluster");
    assert_eq!(on_b["node"], "a");
    assert_eq!(on_b["reason"], "scanner");
    assert_eq!(verdict(a, "198.51.100.7")["node"], "a");
    // Same absolute expiry everywhere.
    let expires = verdict(a, "198.51.100.7")["expires"].clone();
    assert_eq!(on_b["expires"], expires);
    assert_eq!(verdict(c, "198.51.100.7")["expires"], expires);
    assert_eq!(verdict(b, "203.0.113.5")["verdict"], "drop");
    let on_c = verdict(c, "203.0.113.5");
    assert_eq!(on_c["verdict"], "pass", "whitelisted on C: {on_c}");
    assert_eq!(on_c["list"], "whitelist");
    assert!(
        ping(c, "203.0.113.5", "192.0.2.1"),
        "C's whitelist did not win"
    );
    let cluster_c = get(c, "/v1/cluster");
    assert!(cluster_c["rejected"].as_u64().unwrap() >= 1, "{cluster_c}");

    // The expiry lifts everywhere at the same time.
    let lifted = |bed: &Testbed| verdict(bed, "198.51.100.7")["verdict"] == "pass";
    within(Duration::from_secs(8), "expiry on every node", || {
        beds.iter().all(lifted)
    });
    assert!(
        ping(b, "198.51.100.7", "192.0.2.1"),
        "expired but still dropped on B"
    );

    // A removal on B lifts A's ban everywhere.
    add(
        a,
        "blacklist",
        r#"{"net":"198.51.100.70","reason":"to be removed"}"#,
    );
    within(Duration::from_secs(2), "second ban on C", || {
        verdict(c, "198.51.100.70")["verdict"] == "drop"
    });
    let (code, body) = http(b, "DELETE", "/v1/lists/blacklist/198.51.100.70%2F32", None);
    assert_eq!(code, 200, "{body}");
    within(Duration::from_secs(2), "removal on A and C", || {
        verdict(a, "198.51.100.70")["verdict"] == "pass"
            && verdict(c, "198.51.100.70")["verdict"] == "pass"
    });

    // A batch larger than one publish call and one inline apply: A sends it in several
    // script calls at once, B and C apply it off their runtime threads; all of it arrives.
    let applied_before = get(b, "/v1/cluster")["applied"].as_u64().unwrap();
    let batch: Vec<String> = (0..2500)
        .map(|i| {
            format!(
                r#"{{"net":"100.64.{}.{}","duration":"1h"}}"#,
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    add(a, "blacklist", &batch.join(","));
    within(Duration::from_secs(20), "the batch applied on B", || {
        get(b, "/v1/cluster")["applied"].as_u64().unwrap() >= applied_before + 2500
    });
    within(Duration::from_secs(20), "the batch on C", || {
        verdict(c, "100.64.0.1")["verdict"] == "drop"
            && verdict(c, "100.64.9.250")["verdict"] == "drop"
    });
    assert_eq!(verdict(b, "100.64.5.17")["verdict"], "drop");
    assert_eq!(
        redis
            .cli(&[
                "HEXISTS",
                "fleettest:decisions",
                "blacklist 100.64.9.250/32"
            ])
            .trim(),
        "1"
    );

    // Redis goes away: every node keeps enforcing, A keeps deciding and queues.
    redis.stop();
    within(Duration::from_secs(5), "A sees the link down", || {
        get(a, "/v1/cluster")["link"] == "down"
    });
    assert!(
        !ping(b, "203.0.113.5", "192.0.2.1"),
        "B stopped enforcing without Redis"
    );
    add(
        a,
        "graylist",
        r#"{"net":"198.51.100.8","reason":"while away"}"#,
    );
    add(
        a,
        "blacklist",
        r#"{"net":"2001:db8:bad::5","reason":"v6 while away"}"#,
    );
    let queued = get(a, "/v1/cluster");
    assert_eq!(queued["link"], "down");
    assert!(queued["queued"].as_u64().unwrap() >= 2, "{queued}");
    // A restart of A while Redis is away loses nothing it queued.
    daemons[0].signal(libc::SIGTERM);
    sleep(Duration::from_millis(1500));
    daemons[0] = Daemon::spawn(a, dirs[0].path(), &dirs[0].path().join("ipguard.toml"));
    assert_eq!(verdict(a, "198.51.100.8")["verdict"], "drop");

    // Redis is back, empty: the queue is published, every node republishes what it holds.
    redis.restart();
    within(
        Duration::from_secs(10),
        "decisions made while away reach B and C",
        || {
            verdict(b, "198.51.100.8")["verdict"] == "drop"
                && verdict(c, "2001:db8:bad::5")["verdict"] == "drop"
        },
    );
    assert!(!ping(b, "198.51.100.8", "192.0.2.1"));
    assert!(!ping(c, "2001:db8:bad::5", "2001:db8:1::1"));
    within(Duration::from_secs(10), "the set is whole again", || {
        let n: u64 = redis
            .cli(&["HLEN", "fleettest:decisions"])
            .trim()
            .parse()
            .unwrap_or(0);
        n >= 3
    });
    let set = redis.cli(&["HKEYS", "fleettest:decisions"]);
    assert!(set.contains("blacklist 203.0.113.5/32"), "{set}");
    for bed in &beds {
        let v = get(bed, "/v1/cluster");
        assert_eq!(v["link"], "up", "{v}");
        assert!(v["nodes"].as_array().unwrap().len() >= 3, "{v}");
    }

    // Reports split across the nodes count together: one on each bans on the third.
    for (i, bed) in beds.iter().enumerate() {
        let (code, body) = http(
            bed,
            "POST",
            "/v1/report",
            Some(r#"{"ip":"203.0.113.200","reason":"failed login"}"#),
        );
        assert_eq!(code, 200, "{body}");
        let outcome: Value = serde_json::from_str(&body).unwrap();
        if i < 2 {
            assert_eq!(outcome["outcome"], "recorded", "{outcome}");
            assert_eq!(outcome["reports"], i + 1, "the fleet's count: {outcome}");
        } else {
            assert_eq!(outcome["outcome"], "banned", "{outcome}");
        }
    }
    within(
        Duration::from_secs(2),
        "the report ban on every node",
        || {
            beds.iter()
                .all(|bed| verdict(bed, "203.0.113.200")["verdict"] == "drop")
        },
    );
    assert!(!ping(a, "203.0.113.200", "192.0.2.1"));
    assert_eq!(verdict(a, "203.0.113.200")["node"], "c");

    // A poisoned Redis cannot ban the world or open the whitelist.
    redis.cli(&[
        "XADD", "fleettest:changes", "*", "op", "put", "k", "blacklist 0.0.0.0/0", "d",
        r#"{"net":"0.0.0.0/0","list":"blacklist","until":null,"origin":"manual","reason":"x","node":"evil","at":1}"#,
    ]);
    redis.cli(&[
        "XADD", "fleettest:changes", "*", "op", "put", "k", "whitelist 203.0.113.0/24", "d",
        r#"{"net":"203.0.113.0/24","list":"whitelist","until":null,"origin":"manual","reason":"x","node":"evil","at":1}"#,
    ]);
    within(Duration::from_secs(3), "poisoned changes refused", || {
        get(b, "/v1/cluster")["rejected"].as_u64().unwrap() >= 2
    });
    assert!(
        ping(b, "192.0.2.2", "192.0.2.1"),
        "a poisoned Redis banned the world"
    );
    assert_eq!(
        verdict(b, "203.0.113.5")["verdict"],
        "drop",
        "a poisoned Redis opened the whitelist"
    );
    for d in daemons {
        let (status, log) = d.terminate();
        assert!(status.success(), "{log}");
    }
}
