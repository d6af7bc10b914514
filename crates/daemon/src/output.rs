//! The one writer of a device's log records and control events.
//!
//! A record is logged from whatever thread runs into something worth saying, queue threads
//! included. Writing it there would make guest I/O wait for the reader of the control channel
//! (an embedder's event loop), of stderr (a pipe) or of `/dev/log`: a reader that stops reading
//! would stall the guest. So once [`Output::start`] has run, records are encoded by the thread
//! that logs them and handed to a bounded queue, and one thread of their own does the writes.
//! When the queue is full a record is dropped and counted, never waited for; the writer reports
//! `N log records dropped` after the records it was still holding.
//!
//! Events (`listening`, `connected`, `disconnected`, `error`) take the same queue, in order with
//! the records around them, but are never dropped: there are a handful per process, sent from
//! the main thread, so they cannot grow the queue without bound.
//!
//! Before [`Output::start`] everything is written synchronously by the caller. That covers the
//! start-up, which is single-threaded on purpose (the namespace sandbox forks, and a thread
//! started before the fork would not exist in the child), and the sandbox's waiting parent
//! process, which never starts the writer thread.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Records waiting for the writer thread at most; beyond this they are dropped. A burst this
/// long is already far more than anyone reads.
pub const QUEUE_RECORDS: usize = 1024;

/// Where encoded lines go and how a drop notice is phrased for it.
pub trait LineSink: Send + Sync + 'static {
    /// Writes one encoded record or event; may block (on the writer thread only, once started).
    fn write_line(&self, line: &[u8]);
    /// Encodes the notice that `dropped` records were lost.
    fn dropped_notice(&self, dropped: u64) -> Vec<u8>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// May be dropped when the queue is full.
    Record,
    /// Never dropped.
    Event,
}

struct Item {
    line: Vec<u8>,
    kind: Kind,
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    /// Records (not events) in `items`, measured against the capacity.
    records: usize,
    /// Records dropped since the last notice was taken by the writer.
    dropped: u64,
    /// Records dropped in this process's life.
    dropped_total: u64,
    /// Items accepted so far, and how many of them the writer has finished with.
    queued: u64,
    written: u64,
    /// The writer thread, once started.
    writer: Option<ThreadId>,
}

/// The queue and its writer; see the module documentation.
pub struct Output<S> {
    sink: S,
    capacity: usize,
    state: Mutex<State>,
    /// Wakes the writer thread.
    work: Condvar,
    /// Wakes [`Output::flush`] callers when the writer finished a batch.
    finished: Condvar,
}

impl<S: LineSink> Output<S> {
    pub fn new(sink: S, capacity: usize) -> Arc<Self> {
        Arc::new(Output {
            sink,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
        })
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// A log record: written now before the writer runs, afterwards queued or, when the queue is
    /// full, dropped and counted. Never waits for the sink once the writer runs.
    pub fn record(&self, line: Vec<u8>) {
        self.submit(Item {
            line,
            kind: Kind::Record,
        });
    }

    /// An event: like a record, but never dropped.
    pub fn event(&self, line: Vec<u8>) {
        self.submit(Item {
            line,
            kind: Kind::Event,
        });
    }

    fn submit(&self, item: Item) {
        let mut state = self.lock();
        if state.writer.is_none() {
            // Single-threaded start-up (or a process that never starts the writer): the caller
            // writes, holding the lock so that `start` cannot overtake this line.
            self.sink.write_line(&item.line);
            return;
        }
        if item.kind == Kind::Record {
            if state.records >= self.capacity {
                state.dropped += 1;
                state.dropped_total += 1;
                return;
            }
            state.records += 1;
        }
        state.items.push_back(item);
        state.queued += 1;
        drop(state);
        self.work.notify_one();
    }

    /// Starts the writer thread; from now on no caller writes to the sink itself. Call it once
    /// the process will not fork any more. A second call does nothing.
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        let mut state = self.lock();
        if state.writer.is_some() {
            return Ok(());
        }
        let output = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || output.write_forever())?;
        state.writer = Some(handle.thread().id());
        Ok(())
    }

    fn write_forever(&self) {
        loop {
            let (batch, dropped, upto) = {
                let mut state = self.lock();
                while state.items.is_empty() && state.dropped == 0 {
                    state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                state.records = 0;
                (
                    std::mem::take(&mut state.items),
                    std::mem::take(&mut state.dropped),
                    state.queued,
                )
            };
            // Every record in the batch was queued before the drops counted with it (a record
            // is only dropped while the queue is full, and only this thread empties it), so
            // the notice follows them.
            for item in &batch {
                self.sink.write_line(&item.line);
            }
            if dropped > 0 {
                self.sink.write_line(&self.sink.dropped_notice(dropped));
            }
            self.lock().written = upto;
            self.finished.notify_all();
        }
    }

    /// Waits until everything accepted before this call has been written, at most `timeout`.
    /// Returns whether it was. Used before the process exits, so a final error or the reason
    /// for stopping is not lost, without letting a parent that stopped reading hold the exit.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        match state.writer {
            None => return true,
            // The writer cannot wait for itself (a panic on it, say).
            Some(id) if id == std::thread::current().id() => return false,
            Some(_) => {}
        }
        let target = state.queued;
        while state.written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .finished
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock except a panicking sink before the writer runs;
        // the state stays consistent either way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
