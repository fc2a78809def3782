//! The ledger: hierarchical accounts that every spend debits all-or-nothing.
//!
//! An [`Account`] is a pool (`swarm`, `swarm/research`) or an agent's own budget, and knows its
//! parent. [`Account::reserve`] locks the account and every ancestor (always leaf to root, so
//! two reservations can never wait on each other in a cycle), checks that the amount fits
//! everywhere, and only then adds it everywhere. Admission is therefore linearizable: 1,000
//! concurrent steps against a pool with room for 10 admit exactly 10.
//!
//! Spending lives here, not in actor state: an actor that panics and restarts finds the
//! same accounts with the same totals, so a restart never gives spent budget back.
//!
//! Invariant (asserted on every change): for every account and dimension,
//! `spent + reserved <= limit`.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use crate::budget::{Amounts, CustomDim, Dimension, LedgerDim, Limits};

/// Deepest account tree accepted (root = depth 0). Bounds the locks one reservation holds.
pub const MAX_ACCOUNT_DEPTH: usize = 16;

/// Why an account could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum LedgerError {
    /// The tree would be deeper than [`MAX_ACCOUNT_DEPTH`].
    #[error("account {name:?} would sit at depth {depth}; the limit is {MAX_ACCOUNT_DEPTH}")]
    TooDeep { name: String, depth: usize },
}

/// A reservation that did not fit: which account, which dimension, how much was asked and how
/// much was left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The account that was short.
    pub account: Arc<str>,
    /// Its depth: the agent's own account is the deepest on its path.
    pub depth: usize,
    /// The dimension.
    pub dimension: Dimension,
    /// What the step asked for (0: it declared nothing there, but is billed in the
    /// dimension, which has nothing left; see [`Billing`]).
    pub requested: u64,
    /// What was left (limit - spent - reserved).
    pub available: u64,
    /// What would be left once every open reservation is released (limit - spent): zero means
    /// the dimension is used up for good.
    pub unspent: u64,
    /// The account's limit in the dimension (0: the dimension is not granted at all), or its
    /// escrow ceiling when that is lower.
    pub limit: u64,
    /// Whether the escrow ceiling of a replicated pool is what was short (this node's rights,
    /// not the pool: rule `escrow.exhausted`).
    pub escrow: bool,
}

/// Which dimensions a reservation is *billed in* beyond what it asks for: a dimension it is
/// billed in but asks nothing of must still have something left (at least 1) on every
/// account of the path, or the reservation is refused, so an exhausted budget or pool refuses
/// a step whatever it declares. Nothing extra is held, except a floor
/// ([`Billing::with_floor`]) in tokens or money where an account on the path limits them.
///
/// `steps` is asked of every step; `risk` bills only what is asked. Tokens, money and every
/// custom dimension bill unless exempted ([`MinCost::exempt`](crate::step::MinCost::exempt):
/// a configured minimum of exactly 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Billing {
    exempt_tokens: bool,
    exempt_cost: bool,
    exempt_custom: Vec<CustomDim>,
    /// Only what is asked (no dimension billed beyond it): [`Account::reserve`].
    asked_only: bool,
    /// The least reserved in tokens and in micro-USD where an account on the path limits
    /// that dimension (a step that declared nothing there: [`MinCost::billing`](crate::step::MinCost::billing)).
    floor: [u64; 2],
}

impl Billing {
    /// Billed in tokens, money and every custom dimension, except the ones exempted here.
    pub fn new(exempt_tokens: bool, exempt_cost: bool, exempt_custom: Vec<CustomDim>) -> Self {
        Self {
            exempt_tokens,
            exempt_cost,
            exempt_custom,
            asked_only: false,
            floor: [0; 2],
        }
    }

    /// Also raises the reservation to `tokens` and `micro_usd` in each of the two dimensions
    /// that some account on the path limits.
    pub fn with_floor(mut self, tokens: u64, micro_usd: u64) -> Self {
        self.floor = [tokens, micro_usd];
        self
    }

    /// Raises `amounts` to the floor in each dimension `limited` says a budget limits; the
    /// ledger calls it with the path's limits, `policy eval` with the policy's.
    pub fn apply_floor(&self, amounts: &mut Amounts, limited: impl Fn(LedgerDim) -> bool) {
        for (dim, floor) in [LedgerDim::Tokens, LedgerDim::CostMicroUsd]
            .into_iter()
            .zip(self.floor)
        {
            if floor > amounts.get(dim) && limited(dim) {
                amounts.set(dim, floor);
            }
        }
    }

    /// Billed only in what the reservation asks for.
    pub fn asked_only() -> Self {
        Self {
            asked_only: true,
            ..Self::default()
        }
    }

    /// Is a reservation asking nothing of built-in `dim` still billed in it?
    pub fn bills(&self, dim: LedgerDim) -> bool {
        !self.asked_only
            && match dim {
                LedgerDim::Tokens => !self.exempt_tokens,
                LedgerDim::CostMicroUsd => !self.exempt_cost,
                LedgerDim::Steps | LedgerDim::RiskMicro => false,
            }
    }

    /// Is a reservation asking nothing of custom `dim` still billed in it?
    pub fn bills_custom(&self, dim: &CustomDim) -> bool {
        !self.asked_only && !self.exempt_custom.contains(dim)
    }
}

/// What remains, per built-in dimension, on a whole path: the minimum over the agent's account
/// and every pool above it. `None` means no account on the path limits that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining(pub [Option<u64>; 4]);

impl Remaining {
    /// Remaining in one dimension.
    pub fn get(&self, dim: LedgerDim) -> Option<u64> {
        self.0[dim as usize]
    }
}

#[derive(Debug)]
struct AccountState {
    limits: Limits,
    /// The escrow ceilings of a pool replicated between nodes: the rights this node holds
    /// ([`Account::set_ceiling`]); `UNLIMITED` elsewhere. A reservation fits under both.
    ceilings: Limits,
    /// What reservations asked of this account (cumulative): everything admitted, and what
    /// an escrow ceiling here refused (bounded by the bound): the demand a replicated pool's
    /// rights follow. A step refused elsewhere on its path (its own budget) asks nothing here.
    asked: Amounts,
    spent: Amounts,
    reserved: Amounts,
    overrun: Amounts,
}

fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

fn builtin(dim: &Dimension) -> Option<LedgerDim> {
    match dim {
        Dimension::Steps => Some(LedgerDim::Steps),
        Dimension::Tokens => Some(LedgerDim::Tokens),
        Dimension::CostUsd => Some(LedgerDim::CostMicroUsd),
        Dimension::Risk => Some(LedgerDim::RiskMicro),
        _ => None,
    }
}

impl AccountState {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            ceilings: Limits::UNLIMITED,
            asked: Amounts::ZERO,
            spent: Amounts::ZERO,
            reserved: Amounts::ZERO,
            overrun: Amounts::ZERO,
        }
    }

    /// The binding bound of a built-in dimension: the limit or the escrow ceiling.
    fn bound(&self, dim: LedgerDim) -> Option<u64> {
        tighter(self.limits.get(dim), self.ceilings.get(dim))
    }

    fn bound_custom(&self, dim: &CustomDim) -> Option<u64> {
        tighter(self.limits.custom(dim), self.ceilings.custom(dim))
    }

    fn bound_of(&self, dim: &Dimension) -> Option<u64> {
        match (dim, builtin(dim)) {
            (_, Some(d)) => self.bound(d),
            (Dimension::Custom(c), None) => self.bound_custom(c),
            _ => None,
        }
    }

    /// Whether the escrow ceiling, not the limit, is what binds `dim`.
    fn escrow_binds(&self, dim: &Dimension) -> bool {
        let (limit, ceiling) = match (dim, builtin(dim)) {
            (_, Some(d)) => (self.limits.get(d), self.ceilings.get(d)),
            (Dimension::Custom(c), None) => (self.limits.custom(c), self.ceilings.custom(c)),
            _ => (None, None),
        };
        ceiling.is_some_and(|c| limit.is_none_or(|l| c < l))
    }

    fn used_of(&self, dim: &Dimension) -> u64 {
        match (dim, builtin(dim)) {
            (_, Some(d)) => self.spent.get(d).saturating_add(self.reserved.get(d)),
            (Dimension::Custom(c), None) => {
                self.spent.custom(c).saturating_add(self.reserved.custom(c))
            }
            _ => 0,
        }
    }

    fn available(&self, dim: LedgerDim) -> u64 {
        match self.bound(dim) {
            None => u64::MAX,
            Some(limit) => limit
                .saturating_sub(self.spent.get(dim))
                .saturating_sub(self.reserved.get(dim)),
        }
    }

    fn unspent(&self, dim: &Dimension) -> u64 {
        let spent = match (dim, builtin(dim)) {
            (_, Some(d)) => self.spent.get(d),
            (Dimension::Custom(c), None) => self.spent.custom(c),
            _ => 0,
        };
        self.bound_of(dim)
            .map_or(u64::MAX, |l| l.saturating_sub(spent))
    }

    fn limit_of(&self, dim: &Dimension) -> u64 {
        self.bound_of(dim).unwrap_or(u64::MAX)
    }

    fn available_custom(&self, dim: &CustomDim) -> u64 {
        match self.bound_custom(dim) {
            None => u64::MAX,
            Some(limit) => limit
                .saturating_sub(self.spent.custom(dim))
                .saturating_sub(self.reserved.custom(dim)),
        }
    }

    fn check_bound(&self, name: &str) {
        for dim in LedgerDim::ALL {
            if let Some(limit) = self.limits.get(dim) {
                assert!(
                    self.spent.get(dim).saturating_add(self.reserved.get(dim)) <= limit,
                    "ledger bound broken on {name}/{}: spent {} + reserved {} > limit {limit}",
                    dim.name(),
                    self.spent.get(dim),
                    self.reserved.get(dim)
                );
            }
        }
    }
}

/// One node of the budget tree.
#[derive(Debug)]
pub struct Account {
    name: Arc<str>,
    depth: usize,
    parent: Option<Arc<Account>>,
    state: Mutex<AccountState>,
}

/// A point-in-time copy of an account's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    /// The account's name (a pool path or an agent id).
    pub name: Arc<str>,
    /// Its limits.
    pub limits: Limits,
    /// Settled spend.
    pub spent: Amounts,
    /// Reserved by steps still running.
    pub reserved: Amounts,
    /// Settled usage that exceeded what the path could cover and was therefore not counted as
    /// spend (the agent that caused it is halted).
    pub overrun: Amounts,
}

impl AccountSnapshot {
    /// What was really used: `spent + overrun` (settled usage, whether or not the budgets
    /// could cover it). `spent + reserved <= limit` always holds; `used` may exceed the limit
    /// by the overrun.
    pub fn used(&self) -> Amounts {
        self.spent.saturating_add(&self.overrun)
    }

    /// `limit - spent - reserved` for one dimension, `None` when unlimited.
    pub fn remaining(&self, dim: LedgerDim) -> Option<u64> {
        self.limits.get(dim).map(|l| {
            l.saturating_sub(self.spent.get(dim))
                .saturating_sub(self.reserved.get(dim))
        })
    }
}

type Guards<'a> = SmallVec<[MutexGuard<'a, AccountState>; 8]>;

/// Would `limits` hold what `state` has already spent and reserved?
fn fits(state: &AccountState, limits: &Limits) -> Result<(), String> {
    for dim in LedgerDim::ALL {
        if let Some(limit) = limits.get(dim) {
            let used = state.spent.get(dim).saturating_add(state.reserved.get(dim));
            if used > limit {
                return Err(format!(
                    "new {} limit {} is below what is already spent and reserved ({})",
                    dim.name(),
                    dim.show(limit),
                    dim.show(used)
                ));
            }
        }
    }
    for (dim, limit) in limits.custom_entries() {
        let used = state
            .spent
            .custom(dim)
            .saturating_add(state.reserved.custom(dim));
        if used > *limit {
            return Err(format!(
                "new {} limit {limit} is below what is already spent and reserved ({used})",
                dim.as_str()
            ));
        }
    }
    Ok(())
}

/// Whether `amounts` fits on one account of a path (see [`Account::reserve_billed`]).
fn check_account(
    state: &AccountState,
    acc: &Account,
    amounts: &Amounts,
    billing: &Billing,
) -> Result<(), Shortfall> {
    let short = |dimension: Dimension, requested: u64, available: u64| Shortfall {
        account: Arc::clone(&acc.name),
        depth: acc.depth,
        unspent: state.unspent(&dimension),
        limit: state.limit_of(&dimension),
        escrow: state.escrow_binds(&dimension),
        dimension,
        requested,
        available,
    };
    for dim in LedgerDim::ALL {
        let want = amounts.get(dim);
        // Billed but asking nothing: at least 1 must be left.
        let need = if want == 0 && billing.bills(dim) {
            1
        } else {
            want
        };
        if need == 0 {
            continue;
        }
        let available = state.available(dim);
        if need > available {
            return Err(short(dim.into(), want, available));
        }
    }
    for (dim, want) in amounts.custom_entries() {
        let available = state.available_custom(dim);
        if *want > available {
            return Err(short(Dimension::Custom(dim.clone()), *want, available));
        }
    }
    let bounded = state.limits.custom_entries().iter();
    for (dim, _) in bounded.chain(state.ceilings.custom_entries()) {
        if amounts.custom(dim) == 0 && billing.bills_custom(dim) && state.available_custom(dim) == 0
        {
            return Err(short(Dimension::Custom(dim.clone()), 0, 0));
        }
    }
    Ok(())
}

impl Account {
    /// A root account (a swarm's top pool).
    pub fn root(name: impl Into<Arc<str>>, limits: Limits) -> Arc<Account> {
        Arc::new(Account {
            name: name.into(),
            depth: 0,
            parent: None,
            state: Mutex::new(AccountState::new(limits)),
        })
    }

    /// A child account under `self`.
    pub fn child(
        self: &Arc<Self>,
        name: impl Into<Arc<str>>,
        limits: Limits,
    ) -> Result<Arc<Account>, LedgerError> {
        let name = name.into();
        let depth = self.depth + 1;
        if depth >= MAX_ACCOUNT_DEPTH {
            return Err(LedgerError::TooDeep {
                name: name.to_string(),
                depth,
            });
        }
        Ok(Arc::new(Account {
            name,
            depth,
            parent: Some(Arc::clone(self)),
            state: Mutex::new(AccountState::new(limits)),
        }))
    }

    /// The account's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The parent account, if any.
    pub fn parent(&self) -> Option<&Arc<Account>> {
        self.parent.as_ref()
    }

    /// Depth in the tree (root = 0).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Locks this account and its ancestors, leaf to root. A fixed order (strictly decreasing
    /// depth along one path) rules out lock cycles between concurrent reservations.
    fn lock_path(&self) -> (Guards<'_>, SmallVec<[&Account; 8]>) {
        let mut guards = Guards::new();
        let mut accounts = SmallVec::new();
        let mut cur: Option<&Account> = Some(self);
        while let Some(acc) = cur {
            guards.push(acc.state.lock());
            accounts.push(acc);
            cur = acc.parent.as_deref();
        }
        (guards, accounts)
    }

    /// Reserves `amounts` on this account and every ancestor, all or nothing, checking only
    /// the dimensions it asks for ([`Billing::asked_only`]).
    ///
    /// On success the reservation must later be [settled](Account::settle) or
    /// [cancelled](Account::cancel); dropping the returned [`Reservation`] cancels it.
    pub fn reserve(
        self: &Arc<Self>,
        amounts: &Amounts,
    ) -> Result<(Reservation, Remaining), Shortfall> {
        self.reserve_billed(amounts, &Billing::asked_only())
    }

    /// Reserves `amounts` on this account and every ancestor, all or nothing; a dimension
    /// `billing` bills but `amounts` asks nothing of must have something left everywhere on
    /// the path (the step is refused on an exhausted dimension, whatever it declares).
    pub fn reserve_billed(
        self: &Arc<Self>,
        amounts: &Amounts,
        billing: &Billing,
    ) -> Result<(Reservation, Remaining), Shortfall> {
        let (mut guards, accounts) = self.lock_path();
        let floored;
        let amounts = if billing.floor == [0; 2] {
            amounts
        } else {
            let mut a = amounts.clone();
            billing.apply_floor(&mut a, |dim| guards.iter().any(|s| s.bound(dim).is_some()));
            floored = a;
            &floored
        };
        for (i, acc) in accounts.iter().enumerate() {
            if let Err(short) = check_account(&guards[i], acc, amounts, billing) {
                if short.escrow {
                    // Demand refused for want of this node's rights: asked of the pool too
                    // (bounded by its bound, so one outsized step cannot pull every right).
                    let state = &mut guards[i];
                    let bound = state.bound_of(&short.dimension).unwrap_or(0);
                    let mut asked = Amounts::ZERO;
                    if let Some(d) = builtin(&short.dimension) {
                        asked.set(d, short.requested.min(bound));
                    } else if let Dimension::Custom(c) = &short.dimension {
                        asked.set_custom(c.clone(), short.requested.min(bound));
                    }
                    state.asked = state.asked.saturating_add(&asked);
                }
                return Err(short);
            }
        }
        let mut remaining = Remaining::default();
        for (state, acc) in guards.iter_mut().zip(accounts.iter()) {
            state.reserved = state.reserved.saturating_add(amounts);
            state.asked = state.asked.saturating_add(amounts);
            for dim in LedgerDim::ALL {
                if let Some(limit) = state.bound(dim) {
                    let left = limit
                        .saturating_sub(state.spent.get(dim))
                        .saturating_sub(state.reserved.get(dim));
                    let slot = &mut remaining.0[dim as usize];
                    *slot = Some(slot.map_or(left, |r| r.min(left)));
                }
            }
            debug_assert!({
                state.check_bound(&acc.name);
                true
            });
        }
        drop(guards);
        Ok((
            Reservation {
                account: Some(Arc::clone(self)),
                amounts: amounts.clone(),
            },
            remaining,
        ))
    }

    /// Re-creates a reservation that the journal says was taken, without checking limits
    /// (recovery applies what happened; it does not judge again). Only recovery calls this.
    pub fn restore_reservation(self: &Arc<Self>, amounts: &Amounts) -> Reservation {
        let (mut guards, _) = self.lock_path();
        for state in guards.iter_mut() {
            state.reserved = state.reserved.saturating_add(amounts);
        }
        drop(guards);
        Reservation {
            account: Some(Arc::clone(self)),
            amounts: amounts.clone(),
        }
    }

    /// Settles a reservation with the real usage `actual`. The reserved amount is released; the
    /// actual amount is charged. Usage above the reservation is charged only as far as every
    /// account on the path still has room, all or nothing per dimension; what does not fit is
    /// recorded as overrun and returned, so the bound `spent <= limit` never breaks.
    pub fn settle(&self, mut reservation: Reservation, actual: &Amounts) -> Settlement {
        let account = reservation
            .account
            .take()
            .expect("a reservation is settled once");
        debug_assert!(std::ptr::eq(Arc::as_ptr(&account), self));
        let reserved = std::mem::take(&mut reservation.amounts);
        let (mut guards, _) = account.lock_path();
        for state in guards.iter_mut() {
            state.reserved = state.reserved.saturating_sub(&reserved);
        }
        // Within the reservation, the actual usage always fits: it was held for us.
        let covered = actual.min(&reserved);
        let excess = actual.saturating_sub(&reserved);
        let mut extra = Amounts::ZERO;
        for dim in LedgerDim::ALL {
            let want = excess.get(dim);
            if want == 0 {
                continue;
            }
            let room = guards
                .iter()
                .map(|s| s.available(dim).saturating_sub(covered.get(dim)))
                .min()
                .unwrap_or(0);
            extra.set(dim, want.min(room));
        }
        for (dim, want) in excess.custom_entries() {
            let room = guards
                .iter()
                .map(|s| s.available_custom(dim).saturating_sub(covered.custom(dim)))
                .min()
                .unwrap_or(0);
            extra.set_custom(dim.clone(), (*want).min(room));
        }
        let charged = covered.saturating_add(&extra);
        let overrun = excess.saturating_sub(&extra);
        for state in guards.iter_mut() {
            state.spent = state.spent.saturating_add(&charged);
            if !overrun.is_zero() {
                state.overrun = state.overrun.saturating_add(&overrun);
            }
        }
        debug_assert!({
            let mut cur: Option<&Account> = Some(&account);
            for state in guards.iter() {
                state.check_bound(&cur.unwrap().name);
                cur = cur.unwrap().parent.as_deref();
            }
            true
        });
        Settlement {
            refunded: reserved.saturating_sub(actual),
            charged,
            overrun,
        }
    }

    /// Charges usage for which nothing is reserved (a late outcome of a step whose
    /// reservation was released, e.g. by a `lost` halt) on this account and every ancestor:
    /// charged as far as every account has room, all or nothing per dimension, the rest
    /// recorded as overrun, exactly as usage above a reservation is.
    pub fn charge(self: &Arc<Self>, actual: &Amounts) -> Settlement {
        let reservation = Reservation {
            account: Some(Arc::clone(self)),
            amounts: Amounts::ZERO,
        };
        self.settle(reservation, actual)
    }

    /// Charges as a journal recorded it (recovery of a late outcome): exactly `charged`
    /// spent and `overrun` recorded on the whole path, whatever room it has now.
    pub fn restore_charge(self: &Arc<Self>, charged: &Amounts, overrun: &Amounts) {
        let reservation = Reservation {
            account: Some(Arc::clone(self)),
            amounts: Amounts::ZERO,
        };
        self.restore_settlement(reservation, charged, overrun);
    }

    /// Settles a reservation as a journal recorded it: the reservation is released and
    /// exactly `charged` is spent (and `overrun` recorded), whatever room the path has now.
    /// Recovery only: the journal's order across agents is not the ledger's, so judging the
    /// charge again could come out differently.
    pub fn restore_settlement(
        &self,
        mut reservation: Reservation,
        charged: &Amounts,
        overrun: &Amounts,
    ) {
        let account = reservation
            .account
            .take()
            .expect("a reservation is settled once");
        let reserved = std::mem::take(&mut reservation.amounts);
        let (mut guards, _) = account.lock_path();
        for state in guards.iter_mut() {
            state.reserved = state.reserved.saturating_sub(&reserved);
            state.spent = state.spent.saturating_add(charged);
            if !overrun.is_zero() {
                state.overrun = state.overrun.saturating_add(overrun);
            }
        }
    }

    /// Sets this account's own spent and overrun totals (not its ancestors'), as a journal
    /// snapshot recorded them. Recovery only; reservations are restored separately.
    pub fn restore_totals(&self, spent: &Amounts, overrun: &Amounts) {
        let mut state = self.state.lock();
        state.spent = spent.clone();
        state.overrun = overrun.clone();
    }

    /// Releases a reservation without charging anything.
    pub fn cancel(&self, reservation: Reservation) {
        self.settle(reservation, &Amounts::ZERO);
    }

    /// Replaces the limits (hot reload), checking under the same lock that every new limit
    /// holds what is already spent and reserved; refused, changing nothing, otherwise.
    pub fn set_limits(&self, limits: Limits) -> Result<(), String> {
        let mut state = self.state.lock();
        fits(&state, &limits)?;
        state.limits = limits;
        Ok(())
    }

    /// Replaces the limits of several accounts at once: all are locked (deepest first, the
    /// same order reservations use, so no deadlock), all are checked, and only then are all
    /// set. On any misfit nothing changes; the error names the account.
    pub fn set_limits_all(changes: &[(Arc<Account>, Limits)]) -> Result<(), String> {
        Self::change_limits(changes, true)
    }

    /// Sets limits as a journal recorded them, without checking them against what is spent
    /// (recovery: they fitted when they were set). Only recovery calls this.
    pub fn restore_limits_all(changes: &[(Arc<Account>, Limits)]) -> Result<(), String> {
        Self::change_limits(changes, false)
    }

    fn change_limits(changes: &[(Arc<Account>, Limits)], check: bool) -> Result<(), String> {
        let mut order: Vec<usize> = (0..changes.len()).collect();
        for (i, (a, _)) in changes.iter().enumerate() {
            if changes[..i].iter().any(|(b, _)| Arc::ptr_eq(a, b)) {
                return Err(format!("{}: listed twice", a.name));
            }
        }
        order.sort_by_key(|&i| {
            (
                std::cmp::Reverse(changes[i].0.depth),
                Arc::as_ptr(&changes[i].0) as usize,
            )
        });
        let mut guards: Vec<(usize, MutexGuard<'_, AccountState>)> =
            Vec::with_capacity(changes.len());
        for i in order {
            guards.push((i, changes[i].0.state.lock()));
        }
        for (i, state) in &guards {
            if check {
                fits(state, &changes[*i].1).map_err(|e| format!("{}: {e}", changes[*i].0.name))?;
            }
        }
        for (i, state) in guards.iter_mut() {
            state.limits = changes[*i].1.clone();
        }
        Ok(())
    }

    /// Sets this node's escrow ceiling for `dim` (a pool replicated between nodes: the most
    /// this node may hold reserved or spent there, its rights; `None` removes it). With
    /// `strict`, refuses — changing nothing — when more than `ceiling` is already reserved or
    /// spent (rights about to leave the node); otherwise always sets it (new reservations then
    /// wait for room). Returns whether it was set.
    pub fn set_ceiling(&self, dim: &Dimension, ceiling: Option<u64>, strict: bool) -> bool {
        let mut state = self.state.lock();
        if strict && ceiling.is_some_and(|c| state.used_of(dim) > c) {
            return false;
        }
        let ceilings = std::mem::take(&mut state.ceilings);
        state.ceilings = match (dim, builtin(dim)) {
            (_, Some(d)) => ceilings.with(d, ceiling),
            (Dimension::Custom(c), None) => ceilings.with_custom_opt(c.clone(), ceiling),
            _ => ceilings,
        };
        true
    }

    /// What reservations asked of this account in `dim`: admitted, or refused by its escrow
    /// ceiling.
    pub fn asked_in(&self, dim: &Dimension) -> u64 {
        let state = self.state.lock();
        match (dim, builtin(dim)) {
            (_, Some(d)) => state.asked.get(d),
            (Dimension::Custom(c), None) => state.asked.custom(c),
            _ => 0,
        }
    }

    /// What is reserved or spent in `dim` on this account now.
    pub fn used_in(&self, dim: &Dimension) -> u64 {
        self.state.lock().used_of(dim)
    }

    /// Whether this account or one above it bounds custom `dim` (a limit, or an escrow
    /// ceiling of a replicated pool).
    pub fn bounds_custom_on_path(&self, dim: &CustomDim) -> bool {
        let mut at = Some(self);
        while let Some(account) = at {
            if account.state.lock().bound_custom(dim).is_some() {
                return true;
            }
            at = account.parent.as_deref();
        }
        false
    }

    /// The account's escrow ceilings (`UNLIMITED` unless the pool is replicated).
    pub fn ceilings(&self) -> Limits {
        self.state.lock().ceilings.clone()
    }

    /// The account's totals right now.
    pub fn snapshot(&self) -> AccountSnapshot {
        let state = self.state.lock();
        AccountSnapshot {
            name: Arc::clone(&self.name),
            limits: state.limits.clone(),
            spent: state.spent.clone(),
            reserved: state.reserved.clone(),
            overrun: state.overrun.clone(),
        }
    }

    /// Remaining on the whole path from this account to the root, per built-in dimension.
    pub fn remaining_on_path(&self) -> Remaining {
        let (guards, _) = self.lock_path();
        let mut remaining = Remaining::default();
        for state in guards.iter() {
            for dim in LedgerDim::ALL {
                if state.bound(dim).is_some() {
                    let left = state.available(dim);
                    let slot = &mut remaining.0[dim as usize];
                    *slot = Some(slot.map_or(left, |r| r.min(left)));
                }
            }
        }
        remaining
    }
}

/// Budget held for one running step. Settle or cancel it through its account; if it is
/// dropped instead (a bug, or a panic unwinding), it cancels itself so nothing leaks.
#[derive(Debug)]
pub struct Reservation {
    account: Option<Arc<Account>>,
    amounts: Amounts,
}

impl Reservation {
    /// What is held.
    pub fn amounts(&self) -> &Amounts {
        &self.amounts
    }

    /// The account it was taken on.
    pub fn account(&self) -> &Arc<Account> {
        self.account.as_ref().expect("live reservation")
    }

    /// Settles with the real usage (see [`Account::settle`]).
    pub fn settle(self, actual: &Amounts) -> Settlement {
        let account = Arc::clone(self.account());
        account.settle(self, actual)
    }

    /// Releases without charge.
    pub fn cancel(self) {
        let account = Arc::clone(self.account());
        account.cancel(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(account) = self.account.take() {
            let amounts = std::mem::take(&mut self.amounts);
            let (mut guards, _) = account.lock_path();
            for state in guards.iter_mut() {
                state.reserved = state.reserved.saturating_sub(&amounts);
            }
        }
    }
}

/// The result of settling a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settlement {
    /// Charged as spend on every account of the path.
    pub charged: Amounts,
    /// Reserved but not used, given back.
    pub refunded: Amounts,
    /// Used beyond what the path could cover; not counted as spend.
    pub overrun: Amounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u64) -> Amounts {
        Amounts::new(0, n, 0, 0)
    }

    #[test]
    fn an_escrow_ceiling_binds_below_the_limit_and_refuses_to_drop_under_what_is_used() {
        let root = Account::root(
            "swarm",
            Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)),
        );
        let agent = root.child("a1", Limits::UNLIMITED).unwrap();
        assert!(root.set_ceiling(&Dimension::Tokens, Some(30), true));
        let (r, remaining) = agent.reserve(&tokens(25)).unwrap();
        assert_eq!(remaining.get(LedgerDim::Tokens), Some(5));
        let short = agent.reserve(&tokens(10)).unwrap_err();
        assert!(short.escrow, "the ceiling, not the limit, was short");
        assert_eq!((short.available, short.limit), (5, 30));
        // Rights cannot leave while reserved; a non-strict set (rights taken back) always works.
        assert!(!root.set_ceiling(&Dimension::Tokens, Some(20), true));
        assert_eq!(root.ceilings().get(LedgerDim::Tokens), Some(30));
        assert!(root.set_ceiling(&Dimension::Tokens, Some(20), false));
        assert_eq!(root.used_in(&Dimension::Tokens), 25);
        r.settle(&tokens(10));
        let short = agent.reserve(&tokens(15)).unwrap_err();
        assert!(short.escrow);
        // The limit binds again above the ceiling's removal.
        assert!(root.set_ceiling(&Dimension::Tokens, None, true));
        let short = agent.reserve(&tokens(95)).unwrap_err();
        assert!(!short.escrow);
        // A custom dimension: a ceiling with no limit binds alone.
        let gpu = CustomDim::new("gpu_seconds").unwrap();
        assert!(root.set_ceiling(&Dimension::Custom(gpu.clone()), Some(3), true));
        let mut ask = Amounts::ZERO;
        ask.set_custom(gpu, 4);
        assert!(agent.reserve(&ask).unwrap_err().escrow);
    }

    #[test]
    fn only_admitted_steps_and_escrow_refusals_count_as_demand_on_a_pool() {
        let root = Account::root("swarm", Limits::UNLIMITED);
        let agent = root
            .child("a1", Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)))
            .unwrap();
        assert!(root.set_ceiling(&Dimension::Tokens, Some(50), true));
        let (r, _) = agent.reserve(&tokens(30)).unwrap();
        assert_eq!(root.asked_in(&Dimension::Tokens), 30);
        // Refused by the agent's own budget: no demand for the pool's rights.
        assert!(!agent.reserve(&tokens(1_000_000_000)).unwrap_err().escrow);
        assert_eq!(root.asked_in(&Dimension::Tokens), 30);
        // Refused by the pool's escrow ceiling: demand, bounded by the ceiling.
        assert!(agent.reserve(&tokens(60)).unwrap_err().escrow);
        assert_eq!(root.asked_in(&Dimension::Tokens), 80);
        r.cancel();
    }

    #[test]
    fn reservation_debits_every_account_on_the_path_or_none() {
        let root = Account::root(
            "swarm",
            Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)),
        );
        let team = root
            .child(
                "swarm/a",
                Limits::UNLIMITED.with(LedgerDim::Tokens, Some(60)),
            )
            .unwrap();
        let agent = team.child("a1", Limits::UNLIMITED).unwrap();
        let (r1, remaining) = agent.reserve(&tokens(50)).unwrap();
        assert_eq!(remaining.get(LedgerDim::Tokens), Some(10));
        let short = agent.reserve(&tokens(20)).unwrap_err();
        assert_eq!(&*short.account, "swarm/a");
        assert_eq!(short.available, 10);
        assert_eq!(root.snapshot().reserved.get(LedgerDim::Tokens), 50);
        let s = r1.settle(&tokens(30));
        assert_eq!(s.refunded.get(LedgerDim::Tokens), 20);
        assert_eq!(root.snapshot().spent.get(LedgerDim::Tokens), 30);
        assert_eq!(root.snapshot().reserved.get(LedgerDim::Tokens), 0);
    }

    #[test]
    fn overrun_is_capped_at_the_limit_and_reported() {
        let root = Account::root(
            "swarm",
            Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)),
        );
        let (r, _) = root.reserve(&tokens(10)).unwrap();
        let s = r.settle(&tokens(150));
        assert_eq!(s.charged.get(LedgerDim::Tokens), 100);
        assert_eq!(s.overrun.get(LedgerDim::Tokens), 50);
        let snap = root.snapshot();
        assert_eq!(snap.spent.get(LedgerDim::Tokens), 100);
        assert_eq!(snap.overrun.get(LedgerDim::Tokens), 50);
    }

    #[test]
    fn dropped_reservation_releases_its_hold() {
        let root = Account::root("swarm", Limits::UNLIMITED.with(LedgerDim::Tokens, Some(10)));
        {
            let _r = root.reserve(&tokens(10)).unwrap();
            assert!(root.reserve(&tokens(1)).is_err());
        }
        assert_eq!(root.snapshot().remaining(LedgerDim::Tokens), Some(10));
    }

    #[test]
    fn custom_dimensions_are_limited_like_built_ins() {
        let gpu = CustomDim::new("gpu_seconds").unwrap();
        let root = Account::root("swarm", Limits::UNLIMITED.with_custom(gpu.clone(), 5));
        let mut want = Amounts::ZERO;
        want.set_custom(gpu.clone(), 3);
        let (_a, _) = root.reserve(&want).unwrap();
        let short = root.reserve(&want).unwrap_err();
        assert_eq!(short.dimension, Dimension::Custom(gpu));
        assert_eq!(short.available, 2);
    }

    #[test]
    fn tree_depth_is_bounded() {
        let mut acc = Account::root("r", Limits::UNLIMITED);
        for i in 1..MAX_ACCOUNT_DEPTH {
            acc = acc.child(format!("c{i}"), Limits::UNLIMITED).unwrap();
        }
        assert!(acc.child("too-deep", Limits::UNLIMITED).is_err());
    }
}
