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
    pub fn start(bed: &Testbed, dir: &std::path::Path, config_text: &str) -> Daemon {
        let config = dir.join("ipguard.toml");
        std::fs::write(&config, config_text).unwrap();
        let stderr_path = dir.join("daemon.log");
        let log = std::fs::File::create(&stderr_path).unwrap();
        // nsenter switches only the network namespace (ip netns exec would also remount /sys).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", bed.srv))
            .arg(ipguard_bin())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--interface", &bed.srv_if])
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

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon ignored SIGTERM for 10 s: {}", self.log());
            }
            sleep(Duration::from_millis(20));
        }
    }
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
