//! Section "live-cost": what one packet costs each XDP filter on live traffic from many
//! distinct sources, half of them listed — the figure no single-packet cache can flatter.
//!
//! The drop-rate testbed's generator (`live_tx`) sends 64-byte frames from 4096 sources
//! (10.0.0.0 to 10.0.15.255) through the veth pair; the first 2048 are listed (a
//! `10.0.0.0/21` blacklist entry for ipguard, 2048 addresses for xdp-filter), beside
//! 10k random prefixes elsewhere. The cost is the kernel's own accounting
//! (`kernel.bpf_stats_enabled`: the program's `run_time_ns / run_cnt` over the flood),
//! so the receiver's stack work for passed packets does not enter it. Cases alternate in
//! rounds; the median of each is kept.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result};
use ipguard::{
    config::{Lists, MapsConfig, XdpMode},
    dataplane::{Backend as _, Dataplane},
    model::TableOp,
    policy::compile::compile,
};
use ipguard_tests::frames::{self, IPPROTO_UDP};
use ipnet::{IpNet, Ipv4Net};

use super::{
    live_tx::LiveTx,
    netns::Testbed,
    per_packet::udp,
    prefixes::{disjoint_v4, Rng},
    results::{median, Results, Row},
    system::run,
    xdp_filter::{XdpFilter, MAX_ADDRESSES},
    Config, Section,
};

pub struct LiveCost;

const SECTION: &str = "live-cost";
const METRIC: &str = "ns/packet (bpf_stats)";
const IPGUARD: &str = "ipguard native, 4096 sources, half listed";
const TOUCH: &str = "XDP drop after reading the source, 4096 sources";
const XDP_FILTER: &str = "xdp-filter native, 4096 sources, half listed";
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
const SRC_MASK: u32 = 4095;
const LISTED: &str = "10.0.0.0/21";
const LIST_LEN: usize = 10_000;
const SEED: u64 = 0x1b9a_2d00_0000_0003;

impl Section for LiveCost {
    fn name(&self) -> &'static str {
        SECTION
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        let bed = Testbed::new("lc")?;
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
        let mut gen = LiveTx::new(&bed, SRC_BASE, SRC_MASK, frame)?;
        let listed: Ipv4Net = LISTED.parse().expect("valid");
        let all: Ipv4Net = "10.0.0.0/8".parse().expect("valid");
        let others = disjoint_v4(&mut Rng::new(SEED), LIST_LEN - 1, all);
        let stats = BpfStats::enable()?;
        let (mut ipg, mut xf, mut touch) = (Vec::new(), Vec::new(), Vec::new());
        let rounds = if cfg.quick { 1 } else { 5 };
        for _ in 0..rounds {
            touch.push(touch_cost(&bed, &mut gen, cfg)?);
            ipg.push(ipguard_cost(&bed, &mut gen, cfg, listed, &others)?);
            xf.push(xdp_filter_cost(&bed, &mut gen, cfg, listed, &others)?);
        }
        drop(stats);
        let note = |v: &[f64]| {
            let runs: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
            format!("median of {} (runs {} ns)", v.len(), runs.join("/"))
        };
        out.push(
            Row::new(
                SECTION,
                TOUCH,
                METRIC,
                median(&touch).unwrap_or(f64::NAN),
                "ns",
            )
            .note(format!(
                "the floor for any filter; {}; sent by {}",
                note(&touch),
                gen.kind()
            )),
        );
        out.push_vs(
            Row::new(
                SECTION,
                XDP_FILTER,
                METRIC,
                median(&xf).unwrap_or(f64::NAN),
                "ns",
            )
            .note(note(&xf)),
            TOUCH,
        );
        let ipg_ns = median(&ipg).unwrap_or(f64::NAN);
        out.push_vs(
            Row::new(SECTION, IPGUARD, METRIC, ipg_ns, "ns").note(note(&ipg)),
            TOUCH,
        );
        out.push_vs_metric(
            Row::new(SECTION, IPGUARD, "vs xdp-filter", ipg_ns, "ns"),
            XDP_FILTER,
            METRIC,
        );
        Ok(())
    }
}

/// `kernel.bpf_stats_enabled` on for the section, back to what it was after.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> Result<Self> {
        let was = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .context("reading kernel.bpf_stats_enabled")?;
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
            .context("enabling kernel.bpf_stats_enabled")?;
        Ok(BpfStats(was.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// The id of the XDP program attached to `iface` in `ns`.
fn prog_id(ns: &str, iface: &str) -> Result<u32> {
    let out = run(&["ip", "-n", ns, "-d", "link", "show", "dev", iface])?;
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no XDP program on {iface}: {out}"))
}

/// The program's (run_time_ns, run_cnt).
fn run_stats(id: u32) -> Result<(u64, u64)> {
    let out = run(&["bpftool", "prog", "show", "id", &id.to_string(), "-j"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("bpftool JSON")?;
    let field = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {out}"));
    Ok((field("run_time_ns")?, field("run_cnt")?))
}

/// One flood through the program attached now; ns per packet it ran.
fn measure(bed: &Testbed, gen: &mut LiveTx, cfg: &Config) -> Result<f64> {
    let id = prog_id(&bed.rx.name, &bed.rx_if)?;
    // A short warm-up, so that the per-source state exists as it would in steady traffic.
    gen.flood(Duration::from_millis(200), 1_000_000)?;
    let (t0, n0) = run_stats(id)?;
    gen.flood(cfg.flood_time, cfg.flood_max_packets)?;
    let (t1, n1) = run_stats(id)?;
    anyhow::ensure!(n1 > n0, "the program ran no packet");
    Ok((t1 - t0) as f64 / (n1 - n0) as f64)
}

/// The bench object's `touch_drop`: reads the IPv4 source, drops.
fn touch_cost(bed: &Testbed, gen: &mut LiveTx, cfg: &Config) -> Result<f64> {
    let mut ebpf = super::objects::load()?;
    let prog = super::objects::program(&mut ebpf, super::objects::TOUCH_DROP)?;
    {
        let _ns = super::system::InNetns::enter(&bed.rx.name)?;
        prog.attach(&bed.rx_if, aya::programs::XdpMode::Driver)
            .context("attaching touch_drop (native)")?;
    }
    let cost = measure(bed, gen, cfg);
    // Dropping the object detaches the program.
    drop(ebpf);
    cost
}

fn ipguard_cost(
    bed: &Testbed,
    gen: &mut LiveTx,
    cfg: &Config,
    listed: Ipv4Net,
    others: &[Ipv4Net],
) -> Result<f64> {
    let mut blacklist = vec![IpNet::V4(listed)];
    blacklist.extend(others.iter().map(|n| IpNet::V4(*n)));
    let lists = Lists {
        blacklist,
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
    {
        let _ns = super::system::InNetns::enter(&bed.rx.name)?;
        dp.program.attach(&bed.rx_if, XdpMode::Native)?;
    }
    let cost = measure(bed, gen, cfg);
    let _ = dp.program.detach();
    cost
}

fn xdp_filter_cost(
    bed: &Testbed,
    gen: &mut LiveTx,
    cfg: &Config,
    listed: Ipv4Net,
    others: &[Ipv4Net],
) -> Result<f64> {
    let filter = XdpFilter::load(&bed.rx.name, &bed.rx_if, "native", Some("ipv4,ipv6"))?;
    let mut v4: Vec<Ipv4Addr> = listed.hosts().collect();
    v4.insert(0, listed.network());
    v4.push(listed.broadcast());
    v4.extend(others.iter().map(|n| n.network()));
    v4.truncate(MAX_ADDRESSES);
    filter.deny_sources(&v4, &[])?;
    let cost = measure(bed, gen, cfg);
    drop(filter);
    cost
}
