use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use virtiofsd_policy::{IdMapping, IdRule, IdRuleKind};

use super::*;
use crate::filesystem::{AddDirEntry, AddDirEntryPlus, Handle, Inode, OpenOptions};
use crate::filesystem::{FileLock, LockRequest, SecurityContext, XattrReply, FORBIDDEN_ID};
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
    /// The context of every call that records one, in order.
    seen: Mutex<Vec<Context>>,
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
            seen: Mutex::new(Vec::new()),
        }
    }

    fn rec(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    fn saw(&self, ctx: &Context) {
        self.seen.lock().unwrap().push(ctx.clone());
    }
}

fn c(ctx: &Context) -> String {
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
        self.rec(format!("lookup {} {parent} {name:?}", c(&ctx)));
        self.saw(&ctx);
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
        ctx: Context,
        inode: Inode,
        attr: SetAttr,
        handle: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.rec(format!("setattr {inode} {attr:?} {handle:?}"));
        self.saw(&ctx);
        Ok((stat(inode), Duration::from_secs(1)))
    }
    fn readlink(&self, _ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        self.rec(format!("readlink {inode}"));
        Ok(b"../target".to_vec())
    }
    fn symlink(
        &self,
        ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.rec(format!("symlink {target:?} {parent} {name:?}"));
        self.saw(&ctx);
        Ok(entry(101))
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
        self.rec(format!("mknod {parent} {name:?} {mode:o} {rdev} {umask:o}"));
        self.saw(&ctx);
        Ok(entry(102))
    }
    fn mkdir(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.rec(format!("mkdir {parent} {name:?} {mode:o} {umask:o}"));
        self.saw(&ctx);
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
        ctx: Context,
        inode: Inode,
        new_parent: Inode,
        new_name: &CStr,
    ) -> io::Result<Entry> {
        self.rec(format!("link {inode} {new_parent} {new_name:?}"));
        self.saw(&ctx);
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
        ctx: Context,
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
        self.saw(&ctx);
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
    fn getxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.rec(format!("getxattr {inode} {name:?} {size}"));
        self.saw(&ctx);
        xattr_answer(name.to_bytes())
    }
    fn listxattr(&self, _ctx: Context, inode: Inode, size: u32) -> io::Result<XattrReply> {
        self.rec(format!("listxattr {inode} {size}"));
        match inode {
            3 => Ok(XattrReply::Data(b"user.a\0\0".to_vec())),
            4 => Ok(XattrReply::Data(b"user.a".to_vec())),
            _ => Ok(XattrReply::Data(b"user.a\0user.bb\0".to_vec())),
        }
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
        self.rec(format!(
            "setxattr {inode} {name:?} {value:?} {flags} {setxattr_flags}"
        ));
        self.saw(&ctx);
        Ok(())
    }
    fn removexattr(&self, _ctx: Context, inode: Inode, name: &CStr) -> io::Result<()> {
        self.rec(format!("removexattr {inode} {name:?}"));
        Ok(())
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
        self.rec(format!(
            "fallocate {inode} {handle} {mode} {offset} {length}"
        ));
        Ok(())
    }
    fn lseek(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.rec(format!("lseek {inode} {handle} {offset} {whence}"));
        Ok(offset + 1000)
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
        self.rec(format!(
            "copy_file_range {inode_in} {handle_in} {offset_in} {inode_out} {handle_out} \
             {offset_out} {length} {flags}"
        ));
        Ok(length as usize + 7)
    }
    fn syncfs(&self, ctx: Context, inode: Inode) -> io::Result<()> {
        self.rec(format!("syncfs {} {inode}", c(&ctx)));
        Ok(())
    }
    fn getlk(&self, _ctx: Context, inode: Inode, request: LockRequest) -> io::Result<FileLock> {
        self.rec(format!("getlk {inode} {request:?}"));
        Ok(FileLock {
            start: 10,
            end: 20,
            lock_type: if inode == 66 {
                77
            } else {
                libc::F_WRLCK as u32
            },
            pid: 99,
        })
    }
    fn setlk(
        &self,
        _ctx: Context,
        inode: Inode,
        request: LockRequest,
        wait: bool,
    ) -> io::Result<()> {
        self.rec(format!("setlk {inode} {request:?} wait={wait}"));
        Ok(())
    }
    fn tmpfile(
        &self,
        ctx: Context,
        parent: Inode,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions)> {
        self.rec(format!(
            "tmpfile {parent} {mode:o} {flags:#o} {umask:o} {:?}",
            ctx.supplementary_gid
        ));
        self.saw(&ctx);
        Ok((entry(105), Some(79), abi::FOPEN_KEEP_CACHE))
    }
    fn statx(
        &self,
        _ctx: Context,
        inode: Inode,
        handle: Option<Handle>,
        flags: u32,
        mask: u32,
    ) -> io::Result<(libc::statx, Duration)> {
        self.rec(format!("statx {inode} {handle:?} {flags:#x} {mask:#x}"));
        // SAFETY: `statx` is plain old data; all-zero is a valid value.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        st.stx_mask = mask;
        st.stx_ino = inode;
        st.stx_mode = 0o100640;
        st.stx_size = 12345;
        st.stx_btime.tv_sec = 77;
        st.stx_btime.tv_nsec = 88;
        st.stx_dev_major = 8;
        st.stx_rdev_minor = 3;
        // Host ids inside the test policy's map rules (guest 1005 and 1001).
        st.stx_uid = 100_005;
        st.stx_gid = 200_001;
        Ok((st, Duration::new(4, 9)))
    }
}

/// GETXATTR answers by name: "user.size" answers with a size even when bytes were asked for,
/// "user.big" with 100 bytes, anything else with "value".
fn xattr_answer(name: &[u8]) -> io::Result<XattrReply> {
    match name {
        b"user.size" => Ok(XattrReply::Size(5)),
        b"user.huge-size" => Ok(XattrReply::Size(1 << 20)),
        b"user.big" => Ok(XattrReply::Data(vec![b'b'; 100])),
        b"user.missing" => Err(io::Error::from_raw_os_error(libc::ENODATA)),
        b"system.posix_acl_access" => Ok(XattrReply::Data(host_acl())),
        b"system.posix_acl_default" => Ok(XattrReply::Data(b"not an ACL".to_vec())),
        _ => Ok(XattrReply::Data(b"value".to_vec())),
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
fn requests_before_init_and_after_destroy_fail_with_eio_and_a_second_init_starts_over() {
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
    // A second INIT is a guest kernel mounting again after resetting the device without a
    // DESTROY (a reboot in the same VM): the old session is dropped and a new one starts.
    ok(&call(&s, init_request(2, OFFERED), ROOM).unwrap(), 2);
    assert_eq!(s.fs().destroyed.load(Ordering::SeqCst), 1);
    ok(&send(&s, Opcode::Lookup, 1, &[b"x\0"]), 42);

    assert!(ok(&send(&s, Opcode::Destroy, 0, &[]), 42).is_empty());
    assert_eq!(s.fs().destroyed.load(Ordering::SeqCst), 2);
    assert_eq!(s.negotiated_flags(), 0);
    assert_eq!(errno(&send(&s, Opcode::Lookup, 1, &[b"x\0"])), libc::EIO);
    assert_eq!(errno(&send(&s, Opcode::Destroy, 0, &[])), libc::EIO);
    assert_eq!(s.fs().destroyed.load(Ordering::SeqCst), 2);

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
        Opcode::Bmap,
        Opcode::Ioctl,
        Opcode::Poll,
        Opcode::NotifyReply,
        Opcode::Setupmapping,
        Opcode::Removemapping,
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
    let s = ready_with(FUSE_CREATE_SUPP_GROUP | FUSE_SETXATTR_EXT);
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
        request(
            Opcode::Setxattr as u32,
            1,
            1,
            &[
                SetxattrInCompat { size: 2, flags: 0 }.as_bytes(),
                b"user.a\0xy",
            ],
        ),
        request(
            Opcode::Getxattr as u32,
            1,
            1,
            &[GetxattrIn::default().as_bytes(), b"user.a\0"],
        ),
        request(Opcode::Setlkw as u32, 1, 1, &[LkIn::default().as_bytes()]),
        request(
            Opcode::CopyFileRange as u32,
            1,
            1,
            &[CopyFileRangeIn::default().as_bytes()],
        ),
        request(Opcode::Statx as u32, 1, 1, &[StatxIn::default().as_bytes()]),
        {
            let mut r = request(
                Opcode::Tmpfile as u32,
                1,
                1,
                &[
                    CreateIn::default().as_bytes(),
                    b"/\0",
                    &[16, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0],
                ],
            );
            r[36] = 2;
            r
        },
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

// ---- extended attributes, locks and the remaining operations ----

/// A ready server whose filesystem asked for `wants`, offered by the kernel too.
fn ready_with(wants: u64) -> Server<MockFs> {
    let mut fs = MockFs::new();
    fs.wants = wants;
    let s = Server::new(fs);
    ok(
        &call(&s, init_request(1, OFFERED | wants), ROOM).unwrap(),
        1,
    );
    assert_eq!(s.negotiated_flags() & wants, wants);
    calls(&s);
    s
}

fn getxattr_in(size: u32) -> GetxattrIn {
    GetxattrIn { size, padding: 0 }
}

#[test]
fn init_passes_lock_xattr_and_group_flags_through() {
    let wants = FUSE_POSIX_LOCKS
        | FUSE_FLOCK_LOCKS
        | FUSE_SETXATTR_EXT
        | FUSE_CREATE_SUPP_GROUP
        | FUSE_HANDLE_KILLPRIV_V2
        | FUSE_POSIX_ACL;
    let s = ready_with(wants);
    assert_eq!(s.negotiated_flags() & wants, wants);
    // Security labels are the filesystem's choice: agreed when it asks, not otherwise.
    let s = ready_with(FUSE_SECURITY_CTX);
    assert_ne!(s.negotiated_flags() & FUSE_SECURITY_CTX, 0);
    let s = Server::new(MockFs::new());
    ok(
        &call(&s, init_request(1, OFFERED | FUSE_SECURITY_CTX), ROOM).unwrap(),
        1,
    );
    assert_eq!(s.negotiated_flags() & FUSE_SECURITY_CTX, 0);
}

#[test]
fn getxattr_size_query_and_value() {
    let s = ready();
    let out: GetxattrOut = decode(&ok(
        &send(
            &s,
            Opcode::Getxattr,
            5,
            &[getxattr_in(0).as_bytes(), b"user.x\0"],
        ),
        42,
    ));
    assert_eq!(out.size, 5);
    assert_eq!(last_call(&s), "getxattr 5 \"user.x\" 0");
    let v = ok(
        &send(
            &s,
            Opcode::Getxattr,
            5,
            &[getxattr_in(64).as_bytes(), b"user.x\0"],
        ),
        42,
    );
    assert_eq!(v, b"value");
    // The guest's buffer is too small for the value.
    let r = send(
        &s,
        Opcode::Getxattr,
        5,
        &[getxattr_in(10).as_bytes(), b"user.big\0"],
    );
    assert_eq!(errno(&r), libc::ERANGE);
    // A filesystem that answers a size to a data request: bytes expected, none given.
    let r = send(
        &s,
        Opcode::Getxattr,
        5,
        &[getxattr_in(10).as_bytes(), b"user.size\0"],
    );
    assert_eq!(errno(&r), libc::EIO);
    let r = send(
        &s,
        Opcode::Getxattr,
        5,
        &[getxattr_in(10).as_bytes(), b"user.huge-size\0"],
    );
    assert_eq!(errno(&r), libc::ERANGE);
    let out: GetxattrOut = decode(&ok(
        &send(
            &s,
            Opcode::Getxattr,
            5,
            &[getxattr_in(0).as_bytes(), b"user.size\0"],
        ),
        42,
    ));
    assert_eq!(out.size, 5);
    let r = send(
        &s,
        Opcode::Getxattr,
        5,
        &[getxattr_in(10).as_bytes(), b"user.missing\0"],
    );
    assert_eq!(errno(&r), libc::ENODATA);
    // Oversized buffers are clamped to XATTR_SIZE_MAX, as getxattr(2) does.
    calls(&s);
    ok(
        &send(
            &s,
            Opcode::Getxattr,
            5,
            &[getxattr_in(u32::MAX).as_bytes(), b"a\0"],
        ),
        42,
    );
    assert_eq!(last_call(&s), "getxattr 5 \"a\" 65536");
}

#[test]
fn xattr_names_are_validated() {
    let s = ready();
    let mut long = vec![b'u'; 256];
    long.push(0);
    let g = getxattr_in(0);
    let cases: &[(&[u8], i32)] = &[
        (b"\0", libc::ERANGE),
        (&long, libc::ERANGE),
        (b"user.unterminated", libc::EINVAL),
        (b"", libc::EINVAL),
    ];
    for (name, want) in cases {
        let r = send(&s, Opcode::Getxattr, 1, &[g.as_bytes(), name]);
        assert_eq!(errno(&r), *want, "getxattr {name:?}");
        let r = send(&s, Opcode::Removexattr, 1, &[name]);
        assert_eq!(errno(&r), *want, "removexattr {name:?}");
        let x = SetxattrInCompat { size: 0, flags: 0 };
        let r = send(&s, Opcode::Setxattr, 1, &[x.as_bytes(), name]);
        assert_eq!(errno(&r), *want, "setxattr {name:?}");
    }
    assert!(calls(&s).is_empty());
    // 255 bytes is the limit, and names may contain any byte but NUL.
    ok(&send(&s, Opcode::Removexattr, 1, &[&long[1..]]), 42);
    ok(&send(&s, Opcode::Removexattr, 1, &[b"user.a/b c\0"]), 42);
    assert_eq!(calls(&s).len(), 2);
    // Truncated GETXATTR arguments.
    assert_eq!(
        errno(&send(&s, Opcode::Getxattr, 1, &[&[0; 4]])),
        libc::EINVAL
    );
    assert_eq!(
        errno(&send(&s, Opcode::Listxattr, 1, &[&[0; 7]])),
        libc::EINVAL
    );
}

#[test]
fn listxattr_checks_the_list_shape() {
    let s = ready();
    let out: GetxattrOut = decode(&ok(
        &send(&s, Opcode::Listxattr, 2, &[getxattr_in(0).as_bytes()]),
        42,
    ));
    assert_eq!(out.size, 15);
    assert_eq!(last_call(&s), "listxattr 2 0");
    let list = ok(
        &send(&s, Opcode::Listxattr, 2, &[getxattr_in(100).as_bytes()]),
        42,
    );
    assert_eq!(list, b"user.a\0user.bb\0");
    assert_eq!(
        errno(&send(
            &s,
            Opcode::Listxattr,
            2,
            &[getxattr_in(10).as_bytes()]
        )),
        libc::ERANGE
    );
    // An empty name, or a list without its final NUL, is the filesystem's bug: EIO.
    for node in [3, 4] {
        let r = send(&s, Opcode::Listxattr, node, &[getxattr_in(100).as_bytes()]);
        assert_eq!(errno(&r), libc::EIO, "node {node}");
    }
}

#[test]
fn setxattr_compat_and_ext_layouts() {
    let s = ready();
    let x = SetxattrInCompat {
        size: 3,
        flags: libc::XATTR_CREATE as u32,
    };
    ok(
        &send(
            &s,
            Opcode::Setxattr,
            9,
            &[x.as_bytes(), b"user.k\0", b"abc"],
        ),
        42,
    );
    assert_eq!(
        last_call(&s),
        format!(
            "setxattr 9 \"user.k\" [97, 98, 99] {} 0",
            libc::XATTR_CREATE
        )
    );
    // Value shorter than announced.
    let r = send(&s, Opcode::Setxattr, 9, &[x.as_bytes(), b"user.k\0", b"ab"]);
    assert_eq!(errno(&r), libc::EINVAL);
    // Value over XATTR_SIZE_MAX.
    let big = SetxattrInCompat {
        size: 64 * 1024 + 1,
        flags: 0,
    };
    let r = send(
        &s,
        Opcode::Setxattr,
        9,
        &[big.as_bytes(), b"user.k\0", &[1; 16]],
    );
    assert_eq!(errno(&r), libc::E2BIG);
    assert!(calls(&s).is_empty());

    let s = ready_with(FUSE_SETXATTR_EXT);
    let x = SetxattrIn {
        size: 2,
        flags: libc::XATTR_REPLACE as u32,
        setxattr_flags: FUSE_SETXATTR_ACL_KILL_SGID,
        padding: 0,
    };
    ok(
        &send(
            &s,
            Opcode::Setxattr,
            9,
            &[x.as_bytes(), b"system.posix_acl_access\0", b"xy"],
        ),
        42,
    );
    assert_eq!(
        last_call(&s),
        format!(
            "setxattr 9 \"system.posix_acl_access\" [120, 121] {} 1",
            libc::XATTR_REPLACE
        )
    );
    // With the long layout agreed, 8 bytes of arguments are too few.
    let short = SetxattrInCompat { size: 0, flags: 0 };
    assert_eq!(
        errno(&send(&s, Opcode::Setxattr, 9, &[short.as_bytes()])),
        libc::EINVAL
    );
}

#[test]
fn fallocate_lseek_copy_file_range_syncfs() {
    let s = ready();
    let f = FallocateIn {
        fh: 3,
        offset: 4096,
        length: 8192,
        mode: libc::FALLOC_FL_KEEP_SIZE as u32,
        padding: 0,
    };
    ok(&send(&s, Opcode::Fallocate, 7, &[f.as_bytes()]), 42);
    assert_eq!(last_call(&s), "fallocate 7 3 1 4096 8192");
    for (offset, length, want) in [
        (0, 0, libc::EINVAL),
        (u64::MAX, 1, libc::EINVAL),
        (0, u64::MAX, libc::EINVAL),
        (i64::MAX as u64, 1, libc::EFBIG),
    ] {
        let bad = FallocateIn {
            offset,
            length,
            ..f
        };
        assert_eq!(
            errno(&send(&s, Opcode::Fallocate, 7, &[bad.as_bytes()])),
            want
        );
    }
    assert_eq!(
        errno(&send(&s, Opcode::Fallocate, 7, &[&[0; 31]])),
        libc::EINVAL
    );

    let l = LseekIn {
        fh: 4,
        offset: 10,
        whence: libc::SEEK_DATA as u32,
        padding: 0,
    };
    let out: LseekOut = decode(&ok(&send(&s, Opcode::Lseek, 7, &[l.as_bytes()]), 42));
    assert_eq!(out.offset, 1010);
    assert_eq!(last_call(&s), format!("lseek 7 4 10 {}", libc::SEEK_DATA));
    let bad = LseekIn { whence: 5, ..l };
    assert_eq!(
        errno(&send(&s, Opcode::Lseek, 7, &[bad.as_bytes()])),
        libc::EINVAL
    );

    let cfr = CopyFileRangeIn {
        fh_in: 1,
        off_in: 2,
        nodeid_out: 8,
        fh_out: 3,
        off_out: 4,
        len: 100,
        flags: 0,
    };
    let out: WriteOut = decode(&ok(
        &send(&s, Opcode::CopyFileRange, 7, &[cfr.as_bytes()]),
        42,
    ));
    // The filesystem claimed 107 bytes; never more than asked for is reported.
    assert_eq!(out.size, 100);
    assert_eq!(last_call(&s), "copy_file_range 7 1 2 8 3 4 100 0");
    let huge = CopyFileRangeIn {
        len: u64::MAX,
        ..cfr
    };
    let out: WriteOut = decode(&ok(
        &send(&s, Opcode::CopyFileRange, 7, &[huge.as_bytes()]),
        42,
    ));
    assert_eq!(out.size, 0xffff_f000);
    for bad in [
        CopyFileRangeIn { flags: 1, ..cfr },
        CopyFileRangeIn {
            off_in: u64::MAX,
            ..cfr
        },
        CopyFileRangeIn {
            off_out: 1 << 63,
            ..cfr
        },
    ] {
        assert_eq!(
            errno(&send(&s, Opcode::CopyFileRange, 7, &[bad.as_bytes()])),
            libc::EINVAL
        );
    }
    calls(&s);
    ok(
        &send(&s, Opcode::Syncfs, 1, &[SyncfsIn::default().as_bytes()]),
        42,
    );
    assert_eq!(
        last_call(&s),
        format!("syncfs {TEST_UID}/{TEST_GID}/{TEST_PID} 1")
    );
    assert_eq!(
        errno(&send(&s, Opcode::Syncfs, 1, &[&[0; 4]])),
        libc::EINVAL
    );
    // FSYNCDIR has been dispatched all along.
    let fs = FsyncIn {
        fh: 5,
        fsync_flags: FUSE_FSYNC_FDATASYNC,
        padding: 0,
    };
    ok(&send(&s, Opcode::Fsyncdir, 2, &[fs.as_bytes()]), 42);
    assert_eq!(last_call(&s), "fsyncdir 2 true 5");
}

fn lk_in(typ: i32, start: u64, end: u64, flags: u32) -> LkIn {
    LkIn {
        fh: 11,
        owner: 0xabc,
        lk: abi::FileLock {
            start,
            end,
            typ: typ as u32,
            pid: 321,
        },
        lk_flags: flags,
        padding: 0,
    }
}

#[test]
fn getlk_setlk_setlkw() {
    let s = ready_with(FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS);
    let q = lk_in(libc::F_RDLCK, 0, 99, 0);
    let out: LkOut = decode(&ok(&send(&s, Opcode::Getlk, 6, &[q.as_bytes()]), 42));
    assert_eq!(
        (out.lk.start, out.lk.end, out.lk.typ, out.lk.pid),
        (10, 20, libc::F_WRLCK as u32, 99)
    );
    let want = LockRequest {
        handle: 11,
        owner: 0xabc,
        lock: FileLock {
            start: 0,
            end: 99,
            lock_type: libc::F_RDLCK as u32,
            pid: 321,
        },
        flock: false,
    };
    assert_eq!(last_call(&s), format!("getlk 6 {want:?}"));
    // A malformed answer from the filesystem.
    assert_eq!(
        errno(&send(&s, Opcode::Getlk, 66, &[q.as_bytes()])),
        libc::EIO
    );
    // Asking about an unlock is meaningless.
    let unlock = lk_in(libc::F_UNLCK, 0, 99, 0);
    assert_eq!(
        errno(&send(&s, Opcode::Getlk, 6, &[unlock.as_bytes()])),
        libc::EINVAL
    );

    ok(&send(&s, Opcode::Setlk, 6, &[q.as_bytes()]), 42);
    assert_eq!(last_call(&s), format!("setlk 6 {want:?} wait=false"));
    let fl = lk_in(libc::F_WRLCK, 0, u64::MAX, FUSE_LK_FLOCK);
    ok(&send(&s, Opcode::Setlkw, 6, &[fl.as_bytes()]), 42);
    let want_flock = LockRequest {
        lock: FileLock {
            start: 0,
            end: u64::MAX,
            lock_type: libc::F_WRLCK as u32,
            pid: 321,
        },
        flock: true,
        ..want
    };
    assert_eq!(last_call(&s), format!("setlk 6 {want_flock:?} wait=true"));
    ok(&send(&s, Opcode::Setlk, 6, &[unlock.as_bytes()]), 42);

    for bad in [lk_in(7, 0, 1, 0), lk_in(libc::F_RDLCK, 5, 4, 0)] {
        for op in [Opcode::Getlk, Opcode::Setlk, Opcode::Setlkw] {
            assert_eq!(errno(&send(&s, op, 6, &[bad.as_bytes()])), libc::EINVAL);
        }
    }
    assert_eq!(
        errno(&send(&s, Opcode::Setlkw, 6, &[&[0; 47]])),
        libc::EINVAL
    );
}

#[test]
fn only_setlkw_may_block_and_refusals_answer_the_request() {
    let setlkw = request(
        Opcode::Setlkw as u32,
        77,
        6,
        &[lk_in(libc::F_WRLCK, 0, 1, 0).as_bytes()],
    );
    assert!(Server::<MockFs>::may_block(&setlkw[..40]));
    assert!(Server::<MockFs>::may_block(&setlkw));
    assert!(!Server::<MockFs>::may_block(&setlkw[..39]));
    for op in [Opcode::Setlk, Opcode::Getlk, Opcode::Fsync, Opcode::Read] {
        let r = request(op as u32, 1, 1, &[]);
        assert!(!Server::<MockFs>::may_block(&r), "{op:?}");
    }
    let s = ready();
    let mut r = TestReader::new(setlkw);
    let (w, out) = TestWriter::new(ROOM);
    let n = s.refuse(&mut r, w, libc::ENOLCK).unwrap();
    let reply = out.bytes(n);
    assert_eq!(errno(&reply), libc::ENOLCK);
    assert_eq!(parse_reply(&reply).unwrap().0.unique, 77);
    assert!(
        calls(&s).is_empty(),
        "a refused request reached the filesystem"
    );
    let mut r = TestReader::new(vec![0; 10]);
    let (w, _) = TestWriter::new(ROOM);
    assert!(matches!(
        s.refuse(&mut r, w, libc::ENOLCK),
        Err(Error::TruncatedHeader { .. })
    ));
}

#[test]
fn interrupt_gets_no_reply() {
    let s = ready();
    let i = InterruptIn { unique: 42 };
    assert_eq!(
        call(
            &s,
            request(Opcode::Interrupt as u32, 43, 0, &[i.as_bytes()]),
            ROOM
        )
        .unwrap(),
        Vec::<u8>::new()
    );
    // Malformed or before INIT: still nothing.
    assert!(
        call(&s, request(Opcode::Interrupt as u32, 44, 0, &[]), ROOM)
            .unwrap()
            .is_empty()
    );
    let fresh = Server::new(MockFs::new());
    assert!(call(
        &fresh,
        request(Opcode::Interrupt as u32, 1, 0, &[i.as_bytes()]),
        0
    )
    .unwrap()
    .is_empty());
    assert!(calls(&s).is_empty());
}

/// A request with `ext` appended as its extension area.
fn with_ext(op: Opcode, node: u64, args: &[&[u8]], ext: &[u8]) -> Vec<u8> {
    assert_eq!(ext.len() % 8, 0);
    let mut all: Vec<&[u8]> = args.to_vec();
    all.push(ext);
    let mut req = request(op as u32, 42, node, &all);
    req[36..38].copy_from_slice(&((ext.len() / 8) as u16).to_ne_bytes());
    req
}

fn groups_ext(groups: &[u32]) -> Vec<u8> {
    let body = 4 + 4 * groups.len();
    let size = (8 + body).div_ceil(8) * 8;
    let mut ext = ExtHeader {
        size: size as u32,
        typ: FUSE_EXT_GROUPS,
    }
    .as_bytes()
    .to_vec();
    ext.extend_from_slice(
        SuppGroups {
            nr_groups: groups.len() as u32,
        }
        .as_bytes(),
    );
    for g in groups {
        ext.extend_from_slice(&g.to_ne_bytes());
    }
    ext.resize(size, 0);
    ext
}

#[test]
fn tmpfile_and_statx() {
    let s = ready();
    let cr = CreateIn {
        flags: (libc::O_RDWR | libc::O_TMPFILE) as u32,
        mode: libc::S_IFREG | 0o600,
        umask: 0o22,
        open_flags: 0,
    };
    let out = ok(&send(&s, Opcode::Tmpfile, 3, &[cr.as_bytes(), b"/\0"]), 42);
    check_entry(&decode(&out[..size_of::<EntryOut>()]), 105);
    let open: OpenOut = decode(&out[size_of::<EntryOut>()..]);
    assert_eq!((open.fh, open.open_flags), (79, FOPEN_KEEP_CACHE));
    assert_eq!(
        last_call(&s),
        format!("tmpfile 3 100600 {:#o} 22 None", cr.flags)
    );
    assert_eq!(
        errno(&send(&s, Opcode::Tmpfile, 3, &[&[0; 15]])),
        libc::EINVAL
    );

    let x = StatxIn {
        getattr_flags: FUSE_GETATTR_FH,
        reserved: 0,
        fh: 12,
        sx_flags: libc::AT_STATX_FORCE_SYNC as u32,
        sx_mask: libc::STATX_BASIC_STATS | libc::STATX_BTIME,
    };
    let out: StatxOut = decode(&ok(&send(&s, Opcode::Statx, 8, &[x.as_bytes()]), 42));
    assert_eq!((out.attr_valid, out.attr_valid_nsec), (4, 9));
    assert_eq!(out.stat.mask, libc::STATX_BASIC_STATS | libc::STATX_BTIME);
    assert_eq!(
        (out.stat.ino, out.stat.size, out.stat.mode),
        (8, 12345, 0o100640)
    );
    assert_eq!((out.stat.btime.tv_sec, out.stat.btime.tv_nsec), (77, 88));
    assert_eq!((out.stat.dev_major, out.stat.rdev_minor), (8, 3));
    assert_eq!(
        last_call(&s),
        format!("statx 8 Some(12) {:#x} {:#x}", x.sx_flags, x.sx_mask)
    );
    let no_fh = StatxIn {
        getattr_flags: 0,
        ..x
    };
    ok(&send(&s, Opcode::Statx, 8, &[no_fh.as_bytes()]), 42);
    assert!(last_call(&s).starts_with("statx 8 None"));
    assert_eq!(
        errno(&send(&s, Opcode::Statx, 8, &[&[0; 23]])),
        libc::EINVAL
    );
}

#[test]
fn supplementary_group_extension_is_decoded_once_negotiated() {
    let cr = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: libc::S_IFREG | 0o600,
        umask: 0,
        open_flags: 0,
    };
    let s = ready_with(FUSE_CREATE_SUPP_GROUP);
    let req = with_ext(
        Opcode::Tmpfile,
        3,
        &[cr.as_bytes(), b"/\0"],
        &groups_ext(&[555]),
    );
    ok(&call(&s, req, ROOM).unwrap(), 42);
    assert!(last_call(&s).ends_with("Some(555)"));
    // Unknown extensions before it are skipped.
    let mut ext = ExtHeader { size: 16, typ: 99 }.as_bytes().to_vec();
    ext.extend_from_slice(&[0xee; 8]);
    ext.extend_from_slice(&groups_ext(&[7, 8]));
    let req = with_ext(Opcode::Tmpfile, 3, &[cr.as_bytes(), b"/\0"], &ext);
    ok(&call(&s, req, ROOM).unwrap(), 42);
    assert!(last_call(&s).ends_with("Some(7)"));
    // No groups, or no extension at all.
    let req = with_ext(
        Opcode::Tmpfile,
        3,
        &[cr.as_bytes(), b"/\0"],
        &groups_ext(&[]),
    );
    ok(&call(&s, req, ROOM).unwrap(), 42);
    assert!(last_call(&s).ends_with("None"));
    ok(&send(&s, Opcode::Tmpfile, 3, &[cr.as_bytes(), b"/\0"]), 42);
    assert!(last_call(&s).ends_with("None"));
    // Malformed extension areas are refused before the filesystem sees the request.
    let mut too_many = groups_ext(&[1]);
    too_many[8..12].copy_from_slice(&3u32.to_ne_bytes());
    let mut zero_size = groups_ext(&[1]);
    zero_size[..4].copy_from_slice(&0u32.to_ne_bytes());
    let mut overlong = groups_ext(&[1]);
    overlong[..4].copy_from_slice(&64u32.to_ne_bytes());
    let mut unaligned = groups_ext(&[1]);
    unaligned[..4].copy_from_slice(&12u32.to_ne_bytes());
    for ext in [too_many, zero_size, overlong, unaligned] {
        let m = MkdirIn {
            mode: 0o755,
            umask: 0,
        };
        let req = with_ext(Opcode::Mkdir, 1, &[m.as_bytes(), b"d\0"], &ext);
        assert_eq!(errno(&call(&s, req, ROOM).unwrap()), libc::EINVAL);
        let req = with_ext(Opcode::Tmpfile, 3, &[cr.as_bytes(), b"/\0"], &ext);
        assert_eq!(errno(&call(&s, req, ROOM).unwrap()), libc::EINVAL);
    }
    assert!(calls(&s).is_empty());

    // Without FUSE_CREATE_SUPP_GROUP the extension area is skipped, as before.
    let s = ready();
    let req = with_ext(
        Opcode::Tmpfile,
        3,
        &[cr.as_bytes(), b"/\0"],
        &groups_ext(&[555]),
    );
    ok(&call(&s, req, ROOM).unwrap(), 42);
    assert!(last_call(&s).ends_with("None"));
}

// ---- replies that do not fit give back what they took ----

/// Sends `args` with only `room` bytes for the reply; the reply must not fit.
fn send_cramped(s: &Server<MockFs>, op: Opcode, node: u64, args: &[&[u8]], room: usize) {
    match call(s, request(op as u32, 42, node, args), room) {
        Err(Error::ReplyTooLarge { .. }) => {}
        other => panic!("{op:?}: expected ReplyTooLarge, got {other:?}"),
    }
}

#[test]
fn undelivered_lookup_is_forgotten() {
    let s = ready();
    send_cramped(&s, Opcode::Lookup, 1, &[b"foo\0"], 16);
    let calls = calls(&s);
    assert_eq!(calls.last().map(String::as_str), Some("forget 100 1"));
    // A reply that fits takes nothing back.
    send(&s, Opcode::Lookup, 1, &[b"foo\0"]);
    assert!(!calls_contain(&s, "forget"));
}

fn calls_contain(s: &Server<MockFs>, what: &str) -> bool {
    calls(s).iter().any(|c| c.starts_with(what))
}

#[test]
fn undelivered_mkdir_mknod_symlink_and_link_are_forgotten() {
    let s = ready();
    let d = MkdirIn {
        mode: 0o755,
        umask: 0o022,
    };
    send_cramped(&s, Opcode::Mkdir, 1, &[d.as_bytes(), b"d\0"], 100);
    assert!(calls(&s).iter().any(|c| c.starts_with("forget ")));
    let m = MknodIn {
        mode: libc::S_IFIFO | 0o644,
        rdev: 0,
        umask: 0,
        padding: 0,
    };
    send_cramped(&s, Opcode::Mknod, 1, &[m.as_bytes(), b"f\0"], 0);
    assert!(calls(&s).iter().any(|c| c.starts_with("forget ")));
    send_cramped(&s, Opcode::Symlink, 1, &[b"l\0", b"target\0"], 20);
    assert!(calls(&s).iter().any(|c| c.starts_with("forget ")));
    let l = LinkIn { oldnodeid: 8 };
    send_cramped(&s, Opcode::Link, 1, &[l.as_bytes(), b"h\0"], 127);
    assert!(calls(&s).iter().any(|c| c.starts_with("forget ")));
}

#[test]
fn undelivered_open_opendir_and_create_are_released() {
    let s = ready();
    let o = OpenIn {
        flags: libc::O_RDWR as u32,
        open_flags: 0,
    };
    send_cramped(&s, Opcode::Open, 8, &[o.as_bytes()], 16);
    assert_eq!(last_call(&s), "release 8 0o2 77 false None");
    send_cramped(&s, Opcode::Opendir, 8, &[o.as_bytes()], 31);
    assert_eq!(last_call(&s), "releasedir 8 0o2 55");
    let cr = CreateIn {
        flags: (libc::O_CREAT | libc::O_WRONLY) as u32,
        mode: 0o100644,
        umask: 0o022,
        open_flags: 0,
    };
    send_cramped(&s, Opcode::Create, 1, &[cr.as_bytes(), b"new\0"], 128);
    let calls = calls(&s);
    let n = calls.len();
    assert!(n >= 2, "{calls:?}");
    assert_eq!(
        calls[n - 2],
        format!(
            "release 104 {:#o} 78 false None",
            libc::O_CREAT | libc::O_WRONLY
        )
    );
    assert_eq!(calls[n - 1], "forget 104 1");
}

#[test]
fn undelivered_readdirplus_forgets_its_entries() {
    let s = ready();
    // Room for entries but not for the reply header: the entries' references are given back.
    let rd = read_in(55, 0, 4096);
    let req = request(Opcode::Readdirplus as u32, 42, 1, &[rd.as_bytes()]);
    let mut r = TestReader::new(req);
    let (w, _out) = TestWriter::new(8);
    assert!(s.handle_message(&mut r, w).is_err());
    // Nothing could be added with 8 bytes of room, so nothing is forgotten.
    assert!(!calls_contain(&s, "forget"));

    // A transport whose room shrinks after the entries were produced: the write fails.
    let mut r = TestReader::new(request(Opcode::Readdirplus as u32, 43, 1, &[rd.as_bytes()]));
    let w = FailingWriter { room: 4096 };
    assert!(s.handle_message(&mut r, w).is_err());
    let forgets: Vec<String> = calls(&s)
        .into_iter()
        .filter(|c| c.starts_with("forget "))
        .collect();
    let positive = DIR.len() - 2;
    assert_eq!(forgets.len(), positive, "{forgets:?}");
}

/// Claims room but fails every write, like guest buffers that vanish mid-reply.
struct FailingWriter {
    room: usize,
}

impl ZeroCopyWriter for FailingWriter {
    fn write_from_file(
        &mut self,
        _file: std::os::fd::BorrowedFd<'_>,
        _count: usize,
        _offset: u64,
    ) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EFAULT))
    }
}

impl ReplyWriter for FailingWriter {
    fn write_all(&mut self, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EFAULT))
    }
    fn available_bytes(&self) -> usize {
        self.room
    }
    fn bytes_written(&self) -> usize {
        0
    }
    fn split_at(&mut self, offset: usize) -> io::Result<Self> {
        let room = self.room.saturating_sub(offset);
        self.room = offset.min(self.room);
        Ok(FailingWriter { room })
    }
}

#[test]
fn taken_keeps_push_order_inline_and_spilled() {
    let mut taken = Taken::default();
    assert!(taken.is_empty());
    taken.handle(false, 7, 0, 70);
    for inode in [7, 8, 9, 10] {
        taken.push(Undo::Forget { inode });
    }
    assert!(!taken.is_empty());
    assert_eq!(
        taken.into_iter().collect::<Vec<_>>(),
        vec![
            Undo::Release {
                inode: 7,
                flags: 0,
                handle: 70
            },
            Undo::Forget { inode: 7 },
            Undo::Forget { inode: 8 },
            Undo::Forget { inode: 9 },
            Undo::Forget { inode: 10 },
        ]
    );
}

// ---- id translation at the wire boundary ----

fn id_rule(first: u32, count: u32, kind: IdRuleKind, target: u32) -> IdRule {
    IdRule {
        first,
        count,
        kind,
        target,
    }
}

/// uids: guest 0 squashed to host 65534, guest 1000..1010 mapped to host 100000.., guest 5000
/// forbidden; host 7 (the mock's owner) shown as guest 700.
/// gids: guest 1001 mapped to host 200001, guest 6000 forbidden; host 8 shown as guest 800.
fn test_policy() -> IdPolicy {
    use IdRuleKind::*;
    IdPolicy {
        uid: IdMapping::new(
            vec![
                id_rule(0, 1, Squash, 65534),
                id_rule(1000, 10, Range, 100_000),
                id_rule(5000, 1, Fail, 0),
            ],
            vec![
                id_rule(7, 1, Squash, 700),
                id_rule(100_000, 10, Range, 1000),
            ],
        )
        .unwrap(),
        gid: IdMapping::new(
            vec![id_rule(1001, 1, Range, 200_001), id_rule(6000, 1, Fail, 0)],
            vec![id_rule(8, 1, Range, 800), id_rule(200_001, 1, Range, 1001)],
        )
        .unwrap(),
    }
}

fn ready_policy(policy: IdPolicy, wants: u64) -> Server<MockFs> {
    let mut fs = MockFs::new();
    fs.wants = wants;
    let s = Server::new(fs).with_id_policy(policy);
    ok(
        &call(&s, init_request(1, OFFERED | wants), ROOM).unwrap(),
        1,
    );
    assert_eq!(s.negotiated_flags() & wants, wants);
    calls(&s);
    seen(&s);
    s
}

/// The contexts the filesystem was given since the last call.
fn seen(s: &Server<MockFs>) -> Vec<Context> {
    std::mem::take(&mut *s.fs().seen.lock().unwrap())
}

fn last_seen(s: &Server<MockFs>) -> Context {
    seen(s).pop().expect("the filesystem was called")
}

/// `req` as sent by guest `uid`:`gid`.
fn as_guest(mut req: Vec<u8>, uid: u32, gid: u32) -> Vec<u8> {
    req[24..28].copy_from_slice(&uid.to_ne_bytes());
    req[28..32].copy_from_slice(&gid.to_ne_bytes());
    req
}

fn owner(a: &Attr) -> (u32, u32) {
    (a.uid, a.gid)
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED: u32 = u32::MAX;

/// A `posix_acl_xattr` value (version 2, then `{ tag, perm, id }` entries, little-endian).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The ACL the mock reads back for `system.posix_acl_access`, in host ids.
fn host_acl() -> Vec<u8> {
    acl(&[
        (ACL_USER_OBJ, 7, ACL_UNDEFINED),
        (ACL_USER, 6, 100_003),
        (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
        (ACL_GROUP, 4, 8),
        (ACL_MASK, 7, ACL_UNDEFINED),
        (ACL_OTHER, 0, ACL_UNDEFINED),
    ])
}

fn setattr_in(valid: u32, uid: u32, gid: u32) -> SetattrIn {
    SetattrIn {
        valid,
        uid,
        gid,
        ..Default::default()
    }
}

fn xattr_set(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut args = SetxattrInCompat {
        size: value.len() as u32,
        flags: 0,
    }
    .as_bytes()
    .to_vec();
    args.extend_from_slice(name);
    args.push(0);
    args.extend_from_slice(value);
    args
}

#[test]
fn every_reply_with_attributes_shows_guest_ids() {
    let s = ready_policy(test_policy(), 0);
    let guest = (700, 800);
    let entry_of = |payload: Vec<u8>| -> EntryOut { decode(&payload[..size_of::<EntryOut>()]) };

    let out = entry_of(ok(&send(&s, Opcode::Lookup, 1, &[b"f\0"]), 42));
    assert_eq!(owner(&out.attr), guest, "LOOKUP");
    let g = GetattrIn::default();
    let out: AttrOut = decode(&ok(&send(&s, Opcode::Getattr, 5, &[g.as_bytes()]), 42));
    assert_eq!(owner(&out.attr), guest, "GETATTR");
    let sa = setattr_in(FATTR_MODE, 0, 0);
    let out: AttrOut = decode(&ok(&send(&s, Opcode::Setattr, 5, &[sa.as_bytes()]), 42));
    assert_eq!(owner(&out.attr), guest, "SETATTR");

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
    for (e, d, _) in &entries[2..] {
        assert_eq!(owner(&e.unwrap().attr), guest, "READDIRPLUS {}", d.ino);
    }

    let cr = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o100600,
        umask: 0,
        open_flags: 0,
    };
    let m = MknodIn {
        mode: libc::S_IFIFO | 0o600,
        ..Default::default()
    };
    let d = MkdirIn {
        mode: 0o700,
        umask: 0,
    };
    let l = LinkIn { oldnodeid: 9 };
    let creates: [(Opcode, Vec<&[u8]>); 6] = [
        (Opcode::Create, vec![cr.as_bytes(), b"f\0"]),
        (Opcode::Mknod, vec![m.as_bytes(), b"p\0"]),
        (Opcode::Mkdir, vec![d.as_bytes(), b"d\0"]),
        (Opcode::Symlink, vec![b"ln\0", b"target\0"]),
        (Opcode::Link, vec![l.as_bytes(), b"hard\0"]),
        (Opcode::Tmpfile, vec![cr.as_bytes(), b"/\0"]),
    ];
    for (op, args) in creates {
        let out = entry_of(ok(&send(&s, op, 1, &args), 42));
        assert_eq!(owner(&out.attr), guest, "{op:?}");
    }

    let x = StatxIn {
        sx_mask: libc::STATX_BASIC_STATS,
        ..Default::default()
    };
    let out: StatxOut = decode(&ok(&send(&s, Opcode::Statx, 8, &[x.as_bytes()]), 42));
    assert_eq!((out.stat.uid, out.stat.gid), (1005, 1001), "STATX");
}

#[test]
fn the_filesystem_sees_host_credentials() {
    let s = ready_policy(test_policy(), FUSE_CREATE_SUPP_GROUP);
    let lookup = |uid, gid| {
        let req = as_guest(request(Opcode::Lookup as u32, 42, 1, &[b"f\0"]), uid, gid);
        ok(&call(&s, req, ROOM).unwrap(), 42);
        let ctx = last_seen(&s);
        assert_eq!(ctx.pid, TEST_PID);
        (ctx.uid, ctx.gid)
    };
    assert_eq!(lookup(TEST_UID, TEST_GID), (100_000, 200_001));
    assert_eq!(lookup(1009, 1001), (100_009, 200_001));
    assert_eq!(lookup(0, 0), (65534, 0));
    // Not covered by any rule: the same number on the host.
    assert_eq!(lookup(1010, 3000), (1010, 3000));
    // Forbidden ids still look up (reads work); acting as them is the filesystem's to refuse.
    assert_eq!(lookup(5000, 6000), (FORBIDDEN_ID, FORBIDDEN_ID));

    // The supplementary group of a create arrives in the extension area, and is a host id too.
    let d = MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    for (guest, host) in [(1001, 200_001), (6000, FORBIDDEN_ID), (4, 4)] {
        let req = with_ext(
            Opcode::Mkdir,
            1,
            &[d.as_bytes(), b"d\0"],
            &groups_ext(&[guest]),
        );
        ok(&call(&s, req, ROOM).unwrap(), 42);
        let ctx = last_seen(&s);
        assert_eq!(
            (ctx.uid, ctx.gid, ctx.supplementary_gid),
            (100_000, 200_001, Some(host)),
            "supplementary group {guest}"
        );
    }
}

#[test]
fn setattr_gives_files_to_host_ids_and_refuses_forbidden_ones() {
    let s = ready_policy(test_policy(), 0);
    let chown = |valid, uid, gid| {
        send(
            &s,
            Opcode::Setattr,
            5,
            &[setattr_in(valid, uid, gid).as_bytes()],
        )
    };
    ok(&chown(FATTR_UID | FATTR_GID, 1003, 1001), 42);
    let call = last_call(&s);
    assert!(
        call.contains("uid: Some(100003), gid: Some(200001)"),
        "{call}"
    );
    ok(&chown(FATTR_UID, 0, 6000), 42);
    let call = last_call(&s);
    // The gid is not being set, so its (forbidden) value does not matter.
    assert!(call.contains("uid: Some(65534), gid: None"), "{call}");
    // Acting on a forbidden id: EPERM, and the filesystem is not asked.
    assert_eq!(errno(&chown(FATTR_UID, 5000, 0)), libc::EPERM);
    assert_eq!(errno(&chown(FATTR_GID, 0, 6000)), libc::EPERM);
    assert_eq!(
        errno(&chown(FATTR_UID | FATTR_GID, 1000, 6000)),
        libc::EPERM
    );
    assert!(calls(&s).is_empty());
}

#[test]
fn acl_values_are_translated_both_ways() {
    let s = ready_policy(test_policy(), 0);
    let guest_acl = acl(&[
        (ACL_USER_OBJ, 7, ACL_UNDEFINED),
        (ACL_USER, 6, 1002),
        (ACL_USER, 4, 3000),
        (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
        (ACL_GROUP, 5, 1001),
        (ACL_MASK, 7, ACL_UNDEFINED),
        (ACL_OTHER, 0, ACL_UNDEFINED),
    ]);
    // Guest 1002 is host 100002 and now sorts after the unmapped 3000, as the kernel wants.
    let stored = acl(&[
        (ACL_USER_OBJ, 7, ACL_UNDEFINED),
        (ACL_USER, 4, 3000),
        (ACL_USER, 6, 100_002),
        (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
        (ACL_GROUP, 5, 200_001),
        (ACL_MASK, 7, ACL_UNDEFINED),
        (ACL_OTHER, 0, ACL_UNDEFINED),
    ]);
    for name in [
        b"system.posix_acl_access".as_slice(),
        b"system.posix_acl_default",
    ] {
        ok(
            &send(&s, Opcode::Setxattr, 9, &[&xattr_set(name, &guest_acl)]),
            42,
        );
        assert!(last_call(&s).contains(&format!("{stored:?}")));
    }
    // A forbidden id in an entry, and a value that is no ACL, are refused before the filesystem.
    let forbidden = acl(&[(ACL_USER, 6, 5000), (ACL_MASK, 7, ACL_UNDEFINED)]);
    let set = |value: &[u8]| {
        send(
            &s,
            Opcode::Setxattr,
            9,
            &[&xattr_set(b"system.posix_acl_access", value)],
        )
    };
    assert_eq!(errno(&set(&forbidden)), libc::EPERM);
    assert_eq!(errno(&set(b"\x02\0\0\0\x02\0")), libc::EINVAL);
    assert!(calls(&s).is_empty());
    // Other names are values like any other, whatever they look like.
    ok(
        &send(
            &s,
            Opcode::Setxattr,
            9,
            &[&xattr_set(b"user.acl", &forbidden)],
        ),
        42,
    );
    assert!(last_call(&s).contains(&format!("{forbidden:?}")));

    // Reading: host 100003 is guest 1003, host group 8 is guest 800.
    let get = |name: &[u8], size: u32| {
        let n = [name, b"\0"].concat();
        send(&s, Opcode::Getxattr, 9, &[getxattr_in(size).as_bytes(), &n])
    };
    let value = ok(&get(b"system.posix_acl_access", 1000), 42);
    assert_eq!(
        value,
        acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED),
            (ACL_USER, 6, 1003),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
            (ACL_GROUP, 4, 800),
            (ACL_MASK, 7, ACL_UNDEFINED),
            (ACL_OTHER, 0, ACL_UNDEFINED),
        ])
    );
    // A buffer exactly the host value's size is enough: translation never lengthens it.
    let exact = host_acl().len() as u32;
    assert_eq!(ok(&get(b"system.posix_acl_access", exact), 42), value);
    // A size query answers the host's size, untouched.
    let out: GetxattrOut = decode(&ok(&get(b"system.posix_acl_access", 0), 42));
    assert_eq!(out.size, exact);
    // A malformed ACL from the filesystem is its fault: EIO.
    assert_eq!(errno(&get(b"system.posix_acl_default", 100)), libc::EIO);
    assert_eq!(ok(&get(b"user.x", 100), 42), b"value");
}

#[test]
fn the_identity_policy_changes_no_byte() {
    let plain = ready();
    let explicit = ready_policy(IdPolicy::default(), 0);
    assert!(explicit.id_policy().is_identity());
    assert!(!ready_policy(test_policy(), 0).id_policy().is_identity());
    let x = StatxIn::default();
    let requests: Vec<(Opcode, Vec<Vec<u8>>)> = vec![
        (Opcode::Lookup, vec![b"f\0".to_vec()]),
        (
            Opcode::Getattr,
            vec![GetattrIn::default().as_bytes().to_vec()],
        ),
        (Opcode::Statx, vec![x.as_bytes().to_vec()]),
        (
            Opcode::Readdirplus,
            vec![read_in(55, 0, 4096).as_bytes().to_vec()],
        ),
        (
            Opcode::Getxattr,
            vec![
                getxattr_in(100).as_bytes().to_vec(),
                b"system.posix_acl_access\0".to_vec(),
            ],
        ),
        (
            Opcode::Getxattr,
            vec![
                getxattr_in(100).as_bytes().to_vec(),
                b"system.posix_acl_default\0".to_vec(),
            ],
        ),
    ];
    for (op, args) in &requests {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let a = send(&plain, *op, 5, &args);
        assert_eq!(a, send(&explicit, *op, 5, &args), "{op:?}");
    }
    // The host's ids and values as they are: owner 7:8, the mock's ACL bytes, and even a
    // malformed ACL (the host judged it, not the dispatcher).
    let out: AttrOut = decode(&ok(
        &send(
            &explicit,
            Opcode::Getattr,
            5,
            &[GetattrIn::default().as_bytes()],
        ),
        42,
    ));
    assert_eq!(owner(&out.attr), (7, 8));
    let n = b"system.posix_acl_access\0";
    let v = ok(
        &send(
            &explicit,
            Opcode::Getxattr,
            5,
            &[getxattr_in(100).as_bytes(), n],
        ),
        42,
    );
    assert_eq!(v, host_acl());
    let junk = b"\x02\0\0\0\x02\0";
    ok(
        &send(
            &explicit,
            Opcode::Setxattr,
            9,
            &[&xattr_set(b"system.posix_acl_access", junk)],
        ),
        42,
    );
    assert!(last_call(&explicit).contains(&format!("{junk:?}")));
    // Credentials and new owners are not touched, the sentinel included.
    let req = as_guest(request(Opcode::Lookup as u32, 42, 1, &[b"f\0"]), 5000, 0);
    ok(&call(&explicit, req, ROOM).unwrap(), 42);
    let ctx = seen(&explicit).pop().unwrap();
    assert_eq!((ctx.uid, ctx.gid), (5000, 0));
    let sa = setattr_in(FATTR_UID | FATTR_GID, 5000, 6000);
    ok(&send(&explicit, Opcode::Setattr, 5, &[sa.as_bytes()]), 42);
    assert!(last_call(&explicit).contains("uid: Some(5000), gid: Some(6000)"));
}

// ---- security labels (FUSE_SECURITY_CTX) ----

const SELINUX: &[u8] = b"security.selinux";
const LABEL: &[u8] = b"system_u:object_r:container_file_t:s0\0";

/// A security-context extension with `nr` in the type field and one record, laid out as the
/// kernel lays it out: `fuse_secctx { size, padding }`, the name and its NUL, the value, padding.
fn secctx_ext(nr: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let record = (size_of::<Secctx>() + name.len() + 1 + value.len()).next_multiple_of(8);
    let mut ext = ExtHeader {
        size: (size_of::<ExtHeader>() + record) as u32,
        typ: nr,
    }
    .as_bytes()
    .to_vec();
    let rec = Secctx {
        size: value.len() as u32,
        padding: 0,
    };
    ext.extend_from_slice(rec.as_bytes());
    ext.extend_from_slice(name);
    ext.push(0);
    ext.extend_from_slice(value);
    ext.resize(size_of::<ExtHeader>() + record, 0);
    ext
}

/// The record the kernel sends when the guest's LSM gives no label.
fn no_label_ext() -> Vec<u8> {
    ExtHeader { size: 8, typ: 0 }.as_bytes().to_vec()
}

fn label(ctx: &Context) -> Option<(Vec<u8>, Vec<u8>)> {
    ctx.security_context
        .as_ref()
        .map(|l| (l.name.as_bytes().to_vec(), l.value.clone()))
}

/// The five create-type requests, each with `ext` as its extension area.
fn creates_with(ext: &[u8]) -> Vec<(Opcode, Vec<u8>)> {
    let cr = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o100600,
        umask: 0,
        open_flags: 0,
    };
    let m = MknodIn {
        mode: libc::S_IFIFO | 0o600,
        ..Default::default()
    };
    let d = MkdirIn {
        mode: 0o700,
        umask: 0,
    };
    vec![
        (
            Opcode::Create,
            with_ext(Opcode::Create, 1, &[cr.as_bytes(), b"f\0"], ext),
        ),
        (
            Opcode::Mknod,
            with_ext(Opcode::Mknod, 1, &[m.as_bytes(), b"p\0"], ext),
        ),
        (
            Opcode::Mkdir,
            with_ext(Opcode::Mkdir, 1, &[d.as_bytes(), b"d\0"], ext),
        ),
        (
            Opcode::Symlink,
            with_ext(Opcode::Symlink, 1, &[b"ln\0", b"target\0"], ext),
        ),
        (
            Opcode::Tmpfile,
            with_ext(Opcode::Tmpfile, 1, &[cr.as_bytes(), b"/\0"], ext),
        ),
    ]
}

#[test]
fn a_security_label_reaches_the_filesystem() {
    let s = ready_with(FUSE_SECURITY_CTX);
    for (op, req) in creates_with(&secctx_ext(1, SELINUX, LABEL)) {
        ok(&call(&s, req, ROOM).unwrap(), 42);
        let ctx = s.fs().seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            label(&ctx),
            Some((SELINUX.to_vec(), LABEL.to_vec())),
            "{op:?}"
        );
        assert_eq!(ctx.supplementary_gid, None);
    }
    // No label from the guest's LSM, or no extension at all.
    for ext in [no_label_ext(), Vec::new()] {
        for (op, req) in creates_with(&ext) {
            ok(&call(&s, req, ROOM).unwrap(), 42);
            let ctx = s.fs().seen.lock().unwrap().pop().unwrap();
            assert_eq!(ctx.security_context, None, "{op:?}");
        }
    }

    // With both extensions negotiated the kernel sends the label first, then the group.
    let s = ready_with(FUSE_SECURITY_CTX | FUSE_CREATE_SUPP_GROUP);
    let mut ext = secctx_ext(1, SELINUX, LABEL);
    ext.extend_from_slice(&groups_ext(&[4321]));
    for (op, req) in creates_with(&ext) {
        ok(&call(&s, req, ROOM).unwrap(), 42);
        let ctx = s.fs().seen.lock().unwrap().pop().unwrap();
        assert_eq!(label(&ctx).map(|l| l.0), Some(SELINUX.to_vec()), "{op:?}");
        assert_eq!(ctx.supplementary_gid, Some(4321), "{op:?}");
    }
    // LINK makes no inode, so carries no label; nothing is read from its extension area.
    let l = LinkIn { oldnodeid: 9 };
    let req = with_ext(
        Opcode::Link,
        1,
        &[l.as_bytes(), b"hard\0"],
        &secctx_ext(1, SELINUX, LABEL),
    );
    ok(&call(&s, req, ROOM).unwrap(), 42);
    assert_eq!(
        s.fs().seen.lock().unwrap().pop().unwrap().security_context,
        None
    );

    // Not negotiated: the record is not read (and the label not delivered).
    let s = ready_with(FUSE_CREATE_SUPP_GROUP);
    for (op, req) in creates_with(&ext) {
        ok(&call(&s, req, ROOM).unwrap(), 42);
        let ctx = s.fs().seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            (ctx.security_context.is_none(), ctx.supplementary_gid),
            (true, Some(4321)),
            "{op:?}"
        );
    }
    let s = ready();
    let (_, req) = creates_with(&secctx_ext(1, SELINUX, LABEL)).remove(2);
    ok(&call(&s, req, ROOM).unwrap(), 42);
    assert_eq!(
        s.fs().seen.lock().unwrap().pop().unwrap().security_context,
        None
    );
}

#[test]
fn a_label_is_delivered_with_host_credentials() {
    let s = ready_policy(test_policy(), FUSE_SECURITY_CTX);
    let (_, req) = creates_with(&secctx_ext(1, SELINUX, LABEL)).remove(0);
    ok(&call(&s, req, ROOM).unwrap(), 42);
    let ctx = last_seen(&s);
    assert_eq!((ctx.uid, ctx.gid), (100_000, 200_001));
    let expected = SecurityContext {
        name: std::ffi::CString::new(SELINUX).unwrap(),
        value: LABEL.to_vec(),
    };
    assert_eq!(ctx.security_context.as_deref(), Some(&expected));
}

/// Every malformed security-context extension, with what is wrong with it.
fn malformed_security_contexts() -> Vec<(&'static str, Vec<u8>)> {
    let valid = secctx_ext(1, SELINUX, LABEL);
    let set_u32 = |mut v: Vec<u8>, at: usize, x: u32| {
        v[at..at + 4].copy_from_slice(&x.to_ne_bytes());
        v
    };
    // Offsets: header size 0, header type 4, record size 8, record padding 12, name 16.
    let header_len = valid.len() as u32;
    let mut no_nul = valid.clone();
    for b in &mut no_nul[16..] {
        *b = b'x';
    }
    let long_name = [b"security.".as_slice(), &[b'n'; 247]].concat();
    assert_eq!(long_name.len(), MAX_XATTR_NAME_LEN + 1);
    let mut trailing = valid.clone();
    trailing.extend_from_slice(&[0; 8]);
    let trailing = set_u32(trailing, 0, header_len + 8);
    let mut two = valid.clone();
    two.extend_from_slice(&valid);
    let mut empty_with_body = no_label_ext();
    empty_with_body.extend_from_slice(&[0; 8]);
    let empty_with_body = set_u32(empty_with_body, 0, 16);
    vec![
        ("two labels", set_u32(valid.clone(), 4, 2)),
        (
            "the most labels a type can say",
            set_u32(valid.clone(), 4, FUSE_MAX_NR_SECCTX),
        ),
        (
            "header size past the area",
            set_u32(valid.clone(), 0, header_len + 8),
        ),
        (
            "header size overflowing",
            set_u32(valid.clone(), 0, u32::MAX),
        ),
        (
            "header size misaligned",
            set_u32(valid.clone(), 0, header_len - 4),
        ),
        ("header size zero", set_u32(valid.clone(), 0, 0)),
        ("header without a record", set_u32(valid.clone(), 0, 8)),
        (
            "value size overflowing",
            set_u32(valid.clone(), 8, u32::MAX),
        ),
        (
            "value size past the record",
            set_u32(valid.clone(), 8, LABEL.len() as u32 + 8),
        ),
        (
            "value shorter than the record",
            set_u32(valid.clone(), 8, LABEL.len() as u32 - 8),
        ),
        ("empty value", set_u32(valid.clone(), 8, 0)),
        ("name without NUL", no_nul),
        ("name of 256 bytes", secctx_ext(1, &long_name, LABEL)),
        (
            "value over 64 KiB",
            secctx_ext(1, SELINUX, &vec![b'v'; 64 * 1024 + 1]),
        ),
        ("bytes after the record", trailing),
        ("no label but a body", empty_with_body),
        ("two records", two),
        ("empty name", secctx_ext(1, b"", LABEL)),
        (
            "name outside security.",
            secctx_ext(1, b"trusted.overlay.opaque", b"y"),
        ),
        ("bare security. prefix", secctx_ext(1, b"security.", LABEL)),
    ]
}

#[test]
fn malformed_security_contexts_are_refused() {
    let s = ready_with(FUSE_SECURITY_CTX | FUSE_CREATE_SUPP_GROUP);
    for (what, ext) in malformed_security_contexts() {
        for (op, req) in creates_with(&ext) {
            let reply = call(&s, req, ROOM).unwrap();
            assert_eq!(errno(&reply), libc::EINVAL, "{what}: {op:?}");
        }
    }
    assert!(calls(&s).is_empty());
    // The largest legitimate label still passes.
    let name = [b"security.".as_slice(), &[b'n'; 246]].concat();
    let value = vec![b'v'; 64 * 1024];
    let (_, req) = creates_with(&secctx_ext(1, &name, &value)).remove(2);
    ok(&call(&s, req, ROOM).unwrap(), 42);
    let ctx = s.fs().seen.lock().unwrap().pop().unwrap();
    assert_eq!(label(&ctx), Some((name, value)));
}

#[test]
fn mutated_security_contexts_never_panic() {
    let s = ready_with(FUSE_SECURITY_CTX | FUSE_CREATE_SUPP_GROUP);
    let mut rng = XorShift(0x5ec_c7c7);
    let mut seed = secctx_ext(1, SELINUX, LABEL);
    seed.extend_from_slice(&groups_ext(&[1]));
    for _ in 0..20_000 {
        let mut ext = seed.clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(ext.len() as u64) as usize;
            // Mostly small values, which hit the length checks' edges.
            ext[at] = if rng.below(2) == 0 {
                rng.below(4) as u8 * 8
            } else {
                rng.next() as u8
            };
        }
        let cut = if rng.below(4) == 0 {
            rng.below(ext.len() as u64 / 8) as usize * 8
        } else {
            ext.len()
        };
        let d = MkdirIn {
            mode: 0o700,
            umask: 0,
        };
        let req = with_ext(Opcode::Mkdir, 1, &[d.as_bytes(), b"d\0"], &ext[..cut]);
        let reply = call(&s, req, ROOM).unwrap();
        let (h, _) = parse_reply(&reply).unwrap();
        assert!(
            h.error == 0 || h.error == -libc::EINVAL,
            "errno {}",
            -h.error
        );
    }
}
