//! Prometheus metrics: the status (kernel counters read at scrape time) and the
//! controller's [`Telemetry`] (reaction times and bans, kept as they happen) as the text
//! exposition format.

use ipguard_common::Stat;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    controller::fleet::Fleet,
    controller::{
        view::{StatusReport, VERDICT_STATS, WOULD_DROP_STATS},
        Telemetry,
    },
    model::ListKind,
};

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
struct ProblemLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

/// Renders the Prometheus text exposition of `status` and the kept metrics.
pub fn render(
    status: &StatusReport,
    kept: &Telemetry,
    fleet: Option<&Fleet>,
    feeds: &[crate::feeds::FeedStatus],
) -> String {
    let mut reg = Registry::with_prefix("ipguard");
    let packets = Family::<TrafficLabels, Counter>::default();
    let bytes = Family::<TrafficLabels, Counter>::default();
    for (list, stat, dropped) in VERDICT_STATS {
        let l = TrafficLabels {
            verdict: if dropped { "drop" } else { "pass" }.into(),
            list: list.into(),
        };
        let t = status.stats.get(stat);
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
    let would = Family::<ListLabels, Counter>::default();
    let would_bytes = Family::<ListLabels, Counter>::default();
    for (list, stat) in WOULD_DROP_STATS {
        let l = ListLabels { list: list.into() };
        let t = status.stats.get(stat);
        would.get_or_create(&l).inc_by(t.packets);
        would_bytes.get_or_create(&l).inc_by(t.bytes);
    }
    reg.register(
        "would_drop",
        "Packets monitor mode passed that enforce mode would drop, by deciding list",
        would,
    );
    reg.register(
        "would_drop_bytes",
        "Bytes monitor mode passed that enforce mode would drop, by deciding list",
        would_bytes,
    );
    let monitor = Gauge::<i64>::default();
    monitor.set(i64::from(status.mode == crate::model::Mode::Monitor));
    reg.register(
        "monitor_mode",
        "1 while the global mode is monitor (nothing dropped by lists or rules), 0 in enforce mode",
        monitor,
    );
    let entries = Family::<ListLabels, Gauge>::default();
    for list in ListKind::ALL {
        entries
            .get_or_create(&ListLabels {
                list: list.as_str().into(),
            })
            .set(status.entries[list.index()] as i64);
    }
    entries
        .get_or_create(&ListLabels {
            list: "rules".into(),
        })
        .set(status.rules as i64);
    for (list, n) in ["monitored_graylist", "monitored_blacklist"]
        .into_iter()
        .zip(status.monitored)
    {
        entries
            .get_or_create(&ListLabels { list: list.into() })
            .set(n as i64);
    }
    entries
        .get_or_create(&ListLabels {
            list: "scoped".into(),
        })
        .set(status.scoped_entries as i64);
    reg.register(
        "list_entries",
        "Entries per list (and ordered rules, and the config's port- or protocol-scoped list entries)",
        entries,
    );
    let groups = Gauge::<i64>::default();
    groups.set(status.scope_groups as i64);
    reg.register(
        "scope_groups",
        "Scope groups in the kernel's scope map: sets of per-protocol and per-port verdicts that port- or protocol-scoped rules and entries give prefixes",
        groups,
    );
    let overflows = Counter::<u64>::default();
    overflows.inc_by(status.scope_overflows);
    reg.register(
        "scope_overflows",
        "Scoped decisions that kept the prefix's own verdict because every scope group id was in use",
        overflows,
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
    for (map, fill) in [
        ("lpm_v4", status.v4_hosts),
        ("lpm_v6", status.v6_prefixes),
        ("sources", status.sources),
    ] {
        let l = MapLabels { map: map.into() };
        capacity.get_or_create(&l).set(fill.capacity as i64);
        used.get_or_create(&l).set(fill.used as i64);
    }
    reg.register("map_capacity", "Capacity of the kernel maps", capacity);
    reg.register("map_used", "Entries in the kernel maps", used);
    let lost = Counter::<u64>::default();
    lost.inc_by(status.stats.get(Stat::EventLost).packets);
    reg.register(
        "events_lost",
        "Rate events the ring buffer had no room for",
        lost,
    );
    let uptime = Gauge::<i64>::default();
    uptime.set(status.uptime.as_secs() as i64);
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
    reg.register(
        "table_full",
        "Changes refused because a kernel map was full, by map",
        kept.table_full.clone(),
    );
    reg.register(
        "write_errors",
        "Other failed kernel map operations, by operation",
        kept.write_errors.clone(),
    );
    reg.register(
        "persist_errors",
        "Failed writes of the persisted policy state",
        kept.persist_errors.clone(),
    );
    reg.register(
        "promotions",
        "Prefixes banned in place of host bans inside them, by why: count (promote_v4_after, promote_v6_after) or full (the host table was full)",
        kept.promotions.clone(),
    );
    reg.register(
        "protected",
        "Automatic bans not made because the source is protected",
        kept.protected.clone(),
    );
    reg.register(
        "rate_rechecks",
        "Sources near a rate limit read again once their window closed",
        kept.rechecks.clone(),
    );
    reg.register(
        "rate_recheck_violations",
        "Rate violations found only by reading a closed window again",
        kept.recheck_violations.clone(),
    );
    reg.register(
        "rate_rechecks_skipped",
        "Rechecks not scheduled because their queue was full",
        kept.rechecks_skipped.clone(),
    );
    let problems = Family::<ProblemLabels, Gauge>::default();
    for (kind, _) in &status.problems {
        problems
            .get_or_create(&ProblemLabels {
                kind: (*kind).into(),
            })
            .set(1);
    }
    reg.register(
        "problem",
        "1 while a problem of this kind is present (see GET /v1/status)",
        problems,
    );
    if let Some(f) = fleet {
        register_fleet(&mut reg, f);
    }
    if !feeds.is_empty() {
        register_feeds(&mut reg, feeds);
    }
    let mut out = String::new();
    // Writing to a String cannot fail; were it to, the scrape shows it rather than a panic.
    if let Err(e) = encode(&mut out, &reg) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedWhyLabels {
    feed: String,
    why: String,
}

/// The `[[feed]]`s: entries in force, fetches and failures, what the last body had that
/// could not be listed, and whether an update waits for an operator.
fn register_feeds(reg: &mut Registry, feeds: &[crate::feeds::FeedStatus]) {
    let entries = Family::<FeedLabels, Gauge>::default();
    let fetches = Family::<FeedLabels, Counter>::default();
    let failures = Family::<FeedLabels, Counter>::default();
    let held = Family::<FeedLabels, Gauge>::default();
    let rejected = Family::<FeedWhyLabels, Gauge>::default();
    for f in feeds {
        let l = FeedLabels {
            feed: f.name.clone(),
        };
        entries
            .get_or_create(&l)
            .set(i64::try_from(f.entries).unwrap_or(i64::MAX));
        fetches.get_or_create(&l).inc_by(f.fetches);
        failures.get_or_create(&l).inc_by(f.failures);
        held.get_or_create(&l).set(i64::from(f.held.is_some()));
        let why = |w: &str| FeedWhyLabels {
            feed: f.name.clone(),
            why: w.into(),
        };
        rejected
            .get_or_create(&why("invalid_line"))
            .set(i64::try_from(f.rejected_lines).unwrap_or(i64::MAX));
        for (w, n) in &f.dropped {
            rejected
                .get_or_create(&why(w))
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
    reg.register("feed_entries", "Entries a feed has in force", entries);
    reg.register(
        "feed_fetches",
        "Fetches of a feed (a 304 included)",
        fetches,
    );
    reg.register(
        "feed_failures",
        "Fetches of a feed that failed (its last good entries stay)",
        failures,
    );
    reg.register(
        "feed_held",
        "1 while a feed holds an update back for an operator",
        held,
    );
    reg.register(
        "feed_rejected",
        "Entries of a feed's last body not listed, by why (invalid_line, protected, too_broad, bogon)",
        rejected,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The fleet link (`[cluster]`): state, queue, what was published and applied, and how
/// long decisions took to get here.
fn register_fleet(reg: &mut Registry, f: &Fleet) {
    let up = Gauge::<i64>::default();
    up.set(i64::from(f.link.up));
    reg.register(
        "cluster_up",
        "1 while the link to the fleet's Redis is up",
        up,
    );
    let queued = Gauge::<i64>::default();
    queued.set(f.link.queued as i64);
    reg.register(
        "cluster_queued",
        "Changes waiting to be published to the fleet",
        queued,
    );
    let shared = Gauge::<i64>::default();
    shared.set(f.link.shared as i64);
    reg.register(
        "cluster_shared_decisions",
        "Decisions in the fleet's shared set",
        shared,
    );
    let nodes = Gauge::<i64>::default();
    nodes.set(f.link.nodes.len() as i64);
    reg.register("cluster_nodes", "Nodes that have sent a heartbeat", nodes);
    let decisions = Family::<OutcomeLabels, Counter>::default();
    for (outcome, n) in [
        ("published", f.counts.published),
        ("applied", f.counts.applied),
        ("rejected", f.counts.rejected),
        ("skipped", f.counts.skipped),
        ("removed", f.counts.removed),
        ("dropped", f.counts.dropped),
    ] {
        decisions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }
    reg.register(
        "cluster_decisions",
        "Fleet decisions by outcome: published by this node, applied here, rejected by the local checks, skipped (not longer than a local entry, expired, origin not applied), removed, dropped from a full queue",
        decisions,
    );
    let resyncs = Counter::<u64>::default();
    resyncs.inc_by(f.link.resyncs);
    reg.register(
        "cluster_resyncs",
        "Whole-set reads from the fleet's Redis",
        resyncs,
    );
    let resync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    resync.set(f.link.last_resync.map_or(0.0, |(d, _)| d.as_secs_f64()));
    reg.register(
        "cluster_last_resync_seconds",
        "Duration of the last resync",
        resync,
    );
    reg.register(
        "cluster_propagation_seconds",
        "From a decision's making on another node to its application here",
        f.lag.clone(),
    );
}
