//! IPv6: an anchor per /32 listing the longer prefix lengths under it, a key per longer
//! prefix, and a trie for the rare prefixes shorter than /32; a bit per /24 region that
//! holds anchors, set before the region's first anchor is written and cleared after its
//! last one is removed.

use std::net::Ipv6Addr;

use ipguard_common::{
    v6_region_bit, ListCode, ListEntry, V6Anchor, V6LongKey, ANCHOR_OVERFLOW, ANCHOR_OWN,
    TABLE_FLAG_V6_SHORT, V6_ANCHOR_BITS, V6_ANCHOR_LENS, V6_REGION_BITS, V6_REGION_WORDS,
};
use ipnet::Ipv6Net;
use smallvec::SmallVec;

use super::{v6_span, AnchorPlan, Layout};
use crate::dataplane::map_store::{HashMap, MapStore, SyncReport, TableError};

impl<S: MapStore> Layout<S> {
    pub(super) fn v6_anchor_plan(&self, top: u32) -> AnchorPlan {
        let net = Ipv6Net::new_assert(Ipv6Addr::from(u128::from(top) << 96), V6_ANCHOR_BITS);
        let entries: Vec<_> = self
            .v6
            .range(v6_span(net))
            .filter(|(n, _)| n.prefix_len() >= V6_ANCHOR_BITS)
            .map(|(n, e)| (*n, e.code()))
            .collect();
        plan_of(&entries)
    }

    /// Writes one anchor going from `old` to `new` (see the module's ordering rule).
    pub(super) fn v6_write_anchor(
        &mut self,
        top: u32,
        old: &AnchorPlan,
        new: &AnchorPlan,
    ) -> Result<(), TableError> {
        let old_longs: HashMap<_, _> = old.longs.iter().copied().collect();
        let old_lpm: HashMap<_, _> = old.lpm.iter().copied().collect();
        for &(key, code) in &new.longs {
            let old = old_longs.get(&key);
            if old != Some(&code) {
                self.store.long_put(key, code)?;
                self.n_longs += usize::from(old.is_none());
            }
        }
        for &(net, code) in &new.lpm {
            if old_lpm.get(&net) != Some(&code) {
                self.store.lpm_put(net, code)?;
            }
        }
        if new.anchor != old.anchor {
            match &new.anchor {
                Some(a) => {
                    self.v6_mark([top]);
                    self.store.anchor_put(top, a)?;
                    self.n_anchors += usize::from(old.anchor.is_none());
                }
                None => {
                    self.store.anchor_del(top)?;
                    self.n_anchors -= 1;
                    self.v6_unmark(top);
                }
            }
        }
        let new_longs: HashMap<_, _> = new.longs.iter().copied().collect();
        let new_lpm: HashMap<_, _> = new.lpm.iter().copied().collect();
        for key in old_longs.keys().filter(|k| !new_longs.contains_key(k)) {
            self.store.long_del(*key)?;
            self.n_longs -= 1;
        }
        for net in old_lpm.keys().filter(|n| !new_lpm.contains_key(n)) {
            self.store.lpm_del(*net)?;
        }
        Ok(())
    }

    pub(super) fn v6_set(
        &mut self,
        net: Ipv6Net,
        entry: Option<ListEntry>,
    ) -> Result<(), TableError> {
        let old_entry = self.v6.get(&net).copied();
        if old_entry == entry {
            return Ok(());
        }
        if net.prefix_len() < V6_ANCHOR_BITS {
            match entry {
                Some(e) => {
                    self.v6.insert(net, e);
                    self.store.lpm_put(net, e.code())?;
                    if old_entry.is_none() {
                        self.v6_short += 1;
                    }
                    self.v6_short_flag()
                }
                None => {
                    self.v6.remove(&net);
                    self.v6_short -= 1;
                    self.v6_short_flag()?;
                    self.store.lpm_del(net)
                }
            }
        } else {
            let top = anchor_of(net);
            let old = self.v6_anchor_plan(top);
            match entry {
                Some(e) => self.v6.insert(net, e),
                None => self.v6.remove(&net),
            };
            let new = self.v6_anchor_plan(top);
            self.v6_write_anchor(top, &old, &new)
        }
    }

    /// Marks the regions of the anchors `tops` in the region bitmap. Before the anchors are
    /// written: the program does not read an anchor in an unmarked region.
    pub(super) fn v6_mark(&mut self, tops: impl IntoIterator<Item = u32>) {
        for top in tops {
            let (w, bit) = v6_region_bit(top);
            let word = self.store.region_word(w);
            if word & bit == 0 {
                self.store.set_region_word(w, word | bit);
            }
        }
    }

    /// Unmarks the region of `top`, whose anchor was just removed, if the entries hold no
    /// other anchor in it.
    pub(super) fn v6_unmark(&mut self, top: u32) {
        let region =
            Ipv6Net::new_assert(Ipv6Addr::from(u128::from(top) << 96), V6_REGION_BITS).trunc();
        if self
            .v6
            .range(v6_span(region))
            .any(|(n, _)| n.prefix_len() >= V6_ANCHOR_BITS)
        {
            return;
        }
        let (w, bit) = v6_region_bit(top);
        let word = self.store.region_word(w);
        if word & bit != 0 {
            self.store.set_region_word(w, word & !bit);
        }
    }

    /// Sets [`TABLE_FLAG_V6_SHORT`] as the short-prefix count says.
    pub(super) fn v6_short_flag(&mut self) -> Result<(), TableError> {
        let flags = self.store.flags();
        let want = if self.v6_short > 0 {
            flags | TABLE_FLAG_V6_SHORT
        } else {
            flags & !TABLE_FLAG_V6_SHORT
        };
        if want != flags {
            self.store.set_flags(want)?;
        }
        Ok(())
    }

    /// What a whole-table sync of the mirror writes to the IPv6 maps.
    pub(super) fn plan_v6(&self) -> Result<SyncV6, TableError> {
        let cur_anchors = self.store.anchors()?;
        let cur_longs = self.store.longs()?;
        let cur_lpm = self.store.lpms()?;
        let mut anchors = HashMap::default();
        let mut longs = HashMap::default();
        let mut lpm = HashMap::default();
        let mut items = self.v6.iter().peekable();
        let mut group = Vec::new();
        while let Some((n, e)) = items.next() {
            if n.prefix_len() < V6_ANCHOR_BITS {
                lpm.insert(*n, e.code());
                continue;
            }
            let top = anchor_of(*n);
            group.clear();
            group.push((*n, e.code()));
            while let Some((m, f)) =
                items.next_if(|(m, _)| m.prefix_len() >= V6_ANCHOR_BITS && anchor_of(**m) == top)
            {
                group.push((*m, f.code()));
            }
            let plan = plan_of(&group);
            longs.extend(plan.longs);
            lpm.extend(plan.lpm);
            if let Some(a) = plan.anchor {
                anchors.insert(top, a);
            }
        }
        let peak_anchors = anchors.len()
            + cur_anchors
                .keys()
                .filter(|t| !anchors.contains_key(t))
                .count();
        let peak_longs = longs.len() + cur_longs.keys().filter(|k| !longs.contains_key(k)).count();
        Ok(SyncV6 {
            cur_anchors,
            cur_longs,
            cur_lpm,
            anchors,
            longs,
            lpm,
            peak_anchors,
            peak_longs,
        })
    }

    pub(super) fn sync_v6(
        &mut self,
        plan: SyncV6,
        report: &mut SyncReport,
    ) -> Result<(), TableError> {
        let SyncV6 {
            cur_anchors,
            cur_longs,
            cur_lpm,
            anchors,
            longs,
            lpm,
            ..
        } = plan;
        // Every desired anchor's region first, whatever fails later: an anchor the maps
        // already hold (left by a failed removal) may be one the desired set brings back,
        // and it is not written again below.
        self.v6_mark(anchors.keys().copied());
        self.v6_short = self.v6.keys().filter(|n| n.prefix_len() < 32).count();
        let mut puts = Vec::new();
        for (&key, &code) in &longs {
            let old = cur_longs.get(&key);
            if old != Some(&code) {
                puts.push((key, code));
                report.count(old.copied(), Some(code));
            }
        }
        self.store.long_put_many(&puts)?;
        for (&net, &code) in &lpm {
            let old = cur_lpm.get(&net);
            if old != Some(&code) {
                self.store.lpm_put(net, code)?;
                report.count(old.copied(), Some(code));
            }
        }
        self.v6_short_flag()?;
        let mut puts = Vec::new();
        for (&top, a) in &anchors {
            let old = cur_anchors.get(&top);
            if old != Some(a) {
                puts.push((top, *a));
                report.count(old, Some(a));
            }
        }
        self.store.anchor_put_many(&puts)?;
        for top in cur_anchors.keys().filter(|t| !anchors.contains_key(t)) {
            self.store.anchor_del(*top)?;
            report.removed += 1;
        }
        for key in cur_longs.keys().filter(|k| !longs.contains_key(k)) {
            self.store.long_del(*key)?;
            report.removed += 1;
        }
        for net in cur_lpm.keys().filter(|n| !lpm.contains_key(n)) {
            self.store.lpm_del(*net)?;
            report.removed += 1;
        }
        // The bitmap exactly the anchors' regions (a bit left by an earlier run included).
        let mut want: HashMap<u32, u64> = HashMap::default();
        for &top in anchors.keys() {
            let (w, bit) = v6_region_bit(top);
            *want.entry(w).or_default() |= bit;
        }
        for w in 0..V6_REGION_WORDS {
            let bits = want.get(&w).copied().unwrap_or(0);
            if self.store.region_word(w) != bits {
                self.store.set_region_word(w, bits);
            }
        }
        self.n_anchors = anchors.len();
        self.n_longs = longs.len();
        Ok(())
    }
}

/// A whole-table sync of the IPv6 maps, planned.
pub(super) struct SyncV6 {
    cur_anchors: HashMap<u32, V6Anchor>,
    cur_longs: HashMap<V6LongKey, ListCode>,
    cur_lpm: HashMap<Ipv6Net, ListCode>,
    anchors: HashMap<u32, V6Anchor>,
    longs: HashMap<V6LongKey, ListCode>,
    lpm: HashMap<Ipv6Net, ListCode>,
    pub(super) peak_anchors: usize,
    pub(super) peak_longs: usize,
}

/// The first 32 bits of an IPv6 network.
pub(super) fn anchor_of(net: Ipv6Net) -> u32 {
    (u128::from(net.network()) >> 96) as u32
}

pub(super) fn long_key(net: Ipv6Net) -> V6LongKey {
    let a = u128::from(net.network());
    V6LongKey::new((a >> 64) as u64, a as u64, u32::from(net.prefix_len()))
}
/// The anchor of one /32 from the prefixes of /32 and longer under it.
pub(super) fn plan_of(entries: &[(Ipv6Net, ListCode)]) -> AnchorPlan {
    let mut plan = AnchorPlan::default();
    let mut own = None;
    let mut lens: SmallVec<[u8; 8]> = SmallVec::new();
    for &(net, code) in entries {
        if net.prefix_len() == V6_ANCHOR_BITS {
            own = Some(code);
        } else {
            plan.longs.push((long_key(net), code));
            lens.push(net.prefix_len());
        }
    }
    if own.is_none() && lens.is_empty() {
        return plan;
    }
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.dedup();
    let mut anchor = V6Anchor::default();
    if let Some(code) = own {
        anchor.flags |= ANCHOR_OWN;
        anchor.set_own_code(code);
    }
    if lens.len() > V6_ANCHOR_LENS {
        anchor.flags |= ANCHOR_OVERFLOW;
        plan.lpm = entries.to_vec();
    } else {
        anchor.n_lens = lens.len() as u8;
        anchor.lens[..lens.len()].copy_from_slice(&lens);
    }
    plan.anchor = Some(anchor);
    plan
}
