//! `cargo xtask test`: every test of the workspace, the privileged ones (package
//! `ipguard-tests`: BPF_PROG_TEST_RUN, network namespaces, the daemon binary) included.

use anyhow::{bail, Result};

use crate::{build, cargo, ipguard_bin, is_root, run_status, setup, HOST_EXCLUDES};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Passed to `cargo test --workspace` as they are, e.g. `-- -- --nocapture`.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn test(args: TestArgs) -> Result<()> {
    if !is_root() {
        bail!("privileged tests need root; run as root");
    }
    setup::setup()?;
    // The T2 tests run the daemon binary itself: build it first and tell them where it is.
    build(false)?;
    let bin = ipguard_bin(false)?;
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    let mut cmd = cargo();
    cmd.env("IPGUARD_BIN", &bin)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(HOST_EXCLUDES)
        .args(&args.cargo_test_args);
    let status = run_status(&mut cmd)?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}
