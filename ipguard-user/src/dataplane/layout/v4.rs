//! IPv4: a slot per /24, and the addresses of the /24s that hold longer prefixes.

use std::net::Ipv4Addr;

use ipguard_common::{ListCode, ListEntry, Tbl24Slot, LIST_NONE, SLOT_HOSTS};
use ipnet::Ipv4Net;

use super::{code_slot, v4_span, Hosts, Layout};
use crate::dataplane::map_store::{HashMap, MapStore, SyncReport, TableError};

impl<S: MapStore> Layout<S> {
    /// The codes of the /24 slots under `net` (at most /24), from the entries of /24 and
    /// less: the longest covering one, then every one inside, shortest first.
    pub(super) fn v4_codes(&self, net: Ipv4Net) -> Vec<Tbl24Slot> {
        let len = net.prefix_len();
        let base = (0..len)
            .rev()
            .find_map(|l| {
                let outer = Ipv4Net::new(net.network(), l).ok()?.trunc();
                self.v4.get(&outer)
            })
            .map_or(LIST_NONE, |e| e.code());
        let first = u32::from(net.network()) >> 8;
        let mut codes = vec![code_slot(base); 1 << (24 - len)];
        let mut inner: Vec<(Ipv4Net, ListCode)> = self
            .v4
            .range(v4_span(net))
            .filter(|(n, _)| (len..=24).contains(&n.prefix_len()))
            .map(|(n, e)| (*n, e.code()))
            .collect();
        inner.sort_by_key(|(n, _)| n.prefix_len());
        for (n, code) in inner {
            let lo = (u32::from(n.network()) >> 8) - first;
            let hi = lo + (1 << (24 - n.prefix_len()));
            codes[lo as usize..hi as usize].fill(code_slot(code));
        }
        codes
    }

    /// Rewrites the /24 slots under `net` (at most /24), keeping their host flags.
    pub(super) fn v4_write_slots(&mut self, net: Ipv4Net) {
        let first = u32::from(net.network()) >> 8;
        for (i, code) in self.v4_codes(net).into_iter().enumerate() {
            let s24 = first + i as u32;
            let old = self.store.slot(s24);
            let new = (old & SLOT_HOSTS) | code;
            if new != old {
                self.store.set_slot(s24, new);
            }
        }
    }

    /// The host verdicts of the /24 `s24`, from the entries longer than /24 inside it.
    pub(super) fn v4_hosts(&self, s24: u32) -> Hosts {
        let net = Ipv4Net::new_assert(Ipv4Addr::from(s24 << 8), 24);
        hosts_of(
            self.v4
                .range(v4_span(net))
                .filter(|(n, _)| n.prefix_len() > 24)
                .map(|(n, e)| (*n, e.code())),
        )
    }

    /// Writes the /24 `s24`'s hosts going from `old` to `new`: changed hosts, then the
    /// slot's flag, then the removals.
    pub(super) fn v4_write_hosts(
        &mut self,
        s24: u32,
        old: &Hosts,
        new: &Hosts,
    ) -> Result<(), TableError> {
        let base = s24 << 8;
        for h in 0..256 {
            if let Some(code) = new[h] {
                if old[h] != Some(code) {
                    self.store.host_put(base | h as u32, code)?;
                    self.n_hosts += usize::from(old[h].is_none());
                }
            }
        }
        let slot = self.store.slot(s24);
        let flagged = new.iter().any(Option::is_some);
        let want = if flagged {
            slot | SLOT_HOSTS
        } else {
            slot & !SLOT_HOSTS
        };
        if want != slot {
            self.store.set_slot(s24, want);
        }
        for h in 0..256 {
            if old[h].is_some() && new[h].is_none() {
                self.store.host_del(base | h as u32)?;
                self.n_hosts -= 1;
            }
        }
        Ok(())
    }

    pub(super) fn v4_set(
        &mut self,
        net: Ipv4Net,
        entry: Option<ListEntry>,
    ) -> Result<(), TableError> {
        if self.v4.get(&net) == entry.as_ref() {
            return Ok(());
        }
        let s24 = u32::from(net.network()) >> 8;
        let old = (net.prefix_len() > 24).then(|| self.v4_hosts(s24));
        match entry {
            Some(e) => self.v4.insert(net, e),
            None => self.v4.remove(&net),
        };
        match old {
            None => {
                self.v4_write_slots(net);
                Ok(())
            }
            Some(old) => {
                let new = self.v4_hosts(s24);
                self.v4_write_hosts(s24, &old, &new)
            }
        }
    }

    /// What a whole-table sync of the mirror writes to the IPv4 maps.
    pub(super) fn plan_v4(&self) -> Result<SyncV4, TableError> {
        let current = self.store.hosts()?;
        let mut want: HashMap<u32, ListCode> =
            HashMap::with_capacity_and_hasher(current.len(), Default::default());
        let all = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);
        let mut slots = self.v4_codes(all);
        let mut longs = self
            .v4
            .iter()
            .filter(|(n, _)| n.prefix_len() > 24)
            .peekable();
        while let Some((n, e)) = longs.next() {
            let s24 = u32::from(n.network()) >> 8;
            let mut group = vec![(*n, e.code())];
            while let Some((m, f)) = longs.next_if(|(m, _)| u32::from(m.network()) >> 8 == s24) {
                group.push((*m, f.code()));
            }
            slots[s24 as usize] |= SLOT_HOSTS;
            for (h, code) in hosts_of(group.into_iter()).iter().enumerate() {
                if let Some(code) = code {
                    want.insert(s24 << 8 | h as u32, *code);
                }
            }
        }
        // New keys are written before stale ones go: both are in the map for a moment.
        let peak = want.len() + current.keys().filter(|a| !want.contains_key(a)).count();
        Ok(SyncV4 {
            current,
            want,
            slots,
            peak,
        })
    }

    pub(super) fn sync_v4(
        &mut self,
        plan: SyncV4,
        report: &mut SyncReport,
    ) -> Result<(), TableError> {
        let SyncV4 {
            current,
            want,
            slots,
            ..
        } = plan;
        let mut puts = Vec::new();
        for (&addr, &code) in &want {
            let old = current.get(&addr);
            if old != Some(&code) {
                puts.push((addr, code));
                report.count(old.copied(), Some(code));
            }
        }
        self.store.host_put_many(&puts)?;
        self.store.set_slots(&slots, report);
        for addr in current.keys().filter(|a| !want.contains_key(a)) {
            self.store.host_del(*addr)?;
            report.removed += 1;
        }
        self.n_hosts = want.len();
        Ok(())
    }
}

/// A whole-table sync of the IPv4 maps, planned.
pub(super) struct SyncV4 {
    current: HashMap<u32, ListCode>,
    want: HashMap<u32, ListCode>,
    slots: Vec<Tbl24Slot>,
    /// Host keys in the map at the fullest moment of the sync.
    pub(super) peak: usize,
}

/// Expands prefixes longer than /24 within one /24 to its addresses, longest prefix last.
pub(super) fn hosts_of(entries: impl Iterator<Item = (Ipv4Net, ListCode)>) -> Hosts {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_by_key(|(n, _)| n.prefix_len());
    let mut hosts = [None; 256];
    for (n, code) in entries {
        let lo = (u32::from(n.network()) & 0xff) as usize;
        let hi = lo + (1usize << (32 - n.prefix_len()));
        hosts[lo..hi].fill(Some(code));
    }
    hosts
}
