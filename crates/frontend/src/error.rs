//! Errors of the frontend library.

use std::fmt;
use std::io;

/// Everything that can go wrong while talking to a vhost-user-fs backend.
#[derive(Debug)]
pub enum Error {
    /// A system call failed.
    Io(&'static str, io::Error),
    /// The vhost-user control channel failed (message refused, socket closed...).
    Vhost(&'static str, vhost::Error),
    /// The backend lacks something this frontend needs.
    Unsupported(String),
    /// Guest memory is exhausted or an address is outside it.
    Memory(String),
    /// The virtqueue has no room for the chain.
    QueueFull { queue: usize },
    /// An invalid queue index was used.
    NoSuchQueue(usize),
    /// No completion arrived within the deadline.
    Timeout { queue: usize, waited_ms: u128 },
    /// The backend closed the vhost-user socket.
    Disconnected,
    /// The backend answered with something that is not a valid FUSE reply.
    BadReply(String),
    /// A FUSE request failed with this (positive) errno.
    Fuse { opcode: u32, errno: i32 },
}

impl Error {
    /// The errno of a failed FUSE request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Fuse { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Vhost(what, e) => write!(f, "vhost-user {what}: {e}"),
            Error::Unsupported(m) => write!(f, "backend unsupported: {m}"),
            Error::Memory(m) => write!(f, "guest memory: {m}"),
            Error::QueueFull { queue } => write!(f, "queue {queue} is full"),
            Error::NoSuchQueue(q) => write!(f, "no queue {q}"),
            Error::Timeout { queue, waited_ms } => {
                write!(f, "no completion on queue {queue} after {waited_ms} ms")
            }
            Error::Disconnected => write!(f, "the backend closed the connection"),
            Error::BadReply(m) => write!(f, "bad FUSE reply: {m}"),
            Error::Fuse { opcode, errno } => write!(
                f,
                "FUSE opcode {opcode} ({}) failed: {}",
                crate::fuse::opcode_name(*opcode),
                io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
