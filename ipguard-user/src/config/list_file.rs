//! List files (`[lists] *_files`): one address or network a line.

use std::{os::unix::fs::OpenOptionsExt as _, path::Path};

use ipnet::IpNet;

use super::{ConfigError, MinPrefix};
use crate::net::parse_net;

/// `nets` without repeats, first occurrences in their order. By sorting rather than a hash
/// set: for a list of millions, a sort's sequential passes beat a hash table's cache misses.
pub(super) fn dedup_in_order(nets: Vec<IpNet>) -> Vec<IpNet> {
    let mut sorted: Vec<(IpNet, u32)> = nets.iter().zip(0u32..).map(|(n, i)| (*n, i)).collect();
    sorted.sort_unstable();
    let mut repeat = vec![false; nets.len()];
    let mut any = false;
    for pair in sorted.windows(2) {
        if pair[0].0 == pair[1].0 {
            repeat[pair[1].1 as usize] = true;
            any = true;
        }
    }
    if !any {
        return nets;
    }
    nets.into_iter()
        .zip(repeat)
        .filter_map(|(net, repeat)| (!repeat).then_some(net))
        .collect()
}

/// Largest config file read: 256 MiB (2M prefixes inline take about 60 MiB).
pub const MAX_CONFIG_BYTES: u64 = 256 << 20;
/// Largest list file read: 512 MiB (a full-table feed is a few tens of MiB).
pub const MAX_LIST_FILE_BYTES: u64 = 512 << 20;

/// Reads a regular file of at most `max` bytes as UTF-8. A FIFO, a device or a directory
/// is refused before it is opened for reading (reading one could block forever, or never
/// end), and a file that grows past `max` while read is refused too.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read as _};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory is not read)",
        ));
    }
    if meta.len() > max {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("larger than {max} bytes ({} bytes)", meta.len()),
        ));
    }
    // O_NONBLOCK: had the path been swapped for a FIFO since the check, open does not wait
    // for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(text)
}

/// The entries of a list file: one address or network per line; `#` starts a comment;
/// blank lines are ignored; every entry at least `min` long. Large files (feeds of
/// millions of prefixes) are parsed on two threads.
pub fn parse_list_file(path: &str, text: &str, min: MinPrefix) -> Result<Vec<IpNet>, ConfigError> {
    let parse = |text: &str, first_line: usize| -> Result<Vec<IpNet>, ConfigError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let net = parse_net(entry).map_err(|error| ConfigError::ListFileEntry {
                path: path.to_owned(),
                line: first_line + i,
                error,
            })?;
            if let Some(m) = min.violated_by(&net) {
                return Err(ConfigError::ListFileTooBroad {
                    path: path.to_owned(),
                    line: first_line + i,
                    net,
                    min: m,
                    setting: MinPrefix::setting(&net),
                });
            }
            out.push(net);
        }
        Ok(out)
    };
    const PARALLEL_MIN: usize = 1 << 20;
    let mid = text.len() / 2;
    // A byte search: `\n` is ASCII, so the split after it is a character boundary.
    let split = text.as_bytes()[mid..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| mid + i + 1);
    match split {
        Some(at) if text.len() >= PARALLEL_MIN && at < text.len() => {
            let (a, b) = text.split_at(at);
            let b_first = 1 + a.lines().count();
            let (ra, rb) = std::thread::scope(|s| {
                let hb = s.spawn(|| parse(b, b_first));
                (parse(a, 1), hb.join())
            });
            let mut out = ra?;
            out.extend(rb.unwrap_or_else(|p| std::panic::resume_unwind(p))?);
            Ok(out)
        }
        _ => parse(text, 1),
    }
}
