//! [`PassthroughFs`]: the `FileSystem` implementation over a host directory.
//!
//! Confinement rests on three rules: every guest name is a single path component resolved
//! relative to its parent's `O_PATH` descriptor without following symlinks; host paths are never
//! built from guest strings; and files are reopened only through `/proc/self/fd`, never when they
//! are symlinks.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use virtiofsd_fuse::filesystem::{
    AddDirEntry, AddDirEntryPlus, Context, DirEntry, Entry, FileLock, FileSystem, Handle,
    InitOptions, Inode, LockRequest, OpenOptions as FopenFlags, SetAttr, SetTime, XattrReply,
};
use virtiofsd_fuse::io::{ZeroCopyReader, ZeroCopyWriter};

use crate::budget::{FdBudget, FdToken};
use crate::config::{Config, FileHandleMode};
use crate::consts::*;
use crate::credentials::ScopedCreds;
use crate::gate::GuestFd;
use crate::handle::{HandleData, HandleStore};
use crate::inode::{InodeData, InodeFd, InodeFile, InodeKey, InodeStore, Pinned};
use crate::locks::LockTable;
use crate::oslib;

pub(crate) fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// A guest name must be exactly one path component.
pub(crate) fn check_name(name: &CStr) -> io::Result<()> {
    let b = name.to_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(err(libc::EINVAL));
    }
    Ok(())
}

/// Whether open(2) flags can modify the file.
fn writes(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Mode after the kernel's "kill privileges" rule for a writer without `CAP_FSETID`: setuid
/// always goes; setgid goes when the file is group-executable or when the writer is not in the
/// file's group (Linux 6.x; `caller_gid` None keeps only the first condition).
pub(crate) fn killpriv_mode(mode: u32, file_gid: u32, caller_gid: Option<u32>) -> u32 {
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 || caller_gid.is_some_and(|g| g != file_gid) {
        m &= !libc::S_ISGID;
    }
    m
}

/// Whether this filesystem must clear setuid/setgid itself when `ctx` writes or truncates: the
/// guest kernel asks explicitly with KILLPRIV_V2; without it, the Linux FUSE client clears the
/// bits only under the old rule, so an unprivileged writer is handled here as a local
/// filesystem would. Root (capable of `CAP_FSETID`) keeps them.
fn must_kill_priv(ctx: &Context, asked: bool, killpriv_v2: bool) -> bool {
    asked || (!killpriv_v2 && ctx.uid != 0)
}

fn set_time(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At { secs, nsecs }) => libc::timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nsecs),
        },
    }
}

/// Opens `path` as an `O_PATH` directory, as the daemon's own anchors are.
fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

/// Attributes plus the mount id, falling back to `fstatat` on kernels without `statx`.
pub(crate) fn stat_with_mount(fd: BorrowedFd<'_>) -> io::Result<(libc::stat64, u64)> {
    match oslib::statx_fd(fd) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok((oslib::stat_fd(fd)?, 0)),
        r => r,
    }
}

/// The most handle-held inodes that keep an `O_PATH` descriptor besides their handle. The
/// descriptors held stay bounded (by this, not by the inodes the guest knows), and the hot set
/// of a typical workload (a build tree's directories, the files being worked on) is served
/// without opening a handle per request.
const MAX_PINNED_HANDLE_FDS: usize = 4096;

/// Pinned descriptors take at most a quarter of the fd budget: the rest stays for open files.
fn pinned_slots(fd_budget: usize) -> usize {
    (fd_budget / 4).min(MAX_PINNED_HANDLE_FDS)
}

/// A passthrough filesystem serving one host directory.
pub struct PassthroughFs {
    pub(crate) cfg: Config,
    pub(crate) inodes: InodeStore,
    pub(crate) handles: HandleStore,
    /// `O_PATH` descriptor of `/proc/self/fd`, for reopening inodes by descriptor number.
    pub(crate) proc_self_fd: OwnedFd,
    pub(crate) timeout: Duration,
    pub(crate) budget: Arc<FdBudget>,
    /// Slots for handle-held inodes that keep their `O_PATH` descriptor ([`Pinned`]).
    pinned_slots: Arc<FdBudget>,
    /// A real (non-`O_PATH`) descriptor per mount id, for `open_by_handle_at`.
    pub(crate) mount_fds: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    /// Host open file descriptions carrying the guest's POSIX locks, one per (inode, owner).
    pub(crate) locks: LockTable,
    no_openat2: AtomicBool,
    /// The flags INIT returned (what the session runs with), kept for a migration.
    session_flags: AtomicU64,
    /// Set at INIT once the guest accepted the writeback cache.
    writeback: AtomicBool,
    /// Set at INIT once the guest agreed to KILLPRIV_V2 (it then says when to clear privileges).
    killpriv_v2: AtomicBool,
    /// Set at INIT once the guest accepted submount announcements.
    submounts: AtomicBool,
    /// Set at INIT once POSIX ACLs were negotiated (`Config::posix_acl`).
    posix_acl: AtomicBool,
    /// The host name of a renamed `security.capability`, which the daemon must drop where the
    /// host kernel would drop the real one (see `xattr_names::mapped_capability`).
    pub(crate) mapped_capability: Option<CString>,
    umask_once: Once,
    /// Why this device cannot open file handles, once `probe_file_handles` found that out.
    pub(crate) cannot_open_handles: Option<String>,
}

impl PassthroughFs {
    /// Opens `cfg.root_dir` and `/proc/self/fd`; fails when either is missing or not a directory.
    pub fn new(cfg: Config) -> io::Result<PassthroughFs> {
        let proc_self_fd = open_dir_path(std::path::Path::new("/proc/self/fd"))?;
        Self::with_proc_self_fd(cfg, proc_self_fd)
    }

    /// Like [`PassthroughFs::new`] with a `/proc/self/fd` handle opened by the caller: a sandbox
    /// opens it before the host's /proc becomes unreachable.
    pub fn with_proc_self_fd(mut cfg: Config, proc_self_fd: OwnedFd) -> io::Result<PassthroughFs> {
        // Each of these is about xattrs the guest reads and writes; without xattrs served they
        // would negotiate behaviour the guest could never see (ACLs it cannot read, labels it
        // cannot check), so they turn xattrs on, as upstream's command line does.
        cfg.xattr |= cfg.xattr_map.is_some() || cfg.posix_acl || cfg.security_label;
        if cfg.xattr {
            // The xattr calls name inodes relative to the working directory (see xattr.rs);
            // nothing else in a device process uses relative paths.
            oslib::fchdir(proc_self_fd.as_fd())?;
        }
        let root = open_dir_path(&cfg.root_dir)?;
        let (st, mnt_id) = stat_with_mount(root.as_fd())?;
        let key = InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
            mnt_id,
        };
        Ok(PassthroughFs {
            timeout: cfg.cache.timeout(),
            inodes: InodeStore::new(root, key),
            handles: HandleStore::default(),
            budget: FdBudget::new(cfg.fd_budget),
            pinned_slots: FdBudget::new(pinned_slots(cfg.fd_budget)),
            mount_fds: Mutex::new(HashMap::new()),
            locks: LockTable::default(),
            proc_self_fd,
            no_openat2: AtomicBool::new(false),
            session_flags: AtomicU64::new(0),
            writeback: AtomicBool::new(false),
            killpriv_v2: AtomicBool::new(false),
            submounts: AtomicBool::new(false),
            posix_acl: AtomicBool::new(false),
            mapped_capability: crate::xattr_names::mapped_capability(cfg.xattr_map.as_ref()),
            umask_once: Once::new(),
            cannot_open_handles: None,
            cfg,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Inodes currently known to the guest, root included.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Open file and directory handles.
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    /// Host descriptors held for the guest (counted against `Config::fd_budget`).
    pub fn fds_held(&self) -> usize {
        self.budget.used()
    }

    /// One more descriptor for the guest, or `ENFILE` when its budget is spent.
    pub(crate) fn fd_token(&self) -> io::Result<FdToken> {
        self.budget.acquire()
    }

    pub(crate) fn check_writable(&self) -> io::Result<()> {
        if self.cfg.readonly {
            Err(err(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// Opens `name` in `dir` as `O_PATH` without following any symlink or leaving `dir`.
    pub(crate) fn open_child_path(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
        const FLAGS: i32 = libc::O_PATH | libc::O_NOFOLLOW;
        if !self.no_openat2.load(Ordering::Relaxed) {
            let resolve =
                libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS;
            match oslib::openat2(dir, name, FLAGS, resolve) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    self.no_openat2.store(true, Ordering::Relaxed);
                }
                // EAGAIN: a concurrent rename made the kernel give up on a safe walk; a single
                // component with O_NOFOLLOW is just as confined.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                r => return r,
            }
        }
        oslib::openat(dir, name, FLAGS, 0)
    }

    /// `/proc/self/fd` entry name of `fd`.
    pub(crate) fn proc_name(fd: BorrowedFd<'_>) -> CString {
        // Decimal digits never contain NUL, so this cannot fail; map it anyway rather than panic.
        CString::new(fd.as_raw_fd().to_string()).unwrap_or_default()
    }

    /// The guest's open flags as they go to the host.
    pub(crate) fn host_open_flags(&self, flags: u32) -> i32 {
        let mut f = flags as i32 & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        if !self.cfg.allow_direct_io {
            f &= !libc::O_DIRECT;
        }
        if !self.cfg.preserve_noatime {
            f &= !libc::O_NOATIME;
        }
        if self.writeback.load(Ordering::Relaxed) {
            // With the writeback cache the guest kernel fills partial pages by reading, and it
            // handles appends itself by passing explicit offsets.
            if f & libc::O_ACCMODE == libc::O_WRONLY {
                f = (f & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            f &= !libc::O_APPEND;
        }
        f
    }

    pub(crate) fn entry_for(
        &self,
        parent: &InodeData,
        data: &InodeData,
        st: libc::stat64,
        mnt: u64,
    ) -> Entry {
        let mut attr_flags = 0;
        if self.submounts.load(Ordering::Relaxed) && data.is_dir() && mnt != parent.key.mnt_id {
            attr_flags |= FUSE_ATTR_SUBMOUNT;
        }
        Entry {
            inode: data.id,
            generation: 0,
            attr: st,
            attr_flags,
            attr_timeout: self.timeout,
            entry_timeout: self.timeout,
        }
    }

    /// Looks `name` up in `parent`, taking one lookup reference.
    pub(crate) fn do_lookup(&self, parent: &InodeData, name: &CStr) -> io::Result<Entry> {
        check_name(name)?;
        let dir = parent.fd()?;
        if let Some(entry) = self.lookup_pinned(parent, dir.as_fd(), name)? {
            return Ok(entry);
        }
        // Taken before the open, so the guest never makes the daemon exceed its budget.
        let token = self.fd_token()?;
        let fd = self.open_child_path(dir.as_fd(), name)?;
        self.register_inode(parent, fd, token)
    }

    /// Takes one lookup reference on the file `fd` (an `O_PATH` descriptor) refers to; `token`
    /// is the budget share of `fd`, kept only when the new inode holds `fd`.
    pub(crate) fn register_inode(
        &self,
        parent: &InodeData,
        fd: OwnedFd,
        token: FdToken,
    ) -> io::Result<Entry> {
        let (st, mnt_id) = stat_with_mount(fd.as_fd())?;
        let key = InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
            mnt_id,
        };
        let file_type = st.st_mode & libc::S_IFMT;
        let data = if self.cfg.inode_file_handles == FileHandleMode::Never {
            // A known inode's descriptor pins it, so its number cannot name another file yet.
            match self.inodes.ref_existing(&key) {
                Some(data) => data,
                None => self
                    .inodes
                    .insert_or_ref(InodeFile::Fd(fd), Some(token), key, file_type),
            }
        } else {
            // A handle pins nothing: the number may have been reused, so the handle decides.
            let (file, token) = self.inode_file(parent, fd, token, mnt_id, file_type)?;
            self.inodes.insert_or_ref(file, token, key, file_type)
        };
        Ok(self.entry_for(parent, &data, st, mnt_id))
    }

    /// How a new inode keeps its file: a file handle when possible, else the `O_PATH`
    /// descriptor with its share of the budget (unless handles are mandatory).
    fn inode_file(
        &self,
        parent: &InodeData,
        fd: OwnedFd,
        token: FdToken,
        mnt_id: u64,
        file_type: u32,
    ) -> io::Result<(InodeFile, Option<FdToken>)> {
        match self.file_handle(parent, &fd, mnt_id, file_type) {
            Ok(InodeFile::Handle { handle, mount, .. }) => {
                // The first inodes keep the descriptor they were found with, while slots last:
                // requests on them then open nothing.
                let pinned = self
                    .pinned_slots
                    .acquire()
                    .ok()
                    .map(|slot| Pinned::new(fd, token, slot));
                Ok((
                    InodeFile::Handle {
                        handle,
                        mount,
                        pinned,
                    },
                    None,
                ))
            }
            Ok(file) => Ok((file, None)),
            Err(e) if self.cfg.inode_file_handles == FileHandleMode::Mandatory => Err(e),
            Err(e) => {
                log::debug!("no file handle, keeping an O_PATH descriptor: {e}");
                Ok((InodeFile::Fd(fd), Some(token)))
            }
        }
    }

    fn file_handle(
        &self,
        parent: &InodeData,
        fd: &OwnedFd,
        mnt_id: u64,
        file_type: u32,
    ) -> io::Result<InodeFile> {
        let (handle, handle_mnt) = oslib::name_to_handle(fd.as_fd())?;
        if handle_mnt != mnt_id {
            // Renamed across mounts between the stat and here; the next lookup will settle it.
            return Err(err(libc::EAGAIN));
        }
        let mount = self.mount_fd(parent, fd, mnt_id, file_type)?;
        Ok(InodeFile::Handle {
            handle,
            mount,
            pinned: None,
        })
    }

    fn mount_fd(
        &self,
        parent: &InodeData,
        fd: &OwnedFd,
        mnt_id: u64,
        file_type: u32,
    ) -> io::Result<Arc<OwnedFd>> {
        self.mount_fd_near(fd, mnt_id, file_type, || {
            if parent.key.mnt_id == mnt_id && parent.is_dir() {
                parent.fd().map(Some)
            } else {
                Ok(None)
            }
        })
    }

    /// A real descriptor on mount `mnt_id`, opened the first time the mount is seen. It is
    /// always a directory: the inode itself when it is one (a mount's root normally is the
    /// first inode met there), else its parent on the same mount. Never a file: an open file
    /// kept forever would pin its space after an unlink, and a device or FIFO must never be
    /// opened. A mount whose root is not a directory (a bind-mounted file) gets no handles.
    /// There is one descriptor per mount, so they are bounded by the host, not the guest.
    /// `parent_dir` gives the parent directory when it is on the same mount.
    pub(crate) fn mount_fd_near<'p>(
        &self,
        fd: &OwnedFd,
        mnt_id: u64,
        file_type: u32,
        parent_dir: impl FnOnce() -> io::Result<Option<InodeFd<'p>>>,
    ) -> io::Result<Arc<OwnedFd>> {
        let mut map = self.mount_fds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(&mnt_id) {
            return Ok(m.clone());
        }
        let parent_fd;
        let dir = if file_type == libc::S_IFDIR {
            fd.as_fd()
        } else if let Some(p) = parent_dir()? {
            parent_fd = p;
            parent_fd.as_fd()
        } else {
            return Err(err(libc::EOPNOTSUPP));
        };
        let m = Arc::new(oslib::openat(
            self.proc_self_fd.as_fd(),
            &Self::proc_name(dir),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?);
        map.insert(mnt_id, m.clone());
        Ok(m)
    }

    /// Runs a create-type operation as the caller, labels what it made when the guest sent a
    /// security label, then looks it up. `op` gets the parent and the umask in force: the
    /// guest's `umask`, unless ACLs make the host apply the parent's default ACL instead (`None`
    /// for inodes without a mode of their own).
    fn create_as<F>(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        umask: Option<u32>,
        op: F,
    ) -> io::Result<Entry>
    where
        F: FnOnce(BorrowedFd<'_>, u32) -> io::Result<()>,
    {
        self.check_writable()?;
        check_name(name)?;
        let parent = self.inodes.get(parent)?;
        let label = self.label_for(&ctx)?;
        // Taken before the create: once the inode exists, only the label may fail.
        let token = label.as_ref().map(|_| self.fd_token()).transpose()?;
        let umask = umask.map_or(0, |u| self.creation_umask(&parent, u));
        {
            // Reached before the switch: a handle inode opens with CAP_DAC_READ_SEARCH, which
            // the caller's fsuid takes out of the effective set.
            let pfd = parent.fd()?;
            let _creds = ScopedCreds::for_ctx(&ctx)?;
            op(pfd.as_fd(), umask)?;
        }
        match (label, token) {
            (Some(label), Some(token)) => self.label_new(&parent, name, &label, token),
            _ => self.do_lookup(&parent, name),
        }
    }

    /// chmod without following a symlink: through the open handle when there is one, else the
    /// `/proc/self/fd` entry of the `O_PATH` fd (symlinks have no mode of their own to change).
    pub(crate) fn chmod(
        &self,
        data: &InodeData,
        handle: Option<&HandleData>,
        mode: u32,
    ) -> io::Result<()> {
        match handle {
            Some(h) => oslib::fchmod(h.fd(), mode),
            None if data.is_symlink() => Err(err(libc::EOPNOTSUPP)),
            None => oslib::fchmodat(
                self.proc_self_fd.as_fd(),
                &Self::proc_name(data.fd()?.as_fd()),
                mode,
            ),
        }
    }

    /// Whether POSIX ACLs were negotiated with the guest.
    pub(crate) fn posix_acl_on(&self) -> bool {
        self.posix_acl.load(Ordering::Relaxed)
    }

    fn killpriv_negotiated(&self) -> bool {
        self.killpriv_v2.load(Ordering::Relaxed)
    }

    pub(crate) fn kill_priv(
        &self,
        data: &InodeData,
        handle: Option<&HandleData>,
    ) -> io::Result<()> {
        let st = match handle {
            Some(h) => oslib::stat_fd(h.fd())?,
            None => oslib::stat_fd(data.fd()?.as_fd())?,
        };
        let mode = st.st_mode & 0o7777;
        let cleared = killpriv_mode(mode, st.st_gid, None);
        if cleared != mode && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            self.chmod(data, handle, cleared)?;
        }
        Ok(())
    }

    fn set_times(&self, data: &InodeData, attr: &SetAttr) -> io::Result<()> {
        let times = [set_time(attr.atime), set_time(attr.mtime)];
        let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
        match oslib::utimensat(data.fd()?.as_fd(), oslib::EMPTY, &times, flags) {
            // Kernels before 5.8 reject AT_EMPTY_PATH here; the magic link works for anything
            // that is not itself a symlink.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !data.is_symlink() => {
                oslib::utimensat(
                    self.proc_self_fd.as_fd(),
                    &Self::proc_name(data.fd()?.as_fd()),
                    &times,
                    0,
                )
            }
            r => r,
        }
    }

    /// Walks directory entries from `offset`, handing each to `f` until it returns `false`.
    fn for_each_dirent<F>(
        &self,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        mut f: F,
    ) -> io::Result<()>
    where
        F: FnMut(DirEntry<'_>) -> io::Result<bool>,
    {
        let h = self.handles.get(handle, inode)?;
        let _pos = h.lock_position();
        oslib::seek_set(h.fd(), offset)?;
        // A linux_dirent64 is never larger than its FUSE counterpart, so `size` bytes of host
        // entries are at least as many as the guest can take; 1 KiB fits any single entry.
        let mut buf = vec![0u8; (size as usize).clamp(1024, 1 << 16)];
        loop {
            let n = oslib::getdents64(h.fd(), &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let mut pos = 0;
            while pos < n {
                let rec = buf.get(pos..n).ok_or_else(|| err(libc::EIO))?;
                let e = parse_dirent(rec)?;
                let reclen = e.1;
                if !f(e.0)? {
                    return Ok(());
                }
                pos += reclen;
            }
        }
    }
}

/// Clears setuid/setgid on the regular file open as `fd`, as the kernel does on a write or
/// truncate by someone without `CAP_FSETID` whose group is `caller_gid`.
pub(crate) fn kill_priv_fd(fd: BorrowedFd<'_>, caller_gid: Option<u32>) -> io::Result<()> {
    let st = oslib::stat_fd(fd)?;
    let mode = st.st_mode & 0o7777;
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return Ok(());
    }
    let cleared = killpriv_mode(mode, st.st_gid, caller_gid);
    if cleared != mode && st.st_mode & libc::S_IFMT == libc::S_IFREG {
        oslib::fchmod(fd, cleared)?;
    }
    Ok(())
}

/// Decodes the `linux_dirent64` at the start of `rec`; returns it with its record length.
fn parse_dirent(rec: &[u8]) -> io::Result<(DirEntry<'_>, usize)> {
    const HEADER: usize = 19; // d_ino, d_off, d_reclen, d_type
    let bad = || err(libc::EIO);
    if rec.len() < HEADER {
        return Err(bad());
    }
    let u64_at = |i: usize| -> io::Result<u64> {
        let b: [u8; 8] = rec[i..i + 8].try_into().map_err(|_| bad())?;
        Ok(u64::from_ne_bytes(b))
    };
    let ino = u64_at(0)?;
    let off = u64_at(8)?;
    let reclen = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
    if reclen < HEADER || reclen > rec.len() {
        return Err(bad());
    }
    let d_type = rec[18];
    let name_area = &rec[HEADER..reclen];
    let len = name_area.iter().position(|&c| c == 0).ok_or_else(bad)?;
    Ok((
        DirEntry {
            inode: ino,
            offset: off,
            file_type: u32::from(d_type),
            name: &name_area[..len],
        },
        reclen,
    ))
}

impl PassthroughFs {
    /// The guest sends the final mode (FUSE_DONT_MASK) and the umask is applied here explicitly,
    /// so the daemon's own umask must not strip bits a second time.
    pub(crate) fn clear_umask(&self) {
        self.umask_once.call_once(|| {
            oslib::umask(0);
        });
    }

    /// The INIT flags this configuration asks for when the guest offers `offered`; `EPROTO` when
    /// it lacks one that an option cannot do without.
    pub(crate) fn init_want(&self, offered: u64) -> io::Result<u64> {
        // Creates honour the caller's supplementary group (see `ScopedCreds::for_ctx`).
        let mut want = FUSE_ATOMIC_O_TRUNC | FUSE_CREATE_SUPP_GROUP;
        if self.cfg.posix_locks {
            want |= FUSE_POSIX_LOCKS;
        }
        if self.cfg.flock {
            want |= FUSE_FLOCK_LOCKS;
        }
        if self.cfg.xattr {
            // The long SETXATTR form carries FUSE_SETXATTR_ACL_KILL_SGID.
            want |= FUSE_SETXATTR_EXT;
        }
        want |= self.required_init_flags(offered)?;
        if self.cfg.readdirplus {
            want |= FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;
        }
        if self.cfg.writeback {
            want |= FUSE_WRITEBACK_CACHE;
        }
        if self.cfg.killpriv_v2 {
            want |= FUSE_HANDLE_KILLPRIV_V2;
        }
        if self.cfg.announce_submounts {
            want |= FUSE_SUBMOUNTS;
        }
        if self.cfg.allow_mmap {
            want |= FUSE_DIRECT_IO_ALLOW_MMAP;
        }
        if self.cfg.cache == crate::CachePolicy::Always {
            // Only when the host promises not to change files behind the guest's back; otherwise
            // a retargeted host symlink must be visible to the guest at once.
            want |= FUSE_CACHE_SYMLINKS;
        }
        Ok(want)
    }

    /// Takes on the session flags `got` (from INIT, or from a migration source).
    pub(crate) fn set_session(&self, got: u64) {
        self.session_flags.store(got, Ordering::Relaxed);
        self.writeback
            .store(got & FUSE_WRITEBACK_CACHE != 0, Ordering::Relaxed);
        self.submounts
            .store(got & FUSE_SUBMOUNTS != 0, Ordering::Relaxed);
        self.killpriv_v2
            .store(got & FUSE_HANDLE_KILLPRIV_V2 != 0, Ordering::Relaxed);
        self.posix_acl
            .store(got & FUSE_POSIX_ACL != 0, Ordering::Relaxed);
    }

    /// The flags the session runs with (what INIT returned).
    pub(crate) fn session_flags(&self) -> u64 {
        self.session_flags.load(Ordering::Relaxed)
    }
}

impl FileSystem for PassthroughFs {
    fn init(&self, opts: InitOptions) -> io::Result<u64> {
        self.clear_umask();
        let got = self.init_want(opts.offered)? & opts.offered;
        self.set_session(got);
        Ok(got)
    }

    fn save_state(&self) -> io::Result<Vec<u8>> {
        Ok(self.save_migration_state()?)
    }

    fn load_state(&self, negotiated: u64, state: &[u8]) -> io::Result<()> {
        Ok(self.load_migration_state(negotiated, state)?)
    }

    fn destroy(&self) {
        self.locks.clear();
        self.handles.clear();
        self.inodes.clear();
    }

    fn lookup(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        let parent = self.inodes.get(parent)?;
        self.do_lookup(&parent, name)
    }

    fn forget(&self, _ctx: Context, inode: Inode, count: u64) {
        self.inodes.forget(inode, count);
    }

    fn getattr(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        let st = match handle {
            Some(h) => oslib::stat_fd(self.handles.get(h, inode)?.fd())?,
            None => oslib::stat_fd(self.inodes.get(inode)?.fd()?.as_fd())?,
        };
        Ok((st, self.timeout))
    }

    fn setattr(
        &self,
        _ctx: Context,
        inode: Inode,
        attr: SetAttr,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.check_writable()?;
        let data = self.inodes.get(inode)?;
        let h = handle.map(|h| self.handles.get(h, inode)).transpose()?;
        let h = h.as_deref();

        if let Some(mode) = attr.mode {
            self.chmod(&data, h, mode & 0o7777)?;
        }
        if attr.uid.is_some() || attr.gid.is_some() {
            self.drop_mapped_capability(&data)?;
            oslib::fchownat(
                data.fd()?.as_fd(),
                oslib::EMPTY,
                attr.uid.unwrap_or(u32::MAX),
                attr.gid.unwrap_or(u32::MAX),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(size) = attr.size {
            let opened;
            let fd = match h {
                Some(h) => h.fd(),
                None => {
                    opened = self.open_inode(&data, libc::O_WRONLY)?;
                    opened.fd.as_fd()
                }
            };
            self.drop_mapped_capability_fd(fd)?;
            oslib::ftruncate(fd, size)?;
        }
        if attr.kill_suidgid && attr.mode.is_none() {
            self.kill_priv(&data, h)?;
        }
        if attr.atime.is_some() || attr.mtime.is_some() {
            self.set_times(&data, &attr)?;
        }
        Ok((oslib::stat_fd(data.fd()?.as_fd())?, self.timeout))
    }

    fn readlink(&self, _ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        let data = self.inodes.get(inode)?;
        if !data.is_symlink() {
            return Err(err(libc::EINVAL));
        }
        oslib::readlink_fd(data.fd()?.as_fd())
    }

    fn symlink(
        &self,
        ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.create_as(ctx, parent, name, None, |dir, _| {
            oslib::symlinkat(target, dir, name)
        })
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
        self.create_as(ctx, parent, name, Some(umask), |dir, umask| {
            let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
            oslib::mknodat(dir, name, mode, u64::from(rdev))
        })
    }

    fn mkdir(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.create_as(ctx, parent, name, Some(umask), |dir, umask| {
            oslib::mkdirat(dir, name, mode & 0o7777 & !umask)
        })
    }

    fn unlink(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        check_name(name)?;
        oslib::unlinkat(self.inodes.get(parent)?.fd()?.as_fd(), name, 0)
    }

    fn rmdir(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        check_name(name)?;
        oslib::unlinkat(
            self.inodes.get(parent)?.fd()?.as_fd(),
            name,
            libc::AT_REMOVEDIR,
        )
    }

    fn rename(
        &self,
        _ctx: Context,
        old_parent: Inode,
        old_name: &CStr,
        new_parent: Inode,
        new_name: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.check_writable()?;
        check_name(old_name)?;
        check_name(new_name)?;
        let old = self.inodes.get(old_parent)?;
        let new = self.inodes.get(new_parent)?;
        oslib::renameat2(
            old.fd()?.as_fd(),
            old_name,
            new.fd()?.as_fd(),
            new_name,
            flags,
        )
    }

    fn link(
        &self,
        _ctx: Context,
        inode: Inode,
        new_parent: Inode,
        new_name: &CStr,
    ) -> io::Result<Entry> {
        self.check_writable()?;
        check_name(new_name)?;
        let data = self.inodes.get(inode)?;
        let parent = self.inodes.get(new_parent)?;
        let r = oslib::linkat(
            data.fd()?.as_fd(),
            oslib::EMPTY,
            parent.fd()?.as_fd(),
            new_name,
            libc::AT_EMPTY_PATH,
        );
        match r {
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the magic link (followed, to the linked
            // file itself, even for symlinks) does not.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => oslib::linkat(
                self.proc_self_fd.as_fd(),
                &Self::proc_name(data.fd()?.as_fd()),
                parent.fd()?.as_fd(),
                new_name,
                libc::AT_SYMLINK_FOLLOW,
            )?,
            r => r?,
        }
        self.do_lookup(&parent, new_name)
    }

    fn open(
        &self,
        ctx: Context,
        inode: Inode,
        flags: u32,
        kill_suidgid: bool,
    ) -> io::Result<(Option<Handle>, FopenFlags)> {
        let flags = self.host_open_flags(flags);
        if writes(flags) {
            self.check_writable()?;
        }
        let data = self.inodes.get(inode)?;
        let GuestFd { fd, token } = self.open_inode(&data, flags)?;
        let truncates = flags & libc::O_TRUNC != 0;
        if truncates {
            self.drop_mapped_capability_fd(fd.as_fd())?;
        }
        if truncates && must_kill_priv(&ctx, kill_suidgid, self.killpriv_negotiated()) {
            kill_priv_fd(fd.as_fd(), Some(ctx.gid))?;
        }
        let h = self.handles.insert(inode, fd, Some(token));
        Ok((Some(h), self.cfg.cache.open_options(false)))
    }

    fn create(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        flags: u32,
        umask: u32,
        kill_suidgid: bool,
    ) -> io::Result<(Entry, Option<Handle>, FopenFlags)> {
        self.check_writable()?;
        check_name(name)?;
        let parent = self.inodes.get(parent)?;
        let excl = flags as i32 & libc::O_EXCL;
        let flags = self.host_open_flags(flags) | excl;
        let mode = mode & 0o7777 & !self.creation_umask(&parent, umask);
        let (entry, GuestFd { fd, token }) =
            self.create_or_open(&ctx, &parent, name, flags, mode)?;
        // An existing file may have been opened and truncated instead.
        let truncated = || -> io::Result<()> {
            if flags & libc::O_TRUNC != 0 {
                self.drop_mapped_capability_fd(fd.as_fd())?;
            }
            if kill_suidgid {
                kill_priv_fd(fd.as_fd(), Some(ctx.gid))?;
            }
            Ok(())
        };
        if let Err(e) = truncated() {
            self.inodes.forget(entry.inode, 1);
            return Err(e);
        }
        let h = self.handles.insert(entry.inode, fd, Some(token));
        Ok((entry, Some(h), self.cfg.cache.open_options(false)))
    }

    fn read(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _flags: u32,
    ) -> io::Result<usize> {
        let h = self.handles.get(handle, inode)?;
        w.write_from_file(h.fd(), size as usize, offset)
    }

    fn write(
        &self,
        ctx: Context,
        inode: Inode,
        handle: Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        kill_suidgid: bool,
        _flags: u32,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let h = self.handles.get(handle, inode)?;
        if must_kill_priv(&ctx, kill_suidgid, self.killpriv_negotiated()) {
            kill_priv_fd(h.fd(), Some(ctx.gid))?;
        }
        // Every write, whoever writes, as the host kernel drops the real capability.
        self.drop_mapped_capability_fd(h.fd())?;
        r.read_to_file(h.fd(), size as usize, offset)
    }

    fn flush(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        lock_owner: u64,
    ) -> io::Result<()> {
        let h = self.handles.get(handle, inode)?;
        // A guest close() drops the closing owner's POSIX locks on the file.
        self.locks.release_owner(inode, lock_owner);
        // Closing a duplicate releases this process's POSIX locks on the file, as a guest close()
        // would, while the handle itself stays open until RELEASE.
        let _token = self.fd_token()?;
        drop(oslib::dup(h.fd())?);
        Ok(())
    }

    fn fsync(&self, _ctx: Context, inode: Inode, datasync: bool, handle: Handle) -> io::Result<()> {
        oslib::fsync(self.handles.get(handle, inode)?.fd(), datasync)
    }

    fn release(
        &self,
        _ctx: Context,
        inode: Inode,
        _flags: u32,
        handle: Handle,
        _flush: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        if let Some(owner) = lock_owner {
            // FUSE_RELEASE_FLOCK_UNLOCK: the guest's flock owner is going away. The flock
            // itself lives on the handle's descriptor and goes with it.
            self.locks.release_owner(inode, owner);
        }
        self.locks.release_handle(inode, handle);
        self.handles.remove(handle, inode)
    }

    fn statfs(&self, _ctx: Context, inode: Inode) -> io::Result<libc::statvfs64> {
        oslib::fstatvfs(self.inodes.get(inode)?.fd()?.as_fd())
    }

    fn opendir(
        &self,
        _ctx: Context,
        inode: Inode,
        _flags: u32,
    ) -> io::Result<(Option<Handle>, FopenFlags)> {
        let data = self.inodes.get(inode)?;
        if !data.is_dir() {
            return Err(err(libc::ENOTDIR));
        }
        let GuestFd { fd, token } = self.open_inode(&data, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let h = self.handles.insert(inode, fd, Some(token));
        Ok((Some(h), self.cfg.cache.open_options(true)))
    }

    fn readdir(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add: &mut AddDirEntry<'_>,
    ) -> io::Result<()> {
        self.for_each_dirent(inode, handle, size, offset, |e| Ok(add(e)? != 0))
    }

    fn readdirplus(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add: &mut AddDirEntryPlus<'_>,
    ) -> io::Result<()> {
        let dir = self.inodes.get(inode)?;
        let mut added_any = false;
        self.for_each_dirent(inode, handle, size, offset, |e| {
            if e.name == b"." || e.name == b".." {
                let used = add(e, Entry::negative(Duration::ZERO))?;
                added_any |= used != 0;
                return Ok(used != 0);
            }
            let name = CString::new(e.name).map_err(|_| err(libc::EIO))?;
            let entry = match self.do_lookup(&dir, &name) {
                Ok(entry) => entry,
                // Removed since getdents listed it: skip it like a later listing would.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
                // Entries already added hold lookup references the guest must learn about, so
                // end the reply short instead of failing it.
                Err(_) if added_any => return Ok(false),
                Err(e) => return Err(e),
            };
            match add(e, entry) {
                Ok(0) => {
                    self.inodes.forget(entry.inode, 1);
                    Ok(false)
                }
                Ok(_) => {
                    added_any = true;
                    Ok(true)
                }
                Err(e) => {
                    self.inodes.forget(entry.inode, 1);
                    Err(e)
                }
            }
        })
    }

    fn fsyncdir(
        &self,
        ctx: Context,
        inode: Inode,
        datasync: bool,
        handle: Handle,
    ) -> io::Result<()> {
        self.fsync(ctx, inode, datasync, handle)
    }

    fn releasedir(
        &self,
        _ctx: Context,
        inode: Inode,
        _flags: u32,
        handle: Handle,
    ) -> io::Result<()> {
        self.handles.remove(handle, inode)
    }

    fn getxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.do_getxattr(ctx, inode, name, size)
    }

    fn listxattr(&self, ctx: Context, inode: Inode, size: u32) -> io::Result<XattrReply> {
        self.do_listxattr(ctx, inode, size)
    }

    fn setxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> io::Result<()> {
        self.do_setxattr(ctx, inode, name, value, flags, setxattr_flags)
    }

    fn removexattr(&self, ctx: Context, inode: Inode, name: &CStr) -> io::Result<()> {
        self.do_removexattr(ctx, inode, name)
    }

    fn fallocate(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.do_fallocate(inode, handle, mode, offset, length)
    }

    fn lseek(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.do_lseek(inode, handle, offset, whence)
    }

    fn copy_file_range(
        &self,
        _ctx: Context,
        inode_in: Inode,
        handle_in: Handle,
        offset_in: u64,
        inode_out: Inode,
        handle_out: Handle,
        offset_out: u64,
        length: u64,
        flags: u64,
    ) -> io::Result<usize> {
        self.do_copy_file_range(
            inode_in, handle_in, offset_in, inode_out, handle_out, offset_out, length, flags,
        )
    }

    fn syncfs(&self, _ctx: Context, inode: Inode) -> io::Result<()> {
        self.do_syncfs(inode)
    }

    fn getlk(&self, ctx: Context, inode: Inode, request: LockRequest) -> io::Result<FileLock> {
        self.do_getlk(ctx, inode, request)
    }

    fn setlk(
        &self,
        ctx: Context,
        inode: Inode,
        request: LockRequest,
        wait: bool,
    ) -> io::Result<()> {
        self.do_setlk(ctx, inode, request, wait)
    }

    fn tmpfile(
        &self,
        ctx: Context,
        parent: Inode,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Option<Handle>, FopenFlags)> {
        self.do_tmpfile(ctx, parent, mode, flags, umask)
    }

    fn statx(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Option<Handle>,
        flags: u32,
        mask: u32,
    ) -> io::Result<(libc::statx, Duration)> {
        self.do_statx(inode, handle, flags, mask)
    }

    fn access(&self, ctx: Context, inode: Inode, mask: u32) -> io::Result<()> {
        let data = self.inodes.get(inode)?;
        let st = oslib::stat_fd(data.fd()?.as_fd())?;
        let mask = mask & 7;
        if mask == 0 {
            return Ok(());
        }
        if mask & libc::W_OK as u32 != 0 {
            self.check_writable()?;
        }
        let mode = st.st_mode;
        let allowed = if ctx.uid == 0 {
            // Root may read and write anything; it may execute only what someone can execute.
            let x = if mode & libc::S_IFMT == libc::S_IFDIR || mode & 0o111 != 0 {
                1
            } else {
                0
            };
            6 | x
        } else if st.st_uid == ctx.uid {
            (mode >> 6) & 7
        } else if st.st_gid == ctx.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if mask & !allowed != 0 {
            Err(err(libc::EACCES))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_must_be_one_component() {
        for bad in [c"", c".", c"..", c"a/b", c"/"] {
            assert_eq!(
                check_name(bad).unwrap_err().raw_os_error(),
                Some(libc::EINVAL)
            );
        }
        check_name(c"...").unwrap();
        check_name(c"a b").unwrap();
    }

    #[test]
    fn killpriv_clears_suid_and_meaningful_sgid() {
        assert_eq!(killpriv_mode(0o6755, 10, None), 0o0755);
        // Without group-exec, setgid stays for a member of the file's group...
        assert_eq!(killpriv_mode(0o6744, 10, None), 0o2744);
        assert_eq!(killpriv_mode(0o6744, 10, Some(10)), 0o2744);
        // ...and goes for anyone else (Linux 6.x).
        assert_eq!(killpriv_mode(0o6744, 10, Some(11)), 0o0744);
        assert_eq!(killpriv_mode(0o1777, 10, Some(11)), 0o1777);
    }

    #[test]
    fn unprivileged_writers_lose_privileges_without_killpriv_v2() {
        let root = Context::default();
        let user = Context {
            uid: 1000,
            gid: 1000,
            ..Context::default()
        };
        assert!(!must_kill_priv(&root, false, false));
        assert!(must_kill_priv(&root, true, true));
        assert!(must_kill_priv(&user, false, false));
        // With KILLPRIV_V2 the guest kernel says when.
        assert!(!must_kill_priv(&user, false, true));
    }

    #[test]
    fn parse_dirent_rejects_truncated_records() {
        assert!(parse_dirent(&[0u8; 10]).is_err());
        let mut rec = vec![0u8; 24];
        rec[16] = 200; // reclen past the end
        assert!(parse_dirent(&rec).is_err());
        rec[16] = 24;
        rec[19] = b'x'; // name without NUL terminator before reclen
        rec[20..24].copy_from_slice(b"yzzz");
        assert!(parse_dirent(&rec).is_err());
        rec[22] = 0;
        let (e, len) = parse_dirent(&rec).unwrap();
        assert_eq!((e.name, len), (&b"xyz"[..], 24));
    }
}
