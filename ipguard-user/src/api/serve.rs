//! Serving the router over HTTP/1.1 with the limits a daemon under attack needs. A client
//! must send a request's headers within [`HEADER_TIMEOUT`] (idle keep-alive time included),
//! and at most [`MAX_CONNECTIONS`] connections are open: past that, a new connection
//! closes the oldest one that is not in the middle of a request. Thousands of half-open or
//! idle connections therefore cannot keep an operator's call out: it is served as soon as
//! it has sent its headers.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::ConnectInfo, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Notify};
use tower::ServiceExt as _;

/// Time a client has to send a request's headers, idle keep-alive time included.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most (one more, for a moment, while the oldest closes).
pub const MAX_CONNECTIONS: usize = 1024;

/// One open connection.
struct Conn {
    /// A request is being handled: not to be closed for room.
    busy: AtomicBool,
    close: Notify,
}

/// Open connections, oldest first (by accept number).
type Open = Arc<Mutex<BTreeMap<u64, Arc<Conn>>>>;

/// Makes room for one more connection: closes the oldest idle or half-open one if the
/// limit is reached. Returns whether one was closed.
fn make_room(open: &Open) -> bool {
    let o = open.lock().unwrap_or_else(|p| p.into_inner());
    if o.len() < MAX_CONNECTIONS {
        return false;
    }
    match o.values().find(|c| !c.busy.load(Ordering::Relaxed)) {
        Some(oldest) => {
            oldest.close.notify_one();
            true
        }
        None => false,
    }
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.busy.store(true, Ordering::Relaxed);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` completes; connections then in progress
/// finish their request.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let open: Open = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut evicted: u64 = 0;
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(error = %e, "API: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if make_room(&open) {
            evicted += 1;
            if evicted.is_power_of_two() {
                tracing::warn!(
                    evicted,
                    limit = MAX_CONNECTIONS,
                    "API: too many connections; closing the oldest idle ones"
                );
            }
        }
        let id = next_id;
        next_id += 1;
        let conn = Arc::new(Conn {
            busy: AtomicBool::new(false),
            close: Notify::new(),
        });
        open.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn.clone());
        let app = app.clone();
        let open = open.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = {
                let conn = conn.clone();
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let busy = Busy::new(&conn);
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    let call = app.clone().oneshot(req);
                    async move {
                        let answer = call.await;
                        drop(busy);
                        answer
                    }
                })
            };
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(stream), service);
            let mut http = std::pin::pin!(http);
            tokio::select! {
                _ = http.as_mut() => {}
                // Closed for room: dropping the connection closes the socket.
                _ = conn.close.notified() => {}
                _ = stop.changed() => {
                    http.as_mut().graceful_shutdown();
                    let _ = http.await;
                }
            }
            open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
    let _ = stop_tx.send(true);
}

/// Raises this process's open-file limit to its hard limit: every API connection and map
/// takes a descriptor.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit; lowering nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the open-file limit"
            );
        }
    }
}
