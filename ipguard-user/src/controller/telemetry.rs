//! Metrics kept as events happen (the kernel's counters are read at scrape time instead).
//! `crate::metrics` renders them with the status for Prometheus.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BanLabels {
    /// `rate_limit`, `report`, `api`.
    pub cause: String,
    /// `graylist`, `blacklist`, `whitelist`.
    pub list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromotionLabels {
    /// `count` (`promote_v4_after` / `promote_v6_after`), `full` (the host table was full).
    pub why: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `apply` (a change), `sync` (a whole-table write), `rates`, `read`.
    pub op: String,
}

/// Cloning shares the metrics.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// Seconds from the packet that signalled a violation to the ban being in the tables.
    pub reaction: Histogram,
    pub bans: Family<BanLabels, Counter>,
    /// Rate events read from the ring buffer.
    pub events: Counter,
    /// Changes a full map refused, by map.
    pub table_full: Family<MapLabels, Counter>,
    /// Other failed kernel writes, by operation.
    pub write_errors: Family<OpLabels, Counter>,
    /// Failed writes of the persisted state.
    pub persist_errors: Counter,
    /// Prefixes banned in place of host bans, by what made the policy promote them.
    pub promotions: Family<PromotionLabels, Counter>,
    /// Automatic bans not made because the source is protected.
    pub protected: Counter,
    /// Sources near a rate limit read again once their window closed.
    pub rechecks: Counter,
    /// Violations only those second reads found.
    pub recheck_violations: Counter,
    /// Rechecks not scheduled because the queue was full.
    pub rechecks_skipped: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        // 0.1 ms .. ~3 s.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16);
        Self {
            reaction: Histogram::new(buckets),
            bans: Family::default(),
            events: Counter::default(),
            table_full: Family::default(),
            write_errors: Family::default(),
            persist_errors: Counter::default(),
            promotions: Family::default(),
            protected: Counter::default(),
            rechecks: Counter::default(),
            recheck_violations: Counter::default(),
            rechecks_skipped: Counter::default(),
        }
    }
}

impl Telemetry {
    pub(super) fn count_table_full(&self, map: &str) {
        self.table_full
            .get_or_create(&MapLabels { map: map.into() })
            .inc();
    }

    pub fn count_write_error(&self, op: &str) {
        self.write_errors
            .get_or_create(&OpLabels { op: op.into() })
            .inc();
    }

    pub(super) fn count_promotion(&self, why: &str) {
        self.promotions
            .get_or_create(&PromotionLabels { why: why.into() })
            .inc();
    }

    pub(super) fn count_bans(&self, cause: &str, list: crate::model::ListKind, n: u64) {
        self.bans
            .get_or_create(&BanLabels {
                cause: cause.into(),
                list: list.as_str().into(),
            })
            .inc_by(n);
    }
}
