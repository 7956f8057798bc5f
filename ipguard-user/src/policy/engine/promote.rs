//! Protected addresses, and promotion: banning one prefix in place of many host bans
//! inside it, when many sources of one network are banned within a window
//! (`[escalation] promote_v4_after`, `promote_v6_after`) or when the kernel's host table
//! is full (`promote_when_full`). Both go through [`Engine::promote_prefix`]: the prefix
//! is listed first, then the policy's host entries it covers are released, in the open
//! transaction (a refused write takes all of it back). The sources' strike history is
//! kept, so a source banned again after the prefix ends escalates as before.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{is_policy_host, Command, Engine, Entry};
use crate::{
    duration::format_duration,
    model::{ListKind, Origin, Ts},
};

/// What made the policy promote a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `promote_v4_after` / `promote_v6_after` sources banned within `promote_window`.
    Count,
    /// A host ban did not fit the kernel's host table (`promote_when_full`).
    Full,
}

impl Trigger {
    /// The name in metrics and the decision log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Count => "count",
            Trigger::Full => "full",
        }
    }
}

/// A prefix the policy banned in place of host bans inside it (for logs, metrics and the
/// decision log; the entry itself is a [`Command::Block`] of the same change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub prefix: IpNet,
    pub list: ListKind,
    /// `None`: never expires.
    pub until: Option<Ts>,
    /// The sources that made it: banned within the window (`Count`), or banned already
    /// plus the one whose ban did not fit (`Full`).
    pub sources: u32,
    /// Host entries released.
    pub released: u32,
    pub trigger: Trigger,
    pub reason: String,
}

/// The later of two ends (`None`: forever).
fn later(a: Option<Ts>, b: Option<Ts>) -> Option<Ts> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

impl Engine {
    /// Replaces the protected networks (see [`super::Outcome::Protected`]).
    pub fn set_protected(&mut self, nets: Vec<IpNet>) {
        self.protected = nets;
    }

    /// Whether `ip` is protected.
    pub fn is_protected(&self, ip: IpAddr) -> bool {
        self.protected.iter().any(|n| n.contains(&ip))
    }

    /// The protected network `net` covers or lies in, if any.
    pub fn protected_overlap(&self, net: IpNet) -> Option<IpNet> {
        self.protected
            .iter()
            .find(|p| p.contains(&net) || net.contains(*p))
            .copied()
    }

    /// A whitelist entry that holds `net` or lies inside it, if any: the covering entry,
    /// then the entries within `net` (ranges of the sorted config and dynamic whitelists).
    pub fn whitelist_overlap(&self, net: IpNet) -> Option<IpNet> {
        let net = net.trunc();
        if let Some(w) = self
            .covering(ListKind::Whitelist, net.addr())
            .filter(|w| w.prefix_len() <= net.prefix_len())
        {
            return Some(w);
        }
        // Every prefix inside `net` sorts between `net` and its last address as a host.
        let span = net..=IpNet::from(net.broadcast());
        let config = self.config[ListKind::Whitelist.index()].range(span.clone());
        config
            .map(|(n, _)| *n)
            .chain(self.white_dynamic.range(span).copied())
            .next()
    }

    pub(super) fn unindex_policy_host(&mut self, net: IpNet) {
        if let Some(n) = self.policy_hosts.get_mut(&net) {
            *n -= 1;
            if *n == 0 {
                self.policy_hosts.remove(&net);
            }
        }
    }

    /// Hands out the promotions made since the last call (the policy puts them in the
    /// change they belong to).
    pub fn take_promotions(&mut self) -> Vec<Promotion> {
        std::mem::take(&mut self.promotions)
    }

    /// The prefix `ip` is promoted to: its `/promote_v4_prefix` or `/promote_v6_prefix`.
    pub fn promotion_prefix(&self, ip: IpAddr) -> IpNet {
        let len = if ip.is_ipv4() {
            self.esc.promote_v4_prefix
        } else {
            self.esc.promote_v6_prefix
        };
        IpNet::new(ip, len).map_or(IpNet::from(ip), |n| n.trunc())
    }

    /// Whether the policy may ban `prefix` whole: it holds no protected or whitelisted
    /// address (and lies in none), and is not on the graylist or blacklist already.
    fn promotable(&self, prefix: IpNet) -> bool {
        self.protected_overlap(prefix).is_none()
            && self.whitelist_overlap(prefix).is_none()
            && ![ListKind::Graylist, ListKind::Blacklist]
                .into_iter()
                .any(|l| self.contains(l, &prefix))
    }

    /// The hosts inside `prefix` the policy banned (on either list).
    fn policy_members(&self, prefix: IpNet) -> impl Iterator<Item = IpNet> + '_ {
        let first = IpNet::from(prefix.network());
        let last = IpNet::from(prefix.broadcast());
        self.policy_hosts.range(first..=last).map(|(n, _)| *n)
    }

    /// When the policy last banned the host `net` (its policy entries' latest `since`).
    fn policy_since(&self, net: IpNet) -> Option<Ts> {
        [ListKind::Graylist, ListKind::Blacklist]
            .into_iter()
            .filter_map(|l| self.entries.get(&(l, net)))
            .filter(|e| is_policy_host(net, e))
            .map(|e| e.since)
            .max()
    }

    /// The policy has just banned `ip` (`ban`: its list and end, `origin`: rate limit or
    /// report): if `promote_v4_after` (`promote_v6_after`) sources of its prefix are now
    /// banned by the policy, banned within `promote_window`, the prefix is banned in
    /// their place (see [`Engine::promote_prefix`]) and the commands of that are returned
    /// in place of the ban's own. Manual, config and fleet entries neither count nor are
    /// released.
    pub(super) fn promote_by_count(
        &mut self,
        ip: IpAddr,
        ban: (ListKind, Option<Ts>),
        origin: Origin,
        now: Ts,
    ) -> Option<Vec<Command>> {
        let after = if ip.is_ipv4() {
            self.esc.promote_v4_after
        } else {
            self.esc.promote_v6_after
        };
        if after == 0 {
            return None;
        }
        let prefix = self.promotion_prefix(ip);
        // The cheap checks first: a prefix that may never be promoted is not counted.
        if prefix.prefix_len() == prefix.max_prefix_len() || !self.promotable(prefix) {
            return None;
        }
        let window = self.esc.promote_window;
        let from = now.minus(window);
        let recent = self
            .policy_members(prefix)
            .filter(|net| self.policy_since(*net).is_some_and(|t| t > from))
            .count();
        if recent < after as usize {
            return None;
        }
        let reason = format!(
            "promoted: {recent} sources of {prefix} banned within {}",
            format_duration(window)
        );
        let mut cmds =
            self.promote_prefix(prefix, ban, origin, reason, Trigger::Count, recent, now);
        // The ban just made goes straight into the prefix: the tables never held it, so it
        // is neither listed nor released on its own (its strike stays).
        let fresh = Command::Unblock {
            net: IpNet::from(ip),
            list: ban.0,
        };
        cmds.retain(|c| *c != fresh);
        if let Some(p) = self.promotions.last_mut() {
            p.released = p.released.saturating_sub(1);
        }
        Some(cmds)
    }

    /// The kernel's host table could not take `ip`'s ban (`ban`: the list and end it was
    /// to get): if at least `min` sources of its prefix are banned by the policy already,
    /// ban the prefix instead (see [`Engine::promote_prefix`]): one entry instead of many
    /// keys. Not done when `min` is 0 or the prefix may not be banned whole. Returns the
    /// prefix and the commands.
    pub fn promote(
        &mut self,
        ip: IpAddr,
        min: u32,
        ban: (ListKind, Option<Ts>),
        now: Ts,
    ) -> Option<(IpNet, Vec<Command>)> {
        let prefix = self.promotion_prefix(ip);
        if min == 0 || !self.promotable(prefix) {
            return None;
        }
        let members = self.policy_members(prefix).count();
        if members < min as usize {
            return None;
        }
        let sources = members + 1;
        let reason = format!(
            "promoted: {sources} sources of {prefix} banned and the kernel's host table is full"
        );
        let cmds = self.promote_prefix(
            prefix,
            ban,
            Origin::RateLimit,
            reason,
            Trigger::Full,
            sources,
            now,
        );
        Some((prefix, cmds))
    }

    /// Bans `prefix` on the most severe list of the policy's host bans inside it and of
    /// `ban` (the ban that led here), until the last of them ends, then releases those
    /// host entries: additions before removals, so no member is unlisted in between.
    /// Manual, config and fleet entries inside the prefix stay.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call per trigger, each argument named there"
    )]
    fn promote_prefix(
        &mut self,
        prefix: IpNet,
        ban: (ListKind, Option<Ts>),
        origin: Origin,
        reason: String,
        trigger: Trigger,
        sources: usize,
        now: Ts,
    ) -> Vec<Command> {
        let (mut list, mut end) = ban;
        let mut held = Vec::new();
        let members: Vec<IpNet> = self.policy_members(prefix).collect();
        for net in members {
            for l in [ListKind::Graylist, ListKind::Blacklist] {
                if let Some(e) = self
                    .entries
                    .get(&(l, net))
                    .filter(|e| is_policy_host(net, e))
                {
                    if l == ListKind::Blacklist {
                        list = ListKind::Blacklist;
                    }
                    end = later(end, e.until);
                    held.push((l, net));
                }
            }
        }
        let mut cmds = self.put(
            prefix,
            Entry {
                list,
                since: now,
                until: end,
                reason: reason.clone(),
                origin,
            },
        );
        let mut released = 0;
        for (l, net) in held {
            if self.remove_dynamic(l, net).is_some() {
                released += 1;
                cmds.push(Command::Unblock { net, list: l });
            }
        }
        self.promotions.push(Promotion {
            prefix,
            list,
            until: end,
            sources: u32::try_from(sources).unwrap_or(u32::MAX),
            released,
            trigger,
            reason,
        });
        cmds
    }
}
