//! The `[protect]` section: what no automatic decision may ban and no manual one may ban
//! without `force` (the operator's own access), and the shortest prefix a list takes.

use ipnet::IpNet;
use toml::Spanned;

use super::{raw::RawProtect, validate::Source, ConfigError};
use crate::net::parse_net;

/// Default `protect.min_prefix_v4`: a /8 is the largest block a list takes unless told.
pub const DEFAULT_MIN_PREFIX_V4: u8 = 8;
/// Default `protect.min_prefix_v6`: `2000::/3` (every global address) is refused, an
/// RIR's /12 too; a /16 and longer are taken.
pub const DEFAULT_MIN_PREFIX_V6: u8 = 16;

/// The shortest prefixes the lists take (0: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinPrefix {
    pub v4: u8,
    pub v6: u8,
}

impl Default for MinPrefix {
    fn default() -> Self {
        MinPrefix {
            v4: DEFAULT_MIN_PREFIX_V4,
            v6: DEFAULT_MIN_PREFIX_V6,
        }
    }
}

impl MinPrefix {
    /// The minimum for `net`'s family, if `net` is shorter (one bad feed line, a typo of
    /// a mask, must not drop everything).
    pub fn violated_by(&self, net: &IpNet) -> Option<u8> {
        let min = if net.addr().is_ipv4() {
            self.v4
        } else {
            self.v6
        };
        (net.prefix_len() < min).then_some(min)
    }

    /// The setting an operator changes to allow shorter prefixes of `net`'s family.
    pub fn setting(net: &IpNet) -> &'static str {
        if net.addr().is_ipv4() {
            "protect.min_prefix_v4"
        } else {
            "protect.min_prefix_v6"
        }
    }
}

/// The `[protect]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectConfig {
    /// The operators' networks (admin hosts, the office, the bastion): never banned by an
    /// automatic path, and a manual entry covering them needs `force`.
    pub networks: Vec<IpNet>,
    /// Protect the host's own interface addresses, read at start and every refresh
    /// (default `true`). Loopback is always protected.
    pub interfaces: bool,
    /// Protect the addresses authenticated API clients called from, for an hour after
    /// their last call (default `true`).
    pub api_clients: bool,
    /// Shortest prefixes the lists take (config, list files, API, CLI).
    pub min_prefix: MinPrefix,
}

impl Default for ProtectConfig {
    fn default() -> Self {
        ProtectConfig {
            networks: Vec::new(),
            interfaces: true,
            api_clients: true,
            min_prefix: MinPrefix::default(),
        }
    }
}

impl Source<'_> {
    pub(super) fn protect(&self, raw: &RawProtect) -> Result<ProtectConfig, ConfigError> {
        let defaults = ProtectConfig::default();
        let mut networks = Vec::with_capacity(raw.networks.len());
        for (index, entry) in raw.networks.iter().enumerate() {
            networks.push(
                parse_net(entry.get_ref()).map_err(|error| ConfigError::ListEntry {
                    origin: self.origin.to_owned(),
                    at: self.at(entry),
                    key: format!("protect.networks[{index}]"),
                    error,
                })?,
            );
        }
        let len = |key: &str, raw: &Option<Spanned<i64>>, max: i64, default: u8| {
            self.ranged(key, raw, 0, max, default.into())
                .map(|v| u8::try_from(v).unwrap_or(default))
        };
        Ok(ProtectConfig {
            networks,
            interfaces: raw.interfaces.unwrap_or(defaults.interfaces),
            api_clients: raw.api_clients.unwrap_or(defaults.api_clients),
            min_prefix: MinPrefix {
                v4: len(
                    "protect.min_prefix_v4",
                    &raw.min_prefix_v4,
                    32,
                    defaults.min_prefix.v4,
                )?,
                v6: len(
                    "protect.min_prefix_v6",
                    &raw.min_prefix_v6,
                    128,
                    defaults.min_prefix.v6,
                )?,
            },
        })
    }
}
