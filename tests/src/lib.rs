//! Helpers for ipguard's privileged tests: a root check that fails loudly, crafted frames,
//! and network namespaces that clean up after themselves.
//!
//! These tests are never skipped: without root (or without the daemon binary) they panic
//! with the reason.

pub mod daemon;
pub mod fleet;
pub mod fleet_bench;
pub mod frames;
pub mod netns;
pub mod policy_bench;
pub mod process;
pub mod pytools;

/// Panics unless the process runs as root: a privileged test must fail, not pass silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this privileged test needs root (euid is {euid}); run `cargo xtask test` as root"
    );
}

/// Path of the built `ipguard` binary, from `IPGUARD_BIN` (set by `cargo xtask test`).
pub fn ipguard_bin() -> std::path::PathBuf {
    let path = std::env::var_os("IPGUARD_BIN").expect(
        "IPGUARD_BIN is not set: run the privileged tests through `cargo xtask test`, \
         which builds the daemon and points IPGUARD_BIN at it",
    );
    let path = std::path::PathBuf::from(path);
    assert!(
        path.is_file(),
        "IPGUARD_BIN={} is not a file",
        path.display()
    );
    path
}
