//! The FUSE protocol as a virtio-fs device speaks it: the kernel ABI ([`abi`]), the contract a
//! filesystem implements ([`filesystem`]), the byte sources and sinks a transport provides ([`io`]),
//! and the dispatcher that decodes requests and encodes replies ([`server`]).
//!
//! The crate knows nothing about virtqueues or host files: transports implement [`io`], filesystems
//! implement [`filesystem::FileSystem`].

pub mod abi;
mod args;
mod ext;
pub mod filesystem;
mod ids;
pub mod io;
pub mod memory;
pub mod ratelimit;
pub mod server;
pub mod stats;
#[cfg(test)]
mod stats_tests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use filesystem::{Context, Entry, FileSystem, SecurityContext, FORBIDDEN_ID};
pub use server::Server;
