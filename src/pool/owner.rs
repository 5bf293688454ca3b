//! Per (profile, owner): a deadpool pool of the workers that served that owner. Its manager's
//! `create` takes a never-used worker from the profile's reservoir, and `recycle` checks a
//! worker is alive and within the reuse policy, so a worker only ever returns to the pool of
//! the owner it served. Also what happens to a worker after a turn (`release`) and the
//! eviction of the least recently used idle worker when capacity runs out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use tokio::sync::Notify;

use super::reservoir::ProfilePool;
use super::{PoolError, PoolInner, ReusePolicy, lock};
use crate::domain::{OwnerKey, TurnOutcome, TurnStatus};
use crate::worker::Worker;

pub(super) type OwnerPool = managed::Pool<OwnerManager>;

/// One owner's pool and when it was last asked for a worker. An entry is forgotten only when
/// its pool is empty and unasked-for past the idle timeout, so a checkout in flight (whose
/// `create` is still waiting, when deadpool counts the pool as empty) never loses its pool.
pub(super) struct OwnerEntry {
    pub(super) pool: OwnerPool,
    pub(super) state: Arc<OwnerState>,
    pub(super) last_checkout: Instant,
}

/// What one owner's checkouts and releases share.
#[derive(Default)]
pub(super) struct OwnerState {
    /// Workers of this owner being reset after a request: they are back within moments, so a
    /// checkout waits for one rather than spending a never-used worker.
    resetting: AtomicUsize,
    reset_done: Notify,
}

impl OwnerState {
    /// Waits (at most `limit`) until no worker of this owner is being reset.
    pub(super) async fn wait_for_resets(&self, limit: Duration) {
        let wait = async {
            while self.resetting.load(Ordering::SeqCst) > 0 {
                let done = self.reset_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.resetting.load(Ordering::SeqCst) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// deadpool's manager for one owner's workers: creating one takes a warm worker from the
/// profile's reservoir; recycling one checks it is alive and within the reuse policy.
pub(super) struct OwnerManager {
    profile: Arc<ProfilePool>,
    pool: Weak<PoolInner>,
    policy: ReusePolicy,
}

impl managed::Manager for OwnerManager {
    type Type = Worker;
    type Error = PoolError;

    async fn create(&self) -> Result<Worker, PoolError> {
        self.profile.waiting.fetch_add(1, Ordering::SeqCst);
        scopeguard::defer! {
            self.profile.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        loop {
            let filled = self.profile.reservoir_filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            let (worker, dead) = self.profile.take_warm();
            let Some(pool) = self.pool.upgrade() else {
                return Err(PoolError::Closed);
            };
            pool.count_retired(dead);
            if let Some(worker) = worker {
                pool.wake.notify_one();
                return Ok(worker);
            }
            if pool.cancel.is_cancelled() {
                return Err(PoolError::Closed);
            }
            pool.wake.notify_one();
            drop(pool);
            filled.await;
        }
    }

    async fn recycle(&self, worker: &mut Worker, _: &Metrics) -> RecycleResult<PoolError> {
        if !worker.is_alive() {
            tracing::debug!(worker = %worker.id(), "not reused: it died while idle");
            return Err(RecycleError::message("the worker died while idle"));
        }
        if !within_policy(self.policy, worker) {
            tracing::debug!(worker = %worker.id(), uses = worker.uses(), "not reused: reuse limit reached");
            return Err(RecycleError::message("the worker reached its reuse limit"));
        }
        Ok(())
    }
}

impl PoolInner {
    /// Whether a worker may serve again after this turn (reset, or holding its conversation).
    pub(super) fn may_keep(&self, worker: &Worker) -> bool {
        let alive = worker.broken().is_none() && !self.cancel.is_cancelled();
        alive
            && (self.config.policy == ReusePolicy::Fresh
                || within_policy(self.config.policy, worker))
    }
}

pub(super) fn within_policy(policy: ReusePolicy, worker: &Worker) -> bool {
    match policy {
        ReusePolicy::Fresh => false,
        ReusePolicy::Reuse { max_uses, max_age } => {
            worker.broken().is_none() && worker.uses() < max_uses && worker.age() < max_age
        }
    }
}

impl PoolInner {
    /// The owner's pool for `profile`, created on first use.
    pub(super) fn owner_pool(
        self: &Arc<Self>,
        profile: &Arc<ProfilePool>,
        owner: &OwnerKey,
    ) -> (OwnerPool, Arc<OwnerState>) {
        let mut owners = lock(&profile.owners);
        if let Some(entry) = owners.get_mut(owner) {
            entry.last_checkout = Instant::now();
            return (entry.pool.clone(), entry.state.clone());
        }
        let state = Arc::new(OwnerState::default());
        let manager = OwnerManager {
            profile: profile.clone(),
            pool: Arc::downgrade(self),
            policy: self.config.policy,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(self.config.max_workers)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and no timeouts always builds");
        owners.insert(
            owner.clone(),
            OwnerEntry {
                pool: pool.clone(),
                state: state.clone(),
                last_checkout: Instant::now(),
            },
        );
        (pool, state)
    }

    /// Retires a worker nobody is using, to make room for a request that waits (of
    /// `profile`, or a session's when `None`): the least recently used plain idle worker if
    /// there is one, else a warm worker of another profile (the least recently used profile
    /// first), else the least recently used held conversation. Returns whether there was one.
    pub(super) fn evict_one_idle(&self, profile: Option<&ProfilePool>) -> bool {
        self.evict_one_plain_idle() || self.evict_other_warm(profile) || self.evict_one_held()
    }

    /// Retires, to make room for a pre-warmed session worker, a worker nobody is likely to
    /// use soon: the least recently used holding idle for `takeover_idle` at least (one a new
    /// conversation would take over). Returns whether there was one.
    pub(super) fn evict_one_stale(&self) -> bool {
        self.evict_one_held_idle(self.config.takeover_idle)
    }

    fn evict_other_warm(&self, profile: Option<&ProfilePool>) -> bool {
        let profiles = lock(&self.profiles).clone();
        let other = profiles
            .iter()
            .rev()
            .filter(|p| profile.is_none_or(|wanted| !std::ptr::eq(p.as_ref(), wanted)))
            .find_map(|p| p.take_newest());
        if let Some(worker) = other {
            tracing::debug!(worker = %worker.id(), "retiring a warm worker of another profile to make room");
            drop(worker);
            self.count_retired(1);
            return true;
        }
        match self.prewarmed.take_newest() {
            Some(prewarmed) => {
                tracing::debug!("retiring a pre-warmed session worker to make room");
                self.tasks.spawn(prewarmed.remove());
                self.count_retired(1);
                true
            }
            None => false,
        }
    }

    fn evict_one_plain_idle(&self) -> bool {
        let profiles = lock(&self.profiles).clone();
        let mut oldest: Option<(Duration, OwnerPool, String)> = None;
        for profile in &profiles {
            for pool in profile.owner_pools() {
                // `retain` keeping everything is how deadpool lets one look at idle objects.
                pool.retain(|worker, metrics| {
                    let idle_for = metrics.last_used();
                    if oldest.as_ref().is_none_or(|(d, _, _)| idle_for > *d) {
                        oldest = Some((idle_for, pool.clone(), worker.id().to_string()));
                    }
                    true
                });
            }
        }
        match oldest {
            Some((_, pool, id)) => {
                let removed = pool.retain(|worker, _| worker.id() != id).removed.len();
                self.count_retired(removed);
                removed > 0
            }
            None => false,
        }
    }

    /// What happens to a worker after a turn: reset and kept, or retired.
    pub(super) async fn release(
        &self,
        mut worker: Object<OwnerManager>,
        owner: &OwnerState,
        outcome: &TurnOutcome,
    ) {
        let failed = matches!(outcome.status, TurnStatus::WorkerFailed(_));
        let keep =
            !failed && within_policy(self.config.policy, &worker) && !self.cancel.is_cancelled();
        if keep {
            owner.resetting.fetch_add(1, Ordering::SeqCst);
            let reset = worker.reset(self.config.reset_timeout).await;
            let kept = match reset {
                Ok(()) => {
                    // Dropping the object returns it to its owner's pool, before the waiters
                    // for a reset are told to look there.
                    drop(worker);
                    None
                }
                Err(e) => {
                    tracing::debug!(worker = %worker.id(), cause = %e, "reset failed");
                    Some(worker)
                }
            };
            owner.resetting.fetch_sub(1, Ordering::SeqCst);
            owner.reset_done.notify_waiters();
            match kept {
                None => return,
                Some(w) => worker = w,
            }
        }
        let worker = Object::take(worker);
        self.count_retired(1);
        worker.remove().await;
    }
}
