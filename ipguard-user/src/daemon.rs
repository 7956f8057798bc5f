//! `ipguard run`: load, fill the tables, attach, then react to rate events, expiries and
//! rule refreshes until SIGINT/SIGTERM. One task does all of it, so one task owns every
//! map write.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context as _};
use aya::maps::{MapData, RingBuf};
use caps::{CapSet, Capability};
use ipguard_common::RateEvent;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    time::Instant,
};

pub use crate::controller::{mono_now_ns, wall_now};
use crate::{
    api::{self, AppState},
    config::{Config, RuleSource},
    controller::{resolve_rules, Controller, Failure, Placement},
    dataplane::{self, Dataplane},
    decision_log::{DecisionLog, Record},
    lists::ListKind,
    store::Store,
};

/// Checks the preconditions that need no kernel object, so a bad start fails with one
/// clear line before anything is loaded.
pub fn preflight(interface: &str) -> anyhow::Result<()> {
    if dataplane::interface_index(interface).is_none() {
        bail!("unknown interface `{interface}` (see `ip link`)");
    }
    let missing = missing_capabilities();
    if !missing.is_empty() {
        bail!(
            "not privileged enough to load XDP: missing {}; run as root",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Capabilities needed to create maps, load and attach XDP that this process lacks.
fn missing_capabilities() -> Vec<&'static str> {
    // CAP_SYS_ADMIN covers the BPF ones on every kernel; CAP_BPF+CAP_PERFMON suffice since 5.8.
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    if has(Capability::CAP_SYS_ADMIN) && has(Capability::CAP_NET_ADMIN) {
        return Vec::new();
    }
    [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
        (Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c))
    .map(|(_, n)| n)
    .collect()
}

/// Drains the ring buffer into `out`.
fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<RateEvent>) {
    while let Some(item) = ring.next() {
        if item.len() >= std::mem::size_of::<RateEvent>() {
            // SAFETY: the kernel wrote a RateEvent (repr(C), integers only); read unaligned.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<RateEvent>()) });
        }
    }
}

/// Rate events handled per turn of the lock (see the event loop).
const EVENT_CHUNK: usize = 256;

/// Keeps the first event of each (source, rule), as [`Controller::on_events`] does within
/// one call, so that splitting a batch into chunks handles each only once.
fn dedup_events(batch: &mut Vec<RateEvent>) {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    batch.retain(|ev| seen.insert((ev.addr, ev.rule)));
}

/// Reads the API token: the first line of the file, trimmed; it must not be empty.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("api.token_file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        bail!("api.token_file {}: the first line is empty", path.display());
    }
    Ok(token)
}

/// Where the daemon records which interface and mode its pinned link is on: an adopted
/// link does not tell.
fn attachment_file(config: &Config) -> PathBuf {
    config.state.dir.join("attachment")
}

type Shared = Arc<Mutex<Controller<Dataplane>>>;

fn locked(ctl: &Shared) -> anyhow::Result<std::sync::MutexGuard<'_, Controller<Dataplane>>> {
    ctl.lock()
        .map_err(|_| anyhow::anyhow!("the controller lock is poisoned"))
}

/// Resolves the rules' hostnames without holding the lock, then writes the rule layer.
async fn refresh_rules(ctl: &Shared) -> anyhow::Result<()> {
    let (rules, last) = {
        let c = locked(ctl)?;
        (c.rules().to_vec(), c.resolved.clone())
    };
    let (compiled, cache) = resolve_rules(&rules, &last).await;
    let mut c = locked(ctl)?;
    c.resolved = cache;
    c.set_rules(&compiled)?;
    Ok(())
}

/// Runs the daemon until SIGINT or SIGTERM; returns after detaching.
pub async fn run(config_path: &Path, interface: Option<String>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut config = Config::from_file(config_path)?;
    tracing::debug!(elapsed = ?started.elapsed(), "config read");
    let Some(interface) = interface.or_else(|| config.interface.clone()) else {
        bail!(
            "no interface: set `interface` in {} or pass --interface",
            config_path.display()
        );
    };
    preflight(&interface)?;
    let token = config
        .api
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    if token.is_none() && !config.api.listen.ip().is_loopback() {
        bail!(
            "refusing to serve the API on {} without a token: set api.token_file, or listen on a loopback address",
            config.api.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen {}", config.api.listen))?;
    std::fs::create_dir_all(&config.state.dir)
        .with_context(|| format!("state.dir {}", config.state.dir.display()))?;

    // Load the program (its maps are preallocated: seconds with large capacities) while
    // the lists compile.
    let loading = {
        let (maps, pin_dir) = (config.maps, config.state.pin_dir.clone());
        std::thread::spawn(move || {
            let loaded = Dataplane::load_pinned(&maps, &pin_dir);
            tracing::debug!(elapsed = ?started.elapsed(), "program loaded");
            loaded
        })
    };
    let mut adopted = false;
    let mut load_error = None;
    // Fill the tables before attaching: no packet may see an empty list.
    let placement = Placement {
        interface: interface.clone(),
        xdp_mode: String::new(),
    };
    let store = Store::open(&config.state.dir)?;
    let started_ctl = Controller::start(&config, placement, Some(store), || match loading.join() {
        Ok(Ok((dp, pinned))) => {
            adopted = pinned;
            Ok(dp)
        }
        Ok(Err(e)) => {
            let failure = Failure::internal(&e);
            load_error = Some(e);
            Err(failure)
        }
        Err(_) => Err(Failure::internal("loading the XDP program panicked")),
    });
    let (mut ctl, drift) = match started_ctl {
        Ok(started) => started,
        // The loader's own error (e.g. permission denied), not its wrapping.
        Err(e) => return Err(load_error.map_or_else(|| e.into(), Into::into)),
    };
    tracing::debug!(elapsed = ?started.elapsed(), "lists compiled and written");
    let events = ctl
        .backend
        .take_events()
        .context("the event ring buffer was already taken")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd (which owns the ring buffer) lives.
    let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    // Parsing a large config leaves much freed memory in the heap: give it back.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
    let log = DecisionLog::open(&config.log).with_context(|| match &config.log.path {
        Some(p) => format!("log.path {}", p.display()),
        None => "log".into(),
    })?;
    let logging = log.is_enabled();
    ctl.set_log(log);
    if adopted {
        ctl.log_record(&Record::Drift {
            added: drift.inserted as u64,
            removed: drift.removed as u64,
            updated: drift.updated as u64,
        });
        tracing::info!(
            pin_dir = %config.state.pin_dir.display(),
            added = drift.inserted,
            updated = drift.updated,
            removed = drift.removed,
            "adopted the pinned maps of a previous run and fixed their drift"
        );
    }
    let ctl: Shared = Arc::new(Mutex::new(ctl));
    refresh_rules(&ctl).await?;
    let mode = {
        let mut c = locked(&ctl)?;
        let mode = match c.backend.attach_pinned(&interface, config.xdp_mode)? {
            Some(mode) => {
                let _ = std::fs::write(
                    attachment_file(&config),
                    format!("{interface} {}\n", mode.name()),
                );
                mode.name().to_owned()
            }
            None => {
                let previous =
                    std::fs::read_to_string(attachment_file(&config)).unwrap_or_default();
                let mut words = previous.split_whitespace();
                match (words.next(), words.next()) {
                    (Some(i), Some(m)) if i == interface => m.to_owned(),
                    (Some(i), _) => bail!(
                        "the XDP link pinned in {} is on interface {i}, not {interface}: stop that daemon cleanly or use another state.pin_dir",
                        config.state.pin_dir.display()
                    ),
                    _ => "adopted".to_owned(),
                }
            }
        };
        c.placement.xdp_mode = mode.clone();
        mode
    };
    let (whitelist, graylist, blacklist, trie) = {
        let c = locked(&ctl)?;
        (
            c.engine.count(ListKind::Whitelist),
            c.engine.count(ListKind::Graylist),
            c.engine.count(ListKind::Blacklist),
            c.lists.written().len(),
        )
    };
    tracing::info!(
        interface = %interface,
        mode,
        whitelist,
        graylist,
        blacklist,
        rules = config.rules.len(),
        rate_rules = config.rate_limit.len(),
        compiled_entries = trie,
        api = %config.api.listen,
        startup = ?started.elapsed(),
        "ipguard is filtering"
    );

    let changed = Arc::new(tokio::sync::Notify::new());
    let app = api::router(
        AppState {
            ctl: ctl.clone(),
            token,
            changed: changed.clone(),
        },
        config.api.max_body_bytes,
    );
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = api_stopped.await;
        })
        .await
    });

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut refresh =
        tokio::time::interval_at(Instant::now() + config.rules_refresh, config.rules_refresh);
    let mut drops = tokio::time::interval(config.log.drop_interval);
    let mut batch = Vec::new();
    let which = loop {
        let deadline = locked(&ctl)?.next_deadline().map(|d| Instant::now() + d);
        let has_hosts = config
            .rules
            .iter()
            .any(|r| matches!(r.source, RuleSource::Host(_)));
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            // The API changed the state: recompute the next deadline.
            _ = changed.notified() => {}
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                match Config::from_file(config_path) {
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the new config is invalid; keeping the running one"),
                    Ok(new) => {
                        let restart = locked(&ctl)?.reload(&new, &config)?;
                        config = new;
                        refresh_rules(&ctl).await?;
                        if !restart.is_empty() {
                            tracing::warn!(keys = ?restart, "SIGHUP: these settings need a restart to take effect");
                        }
                        tracing::info!("SIGHUP: config reloaded");
                    }
                }
            }
            ready = events.readable_mut() => {
                let mut guard = ready.context("waiting for rate events")?;
                batch.clear();
                drain(guard.get_inner_mut(), &mut batch);
                guard.clear_ready();
                // A burst (a flood's first second: thousands of bans) is handled a chunk at
                // a time, letting the API in between: the lock is never held for long.
                dedup_events(&mut batch);
                for chunk in batch.chunks(EVENT_CHUNK) {
                    locked(&ctl)?.on_events(chunk)?;
                    tokio::task::yield_now().await;
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                locked(&ctl)?.tick()?;
            }
            _ = refresh.tick(), if has_hosts => {
                refresh_rules(&ctl).await?;
            }
            _ = drops.tick(), if logging => {
                locked(&ctl)?.log_drops(config.log.drop_interval);
            }
        }
    };
    let _ = stop_api.send(());
    let _ = server.await;
    let mut c = locked(&ctl)?;
    c.checkpoint();
    let stats = c.backend.stats().unwrap_or_default();
    c.backend.detach().context("detaching the XDP program")?;
    let _ = std::fs::remove_file(attachment_file(&config));
    tracing::info!(
        signal = which,
        interface = %interface,
        passed = stats.passed(),
        dropped = stats.dropped(),
        "detached; exiting"
    );
    Ok(())
}
