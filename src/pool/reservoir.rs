//! One launch profile's workers: its reservoir of never-used warm workers (oldest first), the
//! starts in flight and the requests waiting for one, its recent demand, its failed starts,
//! and its owners' pools.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::backoff::StartFailures;
use super::demand::Demand;
use super::hold::Held;
use super::lock;
use super::owner::{OwnerEntry, OwnerPool};
use crate::domain::{LaunchProfile, OwnerKey};
use crate::worker::Worker;

/// The workers of one launch profile.
pub(super) struct ProfilePool {
    pub(super) profile: LaunchProfile,
    /// Never-used warm workers, oldest first.
    reservoir: Mutex<VecDeque<Worker>>,
    /// Notified when a worker enters the reservoir.
    pub(super) reservoir_filled: Notify,
    pub(super) starting: AtomicUsize,
    pub(super) waiting: AtomicUsize,
    pub(super) owners: Mutex<HashMap<OwnerKey, OwnerEntry>>,
    /// Used workers kept unreset for the conversation they served (see `hold`).
    pub(super) held: Mutex<Vec<Held>>,
    /// Notified when a conversation is held: a new conversation waiting for a start may take
    /// it over.
    pub(super) held_added: Notify,
    /// Its requests in flight and their recent peak (the adaptive target).
    pub(super) demand: Arc<Demand>,
    pub(super) failures: StartFailures,
}

impl ProfilePool {
    pub(super) fn new(profile: LaunchProfile) -> Self {
        ProfilePool {
            profile,
            reservoir: Mutex::new(VecDeque::new()),
            reservoir_filled: Notify::new(),
            starting: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            owners: Mutex::new(HashMap::new()),
            held: Mutex::new(Vec::new()),
            held_added: Notify::new(),
            demand: Arc::new(Demand::default()),
            failures: StartFailures::default(),
        }
    }

    /// Never-used workers in the reservoir (alive or not).
    pub(super) fn warm(&self) -> usize {
        lock(&self.reservoir).len()
    }

    /// Never-used workers whose container and CLI are alive. Leaves the reservoir as it is
    /// (the filler drops the dead ones).
    pub(super) fn live(&self) -> usize {
        lock(&self.reservoir)
            .iter_mut()
            .filter_map(|w| w.is_alive().then_some(()))
            .count()
    }

    /// A live never-used worker, if one is ready. Dead ones met on the way are dropped;
    /// returns how many.
    pub(super) fn take_warm(&self) -> (Option<Worker>, usize) {
        let mut reservoir = lock(&self.reservoir);
        let mut dead = 0;
        while let Some(mut worker) = reservoir.pop_front() {
            if worker.is_alive() {
                return (Some(worker), dead);
            }
            dead += 1;
        }
        (None, dead)
    }

    /// Puts a just-started worker in the reservoir and wakes whoever waits for one.
    pub(super) fn put_warm(&self, worker: Worker) {
        lock(&self.reservoir).push_back(worker);
        self.failures.succeeded();
        self.reservoir_filled.notify_waiters();
        self.reservoir_filled.notify_one();
    }

    /// Drops dead workers, then the newest ones above `target`; returns how many went.
    pub(super) fn trim(&self, target: usize) -> usize {
        let mut reservoir = lock(&self.reservoir);
        let before = reservoir.len();
        reservoir.retain_mut(|w| w.is_alive());
        reservoir.truncate(target);
        before - reservoir.len()
    }

    /// Takes every worker out (at shutdown).
    pub(super) fn drain(&self) -> Vec<Worker> {
        lock(&self.reservoir).drain(..).collect()
    }

    /// Waits until the reservoir holds at least `n` workers.
    pub(super) async fn wait_warm(&self, n: usize) {
        loop {
            let filled = self.reservoir_filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if self.warm() >= n {
                return;
            }
            filled.await;
        }
    }

    /// Why the latest start failed, if that was less than `within` ago.
    pub(super) fn recent_start_error(&self, within: Duration) -> Option<String> {
        self.failures.recent_error(within)
    }

    /// Takes the newest reservoir worker out (to make room for another profile's request).
    pub(super) fn take_newest(&self) -> Option<Worker> {
        lock(&self.reservoir).pop_back()
    }

    pub(super) fn starting(&self) -> usize {
        self.starting.load(Ordering::SeqCst)
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Requests waiting beyond the warm workers and the starts in flight.
    pub(super) fn unserved(&self) -> usize {
        self.waiting().saturating_sub(self.warm() + self.starting())
    }

    pub(super) fn owner_pools(&self) -> Vec<OwnerPool> {
        lock(&self.owners)
            .values()
            .map(|e| e.pool.clone())
            .collect()
    }
}
