//! The request dispatcher: decodes one FUSE request from a [`RequestReader`], calls the
//! [`FileSystem`], and encodes the reply into a [`ReplyWriter`].
//!
//! Every request is validated before the filesystem sees it: the header length must match the bytes
//! present, arguments must be complete, and names must be well-formed single path components.
//! Malformed requests get an `EINVAL` reply where a reply is possible, and never panic.
//!
//! This is also where guest and host ids meet: the device's id translation is applied to every
//! request before the filesystem sees it and to every reply before the guest does (the crate's
//! private `ids` module), so a filesystem only ever deals in host ids.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use virtiofsd_policy::IdPolicy;

use crate::abi::{self, *};
use crate::args::ArgBuf;
use crate::ext;
use crate::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, InitOptions, LockRequest, SetAttr, SetTime,
    XattrReply,
};
use crate::ids::WireIds;
use crate::io::{ReplyWriter, RequestReader, ZeroCopyReader};
use crate::stats::{self, RequestStats};

/// The largest WRITE (and READ) payload the dispatcher negotiates.
pub const MAX_WRITE: u32 = 1 << 20;
/// The longest single path component (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// The longest symlink target, without its NUL (`PATH_MAX - 1`).
pub const MAX_SYMLINK_TARGET_LEN: usize = 4095;
/// The most argument bytes read into memory for a request other than WRITE; nothing legitimate
/// comes near it (the largest is SYMLINK: two names), so a bigger request is rejected unread.
const MAX_ARGS_LEN: usize = 64 * 1024;
/// The longest extended attribute name (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// The largest extended attribute value, and the largest list LISTXATTR returns
/// (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
pub const MAX_XATTR_SIZE: u32 = 64 * 1024;
/// The most bytes one COPY_FILE_RANGE may copy: the reply's count is 32 bits, and the kernel
/// itself never asks for more than `UINT_MAX & PAGE_MASK`.
const MAX_COPY_LEN: u64 = u32::MAX as u64 & !0xfff;

/// Flags the dispatcher enables whenever the kernel offers them.
pub const DISPATCHER_FLAGS: u64 = FUSE_INIT_EXT
    | FUSE_MAX_PAGES
    | FUSE_BIG_WRITES
    | FUSE_ASYNC_READ
    | FUSE_PARALLEL_DIROPS
    | FUSE_DONT_MASK;

/// Flags a filesystem may ask for but the dispatcher cannot honour, because they change the wire
/// format or semantics in ways it does not implement (for example `.`/`..` lookups with
/// `FUSE_EXPORT_SUPPORT`, or handle-less opens). They are never negotiated.
pub const DISPATCHER_UNSUPPORTED: u64 = FUSE_EXPORT_SUPPORT
    | FUSE_NO_OPEN_SUPPORT
    | FUSE_NO_OPENDIR_SUPPORT
    | FUSE_MAP_ALIGNMENT
    | FUSE_HAS_INODE_DAX
    | FUSE_PASSTHROUGH
    | FUSE_OVER_IO_URING
    | FUSE_REQUEST_TIMEOUT
    | FUSE_INIT_RESERVED;

const IN_HEADER_LEN: usize = size_of::<InHeader>();
const OUT_HEADER_LEN: usize = size_of::<OutHeader>();

/// Why a message could not be answered.
#[derive(Debug)]
pub enum Error {
    /// Fewer bytes than a request header were readable; there is no `unique` to reply to.
    TruncatedHeader { available: usize },
    /// A FORGET or BATCH_FORGET (which take no reply) was malformed.
    MalformedForget { unique: u64 },
    /// The reply needs more room than the transport's writable buffers offer.
    ReplyTooLarge { needed: usize, available: usize },
    /// Reading the request or writing the reply failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TruncatedHeader { available } => {
                write!(
                    f,
                    "request of {available} bytes is shorter than a FUSE header"
                )
            }
            Error::MalformedForget { unique } => write!(f, "malformed forget request {unique}"),
            Error::ReplyTooLarge { needed, available } => {
                write!(
                    f,
                    "reply of {needed} bytes does not fit in {available} bytes"
                )
            }
            Error::Io(e) => write!(f, "transport I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::ReplyTooLarge { .. } => io::Error::new(io::ErrorKind::WriteZero, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// A reply payload, or the errno to answer with.
type OpResult = Result<Vec<u8>, i32>;

/// A reference an operation took on the guest's behalf, to give back if the reply carrying it
/// never reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// One lookup reference on `inode`.
    Forget { inode: u64 },
    /// An open file handle.
    Release { inode: u64, flags: u32, handle: u64 },
    /// An open directory handle.
    Releasedir { inode: u64, flags: u32, handle: u64 },
}

/// What one request took, in the order to give it back. Every opcode but READDIRPLUS takes at
/// most a handle and an entry, which stay inline: the request path allocates nothing for them.
#[derive(Debug, Default)]
struct Taken {
    inline: [Option<Undo>; 2],
    /// READDIRPLUS entries past the first two.
    spilled: Vec<Undo>,
}

impl Taken {
    fn push(&mut self, undo: Undo) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(undo),
            None => self.spilled.push(undo),
        }
    }

    /// A positive entry carries one lookup reference; a negative one (inode 0) none.
    fn entry(&mut self, e: &Entry) {
        if e.inode != 0 {
            self.push(Undo::Forget { inode: e.inode });
        }
    }

    fn handle(&mut self, dir: bool, inode: u64, flags: u32, handle: u64) {
        self.push(if dir {
            Undo::Releasedir {
                inode,
                flags,
                handle,
            }
        } else {
            Undo::Release {
                inode,
                flags,
                handle,
            }
        });
    }

    fn into_iter(self) -> impl Iterator<Item = Undo> {
        self.inline.into_iter().flatten().chain(self.spilled)
    }

    fn is_empty(&self) -> bool {
        self.inline[0].is_none()
    }
}

/// Dispatches FUSE requests to a [`FileSystem`]. Shared by all queue threads.
pub struct Server<F: FileSystem> {
    fs: F,
    /// Set between a successful INIT and DESTROY.
    ready: AtomicBool,
    /// Serialises INIT and DESTROY so the filesystem sees them in a consistent order.
    lifecycle: Mutex<()>,
    /// The flags agreed at the last INIT.
    negotiated: AtomicU64,
    /// Requests, errors and bytes, counted per thread (see [`crate::stats`]).
    stats: RequestStats,
    /// The id translation applied to every request and reply (see [`crate::ids`]).
    ids: WireIds,
}

impl<F: FileSystem> Server<F> {
    pub fn new(fs: F) -> Self {
        Server {
            fs,
            ready: AtomicBool::new(false),
            lifecycle: Mutex::new(()),
            negotiated: AtomicU64::new(0),
            stats: RequestStats::new(),
            ids: WireIds::default(),
        }
    }

    /// Serves with `policy` translating ids between guest and host (`--translate-uid`,
    /// `--translate-gid`): the filesystem sees host ids in every request (a guest id the rules
    /// forbid as [`crate::filesystem::FORBIDDEN_ID`]; SETATTR giving a file to one answers
    /// `EPERM`), the guest sees guest ids in every reply, and POSIX ACL values are rewritten
    /// both ways. Without it ids are the same numbers on both sides.
    pub fn with_id_policy(mut self, policy: IdPolicy) -> Self {
        self.ids = WireIds::new(policy);
        self
    }

    /// The id translation this server applies.
    pub fn id_policy(&self) -> &IdPolicy {
        self.ids.policy()
    }

    /// The request counters of this server.
    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// The filesystem being served.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// The `FUSE_*` flags agreed at the last successful INIT (0 before it).
    pub fn negotiated_flags(&self) -> u64 {
        self.negotiated.load(Ordering::Acquire)
    }

    /// Whether the request starting with `request_start` (at least its header) may wait for a
    /// long time inside the filesystem (SETLKW waits for a conflicting lock to go away), so a
    /// transport should run it where it delays no other request.
    pub fn may_block(request_start: &[u8]) -> bool {
        InHeader::from_prefix(request_start).is_some_and(|(h, _)| h.opcode == Opcode::Setlkw as u32)
    }

    /// Answers a request with `errno` without running it, for a transport that cannot take on
    /// more waiting requests. Requests that take no reply get none.
    pub fn refuse<R: RequestReader, W: ReplyWriter>(
        &self,
        r: &mut R,
        w: W,
        errno: i32,
    ) -> Result<usize, Error> {
        stats::begin();
        let result = Self::refuse_unrecorded(r, w, errno);
        self.stats.record(result.is_ok());
        result
    }

    fn refuse_unrecorded<R: RequestReader, W: ReplyWriter>(
        r: &mut R,
        mut w: W,
        errno: i32,
    ) -> Result<usize, Error> {
        let available = r.available_bytes();
        if available < IN_HEADER_LEN {
            return Err(Error::TruncatedHeader { available });
        }
        let mut raw = [0u8; IN_HEADER_LEN];
        r.read_exact(&mut raw).map_err(Error::Io)?;
        let h = InHeader::from_bytes(&raw).ok_or(Error::TruncatedHeader { available })?;
        let opcode = Opcode::try_from(h.opcode);
        stats::note_opcode(&opcode);
        match opcode {
            Ok(Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt) => Ok(0),
            _ => reply_error(&mut w, h.unique, errno),
        }
    }

    /// Handles one request; returns the number of reply bytes written (0 for requests that take no
    /// reply).
    pub fn handle_message<R: RequestReader, W: ReplyWriter>(
        &self,
        r: &mut R,
        w: W,
    ) -> Result<usize, Error> {
        stats::begin();
        let result = self.dispatch(r, w);
        self.stats.record(result.is_ok());
        result
    }

    fn dispatch<R: RequestReader, W: ReplyWriter>(
        &self,
        r: &mut R,
        mut w: W,
    ) -> Result<usize, Error> {
        let available = r.available_bytes();
        if available < IN_HEADER_LEN {
            return Err(Error::TruncatedHeader { available });
        }
        let mut raw = [0u8; IN_HEADER_LEN];
        r.read_exact(&mut raw).map_err(Error::Io)?;
        let h = InHeader::from_bytes(&raw).ok_or(Error::TruncatedHeader { available })?;
        let opcode = Opcode::try_from(h.opcode);
        stats::note_opcode(&opcode);
        if opcode == Ok(Opcode::Interrupt) {
            // virtio-fs kernels never send INTERRUPT (requests are not interruptible once queued),
            // and the FUSE rules let a server ignore one: the interrupted request completes
            // normally. Answering nothing also gives a hostile guest nothing to match replies
            // against; the chain is returned with no reply bytes.
            crate::guest_log!(log::Level::Debug, "request {}: INTERRUPT ignored", h.unique);
            return Ok(0);
        }
        let no_reply = matches!(opcode, Ok(Opcode::Forget) | Ok(Opcode::BatchForget));

        let body_len = available - IN_HEADER_LEN;
        let ext_len = h.total_extlen as usize * 8;
        if h.len as usize != available || ext_len > body_len {
            crate::guest_log!(
                log::Level::Debug,
                "request {}: header says {} bytes, {} present (extensions {ext_len})",
                h.unique,
                h.len,
                available
            );
            if no_reply {
                return Err(Error::MalformedForget { unique: h.unique });
            }
            return reply_error(&mut w, h.unique, libc::EINVAL);
        }
        let args_len = body_len - ext_len;
        let mut ctx = Context {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
            supplementary_gid: None,
            security_context: None,
        };
        self.ids.credentials_to_host(&mut ctx);

        let op = match opcode {
            Ok(Opcode::Init) => {
                if args_len > MAX_ARGS_LEN {
                    return reply_error(&mut w, h.unique, libc::EINVAL);
                }
                let args = read_args(r, args_len)?;
                return self.init(&h, &args, &mut w);
            }
            Ok(op) if no_reply => {
                if args_len > MAX_WRITE as usize {
                    return Err(Error::MalformedForget { unique: h.unique });
                }
                let args = read_args(r, args_len)?;
                return self.forget(ctx, op, &h, &args);
            }
            _ if !self.ready.load(Ordering::Acquire) => {
                return reply_error(&mut w, h.unique, libc::EIO);
            }
            Ok(op) => op,
            Err(unknown) => {
                crate::guest_log!(log::Level::Debug, "request {}: {unknown}", h.unique);
                return reply_error(&mut w, h.unique, libc::ENOSYS);
            }
        };

        if op == Opcode::Write {
            let result = self.write(ctx, &h, r, args_len);
            return reply(&mut w, h.unique, result);
        }
        if args_len > MAX_ARGS_LEN {
            return reply_error(&mut w, h.unique, libc::EINVAL);
        }
        let args = read_args(r, args_len)?;
        let wanted = self.extensions_wanted(op);
        if wanted.any() {
            let raw = read_args(r, ext_len)?;
            if let Err(errno) = self.apply_extensions(&raw, wanted, &mut ctx) {
                return reply_error(&mut w, h.unique, errno);
            }
        }
        let node = h.nodeid;
        // What the operation took that the guest learns about only through the reply, and the
        // credentials to give it back with (the operation consumes its own).
        let mut taken = Taken::default();
        let undo_ctx = ctx.clone();
        let result = match op {
            Opcode::Read => return self.read(ctx, &h, &args, w),
            Opcode::Readdir | Opcode::Readdirplus => {
                let room = w.available_bytes().saturating_sub(OUT_HEADER_LEN);
                self.readdir(ctx, op, node, &args, room, &mut taken)
            }
            Opcode::Destroy => self.destroy(),
            Opcode::Lookup => self.lookup(ctx, node, &args, &mut taken),
            Opcode::Getattr => self.getattr(ctx, node, &args),
            Opcode::Setattr => self.setattr(ctx, node, &args),
            Opcode::Readlink => self.fs.readlink(ctx, node).map_err(|e| os_error(op, e)),
            Opcode::Symlink => self.symlink(ctx, node, &args, &mut taken),
            Opcode::Mknod => self.mknod(ctx, node, &args, &mut taken),
            Opcode::Mkdir => self.mkdir(ctx, node, &args, &mut taken),
            Opcode::Unlink | Opcode::Rmdir => self.remove(ctx, op, node, &args),
            Opcode::Rename | Opcode::Rename2 => self.rename(ctx, op, node, &args),
            Opcode::Link => self.link(ctx, node, &args, &mut taken),
            Opcode::Open | Opcode::Opendir => self.open(ctx, op, node, &args, &mut taken),
            Opcode::Create => self.create(ctx, node, &args, &mut taken),
            Opcode::Statfs => self.statfs(ctx, node),
            Opcode::Release | Opcode::Releasedir => self.release(ctx, op, node, &args),
            Opcode::Fsync | Opcode::Fsyncdir => self.fsync(ctx, op, node, &args),
            Opcode::Flush => self.flush(ctx, node, &args),
            Opcode::Access => self.access(ctx, node, &args),
            Opcode::Getxattr => self.getxattr(ctx, node, &args),
            Opcode::Listxattr => self.listxattr(ctx, node, &args),
            Opcode::Setxattr => self.setxattr(ctx, node, &args),
            Opcode::Removexattr => self.removexattr(ctx, node, &args),
            Opcode::Fallocate => self.fallocate(ctx, node, &args),
            Opcode::Lseek => self.lseek(ctx, node, &args),
            Opcode::CopyFileRange => self.copy_file_range(ctx, node, &args),
            Opcode::Syncfs => self.syncfs(ctx, node, &args),
            Opcode::Getlk => self.getlk(ctx, node, &args),
            Opcode::Setlk | Opcode::Setlkw => self.setlk(ctx, op, node, &args),
            Opcode::Tmpfile => self.tmpfile(ctx, node, &args, &mut taken),
            Opcode::Statx => self.statx(ctx, node, &args),
            _ => Err(libc::ENOSYS),
        };
        let replied = reply(&mut w, h.unique, result);
        if let Err(e) = &replied {
            if !taken.is_empty() {
                crate::guest_log!(
                    log::Level::Debug,
                    "request {}: {op:?} reply not delivered ({e}); undoing it",
                    h.unique
                );
                self.undo(undo_ctx, taken);
            }
        }
        replied
    }

    /// The extension records `op` carries that the negotiated flags make the dispatcher read:
    /// only create-type requests carry any, and a request with none wanted leaves its extension
    /// area unread.
    fn extensions_wanted(&self, op: Opcode) -> ext::Wanted {
        if !creates_inode(op) {
            return ext::Wanted::default();
        }
        let flags = self.negotiated_flags();
        ext::Wanted {
            groups: flags & FUSE_CREATE_SUPP_GROUP != 0,
            security_context: flags & FUSE_SECURITY_CTX != 0,
        }
    }

    /// Puts what a create-type request's extension area says into `ctx`: the supplementary
    /// group, as a host id, and the security label.
    fn apply_extensions(
        &self,
        raw: &[u8],
        wanted: ext::Wanted,
        ctx: &mut Context,
    ) -> Result<(), i32> {
        let found = ext::parse(raw, wanted)?;
        ctx.supplementary_gid = found
            .supplementary_gid
            .map(|g| self.ids.supplementary_gid_to_host(g));
        ctx.security_context = found.security_context;
        Ok(())
    }

    /// Gives back what an operation took when its reply could not be delivered: the guest never
    /// learns of the inode or handle, so it would never FORGET or RELEASE it.
    fn undo(&self, ctx: Context, taken: Taken) {
        for t in taken.into_iter() {
            match t {
                Undo::Forget { inode } => self.fs.forget(ctx.clone(), inode, 1),
                Undo::Release {
                    inode,
                    flags,
                    handle,
                } => {
                    if let Err(e) = self
                        .fs
                        .release(ctx.clone(), inode, flags, handle, false, None)
                    {
                        crate::guest_log!(log::Level::Debug, "undo RELEASE failed: {e}");
                    }
                }
                Undo::Releasedir {
                    inode,
                    flags,
                    handle,
                } => {
                    if let Err(e) = self.fs.releasedir(ctx.clone(), inode, flags, handle) {
                        crate::guest_log!(log::Level::Debug, "undo RELEASEDIR failed: {e}");
                    }
                }
            }
        }
    }

    fn init<W: ReplyWriter>(&self, h: &InHeader, args: &[u8], w: &mut W) -> Result<usize, Error> {
        // Kernels before 7.36 send only the first 16 bytes; the rest reads as zero.
        if args.len() < 16 {
            return reply_error(w, h.unique, libc::EINVAL);
        }
        let mut buf = [0u8; size_of::<InitIn>()];
        let n = args.len().min(buf.len());
        buf[..n].copy_from_slice(&args[..n]);
        let Some(init) = InitIn::from_bytes(&buf) else {
            return reply_error(w, h.unique, libc::EINVAL);
        };
        if init.major > KERNEL_VERSION {
            // A newer major: answer with ours only; the kernel decides whether to retry.
            let out = InitOut {
                major: KERNEL_VERSION,
                minor: KERNEL_MINOR_VERSION,
                ..Default::default()
            };
            return reply(w, h.unique, Ok(out.as_bytes().to_vec()));
        }
        if init.major < KERNEL_VERSION || init.minor < MIN_KERNEL_MINOR_VERSION {
            crate::guest_log!(
                log::Level::Debug,
                "unsupported FUSE protocol {}.{}",
                init.major,
                init.minor
            );
            return reply_error(w, h.unique, libc::EPROTO);
        }

        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if self.ready.swap(false, Ordering::AcqRel) {
            // A guest kernel sends INIT only when it mounts: on a live session that means its
            // driver started over without a DESTROY (a reboot or device reset in the same VM).
            // The old session's inodes, handles and locks belong to a kernel that is gone.
            crate::guest_log!(
                log::Level::Info,
                "request {}: FUSE_INIT on a live session (the guest reset the device); starting a new session",
                h.unique
            );
            self.negotiated.store(0, Ordering::Release);
            self.fs.destroy();
        }
        let mut offered = init.flags as u64;
        if offered & FUSE_INIT_EXT != 0 {
            offered |= (init.flags2 as u64) << 32;
        }
        let wanted = match self.fs.init(InitOptions { offered }) {
            Ok(flags) => flags,
            Err(e) => return reply_error(w, h.unique, os_error(Opcode::Init, e)),
        };
        let enabled = ((wanted & !DISPATCHER_UNSUPPORTED) | DISPATCHER_FLAGS) & offered;
        let out = InitOut {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: init.max_readahead,
            flags: enabled as u32,
            flags2: (enabled >> 32) as u32,
            max_write: MAX_WRITE,
            time_gran: 1,
            max_pages: max_pages(),
            ..Default::default()
        };
        match reply(w, h.unique, Ok(out.as_bytes().to_vec())) {
            Ok(n) => {
                self.negotiated.store(enabled, Ordering::Release);
                self.ready.store(true, Ordering::Release);
                Ok(n)
            }
            Err(e) => {
                // The kernel never learns the session started, so undo it.
                self.fs.destroy();
                Err(e)
            }
        }
    }

    fn destroy(&self) -> OpResult {
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if !self.ready.swap(false, Ordering::AcqRel) {
            return Err(libc::EIO);
        }
        self.negotiated.store(0, Ordering::Release);
        self.fs.destroy();
        Ok(Vec::new())
    }

    /// The transport went away without a FUSE_DESTROY (the frontend disconnected) and another
    /// guest session will follow: drops the session as DESTROY does, so the next one starts with
    /// an INIT and nothing of the old one (inodes, handles, locks) survives. The request counters
    /// go on.
    pub fn end_session(&self) {
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        self.ready.store(false, Ordering::Release);
        self.negotiated.store(0, Ordering::Release);
        self.fs.destroy();
    }

    fn forget(&self, ctx: Context, op: Opcode, h: &InHeader, args: &[u8]) -> Result<usize, Error> {
        let malformed = Error::MalformedForget { unique: h.unique };
        if !self.ready.load(Ordering::Acquire) {
            // Forgets cannot be refused with a reply; before INIT there is nothing to forget.
            return Ok(0);
        }
        if op == Opcode::Forget {
            let (f, _) = ForgetIn::from_prefix(args).ok_or(malformed)?;
            self.fs.forget(ctx, h.nodeid, f.nlookup);
            return Ok(0);
        }
        let (batch, mut rest) = BatchForgetIn::from_prefix(args).ok_or(malformed)?;
        let count = batch.count as usize;
        if rest.len() / size_of::<ForgetOne>() < count {
            return Err(Error::MalformedForget { unique: h.unique });
        }
        let mut requests = Vec::with_capacity(count);
        for _ in 0..count {
            let Some((one, tail)) = ForgetOne::from_prefix(rest) else {
                return Err(Error::MalformedForget { unique: h.unique });
            };
            requests.push((one.nodeid, one.nlookup));
            rest = tail;
        }
        self.fs.batch_forget(ctx, &requests);
        Ok(0)
    }

    fn lookup(&self, ctx: Context, parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        let (name, _) = parse_name(args)?;
        let entry = self
            .fs
            .lookup(ctx, parent, name)
            .map_err(|e| os_error(Opcode::Lookup, e))?;
        taken.entry(&entry);
        Ok(entry_out(&entry, &self.ids).as_bytes().to_vec())
    }

    fn getattr(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (g, _) = arg::<GetattrIn>(args)?;
        let handle = (g.getattr_flags & FUSE_GETATTR_FH != 0).then_some(g.fh);
        let (st, timeout) = self
            .fs
            .getattr(ctx, node, handle)
            .map_err(|e| os_error(Opcode::Getattr, e))?;
        Ok(attr_out(&st, timeout, &self.ids).as_bytes().to_vec())
    }

    fn setattr(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (s, _) = arg::<SetattrIn>(args)?;
        let (mut attr, handle) = decode_setattr(&s);
        self.ids.owner_to_host(&mut attr)?;
        let (st, timeout) = self
            .fs
            .setattr(ctx, node, attr, handle)
            .map_err(|e| os_error(Opcode::Setattr, e))?;
        Ok(attr_out(&st, timeout, &self.ids).as_bytes().to_vec())
    }

    fn symlink(&self, ctx: Context, parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        let (name, rest) = parse_name(args)?;
        let (target, _) = parse_symlink_target(rest)?;
        let entry = self
            .fs
            .symlink(ctx, target, parent, name)
            .map_err(|e| os_error(Opcode::Symlink, e))?;
        taken.entry(&entry);
        Ok(entry_out(&entry, &self.ids).as_bytes().to_vec())
    }

    fn mknod(&self, ctx: Context, parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        let (m, rest) = arg::<MknodIn>(args)?;
        let (name, _) = parse_name(rest)?;
        let entry = self
            .fs
            .mknod(ctx, parent, name, m.mode, m.rdev, m.umask)
            .map_err(|e| os_error(Opcode::Mknod, e))?;
        taken.entry(&entry);
        Ok(entry_out(&entry, &self.ids).as_bytes().to_vec())
    }

    fn mkdir(&self, ctx: Context, parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        let (m, rest) = arg::<MkdirIn>(args)?;
        let (name, _) = parse_name(rest)?;
        let entry = self
            .fs
            .mkdir(ctx, parent, name, m.mode, m.umask)
            .map_err(|e| os_error(Opcode::Mkdir, e))?;
        taken.entry(&entry);
        Ok(entry_out(&entry, &self.ids).as_bytes().to_vec())
    }

    fn remove(&self, ctx: Context, op: Opcode, parent: u64, args: &[u8]) -> OpResult {
        let (name, _) = parse_name(args)?;
        let result = if op == Opcode::Unlink {
            self.fs.unlink(ctx, parent, name)
        } else {
            self.fs.rmdir(ctx, parent, name)
        };
        result.map_err(|e| os_error(op, e))?;
        Ok(Vec::new())
    }

    fn rename(&self, ctx: Context, op: Opcode, parent: u64, args: &[u8]) -> OpResult {
        let (new_parent, flags, rest) = if op == Opcode::Rename {
            let (r, rest) = arg::<RenameIn>(args)?;
            (r.newdir, 0, rest)
        } else {
            let (r, rest) = arg::<Rename2In>(args)?;
            (r.newdir, r.flags, rest)
        };
        let (old_name, rest) = parse_name(rest)?;
        let (new_name, _) = parse_name(rest)?;
        self.fs
            .rename(ctx, parent, old_name, new_parent, new_name, flags)
            .map_err(|e| os_error(op, e))?;
        Ok(Vec::new())
    }

    fn link(&self, ctx: Context, new_parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        let (l, rest) = arg::<LinkIn>(args)?;
        let (name, _) = parse_name(rest)?;
        let entry = self
            .fs
            .link(ctx, l.oldnodeid, new_parent, name)
            .map_err(|e| os_error(Opcode::Link, e))?;
        taken.entry(&entry);
        Ok(entry_out(&entry, &self.ids).as_bytes().to_vec())
    }

    fn open(
        &self,
        ctx: Context,
        op: Opcode,
        node: u64,
        args: &[u8],
        taken: &mut Taken,
    ) -> OpResult {
        let (o, _) = arg::<OpenIn>(args)?;
        let result = if op == Opcode::Open {
            let kill_suidgid = o.open_flags & FUSE_OPEN_KILL_SUIDGID != 0;
            self.fs.open(ctx, node, o.flags, kill_suidgid)
        } else {
            self.fs.opendir(ctx, node, o.flags)
        };
        let (handle, options) = result.map_err(|e| os_error(op, e))?;
        if let Some(handle) = handle {
            taken.handle(op == Opcode::Opendir, node, o.flags, handle);
        }
        Ok(open_out(handle, options).as_bytes().to_vec())
    }

    fn create(&self, ctx: Context, parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        let (c, rest) = arg::<CreateIn>(args)?;
        let (name, _) = parse_name(rest)?;
        let (entry, handle, options) = self
            .fs
            .create(
                ctx,
                parent,
                name,
                c.mode,
                c.flags,
                c.umask,
                c.open_flags & FUSE_OPEN_KILL_SUIDGID != 0,
            )
            .map_err(|e| os_error(Opcode::Create, e))?;
        // The handle first: releasing it may need the inode the forget would drop.
        if let Some(handle) = handle {
            taken.handle(false, entry.inode, c.flags, handle);
        }
        taken.entry(&entry);
        let mut out = entry_out(&entry, &self.ids).as_bytes().to_vec();
        out.extend_from_slice(open_out(handle, options).as_bytes());
        Ok(out)
    }

    fn read<W: ReplyWriter>(
        &self,
        ctx: Context,
        h: &InHeader,
        args: &[u8],
        mut w: W,
    ) -> Result<usize, Error> {
        let (rd, _) = match arg::<ReadIn>(args) {
            Ok(v) => v,
            Err(errno) => return reply_error(&mut w, h.unique, errno),
        };
        let room = w.available_bytes();
        if room < OUT_HEADER_LEN {
            return Err(Error::ReplyTooLarge {
                needed: OUT_HEADER_LEN,
                available: room,
            });
        }
        let room = u32::try_from(room - OUT_HEADER_LEN).unwrap_or(u32::MAX);
        let size = rd.size.min(MAX_WRITE).min(room);
        let mut data = w.split_at(OUT_HEADER_LEN).map_err(Error::Io)?;
        match self
            .fs
            .read(ctx, h.nodeid, rd.fh, &mut data, size, rd.offset, rd.flags)
        {
            Ok(claimed) => {
                // The bytes actually in the buffers are the truth, whatever the count says.
                let written = data.bytes_written();
                if claimed != written {
                    crate::guest_log!(
                        log::Level::Debug,
                        "read {}: fs claimed {claimed} bytes, wrote {written}",
                        h.unique
                    );
                }
                let len = OUT_HEADER_LEN + written;
                let header = OutHeader {
                    len: len as u32,
                    error: 0,
                    unique: h.unique,
                };
                w.write_all(header.as_bytes()).map_err(Error::Io)?;
                stats::note_bytes_read(written);
                Ok(len)
            }
            Err(e) => reply_error(&mut w, h.unique, os_error(Opcode::Read, e)),
        }
    }

    fn write<R: RequestReader>(
        &self,
        ctx: Context,
        h: &InHeader,
        r: &mut R,
        args_len: usize,
    ) -> OpResult {
        if args_len < size_of::<WriteIn>() {
            return Err(libc::EINVAL);
        }
        let mut raw = [0u8; size_of::<WriteIn>()];
        r.read_exact(&mut raw).map_err(|_| libc::EINVAL)?;
        let wr = WriteIn::from_bytes(&raw).ok_or(libc::EINVAL)?;
        let payload = args_len - size_of::<WriteIn>();
        if wr.size as usize > payload
            || wr.size as usize > r.available_bytes()
            || wr.size > MAX_WRITE
        {
            return Err(libc::EINVAL);
        }
        let kill_suidgid = wr.write_flags & FUSE_WRITE_KILL_SUIDGID != 0;
        let reader: &mut dyn ZeroCopyReader = r;
        let n = self
            .fs
            .write(
                ctx,
                h.nodeid,
                wr.fh,
                reader,
                wr.size,
                wr.offset,
                kill_suidgid,
                wr.flags,
            )
            .map_err(|e| os_error(Opcode::Write, e))?;
        let out = WriteOut {
            size: n.min(wr.size as usize) as u32,
            padding: 0,
        };
        stats::note_bytes_written(out.size as usize);
        Ok(out.as_bytes().to_vec())
    }

    fn readdir(
        &self,
        ctx: Context,
        op: Opcode,
        node: u64,
        args: &[u8],
        room: usize,
        taken: &mut Taken,
    ) -> OpResult {
        let (rd, _) = arg::<ReadIn>(args)?;
        let cap = (rd.size as usize).min(room).min(MAX_WRITE as usize);
        let mut buf: Vec<u8> = Vec::with_capacity(cap);
        let result = if op == Opcode::Readdir {
            let mut add = |d: DirEntry<'_>| push_dirent(&mut buf, cap, None, &d, &self.ids);
            self.fs
                .readdir(ctx, node, rd.fh, rd.size, rd.offset, &mut add)
        } else {
            let mut add = |d: DirEntry<'_>, e: Entry| {
                let used = push_dirent(&mut buf, cap, Some(&e), &d, &self.ids)?;
                if used > 0 {
                    taken.entry(&e);
                }
                Ok(used)
            };
            self.fs
                .readdirplus(ctx, node, rd.fh, rd.size, rd.offset, &mut add)
        };
        match result {
            Ok(()) => Ok(buf),
            // Entries already added may carry lookup references the guest must learn about, so
            // they are delivered; the guest asks again from the next offset and meets the error.
            Err(_) if !buf.is_empty() => Ok(buf),
            Err(e) => Err(os_error(op, e)),
        }
    }

    fn statfs(&self, ctx: Context, node: u64) -> OpResult {
        let st = self
            .fs
            .statfs(ctx, node)
            .map_err(|e| os_error(Opcode::Statfs, e))?;
        Ok(statfs_out(&st).as_bytes().to_vec())
    }

    fn release(&self, ctx: Context, op: Opcode, node: u64, args: &[u8]) -> OpResult {
        let (rel, _) = arg::<ReleaseIn>(args)?;
        let result = if op == Opcode::Release {
            let flush = rel.release_flags & FUSE_RELEASE_FLUSH != 0;
            let lock_owner =
                (rel.release_flags & FUSE_RELEASE_FLOCK_UNLOCK != 0).then_some(rel.lock_owner);
            self.fs
                .release(ctx, node, rel.flags, rel.fh, flush, lock_owner)
        } else {
            self.fs.releasedir(ctx, node, rel.flags, rel.fh)
        };
        result.map_err(|e| os_error(op, e))?;
        Ok(Vec::new())
    }

    fn fsync(&self, ctx: Context, op: Opcode, node: u64, args: &[u8]) -> OpResult {
        let (f, _) = arg::<FsyncIn>(args)?;
        let datasync = f.fsync_flags & FUSE_FSYNC_FDATASYNC != 0;
        let result = if op == Opcode::Fsync {
            self.fs.fsync(ctx, node, datasync, f.fh)
        } else {
            self.fs.fsyncdir(ctx, node, datasync, f.fh)
        };
        result.map_err(|e| os_error(op, e))?;
        Ok(Vec::new())
    }

    fn flush(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (f, _) = arg::<FlushIn>(args)?;
        self.fs
            .flush(ctx, node, f.fh, f.lock_owner)
            .map_err(|e| os_error(Opcode::Flush, e))?;
        Ok(Vec::new())
    }

    fn access(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (a, _) = arg::<AccessIn>(args)?;
        self.fs
            .access(ctx, node, a.mask)
            .map_err(|e| os_error(Opcode::Access, e))?;
        Ok(Vec::new())
    }

    fn getxattr(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (g, rest) = arg::<GetxattrIn>(args)?;
        let (name, _) = parse_xattr_name(rest)?;
        // getxattr(2) clamps larger buffers the same way before asking.
        let size = g.size.min(MAX_XATTR_SIZE);
        let value = self
            .fs
            .getxattr(ctx, node, name, size)
            .map_err(|e| os_error(Opcode::Getxattr, e))?;
        let value = self.ids.xattr_reply_to_guest(name, size, value)?;
        xattr_reply(value, size, |_| true)
    }

    fn listxattr(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (g, _) = arg::<GetxattrIn>(args)?;
        let size = g.size.min(MAX_XATTR_SIZE);
        let list = self
            .fs
            .listxattr(ctx, node, size)
            .map_err(|e| os_error(Opcode::Listxattr, e))?;
        xattr_reply(list, size, valid_xattr_list)
    }

    fn setxattr(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        // The argument struct grew with FUSE_SETXATTR_EXT; the kernel sends the long form only
        // once that was agreed.
        let (size, flags, setxattr_flags, rest) =
            if self.negotiated_flags() & FUSE_SETXATTR_EXT != 0 {
                let (x, rest) = arg::<SetxattrIn>(args)?;
                (x.size, x.flags, x.setxattr_flags, rest)
            } else {
                let (x, rest) = arg::<SetxattrInCompat>(args)?;
                (x.size, x.flags, 0, rest)
            };
        let (name, rest) = parse_xattr_name(rest)?;
        if size > MAX_XATTR_SIZE {
            return Err(libc::E2BIG);
        }
        let value = rest.get(..size as usize).ok_or(libc::EINVAL)?;
        let value = self.ids.xattr_value_to_host(name, value)?;
        self.fs
            .setxattr(ctx, node, name, &value, flags, setxattr_flags)
            .map_err(|e| os_error(Opcode::Setxattr, e))?;
        Ok(Vec::new())
    }

    fn removexattr(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (name, _) = parse_xattr_name(args)?;
        self.fs
            .removexattr(ctx, node, name)
            .map_err(|e| os_error(Opcode::Removexattr, e))?;
        Ok(Vec::new())
    }

    fn fallocate(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (f, _) = arg::<FallocateIn>(args)?;
        // fallocate(2)'s own checks: offsets are signed on the host, and the range must not
        // pass the largest file offset.
        if f.offset > i64::MAX as u64 || f.length == 0 || f.length > i64::MAX as u64 {
            return Err(libc::EINVAL);
        }
        if f.offset
            .checked_add(f.length)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(libc::EFBIG);
        }
        self.fs
            .fallocate(ctx, node, f.fh, f.mode, f.offset, f.length)
            .map_err(|e| os_error(Opcode::Fallocate, e))?;
        Ok(Vec::new())
    }

    fn lseek(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (l, _) = arg::<LseekIn>(args)?;
        let known = [
            libc::SEEK_SET,
            libc::SEEK_CUR,
            libc::SEEK_END,
            libc::SEEK_DATA,
            libc::SEEK_HOLE,
        ];
        if !known.iter().any(|&w| w as u32 == l.whence) {
            return Err(libc::EINVAL);
        }
        let offset = self
            .fs
            .lseek(ctx, node, l.fh, l.offset, l.whence)
            .map_err(|e| os_error(Opcode::Lseek, e))?;
        Ok(LseekOut { offset }.as_bytes().to_vec())
    }

    fn copy_file_range(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (c, _) = arg::<CopyFileRangeIn>(args)?;
        // copy_file_range(2) defines no flags; the kernel refuses any before asking.
        if c.flags != 0 || c.off_in > i64::MAX as u64 || c.off_out > i64::MAX as u64 {
            return Err(libc::EINVAL);
        }
        let len = c.len.min(MAX_COPY_LEN);
        let n = self
            .fs
            .copy_file_range(
                ctx,
                node,
                c.fh_in,
                c.off_in,
                c.nodeid_out,
                c.fh_out,
                c.off_out,
                len,
                c.flags,
            )
            .map_err(|e| os_error(Opcode::CopyFileRange, e))?;
        let out = WriteOut {
            size: (n as u64).min(len) as u32,
            padding: 0,
        };
        Ok(out.as_bytes().to_vec())
    }

    fn syncfs(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        arg::<SyncfsIn>(args)?;
        self.fs
            .syncfs(ctx, node)
            .map_err(|e| os_error(Opcode::Syncfs, e))?;
        Ok(Vec::new())
    }

    fn getlk(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let request = decode_lock(args)?;
        // F_GETLK asks about a lock one could take; "unlock" is not one (fcntl(2): EINVAL).
        if request.lock.lock_type == libc::F_UNLCK as u32 {
            return Err(libc::EINVAL);
        }
        let found = self
            .fs
            .getlk(ctx, node, request)
            .map_err(|e| os_error(Opcode::Getlk, e))?;
        if !valid_lock_type(found.lock_type) || found.start > found.end {
            crate::guest_log!(
                log::Level::Debug,
                "getlk: filesystem returned a malformed lock {found:?}"
            );
            return Err(libc::EIO);
        }
        let out = LkOut {
            lk: abi::FileLock {
                start: found.start,
                end: found.end,
                typ: found.lock_type,
                pid: found.pid,
            },
        };
        Ok(out.as_bytes().to_vec())
    }

    fn setlk(&self, ctx: Context, op: Opcode, node: u64, args: &[u8]) -> OpResult {
        let request = decode_lock(args)?;
        self.fs
            .setlk(ctx, node, request, op == Opcode::Setlkw)
            .map_err(|e| os_error(op, e))?;
        Ok(Vec::new())
    }

    fn tmpfile(&self, ctx: Context, parent: u64, args: &[u8], taken: &mut Taken) -> OpResult {
        // The kernel sends a placeholder name ("/") after the arguments; the file has none.
        let (c, _) = arg::<CreateIn>(args)?;
        let (entry, handle, options) = self
            .fs
            .tmpfile(ctx, parent, c.mode, c.flags, c.umask)
            .map_err(|e| os_error(Opcode::Tmpfile, e))?;
        if let Some(handle) = handle {
            taken.handle(false, entry.inode, c.flags, handle);
        }
        taken.entry(&entry);
        let mut out = entry_out(&entry, &self.ids).as_bytes().to_vec();
        out.extend_from_slice(open_out(handle, options).as_bytes());
        Ok(out)
    }

    fn statx(&self, ctx: Context, node: u64, args: &[u8]) -> OpResult {
        let (x, _) = arg::<StatxIn>(args)?;
        let handle = (x.getattr_flags & FUSE_GETATTR_FH != 0).then_some(x.fh);
        let (st, timeout) = self
            .fs
            .statx(ctx, node, handle, x.sx_flags, x.sx_mask)
            .map_err(|e| os_error(Opcode::Statx, e))?;
        let out = StatxOut {
            attr_valid: timeout.as_secs(),
            attr_valid_nsec: timeout.subsec_nanos(),
            flags: 0,
            spare: [0; 2],
            stat: statx_from(&st, &self.ids),
        };
        Ok(out.as_bytes().to_vec())
    }
}

/// Reads the `len` argument bytes of a request.
fn read_args<R: RequestReader>(r: &mut R, len: usize) -> Result<ArgBuf, Error> {
    ArgBuf::read(r, len).map_err(Error::Io)
}

fn arg<T: WireStruct>(args: &[u8]) -> Result<(T, &[u8]), i32> {
    T::from_prefix(args).ok_or(libc::EINVAL)
}

/// Splits a NUL-terminated string off the front of `bytes`.
fn split_cstr(bytes: &[u8]) -> Result<(&CStr, &[u8]), i32> {
    let nul = bytes.iter().position(|&b| b == 0).ok_or(libc::EINVAL)?;
    let s = CStr::from_bytes_with_nul(&bytes[..=nul]).map_err(|_| libc::EINVAL)?;
    Ok((s, &bytes[nul + 1..]))
}

/// Parses a name that designates one child of a directory.
pub(crate) fn parse_name(bytes: &[u8]) -> Result<(&CStr, &[u8]), i32> {
    let (name, rest) = split_cstr(bytes)?;
    let b = name.to_bytes();
    if b.len() > MAX_NAME_LEN {
        return Err(libc::ENAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    Ok((name, rest))
}

/// Parses an extended attribute name: any non-empty NUL-terminated string of at most
/// `XATTR_NAME_MAX` bytes. The kernel's syscalls answer ERANGE for an empty or overlong one.
pub(crate) fn parse_xattr_name(bytes: &[u8]) -> Result<(&CStr, &[u8]), i32> {
    let (name, rest) = split_cstr(bytes)?;
    let len = name.to_bytes().len();
    if len == 0 || len > MAX_XATTR_NAME_LEN {
        return Err(libc::ERANGE);
    }
    Ok((name, rest))
}

/// Encodes a GETXATTR/LISTXATTR answer for a guest buffer of `size` bytes (0: size query).
fn xattr_reply(value: XattrReply, size: u32, valid: impl Fn(&[u8]) -> bool) -> OpResult {
    match value {
        XattrReply::Data(data) if !valid(&data) => {
            crate::guest_log!(
                log::Level::Debug,
                "xattr reply of {} bytes is malformed",
                data.len()
            );
            Err(libc::EIO)
        }
        XattrReply::Data(data) if size == 0 => {
            let size = u32::try_from(data.len()).map_err(|_| libc::E2BIG)?;
            Ok(GetxattrOut { size, padding: 0 }.as_bytes().to_vec())
        }
        XattrReply::Data(data) if data.len() > size as usize => Err(libc::ERANGE),
        XattrReply::Data(data) => Ok(data),
        XattrReply::Size(n) if size == 0 => Ok(GetxattrOut {
            size: n,
            padding: 0,
        }
        .as_bytes()
        .to_vec()),
        // The guest wants bytes; a bare size would be read as an 8-byte value.
        XattrReply::Size(n) if n > size => Err(libc::ERANGE),
        XattrReply::Size(_) => Err(libc::EIO),
    }
}

/// A LISTXATTR list: NUL-terminated, non-empty names (the kernel answers EIO to anything else).
fn valid_xattr_list(list: &[u8]) -> bool {
    if list.is_empty() {
        return true;
    }
    list.last() == Some(&0)
        && list[..list.len() - 1]
            .split(|&b| b == 0)
            .all(|n| !n.is_empty())
}

fn valid_lock_type(t: u32) -> bool {
    [libc::F_RDLCK, libc::F_WRLCK, libc::F_UNLCK]
        .iter()
        .any(|&k| k as u32 == t)
}

/// Decodes GETLK/SETLK/SETLKW arguments, checking the lock is one fcntl(2) could describe.
fn decode_lock(args: &[u8]) -> Result<LockRequest, i32> {
    let (lk, _) = arg::<LkIn>(args)?;
    if !valid_lock_type(lk.lk.typ) || lk.lk.start > lk.lk.end {
        return Err(libc::EINVAL);
    }
    Ok(LockRequest {
        handle: lk.fh,
        owner: lk.owner,
        lock: FileLock {
            start: lk.lk.start,
            end: lk.lk.end,
            lock_type: lk.lk.typ,
            pid: lk.lk.pid,
        },
        flock: lk.lk_flags & FUSE_LK_FLOCK != 0,
    })
}

/// Requests that create an inode, which carry the `FUSE_EXT_GROUPS` and security-context
/// extensions.
fn creates_inode(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::Mknod | Opcode::Mkdir | Opcode::Create | Opcode::Symlink | Opcode::Tmpfile
    )
}

/// Parses a symlink target, which is an arbitrary non-empty path.
pub(crate) fn parse_symlink_target(bytes: &[u8]) -> Result<(&CStr, &[u8]), i32> {
    let (target, rest) = split_cstr(bytes)?;
    let len = target.to_bytes().len();
    if len == 0 {
        return Err(libc::EINVAL);
    }
    if len > MAX_SYMLINK_TARGET_LEN {
        return Err(libc::ENAMETOOLONG);
    }
    Ok((target, rest))
}

/// Appends one READDIR(PLUS) entry if it fits in `cap`; returns the bytes used or 0.
fn push_dirent(
    buf: &mut Vec<u8>,
    cap: usize,
    entry: Option<&Entry>,
    d: &DirEntry<'_>,
    ids: &WireIds,
) -> io::Result<usize> {
    // The kernel rejects the whole reply with EIO for such names; fail the same way, early.
    if d.name.is_empty()
        || d.name.len() > MAX_NAME_LEN
        || d.name.contains(&b'/')
        || d.name.contains(&0)
    {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    let fixed = if entry.is_some() {
        size_of::<Direntplus>()
    } else {
        size_of::<Dirent>()
    };
    let unpadded = fixed + d.name.len();
    let padded = abi::dirent_align(unpadded);
    if buf.len() + padded > cap {
        return Ok(0);
    }
    let dirent = Dirent {
        ino: d.inode,
        off: d.offset,
        namelen: d.name.len() as u32,
        typ: d.file_type,
    };
    if let Some(e) = entry {
        buf.extend_from_slice(entry_out(e, ids).as_bytes());
    }
    buf.extend_from_slice(dirent.as_bytes());
    buf.extend_from_slice(d.name);
    buf.resize(buf.len() + padded - unpadded, 0);
    Ok(padded)
}

/// Turns a filesystem error into the errno for the reply, logging it.
fn os_error(op: Opcode, e: io::Error) -> i32 {
    let errno = errno_of(&e);
    crate::guest_log!(
        log::Level::Debug,
        "{op:?} failed: {e} (replying errno {errno})"
    );
    errno
}

/// The errno an error is reported as: its raw OS error if that is a valid errno, else `EIO`.
pub(crate) fn errno_of(e: &io::Error) -> i32 {
    match e.raw_os_error() {
        Some(n) if (1..=MAX_ERRNO).contains(&n) => n,
        _ => libc::EIO,
    }
}

fn reply<W: ReplyWriter>(w: &mut W, unique: u64, result: OpResult) -> Result<usize, Error> {
    let payload = match result {
        Ok(p) => p,
        Err(errno) => return reply_error(w, unique, errno),
    };
    let len = OUT_HEADER_LEN + payload.len();
    let available = w.available_bytes();
    if len > available || u32::try_from(len).is_err() {
        return Err(Error::ReplyTooLarge {
            needed: len,
            available,
        });
    }
    let header = OutHeader {
        len: len as u32,
        error: 0,
        unique,
    };
    w.write_all(header.as_bytes()).map_err(Error::Io)?;
    w.write_all(&payload).map_err(Error::Io)?;
    Ok(len)
}

fn reply_error<W: ReplyWriter>(w: &mut W, unique: u64, errno: i32) -> Result<usize, Error> {
    let errno = if (1..=MAX_ERRNO).contains(&errno) {
        errno
    } else {
        libc::EIO
    };
    let available = w.available_bytes();
    if available < OUT_HEADER_LEN {
        return Err(Error::ReplyTooLarge {
            needed: OUT_HEADER_LEN,
            available,
        });
    }
    let header = OutHeader {
        len: OUT_HEADER_LEN as u32,
        error: -errno,
        unique,
    };
    w.write_all(header.as_bytes()).map_err(Error::Io)?;
    stats::note_errno(errno);
    Ok(OUT_HEADER_LEN)
}

fn decode_setattr(s: &SetattrIn) -> (SetAttr, Option<u64>) {
    let has = |bit: u32| s.valid & bit != 0;
    let time = |now: u32, set: u32, secs: u64, nsecs: u32| {
        if has(now) {
            Some(SetTime::Now)
        } else if has(set) {
            Some(SetTime::At {
                secs: secs as i64,
                nsecs,
            })
        } else {
            None
        }
    };
    let attr = SetAttr {
        mode: has(FATTR_MODE).then_some(s.mode),
        uid: has(FATTR_UID).then_some(s.uid),
        gid: has(FATTR_GID).then_some(s.gid),
        size: has(FATTR_SIZE).then_some(s.size),
        atime: time(FATTR_ATIME_NOW, FATTR_ATIME, s.atime, s.atimensec),
        mtime: time(FATTR_MTIME_NOW, FATTR_MTIME, s.mtime, s.mtimensec),
        kill_suidgid: has(FATTR_KILL_SUIDGID),
    };
    (attr, has(FATTR_FH).then_some(s.fh))
}

// `stat64` and `statvfs64` field types differ between architectures, so some casts are no-ops on
// one and needed on another.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn attr_from_stat(st: &libc::stat64, flags: u32, ids: &WireIds) -> Attr {
    Attr {
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: st.st_atime as u64,
        mtime: st.st_mtime as u64,
        ctime: st.st_ctime as u64,
        atimensec: st.st_atime_nsec as u32,
        mtimensec: st.st_mtime_nsec as u32,
        ctimensec: st.st_ctime_nsec as u32,
        mode: st.st_mode as u32,
        nlink: st.st_nlink as u32,
        uid: ids.uid_to_guest(st.st_uid as u32),
        gid: ids.gid_to_guest(st.st_gid as u32),
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags,
    }
}

#[allow(clippy::unnecessary_cast)]
fn statfs_out(st: &libc::statvfs64) -> StatfsOut {
    StatfsOut {
        st: Kstatfs {
            blocks: st.f_blocks as u64,
            bfree: st.f_bfree as u64,
            bavail: st.f_bavail as u64,
            files: st.f_files as u64,
            ffree: st.f_ffree as u64,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
            padding: 0,
            spare: [0; 6],
        },
    }
}

fn sx_time(t: &libc::statx_timestamp) -> SxTime {
    SxTime {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
        reserved: 0,
    }
}

fn statx_from(st: &libc::statx, ids: &WireIds) -> Statx {
    Statx {
        mask: st.stx_mask,
        blksize: st.stx_blksize,
        attributes: st.stx_attributes,
        nlink: st.stx_nlink,
        uid: ids.uid_to_guest(st.stx_uid),
        gid: ids.gid_to_guest(st.stx_gid),
        mode: st.stx_mode,
        spare0: 0,
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        attributes_mask: st.stx_attributes_mask,
        atime: sx_time(&st.stx_atime),
        btime: sx_time(&st.stx_btime),
        ctime: sx_time(&st.stx_ctime),
        mtime: sx_time(&st.stx_mtime),
        rdev_major: st.stx_rdev_major,
        rdev_minor: st.stx_rdev_minor,
        dev_major: st.stx_dev_major,
        dev_minor: st.stx_dev_minor,
        spare2: [0; 14],
    }
}

pub(crate) fn entry_out(e: &Entry, ids: &WireIds) -> EntryOut {
    EntryOut {
        nodeid: e.inode,
        generation: e.generation,
        entry_valid: e.entry_timeout.as_secs(),
        attr_valid: e.attr_timeout.as_secs(),
        entry_valid_nsec: e.entry_timeout.subsec_nanos(),
        attr_valid_nsec: e.attr_timeout.subsec_nanos(),
        attr: attr_from_stat(&e.attr, e.attr_flags, ids),
    }
}

fn attr_out(st: &libc::stat64, timeout: Duration, ids: &WireIds) -> AttrOut {
    AttrOut {
        attr_valid: timeout.as_secs(),
        attr_valid_nsec: timeout.subsec_nanos(),
        dummy: 0,
        attr: attr_from_stat(st, 0, ids),
    }
}

fn open_out(handle: Option<u64>, options: u32) -> OpenOut {
    OpenOut {
        fh: handle.unwrap_or(0),
        open_flags: options,
        backing_id: 0,
    }
}

/// `max_pages` for `MAX_WRITE`: the kernel counts in its pages.
fn max_pages() -> u16 {
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    (MAX_WRITE as u64).div_ceil(page).clamp(1, u16::MAX as u64) as u16
}

/// Live migration: the session state a source sends its destination ([`Server::save_state`]).
///
/// All integers little-endian:
///
/// | offset | size | field |
/// |--------|------|-------|
/// | 0      | 8    | [`STATE_MAGIC`] |
/// | 8      | 4    | version, [`STATE_VERSION`] |
/// | 12     | 4    | session flags: bit 0 ([`STATE_SESSION_READY`]) set when INIT completed; others 0 |
/// | 16     | 8    | the `FUSE_*` flags negotiated at INIT (0 when not ready) |
/// | 24     | 8    | length `n` of the filesystem's state (0 when not ready) |
/// | 32     | `n`  | the filesystem's state ([`FileSystem::save_state`]) |
///
/// Nothing may follow the filesystem's state.
pub const STATE_MAGIC: [u8; 8] = *b"VFSDSTAT";
/// The envelope version [`Server::save_state`] writes and [`Server::load_state`] accepts.
pub const STATE_VERSION: u32 = 1;
/// Session flag: the source's guest completed FUSE_INIT.
pub const STATE_SESSION_READY: u32 = 1 << 0;
const STATE_HEADER_LEN: usize = 32;
/// `FUSE_*` flags this dispatcher knows (bits 0 to 42); none above can have been negotiated.
const KNOWN_FLAGS: u64 = (1 << 43) - 1;

/// Why [`Server::load_state`] refused a migration state.
#[derive(Debug)]
pub enum StateError {
    /// Fewer bytes than the envelope header.
    Truncated(usize),
    /// The stream does not start with [`STATE_MAGIC`].
    Magic,
    /// An envelope version this dispatcher does not read.
    Version(u32),
    /// Session flags other than [`STATE_SESSION_READY`].
    SessionFlags(u32),
    /// The filesystem state's length does not match the bytes present.
    Length { claimed: u64, present: usize },
    /// Negotiated flags this dispatcher could not have agreed to.
    Flags(u64),
    /// A session that never started, yet with flags or filesystem bytes.
    NotReady,
    /// This server already serves a session (INIT or an earlier load).
    AlreadyServing,
    /// The filesystem refused its part.
    FileSystem(io::Error),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(n) => write!(
                f,
                "migration state of {n} bytes is shorter than its {STATE_HEADER_LEN}-byte header"
            ),
            Self::Magic => write!(f, "not a virtiofsd migration state (bad magic)"),
            Self::Version(v) => write!(
                f,
                "migration state version {v} is not supported (this device reads {STATE_VERSION})"
            ),
            Self::SessionFlags(v) => {
                write!(f, "unknown session flags {v:#x} in the migration state")
            }
            Self::Length { claimed, present } => write!(
                f,
                "the migration state claims {claimed} filesystem bytes but carries {present}"
            ),
            Self::Flags(v) => write!(
                f,
                "FUSE flags {v:#x} in the migration state cannot have been negotiated here"
            ),
            Self::NotReady => write!(
                f,
                "the migration state of a session that never started carries session data"
            ),
            Self::AlreadyServing => write!(f, "this device already serves a FUSE session"),
            Self::FileSystem(_) => write!(f, "the filesystem refused its migration state"),
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::FileSystem(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StateError> for io::Error {
    fn from(e: StateError) -> Self {
        match e {
            // The filesystem's own error keeps its errno, wrapped so the chain names both.
            StateError::FileSystem(ref inner) => io::Error::new(inner.kind(), e),
            StateError::AlreadyServing => io::Error::new(io::ErrorKind::ResourceBusy, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Whether `flags` could be the outcome of an INIT with this dispatcher: only known flags, none
/// it refuses to negotiate, and flags above bit 31 only with `FUSE_INIT_EXT` (which carries them).
fn negotiable(flags: u64) -> bool {
    flags & !KNOWN_FLAGS == 0
        && flags & DISPATCHER_UNSUPPORTED == 0
        && (flags >> 32 == 0 || flags & FUSE_INIT_EXT != 0)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl<F: FileSystem> Server<F> {
    /// Live migration, source side (the queues have stopped): the session state in the
    /// envelope described at [`STATE_MAGIC`], with the filesystem's own state inside. A
    /// session that never completed INIT carries no filesystem state.
    pub fn save_state(&self) -> io::Result<Vec<u8>> {
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready.load(Ordering::Acquire);
        let (session, negotiated, fs_state) = if ready {
            (
                STATE_SESSION_READY,
                self.negotiated_flags(),
                self.fs.save_state()?,
            )
        } else {
            (0, 0, Vec::new())
        };
        let mut out = Vec::with_capacity(STATE_HEADER_LEN + fs_state.len());
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&session.to_le_bytes());
        out.extend_from_slice(&negotiated.to_le_bytes());
        out.extend_from_slice(&(fs_state.len() as u64).to_le_bytes());
        out.extend_from_slice(&fs_state);
        Ok(out)
    }

    /// Live migration, destination side, before any request is served: checks the envelope
    /// (a corrupt or hostile one is refused, never trusted), hands the filesystem its state
    /// with the source's negotiated flags, and then serves the session as if this device had
    /// answered its INIT.
    pub fn load_state(&self, state: &[u8]) -> io::Result<()> {
        Ok(self.load_state_checked(state)?)
    }

    fn load_state_checked(&self, state: &[u8]) -> Result<(), StateError> {
        if state.len() < STATE_HEADER_LEN {
            return Err(StateError::Truncated(state.len()));
        }
        if state[..8] != STATE_MAGIC {
            return Err(StateError::Magic);
        }
        let version = le_u32(state, 8);
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        let session = le_u32(state, 12);
        if session & !STATE_SESSION_READY != 0 {
            return Err(StateError::SessionFlags(session));
        }
        let negotiated = le_u64(state, 16);
        let claimed = le_u64(state, 24);
        let fs_state = &state[STATE_HEADER_LEN..];
        if claimed != fs_state.len() as u64 {
            return Err(StateError::Length {
                claimed,
                present: fs_state.len(),
            });
        }
        if !negotiable(negotiated) {
            return Err(StateError::Flags(negotiated));
        }
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if self.ready.load(Ordering::Acquire) {
            return Err(StateError::AlreadyServing);
        }
        if session & STATE_SESSION_READY == 0 {
            // The guest never mounted: the destination starts as fresh as the source was.
            if negotiated != 0 || !fs_state.is_empty() {
                return Err(StateError::NotReady);
            }
            return Ok(());
        }
        self.fs
            .load_state(negotiated, fs_state)
            .map_err(StateError::FileSystem)?;
        self.negotiated.store(negotiated, Ordering::Release);
        self.ready.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// Keeps the bytes it is given and hands back `saved`.
    #[derive(Default)]
    struct Recorder {
        saved: Vec<u8>,
        loaded: StdMutex<Option<(u64, Vec<u8>)>>,
    }

    impl FileSystem for Recorder {
        fn init(&self, _opts: InitOptions) -> io::Result<u64> {
            Ok(FUSE_POSIX_LOCKS)
        }
        fn save_state(&self) -> io::Result<Vec<u8>> {
            Ok(self.saved.clone())
        }
        fn load_state(&self, negotiated: u64, state: &[u8]) -> io::Result<()> {
            if state == b"bad" {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            *self.loaded.lock().unwrap() = Some((negotiated, state.to_vec()));
            Ok(())
        }
    }

    fn ready_server(saved: &[u8], negotiated: u64) -> Server<Recorder> {
        let server = Server::new(Recorder {
            saved: saved.to_vec(),
            ..Recorder::default()
        });
        server.negotiated.store(negotiated, Ordering::Release);
        server.ready.store(true, Ordering::Release);
        server
    }

    fn refused(state: &[u8]) -> StateError {
        Server::new(Recorder::default())
            .load_state_checked(state)
            .expect_err("state accepted")
    }

    #[test]
    fn round_trip_restores_the_session() {
        let flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_INIT_EXT | FUSE_SECURITY_CTX;
        let state = ready_server(b"inodes", flags).save_state().unwrap();
        assert_eq!(&state[..8], b"VFSDSTAT");
        assert_eq!(state.len(), STATE_HEADER_LEN + 6);
        let dest = Server::new(Recorder::default());
        dest.load_state(&state).unwrap();
        assert!(dest.ready.load(Ordering::Acquire));
        assert_eq!(dest.negotiated_flags(), flags);
        assert_eq!(
            *dest.fs().loaded.lock().unwrap(),
            Some((flags, b"inodes".to_vec()))
        );
        // A second load, or one into a device already serving, is refused.
        assert!(matches!(
            dest.load_state_checked(&state),
            Err(StateError::AlreadyServing)
        ));
    }

    #[test]
    fn ended_session_takes_a_new_init() {
        let server = Server::new(Recorder::default());
        let init = || crate::testing::call(&server, crate::testing::init_request(1, 0), 4096);
        let (h, _) = crate::testing::parse_reply(&init().unwrap()).unwrap();
        assert_eq!(h.error, 0);
        server.end_session();
        assert_eq!(server.negotiated_flags(), 0);
        let (h, _) = crate::testing::parse_reply(&init().unwrap()).unwrap();
        assert_eq!(h.error, 0, "the next session starts with its own INIT");
    }

    #[test]
    fn session_that_never_started_stays_fresh() {
        let state = Server::new(Recorder::default()).save_state().unwrap();
        assert_eq!(state.len(), STATE_HEADER_LEN);
        let dest = Server::new(Recorder::default());
        dest.load_state(&state).unwrap();
        assert!(!dest.ready.load(Ordering::Acquire));
        assert!(dest.fs().loaded.lock().unwrap().is_none());
        let mut forged = state.clone();
        forged[24] = 1;
        forged.push(0);
        assert!(matches!(refused(&forged), StateError::NotReady));
    }

    #[test]
    fn corrupt_states_are_refused() {
        let good = ready_server(b"abc", FUSE_ASYNC_READ).save_state().unwrap();
        for n in 0..good.len() {
            // Every truncation fails cleanly.
            assert!(Server::new(Recorder::default())
                .load_state_checked(&good[..n])
                .is_err());
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(refused(&extra), StateError::Length { .. }));
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(matches!(refused(&bad), StateError::Magic));
        let mut bad = good.clone();
        bad[8] = 2;
        assert!(matches!(refused(&bad), StateError::Version(2)));
        let mut bad = good.clone();
        bad[13] = 1;
        assert!(matches!(refused(&bad), StateError::SessionFlags(_)));
        let mut bad = good.clone();
        bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(refused(&bad), StateError::Length { .. }));
        for flags in [FUSE_EXPORT_SUPPORT, FUSE_SECURITY_CTX, 1 << 50] {
            let state = ready_server(b"", flags).save_state().unwrap();
            assert!(
                matches!(refused(&state), StateError::Flags(_)),
                "{flags:#x}"
            );
        }
        let state = ready_server(b"bad", FUSE_ASYNC_READ).save_state().unwrap();
        let dest = Server::new(Recorder::default());
        let err = dest.load_state(&state).unwrap_err();
        assert_eq!(err.raw_os_error(), None);
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(
            !dest.ready.load(Ordering::Acquire),
            "a refused state must not start serving"
        );
        assert!(refused(b"garbage that is long enough to be a header")
            .to_string()
            .contains("magic"));
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
