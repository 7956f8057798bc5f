//! `cargo xtask`: the project's own setup, build, run, test and lint paths.
//!
//! Every external command is printed before it runs, so an operator can see and
//! repeat each step by hand.

mod bench;
mod package;
mod run;
mod setup;
mod test;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(bin_name = "cargo xtask", about = "ipguard project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks to build ipguard (idempotent; apt needs root).
    Setup,
    /// Setup, then build the daemon (the XDP program is embedded by its build.rs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Setup, build, then run the daemon on a demo veth pair in network namespaces (root).
    Run(run::RunArgs),
    /// Setup, build, then run all tests, privileged ones included (root).
    Test(test::TestArgs),
    /// rustfmt check and clippy with warnings denied.
    Lint,
    /// Setup, build the release binary, then the Debian package (target/debian/*.deb).
    Package,
    /// Setup, build, then benchmark the XDP program against baselines (root); writes
    /// target/bench/results.json.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => {
            setup::setup()?;
            build(release)
        }
        Cmd::Run(args) => run::run(args),
        Cmd::Test(args) => test::test(args),
        Cmd::Lint => lint(),
        Cmd::Bench(args) => bench::bench(args),
        Cmd::Package => package::package().map(|_| ()),
    }
}

/// `cargo build -p ipguard-user`: builds the daemon and, through its build.rs, the XDP program.
pub fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "ipguard-user"]);
    if release {
        cmd.arg("--release");
    }
    run_checked(&mut cmd)
}

fn lint() -> Result<()> {
    // clippy runs ipguard-user's build.rs, which compiles the XDP program: it needs the toolchain.
    setup::setup()?;
    run_checked(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_checked(
        cargo()
            .args(["clippy", "--workspace", "--all-targets"])
            .args(HOST_EXCLUDES)
            .args(["--", "-D", "warnings"]),
    )
}

/// The XDP crate only builds for bpfel-unknown-none, through ipguard-user's build.rs (on the
/// host its no_std binary fails: "unwinding panics are not supported without std"), and the
/// eBPF toolchain (Debian's rustc-web) has no clippy. Host-side clippy and tests skip it.
pub const HOST_EXCLUDES: &[&str] = &["--exclude", "ipguard-ebpf"];

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest dir has a parent")
}

/// A `cargo` command run from the workspace root, with the cargo that started xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR` and `build.target-dir`).
pub fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `cargo metadata` output")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` output has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// The `ipguard` binary of a profile, checked to exist.
pub fn ipguard_bin(release: bool) -> Result<PathBuf> {
    let bin = target_dir()?
        .join(if release { "release" } else { "debug" })
        .join("ipguard");
    if !bin.is_file() {
        bail!("{} does not exist after the build", bin.display());
    }
    Ok(bin)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// How a command reads in a shell: explicitly set env vars, program, quoted args.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    // The cargo that started xtask is a long rustup path: show it as plain `cargo`.
    let program = cmd.get_program();
    if std::env::var_os("CARGO").is_some_and(|c| c == program) {
        parts.push("cargo".to_owned());
    } else {
        parts.push(quote(program));
    }
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Prints and runs a command; fails unless it exits 0.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = run_status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Prints and runs a command; returns its exit status whatever it is.
pub fn run_status(cmd: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("could not start `{}`", display(cmd)))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Cmd};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_everything_after_the_separator_to_cargo_test() {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "--release", "--", "--nocapture"])
            .expect("parses");
        let Cmd::Test(args) = cli.command else {
            panic!("not the test subcommand");
        };
        assert_eq!(args.cargo_test_args, ["--release", "--", "--nocapture"]);
    }

    #[test]
    fn run_on_a_real_interface_needs_both_flags() {
        assert!(Cli::try_parse_from(["xtask", "run", "--interface", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--no-demo"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--no-demo", "--interface", "eth0"]).is_ok());
    }
}
