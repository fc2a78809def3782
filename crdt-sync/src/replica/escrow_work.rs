//! The escrow's periodic work (demand, asks, grants, rebalancing, reclamation) and the merge
//! of a peer's pool state.

use super::*;

impl<L: LocalLedger> Replica<L> {
    /// Runs the escrow work for every replicated pool dimension, if it is due.
    pub(super) fn escrow_work(&mut self, now_ms: u64) {
        if now_ms < self.next_escrow_ms {
            return;
        }
        let elapsed_ms = (now_ms - self.next_escrow_ms + self.cfg.timing.escrow_ms).max(1);
        self.next_escrow_ms = now_ms + self.cfg.timing.escrow_ms;
        let keys: Vec<_> = self.escrow.keys().cloned().collect();
        for key in keys {
            self.sample_demand(&key, elapsed_ms);
            self.refresh_used(&key);
            if self.held_back.contains(&key) {
                continue; // no grant, reclaim or gift from a view that may have lost its rows
            }
            self.update_ask(&key);
            self.grant_wards(&key);
            self.reclaim_silent_wards(&key, now_ms);
            self.rebalance(&key);
        }
    }

    /// Folds the demand since the last sample (what the ledger was asked, admitted or not,
    /// and what was noted) into the smoothed rate (weight ¼).
    fn sample_demand(&mut self, key: &(String, String), elapsed_ms: u64) {
        let asked = self.ledger.asked(&key.0, &key.1);
        let d = self
            .demand
            .get_mut(key)
            .expect("a demand per pool dimension");
        let new = asked.saturating_sub(d.asked_seen);
        d.asked_seen = asked;
        let pending = std::mem::take(&mut d.pending).saturating_add(new);
        let rate = u128::from(pending) * 1000 / u128::from(elapsed_ms);
        let rate = u64::try_from(rate).unwrap_or(u64::MAX);
        d.rate_per_s = d.rate_per_s - d.rate_per_s / 4 + rate / 4;
        if d.rate_per_s == 0 && rate > 0 {
            d.rate_per_s = 1;
        }
    }

    fn refresh_used(&mut self, key: &(String, String)) {
        let used = self.ledger.used(&key.0, &key.1);
        let me = self.me();
        if self
            .escrow
            .get_mut(key)
            .expect("known key")
            .set_used(me, used)
        {
            self.touch(ItemKey::Escrow(key.0.clone(), key.1.clone()));
        }
    }

    /// Asks the heir for a cap one float ahead of the outflow (everything held when going
    /// offline), and advertises the demand.
    fn update_ask(&mut self, key: &(String, String)) {
        let me = self.me();
        let e = &self.escrow[key];
        let d = &self.demand[key];
        let genesis =
            u128::from(e.share(me)) * u128::from(self.cfg.tuning.initial_cap_permille) / 1000;
        let by_demand =
            u128::from(d.rate_per_s) * u128::from(self.cfg.tuning.float_window_ms) / 1000;
        let float = u64::try_from(genesis.max(by_demand)).unwrap_or(u64::MAX);
        let (want_rights, lease_ms, want_cap) = match d.offline {
            Some((want, lease)) => (want, lease, u64::MAX),
            None => (
                0,
                self.cfg.timing.lease_ms,
                e.outflow(me).saturating_add(float),
            ),
        };
        let ask = Ask {
            demand_per_s: d.rate_per_s,
            want_cap,
            want_rights,
            lease_ms,
        };
        if ask.differs_much(&e.ask(me), float / 4) {
            self.escrow
                .get_mut(key)
                .expect("known key")
                .set_ask(me, ask);
            self.touch(ItemKey::Escrow(key.0.clone(), key.1.clone()));
        }
    }

    /// As heir, grants each ward the cap it asked for (within what it holds in this view).
    fn grant_wards(&mut self, key: &(String, String)) {
        let me = self.me();
        let wards: Vec<NodeIx> = self.cfg.members.wards(me).collect();
        for ward in wards {
            let e = self.escrow.get_mut(key).expect("known key");
            if let Some(grant) = e.grant_for(me, ward, self.cfg.timing.max_offline_ms) {
                e.write_grant(me, ward, grant);
                self.changed_own(key);
            }
        }
    }

    /// As heir, takes back the rights above the cap of a ward silent for longer than its
    /// lease allows (drift and margin included).
    fn reclaim_silent_wards(&mut self, key: &(String, String), now_ms: u64) {
        let me = self.me();
        let wards: Vec<NodeIx> = self.cfg.members.wards(me).collect();
        for ward in wards {
            let heard = self.links[usize::from(ward)]
                .heard_ms
                .unwrap_or(self.started_ms);
            let lease = self.escrow[key]
                .grant(ward)
                .lease_ms
                .max(self.cfg.timing.lease_ms);
            if now_ms.saturating_sub(heard) < self.cfg.timing.reclaim_wait_ms(lease) {
                continue;
            }
            let taken = self
                .escrow
                .get_mut(key)
                .expect("known key")
                .reclaim(me, ward);
            if taken > 0 {
                self.changed_own(key);
                self.apply_ceiling(key);
                self.event(SyncEvent::Reclaimed {
                    pool: key.0.clone(),
                    dim: key.1.clone(),
                    from: ward,
                    amount: taken,
                });
            }
        }
    }

    /// Gives surplus rights to the neediest node: the ledger lowers its ceiling first (and
    /// refuses when the rights are in use), then the transfer is written.
    fn rebalance(&mut self, key: &(String, String)) {
        let me = self.me();
        let e = &self.escrow[key];
        let links = &self.links;
        let up = |j: NodeIx| links[usize::from(j)].session.is_some();
        let Some((to, amount)) = e.rebalance(me, self.cfg.tuning.min_transfer, up) else {
            return;
        };
        let lower = e.ceiling(me) - amount;
        if !self.ledger.set_ceiling(&key.0, &key.1, lower, true) {
            return;
        }
        let e = self.escrow.get_mut(key).expect("known key");
        if e.transfer(me, to, amount).is_err() {
            self.apply_ceiling(key);
            return;
        }
        self.changed_own(key);
        self.event(SyncEvent::RightsGiven {
            pool: key.0.clone(),
            dim: key.1.clone(),
            to,
            amount,
        });
    }

    /// A write of this node's: to persist before it is sent.
    fn changed_own(&mut self, key: &(String, String)) {
        self.persist.insert(key.clone());
        self.touch(ItemKey::Escrow(key.0.clone(), key.1.clone()));
    }

    /// Merges a peer's state of one pool dimension: ceilings, events, persistence.
    pub(super) fn merge_escrow(&mut self, from: NodeIx, pool: &str, dim: &str, state: &Escrow) {
        let key = escrow_key(pool, dim);
        let me = self.me();
        let Some(mine) = self.escrow.get_mut(&key) else {
            return; // not replicated here: the digest makes this a peer of another shape
        };
        if !mine.same_shape(state) {
            let reason = format!("its state of pool {pool} {dim} has another shape");
            self.event(SyncEvent::PeerRefused { peer: from, reason });
            return;
        }
        if self.held_back.remove(&key) {
            // A peer's view arrived: what this node gave before a loss is known again.
            mine.merge(state);
            self.persist.insert(key.clone());
            self.apply_ceiling(&key);
            return;
        }
        let (inflow, grant) = (mine.inflow(me), mine.grant(me));
        let own_row_before = mine.outflow(me).saturating_sub(mine.used(me));
        if !mine.merge(state) {
            return;
        }
        let (inflow_now, grant_now) = (mine.inflow(me), mine.grant(me));
        let own_row_now = mine.outflow(me).saturating_sub(mine.used(me));
        // Rights received, a grant, a fence, or our own rows back from a peer (lost in a
        // crash): all recorded, so a restart recovers the rights exactly.
        if inflow_now != inflow || grant_now != grant || own_row_now != own_row_before {
            self.persist.insert(key.clone());
        }
        self.touch(ItemKey::Escrow(key.0.clone(), key.1.clone()));
        self.apply_ceiling(&key);
        if inflow_now > inflow {
            self.event(SyncEvent::RightsReceived {
                pool: key.0.clone(),
                dim: key.1.clone(),
                amount: inflow_now - inflow,
            });
        }
        if grant_now.epoch > grant.epoch {
            self.event(SyncEvent::Fenced {
                pool: key.0,
                dim: key.1,
                epoch: grant_now.epoch,
            });
        }
    }
}
