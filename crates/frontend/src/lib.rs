//! A vhost-user-fs frontend that needs no VM: it plays the guest driver (memory, split virtqueues,
//! FUSE requests) against a virtio-fs daemon's socket. Used for protocol tests, hostile-input
//! tests and load generation.

pub mod error;
pub mod fuse;
pub mod load;
pub mod memory;
pub mod migration;
pub mod native;
pub mod ops;
pub mod session;
mod sys;
pub mod tree;
pub mod virtq;

pub use error::{Error, Result};
pub use session::{Options, Outcome, Reply, Request, Session, Slot, Ticket, HIPRIO};
pub use virtq::{Buf, RawDesc, Used};
