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
//! The options, as implemented:
//!
//! - `--migration-mode=find-paths` (default): the source sends each inode's path relative to
//!   the shared directory, read from the kernel's current path of the descriptor it holds
//!   (its `/proc/self/fd` entry), so a rename on the host before the save is followed. An
//!   inode whose path is unlinked (" (deleted)" with no links left), outside the shared
//!   directory or unreadable is sent as invalid. The destination walks each path from its own
//!   root, one component at a time with the confined lookup (no symlink followed, no `..`),
//!   and checks the file type.
//! - `--migration-mode=file-handles`: the source sends each inode's file handle and, per mount,
//!   a path in the shared directory to a directory on it. The destination opens the handles
//!   with `open_by_handle_at` (it needs `CAP_DAC_READ_SEARCH`, and the same filesystem) and
//!   refuses a file whose path is not inside its shared directory. Unlinked files that the
//!   source still holds survive this mode. The stream's mode decides how the destination
//!   restores; the destination's own `--migration-mode` only keeps the capability.
//! - `--migration-verify-handles` (find-paths, source side): each inode also carries its file
//!   handle (the root's too); the destination compares the handle of what it found, and a
//!   difference (a replaced file) or a missing handle is an error for that inode. A source
//!   filesystem without handles sends none, and those inodes go unverified.
//! - `--migration-confirm-paths` (find-paths, source side): each path is walked again at save
//!   time and must lead to the held file (same `st_dev`/`st_ino`); if not, the descriptor's
//!   current path is read once more and checked again, and a second failure makes the inode
//!   invalid. Paths that literally end in " (deleted)" are always confirmed this way.
//! - `--migration-on-error=abort` (default, destination side): any inode or handle that cannot
//!   be restored fails the whole load, which then leaves the filesystem fresh; the migration
//!   fails and the source goes on serving. `guest-error`: that inode (and its handles) keeps its
//!   id but answers `EIO` to every request until the guest forgets (releases) it; a handle that
//!   cannot be reopened on a good inode is broken alone. Malformed streams, a session this
//!   configuration cannot serve, the root, and a spent descriptor budget always fail the load.
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
