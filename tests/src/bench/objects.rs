//! The bench's own XDP programs (`ipguard-ebpf/src/bench.rs`, bin target `ipguard-bench`).
//!
//! ipguard-user's build.rs builds every bin target of ipguard-ebpf into its OUT_DIR but only
//! embeds `ipguard`. The bench finds `ipguard-bench` beside the `ipguard` object that is
//! byte for byte the one embedded in this binary (`EBPF_OBJECT`): the same build made both.
//! `IPGUARD_BENCH_OBJ` names the file instead.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::{
    maps::{MapData, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use ipguard::dataplane::EBPF_OBJECT;

pub const TRIVIAL_PASS: &str = "trivial_pass";
pub const TRIVIAL_DROP: &str = "trivial_drop";
pub const TOUCH_DROP: &str = "touch_drop";
pub const LIVE_TX: &str = "live_tx";
pub const MAP_DROPPED: &str = "BENCH_DROPPED";
pub const MAP_TX_CFG: &str = "BENCH_TX_CFG";

const OBJECT_NAME: &str = "ipguard-bench";
const ENV_OVERRIDE: &str = "IPGUARD_BENCH_OBJ";

/// Path of the `ipguard-bench` object of the build this binary comes from.
pub fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_OVERRIDE) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/bench (or target/<profile>/deps/bench-<hash> under cargo test).
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let Ok(entries) = std::fs::read_dir(dir.join("build")) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("ipguard-user-") {
                continue;
            }
            let out = e.path().join("out");
            let obj = out.join(OBJECT_NAME);
            // Several build directories can hold the same `ipguard` object (builds that
            // differ elsewhere): the newest bench object among them is this build's.
            if same_file_contents(&out.join("ipguard"), EBPF_OBJECT) {
                if let Ok(modified) = std::fs::metadata(&obj).and_then(|m| m.modified()) {
                    candidates.push((modified, obj));
                }
            }
        }
    }
    candidates
        .into_iter()
        .max()
        .map(|(_, obj)| obj)
        .with_context(|| {
            format!(
                "cannot find the {OBJECT_NAME} XDP object of this build near {} (is the \
                 [[bin]] `{OBJECT_NAME}` in ipguard-ebpf/Cargo.toml?); build with `cargo \
                 build --release -p ipguard-tests --bin bench` or set {ENV_OVERRIDE}",
                exe.display()
            )
        })
}

fn same_file_contents(path: &Path, bytes: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == bytes.len() as u64)
        && std::fs::read(path).is_ok_and(|b| b == bytes)
}

/// The bench object with its maps created; no program loaded yet (see [`program`]).
pub fn load() -> Result<Ebpf> {
    let path = locate()?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    // ELF parsing wants the data aligned like include_bytes_aligned! gives it.
    let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `aligned` has at least bytes.len() bytes; u64 has no invalid bit patterns.
    let buf =
        unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), bytes.len()) };
    buf.copy_from_slice(&bytes);
    Ebpf::load(buf).with_context(|| format!("loading {}", path.display()))
}

/// Program `name` of the object, loaded into the kernel (verified) on first use.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("the bench object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))?;
    if prog.fd().is_err() {
        prog.load()
            .with_context(|| format!("the kernel rejected {name}"))?;
    }
    Ok(prog)
}

/// Packets `trivial_drop` or `touch_drop` dropped, summed over CPUs.
pub fn dropped(ebpf: &Ebpf) -> Result<u64> {
    let map = ebpf
        .map(MAP_DROPPED)
        .with_context(|| format!("no map {MAP_DROPPED}"))?;
    let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
    Ok(arr.get(&0, 0)?.iter().sum())
}
