//! The REST API (axum): status, explain, list administration, reports, metrics.
//!
//! Handlers lock the [`Controller`] for the duration of one request; the daemon's event
//! loop takes the same lock, so every map write has one owner at a time. Bad input is
//! answered with a 4xx and an [`types::ApiError`] naming the problem, and changes nothing.

pub mod types;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::{
        rejection::JsonRejection, ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request,
        State,
    },
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Router,
};
use ipnet::IpNet;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use self::types::{
    AddRequest, AddResponse, ApiError, Health, RemoveResponse, ReportRequest, ReportResponse,
};
use crate::{
    controller::{outcome_name, Controller, Failure, FailureKind},
    dataplane::Backend,
    duration::{parse_lifetime, Lifetime},
    lists::ListKind,
    metrics,
    net::parse_net,
    policy::engine::{Origin, Outcome},
};

/// Shared state of the handlers.
pub struct AppState<B: Backend> {
    pub ctl: Arc<Mutex<Controller<B>>>,
    /// Bearer token every `/v1` call must carry; `None`: no authentication.
    pub token: Option<String>,
    /// Woken after every change, so the daemon's loop re-reads the next expiry time.
    pub changed: Arc<tokio::sync::Notify>,
}

impl<B: Backend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            ctl: self.ctl.clone(),
            token: self.token.clone(),
            changed: self.changed.clone(),
        }
    }
}

impl<B: Backend> AppState<B> {
    fn lock(&self) -> Result<MutexGuard<'_, Controller<B>>, AppError> {
        self.ctl.lock().map_err(|_| {
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "the controller lock is poisoned",
            )
        })
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
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::<B>));
    Router::new()
        .route(
            "/healthz",
            get(|| async {
                axum::Json(Health {
                    status: "ok".into(),
                })
            }),
        )
        .route("/metrics", get(metrics_text::<B>))
        .nest("/v1", v1)
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, "not found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(max_body))
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

impl From<Failure> for AppError {
    fn from(f: Failure) -> Self {
        let status = match f.kind {
            FailureKind::Invalid => StatusCode::BAD_REQUEST,
            FailureKind::NotFound => StatusCode::NOT_FOUND,
            FailureKind::Conflict => StatusCode::CONFLICT,
            FailureKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FailureKind::Internal => {
                tracing::error!(error = %f, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self {
            status,
            body: ApiError {
                error: f.error.into(),
                detail: f.detail,
                index: f.index,
            },
        }
    }
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
    next.run(req).await
}

fn list_kind(name: &str) -> Result<ListKind, AppError> {
    name.parse::<ListKind>()
        .map_err(|e| AppError::new(StatusCode::NOT_FOUND, "unknown list", e))
}

async fn status<B: Backend>(
    State(st): State<AppState<B>>,
) -> Result<axum::Json<types::Status>, AppError> {
    Ok(axum::Json(st.lock()?.status()?.0))
}

async fn metrics_text<B: Backend>(State(st): State<AppState<B>>) -> Result<Response, AppError> {
    let (status, lost, kept) = {
        let ctl = st.lock()?;
        let (s, lost) = ctl.status()?;
        (s, lost, ctl.metrics.clone())
    };
    let text = metrics::render(&status, lost, &kept);
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

async fn explain<B: Backend>(
    State(st): State<AppState<B>>,
    Path(ip): Path<String>,
) -> Result<axum::Json<types::IpStatus>, AppError> {
    let ip = parse_ip(&ip)?;
    Ok(axum::Json(st.lock()?.explain(ip)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Largest page `GET /v1/lists/{list}` returns.
pub const MAX_PAGE: usize = 10_000;

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
        Some(c) => {
            Some(parse_net(c).map_err(|e| AppError::bad("invalid query", format!("cursor: {e}")))?)
        }
    };
    Ok(axum::Json(st.lock()?.list_page(list, limit, cursor)))
}

/// The caller as an address (IPv4-mapped IPv6 callers as IPv4).
fn caller(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether listing `net` would cut off the API's own client or loopback.
fn locks_out(net: IpNet, client: IpAddr) -> Option<String> {
    if net.contains(&client) {
        return Some(format!("{net} covers your own address {client}"));
    }
    let loopback: [IpNet; 2] = [
        IpNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8)
            .expect("valid")
            .trunc(),
        IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    loopback
        .iter()
        .find(|lo| lo.contains(&net) || net.contains(*lo))
        .map(|lo| format!("{net} overlaps loopback {lo}"))
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
        if list != ListKind::Whitelist && !req.force {
            if let Some(why) = locks_out(net, client) {
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "would lock out",
                    format!("{why}; send \"force\": true to list it anyway"),
                )
                .at(i));
            }
        }
        let reason = e
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "api".into());
        if reason.len() > 1024 {
            return Err(AppError::bad("invalid entry", "reason: longer than 1024 bytes").at(i));
        }
        parsed.push((net, ttl, reason));
    }
    let by = format!("api:{client}");
    let (added, replaced) = st.lock()?.add_entries(list, &parsed, Origin::Api, &by)?;
    st.changed.notify_one();
    tracing::info!(client = %client, list = list.name(), added, replaced, "entries added through the API");
    Ok(axum::Json(AddResponse { added, replaced }))
}

async fn remove<B: Backend>(
    State(st): State<AppState<B>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((list, net)): Path<(String, String)>,
) -> Result<axum::Json<RemoveResponse>, AppError> {
    let list = list_kind(&list)?;
    let net = parse_net(&net).map_err(|e| AppError::bad("invalid entry", format!("net: {e}")))?;
    match st
        .lock()?
        .remove_entry(list, net, &format!("api:{}", caller(peer)))?
    {
        Some(_) => {
            tracing::info!(client = %caller(peer), list = list.name(), net = %net, "entry removed through the API");
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
    let (outcome, status) = st.lock()?.report(ip, reason)?;
    st.changed.notify_one();
    let reports = match outcome {
        Outcome::Recorded { reports } => Some(reports),
        _ => None,
    };
    Ok(axum::Json(ReportResponse {
        outcome: outcome_name(&outcome).into(),
        reports,
        status,
    }))
}

#[cfg(test)]
mod tests;
