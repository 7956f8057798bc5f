//! Prometheus metrics. Kernel counters are read at scrape time; the reaction-time histogram
//! and ban counters are kept here as events happen.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::api::types::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BanLabels {
    /// `rate_limit`, `report`, `api`.
    pub cause: String,
    /// `graylist`, `blacklist`, `whitelist`.
    pub list: String,
}

/// Metrics kept across scrapes. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Seconds from the packet that signalled a violation to the ban being in the trie.
    pub reaction: Histogram,
    pub bans: Family<BanLabels, Counter>,
    /// Rate events read from the ring buffer.
    pub events: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        // 0.1 ms .. ~3 s.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16);
        Self {
            reaction: Histogram::new(buckets),
            bans: Family::default(),
            events: Counter::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    verdict: String,
    list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

/// The verdict a `Status::lists` key stands for.
fn verdict_of(list: &str) -> &'static str {
    match list {
        "graylist" | "blacklist" | "rule" => "drop",
        _ => "pass",
    }
}

/// Renders the Prometheus text exposition of `status` and the kept metrics.
pub fn render(status: &Status, events_lost: u64, kept: &Metrics) -> String {
    let mut reg = Registry::with_prefix("ipguard");
    let packets = Family::<TrafficLabels, Counter>::default();
    let bytes = Family::<TrafficLabels, Counter>::default();
    for (list, t) in &status.lists {
        let l = TrafficLabels {
            verdict: verdict_of(list).into(),
            list: list.clone(),
        };
        packets.get_or_create(&l).inc_by(t.packets);
        bytes.get_or_create(&l).inc_by(t.bytes);
    }
    reg.register(
        "packets",
        "Packets seen by the XDP program, by verdict and deciding list",
        packets,
    );
    reg.register(
        "bytes",
        "Bytes seen by the XDP program, by verdict and deciding list",
        bytes,
    );
    let entries = Family::<ListLabels, Gauge>::default();
    for (list, n) in &status.entries {
        entries
            .get_or_create(&ListLabels { list: list.clone() })
            .set(*n as i64);
    }
    reg.register(
        "list_entries",
        "Entries per list (and ordered rules)",
        entries,
    );
    let tracked = Gauge::<i64>::default();
    tracked.set(status.tracked_sources as i64);
    reg.register(
        "tracked_sources",
        "Sources with policy history (violations, strikes, reports)",
        tracked,
    );
    let capacity = Family::<MapLabels, Gauge>::default();
    let used = Family::<MapLabels, Gauge>::default();
    for (map, fill) in &status.maps {
        let l = MapLabels { map: map.clone() };
        capacity.get_or_create(&l).set(fill.capacity as i64);
        used.get_or_create(&l).set(fill.used as i64);
    }
    reg.register("map_capacity", "Capacity of the kernel maps", capacity);
    reg.register("map_used", "Entries in the kernel maps", used);
    let lost = Counter::<u64>::default();
    lost.inc_by(events_lost);
    reg.register(
        "events_lost",
        "Rate events the ring buffer had no room for",
        lost,
    );
    let uptime = Gauge::<i64>::default();
    uptime.set(status.uptime_seconds as i64);
    reg.register("uptime_seconds", "Seconds since the daemon started", uptime);
    reg.register("bans", "Entries made, by cause and list", kept.bans.clone());
    reg.register(
        "events",
        "Rate events read from the ring buffer",
        kept.events.clone(),
    );
    reg.register(
        "reaction_seconds",
        "From the packet that signalled a violation to the ban being in the kernel",
        kept.reaction.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}
