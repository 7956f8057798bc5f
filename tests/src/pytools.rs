//! The PyPI tools the tests use, from the virtual environment `cargo xtask setup` makes in
//! the target directory (`target/pytools`): Playwright for the browser test, mmdb-writer
//! for test MaxMind databases. Missing is a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's Python.
pub fn venv_python() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .map(|d| d.join("pytools/bin/python"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no target/pytools/bin/python above {}: run `cargo xtask setup` (it makes the \
                 venv with the Python tools these tests use)",
                exe.display()
            )
        })
}

/// Runs `tests/geo/make_mmdb.py <args[0]> <dir>/<file> <args[1..]>`; the database's path.
pub fn make_mmdb(dir: &Path, file: &str, args: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("geo/make_mmdb.py");
    let out = dir.join(file);
    let run = Command::new(venv_python())
        .arg(&script)
        .arg(args[0])
        .arg(&out)
        .args(&args[1..])
        .output()
        .expect("run make_mmdb.py");
    assert!(
        run.status.success(),
        "make_mmdb.py {args:?} failed ({}):\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    out
}
