use std::{cmp::Reverse, collections::BTreeSet};

use ipguard_common::{
    ListCode, LIST_BLACKLIST, LIST_GRAYLIST, LIST_MONITOR_BLACKLIST, LIST_MONITOR_GRAYLIST,
    LIST_MONITOR_RULE, LIST_RULE_ALLOW, LIST_RULE_DENY, LIST_WHITELIST,
};

use super::*;
use crate::model::longest_match;
use crate::testing::{ip, net as n};

fn entry(list: ListCode, rule_id: u32) -> ListEntry {
    ListEntry::new(list, rule_id)
}

const WHITE: ListEntry = ListEntry::new(LIST_WHITELIST, 0);
const GRAY: ListEntry = ListEntry::new(LIST_GRAYLIST, 0);
const BLACK: ListEntry = ListEntry::new(LIST_BLACKLIST, 0);

fn allow(index: u32) -> Layer {
    Layer::Rule { index, deny: false }
}

fn deny(index: u32) -> Layer {
    Layer::Rule { index, deny: true }
}

/// What the kernel's tables answer for `addr` (no entry = no decision).
fn verdict(s: &ListState, addr: &str) -> ListEntry {
    lpm(s.written(), ip(addr))
}

fn lpm(w: &BTreeMap<IpNet, ListEntry>, addr: IpAddr) -> ListEntry {
    longest_match(w, addr).map_or(NO_DECISION, |(_, e)| e)
}

fn state(members: &[(&str, Layer)]) -> ListState {
    let mut s = ListState::new();
    s.apply(members.iter().map(|&(net, l)| Change::Insert(n(net), l)));
    s
}

/// The precedence, evaluated directly over the memberships (enforce mode).
fn naive(model: &BTreeSet<(IpNet, Layer)>, addr: IpAddr) -> Option<(IpNet, ListEntry)> {
    naive_in(model, addr, false)
}

/// The precedence, evaluated directly over the memberships; `monitor_all`: the global
/// monitor mode. Whitelist > enforced ban (longest) > deny rule (first match) > monitored
/// ban (longest) > allow rule (first match).
fn naive_in(
    model: &BTreeSet<(IpNet, Layer)>,
    addr: IpAddr,
    monitor_all: bool,
) -> Option<(IpNet, ListEntry)> {
    let drop = |e: ListEntry| {
        if monitor_all {
            entry(ipguard_common::monitored(e.list), e.rule_id)
        } else {
            e
        }
    };
    let containing: Vec<(IpNet, Layer)> = model
        .iter()
        .filter(|(net, _)| net.contains(&addr))
        .copied()
        .collect();
    if let Some(net) = containing
        .iter()
        .filter(|(_, l)| *l == Layer::White)
        .map(|(net, _)| *net)
        .max_by_key(IpNet::prefix_len)
    {
        return Some((net, WHITE));
    }
    let ban = containing
        .iter()
        .filter_map(|&(net, l)| match l {
            Layer::Gray => Some((net.prefix_len(), false, net)),
            Layer::Black => Some((net.prefix_len(), true, net)),
            _ => None,
        })
        .max();
    if let Some((_, black, net)) = ban {
        return Some((net, drop(if black { BLACK } else { GRAY })));
    }
    let rule = containing
        .iter()
        .filter_map(|&(net, l)| match l {
            Layer::Rule { index, deny } => Some((index, !deny, Reverse(net.prefix_len()), net)),
            _ => None,
        })
        .min();
    if let Some((index, false, _, net)) = rule {
        return Some((net, drop(entry(LIST_RULE_DENY, index + 1))));
    }
    let monitored = containing
        .iter()
        .filter_map(|&(net, l)| match l {
            Layer::MonitorGray => Some((net.prefix_len(), false, net)),
            Layer::MonitorBlack => Some((net.prefix_len(), true, net)),
            _ => None,
        })
        .max();
    if let Some((_, black, net)) = monitored {
        let list = if black {
            LIST_MONITOR_BLACKLIST
        } else {
            LIST_MONITOR_GRAYLIST
        };
        return Some((net, entry(list, 0)));
    }
    rule.map(|(index, _, _, net)| (net, entry(LIST_RULE_ALLOW, index + 1)))
}

fn model_of(members: &[(&str, Layer)]) -> BTreeSet<(IpNet, Layer)> {
    members.iter().map(|&(net, l)| (n(net), l)).collect()
}

#[test]
fn whitelist_wins_over_longer_bans_and_rules() {
    let s = state(&[
        ("10.0.0.0/8", Layer::White),
        ("10.1.0.0/16", Layer::Black),
        ("10.1.1.0/24", Layer::Gray),
        ("10.1.1.1/32", deny(0)),
    ]);
    for a in ["10.1.1.1", "10.1.1.2", "10.1.2.1", "10.2.0.0"] {
        assert_eq!(verdict(&s, a), WHITE, "{a}");
    }
    assert_eq!(s.written().len(), 1);
    assert_eq!(verdict(&s, "11.0.0.1"), NO_DECISION);
}

#[test]
fn longest_ban_decides_and_blacklist_wins_a_tie() {
    let s = state(&[
        ("10.0.0.0/8", Layer::Gray),
        ("10.1.0.0/16", Layer::Black),
        ("10.1.1.0/24", Layer::Gray),
        ("10.2.0.0/16", Layer::Gray),
        ("10.2.0.0/16", Layer::Black),
    ]);
    assert_eq!(verdict(&s, "10.0.0.1"), GRAY);
    assert_eq!(verdict(&s, "10.1.0.1"), BLACK);
    assert_eq!(verdict(&s, "10.1.1.1"), GRAY);
    assert_eq!(verdict(&s, "10.2.0.1"), BLACK);
}

#[test]
fn bans_win_over_rules_whatever_the_lengths() {
    let s = state(&[
        ("10.0.0.0/8", Layer::Gray),
        ("10.1.1.0/24", allow(0)),
        ("192.0.2.0/24", allow(0)),
        ("192.0.2.7/32", Layer::Black),
    ]);
    assert_eq!(verdict(&s, "10.1.1.1"), GRAY);
    assert_eq!(verdict(&s, "192.0.2.7"), BLACK);
    assert_eq!(verdict(&s, "192.0.2.8"), entry(LIST_RULE_ALLOW, 1));
}

#[test]
fn first_matching_rule_wins_and_rule_ids_are_index_plus_one() {
    let s = state(&[
        ("10.1.0.0/16", deny(3)),
        ("10.1.1.0/24", allow(5)),
        ("10.0.0.0/8", allow(1)),
        ("10.2.0.0/16", deny(0)),
    ]);
    assert_eq!(verdict(&s, "10.1.1.1"), entry(LIST_RULE_ALLOW, 2));
    assert_eq!(verdict(&s, "10.2.1.1"), entry(LIST_RULE_DENY, 1));
    assert_eq!(verdict(&s, "10.3.1.1"), entry(LIST_RULE_ALLOW, 2));
    // Everything under 10/8 but 10.2/16 is decided by rule 1: only two entries.
    assert_eq!(s.written().len(), 2);
}

#[test]
fn shadowed_later_rule_does_not_win() {
    let s = state(&[("10.0.0.0/8", deny(0)), ("10.1.0.0/16", allow(1))]);
    assert_eq!(verdict(&s, "10.1.2.3"), entry(LIST_RULE_DENY, 1));
    assert_eq!(
        s.written().iter().collect::<Vec<_>>(),
        [(&n("10.0.0.0/8"), &entry(LIST_RULE_DENY, 1))]
    );
    assert_eq!(
        s.decide(ip("10.1.2.3")),
        Some((n("10.0.0.0/8"), entry(LIST_RULE_DENY, 1)))
    );
}

#[test]
fn deny_inside_allow_inside_deny() {
    let s = state(&[
        ("10.1.1.0/24", deny(0)),
        ("10.1.0.0/16", allow(1)),
        ("10.0.0.0/8", deny(2)),
    ]);
    assert_eq!(verdict(&s, "10.1.1.9"), entry(LIST_RULE_DENY, 1));
    assert_eq!(verdict(&s, "10.1.2.9"), entry(LIST_RULE_ALLOW, 2));
    assert_eq!(verdict(&s, "10.2.2.9"), entry(LIST_RULE_DENY, 3));
    assert_eq!(verdict(&s, "11.0.0.1"), NO_DECISION);
    assert_eq!(s.written().len(), 3);
}

#[test]
fn families_do_not_shadow_each_other() {
    let s = state(&[("::/0", Layer::White), ("0.0.0.0/0", Layer::Black)]);
    assert_eq!(verdict(&s, "192.0.2.1"), BLACK);
    assert_eq!(verdict(&s, "::ffff:192.0.2.1"), WHITE);
    assert_eq!(verdict(&s, "2001:db8::1"), WHITE);
    let s = state(&[("0.0.0.0/0", Layer::White), ("::/0", deny(0))]);
    assert_eq!(verdict(&s, "2001:db8::1"), entry(LIST_RULE_DENY, 1));
    assert_eq!(verdict(&s, "192.0.2.1"), WHITE);
}

#[test]
fn entry_equal_to_its_ancestors_decision_is_not_written() {
    let mut s = state(&[("10.0.0.0/8", Layer::Black)]);
    assert!(s.insert(n("10.1.2.3/32"), Layer::Black).is_empty());
    assert!(s.insert(n("10.1.0.0/16"), Layer::Black).is_empty());
    assert!(s.insert(n("10.1.0.0/16"), deny(0)).is_empty());
    assert_eq!(s.written().len(), 1);
    assert_eq!(s.len(), 3);
    // A longer gray entry changes the decision, so it is written; the black /32 under
    // it now differs from its new parent: written too, and before its parent.
    assert_eq!(
        s.insert(n("10.1.2.0/24"), Layer::Gray),
        [
            TableOp::Write(n("10.1.2.3/32"), BLACK),
            TableOp::Write(n("10.1.2.0/24"), GRAY)
        ]
    );
    assert_eq!(verdict(&s, "10.1.2.3"), BLACK);
    assert_eq!(verdict(&s, "10.1.2.4"), GRAY);
}

#[test]
fn omission_is_reevaluated_when_an_ancestor_changes() {
    let mut s = state(&[("10.0.0.0/8", Layer::Black), ("10.1.0.0/16", Layer::Black)]);
    assert_eq!(s.written().len(), 1);
    // Removing the /8 leaves the /16 deciding on its own: it must be written first.
    assert_eq!(
        s.remove(n("10.0.0.0/8"), Layer::Black),
        [
            TableOp::Write(n("10.1.0.0/16"), BLACK),
            TableOp::Delete(n("10.0.0.0/8"))
        ]
    );
    // Whitelisting above makes both the /16 entry redundant.
    assert_eq!(
        s.insert(n("10.0.0.0/8"), Layer::White),
        [
            TableOp::Write(n("10.0.0.0/8"), WHITE),
            TableOp::Delete(n("10.1.0.0/16"))
        ]
    );
    assert_eq!(verdict(&s, "10.1.0.1"), WHITE);
}

#[test]
fn removal_restores_the_ancestors_decision() {
    let mut s = state(&[("10.0.0.0/8", deny(0)), ("10.1.0.0/16", Layer::White)]);
    assert_eq!(verdict(&s, "10.1.0.1"), WHITE);
    assert_eq!(
        s.remove(n("10.1.0.0/16"), Layer::White),
        [TableOp::Delete(n("10.1.0.0/16"))]
    );
    assert_eq!(verdict(&s, "10.1.0.1"), entry(LIST_RULE_DENY, 1));
    // A ban inside an allowing rule: removing it goes back to the rule.
    let mut s = state(&[("10.0.0.0/8", allow(4))]);
    s.insert(n("10.9.9.9/32"), Layer::Gray);
    assert_eq!(verdict(&s, "10.9.9.9"), GRAY);
    s.remove(n("10.9.9.9/32"), Layer::Gray);
    assert_eq!(verdict(&s, "10.9.9.9"), entry(LIST_RULE_ALLOW, 5));
    assert_eq!(s.len(), 1);
}

#[test]
fn identical_prefix_in_several_layers() {
    let mut s = state(&[
        ("192.0.2.0/24", Layer::Gray),
        ("192.0.2.0/24", Layer::Black),
        ("192.0.2.0/24", deny(0)),
    ]);
    assert_eq!(verdict(&s, "192.0.2.1"), BLACK);
    s.insert(n("192.0.2.0/24"), Layer::White);
    assert_eq!(verdict(&s, "192.0.2.1"), WHITE);
    s.remove(n("192.0.2.0/24"), Layer::White);
    s.remove(n("192.0.2.0/24"), Layer::Black);
    assert_eq!(verdict(&s, "192.0.2.1"), GRAY);
    s.remove(n("192.0.2.0/24"), Layer::Gray);
    assert_eq!(verdict(&s, "192.0.2.1"), entry(LIST_RULE_DENY, 1));
    assert!(s.contains(n("192.0.2.0/24"), deny(0)));
    assert!(!s.contains(n("192.0.2.0/24"), Layer::Gray));
    assert_eq!(s.len(), 1);
}

#[test]
fn duplicate_and_absent_memberships_give_no_ops() {
    let mut s = state(&[("10.0.0.0/8", Layer::Gray)]);
    assert!(s.insert(n("10.0.0.0/8"), Layer::Gray).is_empty());
    assert!(s.insert(n("10.1.2.3/8"), Layer::Gray).is_empty());
    assert!(s.remove(n("10.0.0.0/8"), Layer::Black).is_empty());
    assert!(s.remove(n("11.0.0.0/8"), Layer::Gray).is_empty());
    assert!(s.apply([]).is_empty());
}

#[test]
fn host_bits_are_cleared() {
    let mut s = ListState::new();
    s.insert(n("10.1.2.3/8"), Layer::Black);
    assert!(s.contains(n("10.0.0.0/8"), Layer::Black));
    assert!(s.contains(n("10.9.9.9/8"), Layer::Black));
    assert_eq!(
        s.written().keys().copied().collect::<Vec<_>>(),
        [n("10.0.0.0/8")]
    );
    s.remove(n("10.200.0.0/8"), Layer::Black);
    assert!(s.is_empty());
    assert!(s.written().is_empty());
}

#[test]
fn set_rules_replaces_only_rule_memberships() {
    let mut s = state(&[("10.0.0.0/8", allow(0)), ("10.1.0.0/16", Layer::Gray)]);
    s.set_rules(&[
        (0, true, None, vec![n("10.0.0.0/8"), n("2001:db8::/32")]),
        (1, false, None, vec![n("10.1.0.0/16"), n("10.2.0.0/16")]),
    ]);
    assert!(!s.contains(n("10.0.0.0/8"), allow(0)));
    assert!(s.contains(n("10.1.0.0/16"), Layer::Gray));
    assert_eq!(verdict(&s, "10.3.0.1"), entry(LIST_RULE_DENY, 1));
    assert_eq!(verdict(&s, "10.2.0.1"), entry(LIST_RULE_DENY, 1));
    assert_eq!(verdict(&s, "10.1.0.1"), GRAY);
    assert_eq!(verdict(&s, "2001:db8::1"), entry(LIST_RULE_DENY, 1));
    // Same rules again: nothing to do.
    assert!(s
        .set_rules(&[
            (1, false, None, vec![n("10.2.0.0/16"), n("10.1.0.0/16")]),
            (0, true, None, vec![n("2001:db8::/32"), n("10.0.0.0/8")]),
        ])
        .is_empty());
    s.set_rules(&[]);
    assert_eq!(verdict(&s, "10.3.0.1"), NO_DECISION);
    assert_eq!(verdict(&s, "10.1.0.1"), GRAY);
    assert_eq!(s.len(), 1);
}

#[test]
fn one_index_with_both_actions_denies() {
    let s = state(&[("10.0.0.0/8", allow(2)), ("10.1.0.0/16", deny(2))]);
    assert_eq!(verdict(&s, "10.1.0.1"), entry(LIST_RULE_DENY, 3));
    assert_eq!(verdict(&s, "10.2.0.1"), entry(LIST_RULE_ALLOW, 3));
}

#[test]
fn decide_names_the_deciding_prefix() {
    let members = [
        ("10.0.0.0/8", Layer::Gray),
        ("10.1.0.0/16", Layer::White),
        ("10.1.1.0/24", Layer::Black),
        ("10.2.0.0/16", Layer::Black),
        ("10.2.2.0/24", deny(0)),
        ("192.0.2.0/24", allow(1)),
        ("192.0.2.128/25", deny(0)),
    ];
    let s = state(&members);
    let model = model_of(&members);
    assert_eq!(s.decide(ip("10.1.1.1")), Some((n("10.1.0.0/16"), WHITE)));
    assert_eq!(s.decide(ip("10.2.2.2")), Some((n("10.2.0.0/16"), BLACK)));
    assert_eq!(
        s.decide(ip("192.0.2.200")),
        Some((n("192.0.2.128/25"), entry(LIST_RULE_DENY, 1)))
    );
    assert_eq!(s.decide(ip("11.0.0.1")), None);
    for a in [
        "10.1.1.1",
        "10.2.2.2",
        "10.3.0.0",
        "192.0.2.1",
        "192.0.2.129",
        "::1",
    ] {
        assert_eq!(s.decide(ip(a)), naive(&model, ip(a)), "{a}");
    }
}

const MON_GRAY: ListEntry = ListEntry::new(LIST_MONITOR_GRAYLIST, 0);
const MON_BLACK: ListEntry = ListEntry::new(LIST_MONITOR_BLACKLIST, 0);

#[test]
fn monitored_entries_never_weaken_enforced_ones_whatever_the_lengths() {
    let s = state(&[
        ("10.0.0.0/8", Layer::Gray),
        ("10.1.0.0/16", Layer::MonitorBlack),
        ("10.1.1.1/32", Layer::MonitorGray),
        ("192.0.2.0/24", Layer::MonitorBlack),
        ("192.0.2.0/25", Layer::White),
        ("203.0.113.0/24", deny(0)),
        ("203.0.113.0/25", Layer::MonitorGray),
    ]);
    // Inside an enforced ban: enforced, and the monitored entries are not written.
    assert_eq!(verdict(&s, "10.1.1.1"), GRAY);
    assert_eq!(verdict(&s, "10.1.2.1"), GRAY);
    // The whitelist wins; outside it, would drop.
    assert_eq!(verdict(&s, "192.0.2.1"), WHITE);
    assert_eq!(verdict(&s, "192.0.2.200"), MON_BLACK);
    // A deny rule wins over a longer monitored entry.
    assert_eq!(verdict(&s, "203.0.113.1"), entry(LIST_RULE_DENY, 1));
    assert_eq!(
        s.decide(ip("203.0.113.1")),
        Some((n("203.0.113.0/24"), entry(LIST_RULE_DENY, 1)))
    );
    assert_eq!(
        s.decide(ip("192.0.2.200")),
        Some((n("192.0.2.0/24"), MON_BLACK))
    );
    assert_eq!(
        s.written().keys().copied().collect::<Vec<_>>(),
        [
            n("10.0.0.0/8"),
            n("192.0.2.0/24"),
            n("192.0.2.0/25"),
            n("203.0.113.0/24")
        ]
    );
}

#[test]
fn monitored_entries_win_over_allow_rules_and_longest_decides_among_them() {
    let s = state(&[
        ("10.0.0.0/8", allow(0)),
        ("10.1.0.0/16", Layer::MonitorGray),
        ("10.1.1.0/24", Layer::MonitorBlack),
        ("10.1.1.1/32", Layer::MonitorGray),
        ("10.2.0.0/16", Layer::MonitorGray),
        ("10.2.0.0/16", Layer::MonitorBlack),
    ]);
    assert_eq!(verdict(&s, "10.9.0.1"), entry(LIST_RULE_ALLOW, 1));
    assert_eq!(verdict(&s, "10.1.0.1"), MON_GRAY);
    assert_eq!(verdict(&s, "10.1.1.2"), MON_BLACK);
    assert_eq!(verdict(&s, "10.1.1.1"), MON_GRAY);
    // The blacklist wins a tie, as for enforced entries.
    assert_eq!(verdict(&s, "10.2.0.1"), MON_BLACK);
}

#[test]
fn global_monitor_mode_rewrites_every_dropping_decision_and_back() {
    let members = [
        ("10.0.0.0/8", Layer::Gray),
        ("10.1.0.0/16", Layer::Black),
        ("10.1.1.0/24", Layer::White),
        ("192.0.2.0/24", deny(2)),
        ("192.0.2.0/25", allow(1)),
        ("198.51.100.0/24", Layer::MonitorBlack),
        ("198.51.100.0/25", Layer::Gray),
    ];
    let mut s = state(&members);
    let enforce = s.written().clone();
    assert_eq!(s.mode(), Mode::Enforce);
    assert!(s.set_mode(Mode::Enforce).is_empty());
    let ops = s.set_mode(Mode::Monitor);
    // Only the dropping entries are rewritten: writes only, whitelist and allow untouched.
    assert!(
        ops.iter().all(|o| matches!(o, TableOp::Write(..))),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 4);
    assert_eq!(verdict(&s, "10.0.0.1"), MON_GRAY);
    assert_eq!(verdict(&s, "10.1.0.1"), MON_BLACK);
    assert_eq!(verdict(&s, "10.1.1.1"), WHITE);
    assert_eq!(verdict(&s, "192.0.2.200"), entry(LIST_MONITOR_RULE, 3));
    assert_eq!(verdict(&s, "192.0.2.1"), entry(LIST_RULE_ALLOW, 2));
    assert_eq!(verdict(&s, "198.51.100.1"), MON_GRAY);
    assert_eq!(verdict(&s, "198.51.100.200"), MON_BLACK);
    assert_eq!(
        s.decide(ip("10.1.0.1")),
        Some((n("10.1.0.0/16"), MON_BLACK))
    );
    // Changes made in monitor mode are compiled as monitored.
    assert_eq!(
        s.insert(n("203.0.113.0/24"), Layer::Black),
        [TableOp::Write(n("203.0.113.0/24"), MON_BLACK)]
    );
    s.remove(n("203.0.113.0/24"), Layer::Black);
    // And back: exactly the enforce table again, as a full rebuild would make it.
    assert!(!s.set_mode(Mode::Enforce).is_empty());
    assert_eq!(s.written(), &enforce);
}

#[test]
fn large_batch_and_subtrees_agree() {
    // More than FULL_REBUILD_MIN changes: the full pass; then each one alone.
    let members: Vec<(IpNet, Layer)> = (0u32..200)
        .map(|i| {
            let layer = [
                Layer::White,
                Layer::Gray,
                Layer::Black,
                deny(i % 7),
                allow(i % 5),
            ][(i % 5) as usize];
            let len = [8, 16, 24, 32][(i % 4) as usize];
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(0x9e37_79b9) >> 8));
            (IpNet::new(addr.into(), len).unwrap().trunc(), layer)
        })
        .collect();
    let mut batch = ListState::new();
    batch.apply(members.iter().map(|&(net, l)| Change::Insert(net, l)));
    let mut one_by_one = ListState::new();
    for &(net, l) in &members {
        one_by_one.insert(net, l);
    }
    assert_eq!(batch.written(), one_by_one.written());
}

mod properties {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::{prelude::*, sample::Index};

    use super::*;

    // A small address space so that random prefixes and addresses overlap often.
    fn v4_addr() -> impl Strategy<Value = IpAddr> {
        any::<u8>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, b & 0x0f, b >> 4, b)))
    }
    fn v6_addr() -> impl Strategy<Value = IpAddr> {
        any::<u8>().prop_map(|b| {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                u16::from(b & 3),
                0,
                0,
                0,
                0,
                u16::from(b),
            ))
        })
    }
    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![v4_addr(), v6_addr()]
    }
    fn net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (v4_addr(), 0u8..=32).prop_map(|(a, len)| IpNet::new(a, len).unwrap().trunc()),
            (v6_addr(), 0u8..=128).prop_map(|(a, len)| IpNet::new(a, len).unwrap().trunc()),
        ]
    }
    fn layer() -> impl Strategy<Value = Layer> {
        prop_oneof![
            Just(Layer::White),
            Just(Layer::Gray),
            Just(Layer::Black),
            (0u32..4, any::<bool>()).prop_map(|(index, deny)| Layer::Rule { index, deny }),
            Just(Layer::MonitorGray),
            Just(Layer::MonitorBlack),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(IpNet, Layer),
        Remove(IpNet, Layer),
        /// Removes an existing membership (random removes would mostly miss).
        RemoveExisting(Index),
        SetRules(Vec<(u32, bool, Vec<IpNet>)>),
        /// `(insert?, net, layer)` changes, applied by `strategy`.
        Batch(Vec<(bool, IpNet, Layer)>, Recompute),
        /// The global mode.
        SetMode(Mode),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (net(), layer()).prop_map(|(n, l)| Step::Insert(n, l)),
            1 => (net(), layer()).prop_map(|(n, l)| Step::Remove(n, l)),
            3 => any::<Index>().prop_map(Step::RemoveExisting),
            1 => prop::collection::vec(
                (0u32..4, any::<bool>(), prop::collection::vec(net(), 0..3)),
                0..4
            )
            .prop_map(Step::SetRules),
            1 => (
                prop::collection::vec((any::<bool>(), net(), layer()), 0..8),
                prop_oneof![Just(Recompute::Auto), Just(Recompute::Full), Just(Recompute::Subtrees)],
            )
                .prop_map(|(c, s)| Step::Batch(c, s)),
            1 => prop_oneof![Just(Mode::Enforce), Just(Mode::Monitor)].prop_map(Step::SetMode),
        ]
    }

    /// Runs one step on both the state and the membership model.
    fn run(s: &mut ListState, model: &mut BTreeSet<(IpNet, Layer)>, step: &Step) -> Vec<TableOp> {
        match step {
            Step::Insert(net, l) => {
                model.insert((net.trunc(), *l));
                s.insert(*net, *l)
            }
            Step::Remove(net, l) => {
                model.remove(&(net.trunc(), *l));
                s.remove(*net, *l)
            }
            Step::RemoveExisting(i) => {
                let Some(&(net, l)) = (!model.is_empty())
                    .then(|| model.iter().nth(i.index(model.len())))
                    .flatten()
                else {
                    return Vec::new();
                };
                model.remove(&(net, l));
                s.remove(net, l)
            }
            Step::SetRules(rules) => {
                model.retain(|(_, l)| !matches!(l, Layer::Rule { .. }));
                for (index, deny, nets) in rules {
                    for net in nets {
                        model.insert((
                            net.trunc(),
                            Layer::Rule {
                                index: *index,
                                deny: *deny,
                            },
                        ));
                    }
                }
                let rules: Vec<RuleNets> = rules
                    .iter()
                    .map(|(i, d, nets)| (*i, *d, None, nets.clone()))
                    .collect();
                s.set_rules(&rules)
            }
            Step::Batch(changes, strategy) => {
                for &(ins, net, l) in changes {
                    if ins {
                        model.insert((net.trunc(), l));
                    } else {
                        model.remove(&(net.trunc(), l));
                    }
                }
                s.apply_with(
                    changes.iter().map(|&(ins, net, l)| {
                        if ins {
                            Change::Insert(net, l)
                        } else {
                            Change::Remove(net, l)
                        }
                    }),
                    *strategy,
                )
            }
            Step::SetMode(mode) => s.set_mode(*mode),
        }
    }

    fn op_net(op: &TableOp) -> IpNet {
        match op {
            TableOp::Write(net, _) | TableOp::Delete(net) => *net,
            TableOp::ScopeWrite(..) | TableOp::ScopeDelete(_) => unreachable!("no scopes here"),
        }
    }

    fn replay(w: &mut BTreeMap<IpNet, ListEntry>, op: &TableOp) {
        match op {
            TableOp::Write(net, e) => {
                w.insert(*net, *e);
            }
            TableOp::Delete(net) => {
                w.remove(net);
            }
            TableOp::ScopeWrite(..) | TableOp::ScopeDelete(_) => unreachable!("no scopes here"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn incremental_trie_agrees_with_precedence_rebuild_and_its_ops(
            steps in prop::collection::vec(step(), 1..24),
            probes in prop::collection::vec(addr(), 1..24),
        ) {
            let mut s = ListState::new();
            let mut model = BTreeSet::new();
            let mut replayed = BTreeMap::new();
            for step in &steps {
                let before = s.written().clone();
                let ops = run(&mut s, &mut model, step);
                let after = s.written();

                // (d) writes, then deletes.
                let first_delete = ops.iter().position(|o| matches!(o, TableOp::Delete(_)));
                prop_assert!(
                    ops[first_delete.unwrap_or(ops.len())..]
                        .iter()
                        .all(|o| matches!(o, TableOp::Delete(_))),
                    "write after delete in {:?}", ops
                );

                // (c) the ops replayed give `written`; every address sees its old or its
                // new decision after each single op.
                let mut watched = probes.clone();
                watched.extend(ops.iter().flat_map(|o| {
                    let net = op_net(o);
                    [net.network(), net.broadcast()]
                }));
                for op in &ops {
                    replay(&mut replayed, op);
                    for &a in &watched {
                        let now = lpm(&replayed, a);
                        prop_assert!(
                            now == lpm(&before, a) || now == lpm(after, a),
                            "{} sees {:?} during {:?}", a, now, ops
                        );
                    }
                }
                prop_assert_eq!(&replayed, after);

                // (a) the table and `decide` agree with the naive precedence.
                let monitor_all = s.mode() == Mode::Monitor;
                for &a in &watched {
                    let want = naive_in(&model, a, monitor_all);
                    prop_assert_eq!(
                        lpm(after, a),
                        want.map_or(NO_DECISION, |(_, e)| e),
                        "address {} after {:?}", a, step
                    );
                    prop_assert_eq!(s.decide(a), want, "decide {} after {:?}", a, step);
                }

                // (b) incremental == a full rebuild of the same memberships.
                let mut scratch = ListState::new();
                prop_assert!(scratch.set_mode(s.mode()).is_empty());
                scratch.apply_with(
                    model.iter().map(|&(net, l)| Change::Insert(net, l)),
                    Recompute::Full,
                );
                prop_assert_eq!(scratch.written(), after);
                prop_assert_eq!(s.len(), model.iter().map(|(net, _)| net).collect::<BTreeSet<_>>().len());
                for &(net, l) in &model {
                    prop_assert!(s.contains(net, l));
                }
            }
        }
    }
}

/// The lists alone (`compile`): whitelist > longest gray/black, black on a tie.
mod lists {
    use super::*;
    use crate::{config::Lists, model::ListKind};

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn lists(white: &[&str], gray: &[&str], black: &[&str]) -> Lists {
        Lists {
            whitelist: nets(white),
            graylist: nets(gray),
            blacklist: nets(black),
            ..Lists::default()
        }
    }

    fn decided(c: &Compiled, ip: &str) -> Option<ListKind> {
        longest_match(c, ip.parse().unwrap()).and_then(|(_, e)| ListKind::from_code(e.list))
    }

    #[test]
    fn more_specific_whitelist_wins_over_blacklist() {
        let c = compile(&lists(&["10.1.0.0/16"], &[], &["10.0.0.0/8"]));
        assert_eq!(decided(&c, "10.1.2.3"), Some(ListKind::Whitelist));
        assert_eq!(decided(&c, "10.2.0.1"), Some(ListKind::Blacklist));
    }

    #[test]
    fn less_specific_whitelist_wins_over_blacklist() {
        let c = compile(&lists(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.9.9.9/32"],
            &["10.1.0.0/16", "2001:db8:bad::/48"],
        ));
        assert_eq!(decided(&c, "10.1.2.3"), Some(ListKind::Whitelist));
        assert_eq!(decided(&c, "10.9.9.9"), Some(ListKind::Whitelist));
        assert_eq!(decided(&c, "2001:db8:bad::1"), Some(ListKind::Whitelist));
        // The covered entries are not written at all.
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn identical_prefix_blacklist_beats_graylist_and_whitelist_beats_both() {
        let c = compile(&lists(&[], &["192.0.2.0/24"], &["192.0.2.0/24"]));
        assert_eq!(decided(&c, "192.0.2.1"), Some(ListKind::Blacklist));
        let c = compile(&lists(
            &["192.0.2.0/24"],
            &["192.0.2.0/24"],
            &["192.0.2.0/24"],
        ));
        assert_eq!(decided(&c, "192.0.2.1"), Some(ListKind::Whitelist));
    }

    #[test]
    fn longest_of_gray_and_black_decides() {
        let c = compile(&lists(&[], &["198.51.100.0/24"], &["198.51.0.0/16"]));
        assert_eq!(decided(&c, "198.51.100.1"), Some(ListKind::Graylist));
        assert_eq!(decided(&c, "198.51.1.1"), Some(ListKind::Blacklist));
        assert_eq!(decided(&c, "203.0.113.1"), None);
    }

    #[test]
    fn families_do_not_shadow_each_other() {
        // ::/0 whitelisted must not whitelist IPv4 sources.
        let c = compile(&lists(&["::/0"], &[], &["0.0.0.0/0"]));
        assert_eq!(decided(&c, "192.0.2.1"), Some(ListKind::Blacklist));
        assert_eq!(decided(&c, "2001:db8::1"), Some(ListKind::Whitelist));
    }

    #[test]
    fn list_entries_have_rule_id_zero() {
        // Only rules carry an id (index + 1); a list entry is explained by its list.
        let c = compile(&lists(
            &["203.0.113.0/24"],
            &["198.51.100.0/24"],
            &["192.0.2.0/24", "198.51.100.7/32"],
        ));
        let e = c[&"198.51.100.7/32".parse::<IpNet>().unwrap()];
        assert_eq!((e.list, e.rule_id), (LIST_BLACKLIST, 0));
        assert_eq!(c.len(), 4);
        assert!(c.values().all(|e| e.rule_id == 0));
    }

    /// The compiled table must give, for every address, the decision of the naive rule:
    /// any covering whitelist entry wins, else the longest gray/black match (black on a tie).
    fn naive(l: &Lists, ip: IpAddr) -> Option<ListKind> {
        if l.whitelist.iter().any(|n| n.contains(&ip)) {
            return Some(ListKind::Whitelist);
        }
        let best = |v: &Vec<IpNet>| {
            v.iter()
                .filter(|n| n.contains(&ip))
                .map(|n| n.prefix_len())
                .max()
        };
        match (best(&l.graylist), best(&l.blacklist)) {
            (None, None) => None,
            (Some(_), None) => Some(ListKind::Graylist),
            (None, Some(_)) => Some(ListKind::Blacklist),
            (Some(g), Some(b)) if g > b => Some(ListKind::Graylist),
            _ => Some(ListKind::Blacklist),
        }
    }

    mod properties {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::*;

        // A small address space so that random prefixes and addresses overlap often.
        fn v4_net() -> impl Strategy<Value = IpNet> {
            (any::<u8>(), 0u8..=32).prop_map(|(b, len)| {
                IpNet::new(IpAddr::V4(Ipv4Addr::new(10, b & 0x0f, b >> 4, b)), len)
                    .unwrap()
                    .trunc()
            })
        }
        fn v6_net() -> impl Strategy<Value = IpNet> {
            (any::<u8>(), 0u8..=128).prop_map(|(b, len)| {
                let a = Ipv6Addr::new(0x2001, 0xdb8, u16::from(b & 3), 0, 0, 0, 0, u16::from(b));
                IpNet::new(IpAddr::V6(a), len).unwrap().trunc()
            })
        }
        fn net() -> impl Strategy<Value = IpNet> {
            prop_oneof![v4_net(), v6_net()]
        }
        fn addr() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u8>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, b & 0x0f, b >> 4, b))),
                any::<u8>().prop_map(|b| IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    u16::from(b & 3),
                    0,
                    0,
                    0,
                    0,
                    u16::from(b)
                ))),
            ]
        }

        proptest! {
            #[test]
            fn compiled_trie_agrees_with_naive_precedence(
                white in prop::collection::vec(net(), 0..4),
                gray in prop::collection::vec(net(), 0..8),
                black in prop::collection::vec(net(), 0..8),
                probes in prop::collection::vec(addr(), 1..32),
            ) {
                let l = Lists { whitelist: white, graylist: gray, blacklist: black, ..Lists::default() };
                let c = compile(&l);
                for ip in probes {
                    let got = longest_match(&c, ip).and_then(|(_, e)| ListKind::from_code(e.list));
                    prop_assert_eq!(got, naive(&l, ip), "address {}", ip);
                }
            }
        }
    }
}

/// Port- and protocol-scoped memberships: the compiled tables, laid out in memory and
/// looked up with the XDP program's own code, answer every packet as the precedence over
/// the memberships whose scope holds it.
mod scoped {
    use ipguard_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
    use proptest::{prelude::*, sample::Index};

    use super::*;
    use crate::{
        dataplane::{Layout, MemoryStore},
        model::{Proto, Scope},
    };

    fn scopes() -> Vec<Scope> {
        vec![
            Scope::new(Some(Proto::Tcp), vec![22]).unwrap(),
            Scope::new(Some(Proto::Tcp), vec![]).unwrap(),
            Scope::new(Some(Proto::Udp), vec![53, 22]).unwrap(),
            Scope::new(Some(Proto::Icmp), vec![]).unwrap(),
            Scope::new(None, vec![25]).unwrap(),
        ]
    }

    /// The memberships that count for a packet of `proto` to `port`.
    fn holding(
        model: &BTreeSet<(IpNet, Layer, Option<usize>)>,
        proto: u8,
        port: u16,
    ) -> BTreeSet<(IpNet, Layer)> {
        let all = scopes();
        model
            .iter()
            .filter(|(_, _, s)| s.is_none_or(|s| all[s].matches(proto, port)))
            .map(|&(net, l, _)| (net, l))
            .collect()
    }

    const PACKETS: [(u8, u16); 9] = [
        (PROTO_TCP, 22),
        (PROTO_TCP, 80),
        (PROTO_TCP, 25),
        (PROTO_TCP, 0),
        (PROTO_UDP, 53),
        (PROTO_UDP, 25),
        (PROTO_UDP, 123),
        (PROTO_ICMP, 0),
        (47, 0),
    ];

    /// Builds `members` (prefix, layer, scope index) in a new state.
    fn build(members: &[(&str, Layer, Option<usize>)]) -> (ListState, Layout<MemoryStore>) {
        let mut s = ListState::new();
        let ids: Vec<ScopeId> = scopes()
            .iter()
            .map(|sc| s.intern_scope(sc).unwrap())
            .collect();
        let ops = s.apply(members.iter().map(|&(net, l, sc)| match sc {
            None => Change::Insert(n(net), l),
            Some(i) => Change::InsertScoped(n(net), l, ids[i]),
        }));
        let mut t = Layout::new(MemoryStore::default());
        t.apply(&ops).unwrap();
        (s, t)
    }

    #[test]
    fn allow_22_from_the_admin_net_only_and_deny_25_from_everywhere() {
        let (s, t) = build(&[
            ("192.0.2.0/24", allow(0), Some(0)),
            ("0.0.0.0/0", deny(1), Some(0)),
            ("0.0.0.0/0", deny(2), Some(4)),
            ("198.51.100.7/32", Layer::Black, None),
            ("203.0.113.9/32", Layer::White, None),
        ]);
        let v = |addr: &str, proto, port| t.store().verdict(ip(addr), proto, port);
        assert_eq!(v("192.0.2.5", PROTO_TCP, 22), LIST_RULE_ALLOW);
        assert_eq!(v("10.1.2.3", PROTO_TCP, 22), LIST_RULE_DENY);
        assert_eq!(v("10.1.2.3", PROTO_TCP, 443), ipguard_common::LIST_NONE);
        assert_eq!(v("10.1.2.3", PROTO_UDP, 25), LIST_RULE_DENY);
        assert_eq!(v("192.0.2.5", PROTO_TCP, 25), LIST_RULE_DENY);
        // Lists keep their precedence: the blacklist drops everything, the whitelist
        // passes everything.
        assert_eq!(v("198.51.100.7", PROTO_TCP, 443), LIST_BLACKLIST);
        assert_eq!(v("198.51.100.7", PROTO_TCP, 22), LIST_BLACKLIST);
        assert_eq!(v("203.0.113.9", PROTO_TCP, 22), LIST_WHITELIST);
        assert_eq!(v("203.0.113.9", PROTO_TCP, 25), LIST_WHITELIST);
        // The blacklisted and whitelisted hosts need no group: their own verdict holds
        // for every packet.
        assert_eq!(s.written()[&n("198.51.100.7/32")].scope, 0);
        assert_eq!(s.written()[&n("203.0.113.9/32")].scope, 0);
        // decide_for names the rule and the prefix.
        assert_eq!(
            s.decide_for(ip("10.1.2.3"), PROTO_TCP, 22),
            Some((n("0.0.0.0/0"), entry(LIST_RULE_DENY, 2)))
        );
        assert_eq!(
            s.decide_for(ip("192.0.2.5"), PROTO_TCP, 22),
            Some((n("192.0.2.0/24"), entry(LIST_RULE_ALLOW, 1)))
        );
        assert_eq!(s.decide_for(ip("10.1.2.3"), PROTO_TCP, 443), None);
    }

    #[test]
    fn prefixes_that_scopes_do_not_touch_have_no_group_and_groups_are_shared_and_freed() {
        let (mut s, mut t) = build(&[
            ("192.0.2.0/24", deny(0), Some(0)),
            ("198.51.100.0/24", deny(0), Some(0)),
            ("203.0.113.0/24", Layer::Black, None),
        ]);
        let a = s.written()[&n("192.0.2.0/24")].scope;
        assert_ne!(a, 0);
        assert_eq!(
            s.written()[&n("198.51.100.0/24")].scope,
            a,
            "one group for both"
        );
        assert_eq!(s.written()[&n("203.0.113.0/24")].scope, 0);
        assert_eq!(s.scopes().len(), 1);
        assert_eq!(t.scopes(), &s.scopes());
        let ids: Vec<ScopeId> = scopes()
            .iter()
            .map(|sc| s.intern_scope(sc).unwrap())
            .collect();
        let mut ops = s.apply([
            Change::RemoveScoped(n("192.0.2.0/24"), deny(0), ids[0]),
            Change::RemoveScoped(n("198.51.100.0/24"), deny(0), ids[0]),
        ]);
        assert!(
            matches!(ops.last(), Some(TableOp::ScopeDelete(_))),
            "the group goes last: {ops:?}"
        );
        t.apply(&ops).unwrap();
        assert!(s.scopes().is_empty());
        assert!(t.scopes().is_empty());
        assert!(t.store().scopes.is_empty());
        // Again: the freed id is used again, its cells written before the entries.
        ops = s.apply([Change::InsertScoped(n("192.0.2.0/24"), allow(0), ids[3])]);
        assert!(
            matches!(ops.first(), Some(TableOp::ScopeWrite(..))),
            "{ops:?}"
        );
        t.apply(&ops).unwrap();
        assert_eq!(
            t.store().verdict(ip("192.0.2.1"), PROTO_ICMP, 0),
            LIST_RULE_ALLOW
        );
        assert_eq!(
            t.store().verdict(ip("192.0.2.1"), PROTO_TCP, 0),
            ipguard_common::LIST_NONE
        );
    }

    #[test]
    fn a_sync_writes_the_groups_and_clears_stale_ones() {
        let (s, _) = build(&[
            ("2001:db8::/32", deny(0), Some(1)),
            ("::/0", allow(1), Some(3)),
        ]);
        let mut t = Layout::new(MemoryStore::default());
        let stale = ipguard_common::ScopeKey {
            group: 99,
            port: 0,
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        t.apply(&[TableOp::ScopeWrite(stale, LIST_BLACKLIST)])
            .unwrap();
        t.sync(s.written(), &s.scopes()).unwrap();
        assert!(!t.store().scopes.contains_key(&stale));
        assert_eq!(
            t.store().verdict(ip("2001:db8::1"), PROTO_TCP, 9),
            LIST_RULE_DENY
        );
        assert_eq!(
            t.store().verdict(ip("2001:db9::1"), PROTO_ICMP, 0),
            LIST_RULE_ALLOW
        );
        assert_eq!(
            t.store().verdict(ip("2001:db9::1"), PROTO_TCP, 9),
            ipguard_common::LIST_NONE
        );
    }

    fn addr() -> impl Strategy<Value = IpAddr> {
        // Few distinct addresses, so that prefixes overlap often.
        prop_oneof![
            (0u32..4, 0u32..4).prop_map(|(a, b)| IpAddr::from([10, a as u8, 0, b as u8 * 64])),
            (0u16..3).prop_map(|a| IpAddr::from([0x2001, 0xdb8, a, 0, 0, 0, 0, 1])),
        ]
    }

    fn net() -> impl Strategy<Value = IpNet> {
        (addr(), 0u8..=130).prop_map(|(a, len)| {
            let max = if a.is_ipv4() { 32 } else { 128 };
            let len = match len % 4 {
                0 => 0,
                1 => len.min(max),
                _ => (len % (max + 1)).max(if a.is_ipv4() { 8 } else { 32 }),
            };
            IpNet::new(a, len).unwrap().trunc()
        })
    }

    fn layer() -> impl Strategy<Value = Layer> {
        prop_oneof![
            Just(Layer::White),
            Just(Layer::Gray),
            Just(Layer::Black),
            (0u32..3, any::<bool>()).prop_map(|(index, deny)| Layer::Rule { index, deny }),
            Just(Layer::MonitorBlack),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Change(bool, IpNet, Layer, Option<usize>),
        RemoveExisting(Index),
        Batch(Vec<(bool, IpNet, Layer, Option<usize>)>),
        SetMode(Mode),
    }

    fn step() -> impl Strategy<Value = Step> {
        let scope = prop_oneof![Just(None), (0usize..5).prop_map(Some)];
        prop_oneof![
            5 => (any::<bool>(), net(), layer(), scope.clone())
                .prop_map(|(i, n, l, s)| Step::Change(i, n, l, s)),
            2 => any::<Index>().prop_map(Step::RemoveExisting),
            1 => prop::collection::vec((any::<bool>(), net(), layer(), scope), 0..80)
                .prop_map(Step::Batch),
            1 => prop_oneof![Just(Mode::Enforce), Just(Mode::Monitor)].prop_map(Step::SetMode),
        ]
    }

    fn change(ids: &[ScopeId], ins: bool, net: IpNet, l: Layer, sc: Option<usize>) -> Change {
        match (ins, sc) {
            (true, None) => Change::Insert(net, l),
            (false, None) => Change::Remove(net, l),
            (true, Some(i)) => Change::InsertScoped(net, l, ids[i]),
            (false, Some(i)) => Change::RemoveScoped(net, l, ids[i]),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn scoped_tables_answer_every_packet_like_the_precedence(
            steps in prop::collection::vec(step(), 1..16),
            probes in prop::collection::vec(addr(), 1..6),
        ) {
            let mut s = ListState::new();
            let ids: Vec<ScopeId> =
                scopes().iter().map(|sc| s.intern_scope(sc).unwrap()).collect();
            let mut t = Layout::new(MemoryStore::default());
            let mut model: BTreeSet<(IpNet, Layer, Option<usize>)> = BTreeSet::new();
            let edit = |model: &mut BTreeSet<_>, ins: bool, net: IpNet, l, sc| {
                if ins {
                    model.insert((net.trunc(), l, sc));
                } else {
                    model.remove(&(net.trunc(), l, sc));
                }
            };
            for step in &steps {
                let before: Vec<ListCode> = probes
                    .iter()
                    .flat_map(|&a| PACKETS.iter().map(move |&(p, port)| (a, p, port)))
                    .map(|(a, p, port)| t.store().verdict(a, p, port))
                    .collect();
                let ops = match step {
                    Step::Change(ins, net, l, sc) => {
                        edit(&mut model, *ins, *net, *l, *sc);
                        s.apply([change(&ids, *ins, *net, *l, *sc)])
                    }
                    Step::RemoveExisting(i) => {
                        let Some(&(net, l, sc)) = (!model.is_empty())
                            .then(|| model.iter().nth(i.index(model.len())))
                            .flatten()
                        else {
                            continue;
                        };
                        edit(&mut model, false, net, l, sc);
                        s.apply([change(&ids, false, net, l, sc)])
                    }
                    Step::Batch(changes) => {
                        for &(ins, net, l, sc) in changes {
                            edit(&mut model, ins, net, l, sc);
                        }
                        s.apply(changes.iter().map(|&(ins, net, l, sc)| change(&ids, ins, net, l, sc)))
                    }
                    Step::SetMode(mode) => s.set_mode(*mode),
                };
                let monitor_all = s.mode() == Mode::Monitor;
                let want: Vec<ListCode> = probes
                    .iter()
                    .flat_map(|&a| PACKETS.iter().map(move |&(p, port)| (a, p, port)))
                    .map(|(a, p, port)| {
                        naive_in(&holding(&model, p, port), a, monitor_all)
                            .map_or(ipguard_common::LIST_NONE, |(_, e)| e.list)
                    })
                    .collect();
                // Op by op, every packet sees its verdict from before or after the step.
                for op in &ops {
                    t.apply(std::slice::from_ref(op)).unwrap();
                    let mut k = 0;
                    for &a in &probes {
                        for &(p, port) in &PACKETS {
                            let now = t.store().verdict(a, p, port);
                            prop_assert!(
                                now == before[k] || now == want[k],
                                "{} {}/{} sees {} during {:?}", a, p, port, now, ops
                            );
                            k += 1;
                        }
                    }
                }
                let mut k = 0;
                for &a in &probes {
                    for &(p, port) in &PACKETS {
                        prop_assert_eq!(
                            t.store().verdict(a, p, port), want[k],
                            "{} {}/{} after {:?}", a, p, port, step
                        );
                        let naive = naive_in(&holding(&model, p, port), a, monitor_all);
                        prop_assert_eq!(
                            s.decide_for(a, p, port).map(|(_, e)| e),
                            naive.map(|(_, e)| e),
                            "decide_for {} {}/{}", a, p, port
                        );
                        k += 1;
                    }
                }
                prop_assert_eq!(t.scopes(), &s.scopes());
                prop_assert_eq!(&t.store().scopes.iter().map(|(k, v)| (*k, *v)).collect::<Scopes>(), &s.scopes());
            }
        }
    }
}
