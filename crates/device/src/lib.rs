//! The vhost-user-fs device: serves one vhost-user frontend (QEMU, cloud-hypervisor, ...) on a
//! listening socket, turning virtqueue descriptor chains into FUSE requests for a
//! [`RequestHandler`] and its replies back into used descriptors.

pub mod backend;
pub mod config_space;
pub mod descriptor;
mod error;
mod fuse_server;
pub mod migration;
mod pool;
pub mod stats;

use std::io;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use log::{info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::{Error as BackendError, VhostUserDaemon};
use virtiofsd_fuse::io::{ReplyWriter, RequestReader};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

pub use backend::VhostUserFsBackend;
pub use descriptor::{split_chain, ChainError, ChainReader, ChainWriter};
pub use error::{ConfigError, DaemonError, Error, ErrorChain, QueueFault, RingError};
pub use stats::{DeviceStats, QueueSnapshot, LATENCY_BUCKETS};
/// The vhost-user protocol error [`Error::Protocol`] and [`DaemonError`] carry.
pub use vhost::vhost_user::Error as VhostUserError;

/// Default (and upstream's) virtqueue size.
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// Largest virtqueue size a split virtqueue allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// The most request queues a device offers: queue-to-thread masks are 64 bits wide and the
/// hiprio queue takes one. The frontend decides how many of them it uses.
pub const MAX_REQUEST_QUEUES: usize = 63;

/// Answers one FUSE request: reads it from `r`, writes the reply into `w`, and returns the
/// number of reply bytes written (the used length reported to the guest).
pub trait RequestHandler: Send + Sync {
    /// Handles one request. An error means no reply could be produced; the chain is then
    /// returned to the guest with a used length of 0.
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize>;

    /// Whether the request that starts with `request_start` (its first [`REQUEST_PEEK_LEN`]
    /// bytes, or fewer if the request is shorter) may wait for a long time, for example for a
    /// lock another guest process holds. Such requests run on a thread of their own so they
    /// delay no other request on their queue.
    fn may_block(&self, request_start: &[u8]) -> bool {
        let _ = request_start;
        false
    }

    /// Answers a request `may_block` accepted when no thread is left to run it. The default
    /// runs it where it is, which can stall the queue; handlers should answer with an error.
    fn refuse<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        self.handle(r, w)
    }

    /// Live migration, source side: the state the destination needs to go on serving, once
    /// the queues have stopped. Offered to the frontend only with [`DeviceConfig::migration`].
    fn save_state(&self) -> io::Result<Vec<u8>> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// Live migration, destination side: restores what [`save_state`](Self::save_state)
    /// produced on the source, before any request is served. A state that cannot be used is
    /// refused with an error.
    fn load_state(&self, state: &[u8]) -> io::Result<()> {
        let _ = state;
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// The frontend of a session went away and the device will serve another
    /// ([`DeviceConfig::reconnect`]): drop everything held on the old guest's behalf.
    fn end_session(&self) {}
}

/// How many bytes of a request [`RequestHandler::may_block`] sees: a FUSE request header.
pub const REQUEST_PEEK_LEN: usize = 40;
/// How many requests that [`RequestHandler::may_block`] may run at once; further ones are
/// [refused](RequestHandler::refuse), so a guest cannot make the daemon spawn threads without
/// bound.
pub const MAX_BLOCKING_REQUESTS: usize = 64;

/// Notifications about the single frontend connection.
pub trait DeviceEvents {
    /// A frontend connected; the daemon is now serving it.
    fn connected(&self);
    /// The frontend connection ended (cleanly or not).
    fn disconnected(&self);
}

/// [`DeviceEvents`] that ignores both notifications.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl DeviceEvents for NoEvents {
    fn connected(&self) {}
    fn disconnected(&self) {}
}

/// Device parameters from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Mount tag reported in the config space (`--tag`); without one the frontend supplies it.
    pub tag: Option<String>,
    /// The most request queues (besides the hiprio queue) offered to the frontend, which sets
    /// up as many of them as it wants (QEMU's `num-request-queues`).
    pub max_request_queues: usize,
    /// Threads serving the request queues; 0 sizes them to the CPUs the device may run on.
    pub queue_threads: usize,
    /// Maximum virtqueue size (`--queue-size`).
    pub queue_size: u16,
    /// Worker threads for requests (`--thread-pool-size`); 0 handles them in the queue thread.
    pub thread_pool_size: usize,
    /// Offer VHOST_USER_PROTOCOL_F_DEVICE_STATE: the handler implements
    /// [`RequestHandler::save_state`] and [`RequestHandler::load_state`].
    pub migration: bool,
    /// Keep listening after the frontend disconnects and serve the next one with a fresh
    /// session (`--reconnect`), instead of returning.
    pub reconnect: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            tag: None,
            max_request_queues: MAX_REQUEST_QUEUES,
            queue_threads: 0,
            queue_size: DEFAULT_QUEUE_SIZE,
            thread_pool_size: 0,
            migration: false,
            reconnect: false,
        }
    }
}

impl DeviceConfig {
    /// Checks every field against what the device and the virtio spec allow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tag) = &self.tag {
            if tag.is_empty() {
                return Err(ConfigError::EmptyTag);
            }
            if tag.len() > config_space::TAG_LEN {
                return Err(ConfigError::TagTooLong(tag.len()));
            }
            if tag.as_bytes().contains(&0) {
                return Err(ConfigError::TagHasNul);
            }
        }
        if !(1..=MAX_REQUEST_QUEUES).contains(&self.max_request_queues) {
            return Err(ConfigError::RequestQueues(self.max_request_queues));
        }
        if !self.queue_size.is_power_of_two() || self.queue_size > MAX_QUEUE_SIZE {
            return Err(ConfigError::QueueSize(self.queue_size));
        }
        Ok(())
    }
}

/// Accepts a frontend on `listener` and serves it until it disconnects.
///
/// Returns `Ok(())` when the frontend goes away (as upstream virtiofsd exits then), or an error
/// for invalid configuration, setup failures and protocol failures. With
/// [`DeviceConfig::reconnect`] a frontend going away (or failing the vhost-user protocol) ends
/// only its session: the handler is told ([`RequestHandler::end_session`]) and the next
/// frontend is served by a fresh backend, until a setup failure ends the loop.
pub fn serve<H: RequestHandler + 'static>(
    listener: UnixListener,
    handler: Arc<H>,
    config: &DeviceConfig,
    events: &dyn DeviceEvents,
) -> Result<(), Error> {
    let stats = Arc::new(DeviceStats::new(config.max_request_queues + 1));
    serve_with_stats(listener, handler, config, events, stats)
}

/// Like [`serve`], counting requests into `stats` (the hiprio queue and then one per request
/// queue), which the caller may read while the device serves; the counts go on across
/// reconnects.
pub fn serve_with_stats<H: RequestHandler + 'static>(
    listener: UnixListener,
    handler: Arc<H>,
    config: &DeviceConfig,
    events: &dyn DeviceEvents,
    stats: Arc<DeviceStats>,
) -> Result<(), Error> {
    config.validate()?;
    // A non-blocking listener would make the accept loop spin.
    listener
        .set_nonblocking(false)
        .map_err(|e| Error::Setup("cannot make the listening socket blocking", e))?;
    let mut listener = Listener::from(listener);
    loop {
        let result = serve_session(&mut listener, &handler, config, events, &stats);
        if !config.reconnect {
            return result;
        }
        match result {
            Ok(()) => {}
            // The frontend broke the protocol: its session is over, the device is not.
            Err(e @ Error::Protocol(_)) => {
                warn!("frontend session ended: {}", ErrorChain(&e));
            }
            Err(e) => return Err(e),
        }
        // Every inode, handle and lock of the old session goes before the next frontend.
        handler.end_session();
        info!("waiting for the next vhost-user frontend");
    }
}

/// Serves one frontend connection with a backend of its own.
fn serve_session<H: RequestHandler + 'static>(
    listener: &mut Listener,
    handler: &Arc<H>,
    config: &DeviceConfig,
    events: &dyn DeviceEvents,
    stats: &Arc<DeviceStats>,
) -> Result<(), Error> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(
        VhostUserFsBackend::new(Arc::clone(handler), config, mem.clone())
            .map_err(|e| Error::Setup("cannot start the thread pool", e))?
            .with_stats(Arc::clone(stats)),
    );
    let mut daemon = VhostUserDaemon::new("virtiofsd".to_owned(), Arc::clone(&backend), mem)?;

    // A queue thread that stopped popping because the pool holds a queue size of its requests
    // resumes when a worker signals this eventfd.
    for (thread_index, epoll) in daemon.get_epoll_handlers().iter().enumerate() {
        if let Some(fd) = backend.resume_fd(thread_index) {
            epoll
                .register_listener(fd, EventSet::IN, u64::from(backend.resume_event()))
                .map_err(|e| Error::Setup("cannot watch a queue's resume eventfd", e))?;
        }
    }

    daemon.start(listener)?;
    info!("frontend connected");
    events.connected();

    let result = daemon.wait();
    events.disconnected();

    // Stop the queue threads before returning so no request is processed after `serve` ends.
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    if config.reconnect {
        // The next frontend may bring the same guest memory back: a request of this session
        // still running must not complete into it.
        backend.abandon_requests();
    }
    drop(daemon);
    drop(backend);

    classify(result)
}

/// Separates the frontend going away, which ends a session normally, from real failures.
fn classify(result: Result<(), BackendError>) -> Result<(), Error> {
    match result {
        Ok(()) => {
            info!("frontend disconnected");
            Ok(())
        }
        Err(BackendError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => {
            info!("frontend disconnected");
            Ok(())
        }
        Err(BackendError::HandleRequest(e)) => Err(Error::Protocol(e)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
