//! `ipguard run`: load, fill the tries, attach, then react to rate events, expiries and
//! rule refreshes until SIGINT/SIGTERM. One task does all of it, so one task owns every
//! map write.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use aya::maps::{MapData, RingBuf};
use caps::{CapSet, Capability};
use ipguard_common::{RateConfig, RateEvent, SourceKey};
use ipnet::IpNet;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    time::Instant,
};

use crate::{
    config::{Config, RateLimit, RuleAction, RuleSource},
    dataplane::{self, Dataplane, ListTable as _},
    duration::format_duration,
    lists::ListKind,
    policy::{
        compile::{Change, Layer, ListState, TrieOp},
        engine::{Command, Engine, Origin, Outcome, Ts},
        window,
    },
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

/// Wall-clock now.
pub fn wall_now() -> Ts {
    Ts(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A kernel timestamp on the wall clock.
fn ktime_to_wall(ktime_ns: u64) -> Ts {
    let ago_ms = mono_now_ns().saturating_sub(ktime_ns) / 1_000_000;
    Ts(wall_now().0.saturating_sub(ago_ms))
}

const fn layer(list: ListKind) -> Layer {
    match list {
        ListKind::Whitelist => Layer::White,
        ListKind::Graylist => Layer::Gray,
        ListKind::Blacklist => Layer::Black,
    }
}

/// The policy engine, the compiled trie contents and the kernel, kept in step.
pub struct Controller {
    pub dp: Dataplane,
    pub engine: Engine,
    pub lists: ListState,
    rates: Vec<RateLimit>,
    accumulate: bool,
    /// Last successful resolution of each hostname in the rules.
    resolved: HashMap<String, Vec<IpNet>>,
}

impl Controller {
    /// Loads the config's lists and rate rules into a loaded (not yet attached) program.
    pub fn new(mut dp: Dataplane, config: &Config) -> anyhow::Result<Self> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        dp.set_rates(&window::kernel_rules(&config.rate_limit, cpus as u32))
            .context("writing the rate rules")?;
        let mut c = Self {
            dp,
            engine: Engine::new(config.escalation.clone(), config.report),
            lists: ListState::new(),
            rates: config.rate_limit.clone(),
            accumulate: config.accumulate,
            resolved: HashMap::new(),
        };
        let now = wall_now();
        let mut cmds = Vec::new();
        for (list, nets) in [
            (ListKind::Whitelist, &config.lists.whitelist),
            (ListKind::Graylist, &config.lists.graylist),
            (ListKind::Blacklist, &config.lists.blacklist),
        ] {
            for net in nets {
                cmds.extend(
                    c.engine
                        .add(list, *net, None, "config".into(), Origin::Config, now),
                );
            }
        }
        c.apply(cmds)?;
        Ok(c)
    }

    /// Applies engine commands to the compiled lists and writes the difference.
    pub fn apply(&mut self, cmds: Vec<Command>) -> anyhow::Result<()> {
        if cmds.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change> = cmds
            .into_iter()
            .map(|c| match c {
                Command::Block {
                    net,
                    list,
                    until,
                    reason,
                    origin,
                } => {
                    tracing::info!(
                        net = %net,
                        list = list.name(),
                        until = until.map(|t| t.0),
                        origin = origin.name(),
                        reason,
                        "listed"
                    );
                    Change::Insert(net, layer(list))
                }
                Command::Unblock { net, list } => {
                    tracing::info!(net = %net, list = list.name(), "unlisted");
                    Change::Remove(net, layer(list))
                }
            })
            .collect();
        let ops = self.lists.apply(changes);
        self.write(&ops)
    }

    fn write(&mut self, ops: &[TrieOp]) -> anyhow::Result<()> {
        let table = self.dp.table();
        for op in ops {
            match *op {
                TrieOp::Write(net, entry) => table.insert(net, entry),
                TrieOp::Delete(net) => table.remove(net),
            }
            .context("updating the kernel tries")?;
        }
        Ok(())
    }

    /// Resolves the rules' hostnames (keeping the last good answer on failure) and writes
    /// the rule layer.
    pub async fn refresh_rules(&mut self, rules: &[crate::config::Rule]) -> anyhow::Result<()> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let nets = match &rule.source {
                RuleSource::Net(net) => vec![*net],
                RuleSource::Host(host) => {
                    match tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::net::lookup_host((host.as_str(), 0)),
                    )
                    .await
                    {
                        Ok(Ok(addrs)) => {
                            let mut nets: Vec<IpNet> = addrs.map(|a| IpNet::from(a.ip())).collect();
                            nets.sort();
                            nets.dedup();
                            tracing::debug!(host, addresses = ?nets, "resolved rule hostname");
                            self.resolved.insert(host.clone(), nets.clone());
                            nets
                        }
                        failed => {
                            let why = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out after 5s".into(),
                            };
                            let last = self.resolved.get(host).cloned().unwrap_or_default();
                            tracing::warn!(host, error = why, kept = ?last, "cannot resolve rule hostname; keeping the last known addresses");
                            last
                        }
                    }
                }
            };
            compiled.push((i as u32, rule.action == RuleAction::Deny, nets));
        }
        let ops = self.lists.set_rules(&compiled);
        self.write(&ops)
    }

    /// Handles a batch of rate events: sums the CPUs' windows of each signalled source and
    /// rule, and hands confirmed violations to the engine.
    pub fn on_events(&mut self, events: &[RateEvent]) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for ev in events {
            if !seen.insert((ev.addr, ev.rule)) {
                continue;
            }
            let ip = IpAddr::from(SourceKey { addr: ev.addr });
            let Some(rule) = self.rates.get(ev.rule as usize) else {
                continue;
            };
            let Some(per_cpu) = self.dp.source_per_cpu(ip)? else {
                continue;
            };
            let window_ns = u64::try_from(rule.window.as_nanos()).unwrap_or(u64::MAX);
            let windows = per_cpu.iter().map(|c| c.windows[ev.rule as usize]);
            let count = window::observed(windows, window_ns, ev.ktime_ns, self.accumulate);
            if count <= u64::from(rule.count) {
                continue;
            }
            let ports = if rule.ports.is_empty() {
                String::new()
            } else {
                format!(" to ports {:?}", rule.ports)
            };
            let reason = format!(
                "rate limit: {count} {}{ports} in {} > {} (rule {})",
                rule.kind,
                format_duration(rule.window),
                rule.count,
                ev.rule + 1
            );
            let (outcome, cmds) = self.engine.violation(ip, reason.clone(), wall_now());
            match outcome {
                Outcome::Banned { list, strikes, .. } => {
                    self.apply(cmds)?;
                    // From the packet that signalled to the ban being in the trie.
                    let reaction_ms = mono_now_ns().saturating_sub(ev.ktime_ns) as f64 / 1e6;
                    tracing::info!(source = %ip, list = list.name(), strikes, reaction_ms, "rate violation");
                }
                Outcome::Forgiven { violations } => {
                    tracing::info!(source = %ip, violations, reason, "violation forgiven (grace)")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A report from the protected application.
    pub fn report(&mut self, ip: IpAddr, reason: String) -> anyhow::Result<Outcome> {
        let (outcome, cmds) = self.engine.report(ip, reason, wall_now());
        self.apply(cmds)?;
        Ok(outcome)
    }

    /// Expiries and retention due by now.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        let dp = &self.dp;
        let cmds = self.engine.tick(wall_now(), |net| {
            let ip = (net.prefix_len() == net.max_prefix_len()).then_some(net.addr())?;
            let totals = dp.source(ip).ok()??;
            (totals.last_drop_ns > 0).then(|| ktime_to_wall(totals.last_drop_ns))
        });
        self.apply(cmds)
    }

    /// When `tick` next has work, as a tokio instant.
    fn next_deadline(&self) -> Option<Instant> {
        let at = self.engine.next_deadline()?;
        let now = wall_now();
        Some(Instant::now() + at.since(now))
    }
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

/// Runs the daemon until SIGINT or SIGTERM; returns after detaching.
pub async fn run(config_path: &Path, interface: Option<String>) -> anyhow::Result<()> {
    let config = Config::from_file(config_path)?;
    let Some(interface) = interface.or_else(|| config.interface.clone()) else {
        bail!(
            "no interface: set `interface` in {} or pass --interface",
            config_path.display()
        );
    };
    preflight(&interface)?;

    let mut dp = Dataplane::load(&config.maps)?;
    let events = dp
        .take_events()
        .context("the event ring buffer was already taken")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd (which owns the ring buffer) lives.
    let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    // Fill the tries before attaching: no packet may see an empty list.
    let mut ctl = Controller::new(dp, &config)?;
    ctl.refresh_rules(&config.rules).await?;
    let mode = ctl.dp.attach(&interface, config.xdp_mode)?;
    tracing::info!(
        interface = %interface,
        mode = mode.name(),
        whitelist = ctl.engine.count(ListKind::Whitelist),
        graylist = ctl.engine.count(ListKind::Graylist),
        blacklist = ctl.engine.count(ListKind::Blacklist),
        rules = config.rules.len(),
        rate_rules = config.rate_limit.len(),
        trie_entries = ctl.lists.written().len(),
        "ipguard is filtering"
    );

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let has_hosts = config
        .rules
        .iter()
        .any(|r| matches!(r.source, RuleSource::Host(_)));
    let mut refresh =
        tokio::time::interval_at(Instant::now() + config.rules_refresh, config.rules_refresh);
    let mut batch = Vec::new();
    let which = loop {
        let deadline = ctl.next_deadline();
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            ready = events.readable_mut() => {
                let mut guard = ready.context("waiting for rate events")?;
                batch.clear();
                drain(guard.get_inner_mut(), &mut batch);
                guard.clear_ready();
                ctl.on_events(&batch)?;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                ctl.tick()?;
            }
            _ = refresh.tick(), if has_hosts => {
                ctl.refresh_rules(&config.rules).await?;
            }
        }
    };
    let stats = ctl.dp.stats().unwrap_or_default();
    ctl.dp.detach().context("detaching the XDP program")?;
    tracing::info!(
        signal = which,
        interface = %interface,
        passed = stats.passed(),
        dropped = stats.dropped(),
        "detached; exiting"
    );
    Ok(())
}

/// The configured rate rules in the kernel's form (for tests and benchmarks).
pub fn rate_config(config: &Config) -> RateConfig {
    let cpus = aya::util::nr_cpus().unwrap_or(1) as u32;
    window::kernel_rules(&config.rate_limit, cpus)
}
