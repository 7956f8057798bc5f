//! Geo-blocking (`[geo]`): MaxMind country and ASN databases compiled to prefixes.
//!
//! Countries and autonomous systems become plain prefixes for the same tables as the
//! lists, so the XDP program never walks a geo tree per packet; the cost is paid once
//! per (re)load of the database. [`GeoDb`] reads a database and compiles sets;
//! [`aggregate`], [`subtract`] and [`complement`] are the exact prefix-set algebra
//! that `allow_countries` and the protected addresses need.

mod db;
mod load;
mod prefix;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use db::{Compiled, GeoDb, MAX_DB_BYTES};
pub use load::{GeoInfo, GeoState};
pub use prefix::{aggregate, complement, subtract, SPECIAL_PURPOSE};

/// Why a geo database could not be used. One line each, starting with the file.
///
/// Causes are part of the message and deliberately not exposed as `source()`, so that
/// `anyhow`'s `{:#}` does not print them twice (as `ConfigError` does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeoError {
    /// The file could not be opened or read.
    #[error("{}: cannot read the geo database: {reason}", path.display())]
    Read {
        path: PathBuf,
        /// The I/O error's message.
        reason: String,
    },
    /// The file is larger than [`MAX_DB_BYTES`]: most likely not the database meant.
    #[error(
        "{}: {size} bytes is larger than a geo database may be ({max} bytes)",
        path.display()
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    /// Not a MaxMind DB file, or a damaged one.
    #[error("{}: not a valid MaxMind DB file: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        /// maxminddb's message.
        reason: String,
    },
    /// The record of a network could not be decoded.
    #[error("{}: damaged record for {network}: {reason}", path.display())]
    Record {
        path: PathBuf,
        network: String,
        reason: String,
    },
    /// No record has the field a set is made of: a country set against an ASN
    /// database, or the reverse.
    #[error(
        "{}: this {database_type} database has no {field} data; is it the right file?",
        path.display()
    )]
    NoData {
        path: PathBuf,
        database_type: String,
        field: &'static str,
    },
}

/// Whether `code` has the shape of an ISO 3166-1 alpha-2 code (`DE`, `US`): two ASCII
/// uppercase letters. Shape only: whether the database knows it shows at compile time
/// ([`Compiled::unmatched`]).
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}
