//! Transactions: a change the kernel refuses is taken back, so that the engine never holds
//! a ban the tables do not (and never forgets one they do).
//!
//! [`Engine::begin`] opens a transaction; every entry and offender the engine changes from
//! then on is saved before its first change. [`Engine::commit`] forgets the saved values;
//! [`Engine::rollback`] puts them back, with their indexes (expiries, retention, counts),
//! and returns the commands that make the compiled tables match again. Journal ops of the
//! transaction that were not handed out yet are dropped; if they were (the store already
//! holds them), the rollback journals the restored values instead: every op carries a
//! whole value, so the store ends where the engine does.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Command, Engine, Entry, JournalOp, Offender, PersistedEntry, PersistedOffender};
use crate::model::{ListKind, Origin};

/// An entry's value before a transaction changed it.
#[derive(Debug)]
pub(super) enum Saved {
    Absent,
    Dynamic(Entry),
    /// A config entry without expiry: its index into `config_meta`.
    Config(u32),
}

/// What the open transaction changed, oldest first.
#[derive(Debug, Default)]
pub(super) struct Undo {
    /// Length of the journal when the transaction began.
    journal_mark: usize,
    /// Whether the journal was handed out since (see [`Engine::take_journal`]).
    journal_taken: bool,
    entries: Vec<(ListKind, IpNet, Saved)>,
    offenders: Vec<(IpAddr, Option<Offender>)>,
}

impl Engine {
    /// Opens a transaction (see the module doc), unless one is open: then the changes
    /// join it, so that a batch (a chunk of rate events) commits or rolls back as one.
    pub fn begin(&mut self) {
        if self.undo.is_none() {
            self.undo = Some(Undo {
                journal_mark: self.journal.len(),
                ..Undo::default()
            });
        }
    }

    /// Keeps the open transaction's changes.
    pub fn commit(&mut self) {
        self.undo = None;
    }

    /// Takes back every change since [`Engine::begin`]; returns the commands that bring the
    /// compiled tables back in line (a Block for every entry restored, an Unblock for every
    /// one that had not existed). Nothing to do without an open transaction.
    pub fn rollback(&mut self) -> Vec<Command> {
        // Promotions of the transaction were never carried out.
        self.promotions.clear();
        let Some(undo) = self.undo.take() else {
            return Vec::new();
        };
        if !undo.journal_taken {
            self.journal.truncate(undo.journal_mark);
        }
        // The journal ops of the restore are the compensation (if the store already has
        // the transaction's ops) or redundant (the same values it holds): either way right.
        self.flush_touched();
        let mut cmds = Vec::with_capacity(undo.entries.len());
        for (list, net, saved) in undo.entries.into_iter().rev() {
            self.forget_entry(list, net);
            match saved {
                Saved::Absent => {
                    self.record(JournalOp::Remove { list, net });
                    cmds.push(Command::Unblock { net, list });
                }
                Saved::Config(meta) => {
                    self.record(JournalOp::Remove { list, net });
                    self.insert_config(list, net, meta);
                    cmds.push(self.block_command(list, net));
                }
                Saved::Dynamic(entry) => {
                    if entry.origin != Origin::Config {
                        self.record(JournalOp::Put(PersistedEntry::new(net, &entry)));
                    }
                    self.insert_dynamic(net, entry);
                    cmds.push(self.block_command(list, net));
                }
            }
        }
        let retention = self.esc.state_retention;
        for (ip, saved) in undo.offenders.into_iter().rev() {
            if let Some(now) = self.offenders.remove(&ip) {
                self.retention
                    .remove(&(now.last_activity.plus(retention), ip));
            }
            match saved {
                Some(o) => {
                    self.retention.insert((o.last_activity.plus(retention), ip));
                    self.record(JournalOp::Offender(PersistedOffender::new(ip, &o)));
                    self.offenders.insert(ip, o);
                }
                None => self.record(JournalOp::Forget { ip }),
            }
        }
        cmds
    }

    /// Saves the value of (list, net) before a change, if a transaction is open.
    pub(super) fn save_entry(&mut self, list: ListKind, net: IpNet) {
        if self.undo.is_none() {
            return;
        }
        let saved = match self.entries.get(&(list, net)) {
            Some(e) => Saved::Dynamic(e.clone()),
            None => match self.config[list.index()].get(&net) {
                Some(meta) => Saved::Config(*meta),
                None => Saved::Absent,
            },
        };
        if let Some(undo) = self.undo.as_mut() {
            undo.entries.push((list, net, saved));
        }
    }

    /// Records the value (list, net) had before a change made already, if a transaction
    /// is open (`saved` is only called then).
    pub(super) fn saved_entry(
        &mut self,
        list: ListKind,
        net: IpNet,
        saved: impl FnOnce() -> Saved,
    ) {
        if let Some(undo) = self.undo.as_mut() {
            undo.entries.push((list, net, saved()));
        }
    }

    /// Like [`Engine::saved_entry`] for an offender.
    pub(super) fn saved_offender(&mut self, ip: IpAddr, saved: impl FnOnce() -> Option<Offender>) {
        if let Some(undo) = self.undo.as_mut() {
            undo.offenders.push((ip, saved()));
        }
    }

    /// Saves an offender's history before a change, if a transaction is open.
    pub(super) fn save_offender(&mut self, ip: IpAddr) {
        if let Some(undo) = self.undo.as_mut() {
            undo.offenders.push((ip, self.offenders.get(&ip).cloned()));
        }
    }

    /// Notes that the journal was handed out during the open transaction.
    pub(super) fn journal_taken(&mut self) {
        if let Some(undo) = self.undo.as_mut() {
            undo.journal_taken = true;
        }
    }

    /// Removes whatever entry (list, net) has, keeping the indexes; no journal.
    fn forget_entry(&mut self, list: ListKind, net: IpNet) {
        let l = list.index();
        let had = if let Some(old) = self.entries.remove(&(list, net)) {
            if let Some(until) = old.until {
                self.expiries.remove(&(until, list, net));
            }
            if super::is_policy_host(net, &old) {
                self.unindex_policy_host(net);
            }
            if list == ListKind::Whitelist {
                self.white_dynamic.remove(&net);
            }
            true
        } else {
            self.config[l].remove(&net).is_some()
        };
        if had {
            *self.lens[l].of(&net) -= 1;
            self.counts[l] -= 1;
        }
    }

    /// Inserts a config entry where there is none, keeping the indexes; no journal.
    fn insert_config(&mut self, list: ListKind, net: IpNet, meta: u32) {
        let l = list.index();
        self.config[l].insert(net, meta);
        *self.lens[l].of(&net) += 1;
        self.counts[l] += 1;
    }

    /// Inserts an entry where there is none, keeping the indexes; no journal.
    fn insert_dynamic(&mut self, net: IpNet, entry: Entry) {
        let l = entry.list.index();
        if let Some(until) = entry.until {
            self.expiries.insert((until, entry.list, net));
        }
        *self.lens[l].of(&net) += 1;
        self.counts[l] += 1;
        if super::is_policy_host(net, &entry) {
            *self.policy_hosts.entry(net).or_default() += 1;
        }
        if entry.list == ListKind::Whitelist {
            self.white_dynamic.insert(net);
        }
        self.entries.insert((entry.list, net), entry);
    }

    fn block_command(&self, list: ListKind, net: IpNet) -> Command {
        match self.entry(list, net) {
            Some(e) => Command::Block {
                net,
                list,
                until: e.until,
                reason: e.reason.clone(),
                origin: e.origin,
            },
            None => Command::Unblock { net, list },
        }
    }
}
