use super::*;

use crate::testing::{escalation as esc, ip, net, H, S, T0};

fn no_drops(_: IpNet) -> Option<Ts> {
    None
}

/// Violation, then run time forward to the end of the resulting ban.
fn violate_and_serve(e: &mut Engine, who: IpAddr, now: Ts) -> (Outcome, Ts) {
    let (out, _) = e.violation(who, "test".into(), now);
    let end = match out {
        Outcome::Banned { until: Some(u), .. } => u,
        ref o => panic!("expected a timed ban, got {o:?}"),
    };
    let cmds = e.tick(end, no_drops);
    assert!(cmds.contains(&Command::Unblock {
        net: IpNet::from(who),
        list: match out {
            Outcome::Banned { list, .. } => list,
            _ => unreachable!(),
        }
    }));
    (out, end)
}

#[test]
fn first_violation_graylists_for_the_configured_duration() {
    let mut e = Engine::new(esc(), None);
    let (out, cmds) = e.violation(ip("192.0.2.1"), "25 syn in 1s > 20".into(), T0);
    assert_eq!(
        out,
        Outcome::Banned {
            list: ListKind::Graylist,
            until: Some(T0.plus(H)),
            strikes: 1
        }
    );
    assert_eq!(
        cmds,
        vec![Command::Block {
            net: net("192.0.2.1/32"),
            list: ListKind::Graylist,
            until: Some(T0.plus(H)),
            reason: "25 syn in 1s > 20".into(),
            origin: Origin::RateLimit,
        }]
    );
    assert_eq!(e.strikes(ip("192.0.2.1"), T0), 1);
}

#[test]
fn third_strike_within_the_window_blacklists_and_resets_strikes() {
    let mut e = Engine::new(esc(), None);
    let who = ip("2001:db8::7");
    let (o1, end1) = violate_and_serve(&mut e, who, T0);
    assert!(matches!(
        o1,
        Outcome::Banned {
            list: ListKind::Graylist,
            strikes: 1,
            ..
        }
    ));
    let (o2, end2) = violate_and_serve(&mut e, who, end1.plus(S));
    assert!(matches!(
        o2,
        Outcome::Banned {
            list: ListKind::Graylist,
            strikes: 2,
            ..
        }
    ));
    let (o3, _) = e.violation(who, "x".into(), end2.plus(S));
    assert_eq!(
        o3,
        Outcome::Banned {
            list: ListKind::Blacklist,
            until: Some(end2.plus(S).plus(48 * H)),
            strikes: 3
        }
    );
    assert_eq!(
        e.strikes(who, end2.plus(S)),
        0,
        "reset_strikes_after_blacklist"
    );
    // After the blacklist ends, the ladder starts again from a graylisting.
    let after = end2.plus(S).plus(48 * H);
    e.tick(after, no_drops);
    let (o4, _) = e.violation(who, "x".into(), after.plus(S));
    assert!(
        matches!(
            o4,
            Outcome::Banned {
                list: ListKind::Graylist,
                strikes: 1,
                ..
            }
        ),
        "{o4:?}"
    );
}

#[test]
fn without_reset_the_next_violation_after_a_blacklist_blacklists_again() {
    let mut e = Engine::new(
        Escalation {
            reset_strikes_after_blacklist: false,
            strikes_to_blacklist: 2,
            strike_window: 1000 * H,
            ..esc()
        },
        None,
    );
    let who = ip("192.0.2.2");
    let (_, end) = violate_and_serve(&mut e, who, T0);
    let (o2, end2) = violate_and_serve(&mut e, who, end.plus(S));
    assert!(matches!(
        o2,
        Outcome::Banned {
            list: ListKind::Blacklist,
            ..
        }
    ));
    let (o3, _) = e.violation(who, "x".into(), end2.plus(S));
    assert!(
        matches!(
            o3,
            Outcome::Banned {
                list: ListKind::Blacklist,
                strikes: 3,
                ..
            }
        ),
        "{o3:?}"
    );
}

#[test]
fn strikes_older_than_the_window_do_not_count() {
    let mut e = Engine::new(
        Escalation {
            strike_window: 2 * H,
            strikes_to_blacklist: 2,
            ..esc()
        },
        None,
    );
    let who = ip("192.0.2.3");
    let (_, end) = violate_and_serve(&mut e, who, T0);
    // The first strike (at T0) is exactly strike_window old: out of the window.
    let later = T0.plus(2 * H);
    assert!(later > end);
    let (o, _) = e.violation(who, "x".into(), later);
    assert!(
        matches!(
            o,
            Outcome::Banned {
                list: ListKind::Graylist,
                strikes: 1,
                ..
            }
        ),
        "{o:?}"
    );
    // One millisecond earlier it would have been the second strike.
    let mut e = Engine::new(
        Escalation {
            strike_window: 2 * H,
            strikes_to_blacklist: 2,
            ..esc()
        },
        None,
    );
    violate_and_serve(&mut e, who, T0);
    let (o, _) = e.violation(
        who,
        "x".into(),
        T0.plus(2 * H).minus(Duration::from_millis(1)),
    );
    assert!(
        matches!(
            o,
            Outcome::Banned {
                list: ListKind::Blacklist,
                strikes: 2,
                ..
            }
        ),
        "{o:?}"
    );
}

#[test]
fn bans_grow_by_the_factor_and_stop_at_the_cap() {
    let mut e = Engine::new(
        Escalation {
            ban_growth: 2.0,
            max_ban: Lifetime::For(3 * H),
            strikes_to_blacklist: 100,
            ..esc()
        },
        None,
    );
    let who = ip("192.0.2.4");
    let mut now = T0;
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let (out, end) = violate_and_serve(&mut e, who, now);
        let Outcome::Banned { until: Some(u), .. } = out else {
            unreachable!()
        };
        lengths.push(u.since(now));
        now = end.plus(S);
    }
    assert_eq!(lengths, vec![H, 2 * H, 3 * H, 3 * H]);
}

#[test]
fn blacklist_growth_and_forever() {
    let grown = grow(Lifetime::For(48 * H), 1.5, 2, Lifetime::For(365 * 24 * H));
    assert_eq!(
        grown,
        Lifetime::For(Duration::from_secs_f64(48.0 * 3600.0 * 2.25))
    );
    assert_eq!(
        grow(Lifetime::Forever, 2.0, 0, Lifetime::For(H)),
        Lifetime::Forever
    );
    assert_eq!(
        grow(Lifetime::For(H), 2.0, 5000, Lifetime::Forever),
        Lifetime::Forever
    );
    assert_eq!(
        grow(Lifetime::For(H), 2.0, 5000, Lifetime::For(2 * H)),
        Lifetime::For(2 * H)
    );

    let mut e = Engine::new(
        Escalation {
            strikes_to_blacklist: 1,
            blacklist_duration: Lifetime::Forever,
            ..esc()
        },
        None,
    );
    let who = ip("198.51.100.9");
    let (o, _) = e.violation(who, "x".into(), T0);
    assert_eq!(
        o,
        Outcome::Banned {
            list: ListKind::Blacklist,
            until: None,
            strikes: 1
        }
    );
    assert_eq!(
        e.next_deadline(),
        Some(T0.plus(240 * H)),
        "only retention is scheduled"
    );
    assert!(
        e.tick(T0.plus(1000 * H), no_drops).is_empty(),
        "forever never expires"
    );
    assert!(e.ban_of(who).is_some());
}

#[test]
fn grace_forgives_first_time_offenders_only() {
    let mut e = Engine::new(
        Escalation {
            grace_violations: 2,
            ..esc()
        },
        None,
    );
    let who = ip("192.0.2.5");
    assert_eq!(
        e.violation(who, "x".into(), T0).0,
        Outcome::Forgiven { violations: 1 }
    );
    assert_eq!(
        e.violation(who, "x".into(), T0.plus(S)).0,
        Outcome::Forgiven { violations: 2 }
    );
    let (o, end) = violate_and_serve(&mut e, who, T0.plus(2 * S));
    assert!(matches!(
        o,
        Outcome::Banned {
            list: ListKind::Graylist,
            ..
        }
    ));
    // Not a first-time offender any more: no grace.
    let (o, _) = e.violation(who, "x".into(), end.plus(S));
    assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
}

#[test]
fn quiet_sources_are_forgotten_after_retention() {
    let mut e = Engine::new(
        Escalation {
            ban_growth: 2.0,
            state_retention: 10 * H,
            ..esc()
        },
        None,
    );
    let who = ip("192.0.2.6");
    let (_, end) = violate_and_serve(&mut e, who, T0);
    assert_eq!(e.tracked(), 1);
    // Retention counts from the end of the ban.
    e.tick(end.plus(10 * H).minus(S), no_drops);
    assert_eq!(e.tracked(), 1);
    e.tick(end.plus(10 * H), no_drops);
    assert_eq!(e.tracked(), 0);
    // Forgotten: the next ban is a first graylisting of base length again.
    let now = end.plus(11 * H);
    let (o, _) = e.violation(who, "x".into(), now);
    assert_eq!(
        o,
        Outcome::Banned {
            list: ListKind::Graylist,
            until: Some(now.plus(H)),
            strikes: 1
        }
    );
}

#[test]
fn reports_ban_after_count_within_window_and_count_as_a_strike() {
    let rule = ReportRule {
        count: 3,
        window: 60 * S,
        duration: 600 * S,
    };
    let mut e = Engine::new(
        Escalation {
            strikes_to_blacklist: 2,
            ..esc()
        },
        Some(rule),
    );
    let who = ip("203.0.113.50");
    assert_eq!(
        e.report(who, "bad login".into(), None, T0).0,
        Outcome::Recorded { reports: 1 }
    );
    assert_eq!(
        e.report(who, "bad login".into(), None, T0.plus(20 * S)).0,
        Outcome::Recorded { reports: 2 }
    );
    // The first report is now 60 s old: out of the window.
    assert_eq!(
        e.report(who, "bad login".into(), None, T0.plus(60 * S)).0,
        Outcome::Recorded { reports: 2 }
    );
    let now = T0.plus(61 * S);
    let (o, cmds) = e.report(who, "bad login".into(), None, now);
    assert_eq!(
        o,
        Outcome::Banned {
            list: ListKind::Graylist,
            until: Some(now.plus(600 * S)),
            strikes: 1
        }
    );
    let Command::Block { origin, reason, .. } = &cmds[0] else {
        panic!()
    };
    assert_eq!(*origin, Origin::Report);
    assert!(
        reason.contains("3 reports within 1m") && reason.contains("bad login"),
        "{reason}"
    );
    // While banned, reports are recorded but do not ban again.
    assert!(matches!(
        e.report(who, "x".into(), None, now.plus(S)).0,
        Outcome::AlreadyBanned { .. }
    ));
    // The report ban was a strike: a rate violation after it blacklists.
    e.tick(now.plus(600 * S), no_drops);
    let (o, _) = e.violation(who, "x".into(), now.plus(601 * S));
    assert!(
        matches!(
            o,
            Outcome::Banned {
                list: ListKind::Blacklist,
                strikes: 2,
                ..
            }
        ),
        "{o:?}"
    );
}

#[test]
fn reports_without_a_rule_are_only_recorded() {
    let mut e = Engine::new(esc(), None);
    for i in 1..=10 {
        assert_eq!(
            e.report(ip("192.0.2.8"), "x".into(), None, T0.plus(i * S))
                .0,
            Outcome::Recorded { reports: i }
        );
    }
    assert!(e.ban_of(ip("192.0.2.8")).is_none());
}

#[test]
fn whitelisted_sources_are_never_banned() {
    let rule = ReportRule {
        count: 1,
        window: 60 * S,
        duration: 600 * S,
    };
    let mut e = Engine::new(esc(), Some(rule));
    e.add(
        ListKind::Whitelist,
        net("10.0.0.0/8"),
        None,
        "ops".into(),
        Origin::Config,
        T0,
    );
    assert_eq!(
        e.violation(ip("10.1.2.3"), "x".into(), T0),
        (Outcome::Whitelisted, vec![])
    );
    assert_eq!(
        e.report(ip("10.1.2.3"), "x".into(), None, T0),
        (Outcome::Whitelisted, vec![])
    );
    assert_eq!(e.tracked(), 0);
}

#[test]
fn a_banned_source_is_not_banned_twice() {
    let mut e = Engine::new(esc(), None);
    e.add(
        ListKind::Blacklist,
        net("203.0.113.0/24"),
        None,
        "known bad".into(),
        Origin::Config,
        T0,
    );
    let (o, cmds) = e.violation(ip("203.0.113.9"), "x".into(), T0);
    assert_eq!(
        o,
        Outcome::AlreadyBanned {
            list: ListKind::Blacklist,
            until: None
        }
    );
    assert!(cmds.is_empty());
}

#[test]
fn entries_expire_exactly_at_their_time() {
    let mut e = Engine::new(esc(), None);
    let n = net("198.51.100.0/24");
    let cmds = e.add(
        ListKind::Graylist,
        n,
        Some(90 * S),
        "manual".into(),
        Origin::Api,
        T0,
    );
    assert!(matches!(cmds[0], Command::Block { until: Some(u), .. } if u == T0.plus(90 * S)));
    assert_eq!(e.next_deadline(), Some(T0.plus(90 * S)));
    assert!(e
        .tick(T0.plus(90 * S).minus(Duration::from_millis(1)), no_drops)
        .is_empty());
    assert_eq!(
        e.tick(T0.plus(90 * S), no_drops),
        vec![Command::Unblock {
            net: n,
            list: ListKind::Graylist
        }]
    );
    assert_eq!(e.next_deadline(), None);
    assert!(e.entry(ListKind::Graylist, n).is_none());
}

#[test]
fn entries_without_duration_never_expire_and_can_be_removed() {
    let mut e = Engine::new(esc(), None);
    let n = net("2001:db8:bad::/48");
    e.add(
        ListKind::Blacklist,
        n,
        None,
        "manual".into(),
        Origin::Api,
        T0,
    );
    assert!(e.tick(Ts(u64::MAX), no_drops).is_empty());
    let (entry, cmds) = e.remove(ListKind::Blacklist, n).unwrap();
    assert_eq!(entry.reason, "manual");
    assert_eq!(
        cmds,
        vec![Command::Unblock {
            net: n,
            list: ListKind::Blacklist
        }]
    );
    assert!(e.remove(ListKind::Blacklist, n).is_none());
}

#[test]
fn replacing_an_entry_reschedules_its_expiry() {
    let mut e = Engine::new(esc(), None);
    let n = net("192.0.2.0/24");
    e.add(
        ListKind::Graylist,
        n,
        Some(10 * S),
        "a".into(),
        Origin::Api,
        T0,
    );
    e.add(
        ListKind::Graylist,
        n,
        Some(100 * S),
        "b".into(),
        Origin::Api,
        T0,
    );
    assert!(e.tick(T0.plus(50 * S), no_drops).is_empty());
    assert_eq!(e.tick(T0.plus(100 * S), no_drops).len(), 1);
}

#[test]
fn relative_block_moves_the_end_with_the_latest_attempt() {
    let mut e = Engine::new(
        Escalation {
            relative_block: true,
            graylist_duration: 10 * S,
            ..esc()
        },
        None,
    );
    let who = ip("192.0.2.9");
    e.violation(who, "x".into(), T0);
    let attempts = [T0.plus(8 * S)];
    let last = |_: IpNet| attempts.last().copied();
    // Due at T0+10 s, but the source tried again at T0+8 s: the ban runs to T0+18 s.
    assert!(e.tick(T0.plus(10 * S), last).is_empty());
    assert_eq!(e.next_deadline(), Some(T0.plus(18 * S)));
    assert!(e
        .tick(T0.plus(18 * S).minus(Duration::from_millis(1)), last)
        .is_empty());
    assert_eq!(e.tick(T0.plus(18 * S), last).len(), 1);

    // Without relative_block the ban ends at T0+10 s whatever the source did.
    let mut e = Engine::new(
        Escalation {
            relative_block: false,
            graylist_duration: 10 * S,
            ..esc()
        },
        None,
    );
    e.violation(who, "x".into(), T0);
    assert_eq!(e.tick(T0.plus(10 * S), last).len(), 1);
}

#[test]
fn relative_block_leaves_manual_entries_alone() {
    let mut e = Engine::new(
        Escalation {
            relative_block: true,
            ..esc()
        },
        None,
    );
    let n = net("192.0.2.0/24");
    e.add(
        ListKind::Graylist,
        n,
        Some(10 * S),
        "manual".into(),
        Origin::Api,
        T0,
    );
    assert_eq!(e.tick(T0.plus(10 * S), |_| Some(T0.plus(9 * S))).len(), 1);
}

/// A small deterministic generator (64-bit LCG) so the journal test needs no seed file.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Settings that make every journaled path happen within a few hundred steps: grace,
/// growth, blacklisting, report bans, relative blocks and a short retention.
fn busy_engine() -> Engine {
    Engine::new(
        Escalation {
            graylist_duration: 10 * S,
            strikes_to_blacklist: 3,
            strike_window: 100 * S,
            blacklist_duration: Lifetime::For(60 * S),
            ban_growth: 1.5,
            max_ban: Lifetime::For(300 * S),
            relative_block: true,
            reset_strikes_after_blacklist: true,
            state_retention: 200 * S,
            grace_violations: 1,
            promote_when_full: 4,
            // Promotions by count happen too, and their journal ops replay.
            promote_v4_after: 3,
            promote_v6_after: 0,
            promote_v4_prefix: 24,
            promote_v6_prefix: 64,
            promote_window: 600 * S,
        },
        Some(ReportRule {
            count: 2,
            window: 30 * S,
            duration: 20 * S,
        }),
    )
}

/// Runs `steps` pseudo-random operations; after each one the journal, replayed onto
/// the state so far, must equal the snapshot. Returns the kinds of op seen.
fn replay_run(seed: u64, steps: usize) -> [usize; 4] {
    let mut rng = Lcg(seed);
    let mut e = busy_engine();
    let mut state = EngineState::default();
    let mut now = T0;
    let mut seen = [0; 4];
    let hosts: Vec<IpAddr> = (1..=6)
        .map(|i| IpAddr::from([192, 0, 2, i]))
        .chain([ip("2001:db8::1")])
        .collect();
    let lists = [ListKind::Graylist, ListKind::Blacklist, ListKind::Whitelist];
    for step in 0..steps {
        let who = hosts[rng.next(hosts.len() as u64) as usize];
        let target = if rng.next(4) == 0 {
            net("192.0.2.0/24")
        } else {
            IpNet::from(who)
        };
        // The whitelist stays rare, or it would silence the policy.
        let choices = if rng.next(10) == 0 { 3 } else { 2 };
        let list = lists[rng.next(choices) as usize];
        match rng.next(10) {
            0..=2 => drop(e.violation(who, "rate".into(), now)),
            3 | 4 => drop(e.report(who, "login".into(), None, now)),
            5 => {
                let ttl = (rng.next(3) != 0).then(|| Duration::from_secs(rng.next(50)));
                e.add(list, target, ttl, "api".into(), Origin::Api, now);
            }
            6 => {
                // Config entries may replace persisted ones (and are replaced by them).
                e.add(list, target, None, "cfg".into(), Origin::Config, now);
            }
            7 => drop(e.remove(list, target)),
            _ => {
                now = now.plus(Duration::from_millis(rng.next(40_000)));
                let back = rng.next(3);
                e.tick(now, |_| {
                    (back != 0).then(|| now.minus(Duration::from_secs(back * 3)))
                });
            }
        }
        let ops = e.take_journal();
        for op in &ops {
            let kind = match op {
                JournalOp::Put(p) => {
                    assert_ne!(p.origin, Origin::Config, "config entry journaled");
                    0
                }
                JournalOp::Remove { .. } => 1,
                JournalOp::Offender(_) => 2,
                JournalOp::Forget { .. } => 3,
            };
            seen[kind] += 1;
        }
        state.replay(ops);
        assert_eq!(state, e.snapshot(), "seed {seed}, step {step}");
    }
    seen
}

#[test]
fn the_journal_replays_to_the_snapshot() {
    for seed in [1, 2, 3, 42, 0xdead_beef] {
        let seen = replay_run(seed, 2000);
        assert!(seen.iter().all(|n| *n > 0), "seed {seed}: {seen:?}");
    }
}

#[test]
fn relative_block_extensions_are_journaled_with_their_new_times() {
    let mut e = busy_engine();
    let who = ip("192.0.2.9");
    e.violation(who, "x".into(), T0); // forgiven (grace 1)
    e.violation(who, "x".into(), T0.plus(S)); // graylisted until T0+11 s
    e.take_journal();
    e.tick(T0.plus(11 * S), |_| Some(T0.plus(9 * S)));
    let ops = e.take_journal();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let JournalOp::Put(p) = &ops[0] else {
        panic!("{ops:?}")
    };
    assert_eq!((p.since, p.until), (T0.plus(9 * S), Some(T0.plus(19 * S))));
}

#[test]
fn config_entries_are_neither_journaled_nor_snapshotted() {
    let mut e = Engine::new(esc(), None);
    let n = net("192.0.2.0/24");
    e.add(
        ListKind::Blacklist,
        n,
        None,
        "cfg".into(),
        Origin::Config,
        T0,
    );
    e.add(
        ListKind::Whitelist,
        net("10.0.0.0/8"),
        Some(H),
        "cfg".into(),
        Origin::Config,
        T0,
    );
    e.tick(T0.plus(H), no_drops);
    e.remove(ListKind::Blacklist, n);
    assert_eq!(e.take_journal(), vec![]);
    assert_eq!(e.snapshot(), EngineState::default());

    // An API entry replaced by a config entry leaves the persisted state.
    e.add(ListKind::Blacklist, n, None, "api".into(), Origin::Api, T0);
    e.add(
        ListKind::Blacklist,
        n,
        None,
        "cfg".into(),
        Origin::Config,
        T0,
    );
    let mut state = EngineState::default();
    state.replay(e.take_journal());
    assert_eq!(state, EngineState::default());
    assert_eq!(e.snapshot(), state);
}

#[test]
fn bulk_config_entries_behave_like_added_ones() {
    let mut e = Engine::new(esc(), None);
    e.add(
        ListKind::Blacklist,
        net("192.0.2.0/24"),
        None,
        "api".into(),
        Origin::Api,
        T0,
    );
    e.take_journal();
    let nets = [
        net("198.51.100.0/24"),
        net("192.0.2.0/24"),
        net("2001:db8::/32"),
        net("198.51.100.0/24"),
    ];
    e.add_config(ListKind::Blacklist, &nets, "config", T0);
    // The API entry gave way to the config one, as `add` does.
    let mut state = EngineState::default();
    state.replay(e.take_journal());
    assert_eq!(state, EngineState::default());
    assert_eq!(e.count(ListKind::Blacklist), 3);
    let entry = e.entry(ListKind::Blacklist, net("192.0.2.0/24")).unwrap();
    assert_eq!(
        (entry.origin, entry.reason.as_str()),
        (Origin::Config, "config")
    );
    assert_eq!(
        e.ban_of(ip("2001:db8::1")).map(|(n, _)| n),
        Some(net("2001:db8::/32"))
    );
    // Pages merge both kinds in prefix order.
    e.add(
        ListKind::Blacklist,
        net("198.51.100.7/32"),
        Some(H),
        "api".into(),
        Origin::Api,
        T0,
    );
    let page: Vec<IpNet> = e
        .page(ListKind::Blacklist, Some(net("192.0.2.0/24")), 2)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(page, vec![net("198.51.100.0/24"), net("198.51.100.7/32")]);
    // An API entry replaces a config one and is persisted; removing it leaves neither.
    e.add(
        ListKind::Blacklist,
        net("2001:db8::/32"),
        None,
        "api".into(),
        Origin::Api,
        T0,
    );
    assert_eq!(e.count(ListKind::Blacklist), 4);
    assert_eq!(e.snapshot().entries.len(), 2);
    let (old, _) = e.remove(ListKind::Blacklist, net("2001:db8::/32")).unwrap();
    assert_eq!(old.origin, Origin::Api);
    assert!(e.ban_of(ip("2001:db8::1")).is_none());
    let (old, _) = e
        .remove(ListKind::Blacklist, net("198.51.100.0/24"))
        .unwrap();
    assert_eq!(old.origin, Origin::Config);
    assert_eq!(e.count(ListKind::Blacklist), 2);
    assert_eq!(e.entries().count(), 2);
}

#[test]
fn restore_rebuilds_queues_and_journals_nothing() {
    let rule = ReportRule {
        count: 2,
        window: 60 * S,
        duration: 600 * S,
    };
    let mut e = Engine::new(esc(), Some(rule));
    let who = ip("192.0.2.20");
    violate_and_serve(&mut e, who, T0);
    e.violation(who, "x".into(), T0.plus(2 * H)); // second strike, graylisted
    e.report(ip("192.0.2.21"), "login".into(), None, T0.plus(2 * H));
    e.add(
        ListKind::Blacklist,
        net("198.51.100.0/24"),
        None,
        "manual".into(),
        Origin::Api,
        T0,
    );
    let snap = e.snapshot();

    let mut r = Engine::new(esc(), Some(rule));
    r.add(
        ListKind::Whitelist,
        net("10.0.0.0/8"),
        None,
        "cfg".into(),
        Origin::Config,
        T0,
    );
    r.take_journal();
    let cmds = r.restore(snap.clone());
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(cmds.iter().all(|c| matches!(c, Command::Block { .. })));
    assert_eq!(r.take_journal(), vec![]);
    assert_eq!(r.snapshot(), snap);
    assert_eq!(r.next_deadline(), e.next_deadline());
    assert_eq!(r.strikes(who, T0.plus(2 * H)), 2);
    // The third strike blacklists, as it would have without the restart.
    let end = T0.plus(3 * H);
    r.tick(end, no_drops);
    let (o, _) = r.violation(who, "x".into(), end.plus(S));
    assert!(
        matches!(
            o,
            Outcome::Banned {
                list: ListKind::Blacklist,
                strikes: 3,
                ..
            }
        ),
        "{o:?}"
    );
    // Retention still forgets the quiet reporter.
    r.tick(T0.plus(2 * H).plus(240 * H), no_drops);
    assert!(r
        .snapshot()
        .offenders
        .iter()
        .all(|o| o.ip != ip("192.0.2.21")));
}

#[test]
fn past_entries_are_restored_and_expire_on_the_next_tick() {
    let mut e = Engine::new(esc(), None);
    let n = net("192.0.2.0/24");
    e.add(ListKind::Graylist, n, Some(H), "x".into(), Origin::Api, T0);
    let snap = e.snapshot();
    let mut r = Engine::new(esc(), None);
    assert_eq!(r.restore(snap).len(), 1);
    assert!(r.entry(ListKind::Graylist, n).is_some());
    assert_eq!(
        r.tick(T0.plus(2 * H), no_drops),
        vec![Command::Unblock {
            net: n,
            list: ListKind::Graylist
        }]
    );
    assert_eq!(
        r.take_journal(),
        vec![JournalOp::Remove {
            list: ListKind::Graylist,
            net: n
        }]
    );
}

#[test]
fn journaling_can_be_turned_off() {
    let mut e = Engine::new(esc(), None);
    e.set_journaling(false);
    e.violation(ip("192.0.2.1"), "x".into(), T0);
    e.tick(T0.plus(1000 * H), no_drops);
    assert_eq!(e.take_journal(), vec![]);
}

#[test]
fn persisted_types_use_operator_names() {
    let op = JournalOp::Put(PersistedEntry {
        list: ListKind::Graylist,
        net: net("192.0.2.0/24"),
        since: Ts(5),
        until: None,
        reason: "r".into(),
        origin: Origin::RateLimit,
    });
    let json = serde_json::to_string(&op).unwrap();
    assert_eq!(
        json,
        r#"{"put":{"list":"graylist","net":"192.0.2.0/24","since":5,"until":null,"reason":"r","origin":"rate_limit"}}"#
    );
    assert_eq!(serde_json::from_str::<JournalOp>(&json).unwrap(), op);
    let forget = JournalOp::Forget {
        ip: ip("2001:db8::1"),
    };
    let json = serde_json::to_string(&forget).unwrap();
    assert_eq!(json, r#"{"forget":{"ip":"2001:db8::1"}}"#);
    assert!(serde_json::from_str::<JournalOp>(
        r#"{"remove":{"list":"purple","net":"192.0.2.0/24"}}"#
    )
    .is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any run's journal, replayed onto the state it started from, gives the
        /// snapshot.
        #[test]
        fn any_journal_replays_to_the_snapshot(seed in any::<u64>()) {
            replay_run(seed, 300);
        }

        /// Whatever the order of additions, replacements, removals and ticks, no entry
        /// is unblocked before its time, and every due entry is unblocked by the tick
        /// that passes its time.
        #[test]
        fn expiry_never_unbans_early(
            ops in prop::collection::vec((0u8..4, 0u8..16, 1u64..5000, 0u64..3000), 1..60),
        ) {
            let mut e = Engine::new(esc(), None);
            let mut now = T0;
            let mut live: HashMap<IpNet, Option<Ts>> = HashMap::new();
            for (op, host, ttl_ms, step_ms) in ops {
                let n = IpNet::from(IpAddr::from([192, 0, 2, host]));
                match op {
                    0 | 1 => {
                        let ttl = (op == 0).then(|| Duration::from_millis(ttl_ms));
                        e.add(ListKind::Graylist, n, ttl, "p".into(), Origin::Api, now);
                        live.insert(n, ttl.map(|d| now.plus(d)));
                    }
                    2 => {
                        let removed = e.remove(ListKind::Graylist, n).is_some();
                        prop_assert_eq!(removed, live.remove(&n).is_some());
                    }
                    _ => {
                        now = now.plus(Duration::from_millis(step_ms));
                        for c in e.tick(now, |_| None) {
                            let Command::Unblock { net, .. } = c else { panic!("tick blocked") };
                            let until = live.remove(&net).expect("unblocked an absent entry");
                            prop_assert!(until.is_some_and(|u| u <= now), "early unban of {}", net);
                        }
                        for (n, until) in &live {
                            prop_assert!(until.is_none_or(|u| u > now), "{} overdue", n);
                        }
                    }
                }
            }
        }
    }
}

mod promotion {
    use super::*;
    use crate::config::ReportRule;

    const M: Duration = Duration::from_secs(60);

    /// Promotion of 4 sources of a /24 (or 3 of a /64) banned within 10 minutes.
    fn counting() -> Escalation {
        Escalation {
            promote_v4_after: 4,
            promote_v6_after: 3,
            promote_window: 10 * M,
            ..esc()
        }
    }

    fn src(i: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, i])
    }

    fn banned(e: &mut Engine, who: IpAddr, now: Ts) -> Vec<Command> {
        let (out, cmds) = e.violation(who, "rate".into(), now);
        assert!(matches!(out, Outcome::Banned { .. }), "{who}: {out:?}");
        cmds
    }

    fn hosts_listed(e: &Engine, list: ListKind, first: u8, last: u8) -> usize {
        (first..=last)
            .filter(|i| e.entry(list, IpNet::from(src(*i))).is_some())
            .count()
    }

    #[test]
    fn the_threshold_reached_within_the_window_bans_the_prefix_and_releases_the_hosts() {
        let mut e = Engine::new(counting(), None);
        let prefix = net("198.51.100.0/24");
        for i in 1..=3u8 {
            let cmds = banned(&mut e, src(i), T0.plus(u32::from(i) * M));
            assert_eq!(cmds.len(), 1, "no promotion before the threshold");
        }
        assert!(e.take_promotions().is_empty());
        let cmds = banned(&mut e, src(4), T0.plus(4 * M));
        // The prefix, then the three earlier hosts released; the 4th ban went straight
        // into the prefix.
        assert_eq!(cmds.len(), 4, "{cmds:#?}");
        assert_eq!(
            cmds[0],
            Command::Block {
                net: prefix,
                list: ListKind::Graylist,
                until: Some(T0.plus(4 * M).plus(H)),
                reason: "promoted: 4 sources of 198.51.100.0/24 banned within 10m".into(),
                origin: Origin::RateLimit,
            }
        );
        for c in &cmds[1..] {
            assert!(
                matches!(c, Command::Unblock { net, list: ListKind::Graylist } if prefix.contains(net) && *net != prefix),
                "{c:?}"
            );
        }
        assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 4), 0);
        assert_eq!(e.count(ListKind::Graylist), 1);
        let promoted = e.take_promotions();
        assert_eq!(
            promoted,
            vec![Promotion {
                prefix,
                list: ListKind::Graylist,
                until: Some(T0.plus(4 * M).plus(H)),
                sources: 4,
                released: 3,
                trigger: Trigger::Count,
                reason: "promoted: 4 sources of 198.51.100.0/24 banned within 10m".into(),
            }]
        );
        // A never-seen source of the prefix is banned by it; a later violation there adds
        // no host entry.
        assert_eq!(e.ban_of(src(200)).map(|(n, _)| n), Some(prefix));
        let (out, cmds) = e.violation(src(200), "rate".into(), T0.plus(5 * M));
        assert!(matches!(
            out,
            Outcome::AlreadyBanned {
                list: ListKind::Graylist,
                ..
            }
        ));
        assert!(cmds.is_empty());
        // The members keep their strikes: banned again after the prefix, they escalate.
        assert_eq!(e.strikes(src(1), T0.plus(5 * M)), 1);
        let end = T0.plus(4 * M).plus(H);
        let cmds = e.tick(end, no_drops);
        assert_eq!(
            cmds,
            vec![Command::Unblock {
                net: prefix,
                list: ListKind::Graylist
            }]
        );
        let (out, _) = e.violation(src(1), "rate".into(), end.plus(S));
        assert!(matches!(out, Outcome::Banned { strikes: 2, .. }), "{out:?}");
    }

    #[test]
    fn bans_outside_the_window_do_not_count_but_are_released_with_the_rest() {
        let mut e = Engine::new(counting(), None);
        for i in 1..=3u8 {
            banned(&mut e, src(i), T0);
        }
        // 11 minutes on: the three earlier bans (still in force) are outside the window.
        let cmds = banned(&mut e, src(4), T0.plus(11 * M));
        assert_eq!(cmds.len(), 1);
        assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 4), 4);
        banned(&mut e, src(5), T0.plus(12 * M));
        banned(&mut e, src(6), T0.plus(13 * M));
        assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 6), 6);
        let cmds = banned(&mut e, src(7), T0.plus(14 * M));
        assert!(cmds.contains(&Command::Block {
            net: net("198.51.100.0/24"),
            list: ListKind::Graylist,
            until: Some(T0.plus(14 * M).plus(H)),
            reason: "promoted: 4 sources of 198.51.100.0/24 banned within 10m".into(),
            origin: Origin::RateLimit,
        }));
        // Every policy host of the prefix goes, the ones banned before the window too.
        assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 7), 0);
        assert_eq!(e.take_promotions()[0].released, 6);
    }

    #[test]
    fn a_whitelisted_or_protected_address_in_the_prefix_keeps_the_host_bans() {
        for blocker in ["api", "config", "covering", "protected"] {
            let mut e = Engine::new(counting(), None);
            match blocker {
                "api" => drop(e.add(
                    ListKind::Whitelist,
                    net("198.51.100.77/32"),
                    None,
                    "partner".into(),
                    Origin::Api,
                    T0,
                )),
                "config" => {
                    e.add_config(ListKind::Whitelist, &[net("198.51.100.240/28")], "cfg", T0)
                }
                // Whitelisted after the first bans (a whitelist over them would stop them).
                "covering" => {}
                _ => e.set_protected(vec![net("198.51.100.9/32")]),
            }
            for i in 1..=3u8 {
                banned(&mut e, src(i), T0.plus(u32::from(i) * S));
            }
            if blocker == "covering" {
                e.add(
                    ListKind::Whitelist,
                    net("198.51.0.0/16"),
                    Some(H),
                    "maintenance".into(),
                    Origin::Api,
                    T0,
                );
                // Whitelisted now: not banned at all, let alone promoted.
                assert_eq!(
                    e.violation(src(4), "rate".into(), T0.plus(5 * S)).0,
                    Outcome::Whitelisted
                );
                assert_eq!(
                    e.whitelist_overlap(net("198.51.100.0/24")),
                    Some(net("198.51.0.0/16"))
                );
                continue;
            }
            for i in 4..=8u8 {
                let cmds = banned(&mut e, src(i), T0.plus(u32::from(i) * S));
                assert_eq!(cmds.len(), 1, "{blocker}: {cmds:?}");
            }
            assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 8), 8, "{blocker}");
            assert!(e.take_promotions().is_empty(), "{blocker}");
            assert!(e
                .entry(ListKind::Graylist, net("198.51.100.0/24"))
                .is_none());
        }
        // Once the whitelist entry is gone, the next ban promotes (the earlier ones count).
        let mut e = Engine::new(counting(), None);
        e.add(
            ListKind::Whitelist,
            net("198.51.100.77/32"),
            None,
            "p".into(),
            Origin::Api,
            T0,
        );
        for i in 1..=4u8 {
            banned(&mut e, src(i), T0.plus(u32::from(i) * S));
        }
        e.remove(ListKind::Whitelist, net("198.51.100.77/32"))
            .unwrap();
        assert_eq!(e.whitelist_overlap(net("198.51.100.0/24")), None);
        banned(&mut e, src(5), T0.plus(5 * S));
        let p = e.take_promotions();
        assert_eq!((p.len(), p[0].sources, p[0].released), (1, 5, 4));
    }

    #[test]
    fn the_most_severe_list_and_the_longest_remaining_ban_decide() {
        let mut e = Engine::new(
            Escalation {
                strikes_to_blacklist: 2,
                blacklist_duration: Lifetime::For(2 * H),
                promote_window: 3 * H,
                ..counting()
            },
            Some(ReportRule {
                count: 1,
                window: H,
                duration: 5 * H,
            }),
        );
        // A: graylisted, served, then blacklisted for 2 h.
        let (_, end) = violate_and_serve(&mut e, src(1), T0);
        let (out, _) = e.violation(src(1), "rate".into(), end);
        assert!(matches!(
            out,
            Outcome::Banned {
                list: ListKind::Blacklist,
                ..
            }
        ));
        banned(&mut e, src(2), end.plus(M));
        // A report ban lasts 5 h: the longest.
        let (out, _) = e.report(src(3), "login".into(), None, end.plus(2 * M));
        assert!(matches!(
            out,
            Outcome::Banned {
                list: ListKind::Graylist,
                ..
            }
        ));
        banned(&mut e, src(4), end.plus(3 * M));
        let p = e.take_promotions();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].list, ListKind::Blacklist);
        assert_eq!(p[0].until, Some(end.plus(2 * M).plus(5 * H)));
        let entry = e
            .entry(ListKind::Blacklist, net("198.51.100.0/24"))
            .unwrap();
        assert_eq!(entry.until, Some(end.plus(2 * M).plus(5 * H)));
        assert_eq!(entry.origin, Origin::RateLimit);
        assert_eq!(hosts_listed(&e, ListKind::Blacklist, 1, 4), 0);
        assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 4), 0);
    }

    #[test]
    fn manual_config_and_fleet_entries_neither_count_nor_are_released() {
        let mut e = Engine::new(counting(), None);
        e.add(
            ListKind::Graylist,
            IpNet::from(src(10)),
            Some(H),
            "api".into(),
            Origin::Api,
            T0,
        );
        e.add(
            ListKind::Blacklist,
            IpNet::from(src(11)),
            None,
            "api".into(),
            Origin::Api,
            T0,
        );
        e.add(
            ListKind::Graylist,
            IpNet::from(src(12)),
            Some(H),
            "fleet".into(),
            Origin::Cluster,
            T0,
        );
        e.add_config(ListKind::Graylist, &[IpNet::from(src(13))], "cfg", T0);
        // A manual entry beside a policy ban of the same host: only the policy's goes.
        e.add(
            ListKind::Blacklist,
            IpNet::from(src(1)),
            Some(2 * H),
            "api".into(),
            Origin::Api,
            T0,
        );
        let (out, _) = e.violation(src(1), "rate".into(), T0);
        assert!(
            matches!(out, Outcome::AlreadyBanned { .. }),
            "the manual ban covers it"
        );
        e.remove(ListKind::Blacklist, IpNet::from(src(1))).unwrap();
        banned(&mut e, src(1), T0);
        e.add(
            ListKind::Blacklist,
            IpNet::from(src(1)),
            Some(2 * H),
            "api".into(),
            Origin::Api,
            T0,
        );
        for i in 2..=3u8 {
            assert_eq!(
                banned(&mut e, src(i), T0.plus(S)).len(),
                1,
                "manual entries do not count"
            );
        }
        banned(&mut e, src(4), T0.plus(2 * S));
        let p = e.take_promotions();
        assert_eq!((p[0].sources, p[0].released), (4, 3));
        // Graylisted (no member was blacklisted by the policy) for the longest policy ban:
        // the manual entries' ends do not stretch it.
        assert_eq!(p[0].list, ListKind::Graylist);
        assert_eq!(p[0].until, Some(T0.plus(2 * S).plus(H)));
        for (list, i) in [
            (ListKind::Graylist, 10),
            (ListKind::Blacklist, 11),
            (ListKind::Graylist, 12),
            (ListKind::Graylist, 13),
            (ListKind::Blacklist, 1),
        ] {
            assert!(
                e.entry(list, IpNet::from(src(i))).is_some(),
                "{} kept",
                src(i)
            );
        }
        assert!(e.entry(ListKind::Graylist, IpNet::from(src(1))).is_none());
    }

    #[test]
    fn a_failed_commit_takes_the_whole_promotion_back() {
        let mut e = Engine::new(counting(), None);
        for i in 1..=3u8 {
            banned(&mut e, src(i), T0.plus(u32::from(i) * S));
        }
        let _ = e.take_journal();
        let before = e.snapshot();
        e.begin();
        let cmds = banned(&mut e, src(4), T0.plus(4 * S));
        assert_eq!(cmds.len(), 4);
        let back = e.rollback();
        assert_eq!(e.snapshot(), before);
        assert!(e.take_promotions().is_empty());
        assert_eq!(hosts_listed(&e, ListKind::Graylist, 1, 4), 3);
        assert!(e
            .entry(ListKind::Graylist, net("198.51.100.0/24"))
            .is_none());
        // The rollback's commands put the tables back: the hosts listed, the prefix and
        // the 4th host not.
        for i in 1..=3u8 {
            assert!(back
                .iter()
                .any(|c| matches!(c, Command::Block { net, .. } if *net == IpNet::from(src(i)))));
        }
        assert!(back.contains(&Command::Unblock {
            net: net("198.51.100.0/24"),
            list: ListKind::Graylist
        }));
        assert!(back.contains(&Command::Unblock {
            net: IpNet::from(src(4)),
            list: ListKind::Graylist
        }));
        // The indexes are whole again: the same ban promotes the same way.
        e.begin();
        assert_eq!(banned(&mut e, src(4), T0.plus(4 * S)), cmds);
        e.commit();
        assert_eq!(e.take_promotions().len(), 1);
    }

    #[test]
    fn ipv6_sources_of_one_slash_64_are_promoted_on_their_own_threshold() {
        let mut e = Engine::new(counting(), None);
        for (i, who) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:3::1"]
            .into_iter()
            .enumerate()
        {
            let cmds = banned(&mut e, ip(who), T0.plus(i as u32 * S));
            assert_eq!(cmds.len(), 1, "two of one /64 and one of another");
        }
        let cmds = banned(&mut e, ip("2001:db8:1:2:ffff::9"), T0.plus(5 * S));
        assert_eq!(cmds.len(), 3, "{cmds:#?}");
        let p = e.take_promotions();
        assert_eq!(p[0].prefix, net("2001:db8:1:2::/64"));
        assert_eq!(
            p[0].reason,
            "promoted: 3 sources of 2001:db8:1:2::/64 banned within 10m"
        );
        assert!(e
            .entry(ListKind::Graylist, net("2001:db8:1:3::1/128"))
            .is_some());
        assert_eq!(e.ban_of(ip("2001:db8:1:3::2")), None);
        // IPv4 off: any number of sources of a /24 stay hosts.
        let mut e = Engine::new(
            Escalation {
                promote_v4_after: 0,
                ..counting()
            },
            None,
        );
        for i in 1..=20u8 {
            assert_eq!(banned(&mut e, src(i), T0).len(), 1);
        }
    }

    #[test]
    fn the_prefix_lengths_apply_to_both_triggers() {
        let esc = Escalation {
            promote_v4_prefix: 28,
            promote_v6_prefix: 48,
            ..counting()
        };
        let mut e = Engine::new(esc.clone(), None);
        assert_eq!(e.promotion_prefix(src(77)), net("198.51.100.64/28"));
        assert_eq!(
            e.promotion_prefix(ip("2001:db8:7:8::1")),
            net("2001:db8:7::/48")
        );
        // By count: 4 of one /28; sources of the next /28 are not in it.
        for i in [65, 66, 67, 80, 81] {
            banned(&mut e, src(i), T0);
        }
        banned(&mut e, src(79), T0);
        assert_eq!(e.take_promotions()[0].prefix, net("198.51.100.64/28"));
        assert!(e.entry(ListKind::Graylist, IpNet::from(src(80))).is_some());
        // Full table: the same length; manual entries inside stay.
        let mut e = Engine::new(
            Escalation {
                promote_v4_after: 0,
                ..esc
            },
            None,
        );
        e.add(
            ListKind::Graylist,
            IpNet::from(src(70)),
            Some(H),
            "api".into(),
            Origin::Api,
            T0,
        );
        for i in [65, 66] {
            banned(&mut e, src(i), T0);
        }
        let ban = (ListKind::Blacklist, Some(T0.plus(3 * H)));
        assert!(
            e.promote(src(67), 3, ban, T0).is_none(),
            "2 banned, 3 needed"
        );
        banned(&mut e, src(68), T0);
        let (prefix, cmds) = e.promote(src(67), 3, ban, T0).unwrap();
        assert_eq!(prefix, net("198.51.100.64/28"));
        assert_eq!(cmds.len(), 4);
        let p = e.take_promotions();
        assert_eq!(
            (
                p[0].trigger,
                p[0].sources,
                p[0].released,
                p[0].list,
                p[0].until
            ),
            (
                Trigger::Full,
                4,
                3,
                ListKind::Blacklist,
                Some(T0.plus(3 * H))
            )
        );
        assert_eq!(
            p[0].reason,
            "promoted: 4 sources of 198.51.100.64/28 banned and the kernel's host table is full"
        );
        assert!(e.entry(ListKind::Graylist, IpNet::from(src(70))).is_some());
    }
}

/// `[[rate_limit]] exempt`: the engine sees a source's count of a rule as the controller
/// hands it on, a violation only when [`window::violated`] says so.
mod rate_exemptions {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::{RateKind, RateLimit},
        policy::window,
    };

    /// SYNs 20/1s exempting 198.51.100.0/24 and 2001:db8::/48; packets 1000/1s exempting
    /// nobody.
    fn rules() -> [RateLimit; 2] {
        [
            RateLimit {
                kind: RateKind::Syn,
                count: 20,
                window: Duration::from_secs(1),
                ports: vec![],
                exempt: vec![net("198.51.100.0/24"), net("2001:db8::/48")],
            },
            RateLimit {
                kind: RateKind::Packets,
                count: 1000,
                window: Duration::from_secs(1),
                ports: vec![],
                exempt: vec![],
            },
        ]
    }

    /// `who` counted `count` of `rule`: what became of it, `None` if it was no violation.
    fn judge(e: &mut Engine, rule: &RateLimit, who: IpAddr, count: u64) -> Option<Outcome> {
        window::violated(rule, who, count).then(|| e.violation(who, "test".into(), T0).0)
    }

    #[test]
    fn an_exempt_source_over_the_limit_is_not_banned_by_that_rule() {
        let mut e = Engine::new(esc(), None);
        let [syn, _] = rules();
        for who in [
            ip("198.51.100.0"),
            ip("198.51.100.255"),
            ip("2001:db8::1"),
            ip("2001:db8:0:ffff::9"),
        ] {
            assert_eq!(judge(&mut e, &syn, who, 21), None, "{who}");
            assert_eq!(judge(&mut e, &syn, who, u64::MAX), None, "{who}");
            assert!(e.ban_of(who).is_none(), "{who}");
            assert_eq!(e.strikes(who, T0), 0, "{who}");
        }
        assert!(e.entries().next().is_none());
    }

    #[test]
    fn a_source_outside_the_exempt_networks_is_banned_by_the_rule() {
        let mut e = Engine::new(esc(), None);
        let [syn, _] = rules();
        let banned = Some(Outcome::Banned {
            list: ListKind::Graylist,
            until: Some(T0.plus(H)),
            strikes: 1,
        });
        for who in [ip("198.51.101.0"), ip("198.51.99.255"), ip("2001:db8:1::1")] {
            // At the limit is no violation; one more is.
            assert_eq!(judge(&mut e, &syn, who, 20), None, "{who}");
            assert_eq!(judge(&mut e, &syn, who, 21), banned, "{who}");
            assert_eq!(e.ban_of(who).unwrap().0, IpNet::from(who));
        }
    }

    #[test]
    fn an_exempt_source_is_banned_by_another_rule_that_does_not_exempt_it() {
        let mut e = Engine::new(esc(), None);
        let [syn, packets] = rules();
        let who = ip("198.51.100.7");
        assert_eq!(judge(&mut e, &syn, who, 5000), None);
        assert_eq!(judge(&mut e, &packets, who, 1000), None);
        assert_eq!(
            judge(&mut e, &packets, who, 1001),
            Some(Outcome::Banned {
                list: ListKind::Graylist,
                until: Some(T0.plus(H)),
                strikes: 1,
            })
        );
        let (prefix, entry) = e.ban_of(who).unwrap();
        assert_eq!(
            (prefix, entry.origin),
            (net("198.51.100.7/32"), Origin::RateLimit)
        );
        // The exemption still holds for its own rule while the source is banned.
        assert_eq!(judge(&mut e, &syn, who, 5000), None);
    }
}
