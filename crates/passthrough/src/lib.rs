//! A FUSE filesystem that serves one host directory to a guest, confined to it.
//!
//! [`PassthroughFs`] implements [`virtiofsd_fuse::FileSystem`]; raw syscalls live in [`oslib`].

mod config;
mod consts;
mod credentials;
mod fs;
mod handle;
mod inode;
pub mod oslib;

#[cfg(test)]
mod tests;

pub use config::{CachePolicy, Config, UnknownCachePolicy};
pub use fs::PassthroughFs;
