//! Blocklist feeds (`[[feed]]`): fetching, parsing, hygiene and held updates.
//!
//! A refresh goes [`fetch`] → [`parse`] → [`clean`] → [`judge`], and what `judge` lets
//! through is written as one [`Diff`] (`added` first, then `removed`) and saved with
//! [`save_last_good`]. Everything but `fetch` and the store is pure: the caller passes the
//! time, the protected networks and the last good copy, and owns the held update.
//!
//! Real feeds go wrong: FireHOL level1 lists 10/8 and 192.168/16 on purpose, feeds have
//! listed 38.0.0.0/8 (GitHub, Zoom) and `0.0.0.0/0`, sources answer HTML error pages or
//! nothing at all. Hence the hygiene (per-line rejects, protected overlaps, minimum prefix
//! lengths, bogons) and the update check that holds a suspicious change for an operator.

mod fetch;
mod format;
mod hygiene;
mod runtime;
mod store;
mod update;

#[cfg(test)]
mod tests;

pub use fetch::{fetch, Conditional, Fetched, Limits, Source};
pub use format::{
    parse, render_netset, FeedFormat, Parsed, Rejected, MAX_LINE_BYTES, MAX_REJECTED_KEPT,
};
pub use hygiene::{clean, Cleaned, DropReason, Hygiene, BOGONS_V4, BOGONS_V6};
pub use runtime::{FeedSets, FeedStatus, Feeds, Held, Outcome};
pub use store::{load_last_good, save_last_good, store_path, validate_name, Meta};
pub use update::{diff, judge, Diff, Judgement};

/// Why a feed could not be fetched, read, parsed or stored. Each displays as one line that
/// names the source (URL, file or format) and the problem; the caller adds the feed's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// A feed name that is not safe as a file name.
    #[error("invalid feed name {name:?}: use 1 to 64 letters, digits, `-` or `_`")]
    BadName { name: String },
    /// A URL whose scheme is not `http` or `https`, or that is not a URL at all.
    #[error("feed URL {url}: only http:// and https:// URLs are supported")]
    UnsupportedUrl { url: String },
    /// The server answered something else than 2xx (or 304 to a conditional request).
    #[error("feed {url} answered HTTP {status}{}", with_space(*reason))]
    Status {
        url: String,
        status: u16,
        /// The standard reason phrase of `status`, if it has one.
        reason: Option<&'static str>,
    },
    /// The server did not answer in time.
    #[error("feed {url} timed out after {}", humantime::format_duration(*after))]
    Timeout {
        url: String,
        after: std::time::Duration,
    },
    /// Any other failure of the HTTP exchange (DNS, connection, TLS, protocol).
    #[error("feed {url} could not be fetched: {reason}")]
    Http { url: String, reason: String },
    /// The body (or file) is larger than the limit; it was not read past it.
    #[error("feed {source_name} is larger than {max} bytes")]
    TooLarge { source_name: String, max: u64 },
    /// The body (or file) is not UTF-8.
    #[error("feed {source_name} is not UTF-8 text")]
    NotText { source_name: String },
    /// A feed file cannot be read.
    #[error("cannot read feed file {path}: {reason}")]
    Read { path: String, reason: String },
    /// The body is no list of the configured format at all (HTML, binary).
    #[error("the feed body is not a {format} list: {why}")]
    NotAList {
        format: FeedFormat,
        why: &'static str,
    },
    /// More than half of the entries are invalid: the source serves something else.
    #[error(
        "{invalid} of {total} entries are not valid {format} lines (first, line {first_line}: \
         {first_reason}); the source probably serves something else"
    )]
    MostlyInvalid {
        format: FeedFormat,
        invalid: usize,
        total: usize,
        first_line: usize,
        first_reason: String,
    },
    /// The last good copy cannot be written.
    #[error("cannot save the feed's last good copy {path}: {reason}")]
    Save { path: String, reason: String },
    /// The last good copy cannot be read.
    #[error("cannot read the feed's last good copy {path}: {reason}")]
    Load { path: String, reason: String },
    /// The last good copy is not what [`save_last_good`] writes.
    #[error("the feed's last good copy {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        path: String,
        line: usize,
        reason: String,
    },
}

/// `" {text}"`, or nothing.
fn with_space(text: Option<&str>) -> String {
    text.map(|t| format!(" {t}")).unwrap_or_default()
}
