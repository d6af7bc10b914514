//! The vhost-user-fs backend: feature negotiation, config space and virtqueue processing.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use log::{debug, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringMutex, VringState, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

mod blocking;

use crate::config_space::{self, CONFIG_LEN};
use crate::descriptor::split_chain;
use crate::pool::ThreadPool;
use crate::{DeviceConfig, RequestHandler, REQUEST_PEEK_LEN};
use blocking::BlockingRequests;

/// Guest memory as the vhost-user library shares it with the backend.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap>;
/// The vring type the backend runs on.
pub type Vring = VringMutex<GuestMem>;
type Chain = DescriptorChain<Arc<GuestMemoryMmap>>;

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
    /// Requests handed to the pool and not yet completed, per queue.
    in_flight: Arc<Vec<InFlight>>,
    /// Requests that may wait for a long time, run detached from the queues.
    blocking: BlockingRequests,
}

/// Counts a queue's requests running on the pool, so stopping the queue can wait for them.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn start(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn finish(&self) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            count = self.idle.wait(count).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<H: RequestHandler + 'static> VhostUserFsBackend<H> {
    /// Builds the backend for a validated `config`; starts the thread pool if one is requested.
    pub fn new(handler: Arc<H>, config: &DeviceConfig, mem: GuestMem) -> io::Result<Self> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let num_queues = config.num_request_queues + 1;
        let pool = match config.thread_pool_size {
            0 => None,
            n => Some(ThreadPool::new(n)?),
        };
        Ok(Self {
            handler,
            num_queues,
            queue_size: config.queue_size,
            has_tag: config.tag.is_some(),
            config_space: config_space::encode(
                config.tag.as_deref(),
                u32::try_from(config.num_request_queues).unwrap_or(u32::MAX),
            ),
            event_idx: AtomicBool::new(false),
            mem: RwLock::new(mem),
            pool,
            in_flight: Arc::new((0..num_queues).map(|_| InFlight::default()).collect()),
            blocking: BlockingRequests::new(num_queues),
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

    /// Requests that may wait for a long time and are running detached right now.
    pub fn waiting_requests(&self) -> usize {
        self.blocking.running()
    }

    /// Whether the frontend negotiated VIRTIO_RING_F_EVENT_IDX.
    pub fn event_idx(&self) -> bool {
        self.event_idx.load(Ordering::Acquire)
    }

    fn memory(&self) -> Arc<GuestMemoryMmap> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        mem.memory().into_inner()
    }

    /// Serves every available chain of `vring`, then re-enables notifications and looks again,
    /// so a chain made available while notifications were off is not missed.
    pub fn process_queue(&self, vring: &Vring, queue_index: usize) -> io::Result<()> {
        let mem = self.memory();
        loop {
            vring.disable_notification().map_err(queue_error)?;
            while let Some(chain) = pop_chain(vring, &mem) {
                debug!(
                    "queue {queue_index}: request in descriptor {}",
                    chain.head_index()
                );
                let mut start = [0u8; REQUEST_PEEK_LEN];
                let n = blocking::peek(&mem, &chain, &mut start);
                if self.handler.may_block(&start[..n]) {
                    self.blocking
                        .submit(&self.handler, &mem, vring, queue_index, chain)?;
                    continue;
                }
                match &self.pool {
                    None => {
                        let (head, len) = run_chain(&*self.handler, &mem, chain);
                        complete(vring, head, len, queue_index)?;
                    }
                    Some(pool) => {
                        let handler = Arc::clone(&self.handler);
                        let vring = vring.clone();
                        let mem = Arc::clone(&mem);
                        let in_flight = Arc::clone(&self.in_flight);
                        if let Some(counter) = in_flight.get(queue_index) {
                            counter.start();
                        }
                        let submitted = pool.submit(move || {
                            let (head, len) = run_chain(&*handler, &mem, chain);
                            if let Err(e) = complete(&vring, head, len, queue_index) {
                                warn!("queue {queue_index}: cannot complete request: {e}");
                            }
                            if let Some(counter) = in_flight.get(queue_index) {
                                counter.finish();
                            }
                        });
                        if let Err(e) = submitted {
                            if let Some(counter) = self.in_flight.get(queue_index) {
                                counter.finish();
                            }
                            return Err(e);
                        }
                    }
                }
            }
            if !vring.enable_notification().map_err(queue_error)? {
                return Ok(());
            }
        }
    }
}

fn pop_chain(vring: &Vring, mem: &Arc<GuestMemoryMmap>) -> Option<Chain> {
    let mut state = vring.get_mut();
    let state: &mut VringState<GuestMem> = &mut state;
    state.get_queue_mut().pop_descriptor_chain(Arc::clone(mem))
}

/// Runs one request; returns its head index and used length. A chain that cannot be parsed or
/// that the handler rejects is still returned (with length 0), or the guest would wait forever.
fn run_chain<H: RequestHandler>(handler: &H, mem: &GuestMemoryMmap, chain: Chain) -> (u16, u32) {
    let head = chain.head_index();
    let (mut reader, writer) = match split_chain(mem, chain) {
        Ok(parts) => parts,
        Err(e) => {
            debug!("descriptor {head}: rejected chain: {e}");
            return (head, 0);
        }
    };
    let capacity = virtiofsd_fuse::io::ReplyWriter::available_bytes(&writer);
    match handler.handle(&mut reader, writer) {
        Ok(n) if n <= capacity => (head, u32::try_from(n).unwrap_or(u32::MAX)),
        Ok(n) => {
            warn!("descriptor {head}: handler reported {n} bytes for {capacity} bytes of room");
            (head, u32::try_from(capacity).unwrap_or(u32::MAX))
        }
        Err(e) => {
            debug!("descriptor {head}: request failed: {e}");
            (head, 0)
        }
    }
}

/// Puts a finished chain on the used ring and interrupts the guest if it asked to be, all under
/// one lock so completions from pool threads cannot interleave with each other.
fn complete(vring: &Vring, head: u16, len: u32, queue_index: usize) -> io::Result<()> {
    let mut state = vring.get_mut();
    state.add_used(head, len).map_err(queue_error)?;
    if state.needs_notification().map_err(queue_error)? {
        debug!("queue {queue_index}: signalling guest");
        state.signal_used_queue()?;
    }
    Ok(())
}

fn queue_error(e: virtio_queue::Error) -> io::Error {
    io::Error::other(format!("virtqueue error: {e}"))
}

impl<H: RequestHandler + 'static> VhostUserBackend for VhostUserFsBackend<H> {
    type Bitmap = ();
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
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let base = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
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
        // One worker thread per queue, so a busy request queue never delays the hiprio queue.
        (0..self.num_queues).map(|i| 1u64 << i).collect()
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
        if let Some(counter) = self.in_flight.get(queue_index as usize) {
            counter.wait_idle();
        }
        // Waiting requests may never end; they are abandoned instead of awaited.
        self.blocking.stop_queue(queue_index as usize);
        Ok(())
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
        // Each worker owns exactly one queue (see `queues_per_thread`), so the worker index is
        // the queue index and the vring is the thread's only one.
        let vring = vrings
            .get(usize::from(device_event))
            .ok_or_else(|| io::Error::other(format!("event for unknown vring {device_event}")))?;
        let queue_index = thread_id;
        let kind = if queue_index == HIPRIO_QUEUE {
            "hiprio"
        } else {
            "request"
        };
        debug!("{kind} queue {queue_index} kicked");
        self.process_queue(vring, queue_index)
    }
}

#[cfg(test)]
mod tests;
