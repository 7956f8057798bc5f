//! The validated config: what the rest of the daemon reads. Every default is stated where
//! the field is.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use ipguard_common::{DEFAULT_LPM_CAPACITY, DEFAULT_SOURCES_CAPACITY};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use super::protect::{MinPrefix, ProtectConfig};
use crate::{
    duration::Lifetime,
    model::{named_enum, Layer, ListKind, Mode, Scope},
    net::{parse_net, NetError},
};

/// Largest accepted `maps.sources_capacity`. The source map is a per-CPU LRU hash,
/// which the kernel preallocates in full at load time: roughly capacity × (64 bytes +
/// 32 bytes per CPU). 64 Mi entries is already tens of GB on a many-core machine, so
/// anything above it is taken for a typo rather than handed to the kernel.
pub const MAX_SOURCES_CAPACITY: u32 = 1 << 26;
named_enum! {
    /// How the XDP program is attached to the interface.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum XdpMode {
        /// Native (driver) mode where the driver supports XDP, generic (skb) mode otherwise.
        #[default]
        Auto = "auto",
        /// Driver mode only (`XDP_FLAGS_DRV_MODE`): fastest; attaching fails if the driver
        /// lacks XDP support.
        Native = "native",
        /// Generic mode (`XDP_FLAGS_SKB_MODE`): works on any interface, runs after the
        /// kernel has allocated the skb, so it is slower.
        Skb = "skb",
    }
}

named_enum! {
    /// How the daemon writes its own log (stderr): `[log] format` or `--log-format`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum LogFormat {
        /// One human-readable line per event.
        #[default]
        Text = "text",
        /// One JSON object per line (tracing-subscriber's JSON layer), for log shippers.
        Json = "json",
    }
}

/// The static lists of the `[lists]` section, in file order with duplicates removed.
/// Overlaps between lists are legal; precedence is decided when the rules are compiled.
/// With `[lists] mode = "monitor"` the file's graylist and blacklist entries are in
/// `monitor_graylist` and `monitor_blacklist` instead (so are `[geo]`'s prefixes with
/// `[geo] mode = "monitor"`, once merged by the daemon), and their scoped entries on the
/// monitored layers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lists {
    /// Always passed, never rate-limited, never listed by the daemon.
    pub whitelist: Vec<IpNet>,
    /// Dropped (in the file: temporary bans are usually added by the daemon instead).
    pub graylist: Vec<IpNet>,
    /// Dropped.
    pub blacklist: Vec<IpNet>,
    /// Monitor mode: passed and counted as would drop (graylist).
    pub monitor_graylist: Vec<IpNet>,
    /// Monitor mode: passed and counted as would drop (blacklist).
    pub monitor_blacklist: Vec<IpNet>,
    /// The inline entries written as tables (`{ net = ..., proto = ..., ports = ... }`):
    /// they apply only to the packets in their scope. Whitelist, graylist, then blacklist,
    /// each in file order with duplicates removed.
    pub scoped: Vec<ScopedEntry>,
}

/// One scoped entry of `[lists]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopedEntry {
    pub net: IpNet,
    /// [`Layer::White`], [`Layer::Gray`] or [`Layer::Black`]; [`Layer::MonitorGray`] or
    /// [`Layer::MonitorBlack`] with `[lists] mode = "monitor"`.
    pub layer: Layer,
    pub scope: Scope,
}

impl Lists {
    /// With [`Mode::Monitor`], the graylist and blacklist entries moved to their monitored
    /// lists (`[lists] mode`).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        if mode == Mode::Monitor {
            self.monitor_graylist.append(&mut self.graylist);
            self.monitor_blacklist.append(&mut self.blacklist);
            for entry in &mut self.scoped {
                entry.layer = match entry.layer {
                    Layer::Gray => Layer::MonitorGray,
                    Layer::Black => Layer::MonitorBlack,
                    other => other,
                };
            }
        }
        self
    }
}

/// Sizes of the kernel maps (`[maps]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapsConfig {
    /// Entries of the per-source counter LRU map; 1 ..= [`MAX_SOURCES_CAPACITY`].
    pub sources_capacity: u32,
    /// Entries of the IPv4 host map: addresses under prefixes longer than /24; at least 1.
    pub lpm_v4_capacity: u32,
    /// Entries of each IPv6 list map (anchors by /32, longer prefixes); at least 1.
    pub lpm_v6_capacity: u32,
}

impl Default for MapsConfig {
    fn default() -> Self {
        MapsConfig {
            sources_capacity: DEFAULT_SOURCES_CAPACITY,
            lpm_v4_capacity: DEFAULT_LPM_CAPACITY,
            lpm_v6_capacity: DEFAULT_LPM_CAPACITY,
        }
    }
}

/// Shortest accepted `[[rate_limit]] window`.
pub const MIN_RATE_WINDOW: Duration = Duration::from_millis(1);
/// Longest accepted `[[rate_limit]] window`. Counting packets over more than a day
/// is the job of the escalation's strikes, not of a rate window.
pub const MAX_RATE_WINDOW: Duration = Duration::from_secs(DAY);
/// Default `rules_refresh`.
pub const DEFAULT_RULES_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Shortest accepted `rules_refresh`: resolving every hostname more often than once
/// a second would only load the resolver.
pub const MIN_RULES_REFRESH: Duration = Duration::from_secs(1);

pub(crate) const HOUR: u64 = 3600;
pub(crate) const DAY: u64 = 24 * HOUR;

named_enum! {
    /// What a `[[rate_limit]]` rule counts per source.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RateKind {
        /// TCP segments with SYN set and ACK clear (connection attempts).
        Syn = "syn",
        /// Packets of any protocol.
        Packets = "packets",
        /// Bytes of the packets, as seen by XDP.
        Bytes = "bytes",
    }
}

/// One `[[rate_limit]]` rule: a source violates it when it sends more than `count`
/// (packets, SYNs or bytes) within `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// What is counted.
    pub kind: RateKind,
    /// Most units allowed per window; 1 ..= `u32::MAX`.
    pub count: u32,
    /// Length of the window; [`MIN_RATE_WINDOW`] ..= [`MAX_RATE_WINDOW`].
    pub window: Duration,
    /// Destination ports the rule is limited to (TCP and UDP packets to these ports
    /// only), in file order without duplicates, at most [`ipguard_common::MAX_RULE_PORTS`]. Empty: all
    /// packets, whatever the protocol.
    pub ports: Vec<u16>,
    /// Networks this rule never bans (`exempt`), in file order without duplicates: a source
    /// inside one is no violator of this rule, whatever it sends (another rule may still
    /// ban it).
    pub exempt: Vec<IpNet>,
}

impl RateLimit {
    /// Whether `ip` is inside one of the rule's `exempt` networks.
    pub fn exempts(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(&ip))
    }
}

/// The `[escalation]` section: what a violation costs a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// How long a violating source is graylisted (default 24h).
    pub graylist_duration: Duration,
    /// Graylistings within `strike_window` that get a source blacklisted; at least 1
    /// (default 3).
    pub strikes_to_blacklist: u32,
    /// How far back graylistings count as strikes (default 7d).
    pub strike_window: Duration,
    /// How long a blacklisting lasts, possibly forever (default 30d).
    pub blacklist_duration: Lifetime,
    /// Each further ban of the same source lasts this many times longer than the
    /// previous one; finite and at least 1.0 (default 2.0; 1.0 = no growth).
    pub ban_growth: f64,
    /// Cap for grown bans (default 365d).
    pub max_ban: Lifetime,
    /// `true`: a ban's end moves with each violation while banned (measured from the
    /// last one); `false` (default): fixed, measured from the violation that started it.
    pub relative_block: bool,
    /// Whether a source's strikes are cleared after a blacklisting ends (default `true`).
    pub reset_strikes_after_blacklist: bool,
    /// A source's strikes are forgotten after it has been quiet this long (default 30d).
    pub state_retention: Duration,
    /// Violations a first-time offender is forgiven before its first strike (default 0).
    pub grace_violations: u32,
    /// When a host ban does not fit the kernel's host table: ban the source's
    /// `/promote_v4_prefix` (IPv4) or `/promote_v6_prefix` (IPv6) instead if at least this
    /// many of its sources are banned already, and release their host entries (default 4;
    /// 0: never).
    pub promote_when_full: u32,
    /// Policy bans of IPv4 sources of one `/promote_v4_prefix` within `promote_window`
    /// that get the whole prefix banned in place of its host entries (default 0: never).
    pub promote_v4_after: u32,
    /// The same for IPv6 sources of one `/promote_v6_prefix` (default 0: never).
    pub promote_v6_after: u32,
    /// The prefix length IPv4 sources are promoted to, by count or when the table is
    /// full; 8 ..= 31 (default 24).
    pub promote_v4_prefix: u8,
    /// The prefix length IPv6 sources are promoted to; 16 ..= 127 (default 64).
    pub promote_v6_prefix: u8,
    /// How far back policy bans count towards `promote_v4_after` / `promote_v6_after`;
    /// at least 1s (default 10m).
    pub promote_window: Duration,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            graylist_duration: Duration::from_secs(24 * HOUR),
            strikes_to_blacklist: 3,
            strike_window: Duration::from_secs(7 * DAY),
            blacklist_duration: Lifetime::For(Duration::from_secs(30 * DAY)),
            ban_growth: 2.0,
            max_ban: Lifetime::For(Duration::from_secs(365 * DAY)),
            relative_block: false,
            reset_strikes_after_blacklist: true,
            state_retention: Duration::from_secs(30 * DAY),
            grace_violations: 0,
            promote_when_full: 4,
            promote_v4_after: 0,
            promote_v6_after: 0,
            promote_v4_prefix: 24,
            promote_v6_prefix: 64,
            promote_window: Duration::from_secs(10 * 60),
        }
    }
}

/// The `[report]` section: `count` reports about a source (`POST /report`) within
/// `window` ban it for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRule {
    /// Reports that trigger a ban; at least 1 (default 3).
    pub count: u32,
    /// How far back reports count (default 60s).
    pub window: Duration,
    /// Length of the ban (default 10m).
    pub duration: Duration,
}

impl Default for ReportRule {
    /// The values an empty `[report]` section gives.
    fn default() -> Self {
        ReportRule {
            count: 3,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(10 * 60),
        }
    }
}

/// Default `api.listen`: loopback only, so the API is not reachable from the network
/// unless the operator says so.
pub const DEFAULT_API_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// Default `api.max_body_bytes`: 8 MiB, room for a list of some 100 000 entries.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// Smallest accepted `api.max_body_bytes`.
pub const MIN_MAX_BODY_BYTES: usize = 1 << 10;
/// Largest accepted `api.max_body_bytes`: a body is held in memory whole.
pub const MAX_MAX_BODY_BYTES: usize = 256 << 20;

/// The `[api]` section: the REST API's socket and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address and port to listen on (default [`DEFAULT_API_LISTEN`]).
    pub listen: SocketAddr,
    /// File whose first line (trimmed) is the bearer token the API requires; `None`:
    /// no token. Absolute. Not read here: the daemon reads it when it starts, so the
    /// secret never passes through the config (nor `check-config` output).
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted; [`MIN_MAX_BODY_BYTES`] ..=
    /// [`MAX_MAX_BODY_BYTES`] (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// `/metrics` needs the token too (default `false`: open to whoever reaches the API).
    pub metrics_auth: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_API_LISTEN,
            token_file: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            metrics_auth: false,
        }
    }
}

/// Default `log.max_bytes`: 5 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 5 << 20;
/// Smallest accepted `log.max_bytes`: a record must fit in the file with room to spare.
pub const MIN_LOG_MAX_BYTES: u64 = 4096;
/// Default `log.backups`.
pub const DEFAULT_LOG_BACKUPS: u32 = 7;
/// Largest accepted `log.backups`: rotation renames every backup, so this bounds the
/// work of one rotation.
pub const MAX_LOG_BACKUPS: u32 = 1000;
/// Default `log.max_lines_per_sec`.
pub const DEFAULT_LOG_MAX_LINES_PER_SEC: u32 = 100;
/// Default `log.drop_interval`.
pub const DEFAULT_DROP_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest accepted `log.drop_interval`: drop records count whole seconds, and more
/// than one a second per source would defeat their aggregation.
pub const MIN_DROP_INTERVAL: Duration = Duration::from_secs(1);

/// The `[log]` section: the decision log (see [`crate::decision_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The daemon's own log (stderr), text (default) or JSON lines; not the decision log.
    pub format: LogFormat,
    /// The log file, absolute; `None` (default): no decision log.
    pub path: Option<PathBuf>,
    /// The file is rotated before a record would make it larger than this; at least
    /// [`MIN_LOG_MAX_BYTES`] (default [`DEFAULT_LOG_MAX_BYTES`]).
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` newest .. `path.N` oldest); 0 ..=
    /// [`MAX_LOG_BACKUPS`] (default [`DEFAULT_LOG_BACKUPS`]); 0: the file is truncated.
    pub backups: u32,
    /// Most records written per second (and the burst allowed); at least 1 (default
    /// [`DEFAULT_LOG_MAX_LINES_PER_SEC`]). A flood beyond it is counted, not written.
    pub max_lines_per_sec: u32,
    /// Aggregated drop records are written per source at most this often; at least
    /// [`MIN_DROP_INTERVAL`] (default [`DEFAULT_DROP_INTERVAL`]).
    pub drop_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            path: None,
            max_bytes: DEFAULT_LOG_MAX_BYTES,
            backups: DEFAULT_LOG_BACKUPS,
            max_lines_per_sec: DEFAULT_LOG_MAX_LINES_PER_SEC,
            drop_interval: DEFAULT_DROP_INTERVAL,
        }
    }
}

/// Default `state.dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ipguard";
/// Default `state.pin_dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ipguard";

/// The `[state]` section: where the daemon keeps what must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Persisted policy state (bans, strikes), absolute (default [`DEFAULT_STATE_DIR`]).
    pub dir: PathBuf,
    /// Where the maps and the XDP link are pinned, absolute; on a bpffs mount
    /// (default [`DEFAULT_PIN_DIR`]).
    pub pin_dir: PathBuf,
    /// At SIGTERM/SIGINT, leave the program attached and its maps pinned, for the next
    /// start to adopt without an unfiltered moment (default `false`: detach and unpin).
    pub keep_attached: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            keep_attached: false,
        }
    }
}

named_enum! {
    /// What a matching `[[rules]]` entry does with a source.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RuleAction {
        /// Let the source through.
        Allow = "allow",
        /// Drop the source's packets.
        Deny = "deny",
    }
}

/// Whom a `[[rules]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleSource {
    /// An address (as a host prefix) or a network.
    Net(IpNet),
    /// A DNS name, lower-case without a trailing dot; resolved every `rules_refresh`.
    Host(String),
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSource::Net(net) => net.fmt(f),
            RuleSource::Host(host) => f.write_str(host),
        }
    }
}

/// Why a string is not a rule source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSourceError {
    /// It looks like an address or network (it has a `/` or `:`, or only digits and
    /// dots) but is not a valid one.
    #[error(transparent)]
    Net(NetError),
    /// Neither an address, a network nor a hostname.
    #[error("{given:?} is neither an IP address, a CIDR nor a valid hostname")]
    Invalid {
        /// The text as given.
        given: String,
    },
}

impl FromStr for RuleSource {
    type Err = RuleSourceError;

    /// An address or network as [`parse_net`] reads it, or a hostname (RFC 1123:
    /// labels of letters, digits and inner hyphens, 1 to 63 characters, at most 253
    /// in all, at least one letter; one trailing dot allowed). Hostnames are
    /// lower-cased and lose the trailing dot.
    ///
    /// Text with a `/` or `:`, or of only digits and dots, is taken for an address,
    /// so `"300.1.1.1"` and `"10.0.0.1/8"` get the address error, not a hostname one.
    /// Surrounding whitespace also gets [`parse_net`]'s error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let looks_numeric = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if s.trim() != s || s.contains(['/', ':']) || looks_numeric {
            return parse_net(s)
                .map(RuleSource::Net)
                .map_err(RuleSourceError::Net);
        }
        hostname(s)
            .map(RuleSource::Host)
            .ok_or_else(|| RuleSourceError::Invalid {
                given: crate::model::excerpt(s),
            })
    }
}

/// `s` as a canonical hostname (lower-case, no trailing dot), or `None` if it is not
/// a valid one.
fn hostname(s: &str) -> Option<String> {
    const MAX_LEN: usize = 253;
    const MAX_LABEL_LEN: usize = 63;
    let name = s.strip_suffix('.').unwrap_or(s);
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let valid = !name.is_empty()
        && name.len() <= MAX_LEN
        && name.split('.').all(label_ok)
        && name.bytes().any(|b| b.is_ascii_alphabetic());
    valid.then(|| name.to_ascii_lowercase())
}

/// One `[[rules]]` entry. The rules are kept in file order: the first that matches a
/// source decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What a match does.
    pub action: RuleAction,
    /// Whom the rule matches.
    pub source: RuleSource,
    /// Which of the source's packets it applies to (`proto`, `ports`; `ports` alone: TCP
    /// and UDP); `None`: all of them.
    pub scope: Option<Scope>,
}

/// The validated config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Interface to attach to; `None` if the file leaves it to the command line.
    pub interface: Option<String>,
    /// `xdp_mode`, default [`XdpMode::Auto`].
    pub xdp_mode: XdpMode,
    /// `true`: sliding windows, counts carried across window boundaries; `false`
    /// (default): fixed windows that start from zero.
    pub accumulate: bool,
    /// How often the hostnames in `rules` are resolved again; at least
    /// [`MIN_RULES_REFRESH`], default [`DEFAULT_RULES_REFRESH`].
    pub rules_refresh: Duration,
    /// `mode`: whether drops are carried out, default [`Mode::Enforce`]. Applied at start
    /// and at every reload; `PUT /v1/mode` switches it until then.
    pub mode: Mode,
    /// The `[lists]` section.
    pub lists: Lists,
    /// The `[maps]` section.
    pub maps: MapsConfig,
    /// The `[[rate_limit]]` rules, in file order; a source violates when it exceeds
    /// any of them. At most [`ipguard_common::MAX_RATE_RULES`]; empty = no rate limiting.
    pub rate_limit: Vec<RateLimit>,
    /// The `[escalation]` section.
    pub escalation: Escalation,
    /// The `[report]` section; `None` if absent: reports are then only logged.
    pub report: Option<ReportRule>,
    /// The `[[rules]]` entries, in file order (first match wins).
    pub rules: Vec<Rule>,
    /// The `[api]` section.
    pub api: ApiConfig,
    /// The `[log]` section.
    pub log: LogConfig,
    /// The `[state]` section.
    pub state: StateConfig,
    /// The `[protect]` section.
    pub protect: ProtectConfig,
    /// The `[flood]` section.
    pub flood: FloodSettings,
    /// The `[cluster]` section; `None`: this node shares nothing.
    pub cluster: Option<ClusterConfig>,
    /// The `[geo]` section; `None`: no geo-blocking.
    pub geo: Option<GeoConfig>,
    /// The `[[feed]]` tables, in file order (names unique).
    pub feeds: Vec<FeedConfig>,
}

/// Shortest `[[feed]] refresh` (sources ask for much longer: Spamhaus for at least 1h).
pub const MIN_FEED_REFRESH: Duration = Duration::from_secs(1);
/// `[[feed]] refresh` unless set.
pub const DEFAULT_FEED_REFRESH: Duration = Duration::from_secs(3600);
/// `[[feed]] max_change` unless set: an update changing more than half the feed is held.
pub const DEFAULT_FEED_MAX_CHANGE: f64 = 0.5;

/// One `[[feed]]`: a blocklist fetched and refreshed by the daemon (see [`crate::feeds`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// Unique; also the name of its last good copy in `state.dir/feeds`.
    pub name: String,
    pub source: crate::feeds::Source,
    pub list: ListKind,
    pub refresh: Duration,
    pub format: crate::feeds::FeedFormat,
    /// Largest share of the feed an update may change before it is held for an operator:
    /// (added + removed) / entries in force.
    pub max_change: f64,
    pub exclude_bogons: bool,
    /// [`Mode::Monitor`](crate::model::Mode::Monitor): its entries pass, counted as would
    /// drop (graylist and blacklist feeds; a whitelist feed is always enforced).
    pub mode: crate::model::Mode,
}

/// Which countries `[geo]` drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeoCountries {
    /// No country rule (only ASNs, if any).
    None,
    /// `block_countries`: these are dropped.
    Block(std::collections::BTreeSet<String>),
    /// `allow_countries`: every other address is dropped, those the database does not
    /// know included (special-purpose ranges excepted; the whitelist still wins).
    Allow(std::collections::BTreeSet<String>),
}

/// The `[geo]` section: countries and ASNs compiled from MaxMind databases into prefixes
/// on a list (see [`crate::geo`]); read at start, at reloads and when a file changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// The country database (GeoLite2-Country or DB-IP country lite format).
    pub database: Option<PathBuf>,
    pub countries: GeoCountries,
    /// The ASN database (GeoLite2-ASN format), for `block_asns`.
    pub asn_database: Option<PathBuf>,
    pub block_asns: std::collections::BTreeSet<u32>,
    /// The list the prefixes go on: blacklist (default) or graylist.
    pub list: ListKind,
    /// `mode`: [`Mode::Monitor`] puts the prefixes on the list's monitored layer (passed,
    /// counted as would drop); default [`Mode::Enforce`].
    pub mode: Mode,
}

named_enum! {
    /// Which kind of decision a node shares with its fleet, or accepts from it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum SharedOrigin {
        /// An operator's, through the API or the CLI.
        Manual = "manual",
        /// A rate rule's.
        Policy = "policy",
        /// The protected application's reports.
        Report = "report",
        /// A blocklist feed's.
        Feed = "feed",
    }
}

/// The `[cluster]` section: decisions shared with other nodes through one Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[user@]host[:port][/db]` or `rediss://` (TLS), validated (the password goes
    /// in `password_file`).
    pub redis: String,
    /// A file whose first line is the Redis password (AUTH).
    pub password_file: Option<PathBuf>,
    /// With `rediss://`: the PEM certificate(s) of the CA that signed the server's, instead
    /// of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// This node's name in the fleet (default: the host name).
    pub node: String,
    /// Key namespace in Redis, so that several fleets can share one server.
    pub prefix: String,
    /// Origins this node publishes (all by default).
    pub share: Vec<SharedOrigin>,
    /// Origins this node accepts from others (all by default).
    pub apply: Vec<SharedOrigin>,
}

/// Default `[cluster] prefix`.
pub const DEFAULT_CLUSTER_PREFIX: &str = "ipguard";

/// Why `name` cannot name a node or a key prefix: 1 to 64 bytes of letters, digits, `.`,
/// `_`, `-` (they are written into Redis keys and shown in logs).
pub fn cluster_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 64 {
        Some("must be at most 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may hold only letters, digits, `.`, `_` and `-`")
    } else {
        None
    }
}

/// The `[flood]` section: defences that do not wait for a source to be banned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodSettings {
    /// TCP SYNs per second (all CPUs together) the XDP program passes from sources not
    /// known good (that never sent anything else than SYNs); 0: no budget.
    pub unknown_syn_rate: u32,
}

/// The largest `flood.unknown_syn_rate`.
pub const MAX_UNKNOWN_SYN_RATE: i64 = 100_000_000;

impl Default for Config {
    /// What an empty file gives.
    fn default() -> Self {
        Config {
            interface: None,
            xdp_mode: XdpMode::default(),
            accumulate: false,
            rules_refresh: DEFAULT_RULES_REFRESH,
            mode: Mode::default(),
            lists: Lists::default(),
            maps: MapsConfig::default(),
            rate_limit: Vec::new(),
            escalation: Escalation::default(),
            report: None,
            rules: Vec::new(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            state: StateConfig::default(),
            protect: ProtectConfig::default(),
            flood: FloodSettings::default(),
            cluster: None,
            geo: None,
            feeds: Vec::new(),
        }
    }
}
