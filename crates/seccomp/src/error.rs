use std::fmt;
use std::io;

/// Why the filter could not be built or installed.
#[derive(Debug)]
pub enum Error {
    /// `--seccomp` value that is not `kill`, `log`, `trap` or `none`.
    UnknownAction(String),
    /// The compiled program does not fit in a classic BPF program.
    ProgramTooLong(usize),
    /// A syscall number that does not fit the filter's 32-bit comparison.
    BadSyscallNumber(&'static str),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    NoNewPrivs(io::Error),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    Install(io::Error),
    /// TSYNC could not synchronise the thread with this id (it runs another filter).
    ThreadSync(i64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownAction(a) => {
                write!(
                    f,
                    "unknown seccomp action {a:?} (expected kill, log, trap or none)"
                )
            }
            Error::ProgramTooLong(n) => {
                write!(
                    f,
                    "seccomp program has {n} instructions, more than BPF allows"
                )
            }
            Error::BadSyscallNumber(name) => write!(f, "bad syscall number for {name}"),
            Error::NoNewPrivs(e) => write!(f, "prctl(PR_SET_NO_NEW_PRIVS) failed: {e}"),
            Error::Install(e) => write!(f, "seccomp(SECCOMP_SET_MODE_FILTER) failed: {e}"),
            Error::ThreadSync(tid) => {
                write!(
                    f,
                    "thread {tid} could not be synchronised to the seccomp filter"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NoNewPrivs(e) | Error::Install(e) => Some(e),
            _ => None,
        }
    }
}
