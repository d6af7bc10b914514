//! Thin safe wrappers over the raw syscalls the passthrough filesystem needs.
//!
//! Every `unsafe` block of the filesystem (tests aside) lives here, so the rest of the code deals
//! only in `OwnedFd`/`BorrowedFd`, `CStr` and `io::Result`. Wrappers return the raw OS error
//! unchanged so it can travel back to the guest as `-errno`.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

mod creds;
mod fileops;
mod handles;
mod xattr;

pub use creds::*;
pub use fileops::*;
pub use handles::*;
pub use xattr::*;

/// An empty path, for the `AT_EMPTY_PATH` family of calls that act on the dirfd itself.
pub const EMPTY: &CStr = c"";

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(ret: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(ret)?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)`; `O_CLOEXEC` is always added.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    owned(fd)
}

/// `struct open_how` of `openat2(2)` (libc's is `non_exhaustive`, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` with `RESOLVE_*` flags; `O_CLOEXEC` is always added. Fails with `ENOSYS` on
/// kernels older than 5.6.
pub fn openat2(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `name` and `how` are valid for the call and `size` matches the struct passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(check_long(ret)? as libc::c_int)
}

/// `fstatat64(2)`.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::zeroed();
    // SAFETY: `st` is writable memory of the right type; `name` is NUL-terminated.
    check(unsafe { libc::fstatat64(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: the call succeeded, so the kernel filled in `st` (and it was zeroed before anyway).
    Ok(unsafe { st.assume_init() })
}

/// Makes `dir` the process's working directory.
pub fn fchdir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fchdir only reads the descriptor number, which `dir` keeps open for the call.
    if unsafe { libc::fchdir(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attributes of the file `fd` refers to itself (works on `O_PATH` fds and symlinks).
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat64> {
    fstatat(fd, EMPTY, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// `statx(2)` of the file `fd` refers to, returning `stat64`-shaped attributes plus the mount id
/// (0 when the kernel does not report one). Fails with `ENOSYS` on kernels without `statx`.
pub fn statx_fd(fd: BorrowedFd<'_>) -> io::Result<(libc::stat64, u64)> {
    statx_at(fd, EMPTY, libc::AT_EMPTY_PATH)
}

/// [`statx_fd`] of `name` in the directory `dir`, never following a symlink `name` names.
pub fn statx_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
) -> io::Result<(libc::stat64, u64)> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `stx` is writable memory of the right type; `name` is NUL-terminated and only
    // read during the call.
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: the call succeeded, so the kernel filled in `stx` (zeroed beforehand regardless).
    let stx = unsafe { stx.assume_init() };
    // SAFETY: `stat64` is plain old data; all-zero is a valid value.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    st.st_ino = stx.stx_ino;
    st.st_mode = u32::from(stx.stx_mode);
    st.st_nlink = stx.stx_nlink.into();
    st.st_uid = stx.stx_uid;
    st.st_gid = stx.stx_gid;
    st.st_rdev = libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
    st.st_size = stx.stx_size as i64;
    st.st_blksize = stx.stx_blksize.into();
    st.st_blocks = stx.stx_blocks as i64;
    st.st_atime = stx.stx_atime.tv_sec;
    st.st_atime_nsec = stx.stx_atime.tv_nsec.into();
    st.st_mtime = stx.stx_mtime.tv_sec;
    st.st_mtime_nsec = stx.stx_mtime.tv_nsec.into();
    st.st_ctime = stx.stx_ctime.tv_sec;
    st.st_ctime_nsec = stx.stx_ctime.tv_nsec.into();
    let mnt_id = if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        stx.stx_mnt_id
    } else {
        0
    };
    Ok((st, mnt_id))
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and only read during the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(2)`.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and only read during the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat(2)`: creates `name` in `dir` holding `target` verbatim.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and only read during the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat(2)`.
pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and only read during the call.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `unlinkat(2)`.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and only read during the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2(2)`, called directly so `flags` work whatever the C library.
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and only read during the call.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `readlinkat(2)` of the symlink `fd` refers to (an `O_PATH` fd).
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes; the path is an empty C string.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `readlinkat(2)` of `name` in `dir`: the target of a symlink, or for a `/proc/self/fd` entry
/// the kernel's current path of that descriptor.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes; `name` is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `fchownat(2)`; `u32::MAX` leaves an id unchanged.
pub fn fchownat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: u32,
    gid: u32,
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and only read during the call.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) }).map(drop)
}

/// `fchmod(2)` on an open (non-`O_PATH`) fd.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `fchmodat(2)` (follows the final component: callers pass a `/proc/self/fd` entry, never a
/// guest name).
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and only read during the call.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// `utimensat(2)`; `times` use `UTIME_NOW`/`UTIME_OMIT` as the kernel defines them.
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    times: &[libc::timespec; 2],
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `name` and `times` are valid for reads during the call.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
}

/// `ftruncate64(2)`.
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain syscall on a borrowed, open descriptor.
    check(unsafe { libc::ftruncate64(fd.as_raw_fd(), size) }).map(drop)
}

/// `fsync(2)` or, with `datasync`, `fdatasync(2)`.
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on a borrowed, open descriptor.
    let ret = unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    check(ret).map(drop)
}

/// `fstatvfs64(3)` (works on `O_PATH` fds).
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::zeroed();
    // SAFETY: `st` is writable memory of the right type.
    check(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call succeeded, so `st` is filled in (and was zeroed beforehand regardless).
    Ok(unsafe { st.assume_init() })
}

/// `getdents64(2)` into `buf`; returns the number of bytes filled (0 at end of directory).
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    Ok(check_long(ret)? as usize)
}

/// `lseek64(2)` with `SEEK_SET`; directory offsets are opaque cookies, so any `u64` is passed on.
pub fn seek_set(fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    let ret = unsafe { libc::lseek64(fd.as_raw_fd(), offset as i64, libc::SEEK_SET) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `dup(2)` (with `O_CLOEXEC`).
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall on a borrowed, open descriptor; the result is a new owned fd.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })
}

/// `setfsuid(2)` for the calling thread only; returns the previous fsuid. The call cannot report
/// failure, so callers verify with [`current_fsuid`].
pub fn setfsuid(uid: u32) -> u32 {
    // SAFETY: the raw syscall changes only this thread's filesystem uid.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

/// `setfsgid(2)` for the calling thread only; returns the previous fsgid.
pub fn setfsgid(gid: u32) -> u32 {
    // SAFETY: the raw syscall changes only this thread's filesystem gid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

/// The calling thread's fsuid (an invalid id is never applied, so passing `u32::MAX` just reads).
pub fn current_fsuid() -> u32 {
    setfsuid(u32::MAX)
}

/// The calling thread's fsgid.
pub fn current_fsgid() -> u32 {
    setfsgid(u32::MAX)
}

/// `umask(2)`; returns the previous mask.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn statx_matches_fstatat() {
        let root = std::fs::File::open("/").unwrap();
        let dir = openat(root.as_fd(), c"tmp", libc::O_PATH, 0).unwrap();
        let a = stat_fd(dir.as_fd()).unwrap();
        let (b, _mnt) = statx_fd(dir.as_fd()).unwrap();
        assert_eq!(a.st_ino, b.st_ino);
        assert_eq!(a.st_dev, b.st_dev);
        assert_eq!(a.st_mode, b.st_mode);
    }

    #[test]
    fn openat2_stays_beneath_its_directory() {
        let root = std::fs::File::open("/").unwrap();
        let tmp = openat(root.as_fd(), c"tmp", libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        let r = openat2(tmp.as_fd(), c"..", libc::O_PATH, libc::RESOLVE_BENEATH);
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                panic!("kernel lacks openat2; the fallback path is what runs here")
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EXDEV)),
            Ok(_) => panic!("RESOLVE_BENEATH let \"..\" escape"),
        }
    }

    #[test]
    fn errors_are_raw_os_errors() {
        let root = std::fs::File::open("/").unwrap();
        let err = openat(root.as_fd(), c"definitely-not-here-xyz", libc::O_PATH, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
