//! `cargo xtask setup`: the proven toolchain recipe (shared/docs/TOOLCHAIN.md), idempotent.
//!
//! rustup cannot download `rust-src` on these machines, so the XDP program is built with
//! Debian's rustc-web (whose core source `rust-web-src` installs under /usr/lib/rustlib) and a
//! bpf-linker linked against the same LLVM 22.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, display, is_root, run_checked};

/// Debian packages: the eBPF toolchain, and the tools the demo, the privileged tests and the
/// benchmark use.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "iproute2",
    "iputils-ping",
    "python3",
    "python3-venv",
    "bpftool",
    // The benchmark's baselines and testbed (`cargo xtask bench`).
    "xdp-tools",
    "nftables",
    "ipset",
    "iptables",
    "ethtool",
    // The fleet tests start their own Redis (`tests/tests/fleet_netns.rs`).
    "redis-server",
    // Test certificates for the fleet's TLS test.
    "openssl",
    // The status page's browser test (`tests/tests/ui_browser.rs`) drives Debian's Chromium.
    "chromium",
    // The package test reads the man pages (`man -l`) and checks the unit
    // (`systemd-analyze verify` and `security`; systemd need not be PID 1 for these).
    "man-db",
    "systemd",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The eBPF toolchain's sysroot (rustc-web) and where build-std looks for core's source.
const EBPF_SYSROOT: &str = "/usr";
const CORE_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

pub fn setup() -> Result<()> {
    println!("setup: checking the toolchain");
    apt_packages()?;
    bpf_linker()?;
    cargo_deb()?;
    verify()?;
    python_tools()?;
    println!("setup: all present");
    Ok(())
}

/// PyPI tools the tests run, pinned, in a virtual environment of the project's own
/// (`target/pytools`): nothing is installed into the system's Python.
const PYTHON_TOOLS: &[&str] = &[
    "schemathesis==4.32.5",
    "playwright==1.65.3",
    "mmdb-writer==0.2.7",
];

/// The virtual environment of [`PYTHON_TOOLS`].
pub fn python_tools_dir() -> Result<PathBuf> {
    Ok(crate::target_dir()?.join("pytools"))
}

fn python_tools() -> Result<()> {
    let venv = python_tools_dir()?;
    let pip = venv.join("bin/pip");
    if !pip.is_file() {
        println!("  python tools   creating {}", venv.display());
        // Debian's interpreter (the apt packages above), not whichever is first on PATH.
        run_checked(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv"])
                .arg(&venv),
        )?;
    }
    let installed = Command::new(&pip)
        .args(["freeze", "--disable-pip-version-check"])
        .output()
        .context("running pip freeze")?;
    let have = String::from_utf8_lossy(&installed.stdout).to_lowercase();
    let missing: Vec<&str> = PYTHON_TOOLS
        .iter()
        .copied()
        .filter(|t| !have.lines().any(|l| l == t.to_lowercase()))
        .collect();
    if missing.is_empty() {
        println!("  python tools   {}", PYTHON_TOOLS.join(" "));
        return Ok(());
    }
    println!("  python tools   installing {}", missing.join(" "));
    run_checked(
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&missing),
    )
}

fn apt_packages() -> Result<()> {
    let mut missing = Vec::new();
    for pkg in APT_PACKAGES {
        let installed = dpkg_installed(pkg)?;
        println!(
            "  apt package {pkg:<14} {}",
            if installed { "installed" } else { "MISSING" }
        );
        if !installed {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "apt packages missing: {}; installing them needs root: run `cargo xtask setup` as root",
            missing.join(" ")
        );
    }
    run_checked(Command::new("apt-get").arg("update"))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing),
    )?;
    for pkg in missing {
        if !dpkg_installed(pkg)? {
            bail!("apt package {pkg} is still not installed after apt-get install");
        }
    }
    Ok(())
}

fn dpkg_installed(pkg: &str) -> Result<bool> {
    // dpkg-query exits non-zero for a package it has never heard of: that is "not installed".
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .context("running dpkg-query (this setup expects Debian 12)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn bpf_linker() -> Result<()> {
    if let Some(path) = find_bpf_linker()? {
        println!("  bpf-linker {BPF_LINKER_VERSION}     {}", path.display());
        return ensure_on_path(&path);
    }
    // No root needed: cargo installs into $CARGO_HOME/bin of whoever runs this.
    println!("  bpf-linker {BPF_LINKER_VERSION}     MISSING (building it takes a minute or two)");
    run_checked(
        cargo()
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args(["install", "--locked"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"]),
    )?;
    let path = find_bpf_linker()?.with_context(|| {
        format!("bpf-linker {BPF_LINKER_VERSION} not found after `cargo install`")
    })?;
    ensure_on_path(&path)
}

/// cargo-deb, which `cargo xtask package` builds the Debian package with.
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo_deb() -> Result<()> {
    let have = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if have.split_whitespace().any(|w| w == CARGO_DEB_VERSION) {
        println!("  cargo-deb {CARGO_DEB_VERSION}");
        return Ok(());
    }
    println!("  cargo-deb {CARGO_DEB_VERSION}      MISSING (building it takes two minutes)");
    run_checked(
        cargo()
            .args(["install", "--locked"])
            .arg(format!("cargo-deb@{CARGO_DEB_VERSION}")),
    )
}

/// The first `bpf-linker` of the right version in PATH, `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn find_bpf_linker() -> Result<Option<PathBuf>> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(Path::new(&home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin"));
    }
    for dir in candidates {
        let exe = dir.join("bpf-linker");
        if !exe.is_file() {
            continue;
        }
        let out = Command::new(&exe)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", exe.display()))?;
        // Prints "bpf-linker 0.13.0".
        let version = String::from_utf8_lossy(&out.stdout);
        if version.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
            return Ok(Some(exe));
        }
        println!(
            "  ignoring {} (reports {:?}, need {BPF_LINKER_VERSION})",
            exe.display(),
            version.trim()
        );
    }
    Ok(None)
}

/// The eBPF build finds bpf-linker through PATH: put its directory first for our children.
fn ensure_on_path(exe: &Path) -> Result<()> {
    let dir = exe.parent().context("bpf-linker path has no parent")?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if dirs.iter().any(|d| d == dir) {
        return Ok(());
    }
    println!("  adding {} to PATH for the commands below", dir.display());
    dirs.insert(0, dir.to_path_buf());
    let joined = std::env::join_paths(dirs).context("building PATH")?;
    // Single-threaded here; edition 2021 keeps set_var safe.
    std::env::set_var("PATH", joined);
    Ok(())
}

fn verify() -> Result<()> {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", EBPF_SYSROOT, "rustc", "--version"]);
    let out = cmd.output().with_context(|| {
        format!(
            "could not run `{}`: is rustup installed and on PATH?",
            display(&cmd)
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\nthe eBPF toolchain is Debian's rustc-web under {EBPF_SYSROOT} \
             (apt package rustc-web)",
            display(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!(
        "  eBPF toolchain {EBPF_SYSROOT:<8} {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    if !Path::new(CORE_SRC).is_dir() {
        bail!(
            "{CORE_SRC} is missing: build-std needs core's source for bpfel-unknown-none \
             (apt package rust-web-src)"
        );
    }
    println!("  core source    {CORE_SRC}");
    Ok(())
}
