//! T0: [`Policy`] transactions. A change taken back leaves the engine, the compiled table
//! and the persisted state exactly as if it had never been made.

use std::{net::IpAddr, time::Duration};

use proptest::prelude::*;

use super::*;
use crate::{
    policy::engine::EngineState,
    testing::{escalation, ip, net, H, T0},
};

fn esc() -> Escalation {
    Escalation {
        strikes_to_blacklist: 2,
        ban_growth: 2.0,
        // The property below promotes 192.0.2.0/24 now and then, and takes it back.
        promote_v4_after: 3,
        ..escalation()
    }
}

fn report_rule() -> Option<ReportRule> {
    Some(ReportRule {
        count: 2,
        window: H,
        duration: 2 * H,
    })
}

fn policy() -> Policy {
    let mut p = Policy::new(esc(), report_rule());
    let lists = [vec![net("10.0.0.0/8")], vec![], vec![net("203.0.113.0/24")]];
    p.load(&lists, Some(EngineState::default()), T0);
    p
}

/// Everything a rolled-back change must not have touched.
fn fingerprint(p: &Policy) -> (EngineState, Compiled, [usize; 3], Option<Ts>) {
    (
        p.snapshot(),
        p.compiled().clone(),
        ListKind::ALL.map(|l| p.engine().count(l)),
        p.next_deadline(),
    )
}

#[test]
fn a_rolled_back_add_leaves_nothing_and_its_undo_ops_restore_the_table() {
    let mut p = policy();
    let before = fingerprint(&p);
    let (change, counts) = p.add(
        ListKind::Blacklist,
        &[
            (net("198.51.100.7/32"), Some(H), "scanner".into()),
            (
                net("203.0.113.0/24"),
                None,
                "replaces the config entry".into(),
            ),
        ],
        Origin::Api,
        T0,
    );
    assert_eq!(counts, (1, 1));
    assert!(!change.ops.is_empty());
    let undo = p.rollback();
    assert_eq!(fingerprint(&p), before);
    // The ops of the change, then those of the undo, leave the table as before.
    let mut table = before.1.clone();
    for op in change.ops.iter().chain(&undo) {
        match *op {
            TableOp::Write(n, e) => {
                table.insert(n, e);
            }
            TableOp::Delete(n) => {
                table.remove(&n);
            }
            TableOp::ScopeWrite(..) | TableOp::ScopeDelete(_) => {}
        }
    }
    assert_eq!(table, before.1);
    let e = p
        .engine()
        .entry(ListKind::Blacklist, net("203.0.113.0/24"))
        .unwrap();
    assert_eq!((e.origin, e.reason.as_str()), (Origin::Config, "config"));
}

#[test]
fn a_rolled_back_ban_restores_the_offender_and_the_journal() {
    let mut p = policy();
    let source = ip("198.51.100.9");
    let (o, c) = p.report(source, "login".into(), None, T0);
    assert!(matches!(o, Outcome::Recorded { reports: 1 }));
    p.commit();
    let _ = c;
    let mut stored = EngineState::default();
    stored.replay(p.take_journal());
    let before = fingerprint(&p);
    let (o, change) = p.report(
        source,
        "login".into(),
        None,
        T0.plus(Duration::from_secs(1)),
    );
    assert!(matches!(o, Outcome::Banned { .. }), "{o:?}");
    assert!(!change.ops.is_empty());
    // Write-ahead: the store gets the change's ops before the kernel refuses it.
    stored.replay(p.take_journal());
    let _ = p.rollback();
    assert_eq!(fingerprint(&p), before);
    // The compensation journaled by the rollback brings the store back too.
    stored.replay(p.take_journal());
    assert_eq!(stored, p.snapshot());
    // And the next report bans as the second one would have.
    let (o, _) = p.report(
        source,
        "login".into(),
        None,
        T0.plus(Duration::from_secs(2)),
    );
    assert!(matches!(o, Outcome::Banned { strikes: 1, .. }), "{o:?}");
}

#[test]
fn a_rolled_back_expiry_and_removal_keep_the_entries() {
    let mut p = policy();
    let (c, _) = p.add(
        ListKind::Graylist,
        &[(net("192.0.2.0/24"), Some(H), "x".into())],
        Origin::Api,
        T0,
    );
    assert!(!c.is_empty());
    p.commit();
    let before = fingerprint(&p);
    let change = p.tick(T0.plus(2 * H), |_| None);
    assert_eq!(change.commands.len(), 1);
    let _ = p.rollback();
    assert_eq!(fingerprint(&p), before);
    let (entry, _) = p.remove(ListKind::Whitelist, net("10.0.0.0/8")).unwrap();
    assert_eq!(entry.origin, Origin::Config);
    let _ = p.rollback();
    assert_eq!(fingerprint(&p), before);
    assert!(p.remove(ListKind::Whitelist, net("10.9.0.0/16")).is_none());
}

/// One step of the property test below.
#[derive(Clone, Debug)]
enum Op {
    Add(ListKind, IpNet, Option<u8>),
    Remove(ListKind, IpNet),
    Violation(IpAddr),
    Report(IpAddr),
    /// Advance the clock by this many minutes, then tick.
    Tick(u16),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let list = prop_oneof![
        Just(ListKind::Whitelist),
        Just(ListKind::Graylist),
        Just(ListKind::Blacklist)
    ];
    let host = (0u8..6).prop_map(|b| IpAddr::from([192, 0, 2, b]));
    let net = prop_oneof![
        (0u8..6).prop_map(|b| IpNet::from(IpAddr::from([192, 0, 2, b]))),
        Just("192.0.2.0/29".parse::<IpNet>().unwrap()),
        Just("192.0.2.0/24".parse::<IpNet>().unwrap()),
    ];
    prop_oneof![
        (list.clone(), net.clone(), prop::option::of(1u8..4))
            .prop_map(|(l, n, t)| Op::Add(l, n, t)),
        (list, net).prop_map(|(l, n)| Op::Remove(l, n)),
        host.clone().prop_map(Op::Violation),
        host.prop_map(Op::Report),
        (1u16..200).prop_map(Op::Tick),
    ]
}

/// Applies `op` at `now`; returns whether it opened a transaction.
fn run(p: &mut Policy, op: &Op, now: Ts) -> bool {
    match op {
        Op::Add(l, n, ttl) => {
            let ttl = ttl.map(|h| u32::from(h) * H);
            let _ = p.add(*l, &[(*n, ttl, "t".into())], Origin::Api, now);
            true
        }
        Op::Remove(l, n) => p.remove(*l, *n).is_some(),
        Op::Violation(ip) => {
            let _ = p.violation(*ip, "v".into(), now);
            true
        }
        Op::Report(ip) => {
            let _ = p.report(*ip, "r".into(), None, now);
            true
        }
        Op::Tick(_) => {
            let _ = p.tick(now, |_| None);
            true
        }
    }
}

#[test]
fn a_promotion_is_one_change_that_lists_the_prefix_before_it_releases_the_hosts() {
    let mut p = policy();
    for i in 1..=2u8 {
        let (_, change) = p.violation(IpAddr::from([192, 0, 2, i]), "v".into(), T0);
        assert!(change.promotions.is_empty());
        p.commit();
    }
    let (_, change) = p.violation(ip("192.0.2.3"), "v".into(), T0);
    assert_eq!(change.promotions.len(), 1);
    assert_eq!(change.promotions[0].prefix, net("192.0.2.0/24"));
    // The prefix is written, the earlier hosts deleted after it, the new host never
    // written at all.
    let prefix = net("192.0.2.0/24");
    assert!(
        matches!(change.ops[0], TableOp::Write(n, _) if n == prefix),
        "{:?}",
        change.ops
    );
    let deleted: Vec<IpNet> = change
        .ops
        .iter()
        .filter_map(|op| match op {
            TableOp::Delete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![net("192.0.2.1/32"), net("192.0.2.2/32")]);
    assert_eq!(change.ops.len(), 3);
    p.commit();
    assert_eq!(p.decide(ip("192.0.2.200")).map(|(n, _)| n), Some(prefix));
}

proptest! {
    /// A policy that rolls back some of its changes ends like a twin that never made
    /// them, and its journal (taken before each commit or rollback, as the write-ahead
    /// store does) replays to its snapshot.
    #[test]
    fn rollback_equals_never_having_done_it(
        steps in prop::collection::vec((arb_op(), any::<bool>()), 1..60)
    ) {
        let mut a = policy();
        let mut b = policy();
        let mut stored = EngineState::default();
        stored.replay(a.take_journal());
        let _ = b.take_journal();
        let mut now = T0;
        for (op, keep) in &steps {
            if let Op::Tick(minutes) = op {
                now = now.plus(Duration::from_secs(60 * u64::from(*minutes)));
            }
            let opened = run(&mut a, op, now);
            stored.replay(a.take_journal());
            if *keep || !opened {
                a.commit();
                if run(&mut b, op, now) {
                    b.commit();
                }
            } else {
                let _ = a.rollback();
            }
            let _ = b.take_journal();
            prop_assert_eq!(fingerprint(&a), fingerprint(&b), "after {:?} (kept: {})", op, keep);
        }
        stored.replay(a.take_journal());
        prop_assert_eq!(stored, a.snapshot());
    }
}
