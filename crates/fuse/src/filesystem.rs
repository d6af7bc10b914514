//! The contract between the dispatcher and a filesystem implementation.
//!
//! Methods take decoded, validated arguments (names are NUL-free `CStr`s that never contain `/` and
//! are never `.` or `..` where they name a new or existing child) and return `io::Result`; an error's
//! raw OS error becomes the reply's `-errno` (anything else becomes `EIO`). Every method has a
//! default that answers `ENOSYS`, so an operation a filesystem does not implement is reported to
//! the guest rather than silently ignored.

use std::ffi::{CStr, CString};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::io::{ZeroCopyReader, ZeroCopyWriter};

/// A guest-visible inode number (the FUSE `nodeid`).
pub type Inode = u64;
/// An open file or directory handle (the FUSE `fh`).
pub type Handle = u64;

/// The inode of the shared directory itself.
pub const ROOT_ID: Inode = 1;

/// The id a request's credentials carry when the guest's id is one the translation rules forbid
/// (`--translate-uid forbid-guest:...`). No file can be owned by it (it is `(uid_t)-1`, which
/// chown(2) reads as "leave alone"), and a filesystem must refuse to act as it with `EPERM`. The
/// request itself still runs: what needs no credentials (a lookup, a read) works as for anyone
/// else, as upstream virtiofsd does it.
pub const FORBIDDEN_ID: u32 = u32::MAX;

/// Who is asking: the credentials of the guest process behind the request.
///
/// The ids are host ids: the dispatcher has already applied the device's id translation, so a
/// filesystem never translates. An id the rules forbid is [`FORBIDDEN_ID`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The caller's supplementary group for create-type requests, sent by the kernel in the
    /// `FUSE_EXT_GROUPS` request extension once `FUSE_CREATE_SUPP_GROUP` is negotiated (the
    /// kernel sends the one group that decides the new inode's group, if any).
    pub supplementary_gid: Option<u32>,
    /// The security label the guest's LSM gives the inode a create-type request makes, sent in
    /// the request extension once `FUSE_SECURITY_CTX` is negotiated. `None` for every other
    /// request and when the guest has no label to give. Shared, so a clone of the context costs
    /// a reference count, not a copy.
    pub security_context: Option<Arc<SecurityContext>>,
}

/// A security label to set on a new inode: an extended attribute in the `security.` namespace
/// (for example `security.selinux`) and its value, exactly as the guest kernel sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityContext {
    /// The attribute name, at most `XATTR_NAME_MAX` bytes.
    pub name: CString,
    /// The value, at most `XATTR_SIZE_MAX` bytes and never empty.
    pub value: Vec<u8>,
}

/// A looked-up or newly created inode, as the guest will cache it.
#[derive(Clone, Copy)]
pub struct Entry {
    pub inode: Inode,
    pub generation: u64,
    pub attr: libc::stat64,
    /// `FUSE_ATTR_*` flags (for example `FUSE_ATTR_SUBMOUNT`).
    pub attr_flags: u32,
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
}

impl Entry {
    /// A negative entry: the name does not exist, and the guest may cache that for `timeout`.
    pub fn negative(timeout: Duration) -> Self {
        // SAFETY: `stat64` is plain old data; all-zero is a valid value.
        let attr = unsafe { std::mem::zeroed() };
        Entry {
            inode: 0,
            generation: 0,
            attr,
            attr_flags: 0,
            attr_timeout: Duration::ZERO,
            entry_timeout: timeout,
        }
    }
}

/// A time to set with SETATTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// The current time of the host (`UTIME_NOW`).
    Now,
    /// An explicit time.
    At { secs: i64, nsecs: u32 },
}

/// What SETATTR changes; `None` leaves an attribute alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// The guest asked to clear setuid/setgid as part of the change (`FATTR_KILL_SUIDGID`).
    pub kill_suidgid: bool,
}

/// One directory entry for READDIR.
#[derive(Clone, Copy, Debug)]
pub struct DirEntry<'a> {
    pub inode: u64,
    /// The offset the guest passes back to continue after this entry.
    pub offset: u64,
    /// `DT_*` value.
    pub file_type: u32,
    pub name: &'a [u8],
}

/// The answer to GETXATTR and LISTXATTR: with a size of 0 the guest asks how large the value
/// (or the NUL-separated name list) is; otherwise it wants the bytes, which must fit in `size`
/// (else ERANGE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// A POSIX record lock or, with `FUSE_LK_FLOCK`, a BSD flock, as GETLK/SETLK/SETLKW carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileLock {
    pub start: u64,
    /// Inclusive end offset; `u64::MAX` (OFFSET_MAX) means to the end of the file.
    pub end: u64,
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub lock_type: u32,
    pub pid: u32,
}

/// Lock requests as the dispatcher decodes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRequest {
    pub handle: Handle,
    /// Identifies the lock owner (a guest `files_struct` or open file description).
    pub owner: u64,
    pub lock: FileLock,
    /// BSD flock semantics (`FUSE_LK_FLOCK`) instead of POSIX record locks.
    pub flock: bool,
}

/// `FOPEN_*` flags returned by OPEN, CREATE and OPENDIR.
pub type OpenOptions = u32;

/// What the filesystem can do, negotiated at INIT. The dispatcher owns the wire flags; the
/// filesystem only says which optional behaviours it wants from those the kernel offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Flags the kernel offered (`FUSE_*` capability bits, 64-bit with `FUSE_INIT_EXT`).
    pub offered: u64,
}

/// Adds one entry to a READDIR reply; returns the bytes used, or 0 when the entry did not fit
/// (the filesystem must then stop).
pub type AddDirEntry<'a> = dyn FnMut(DirEntry<'_>) -> io::Result<usize> + 'a;
/// Adds one entry to a READDIRPLUS reply; returns the bytes used, or 0 when the entry did not fit.
/// On 0 the filesystem stops and undoes the lookup count it took for that entry.
pub type AddDirEntryPlus<'a> = dyn FnMut(DirEntry<'_>, Entry) -> io::Result<usize> + 'a;

fn enosys<T>() -> io::Result<T> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

#[allow(unused_variables)]
pub trait FileSystem: Send + Sync {
    /// Called once at FUSE_INIT; returns the `FUSE_*` capability flags to enable, a subset of
    /// `opts.offered`. The dispatcher adds the flags it needs itself.
    fn init(&self, opts: InitOptions) -> io::Result<u64> {
        Ok(0)
    }

    /// FUSE_DESTROY, or the transport going away: drop all inodes and handles.
    fn destroy(&self) {}

    fn lookup(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        enosys()
    }

    /// Drops `count` lookup references to `inode`.
    fn forget(&self, ctx: Context, inode: Inode, count: u64) {}

    fn batch_forget(&self, ctx: Context, requests: &[(Inode, u64)]) {
        for &(inode, count) in requests {
            self.forget(ctx.clone(), inode, count);
        }
    }

    /// Returns attributes and how long the guest may cache them.
    fn getattr(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        enosys()
    }

    fn setattr(
        &self,
        ctx: Context,
        inode: Inode,
        attr: SetAttr,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        enosys()
    }

    fn readlink(&self, ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        enosys()
    }

    fn symlink(
        &self,
        ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        enosys()
    }

    fn mknod(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        enosys()
    }

    fn mkdir(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        enosys()
    }

    fn unlink(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        enosys()
    }

    fn rmdir(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        enosys()
    }

    /// RENAME (flags 0) and RENAME2 (`RENAME_*` flags).
    fn rename(
        &self,
        ctx: Context,
        old_parent: Inode,
        old_name: &CStr,
        new_parent: Inode,
        new_name: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        enosys()
    }

    fn link(
        &self,
        ctx: Context,
        inode: Inode,
        new_parent: Inode,
        new_name: &CStr,
    ) -> io::Result<Entry> {
        enosys()
    }

    /// `flags` are the guest's open(2) flags. A `None` handle asks the guest to send no handle
    /// (only valid with `FUSE_NO_OPEN_SUPPORT`, which this project does not use).
    /// `kill_suidgid`: the guest asks for setuid/setgid to be cleared because the open truncates
    /// (`FUSE_OPEN_KILL_SUIDGID`, with `FUSE_HANDLE_KILLPRIV_V2`).
    fn open(
        &self,
        ctx: Context,
        inode: Inode,
        flags: u32,
        kill_suidgid: bool,
    ) -> io::Result<(Option<Handle>, OpenOptions)> {
        enosys()
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        flags: u32,
        umask: u32,
        kill_suidgid: bool,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions)> {
        enosys()
    }

    /// Reads up to `size` bytes at `offset` into `w`; returns the byte count (short at EOF).
    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        flags: u32,
    ) -> io::Result<usize> {
        enosys()
    }

    /// Writes `size` bytes taken from `r` at `offset`; returns the byte count.
    /// `kill_suidgid` is set when the guest asks for setuid/setgid to be cleared (`FUSE_WRITE_KILL_SUIDGID`).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        kill_suidgid: bool,
        flags: u32,
    ) -> io::Result<usize> {
        enosys()
    }

    fn flush(&self, ctx: Context, inode: Inode, handle: Handle, lock_owner: u64) -> io::Result<()> {
        enosys()
    }

    fn fsync(&self, ctx: Context, inode: Inode, datasync: bool, handle: Handle) -> io::Result<()> {
        enosys()
    }

    fn release(
        &self,
        ctx: Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
        flush: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        enosys()
    }

    fn statfs(&self, ctx: Context, inode: Inode) -> io::Result<libc::statvfs64> {
        enosys()
    }

    fn opendir(
        &self,
        ctx: Context,
        inode: Inode,
        flags: u32,
    ) -> io::Result<(Option<Handle>, OpenOptions)> {
        enosys()
    }

    /// Lists entries from `offset` (0 = start, otherwise a value from a previous `DirEntry::offset`)
    /// until `add` returns 0 or the directory ends. `size` is the guest's buffer size, for sizing
    /// host reads; `add` enforces it.
    fn readdir(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add: &mut AddDirEntry<'_>,
    ) -> io::Result<()> {
        enosys()
    }

    /// Like `readdir`, with each entry looked up (taking one lookup reference, except for `.` and
    /// `..`, which are passed with a zeroed `Entry` whose inode is 0 and take none).
    fn readdirplus(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add: &mut AddDirEntryPlus<'_>,
    ) -> io::Result<()> {
        enosys()
    }

    fn fsyncdir(
        &self,
        ctx: Context,
        inode: Inode,
        datasync: bool,
        handle: Handle,
    ) -> io::Result<()> {
        enosys()
    }

    fn releasedir(&self, ctx: Context, inode: Inode, flags: u32, handle: Handle) -> io::Result<()> {
        enosys()
    }

    fn access(&self, ctx: Context, inode: Inode, mask: u32) -> io::Result<()> {
        enosys()
    }

    fn getxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        enosys()
    }

    fn listxattr(&self, ctx: Context, inode: Inode, size: u32) -> io::Result<XattrReply> {
        enosys()
    }

    /// `flags` are setxattr(2)'s (`XATTR_CREATE`, `XATTR_REPLACE`); `setxattr_flags` carries
    /// `FUSE_SETXATTR_ACL_KILL_SGID` when `FUSE_SETXATTR_EXT` is negotiated.
    fn setxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> io::Result<()> {
        enosys()
    }

    fn removexattr(&self, ctx: Context, inode: Inode, name: &CStr) -> io::Result<()> {
        enosys()
    }

    /// fallocate(2) `mode` bits (`FALLOC_FL_*`).
    fn fallocate(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        enosys()
    }

    /// `whence` is `SEEK_SET`, `SEEK_CUR`, `SEEK_END`, `SEEK_DATA` or `SEEK_HOLE`; returns the new
    /// offset.
    fn lseek(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        enosys()
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: Context,
        inode_in: Inode,
        handle_in: Handle,
        offset_in: u64,
        inode_out: Inode,
        handle_out: Handle,
        offset_out: u64,
        length: u64,
        flags: u64,
    ) -> io::Result<usize> {
        enosys()
    }

    fn syncfs(&self, ctx: Context, inode: Inode) -> io::Result<()> {
        enosys()
    }

    /// Returns the first lock that would conflict with `request`, or one of type `F_UNLCK`.
    fn getlk(&self, ctx: Context, inode: Inode, request: LockRequest) -> io::Result<FileLock> {
        enosys()
    }

    /// Takes or releases a lock. With `wait` (SETLKW) the call may block until the lock is
    /// granted, so the transport must not run such requests on a thread that other requests
    /// wait for.
    fn setlk(
        &self,
        ctx: Context,
        inode: Inode,
        request: LockRequest,
        wait: bool,
    ) -> io::Result<()> {
        enosys()
    }

    /// O_TMPFILE: an unnamed file in directory `parent`.
    fn tmpfile(
        &self,
        ctx: Context,
        parent: Inode,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions)> {
        enosys()
    }

    /// statx(2): `flags` are `AT_STATX_*` sync flags, `mask` the `STATX_*` fields wanted.
    fn statx(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Option<Handle>,
        flags: u32,
        mask: u32,
    ) -> io::Result<(libc::statx, Duration)> {
        enosys()
    }

    /// Live migration, source side: what the destination needs to go on serving this session
    /// (the inodes and handles the guest holds), serialized. Called once the queues have stopped.
    fn save_state(&self) -> io::Result<Vec<u8>> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// Live migration, destination side: restores what `save_state` produced on the source,
    /// before any request is served. `negotiated` is the FUSE flags of the source's session.
    fn load_state(&self, negotiated: u64, state: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}
