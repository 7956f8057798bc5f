//! The decision log: one JSON object per line for every change to the lists and every
//! decision about a source (who was listed or unlisted and why, violations, reports,
//! aggregated drops), for the operator and for log shippers.
//!
//! Every line has `"ts"` (RFC 3339, UTC, milliseconds) and `"event"`, then the
//! record's fields:
//!
//! ```text
//! {"ts":"2026-11-23T04:41:33.123Z","event":"listed","net":"198.51.100.7/32","list":"graylist","until":"2026-11-24T04:41:33.123Z","reason":"syn 20/1s","origin":"rate_limit","by":"policy"}
//! ```
//!
//! Two limits keep a flood from filling the disk: a token bucket of
//! `max_lines_per_sec` lines (with a burst of as many) that counts what it refuses
//! and says so in a `suppressed` record once it lets lines through again, and
//! size-based rotation like Python's `RotatingFileHandler` (`path`, `path.1` newest
//! .. `path.N` oldest). Drops are never logged per packet: the caller aggregates them
//! per source into [`Record::Drops`].
//!
//! Rotation is written here with `std` rather than taken from the `file-rotate`
//! crate: its `ContentLimit::Bytes` splits a write across two files (cutting a JSON
//! line in half) and `BytesSurpassed` lets the file grow past the limit, while we
//! rotate *before* a line that would not fit.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{config::LogConfig, model::Ts};

/// One decision-log record. Serialized with its variant name in `"event"`
/// (`"listed"`, `"unlisted"`, ...) and its fields beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record {
    /// A network was put on a list (or its entry changed).
    Listed {
        /// The network in CIDR form (`"198.51.100.7/32"`).
        net: String,
        /// `"whitelist"`, `"graylist"` or `"blacklist"`.
        list: String,
        /// When the entry expires ([`rfc3339`]); `None` (`null`): never.
        until: Option<String>,
        /// Why, in words (`"syn 20/1s"`, the reason given to the API).
        reason: String,
        /// What put it there: `"config"`, `"api"`, `"rate_limit"`, `"report"`, `"rule"`.
        origin: String,
        /// Who: `"policy"`, `"config"`, `"cli"`, `"api:<client ip>"`.
        by: String,
    },
    /// A network was taken off a list.
    Unlisted {
        net: String,
        list: String,
        /// `"expired"`, `"removed"` or `"config"` (no longer in the config file).
        why: String,
        by: String,
    },
    /// The policy banned a whole prefix in place of its banned hosts and released their
    /// entries (a `listed` record for the prefix and an `unlisted` one per host, why
    /// `"promoted"`, come with it).
    Promoted {
        /// The prefix (`"198.51.100.0/24"`).
        net: String,
        list: String,
        until: Option<String>,
        /// The sources that made it (banned within `promote_window`, or banned already
        /// when the host table was full).
        sources: u32,
        /// Host entries released.
        released: u32,
        /// `"count"` (`promote_v4_after` / `promote_v6_after`) or `"full"` (the host
        /// table was full).
        why: String,
        reason: String,
    },
    /// A source exceeded a rate limit.
    Violation {
        /// The source address.
        source: String,
        /// The rule it exceeded, as the operator wrote it (`"syn 20/1s"`).
        rule: String,
        /// What it sent within the window.
        count: u64,
        /// The rule's count.
        limit: u64,
        /// What followed: `"banned"`, `"forgiven"`, ...
        outcome: String,
    },
    /// The protected application reported a source (`POST /report`).
    Report {
        source: String,
        reason: String,
        /// What followed: `"banned"`, `"counted"`, `"ignored"`, ...
        outcome: String,
    },
    /// Packets of a listed source were dropped; one record per source at most every
    /// `log.drop_interval`, never one per packet.
    Drops {
        source: String,
        /// The list whose entry dropped them.
        list: String,
        /// Packets dropped since the previous record for this source.
        dropped: u64,
        /// Packets dropped since the source was listed.
        total: u64,
        /// `true` on the first drop record for this source since it was listed.
        first: bool,
        /// Seconds covered by `dropped`.
        interval_s: u64,
    },
    /// The global mode was switched (`PUT /v1/mode`, `ipguard mode`, a reload that finds
    /// the config's `mode` changed).
    Mode {
        /// `"enforce"` or `"monitor"`: the mode now.
        mode: String,
        /// The mode before.
        from: String,
        /// Table entries rewritten.
        entries: u64,
        by: String,
    },
    /// `lines` records were not written because of the rate limit.
    Suppressed { lines: u64 },
    /// What reconciling the kernel maps with the persisted state changed on start.
    Drift {
        added: u64,
        removed: u64,
        updated: u64,
    },
}

/// A line of the log: the timestamp, then the record (tag included).
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    record: &'a Record,
}

/// `t` as RFC 3339 in UTC with milliseconds (see [`Ts::rfc3339`]); times before 1970 are
/// written as 1970.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ts(ms).rfc3339()
}

/// Nanoseconds in a second: one line costs this many bucket units, and a second
/// refills `rate` times as many, so the bucket is exact in integers.
const NANOS: u128 = 1_000_000_000;

/// The token bucket, in units of line-nanoseconds (see [`NANOS`]).
#[derive(Debug)]
struct Bucket {
    rate: u128,
    units: u128,
    /// When `units` was last refilled; `None` before the first line.
    last: Option<SystemTime>,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        let rate = u128::from(rate.max(1));
        Bucket {
            rate,
            units: rate * NANOS,
            last: None,
        }
    }

    fn refill(&mut self, now: SystemTime) {
        if let Some(last) = self.last {
            // A wall clock stepped backwards refills nothing, rather than stalling
            // the log until it catches up.
            let elapsed = now.duration_since(last).unwrap_or_default();
            self.units = (self.units + elapsed.as_nanos() * self.rate).min(self.rate * NANOS);
        }
        self.last = Some(now);
    }

    fn take(&mut self) -> bool {
        match self.units.checked_sub(NANOS) {
            Some(left) => {
                self.units = left;
                true
            }
            None => false,
        }
    }
}

/// The open log file and its rotation.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_bytes: u64,
    backups: u32,
}

impl Sink {
    fn open(path: &Path, max_bytes: u64, backups: u32) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Sink {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            backups,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        // An empty file takes the line whatever its size, or an oversized record
        // would rotate forever.
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        // One write of the whole line: with O_APPEND it lands in one piece.
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.backups == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // path.(n-1) -> path.n, ..., path.1 -> path.2: the rename onto path.n drops
        // the oldest. Gaps (a backup deleted by hand) are skipped.
        for n in (1..self.backups).rev() {
            match fs::rename(backup(&self.path, n), backup(&self.path, n + 1)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                result => result?,
            }
        }
        fs::rename(&self.path, backup(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `path.n`.
fn backup(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    // Not world-readable: the log names addresses and who acted on them.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Shortest time between two [`Record::Suppressed`] notices.
pub const SUPPRESSED_INTERVAL: Duration = Duration::from_secs(1);

/// The decision log (see the module docs). Disabled when `log.path` is unset: every
/// call is then a no-op.
#[derive(Debug)]
pub struct DecisionLog {
    /// `None`: disabled.
    sink: Option<Sink>,
    bucket: Bucket,
    /// Lines refused since the last `suppressed` record.
    pending: u64,
    /// Lines refused since the log was opened.
    suppressed_total: u64,
    /// When the last `suppressed` record was written.
    last_notice: Option<SystemTime>,
}

impl DecisionLog {
    /// Opens (creating it and its parent directory if missing) the file at
    /// `cfg.path` for appending; `None` gives [`DecisionLog::disabled`].
    pub fn open(cfg: &LogConfig) -> io::Result<Self> {
        let sink = match &cfg.path {
            Some(path) => Some(Sink::open(path, cfg.max_bytes, cfg.backups)?),
            None => None,
        };
        Ok(DecisionLog {
            sink,
            bucket: Bucket::new(cfg.max_lines_per_sec),
            pending: 0,
            suppressed_total: 0,
            last_notice: None,
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        DecisionLog {
            sink: None,
            bucket: Bucket::new(1),
            pending: 0,
            suppressed_total: 0,
            last_notice: None,
        }
    }

    /// Whether records go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Writes `record` stamped with `now` (the wall clock; passed in so that tests
    /// control time and with it the rate limit), unless the token bucket is empty:
    /// then the record is only counted.
    ///
    /// The first line the bucket allows after that is preceded by a
    /// [`Record::Suppressed`] with the count. The notice costs a token like any line,
    /// so at most `max_lines_per_sec` lines are written per second (after a burst of
    /// as many); and it is written at most once every [`SUPPRESSED_INTERVAL`], or a
    /// sustained flood would spend every token on notices and log no records at all.
    ///
    /// An I/O error loses this record (a pending `suppressed` count is kept).
    pub fn write(&mut self, now: SystemTime, record: &Record) -> io::Result<()> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        self.bucket.refill(now);
        let notice_due = self.last_notice.is_none_or(|last| {
            now.duration_since(last)
                .map_or(true, |since| since >= SUPPRESSED_INTERVAL)
        });
        if self.pending > 0 && notice_due && self.bucket.take() {
            let notice = Record::Suppressed {
                lines: self.pending,
            };
            sink.write_line(&line(now, &notice))?;
            self.pending = 0;
            self.last_notice = Some(now);
        }
        if !self.bucket.take() {
            self.pending += 1;
            self.suppressed_total += 1;
            return Ok(());
        }
        sink.write_line(&line(now, record))
    }

    /// Records refused by the rate limit since the log was opened.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }
}

/// Longest text field written (a reason): with it every line is far shorter than the
/// smallest `log.max_bytes`, so rotation keeps every file within its size.
pub const MAX_FIELD: usize = 1024;

/// `s` cut to [`MAX_FIELD`] bytes at a character boundary.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `record` as one JSON line, newline included; free-text fields cut to [`MAX_FIELD`].
fn line(now: SystemTime, record: &Record) -> Vec<u8> {
    let cut;
    let record = match record {
        Record::Listed { reason, .. } | Record::Report { reason, .. }
            if reason.len() > MAX_FIELD =>
        {
            let mut r = record.clone();
            if let Record::Listed { reason, .. } | Record::Report { reason, .. } = &mut r {
                *reason = bounded(reason);
            }
            cut = r;
            &cut
        }
        r => r,
    };
    let mut line = serde_json::to_vec(&Line {
        ts: rfc3339(now),
        record,
    })
    // Strings and integers always serialize; the fallback keeps the log going regardless.
    .unwrap_or_else(|e| format!("{{\"event\":\"unwritable\",\"error\":\"{e}\"}}").into_bytes());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests;
