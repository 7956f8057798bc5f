//! A fleet on one machine: a Redis server in a namespace of its own (`redis-server` from
//! Debian, no persistence), joined by a bridge to the server namespaces of several
//! testbeds. Everything is removed when the test ends, even when it panics.

use std::{
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::netns::{sh, Netns, Testbed};

/// The hub's address on the bridge (RFC 2544 benchmarking range, private to the test).
pub const HUB_ADDR: &str = "198.18.0.1";
pub const REDIS_PORT: u16 = 6379;
/// The same server's TLS port (`rediss://`).
pub const REDIS_TLS_PORT: u16 = 6380;

/// The hub namespace with its bridge; testbeds are attached with [`Hub::attach`].
pub struct Hub {
    pub ns: Netns,
    attached: u8,
}

impl Hub {
    pub fn new(tag: &str) -> Hub {
        crate::require_root();
        let id = std::process::id() % 100_000;
        let ns = Netns::create(&format!("ipgt{id}{tag}h")).unwrap_or_else(|e| panic!("{e:#}"));
        let n = ns.name.clone();
        sh(&["ip", "-n", &n, "link", "add", "br0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            &n,
            "addr",
            "add",
            &format!("{HUB_ADDR}/24"),
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", &n, "link", "set", "br0", "up"]);
        Hub { ns, attached: 0 }
    }

    /// Joins `bed`'s server namespace to the bridge; returns its address there.
    pub fn attach(&mut self, bed: &Testbed) -> String {
        self.attached += 1;
        let id = std::process::id() % 100_000;
        let (hub_if, node_if) = (
            format!("ig{id}h{}", self.attached),
            format!("ig{id}f{}", self.attached),
        );
        sh(&[
            "ip",
            "link",
            "add",
            &hub_if,
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &node_if,
            "netns",
            &bed.srv,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.ns.name,
            "link",
            "set",
            &hub_if,
            "master",
            "br0",
            "up",
        ]);
        let addr = format!("198.18.0.{}", 10 + self.attached);
        sh(&[
            "ip",
            "-n",
            &bed.srv,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &node_if,
        ]);
        sh(&["ip", "-n", &bed.srv, "link", "set", &node_if, "up"]);
        addr
    }
}

/// A Redis server in the hub, bound to [`HUB_ADDR`] only, with no persistence: a restart
/// starts empty. Killed on drop.
pub struct Redis {
    ns: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start(hub: &Hub) -> Redis {
        let mut r = Redis {
            ns: hub.ns.name.clone(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.make_certificates();
        r.restart();
        r
    }

    /// A test CA and a server certificate for [`HUB_ADDR`] signed by it (openssl), for the
    /// TLS port.
    fn make_certificates(&self) {
        let d = self.dir.path();
        std::fs::write(d.join("san.ext"), format!("subjectAltName=IP:{HUB_ADDR}\n")).unwrap();
        let cn = format!("/CN={HUB_ADDR}");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=ipguard test CA",
                ],
            ]
            .concat(),
            [
                &["req"][..],
                &ec,
                &["-keyout", "srv.key", "-out", "srv.csr", "-subj", &cn],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(d)
                .output()
                .expect("openssl (Debian's openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The CA certificate the server's is signed by (for `cluster.ca_file`).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The TLS URL of the server.
    pub fn tls_url(&self) -> String {
        format!("rediss://{HUB_ADDR}:{REDIS_TLS_PORT}/0")
    }

    /// Starts the server (again, empty) and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "redis-server",
                "--bind",
                HUB_ADDR,
            ])
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args([
                "--tls-port",
                &REDIS_TLS_PORT.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--tls-cert-file", "srv.pem", "--tls-key-file", "srv.key"])
            .args(["--tls-ca-cert-file", "ca.pem"])
            .current_dir(self.dir.path())
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `cargo xtask setup`");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10 s"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            // `ip netns exec` is gone; the server it started may take a moment more.
            let _ = Command::new("pkill")
                .args(["-f", &format!("redis-server {HUB_ADDR}:{REDIS_PORT}")])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.cli(&["PING"]).trim() == "PONG" && Instant::now() < deadline {
                sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis-cli` against the server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "redis-cli", "-h", HUB_ADDR])
            .args(["-p", &REDIS_PORT.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is not installed: run `cargo xtask setup`");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self) -> String {
        format!("redis://{HUB_ADDR}:{REDIS_PORT}/0")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
