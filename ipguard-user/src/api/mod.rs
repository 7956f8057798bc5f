//! The REST API (axum): status, explain, list administration, reports, metrics.
//!
//! Handlers lock the [`Controller`] for the duration of one request; the daemon's event
//! loop takes the same lock, so every map write has one owner at a time. Bad input is
//! answered with a 4xx and an [`types::ApiError`] naming the problem, and changes nothing.

mod convert;
mod mode;
pub mod serve;
pub mod types;
pub mod ui;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::{
        rejection::JsonRejection, ConnectInfo, DefaultBodyLimit, FromRequest, Query, Request, State,
    },
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Router,
};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

pub use self::types::MAX_PAGE;
use self::types::{
    AddRequest, AddResponse, ApiError, Health, RemoveResponse, ReportRequest, ReportResponse,
};
use crate::{
    controller::{Controller, ControllerError},
    dataplane::{Backend, TableError},
    duration::{parse_lifetime, Lifetime},
    metrics,
    model::{ListKind, Now, Origin, Proto},
    net::{parse_net, parse_position, NetError},
    policy::engine::Outcome,
};

/// Shared state of the handlers.
pub struct AppState<B: Backend> {
    pub ctl: Arc<Mutex<Controller<B>>>,
    /// Bearer token every `/v1` call must carry; `None`: no authentication.
    pub token: Option<String>,
    /// Woken after every change, so the daemon's loop re-reads the next expiry time.
    pub changed: Arc<tokio::sync::Notify>,
    /// Where `POST /v1/reload` asks the daemon to reload its config; `None`: not offered.
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
    /// `/metrics` needs the token too.
    pub metrics_auth: bool,
    /// Reports counted across the fleet (`[cluster]`); `None`: counted here only.
    pub fleet_reports: Option<crate::cluster::FleetReports>,
    /// The feed task, for `POST /v1/feeds/{name}/accept`; `None`: no feeds.
    pub feeds: Option<tokio::sync::mpsc::Sender<crate::daemon::feeds_task::FeedCommand>>,
}

/// A reload asked through the API: the daemon answers with the settings that need a
/// restart, or why nothing was reloaded.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<Vec<&'static str>, String>>;

impl<B: Backend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            ctl: self.ctl.clone(),
            token: self.token.clone(),
            changed: self.changed.clone(),
            reload: self.reload.clone(),
            metrics_auth: self.metrics_auth,
            feeds: self.feeds.clone(),
            fleet_reports: self.fleet_reports.clone(),
        }
    }
}

/// Immediate retries of a held controller lock before waiting a timer tick between them.
const LOCK_SPINS: u32 = 64;

impl<B: Backend> AppState<B> {
    /// Locks the controller (a poisoned lock is taken over, as the daemon does: nothing on
    /// a controller path panics, and a change is a transaction of the policy). While a
    /// blocking thread holds it (a fleet resync applies a chunk for a second or more), the
    /// request waits without holding the runtime thread, so the event loop and the link
    /// to the fleet go on.
    async fn lock(&self) -> Result<MutexGuard<'_, Controller<B>>, AppError> {
        let mut attempt = 0u32;
        loop {
            match self.ctl.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    self.ctl.clear_poison();
                    return Ok(p.into_inner());
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            // Most holds are short (one change): try again at once a few times, then
            // every millisecond (a timer tick) so that a long hold costs no CPU.
            if attempt < LOCK_SPINS {
                attempt += 1;
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }

    /// Like [`AppState::lock`], giving up after `wait` (a health check must answer).
    async fn lock_within(
        &self,
        wait: std::time::Duration,
    ) -> Option<MutexGuard<'_, Controller<B>>> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            // The guard must not live across the sleep (it is not Send).
            let busy = match self.ctl.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    self.ctl.clear_poison();
                    return Some(p.into_inner());
                }
                Err(std::sync::TryLockError::WouldBlock) => true,
            };
            if busy && tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// The API's router. `max_body` bounds request bodies (413 beyond).
pub fn router<B: Backend>(state: AppState<B>, max_body: usize) -> Router {
    let v1 = Router::new()
        .route("/status", get(status::<B>))
        .route("/ips/{ip}", get(explain::<B>))
        .route("/lists/{list}", get(list::<B>).post(add::<B>))
        .route("/lists/{list}/{net}", delete(remove::<B>))
        .route("/report", post(report::<B>))
        .route("/reload", post(reload::<B>))
        .route("/mode", get(mode::get_mode::<B>).put(mode::put_mode::<B>))
        .route("/cluster", get(cluster::<B>))
        .route("/offenders", get(offenders::<B>))
        .route("/feeds", get(feeds::<B>))
        .route("/feeds/{name}/accept", post(feed_accept::<B>))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::<B>));
    let metrics = Router::new().route("/metrics", get(metrics_text::<B>));
    let metrics = if state.metrics_auth {
        metrics.route_layer(middleware::from_fn_with_state(state.clone(), auth::<B>))
    } else {
        metrics
    };
    Router::new()
        .route("/healthz", get(healthz::<B>))
        .merge(ui::routes())
        .merge(metrics)
        .nest("/v1", v1)
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, "not found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                "this endpoint does not take that method (see openapi.yaml)",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(limits))
        .with_state(state)
}

/// An error answer: status and JSON body.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    body: ApiError,
}

impl AppError {
    fn new(status: StatusCode, error: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                error: error.into(),
                detail: detail.into(),
                index: None,
            },
        }
    }

    fn at(mut self, index: usize) -> Self {
        self.body.index = Some(index);
        self
    }

    fn bad(error: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, detail)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<ControllerError> for AppError {
    fn from(e: ControllerError) -> Self {
        let detail = e.to_string();
        match e {
            ControllerError::Lockout { index, why } => AppError::new(
                StatusCode::CONFLICT,
                "would lock out",
                format!("{why}; send \"force\": true to list it anyway"),
            )
            .at(index),
            ControllerError::ConfigEntry { .. } => {
                AppError::new(StatusCode::CONFLICT, "config entry", detail)
            }
            // 507: the request was fine; the daemon has no room for it now.
            ControllerError::Table(TableError::Full { .. }) => {
                AppError::new(StatusCode::INSUFFICIENT_STORAGE, "table full", detail)
            }
            ControllerError::Persist(_) => {
                AppError::new(StatusCode::INSUFFICIENT_STORAGE, "not persisted", detail)
            }
            _ => {
                tracing::error!(error = %detail, "API request failed");
                AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", detail)
            }
        }
    }
}

/// Path extractor whose rejections (a segment that is not UTF-8 once decoded) are
/// [`AppError`]s.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for Path<T>
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(AppError::bad(
                "invalid path",
                crate::model::excerpt(&r.body_text()),
            )),
        }
    }
}

/// Longest reason accepted (entries and reports), in characters as JSON Schema counts them.
pub const MAX_REASON: usize = 1024;
/// Entries one `POST /v1/lists/{list}` takes at most: a larger load goes in several
/// requests, so that no single one holds the controller for long.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest request target accepted (414 beyond).
const MAX_URI: usize = 8 << 10;
/// Largest request head (headers) accepted (431 beyond).
const MAX_HEADERS: usize = 32 << 10;

/// 414 and 431 with an [`ApiError`] body, before anything else looks at the request.
async fn limits(req: Request, next: Next) -> Response {
    let uri = req.uri().to_string().len();
    if uri > MAX_URI {
        return AppError::new(
            StatusCode::URI_TOO_LONG,
            "uri too long",
            format!("the request target has {uri} bytes, at most {MAX_URI} are read"),
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADERS {
        return AppError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers too large",
            format!("the headers have {headers} bytes, at most {MAX_HEADERS} are read"),
        )
        .into_response();
    }
    next.run(req).await
}

/// JSON body extractor whose rejections are [`AppError`]s (malformed JSON, wrong fields,
/// too large, wrong content type).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    /// Parses with plain serde_json first: axum's extractor tracks the path of every value
    /// (for its error messages), which is a large share of a 10k-entry batch's cost. A body
    /// that fails, or an unusual content type, goes through axum's extractor for the exact
    /// same acceptance and rejections.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| json_rejection(JsonRejection::from(e)))?;
        let plain_json = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("application/json"));
        if plain_json {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                return Ok(Json(v));
            }
        }
        let mut req = Request::new(axum::body::Body::from(bytes));
        *req.headers_mut() = headers;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> AppError {
    let status = r.status();
    let detail = r.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(status, "body too large", detail),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            AppError::new(status, "unsupported content type", detail)
        }
        _ => AppError::bad("malformed JSON", detail),
    }
}

async fn auth<B: Backend>(
    State(st): State<AppState<B>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant-time: the comparison must not tell how much of a guess was right.
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required",
            )
            .into_response();
        }
    }
    // Whoever administers the daemon is protected from its automatic bans for a while.
    if let Ok(mut ctl) = st.lock().await {
        ctl.note_api_client(caller(peer), Now::read());
    }
    next.run(req).await
}

fn list_kind(name: &str) -> Result<ListKind, AppError> {
    name.parse::<ListKind>()
        .map_err(|e| AppError::new(StatusCode::NOT_FOUND, "unknown list", e.to_string()))
}

/// 200 `ok` (or `degraded`, with the problems, while it still filters); 503 when the XDP
/// program is known not to filter or the controller does not answer within 2 s.
async fn healthz<B: Backend>(State(st): State<AppState<B>>) -> Response {
    let Some(ctl) = st.lock_within(std::time::Duration::from_secs(2)).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable".into(),
                problems: vec!["the controller did not answer within 2 s".into()],
            }),
        )
            .into_response();
    };
    let now = Now::read();
    let problems: Vec<String> = ctl
        .health()
        .problems(now.wall)
        .iter()
        .map(|(k, p)| format!("{k}: {}", p.detail))
        .collect();
    let filtering = ctl.health().filtering();
    drop(ctl);
    let (code, status) = match (filtering, problems.is_empty()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "ok"),
        (true, false) => (StatusCode::OK, "degraded"),
    };
    (
        code,
        axum::Json(Health {
            status: status.into(),
            problems,
        }),
    )
        .into_response()
}

async fn reload<B: Backend>(
    State(st): State<AppState<B>>,
) -> Result<axum::Json<types::ReloadResponse>, AppError> {
    let Some(tx) = st.reload.clone() else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not found",
            "this server cannot reload a config",
        ));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let unavailable = || {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the daemon is stopping",
        )
    };
    tx.send(reply).await.map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(restart) => {
            st.changed.notify_one();
            Ok(axum::Json(types::ReloadResponse {
                reloaded: true,
                restart_needed: restart.into_iter().map(str::to_owned).collect(),
            }))
        }
        Err(why) => Err(AppError::new(StatusCode::CONFLICT, "not reloaded", why)),
    }
}

async fn status<B: Backend>(
    State(st): State<AppState<B>>,
) -> Result<axum::Json<types::Status>, AppError> {
    let report = st.lock().await?.status(Now::read())?;
    Ok(axum::Json(types::Status::from(&report)))
}

async fn cluster<B: Backend>(
    State(st): State<AppState<B>>,
) -> Result<axum::Json<types::ClusterView>, AppError> {
    Ok(axum::Json(types::ClusterView::from(
        st.lock().await?.fleet(),
    )))
}

async fn feeds<B: Backend>(
    State(st): State<AppState<B>>,
) -> Result<axum::Json<types::FeedList>, AppError> {
    Ok(axum::Json(types::FeedList::from(
        st.lock().await?.feed_status(),
    )))
}

async fn feed_accept<B: Backend>(
    State(st): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<axum::Json<types::FeedView>, AppError> {
    let not_found = || {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("no feed named {:?}", crate::model::excerpt(&name)),
        )
    };
    if !st
        .lock()
        .await?
        .feed_status()
        .iter()
        .any(|f| f.name == name)
    {
        return Err(not_found());
    }
    let tx = st.feeds.clone().ok_or_else(not_found)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let unavailable = || {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the feed task is not running",
        )
    };
    tx.send(crate::daemon::feeds_task::FeedCommand::Accept(
        name.clone(),
        reply,
    ))
    .await
    .map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(()) => {
            st.changed.notify_one();
            let ctl = st.lock().await?;
            let status = ctl
                .feed_status()
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(not_found)?;
            Ok(axum::Json(types::FeedView::from(status)))
        }
        Err(why) => Err(AppError::new(StatusCode::CONFLICT, "not accepted", why)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffendersQuery {
    limit: Option<usize>,
}

async fn offenders<B: Backend>(
    State(st): State<AppState<B>>,
    query: Result<Query<OffendersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<types::OffenderList>, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad("invalid query", e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=types::MAX_OFFENDERS).contains(&limit) {
        return Err(AppError::bad(
            "invalid query",
            format!(
                "limit must be between 1 and {}, got {limit}",
                types::MAX_OFFENDERS
            ),
        ));
    }
    let top = st.lock().await?.offenders(limit, Now::read())?;
    Ok(axum::Json(types::OffenderList::from(top.as_slice())))
}

async fn metrics_text<B: Backend>(State(st): State<AppState<B>>) -> Result<Response, AppError> {
    let text = {
        let ctl = st.lock().await?;
        let report = ctl.status(Now::read())?;
        metrics::render(&report, ctl.telemetry(), ctl.fleet(), ctl.feed_status())
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn parse_ip(s: &str) -> Result<IpAddr, AppError> {
    s.parse::<IpAddr>().map_err(|_| {
        AppError::bad(
            "invalid address",
            format!("{s:?} is not an IPv4 or IPv6 address"),
        )
    })
}

/// `GET /v1/ips/{ip}?packet=tcp/22`: the verdict of one packet of the address.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PacketQuery {
    packet: Option<String>,
}

impl PacketQuery {
    /// The packet to explain, if any: `tcp`, `udp` or `icmp`, with `/PORT` for TCP and
    /// UDP; an error names what is wrong.
    fn packet(&self) -> Result<Option<(Proto, u16)>, AppError> {
        let Some(text) = &self.packet else {
            return Ok(None);
        };
        let bad = |why: String| {
            AppError::bad(
                "invalid query",
                format!(
                    "packet: {:?} {why} (tcp, udp or icmp, with /PORT for tcp and udp: tcp/22)",
                    crate::model::excerpt(text)
                ),
            )
        };
        let (proto, port) = match text.split_once('/') {
            Some((p, port)) => (p, Some(port)),
            None => (text.as_str(), None),
        };
        let proto = proto
            .parse::<Proto>()
            .map_err(|_| bad("names no protocol".into()))?;
        let port = match port {
            None => 0,
            Some(_) if proto == Proto::Icmp => return Err(bad("gives icmp a port".into())),
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 && !p.starts_with('+') => port,
                _ => return Err(bad("has no port from 1 to 65535".into())),
            },
        };
        Ok(Some((proto, port)))
    }
}

async fn explain<B: Backend>(
    State(st): State<AppState<B>>,
    Path(ip): Path<String>,
    query: Result<Query<PacketQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<types::IpStatus>, AppError> {
    let ip = parse_ip(&ip)?;
    let Query(query) = query.map_err(|e| AppError::bad("invalid query", e.body_text()))?;
    let packet = query.packet()?;
    let x = st.lock().await?.explain_packet(ip, packet, Now::read())?;
    Ok(axum::Json(types::IpStatus::from(&x)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// Only entries whose prefix or reason contains this (case-insensitive).
    q: Option<String>,
}

/// Longest `q` a list search takes.
const MAX_SEARCH: usize = 256;

async fn list<B: Backend>(
    State(st): State<AppState<B>>,
    Path(list): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<types::ListPage>, AppError> {
    let list = list_kind(&list)?;
    let Query(q) = query.map_err(|e| AppError::bad("invalid query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::bad(
            "invalid query",
            format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            parse_position(c)
                .map_err(|e| AppError::bad("invalid query", format!("cursor: {e}")))?,
        ),
    };
    let search = q.q.as_deref().filter(|q| !q.is_empty());
    if let Some(q) = search.filter(|q| q.len() > MAX_SEARCH) {
        return Err(AppError::bad(
            "invalid query",
            format!("q must be at most {MAX_SEARCH} bytes, got {}", q.len()),
        ));
    }
    let page = st.lock().await?.list_page(list, limit, cursor, search);
    Ok(axum::Json(types::ListPage::from(page)))
}

/// The caller as an address (IPv4-mapped IPv6 callers as IPv4).
fn caller(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

async fn add<B: Backend>(
    State(st): State<AppState<B>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(list): Path<String>,
    Json(req): Json<AddRequest>,
) -> Result<axum::Json<AddResponse>, AppError> {
    let list = list_kind(&list)?;
    if req.entries.is_empty() {
        return Err(AppError::bad("invalid request", "entries is empty"));
    }
    if req.entries.len() > MAX_ENTRIES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many entries",
            format!(
                "{} entries; at most {MAX_ENTRIES} are taken per request: send the rest in further requests",
                req.entries.len()
            ),
        ));
    }
    let client = caller(peer);
    // Validate everything first: one bad entry and nothing is applied.
    let mut parsed = Vec::with_capacity(req.entries.len());
    let mut seen = std::collections::HashSet::with_capacity(req.entries.len());
    for (i, e) in req.entries.iter().enumerate() {
        let net = parse_net(&e.net)
            .map_err(|err| AppError::bad("invalid entry", format!("net: {err}")).at(i))?;
        if !seen.insert(net) {
            return Err(AppError::bad(
                "invalid entry",
                format!("net: {net} appears twice in this request"),
            )
            .at(i));
        }
        let ttl = match e.duration.as_deref() {
            None => None,
            Some(d) => match parse_lifetime(d)
                .map_err(|err| AppError::bad("invalid entry", format!("duration: {err}")).at(i))?
            {
                Lifetime::For(d) => Some(d),
                Lifetime::Forever => None,
            },
        };
        let reason = e
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "api".into());
        if reason.chars().count() > MAX_REASON {
            return Err(AppError::bad(
                "invalid entry",
                format!("reason: longer than {MAX_REASON} characters"),
            )
            .at(i));
        }
        parsed.push((net, ttl, reason));
    }
    let by = format!("api:{client}");
    let (added, replaced) = {
        let mut ctl = st.lock().await?;
        let now = Now::read();
        // The caller itself is protected from here on (and needs force to list itself).
        ctl.note_api_client(client, now);
        ctl.add_entries(list, &parsed, Origin::Api, &by, req.force, now)?
    };
    st.changed.notify_one();
    tracing::info!(client = %client, list = list.as_str(), added, replaced, "entries added through the API");
    Ok(axum::Json(AddResponse { added, replaced }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn remove<B: Backend>(
    State(st): State<AppState<B>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((list, net)): Path<(String, String)>,
    query: Result<Query<ForceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<RemoveResponse>, AppError> {
    let list = list_kind(&list)?;
    let net = parse_net(&net).map_err(|e| match e {
        // Well-formed, so not a bad request: no entry can have host bits set.
        NetError::HostBitsSet { .. } => {
            AppError::new(StatusCode::NOT_FOUND, "not listed", e.to_string())
        }
        e => AppError::bad("invalid entry", format!("net: {e}")),
    })?;
    let Query(q) = query.map_err(|e| AppError::bad("invalid query", e.body_text()))?;
    let removed = st.lock().await?.remove_entry(
        list,
        net,
        &format!("api:{}", caller(peer)),
        q.force,
        Now::read(),
    )?;
    match removed {
        Some(_) => {
            tracing::info!(client = %caller(peer), list = list.as_str(), net = %net, "entry removed through the API");
            Ok(axum::Json(RemoveResponse {
                removed: net.to_string(),
            }))
        }
        None => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not listed",
            format!("{net} is not on the {list}"),
        )),
    }
}

async fn report<B: Backend>(
    State(st): State<AppState<B>>,
    Json(req): Json<ReportRequest>,
) -> Result<axum::Json<ReportResponse>, AppError> {
    let ip = parse_ip(&req.ip)
        .map_err(|e| AppError::bad("invalid report", format!("ip: {}", e.body.detail)))?;
    let reason = req
        .reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "reported".into());
    if reason.chars().count() > MAX_REASON {
        return Err(AppError::bad(
            "invalid report",
            format!("reason: longer than {MAX_REASON} characters"),
        ));
    }
    let window = st.lock().await?.fleet_report_window();
    let fleet = match (&st.fleet_reports, window) {
        (Some(r), Some(w)) => r.count(ip, w, Now::read().wall).await,
        _ => None,
    };
    let (outcome, x) = st.lock().await?.report(ip, reason, fleet, Now::read())?;
    if let (Some(r), Outcome::Banned { .. }) = (&st.fleet_reports, &outcome) {
        if fleet.is_some() {
            r.clear(ip).await;
        }
    }
    st.changed.notify_one();
    let reports = match outcome {
        Outcome::Recorded { reports } => Some(reports),
        _ => None,
    };
    Ok(axum::Json(ReportResponse {
        outcome: outcome.as_str().into(),
        reports,
        status: types::IpStatus::from(&x),
    }))
}

#[cfg(test)]
mod tests;
