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
    assert_eq!(Ts(T0_MS).rfc3339(), "2026-11-23T04:41:33.123Z");
    assert_eq!(Ts(0).rfc3339(), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_nanos(1_999_999)),
        "1970-01-01T00:00:00.001Z"
    );
    // Out of the formatter's range: clamped, never a panic.
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
        "1970-01-01T00:00:00.000Z"
    );
    assert_eq!(Ts(u64::MAX).rfc3339(), "9999-12-31T23:59:59.999Z");
}

#[test]
fn every_record_serializes_to_the_documented_json() {
    let ts = "2026-11-23T04:41:33.123Z";
    let cases = [
        (
            Record::Listed {
                net: "198.51.100.7/32".into(),
                list: "graylist".into(),
                until: Some(Ts(T0_MS + 86_400_000).rfc3339()),
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
            Record::Promoted {
                net: "198.51.100.0/24".into(),
                list: "graylist".into(),
                until: None,
                sources: 16,
                released: 15,
                why: "count".into(),
                reason: "promoted: 16 sources of 198.51.100.0/24 banned within 10m".into(),
            },
            json!({"ts": ts, "event": "promoted", "net": "198.51.100.0/24",
                "list": "graylist", "until": null, "sources": 16, "released": 15,
                "why": "count",
                "reason": "promoted: 16 sources of 198.51.100.0/24 banned within 10m"}),
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
fn an_oversized_reason_is_cut_so_every_file_stays_within_max_bytes() {
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
        reason: "x".repeat(6 << 20),
        outcome: "counted".into(),
    };
    for i in 0..6 {
        log.write(t(i * 1000), &long).unwrap();
    }
    // Six cut lines do not fit one 4 KiB file: rotation went on as for any line.
    assert!(backup(&path, 1).exists());
    for file in [path.clone(), backup(&path, 1)] {
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 4096, "{} has {size} bytes", file.display());
    }
    let reason = lines(&path)[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.len() <= MAX_FIELD + 4, "{}", reason.len());
    assert!(reason.ends_with('…'));
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
