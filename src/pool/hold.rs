//! Held conversations: after a turn whose answer reached the client whole, its worker is kept
//! unreset, per (profile, owner), with the fingerprint of the conversation in its context. A
//! request that continues that conversation gets it back and sends only its new turn. A
//! worker parked on client tool calls is held the same way (the results are the new turn).
//!
//! A holding ends when it is taken, when it has been idle past its limit (`hold_idle`, or
//! `parked_idle` when parked), when capacity is needed (least recently used first, after plain
//! idle workers), or when the turn turns out to have been cut after all. Ending one resets the
//! worker and returns it to its owner's pool (or retires it, by policy); eviction retires it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::Object;
use tokio_util::sync::CancellationToken;

use super::conversation::{Continuation, Fingerprint};
use super::owner::{OwnerManager, OwnerState};
use super::reservoir::ProfilePool;
use super::{PoolInner, lock};
use crate::domain::{OwnerKey, TurnOutcome, TurnStatus};
use crate::worker::Worker;

/// What a conversation turn needs to be held afterwards.
pub(super) struct HoldPlan {
    pub(super) profile: Arc<ProfilePool>,
    pub(super) owner: OwnerKey,
    pub(super) continuation: Continuation,
    /// The turn began its conversation (the request had no history).
    pub(super) first_turn: bool,
}

/// A worker kept, unreset, for the conversation it served.
pub(super) struct Held {
    pub(super) owner: OwnerKey,
    pub(super) conversation: Fingerprint,
    /// Always `Some` until the holding ends; dropping a `Held` retires the worker (a worker
    /// with a conversation in it must never go back to its owner's pool unreset).
    worker: Option<Object<OwnerManager>>,
    pub(super) owner_state: Arc<OwnerState>,
    pub(super) since: Instant,
    /// The CLI waits on client tool results.
    pub(super) parked: bool,
    /// It holds a conversation's first turn: nothing says yet that its client continues
    /// conversations (one-shot requests never do), so a new conversation may take it over at
    /// once (see `take_over_candidate`).
    pub(super) first_turn: bool,
    /// The turn's token: cancelled when the answer was cut or the client left before its end,
    /// which can happen after the worker's turn ended (a stop sequence in the last delta).
    cut: CancellationToken,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            drop(Object::take(worker));
        }
    }
}

impl Held {
    /// Whether the worker's context is still exactly what the client saw.
    pub(super) fn exact(&self) -> bool {
        !self.cut.is_cancelled()
    }

    fn expired(&self, hold_idle: Duration, parked_idle: Duration) -> bool {
        let limit = if self.parked { parked_idle } else { hold_idle };
        self.since.elapsed() >= limit
    }

    pub(super) fn worker_mut(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("held until the holding ends")
    }

    /// The worker, for its next turn or its release.
    pub(super) fn into_worker(mut self) -> Object<OwnerManager> {
        self.worker.take().expect("held until the holding ends")
    }
}

/// Whether a turn left its worker's context exactly as the client saw it.
pub(super) fn holdable(outcome: &TurnOutcome, cut: &CancellationToken) -> bool {
    let ended_well = outcome.status == TurnStatus::Completed || !outcome.awaiting_tools.is_empty();
    ended_well && !cut.is_cancelled()
}

impl ProfilePool {
    /// The holding of `owner`'s conversation `before`, if there is one.
    pub(super) fn take_held(&self, owner: &OwnerKey, before: Fingerprint) -> Option<Held> {
        let mut held = lock(&self.held);
        let i = held
            .iter()
            .position(|h| h.owner == *owner && h.conversation == before)?;
        Some(held.swap_remove(i))
    }

    /// Holdings that must end now: expired, or cut after the fact.
    fn take_stale(&self, hold_idle: Duration, parked_idle: Duration) -> Vec<Held> {
        let mut held = lock(&self.held);
        let (stale, kept) = std::mem::take(&mut *held)
            .into_iter()
            .partition(|h| !h.exact() || h.expired(hold_idle, parked_idle));
        *held = kept;
        stale
    }

    /// When the least recently used holding began.
    fn oldest_held(&self) -> Option<Instant> {
        lock(&self.held).iter().map(|h| h.since).min()
    }

    fn take_oldest_held(&self) -> Option<Held> {
        let mut held = lock(&self.held);
        let i = (0..held.len()).min_by_key(|&i| held[i].since)?;
        Some(held.swap_remove(i))
    }

    /// The holding a request of `owner` may take over: its least recently used one that is
    /// not parked on tool calls and has been idle for `min_idle` at least, or, for a first
    /// turn (`first_turn`), that holds a first turn.
    pub(super) fn take_over_candidate(
        &self,
        owner: &OwnerKey,
        min_idle: Duration,
        first_turn: bool,
    ) -> Option<Held> {
        let mut held = lock(&self.held);
        let i = (0..held.len())
            .filter(|&i| held[i].owner == *owner && !held[i].parked)
            .filter(|&i| (first_turn && held[i].first_turn) || held[i].since.elapsed() >= min_idle)
            .min_by_key(|&i| held[i].since)?;
        Some(held.swap_remove(i))
    }

    /// How long until a holding of `owner` that such a request may not take over yet
    /// becomes one it may, by idling (`None`: no such holding).
    pub(super) fn next_candidate_in(
        &self,
        owner: &OwnerKey,
        min_idle: Duration,
        first_turn: bool,
    ) -> Option<Duration> {
        lock(&self.held)
            .iter()
            .filter(|h| h.owner == *owner && !h.parked && !(first_turn && h.first_turn))
            .map(|h| min_idle.saturating_sub(h.since.elapsed()))
            .filter(|left| !left.is_zero())
            .min()
    }

    /// (held, of which parked).
    pub(super) fn held_counts(&self) -> (usize, usize) {
        let held = lock(&self.held);
        (held.len(), held.iter().filter(|h| h.parked).count())
    }

    pub(super) fn drain_held(&self) -> Vec<Held> {
        lock(&self.held).drain(..).collect()
    }
}

impl PoolInner {
    /// After a conversation turn: holds the worker when its context is what the client saw,
    /// and gives it back otherwise (to be released). Immediate, so it runs before the client
    /// gets the turn's end: a client that answers at once (tool results) finds the holding.
    pub(super) fn hold(
        self: &Arc<Self>,
        worker: Object<OwnerManager>,
        owner_state: Arc<OwnerState>,
        outcome: &TurnOutcome,
        cut: CancellationToken,
        plan: HoldPlan,
    ) -> Option<Object<OwnerManager>> {
        if !holdable(outcome, &cut)
            || !self.may_hold(&plan.profile.profile)
            || !self.may_keep(&worker)
        {
            return Some(worker);
        }
        let conversation = plan.continuation.after(&outcome.answer);
        tracing::debug!(worker = %worker.id(), ?conversation, "holding the conversation");
        lock(&plan.profile.held).push(Held {
            owner: plan.owner,
            conversation,
            worker: Some(worker),
            owner_state,
            since: Instant::now(),
            parked: !outcome.awaiting_tools.is_empty(),
            first_turn: plan.first_turn,
            cut,
        });
        plan.profile.held_added.notify_waiters();
        None
    }

    /// Ends a holding: reset and back to the owner's pool, or retired, by policy.
    pub(super) fn end_holding(self: &Arc<Self>, held: Held) {
        let inner = self.clone();
        self.tasks.spawn(async move {
            let owner_state = held.owner_state.clone();
            let worker = held.into_worker();
            let outcome = TurnOutcome {
                status: TurnStatus::Completed,
                ..TurnOutcome::failed("")
            };
            inner.release(worker, &owner_state, &outcome).await;
        });
    }

    /// Ends the holdings that expired or turned out not to be exact.
    pub(super) fn reap_held(self: &Arc<Self>, profile: &ProfilePool) {
        let stale = profile.take_stale(self.config.hold_idle, self.config.parked_idle);
        for held in stale {
            self.end_holding(held);
        }
    }

    /// Retires the least recently used holding of any profile; returns whether there was one.
    pub(super) fn evict_one_held(&self) -> bool {
        self.evict_one_held_idle(Duration::ZERO)
    }

    /// Retires the least recently used holding of any profile if it has been idle for
    /// `min_idle` at least; returns whether there was one.
    pub(super) fn evict_one_held_idle(&self, min_idle: Duration) -> bool {
        let profiles = lock(&self.profiles).clone();
        let oldest = profiles
            .iter()
            .filter_map(|p| p.oldest_held().map(|since| (since, p)))
            .filter(|(since, _)| since.elapsed() >= min_idle)
            .min_by_key(|(since, _)| *since);
        match oldest.and_then(|(_, p)| p.take_oldest_held()) {
            Some(held) => {
                tracing::debug!(conversation = ?held.conversation, "evicting a held conversation");
                drop(held);
                self.count_retired(1);
                true
            }
            None => false,
        }
    }
}
