use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::filesystem::{AddDirEntry, AddDirEntryPlus, Handle, Inode, OpenOptions};
use crate::io::{ZeroCopyReader, ZeroCopyWriter};
use crate::testing::*;

const ROOM: usize = 1 << 21;
const FILE_DATA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn temp_file(contents: &[u8]) -> File {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "virtiofsd-fuse-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create temp file");
    std::fs::remove_file(&path).expect("unlink temp file");
    f.write_all(contents).expect("fill temp file");
    f
}

fn stat(ino: u64) -> libc::stat64 {
    // SAFETY: `stat64` is plain old data; all-zero is a valid value.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    st.st_ino = ino;
    st.st_mode = libc::S_IFREG | 0o644;
    st.st_size = ino.wrapping_mul(10) as i64;
    st.st_nlink = 1;
    st.st_uid = 7;
    st.st_gid = 8;
    st.st_atime = 1_000;
    st.st_atime_nsec = 5;
    st.st_mtime = 2_000;
    st.st_blksize = 4096;
    st
}

fn entry(ino: u64) -> Entry {
    Entry {
        inode: ino,
        generation: 9,
        attr: stat(ino),
        attr_flags: abi::FUSE_ATTR_SUBMOUNT,
        attr_timeout: Duration::from_millis(1500),
        entry_timeout: Duration::new(3, 250),
    }
}

fn name_error(name: &CStr) -> Option<io::Error> {
    match name.to_bytes() {
        b"enoent" => Some(io::Error::from_raw_os_error(libc::ENOENT)),
        b"custom" => Some(io::Error::other("not an OS error")),
        b"zero" => Some(io::Error::from_raw_os_error(0)),
        b"negative" => Some(io::Error::from_raw_os_error(-3)),
        b"huge" => Some(io::Error::from_raw_os_error(5000)),
        _ => None,
    }
}

const DIR: &[(&[u8], u32)] = &[
    (b".", libc::DT_DIR as u32),
    (b"..", libc::DT_DIR as u32),
    (b"a", libc::DT_REG as u32),
    (b"longer-name.txt", libc::DT_REG as u32),
    (b"sub", libc::DT_DIR as u32),
];

struct MockFs {
    calls: Mutex<Vec<String>>,
    wants: u64,
    file: File,
    written: Mutex<Vec<u8>>,
    destroyed: AtomicUsize,
    fail_reads: bool,
}

impl MockFs {
    fn new() -> Self {
        MockFs {
            calls: Mutex::new(Vec::new()),
            wants: 0,
            file: temp_file(FILE_DATA),
            written: Mutex::new(Vec::new()),
            destroyed: AtomicUsize::new(0),
            fail_reads: false,
        }
    }

    fn rec(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

fn c(ctx: Context) -> String {
    format!("{}/{}/{}", ctx.uid, ctx.gid, ctx.pid)
}

impl FileSystem for MockFs {
    fn init(&self, opts: InitOptions) -> io::Result<u64> {
        self.rec(format!("init {:#x}", opts.offered));
        Ok(self.wants)
    }
    fn destroy(&self) {
        self.destroyed.fetch_add(1, Ordering::SeqCst);
    }
    fn lookup(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        self.rec(format!("lookup {} {parent} {name:?}", c(ctx)));
        match name_error(name) {
            Some(e) => Err(e),
            None => Ok(entry(100)),
        }
    }
    fn forget(&self, _ctx: Context, inode: Inode, count: u64) {
        self.rec(format!("forget {inode} {count}"));
    }
    fn batch_forget(&self, _ctx: Context, requests: &[(Inode, u64)]) {
        self.rec(format!("batch_forget {requests:?}"));
    }
    fn getattr(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.rec(format!("getattr {inode} {handle:?}"));
        Ok((stat(inode), Duration::new(2, 7)))
    }
    fn setattr(
        &self,
        _ctx: Context,
        inode: Inode,
        attr: SetAttr,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.rec(format!("setattr {inode} {attr:?} {handle:?}"));
        Ok((stat(inode), Duration::from_secs(1)))
    }
    fn readlink(&self, _ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        self.rec(format!("readlink {inode}"));
        Ok(b"../target".to_vec())
    }
    fn symlink(
        &self,
        _ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.rec(format!("symlink {target:?} {parent} {name:?}"));
        Ok(entry(101))
    }
    fn mknod(
        &self,
        _ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.rec(format!("mknod {parent} {name:?} {mode:o} {rdev} {umask:o}"));
        Ok(entry(102))
    }
    fn mkdir(
        &self,
        _ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.rec(format!("mkdir {parent} {name:?} {mode:o} {umask:o}"));
        Ok(entry(103))
    }
    fn unlink(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        self.rec(format!("unlink {parent} {name:?}"));
        Ok(())
    }
    fn rmdir(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        self.rec(format!("rmdir {parent} {name:?}"));
        Ok(())
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
        self.rec(format!(
            "rename {old_parent} {old_name:?} {new_parent} {new_name:?} {flags}"
        ));
        Ok(())
    }
    fn link(
        &self,
        _ctx: Context,
        inode: Inode,
        new_parent: Inode,
        new_name: &CStr,
    ) -> io::Result<Entry> {
        self.rec(format!("link {inode} {new_parent} {new_name:?}"));
        Ok(entry(inode))
    }
    fn open(
        &self,
        _ctx: Context,
        inode: Inode,
        flags: u32,
        kill_suidgid: bool,
    ) -> io::Result<(Option<Handle>, OpenOptions)> {
        self.rec(format!("open {inode} {flags:#o} kill={kill_suidgid}"));
        Ok((Some(77), abi::FOPEN_KEEP_CACHE))
    }
    fn create(
        &self,
        _ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        flags: u32,
        umask: u32,
        kill_suidgid: bool,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions)> {
        self.rec(format!(
            "create {parent} {name:?} {mode:o} {flags:#o} {umask:o} kill={kill_suidgid}"
        ));
        Ok((entry(104), Some(78), abi::FOPEN_DIRECT_IO))
    }
    fn read(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        flags: u32,
    ) -> io::Result<usize> {
        self.rec(format!("read {inode} {handle} {size} {offset} {flags:#o}"));
        if self.fail_reads {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        w.write_from_file(self.file.as_fd(), size as usize, offset)
    }
    fn write(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        kill_suidgid: bool,
        flags: u32,
    ) -> io::Result<usize> {
        self.rec(format!(
            "write {inode} {handle} {size} {offset} {kill_suidgid} {flags:#o}"
        ));
        let f = temp_file(b"");
        let n = r.read_to_file(f.as_fd(), size as usize, 0)?;
        let mut got = vec![0u8; n];
        f.read_exact_at(&mut got, 0)?;
        *self.written.lock().unwrap() = got;
        Ok(n)
    }
    fn flush(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        lock_owner: u64,
    ) -> io::Result<()> {
        self.rec(format!("flush {inode} {handle} {lock_owner}"));
        Ok(())
    }
    fn fsync(&self, _ctx: Context, inode: Inode, datasync: bool, handle: Handle) -> io::Result<()> {
        self.rec(format!("fsync {inode} {datasync} {handle}"));
        Ok(())
    }
    fn release(
        &self,
        _ctx: Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
        flush: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.rec(format!(
            "release {inode} {flags:#o} {handle} {flush} {lock_owner:?}"
        ));
        Ok(())
    }
    fn statfs(&self, _ctx: Context, inode: Inode) -> io::Result<libc::statvfs64> {
        self.rec(format!("statfs {inode}"));
        // SAFETY: `statvfs64` is plain old data; all-zero is a valid value.
        let mut st: libc::statvfs64 = unsafe { std::mem::zeroed() };
        st.f_blocks = 1000;
        st.f_bfree = 500;
        st.f_bavail = 400;
        st.f_files = 300;
        st.f_ffree = 200;
        st.f_bsize = 4096;
        st.f_frsize = 512;
        st.f_namemax = 255;
        Ok(st)
    }
    fn opendir(
        &self,
        _ctx: Context,
        inode: Inode,
        flags: u32,
    ) -> io::Result<(Option<Handle>, OpenOptions)> {
        self.rec(format!("opendir {inode} {flags:#o}"));
        Ok((Some(55), abi::FOPEN_CACHE_DIR))
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
        self.rec(format!("readdir {inode} {handle} {size} {offset}"));
        for (i, (name, typ)) in DIR.iter().enumerate().skip(offset as usize) {
            let d = DirEntry {
                inode: 10 + i as u64,
                offset: i as u64 + 1,
                file_type: *typ,
                name,
            };
            if add(d)? == 0 {
                break;
            }
        }
        Ok(())
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
        self.rec(format!("readdirplus {inode} {handle} {size} {offset}"));
        for (i, (name, typ)) in DIR.iter().enumerate().skip(offset as usize) {
            let d = DirEntry {
                inode: 10 + i as u64,
                offset: i as u64 + 1,
                file_type: *typ,
                name,
            };
            let e = if i < 2 {
                Entry::negative(Duration::ZERO)
            } else {
                entry(10 + i as u64)
            };
            if add(d, e)? == 0 {
                break;
            }
        }
        Ok(())
    }
    fn fsyncdir(
        &self,
        _ctx: Context,
        inode: Inode,
        datasync: bool,
        handle: Handle,
    ) -> io::Result<()> {
        self.rec(format!("fsyncdir {inode} {datasync} {handle}"));
        Ok(())
    }
    fn releasedir(
        &self,
        _ctx: Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
    ) -> io::Result<()> {
        self.rec(format!("releasedir {inode} {flags:#o} {handle}"));
        Ok(())
    }
    fn access(&self, _ctx: Context, inode: Inode, mask: u32) -> io::Result<()> {
        self.rec(format!("access {inode} {mask:o}"));
        Ok(())
    }
}

// ---- helpers ----

const OFFERED: u64 =
    DISPATCHER_FLAGS | FUSE_DO_READDIRPLUS | FUSE_EXPORT_SUPPORT | FUSE_HAS_EXPIRE_ONLY;

fn server_with(fs: MockFs) -> Server<MockFs> {
    let s = Server::new(fs);
    let reply = call(&s, init_request(1, OFFERED), ROOM).expect("init");
    ok(&reply, 1);
    s.fs().calls.lock().unwrap().clear();
    s
}

fn ready() -> Server<MockFs> {
    server_with(MockFs::new())
}

/// Asserts a successful reply to `unique` and returns its payload.
fn ok(reply: &[u8], unique: u64) -> Vec<u8> {
    let (h, payload) = parse_reply(reply).expect("reply has a header");
    assert_eq!(h.error, 0, "expected success, got errno {}", -h.error);
    assert_eq!(h.unique, unique);
    assert_eq!(h.len as usize, reply.len());
    payload
}

/// Asserts an error reply and returns its (positive) errno.
fn errno(reply: &[u8]) -> i32 {
    let (h, payload) = parse_reply(reply).expect("reply has a header");
    assert!(payload.is_empty(), "error replies carry no payload");
    assert_eq!(h.len as usize, reply.len());
    assert!(h.error < 0, "expected an error, got success");
    -h.error
}

fn send(s: &Server<MockFs>, op: Opcode, node: u64, args: &[&[u8]]) -> Vec<u8> {
    call(s, request(op as u32, 42, node, args), ROOM).expect("handled")
}

fn calls(s: &Server<MockFs>) -> Vec<String> {
    std::mem::take(&mut *s.fs().calls.lock().unwrap())
}

fn last_call(s: &Server<MockFs>) -> String {
    calls(s).pop().unwrap_or_default()
}

fn decode<T: WireStruct>(bytes: &[u8]) -> T {
    T::from_bytes(bytes).unwrap_or_else(|| panic!("payload of {} bytes", bytes.len()))
}

fn check_entry(out: &EntryOut, ino: u64) {
    assert_eq!(out.nodeid, ino);
    assert_eq!(out.generation, 9);
    assert_eq!((out.entry_valid, out.entry_valid_nsec), (3, 250));
    assert_eq!((out.attr_valid, out.attr_valid_nsec), (1, 500_000_000));
    assert_eq!(out.attr.ino, ino);
    assert_eq!(out.attr.size, ino * 10);
    assert_eq!(out.attr.mode, libc::S_IFREG | 0o644);
    assert_eq!((out.attr.uid, out.attr.gid, out.attr.nlink), (7, 8, 1));
    assert_eq!(
        (out.attr.atime, out.attr.atimensec, out.attr.mtime),
        (1000, 5, 2000)
    );
    assert_eq!(out.attr.blksize, 4096);
    assert_eq!(out.attr.flags, FUSE_ATTR_SUBMOUNT);
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

// ---- INIT / DESTROY lifecycle ----

#[test]
fn init_negotiates_flags_and_limits() {
    let mut fs = MockFs::new();
    fs.wants =
        FUSE_DO_READDIRPLUS | FUSE_EXPORT_SUPPORT | FUSE_HAS_EXPIRE_ONLY | FUSE_WRITEBACK_CACHE;
    let s = Server::new(fs);
    let reply = call(&s, init_request(3, OFFERED), ROOM).unwrap();
    let out: InitOut = decode(&ok(&reply, 3));
    assert_eq!(
        (out.major, out.minor),
        (KERNEL_VERSION, KERNEL_MINOR_VERSION)
    );
    let want = DISPATCHER_FLAGS | FUSE_DO_READDIRPLUS | FUSE_HAS_EXPIRE_ONLY;
    assert_eq!(out.flags as u64, want & 0xffff_ffff);
    assert_eq!(out.flags2 as u64, want >> 32);
    assert_eq!(out.max_write, 1 << 20);
    assert_eq!(out.max_pages as u64, (1u64 << 20).div_ceil(page_size()));
    assert_eq!(out.max_readahead, 128 * 1024);
    assert_eq!(out.time_gran, 1);
    assert_eq!(s.negotiated_flags(), want);
    assert_eq!(calls(&s), vec![format!("init {OFFERED:#x}")]);
}

#[test]
fn init_ignores_flags2_without_init_ext() {
    let s = Server::new(MockFs::new());
    let offered = FUSE_ASYNC_READ | FUSE_HAS_EXPIRE_ONLY;
    let reply = call(&s, init_request(3, offered), ROOM).unwrap();
    let out: InitOut = decode(&ok(&reply, 3));
    assert_eq!(out.flags as u64, FUSE_ASYNC_READ);
    assert_eq!(out.flags2, 0);
    assert_eq!(calls(&s), vec![format!("init {FUSE_ASYNC_READ:#x}")]);
}

#[test]
fn init_accepts_the_short_pre_7_36_layout() {
    let s = Server::new(MockFs::new());
    let init = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 4096,
        flags: FUSE_BIG_WRITES as u32,
        ..Default::default()
    };
    let reply = call(
        &s,
        request(Opcode::Init as u32, 5, 0, &[&init.as_bytes()[..16]]),
        ROOM,
    )
    .unwrap();
    let out: InitOut = decode(&ok(&reply, 5));
    assert_eq!(out.flags as u64, FUSE_BIG_WRITES);
    assert_eq!(
        errno(&call(&s, init_request(6, 0), ROOM).unwrap()),
        libc::EIO
    );
    assert_eq!(
        errno(&call(&s, request(Opcode::Init as u32, 7, 0, &[&[0u8; 15]]), ROOM).unwrap()),
        libc::EINVAL
    );
}

#[test]
fn init_rejects_bad_versions() {
    let s = Server::new(MockFs::new());
    for (major, minor) in [(7, 26), (6, 40)] {
        let init = InitIn {
            major,
            minor,
            ..Default::default()
        };
        let reply = call(
            &s,
            request(Opcode::Init as u32, 5, 0, &[init.as_bytes()]),
            ROOM,
        )
        .unwrap();
        assert_eq!(errno(&reply), libc::EPROTO, "{major}.{minor}");
    }
    let short = call(&s, request(Opcode::Init as u32, 5, 0, &[&[0u8; 8]]), ROOM).unwrap();
    assert_eq!(errno(&short), libc::EINVAL);
    // A newer major gets our version back and no session.
    let init = InitIn {
        major: 8,
        minor: 0,
        ..Default::default()
    };
    let reply = call(
        &s,
        request(Opcode::Init as u32, 5, 0, &[init.as_bytes()]),
        ROOM,
    )
    .unwrap();
    let out: InitOut = decode(&ok(&reply, 5));
    assert_eq!(
        (out.major, out.minor, out.max_write),
        (7, KERNEL_MINOR_VERSION, 0)
    );
    assert!(
        calls(&s).is_empty(),
        "fs.init must not run for a rejected INIT"
    );
    assert_eq!(errno(&send(&s, Opcode::Lookup, 1, &[b"x\0"])), libc::EIO);
}

#[test]
fn requests_before_init_second_init_and_after_destroy_fail_with_eio() {
    let s = Server::new(MockFs::new());
    assert_eq!(errno(&send(&s, Opcode::Lookup, 1, &[b"x\0"])), libc::EIO);
    assert_eq!(errno(&send(&s, Opcode::Destroy, 0, &[])), libc::EIO);
    assert_eq!(
        errno(&call(&s, request(999, 1, 1, &[]), ROOM).unwrap()),
        libc::EIO
    );
    assert!(call(
        &s,
        request(
            Opcode::Forget as u32,
            1,
            5,
            &[ForgetIn { nlookup: 1 }.as_bytes()]
        ),
        ROOM
    )
    .unwrap()
    .is_empty());
    assert!(calls(&s).is_empty());

    ok(&call(&s, init_request(1, OFFERED), ROOM).unwrap(), 1);
    assert_eq!(
        errno(&call(&s, init_request(2, OFFERED), ROOM).unwrap()),
        libc::EIO
    );
    ok(&send(&s, Opcode::Lookup, 1, &[b"x\0"]), 42);

    assert!(ok(&send(&s, Opcode::Destroy, 0, &[]), 42).is_empty());
    assert_eq!(s.fs().destroyed.load(Ordering::SeqCst), 1);
    assert_eq!(s.negotiated_flags(), 0);
    assert_eq!(errno(&send(&s, Opcode::Lookup, 1, &[b"x\0"])), libc::EIO);
    assert_eq!(errno(&send(&s, Opcode::Destroy, 0, &[])), libc::EIO);
    assert_eq!(s.fs().destroyed.load(Ordering::SeqCst), 1);

    ok(&call(&s, init_request(3, OFFERED), ROOM).unwrap(), 3);
    ok(&send(&s, Opcode::Lookup, 1, &[b"x\0"]), 42);
}

#[test]
fn init_reply_that_does_not_fit_leaves_the_session_closed() {
    let s = Server::new(MockFs::new());
    let err = call(&s, init_request(1, OFFERED), 40).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ReplyTooLarge {
                needed: 80,
                available: 40
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.fs().destroyed.load(Ordering::SeqCst), 1);
    ok(&call(&s, init_request(2, OFFERED), ROOM).unwrap(), 2);
}

// ---- every dispatched opcode ----

#[test]
fn lookup_replies_with_the_entry() {
    let s = ready();
    let out: EntryOut = decode(&ok(&send(&s, Opcode::Lookup, 1, &[b"foo\0"]), 42));
    check_entry(&out, 100);
    assert_eq!(
        last_call(&s),
        format!("lookup {TEST_UID}/{TEST_GID}/{TEST_PID} 1 \"foo\"")
    );
}

#[test]
fn negative_lookup_encodes_nodeid_zero() {
    struct Neg;
    impl FileSystem for Neg {
        fn lookup(&self, _: Context, _: Inode, _: &CStr) -> io::Result<Entry> {
            Ok(Entry::negative(Duration::from_secs(4)))
        }
    }
    let s = Server::new(Neg);
    call(&s, init_request(1, 0), ROOM).unwrap();
    let reply = call(&s, request(Opcode::Lookup as u32, 2, 1, &[b"n\0"]), ROOM).unwrap();
    let out: EntryOut = decode(&ok(&reply, 2));
    assert_eq!((out.nodeid, out.entry_valid, out.attr_valid), (0, 4, 0));
    // Unimplemented methods answer ENOSYS through the trait defaults.
    let reply = call(
        &s,
        request(
            Opcode::Getattr as u32,
            3,
            1,
            &[GetattrIn::default().as_bytes()],
        ),
        ROOM,
    )
    .unwrap();
    assert_eq!(errno(&reply), libc::ENOSYS);
}

#[test]
fn forget_and_batch_forget_take_no_reply() {
    let s = ready();
    let r = call(
        &s,
        request(
            Opcode::Forget as u32,
            9,
            5,
            &[ForgetIn { nlookup: 3 }.as_bytes()],
        ),
        ROOM,
    );
    assert!(r.unwrap().is_empty());
    assert_eq!(last_call(&s), "forget 5 3");

    let batch = BatchForgetIn { count: 2, dummy: 0 };
    let one = ForgetOne {
        nodeid: 7,
        nlookup: 1,
    };
    let two = ForgetOne {
        nodeid: 8,
        nlookup: 2,
    };
    let req = request(
        Opcode::BatchForget as u32,
        9,
        0,
        &[batch.as_bytes(), one.as_bytes(), two.as_bytes()],
    );
    assert!(call(&s, req, ROOM).unwrap().is_empty());
    assert_eq!(last_call(&s), "batch_forget [(7, 1), (8, 2)]");

    let short = request(
        Opcode::BatchForget as u32,
        9,
        0,
        &[batch.as_bytes(), one.as_bytes()],
    );
    assert!(matches!(
        call(&s, short, ROOM),
        Err(Error::MalformedForget { unique: 9 })
    ));
    let empty = request(Opcode::Forget as u32, 9, 5, &[&[1, 2, 3]]);
    assert!(matches!(
        call(&s, empty, ROOM),
        Err(Error::MalformedForget { .. })
    ));
    let mut lying = request(
        Opcode::Forget as u32,
        9,
        5,
        &[ForgetIn { nlookup: 3 }.as_bytes()],
    );
    lying[0] = 200;
    assert!(matches!(
        call(&s, lying, ROOM),
        Err(Error::MalformedForget { .. })
    ));
    assert!(calls(&s).is_empty());
}

#[test]
fn getattr_passes_the_handle_only_with_getattr_fh() {
    let s = ready();
    let with = GetattrIn {
        getattr_flags: FUSE_GETATTR_FH,
        dummy: 0,
        fh: 12,
    };
    let out: AttrOut = decode(&ok(&send(&s, Opcode::Getattr, 5, &[with.as_bytes()]), 42));
    assert_eq!(
        (
            out.attr_valid,
            out.attr_valid_nsec,
            out.attr.ino,
            out.attr.size
        ),
        (2, 7, 5, 50)
    );
    assert_eq!(last_call(&s), "getattr 5 Some(12)");
    let without = GetattrIn {
        getattr_flags: 0,
        dummy: 0,
        fh: 12,
    };
    ok(&send(&s, Opcode::Getattr, 5, &[without.as_bytes()]), 42);
    assert_eq!(last_call(&s), "getattr 5 None");
    assert_eq!(
        errno(&send(&s, Opcode::Getattr, 5, &[&[0; 4]])),
        libc::EINVAL
    );
}

#[test]
fn setattr_decodes_every_fattr_bit() {
    let s = ready();
    let all = SetattrIn {
        valid: FATTR_MODE
            | FATTR_UID
            | FATTR_GID
            | FATTR_SIZE
            | FATTR_ATIME
            | FATTR_MTIME
            | FATTR_MTIME_NOW
            | FATTR_FH
            | FATTR_KILL_SUIDGID,
        fh: 33,
        size: 4096,
        atime: 111,
        atimensec: 222,
        mtime: 333,
        mode: 0o100600,
        uid: 10,
        gid: 20,
        ..Default::default()
    };
    let out: AttrOut = decode(&ok(&send(&s, Opcode::Setattr, 6, &[all.as_bytes()]), 42));
    assert_eq!(out.attr.ino, 6);
    let want = SetAttr {
        mode: Some(0o100600),
        uid: Some(10),
        gid: Some(20),
        size: Some(4096),
        atime: Some(SetTime::At {
            secs: 111,
            nsecs: 222,
        }),
        mtime: Some(SetTime::Now),
        kill_suidgid: true,
    };
    assert_eq!(last_call(&s), format!("setattr 6 {want:?} Some(33)"));

    let none = SetattrIn {
        fh: 33,
        mode: 0o777,
        atime: 1,
        ..Default::default()
    };
    ok(&send(&s, Opcode::Setattr, 6, &[none.as_bytes()]), 42);
    assert_eq!(
        last_call(&s),
        format!("setattr 6 {:?} None", SetAttr::default())
    );

    let now = SetattrIn {
        valid: FATTR_ATIME | FATTR_ATIME_NOW,
        ..Default::default()
    };
    ok(&send(&s, Opcode::Setattr, 6, &[now.as_bytes()]), 42);
    let want = SetAttr {
        atime: Some(SetTime::Now),
        ..Default::default()
    };
    assert_eq!(last_call(&s), format!("setattr 6 {want:?} None"));
    assert_eq!(
        errno(&send(&s, Opcode::Setattr, 6, &[&[0; 87]])),
        libc::EINVAL
    );
}

#[test]
fn readlink_returns_the_target_bytes() {
    let s = ready();
    assert_eq!(ok(&send(&s, Opcode::Readlink, 9, &[]), 42), b"../target");
    assert_eq!(last_call(&s), "readlink 9");
}

#[test]
fn symlink_parses_name_then_target() {
    let s = ready();
    let out: EntryOut = decode(&ok(
        &send(&s, Opcode::Symlink, 1, &[b"ln\0", b"a/b/c\0"]),
        42,
    ));
    check_entry(&out, 101);
    assert_eq!(last_call(&s), "symlink \"a/b/c\" 1 \"ln\"");

    assert_eq!(
        errno(&send(&s, Opcode::Symlink, 1, &[b"ln\0", b"\0"])),
        libc::EINVAL
    );
    assert_eq!(
        errno(&send(&s, Opcode::Symlink, 1, &[b"ln\0", b"abc"])),
        libc::EINVAL
    );
    assert_eq!(
        errno(&send(&s, Opcode::Symlink, 1, &[b"a/b\0", b"abc\0"])),
        libc::EINVAL
    );
    let mut long = vec![b'x'; 4096];
    long.push(0);
    assert_eq!(
        errno(&send(&s, Opcode::Symlink, 1, &[b"ln\0", &long])),
        libc::ENAMETOOLONG
    );
    assert!(calls(&s).is_empty());
    ok(&send(&s, Opcode::Symlink, 1, &[b"ln\0", &long[1..]]), 42);
}

#[test]
fn mknod_and_mkdir_pass_mode_and_umask() {
    let s = ready();
    let m = MknodIn {
        mode: libc::S_IFIFO | 0o666,
        rdev: 3,
        umask: 0o022,
        padding: 0,
    };
    let out: EntryOut = decode(&ok(
        &send(&s, Opcode::Mknod, 2, &[m.as_bytes(), b"fifo\0"]),
        42,
    ));
    check_entry(&out, 102);
    assert_eq!(last_call(&s), "mknod 2 \"fifo\" 10666 3 22");

    let d = MkdirIn {
        mode: 0o755,
        umask: 0o027,
    };
    let out: EntryOut = decode(&ok(
        &send(&s, Opcode::Mkdir, 2, &[d.as_bytes(), b"dir\0"]),
        42,
    ));
    check_entry(&out, 103);
    assert_eq!(last_call(&s), "mkdir 2 \"dir\" 755 27");
    assert_eq!(
        errno(&send(&s, Opcode::Mkdir, 2, &[d.as_bytes()])),
        libc::EINVAL
    );
}

#[test]
fn unlink_rmdir_rename_link() {
    let s = ready();
    assert!(ok(&send(&s, Opcode::Unlink, 3, &[b"f\0"]), 42).is_empty());
    assert_eq!(last_call(&s), "unlink 3 \"f\"");
    assert!(ok(&send(&s, Opcode::Rmdir, 3, &[b"d\0"]), 42).is_empty());
    assert_eq!(last_call(&s), "rmdir 3 \"d\"");

    let r = RenameIn { newdir: 4 };
    assert!(ok(
        &send(&s, Opcode::Rename, 3, &[r.as_bytes(), b"old\0new\0"]),
        42
    )
    .is_empty());
    assert_eq!(last_call(&s), "rename 3 \"old\" 4 \"new\" 0");
    let r2 = Rename2In {
        newdir: 5,
        flags: libc::RENAME_EXCHANGE,
        padding: 0,
    };
    assert!(ok(
        &send(&s, Opcode::Rename2, 3, &[r2.as_bytes(), b"a\0b\0"]),
        42
    )
    .is_empty());
    assert_eq!(
        last_call(&s),
        format!("rename 3 \"a\" 5 \"b\" {}", libc::RENAME_EXCHANGE)
    );
    assert_eq!(
        errno(&send(&s, Opcode::Rename, 3, &[r.as_bytes(), b"old\0"])),
        libc::EINVAL
    );
    assert_eq!(
        errno(&send(&s, Opcode::Rename2, 3, &[r2.as_bytes(), b"a\0..\0"])),
        libc::EINVAL
    );

    let l = LinkIn { oldnodeid: 77 };
    let out: EntryOut = decode(&ok(
        &send(&s, Opcode::Link, 3, &[l.as_bytes(), b"hard\0"]),
        42,
    ));
    check_entry(&out, 77);
    assert_eq!(last_call(&s), "link 77 3 \"hard\"");
}

#[test]
fn open_opendir_and_create() {
    let s = ready();
    let o = OpenIn {
        flags: libc::O_RDWR as u32,
        open_flags: 0,
    };
    let out: OpenOut = decode(&ok(&send(&s, Opcode::Open, 8, &[o.as_bytes()]), 42));
    assert_eq!(
        (out.fh, out.open_flags, out.backing_id),
        (77, FOPEN_KEEP_CACHE, 0)
    );
    assert_eq!(last_call(&s), "open 8 0o2 kill=false");

    let o = OpenIn {
        flags: (libc::O_RDWR | libc::O_TRUNC) as u32,
        open_flags: FUSE_OPEN_KILL_SUIDGID,
    };
    ok(&send(&s, Opcode::Open, 8, &[o.as_bytes()]), 42);
    assert_eq!(
        last_call(&s),
        format!("open 8 {:#o} kill=true", libc::O_RDWR | libc::O_TRUNC)
    );

    let o = OpenIn {
        flags: libc::O_RDONLY as u32 | libc::O_DIRECTORY as u32,
        open_flags: 0,
    };
    let out: OpenOut = decode(&ok(&send(&s, Opcode::Opendir, 8, &[o.as_bytes()]), 42));
    assert_eq!((out.fh, out.open_flags), (55, FOPEN_CACHE_DIR));
    assert_eq!(last_call(&s), format!("opendir 8 {:#o}", libc::O_DIRECTORY));

    let cr = CreateIn {
        flags: (libc::O_CREAT | libc::O_WRONLY) as u32,
        mode: 0o100644,
        umask: 0o022,
        open_flags: 0,
    };
    let payload = ok(&send(&s, Opcode::Create, 1, &[cr.as_bytes(), b"new\0"]), 42);
    assert_eq!(payload.len(), 128 + 16);
    check_entry(&decode(&payload[..128]), 104);
    let out: OpenOut = decode(&payload[128..]);
    assert_eq!((out.fh, out.open_flags), (78, FOPEN_DIRECT_IO));
    assert_eq!(
        last_call(&s),
        format!(
            "create 1 \"new\" 100644 {:#o} 22 kill=false",
            libc::O_CREAT | libc::O_WRONLY
        )
    );
}

fn read_in(fh: u64, offset: u64, size: u32) -> ReadIn {
    ReadIn {
        fh,
        offset,
        size,
        flags: libc::O_RDONLY as u32,
        ..Default::default()
    }
}

#[test]
fn read_fills_the_payload_from_the_file() {
    let s = ready();
    let payload = ok(
        &send(&s, Opcode::Read, 8, &[read_in(77, 10, 5).as_bytes()]),
        42,
    );
    assert_eq!(payload, b"abcde");
    assert_eq!(last_call(&s), "read 8 77 5 10 0o0");
    // Short at end of file.
    let payload = ok(
        &send(&s, Opcode::Read, 8, &[read_in(77, 30, 100).as_bytes()]),
        42,
    );
    assert_eq!(payload, &FILE_DATA[30..]);
}

#[test]
fn read_size_is_clamped_to_the_room_and_max_write() {
    let s = ready();
    let req = request(
        Opcode::Read as u32,
        7,
        8,
        &[read_in(77, 0, u32::MAX).as_bytes()],
    );
    let reply = call(&s, req, 16 + 4).unwrap();
    assert_eq!(ok(&reply, 7), b"0123");
    assert_eq!(last_call(&s), "read 8 77 4 0 0o0");
    send(&s, Opcode::Read, 8, &[read_in(77, 0, u32::MAX).as_bytes()]);
    assert_eq!(last_call(&s), format!("read 8 77 {} 0 0o0", 1 << 20));

    let req = request(Opcode::Read as u32, 7, 8, &[read_in(77, 0, 10).as_bytes()]);
    assert!(matches!(
        call(&s, req, 15),
        Err(Error::ReplyTooLarge {
            needed: 16,
            available: 15
        })
    ));
    assert_eq!(errno(&send(&s, Opcode::Read, 8, &[&[0; 39]])), libc::EINVAL);
}

#[test]
fn read_errors_become_error_replies() {
    let mut fs = MockFs::new();
    fs.fail_reads = true;
    let s = server_with(fs);
    assert_eq!(
        errno(&send(&s, Opcode::Read, 8, &[read_in(77, 0, 10).as_bytes()])),
        libc::EBADF
    );
}

fn write_in(size: u32, flags: u32) -> WriteIn {
    WriteIn {
        fh: 77,
        offset: 4,
        size,
        write_flags: flags,
        flags: libc::O_WRONLY as u32,
        ..Default::default()
    }
}

#[test]
fn write_passes_the_payload_through_the_reader() {
    let s = ready();
    let out: WriteOut = decode(&ok(
        &send(&s, Opcode::Write, 8, &[write_in(5, 0).as_bytes(), b"hello"]),
        42,
    ));
    assert_eq!(out.size, 5);
    assert_eq!(*s.fs().written.lock().unwrap(), b"hello");
    assert_eq!(last_call(&s), "write 8 77 5 4 false 0o1");

    ok(
        &send(
            &s,
            Opcode::Write,
            8,
            &[write_in(3, FUSE_WRITE_KILL_SUIDGID).as_bytes(), b"abc"],
        ),
        42,
    );
    assert_eq!(last_call(&s), "write 8 77 3 4 true 0o1");
}

#[test]
fn write_size_must_fit_the_payload_and_max_write() {
    let s = ready();
    assert_eq!(
        errno(&send(
            &s,
            Opcode::Write,
            8,
            &[write_in(6, 0).as_bytes(), b"hello"]
        )),
        libc::EINVAL
    );
    assert_eq!(
        errno(&send(&s, Opcode::Write, 8, &[&[0; 39]])),
        libc::EINVAL
    );
    let big = vec![7u8; (1 << 20) + 1];
    assert_eq!(
        errno(&send(
            &s,
            Opcode::Write,
            8,
            &[write_in(big.len() as u32, 0).as_bytes(), &big]
        )),
        libc::EINVAL
    );
    assert!(calls(&s).is_empty());
    let max = &big[..1 << 20];
    let out: WriteOut = decode(&ok(
        &send(
            &s,
            Opcode::Write,
            8,
            &[write_in(max.len() as u32, 0).as_bytes(), max],
        ),
        42,
    ));
    assert_eq!(out.size, 1 << 20);
}

#[test]
fn flush_release_fsync_statfs_access() {
    let s = ready();
    let f = FlushIn {
        fh: 77,
        lock_owner: 0xabc,
        ..Default::default()
    };
    assert!(ok(&send(&s, Opcode::Flush, 8, &[f.as_bytes()]), 42).is_empty());
    assert_eq!(last_call(&s), format!("flush 8 77 {}", 0xabc));

    let r = ReleaseIn {
        fh: 77,
        flags: 2,
        release_flags: FUSE_RELEASE_FLUSH | FUSE_RELEASE_FLOCK_UNLOCK,
        lock_owner: 99,
    };
    assert!(ok(&send(&s, Opcode::Release, 8, &[r.as_bytes()]), 42).is_empty());
    assert_eq!(last_call(&s), "release 8 0o2 77 true Some(99)");
    let r = ReleaseIn {
        fh: 77,
        flags: 0,
        release_flags: 0,
        lock_owner: 99,
    };
    ok(&send(&s, Opcode::Release, 8, &[r.as_bytes()]), 42);
    assert_eq!(last_call(&s), "release 8 0o0 77 false None");
    ok(&send(&s, Opcode::Releasedir, 8, &[r.as_bytes()]), 42);
    assert_eq!(last_call(&s), "releasedir 8 0o0 77");

    let y = FsyncIn {
        fh: 77,
        fsync_flags: FUSE_FSYNC_FDATASYNC,
        padding: 0,
    };
    assert!(ok(&send(&s, Opcode::Fsync, 8, &[y.as_bytes()]), 42).is_empty());
    assert_eq!(last_call(&s), "fsync 8 true 77");
    let y = FsyncIn {
        fh: 55,
        fsync_flags: 0,
        padding: 0,
    };
    ok(&send(&s, Opcode::Fsyncdir, 8, &[y.as_bytes()]), 42);
    assert_eq!(last_call(&s), "fsyncdir 8 false 55");

    let out: StatfsOut = decode(&ok(&send(&s, Opcode::Statfs, 1, &[]), 42));
    let st = out.st;
    assert_eq!(
        (st.blocks, st.bfree, st.bavail, st.files, st.ffree),
        (1000, 500, 400, 300, 200)
    );
    assert_eq!((st.bsize, st.frsize, st.namelen), (4096, 512, 255));
    assert_eq!(last_call(&s), "statfs 1");

    let a = AccessIn {
        mask: libc::R_OK as u32 | libc::W_OK as u32,
        padding: 0,
    };
    assert!(ok(&send(&s, Opcode::Access, 8, &[a.as_bytes()]), 42).is_empty());
    assert_eq!(last_call(&s), "access 8 6");
    for op in [
        Opcode::Flush,
        Opcode::Release,
        Opcode::Fsync,
        Opcode::Access,
    ] {
        assert_eq!(errno(&send(&s, op, 8, &[&[1]])), libc::EINVAL, "{op:?}");
    }
}

/// Decodes READDIR(PLUS) entries, checking alignment and zero padding.
fn parse_dirents(mut buf: &[u8], plus: bool) -> Vec<(Option<EntryOut>, Dirent, Vec<u8>)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (entry, rest) = if plus {
            let (e, rest) = EntryOut::from_prefix(buf).expect("entry_out");
            (Some(e), rest)
        } else {
            (None, buf)
        };
        let (d, rest) = Dirent::from_prefix(rest).expect("dirent");
        let name = rest[..d.namelen as usize].to_vec();
        let fixed = if plus { 152 } else { 24 };
        let total = abi::dirent_align(fixed + d.namelen as usize);
        assert!(buf.len() >= total, "entry overruns the reply");
        assert!(
            buf[fixed + d.namelen as usize..total]
                .iter()
                .all(|&b| b == 0),
            "padding is zero"
        );
        out.push((entry, d, name));
        buf = &buf[total..];
    }
    out
}

#[test]
fn readdir_packs_aligned_entries() {
    let s = ready();
    let payload = ok(
        &send(&s, Opcode::Readdir, 1, &[read_in(55, 0, 4096).as_bytes()]),
        42,
    );
    let entries = parse_dirents(&payload, false);
    let names: Vec<&[u8]> = entries.iter().map(|e| &e.2[..]).collect();
    assert_eq!(names, DIR.iter().map(|d| d.0).collect::<Vec<_>>());
    assert_eq!(payload.len() % 8, 0);
    let (_, d, _) = &entries[3];
    assert_eq!((d.ino, d.off, d.typ), (13, 4, libc::DT_REG as u32));
    assert_eq!(last_call(&s), "readdir 1 55 4096 0");

    // Room for exactly two entries (".": 32 bytes, "..": 32 bytes).
    let payload = ok(
        &send(&s, Opcode::Readdir, 1, &[read_in(55, 0, 64).as_bytes()]),
        42,
    );
    assert_eq!(parse_dirents(&payload, false).len(), 2);
    let payload = ok(
        &send(&s, Opcode::Readdir, 1, &[read_in(55, 0, 63).as_bytes()]),
        42,
    );
    assert_eq!(parse_dirents(&payload, false).len(), 1);
    // Continue from an offset; the writer's room bounds the reply too.
    let req = request(
        Opcode::Readdir as u32,
        5,
        1,
        &[read_in(55, 3, 4096).as_bytes()],
    );
    let payload = ok(&call(&s, req, 16 + 40).unwrap(), 5);
    let entries = parse_dirents(&payload, false);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2, b"longer-name.txt");
    // End of directory: empty reply.
    assert!(ok(
        &send(&s, Opcode::Readdir, 1, &[read_in(55, 5, 4096).as_bytes()]),
        42
    )
    .is_empty());
}

#[test]
fn readdirplus_carries_entries() {
    let s = ready();
    let payload = ok(
        &send(
            &s,
            Opcode::Readdirplus,
            1,
            &[read_in(55, 0, 4096).as_bytes()],
        ),
        42,
    );
    let entries = parse_dirents(&payload, true);
    assert_eq!(entries.len(), DIR.len());
    assert_eq!(entries[0].0.unwrap().nodeid, 0);
    assert_eq!(entries[0].1.ino, 10);
    check_entry(&entries[2].0.unwrap(), 12);
    assert_eq!(entries[4].2, b"sub");
    assert_eq!(last_call(&s), "readdirplus 1 55 4096 0");
    let payload = ok(
        &send(
            &s,
            Opcode::Readdirplus,
            1,
            &[read_in(55, 0, 160).as_bytes()],
        ),
        42,
    );
    assert_eq!(parse_dirents(&payload, true).len(), 1);
}

#[test]
fn readdir_rejects_bad_names_from_the_filesystem() {
    struct BadDir;
    impl FileSystem for BadDir {
        fn readdir(
            &self,
            _: Context,
            _: Inode,
            _: Handle,
            _: u32,
            _: u64,
            add: &mut AddDirEntry<'_>,
        ) -> io::Result<()> {
            add(DirEntry {
                inode: 1,
                offset: 1,
                file_type: 0,
                name: b"a/b",
            })?;
            Ok(())
        }
    }
    let s = Server::new(BadDir);
    call(&s, init_request(1, 0), ROOM).unwrap();
    let reply = call(
        &s,
        request(
            Opcode::Readdir as u32,
            2,
            1,
            &[read_in(1, 0, 4096).as_bytes()],
        ),
        ROOM,
    )
    .unwrap();
    assert_eq!(errno(&reply), libc::EIO);
}

// ---- malformed input ----

#[test]
fn truncated_header_is_an_error_without_reply() {
    let s = ready();
    let req = request(Opcode::Lookup as u32, 1, 1, &[b"x\0"]);
    for len in [0, 1, 39] {
        let r = call(&s, req[..len].to_vec(), ROOM);
        assert!(matches!(r, Err(Error::TruncatedHeader { available }) if available == len));
    }
}

#[test]
fn header_len_must_match_the_bytes_present() {
    let s = ready();
    let req = request(Opcode::Lookup as u32, 1, 1, &[b"name\0"]);
    for bad_len in [
        0u32,
        39,
        40,
        req.len() as u32 - 1,
        req.len() as u32 + 1,
        u32::MAX,
    ] {
        let mut r = req.clone();
        r[..4].copy_from_slice(&bad_len.to_ne_bytes());
        let reply = call(&s, r, ROOM).unwrap();
        assert_eq!(errno(&reply), libc::EINVAL, "len {bad_len}");
        assert_eq!(parse_reply(&reply).unwrap().0.unique, 1);
    }
    let mut ext = req.clone();
    ext[36] = 10; // total_extlen beyond the arguments
    assert_eq!(errno(&call(&s, ext, ROOM).unwrap()), libc::EINVAL);
    assert!(calls(&s).is_empty());
}

#[test]
fn extensions_are_skipped() {
    let s = ready();
    let mut req = request(Opcode::Lookup as u32, 1, 1, &[b"name\0", &[0xff; 8]]);
    req[36] = 1;
    ok(&call(&s, req, ROOM).unwrap(), 1);
    assert_eq!(
        last_call(&s),
        format!("lookup {TEST_UID}/{TEST_GID}/{TEST_PID} 1 \"name\"")
    );
}

#[test]
fn bad_names_are_rejected() {
    let s = ready();
    let cases: &[(&[u8], i32)] = &[
        (b"noterminator", libc::EINVAL),
        (b"", libc::EINVAL),
        (b"\0", libc::EINVAL),
        (b"a/b\0", libc::EINVAL),
        (b"/\0", libc::EINVAL),
        (b".\0", libc::EINVAL),
        (b"..\0", libc::EINVAL),
    ];
    for (name, want) in cases {
        for op in [Opcode::Lookup, Opcode::Unlink, Opcode::Rmdir] {
            assert_eq!(errno(&send(&s, op, 1, &[name])), *want, "{op:?} {name:?}");
        }
        let m = MkdirIn::default();
        assert_eq!(
            errno(&send(&s, Opcode::Mkdir, 1, &[m.as_bytes(), name])),
            *want
        );
        let cr = CreateIn::default();
        assert_eq!(
            errno(&send(&s, Opcode::Create, 1, &[cr.as_bytes(), name])),
            *want
        );
    }
    let mut long = vec![b'n'; 256];
    long.push(0);
    assert_eq!(
        errno(&send(&s, Opcode::Lookup, 1, &[&long])),
        libc::ENAMETOOLONG
    );
    let l = LinkIn { oldnodeid: 2 };
    assert_eq!(
        errno(&send(&s, Opcode::Link, 1, &[l.as_bytes(), &long])),
        libc::ENAMETOOLONG
    );
    assert!(calls(&s).is_empty());
    ok(&send(&s, Opcode::Lookup, 1, &[&long[1..]]), 42);
    assert_eq!(errno(&send(&s, Opcode::Lookup, 1, &[b"..."])), libc::EINVAL);
    ok(&send(&s, Opcode::Lookup, 1, &[b"...\0"]), 42);
    ok(&send(&s, Opcode::Lookup, 1, &[b".x\0"]), 42);
}

#[test]
fn unknown_and_unimplemented_opcodes_answer_enosys() {
    let s = ready();
    for op in [0u32, 7, 19, 53, 4096, u32::MAX] {
        assert_eq!(
            errno(&call(&s, request(op, 3, 1, &[&[0; 16]]), ROOM).unwrap()),
            libc::ENOSYS,
            "{op}"
        );
    }
    for op in [
        Opcode::Setxattr,
        Opcode::Getxattr,
        Opcode::Listxattr,
        Opcode::Removexattr,
        Opcode::Getlk,
        Opcode::Setlk,
        Opcode::Setlkw,
        Opcode::Interrupt,
        Opcode::Bmap,
        Opcode::Ioctl,
        Opcode::Poll,
        Opcode::NotifyReply,
        Opcode::Fallocate,
        Opcode::Lseek,
        Opcode::CopyFileRange,
        Opcode::Setupmapping,
        Opcode::Removemapping,
        Opcode::Syncfs,
        Opcode::Tmpfile,
        Opcode::Statx,
    ] {
        assert_eq!(errno(&send(&s, op, 1, &[&[0; 64]])), libc::ENOSYS, "{op:?}");
    }
    assert!(calls(&s).is_empty());
}

#[test]
fn errnos_are_mapped_and_clamped() {
    let s = ready();
    assert_eq!(
        errno(&send(&s, Opcode::Lookup, 1, &[b"enoent\0"])),
        libc::ENOENT
    );
    for name in ["custom", "zero", "negative", "huge"] {
        let arg = format!("{name}\0");
        assert_eq!(
            errno(&send(&s, Opcode::Lookup, 1, &[arg.as_bytes()])),
            libc::EIO,
            "{name}"
        );
    }
    assert_eq!(errno_of(&io::Error::from_raw_os_error(4095)), 4095);
    assert_eq!(errno_of(&io::Error::from_raw_os_error(4096)), libc::EIO);
}

#[test]
fn reply_that_does_not_fit_is_an_error() {
    let s = ready();
    let req = request(Opcode::Lookup as u32, 1, 1, &[b"x\0"]);
    assert!(matches!(
        call(&s, req.clone(), 100),
        Err(Error::ReplyTooLarge {
            needed: 144,
            available: 100
        })
    ));
    assert!(matches!(
        call(&s, req, 0),
        Err(Error::ReplyTooLarge {
            needed: 144,
            available: 0
        })
    ));
    let bad = request(999, 1, 1, &[]);
    assert!(matches!(
        call(&s, bad, 15),
        Err(Error::ReplyTooLarge { .. })
    ));
}

// ---- robustness ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_input_never_panics() {
    let fresh = Server::new(MockFs::new());
    let s = ready();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..20_000u32 {
        let len = rng.below(400) as usize;
        let mut req: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 40 && rng.below(4) != 0 {
            // Mostly well-formed headers, so the argument decoders are exercised too.
            req[..4].copy_from_slice(&(len as u32).to_ne_bytes());
            let op = rng.below(60) as u32;
            req[4..8].copy_from_slice(&op.to_ne_bytes());
            req[36..38].copy_from_slice(&(rng.below(3) as u16).to_ne_bytes());
            if op == Opcode::Init as u32 {
                continue; // would end the session on the shared server
            }
            if op == Opcode::Destroy as u32 && rng.below(2) == 0 {
                continue;
            }
        }
        let room = [0usize, 15, 16, 100, 4096, ROOM][rng.below(6) as usize];
        let server = if i % 2 == 0 { &s } else { &fresh };
        if let Ok(reply) = call(server, req, room) {
            if !reply.is_empty() {
                let (h, _) = parse_reply(&reply).expect("replies start with a header");
                assert_eq!(h.len as usize, reply.len());
                assert!(h.error <= 0 && h.error >= -MAX_ERRNO);
            }
        }
        if !s.ready.load(Ordering::Acquire) {
            call(&s, init_request(1, OFFERED), ROOM).unwrap();
        }
    }
}

#[test]
fn mutated_valid_requests_never_panic() {
    let s = ready();
    let mut rng = XorShift(12345);
    let seeds: Vec<Vec<u8>> = vec![
        request(Opcode::Lookup as u32, 1, 1, &[b"foo\0"]),
        request(Opcode::Symlink as u32, 1, 1, &[b"ln\0t\0"]),
        request(
            Opcode::Rename2 as u32,
            1,
            1,
            &[Rename2In::default().as_bytes(), b"a\0b\0"],
        ),
        request(
            Opcode::Write as u32,
            1,
            1,
            &[write_in(3, 0).as_bytes(), b"abc"],
        ),
        request(Opcode::Read as u32, 1, 1, &[read_in(1, 0, 10).as_bytes()]),
        request(
            Opcode::Readdirplus as u32,
            1,
            1,
            &[read_in(1, 0, 500).as_bytes()],
        ),
        request(
            Opcode::BatchForget as u32,
            1,
            1,
            &[
                BatchForgetIn { count: 1, dummy: 0 }.as_bytes(),
                ForgetOne::default().as_bytes(),
            ],
        ),
        request(
            Opcode::Setattr as u32,
            1,
            1,
            &[SetattrIn::default().as_bytes()],
        ),
    ];
    for _ in 0..20_000 {
        let mut req = seeds[rng.below(seeds.len() as u64) as usize].clone();
        for _ in 0..=rng.below(4) {
            let at = 40 + rng.below(req.len() as u64 - 40) as usize;
            req[at] = rng.next() as u8;
        }
        if rng.below(8) == 0 {
            let cut = rng.below(req.len() as u64) as usize;
            req.truncate(cut);
        }
        let _ = call(&s, req, [16usize, 200, ROOM][rng.below(3) as usize]);
    }
}

#[test]
fn server_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server<MockFs>>();
    let s = std::sync::Arc::new(ready());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let unique = t * 1000 + i;
                    let reply = call(
                        &s,
                        request(Opcode::Lookup as u32, unique, 1, &[b"x\0"]),
                        ROOM,
                    )
                    .unwrap();
                    ok(&reply, unique);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    assert_eq!(calls(&s).len(), 800);
}

#[test]
fn errors_convert_to_io_errors() {
    let e: io::Error = Error::ReplyTooLarge {
        needed: 2,
        available: 1,
    }
    .into();
    assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    let e: io::Error = Error::TruncatedHeader { available: 3 }.into();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("3 bytes"));
    let e: io::Error = Error::Io(io::Error::from_raw_os_error(libc::EFAULT)).into();
    assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
}
