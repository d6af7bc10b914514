use std::io;

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--seccomp` value that is not `kill`, `log`, `trap` or `none`.
    #[error("unknown seccomp action {0:?} (expected kill, log, trap or none)")]
    UnknownAction(String),
    /// The compiled program does not fit in a classic BPF program.
    #[error("seccomp program has {0} instructions, more than BPF allows")]
    ProgramTooLong(usize),
    /// A syscall number that does not fit the filter's 32-bit comparison.
    #[error("bad syscall number for {0}")]
    BadSyscallNumber(&'static str),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed")]
    NoNewPrivs(#[source] io::Error),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error("seccomp(SECCOMP_SET_MODE_FILTER) failed")]
    Install(#[source] io::Error),
    /// TSYNC could not synchronise the thread with this id (it runs another filter).
    #[error("thread {0} could not be synchronised to the seccomp filter")]
    ThreadSync(i64),
}
