//! What the engine knows, for explanations, list pages and status: no changes here.

use std::{borrow::Cow, net::IpAddr};

use ipnet::IpNet;

use super::{Engine, Entry};

/// One source with policy history, as [`Engine::top_offenders`] ranks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffenderSummary {
    pub ip: IpAddr,
    /// Strikes within the strike window.
    pub strikes: u32,
    /// Reports kept (within the report window).
    pub reports: u32,
    pub last_activity: Ts,
}
use crate::model::{ListKind, Ts};

impl Engine {
    /// An entry, if `net` is on `list`.
    pub fn entry(&self, list: ListKind, net: IpNet) -> Option<Cow<'_, Entry>> {
        let net = net.trunc();
        if let Some(e) = self.entries.get(&(list, net)) {
            return Some(Cow::Borrowed(e));
        }
        let meta = *self.config[list.index()].get(&net)?;
        Some(Cow::Owned(self.config_entry(list, meta)))
    }

    /// Whether `net` (truncated) is on `list`.
    pub(super) fn contains(&self, list: ListKind, net: &IpNet) -> bool {
        self.config[list.index()].contains_key(net) || self.entries.contains_key(&(list, *net))
    }

    /// Every entry (unordered).
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, Cow<'_, Entry>)> {
        let dynamic = self
            .entries
            .iter()
            .map(|((_, net), e)| (*net, Cow::Borrowed(e)));
        let config = ListKind::ALL.into_iter().flat_map(move |list| {
            self.config[list.index()]
                .iter()
                .map(move |(net, meta)| (*net, Cow::Owned(self.config_entry(list, *meta))))
        });
        dynamic.chain(config)
    }

    /// Up to `limit` entries of `list` after `cursor`, ordered by prefix.
    pub fn page(
        &self,
        list: ListKind,
        cursor: Option<IpNet>,
        limit: usize,
    ) -> Vec<(IpNet, Cow<'_, Entry>)> {
        self.page_matching(list, cursor, limit, &|_, _| true)
    }

    /// Like [`Engine::page`], only entries for which `keep` holds (a search).
    pub fn page_matching(
        &self,
        list: ListKind,
        cursor: Option<IpNet>,
        limit: usize,
        keep: &dyn Fn(&IpNet, &Entry) -> bool,
    ) -> Vec<(IpNet, Cow<'_, Entry>)> {
        use std::ops::Bound;
        let after = |n: &IpNet| cursor.is_none_or(|c| *n > c);
        let mut dynamic: Vec<(IpNet, &Entry)> = self
            .entries
            .iter()
            .filter(|((l, n), e)| *l == list && after(n) && keep(n, e))
            .map(|((_, n), e)| (*n, e))
            .collect();
        dynamic.sort_unstable_by_key(|(n, _)| *n);
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut config = self.config[list.index()]
            .range((from, Bound::Unbounded))
            .filter(|(net, meta)| keep(net, &self.config_entry(list, **meta)))
            .peekable();
        let mut dynamic = dynamic.into_iter().peekable();
        let mut out = Vec::with_capacity(limit.min(self.counts[list.index()]));
        while out.len() < limit {
            let take_config = match (config.peek(), dynamic.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((c, _)), Some((d, _))) => *c < d,
            };
            if take_config {
                if let Some((net, meta)) = config.next() {
                    out.push((*net, Cow::Owned(self.config_entry(list, *meta))));
                }
            } else if let Some((net, e)) = dynamic.next() {
                out.push((net, Cow::Borrowed(e)));
            }
        }
        out
    }

    /// The number of entries on `list`.
    pub fn count(&self, list: ListKind) -> usize {
        self.counts[list.index()]
    }

    /// The whitelist entry covering `ip`, if any.
    pub fn whitelisted(&self, ip: IpAddr) -> Option<IpNet> {
        self.covering(ListKind::Whitelist, ip)
    }

    /// The longest prefix on `list` containing `ip`.
    pub fn covering(&self, list: ListKind, ip: IpAddr) -> Option<IpNet> {
        self.lens[list.index()]
            .present_longest_first(ip)
            .find_map(|len| {
                let net = IpNet::new(ip, len).ok()?.trunc();
                self.contains(list, &net).then_some(net)
            })
    }

    /// Strikes `ip` currently has within the strike window.
    pub fn strikes(&self, ip: IpAddr, now: Ts) -> u32 {
        self.offenders.get(&ip).map_or(0, |o| {
            let from = now.minus(self.esc.strike_window);
            o.strikes.iter().filter(|t| **t > from).count() as u32
        })
    }

    /// Up to `limit` sources with policy history, most strikes first (then most reports,
    /// then the latest activity): one pass over the offenders, a bounded heap.
    pub fn top_offenders(&self, now: Ts, limit: usize) -> Vec<OffenderSummary> {
        use std::{cmp::Reverse, collections::BinaryHeap};
        let from = now.minus(self.esc.strike_window);
        let mut heap = BinaryHeap::with_capacity(limit.saturating_add(1));
        for (ip, o) in &self.offenders {
            let strikes = o.strikes.iter().filter(|t| **t > from).count() as u32;
            let key = (strikes, o.reports.len() as u32, o.last_activity, *ip);
            heap.push(Reverse(key));
            if heap.len() > limit {
                heap.pop();
            }
        }
        let mut top: Vec<_> = heap.into_iter().map(|Reverse(k)| k).collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        top.into_iter()
            .map(|(strikes, reports, last_activity, ip)| OffenderSummary {
                ip,
                strikes,
                reports,
                last_activity,
            })
            .collect()
    }

    /// The active ban of `ip` (graylist or blacklist entry covering it), most severe first.
    pub fn ban_of(&self, ip: IpAddr) -> Option<(IpNet, Cow<'_, Entry>)> {
        [ListKind::Blacklist, ListKind::Graylist]
            .into_iter()
            .find_map(|list| {
                let net = self.covering(list, ip)?;
                Some((net, self.entry(list, net)?))
            })
    }
}
