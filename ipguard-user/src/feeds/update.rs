//! Whether a feed's new copy replaces the last good one, and the change that does it.

use std::{cmp::Ordering, collections::BTreeSet};

use ipnet::IpNet;

/// The change from one copy of a feed to the next.
///
/// The caller writes `added` before `removed`: an address covered by an old prefix and a
/// new one (`10.0.0.0/24` replaced by `10.0.0.0/23`) then stays listed throughout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// In the new copy only, sorted.
    pub added: Vec<IpNet>,
    /// In the last good copy only, sorted.
    pub removed: Vec<IpNet>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Entries changed.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len()
    }
}

/// What to do with a feed's new copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Same entries as the last good copy.
    Unchanged,
    /// Write the diff; the new copy becomes the last good one.
    Apply(Diff),
    /// Keep the last good copy in force until an operator accepts `diff`.
    Hold { reason: String, diff: Diff },
}

/// `new` against `last_good`, in one merge of the two sorted sets.
pub fn diff(last_good: &BTreeSet<IpNet>, new: &BTreeSet<IpNet>) -> Diff {
    let mut out = Diff::default();
    let mut old = last_good.iter().peekable();
    let mut new = new.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (Some(o), Some(n)) => match o.cmp(n) {
                Ordering::Less => {
                    out.removed.push(**o);
                    old.next();
                }
                Ordering::Greater => {
                    out.added.push(**n);
                    new.next();
                }
                Ordering::Equal => {
                    old.next();
                    new.next();
                }
            },
            (Some(_), None) => {
                out.removed.extend(old.copied());
                break;
            }
            (None, Some(_)) => {
                out.added.extend(new.copied());
                break;
            }
            (None, None) => break,
        }
    }
    out
}

/// Judges a feed's new (cleaned) copy against the last good one. The first load (no last
/// good copy) always applies. Held: an empty copy after a non-empty one (a source that
/// broke, not a world without attackers), and a change of more than `max_change` of the
/// last good copy's size ((added + removed) / size; a copy swapped for one as large counts
/// 2.0, so `f64::INFINITY` turns the check off). A NaN `max_change` holds every change.
pub fn judge(last_good: &BTreeSet<IpNet>, new: &BTreeSet<IpNet>, max_change: f64) -> Judgement {
    let diff = diff(last_good, new);
    if diff.is_empty() {
        return Judgement::Unchanged;
    }
    if last_good.is_empty() {
        return Judgement::Apply(diff);
    }
    if new.is_empty() {
        return Judgement::Hold {
            reason: format!(
                "the feed is empty; the last good copy has {} entries",
                last_good.len()
            ),
            diff,
        };
    }
    // Sizes far below 2^52: exact as f64.
    let change = diff.len() as f64 / last_good.len() as f64;
    // Not `change > max_change`: a NaN max_change must hold.
    let within = change <= max_change;
    if !within {
        return Judgement::Hold {
            reason: format!(
                "the update changes {:.1}% of the last good copy ({} added, {} removed, of {}), \
                 more than max_change {:.1}%",
                change * 100.0,
                diff.added.len(),
                diff.removed.len(),
                last_good.len(),
                max_change * 100.0
            ),
            diff,
        };
    }
    Judgement::Apply(diff)
}
