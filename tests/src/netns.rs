//! Network namespaces and veth pairs created by a test (or the bench) and removed when it
//! ends, even when it panics; entering a namespace for a while.

use std::{
    fs::File,
    os::fd::{AsRawFd, OwnedFd},
    process::{Command, Output},
};

use anyhow::{bail, Context as _, Result};

/// A network namespace with loopback up, deleted on drop (with its interfaces, XDP
/// programs, nft tables and iptables rules).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name`, deleting a stale one of that name (left by a killed run) first.
    pub fn create(name: &str) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .context("running ip netns add")?;
        if !out.status.success() {
            bail!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let ns = Netns {
            name: name.to_owned(),
        };
        let out = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .output()
            .context("running ip link")?;
        if !out.status.success() {
            bail!(
                "ip -n {name} link set lo up: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            other => eprintln!("warning: cannot delete namespace {}: {other:?}", self.name),
        }
    }
}

/// While alive, the current thread is in network namespace `ns` (setns is per thread);
/// dropping it returns the thread to the namespace it was in.
pub struct InNetns {
    home: OwnedFd,
}

impl InNetns {
    pub fn enter(ns: &str) -> Result<Self> {
        let home: OwnedFd = File::open("/proc/thread-self/ns/net")
            .context("open /proc/thread-self/ns/net")?
            .into();
        let path = format!("/run/netns/{ns}");
        let target = File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: a valid namespace fd; only this thread's namespace changes.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(InNetns { home })
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        // SAFETY: the fd of the namespace this thread came from.
        let rc = unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        // Carrying on in the wrong namespace would make every later step lie.
        assert_eq!(
            rc,
            0,
            "cannot return to the original network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs a command and panics with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and tells whether it succeeded.
pub fn ok(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Two namespaces joined by a veth pair: `srv` holds `srv_if`, `cli` holds `cli_if`.
pub struct Testbed {
    pub srv: String,
    pub cli: String,
    pub srv_if: String,
    pub cli_if: String,
    // Dropped after the pins are removed (see `Drop`): the server's namespace first.
    _namespaces: [Netns; 2],
}

impl Testbed {
    /// Creates the namespaces and the pair. `tag` must be short and unique per test.
    pub fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let (srv, cli) = (format!("ipgt{id}{tag}s"), format!("ipgt{id}{tag}c"));
        let srv_if = format!("ig{id}{tag}s");
        assert!(srv_if.len() <= 15, "interface name {srv_if} too long");
        // Pins a killed daemon left (see daemon::pin_dir).
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{srv}"));
        let namespaces = [
            Netns::create(&srv).unwrap_or_else(|e| panic!("{e:#}")),
            Netns::create(&cli).unwrap_or_else(|e| panic!("{e:#}")),
        ];
        let bed = Testbed {
            srv,
            cli,
            srv_if,
            cli_if: format!("ig{id}{tag}c"),
            _namespaces: namespaces,
        };
        sh(&[
            "ip",
            "link",
            "add",
            &bed.srv_if,
            "netns",
            &bed.srv,
            "type",
            "veth",
            "peer",
            "name",
            &bed.cli_if,
            "netns",
            &bed.cli,
        ]);
        for (ns, ifname) in [(&bed.srv, &bed.srv_if), (&bed.cli, &bed.cli_if)] {
            sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        bed
    }

    /// Adds an address (v6 without duplicate address detection, which takes seconds).
    pub fn addr(&self, ns: &str, ifname: &str, cidr: &str) {
        if cidr.contains(':') {
            sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", ifname, "nodad"]);
        } else {
            sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", ifname]);
        }
    }

    /// Adds an on-link route.
    pub fn route(&self, ns: &str, ifname: &str, cidr: &str) {
        sh(&["ip", "-n", ns, "route", "add", cidr, "dev", ifname]);
    }

    /// Whether an XDP program is attached to the server-side interface.
    pub fn srv_has_xdp(&self) -> bool {
        let out = sh(&[
            "ip",
            "-n",
            &self.srv,
            "-d",
            "link",
            "show",
            "dev",
            &self.srv_if,
        ]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Pins a killed daemon left (see daemon::pin_dir); the namespaces go after.
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.srv));
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (setns is per thread,
/// so the test's own thread stays where it was).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let _inside = InNetns::enter(&ns).unwrap_or_else(|e| panic!("{e:#}"));
        f()
    })
    .join()
    .expect("thread in netns panicked")
}
