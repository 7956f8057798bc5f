//! From the raw file to the validated [`Config`](super::Config): every check, each error
//! naming the key and its place.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;

use ipguard_common::{MAX_RATE_RULES, MAX_RULE_PORTS};
use toml::Spanned;

use super::{list_file::dedup_in_order, raw::*, types::*, ConfigError, Position};
use crate::{
    duration::{parse_duration, parse_lifetime, DurationError, Lifetime},
    model::{ListKind, Mode, UnknownVariant},
};

/// What a path from the config file names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    File,
    Dir,
}

/// The text being validated and the name to report it under.
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

impl Source<'_> {
    pub(super) fn at<T>(&self, value: &Spanned<T>) -> Position {
        Position::at_offset(self.text, value.span().start)
    }

    pub(super) fn interface(
        &self,
        raw: Option<Spanned<String>>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        match interface_name_problem(raw.get_ref()) {
            None => Ok(Some(raw.into_inner())),
            Some(reason) => Err(ConfigError::Interface {
                origin: self.origin.to_owned(),
                at: self.at(&raw),
                name: crate::model::excerpt(raw.get_ref()),
                reason,
            }),
        }
    }

    pub(super) fn xdp_mode(&self, raw: Option<Spanned<String>>) -> Result<XdpMode, ConfigError> {
        let Some(raw) = raw else {
            return Ok(XdpMode::default());
        };
        raw.get_ref().parse().map_err(|error| ConfigError::XdpMode {
            origin: self.origin.to_owned(),
            at: self.at(&raw),
            error,
        })
    }

    /// A `mode` key (`mode`, `lists.mode`, `geo.mode`, `feed[i].mode`): `enforce` (the
    /// default) or `monitor`.
    pub(super) fn mode(
        &self,
        key: &str,
        raw: &Option<Spanned<String>>,
    ) -> Result<Mode, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Mode::default());
        };
        raw.get_ref()
            .parse()
            .map_err(|error| ConfigError::UnknownVariant {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: key.to_owned(),
                error,
            })
    }

    pub(super) fn capacity(
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
    pub(super) fn required<'v, T>(
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

    pub(super) fn variant<T: FromStr<Err = UnknownVariant>>(
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
                given: crate::model::excerpt(raw.get_ref()),
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

    pub(super) fn rules_refresh(
        &self,
        raw: &Option<Spanned<String>>,
    ) -> Result<Duration, ConfigError> {
        match raw {
            Some(raw) => self.duration("rules_refresh", raw, MIN_RULES_REFRESH, None),
            None => Ok(DEFAULT_RULES_REFRESH),
        }
    }

    pub(super) fn rate_limits(
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
            ports: self.ports(&format!("{table}.ports"), &rule.ports, MAX_RULE_PORTS)?,
            exempt: self.exempt(&table, &rule.exempt)?,
        })
    }

    /// `exempt` of the rate rule `table`: networks as a list takes them (no minimum prefix:
    /// exempting a broad network bans less, never more).
    fn exempt(
        &self,
        table: &str,
        raw: &Option<Vec<Spanned<String>>>,
    ) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets = Vec::new();
        for (index, entry) in raw.iter().flatten().enumerate() {
            let key = || format!("{table}.exempt[{index}]");
            nets.push(self.list_net(key, entry, None)?);
        }
        Ok(dedup_in_order(nets))
    }

    /// Destination ports (`[[rate_limit]]`, `[[rules]]`, scoped list entries): each in
    /// 1 ..= 65535, at most `max` distinct ones, in file order without duplicates.
    pub(super) fn ports(
        &self,
        key: &str,
        raw: &Option<Spanned<Vec<Spanned<i64>>>>,
        max: usize,
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
        if let Some(first_too_many) = first_seen.get(max) {
            return Err(ConfigError::TooMany {
                origin: self.origin.to_owned(),
                at: self.at(first_too_many),
                key: key.to_owned(),
                what: "distinct ports",
                max,
                found: ports.len(),
            });
        }
        Ok(ports)
    }

    /// `min`: a promoted prefix is a list entry like any, so never broader than the lists
    /// take.
    pub(super) fn escalation(
        &self,
        raw: &RawEscalation,
        min: MinPrefix,
    ) -> Result<Escalation, ConfigError> {
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
            promote_when_full: match &raw.promote_when_full {
                Some(n) => self.integer("escalation.promote_when_full", n, 0)?,
                None => defaults.promote_when_full,
            },
            promote_v4_after: match &raw.promote_v4_after {
                Some(n) => self.integer("escalation.promote_v4_after", n, 0)?,
                None => defaults.promote_v4_after,
            },
            promote_v6_after: match &raw.promote_v6_after {
                Some(n) => self.integer("escalation.promote_v6_after", n, 0)?,
                None => defaults.promote_v6_after,
            },
            promote_v4_prefix: self.prefix_len(
                "escalation.promote_v4_prefix",
                &raw.promote_v4_prefix,
                min.v4.clamp(8, 31)..=31,
                defaults.promote_v4_prefix,
            )?,
            promote_v6_prefix: self.prefix_len(
                "escalation.promote_v6_prefix",
                &raw.promote_v6_prefix,
                min.v6.clamp(16, 127)..=127,
                defaults.promote_v6_prefix,
            )?,
            promote_window: match &raw.promote_window {
                Some(w) => {
                    self.duration("escalation.promote_window", w, Duration::from_secs(1), None)?
                }
                None => defaults.promote_window,
            },
        })
    }

    /// An optional prefix length in `range`, or `default`.
    fn prefix_len(
        &self,
        key: &str,
        raw: &Option<Spanned<i64>>,
        range: std::ops::RangeInclusive<u8>,
        default: u8,
    ) -> Result<u8, ConfigError> {
        let (min, max) = (i64::from(*range.start()), i64::from(*range.end()));
        let len = self.ranged(key, raw, min, max, i64::from(default))?;
        // In range, so it fits.
        Ok(u8::try_from(len).unwrap_or(default))
    }

    pub(super) fn report(
        &self,
        raw: &Option<RawReport>,
    ) -> Result<Option<ReportRule>, ConfigError> {
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

    pub(super) fn rules(&self, raw: &[Spanned<RawRule>]) -> Result<Vec<Rule>, ConfigError> {
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
                    scope: self.scope(&table, &rule.proto, &rule.ports)?,
                })
            })
            .collect()
    }

    /// An optional integer in `min ..= max`, or `default`.
    pub(super) fn ranged(
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
                given: crate::model::excerpt(given),
                problem,
            }),
        }
    }

    pub(super) fn api(&self, raw: &RawApi) -> Result<ApiConfig, ConfigError> {
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
                    given: crate::model::excerpt(listen.get_ref()),
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
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(defaults.max_body_bytes),
            metrics_auth: raw.metrics_auth.unwrap_or(defaults.metrics_auth),
        })
    }

    pub(super) fn log(&self, raw: &RawLog) -> Result<LogConfig, ConfigError> {
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
        let format = match &raw.format {
            None => LogFormat::default(),
            Some(f) => f
                .get_ref()
                .parse()
                .map_err(|e: UnknownVariant| ConfigError::Invalid {
                    origin: self.origin.to_owned(),
                    at: self.at(f),
                    key: "log.format".into(),
                    problem: e.to_string(),
                })?,
        };
        // The ranges above are the types' own, so the defaults are never used here.
        Ok(LogConfig {
            format,
            path: self.path("log.path", &raw.path, PathKind::File)?,
            max_bytes: u64::try_from(max_bytes).unwrap_or(defaults.max_bytes),
            backups: u32::try_from(backups).unwrap_or(defaults.backups),
            max_lines_per_sec: u32::try_from(max_lines_per_sec)
                .unwrap_or(defaults.max_lines_per_sec),
            drop_interval,
        })
    }

    pub(super) fn state(&self, raw: &RawState) -> Result<StateConfig, ConfigError> {
        let defaults = StateConfig::default();
        Ok(StateConfig {
            dir: self
                .path("state.dir", &raw.dir, PathKind::Dir)?
                .unwrap_or(defaults.dir),
            pin_dir: self
                .path("state.pin_dir", &raw.pin_dir, PathKind::Dir)?
                .unwrap_or(defaults.pin_dir),
            keep_attached: raw.keep_attached.unwrap_or(defaults.keep_attached),
        })
    }
}

impl Source<'_> {
    fn invalid<T>(&self, raw: &Spanned<T>, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            at: self.at(raw),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    /// `[[feed]]`: a unique safe name, exactly one of url (http/https) or path, a list,
    /// a refresh of at least [`MIN_FEED_REFRESH`], a known format, a positive max_change.
    pub(super) fn feeds(&self, raw: &[Spanned<RawFeed>]) -> Result<Vec<FeedConfig>, ConfigError> {
        let mut out: Vec<FeedConfig> = Vec::with_capacity(raw.len());
        for (i, table) in raw.iter().enumerate() {
            let f = table.get_ref();
            let key = |k: &str| format!("feed[{i}].{k}");
            let missing = |field: &'static str| ConfigError::MissingField {
                origin: self.origin.to_owned(),
                at: self.at(table),
                key: format!("feed[{i}]"),
                field,
            };
            let name = f.name.as_ref().ok_or_else(|| missing("name"))?;
            if let Err(e) = crate::feeds::validate_name(name.get_ref()) {
                return Err(self.invalid(name, &key("name"), e.to_string()));
            }
            if out.iter().any(|o| &o.name == name.get_ref()) {
                return Err(self.invalid(
                    name,
                    &key("name"),
                    format!("{:?} names another feed too", name.get_ref()),
                ));
            }
            let source = match (&f.url, &f.path) {
                (Some(_), Some(p)) => {
                    return Err(self.invalid(p, &key("path"), "set url or path, not both"))
                }
                (None, None) => return Err(missing("url")),
                (Some(u), None) => {
                    let url = u.get_ref();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(self.invalid(
                            u,
                            &key("url"),
                            format!(
                                "{:?} is not an http:// or https:// URL",
                                crate::model::excerpt(url)
                            ),
                        ));
                    }
                    crate::feeds::Source::Url(url.clone())
                }
                (None, Some(p)) => {
                    let path = std::path::PathBuf::from(p.get_ref());
                    if !path.is_absolute() || p.get_ref().ends_with('/') {
                        return Err(self.invalid(
                            p,
                            &key("path"),
                            format!(
                                "{:?} is not an absolute path of a file",
                                crate::model::excerpt(p.get_ref())
                            ),
                        ));
                    }
                    crate::feeds::Source::Path(path)
                }
            };
            let list = match &f.list {
                None => ListKind::Blacklist,
                Some(v) => v.get_ref().parse::<ListKind>().map_err(|error| {
                    ConfigError::UnknownVariant {
                        origin: self.origin.to_owned(),
                        at: self.at(v),
                        key: key("list"),
                        error,
                    }
                })?,
            };
            let refresh = match &f.refresh {
                None => DEFAULT_FEED_REFRESH,
                Some(r) => self.duration(&key("refresh"), r, MIN_FEED_REFRESH, None)?,
            };
            let format = match &f.format {
                None => crate::feeds::FeedFormat::Netset,
                Some(v) => v
                    .get_ref()
                    .parse()
                    .map_err(|error| ConfigError::UnknownVariant {
                        origin: self.origin.to_owned(),
                        at: self.at(v),
                        key: key("format"),
                        error,
                    })?,
            };
            let max_change = match &f.max_change {
                None => DEFAULT_FEED_MAX_CHANGE,
                Some(m) if m.get_ref().is_finite() && *m.get_ref() > 0.0 => *m.get_ref(),
                Some(m) => {
                    return Err(self.invalid(
                        m,
                        &key("max_change"),
                        format!(
                            "{} is not a positive share (0.5 = half the feed may change)",
                            m.get_ref()
                        ),
                    ))
                }
            };
            out.push(FeedConfig {
                name: name.get_ref().clone(),
                source,
                list,
                refresh,
                format,
                max_change,
                exclude_bogons: f.exclude_bogons.unwrap_or(false),
                mode: {
                    let mode = self.mode(&key("mode"), &f.mode)?;
                    if list == ListKind::Whitelist && mode == crate::model::Mode::Monitor {
                        if let Some(m) = &f.mode {
                            return Err(self.invalid(
                                m,
                                &key("mode"),
                                "a whitelist feed drops nothing: monitor mode is for graylist and blacklist feeds",
                            ));
                        }
                    }
                    mode
                },
            });
        }
        Ok(out)
    }

    /// `[geo]`: valid country codes, one of block/allow, the databases their rules need.
    pub(super) fn geo(&self, raw: &Spanned<RawGeo>) -> Result<GeoConfig, ConfigError> {
        let g = raw.get_ref();
        let codes = |key: &str, list: &Vec<Spanned<String>>| {
            let mut out = std::collections::BTreeSet::new();
            for (i, v) in list.iter().enumerate() {
                if !crate::geo::is_country_code(v.get_ref()) {
                    return Err(self.invalid(
                        v,
                        &format!("{key}[{i}]"),
                        format!(
                            "{:?} is not a country code (two capital letters, ISO 3166-1, e.g. \"DE\")",
                            crate::model::excerpt(v.get_ref())
                        ),
                    ));
                }
                out.insert(v.get_ref().clone());
            }
            Ok(out)
        };
        let countries = match (&g.block_countries, &g.allow_countries) {
            (Some(_), Some(allow)) => {
                return Err(self.invalid(
                    &allow[0],
                    "geo.allow_countries",
                    "set block_countries or allow_countries, not both",
                ))
            }
            (Some(block), None) => GeoCountries::Block(codes("geo.block_countries", block)?),
            (None, Some(allow)) if allow.is_empty() => {
                return Err(ConfigError::Invalid {
                    origin: self.origin.to_owned(),
                    at: self.at(raw),
                    key: "geo.allow_countries".into(),
                    problem: "is empty: that would drop every public address".into(),
                })
            }
            (None, Some(allow)) => GeoCountries::Allow(codes("geo.allow_countries", allow)?),
            (None, None) => GeoCountries::None,
        };
        let database = self.path("geo.database", &g.database, PathKind::File)?;
        if countries != GeoCountries::None && database.is_none() {
            return Err(ConfigError::MissingField {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: "geo".into(),
                field: "database",
            });
        }
        let mut block_asns = std::collections::BTreeSet::new();
        for (i, v) in g.block_asns.iter().flatten().enumerate() {
            let n = u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    self.invalid(
                        v,
                        &format!("geo.block_asns[{i}]"),
                        format!("{} is not an AS number (1 to 4294967295)", v.get_ref()),
                    )
                })?;
            block_asns.insert(n);
        }
        let asn_database = self.path("geo.asn_database", &g.asn_database, PathKind::File)?;
        if !block_asns.is_empty() && asn_database.is_none() {
            return Err(ConfigError::MissingField {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: "geo".into(),
                field: "asn_database",
            });
        }
        if countries == GeoCountries::None && block_asns.is_empty() {
            return Err(ConfigError::Invalid {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: "geo".into(),
                problem:
                    "names nothing to drop: set block_countries, allow_countries or block_asns"
                        .into(),
            });
        }
        let list = match &g.list {
            None => ListKind::Blacklist,
            Some(v) => match v.get_ref().as_str() {
                "blacklist" => ListKind::Blacklist,
                "graylist" => ListKind::Graylist,
                _ => {
                    return Err(self.invalid(
                        v,
                        "geo.list",
                        format!(
                            "{:?}: geo prefixes go on the blacklist or the graylist",
                            crate::model::excerpt(v.get_ref())
                        ),
                    ))
                }
            },
        };
        Ok(GeoConfig {
            database,
            countries,
            asn_database,
            block_asns,
            list,
            mode: self.mode("geo.mode", &g.mode)?,
        })
    }

    /// `[cluster]`: the Redis URL is required; node and prefix are checked names.
    pub(super) fn cluster(&self, raw: &Spanned<RawCluster>) -> Result<ClusterConfig, ConfigError> {
        let c = raw.get_ref();
        let Some(redis) = &c.redis else {
            return Err(ConfigError::MissingField {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: "cluster".into(),
                field: "redis",
            });
        };
        if let Some(problem) = redis_url_problem(redis.get_ref()) {
            return Err(self.invalid(redis, "cluster.redis", problem));
        }
        let name = |key: &str, raw: &Option<Spanned<String>>, default: String| match raw {
            None => Ok(default),
            Some(v) => match cluster_name_problem(v.get_ref()) {
                None => Ok(v.get_ref().clone()),
                Some(p) => Err(self.invalid(
                    v,
                    key,
                    format!("{:?} {p}", crate::model::excerpt(v.get_ref())),
                )),
            },
        };
        let origins = |key: &str, raw: &Option<Vec<Spanned<String>>>| match raw {
            None => Ok(SharedOrigin::ALL.to_vec()),
            Some(list) => {
                let mut out = Vec::new();
                for (i, v) in list.iter().enumerate() {
                    let o = v.get_ref().parse::<SharedOrigin>().map_err(|error| {
                        ConfigError::UnknownVariant {
                            origin: self.origin.to_owned(),
                            at: self.at(v),
                            key: format!("{key}[{i}]"),
                            error,
                        }
                    })?;
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
                out.sort();
                Ok(out)
            }
        };
        Ok(ClusterConfig {
            redis: redis.get_ref().clone(),
            password_file: self.path("cluster.password_file", &c.password_file, PathKind::File)?,
            ca_file: match &c.ca_file {
                Some(ca) if !redis.get_ref().starts_with("rediss://") => {
                    return Err(self.invalid(
                        ca,
                        "cluster.ca_file",
                        "needs a rediss:// (TLS) URL in cluster.redis",
                    ))
                }
                _ => self.path("cluster.ca_file", &c.ca_file, PathKind::File)?,
            },
            node: name("cluster.node", &c.node, default_node_name())?,
            prefix: name(
                "cluster.prefix",
                &c.prefix,
                DEFAULT_CLUSTER_PREFIX.to_owned(),
            )?,
            share: origins("cluster.share", &c.share)?,
            apply: origins("cluster.apply", &c.apply)?,
        })
    }
}

/// Why `url` is not a Redis URL this build can use, if it is not.
pub fn redis_url_problem(url: &str) -> Option<String> {
    use redis::IntoConnectionInfo as _;
    if url.starts_with("rediss://") && url.contains('#') {
        return Some(
            "rediss:// without certificate checks (#insecure) is refused: set cluster.ca_file to the CA that signed the server's certificate".into(),
        );
    }
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Some(format!(
            "{:?} is not a redis:// or rediss:// URL (e.g. \"redis://127.0.0.1:6379/0\")",
            crate::model::excerpt(url)
        ));
    }
    match url.into_connection_info() {
        Err(e) => Some(format!("{:?} is not a valid Redis URL: {e}", crate::model::excerpt(url))),
        Ok(info) if info.redis_settings().password().is_some() => Some(
            "do not put the password in the URL (it would show in logs and status): use cluster.password_file".into(),
        ),
        Ok(_) => None,
    }
}

/// This host's name, as a valid node name (`node` if it cannot be read or used).
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| cluster_name_problem(h).is_none())
        .unwrap_or_else(|| "node".to_owned())
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
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
