//! Network namespaces and veth pairs created by a test and removed when it ends, even
//! when it panics.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
};

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
}

impl Testbed {
    /// Creates the namespaces and the pair. `tag` must be short and unique per test.
    pub fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let bed = Testbed {
            srv: format!("ipgt{id}{tag}s"),
            cli: format!("ipgt{id}{tag}c"),
            srv_if: format!("ig{id}{tag}s"),
            cli_if: format!("ig{id}{tag}c"),
        };
        assert!(
            bed.srv_if.len() <= 15,
            "interface name {} too long",
            bed.srv_if
        );
        bed.cleanup();
        sh(&["ip", "netns", "add", &bed.srv]);
        sh(&["ip", "netns", "add", &bed.cli]);
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
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
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

    fn cleanup(&self) {
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        // Pins a killed daemon left (see daemon::pin_dir).
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.srv));
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (setns is per thread,
/// so the test's own thread stays where it was).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd; only this thread's namespace changes.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in netns panicked")
}
