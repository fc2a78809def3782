//! Escrow pools: one replicated pool dimension as a bounded counter among the members.
//!
//! The approach is Balegas et al., "Putting consistency back into eventual consistency"
//! (EuroSys 2015) — Antidote's bounded counter: the pool's limit is split into **rights**;
//! a node spends only rights it holds, rights move between nodes by transfer, and every
//! replicated entry has exactly one writer and only grows (or is a register versioned by its
//! one writer), so merge is entry-wise max and Σ spent ≤ limit holds under any partition.
//!
//! # State (every entry has one writer)
//! | entry | writer | merge |
//! |---|---|---|
//! | `transfers[i][j]`: rights `i` gave `j`, cumulative | `i` | max |
//! | `used[i]`: what `i` holds reserved or spent now | `i` | higher version |
//! | `asks[i]`: `i`'s demand (units/s), the cap it wants, rights it wants (offline) | `i` | higher version |
//! | `grants[i]`: the cap `i` may consume up to, the lease, the epoch | heir(`i`) | higher version |
//! | `reclaimed[i]`: rights heir(`i`) took back from `i`, cumulative | heir(`i`) | max |
//!
//! With `share(i)` the initial split of the limit (equal, the remainder to the first members):
//! - `inflow(i) = share(i) + Σ_j transfers[j][i] + Σ_{w: heir(w) = i} reclaimed[w]`
//! - `outflow(i) = used[i] + Σ_j transfers[i][j]` (what `i` consumed or gave away)
//! - `held(i) = inflow(i) − Σ_j transfers[i][j] − reclaimed[i]`; Σ_i held(i) = limit exactly.
//! - `i` admits a reservation or a transfer only while `outflow(i) ≤ min(cap(i), inflow(i) − reclaimed[i])`
//!   ([`Escrow::room`]) — in its own view, which may lag but never overstates its rights.
//!
//! # Beyond Antidote
//! - **Rights move before they are needed**: every node advertises its demand; a node holding
//!   more than its demand-proportional target gives the surplus to the neediest node
//!   ([`Escrow::rebalance`]), with hysteresis, so a node rarely has to ask at the moment it runs dry.
//! - **Offline**: a node about to lose its link asks for rights (`want_rights`) and a cap over all
//!   it holds with a long lease (`warden cluster prepare-offline`).
//! - **Reclamation through epoch-fenced leases**: the heir of `i` (the next member in name order)
//!   grants `i` its **cap**, a bound on `outflow(i)`. Rights of `i` above its cap can never be
//!   consumed by `i`, so the heir may take them back ([`Escrow::reclaim`]) — it does so only when
//!   it has not heard from `i` for the lease plus the maximum clock-rate drift plus a margin
//!   (the replica decides when), and bumps `i`'s epoch so `i`, when it returns, sees that it
//!   was fenced. Why it cannot overspend: let `R = inflow_h(i) − cap(i)` be what heir `h` reclaims,
//!   where `inflow_h(i) ≤ inflow(i)` (the heir's view lags, entries only grow) and `cap(i)` is the
//!   highest cap ever granted to `i` (only `h` grants; after reclaiming, never above
//!   `inflow_h(i) − reclaimed[i]`, since `i` may consume up to its cap before it hears).
//!   Then `held(i) − used(i) = inflow(i) − outflow(i) − R ≥ inflow(i) − cap(i) − inflow_h(i) + cap(i) ≥ 0`.
//!   The bound rests on the cap, not on clocks: a holder whose clock runs wild still never spends
//!   beyond its cap, and the timing only keeps a heir from taking the parked rights of a node
//!   that is merely slow. The assumption the issue names (the holder stops when its lease expires
//!   on its own monotonic clock; peers wait lease × (1 + ρ)/(1 − ρ) + margin) is kept as a second
//!   line for the lease the holder asked for, never needed for the bound.
//!
//! All amounts are the ledger's integer units (`steps`, `tokens`, micro-USD, micro-risk, custom).

use serde::{Deserialize, Serialize};

use crate::members::NodeIx;

/// A register written by one node: the higher version wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Bumped by the writer at every change.
    pub version: u64,
    /// The value at that version.
    pub value: T,
}

impl<T: Clone + Ord> Versioned<T> {
    /// The higher `(version, value)` wins: a total order, so merge is a join even when a
    /// writer that restarted without its last version reused one with another value (the
    /// writer's next change, one version up, then wins everywhere).
    fn merge(&mut self, other: &Self) -> bool {
        if (other.version, &other.value) > (self.version, &self.value) {
            *self = other.clone();
            true
        } else {
            false
        }
    }

    fn set(&mut self, value: T) {
        self.version += 1;
        self.value = value;
    }
}

/// What a node asks of the others for one pool dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ask {
    /// Its recent demand, units per second (an exponentially weighted rate).
    pub demand_per_s: u64,
    /// The cap it wants its heir to grant (a bound on its outflow).
    pub want_cap: u64,
    /// Rights it wants beyond what it holds (preparing to go offline), 0 otherwise.
    pub want_rights: u64,
    /// The lease it wants for that cap, milliseconds (long when going offline).
    pub lease_ms: u64,
}

/// A cap granted by a node's heir.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    /// Bumped by each reclamation: a holder that sees a new epoch knows it was fenced.
    pub epoch: u32,
    /// The bound on the holder's outflow (never lowered).
    pub cap: u64,
    /// How long the heir will wait, after last hearing from the holder, before reclaiming, ms.
    pub lease_ms: u64,
}

/// Why a transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    /// More than the node may still consume.
    #[error("only {room} rights are free to give, {asked} were asked")]
    NoRoom {
        /// What was asked.
        asked: u64,
        /// What is free.
        room: u64,
    },
    /// To itself or to a node that is not a member.
    #[error("no transfer from node {from} to node {to}")]
    BadTarget {
        /// The giver.
        from: NodeIx,
        /// The receiver asked for.
        to: NodeIx,
    },
}

/// The heir of `ix` in a cluster of `n`: the next member around the ring (the rule
/// [`crate::Members::heir`] uses too). `None` when `n < 2`.
pub fn heir_of(ix: NodeIx, n: usize) -> Option<NodeIx> {
    (n > 1).then(|| ((usize::from(ix) + 1) % n) as NodeIx)
}

/// One replicated pool dimension. See the module documentation for the state and the rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    limit: u64,
    transfers: Vec<Vec<u64>>,
    used: Vec<Versioned<u64>>,
    asks: Vec<Versioned<Ask>>,
    grants: Vec<Versioned<Grant>>,
    reclaimed: Vec<u64>,
}

fn clamp(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

impl Escrow {
    /// A pool dimension with `limit` split among `n` members; each may consume up to
    /// `initial_cap_permille`/1000 of its share before its heir has granted it anything (the
    /// genesis cap: what a node may spend having never talked to a peer).
    ///
    /// # Panics
    /// If `n` is 0 (a cluster always has this node).
    pub fn new(limit: u64, n: usize, initial_cap_permille: u16) -> Self {
        assert!(n > 0, "a cluster has at least one member");
        let mut e = Self {
            limit,
            transfers: vec![vec![0; n]; n],
            used: vec![Versioned::default(); n],
            asks: vec![Versioned::default(); n],
            grants: vec![Versioned::default(); n],
            reclaimed: vec![0; n],
        };
        let permille = u128::from(initial_cap_permille.min(1000));
        for i in 0..n {
            let cap = if n == 1 {
                limit
            } else {
                clamp(u128::from(e.share(i as NodeIx)) * permille / 1000)
            };
            e.grants[i].value.cap = cap;
        }
        e
    }

    /// The pool dimension's limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The number of members.
    pub fn members(&self) -> usize {
        self.used.len()
    }

    /// `i`'s part of the initial split: `limit / n`, one more for the first `limit % n`.
    pub fn share(&self, i: NodeIx) -> u64 {
        let n = self.members() as u64;
        self.limit / n + u64::from(u64::from(i) < self.limit % n)
    }

    fn given(&self, i: NodeIx) -> u128 {
        self.transfers[usize::from(i)]
            .iter()
            .map(|&t| u128::from(t))
            .sum()
    }

    /// Rights that ever reached `i`: its share, transfers to it, what it reclaimed as heir.
    pub fn inflow(&self, i: NodeIx) -> u64 {
        let n = self.members();
        let received: u128 = self
            .transfers
            .iter()
            .map(|row| u128::from(row[usize::from(i)]))
            .sum();
        let reclaimed: u128 = (0..n as NodeIx)
            .filter(|&w| heir_of(w, n) == Some(i))
            .map(|w| u128::from(self.reclaimed[usize::from(w)]))
            .sum();
        clamp(u128::from(self.share(i)) + received + reclaimed)
    }

    /// What `i` consumed or gave away: `used(i) + Σ transfers from i`.
    pub fn outflow(&self, i: NodeIx) -> u64 {
        clamp(u128::from(self.used(i)) + self.given(i))
    }

    /// The rights `i` holds: inflow − given − reclaimed (0 if the view is inconsistent).
    pub fn held(&self, i: NodeIx) -> u64 {
        let out = self.given(i) + u128::from(self.reclaimed[usize::from(i)]);
        clamp(u128::from(self.inflow(i)).saturating_sub(out))
    }

    /// What `i` holds reserved or spent now, as last reported.
    pub fn used(&self, i: NodeIx) -> u64 {
        self.used[usize::from(i)].value
    }

    /// `i`'s free rights, ignoring its cap: `held − used`.
    pub fn available(&self, i: NodeIx) -> u64 {
        self.held(i).saturating_sub(self.used(i))
    }

    /// The grant `i` holds.
    pub fn grant(&self, i: NodeIx) -> Grant {
        self.grants[usize::from(i)].value
    }

    /// What `i` asked for.
    pub fn ask(&self, i: NodeIx) -> Ask {
        self.asks[usize::from(i)].value
    }

    /// Rights heir(`i`) took back from `i`, cumulative.
    pub fn reclaimed(&self, i: NodeIx) -> u64 {
        self.reclaimed[usize::from(i)]
    }

    /// How much more `i` may consume (reserve or give away) in this view:
    /// `min(cap, inflow − reclaimed) − outflow`, never below 0.
    pub fn room(&self, i: NodeIx) -> u64 {
        let ceiling = self
            .grant(i)
            .cap
            .min(self.inflow(i).saturating_sub(self.reclaimed(i)));
        ceiling.saturating_sub(self.outflow(i))
    }

    /// The most `i` may hold reserved or spent: `min(cap, inflow − reclaimed) − given` (the
    /// ledger's limit for this pool dimension on node `i`; `room = ceiling − used`).
    pub fn ceiling(&self, i: NodeIx) -> u64 {
        let top = self
            .grant(i)
            .cap
            .min(self.inflow(i).saturating_sub(self.reclaimed(i)));
        clamp(u128::from(top).saturating_sub(self.given(i)))
    }

    /// Whether a state read from a peer has this pool dimension's shape (member count, limit,
    /// square matrix): anything else is refused before merging.
    pub fn same_shape(&self, other: &Escrow) -> bool {
        let n = self.members();
        other.limit == self.limit
            && other.used.len() == n
            && other.asks.len() == n
            && other.grants.len() == n
            && other.reclaimed.len() == n
            && other.transfers.len() == n
            && other.transfers.iter().all(|row| row.len() == n)
    }

    /// Records what `me` holds reserved or spent now (its ledger's `reserved + spent`).
    /// Returns whether it changed.
    pub fn set_used(&mut self, me: NodeIx, used: u64) -> bool {
        let entry = &mut self.used[usize::from(me)];
        if entry.value == used {
            return false;
        }
        entry.set(used);
        true
    }

    /// Records what `me` asks for. Returns whether it changed.
    pub fn set_ask(&mut self, me: NodeIx, ask: Ask) -> bool {
        let entry = &mut self.asks[usize::from(me)];
        if entry.value == ask {
            return false;
        }
        entry.set(ask);
        true
    }

    /// Gives `amount` of `from`'s free rights to `to`.
    ///
    /// # Errors
    /// [`EscrowError::NoRoom`] beyond [`Escrow::room`]; [`EscrowError::BadTarget`] for itself
    /// or a non-member.
    pub fn transfer(&mut self, from: NodeIx, to: NodeIx, amount: u64) -> Result<(), EscrowError> {
        if from == to || usize::from(to) >= self.members() {
            return Err(EscrowError::BadTarget { from, to });
        }
        let room = self.room(from);
        if amount > room {
            return Err(EscrowError::NoRoom {
                asked: amount,
                room,
            });
        }
        let cell = &mut self.transfers[usize::from(from)][usize::from(to)];
        *cell = cell.saturating_add(amount);
        Ok(())
    }

    /// The grant heir `me` would give its ward `i` now: the cap `i` asked for (never below
    /// the cap it already has), with the lease asked for bounded by `max_lease_ms`. Once the
    /// heir has reclaimed from `i`, the cap is also bounded by what `i` holds in the heir's
    /// view: `i` may not have heard of the reclamation yet, and its cap is then all that
    /// bounds it. Before any reclamation a cap above what `i` holds is harmless (a
    /// reclamation takes only what lies above the highest cap). `None` when `me` is not
    /// `i`'s heir or nothing would change.
    pub fn grant_for(&self, me: NodeIx, i: NodeIx, max_lease_ms: u64) -> Option<Grant> {
        if heir_of(i, self.members()) != Some(me) {
            return None;
        }
        let now = self.grant(i);
        let ask = self.ask(i);
        let ceiling = match self.reclaimed(i) {
            0 => u64::MAX,
            r => self.inflow(i).saturating_sub(r),
        };
        let cap = ask.want_cap.min(ceiling).max(now.cap);
        let lease_ms = ask.lease_ms.min(max_lease_ms);
        let next = Grant {
            epoch: now.epoch,
            cap,
            lease_ms,
        };
        (next != now).then_some(next)
    }

    /// Heir `me` writes a grant for its ward `i` (from [`Escrow::grant_for`]).
    ///
    /// # Panics
    /// If `me` is not `i`'s heir or the cap would go down (both break the bound's proof).
    pub fn write_grant(&mut self, me: NodeIx, i: NodeIx, grant: Grant) {
        assert_eq!(heir_of(i, self.members()), Some(me), "only the heir grants");
        let entry = &mut self.grants[usize::from(i)];
        assert!(grant.cap >= entry.value.cap, "a cap is never lowered");
        assert!(grant.epoch >= entry.value.epoch, "an epoch never goes back");
        entry.set(grant);
    }

    /// Heir `me` takes back every right of its ward `i` above `i`'s cap, and fences `i`'s epoch.
    /// Returns the rights taken now (0 when there is nothing above the cap).
    ///
    /// # Panics
    /// If `me` is not `i`'s heir.
    pub fn reclaim(&mut self, me: NodeIx, i: NodeIx) -> u64 {
        assert_eq!(
            heir_of(i, self.members()),
            Some(me),
            "only the heir reclaims"
        );
        let cap = self.grant(i).cap;
        let target = self.inflow(i).saturating_sub(cap);
        let before = self.reclaimed(i);
        if target <= before {
            return 0;
        }
        self.reclaimed[usize::from(i)] = target;
        let mut grant = self.grant(i);
        grant.epoch += 1;
        grant.lease_ms = 0;
        self.grants[usize::from(i)].set(grant);
        target - before
    }

    /// The transfer `me` should make now to move rights where demand is: every node's target
    /// is its share of all free rights in proportion to its demand (plus an equal base, so idle
    /// nodes keep some), raised to what it asked for when going offline. `me` gives the
    /// neediest node that `reachable` accepts at most its own surplus and no more than the
    /// receiver can use under the cap it holds or asked for, and only when both the surplus
    /// and the need are at least `min_transfer` and a quarter of the targets (hysteresis: no
    /// ping-pong).
    pub fn rebalance(
        &self,
        me: NodeIx,
        min_transfer: u64,
        reachable: impl Fn(NodeIx) -> bool,
    ) -> Option<(NodeIx, u64)> {
        let n = self.members();
        let free: Vec<u128> = (0..n as NodeIx)
            .map(|i| u128::from(self.available(i)))
            .collect();
        let total: u128 = free.iter().sum();
        // Offline requests come first; the rest is shared in proportion to demand, plus an
        // equal base so idle nodes keep some.
        let wants: Vec<u128> = (0..n as NodeIx)
            .map(|i| u128::from(self.ask(i).want_rights))
            .collect();
        let rest = total.saturating_sub(wants.iter().sum());
        let demand: Vec<u128> = (0..n as NodeIx)
            .map(|i| u128::from(self.ask(i).demand_per_s))
            .collect();
        let base = (demand.iter().sum::<u128>() / (10 * n as u128)).max(1);
        let weight = |i: usize| if wants[i] > 0 { 0 } else { demand[i] + base };
        let weight_sum: u128 = (0..n).map(weight).sum::<u128>().max(1);
        let target = |i: usize| -> u128 {
            if wants[i] > 0 {
                wants[i]
            } else {
                rest * weight(i) / weight_sum
            }
        };
        // What `j` could use of more rights: up to the cap it holds (a node whose heir is
        // gone cannot raise it: rights beyond would sit there unused).
        let usable = |j: NodeIx| -> u128 {
            let cap = self.grant(j).cap;
            let held = self.inflow(j).saturating_sub(self.reclaimed(j));
            u128::from(cap.saturating_sub(held))
        };
        let me_ix = usize::from(me);
        if self.ask(me).want_rights > 0 {
            return None; // going offline: keep everything
        }
        let surplus = free[me_ix].saturating_sub(target(me_ix));
        let (neediest, need) = (0..n)
            .filter(|&j| j != me_ix && reachable(j as NodeIx))
            .map(|j| {
                let need = target(j).saturating_sub(free[j]);
                (j, need.min(usable(j as NodeIx)))
            })
            .max_by_key(|&(j, need)| (need, std::cmp::Reverse(j)))?;
        let amount = surplus.min(need);
        let threshold = u128::from(min_transfer).max(target(neediest) / 4);
        if amount == 0 || amount < threshold || surplus < target(me_ix) / 4 {
            return None;
        }
        let amount = clamp(amount).min(self.room(me));
        (amount > 0).then_some((neediest as NodeIx, amount))
    }

    /// Merges another replica's view entry-wise (max, or the higher version). Returns whether
    /// anything changed here.
    ///
    /// # Panics
    /// If the two views have different member counts or limits (the handshake refuses such
    /// peers before any state is merged).
    pub fn merge(&mut self, other: &Escrow) -> bool {
        assert_eq!(self.members(), other.members(), "member counts differ");
        assert_eq!(self.limit, other.limit, "limits differ");
        let mut changed = false;
        for (mine, theirs) in self.transfers.iter_mut().zip(&other.transfers) {
            for (a, &b) in mine.iter_mut().zip(theirs) {
                if b > *a {
                    *a = b;
                    changed = true;
                }
            }
        }
        for (a, &b) in self.reclaimed.iter_mut().zip(&other.reclaimed) {
            if b > *a {
                *a = b;
                changed = true;
            }
        }
        for (a, b) in self.used.iter_mut().zip(&other.used) {
            changed |= a.merge(b);
        }
        for (a, b) in self.asks.iter_mut().zip(&other.asks) {
            changed |= a.merge(b);
        }
        for (a, b) in self.grants.iter_mut().zip(&other.grants) {
            changed |= a.merge(b);
        }
        changed
    }

    /// Σ of every node's held rights; equals the limit in any view that has seen all entries
    /// (transfers and reclamations only move rights). A check for tests and the simulator.
    pub fn total_held(&self) -> u128 {
        (0..self.members() as NodeIx)
            .map(|i| u128::from(self.held(i)))
            .sum()
    }
}

#[cfg(test)]
mod tests;
