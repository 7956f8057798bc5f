//! xdp-filter (Debian's xdp-tools) as a baseline: loaded on an interface of a bench
//! namespace, filled with exact addresses, and read back by program id.
//!
//! xdp-filter pins its maps under `/sys/fs/bpf/xdp-filter`: each of its commands runs in
//! the namespace (`ip netns exec`) with a private BPF filesystem of the bench bind-mounted
//! on `/sys/fs/bpf`, so nothing lands in the host's bpffs and unmounting it removes every
//! pin. Only the first address of each family goes through its CLI (a process per address
//! would take minutes for 10k); the rest are written into its maps with the value the CLI
//! wrote.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{bail, Context as _, Result};
use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};

use super::{
    netns::RUN_DIR,
    system::{run, run_status},
};

/// xdp-filter's maps hold at most this many addresses per family.
pub const MAX_ADDRESSES: usize = 10_000;

pub struct XdpFilter {
    ns: String,
    iface: String,
    bpffs: PathBuf,
    loaded: bool,
}

impl XdpFilter {
    /// Loads xdp-filter on `iface` of namespace `ns`, in `mode` (`native` or `skb`), with
    /// `features` (e.g. `ipv4,ipv6`; `None`: its default, every feature).
    pub fn load(ns: &str, iface: &str, mode: &str, features: Option<&str>) -> Result<Self> {
        if run_status(&["xdp-filter", "help"]).is_err() {
            bail!("xdp-filter is not installed (apt package xdp-tools)");
        }
        let bpffs = PathBuf::from(RUN_DIR).join(format!("bpffs-{iface}"));
        std::fs::create_dir_all(&bpffs).with_context(|| format!("mkdir {}", bpffs.display()))?;
        let _ = run_status(&["umount", &bpffs.to_string_lossy()]);
        run(&["mount", "-t", "bpf", "bpf", &bpffs.to_string_lossy()])?;
        let mut me = XdpFilter {
            ns: ns.to_owned(),
            iface: iface.to_owned(),
            bpffs,
            loaded: false,
        };
        let mut args = vec!["load", iface, "--mode", mode];
        if let Some(f) = features {
            args.extend(["--features", f]);
        }
        me.cli(&args)?;
        me.loaded = true;
        Ok(me)
    }

    /// Runs `xdp-filter args...` in the namespace, on the private bpffs.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let script = format!(
            "mount --bind {} /sys/fs/bpf && exec xdp-filter \"$@\"",
            self.bpffs.display()
        );
        let mut all = vec!["ip", "netns", "exec", &self.ns, "sh", "-c", &script, "sh"];
        all.extend_from_slice(args);
        run(&all)
    }

    /// The id of the program attached to the interface (xdp-filter picks one of its
    /// variants by features; libxdp's dispatcher is not used on this kernel).
    pub fn prog_id(&self) -> Result<u32> {
        let out = run(&[
            "ip",
            "-n",
            &self.ns,
            "-d",
            "link",
            "show",
            "dev",
            &self.iface,
        ])?;
        let id = out
            .split("prog/xdp id ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .with_context(|| format!("no XDP program on {}: {out}", self.iface))?;
        id.parse().with_context(|| format!("program id {id:?}"))
    }

    /// Drops packets from these sources (at most [`MAX_ADDRESSES`] of each family).
    pub fn deny_sources(&self, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Result<()> {
        if v4.len() > MAX_ADDRESSES || v6.len() > MAX_ADDRESSES {
            bail!("xdp-filter holds at most {MAX_ADDRESSES} addresses per family");
        }
        let maps = self.map_ids()?;
        if let Some((first, rest)) = v4.split_first() {
            self.cli(&["ip", &first.to_string(), "--mode", "src"])?;
            let id = find(&maps, "filter_ipv4")?;
            fill(id, first.octets(), rest.iter().map(|a| a.octets()))?;
        }
        if let Some((first, rest)) = v6.split_first() {
            self.cli(&["ip", &first.to_string(), "--mode", "src"])?;
            let id = find(&maps, "filter_ipv6")?;
            fill(id, first.octets(), rest.iter().map(|a| a.octets()))?;
        }
        Ok(())
    }

    /// Packets the program returned `action` (e.g. `XDP_DROP`) for, from `xdp-filter status`.
    pub fn action_packets(&self, action: &str) -> Result<u64> {
        let out = self.cli(&["status"])?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(action))
            .with_context(|| format!("no {action} line in xdp-filter status: {out}"))?;
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("cannot read {action} packets from {line:?}"))
    }

    /// (map name, id) of the attached program's maps.
    fn map_ids(&self) -> Result<Vec<(String, u32)>> {
        let prog = self.prog_id()?;
        let info: serde_json::Value = serde_json::from_str(&run(&[
            "bpftool",
            "-j",
            "prog",
            "show",
            "id",
            &prog.to_string(),
        ])?)?;
        let ids = info["map_ids"]
            .as_array()
            .context("bpftool prog show: no map_ids")?;
        let mut out = Vec::new();
        for id in ids.iter().filter_map(|v| v.as_u64()) {
            let map: serde_json::Value = serde_json::from_str(&run(&[
                "bpftool",
                "-j",
                "map",
                "show",
                "id",
                &id.to_string(),
            ])?)?;
            if let Some(name) = map["name"].as_str() {
                out.push((name.to_owned(), id as u32));
            }
        }
        Ok(out)
    }
}

fn find(maps: &[(String, u32)], name: &str) -> Result<u32> {
    maps.iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| *id)
        .with_context(|| format!("xdp-filter has no map {name} (loaded without that feature?)"))
}

/// Writes `keys` into per-CPU hash map `id` with the value the CLI wrote for `template`.
fn fill<const N: usize>(
    id: u32,
    template: [u8; N],
    keys: impl Iterator<Item = [u8; N]>,
) -> Result<()> {
    let data = MapData::from_id(id).with_context(|| format!("opening map id {id}"))?;
    let mut map: PerCpuHashMap<MapData, [u8; N], u64> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data))?;
    let value = map
        .get(&template, 0)
        .context("reading the entry xdp-filter wrote")?;
    for key in keys {
        let v = PerCpuValues::try_from(value.to_vec())?;
        map.insert(key, v, 0)
            .with_context(|| format!("writing {key:?} into xdp-filter's map {id}"))?;
    }
    Ok(())
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if self.loaded {
            if let Err(e) = self.cli(&["unload", &self.iface, "--all"]) {
                eprintln!("warning: xdp-filter unload: {e:#}");
            }
        }
        // Unmounting the private bpffs removes whatever xdp-filter pinned there.
        let _ = run_status(&["umount", &self.bpffs.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}
