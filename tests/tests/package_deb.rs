//! T2: the Debian package on this machine. `dpkg -i` the package `cargo xtask package`
//! built (IPGUARD_DEB), check what it installed (config, token, man pages, completions,
//! the systemd unit through `systemd-analyze`), run the installed binary with exactly the
//! unit's capabilities on a testbed, then `dpkg -r` and `dpkg --purge` and check that
//! nothing is left. Needs root; PID 1 need not be systemd.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use ipguard_tests::{
    daemon::{ping, testbed, Daemon},
    require_root,
};

const UNIT: &str = "/usr/lib/systemd/system/ipguard.service";

fn deb() -> PathBuf {
    let path = std::env::var_os("IPGUARD_DEB").expect(
        "IPGUARD_DEB is not set: run the privileged tests through `cargo xtask test`, which \
         builds the package (`cargo xtask package`) and points IPGUARD_DEB at it",
    );
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "IPGUARD_DEB={} is not a file",
        path.display()
    );
    path
}

/// Runs `cmd`; its stdout, or a panic with everything it printed.
fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout + &stderr
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "ipguard"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "installed")
}

/// Purges the package even when the test fails half-way.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "ipguard"]).output();
    }
}

/// The capabilities named by the unit's `CapabilityBoundingSet=`, e.g. `["bpf", ...]`.
fn unit_capabilities(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    line.split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("not a capability: {c}"))
                .to_ascii_lowercase()
        })
        .collect()
}

/// Capability numbers (linux/capability.h) of the ones the unit may name.
fn cap_bit(name: &str) -> u32 {
    match name {
        "net_admin" => 12,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("capability {other} not known to this test"),
    }
}

#[test]
fn the_package_installs_runs_with_the_units_capabilities_and_purges_clean() {
    require_root();
    let deb = deb();
    let _purge = Purge;
    if installed() {
        // A run that died before its purge: start from nothing.
        run(&["dpkg", "--purge", "ipguard"]);
    }
    let files: Vec<String> = run(&["dpkg-deb", "-c", deb.to_str().unwrap()])
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    assert!(files.iter().any(|f| f == "/usr/sbin/ipguard"), "{files:?}");
    for f in &files {
        assert!(!Path::new(f).exists(), "{f} exists before the install");
    }

    run(&["dpkg", "-i", deb.to_str().unwrap()]);
    assert!(installed());

    // The conffile, and the token made for this host: root only.
    let token = Path::new("/etc/ipguard/api-token");
    let meta = std::fs::metadata(token).expect("the install makes the API token");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let t = std::fs::read_to_string(token).unwrap();
    assert!(t.trim().len() >= 64 && t.trim().chars().all(|c| c.is_ascii_hexdigit()));
    let state = std::fs::metadata("/var/lib/ipguard").unwrap();
    assert!(state.is_dir());
    assert_eq!(state.permissions().mode() & 0o777, 0o700);
    let out = run(&[
        "/usr/sbin/ipguard",
        "check-config",
        "/etc/ipguard/ipguard.toml",
    ]);
    assert!(out.contains("/etc/ipguard/ipguard.toml: ok"), "{out}");
    // Safe defaults: no interface until the operator names one, the API on loopback.
    assert!(out.contains("interface <from --interface>"), "{out}");
    let conf = std::fs::read_to_string("/etc/ipguard/ipguard.toml").unwrap();
    assert!(conf.contains("listen = \"127.0.0.1:9180\""));

    // The man pages, through man itself.
    let page = run(&["man", "-l", "/usr/share/man/man8/ipguard.8.gz"]);
    for needle in ["EXIT STATUS", "ipguard-run(8)", "/etc/ipguard/ipguard.toml"] {
        assert!(page.contains(needle), "ipguard(8) lacks {needle}:\n{page}");
    }
    let page = run(&["man", "-l", "/usr/share/man/man8/ipguard-run.8.gz"]);
    assert!(page.contains("--log-format"), "{page}");
    let page = run(&["man", "-l", "/usr/share/man/man5/ipguard.toml.5.gz"]);
    for needle in ["[API]", "token_file", "[CLUSTER]", "xdp_mode = \"auto\""] {
        assert!(
            page.contains(needle),
            "ipguard.toml(5) lacks {needle}:\n{page}"
        );
    }
    // The completions: bash parses its script, the others are where their shells look.
    run(&[
        "bash",
        "-n",
        "/usr/share/bash-completion/completions/ipguard",
    ]);
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/ipguard").unwrap();
    assert!(bash.contains("check-config") && bash.contains("--log-format"));
    for f in [
        "/usr/share/zsh/vendor-completions/_ipguard",
        "/usr/share/fish/vendor_completions.d/ipguard.fish",
    ] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains("check-config"), "{f}");
    }

    // The unit: valid, and hardened ("OK" or better from systemd-analyze security).
    run(&["systemd-analyze", "verify", UNIT]);
    let out = run(&[
        "systemd-analyze",
        "security",
        "--offline=true",
        "--no-pager",
        UNIT,
    ]);
    let overall = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall level in:\n{out}"));
    eprintln!("{overall}");
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {overall}"));
    assert!(
        ["OK", "SAFE", "PERFECT"]
            .iter()
            .any(|label| overall.contains(label)),
        "{overall}"
    );
    assert!(score < 5.0, "{overall}");

    // The installed binary, with no capability but the unit's, filters on a testbed.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let caps = unit_capabilities(&unit);
    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let bed = testbed("p");
    let dir = tempfile::tempdir().unwrap();
    let program: Vec<String> = [
        "setpriv",
        "--bounding-set",
        &set,
        "--inh-caps",
        "-all",
        "--",
        "/usr/sbin/ipguard",
    ]
    .map(str::to_owned)
    .to_vec();
    assert!(ping(&bed, "203.0.113.5", "192.0.2.1"), "testbed broken");
    let daemon = Daemon::start_program(
        &bed,
        dir.path(),
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [\"203.0.113.0/24\"]\n",
        &program,
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let unit_mask = caps.iter().fold(0u64, |m, c| m | 1 << cap_bit(c));
    // What this machine can give at all (a container may lack some, e.g. CAP_SYS_RESOURCE,
    // which XDP does not need on kernels with memcg accounting of BPF memory).
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        eff,
        unit_mask & bounding,
        "the daemon runs with other capabilities than the unit's"
    );
    for needed in ["bpf", "net_admin", "perfmon"] {
        assert!(eff & 1 << cap_bit(needed) != 0, "CAP_{needed} not held");
    }
    assert!(
        !ping(&bed, "203.0.113.5", "192.0.2.1"),
        "blacklisted source passed"
    );
    assert!(
        ping(&bed, "192.0.2.2", "192.0.2.1"),
        "unlisted source dropped"
    );
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon
            .wait_log(&["config reloaded"], std::time::Duration::from_secs(10))
            .is_some(),
        "{}",
        daemon.log()
    );
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
    assert!(!bed.srv_has_xdp(), "still attached after the stop");

    // Remove keeps the conffile; purge leaves nothing behind.
    run(&["dpkg", "-r", "ipguard"]);
    assert!(!Path::new("/usr/sbin/ipguard").exists());
    assert!(Path::new("/etc/ipguard/ipguard.toml").exists());
    run(&["dpkg", "--purge", "ipguard"]);
    assert!(!installed());
    for f in &files {
        assert!(!Path::new(f).exists(), "{f} left behind");
    }
    for d in ["/etc/ipguard", "/var/lib/ipguard", "/var/log/ipguard"] {
        assert!(!Path::new(d).exists(), "{d} left behind");
    }
}
