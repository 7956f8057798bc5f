//! What the controller answers about the state, as domain values: the API turns them into
//! its JSON shapes, the metrics into Prometheus text.

use std::{net::IpAddr, time::Duration};

use ipguard_common::{
    enforced, ListEntry, SourceCounters, Stat, LIST_BLACKLIST, LIST_GRAYLIST, LIST_RULE_ALLOW,
    LIST_RULE_DENY, LIST_WHITELIST,
};
use ipnet::IpNet;

use super::{Controller, Problem, Result};
use crate::{
    dataplane::{Backend, GlobalStats},
    model::{ListKind, Mode, Now, Origin, Proto, Ts},
    policy::{
        engine::{Entry, OffenderSummary},
        monitor::MonitorSource,
    },
};

/// What decided a packet, as the status and the metrics name it: the kernel counter of
/// each, and whether its packets are dropped. Every packet is counted in exactly one.
/// The `would_drop_*` ones are monitor mode's: passed, and would have been dropped.
pub const VERDICT_STATS: [(&str, Stat, bool); 11] = [
    ("unlisted", Stat::PassUnlisted, false),
    ("whitelist", Stat::PassWhitelist, false),
    ("graylist", Stat::DropGraylist, true),
    ("blacklist", Stat::DropBlacklist, true),
    ("rule", Stat::DropRule, true),
    ("non_ip", Stat::PassNonIp, false),
    ("malformed", Stat::DropMalformed, true),
    ("syn_budget", Stat::DropSynBudget, true),
    ("would_drop_graylist", Stat::WouldDropGraylist, false),
    ("would_drop_blacklist", Stat::WouldDropBlacklist, false),
    ("would_drop_rule", Stat::WouldDropRule, false),
];

/// Monitor mode's counters by the list that would have dropped (`ipguard_would_drop_total`).
pub const WOULD_DROP_STATS: [(&str, Stat); 3] = [
    ("graylist", Stat::WouldDropGraylist),
    ("blacklist", Stat::WouldDropBlacklist),
    ("rule", Stat::WouldDropRule),
];

/// What decided a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecidedBy {
    /// A list entry, put there by this origin.
    Entry(Origin),
    /// The ordered rule at this index (0-based).
    Rule(usize),
    /// A source in monitor mode other than the config file (a feed).
    Monitored(MonitorSource),
}

/// What the data path does with one address, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub ip: IpAddr,
    /// Dropped (by a list or a deny rule); otherwise passed.
    pub drop: bool,
    /// Passed in monitor mode, and would be dropped in enforce mode (`list` or the rule
    /// says by what).
    pub would_drop: bool,
    /// The list that decided, if one did.
    pub list: Option<ListKind>,
    /// The prefix that decided.
    pub prefix: Option<IpNet>,
    pub reason: Option<String>,
    pub decided_by: Option<DecidedBy>,
    pub strikes: u32,
    /// When the deciding entry expires; `None`: never, or no entry.
    pub expires: Option<Ts>,
    /// Until `expires`.
    pub retry_after: Option<Duration>,
    /// The source's counters, summed over CPUs.
    pub counters: SourceCounters,
    /// The fleet node that made the deciding entry (this node's own name for its own
    /// entries), when this node is in a fleet.
    pub node: Option<String>,
    /// The address's country and AS, when `[geo]` has databases.
    pub geo: Option<crate::geo::GeoInfo>,
    /// The deciding prefix came from `[geo]`.
    pub by_geo: bool,
    /// The deciding prefix came from this feed.
    pub feed: Option<String>,
    /// The packet explained (protocol, destination port), if one was given: then the
    /// verdict is that packet's.
    pub packet: Option<(Proto, u16)>,
    /// Packets of the address that port- or protocol-scoped rules or entries decide
    /// otherwise than the verdict above (without a packet given: than the address's own).
    pub scoped: Vec<ScopedVerdict>,
}

impl Explanation {
    /// Nothing decided, nothing counted.
    fn empty(ip: IpAddr) -> Self {
        Explanation {
            ip,
            drop: false,
            would_drop: false,
            list: None,
            prefix: None,
            reason: None,
            decided_by: None,
            strikes: 0,
            expires: None,
            retry_after: None,
            counters: SourceCounters::default(),
            node: None,
            geo: None,
            by_geo: false,
            feed: None,
            packet: None,
            scoped: Vec::new(),
        }
    }
}

/// The verdict of an address's packets of one protocol and port (see
/// [`Explanation::scoped`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedVerdict {
    pub proto: u8,
    /// 0: the protocol's ports that no scope names.
    pub port: u16,
    /// The port is one of several of the protocol that scopes name (label `tcp (other
    /// ports)` for port 0 then).
    pub others: bool,
    pub drop: bool,
    pub would_drop: bool,
    pub list: Option<ListKind>,
    pub prefix: Option<IpNet>,
    pub reason: Option<String>,
    pub decided_by: Option<DecidedBy>,
}

impl ScopedVerdict {
    /// `tcp/22`, `udp`, `icmp`, `tcp (other ports)`, `proto 47`.
    pub fn label(&self) -> String {
        let name = match self.proto {
            ipguard_common::PROTO_TCP => "tcp".to_owned(),
            ipguard_common::PROTO_UDP => "udp".to_owned(),
            ipguard_common::PROTO_ICMP => "icmp".to_owned(),
            p => format!("proto {p}"),
        };
        match (self.port, self.others) {
            (0, true) => format!("{name} (other ports)"),
            (0, false) => name,
            (port, _) => format!("{name}/{port}"),
        }
    }
}

/// One page of a list, ordered by prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<(IpNet, Entry)>,
    /// The last prefix of this page, if there are more.
    pub next: Option<IpNet>,
}

/// One source with policy history, for the top offenders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offender {
    pub summary: OffenderSummary,
    /// The graylist or blacklist entry covering it now, if any.
    pub ban: Option<(IpNet, Entry)>,
    /// Its counters, summed over CPUs (zero once the kernel evicted it).
    pub counters: SourceCounters,
}

/// Capacity and use of one kernel map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fill {
    pub capacity: u64,
    pub used: u64,
}

/// Everything the status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    pub interface: String,
    pub xdp_mode: String,
    pub uptime: Duration,
    /// The global mode.
    pub mode: Mode,
    /// Entries per list, by [`ListKind::index`].
    pub entries: [u64; 3],
    /// Monitored prefixes (monitor mode) on the graylist and the blacklist, every source
    /// together.
    pub monitored: [u64; 2],
    pub rules: u64,
    /// The config's port- or protocol-scoped list entries.
    pub scoped_entries: u64,
    /// Scope groups in the kernel's scope map, and scoped decisions that kept the prefix's
    /// own verdict because every group id was in use.
    pub scope_groups: u64,
    pub scope_overflows: u64,
    /// Sources with policy history.
    pub tracked_sources: u64,
    /// The kernel's global counters.
    pub stats: GlobalStats,
    /// IPv4 host addresses (prefixes longer than /24), IPv6 prefixes, sources.
    pub v4_hosts: Fill,
    pub v6_prefixes: Fill,
    pub sources: Fill,
    /// What is wrong now, by kind.
    pub problems: Vec<(&'static str, Problem)>,
}

impl<B: Backend> Controller<B> {
    /// What the data path does with `ip`, and why.
    pub fn explain(&self, ip: IpAddr, now: Now) -> Result<Explanation> {
        self.explain_packet(ip, None, now)
    }

    /// What the data path does with a packet from `ip` of protocol and destination port
    /// `packet` (`None`: the address's own verdict), and why; with the packets of the
    /// address that scoped rules or entries decide otherwise.
    pub fn explain_packet(
        &self,
        ip: IpAddr,
        packet: Option<(Proto, u16)>,
        now: Now,
    ) -> Result<Explanation> {
        let mut x = self.explain_decided(ip, packet, now)?;
        let own = self.decided(ip, packet).map(|(_, e)| (e.list, e.rule_id));
        let atoms = self.policy.atoms();
        // The packet's own atom is the verdict above.
        let own_atom = packet.map(|(p, dport)| {
            let p = p.number();
            if atoms.contains(&(p, dport)) {
                (p, dport)
            } else {
                (p, 0)
            }
        });
        for &(proto, port) in &atoms {
            if own_atom == Some((proto, port)) {
                continue;
            }
            let d = self.policy.decide_for(ip, proto, port);
            if d.map(|(_, e)| (e.list, e.rule_id)) == own {
                continue;
            }
            let mut sub = Explanation::empty(ip);
            if let Some((prefix, e)) = d {
                self.fill(&mut sub, prefix, e, now);
            }
            x.scoped.push(ScopedVerdict {
                proto,
                port,
                others: port == 0 && atoms.iter().any(|&(p, q)| p == proto && q != 0),
                drop: sub.drop,
                would_drop: sub.would_drop,
                list: sub.list,
                prefix: sub.prefix,
                reason: sub.reason,
                decided_by: sub.decided_by,
            });
        }
        Ok(x)
    }

    fn decided(&self, ip: IpAddr, packet: Option<(Proto, u16)>) -> Option<(IpNet, ListEntry)> {
        match packet {
            Some((p, port)) => self.policy.decide_for(ip, p.number(), port),
            None => self.policy.decide(ip),
        }
    }

    /// The explanation of `ip` (or of one of its packets) without the scoped verdicts.
    fn explain_decided(
        &self,
        ip: IpAddr,
        packet: Option<(Proto, u16)>,
        now: Now,
    ) -> Result<Explanation> {
        let engine = self.policy.engine();
        let mut x = Explanation {
            ip,
            drop: false,
            would_drop: false,
            list: None,
            prefix: None,
            reason: None,
            decided_by: None,
            strikes: engine.strikes(ip, now.wall),
            expires: None,
            retry_after: None,
            counters: self.backend.source(ip)?.unwrap_or_default(),
            node: None,
            geo: self.geo.as_ref().map(|g| g.info(ip)),
            by_geo: false,
            feed: None,
            packet,
            scoped: Vec::new(),
        };
        let Some((prefix, decided)) = self.decided(ip, packet) else {
            return Ok(x);
        };
        self.fill(&mut x, prefix, decided, now);
        Ok(x)
    }

    /// Fills in what `decided` (the entry of `prefix`) says of `x.ip`.
    fn fill(&self, x: &mut Explanation, prefix: IpNet, decided: ListEntry, now: Now) {
        let engine = self.policy.engine();
        let ip = x.ip;
        x.prefix = Some(prefix);
        // Monitor mode: the code of what would drop, passed.
        let code = enforced(decided.list);
        x.would_drop = code != decided.list;
        match code {
            LIST_WHITELIST | LIST_GRAYLIST | LIST_BLACKLIST => {
                let list = ListKind::from_code(code);
                x.list = list;
                x.drop = list != Some(ListKind::Whitelist) && !x.would_drop;
                let entry = list.and_then(|l| engine.entry(l, prefix));
                if let (None, Some(list)) = (&entry, list.filter(|_| x.would_drop)) {
                    self.explain_monitored(x, list, prefix);
                }
                if entry.is_none() && !x.would_drop {
                    if let Some(list) = list {
                        // A scoped entry of the config's [lists]: no engine entry.
                        x.decided_by = Some(DecidedBy::Entry(Origin::Config));
                        x.reason = Some(format!("config: [lists] {list}, scoped entry"));
                    }
                }
                if let Some(e) = entry {
                    x.reason = Some(e.reason.clone());
                    // Feed entries come with the config's lists: say which feed.
                    if e.origin == Origin::Config {
                        if let Some(name) = list.and_then(|l| self.feed_sets.source_of(l, &prefix))
                        {
                            x.feed = Some(name.to_owned());
                            x.reason = Some(format!("feed {name}"));
                        }
                    }
                    // Geo prefixes come with the config's lists: say which rule made them.
                    if e.origin == Origin::Config && list == self.geo.as_ref().map(|g| g.list) {
                        if let Some(g) = self
                            .geo
                            .as_ref()
                            .filter(|g| g.nets.binary_search(&prefix).is_ok())
                        {
                            x.by_geo = true;
                            x.reason = Some(geo_reason(&g.info(ip)));
                        }
                    }
                    x.decided_by = Some(DecidedBy::Entry(e.origin));
                    x.node =
                        self.fleet()
                            .map(|f| match list.and_then(|l| self.remote(l, prefix)) {
                                Some(r) => r.node.clone(),
                                None => f.node.clone(),
                            });
                    x.expires = e.until;
                    x.retry_after = e.until.map(|u| u.since(now.wall));
                }
            }
            LIST_RULE_ALLOW | LIST_RULE_DENY => {
                x.drop = code == LIST_RULE_DENY && !x.would_drop;
                let i = decided.rule_id.saturating_sub(1) as usize;
                x.decided_by = Some(DecidedBy::Rule(i));
                x.reason = Some(match self.settings.rules.get(i) {
                    Some(r) => match &r.scope {
                        Some(scope) => format!("rule {}: {} {} {scope}", i + 1, r.action, r.source),
                        None => format!("rule {}: {} {}", i + 1, r.action, r.source),
                    },
                    None => format!("rule {}", i + 1),
                });
            }
            _ => {}
        }
    }

    /// Who put `prefix` on `list`'s monitored layer (not an engine entry): the config
    /// file (its `[lists]`, or `[geo]`) or a feed.
    fn explain_monitored(&self, x: &mut Explanation, list: ListKind, prefix: IpNet) {
        let holders = self.policy.monitored().holders(prefix, list);
        let geo = self
            .geo
            .as_ref()
            .filter(|g| g.mode == Mode::Monitor && g.list == list)
            .filter(|g| g.nets.binary_search(&prefix).is_ok());
        match (holders.first(), geo) {
            (Some(MonitorSource::Config), Some(g)) => {
                x.by_geo = true;
                x.decided_by = Some(DecidedBy::Entry(Origin::Config));
                x.reason = Some(geo_reason(&g.info(x.ip)));
            }
            (Some(MonitorSource::Config), None) => {
                x.decided_by = Some(DecidedBy::Entry(Origin::Config));
                // Feeds in monitor mode come with the config's monitored lists.
                x.reason = Some(match self.feed_sets.source_of(list, &prefix) {
                    Some(name) => {
                        x.feed = Some(name.to_owned());
                        format!("feed {name}, monitor mode")
                    }
                    None => format!("config: [lists] {list}, monitor mode"),
                });
            }
            (Some(source), _) => {
                if let MonitorSource::Feed(name) = source {
                    x.feed = Some(name.clone());
                }
                x.decided_by = Some(DecidedBy::Monitored((*source).clone()));
                x.reason = Some(format!("{source}, monitor mode"));
            }
            (None, _) => {}
        }
    }

    /// Up to `limit` sources with policy history, most strikes first, with their bans and
    /// counters.
    pub fn offenders(&self, limit: usize, now: Now) -> Result<Vec<Offender>> {
        let engine = self.policy.engine();
        engine
            .top_offenders(now.wall, limit)
            .into_iter()
            .map(|summary| {
                Ok(Offender {
                    summary,
                    ban: engine
                        .ban_of(summary.ip)
                        .map(|(net, e)| (net, e.into_owned())),
                    counters: self.backend.source(summary.ip)?.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Up to `limit` entries of `list` after the prefix `cursor`; with `search`, only those
    /// whose prefix or reason contains it (ASCII case-insensitive).
    pub fn list_page(
        &self,
        list: ListKind,
        limit: usize,
        cursor: Option<IpNet>,
        search: Option<&str>,
    ) -> Page {
        let needle = search.map(str::to_ascii_lowercase);
        let keep = |net: &IpNet, e: &Entry| {
            needle.as_deref().is_none_or(|q| {
                net.to_string().contains(q) || e.reason.to_ascii_lowercase().contains(q)
            })
        };
        let mut entries: Vec<(IpNet, Entry)> = self
            .policy
            .engine()
            .page_matching(list, cursor, limit.saturating_add(1), &keep)
            .into_iter()
            .map(|(n, e)| (n, e.into_owned()))
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = if more {
            entries.last().map(|(n, _)| *n)
        } else {
            None
        };
        Page { entries, next }
    }

    /// Everything the status reports.
    pub fn status(&self, now: Now) -> Result<StatusReport> {
        let stats = self.backend.stats()?;
        let usage = self.backend.usage();
        let engine = self.policy.engine();
        let maps = &self.settings.maps;
        let sources_cap = u64::from(maps.sources_capacity);
        Ok(StatusReport {
            interface: self.placement.interface.clone(),
            xdp_mode: self.placement.xdp_mode.clone(),
            uptime: Duration::from_nanos(now.mono_ns.saturating_sub(self.started.mono_ns)),
            mode: self.policy.mode(),
            entries: ListKind::ALL.map(|l| engine.count(l) as u64),
            monitored: [ListKind::Graylist, ListKind::Blacklist]
                .map(|l| self.policy.monitored().count(l) as u64),
            rules: self.settings.rules.len() as u64,
            scoped_entries: self.settings.scoped_entries,
            scope_groups: self.policy.scope_groups() as u64,
            scope_overflows: self.policy.scope_overflows(),
            tracked_sources: engine.tracked() as u64,
            stats,
            v4_hosts: Fill {
                capacity: u64::from(maps.lpm_v4_capacity),
                used: usage.v4,
            },
            v6_prefixes: Fill {
                capacity: u64::from(maps.lpm_v6_capacity),
                used: usage.v6,
            },
            // The map only loses entries by LRU eviction when full.
            sources: Fill {
                capacity: sources_cap,
                used: stats.get(Stat::SourceInserted).packets.min(sources_cap),
            },
            problems: self
                .health
                .problems(now.wall)
                .into_iter()
                .map(|(k, p)| (k, p.clone()))
                .collect(),
        })
    }

    /// Entries per list and prefixes compiled, for the start-up line.
    pub fn sizes(&self) -> ([usize; 3], usize) {
        let engine = self.policy.engine();
        (
            ListKind::ALL.map(|l| engine.count(l)),
            self.policy.compiled().len(),
        )
    }
}

/// Why `[geo]` lists an address, from what the databases say about it.
fn geo_reason(info: &crate::geo::GeoInfo) -> String {
    let parts: Vec<String> = info
        .country
        .iter()
        .map(|c| format!("country {c}"))
        .chain(info.asn.map(|n| format!("AS{n}")))
        .collect();
    if parts.is_empty() {
        "geo: not in the databases (outside the allowed countries)".into()
    } else {
        format!("geo: {}", parts.join(", "))
    }
}
