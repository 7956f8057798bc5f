//! Time as the policy sees it: wall-clock milliseconds ([`Ts`]) for everything persisted or
//! shown, and one reading of the clocks ([`Now`]) that the daemon takes and passes down, so
//! that the controller and the engine never read a clock and are tested by stepping time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Wall-clock time in milliseconds since the UNIX epoch. Bans are persisted and shown to
/// operators, so they live on the wall clock, not the monotonic one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ts(pub u64);

impl Ts {
    pub fn plus(self, d: Duration) -> Ts {
        Ts(self
            .0
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    pub fn minus(self, d: Duration) -> Ts {
        Ts(self
            .0
            .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    pub fn since(self, earlier: Ts) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-23T04:41:33.123Z`. Times after the
    /// year 9999 (which RFC 3339 cannot write) are written as its last millisecond; the
    /// config and the API bound every duration so that no expiry gets there.
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.min(MAX_RFC3339_MS));
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// The wall clock now.
    pub fn wall_now() -> Ts {
        Ts(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

/// Latest time [`Ts::rfc3339`] can write: 9999-12-31T23:59:59.999Z.
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// One reading of both clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// The wall clock: expiries, records.
    pub wall: Ts,
    /// `CLOCK_MONOTONIC` in nanoseconds: the XDP program's timestamps are on this clock
    /// (its coarse variant, at most one tick behind).
    pub mono_ns: u64,
}

impl Now {
    /// Reads both clocks.
    pub fn read() -> Now {
        Now {
            wall: Ts::wall_now(),
            mono_ns: monotonic_ns(),
        }
    }

    /// A kernel timestamp (`CLOCK_MONOTONIC`, ns) on the wall clock.
    pub fn ktime_to_wall(self, ktime_ns: u64) -> Ts {
        let ago_ms = self.mono_ns.saturating_sub(ktime_ns) / 1_000_000;
        Ts(self.wall.0.saturating_sub(ago_ms))
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; both clocks this module asks for exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The XDP program's clock (`bpf_ktime_get_coarse_ns`): `CLOCK_MONOTONIC_COARSE`, which
/// lags `CLOCK_MONOTONIC` by at most one tick. Rate windows and the source counters'
/// timestamps are on this clock.
pub fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_times_map_onto_the_wall_clock() {
        let now = Now {
            wall: Ts(10_000),
            mono_ns: 5_000_000_000,
        };
        assert_eq!(now.ktime_to_wall(4_000_000_000), Ts(9_000));
        // A timestamp "from the future" (coarse clock rounding) is now, not later.
        assert_eq!(now.ktime_to_wall(6_000_000_000), Ts(10_000));
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds_and_never_fails() {
        assert_eq!(Ts(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Ts(1_763_872_893_123).rfc3339(), "2025-11-23T04:41:33.123Z");
        assert_eq!(Ts(u64::MAX).rfc3339(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_coarse_clock_never_runs_ahead() {
        let coarse = monotonic_coarse_ns();
        assert!(coarse <= monotonic_ns());
    }
}
