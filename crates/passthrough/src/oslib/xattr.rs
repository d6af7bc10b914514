//! Extended attribute syscalls on `/proc/self/fd/N` paths.
//!
//! The path form (following the final magic link) reaches the inode an `O_PATH` descriptor
//! refers to whatever its type, symlinks included: the magic link resolves to the file itself,
//! never through it to a symlink's target. Descriptors opened for real (not `O_PATH`) can use
//! the `f*` calls instead, which skip the path walk.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn size_result(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `getxattr(2)`; an empty `buf` asks for the value's size.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: both strings are NUL-terminated; `buf` is writable for `buf.len()` bytes.
    size_result(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// `listxattr(2)`; an empty `buf` asks for the list's size.
pub fn listxattr(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is NUL-terminated; `buf` is writable for `buf.len()` bytes.
    size_result(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `setxattr(2)` with `XATTR_CREATE`/`XATTR_REPLACE` flags.
pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    let ret = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    size_result(ret as libc::ssize_t).map(drop)
}

/// `removexattr(2)`.
pub fn removexattr(path: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and only read during the call.
    let ret = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    size_result(ret as libc::ssize_t).map(drop)
}

/// `fsetxattr(2)` on a descriptor opened for real (`O_PATH` descriptors are refused).
pub fn fsetxattr(
    fd: BorrowedFd<'_>,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `value` is readable for its length; `fd` is borrowed
    // open for the call.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    size_result(ret as libc::ssize_t).map(drop)
}

/// `fremovexattr(2)` on a descriptor opened for real.
pub fn fremovexattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and only read; `fd` is borrowed open for the call.
    let ret = unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) };
    size_result(ret as libc::ssize_t).map(drop)
}
