//! Port- and protocol-scoped memberships (`[[rules]]` and list entries with `proto` /
//! `ports`): the compiler's extra dimension.
//!
//! The scopes in use split every packet into one *atom*: `(protocol, port)` for each port a
//! scope names, and `(protocol, 0)` for the protocol's other ports (and packets without a
//! readable port). A scoped membership counts, for the atoms its scope holds, exactly as an
//! unscoped one of the same layer; so the decision of an address for an atom is the
//! ordinary precedence over its unscoped memberships plus the scoped ones that hold the
//! atom ([`Acc`] per atom along the chain of prefixes).
//!
//! A prefix whose decision for some atom differs from its own gets a *scope group*: the
//! kernel's scope map holds, per group, the verdict of `(proto, 0)` where it differs from
//! the prefix's own and of `(proto, port)` where it differs from `(proto, 0)`'s; the XDP
//! program looks the port up, then the protocol, then keeps the prefix's own verdict
//! (`ipguard_common::lookup::scoped`). Groups are interned by those cells, so prefixes
//! that the same scoped entries cover share one, and counted by the entries that name
//! them: a group's cells are written before the first entry names it and removed after
//! the last one stops ([`Groups::settle`]). A prefix without a group costs the data path
//! nothing more.

use std::{collections::HashMap, rc::Rc};

use ipguard_common::{ListCode, ListEntry, ScopeKey, MAX_SCOPE_GROUP};

use super::precedence::{Acc, Members};
use crate::model::{Compiled, Layer, Scope, Scopes, TableOp};

/// A scope interned in [`ScopeTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(pub(super) u16);

/// Most distinct scopes (each `[[rules]]` entry or scoped list entry names one; equal
/// ones share it).
pub const MAX_SCOPES: usize = 1024;

/// One atom: a protocol number and a port (0: the protocol's other ports).
pub(super) type Atom = (u8, u16);

/// The scopes in use and the atoms they split packets into.
#[derive(Debug, Default, Clone)]
pub(super) struct ScopeTable {
    scopes: Vec<Scope>,
    /// Sorted: by protocol, port 0 first.
    atoms: Vec<Atom>,
    /// Per scope, whether it holds each atom (indexed like `atoms`).
    holds: Vec<Vec<bool>>,
}

impl ScopeTable {
    /// The id of `scope`, interned if new; `None` past [`MAX_SCOPES`]. Returns whether the
    /// atoms changed (then every scoped decision must be computed again).
    pub(super) fn intern(&mut self, scope: &Scope) -> Option<(ScopeId, bool)> {
        if let Some(i) = self.scopes.iter().position(|s| s == scope) {
            return Some((ScopeId(i as u16), false));
        }
        if self.scopes.len() >= MAX_SCOPES {
            return None;
        }
        self.scopes.push(scope.clone());
        let before = self.atoms.clone();
        self.recompute();
        Some((
            ScopeId((self.scopes.len() - 1) as u16),
            self.atoms != before,
        ))
    }

    fn recompute(&mut self) {
        let mut atoms = Vec::new();
        for s in &self.scopes {
            for p in s.protos() {
                atoms.push((p.number(), 0));
                atoms.extend(s.ports.iter().map(|&port| (p.number(), port)));
            }
        }
        atoms.sort_unstable();
        atoms.dedup();
        self.holds = self
            .scopes
            .iter()
            .map(|s| atoms.iter().map(|&(p, port)| s.matches(p, port)).collect())
            .collect();
        self.atoms = atoms;
    }

    pub(super) fn atoms(&self) -> &[Atom] {
        &self.atoms
    }

    pub(super) fn get(&self, id: ScopeId) -> Option<&Scope> {
        self.scopes.get(usize::from(id.0))
    }

    /// The atom a packet of `proto` to `port` falls in, by index.
    pub(super) fn atom_of(&self, proto: u8, port: u16) -> Option<usize> {
        self.atoms
            .binary_search(&(proto, port))
            .or_else(|_| self.atoms.binary_search(&(proto, 0)))
            .ok()
    }

    /// The memberships of `m` that count for atom `a`: its own plus its scoped ones that
    /// hold the atom; `None` if it has no such scoped one (then `m` itself counts).
    fn members_for(&self, m: &Members, a: usize) -> Option<Members> {
        let mut extra = m
            .scoped
            .iter()
            .filter(|(id, _)| {
                self.holds
                    .get(usize::from(id.0))
                    .is_some_and(|h| h.get(a).copied().unwrap_or(false))
            })
            .peekable();
        extra.peek()?;
        let mut out = Members {
            scoped: Vec::new(),
            ..m.clone()
        };
        for (_, layer) in extra {
            out.set(*layer, true);
        }
        Some(out)
    }

    /// The accumulations per atom after `m` (a prefix longer than all before), given the
    /// parent's: its base `parent` and per-atom `atoms` (`None`: all equal to the base).
    pub(super) fn step(
        &self,
        parent: Acc,
        atoms: Option<&Rc<[Acc]>>,
        m: &Members,
    ) -> Option<Rc<[Acc]>> {
        if atoms.is_none() && m.scoped.is_empty() {
            return None;
        }
        let per_atom = (0..self.atoms.len())
            .map(|a| {
                let p = atoms.map_or(parent, |v| v[a]);
                match self.members_for(m, a) {
                    Some(mm) => p.with(&mm),
                    None => p.with(m),
                }
            })
            .collect();
        Some(per_atom)
    }

    /// The cells of the group of a prefix whose decision is `own` and whose per-atom
    /// accumulations are `atoms` (empty: no group needed).
    pub(super) fn cells(&self, own: ListCode, atoms: &[Acc], monitor_all: bool) -> Vec<Cell> {
        let mut cells = Vec::new();
        let mut other = own;
        for (a, &(proto, port)) in self.atoms.iter().enumerate() {
            let code = atoms[a].decision(monitor_all).list;
            if port == 0 {
                other = code;
                if code != own {
                    cells.push((proto, 0, code));
                }
            } else if code != other {
                cells.push((proto, port, code));
            }
        }
        cells
    }

    /// The accumulation for atom `a` of the chain `m`s (shortest first).
    pub(super) fn acc_for<'a>(&self, chain: impl Iterator<Item = &'a Members>, a: usize) -> Acc {
        chain.fold(Acc::default(), |acc, m| match self.members_for(m, a) {
            Some(mm) => acc.with(&mm),
            None => acc.with(m),
        })
    }

    /// The memberships of `m` that count for atom `a`.
    pub(super) fn members_at(&self, m: &Members, a: usize) -> Members {
        self.members_for(m, a).unwrap_or_else(|| m.clone())
    }
}

/// One verdict of a group: protocol, port (0: other ports), `LIST_*` code.
pub(super) type Cell = (u8, u16, ListCode);

#[derive(Debug, Clone)]
struct Group {
    cells: Box<[Cell]>,
    /// Written entries that name the group.
    refs: usize,
    /// Its cells are in the kernel's scope map.
    written: bool,
}

/// The scope groups: interned by their cells, counted by the entries that name them.
#[derive(Debug, Default, Clone)]
pub(super) struct Groups {
    by_cells: HashMap<Box<[Cell]>, u32>,
    /// By id - 1.
    slots: Vec<Option<Group>>,
    free: Vec<u32>,
    /// Groups wanted while every id was in use (the prefix kept its own verdict).
    pub(super) overflows: u64,
}

impl Groups {
    /// The id of the group with `cells` (0 for none), allocated if new; 0 (and counted in
    /// `overflows`) if all [`MAX_SCOPE_GROUP`] ids are in use.
    pub(super) fn intern(&mut self, cells: Vec<Cell>) -> u32 {
        if cells.is_empty() {
            return 0;
        }
        if let Some(&id) = self.by_cells.get(&cells[..]) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None if (self.slots.len() as u32) < MAX_SCOPE_GROUP => {
                self.slots.push(None);
                self.slots.len() as u32
            }
            None => {
                if self.overflows == 0 {
                    tracing::warn!(
                        groups = MAX_SCOPE_GROUP,
                        "every scope group id is in use: prefixes that need another keep their own verdict for every port (ipguard_scope_overflows_total)"
                    );
                }
                self.overflows += 1;
                return 0;
            }
        };
        let cells: Box<[Cell]> = cells.into();
        self.by_cells.insert(cells.clone(), id);
        self.slots[id as usize - 1] = Some(Group {
            cells,
            refs: 0,
            written: false,
        });
        id
    }

    /// Groups named by at least one entry.
    pub(super) fn len(&self) -> usize {
        self.slots.iter().flatten().filter(|g| g.refs > 0).count()
    }

    fn slot(&mut self, id: u32) -> Option<&mut Group> {
        self.slots.get_mut((id as usize).checked_sub(1)?)?.as_mut()
    }

    /// Counts the entry changes `writes` and `deletes` against `written` (the entries before
    /// them), and returns the scope map's writes (groups named for the first time) and
    /// deletes (groups no entry names any more), which free their ids.
    pub(super) fn settle(
        &mut self,
        written: &Compiled,
        writes: &[(ipnet::IpNet, ListEntry)],
        deletes: &[ipnet::IpNet],
    ) -> (Vec<TableOp>, Vec<TableOp>) {
        if self.by_cells.is_empty() && self.slots.iter().all(Option::is_none) {
            return (Vec::new(), Vec::new());
        }
        let mut adjust = |id: u32, up: bool| {
            if let Some(g) = self.slot(id) {
                g.refs = if up {
                    g.refs + 1
                } else {
                    g.refs.saturating_sub(1)
                };
            }
        };
        for (net, entry) in writes {
            if let Some(old) = written.get(net) {
                adjust(old.scope, false);
            }
            adjust(entry.scope, true);
        }
        for net in deletes {
            if let Some(old) = written.get(net) {
                adjust(old.scope, false);
            }
        }
        let (mut puts, mut dels) = (Vec::new(), Vec::new());
        for i in 0..self.slots.len() {
            let id = i as u32 + 1;
            let Some(g) = self.slots[i].as_mut() else {
                continue;
            };
            if g.refs > 0 && !g.written {
                g.written = true;
                puts.extend(
                    g.cells.iter().map(|&(proto, port, code)| {
                        TableOp::ScopeWrite(key(id, proto, port), code)
                    }),
                );
            } else if g.refs == 0 {
                if g.written {
                    dels.extend(
                        g.cells
                            .iter()
                            .map(|&(proto, port, _)| TableOp::ScopeDelete(key(id, proto, port))),
                    );
                }
                if let Some(g) = self.slots[i].take() {
                    self.by_cells.remove(&g.cells);
                    self.free.push(id);
                }
            }
        }
        (puts, dels)
    }

    /// What the scope map must hold: every group named by an entry.
    pub(super) fn scopes(&self) -> Scopes {
        let mut out = Scopes::new();
        for (i, g) in self.slots.iter().enumerate() {
            if let Some(g) = g.as_ref().filter(|g| g.refs > 0) {
                for &(proto, port, code) in g.cells.iter() {
                    out.insert(key(i as u32 + 1, proto, port), code);
                }
            }
        }
        out
    }
}

fn key(group: u32, proto: u8, port: u16) -> ScopeKey {
    ScopeKey {
        group: group as u16,
        port,
        proto,
        _pad: [0; 3],
    }
}

/// A scoped membership of one prefix: the scope and the layer it counts in.
pub(super) type ScopedMember = (ScopeId, Layer);
