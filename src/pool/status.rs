//! The pool's counters and its snapshots, for `/status`, `/ready`, metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{WarmPool, lock};

/// Counters of the pool's life.
#[derive(Debug, Default)]
pub(super) struct Counters {
    started: AtomicU64,
    start_failures: AtomicU64,
    retired: AtomicU64,
    reused: AtomicU64,
    turns: AtomicU64,
    continued: AtomicU64,
    replayed: AtomicU64,
}

impl Counters {
    pub(super) fn count_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_start_failure(&self) {
        self.start_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_retired(&self, n: usize) {
        self.retired.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn count_reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_continued(&self) {
        self.continued.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_replayed(&self) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }
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
    /// Conversation turns sent to the worker that held the conversation (no replay).
    pub continued: u64,
    /// Conversation turns with a history that no worker held: replayed on another worker.
    pub replayed: u64,
    /// Pre-warmed session workers ready to be claimed by a new session.
    pub prewarmed_sessions: usize,
}

/// A snapshot of one launch profile's workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileStatus {
    pub fingerprint: String,
    pub is_default: bool,
    /// Warm workers the filler keeps for it now.
    pub target: usize,
    /// Why the target is what it is ("peak 4 in last 60s", "configured minimum (--warm)").
    pub target_reason: String,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Worker starts that failed in a row (the filler backs off).
    pub failed_starts: u32,
    /// Never-used workers ready to serve.
    pub warm: usize,
    pub starting: usize,
    /// Requests waiting for a warm worker.
    pub waiting: usize,
    /// Used workers kept for their owners, idle.
    pub idle: usize,
    /// Workers serving a request now.
    pub busy: usize,
    /// Used workers holding a conversation for its next turn (parked ones included).
    pub held: usize,
    /// Held workers whose CLI waits on client tool results.
    pub parked: usize,
}

impl WarmPool {
    pub fn status(&self) -> PoolStatus {
        let inner = &self.inner;
        let profiles = inner
            .targets()
            .into_iter()
            .enumerate()
            .map(|(i, (p, target))| {
                let (held, parked) = p.held_counts();
                let (idle, out) = p.owner_pools().iter().fold((0, 0), |(idle, out), pool| {
                    let s = pool.status();
                    // deadpool counts waiters against `available`; what is out is busy or held.
                    (idle + s.available, out + s.size.saturating_sub(s.available))
                });
                ProfileStatus {
                    fingerprint: p.profile.fingerprint(),
                    is_default: i == 0,
                    target: target.count,
                    target_reason: target.why,
                    in_flight: p.demand.active(),
                    failed_starts: p.failures.in_a_row(),
                    warm: p.warm(),
                    starting: p.starting(),
                    waiting: p.waiting(),
                    idle,
                    busy: out.saturating_sub(held),
                    held,
                    parked,
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
            continued: c.continued.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            prewarmed_sessions: inner.prewarmed.ready(),
        }
    }

    /// Never-used workers whose container and CLI are alive, for readiness. Looks only:
    /// dead workers stay where they are until the filler replaces them.
    pub fn live_warm(&self) -> usize {
        let profiles = lock(&self.inner.profiles).clone();
        profiles.iter().map(|p| p.live()).sum()
    }
}
