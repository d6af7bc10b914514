use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call failed.
    #[error("sandbox: {0}")]
    Sys(&'static str, #[source] io::Error),
    /// A system call on a path failed.
    #[error("sandbox: {what} {path}", what = .0, path = .1.display())]
    Path(&'static str, PathBuf, #[source] io::Error),
    /// A fresh procfs could not be mounted, or its `self/fd` not bound for the device's handle.
    /// Start-up fails rather than keep a handle on the host's whole procfs.
    #[error("sandbox: cannot give the device a private /proc/self/fd: {0}")]
    ProcSelfFd(&'static str, #[source] io::Error),
    #[error("sandbox: --sandbox=chroot requires running as root")]
    ChrootNeedsRoot,
    /// UID/GID ranges need newuidmap/newgidmap, which failed or is missing.
    #[error("sandbox: cannot set up ID mappings")]
    IdMap(#[source] crate::idmap::IdMapError),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
}
