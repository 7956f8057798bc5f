//! `ipguard run`: load, fill the tables, attach, then react to rate events, expiries and
//! rule refreshes until SIGINT/SIGTERM. The event loop and the API handlers share the
//! controller behind one mutex: it is the only writer of the maps, whoever calls it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

mod event_loop;
pub mod feeds_task;
mod notify;
mod resolver;

use anyhow::{bail, Context as _};
use aya::maps::{MapData, RingBuf};
use caps::{CapSet, Capability};
use ipguard_common::RateEvent;
use tokio::io::{unix::AsyncFd, Interest};

use ipnet::IpNet;

use crate::{
    config::Config,
    controller::{self, protect::Protection, Controller, ControllerError, Placement},
    dataplane::{self, Dataplane, DataplaneError, KernelBackend},
    decision_log::{DecisionLog, Record},
    feeds::Feeds,
    geo::GeoState,
    model::{ListKind, Mode, Now},
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

/// Shortest API token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// Reads the API token: the first line of the file, trimmed, at least [`MIN_TOKEN_LEN`]
/// characters. A file others can read is accepted with a warning.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = crate::config::read_bounded_file(path, 64 << 10)
        .with_context(|| format!("api.token_file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        bail!("api.token_file {}: the first line is empty", path.display());
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        bail!(
            "api.token_file {}: the token is shorter than {MIN_TOKEN_LEN} characters",
            path.display()
        );
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the API token file is readable by others than its owner: chmod 600 it"
            );
        }
    }
    Ok(token)
}

/// What `run` refuses of the API settings, checked by `check-config` too: returns the
/// token, if one is configured.
pub fn check_api(config: &Config) -> anyhow::Result<Option<String>> {
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
    Ok(token)
}

/// Reads `[cluster] password_file` (its first line) and `ca_file`, checked by
/// `check-config` too.
pub fn check_cluster(config: &Config) -> anyhow::Result<crate::cluster::Credentials> {
    let mut out = crate::cluster::Credentials::default();
    let Some(cluster) = config.cluster.as_ref() else {
        return Ok(out);
    };
    if let Some(path) = cluster.password_file.as_deref() {
        let text = crate::config::read_bounded_file(path, 64 << 10)
            .with_context(|| format!("cluster.password_file {}", path.display()))?;
        let password = text.lines().next().unwrap_or("").trim().to_owned();
        if password.is_empty() {
            bail!(
                "cluster.password_file {}: the first line is empty",
                path.display()
            );
        }
        out.password = Some(password);
    }
    if let Some(path) = cluster.ca_file.as_deref() {
        let pem = crate::config::read_bounded_file(path, 1 << 20)
            .with_context(|| format!("cluster.ca_file {}", path.display()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!(
                "cluster.ca_file {}: no PEM certificate in it",
                path.display()
            );
        }
        out.ca_pem = Some(pem.into_bytes());
    }
    Ok(out)
}

/// Where the daemon records which interface and mode its pinned link is on: an adopted
/// link does not tell.
fn attachment_file(config: &Config) -> PathBuf {
    config.state.dir.join("attachment")
}

type Shared = Arc<Mutex<Controller<KernelBackend>>>;

/// Locks the controller. Nothing on a controller path panics, but should something, the
/// daemon goes on with the state as it is (every change is a transaction of the policy)
/// rather than stop filtering.
fn locked(ctl: &Shared) -> std::sync::MutexGuard<'_, Controller<KernelBackend>> {
    ctl.lock().unwrap_or_else(|poisoned| {
        tracing::error!("a task panicked holding the controller; carrying on");
        ctl.clear_poison();
        poisoned.into_inner()
    })
}

/// Options of `ipguard run` beyond the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides `interface` in the config.
    pub interface: Option<String>,
    /// Leave the program attached and its maps pinned at SIGTERM/SIGINT (overrides
    /// `[state] keep_attached`).
    pub keep_attached: bool,
}

/// Runs the daemon until SIGINT or SIGTERM; returns after detaching (or, with
/// `keep_attached`, leaving the pinned program filtering for the next start to adopt).
pub async fn run(config_path: &Path, options: RunOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // First: a signal during start-up is then a clean stop once filtering, never an exit
    // that leaves half-made pins behind.
    let signals = event_loop::Signals::install()?;
    let ConfigRead {
        base: config_base,
        merged: config_geo,
        geo,
    } = read_config_with_geo(config_path.to_owned()).await?;
    // The feeds' last good copies: enforced from the first packet, whatever their sources
    // answer later.
    let feeds = {
        let (list, dir) = (config_geo.feeds.clone(), config_geo.state.dir.join("feeds"));
        tokio::task::spawn_blocking(move || Feeds::load(&list, &dir, Now::read().wall))
            .await
            .context("the feed loader panicked")?
    };
    let feed_sets = feeds.sets();
    let config = feeds_task::merge_feeds(&config_geo, &feed_sets);
    tracing::debug!(elapsed = ?started.elapsed(), "config read");
    let Some(interface) = options
        .interface
        .clone()
        .or_else(|| config.interface.clone())
    else {
        bail!(
            "no interface: set `interface` in {} or pass --interface",
            config_path.display()
        );
    };
    preflight(&interface)?;
    let token = check_api(&config)?;
    let redis_credentials = check_cluster(&config)?;
    crate::api::serve::raise_fd_limit();
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
    let mut loaded = None;
    // Fill the tables before attaching: no packet may see an empty list.
    let placement = Placement {
        interface: interface.clone(),
        xdp_mode: String::new(),
    };
    let store = Store::open(&config.state.dir)?;
    let (mut ctl, drift) =
        Controller::start(
            &config,
            placement,
            Some(store),
            Now::read(),
            || match loading.join() {
                Ok(Ok((dp, pinned))) => {
                    adopted = pinned;
                    let Dataplane {
                        program,
                        backend,
                        events,
                    } = dp;
                    loaded = Some((program, events));
                    Ok(backend)
                }
                Ok(Err(e)) => Err(ControllerError::Dataplane(e)),
                Err(_) => Err(ControllerError::Dataplane(DataplaneError::Missing {
                    kind: "program (the loader panicked)",
                    name: "ipguard",
                })),
            },
        )?;
    tracing::debug!(elapsed = ?started.elapsed(), "lists compiled and written");
    // Pins this start made itself go again if it fails before filtering (adopted ones stay:
    // they are what keeps the previous program filtering).
    let mut fresh_pins = FreshPins((!adopted).then(|| config.state.pin_dir.clone()));
    let (mut program, events) = loaded.context("the XDP program was not loaded")?;
    let events = events.context("the event ring buffer was already taken")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd (which owns the ring buffer) lives.
    let events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
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
    match controller::interface_addresses() {
        Ok(addrs) => ctl.set_interface_addresses(addrs, Now::read()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this host's addresses (not protected until they can be read)")
        }
    }
    // The rules' hostnames once before filtering (each name with a timeout), then on the
    // resolver's task.
    let (rules, last) = ctl.rules();
    let (compiled, cache) = resolver::resolve(&rules, &last).await;
    if let Err(e) = ctl.set_rules(&compiled, cache) {
        tracing::error!(error = %e, "cannot write the rules to the tables");
    }
    let ctl: Shared = Arc::new(Mutex::new(ctl));
    let mode = match program.attach_pinned(&interface, config.xdp_mode)? {
        Some(mode) => {
            let _ = std::fs::write(
                attachment_file(&config),
                format!("{interface} {}\n", mode.as_str()),
            );
            mode.as_str().to_owned()
        }
        None => {
            let previous = std::fs::read_to_string(attachment_file(&config)).unwrap_or_default();
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
    locked(&ctl).set_xdp_mode(mode.clone());
    locked(&ctl).set_geo(geo.clone());
    locked(&ctl).set_feed_sets(feed_sets.clone());
    fresh_pins.0 = None;
    let ([whitelist, graylist, blacklist], compiled) = locked(&ctl).sizes();
    tracing::info!(
        interface = %interface,
        mode,
        whitelist,
        graylist,
        blacklist,
        rules = config.rules.len(),
        rate_rules = config.rate_limit.len(),
        compiled_entries = compiled,
        api = %config.api.listen,
        startup = ?started.elapsed(),
        "ipguard is filtering"
    );

    // The fleet's link: its own task; it never stops the daemon.
    let reports = config
        .cluster
        .as_ref()
        .map(crate::cluster::FleetReports::new);
    let fleet = config
        .cluster
        .clone()
        .zip(reports.clone())
        .map(|(cluster, reports)| {
            let wake = locked(&ctl).join_fleet(&cluster);
            tracing::info!(
                redis = cluster.redis,
                node = cluster.node,
                prefix = cluster.prefix,
                "joining the fleet"
            );
            tokio::spawn(crate::cluster::run(
                ctl.clone(),
                cluster,
                redis_credentials,
                config.state.dir.clone(),
                wake,
                reports,
            ))
        });
    let mut looped = event_loop::EventLoop::new(
        ctl.clone(),
        config,
        config_path.to_owned(),
        events,
        signals,
        program,
        interface.clone(),
    );
    looped.fleet_reports = reports;
    looped.geo = geo;
    looped.config_base = config_base;
    looped.config_geo = config_geo;
    looped.feed_sets = feed_sets;
    let feed_task = (!feeds.is_empty()).then(|| {
        let (sets_tx, sets_rx) = tokio::sync::mpsc::channel(4);
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(4);
        looped.feed_updates = Some(sets_rx);
        looped.feed_commands = Some(cmd_tx);
        tokio::spawn(feeds_task::run(feeds, ctl.clone(), sets_tx, cmd_rx))
    });
    let (which, config, mut program) = looped.run(listener, token).await?;
    if let Some(task) = fleet {
        task.abort();
    }
    if let Some(task) = feed_task {
        task.abort();
    }
    // The config as last reloaded: an upgrade can set keep_attached with a SIGHUP.
    let keep_attached = options.keep_attached || config.state.keep_attached;
    let mut c = locked(&ctl);
    c.checkpoint(Now::read());
    let stats = c.status(Now::read()).map(|s| s.stats).unwrap_or_default();
    if keep_attached {
        // The pinned link and maps stay: the program keeps filtering with the lists as
        // they are, and the next start adopts them (replacing the program atomically).
        tracing::info!(
            signal = which,
            interface = %interface,
            pin_dir = %config.state.pin_dir.display(),
            passed = stats.passed(),
            dropped = stats.dropped(),
            "exiting; the XDP program stays attached (keep_attached)"
        );
        return Ok(());
    }
    program.detach().context("detaching the XDP program")?;
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

/// Pins made by a start that has not reached filtering yet: removed if it fails.
struct FreshPins(Option<PathBuf>);

impl Drop for FreshPins {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            tracing::debug!(pin_dir = %dir.display(), "start-up failed: removing the pins it made");
            dataplane::remove_pins(dir);
        }
    }
}

/// Reads and validates the config off the event loop (list files may be large), with
/// `[geo]` compiled: the databases opened and their prefixes merged into the config's own
/// list (after its entries, duplicates left out), so that a start and a reload apply them
/// like the file's entries (one diff, additions before removals).
pub(crate) async fn read_config_with_geo(path: PathBuf) -> anyhow::Result<ConfigRead> {
    tokio::task::spawn_blocking(move || {
        let base = Config::from_file(&path)?;
        let (merged, geo) = compile_geo(&base)?;
        Ok(ConfigRead { base, merged, geo })
    })
    .await
    .context("the config reader panicked")?
}

/// A config file as read: as written (to compile `[geo]` again when a database changes)
/// and with the geo prefixes merged (what the controller applies).
pub(crate) struct ConfigRead {
    pub base: Config,
    pub merged: Config,
    pub geo: Option<Arc<GeoState>>,
}

/// See [`read_config_with_geo`]; also what `check-config` runs. Blocking (reads files).
pub fn compile_geo(base: &Config) -> anyhow::Result<(Config, Option<Arc<GeoState>>)> {
    let mut config = base.clone();
    let Some(geo) = &base.geo else {
        return Ok((config, None));
    };
    let mut protection = Protection::new(config.protect.clone());
    if let Ok(addrs) = crate::controller::interface_addresses() {
        protection.set_interfaces(addrs);
    }
    let state = GeoState::load(geo, &protection.nets())?;
    if !state.unmatched.is_empty() {
        tracing::warn!(unknown = ?state.unmatched, "geo: the databases know none of these; check the codes (GB, not UK)");
    }
    let lists = &mut config.lists;
    let list = match (state.list, geo.mode) {
        (ListKind::Graylist, Mode::Enforce) => &mut lists.graylist,
        (ListKind::Graylist, Mode::Monitor) => &mut lists.monitor_graylist,
        (_, Mode::Enforce) => &mut lists.blacklist,
        (_, Mode::Monitor) => &mut lists.monitor_blacklist,
    };
    let have: std::collections::HashSet<IpNet> = list.iter().copied().collect();
    list.extend(state.nets.iter().filter(|n| !have.contains(n)));
    tracing::info!(
        prefixes = state.nets.len(),
        list = %state.list,
        mode = %geo.mode,
        database = ?geo.database,
        asn_database = ?geo.asn_database,
        "geo compiled"
    );
    Ok((config, Some(Arc::new(state))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "t.toml").unwrap()
    }

    #[test]
    fn check_config_refuses_what_run_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        // No token on a non-loopback address.
        let e = check_api(&config("[api]\nlisten = \"0.0.0.0:9180\"\n")).unwrap_err();
        assert!(e.to_string().contains("without a token"), "{e}");
        let with = |text: &str| {
            std::fs::write(&token, text).unwrap();
            check_api(&config(&format!(
                "[api]\nlisten = \"0.0.0.0:9180\"\ntoken_file = \"{}\"\n",
                token.display()
            )))
        };
        for (text, why) in [
            ("", "empty"),
            ("\n\n", "empty"),
            ("short\n", "shorter than 16"),
        ] {
            let e = with(text).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{text:?}: {e:#}");
        }
        assert_eq!(
            with("0123456789abcdef0123\n").unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
        std::fs::remove_file(&token).unwrap();
        assert!(with_missing(&token).is_err());
    }

    fn with_missing(token: &Path) -> anyhow::Result<Option<String>> {
        check_api(&Config::parse(
            &format!("[api]\ntoken_file = \"{}\"\n", token.display()),
            "t.toml",
        )?)
    }
}
