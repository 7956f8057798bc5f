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

use crate::config::LogConfig;

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

/// Latest time [`rfc3339`] can write: 9999-12-31T23:59:59.999Z.
const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// `t` as RFC 3339 in UTC with milliseconds: `2026-11-23T04:41:33.123Z`. Times before
/// 1970 or after 9999 are clamped to those bounds (the formatter cannot write them).
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    rfc3339_ms(ms)
}

/// Milliseconds since the Unix epoch as RFC 3339, like [`rfc3339`].
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.min(MAX_RFC3339_MS));
    humantime::format_rfc3339_millis(t).to_string()
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

/// `record` as one JSON line, newline included.
fn line(now: SystemTime, record: &Record) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Line {
        ts: rfc3339(now),
        record,
    })
    .expect("a record of strings and integers always serializes");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// 2026-11-23T04:41:33.123Z.
    const T0_MS: u64 = 1_795_408_893_123;

    fn t(ms_after: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(T0_MS + ms_after)
    }

    fn cfg(path: &Path) -> LogConfig {
        LogConfig {
            path: Some(path.to_owned()),
            ..LogConfig::default()
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn report(n: u64) -> Record {
        Record::Report {
            source: format!("192.0.2.{n}"),
            reason: "failed login".into(),
            outcome: "counted".into(),
        }
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(t(0)), "2026-11-23T04:41:33.123Z");
        assert_eq!(rfc3339_ms(T0_MS), "2026-11-23T04:41:33.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_nanos(1_999_999)),
            "1970-01-01T00:00:00.001Z"
        );
        // Out of the formatter's range: clamped, never a panic.
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_record_serializes_to_the_documented_json() {
        let ts = "2026-11-23T04:41:33.123Z";
        let cases = [
            (
                Record::Listed {
                    net: "198.51.100.7/32".into(),
                    list: "graylist".into(),
                    until: Some(rfc3339_ms(T0_MS + 86_400_000)),
                    reason: "syn 20/1s".into(),
                    origin: "rate_limit".into(),
                    by: "policy".into(),
                },
                json!({"ts": ts, "event": "listed", "net": "198.51.100.7/32",
                    "list": "graylist", "until": "2026-11-24T04:41:33.123Z",
                    "reason": "syn 20/1s", "origin": "rate_limit", "by": "policy"}),
            ),
            (
                Record::Listed {
                    net: "2001:db8::/32".into(),
                    list: "blacklist".into(),
                    until: None,
                    reason: "abuse".into(),
                    origin: "api".into(),
                    by: "api:127.0.0.1".into(),
                },
                json!({"ts": ts, "event": "listed", "net": "2001:db8::/32",
                    "list": "blacklist", "until": null, "reason": "abuse",
                    "origin": "api", "by": "api:127.0.0.1"}),
            ),
            (
                Record::Unlisted {
                    net: "198.51.100.7/32".into(),
                    list: "graylist".into(),
                    why: "expired".into(),
                    by: "policy".into(),
                },
                json!({"ts": ts, "event": "unlisted", "net": "198.51.100.7/32",
                    "list": "graylist", "why": "expired", "by": "policy"}),
            ),
            (
                Record::Violation {
                    source: "198.51.100.7".into(),
                    rule: "syn 20/1s".into(),
                    count: 57,
                    limit: 20,
                    outcome: "banned".into(),
                },
                json!({"ts": ts, "event": "violation", "source": "198.51.100.7",
                    "rule": "syn 20/1s", "count": 57, "limit": 20, "outcome": "banned"}),
            ),
            (
                Record::Report {
                    source: "192.0.2.1".into(),
                    reason: "failed login".into(),
                    outcome: "counted".into(),
                },
                json!({"ts": ts, "event": "report", "source": "192.0.2.1",
                    "reason": "failed login", "outcome": "counted"}),
            ),
            (
                Record::Drops {
                    source: "198.51.100.7".into(),
                    list: "blacklist".into(),
                    dropped: 1200,
                    total: 5000,
                    first: false,
                    interval_s: 10,
                },
                json!({"ts": ts, "event": "drops", "source": "198.51.100.7",
                    "list": "blacklist", "dropped": 1200, "total": 5000,
                    "first": false, "interval_s": 10}),
            ),
            (
                Record::Suppressed { lines: 42 },
                json!({"ts": ts, "event": "suppressed", "lines": 42}),
            ),
            (
                Record::Drift {
                    added: 1,
                    removed: 2,
                    updated: 3,
                },
                json!({"ts": ts, "event": "drift", "added": 1, "removed": 2, "updated": 3}),
            ),
        ];
        for (record, expected) in cases {
            let line = line(t(0), &record);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let text = std::str::from_utf8(&line).unwrap();
            assert!(
                text.starts_with(&format!("{{\"ts\":\"{ts}\",\"event\":")),
                "{text}"
            );
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(value, expected);
            // The record reads back from its line (the extra "ts" is ignored).
            assert_eq!(serde_json::from_value::<Record>(value).unwrap(), record);
        }
    }

    #[test]
    fn writes_appendable_json_lines_and_creates_the_parent_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/decisions.log");
        let mut log = DecisionLog::open(&cfg(&path)).unwrap();
        assert!(log.is_enabled());
        log.write(t(0), &report(1)).unwrap();
        log.write(t(1), &report(2)).unwrap();
        drop(log);
        // A restart appends to what is there.
        let mut log = DecisionLog::open(&cfg(&path)).unwrap();
        log.write(t(2), &report(3)).unwrap();
        let written = lines(&path);
        assert_eq!(written.len(), 3);
        assert_eq!(written[0]["source"], "192.0.2.1");
        assert_eq!(written[1]["ts"], "2026-11-23T04:41:33.124Z");
        assert_eq!(written[2]["source"], "192.0.2.3");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "not world-accessible: {mode:o}");
    }

    #[test]
    fn disabled_log_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DecisionLog::open(&LogConfig::default()).unwrap();
        assert!(!log.is_enabled());
        let mut disabled = DecisionLog::disabled();
        for n in 0..1000 {
            log.write(t(0), &report(n % 256)).unwrap();
            disabled.write(t(0), &report(n % 256)).unwrap();
        }
        assert_eq!(log.suppressed_total(), 0);
        assert_eq!(disabled.suppressed_total(), 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Writes `n` numbered records and returns the line length (all lines are the
    /// same length).
    fn fill(log: &mut DecisionLog, n: u64) -> u64 {
        for i in 0..n {
            // A second apart, so the rate limit never interferes.
            log.write(t(i * 1000), &Record::Suppressed { lines: 1000 + i })
                .unwrap();
        }
        line(t(0), &Record::Suppressed { lines: 1000 }).len() as u64
    }

    fn numbers(path: &Path) -> Vec<u64> {
        lines(path)
            .iter()
            .map(|v| v["lines"].as_u64().unwrap() - 1000)
            .collect()
    }

    #[test]
    fn rotates_before_a_line_that_would_exceed_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let len = line(t(0), &Record::Suppressed { lines: 1000 }).len() as u64;
        let per_file = 4;
        // Room for exactly 4 lines and a bit: the 5th would exceed.
        let config = LogConfig {
            max_bytes: per_file * len + len - 1,
            backups: 3,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        assert_eq!(fill(&mut log, 4), len);
        assert!(!backup(&path, 1).exists(), "no rotation before the limit");
        assert_eq!(numbers(&path), [0, 1, 2, 3]);
        let total = 4 * 5 + 2; // 5 full files (4 dropped beyond backups) and 2 lines
        for i in 4..total {
            log.write(t(i * 1000), &Record::Suppressed { lines: 1000 + i })
                .unwrap();
        }
        // Newest in the base file, then .1, .2, .3; exactly `backups` backups.
        assert_eq!(numbers(&path), [20, 21]);
        assert_eq!(numbers(&backup(&path, 1)), [16, 17, 18, 19]);
        assert_eq!(numbers(&backup(&path, 2)), [12, 13, 14, 15]);
        assert_eq!(numbers(&backup(&path, 3)), [8, 9, 10, 11]);
        assert!(!backup(&path, 4).exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 4);
        for file in [path.clone(), backup(&path, 1)] {
            assert!(fs::metadata(file).unwrap().len() <= config.max_bytes);
        }
    }

    #[test]
    fn exactly_max_bytes_fits_without_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let len = line(t(0), &Record::Suppressed { lines: 1000 }).len() as u64;
        let config = LogConfig {
            max_bytes: 3 * len,
            backups: 1,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        fill(&mut log, 3);
        assert_eq!(fs::metadata(&path).unwrap().len(), config.max_bytes);
        assert!(!backup(&path, 1).exists());
        log.write(t(10_000), &Record::Suppressed { lines: 1003 })
            .unwrap();
        assert_eq!(numbers(&path), [3]);
        assert_eq!(numbers(&backup(&path, 1)), [0, 1, 2]);
    }

    #[test]
    fn existing_file_size_counts_towards_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let len = line(t(0), &Record::Suppressed { lines: 1000 }).len() as u64;
        let config = LogConfig {
            max_bytes: 2 * len,
            backups: 2,
            ..cfg(&path)
        };
        fill(&mut DecisionLog::open(&config).unwrap(), 2);
        let mut log = DecisionLog::open(&config).unwrap();
        log.write(t(5000), &Record::Suppressed { lines: 1002 })
            .unwrap();
        assert_eq!(numbers(&path), [2]);
        assert_eq!(numbers(&backup(&path, 1)), [0, 1]);
    }

    #[test]
    fn zero_backups_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let len = line(t(0), &Record::Suppressed { lines: 1000 }).len() as u64;
        let config = LogConfig {
            max_bytes: 2 * len,
            backups: 0,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        fill(&mut log, 5);
        assert_eq!(numbers(&path), [4]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(!backup(&path, 1).exists());
    }

    #[test]
    fn a_line_longer_than_max_bytes_is_still_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let config = LogConfig {
            max_bytes: 4096,
            backups: 1,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        let long = Record::Report {
            source: "192.0.2.1".into(),
            reason: "x".repeat(5000),
            outcome: "counted".into(),
        };
        log.write(t(0), &long).unwrap();
        assert_eq!(lines(&path).len(), 1);
        log.write(t(1000), &report(2)).unwrap();
        assert_eq!(lines(&path)[0]["source"], "192.0.2.2");
        assert_eq!(
            lines(&backup(&path, 1))[0]["reason"]
                .as_str()
                .unwrap()
                .len(),
            5000
        );
    }

    #[test]
    fn rate_limit_caps_lines_per_second_then_reports_suppressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let config = LogConfig {
            max_lines_per_sec: 5,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        // A flood of 100 records within 100 ms: the burst of 5 gets through (the
        // bucket refills half a token meanwhile).
        for i in 0..100 {
            log.write(t(i), &report(i)).unwrap();
        }
        assert_eq!(lines(&path).len(), 5);
        assert_eq!(log.suppressed_total(), 95);
        // A second later the bucket is full again: the notice comes first and costs
        // one of the 5 tokens.
        for i in 0..5 {
            log.write(t(1099), &report(200 + i)).unwrap();
        }
        // 200 ms later one token, but a notice was written less than a second ago:
        // the token goes to the record.
        log.write(t(1299), &report(205)).unwrap();
        // The next notice, with the one record lost meanwhile.
        log.write(t(2099), &report(206)).unwrap();
        let written = lines(&path);
        let summary: Vec<String> = written
            .iter()
            .map(|v| match v["event"].as_str().unwrap() {
                "suppressed" => format!("suppressed {}", v["lines"]),
                _ => v["source"].as_str().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "192.0.2.0",
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "192.0.2.4",
                "suppressed 95",
                "192.0.2.200",
                "192.0.2.201",
                "192.0.2.202",
                "192.0.2.203",
                // 204 was refused: no token left.
                "192.0.2.205",
                "suppressed 1",
                "192.0.2.206",
            ]
        );
        assert_eq!(written[5]["ts"], rfc3339(t(1099)));
        assert_eq!(written[11]["ts"], rfc3339(t(2099)));
        assert_eq!(log.suppressed_total(), 96);
    }

    #[test]
    fn rate_limit_over_a_long_flood() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let rate = 100;
        let config = LogConfig {
            max_lines_per_sec: rate,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        // 10 000 records a second for 10 seconds.
        let seconds = 10;
        let attempts = 10_000 * seconds;
        for i in 0..attempts {
            log.write(t(i / 10), &report(i % 256)).unwrap();
        }
        let written = lines(&path);
        // The burst plus one second's worth per second, no more.
        let max = u64::from(rate) * (seconds + 1);
        assert!(written.len() as u64 <= max, "{} lines", written.len());
        assert!(written.len() as u64 >= max - u64::from(rate));
        let reported: u64 = written
            .iter()
            .filter(|v| v["event"] == "suppressed")
            .map(|v| v["lines"].as_u64().unwrap())
            .sum();
        let records = written.iter().filter(|v| v["event"] == "report").count() as u64;
        // Every record is either written or counted (the last count still pending).
        assert_eq!(records + log.suppressed_total(), attempts);
        assert!(reported <= log.suppressed_total());
        // Once a second at most, so the flood's own records still get through.
        let notices = written.len() as u64 - records;
        assert!(notices <= seconds, "{notices} notices");
        assert!(records >= u64::from(rate - 1) * seconds);
        // Per whole second, at most `rate` lines beyond the initial burst.
        for second in 1..seconds {
            let prefix = rfc3339(t(second * 1000))[..19].to_owned();
            let in_second = written
                .iter()
                .filter(|v| v["ts"].as_str().unwrap().starts_with(&prefix))
                .count();
            assert!(in_second <= rate as usize, "{in_second} lines in {prefix}");
        }
    }

    #[test]
    fn clock_stepping_back_refills_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let config = LogConfig {
            max_lines_per_sec: 2,
            ..cfg(&path)
        };
        let mut log = DecisionLog::open(&config).unwrap();
        for i in 0..4 {
            log.write(t(10_000), &report(i)).unwrap();
        }
        log.write(t(0), &report(9)).unwrap();
        assert_eq!(lines(&path).len(), 2);
        assert_eq!(log.suppressed_total(), 3);
        // Measured from the earlier time now: half a second later, one token.
        log.write(t(500), &report(10)).unwrap();
        let written = lines(&path);
        assert_eq!(written.len(), 3);
        assert_eq!(written[2]["event"], "suppressed");
        assert_eq!(written[2]["lines"], 3);
    }

    #[test]
    fn decision_log_is_send() {
        fn send<T: Send>() {}
        send::<DecisionLog>();
    }
}
