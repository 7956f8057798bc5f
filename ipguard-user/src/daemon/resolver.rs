//! The rules' hostnames, resolved on a task of their own: the event loop never waits for
//! DNS. Each refresh resolves every name at once, each with a timeout, and keeps the last
//! good answer of a name that fails now.

use std::{collections::HashMap, time::Duration};

use ipnet::IpNet;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::config::{Rule, RuleAction, RuleSource};

/// How long one name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The rule layer (index, deny, nets) and the answers it came from.
pub type Resolved = (Vec<(u32, bool, Vec<IpNet>)>, HashMap<String, Vec<IpNet>>);

/// What the resolver works from: the rules and how often to resolve them again.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub rules: Vec<Rule>,
    pub refresh: Duration,
}

/// Resolves `rules` now, keeping `last` answers for names that fail.
pub async fn resolve(rules: &[Rule], last: &HashMap<String, Vec<IpNet>>) -> Resolved {
    let mut lookups = JoinSet::new();
    for host in rules.iter().filter_map(|r| match &r.source {
        RuleSource::Host(h) => Some(h.clone()),
        RuleSource::Net(_) => None,
    }) {
        lookups.spawn(async move {
            let answer =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map(|r| r.map(|addrs| addrs.collect::<Vec<_>>()));
            (host, answer)
        });
    }
    let mut cache = last.clone();
    while let Some(done) = lookups.join_next().await {
        let Ok((host, answer)) = done else { continue };
        match answer {
            Ok(Ok(addrs)) => {
                let mut nets: Vec<IpNet> = addrs.iter().map(|a| IpNet::from(a.ip())).collect();
                nets.sort();
                nets.dedup();
                tracing::debug!(host, addresses = ?nets, "resolved rule hostname");
                cache.insert(host, nets);
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("timed out after {RESOLVE_TIMEOUT:?}"),
                };
                tracing::warn!(host, error = why, kept = ?last.get(&host), "cannot resolve rule hostname; keeping the last known addresses");
            }
        }
    }
    (from_cache(rules, &cache), cache)
}

/// The rule layer (index, deny, nets) from the answers in `cache`, without any lookup:
/// literal networks as they are, hostnames as last resolved (none yet: no networks, until
/// the resolver answers). A reload writes this at once, so that the rules it acknowledges
/// are in force.
pub fn from_cache(
    rules: &[Rule],
    cache: &HashMap<String, Vec<IpNet>>,
) -> Vec<(u32, bool, Vec<IpNet>)> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let nets = match &rule.source {
                RuleSource::Net(net) => vec![*net],
                RuleSource::Host(host) => cache.get(host).cloned().unwrap_or_default(),
            };
            (i as u32, rule.action == RuleAction::Deny, nets)
        })
        .collect()
}

/// Resolves the job's hostnames every `refresh` (from now: the first resolution is the
/// caller's) and sends each result; follows `jobs` (a reload), and ends when the receiver
/// is gone.
pub async fn run(
    mut jobs: watch::Receiver<Job>,
    mut last: HashMap<String, Vec<IpNet>>,
    out: mpsc::Sender<Resolved>,
) {
    loop {
        let job = jobs.borrow_and_update().clone();
        let has_hosts = job
            .rules
            .iter()
            .any(|r| matches!(r.source, RuleSource::Host(_)));
        tokio::select! {
            changed = jobs.changed() => {
                if changed.is_err() {
                    return;
                }
                // A reload: resolve the new rules at once.
                let job = jobs.borrow_and_update().clone();
                let result = resolve(&job.rules, &last).await;
                last = result.1.clone();
                if out.send(result).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(job.refresh), if has_hosts => {
                let result = resolve(&job.rules, &last).await;
                last = result.1.clone();
                if out.send(result).await.is_err() {
                    return;
                }
            }
        }
    }
}
