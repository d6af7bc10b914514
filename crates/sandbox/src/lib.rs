//! Confinement of one device process.
//!
//! [`enter`] puts the calling (single-threaded) process in the requested sandbox and hands back a
//! private handle on `/proc/self/fd` plus the path under which the shared directory is now seen.
//! Every descriptor but those the caller keeps is closed first, and stdin, stdout and stderr
//! point at `/dev/null` (a device logs over its control channel).
//! [`caps::restrict`] then trims the capability sets to what serving files needs.

pub mod caps;
mod error;
mod idmap;
mod namespace;
mod sys;

use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub use error::SandboxError;
pub use idmap::{IdMapError, IdRange};

/// How the device process is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// New mount, PID and network namespaces (and a user namespace when unprivileged), with the
    /// shared directory as the root (`pivot_root`).
    Namespace,
    /// `chroot` into the shared directory; root only.
    Chroot,
    /// No confinement beyond the passthrough layer's own path checks.
    None,
}

pub struct Options<'a> {
    pub mode: Mode,
    pub shared_dir: &'a Path,
    pub uid_map: &'a [IdRange],
    pub gid_map: &'a [IdRange],
    /// Descriptors the device opened itself and keeps (control channel, listening socket).
    /// Every other descriptor is closed on entry and 0, 1 and 2 point at `/dev/null`.
    pub keep_fds: &'a [RawFd],
}

/// What the serving process needs after entering the sandbox.
#[derive(Debug)]
pub struct Sandboxed {
    /// `O_PATH` handle on this process's `/proc/self/fd`.
    pub proc_self_fd: OwnedFd,
    /// Where the shared directory is now found (`/` once it became the root).
    pub root_dir: PathBuf,
    /// False once the process no longer sees the host's file system, so host paths (such as the
    /// socket file) must not be used any more: the same path may now name a file in the share.
    pub host_paths_visible: bool,
}

/// Enters the sandbox. With [`Mode::Namespace`] this forks: the calling process becomes a
/// waiter that forwards SIGTERM, SIGINT, SIGHUP and SIGUSR1 to the serving process, runs
/// `on_exit` after it ends (it still sees host paths) and exits with its status; only the
/// serving process returns from here. Must be called before any thread is started.
pub fn enter(opts: &Options<'_>, on_exit: &dyn Fn()) -> Result<Sandboxed, SandboxError> {
    // Before anything else (and before any root change, while /dev/null is reachable), so no
    // process of the sandbox, waiting parents included, holds the embedder's descriptors.
    sys::release_inherited(opts.keep_fds)
        .map_err(|e| SandboxError::Sys("closing inherited descriptors", e))?;
    match opts.mode {
        Mode::None => Ok(Sandboxed {
            proc_self_fd: sys::open_path(Path::new("/proc/self/fd"))
                .map_err(|e| SandboxError::Sys("cannot open /proc/self/fd", e))?,
            root_dir: opts.shared_dir.to_owned(),
            host_paths_visible: true,
        }),
        Mode::Chroot => enter_chroot(opts.shared_dir),
        Mode::Namespace => namespace::enter(opts, on_exit),
    }
}

fn enter_chroot(shared_dir: &Path) -> Result<Sandboxed, SandboxError> {
    if sys::geteuid() != 0 {
        return Err(SandboxError::ChrootNeedsRoot);
    }
    // A mount namespace of its own, as in the namespace mode, so that the device gets the same
    // private /proc/self/fd handle (not the host's whole procfs) and a nodev,nosuid share.
    namespace::private_mounts()?;
    let proc_self_fd = namespace::private_proc_self_fd()?;
    namespace::bind_share(shared_dir)?;
    sys::chroot(shared_dir).map_err(|e| SandboxError::Path("chroot", shared_dir.to_owned(), e))?;
    sys::chdir(Path::new("/")).map_err(|e| SandboxError::Sys("chdir /", e))?;
    Ok(Sandboxed {
        proc_self_fd,
        root_dir: PathBuf::from("/"),
        host_paths_visible: false,
    })
}
