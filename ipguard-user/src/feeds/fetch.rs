//! Getting a feed's body: over HTTP(S) with a conditional request, or from a file. Both
//! bounded in size and time, so a broken or hostile source costs at most the limits.

use std::{
    io,
    path::PathBuf,
    time::{Duration, Instant},
};

use ureq::http::{StatusCode, Uri};

use super::FeedError;
use crate::config::read_bounded_file;

/// Where a feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` URL.
    Url(String),
    /// A local file (another tool keeps it up to date).
    Path(PathBuf),
}

/// The validators of the last body fetched, sent back so that an unchanged feed costs a
/// 304 instead of the whole list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditional {
    /// The last `ETag`, sent as `If-None-Match`.
    pub etag: Option<String>,
    /// The last `Last-Modified`, sent as `If-Modified-Since`.
    pub last_modified: Option<String>,
}

/// How much a fetch may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body read; a larger one is an error, not a truncated list.
    pub max_bytes: u64,
    /// The whole exchange, from connecting to the body's last byte.
    pub timeout: Duration,
}

impl Default for Limits {
    /// 64 MiB (the largest public feeds are a few MiB) and a minute.
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What a fetch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The server says the body is the one of the [`Conditional`] sent.
    NotModified,
    /// A body, with the validators to send next time.
    Body {
        text: String,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// Redirects followed: CDNs and release pages use one or two.
const MAX_REDIRECTS: u32 = 5;
/// Longest validator kept: real ones are tens of bytes; a longer one is not sent back.
const MAX_VALIDATOR_BYTES: usize = 512;

/// Fetches a feed's body. Blocking: run it off the async runtime. Proxies from the
/// environment are ignored (as in the CLI): a daemon's feeds must not depend on the
/// environment it was started from. An `https` source follows no redirect to plain `http`.
pub fn fetch(source: &Source, cond: &Conditional, limits: &Limits) -> Result<Fetched, FeedError> {
    match source {
        Source::Url(url) => fetch_url(url, cond, limits),
        Source::Path(path) => {
            let text = read_bounded_file(path, limits.max_bytes).map_err(|e| {
                let shown = path.display().to_string();
                if e.kind() == io::ErrorKind::InvalidData {
                    FeedError::NotText { source_name: shown }
                } else {
                    FeedError::Read {
                        path: shown,
                        reason: e.to_string(),
                    }
                }
            })?;
            Ok(Fetched::Body {
                text,
                etag: None,
                last_modified: None,
            })
        }
    }
}

fn fetch_url(url: &str, cond: &Conditional, limits: &Limits) -> Result<Fetched, FeedError> {
    let shown = redact(url);
    let mut uri = http_uri(url).ok_or_else(|| FeedError::UnsupportedUrl { url: shown.clone() })?;
    let https = is_https(&uri);
    // Redirects are followed here, not by ureq, to refuse other schemes and downgrades
    // with an error that says so.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .https_only(https)
        .max_redirects(0)
        .user_agent(concat!("ipguard/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let transport = |e: ureq::Error| transport_error(e, &shown, limits);
    let start = Instant::now();
    let mut redirects = 0;
    let mut response = loop {
        // The limit covers the redirects too.
        let remaining = limits.timeout.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            return Err(transport(ureq::Error::Timeout(ureq::Timeout::Global)));
        }
        let mut request = agent
            .get(uri.clone())
            .config()
            .timeout_global(Some(remaining))
            .build();
        if let Some(etag) = &cond.etag {
            request = request.header("if-none-match", etag);
        }
        if let Some(since) = &cond.last_modified {
            request = request.header("if-modified-since", since);
        }
        let response = request.call().map_err(transport)?;
        if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            break response;
        }
        let refused = |reason: String| FeedError::Http {
            url: shown.clone(),
            reason,
        };
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            return Err(refused(format!("more than {MAX_REDIRECTS} redirects")));
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refused(format!("HTTP {} without a Location", response.status())))?;
        let next = join(&uri, location).ok_or_else(|| {
            refused(format!(
                "redirected to {}, not an http(s) URL",
                redact(location)
            ))
        })?;
        if https && !is_https(&next) {
            return Err(refused(format!(
                "redirected from https to plain http ({}); refused",
                redact(&next.to_string())
            )));
        }
        uri = next;
    };
    let status = response.status();
    let conditional = cond.etag.is_some() || cond.last_modified.is_some();
    if status == StatusCode::NOT_MODIFIED && conditional {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(FeedError::Status {
            url: shown,
            status: status.as_u16(),
            reason: status.canonical_reason(),
        });
    }
    let validator = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_VALIDATOR_BYTES)
            .map(str::to_owned)
    };
    let etag = validator("etag");
    let last_modified = validator("last-modified");
    let bytes = response
        .body_mut()
        .with_config()
        .limit(limits.max_bytes)
        .read_to_vec()
        .map_err(transport)?;
    let text = String::from_utf8(bytes).map_err(|_| FeedError::NotText {
        source_name: shown.clone(),
    })?;
    Ok(Fetched::Body {
        text,
        etag,
        last_modified,
    })
}

/// `text` as an `http` or `https` URL with a host.
fn http_uri(text: &str) -> Option<Uri> {
    let uri: Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    (web && uri.host().is_some_and(|h| !h.is_empty())).then_some(uri)
}

fn is_https(uri: &Uri) -> bool {
    uri.scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

/// A redirect's `Location` against the URL that answered it (RFC 3986 references:
/// absolute, scheme-relative, absolute path, relative path), if it is http(s).
pub(super) fn join(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    let location = location.trim();
    let absolute = location.split_once(':').is_some_and(|(s, _)| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let text = if absolute {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
        format!("{scheme}://{authority}{dir}{location}")
    };
    http_uri(&text)
}

fn transport_error(error: ureq::Error, url: &str, limits: &Limits) -> FeedError {
    let url = url.to_owned();
    match error {
        ureq::Error::Timeout(_) => FeedError::Timeout {
            url,
            after: limits.timeout,
        },
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => FeedError::Timeout {
            url,
            after: limits.timeout,
        },
        ureq::Error::BodyExceedsLimit(_) => FeedError::TooLarge {
            source_name: url,
            max: limits.max_bytes,
        },
        other => FeedError::Http {
            url,
            reason: other.to_string(),
        },
    }
}

/// `url` as errors and logs show it: without user info and query, which may hold
/// credentials (`https://user:key@host/list?token=...`).
pub(super) fn redact(url: &str) -> String {
    let Ok(uri) = url.parse::<Uri>() else {
        let before_query = url.split(['?', '#']).next().unwrap_or_default();
        let shown = match (
            before_query.split_once("://"),
            before_query.rsplit_once('@'),
        ) {
            (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
            _ => before_query.to_owned(),
        };
        return crate::model::excerpt(&shown);
    };
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(host) = uri.host() {
        out.push_str(host);
    }
    if let Some(port) = uri.port_u16() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(uri.path());
    if uri.query().is_some() {
        out.push_str("?…");
    }
    crate::model::excerpt(&out)
}
