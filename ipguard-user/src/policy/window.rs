//! From the kernel's per-CPU rate windows to one count, exactly as the rule defines it.
//!
//! The XDP program counts per CPU in fixed windows aligned to multiples of the rule's
//! window on the monotonic clock, so every CPU agrees on where a window starts. Summing
//! the CPUs' counts for the window that holds `now` gives the fixed-window count; with
//! `accumulate`, the previous window's count is carried over, weighted by the part of it
//! that still lies within one window length of `now` (a sliding window).

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use ipguard_common::{
    RateConfig, RateRuleDef, RuleWindow, MAX_RULE_PORTS, RATE_BYTES, RATE_PACKETS, RATE_SYN,
};

use crate::config::{RateKind, RateLimit};

/// Signals per rule, window and CPU before the count reaches the limit: the daemon sees
/// a source's total at least this often, so a source spread over `n` CPUs is caught at
/// most `n × step` units past the limit (`limit / STEPS_PER_LIMIT` each).
const STEPS_PER_LIMIT: u32 = 4;

/// The kernel's view of the configured rate rules. `cpus` is the number of CPUs the
/// per-CPU counts are spread over.
pub fn kernel_rules(rules: &[RateLimit], cpus: u32) -> RateConfig {
    let mut out = RateConfig::default();
    for (slot, rule) in out.rules.iter_mut().zip(rules) {
        let mut ports = [0u16; MAX_RULE_PORTS];
        for (p, r) in ports.iter_mut().zip(&rule.ports) {
            *p = *r;
        }
        *slot = RateRuleDef {
            kind: match rule.kind {
                RateKind::Syn => RATE_SYN,
                RateKind::Packets => RATE_PACKETS,
                RateKind::Bytes => RATE_BYTES,
            },
            step: step(rule.count, cpus),
            window_ns: u64::try_from(rule.window.as_nanos()).unwrap_or(u64::MAX),
            n_ports: rule.ports.len().min(MAX_RULE_PORTS) as u32,
            ports,
            limit: rule.count,
        };
    }
    out.n_rules = rules.len().min(out.rules.len()) as u32;
    out
}

/// Whether `ip`, having sent `count` units of `rule` in a window, violates that rule: over
/// its limit, and not inside one of its `exempt` networks. The kernel counts exempt
/// sources like any other (the exemption is the rule's, not the source's: another rule
/// may still ban it), so their counts are judged here.
pub fn violated(rule: &RateLimit, ip: IpAddr, count: u64) -> bool {
    count > u64::from(rule.count) && !rule.exempts(ip)
}

/// Units a CPU counts between two signals of one rule (the last one is at `limit + 1`).
pub fn step(limit: u32, cpus: u32) -> u32 {
    (limit / (STEPS_PER_LIMIT * cpus.max(1))).max(1)
}

/// Whether a source whose summed count was `count` (not over `limit`) when the daemon read
/// it could still pass the limit in this window without another signal: each of `cpus`
/// CPUs may count up to `step - 1` more units silently. Such a source is read again once
/// its window has closed ([`Rechecks`]), so that `limit + 1` is always caught, however
/// the source's packets are spread over the CPUs.
pub fn needs_recheck(count: u64, limit: u32, step: u32, cpus: u32) -> bool {
    count + u64::from(cpus) * u64::from(step.saturating_sub(1)) > u64::from(limit)
}

/// The last nanosecond of the window that holds `ktime_ns`, and its index.
pub fn window_of(ktime_ns: u64, window_ns: u64) -> (u32, u64) {
    let n = ktime_ns / window_ns.max(1);
    (
        n as u32,
        (n + 1).saturating_mul(window_ns).saturating_sub(1),
    )
}

/// How long after a window's end its counts are read again: the XDP program stamps
/// packets with the coarse clock, up to a tick (4 ms at HZ=250) behind.
pub const RECHECK_GRACE_NS: u64 = 20_000_000;

/// One source and rule to read again once a window has closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Recheck {
    /// When to read (kernel monotonic ns): the window's end plus [`RECHECK_GRACE_NS`].
    pub due_ns: u64,
    /// The window's last nanosecond: where the count is taken.
    pub at_ns: u64,
    pub addr: [u8; 16],
    pub rule: u32,
}

/// Sources near a limit, to read again when their window closes (see [`needs_recheck`]).
/// Bounded: an attacker choosing millions of sources must not grow the daemon; a recheck
/// that does not fit is counted as skipped (that source is then caught only if it signals
/// again, at most `cpus × step` units past its limit).
#[derive(Debug)]
pub struct Rechecks {
    queue: BTreeSet<Recheck>,
    keys: HashSet<([u8; 16], u32, u64)>,
    cap: usize,
}

impl Rechecks {
    pub fn new(cap: usize) -> Self {
        Self {
            queue: BTreeSet::new(),
            keys: HashSet::new(),
            cap,
        }
    }

    /// Schedules a read of `addr`'s count of `rule` for the window ending at `at_ns`;
    /// `false` if the queue is full (an already scheduled one is `true`).
    pub fn schedule(&mut self, addr: [u8; 16], rule: u32, at_ns: u64) -> bool {
        if self.keys.contains(&(addr, rule, at_ns)) {
            return true;
        }
        if self.queue.len() >= self.cap {
            return false;
        }
        self.keys.insert((addr, rule, at_ns));
        self.queue.insert(Recheck {
            due_ns: at_ns.saturating_add(1 + RECHECK_GRACE_NS),
            at_ns,
            addr,
            rule,
        });
        true
    }

    /// The rechecks due by `now_ns`, earliest first, at most `max`.
    pub fn take_due(&mut self, now_ns: u64, max: usize) -> Vec<Recheck> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.queue.first() {
                Some(r) if r.due_ns <= now_ns => {
                    let r = *r;
                    self.queue.remove(&r);
                    self.keys.remove(&(r.addr, r.rule, r.at_ns));
                    out.push(r);
                }
                _ => break,
            }
        }
        out
    }

    /// When the next recheck is due (kernel monotonic ns).
    pub fn next_due(&self) -> Option<u64> {
        self.queue.first().map(|r| r.due_ns)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The count of one rule for one source at `now_ns` (kernel monotonic time).
pub fn observed(
    per_cpu: impl IntoIterator<Item = RuleWindow>,
    window_ns: u64,
    now_ns: u64,
    accumulate: bool,
) -> u64 {
    if window_ns == 0 {
        return 0;
    }
    let idx = (now_ns / window_ns) as u32;
    let (mut cur, mut prev) = (0u64, 0u64);
    for w in per_cpu {
        if w.window_idx == idx {
            cur += u64::from(w.count);
            prev += u64::from(w.prev);
        } else if w.window_idx.wrapping_add(1) == idx {
            // This CPU has seen nothing yet in the current window.
            prev += u64::from(w.count);
        } else if w.window_idx == idx.wrapping_add(1) {
            // This CPU already moved on (we are looking at an event a little late):
            // what it counted in our window is now its `prev`.
            cur += u64::from(w.prev);
        }
    }
    if !accumulate {
        return cur;
    }
    let left = window_ns - now_ns % window_ns;
    // Round up: the carried part must not make a violation disappear.
    let carried = (u128::from(prev) * u128::from(left)).div_ceil(u128::from(window_ns));
    cur + carried as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn kernel_rules_carry_kind_window_ports_limit_and_step() {
        let rules = [
            RateLimit {
                kind: RateKind::Syn,
                count: 20,
                window: Duration::from_secs(1),
                ports: vec![],
                exempt: vec![],
            },
            RateLimit {
                kind: RateKind::Bytes,
                count: 10_000_000,
                window: Duration::from_secs(10),
                ports: vec![80, 443],
                exempt: vec![],
            },
            RateLimit {
                kind: RateKind::Packets,
                count: 3,
                window: Duration::from_millis(500),
                ports: vec![],
                exempt: vec![],
            },
        ];
        let k = kernel_rules(&rules, 2);
        assert_eq!(k.n_rules, 3);
        assert_eq!(
            (
                k.rules[0].kind,
                k.rules[0].limit,
                k.rules[0].step,
                k.rules[0].window_ns
            ),
            (RATE_SYN, 20, 2, 1_000_000_000)
        );
        assert_eq!(
            (k.rules[1].kind, k.rules[1].step, k.rules[1].n_ports),
            (RATE_BYTES, 1_250_000, 2)
        );
        assert_eq!(&k.rules[1].ports[..3], &[80, 443, 0]);
        // A limit smaller than the number of steps still signals on every unit.
        assert_eq!((k.rules[2].kind, k.rules[2].step), (RATE_PACKETS, 1));
        assert_eq!(k.rules[3], RateRuleDef::default());
    }

    const W: u64 = 1_000_000_000; // 1 s

    #[test]
    fn a_recheck_is_needed_only_where_silent_units_could_pass_the_limit() {
        // limit 100, 2 CPUs: step 12, so up to 2 × 11 units can go unsignalled.
        let s = step(100, 2);
        assert_eq!(s, 12);
        assert!(!needs_recheck(78, 100, s, 2));
        assert!(needs_recheck(79, 100, s, 2));
        assert!(needs_recheck(100, 100, s, 2));
        // Every unit signals: the kernel catches limit + 1 on its own.
        assert!(!needs_recheck(5, 5, step(5, 2), 2));
    }

    #[test]
    fn rechecks_come_due_after_their_window_in_order_and_are_bounded() {
        let mut r = Rechecks::new(2);
        let (idx, end) = window_of(10 * W + 5, W);
        assert_eq!((idx, end), (10, 11 * W - 1));
        assert!(r.schedule([1; 16], 0, end));
        assert!(
            r.schedule([1; 16], 0, end),
            "the same one again is already there"
        );
        assert!(r.schedule([2; 16], 1, 10 * W - 1));
        assert!(!r.schedule([3; 16], 0, end), "full");
        assert_eq!(r.len(), 2);
        assert!(
            r.take_due(11 * W, 10).len() == 1,
            "only the earlier window is due"
        );
        assert_eq!(r.next_due(), Some(11 * W + RECHECK_GRACE_NS));
        assert!(r.take_due(11 * W + RECHECK_GRACE_NS - 1, 10).is_empty());
        let due = r.take_due(11 * W + RECHECK_GRACE_NS, 10);
        assert_eq!(due[0].addr, [1; 16]);
        assert_eq!(due[0].at_ns, end);
        assert!(r.is_empty());
    }

    fn w(window_idx: u32, count: u32, prev: u32) -> RuleWindow {
        RuleWindow {
            window_idx,
            count,
            prev,
            next_signal: 0,
        }
    }

    #[test]
    fn fixed_window_sums_cpus_in_the_current_window_only() {
        let cpus = [w(10, 7, 100), w(10, 5, 0), w(9, 50, 0), w(3, 99, 0)];
        assert_eq!(observed(cpus, W, 10 * W + 1, false), 12);
    }

    #[test]
    fn fixed_window_boundaries() {
        let cpus = [w(10, 20, 0)];
        // Last nanosecond of window 10: all 20 count.
        assert_eq!(observed(cpus, W, 11 * W - 1, false), 20);
        // First nanosecond of window 11: a fresh window.
        assert_eq!(observed(cpus, W, 11 * W, false), 0);
    }

    #[test]
    fn sliding_window_carries_the_previous_window_by_its_remaining_share() {
        // 20 in window 9, 5 so far in window 10.
        let cpus = [w(10, 5, 20)];
        // At the start of window 10 the whole previous window is still within 1 s.
        assert_eq!(observed(cpus, W, 10 * W, true), 25);
        // A quarter in: three quarters of it remain.
        assert_eq!(observed(cpus, W, 10 * W + W / 4, true), 5 + 15);
        // Last nanosecond: a sliver remains, rounded up.
        assert_eq!(observed(cpus, W, 11 * W - 1, true), 6);
    }

    #[test]
    fn sliding_window_uses_cpus_that_saw_only_the_previous_window() {
        let cpus = [w(9, 40, 0), w(10, 2, 0)];
        assert_eq!(observed(cpus, W, 10 * W + W / 2, true), 2 + 20);
        assert_eq!(observed(cpus, W, 10 * W + W / 2, false), 2);
    }

    #[test]
    fn a_cpu_that_moved_on_still_counts_for_a_late_event() {
        let cpus = [w(11, 1, 30), w(10, 4, 0)];
        assert_eq!(observed(cpus, W, 10 * W + 5, false), 34);
    }

    #[test]
    fn window_index_wraps() {
        let cpus = [w(u32::MAX, 8, 0), w(0, 3, 8)];
        let now = (u64::from(u32::MAX) + 1) * 1000; // idx wraps to 0 with 1 µs windows
        assert_eq!(observed(cpus, 1000, now, false), 3);
        assert_eq!(observed(cpus, 1000, now, true), 3 + 8 + 8);
    }
}
