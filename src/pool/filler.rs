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
use super::prewarmed::start_prewarmed;
use super::reservoir::ProfilePool;
use super::{PoolInner, lock};
use crate::worker::Worker;

/// How many warm workers a profile should have, and why (shown in `/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) count: usize,
    pub(super) why: String,
}

impl PoolInner {
    /// How many warm workers each profile should have now, and why.
    pub(super) fn targets(&self) -> Vec<(Arc<ProfilePool>, Target)> {
        let profiles = lock(&self.profiles).clone();
        profiles
            .iter()
            .enumerate()
            .map(|(rank, p)| (p.clone(), self.target_of(rank, p)))
            .collect()
    }

    /// A profile's target: the peak of its requests in flight at once within the demand
    /// window, at least its configured minimum (by its rank: the default profile first, then
    /// the others, most recently used first), at most `max_workers`; none once the filler
    /// gave it up after failed starts.
    fn target_of(&self, rank: usize, profile: &ProfilePool) -> Target {
        let config = &self.config;
        if profile.failures.given_up() {
            let failed = profile.failures.in_a_row();
            return Target {
                count: 0,
                why: format!(
                    "not refilled after {failed} failed starts in a row, until a request asks for it"
                ),
            };
        }
        let (minimum, why) = if rank == 0 {
            (
                config.warm_default,
                "configured minimum (--warm)".to_string(),
            )
        } else if rank <= config.recent_profiles {
            (
                config.warm_recent,
                format!(
                    "minimum of the {} most recently used other profiles",
                    config.recent_profiles
                ),
            )
        } else {
            (0, "no recent demand".to_string())
        };
        let window = config.demand_window;
        let peak = if window.is_zero() {
            0
        } else {
            profile.demand.peak(window)
        };
        let (count, why) = if peak > minimum {
            (peak, format!("peak {peak} in last {}s", window.as_secs()))
        } else {
            (minimum, why)
        };
        if count > config.max_workers {
            return Target {
                count: config.max_workers,
                why: format!("{why}, capped at --max-workers"),
            };
        }
        Target { count, why }
    }

    /// Retires idle workers past the idle timeout or the reuse policy, forgets empty owner
    /// pools, drops dead reservoir workers and those of profiles no longer kept warm, and ends
    /// expired holdings.
    fn reap(self: &Arc<Self>) {
        let surplus = self.prewarmed.take_surplus();
        if !surplus.is_empty() {
            self.count_retired(surplus.len());
            for prewarmed in surplus {
                self.tasks.spawn(prewarmed.remove());
            }
        }
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
            self.count_retired(profile.trim(target.count));
        }
    }
}

/// Keeps workers warm: tops every profile's reservoir up to its target plus the requests
/// waiting for it, within the capacity, and reaps idle workers. A profile whose starts fail
/// gets one start at a time, each after a longer wait (`StartBackoff`).
pub(super) async fn run_filler(pool: Weak<PoolInner>, cancel: CancellationToken) {
    let mut starts: JoinSet<()> = JoinSet::new();
    loop {
        let Some(inner) = pool.upgrade() else { break };
        inner.reap();
        let mut tick = Duration::from_secs(1);
        for (profile, target) in inner.targets() {
            if let Some(at) = profile.failures.backing_off_until() {
                tick = tick.min(at.saturating_duration_since(tokio::time::Instant::now()));
                continue;
            }
            let have = profile.warm() + profile.starting();
            let mut want = target.count + profile.waiting();
            if profile.failures.in_a_row() > 0 {
                // Its last start failed: one at a time until one succeeds.
                want = want.min(profile.warm() + 1);
            }
            for _ in have..want {
                if starts.len() >= inner.config.max_concurrent_starts {
                    break;
                }
                let permit = match inner.capacity.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) if profile.unserved() > 0 && inner.evict_one_idle(Some(&profile)) => {
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
        // Pre-warmed session workers, after the profiles' (a request waits on those).
        let sessions = &inner.prewarmed;
        let (profile, count) = sessions.wanted();
        match sessions.failures.backing_off_until() {
            Some(at) => tick = tick.min(at.saturating_duration_since(tokio::time::Instant::now())),
            None if !sessions.failures.given_up() => {
                let have = sessions.ready() + sessions.starting();
                let want = if sessions.failures.in_a_row() > 0 {
                    count.min(sessions.ready() + 1)
                } else {
                    count
                };
                for _ in have..want {
                    if starts.len() >= inner.config.max_concurrent_starts {
                        break;
                    }
                    let permit = match inner.capacity.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        // Room only from workers nobody is likely to use soon.
                        Err(_) if inner.evict_one_stale() => continue,
                        Err(_) => break,
                    };
                    sessions.starting.fetch_add(1, Ordering::SeqCst);
                    starts.spawn(start_prewarmed(inner.clone(), profile.clone(), permit));
                }
            }
            None => {}
        }
        let wake_signal = inner.wake.clone();
        let wake = wake_signal.notified();
        drop(inner);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake => {}
            _ = tokio::time::sleep(tick) => {}
            Some(_) = starts.join_next(), if !starts.is_empty() => {}
        }
    }
    // Let starts in flight finish (each is bounded by the start timeout): an aborted start
    // could leave a container the engine creates after the shutdown sweep.
    while starts.join_next().await.is_some() {}
}

/// Starts one worker for `profile` and puts it in the reservoir; a failure backs the profile
/// off.
async fn start_worker(
    inner: Arc<PoolInner>,
    profile: Arc<ProfilePool>,
    permit: OwnedSemaphorePermit,
) {
    let started = Worker::start(
        inner.runtime.clone(),
        inner.settings.clone(),
        profile.profile.clone(),
    )
    .await;
    // Counted as starting until its outcome is recorded, so a look at the pool never sees it
    // neither starting nor warm nor failed.
    let done = || profile.starting.fetch_sub(1, Ordering::SeqCst);
    match started {
        Ok(worker) if inner.cancel.is_cancelled() => {
            done();
            worker.remove().await
        }
        Ok(mut worker) => {
            done();
            if !worker.models().is_empty() {
                *lock(&inner.models) = worker.models().to_vec();
            }
            if let Some(version) = worker.cli_version() {
                *lock(&inner.cli_version) = Some(version.to_string());
            }
            worker.attach(permit, inner.graveyard.clone());
            inner.counters.count_started();
            profile.put_warm(worker);
        }
        Err(e) => {
            inner.counters.count_start_failure();
            let (retry_in, given_up) = profile
                .failures
                .failed(e.to_string(), &inner.config.start_backoff);
            done();
            tracing::warn!(cause = %e, profile = %profile.profile.fingerprint(), ?retry_in, given_up, "starting a worker");
        }
    }
    inner.wake.notify_one();
}
