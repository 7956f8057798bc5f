//! Changes an operator makes: entries added and removed through the API, a config
//! reloaded, the rules' hostnames resolved again.

use std::{collections::HashMap, time::Duration};

use ipnet::IpNet;

use super::{
    config_lists, flood_config, rate_config, Controller, ControllerError, Durability, Result,
    Settings,
};
use crate::{
    config::{Config, Rule},
    dataplane::Backend,
    model::{ListKind, Now, Origin},
    policy::engine::Entry,
};

impl<B: Backend> Controller<B> {
    /// Adds entries (prefix, ttl, reason; validated by the caller) to a list as one change:
    /// all are applied or none (a lockout without `force`, a full table, a disk that cannot
    /// persist them). Returns (added, replaced).
    pub fn add_entries(
        &mut self,
        list: ListKind,
        entries: &[(IpNet, Option<Duration>, String)],
        origin: Origin,
        by: &str,
        force: bool,
        now: Now,
    ) -> Result<(u64, u64)> {
        if !force {
            for (index, (net, _, _)) in entries.iter().enumerate() {
                let why = self.too_broad(*net).or_else(|| {
                    (list != ListKind::Whitelist)
                        .then(|| self.lockout(*net))
                        .flatten()
                });
                if let Some(why) = why {
                    return Err(ControllerError::Lockout { index, why });
                }
            }
        }
        let (change, (added, replaced)) = self.policy.add(list, entries, origin, now.wall);
        self.carry_out(change, by, "", Durability::Required, now)?;
        if origin == Origin::Api && list != ListKind::Whitelist && added > 0 {
            self.telemetry.count_bans("api", list, added);
        }
        Ok((added, replaced))
    }

    /// Removes one entry; `None` if it was not there. An entry of the config file needs
    /// `force` (and comes back at the next reload or restart).
    pub fn remove_entry(
        &mut self,
        list: ListKind,
        net: IpNet,
        by: &str,
        force: bool,
        now: Now,
    ) -> Result<Option<Entry>> {
        let net = net.trunc();
        let from_config = self
            .policy
            .engine()
            .entry(list, net)
            .is_some_and(|e| e.origin == Origin::Config);
        if from_config && !force {
            return Err(ControllerError::ConfigEntry { list, net });
        }
        let Some((entry, change)) = self.policy.remove(list, net) else {
            return Ok(None);
        };
        self.carry_out(change, by, "removed", Durability::Required, now)?;
        Ok(Some(entry))
    }

    /// Applies a new config (SIGHUP): list entries from the config, escalation, reports and
    /// rate rules. Interface, mode, map sizes, API and state settings need a restart; the
    /// result names the ones that changed. Rules are applied by the caller once resolved
    /// ([`Controller::set_rules`]).
    pub fn reload(&mut self, config: &Config, old: &Config, now: Now) -> Result<Vec<&'static str>> {
        let new_lists = config_lists(config);
        // One change: additions are written before removals, so no listed source passes
        // in between.
        let change = self
            .policy
            .reload_lists(&self.settings.config_lists, &new_lists, now.wall);
        self.carry_out(change, "config", "config", Durability::BestEffort, now)?;
        self.reload_monitored(config, now)?;
        self.set_scoped_entries(config)?;
        self.policy
            .reconfigure(config.escalation.clone(), config.report);
        self.protection.reconfigure(config.protect.clone());
        self.policy.set_protected(self.protection.nets());
        self.backend.set_rates(&rate_config(config))?;
        self.backend.set_flood(&flood_config(config))?;
        self.settings = Settings::of(config);
        let restart = [
            ("interface", config.interface != old.interface),
            ("xdp_mode", config.xdp_mode != old.xdp_mode),
            ("maps", config.maps != old.maps),
            ("api", config.api != old.api),
            // keep_attached is read at the stop, so a reload takes it.
            (
                "state",
                config.state.dir != old.state.dir || config.state.pin_dir != old.state.pin_dir,
            ),
            ("log", config.log != old.log),
            ("cluster", config.cluster != old.cluster),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        Ok(restart)
    }

    /// Writes the config's port- and protocol-scoped list entries (no engine state: the
    /// tables are made to match the compiled policy if a write fails).
    pub(super) fn set_scoped_entries(&mut self, config: &Config) -> Result<()> {
        let entries = scoped_entries(config);
        let ops = self
            .policy
            .set_scoped_entries(&entries)
            .ok_or(ControllerError::TooManyScopes)?;
        if let Err(e) = self.backend.apply(&ops) {
            let _ = self
                .backend
                .sync(self.policy.compiled(), &self.policy.scopes());
            return Err(e.into());
        }
        Ok(())
    }

    /// The rules and the last answers for their hostnames, to resolve them again outside
    /// the lock.
    pub fn rules(&self) -> (Vec<Rule>, HashMap<String, Vec<IpNet>>) {
        (self.settings.rules.clone(), self.resolved.clone())
    }

    /// Writes the rule layer from resolved rules (index, deny, nets) and keeps the answers.
    /// A rule with `proto`/`ports` counts for the packets of its scope only.
    pub fn set_rules(
        &mut self,
        compiled: &[(u32, bool, Vec<IpNet>)],
        resolved: HashMap<String, Vec<IpNet>>,
    ) -> Result<()> {
        self.resolved = resolved;
        let mut rules = Vec::with_capacity(compiled.len());
        for (index, deny, nets) in compiled {
            let scope = match self
                .settings
                .rules
                .get(*index as usize)
                .and_then(|r| r.scope.as_ref())
            {
                Some(scope) => Some(
                    self.policy
                        .intern_scope(scope)
                        .ok_or(ControllerError::TooManyScopes)?,
                ),
                None => None,
            };
            rules.push((*index, *deny, scope, nets.clone()));
        }
        let ops = self.policy.set_rules(&rules);
        if let Err(e) = self.backend.apply(&ops) {
            // Rules are no engine state: the tables are made to match the compiled policy.
            let _ = self
                .backend
                .sync(self.policy.compiled(), &self.policy.scopes());
            return Err(e.into());
        }
        Ok(())
    }
}

/// The config's scoped list entries as (prefix, layer, scope).
pub(super) fn scoped_entries(
    config: &Config,
) -> Vec<(IpNet, crate::model::Layer, crate::model::Scope)> {
    config
        .lists
        .scoped
        .iter()
        .map(|e| (e.net, e.layer, e.scope.clone()))
        .collect()
}
