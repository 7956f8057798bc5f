//! T0: the controller against the real table layout over in-memory maps (with the
//! kernel's capacities), time stepped by hand. What the XDP program would answer is read
//! with its own lookup ([`MemoryBackend::lookup`]).

use std::time::Duration;

use ipguard_common::{LIST_BLACKLIST, LIST_GRAYLIST, LIST_NONE, LIST_WHITELIST};

use super::*;
use crate::testing::{ip, net, T0};
use crate::{
    config::Config,
    dataplane::{MemoryBackend, MemoryStore},
    model::Origin,
    policy::engine::Outcome,
};

fn at(secs: u64) -> Now {
    Now {
        wall: T0.plus(Duration::from_secs(secs)),
        mono_ns: 1_000_000_000 + secs * 1_000_000_000,
    }
}

const CONFIG: &str = r#"
[lists]
whitelist = ["10.0.0.0/8"]
blacklist = ["203.0.113.0/24"]
[maps]
lpm_v4_capacity = 4
[report]
count = 2
window = "60s"
duration = "10m"
"#;

fn controller(text: &str) -> Controller<MemoryBackend> {
    let config = Config::parse(text, "test.toml").unwrap();
    let backend = MemoryBackend::new(MemoryStore::with_capacity(&config.maps));
    let (c, drift) = Controller::new(backend, &config, Placement::default(), at(0)).unwrap();
    // A fresh table: the sync wrote the config's lists, nothing had drifted away.
    assert_eq!(drift.removed, 0);
    c
}

/// The kernel's verdict for `ip` and the compiled policy agree with the tables.
fn code(c: &Controller<MemoryBackend>, addr: &str) -> u32 {
    assert_eq!(&c.backend().table.entries(), c.policy().compiled());
    c.backend().lookup(ip(addr))
}

fn hosts(entries: &[&str], ttl: Option<Duration>) -> Vec<(IpNet, Option<Duration>, String)> {
    entries
        .iter()
        .map(|n| (net(n), ttl, "test".to_owned()))
        .collect()
}

#[test]
fn start_writes_the_config_lists() {
    let c = controller(CONFIG);
    assert_eq!(code(&c, "203.0.113.9"), LIST_BLACKLIST);
    assert_eq!(code(&c, "10.1.2.3"), LIST_WHITELIST);
    assert_eq!(code(&c, "192.0.2.1"), LIST_NONE);
}

#[test]
fn add_remove_and_expire_reach_the_tables() {
    let mut c = controller(CONFIG);
    let (added, replaced) = c
        .add_entries(
            ListKind::Graylist,
            &hosts(&["192.0.2.1/32"], Some(Duration::from_secs(2))),
            Origin::Api,
            "api:test",
            false,
            at(0),
        )
        .unwrap();
    assert_eq!((added, replaced), (1, 0));
    assert_eq!(code(&c, "192.0.2.1"), LIST_GRAYLIST);
    assert_eq!(c.next_deadline(at(0)), Some(Duration::from_secs(2)));
    c.tick(at(1)).unwrap();
    assert_eq!(code(&c, "192.0.2.1"), LIST_GRAYLIST);
    c.tick(at(2)).unwrap();
    assert_eq!(code(&c, "192.0.2.1"), LIST_NONE);
    assert_eq!(c.next_deadline(at(2)), None);

    c.add_entries(
        ListKind::Blacklist,
        &hosts(&["192.0.2.5/32"], None),
        Origin::Api,
        "api:test",
        false,
        at(3),
    )
    .unwrap();
    assert_eq!(code(&c, "192.0.2.5"), LIST_BLACKLIST);
    let removed = c
        .remove_entry(
            ListKind::Blacklist,
            net("192.0.2.5/32"),
            "api:test",
            false,
            at(9),
        )
        .unwrap();
    assert_eq!(removed.map(|e| e.origin), Some(Origin::Api));
    assert_eq!(code(&c, "192.0.2.5"), LIST_NONE);
    assert!(c
        .remove_entry(
            ListKind::Blacklist,
            net("192.0.2.5/32"),
            "api:test",
            false,
            at(9)
        )
        .unwrap()
        .is_none());
}

#[test]
fn a_batch_the_tables_cannot_hold_is_refused_whole() {
    let mut c = controller(CONFIG);
    c.add_entries(
        ListKind::Blacklist,
        &hosts(&["192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32"], None),
        Origin::Api,
        "api:test",
        false,
        at(0),
    )
    .unwrap();
    let before = c.policy().compiled().clone();
    // lpm_v4_capacity = 4: three more host entries do not fit.
    let err = c
        .add_entries(
            ListKind::Blacklist,
            &hosts(
                &["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"],
                None,
            ),
            Origin::Api,
            "api:test",
            false,
            at(1),
        )
        .unwrap_err();
    assert!(
        matches!(err, ControllerError::Table(TableError::Full { .. })),
        "{err}"
    );
    // Nothing of the batch is listed, in the policy or in the tables.
    assert_eq!(c.policy().compiled(), &before);
    assert_eq!(c.policy().engine().count(ListKind::Blacklist), 4);
    for a in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(code(&c, a), LIST_NONE, "{a}");
    }
    assert_eq!(code(&c, "192.0.2.2"), LIST_BLACKLIST);
    // What fits still goes in.
    c.add_entries(
        ListKind::Blacklist,
        &hosts(&["198.51.100.1/32"], None),
        Origin::Api,
        "api:test",
        false,
        at(2),
    )
    .unwrap();
    assert_eq!(code(&c, "198.51.100.1"), LIST_BLACKLIST);
}

#[test]
fn reports_ban_and_a_ban_that_does_not_fit_is_not_kept() {
    let mut c = controller(CONFIG);
    let (o, x) = c
        .report(ip("192.0.2.9"), "login".into(), None, at(0))
        .unwrap();
    assert_eq!(o, Outcome::Recorded { reports: 1 });
    assert!(!x.drop);
    let (o, x) = c
        .report(ip("192.0.2.9"), "login".into(), None, at(1))
        .unwrap();
    assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
    assert!(x.drop);
    assert_eq!(code(&c, "192.0.2.9"), LIST_GRAYLIST);
    // Fill the host map (capacity 4, one used), then have another source banned.
    c.add_entries(
        ListKind::Blacklist,
        &hosts(
            &["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"],
            None,
        ),
        Origin::Api,
        "api:test",
        false,
        at(2),
    )
    .unwrap();
    c.report(ip("192.0.2.77"), "login".into(), None, at(3))
        .unwrap();
    let err = c
        .report(ip("192.0.2.77"), "login".into(), None, at(4))
        .unwrap_err();
    assert!(matches!(
        err,
        ControllerError::Table(TableError::Full { .. })
    ));
    // The engine holds no ban the kernel does not, and the report history is as before
    // the refused one: the next report after room is made bans.
    assert!(c.policy().engine().ban_of(ip("192.0.2.77")).is_none());
    assert_eq!(code(&c, "192.0.2.77"), LIST_NONE);
    c.remove_entry(
        ListKind::Blacklist,
        net("198.51.100.1/32"),
        "api:test",
        false,
        at(9),
    )
    .unwrap();
    let (o, _) = c
        .report(ip("192.0.2.77"), "login".into(), None, at(5))
        .unwrap();
    assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
    assert_eq!(code(&c, "192.0.2.77"), LIST_GRAYLIST);
}

#[test]
fn explain_names_the_deciding_entry() {
    let mut c = controller(CONFIG);
    c.add_entries(
        ListKind::Graylist,
        &hosts(&["192.0.2.0/24"], Some(Duration::from_secs(90))),
        Origin::Api,
        "api:test",
        false,
        at(0),
    )
    .unwrap();
    let x = c.explain(ip("192.0.2.7"), at(30)).unwrap();
    assert!(x.drop);
    assert_eq!(x.list, Some(ListKind::Graylist));
    assert_eq!(x.prefix, Some(net("192.0.2.0/24")));
    assert_eq!(x.decided_by, Some(view::DecidedBy::Entry(Origin::Api)));
    assert_eq!(x.expires, Some(T0.plus(Duration::from_secs(90))));
    assert_eq!(x.retry_after, Some(Duration::from_secs(60)));
    let x = c.explain(ip("10.9.9.9"), at(30)).unwrap();
    assert!(!x.drop);
    assert_eq!(x.decided_by, Some(view::DecidedBy::Entry(Origin::Config)));
}

#[test]
fn reload_applies_the_new_lists_and_names_what_needs_a_restart() {
    let mut c = controller(CONFIG);
    let old = Config::parse(CONFIG, "test.toml").unwrap();
    let text = CONFIG
        .replace("203.0.113.0/24", "198.51.100.0/24")
        .replace("lpm_v4_capacity = 4", "lpm_v4_capacity = 8");
    let new = Config::parse(&text, "test.toml").unwrap();
    let restart = c.reload(&new, &old, at(10)).unwrap();
    assert_eq!(restart, ["maps"]);
    assert_eq!(code(&c, "203.0.113.9"), LIST_NONE);
    assert_eq!(code(&c, "198.51.100.9"), LIST_BLACKLIST);
    assert_eq!(code(&c, "10.1.1.1"), LIST_WHITELIST);
}

/// The upgrade procedure sets `keep_attached` with a reload: it is read at the stop, so it
/// needs no restart, while the state and pin directories do.
#[test]
fn keep_attached_is_taken_by_a_reload() {
    let mut c = controller(CONFIG);
    let mut old = Config::parse(CONFIG, "test.toml").unwrap();
    let mut new = old.clone();
    new.state.keep_attached = true;
    assert!(c.reload(&new, &old, at(10)).unwrap().is_empty());
    old = new.clone();
    new.state.pin_dir = "/sys/fs/bpf/elsewhere".into();
    assert_eq!(c.reload(&new, &old, at(11)).unwrap(), ["state"]);
}

#[test]
fn status_counts_entries_and_uptime_from_the_clock_given() {
    let c = controller(CONFIG);
    let s = c.status(at(42)).unwrap();
    assert_eq!(s.entries, [1, 0, 1]);
    assert_eq!(s.uptime, Duration::from_secs(42));
    assert_eq!(s.v4_hosts.capacity, 4);
}

mod exact_limits {
    //! No source is banned at its limit, and every source one unit past it is, however its
    //! packets are spread over the CPUs and whenever the daemon reads the events. The
    //! kernel's per-CPU signalling is modelled as the XDP program does it (`step`, and a
    //! signal at `limit + 1` of one CPU's own count).

    use ipguard_common::{RateEvent, RuleWindow, SourceCounters, SourceKey};
    use proptest::prelude::*;

    use super::*;
    use crate::policy::window::{step, RECHECK_GRACE_NS};

    const W_NS: u64 = 1_000_000_000;

    fn config(limit: u32) -> String {
        format!(
            r#"
[[rate_limit]]
kind = "packets"
count = {limit}
window = "1s"
"#
        )
    }

    /// The kernel's `next_signal`.
    fn next_signal(count: u32, step: u32, limit: u32) -> u32 {
        let next = count.saturating_add(step);
        if count <= limit && next > limit + 1 {
            limit + 1
        } else {
            next
        }
    }

    /// Sends `total` units from one source, unit `i` on CPU `cpu_of[i] % cpus`, and lets the
    /// controller read the pending events after unit `i` when `read_after[i]`; then ticks
    /// once the window has closed. Returns whether the source was banned.
    fn run(limit: u32, cpus: usize, total: u32, cpu_of: &[usize], read_after: &[bool]) -> bool {
        let mut c = controller(&config(limit));
        let src = ip("198.51.100.7");
        let addr = SourceKey::from(src).addr;
        let step = step(limit, cpus as u32);
        let idx = 5u32; // the window [5 s, 6 s) of the kernel clock
        let t = u64::from(idx) * W_NS + 1000;
        let mut counts = vec![0u32; cpus];
        let mut next = vec![next_signal(0, step, limit); cpus];
        let mut pending = Vec::new();
        let mut now = at(0);
        now.mono_ns = t;
        for i in 0..total as usize {
            let cpu = cpu_of[i % cpu_of.len()] % cpus;
            counts[cpu] += 1;
            if counts[cpu] >= next[cpu] {
                next[cpu] = next_signal(counts[cpu], step, limit);
                pending.push(RateEvent {
                    addr,
                    rule: 0,
                    _pad: 0,
                    ktime_ns: t,
                    sent_ns: t,
                });
            }
            let per_cpu: Vec<SourceCounters> = counts
                .iter()
                .map(|&n| {
                    let mut sc = SourceCounters {
                        packets: u64::from(n),
                        ..Default::default()
                    };
                    sc.windows[0] = RuleWindow {
                        window_idx: if n > 0 { idx } else { 0 },
                        count: n,
                        prev: 0,
                        next_signal: 0,
                    };
                    sc
                })
                .collect();
            c.backend_mut().sources.insert(src, per_cpu);
            if read_after[i % read_after.len()] && !pending.is_empty() {
                c.on_events(&pending, now).unwrap();
                pending.clear();
            }
        }
        c.on_events(&pending, now).unwrap();
        // Nothing is due before the window has closed...
        let end = u64::from(idx + 1) * W_NS;
        if let Some(d) = c.next_deadline(now) {
            assert!(
                now.mono_ns + d.as_nanos() as u64 >= end,
                "a recheck due inside the window"
            );
        }
        // ...and everything after it.
        now.mono_ns = end + RECHECK_GRACE_NS;
        c.tick(now).unwrap();
        c.policy()
            .engine()
            .entry(ListKind::Graylist, net("198.51.100.7/32"))
            .is_some()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn at_the_limit_never_and_one_past_it_always(
            limit in 1u32..300,
            cpus in 1usize..5,
            cpu_of in proptest::collection::vec(0usize..8, 1..64),
            read_after in proptest::collection::vec(any::<bool>(), 1..64),
        ) {
            prop_assert!(!run(limit, cpus, limit, &cpu_of, &read_after), "banned at the limit");
            prop_assert!(run(limit, cpus, limit + 1, &cpu_of, &read_after), "not banned one past it");
        }
    }

    #[test]
    fn the_spread_that_the_signals_alone_miss_is_caught_by_the_recheck() {
        // limit 100 on 2 CPUs (step 12): 51 + 50 units, read after every signal. Each CPU's
        // last signal came at 48; the 101st unit signals nowhere.
        let cpu_of: Vec<usize> = (0..101).map(|i| i % 2).collect();
        assert!(run(100, 2, 101, &cpu_of, &[true]));
        assert!(!run(100, 2, 100, &cpu_of, &[true]));
    }
}

mod fleet {
    use super::*;
    use crate::{
        cluster::wire::{Decision, SharedOp},
        config::SharedOrigin,
    };

    fn member(apply: &str) -> Controller<MemoryBackend> {
        let text = format!(
            "{CONFIG}\n[protect]\nnetworks = [\"198.51.100.128/25\"]\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\nnode = \"b\"\n{apply}"
        );
        let mut c = controller(&text);
        let cluster = Config::parse(&text, "t.toml").unwrap().cluster.unwrap();
        c.join_fleet(&cluster);
        c
    }

    fn shared(n: &str, list: ListKind, until: Option<u64>, origin: SharedOrigin) -> Decision {
        Decision {
            net: net(n),
            list,
            until: until.map(|s| at(s).wall),
            origin,
            reason: "shared".into(),
            node: "a".into(),
            at: at(0).wall,
        }
    }

    #[test]
    fn decisions_of_the_fleet_apply_under_the_local_checks() {
        let mut c = member("");
        let ds = [
            shared(
                "198.51.100.7/32",
                ListKind::Blacklist,
                Some(60),
                SharedOrigin::Manual,
            ),
            // Protected, whitelisted, too broad: refused.
            shared(
                "198.51.100.200/32",
                ListKind::Blacklist,
                None,
                SharedOrigin::Policy,
            ),
            shared(
                "10.1.2.3/32",
                ListKind::Graylist,
                None,
                SharedOrigin::Manual,
            ),
            shared("0.0.0.0/0", ListKind::Blacklist, None, SharedOrigin::Manual),
            // Covers the whitelisted 10.0.0.0/8.
            shared("8.0.0.0/5", ListKind::Blacklist, None, SharedOrigin::Manual),
            // Already expired: skipped.
            shared(
                "198.51.100.9/32",
                ListKind::Blacklist,
                Some(0),
                SharedOrigin::Manual,
            ),
        ];
        assert_eq!(c.apply_shared(&ds, at(1)).unwrap(), 1);
        assert_eq!(code(&c, "198.51.100.7"), LIST_BLACKLIST);
        for addr in ["198.51.100.200", "10.1.2.3", "8.8.8.8", "198.51.100.9"] {
            assert_ne!(code(&c, addr), LIST_BLACKLIST, "{addr}");
        }
        let f = c.fleet().unwrap();
        assert_eq!(
            (f.counts.applied, f.counts.rejected, f.counts.skipped),
            (1, 4, 1)
        );
        let x = c.explain(ip("198.51.100.7"), at(2)).unwrap();
        assert_eq!(x.node.as_deref(), Some("a"));
        assert_eq!(x.decided_by, Some(view::DecidedBy::Entry(Origin::Cluster)));
        assert_eq!(x.expires, Some(at(60).wall));
        // Applied decisions are not sent back.
        assert!(c.take_outgoing().is_empty());
    }

    #[test]
    fn a_shared_ban_never_shortens_a_local_one() {
        let mut c = member("");
        c.add_entries(
            ListKind::Blacklist,
            &hosts(&["198.51.100.7/32"], Some(Duration::from_secs(600))),
            Origin::Api,
            "api:test",
            false,
            at(0),
        )
        .unwrap();
        let ours = c.take_outgoing();
        assert!(
            matches!(&ours[..], [SharedOp::Put(d)] if d.node == "b" && d.origin == SharedOrigin::Manual && d.until == Some(at(600).wall))
        );
        c.apply_shared(
            &[shared(
                "198.51.100.7/32",
                ListKind::Blacklist,
                Some(60),
                SharedOrigin::Manual,
            )],
            at(1),
        )
        .unwrap();
        let e = c
            .policy()
            .engine()
            .entry(ListKind::Blacklist, net("198.51.100.7/32"))
            .unwrap();
        assert_eq!((e.origin, e.until), (Origin::Api, Some(at(600).wall)));
        // A longer one replaces it.
        c.apply_shared(
            &[shared(
                "198.51.100.7/32",
                ListKind::Blacklist,
                None,
                SharedOrigin::Manual,
            )],
            at(2),
        )
        .unwrap();
        let e = c
            .policy()
            .engine()
            .entry(ListKind::Blacklist, net("198.51.100.7/32"))
            .unwrap();
        assert_eq!((e.origin, e.until), (Origin::Cluster, None));
    }

    #[test]
    fn only_the_origins_applied_apply_and_removals_follow() {
        let mut c = member("apply = [\"manual\"]\nshare = [\"policy\"]\n");
        let ds = [
            shared(
                "198.51.100.7/32",
                ListKind::Blacklist,
                None,
                SharedOrigin::Manual,
            ),
            shared(
                "198.51.100.8/32",
                ListKind::Blacklist,
                None,
                SharedOrigin::Report,
            ),
        ];
        assert_eq!(c.apply_shared(&ds, at(1)).unwrap(), 1);
        assert_eq!(code(&c, "198.51.100.8"), LIST_NONE);
        // This node shares policy bans only: an API ban stays local.
        c.add_entries(
            ListKind::Graylist,
            &hosts(&["198.51.100.9/32"], None),
            Origin::Api,
            "api:t",
            false,
            at(1),
        )
        .unwrap();
        assert!(c.take_outgoing().is_empty());
        // A removal by another node lifts a fleet decision, not a config entry.
        assert!(c
            .remove_shared(
                ListKind::Blacklist,
                net("198.51.100.7/32"),
                "a",
                at(2).wall,
                at(2)
            )
            .unwrap());
        assert_eq!(code(&c, "198.51.100.7"), LIST_NONE);
        assert!(!c
            .remove_shared(
                ListKind::Blacklist,
                net("203.0.113.0/24"),
                "a",
                at(2).wall,
                at(2)
            )
            .unwrap());
        assert_eq!(code(&c, "203.0.113.1"), LIST_BLACKLIST);
        assert!(
            c.take_outgoing().is_empty(),
            "a removal from the fleet is not sent back"
        );
    }

    #[test]
    fn a_resync_republishes_what_the_set_lost_and_drops_what_was_removed() {
        let mut c = member("");
        c.add_entries(
            ListKind::Blacklist,
            &hosts(&["198.51.100.7/32", "198.51.100.8/32"], None),
            Origin::Api,
            "api:t",
            false,
            at(0),
        )
        .unwrap();
        c.take_outgoing();
        c.apply_shared(
            &[shared(
                "198.51.100.20/32",
                ListKind::Blacklist,
                None,
                SharedOrigin::Manual,
            )],
            at(0),
        )
        .unwrap();
        // The set is empty (Redis restarted); .8 was removed by another node meanwhile.
        let removed = [((ListKind::Blacklist, net("198.51.100.8/32")), at(5).wall)]
            .into_iter()
            .collect();
        let again = c.resync_shared(&[], &removed, at(6)).unwrap();
        let mut nets: Vec<String> = again
            .iter()
            .map(|d| format!("{} {}", d.net, d.node))
            .collect();
        nets.sort();
        assert_eq!(nets, ["198.51.100.20/32 a", "198.51.100.7/32 b"]);
        assert_eq!(code(&c, "198.51.100.8"), LIST_NONE);
        assert_eq!(code(&c, "198.51.100.7"), LIST_BLACKLIST);
    }
}

mod fleet_policy {
    use super::*;
    use crate::{cluster::wire::Decision, config::SharedOrigin};

    #[test]
    fn strikes_of_bans_made_elsewhere_escalate_here_and_reports_count_fleet_wide() {
        let text =
            format!("{CONFIG}\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\nnode = \"b\"\n");
        let mut c = controller(&text);
        assert_eq!(c.fleet_report_window(), None, "not in a fleet yet");
        c.join_fleet(&Config::parse(&text, "t.toml").unwrap().cluster.unwrap());
        assert_eq!(c.fleet_report_window(), Some(Duration::from_secs(60)));
        let d = Decision {
            net: net("198.51.100.7/32"),
            list: ListKind::Graylist,
            until: Some(at(600).wall),
            origin: SharedOrigin::Policy,
            reason: "rate".into(),
            node: "a".into(),
            at: at(1).wall,
        };
        assert_eq!(
            c.policy().engine().strikes(ip("198.51.100.7"), at(2).wall),
            0
        );
        c.apply_shared(&[d], at(2)).unwrap();
        assert_eq!(
            c.policy().engine().strikes(ip("198.51.100.7"), at(2).wall),
            1
        );
        // One report here, but the fleet has counted 2 within the window: the count (2) is
        // reached, and the ban is shared.
        c.take_outgoing();
        let (o, _) = c
            .report(ip("192.0.2.9"), "login".into(), Some(2), at(3))
            .unwrap();
        assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
        assert!(
            matches!(&c.take_outgoing()[..], [crate::cluster::wire::SharedOp::Put(d)] if d.origin == SharedOrigin::Report)
        );
    }
}

mod promotion {
    use super::*;
    use crate::{
        cluster::wire::SharedOp,
        config::{LogConfig, SharedOrigin},
        decision_log::DecisionLog,
    };

    /// Reports ban at once; 3 report bans of one /24 within 10 minutes promote it.
    const PROMOTING: &str = r#"
[escalation]
promote_v4_after = 3
[report]
count = 1
window = "60s"
duration = "10m"
[cluster]
redis = "redis://127.0.0.1:6379/0"
node = "b"
"#;

    #[test]
    fn a_promotion_by_count_reaches_the_tables_the_log_the_metrics_and_the_fleet() {
        let mut c = controller(PROMOTING);
        let cluster = Config::parse(PROMOTING, "t.toml").unwrap().cluster.unwrap();
        c.join_fleet(&cluster);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        c.set_log(
            DecisionLog::open(&LogConfig {
                path: Some(path.clone()),
                ..LogConfig::default()
            })
            .unwrap(),
        );
        for (i, who) in ["198.51.100.1", "198.51.100.2"].into_iter().enumerate() {
            c.report(ip(who), "login".into(), None, at(i as u64))
                .unwrap();
            assert_eq!(code(&c, who), LIST_GRAYLIST);
        }
        c.take_outgoing();
        let (o, x) = c
            .report(ip("198.51.100.3"), "login".into(), None, at(5))
            .unwrap();
        assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
        assert_eq!(x.prefix, Some(net("198.51.100.0/24")));
        // The kernel holds the prefix and none of the hosts.
        let held = c.backend().table.entries();
        assert!(held.contains_key(&net("198.51.100.0/24")));
        assert!(!held.keys().any(|n| n.prefix_len() == 32));
        assert_eq!(c.backend().table.usage().v4, 0);
        // A never-seen source of the prefix: dropped, the promotion explained.
        assert_eq!(code(&c, "198.51.100.200"), LIST_GRAYLIST);
        let x = c.explain(ip("198.51.100.200"), at(6)).unwrap();
        assert!(x.drop);
        assert_eq!(x.prefix, Some(net("198.51.100.0/24")));
        assert_eq!(
            x.reason.as_deref(),
            Some("promoted: 3 sources of 198.51.100.0/24 banned within 10m")
        );
        assert_eq!(x.decided_by, Some(view::DecidedBy::Entry(Origin::Report)));
        // Counted by why.
        let counted = c
            .telemetry()
            .promotions
            .get_or_create(&telemetry::PromotionLabels {
                why: "count".into(),
            })
            .get();
        assert_eq!(counted, 1);
        // The fleet gets the prefix; the released hosts expire there on their own (a node
        // that refuses the prefix keeps them).
        let out = c.take_outgoing();
        assert!(
            matches!(&out[..], [SharedOp::Put(d)] if d.net == net("198.51.100.0/24") && d.origin == SharedOrigin::Report),
            "{out:?}"
        );
        // The decision log: the prefix listed, the hosts unlisted as promoted, the record.
        let log = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let promoted: Vec<_> = lines.iter().filter(|l| l["event"] == "promoted").collect();
        assert_eq!(promoted.len(), 1, "{log}");
        assert_eq!(promoted[0]["net"], "198.51.100.0/24");
        assert_eq!(promoted[0]["why"], "count");
        assert_eq!(promoted[0]["sources"], 3);
        assert_eq!(promoted[0]["released"], 2);
        let released = lines
            .iter()
            .filter(|l| l["event"] == "unlisted" && l["why"] == "promoted")
            .count();
        assert_eq!(released, 2, "{log}");
        // The third source's ban went straight into the prefix: never listed on its own.
        assert!(!log.contains("198.51.100.3/32"), "{log}");
    }
}
