//! The few FUSE wire constants this filesystem needs, kept local so the crate does not depend on
//! the dispatcher's ABI module. Values are from the kernel's `include/uapi/linux/fuse.h`.

pub const FUSE_POSIX_LOCKS: u64 = 1 << 1;
pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
pub const FUSE_FLOCK_LOCKS: u64 = 1 << 10;
pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
pub const FUSE_SUBMOUNTS: u64 = 1 << 27;
pub const FUSE_HANDLE_KILLPRIV_V2: u64 = 1 << 28;
pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
pub const FUSE_CREATE_SUPP_GROUP: u64 = 1 << 34;
pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;

pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;

pub const FUSE_ATTR_SUBMOUNT: u32 = 1 << 0;
