//! A token bucket for log lines a guest can cause.
//!
//! A guest controls every byte it sends, so anything it can make the daemon log, it can make
//! the daemon log in a loop. Every such line goes through [`guest_log!`](crate::guest_log),
//! which lets [`GUEST_LOG`] pass a burst and then a steady few lines per second, counts the
//! lines it drops, and reports that count when a line passes again.

use std::sync::Mutex;
use std::time::Instant;

/// Lines per second the shared guest-caused log limiter lets through on average.
pub const GUEST_LINES_PER_SECOND: u32 = 10;
/// Lines the shared limiter lets through at once after a quiet period.
pub const GUEST_LINES_BURST: u32 = 20;

/// The limiter every guest-triggered log line in the device and the dispatcher shares, so the
/// total rate is bounded however many sites a guest manages to hit.
pub static GUEST_LOG: RateLimiter = RateLimiter::new(GUEST_LINES_PER_SECOND, GUEST_LINES_BURST);

/// What [`RateLimiter::admit`] decided about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed` lines were dropped since the last line that passed.
    Log { suppressed: u64 },
    /// Drop it (it has been counted).
    Suppress,
}

/// A token bucket: `burst` tokens, refilled at `per_second`; each line takes one.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    burst: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: u32,
    /// When tokens were last added; `None` until first use.
    refilled: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    /// A limiter that starts full. `per_second` and `burst` of 0 are treated as 1.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        let burst = if burst == 0 { 1 } else { burst };
        Self {
            per_second: if per_second == 0 { 1 } else { per_second },
            burst,
            state: Mutex::new(State {
                tokens: burst,
                refilled: None,
                suppressed: 0,
            }),
        }
    }

    /// Decides about one line now.
    pub fn admit(&self) -> Admit {
        self.admit_at(Instant::now())
    }

    /// Decides about one line at `now` (monotonic; earlier instants add no tokens).
    pub fn admit_at(&self, now: Instant) -> Admit {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.refilled {
            None => s.refilled = Some(now),
            Some(then) => {
                let elapsed = now.saturating_duration_since(then);
                let earned = elapsed.as_millis() * u128::from(self.per_second) / 1000;
                if earned > 0 {
                    let earned = u32::try_from(earned).unwrap_or(u32::MAX);
                    s.tokens = s.tokens.saturating_add(earned).min(self.burst);
                    s.refilled = Some(now);
                }
            }
        }
        if s.tokens == 0 {
            s.suppressed = s.suppressed.saturating_add(1);
            return Admit::Suppress;
        }
        s.tokens -= 1;
        let suppressed = std::mem::take(&mut s.suppressed);
        Admit::Log { suppressed }
    }
}

#[doc(hidden)]
pub use log as __log;

/// Logs a line a guest can cause, through [`GUEST_LOG`]: `guest_log!(log::Level::Warn, "...")`.
/// Nothing is formatted unless the level is enabled and the limiter admits the line; when lines
/// were dropped before it, a line saying how many comes first.
#[macro_export]
macro_rules! guest_log {
    ($lvl:expr, $($arg:tt)+) => {{
        let lvl: $crate::ratelimit::__log::Level = $lvl;
        if $crate::ratelimit::__log::log_enabled!(lvl) {
            if let $crate::ratelimit::Admit::Log { suppressed } =
                $crate::ratelimit::GUEST_LOG.admit()
            {
                if suppressed > 0 {
                    $crate::ratelimit::__log::log!(
                        lvl,
                        "suppressed {} guest-caused log messages",
                        suppressed
                    );
                }
                $crate::ratelimit::__log::log!(lvl, $($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passes_a_burst_then_counts_what_it_drops() {
        let l = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit_at(t0), Admit::Log { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(l.admit_at(t0), Admit::Suppress);
        }
        // Half a second earns one token at 2 per second; the 5 dropped lines are reported.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.admit_at(t1), Admit::Log { suppressed: 5 });
        assert_eq!(l.admit_at(t1), Admit::Suppress);
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for i in 0..3 {
            let s = if i == 0 { 1 } else { 0 };
            assert_eq!(l.admit_at(t2), Admit::Log { suppressed: s });
        }
        assert_eq!(l.admit_at(t2), Admit::Suppress);
    }

    #[test]
    fn a_flood_passes_at_most_the_rate() {
        let l = RateLimiter::new(10, 20);
        let t0 = Instant::now();
        let mut passed = 0;
        // One million lines spread over ten simulated seconds.
        for i in 0..1_000_000u64 {
            let now = t0 + Duration::from_micros(i * 10);
            if matches!(l.admit_at(now), Admit::Log { .. }) {
                passed += 1;
            }
        }
        assert!(passed <= 20 + 10 * 10 + 1, "{passed} lines passed");
        assert!(passed >= 100, "{passed} lines passed");
    }

    #[test]
    fn earlier_instants_add_nothing_and_zero_limits_are_usable() {
        let l = RateLimiter::new(0, 0);
        let t0 = Instant::now() + Duration::from_secs(5);
        assert_eq!(l.admit_at(t0), Admit::Log { suppressed: 0 });
        assert_eq!(l.admit_at(t0 - Duration::from_secs(1)), Admit::Suppress);
        assert_eq!(
            l.admit_at(t0 + Duration::from_secs(1)),
            Admit::Log { suppressed: 1 }
        );
    }

    #[test]
    fn the_macro_compiles_at_every_level() {
        guest_log!(log::Level::Warn, "warn {}", 1);
        guest_log!(log::Level::Debug, "debug {}", 2);
    }
}
