//! The precedence over one chain of nested prefixes (see the module documentation of
//! `policy::compile`): the memberships of one prefix ([`Members`]), what a chain of them
//! accumulates ([`Acc`]) and the decision that results.

use ipguard_common::{
    monitored, ListCode, ListEntry, LIST_BLACKLIST, LIST_GRAYLIST, LIST_MONITOR_BLACKLIST,
    LIST_MONITOR_GRAYLIST, LIST_NONE, LIST_RULE_ALLOW, LIST_RULE_DENY, LIST_WHITELIST,
};

use crate::model::Layer;

/// The entry of an address that nothing decides; never written (see [`Acc::decision`]).
pub(super) const NO_DECISION: ListEntry = ListEntry::new(LIST_NONE, 0);

/// The memberships of one prefix.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Members {
    pub(super) white: bool,
    pub(super) gray: bool,
    pub(super) black: bool,
    /// `(index, deny)`, sorted by [`rule_rank`] so the first element is the one that counts.
    pub(super) rules: Vec<(u32, bool)>,
    pub(super) mon_gray: bool,
    pub(super) mon_black: bool,
    /// Port- or protocol-scoped memberships, sorted (see `compile::scope`).
    pub(super) scoped: Vec<super::scope::ScopedMember>,
}

/// Sort key of a rule: lower wins (lowest index; on one index, deny before allow).
pub(super) fn rule_rank(&(index, deny): &(u32, bool)) -> (u32, bool) {
    (index, !deny)
}

impl Members {
    pub(super) fn is_empty(&self) -> bool {
        !self.white
            && !self.gray
            && !self.black
            && !self.mon_gray
            && !self.mon_black
            && self.rules.is_empty()
            && self.scoped.is_empty()
    }

    /// Adds (`on`) or removes a scoped membership; returns whether anything changed.
    pub(super) fn set_scoped(&mut self, member: super::scope::ScopedMember, on: bool) -> bool {
        match (self.scoped.binary_search(&member), on) {
            (Err(at), true) => {
                self.scoped.insert(at, member);
                true
            }
            (Ok(at), false) => {
                self.scoped.remove(at);
                true
            }
            _ => false,
        }
    }

    pub(super) fn has(&self, layer: Layer) -> bool {
        match layer {
            Layer::White => self.white,
            Layer::Gray => self.gray,
            Layer::Black => self.black,
            Layer::MonitorGray => self.mon_gray,
            Layer::MonitorBlack => self.mon_black,
            Layer::Rule { index, deny } => self
                .rules
                .binary_search_by_key(&rule_rank(&(index, deny)), rule_rank)
                .is_ok(),
        }
    }

    /// Adds (`on`) or removes a membership; returns whether anything changed.
    pub(super) fn set(&mut self, layer: Layer, on: bool) -> bool {
        let flag = match layer {
            Layer::White => &mut self.white,
            Layer::Gray => &mut self.gray,
            Layer::Black => &mut self.black,
            Layer::MonitorGray => &mut self.mon_gray,
            Layer::MonitorBlack => &mut self.mon_black,
            Layer::Rule { index, deny } => {
                let rule = (index, deny);
                return match (
                    self.rules
                        .binary_search_by_key(&rule_rank(&rule), rule_rank),
                    on,
                ) {
                    (Err(at), true) => {
                        self.rules.insert(at, rule);
                        true
                    }
                    (Ok(at), false) => {
                        self.rules.remove(at);
                        true
                    }
                    _ => false,
                };
            }
        };
        let changed = *flag != on;
        *flag = on;
        changed
    }

    pub(super) fn ban(&self) -> Option<ListCode> {
        if self.black {
            Some(LIST_BLACKLIST)
        } else if self.gray {
            Some(LIST_GRAYLIST)
        } else {
            None
        }
    }

    /// The monitored ban of this prefix, as its monitored code.
    pub(super) fn monitored_ban(&self) -> Option<ListCode> {
        if self.mon_black {
            Some(LIST_MONITOR_BLACKLIST)
        } else if self.mon_gray {
            Some(LIST_MONITOR_GRAYLIST)
        } else {
            None
        }
    }
}

/// The memberships accumulated along a chain of nested prefixes, shortest first: all that
/// the decision of the innermost one depends on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Acc {
    pub(super) white: bool,
    /// The ban of the longest banned prefix so far.
    pub(super) ban: Option<ListCode>,
    /// The winning rule so far (see [`rule_rank`]).
    pub(super) rule: Option<(u32, bool)>,
    /// The monitored ban of the longest prefix with one so far.
    pub(super) mon: Option<ListCode>,
}

/// Which step of the precedence (see the module documentation) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decides {
    White,
    /// An enforced ban, by its code.
    Ban(ListCode),
    /// A deny rule, by its index.
    Deny(u32),
    /// A monitored ban, by its monitored code.
    Monitored(ListCode),
    /// An allow rule, by its index.
    Allow(u32),
    Nothing,
}

impl Acc {
    /// Adds a prefix longer than every one accumulated so far.
    pub(super) fn with(self, m: &Members) -> Acc {
        let rule = match (self.rule, m.rules.first()) {
            (Some(a), Some(b)) if rule_rank(b) < rule_rank(&a) => Some(*b),
            (None, Some(b)) => Some(*b),
            (a, _) => a,
        };
        Acc {
            white: self.white || m.white,
            ban: m.ban().or(self.ban),
            rule,
            mon: m.monitored_ban().or(self.mon),
        }
    }

    pub(super) fn decides(self) -> Decides {
        match (self.white, self.ban, self.rule, self.mon) {
            (true, ..) => Decides::White,
            (false, Some(code), ..) => Decides::Ban(code),
            (false, None, Some((index, true)), _) => Decides::Deny(index),
            (false, None, _, Some(code)) => Decides::Monitored(code),
            (false, None, Some((index, false)), None) => Decides::Allow(index),
            (false, None, None, None) => Decides::Nothing,
        }
    }

    /// The entry to write; with `monitor_all` (the global monitor mode), dropping
    /// decisions as their monitored codes.
    pub(super) fn decision(self, monitor_all: bool) -> ListEntry {
        let drop = |code| if monitor_all { monitored(code) } else { code };
        let (list, rule_id) = match self.decides() {
            Decides::White => (LIST_WHITELIST, 0),
            Decides::Ban(code) => (drop(code), 0),
            Decides::Deny(index) => (drop(LIST_RULE_DENY), index.saturating_add(1)),
            Decides::Monitored(code) => (code, 0),
            Decides::Allow(index) => (LIST_RULE_ALLOW, index.saturating_add(1)),
            Decides::Nothing => return NO_DECISION,
        };
        ListEntry::new(list, rule_id)
    }
}
