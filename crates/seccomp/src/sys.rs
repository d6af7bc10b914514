//! The two system calls that install a filter. Nothing here allocates, so it is safe to call in
//! a child between `fork` and `_exit`.

use std::io;

use crate::Error;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;

pub(crate) fn install_filter(program: &[libc::sock_filter]) -> Result<(), Error> {
    let len = u16::try_from(program.len()).map_err(|_| Error::ProgramTooLong(program.len()))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integer arguments and touches no memory.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if ret != 0 {
        return Err(Error::NoNewPrivs(io::Error::last_os_error()));
    }
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel copies
    // the program and never writes through the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        )
    };
    match ret {
        0 => Ok(()),
        // With TSYNC a positive return is the id of a thread that could not be synchronised.
        tid if tid > 0 => Err(Error::ThreadSync(tid)),
        _ => Err(Error::Install(io::Error::last_os_error())),
    }
}
