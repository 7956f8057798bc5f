//! The file as written: serde structs that keep each value's span, so that validation
//! (`validate.rs`) can point at the value it refuses.

use std::fmt;

use serde::{
    de::{value::MapAccessDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer,
};
use toml::Spanned;

/// The file as written. Values that are checked after parsing keep their span so the
/// error can point at them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config table")]
pub(super) struct RawConfig {
    pub(super) interface: Option<Spanned<String>>,
    // A string rather than `XdpMode`: serde's enum errors for a wrong type ("wanted
    // string or table") are cryptic and carry no key.
    pub(super) xdp_mode: Option<Spanned<String>>,
    pub(super) accumulate: Option<bool>,
    pub(super) rules_refresh: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) lists: RawLists,
    #[serde(default)]
    pub(super) maps: RawMaps,
    // Spanned so that "too many rules" can point at the first one too many.
    pub(super) rate_limit: Option<Spanned<Vec<Spanned<RawRateLimit>>>>,
    #[serde(default)]
    pub(super) escalation: RawEscalation,
    pub(super) report: Option<RawReport>,
    #[serde(default)]
    pub(super) rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) api: RawApi,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) protect: RawProtect,
    #[serde(default)]
    pub(super) flood: RawFlood,
    pub(super) cluster: Option<Spanned<RawCluster>>,
    pub(super) geo: Option<Spanned<RawGeo>>,
    #[serde(default)]
    pub(super) feed: Vec<Spanned<RawFeed>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[feed]] table")]
pub(super) struct RawFeed {
    pub(super) name: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) list: Option<Spanned<String>>,
    pub(super) refresh: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) max_change: Option<Spanned<f64>>,
    pub(super) exclude_bogons: Option<bool>,
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [geo] table")]
pub(super) struct RawGeo {
    pub(super) database: Option<Spanned<String>>,
    pub(super) block_countries: Option<Vec<Spanned<String>>>,
    pub(super) allow_countries: Option<Vec<Spanned<String>>>,
    pub(super) asn_database: Option<Spanned<String>>,
    pub(super) block_asns: Option<Vec<Spanned<i64>>>,
    pub(super) list: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [cluster] table")]
pub(super) struct RawCluster {
    pub(super) redis: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) share: Option<Vec<Spanned<String>>>,
    pub(super) apply: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [flood] table")]
pub(super) struct RawFlood {
    pub(super) unknown_syn_rate: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [protect] table")]
pub(super) struct RawProtect {
    #[serde(default)]
    pub(super) networks: Vec<Spanned<String>>,
    pub(super) interfaces: Option<bool>,
    pub(super) api_clients: Option<bool>,
    pub(super) min_prefix_v4: Option<Spanned<i64>>,
    pub(super) min_prefix_v6: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [lists] table")]
pub(super) struct RawLists {
    #[serde(default)]
    pub(super) whitelist: Vec<Spanned<RawListEntry>>,
    #[serde(default)]
    pub(super) graylist: Vec<Spanned<RawListEntry>>,
    #[serde(default)]
    pub(super) blacklist: Vec<Spanned<RawListEntry>>,
    #[serde(default)]
    pub(super) whitelist_files: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) graylist_files: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) blacklist_files: Vec<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
}

/// Capacities as `i64` (TOML's integer type), so that negative and oversized values
/// reach our range check and get an error that names the key.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [maps] table")]
pub(super) struct RawMaps {
    pub(super) sources_capacity: Option<Spanned<i64>>,
    pub(super) lpm_v4_capacity: Option<Spanned<i64>>,
    pub(super) lpm_v6_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[rate_limit]] table")]
pub(super) struct RawRateLimit {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) count: Option<Spanned<i64>>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) exempt: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [escalation] table")]
pub(super) struct RawEscalation {
    pub(super) graylist_duration: Option<Spanned<String>>,
    pub(super) strikes_to_blacklist: Option<Spanned<i64>>,
    pub(super) strike_window: Option<Spanned<String>>,
    pub(super) blacklist_duration: Option<Spanned<String>>,
    pub(super) ban_growth: Option<Spanned<f64>>,
    pub(super) max_ban: Option<Spanned<String>>,
    pub(super) relative_block: Option<bool>,
    pub(super) reset_strikes_after_blacklist: Option<bool>,
    pub(super) state_retention: Option<Spanned<String>>,
    pub(super) grace_violations: Option<Spanned<i64>>,
    pub(super) promote_when_full: Option<Spanned<i64>>,
    pub(super) promote_v4_after: Option<Spanned<i64>>,
    pub(super) promote_v6_after: Option<Spanned<i64>>,
    pub(super) promote_v4_prefix: Option<Spanned<i64>>,
    pub(super) promote_v6_prefix: Option<Spanned<i64>>,
    pub(super) promote_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [report] table")]
pub(super) struct RawReport {
    pub(super) count: Option<Spanned<i64>>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) duration: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[rules]] table")]
pub(super) struct RawRule {
    pub(super) action: Option<Spanned<String>>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) proto: Option<Spanned<String>>,
    pub(super) ports: Option<Spanned<Vec<Spanned<i64>>>>,
}

/// One inline entry of `[lists]`: an address or network, or a table that scopes one to a
/// protocol and ports.
pub(super) enum RawListEntry {
    Net(String),
    // Boxed: a list of a million plain entries stays a million strings.
    Scoped(Box<RawScopedEntry>),
}

/// `{ net = "203.0.113.0/24", proto = "tcp", ports = [25] }`. `net` is required, and
/// proto or ports (checked in validation, like the required keys of the sections).
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with net, and proto or ports"
)]
pub(super) struct RawScopedEntry {
    pub(super) net: Option<Spanned<String>>,
    pub(super) proto: Option<Spanned<String>>,
    pub(super) ports: Option<Spanned<Vec<Spanned<i64>>>>,
}

/// By hand rather than `#[serde(untagged)]`, which buffers every element as a generic
/// value before trying each variant: a plain string goes straight into `Net`.
impl<'de> Deserialize<'de> for RawListEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawListEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or network, or a table with net, and proto or ports")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawListEntry, E> {
                Ok(RawListEntry::Net(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RawListEntry, E> {
                Ok(RawListEntry::Net(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawListEntry, A::Error> {
                RawScopedEntry::deserialize(MapAccessDeserializer::new(map))
                    .map(|entry| RawListEntry::Scoped(Box::new(entry)))
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [api] table")]
pub(super) struct RawApi {
    // A string rather than `SocketAddr`, for an error that names the key.
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) max_body_bytes: Option<Spanned<i64>>,
    pub(super) metrics_auth: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [log] table")]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) max_bytes: Option<Spanned<i64>>,
    pub(super) backups: Option<Spanned<i64>>,
    pub(super) max_lines_per_sec: Option<Spanned<i64>>,
    pub(super) drop_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [state] table")]
pub(super) struct RawState {
    pub(super) dir: Option<Spanned<String>>,
    pub(super) pin_dir: Option<Spanned<String>>,
    pub(super) keep_attached: Option<bool>,
}
