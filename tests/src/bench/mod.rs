//! The benchmark behind `cargo xtask bench`: sections of measurements that write rows into
//! one results table ([`results::Results`]), printed at the end and written as JSON.
//!
//! A section is one kind of measurement (see [`Section`]); add one by implementing the
//! trait in a module of its own and listing it in [`sections`]. Figures are ratios to a
//! baseline measured in the same run, never absolute thresholds: this is a benchmark, not
//! a test.

pub mod control;
pub mod drop_rate;
pub mod flood;
pub mod live_cost;
pub mod live_tx;
pub mod netns;
pub mod objects;
pub mod per_packet;
pub mod prefixes;
pub mod results;
pub mod system;
pub mod xdp_filter;

use std::time::Duration;

use anyhow::Result;

use results::Results;

/// How much to measure: the full run, or `--quick` (CI: under 3 minutes with the build).
#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    /// BPF_PROG_TEST_RUN repeats per measurement.
    pub repeat: u32,
    /// Measurements per figure; the median is kept.
    pub samples: usize,
    /// ipguard's list sizes: (label, random prefixes per family).
    pub sizes: Vec<(&'static str, usize)>,
    /// Bounds of one flood on the testbed.
    pub flood_time: Duration,
    pub flood_max_packets: u64,
    /// Floods per case; the median is kept.
    pub flood_runs: usize,
}

impl Config {
    pub fn new(quick: bool) -> Self {
        if quick {
            Config {
                quick,
                repeat: 1_000_000,
                samples: 1,
                sizes: vec![("0", 0), ("10k+10k", 10_000)],
                flood_time: Duration::from_secs(1),
                flood_max_packets: 20_000_000,
                flood_runs: 1,
            }
        } else {
            Config {
                quick,
                repeat: 1_000_000,
                samples: 7,
                sizes: vec![("0", 0), ("10k+10k", 10_000), ("1M+1M", 1_000_000)],
                flood_time: Duration::from_secs(3),
                flood_max_packets: 60_000_000,
                flood_runs: 3,
            }
        }
    }
}

/// One kind of measurement.
pub trait Section {
    /// The `section` of its rows.
    fn name(&self) -> &'static str;
    /// Measures and adds rows. Cases that depend on optional tools add an "n/a" row when
    /// they cannot run; an error means the section's own subject could not be measured.
    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()>;
}

/// Every section, in the order they run.
pub fn sections() -> Vec<Box<dyn Section>> {
    vec![
        Box::new(per_packet::PerPacket),
        Box::new(drop_rate::DropRate),
        Box::new(live_cost::LiveCost),
        Box::new(flood::SpoofedFlood),
        Box::new(control::Reaction),
        Box::new(control::ControlPlane),
        Box::new(control::Cluster),
        Box::new(control::Geo),
    ]
}
