//! In-memory transports and request builders for tests (this crate's and other crates').
//!
//! [`TestReader`] serves a request from a `Vec`; [`TestWriter`] collects a reply into a fixed-size
//! buffer shared with a [`ReplyBuffer`] handle, so the reply can be read after the writer has been
//! consumed by [`Server::handle_message`](crate::Server::handle_message).

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use crate::abi::{InHeader, InitIn, OutHeader, WireStruct, KERNEL_MINOR_VERSION, KERNEL_VERSION};
use crate::filesystem::FileSystem;
use crate::io::{ReplyWriter, RequestReader, ZeroCopyReader, ZeroCopyWriter};
use crate::server::{Error, Server};

/// Credentials the request builders put in headers.
pub const TEST_UID: u32 = 1000;
pub const TEST_GID: u32 = 1001;
pub const TEST_PID: u32 = 4242;

fn dup_file(fd: BorrowedFd<'_>) -> io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// A request held in memory.
pub struct TestReader {
    data: Vec<u8>,
    pos: usize,
}

impl TestReader {
    pub fn new(data: Vec<u8>) -> Self {
        TestReader { data, pos: 0 }
    }
}

impl ZeroCopyReader for TestReader {
    fn read_to_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let count = count.min(self.data.len() - self.pos);
        let n = dup_file(file)?.write_at(&self.data[self.pos..self.pos + count], offset)?;
        self.pos += n;
        Ok(n)
    }
}

impl RequestReader for TestReader {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > self.data.len() - self.pos {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&self.data[self.pos..self.pos + buf.len()]);
        self.pos += buf.len();
        Ok(())
    }

    fn available_bytes(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Reads back what [`TestWriter`]s wrote.
#[derive(Clone)]
pub struct ReplyBuffer(Arc<Mutex<Vec<u8>>>);

impl ReplyBuffer {
    /// The first `len` bytes of the buffer (the reply, given `handle_message`'s return value).
    pub fn bytes(&self, len: usize) -> Vec<u8> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf[..len.min(buf.len())].to_vec()
    }
}

/// A reply sink with a fixed amount of room.
pub struct TestWriter {
    buf: Arc<Mutex<Vec<u8>>>,
    start: usize,
    end: usize,
    written: usize,
}

impl TestWriter {
    /// A writer with `room` bytes, and the handle to read them back.
    pub fn new(room: usize) -> (TestWriter, ReplyBuffer) {
        let buf = Arc::new(Mutex::new(vec![0u8; room]));
        let w = TestWriter {
            buf: buf.clone(),
            start: 0,
            end: room,
            written: 0,
        };
        (w, ReplyBuffer(buf))
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = self.start + self.written;
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.written += bytes.len();
    }
}

impl ZeroCopyWriter for TestWriter {
    fn write_from_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let count = count.min(self.available_bytes());
        let mut tmp = vec![0u8; count];
        let file = dup_file(file)?;
        let mut done = 0;
        while done < count {
            let n = file.read_at(&mut tmp[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        self.put(&tmp[..done]);
        Ok(done)
    }
}

impl ReplyWriter for TestWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() > self.available_bytes() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.put(buf);
        Ok(())
    }

    fn available_bytes(&self) -> usize {
        self.end - self.start - self.written
    }

    fn bytes_written(&self) -> usize {
        self.written
    }

    fn split_at(&mut self, offset: usize) -> io::Result<Self> {
        if offset > self.available_bytes() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mid = self.start + self.written + offset;
        let other = TestWriter {
            buf: self.buf.clone(),
            start: mid,
            end: self.end,
            written: 0,
        };
        self.end = mid;
        Ok(other)
    }
}

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
