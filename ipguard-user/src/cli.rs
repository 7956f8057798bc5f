//! The REST API's command-line client: `ipguard status|list|add|remove|report`.
//!
//! Three layers, each testable alone: [`Call`] builds a request (method, path, JSON body)
//! from validated arguments, [`Client`] sends it and turns failures into one-line
//! [`ClientError`]s, and the `format_*` functions turn answers into text.
//!
//! Arguments are validated by clap before anything is sent (list names, addresses and
//! networks with [`crate::net::parse_net`], durations with [`crate::duration`]), so a
//! typo is a usage error (exit 2) and never a request.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt::Write as _,
    io::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::{
    api::types::{
        AddEntry, AddRequest, AddResponse, ApiError, IpStatus, ListPage, RemoveResponse,
        ReportRequest, ReportResponse, Status, Traffic,
    },
    duration::{parse_lifetime, DurationError},
    lists::ListKind,
};

/// Where the CLI looks for the API unless told otherwise (the daemon's default `[api] listen`).
pub const DEFAULT_API: &str = "http://127.0.0.1:9180";
/// Environment variable naming the API's base URL.
pub const API_ENV: &str = "IPGUARD_API";
/// Environment variable holding the API token itself (not a file name).
pub const TOKEN_ENV: &str = "IPGUARD_TOKEN";
/// The API's largest page (`limit`).
pub const MAX_LIMIT: u32 = 10_000;
/// Page size of `list --all` without `--limit`: few round trips, modest answers.
const ALL_PAGE_SIZE: u32 = 1_000;

/// A daemon that accepts the connection but never answers must not hang a script forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A full page (10 000 entries with long reasons) stays far below this.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// Options every client command takes: where the API is, how to authenticate, how to print.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ApiOpts {
    /// Base URL of the daemon's REST API (plain http://; a bare HOST:PORT means http://HOST:PORT).
    #[arg(long, value_name = "URL", env = API_ENV, default_value = DEFAULT_API, value_parser = parse_api_url)]
    pub api: String,
    /// File holding the API token (the daemon's `[api] token_file`). Without it, the
    /// environment variable IPGUARD_TOKEN may hold the token itself.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON answer as is (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The client subcommands of `ipguard` (flattened into its command list by `main.rs`).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum ClientCommand {
    /// Show the daemon's status, or explain what it does with one address and why.
    Status {
        /// Address to explain (IPv4 or IPv6); without it, the daemon's overall status.
        ip: Option<IpAddr>,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Show the entries of a list.
    List {
        /// Which list.
        #[arg(value_name = "LIST", value_parser = list_parser())]
        list: ListKind,
        /// Entries per page (1-10000; the API's default is 100). With --all, the page size
        /// of each request (default 1000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
        limit: Option<u32>,
        /// Follow the pages to the end and show every entry.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Add addresses or networks to a list: all of them, or none.
    Add {
        /// Which list.
        #[arg(value_name = "LIST", value_parser = list_parser())]
        list: ListKind,
        /// Address or network in CIDR form (host bits clear); several are added together.
        #[arg(value_name = "NET", required = true, value_parser = crate::net::parse_net)]
        nets: Vec<IpNet>,
        /// How long the entries last: 90s, 15m, 2h, 30d or forever (the default).
        #[arg(long, value_name = "D", value_parser = parse_duration_arg)]
        duration: Option<String>,
        /// Why, shown by `status IP` and `list`.
        #[arg(long, value_name = "R")]
        reason: Option<String>,
        /// Allow an entry that covers your own address or loopback.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Remove an address or network from a list.
    Remove {
        /// Which list.
        #[arg(value_name = "LIST", value_parser = list_parser())]
        list: ListKind,
        /// The entry, as listed (a bare address means /32 or /128).
        #[arg(value_name = "NET", value_parser = crate::net::parse_net)]
        net: IpNet,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Report an abusive address; enough reports within the window ban it.
    Report {
        /// The address to report (IPv4 or IPv6).
        ip: IpAddr,
        /// Why, e.g. "ssh brute force".
        #[arg(long, value_name = "R")]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiOpts,
    },
}

impl ClientCommand {
    /// The options common to all commands.
    pub fn api_opts(&self) -> &ApiOpts {
        match self {
            ClientCommand::Status { api, .. }
            | ClientCommand::List { api, .. }
            | ClientCommand::Add { api, .. }
            | ClientCommand::Remove { api, .. }
            | ClientCommand::Report { api, .. } => api,
        }
    }
}

fn list_parser() -> impl clap::builder::TypedValueParser<Value = ListKind> {
    PossibleValuesParser::new(ListKind::ALL.map(ListKind::name))
        .try_map(|name| name.parse::<ListKind>())
}

fn parse_duration_arg(s: &str) -> Result<String, DurationError> {
    parse_lifetime(s)?;
    // Sent as written: the daemon parses it with the same function.
    Ok(s.to_owned())
}

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
    Delete,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
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
    fn get(path: String) -> Self {
        Call {
            method: Method::Get,
            path,
            body: None,
        }
    }

    fn post(path: String, body: &impl serde::Serialize) -> Self {
        Call {
            method: Method::Post,
            path,
            body: Some(
                serde_json::to_string(body)
                    .expect("the API's request types always serialize to JSON"),
            ),
        }
    }

    /// `GET /v1/status`.
    pub fn status() -> Self {
        Call::get("/v1/status".to_owned())
    }

    /// `GET /v1/ips/{ip}`.
    pub fn ip(ip: IpAddr) -> Self {
        Call::get(format!("/v1/ips/{}", encode_segment(&ip.to_string())))
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
    pub fn add(list: ListKind, request: &AddRequest) -> Self {
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
    pub fn report(request: &ReportRequest) -> Self {
        Call::post("/v1/report".to_owned(), request)
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
            Method::Post => {
                let mut request = self
                    .agent
                    .post(&url)
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
    fn fetch<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ClientError> {
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

/// Runs a client command against the API its options name and prints the answer.
pub fn run(command: &ClientCommand) -> Result<(), ClientError> {
    let opts = command.api_opts();
    let token = resolve_token(opts.token_file.as_deref(), std::env::var_os(TOKEN_ENV))?;
    let client = Client::new(&opts.api, token);
    let output = execute(command, &client)?;
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `ipguard list --all | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(ClientError::Output),
    }
}

/// Performs a client command through `client`; the text to print (ending in a newline).
pub fn execute(command: &ClientCommand, client: &Client) -> Result<String, ClientError> {
    let json = command.api_opts().json;
    match command {
        ClientCommand::Status { ip, .. } => {
            let call = ip.map_or_else(Call::status, Call::ip);
            if json {
                Ok(json_line(client.send(&call)?))
            } else if ip.is_some() {
                Ok(format_ip_status(&client.fetch::<IpStatus>(&call)?))
            } else {
                Ok(format_status(&client.fetch::<Status>(&call)?))
            }
        }
        ClientCommand::List {
            list, limit, all, ..
        } => {
            if !*all {
                let call = Call::list(*list, *limit, None);
                return if json {
                    Ok(json_line(client.send(&call)?))
                } else {
                    Ok(format_list(&client.fetch::<ListPage>(&call)?))
                };
            }
            let page = fetch_all(client, *list, limit.unwrap_or(ALL_PAGE_SIZE))?;
            if json {
                Ok(json_line(
                    serde_json::to_string(&page).expect("a ListPage always serializes to JSON"),
                ))
            } else {
                Ok(format_list(&page))
            }
        }
        ClientCommand::Add {
            list,
            nets,
            duration,
            reason,
            force,
            ..
        } => {
            let request = AddRequest {
                entries: nets
                    .iter()
                    .map(|net| AddEntry {
                        net: net.to_string(),
                        duration: duration.clone(),
                        reason: reason.clone(),
                    })
                    .collect(),
                force: *force,
            };
            let call = Call::add(*list, &request);
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_add(*list, &client.fetch::<AddResponse>(&call)?))
            }
        }
        ClientCommand::Remove { list, net, .. } => {
            let call = Call::remove(*list, net);
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_remove(
                    *list,
                    &client.fetch::<RemoveResponse>(&call)?,
                ))
            }
        }
        ClientCommand::Report { ip, reason, .. } => {
            let call = Call::report(&ReportRequest {
                ip: ip.to_string(),
                reason: reason.clone(),
            });
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_report(&client.fetch::<ReportResponse>(&call)?))
            }
        }
    }
}

/// Follows `next_cursor` to the last page; all entries as one page without a cursor.
fn fetch_all(client: &Client, list: ListKind, page_size: u32) -> Result<ListPage, ClientError> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page: ListPage = client.fetch(&Call::list(list, Some(page_size), cursor.as_deref()))?;
        entries.extend(page.entries);
        match page.next_cursor {
            None => break,
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(ClientError::CursorLoop(next))
            }
            Some(next) => cursor = Some(next),
        }
    }
    Ok(ListPage {
        entries,
        next_cursor: None,
    })
}

fn json_line(mut body: String) -> String {
    if !body.ends_with('\n') {
        body.push('\n');
    }
    body
}

// ---- Output formatting: pure functions of the API's answers. ----

/// Escapes control characters: reasons come from API callers and must not be able to
/// move the cursor or recolour an operator's terminal.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => clean(v),
        _ => "-".to_owned(),
    }
}

/// `key  value` lines, the values aligned.
fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    out
}

/// A table with a header line; columns two spaces apart, numbers right-aligned, no
/// trailing spaces.
fn table(header: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1d 2h`, `5m 3s`, `42s`: the largest unit and the next one when it is not zero.
pub fn format_seconds(seconds: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(i) = UNITS.iter().position(|(_, len)| seconds >= *len) else {
        return "0s".to_owned();
    };
    let (unit, len) = UNITS[i];
    let mut out = format!("{}{unit}", seconds / len);
    if let Some((next_unit, next_len)) = UNITS.get(i + 1) {
        let n = seconds % len / next_len;
        if n > 0 {
            let _ = write!(out, " {n}{next_unit}");
        }
    }
    out
}

fn ip_status_rows(status: &IpStatus) -> Vec<(&'static str, String)> {
    let expires = match (&status.expires, status.retry_after) {
        (Some(at), Some(left)) => format!("{} (in {})", clean(at), format_seconds(left)),
        (Some(at), None) => clean(at),
        // Null means "never" only when an entry decides.
        (None, _) if status.list.is_some() || status.prefix.is_some() => "never".to_owned(),
        (None, _) => "-".to_owned(),
    };
    let c = &status.counters;
    vec![
        ("ip", clean(&status.ip)),
        ("verdict", clean(&status.verdict)),
        ("list", or_dash(status.list.as_deref())),
        ("prefix", or_dash(status.prefix.as_deref())),
        ("reason", or_dash(status.reason.as_deref())),
        ("source", or_dash(status.source.as_deref())),
        ("strikes", status.strikes.to_string()),
        ("expires", expires),
        (
            "counters",
            format!(
                "packets {}, bytes {}, syns {}, dropped {}",
                c.packets, c.bytes, c.syns, c.dropped
            ),
        ),
    ]
}

/// `ipguard status IP`: one `key  value` line per field.
pub fn format_ip_status(status: &IpStatus) -> String {
    key_values(&ip_status_rows(status))
}

/// `ipguard report IP`: the outcome, then the address's new state.
pub fn format_report(report: &ReportResponse) -> String {
    let mut rows = vec![
        ("outcome", clean(&report.outcome)),
        (
            "reports",
            report
                .reports
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ),
    ];
    rows.extend(ip_status_rows(&report.status));
    key_values(&rows)
}

/// `ipguard list LIST`: a `NET  EXPIRES  SOURCE  REASON` table, with a note when more
/// pages follow.
pub fn format_list(page: &ListPage) -> String {
    if page.entries.is_empty() && page.next_cursor.is_none() {
        return "no entries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                clean(&e.net),
                e.expires
                    .as_deref()
                    .map_or_else(|| "never".to_owned(), clean),
                or_dash(Some(&e.source)),
                or_dash(Some(&e.reason)),
            ]
        })
        .collect();
    let mut out = table(&["NET", "EXPIRES", "SOURCE", "REASON"], &[], &rows);
    if page.next_cursor.is_some() {
        out.push_str("(more entries: use --all to list them all)\n");
    }
    out
}

/// The entries of `map` in `order` first, then any others alphabetically.
fn ordered<'a, V>(map: &'a BTreeMap<String, V>, order: &[&str]) -> Vec<(&'a str, &'a V)> {
    let known = order
        .iter()
        .filter_map(|key| map.get_key_value(*key))
        .map(|(k, v)| (k.as_str(), v));
    let others = map
        .iter()
        .filter(|(k, _)| !order.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v));
    known.chain(others).collect()
}

/// `ipguard status`: the daemon in a few lines, then traffic and map tables.
pub fn format_status(status: &Status) -> String {
    let entries = ordered(
        &status.entries,
        &["whitelist", "graylist", "blacklist", "rules"],
    )
    .iter()
    .map(|(name, n)| format!("{} {n}", clean(name)))
    .collect::<Vec<_>>()
    .join(", ");
    let mut out = key_values(&[
        ("interface", clean(&status.interface)),
        ("xdp mode", clean(&status.xdp_mode)),
        ("uptime", format_seconds(status.uptime_seconds)),
        ("tracked sources", status.tracked_sources.to_string()),
        (
            "entries",
            if entries.is_empty() {
                "-".to_owned()
            } else {
                entries
            },
        ),
    ]);
    let traffic_rows = |map: &BTreeMap<String, Traffic>, order: &[&str]| -> Vec<Vec<String>> {
        ordered(map, order)
            .into_iter()
            .map(|(name, t)| vec![clean(name), t.packets.to_string(), t.bytes.to_string()])
            .collect()
    };
    out.push('\n');
    out.push_str(&table(
        &["VERDICT", "PACKETS", "BYTES"],
        &[false, true, true],
        &traffic_rows(&status.verdicts, &["pass", "drop"]),
    ));
    out.push('\n');
    out.push_str(&table(
        &["LIST", "PACKETS", "BYTES"],
        &[false, true, true],
        &traffic_rows(
            &status.lists,
            &[
                "unlisted",
                "whitelist",
                "graylist",
                "blacklist",
                "rule",
                "non_ip",
                "malformed",
            ],
        ),
    ));
    out.push('\n');
    let maps: Vec<Vec<String>> = ordered(&status.maps, &["lpm_v4", "lpm_v6", "sources"])
        .into_iter()
        .map(|(name, m)| {
            let fill = if m.capacity == 0 {
                "-".to_owned()
            } else {
                // Tenths of a percent, rounded down so a full map is the only 100.0%.
                let permille = u128::from(m.used) * 1000 / u128::from(m.capacity);
                format!("{}.{}%", permille / 10, permille % 10)
            };
            vec![
                clean(name),
                m.used.to_string(),
                m.capacity.to_string(),
                fill,
            ]
        })
        .collect();
    out.push_str(&table(
        &["MAP", "USED", "CAPACITY", "FILL"],
        &[false, true, true, true],
        &maps,
    ));
    out
}

/// `ipguard add`: how many entries were new and how many replaced one.
pub fn format_add(list: ListKind, answer: &AddResponse) -> String {
    format!(
        "{list}: added {}, replaced {}\n",
        answer.added, answer.replaced
    )
}

/// `ipguard remove`: the entry that is gone.
pub fn format_remove(list: ListKind, answer: &RemoveResponse) -> String {
    format!("{list}: removed {}\n", clean(&answer.removed))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        io::{BufRead as _, BufReader, Read as _},
        net::TcpListener,
        thread::JoinHandle,
    };

    use clap::{error::ErrorKind, Parser};
    use serde_json::{json, Value};

    use super::*;
    use crate::api::types::{IpCounters, ListEntryView, MapFill};

    /// The client commands as `main.rs` mounts them.
    #[derive(Debug, Parser)]
    #[command(name = "ipguard")]
    struct TestCli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    /// Parses with an explicit `--api` after the arguments, so the environment does not matter.
    fn parse(args: &[&str]) -> ClientCommand {
        let mut argv = vec!["ipguard"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--api", DEFAULT_API]);
        TestCli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
            .command
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        let mut argv = vec!["ipguard"];
        argv.extend_from_slice(args);
        match TestCli::try_parse_from(argv) {
            Ok(cli) => panic!("{args:?} should not parse, got {:?}", cli.command),
            Err(e) => e,
        }
    }

    fn opts(api: &str) -> ApiOpts {
        ApiOpts {
            api: api.to_owned(),
            token_file: None,
            json: false,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        TestCli::command().debug_assert();
    }

    #[test]
    fn parses_status_with_and_without_ip() {
        assert_eq!(
            parse(&["status"]),
            ClientCommand::Status {
                ip: None,
                api: opts(DEFAULT_API)
            }
        );
        assert_eq!(
            parse(&["status", "2001:db8::1"]),
            ClientCommand::Status {
                ip: Some("2001:db8::1".parse().unwrap()),
                api: opts(DEFAULT_API)
            }
        );
        let err = parse_err(&["status", "203.0.113.0/24"]);
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn parses_list_with_defaults_and_options() {
        assert_eq!(
            parse(&["list", "blacklist"]),
            ClientCommand::List {
                list: ListKind::Blacklist,
                limit: None,
                all: false,
                api: opts(DEFAULT_API)
            }
        );
        assert_eq!(
            parse(&["list", "whitelist", "--limit", "10000", "--all", "--json"]),
            ClientCommand::List {
                list: ListKind::Whitelist,
                limit: Some(10_000),
                all: true,
                api: ApiOpts {
                    json: true,
                    ..opts(DEFAULT_API)
                }
            }
        );
        for bad in ["0", "10001", "-1", "ten"] {
            let err = parse_err(&["list", "graylist", "--limit", bad]);
            assert_eq!(err.exit_code(), 2, "--limit {bad}");
        }
    }

    #[test]
    fn parses_add_with_every_option() {
        assert_eq!(
            parse(&[
                "add",
                "graylist",
                "203.0.113.0/24",
                "2001:db8:bad::/48",
                "--duration",
                "2h",
                "--reason",
                "scanner",
                "--force",
                "--token-file",
                "/etc/ipguard/token",
            ]),
            ClientCommand::Add {
                list: ListKind::Graylist,
                nets: vec![net("203.0.113.0/24"), net("2001:db8:bad::/48")],
                duration: Some("2h".to_owned()),
                reason: Some("scanner".to_owned()),
                force: true,
                api: ApiOpts {
                    token_file: Some("/etc/ipguard/token".into()),
                    ..opts(DEFAULT_API)
                }
            }
        );
        assert_eq!(
            parse(&["add", "blacklist", "198.51.100.7"]),
            ClientCommand::Add {
                list: ListKind::Blacklist,
                nets: vec![net("198.51.100.7/32")],
                duration: None,
                reason: None,
                force: false,
                api: opts(DEFAULT_API)
            }
        );
        assert_eq!(
            parse_err(&["add", "blacklist"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn parses_remove_and_report() {
        assert_eq!(
            parse(&["remove", "blacklist", "203.0.113.0/24"]),
            ClientCommand::Remove {
                list: ListKind::Blacklist,
                net: net("203.0.113.0/24"),
                api: opts(DEFAULT_API)
            }
        );
        assert_eq!(
            parse(&["report", "198.51.100.23", "--reason", "ssh brute force"]),
            ClientCommand::Report {
                ip: "198.51.100.23".parse().unwrap(),
                reason: Some("ssh brute force".to_owned()),
                api: opts(DEFAULT_API)
            }
        );
        assert_eq!(
            parse_err(&["report", "198.51.100.0/24"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn api_url_comes_from_flag_env_or_default() {
        // The only test that depends on IPGUARD_API: the others pass --api or fail earlier.
        let api_of = |args: &[&str]| {
            let mut argv = vec!["ipguard"];
            argv.extend_from_slice(args);
            TestCli::try_parse_from(argv)
                .unwrap()
                .command
                .api_opts()
                .api
                .clone()
        };
        std::env::remove_var(API_ENV);
        assert_eq!(api_of(&["status"]), "http://127.0.0.1:9180");
        std::env::set_var(API_ENV, "http://10.1.2.3:9999/");
        let from_env = api_of(&["list", "blacklist"]);
        let from_flag = api_of(&["status", "--api", "192.0.2.1:9180"]);
        std::env::remove_var(API_ENV);
        assert_eq!(from_env, "http://10.1.2.3:9999");
        assert_eq!(from_flag, "http://192.0.2.1:9180");
    }

    #[test]
    fn api_url_is_validated() {
        assert_eq!(
            parse_api_url("http://[::1]:9180/").unwrap(),
            "http://[::1]:9180"
        );
        assert_eq!(
            parse_api_url("http://gw:8080/ipguard").unwrap(),
            "http://gw:8080/ipguard"
        );
        assert!(parse_api_url("https://127.0.0.1:9180")
            .unwrap_err()
            .contains("only http://"));
        assert!(parse_api_url("http://").is_err());
        assert!(parse_api_url("http://a b:1").is_err());
        assert!(parse_api_url("http://h:1/?x=1").is_err());
        let err = parse_err(&["status", "--api", "ftp://h"]);
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn bad_list_name_is_a_usage_error() {
        for args in [
            &["list", "blocklist"][..],
            &["add", "Blacklist", "198.51.100.7"],
            &["remove", "rules", "198.51.100.7"],
        ] {
            let err = parse_err(args);
            assert_eq!(err.kind(), ErrorKind::InvalidValue, "{args:?}");
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(
                text.contains("[possible values: whitelist, graylist, blacklist]"),
                "{text}"
            );
        }
    }

    /// Bad arguments fail in clap, before a `ClientCommand` (and so a request) exists.
    #[test]
    fn bad_net_is_a_usage_error_with_a_clear_message() {
        let cases = [
            (
                "198.51.100.7/24",
                "host bits set; did you mean 198.51.100.0/24?",
            ),
            ("198.51.100.0/33", "the prefix length must be at most 32"),
            ("example.com", "is not a valid IP address or CIDR"),
            (" 198.51.100.7", "leading or trailing whitespace"),
        ];
        for (given, expected) in cases {
            for command in ["add", "remove"] {
                let err = parse_err(&[command, "blacklist", given]);
                assert_eq!(err.kind(), ErrorKind::ValueValidation, "{command} {given}");
                assert_eq!(err.exit_code(), 2);
                let text = err.to_string();
                assert!(
                    text.lines().next().unwrap().contains(expected),
                    "{command} {given}: {text}"
                );
            }
        }
        // One bad entry rejects the whole command.
        parse_err(&["add", "blacklist", "203.0.113.0/24", "203.0.113.1/24"]);
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        for bad in ["2 h", "1h30m", "0s", "2H", "soon"] {
            let err = parse_err(&["add", "blacklist", "198.51.100.7", "--duration", bad]);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
        }
        for good in ["90s", "2h", "30d", "forever"] {
            parse(&["add", "blacklist", "198.51.100.7", "--duration", good]);
        }
    }

    #[test]
    fn calls_have_the_documented_method_and_path() {
        assert_eq!(Call::status(), Call::get("/v1/status".into()));
        assert_eq!(
            Call::ip("203.0.113.9".parse().unwrap()).path,
            "/v1/ips/203.0.113.9"
        );
        assert_eq!(
            Call::ip("2001:db8::1".parse().unwrap()).path,
            "/v1/ips/2001:db8::1"
        );
        assert_eq!(
            Call::list(ListKind::Graylist, None, None).path,
            "/v1/lists/graylist"
        );
        assert_eq!(
            Call::list(ListKind::Blacklist, Some(50), Some("abc+/=")).path,
            "/v1/lists/blacklist?limit=50&cursor=abc%2B%2F%3D"
        );
        assert_eq!(
            Call::list(ListKind::Blacklist, None, Some("c1")).path,
            "/v1/lists/blacklist?cursor=c1"
        );
        let add = Call::add(
            ListKind::Blacklist,
            &AddRequest {
                entries: vec![AddEntry {
                    net: "203.0.113.0/24".into(),
                    duration: Some("2h".into()),
                    reason: None,
                }],
                force: true,
            },
        );
        assert_eq!(add.method, Method::Post);
        assert_eq!(add.path, "/v1/lists/blacklist");
        assert_eq!(
            serde_json::from_str::<Value>(add.body.as_deref().unwrap()).unwrap(),
            json!({"entries": [{"net": "203.0.113.0/24", "duration": "2h", "reason": null}], "force": true})
        );
        let report = Call::report(&ReportRequest {
            ip: "198.51.100.23".into(),
            reason: Some("ssh".into()),
        });
        assert_eq!(
            (report.method, report.path.as_str()),
            (Method::Post, "/v1/report")
        );
        assert_eq!(
            report.body.as_deref(),
            Some(r#"{"ip":"198.51.100.23","reason":"ssh"}"#)
        );
    }

    #[test]
    fn remove_url_encodes_the_cidr_slash() {
        let call = Call::remove(ListKind::Blacklist, &net("203.0.113.0/24"));
        assert_eq!(call.method, Method::Delete);
        assert_eq!(call.path, "/v1/lists/blacklist/203.0.113.0%2F24");
        assert_eq!(call.body, None);
        assert_eq!(
            Call::remove(ListKind::Whitelist, &net("2001:db8:bad::/48")).path,
            "/v1/lists/whitelist/2001:db8:bad::%2F48"
        );
        // A bare address is sent as its host prefix.
        assert_eq!(
            Call::remove(ListKind::Graylist, &net("198.51.100.7/32")).path,
            "/v1/lists/graylist/198.51.100.7%2F32"
        );
        assert_eq!(encode_segment("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode_query_value("x:y/é"), "x%3Ay%2F%C3%A9");
    }

    fn sample_ip_status() -> IpStatus {
        IpStatus {
            ip: "203.0.113.9".into(),
            verdict: "drop".into(),
            list: Some("blacklist".into()),
            prefix: Some("203.0.113.0/24".into()),
            reason: Some("config".into()),
            source: Some("config".into()),
            strikes: 0,
            expires: None,
            retry_after: None,
            counters: IpCounters {
                packets: 0,
                bytes: 0,
                syns: 0,
                dropped: 12,
            },
        }
    }

    #[test]
    fn formats_ip_status() {
        assert_eq!(
            format_ip_status(&sample_ip_status()),
            "\
ip        203.0.113.9
verdict   drop
list      blacklist
prefix    203.0.113.0/24
reason    config
source    config
strikes   0
expires   never
counters  packets 0, bytes 0, syns 0, dropped 12
"
        );
    }

    #[test]
    fn formats_unlisted_and_expiring_ip_status() {
        let unlisted = IpStatus {
            ip: "192.0.2.2".into(),
            verdict: "pass".into(),
            list: None,
            prefix: None,
            reason: None,
            source: None,
            strikes: 1,
            expires: None,
            retry_after: None,
            counters: IpCounters {
                packets: 5,
                bytes: 420,
                syns: 1,
                dropped: 0,
            },
        };
        assert_eq!(
            format_ip_status(&unlisted),
            "\
ip        192.0.2.2
verdict   pass
list      -
prefix    -
reason    -
source    -
strikes   1
expires   -
counters  packets 5, bytes 420, syns 1, dropped 0
"
        );
        let banned = IpStatus {
            expires: Some("2030-01-01T12:00:00Z".into()),
            retry_after: Some(5400),
            reason: Some("rate \x1b[31mlimit\n".into()),
            ..sample_ip_status()
        };
        let text = format_ip_status(&banned);
        assert!(
            text.contains("\nexpires   2030-01-01T12:00:00Z (in 1h 30m)\n"),
            "{text}"
        );
        // Control characters from API callers are shown escaped, never interpreted.
        assert!(
            text.contains("\nreason    rate \\u{1b}[31mlimit\\n\n"),
            "{text}"
        );
    }

    #[test]
    fn formats_report() {
        let report = ReportResponse {
            outcome: "banned".into(),
            reports: Some(3),
            status: IpStatus {
                source: Some("report".into()),
                reason: Some("ssh brute force".into()),
                strikes: 1,
                expires: Some("2030-01-01T00:00:00Z".into()),
                retry_after: Some(3600),
                ..sample_ip_status()
            },
        };
        assert_eq!(
            format_report(&report),
            "\
outcome   banned
reports   3
ip        203.0.113.9
verdict   drop
list      blacklist
prefix    203.0.113.0/24
reason    ssh brute force
source    report
strikes   1
expires   2030-01-01T00:00:00Z (in 1h)
counters  packets 0, bytes 0, syns 0, dropped 12
"
        );
    }

    fn entry(net: &str, expires: Option<&str>, source: &str, reason: &str) -> ListEntryView {
        ListEntryView {
            net: net.into(),
            expires: expires.map(Into::into),
            reason: reason.into(),
            source: source.into(),
        }
    }

    #[test]
    fn formats_list() {
        let page = ListPage {
            entries: vec![
                entry("203.0.113.0/24", None, "config", "config"),
                entry(
                    "2001:db8:bad::/48",
                    Some("2030-01-01T00:00:00Z"),
                    "api",
                    "scanner",
                ),
                entry("198.51.100.7/32", None, "report", ""),
            ],
            next_cursor: None,
        };
        assert_eq!(
            format_list(&page),
            "\
NET                EXPIRES               SOURCE  REASON
203.0.113.0/24     never                 config  config
2001:db8:bad::/48  2030-01-01T00:00:00Z  api     scanner
198.51.100.7/32    never                 report  -
"
        );
        let partial = ListPage {
            entries: page.entries[..1].to_vec(),
            next_cursor: Some("c2".into()),
        };
        assert_eq!(
            format_list(&partial),
            "\
NET             EXPIRES  SOURCE  REASON
203.0.113.0/24  never    config  config
(more entries: use --all to list them all)
"
        );
        let empty = ListPage {
            entries: vec![],
            next_cursor: None,
        };
        assert_eq!(format_list(&empty), "no entries\n");
    }

    fn traffic(packets: u64, bytes: u64) -> crate::api::types::Traffic {
        crate::api::types::Traffic { packets, bytes }
    }

    #[test]
    fn formats_status() {
        let status = Status {
            interface: "eth0".into(),
            xdp_mode: "native".into(),
            uptime_seconds: 93_784,
            entries: BTreeMap::from([
                ("blacklist".into(), 3),
                ("graylist".into(), 0),
                ("rules".into(), 2),
                ("whitelist".into(), 2),
            ]),
            tracked_sources: 17,
            verdicts: BTreeMap::from([
                ("drop".into(), traffic(12, 840)),
                ("pass".into(), traffic(1_000, 1_500_000)),
            ]),
            lists: BTreeMap::from([
                ("blacklist".into(), traffic(12, 840)),
                ("unlisted".into(), traffic(990, 1_490_000)),
                ("whitelist".into(), traffic(10, 10_000)),
            ]),
            maps: BTreeMap::from([
                (
                    "lpm_v4".into(),
                    MapFill {
                        capacity: 65_536,
                        used: 4,
                    },
                ),
                (
                    "sources".into(),
                    MapFill {
                        capacity: 3,
                        used: 2,
                    },
                ),
            ]),
        };
        assert_eq!(
            format_status(&status),
            "\
interface        eth0
xdp mode         native
uptime           1d 2h
tracked sources  17
entries          whitelist 2, graylist 0, blacklist 3, rules 2

VERDICT  PACKETS    BYTES
pass        1000  1500000
drop          12      840

LIST       PACKETS    BYTES
unlisted       990  1490000
whitelist       10    10000
blacklist       12      840

MAP      USED  CAPACITY   FILL
lpm_v4      4     65536   0.0%
sources     2         3  66.6%
"
        );
    }

    #[test]
    fn formats_add_and_remove() {
        assert_eq!(
            format_add(
                ListKind::Blacklist,
                &AddResponse {
                    added: 2,
                    replaced: 1
                }
            ),
            "blacklist: added 2, replaced 1\n"
        );
        assert_eq!(
            format_remove(
                ListKind::Graylist,
                &RemoveResponse {
                    removed: "203.0.113.0/24".into()
                }
            ),
            "graylist: removed 203.0.113.0/24\n"
        );
    }

    #[test]
    fn formats_seconds() {
        assert_eq!(format_seconds(0), "0s");
        assert_eq!(format_seconds(42), "42s");
        assert_eq!(format_seconds(90), "1m 30s");
        assert_eq!(format_seconds(3600), "1h");
        assert_eq!(format_seconds(86_400 + 59), "1d");
        assert_eq!(format_seconds(2 * 86_400 + 3 * 3600 + 7), "2d 3h");
    }

    #[test]
    fn api_errors_are_one_line() {
        let body = r#"{"error":"invalid entry","detail":"198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?","index":1}"#;
        let error: ApiError = serde_json::from_str(body).unwrap();
        let err = ClientError::Api {
            status: 400,
            error,
            hint: None,
        };
        assert_eq!(
            err.to_string(),
            "invalid entry: 198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24? (entry 1)"
        );
        let error: ApiError = serde_json::from_str(
            r#"{"error":"not found","detail":"203.0.113.0/24 is not on the blacklist"}"#,
        )
        .unwrap();
        assert_eq!(
            format_api_error(&error, None),
            "not found: 203.0.113.0/24 is not on the blacklist"
        );
        let error = ApiError {
            error: "bad\nline".into(),
            detail: "x".into(),
            index: None,
        };
        assert_eq!(format_api_error(&error, None), "bad\\nline: x");
        let other = ClientError::Status {
            api: DEFAULT_API.into(),
            status: 502,
            body: "\n  <html>Bad Gateway</html>\nmore".into(),
        };
        assert_eq!(
            other.to_string(),
            "the ipguard API at http://127.0.0.1:9180 answered HTTP 502: <html>Bad Gateway</html>"
        );
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("ipguard-cli-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn token_comes_from_file_or_env() {
        assert_eq!(resolve_token(None, None).unwrap(), None);
        assert_eq!(resolve_token(None, Some("".into())).unwrap(), None);
        assert_eq!(
            resolve_token(None, Some("s3cret\n".into()))
                .unwrap()
                .as_deref(),
            Some("s3cret")
        );
        let file = temp_file("token", "from-file\n");
        // The file wins over the variable.
        assert_eq!(
            resolve_token(Some(&file), Some("from-env".into()))
                .unwrap()
                .as_deref(),
            Some("from-file")
        );
        std::fs::write(&file, "\n").unwrap();
        let err = resolve_token(Some(&file), None).unwrap_err();
        assert!(matches!(err, ClientError::EmptyToken { .. }), "{err}");
        // Like the daemon: the first line, trimmed.
        std::fs::write(&file, "  first line \nsecond\n").unwrap();
        assert_eq!(
            resolve_token(Some(&file), None).unwrap().as_deref(),
            Some("first line")
        );
        std::fs::write(&file, "t\u{e9}").unwrap();
        let err = resolve_token(Some(&file), None).unwrap_err();
        assert!(matches!(err, ClientError::BadToken { .. }), "{err}");
        let err = resolve_token(None, Some("a\u{7}b".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the API token in IPGUARD_TOKEN has control or non-ASCII characters"
        );
        std::fs::remove_file(&file).unwrap();
        let err = resolve_token(Some(&file), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the API token file "),
            "{err}"
        );
    }

    /// What the fake API received: the request line, headers (lower-cased names) and body.
    #[derive(Debug)]
    struct Received {
        request_line: String,
        headers: BTreeMap<String, String>,
        body: String,
    }

    /// A one-thread HTTP server on 127.0.0.1:0 that answers one connection per canned
    /// `(status, body)` and hands back what it received.
    fn fake_api(answers: Vec<(u16, String)>) -> (String, JoinHandle<Vec<Received>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut received = Vec::new();
            for (status, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut headers = BTreeMap::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
                }
                let length: usize = headers
                    .get("content-length")
                    .map_or(0, |v| v.parse().unwrap());
                let mut request_body = vec![0; length];
                reader.read_exact(&mut request_body).unwrap();
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                received.push(Received {
                    request_line: request_line.trim_end().to_owned(),
                    headers,
                    body: String::from_utf8(request_body).unwrap(),
                });
            }
            received
        });
        (api, handle)
    }

    /// Parses `args` against `api` and executes the command, like `ipguard` does.
    fn execute_args(api: &str, token: Option<&str>, args: &[&str]) -> Result<String, ClientError> {
        let command = parse(args);
        execute(&command, &Client::new(api, token.map(Into::into)))
    }

    fn ip_status_json() -> String {
        serde_json::to_string(&sample_ip_status()).unwrap()
    }

    #[test]
    fn status_ip_sends_the_token_and_prints_a_block() {
        let (api, server) = fake_api(vec![(200, ip_status_json())]);
        let out = execute_args(&api, Some("s3cret"), &["status", "203.0.113.9"]).unwrap();
        assert_eq!(out, format_ip_status(&sample_ip_status()));
        let [request] = <[Received; 1]>::try_from(server.join().unwrap()).unwrap();
        assert_eq!(request.request_line, "GET /v1/ips/203.0.113.9 HTTP/1.1");
        assert_eq!(request.headers["authorization"], "Bearer s3cret");
        assert_eq!(request.headers["accept"], "application/json");
        assert_eq!(request.body, "");
    }

    #[test]
    fn json_mode_prints_the_answer_as_is() {
        let body = r#"{"added":1,"replaced":0}"#.to_owned();
        let (api, server) = fake_api(vec![(200, body.clone())]);
        let out = execute_args(
            &api,
            None,
            &[
                "add",
                "blacklist",
                "203.0.113.0/24",
                "--json",
                "--reason",
                "scan",
            ],
        )
        .unwrap();
        assert_eq!(out, format!("{body}\n"));
        let request = server.join().unwrap().pop().unwrap();
        assert!(!request.headers.contains_key("authorization"));
        assert_eq!(request.request_line, "POST /v1/lists/blacklist HTTP/1.1");
    }

    #[test]
    fn add_posts_all_entries_in_one_request() {
        let (api, server) = fake_api(vec![(200, r#"{"added":1,"replaced":1}"#.into())]);
        let out = execute_args(
            &api,
            Some("t"),
            &[
                "add",
                "blacklist",
                "203.0.113.0/24",
                "2001:DB8:BAD::/48",
                "--duration",
                "2h",
                "--reason",
                "scanner",
                "--force",
            ],
        )
        .unwrap();
        assert_eq!(out, "blacklist: added 1, replaced 1\n");
        let request = server.join().unwrap().pop().unwrap();
        assert_eq!(request.request_line, "POST /v1/lists/blacklist HTTP/1.1");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["authorization"], "Bearer t");
        assert_eq!(
            serde_json::from_str::<Value>(&request.body).unwrap(),
            json!({
                "entries": [
                    {"net": "203.0.113.0/24", "duration": "2h", "reason": "scanner"},
                    {"net": "2001:db8:bad::/48", "duration": "2h", "reason": "scanner"},
                ],
                "force": true,
            })
        );
        // The body is what the server's own type accepts.
        serde_json::from_str::<AddRequest>(&request.body).unwrap();
    }

    #[test]
    fn remove_sends_delete_with_encoded_cidr() {
        let (api, server) = fake_api(vec![(200, r#"{"removed":"203.0.113.0/24"}"#.into())]);
        let out = execute_args(&api, None, &["remove", "blacklist", "203.0.113.0/24"]).unwrap();
        assert_eq!(out, "blacklist: removed 203.0.113.0/24\n");
        let request = server.join().unwrap().pop().unwrap();
        assert_eq!(
            request.request_line,
            "DELETE /v1/lists/blacklist/203.0.113.0%2F24 HTTP/1.1"
        );
    }

    #[test]
    fn report_posts_ip_and_reason() {
        let answer = ReportResponse {
            outcome: "recorded".into(),
            reports: Some(1),
            status: IpStatus {
                verdict: "pass".into(),
                list: None,
                prefix: None,
                reason: None,
                source: None,
                ..sample_ip_status()
            },
        };
        let (api, server) = fake_api(vec![(200, serde_json::to_string(&answer).unwrap())]);
        let out = execute_args(&api, None, &["report", "203.0.113.9", "--reason", "spam"]).unwrap();
        assert_eq!(out, format_report(&answer));
        assert!(
            out.starts_with("outcome   recorded\nreports   1\n"),
            "{out}"
        );
        let request = server.join().unwrap().pop().unwrap();
        assert_eq!(request.request_line, "POST /v1/report HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<ReportRequest>(&request.body).unwrap(),
            ReportRequest {
                ip: "203.0.113.9".into(),
                reason: Some("spam".into())
            }
        );
    }

    #[test]
    fn list_all_follows_the_cursor() {
        let page1 = ListPage {
            entries: vec![entry("203.0.113.0/24", None, "config", "config")],
            next_cursor: Some("next/page+1".into()),
        };
        let page2 = ListPage {
            entries: vec![entry("198.51.100.7/32", None, "api", "manual")],
            next_cursor: None,
        };
        let (api, server) = fake_api(vec![
            (200, serde_json::to_string(&page1).unwrap()),
            (200, serde_json::to_string(&page2).unwrap()),
        ]);
        let out =
            execute_args(&api, None, &["list", "blacklist", "--all", "--limit", "1"]).unwrap();
        assert_eq!(
            out,
            "\
NET              EXPIRES  SOURCE  REASON
203.0.113.0/24   never    config  config
198.51.100.7/32  never    api     manual
"
        );
        let lines: Vec<String> = server
            .join()
            .unwrap()
            .into_iter()
            .map(|r| r.request_line)
            .collect();
        assert_eq!(
            lines,
            [
                "GET /v1/lists/blacklist?limit=1 HTTP/1.1",
                "GET /v1/lists/blacklist?limit=1&cursor=next%2Fpage%2B1 HTTP/1.1",
            ]
        );
    }

    #[test]
    fn list_all_in_json_is_one_document() {
        let page1 = ListPage {
            entries: vec![entry("203.0.113.0/24", None, "config", "config")],
            next_cursor: Some("c".into()),
        };
        let page2 = ListPage {
            entries: vec![entry("198.51.100.7/32", None, "api", "manual")],
            next_cursor: None,
        };
        let (api, server) = fake_api(vec![
            (200, serde_json::to_string(&page1).unwrap()),
            (200, serde_json::to_string(&page2).unwrap()),
        ]);
        let out = execute_args(&api, None, &["list", "blacklist", "--all", "--json"]).unwrap();
        let merged: ListPage = serde_json::from_str(&out).unwrap();
        assert_eq!(merged.entries.len(), 2);
        assert_eq!(merged.next_cursor, None);
        let first = server.join().unwrap().remove(0);
        assert_eq!(
            first.request_line,
            format!("GET /v1/lists/blacklist?limit={ALL_PAGE_SIZE} HTTP/1.1")
        );
    }

    #[test]
    fn list_all_stops_on_a_repeated_cursor() {
        let page = ListPage {
            entries: vec![],
            next_cursor: Some("same".into()),
        };
        let body = serde_json::to_string(&page).unwrap();
        let (api, server) = fake_api(vec![(200, body.clone()), (200, body)]);
        let err = execute_args(&api, None, &["list", "blacklist", "--all"]).unwrap_err();
        assert!(matches!(err, ClientError::CursorLoop(_)), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn api_error_answers_become_one_line() {
        let body = r#"{"error":"would lock out","detail":"127.0.0.0/8 covers your own address 127.0.0.1; send \"force\": true to list it anyway","index":0}"#;
        let (api, server) = fake_api(vec![(409, body.into())]);
        let err = execute_args(&api, None, &["add", "blacklist", "127.0.0.0/8"]).unwrap_err();
        assert!(
            matches!(err, ClientError::Api { status: 409, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "would lock out: 127.0.0.0/8 covers your own address 127.0.0.1; \
             send \"force\": true to list it anyway (entry 0); use --force"
        );
        server.join().unwrap();
    }

    #[test]
    fn unauthorized_without_a_token_says_how_to_give_one() {
        let body = r#"{"error":"unauthorized","detail":"missing bearer token"}"#;
        let (api, server) = fake_api(vec![(401, body.into()), (401, body.into())]);
        let err = execute_args(&api, None, &["status"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unauthorized: missing bearer token; no token given: use --token-file FILE or set IPGUARD_TOKEN"
        );
        let err = execute_args(&api, Some("wrong"), &["status"]).unwrap_err();
        assert_eq!(err.to_string(), "unauthorized: missing bearer token");
        server.join().unwrap();
    }

    #[test]
    fn non_api_error_bodies_are_reported_with_their_status() {
        let (api, server) = fake_api(vec![(413, "length limit exceeded".into())]);
        let err = execute_args(&api, None, &["add", "blacklist", "203.0.113.0/24"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the ipguard API at {api} answered HTTP 413: length limit exceeded")
        );
        server.join().unwrap();
    }

    #[test]
    fn unexpected_success_bodies_are_a_decode_error() {
        let (api, server) = fake_api(vec![(200, "{}".into())]);
        let err = execute_args(&api, None, &["status"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unexpected answer from the ipguard API to /v1/status: missing field"),
            "{err}"
        );
        server.join().unwrap();
    }

    #[test]
    fn unreachable_api_says_so() {
        // A port that was just free: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = format!("http://127.0.0.1:{port}");
        let err = execute_args(&api, None, &["status"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach the ipguard API at {api}: connection refused (is the daemon running?)")
        );
    }

    // ---- openapi.yaml: the documented contract matches the code. ----

    fn openapi() -> serde_norway::Value {
        serde_norway::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml parses")
    }

    const HTTP_METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Path template → documented methods.
    fn documented_operations() -> BTreeMap<String, BTreeSet<String>> {
        let doc = openapi();
        let paths = doc["paths"].as_mapping().expect("paths is a mapping");
        paths
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_mapping()
                    .unwrap()
                    .keys()
                    .filter_map(|k| k.as_str())
                    .filter(|k| HTTP_METHODS.contains(k))
                    .map(str::to_owned)
                    .collect();
                (path.as_str().unwrap().to_owned(), methods)
            })
            .collect()
    }

    #[test]
    fn openapi_documents_exactly_the_api_paths() {
        let doc = openapi();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
        let expected: BTreeMap<String, BTreeSet<String>> = [
            ("/healthz", &["get"][..]),
            ("/metrics", &["get"]),
            ("/v1/status", &["get"]),
            ("/v1/ips/{ip}", &["get"]),
            ("/v1/lists/{list}", &["get", "post"]),
            ("/v1/lists/{list}/{net}", &["delete"]),
            ("/v1/report", &["post"]),
        ]
        .into_iter()
        .map(|(p, ms)| (p.to_owned(), ms.iter().map(|m| (*m).to_owned()).collect()))
        .collect();
        assert_eq!(documented_operations(), expected);
        // Bearer auth everywhere except the probes.
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"].as_str(),
            Some("bearer")
        );
        assert!(doc["security"][0]["bearerAuth"].is_sequence());
        for open in ["/healthz", "/metrics"] {
            assert_eq!(
                doc["paths"][open]["get"]["security"]
                    .as_sequence()
                    .map(Vec::len),
                Some(0),
                "{open} needs no token"
            );
        }
    }

    /// Every call the CLI makes matches a documented path template and method.
    #[test]
    fn cli_calls_are_documented_in_openapi() {
        let documented = documented_operations();
        let calls = [
            Call::status(),
            Call::ip("2001:db8::1".parse().unwrap()),
            Call::list(ListKind::Graylist, Some(5), Some("c")),
            Call::add(
                ListKind::Whitelist,
                &AddRequest {
                    entries: vec![],
                    force: false,
                },
            ),
            Call::remove(ListKind::Blacklist, &net("203.0.113.0/24")),
            Call::report(&ReportRequest {
                ip: "192.0.2.1".into(),
                reason: None,
            }),
        ];
        for call in calls {
            let path = call.path.split('?').next().unwrap();
            let segments: Vec<&str> = path.split('/').collect();
            let matched = documented.iter().find(|(template, _)| {
                let t: Vec<&str> = template.split('/').collect();
                t.len() == segments.len()
                    && t.iter()
                        .zip(&segments)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            });
            let (template, methods) =
                matched.unwrap_or_else(|| panic!("{} is not documented", call.path));
            assert!(
                methods.contains(&call.method.as_str().to_ascii_lowercase()),
                "{} {template} is not documented",
                call.method.as_str()
            );
        }
    }

    /// A schema's properties and required fields, `allOf` and `$ref` resolved.
    fn schema_fields(
        schemas: &serde_norway::Value,
        schema: &serde_norway::Value,
    ) -> (BTreeMap<String, serde_norway::Value>, BTreeSet<String>) {
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.rsplit('/').next().unwrap();
            return schema_fields(schemas, &schemas[name]);
        }
        let mut properties = BTreeMap::new();
        let mut required = BTreeSet::new();
        for part in schema["allOf"].as_sequence().into_iter().flatten() {
            let (p, r) = schema_fields(schemas, part);
            properties.extend(p);
            required.extend(r);
        }
        for (k, v) in schema["properties"].as_mapping().into_iter().flatten() {
            properties.insert(k.as_str().unwrap().to_owned(), v.clone());
        }
        for r in schema["required"].as_sequence().into_iter().flatten() {
            required.insert(r.as_str().unwrap().to_owned());
        }
        (properties, required)
    }

    /// For each schema: the JSON of a value with every `Option` set, the JSON of one
    /// with every `Option` unset, and the fields the server requires in a request
    /// (for answers: every field serde writes).
    fn contract_samples() -> Vec<(&'static str, Value, Value, Option<&'static [&'static str]>)> {
        let full_status = IpStatus {
            expires: Some("2030-01-01T00:00:00Z".into()),
            retry_after: Some(5),
            ..sample_ip_status()
        };
        let empty_status = IpStatus {
            list: None,
            prefix: None,
            reason: None,
            source: None,
            ..sample_ip_status()
        };
        let page = |cursor: Option<&str>| ListPage {
            entries: vec![entry("203.0.113.0/24", None, "config", "config")],
            next_cursor: cursor.map(Into::into),
        };
        let status = Status {
            interface: "eth0".into(),
            xdp_mode: "skb".into(),
            uptime_seconds: 1,
            entries: BTreeMap::new(),
            tracked_sources: 0,
            verdicts: BTreeMap::new(),
            lists: BTreeMap::new(),
            maps: BTreeMap::new(),
        };
        let report = |status: IpStatus, reports: Option<u32>| ReportResponse {
            outcome: "recorded".into(),
            reports,
            status,
        };
        vec![
            (
                "Health",
                to(&crate::api::types::Health {
                    status: "ok".into(),
                }),
                to(&crate::api::types::Health {
                    status: "ok".into(),
                }),
                None,
            ),
            ("Traffic", to(&traffic(1, 2)), to(&traffic(1, 2)), None),
            (
                "MapFill",
                to(&MapFill::default()),
                to(&MapFill::default()),
                None,
            ),
            ("Status", to(&status), to(&status), None),
            (
                "IpCounters",
                to(&IpCounters::default()),
                to(&IpCounters::default()),
                None,
            ),
            ("IpStatus", to(&full_status), to(&empty_status), None),
            (
                "ListEntryView",
                to(&entry("a", Some("b"), "c", "d")),
                to(&entry("a", None, "c", "d")),
                None,
            ),
            ("ListPage", to(&page(Some("c"))), to(&page(None)), None),
            (
                "AddEntry",
                to(&AddEntry {
                    net: "a".into(),
                    duration: Some("2h".into()),
                    reason: Some("r".into()),
                }),
                to(&AddEntry {
                    net: "a".into(),
                    duration: None,
                    reason: None,
                }),
                Some(&["net"]),
            ),
            (
                "AddRequest",
                to(&AddRequest {
                    entries: vec![],
                    force: true,
                }),
                to(&AddRequest {
                    entries: vec![],
                    force: false,
                }),
                Some(&["entries"]),
            ),
            (
                "AddResponse",
                to(&AddResponse {
                    added: 1,
                    replaced: 0,
                }),
                to(&AddResponse {
                    added: 1,
                    replaced: 0,
                }),
                None,
            ),
            (
                "RemoveResponse",
                to(&RemoveResponse {
                    removed: "a".into(),
                }),
                to(&RemoveResponse {
                    removed: "a".into(),
                }),
                None,
            ),
            (
                "ReportRequest",
                to(&ReportRequest {
                    ip: "a".into(),
                    reason: Some("r".into()),
                }),
                to(&ReportRequest {
                    ip: "a".into(),
                    reason: None,
                }),
                Some(&["ip"]),
            ),
            (
                "ReportResponse",
                to(&report(full_status, Some(2))),
                to(&report(empty_status, None)),
                None,
            ),
            (
                "ApiError",
                to(&ApiError {
                    error: "e".into(),
                    detail: "d".into(),
                    index: Some(0),
                }),
                to(&ApiError {
                    error: "e".into(),
                    detail: "d".into(),
                    index: None,
                }),
                Some(&["error", "detail"]),
            ),
        ]
    }

    fn to<T: serde::Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn openapi_schemas_match_the_types() {
        let doc = openapi();
        let schemas = &doc["components"]["schemas"];
        let samples = contract_samples();
        let sampled: BTreeSet<&str> = samples.iter().map(|(name, ..)| *name).collect();
        let documented: BTreeSet<&str> = schemas
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            documented, sampled,
            "every schema has a sample and vice versa"
        );
        for (name, full, empty, request_required) in samples {
            let (properties, required) = schema_fields(schemas, &schemas[name]);
            let full_keys: BTreeSet<String> = full.as_object().unwrap().keys().cloned().collect();
            let documented_keys: BTreeSet<String> = properties.keys().cloned().collect();
            assert_eq!(documented_keys, full_keys, "{name}: properties");
            let expected_required: BTreeSet<String> = match request_required {
                Some(fields) => fields.iter().map(|f| (*f).to_owned()).collect(),
                // An answer always has the fields serde writes when every Option is unset.
                None => empty.as_object().unwrap().keys().cloned().collect(),
            };
            assert_eq!(required, expected_required, "{name}: required");
            for (field, schema) in &properties {
                let nullable = schema["nullable"].as_bool().unwrap_or(false);
                let null_in_empty = empty.get(field).is_some_and(Value::is_null);
                assert_eq!(nullable, null_in_empty, "{name}.{field}: nullable");
            }
        }
    }
}
