//! Writes to the LPM tries go through [`ListTable`], so list logic is tested against
//! [`MemoryTable`] without a kernel, and against [`KernelTable`] in the privileged tests.

use std::collections::BTreeMap;

use aya::maps::{lpm_trie::LpmTrie, MapData, MapError};
use ipguard_common::{
    user::{v4_key, v4_net, v6_key, v6_net},
    ListEntry,
};
use ipnet::IpNet;

use crate::lists::Compiled;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The kernel refused a map operation (full trie, no memory, ...).
    #[error("cannot {op} {net} in the {family} trie: {source}")]
    Map {
        op: &'static str,
        net: IpNet,
        family: &'static str,
        #[source]
        source: Box<MapError>,
    },
    /// Reading the trie back failed.
    #[error("cannot read the {family} trie: {source}")]
    Read {
        family: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

/// The kernel's view of the lists: prefix → entry. Implementations write through at once.
pub trait ListTable {
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError>;
    /// Removing an absent prefix is not an error.
    fn remove(&mut self, net: IpNet) -> Result<(), TableError>;
    fn entries(&self) -> Result<Compiled, TableError>;
}

/// What [`sync`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
}

/// Makes `table` hold exactly `desired`. New and changed entries are written before stale
/// ones are removed, so a source that is listed before and after is never unlisted
/// in between.
pub fn sync(table: &mut dyn ListTable, desired: &Compiled) -> Result<SyncReport, TableError> {
    let current = table.entries()?;
    let mut report = SyncReport::default();
    for (net, entry) in desired {
        match current.get(net) {
            Some(old) if old == entry => {}
            Some(_) => {
                table.insert(*net, *entry)?;
                report.updated += 1;
            }
            None => {
                table.insert(*net, *entry)?;
                report.inserted += 1;
            }
        }
    }
    for net in current.keys().filter(|n| !desired.contains_key(n)) {
        table.remove(*net)?;
        report.removed += 1;
    }
    Ok(report)
}

/// In-memory table for tests and dry runs.
#[derive(Debug, Default, Clone)]
pub struct MemoryTable(pub Compiled);

impl ListTable for MemoryTable {
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError> {
        self.0.insert(net.trunc(), entry);
        Ok(())
    }

    fn remove(&mut self, net: IpNet) -> Result<(), TableError> {
        self.0.remove(&net.trunc());
        Ok(())
    }

    fn entries(&self) -> Result<Compiled, TableError> {
        Ok(self.0.clone())
    }
}

/// The XDP program's two tries.
pub struct KernelTable {
    pub(crate) v4: LpmTrie<MapData, [u8; 4], ListEntry>,
    pub(crate) v6: LpmTrie<MapData, [u8; 16], ListEntry>,
}

impl ListTable for KernelTable {
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), TableError> {
        let res = match net {
            IpNet::V4(n) => self.v4.insert(&v4_key(n), entry, 0),
            IpNet::V6(n) => self.v6.insert(&v6_key(n), entry, 0),
        };
        res.map_err(|source| map_err("insert", net, source))
    }

    fn remove(&mut self, net: IpNet) -> Result<(), TableError> {
        let res = match net {
            IpNet::V4(n) => self.v4.remove(&v4_key(n)),
            IpNet::V6(n) => self.v6.remove(&v6_key(n)),
        };
        match res {
            Err(MapError::KeyNotFound) => Ok(()),
            res => res.map_err(|source| map_err("remove", net, source)),
        }
    }

    fn entries(&self) -> Result<Compiled, TableError> {
        let mut out = BTreeMap::new();
        for item in self.v4.iter() {
            let (key, entry) = item.map_err(|source| TableError::Read {
                family: "IPv4",
                source: Box::new(source),
            })?;
            if let Some(net) = v4_net(&key) {
                out.insert(IpNet::V4(net), entry);
            }
        }
        for item in self.v6.iter() {
            let (key, entry) = item.map_err(|source| TableError::Read {
                family: "IPv6",
                source: Box::new(source),
            })?;
            if let Some(net) = v6_net(&key) {
                out.insert(IpNet::V6(net), entry);
            }
        }
        Ok(out)
    }
}

fn map_err(op: &'static str, net: IpNet, source: MapError) -> TableError {
    let family = if matches!(net, IpNet::V4(_)) {
        "IPv4"
    } else {
        "IPv6"
    };
    TableError::Map {
        op,
        net,
        family,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use ipguard_common::{LIST_BLACKLIST, LIST_GRAYLIST};

    use super::*;

    fn e(list: u32, rule_id: u32) -> ListEntry {
        ListEntry { list, rule_id }
    }

    #[test]
    fn sync_inserts_updates_and_removes() {
        let mut t = MemoryTable::default();
        let a: IpNet = "192.0.2.0/24".parse().unwrap();
        let b: IpNet = "2001:db8::/32".parse().unwrap();
        let c: IpNet = "198.51.100.7/32".parse().unwrap();
        t.insert(a, e(LIST_GRAYLIST, 1)).unwrap();
        t.insert(c, e(LIST_BLACKLIST, 1)).unwrap();
        let desired: Compiled = [(a, e(LIST_BLACKLIST, 1)), (b, e(LIST_BLACKLIST, 2))].into();
        let r = sync(&mut t, &desired).unwrap();
        assert_eq!(
            r,
            SyncReport {
                inserted: 1,
                updated: 1,
                removed: 1
            }
        );
        assert_eq!(t.0, desired);
        assert_eq!(sync(&mut t, &desired).unwrap(), SyncReport::default());
    }
}
