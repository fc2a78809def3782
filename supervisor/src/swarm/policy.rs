//! The policy in force: hot reload (all or nothing: rules, pool limits, cascade rules,
//! breakers and restart strategies change together, or nothing changes), and the policy as
//! journaled and restored by recovery. The swarm owns the policy's text and version.

use crate::limits::ENTRY_PAYLOAD_BYTES_MAX;
use std::sync::Arc;

use warden_actors::policy::{Diagnostic, PolicyErrors, PolicySet, PoolDef, Pos, Severity};
use warden_actors::{Account, Limits};

use super::tree::Tree;
use super::{Swarm, SwarmError};
use crate::journal::records::PolicyRecord;
use crate::journal::EntryKind;

impl Swarm {
    /// Replaces the policy for every agent at once, if `text` is a valid policy. On any error
    /// the old policy stays in force and every error is returned. Pool limits, cascade rules,
    /// breakers and restart strategies of existing pools are updated too; adding or removing
    /// pools needs a new swarm. Returns the new version and the new policy's warnings.
    pub fn reload_policy(&self, text: &str) -> Result<(u64, Vec<Diagnostic>), SwarmError> {
        self.install_policy(text, false)
    }

    /// The policy version in force (1 for the first; `None` without a policy).
    pub fn policy_version(&self) -> Option<u64> {
        self.inner.policy.as_ref().map(|p| p.version())
    }

    /// The compiled policy in force (its registry, say), if the swarm runs a policy set.
    pub fn policy_set(&self) -> Option<Arc<PolicySet>> {
        self.inner.policy.as_ref()?.policy_set()
    }

    /// The policy in force, version and text read together (a reload changes both under the
    /// same lock, so the text is always that version's). `None` without a policy, or before
    /// its text is known (given to [`attach_journal`](Self::attach_journal), reloaded, or
    /// recovered).
    pub fn policy_text(&self) -> Option<(u64, String)> {
        let _tree = self.inner.tree.read();
        let version = self.policy_version()?;
        let text = self.inner.policy_text.lock().clone()?;
        Some((version, text))
    }

    /// Installs `text`; `recovering` replays a journaled policy (missing pools skipped, limits
    /// restored unchecked, nothing journaled).
    pub(super) fn install_policy(
        &self,
        text: &str,
        recovering: bool,
    ) -> Result<(u64, Vec<Diagnostic>), SwarmError> {
        let set = PolicySet::parse(text).map_err(SwarmError::Policy)?;
        let Some(slot) = &self.inner.policy else {
            return Err(SwarmError::Policy(PolicyErrors {
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    line: 1,
                    col: 1,
                    message: "this swarm was built without a policy; there is none to replace"
                        .into(),
                    hint: Some("build it with SwarmBuilder::policy_set".into()),
                }],
            }));
        };
        let mut tree = self.inner.tree.write();
        // A policy in force that declares pools must be followed by one that does: a reload
        // without `pools:` would drop them all from the text served while they still bind.
        let declared = slot
            .policy_set()
            .is_some_and(|old| !old.doc().pools.is_empty());
        let (updates, mut problems) = pool_updates(&tree, &set, recovering, declared);
        // Every check before anything changes: the record's size too, so a policy the
        // journal could not hold never puts its pools' limits in force.
        let version = slot.next_version();
        let record = match recovering {
            true => None,
            false => Some(self.policy_record(version, text)?),
        };
        let before: Vec<(Arc<Account>, Limits)> = updates
            .iter()
            .map(|(i, _)| {
                let team = &tree.teams[*i];
                (Arc::clone(&team.account), team.spec.limits.clone())
            })
            .collect();
        if problems.is_empty() {
            problems.extend(set_limits(&tree, &updates, recovering));
        }
        if !problems.is_empty() {
            problems.sort_by_key(|d| (d.line, d.col));
            return Err(SwarmError::Policy(PolicyErrors {
                diagnostics: problems,
            }));
        }
        // Journaled before it is in force, under the tree lock: every decision made under the
        // new version comes after its policy_change in the journal, and concurrent reloads
        // are journaled in version order. A record the journal refuses changes nothing: the
        // limits just set are put back.
        if let Some(payload) = record {
            if let Err(e) = self.submit_policy(payload) {
                let _ = Account::restore_limits_all(&before);
                return Err(e);
            }
        }
        for (i, pool) in updates {
            let team = &mut tree.teams[i];
            team.spec.limits = pool.limits;
            team.spec.cascade = pool.cascade;
            team.spec.breaker = pool.breaker;
            team.spec.restart = pool.restart.unwrap_or_default();
        }
        if let Some(old) = slot.policy_set() {
            set.inherit_rate_limits(&old);
        }
        let warnings = set.warnings().to_vec();
        let stored = slot.store(Arc::new(set));
        debug_assert_eq!(stored, version, "policies are stored under the tree lock");
        *self.inner.policy_text.lock() = Some(text.to_string());
        drop(tree);
        Ok((version, warnings))
    }

    /// Journals `text` as the policy in force at `version` (no-op without a journal).
    ///
    /// # Errors
    /// As [`policy_record`](Self::policy_record) and [`submit_policy`](Self::submit_policy).
    pub(super) fn record_policy(&self, version: u64, text: &str) -> Result<(), SwarmError> {
        let payload = self.policy_record(version, text)?;
        self.submit_policy(payload)
    }

    /// The journal entry's payload of `text` as the policy at `version`: `None` without a
    /// journal.
    ///
    /// # Errors
    /// A policy whose record is larger than a journal entry may be (JSON escaping can make a
    /// policy under the 1 MiB policy limit larger than that) is refused as invalid.
    fn policy_record(&self, version: u64, text: &str) -> Result<Option<Vec<u8>>, SwarmError> {
        if self.inner.journal.get().is_none() {
            return Ok(None);
        }
        let record = PolicyRecord {
            version,
            hash: PolicyRecord::hash_of(text),
            text: text.to_string(),
            by: String::new(),
        };
        let payload =
            serde_json::to_vec(&record).map_err(|e| SwarmError::Journal(e.to_string()))?;
        if payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(SwarmError::Policy(PolicyErrors {
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    line: 1,
                    col: 1,
                    message: format!(
                        "the policy is {} bytes once journaled (quotes and control characters are escaped); a journal entry holds at most {ENTRY_PAYLOAD_BYTES_MAX}",
                        payload.len()
                    ),
                    hint: Some("shorten the policy (comments count too)".into()),
                }],
            }));
        }
        Ok(Some(payload))
    }

    /// Submits a [`policy_record`](Self::policy_record) payload (nothing for `None`).
    ///
    /// # Errors
    /// A record the journal refuses fails the journal.
    fn submit_policy(&self, payload: Option<Vec<u8>>) -> Result<(), SwarmError> {
        let (Some(payload), Some((journal, _))) = (payload, self.inner.journal.get()) else {
            return Ok(());
        };
        let at = self.inner.clock.now_ms();
        journal
            .submit(EntryKind::PolicyChange, at, payload)
            .map(|_| ())
            .map_err(|e| {
                journal.fail(format!("a policy_change entry was refused: {e}"));
                SwarmError::Journal(e.to_string())
            })
    }

    /// Installs a journaled policy as recovery does: pool limits unchecked, missing pools
    /// skipped, the journaled version kept.
    pub(super) fn restore_policy(&self, p: &PolicyRecord) -> Result<(), SwarmError> {
        self.install_policy(&p.text, true)
            .map_err(|e| SwarmError::Recovery(format!("policy version {}: {e}", p.version)))?;
        if let Some(slot) = &self.inner.policy {
            slot.set_version(p.version);
        }
        Ok(())
    }
}

/// Matches the new policy's pools to the running pools: the updates to make (pool index,
/// pool), and the problems (a pool added or removed while running, unless `recovering`). A
/// new policy without pools keeps the running ones when the policy in force declared none
/// either (`declared`: the pool tree came from the builder); otherwise every pool is missing.
fn pool_updates(
    tree: &Tree,
    set: &PolicySet,
    recovering: bool,
    declared: bool,
) -> (Vec<(usize, PoolDef)>, Vec<Diagnostic>) {
    let mut problems = Vec::new();
    let mut updates = Vec::new();
    for pool in &set.doc().pools {
        match tree.by_path.get(&pool.path) {
            // Recovery replays the policies of the past over today's pool tree: pools
            // that no longer exist are skipped.
            None if recovering => {}
            None => problems.push(Diagnostic {
                severity: Severity::Error,
                line: pool.pos.line,
                col: pool.pos.col,
                message: format!("pool {} does not exist in the running swarm; pools cannot be added while it runs", pool.path),
                hint: Some("restart with the new policy to change the pool tree".into()),
            }),
            Some(&i) => updates.push((i, pool.clone())),
        }
    }
    if (declared || !set.doc().pools.is_empty()) && !recovering {
        let mut missing: Vec<&String> = tree
            .by_path
            .keys()
            .filter(|path| !set.doc().pools.iter().any(|p| &p.path == *path))
            .collect();
        missing.sort();
        for path in missing {
            problems.push(Diagnostic {
                severity: Severity::Error,
                line: 1,
                col: 1,
                message: format!(
                    "pool {path} is missing; pools cannot be removed while the swarm runs"
                ),
                hint: Some(format!("keep `- {{path: {path}}}` in `pools:`")),
            });
        }
    }
    (updates, problems)
}

/// Sets every updated pool's limits at once or not at all: every pool account is locked,
/// checked against what it has spent and reserved (unless `recovering`), and only then set.
fn set_limits(tree: &Tree, updates: &[(usize, PoolDef)], recovering: bool) -> Option<Diagnostic> {
    let changes: Vec<(Arc<Account>, Limits)> = updates
        .iter()
        .map(|(i, pool)| (Arc::clone(&tree.teams[*i].account), pool.limits.clone()))
        .collect();
    let changed = if recovering {
        Account::restore_limits_all(&changes)
    } else {
        Account::set_limits_all(&changes)
    };
    let msg = changed.err()?;
    let at = updates
        .iter()
        .find(|(_, p)| msg.starts_with(&format!("{}:", p.path)))
        .map_or(Pos { line: 1, col: 1 }, |(_, p)| p.pos);
    Some(Diagnostic {
        severity: Severity::Error,
        line: at.line,
        col: at.col,
        message: format!("pool {msg}"),
        hint: Some("raise the limit, or let the reservations settle first (on a running node: wait, or halt the agents holding them, then reload; at start: start with the policy in force, then reload)".into()),
    })
}
