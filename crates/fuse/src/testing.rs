//! Request builders for tests (this crate's and other crates'), over the in-memory transports of
//! [`crate::memory`].

use crate::abi::{InHeader, InitIn, OutHeader, WireStruct, KERNEL_MINOR_VERSION, KERNEL_VERSION};
use crate::filesystem::FileSystem;
use crate::server::{Error, Server};

pub use crate::memory::{MemoryReader as TestReader, MemoryWriter as TestWriter, ReplyBuffer};

/// Credentials the request builders put in headers.
pub const TEST_UID: u32 = 1000;
pub const TEST_GID: u32 = 1001;
pub const TEST_PID: u32 = 4242;

/// Builds a request: header (with a correct `len`) followed by `args`.
pub fn request(opcode: u32, unique: u64, nodeid: u64, args: &[&[u8]]) -> Vec<u8> {
    let body: usize = args.iter().map(|a| a.len()).sum();
    let header = InHeader {
        len: (std::mem::size_of::<InHeader>() + body) as u32,
        opcode,
        unique,
        nodeid,
        uid: TEST_UID,
        gid: TEST_GID,
        pid: TEST_PID,
        total_extlen: 0,
        padding: 0,
    };
    let mut out = header.as_bytes().to_vec();
    for a in args {
        out.extend_from_slice(a);
    }
    out
}

/// An INIT request from a 7.`KERNEL_MINOR_VERSION` kernel offering `flags` (64-bit; the high word
/// travels in `flags2`).
pub fn init_request(unique: u64, flags: u64) -> Vec<u8> {
    let init = InitIn {
        major: KERNEL_VERSION,
        minor: KERNEL_MINOR_VERSION,
        max_readahead: 128 * 1024,
        flags: flags as u32,
        flags2: (flags >> 32) as u32,
        unused: [0; 11],
    };
    request(
        crate::abi::Opcode::Init as u32,
        unique,
        0,
        &[init.as_bytes()],
    )
}

/// Splits a reply into its header and payload; `None` if it is shorter than a header.
pub fn parse_reply(bytes: &[u8]) -> Option<(OutHeader, Vec<u8>)> {
    let (h, rest) = OutHeader::from_prefix(bytes)?;
    Some((h, rest.to_vec()))
}

/// Runs one request through `server` with `room` bytes of reply space; returns the reply bytes.
pub fn call<F: FileSystem>(
    server: &Server<F>,
    req: Vec<u8>,
    room: usize,
) -> Result<Vec<u8>, Error> {
    let mut r = TestReader::new(req);
    let (w, out) = TestWriter::new(room);
    let n = server.handle_message(&mut r, w)?;
    Ok(out.bytes(n))
}
