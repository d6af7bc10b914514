//! Behaviour tests of `PassthroughFs` on real temporary directories. They run as root (the
//! credentials and chown tests need it) and fail loudly otherwise.

use std::fs::{self, File};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use virtiofsd_fuse::filesystem::{
    Context, DirEntry, Entry, FileSystem, InitOptions, SetAttr, SetTime, ROOT_ID,
};
use virtiofsd_fuse::io::{ZeroCopyReader, ZeroCopyWriter};

use crate::consts::*;
use crate::{CachePolicy, Config, PassthroughFs};

pub(crate) const ROOT: Context = Context {
    uid: 0,
    gid: 0,
    pid: 1,
    supplementary_gid: None,
    security_context: None,
};

pub(crate) struct TestDir(pub(crate) PathBuf);

impl TestDir {
    pub(crate) fn new() -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "virtiofsd-passthrough-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        // World-writable so the credentials tests can create files as other users.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        TestDir(path)
    }

    pub(crate) fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn require_root() {
    // The effective uid is the third field of the Uid line.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(2) == Some("0"),
        "these tests must run as root (they create files as other users and chown)"
    );
}

pub(crate) fn setup_with(f: impl FnOnce(&mut Config)) -> (TestDir, PassthroughFs) {
    require_root();
    let dir = TestDir::new();
    let mut cfg = Config::new(&dir.0);
    f(&mut cfg);
    let fs = PassthroughFs::new(cfg).unwrap();
    fs.init(InitOptions { offered: u64::MAX }).unwrap();
    (dir, fs)
}

pub(crate) fn setup() -> (TestDir, PassthroughFs) {
    setup_with(|_| {})
}

pub(crate) fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error, got success"),
        Err(e) => e.raw_os_error().expect("raw OS error"),
    }
}

pub(crate) fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

/// Collects READ payloads with `pread`, as a transport would into guest memory.
#[derive(Default)]
pub(crate) struct VecWriter(pub(crate) Vec<u8>);

impl ZeroCopyWriter for VecWriter {
    fn write_from_file(
        &mut self,
        fd: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let f = File::from(fd.try_clone_to_owned()?);
        let mut buf = vec![0u8; count];
        let mut total = 0;
        while total < count {
            let n = f.read_at(&mut buf[total..], offset + total as u64)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        self.0.extend_from_slice(&buf[..total]);
        Ok(total)
    }
}

/// Supplies WRITE payloads with `pwrite`.
pub(crate) struct VecReader(pub(crate) Vec<u8>, pub(crate) usize);

impl ZeroCopyReader for VecReader {
    fn read_to_file(&mut self, fd: BorrowedFd<'_>, count: usize, offset: u64) -> io::Result<usize> {
        let f = File::from(fd.try_clone_to_owned()?);
        let n = count.min(self.0.len() - self.1);
        f.write_all_at(&self.0[self.1..self.1 + n], offset)?;
        self.1 += n;
        Ok(n)
    }
}

pub(crate) fn read_all(fs: &PassthroughFs, inode: u64, h: u64, size: u32, off: u64) -> Vec<u8> {
    let mut w = VecWriter::default();
    let n = fs.read(ROOT, inode, h, &mut w, size, off, 0).unwrap();
    assert_eq!(n, w.0.len());
    w.0
}

pub(crate) fn write_all(fs: &PassthroughFs, inode: u64, h: u64, data: &[u8], off: u64, kill: bool) {
    let mut r = VecReader(data.to_vec(), 0);
    let n = fs
        .write(ROOT, inode, h, &mut r, data.len() as u32, off, kill, 0)
        .unwrap();
    assert_eq!(n, data.len());
}

pub(crate) fn lookup(fs: &PassthroughFs, name: &str) -> Entry {
    fs.lookup(ROOT, ROOT_ID, &cstr(name)).unwrap()
}

#[test]
fn init_negotiates_only_offered_and_configured_flags() {
    let (_d, fs) = setup();
    let got = fs.init(InitOptions { offered: u64::MAX }).unwrap();
    assert_eq!(
        got,
        FUSE_ATOMIC_O_TRUNC
            | FUSE_DO_READDIRPLUS
            | FUSE_READDIRPLUS_AUTO
            | FUSE_CREATE_SUPP_GROUP
            | FUSE_POSIX_LOCKS
            | FUSE_FLOCK_LOCKS
    );
    assert_eq!(fs.init(InitOptions { offered: 0 }).unwrap(), 0);

    let (_d, fs) = setup_with(|c| {
        c.readdirplus = false;
        c.writeback = true;
        c.killpriv_v2 = true;
        c.announce_submounts = true;
        c.allow_mmap = true;
        c.cache = CachePolicy::Always;
        c.posix_locks = false;
        c.flock = false;
        c.xattr = true;
    });
    let got = fs.init(InitOptions { offered: u64::MAX }).unwrap();
    assert_eq!(
        got,
        FUSE_ATOMIC_O_TRUNC
            | FUSE_CREATE_SUPP_GROUP
            | FUSE_SETXATTR_EXT
            | FUSE_WRITEBACK_CACHE
            | FUSE_HANDLE_KILLPRIV_V2
            | FUSE_SUBMOUNTS
            | FUSE_DIRECT_IO_ALLOW_MMAP
            | FUSE_CACHE_SYMLINKS
    );
    let got = fs
        .init(InitOptions {
            offered: FUSE_WRITEBACK_CACHE,
        })
        .unwrap();
    assert_eq!(got, FUSE_WRITEBACK_CACHE);
}

#[test]
fn new_fails_on_missing_or_non_directory_root() {
    let d = TestDir::new();
    fs::write(d.join("file"), b"x").unwrap();
    assert_eq!(
        PassthroughFs::new(Config::new(d.join("file")))
            .err()
            .unwrap()
            .raw_os_error(),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        PassthroughFs::new(Config::new(d.join("missing")))
            .err()
            .unwrap()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
}

#[test]
fn lookup_refcounts_hard_links_and_forget() {
    let (d, fs) = setup();
    fs::write(d.join("a"), b"data").unwrap();
    fs::hard_link(d.join("a"), d.join("b")).unwrap();
    let a1 = lookup(&fs, "a");
    let a2 = lookup(&fs, "a");
    let b = lookup(&fs, "b");
    assert_eq!(a1.inode, a2.inode);
    assert_eq!(a1.inode, b.inode);
    assert_ne!(a1.inode, ROOT_ID);
    assert_eq!(a1.attr.st_size, 4);
    assert_eq!(a1.attr.st_ino, fs::metadata(d.join("a")).unwrap().ino());
    assert_eq!(a1.entry_timeout, Duration::from_secs(1));
    assert_eq!(fs.inode_count(), 2);

    fs.forget(ROOT, a1.inode, 2);
    assert!(fs.getattr(ROOT, a1.inode, None).is_ok());
    fs.batch_forget(ROOT, &[(a1.inode, 1)]);
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(errno(fs.getattr(ROOT, a1.inode, None)), libc::EBADF);
    // Forgetting unknown inodes or the root is harmless.
    fs.forget(ROOT, 9999, 1);
    fs.forget(ROOT, ROOT_ID, 1000);
    assert!(fs.getattr(ROOT, ROOT_ID, None).is_ok());
    assert_eq!(errno(fs.lookup(ROOT, ROOT_ID, c"nope")), libc::ENOENT);
    assert_eq!(errno(fs.lookup(ROOT, 12345, c"a")), libc::EBADF);
}

#[test]
fn bad_names_are_rejected() {
    let (_d, fs) = setup();
    for name in [c"a/b", c"..", c".", c""] {
        assert_eq!(errno(fs.lookup(ROOT, ROOT_ID, name)), libc::EINVAL);
        assert_eq!(errno(fs.mkdir(ROOT, ROOT_ID, name, 0o755, 0)), libc::EINVAL);
        assert_eq!(
            errno(fs.create(ROOT, ROOT_ID, name, 0o644, libc::O_RDWR as u32, 0, false)),
            libc::EINVAL
        );
        assert_eq!(errno(fs.unlink(ROOT, ROOT_ID, name)), libc::EINVAL);
    }
    assert_eq!(errno(fs.lookup(ROOT, ROOT_ID, c"../../etc")), libc::EINVAL);
}

#[test]
fn symlinks_are_never_followed() {
    let (d, fs) = setup();
    std::os::unix::fs::symlink("/etc", d.join("evil")).unwrap();
    let e = lookup(&fs, "evil");
    assert_eq!(e.attr.st_mode & libc::S_IFMT, libc::S_IFLNK);
    let (st, _) = fs.getattr(ROOT, e.inode, None).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        st.st_ino,
        fs::symlink_metadata(d.join("evil")).unwrap().ino()
    );
    assert_eq!(fs.readlink(ROOT, e.inode).unwrap(), b"/etc");
    assert_eq!(
        errno(fs.open(ROOT, e.inode, libc::O_RDONLY as u32, false)),
        libc::ELOOP
    );
    assert_eq!(errno(fs.opendir(ROOT, e.inode, 0)), libc::ENOTDIR);
    // Nothing can be looked up "inside" the link.
    assert!(fs.lookup(ROOT, e.inode, c"passwd").is_err());
    // Creating through a dangling or hostile symlink name must not follow it.
    assert_eq!(
        errno(fs.create(ROOT, ROOT_ID, c"evil", 0o644, libc::O_RDWR as u32, 0, false)),
        libc::ELOOP
    );
    assert_eq!(
        errno(fs.create(
            ROOT,
            ROOT_ID,
            c"evil",
            0o644,
            (libc::O_RDWR | libc::O_EXCL) as u32,
            0,
            false
        )),
        libc::EEXIST
    );
    // chmod of a symlink is refused; chown and utimes act on the link itself.
    let mode = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    assert_eq!(
        errno(fs.setattr(ROOT, e.inode, mode, None)),
        libc::EOPNOTSUPP
    );
    let before = fs::metadata("/etc").unwrap();
    let chown = SetAttr {
        uid: Some(4242),
        atime: Some(SetTime::At {
            secs: 1000,
            nsecs: 0,
        }),
        mtime: Some(SetTime::At {
            secs: 2000,
            nsecs: 0,
        }),
        ..Default::default()
    };
    let (st, _) = fs.setattr(ROOT, e.inode, chown, None).unwrap();
    assert_eq!((st.st_uid, st.st_mtime), (4242, 2000));
    let after = fs::metadata("/etc").unwrap();
    assert_eq!((before.uid(), before.mtime()), (after.uid(), after.mtime()));
    assert_eq!(errno(fs.readlink(ROOT, ROOT_ID)), libc::EINVAL);
}

#[test]
fn fifo_open_does_not_block() {
    let (d, fs) = setup();
    let p = cstr(d.join("fifo").to_str().unwrap());
    // SAFETY: `p` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
    let e = lookup(&fs, "fifo");
    let fs = std::sync::Arc::new(fs);
    let (tx, rx) = mpsc::channel();
    let fs2 = fs.clone();
    std::thread::spawn(move || {
        let r = fs2
            .open(ROOT, e.inode, libc::O_RDONLY as u32, false)
            .map(|_| ());
        let w = fs2
            .open(ROOT, e.inode, libc::O_WRONLY as u32, false)
            .map(|_| ());
        let _ = tx.send((r, w));
    });
    let (r, w) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("opening a FIFO blocked the daemon");
    // Special files are never opened for the guest (its kernel serves them itself).
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EBADF)));
    assert_eq!(w.map_err(|e| e.raw_os_error()), Err(Some(libc::EBADF)));
}

#[test]
fn readonly_refuses_every_modification() {
    let (d, fs) = setup_with(|c| c.readonly = true);
    fs::write(d.join("f"), b"abc").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    let f = lookup(&fs, "f");
    let rofs = libc::EROFS;
    assert_eq!(
        errno(fs.create(ROOT, ROOT_ID, c"n", 0o644, 0, 0, false)),
        rofs
    );
    assert_eq!(errno(fs.mkdir(ROOT, ROOT_ID, c"n", 0o755, 0)), rofs);
    assert_eq!(
        errno(fs.mknod(ROOT, ROOT_ID, c"n", libc::S_IFIFO | 0o644, 0, 0)),
        rofs
    );
    assert_eq!(errno(fs.symlink(ROOT, c"f", ROOT_ID, c"n")), rofs);
    assert_eq!(errno(fs.unlink(ROOT, ROOT_ID, c"f")), rofs);
    assert_eq!(errno(fs.rmdir(ROOT, ROOT_ID, c"sub")), rofs);
    assert_eq!(
        errno(fs.rename(ROOT, ROOT_ID, c"f", ROOT_ID, c"g", 0)),
        rofs
    );
    assert_eq!(errno(fs.link(ROOT, f.inode, ROOT_ID, c"g")), rofs);
    let sa = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(ROOT, f.inode, sa, None)), rofs);
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(errno(fs.open(ROOT, f.inode, flags as u32, false)), rofs);
    }
    assert_eq!(errno(fs.access(ROOT, f.inode, libc::W_OK as u32)), rofs);
    let (h, _) = fs
        .open(ROOT, f.inode, libc::O_RDONLY as u32, false)
        .unwrap();
    let h = h.unwrap();
    assert_eq!(read_all(&fs, f.inode, h, 10, 0), b"abc");
    let mut r = VecReader(b"x".to_vec(), 0);
    assert_eq!(
        errno(fs.write(ROOT, f.inode, h, &mut r, 1, 0, false, 0)),
        rofs
    );
    assert_eq!(fs::read(d.join("f")).unwrap(), b"abc");
    assert!(fs::read_dir(&d.0).unwrap().count() == 2);
}

#[test]
fn create_write_read_flush_fsync_release() {
    let (d, fs) = setup();
    let (e, h, opts) = fs
        .create(
            ROOT,
            ROOT_ID,
            c"f",
            0o666,
            libc::O_RDWR as u32,
            0o022,
            false,
        )
        .unwrap();
    let h = h.unwrap();
    assert_eq!(opts, 0);
    assert_eq!(e.attr.st_mode, libc::S_IFREG | 0o644);
    assert_eq!(fs::metadata(d.join("f")).unwrap().mode() & 0o7777, 0o644);
    write_all(&fs, e.inode, h, b"hello world", 0, false);
    assert_eq!(read_all(&fs, e.inode, h, 100, 6), b"world");
    assert_eq!(read_all(&fs, e.inode, h, 100, 50), b"");
    let (st, _) = fs.getattr(ROOT, e.inode, Some(h)).unwrap();
    assert_eq!(st.st_size, 11);
    fs.flush(ROOT, e.inode, h, 0).unwrap();
    fs.fsync(ROOT, e.inode, false, h).unwrap();
    fs.fsync(ROOT, e.inode, true, h).unwrap();
    assert_eq!(
        errno(fs.read(ROOT, ROOT_ID, h, &mut VecWriter::default(), 1, 0, 0)),
        libc::EBADF
    );
    assert_eq!(fs.handle_count(), 1);
    fs.release(ROOT, e.inode, 0, h, false, None).unwrap();
    assert_eq!(fs.handle_count(), 0);
    assert_eq!(
        errno(fs.release(ROOT, e.inode, 0, h, false, None)),
        libc::EBADF
    );
    assert_eq!(fs::read(d.join("f")).unwrap(), b"hello world");
    // Same file again: same inode, and O_EXCL is honoured.
    assert_eq!(lookup(&fs, "f").inode, e.inode);
    let excl = (libc::O_RDWR | libc::O_EXCL) as u32;
    assert_eq!(
        errno(fs.create(ROOT, ROOT_ID, c"f", 0o644, excl, 0, false)),
        libc::EEXIST
    );
    // Without O_EXCL, create opens the existing file (and O_TRUNC truncates it).
    let (e2, h2, _) = fs
        .create(
            ROOT,
            ROOT_ID,
            c"f",
            0o644,
            (libc::O_RDWR | libc::O_TRUNC) as u32,
            0,
            false,
        )
        .unwrap();
    assert_eq!(e2.inode, e.inode);
    assert_eq!(e2.attr.st_size, 0);
    fs.release(ROOT, e.inode, 0, h2.unwrap(), false, None)
        .unwrap();
}

#[test]
fn cache_policy_sets_timeouts_and_open_flags() {
    let (d, fs) = setup_with(|c| c.cache = CachePolicy::Never);
    fs::write(d.join("f"), b"x").unwrap();
    let e = lookup(&fs, "f");
    assert_eq!(
        (e.entry_timeout, e.attr_timeout),
        (Duration::ZERO, Duration::ZERO)
    );
    let (_, opts) = fs
        .open(ROOT, e.inode, libc::O_RDONLY as u32, false)
        .unwrap();
    assert_eq!(opts, FOPEN_DIRECT_IO);
    let (_, dopts) = fs.opendir(ROOT, ROOT_ID, 0).unwrap();
    assert_eq!(dopts, 0);

    let (d, fs) = setup_with(|c| c.cache = CachePolicy::Always);
    fs::write(d.join("f"), b"x").unwrap();
    let e = lookup(&fs, "f");
    assert_eq!(e.attr_timeout, Duration::from_secs(86400));
    let (_, opts) = fs
        .open(ROOT, e.inode, libc::O_RDONLY as u32, false)
        .unwrap();
    assert_eq!(opts, FOPEN_KEEP_CACHE);
}

#[test]
fn writeback_makes_write_only_handles_readable_and_drops_append() {
    let (d, fs) = setup_with(|c| c.writeback = true);
    fs::write(d.join("w"), b"abc").unwrap();
    let e = lookup(&fs, "w");
    let flags = (libc::O_WRONLY | libc::O_APPEND) as u32;
    let (h, _) = fs.open(ROOT, e.inode, flags, false).unwrap();
    let h = h.unwrap();
    assert_eq!(read_all(&fs, e.inode, h, 10, 0), b"abc");
    write_all(&fs, e.inode, h, b"X", 0, false);
    assert_eq!(fs::read(d.join("w")).unwrap(), b"Xbc");

    // Without writeback, a write-only handle stays write-only.
    let (d, fs) = setup();
    fs::write(d.join("w"), b"abc").unwrap();
    let e = lookup(&fs, "w");
    let (h, _) = fs
        .open(ROOT, e.inode, libc::O_WRONLY as u32, false)
        .unwrap();
    let mut w = VecWriter::default();
    assert_eq!(
        errno(fs.read(ROOT, e.inode, h.unwrap(), &mut w, 3, 0, 0)),
        libc::EBADF
    );
}

#[test]
fn setattr_mode_owner_size_and_times() {
    let (d, fs) = setup();
    fs::write(d.join("f"), b"0123456789").unwrap();
    let e = lookup(&fs, "f");
    let sa = SetAttr {
        mode: Some(0o600),
        uid: Some(1234),
        gid: Some(5678),
        size: Some(4),
        atime: Some(SetTime::At {
            secs: 1_000_000,
            nsecs: 5,
        }),
        mtime: Some(SetTime::At {
            secs: 2_000_000,
            nsecs: 7,
        }),
        kill_suidgid: false,
    };
    let (st, _) = fs.setattr(ROOT, e.inode, sa, None).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o600);
    assert_eq!((st.st_uid, st.st_gid, st.st_size), (1234, 5678, 4));
    assert_eq!((st.st_atime, st.st_atime_nsec), (1_000_000, 5));
    assert_eq!((st.st_mtime, st.st_mtime_nsec), (2_000_000, 7));
    let m = fs::metadata(d.join("f")).unwrap();
    assert_eq!((m.len(), m.uid(), m.mode() & 0o7777), (4, 1234, 0o600));

    // Through a handle, and "now".
    let (h, _) = fs.open(ROOT, e.inode, libc::O_RDWR as u32, false).unwrap();
    let now = SetAttr {
        size: Some(2),
        mode: Some(0o640),
        mtime: Some(SetTime::Now),
        ..Default::default()
    };
    let (st, _) = fs.setattr(ROOT, e.inode, now, h).unwrap();
    assert_eq!((st.st_size, st.st_mode & 0o7777), (2, 0o640));
    assert!(st.st_mtime > 2_000_000);
    assert_eq!(
        st.st_atime, 1_000_000,
        "atime was not asked for and must be left alone"
    );

    // Truncating a directory is refused by the host, not a panic.
    let dir_trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(
        errno(fs.setattr(ROOT, ROOT_ID, dir_trunc, None)),
        libc::EISDIR
    );
}

#[test]
fn kill_suidgid_on_write_and_truncate() {
    let (d, fs) = setup();
    fs::write(d.join("s"), b"abc").unwrap();
    fs::set_permissions(d.join("s"), fs::Permissions::from_mode(0o6755)).unwrap();
    let e = lookup(&fs, "s");
    let (h, _) = fs.open(ROOT, e.inode, libc::O_RDWR as u32, false).unwrap();
    let h = h.unwrap();
    write_all(&fs, e.inode, h, b"x", 0, false);
    assert_eq!(fs::metadata(d.join("s")).unwrap().mode() & 0o7777, 0o6755);
    write_all(&fs, e.inode, h, b"y", 0, true);
    assert_eq!(fs::metadata(d.join("s")).unwrap().mode() & 0o7777, 0o755);

    fs::set_permissions(d.join("s"), fs::Permissions::from_mode(0o4755)).unwrap();
    let sa = SetAttr {
        size: Some(1),
        kill_suidgid: true,
        ..Default::default()
    };
    let (st, _) = fs.setattr(ROOT, e.inode, sa, None).unwrap();
    assert_eq!((st.st_mode & 0o7777, st.st_size), (0o755, 1));
}

#[test]
fn mkdir_mknod_symlink_unlink_rmdir() {
    let (d, fs) = setup();
    let dir = fs.mkdir(ROOT, ROOT_ID, c"dir", 0o777, 0o022).unwrap();
    assert_eq!(dir.attr.st_mode, libc::S_IFDIR | 0o755);
    assert!(d.join("dir").is_dir());
    let fifo = fs
        .mknod(ROOT, dir.inode, c"fifo", libc::S_IFIFO | 0o666, 0, 0o002)
        .unwrap();
    assert_eq!(fifo.attr.st_mode, libc::S_IFIFO | 0o664);
    let link = fs.symlink(ROOT, c"../outside", dir.inode, c"ln").unwrap();
    assert_eq!(link.attr.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(fs.readlink(ROOT, link.inode).unwrap(), b"../outside");
    assert_eq!(
        fs::read_link(d.join("dir/ln")).unwrap(),
        Path::new("../outside")
    );
    assert_eq!(
        errno(fs.mkdir(ROOT, ROOT_ID, c"dir", 0o755, 0)),
        libc::EEXIST
    );
    assert_eq!(errno(fs.rmdir(ROOT, ROOT_ID, c"dir")), libc::ENOTEMPTY);
    fs.unlink(ROOT, dir.inode, c"fifo").unwrap();
    fs.unlink(ROOT, dir.inode, c"ln").unwrap();
    assert_eq!(errno(fs.unlink(ROOT, dir.inode, c"ln")), libc::ENOENT);
    assert_eq!(errno(fs.unlink(ROOT, ROOT_ID, c"dir")), libc::EISDIR);
    fs.rmdir(ROOT, ROOT_ID, c"dir").unwrap();
    assert!(!d.join("dir").exists());
}

#[test]
fn rename_over_existing_and_flags() {
    let (d, fs) = setup();
    fs::write(d.join("a"), b"A").unwrap();
    fs::write(d.join("b"), b"B").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    let sub = lookup(&fs, "sub");
    let noreplace = libc::RENAME_NOREPLACE;
    assert_eq!(
        errno(fs.rename(ROOT, ROOT_ID, c"a", ROOT_ID, c"b", noreplace)),
        libc::EEXIST
    );
    fs.rename(ROOT, ROOT_ID, c"a", ROOT_ID, c"b", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(fs::read(d.join("a")).unwrap(), b"B");
    fs.rename(ROOT, ROOT_ID, c"a", ROOT_ID, c"b", 0).unwrap();
    assert!(!d.join("a").exists());
    assert_eq!(fs::read(d.join("b")).unwrap(), b"B");
    fs.rename(ROOT, ROOT_ID, c"b", sub.inode, c"c", 0).unwrap();
    assert_eq!(fs::read(d.join("sub/c")).unwrap(), b"B");
    assert_eq!(
        errno(fs.rename(ROOT, ROOT_ID, c"missing", ROOT_ID, c"x", 0)),
        libc::ENOENT
    );
}

#[test]
fn link_gives_the_same_inode() {
    let (d, fs) = setup();
    fs::write(d.join("a"), b"A").unwrap();
    let a = lookup(&fs, "a");
    let c = fs.link(ROOT, a.inode, ROOT_ID, c"c").unwrap();
    assert_eq!(c.inode, a.inode);
    assert_eq!(c.attr.st_nlink, 2);
    assert_eq!(fs::read(d.join("c")).unwrap(), b"A");
    // Two references now: one forget keeps the inode.
    fs.forget(ROOT, a.inode, 1);
    assert!(fs.getattr(ROOT, a.inode, None).is_ok());
    assert_eq!(errno(fs.link(ROOT, a.inode, ROOT_ID, c"c")), libc::EEXIST);
    // Hard links to symlinks link the symlink itself.
    std::os::unix::fs::symlink("/etc/passwd", d.join("s")).unwrap();
    let s = lookup(&fs, "s");
    let s2 = fs.link(ROOT, s.inode, ROOT_ID, c"s2").unwrap();
    assert_eq!(s2.inode, s.inode);
    assert!(fs::symlink_metadata(d.join("s2"))
        .unwrap()
        .file_type()
        .is_symlink());
}

pub(crate) fn list_all(fs: &PassthroughFs, dir: u64, per_call: usize) -> Vec<(Vec<u8>, u64)> {
    let (h, _) = fs.opendir(ROOT, dir, 0).unwrap();
    let h = h.unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut calls = 0;
    loop {
        let mut batch = Vec::new();
        fs.readdir(ROOT, dir, h, 256, offset, &mut |e: DirEntry<'_>| {
            if batch.len() == per_call {
                return Ok(0);
            }
            batch.push((e.name.to_vec(), e.inode, e.offset));
            Ok(24 + e.name.len())
        })
        .unwrap();
        calls += 1;
        if batch.is_empty() {
            break;
        }
        offset = batch.last().unwrap().2;
        out.extend(batch.into_iter().map(|(n, i, _)| (n, i)));
        assert!(calls < 10_000, "readdir does not make progress");
    }
    fs.releasedir(ROOT, dir, 0, h).unwrap();
    out
}

#[test]
fn readdir_of_1000_entries_in_small_batches() {
    let (d, fs) = setup();
    for i in 0..1000 {
        fs::write(d.join(&format!("file-{i:04}")), b"").unwrap();
    }
    let entries = list_all(&fs, ROOT_ID, 7);
    let mut names: Vec<Vec<u8>> = entries.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let total = names.len();
    names.dedup();
    assert_eq!(names.len(), total, "an entry was listed twice");
    assert_eq!(total, 1002);
    assert!(names.contains(&b".".to_vec()) && names.contains(&b"..".to_vec()));
    for i in 0..1000 {
        assert!(names.contains(&format!("file-{i:04}").into_bytes()));
    }
    let (name, ino) = entries.iter().find(|(n, _)| n == b"file-0500").unwrap();
    assert_eq!(
        *ino,
        fs::metadata(d.join(std::str::from_utf8(name).unwrap()))
            .unwrap()
            .ino()
    );
    // Listing is read-only: no lookups taken.
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.handle_count(), 0);
}

#[test]
fn readdirplus_takes_one_lookup_per_accepted_entry() {
    let (d, fs) = setup();
    for i in 0..20 {
        fs::write(d.join(&format!("f{i}")), b"").unwrap();
    }
    let (h, _) = fs.opendir(ROOT, ROOT_ID, 0).unwrap();
    let h = h.unwrap();
    let mut accepted = Vec::new();
    let mut dots = 0;
    let mut offset = 0;
    fs.readdirplus(ROOT, ROOT_ID, h, 4096, 0, &mut |e, entry| {
        if e.name == b"." || e.name == b".." {
            assert_eq!(entry.inode, 0);
            dots += 1;
            return Ok(1);
        }
        if accepted.len() == 5 {
            return Ok(0);
        }
        assert_ne!(entry.inode, 0);
        assert_eq!(entry.attr.st_ino, e.inode);
        accepted.push(entry.inode);
        offset = e.offset;
        Ok(1)
    })
    .unwrap();
    // "." and ".." may or may not come first; every accepted entry holds one reference and the
    // refused one holds none.
    assert_eq!(accepted.len(), 5);
    assert_eq!(fs.inode_count(), 1 + 5);
    // Continue from the offset: the rest arrives, none twice.
    let mut rest = Vec::new();
    fs.readdirplus(ROOT, ROOT_ID, h, 4096, offset, &mut |e, entry| {
        if e.name != b"." && e.name != b".." {
            rest.push(entry.inode);
        }
        Ok(1)
    })
    .unwrap();
    assert_eq!(accepted.len() + rest.len(), 20);
    assert!(rest.iter().all(|i| !accepted.contains(i)));
    assert_eq!(fs.inode_count(), 21);
    for i in accepted.iter().chain(rest.iter()) {
        fs.forget(ROOT, *i, 1);
    }
    assert_eq!(fs.inode_count(), 1);
    let _ = dots;
}

#[test]
fn creates_run_as_the_caller() {
    let (d, fs) = setup();
    const USER: Context = Context {
        uid: 1234,
        gid: 1234,
        pid: 2,
        supplementary_gid: None,
        security_context: None,
    };
    let (e, h, _) = fs
        .create(ROOT, ROOT_ID, c"mine", 0o644, libc::O_RDWR as u32, 0, false)
        .unwrap();
    assert_eq!(e.attr.st_uid, 0);
    fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
        .unwrap();

    let (e, h, _) = fs
        .create(
            USER,
            ROOT_ID,
            c"theirs",
            0o644,
            libc::O_RDWR as u32,
            0,
            false,
        )
        .unwrap();
    fs.release(USER, e.inode, 0, h.unwrap(), false, None)
        .unwrap();
    let m = fs::metadata(d.join("theirs")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 1234));
    let dir = fs.mkdir(USER, ROOT_ID, c"tdir", 0o755, 0).unwrap();
    assert_eq!((dir.attr.st_uid, dir.attr.st_gid), (1234, 1234));
    let l = fs.symlink(USER, c"x", ROOT_ID, c"tlink").unwrap();
    assert_eq!(l.attr.st_uid, 1234);
    let n = fs
        .mknod(USER, ROOT_ID, c"tfifo", libc::S_IFIFO | 0o600, 0, 0)
        .unwrap();
    assert_eq!(n.attr.st_uid, 1234);
    // The caller's permissions apply: a root-owned 0755 directory is not writable for them.
    let sub = fs.mkdir(ROOT, ROOT_ID, c"rootdir", 0o755, 0).unwrap();
    assert_eq!(
        errno(fs.mkdir(USER, sub.inode, c"x", 0o755, 0)),
        libc::EACCES
    );
    // And the daemon thread is root again afterwards.
    assert_eq!(crate::oslib::current_fsuid(), 0);
    assert_eq!(crate::oslib::current_fsgid(), 0);
    let after = fs.mkdir(ROOT, ROOT_ID, c"after", 0o755, 0).unwrap();
    assert_eq!(after.attr.st_uid, 0);
}

#[test]
fn statfs_access_and_destroy() {
    let (d, fs) = setup();
    fs::write(d.join("f"), b"x").unwrap();
    fs::set_permissions(d.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let st = fs.statfs(ROOT, ROOT_ID).unwrap();
    assert!(st.f_bsize > 0 && st.f_blocks > 0);
    let e = lookup(&fs, "f");
    const USER: Context = Context {
        uid: 1000,
        gid: 1000,
        pid: 3,
        supplementary_gid: None,
        security_context: None,
    };
    fs.access(ROOT, e.inode, (libc::R_OK | libc::W_OK) as u32)
        .unwrap();
    assert_eq!(
        errno(fs.access(ROOT, e.inode, libc::X_OK as u32)),
        libc::EACCES
    );
    fs.access(USER, e.inode, libc::R_OK as u32).unwrap();
    assert_eq!(
        errno(fs.access(USER, e.inode, libc::W_OK as u32)),
        libc::EACCES
    );
    fs.access(USER, e.inode, libc::F_OK as u32).unwrap();

    let (h, _) = fs
        .open(ROOT, e.inode, libc::O_RDONLY as u32, false)
        .unwrap();
    fs.opendir(ROOT, ROOT_ID, 0).unwrap();
    assert_eq!(fs.handle_count(), 2);
    fs.destroy();
    assert_eq!(fs.handle_count(), 0);
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(errno(fs.getattr(ROOT, e.inode, h)), libc::EBADF);
    assert!(fs.getattr(ROOT, ROOT_ID, None).is_ok());
}

#[test]
fn concurrent_lookups_and_forgets_balance() {
    let (d, fs) = setup();
    fs::write(d.join("shared"), b"").unwrap();
    let fs = std::sync::Arc::new(fs);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    let e = fs.lookup(ROOT, ROOT_ID, c"shared").unwrap();
                    fs.forget(ROOT, e.inode, 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(fs.inode_count(), 1);
}

/// A tmpfs mounted for the length of a test; detached on drop even if the test fails.
pub(crate) struct TmpfsMount(std::ffi::CString);

impl TmpfsMount {
    pub(crate) fn new(at: &Path) -> TmpfsMount {
        let target = cstr(at.to_str().unwrap());
        // SAFETY: all pointers are valid NUL-terminated strings or null (no mount data).
        let ret = unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            ret,
            0,
            "mounting a tmpfs for the submount test failed ({}); it needs CAP_SYS_ADMIN",
            io::Error::last_os_error()
        );
        TmpfsMount(target)
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a valid NUL-terminated path.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn submounts_are_announced_only_when_asked() {
    let (d, fs) = setup_with(|c| c.announce_submounts = true);
    fs::create_dir(d.join("m")).unwrap();
    fs::create_dir(d.join("plain")).unwrap();
    let _mnt = TmpfsMount::new(&d.join("m"));
    let m = lookup(&fs, "m");
    assert_eq!(m.attr_flags & FUSE_ATTR_SUBMOUNT, FUSE_ATTR_SUBMOUNT);
    assert_eq!(lookup(&fs, "plain").attr_flags, 0);
    // Inside the submount, children are on the same mount as their parent again.
    fs::create_dir(d.join("m/inner")).unwrap();
    let inner = fs.lookup(ROOT, m.inode, c"inner").unwrap();
    assert_eq!(inner.attr_flags, 0);

    let fs2 = PassthroughFs::new(Config::new(&d.0)).unwrap();
    fs2.init(InitOptions { offered: u64::MAX }).unwrap();
    assert_eq!(fs2.lookup(ROOT, ROOT_ID, c"m").unwrap().attr_flags, 0);
    drop(fs);
    drop(fs2);
}
