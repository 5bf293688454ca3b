//! A profile's failed worker starts in a row: after each, the filler waits longer before the
//! next start of that profile (exponential, capped), and after `start_attempts` of them it
//! stops refilling the profile until a request asks for it again. A profile whose workers
//! cannot start (a CLI that refuses its flags, a missing image) then costs a few containers,
//! not a create-and-remove storm.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::lock;

/// How the filler backs off a profile whose workers fail to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartBackoff {
    /// The wait after the first failure; it doubles with each further one.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Failures in a row after which the profile is no longer refilled (0: never given up).
    pub give_up_after: u32,
}

impl Default for StartBackoff {
    fn default() -> Self {
        StartBackoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(60),
            give_up_after: 5,
        }
    }
}

impl StartBackoff {
    /// The wait after `failures` failures in a row.
    pub(super) fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

#[derive(Default)]
struct State {
    in_a_row: u32,
    last_error: Option<(Instant, String)>,
    /// No start of this profile before then.
    retry_at: Option<Instant>,
    /// Not refilled until a request asks for the profile.
    given_up: bool,
}

/// One profile's failed starts.
#[derive(Default)]
pub(super) struct StartFailures {
    state: Mutex<State>,
}

impl StartFailures {
    /// A start failed: when the next may begin, and whether the profile is given up.
    pub(super) fn failed(&self, error: String, backoff: &StartBackoff) -> (Duration, bool) {
        let mut s = lock(&self.state);
        let now = Instant::now();
        s.in_a_row += 1;
        s.last_error = Some((now, error));
        let delay = backoff.delay(s.in_a_row);
        s.retry_at = Some(now + delay);
        if backoff.give_up_after > 0 && s.in_a_row >= backoff.give_up_after {
            s.given_up = true;
        }
        (delay, s.given_up)
    }

    /// A start succeeded: the profile is healthy again.
    pub(super) fn succeeded(&self) {
        *lock(&self.state) = State::default();
    }

    /// A request asks for the profile: it is refilled again (still no sooner than the
    /// backoff allows).
    pub(super) fn asked_for(&self) {
        lock(&self.state).given_up = false;
    }

    pub(super) fn given_up(&self) -> bool {
        lock(&self.state).given_up
    }

    pub(super) fn in_a_row(&self) -> u32 {
        lock(&self.state).in_a_row
    }

    /// When the next start may begin, if the profile is backing off now.
    pub(super) fn backing_off_until(&self) -> Option<Instant> {
        lock(&self.state).retry_at.filter(|at| *at > Instant::now())
    }

    /// Why the latest start failed, if that was less than `within` ago.
    pub(super) fn recent_error(&self, within: Duration) -> Option<String> {
        lock(&self.state)
            .last_error
            .as_ref()
            .filter(|(at, _)| at.elapsed() < within)
            .map(|(_, e)| e.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_its_cap_and_the_profile_is_given_up_then_asked_for() {
        let backoff = StartBackoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(500),
            give_up_after: 4,
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(3), Duration::from_millis(400));
        assert_eq!(backoff.delay(4), Duration::from_millis(500));
        assert_eq!(backoff.delay(40), Duration::from_millis(500));

        let failures = StartFailures::default();
        for n in 1..4 {
            assert!(!failures.failed(format!("no {n}"), &backoff).1);
        }
        assert!(failures.backing_off_until().is_some());
        assert!(failures.failed("no 4".into(), &backoff).1);
        assert!(failures.given_up());
        assert_eq!(
            failures.recent_error(Duration::from_secs(60)).as_deref(),
            Some("no 4")
        );
        failures.asked_for();
        assert!(!failures.given_up());
        assert_eq!(
            failures.in_a_row(),
            4,
            "the backoff goes on from where it was"
        );
        failures.succeeded();
        assert_eq!(failures.in_a_row(), 0);
        assert!(failures.backing_off_until().is_none());
        assert!(failures.recent_error(Duration::from_secs(60)).is_none());
    }
}
