//! A profile's recent demand: how many of its requests run at once now, and the peak of that
//! over a recent window, which sizes its warm reservoir (the adaptive warm pool).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// The width of one slot of the window: peaks are kept per slot, so a window of 60 s keeps
/// at most 60 numbers.
const SLOT: Duration = Duration::from_secs(1);

/// Requests of one profile in flight, and their peaks per slot.
#[derive(Default)]
pub(super) struct Demand {
    active: AtomicUsize,
    /// (slot start, peak of requests in flight during it), oldest first.
    peaks: Mutex<VecDeque<(Instant, usize)>>,
}

/// One request in flight; dropping it (when its turn is over) ends it.
pub(super) struct InFlight {
    demand: Arc<Demand>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.demand.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Demand {
    /// Counts a request from its arrival until the guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.record(Instant::now(), now);
        InFlight {
            demand: self.clone(),
        }
    }

    fn record(&self, at: Instant, active: usize) {
        let mut peaks = lock(&self.peaks);
        match peaks.back_mut() {
            Some((start, peak)) if at.duration_since(*start) < SLOT => *peak = (*peak).max(active),
            _ => peaks.push_back((at, active)),
        }
    }

    /// Requests in flight now.
    pub(super) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// The most requests in flight at once within the last `window` (those in flight now
    /// included). Forgets slots older than the window.
    pub(super) fn peak(&self, window: Duration) -> usize {
        let now = Instant::now();
        let mut peaks = lock(&self.peaks);
        while peaks
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) >= window + SLOT)
        {
            peaks.pop_front();
        }
        let recent = peaks
            .iter()
            .filter(|(start, _)| now.duration_since(*start) < window + SLOT)
            .map(|(_, peak)| *peak)
            .max()
            .unwrap_or(0);
        recent.max(self.active())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_most_requests_at_once_and_counts_those_in_flight() {
        let demand = Arc::new(Demand::default());
        assert_eq!(demand.peak(Duration::from_secs(60)), 0);
        let a = demand.begin();
        let b = demand.begin();
        let c = demand.begin();
        drop((a, b));
        assert_eq!(demand.active(), 1);
        assert_eq!(demand.peak(Duration::from_secs(60)), 3);
        drop(c);
        assert_eq!(demand.active(), 0);
        assert_eq!(demand.peak(Duration::from_secs(60)), 3);
    }

    #[test]
    fn old_slots_leave_the_window_but_requests_in_flight_stay() {
        let demand = Arc::new(Demand::default());
        let long_ago = Instant::now() - Duration::from_secs(120);
        demand.record(long_ago, 5);
        let running = demand.begin();
        // `begin` recorded 1 in a new slot; the old peak of 5 is outside a 60 s window.
        assert_eq!(demand.peak(Duration::from_secs(60)), 1);
        assert_eq!(lock(&demand.peaks).len(), 1, "the old slot was forgotten");
        drop(running);
        assert_eq!(demand.peak(Duration::from_secs(60)), 1);
        assert_eq!(demand.peak(Duration::ZERO), 1, "the current slot counts");
    }
}
