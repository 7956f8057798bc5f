use std::time::Duration;

use super::*;
use crate::{
    config::{Escalation, ReportRule},
    model::{ListKind, Origin, Ts},
    policy::engine::{Command, Engine, Outcome},
    testing::{escalation, ip, net, H, S, T0},
};

const RULE: ReportRule = ReportRule {
    count: 2,
    window: Duration::from_secs(60),
    duration: Duration::from_secs(600),
};

fn esc() -> Escalation {
    Escalation {
        ban_growth: 2.0,
        grace_violations: 1,
        ..escalation()
    }
}

/// A daemon start: config entries first, then the persisted state.
fn start(state: EngineState) -> Engine {
    let mut e = Engine::new(esc(), Some(RULE));
    e.add(
        ListKind::Whitelist,
        net("10.0.0.0/8"),
        None,
        "office".into(),
        Origin::Config,
        T0,
    );
    e.restore(state);
    e.take_journal();
    e
}

/// Drains the engine's journal into the store, as the daemon does after each batch.
fn sync(e: &mut Engine, store: &mut Store) {
    store.append(&e.take_journal()).unwrap();
}

/// Entries that expire and that do not, from the API, violations and reports; offenders
/// with strikes, grace, ban history and pending reports. Returns the moment it ends.
fn populate(e: &mut Engine, store: &mut Store) -> Ts {
    let mut now = T0;
    e.add(
        ListKind::Blacklist,
        net("203.0.113.0/24"),
        None,
        "scanner".into(),
        Origin::Api,
        now,
    );
    e.add(
        ListKind::Graylist,
        net("2001:db8:bad::/48"),
        Some(3 * H),
        "noisy".into(),
        Origin::Api,
        now,
    );
    sync(e, store);
    let repeat = ip("192.0.2.1");
    assert!(matches!(
        e.violation(repeat, "syn".into(), now).0,
        Outcome::Forgiven { .. }
    ));
    e.violation(repeat, "syn".into(), now.plus(S));
    sync(e, store);
    now = now.plus(2 * H);
    e.tick(now, |_| None);
    sync(e, store);
    // The second strike: graylisted for twice the base (ban growth).
    let (o, _) = e.violation(repeat, "syn".into(), now);
    assert!(
        matches!(
            o,
            Outcome::Banned {
                list: ListKind::Graylist,
                strikes: 2,
                ..
            }
        ),
        "{o:?}"
    );
    // A report ban (a strike too) and a pending report.
    e.report(ip("198.51.100.7"), "login".into(), None, now);
    e.report(ip("198.51.100.7"), "login".into(), None, now.plus(S));
    e.report(ip("2001:db8::9"), "login".into(), None, now);
    sync(e, store);
    now.plus(S)
}

#[test]
fn round_trip_through_the_store_restores_state_and_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(state, EngineState::default());
    let mut e = start(state);
    let now = populate(&mut e, &mut store);
    let snap = e.snapshot();
    assert_eq!(snap.entries.len(), 4, "{snap:?}");
    assert_eq!(snap.offenders.len(), 3, "{snap:?}");
    store.compact(&snap).unwrap();
    drop(store);

    let (_store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(state, snap);
    let mut r = start(state);
    assert_eq!(r.snapshot(), snap);
    assert_eq!(r.next_deadline(), e.next_deadline());
    assert!(r.whitelisted(ip("10.1.1.1")).is_some(), "config entry kept");

    // The report ban is back, and the pending report still counts.
    assert!(r.ban_of(ip("198.51.100.7")).is_some());
    let (o, _) = r.report(ip("2001:db8::9"), "login".into(), None, now.plus(10 * S));
    assert!(
        matches!(
            o,
            Outcome::Banned {
                list: ListKind::Graylist,
                ..
            }
        ),
        "{o:?}"
    );

    // The restored graylist expires exactly at its time.
    let gray = net("2001:db8:bad::/48");
    let until = r.entry(ListKind::Graylist, gray).unwrap().until.unwrap();
    assert_eq!(until, T0.plus(3 * H));
    let before = r.tick(until.minus(Duration::from_millis(1)), |_| None);
    assert!(!before.contains(&Command::Unblock {
        net: gray,
        list: ListKind::Graylist
    }));
    assert!(r.tick(until, |_| None).contains(&Command::Unblock {
        net: gray,
        list: ListKind::Graylist
    }));

    // Strikes from before the restart count: the third one blacklists.
    let repeat = ip("192.0.2.1");
    let later = now.plus(3 * H);
    r.tick(later, |_| None);
    assert_eq!(r.strikes(repeat, later), 2);
    let (o, _) = r.violation(repeat, "syn".into(), later);
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
}

#[test]
fn the_journal_alone_restores_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, state) = Store::open(dir.path()).unwrap();
    let mut e = start(state);
    let now = populate(&mut e, &mut store);
    e.tick(now.plus(300 * H), |_| None);
    sync(&mut e, &mut store);
    assert!(store.journal_len() > 0);
    assert!(!dir.path().join(STATE_FILE).exists(), "never compacted");
    let lines = store.journal_len();
    drop(store);

    let (store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(store.journal_len(), lines);
    assert_eq!(state, e.snapshot());
    assert_eq!(start(state).snapshot(), e.snapshot());
}

#[test]
fn compaction_then_more_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, state) = Store::open(dir.path()).unwrap();
    let mut e = start(state);
    let now = populate(&mut e, &mut store);
    store.compact(&e.snapshot()).unwrap();
    assert_eq!((store.journal_len(), store.journal_bytes()), (0, 0));
    assert_eq!(
        fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
        0
    );

    e.remove(ListKind::Blacklist, net("203.0.113.0/24"));
    e.add(
        ListKind::Blacklist,
        net("192.0.2.128/25"),
        Some(H),
        "later".into(),
        Origin::Api,
        now,
    );
    e.violation(ip("192.0.2.200"), "syn".into(), now);
    e.tick(now.plus(1000 * H), |_| None);
    sync(&mut e, &mut store);
    assert!(store.journal_len() >= 4, "{}", store.journal_len());
    assert_eq!(
        store.journal_bytes(),
        fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len()
    );
    drop(store);

    let (mut store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(state, e.snapshot());
    // And once more through a second compaction.
    store.compact(&state).unwrap();
    drop(store);
    assert_eq!(Store::open(dir.path()).unwrap().1, e.snapshot());
}

/// Builds a store whose journal holds `ops` (one append each) on an empty snapshot.
fn journal_of(dir: &Path, ops: &[JournalOp]) {
    let (mut store, _) = Store::open(dir).unwrap();
    for op in ops {
        store.append(std::slice::from_ref(op)).unwrap();
    }
}

/// The ops of [`populate`], as journaled, plus a last one that changes the state.
fn sample_ops() -> Vec<JournalOp> {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    let mut e = Engine::new(esc(), Some(RULE));
    populate(&mut e, &mut store);
    e.add(
        ListKind::Graylist,
        net("192.0.2.77/32"),
        Some(H),
        "the last one".into(),
        Origin::Api,
        T0,
    );
    let text = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
    let mut ops: Vec<JournalOp> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    ops.extend(e.take_journal());
    ops
}

#[test]
fn a_torn_last_line_gives_the_state_before_or_after_it() {
    let ops = sample_ops();
    let (last, earlier) = ops.split_last().unwrap();
    let mut before = EngineState::default();
    before.replay(earlier.iter().cloned());
    let mut after = before.clone();
    after.apply(last.clone());
    assert_ne!(before, after);

    let full = tempfile::tempdir().unwrap();
    journal_of(full.path(), &ops);
    let data = fs::read(full.path().join(JOURNAL_FILE)).unwrap();
    let start_of_last = data[..data.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    for cut in start_of_last..=data.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JOURNAL_FILE), &data[..cut]).unwrap();
        let (mut store, state) = Store::open(dir.path())
            .unwrap_or_else(|e| panic!("cut at {cut} of {}: {e}", data.len()));
        let expected = if cut == data.len() { &after } else { &before };
        assert_eq!(&state, expected, "cut at {cut} of {}", data.len());
        // The torn tail is gone from the file, so the next line starts cleanly.
        assert_eq!(
            fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
            if cut == data.len() {
                cut as u64
            } else {
                start_of_last as u64
            }
        );
        store.append(std::slice::from_ref(last)).unwrap();
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().1, after, "cut at {cut}");
    }
}

#[test]
fn corruption_in_the_middle_is_an_error_naming_file_and_line() {
    let ops = sample_ops();
    let dir = tempfile::tempdir().unwrap();
    journal_of(dir.path(), &ops);
    let path = dir.path().join(JOURNAL_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let damaged = lines[1].replacen("\"", "", 1);
    lines[1] = &damaged;
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Journal { line: 2, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:2: ", path.display())), "{msg}");

    // A line that is complete but not JSON, even the last one, is not a torn write.
    fs::write(&path, format!("{}\nnot json\n", lines[0])).unwrap();
    let msg = Store::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(&format!("{}:2: ", path.display())), "{msg}");

    // A damaged snapshot names the snapshot.
    fs::write(&path, "").unwrap();
    let state = dir.path().join(STATE_FILE);
    fs::write(&state, r#"{"version":1,"entries":[{"list":"purple"}]"#).unwrap();
    let msg = Store::open(dir.path()).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}: ", state.display())), "{msg}");
    fs::write(&state, r#"{"version":7,"new":"format"}"#).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Version { found: 7, .. }),
        "{err:?}"
    );
}

#[test]
fn replaying_ops_the_snapshot_already_holds_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, state) = Store::open(dir.path()).unwrap();
    let mut e = start(state);
    let now = populate(&mut e, &mut store);
    e.remove(ListKind::Blacklist, net("203.0.113.0/24"));
    e.tick(now.plus(1000 * H), |_| None); // expiries and forgetting
    sync(&mut e, &mut store);
    let journal = fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
    let snap = e.snapshot();

    // A crash between the rename and the truncation: new snapshot, old journal.
    store.compact(&snap).unwrap();
    drop(store);
    fs::write(dir.path().join(JOURNAL_FILE), &journal).unwrap();
    let (store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(state, snap);
    drop(store);

    // The same ops twice over.
    let twice = [journal.clone(), journal].concat();
    fs::write(dir.path().join(JOURNAL_FILE), &twice).unwrap();
    assert_eq!(Store::open(dir.path()).unwrap().1, snap);

    // A leftover temp snapshot (crash before the rename) is ignored and removed.
    fs::write(dir.path().join(TEMP_FILE), "{\"version\":1,").unwrap();
    assert_eq!(Store::open(dir.path()).unwrap().1, snap);
    assert!(!dir.path().join(TEMP_FILE).exists());
}

#[test]
fn config_entries_are_not_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, state) = Store::open(dir.path()).unwrap();
    let mut e = start(state);
    e.add(
        ListKind::Blacklist,
        net("198.18.0.0/15"),
        Some(H),
        "config".into(),
        Origin::Config,
        T0,
    );
    e.add(
        ListKind::Graylist,
        net("192.0.2.0/24"),
        None,
        "api".into(),
        Origin::Api,
        T0,
    );
    sync(&mut e, &mut store);
    let journal = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
    assert!(!journal.contains("\"config\""), "{journal}");
    store.compact(&e.snapshot()).unwrap();
    let snapshot = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    assert!(!snapshot.contains("\"config\""), "{snapshot}");
    drop(store);

    // The next start's config no longer has the blacklist entry: it stays gone.
    let (_store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(state.entries.len(), 1);
    assert_eq!(state.entries[0].origin, Origin::Api);
    let r = start(state);
    assert!(r.entry(ListKind::Blacklist, net("198.18.0.0/15")).is_none());
    assert!(r.entry(ListKind::Graylist, net("192.0.2.0/24")).is_some());
}

#[test]
fn open_creates_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("var/lib/ipguard");
    let (store, state) = Store::open(&nested).unwrap();
    assert_eq!(state, EngineState::default());
    assert_eq!(store.dir(), nested);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&nested), 0o700);
    assert_eq!(mode(&nested.join(JOURNAL_FILE)), 0o600);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    drop(store);
    Store::open(dir.path()).unwrap();
}

#[test]
fn compaction_is_due_past_the_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    assert!(!store.needs_compaction());
    let op = JournalOp::Forget {
        ip: ip("192.0.2.1"),
    };
    store.append(&vec![op; 1000]).unwrap();
    assert_eq!(store.journal_len(), 1000);
    assert!(!store.needs_compaction());
    store.lines = COMPACT_LINES;
    assert!(store.needs_compaction());
    assert!(store.needs_compaction_for(COMPACT_LINES / 2));
    assert!(!store.needs_compaction_for(COMPACT_LINES / 2 + 1));
}
