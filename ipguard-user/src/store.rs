//! The persisted policy state (S15): every entry the API or the policy made, its expiry,
//! and every offender's strikes and ban history survive a restart and a `kill -9` at any
//! moment. Config-origin entries are not stored: the config file brings them back.
//!
//! Two files in the state directory:
//! - `state.json`: the last full snapshot, `{"version":1,"entries":[..],"offenders":[..]}`;
//! - `journal.jsonl`: the [`JournalOp`]s made since that snapshot, one JSON object a line,
//!   appended by [`Store::append`] and fdatasynced once per call (write-ahead: the daemon
//!   appends a batch before it reports the batch done).
//!
//! [`Store::open`] loads the snapshot and replays the journal on top.
//!
//! # Why a crash at any moment leaves no torn state
//! - The snapshot is only ever replaced atomically: [`Store::compact`] writes
//!   `state.json.tmp` in the same directory, fsyncs it, renames it over `state.json` and
//!   fsyncs the directory. A reader sees the old snapshot or the new one, never a mix; a
//!   leftover temp file is deleted at the next open.
//! - Ops appended after the snapshot are in the journal. A crash mid-append can only cut the
//!   last line short (appends go to the end of the file): that line has no newline, so
//!   [`Store::open`] ignores it with a warning and cuts it off the file, which gives the
//!   state before that op; a complete line gives the state after it. Any other line that
//!   does not parse is real corruption, and an error naming the file and the line.
//! - Compaction writes the new snapshot *before* it truncates the journal. A crash between
//!   the rename and the truncation leaves a journal whose ops the snapshot already holds.
//!   Replaying them is harmless because every op carries the whole new value of one key
//!   and replay is last-writer-wins per key: `Put` upserts, `Remove` of an absent entry
//!   does nothing, `Offender` replaces, `Forget` of an absent offender does nothing. For
//!   each key the last op in the journal is the value the snapshot holds, so the result is
//!   the snapshot again.
//!
//! For that last argument the snapshot handed to [`Store::compact`] must be at least as new
//! as every op already appended, and no op older than it may be appended afterwards. The
//! daemon keeps it simple by doing, in the one task that owns the engine: drain
//! [`crate::policy::engine::Engine::take_journal`], [`Store::append`], then
//! `compact(&engine.snapshot())` when [`Store::needs_compaction_for`] says so and at a clean
//! shutdown.
//!
//! The journal is held under an exclusive `flock`, so a second daemon on the same
//! directory is refused instead of interleaving its lines with ours.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::policy::engine::{EngineState, JournalOp, PersistedEntry, PersistedOffender};

/// The snapshot's file name in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// Where [`Store::compact`] writes the next snapshot before renaming it into place.
const TEMP_FILE: &str = "state.json.tmp";
/// The snapshot format this version reads and writes.
pub const STATE_VERSION: u32 = 1;
/// Journal lines after which [`Store::needs_compaction`] says yes: replaying 100,000 ops
/// at start-up takes well under a second.
pub const COMPACT_LINES: u64 = 100_000;
/// Journal bytes after which [`Store::needs_compaction`] says yes.
pub const COMPACT_BYTES: u64 = 64 << 20;

/// What can go wrong with the state directory. Every message names the file (and, for the
/// journal, the line).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or the directory could not be created, read, written, synced or renamed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Another process (another ipguard daemon) holds the journal's lock.
    #[error("{} is locked by another process (is another ipguard daemon using this state directory?)", path.display())]
    Locked { path: PathBuf },
    /// The snapshot does not parse.
    #[error("{}: corrupt snapshot: {source}", path.display())]
    Snapshot {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The snapshot was written by an ipguard with another format.
    #[error("{}: snapshot format version {found}, this ipguard reads version {STATE_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    /// A journal line other than a torn last one does not parse.
    #[error("{}:{line}: corrupt journal entry: {source}", path.display())]
    Journal {
        path: PathBuf,
        /// 1-based.
        line: u64,
        source: serde_json::Error,
    },
    /// The state could not be encoded as JSON (not expected for the engine's types).
    #[error("cannot encode the state for {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The snapshot file as written.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    entries: &'a [PersistedEntry],
    offenders: &'a [PersistedOffender],
}

/// The snapshot file as read, once its [`Header`] says the version is ours.
#[derive(Deserialize)]
struct SnapshotIn {
    entries: Vec<PersistedEntry>,
    offenders: Vec<PersistedOffender>,
}

/// Read first, so a future format gets a version error rather than a parse error.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

/// The state directory, open and locked. See the module documentation.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal_path: PathBuf,
    /// Opened for appending and holding the `flock`.
    journal: File,
    lines: u64,
    bytes: u64,
    /// A failed append may have left part of a line behind `bytes`: cut it off before the
    /// next write, or the next line would be glued to it.
    dirty_tail: bool,
}

impl Store {
    /// Opens (creating) `dir`, loads `state.json` (the last snapshot) and replays
    /// `journal.jsonl` on top. A torn last journal line (from a crash mid-write) is ignored
    /// with a warning and cut off the file; any other corruption is an error naming the
    /// file and line.
    pub fn open(dir: &Path) -> Result<(Store, EngineState)> {
        let created = !dir.exists();
        // Bans and reasons are the operator's business only.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir))?;
        if created {
            // Or a crash could lose the new directory, and with it the first appends.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let journal_path = dir.join(JOURNAL_FILE);
        let journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&journal_path)
            .map_err(io_err("open", &journal_path))?;
        lock(&journal, &journal_path)?;

        // Left by a crash during compaction; `state.json` is still the one that counts.
        let temp = dir.join(TEMP_FILE);
        match fs::remove_file(&temp) {
            Ok(()) => tracing::warn!(path = %temp.display(), "removed an unfinished snapshot"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &temp)(e)),
        }

        let mut state = load_snapshot(&dir.join(STATE_FILE))?;

        let mut data = Vec::new();
        (&journal)
            .read_to_end(&mut data)
            .map_err(io_err("read", &journal_path))?;
        let (ops, complete) = parse_journal(&data, &journal_path)?;
        if complete < data.len() {
            tracing::warn!(
                path = %journal_path.display(),
                line = ops.lines + 1,
                bytes = data.len() - complete,
                "ignoring a torn last journal line (the daemon stopped in the middle of writing it)"
            );
            journal
                .set_len(complete as u64)
                .map_err(io_err("truncate", &journal_path))?;
            journal.sync_data().map_err(io_err("sync", &journal_path))?;
        }
        state.replay(ops.ops);
        // The journal may have just been created: make its directory entry durable too.
        sync_dir(dir)?;

        let store = Store {
            dir: dir.to_owned(),
            journal_path,
            journal,
            lines: ops.lines,
            bytes: complete as u64,
            dirty_tail: false,
        };
        Ok((store, state))
    }

    /// Appends ops to the journal (one JSON line each) and fdatasyncs once per call. When
    /// this returns an error the ops may or may not be in the journal; a [`Store::compact`]
    /// with the engine's current snapshot makes the store whole again.
    pub fn append(&mut self, ops: &[JournalOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(ops.len() * 160);
        for op in ops {
            serde_json::to_writer(&mut buf, op).map_err(|source| StoreError::Encode {
                path: self.journal_path.clone(),
                source,
            })?;
            buf.push(b'\n');
        }
        if self.dirty_tail {
            self.journal
                .set_len(self.bytes)
                .map_err(io_err("truncate", &self.journal_path))?;
            self.dirty_tail = false;
        }
        if let Err(e) = self.journal.write_all(&buf) {
            // Leave no partial line in the middle of the journal: cut back to the last
            // whole line now, or before the next write if that fails too.
            self.dirty_tail = self.journal.set_len(self.bytes).is_err();
            return Err(io_err("write", &self.journal_path)(e));
        }
        self.journal
            .sync_data()
            .map_err(io_err("sync", &self.journal_path))?;
        self.lines += ops.len() as u64;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Writes a full snapshot atomically (temp file in the same directory, fsync, rename,
    /// fsync the directory) and then truncates the journal. Call it with the engine's
    /// snapshot right after appending its journal: when the journal grows past
    /// [`COMPACT_LINES`] or [`COMPACT_BYTES`] ([`Store::needs_compaction`]) and at clean
    /// shutdown.
    pub fn compact(&mut self, state: &EngineState) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let temp = self.dir.join(TEMP_FILE);
        let mut buf = serde_json::to_vec(&SnapshotOut {
            version: STATE_VERSION,
            entries: &state.entries,
            offenders: &state.offenders,
        })
        .map_err(|source| StoreError::Encode {
            path: path.clone(),
            source,
        })?;
        buf.push(b'\n');
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io_err("create", &temp))?;
            f.write_all(&buf).map_err(io_err("write", &temp))?;
            f.sync_all().map_err(io_err("sync", &temp))?;
        }
        fs::rename(&temp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&self.dir)?;
        // Only now may the journal go: until the rename is durable it is what holds these
        // ops (see the module documentation for a crash between the two).
        self.journal
            .set_len(0)
            .map_err(io_err("truncate", &self.journal_path))?;
        self.journal
            .sync_all()
            .map_err(io_err("sync", &self.journal_path))?;
        self.lines = 0;
        self.bytes = 0;
        self.dirty_tail = false;
        Ok(())
    }

    /// Journal lines since the last snapshot.
    pub fn journal_len(&self) -> u64 {
        self.lines
    }

    /// Journal bytes since the last snapshot.
    pub fn journal_bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the journal has grown past [`COMPACT_LINES`] or [`COMPACT_BYTES`].
    pub fn needs_compaction(&self) -> bool {
        self.lines >= COMPACT_LINES || self.bytes >= COMPACT_BYTES
    }

    /// Whether to compact now, for a state of `records` entries and offenders: the journal
    /// is past the thresholds ([`Store::needs_compaction`]) and has at least twice as many
    /// lines as the snapshot would have records. A snapshot costs as much as the state is
    /// large, so this keeps its cost per appended op bounded however large the state grows,
    /// and a restart replays at most about three times the state.
    pub fn needs_compaction_for(&self, records: u64) -> bool {
        self.needs_compaction() && self.lines >= records.saturating_mul(2)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Takes the exclusive lock that keeps a second daemon off this state directory. The lock
/// belongs to the open file and goes with it, also when the process is killed.
fn lock(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock takes a descriptor that `file` keeps open for the call and no memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Err(StoreError::Locked {
            path: path.to_owned(),
        })
    } else {
        Err(io_err("lock", path)(err))
    }
}

/// Makes renames and new files in `dir` durable (their directory entries live in `dir`).
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

fn load_snapshot(path: &Path) -> Result<EngineState> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(EngineState::default()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let corrupt = |source| StoreError::Snapshot {
        path: path.to_owned(),
        source,
    };
    let header: Header = serde_json::from_slice(&data).map_err(corrupt)?;
    if header.version != STATE_VERSION {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found: header.version,
        });
    }
    let s: SnapshotIn = serde_json::from_slice(&data).map_err(corrupt)?;
    Ok(EngineState {
        entries: s.entries,
        offenders: s.offenders,
    })
}

struct Parsed {
    ops: Vec<JournalOp>,
    /// Complete lines, blank ones included.
    lines: u64,
}

/// Parses the complete (newline-terminated) lines of `data`; returns them and the length
/// of the complete part. Whatever follows the last newline is a torn write.
fn parse_journal(data: &[u8], path: &Path) -> Result<(Parsed, usize)> {
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut ops = Vec::new();
    let mut lines = 0;
    for line in data[..complete].split_inclusive(|b| *b == b'\n') {
        lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let op = serde_json::from_slice(line).map_err(|source| StoreError::Journal {
            path: path.to_owned(),
            line: lines,
            source,
        })?;
        ops.push(op);
    }
    Ok((Parsed { ops, lines }, complete))
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use ipnet::IpNet;

    use super::*;
    use crate::{
        config::{Escalation, ReportRule},
        duration::Lifetime,
        lists::ListKind,
        policy::engine::{Command, Engine, Origin, Outcome, Ts},
    };

    const S: Duration = Duration::from_secs(1);
    const H: Duration = Duration::from_secs(3600);
    const T0: Ts = Ts(1_700_000_000_000);
    const RULE: ReportRule = ReportRule {
        count: 2,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(600),
    };

    fn esc() -> Escalation {
        Escalation {
            graylist_duration: H,
            strikes_to_blacklist: 3,
            strike_window: 24 * H,
            blacklist_duration: Lifetime::For(48 * H),
            ban_growth: 2.0,
            max_ban: Lifetime::Forever,
            relative_block: false,
            reset_strikes_after_blacklist: true,
            state_retention: 240 * H,
            grace_violations: 1,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
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
        e.report(ip("198.51.100.7"), "login".into(), now);
        e.report(ip("198.51.100.7"), "login".into(), now.plus(S));
        e.report(ip("2001:db8::9"), "login".into(), now);
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
        let (o, _) = r.report(ip("2001:db8::9"), "login".into(), now.plus(10 * S));
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
}
