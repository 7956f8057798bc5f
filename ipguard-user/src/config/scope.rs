//! `proto` and `ports` of a `[[rules]]` entry or a scoped `[lists]` entry.

use toml::Spanned;

use super::{validate::Source, ConfigError};
use crate::model::{Proto, Scope};

impl Source<'_> {
    /// The scope of the table `table` (`rules[1]`, `lists.blacklist[0]`); `None` when it
    /// has neither `proto` nor `ports`. `ports` without `proto`: TCP and UDP.
    pub(super) fn scope(
        &self,
        table: &str,
        proto: &Option<Spanned<String>>,
        ports: &Option<Spanned<Vec<Spanned<i64>>>>,
    ) -> Result<Option<Scope>, ConfigError> {
        // Where a scope that does not hold together is reported: at its ports, if any.
        let (key, at) = match (ports, proto) {
            (Some(raw), _) => (format!("{table}.ports"), self.at(raw)),
            (None, Some(raw)) => (format!("{table}.proto"), self.at(raw)),
            (None, None) => return Ok(None),
        };
        let proto = proto
            .as_ref()
            .map(|raw| self.variant::<Proto>(&format!("{table}.proto"), raw))
            .transpose()?;
        let list = self.ports(&format!("{table}.ports"), ports, Scope::MAX_PORTS)?;
        let invalid = |problem: String| ConfigError::Invalid {
            origin: self.origin.to_owned(),
            at,
            key: key.clone(),
            problem,
        };
        if ports.is_some() && list.is_empty() {
            // Refused rather than read as "all ports": in a deny rule it could as well be
            // meant as "no port".
            return Err(invalid(
                "is empty: list the destination ports, or leave ports out for all of them".into(),
            ));
        }
        Scope::new(proto, list)
            .map(Some)
            .map_err(|error| invalid(error.to_string()))
    }
}
