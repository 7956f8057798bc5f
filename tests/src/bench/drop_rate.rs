//! Section "drop-rate": how many packets per second a filter on the receiving veth gets
//! through (drops) when a flood arrives from many sources.
//!
//! Two namespaces joined by a veth pair (`netns::Testbed`). The traffic is made by XDP live
//! frames: `live_tx` (`ipguard-ebpf/src/bench.rs`) runs under `BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` in the sender's namespace, with the sender's veth as the
//! ingress device: it gives every 64-byte frame the next of 8192 IPv4 sources (10.0.0.0 to
//! 10.0.31.255) and returns XDP_TX, which sends it through the pair. Socket senders top out
//! near 1 Mpps here and would make every filter look alike.
//!
//! The sender runs pinned on one CPU and the receiver's NAPI thread (threaded NAPI) on
//! another, at real-time priority so that other work on the machine does not delay it. Each case counts what the receiver handled: the program's own counters for
//! XDP, rule counters for nftables and iptables, the veth's rx_packets with no filter.
//! Two figures per case: packets/s, and packets per second the receiver's thread ran on a
//! CPU (the machine is shared: other work takes CPU time from the receiver).
//! Floods are bounded in packets and in time; `flood_runs` rounds over all cases, the median
//! of each case's floods is kept.

use std::{io::Write as _, net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use aya::{programs::XdpMode as AyaXdpMode, Ebpf};
use ipguard::{
    config::{Lists, MapsConfig, XdpMode},
    dataplane::{Backend as _, Dataplane},
    model::TableOp,
    policy::compile::compile,
};
use ipguard_tests::frames::{self, IPPROTO_UDP};
use ipnet::{IpNet, Ipv4Net};

use super::{
    live_tx::{LiveTx, RECEIVER_CPU, SENDER_CPU},
    netns::{sysfs_read, sysfs_write, Testbed},
    objects,
    per_packet::udp,
    prefixes::{disjoint_v4, Rng},
    results::{median, Results, Row},
    system::{kthreads, run_in, run_status, runtime_ns, set_affinity, set_fifo, InNetns},
    xdp_filter::{XdpFilter, MAX_ADDRESSES},
    Config, Section,
};

pub struct DropRate;

const SECTION: &str = "drop-rate";
const METRIC: &str = "packets/s";
/// Packets per second of the receiver's NAPI thread on a CPU: what one dedicated receiving
/// core would handle. Other work on the machine takes CPU time from the receiver and lowers
/// packets/s, but not this.
const METRIC_CPU: &str = "per receiver CPU-second";
const TRIVIAL: &str = "trivial XDP drop (native)";
const TOUCH: &str = "XDP drop after reading the source (native)";
const IPGUARD_NATIVE: &str = "ipguard native";
const IPGUARD_SKB: &str = "ipguard skb";
const XDP_FILTER: &str = "xdp-filter native (10k addresses)";
const NFT: &str = "nftables ingress, 10k-prefix interval set";
const IPSET: &str = "ipset hash:net 10k + iptables raw";
const NO_FILTER: &str = "no filter (kernel stack)";

/// The flood's sources: `SRC_BASE + (n & SRC_MASK)`, all inside [`SRC_NET`].
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
const SRC_MASK: u32 = 8191;
const SRC_NET: &str = "10.0.0.0/8";
/// Prefixes in each filter's list (xdp-filter: addresses).
const LIST_LEN: usize = 10_000;
const SEED: u64 = 0x1b9a_2d00_0000_0002;
/// How long the receiver gets to empty its ring after a flood before the count is read.
const DRAIN: Duration = Duration::from_millis(100);
/// SCHED_FIFO priority of the receiver's NAPI thread.
const RECEIVER_PRIORITY: i32 = 50;
/// Names of the nftables table and of the ipset.
const TABLE: &str = "ipgbench";

impl Section for DropRate {
    fn name(&self) -> &'static str {
        SECTION
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        let mut bed = Bed::new(cfg)?;
        println!(
            "  floods of at most {:?} and {} packets, {} round(s) over all cases; {}",
            cfg.flood_time,
            cfg.flood_max_packets,
            cfg.flood_runs,
            if bed.pin {
                format!("sender on CPU {SENDER_CPU}, receiver NAPI thread on CPU {RECEIVER_CPU}")
            } else {
                "one CPU: sender and receiver share it".into()
            }
        );
        // The baseline first: every other case is a ratio to it. It and ipguard's own cases
        // must work; the other tools' cases are reported as n/a if they cannot run here.
        let mut cases = vec![
            Case::new(TRIVIAL, true, "", |b| b.trivial_drop(objects::TRIVIAL_DROP)),
            Case::new(TOUCH, true, "reads the IPv4 source before dropping", |b| {
                b.trivial_drop(objects::TOUCH_DROP)
            }),
            Case::new(IPGUARD_NATIVE, true, "", |b| b.ipguard(XdpMode::Native)),
            Case::new(IPGUARD_SKB, true, "", |b| b.ipguard(XdpMode::Skb)),
            Case::new(XDP_FILTER, false, "", Bed::xdp_filter),
            Case::new(NFT, false, "netdev ingress hook", Bed::nftables),
            Case::new(IPSET, false, "iptables-nft", Bed::ipset),
            Case::new(
                NO_FILTER,
                false,
                "veth rx_packets; UDP to a closed port",
                Bed::no_filter,
            ),
        ];
        // Rounds over every case rather than all runs of one case in a row: a change in the
        // machine's load (it is shared) then spreads over every case instead of skewing one.
        for round in 0..cfg.flood_runs {
            for case in &mut cases {
                if case.failed.is_some() {
                    continue;
                }
                println!("  round {}: {} ...", round + 1, case.name);
                let setup = &case.setup;
                match setup(&mut bed).and_then(|mut f| bed.flood_once(f.as_mut())) {
                    Ok(sample) => case.samples.push(sample),
                    Err(e) if !case.required => case.failed = Some(format!("{e:#}")),
                    Err(e) => return Err(e.context(format!("case {:?}", case.name))),
                }
            }
        }
        let sender = bed.gen.kind();
        for case in &cases {
            out_row(out, case, &sender);
        }
        for metric in [METRIC, METRIC_CPU] {
            if let Some(ipg) = out.value(SECTION, IPGUARD_NATIVE, metric) {
                out.push_vs_metric(
                    Row::new(
                        SECTION,
                        IPGUARD_NATIVE,
                        &format!("{metric} vs nftables"),
                        ipg,
                        "pps",
                    ),
                    NFT,
                    metric,
                );
            }
        }
        Ok(())
    }
}

type Setup = Box<dyn Fn(&mut Bed) -> Result<Box<dyn Filter>>>;

/// One filter to measure, and what its floods gave.
struct Case {
    name: &'static str,
    /// A failure fails the section; otherwise the case becomes an "n/a" row.
    required: bool,
    note: &'static str,
    setup: Setup,
    samples: Vec<Sample>,
    failed: Option<String>,
}

impl Case {
    fn new(
        name: &'static str,
        required: bool,
        note: &'static str,
        setup: impl Fn(&mut Bed) -> Result<Box<dyn Filter>> + 'static,
    ) -> Self {
        Case {
            name,
            required,
            note,
            setup: Box::new(setup),
            samples: Vec::new(),
            failed: None,
        }
    }
}

/// One flood: packets/s handled and sent, the same per second the receiver's NAPI thread
/// ran (if known), and what did not work in pinning.
struct Sample {
    handled: f64,
    sent: f64,
    per_cpu: Option<f64>,
    /// Share of the flood the receiver's thread ran, and waited for a CPU while runnable.
    busy: Option<f64>,
    waiting: Option<f64>,
    notes: String,
}

/// The case's row: median over its floods, the spread in the note.
fn out_row(out: &mut Results, case: &Case, sender: &str) {
    if let Some(why) = &case.failed {
        out.push(Row::unavailable(SECTION, case.name, METRIC, "pps", why));
        return;
    }
    let handled: Vec<f64> = case.samples.iter().map(|s| s.handled).collect();
    let sent: Vec<f64> = case.samples.iter().map(|s| s.sent).collect();
    let (Some(rate), Some(sent)) = (median(&handled), median(&sent)) else {
        return;
    };
    let runs: Vec<String> = handled.iter().map(|r| format!("{:.2}", r / 1e6)).collect();
    let mut row = Row::new(SECTION, case.name, METRIC, rate, "pps")
        .note(case.note)
        .note(format!(
            "sent {:.2} Mpps by {sender}; runs {} Mpps",
            sent / 1e6,
            runs.join("/")
        ));
    if rate >= 0.9 * sent {
        // The receiver may be faster than this: the generator is the limit.
        row = row.note("within 10% of the sender's rate (sender-bound)");
    }
    if let Some(s) = case.samples.iter().find(|s| !s.notes.is_empty()) {
        row = row.note(s.notes.clone());
    }
    push(out, case.name, row);

    let per_cpu: Vec<f64> = case.samples.iter().filter_map(|s| s.per_cpu).collect();
    let busy: Vec<f64> = case.samples.iter().filter_map(|s| s.busy).collect();
    let waiting: Vec<f64> = case.samples.iter().filter_map(|s| s.waiting).collect();
    match (median(&per_cpu), median(&busy), median(&waiting)) {
        (Some(v), Some(b), Some(w)) if per_cpu.len() == case.samples.len() => {
            let row = Row::new(SECTION, case.name, METRIC_CPU, v, "pps").note(format!(
                "receiver thread ran {:.0}% of the flood, waited for a CPU {:.0}%",
                b * 100.0,
                w * 100.0
            ));
            push(out, case.name, row);
        }
        _ => out.push(Row::unavailable(
            SECTION,
            case.name,
            METRIC_CPU,
            "pps",
            "the receiver's NAPI thread could not be found",
        )),
    }
}

fn push(out: &mut Results, case: &str, row: Row) {
    if case == TRIVIAL {
        out.push(row);
    } else {
        out.push_vs(row, TRIVIAL);
    }
}

/// A filter set up on the receiver; dropping it removes it.
trait Filter {
    /// Packets the receiver handled so far (a counter that only grows).
    fn handled(&mut self) -> Result<u64>;
}

/// The testbed, the traffic generator and the lists every filter gets.
struct Bed {
    bed: Testbed,
    gen: LiveTx,
    /// [`SRC_NET`] and random disjoint prefixes, [`LIST_LEN`] in all.
    blocked: Vec<Ipv4Net>,
    pin: bool,
    gro_note: Option<String>,
    flood_time: Duration,
    flood_max: u64,
}

impl Bed {
    fn new(cfg: &Config) -> Result<Self> {
        let bed = Testbed::new("dr")?;
        // veth only polls (and so only takes XDP frames from its peer) with NAPI, which it
        // enables for an XDP program or for GRO: GRO covers the cases without XDP.
        let gro_note = run_in(&bed.rx.name, &["ethtool", "-K", &bed.rx_if, "gro", "on"])
            .err()
            .map(|e| format!("GRO not enabled on the receiver ({e:#})"));
        let mut frame = bed.rx_mac.to_vec();
        frame.extend_from_slice(&bed.tx_mac);
        frame.extend_from_slice(&frames::ETH_P_IP.to_be_bytes());
        let payload = 64 - frame.len() - 20;
        frame.extend(frames::ipv4(
            SRC_BASE,
            Ipv4Addr::from(bed.rx_ip),
            IPPROTO_UDP,
            &[],
            0,
            &udp(payload),
        ));
        let gen = LiveTx::new(&bed, SRC_BASE, SRC_MASK, frame)?;

        let src_net: Ipv4Net = SRC_NET.parse().expect("valid");
        let mut blocked = vec![src_net];
        blocked.extend(disjoint_v4(&mut Rng::new(SEED), LIST_LEN - 1, src_net));
        Ok(Bed {
            bed,
            pin: gen.pinned(),
            gen,
            blocked,
            gro_note,
            flood_time: cfg.flood_time,
            flood_max: cfg.flood_max_packets,
        })
    }

    /// One flood through `filter` (set up just before): what the receiver handled and what
    /// was sent, per second.
    fn flood_once(&mut self, filter: &mut dyn Filter) -> Result<Sample> {
        let (threads, notes) = self.pin_receiver();
        let before = filter.handled()?;
        let cpu_before = runtime_ns(&threads);
        let (sent, took) = self.flood()?;
        std::thread::sleep(DRAIN);
        let cpu_after = runtime_ns(&threads);
        let handled = filter.handled()?.saturating_sub(before);
        if handled == 0 {
            bail!("the receiver counted no packet of {sent} sent");
        }
        let (cpu_s, wait_s) = match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if b.0 > a.0 && !threads.is_empty() => (
                Some((b.0 - a.0) as f64 / 1e9),
                Some(b.1.saturating_sub(a.1) as f64 / 1e9),
            ),
            _ => (None, None),
        };
        let span = (took + DRAIN).as_secs_f64();
        Ok(Sample {
            handled: handled as f64 / took.as_secs_f64(),
            sent: sent as f64 / took.as_secs_f64(),
            per_cpu: cpu_s.map(|c| handled as f64 / c),
            busy: cpu_s.map(|c| c / span),
            waiting: wait_s.map(|w| w / span),
            notes,
        })
    }

    /// Threaded NAPI on the receiver's veth (all its receive work then runs in that
    /// thread), SCHED_FIFO and pinned on [`RECEIVER_CPU`] if there are two CPUs. Without it
    /// the receiver's work runs in softirq on the sender's CPU. Returns the threads, and
    /// what did not work.
    fn pin_receiver(&self) -> (Vec<libc::pid_t>, String) {
        let mut notes: Vec<String> = self.gro_note.iter().cloned().collect();
        let threaded = PathBuf::from(format!("/sys/class/net/{}/threaded", self.bed.rx_if));
        if let Err(e) = sysfs_write(&self.bed.rx.name, &threaded, "1") {
            notes.push(format!(
                "no threaded NAPI ({e:#}): receiver runs in softirq on the sender's CPU"
            ));
            return (Vec::new(), notes.join("; "));
        }
        // A NAPI thread is named napi/<ifname>-<napi id>.
        let threads = kthreads(&format!("napi/{}-", self.bed.rx_if));
        if threads.is_empty() {
            notes.push("no NAPI thread found: receiver not pinned".into());
        }
        for &pid in threads.iter().filter(|_| self.pin) {
            // Its own CPU, ahead of other work there (the machine may be busy with builds).
            if let Err(e) =
                set_affinity(pid, RECEIVER_CPU).and_then(|()| set_fifo(pid, RECEIVER_PRIORITY))
            {
                notes.push(format!("{e:#}"));
            }
        }
        (threads, notes.join("; "))
    }

    /// One flood: live frames until `flood_time` has passed or `flood_max` were sent.
    fn flood(&mut self) -> Result<(u64, Duration)> {
        self.gen.flood(self.flood_time, self.flood_max)
    }

    /// `trivial_drop` or `touch_drop` of the bench object.
    fn trivial_drop(&mut self, name: &str) -> Result<Box<dyn Filter>> {
        // An object of its own: dropping it detaches the program.
        let mut ebpf = objects::load()?;
        let prog = objects::program(&mut ebpf, name)?;
        let _ns = InNetns::enter(&self.bed.rx.name)?;
        prog.attach(&self.bed.rx_if, AyaXdpMode::Driver)
            .with_context(|| format!("attaching {name} (native)"))?;
        Ok(Box::new(TrivialDrop(ebpf)))
    }

    fn ipguard(&mut self, mode: XdpMode) -> Result<Box<dyn Filter>> {
        let lists = Lists {
            blacklist: self.blocked.iter().map(|n| IpNet::V4(*n)).collect(),
            ..Lists::default()
        };
        let maps = MapsConfig {
            sources_capacity: 65_536,
            lpm_v4_capacity: 65_536,
            lpm_v6_capacity: 65_536,
        };
        let mut dp = Dataplane::load(&maps).context("loading ipguard's XDP program")?;
        for (net, entry) in &compile(&lists) {
            dp.backend.apply(&[TableOp::Write(*net, *entry)])?;
        }
        let _ns = InNetns::enter(&self.bed.rx.name)?;
        dp.program.attach(&self.bed.rx_if, mode)?;
        Ok(Box::new(Ipguard(dp)))
    }

    fn xdp_filter(&mut self) -> Result<Box<dyn Filter>> {
        let filter = XdpFilter::load(
            &self.bed.rx.name,
            &self.bed.rx_if,
            "native",
            Some("ipv4,ipv6"),
        )?;
        // Every source of the flood, then addresses of the random prefixes up to the limit.
        let mut v4: Vec<Ipv4Addr> = (0..=SRC_MASK)
            .map(|i| Ipv4Addr::from(u32::from(SRC_BASE) + i))
            .collect();
        v4.extend(self.blocked[1..].iter().map(|n| n.network()));
        v4.truncate(MAX_ADDRESSES);
        filter.deny_sources(&v4, &[])?;
        Ok(Box::new(XdpFilterDrops(filter)))
    }

    fn nftables(&mut self) -> Result<Box<dyn Filter>> {
        let elements: Vec<String> = self.blocked.iter().map(|n| n.to_string()).collect();
        let ruleset = format!(
            "table netdev {TABLE} {{\n\
             \tset blocked {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ {} }}\n\t}}\n\
             \tchain ingress {{\n\
             \t\ttype filter hook ingress device \"{}\" priority -500; policy accept;\n\
             \t\tip saddr @blocked counter drop\n\t}}\n}}\n",
            elements.join(", "),
            self.bed.rx_if
        );
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(ruleset.as_bytes())?;
        let ns = self.bed.rx.name.clone();
        let guard = Nft { ns };
        run_in(&guard.ns, &["nft", "-f", &file.path().to_string_lossy()])?;
        Ok(Box::new(guard))
    }

    fn ipset(&mut self) -> Result<Box<dyn Filter>> {
        let mut script =
            format!("create {TABLE} hash:net family inet hashsize 16384 maxelem 65536\n");
        for n in &self.blocked {
            script += &format!("add {TABLE} {n}\n");
        }
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(script.as_bytes())?;
        let guard = Ipset {
            ns: self.bed.rx.name.clone(),
        };
        let restore = format!("ipset restore < {}", file.path().display());
        run_in(&guard.ns, &["sh", "-c", &restore])?;
        run_in(&guard.ns, &Ipset::rule("-A"))?;
        Ok(Box::new(guard))
    }

    fn no_filter(&mut self) -> Result<Box<dyn Filter>> {
        Ok(Box::new(RxPackets {
            ns: self.bed.rx.name.clone(),
            path: PathBuf::from(format!(
                "/sys/class/net/{}/statistics/rx_packets",
                self.bed.rx_if
            )),
        }))
    }
}

struct TrivialDrop(Ebpf);

impl Filter for TrivialDrop {
    fn handled(&mut self) -> Result<u64> {
        objects::dropped(&self.0)
    }
}

struct Ipguard(Dataplane);

impl Filter for Ipguard {
    fn handled(&mut self) -> Result<u64> {
        Ok(self.0.backend.stats()?.dropped())
    }
}

struct XdpFilterDrops(XdpFilter);

impl Filter for XdpFilterDrops {
    fn handled(&mut self) -> Result<u64> {
        self.0.action_packets("XDP_DROP")
    }
}

/// The nftables table; deleted on drop.
struct Nft {
    ns: String,
}

impl Filter for Nft {
    fn handled(&mut self) -> Result<u64> {
        let out = run_in(
            &self.ns,
            &["nft", "list", "chain", "netdev", TABLE, "ingress"],
        )?;
        out.split("counter packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no counter in {out}"))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = run_in(&self.ns, &["nft", "delete", "table", "netdev", TABLE]);
    }
}

/// The ipset and its iptables rule; removed on drop.
struct Ipset {
    ns: String,
}

impl Ipset {
    fn rule(op: &str) -> [&str; 12] {
        [
            "iptables",
            "-t",
            "raw",
            op,
            "PREROUTING",
            "-m",
            "set",
            "--match-set",
            TABLE,
            "src",
            "-j",
            "DROP",
        ]
    }
}

impl Filter for Ipset {
    fn handled(&mut self) -> Result<u64> {
        let out = run_in(
            &self.ns,
            &[
                "iptables",
                "-t",
                "raw",
                "-L",
                "PREROUTING",
                "-v",
                "-x",
                "-n",
            ],
        )?;
        out.lines()
            .find(|l| l.contains("match-set"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no rule counter in {out}"))
    }
}

impl Drop for Ipset {
    fn drop(&mut self) {
        let _ = run_in(&self.ns, &Ipset::rule("-D"));
        let _ = run_status(&["ip", "netns", "exec", &self.ns, "ipset", "destroy", TABLE]);
    }
}

struct RxPackets {
    ns: String,
    path: PathBuf,
}

impl Filter for RxPackets {
    fn handled(&mut self) -> Result<u64> {
        let s = sysfs_read(&self.ns, &self.path)?;
        s.parse().with_context(|| format!("rx_packets {s:?}"))
    }
}
