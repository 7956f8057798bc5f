//! The daemon's event loop: rate events, expiries, reloads, the resolver's answers and
//! periodic upkeep, until SIGTERM or SIGINT. It never stops on an error: a failed write
//! is rolled back, counted and shown in the status, and the loop goes on; nothing on it
//! waits for the network (DNS runs on its own task) or for a large file (reloads read the
//! config on a blocking thread).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use super::{
    compile_geo, dedup_events, drain, locked, read_config_with_geo,
    resolver::{self, Job, Resolved},
    ConfigRead, Shared, EVENT_CHUNK,
};
use crate::{
    api::{self, AppState, ReloadRequest},
    config::Config,
    controller,
    dataplane::Program,
    model::Now,
};

/// How often the host's addresses are read again, protected API clients expire and an
/// owed state snapshot is retried.
const UPKEEP_EVERY: Duration = Duration::from_secs(2);
/// After a failed expiry pass, the next is tried this much later (not at once: the same
/// entries would be due again).
const TICK_RETRY: Duration = Duration::from_secs(1);

/// The signal handlers, installed before anything else is done.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

pub struct EventLoop {
    ctl: Shared,
    config: Config,
    config_path: PathBuf,
    events: AsyncFd<RingBuf<MapData>>,
    signals: Signals,
    program: Program,
    interface: String,
    /// Reports counted across the fleet, when in one.
    pub fleet_reports: Option<crate::cluster::FleetReports>,
    /// The compiled `[geo]`, whose database files upkeep watches.
    pub geo: Option<Arc<crate::geo::GeoState>>,
    /// The config as written (without the geo prefixes), to compile `[geo]` again.
    pub config_base: Config,
    /// `config_base` with the geo prefixes: what the feeds' entries are added to.
    pub config_geo: Config,
    /// The feeds' entries in force, and where the feed task sends new ones.
    pub feed_sets: crate::feeds::FeedSets,
    pub feed_updates: Option<mpsc::Receiver<super::feeds_task::FeedChange>>,
    /// Where `POST /v1/feeds/{name}/accept` goes.
    pub feed_commands: Option<mpsc::Sender<super::feeds_task::FeedCommand>>,
}

impl EventLoop {
    pub fn new(
        ctl: Shared,
        config: Config,
        config_path: PathBuf,
        events: AsyncFd<RingBuf<MapData>>,
        signals: Signals,
        program: Program,
        interface: String,
    ) -> Self {
        Self {
            ctl,
            config_base: config.clone(),
            config_geo: config.clone(),
            feed_sets: Default::default(),
            feed_updates: None,
            feed_commands: None,
            geo: None,
            config,
            config_path,
            events,
            signals,
            program,
            interface,
            fleet_reports: None,
        }
    }

    /// Serves the API on `listener` and runs the loop; returns the signal that ended it,
    /// the config in force then and the program (to detach, or leave attached).
    pub async fn run(
        mut self,
        listener: TcpListener,
        token: Option<String>,
    ) -> anyhow::Result<(&'static str, Config, Program)> {
        let changed = Arc::new(tokio::sync::Notify::new());
        let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
        let app = api::router(
            AppState {
                ctl: self.ctl.clone(),
                token,
                changed: changed.clone(),
                reload: Some(reload_tx),
                metrics_auth: self.config.api.metrics_auth,
                fleet_reports: self.fleet_reports.clone(),
                feeds: self.feed_commands.clone(),
            },
            self.config.api.max_body_bytes,
        );
        let (stop_api, api_stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(api::serve::serve(listener, app, async {
            let _ = api_stopped.await;
        }));

        let (jobs_tx, jobs_rx) = watch::channel(self.job());
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<Resolved>(2);
        let last = locked(&self.ctl).rules().1;
        let resolver = tokio::spawn(resolver::run(jobs_rx, last, resolved_tx));

        // Filtering since before the loop, the API accepting: systemd may go on.
        super::notify::ready(&format!("filtering on {}", self.interface));
        let watchdog = super::notify::watchdog_period();
        let mut watchdog_ping =
            tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
        let mut drops = tokio::time::interval(self.config.log.drop_interval);
        let mut upkeep = tokio::time::interval_at(Instant::now() + UPKEEP_EVERY, UPKEEP_EVERY);
        let mut batch = Vec::new();
        let mut tick_after: Option<Instant> = None;
        let which = loop {
            let deadline = locked(&self.ctl)
                .next_deadline(Now::read())
                .map(|d| (Instant::now() + d).max(tick_after.unwrap_or_else(Instant::now)));
            let logging = self.config.log.path.is_some();
            tokio::select! {
                _ = self.signals.term.recv() => break "SIGTERM",
                _ = self.signals.int.recv() => break "SIGINT",
                // The API changed the state: recompute the next deadline.
                _ = changed.notified() => {}
                _ = self.signals.hup.recv() => {
                    super::notify::reloading();
                    match self.reload().await {
                        Ok(restart) => {
                            let _ = jobs_tx.send(self.job());
                            if !restart.is_empty() {
                                tracing::warn!(keys = ?restart, "SIGHUP: these settings need a restart to take effect");
                            }
                            tracing::info!("SIGHUP: config reloaded");
                            super::notify::reloaded("config reloaded");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: the new config is invalid or cannot be applied; the running one stays in force");
                            super::notify::reloaded("reload refused; the running config stays in force");
                        }
                    }
                }
                // From the loop itself: if it hangs, the pings stop and systemd restarts it.
                _ = watchdog_ping.tick(), if watchdog.is_some() => super::notify::watchdog(),
                Some(reply) = reload_rx.recv() => {
                    let result = self.reload().await;
                    if result.is_ok() {
                        let _ = jobs_tx.send(self.job());
                    }
                    let _ = reply.send(result.map_err(|e| format!("{e:#}")));
                }
                ready = self.events.readable_mut() => {
                    match ready {
                        Ok(mut guard) => {
                            batch.clear();
                            drain(guard.get_inner_mut(), &mut batch);
                            guard.clear_ready();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "waiting for rate events failed");
                            tokio::time::sleep(TICK_RETRY).await;
                            continue;
                        }
                    }
                    // A burst (a flood's first second: thousands of bans) is handled a chunk
                    // at a time, letting the API in between: the lock is never held long.
                    dedup_events(&mut batch);
                    for chunk in batch.chunks(EVENT_CHUNK) {
                        if let Err(e) = locked(&self.ctl).on_events(chunk, Now::read()) {
                            tracing::debug!(error = %e, "rate events: not every ban was made");
                        }
                        tokio::task::yield_now().await;
                    }
                }
                _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => {
                    tick_after = None;
                    if let Err(e) = locked(&self.ctl).tick(Now::read()) {
                        tracing::warn!(error = %e, "expiry failed; trying again in {TICK_RETRY:?}");
                        tick_after = Some(Instant::now() + TICK_RETRY);
                    }
                }
                Some((compiled, cache)) = resolved_rx.recv() => {
                    if let Err(e) = locked(&self.ctl).set_rules(&compiled, cache) {
                        tracing::error!(error = %e, "cannot write the rules to the tables");
                    }
                }
                Some(sets) = async {
                    match self.feed_updates.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let (sets, reply) = sets;
                    let result = self.apply_feeds(sets);
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
                _ = upkeep.tick() => {
                    self.upkeep();
                    if self.geo.as_ref().is_some_and(|g| g.files_changed()) {
                        self.reload_geo().await;
                    }
                }
                _ = drops.tick(), if logging => {
                    locked(&self.ctl).log_drops(self.config.log.drop_interval);
                }
            }
        };
        super::notify::stopping();
        resolver.abort();
        let _ = stop_api.send(());
        let _ = server.await;
        Ok((which, self.config, self.program))
    }

    fn job(&self) -> Job {
        Job {
            rules: self.config.rules.clone(),
            refresh: self.config.rules_refresh,
        }
    }

    /// Reads the config file again and applies it whole, or nothing of it: returns the
    /// keys that need a restart.
    async fn reload(&mut self) -> anyhow::Result<Vec<&'static str>> {
        let read = read_config_with_geo(self.config_path.clone()).await?;
        self.apply(read)
    }

    /// Applies a config as read (whole, or nothing of it).
    fn apply(&mut self, read: ConfigRead) -> anyhow::Result<Vec<&'static str>> {
        let merged = super::feeds_task::merge_feeds(&read.merged, &self.feed_sets);
        let mut c = locked(&self.ctl);
        let mut restart = c.reload(&merged, &self.config, Now::read())?;
        // The new rules, in force before the reload is acknowledged: literal networks as
        // written, hostnames as last resolved (the resolver follows with fresh answers).
        let (_, cache) = c.rules();
        let layer = super::resolver::from_cache(&merged.rules, &cache);
        c.set_rules(&layer, cache)?;
        if read.merged.feeds != self.config_geo.feeds {
            restart.push("feed");
        }
        c.set_geo(read.geo.clone());
        drop(c);
        self.config = merged;
        self.config_geo = read.merged;
        self.config_base = read.base;
        self.geo = read.geo;
        Ok(restart)
    }

    /// The feeds' entries in force changed: the config lists with them, applied as one
    /// diff (additions before removals).
    fn apply_feeds(&mut self, sets: crate::feeds::FeedSets) -> Result<(), String> {
        let merged = super::feeds_task::merge_feeds(&self.config_geo, &sets);
        let mut c = locked(&self.ctl);
        match c.reload(&merged, &self.config, Now::read()) {
            Ok(_) => {
                c.set_feed_sets(sets.clone());
                drop(c);
                self.config = merged;
                self.feed_sets = sets;
                tracing::info!("feeds: the entries in force changed and are applied");
                Ok(())
            }
            // Nothing applied (the controller rolls the change back whole); the feed task
            // sends the next change, the status shows the tables' problem.
            Err(e) => {
                tracing::error!(error = %e, "feeds: the new entries cannot be applied; the previous ones stay");
                Err(e.to_string())
            }
        }
    }

    /// A geo database file changed: compile `[geo]` again from the config as last read
    /// (not the file, which may hold edits the operator has not reloaded yet).
    async fn reload_geo(&mut self) {
        let base = self.config_base.clone();
        let compiled =
            tokio::task::spawn_blocking(move || compile_geo(&base).map(|(m, g)| (base, m, g)))
                .await;
        let result = match compiled {
            Ok(Ok((base, merged, geo))) => self.apply(ConfigRead { base, merged, geo }).map(|_| ()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("the geo compiler panicked: {e}")),
        };
        match result {
            Ok(()) => tracing::info!("geo: a database changed; recompiled and applied"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "geo: a database changed but cannot be used; the prefixes in force stay")
            }
        }
    }

    /// The host's addresses, expired API clients, an owed snapshot, and the XDP link: if
    /// something outside ipguard detached the program or removed its pin, it is attached
    /// or pinned again (and reported until it is).
    fn upkeep(&mut self) {
        let now = Now::read();
        let addrs = controller::interface_addresses();
        let link = match self.program.check_link(&self.interface) {
            Ok(()) => None,
            Err(why) => {
                tracing::error!("{why}; repairing");
                match self
                    .program
                    .repair_link(&self.interface, self.config.xdp_mode)
                {
                    Ok(()) => self.program.check_link(&self.interface).err(),
                    Err(e) => Some(format!("{why}; repairing failed: {e}")),
                }
            }
        };
        let mut c = locked(&self.ctl);
        match addrs {
            Ok(addrs) => c.set_interface_addresses(addrs, now),
            Err(e) => tracing::debug!(error = %e, "cannot read this host's addresses"),
        }
        c.retry_persist(now);
        c.set_problem("xdp_link", now, link);
    }
}
