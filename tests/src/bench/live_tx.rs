//! The traffic generator the testbed sections use: `live_tx` (see `objects`) run through
//! `BPF_PROG_TEST_RUN` with live frames on the sender's veth, a new source address per
//! frame from `base + (n & mask)`. Where the kernel refuses live frames (EPERM: some
//! sandboxed kernels do), the same frames, rewritten the same way, go out through an
//! `AF_PACKET` socket on the sender's veth with `sendmmsg`: slower, and counted by the
//! veth like the stack's own packets, which the sections say in their notes.

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
    /// Set when the kernel refused live frames at the first try.
    packet: Option<PacketTx>,
    /// Why live frames were refused (the errno of the probe), for the notes.
    refusal: String,
    tx_ifindex: u32,
    base: Ipv4Addr,
    mask: u32,
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
        let mut tx = LiveTx {
            ebpf,
            frame,
            ctx,
            tx_ns: bed.tx.name.clone(),
            pin: online_cpus() > RECEIVER_CPU,
            packet: None,
            refusal: String::new(),
            tx_ifindex,
            base,
            mask,
        };
        // One live frame tells whether this kernel sends them. It is a real frame on the
        // testbed's veth, sent before any section takes its first counter snapshot, so it
        // counts in nothing measured. Only the test run's own refusal selects the
        // fallback; entering the namespace or loading must work either way.
        let probe = {
            let prog = objects::program(&mut tx.ebpf, objects::LIVE_TX)?;
            let _ns = InNetns::enter(&tx.tx_ns)?;
            prog.test_run(TestRunOptions {
                data_in: Some(&tx.frame),
                ctx_in: Some(&tx.ctx),
                repeat: 1,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            })
        };
        if let Err(e) = probe {
            let e = anyhow::Error::from(e);
            let Some(errno) = refusal(&e) else {
                return Err(e.context("BPF_PROG_TEST_RUN with live frames"));
            };
            tx.refusal = format!(
                "this kernel refuses live frames: {}",
                std::io::Error::from_raw_os_error(errno)
            );
            tx.packet = Some(PacketTx::open(
                &tx.tx_ns,
                tx.tx_ifindex,
                &tx.frame,
                tx.base,
                tx.mask,
            )?);
        }
        Ok(tx)
    }

    /// How the frames are sent, for the sections' notes.
    pub fn kind(&self) -> String {
        if self.packet.is_some() {
            format!("AF_PACKET sendmmsg ({})", self.refusal)
        } else {
            "XDP live frames".to_owned()
        }
    }

    /// Whether frames go out as live frames, which the veth's ethtool counters
    /// (`tx_queue_0_xdp_xmit`) tell apart from the stack's packets.
    pub fn is_live(&self) -> bool {
        self.packet.is_none()
    }

    /// `n` live frames in one `BPF_PROG_TEST_RUN` (the caller is in the sender's
    /// namespace, or `n` is a probe of one).
    fn live(&mut self, n: u32) -> Result<()> {
        let prog = objects::program(&mut self.ebpf, objects::LIVE_TX)?;
        let _ns = InNetns::enter(&self.tx_ns)?;
        prog.test_run(TestRunOptions {
            data_in: Some(&self.frame),
            ctx_in: Some(&self.ctx),
            repeat: n,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN with live frames")?;
        Ok(())
    }

    /// Whether the sender and the receiver get a CPU each.
    pub fn pinned(&self) -> bool {
        self.pin
    }

    /// Frames until `length` has passed or `max` frames were sent: how many were sent, in
    /// how long.
    pub fn flood(&mut self, length: Duration, max: u64) -> Result<(u64, Duration)> {
        let _pin = if self.pin {
            Some(PinnedThread::to(SENDER_CPU)?)
        } else {
            None
        };
        let start = Instant::now();
        let mut sent = 0u64;
        if let Some(p) = &mut self.packet {
            while sent < max && start.elapsed() < length {
                let n = (max - sent).min(u64::from(BATCH)) as usize;
                sent += p.send(n)? as u64;
            }
            return Ok((sent, start.elapsed()));
        }
        while sent < max && start.elapsed() < length {
            let n = (max - sent).min(u64::from(CHUNK)) as u32;
            self.live(n)?;
            sent += u64::from(n);
        }
        Ok((sent, start.elapsed()))
    }
}

/// The errno when `e` is the kernel refusing live frames: EPERM (sandboxed kernels),
/// EINVAL or EOPNOTSUPP/ENOTSUPP (524) (kernels or devices without them), ENOSYS.
pub fn refusal(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .filter(|&n| {
                matches!(
                    n,
                    libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP | 524 | libc::ENOSYS
                )
            })
    })
}

/// The fallback sender: an `AF_PACKET` socket bound to the sender's veth, `BATCH` copies
/// of the frame rewritten per send as `live_tx` rewrites them.
struct PacketTx {
    fd: std::os::fd::OwnedFd,
    frames: Vec<Vec<u8>>,
    base: u32,
    mask: u32,
    n: u64,
}

impl PacketTx {
    fn open(ns: &str, ifindex: u32, frame: &[u8], base: Ipv4Addr, mask: u32) -> Result<Self> {
        use std::os::fd::FromRawFd as _;
        // Created in the sender's namespace; bound to its veth, it stays there.
        let _ns = InNetns::enter(ns)?;
        // Protocol 0: the socket sends and receives nothing.
        // SAFETY: plain syscalls on a socket this function owns; the addresses and lengths
        // passed are those of live locals of the right types.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("an AF_PACKET socket");
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: see above.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("binding to the sender's veth");
        }
        // Straight to the driver, as live frames go: no qdisc in between.
        let one: libc::c_int = 1;
        // SAFETY: see above.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Ok(PacketTx {
            fd,
            frames: vec![frame.to_vec(); BATCH as usize],
            base: u32::from(base),
            mask,
            n: 0,
        })
    }

    /// Sends `n` (at most `BATCH`) frames with the next sources: how many the kernel took.
    fn send(&mut self, n: usize) -> Result<usize> {
        let n = n.min(self.frames.len());
        for f in &mut self.frames[..n] {
            rewrite(f, self.base.wrapping_add(self.n as u32 & self.mask));
            self.n += 1;
        }
        let mut iov: Vec<libc::iovec> = self.frames[..n]
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: zero is a valid mmsghdr.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` points at `n` headers whose buffers live until the call returns.
        let sent = unsafe {
            libc::sendmmsg(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                msgs.as_mut_ptr(),
                n as u32,
                0,
            )
        };
        if sent < 0 {
            let e = std::io::Error::last_os_error();
            // A full device queue: nothing sent this time; the next send reuses the sources.
            if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                self.n -= n as u64;
                return Ok(0);
            }
            return Err(e).context("sendmmsg on the sender's veth");
        }
        // A partial send: the sources not sent go out next time.
        self.n -= (n - sent as usize) as u64;
        Ok(sent as usize)
    }
}

/// The source of an Ethernet/IPv4 frame set to `src`, its IPv4 header checksum recomputed
/// and its TCP or UDP checksum updated (RFC 1624), as `live_tx` does in the kernel.
fn rewrite(frame: &mut [u8], src: u32) {
    const IP: usize = 14;
    // IPv4 without options only: the offsets below assume a 20-byte header.
    if frame.len() < IP + 20 || frame[IP] != 0x45 {
        return;
    }
    let old = u32::from_be_bytes([
        frame[IP + 12],
        frame[IP + 13],
        frame[IP + 14],
        frame[IP + 15],
    ]);
    frame[IP + 12..IP + 16].copy_from_slice(&src.to_be_bytes());
    let at = match frame[IP + 9] {
        6 => Some(IP + 20 + 16),
        17 => Some(IP + 20 + 6),
        _ => None,
    };
    if let Some(at) = at.filter(|&a| a + 2 <= frame.len()) {
        let hc = u16::from_be_bytes([frame[at], frame[at + 1]]);
        if !(frame[IP + 9] == 17 && hc == 0) {
            let mut sum = u32::from(!hc)
                + u32::from(!((old >> 16) as u16))
                + u32::from(!(old as u16))
                + (src >> 16)
                + (src & 0xffff);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            let mut csum = !(sum as u16);
            if frame[IP + 9] == 17 && csum == 0 {
                csum = 0xffff;
            }
            frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        }
    }
    frame[IP + 10] = 0;
    frame[IP + 11] = 0;
    let mut sum = 0u32;
    for i in 0..10 {
        sum += u32::from(u16::from_be_bytes([
            frame[IP + 2 * i],
            frame[IP + 2 * i + 1],
        ]));
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    frame[IP + 10..IP + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one's-complement sum of `data` folded to 16 bits (0xffff for a valid checksum).
    fn fold(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The TCP or UDP checksum verified over the pseudo-header.
    fn l4_ok(f: &[u8]) -> bool {
        let ip = &f[14..34];
        let l4 = &f[34..14 + u16::from_be_bytes([ip[2], ip[3]]) as usize];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, ip[9]]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        fold(&pseudo) == 0xffff
    }

    #[test]
    fn a_rewritten_frame_keeps_valid_checksums() {
        use std::net::Ipv4Addr;
        let udp = crate::bench::per_packet::v4(&[], Ipv4Addr::new(198, 18, 0, 1));
        let syn = crate::bench::flood::syn_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(10, 0, 0, 1),
        );
        for mut f in [udp, syn] {
            for src in [0x0a00_0001u32, 0xc612_3456, 0xffff_fffe] {
                rewrite(&mut f, src);
                assert_eq!(&f[26..30], &src.to_be_bytes());
                assert_eq!(fold(&f[14..34]), 0xffff, "IPv4 header checksum");
                // A UDP checksum of 0 means none, and stays none.
                let none = f[23] == 17 && f[40..42] == [0, 0];
                assert!(none || l4_ok(&f), "transport checksum after {src:#x}");
            }
        }
    }
}
