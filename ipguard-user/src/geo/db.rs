//! A MaxMind DB file read into memory: lookups for explain, and compilation of country
//! and ASN sets to prefixes for the list tables.
//!
//! Written against maxminddb 0.32 (pinned): `within()` takes `WithinOptions` and yields
//! `LookupResult`s (network and record decoded separately). Its default options skip
//! the IPv6 aliases of the IPv4 subtree (`::ffff:0:0/96`, `2002::/16`, ... pointing at
//! the node of `::/96`) and report networks under `::/96` as IPv4, which is what we
//! want: every IPv4 network once, as IPv4.

use std::{
    collections::BTreeSet,
    fs::File,
    io::Read,
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use maxminddb::{Reader, WithinOptions};
use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::{
    prefix::{aggregate, complement, subtract, SPECIAL_PURPOSE},
    GeoError,
};

/// Largest database file accepted. A full GeoLite2-City is ~70 MiB, a country or ASN
/// database well under 20 MiB; the bound stops a wrong path (a disk image, a log)
/// from being read into memory whole.
pub const MAX_DB_BYTES: u64 = 512 * 1024 * 1024;

/// The prefixes a set compiled to, and the requested keys no record carries (a code
/// that is valid but absent from the database, such as `UK` for `GB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled<K> {
    /// Aggregated, sorted, IPv4 before IPv6.
    pub networks: Vec<IpNet>,
    /// Requested keys that matched no network.
    pub unmatched: BTreeSet<K>,
}

/// An opened MaxMind DB (GeoLite2/GeoIP2 Country or City, DB-IP lite, GeoLite2-ASN).
pub struct GeoDb {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .finish_non_exhaustive()
    }
}

/// `iso_code` of a country map; the names and ids beside it are never decoded.
#[derive(Deserialize, Default)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// The part of a Country/City record ipguard uses.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    country: IsoCode<'a>,
    #[serde(borrow, default)]
    registered_country: IsoCode<'a>,
}

impl CountryRecord<'_> {
    /// Where the address is used, else where its block is registered: GeoLite2 leaves
    /// `country` out for some anycast and satellite ranges.
    fn code(&self) -> Option<&str> {
        self.country.iso_code.or(self.registered_country.iso_code)
    }
}

/// A GeoLite2-ASN record.
#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

impl GeoDb {
    /// Reads and validates the database at `path` (metadata and tree layout; records
    /// are decoded when compiled).
    pub fn open(path: impl AsRef<Path>) -> Result<GeoDb, GeoError> {
        let path = path.as_ref().to_path_buf();
        let read_err = |e: std::io::Error| GeoError::Read {
            path: path.clone(),
            reason: e.to_string(),
        };
        let file = File::open(&path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size > MAX_DB_BYTES {
            return Err(GeoError::TooLarge {
                path,
                size,
                max: MAX_DB_BYTES,
            });
        }
        // Bounded again while reading: the file may grow between stat and read.
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MAX_DB_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(read_err)?;
        if buf.len() as u64 > MAX_DB_BYTES {
            return Err(GeoError::TooLarge {
                path,
                size: buf.len() as u64,
                max: MAX_DB_BYTES,
            });
        }
        let reader = Reader::from_source(buf).map_err(|e| GeoError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(GeoDb { path, reader })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata's `database_type`: "GeoLite2-Country", "DBIP-Country-Lite",
    /// "GeoLite2-ASN", ...
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the database was built, in seconds since the epoch (for status output).
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// The ISO country code of `ip` (`country`, else `registered_country`). `None` when
    /// the database does not know the address or has no country data; a damaged record
    /// reads as unknown too, since compiling the same record already failed loudly.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        self.decode_at::<CountryRecord>(ip)?
            .code()
            .map(str::to_owned)
    }

    /// The autonomous system number of `ip` and its organisation, if the record has them.
    pub fn asn(&self, ip: IpAddr) -> Option<(u32, Option<String>)> {
        let rec = self.decode_at::<AsnRecord>(ip)?;
        let number = rec.autonomous_system_number?;
        Some((
            number,
            rec.autonomous_system_organization.map(str::to_owned),
        ))
    }

    /// The networks of the countries in `codes`, aggregated.
    pub fn country_networks(&self, codes: &BTreeSet<String>) -> Result<Compiled<String>, GeoError> {
        let mut unmatched = codes.clone();
        let networks = self.networks_where("country", |r: &CountryRecord| {
            let code = r.code()?;
            let hit = codes.contains(code);
            if hit {
                unmatched.remove(code);
            }
            Some(hit)
        })?;
        Ok(Compiled {
            networks,
            unmatched,
        })
    }

    /// The networks announced by the autonomous systems in `asns`, aggregated.
    pub fn asn_networks(&self, asns: &BTreeSet<u32>) -> Result<Compiled<u32>, GeoError> {
        let mut unmatched = asns.clone();
        let networks = self.networks_where("autonomous system", |r: &AsnRecord| {
            let asn = r.autonomous_system_number?;
            let hit = asns.contains(&asn);
            if hit {
                unmatched.remove(&asn);
            }
            Some(hit)
        })?;
        Ok(Compiled {
            networks,
            unmatched,
        })
    }

    /// For `allow_countries`: every address outside the allowed countries, including
    /// addresses the database places nowhere, minus [`SPECIAL_PURPOSE`]. The caller
    /// still punches its protected addresses out with [`subtract`].
    pub fn networks_outside(
        &self,
        allowed: &BTreeSet<String>,
    ) -> Result<Compiled<String>, GeoError> {
        let inside = self.country_networks(allowed)?;
        Ok(Compiled {
            networks: subtract(&complement(&inside.networks), SPECIAL_PURPOSE),
            unmatched: inside.unmatched,
        })
    }

    /// Decodes the record of `ip` as `T`; `None` when absent or undecodable.
    fn decode_at<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> Option<T> {
        // An IPv4-mapped address is the IPv4 address: look it up in the IPv4 subtree,
        // which also works in an IPv4-only database.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.reader.lookup(ip).ok()?.decode::<T>().ok()?
    }

    /// One walk over the whole tree: the networks whose record `keep` accepts
    /// (`Some(true)`), aggregated. `keep` returns `None` for a record without the
    /// `field` at all; if no record has it, the database is of the wrong kind (a
    /// country set against an ASN database) and that is an error, not an empty set.
    fn networks_where<'a, T: Deserialize<'a>>(
        &'a self,
        field: &'static str,
        mut keep: impl FnMut(&T) -> Option<bool>,
    ) -> Result<Vec<IpNet>, GeoError> {
        // Records are shared between networks (a country has one record, or a few);
        // deciding once per record keeps decoding off the per-network path.
        let mut decided: FxHashMap<usize, Option<bool>> = FxHashMap::default();
        let mut field_seen = false;
        let mut nets = Vec::new();
        let within = self
            .reader
            .networks(WithinOptions::default())
            .map_err(|e| self.invalid(e))?;
        for item in within {
            let item = item.map_err(|e| self.invalid(e))?;
            let Some(offset) = item.offset() else {
                continue;
            };
            let network = item.network().map_err(|e| self.invalid(e))?;
            let verdict = match decided.get(&offset) {
                Some(v) => *v,
                None => {
                    let v = match item.decode::<T>() {
                        Ok(Some(rec)) => keep(&rec),
                        Ok(None) => None,
                        Err(e) => {
                            return Err(GeoError::Record {
                                path: self.path.clone(),
                                network: network.to_string(),
                                reason: e.to_string(),
                            });
                        }
                    };
                    decided.insert(offset, v);
                    v
                }
            };
            field_seen |= verdict.is_some();
            if verdict == Some(true) {
                let net =
                    IpNet::new(network.ip(), network.prefix()).map_err(|e| GeoError::Record {
                        path: self.path.clone(),
                        network: network.to_string(),
                        reason: e.to_string(),
                    })?;
                canonical(net, &mut nets);
            }
        }
        if !field_seen {
            return Err(GeoError::NoData {
                path: self.path.clone(),
                database_type: self.database_type().to_owned(),
                field,
            });
        }
        Ok(aggregate(&nets))
    }

    fn invalid(&self, e: maxminddb::MaxMindDbError) -> GeoError {
        GeoError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

/// Appends `net` as the dataplane should see it. maxminddb already reports the IPv4
/// subtree as IPv4 and skips its aliases; this covers databases that store IPv4 data
/// rather than alias it: `::/96` and below is IPv4 (MaxMind's convention, also when
/// there is no IPv4 subtree to detect), a prefix containing `::/96` covers all of IPv4
/// too, and `::ffff:0:0/96` (IPv4-mapped) never appears as a source on the wire.
fn canonical(net: IpNet, out: &mut Vec<IpNet>) {
    const V4_IN_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 96);
    const MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
    let IpNet::V6(v6) = net else {
        out.push(net);
        return;
    };
    if MAPPED.contains(&v6) {
        return;
    }
    if V4_IN_V6.contains(&v6) {
        let low = u128::from(v6.network()) as u32;
        out.push(IpNet::V4(Ipv4Net::new_assert(
            low.into(),
            v6.prefix_len() - 96,
        )));
        return;
    }
    if v6.contains(&V4_IN_V6) {
        out.push(IpNet::V4(Ipv4Net::new_assert(0u32.into(), 0)));
    }
    out.push(net);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        canonical(s.parse().unwrap(), &mut out);
        out
    }

    #[test]
    fn canonical_keeps_ordinary_networks() {
        assert_eq!(canon("192.0.2.0/24"), vec!["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(
            canon("2001:db8::/32"),
            vec!["2001:db8::/32".parse().unwrap()]
        );
    }

    #[test]
    fn canonical_turns_the_ipv4_subtree_into_ipv4() {
        assert_eq!(
            canon("::c000:200/120"),
            vec!["192.0.2.0/24".parse().unwrap()]
        );
        assert_eq!(canon("::/96"), vec!["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(
            canon("::/64"),
            vec!["0.0.0.0/0".parse().unwrap(), "::/64".parse().unwrap()]
        );
    }

    #[test]
    fn canonical_drops_ipv4_mapped() {
        assert_eq!(canon("::ffff:c000:200/120"), vec![]);
        assert_eq!(canon("::ffff:0:0/96"), vec![]);
    }
}
