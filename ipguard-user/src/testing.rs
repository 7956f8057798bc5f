//! Fixtures the unit tests share: a fixed start time, parsers that panic on bad input,
//! and a base escalation that a test adjusts with `..escalation()`.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;

use crate::{config::Escalation, duration::Lifetime, model::Ts};

pub const S: Duration = Duration::from_secs(1);
pub const H: Duration = Duration::from_secs(3600);
/// 2023-11-14T22:13:20Z: any fixed wall-clock start.
pub const T0: Ts = Ts(1_700_000_000_000);

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Graylist 1 h, blacklist 48 h on the 3rd strike within 24 h, no growth, no grace.
pub fn escalation() -> Escalation {
    Escalation {
        graylist_duration: H,
        strikes_to_blacklist: 3,
        strike_window: 24 * H,
        blacklist_duration: Lifetime::For(48 * H),
        ban_growth: 1.0,
        max_ban: Lifetime::Forever,
        relative_block: false,
        reset_strikes_after_blacklist: true,
        state_retention: 240 * H,
        grace_violations: 0,
        promote_when_full: 4,
        promote_v4_after: 0,
        promote_v6_after: 0,
        promote_v4_prefix: 24,
        promote_v6_prefix: 64,
        promote_window: 10 * 60 * S,
    }
}
