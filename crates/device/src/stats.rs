//! Per-queue request statistics: requests started and completed (their difference is the number
//! in flight) and a latency histogram, from the moment a chain is popped to the moment its used
//! element is written.
//!
//! Each queue's counters sit on cache lines of their own, so queues never contend. A queue's
//! counters are written by its queue thread, or, with a thread pool or for waiting requests, by
//! the threads that complete its requests: hence atomic adds (relaxed; nothing is ordered by
//! them). Time comes from the monotonic clock, which Linux serves from the vDSO without a
//! system call.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Latency buckets: bucket 0 counts requests under 1 µs, bucket `i` those of `2^(i-1)` µs up to
/// `2^i` µs, and the last one everything from about 17 minutes (2^30 µs) on.
pub const LATENCY_BUCKETS: usize = 32;

/// The counters of one queue.
#[repr(align(64))]
pub struct QueueStats {
    started: AtomicU64,
    /// On a line apart from `started`: with a pool, other threads write it.
    completed: Padded,
    latency_ns_sum: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

#[repr(align(64))]
struct Padded(AtomicU64);

impl QueueStats {
    fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            completed: Padded(AtomicU64::new(0)),
            latency_ns_sum: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
        }
    }

    /// A chain was popped; returns its start time.
    pub fn start(&self) -> Instant {
        self.started.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// The chain popped at `started` was completed (or dropped because its queue stopped).
    pub fn finish(&self, started: Instant) {
        self.finish_at(started, Instant::now());
    }

    /// Like [`finish`](Self::finish), at `now`.
    pub fn finish_at(&self, started: Instant, now: Instant) {
        let ns =
            u64::try_from(now.saturating_duration_since(started).as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.latency_ns_sum.fetch_add(ns, Ordering::Relaxed);
        self.completed.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> QueueSnapshot {
        // Completed first: a request that completes between the two loads then shows as in
        // flight rather than making `completed` exceed `started`.
        let completed = self.completed.0.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        QueueSnapshot {
            started: started.max(completed),
            completed,
            latency_ns_sum: self.latency_ns_sum.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

fn bucket(ns: u64) -> usize {
    let us = ns / 1000;
    if us == 0 {
        return 0;
    }
    // 1 µs -> 1, 2-3 µs -> 2, 4-7 µs -> 3, ...
    let bits = (u64::BITS - us.leading_zeros()) as usize;
    bits.min(LATENCY_BUCKETS - 1)
}

/// One queue's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Chains popped.
    pub started: u64,
    /// Chains completed; `started - completed` are in flight.
    pub completed: u64,
    /// Sum of the completed chains' latencies.
    pub latency_ns_sum: u64,
    /// Completed chains by latency (see [`LATENCY_BUCKETS`]).
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl QueueSnapshot {
    /// Requests popped and not completed yet.
    pub fn in_flight(&self) -> u64 {
        self.started - self.completed
    }
}

/// The counters of every queue of a device (index 0 is the hiprio queue).
pub struct DeviceStats {
    queues: Vec<Arc<QueueStats>>,
}

impl DeviceStats {
    /// Counters for `num_queues` queues.
    pub fn new(num_queues: usize) -> Self {
        Self {
            queues: (0..num_queues)
                .map(|_| Arc::new(QueueStats::new()))
                .collect(),
        }
    }

    /// The counters of one queue, if it exists.
    pub fn queue(&self, index: usize) -> Option<&Arc<QueueStats>> {
        self.queues.get(index)
    }

    /// Every queue's counters now, in queue order.
    pub fn snapshot(&self) -> Vec<QueueSnapshot> {
        self.queues.iter().map(|q| q.snapshot()).collect()
    }
}

/// A request popped on the calling (queue) thread and not completed yet: recorded as finished
/// when dropped. Borrows its queue's counters, so the inline path touches no reference count.
///
/// `clock` carries the time a request answered on the queue thread ended to the next one popped
/// in the same burst, which starts then: one clock read per request instead of two.
pub(crate) struct Pending<'a> {
    queue: Option<&'a Arc<QueueStats>>,
    started: Instant,
    clock: &'a Cell<Option<Instant>>,
}

impl<'a> Pending<'a> {
    /// Counts a chain popped from the queue with these counters.
    pub(crate) fn start(
        queue: Option<&'a Arc<QueueStats>>,
        clock: &'a Cell<Option<Instant>>,
    ) -> Self {
        let started = clock.take().unwrap_or_else(Instant::now);
        if let Some(q) = queue {
            q.started.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            queue,
            started,
            clock,
        }
    }

    /// The same request, to be completed on another thread (pool or waiting request).
    pub(crate) fn hand_off(self) -> InFlight {
        let this = std::mem::ManuallyDrop::new(self);
        InFlight {
            queue: this.queue.cloned(),
            started: this.started,
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(queue) = self.queue {
            queue.finish_at(self.started, now);
        }
        self.clock.set(Some(now));
    }
}

/// A request in flight that completes on another thread: recorded as finished when dropped,
/// after its completion was written or given up.
pub(crate) struct InFlight {
    queue: Option<Arc<QueueStats>>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            queue.finish(self.started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(999), 0);
        assert_eq!(bucket(1_000), 1);
        assert_eq!(bucket(3_999), 2);
        assert_eq!(bucket(4_000), 3);
        assert_eq!(bucket(1_000_000), 10);
        assert_eq!(bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn in_flight_is_started_minus_finished() {
        let stats = DeviceStats::new(2);
        let q = stats.queue(1).unwrap();
        let clock = Cell::new(None);
        let a = Pending::start(Some(q), &clock);
        let b = Pending::start(Some(q), &clock).hand_off();
        std::thread::sleep(Duration::from_millis(2));
        drop(a);
        let now = stats.snapshot();
        assert_eq!(
            (now[1].started, now[1].completed, now[1].in_flight()),
            (2, 1, 1)
        );
        assert_eq!(now[0].started, 0);
        // Slept 2 ms: 2048-4095 µs is bucket 12, 1024-2047 µs bucket 11.
        assert!(
            now[1].buckets[11..].iter().sum::<u64>() == 1,
            "{:?}",
            now[1].buckets
        );
        assert!(now[1].latency_ns_sum >= 2_000_000);
        std::thread::spawn(move || drop(b)).join().unwrap();
        let now = stats.snapshot();
        assert_eq!((now[1].completed, now[1].in_flight()), (2, 0));
        assert_eq!(now[1].buckets.iter().sum::<u64>(), 2);
    }

    #[test]
    fn a_burst_reads_the_clock_once_per_request() {
        let stats = DeviceStats::new(1);
        let q = stats.queue(0).unwrap();
        let clock = Cell::new(None);
        let first = Pending::start(Some(q), &clock);
        std::thread::sleep(Duration::from_millis(2));
        drop(first);
        let ended = clock.get().expect("the end is kept for the next request");
        let second = Pending::start(Some(q), &clock);
        assert_eq!(second.started, ended);
        assert!(clock.get().is_none());
        std::thread::sleep(Duration::from_millis(2));
        drop(second);
        // Handed off: it ends elsewhere, so the next request reads the clock itself.
        let third = Pending::start(Some(q), &clock).hand_off();
        assert!(clock.get().is_none());
        drop(third);
        let now = stats.snapshot();
        assert_eq!((now[0].started, now[0].completed), (3, 3));
        // The first two each took at least 2 ms (bucket 11: 1024-2047 µs and up).
        assert_eq!(
            now[0].buckets[11..].iter().sum::<u64>(),
            2,
            "{:?}",
            now[0].buckets
        );
    }

    #[test]
    fn queues_are_cache_lines_apart() {
        assert_eq!(std::mem::align_of::<QueueStats>(), 64);
        assert!(std::mem::size_of::<QueueStats>().is_multiple_of(64));
    }
}
