//! Sections "control-plane" and "reaction": the daemon itself, on its own testbed (see
//! `ipguard_tests::policy_bench`). The daemon binary is `IPGUARD_BIN` (the release build,
//! set by `cargo xtask bench`).

use anyhow::Result;
use ipguard_tests::policy_bench::{self, Figure};

use super::{
    results::{Results, Row},
    Config, Section,
};

fn push(out: &mut Results, section: &str, figs: Vec<Figure>) {
    for f in figs {
        let mut row = Row::new(section, &f.case, f.metric, f.value, f.unit);
        if f.value.is_nan() {
            row = Row::unavailable(section, &f.case, f.metric, f.unit, "no sample");
        }
        out.push(row.note(f.note));
    }
}

/// Start-up with 1M+1M prefixes, API insert rate, expiry of many entries, the daemon with
/// a full source map, the policy engine with many offenders.
pub struct ControlPlane;

impl Section for ControlPlane {
    fn name(&self) -> &'static str {
        "control-plane"
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        let q = cfg.quick;
        push(out, self.name(), policy_bench::startup(q));
        push(out, self.name(), policy_bench::api_load_and_expiry(q));
        push(out, self.name(), policy_bench::big_batches(q));
        push(out, self.name(), policy_bench::tracked_sources(q));
        push(out, self.name(), policy_bench::engine_scale(q));
        Ok(())
    }
}

/// From a source's over-limit packet to its ban in the kernel, over many sources.
pub struct Reaction;

impl Section for Reaction {
    fn name(&self) -> &'static str {
        "reaction"
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        push(out, self.name(), policy_bench::reaction(cfg.quick));
        Ok(())
    }
}

/// A fleet through Redis: propagation, a large batch, a resync, the idle cost.
pub struct Cluster;

impl Section for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        push(
            out,
            self.name(),
            ipguard_tests::fleet_bench::cluster(cfg.quick),
        );
        Ok(())
    }
}

/// `[geo]`: compiling a large country from a MaxMind database and starting with it.
pub struct Geo;

impl Section for Geo {
    fn name(&self) -> &'static str {
        "geo"
    }

    fn run(&mut self, cfg: &Config, out: &mut Results) -> Result<()> {
        push(out, self.name(), policy_bench::geo(cfg.quick));
        Ok(())
    }
}
