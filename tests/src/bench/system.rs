//! Commands with a time limit, entering a network namespace for a while, pinning to a CPU,
//! and what the machine is.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
pub use ipguard_tests::netns::InNetns;
use ipguard_tests::process::wait_timeout;

/// Time limit of one external command (nft with 10k elements, ipset restore, xdp-filter).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `args` and returns its stdout; fails with its output if it exits non-zero or runs
/// longer than [`COMMAND_TIMEOUT`] (it is killed then).
pub fn run(args: &[&str]) -> Result<String> {
    let (ok, stdout, stderr) = run_status(args)?;
    if !ok {
        bail!(
            "`{}` failed: {}{}",
            args.join(" "),
            stdout.trim(),
            stderr.trim()
        );
    }
    Ok(stdout)
}

/// Like [`run`] inside network namespace `ns` (`ip netns exec`, which also gives the command
/// a /sys of that namespace).
pub fn run_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// Runs `args` and tells whether it succeeded, with its output; errors only if it cannot
/// start or times out.
pub fn run_status(args: &[&str]) -> Result<(bool, String, String)> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", args.join(" ")))?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().context("no stdout")?;
    let mut err = child.stderr.take().context("no stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let Some(status) = wait_timeout(&mut child, COMMAND_TIMEOUT)? else {
        bail!("`{}` timed out after {COMMAND_TIMEOUT:?}", args.join(" "));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok((status.success(), stdout, stderr))
}

/// While alive, the current thread runs only on one CPU; dropping it restores the old mask.
pub struct PinnedThread {
    old: libc::cpu_set_t,
}

impl PinnedThread {
    pub fn to(cpu: usize) -> Result<Self> {
        // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity(0) act on this thread.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of_val(&old), &mut old) != 0 {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            set_affinity(0, cpu)?;
            Ok(PinnedThread { old })
        }
    }
}

impl Drop for PinnedThread {
    fn drop(&mut self) {
        // SAFETY: restores the mask read in `to`.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of_val(&self.old), &self.old);
        }
    }
}

/// Pins task `pid` (0: the calling thread) to `cpu`.
pub fn set_affinity(pid: libc::pid_t, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data, filled by the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of_val(&set), &set) != 0 {
            bail!(
                "sched_setaffinity({pid}, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Kernel threads whose name starts with `prefix` (e.g. the NAPI thread of a device).
pub fn kthreads(prefix: &str) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        comm.trim().starts_with(prefix).then_some(pid)
    })
    .collect()
}

/// CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU model, core count and kernel, for the results.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    serde_json::json!({ "cpu": model, "cores": online_cpus(), "kernel": kernel })
}

/// The 1-, 5- and 15-minute load averages: other work on the machine skews every figure.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Time the tasks `pids` have run on a CPU and waited for one while runnable, in ns (the
/// first two fields of /proc/PID/schedstat); `None` if any of them cannot be read.
pub fn runtime_ns(pids: &[libc::pid_t]) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for pid in pids {
        let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
        total.0 += f.next()??;
        total.1 += f.next()??;
    }
    Some(total)
}

/// Gives task `pid` the real-time policy SCHED_FIFO at `priority` (1-99): it then runs as
/// soon as it is runnable, ahead of every normal task on its CPU (the kernel still keeps 5%
/// of each second for the others).
pub fn set_fifo(pid: libc::pid_t, priority: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: valid parameters for an existing task.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
        bail!(
            "sched_setscheduler({pid}, SCHED_FIFO): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
