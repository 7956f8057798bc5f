//! The bench's own network namespaces: fixed names with the prefix [`PREFIX`], so that a
//! run can remove what a killed run left behind ([`cleanup_stale`]), and removed on drop
//! (which also removes their interfaces, XDP programs, nft tables, ipsets and iptables
//! rules).

use std::path::Path;

use anyhow::Result;

use super::system::{run, run_status};

/// Every namespace the bench creates starts with this (the privileged tests use `ipgt`).
pub const PREFIX: &str = "ipgb-";
/// Where the bench mounts private BPF filesystems (see `xdp_filter`).
pub const RUN_DIR: &str = "/run/ipguard-bench";

pub use ipguard_tests::netns::Netns;

/// `PREFIX + tag` (deleting a stale one of that name first), loopback up.
fn create(tag: &str) -> Result<Netns> {
    Netns::create(&format!("{PREFIX}{tag}"))
}

/// Removes what an earlier, killed run left: namespaces named `PREFIX*` and private BPF
/// filesystems under [`RUN_DIR`].
pub fn cleanup_stale() -> Result<()> {
    let list = run(&["ip", "netns", "list"])?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(PREFIX) {
            println!("  removing stale namespace {name}");
            run(&["ip", "netns", "del", name])?;
        }
    }
    if let Ok(dir) = std::fs::read_dir(RUN_DIR) {
        for e in dir.flatten() {
            let path = e.path();
            let _ = run_status(&["umount", &path.to_string_lossy()]);
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}

/// Two namespaces joined by a veth pair: the sender `tx` and the receiver `rx`, with fixed
/// MAC and IPv4 addresses and static neighbour entries (a filter that drops everything
/// drops ARP too).
pub struct Testbed {
    // Dropped in this order: the receiver's namespace (and with it the pair) first.
    pub rx: Netns,
    pub tx: Netns,
    pub rx_if: String,
    pub tx_if: String,
    pub rx_mac: [u8; 6],
    pub tx_mac: [u8; 6],
    pub rx_ip: [u8; 4],
    pub tx_ip: [u8; 4],
}

impl Testbed {
    /// `tag` (a few letters) names the namespaces `PREFIX tag-rx/-tx` and the interfaces
    /// `ipgb<tag>r/t`. Interface names stay short: a NAPI thread is named
    /// `napi/<ifname>-<id>`, cut at 15 characters.
    pub fn new(tag: &str) -> Result<Self> {
        let rx = create(&format!("{tag}-rx"))?;
        let tx = create(&format!("{tag}-tx"))?;
        let bed = Testbed {
            rx_if: format!("ipgb{tag}r"),
            tx_if: format!("ipgb{tag}t"),
            rx,
            tx,
            rx_mac: [0x02, 0x00, 0x00, 0x00, 0xb0, 0x02],
            tx_mac: [0x02, 0x00, 0x00, 0x00, 0xb0, 0x01],
            rx_ip: [198, 18, 0, 2],
            tx_ip: [198, 18, 0, 1],
        };
        run(&[
            "ip",
            "-n",
            &bed.tx.name,
            "link",
            "add",
            &bed.tx_if,
            "address",
            &mac(bed.tx_mac),
            "type",
            "veth",
            "peer",
            "name",
            &bed.rx_if,
            "address",
            &mac(bed.rx_mac),
            "netns",
            &bed.rx.name,
        ])?;
        for (ns, ifname, ip, peer_ip, peer_mac) in [
            (&bed.rx.name, &bed.rx_if, bed.rx_ip, bed.tx_ip, bed.tx_mac),
            (&bed.tx.name, &bed.tx_if, bed.tx_ip, bed.rx_ip, bed.rx_mac),
        ] {
            let cidr = format!("{}/24", ipv4(ip));
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", ifname])?;
            run(&["ip", "-n", ns, "link", "set", ifname, "up"])?;
            run(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                &ipv4(peer_ip),
                "lladdr",
                &mac(peer_mac),
                "dev",
                ifname,
                "nud",
                "permanent",
            ])?;
        }
        Ok(bed)
    }
}

pub fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

pub fn ipv4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

/// Writes `value` to a sysfs file of namespace `ns` (`/sys` there shows its devices).
pub fn sysfs_write(ns: &str, path: &Path, value: &str) -> Result<()> {
    let script = format!("echo {value} > {}", path.display());
    super::system::run_in(ns, &["sh", "-c", &script]).map(drop)
}

/// Reads a sysfs file of namespace `ns`.
pub fn sysfs_read(ns: &str, path: &Path) -> Result<String> {
    super::system::run_in(ns, &["cat", &path.to_string_lossy()]).map(|s| s.trim().to_owned())
}
