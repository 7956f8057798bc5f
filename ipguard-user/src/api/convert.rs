//! Domain answers of the controller as the API's JSON shapes ([`super::types`]).

use std::collections::BTreeMap;

use ipguard_common::Stat;

use super::types::{
    IpCounters, IpStatus, ListEntryView, ListPage, MapFill, OffenderList, OffenderView,
    ProblemView, Status, Traffic,
};
use crate::{
    controller::view::{DecidedBy, Explanation, Fill, Offender, Page, StatusReport, VERDICT_STATS},
    model::{ListKind, Ts},
};

impl From<&Explanation> for IpStatus {
    fn from(x: &Explanation) -> Self {
        IpStatus {
            ip: x.ip.to_string(),
            verdict: if x.drop { "drop" } else { "pass" }.into(),
            list: x.list.map(|l| l.as_str().into()),
            prefix: x.prefix.map(|p| p.to_string()),
            reason: x.reason.clone(),
            source: x.decided_by.as_ref().map(|d| match d {
                DecidedBy::Entry(_) if x.by_geo => "geo".into(),
                DecidedBy::Entry(_) if x.feed.is_some() => "feed".into(),
                DecidedBy::Entry(origin) => origin.as_str().into(),
                DecidedBy::Rule(_) => "rule".into(),
                DecidedBy::Monitored(crate::policy::monitor::MonitorSource::Config) => {
                    "config".into()
                }
                DecidedBy::Monitored(crate::policy::monitor::MonitorSource::Feed(_)) => {
                    "feed".into()
                }
            }),
            would_drop: x.would_drop,
            strikes: x.strikes,
            expires: x.expires.map(Ts::rfc3339),
            // Whole seconds, rounded up: a client that waits this long finds it expired.
            retry_after: x
                .retry_after
                .map(|d| u64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)),
            counters: counters(&x.counters),
            node: x.node.clone(),
            country: x.geo.as_ref().and_then(|g| g.country.clone()),
            asn: x.geo.as_ref().and_then(|g| g.asn),
            asn_org: x.geo.as_ref().and_then(|g| g.asn_org.clone()),
            packet: x.packet.map(|(p, port)| match port {
                0 => p.as_str().to_owned(),
                port => format!("{p}/{port}"),
            }),
            scoped: x
                .scoped
                .iter()
                .map(|v| super::types::ScopedVerdictView {
                    packets: v.label(),
                    verdict: if v.drop { "drop" } else { "pass" }.into(),
                    would_drop: v.would_drop,
                    list: v.list.map(|l| l.as_str().into()),
                    prefix: v.prefix.map(|p| p.to_string()),
                    reason: v.reason.clone(),
                    source: v.decided_by.as_ref().map(decided_by_name),
                })
                .collect(),
        }
    }
}

/// The `source` of a decision as the API names it (`by_geo` and feeds aside).
fn decided_by_name(d: &DecidedBy) -> String {
    match d {
        DecidedBy::Entry(origin) => origin.as_str().into(),
        DecidedBy::Rule(_) => "rule".into(),
        DecidedBy::Monitored(crate::policy::monitor::MonitorSource::Config) => "config".into(),
        DecidedBy::Monitored(crate::policy::monitor::MonitorSource::Feed(_)) => "feed".into(),
    }
}

fn counters(c: &ipguard_common::SourceCounters) -> IpCounters {
    IpCounters {
        packets: c.packets,
        bytes: c.bytes,
        syns: c.syns,
        dropped: c.dropped,
    }
}

impl From<&[Offender]> for OffenderList {
    fn from(top: &[Offender]) -> Self {
        OffenderList {
            offenders: top
                .iter()
                .map(|o| OffenderView {
                    ip: o.summary.ip.to_string(),
                    strikes: o.summary.strikes,
                    reports: o.summary.reports,
                    last_activity: o.summary.last_activity.rfc3339(),
                    list: o.ban.as_ref().map(|(_, e)| e.list.as_str().into()),
                    prefix: o.ban.as_ref().map(|(n, _)| n.to_string()),
                    reason: o.ban.as_ref().map(|(_, e)| e.reason.clone()),
                    expires: o.ban.as_ref().and_then(|(_, e)| e.until.map(Ts::rfc3339)),
                    counters: counters(&o.counters),
                })
                .collect(),
        }
    }
}

impl From<Page> for ListPage {
    fn from(page: Page) -> Self {
        ListPage {
            entries: page
                .entries
                .into_iter()
                .map(|(n, e)| ListEntryView {
                    net: n.to_string(),
                    expires: e.until.map(Ts::rfc3339),
                    reason: e.reason,
                    source: e.origin.as_str().into(),
                })
                .collect(),
            next_cursor: page.next.map(|n| n.to_string()),
        }
    }
}

impl From<&StatusReport> for Status {
    fn from(r: &StatusReport) -> Self {
        let t = |s: Stat| {
            let c = r.stats.get(s);
            Traffic {
                packets: c.packets,
                bytes: c.bytes,
            }
        };
        let mut pass = Traffic::default();
        let mut drop = Traffic::default();
        for (_, stat, dropped) in VERDICT_STATS {
            let sum = if dropped { &mut drop } else { &mut pass };
            sum.packets += t(stat).packets;
            sum.bytes += t(stat).bytes;
        }
        let fill = |f: Fill| MapFill {
            capacity: f.capacity,
            used: f.used,
        };
        let mut entries: BTreeMap<String, u64> = ListKind::ALL
            .iter()
            .map(|l| (l.as_str().to_owned(), r.entries[l.index()]))
            .collect();
        entries.insert("rules".into(), r.rules);
        if r.scoped_entries > 0 {
            entries.insert("scoped".into(), r.scoped_entries);
        }
        // Monitor mode's entries, when there are any (not on the lists' pages).
        for (name, n) in ["monitored_graylist", "monitored_blacklist"]
            .into_iter()
            .zip(r.monitored)
            .filter(|(_, n)| *n > 0)
        {
            entries.insert(name.into(), n);
        }
        Status {
            interface: r.interface.clone(),
            xdp_mode: r.xdp_mode.clone(),
            mode: r.mode.as_str().into(),
            uptime_seconds: r.uptime.as_secs(),
            entries,
            tracked_sources: r.tracked_sources,
            verdicts: [("pass".to_owned(), pass), ("drop".to_owned(), drop)].into(),
            lists: VERDICT_STATS
                .iter()
                .map(|(name, stat, _)| ((*name).to_owned(), t(*stat)))
                .collect(),
            maps: [
                ("lpm_v4".to_owned(), fill(r.v4_hosts)),
                ("lpm_v6".to_owned(), fill(r.v6_prefixes)),
                ("sources".to_owned(), fill(r.sources)),
            ]
            .into(),
            problems: r
                .problems
                .iter()
                .map(|(kind, p)| ProblemView {
                    kind: (*kind).into(),
                    detail: p.detail.clone(),
                    since: p.since.rfc3339(),
                    count: p.count,
                })
                .collect(),
        }
    }
}

impl From<Option<&crate::controller::fleet::Fleet>> for super::types::ClusterView {
    fn from(f: Option<&crate::controller::fleet::Fleet>) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match f {
            None => super::types::ClusterView {
                enabled: false,
                node: None,
                link: "down".into(),
                since: None,
                last_error: None,
                nodes: Vec::new(),
                shared: 0,
                queued: 0,
                last_lag_ms: None,
                last_resync_ms: None,
                last_resync_decisions: None,
                resyncs: 0,
                published: 0,
                applied: 0,
                rejected: 0,
                skipped: 0,
                removed: 0,
                dropped: 0,
            },
            Some(f) => super::types::ClusterView {
                enabled: true,
                node: Some(f.node.clone()),
                link: if f.link.up { "up" } else { "down" }.into(),
                since: (f.link.since != Ts(0)).then(|| f.link.since.rfc3339()),
                last_error: f.link.last_error.clone(),
                nodes: f
                    .link
                    .nodes
                    .iter()
                    .map(|(name, seen)| super::types::ClusterNode {
                        name: name.clone(),
                        last_seen: seen.rfc3339(),
                    })
                    .collect(),
                shared: f.link.shared,
                queued: f.link.queued,
                last_lag_ms: f.link.last_lag.map(ms),
                last_resync_ms: f.link.last_resync.map(|(d, _)| ms(d)),
                last_resync_decisions: f.link.last_resync.map(|(_, n)| n),
                resyncs: f.link.resyncs,
                published: f.counts.published,
                applied: f.counts.applied,
                rejected: f.counts.rejected,
                skipped: f.counts.skipped,
                removed: f.counts.removed,
                dropped: f.counts.dropped,
            },
        }
    }
}

impl From<&crate::feeds::FeedStatus> for super::types::FeedView {
    fn from(f: &crate::feeds::FeedStatus) -> Self {
        super::types::FeedView {
            name: f.name.clone(),
            list: f.list.as_str().into(),
            source: f.source.clone(),
            format: f.format.into(),
            entries: f.entries as u64,
            last_fetch: f.last_fetch.map(Ts::rfc3339),
            last_change: f.last_change.map(Ts::rfc3339),
            last_error: f.last_error.clone(),
            next_fetch: f.next_fetch.rfc3339(),
            fetches: f.fetches,
            failures: f.failures,
            rejected_lines: f.rejected_lines as u64,
            rejected_samples: f.rejected_samples.clone(),
            dropped: f
                .dropped
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v as u64))
                .collect(),
            dropped_samples: f.dropped_samples.clone(),
            held: f.held.as_ref().map(|h| super::types::HeldView {
                reason: h.reason.clone(),
                added: h.added as u64,
                removed: h.removed as u64,
                since: h.since.rfc3339(),
            }),
        }
    }
}

impl From<&[crate::feeds::FeedStatus]> for super::types::FeedList {
    fn from(feeds: &[crate::feeds::FeedStatus]) -> Self {
        super::types::FeedList {
            feeds: feeds.iter().map(Into::into).collect(),
        }
    }
}
