//! Monitor mode on the controller's side: the global mode (the config's `mode`, switched at
//! run time by `PUT /v1/mode`), and the hook through which sources in monitor mode (the
//! config's `[lists]` and `[geo]`, feeds) put their prefixes on the monitored layers.
//!
//! Neither is engine state: a change is written to the tables at once, and taken back in
//! the policy (and the tables put back) if they refuse it. The run-time mode is not
//! persisted: a start applies the config's `mode`, and so does a reload that finds the
//! file's `mode` changed; until then a switch through the API holds.

use ipnet::IpNet;

use super::{Controller, Result};
use crate::{
    config::Config,
    dataplane::Backend,
    model::{ListKind, Mode, Now, TableOp},
    policy::{
        monitor::{MonitorDiff, MonitorSource},
        Policy,
    },
};

/// The config's monitored lists (graylist, blacklist) with the source that holds them.
fn config_monitored(config: &Config) -> [(ListKind, &[IpNet]); 2] {
    [
        (ListKind::Graylist, &config.lists.monitor_graylist),
        (ListKind::Blacklist, &config.lists.monitor_blacklist),
    ]
}

/// Start-up: the config's monitored lists and its mode, before the tables are synced (no
/// ops: the whole table is written).
pub(super) fn load(policy: &mut Policy, config: &Config) {
    for (list, nets) in config_monitored(config) {
        let _ = policy.set_monitored(&MonitorSource::Config, list, nets);
    }
    let _ = policy.set_mode(config.mode);
}

impl<B: Backend> Controller<B> {
    /// The global mode in force.
    pub fn mode(&self) -> Mode {
        self.policy.mode()
    }

    /// The config file's `mode` (as last read).
    pub fn config_mode(&self) -> Mode {
        self.settings.mode
    }

    /// Switches the global mode now: one rewrite of the tables in the compiler's safe
    /// order, so an address sees its verdict of the old mode or of the new one, never a
    /// third. Returns whether anything changed. If the tables refuse, the old mode stays.
    pub fn set_mode(&mut self, mode: Mode, by: &str, now: Now) -> Result<bool> {
        let old = self.policy.mode();
        if old == mode {
            return Ok(false);
        }
        let ops = self.policy.set_mode(mode);
        if let Err(e) = self.write_or_undo(&ops, now, |p| p.set_mode(old)) {
            tracing::error!(error = %e, mode = %mode, by, "cannot switch the mode; it stays {old}");
            return Err(e);
        }
        match mode {
            Mode::Monitor => tracing::warn!(
                by,
                entries = ops.len(),
                "monitor mode: lists and deny rules drop nothing; what they would drop passes and is counted"
            ),
            Mode::Enforce => tracing::info!(by, entries = ops.len(), "enforce mode: drops are carried out again"),
        }
        self.log_record(&crate::decision_log::Record::Mode {
            mode: mode.as_str().to_owned(),
            from: old.as_str().to_owned(),
            entries: ops.len() as u64,
            by: by.to_owned(),
        });
        Ok(true)
    }

    /// The hook for a source in monitor mode (a feed with `mode = "monitor"`): adds and
    /// removes its prefixes on `list`'s monitored layer (passed, counted as would drop;
    /// the whitelist has none). All or nothing: if the tables refuse, nothing changes.
    pub fn monitor(
        &mut self,
        source: &MonitorSource,
        list: ListKind,
        added: &[IpNet],
        removed: &[IpNet],
        now: Now,
    ) -> Result<MonitorDiff> {
        let (ops, diff) = self.policy.monitor(source, list, added, removed);
        let undo = diff.clone();
        self.write_or_undo(&ops, now, |p| {
            p.monitor(source, list, &undo.removed, &undo.added).0
        })?;
        Ok(diff)
    }

    /// Like [`Controller::monitor`], with `nets` as the source's whole set on `list`.
    pub fn set_monitored(
        &mut self,
        source: &MonitorSource,
        list: ListKind,
        nets: &[IpNet],
        now: Now,
    ) -> Result<MonitorDiff> {
        let (ops, diff) = self.policy.set_monitored(source, list, nets);
        let undo = diff.clone();
        self.write_or_undo(&ops, now, |p| {
            p.monitor(source, list, &undo.removed, &undo.added).0
        })?;
        Ok(diff)
    }

    /// A reload: the config's monitored lists (after its enforced ones, so that an entry
    /// moving from one to the other is never unlisted in between), then its `mode` if the
    /// file's changed.
    pub(super) fn reload_monitored(&mut self, config: &Config, now: Now) -> Result<()> {
        for (list, nets) in config_monitored(config) {
            self.set_monitored(&MonitorSource::Config, list, nets, now)?;
        }
        if config.mode != self.settings.mode {
            self.set_mode(config.mode, "config", now)?;
        }
        Ok(())
    }

    /// Writes `ops`; if the tables refuse, takes the change back in the policy with
    /// `undo` and puts the tables back (by the undo's ops or, failing that, a whole sync).
    fn write_or_undo(
        &mut self,
        ops: &[TableOp],
        now: Now,
        undo: impl FnOnce(&mut Policy) -> Vec<TableOp>,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        match self.backend.apply(ops) {
            Ok(()) => {
                self.health.tables_ok(ops);
                Ok(())
            }
            Err(e) => {
                self.health.table_error(&e, now.wall, &self.telemetry);
                let back = undo(&mut self.policy);
                if self.backend.apply(&back).is_err() {
                    if let Err(e) = self
                        .backend
                        .sync(self.policy.compiled(), &self.policy.scopes())
                    {
                        tracing::error!(error = %e, "cannot restore the tables after a refused change");
                    }
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipguard_common::{
        LIST_BLACKLIST, LIST_GRAYLIST, LIST_MONITOR_BLACKLIST, LIST_MONITOR_GRAYLIST, LIST_NONE,
    };

    use super::*;
    use crate::{
        controller::{view::DecidedBy, Placement},
        dataplane::{MemoryBackend, MemoryStore},
        model::Origin,
        testing::{ip, net, T0},
    };

    fn at(secs: u64) -> Now {
        Now {
            wall: T0.plus(Duration::from_secs(secs)),
            mono_ns: 1_000_000_000 + secs * 1_000_000_000,
        }
    }

    const CONFIG: &str = r#"
[lists]
whitelist = ["10.0.0.0/8"]
graylist = ["192.0.2.0/24"]
blacklist = ["203.0.113.0/24"]
mode = "monitor"
[maps]
lpm_v4_capacity = 4
"#;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap()
    }

    fn controller(text: &str) -> Controller<MemoryBackend> {
        let config = config(text);
        let backend = MemoryBackend::new(MemoryStore::with_capacity(&config.maps));
        Controller::new(backend, &config, Placement::default(), at(0))
            .unwrap()
            .0
    }

    /// The kernel's answer for `addr`, the tables checked against the compiled policy.
    fn code(c: &Controller<MemoryBackend>, addr: &str) -> u32 {
        assert_eq!(&c.backend().table.entries(), c.policy().compiled());
        c.backend().lookup(ip(addr))
    }

    #[test]
    fn config_lists_in_monitor_mode_pass_and_explain_would_drop() {
        let c = controller(CONFIG);
        assert_eq!(code(&c, "203.0.113.9"), LIST_MONITOR_BLACKLIST);
        assert_eq!(code(&c, "192.0.2.9"), LIST_MONITOR_GRAYLIST);
        let x = c.explain(ip("203.0.113.9"), at(1)).unwrap();
        assert!(x.would_drop && !x.drop);
        assert_eq!(x.list, Some(ListKind::Blacklist));
        assert_eq!(x.prefix, Some(net("203.0.113.0/24")));
        assert_eq!(x.decided_by, Some(DecidedBy::Entry(Origin::Config)));
        assert_eq!(
            x.reason.as_deref(),
            Some("config: [lists] blacklist, monitor mode")
        );
        // Monitored entries are not the engine's: the lists hold the whitelist only.
        let status = c.status(at(1)).unwrap();
        assert_eq!((status.entries, status.monitored), ([1, 0, 0], [1, 1]));
        assert_eq!(c.mode(), Mode::Enforce);
    }

    #[test]
    fn a_reload_moves_entries_between_enforced_and_monitored() {
        let mut c = controller(CONFIG);
        let monitored = config(CONFIG);
        let enforced = config(&CONFIG.replace("mode = \"monitor\"", "mode = \"enforce\""));
        c.reload(&enforced, &monitored, at(1)).unwrap();
        assert_eq!(code(&c, "203.0.113.9"), LIST_BLACKLIST);
        assert_eq!(code(&c, "192.0.2.9"), LIST_GRAYLIST);
        assert_eq!(c.policy().monitored().count(ListKind::Blacklist), 0);
        c.reload(&monitored, &enforced, at(2)).unwrap();
        assert_eq!(code(&c, "203.0.113.9"), LIST_MONITOR_BLACKLIST);
        let removed = config(&CONFIG.replace("\"203.0.113.0/24\"", ""));
        c.reload(&removed, &monitored, at(3)).unwrap();
        assert_eq!(code(&c, "203.0.113.9"), LIST_NONE);
        assert_eq!(code(&c, "192.0.2.9"), LIST_MONITOR_GRAYLIST);
    }

    #[test]
    fn the_run_time_mode_holds_until_the_files_mode_changes() {
        let text = "[lists]\nblacklist = [\"203.0.113.0/24\"]\n";
        let mut c = controller(text);
        let base = config(text);
        assert!(c.set_mode(Mode::Monitor, "test", at(1)).unwrap());
        assert!(!c.set_mode(Mode::Monitor, "test", at(1)).unwrap());
        assert_eq!(code(&c, "203.0.113.9"), LIST_MONITOR_BLACKLIST);
        // A reload with the file's mode unchanged (enforce) keeps the switch.
        c.reload(&base, &base, at(2)).unwrap();
        assert_eq!((c.mode(), c.config_mode()), (Mode::Monitor, Mode::Enforce));
        // The file says monitor, then enforce: each change is applied.
        let monitor = config(&format!("mode = \"monitor\"\n{text}"));
        c.reload(&monitor, &base, at(3)).unwrap();
        assert_eq!((c.mode(), c.config_mode()), (Mode::Monitor, Mode::Monitor));
        c.reload(&base, &monitor, at(4)).unwrap();
        assert_eq!(c.mode(), Mode::Enforce);
        assert_eq!(code(&c, "203.0.113.9"), LIST_BLACKLIST);
        // A start applies the file's mode.
        let c = controller(&format!("mode = \"monitor\"\n{text}"));
        assert_eq!(c.mode(), Mode::Monitor);
        assert_eq!(code(&c, "203.0.113.9"), LIST_MONITOR_BLACKLIST);
    }

    #[test]
    fn the_hook_is_all_or_nothing_and_explains_the_feed() {
        let mut c = controller(CONFIG);
        let feed = MonitorSource::Feed("drop".into());
        let diff = c
            .monitor(
                &feed,
                ListKind::Blacklist,
                &[net("198.51.100.0/24")],
                &[],
                at(1),
            )
            .unwrap();
        assert_eq!(diff.added, [net("198.51.100.0/24")]);
        assert_eq!(code(&c, "198.51.100.9"), LIST_MONITOR_BLACKLIST);
        let x = c.explain(ip("198.51.100.9"), at(1)).unwrap();
        assert!(x.would_drop);
        assert_eq!(x.decided_by, Some(DecidedBy::Monitored(feed.clone())));
        assert_eq!(x.feed.as_deref(), Some("drop"));
        // Five more host prefixes than the IPv4 host map holds (capacity 4): refused,
        // and nothing changed, in the policy or in the tables.
        let before = c.policy().compiled().clone();
        let hosts: Vec<IpNet> = (1..=5).map(|i| net(&format!("198.18.0.{i}/32"))).collect();
        assert!(c
            .monitor(&feed, ListKind::Graylist, &hosts, &[], at(2))
            .is_err());
        assert_eq!(c.policy().compiled(), &before);
        assert_eq!(c.policy().monitored().count(ListKind::Graylist), 1);
        assert_eq!(code(&c, "198.18.0.1"), LIST_NONE);
        // The whole set replaced: the prefix goes, the config's stay.
        c.set_monitored(&feed, ListKind::Blacklist, &[], at(3))
            .unwrap();
        assert_eq!(code(&c, "198.51.100.9"), LIST_NONE);
        assert_eq!(code(&c, "203.0.113.9"), LIST_MONITOR_BLACKLIST);
    }

    #[test]
    fn a_mode_switch_is_in_the_decision_log() {
        use crate::{config::LogConfig, decision_log::DecisionLog};
        let mut c = controller(CONFIG);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        c.set_log(
            DecisionLog::open(&LogConfig {
                path: Some(path.clone()),
                ..LogConfig::default()
            })
            .unwrap(),
        );
        assert!(c.set_mode(Mode::Monitor, "api:127.0.0.1", at(1)).unwrap());
        assert!(!c.set_mode(Mode::Monitor, "api:127.0.0.1", at(2)).unwrap());
        assert!(c.set_mode(Mode::Enforce, "cli", at(3)).unwrap());
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let modes: Vec<_> = lines
            .iter()
            .filter(|l| l["event"] == "mode")
            .map(|l| {
                (
                    l["mode"].as_str().unwrap().to_owned(),
                    l["from"].as_str().unwrap().to_owned(),
                    l["by"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            modes,
            [
                ("monitor".into(), "enforce".into(), "api:127.0.0.1".into()),
                ("enforce".into(), "monitor".into(), "cli".into()),
            ]
        );
        // The config's lists are monitored already: the switch rewrote no entry.
        assert!(lines
            .iter()
            .filter(|l| l["event"] == "mode")
            .all(|l| l["entries"].as_u64() == Some(0)));
    }

    #[test]
    fn scoped_rules_and_entries_reach_the_tables_and_explain_per_packet() {
        use ipguard_common::{LIST_RULE_ALLOW, LIST_RULE_DENY, PROTO_TCP, PROTO_UDP};
        let text = r#"
[lists]
blacklist = [{ net = "198.51.100.0/24", proto = "udp", ports = [53] }]
[[rules]]
action = "allow"
source = "192.0.2.0/24"
proto = "tcp"
ports = [22]
[[rules]]
action = "deny"
source = "0.0.0.0/0"
proto = "tcp"
ports = [22]
"#;
        let mut c = controller(text);
        let rules: Vec<_> = (0..2u32)
            .map(|i| {
                let nets = vec![if i == 0 {
                    net("192.0.2.0/24")
                } else {
                    net("0.0.0.0/0")
                }];
                (i, i == 1, nets)
            })
            .collect();
        c.set_rules(&rules, Default::default()).unwrap();
        let v = |c: &Controller<MemoryBackend>, a, p, port| c.backend().verdict(ip(a), p, port);
        assert_eq!(v(&c, "192.0.2.7", PROTO_TCP, 22), LIST_RULE_ALLOW);
        assert_eq!(v(&c, "203.0.113.7", PROTO_TCP, 22), LIST_RULE_DENY);
        assert_eq!(v(&c, "203.0.113.7", PROTO_TCP, 80), LIST_NONE);
        assert_eq!(v(&c, "198.51.100.7", PROTO_UDP, 53), LIST_BLACKLIST);
        assert_eq!(v(&c, "198.51.100.7", PROTO_UDP, 54), LIST_NONE);
        // Explain one packet, and the address's scoped verdicts.
        let x = c
            .explain_packet(
                ip("203.0.113.7"),
                Some((crate::model::Proto::Tcp, 22)),
                at(1),
            )
            .unwrap();
        assert!(x.drop);
        assert_eq!(x.decided_by, Some(DecidedBy::Rule(1)));
        assert_eq!(x.reason.as_deref(), Some("rule 2: deny 0.0.0.0/0 tcp/22"));
        let x = c.explain(ip("198.51.100.7"), at(1)).unwrap();
        assert!(!x.drop);
        let labels: Vec<(String, bool)> = x.scoped.iter().map(|v| (v.label(), v.drop)).collect();
        assert_eq!(
            labels,
            [("tcp/22".to_owned(), true), ("udp/53".to_owned(), true)]
        );
        assert_eq!(
            x.scoped[1].reason.as_deref(),
            Some("config: [lists] blacklist, scoped entry")
        );
        // The kernel's scope map is the compiler's, and the status counts them.
        assert_eq!(c.backend().table.scopes(), &c.policy().scopes());
        let status = c.status(at(2)).unwrap();
        assert_eq!(status.scoped_entries, 1);
        assert!(status.scope_groups >= 2, "{}", status.scope_groups);
        // A reload without the scoped entry takes it out of the tables.
        let old = config(text);
        let new = config(&text.replace(
            r#"blacklist = [{ net = "198.51.100.0/24", proto = "udp", ports = [53] }]"#,
            "blacklist = []",
        ));
        c.reload(&new, &old, at(3)).unwrap();
        assert_eq!(v(&c, "198.51.100.7", PROTO_UDP, 53), LIST_NONE);
        assert_eq!(v(&c, "203.0.113.7", PROTO_TCP, 22), LIST_RULE_DENY);
    }
}
