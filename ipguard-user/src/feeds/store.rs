//! A feed's last good copy on disk: what the daemon lists at start when the source is
//! unreachable. Plain text an operator can read (and use as a list file): a `#` header
//! line with the metadata as JSON, then one prefix a line.

use std::{
    collections::BTreeSet,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::FeedError;
use crate::{
    config::{read_bounded_file, MAX_LIST_FILE_BYTES},
    model::Ts,
    net::parse_net,
};

/// What the copy was fetched with and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The validators to send on the next fetch.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The last successful fetch (a 304 included).
    pub fetched: Ts,
    /// The last time the entries changed.
    pub changed: Ts,
}

/// The header line's JSON: the entry count tells a file cut at a line boundary.
#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    meta: Meta,
    entries: usize,
}

/// The header's start; a version in it lets a later format tell an old file.
const MAGIC: &str = "# ipguard feed v1 ";
const SUFFIX: &str = ".feed";

/// Refuses a feed name unfit as a file name: 1 to 64 ASCII letters, digits, `-`, `_`.
pub fn validate_name(name: &str) -> Result<(), FeedError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FeedError::BadName {
            name: crate::model::excerpt(name),
        })
    }
}

/// The file of feed `name`'s last good copy in `dir`.
pub fn store_path(dir: &Path, name: &str) -> Result<PathBuf, FeedError> {
    validate_name(name)?;
    Ok(dir.join(format!("{name}{SUFFIX}")))
}

/// Replaces feed `name`'s last good copy atomically: a crash leaves the old copy or the new
/// one, never a part (temporary file in the same directory, fsync, rename, fsync of the
/// directory).
pub fn save_last_good(
    dir: &Path,
    name: &str,
    nets: &BTreeSet<IpNet>,
    meta: &Meta,
) -> Result<(), FeedError> {
    let path = store_path(dir, name)?;
    let tmp = dir.join(format!(".{name}{SUFFIX}.tmp"));
    let failed = |e: io::Error| FeedError::Save {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let header = serde_json::to_string(&Header {
        meta: meta.clone(),
        entries: nets.len(),
    })
    .map_err(|e| failed(e.into()))?;
    let write = || -> io::Result<()> {
        // A leftover from a crash is ours (the name is derived from the feed's).
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut out = io::BufWriter::new(file);
        writeln!(out, "{MAGIC}{header}")?;
        for net in nets {
            writeln!(out, "{net}")?;
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&tmp);
        failed(e)
    })
}

/// Feed `name`'s last good copy, `None` if there is none yet.
pub fn load_last_good(
    dir: &Path,
    name: &str,
) -> Result<Option<(BTreeSet<IpNet>, Meta)>, FeedError> {
    let path = store_path(dir, name)?;
    let shown = || path.display().to_string();
    let text = match read_bounded_file(&path, MAX_LIST_FILE_BYTES) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FeedError::Load {
                path: shown(),
                reason: e.to_string(),
            })
        }
    };
    let corrupt = |line: usize, reason: String| FeedError::Corrupt {
        path: shown(),
        line,
        reason,
    };
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let json = header
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt(1, format!("the header does not start with {MAGIC:?}")))?;
    let header: Header = serde_json::from_str(json).map_err(|e| corrupt(1, e.to_string()))?;
    let mut nets = Vec::with_capacity(header.entries.min(1 << 24));
    for (i, line) in lines.enumerate() {
        nets.push(parse_net(line).map_err(|e| corrupt(i + 2, e.to_string()))?);
    }
    if nets.len() != header.entries {
        return Err(corrupt(
            nets.len() + 1,
            format!(
                "it ends after {} entries, the header says {}",
                nets.len(),
                header.entries
            ),
        ));
    }
    Ok(Some((nets.into_iter().collect(), header.meta)))
}
