//! Per-thread supplementary groups. The raw syscall is used on purpose: the C library's
//! `setgroups()` broadcasts the change to every thread of the process.

use std::io;

/// The calling thread's supplementary groups.
pub fn getgroups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: a zero size only asks for the count and writes nothing.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` is writable for `groups.len()` entries.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// Replaces the calling thread's (only) supplementary groups.
pub fn setgroups_thread(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: `groups` is readable for `groups.len()` entries; the raw syscall touches only
    // this thread's credentials.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
