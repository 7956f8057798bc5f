//! Section "per-packet": the cost of one packet under `BPF_PROG_TEST_RUN` (the kernel runs
//! the program `repeat` times on one frame and reports the mean time per run; the figure is
//! the median of `samples` such runs).
//!
//! Baselines measured in the same run: the trivial XDP_PASS and XDP_DROP programs of
//! `ipguard-ebpf/src/bench.rs` (the harness's own cost) and xdp-filter with 10k exact
//! addresses (run by program id with `bpftool prog run`). ipguard runs with 0, 10k+10k and
//! (full run) 1M+1M random prefixes.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use ipguard::{
    config::{Lists, MapsConfig},
    dataplane::{Backend as _, Dataplane},
    model::longest_match,
    policy::compile::compile,
};
use ipguard_tests::frames::{self, ETH_P_8021Q, IPPROTO_UDP};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    netns::Netns,
    objects,
    prefixes::{random_nets, Coverage, Rng},
    results::{median, Results, Row},
    system::run,
    xdp_filter::{XdpFilter, MAX_ADDRESSES},
    Config, Section,
};

pub struct PerPacket;

const SECTION: &str = "per-packet";
const METRIC: &str = "ns/packet";
const TRIVIAL_PASS: &str = "trivial XDP_PASS";
const TRIVIAL_DROP: &str = "trivial XDP_DROP";
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Bytes of every frame (like the smallest Ethernet frame).
const FRAME_LEN: usize = 64;
/// Sources of the "many sources" case.
const MANY: usize = 64;
/// Every 100th random prefix is whitelisted, the rest blacklisted.
const WHITE_EVERY: usize = 100;
/// Random prefixes generated for probe selection, whatever the run's largest list: the
/// probes are then the same in quick and full runs.
const PROBE_POOL: usize = 1_000_000;
const SEED: u64 = 0x1b9a_2d00_0000_0001;

/// The xdp-filter configurations measured: the one that does what ipguard does (source
/// addresses only) and its default (ports and MAC addresses too).
const XDP_FILTER_VARIANTS: [(&str, Option<&str>); 2] = [
    ("xdp-filter 10k (ipv4,ipv6)", Some("ipv4,ipv6")),
    ("xdp-filter 10k (all features)", None),
];

impl Section for PerPacket {
    fn name(&self) -> &'static str {
        SECTION
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        let pop = Population::new();
        let cases = cases(&pop.probes);
        println!(
            "  repeat {} per run, median of {}; probes: v4 unlisted {}, v4 blacklisted {}, \
             v4 whitelisted {}, v6 unlisted {}, v6 blacklisted {}, v4 monitored {}",
            cfg.repeat,
            cfg.samples,
            pop.probes.v4_unlisted,
            pop.probes.v4_black,
            pop.probes.v4_white,
            pop.probes.v6_unlisted,
            pop.probes.v6_black,
            pop.probes.v4_monitored
        );

        // Baselines: the harness with programs that do nothing.
        let mut obj = objects::load()?;
        let base_frame = &cases[0].frame;
        for (case, prog, verdict) in [
            (TRIVIAL_PASS, objects::TRIVIAL_PASS, XDP_PASS),
            (TRIVIAL_DROP, objects::TRIVIAL_DROP, XDP_DROP),
        ] {
            let prog = objects::program(&mut obj, prog)?;
            let ns = test_run_ns(prog, base_frame, cfg, verdict)?;
            out.push(Row::new(SECTION, case, METRIC, ns, "ns").note("64-byte IPv4/UDP frame"));
        }
        drop(obj);

        for (variant, features) in XDP_FILTER_VARIANTS {
            match xdp_filter(cfg, &pop, &cases, variant, features) {
                Ok(rows) => {
                    for (row, base) in rows {
                        out.push_vs(row, base);
                    }
                }
                Err(e) => {
                    for c in cases.iter().filter(|c| c.xdp_filter) {
                        let case = format!("{variant}: {}", c.name);
                        out.push(Row::unavailable(
                            SECTION,
                            &case,
                            METRIC,
                            "ns",
                            &format!("{e:#}"),
                        ));
                    }
                }
            }
        }

        for &(label, n) in &cfg.sizes {
            ipguard(out, cfg, &pop, &cases, label, n)?;
        }
        if let Some(&(label, n)) = cfg.sizes.iter().find(|(_, n)| *n == 10_000) {
            scoped(out, cfg, &pop, label, n)?;
        }

        // The baselines again: how much the machine drifted during the section (other
        // work on a shared machine shows here).
        let mut obj = objects::load()?;
        for (case, prog, verdict) in [
            (TRIVIAL_PASS, objects::TRIVIAL_PASS, XDP_PASS),
            (TRIVIAL_DROP, objects::TRIVIAL_DROP, XDP_DROP),
        ] {
            let prog = objects::program(&mut obj, prog)?;
            let ns = test_run_ns(prog, base_frame, cfg, verdict)?;
            out.push_vs(
                Row::new(
                    SECTION,
                    &format!("{case}, again at the end"),
                    METRIC,
                    ns,
                    "ns",
                )
                .note("drift check"),
                case,
            );
        }
        Ok(())
    }
}

/// One frame to measure and the verdict ipguard must give it.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    /// xdp-filter can express this case (it has no whitelist).
    xdp_filter: bool,
}

fn cases(p: &Probes) -> Vec<Case> {
    let case = |name, frame, verdict, xdp_filter| Case {
        name,
        frame,
        verdict,
        xdp_filter,
    };
    vec![
        case("v4 unlisted (PASS)", v4(&[], p.v4_unlisted), XDP_PASS, true),
        case("v4 blacklisted (DROP)", v4(&[], p.v4_black), XDP_DROP, true),
        case(
            "v4 whitelisted (PASS)",
            v4(&[], p.v4_white),
            XDP_PASS,
            false,
        ),
        case("v6 unlisted (PASS)", v6(p.v6_unlisted), XDP_PASS, true),
        case("v6 blacklisted (DROP)", v6(p.v6_black), XDP_DROP, true),
        case(
            "VLAN v4 unlisted (PASS)",
            v4(&[ETH_P_8021Q], p.v4_unlisted),
            XDP_PASS,
            true,
        ),
        // Monitor mode: a blacklist entry that would drop, passed and counted like an
        // unlisted source.
        case(
            "v4 monitored blacklist (PASS, would drop)",
            v4(&[], p.v4_monitored),
            XDP_PASS,
            false,
        ),
    ]
}

/// A 64-byte Ethernet (+ VLAN tags) / IPv4 / UDP frame from `src`.
pub fn v4(tags: &[u16], src: Ipv4Addr) -> Vec<u8> {
    let mut f = frames::eth(tags, frames::ETH_P_IP);
    let payload = FRAME_LEN - f.len() - 20;
    f.extend(frames::ipv4(
        src,
        Ipv4Addr::new(192, 0, 2, 1),
        IPPROTO_UDP,
        &[],
        0,
        &udp(payload),
    ));
    f
}

/// A 64-byte Ethernet / IPv6 / UDP frame from `src`.
fn v6(src: Ipv6Addr) -> Vec<u8> {
    let mut f = frames::eth(&[], frames::ETH_P_IPV6);
    let payload = FRAME_LEN - f.len() - 40;
    f.extend(frames::ipv6(
        src,
        "2001:db8:1::1".parse().expect("valid"),
        IPPROTO_UDP,
        &udp(payload),
    ));
    f
}

/// A UDP header to port 9 (discard) with zeroed data, `len` bytes in all.
pub fn udp(len: usize) -> Vec<u8> {
    let mut h = vec![0xc3, 0x50, 0, 9];
    h.extend_from_slice(&(len as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.resize(len, 0);
    h
}

/// The addresses the cases send from.
struct Probes {
    v4_unlisted: Ipv4Addr,
    v4_black: Ipv4Addr,
    v4_white: Ipv4Addr,
    v6_unlisted: Ipv6Addr,
    v6_black: Ipv6Addr,
    many: Vec<Ipv4Addr>,
    /// On the monitored blacklist (monitor mode: would drop, passes).
    v4_monitored: Ipv4Addr,
}

/// The probes' list entries and the random prefixes the lists are cut from.
struct Population {
    probes: Probes,
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl Population {
    fn new() -> Self {
        let mut rng = Rng::new(SEED);
        let (v4, v6) = random_nets(&mut rng, PROBE_POOL);
        let mut cov = Coverage::default();
        for n in &v4 {
            cov.add(IpNet::V4(*n));
        }
        for n in &v6 {
            cov.add(IpNet::V6(*n));
        }
        // Probes that no random prefix covers (so that the probe's own entry decides), each
        // added to the coverage so the next one stays clear of it.
        let mut pick = |cov: &mut Coverage, len: u8, v6: bool| -> IpAddr {
            // Bounded: the lists cover well under half of the address space.
            for _ in 0..100_000 {
                let ip = if v6 {
                    IpAddr::V6(rng.v6())
                } else {
                    IpAddr::V4(rng.v4())
                };
                if !cov.covers(ip) {
                    cov.add(IpNet::new(ip, len).expect("valid length").trunc());
                    return ip;
                }
            }
            panic!("no address outside the random lists after 100000 draws");
        };
        let v4_of = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("asked for IPv4"),
        };
        let v6_of = |ip: IpAddr| match ip {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => unreachable!("asked for IPv6"),
        };
        let v4_black = v4_of(pick(&mut cov, 32, false));
        let v4_white = v4_of(pick(&mut cov, 24, false));
        let v4_unlisted = v4_of(pick(&mut cov, 32, false));
        let v6_black = v6_of(pick(&mut cov, 128, true));
        let v6_unlisted = v6_of(pick(&mut cov, 128, true));
        let many = (0..MANY)
            .map(|_| v4_of(pick(&mut cov, 32, false)))
            .collect();
        // Picked last, so the other probes are those of earlier runs.
        let v4_monitored = v4_of(pick(&mut cov, 32, false));
        Population {
            probes: Probes {
                v4_unlisted,
                v4_black,
                v4_white,
                v6_unlisted,
                v6_black,
                many,
                v4_monitored,
            },
            v4,
            v6,
        }
    }

    /// The probes' entries plus the first `n` random prefixes of each family; every
    /// [`WHITE_EVERY`]th of them whitelisted, the others blacklisted.
    fn lists(&self, n: usize) -> Lists {
        let p = &self.probes;
        let mut l = Lists {
            whitelist: vec![IpNet::V4(
                Ipv4Net::new(p.v4_white, 24).expect("valid").trunc(),
            )],
            graylist: Vec::new(),
            blacklist: vec![
                IpNet::V4(Ipv4Net::new(p.v4_black, 32).expect("valid")),
                IpNet::V6(Ipv6Net::new(p.v6_black, 128).expect("valid")),
            ],
            monitor_blacklist: vec![IpNet::V4(Ipv4Net::new(p.v4_monitored, 32).expect("valid"))],
            ..Lists::default()
        };
        let random = self.v4[..n]
            .iter()
            .map(|n| IpNet::V4(*n))
            .zip(self.v6[..n].iter().map(|n| IpNet::V6(*n)));
        for (i, (a, b)) in random.enumerate() {
            let list = if i % WHITE_EVERY == WHITE_EVERY - 1 {
                &mut l.whitelist
            } else {
                &mut l.blacklist
            };
            list.push(a);
            list.push(b);
        }
        l
    }

    /// The first `n` addresses of the blacklisted probe and the random prefixes (xdp-filter
    /// holds addresses, not prefixes: a prefix stands for its first address).
    fn addresses(&self, n: usize) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let v4 = std::iter::once(self.probes.v4_black)
            .chain(self.v4.iter().map(|n| n.network()))
            .take(n)
            .collect();
        let v6 = std::iter::once(self.probes.v6_black)
            .chain(self.v6.iter().map(|n| n.network()))
            .take(n)
            .collect();
        (v4, v6)
    }
}

/// Median over `cfg.samples` runs of the kernel's mean time per repeat, in ns. Fails if
/// the program's verdict is not `verdict`.
fn test_run_ns(prog: &Xdp, frame: &[u8], cfg: &Config, verdict: u32) -> Result<f64> {
    let mut samples = Vec::with_capacity(cfg.samples);
    for _ in 0..cfg.samples {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: cfg.repeat,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        if r.return_value != verdict {
            bail!(
                "verdict {} instead of {verdict} (1 = DROP, 2 = PASS)",
                r.return_value
            );
        }
        // The kernel reports the mean per repeat (bpf_test_timer: time / repeats, in ns).
        samples.push(r.duration.as_nanos() as f64);
    }
    median(&samples).context("no sample")
}

/// The mean cost over `sources` (each run on its own, `repeat / sources` times), median
/// over samples: traffic from many sources instead of one repeated packet.
fn many_sources_ns(prog: &Xdp, frames: &[Vec<u8>], cfg: &Config, verdict: u32) -> Result<f64> {
    let repeat = (cfg.repeat / frames.len() as u32).max(1000);
    let per = Config {
        repeat,
        samples: 1,
        ..cfg.clone()
    };
    let mut samples = Vec::with_capacity(cfg.samples);
    for _ in 0..cfg.samples {
        let mut sum = 0.0;
        for f in frames {
            sum += test_run_ns(prog, f, &per, verdict)?;
        }
        samples.push(sum / frames.len() as f64);
    }
    median(&samples).context("no sample")
}

fn ipguard(
    out: &mut Results,
    cfg: &Config,
    pop: &Population,
    cases: &[Case],
    label: &str,
    n: usize,
) -> Result<()> {
    let name = format!("ipguard {label}");
    let lists = pop.lists(n);
    let t = Instant::now();
    let compiled = compile(&lists);
    let compile_s = t.elapsed().as_secs_f64();
    // Room for the largest lists (1M+1M and the probes, IPv4 prefixes longer than /24
    // expanded to addresses). The list maps are not preallocated: the capacity costs
    // nothing until it is used.
    let capacity = (compiled.len() as u32 + 1024).max(4_200_000);
    let maps = MapsConfig {
        sources_capacity: 65_536,
        lpm_v4_capacity: capacity,
        lpm_v6_capacity: capacity,
    };
    let mut dp = Dataplane::load(&maps).context("loading ipguard's XDP program")?;
    // As the daemon does at start-up: one whole-table sync.
    let t = Instant::now();
    let written = dp
        .backend
        .sync(&compiled, &Default::default())
        .context("writing the lists")?;
    let insert_s = t.elapsed().as_secs_f64();
    out.push(
        Row::new(
            SECTION,
            &format!("{name}: lists loaded"),
            "load time",
            compile_s + insert_s,
            "s",
        )
        .note(format!(
            "{n} v4 + {n} v6 random prefixes + 4 probe entries -> {} compiled entries: \
             compile {compile_s:.2} s, written to the kernel tables {insert_s:.2} s ({} map \
             keys and /24 slots)",
            compiled.len(),
            written.inserted
        )),
    );
    // The probes must get the verdicts their cases expect from these lists.
    for c in cases {
        let ip = probe_of(pop, c);
        let listed = longest_match(&compiled, ip).map(|(_, e)| e.list);
        let drop = matches!(listed, Some(ipguard_common::LIST_BLACKLIST));
        if drop != (c.verdict == XDP_DROP) {
            bail!("probe {ip} of case {:?} is listed as {listed:?}", c.name);
        }
    }

    let prog = dp.program.xdp()?;
    for c in cases {
        let ns = test_run_ns(prog, &c.frame, cfg, c.verdict)
            .with_context(|| format!("{name}: {}", c.name))?;
        let base = if c.verdict == XDP_DROP {
            TRIVIAL_DROP
        } else {
            TRIVIAL_PASS
        };
        let case = format!("{name}: {}", c.name);
        out.push_vs(Row::new(SECTION, &case, METRIC, ns, "ns"), base);
        if n == 10_000 && c.xdp_filter {
            let (variant, _) = XDP_FILTER_VARIANTS[0];
            out.push_vs_metric(
                Row::new(SECTION, &case, "vs xdp-filter", ns, "ns"),
                &format!("{variant}: {}", c.name),
                METRIC,
            );
        }
        if n >= 1_000_000 {
            out.push_vs_metric(
                Row::new(SECTION, &case, "vs 0 prefixes", ns, "ns"),
                &format!("ipguard 0: {}", c.name),
                METRIC,
            );
        }
    }
    let many: Vec<Vec<u8>> = pop.probes.many.iter().map(|a| v4(&[], *a)).collect();
    let ns = many_sources_ns(prog, &many, cfg, XDP_PASS)?;
    out.push_vs(
        Row::new(
            SECTION,
            &format!("{name}: v4 unlisted, {MANY} sources (PASS)"),
            METRIC,
            ns,
            "ns",
        )
        .note(format!(
            "mean over {MANY} unlisted sources, {} repeats each",
            (cfg.repeat / MANY as u32).max(1000)
        )),
        TRIVIAL_PASS,
    );
    Ok(())
}

fn probe_of(pop: &Population, c: &Case) -> IpAddr {
    // The source address sits at the same offset from the IP header in every case frame.
    let p = &pop.probes;
    match c.name {
        n if n.starts_with("v4 unlisted") || n.starts_with("VLAN") => p.v4_unlisted.into(),
        n if n.starts_with("v4 blacklisted") => p.v4_black.into(),
        n if n.starts_with("v4 whitelisted") => p.v4_white.into(),
        n if n.starts_with("v4 monitored") => p.v4_monitored.into(),
        n if n.starts_with("v6 unlisted") => p.v6_unlisted.into(),
        _ => p.v6_black.into(),
    }
}

/// xdp-filter with [`MAX_ADDRESSES`] addresses per family, on a veth of its own namespace:
/// a row per case it can express, with its baseline; nothing if any case fails.
fn xdp_filter(
    cfg: &Config,
    pop: &Population,
    cases: &[Case],
    variant: &str,
    features: Option<&str>,
) -> Result<Vec<(Row, &'static str)>> {
    let ns = Netns::create("pp")?;
    run(&[
        "ip", "-n", &ns.name, "link", "add", "ipgbppa", "type", "veth", "peer", "name", "ipgbppb",
    ])?;
    for i in ["ipgbppa", "ipgbppb"] {
        run(&["ip", "-n", &ns.name, "link", "set", i, "up"])?;
    }
    let filter = XdpFilter::load(&ns.name, "ipgbppa", "native", features)?;
    let (v4, v6) = pop.addresses(MAX_ADDRESSES);
    filter.deny_sources(&v4, &v6)?;
    let id = filter.prog_id()?.to_string();
    let repeat = cfg.repeat.to_string();
    let mut rows = Vec::new();
    for c in cases.iter().filter(|c| c.xdp_filter) {
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(&c.frame)?;
        let path = file.path().to_string_lossy().into_owned();
        let mut samples = Vec::new();
        let mut verdict = None;
        for _ in 0..cfg.samples {
            let text = run(&[
                "bpftool", "prog", "run", "id", &id, "data_in", &path, "repeat", &repeat,
            ])?;
            let (ret, ns) = parse_bpftool_run(&text)?;
            verdict = Some(ret);
            samples.push(ns);
        }
        let ns = median(&samples).context("no sample")?;
        let base = if c.verdict == XDP_DROP {
            TRIVIAL_DROP
        } else {
            TRIVIAL_PASS
        };
        let mut row = Row::new(SECTION, &format!("{variant}: {}", c.name), METRIC, ns, "ns")
            .note("bpftool prog run");
        if verdict != Some(c.verdict) {
            row = row.note(format!("verdict {verdict:?}, expected {}", c.verdict));
        }
        rows.push((row, base));
    }
    Ok(rows)
}

/// (return value, mean ns) from `bpftool prog run` ("Return value: 2, duration (average): 73ns").
fn parse_bpftool_run(text: &str) -> Result<(u32, f64)> {
    let ret = text
        .split("Return value:")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok());
    let ns = text
        .split("duration (average):")
        .nth(1)
        .and_then(|s| s.trim().strip_suffix("ns").or_else(|| s.split("ns").next()))
        .and_then(|s| s.trim().parse().ok());
    match (ret, ns) {
        (Some(r), Some(n)) => Ok((r, n)),
        _ => bail!("cannot read `bpftool prog run` output: {text:?}"),
    }
}

/// Port- and protocol-scoped rules: what a packet costs when its source has a scope group
/// (the program then looks the packet's protocol and port up in the group's verdicts) and
/// when it has none (a scoped rule elsewhere must cost an unscoped source nothing). The
/// same lists as `ipguard {label}`, each case with its own rules on a fresh program.
fn scoped(out: &mut Results, cfg: &Config, pop: &Population, label: &str, n: usize) -> Result<()> {
    use ipguard::{
        model::{Layer, Proto, Scope},
        policy::compile::{Change, ListState},
    };
    let lists = pop.lists(n);
    let probe = pop.probes.v4_unlisted;
    let everywhere: [IpNet; 2] = ["0.0.0.0/0".parse()?, "::/0".parse()?];
    let elsewhere: [IpNet; 1] = ["100.64.0.0/10".parse()?];
    // (case, the rule's networks, its scope's port, deny, the probe frame's verdict, note)
    let variants: [(&str, &[IpNet], u16, u32, &str); 3] = [
        (
            "v4 unlisted, a scoped rule elsewhere (PASS)",
            &elsewhere,
            9,
            XDP_PASS,
            "deny udp/9 from 100.64.0.0/10: the probe's prefix has no scope group",
        ),
        (
            "v4 unlisted, scoped source, port out of scope (PASS)",
            &everywhere,
            5353,
            XDP_PASS,
            "deny udp/5353 from 0.0.0.0/0 and ::/0, packet to udp/9: the group's hint rules the cells out (no scope lookup)",
        ),
        (
            "v4 unlisted, scoped source, port in scope (DROP)",
            &everywhere,
            9,
            XDP_DROP,
            "deny udp/9 from 0.0.0.0/0 and ::/0, packet to udp/9: one scope lookup",
        ),
    ];
    let frame = v4(&[], probe);
    for (case, nets, port, verdict, note) in variants {
        let mut state = ListState::new();
        let scope = state
            .intern_scope(&Scope::new(Some(Proto::Udp), vec![port]).map_err(anyhow::Error::msg)?)
            .context("a scope")?;
        let plain = [
            (&lists.whitelist, Layer::White),
            (&lists.graylist, Layer::Gray),
            (&lists.blacklist, Layer::Black),
            (&lists.monitor_blacklist, Layer::MonitorBlack),
        ];
        let deny = Layer::Rule {
            index: 0,
            deny: true,
        };
        let _ = state.apply(
            plain
                .iter()
                .flat_map(|(nets, layer)| nets.iter().map(|n| Change::Insert(*n, *layer)))
                .chain(nets.iter().map(|n| Change::InsertScoped(*n, deny, scope))),
        );
        let capacity = (state.written().len() as u32 + 1024).max(65_536);
        let maps = MapsConfig {
            sources_capacity: 65_536,
            lpm_v4_capacity: capacity,
            lpm_v6_capacity: capacity,
        };
        let mut dp = Dataplane::load(&maps).context("loading ipguard's XDP program")?;
        dp.backend
            .sync(state.written(), &state.scopes())
            .context("writing the lists and scopes")?;
        let prog = dp.program.xdp()?;
        let ns =
            test_run_ns(prog, &frame, cfg, verdict).with_context(|| format!("scoped: {case}"))?;
        let base = if verdict == XDP_DROP {
            TRIVIAL_DROP
        } else {
            TRIVIAL_PASS
        };
        let name = format!("ipguard {label}: {case}");
        out.push_vs(Row::new(SECTION, &name, METRIC, ns, "ns").note(note), base);
        // Against the same lists without any scope, measured in this run.
        let unscoped = if verdict == XDP_DROP {
            "v4 blacklisted (DROP)"
        } else {
            "v4 unlisted (PASS)"
        };
        out.push_vs_metric(
            Row::new(SECTION, &name, "vs unscoped", ns, "ns"),
            &format!("ipguard {label}: {unscoped}"),
            METRIC,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftool_output_parses() {
        assert_eq!(
            parse_bpftool_run("Return value: 2, duration (average): 73ns\n").unwrap(),
            (2, 73.0)
        );
        assert!(parse_bpftool_run("Error: bad").is_err());
    }

    #[test]
    fn frames_are_64_bytes() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(v4(&[], a).len(), FRAME_LEN);
        assert_eq!(v4(&[ETH_P_8021Q], a).len(), FRAME_LEN);
        assert_eq!(v6("2001:db8::1".parse().unwrap()).len(), FRAME_LEN);
    }
}
