//! Pools shared between nodes: the escrow ceilings of their accounts and the journaled escrow
//! states (see `warden_sync::escrow`). The swarm itself never decides where rights go: the
//! node's replica does, through [`SwarmLedger`], and journals each state it must not lose
//! through [`Swarm::record_escrow`] before the state leaves the node.

use std::collections::BTreeMap;

use warden_actors::Dimension;
use warden_sync::{Escrow, LocalLedger};

use super::{Swarm, SwarmError};
use crate::journal::records::Note;

/// The escrow states known to the swarm: recovered from the journal, then as recorded.
pub(super) type EscrowStates = BTreeMap<(String, String), Escrow>;

/// Reads a replicated pool dimension's name (`steps`, `tokens`, `cost_usd`, `risk`, or a
/// custom dimension): the additive dimensions a ledger limits.
pub fn escrow_dimension(name: &str) -> Option<Dimension> {
    match name {
        "steps" => Some(Dimension::Steps),
        "tokens" => Some(Dimension::Tokens),
        "cost_usd" => Some(Dimension::CostUsd),
        "risk" => Some(Dimension::Risk),
        "wall_time" | "failures" | "exploration" => None,
        other => warden_actors::budget::CustomDim::new(other)
            .ok()
            .map(Dimension::Custom),
    }
}

impl Swarm {
    /// Sets the escrow ceiling of `pool`'s `dim` (see [`Account::set_ceiling`]). `false`: no
    /// such pool, or (`strict`) more than `ceiling` is in use there.
    ///
    /// [`Account::set_ceiling`]: warden_actors::Account::set_ceiling
    pub fn set_escrow_ceiling(
        &self,
        pool: &str,
        dim: &Dimension,
        ceiling: u64,
        strict: bool,
    ) -> bool {
        let tree = self.inner.tree.read();
        match tree.by_path.get(pool) {
            Some(&i) => tree.teams[i]
                .account
                .set_ceiling(dim, Some(ceiling), strict),
            None => false,
        }
    }

    /// Everything reservations ever asked of `pool` in `dim` (0 for an unknown pool).
    pub fn pool_asked(&self, pool: &str, dim: &Dimension) -> u64 {
        let tree = self.inner.tree.read();
        tree.by_path
            .get(pool)
            .map_or(0, |&i| tree.teams[i].account.asked_in(dim))
    }

    /// What `pool` holds reserved or spent in `dim` now (0 for an unknown pool).
    pub fn pool_used(&self, pool: &str, dim: &Dimension) -> u64 {
        let tree = self.inner.tree.read();
        tree.by_path
            .get(pool)
            .map_or(0, |&i| tree.teams[i].account.used_in(dim))
    }

    /// Journals a replicated pool dimension's escrow state (rights received, given, granted,
    /// reclaimed) and returns its sequence number: wait for it to be durable
    /// ([`Swarm::durable`]) before the state leaves the node. Snapshots repeat the last state
    /// of each, and recovery gives them back ([`Swarm::escrow_states`]).
    ///
    /// # Errors
    /// No journal attached, or the journal refused the entry.
    pub fn record_escrow(&self, pool: &str, dim: &str, state: &Escrow) -> Result<(), SwarmError> {
        let key = (pool.to_owned(), dim.to_owned());
        self.inner.escrow.lock().insert(key, state.clone());
        let note = Note::Escrow {
            pool: pool.to_owned(),
            dim: dim.to_owned(),
            state: state.clone(),
        };
        self.inner.note(&note);
        match self.journal_failure() {
            Some(why) => Err(SwarmError::Journal(why)),
            None => Ok(()),
        }
    }

    /// The cluster members journaled (`None`: never recorded).
    pub fn cluster_members(&self) -> Option<Vec<String>> {
        self.inner.cluster_members.lock().clone()
    }

    /// Journals the cluster's members (sorted names), unless the same were recorded already.
    ///
    /// # Errors
    /// The journal refused the entry.
    pub fn record_cluster_members(&self, members: &[String]) -> Result<(), SwarmError> {
        let mut slot = self.inner.cluster_members.lock();
        if slot.as_deref() == Some(members) {
            return Ok(());
        }
        *slot = Some(members.to_vec());
        drop(slot);
        self.inner.note(&Note::ClusterMembers {
            members: members.to_vec(),
        });
        match self.journal_failure() {
            Some(why) => Err(SwarmError::Journal(why)),
            None => Ok(()),
        }
    }

    /// The last escrow state of every replicated pool dimension: recovered from the journal
    /// at start, then as recorded since.
    pub fn escrow_states(&self) -> Vec<(String, String, Escrow)> {
        self.inner
            .escrow
            .lock()
            .iter()
            .map(|((p, d), e)| (p.clone(), d.clone(), e.clone()))
            .collect()
    }

    /// Recovery: the escrow state a journal entry recorded.
    pub(super) fn restore_escrow(&self, pool: String, dim: String, state: Escrow) {
        self.inner.escrow.lock().insert((pool, dim), state);
    }
}

/// The swarm's pool accounts as the replica's ledger: what a replicated pool dimension holds
/// reserved or spent, and its escrow ceiling.
#[derive(Clone)]
pub struct SwarmLedger {
    swarm: Swarm,
}

impl SwarmLedger {
    /// The ledger of `swarm`.
    pub fn new(swarm: Swarm) -> Self {
        Self { swarm }
    }
}

impl LocalLedger for SwarmLedger {
    fn used(&self, pool: &str, dim: &str) -> u64 {
        escrow_dimension(dim).map_or(0, |d| self.swarm.pool_used(pool, &d))
    }

    fn asked(&self, pool: &str, dim: &str) -> u64 {
        escrow_dimension(dim).map_or(0, |d| self.swarm.pool_asked(pool, &d))
    }

    fn set_ceiling(&self, pool: &str, dim: &str, ceiling: u64, strict: bool) -> bool {
        escrow_dimension(dim)
            .is_some_and(|d| self.swarm.set_escrow_ceiling(pool, &d, ceiling, strict))
    }
}
