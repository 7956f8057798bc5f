//! The feeds of a running daemon: what each has in force, what it holds back, and its
//! status. [`Feeds`] decides (time, protected networks and fetch results passed in); the
//! only I/O is its last good copies (`state.dir/feeds`), read at start and written when an
//! update is applied. The daemon's feed task drives it (`daemon/feeds_task.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;

use super::{
    clean, judge, load_last_good, parse, save_last_good, Conditional, DropReason, FeedError,
    Fetched, Hygiene, Judgement, Meta, Source,
};
use crate::{
    config::{FeedConfig, MinPrefix},
    model::{ListKind, Ts},
};

/// Rejected lines and dropped entries kept per feed as examples for the status.
const SAMPLES: usize = 5;
/// After a failed fetch, try again after this long (or the refresh, if shorter).
const RETRY: Duration = Duration::from_secs(300);

/// The entries each feed has in force, by feed: what the tables hold for feeds.
#[derive(Clone, Debug, Default)]
pub struct FeedSets {
    pub feeds: Vec<(String, ListKind, Arc<BTreeSet<IpNet>>)>,
    /// The names of the feeds in monitor mode (their entries go on the monitored layer).
    pub monitored: BTreeSet<String>,
}

impl FeedSets {
    /// The feed that lists `net` on `list`, if one does.
    pub fn source_of(&self, list: ListKind, net: &IpNet) -> Option<&str> {
        self.feeds
            .iter()
            .find(|(_, l, nets)| *l == list && nets.contains(net))
            .map(|(name, _, _)| name.as_str())
    }
}

/// An update held back for an operator (`ipguard feed accept NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub reason: String,
    pub added: usize,
    pub removed: usize,
    pub since: Ts,
    nets: BTreeSet<IpNet>,
    meta: Meta,
}

/// One feed's status, for the API, the CLI and the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedStatus {
    pub name: String,
    pub list: ListKind,
    /// The URL (credentials and query left out) or the path.
    pub source: String,
    pub format: &'static str,
    /// Entries in force.
    pub entries: usize,
    pub last_fetch: Option<Ts>,
    pub last_change: Option<Ts>,
    /// The last fetch's error, until a fetch succeeds.
    pub last_error: Option<String>,
    pub next_fetch: Ts,
    pub fetches: u64,
    pub failures: u64,
    /// Lines of the last body that were not entries, and some of them.
    pub rejected_lines: usize,
    pub rejected_samples: Vec<String>,
    /// Entries of the last body dropped by the hygiene, by why, and some of them.
    pub dropped: BTreeMap<&'static str, usize>,
    pub dropped_samples: Vec<String>,
    pub held: Option<Held>,
}

struct Feed {
    cfg: FeedConfig,
    in_force: Arc<BTreeSet<IpNet>>,
    meta: Option<Meta>,
    status: FeedStatus,
}

/// What a fetch did to a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The entries in force changed.
    Applied,
    Unchanged,
    /// An update is held for an operator.
    Held,
    /// Nothing usable came; the last good entries stay.
    Failed,
}

/// Every feed of the config.
pub struct Feeds {
    feeds: Vec<Feed>,
    dir: PathBuf,
}

fn drop_kind(r: &DropReason) -> &'static str {
    match r {
        DropReason::Protected(_) => "protected",
        DropReason::TooBroad { .. } => "too_broad",
        DropReason::Bogon(_) => "bogon",
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::Path(p) => p.display().to_string(),
        // Credentials and the query (which may carry a key) stay out of the status.
        Source::Url(u) => {
            let u = u.split(['?', '#']).next().unwrap_or(u);
            match u.split_once("://") {
                Some((scheme, rest)) => {
                    let host_path = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                    format!("{scheme}://{host_path}")
                }
                None => u.to_owned(),
            }
        }
    }
}

impl Feeds {
    /// The feeds of the config, each with its last good copy from `dir` (if any): what is
    /// enforced until the source answers. Every feed is due at once.
    pub fn load(configs: &[FeedConfig], dir: &Path, now: Ts) -> Feeds {
        let feeds = configs
            .iter()
            .map(|cfg| {
                let (in_force, meta, error) = match load_last_good(dir, &cfg.name) {
                    Ok(Some((nets, meta))) => (nets, Some(meta), None),
                    Ok(None) => (BTreeSet::new(), None, None),
                    Err(e) => (
                        BTreeSet::new(),
                        None,
                        Some(format!("the last good copy cannot be used: {e}")),
                    ),
                };
                if let Some(e) = &error {
                    tracing::error!(feed = cfg.name, error = %e, "feed");
                }
                Feed {
                    status: FeedStatus {
                        name: cfg.name.clone(),
                        list: cfg.list,
                        source: describe(&cfg.source),
                        format: cfg.format.as_str(),
                        entries: in_force.len(),
                        last_fetch: meta.as_ref().map(|m| m.fetched),
                        last_change: meta.as_ref().map(|m| m.changed),
                        last_error: error,
                        next_fetch: now,
                        fetches: 0,
                        failures: 0,
                        rejected_lines: 0,
                        rejected_samples: Vec::new(),
                        dropped: BTreeMap::new(),
                        dropped_samples: Vec::new(),
                        held: None,
                    },
                    in_force: Arc::new(in_force),
                    meta,
                    cfg: cfg.clone(),
                }
            })
            .collect();
        Feeds {
            feeds,
            dir: dir.to_owned(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// The list feed `i` fills.
    pub fn list_of(&self, i: usize) -> Option<ListKind> {
        self.feeds.get(i).map(|f| f.cfg.list)
    }

    /// What each feed has in force.
    pub fn sets(&self) -> FeedSets {
        FeedSets {
            feeds: self
                .feeds
                .iter()
                .map(|f| (f.cfg.name.clone(), f.cfg.list, f.in_force.clone()))
                .collect(),
            monitored: self
                .feeds
                .iter()
                .filter(|f| f.cfg.mode == crate::model::Mode::Monitor)
                .map(|f| f.cfg.name.clone())
                .collect(),
        }
    }

    pub fn status(&self) -> Vec<FeedStatus> {
        self.feeds.iter().map(|f| f.status.clone()).collect()
    }

    /// The earliest time a feed is due.
    pub fn next_due(&self) -> Option<Ts> {
        self.feeds.iter().map(|f| f.status.next_fetch).min()
    }

    /// The feeds due at `now`: index, source and validators.
    pub fn due(&self, now: Ts) -> Vec<(usize, Source, Conditional)> {
        self.feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.status.next_fetch <= now)
            .map(|(i, f)| {
                let cond = Conditional {
                    etag: f.meta.as_ref().and_then(|m| m.etag.clone()),
                    last_modified: f.meta.as_ref().and_then(|m| m.last_modified.clone()),
                };
                (i, f.cfg.source.clone(), cond)
            })
            .collect()
    }

    /// Takes feed `i`'s fetch: parse, hygiene against `protected` and `min_prefix`, judge
    /// against what is in force, and apply (saving the copy), hold or keep.
    pub fn on_fetched(
        &mut self,
        i: usize,
        fetched: Result<Fetched, FeedError>,
        protected: &[IpNet],
        min_prefix: MinPrefix,
        now: Ts,
    ) -> Outcome {
        let dir = self.dir.clone();
        let Some(f) = self.feeds.get_mut(i) else {
            return Outcome::Failed;
        };
        f.status.fetches += 1;
        f.status.next_fetch = now.plus(f.cfg.refresh);
        let fail = |f: &mut Feed, e: String| {
            f.status.failures += 1;
            f.status.last_error = Some(e);
            f.status.next_fetch = now.plus(f.cfg.refresh.min(RETRY));
            Outcome::Failed
        };
        let (text, etag, last_modified) = match fetched {
            Err(e) => return fail(f, e.to_string()),
            Ok(Fetched::NotModified) => {
                f.status.last_fetch = Some(now);
                f.status.last_error = None;
                if let Some(m) = &mut f.meta {
                    m.fetched = now;
                }
                return Outcome::Unchanged;
            }
            Ok(Fetched::Body {
                text,
                etag,
                last_modified,
            }) => (text, etag, last_modified),
        };
        let parsed = match parse(f.cfg.format, &text) {
            Ok(p) => p,
            Err(e) => return fail(f, e.to_string()),
        };
        f.status.rejected_lines = parsed.rejected_total;
        f.status.rejected_samples = parsed
            .rejected
            .iter()
            .take(SAMPLES)
            .map(|r| format!("line {}: {}: {}", r.line, r.text, r.reason))
            .collect();
        let cleaned = clean(
            parsed.nets,
            &Hygiene {
                protected: protected.to_vec(),
                min_prefix,
                exclude_bogons: f.cfg.exclude_bogons,
            },
        );
        f.status.dropped.clear();
        for (_, why) in &cleaned.dropped {
            *f.status.dropped.entry(drop_kind(why)).or_default() += 1;
        }
        f.status.dropped_samples = cleaned
            .dropped
            .iter()
            .take(SAMPLES)
            .map(|(net, why)| format!("{net}: {why}"))
            .collect();
        f.status.last_fetch = Some(now);
        f.status.last_error = None;
        let meta = Meta {
            etag,
            last_modified,
            fetched: now,
            changed: f.meta.as_ref().map_or(now, |m| m.changed),
        };
        match judge(&f.in_force, &cleaned.kept, f.cfg.max_change) {
            Judgement::Unchanged => {
                f.meta = Some(meta);
                f.status.held = None;
                Outcome::Unchanged
            }
            Judgement::Hold { reason, diff } => {
                tracing::warn!(feed = f.cfg.name, reason, added = diff.added.len(), removed = diff.removed.len(),
                    "feed update held back; the last good entries stay (ipguard feed accept {} to take it)", f.cfg.name);
                f.status.held = Some(Held {
                    reason,
                    added: diff.added.len(),
                    removed: diff.removed.len(),
                    since: now,
                    nets: cleaned.kept,
                    meta,
                });
                Outcome::Held
            }
            Judgement::Apply(_) => match Self::install(&dir, f, cleaned.kept, meta, now) {
                Ok(()) => Outcome::Applied,
                Err(e) => fail(f, e.to_string()),
            },
        }
    }

    /// Puts `nets` in force for `f` and saves them as its last good copy (first: an update
    /// that cannot be kept is not applied, so a restart never goes back behind it).
    fn install(
        dir: &Path,
        f: &mut Feed,
        nets: BTreeSet<IpNet>,
        mut meta: Meta,
        now: Ts,
    ) -> Result<(), FeedError> {
        meta.changed = now;
        std::fs::create_dir_all(dir).map_err(|e| FeedError::Save {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        save_last_good(dir, &f.cfg.name, &nets, &meta)?;
        f.status.entries = nets.len();
        f.status.last_change = Some(now);
        f.status.held = None;
        f.in_force = Arc::new(nets);
        f.meta = Some(meta);
        Ok(())
    }

    /// Applies feed `name`'s held update (an operator looked at it).
    pub fn accept(&mut self, name: &str, now: Ts) -> Result<(), String> {
        let dir = self.dir.clone();
        let f = self
            .feeds
            .iter_mut()
            .find(|f| f.cfg.name == name)
            .ok_or_else(|| format!("no feed named {name:?}"))?;
        let held = f
            .status
            .held
            .take()
            .ok_or_else(|| format!("feed {name:?} holds no update"))?;
        Self::install(&dir, f, held.nets.clone(), held.meta.clone(), now).map_err(|e| {
            f.status.held = Some(held);
            e.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{feeds::FeedFormat, testing::net};

    fn config(name: &str) -> FeedConfig {
        FeedConfig {
            name: name.into(),
            source: Source::Url("http://user:pw@feeds.example/list.netset?key=s3cret".into()),
            list: ListKind::Blacklist,
            refresh: Duration::from_secs(3600),
            format: FeedFormat::Netset,
            max_change: 0.5,
            exclude_bogons: false,
            mode: crate::model::Mode::Enforce,
        }
    }

    fn body(text: &str) -> Result<Fetched, FeedError> {
        Ok(Fetched::Body {
            text: text.into(),
            etag: Some("\"v1\"".into()),
            last_modified: None,
        })
    }

    const MIN: MinPrefix = MinPrefix { v4: 8, v6: 16 };

    #[test]
    fn a_feed_applies_holds_keeps_its_last_good_copy_and_takes_an_accept() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Ts(1_000_000_000_000);
        let mut feeds = Feeds::load(&[config("a")], dir.path(), t0);
        assert_eq!(feeds.due(t0).len(), 1);
        let protected = [net("192.0.2.0/24")];
        let r = feeds.on_fetched(
            0,
            body("198.51.100.7\n203.0.113.0/24\n192.0.2.9\n0.0.0.0/0\nx\n"),
            &protected,
            MIN,
            t0,
        );
        assert_eq!(r, Outcome::Applied);
        let s = &feeds.status()[0];
        assert_eq!(s.entries, 2);
        assert_eq!(s.rejected_lines, 1);
        assert_eq!(s.dropped.get("protected"), Some(&1));
        assert_eq!(s.dropped.get("too_broad"), Some(&1));
        // The status never shows the credentials or the query.
        assert_eq!(s.source, "http://feeds.example/list.netset");
        assert_eq!(feeds.next_due(), Some(t0.plus(Duration::from_secs(3600))));
        // Validators go with the next fetch.
        assert_eq!(
            feeds.due(t0.plus(Duration::from_secs(3600)))[0]
                .2
                .etag
                .as_deref(),
            Some("\"v1\"")
        );

        // A failure keeps the entries and retries sooner.
        let t1 = t0.plus(Duration::from_secs(3600));
        let r = feeds.on_fetched(
            0,
            Err(FeedError::UnsupportedUrl { url: "x".into() }),
            &protected,
            MIN,
            t1,
        );
        assert_eq!(r, Outcome::Failed);
        assert_eq!(feeds.status()[0].entries, 2);
        assert_eq!(feeds.next_due(), Some(t1.plus(RETRY)));

        // Emptied: held; the entries in force stay; accept applies it.
        let r = feeds.on_fetched(0, body("# empty\n"), &protected, MIN, t1);
        assert_eq!(r, Outcome::Held);
        assert_eq!(feeds.sets().feeds[0].2.len(), 2);
        let held = feeds.status()[0].held.clone().unwrap();
        assert_eq!((held.added, held.removed), (0, 2));
        assert!(feeds.accept("nosuch", t1).is_err());
        feeds.accept("a", t1).unwrap();
        assert!(feeds.sets().feeds[0].2.is_empty());
        assert!(feeds.accept("a", t1).is_err(), "nothing held any more");

        // A restart reads the last good copy.
        let r = feeds.on_fetched(0, body("198.51.100.8\n"), &protected, MIN, t1);
        assert_eq!(r, Outcome::Applied);
        let again = Feeds::load(&[config("a")], dir.path(), t1);
        assert_eq!(
            again.sets().feeds[0].2.iter().copied().collect::<Vec<_>>(),
            [net("198.51.100.8/32")]
        );
        assert_eq!(
            again
                .sets()
                .source_of(ListKind::Blacklist, &net("198.51.100.8/32")),
            Some("a")
        );
        assert_eq!(
            again
                .sets()
                .source_of(ListKind::Graylist, &net("198.51.100.8/32")),
            None
        );
    }

    #[test]
    fn a_corrupt_last_good_copy_is_reported_and_the_feed_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.feed"), "garbage\n").unwrap();
        let feeds = Feeds::load(&[config("a")], dir.path(), Ts(1));
        let s = &feeds.status()[0];
        assert_eq!(s.entries, 0);
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("last good copy")),
            "{s:?}"
        );
    }
}
