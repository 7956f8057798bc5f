//! The engine's persisted form: what [`super::Engine::snapshot`] and
//! [`super::Engine::take_journal`] hand to `crate::store`, and what a restart restores.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use smallvec::SmallVec;

use super::{Command, Engine, Entry, Offender};
use crate::model::{ListKind, Origin, Ts};

/// Everything the engine must remember across restarts (config entries excluded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub entries: Vec<PersistedEntry>,
    pub offenders: Vec<PersistedOffender>,
}

/// A list entry as persisted: [`Entry`] with its prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedEntry {
    #[serde(with = "list_name")]
    pub list: ListKind,
    pub net: IpNet,
    /// Milliseconds since the UNIX epoch, like [`Ts`].
    pub since: Ts,
    /// `None`: never expires.
    pub until: Option<Ts>,
    pub reason: String,
    pub origin: Origin,
}

impl PersistedEntry {
    pub(super) fn new(net: IpNet, e: &Entry) -> Self {
        PersistedEntry {
            list: e.list,
            net,
            since: e.since,
            until: e.until,
            reason: e.reason.clone(),
            origin: e.origin,
        }
    }
}

/// A source's policy history as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedOffender {
    pub ip: IpAddr,
    /// Times of strikes within the strike window, oldest first.
    pub strikes: Vec<Ts>,
    pub violations: u32,
    pub gray_bans: u32,
    pub black_bans: u32,
    /// Times of reports within the report window, oldest first.
    pub reports: Vec<Ts>,
    pub last_activity: Ts,
}

impl PersistedOffender {
    pub(super) fn new(ip: IpAddr, o: &Offender) -> Self {
        PersistedOffender {
            ip,
            strikes: o.strikes.iter().copied().collect(),
            violations: o.violations,
            gray_bans: o.gray_bans,
            black_bans: o.black_bans,
            reports: o.reports.iter().copied().collect(),
            last_activity: o.last_activity,
        }
    }
}

/// One change to an [`EngineState`], as written to the journal. Each op carries the whole
/// new value of one key (an entry's list and prefix, an offender's address), so applying
/// an op again, or applying ops a snapshot already contains, changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalOp {
    /// An entry was added or changed (upsert).
    Put(PersistedEntry),
    /// An entry was removed or expired (no-op when absent).
    Remove {
        #[serde(with = "list_name")]
        list: ListKind,
        net: IpNet,
    },
    /// An offender's history changed (replace).
    Offender(PersistedOffender),
    /// An offender was forgotten after retention (no-op when absent).
    Forget { ip: IpAddr },
}

impl EngineState {
    /// Applies one journal op. Costs a pass over the state: apply many with
    /// [`EngineState::replay`].
    pub fn apply(&mut self, op: JournalOp) {
        self.replay([op]);
    }

    /// Applies journal ops in order (last op per key wins) and leaves the result sorted
    /// like [`Engine::snapshot`].
    pub fn replay(&mut self, ops: impl IntoIterator<Item = JournalOp>) {
        let mut entries: BTreeMap<(ListKind, IpNet), PersistedEntry> =
            std::mem::take(&mut self.entries)
                .into_iter()
                .map(|e| ((e.list, e.net), e))
                .collect();
        let mut offenders: BTreeMap<IpAddr, PersistedOffender> =
            std::mem::take(&mut self.offenders)
                .into_iter()
                .map(|o| (o.ip, o))
                .collect();
        for op in ops {
            match op {
                JournalOp::Put(e) => {
                    entries.insert((e.list, e.net), e);
                }
                JournalOp::Remove { list, net } => {
                    entries.remove(&(list, net));
                }
                JournalOp::Offender(o) => {
                    offenders.insert(o.ip, o);
                }
                JournalOp::Forget { ip } => {
                    offenders.remove(&ip);
                }
            }
        }
        self.entries = entries.into_values().collect();
        self.offenders = offenders.into_values().collect();
    }
}

/// [`ListKind`] as its name (`"graylist"`), the way operators write it.
mod list_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::model::ListKind;

    pub fn serialize<S: Serializer>(list: &ListKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(list.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ListKind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

impl Engine {
    /// Sources with policy history (violations, strikes, reports).
    pub fn tracked(&self) -> usize {
        self.offenders.len()
    }

    /// About the number of records in [`Engine::snapshot`] (entries and offenders).
    pub fn persisted_len(&self) -> usize {
        self.entries.len() + self.offenders.len()
    }

    /// Everything that must survive a restart: the entries not from the config file and
    /// every offender, sorted (by list and prefix, by address) so equal engines give equal
    /// snapshots.
    pub fn snapshot(&self) -> EngineState {
        let mut entries: Vec<PersistedEntry> = self
            .entries
            .iter()
            .filter(|(_, e)| e.origin != Origin::Config)
            .map(|((_, net), e)| PersistedEntry::new(*net, e))
            .collect();
        entries.sort_by_key(|e| (e.list, e.net));
        let mut offenders: Vec<PersistedOffender> = self
            .offenders
            .iter()
            .map(|(ip, o)| PersistedOffender::new(*ip, o))
            .collect();
        offenders.sort_by_key(|o| o.ip);
        EngineState { entries, offenders }
    }

    /// Restores persisted state into a fresh engine (after the config entries were added),
    /// rebuilding the expiry and retention queues. A restored entry replaces a config entry
    /// of the same list and prefix, as it did before the restart. Entries whose `until` has
    /// already passed are restored too: the next [`Engine::tick`] expires them, so the
    /// daemon logs and unlists them the usual way. Config-origin entries in `state` (only a
    /// hand-edited file has them) are skipped: the config file is their source.
    ///
    /// Returns the Block commands for the restored entries. Restoring is not journaled:
    /// the store already holds all of it.
    pub fn restore(&mut self, state: EngineState) -> Vec<Command> {
        self.flush_touched();
        let mark = self.journal.len();
        let mut cmds = Vec::new();
        for e in state.entries {
            if e.origin == Origin::Config {
                continue;
            }
            let net = e.net.trunc();
            cmds.extend(self.put(
                net,
                Entry {
                    list: e.list,
                    since: e.since,
                    until: e.until,
                    reason: e.reason,
                    origin: e.origin,
                },
            ));
        }
        let retention = self.esc.state_retention;
        for p in state.offenders {
            if let Some(old) = self.offenders.get(&p.ip) {
                self.retention
                    .remove(&(old.last_activity.plus(retention), p.ip));
            }
            self.retention
                .insert((p.last_activity.plus(retention), p.ip));
            self.offenders.insert(
                p.ip,
                Offender {
                    strikes: SmallVec::from_vec(p.strikes),
                    violations: p.violations,
                    gray_bans: p.gray_bans,
                    black_bans: p.black_bans,
                    reports: SmallVec::from_vec(p.reports),
                    last_activity: p.last_activity,
                },
            );
        }
        self.journal.truncate(mark);
        cmds
    }

    /// The changes since the last call, in order, for the write-ahead journal: every
    /// entry put or removed and every offender touched or forgotten. Applied in order to
    /// the [`EngineState`] that was current at the last call ([`EngineState::replay`]),
    /// they give [`Engine::snapshot`].
    pub fn take_journal(&mut self) -> Vec<JournalOp> {
        self.flush_touched();
        self.journal_taken();
        std::mem::take(&mut self.journal)
    }

    /// Turns journaling on (the default) or off. A daemon that persists nothing turns it
    /// off, so the journal does not grow without anyone draining it. Turning it off drops
    /// the pending ops.
    pub fn set_journaling(&mut self, on: bool) {
        self.journaling = on;
        if !on {
            self.journal = Vec::new();
            self.touched = Vec::new();
        }
    }

    pub(super) fn record(&mut self, op: JournalOp) {
        if self.journaling {
            self.journal.push(op);
        }
    }

    /// Journals the offenders [`Engine::offender`] handed out since the last flush, with
    /// their current state: an offender op carries the whole record, so recording it
    /// after the last change of a batch is enough.
    pub(super) fn flush_touched(&mut self) {
        for ip in std::mem::take(&mut self.touched) {
            let op = match self.offenders.get(&ip) {
                Some(o) => JournalOp::Offender(PersistedOffender::new(ip, o)),
                None => JournalOp::Forget { ip },
            };
            if self.journal.last() != Some(&op) {
                self.record(op);
            }
        }
    }
}
