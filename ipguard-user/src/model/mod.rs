//! The vocabulary every layer shares: the lists, who decided an entry, the compiled
//! table contents and the operations that change them, and time. Nothing here decides
//! or does I/O; `policy`, `dataplane`, `store` and `controller` all speak these types.

mod names;
pub mod time;

use std::{collections::BTreeMap, net::IpAddr};

use ipguard_common::{
    ListCode, ListEntry, ScopeKey, LIST_BLACKLIST, LIST_GRAYLIST, LIST_WHITELIST,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub(crate) use names::named_enum;
pub use names::UnknownVariant;
pub use time::{Now, Ts};

named_enum! {
    /// One of the three lists an operator manages.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum ListKind {
        Whitelist = "whitelist",
        Graylist = "graylist",
        Blacklist = "blacklist",
    }
}

impl ListKind {
    /// The code the XDP program understands.
    pub const fn code(self) -> ListCode {
        match self {
            ListKind::Whitelist => LIST_WHITELIST,
            ListKind::Graylist => LIST_GRAYLIST,
            ListKind::Blacklist => LIST_BLACKLIST,
        }
    }

    pub fn from_code(code: ListCode) -> Option<Self> {
        match code {
            LIST_WHITELIST => Some(ListKind::Whitelist),
            LIST_GRAYLIST => Some(ListKind::Graylist),
            LIST_BLACKLIST => Some(ListKind::Blacklist),
            _ => None,
        }
    }

    /// The layer of the compiled policy that holds this list.
    pub const fn layer(self) -> Layer {
        match self {
            ListKind::Whitelist => Layer::White,
            ListKind::Graylist => Layer::Gray,
            ListKind::Blacklist => Layer::Black,
        }
    }

    /// The layer that holds this list's monitored entries (monitor mode); the whitelist
    /// has none.
    pub const fn monitor_layer(self) -> Option<Layer> {
        match self {
            ListKind::Whitelist => None,
            ListKind::Graylist => Some(Layer::MonitorGray),
            ListKind::Blacklist => Some(Layer::MonitorBlack),
        }
    }

    /// The position in [`ListKind::ALL`], for per-list arrays.
    pub const fn index(self) -> usize {
        match self {
            ListKind::Whitelist => 0,
            ListKind::Graylist => 1,
            ListKind::Blacklist => 2,
        }
    }
}

named_enum! {
    /// Who put an entry on a list. Persisted and shown as its name.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Origin {
        /// The config file's `[lists]`.
        Config = "config",
        /// An operator, through the API or the CLI.
        Api = "api",
        /// A rate rule violation.
        RateLimit = "rate_limit",
        /// Reports from the protected application.
        Report = "report",
        /// Another node of the fleet (`[cluster]`): the decision names its node.
        Cluster = "cluster",
    }
}

impl Origin {
    /// Bans the policy made itself (and may therefore extend under `relative_block`).
    pub const fn is_policy(self) -> bool {
        matches!(self, Origin::RateLimit | Origin::Report)
    }
}

named_enum! {
    /// Whether drops are carried out (`enforce`) or only counted (`monitor`: the packets
    /// pass and are counted as "would drop"). The config's top-level `mode` (switched at
    /// run time through `PUT /v1/mode`), and `mode` of `[lists]` and `[geo]`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Mode {
        #[default]
        Enforce = "enforce",
        Monitor = "monitor",
    }
}

named_enum! {
    /// A transport protocol a [`Scope`] names.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Proto {
        Tcp = "tcp",
        Udp = "udp",
        /// ICMP, and ICMPv6 for IPv6 sources.
        Icmp = "icmp",
    }
}

impl Proto {
    /// The protocol number the XDP program reports for it (ICMPv6 is reported as ICMP's).
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => ipguard_common::PROTO_TCP,
            Proto::Udp => ipguard_common::PROTO_UDP,
            Proto::Icmp => ipguard_common::PROTO_ICMP,
        }
    }
}

/// Which packets of a source a scoped list entry or `[[rules]]` entry applies to: a
/// protocol, destination ports, or both. Canonical form (the config and the API build it
/// through [`Scope::new`]): `ports` sorted without duplicates and never empty without a
/// protocol (that is no scope at all); ports only with TCP, UDP or no protocol (= TCP and
/// UDP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    pub proto: Option<Proto>,
    pub ports: Vec<u16>,
}

/// Why a protocol and ports do not make a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("neither proto nor ports is given")]
    Empty,
    #[error("icmp has no ports: leave ports out or name tcp or udp")]
    PortsWithIcmp,
    #[error("port 0 is not a destination port (1 to 65535)")]
    PortZero,
    #[error("at most {max} ports (given {given})")]
    TooManyPorts { given: usize, max: usize },
}

impl Scope {
    /// Ports one scope may list.
    pub const MAX_PORTS: usize = 64;

    /// The canonical scope of `proto` and `ports` (sorted, duplicates removed).
    pub fn new(proto: Option<Proto>, mut ports: Vec<u16>) -> Result<Scope, ScopeError> {
        ports.sort_unstable();
        ports.dedup();
        if proto.is_none() && ports.is_empty() {
            return Err(ScopeError::Empty);
        }
        if proto == Some(Proto::Icmp) && !ports.is_empty() {
            return Err(ScopeError::PortsWithIcmp);
        }
        if ports.first() == Some(&0) {
            return Err(ScopeError::PortZero);
        }
        if ports.len() > Self::MAX_PORTS {
            return Err(ScopeError::TooManyPorts {
                given: ports.len(),
                max: Self::MAX_PORTS,
            });
        }
        Ok(Scope { proto, ports })
    }

    /// The protocols it applies to.
    pub fn protos(&self) -> &'static [Proto] {
        match self.proto {
            Some(Proto::Tcp) => &[Proto::Tcp],
            Some(Proto::Udp) => &[Proto::Udp],
            Some(Proto::Icmp) => &[Proto::Icmp],
            None => &[Proto::Tcp, Proto::Udp],
        }
    }

    /// Whether a packet of protocol number `proto` to port `port` (0: none or not read) is
    /// in scope.
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        self.protos().iter().any(|p| p.number() == proto)
            && (self.ports.is_empty() || (port != 0 && self.ports.binary_search(&port).is_ok()))
    }
}

impl std::fmt::Display for Scope {
    /// `tcp/22,443`, `udp`, `icmp`, `tcp+udp/53`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            Some(p) => f.write_str(p.as_str())?,
            None => f.write_str("tcp+udp")?,
        }
        if !self.ports.is_empty() {
            f.write_str("/")?;
            for (i, port) in self.ports.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{port}")?;
            }
        }
        Ok(())
    }
}

/// Where a membership of the compiled policy comes from: one of the lists, an ordered
/// rule, or a monitored graylist or blacklist (monitor mode: would drop, passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    White,
    Gray,
    Black,
    /// Position `index` (0-based) in the ordered rules; `deny` is its action.
    Rule {
        index: u32,
        deny: bool,
    },
    /// A graylist entry in monitor mode (see `policy::monitor`).
    MonitorGray,
    /// A blacklist entry in monitor mode.
    MonitorBlack,
}

/// The compiled policy: prefix → entry, the longest prefix holding an address decides
/// (see `policy::compile`). `dataplane::Layout` lays it out in the kernel's tables.
pub type Compiled = BTreeMap<IpNet, ListEntry>;

/// The verdicts of the scope groups the compiled entries name (see
/// `ipguard_common::SCOPE_SHIFT`): what the kernel's scope map holds.
pub type Scopes = BTreeMap<ScopeKey, ListCode>;

/// One change to the compiled policy, as the tables must apply it. The compiler orders
/// them: scope writes, entry writes, entry deletes, scope deletes (a group's verdicts are
/// in place before an entry names it and stay until none does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOp {
    ScopeWrite(ScopeKey, ListCode),
    Write(IpNet, ListEntry),
    Delete(IpNet),
    ScopeDelete(ScopeKey),
}

/// Longest-prefix match over compiled entries: what the kernel's tables must answer for
/// `ip`. The reference the table layout is tested against.
pub fn longest_match(entries: &Compiled, ip: IpAddr) -> Option<(IpNet, ListEntry)> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (0..=max).rev().find_map(|len| {
        let net = IpNet::new(ip, len).ok()?.trunc();
        entries.get(&net).map(|e| (net, *e))
    })
}

/// Longest value an error message repeats back: a hostile input is not echoed whole.
pub const MAX_ECHO: usize = 256;

/// `s`, cut to [`MAX_ECHO`] bytes (at a character boundary) with an ellipsis.
pub fn excerpt(s: &str) -> String {
    if s.len() <= MAX_ECHO {
        return s.to_owned();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_and_codes_round_trip() {
        for k in ListKind::ALL {
            assert_eq!(k.as_str().parse::<ListKind>(), Ok(k));
            assert_eq!(ListKind::from_code(k.code()), Some(k));
            assert_eq!(ListKind::ALL[k.index()], k);
        }
        let err = "whitelst".parse::<ListKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `whitelst`, expected one of `whitelist`, `graylist`, `blacklist`"
        );
    }

    #[test]
    fn long_values_are_cut_when_echoed() {
        assert_eq!(excerpt("eth0"), "eth0");
        let long = "é".repeat(1000);
        let cut = excerpt(&long);
        assert!(cut.len() < 300, "{cut}");
        assert!(cut.ends_with("(2000 bytes)"), "{cut}");
    }

    #[test]
    fn origins_serialize_as_their_names() {
        for o in Origin::ALL {
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
    }
}
