//! A FUSE filesystem that serves one host directory to a guest, confined to it.
//!
//! [`PassthroughFs`] implements [`virtiofsd_fuse::FileSystem`]; raw syscalls live in [`oslib`].

mod budget;
mod census;
mod config;
mod consts;
mod credentials;
mod fs;
mod gate;
mod handle;
mod inode;
mod locks;
mod newops;
pub mod oslib;
mod xattr;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fh;
#[cfg(test)]
mod tests_gate;
#[cfg(test)]
mod tests_locks;
#[cfg(test)]
mod tests_posix;

pub use census::Census;
pub use config::{CachePolicy, Config, FileHandleMode, UnknownCachePolicy, UnknownFileHandleMode};
pub use fs::PassthroughFs;
