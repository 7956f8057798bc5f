//! Builds the XDP program (`ipguard-ebpf`) with aya-build and leaves the object in OUT_DIR,
//! where `dataplane` embeds it.
//!
//! The eBPF target needs `-Z build-std=core`, i.e. a compiler whose core source is installed.
//! On this project's machines that is Debian's rustc-web at `/usr` (rust-web-src), used through
//! `rustup run /usr`; `IPGUARD_EBPF_TOOLCHAIN` names another one (e.g. `nightly`).

use std::{env, path::Path, process::Command};

use anyhow::{bail, Context as _};

const TOOLCHAIN_VAR: &str = "IPGUARD_EBPF_TOOLCHAIN";
const SETUP_HINT: &str = "run `cargo xtask setup` (as root) to install it";

fn main() {
    if let Err(err) = build() {
        // One clear line in cargo's error output instead of a backtrace.
        println!("cargo::error={err:#}");
        std::process::exit(1);
    }
}

fn build() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_VAR}");
    let toolchain = env::var(TOOLCHAIN_VAR).unwrap_or_else(|_| "/usr".to_owned());
    preflight(&toolchain)?;

    if toolchain.starts_with('/') {
        // A stable compiler: allow -Z build-std for the nested eBPF build only (this variable
        // lives in the build script's process and its children, not in the outer build).
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root_dir = Path::new(&manifest_dir)
        .parent()
        .context("ipguard-user has no parent directory")?
        .join("ipguard-ebpf");
    let root_dir = root_dir
        .to_str()
        .context("the ipguard-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ipguard-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the XDP program (ipguard-ebpf) failed")
}

/// Fails with one clear line instead of a linker trace when the eBPF toolchain is missing.
fn preflight(toolchain: &str) -> anyhow::Result<()> {
    if env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    if toolchain.starts_with('/') {
        let cargo = Path::new(toolchain).join("bin/cargo");
        let core = Path::new(toolchain).join("lib/rustlib/src/rust/library/core");
        if !cargo.exists() {
            bail!(
                "eBPF toolchain missing: no {} (Debian's cargo-web); {SETUP_HINT}",
                cargo.display()
            );
        }
        if !core.exists() {
            bail!("eBPF toolchain missing: no core source at {} (Debian's rust-web-src); {SETUP_HINT}", core.display());
        }
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    match linker {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("eBPF toolchain missing: `bpf-linker` is not on PATH; {SETUP_HINT}"),
    }
}
