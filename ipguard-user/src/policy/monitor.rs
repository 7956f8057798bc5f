//! Monitor mode for sources of prefixes (`[lists] mode`, `[geo] mode`, `[[feed]] mode`): their
//! graylist and blacklist prefixes go to the compiler's monitored layers
//! ([`Layer::MonitorGray`], [`Layer::MonitorBlack`]) instead of the engine's lists, so the
//! data path passes them and counts them as "would drop" (see `policy::compile` for where
//! they stand in the precedence: below every enforced ban and deny rule).
//!
//! Each source holds its own set per list; the compiled layer is their union, so a prefix
//! two sources monitor stays monitored until both let go of it. Monitored prefixes are no
//! engine state: no expiry, no journal, no strikes. Their sources bring them back at every
//! start (the config file, the geo databases, the feeds' last good copies).
//!
//! The hook for a source is [`Policy::monitor`] (a diff) or [`Policy::set_monitored`] (a
//! whole set), through `Controller::monitor` / `Controller::set_monitored`, which write the
//! table operations or put the tables back.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{compile::Change, Policy};
use crate::model::{ListKind, Mode, TableOp};

/// Who monitors a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MonitorSource {
    /// The config file: `[lists]` with `mode = "monitor"`, and `[geo]` with
    /// `mode = "monitor"` (its prefixes come with the config's lists).
    Config,
    /// A blocklist feed with `mode = "monitor"`, by its name.
    Feed(String),
}

impl std::fmt::Display for MonitorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MonitorSource::Config => f.write_str("config"),
            MonitorSource::Feed(name) => write!(f, "feed {name}"),
        }
    }
}

/// What one call changed in a source's set: the prefixes really added and really removed
/// (the inverse call undoes it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorDiff {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

impl MonitorDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The monitored prefixes of every source, by list (graylist, blacklist).
#[derive(Debug, Default, Clone)]
pub struct Monitored {
    sets: BTreeMap<(MonitorSource, ListKind), BTreeSet<IpNet>>,
}

impl Monitored {
    /// Adds and removes prefixes (host bits cleared) of `source` on `list`; returns the
    /// compiler changes (a prefix enters the layer with its first holder and leaves it with
    /// its last) and what changed in the source's set. The whitelist has no monitor mode:
    /// nothing changes for it.
    fn update(
        &mut self,
        source: &MonitorSource,
        list: ListKind,
        added: &[IpNet],
        removed: &[IpNet],
    ) -> (Vec<Change>, MonitorDiff) {
        let Some(layer) = list.monitor_layer() else {
            return (Vec::new(), MonitorDiff::default());
        };
        let mut diff = MonitorDiff::default();
        let mut changes = Vec::new();
        let key = (source.clone(), list);
        for net in removed.iter().map(IpNet::trunc) {
            let gone = self.sets.get_mut(&key).is_some_and(|set| set.remove(&net));
            if gone {
                diff.removed.push(net);
                if !self.held_by_other(source, list, &net) {
                    changes.push(Change::Remove(net, layer));
                }
            }
        }
        for net in added.iter().map(IpNet::trunc) {
            if self.sets.get(&key).is_some_and(|set| set.contains(&net)) {
                continue;
            }
            let held = self.held_by_other(source, list, &net);
            self.sets.entry(key.clone()).or_default().insert(net);
            diff.added.push(net);
            if !held {
                changes.push(Change::Insert(net, layer));
            }
        }
        if self.sets.get(&key).is_some_and(BTreeSet::is_empty) {
            self.sets.remove(&key);
        }
        (changes, diff)
    }

    /// Whether a source other than `source` monitors `net` on `list`.
    fn held_by_other(&self, source: &MonitorSource, list: ListKind, net: &IpNet) -> bool {
        self.sets
            .iter()
            .any(|((s, l), set)| s != source && *l == list && set.contains(net))
    }

    /// The prefixes `source` monitors on `list`, in prefix order.
    pub fn of(&self, source: &MonitorSource, list: ListKind) -> impl Iterator<Item = &IpNet> {
        self.sets.get(&(source.clone(), list)).into_iter().flatten()
    }

    /// The sources that monitor `net` (exactly this prefix) on `list`.
    pub fn holders(&self, net: IpNet, list: ListKind) -> Vec<&MonitorSource> {
        self.sets
            .iter()
            .filter(|((_, l), set)| *l == list && set.contains(&net))
            .map(|((s, _), _)| s)
            .collect()
    }

    /// Monitored prefixes per list (graylist, blacklist), every source together (a prefix
    /// two sources hold counts twice).
    pub fn count(&self, list: ListKind) -> usize {
        self.sets
            .iter()
            .filter(|((_, l), _)| *l == list)
            .map(|(_, set)| set.len())
            .sum()
    }
}

impl Policy {
    /// The hook for a source in monitor mode: adds and removes its prefixes on `list`'s
    /// monitored layer (`added` before `removed` in the table operations' effect, which come
    /// in the compiler's safe order). Returns the operations and what changed, so that the
    /// caller can undo it ([`MonitorDiff`] swapped) if the tables refuse. Not a transaction
    /// of the engine: monitored prefixes are no engine state.
    pub fn monitor(
        &mut self,
        source: &MonitorSource,
        list: ListKind,
        added: &[IpNet],
        removed: &[IpNet],
    ) -> (Vec<TableOp>, MonitorDiff) {
        let (changes, diff) = self.monitored.update(source, list, added, removed);
        (self.compiled.apply(changes), diff)
    }

    /// Makes `nets` the whole set `source` monitors on `list` (see [`Policy::monitor`]).
    pub fn set_monitored(
        &mut self,
        source: &MonitorSource,
        list: ListKind,
        nets: &[IpNet],
    ) -> (Vec<TableOp>, MonitorDiff) {
        let want: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        let removed: Vec<IpNet> = self
            .monitored
            .of(source, list)
            .filter(|n| !want.contains(n))
            .copied()
            .collect();
        let added: Vec<IpNet> = want.into_iter().collect();
        self.monitor(source, list, &added, &removed)
    }

    /// The monitored prefixes of every source.
    pub fn monitored(&self) -> &Monitored {
        &self.monitored
    }

    /// Switches the global mode: in monitor mode every graylist, blacklist and deny
    /// decision becomes its monitored code (see `ListState::set_mode`). One table rewrite
    /// in the compiler's safe order; no ops if the mode is already `mode`. Not engine
    /// state: the caller writes the ops, or switches back if the tables refuse them.
    pub fn set_mode(&mut self, mode: Mode) -> Vec<TableOp> {
        self.compiled.set_mode(mode)
    }

    /// The global mode.
    pub fn mode(&self) -> Mode {
        self.compiled.mode()
    }
}

#[cfg(test)]
mod tests {
    use ipguard_common::{
        ListEntry, LIST_BLACKLIST, LIST_MONITOR_BLACKLIST, LIST_MONITOR_GRAYLIST,
    };

    use super::*;
    use crate::{
        config::Escalation,
        model::{longest_match, Ts},
        testing::{ip, net},
    };

    fn policy() -> Policy {
        Policy::new(Escalation::default(), None)
    }

    fn code(p: &Policy, a: &str) -> Option<u32> {
        longest_match(p.compiled(), ip(a)).map(|(_, e)| e.list)
    }

    #[test]
    fn a_prefix_stays_monitored_while_a_source_holds_it() {
        let mut p = policy();
        let feed = MonitorSource::Feed("drop".into());
        let (ops, diff) = p.monitor(
            &MonitorSource::Config,
            ListKind::Blacklist,
            &[net("192.0.2.0/24")],
            &[],
        );
        assert_eq!(
            ops,
            [TableOp::Write(
                net("192.0.2.0/24"),
                ListEntry::new(LIST_MONITOR_BLACKLIST, 0)
            )]
        );
        assert_eq!(diff.added, [net("192.0.2.0/24")]);
        // The same prefix from a feed: no table change, one more holder.
        let (ops, diff) = p.monitor(&feed, ListKind::Blacklist, &[net("192.0.2.0/24")], &[]);
        assert!(ops.is_empty());
        assert_eq!(diff.added.len(), 1);
        assert_eq!(
            p.monitored()
                .holders(net("192.0.2.0/24"), ListKind::Blacklist)
                .len(),
            2
        );
        // Adding again changes nothing at all.
        let (ops, diff) = p.monitor(&feed, ListKind::Blacklist, &[net("192.0.2.9/24")], &[]);
        assert!(ops.is_empty() && diff.is_empty());
        // The config lets go: the feed still holds it.
        let (ops, _) = p.set_monitored(&MonitorSource::Config, ListKind::Blacklist, &[]);
        assert!(ops.is_empty());
        assert_eq!(code(&p, "192.0.2.1"), Some(LIST_MONITOR_BLACKLIST));
        let (ops, diff) = p.monitor(&feed, ListKind::Blacklist, &[], &[net("192.0.2.0/24")]);
        assert_eq!(ops, [TableOp::Delete(net("192.0.2.0/24"))]);
        assert_eq!(diff.removed, [net("192.0.2.0/24")]);
        assert_eq!(code(&p, "192.0.2.1"), None);
        assert_eq!(p.monitored().count(ListKind::Blacklist), 0);
    }

    #[test]
    fn monitored_prefixes_never_weaken_enforced_ones() {
        let mut p = policy();
        let (c, _) = p.add(
            ListKind::Blacklist,
            &[(net("198.51.100.0/24"), None, "ban".into())],
            crate::model::Origin::Api,
            Ts(0),
        );
        p.commit();
        let _ = c;
        // A longer monitored graylist prefix inside the enforced blacklist one.
        p.monitor(
            &MonitorSource::Config,
            ListKind::Graylist,
            &[net("198.51.100.7/32"), net("203.0.113.0/24")],
            &[],
        );
        assert_eq!(code(&p, "198.51.100.7"), Some(LIST_BLACKLIST));
        assert_eq!(code(&p, "203.0.113.7"), Some(LIST_MONITOR_GRAYLIST));
        // The whitelist has no monitor mode.
        let (ops, diff) = p.monitor(
            &MonitorSource::Config,
            ListKind::Whitelist,
            &[net("10.0.0.0/8")],
            &[],
        );
        assert!(ops.is_empty() && diff.is_empty());
    }
}
