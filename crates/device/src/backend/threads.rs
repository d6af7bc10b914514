//! Which queue thread serves which virtqueue.
//!
//! The device offers up to [`crate::MAX_REQUEST_QUEUES`] request queues and the frontend
//! decides how many it sets up, so the threads cannot be one per queue: most queues may never
//! be used, and more busy threads than CPUs only adds context switches. The request queues are
//! dealt round-robin to at most one thread per CPU, so the first queues a frontend uses land on
//! different threads. The hiprio queue (FORGET; Linux sends no INTERRUPT) shares the first
//! thread: a thread of its own would be woken for every FORGET, a context switch per unlinked
//! or evicted inode, and its requests wait at most a turn of that thread's other queue.

use std::num::NonZeroUsize;

use super::HIPRIO_QUEUE;

/// The queue-to-thread assignment of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueThreads {
    /// Per thread, its queues in ascending order: the order in which the vhost-user library
    /// hands a thread its vrings and numbers their events.
    queues: Vec<Vec<usize>>,
    /// Per queue, its thread.
    thread_of: Vec<usize>,
}

impl QueueThreads {
    /// Assigns the hiprio queue and `request_queues` request queues to `request_threads`
    /// threads (at least 1, at most one per request queue); hiprio goes with the first.
    pub(crate) fn new(request_queues: usize, request_threads: usize) -> Self {
        let request_threads = request_threads.clamp(1, request_queues.max(1));
        let mut queues = vec![Vec::new(); request_threads];
        let mut thread_of = Vec::with_capacity(1 + request_queues);
        queues[0].push(HIPRIO_QUEUE);
        thread_of.push(0);
        for queue in 1..=request_queues {
            let thread = (queue - 1) % request_threads;
            queues[thread].push(queue);
            thread_of.push(thread);
        }
        Self { queues, thread_of }
    }

    /// As many request threads as the device may run at once on its CPUs (its affinity and
    /// cgroup quota included), `requested` when not 0.
    pub(crate) fn sized_to_machine(request_queues: usize, requested: usize) -> Self {
        let threads = match requested {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        Self::new(request_queues, threads)
    }

    /// Number of threads.
    pub(crate) fn len(&self) -> usize {
        self.queues.len()
    }

    /// The thread serving `queue`.
    pub(crate) fn thread_of(&self, queue: usize) -> Option<usize> {
        self.thread_of.get(queue).copied()
    }

    /// The queues of `thread`, in the order of its vrings.
    pub(crate) fn queues_of(&self, thread: usize) -> &[usize] {
        self.queues.get(thread).map_or(&[], Vec::as_slice)
    }

    /// Whether `thread` serves more than one queue, so that one busy queue could starve the
    /// others if served to exhaustion.
    pub(crate) fn shared(&self, thread: usize) -> bool {
        self.queues_of(thread).len() > 1
    }

    /// The masks the vhost-user library takes: bit `q` of a thread's mask is queue `q`.
    pub(crate) fn masks(&self) -> Vec<u64> {
        self.queues
            .iter()
            .map(|qs| qs.iter().fold(0u64, |m, &q| m | (1u64 << q)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hiprio_shares_the_first_thread() {
        let t = QueueThreads::new(1, 8);
        assert_eq!(t.len(), 1);
        assert_eq!(t.masks(), vec![0b11]);
        assert_eq!(t.queues_of(0), &[0, 1]);
        assert!(t.shared(0));
    }

    #[test]
    fn request_queues_are_dealt_round_robin() {
        let t = QueueThreads::new(5, 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.queues_of(0), &[0, 1, 3, 5]);
        assert_eq!(t.queues_of(1), &[2, 4]);
        assert_eq!(t.masks(), vec![0b101011, 0b010100]);
        assert_eq!(t.thread_of(4), Some(1));
        assert_eq!(t.thread_of(6), None);
        assert!(t.shared(1));
        assert!(t.queues_of(7).is_empty());
    }

    #[test]
    fn never_more_threads_than_queues_nor_fewer_than_one() {
        assert_eq!(QueueThreads::new(2, 16).len(), 2);
        assert_eq!(QueueThreads::new(3, 0).len(), 1);
    }

    #[test]
    fn the_widest_device_fills_every_mask_bit_once() {
        let t = QueueThreads::new(crate::MAX_REQUEST_QUEUES, 4);
        let masks = t.masks();
        assert_eq!(masks.iter().fold(0u64, |a, m| a | m), u64::MAX);
        assert_eq!(masks.iter().map(|m| m.count_ones()).sum::<u32>(), 64);
        for (thread, mask) in masks.iter().enumerate() {
            for q in t.queues_of(thread) {
                assert_ne!(mask & (1 << q), 0);
                assert_eq!(t.thread_of(*q), Some(thread));
            }
        }
    }

    #[test]
    fn sized_to_machine_uses_the_request_or_the_cpus() {
        assert_eq!(QueueThreads::sized_to_machine(8, 3).len(), 3);
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(QueueThreads::sized_to_machine(63, 0).len(), cpus.min(63));
    }
}
