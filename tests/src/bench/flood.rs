//! Section "spoofed-flood": a SYN flood from many spoofed sources at the testbed's top rate
//! while a whitelisted and a normal (unlisted) client ping and make HTTP requests to a
//! server behind ipguard, and the daemon's API is polled. Goals: legitimate delivery
//! ≥ 99 %, API p99 < 100 ms.
//!
//! One veth pair (`netns::Testbed`): the real daemon (`IPGUARD_BIN`, native XDP) runs in
//! the receiver's namespace with a SYN rule (20 per 1 s, graylisted for 1 h); a tiny HTTP
//! server listens there too. The flood comes from `live_tx` (XDP live frames, as in
//! `drop_rate`) in the sender's namespace: 64-byte TCP SYNs to the server's port, each
//! with the next of [`SOURCES`] source addresses. The legitimate clients are extra
//! addresses on the sender's veth and go through the kernel stack, so they share the
//! receiver's veth ring with the flood, as clients share a NIC's ring with an attack.
//!
//! Two phases of the same length, both with the daemon running: the legitimate traffic
//! alone (the baseline), then the same traffic during the flood. Everything is bounded in
//! time; the namespaces, the daemon and the threads are cleaned up on every path.
//!
//! Rows: per legitimate source, ping delivery and HTTP success; API latency; the flood's
//! offered rate and what the XDP program processed (the rest overflowed the veth ring, as
//! on a NIC whose host cannot keep up), sources banned and how fast, XDP drops, CPU of the
//! daemon and of the receiver's NAPI thread.
//!
//! `live_tx` rewrites the IPv4 source and patches both checksums, so the SYNs that pass
//! before their source is banned reach the listener like real ones (the last row counts
//! the receiver's TCP checksum errors, passive opens and SYN cookies).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread::{self, sleep},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ipguard_tests::{
    frames::{self, IPPROTO_TCP, TCP_SYN},
    policy_bench::proc_usage,
    process::terminate,
};
use socket2::{Domain, Socket, Type};

use super::{
    live_tx::{LiveTx, RECEIVER_CPU, SENDER_CPU},
    netns::{ipv4, mac, sysfs_read, sysfs_write, Testbed},
    results::{Results, Row},
    system::{kthreads, online_cpus, run, run_in, run_status, set_affinity, InNetns},
    Config, Section,
};

pub struct SpoofedFlood;

const SECTION: &str = "spoofed-flood";
const BASELINE: &str = "no flood (baseline)";

/// The flood's sources: `SRC_BASE + (n & (SOURCES - 1))`, inside [`SRC_ROUTE`].
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
const SOURCES: u32 = 8192;
/// Where the receiver sends its answers to the flood (through the sender's address), as a
/// server's default route would.
const SRC_ROUTE: &str = "10.0.0.0/8";
/// The legitimate clients: extra addresses on the sender's veth.
const WHITELISTED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const NORMAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// The HTTP server in the receiver's namespace; the flood's SYNs go to it too.
const HTTP_PORT: u16 = 8080;
const SYN_SPORT: u16 = 40_000;
/// Every frame of the flood, like the smallest Ethernet frame.
const FRAME_LEN: usize = 64;
/// The daemon's API inside the receiver's namespace.
const API: &str = "127.0.0.1:9180";

/// Flood length: 10 s in the full run (the figure), 2 s with `--quick`.
const FLOOD_FULL: Duration = Duration::from_secs(10);
const FLOOD_QUICK: Duration = Duration::from_secs(2);
/// One ping per source this often (`ping -i`, root may go below 200 ms).
const PING_INTERVAL: Duration = Duration::from_millis(50);
/// One HTTP request per source this often: 5 SYNs/s, well under the 20/s rule, so the
/// normal source is never banned legitimately (a lost SYN's retransmission included).
const HTTP_INTERVAL: Duration = Duration::from_millis(200);
/// A request not answered within this counts as failed (one SYN retransmission fits).
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// One `GET /v1/status` this often; one not answered within [`API_TIMEOUT`] counts as failed.
const API_INTERVAL: Duration = Duration::from_millis(50);
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// Goals of the issue.
const GOAL_DELIVERY: f64 = 99.0;
const GOAL_API_P99_MS: f64 = 100.0;

/// How long the receiver and the daemon get after a flood before the counters are read.
const DRAIN: Duration = Duration::from_millis(300);
/// Bounds of the daemon's start and stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Section for SpoofedFlood {
    fn name(&self) -> &'static str {
        SECTION
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        let length = if cfg.quick { FLOOD_QUICK } else { FLOOD_FULL };
        // The configured bound is for floods of `flood_time`: scaled to this length.
        let max_packets = (cfg.flood_max_packets as f64 * length.as_secs_f64()
            / cfg.flood_time.as_secs_f64()) as u64;
        let bin = daemon_binary()?;
        // Dropped in reverse order: the daemon, its directory, then the namespaces.
        let bed = Testbed::new("sf")?;
        prepare(&bed)?;
        let server = HttpServer::start(&bed.rx.name, SocketAddrV4::new(rx_ip(&bed), HTTP_PORT))?;
        let mut pin_notes = None;
        for (i, v) in VARIANTS.iter().enumerate() {
            // A fresh daemon (no bans, no pins) for each variant.
            let dir = tempfile::tempdir().context("a directory for the daemon")?;
            let daemon = Daemon::start(&bin, &bed, dir.path(), v.budget)?;
            let notes = pin_notes.get_or_insert_with(|| pin_receiver(&bed)).clone();
            let mut gen = LiveTx::new(
                &bed,
                SRC_BASE,
                v.sources - 1,
                syn_frame(bed.rx_mac, bed.tx_mac, rx_ip(&bed)),
            )?;
            let case = v.case();
            println!(
                "  {case}: {:.0} s per phase; flood of at most {max_packets} 64-byte SYNs; {}",
                length.as_secs_f64(),
                if notes.is_empty() {
                    format!(
                        "sender on CPU {SENDER_CPU}, receiver NAPI thread on CPU {RECEIVER_CPU}"
                    )
                } else {
                    notes.clone()
                }
            );
            if i == 0 {
                println!("  baseline: legitimate traffic alone ...");
                let base = phase(&bed, None, length, max_packets, 0)?;
                phase_rows(out, BASELINE, &base, None, None);
            }
            let before = Snapshot::take(&bed, daemon.pid())?;
            println!("  flood ...");
            let flood = phase(&bed, Some(&mut gen), length, max_packets, v.sources)?;
            sleep(DRAIN);
            let after = Snapshot::take(&bed, daemon.pid())?;
            let normal_verdict = api_get_in(&bed.rx.name, &format!("/v1/ips/{NORMAL}"))
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|v| v["verdict"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into());
            let live = gen.is_live();
            let notes = format!("{notes}; flood sent by {}", gen.kind());
            drop(gen);
            daemon.stop()?;
            phase_rows(out, &case, &flood, Some(BASELINE), Some(&normal_verdict));
            let ctx = FloodContext {
                case: &case,
                variant: v,
                flood: &flood,
                before: &before,
                after: &after,
                notes,
                live,
            };
            flood_rows(out, &ctx);
        }
        println!("  the HTTP server answered {} requests", server.stop());
        Ok(())
    }
}

/// One flood: how many sources the attacker makes up, and the daemon's SYN budget.
struct Variant {
    sources: u32,
    /// `[flood] unknown_syn_rate`; 0: none.
    budget: u32,
}

impl Variant {
    fn case(&self) -> String {
        let mut case = if self.sources >= 1 << 20 {
            format!("SYN flood, {}M spoofed sources", self.sources >> 20)
        } else {
            format!("SYN flood, {} spoofed sources", self.sources)
        };
        if self.budget > 0 {
            case += &format!(", SYN budget {}/s", self.budget);
        }
        case
    }
}

/// The floods measured: bans alone against 8192 sources (each sends far more than the
/// rule's 20 SYNs/s), then with a SYN budget, then 2^20 sources (each sends fewer SYNs
/// than the rule allows: bans cannot help, only the budget does) without and with it.
const VARIANTS: [Variant; 4] = [
    Variant {
        sources: SOURCES,
        budget: 0,
    },
    Variant {
        sources: SOURCES,
        budget: BUDGET,
    },
    Variant {
        sources: MANY_SOURCES,
        budget: 0,
    },
    Variant {
        sources: MANY_SOURCES,
        budget: BUDGET,
    },
];

/// The SYN budget of the variants that have one: far above what the legitimate clients
/// need (5 connections a second), far below the flood.
const BUDGET: u32 = 2000;
/// The "1M random sources" floods: 10.0.0.0/12.
const MANY_SOURCES: u32 = 1 << 20;

/// Addresses, routes and neighbours beyond the testbed's own.
fn prepare(bed: &Testbed) -> Result<()> {
    let (rx, tx) = (&bed.rx.name, &bed.tx.name);
    for src in [WHITELISTED, NORMAL] {
        run(&[
            "ip",
            "-n",
            tx,
            "addr",
            "add",
            &format!("{src}/32"),
            "dev",
            &bed.tx_if,
        ])?;
        // Static, like the testbed's own: no ARP exchange competes with the flood.
        run(&[
            "ip",
            "-n",
            rx,
            "neigh",
            "replace",
            &src.to_string(),
            "lladdr",
            &mac(bed.tx_mac),
            "dev",
            &bed.rx_if,
            "nud",
            "permanent",
        ])?;
    }
    run(&[
        "ip",
        "-n",
        rx,
        "route",
        "add",
        SRC_ROUTE,
        "via",
        &ipv4(bed.tx_ip),
        "dev",
        &bed.rx_if,
    ])?;
    Ok(())
}

fn rx_ip(bed: &Testbed) -> Ipv4Addr {
    Ipv4Addr::from(bed.rx_ip)
}

/// `IPGUARD_BIN`, or the `ipguard` beside this binary (`cargo build -p ipguard-user`).
fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IPGUARD_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("IPGUARD_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let beside = exe.with_file_name("ipguard");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "no daemon binary: set IPGUARD_BIN or build it beside {} (`cargo build -p ipguard-user`)",
        exe.display()
    )
}

/// The daemon, in the receiver's namespace on its veth. Dropping it stops it (SIGTERM,
/// then SIGKILL) and removes its pins.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    pin_dir: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, bed: &Testbed, dir: &Path, budget: u32) -> Result<Self> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", bed.rx.name));
        // Pins a killed run left behind would be adopted.
        let _ = std::fs::remove_dir_all(&pin_dir);
        let config = format!(
            "xdp_mode = \"native\"\n\
             [lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\", \"{WHITELISTED}\"]\n\
             [maps]\nsources_capacity = {}\n\
             [[rate_limit]]\nkind = \"syn\"\ncount = 20\nwindow = \"1s\"\n\
             [escalation]\ngraylist_duration = \"1h\"\n\
             [flood]\nunknown_syn_rate = {budget}\n\
             [state]\ndir = \"{}\"\npin_dir = \"{}\"\n",
            SOURCES * 8,
            dir.join("state").display(),
            pin_dir.display()
        );
        let config_path = dir.join("ipguard.toml");
        std::fs::write(&config_path, config).context("writing the daemon's config")?;
        let log = dir.join("daemon.log");
        let log_file = std::fs::File::create(&log).context("the daemon's log")?;
        let mut cmd = Command::new("nsenter");
        // nsenter switches only the network namespace (ip netns exec would also remount
        // /sys and hide the host's bpffs).
        cmd.arg(format!("--net=/run/netns/{}", bed.rx.name))
            .arg(bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .args(["--interface", &bed.rx_if])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe. It asks for SIGTERM when the spawning thread
        // (the runner's main thread) ends, so a killed run leaves no daemon behind; the
        // setting survives nsenter's exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the daemon")?;
        let mut d = Daemon {
            child: Some(child),
            log,
            pin_dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if d.log_text().contains("ipguard is filtering") {
                break;
            }
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the daemon exited with {status}: {}", d.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not start within {START_TIMEOUT:?}: {}",
                    d.log_text()
                );
            }
            sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn pid(&self) -> u32 {
        // nsenter execs the daemon (no fork for a network namespace): same process.
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait. An unclean exit is an error.
    fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let Some(status) = terminate(&mut child, STOP_TIMEOUT)? else {
            bail!(
                "the daemon ignored SIGTERM for {STOP_TIMEOUT:?}: {}",
                self.log_text()
            );
        };
        if !status.success() {
            bail!("the daemon exited with {status}: {}", self.log_text());
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child, STOP_TIMEOUT);
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Threaded NAPI on the receiver's veth, its thread on [`RECEIVER_CPU`] (the generator runs
/// on [`SENDER_CPU`]). Returns what did not work.
fn pin_receiver(bed: &Testbed) -> String {
    if online_cpus() <= RECEIVER_CPU {
        return "one CPU: sender and receiver share it".into();
    }
    let threaded = PathBuf::from(format!("/sys/class/net/{}/threaded", bed.rx_if));
    if let Err(e) = sysfs_write(&bed.rx.name, &threaded, "1") {
        return format!("no threaded NAPI ({e:#}): receiver shares the sender's CPU");
    }
    let threads = kthreads(&format!("napi/{}-", bed.rx_if));
    if threads.is_empty() {
        return "no NAPI thread found: receiver not pinned".into();
    }
    let mut notes = Vec::new();
    for pid in threads {
        if let Err(e) = set_affinity(pid, RECEIVER_CPU) {
            notes.push(format!("{e:#}"));
        }
    }
    notes.join("; ")
}

/// A 64-byte frame: Ethernet, IPv4, a TCP SYN with MSS and SACK-permitted options (28
/// bytes, as a client's SYN), then 2 bytes of Ethernet padding, with checksums right for
/// [`SRC_BASE`]: live_tx rewrites the source and patches them.
pub(crate) fn syn_frame(dst_mac: [u8; 6], src_mac: [u8; 6], dst: Ipv4Addr) -> Vec<u8> {
    let src = SRC_BASE;
    let mut tcp = Vec::with_capacity(28);
    tcp.extend_from_slice(&SYN_SPORT.to_be_bytes());
    tcp.extend_from_slice(&HTTP_PORT.to_be_bytes());
    tcp.extend_from_slice(&0x1b9a_0001u32.to_be_bytes()); // sequence
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[(28 / 4) << 4, TCP_SYN]);
    tcp.extend_from_slice(&64_240u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]); // MSS 1460, NOP NOP SACK_PERM
    let mut pseudo = Vec::with_capacity(12 + tcp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let csum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());

    let mut frame = dst_mac.to_vec();
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&frames::ETH_P_IP.to_be_bytes());
    frame.extend(frames::ipv4(src, dst, IPPROTO_TCP, &[], 0, &tcp));
    frame.resize(FRAME_LEN, 0);
    frame
}

/// The Internet checksum of `data` (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The HTTP server of the receiver's namespace: `HTTP/1.0 200 OK` to every request, on a
/// thread of its own until stopped (stopped and joined on drop too).
struct HttpServer {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl HttpServer {
    fn start(ns: &str, addr: SocketAddrV4) -> Result<Self> {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let ns = ns.to_owned();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let listener = (|| -> Result<Socket> {
                let _ns = InNetns::enter(&ns)?;
                let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::V4(addr).into())
                    .with_context(|| format!("bind {addr}"))?;
                s.listen(1024)?;
                // accept() honours SO_RCVTIMEO: the loop sees the stop flag this often.
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(s)
            })();
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return 0;
                }
            };
            let mut served = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    continue;
                };
                let mut conn: TcpStream = conn.into();
                if answer(&mut conn).is_ok() {
                    served += 1;
                }
            }
            served
        });
        let server = HttpServer {
            stop,
            thread: Some(thread),
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("the HTTP server did not start"))??;
        Ok(server)
    }

    /// Stops the server; returns how many requests it answered.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (up to its blank line) and answers it.
fn answer(conn: &mut TcpStream) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            bail!("closed before the request ended");
        }
        req.extend_from_slice(&buf[..n]);
    }
    conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")?;
    Ok(())
}

/// What one legitimate source got through.
#[derive(Default)]
struct Legit {
    pings_sent: u64,
    pings_answered: u64,
    http_tried: u64,
    http_ok: u64,
    /// Latency of the successful requests.
    http_ms: Vec<f64>,
}

/// The API as seen by the poller.
#[derive(Default)]
struct ApiPolls {
    /// Latency of every poll, and when it started (seconds since the phase started).
    ms: Vec<f64>,
    at: Vec<f64>,
    failed: u64,
    /// Answered polls: seconds since the phase started, graylist entries, packets the XDP
    /// program has seen since the daemon started.
    samples: Vec<Sample>,
}

#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    graylist: u64,
    processed: u64,
}

/// One phase: the legitimate traffic and the API poller for `length`, with or without the
/// flood.
struct Phase {
    whitelisted: Legit,
    normal: Legit,
    api: ApiPolls,
    /// Frames sent and for how long.
    flood: Option<(u64, Duration)>,
    /// The flood's sources (0: no flood).
    sources: u32,
}

/// Sets the flag when dropped: the phase's threads stop early on an error path.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn phase(
    bed: &Testbed,
    gen: Option<&mut LiveTx>,
    length: Duration,
    max: u64,
    sources: u32,
) -> Result<Phase> {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + length;
    let server = SocketAddrV4::new(rx_ip(bed), HTTP_PORT);
    let pings = (length.as_millis() / PING_INTERVAL.as_millis()).max(1) as u64;
    thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let stop = &stop;
        let mut legit = Vec::new();
        for src in [WHITELISTED, NORMAL] {
            let tx = bed.tx.name.as_str();
            let ping = s.spawn(move || ping_run(tx, src, server.ip(), pings));
            let http = s.spawn(move || http_run(tx, src, server, deadline, stop));
            legit.push((ping, http));
        }
        let rx = bed.rx.name.as_str();
        let api = s.spawn(move || poll_api(rx, start, deadline, stop));
        let flood = match gen {
            Some(g) => Some(g.flood(deadline.saturating_duration_since(Instant::now()), max)?),
            None => {
                sleep(deadline.saturating_duration_since(Instant::now()));
                None
            }
        };
        let mut got = Vec::new();
        for (ping, http) in legit {
            let (sent, answered) = joined(ping)?;
            let mut l = joined(http)?;
            l.pings_sent = sent;
            l.pings_answered = answered;
            got.push(l);
        }
        let api = joined(api)?;
        let normal = got.pop().context("no result")?;
        let whitelisted = got.pop().context("no result")?;
        Ok(Phase {
            whitelisted,
            normal,
            api,
            flood,
            sources,
        })
    })
}

fn joined<T>(h: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("a traffic thread panicked"))?
}

/// `count` pings from `src`, one per [`PING_INTERVAL`]: (sent, answered).
fn ping_run(ns: &str, src: Ipv4Addr, dst: &Ipv4Addr, count: u64) -> Result<(u64, u64)> {
    let interval = format!("{:.3}", PING_INTERVAL.as_secs_f64());
    let (count_s, src_s, dst_s) = (count.to_string(), src.to_string(), dst.to_string());
    let (_, out, err) = run_status(&[
        "ip", "netns", "exec", ns, "ping", "-n", "-q", "-i", &interval, "-c", &count_s, "-W", "1",
        "-I", &src_s, &dst_s,
    ])?;
    // "40 packets transmitted, 39 received, 2.5% packet loss, time 1950ms"
    let summary = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary: {out}{err}"))?;
    let number = |suffix: &str| -> Option<u64> {
        summary
            .split(", ")
            .find(|part| part.ends_with(suffix))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    match (number("packets transmitted"), number("received")) {
        (Some(s), Some(r)) => Ok((s, r)),
        _ => bail!("cannot read the ping summary {summary:?}"),
    }
}

/// HTTP requests from `src` to `server`, one started every [`HTTP_INTERVAL`] until
/// `deadline` whatever became of the earlier ones (a slow answer must not lower the number
/// of requests, or the figure would flatter the slow phase), each on its own thread: at
/// most [`HTTP_TIMEOUT`] / [`HTTP_INTERVAL`] at a time.
fn http_run(
    ns: &str,
    src: Ipv4Addr,
    server: SocketAddrV4,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Legit> {
    thread::scope(|s| {
        let mut requests = Vec::new();
        let mut next = Instant::now();
        while next < deadline && !stop.load(Ordering::Relaxed) {
            sleep(next.saturating_duration_since(Instant::now()));
            next += HTTP_INTERVAL;
            requests.push(s.spawn(move || -> Result<Option<f64>> {
                let _ns = InNetns::enter(ns)?;
                let t = Instant::now();
                Ok(http_once(src, server)
                    .ok()
                    .map(|()| t.elapsed().as_secs_f64() * 1e3))
            }));
        }
        let mut l = Legit::default();
        for r in requests {
            l.http_tried += 1;
            if let Some(ms) = joined(r)? {
                l.http_ok += 1;
                l.http_ms.push(ms);
            }
        }
        Ok(l)
    })
}

/// One `GET /` from `src`, answered with a 200 within [`HTTP_TIMEOUT`].
fn http_once(src: Ipv4Addr, server: SocketAddrV4) -> Result<()> {
    let t = Instant::now();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    s.connect_timeout(&SocketAddr::V4(server).into(), HTTP_TIMEOUT)?;
    let left = HTTP_TIMEOUT
        .checked_sub(t.elapsed())
        .filter(|d| !d.is_zero())
        .context("timed out")?;
    let mut conn: TcpStream = s.into();
    conn.set_read_timeout(Some(left))?;
    conn.set_write_timeout(Some(left))?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut resp = Vec::new();
    // Bounded by the read timeout per read and by the server closing after its answer.
    while t.elapsed() < HTTP_TIMEOUT {
        let mut buf = [0u8; 256];
        match conn.read(&mut buf)? {
            0 => break,
            n => resp.extend_from_slice(&buf[..n]),
        }
    }
    if !resp.starts_with(b"HTTP/1.0 200") {
        bail!("no 200 answer");
    }
    Ok(())
}

/// `GET /v1/status` every [`API_INTERVAL`] until `deadline`, from inside `ns`.
fn poll_api(ns: &str, start: Instant, deadline: Instant, stop: &AtomicBool) -> Result<ApiPolls> {
    let _ns = InNetns::enter(ns)?;
    let mut polls = ApiPolls::default();
    let mut next = Instant::now();
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        sleep(next.saturating_duration_since(Instant::now()));
        next += API_INTERVAL;
        let t = Instant::now();
        polls.at.push(start.elapsed().as_secs_f64());
        match api_get("/v1/status") {
            Ok((200, body)) => {
                polls.ms.push(t.elapsed().as_secs_f64() * 1e3);
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    polls.samples.push(Sample {
                        t: start.elapsed().as_secs_f64(),
                        graylist: v["entries"]["graylist"].as_u64().unwrap_or(0),
                        processed: processed(&v),
                    });
                }
            }
            _ => {
                polls.failed += 1;
                // A failure counts as slow as the limit in the latency figures.
                polls
                    .ms
                    .push(t.elapsed().as_secs_f64().max(API_TIMEOUT.as_secs_f64()) * 1e3);
            }
        }
        next = next.max(Instant::now());
    }
    Ok(polls)
}

/// `GET path` on the API from the calling thread's namespace: status and body.
fn api_get(path: &str) -> Result<(u16, String)> {
    let t = Instant::now();
    let addr: SocketAddr = API.parse().expect("valid");
    let mut s = TcpStream::connect_timeout(&addr, API_TIMEOUT)?;
    s.set_read_timeout(Some(API_TIMEOUT))?;
    s.set_write_timeout(Some(API_TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = Vec::new();
    while t.elapsed() < API_TIMEOUT {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf)? {
            0 => break,
            n => resp.extend_from_slice(&buf[..n]),
        }
    }
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP answer")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, body.to_owned()))
}

/// Packets the XDP program has seen (passed and dropped), from a status document.
fn processed(status: &serde_json::Value) -> u64 {
    ["pass", "drop"]
        .iter()
        .map(|v| status["verdicts"][v]["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// [`api_get`] from a thread that enters `ns`.
fn api_get_in(ns: &str, path: &str) -> Result<(u16, String)> {
    in_ns(ns, || api_get(path))
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            let _ns = InNetns::enter(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread in {ns} panicked"))?
    })
}

/// The daemon's counters and the receiver's TCP counters at one moment.
struct Snapshot {
    status: serde_json::Value,
    /// Prometheus samples without labels (`ipguard_events_lost_total`, ...).
    metrics: BTreeMap<String, f64>,
    snmp: BTreeMap<String, u64>,
    at: Instant,
    /// CPU seconds used so far by the daemon and by the receiver's NAPI thread(s).
    daemon_cpu: f64,
    napi_cpu: f64,
    /// The sender's veth: `tx_packets`, `tx_dropped` and the ethtool counters of live frames
    /// (`tx_queue_0_xdp_xmit`, `..._errors`); `None` if unreadable.
    tx_link: Option<BTreeMap<String, u64>>,
}

impl Snapshot {
    fn take(bed: &Testbed, daemon: u32) -> Result<Self> {
        let (code, body) = api_get_in(&bed.rx.name, "/v1/status")?;
        if code != 200 {
            bail!("GET /v1/status: {code} {body}");
        }
        let status = serde_json::from_str(&body).context("status JSON")?;
        let (code, text) = api_get_in(&bed.rx.name, "/metrics")?;
        if code != 200 {
            bail!("GET /metrics: {code} {text}");
        }
        let metrics = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        let snmp = in_ns(&bed.rx.name, || {
            // /proc/thread-self/net is this thread's namespace (/proc/self/net the process's).
            let mut all = BTreeMap::new();
            for file in ["snmp", "netstat"] {
                let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
                all.extend(parse_snmp(&text));
            }
            Ok(all)
        })?;
        let napi_cpu = kthreads(&format!("napi/{}-", bed.rx_if))
            .into_iter()
            .map(|pid| proc_usage(pid as u32).1)
            .sum();
        Ok(Snapshot {
            status,
            metrics,
            snmp,
            at: Instant::now(),
            daemon_cpu: proc_usage(daemon).1,
            napi_cpu,
            tx_link: tx_link(bed).ok(),
        })
    }

    /// Packets the sender's kernel stack (the legitimate clients) handed to the veth, and how
    /// many of those the veth dropped because the receiver's ring was full. The veth counts
    /// live frames in the same totals; ethtool's live-frame counters tell them apart.
    fn stack_tx(&self) -> Option<(u64, u64)> {
        let l = self.tx_link.as_ref()?;
        let sent = l
            .get("tx_packets")?
            .checked_sub(*l.get("tx_queue_0_xdp_xmit")?)?;
        let dropped = l
            .get("tx_dropped")?
            .checked_sub(*l.get("tx_queue_0_xdp_xmit_errors")?)?;
        Some((sent, dropped))
    }

    fn metric(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(0.0)
    }

    fn status_u64(&self, path: &[&str]) -> u64 {
        let mut v = &self.status;
        for p in path {
            v = &v[*p];
        }
        v.as_u64().unwrap_or(0)
    }
}

/// The sender's veth counters (see [`Snapshot::tx_link`]).
fn tx_link(bed: &Testbed) -> Result<BTreeMap<String, u64>> {
    let (ns, ifname) = (&bed.tx.name, &bed.tx_if);
    let mut out: BTreeMap<String, u64> = run_in(ns, &["ethtool", "-S", ifname])?
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect();
    for stat in ["tx_packets", "tx_dropped"] {
        let path = PathBuf::from(format!("/sys/class/net/{ifname}/statistics/{stat}"));
        let v = sysfs_read(ns, &path)?;
        out.insert(
            stat.into(),
            v.parse().with_context(|| format!("{stat} {v:?}"))?,
        );
    }
    Ok(out)
}

/// `Tcp.InSegs`-style keys from /proc/net/snmp or netstat (a header line, then values).
fn parse_snmp(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [head, values] = pair else { continue };
        let (Some((proto, names)), Some((_, nums))) =
            (head.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(nums.split_whitespace()) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{proto}.{n}"), v);
            }
        }
    }
    out
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// The `q`-quantile (nearest rank); `None` without samples.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn goal(met: bool, what: &str) -> String {
    format!("goal {what}: {}", if met { "met" } else { "MISSED" })
}

/// Adds `row` against the baseline's row of the same metric, or as the baseline.
fn push(out: &mut Results, row: Row, baseline: Option<&str>) {
    match baseline {
        Some(b) => out.push_vs(row, b),
        None => out.push(row),
    }
}

/// Delivery and API rows of a phase.
/// `normal_verdict`: what the daemon says of the normal source after the flood.
fn phase_rows(
    out: &mut Results,
    case: &str,
    p: &Phase,
    baseline: Option<&str>,
    normal_verdict: Option<&str>,
) {
    let is_flood = baseline.is_some();
    for (who, l) in [("whitelisted", &p.whitelisted), ("normal", &p.normal)] {
        let metric = format!("{who} source: ping delivery");
        let row = match pct(l.pings_answered, l.pings_sent) {
            Some(v) => {
                let mut r = Row::new(SECTION, case, &metric, v, "%").note(format!(
                    "{} of {} echo requests answered (1 s limit)",
                    l.pings_answered, l.pings_sent
                ));
                if is_flood {
                    r = r.note(goal(v >= GOAL_DELIVERY, "≥ 99%"));
                }
                r
            }
            None => Row::unavailable(SECTION, case, &metric, "%", "no ping sent"),
        };
        push(out, row, baseline);
        let metric = format!("{who} source: HTTP success");
        let row = match pct(l.http_ok, l.http_tried) {
            Some(v) => {
                let slow = l.http_ms.iter().filter(|ms| **ms >= 1000.0).count();
                let mut r = Row::new(SECTION, case, &metric, v, "%").note(format!(
                    "{} of {} requests answered within {} s, {slow} of them after 1 s or more \
                     (a retransmission); latency p50 {}, p99 {}",
                    l.http_ok,
                    l.http_tried,
                    HTTP_TIMEOUT.as_secs(),
                    ms(quantile(&l.http_ms, 0.5)),
                    ms(quantile(&l.http_ms, 0.99)),
                ));
                if is_flood {
                    r = r.note(goal(v >= GOAL_DELIVERY, "≥ 99%"));
                }
                if let (true, Some(verdict)) = (who == "normal", normal_verdict) {
                    r = r.note(format!("daemon's verdict on it afterwards: {verdict}"));
                }
                r
            }
            None => Row::unavailable(SECTION, case, &metric, "%", "no request made"),
        };
        push(out, row, baseline);
    }
    let polls = p.api.ms.len();
    // During a flood, the polls once every source is banned: the ban burst set apart.
    let settled = all_banned(p).map(|Sample { t, .. }| {
        let after: Vec<f64> = (p.api.at.iter().zip(&p.api.ms))
            .filter(|(at, _)| **at >= t)
            .map(|(_, ms)| *ms)
            .collect();
        (t, quantile(&after, 0.99), after.len())
    });
    for (metric, q) in [
        ("API GET /v1/status p50", 0.5),
        ("API GET /v1/status p99", 0.99),
        ("API GET /v1/status max", 1.0),
    ] {
        let row = match quantile(&p.api.ms, q) {
            Some(v) => {
                let mut r = Row::new(SECTION, case, metric, v, "ms");
                if q == 0.99 {
                    r = r.note(format!(
                        "{polls} polls every {} ms, {} failed (counted as {} s)",
                        API_INTERVAL.as_millis(),
                        p.api.failed,
                        API_TIMEOUT.as_secs()
                    ));
                    if is_flood {
                        r = r.note(goal(v < GOAL_API_P99_MS, "< 100 ms"));
                    }
                    if let Some((t, Some(p99), n)) = settled {
                        r = r.note(format!(
                            "p99 {p99:.2} ms over the {n} polls once all were banned ({t:.2} s in)"
                        ));
                    }
                }
                if q == 1.0 && is_flood {
                    let worst = (p.api.at.iter().zip(&p.api.ms))
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(at, _)| *at);
                    if let Some(at) = worst {
                        r = r.note(format!("at {at:.2} s into the flood"));
                    }
                }
                r
            }
            None => Row::unavailable(SECTION, case, metric, "ms", "no poll answered"),
        };
        push(out, row, baseline);
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} ms"))
}

/// What XDP processed in the flood's first second and after it, from the API polls: how
/// much of the flood a defence still lets through to the stack while it takes hold (a
/// passed SYN costs the receiver a SYN cookie, a dropped one almost nothing). `None`
/// without a poll on each side of the first second.
fn first_second_rates(samples: &[Sample]) -> Option<(f64, f64)> {
    let f = samples.first()?;
    let m = samples.iter().find(|s| s.t - f.t >= 1.0)?;
    let l = samples.last()?;
    if l.t - m.t < 0.5 {
        return None;
    }
    Some((
        (m.processed - f.processed) as f64 / (m.t - f.t),
        (l.processed - m.processed) as f64 / (l.t - m.t),
    ))
}

/// The rows of [`first_second_rates`]: the first second against the rest of the flood,
/// for every variant (with bans, the first second is before most of them land; with the
/// SYN budget, there is nothing to wait for).
fn first_second_rows(out: &mut Results, case: &str, samples: &[Sample]) {
    const REST: &str = "processed by XDP after the first second";
    match first_second_rates(samples) {
        Some((first, rest)) => {
            out.push(
                Row::new(SECTION, case, REST, rest, "pps")
                    .note("API polls from 1 s into the flood to its end"),
            );
            out.push_vs_metric(
                Row::new(
                    SECTION,
                    case,
                    "processed by XDP in the first second",
                    first,
                    "pps",
                )
                .note("API polls over the flood's first second"),
                case,
                REST,
            );
        }
        None => out.push(Row::unavailable(
            SECTION,
            case,
            "processed by XDP in the first second",
            "pps",
            "fewer than two API polls on a side of the first second",
        )),
    }
}

/// The first API poll that saw every flood source on the graylist.
fn all_banned(p: &Phase) -> Option<Sample> {
    let samples = &p.api.samples;
    let base = samples.first()?.graylist;
    samples
        .iter()
        .find(|s| p.sources > 0 && s.graylist >= base + u64::from(p.sources))
        .copied()
}

struct FloodContext<'a> {
    case: &'a str,
    variant: &'a Variant,
    flood: &'a Phase,
    before: &'a Snapshot,
    after: &'a Snapshot,
    notes: String,
    /// The flood went out as live frames, which the veth's counters tell apart from the
    /// clients' packets (an AF_PACKET flood is counted with them).
    live: bool,
}

/// The flood's own figures: offered and processed rates, bans, drops, what reached TCP.
fn flood_rows(out: &mut Results, c: &FloodContext) {
    let case = c.case;
    let Some((sent, took)) = c.flood.flood else {
        return;
    };
    let secs = took.as_secs_f64();
    let delta = |path: &[&str]| {
        c.after
            .status_u64(path)
            .saturating_sub(c.before.status_u64(path))
    };
    let snmp = |key: &str| {
        let at = |s: &Snapshot| s.snmp.get(key).copied().unwrap_or(0);
        at(c.after).saturating_sub(at(c.before))
    };
    let processed =
        delta(&["verdicts", "pass", "packets"]) + delta(&["verdicts", "drop", "packets"]);
    out.push(
        Row::new(SECTION, case, "offered rate", sent as f64 / secs, "pps")
            .note(format!(
                "{sent} 64-byte SYNs in {secs:.2} s to port {HTTP_PORT}, sources {SRC_BASE}/{}",
                32 - c.variant.sources.trailing_zeros()
            ))
            .note(c.notes.clone()),
    );
    out.push(
        Row::new(
            SECTION,
            case,
            "processed by XDP",
            processed as f64 / secs,
            "pps",
        )
        .note(format!(
            "{processed} packets ({:.1}% of those sent; the rest overflowed the veth ring)",
            pct(processed.min(sent), sent).unwrap_or(0.0)
        )),
    );
    let banned = delta(&["entries", "graylist"]);
    let metric_delta = |name: &str| c.after.metric(name) - c.before.metric(name);
    let reactions = metric_delta("ipguard_reaction_seconds_count");
    let mut row = Row::new(SECTION, case, "sources banned", banned as f64, "").note(format!(
        "graylist entries added during the flood, of {} sources; {} rate events lost",
        c.variant.sources,
        metric_delta("ipguard_events_lost_total")
    ));
    if reactions > 0.0 {
        row = row.note(format!(
            "mean reaction {:.1} ms",
            metric_delta("ipguard_reaction_seconds_sum") * 1e3 / reactions
        ));
    }
    let samples = &c.flood.api.samples;
    let base = samples.first().map_or(0, |s| s.graylist);
    let all = all_banned(c.flood);
    match (all, samples.last()) {
        (Some(a), _) => {
            row = row.note(format!(
                "all banned {:.2} s into the flood (API polls)",
                a.t
            ))
        }
        (None, Some(l)) => {
            row = row.note(format!(
                "{} at the last poll, {:.2} s in",
                l.graylist - base,
                l.t
            ))
        }
        _ => {}
    }
    out.push(row);
    // Until the bans land (goal: at least 0.9x the rate once all are banned).
    if let (Some(a), Some(f)) = (all, samples.first()) {
        if a.t - f.t >= 0.2 {
            out.push(
                Row::new(
                    SECTION,
                    case,
                    "processed by XDP before all were banned",
                    (a.processed - f.processed) as f64 / (a.t - f.t),
                    "pps",
                )
                .note(format!(
                    "API polls {:.2} s to {:.2} s into the flood",
                    f.t, a.t
                )),
            );
        }
    }
    first_second_rows(out, case, samples);
    // The receiver once nothing of the flood passes any more.
    let metric = "processed by XDP once all were banned";
    match (all, samples.last()) {
        (Some(a), Some(l)) if l.t - a.t >= 0.2 => out.push(
            Row::new(
                SECTION,
                case,
                metric,
                (l.processed - a.processed) as f64 / (l.t - a.t),
                "pps",
            )
            .note(format!(
                "API polls {:.2} s to {:.2} s into the flood",
                a.t, l.t
            )),
        ),
        _ => out.push(Row::unavailable(
            SECTION,
            case,
            metric,
            "pps",
            "not every source was banned 0.2 s before the flood ended",
        )),
    }
    // CPU time counted from just before the flood to after the drain, per second of flood:
    // nearly all of it is the flood's.
    let span = c.after.at.duration_since(c.before.at).as_secs_f64();
    for (metric, used) in [
        ("daemon CPU", c.after.daemon_cpu - c.before.daemon_cpu),
        (
            "receiver NAPI thread CPU",
            c.after.napi_cpu - c.before.napi_cpu,
        ),
    ] {
        let mut row = Row::new(SECTION, case, metric, 100.0 * used / secs, "% of a CPU");
        if metric.contains("NAPI") && used > 0.0 {
            row = row.note(format!(
                "{:.2} Mpps processed per NAPI CPU-second",
                processed as f64 / used / 1e6
            ));
        }
        out.push(row.note(format!(
            "{used:.2} CPU s counted over {span:.2} s around the {secs:.2} s flood; \
                 clock-tick resolution"
        )));
    }
    let metric = "legitimate packets dropped at the veth ring";
    match (c.before.stack_tx(), c.after.stack_tx()) {
        _ if !c.live => out.push(Row::unavailable(
            SECTION,
            case,
            metric,
            "%",
            "the flood went out through an AF_PACKET socket, which the veth counts with the \
             clients' packets",
        )),
        (Some((s0, d0)), Some((s1, d1))) if s1 + d1 > s0 + d0 => {
            let (sent, dropped) = (s1.saturating_sub(s0), d1.saturating_sub(d0));
            out.push(
                Row::new(
                    SECTION,
                    case,
                    metric,
                    100.0 * dropped as f64 / (sent + dropped) as f64,
                    "%",
                )
                .note(format!(
                    "{dropped} of {} packets both clients sent towards the receiver (pings, \
                         TCP) found its ring full; TCP retransmitted its own (the HTTP delays)",
                    sent + dropped
                )),
            );
        }
        _ => out.push(Row::unavailable(
            SECTION,
            case,
            metric,
            "%",
            "the sender's veth counters (ethtool -S) could not be read",
        )),
    }
    let drops = delta(&["lists", "graylist", "packets"]);
    out.push(
        Row::new(SECTION, case, "XDP drops", drops as f64, "").note(format!(
            "packets of graylisted sources ({:.1}% of those processed)",
            pct(drops, processed).unwrap_or(0.0)
        )),
    );
    let held = delta(&["lists", "syn_budget", "packets"]);
    out.push(
        Row::new(
            SECTION,
            case,
            "SYNs held by the SYN budget",
            held as f64,
            "",
        )
        .note(format!(
            "SYNs of sources not known good past the budget ({:.1}% of those processed); \
             source map {} of {} after the flood",
            pct(held, processed).unwrap_or(0.0),
            c.after.status_u64(&["maps", "sources", "used"]),
            c.after.status_u64(&["maps", "sources", "capacity"]),
        )),
    );
    let passed = delta(&["lists", "unlisted", "packets"]);
    out.push(
        Row::new(SECTION, case, "unlisted packets passed", passed as f64, "").note(format!(
            "flood SYNs before their source's ban, and the normal client; TCP: {} segments in, \
             {} checksum errors, {} passive opens, {} SYN cookies sent, {} listen drops",
            snmp("Tcp.InSegs"),
            snmp("Tcp.InCsumErrors"),
            snmp("Tcp.PassiveOpens"),
            snmp("TcpExt.SyncookiesSent"),
            snmp("TcpExt.ListenDrops"),
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header() {
        // The IPv4 header of RFC 1071's usual example, checksum field zero.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn syn_frame_is_a_valid_64_byte_syn() {
        let dst = Ipv4Addr::new(198, 18, 0, 2);
        let f = syn_frame([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], dst);
        assert_eq!(f.len(), FRAME_LEN);
        let ip = &f[14..];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(total, 48);
        let tcp = &ip[20..total];
        assert_eq!(tcp[13], TCP_SYN);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), HTTP_PORT);
        // A right checksum makes the sum over pseudo-header and segment come out as zero.
        let mut pseudo = SRC_BASE.octets().to_vec();
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, tcp.len() as u8]);
        pseudo.extend_from_slice(tcp);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn snmp_pairs() {
        let t = "Tcp: InSegs OutSegs\nTcp: 5 7\nUdp: InDatagrams\nUdp: 3\n";
        let m = parse_snmp(t);
        assert_eq!(m["Tcp.InSegs"], 5);
        assert_eq!(m["Tcp.OutSegs"], 7);
        assert_eq!(m["Udp.InDatagrams"], 3);
    }

    #[test]
    fn first_second_against_the_rest() {
        let at = |t: f64, processed: u64| Sample {
            t,
            graylist: 0,
            processed,
        };
        // 100k/s in the first second, 400k/s after.
        let samples = [
            at(0.0, 0),
            at(0.5, 50_000),
            at(1.0, 100_000),
            at(2.0, 500_000),
            at(3.0, 900_000),
        ];
        let (first, rest) = first_second_rates(&samples).unwrap();
        assert!((first - 100_000.0).abs() < 1e-6, "{first}");
        assert!((rest - 400_000.0).abs() < 1e-6, "{rest}");
        // Nothing after the first second: no figure.
        assert!(first_second_rates(&samples[..3]).is_none());
    }

    #[test]
    fn quantiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
