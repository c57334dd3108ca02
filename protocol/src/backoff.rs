//! Polling with exponential back-off, for conditions nothing can block on.
//!
//! Some waits have no socket or condvar to sleep on: a file another process
//! is about to write, a child process's exit status, a pid that should
//! vanish, a record the hub has no push for. zpar polls those with one
//! shape: check, and if not yet, sleep a short pause that doubles up to a
//! ceiling, until a deadline. [`poll_until`] is that loop; [`Backoff`] is its
//! pause schedule on its own, for a loop that sleeps elsewhere (the client's
//! I/O thread asks the hub again on its poll timer).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use zpar_protocol::backoff::{poll_until, Backoff};
//! let start = Instant::now();
//! let got = poll_until(
//!     start + Duration::from_secs(5),
//!     Backoff::new(Duration::from_millis(1), Duration::from_millis(20)),
//!     || (start.elapsed() >= Duration::from_millis(10)).then_some("ready"),
//! );
//! assert_eq!(got, Some("ready"));
//! ```

use std::time::{Duration, Instant};

/// A pause schedule that starts at `first` and doubles up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pause: Duration,
    max: Duration,
}

impl Backoff {
    /// A schedule whose first pause is `first` and whose pauses never exceed
    /// `max` (a `first` above `max` is lowered to it).
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        let pause = if first.as_nanos() > max.as_nanos() {
            max
        } else {
            first
        };
        Backoff { pause, max }
    }

    /// The pause to take now; the next one is twice as long, up to the
    /// ceiling.
    pub fn next_pause(&mut self) -> Duration {
        let now = self.pause;
        self.pause = (self.pause * 2).min(self.max);
        now
    }

    /// Sleeps the next pause, but not past `deadline`.
    pub fn sleep_until_at_most(&mut self, deadline: Instant) {
        let pause = self.next_pause();
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(pause.min(left));
    }
}

/// Calls `check` until it returns `Some`, sleeping by `backoff` between
/// calls; `None` once `deadline` has passed without it (`check` is called
/// one last time at the deadline).
///
/// `check` decides what "done" means, errors included: return
/// `Some(Err(..))` to stop early on a condition that will not change (a
/// child that exited, say).
pub fn poll_until<T>(
    deadline: Instant,
    mut backoff: Backoff,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(t) = check() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        backoff.sleep_until_at_most(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
        let pauses: Vec<u128> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
        let mut high = Backoff::new(Duration::from_secs(9), Duration::from_millis(3));
        assert_eq!(high.next_pause(), Duration::from_millis(3));
    }

    #[test]
    fn poll_until_returns_the_first_answer() {
        let mut calls = 0;
        let got = poll_until(
            Instant::now() + Duration::from_secs(60),
            Backoff::new(Duration::from_micros(1), Duration::from_micros(10)),
            || {
                calls += 1;
                (calls == 3).then_some(calls)
            },
        );
        assert_eq!(got, Some(3));
    }

    #[test]
    fn poll_until_gives_up_at_the_deadline_after_a_last_check() {
        let mut calls = 0;
        let got: Option<()> = poll_until(
            Instant::now() + Duration::from_millis(5),
            Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            || {
                calls += 1;
                None
            },
        );
        assert_eq!(got, None);
        assert!(calls >= 2, "checked before and at the deadline");
    }
}
