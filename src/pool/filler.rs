//! The filler task: keeps every profile's reservoir topped up to its target plus the requests
//! waiting for it, within the capacity (evicting the least recently used idle worker for a
//! waiting request), and reaps idle workers and drained profiles.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::owner::within_policy;
use super::reservoir::ProfilePool;
use super::{PoolInner, lock};
use crate::worker::Worker;

impl PoolInner {
    /// How many warm workers each profile should have now.
    pub(super) fn targets(&self) -> Vec<(Arc<ProfilePool>, usize)> {
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
    /// pools, drops dead reservoir workers and those of profiles no longer kept warm, and ends
    /// expired holdings.
    fn reap(self: &Arc<Self>) {
        let idle_timeout = self.config.idle_timeout;
        let policy = self.config.policy;
        for (profile, target) in self.targets() {
            self.reap_held(&profile);
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
            self.count_retired(profile.trim(target));
        }
    }
}

/// Keeps workers warm: tops every profile's reservoir up to its target plus the requests
/// waiting for it, within the capacity, and reaps idle workers.
pub(super) async fn run_filler(pool: Weak<PoolInner>, cancel: CancellationToken) {
    let mut starts: JoinSet<bool> = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        let Some(inner) = pool.upgrade() else { break };
        inner.reap();
        let mut start_failed = false;
        for (profile, target) in inner.targets() {
            let have = profile.warm() + profile.starting();
            let want = target + profile.waiting();
            for _ in have..want {
                if starts.len() >= inner.config.max_concurrent_starts {
                    break;
                }
                let permit = match inner.capacity.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) if profile.unserved() > 0 && inner.evict_one_idle() => {
                        // Requests wait that no warm worker or start in flight will serve:
                        // the evicted worker's permit comes back once it is dropped.
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

/// Starts one worker for `profile` and puts it in the reservoir; returns whether it started.
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
            inner.counters.count_started();
            profile.put_warm(worker);
            true
        }
        Err(e) => {
            inner.counters.count_start_failure();
            tracing::warn!(cause = %e, "starting a worker");
            profile.record_start_error(e.to_string());
            false
        }
    };
    inner.wake.notify_one();
    ok
}
