//! Pre-warmed session workers: containers started ahead, each on a fresh workspace volume of
//! its own and with its CLI waiting on stdin, that a new session claims instead of starting
//! its container and CLI on its first request.
//!
//! Docker volumes and labels cannot be renamed, and a pre-warmed worker's session is not
//! known yet, so its volume is named `ccpool.{instance}.prewarmed-{id}` and labelled
//! `ccpool.session=prewarmed-{id}`: two dots where a session's own volume name
//! (`ccpool.{instance}.{owner}.{id}`) has three, so the two kinds never collide, and a
//! session that claims one keeps these names (the session registry records them). A
//! pre-warmed worker has never run anything and its volume is empty, so it belongs to no
//! owner until it is claimed. Unclaimed ones are removed with their volumes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use super::backoff::StartFailures;
use super::{PoolInner, lock};
use crate::domain::LaunchProfile;
use crate::runtime::{ContainerRuntime, LABEL_INSTANCE, LABEL_MANAGED, LABEL_SESSION};
use crate::worker::{SessionWorkspace, Worker};

/// A started worker on its own fresh volume, not yet claimed by a session.
pub(super) struct Prewarmed {
    worker: Option<Worker>,
    workspace: SessionWorkspace,
    runtime: Arc<dyn ContainerRuntime>,
}

impl Drop for Prewarmed {
    fn drop(&mut self) {
        // Unclaimed: its container first, then its volume (a volume in use cannot go).
        if let Some(worker) = self.worker.take() {
            let runtime = self.runtime.clone();
            let volume = self.workspace.volume.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    worker.remove().await;
                    if let Err(e) = runtime.remove_volume(&volume).await {
                        tracing::warn!(cause = %e, "removing an unclaimed pre-warmed volume");
                    }
                });
            }
        }
    }
}

impl Prewarmed {
    /// Removes its container and then its volume.
    pub(super) async fn remove(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.remove().await;
        }
        if let Err(e) = self.runtime.remove_volume(&self.workspace.volume).await {
            tracing::warn!(cause = %e, "removing an unclaimed pre-warmed volume");
        }
    }
}

/// The pre-warmed session workers: how many are wanted, and for which launch profile (the
/// latest new session's).
#[derive(Default)]
pub(super) struct SessionReservoir {
    wanted: Mutex<(LaunchProfile, usize)>,
    ready: Mutex<VecDeque<Prewarmed>>,
    pub(super) starting: AtomicUsize,
    pub(super) failures: StartFailures,
}

impl SessionReservoir {
    /// The profile to pre-warm, and how many.
    pub(super) fn wanted(&self) -> (LaunchProfile, usize) {
        lock(&self.wanted).clone()
    }

    pub(super) fn set_count(&self, count: usize) {
        lock(&self.wanted).1 = count;
    }

    /// A new session asked for `profile`: the next pre-warmed workers are for it.
    pub(super) fn set_profile(&self, profile: &LaunchProfile) {
        let mut wanted = lock(&self.wanted);
        if wanted.0 != *profile {
            wanted.0 = profile.clone();
        }
    }

    pub(super) fn ready(&self) -> usize {
        lock(&self.ready).len()
    }

    pub(super) fn starting(&self) -> usize {
        self.starting.load(Ordering::SeqCst)
    }

    /// A live pre-warmed worker of `profile`, claimed: its volume is the caller's from now on.
    pub(super) fn claim(&self, profile: &LaunchProfile) -> Option<(Worker, SessionWorkspace)> {
        let mut ready = lock(&self.ready);
        while let Some(i) = ready
            .iter()
            .position(|p| p.worker.as_ref().is_some_and(|w| w.profile() == profile))
        {
            let mut prewarmed = ready.remove(i).expect("found above");
            let mut worker = prewarmed.worker.take().expect("unclaimed");
            if worker.is_alive() {
                return Some((worker, prewarmed.workspace.clone()));
            }
            // Dead: dropping it with its worker put back removes both.
            prewarmed.worker = Some(worker);
        }
        None
    }

    /// Takes out the dead ones, those of another profile than the wanted one and those above
    /// the wanted count (the newest first), for removal.
    pub(super) fn take_surplus(&self) -> Vec<Prewarmed> {
        let (profile, count) = self.wanted();
        let mut ready = lock(&self.ready);
        let (mut keep, mut out): (VecDeque<Prewarmed>, Vec<Prewarmed>) =
            (VecDeque::new(), Vec::new());
        for mut p in ready.drain(..) {
            let fits = p
                .worker
                .as_mut()
                .is_some_and(|w| w.profile() == &profile && w.is_alive());
            if fits && keep.len() < count {
                keep.push_back(p);
            } else {
                out.push(p);
            }
        }
        *ready = keep;
        out
    }

    /// The newest one, to make room for a request that waits.
    pub(super) fn take_newest(&self) -> Option<Prewarmed> {
        lock(&self.ready).pop_back()
    }

    pub(super) fn drain(&self) -> Vec<Prewarmed> {
        lock(&self.ready).drain(..).collect()
    }

    fn put(&self, prewarmed: Prewarmed) {
        lock(&self.ready).push_back(prewarmed);
        self.failures.succeeded();
    }
}

/// Starts one pre-warmed session worker: a fresh volume, then a container on it and its CLI.
pub(super) async fn start_prewarmed(
    inner: Arc<PoolInner>,
    profile: LaunchProfile,
    permit: OwnedSemaphorePermit,
) {
    let reservoir = &inner.prewarmed;
    let id = format!(
        "prewarmed-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let workspace = SessionWorkspace {
        volume: format!("ccpool.{}.{id}", inner.settings.instance_id),
        session_id: id,
    };
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (
            LABEL_INSTANCE.to_string(),
            inner.settings.instance_id.clone(),
        ),
        (LABEL_SESSION.to_string(), workspace.session_id.clone()),
    ]);
    let runtime = inner.runtime.clone();
    let started = match runtime.create_volume(&workspace.volume, &labels).await {
        Ok(()) => Worker::start_in(
            runtime.clone(),
            inner.settings.clone(),
            profile,
            Some(&workspace),
            true,
        )
        .await
        .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let done = || reservoir.starting.fetch_sub(1, Ordering::SeqCst);
    match started {
        Ok(mut worker) => {
            done();
            worker.attach(permit, inner.graveyard.clone());
            let prewarmed = Prewarmed {
                worker: Some(worker),
                workspace,
                runtime,
            };
            if inner.cancel.is_cancelled() {
                prewarmed.remove().await;
            } else {
                inner.counters.count_started();
                reservoir.put(prewarmed);
            }
        }
        Err(e) => {
            inner.counters.count_start_failure();
            if let Err(e) = runtime.remove_volume(&workspace.volume).await {
                tracing::warn!(cause = %e, "removing the volume of a session worker that failed to start");
            }
            let (retry_in, given_up) = reservoir
                .failures
                .failed(e.clone(), &inner.config.start_backoff);
            done();
            tracing::warn!(cause = %e, ?retry_in, given_up, "pre-warming a session worker");
        }
    }
    inner.wake.notify_one();
}
