//! The device's errors. Each keeps what caused it as its `source()` instead of folding the
//! cause's text into its own message, so whoever prints a chain (`outer: inner: ...`) shows
//! every cause exactly once.

use std::fmt;
use std::io;

use vhost::vhost_user::Error as VhostUserError;
use vhost_user_backend::Error as BackendError;
use vhost_user_backend::VhostUserHandlerError;

use crate::config_space::TAG_LEN;
use crate::{MAX_QUEUE_SIZE, MAX_REQUEST_QUEUES};

/// A [`DeviceConfig`](crate::DeviceConfig) value the device cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The tag is empty.
    #[error("the tag must not be empty")]
    EmptyTag,
    /// The tag is longer than the 36-byte config-space field (length in bytes).
    #[error("the tag is {0} bytes long; at most {TAG_LEN} are allowed")]
    TagTooLong(usize),
    /// The tag contains a NUL byte, which would truncate it in the guest.
    #[error("the tag must not contain NUL bytes")]
    TagHasNul,
    /// The request queue count is outside `1..=MAX_REQUEST_QUEUES`.
    #[error("{0} request queues requested; between 1 and {MAX_REQUEST_QUEUES} are supported")]
    RequestQueues(usize),
    /// The queue size is not a power of two in `1..=MAX_QUEUE_SIZE`.
    #[error("queue size {0} is not a power of two between 1 and {MAX_QUEUE_SIZE}")]
    QueueSize(u16),
}

/// Why [`serve`](crate::serve) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was rejected.
    #[error("invalid device configuration")]
    Config(#[from] ConfigError),
    /// Setting up the listening socket, the thread pool or a queue's eventfd failed.
    #[error("cannot set up the device: {0}")]
    Setup(&'static str, #[source] io::Error),
    /// The vhost-user daemon could not be created, started or waited for.
    #[error(transparent)]
    Daemon(DaemonError),
    /// The vhost-user conversation failed for a reason other than the frontend going away.
    #[error("vhost-user protocol error")]
    Protocol(#[source] VhostUserError),
}

/// What the vhost-user backend library reported, with its cause kept as a source: the
/// library's own error type prints its cause inline and offers no `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create the vhost-user handler")]
    Handler(#[source] VhostUserHandlerError),
    #[error("cannot listen for a vhost-user frontend")]
    Listen(#[source] VhostUserError),
    #[error("cannot accept a vhost-user frontend")]
    Accept(#[source] VhostUserError),
    #[error("cannot start the vhost-user thread")]
    Start(#[source] io::Error),
    #[error("the vhost-user thread panicked")]
    Panicked,
    #[error("vhost-user request failed")]
    Request(#[source] VhostUserError),
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Error::Daemon(match e {
            BackendError::NewVhostUserHandler(e) => DaemonError::Handler(e),
            BackendError::CreateBackendListener(e) | BackendError::CreateVhostUserListener(e) => {
                DaemonError::Listen(e)
            }
            BackendError::CreateBackendReqHandler(e) => DaemonError::Accept(e),
            BackendError::StartDaemon(e) => DaemonError::Start(e),
            BackendError::WaitDaemon(_) => DaemonError::Panicked,
            BackendError::HandleRequest(e) => DaemonError::Request(e),
        })
    }
}

/// How a guest corrupted a virtqueue so badly that the device stops serving it.
#[derive(Debug, thiserror::Error)]
pub enum QueueFault {
    /// The avail index ran more than a queue size ahead of (or behind) the device's position.
    #[error(
        "avail index {avail} is {} entries ahead of {next}, more than the queue size {size}",
        avail.wrapping_sub(*next)
    )]
    AvailIndex {
        /// The guest's avail index.
        avail: u16,
        /// The device's next avail position.
        next: u16,
        /// The queue size.
        size: u16,
    },
    /// An avail ring entry names a descriptor outside the table.
    #[error("chain head {head} is outside the {size}-entry descriptor table")]
    HeadIndex {
        /// The head index the guest published.
        head: u16,
        /// The queue size.
        size: u16,
    },
    /// The rings cannot be read or written (they lie outside guest memory).
    #[error("virtqueue rings are unusable")]
    Ring(#[source] RingError),
}

/// Why the rings of a virtqueue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(transparent)]
    Queue(#[from] virtio_queue::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Work was announced but the ring entry could not be read.
    #[error("avail ring entry unreadable")]
    Unreadable,
}

impl From<virtio_queue::Error> for QueueFault {
    fn from(e: virtio_queue::Error) -> Self {
        QueueFault::Ring(e.into())
    }
}

impl From<io::Error> for QueueFault {
    fn from(e: io::Error) -> Self {
        QueueFault::Ring(e.into())
    }
}

/// Shows an error and its causes as `outer: inner: ...`, for log lines.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No cause may appear twice in a printed chain, nor a phrase of two words or more.
    pub(crate) fn assert_no_repeats(chain: &str) {
        let words: Vec<&str> = chain.split_whitespace().collect();
        for pair in words.windows(2) {
            let phrase = pair.join(" ");
            assert_eq!(
                chain.matches(&phrase).count(),
                1,
                "{phrase:?} twice in {chain:?}"
            );
        }
    }

    #[test]
    fn backend_errors_keep_their_cause_once() {
        let e = Error::from(BackendError::HandleRequest(VhostUserError::SocketBroken(
            io::Error::from_raw_os_error(libc::ECONNRESET),
        )));
        let chain = ErrorChain(&e).to_string();
        assert!(chain.starts_with("vhost-user request failed: "), "{chain}");
        assert!(chain.contains("Connection reset by peer"), "{chain}");
        assert_no_repeats(&chain);

        let e = Error::from(BackendError::WaitDaemon(Box::new(())));
        assert_eq!(ErrorChain(&e).to_string(), "the vhost-user thread panicked");
    }

    #[test]
    fn config_and_setup_errors_name_their_cause() {
        let e = Error::from(ConfigError::TagTooLong(40));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "invalid device configuration: the tag is 40 bytes long; at most 36 are allowed"
        );
        let e = Error::Setup(
            "cannot start the thread pool",
            io::Error::from_raw_os_error(libc::EAGAIN),
        );
        let chain = ErrorChain(&e).to_string();
        assert!(
            chain.starts_with("cannot set up the device: cannot start the thread pool: "),
            "{chain}"
        );
        assert_no_repeats(&chain);
    }

    #[test]
    fn queue_faults_show_the_ring_error_once() {
        let fault = QueueFault::from(virtio_queue::Error::InvalidAvailRingIndex);
        let chain = ErrorChain(&fault).to_string();
        assert_eq!(
            chain,
            "virtqueue rings are unusable: invalid available ring index (more descriptors to \
             process than queue size)"
        );
        let fault = QueueFault::Ring(RingError::Unreadable);
        assert_eq!(
            ErrorChain(&fault).to_string(),
            "virtqueue rings are unusable: avail ring entry unreadable"
        );
    }
}
