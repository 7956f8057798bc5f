//! `ipguard run`: load, fill the tries, attach, and hold until SIGINT/SIGTERM.

use std::path::Path;

use anyhow::{bail, Context as _};
use caps::{CapSet, Capability};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::Config,
    dataplane::{self, Dataplane},
    lists,
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
    // Fill the tries before attaching: no packet may see an empty list.
    let compiled = lists::compile(&config.lists);
    let report = dataplane::sync(dp.table(), &compiled).context("writing the lists")?;
    let mode = dp.attach(&interface, config.xdp_mode)?;
    tracing::info!(
        interface = %interface,
        mode = mode.name(),
        whitelist = config.lists.whitelist.len(),
        graylist = config.lists.graylist.len(),
        blacklist = config.lists.blacklist.len(),
        trie_entries = report.inserted,
        "ipguard is filtering"
    );

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let stats = dp.stats().unwrap_or_default();
    dp.detach().context("detaching the XDP program")?;
    tracing::info!(
        signal = which,
        interface = %interface,
        passed = stats.passed(),
        dropped = stats.dropped(),
        "detached; exiting"
    );
    Ok(())
}
