use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum SandboxError {
    /// A system call failed.
    Sys(&'static str, io::Error),
    /// A system call on a path failed.
    Path(&'static str, PathBuf, io::Error),
    ChrootNeedsRoot,
    /// UID/GID ranges need newuidmap/newgidmap, which failed or is missing.
    IdMap(String),
    UnknownCapability(String),
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::Sys(what, e) => write!(f, "sandbox: {what}: {e}"),
            SandboxError::Path(what, p, e) => write!(f, "sandbox: {what} {}: {e}", p.display()),
            SandboxError::ChrootNeedsRoot => {
                write!(f, "sandbox: --sandbox=chroot requires running as root")
            }
            SandboxError::IdMap(msg) => write!(f, "sandbox: cannot set up ID mappings: {msg}"),
            SandboxError::UnknownCapability(name) => write!(f, "unknown capability {name:?}"),
        }
    }
}

impl std::error::Error for SandboxError {}
