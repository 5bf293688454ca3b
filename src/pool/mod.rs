//! The warm pool: workers started ahead of demand per launch profile, checked out for one
//! request, then reset and kept for the same owner, or retired, by policy. Knows workers and
//! the runtime seam; knows nothing of HTTP or of the CLI's wire format.
//!
//! Layout, one noun per file: `reservoir` (a profile's never-used warm workers) and `filler`
//! (the task that tops reservoirs up, reaps and evicts); `owner` (per (profile, owner), a
//! deadpool pool whose `create` takes a worker from the reservoir, so a worker that served one
//! owner only ever returns to that owner's pool, and the release after a turn); `lease` (a
//! checked-out worker, the turn task and its `TurnStream`); `hold` (a used worker kept unreset
//! for the conversation it served, or parked on client tools) and `conversation` (the
//! fingerprints that decide whether a request continues a held conversation); `graveyard`
//! (container removal); `status` (counters and snapshots). A semaphore bounds the number of containers; every
//! worker holds one permit.

mod backoff;
pub(crate) mod conversation;
mod demand;
mod filler;
mod graveyard;
mod hold;
mod lease;
mod owner;
mod prewarmed;
mod reservoir;
mod status;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{LaunchProfile, ModelInfo, OwnerKey, TurnOutcome, TurnRequest};
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::worker::{SessionWorkspace, Worker, WorkerSettings};

pub use backoff::StartBackoff;
pub use lease::{Lease, TurnStream};
pub use status::{PoolStatus, ProfileStatus};

use demand::InFlight;
use hold::HoldPlan;
use reservoir::ProfilePool;
use status::Counters;

/// What happens to a worker after it served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReusePolicy {
    /// Reset it (`Worker::reset`) and keep it for the same owner, up to `max_uses` requests and
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
    /// Warm workers kept for the default profile at least.
    pub warm_default: usize,
    /// Warm workers kept at least for each of the most recently used other profiles.
    pub warm_recent: usize,
    /// How many other profiles keep `warm_recent` warm workers.
    pub recent_profiles: usize,
    /// The adaptive warm pool: every profile keeps as many warm workers as the most requests
    /// it had in flight at once within this window (at least its minimum above, at most
    /// `max_workers`). Zero turns it off.
    pub demand_window: Duration,
    /// How the filler backs off a profile whose workers fail to start.
    pub start_backoff: StartBackoff,
    /// How long a request may wait for a worker before it is told the pool is busy.
    pub checkout_timeout: Duration,
    /// A reusable worker idle this long is retired.
    pub idle_timeout: Duration,
    /// How long a reset may take.
    pub reset_timeout: Duration,
    /// Worker starts in flight at once (each costs most of a CPU-second).
    pub max_concurrent_starts: usize,
    /// Capacity of the channel between a running turn and its consumer.
    pub turn_channel_capacity: usize,
    /// How long a worker holds a conversation for its next turn (zero: never holds).
    pub hold_idle: Duration,
    /// How long a worker parked on client tool calls waits for their results.
    pub parked_idle: Duration,
    /// A new conversation that would wait for a cold start takes over (resets) its owner's
    /// least recently used holding idle this long (any, when capacity is used up).
    pub takeover_idle: Duration,
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
            demand_window: Duration::from_secs(60),
            start_backoff: StartBackoff::default(),
            checkout_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            reset_timeout: Duration::from_secs(10),
            max_concurrent_starts: 2,
            turn_channel_capacity: 64,
            hold_idle: Duration::from_secs(300),
            parked_idle: Duration::from_secs(900),
            takeover_idle: Duration::from_secs(1),
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
}

/// What the pool's parts share.
struct PoolInner {
    runtime: Arc<dyn ContainerRuntime>,
    settings: Arc<WorkerSettings>,
    config: PoolConfig,
    capacity: Arc<Semaphore>,
    /// The default profile first, then the others, most recently used first.
    profiles: Mutex<Vec<Arc<ProfilePool>>>,
    /// Session workers started ahead on fresh volumes, for new sessions to claim.
    prewarmed: prewarmed::SessionReservoir,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let leftovers =
            graveyard::remove_instance_containers(runtime.as_ref(), &settings.instance_id).await?;
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
            prewarmed: prewarmed::SessionReservoir::default(),
            graveyard,
            wake: Arc::new(Notify::new()),
            counters: Counters::default(),
            models: Mutex::new(Vec::new()),
            cli_version: Mutex::new(None),
            releases: tokio::sync::watch::Sender::new(0),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        inner.tasks.spawn(graveyard::run_graveyard(
            inner.runtime.clone(),
            buried,
            inner.cancel.clone(),
        ));
        inner.tasks.spawn(filler::run_filler(
            Arc::downgrade(&inner),
            inner.cancel.clone(),
        ));
        Ok(WarmPool { inner })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
    }

    /// The container runtime the pool uses.
    pub fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.inner.runtime.clone()
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
        let in_flight = profile_pool.demand.begin();
        self.checkout_counted(profile_pool, owner, in_flight).await
    }

    /// `checkout`, for a request already counted in its profile's demand.
    async fn checkout_counted(
        &self,
        profile_pool: Arc<ProfilePool>,
        owner: &OwnerKey,
        in_flight: InFlight,
    ) -> Result<Lease, PoolError> {
        if self.inner.cancel.is_cancelled() {
            return Err(PoolError::Closed);
        }
        // A request for a profile the filler gave up on makes it try again (backing off).
        profile_pool.failures.asked_for();
        let (owner_pool, owner_state) = self.inner.owner_pool(&profile_pool, owner);
        let limit = self.inner.config.checkout_timeout;
        let get = async {
            // A worker of this owner being reset is back within moments: wait for it rather
            // than spend a never-used worker.
            owner_state
                .wait_for_resets(self.inner.config.reset_timeout)
                .await;
            owner_pool.get().await
        };
        match tokio::time::timeout(limit, get).await {
            Ok(Ok(worker)) => {
                if worker.uses() > 0 {
                    self.inner.counters.count_reused();
                }
                Ok(Lease::new(worker, owner_state, self.inner.clone()).counting(in_flight))
            }
            Ok(Err(managed::PoolError::Backend(e))) => Err(e),
            Ok(Err(managed::PoolError::Closed)) => Err(PoolError::Closed),
            Ok(Err(other)) => Err(PoolError::StartFailed(other.to_string())),
            Err(_) => Err(match profile_pool.recent_start_error(limit) {
                Some(e) => PoolError::StartFailed(e),
                None => PoolError::Busy(limit),
            }),
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

    /// Serves one turn of a stateless conversation. When the request continues a conversation
    /// a worker of this owner holds (its history fingerprints equal to what that worker has in
    /// its context), that worker gets only the new user turn: no replay and no CLI start.
    /// Otherwise the turn goes to a checked-out worker, which replays the history. Either way,
    /// the worker may hold the conversation afterwards.
    pub async fn run_conversation(
        &self,
        profile: &LaunchProfile,
        owner: &OwnerKey,
        turn: TurnRequest,
    ) -> Result<TurnStream, PoolError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(PoolError::Closed);
        }
        if !inner.may_hold(profile) {
            return self.run(profile, owner, turn).await;
        }
        let continuation = conversation::continuation(&turn);
        let profile_pool = inner.profile_pool(profile);
        let in_flight = profile_pool.demand.begin();
        if let Some(held) = inner.take_live_held(&profile_pool, owner, continuation.before) {
            inner.counters.count_continued();
            tracing::debug!(conversation = ?continuation.before, "continuing a held conversation");
            let request = TurnRequest {
                history: Vec::new(),
                content: continuation.user.clone(),
                model: turn.model,
                tools: turn.tools,
                tool_choice: turn.tool_choice,
            };
            let owner_state = held.owner_state.clone();
            let plan = HoldPlan {
                profile: profile_pool,
                owner: owner.clone(),
                continuation,
                first_turn: false,
            };
            let lease = Lease::new(held.into_worker(), owner_state, inner.clone());
            return Ok(lease.counting(in_flight).holding(plan).start_turn(request));
        }
        let first_turn = turn.history.is_empty();
        if !first_turn {
            inner.counters.count_replayed();
        }
        let lease = match inner
            .take_over_holding(&profile_pool, owner, first_turn)
            .await
        {
            Some(lease) => lease.counting(in_flight),
            None => {
                // While it waits for a start, a holding of its owner that it may take over
                // (a new one, or one that has idled long enough) is taken over instead.
                let mut checkout =
                    Box::pin(self.checkout_counted(profile_pool.clone(), owner, in_flight));
                enum Got {
                    CheckedOut(Lease),
                    TakenOver(Lease),
                }
                let got = loop {
                    let held_added = profile_pool.held_added.notified();
                    tokio::pin!(held_added);
                    held_added.as_mut().enable();
                    let idled = profile_pool
                        .next_candidate_in(owner, inner.config.takeover_idle, first_turn)
                        .unwrap_or(inner.config.checkout_timeout);
                    tokio::select! {
                        lease = &mut checkout => break Got::CheckedOut(lease?),
                        _ = held_added => {}
                        _ = tokio::time::sleep(idled) => {}
                    }
                    if let Some(lease) = inner
                        .take_over_holding(&profile_pool, owner, first_turn)
                        .await
                    {
                        break Got::TakenOver(lease);
                    }
                };
                match got {
                    Got::CheckedOut(lease) => lease,
                    Got::TakenOver(lease) => {
                        // The abandoned checkout stops counting before the takeover does.
                        drop(checkout);
                        lease.counting(profile_pool.demand.begin())
                    }
                }
            }
        };
        let plan = HoldPlan {
            profile: profile_pool,
            owner: owner.clone(),
            continuation,
            first_turn,
        };
        Ok(lease.holding(plan).start_turn(turn))
    }

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
                if !inner.evict_one_idle(None) {
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
        // The session's request waits for this start: the usual CPU weight.
        let mut worker = Worker::start_in(
            inner.runtime.clone(),
            inner.settings.clone(),
            profile,
            Some(&workspace),
            false,
        )
        .await
        .map_err(|e| {
            inner.counters.count_start_failure();
            PoolError::StartFailed(e.to_string())
        })?;
        inner.counters.count_started();
        worker.attach(permit, inner.graveyard.clone());
        Ok(worker)
    }

    /// Keeps `count` session workers pre-warmed (0: none), each on a fresh volume of its own
    /// (see `prewarmed`), for `claim_prewarmed`.
    pub fn prewarm_sessions(&self, count: usize) {
        self.inner.prewarmed.set_count(count);
        self.inner.wake.notify_one();
    }

    /// A pre-warmed session worker of `profile`, if one is ready: it is the caller's from now
    /// on, and so is its workspace (the volume it runs on). Either way, the next pre-warmed
    /// workers are for `profile` (the latest new session's).
    pub fn claim_prewarmed(&self, profile: &LaunchProfile) -> Option<(Worker, SessionWorkspace)> {
        let reservoir = &self.inner.prewarmed;
        reservoir.set_profile(profile);
        reservoir.failures.asked_for();
        let claimed = reservoir.claim(profile);
        self.inner.wake.notify_one();
        claimed
    }

    /// Runs a turn on a worker the caller owns (a session's). `done` gets the worker and the
    /// outcome back before the stream's final `Finished` item is sent, so whoever waits for
    /// the answer finds the worker put away.
    pub fn run_owned<F>(&self, worker: Worker, request: TurnRequest, done: F) -> TurnStream
    where
        F: FnOnce(Worker, &TurnOutcome) + Send + 'static,
    {
        lease::spawn_turn(
            &self.inner,
            Box::new(worker),
            request,
            move |worker, outcome, _cut, reply| async move {
                done(*worker, &outcome);
                reply.await;
            },
        )
    }

    /// Waits until the default profile has at least `n` warm workers (for tests, benchmarks
    /// and readiness). Gives up after `limit`.
    pub async fn wait_warm(&self, n: usize, limit: Duration) -> bool {
        let profile = lock(&self.inner.profiles)[0].clone();
        tokio::time::timeout(limit, profile.wait_warm(n))
            .await
            .is_ok()
    }

    /// Waits until `n` turns have been released (their workers reset and back in their pool,
    /// or retired). Gives up after `limit`.
    pub async fn wait_releases(&self, n: u64, limit: Duration) -> bool {
        let mut releases = self.inner.releases.subscribe();
        tokio::time::timeout(limit, releases.wait_for(|done| *done >= n))
            .await
            .is_ok()
    }

    /// The CLI's version (unknown until a worker has started).
    pub fn cli_version(&self) -> Option<String> {
        lock(&self.inner.cli_version).clone()
    }

    /// The models the CLI offers (empty until a worker has started).
    pub fn models(&self) -> Vec<ModelInfo> {
        lock(&self.inner.models).clone()
    }

    /// The model the default profile's workers run: the configured default model, else the
    /// one the CLI resolves its `default` to (known once a worker has started). A request
    /// naming it is served by the default profile's warm workers.
    pub fn default_model(&self) -> Option<String> {
        if let Some(model) = &self.inner.settings.cli.model {
            return Some(model.clone());
        }
        lock(&self.inner.models)
            .iter()
            .find(|m| m.alias == "default")
            .map(|m| m.id.clone())
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
        let prewarmed = inner.prewarmed.drain();
        futures::future::join_all(prewarmed.into_iter().map(prewarmed::Prewarmed::remove)).await;
        let profiles: Vec<Arc<ProfilePool>> = lock(&inner.profiles).drain(..).collect();
        for profile in profiles {
            for pool in profile.owner_pools() {
                pool.close();
            }
            drop(profile.drain_held());
            lock(&profile.owners).clear();
            let workers = profile.drain();
            futures::future::join_all(workers.into_iter().map(Worker::remove)).await;
        }
        match graveyard::remove_instance_containers(
            inner.runtime.as_ref(),
            &inner.settings.instance_id,
        )
        .await
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

    /// Whether turns of `profile` may hold their conversation: not with a JSON schema (the
    /// CLI's context then holds a structured-output tool call the client never saw).
    fn may_hold(&self, profile: &LaunchProfile) -> bool {
        !self.config.hold_idle.is_zero() && profile.json_schema.is_none()
    }

    /// The holding of `owner`'s conversation `before`, if its worker is alive and its context
    /// exact. A holding found dead or cut ends here.
    fn take_live_held(
        self: &Arc<Self>,
        profile: &ProfilePool,
        owner: &OwnerKey,
        before: conversation::Fingerprint,
    ) -> Option<hold::Held> {
        let mut held = profile.take_held(owner, before)?;
        if held.exact() && held.worker_mut().is_alive() {
            return Some(held);
        }
        self.end_holding(held);
        None
    }

    /// When `owner` has no idle worker for this profile and none is warm, so the request
    /// would wait for a cold start, its least recently used holding (not parked) is reset and
    /// serves the request instead: a reset costs a few milliseconds, a cold start most of a
    /// second. A first turn (`first_turn`) takes over a first turn's holding at once (nothing
    /// says either client continues its conversations: a burst of one-shot requests runs on
    /// the workers it has); any other holding, or for any other request, only once idle for
    /// `takeover_idle` (a client that continues its conversations sends its next turn within
    /// moments), unless capacity is used up (then a holding would be evicted to make room for
    /// that cold start anyway).
    async fn take_over_holding(
        self: &Arc<Self>,
        profile: &Arc<ProfilePool>,
        owner: &OwnerKey,
        first_turn: bool,
    ) -> Option<Lease> {
        let (owner_pool, owner_state) = self.owner_pool(profile, owner);
        if owner_pool.status().available > 0 || profile.warm() > 0 {
            return None;
        }
        let min_idle = if self.capacity.available_permits() == 0 {
            Duration::ZERO
        } else {
            self.config.takeover_idle
        };
        let held = profile.take_over_candidate(owner, min_idle, first_turn)?;
        let mut worker = held.into_worker();
        if !worker.is_alive() || !owner::within_policy(self.config.policy, &worker) {
            drop(managed::Object::take(worker));
            self.count_retired(1);
            return None;
        }
        match worker.reset(self.config.reset_timeout).await {
            Ok(()) => {
                self.counters.count_reused();
                Some(Lease::new(worker, owner_state, self.clone()))
            }
            Err(e) => {
                tracing::debug!(cause = %e, "a holding taken over could not be reset");
                drop(managed::Object::take(worker));
                self.count_retired(1);
                None
            }
        }
    }

    /// Counts retired workers and wakes the filler to replace them.
    fn count_retired(&self, n: usize) {
        if n > 0 {
            self.counters.count_retired(n);
            self.wake.notify_one();
        }
    }
}
