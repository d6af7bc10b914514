//! Requests that may block for a long time (a SETLKW waiting for another guest process to
//! release its lock) run on a thread of their own, so they hold up neither their queue nor the
//! thread pool.
//!
//! Each such request is copied out of guest memory before it runs and its reply copied back
//! when it ends, under the queue's epoch lock. Stopping a queue (GET_VRING_BASE, on guest reset
//! or disconnect) bumps the epoch, so a request that outlives its queue completes into nothing
//! rather than into a ring or buffers the guest may have reused; stopping never waits for such
//! a request, which might never end. The threads are detached: one ends when its filesystem
//! call returns (the lock is granted or fails) or with the process, so they never keep
//! [`serve`](crate::serve) from returning. At most [`MAX_BLOCKING_REQUESTS`] run at once;
//! further ones are answered at once by [`RequestHandler::refuse`].

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use virtiofsd_fuse::guest_log;
use virtiofsd_fuse::io::{ReplyWriter, RequestReader};

use super::{complete, Chain, Header, Memory, Vring};
use crate::descriptor::split_chain;
use crate::stats::InFlight;
use crate::{RequestHandler, MAX_BLOCKING_REQUESTS};
use virtiofsd_fuse::memory::{MemoryReader, MemoryWriter};

/// The largest request or reply copied for a detached request. Lock requests are under 100
/// bytes; anything larger is not one and is refused rather than copied.
const MAX_BOUNCE: usize = 64 * 1024;

/// Runs detached requests and tracks the queues they belong to.
pub(super) struct BlockingRequests {
    limit: usize,
    running: Arc<AtomicUsize>,
    /// Per queue: bumped when the queue stops; a request completes only in its own epoch.
    epochs: Arc<Vec<Mutex<u64>>>,
}

/// Counts a running detached request; dropping it (however the thread ends) uncounts it.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BlockingRequests {
    pub(super) fn new(num_queues: usize) -> Self {
        Self::with_limit(num_queues, MAX_BLOCKING_REQUESTS)
    }

    pub(super) fn with_limit(num_queues: usize, limit: usize) -> Self {
        Self {
            limit,
            running: Arc::new(AtomicUsize::new(0)),
            epochs: Arc::new((0..num_queues).map(|_| Mutex::new(0)).collect()),
        }
    }

    /// Detached requests currently running.
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Abandons the queue's detached requests: their replies will be dropped.
    pub(super) fn stop_queue(&self, queue_index: usize) {
        if let Some(epoch) = self.epochs.get(queue_index) {
            *epoch.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
    }

    fn take_slot(&self) -> Option<Slot> {
        let mut n = self.running.load(Ordering::Acquire);
        loop {
            if n >= self.limit {
                return None;
            }
            match self
                .running
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Slot(Arc::clone(&self.running))),
                Err(now) => n = now,
            }
        }
    }

    /// Starts `chain`, whose request bytes were copied into `request` (`None`: too large or
    /// unreadable to be a waiting request; it is then refused on its `header` alone) and whose
    /// reply room is `room`, on a thread of its own, or refuses it when that is not possible;
    /// either way the chain is completed (now or later).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn submit<H: RequestHandler + 'static>(
        &self,
        handler: &Arc<H>,
        mem: &Arc<Memory>,
        vring: &Vring,
        queue_index: usize,
        chain: Chain,
        header: &[u8],
        request: Option<Vec<u8>>,
        room: usize,
        in_flight: InFlight,
    ) -> io::Result<()> {
        let head = chain.head_index();
        let Some(request) = request else {
            return refuse_now(&**handler, mem, vring, queue_index, chain, header);
        };
        let Some(slot) = self.take_slot() else {
            guest_log!(
                log::Level::Debug,
                "queue {queue_index}: {} requests already waiting",
                self.limit
            );
            return refuse_now(&**handler, mem, vring, queue_index, chain, &request);
        };
        let epoch = match self.epochs.get(queue_index) {
            Some(e) => *e.lock().unwrap_or_else(|p| p.into_inner()),
            None => return refuse_now(&**handler, mem, vring, queue_index, chain, &request),
        };
        let job = Job {
            handler: Arc::clone(handler),
            mem: Arc::clone(mem),
            vring: vring.clone(),
            epochs: Arc::clone(&self.epochs),
            queue_index,
            epoch,
            chain: chain.clone(),
        };
        let room = room.min(MAX_BOUNCE);
        let (request_tx, request_rx) = (request.clone(), request);
        let spawned = thread::Builder::new()
            .name(format!("fs-blocking-{queue_index}"))
            .spawn(move || {
                let _slot = slot;
                let _in_flight = in_flight;
                job.run(request_rx, room);
            });
        match spawned {
            Ok(_) => {
                guest_log!(
                    log::Level::Debug,
                    "queue {queue_index}: descriptor {head} runs detached"
                );
                Ok(())
            }
            Err(e) => {
                guest_log!(
                    log::Level::Warn,
                    "queue {queue_index}: cannot start a thread for a waiting request: {e}"
                );
                refuse_now(&**handler, mem, vring, queue_index, chain, &request_tx)
            }
        }
    }
}

/// Copies the rest of a request whose first bytes are `header` out of `reader`; `None` for a
/// request too large to be a waiting request or one that cannot be read.
pub(super) fn copy_request<R: RequestReader>(header: &Header, reader: &mut R) -> Option<Vec<u8>> {
    let first = header.bytes();
    let len = first.len().checked_add(reader.available_bytes())?;
    if len > MAX_BOUNCE {
        return None;
    }
    let mut request = vec![0u8; len];
    request[..first.len()].copy_from_slice(first);
    reader.read_exact(&mut request[first.len()..]).ok()?;
    Some(request)
}

/// Answers the request (its bytes `request`, as copied once) at once with the handler's
/// refusal, on the calling thread.
fn refuse_now<H: RequestHandler>(
    handler: &H,
    mem: &Memory,
    vring: &Vring,
    queue_index: usize,
    chain: Chain,
    request: &[u8],
) -> io::Result<()> {
    let head = chain.head_index();
    let len = match split_chain(mem, chain) {
        Ok((_, writer)) => {
            let room = writer.available_bytes();
            let mut reader = MemoryReader::new(request.to_vec());
            match handler.refuse(&mut reader, writer) {
                Ok(n) => n.min(room),
                Err(e) => {
                    guest_log!(log::Level::Debug, "descriptor {head}: refusal failed: {e}");
                    0
                }
            }
        }
        Err(e) => {
            guest_log!(log::Level::Debug, "descriptor {head}: rejected chain: {e}");
            0
        }
    };
    complete(
        vring,
        head,
        u32::try_from(len).unwrap_or(u32::MAX),
        queue_index,
    )
}

struct Job<H> {
    handler: Arc<H>,
    mem: Arc<Memory>,
    vring: Vring,
    epochs: Arc<Vec<Mutex<u64>>>,
    queue_index: usize,
    epoch: u64,
    chain: Chain,
}

impl<H: RequestHandler> Job<H> {
    fn run(self, request: Vec<u8>, room: usize) {
        let mut reader = MemoryReader::new(request);
        let (writer, contents) = MemoryWriter::new(room);
        let reply_len = match self.handler.handle(&mut reader, writer) {
            Ok(n) => n.min(room),
            Err(e) => {
                guest_log!(
                    log::Level::Debug,
                    "queue {}: waiting request failed: {e}",
                    self.queue_index
                );
                0
            }
        };
        self.finish(&contents.bytes(reply_len));
    }

    fn finish(self, reply: &[u8]) {
        let q = self.queue_index;
        let Some(epoch) = self.epochs.get(q) else {
            return;
        };
        // Held across the ring update so a queue stop cannot slip in between check and write.
        let epoch = epoch.lock().unwrap_or_else(|p| p.into_inner());
        if *epoch != self.epoch {
            guest_log!(
                log::Level::Debug,
                "queue {q}: dropping the reply of a request that outlived its queue"
            );
            return;
        }
        let head = self.chain.head_index();
        let len = match split_chain(&*self.mem, self.chain) {
            Ok((_, mut writer)) => match writer.write_all(reply) {
                Ok(()) => reply.len(),
                Err(e) => {
                    guest_log!(
                        log::Level::Debug,
                        "descriptor {head}: cannot write the reply: {e}"
                    );
                    0
                }
            },
            Err(e) => {
                guest_log!(log::Level::Debug, "descriptor {head}: rejected chain: {e}");
                0
            }
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if let Err(e) = complete(&self.vring, head, len, q) {
            guest_log!(
                log::Level::Warn,
                "queue {q}: cannot complete a waiting request: {e}"
            );
        }
    }
}
