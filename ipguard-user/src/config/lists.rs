//! `[lists]`: the inline entries (addresses and networks, or tables scoping one to a
//! protocol and ports), the list files, the mode.

use std::{collections::HashSet, path::Path};

use ipnet::IpNet;
use toml::Spanned;

use super::{
    list_file::{dedup_in_order, parse_list_file, read_bounded, MAX_LIST_FILE_BYTES},
    raw::{RawListEntry, RawLists, RawScopedEntry},
    types::*,
    validate::Source,
    ConfigError,
};
use crate::{model::ListKind, net::parse_net};

impl Source<'_> {
    /// The `[lists]` section; `min`: the shortest prefix the lists take.
    pub(super) fn lists(&self, raw: &RawLists, min: MinPrefix) -> Result<Lists, ConfigError> {
        let mut scoped = Vec::new();
        let whitelist = self.list(
            ListKind::Whitelist,
            &raw.whitelist,
            &raw.whitelist_files,
            min,
            &mut scoped,
        )?;
        let graylist = self.list(
            ListKind::Graylist,
            &raw.graylist,
            &raw.graylist_files,
            min,
            &mut scoped,
        )?;
        let blacklist = self.list(
            ListKind::Blacklist,
            &raw.blacklist,
            &raw.blacklist_files,
            min,
            &mut scoped,
        )?;
        let mut seen = HashSet::with_capacity(scoped.len());
        scoped.retain(|entry: &ScopedEntry| seen.insert(entry.clone()));
        Ok(Lists {
            whitelist,
            graylist,
            blacklist,
            scoped,
            ..Lists::default()
        }
        .with_mode(self.mode("lists.mode", &raw.mode)?))
    }

    /// A list's plain inline entries, then those of its files in order; its scoped inline
    /// entries are added to `scoped`.
    fn list(
        &self,
        kind: ListKind,
        raw: &[Spanned<RawListEntry>],
        files: &[Spanned<String>],
        min: MinPrefix,
        scoped: &mut Vec<ScopedEntry>,
    ) -> Result<Vec<IpNet>, ConfigError> {
        let name = kind.as_str();
        let mut nets = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            let key = || format!("lists.{name}[{index}]");
            match entry.get_ref() {
                RawListEntry::Net(text) => {
                    nets.push(self.list_net_at(key, text, entry, Some(min))?)
                }
                RawListEntry::Scoped(table) => {
                    scoped.push(self.scoped_entry(&key(), entry, table, kind, min)?)
                }
            }
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
            // A regular file of bounded size: a FIFO or /dev/zero must not hang the daemon.
            let text = read_bounded(Path::new(path), MAX_LIST_FILE_BYTES)
                .map_err(|e| err(format!("cannot be read: {e}")))?;
            nets.extend(parse_list_file(path, &text, min)?);
        }
        Ok(dedup_in_order(nets))
    }

    /// `{ net = ..., proto = ..., ports = ... }` on list `kind`, at `key` (`lists.blacklist[3]`).
    fn scoped_entry(
        &self,
        key: &str,
        raw: &Spanned<RawListEntry>,
        table: &RawScopedEntry,
        kind: ListKind,
        min: MinPrefix,
    ) -> Result<ScopedEntry, ConfigError> {
        let text = self.required(key, self.at(raw), "net", &table.net)?;
        let net = self.list_net(|| format!("{key}.net"), text, Some(min))?;
        let Some(scope) = self.scope(key, &table.proto, &table.ports)? else {
            return Err(ConfigError::Invalid {
                origin: self.origin.to_owned(),
                at: self.at(raw),
                key: key.to_owned(),
                problem: format!(
                    "a table entry needs proto or ports; for all of the source's packets write the plain string {:?}",
                    crate::model::excerpt(text.get_ref())
                ),
            });
        };
        Ok(ScopedEntry {
            net,
            layer: kind.layer(),
            scope,
        })
    }

    /// An address or network as the lists take it (see [`parse_net`]), and with `min`
    /// at least that long; `key` names it in an error.
    pub(super) fn list_net(
        &self,
        key: impl Fn() -> String,
        raw: &Spanned<String>,
        min: Option<MinPrefix>,
    ) -> Result<IpNet, ConfigError> {
        self.list_net_at(key, raw.get_ref(), raw, min)
    }

    /// [`Source::list_net`] of `text`, reported at `place`'s position.
    fn list_net_at<T>(
        &self,
        key: impl Fn() -> String,
        text: &str,
        place: &Spanned<T>,
        min: Option<MinPrefix>,
    ) -> Result<IpNet, ConfigError> {
        let net = parse_net(text).map_err(|error| ConfigError::ListEntry {
            origin: self.origin.to_owned(),
            at: self.at(place),
            key: key(),
            error,
        })?;
        if let Some(shortest) = min.and_then(|min| min.violated_by(&net)) {
            return Err(ConfigError::TooBroad {
                origin: self.origin.to_owned(),
                at: self.at(place),
                key: key(),
                net,
                min: shortest,
                setting: MinPrefix::setting(&net),
            });
        }
        Ok(net)
    }
}
