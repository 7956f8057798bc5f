//! `cargo xtask package`: the Debian package, through cargo-deb. The release binary writes
//! its own man pages and shell completions first (they come from its clap definitions and
//! the documented example config), so the package never ships stale ones.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::{build, cargo, display, ipguard_bin, run_checked, setup, target_dir};

/// Builds `target/debian/ipguard_<version>_<arch>.deb`; returns its path.
pub fn package() -> Result<PathBuf> {
    setup::setup()?;
    build(true)?;
    let bin = ipguard_bin(true)?;
    let assets = target_dir()?.join("release/deb-assets");
    if assets.exists() {
        std::fs::remove_dir_all(&assets)
            .with_context(|| format!("removing {}", assets.display()))?;
    }
    for dir in ["man8", "man5", "pages"] {
        std::fs::create_dir_all(assets.join(dir))?;
    }
    run_checked(
        std::process::Command::new(&bin)
            .arg("manpages")
            .arg(assets.join("pages")),
    )?;
    for page in std::fs::read_dir(assets.join("pages"))? {
        let page = page?.path();
        let name = page.file_name().context("a page without a name")?;
        let section = if page.extension().is_some_and(|e| e == "5") {
            "man5"
        } else {
            "man8"
        };
        std::fs::rename(&page, assets.join(section).join(name))?;
    }
    // Debian policy: man pages gzipped (cargo-deb compresses only assets it did not
    // build, and these come from target/).
    for section in ["man8", "man5"] {
        let mut gzip = std::process::Command::new("gzip");
        gzip.args(["-9", "-n"]);
        for page in std::fs::read_dir(assets.join(section))? {
            gzip.arg(page?.path());
        }
        run_checked(&mut gzip)?;
    }
    for (shell, file) in [
        ("bash", "ipguard.bash"),
        ("zsh", "_ipguard"),
        ("fish", "ipguard.fish"),
    ] {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["completions", shell]);
        println!("$ {} > {file}", display(&cmd));
        let out = cmd.output().context("running ipguard completions")?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("`{}` failed ({})", display(&cmd), out.status);
        }
        std::fs::write(assets.join(file), out.stdout)?;
    }
    let out_dir = target_dir()?.join("debian");
    let mut cmd = cargo();
    cmd.args(["deb", "--package", "ipguard-user", "--no-build", "--output"])
        .arg(&out_dir);
    println!("$ {}", display(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // cargo-deb prints the package's path last.
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo-deb printed no .deb path")?;
    let size = std::fs::metadata(&deb)?.len();
    println!(
        "package: {} ({:.1} MiB)",
        deb.display(),
        size as f64 / 1048576.0
    );
    Ok(deb)
}
