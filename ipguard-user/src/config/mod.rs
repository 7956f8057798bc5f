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

mod error;
mod list_file;
mod lists;
mod protect;
mod raw;
mod scope;
mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Position};
pub use list_file::{
    parse_list_file, read_bounded as read_bounded_file, MAX_CONFIG_BYTES, MAX_LIST_FILE_BYTES,
};
use raw::RawConfig;
pub use types::*;
use validate::{one_line, Source};

impl Config {
    /// Reads and validates the config file at `path`; errors name the path as given.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match list_file::read_bounded(path, MAX_CONFIG_BYTES) {
            Ok(text) => Config::parse(&text, &origin),
            Err(error) => Err(ConfigError::Read {
                origin,
                kind: error.kind(),
                reason: error.to_string(),
            }),
        }
    }

    /// The `[log] format` of a config file, read before the logger exists (and so before
    /// the whole config is validated, which logs). `None` when the file cannot be read or
    /// parsed, or sets no valid format: the full load then reports what is wrong.
    pub fn peek_log_format(path: &Path) -> Option<LogFormat> {
        let text = list_file::read_bounded(path, MAX_CONFIG_BYTES).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        table.get("log")?.get("format")?.as_str()?.parse().ok()
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
        // First: the lists' shortest prefix is one of its settings.
        let protect = source.protect(&raw.protect)?;
        let min = protect.min_prefix;
        Ok(Config {
            protect,
            interface: source.interface(raw.interface)?,
            xdp_mode: source.xdp_mode(raw.xdp_mode)?,
            accumulate: raw.accumulate.unwrap_or(false),
            rules_refresh: source.rules_refresh(&raw.rules_refresh)?,
            mode: source.mode("mode", &raw.mode)?,
            lists: source.lists(&raw.lists, min)?,
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
            escalation: source.escalation(&raw.escalation, min)?,
            report: source.report(&raw.report)?,
            rules: source.rules(&raw.rules)?,
            api: source.api(&raw.api)?,
            log: source.log(&raw.log)?,
            state: source.state(&raw.state)?,
            flood: FloodSettings {
                unknown_syn_rate: u32::try_from(source.ranged(
                    "flood.unknown_syn_rate",
                    &raw.flood.unknown_syn_rate,
                    0,
                    MAX_UNKNOWN_SYN_RATE,
                    0,
                )?)
                .unwrap_or(0),
            },
            cluster: raw
                .cluster
                .as_ref()
                .map(|c| source.cluster(c))
                .transpose()?,
            geo: raw.geo.as_ref().map(|g| source.geo(g)).transpose()?,
            feeds: source.feeds(&raw.feed)?,
        })
    }
}

#[cfg(test)]
mod tests;
