//! The Linux FUSE kernel ABI (`include/uapi/linux/fuse.h`), as far as a virtio-fs device needs it.
//!
//! Every wire structure is a padding-free `#[repr(C)]` plain-old-data struct implementing
//! [`WireStruct`], which converts it to and from bytes without `unsafe` at the call site. The
//! padding-free property is checked at compile time: the size of each struct must equal the sum of
//! its field sizes.

use std::mem::size_of;

/// The major version of the protocol this crate speaks.
pub const KERNEL_VERSION: u32 = 7;
/// The minor version of the protocol this crate speaks.
pub const KERNEL_MINOR_VERSION: u32 = 38;
const _: () = assert!(
    KERNEL_MINOR_VERSION >= 38,
    "the project needs protocol 7.38 or newer"
);
/// The oldest kernel minor version the dispatcher accepts.
pub const MIN_KERNEL_MINOR_VERSION: u32 = 27;

/// The inode number of the root of the mount.
pub const ROOT_ID: u64 = 1;

/// The smallest read buffer the kernel accepts from a `/dev/fuse` server.
pub const MIN_READ_BUFFER: u32 = 8192;

/// Directory entries are padded to this alignment.
pub const DIRENT_ALIGN: usize = 8;

/// The largest errno value; errors outside `1..=MAX_ERRNO` are not representable.
pub const MAX_ERRNO: i32 = 4095;

/// Rounds `len` up to the next [`DIRENT_ALIGN`] boundary.
pub const fn dirent_align(len: usize) -> usize {
    (len + DIRENT_ALIGN - 1) & !(DIRENT_ALIGN - 1)
}

/// A padding-free, plain-old-data wire structure that can be viewed as bytes and built from bytes.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` structs without padding whose fields are integers or arrays of
/// integers or other `WireStruct`s, so that every bit pattern is a valid value and every byte of the
/// value is initialised. The [`wire_structs!`] macro checks the padding-free part at compile time.
pub unsafe trait WireStruct: Copy + Default + 'static {
    /// The bytes of `self` in native byte order (the ABI is host-endian).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract guarantees `Self` has no padding, so all `size_of::<Self>()`
        // bytes behind `self` are initialised; the slice borrows `self` so it cannot outlive it.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>()) }
    }

    /// Decodes a value from exactly `size_of::<Self>()` bytes; `None` if `bytes` has another length.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        // SAFETY: `bytes` holds exactly `size_of::<Self>()` readable bytes; `read_unaligned` copes
        // with any alignment, and the trait's contract makes every bit pattern a valid `Self`.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// Decodes a value from the start of `bytes`, returning it and the bytes after it; `None` if
    /// `bytes` is too short.
    fn from_prefix(bytes: &[u8]) -> Option<(Self, &[u8])> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        let (head, rest) = bytes.split_at(size_of::<Self>());
        Self::from_bytes(head).map(|v| (v, rest))
    }
}

/// Declares wire structs, implements [`WireStruct`] for them and proves at compile time that they
/// have no padding.
macro_rules! wire_structs {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),* $(,)? }
    )*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

            const _: () = assert!(
                size_of::<$name>() == 0 $(+ size_of::<$ty>())*,
                concat!(stringify!($name), " has padding")
            );

            // SAFETY: `#[repr(C)]`, fields are integers, integer arrays or other `WireStruct`s, and
            // the assertion above proves there is no padding.
            unsafe impl WireStruct for $name {}
        )*

        /// Name and size of every wire struct, for tests.
        #[cfg(test)]
        pub(crate) fn all_wire_structs() -> Vec<(&'static str, usize, fn(&[u8]) -> Option<Vec<u8>>)> {
            vec![$(
                (
                    stringify!($name),
                    size_of::<$name>(),
                    (|b: &[u8]| $name::from_bytes(b).map(|v| v.as_bytes().to_vec()))
                        as fn(&[u8]) -> Option<Vec<u8>>,
                ),
            )*]
        }
    };
}

wire_structs! {
    /// Inode attributes (`fuse_attr`).
    pub struct Attr {
        pub ino: u64,
        pub size: u64,
        pub blocks: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub nlink: u32,
        pub uid: u32,
        pub gid: u32,
        pub rdev: u32,
        pub blksize: u32,
        pub flags: u32,
    }

    /// A timestamp inside [`Statx`] (`fuse_sx_time`).
    pub struct SxTime {
        pub tv_sec: i64,
        pub tv_nsec: u32,
        pub reserved: i32,
    }

    /// Extended attributes for STATX (`fuse_statx`).
    pub struct Statx {
        pub mask: u32,
        pub blksize: u32,
        pub attributes: u64,
        pub nlink: u32,
        pub uid: u32,
        pub gid: u32,
        pub mode: u16,
        pub spare0: u16,
        pub ino: u64,
        pub size: u64,
        pub blocks: u64,
        pub attributes_mask: u64,
        pub atime: SxTime,
        pub btime: SxTime,
        pub ctime: SxTime,
        pub mtime: SxTime,
        pub rdev_major: u32,
        pub rdev_minor: u32,
        pub dev_major: u32,
        pub dev_minor: u32,
        pub spare2: [u64; 14],
    }

    /// Filesystem statistics (`fuse_kstatfs`).
    pub struct Kstatfs {
        pub blocks: u64,
        pub bfree: u64,
        pub bavail: u64,
        pub files: u64,
        pub ffree: u64,
        pub bsize: u32,
        pub namelen: u32,
        pub frsize: u32,
        pub padding: u32,
        pub spare: [u32; 6],
    }

    /// A POSIX lock (`fuse_file_lock`).
    pub struct FileLock {
        pub start: u64,
        pub end: u64,
        pub typ: u32,
        pub pid: u32,
    }

    /// Reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK and (first part) CREATE (`fuse_entry_out`).
    pub struct EntryOut {
        pub nodeid: u64,
        pub generation: u64,
        pub entry_valid: u64,
        pub attr_valid: u64,
        pub entry_valid_nsec: u32,
        pub attr_valid_nsec: u32,
        pub attr: Attr,
    }

    pub struct ForgetIn {
        pub nlookup: u64,
    }

    pub struct ForgetOne {
        pub nodeid: u64,
        pub nlookup: u64,
    }

    pub struct BatchForgetIn {
        pub count: u32,
        pub dummy: u32,
    }

    pub struct GetattrIn {
        pub getattr_flags: u32,
        pub dummy: u32,
        pub fh: u64,
    }

    pub struct AttrOut {
        pub attr_valid: u64,
        pub attr_valid_nsec: u32,
        pub dummy: u32,
        pub attr: Attr,
    }

    pub struct StatxIn {
        pub getattr_flags: u32,
        pub reserved: u32,
        pub fh: u64,
        pub sx_flags: u32,
        pub sx_mask: u32,
    }

    pub struct StatxOut {
        pub attr_valid: u64,
        pub attr_valid_nsec: u32,
        pub flags: u32,
        pub spare: [u64; 2],
        pub stat: Statx,
    }

    pub struct MknodIn {
        pub mode: u32,
        pub rdev: u32,
        pub umask: u32,
        pub padding: u32,
    }

    pub struct MkdirIn {
        pub mode: u32,
        pub umask: u32,
    }

    pub struct RenameIn {
        pub newdir: u64,
    }

    pub struct Rename2In {
        pub newdir: u64,
        pub flags: u32,
        pub padding: u32,
    }

    pub struct LinkIn {
        pub oldnodeid: u64,
    }

    pub struct SetattrIn {
        pub valid: u32,
        pub padding: u32,
        pub fh: u64,
        pub size: u64,
        pub lock_owner: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub unused4: u32,
        pub uid: u32,
        pub gid: u32,
        pub unused5: u32,
    }

    pub struct OpenIn {
        pub flags: u32,
        pub open_flags: u32,
    }

    pub struct CreateIn {
        pub flags: u32,
        pub mode: u32,
        pub umask: u32,
        pub open_flags: u32,
    }

    pub struct OpenOut {
        pub fh: u64,
        pub open_flags: u32,
        pub backing_id: i32,
    }

    pub struct ReleaseIn {
        pub fh: u64,
        pub flags: u32,
        pub release_flags: u32,
        pub lock_owner: u64,
    }

    pub struct FlushIn {
        pub fh: u64,
        pub unused: u32,
        pub padding: u32,
        pub lock_owner: u64,
    }

    pub struct ReadIn {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub read_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }

    pub struct WriteIn {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub write_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }

    pub struct WriteOut {
        pub size: u32,
        pub padding: u32,
    }

    pub struct StatfsOut {
        pub st: Kstatfs,
    }

    pub struct FsyncIn {
        pub fh: u64,
        pub fsync_flags: u32,
        pub padding: u32,
    }

    /// SETXATTR arguments with `FUSE_SETXATTR_EXT` negotiated (the first 8 bytes otherwise).
    pub struct SetxattrIn {
        pub size: u32,
        pub flags: u32,
        pub setxattr_flags: u32,
        pub padding: u32,
    }

    /// SETXATTR arguments without `FUSE_SETXATTR_EXT`.
    pub struct SetxattrInCompat {
        pub size: u32,
        pub flags: u32,
    }

    pub struct GetxattrIn {
        pub size: u32,
        pub padding: u32,
    }

    pub struct GetxattrOut {
        pub size: u32,
        pub padding: u32,
    }

    pub struct LkIn {
        pub fh: u64,
        pub owner: u64,
        pub lk: FileLock,
        pub lk_flags: u32,
        pub padding: u32,
    }

    pub struct LkOut {
        pub lk: FileLock,
    }

    pub struct AccessIn {
        pub mask: u32,
        pub padding: u32,
    }

    pub struct InitIn {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub flags2: u32,
        pub unused: [u32; 11],
    }

    pub struct InitOut {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub max_background: u16,
        pub congestion_threshold: u16,
        pub max_write: u32,
        pub time_gran: u32,
        pub max_pages: u16,
        pub map_alignment: u16,
        pub flags2: u32,
        pub max_stack_depth: u32,
        pub request_timeout: u16,
        pub unused: [u16; 11],
    }

    pub struct InterruptIn {
        pub unique: u64,
    }

    pub struct BmapIn {
        pub block: u64,
        pub blocksize: u32,
        pub padding: u32,
    }

    pub struct BmapOut {
        pub block: u64,
    }

    pub struct IoctlIn {
        pub fh: u64,
        pub flags: u32,
        pub cmd: u32,
        pub arg: u64,
        pub in_size: u32,
        pub out_size: u32,
    }

    pub struct IoctlIovec {
        pub base: u64,
        pub len: u64,
    }

    pub struct IoctlOut {
        pub result: i32,
        pub flags: u32,
        pub in_iovs: u32,
        pub out_iovs: u32,
    }

    pub struct PollIn {
        pub fh: u64,
        pub kh: u64,
        pub flags: u32,
        pub events: u32,
    }

    pub struct PollOut {
        pub revents: u32,
        pub padding: u32,
    }

    pub struct NotifyPollWakeupOut {
        pub kh: u64,
    }

    pub struct FallocateIn {
        pub fh: u64,
        pub offset: u64,
        pub length: u64,
        pub mode: u32,
        pub padding: u32,
    }

    pub struct InHeader {
        pub len: u32,
        pub opcode: u32,
        pub unique: u64,
        pub nodeid: u64,
        pub uid: u32,
        pub gid: u32,
        pub pid: u32,
        /// Length of the extensions after the arguments, in units of 8 bytes.
        pub total_extlen: u16,
        pub padding: u16,
    }

    pub struct OutHeader {
        pub len: u32,
        pub error: i32,
        pub unique: u64,
    }

    /// The fixed part of a READDIR entry (`fuse_dirent`); the name and padding follow.
    pub struct Dirent {
        pub ino: u64,
        pub off: u64,
        pub namelen: u32,
        pub typ: u32,
    }

    /// The fixed part of a READDIRPLUS entry (`fuse_direntplus`); the name and padding follow.
    pub struct Direntplus {
        pub entry_out: EntryOut,
        pub dirent: Dirent,
    }

    pub struct NotifyInvalInodeOut {
        pub ino: u64,
        pub off: i64,
        pub len: i64,
    }

    pub struct NotifyInvalEntryOut {
        pub parent: u64,
        pub namelen: u32,
        pub flags: u32,
    }

    pub struct NotifyDeleteOut {
        pub parent: u64,
        pub child: u64,
        pub namelen: u32,
        pub padding: u32,
    }

    pub struct NotifyStoreOut {
        pub nodeid: u64,
        pub offset: u64,
        pub size: u32,
        pub padding: u32,
    }

    pub struct NotifyRetrieveOut {
        pub notify_unique: u64,
        pub nodeid: u64,
        pub offset: u64,
        pub size: u32,
        pub padding: u32,
    }

    /// The arguments of the NOTIFY_REPLY the kernel sends for a NOTIFY_RETRIEVE.
    pub struct NotifyRetrieveIn {
        pub dummy1: u64,
        pub offset: u64,
        pub size: u32,
        pub dummy2: u32,
        pub dummy3: u64,
        pub dummy4: u64,
    }

    pub struct BackingMap {
        pub fd: i32,
        pub flags: u32,
        pub padding: u64,
    }

    pub struct LseekIn {
        pub fh: u64,
        pub offset: u64,
        pub whence: u32,
        pub padding: u32,
    }

    pub struct LseekOut {
        pub offset: u64,
    }

    pub struct CopyFileRangeIn {
        pub fh_in: u64,
        pub off_in: u64,
        pub nodeid_out: u64,
        pub fh_out: u64,
        pub off_out: u64,
        pub len: u64,
        pub flags: u64,
    }

    pub struct SetupmappingIn {
        pub fh: u64,
        pub foffset: u64,
        pub len: u64,
        pub flags: u64,
        pub moffset: u64,
    }

    pub struct RemovemappingIn {
        pub count: u32,
    }

    pub struct RemovemappingOne {
        pub moffset: u64,
        pub len: u64,
    }

    pub struct SyncfsIn {
        pub padding: u64,
    }

    /// Header of the security-context extension (`fuse_secctx_header`).
    pub struct SecctxHeader {
        pub size: u32,
        pub nr_secctx: u32,
    }

    /// One security context (`fuse_secctx`); the name and context follow.
    pub struct Secctx {
        pub size: u32,
        pub padding: u32,
    }

    /// Header of every request extension (`fuse_ext_header`).
    pub struct ExtHeader {
        pub size: u32,
        pub typ: u32,
    }

    /// The fixed part of the supplementary-groups extension; `nr_groups` u32s follow.
    pub struct SuppGroups {
        pub nr_groups: u32,
    }
}

/// Request opcodes (`enum fuse_opcode`). CUSE_INIT is deliberately absent: virtio-fs is not CUSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Opcode {
    Lookup = 1,
    Forget = 2,
    Getattr = 3,
    Setattr = 4,
    Readlink = 5,
    Symlink = 6,
    Mknod = 8,
    Mkdir = 9,
    Unlink = 10,
    Rmdir = 11,
    Rename = 12,
    Link = 13,
    Open = 14,
    Read = 15,
    Write = 16,
    Statfs = 17,
    Release = 18,
    Fsync = 20,
    Setxattr = 21,
    Getxattr = 22,
    Listxattr = 23,
    Removexattr = 24,
    Flush = 25,
    Init = 26,
    Opendir = 27,
    Readdir = 28,
    Releasedir = 29,
    Fsyncdir = 30,
    Getlk = 31,
    Setlk = 32,
    Setlkw = 33,
    Access = 34,
    Create = 35,
    Interrupt = 36,
    Bmap = 37,
    Destroy = 38,
    Ioctl = 39,
    Poll = 40,
    NotifyReply = 41,
    BatchForget = 42,
    Fallocate = 43,
    Readdirplus = 44,
    Rename2 = 45,
    Lseek = 46,
    CopyFileRange = 47,
    Setupmapping = 48,
    Removemapping = 49,
    Syncfs = 50,
    Tmpfile = 51,
    Statx = 52,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 50] = [
        Opcode::Lookup,
        Opcode::Forget,
        Opcode::Getattr,
        Opcode::Setattr,
        Opcode::Readlink,
        Opcode::Symlink,
        Opcode::Mknod,
        Opcode::Mkdir,
        Opcode::Unlink,
        Opcode::Rmdir,
        Opcode::Rename,
        Opcode::Link,
        Opcode::Open,
        Opcode::Read,
        Opcode::Write,
        Opcode::Statfs,
        Opcode::Release,
        Opcode::Fsync,
        Opcode::Setxattr,
        Opcode::Getxattr,
        Opcode::Listxattr,
        Opcode::Removexattr,
        Opcode::Flush,
        Opcode::Init,
        Opcode::Opendir,
        Opcode::Readdir,
        Opcode::Releasedir,
        Opcode::Fsyncdir,
        Opcode::Getlk,
        Opcode::Setlk,
        Opcode::Setlkw,
        Opcode::Access,
        Opcode::Create,
        Opcode::Interrupt,
        Opcode::Bmap,
        Opcode::Destroy,
        Opcode::Ioctl,
        Opcode::Poll,
        Opcode::NotifyReply,
        Opcode::BatchForget,
        Opcode::Fallocate,
        Opcode::Readdirplus,
        Opcode::Rename2,
        Opcode::Lseek,
        Opcode::CopyFileRange,
        Opcode::Setupmapping,
        Opcode::Removemapping,
        Opcode::Syncfs,
        Opcode::Tmpfile,
        Opcode::Statx,
    ];
}

/// An opcode number this crate does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownOpcode(pub u32);

impl std::fmt::Display for UnknownOpcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown FUSE opcode {}", self.0)
    }
}

impl std::error::Error for UnknownOpcode {}

impl TryFrom<u32> for Opcode {
    type Error = UnknownOpcode;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Opcode::ALL
            .iter()
            .copied()
            .find(|op| *op as u32 == value)
            .ok_or(UnknownOpcode(value))
    }
}

impl From<Opcode> for u32 {
    fn from(op: Opcode) -> u32 {
        op as u32
    }
}

/// Notification codes (`enum fuse_notify_code`), sent with `unique == 0`.
pub mod notify {
    pub const POLL: i32 = 1;
    pub const INVAL_INODE: i32 = 2;
    pub const INVAL_ENTRY: i32 = 3;
    pub const STORE: i32 = 4;
    pub const RETRIEVE: i32 = 5;
    pub const DELETE: i32 = 6;
    pub const RESEND: i32 = 7;
    pub const INC_EPOCH: i32 = 8;
}

/// Request extension types (`enum fuse_ext_type`).
pub const FUSE_MAX_NR_SECCTX: u32 = 31;
pub const FUSE_EXT_GROUPS: u32 = 32;

// INIT capability flags, as one u64: bits 32..64 travel in `flags2` once FUSE_INIT_EXT is agreed.
pub const FUSE_ASYNC_READ: u64 = 1 << 0;
pub const FUSE_POSIX_LOCKS: u64 = 1 << 1;
pub const FUSE_FILE_OPS: u64 = 1 << 2;
pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
pub const FUSE_EXPORT_SUPPORT: u64 = 1 << 4;
pub const FUSE_BIG_WRITES: u64 = 1 << 5;
pub const FUSE_DONT_MASK: u64 = 1 << 6;
pub const FUSE_SPLICE_WRITE: u64 = 1 << 7;
pub const FUSE_SPLICE_MOVE: u64 = 1 << 8;
pub const FUSE_SPLICE_READ: u64 = 1 << 9;
pub const FUSE_FLOCK_LOCKS: u64 = 1 << 10;
pub const FUSE_HAS_IOCTL_DIR: u64 = 1 << 11;
pub const FUSE_AUTO_INVAL_DATA: u64 = 1 << 12;
pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
pub const FUSE_ASYNC_DIO: u64 = 1 << 15;
pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
pub const FUSE_NO_OPEN_SUPPORT: u64 = 1 << 17;
pub const FUSE_PARALLEL_DIROPS: u64 = 1 << 18;
pub const FUSE_HANDLE_KILLPRIV: u64 = 1 << 19;
pub const FUSE_POSIX_ACL: u64 = 1 << 20;
pub const FUSE_ABORT_ERROR: u64 = 1 << 21;
pub const FUSE_MAX_PAGES: u64 = 1 << 22;
pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
pub const FUSE_NO_OPENDIR_SUPPORT: u64 = 1 << 24;
pub const FUSE_EXPLICIT_INVAL_DATA: u64 = 1 << 25;
pub const FUSE_MAP_ALIGNMENT: u64 = 1 << 26;
pub const FUSE_SUBMOUNTS: u64 = 1 << 27;
pub const FUSE_HANDLE_KILLPRIV_V2: u64 = 1 << 28;
pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
pub const FUSE_INIT_EXT: u64 = 1 << 30;
pub const FUSE_INIT_RESERVED: u64 = 1 << 31;
pub const FUSE_SECURITY_CTX: u64 = 1 << 32;
pub const FUSE_HAS_INODE_DAX: u64 = 1 << 33;
pub const FUSE_CREATE_SUPP_GROUP: u64 = 1 << 34;
pub const FUSE_HAS_EXPIRE_ONLY: u64 = 1 << 35;
pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
pub const FUSE_PASSTHROUGH: u64 = 1 << 37;
pub const FUSE_NO_EXPORT_SUPPORT: u64 = 1 << 38;
pub const FUSE_HAS_RESEND: u64 = 1 << 39;
pub const FUSE_ALLOW_IDMAP: u64 = 1 << 40;
pub const FUSE_OVER_IO_URING: u64 = 1 << 41;
pub const FUSE_REQUEST_TIMEOUT: u64 = 1 << 42;
/// The old name of [`FUSE_DIRECT_IO_ALLOW_MMAP`].
pub const FUSE_DIRECT_IO_RELAX: u64 = FUSE_DIRECT_IO_ALLOW_MMAP;

// FOPEN_* flags in OpenOut::open_flags.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
pub const FOPEN_STREAM: u32 = 1 << 4;
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

// FATTR_* bits in SetattrIn::valid.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
pub const FATTR_LOCKOWNER: u32 = 1 << 9;
pub const FATTR_CTIME: u32 = 1 << 10;
pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;

// OpenIn::open_flags.
pub const FUSE_OPEN_KILL_SUIDGID: u32 = 1 << 0;

// GetattrIn::getattr_flags.
pub const FUSE_GETATTR_FH: u32 = 1 << 0;

// ReleaseIn::release_flags.
pub const FUSE_RELEASE_FLUSH: u32 = 1 << 0;
pub const FUSE_RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;

// LkIn::lk_flags.
pub const FUSE_LK_FLOCK: u32 = 1 << 0;

// WriteIn::write_flags.
pub const FUSE_WRITE_CACHE: u32 = 1 << 0;
pub const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
pub const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// The old name of [`FUSE_WRITE_KILL_SUIDGID`].
pub const FUSE_WRITE_KILL_PRIV: u32 = FUSE_WRITE_KILL_SUIDGID;

// ReadIn::read_flags.
pub const FUSE_READ_LOCKOWNER: u32 = 1 << 1;

// IoctlIn::flags.
pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;
pub const FUSE_IOCTL_MAX_IOV: u32 = 256;

// PollIn::flags.
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;

// FsyncIn::fsync_flags.
pub const FUSE_FSYNC_FDATASYNC: u32 = 1 << 0;

// Attr::flags.
pub const FUSE_ATTR_SUBMOUNT: u32 = 1 << 0;
pub const FUSE_ATTR_DAX: u32 = 1 << 1;

// SetxattrIn::setxattr_flags.
pub const FUSE_SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;

// NotifyInvalEntryOut::flags.
pub const FUSE_EXPIRE_ONLY: u32 = 1 << 0;

// SetupmappingIn::flags.
pub const FUSE_SETUPMAPPING_FLAG_WRITE: u64 = 1 << 0;
pub const FUSE_SETUPMAPPING_FLAG_READ: u64 = 1 << 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        let expected: &[(&str, usize)] = &[
            ("Attr", 88),
            ("SxTime", 16),
            ("Statx", 256),
            ("Kstatfs", 80),
            ("FileLock", 24),
            ("EntryOut", 128),
            ("ForgetIn", 8),
            ("ForgetOne", 16),
            ("BatchForgetIn", 8),
            ("GetattrIn", 16),
            ("AttrOut", 104),
            ("StatxIn", 24),
            ("StatxOut", 288),
            ("MknodIn", 16),
            ("MkdirIn", 8),
            ("RenameIn", 8),
            ("Rename2In", 16),
            ("LinkIn", 8),
            ("SetattrIn", 88),
            ("OpenIn", 8),
            ("CreateIn", 16),
            ("OpenOut", 16),
            ("ReleaseIn", 24),
            ("FlushIn", 24),
            ("ReadIn", 40),
            ("WriteIn", 40),
            ("WriteOut", 8),
            ("StatfsOut", 80),
            ("FsyncIn", 16),
            ("SetxattrIn", 16),
            ("SetxattrInCompat", 8),
            ("GetxattrIn", 8),
            ("GetxattrOut", 8),
            ("LkIn", 48),
            ("LkOut", 24),
            ("AccessIn", 8),
            ("InitIn", 64),
            ("InitOut", 64),
            ("InterruptIn", 8),
            ("BmapIn", 16),
            ("BmapOut", 8),
            ("IoctlIn", 32),
            ("IoctlIovec", 16),
            ("IoctlOut", 16),
            ("PollIn", 24),
            ("PollOut", 8),
            ("NotifyPollWakeupOut", 8),
            ("FallocateIn", 32),
            ("InHeader", 40),
            ("OutHeader", 16),
            ("Dirent", 24),
            ("Direntplus", 152),
            ("NotifyInvalInodeOut", 24),
            ("NotifyInvalEntryOut", 16),
            ("NotifyDeleteOut", 24),
            ("NotifyStoreOut", 24),
            ("NotifyRetrieveOut", 32),
            ("NotifyRetrieveIn", 40),
            ("BackingMap", 16),
            ("LseekIn", 24),
            ("LseekOut", 8),
            ("CopyFileRangeIn", 56),
            ("SetupmappingIn", 40),
            ("RemovemappingIn", 4),
            ("RemovemappingOne", 16),
            ("SyncfsIn", 8),
            ("SecctxHeader", 8),
            ("Secctx", 8),
            ("ExtHeader", 8),
            ("SuppGroups", 4),
        ];
        let all = all_wire_structs();
        assert_eq!(
            all.len(),
            expected.len(),
            "every wire struct needs an expected size"
        );
        for (name, size, _) in &all {
            let want = expected
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no expected size for {name}"))
                .1;
            assert_eq!(*size, want, "size of {name}");
        }
    }

    #[test]
    fn every_struct_round_trips_through_bytes() {
        for (name, size, round_trip) in all_wire_structs() {
            let bytes: Vec<u8> = (0..size)
                .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
                .collect();
            assert_eq!(round_trip(&bytes).as_deref(), Some(&bytes[..]), "{name}");
            assert_eq!(round_trip(&bytes[..size - 1]), None, "{name}: short input");
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(round_trip(&long), None, "{name}: long input");
        }
    }

    #[test]
    fn fields_land_at_kernel_offsets() {
        let h = InHeader {
            len: 0x0102_0304,
            opcode: 26,
            unique: 0x1122_3344_5566_7788,
            nodeid: 1,
            uid: 1000,
            gid: 1001,
            pid: 42,
            total_extlen: 3,
            padding: 0,
        };
        let b = h.as_bytes();
        assert_eq!(&b[0..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&b[4..8], &26u32.to_ne_bytes());
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(&b[36..38], &3u16.to_ne_bytes());
        let out = InitOut {
            max_write: 7,
            max_pages: 9,
            flags2: 5,
            ..Default::default()
        };
        let b = out.as_bytes();
        assert_eq!(&b[20..24], &7u32.to_ne_bytes());
        assert_eq!(&b[28..30], &9u16.to_ne_bytes());
        assert_eq!(&b[32..36], &5u32.to_ne_bytes());
    }

    #[test]
    fn from_prefix_returns_the_rest() {
        let mut bytes = ForgetIn { nlookup: 5 }.as_bytes().to_vec();
        bytes.extend_from_slice(b"tail");
        let (v, rest) = ForgetIn::from_prefix(&bytes).expect("decodes");
        assert_eq!(v.nlookup, 5);
        assert_eq!(rest, b"tail");
        assert!(ForgetIn::from_prefix(&bytes[..7]).is_none());
    }

    #[test]
    fn unaligned_input_decodes() {
        let mut bytes = [0u8; 1 + 16];
        bytes[1..].copy_from_slice(
            OutHeader {
                len: 16,
                error: -2,
                unique: 9,
            }
            .as_bytes(),
        );
        let h = OutHeader::from_bytes(&bytes[1..]).expect("decodes");
        assert_eq!(
            h,
            OutHeader {
                len: 16,
                error: -2,
                unique: 9
            }
        );
    }

    #[test]
    fn opcodes_convert_both_ways() {
        for op in Opcode::ALL {
            let n: u32 = op.into();
            assert_eq!(Opcode::try_from(n), Ok(op));
        }
        assert_eq!(Opcode::try_from(1), Ok(Opcode::Lookup));
        assert_eq!(Opcode::try_from(26), Ok(Opcode::Init));
        assert_eq!(Opcode::try_from(52), Ok(Opcode::Statx));
        for bad in [0, 7, 19, 53, 4096, u32::MAX] {
            assert_eq!(Opcode::try_from(bad), Err(UnknownOpcode(bad)), "{bad}");
        }
        let known = (0..=100u32)
            .filter(|n| Opcode::try_from(*n).is_ok())
            .count();
        assert_eq!(known, Opcode::ALL.len());
    }

    #[test]
    fn init_flags_are_distinct_bits() {
        let flags = [
            FUSE_ASYNC_READ,
            FUSE_POSIX_LOCKS,
            FUSE_FILE_OPS,
            FUSE_ATOMIC_O_TRUNC,
            FUSE_EXPORT_SUPPORT,
            FUSE_BIG_WRITES,
            FUSE_DONT_MASK,
            FUSE_SPLICE_WRITE,
            FUSE_SPLICE_MOVE,
            FUSE_SPLICE_READ,
            FUSE_FLOCK_LOCKS,
            FUSE_HAS_IOCTL_DIR,
            FUSE_AUTO_INVAL_DATA,
            FUSE_DO_READDIRPLUS,
            FUSE_READDIRPLUS_AUTO,
            FUSE_ASYNC_DIO,
            FUSE_WRITEBACK_CACHE,
            FUSE_NO_OPEN_SUPPORT,
            FUSE_PARALLEL_DIROPS,
            FUSE_HANDLE_KILLPRIV,
            FUSE_POSIX_ACL,
            FUSE_ABORT_ERROR,
            FUSE_MAX_PAGES,
            FUSE_CACHE_SYMLINKS,
            FUSE_NO_OPENDIR_SUPPORT,
            FUSE_EXPLICIT_INVAL_DATA,
            FUSE_MAP_ALIGNMENT,
            FUSE_SUBMOUNTS,
            FUSE_HANDLE_KILLPRIV_V2,
            FUSE_SETXATTR_EXT,
            FUSE_INIT_EXT,
            FUSE_INIT_RESERVED,
            FUSE_SECURITY_CTX,
            FUSE_HAS_INODE_DAX,
            FUSE_CREATE_SUPP_GROUP,
            FUSE_HAS_EXPIRE_ONLY,
            FUSE_DIRECT_IO_ALLOW_MMAP,
            FUSE_PASSTHROUGH,
            FUSE_NO_EXPORT_SUPPORT,
            FUSE_HAS_RESEND,
            FUSE_ALLOW_IDMAP,
            FUSE_OVER_IO_URING,
            FUSE_REQUEST_TIMEOUT,
        ];
        let mut seen = 0u64;
        for (i, f) in flags.iter().enumerate() {
            assert_eq!(*f, 1u64 << i, "flag number {i}");
            assert_eq!(seen & f, 0);
            seen |= f;
        }
    }

    #[test]
    fn dirent_alignment() {
        assert_eq!(dirent_align(0), 0);
        assert_eq!(dirent_align(1), 8);
        assert_eq!(dirent_align(24 + 3), 32);
        assert_eq!(dirent_align(32), 32);
    }
}
