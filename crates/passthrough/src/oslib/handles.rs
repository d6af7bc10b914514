//! File handles: `name_to_handle_at(2)` and `open_by_handle_at(2)`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The kernel's `MAX_HANDLE_SZ`.
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// An opaque, persistent name for a host file, valid on the mount it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    handle_type: libc::c_int,
    bytes: Box<[u8]>,
}

impl FileHandle {
    /// A handle received from elsewhere (a migration source); `None` when it is longer than
    /// any the kernel makes.
    pub fn from_parts(handle_type: libc::c_int, bytes: &[u8]) -> Option<FileHandle> {
        (bytes.len() <= MAX_HANDLE_SZ).then(|| FileHandle {
            handle_type,
            bytes: bytes.into(),
        })
    }

    pub fn handle_type(&self) -> libc::c_int {
        self.handle_type
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `name_to_handle_at(dir, name, ..., flags)`: the raw handle and the mount id.
fn raw_name_to_handle(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
) -> io::Result<(RawHandle, libc::c_int)> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mnt_id: libc::c_int = 0;
    // SAFETY: `raw` is a file_handle with `handle_bytes` of writable space after its header;
    // `mnt_id` is writable; `name` is NUL-terminated and only read during the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut raw as *mut RawHandle,
            &mut mnt_id as *mut libc::c_int,
            flags,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    raw.handle_bytes = raw.handle_bytes.min(MAX_HANDLE_SZ as u32);
    Ok((raw, mnt_id))
}

/// The file handle of the file `fd` refers to (an `O_PATH` fd is fine, symlinks included)
/// and its mount id. `EOPNOTSUPP` when the filesystem cannot make handles.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<(FileHandle, u64)> {
    let (raw, mnt_id) = raw_name_to_handle(fd, c"", libc::AT_EMPTY_PATH)?;
    let len = raw.handle_bytes as usize;
    Ok((
        FileHandle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].into(),
        },
        mnt_id as u64,
    ))
}

/// Whether `name` in `dir` (a symlink itself, not its target: no `AT_SYMLINK_FOLLOW`) has the
/// file handle `want` on the mount `mnt_id`. Compared in place: nothing is allocated.
pub fn name_has_handle(dir: BorrowedFd<'_>, name: &CStr, want: &FileHandle, mnt_id: u64) -> bool {
    match raw_name_to_handle(dir, name, 0) {
        Ok((raw, got_mnt)) => {
            got_mnt as u64 == mnt_id
                && raw.handle_type == want.handle_type
                && raw.f_handle[..raw.handle_bytes as usize] == *want.bytes
        }
        Err(_) => false,
    }
}

/// Opens the file `handle` names on the mount `mount_fd` is on (a real open, not `O_PATH`:
/// the kernel refuses those with `EBADF`); `O_CLOEXEC` is always added.
/// Needs `CAP_DAC_READ_SEARCH`.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let mut raw = RawHandle {
        handle_bytes: handle.bytes.len() as u32,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a valid file_handle whose `handle_bytes` matches the bytes that follow.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            &mut raw as *mut RawHandle,
            flags | libc::O_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// Whether this process may open file handles on the mount `mount_fd` (a real descriptor) is
/// on, asked without any real handle: the kernel checks the caller's privilege before it decodes
/// the handle, so a handle that names no file answers `EPERM` to a process that may not open
/// handles there, and some other error (`ESTALE`, `EINVAL`, ...) to one that may. Only `EPERM`
/// is returned as an error. For filesystems that make no handles of their own, which cannot
/// offer a real one to try.
pub fn may_open_handles(mount_fd: BorrowedFd<'_>) -> io::Result<()> {
    // FILEID_INO32_GEN with inode 0, generation 0: no filesystem gives that to a file.
    let nothing = FileHandle {
        handle_type: 1,
        bytes: [0u8; 8].into(),
    };
    match open_by_handle(mount_fd, &nothing, libc::O_PATH | libc::O_NOFOLLOW) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(e),
        // A descriptor (which nothing should ever give) is closed at once.
        Ok(_) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn handle_round_trip_through_a_mount_fd() {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("virtiofsd-fh-test-{}", std::process::id()));
        std::fs::write(&file, b"hello").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        let (h, _mnt) = name_to_handle(f.as_fd()).expect("temp dir fs must support file handles");
        let d = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: `d` is a valid NUL-terminated path.
        let mfd = unsafe {
            libc::open(
                d.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(mfd >= 0);
        // SAFETY: fresh descriptor owned by nobody else.
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
        let g = open_by_handle(mfd.as_fd(), &h, libc::O_RDONLY).unwrap();
        let s = std::fs::read_to_string(format!("/proc/self/fd/{}", g.as_raw_fd())).unwrap();
        assert_eq!(s, "hello");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn a_handle_that_names_nothing_tells_whether_handles_open() {
        let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
        let (h, _) = name_to_handle(dir.as_fd()).expect("temp dir fs must support file handles");
        // The answer must match what a real handle gets.
        match open_by_handle(dir.as_fd(), &h, libc::O_PATH) {
            Ok(_) => assert!(may_open_handles(dir.as_fd()).is_ok()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let refused = may_open_handles(dir.as_fd()).unwrap_err();
                assert_eq!(refused.raw_os_error(), Some(libc::EPERM));
            }
            Err(e) => panic!("open_by_handle_at of the temp dir: {e}"),
        }
    }
}
