//! The vhost-user-fs backend: feature negotiation, config space and virtqueue processing.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{debug, warn};
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserProtocolFeatures,
    VhostUserVirtioFeatures,
};
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VhostUserBackend, VringMutex, VringState, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use virtiofsd_fuse::guest_log;
use virtiofsd_fuse::io::{ReplyWriter, RequestReader, ZeroCopyReader};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

mod blocking;
mod poll;
mod threads;

use crate::config_space::{self, CONFIG_LEN};
use crate::descriptor::split_chain;
pub use crate::error::QueueFault;
use crate::error::{ErrorChain, RingError};
use crate::migration::StateTransfer;
use crate::pool::ThreadPool;
use crate::stats::{DeviceStats, InFlight, Pending};
use crate::{DeviceConfig, RequestHandler, REQUEST_PEEK_LEN};
use blocking::BlockingRequests;
use poll::AdaptivePoll;
use threads::QueueThreads;

/// Guest memory with a dirty-page log the frontend can install (SET_LOG_BASE) for live
/// migration: every write through vm-memory marks the pages it touched, and the writes the
/// kernel does for us (`preadv` of READ payloads) are marked by the descriptor views.
pub type Memory = GuestMemoryMmap<BitmapMmapRegion>;
/// Guest memory as the vhost-user library shares it with the backend.
pub type GuestMem = GuestMemoryAtomic<Memory>;
/// The vring type the backend runs on.
pub type Vring = VringMutex<GuestMem>;
type Chain = DescriptorChain<Arc<Memory>>;

/// Index of the high-priority queue (FORGET, INTERRUPT); request queues follow it.
pub const HIPRIO_QUEUE: usize = 0;

/// The virtio-fs device as a vhost-user backend.
pub struct VhostUserFsBackend<H> {
    handler: Arc<H>,
    num_queues: usize,
    queue_size: u16,
    has_tag: bool,
    config_space: [u8; CONFIG_LEN],
    event_idx: AtomicBool,
    mem: RwLock<GuestMem>,
    pool: Option<ThreadPool>,
    /// Which thread serves which queue.
    threads: QueueThreads,
    /// Chains per turn at a queue whose thread serves others too ([`FAIR_SHARE`]).
    fair_share: usize,
    /// Per thread, with a pool: the eventfd a worker signals when it frees a slot of a queue
    /// of that thread that stopped popping (see [`CtlState::woken`]).
    resumes: Vec<Arc<EventFd>>,
    /// Per queue: pool requests in flight, stop epoch, throttling and broken state.
    queues: Arc<Vec<QueueCtl>>,
    /// How long `stop_vring` waits for pool requests.
    stop_wait: Duration,
    /// Requests that may wait for a long time, run detached from the queues.
    blocking: BlockingRequests,
    /// Per-queue request counts and latencies (see [`crate::stats`]).
    stats: Arc<DeviceStats>,
    /// DEVICE_STATE save or load in progress.
    state: StateTransfer,
}

/// How long stopping a queue (GET_VRING_BASE) waits for its requests on the pool before it
/// abandons them: a request wedged in the filesystem must not wedge the frontend's reset too.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// How many chains answered on the queue thread may wait for one interrupt: one per chain costs
/// a system call each on both sides, one per burst would hold the first answers of a long
/// burst back.
const SIGNAL_BATCH: usize = 16;

/// How many chains a thread that serves several queues takes from one of them before it looks
/// at the others: a queue the guest keeps full must not starve its neighbours.
const FAIR_SHARE: usize = 64;

/// Epoll event id of a queue thread's "a pool slot came free" eventfd. Ids up to and including
/// `num_queues` belong to the vhost-user library (queues and its exit event).
fn resume_event_id(num_queues: usize) -> u16 {
    u16::try_from(num_queues + 1).unwrap_or(u16::MAX)
}

/// The guest-visible configuration of a queue when it was found broken; any change to it (a
/// reset by the frontend) makes the device try the queue again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueConfig {
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    size: u16,
    next_avail: u16,
    ready: bool,
}

impl QueueConfig {
    fn of(vring: &Vring) -> Self {
        let state = vring.get_ref();
        let q = state.get_queue();
        Self {
            desc_table: q.desc_table(),
            avail_ring: q.avail_ring(),
            used_ring: q.used_ring(),
            size: q.size(),
            next_avail: q.next_avail(),
            ready: q.ready(),
        }
    }
}

/// Per-queue bookkeeping shared by the queue thread, pool workers and `stop_vring`.
struct QueueCtl {
    state: Mutex<CtlState>,
    idle: Condvar,
    /// Its thread's resume eventfd (with a pool): written by a pool worker that frees a slot
    /// while the queue thread waits for one.
    resume: Option<Arc<EventFd>>,
    /// How long its thread watches the emptied ring before sleeping (without a pool).
    poll: Mutex<AdaptivePoll>,
}

#[derive(Default)]
struct CtlState {
    /// Requests of this queue handed to the pool and not finished (of any epoch).
    in_flight: usize,
    /// Bumped when the queue stops; pool requests of an older epoch complete into nothing.
    epoch: u64,
    /// The queue thread stopped popping because `in_flight` reached the limit.
    throttled: bool,
    /// A slot came free after `throttled`: the thread's next resume event serves this queue.
    woken: bool,
    /// Set when the guest corrupted the queue: the configuration it was found broken in.
    broken: Option<QueueConfig>,
}

impl QueueCtl {
    fn new(resume: Option<Arc<EventFd>>) -> Self {
        Self {
            state: Mutex::new(CtlState::default()),
            idle: Condvar::new(),
            resume,
            poll: Mutex::new(AdaptivePoll::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poll(&self) -> std::sync::MutexGuard<'_, AdaptivePoll> {
        self.poll.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends one pool request; wakes the queue thread if it waits for a slot.
    fn finish(&self, state: &mut CtlState) {
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.throttled {
            state.throttled = false;
            state.woken = true;
            if let Some(Err(e)) = self.resume.as_ref().map(|r| r.write(1)) {
                guest_log!(log::Level::Warn, "cannot wake a throttled queue: {e}");
            }
        }
        if state.in_flight == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no pool request is in flight, at most `limit`; returns whether it is idle.
    fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl<H: RequestHandler + 'static> VhostUserFsBackend<H> {
    /// Builds the backend for a validated `config`; starts the thread pool if one is requested.
    pub fn new(handler: Arc<H>, config: &DeviceConfig, mem: GuestMem) -> io::Result<Self> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let num_queues = config.max_request_queues + 1;
        let pool = match config.thread_pool_size {
            0 => None,
            n => Some(ThreadPool::new(n)?),
        };
        let threads =
            QueueThreads::sized_to_machine(config.max_request_queues, config.queue_threads);
        // Only a pool ever throttles a queue, so only a pool needs the eventfds to resume one.
        let resumes = match pool {
            Some(_) => (0..threads.len())
                .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
                .collect::<io::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let queues = (0..num_queues)
            .map(|q| {
                let thread = threads.thread_of(q).unwrap_or(0);
                QueueCtl::new(resumes.get(thread).cloned())
            })
            .collect();
        Ok(Self {
            handler,
            num_queues,
            queue_size: config.queue_size,
            has_tag: config.tag.is_some(),
            config_space: config_space::encode(
                config.tag.as_deref(),
                u32::try_from(config.max_request_queues).unwrap_or(u32::MAX),
            ),
            event_idx: AtomicBool::new(false),
            mem: RwLock::new(mem),
            pool,
            threads,
            fair_share: FAIR_SHARE,
            resumes,
            queues: Arc::new(queues),
            stop_wait: STOP_WAIT,
            blocking: BlockingRequests::new(num_queues),
            stats: Arc::new(DeviceStats::new(num_queues)),
            state: StateTransfer::new(config.migration),
        })
    }

    /// Like [`new`](Self::new), with at most `limit` detached waiting requests.
    #[cfg(test)]
    fn with_blocking_limit(
        handler: Arc<H>,
        config: &DeviceConfig,
        mem: GuestMem,
        limit: usize,
    ) -> io::Result<Self> {
        let mut backend = Self::new(handler, config, mem)?;
        backend.blocking = BlockingRequests::with_limit(backend.num_queues, limit);
        Ok(backend)
    }

    /// Like [`new`](Self::new), with turns of `fair_share` chains at shared threads.
    #[cfg(test)]
    fn with_fair_share(
        handler: Arc<H>,
        config: &DeviceConfig,
        mem: GuestMem,
        fair_share: usize,
    ) -> io::Result<Self> {
        let mut backend = Self::new(handler, config, mem)?;
        backend.fair_share = fair_share;
        Ok(backend)
    }

    /// Counts into `stats` (which should have a queue per queue of this device) instead.
    pub fn with_stats(mut self, stats: Arc<DeviceStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The per-queue request counters.
    pub fn stats(&self) -> &Arc<DeviceStats> {
        &self.stats
    }

    /// Requests that may wait for a long time and are running detached right now.
    pub fn waiting_requests(&self) -> usize {
        self.blocking.running()
    }

    /// Requests of queue `queue_index` handed to the thread pool and not finished yet.
    pub fn pool_requests(&self, queue_index: usize) -> usize {
        self.queues
            .get(queue_index)
            .map_or(0, |c| c.lock().in_flight)
    }

    /// Whether the guest corrupted queue `queue_index` and the device stopped serving it.
    pub fn queue_broken(&self, queue_index: usize) -> bool {
        self.queues
            .get(queue_index)
            .is_some_and(|c| c.lock().broken.is_some())
    }

    /// The eventfd queue thread `thread_index` must watch (as event [`Self::resume_event`]) so
    /// that it resumes a queue it stopped popping while the pool was full; `None` without a
    /// pool.
    pub fn resume_fd(&self, thread_index: usize) -> Option<RawFd> {
        self.resumes.get(thread_index).map(|r| r.as_raw_fd())
    }

    /// Number of queue threads.
    pub fn queue_threads(&self) -> usize {
        self.threads.len()
    }

    /// The epoll event id to register [`Self::resume_fd`] under.
    pub fn resume_event(&self) -> u16 {
        resume_event_id(self.num_queues)
    }

    /// Stops every queue as GET_VRING_BASE would, for a frontend that left without stopping
    /// them: requests still running complete into nothing.
    pub fn abandon_requests(&self) {
        for queue_index in 0..self.num_queues {
            let _ = self.stop_vring(u32::try_from(queue_index).unwrap_or(u32::MAX));
        }
    }

    /// Whether the frontend negotiated VIRTIO_RING_F_EVENT_IDX.
    pub fn event_idx(&self) -> bool {
        self.event_idx.load(Ordering::Acquire)
    }

    fn memory(&self) -> Arc<Memory> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        mem.memory().into_inner()
    }

    /// Whether the queue is (still) broken. A queue found broken stays so until its
    /// configuration changes or it is stopped, so a corrupted queue costs one check per kick.
    fn still_broken(&self, ctl: &QueueCtl, vring: &Vring) -> bool {
        let Some(at) = ctl.lock().broken else {
            return false;
        };
        let now = QueueConfig::of(vring);
        if now == at {
            return true;
        }
        let mut state = ctl.lock();
        if state.broken == Some(at) {
            state.broken = None;
        }
        guest_log!(
            log::Level::Info,
            "virtqueue reconfigured by the frontend; serving it again"
        );
        false
    }

    fn mark_broken(&self, ctl: &QueueCtl, vring: &Vring, queue_index: usize, fault: &QueueFault) {
        let config = QueueConfig::of(vring);
        let mut state = ctl.lock();
        if state.broken.is_none() {
            state.broken = Some(config);
            drop(state);
            guest_log!(
                log::Level::Warn,
                "queue {queue_index}: {}; not serving it until the frontend resets it",
                ErrorChain(fault)
            );
        }
    }

    /// The most requests of this queue that may be on the pool at once: its size.
    fn pool_limit(&self, vring: &Vring) -> usize {
        let size = vring.get_ref().get_queue().size();
        usize::from(size.clamp(1, self.queue_size.max(1)))
    }

    /// Serves every available chain of `vring`, then re-enables notifications and looks again,
    /// so a chain made available while notifications were off is not missed.
    ///
    /// Errors the guest can cause never surface here (an error would end the queue thread):
    /// a corrupted queue is marked broken instead and served again after the frontend resets
    /// it. With a thread pool, at most a queue size of requests is in flight; beyond that the
    /// queue is left alone until a worker frees a slot and signals [`Self::resume_fd`].
    pub fn process_queue(&self, vring: &Vring, queue_index: usize) -> io::Result<()> {
        let Some(ctl) = self.queues.get(queue_index) else {
            return Err(io::Error::other(format!("unknown queue {queue_index}")));
        };
        if self.still_broken(ctl, vring) {
            return Ok(());
        }
        let shared = self
            .threads
            .thread_of(queue_index)
            .is_some_and(|t| self.threads.shared(t));
        let mut turn = Turn {
            clock: Cell::new(None),
            unsignalled: Cell::new(0),
            budget: if shared { self.fair_share } else { usize::MAX },
        };
        let drained = self.drain(vring, queue_index, ctl, &mut turn);
        // Interrupt once for the chains this turn answered, whatever ended it.
        let signalled = turn.flush(vring, queue_index).map_err(ring_fault);
        match signalled.and(drained) {
            Ok(Drained::Empty | Drained::Throttled) => {}
            Ok(Drained::OutOfTurn) => {
                // Come back after the thread's other queues: a kick of our own is seen by the
                // next epoll wait like the guest's.
                if let Err(e) = requeue(vring) {
                    guest_log!(log::Level::Warn, "queue {queue_index}: cannot requeue: {e}");
                }
            }
            Err(fault) => self.mark_broken(ctl, vring, queue_index, &fault),
        }
        Ok(())
    }

    /// Serves chains until the ring is empty (with notifications enabled again), the pool is
    /// full, or the turn's budget is spent (with notifications still off).
    fn drain(
        &self,
        vring: &Vring,
        queue_index: usize,
        ctl: &QueueCtl,
        turn: &mut Turn,
    ) -> Result<Drained, QueueFault> {
        let mem = self.memory();
        let limit = self.pool_limit(vring);
        // Only the queue thread answers without a pool; with one, watching the ring would take
        // a CPU from the workers.
        let polls = self.pool.is_none();
        if polls {
            ctl.poll().woken(Instant::now());
        }
        loop {
            vring.disable_notification().map_err(QueueFault::from)?;
            loop {
                if self.pool.is_some() {
                    let mut state = ctl.lock();
                    if state.in_flight >= limit {
                        // Notifications stay off: the worker that frees a slot wakes us.
                        state.throttled = true;
                        return Ok(Drained::Throttled);
                    }
                }
                if turn.budget == 0 {
                    return Ok(Drained::OutOfTurn);
                }
                let Some(chain) = pop_chain(vring, &mem)? else {
                    break;
                };
                turn.budget -= 1;
                self.serve_chain(vring, &mem, queue_index, ctl, chain, turn)?;
            }
            // Before notifications come back on: the guest may sleep until it sees these.
            turn.flush(vring, queue_index).map_err(ring_fault)?;
            if polls {
                let window = ctl.poll().window();
                if let Some(found) = watch_ring(vring, &mem, window)? {
                    // The next request starts when it was seen, not when the last one ended.
                    turn.clock.set(Some(found));
                    continue;
                }
            }
            if !vring.enable_notification().map_err(QueueFault::from)? {
                if polls {
                    ctl.poll().sleeping(Instant::now());
                }
                return Ok(Drained::Empty);
            }
        }
    }

    /// Routes one chain: to a detached thread if it may block, else to the pool or inline.
    /// The routing is decided on the header bytes copied here, and those same bytes are what
    /// the handler executes, so a guest rewriting its buffers cannot change the route.
    fn serve_chain(
        &self,
        vring: &Vring,
        mem: &Arc<Memory>,
        queue_index: usize,
        ctl: &QueueCtl,
        chain: Chain,
        turn: &Turn,
    ) -> Result<(), QueueFault> {
        let head = chain.head_index();
        // From the pop to the used element; finished when dropped, on every path below.
        let pending = Pending::start(self.stats.queue(queue_index), &turn.clock);
        guest_log!(
            log::Level::Debug,
            "queue {queue_index}: request in descriptor {head}"
        );
        let (mut reader, writer) = match split_chain(&**mem, chain.clone()) {
            Ok(parts) => parts,
            Err(e) => {
                guest_log!(log::Level::Debug, "descriptor {head}: rejected chain: {e}");
                return complete(vring, head, 0, queue_index).map_err(ring_fault);
            }
        };
        let header = Header::take(&mut reader);
        if self.handler.may_block(header.bytes()) {
            let request = blocking::copy_request(&header, &mut reader);
            let room = ReplyWriter::available_bytes(&writer);
            drop((reader, writer));
            return self
                .blocking
                .submit(
                    &self.handler,
                    mem,
                    vring,
                    queue_index,
                    chain,
                    header.bytes(),
                    request,
                    room,
                    pending.hand_off(),
                )
                .map_err(ring_fault);
        }
        let Some(pool) = &self.pool else {
            let len = run_parts(&*self.handler, head, &header, reader, writer);
            vring
                .get_mut()
                .add_used(head, len)
                .map_err(queue_error)
                .map_err(ring_fault)?;
            turn.unsignalled.set(turn.unsignalled.get() + 1);
            if turn.unsignalled.get() >= SIGNAL_BATCH {
                turn.flush(vring, queue_index).map_err(ring_fault)?;
            }
            return Ok(());
        };
        drop((reader, writer));
        let epoch = {
            let mut state = ctl.lock();
            state.in_flight += 1;
            state.epoch
        };
        let job = PoolJob {
            handler: Arc::clone(&self.handler),
            vring: vring.clone(),
            mem: Arc::clone(mem),
            queues: Arc::clone(&self.queues),
            queue_index,
            epoch,
            header,
            chain,
            in_flight: pending.hand_off(),
        };
        if let Err(e) = pool.submit(move || job.run()) {
            // Only while shutting down; the chain is answered with nothing.
            guest_log!(
                log::Level::Warn,
                "queue {queue_index}: cannot hand a request to the pool: {e}"
            );
            ctl.finish(&mut ctl.lock());
            return complete(vring, head, 0, queue_index).map_err(ring_fault);
        }
        Ok(())
    }
}

/// One turn of a queue thread at one queue.
struct Turn {
    /// One clock read per chain in a burst: a chain answered here ends when the next starts.
    clock: Cell<Option<Instant>>,
    /// Chains put on the used ring by this thread that the guest has not been told about.
    unsignalled: Cell<usize>,
    /// Chains this turn may still take.
    budget: usize,
}

/// How a turn at a queue ended.
enum Drained {
    /// The ring is empty and notifications are on again.
    Empty,
    /// The pool holds a queue size of requests; a worker resumes the queue.
    Throttled,
    /// The budget is spent with chains left: the queue must be served again.
    OutOfTurn,
}

impl Turn {
    /// Interrupts the guest for the chains answered since the last time, if it asked to be.
    fn flush(&self, vring: &Vring, queue_index: usize) -> io::Result<()> {
        if self.unsignalled.replace(0) == 0 {
            return Ok(());
        }
        let mut state = vring.get_mut();
        if state.needs_notification().map_err(queue_error)? {
            guest_log!(log::Level::Debug, "queue {queue_index}: signalling guest");
            state.signal_used_queue()?;
        }
        Ok(())
    }
}

/// A request handed to the thread pool.
struct PoolJob<H> {
    handler: Arc<H>,
    vring: Vring,
    mem: Arc<Memory>,
    queues: Arc<Vec<QueueCtl>>,
    queue_index: usize,
    epoch: u64,
    header: Header,
    chain: Chain,
    /// Finished when the job is done with (run or dropped).
    in_flight: InFlight,
}

impl<H: RequestHandler> PoolJob<H> {
    fn run(self) {
        let q = self.queue_index;
        let Some(ctl) = self.queues.get(q) else {
            return;
        };
        let head = self.chain.head_index();
        // A request whose queue stopped before it started is not run at all.
        let current = ctl.lock().epoch == self.epoch;
        let len = if current {
            run_chain(&*self.handler, &self.mem, &self.header, self.chain)
        } else {
            0
        };
        let mut state = ctl.lock();
        // Under the lock, so a queue stop cannot slip in between the check and the write.
        if state.epoch == self.epoch {
            if let Err(e) = complete(&self.vring, head, len, q) {
                guest_log!(log::Level::Warn, "queue {q}: cannot complete request: {e}");
            }
        } else {
            guest_log!(
                log::Level::Debug,
                "queue {q}: dropping the completion of a request that outlived its queue"
            );
        }
        ctl.finish(&mut state);
        drop(state);
        // Counted as finished once answered (or given up), outside the queue's lock.
        drop(self.in_flight);
    }
}

/// The first [`REQUEST_PEEK_LEN`] bytes of a request (fewer if it is shorter), copied out of
/// guest memory exactly once.
pub(crate) struct Header {
    buf: [u8; REQUEST_PEEK_LEN],
    len: usize,
}

impl Header {
    fn take<R: RequestReader>(reader: &mut R) -> Self {
        let mut buf = [0u8; REQUEST_PEEK_LEN];
        let len = reader.available_bytes().min(REQUEST_PEEK_LEN);
        if reader.read_exact(&mut buf[..len]).is_err() {
            return Self { buf, len: 0 };
        }
        Self { buf, len }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A request reader that yields a copied header first, then the rest of the chain.
pub(crate) struct PrefixReader<'p, R> {
    prefix: &'p [u8],
    rest: R,
}

impl<'p, R: RequestReader> PrefixReader<'p, R> {
    pub(crate) fn new(prefix: &'p [u8], rest: R) -> Self {
        Self { prefix, rest }
    }
}

impl<R: RequestReader> RequestReader for PrefixReader<'_, R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > self.available_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "request shorter than expected",
            ));
        }
        let n = self.prefix.len().min(buf.len());
        let (from_prefix, from_rest) = buf.split_at_mut(n);
        self.rest.read_exact(from_rest)?;
        from_prefix.copy_from_slice(&self.prefix[..n]);
        self.prefix = &self.prefix[n..];
        Ok(())
    }

    fn available_bytes(&self) -> usize {
        self.prefix.len() + self.rest.available_bytes()
    }
}

impl<R: RequestReader> ZeroCopyReader for PrefixReader<'_, R> {
    fn read_to_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        if !self.prefix.is_empty() {
            // The dispatcher always reads the header before any payload.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "payload read before the request header",
            ));
        }
        self.rest.read_to_file(file, count, offset)
    }
}

/// Pops the next chain. `Ok(None)` means the ring is empty (or the queue not ready); an error
/// means the guest corrupted the queue, which would otherwise make the device spin: the ring
/// claims work that cannot be popped.
fn pop_chain(vring: &Vring, mem: &Arc<Memory>) -> Result<Option<Chain>, QueueFault> {
    let mut state = vring.get_mut();
    let state: &mut VringState<GuestMem> = &mut state;
    let queue = state.get_queue_mut();
    if !queue.ready() {
        return Ok(None);
    }
    let size = queue.size();
    let next = queue.next_avail();
    let avail = queue
        .avail_idx(&**mem, AtomicOrdering::Acquire)
        .map_err(QueueFault::from)?
        .0;
    let pending = avail.wrapping_sub(next);
    if pending == 0 {
        return Ok(None);
    }
    if pending > size {
        return Err(QueueFault::AvailIndex { avail, next, size });
    }
    let chain = match queue.iter(Arc::clone(mem)) {
        Ok(mut iter) => iter.next(),
        Err(virtio_queue::Error::InvalidAvailRingIndex) => {
            // The guest moved the index between the two reads.
            return Err(QueueFault::AvailIndex { avail, next, size });
        }
        Err(e) => return Err(e.into()),
    };
    match chain {
        Some(chain) if chain.head_index() < size => Ok(Some(chain)),
        Some(chain) => Err(QueueFault::HeadIndex {
            head: chain.head_index(),
            size,
        }),
        // Work was announced but the ring entry could not be read.
        None => Err(QueueFault::Ring(RingError::Unreadable)),
    }
}

/// Runs one request from a fresh split of `chain`, executing `header` in place of the chain's
/// first bytes; returns the used length.
fn run_chain<H: RequestHandler>(handler: &H, mem: &Memory, header: &Header, chain: Chain) -> u32 {
    let head = chain.head_index();
    let (mut reader, writer) = match split_chain(mem, chain) {
        Ok(parts) => parts,
        Err(e) => {
            guest_log!(log::Level::Debug, "descriptor {head}: rejected chain: {e}");
            return 0;
        }
    };
    // Skip the bytes the header copy stands for; the guest may have changed them since.
    let mut skip = [0u8; REQUEST_PEEK_LEN];
    if reader.read_exact(&mut skip[..header.len]).is_err() {
        guest_log!(
            log::Level::Debug,
            "descriptor {head}: chain shrank under the request"
        );
        return 0;
    }
    run_parts(handler, head, header, reader, writer)
}

/// Runs one request whose first bytes are `header` and the rest `reader`. A request the
/// handler rejects is still returned (with length 0), or the guest would wait forever.
fn run_parts<H: RequestHandler, R: RequestReader, W: ReplyWriter>(
    handler: &H,
    head: u16,
    header: &Header,
    reader: R,
    writer: W,
) -> u32 {
    let mut reader = PrefixReader::new(header.bytes(), reader);
    let capacity = writer.available_bytes();
    match handler.handle(&mut reader, writer) {
        Ok(n) if n <= capacity => u32::try_from(n).unwrap_or(u32::MAX),
        Ok(n) => {
            guest_log!(
                log::Level::Warn,
                "descriptor {head}: handler reported {n} bytes for {capacity} bytes of room"
            );
            u32::try_from(capacity).unwrap_or(u32::MAX)
        }
        Err(e) => {
            guest_log!(log::Level::Debug, "descriptor {head}: request failed: {e}");
            0
        }
    }
}

/// Puts a finished chain on the used ring and interrupts the guest if it asked to be, all under
/// one lock so completions from pool threads cannot interleave with each other.
fn complete(vring: &Vring, head: u16, len: u32, queue_index: usize) -> io::Result<()> {
    let mut state = vring.get_mut();
    state.add_used(head, len).map_err(queue_error)?;
    if state.needs_notification().map_err(queue_error)? {
        guest_log!(log::Level::Debug, "queue {queue_index}: signalling guest");
        state.signal_used_queue()?;
    }
    Ok(())
}

/// Watches the ring for a new chain for up to `window`; returns when one was seen.
fn watch_ring(
    vring: &Vring,
    mem: &Arc<Memory>,
    window: Duration,
) -> Result<Option<Instant>, QueueFault> {
    if window.is_zero() {
        return Ok(None);
    }
    let deadline = Instant::now() + window;
    loop {
        let pending = {
            let state = vring.get_ref();
            let queue = state.get_queue();
            queue.ready()
                && queue
                    .avail_idx(&**mem, AtomicOrdering::Acquire)
                    .map_err(QueueFault::from)?
                    .0
                    != queue.next_avail()
        };
        let now = Instant::now();
        if pending {
            return Ok(Some(now));
        }
        if now >= deadline {
            return Ok(None);
        }
        std::hint::spin_loop();
    }
}

/// Kicks `vring` as the guest would, so its thread serves it again after its other queues.
fn requeue(vring: &Vring) -> io::Result<()> {
    let state = vring.get_ref();
    let Some(kick) = state.get_kick() else {
        return Ok(());
    };
    let one = 1u64.to_ne_bytes();
    // SAFETY: the kick eventfd stays open while `state` borrows the vring, and `one` is a
    // valid 8-byte buffer for the duration of the call.
    let n = unsafe { libc::write(kick.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    match n {
        8 => Ok(()),
        // The counter is already non-zero: a kick is pending anyway.
        _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn queue_error(e: virtio_queue::Error) -> io::Error {
    io::Error::other(e)
}

fn ring_fault(e: io::Error) -> QueueFault {
    e.into()
}

impl<H: RequestHandler + 'static> VhostUserBackend for VhostUserFsBackend<H> {
    type Bitmap = BitmapMmapRegion;
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.num_queues
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.queue_size)
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | VhostUserVirtioFeatures::LOG_ALL.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // LOG_SHMFD: guest memory carries a replaceable dirty-page log (see [`Memory`]), so
        // the frontend can migrate the guest. DEVICE_STATE only when the handler can save and
        // restore its session.
        let mut base = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::LOG_SHMFD;
        if self.state.enabled() {
            base |= VhostUserProtocolFeatures::DEVICE_STATE;
        }
        // QEMU 7.1 to 8.0 crash when CONFIG is offered to a vhost-user-fs device without a tag
        // of its own, so it is offered only when the device has a tag to report.
        if self.has_tag {
            base | VhostUserProtocolFeatures::CONFIG
        } else {
            base
        }
    }

    fn set_event_idx(&self, enabled: bool) {
        debug!("EVENT_IDX negotiated: {enabled}");
        self.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_space::read(&self.config_space, offset, size)
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        *self.mem.write().unwrap_or_else(|p| p.into_inner()) = mem;
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        self.threads.masks()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                warn!("cannot create exit event: {e}");
                None
            }
        }
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // GET_VRING_BASE must not be answered while pool threads may still write the used ring.
        // Requests still running after a while are abandoned: the epoch bump below makes their
        // completions go nowhere, so a wedged filesystem call cannot wedge the frontend.
        if let Some(ctl) = self.queues.get(queue_index as usize) {
            if !ctl.wait_idle(self.stop_wait) {
                // A guest can make its VMM reset the device in a loop.
                guest_log!(
                    log::Level::Warn,
                    "queue {queue_index}: {} requests still running; abandoning them",
                    ctl.lock().in_flight
                );
            }
            let mut state = ctl.lock();
            state.epoch += 1;
            state.throttled = false;
            state.woken = false;
            state.broken = None;
        }
        // Waiting requests may never end; they are abandoned instead of awaited.
        self.blocking.stop_queue(queue_index as usize);
        Ok(())
    }

    fn set_device_state_fd(
        &self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: File,
    ) -> io::Result<Option<File>> {
        debug!("device state transfer: {direction:?} in phase {phase:?}");
        self.state.start(&self.handler, direction, phase, file)?;
        Ok(None)
    }

    fn check_device_state(&self) -> io::Result<()> {
        self.state.check(&*self.handler).map_err(|e| {
            // The frontend learns only that it failed; the reason goes to the log.
            warn!("device state transfer failed: {}", ErrorChain(&e));
            io::Error::from(e)
        })
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!(
                "unexpected event set {evset:?} on queue {thread_id}"
            )));
        }
        let queues = self.threads.queues_of(thread_id);
        if device_event == self.resume_event() {
            // A pool slot came free; the counter only says "look again", at the queues a
            // worker woke.
            if let Some(resume) = self.resumes.get(thread_id) {
                let _ = resume.read();
            }
            for (position, &queue_index) in queues.iter().enumerate() {
                let woken = self
                    .queues
                    .get(queue_index)
                    .is_some_and(|c| std::mem::take(&mut c.lock().woken));
                if let (true, Some(vring)) = (woken, vrings.get(position)) {
                    self.process_queue(vring, queue_index)?;
                }
            }
            return Ok(());
        }
        // The library numbers a thread's vring events by their place among its queues.
        let position = usize::from(device_event);
        let (Some(&queue_index), Some(vring)) = (queues.get(position), vrings.get(position)) else {
            return Err(io::Error::other(format!(
                "event for unknown vring {device_event} of thread {thread_id}"
            )));
        };
        let kind = if queue_index == HIPRIO_QUEUE {
            "hiprio"
        } else {
            "request"
        };
        guest_log!(log::Level::Debug, "{kind} queue {queue_index} kicked");
        self.process_queue(vring, queue_index)
    }
}

#[cfg(test)]
mod tests;
