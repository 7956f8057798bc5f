//! What the fleet writes into Redis, and the checks every message from it passes before
//! it can change anything: a Redis that anyone can write to must not be able to make a
//! node ban what its own API would refuse.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::{cluster_name_problem, SharedOrigin},
    model::{excerpt, ListKind, Ts},
    net::parse_net,
};

/// Longest reason a shared decision carries (longer ones are cut, as the API does).
pub const MAX_REASON: usize = 1024;
/// Longest message accepted from Redis.
pub const MAX_MESSAGE: usize = 4096;

/// One shared decision: a prefix on the graylist or blacklist until an absolute time (no
/// drift between nodes), who made it and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub net: IpNet,
    pub list: ListKind,
    /// Wall-clock milliseconds; `None`: never expires.
    pub until: Option<Ts>,
    pub origin: SharedOrigin,
    pub reason: String,
    /// The node that made it.
    pub node: String,
    /// When it was made, wall-clock milliseconds.
    pub at: Ts,
}

/// A change this node publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SharedOp {
    Put(Decision),
    Remove {
        list: ListKind,
        net: IpNet,
        node: String,
        at: Ts,
    },
}

impl SharedOp {
    /// The key of the decision it changes.
    pub fn key(&self) -> String {
        match self {
            SharedOp::Put(d) => key(d.list, d.net),
            SharedOp::Remove { list, net, .. } => key(*list, *net),
        }
    }
}

/// The field of a decision in the decisions hash: `blacklist 203.0.113.5/32`.
pub fn key(list: ListKind, net: IpNet) -> String {
    format!("{} {net}", list.as_str())
}

/// Why a message from Redis was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes (at most {MAX_MESSAGE})")]
    TooLong(usize),
    #[error("not a decision: {0}")]
    Shape(String),
    #[error("{0}")]
    Net(String),
    #[error("the whitelist is never taken from the fleet")]
    Whitelist,
    #[error("node name {0:?} {1}")]
    Node(String, &'static str),
    #[error("key {key:?} does not match its decision ({list} {net})")]
    Key {
        key: String,
        list: ListKind,
        net: IpNet,
    },
}

/// The wire form of a decision as it is read (the prefix as text, checked here).
#[derive(Deserialize)]
struct RawDecision {
    net: String,
    list: ListKind,
    until: Option<u64>,
    origin: SharedOrigin,
    #[serde(default)]
    reason: String,
    node: String,
    at: u64,
}

/// A decision as JSON, for Redis.
pub fn encode(d: &Decision) -> String {
    // A struct of strings and integers: serialisation cannot fail.
    serde_json::to_string(d).unwrap_or_default()
}

/// Parses and checks a decision read from Redis (the hash field `key`, if given, must be
/// its own). The prefix must be written as the API takes it (no host bits), the list is
/// the graylist or blacklist, the node a valid name; a long reason is cut.
pub fn decode(text: &str, field: Option<&str>) -> Result<Decision, WireError> {
    let key = field.map(parse_key).transpose()?;
    decode_keyed(text, key)
}

/// [`decode`] with the field already parsed (a resync reads a million: each key is parsed
/// once, and compared as a value rather than formatted again).
pub fn decode_keyed(text: &str, key: Option<(ListKind, IpNet)>) -> Result<Decision, WireError> {
    if text.len() > MAX_MESSAGE {
        return Err(WireError::TooLong(text.len()));
    }
    let raw: RawDecision =
        serde_json::from_str(text).map_err(|e| WireError::Shape(excerpt(&e.to_string())))?;
    let net = parse_net(&raw.net).map_err(|e| WireError::Net(e.to_string()))?;
    if raw.list == ListKind::Whitelist {
        return Err(WireError::Whitelist);
    }
    if let Some(p) = cluster_name_problem(&raw.node) {
        return Err(WireError::Node(excerpt(&raw.node), p));
    }
    if let Some((list, at)) = key {
        if (list, at) != (raw.list, net) {
            return Err(WireError::Key {
                key: excerpt(&self::key(list, at)),
                list: raw.list,
                net,
            });
        }
    }
    let mut reason = raw.reason;
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    Ok(Decision {
        net,
        list: raw.list,
        until: raw.until.map(Ts),
        origin: raw.origin,
        reason,
        node: raw.node,
        at: Ts(raw.at),
    })
}

/// Parses a hash field (`blacklist 203.0.113.5/32`) back into its list and prefix. Only
/// the form nodes write is a key (`203.0.113.5` or a long form of an IPv6 address would
/// name the same decision under a second field, which a removal would not find).
pub fn parse_key(field: &str) -> Result<(ListKind, IpNet), WireError> {
    let (list, net) = field.split_once(' ').ok_or_else(|| {
        WireError::Shape(format!("key {:?} is not `LIST PREFIX`", excerpt(field)))
    })?;
    let list: ListKind = list
        .parse()
        .map_err(|e: crate::model::UnknownVariant| WireError::Shape(e.to_string()))?;
    let net = parse_net(net).map_err(|e| WireError::Net(e.to_string()))?;
    let canonical = key(list, net);
    if canonical != field {
        return Err(WireError::Shape(format!(
            "key {:?} is not written as {canonical:?}",
            excerpt(field)
        )));
    }
    Ok((list, net))
}

/// Whether `net` holds `ip` or is held by a prefix holding it (overlap).
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b) || b.contains(&a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Decision {
        Decision {
            net: "203.0.113.5/32".parse().unwrap(),
            list: ListKind::Blacklist,
            until: Some(Ts(1_800_000_000_000)),
            origin: SharedOrigin::Manual,
            reason: "brute force".into(),
            node: "web-1".into(),
            at: Ts(1_700_000_000_000),
        }
    }

    #[test]
    fn a_decision_round_trips_with_its_key() {
        let text = encode(&d());
        assert_eq!(
            text,
            r#"{"net":"203.0.113.5/32","list":"blacklist","until":1800000000000,"origin":"manual","reason":"brute force","node":"web-1","at":1700000000000}"#
        );
        assert_eq!(decode(&text, Some("blacklist 203.0.113.5/32")), Ok(d()));
        assert_eq!(
            parse_key("blacklist 203.0.113.5/32"),
            Ok((ListKind::Blacklist, d().net))
        );
        let forever = Decision { until: None, ..d() };
        assert_eq!(decode(&encode(&forever), None), Ok(forever));
    }

    #[test]
    fn poisoned_messages_are_refused_with_the_reason() {
        let with = |field: &str, value: &str| {
            let mut v: serde_json::Value = serde_json::from_str(&encode(&d())).unwrap();
            v[field] = serde_json::from_str(value).unwrap();
            decode(&v.to_string(), None)
        };
        assert_eq!(
            with("list", r#""whitelist""#),
            Err(WireError::Whitelist),
            "a poisoned Redis cannot open the whitelist"
        );
        assert!(
            matches!(with("net", r#""10.0.0.1/8""#), Err(WireError::Net(m)) if m.contains("host bits"))
        );
        assert!(matches!(with("net", r#""banana""#), Err(WireError::Net(_))));
        assert!(matches!(with("node", r#""a b""#), Err(WireError::Node(..))));
        assert!(matches!(
            with("origin", r#""config""#),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(
            with("until", r#""soon""#),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(decode("not json", None), Err(WireError::Shape(_))));
        assert!(matches!(
            decode(&"x".repeat(MAX_MESSAGE + 1), None),
            Err(WireError::TooLong(_))
        ));
        assert!(matches!(
            decode(&encode(&d()), Some("graylist 203.0.113.5/32")),
            Err(WireError::Key { .. })
        ));
        // A field that is not a key at all refuses its decision too (it was compared as
        // text before the field was parsed once per decision).
        assert!(matches!(
            decode(&encode(&d()), Some("blacklist 203.0.113.5")),
            Err(WireError::Shape(m)) if m.contains("not written as \"blacklist 203.0.113.5/32\"")
        ));
        assert!(decode(&encode(&d()), Some("blacklist")).is_err());
        assert!(decode(&encode(&d()), Some("blacklist 203.0.113.5/33")).is_err());
        assert!(parse_key("blacklist").is_err());
        assert!(parse_key("blocklist 1.2.3.4/32").is_err());
        // A long reason is cut, not refused.
        let long = with("reason", &format!("\"{}\"", "é".repeat(1000))).unwrap();
        assert!(long.reason.len() <= MAX_REASON);
    }
}
