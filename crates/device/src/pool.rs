//! A fixed pool of worker threads fed through a channel, for `--thread-pool-size N`.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use std::time::{Duration, Instant};

use log::{error, warn};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long dropping the pool waits for its workers before leaving them behind.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Runs submitted jobs on `size` threads; dropping the pool lets queued jobs finish and joins
/// the workers, but waits at most [`DRAIN_WAIT`]: a worker wedged in a filesystem call that
/// never returns is left behind (it ends with the process) instead of hanging the caller.
pub struct ThreadPool {
    tx: Mutex<Option<Sender<Job>>>,
    threads: Vec<JoinHandle<()>>,
    drain_wait: Duration,
}

impl ThreadPool {
    /// Starts `size` (at least one) worker threads.
    pub fn new(size: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(size);
        for i in 0..size.max(1) {
            let rx = Arc::clone(&rx);
            let handle = thread::Builder::new()
                .name(format!("fs-worker-{i}"))
                .spawn(move || worker(&rx))?;
            threads.push(handle);
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            threads,
            drain_wait: DRAIN_WAIT,
        })
    }

    /// Queues `job`; fails only once the pool is shutting down.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx
                .send(Box::new(job))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "thread pool stopped")),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "thread pool stopped",
            )),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for one job, never while running it.
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let deadline = Instant::now() + self.drain_wait;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for t in self.threads.drain(..) {
            if !t.is_finished() {
                warn!("a thread-pool worker is still busy; leaving it behind");
                continue;
            }
            if t.join().is_err() {
                error!("a thread-pool worker panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn runs_every_job_before_drop_returns() {
        let count = Arc::new(AtomicUsize::new(0));
        let pool = ThreadPool::new(3).unwrap();
        for _ in 0..100 {
            let count = Arc::clone(&count);
            pool.submit(move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        drop(pool);
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn jobs_run_concurrently() {
        // Two jobs that each wait for the other can only finish on two threads at once.
        let pool = ThreadPool::new(2).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let barrier = Arc::clone(&barrier);
            let tx = tx.clone();
            pool.submit(move || {
                barrier.wait();
                tx.send(()).unwrap();
            })
            .unwrap();
        }
        for _ in 0..2 {
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("jobs did not run concurrently");
        }
    }

    #[test]
    fn drop_does_not_wait_forever_for_a_wedged_worker() {
        let mut pool = ThreadPool::new(1).unwrap();
        pool.drain_wait = Duration::from_millis(100);
        let (_keep, wedge) = mpsc::channel::<()>();
        pool.submit(move || {
            let _ = wedge.recv();
        })
        .unwrap();
        let start = Instant::now();
        drop(pool);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
