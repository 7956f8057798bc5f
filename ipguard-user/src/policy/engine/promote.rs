//! Protected addresses, and promotion: what the policy does when the kernel's host table
//! is full and an attacker spreads over many sources of one network.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Command, Engine, Entry};
use crate::model::{ListKind, Origin, Ts};

/// The prefix a host is promoted to: its /24 (IPv4) or /64 (IPv6).
pub fn promotion_prefix(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, len).map_or(IpNet::from(ip), |n| n.trunc())
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

    pub(super) fn unindex_policy_host(&mut self, net: IpNet) {
        if let Some(n) = self.policy_hosts.get_mut(&net) {
            *n -= 1;
            if *n == 0 {
                self.policy_hosts.remove(&net);
            }
        }
    }

    /// The kernel's host table could not take `ip`'s ban: if at least `min` sources of its
    /// /24 (IPv4) or /64 (IPv6) are banned by the policy already, ban the prefix instead,
    /// on the most severe of their lists and until the last of their bans (never shorter
    /// than `until`, the ban `ip` was to get), and release their host entries: one slot
    /// instead of many keys. Not done when the prefix holds a protected address, is listed
    /// already, or `min` is 0. Returns the prefix and the commands.
    pub fn promote(
        &mut self,
        ip: IpAddr,
        min: u32,
        until: Option<Ts>,
        now: Ts,
    ) -> Option<(IpNet, Vec<Command>)> {
        let prefix = promotion_prefix(ip);
        if min == 0 || self.protected_overlap(prefix).is_some() {
            return None;
        }
        if [ListKind::Graylist, ListKind::Blacklist]
            .into_iter()
            .any(|l| self.contains(l, &prefix))
        {
            return None;
        }
        let first = IpNet::from(prefix.network());
        let last = IpNet::from(prefix.broadcast());
        let members: Vec<IpNet> = self
            .policy_hosts
            .range(first..=last)
            .map(|(n, _)| *n)
            .collect();
        if members.len() < min as usize {
            return None;
        }
        let mut list = ListKind::Graylist;
        // `None`: forever, which no member can shorten.
        let mut end = until;
        let mut held = Vec::new();
        for net in &members {
            for l in [ListKind::Graylist, ListKind::Blacklist] {
                if let Some(e) = self.entries.get(&(l, *net)) {
                    if l == ListKind::Blacklist {
                        list = ListKind::Blacklist;
                    }
                    end = match (end, e.until) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                    held.push((l, *net));
                }
            }
        }
        let reason = format!(
            "promoted: {} sources of {prefix} banned and the kernel's host table is full",
            members.len() + 1
        );
        let mut cmds = self.put(
            prefix,
            Entry {
                list,
                since: now,
                until: end,
                reason,
                origin: Origin::RateLimit,
            },
        );
        for (l, net) in held {
            if self.remove_dynamic(l, net).is_some() {
                cmds.push(Command::Unblock { net, list: l });
            }
        }
        Some((prefix, cmds))
    }
}
