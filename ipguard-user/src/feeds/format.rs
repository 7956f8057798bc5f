//! The feed formats: one entry a line, garbage lines counted rather than fatal.

use std::{collections::BTreeSet, fmt::Write as _};

use ipnet::IpNet;
use serde::Deserialize;

use super::FeedError;
use crate::{model::named_enum, net::parse_net};

named_enum! {
    /// How a feed writes its entries.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum FeedFormat {
        /// One address or CIDR a line, `#` comments (FireHOL `*.netset`, most plain lists).
        Netset = "netset",
        /// Spamhaus DROP text: `1.10.16.0/20 ; SBL256894`, `;` comments.
        SpamhausDrop = "spamhaus-drop",
        /// Spamhaus DROP JSON lines: `{"cidr":"1.10.16.0/20","sblid":...,"rir":...}` a line
        /// and one `{"type":"metadata",...}` line.
        SpamhausJson = "spamhaus-json",
    }
}

/// Longest entry taken (comments aside): real ones are under 100 bytes; anything longer is
/// not one, and the bound keeps a hostile line from costing more than its size.
pub const MAX_LINE_BYTES: usize = 1024;
/// Rejected lines kept as samples (all are counted): enough to show an operator the pattern.
pub const MAX_REJECTED_KEPT: usize = 100;

/// What a feed body holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The entries, without repeats.
    pub nets: BTreeSet<IpNet>,
    /// The first [`MAX_REJECTED_KEPT`] rejected lines.
    pub rejected: Vec<Rejected>,
    /// All rejected lines.
    pub rejected_total: usize,
}

/// A line that is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based.
    pub line: usize,
    /// The line, cut to [`crate::model::MAX_ECHO`] bytes.
    pub text: String,
    pub reason: String,
}

/// The entries of a feed `text` in `format`. A bad line is rejected and counted; a body that
/// is no list at all (HTML, binary, mostly invalid lines) is an error, so that an error page
/// served with 200 never replaces a good copy. Host bits set is a rejected line, as in the
/// config: truncating would list more than the feed meant. Linear in the size of `text`.
pub fn parse(format: FeedFormat, text: &str) -> Result<Parsed, FeedError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.as_bytes().contains(&0) {
        return Err(FeedError::NotAList {
            format,
            why: "it contains NUL bytes (binary data)",
        });
    }
    if text.trim_start().starts_with('<') {
        return Err(FeedError::NotAList {
            format,
            why: "it looks like HTML or XML (an error or login page?)",
        });
    }
    let mut nets = Vec::new();
    let mut parsed = Parsed::default();
    let mut entries = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some(outcome) = entry(format, raw) else {
            continue;
        };
        entries += 1;
        match outcome {
            Ok(net) => nets.push(net),
            Err(reason) => {
                parsed.rejected_total += 1;
                if parsed.rejected.len() < MAX_REJECTED_KEPT {
                    parsed.rejected.push(Rejected {
                        line,
                        text: crate::model::excerpt(raw.trim()),
                        reason,
                    });
                }
            }
        }
    }
    if parsed.rejected_total * 2 > entries {
        let (first_line, first_reason) = parsed
            .rejected
            .first()
            .map(|r| (r.line, r.reason.clone()))
            .unwrap_or_default();
        return Err(FeedError::MostlyInvalid {
            format,
            invalid: parsed.rejected_total,
            total: entries,
            first_line,
            first_reason,
        });
    }
    // Collecting a Vec first: `BTreeSet::from_iter` sorts once and builds in bulk.
    parsed.nets = nets.into_iter().collect();
    Ok(parsed)
}

/// One line: `None` for a blank or comment line (or the JSON metadata), else the entry or
/// why it is not one.
fn entry(format: FeedFormat, raw: &str) -> Option<Result<IpNet, String>> {
    let too_long = || Some(Err(format!("longer than {MAX_LINE_BYTES} bytes")));
    let text = match format {
        FeedFormat::Netset => raw.split('#').next().unwrap_or_default().trim(),
        FeedFormat::SpamhausDrop => raw.split(';').next().unwrap_or_default().trim(),
        FeedFormat::SpamhausJson => {
            let raw = raw.trim();
            if raw.is_empty() {
                return None;
            }
            if raw.len() > MAX_LINE_BYTES {
                return too_long();
            }
            return match serde_json::from_str::<JsonLine>(raw) {
                Ok(JsonLine {
                    cidr: Some(cidr), ..
                }) => Some(parse_net(&cidr).map_err(|e| e.to_string())),
                Ok(JsonLine { kind: Some(_), .. }) => None,
                Ok(JsonLine { .. }) => Some(Err(
                    "a JSON object without \"cidr\" (nor \"type\")".to_owned()
                )),
                Err(e) => Some(Err(format!("not a JSON object: {e}"))),
            };
        }
    };
    if text.is_empty() {
        return None;
    }
    if text.len() > MAX_LINE_BYTES {
        return too_long();
    }
    Some(parse_net(text).map_err(|e| e.to_string()))
}

/// A line of Spamhaus's JSON: an entry, or (with `type`) the metadata line.
#[derive(Deserialize)]
struct JsonLine {
    cidr: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `nets` as a netset, one a line: what [`parse`] reads back with [`FeedFormat::Netset`].
pub fn render_netset<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> String {
    let mut out = String::new();
    for net in nets {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{net}");
    }
    out
}
