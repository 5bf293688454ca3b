//! The warm pool: workers started ahead of demand per launch profile, checked out for one
//! request, then reset and kept for the same owner, or retired, by policy. Knows workers and
//! the runtime seam; knows nothing of HTTP or of the CLI's wire format.
//!
//! Layout: per launch profile, a reservoir of never-used warm workers, topped up by the filler
//! task; per (profile, owner), a deadpool pool whose `create` takes a worker from the
//! reservoir, so a worker that served one owner only ever returns to that owner's pool. A
//! semaphore bounds the number of containers; every worker holds one permit.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use futures::{Stream, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{
    LaunchProfile, ModelInfo, OwnerKey, TurnItem, TurnOutcome, TurnRequest, TurnStatus,
};
use crate::runtime::{ContainerRuntime, LABEL_INSTANCE, LABEL_MANAGED, RuntimeError};
use crate::worker::{SessionWorkspace, Worker, WorkerSettings};

/// What happens to a worker after it served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReusePolicy {
    /// Reset it with `/clear` and keep it for the same owner, up to `max_uses` requests and
    /// `max_age` of life.
    Reuse { max_uses: u32, max_age: Duration },
    /// Retire it: every request gets a never-used worker.
    Fresh,
}

/// How the pool behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub policy: ReusePolicy,
    /// Containers at most: warm, busy and idle together.
    pub max_workers: usize,
    /// Warm workers kept for the default profile.
    pub warm_default: usize,
    /// Warm workers kept for each of the most recently used other profiles.
    pub warm_recent: usize,
    /// How many other profiles keep warm workers.
    pub recent_profiles: usize,
    /// How long a request may wait for a worker before it is told the pool is busy.
    pub checkout_timeout: Duration,
    /// A reusable worker idle this long is retired.
    pub idle_timeout: Duration,
    /// How long `/clear` may take.
    pub reset_timeout: Duration,
    /// Worker starts in flight at once (each costs most of a CPU-second).
    pub max_concurrent_starts: usize,
    /// Capacity of the channel between a running turn and its consumer.
    pub turn_channel_capacity: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            policy: ReusePolicy::Reuse {
                max_uses: 100,
                max_age: Duration::from_secs(3600),
            },
            max_workers: 8,
            warm_default: 2,
            warm_recent: 1,
            recent_profiles: 2,
            checkout_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            reset_timeout: Duration::from_secs(10),
            max_concurrent_starts: 2,
            turn_channel_capacity: 64,
        }
    }
}

/// A request could not get a worker.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no worker became free within {0:?}")]
    Busy(Duration),
    #[error("no worker could be started: {0}")]
    StartFailed(String),
    #[error("the pool is shutting down")]
    Closed,
    /// Internal: a worker of the same owner finished its reset; ask deadpool again.
    #[error("retry")]
    Retry,
}

/// Counters of the pool's life, for status pages and tests.
#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    start_failures: AtomicU64,
    retired: AtomicU64,
    reused: AtomicU64,
    turns: AtomicU64,
}

/// A snapshot of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Containers that exist (warm, starting, busy or idle).
    pub workers: usize,
    pub max_workers: usize,
    pub profiles: Vec<ProfileStatus>,
    pub started: u64,
    pub start_failures: u64,
    pub retired: u64,
    pub reused: u64,
    /// Turns started.
    pub turns: u64,
}

/// A snapshot of one launch profile's workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileStatus {
    pub fingerprint: String,
    pub is_default: bool,
    /// Never-used workers ready to serve.
    pub warm: usize,
    pub starting: usize,
    /// Requests waiting for a warm worker.
    pub waiting: usize,
    /// Used workers kept for their owners, idle.
    pub idle: usize,
    /// Workers serving a request now.
    pub busy: usize,
}

/// The workers of one launch profile.
struct ProfilePool {
    profile: LaunchProfile,
    /// Never-used warm workers, oldest first.
    reservoir: Mutex<VecDeque<Worker>>,
    reservoir_filled: Notify,
    starting: AtomicUsize,
    waiting: AtomicUsize,
    owners: Mutex<HashMap<OwnerKey, OwnerEntry>>,
    last_start_error: Mutex<Option<(Instant, String)>>,
}

type OwnerPool = managed::Pool<OwnerManager>;

/// One owner's pool and when it was last asked for a worker. An entry is forgotten only when
/// its pool is empty and unasked-for past the idle timeout, so a checkout in flight (whose
/// `create` is still waiting, when deadpool counts the pool as empty) never loses its pool.
struct OwnerEntry {
    pool: OwnerPool,
    state: Arc<OwnerState>,
    last_checkout: Instant,
}

/// What one owner's checkouts and releases share.
#[derive(Default)]
struct OwnerState {
    /// Workers of this owner being reset after a request: they are back within moments, so a
    /// checkout waits for one rather than spending a never-used worker.
    resetting: AtomicUsize,
    reset_done: Notify,
}

impl ProfilePool {
    fn new(profile: LaunchProfile) -> Self {
        ProfilePool {
            profile,
            reservoir: Mutex::new(VecDeque::new()),
            reservoir_filled: Notify::new(),
            starting: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            owners: Mutex::new(HashMap::new()),
            last_start_error: Mutex::new(None),
        }
    }

    fn warm(&self) -> usize {
        lock(&self.reservoir).len()
    }

    /// A live never-used worker, if one is ready.
    fn take_warm(&self) -> Option<Worker> {
        let mut reservoir = lock(&self.reservoir);
        while let Some(mut worker) = reservoir.pop_front() {
            if worker.is_alive() {
                return Some(worker);
            }
        }
        None
    }

    fn owner_pools(&self) -> Vec<OwnerPool> {
        lock(&self.owners)
            .values()
            .map(|e| e.pool.clone())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// deadpool's manager for one owner's workers: creating one takes a warm worker from the
/// profile's reservoir; recycling one checks it is alive and within the reuse policy.
struct OwnerManager {
    profile: Arc<ProfilePool>,
    owner: Arc<OwnerState>,
    pool: Weak<PoolInner>,
    policy: ReusePolicy,
    reset_timeout: Duration,
}

impl managed::Manager for OwnerManager {
    type Type = Worker;
    type Error = PoolError;

    async fn create(&self) -> Result<Worker, PoolError> {
        if self.owner.resetting.load(Ordering::SeqCst) > 0 {
            let done = self.owner.reset_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.owner.resetting.load(Ordering::SeqCst) > 0 {
                let _ = tokio::time::timeout(self.reset_timeout, done).await;
            }
            // The checkout asks deadpool again, which now finds the reset worker idle.
            return Err(PoolError::Retry);
        }
        self.profile.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = scopeguard(|| {
            self.profile.waiting.fetch_sub(1, Ordering::SeqCst);
        });
        loop {
            let filled = self.profile.reservoir_filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if let Some(worker) = self.profile.take_warm() {
                if let Some(pool) = self.pool.upgrade() {
                    pool.wake.notify_one();
                }
                return Ok(worker);
            }
            match self.pool.upgrade() {
                Some(pool) if !pool.cancel.is_cancelled() => pool.wake.notify_one(),
                _ => return Err(PoolError::Closed),
            }
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

fn within_policy(policy: ReusePolicy, worker: &Worker) -> bool {
    match policy {
        ReusePolicy::Fresh => false,
        ReusePolicy::Reuse { max_uses, max_age } => {
            worker.broken().is_none() && worker.uses() < max_uses && worker.age() < max_age
        }
    }
}

struct ScopeGuard<F: FnMut()>(F);
impl<F: FnMut()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
fn scopeguard<F: FnMut()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(f)
}

struct PoolInner {
    runtime: Arc<dyn ContainerRuntime>,
    settings: Arc<WorkerSettings>,
    config: PoolConfig,
    capacity: Arc<Semaphore>,
    /// The default profile first, then the others, most recently used first.
    profiles: Mutex<Vec<Arc<ProfilePool>>>,
    graveyard: mpsc::UnboundedSender<String>,
    /// Wakes the filler: a worker was taken, retired or is wanted.
    wake: Arc<Notify>,
    counters: Counters,
    /// The models the CLI offers, from the latest worker start.
    models: Mutex<Vec<ModelInfo>>,
    /// The CLI's version, from the latest worker start.
    cli_version: Mutex<Option<String>>,
    /// How many releases (reset or retirement after a turn) have completed.
    releases: tokio::sync::watch::Sender<u64>,
    /// Owns every task the pool spawns: the filler, the graveyard, turns and releases.
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The pool of workers. Cheap to clone; `shutdown` stops it and removes its containers.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<PoolInner>,
}

impl WarmPool {
    /// Removes what an earlier run of this instance left, then starts the filler that keeps
    /// workers warm for `default_profile`.
    pub async fn start(
        runtime: Arc<dyn ContainerRuntime>,
        settings: WorkerSettings,
        config: PoolConfig,
        default_profile: LaunchProfile,
    ) -> Result<WarmPool, RuntimeError> {
        let leftovers = remove_instance_containers(runtime.as_ref(), &settings.instance_id).await?;
        if leftovers > 0 {
            tracing::info!(count = leftovers, instance = %settings.instance_id, "removed containers an earlier run left");
        }
        let (graveyard, buried) = mpsc::unbounded_channel();
        let inner = Arc::new(PoolInner {
            runtime,
            settings: Arc::new(settings),
            capacity: Arc::new(Semaphore::new(config.max_workers)),
            config,
            profiles: Mutex::new(vec![Arc::new(ProfilePool::new(default_profile))]),
            graveyard,
            wake: Arc::new(Notify::new()),
            counters: Counters::default(),
            models: Mutex::new(Vec::new()),
            cli_version: Mutex::new(None),
            releases: tokio::sync::watch::Sender::new(0),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        inner.tasks.spawn(run_graveyard(
            inner.runtime.clone(),
            buried,
            inner.cancel.clone(),
        ));
        inner
            .tasks
            .spawn(run_filler(Arc::downgrade(&inner), inner.cancel.clone()));
        Ok(WarmPool { inner })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
    }

    /// A worker for `profile` that has never served anyone but `owner`, waiting at most the
    /// checkout timeout.
    pub async fn checkout(
        &self,
        profile: &LaunchProfile,
        owner: &OwnerKey,
    ) -> Result<Lease, PoolError> {
        if self.inner.cancel.is_cancelled() {
            return Err(PoolError::Closed);
        }
        let profile_pool = self.inner.profile_pool(profile);
        let (owner_pool, owner_state) = self.inner.owner_pool(&profile_pool, owner);
        let limit = self.inner.config.checkout_timeout;
        let get = async {
            loop {
                match owner_pool.get().await {
                    Err(managed::PoolError::Backend(PoolError::Retry)) => continue,
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(limit, get).await {
            Ok(Ok(worker)) => {
                if worker.uses() > 0 {
                    self.inner.counters.reused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Lease {
                    worker: Some(worker),
                    owner: owner_state,
                    pool: self.inner.clone(),
                })
            }
            Ok(Err(managed::PoolError::Backend(e))) => Err(e),
            Ok(Err(managed::PoolError::Closed)) => Err(PoolError::Closed),
            Ok(Err(other)) => Err(PoolError::StartFailed(other.to_string())),
            Err(_) => {
                let recent_failure = lock(&profile_pool.last_start_error)
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < limit)
                    .map(|(_, e)| e.clone());
                Err(match recent_failure {
                    Some(e) => PoolError::StartFailed(e),
                    None => PoolError::Busy(limit),
                })
            }
        }
    }

    /// Checks out a worker and starts serving `request` on it: the shortcut for callers that
    /// need nothing else from the lease.
    pub async fn run(
        &self,
        profile: &LaunchProfile,
        owner: &OwnerKey,
        request: TurnRequest,
    ) -> Result<TurnStream, PoolError> {
        Ok(self.checkout(profile, owner).await?.start_turn(request))
    }

    pub fn status(&self) -> PoolStatus {
        let inner = &self.inner;
        let profiles = lock(&inner.profiles).clone();
        let profiles = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (idle, busy) = p.owner_pools().iter().fold((0, 0), |(idle, busy), pool| {
                    let s = pool.status();
                    // deadpool counts waiters against `available`; busy is what is out.
                    (
                        idle + s.available,
                        busy + s.size.saturating_sub(s.available),
                    )
                });
                ProfileStatus {
                    fingerprint: p.profile.fingerprint(),
                    is_default: i == 0,
                    warm: p.warm(),
                    starting: p.starting.load(Ordering::SeqCst),
                    waiting: p.waiting.load(Ordering::SeqCst),
                    idle,
                    busy,
                }
            })
            .collect();
        let c = &inner.counters;
        PoolStatus {
            workers: inner.config.max_workers - inner.capacity.available_permits(),
            max_workers: inner.config.max_workers,
            profiles,
            started: c.started.load(Ordering::Relaxed),
            start_failures: c.start_failures.load(Ordering::Relaxed),
            retired: c.retired.load(Ordering::Relaxed),
            reused: c.reused.load(Ordering::Relaxed),
            turns: c.turns.load(Ordering::Relaxed),
        }
    }

    /// Waits until the default profile has at least `n` warm workers (for tests, benchmarks
    /// and readiness). Gives up after `limit`.
    pub async fn wait_warm(&self, n: usize, limit: Duration) -> bool {
        let profile = lock(&self.inner.profiles)[0].clone();
        let wait = async {
            loop {
                let filled = profile.reservoir_filled.notified();
                tokio::pin!(filled);
                filled.as_mut().enable();
                if profile.warm() >= n {
                    return;
                }
                filled.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Never-used workers ready to serve, after dropping the ones whose container or CLI is
    /// gone (their replacements start at once).
    pub fn live_warm(&self) -> usize {
        let profiles = lock(&self.inner.profiles).clone();
        let mut live = 0;
        let mut dropped = 0;
        for profile in profiles {
            let mut reservoir = lock(&profile.reservoir);
            let before = reservoir.len();
            reservoir.retain_mut(|w| w.is_alive());
            dropped += before - reservoir.len();
            live += reservoir.len();
        }
        self.inner.count_retired(dropped);
        live
    }

    /// The CLI's version (unknown until a worker has started).
    pub fn cli_version(&self) -> Option<String> {
        lock(&self.inner.cli_version).clone()
    }

    /// The models the CLI offers (empty until a worker has started).
    pub fn models(&self) -> Vec<ModelInfo> {
        lock(&self.inner.models).clone()
    }

    /// Waits until `n` turns have been released (their workers reset and back in their pool,
    /// or retired). Gives up after `limit`.
    pub async fn wait_releases(&self, n: u64, limit: Duration) -> bool {
        let mut releases = self.inner.releases.subscribe();
        tokio::time::timeout(limit, releases.wait_for(|done| *done >= n))
            .await
            .is_ok()
    }

    /// Stops the pool: interrupts running turns, stops the filler, waits for every task
    /// (at most `grace`), and removes every container of this instance.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.cancel.cancel();
        inner.tasks.close();
        if tokio::time::timeout(grace, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("pool tasks did not finish within {grace:?}");
        }
        let profiles: Vec<Arc<ProfilePool>> = lock(&inner.profiles).drain(..).collect();
        for profile in profiles {
            for pool in profile.owner_pools() {
                pool.close();
            }
            lock(&profile.owners).clear();
            let workers: Vec<Worker> = lock(&profile.reservoir).drain(..).collect();
            futures::future::join_all(workers.into_iter().map(Worker::remove)).await;
        }
        match remove_instance_containers(inner.runtime.as_ref(), &inner.settings.instance_id).await
        {
            Ok(n) => tracing::info!(removed = n, "pool stopped"),
            Err(e) => tracing::warn!(cause = %e, "removing this instance's containers at shutdown"),
        }
    }
}

impl PoolInner {
    /// The profile's pool, created on first use; marks it most recently used.
    fn profile_pool(&self, profile: &LaunchProfile) -> Arc<ProfilePool> {
        let mut profiles = lock(&self.profiles);
        if profiles[0].profile == *profile {
            return profiles[0].clone();
        }
        let found = profiles.iter().skip(1).position(|p| p.profile == *profile);
        let pool = match found {
            Some(i) => profiles.remove(i + 1),
            None => {
                self.wake.notify_one();
                Arc::new(ProfilePool::new(profile.clone()))
            }
        };
        profiles.insert(1, pool.clone());
        pool
    }

    fn owner_pool(
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
            owner: state.clone(),
            pool: Arc::downgrade(self),
            policy: self.config.policy,
            reset_timeout: self.config.reset_timeout,
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

    /// How many warm workers each profile should have now.
    fn targets(&self) -> Vec<(Arc<ProfilePool>, usize)> {
        let profiles = lock(&self.profiles);
        profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let target = if i == 0 {
                    self.config.warm_default
                } else if i <= self.config.recent_profiles {
                    self.config.warm_recent
                } else {
                    0
                };
                (p.clone(), target)
            })
            .collect()
    }

    /// Retires idle workers past the idle timeout or the reuse policy, forgets empty owner
    /// pools, and drains the reservoirs of profiles that are no longer kept warm.
    fn reap(&self) {
        let idle_timeout = self.config.idle_timeout;
        let policy = self.config.policy;
        for (profile, target) in self.targets() {
            let mut owners = lock(&profile.owners);
            for entry in owners.values() {
                let removed = entry.pool.retain(|worker, metrics| {
                    metrics.last_used() < idle_timeout && within_policy(policy, worker)
                });
                self.count_retired(removed.removed.len());
            }
            owners.retain(|_, entry| {
                let status = entry.pool.status();
                status.size > 0
                    || status.waiting > 0
                    || entry.last_checkout.elapsed() < idle_timeout
            });
            drop(owners);
            let mut reservoir = lock(&profile.reservoir);
            while reservoir.len() > target {
                reservoir.pop_back();
                self.count_retired(1);
            }
        }
    }

    /// Retires the idle worker that was used least recently, to make room for a request
    /// that waits. Returns whether there was one.
    fn evict_one_idle(&self) -> bool {
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

    fn count_retired(&self, n: usize) {
        if n > 0 {
            self.counters.retired.fetch_add(n as u64, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// What happens to a worker after a turn: reset and kept, or retired.
    async fn release(
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

/// Removes every container of `instance`; returns how many there were.
async fn remove_instance_containers(
    runtime: &dyn ContainerRuntime,
    instance: &str,
) -> Result<usize, RuntimeError> {
    let containers = runtime
        .list_containers(&[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, instance)])
        .await?;
    let n = containers.len();
    let removals = containers.iter().map(|c| runtime.remove_container(&c.id));
    for result in futures::future::join_all(removals).await {
        result?;
    }
    Ok(n)
}

/// Removes the containers of dropped workers, a few at a time.
async fn run_graveyard(
    runtime: Arc<dyn ContainerRuntime>,
    buried: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) {
    let removals = tokio_stream_from(buried)
        .map(|id| {
            let runtime = runtime.clone();
            async move {
                if let Err(e) = runtime.remove_container(&id).await {
                    tracing::warn!(cause = %e, "removing a retired worker");
                }
            }
        })
        .buffer_unordered(4)
        .for_each(|()| async {});
    tokio::select! {
        _ = removals => {}
        _ = cancel.cancelled() => {}
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Keeps workers warm: tops every profile's reservoir up to its target plus the requests
/// waiting for it, within the capacity, and reaps idle workers.
async fn run_filler(pool: Weak<PoolInner>, cancel: CancellationToken) {
    let mut starts: JoinSet<bool> = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        let Some(inner) = pool.upgrade() else { break };
        inner.reap();
        let mut start_failed = false;
        for (profile, target) in inner.targets() {
            let have = profile.warm() + profile.starting.load(Ordering::SeqCst);
            let want = target + profile.waiting.load(Ordering::SeqCst);
            for _ in have..want {
                if starts.len() >= inner.config.max_concurrent_starts {
                    break;
                }
                let permit = match inner.capacity.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_)
                        if profile.waiting.load(Ordering::SeqCst) > 0 && inner.evict_one_idle() =>
                    {
                        // The evicted worker's permit comes back once it is dropped.
                        continue;
                    }
                    Err(_) => break,
                };
                profile.starting.fetch_add(1, Ordering::SeqCst);
                starts.spawn(start_worker(inner.clone(), profile.clone(), permit));
            }
        }
        let wake_signal = inner.wake.clone();
        let wake = wake_signal.notified();
        drop(inner);
        let tick = if backoff.is_zero() {
            Duration::from_secs(1)
        } else {
            backoff
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake => {}
            _ = tokio::time::sleep(tick) => {}
            Some(done) = starts.join_next(), if !starts.is_empty() => {
                start_failed = matches!(done, Ok(false) | Err(_));
            }
        }
        backoff = if start_failed {
            (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(30))
        } else {
            Duration::ZERO
        };
        if start_failed {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
    // Let starts in flight finish (each is bounded by the start timeout): an aborted start
    // could leave a container the engine creates after the shutdown sweep.
    while starts.join_next().await.is_some() {}
}

async fn start_worker(
    inner: Arc<PoolInner>,
    profile: Arc<ProfilePool>,
    permit: OwnedSemaphorePermit,
) -> bool {
    let started = Worker::start(
        inner.runtime.clone(),
        inner.settings.clone(),
        profile.profile.clone(),
    )
    .await;
    profile.starting.fetch_sub(1, Ordering::SeqCst);
    let ok = match started {
        Ok(worker) if inner.cancel.is_cancelled() => {
            worker.remove().await;
            false
        }
        Ok(mut worker) => {
            if !worker.models().is_empty() {
                *lock(&inner.models) = worker.models().to_vec();
            }
            if let Some(version) = worker.cli_version() {
                *lock(&inner.cli_version) = Some(version.to_string());
            }
            worker.attach(permit, inner.graveyard.clone());
            inner.counters.started.fetch_add(1, Ordering::Relaxed);
            lock(&profile.reservoir).push_back(worker);
            *lock(&profile.last_start_error) = None;
            profile.reservoir_filled.notify_waiters();
            profile.reservoir_filled.notify_one();
            true
        }
        Err(e) => {
            inner
                .counters
                .start_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(cause = %e, "starting a worker");
            *lock(&profile.last_start_error) = Some((Instant::now(), e.to_string()));
            false
        }
    };
    inner.wake.notify_one();
    ok
}

/// A worker checked out for one request. Serve it with `start_turn`; a lease dropped unused
/// returns the worker untouched.
pub struct Lease {
    worker: Option<Object<OwnerManager>>,
    owner: Arc<OwnerState>,
    pool: Arc<PoolInner>,
}

impl Lease {
    pub fn worker(&self) -> &Worker {
        self.worker
            .as_ref()
            .expect("a lease holds its worker until it is consumed")
    }

    /// Starts the turn in a task the pool owns and returns its events. Dropping the stream
    /// interrupts the turn; the worker is then reset and kept, or retired, by policy.
    pub fn start_turn(mut self, request: TurnRequest) -> TurnStream {
        let worker = self.worker.take().expect("a lease is consumed once");
        let owner = self.owner.clone();
        let pool = self.pool.clone();
        spawn_turn(
            &self.pool,
            worker,
            request,
            move |worker, outcome, reply| async move {
                // The client has its answer first; the reset (`/clear`) happens after.
                reply.await;
                pool.release(worker, &owner, &outcome).await;
            },
        )
    }
}

/// Runs one turn in a task the pool owns and returns its events. `finish` gets the worker,
/// the outcome, and the future that sends the final `Finished` item; it decides whether that
/// is sent before or after it puts the worker away.
fn spawn_turn<W, F, Fut>(
    pool: &Arc<PoolInner>,
    mut worker: W,
    request: TurnRequest,
    finish: F,
) -> TurnStream
where
    W: std::ops::DerefMut<Target = Worker> + Send + 'static,
    F: FnOnce(W, TurnOutcome, futures::future::BoxFuture<'static, ()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    pool.counters.turns.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(pool.config.turn_channel_capacity);
    let cancel = pool.cancel.child_token();
    let stream_cancel = cancel.clone();
    let span = tracing::debug_span!("turn", worker = %worker.id());
    let releases = pool.clone();
    pool.tasks.spawn(tracing::Instrument::instrument(
        async move {
            let outcome = worker.run_turn(request, &tx, &cancel).await;
            let last = TurnItem::Finished(outcome.clone());
            let reply: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
                let _ = tx.send(last).await;
            });
            finish(worker, outcome, reply).await;
            releases.releases.send_modify(|n| *n += 1);
        },
        span,
    ));
    TurnStream {
        rx,
        cancel: stream_cancel,
    }
}

impl WarmPool {
    /// Starts a worker outside the shared reservoirs, for a session: its workspace is the
    /// session's volume, and it holds a capacity slot until it is dropped.
    pub async fn start_dedicated(
        &self,
        profile: LaunchProfile,
        workspace: SessionWorkspace,
    ) -> Result<Worker, PoolError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(PoolError::Closed);
        }
        let limit = inner.config.checkout_timeout;
        let slot = async {
            loop {
                if let Ok(permit) = inner.capacity.clone().try_acquire_owned() {
                    return Ok(permit);
                }
                if !inner.evict_one_idle() {
                    return inner
                        .capacity
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| PoolError::Closed);
                }
            }
        };
        let permit = tokio::time::timeout(limit, slot)
            .await
            .map_err(|_| PoolError::Busy(limit))??;
        let mut worker = Worker::start_in(
            inner.runtime.clone(),
            inner.settings.clone(),
            profile,
            Some(&workspace),
        )
        .await
        .map_err(|e| {
            inner
                .counters
                .start_failures
                .fetch_add(1, Ordering::Relaxed);
            PoolError::StartFailed(e.to_string())
        })?;
        inner.counters.started.fetch_add(1, Ordering::Relaxed);
        worker.attach(permit, inner.graveyard.clone());
        Ok(worker)
    }

    /// Runs a turn on a worker the caller owns (a session's). `done` gets the worker and the
    /// outcome back before the stream's final `Finished` item is sent, so whoever waits for
    /// the answer finds the worker put away.
    pub fn run_owned<F>(&self, worker: Worker, request: TurnRequest, done: F) -> TurnStream
    where
        F: FnOnce(Worker, &TurnOutcome) + Send + 'static,
    {
        spawn_turn(
            &self.inner,
            Box::new(worker),
            request,
            move |worker, outcome, reply| async move {
                done(*worker, &outcome);
                reply.await;
            },
        )
    }

    /// The container runtime the pool uses.
    pub fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.inner.runtime.clone()
    }
}

/// The events of one running turn; the last item is `TurnItem::Finished`. Dropping it
/// interrupts the turn.
pub struct TurnStream {
    rx: mpsc::Receiver<TurnItem>,
    cancel: CancellationToken,
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Stream for TurnStream {
    type Item = TurnItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TurnItem>> {
        self.rx.poll_recv(cx)
    }
}

impl TurnStream {
    /// Asks the worker to stop the turn; the stream still ends with its `Finished` item.
    pub fn interrupt(&self) {
        self.cancel.cancel();
    }

    /// A handle that interrupts the turn when cancelled, for stages that own the stream.
    pub fn interrupt_handle(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Collects the whole turn: its events and its outcome.
    pub async fn collect_all(mut self) -> (Vec<crate::domain::TurnEvent>, TurnOutcome) {
        let mut events = Vec::new();
        while let Some(item) = self.next().await {
            match item {
                TurnItem::Event(e) => events.push(e),
                TurnItem::Finished(outcome) => return (events, outcome),
            }
        }
        (
            events,
            TurnOutcome::failed("the turn ended without an outcome"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BlockDelta, TurnEvent};
    use crate::fake::FakeRuntime;

    fn settings() -> WorkerSettings {
        WorkerSettings {
            instance_id: format!("test-{}", uuid::Uuid::new_v4().simple()),
            silence_limit: Duration::from_millis(300),
            interrupt_grace: Duration::from_millis(200),
            start_timeout: Duration::from_secs(5),
            ..WorkerSettings::default()
        }
    }

    fn config(policy: ReusePolicy) -> PoolConfig {
        PoolConfig {
            policy,
            max_workers: 4,
            warm_default: 1,
            checkout_timeout: Duration::from_secs(2),
            ..PoolConfig::default()
        }
    }

    fn reuse(max_uses: u32) -> ReusePolicy {
        ReusePolicy::Reuse {
            max_uses,
            max_age: Duration::from_secs(3600),
        }
    }

    async fn pool_with(fake: &FakeRuntime, config: PoolConfig) -> WarmPool {
        let pool = WarmPool::start(
            Arc::new(fake.clone()),
            settings(),
            config,
            LaunchProfile::default(),
        )
        .await
        .unwrap();
        assert!(
            pool.wait_warm(1, Duration::from_secs(5)).await,
            "the pool warms up"
        );
        pool
    }

    fn text(events: &[TurnEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::BlockDelta {
                    delta: BlockDelta::Text(t),
                    ..
                } => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Serves one request and waits until the worker is back in its pool (or retired).
    async fn serve(pool: &WarmPool, owner: &str, prompt: &str) -> (String, TurnOutcome) {
        let lease = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::new(owner))
            .await
            .unwrap();
        let container = lease.worker().container_id().to_string();
        let (events, outcome) = lease
            .start_turn(TurnRequest::text(prompt))
            .collect_all()
            .await;
        assert_eq!(
            text(&events),
            if outcome.is_success() {
                format!("Echo: {prompt}")
            } else {
                text(&events)
            }
        );
        settle(pool).await;
        (container, outcome)
    }

    /// Waits until every turn started so far has been released.
    async fn settle(pool: &WarmPool) {
        let turns = pool.status().turns;
        assert!(
            pool.wait_releases(turns, Duration::from_secs(5)).await,
            "pool did not settle: {:?}",
            pool.status()
        );
    }

    #[tokio::test]
    async fn a_request_takes_a_prewarmed_worker_and_starts_none() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let starts_before = fake.starts();
        let lease = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
            .await
            .unwrap();
        assert_eq!(lease.worker().uses(), 0);
        assert_eq!(
            fake.starts(),
            starts_before,
            "no container started on the request path"
        );
        let (events, outcome) = lease
            .start_turn(TurnRequest::text("hi"))
            .collect_all()
            .await;
        assert_eq!(text(&events), "Echo: hi");
        assert!(outcome.is_success(), "{outcome:?}");
        pool.shutdown(Duration::from_secs(2)).await;
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test]
    async fn reuse_clears_between_requests_and_keeps_the_worker_for_its_owner() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let (first, _) = serve(&pool, "alice", "one").await;
        let (second, _) = serve(&pool, "alice", "two").await;
        assert_eq!(first, second, "the same owner gets the same worker back");
        let lines = fake.stdin_of(&first);
        let kinds: Vec<String> = lines
            .iter()
            .map(|l| match l["type"].as_str().unwrap() {
                "control_request" => l["request"]["subtype"].as_str().unwrap().to_string(),
                _ => l["message"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            })
            .collect();
        assert_eq!(kinds, vec!["initialize", "one", "/clear", "two", "/clear"]);
        for line in lines
            .iter()
            .filter(|l| l["type"] == "user" && l["message"]["content"][0]["text"] != "/clear")
        {
            assert_eq!(line["client_composed"], true);
        }
        assert_eq!(pool.status().reused, 1);
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_request_right_after_another_waits_for_the_reset_instead_of_taking_a_new_worker() {
        let mut fake = FakeRuntime::new();
        fake.clear_delay = Duration::from_millis(150);
        let pool = pool_with(&fake, config(reuse(10))).await;
        let owner = OwnerKey::new("alice");
        let lease = pool
            .checkout(&LaunchProfile::default(), &owner)
            .await
            .unwrap();
        let first = lease.worker().container_id().to_string();
        let (_, outcome) = lease
            .start_turn(TurnRequest::text("one"))
            .collect_all()
            .await;
        assert!(outcome.is_success());
        // The reset is still running: the next checkout waits for it.
        let lease = pool
            .checkout(&LaunchProfile::default(), &owner)
            .await
            .unwrap();
        assert_eq!(lease.worker().container_id(), first);
        assert_eq!(lease.worker().uses(), 1);
        drop(lease);
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_worker_never_serves_two_owners() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let (alice, _) = serve(&pool, "alice", "a").await;
        let (bob, _) = serve(&pool, "bob", "b").await;
        let (alice_again, _) = serve(&pool, "alice", "a2").await;
        assert_ne!(alice, bob);
        assert_eq!(alice, alice_again);
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn fresh_policy_retires_every_worker_after_one_request() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(ReusePolicy::Fresh)).await;
        let (first, _) = serve(&pool, "alice", "one").await;
        let (second, _) = serve(&pool, "alice", "two").await;
        assert_ne!(first, second);
        // The retired container goes away through the graveyard.
        for _ in 0..100 {
            if !fake.container_ids().contains(&first) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!fake.container_ids().contains(&first));
        assert!(
            !fake
                .stdin_of(&first)
                .iter()
                .any(|l| l["message"]["content"][0]["text"] == "/clear")
        );
        pool.shutdown(Duration::from_secs(2)).await;
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test]
    async fn reuse_retires_a_worker_at_its_maximum_number_of_uses() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(2))).await;
        let (a, _) = serve(&pool, "alice", "1").await;
        let (b, _) = serve(&pool, "alice", "2").await;
        let (c, _) = serve(&pool, "alice", "3").await;
        assert_eq!(a, b);
        assert_ne!(b, c, "retired after two uses");
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn waiting_is_bounded_and_ends_in_busy() {
        let fake = FakeRuntime::new();
        let pool = pool_with(
            &fake,
            PoolConfig {
                max_workers: 1,
                checkout_timeout: Duration::from_millis(200),
                ..config(reuse(10))
            },
        )
        .await;
        let held = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::new("a"))
            .await
            .unwrap();
        let started = Instant::now();
        let second = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::new("b"))
            .await;
        assert!(
            matches!(second, Err(PoolError::Busy(_))),
            "{:?}",
            second.err()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(held);
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn an_idle_worker_of_another_owner_is_evicted_when_capacity_runs_out() {
        let fake = FakeRuntime::new();
        let pool = pool_with(
            &fake,
            PoolConfig {
                max_workers: 1,
                ..config(reuse(10))
            },
        )
        .await;
        let (alice, _) = serve(&pool, "alice", "a").await;
        let (bob, outcome) = serve(&pool, "bob", "b").await;
        assert!(outcome.is_success());
        assert_ne!(alice, bob);
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_worker_killed_while_idle_is_never_handed_out_and_is_replaced() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let (first, _) = serve(&pool, "alice", "one").await;
        fake.kill(&first);
        let (second, outcome) = serve(&pool, "alice", "two").await;
        assert_ne!(first, second);
        assert!(outcome.is_success(), "{outcome:?}");
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_worker_killed_mid_request_fails_that_request_and_is_retired() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let lease = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
            .await
            .unwrap();
        let container = lease.worker().container_id().to_string();
        let mut stream = lease.start_turn(TurnRequest::text("[[slow]]"));
        assert!(matches!(stream.next().await, Some(TurnItem::Event(_))));
        fake.kill(&container);
        let (_, outcome) = stream.collect_all().await;
        assert!(
            matches!(outcome.status, TurnStatus::WorkerFailed(_)),
            "{outcome:?}"
        );
        assert!(pool.wait_warm(1, Duration::from_secs(5)).await, "replaced");
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn dropping_the_stream_interrupts_the_turn_and_the_worker_is_reused() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let lease = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
            .await
            .unwrap();
        let container = lease.worker().container_id().to_string();
        let mut stream = lease.start_turn(TurnRequest::text("[[slow]]"));
        assert!(matches!(stream.next().await, Some(TurnItem::Event(_))));
        drop(stream);
        settle(&pool).await;
        let lines = fake.stdin_of(&container);
        assert!(
            lines.iter().any(|l| l["request"]["subtype"] == "interrupt"),
            "{lines:?}"
        );
        let (again, outcome) = serve(&pool, "anonymous", "after").await;
        assert_eq!(again, container);
        assert!(outcome.is_success());
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn the_watchdog_ends_a_silent_turn_and_kills_the_cli() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let started = Instant::now();
        let (container, outcome) = serve(&pool, "alice", "[[hang]]").await;
        assert!(
            matches!(&outcome.status, TurnStatus::WorkerFailed(why) if why.contains("silent")),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        let (next, _) = serve(&pool, "alice", "next").await;
        assert_ne!(next, container, "a worker that hung is not reused");
        pool.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn shutdown_removes_every_container_and_refuses_new_requests() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        serve(&pool, "a", "x").await;
        serve(&pool, "b", "y").await;
        pool.shutdown(Duration::from_secs(2)).await;
        assert!(fake.container_ids().is_empty());
        let after = pool
            .checkout(&LaunchProfile::default(), &OwnerKey::anonymous())
            .await;
        assert!(matches!(after, Err(PoolError::Closed)));
    }

    #[tokio::test]
    async fn a_new_profile_gets_its_own_workers_and_recent_profiles_stay_warm() {
        let fake = FakeRuntime::new();
        let pool = pool_with(&fake, config(reuse(10))).await;
        let other = LaunchProfile {
            system_prompt: Some("Be brief.".into()),
            ..LaunchProfile::default()
        };
        let lease = pool.checkout(&other, &OwnerKey::anonymous()).await.unwrap();
        assert_eq!(lease.worker().profile(), &other);
        drop(lease);
        for _ in 0..200 {
            if pool
                .status()
                .profiles
                .iter()
                .any(|p| !p.is_default && p.warm == 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = pool.status();
        assert_eq!(status.profiles.len(), 2);
        assert_eq!(status.profiles[1].warm, 1, "{status:?}");
        pool.shutdown(Duration::from_secs(2)).await;
    }
}
