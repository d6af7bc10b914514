//! Live migration of the filesystem's state: what the guest's session holds (its inodes, open
//! handles and INIT-time flags), saved on the source once the queues have stopped and restored
//! on a fresh destination before it serves a request, so the guest goes on without a new INIT.
//!
//! No file data moves: both sides must share the same directory contents (see upstream
//! virtiofsd's migration documentation for the same requirement).
//!
//! - [`format`]: the wire format and its validation.
//! - [`save`]: how the source describes each inode (`--migration-mode`,
//!   `--migration-verify-handles`, `--migration-confirm-paths`).
//! - [`load`]: how the destination finds them again, confined to its shared directory, and what
//!   it does when it cannot (`--migration-on-error`).
//!
//! Locks do not move. POSIX (OFD) and flock locks belong to the source's open file
//! descriptions, which stay in the source process; the destination opens new descriptions that
//! hold no lock. The stream records the POSIX lock owners the source held (for the log); the
//! destination restores none of them, and the guest's locks are gone after the switch-over
//! (upstream virtiofsd drops them too). While the source lives (a failed migration), they stay
//! held there.

pub mod format;
mod load;
mod save;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

pub use format::FormatError;

/// Why the source could not produce a state at all (a single inode that cannot be described is
/// not an error: it is recorded as such).
#[derive(Debug)]
pub enum SaveError {
    /// The shared directory's own path could not be read.
    RootPath(io::Error),
    /// The guest still holds more than the format can carry.
    TooMany { what: &'static str, count: usize },
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaveError::RootPath(_) => write!(f, "cannot read the shared directory's path"),
            SaveError::TooMany { what, count } => {
                write!(f, "{count} {what} are more than a migration stream carries")
            }
        }
    }
}

impl std::error::Error for SaveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SaveError::RootPath(e) => Some(e),
            SaveError::TooMany { .. } => None,
        }
    }
}

impl From<SaveError> for io::Error {
    fn from(e: SaveError) -> io::Error {
        io::Error::other(e)
    }
}

/// Why the destination refused a state. Nothing is restored then: the filesystem stays as fresh
/// as before the call.
#[derive(Debug)]
pub enum LoadError {
    /// The stream is malformed or inconsistent.
    Format(FormatError),
    /// The stream is larger than the caller allows.
    TooLarge { len: usize, max: usize },
    /// The filesystem already serves a session (inodes or handles besides the root).
    NotFresh,
    /// The source's session and this destination's configuration disagree.
    Session(String),
    /// An inode or handle could not be restored and `--migration-on-error=abort` is in force
    /// (or the failure concerns the whole session, such as the root).
    Restore {
        what: &'static str,
        id: u64,
        reason: String,
        source: Option<io::Error>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Format(_) => write!(f, "invalid migration stream"),
            LoadError::TooLarge { len, max } => {
                write!(
                    f,
                    "migration stream of {len} bytes is over the {max}-byte limit"
                )
            }
            LoadError::NotFresh => write!(f, "the filesystem already serves a session"),
            LoadError::Session(why) => write!(f, "session cannot be restored: {why}"),
            LoadError::Restore {
                what, id, reason, ..
            } => write!(f, "cannot restore {what} {id}: {reason}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Format(e) => Some(e),
            LoadError::Restore {
                source: Some(e), ..
            } => Some(e),
            _ => None,
        }
    }
}

impl From<FormatError> for LoadError {
    fn from(e: FormatError) -> LoadError {
        LoadError::Format(e)
    }
}

impl From<LoadError> for io::Error {
    fn from(e: LoadError) -> io::Error {
        let kind = match e {
            LoadError::Format(_) | LoadError::TooLarge { .. } => io::ErrorKind::InvalidData,
            LoadError::NotFresh => io::ErrorKind::ResourceBusy,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Largest state [`crate::PassthroughFs::load_state`] accepts; the transport bounds what it
/// collects by its own limit too.
pub const MAX_STATE_BYTES: usize = 256 << 20;
