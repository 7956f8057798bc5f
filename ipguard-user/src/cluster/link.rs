//! The task that keeps this node and Redis in step: connect, publish what is queued,
//! resync, then follow the change stream and publish new changes as they come, until the
//! connection fails; then the same again, with backoff. It never stops the daemon.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use redis::{aio::MultiplexedConnection, streams::StreamReadReply, AsyncConnectionConfig};
use tokio::sync::{mpsc, Notify};

use super::{
    outbox::Outbox,
    wire::{self, Decision, SharedOp},
};
use crate::{
    config::ClusterConfig,
    controller::Controller,
    dataplane::Backend,
    model::{Now, Ts},
};

/// Changes kept in the stream; a node away for longer resyncs from the hash anyway.
const STREAM_MAXLEN: u64 = 100_000;
/// How long a removal is remembered for nodes that were away.
const TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Heartbeat, expiry cleanup and counts.
const UPKEEP: Duration = Duration::from_secs(2);
/// Stream entries read per call.
const READ_COUNT: usize = 50_000;
/// How long one stream read waits for news.
const READ_BLOCK: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The Redis keys of one fleet.
#[derive(Clone)]
struct Keys {
    decisions: String,
    expiry: String,
    removed: String,
    changes: String,
    nodes: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            decisions: format!("{prefix}:decisions"),
            expiry: format!("{prefix}:expiry"),
            removed: format!("{prefix}:removed"),
            changes: format!("{prefix}:changes"),
            nodes: format!("{prefix}:nodes"),
        }
    }
}

type Ctl<B> = Arc<Mutex<Controller<B>>>;

/// Reports counted across the fleet: each report of a source is added to a sorted set in
/// Redis (`PREFIX:reports:IP`, scored by time, trimmed to the report window), so that a
/// source spreading failed logins over several nodes reaches the threshold as if it hit
/// one. Shares the link's connection; while the link is down, reports count locally.
#[derive(Clone)]
pub struct FleetReports {
    con: Arc<Mutex<Option<MultiplexedConnection>>>,
    prefix: String,
    node: String,
}

/// How long a report may wait for Redis before it counts locally only.
const REPORT_TIMEOUT: Duration = Duration::from_millis(300);

impl FleetReports {
    pub fn new(config: &ClusterConfig) -> Self {
        Self {
            con: Arc::default(),
            prefix: config.prefix.clone(),
            node: config.node.clone(),
        }
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.con.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, con: Option<MultiplexedConnection>) {
        *self.con.lock().unwrap_or_else(|p| p.into_inner()) = con;
    }

    fn key(&self, ip: std::net::IpAddr) -> String {
        format!("{}:reports:{ip}", self.prefix)
    }

    /// Adds a report of `ip` at `now` and returns the fleet's reports of it within
    /// `window`; `None` when Redis cannot be asked now.
    pub async fn count(&self, ip: std::net::IpAddr, window: Duration, now: Ts) -> Option<u32> {
        let mut con = self.connection()?;
        let key = self.key(ip);
        let member = format!("{}:{}:{}", self.node, now.0, rand_suffix());
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        let query = pipe
            .atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(now.0)
            .arg(member)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now.minus(window).0)
            .ignore()
            .cmd("ZCARD")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms.max(1))
            .ignore()
            .query_async::<(u32,)>(&mut con);
        match tokio::time::timeout(REPORT_TIMEOUT, query).await {
            Ok(Ok((n,))) => Some(n),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot count a report across the fleet");
                None
            }
            Err(_) => None,
        }
    }

    /// The source was banned: its fleet count starts again.
    pub async fn clear(&self, ip: std::net::IpAddr) {
        if let Some(mut con) = self.connection() {
            let mut cmd = redis::cmd("DEL");
            let del = cmd.arg(self.key(ip)).query_async::<()>(&mut con);
            let _ = tokio::time::timeout(REPORT_TIMEOUT, del).await;
        }
    }
}

/// A few random bits, so that two reports in the same millisecond on one node count twice.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Ts::wall_now().0);
    h.finish()
}

fn lock<B: Backend>(ctl: &Ctl<B>) -> MutexGuard<'_, Controller<B>> {
    ctl.lock().unwrap_or_else(|p| {
        ctl.clear_poison();
        p.into_inner()
    })
}

/// What the link needs beyond the config: read by the daemon at start (and by
/// `check-config`), so that a missing file fails the start with its name.
#[derive(Clone, Default)]
pub struct Credentials {
    /// `password_file`'s first line.
    pub password: Option<String>,
    /// `ca_file`'s PEM contents.
    pub ca_pem: Option<Vec<u8>>,
}

/// Runs the link until the task is aborted. `password`: the content of
/// `password_file`'s first line.
pub async fn run<B: Backend>(
    ctl: Ctl<B>,
    config: ClusterConfig,
    credentials: Credentials,
    state_dir: PathBuf,
    wake: Arc<Notify>,
    reports: FleetReports,
) {
    let keys = Keys::new(&config.prefix);
    let mut outbox = Outbox::open(&state_dir);
    let mut backoff = Duration::from_millis(200);
    loop {
        let ended = session(
            &ctl,
            &config,
            &credentials,
            &keys,
            &mut outbox,
            &wake,
            &reports,
        )
        .await;
        reports.set(None);
        match ended {
            Ok(()) => {}
            Err(e) => {
                let why = e.to_string();
                let was_up = lock(&ctl).fleet().is_some_and(|f| f.link.up);
                if was_up {
                    tracing::warn!(
                        error = why,
                        redis = config.redis,
                        "lost the fleet's Redis; filtering goes on, changes are queued"
                    );
                    backoff = Duration::from_millis(200);
                } else {
                    tracing::debug!(error = why, "cannot reach the fleet's Redis");
                }
                let queued = outbox.ops.len() as u64;
                lock(&ctl).set_link(|l| {
                    if l.up || l.since == Ts(0) {
                        l.since = Ts::wall_now();
                    }
                    l.up = false;
                    l.last_error = Some(why);
                    l.queued = queued;
                });
            }
        }
        // Away: keep taking what the controller queues (persisted) while waiting.
        let until = Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = wake.notified() => {}
            }
            let taken = lock(&ctl).take_outgoing();
            outbox.push(taken, true);
            let queued = outbox.ops.len() as u64;
            lock(&ctl).set_link(|l| l.queued = queued);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    config: &ClusterConfig,
    credentials: &Credentials,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<MultiplexedConnection> {
    use redis::IntoConnectionInfo as _;
    let mut info = config.redis.as_str().into_connection_info()?;
    if let Some(p) = &credentials.password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    let client = match &credentials.ca_pem {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )?,
        None => redis::Client::open(info)?,
    };
    client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(response_timeout),
        )
        .await
}

/// One connected stretch: returns the error that ended it.
async fn session<B: Backend>(
    ctl: &Ctl<B>,
    config: &ClusterConfig,
    credentials: &Credentials,
    keys: &Keys,
    outbox: &mut Outbox,
    wake: &Notify,
    reports: &FleetReports,
) -> redis::RedisResult<()> {
    let mut con = connect(config, credentials, Some(RESPONSE_TIMEOUT)).await?;
    let reader = connect(config, credentials, Some(READ_BLOCK + RESPONSE_TIMEOUT)).await?;
    // What was queued while away goes first: a removal made meanwhile must not come back
    // from the set.
    let taken = lock(ctl).take_outgoing();
    outbox.push(taken, false);
    let n = outbox.ops.len() as u64;
    if n > 0 {
        publish(&mut con, keys, outbox.ops.make_contiguous()).await?;
        outbox.sent();
        lock(ctl).count_published(n);
        tracing::info!(
            changes = n,
            "published the changes queued while the fleet's Redis was away"
        );
    }
    let last_id = resync(ctl, &mut con, keys).await?;
    lock(ctl).set_link(|l| {
        l.up = true;
        l.since = Ts::wall_now();
        l.last_error = None;
        l.queued = 0;
    });
    reports.set(Some(con.clone()));
    tracing::info!(
        redis = config.redis,
        node = config.node,
        "following the fleet's decisions"
    );
    upkeep(ctl, &mut con, keys, &config.node).await?;

    let (tx, mut rx) = mpsc::channel(4);
    let follower = tokio::spawn(follow(reader, keys.changes.clone(), last_id, tx));
    let _abort = AbortOnDrop(follower);
    let mut ticks = tokio::time::interval(UPKEEP);
    ticks.tick().await;
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(Ok(entries)) => apply_entries(ctl, entries).await,
                Some(Err(e)) => return Err(e),
                None => return Err(redis::RedisError::from((redis::ErrorKind::Io, "the stream reader stopped"))),
            },
            () = wake.notified() => {
                let ops = lock(ctl).take_outgoing();
                if !ops.is_empty() {
                    if let Err(e) = publish(&mut con, keys, &ops).await {
                        // Kept for the next connection (removals on disk).
                        let durable = ops.iter().any(|o| matches!(o, SharedOp::Remove { .. }));
                        outbox.push(ops, durable);
                        return Err(e);
                    }
                    lock(ctl).count_published(ops.len() as u64);
                }
            }
            _ = ticks.tick() => upkeep(ctl, &mut con, keys, &config.node).await?,
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `ops`: per decision the hash, the expiry and removal sets, then the stream
/// entry. One script call per chunk (Redis parses and answers one command instead of four
/// per decision: a large batch cost Redis more CPU than the nodes); chunks small enough that
/// a call holds other clients for milliseconds. A failed publish is queued and sent again
/// whole: every write is idempotent, and a reader that scans between the hash and the
/// stream sees a change twice and applies it once.
async fn publish(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    ops: &[SharedOp],
) -> redis::RedisResult<()> {
    // A few pipelines in flight: this node encodes the next while Redis runs the last (one
    // at a time, the two took turns; a bound, so that the last of a large publish does not
    // wait past the response timeout behind all the others).
    let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<redis::RedisResult<()>>> =
        std::collections::VecDeque::new();
    let wait = |h: tokio::task::JoinHandle<redis::RedisResult<()>>| async move {
        h.await.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "a publisher failed", e.to_string()))
        })?
    };
    for chunk in ops.chunks(PUBLISH_CHUNK) {
        let mut inv = PUBLISH.prepare_invoke();
        inv.key(&keys.decisions)
            .key(&keys.expiry)
            .key(&keys.removed)
            .key(&keys.changes)
            .arg(STREAM_MAXLEN);
        for op in chunk {
            match op {
                SharedOp::Put(d) => {
                    let key = op.key();
                    let score = expiry_score(d.until, &key);
                    inv.arg("put").arg(key).arg(wire::encode(d)).arg(score);
                }
                SharedOp::Remove { node, at, .. } => {
                    inv.arg("del").arg(op.key()).arg(node).arg(at.0);
                }
            }
        }
        if ops.len() <= PUBLISH_CHUNK {
            // One call (single bans): no task to hand it to.
            return inv.invoke_async::<u64>(con).await.map(|_| ());
        }
        let mut c = con.clone();
        in_flight.push_back(tokio::spawn(async move {
            inv.invoke_async::<u64>(&mut c).await.map(|_| ())
        }));
        if in_flight.len() >= PUBLISH_IN_FLIGHT {
            if let Some(h) = in_flight.pop_front() {
                wait(h).await?;
            }
        } else {
            // Lets the connection send it before the next is encoded.
            tokio::task::yield_now().await;
        }
    }
    while let Some(h) = in_flight.pop_front() {
        wait(h).await?;
    }
    Ok(())
}

/// The expiry set's score of a decision: its expiry in ms plus a fraction of a
/// millisecond drawn from its key. Redis orders members of equal score by comparing their
/// names, and the decisions of one batch share one expiry: the fraction spares Redis those
/// string compares, a fifth of its time while a batch of 100k was published. Cleanup
/// compares whole milliseconds, so a decision leaves the set at the first cleanup after
/// its millisecond has passed; every node lifts it at its expiry regardless.
fn expiry_score(until: Option<Ts>, key: &str) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault};
    match until {
        None => "+inf".to_owned(),
        Some(u) => {
            let h = BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(key);
            // Four digits: a double near 2^41 ms holds about 2048 fractions of a
            // millisecond, twice what three digits give, and the 100k batch measured 1.75
            // against 2.3 s with three. The rare .9998 or .9999 rounds into the next
            // millisecond: that decision leaves the set one cleanup later, and nothing else
            // reads the score.
            format!("{}.{:04}", u.0, h % 10_000)
        }
    }
}

/// Changes per script call.
const PUBLISH_CHUNK: usize = 1000;
/// Calls sent before the first is answered.
const PUBLISH_IN_FLIGHT: usize = 4;

/// KEYS: the decisions hash, the expiry set, the removal set, the change stream. ARGV: the
/// stream's length bound, then per change four values: `put`, key, decision, expiry score;
/// or `del`, key, node, time. The stream entries are those a node always wrote.
static PUBLISH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local n = 0
for i = 2, #ARGV, 4 do
  local op, k, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'put' then
    redis.call('HSET', KEYS[1], k, a)
    redis.call('ZADD', KEYS[2], b, k)
    redis.call('ZREM', KEYS[3], k)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[1], '*', 'op', 'put', 'k', k, 'd', a)
  else
    redis.call('HDEL', KEYS[1], k)
    redis.call('ZREM', KEYS[2], k)
    redis.call('ZADD', KEYS[3], b, k)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[1], '*', 'op', 'del', 'k', k, 'node', a, 'at', b)
  end
  n = n + 1
end
return n
",
    )
});

/// Decisions read per scan of the shared set, at most and at first.
const SCAN_COUNT: usize = 200_000;
const FIRST_SCAN_COUNT: usize = 12_500;
/// Decisions applied under one hold of the controller's lock in a resync.
const RESYNC_SLICE: usize = 100_000;

/// One chunk of the shared set: the next cursor (0: done), the decisions that passed the
/// wire checks, the keys read (parsed; a key that does not parse names nothing this node
/// holds) and how many were refused.
type Chunk = (u64, Vec<Decision>, Vec<crate::controller::SetKey>, u64);

/// Reads one chunk of the set and decodes it on a blocking thread (on a task of its own,
/// while the previous chunk is applied): the runtime thread only reads the reply.
async fn fetch(
    mut con: MultiplexedConnection,
    hash: String,
    cursor: u64,
    count: usize,
) -> redis::RedisResult<Chunk> {
    let (next, fields): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
        .arg(&hash)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(&mut con)
        .await?;
    let decoded = tokio::task::spawn_blocking(move || decode_chunk(fields))
        .await
        .map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "the set decoder failed",
                e.to_string(),
            ))
        })?;
    Ok((next, decoded.0, decoded.1, decoded.2))
}

/// Decodes hash fields and values: the decisions that pass the wire checks, the keys read
/// (parsed; a key that does not parse names nothing this node holds), how many refused.
fn decode_chunk(
    fields: Vec<(String, String)>,
) -> (Vec<Decision>, Vec<crate::controller::SetKey>, u64) {
    let mut decisions = Vec::with_capacity(fields.len());
    let mut keys = Vec::with_capacity(fields.len());
    let mut bad = 0;
    for (field, value) in fields {
        let decoded = wire::parse_key(&field).and_then(|k| {
            keys.push(k);
            wire::decode_keyed(&value, Some(k))
        });
        match decoded {
            Ok(d) => decisions.push(d),
            Err(e) => {
                bad += 1;
                tracing::debug!(key = crate::model::excerpt(&field), error = %e, "refused a shared decision");
            }
        }
    }
    (decisions, keys, bad)
}

/// Reads the whole shared set and applies it, then the removals, and publishes what this
/// node holds that the set lacks. Returns the stream id to follow from: read first, so that
/// every change made while the set is scanned (a scan is not a snapshot) is replayed by the
/// follower; a change seen twice is applied once.
async fn resync<B: Backend>(
    ctl: &Ctl<B>,
    con: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<String> {
    let started = Instant::now();
    let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&keys.changes)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(con)
        .await?;
    let last_id = last
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |i| i.id.clone());
    let mut in_set = rustc_hash::FxHashSet::default();
    let (mut read, mut bad) = (0u64, 0u64);
    let mut waited = Duration::ZERO;
    // The first chunks small, so that applying starts early; the read of the next chunk
    // goes on while one is applied.
    let mut count = FIRST_SCAN_COUNT;
    let mut next = Some(tokio::spawn(fetch(
        con.clone(),
        keys.decisions.clone(),
        0,
        count,
    )));
    while let Some(task) = next.take() {
        let t = Instant::now();
        let (cursor, decisions, fields, refused) = task.await.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "the set reader failed", e.to_string()))
        })??;
        waited += t.elapsed();
        if cursor != 0 {
            count = (count * 4).min(SCAN_COUNT);
            next = Some(tokio::spawn(fetch(
                con.clone(),
                keys.decisions.clone(),
                cursor,
                count,
            )));
        }
        read += (decisions.len() as u64) + refused;
        bad += refused;
        in_set.extend(fields);
        // Off the runtime thread: the API and the next chunk's read go on meanwhile. In
        // slices, the lock let go between them: the event loop's rate events and the API
        // wait for one slice at most, not for a whole chunk.
        let c = ctl.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for slice in decisions.chunks(RESYNC_SLICE) {
                if let Err(e) = lock(&c).apply_shared(slice, Now::read()) {
                    result = Err(e);
                }
                std::thread::yield_now();
            }
            result
        })
        .await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the resync could not apply every decision"),
            Err(e) => tracing::warn!(error = %e, "the resync's applier failed"),
        }
    }
    let removed: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&keys.removed)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(con)
        .await?;
    let removed: rustc_hash::FxHashMap<crate::controller::SetKey, Ts> = removed
        .into_iter()
        .filter_map(|(k, at)| Some((wire::parse_key(&k).ok()?, Ts(at.max(0.0) as u64))))
        .collect();
    let republish = {
        let mut c = lock(ctl);
        let republish = match c.finish_resync(&in_set, &removed, Now::read()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the resync could not remove every lifted decision");
                Vec::new()
            }
        };
        let took = started.elapsed();
        c.set_link(|l| {
            l.last_resync = Some((took, read));
            l.resyncs += 1;
        });
        republish
    };
    if bad > 0 {
        tracing::warn!(
            refused = bad,
            "shared decisions in Redis that this node refuses to read"
        );
        lock(ctl).count_rejected(bad);
    }
    if !republish.is_empty() {
        let ops: Vec<SharedOp> = republish.into_iter().map(SharedOp::Put).collect();
        publish(con, keys, &ops).await?;
        tracing::info!(
            decisions = ops.len(),
            "published again what the fleet's set lacked"
        );
        lock(ctl).count_published(ops.len() as u64);
    }
    tracing::info!(
        decisions = read,
        took = ?started.elapsed(),
        waiting_for_redis = ?waited,
        "resynced with the fleet"
    );
    Ok(last_id)
}

/// Follows the stream from `last_id` on its own connection (a blocking read must not hold
/// up the publishing one), sending each batch of entries; ends at the first error.
async fn follow(
    mut con: MultiplexedConnection,
    stream: String,
    mut last_id: String,
    tx: mpsc::Sender<redis::RedisResult<Vec<redis::streams::StreamId>>>,
) {
    loop {
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last_id)
            .query_async(&mut con)
            .await;
        match read {
            Ok(Some(reply)) => {
                let ids: Vec<_> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
                if let Some(last) = ids.last() {
                    last_id = last.id.clone();
                }
                if !ids.is_empty() && tx.send(Ok(ids)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// One stream entry, decoded.
enum Change {
    Put(Decision),
    Remove {
        list: crate::model::ListKind,
        net: ipnet::IpNet,
        node: String,
        at: Ts,
    },
}

/// Decodes stream entries (no lock held): the changes in order and how many were refused.
fn decode_entries(entries: &[redis::streams::StreamId]) -> (Vec<Change>, u64) {
    let mut changes = Vec::with_capacity(entries.len());
    let mut bad = 0u64;
    for e in entries {
        let op: Option<String> = e.get("op");
        let k: Option<String> = e.get("k");
        match (op.as_deref(), k) {
            (Some("put"), Some(k)) => {
                match e
                    .get::<String>("d")
                    .ok_or_else(|| wire::WireError::Shape("no `d` field".into()))
                    .and_then(|d| wire::decode(&d, Some(&k)))
                {
                    Ok(d) => changes.push(Change::Put(d)),
                    Err(err) => {
                        bad += 1;
                        tracing::debug!(id = e.id, error = %err, "refused a change of the fleet");
                    }
                }
            }
            (Some("del"), Some(k)) => {
                let node: Option<String> = e.get("node");
                let at: Option<u64> = e.get("at");
                match (wire::parse_key(&k), node, at) {
                    (Ok((list, net)), Some(node), Some(at)) => changes.push(Change::Remove {
                        list,
                        net,
                        node,
                        at: Ts(at),
                    }),
                    _ => bad += 1,
                }
            }
            _ => bad += 1,
        }
    }
    (changes, bad)
}

/// Applies stream entries in order: runs of additions as one batch, removals one by one.
/// Many are decoded and applied on a blocking thread, the lock taken only to apply.
async fn apply_entries<B: Backend>(ctl: &Ctl<B>, entries: Vec<redis::streams::StreamId>) {
    // A few changes (single bans: the common case) are applied here at once: handing them
    // to another thread and back costs more than applying them.
    if entries.len() <= INLINE_APPLY {
        apply_decoded(ctl, entries);
        return;
    }
    let ctl = ctl.clone();
    let done = tokio::task::spawn_blocking(move || apply_decoded(&ctl, entries)).await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "the applier of the fleet's changes failed");
    }
}

/// Stream entries applied on the runtime thread rather than a blocking one, at most.
const INLINE_APPLY: usize = 64;

/// Decodes stream entries (no lock held), then applies them in order under the lock.
fn apply_decoded<B: Backend>(ctl: &Ctl<B>, entries: Vec<redis::streams::StreamId>) {
    {
        let (changes, bad) = decode_entries(&entries);
        drop(entries);
        let mut c = lock(ctl);
        let now = Now::read();
        let mut puts: Vec<Decision> = Vec::new();
        let flush = |c: &mut Controller<B>, puts: &mut Vec<Decision>| {
            if !puts.is_empty() {
                if let Err(e) = c.apply_shared(puts, now) {
                    tracing::warn!(error = %e, "cannot apply decisions of the fleet");
                }
                puts.clear();
            }
        };
        for change in changes {
            match change {
                Change::Put(d) => puts.push(d),
                Change::Remove {
                    list,
                    net,
                    node,
                    at,
                } => {
                    flush(&mut c, &mut puts);
                    if let Err(err) = c.remove_shared(list, net, &node, at, now) {
                        tracing::warn!(error = %err, net = %net, "cannot remove a decision of the fleet");
                    }
                }
            }
        }
        flush(&mut c, &mut puts);
        if bad > 0 {
            tracing::warn!(
                refused = bad,
                "changes of the fleet that this node refuses to read"
            );
            c.count_rejected(bad);
        }
    }
}

/// Heartbeat, expiry cleanup of the shared set, and the counts the status shows.
async fn upkeep<B: Backend>(
    ctl: &Ctl<B>,
    con: &mut MultiplexedConnection,
    keys: &Keys,
    node: &str,
) -> redis::RedisResult<()> {
    static CLEAN: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
local ks = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 10000)
for _, k in ipairs(ks) do
  redis.call('HDEL', KEYS[2], k)
  redis.call('ZREM', KEYS[1], k)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
return #ks
",
        )
    });
    let now = Ts::wall_now();
    let _: i64 = CLEAN
        .key(&keys.expiry)
        .key(&keys.decisions)
        .key(&keys.removed)
        .arg(now.0)
        .arg(now.minus(TOMBSTONE_TTL).0)
        .invoke_async(con)
        .await?;
    let ((), nodes, shared): ((), HashMap<String, u64>, u64) = redis::pipe()
        .cmd("HSET")
        .arg(&keys.nodes)
        .arg(node)
        .arg(now.0)
        .ignore()
        .cmd("HGETALL")
        .arg(&keys.nodes)
        .cmd("HLEN")
        .arg(&keys.decisions)
        .query_async::<(HashMap<String, u64>, u64)>(con)
        .await
        .map(|(n, s)| ((), n, s))?;
    let mut nodes: Vec<(String, Ts)> = nodes.into_iter().map(|(n, t)| (n, Ts(t))).collect();
    nodes.sort();
    lock(ctl).set_link(|l| {
        l.nodes = nodes;
        l.shared = shared;
        l.queued = 0;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_of_one_expiry_get_distinct_scores_within_its_millisecond() {
        let until = Ts(1_765_100_000_123);
        let scores: std::collections::HashSet<String> = (0..100)
            .map(|i| expiry_score(Some(until), &format!("blacklist|10.0.{i}.0/24")))
            .collect();
        assert!(scores.len() > 90, "{} distinct of 100", scores.len());
        for s in &scores {
            let v: f64 = s.parse().unwrap();
            // Within its millisecond, or at most rounded up to the next one.
            assert!(v >= until.0 as f64 && v <= (until.0 + 1) as f64, "{s}");
        }
        assert_eq!(expiry_score(None, "blacklist|10.0.0.0/24"), "+inf");
        // Stable: a republish gives the same score.
        assert_eq!(
            expiry_score(Some(until), "blacklist|10.0.0.0/24"),
            expiry_score(Some(until), "blacklist|10.0.0.0/24")
        );
    }
}
