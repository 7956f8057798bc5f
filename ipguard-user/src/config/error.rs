//! Why a config file was rejected, and where.

use std::{fmt, time::Duration};

use ipnet::IpNet;

use super::types::RuleSourceError;
use crate::{duration::DurationError, model::UnknownVariant, net::NetError};

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
        error: UnknownVariant,
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
    /// A list entry shorter than `[protect] min_prefix_v4`/`min_prefix_v6`.
    #[error("{origin}:{at}: {key}: {net} is broader than /{min}, the shortest prefix the lists take (set {setting} to allow it)")]
    TooBroad {
        origin: String,
        at: Position,
        key: String,
        net: IpNet,
        min: u8,
        setting: &'static str,
    },
    /// A list file's line shorter than the minimum prefix.
    #[error("{path}:{line}: {net} is broader than /{min}, the shortest prefix the lists take (set {setting} to allow it)")]
    ListFileTooBroad {
        path: String,
        /// 1-based.
        line: usize,
        net: IpNet,
        min: u8,
        setting: &'static str,
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
    /// A value its key does not take, with the reason (e.g. `[cluster]` settings).
    #[error("{origin}:{at}: {key}: {problem}")]
    Invalid {
        origin: String,
        at: Position,
        key: String,
        problem: String,
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
