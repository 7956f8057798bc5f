//! What is wrong now: the problems the status, `/healthz` and the logs report while the
//! daemon keeps filtering (a full table, a disk that cannot be written, a detached program).
//! Warnings are rate-limited: the first of a kind at once, then at most one a minute.

use std::{collections::BTreeMap, time::Duration};

use super::Telemetry;
use crate::{dataplane::TableError, model::Ts};

/// How long a problem that recurs (a refused write) is reported after its last occurrence.
const RECENT: Duration = Duration::from_secs(60);
/// Least time between two warnings of the same kind.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub since: Ts,
    pub last: Ts,
    /// Occurrences since `since`.
    pub count: u64,
    pub detail: String,
    /// Cleared [`RECENT`] after its last occurrence rather than by a success.
    recurring: bool,
    warned: Option<Ts>,
}

/// The problems by kind (`table_full`, `table_write`, `persist`, `xdp_link`, ...).
#[derive(Clone, Debug, Default)]
pub struct Health {
    problems: BTreeMap<&'static str, Problem>,
}

impl Health {
    /// Problems now, by kind.
    pub fn problems(&self, now: Ts) -> Vec<(&'static str, &Problem)> {
        self.problems
            .iter()
            .filter(|(_, p)| !p.recurring || now.since(p.last) < RECENT)
            .map(|(k, p)| (*k, p))
            .collect()
    }

    /// Whether the program is known not to filter (the daemon's watch says so).
    pub fn filtering(&self) -> bool {
        !self.problems.contains_key("xdp_link")
    }

    pub(super) fn set(&mut self, key: &'static str, now: Ts, detail: String) {
        self.occur(key, now, detail, false);
    }

    fn occur(&mut self, key: &'static str, now: Ts, detail: String, recurring: bool) {
        let p = self.problems.entry(key).or_insert_with(|| Problem {
            since: now,
            last: now,
            count: 0,
            detail: String::new(),
            recurring,
            warned: None,
        });
        if p.recurring && now.since(p.last) >= RECENT {
            p.since = now;
            p.count = 0;
        }
        p.last = now;
        p.count += 1;
        p.detail = detail;
        if p.warned.is_none_or(|w| now.since(w) >= WARN_EVERY) {
            p.warned = Some(now);
            tracing::warn!(problem = key, count = p.count, "{}", p.detail);
        }
    }

    pub(super) fn clear(&mut self, key: &'static str) {
        if self.problems.remove(key).is_some() {
            tracing::info!(problem = key, "resolved");
        }
    }

    /// The tables refused a write: counted by map (full) or by operation (other errors).
    pub(super) fn table_error(&mut self, e: &TableError, now: Ts, telemetry: &Telemetry) {
        match e {
            TableError::Full { map, setting, .. } => {
                telemetry.count_table_full(map);
                self.occur(
                    "table_full",
                    now,
                    format!(
                        "{map} is full: new bans that need an entry there are refused (existing ones stay; raise {setting})"
                    ),
                    true,
                );
            }
            other => {
                telemetry.count_write_error("apply");
                self.occur(
                    "table_write",
                    now,
                    format!("a table write failed: {other}"),
                    true,
                );
            }
        }
    }

    /// A write went through.
    pub(super) fn tables_ok(&mut self, _ops: &[crate::model::TableOp]) {
        self.problems.remove("table_write");
    }
}
