//! `cargo xtask test`: every test of the workspace, the privileged ones (package
//! `ipguard-tests`: BPF_PROG_TEST_RUN, network namespaces, the daemon binary) included.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use anyhow::{bail, Context as _, Result};

use crate::{build, cargo, display, ipguard_bin, is_root, setup, HOST_EXCLUDES};

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
    // The package test installs the Debian package: build it (and the release binary).
    let deb = crate::package::package()?;
    // The T2 tests run the daemon binary itself: build it first and tell them where it is.
    build(false)?;
    let bin = ipguard_bin(false)?;
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    let mut cmd = cargo();
    cmd.env("IPGUARD_BIN", &bin)
        .env("IPGUARD_DEB", &deb)
        .env(
            "IPGUARD_SCHEMATHESIS",
            setup::python_tools_dir()?.join("bin/schemathesis"),
        )
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(HOST_EXCLUDES)
        .args(&args.cargo_test_args)
        .stdout(Stdio::piped());
    println!("$ {}", display(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    // Echo the output as it comes and add up the per-binary results, so the run ends with
    // one total instead of the last (often empty) doc-test binary's line.
    let mut total = Totals::default();
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        total.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "tests: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if total.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds a libtest summary line: `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_add_up_libtest_summaries() {
        let mut t = Totals::default();
        t.add("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.66s");
        t.add("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("test foo ... ok");
        assert_eq!(
            t,
            Totals {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}
