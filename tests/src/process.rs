//! Child processes with a time limit: a test or the bench never waits forever for a
//! daemon or a command.

use std::{
    process::{Child, ExitStatus},
    thread::sleep,
    time::{Duration, Instant},
};

/// Waits up to `timeout` for `child` to exit; kills it then. `None`: it had to be killed.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        sleep(Duration::from_millis(5));
    }
}

/// SIGTERM, then [`wait_timeout`].
pub fn terminate(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    wait_timeout(child, timeout)
}
