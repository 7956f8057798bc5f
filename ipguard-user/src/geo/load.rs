//! `[geo]` as the daemon uses it: the databases opened, the rules compiled to one prefix
//! set with the protected addresses punched out, the files' modification times to notice
//! a new database, and the lookups explain shows.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use ipnet::IpNet;

use super::{aggregate, subtract, GeoDb, GeoError};
use crate::{
    config::{GeoConfig, GeoCountries},
    model::{ListKind, Mode},
};

/// The compiled `[geo]` section.
#[derive(Debug)]
pub struct GeoState {
    pub country_db: Option<Arc<GeoDb>>,
    pub asn_db: Option<Arc<GeoDb>>,
    /// The prefixes to drop, aggregated, protected addresses excluded.
    pub nets: Vec<IpNet>,
    /// The list they go on.
    pub list: ListKind,
    /// Enforced, or monitored (passed, counted as would drop).
    pub mode: Mode,
    /// Countries and ASNs the databases do not know (probably a typo: `UK` for `GB`).
    pub unmatched: Vec<String>,
    /// Each database file and its modification time when it was read.
    files: Vec<(PathBuf, Option<SystemTime>)>,
}

/// What the databases say about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoInfo {
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub asn_org: Option<String>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl GeoState {
    /// Opens the databases of `config` and compiles its rules; `protected` (loopback, this
    /// host's addresses, the admin networks) is never dropped by geo, whatever the
    /// database says.
    pub fn load(config: &GeoConfig, protected: &[IpNet]) -> Result<GeoState, GeoError> {
        let open = |p: &Option<PathBuf>| -> Result<Option<(Arc<GeoDb>, PathBuf)>, GeoError> {
            p.as_ref()
                .map(|p| Ok((Arc::new(GeoDb::open(p)?), p.clone())))
                .transpose()
        };
        let country = open(&config.database)?;
        let asn = open(&config.asn_database)?;
        let mut nets = Vec::new();
        let mut unmatched = Vec::new();
        if let Some((db, _)) = &country {
            let compiled = match &config.countries {
                GeoCountries::None => None,
                GeoCountries::Block(codes) => Some(db.country_networks(codes)?),
                GeoCountries::Allow(codes) => Some(db.networks_outside(codes)?),
            };
            if let Some(c) = compiled {
                nets.extend(c.networks);
                unmatched.extend(c.unmatched);
            }
        }
        if let Some((db, _)) = &asn {
            if !config.block_asns.is_empty() {
                let c = db.asn_networks(&config.block_asns)?;
                nets.extend(c.networks);
                unmatched.extend(c.unmatched.into_iter().map(|n| format!("AS{n}")));
            }
        }
        let mut nets = subtract(&aggregate(&nets), protected);
        // Explain finds a prefix here by binary search.
        nets.sort_unstable();
        let files = country
            .iter()
            .chain(asn.iter())
            .map(|(_, p)| (p.clone(), modified(p)))
            .collect();
        Ok(GeoState {
            country_db: country.map(|(db, _)| db),
            asn_db: asn.map(|(db, _)| db),
            nets,
            list: config.list,
            mode: config.mode,
            unmatched,
            files,
        })
    }

    /// Whether a database file was replaced or changed since it was read.
    pub fn files_changed(&self) -> bool {
        self.files.iter().any(|(p, t)| modified(p) != *t)
    }

    /// The country and AS of `ip`, as far as the databases know.
    pub fn info(&self, ip: IpAddr) -> GeoInfo {
        let (asn, asn_org) = self
            .asn_db
            .as_ref()
            .and_then(|db| db.asn(ip))
            .map_or((None, None), |(n, org)| (Some(n), org));
        GeoInfo {
            country: self.country_db.as_ref().and_then(|db| db.country(ip)),
            asn,
            asn_org,
        }
    }
}
