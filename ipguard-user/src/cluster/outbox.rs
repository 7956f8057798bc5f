//! Changes not yet published, kept on disk (JSON lines, fdatasync) so that a restart while
//! Redis is away does not lose them; emptied once they are in Redis.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::{Path, PathBuf},
};

use super::wire::SharedOp;
use crate::controller::fleet::MAX_OUTGOING;

pub struct Outbox {
    path: PathBuf,
    pub ops: VecDeque<SharedOp>,
    /// The file holds `ops` (or more): truncate once they are sent.
    on_disk: bool,
    /// Additions dropped because the queue was full.
    pub dropped: u64,
}

impl Outbox {
    /// Loads what a previous run left (lines that do not parse are skipped and logged).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("cluster-outbox.jsonl");
        let mut ops = VecDeque::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (i, line) in text.lines().enumerate() {
                match serde_json::from_str::<SharedOp>(line) {
                    Ok(op) => ops.push_back(op),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), line = i + 1, error = %e, "skipping an unreadable queued change")
                    }
                }
            }
            if !ops.is_empty() {
                tracing::info!(
                    changes = ops.len(),
                    "changes queued for the fleet by a previous run"
                );
            }
        }
        let on_disk = !ops.is_empty();
        Self {
            path,
            ops,
            on_disk,
            dropped: 0,
        }
    }

    /// Queues `new`; with `durable`, appends them to the file first (fdatasync).
    pub fn push(&mut self, new: Vec<SharedOp>, durable: bool) {
        if new.is_empty() {
            return;
        }
        if durable {
            if let Err(e) = self.append(&new) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot persist the changes queued for the fleet");
            }
        }
        self.ops.extend(new);
        while self.ops.len() > MAX_OUTGOING {
            match self.ops.iter().position(|o| matches!(o, SharedOp::Put(_))) {
                Some(i) => {
                    self.ops.remove(i);
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    fn append(&mut self, ops: &[SharedOp]) -> std::io::Result<()> {
        let mut text = String::new();
        for op in ops {
            text.push_str(&serde_json::to_string(op).unwrap_or_default());
            text.push('\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        self.on_disk = true;
        Ok(())
    }

    /// Everything queued was published.
    pub fn sent(&mut self) {
        self.ops.clear();
        if self.on_disk {
            match std::fs::remove_file(&self.path) {
                Ok(()) => self.on_disk = false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.on_disk = false,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot empty the fleet's queue file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ListKind, Ts};

    #[test]
    fn queued_changes_survive_a_restart_until_sent() {
        let dir = tempfile::tempdir().unwrap();
        let op = SharedOp::Remove {
            list: ListKind::Blacklist,
            net: "203.0.113.5/32".parse().unwrap(),
            node: "a".into(),
            at: Ts(5),
        };
        let mut o = Outbox::open(dir.path());
        assert!(o.ops.is_empty());
        o.push(vec![op.clone()], true);
        drop(o);
        std::fs::write(
            dir.path().join("cluster-outbox.jsonl"),
            format!(
                "{}\nnot json\n",
                std::fs::read_to_string(dir.path().join("cluster-outbox.jsonl"))
                    .unwrap()
                    .trim_end()
            ),
        )
        .unwrap();
        let mut o = Outbox::open(dir.path());
        assert_eq!(o.ops.iter().cloned().collect::<Vec<_>>(), vec![op]);
        o.sent();
        assert!(Outbox::open(dir.path()).ops.is_empty());
    }
}
