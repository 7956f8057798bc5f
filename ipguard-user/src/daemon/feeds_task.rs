//! The feed task: fetches each `[[feed]]` when it is due (off the event loop: HTTP and
//! parsing are blocking work), lets [`Feeds`] judge the result, and hands the entries in
//! force to the event loop, which applies them like the config's own entries (one diff,
//! additions before removals). Operators accept held updates through it.

use std::{collections::HashSet, time::Duration};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};

use super::{locked, Shared};
use crate::{
    config::Config,
    feeds::{fetch, FeedSets, Feeds, Limits, Outcome},
    model::{ListKind, Now},
};

/// New entries in force for the event loop to apply, with the operator waiting for it,
/// if one is.
pub type FeedChange = (FeedSets, Option<oneshot::Sender<Result<(), String>>>);

/// An operator's command for the feed task.
pub enum FeedCommand {
    /// Apply the update held for this feed; answered with why not, if not.
    Accept(String, oneshot::Sender<Result<(), String>>),
}

/// `config` (the file's lists, with geo) with every feed's entries added to its list (its
/// monitored layer for a feed in monitor mode), duplicates left out.
pub fn merge_feeds(config: &Config, sets: &FeedSets) -> Config {
    let mut out = config.clone();
    for (name, list, nets) in &sets.feeds {
        let monitor = sets.monitored.contains(name);
        let target = match (list, monitor) {
            (ListKind::Whitelist, _) => &mut out.lists.whitelist,
            (ListKind::Graylist, false) => &mut out.lists.graylist,
            (ListKind::Graylist, true) => &mut out.lists.monitor_graylist,
            (ListKind::Blacklist, false) => &mut out.lists.blacklist,
            (ListKind::Blacklist, true) => &mut out.lists.monitor_blacklist,
        };
        let have: HashSet<IpNet> = target.iter().copied().collect();
        target.extend(nets.iter().filter(|n| !have.contains(n)));
    }
    out
}

/// Runs until the daemon stops: fetches due feeds, publishes status to the controller,
/// and sends the entries in force to `changed` whenever they change.
pub async fn run(
    mut feeds: Feeds,
    ctl: Shared,
    changed: mpsc::Sender<FeedChange>,
    mut commands: mpsc::Receiver<FeedCommand>,
) {
    locked(&ctl).set_feed_status(feeds.status());
    loop {
        let now = Now::read().wall;
        let wait = feeds
            .next_due()
            .map_or(Duration::from_secs(3600), |due| due.since(now));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            cmd = commands.recv() => match cmd {
                None => return,
                Some(FeedCommand::Accept(name, reply)) => {
                    let Some((f, result)) =
                        blocking(feeds, move |f| f.accept(&name, Now::read().wall)).await
                    else {
                        return;
                    };
                    feeds = f;
                    locked(&ctl).set_feed_status(feeds.status());
                    match result {
                        // Answered once the tables hold the update.
                        Ok(()) => {
                            if changed.send((feeds.sets(), Some(reply))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                    continue;
                }
            },
        }
        for (i, source, cond) in feeds.due(Now::read().wall) {
            let fetched =
                tokio::task::spawn_blocking(move || fetch(&source, &cond, &Limits::default()))
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::feeds::FeedError::Http {
                            url: "(feed task)".into(),
                            reason: format!("the fetch panicked: {e}"),
                        })
                    });
            // The whitelist and the protected addresses as they are now.
            let (protected, min_prefix, whitelist_feed) = {
                let c = locked(&ctl);
                (
                    c.feed_protected(),
                    c.min_prefix(),
                    feeds.list_of(i) == Some(ListKind::Whitelist),
                )
            };
            let Some((f, outcome)) = blocking(feeds, move |f| {
                // A whitelist feed cannot lock anyone out: only its breadth is checked.
                let protected = if whitelist_feed {
                    Vec::new()
                } else {
                    protected
                };
                f.on_fetched(i, fetched, &protected, min_prefix, Now::read().wall)
            })
            .await
            else {
                return;
            };
            feeds = f;
            locked(&ctl).set_feed_status(feeds.status());
            if outcome == Outcome::Applied && changed.send((feeds.sets(), None)).await.is_err() {
                return;
            }
        }
    }
}

/// Runs `f` on `feeds` on a blocking thread (parsing 200k lines, writing the copy) and
/// gives `feeds` back; `None` if it panicked (the entries in force stay in the tables).
async fn blocking<T: Send + 'static>(
    mut feeds: Feeds,
    f: impl FnOnce(&mut Feeds) -> T + Send + 'static,
) -> Option<(Feeds, T)> {
    match tokio::task::spawn_blocking(move || {
        let t = f(&mut feeds);
        (feeds, t)
    })
    .await
    {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "the feed task failed: feeds are no longer refreshed (their entries in force stay)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc};

    use super::*;
    use crate::testing::net;

    #[test]
    fn feeds_join_their_list_or_its_monitored_layer_without_duplicates() {
        let config =
            Config::parse("[lists]\nblacklist = [\"203.0.113.0/24\"]\n", "t.toml").unwrap();
        let set = |nets: &[&str]| Arc::new(nets.iter().map(|n| net(n)).collect::<BTreeSet<_>>());
        let sets = FeedSets {
            feeds: vec![
                (
                    "a".into(),
                    ListKind::Blacklist,
                    set(&["203.0.113.0/24", "198.51.100.7/32"]),
                ),
                ("b".into(), ListKind::Blacklist, set(&["198.51.100.8/32"])),
                ("w".into(), ListKind::Whitelist, set(&["192.0.2.0/24"])),
            ],
            monitored: ["b".to_owned()].into(),
        };
        let merged = merge_feeds(&config, &sets);
        assert_eq!(
            merged.lists.blacklist,
            [net("203.0.113.0/24"), net("198.51.100.7/32")]
        );
        assert_eq!(merged.lists.monitor_blacklist, [net("198.51.100.8/32")]);
        assert!(merged.lists.whitelist.contains(&net("192.0.2.0/24")));
    }
}
