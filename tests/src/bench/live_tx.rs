//! The traffic generator both testbed sections use: `live_tx` (see `objects`) run through
//! `BPF_PROG_TEST_RUN` with live frames on the sender's veth, a new source address per
//! frame from `base + (n & mask)`.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, MapData},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions},
    Ebpf,
};

use super::{
    netns::{sysfs_read, Testbed},
    objects,
    system::{online_cpus, InNetns, PinnedThread},
};

/// Frames per `BPF_PROG_TEST_RUN` call (the kernel transmits them `BATCH` at a time).
const CHUNK: u32 = 1 << 18;
const BATCH: u32 = 64;
/// The sender's CPU when there are two or more (the receiver has the other).
pub const SENDER_CPU: usize = 0;
pub const RECEIVER_CPU: usize = 1;

/// `live_tx` loaded and configured for one testbed.
pub struct LiveTx {
    ebpf: Ebpf,
    frame: Vec<u8>,
    /// `struct xdp_md` for live frames: the sender's veth as the ingress device.
    ctx: [u8; 24],
    tx_ns: String,
    /// Pin the sending thread to [`SENDER_CPU`].
    pin: bool,
}

impl LiveTx {
    /// Sends `frame` (whose source `live_tx` rewrites) from `bed`'s sender, sources from
    /// `base` within `mask` (a power of two minus one).
    pub fn new(bed: &Testbed, base: Ipv4Addr, mask: u32, frame: Vec<u8>) -> Result<Self> {
        let tx_ifindex: u32 = sysfs_read(
            &bed.tx.name,
            &PathBuf::from(format!("/sys/class/net/{}/ifindex", bed.tx_if)),
        )?
        .parse()
        .context("sender ifindex")?;
        let mut ebpf = objects::load()?;
        let mut cfg: Array<&mut MapData, u32> = Array::try_from(
            ebpf.map_mut(objects::MAP_TX_CFG)
                .context("no live_tx config map")?,
        )?;
        cfg.set(0, u32::from(base), 0)?;
        cfg.set(1, mask, 0)?;
        objects::program(&mut ebpf, objects::LIVE_TX)?;
        let mut ctx = [0u8; 24];
        // data 0, data_end = frame length, data_meta 0, ingress_ifindex, rx queue 0, egress 0.
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&tx_ifindex.to_ne_bytes());
        Ok(LiveTx {
            ebpf,
            frame,
            ctx,
            tx_ns: bed.tx.name.clone(),
            pin: online_cpus() > RECEIVER_CPU,
        })
    }

    /// Whether the sender and the receiver get a CPU each.
    pub fn pinned(&self) -> bool {
        self.pin
    }

    /// Live frames until `length` has passed or `max` frames were sent: how many were
    /// sent, in how long.
    pub fn flood(&mut self, length: Duration, max: u64) -> Result<(u64, Duration)> {
        let prog = objects::program(&mut self.ebpf, objects::LIVE_TX)?;
        let _pin = if self.pin {
            Some(PinnedThread::to(SENDER_CPU)?)
        } else {
            None
        };
        // The kernel looks the ingress device up in the caller's namespace.
        let _ns = InNetns::enter(&self.tx_ns)?;
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < max && start.elapsed() < length {
            let n = (max - sent).min(u64::from(CHUNK)) as u32;
            prog.test_run(TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&self.ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN with live frames")?;
            sent += u64::from(n);
        }
        Ok((sent, start.elapsed()))
    }
}
