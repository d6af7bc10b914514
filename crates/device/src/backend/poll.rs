//! Adaptive polling of an emptied ring before the queue thread goes back to sleep.
//!
//! Sleeping in `epoll_wait` and being woken by the next kick costs a context switch and two
//! system calls per request, which is most of a small request's CPU. When the frontend answers
//! a reply with its next request within microseconds (a busy guest, a queue-depth-1 workload),
//! watching the ring a little longer is cheaper than sleeping, and the guest need not kick at
//! all while notifications stay off. When it does not, polling would only burn CPU; so, as
//! QEMU's event loop does, the window grows while requests keep arriving soon after the thread
//! slept, and shrinks when they arrive late. An idle device, or a guest slower than the
//! longest window, never polls.

use std::time::{Duration, Instant};

/// The longest window (QEMU's default `poll-max-ns` is the same).
pub(crate) const MAX_WINDOW: Duration = Duration::from_micros(32);
/// The first window once requests come back quickly.
const START_WINDOW: Duration = Duration::from_micros(4);

/// One queue's polling window and when its thread last went to sleep on it.
#[derive(Debug, Default)]
pub(crate) struct AdaptivePoll {
    window: Duration,
    slept_at: Option<Instant>,
}

impl AdaptivePoll {
    /// How long to watch the ring before sleeping.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// The thread stopped watching the ring and sleeps until the next kick.
    pub(crate) fn sleeping(&mut self, now: Instant) {
        self.slept_at = Some(now);
    }

    /// A kick woke the thread: how long it slept decides the next window.
    pub(crate) fn woken(&mut self, now: Instant) {
        let Some(slept_at) = self.slept_at.take() else {
            return;
        };
        let slept = now.saturating_duration_since(slept_at);
        if slept <= MAX_WINDOW {
            // A longer watch would have caught this request.
            self.window = (self.window * 2).clamp(START_WINDOW, MAX_WINDOW);
        } else {
            self.window /= 2;
            if self.window < START_WINDOW {
                self.window = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake_after(p: &mut AdaptivePoll, t0: Instant, slept: Duration) {
        p.sleeping(t0);
        p.woken(t0 + slept);
    }

    #[test]
    fn a_fresh_queue_does_not_poll() {
        assert_eq!(AdaptivePoll::default().window(), Duration::ZERO);
    }

    #[test]
    fn quick_requests_grow_the_window_up_to_the_most() {
        let t0 = Instant::now();
        let mut p = AdaptivePoll::default();
        wake_after(&mut p, t0, Duration::from_micros(2));
        assert_eq!(p.window(), START_WINDOW);
        for _ in 0..10 {
            wake_after(&mut p, t0, Duration::from_micros(1));
        }
        assert_eq!(p.window(), MAX_WINDOW);
    }

    #[test]
    fn late_requests_shrink_it_to_nothing() {
        let t0 = Instant::now();
        let mut p = AdaptivePoll::default();
        for _ in 0..4 {
            wake_after(&mut p, t0, Duration::from_micros(1));
        }
        assert_eq!(p.window(), MAX_WINDOW);
        wake_after(&mut p, t0, Duration::from_millis(5));
        assert_eq!(p.window(), MAX_WINDOW / 2);
        for _ in 0..4 {
            wake_after(&mut p, t0, Duration::from_millis(5));
        }
        assert_eq!(p.window(), Duration::ZERO);
    }

    #[test]
    fn a_wake_without_a_sleep_changes_nothing() {
        let mut p = AdaptivePoll::default();
        p.woken(Instant::now());
        assert_eq!(p.window(), Duration::ZERO);
    }
}
