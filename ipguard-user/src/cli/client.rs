//! The HTTP side of the CLI: [`Call`] builds a request from validated arguments,
//! [`Client`] sends it and turns every failure into a one-line [`ClientError`].

use std::{
    ffi::OsString,
    fmt::Write as _,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::{format::clean, DEFAULT_API, TOKEN_ENV};
use crate::{
    api::types::{AddRequest, ApiError, ModeRequest, ReportRequest},
    model::{ListKind, Mode},
};

/// A daemon that accepts the connection but never answers must not hang a script forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A full page (10 000 entries with long reasons) stays far below this.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// Normalises `--api`: `http://host:port[/prefix]` without a trailing `/`; a bare
/// `host:port` (as written in `[api] listen`) gets `http://`.
pub fn parse_api_url(s: &str) -> Result<String, String> {
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{s:?}: only http:// URLs are supported (the daemon's API speaks plain HTTP)"
        ));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!("{s:?} is not a valid API URL, e.g. {DEFAULT_API}"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Reads the API token: from `--token-file` if given, else from `IPGUARD_TOKEN` (its value,
/// passed in so tests need not touch the environment). As the daemon reads `token_file`, the
/// token is the file's first line without surrounding whitespace. An empty `IPGUARD_TOKEN`
/// counts as unset.
pub fn resolve_token(
    token_file: Option<&Path>,
    env_token: Option<OsString>,
) -> Result<Option<String>, ClientError> {
    let (token, origin) = if let Some(path) = token_file {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        // The daemon takes the first line of the same file.
        let first = text.lines().next().unwrap_or_default().to_owned();
        (first, format!("token file {}", path.display()))
    } else {
        match env_token {
            Some(value) if !value.is_empty() => {
                let text = value.into_string().map_err(|_| ClientError::BadToken {
                    origin: TOKEN_ENV.to_owned(),
                })?;
                (text, TOKEN_ENV.to_owned())
            }
            _ => return Ok(None),
        }
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(ClientError::EmptyToken { origin });
    }
    // What an HTTP header value can carry and the server can read back as text.
    if !token
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(ClientError::BadToken { origin });
    }
    Ok(Some(token.to_owned()))
}

/// Why a client command failed. Each variant displays as one line for `ipguard: error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection to the API could be made.
    #[error("cannot reach the ipguard API at {api}: {reason} (is the daemon running?)")]
    Unreachable { api: String, reason: String },
    /// The API refused the request with an [`ApiError`] body.
    #[error("{}", format_api_error(error, *hint))]
    Api {
        /// The HTTP status.
        status: u16,
        error: ApiError,
        /// What to do about it, when the CLI knows better than the API.
        hint: Option<&'static str>,
    },
    /// A 4xx/5xx without an [`ApiError`] body: not the ipguard API, or a proxy in between.
    #[error("the ipguard API at {api} answered HTTP {status}{}", excerpt(body))]
    Status {
        api: String,
        status: u16,
        body: String,
    },
    /// A 2xx whose body is not the JSON the contract promises.
    #[error("unexpected answer from the ipguard API to {path}: {reason}")]
    Decode { path: String, reason: String },
    /// Any other failure of the HTTP exchange.
    #[error("request to the ipguard API at {api} failed: {reason}")]
    Transport { api: String, reason: String },
    /// `--token-file` cannot be read.
    #[error("cannot read the API token file {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The token file or variable is empty.
    #[error("the API token in {origin} is empty")]
    EmptyToken { origin: String },
    /// The token has characters an HTTP header cannot carry.
    #[error("the API token in {origin} has control or non-ASCII characters")]
    BadToken { origin: String },
    /// The API handed out the same cursor twice; following it would never end.
    #[error("the ipguard API returned the cursor {0:?} twice; stopping")]
    CursorLoop(String),
    /// Writing the answer to stdout failed.
    #[error("cannot write the output")]
    Output(#[source] io::Error),
    /// A request or answer could not be written as JSON.
    #[error("cannot write JSON")]
    Json(#[from] serde_json::Error),
}

/// The one-line form of an [`ApiError`]: `<error>: <detail>` and ` (entry <index>)` for a batch.
pub fn format_api_error(error: &ApiError, hint: Option<&str>) -> String {
    let mut line = format!("{}: {}", clean(&error.error), clean(&error.detail));
    if let Some(index) = error.index {
        let _ = write!(line, " (entry {index})");
    }
    if let Some(hint) = hint {
        let _ = write!(line, "; {hint}");
    }
    line
}

/// The start of an unexpected error body, to show with its status.
fn excerpt(body: &str) -> String {
    let first = body.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        None => String::new(),
        Some(line) => {
            let mut short: String = line.chars().take(200).collect();
            if short.len() < line.len() {
                short.push_str("...");
            }
            format!(": {}", clean(&short))
        }
    }
}

/// HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// One API request, built but not sent: method, path (with query) and JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    /// Starts with `/`; segments and query values percent-encoded.
    pub path: String,
    pub body: Option<String>,
}

impl Call {
    pub(super) fn get(path: String) -> Self {
        Call {
            method: Method::Get,
            path,
            body: None,
        }
    }

    fn post(path: String, body: &impl serde::Serialize) -> serde_json::Result<Self> {
        Ok(Call {
            method: Method::Post,
            path,
            body: Some(serde_json::to_string(body)?),
        })
    }

    /// `GET /v1/status`.
    pub fn status() -> Self {
        Call::get("/v1/status".to_owned())
    }

    /// `GET /v1/offenders?limit=`.
    pub fn offenders(limit: u32) -> Self {
        Call::get(format!("/v1/offenders?limit={limit}"))
    }

    /// `GET /v1/ips/{ip}`.
    pub fn ip(ip: IpAddr) -> Self {
        Call::get(format!("/v1/ips/{}", encode_segment(&ip.to_string())))
    }

    /// `GET /v1/ips/{ip}?packet=PROTO/PORT`: one packet of the address.
    pub fn ip_packet(ip: IpAddr, proto: Option<crate::model::Proto>, port: Option<u16>) -> Self {
        let mut path = format!("/v1/ips/{}", encode_segment(&ip.to_string()));
        if let Some(proto) = proto {
            path.push_str(&format!("?packet={proto}"));
            if let Some(port) = port {
                path.push_str(&format!("/{port}"));
            }
        }
        Call::get(path)
    }

    /// `GET /v1/lists/{list}?limit=&cursor=`.
    pub fn list(list: ListKind, limit: Option<u32>, cursor: Option<&str>) -> Self {
        let mut path = format!("/v1/lists/{list}");
        let mut sep = '?';
        if let Some(limit) = limit {
            let _ = write!(path, "{sep}limit={limit}");
            sep = '&';
        }
        if let Some(cursor) = cursor {
            let _ = write!(path, "{sep}cursor={}", encode_query_value(cursor));
        }
        Call::get(path)
    }

    /// `POST /v1/lists/{list}`.
    pub fn add(list: ListKind, request: &AddRequest) -> serde_json::Result<Self> {
        Call::post(format!("/v1/lists/{list}"), request)
    }

    /// `DELETE /v1/lists/{list}/{net}`, the `/` of the CIDR sent as `%2F`.
    pub fn remove(list: ListKind, net: &IpNet) -> Self {
        Call {
            method: Method::Delete,
            path: format!("/v1/lists/{list}/{}", encode_segment(&net.to_string())),
            body: None,
        }
    }

    /// `POST /v1/report`.
    pub fn report(request: &ReportRequest) -> serde_json::Result<Self> {
        Call::post("/v1/report".to_owned(), request)
    }

    /// `GET /v1/mode`, or with a mode `PUT /v1/mode`.
    pub fn mode(mode: Option<Mode>) -> serde_json::Result<Self> {
        match mode {
            None => Ok(Call::get("/v1/mode".to_owned())),
            Some(mode) => Ok(Call {
                method: Method::Put,
                path: "/v1/mode".to_owned(),
                body: Some(serde_json::to_string(&ModeRequest {
                    mode: mode.as_str().to_owned(),
                })?),
            }),
        }
    }

    /// `POST /v1/feeds/{name}/accept`.
    pub fn feed_accept(name: &str) -> Self {
        Call {
            method: Method::Post,
            path: format!("/v1/feeds/{}/accept", encode_segment(name)),
            body: Some("{}".to_owned()),
        }
    }

    /// `POST /v1/reload` (an empty JSON object as the body).
    pub fn reload() -> Self {
        Call {
            method: Method::Post,
            path: "/v1/reload".to_owned(),
            body: Some("{}".to_owned()),
        }
    }
}

/// Percent-encodes a path segment: everything but RFC 3986 unreserved characters and `:`
/// (so IPv6 addresses stay readable); a CIDR's `/` becomes `%2F`.
pub fn encode_segment(s: &str) -> String {
    percent_encode(s, |b| b == b':')
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters.
pub fn encode_query_value(s: &str) -> String {
    percent_encode(s, |_| false)
}

fn percent_encode(s: &str, also_keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || also_keep(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A blocking HTTP client for one API base URL, with an optional bearer token.
pub struct Client {
    api: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// `api` as [`parse_api_url`] returns it.
    pub fn new(api: &str, token: Option<String>) -> Self {
        let config = ureq::Agent::config_builder()
            // 4xx/5xx carry an ApiError body that the user must see.
            .http_status_as_error(false)
            // The API is an admin interface on the host: an HTTP_PROXY from the
            // environment must not see the bearer token (nor break loopback calls).
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("ipguard/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            api: api.to_owned(),
            token,
            agent: config.into(),
        }
    }

    /// Sends `call`; the body of a 2xx answer, or the error as one line.
    pub fn send(&self, call: &Call) -> Result<String, ClientError> {
        let url = format!("{}{}", self.api, call.path);
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match call.method {
            Method::Get | Method::Delete => {
                let mut request = if call.method == Method::Get {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                request = request.header("accept", "application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                request.call()
            }
            Method::Post | Method::Put => {
                let request = if call.method == Method::Post {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                let mut request = request
                    .header("accept", "application/json")
                    .header("content-type", "application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                request.send(call.body.as_deref().unwrap_or_default())
            }
        };
        let mut response = result.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        match serde_json::from_str::<ApiError>(&body) {
            Ok(error) => {
                let hint = match status {
                    401 if self.token.is_none() => {
                        Some("no token given: use --token-file FILE or set IPGUARD_TOKEN")
                    }
                    // The API's detail names its JSON field `force`.
                    409 if call.method == Method::Post => Some("use --force"),
                    _ => None,
                };
                Err(ClientError::Api {
                    status,
                    error,
                    hint,
                })
            }
            Err(_) => Err(ClientError::Status {
                api: self.api.clone(),
                status,
                body,
            }),
        }
    }

    /// Sends `call` and decodes the answer as `T`.
    pub(super) fn fetch<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ClientError> {
        let body = self.send(call)?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode {
            path: call.path.clone(),
            reason: e.to_string(),
        })
    }

    fn transport_error(&self, error: ureq::Error) -> ClientError {
        let unreachable = |reason: String| ClientError::Unreachable {
            api: self.api.clone(),
            reason,
        };
        match error {
            ureq::Error::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => unreachable("connection refused".to_owned()),
                io::ErrorKind::TimedOut => unreachable("timed out".to_owned()),
                io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable => unreachable(e.to_string()),
                _ => ClientError::Transport {
                    api: self.api.clone(),
                    reason: e.to_string(),
                },
            },
            ureq::Error::ConnectionFailed => unreachable("connection failed".to_owned()),
            ureq::Error::HostNotFound => unreachable("host not found".to_owned()),
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                unreachable("timed out connecting".to_owned())
            }
            other => ClientError::Transport {
                api: self.api.clone(),
                reason: other.to_string(),
            },
        }
    }
}
