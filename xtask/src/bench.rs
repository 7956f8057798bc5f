//! `cargo xtask bench [--quick]`: builds the benchmark runner (`ipguard-tests`' `bench`
//! binary; release for a full run) and runs it. It measures per-packet cost under BPF_PROG_TEST_RUN and
//! drop rates on a veth testbed, prints a table and writes `target/bench/results.json`.
//! See BENCHMARKS.md.

use std::{process::Command, time::Instant};

use anyhow::{bail, Result};

use crate::{cargo, is_root, run_checked, setup, target_dir};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Reduced run for CI: 10k prefixes, one sample per figure, 1-second floods.
    #[arg(long)]
    pub quick: bool,
    /// Run only these sections (comma-separated, e.g. `per-packet`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Build the runner with the release profile for `--quick` too (a full run always does).
    #[arg(long)]
    pub release: bool,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "the benchmark needs root (BPF_PROG_TEST_RUN, XDP on veths, network namespaces, \
             nftables): run `cargo xtask bench` as root"
        );
    }
    let start = Instant::now();
    setup::setup()?;
    // Builds ipguard-user (and through its build.rs the XDP objects, bench programs
    // included: those are always optimised). Every figure is timed by the kernel, so the
    // runner's own profile does not change them: `--quick` (CI) reuses the dev build that
    // `cargo xtask test` made instead of building every dependency again in release, which
    // alone takes minutes on 2 cores.
    let release = args.release || !args.quick;
    let mut build = cargo();
    // The daemon too: the control-plane, reaction and spoofed-flood sections run it.
    build.args([
        "build",
        "--package",
        "ipguard-tests",
        "--bin",
        "bench",
        "--package",
        "ipguard-user",
        "--bin",
        "ipguard",
    ]);
    if release {
        build.arg("--release");
    }
    run_checked(&mut build)?;
    let target = target_dir()?;
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("bench");
    if !bin.is_file() {
        bail!("{} does not exist after the build", bin.display());
    }
    let daemon = target
        .join(if release { "release" } else { "debug" })
        .join("ipguard");
    let out = target.join("bench").join("results.json");
    let mut cmd = Command::new(&bin);
    cmd.env("IPGUARD_BIN", &daemon);
    cmd.arg("--out").arg(&out);
    if args.quick {
        cmd.arg("--quick");
    }
    if !args.only.is_empty() {
        cmd.arg("--only").arg(args.only.join(","));
    }
    let result = run_checked(&mut cmd);
    println!(
        "bench: {} in {:.0} s (build included)",
        if result.is_ok() { "done" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    result
}
