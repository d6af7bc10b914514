//! Data-range, sync, lock and statx syscalls on open descriptors.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn to_off(v: u64) -> io::Result<i64> {
    i64::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `fallocate(2)` with any `FALLOC_FL_*` mode; the host filesystem decides what it supports.
pub fn fallocate(fd: BorrowedFd<'_>, mode: u32, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (to_off(offset)?, to_off(len)?);
    // SAFETY: plain syscall on a borrowed, open descriptor.
    check(unsafe { libc::fallocate64(fd.as_raw_fd(), mode as libc::c_int, offset, len) }).map(drop)
}

/// `lseek64(2)` with any `whence`, `SEEK_DATA`/`SEEK_HOLE` included; returns the new offset.
pub fn lseek(fd: BorrowedFd<'_>, offset: u64, whence: u32) -> io::Result<u64> {
    // Negative offsets are meaningful for SEEK_CUR/SEEK_END, so the bits pass through as-is.
    // SAFETY: plain syscall on a borrowed, open descriptor.
    let ret = unsafe { libc::lseek64(fd.as_raw_fd(), offset as i64, whence as libc::c_int) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as u64)
    }
}

/// `copy_file_range(2)` between explicit offsets; returns the bytes copied.
pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: u64,
    flags: u32,
) -> io::Result<usize> {
    let mut off_in = to_off(off_in)?;
    let mut off_out = to_off(off_out)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    // SAFETY: the offsets are valid writable i64s for the call; the descriptors are open.
    let ret = unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `syncfs(2)`: flushes the whole filesystem `fd` lives on.
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// `flock(2)` with `LOCK_SH`/`LOCK_EX`/`LOCK_UN`, optionally `LOCK_NB`.
pub fn flock(fd: BorrowedFd<'_>, op: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// `fcntl(2)` with an open-file-description lock command (`F_OFD_GETLK`/`SETLK`/`SETLKW`);
/// `F_OFD_GETLK` overwrites `lock` with the conflicting lock or `F_UNLCK`.
pub fn ofd_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, lock: &mut libc::flock64) -> io::Result<()> {
    // SAFETY: `lock` is a valid, writable flock64 for the duration of the call.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, lock as *mut libc::flock64) }).map(drop)
}

/// `fcntl(F_GETFL)`: the descriptor's access mode and status flags.
pub fn get_fl(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// `statx(2)` of the file `fd` refers to itself (never a followed symlink); `flags` may add
/// `AT_STATX_*` sync flags.
pub fn statx_full(fd: BorrowedFd<'_>, flags: libc::c_int, mask: u32) -> io::Result<libc::statx> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `stx` is writable memory of the right type; the path is an empty C string.
    check(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW | flags,
            mask,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: the call succeeded, so the kernel filled in `stx` (zeroed beforehand regardless).
    Ok(unsafe { stx.assume_init() })
}
