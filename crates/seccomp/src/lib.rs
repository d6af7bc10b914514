//! The seccomp filter of a device process.
//!
//! Once the sandbox is set up, a device process only serves: it reads and writes guest memory,
//! waits on epoll, receives descriptors over the vhost-user socket, runs the passthrough
//! filesystem's system calls and talks to its parent over the control socket. Everything else
//! (creating sockets, `execve`, `ptrace`, mounting, loading modules...) is outside the allow list
//! in [`allowlist`] and meets the chosen [`SeccompAction`].
//!
//! The filter is raw classic BPF (see [`bpf`]), built without any dependency beyond `libc`.

pub mod allowlist;
pub mod bpf;
mod error;
mod sys;

pub use error::Error;

/// What happens to a system call outside the allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompAction {
    /// The whole process dies of `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`).
    Kill,
    /// The call proceeds and the kernel logs it to the audit log (`SECCOMP_RET_LOG`).
    Log,
    /// The calling thread gets `SIGSYS` (`SECCOMP_RET_TRAP`), which a handler may catch.
    Trap,
    /// No filter is installed.
    None,
}

impl SeccompAction {
    /// The `SECCOMP_RET_*` value for a forbidden call, or `None` when no filter is wanted.
    fn ret_value(self) -> Option<u32> {
        match self {
            SeccompAction::Kill => Some(bpf::RET_KILL_PROCESS),
            SeccompAction::Log => Some(bpf::RET_LOG),
            SeccompAction::Trap => Some(bpf::RET_TRAP),
            SeccompAction::None => None,
        }
    }
}

impl std::str::FromStr for SeccompAction {
    type Err = Error;

    /// Accepts upstream virtiofsd's `--seccomp` values.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "kill" => Ok(SeccompAction::Kill),
            "log" => Ok(SeccompAction::Log),
            "trap" => Ok(SeccompAction::Trap),
            "none" => Ok(SeccompAction::None),
            other => Err(Error::UnknownAction(other.to_owned())),
        }
    }
}

/// A compiled filter, ready to be applied. Building it allocates; applying it does not, so a
/// caller may build before `fork` and apply in the child.
pub struct Filter {
    program: Option<Vec<libc::sock_filter>>,
}

impl Filter {
    /// Compiles the allow list with `action` for everything else. `file_handles` (the device
    /// opens file handles: `--inode-file-handles=prefer|mandatory` or
    /// `--migration-mode=file-handles`, and it found at start-up that it can) allows
    /// `open_by_handle_at`.
    pub fn new(action: SeccompAction, file_handles: bool) -> Result<Self, Error> {
        let program = match action.ret_value() {
            None => None,
            Some(ret) => Some(bpf::compile(&allowlist::allowed(file_handles), ret)?),
        };
        Ok(Filter { program })
    }

    /// Number of BPF instructions (0 for [`SeccompAction::None`]).
    pub fn len(&self) -> usize {
        self.program.as_ref().map_or(0, Vec::len)
    }

    /// True when applying does nothing ([`SeccompAction::None`]).
    pub fn is_empty(&self) -> bool {
        self.program.is_none()
    }

    /// Sets `PR_SET_NO_NEW_PRIVS` and installs the filter on every thread of the process
    /// (`SECCOMP_FILTER_FLAG_TSYNC`); threads created later inherit it.
    pub fn apply(&self) -> Result<(), Error> {
        match &self.program {
            None => Ok(()),
            Some(program) => sys::install_filter(program),
        }
    }
}

/// Compiles and installs the filter for `action` on the whole process (see [`Filter::new`] and
/// [`Filter::apply`]).
pub fn install(action: SeccompAction, file_handles: bool) -> Result<(), Error> {
    Filter::new(action, file_handles)?.apply()
}

#[cfg(test)]
mod tests;
