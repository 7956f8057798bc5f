//! The benchmark runner (`cargo xtask bench` builds and runs it as root).
//!
//! `bench [--quick] [--out FILE] [--only SECTION,...]`: runs every section, prints the
//! table and writes the rows as JSON (default `target/bench/results.json`). Exits non-zero
//! if a section failed; its rows so far are still written.

#[path = "../bench/mod.rs"]
mod bench;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use bench::{
    results::{Results, Row},
    Config,
};

struct Args {
    quick: bool,
    out: PathBuf,
    only: Option<Vec<String>>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/bench/results.json"),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().context("--out needs a file")?.into(),
            "--only" => {
                let list = it.next().context("--only needs section names")?;
                a.only = Some(list.split(',').map(str::to_owned).collect());
            }
            "-h" | "--help" => {
                println!("usage: bench [--quick] [--out FILE] [--only SECTION,...]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false): some section failed.
fn real_main() -> Result<bool> {
    let args = args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark needs root (BPF_PROG_TEST_RUN, XDP, network namespaces)");
    }
    let cfg = Config::new(args.quick);
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = bench::system::machine();
    let load_start = bench::system::loadavg();
    println!(
        "ipguard bench ({}): {machine}, load average {load_start}",
        if cfg.quick { "quick" } else { "full" }
    );
    bench::netns::cleanup_stale()?;

    let mut results = Results::default();
    let mut ok = true;
    for mut section in bench::sections() {
        let name = section.name();
        if args
            .only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|s| s == name))
        {
            continue;
        }
        println!("\n== {name} ==");
        let t = Instant::now();
        // A panic in a section must not lose the other sections' rows; its guards have
        // already cleaned up while unwinding.
        let outcome = catch_unwind(AssertUnwindSafe(|| section.run(&cfg, &mut results)));
        let err = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) if live_frames_refused(&e) => {
                // The machine, not the bench: its kernel refuses to send test traffic.
                eprintln!("section {name}: n/a: {e:#}");
                let mut row = Row::unavailable(name, "section not run", "", "", "");
                row.note = format!(
                    "this kernel refuses BPF_PROG_TEST_RUN with live frames (EPERM), which the testbed's traffic generator needs: {e:#}"
                );
                results.push(row);
                None
            }
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        if let Some(err) = err {
            ok = false;
            eprintln!("section {name} failed: {err}");
            let mut row = Row::unavailable(name, "section failed", "", "", "");
            row.note = format!("error: {err}");
            results.push(row);
        }
        println!("== {name}: {:.1} s", t.elapsed().as_secs_f64());
    }

    let elapsed = started.elapsed().as_secs_f64();
    println!("{}", results.table());
    let meta = serde_json::json!({
        "generated_by": "cargo xtask bench",
        "quick": cfg.quick,
        "machine": machine,
        "started_unix": started_unix,
        "elapsed_s": elapsed,
        "loadavg_start": load_start,
        "loadavg_end": bench::system::loadavg(),
        "config": {
            "repeat": cfg.repeat,
            "samples": cfg.samples,
            "sizes": cfg.sizes.iter().map(|(l, n)| serde_json::json!({"label": l, "prefixes_per_family": n})).collect::<Vec<_>>(),
            "flood_time_s": cfg.flood_time.as_secs_f64(),
            "flood_max_packets": cfg.flood_max_packets,
            "flood_runs": cfg.flood_runs,
        },
    });
    results.write_json(&args.out, meta)?;
    println!(
        "results: {} ({} rows, {elapsed:.1} s)",
        args.out.display(),
        results.rows().len()
    );
    Ok(ok)
}

/// Whether `e` is the kernel refusing live-frame test runs (EPERM): some sandboxed kernels
/// do, and then no testbed traffic can be generated at all.
fn live_frames_refused(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("live frames")
        && e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
        })
}
