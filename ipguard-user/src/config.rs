//! The daemon's TOML config file (see `ipguard.example.toml` at the workspace root).
//!
//! Every error is one line that starts with `file:line:column`, so an operator (or an
//! editor's quickfix list) lands on the mistake. The file is deserialized into private
//! `Raw*` structs that keep each value's byte span, then validated into [`Config`].
//! Keys are checked strictly (`deny_unknown_fields`) so a typo is an error rather
//! than a silently ignored setting.
//!
//! Required keys inside a section (`[[rate_limit]] count`, ...) are `Option`s in the
//! raw structs and checked here rather than by serde, so that a missing one is
//! reported with the key path of its table (``rate_limit[1]: missing field `count` ``).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipguard_common::{DEFAULT_LPM_CAPACITY, DEFAULT_SOURCES_CAPACITY};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::duration::{parse_duration, parse_lifetime, DurationError, Lifetime};
use crate::net::{parse_net, NetError};

/// Largest accepted `maps.sources_capacity`. The source map is a per-CPU LRU hash,
/// which the kernel preallocates in full at load time: roughly capacity × (64 bytes +
/// 32 bytes per CPU). 64 Mi entries is already tens of GB on a many-core machine, so
/// anything above it is taken for a typo rather than handed to the kernel.
pub const MAX_SOURCES_CAPACITY: u32 = 1 << 26;

/// How the XDP program is attached to the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports XDP, generic (skb) mode otherwise.
    #[default]
    Auto,
    /// Driver mode only (`XDP_FLAGS_DRV_MODE`): fastest; attaching fails if the driver
    /// lacks XDP support.
    Native,
    /// Generic mode (`XDP_FLAGS_SKB_MODE`): works on any interface, runs after the
    /// kernel has allocated the skb, so it is slower.
    Skb,
}

impl XdpMode {
    /// Every mode, in the order the error messages list them.
    pub const ALL: [XdpMode; 3] = [XdpMode::Auto, XdpMode::Native, XdpMode::Skb];

    /// The name used in the config file and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`XdpMode`]. Worded like serde's message, so the config file
/// and the command line report a bad mode the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant `{given}`, expected one of `auto`, `native`, `skb`")]
pub struct ParseXdpModeError {
    /// The text as given.
    pub given: String,
}

impl FromStr for XdpMode {
    type Err = ParseXdpModeError;

    /// Exact, lower-case names only, like the config file.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        XdpMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseXdpModeError {
                given: s.to_owned(),
            })
    }
}

/// The static lists of the `[lists]` section, in file order with duplicates removed.
/// Overlaps between lists are legal; precedence is decided when the rules are compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lists {
    /// Always passed, never rate-limited, never listed by the daemon.
    pub whitelist: Vec<IpNet>,
    /// Dropped (in the file: temporary bans are usually added by the daemon instead).
    pub graylist: Vec<IpNet>,
    /// Dropped.
    pub blacklist: Vec<IpNet>,
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

/// Maximum number of `[[rate_limit]]` rules (the data path keeps one window per rule
/// and source).
pub const MAX_RATE_RULES: usize = 4;
/// Maximum number of distinct destination ports one `[[rate_limit]]` rule can be
/// scoped to.
pub const MAX_RULE_PORTS: usize = 8;
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

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// A name in the config file that is not one of the choices. Worded like serde's
/// message (and [`ParseXdpModeError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant `{given}`, expected one of {expected}")]
pub struct UnknownVariant {
    /// The text as given.
    pub given: String,
    /// The choices, each in backquotes: "`syn`, `packets`, `bytes`".
    pub expected: &'static str,
}

/// What a `[[rate_limit]]` rule counts per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// TCP segments with SYN set and ACK clear (connection attempts).
    Syn,
    /// Packets of any protocol.
    Packets,
    /// Bytes of the packets, as seen by XDP.
    Bytes,
}

impl RateKind {
    /// Every kind, in the order the error messages list them.
    pub const ALL: [RateKind; 3] = [RateKind::Syn, RateKind::Packets, RateKind::Bytes];

    /// The name used in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            RateKind::Syn => "syn",
            RateKind::Packets => "packets",
            RateKind::Bytes => "bytes",
        }
    }
}

impl fmt::Display for RateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RateKind {
    type Err = UnknownVariant;

    /// Exact, lower-case names only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RateKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                given: s.to_owned(),
                expected: "`syn`, `packets`, `bytes`",
            })
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
    /// only), in file order without duplicates, at most [`MAX_RULE_PORTS`]. Empty: all
    /// packets, whatever the protocol.
    pub ports: Vec<u16>,
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_API_LISTEN,
            token_file: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
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
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

/// What a matching `[[rules]]` entry does with a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Let the source through.
    Allow,
    /// Drop the source's packets.
    Deny,
}

impl RuleAction {
    /// Both actions, in the order the error messages list them.
    pub const ALL: [RuleAction; 2] = [RuleAction::Allow, RuleAction::Deny];

    /// The name used in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        }
    }
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuleAction {
    type Err = UnknownVariant;

    /// Exact, lower-case names only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleAction::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                given: s.to_owned(),
                expected: "`allow`, `deny`",
            })
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
                given: s.to_owned(),
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
    /// The `[lists]` section.
    pub lists: Lists,
    /// The `[maps]` section.
    pub maps: MapsConfig,
    /// The `[[rate_limit]]` rules, in file order; a source violates when it exceeds
    /// any of them. At most [`MAX_RATE_RULES`]; empty = no rate limiting.
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
}

impl Default for Config {
    /// What an empty file gives.
    fn default() -> Self {
        Config {
            interface: None,
            xdp_mode: XdpMode::default(),
            accumulate: false,
            rules_refresh: DEFAULT_RULES_REFRESH,
            lists: Lists::default(),
            maps: MapsConfig::default(),
            rate_limit: Vec::new(),
            escalation: Escalation::default(),
            report: None,
            rules: Vec::new(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            state: StateConfig::default(),
        }
    }
}

/// A place in the config text: 1-based line and column, the column counted in
/// characters (not bytes), as editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text).
    pub fn at_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a config file was rejected. Every message is a single line starting with the
/// file name (and `:line:column` when the problem has a place).
///
/// Causes (an I/O error, a [`NetError`]) are part of the message and deliberately not
/// exposed as `source()`: `anyhow`'s `{:#}` would otherwise print them twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read: missing, not readable, a directory, not UTF-8.
    #[error("{origin}: cannot read: {reason}")]
    Read {
        origin: String,
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        reason: String,
    },
    /// Not valid TOML, or not the shape of a config: a syntax error, an unknown key,
    /// a duplicate key, a value of the wrong type.
    #[error("{origin}{}: {message}", colon_position(.at))]
    Toml {
        origin: String,
        at: Option<Position>,
        /// The TOML parser's message, joined into one line.
        message: String,
    },
    /// `interface` is not a name the kernel accepts for a network interface.
    #[error("{origin}:{at}: interface: {name:?} is not a valid interface name: {reason}")]
    Interface {
        origin: String,
        at: Position,
        name: String,
        reason: &'static str,
    },
    /// `xdp_mode` is not one of `auto`, `native`, `skb`.
    #[error("{origin}:{at}: xdp_mode: {error}")]
    XdpMode {
        origin: String,
        at: Position,
        error: ParseXdpModeError,
    },
    /// A list entry is not an IP address or network.
    #[error("{origin}:{at}: {key}: {error}")]
    ListEntry {
        origin: String,
        at: Position,
        /// Where the entry is, e.g. `lists.blacklist[1]` (index as in the file).
        key: String,
        error: NetError,
    },
    /// A list file cannot be used: relative path, unreadable.
    #[error("{origin}:{at}: {key}: {path:?} {problem}")]
    ListFile {
        origin: String,
        at: Position,
        /// Where the path is, e.g. `lists.blacklist_files[0]`.
        key: String,
        path: String,
        /// What is wrong, as a predicate: "is not an absolute path".
        problem: String,
    },
    /// A line of a list file is not an IP address or network.
    #[error("{path}:{line}: {error}")]
    ListFileEntry {
        path: String,
        /// 1-based.
        line: usize,
        error: NetError,
    },
    /// A map capacity is outside what the map can take.
    #[error("{origin}:{at}: {key}: must be between {min} and {max}, got {value}")]
    Capacity {
        origin: String,
        at: Position,
        /// The full key, e.g. `maps.sources_capacity`.
        key: &'static str,
        value: i64,
        min: u32,
        max: u32,
    },
    /// An integer outside the range its key allows.
    #[error("{origin}:{at}: {key}: must be between {min} and {max}, got {value}")]
    OutOfRange {
        origin: String,
        at: Position,
        /// The full key, e.g. `rate_limit[0].count` or `rate_limit[1].ports[2]`.
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    /// A name that is not one of the key's choices (`kind`, `action`).
    #[error("{origin}:{at}: {key}: {error}")]
    UnknownVariant {
        origin: String,
        at: Position,
        key: String,
        error: UnknownVariant,
    },
    /// A duration that does not parse, is zero, or is `forever` where not allowed.
    #[error("{origin}:{at}: {key}: {error}")]
    Duration {
        origin: String,
        at: Position,
        key: String,
        error: DurationError,
    },
    /// A valid duration outside the range its key allows.
    #[error("{origin}:{at}: {key}: must be {}, got {given}", duration_bounds(.min, .max))]
    DurationRange {
        origin: String,
        at: Position,
        key: String,
        /// The duration as written.
        given: String,
        min: Duration,
        /// `None`: no upper bound.
        max: Option<Duration>,
    },
    /// `escalation.ban_growth` is below 1.0, NaN or infinite.
    #[error("{origin}:{at}: escalation.ban_growth: must be a finite number >= 1.0, got {value}")]
    BanGrowth {
        origin: String,
        at: Position,
        /// The value as TOML spells it (`0.5`, `nan`, `inf`); a string because a
        /// float would keep this enum from being `Eq`.
        value: String,
    },
    /// More entries than the data path can hold.
    #[error("{origin}:{at}: {key}: at most {max} {what} are supported, found {found}")]
    TooMany {
        origin: String,
        /// The first entry past the limit.
        at: Position,
        /// `rate_limit` or `rate_limit[0].ports`.
        key: String,
        /// What is counted: "rules", "distinct ports".
        what: &'static str,
        max: usize,
        found: usize,
    },
    /// A table lacks a required key.
    #[error("{origin}:{at}: {key}: missing field `{field}`")]
    MissingField {
        origin: String,
        /// The table's header (or opening brace of an inline table).
        at: Position,
        /// The table, e.g. `rate_limit[0]`.
        key: String,
        field: &'static str,
    },
    /// `api.listen` is not an address and port.
    #[error(
        "{origin}:{at}: {key}: {given:?} is not an IP address and port (e.g. \"127.0.0.1:9180\")"
    )]
    SocketAddr {
        origin: String,
        at: Position,
        key: &'static str,
        /// The text as given.
        given: String,
    },
    /// A path the daemon cannot use: relative, empty, with a NUL byte, or (for a file)
    /// ending in `/`.
    #[error("{origin}:{at}: {key}: {given:?} {problem}")]
    Path {
        origin: String,
        at: Position,
        key: &'static str,
        /// The text as given.
        given: String,
        /// What is wrong, as a predicate: "is not an absolute path".
        problem: &'static str,
    },
    /// A `[[rules]]` source is neither an address, a network nor a hostname.
    #[error("{origin}:{at}: {key}: {error}")]
    RuleSource {
        origin: String,
        at: Position,
        key: String,
        error: RuleSourceError,
    },
}

fn colon_position(at: &Option<Position>) -> String {
    at.map(|at| format!(":{at}")).unwrap_or_default()
}

fn duration_bounds(min: &Duration, max: &Option<Duration>) -> String {
    use crate::duration::format_duration;
    match max {
        Some(max) => format!(
            "between {} and {}",
            format_duration(*min),
            format_duration(*max)
        ),
        None => format!("at least {}", format_duration(*min)),
    }
}

/// The file as written. Values that are checked after parsing keep their span so the
/// error can point at them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config table")]
struct RawConfig {
    interface: Option<Spanned<String>>,
    // A string rather than `XdpMode`: serde's enum errors for a wrong type ("wanted
    // string or table") are cryptic and carry no key.
    xdp_mode: Option<Spanned<String>>,
    accumulate: Option<bool>,
    rules_refresh: Option<Spanned<String>>,
    #[serde(default)]
    lists: RawLists,
    #[serde(default)]
    maps: RawMaps,
    // Spanned so that "too many rules" can point at the first one too many.
    rate_limit: Option<Spanned<Vec<Spanned<RawRateLimit>>>>,
    #[serde(default)]
    escalation: RawEscalation,
    report: Option<RawReport>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    state: RawState,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [lists] table")]
struct RawLists {
    #[serde(default)]
    whitelist: Vec<Spanned<String>>,
    #[serde(default)]
    graylist: Vec<Spanned<String>>,
    #[serde(default)]
    blacklist: Vec<Spanned<String>>,
    #[serde(default)]
    whitelist_files: Vec<Spanned<String>>,
    #[serde(default)]
    graylist_files: Vec<Spanned<String>>,
    #[serde(default)]
    blacklist_files: Vec<Spanned<String>>,
}

/// Capacities as `i64` (TOML's integer type), so that negative and oversized values
/// reach our range check and get an error that names the key.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [maps] table")]
struct RawMaps {
    sources_capacity: Option<Spanned<i64>>,
    lpm_v4_capacity: Option<Spanned<i64>>,
    lpm_v6_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[rate_limit]] table")]
struct RawRateLimit {
    kind: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<Spanned<i64>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [escalation] table")]
struct RawEscalation {
    graylist_duration: Option<Spanned<String>>,
    strikes_to_blacklist: Option<Spanned<i64>>,
    strike_window: Option<Spanned<String>>,
    blacklist_duration: Option<Spanned<String>>,
    ban_growth: Option<Spanned<f64>>,
    max_ban: Option<Spanned<String>>,
    relative_block: Option<bool>,
    reset_strikes_after_blacklist: Option<bool>,
    state_retention: Option<Spanned<String>>,
    grace_violations: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [report] table")]
struct RawReport {
    count: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[rules]] table")]
struct RawRule {
    action: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [api] table")]
struct RawApi {
    // A string rather than `SocketAddr`, for an error that names the key.
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [log] table")]
struct RawLog {
    path: Option<Spanned<String>>,
    max_bytes: Option<Spanned<i64>>,
    backups: Option<Spanned<i64>>,
    max_lines_per_sec: Option<Spanned<i64>>,
    drop_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [state] table")]
struct RawState {
    dir: Option<Spanned<String>>,
    pin_dir: Option<Spanned<String>>,
}

/// What a path from the config file names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    File,
    Dir,
}

/// `nets` without repeats, first occurrences in their order. By sorting rather than a hash
/// set: for a list of millions, a sort's sequential passes beat a hash table's cache misses.
fn dedup_in_order(nets: Vec<IpNet>) -> Vec<IpNet> {
    let mut sorted: Vec<(IpNet, u32)> = nets.iter().zip(0u32..).map(|(n, i)| (*n, i)).collect();
    sorted.sort_unstable();
    let mut repeat = vec![false; nets.len()];
    let mut any = false;
    for pair in sorted.windows(2) {
        if pair[0].0 == pair[1].0 {
            repeat[pair[1].1 as usize] = true;
            any = true;
        }
    }
    if !any {
        return nets;
    }
    nets.into_iter()
        .zip(repeat)
        .filter_map(|(net, repeat)| (!repeat).then_some(net))
        .collect()
}

/// The text being validated and the name to report it under.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn at<T>(&self, value: &Spanned<T>) -> Position {
        Position::at_offset(self.text, value.span().start)
    }

    fn interface(&self, raw: Option<Spanned<String>>) -> Result<Option<String>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        match interface_name_problem(raw.get_ref()) {
            None => Ok(Some(raw.into_inner())),
            Some(reason) => Err(ConfigError::Interface {
                origin: self.origin.to_owned(),
                at: self.at(&raw),
                name: raw.into_inner(),
                reason,
            }),
        }
    }

    fn xdp_mode(&self, raw: Option<Spanned<String>>) -> Result<XdpMode, ConfigError> {
        let Some(raw) = raw else {
            return Ok(XdpMode::default());
        };
        raw.get_ref().parse().map_err(|error| ConfigError::XdpMode {
            origin: self.origin.to_owned(),
            at: self.at(&raw),
            error,
        })
    }

    /// A list's inline entries, then those of its files in order.
    fn list(
        &self,
        name: &str,
        raw: &[Spanned<String>],
        files: &[Spanned<String>],
    ) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            let net = parse_net(entry.get_ref()).map_err(|error| ConfigError::ListEntry {
                origin: self.origin.to_owned(),
                at: self.at(entry),
                key: format!("lists.{name}[{index}]"),
                error,
            })?;
            nets.push(net);
        }
        for (index, file) in files.iter().enumerate() {
            let path = file.get_ref();
            let err = |problem: String| ConfigError::ListFile {
                origin: self.origin.to_owned(),
                at: self.at(file),
                key: format!("lists.{name}_files[{index}]"),
                path: path.clone(),
                problem,
            };
            if !Path::new(path).is_absolute() {
                return Err(err("is not an absolute path".into()));
            }
            let text =
                std::fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?;
            nets.extend(parse_list_file(path, &text)?);
        }
        Ok(dedup_in_order(nets))
    }

    fn capacity(
        &self,
        key: &'static str,
        raw: Option<Spanned<i64>>,
        default: u32,
        max: u32,
    ) -> Result<u32, ConfigError> {
        const MIN: u32 = 1;
        let Some(raw) = raw else { return Ok(default) };
        let value = *raw.get_ref();
        match u32::try_from(value) {
            Ok(capacity) if (MIN..=max).contains(&capacity) => Ok(capacity),
            _ => Err(ConfigError::Capacity {
                origin: self.origin.to_owned(),
                at: self.at(&raw),
                key,
                value,
                min: MIN,
                max,
            }),
        }
    }

    /// A required key of the table `table` (e.g. `rate_limit[0]`), which starts at `at`.
    fn required<'v, T>(
        &self,
        table: &str,
        at: Position,
        field: &'static str,
        value: &'v Option<T>,
    ) -> Result<&'v T, ConfigError> {
        value.as_ref().ok_or_else(|| ConfigError::MissingField {
            origin: self.origin.to_owned(),
            at,
            key: table.to_owned(),
            field,
        })
    }

    /// An integer in `min ..= T::MAX`. Integers are read as `i64` (TOML's integer
    /// type) so that negative and oversized values get this error, naming the key.
    fn integer<T>(&self, key: &str, raw: &Spanned<i64>, min: T) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + Into<i64> + Bounded + Copy,
    {
        let value = *raw.get_ref();
        match T::try_from(value) {
            Ok(number) if value >= min.into() => Ok(number),
            _ => Err(ConfigError::OutOfRange {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: key.to_owned(),
                value,
                min: min.into(),
                max: T::MAX.into(),
            }),
        }
    }

    fn variant<T: FromStr<Err = UnknownVariant>>(
        &self,
        key: &str,
        raw: &Spanned<String>,
    ) -> Result<T, ConfigError> {
        raw.get_ref()
            .parse()
            .map_err(|error| ConfigError::UnknownVariant {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: key.to_owned(),
                error,
            })
    }

    fn duration_error(
        &self,
        key: &str,
        raw: &Spanned<String>,
        error: DurationError,
    ) -> ConfigError {
        ConfigError::Duration {
            origin: self.origin.to_owned(),
            at: self.at(raw),
            key: key.to_owned(),
            error,
        }
    }

    /// A finite duration in `min ..= max` (`max` `None`: unbounded).
    fn duration(
        &self,
        key: &str,
        raw: &Spanned<String>,
        min: Duration,
        max: Option<Duration>,
    ) -> Result<Duration, ConfigError> {
        let duration =
            parse_duration(raw.get_ref()).map_err(|error| self.duration_error(key, raw, error))?;
        if duration < min || max.is_some_and(|max| duration > max) {
            return Err(ConfigError::DurationRange {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: key.to_owned(),
                given: raw.get_ref().clone(),
                min,
                max,
            });
        }
        Ok(duration)
    }

    /// An optional positive duration with no other bound.
    fn duration_or(
        &self,
        key: &str,
        raw: &Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match raw {
            Some(raw) => self.duration(key, raw, Duration::ZERO, None),
            None => Ok(default),
        }
    }

    /// An optional duration or `forever`.
    fn lifetime_or(
        &self,
        key: &str,
        raw: &Option<Spanned<String>>,
        default: Lifetime,
    ) -> Result<Lifetime, ConfigError> {
        match raw {
            Some(raw) => {
                parse_lifetime(raw.get_ref()).map_err(|error| self.duration_error(key, raw, error))
            }
            None => Ok(default),
        }
    }

    fn rules_refresh(&self, raw: &Option<Spanned<String>>) -> Result<Duration, ConfigError> {
        match raw {
            Some(raw) => self.duration("rules_refresh", raw, MIN_RULES_REFRESH, None),
            None => Ok(DEFAULT_RULES_REFRESH),
        }
    }

    fn rate_limits(
        &self,
        raw: &Option<Spanned<Vec<Spanned<RawRateLimit>>>>,
    ) -> Result<Vec<RateLimit>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let raw = raw.get_ref();
        if let Some(first_too_many) = raw.get(MAX_RATE_RULES) {
            return Err(ConfigError::TooMany {
                origin: self.origin.to_owned(),
                at: self.at(first_too_many),
                key: "rate_limit".to_owned(),
                what: "rules",
                max: MAX_RATE_RULES,
                found: raw.len(),
            });
        }
        raw.iter()
            .enumerate()
            .map(|(index, rule)| self.rate_limit(index, rule))
            .collect()
    }

    fn rate_limit(
        &self,
        index: usize,
        raw: &Spanned<RawRateLimit>,
    ) -> Result<RateLimit, ConfigError> {
        let table = format!("rate_limit[{index}]");
        let at = self.at(raw);
        let rule = raw.get_ref();
        let kind = self.required(&table, at, "kind", &rule.kind)?;
        let count = self.required(&table, at, "count", &rule.count)?;
        let window = self.required(&table, at, "window", &rule.window)?;
        Ok(RateLimit {
            kind: self.variant(&format!("{table}.kind"), kind)?,
            count: self.integer(&format!("{table}.count"), count, 1)?,
            window: self.duration(
                &format!("{table}.window"),
                window,
                MIN_RATE_WINDOW,
                Some(MAX_RATE_WINDOW),
            )?,
            ports: self.ports(&format!("{table}.ports"), &rule.ports)?,
        })
    }

    fn ports(
        &self,
        key: &str,
        raw: &Option<Spanned<Vec<Spanned<i64>>>>,
    ) -> Result<Vec<u16>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let mut ports = Vec::new();
        // Where each distinct port is, to point at the first one past the limit.
        let mut first_seen = Vec::new();
        for (index, entry) in raw.get_ref().iter().enumerate() {
            let port: u16 = self.integer(&format!("{key}[{index}]"), entry, 1)?;
            if !ports.contains(&port) {
                ports.push(port);
                first_seen.push(entry);
            }
        }
        if let Some(first_too_many) = first_seen.get(MAX_RULE_PORTS) {
            return Err(ConfigError::TooMany {
                origin: self.origin.to_owned(),
                at: self.at(first_too_many),
                key: key.to_owned(),
                what: "distinct ports",
                max: MAX_RULE_PORTS,
                found: ports.len(),
            });
        }
        Ok(ports)
    }

    fn escalation(&self, raw: &RawEscalation) -> Result<Escalation, ConfigError> {
        let defaults = Escalation::default();
        let ban_growth = match &raw.ban_growth {
            None => defaults.ban_growth,
            Some(growth) => {
                let value = *growth.get_ref();
                if !(value.is_finite() && value >= 1.0) {
                    return Err(ConfigError::BanGrowth {
                        origin: self.origin.to_owned(),
                        at: self.at(growth),
                        value: toml_float(value),
                    });
                }
                value
            }
        };
        Ok(Escalation {
            graylist_duration: self.duration_or(
                "escalation.graylist_duration",
                &raw.graylist_duration,
                defaults.graylist_duration,
            )?,
            strikes_to_blacklist: match &raw.strikes_to_blacklist {
                Some(strikes) => self.integer("escalation.strikes_to_blacklist", strikes, 1)?,
                None => defaults.strikes_to_blacklist,
            },
            strike_window: self.duration_or(
                "escalation.strike_window",
                &raw.strike_window,
                defaults.strike_window,
            )?,
            blacklist_duration: self.lifetime_or(
                "escalation.blacklist_duration",
                &raw.blacklist_duration,
                defaults.blacklist_duration,
            )?,
            ban_growth,
            max_ban: self.lifetime_or("escalation.max_ban", &raw.max_ban, defaults.max_ban)?,
            relative_block: raw.relative_block.unwrap_or(defaults.relative_block),
            reset_strikes_after_blacklist: raw
                .reset_strikes_after_blacklist
                .unwrap_or(defaults.reset_strikes_after_blacklist),
            state_retention: self.duration_or(
                "escalation.state_retention",
                &raw.state_retention,
                defaults.state_retention,
            )?,
            grace_violations: match &raw.grace_violations {
                Some(grace) => self.integer("escalation.grace_violations", grace, 0)?,
                None => defaults.grace_violations,
            },
        })
    }

    fn report(&self, raw: &Option<RawReport>) -> Result<Option<ReportRule>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let defaults = ReportRule::default();
        Ok(Some(ReportRule {
            count: match &raw.count {
                Some(count) => self.integer("report.count", count, 1)?,
                None => defaults.count,
            },
            window: self.duration_or("report.window", &raw.window, defaults.window)?,
            duration: self.duration_or("report.duration", &raw.duration, defaults.duration)?,
        }))
    }

    fn rules(&self, raw: &[Spanned<RawRule>]) -> Result<Vec<Rule>, ConfigError> {
        raw.iter()
            .enumerate()
            .map(|(index, raw)| {
                let table = format!("rules[{index}]");
                let at = self.at(raw);
                let rule = raw.get_ref();
                let action = self.required(&table, at, "action", &rule.action)?;
                let source = self.required(&table, at, "source", &rule.source)?;
                Ok(Rule {
                    action: self.variant(&format!("{table}.action"), action)?,
                    source: source
                        .get_ref()
                        .parse()
                        .map_err(|error| ConfigError::RuleSource {
                            origin: self.origin.to_owned(),
                            at: self.at(source),
                            key: format!("{table}.source"),
                            error,
                        })?,
                })
            })
            .collect()
    }

    /// An optional integer in `min ..= max`, or `default`.
    fn ranged(
        &self,
        key: &str,
        raw: &Option<Spanned<i64>>,
        min: i64,
        max: i64,
        default: i64,
    ) -> Result<i64, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        let value = *raw.get_ref();
        if (min..=max).contains(&value) {
            return Ok(value);
        }
        Err(ConfigError::OutOfRange {
            origin: self.origin.to_owned(),
            at: self.at(raw),
            key: key.to_owned(),
            value,
            min,
            max,
        })
    }

    /// An optional absolute path. A file's path must also have a last component
    /// that is not `/`, `.` or `..`, so that it can be created.
    fn path(
        &self,
        key: &'static str,
        raw: &Option<Spanned<String>>,
        kind: PathKind,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let given = raw.get_ref();
        let path = Path::new(given);
        let problem = if given.contains('\0') {
            Some("contains a NUL byte")
        } else if !path.is_absolute() {
            Some("is not an absolute path")
        } else if kind == PathKind::File
            && (given.ends_with('/') || given.ends_with("/.") || given.ends_with("/.."))
        {
            Some("names a directory: give the path of a file")
        } else {
            None
        };
        match problem {
            None => Ok(Some(path.to_owned())),
            Some(problem) => Err(ConfigError::Path {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key,
                given: given.clone(),
                problem,
            }),
        }
    }

    fn api(&self, raw: &RawApi) -> Result<ApiConfig, ConfigError> {
        let defaults = ApiConfig::default();
        let listen = match &raw.listen {
            None => defaults.listen,
            Some(listen) => listen
                .get_ref()
                .parse()
                .map_err(|_| ConfigError::SocketAddr {
                    origin: self.origin.to_owned(),
                    at: self.at(listen),
                    key: "api.listen",
                    given: listen.get_ref().clone(),
                })?,
        };
        let max_body_bytes = self.ranged(
            "api.max_body_bytes",
            &raw.max_body_bytes,
            MIN_MAX_BODY_BYTES as i64,
            MAX_MAX_BODY_BYTES as i64,
            defaults.max_body_bytes as i64,
        )?;
        Ok(ApiConfig {
            listen,
            token_file: self.path("api.token_file", &raw.token_file, PathKind::File)?,
            max_body_bytes: usize::try_from(max_body_bytes).expect("checked against a usize"),
        })
    }

    fn log(&self, raw: &RawLog) -> Result<LogConfig, ConfigError> {
        let defaults = LogConfig::default();
        let max_bytes = self.ranged(
            "log.max_bytes",
            &raw.max_bytes,
            MIN_LOG_MAX_BYTES as i64,
            i64::MAX,
            defaults.max_bytes as i64,
        )?;
        let backups = self.ranged(
            "log.backups",
            &raw.backups,
            0,
            MAX_LOG_BACKUPS.into(),
            defaults.backups.into(),
        )?;
        let max_lines_per_sec = self.ranged(
            "log.max_lines_per_sec",
            &raw.max_lines_per_sec,
            1,
            u32::MAX.into(),
            defaults.max_lines_per_sec.into(),
        )?;
        let drop_interval = match &raw.drop_interval {
            Some(raw) => self.duration("log.drop_interval", raw, MIN_DROP_INTERVAL, None)?,
            None => defaults.drop_interval,
        };
        let checked = "checked against the type's range";
        Ok(LogConfig {
            path: self.path("log.path", &raw.path, PathKind::File)?,
            max_bytes: u64::try_from(max_bytes).expect(checked),
            backups: u32::try_from(backups).expect(checked),
            max_lines_per_sec: u32::try_from(max_lines_per_sec).expect(checked),
            drop_interval,
        })
    }

    fn state(&self, raw: &RawState) -> Result<StateConfig, ConfigError> {
        let defaults = StateConfig::default();
        Ok(StateConfig {
            dir: self
                .path("state.dir", &raw.dir, PathKind::Dir)?
                .unwrap_or(defaults.dir),
            pin_dir: self
                .path("state.pin_dir", &raw.pin_dir, PathKind::Dir)?
                .unwrap_or(defaults.pin_dir),
        })
    }
}

/// The unsigned integer types config values are read into.
trait Bounded: Sized {
    const MAX: Self;
}

impl Bounded for u16 {
    const MAX: Self = u16::MAX;
}

impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}

/// `value` as TOML writes it, for error messages (`nan` rather than Rust's `NaN`).
fn toml_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else {
        value.to_string()
    }
}

/// Why the kernel would refuse `name` as an interface name (`dev_valid_name()` in
/// net/core/dev.c), or `None` if it is acceptable. Checked here so that a typo fails at
/// startup with the file position instead of as an ioctl error at attach time.
fn interface_name_problem(name: &str) -> Option<&'static str> {
    // IFNAMSIZ is 16 bytes including the terminating NUL.
    const MAX_LEN: usize = 15;
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LEN {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are reserved")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        Some("it contains `/`, `:`, NUL or whitespace")
    } else {
        None
    }
}

/// Joins a multi-line parser message ("invalid table header\nexpected `.`, `]`").
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The entries of a list file: one address or network per line; `#` starts a comment;
/// blank lines are ignored. Large files (feeds of millions of prefixes) are parsed on two
/// threads.
pub fn parse_list_file(path: &str, text: &str) -> Result<Vec<IpNet>, ConfigError> {
    fn parse(path: &str, text: &str, first_line: usize) -> Result<Vec<IpNet>, ConfigError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            out.push(
                parse_net(entry).map_err(|error| ConfigError::ListFileEntry {
                    path: path.to_owned(),
                    line: first_line + i,
                    error,
                })?,
            );
        }
        Ok(out)
    }
    const PARALLEL_MIN: usize = 1 << 20;
    let mid = text.len() / 2;
    let split = text[mid..].find('\n').map(|i| mid + i + 1);
    match split {
        Some(at) if text.len() >= PARALLEL_MIN && at < text.len() => {
            let (a, b) = text.split_at(at);
            let b_first = 1 + a.lines().count();
            let (ra, rb) = std::thread::scope(|s| {
                let hb = s.spawn(|| parse(path, b, b_first));
                (parse(path, a, 1), hb.join())
            });
            let mut out = ra?;
            out.extend(rb.unwrap_or_else(|p| std::panic::resume_unwind(p))?);
            Ok(out)
        }
        _ => parse(path, text, 1),
    }
}

impl Config {
    /// Reads and validates the config file at `path`; errors name the path as given.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(error) => Err(ConfigError::Read {
                origin,
                kind: error.kind(),
                reason: error.to_string(),
            }),
        }
    }

    /// Parses and validates config text. `origin` is the file name used in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let mut message = one_line(error.message());
            // toml's "duplicate key" does not say which: its span does.
            if let Some(key) = error
                .span()
                .and_then(|span| text.get(span))
                .filter(|_| message == "duplicate key")
            {
                message = format!("duplicate key `{}`", key.trim());
            }
            ConfigError::Toml {
                origin: origin.to_owned(),
                at: error
                    .span()
                    .map(|span| Position::at_offset(text, span.start)),
                message,
            }
        })?;
        let source = Source { text, origin };
        let defaults = MapsConfig::default();
        Ok(Config {
            interface: source.interface(raw.interface)?,
            xdp_mode: source.xdp_mode(raw.xdp_mode)?,
            accumulate: raw.accumulate.unwrap_or(false),
            rules_refresh: source.rules_refresh(&raw.rules_refresh)?,
            lists: Lists {
                whitelist: source.list(
                    "whitelist",
                    &raw.lists.whitelist,
                    &raw.lists.whitelist_files,
                )?,
                graylist: source.list(
                    "graylist",
                    &raw.lists.graylist,
                    &raw.lists.graylist_files,
                )?,
                blacklist: source.list(
                    "blacklist",
                    &raw.lists.blacklist,
                    &raw.lists.blacklist_files,
                )?,
            },
            maps: MapsConfig {
                sources_capacity: source.capacity(
                    "maps.sources_capacity",
                    raw.maps.sources_capacity,
                    defaults.sources_capacity,
                    MAX_SOURCES_CAPACITY,
                )?,
                lpm_v4_capacity: source.capacity(
                    "maps.lpm_v4_capacity",
                    raw.maps.lpm_v4_capacity,
                    defaults.lpm_v4_capacity,
                    u32::MAX,
                )?,
                lpm_v6_capacity: source.capacity(
                    "maps.lpm_v6_capacity",
                    raw.maps.lpm_v6_capacity,
                    defaults.lpm_v6_capacity,
                    u32::MAX,
                )?,
            },
            rate_limit: source.rate_limits(&raw.rate_limit)?,
            escalation: source.escalation(&raw.escalation)?,
            report: source.report(&raw.report)?,
            rules: source.rules(&raw.rules)?,
            api: source.api(&raw.api)?,
            log: source.log(&raw.log)?,
            state: source.state(&raw.state)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../ipguard.example.toml");

    const DAY: Duration = Duration::from_secs(86_400);

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "ipguard.toml")
    }

    /// The error message for `text`, which must be rejected.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("accepted {text:?} as {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn list_files_add_their_entries_after_the_inline_ones() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("feed.txt");
        std::fs::write(
            &feed,
            "# a feed\n198.51.100.0/24\n\n  203.0.113.7  # one host\n2001:db8::/32\n192.0.2.1\n",
        )
        .unwrap();
        let text = format!(
            "[lists]\nblacklist = [\"192.0.2.1\"]\nblacklist_files = [{:?}]\n",
            feed.display().to_string()
        );
        let config = parse(&text).unwrap();
        let got: Vec<String> = config
            .lists
            .blacklist
            .iter()
            .map(|n| n.to_string())
            .collect();
        // Duplicates (192.0.2.1) count once, in first-seen order.
        assert_eq!(
            got,
            [
                "192.0.2.1/32",
                "198.51.100.0/24",
                "203.0.113.7/32",
                "2001:db8::/32"
            ]
        );
    }

    #[test]
    fn list_file_errors_name_the_file_and_line_or_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("feed.txt");
        std::fs::write(&feed, "198.51.100.0/24\n# fine\n10.0.0.1/8\n").unwrap();
        let path = feed.display().to_string();
        let text = format!("[lists]\ngraylist_files = [{path:?}]\n");
        assert_eq!(
            error(&text),
            format!("{path}:3: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?")
        );
        assert_eq!(
            error("[lists]\nwhitelist_files = [\"feeds/a.txt\"]\n"),
            "ipguard.toml:2:20: lists.whitelist_files[0]: \"feeds/a.txt\" is not an absolute path"
        );
        let missing = dir.path().join("missing.txt").display().to_string();
        let err = error(&format!("[lists]\nblacklist_files = [{missing:?}]\n"));
        assert!(
            err.starts_with(&format!(
                "ipguard.toml:2:20: lists.blacklist_files[0]: {missing:?} cannot be read: "
            )),
            "{err}"
        );
    }

    #[test]
    fn a_large_list_file_parses_on_two_threads_with_the_right_line_numbers() {
        let mut text = String::new();
        for i in 0..200_000u32 {
            text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let nets = parse_list_file("big.txt", &text).unwrap();
        assert_eq!(nets.len(), 200_000);
        assert_eq!(nets[199_999].to_string(), "10.3.13.63/32");
        text.push_str("nope\n");
        let err = parse_list_file("big.txt", &text).unwrap_err().to_string();
        assert!(err.starts_with("big.txt:200001: "), "{err}");
    }

    #[test]
    fn example_file_parses_with_documented_defaults() {
        let config = Config::parse(EXAMPLE, "ipguard.example.toml").unwrap();
        assert_eq!(config.interface.as_deref(), Some("eth0"));
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert_eq!(config.lists.whitelist, nets(&["127.0.0.0/8", "::1/128"]));
        assert_eq!(config.lists.graylist, nets(&[]));
        assert_eq!(
            config.lists.blacklist,
            nets(&["203.0.113.0/24", "198.51.100.7/32", "2001:db8:bad::/48"])
        );
        assert_eq!(
            config.maps,
            MapsConfig {
                sources_capacity: 1_048_576,
                lpm_v4_capacity: 2_097_152,
                lpm_v6_capacity: 2_097_152,
            }
        );
        // The values written in the example are the defaults it documents.
        assert_eq!(config.maps, MapsConfig::default());
        assert!(!config.accumulate);
        assert_eq!(config.rules_refresh, DEFAULT_RULES_REFRESH);
        assert_eq!(
            config.rate_limit,
            vec![
                RateLimit {
                    kind: RateKind::Syn,
                    count: 20,
                    window: Duration::from_secs(1),
                    ports: vec![],
                },
                RateLimit {
                    kind: RateKind::Syn,
                    count: 100,
                    window: Duration::from_secs(10),
                    ports: vec![80, 443],
                },
            ]
        );
        assert_eq!(config.escalation, Escalation::default());
        assert_eq!(
            config.report,
            Some(ReportRule {
                count: 3,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(600),
            })
        );
        assert_eq!(config.report, Some(ReportRule::default()));
        // The example's rules are commented out: the demo runs this file.
        assert!(config.rules.is_empty());
    }

    #[test]
    fn example_rules_parse_when_uncommented() {
        let rules: String = EXAMPLE
            .lines()
            .skip_while(|line| !line.starts_with("# Ordered allow/deny rules"))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = parse(&rules).unwrap();
        assert_eq!(
            config.rules,
            vec![
                Rule {
                    action: RuleAction::Allow,
                    source: RuleSource::Net(net("203.0.113.0/24")),
                },
                Rule {
                    action: RuleAction::Allow,
                    source: RuleSource::Host("monitoring.example.com".into()),
                },
                Rule {
                    action: RuleAction::Deny,
                    source: RuleSource::Net(net("0.0.0.0/0")),
                },
            ]
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.interface, None);
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert!(config.lists.whitelist.is_empty());
        assert!(config.lists.graylist.is_empty());
        assert!(config.lists.blacklist.is_empty());
        assert_eq!(config.maps.sources_capacity, DEFAULT_SOURCES_CAPACITY);
        assert_eq!(config.maps.lpm_v4_capacity, DEFAULT_LPM_CAPACITY);
        assert_eq!(config.maps.lpm_v6_capacity, DEFAULT_LPM_CAPACITY);
        // Comments and empty sections change nothing.
        assert_eq!(
            parse("# nothing here\n[lists]\n[maps]\n[escalation]\n").unwrap(),
            Config::default()
        );
        assert!(!config.accumulate);
        assert_eq!(config.rules_refresh, Duration::from_secs(300));
        assert!(config.rate_limit.is_empty());
        assert_eq!(config.report, None);
        assert!(config.rules.is_empty());
    }

    #[test]
    fn escalation_defaults() {
        let escalation = parse("").unwrap().escalation;
        assert_eq!(
            escalation,
            Escalation {
                graylist_duration: Duration::from_secs(24 * 3600),
                strikes_to_blacklist: 3,
                strike_window: 7 * DAY,
                blacklist_duration: Lifetime::For(30 * DAY),
                ban_growth: 2.0,
                max_ban: Lifetime::For(365 * DAY),
                relative_block: false,
                reset_strikes_after_blacklist: true,
                state_retention: 30 * DAY,
                grace_violations: 0,
            }
        );
        assert_eq!(escalation, Escalation::default());
    }

    #[test]
    fn empty_report_section_gives_report_defaults() {
        assert_eq!(
            parse("[report]\n").unwrap().report,
            Some(ReportRule {
                count: 3,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(600),
            })
        );
        assert_eq!(
            parse("[report]\ncount = 5\nduration = \"1h\"\n")
                .unwrap()
                .report,
            Some(ReportRule {
                count: 5,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(3600),
            })
        );
    }

    #[test]
    fn every_policy_key_is_read() {
        let text = r#"accumulate = true
rules_refresh = "30s"

[[rate_limit]]
kind = "packets"
count = 4294967295
window = "1d"

[[rate_limit]]
kind = "bytes"
count = 1
window = "1ms"
ports = [53]

[escalation]
graylist_duration = "90m"
strikes_to_blacklist = 1
strike_window = "12h"
blacklist_duration = "forever"
ban_growth = 1
max_ban = "forever"
relative_block = true
reset_strikes_after_blacklist = false
state_retention = "90d"
grace_violations = 2

[report]
count = 10
window = "5m"
duration = "2h"

[[rules]]
action = "deny"
source = "2001:db8::/32"
"#;
        let config = parse(text).unwrap();
        assert!(config.accumulate);
        assert_eq!(config.rules_refresh, Duration::from_secs(30));
        assert_eq!(
            config.rate_limit,
            vec![
                RateLimit {
                    kind: RateKind::Packets,
                    count: u32::MAX,
                    window: DAY,
                    ports: vec![],
                },
                RateLimit {
                    kind: RateKind::Bytes,
                    count: 1,
                    window: Duration::from_millis(1),
                    ports: vec![53],
                },
            ]
        );
        assert_eq!(
            config.escalation,
            Escalation {
                graylist_duration: Duration::from_secs(90 * 60),
                strikes_to_blacklist: 1,
                strike_window: Duration::from_secs(12 * 3600),
                blacklist_duration: Lifetime::Forever,
                ban_growth: 1.0,
                max_ban: Lifetime::Forever,
                relative_block: true,
                reset_strikes_after_blacklist: false,
                state_retention: 90 * DAY,
                grace_violations: 2,
            }
        );
        assert_eq!(
            config.report,
            Some(ReportRule {
                count: 10,
                window: Duration::from_secs(300),
                duration: Duration::from_secs(7200),
            })
        );
        assert_eq!(
            config.rules,
            vec![Rule {
                action: RuleAction::Deny,
                source: RuleSource::Net(net("2001:db8::/32")),
            }]
        );
        // Inline tables are the same tables.
        let inline =
            parse("rate_limit = [{kind = \"syn\", count = 5, window = \"2s\"}]\n").unwrap();
        assert_eq!(
            inline.rate_limit,
            vec![RateLimit {
                kind: RateKind::Syn,
                count: 5,
                window: Duration::from_secs(2),
                ports: vec![],
            }]
        );
    }

    #[test]
    fn rate_kinds_and_actions_display_and_parse() {
        for kind in RateKind::ALL {
            assert_eq!(kind.to_string().parse::<RateKind>(), Ok(kind));
        }
        assert_eq!(
            ["syn", "packets", "bytes"].map(|s| s.parse::<RateKind>().unwrap()),
            [RateKind::Syn, RateKind::Packets, RateKind::Bytes]
        );
        assert_eq!(RateKind::Bytes.to_string(), "bytes");
        assert_eq!(RuleAction::Allow.to_string(), "allow");
        assert_eq!(RuleAction::Deny.to_string(), "deny");
        assert_eq!("deny".parse::<RuleAction>(), Ok(RuleAction::Deny));
        assert_eq!(
            "Allow".parse::<RuleAction>().unwrap_err().to_string(),
            "unknown variant `Allow`, expected one of `allow`, `deny`"
        );
        assert_eq!(
            RuleSource::Net(net("203.0.113.0/24")).to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            RuleSource::Host("example.com".into()).to_string(),
            "example.com"
        );
    }

    #[test]
    fn partial_maps_section_keeps_other_defaults() {
        let config = parse("[maps]\nsources_capacity = 4096\n").unwrap();
        assert_eq!(
            config.maps,
            MapsConfig {
                sources_capacity: 4096,
                lpm_v4_capacity: DEFAULT_LPM_CAPACITY,
                lpm_v6_capacity: DEFAULT_LPM_CAPACITY,
            }
        );
        let config = parse("[maps]\nsources_capacity = 67108864\nlpm_v6_capacity = 1\n").unwrap();
        assert_eq!(config.maps.sources_capacity, MAX_SOURCES_CAPACITY);
        assert_eq!(config.maps.lpm_v6_capacity, 1);
    }

    #[test]
    fn bare_addresses_become_host_prefixes() {
        let config = parse("[lists]\nblacklist = [\"198.51.100.7\", \"2001:db8::1\"]\n").unwrap();
        assert_eq!(
            config.lists.blacklist,
            nets(&["198.51.100.7/32", "2001:db8::1/128"])
        );
        assert_eq!(config.lists.blacklist[0].prefix_len(), 32);
        assert_eq!(config.lists.blacklist[1].prefix_len(), 128);
    }

    #[test]
    fn xdp_modes_parse() {
        for (text, mode) in [
            ("xdp_mode = \"auto\"", XdpMode::Auto),
            ("xdp_mode = \"native\"", XdpMode::Native),
            ("xdp_mode = \"skb\"", XdpMode::Skb),
        ] {
            assert_eq!(parse(text).unwrap().xdp_mode, mode);
        }
    }

    #[test]
    fn xdp_mode_display_and_from_str_round_trip() {
        for mode in XdpMode::ALL {
            assert_eq!(mode.to_string().parse::<XdpMode>(), Ok(mode));
        }
        assert_eq!(XdpMode::Native.to_string(), "native");
        assert_eq!(
            "Native".parse::<XdpMode>(),
            Err(ParseXdpModeError {
                given: "Native".into()
            })
        );
    }

    #[test]
    fn duplicates_within_a_list_are_dropped_and_overlaps_across_lists_kept() {
        let config = parse(
            "[lists]\n\
             whitelist = [\"10.0.0.0/8\"]\n\
             blacklist = [\"10.0.0.0/8\", \"10.1.0.0/16\", \"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(config.lists.whitelist, nets(&["10.0.0.0/8"]));
        assert_eq!(config.lists.blacklist, nets(&["10.0.0.0/8", "10.1.0.0/16"]));
    }

    #[test]
    fn dedup_keeps_first_occurrences_in_file_order() {
        let given = nets(&[
            "10.2.0.0/16",
            "10.1.0.0/16",
            "10.2.0.0/16",
            "::1/128",
            "10.1.0.0/16",
        ]);
        assert_eq!(
            dedup_in_order(given),
            nets(&["10.2.0.0/16", "10.1.0.0/16", "::1/128"])
        );
    }

    #[test]
    fn invalid_entry_names_file_line_column_and_key() {
        let text = "interface = \"eth0\"\n\
                    xdp_mode = \"auto\"\n\
                    \n\
                    [lists]\n\
                    blacklist = [\"198.51.100.300\"]\n";
        assert_eq!(
            error(text),
            "ipguard.toml:5:14: lists.blacklist[0]: \"198.51.100.300\" is not a valid IP address or CIDR"
        );
        // The index and position are those of the bad entry, also on a continuation line.
        let text = "[lists]\n\
                    whitelist = [\"::1\"]\n\
                    graylist = [\n    \"10.0.0.0/8\",\n    \"not-an-ip\",\n]\n";
        assert_eq!(
            error(text),
            "ipguard.toml:5:5: lists.graylist[1]: \"not-an-ip\" is not a valid IP address or CIDR"
        );
        let Err(ConfigError::ListEntry { at, key, error, .. }) = parse(text) else {
            panic!("expected a ListEntry error");
        };
        assert_eq!(at, Position { line: 5, column: 5 });
        assert_eq!(key, "lists.graylist[1]");
        assert_eq!(
            error,
            NetError::Invalid {
                given: "not-an-ip".into()
            }
        );
    }

    #[test]
    fn host_bits_error_suggests_the_network() {
        let text = "interface = \"eth0\"\n\
                    \n\
                    [lists]\n\
                    whitelist = []\n\
                    blacklist = [\"203.0.113.1/24\"]\n";
        assert_eq!(
            error(text),
            "ipguard.toml:5:14: lists.blacklist[0]: 203.0.113.1/24 has host bits set; did you mean 203.0.113.0/24?"
        );
    }

    #[test]
    fn entry_errors_from_net_are_reported_with_position() {
        assert_eq!(
            error("[lists]\nwhitelist = [\"10.0.0.0/33\"]\n"),
            "ipguard.toml:2:14: lists.whitelist[0]: \"10.0.0.0/33\": the prefix length must be at most 32 for an IPv4 address"
        );
        assert_eq!(
            error("[lists]\nwhitelist = [\" 10.0.0.1\"]\n"),
            "ipguard.toml:2:14: lists.whitelist[0]: \" 10.0.0.1\" has leading or trailing whitespace; write the address without it"
        );
    }

    #[test]
    fn unknown_field_is_an_error_at_the_key() {
        let text = "interface = \"eth0\"\nxdp_mode = \"auto\"\nwhitelsit = []\n";
        assert_eq!(
            error(text),
            "ipguard.toml:3:1: unknown field `whitelsit`, expected one of `interface`, `xdp_mode`, `accumulate`, `rules_refresh`, `lists`, `maps`, `rate_limit`, `escalation`, `report`, `rules`, `api`, `log`, `state`"
        );
        assert_eq!(
            error("[lists]\nblacklist = []\nwhitelsit = []\n"),
            "ipguard.toml:3:1: unknown field `whitelsit`, expected one of `whitelist`, `graylist`, `blacklist`, `whitelist_files`, `graylist_files`, `blacklist_files`"
        );
        assert_eq!(
            error("[maps]\nsource_capacity = 10\n"),
            "ipguard.toml:2:1: unknown field `source_capacity`, expected one of `sources_capacity`, `lpm_v4_capacity`, `lpm_v6_capacity`"
        );
        assert!(matches!(
            parse("[map]\n"),
            Err(ConfigError::Toml {
                at: Some(Position { line: 1, column: 2 }),
                ..
            })
        ));
    }

    #[test]
    fn bad_xdp_mode_names_the_key_and_the_choices() {
        let text = "interface = \"eth0\"\nxdp_mode = \"fast\"\n";
        assert_eq!(
            error(text),
            "ipguard.toml:2:12: xdp_mode: unknown variant `fast`, expected one of `auto`, `native`, `skb`"
        );
        assert_eq!(
            parse(text),
            Err(ConfigError::XdpMode {
                origin: "ipguard.toml".into(),
                at: Position {
                    line: 2,
                    column: 12
                },
                error: ParseXdpModeError {
                    given: "fast".into()
                },
            })
        );
        assert_eq!(
            error("xdp_mode = 1\n"),
            "ipguard.toml:1:12: invalid type: integer `1`, expected a string"
        );
    }

    #[test]
    fn zero_capacity_is_an_error_naming_the_key() {
        for key in ["sources_capacity", "lpm_v4_capacity", "lpm_v6_capacity"] {
            let max = if key == "sources_capacity" {
                MAX_SOURCES_CAPACITY
            } else {
                u32::MAX
            };
            assert_eq!(
                error(&format!("[maps]\n{key} = 0\n")),
                format!(
                    "ipguard.toml:2:{}: maps.{key}: must be between 1 and {max}, got 0",
                    key.len() + 4
                )
            );
        }
    }

    #[test]
    fn out_of_range_capacities_are_errors_naming_the_key() {
        assert_eq!(
            error("[maps]\nsources_capacity = 67108865\n"),
            "ipguard.toml:2:20: maps.sources_capacity: must be between 1 and 67108864, got 67108865"
        );
        assert_eq!(
            error("[maps]\nlpm_v4_capacity = -1\n"),
            "ipguard.toml:2:19: maps.lpm_v4_capacity: must be between 1 and 4294967295, got -1"
        );
        assert_eq!(
            error("[maps]\nlpm_v6_capacity = 4294967296\n"),
            "ipguard.toml:2:19: maps.lpm_v6_capacity: must be between 1 and 4294967295, got 4294967296"
        );
        assert_eq!(
            error("[maps]\nlpm_v6_capacity = \"big\"\n"),
            "ipguard.toml:2:19: invalid type: string \"big\", expected i64"
        );
    }

    #[test]
    fn interface_names_the_kernel_rejects_are_errors() {
        assert_eq!(
            parse("interface = \"veth-ipg0\"")
                .unwrap()
                .interface
                .as_deref(),
            Some("veth-ipg0")
        );
        assert_eq!(
            error("interface = \"\"\n"),
            "ipguard.toml:1:13: interface: \"\" is not a valid interface name: it is empty"
        );
        assert_eq!(
            error("interface = \"eth0 \"\n"),
            "ipguard.toml:1:13: interface: \"eth0 \" is not a valid interface name: it contains `/`, `:`, NUL or whitespace"
        );
        assert_eq!(
            error("interface = \"a-very-long-name0\"\n"),
            "ipguard.toml:1:13: interface: \"a-very-long-name0\" is not a valid interface name: it is longer than 15 bytes"
        );
        assert!(matches!(
            parse("interface = \"..\""),
            Err(ConfigError::Interface { .. })
        ));
    }

    #[test]
    fn toml_errors_are_one_line_with_position() {
        // toml's own message for this spans two lines.
        assert_eq!(
            error("interface = \"eth0\"\n[lists\n"),
            "ipguard.toml:2:7: unclosed table, expected `]`"
        );
        assert_eq!(
            error("interface = \"eth0\"\ninterface = \"eth1\"\n"),
            "ipguard.toml:2:1: duplicate key `interface`"
        );
        assert_eq!(
            error("[lists]\nwhitelist = [\"::1\", 3]\n"),
            "ipguard.toml:2:21: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            error("lists = 3\n"),
            "ipguard.toml:1:9: invalid type: integer `3`, expected the [lists] table"
        );
        for text in ["[lists\n", "a = \"\\q\"\n", "xdp_mode = \"fast\"\n"] {
            assert!(!error(text).contains('\n'), "{text:?}");
        }
    }

    #[test]
    fn position_counts_characters_from_one() {
        let text = "a\n\u{e9}t\u{e9} = 1\n";
        assert_eq!(
            Position::at_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::at_offset(text, 2),
            Position { line: 2, column: 1 }
        );
        // "été" is 5 bytes, 3 characters.
        assert_eq!(
            Position::at_offset(text, 7),
            Position { line: 2, column: 4 }
        );
        // Inside a multi-byte character: the character's own position.
        assert_eq!(
            Position::at_offset(text, 3),
            Position { line: 2, column: 1 }
        );
        assert_eq!(
            Position::at_offset(text, 999),
            Position { line: 3, column: 1 }
        );
        assert_eq!(
            Position {
                line: 5,
                column: 14
            }
            .to_string(),
            "5:14"
        );
    }

    #[test]
    fn missing_file_names_the_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-dir/ipguard.toml");
        let err = Config::from_file(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read: No such file or directory (os error 2)",
                path.display()
            )
        );
        assert!(matches!(
            err,
            ConfigError::Read {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ));
        let err = Config::from_file(Path::new("ipguard.toml-does-not-exist")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ipguard.toml-does-not-exist: cannot read: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn from_file_reads_and_reports_the_path() {
        let dir = std::env::temp_dir().join(format!("ipguard-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        let bad = dir.join("bad.toml");
        std::fs::write(&good, EXAMPLE).unwrap();
        std::fs::write(&bad, "xdp_mode = \"fast\"\n").unwrap();
        let good_result = Config::from_file(&good);
        let bad_result = Config::from_file(&bad);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(good_result.unwrap(), Config::parse(EXAMPLE, "x").unwrap());
        assert_eq!(
            bad_result.unwrap_err().to_string(),
            format!(
                "{}:1:12: xdp_mode: unknown variant `fast`, expected one of `auto`, `native`, `skb`",
                bad.display()
            )
        );
    }
    #[test]
    fn rule_sources_classify_hosts_and_nets() {
        let source = |s: &str| s.parse::<RuleSource>();
        let host = |s: &str| Ok(RuleSource::Host(s.into()));
        assert_eq!(source("example.com"), host("example.com"));
        assert_eq!(source("EXAMPLE.com."), host("example.com"));
        assert_eq!(source("localhost"), host("localhost"));
        assert_eq!(source("a-b.c0.example"), host("a-b.c0.example"));
        // Digits-only labels are fine as long as some letter is somewhere.
        assert_eq!(source("1.2.3.example"), host("1.2.3.example"));
        assert_eq!(source("10.0.0.1"), Ok(RuleSource::Net(net("10.0.0.1/32"))));
        assert_eq!(source("::1"), Ok(RuleSource::Net(net("::1/128"))));
        assert_eq!(
            source("203.0.113.0/24"),
            Ok(RuleSource::Net(net("203.0.113.0/24")))
        );
        // Longest label (63) and name (253) are accepted, one more is not.
        let label63 = "a".repeat(63);
        assert_eq!(
            source(&format!("{label63}.com")),
            host(&format!("{label63}.com"))
        );
        let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert_eq!(source(&name253), host(&name253));
        assert_eq!(source(&format!("{name253}.")), host(&name253));
        for bad in [
            format!("{}.com", "a".repeat(64)),
            format!("{name253}b"),
            "-bad.com".to_owned(),
            "bad-.com".to_owned(),
            "exa mple.com".to_owned(),
            "exa_mple.com".to_owned(),
            "example..com".to_owned(),
            ".example.com".to_owned(),
            "example.com..".to_owned(),
            "".to_owned(),
            "ex\u{e4}mple.com".to_owned(),
            "*.example.com".to_owned(),
        ] {
            assert_eq!(
                source(&bad),
                Err(RuleSourceError::Invalid { given: bad.clone() }),
                "{bad:?}"
            );
        }
        assert_eq!(
            source("-bad.com").unwrap_err().to_string(),
            r#""-bad.com" is neither an IP address, a CIDR nor a valid hostname"#
        );
        // What looks like an address gets the address error.
        assert_eq!(
            source("10.0.0.1/8"),
            Err(RuleSourceError::Net(NetError::HostBitsSet {
                given: "10.0.0.1/8".into(),
                network: net("10.0.0.0/8"),
            }))
        );
        for bad in [
            "300.1.1.1",
            "1.2.3",
            "10.0.0.0/33x",
            "example.com/24",
            "host:80",
            ".",
            "..",
            "1.2.3.4.",
        ] {
            assert!(
                matches!(source(bad), Err(RuleSourceError::Net(_))),
                "{bad:?}: {:?}",
                source(bad)
            );
        }
        assert_eq!(
            source("300.1.1.1").unwrap_err().to_string(),
            r#""300.1.1.1" is not a valid IP address or CIDR"#
        );
        assert_eq!(
            source(" example.com"),
            Err(RuleSourceError::Net(NetError::Whitespace {
                given: " example.com".into()
            }))
        );
    }

    #[test]
    fn rules_keep_file_order_and_duplicates() {
        let text = "[[rules]]\naction = \"deny\"\nsource = \"10.0.0.0/8\"\n\
                    [[rules]]\naction = \"allow\"\nsource = \"10.1.0.0/16\"\n\
                    [[rules]]\naction = \"deny\"\nsource = \"10.0.0.0/8\"\n";
        let actions: Vec<_> = parse(text)
            .unwrap()
            .rules
            .iter()
            .map(|rule| format!("{} {}", rule.action, rule.source))
            .collect();
        assert_eq!(
            actions,
            ["deny 10.0.0.0/8", "allow 10.1.0.0/16", "deny 10.0.0.0/8"]
        );
    }

    #[test]
    fn rule_errors_name_the_rule() {
        let text = "[[rules]]\n\
                    action = \"allow\"\n\
                    source = \"example.com\"\n\
                    \n\
                    [[rules]]\n\
                    action = \"deny\"\n\
                    source = \"10.0.0.1/8\"\n\
                    \n\
                    [[rules]]\n\
                    action = \"deny\"\n\
                    source = \"exa mple.com\"\n";
        assert_eq!(
            error(text),
            "ipguard.toml:7:10: rules[1].source: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        let text = text.replace("10.0.0.1/8", "10.0.0.0/8");
        assert_eq!(
            error(&text),
            "ipguard.toml:11:10: rules[2].source: \"exa mple.com\" is neither an IP address, a CIDR nor a valid hostname"
        );
        assert_eq!(
            error("[[rules]]\naction = \"permit\"\nsource = \"10.0.0.0/8\"\n"),
            "ipguard.toml:2:10: rules[0].action: unknown variant `permit`, expected one of `allow`, `deny`"
        );
        assert_eq!(
            error("[[rules]]\nsource = \"10.0.0.0/8\"\n"),
            "ipguard.toml:1:1: rules[0]: missing field `action`"
        );
        assert_eq!(
            error(
                "[[rules]]\naction = \"allow\"\nsource = \"::1\"\n\n[[rules]]\naction = \"deny\"\n"
            ),
            "ipguard.toml:5:1: rules[1]: missing field `source`"
        );
        assert_eq!(
            error("[[rules]]\naction = \"deny\"\nsource = \"300.1.1.1\"\n"),
            "ipguard.toml:3:10: rules[0].source: \"300.1.1.1\" is not a valid IP address or CIDR"
        );
        assert_eq!(
            error("[[rules]]\naction = \"deny\"\nsource = \"-bad.com\"\n"),
            "ipguard.toml:3:10: rules[0].source: \"-bad.com\" is neither an IP address, a CIDR nor a valid hostname"
        );
    }

    #[test]
    fn rate_limit_errors_name_the_rule_and_key() {
        let rule = |body: &str| format!("interface = \"eth0\"\n\n[[rate_limit]]\n{body}");
        assert_eq!(
            error(&rule("kind = \"sin\"\ncount = 1\nwindow = \"1s\"\n")),
            "ipguard.toml:4:8: rate_limit[0].kind: unknown variant `sin`, expected one of `syn`, `packets`, `bytes`"
        );
        assert_eq!(
            error(&rule("kind = \"syn\"\ncount = 0\nwindow = \"1s\"\n")),
            "ipguard.toml:5:9: rate_limit[0].count: must be between 1 and 4294967295, got 0"
        );
        assert_eq!(
            error(&rule("kind = \"syn\"\ncount = 4294967296\nwindow = \"1s\"\n")),
            "ipguard.toml:5:9: rate_limit[0].count: must be between 1 and 4294967295, got 4294967296"
        );
        assert_eq!(
            error(&rule("kind = \"syn\"\ncount = -3\nwindow = \"1s\"\n")),
            "ipguard.toml:5:9: rate_limit[0].count: must be between 1 and 4294967295, got -3"
        );
        assert_eq!(
            error(&rule("kind = \"syn\"\nwindow = \"1s\"\n")),
            "ipguard.toml:3:1: rate_limit[0]: missing field `count`"
        );
        assert_eq!(
            error(&rule("count = 1\nwindow = \"1s\"\n")),
            "ipguard.toml:3:1: rate_limit[0]: missing field `kind`"
        );
        assert_eq!(
            error(&rule("kind = \"syn\"\ncount = 1\n")),
            "ipguard.toml:3:1: rate_limit[0]: missing field `window`"
        );
        assert_eq!(
            error(
                "rate_limit = [{kind = \"syn\", count = 1, window = \"1s\"}, {kind = \"syn\"}]\n"
            ),
            "ipguard.toml:1:57: rate_limit[1]: missing field `count`"
        );
        assert_eq!(
            error(&rule("kind = \"syn\"\ncount = 1\nwindow = \"1s\"\nport = [80]\n")),
            "ipguard.toml:7:1: unknown field `port`, expected one of `kind`, `count`, `window`, `ports`"
        );
        assert_eq!(
            error(&rule(
                "kind = \"syn\"\ncount = 1\nwindow = \"1s\"\nports = [80, 443, 0]\n"
            )),
            "ipguard.toml:7:19: rate_limit[0].ports[2]: must be between 1 and 65535, got 0"
        );
        assert_eq!(
            error(&rule(
                "kind = \"syn\"\ncount = 1\nwindow = \"1s\"\nports = [65536]\n"
            )),
            "ipguard.toml:7:10: rate_limit[0].ports[0]: must be between 1 and 65535, got 65536"
        );
    }

    #[test]
    fn rate_limit_windows_are_durations_within_a_day() {
        let text = |window: &str| {
            format!(
                "[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\n\n\
                 [[rate_limit]]\nkind = \"packets\"\ncount = 1\nwindow = \"{window}\"\n"
            )
        };
        assert_eq!(
            error(&text("10x")),
            "ipguard.toml:9:10: rate_limit[1].window: \"10x\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error(&text("forever")),
            "ipguard.toml:9:10: rate_limit[1].window: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error(&text("0ms")),
            "ipguard.toml:9:10: rate_limit[1].window: must be longer than 0, got \"0ms\""
        );
        assert_eq!(
            error(&text("25h")),
            "ipguard.toml:9:10: rate_limit[1].window: must be between 1ms and 1d, got 25h"
        );
        assert_eq!(
            error(&text("86400001ms")),
            "ipguard.toml:9:10: rate_limit[1].window: must be between 1ms and 1d, got 86400001ms"
        );
        assert_eq!(parse(&text("24h")).unwrap().rate_limit[1].window, DAY);
        assert_eq!(
            parse(&text("1ms")).unwrap().rate_limit[1].window,
            Duration::from_millis(1)
        );
        assert_eq!(
            error("[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = 1\n"),
            "ipguard.toml:4:10: invalid type: integer `1`, expected a string"
        );
    }

    #[test]
    fn at_most_four_rate_rules() {
        let rule = "[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\n";
        let four = rule.repeat(4);
        assert_eq!(parse(&four).unwrap().rate_limit.len(), MAX_RATE_RULES);
        // The position is that of the first rule too many.
        assert_eq!(
            error(&format!("accumulate = true\n\n{}", rule.repeat(5))),
            "ipguard.toml:19:1: rate_limit: at most 4 rules are supported, found 5"
        );
        assert!(matches!(
            parse(&rule.repeat(7)),
            Err(ConfigError::TooMany {
                found: 7,
                max: MAX_RATE_RULES,
                ..
            })
        ));
    }

    #[test]
    fn rule_ports_at_most_eight_distinct_duplicates_removed() {
        let text = |ports: &str| {
            format!("[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"1s\"\nports = {ports}\n")
        };
        assert_eq!(
            parse(&text("[443, 80, 443, 80, 22]")).unwrap().rate_limit[0].ports,
            [443, 80, 22]
        );
        assert_eq!(
            parse(&text("[1, 2, 3, 4, 5, 6, 7, 8, 8, 1, 65535]"))
                .unwrap_err()
                .to_string(),
            "ipguard.toml:5:40: rate_limit[0].ports: at most 8 distinct ports are supported, found 9"
        );
        // Eight distinct ports, written with repeats, are fine.
        assert_eq!(
            parse(&text("[1, 2, 3, 4, 5, 6, 7, 8, 8, 1, 2]"))
                .unwrap()
                .rate_limit[0]
                .ports,
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            parse(&text("[]")).unwrap().rate_limit[0].ports,
            Vec::<u16>::new()
        );
    }

    #[test]
    fn escalation_errors_name_the_key() {
        let esc = |body: &str| format!("interface = \"eth0\"\n[escalation]\n{body}\n");
        assert_eq!(
            error(&esc("blacklist_duration = \"ever\"")),
            "ipguard.toml:3:22: escalation.blacklist_duration: \"ever\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\"), or \"forever\""
        );
        assert_eq!(
            error(&esc("max_ban = \"0d\"")),
            "ipguard.toml:3:11: escalation.max_ban: must be longer than 0, got \"0d\""
        );
        assert_eq!(
            error(&esc("graylist_duration = \"forever\"")),
            "ipguard.toml:3:21: escalation.graylist_duration: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error(&esc("strike_window = \"1.5d\"")),
            "ipguard.toml:3:17: escalation.strike_window: \"1.5d\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error(&esc("state_retention = \" 30d\"")),
            "ipguard.toml:3:19: escalation.state_retention: \" 30d\" has leading or trailing whitespace; write the duration without it"
        );
        assert_eq!(
            error(&esc("ban_growth = 0.5")),
            "ipguard.toml:3:14: escalation.ban_growth: must be a finite number >= 1.0, got 0.5"
        );
        for (value, shown) in [
            ("nan", "nan"),
            ("inf", "inf"),
            ("-inf", "-inf"),
            ("0", "0"),
            ("-2.5", "-2.5"),
        ] {
            assert_eq!(
                error(&esc(&format!("ban_growth = {value}"))),
                format!("ipguard.toml:3:14: escalation.ban_growth: must be a finite number >= 1.0, got {shown}")
            );
        }
        assert_eq!(
            parse(&esc("ban_growth = 1.5"))
                .unwrap()
                .escalation
                .ban_growth,
            1.5
        );
        assert_eq!(
            error(&esc("strikes_to_blacklist = 0")),
            "ipguard.toml:3:24: escalation.strikes_to_blacklist: must be between 1 and 4294967295, got 0"
        );
        assert_eq!(
            error(&esc("grace_violations = -1")),
            "ipguard.toml:3:20: escalation.grace_violations: must be between 0 and 4294967295, got -1"
        );
        assert_eq!(
            error(&esc("relative_block = \"yes\"")),
            "ipguard.toml:3:18: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            error(&esc("strikes = 3")),
            "ipguard.toml:3:1: unknown field `strikes`, expected one of `graylist_duration`, `strikes_to_blacklist`, `strike_window`, `blacklist_duration`, `ban_growth`, `max_ban`, `relative_block`, `reset_strikes_after_blacklist`, `state_retention`, `grace_violations`"
        );
        assert_eq!(
            error("escalation = 3\n"),
            "ipguard.toml:1:14: invalid type: integer `3`, expected the [escalation] table"
        );
    }

    #[test]
    fn report_errors_name_the_key() {
        assert_eq!(
            error("[report]\ncount = 0\n"),
            "ipguard.toml:2:9: report.count: must be between 1 and 4294967295, got 0"
        );
        assert_eq!(
            error("[report]\nwindow = \"60\"\n"),
            "ipguard.toml:2:10: report.window: \"60\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error("[report]\nduration = \"forever\"\n"),
            "ipguard.toml:2:12: report.duration: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
    }

    #[test]
    fn api_log_state_defaults() {
        let config = parse("").unwrap();
        assert_eq!(
            config.api,
            ApiConfig {
                listen: "127.0.0.1:9180".parse().unwrap(),
                token_file: None,
                max_body_bytes: 8 * 1024 * 1024,
            }
        );
        assert_eq!(
            config.log,
            LogConfig {
                path: None,
                max_bytes: 5 * 1024 * 1024,
                backups: 7,
                max_lines_per_sec: 100,
                drop_interval: Duration::from_secs(10),
            }
        );
        assert_eq!(
            config.state,
            StateConfig {
                dir: "/var/lib/ipguard".into(),
                pin_dir: "/sys/fs/bpf/ipguard".into(),
            }
        );
        assert_eq!(config.api, ApiConfig::default());
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.state, StateConfig::default());
        // Empty sections are the defaults too.
        assert_eq!(parse("[api]\n[log]\n[state]\n").unwrap(), Config::default());
    }

    #[test]
    fn example_api_log_state_are_the_defaults_and_uncomment_cleanly() {
        let config = Config::parse(EXAMPLE, "ipguard.example.toml").unwrap();
        assert_eq!(config.api, ApiConfig::default());
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.state, StateConfig::default());
        // The commented-out keys are valid where they stand.
        let uncommented = EXAMPLE
            .replace(
                "# token_file = \"/etc/ipguard/api-token\"",
                "token_file = \"/etc/ipguard/api-token\"",
            )
            .replace(
                "# path = \"/var/log/ipguard/decisions.log\"",
                "path = \"/var/log/ipguard/decisions.log\"",
            );
        assert_ne!(uncommented, EXAMPLE);
        let config = Config::parse(&uncommented, "ipguard.example.toml").unwrap();
        assert_eq!(
            config.api.token_file.as_deref(),
            Some(Path::new("/etc/ipguard/api-token"))
        );
        assert_eq!(
            config.log.path.as_deref(),
            Some(Path::new("/var/log/ipguard/decisions.log"))
        );
    }

    #[test]
    fn every_api_log_state_key_is_read() {
        let text = r#"[api]
listen = "[::1]:8080"
token_file = "/run/secrets/ipguard token"
max_body_bytes = 1024

[log]
path = "/tmp/ipguard/decisions.log"
max_bytes = 4096
backups = 0
max_lines_per_sec = 1
drop_interval = "1m"

[state]
dir = "/srv/ipguard/"
pin_dir = "/sys/fs/bpf/other"
"#;
        let config = parse(text).unwrap();
        assert_eq!(
            config.api,
            ApiConfig {
                listen: "[::1]:8080".parse().unwrap(),
                token_file: Some("/run/secrets/ipguard token".into()),
                max_body_bytes: 1024,
            }
        );
        assert_eq!(
            config.log,
            LogConfig {
                path: Some("/tmp/ipguard/decisions.log".into()),
                max_bytes: 4096,
                backups: 0,
                max_lines_per_sec: 1,
                drop_interval: Duration::from_secs(60),
            }
        );
        assert_eq!(
            config.state,
            StateConfig {
                dir: "/srv/ipguard/".into(),
                pin_dir: "/sys/fs/bpf/other".into(),
            }
        );
        // The upper bounds are accepted.
        let config = parse(
            "[api]\nlisten = \"0.0.0.0:0\"\nmax_body_bytes = 268435456\n\
             [log]\nmax_bytes = 9223372036854775807\nbackups = 1000\n\
             max_lines_per_sec = 4294967295\ndrop_interval = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(config.api.listen, "0.0.0.0:0".parse().unwrap());
        assert_eq!(config.api.max_body_bytes, 256 << 20);
        assert_eq!(config.log.max_bytes, i64::MAX as u64);
        assert_eq!(config.log.backups, 1000);
        assert_eq!(config.log.max_lines_per_sec, u32::MAX);
        assert_eq!(config.log.drop_interval, Duration::from_secs(1));
    }

    #[test]
    fn api_errors_name_the_key() {
        assert_eq!(
            error("[api]\n\nlisten = \"localhost:80\"\n"),
            "ipguard.toml:3:10: api.listen: \"localhost:80\" is not an IP address and port (e.g. \"127.0.0.1:9180\")"
        );
        for given in [
            "127.0.0.1",
            "::1:9180",
            "127.0.0.1:65536",
            " 127.0.0.1:80",
            "",
        ] {
            assert_eq!(
                error(&format!("[api]\nlisten = \"{given}\"\n")),
                format!("ipguard.toml:2:10: api.listen: {given:?} is not an IP address and port (e.g. \"127.0.0.1:9180\")")
            );
        }
        assert_eq!(
            error("[api]\nlisten = 9180\n"),
            "ipguard.toml:2:10: invalid type: integer `9180`, expected a string"
        );
        assert_eq!(
            error("[api]\ntoken_file = \"api-token\"\n"),
            "ipguard.toml:2:14: api.token_file: \"api-token\" is not an absolute path"
        );
        assert_eq!(
            error("[api]\ntoken_file = \"/etc/ipguard/\"\n"),
            "ipguard.toml:2:14: api.token_file: \"/etc/ipguard/\" names a directory: give the path of a file"
        );
        assert_eq!(
            error("[api]\nmax_body_bytes = 1023\n"),
            "ipguard.toml:2:18: api.max_body_bytes: must be between 1024 and 268435456, got 1023"
        );
        assert_eq!(
            error("[api]\nmax_body_bytes = 268435457\n"),
            "ipguard.toml:2:18: api.max_body_bytes: must be between 1024 and 268435456, got 268435457"
        );
        assert_eq!(
            error("[api]\ntoken = \"secret\"\n"),
            "ipguard.toml:2:1: unknown field `token`, expected one of `listen`, `token_file`, `max_body_bytes`"
        );
        assert_eq!(
            error("api = 3\n"),
            "ipguard.toml:1:7: invalid type: integer `3`, expected the [api] table"
        );
    }

    #[test]
    fn log_errors_name_the_key() {
        let log = |body: &str| format!("[log]\n{body}\n");
        assert_eq!(
            error(&log("path = \"decisions.log\"")),
            "ipguard.toml:2:8: log.path: \"decisions.log\" is not an absolute path"
        );
        assert_eq!(
            error(&log("path = \"\"")),
            "ipguard.toml:2:8: log.path: \"\" is not an absolute path"
        );
        for dir in ["/var/log/ipguard/", "/", "/var/log/.", "/var/log/.."] {
            assert_eq!(
                error(&log(&format!("path = \"{dir}\""))),
                format!("ipguard.toml:2:8: log.path: {dir:?} names a directory: give the path of a file")
            );
        }
        assert_eq!(
            error(&log("path = \"/var/log/a\\u0000b\"")),
            "ipguard.toml:2:8: log.path: \"/var/log/a\\0b\" contains a NUL byte"
        );
        assert_eq!(
            error(&log("max_bytes = 4095")),
            "ipguard.toml:2:13: log.max_bytes: must be between 4096 and 9223372036854775807, got 4095"
        );
        assert_eq!(
            error(&log("max_bytes = -1")),
            "ipguard.toml:2:13: log.max_bytes: must be between 4096 and 9223372036854775807, got -1"
        );
        assert_eq!(
            error(&log("backups = 1001")),
            "ipguard.toml:2:11: log.backups: must be between 0 and 1000, got 1001"
        );
        assert_eq!(
            error(&log("backups = -1")),
            "ipguard.toml:2:11: log.backups: must be between 0 and 1000, got -1"
        );
        assert_eq!(
            error(&log("max_lines_per_sec = 0")),
            "ipguard.toml:2:21: log.max_lines_per_sec: must be between 1 and 4294967295, got 0"
        );
        assert_eq!(
            error(&log("max_lines_per_sec = 4294967296")),
            "ipguard.toml:2:21: log.max_lines_per_sec: must be between 1 and 4294967295, got 4294967296"
        );
        assert_eq!(
            error(&log("drop_interval = \"500ms\"")),
            "ipguard.toml:2:17: log.drop_interval: must be at least 1s, got 500ms"
        );
        assert_eq!(
            error(&log("drop_interval = \"0s\"")),
            "ipguard.toml:2:17: log.drop_interval: must be longer than 0, got \"0s\""
        );
        assert_eq!(
            error(&log("drop_interval = \"forever\"")),
            "ipguard.toml:2:17: log.drop_interval: \"forever\" is not allowed here: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error(&log("drop_interval = 10")),
            "ipguard.toml:2:17: invalid type: integer `10`, expected a string"
        );
        assert_eq!(
            error(&log("file = \"/var/log/x\"")),
            "ipguard.toml:2:1: unknown field `file`, expected one of `path`, `max_bytes`, `backups`, `max_lines_per_sec`, `drop_interval`"
        );
    }

    #[test]
    fn state_errors_name_the_key() {
        assert_eq!(
            error("[state]\ndir = \"var/lib/ipguard\"\n"),
            "ipguard.toml:2:7: state.dir: \"var/lib/ipguard\" is not an absolute path"
        );
        assert_eq!(
            error("[state]\npin_dir = \"./pins\"\n"),
            "ipguard.toml:2:11: state.pin_dir: \"./pins\" is not an absolute path"
        );
        assert_eq!(
            error("[state]\npin_dir = \"\"\n"),
            "ipguard.toml:2:11: state.pin_dir: \"\" is not an absolute path"
        );
        assert_eq!(
            error("[state]\ndirectory = \"/x\"\n"),
            "ipguard.toml:2:1: unknown field `directory`, expected `dir` or `pin_dir`"
        );
        assert_eq!(
            parse("[state]\npin_dir = \"/sys/fs/bpf/\"\n")
                .unwrap()
                .state
                .pin_dir,
            Path::new("/sys/fs/bpf/")
        );
    }

    #[test]
    fn api_log_state_errors_are_structured() {
        assert_eq!(
            parse("[api]\nlisten = \"localhost:80\"\n"),
            Err(ConfigError::SocketAddr {
                origin: "ipguard.toml".into(),
                at: Position {
                    line: 2,
                    column: 10
                },
                key: "api.listen",
                given: "localhost:80".into(),
            })
        );
        assert_eq!(
            parse("[log]\npath = \"x.log\"\n"),
            Err(ConfigError::Path {
                origin: "ipguard.toml".into(),
                at: Position { line: 2, column: 8 },
                key: "log.path",
                given: "x.log".into(),
                problem: "is not an absolute path",
            })
        );
    }

    #[test]
    fn rules_refresh_is_at_least_a_second() {
        assert_eq!(
            parse("rules_refresh = \"1s\"").unwrap().rules_refresh,
            Duration::from_secs(1)
        );
        assert_eq!(parse("rules_refresh = \"1d\"").unwrap().rules_refresh, DAY);
        assert_eq!(
            error("rules_refresh = \"999ms\"\n"),
            "ipguard.toml:1:17: rules_refresh: must be at least 1s, got 999ms"
        );
        assert_eq!(
            error("rules_refresh = \"0s\"\n"),
            "ipguard.toml:1:17: rules_refresh: must be longer than 0, got \"0s\""
        );
        assert_eq!(
            error("rules_refresh = \"5 m\"\n"),
            "ipguard.toml:1:17: rules_refresh: \"5 m\" is not a duration: use a whole number with ms, s, m, h or d (e.g. \"90s\", \"24h\")"
        );
        assert_eq!(
            error("accumulate = \"yes\"\n"),
            "ipguard.toml:1:14: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn policy_errors_are_structured() {
        let text = "[[rate_limit]]\nkind = \"syn\"\ncount = 1\nwindow = \"10x\"\n";
        assert_eq!(
            parse(text),
            Err(ConfigError::Duration {
                origin: "ipguard.toml".into(),
                at: Position {
                    line: 4,
                    column: 10
                },
                key: "rate_limit[0].window".into(),
                error: DurationError::Invalid {
                    given: "10x".into(),
                    forever_allowed: false
                },
            })
        );
        assert_eq!(
            parse("[[rules]]\naction = \"deny\"\n"),
            Err(ConfigError::MissingField {
                origin: "ipguard.toml".into(),
                at: Position { line: 1, column: 1 },
                key: "rules[0]".into(),
                field: "source",
            })
        );
    }
}
