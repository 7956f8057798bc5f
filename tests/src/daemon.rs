//! The daemon binary on a testbed: start it in the server namespace, drive traffic from
//! the client namespace, stop it.

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::{
    ipguard_bin,
    netns::{in_netns, ok, Testbed},
    require_root,
};

/// The testbed of these tests: server 192.0.2.1 / 2001:db8:1::1, client with one allowed
/// and several listed source addresses.
pub fn testbed(tag: &str) -> Testbed {
    require_root();
    let bed = Testbed::new(tag);
    let (srv, cli, si, ci) = (
        bed.srv.clone(),
        bed.cli.clone(),
        bed.srv_if.clone(),
        bed.cli_if.clone(),
    );
    bed.addr(&srv, &si, "192.0.2.1/24");
    bed.addr(&srv, &si, "2001:db8:1::1/64");
    for net in ["198.51.100.0/24", "203.0.113.0/24", "2001:db8:bad::/48"] {
        bed.route(&srv, &si, net);
    }
    for a in [
        "192.0.2.2/24",
        "198.51.100.7/32",
        "198.51.100.8/32",
        "198.51.100.70/32",
        "203.0.113.5/32",
        "203.0.113.200/32",
        "2001:db8:1::2/64",
        "2001:db8:bad::5/128",
    ] {
        bed.addr(&cli, &ci, a);
    }
    // 2001:db8:1::/64 is on-link through the address itself.
    bed
}

/// The daemon, killed (SIGKILL) if a test fails before stopping it.
pub struct Daemon {
    child: Option<Child>,
    stderr_path: std::path::PathBuf,
}

impl Daemon {
    /// Starts the daemon with `config_text`, to which a `[state]` section private to this
    /// testbed is added (state in `dir`, pins under /sys/fs/bpf/<testbed>) unless it has one.
    pub fn start(bed: &Testbed, dir: &std::path::Path, config_text: &str) -> Daemon {
        let config = dir.join("ipguard.toml");
        std::fs::write(&config, with_state(bed, dir, config_text)).unwrap();
        Self::spawn(bed, dir, &config)
    }

    /// Starts the daemon on an existing config file (e.g. for a restart).
    pub fn spawn(bed: &Testbed, dir: &std::path::Path, config: &std::path::Path) -> Daemon {
        Self::spawn_with(bed, dir, config, None)
    }

    /// Like [`Daemon::spawn`], with `resolv_conf` in place of /etc/resolv.conf for the
    /// daemon alone (a mount namespace of its own), so that a test decides what its
    /// hostname lookups meet.
    pub fn spawn_with(
        bed: &Testbed,
        dir: &std::path::Path,
        config: &std::path::Path,
        resolv_conf: Option<&std::path::Path>,
    ) -> Daemon {
        Self::spawn_env(bed, dir, config, resolv_conf, &[], &[], None)
    }

    /// Like [`Daemon::start`], with environment variables and extra `run` arguments (the
    /// systemd notify socket, `--log-format`).
    pub fn start_env(
        bed: &Testbed,
        dir: &std::path::Path,
        config_text: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let config = dir.join("ipguard.toml");
        std::fs::write(&config, with_state(bed, dir, config_text)).unwrap();
        Self::spawn_env(bed, dir, &config, None, env, args, None)
    }

    /// Like [`Daemon::start`], with `program` (a wrapper and its arguments, ending with the
    /// binary, e.g. `setpriv ... /usr/sbin/ipguard`) in place of IPGUARD_BIN.
    pub fn start_program(
        bed: &Testbed,
        dir: &std::path::Path,
        config_text: &str,
        program: &[String],
    ) -> Daemon {
        let config = dir.join("ipguard.toml");
        std::fs::write(&config, with_state(bed, dir, config_text)).unwrap();
        Self::spawn_env(bed, dir, &config, None, &[], &[], Some(program))
    }

    fn spawn_env(
        bed: &Testbed,
        dir: &std::path::Path,
        config: &std::path::Path,
        resolv_conf: Option<&std::path::Path>,
        env: &[(&str, &str)],
        args: &[&str],
        program: Option<&[String]>,
    ) -> Daemon {
        let stderr_path = dir.join("daemon.log");
        let log = std::fs::File::create(&stderr_path).unwrap();
        // nsenter switches only the network namespace (ip netns exec would also remount /sys).
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", bed.srv));
        if let Some(resolv) = resolv_conf {
            cmd.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind '{}' /etc/resolv.conf && exec \"$0\" \"$@\"",
                    resolv.display()
                ));
        }
        match program {
            Some(program) => cmd.args(program),
            None => cmd.arg(ipguard_bin()),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(config)
            .args(["--interface", &bed.srv_if])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the daemon");
        let mut d = Daemon {
            child: Some(child),
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bed.srv_has_xdp() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early with {status}: {}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not attach within 20 s: {}",
                d.log()
            );
            sleep(Duration::from_millis(50));
        }
        d
    }

    /// Waits until the daemon's log has a line containing every one of `needles`;
    /// returns that line, or `None` after `timeout`.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, sig) };
    }

    /// SIGKILL, as a crash would: no cleanup runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        match crate::process::terminate(&mut child, Duration::from_secs(10)) {
            Ok(Some(status)) => (status, self.log()),
            Ok(None) => panic!("daemon ignored SIGTERM for 10 s: {}", self.log()),
            Err(e) => panic!("waiting for the daemon: {e}"),
        }
    }
}

/// The pin directory of a testbed's daemon.
pub fn pin_dir(bed: &Testbed) -> String {
    format!("/sys/fs/bpf/{}", bed.srv)
}

/// `config_text` with a `[state]` section private to the testbed.
pub fn with_state(bed: &Testbed, dir: &std::path::Path, config_text: &str) -> String {
    if config_text.contains("[state]") {
        return config_text.to_owned();
    }
    format!(
        "{config_text}\n[state]\ndir = \"{}\"\npin_dir = \"{}\"\n",
        dir.join("state").display(),
        pin_dir(bed)
    )
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn ping(bed: &Testbed, src: &str, dst: &str) -> bool {
    ok(&[
        "ip", "netns", "exec", &bed.cli, "ping", "-c", "1", "-W", "1", "-I", src, dst,
    ])
}

/// A TCP connect from `src` to `dst`: true if the handshake completes within 1 s.
pub fn connect(bed: &Testbed, src: &str, dst: SocketAddr) -> bool {
    let src: std::net::IpAddr = src.parse().unwrap();
    in_netns(&bed.cli, move || {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
        sock.connect_timeout(&dst.into(), Duration::from_secs(1))
            .is_ok()
    })
}

/// A listener in the server namespace that accepts and closes connections until dropped.
pub fn listener(bed: &Testbed, addr: &str) -> SocketAddr {
    let addr: SocketAddr = addr.parse().unwrap();
    let l: TcpListener = in_netns(&bed.srv, move || TcpListener::bind(addr).unwrap());
    let local = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s: TcpStream = s;
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = s.read(&mut [0u8; 16]);
        }
    });
    local
}

/// Runs the `ipguard` CLI inside the server namespace (where the API listens on loopback).
pub fn cli(bed: &Testbed, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", bed.srv))
        .arg(ipguard_bin())
        .args(args)
        .output()
        .expect("run the ipguard CLI")
}

/// Runs the CLI and returns its stdout; panics with its stderr if it fails.
pub fn cli_ok(bed: &Testbed, args: &[&str]) -> String {
    let out = cli(bed, args);
    assert!(
        out.status.success(),
        "ipguard {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET path` on the daemon's API (127.0.0.1:9180 in the server namespace): status and body.
pub fn http_get(bed: &Testbed, path: &str) -> (u16, String) {
    http(bed, "GET", path, None)
}

/// A request to the daemon's API (127.0.0.1:9180 in the server namespace), with a JSON
/// body if given: status and body.
pub fn http(bed: &Testbed, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::Write as _;
    let request = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    };
    let response = in_netns(&bed.srv, move || {
        let mut s = TcpStream::connect("127.0.0.1:9180").expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Makes every address of `net` usable as a source in the client namespace (a `local`
/// route: sockets bind to them) and reachable from the server (through the client).
pub fn source_range(bed: &Testbed, net: &str) {
    crate::netns::sh(&[
        "ip", "-n", &bed.cli, "route", "add", "local", net, "dev", "lo",
    ]);
    // Through the client's own address, not on-link: answers to thousands of sources
    // then need one neighbour entry, not one each (the kernel's ARP table is shared by
    // every namespace, and an overflow breaks every test running beside this one).
    let via = if net.contains(':') {
        "2001:db8:1::2"
    } else {
        "192.0.2.2"
    };
    crate::netns::sh(&[
        "ip",
        "-n",
        &bed.srv,
        "route",
        "add",
        net,
        "via",
        via,
        "dev",
        &bed.srv_if,
    ]);
}

/// `per_source` TCP SYNs from each of `sources` to `dst`, all within a moment: each
/// socket connects (non-blocking: the SYN leaves at once) and is closed again, so the fd
/// limit never matters.
pub fn syn_flood(bed: &Testbed, sources: &[std::net::IpAddr], dst: SocketAddr, per_source: usize) {
    syn_flood_from(&bed.cli, sources, dst, per_source)
}

/// [`syn_flood`] from namespace `ns` (for a thread that cannot borrow the testbed).
pub fn syn_flood_from(ns: &str, sources: &[std::net::IpAddr], dst: SocketAddr, per_source: usize) {
    let sources = sources.to_vec();
    in_netns(ns, move || {
        for src in sources {
            for _ in 0..per_source {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(dst),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                s.set_nonblocking(true).unwrap();
                // Closed with a reset: no orphan retrying its FIN for minutes (and
                // keeping the deleted namespace alive) when the filter drops the answers.
                s.set_linger(Some(Duration::ZERO)).unwrap();
                s.bind(&SocketAddr::new(src, 0).into()).unwrap();
                let _ = s.connect(&dst.into());
            }
        }
    });
}
