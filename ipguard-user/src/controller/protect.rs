//! Who must never be locked out: loopback, the operators' networks, the host's own
//! addresses and the API's recent clients. The policy never bans them on its own, and an
//! operator needs `force` to list a prefix that touches them.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use ipnet::IpNet;

use crate::{config::ProtectConfig, model::Ts};

/// How long an API client stays protected after its last call.
pub const API_CLIENT_TTL: Duration = Duration::from_secs(3600);
/// API clients remembered at most (the oldest are forgotten first).
const MAX_API_CLIENTS: usize = 1024;

/// The protected networks and why each is.
#[derive(Debug, Default)]
pub struct Protection {
    config: ProtectConfig,
    interfaces: Vec<IpNet>,
    clients: HashMap<IpAddr, Ts>,
}

impl Protection {
    pub fn new(config: ProtectConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn reconfigure(&mut self, config: ProtectConfig) {
        if !config.interfaces {
            self.interfaces.clear();
        }
        if !config.api_clients {
            self.clients.clear();
        }
        self.config = config;
    }

    /// The host's addresses now (the daemon reads them); returns whether they changed.
    pub fn set_interfaces(&mut self, addrs: Vec<IpAddr>) -> bool {
        if !self.config.interfaces {
            return false;
        }
        let mut nets: Vec<IpNet> = addrs.into_iter().map(IpNet::from).collect();
        nets.sort();
        nets.dedup();
        let changed = nets != self.interfaces;
        self.interfaces = nets;
        changed
    }

    /// An authenticated API call from `ip`; returns whether the set changed.
    pub fn note_client(&mut self, ip: IpAddr, now: Ts) -> bool {
        if !self.config.api_clients {
            return false;
        }
        let new = self.clients.insert(ip, now).is_none();
        if new && self.clients.len() > MAX_API_CLIENTS {
            if let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(a, _)| *a)
            {
                self.clients.remove(&oldest);
            }
        }
        new
    }

    /// Forgets clients not seen for [`API_CLIENT_TTL`]; returns whether any went.
    pub fn expire(&mut self, now: Ts) -> bool {
        let before = self.clients.len();
        self.clients
            .retain(|_, seen| now.since(*seen) < API_CLIENT_TTL);
        before != self.clients.len()
    }

    /// The shortest prefixes a list takes.
    pub fn min_prefix(&self) -> crate::config::MinPrefix {
        self.config.min_prefix
    }

    /// Loopback, in IPv6's IPv4-mapped form too (so that `::ffff:0:0/96`, all of IPv4
    /// spelt as IPv6, needs force like `0.0.0.0/0`).
    fn loopback() -> [IpNet; 3] {
        [
            IpNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8)
                .map_or(IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)), |n| n.trunc()),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpNet::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 104)
                .map_or(IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)), |n| n.trunc()),
        ]
    }

    /// Every protected network.
    pub fn nets(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = Self::loopback().into_iter().collect();
        out.extend(&self.config.networks);
        out.extend(&self.interfaces);
        out.extend(self.clients.keys().map(|a| IpNet::from(*a)));
        out
    }

    /// Why listing `net` would lock an operator out, if it would.
    pub fn lockout(&self, net: IpNet) -> Option<String> {
        let touches = |p: &IpNet| p.contains(&net) || net.contains(p);
        let loopback = Self::loopback();
        if let Some(lo) = loopback.iter().find(|p| touches(p)) {
            return Some(format!("{net} overlaps loopback {lo}"));
        }
        if let Some(p) = self.config.networks.iter().find(|p| touches(p)) {
            return Some(format!(
                "{net} overlaps the protected network {p} ([protect] networks)"
            ));
        }
        if let Some(p) = self.interfaces.iter().find(|p| touches(p)) {
            return Some(format!("{net} covers this host's own address {}", p.addr()));
        }
        if let Some(a) = self.clients.keys().find(|a| net.contains(*a)) {
            return Some(format!(
                "{net} covers the address of a recent API client, {a}"
            ));
        }
        None
    }

    /// Why `net` is too broad for a list, if it is.
    pub fn too_broad(&self, net: IpNet) -> Option<String> {
        let min = self.config.min_prefix.violated_by(&net)?;
        Some(format!(
            "{net} is broader than /{min}, the shortest prefix the lists take ({} in the config)",
            crate::config::MinPrefix::setting(&net)
        ))
    }
}

/// The host's own addresses (every interface, in the daemon's network namespace).
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ip, T0};

    fn net(s: &str) -> IpNet {
        crate::net::parse_net(s).unwrap()
    }

    #[test]
    fn loopback_operators_host_and_clients_are_protected() {
        let mut p = Protection::new(ProtectConfig {
            networks: vec![net("198.51.100.0/24")],
            ..ProtectConfig::default()
        });
        p.set_interfaces(vec![ip("192.0.2.1")]);
        assert!(p.note_client(ip("203.0.113.9"), T0));
        for (n, why) in [
            ("127.0.0.5", "loopback"),
            ("0.0.0.0/0", "loopback"),
            ("::/0", "loopback"),
            ("198.51.100.7", "protected network"),
            ("198.51.0.0/16", "protected network"),
            ("192.0.2.0/24", "own address"),
            ("203.0.113.0/24", "API client"),
        ] {
            let got = p.lockout(net(n)).unwrap_or_default();
            assert!(got.contains(why), "{n}: {got}");
        }
        assert_eq!(p.lockout(net("192.0.2.2")), None);
        assert!(!p.expire(T0.plus(API_CLIENT_TTL / 2)));
        assert!(p.expire(T0.plus(API_CLIENT_TTL)));
        assert_eq!(p.lockout(net("203.0.113.9")), None);
        assert!(p.too_broad(net("128.0.0.0/1")).unwrap().contains("/8"));
        assert!(p.too_broad(net("2000::/3")).unwrap().contains("/16"));
        assert_eq!(p.too_broad(net("10.0.0.0/8")), None);
    }
}
