//! The daemon's TOML config file (see `ipguard.example.toml` at the workspace root).
//!
//! Every error is one line that starts with `file:line:column`, so an operator (or an
//! editor's quickfix list) lands on the mistake. The file is deserialized into private
//! `Raw*` structs that keep each value's byte span, then validated into [`Config`].
//! Keys are checked strictly (`deny_unknown_fields`) so a typo is an error rather
//! than a silently ignored setting.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ipguard_common::{DEFAULT_LPM_CAPACITY, DEFAULT_SOURCES_CAPACITY};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

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
    /// Entries of the IPv4 LPM trie; at least 1.
    pub lpm_v4_capacity: u32,
    /// Entries of the IPv6 LPM trie; at least 1.
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

/// The validated config file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Interface to attach to; `None` if the file leaves it to the command line.
    pub interface: Option<String>,
    /// `xdp_mode`, default [`XdpMode::Auto`].
    pub xdp_mode: XdpMode,
    /// The `[lists]` section.
    pub lists: Lists,
    /// The `[maps]` section.
    pub maps: MapsConfig,
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
}

fn colon_position(at: &Option<Position>) -> String {
    at.map(|at| format!(":{at}")).unwrap_or_default()
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
    #[serde(default)]
    lists: RawLists,
    #[serde(default)]
    maps: RawMaps,
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

    fn list(&self, name: &str, raw: &[Spanned<String>]) -> Result<Vec<IpNet>, ConfigError> {
        let mut seen = HashSet::with_capacity(raw.len());
        let mut nets = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            let net = parse_net(entry.get_ref()).map_err(|error| ConfigError::ListEntry {
                origin: self.origin.to_owned(),
                at: self.at(entry),
                key: format!("lists.{name}[{index}]"),
                error,
            })?;
            if seen.insert(net) {
                nets.push(net);
            }
        }
        Ok(nets)
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
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Toml {
            origin: origin.to_owned(),
            at: error
                .span()
                .map(|span| Position::at_offset(text, span.start)),
            message: one_line(error.message()),
        })?;
        let source = Source { text, origin };
        let defaults = MapsConfig::default();
        Ok(Config {
            interface: source.interface(raw.interface)?,
            xdp_mode: source.xdp_mode(raw.xdp_mode)?,
            lists: Lists {
                whitelist: source.list("whitelist", &raw.lists.whitelist)?,
                graylist: source.list("graylist", &raw.lists.graylist)?,
                blacklist: source.list("blacklist", &raw.lists.blacklist)?,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../ipguard.example.toml");

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
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
            parse("# nothing here\n[lists]\n[maps]\n").unwrap(),
            Config::default()
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
            "ipguard.toml:3:1: unknown field `whitelsit`, expected one of `interface`, `xdp_mode`, `lists`, `maps`"
        );
        assert_eq!(
            error("[lists]\nblacklist = []\nwhitelsit = []\n"),
            "ipguard.toml:3:1: unknown field `whitelsit`, expected one of `whitelist`, `graylist`, `blacklist`"
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
            "ipguard.toml:2:7: invalid table header; expected `.`, `]`"
        );
        assert_eq!(
            error("interface = \"eth0\"\ninterface = \"eth1\"\n"),
            "ipguard.toml:2:1: duplicate key `interface` in document root"
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
}
