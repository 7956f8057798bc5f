//! `cargo xtask run`: the daemon on a demo testbed (two network namespaces joined by a veth
//! pair) that this command creates and always removes, or on a real interface.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{build, display, ipguard_bin, is_root, run_checked, setup, workspace_root};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Daemon config file [default: ipguard.example.toml in the workspace root].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Build and run the release binary.
    #[arg(long)]
    release: bool,
    /// Run on a real interface (given with --interface) instead of the demo testbed.
    #[arg(long, requires = "interface")]
    no_demo: bool,
    /// The real interface to attach to (only with --no-demo).
    #[arg(long, requires = "no_demo")]
    interface: Option<String>,
    /// Stop the daemon (SIGTERM) after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
}

/// Server side: the daemon attaches to IF_SRV here.
const NS_SRV: &str = "ipgdemo-srv";
/// Client side: the pings come from here, from several source addresses.
const NS_CLI: &str = "ipgdemo-cli";
const IF_SRV: &str = "ipg0";
const IF_CLI: &str = "ipg1";
/// Fixed, locally administered MACs, so that static neighbour entries can be set up front.
const MAC_SRV: &str = "02:69:70:67:00:00";
const MAC_CLI: &str = "02:69:70:67:00:01";

const SRV_ADDRS: &[&str] = &["192.0.2.1/24", "2001:db8:1::1/64"];
const CLI_ADDRS: &[&str] = &[
    "192.0.2.2/24",
    "198.51.100.7/32",
    "198.51.100.8/32",
    "203.0.113.5/32",
    "2001:db8:1::2/64",
    "2001:db8:bad::5/128",
];
/// Return routes from the server to the client's extra sources.
const SRV_ROUTES: &[&str] = &["198.51.100.0/24", "203.0.113.0/24", "2001:db8:bad::/48"];
/// On-link routes from the client to the server.
const CLI_ROUTES: &[&str] = &["192.0.2.0/24", "2001:db8:1::/64"];

/// What to try from another terminal: (source, destination, expected outcome).
const TRIES: &[(&str, &str, &str)] = &[
    ("192.0.2.2", "192.0.2.1", "passes (unlisted)"),
    (
        "203.0.113.5",
        "192.0.2.1",
        "dropped (blacklist 203.0.113.0/24)",
    ),
    (
        "198.51.100.7",
        "192.0.2.1",
        "dropped (blacklist 198.51.100.7)",
    ),
    ("198.51.100.8", "192.0.2.1", "passes"),
    (
        "2001:db8:bad::5",
        "2001:db8:1::1",
        "dropped (blacklist 2001:db8:bad::/48)",
    ),
    ("2001:db8:1::2", "2001:db8:1::1", "passes (unlisted)"),
];

/// How long the daemon gets to detach after SIGINT/SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

pub fn run(args: RunArgs) -> Result<()> {
    if !is_root() {
        bail!("running the daemon (XDP attach, network namespaces) needs root; run as root");
    }
    let config = match &args.config {
        Some(path) => std::path::absolute(path)
            .with_context(|| format!("resolving --config {}", path.display()))?,
        None => workspace_root().join("ipguard.example.toml"),
    };
    if !config.is_file() {
        bail!("config file {} does not exist", config.display());
    }
    setup::setup()?;
    build(args.release)?;
    let bin = ipguard_bin(args.release)?;
    let duration = args.duration.map(Duration::from_secs);

    catch_signals()?;
    if let Some(interface) = &args.interface {
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--interface", interface]);
        return supervise(cmd, duration);
    }

    // Dropping the testbed deletes both namespaces: on success, on error and after a signal.
    let _testbed = Testbed::create()?;
    if SIGNAL.load(Ordering::SeqCst) != 0 {
        bail!("interrupted while creating the demo testbed");
    }
    // nsenter switches only the network namespace: `ip netns exec` would also remount /sys
    // and hide the host's /sys/fs/bpf, where the daemon pins its maps.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{NS_SRV}"))
        .arg(&bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--interface", IF_SRV]);
    print_tries(&config);
    supervise(cmd, duration)
}

fn print_tries(config: &Path) {
    println!();
    println!(
        "demo: the daemon filters {IF_SRV} in namespace {NS_SRV} with {}",
        config.display()
    );
    println!("demo: try from another terminal (expectations hold for ipguard.example.toml):");
    let cmds: Vec<String> = TRIES
        .iter()
        .map(|(src, dst, _)| format!("ip netns exec {NS_CLI} ping -c1 -W1 -I {src} {dst}"))
        .collect();
    let width = cmds.iter().map(String::len).max().unwrap_or(0);
    for (cmd, (_, _, outcome)) in cmds.iter().zip(TRIES) {
        println!("  {cmd:<width$}  # {outcome}");
    }
    println!("demo: the API listens on 127.0.0.1:9180 inside {NS_SRV}; the CLI runs there too:");
    println!("  nsenter --net=/run/netns/{NS_SRV} target/debug/ipguard status");
    println!("  nsenter --net=/run/netns/{NS_SRV} target/debug/ipguard status 203.0.113.5");
    println!("  nsenter --net=/run/netns/{NS_SRV} target/debug/ipguard add blacklist 198.51.100.8 --duration 1m");
    println!("demo: Ctrl-C stops the daemon and removes the namespaces");
    println!();
}

/// The demo namespaces and veth pair; dropping it removes them.
struct Testbed;

impl Testbed {
    fn create() -> Result<Testbed> {
        remove_testbed();
        let testbed = Testbed;
        let (srv, cli) = (["-n", NS_SRV], ["-n", NS_CLI]);
        ip(&["netns", "add", NS_SRV])?;
        ip(&["netns", "add", NS_CLI])?;
        ip(&[
            "link", "add", IF_SRV, "address", MAC_SRV, "type", "veth", "peer", "name", IF_CLI,
            "address", MAC_CLI,
        ])?;
        ip(&["link", "set", IF_SRV, "netns", NS_SRV])?;
        ip(&["link", "set", IF_CLI, "netns", NS_CLI])?;

        for (ns, dev, addrs) in [(srv, IF_SRV, SRV_ADDRS), (cli, IF_CLI, CLI_ADDRS)] {
            ip(&[&ns[..], &["link", "set", "lo", "up"]].concat())?;
            for addr in addrs {
                // IPv6 duplicate address detection would hold the address back for ~2 s.
                let nodad: &[&str] = if addr.contains(':') { &["nodad"] } else { &[] };
                ip(&[&ns[..], &["addr", "add", addr, "dev", dev], nodad].concat())?;
            }
            ip(&[&ns[..], &["link", "set", dev, "up"]].concat())?;
        }
        for net in SRV_ROUTES {
            ip(&[&srv[..], &["route", "replace", net, "dev", IF_SRV]].concat())?;
        }
        for net in CLI_ROUTES {
            // Normally already there, added by the kernel with the /24 and /64 addresses.
            let family = if net.contains(':') { "-6" } else { "-4" };
            let shown = Command::new("ip")
                .args([
                    "-n", NS_CLI, family, "route", "show", "exact", net, "dev", IF_CLI,
                ])
                .output()
                .context("running ip route show")?;
            if shown.stdout.is_empty() {
                ip(&[&cli[..], &["route", "add", net, "dev", IF_CLI]].concat())?;
            }
        }

        // Static neighbours: ARP/NDP from a blacklisted source is IP traffic to the filter too
        // (an IPv6 neighbour solicitation carries the ping's source), and a dropped one would
        // leave FAILED entries that make later, allowed pings fail. This way the filter sees
        // only the pings.
        for addr in SRV_ADDRS {
            let host = addr.split('/').next().unwrap_or(addr);
            ip(&[
                &cli[..],
                &["neigh", "replace", host, "lladdr", MAC_SRV],
                &["dev", IF_CLI, "nud", "permanent"],
            ]
            .concat())?;
        }
        for addr in CLI_ADDRS {
            let host = addr.split('/').next().unwrap_or(addr);
            ip(&[
                &srv[..],
                &["neigh", "replace", host, "lladdr", MAC_CLI],
                &["dev", IF_SRV, "nud", "permanent"],
            ]
            .concat())?;
        }
        Ok(testbed)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        remove_testbed();
    }
}

/// Removes the namespaces (which takes the veth pair with them) and a veth left in the
/// host namespace by a run that died half-way. Best effort: reports, never fails.
fn remove_testbed() {
    for ns in [NS_CLI, NS_SRV] {
        if Path::new("/run/netns").join(ns).exists() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
    for dev in [IF_SRV, IF_CLI] {
        let exists = Command::new("ip")
            .args(["link", "show", "dev", dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if exists {
            if let Err(e) = ip(&["link", "del", dev]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    run_checked(Command::new("ip").args(args))
}

/// The last SIGINT/SIGTERM/SIGHUP received and not yet handled (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// From here on xtask survives SIGINT/SIGTERM/SIGHUP so that it can stop the daemon and
/// clean up; `supervise` forwards them.
fn catch_signals() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value and the
        // handler only stores to an atomic.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("installing a handler for signal {sig}"));
        }
    }
    Ok(())
}

/// Runs the daemon until it exits. The first SIGINT/SIGTERM to xtask (or the end of
/// `duration`) is forwarded to it once; a second signal, or STOP_GRACE without exiting,
/// kills it.
fn supervise(mut cmd: Command, duration: Option<Duration>) -> Result<()> {
    // Its own process group: a terminal's Ctrl-C reaches xtask only, and xtask forwards it
    // exactly once (the daemon detaches on the first signal).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null());
    println!("$ {}", display(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    let pid = libc::pid_t::try_from(child.id()).context("daemon pid out of range")?;
    let started = Instant::now();
    let mut stop_sent: Option<Instant> = None;
    let mut killed = false;
    let send = |sig: libc::c_int| {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet
        // (try_wait has not returned its status), so the pid is still ours.
        if unsafe { libc::kill(pid, sig) } != 0 {
            eprintln!(
                "warning: kill({pid}, {sig}): {}",
                std::io::Error::last_os_error()
            );
        }
    };
    loop {
        if let Some(status) = child.try_wait().context("waiting for the daemon")? {
            if status.success() {
                println!("daemon exited: {status}");
                return Ok(());
            }
            bail!("daemon exited with {status}");
        }
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            if stop_sent.is_none() {
                // SIGHUP (terminal gone) becomes a plain stop.
                let fwd = if sig == libc::SIGHUP {
                    libc::SIGTERM
                } else {
                    sig
                };
                println!("xtask: got signal {sig}; forwarding signal {fwd} to the daemon");
                send(fwd);
                stop_sent = Some(Instant::now());
            } else if !killed {
                println!("xtask: second signal; killing the daemon");
                send(libc::SIGKILL);
                killed = true;
            }
        }
        if let Some(limit) = duration {
            if stop_sent.is_none() && started.elapsed() >= limit {
                println!(
                    "xtask: --duration {}s elapsed; sending SIGTERM to the daemon",
                    limit.as_secs()
                );
                send(libc::SIGTERM);
                stop_sent = Some(Instant::now());
            }
        }
        if let Some(sent) = stop_sent {
            if !killed && sent.elapsed() >= STOP_GRACE {
                println!(
                    "xtask: daemon still running {}s after the stop signal; killing it",
                    STOP_GRACE.as_secs()
                );
                send(libc::SIGKILL);
                killed = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
