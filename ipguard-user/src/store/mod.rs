//! The persisted policy state: every entry the API or the policy made, its expiry,
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
    /// this returns an error the lines are cut off again (should even that fail, before the
    /// next write); a [`Store::compact`] with the engine's current snapshot makes the store
    /// whole again.
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
        if let Err(e) = self.journal.sync_data() {
            // Not durable: not appended either (the caller refuses what it acknowledges
            // only once durable), so cut the lines off again.
            self.dirty_tail = self.journal.set_len(self.bytes).is_err();
            return Err(io_err("sync", &self.journal_path)(e));
        }
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
mod tests;
