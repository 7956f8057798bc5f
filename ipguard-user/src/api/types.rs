//! JSON bodies of the REST API, shared by the server (`api`) and the CLI client (`cli`).
//! The shapes are the API contract (see openapi.yaml); change both sides together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest page `GET /v1/lists/{list}` returns (the CLI's `--limit` bound too).
pub const MAX_PAGE: usize = 10_000;

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `degraded` (filtering, with problems) or `unavailable` (503).
    pub status: String,
    /// What is wrong, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Answer to `POST /v1/reload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub reloaded: bool,
    /// Changed settings that take effect only after a restart.
    pub restart_needed: Vec<String>,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// Capacity and use of one kernel map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFill {
    pub capacity: u64,
    pub used: u64,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub interface: String,
    /// `native` or `skb`.
    pub xdp_mode: String,
    /// `enforce`, or `monitor` (drops are only counted: see `GET /v1/mode`).
    pub mode: String,
    pub uptime_seconds: u64,
    /// Entries per list (`whitelist`, `graylist`, `blacklist`) and `rules`; `scoped`: the
    /// config's port- or protocol-scoped list entries, when there are any.
    pub entries: BTreeMap<String, u64>,
    /// Sources with policy history (violations, strikes, reports).
    pub tracked_sources: u64,
    /// Packet and byte totals per verdict: `pass`, `drop`.
    pub verdicts: BTreeMap<String, Traffic>,
    /// Totals per deciding list: `unlisted`, `whitelist`, `graylist`, `blacklist`, `rule`,
    /// `non_ip`, `malformed`, `syn_budget`, and monitor mode's `would_drop_graylist`,
    /// `would_drop_blacklist`, `would_drop_rule` (passed).
    pub lists: BTreeMap<String, Traffic>,
    /// `lpm_v4`, `lpm_v6`, `sources`.
    pub maps: BTreeMap<String, MapFill>,
    /// What is wrong while it filters (a full table, a disk that cannot be written).
    #[serde(default)]
    pub problems: Vec<ProblemView>,
}

/// One problem in `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemView {
    /// `table_full`, `table_write`, `persist`, `xdp_link`.
    pub kind: String,
    pub detail: String,
    /// RFC 3339.
    pub since: String,
    /// Occurrences since then.
    pub count: u64,
}

/// Per-source counters in `GET /v1/ips/{ip}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCounters {
    pub packets: u64,
    pub bytes: u64,
    pub syns: u64,
    pub dropped: u64,
}

/// `GET /v1/ips/{ip}`: what ipguard does with one address and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpStatus {
    pub ip: String,
    /// `pass` or `drop`.
    pub verdict: String,
    /// `whitelist`, `graylist`, `blacklist`, or null (unlisted; a rule may still decide).
    pub list: Option<String>,
    /// Monitor mode: passed, and would be dropped in enforce mode (by `list` or the rule).
    /// Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_drop: bool,
    /// The prefix that decided, e.g. `203.0.113.0/24`.
    pub prefix: Option<String>,
    pub reason: Option<String>,
    /// `config`, `api`, `rate_limit`, `report`, `cluster`, `geo` or `rule`.
    pub source: Option<String>,
    pub strikes: u32,
    /// RFC 3339, or null when the entry never expires (or there is none).
    pub expires: Option<String>,
    /// Seconds until `expires`.
    pub retry_after: Option<u64>,
    pub counters: IpCounters,
    /// The fleet node that made the deciding entry (`[cluster]` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The address's country (ISO 3166-1 code), when `[geo]` has a country database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Its autonomous system, when `[geo]` has an ASN database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn_org: Option<String>,
    /// The packet explained (`?packet=`), e.g. `tcp/22`; left out for the address's
    /// own verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet: Option<String>,
    /// The address's packets that port- or protocol-scoped rules or list entries decide
    /// otherwise than `verdict`. Left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scoped: Vec<ScopedVerdictView>,
}

/// One entry of `IpStatus::scoped`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedVerdictView {
    /// `tcp/22`, `udp`, `icmp`, `tcp (other ports)`.
    pub packets: String,
    /// `pass` or `drop`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_drop: bool,
    pub list: Option<String>,
    pub prefix: Option<String>,
    pub reason: Option<String>,
    pub source: Option<String>,
}

/// `GET /v1/mode` and the answer to `PUT /v1/mode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeView {
    /// `enforce` or `monitor`: the mode in force.
    pub mode: String,
    /// The config file's `mode`: applied at start, and at a reload that finds it changed.
    pub config_mode: String,
}

/// `PUT /v1/mode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    /// `enforce` or `monitor`.
    pub mode: String,
}

/// Largest `limit` of `GET /v1/offenders`.
pub const MAX_OFFENDERS: usize = 1000;

/// `GET /v1/offenders?limit=`: sources with policy history, most strikes first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenderList {
    pub offenders: Vec<OffenderView>,
}

/// One source in [`OffenderList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenderView {
    pub ip: String,
    /// Strikes within the strike window.
    pub strikes: u32,
    /// Reports within the report window.
    pub reports: u32,
    /// RFC 3339: its latest violation, report or ban end.
    pub last_activity: String,
    /// `graylist` or `blacklist` when a ban covers it now, else null.
    pub list: Option<String>,
    /// The banning prefix.
    pub prefix: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339, or null when the ban never expires (or there is none).
    pub expires: Option<String>,
    pub counters: IpCounters,
}

/// `GET /v1/feeds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedList {
    pub feeds: Vec<FeedView>,
}

/// One `[[feed]]` in [`FeedList`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedView {
    pub name: String,
    /// `whitelist`, `graylist` or `blacklist`.
    pub list: String,
    /// The URL (without credentials or query) or the path.
    pub source: String,
    pub format: String,
    /// Entries in force.
    pub entries: u64,
    /// RFC 3339; null before the first fetch.
    pub last_fetch: Option<String>,
    pub last_change: Option<String>,
    /// The last fetch's error, until one succeeds (the last good entries stay).
    pub last_error: Option<String>,
    pub next_fetch: String,
    pub fetches: u64,
    pub failures: u64,
    /// Lines of the last body that were not entries, and some of them.
    pub rejected_lines: u64,
    pub rejected_samples: Vec<String>,
    /// Entries of the last body the hygiene dropped, by why (`protected`, `too_broad`,
    /// `bogon`), and some of them.
    pub dropped: BTreeMap<String, u64>,
    pub dropped_samples: Vec<String>,
    /// An update held back for an operator (`POST /v1/feeds/{name}/accept`).
    pub held: Option<HeldView>,
}

/// A held feed update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldView {
    pub reason: String,
    pub added: u64,
    pub removed: u64,
    pub since: String,
}

/// `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Whether `[cluster]` is configured; the rest is empty when it is not.
    pub enabled: bool,
    pub node: Option<String>,
    /// `up` or `down`.
    pub link: String,
    /// RFC 3339: since when the link is in this state.
    pub since: Option<String>,
    pub last_error: Option<String>,
    /// Nodes seen, with their last heartbeat (RFC 3339).
    pub nodes: Vec<ClusterNode>,
    /// Decisions in the fleet's shared set.
    pub shared: u64,
    /// Changes waiting to be published.
    pub queued: u64,
    /// Milliseconds from the last applied decision's making to its application here.
    pub last_lag_ms: Option<u64>,
    /// The last resync: how long it took and how many decisions it read.
    pub last_resync_ms: Option<u64>,
    pub last_resync_decisions: Option<u64>,
    pub resyncs: u64,
    pub published: u64,
    pub applied: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub removed: u64,
    pub dropped: u64,
}

/// One node in [`ClusterView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    pub last_seen: String,
}

/// One entry of `GET /v1/lists/{list}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntryView {
    pub net: String,
    pub expires: Option<String>,
    pub reason: String,
    pub source: String,
}

/// `GET /v1/lists/{list}?limit=&cursor=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub entries: Vec<ListEntryView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One entry of `POST /v1/lists/{list}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddEntry {
    pub net: String,
    /// `90s`, `2h`, `30d`, `forever`, or null (= forever).
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/lists/{list}`: all entries are applied, or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    pub entries: Vec<AddEntry>,
    /// Needed to list a prefix that covers the caller's own address or loopback.
    #[serde(default)]
    pub force: bool,
}

/// Answer to `POST /v1/lists/{list}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResponse {
    /// Entries that were not on the list before.
    pub added: u64,
    /// Entries that replaced one with the same prefix.
    pub replaced: u64,
}

/// Answer to `DELETE /v1/lists/{list}/{net}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub removed: String,
}

/// `POST /v1/report`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub ip: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Answer to `POST /v1/report`: what the report did, and the address's new state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// `recorded`, `banned`, `already_banned`, `whitelisted`.
    pub outcome: String,
    /// Reports of this address within the report window.
    pub reports: Option<u32>,
    #[serde(flatten)]
    pub status: IpStatus,
}

/// Every 4xx/5xx body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A short, stable description, e.g. `invalid entry`.
    pub error: String,
    /// What exactly is wrong, naming the field or value.
    pub detail: String,
    /// Index of the offending entry in a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}
