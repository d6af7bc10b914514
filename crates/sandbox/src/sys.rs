//! Thin wrappers over the raw system calls the sandbox needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn geteuid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getegid() }
}

/// An `O_PATH` directory descriptor.
pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid C string; the result is checked before being owned.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn chroot(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(c.as_ptr()) })
}

pub fn chdir(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) })
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare only changes this process's namespaces.
    check(unsafe { libc::unshare(flags) })
}

/// Mounts; `None` arguments are passed as null pointers.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype
        .map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
        .transpose()?;
    // SAFETY: every non-null pointer is a valid C string that outlives the call.
    check(unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    })
}

/// `pivot_root(".", ".")` in the current directory: stacks the old root on top of the new one,
/// so it can be detached without needing a directory to put it in.
pub fn pivot_root_here() -> io::Result<()> {
    // SAFETY: both arguments are valid C strings.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    check(rc as libc::c_int)
}

pub fn umount_detach(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })
}

/// Forks with the raw system call. The C library's fork would run the embedding runtime's
/// `pthread_atfork` handlers, and libuv's closes and recreates its signal pipe by remembered
/// descriptor numbers, which in a device process belong to our own sockets by now.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: callers only fork while single-threaded; with only SIGCHLD as flags, clone behaves
    // as fork minus the atfork handlers (the child gets a copy of everything).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

pub fn set_parent_death_signal(sig: libc::c_int) {
    // SAFETY: plain prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

/// Closes every descriptor from `first` up; the caller owns nothing it still uses among them.
pub fn close_from(first: u32) {
    close_range(first, u32::MAX);
}

/// Ends the process without running exit handlers (they belong to the embedding runtime).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(code) }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Adds `nodev` and `nosuid` to the mount at `path` and every mount below it, leaving their
/// other flags as they are. Uses `mount_setattr` (Linux 5.12); on older kernels remounts the top
/// mount only, keeping the flags it already has (a user namespace may not clear locked ones).
pub fn make_nodev_nosuid(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` is a valid C string and `attr` a mount_attr of the size passed; both outlive
    // the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: statvfs is plain data, filled in by the call before it is read.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a valid out pointer.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    let mut keep: libc::c_ulong = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            keep |= ms_flag;
        }
    }
    mount(
        None,
        path,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV | libc::MS_NOSUID | keep,
    )
}

/// Opens `/dev/null` read-write (close-on-exec).
pub fn open_dev_null() -> io::Result<OwnedFd> {
    // SAFETY: a valid C string; the result is checked before being owned.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Points descriptors 0, 1 and 2 (unless listed in `keep`) at `/dev/null` and closes every other
/// descriptor not in `keep`: nothing the embedder's process held (its stderr, pipes, files)
/// stays reachable from the device.
pub fn release_inherited(keep: &[RawFd]) -> io::Result<()> {
    let null = open_dev_null()?;
    for fd in 0..=2 {
        if keep.contains(&fd) {
            continue;
        }
        // SAFETY: both descriptors are valid; dup2 replaces `fd` atomically, never closing a
        // descriptor anything in this process still uses (stdio is not the device's channel).
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    drop(null);
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .chain(0..=2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut next = 0u32;
    for fd in keep {
        if fd > next {
            close_range(next, fd - 1);
        }
        next = fd.saturating_add(1);
    }
    close_range(next, u32::MAX);
    Ok(())
}

/// Closes descriptors `first..=last`.
fn close_range(first: u32, last: u32) {
    // SAFETY: the caller owns nothing it still uses among these descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc != 0 {
        // Kernels before 5.9 lack close_range: close one by one, bounded by the fd limit.
        // SAFETY: sysconf has no preconditions.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.max(1024) as u32;
        for fd in first..=last.min(max) {
            // SAFETY: as above; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn rdev(fd: RawFd) -> Option<u64> {
        // SAFETY: stat is plain data, filled by fstat before it is read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out pointer; a closed `fd` gives EBADF.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return None;
        }
        Some(st.st_rdev)
    }

    #[test]
    fn release_inherited_keeps_only_what_it_is_told() {
        // In a forked child: the test process's own descriptors must stay open.
        // SAFETY: the child only makes system calls and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                let kept = open_path(Path::new("/")).ok()?.into_raw_fd();
                let other = open_path(Path::new("/")).ok()?.into_raw_fd();
                release_inherited(&[kept]).ok()?;
                let null = rdev(open_dev_null().ok()?.as_raw_fd())?;
                let stdio_null = (0..=2).all(|fd| rdev(fd) == Some(null));
                Some(
                    if rdev(kept).is_some() && rdev(other).is_none() && stdio_null {
                        0
                    } else {
                        1
                    },
                )
            })()
            .unwrap_or(2);
            // SAFETY: ends the child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
