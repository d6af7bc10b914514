//! Byte sources and sinks that a transport (such as a virtqueue descriptor chain) provides to the
//! dispatcher. Payloads of READ and WRITE move between host files and the transport's buffers
//! without an intermediate heap copy: the filesystem hands a file descriptor to
//! [`ZeroCopyReader::read_to_file`] / [`ZeroCopyWriter::write_from_file`], which issue
//! `pwritev`/`preadv` straight on the transport's memory.

use std::io;
use std::os::fd::BorrowedFd;

/// Moves request payload bytes from the transport into a file.
pub trait ZeroCopyReader {
    /// Writes up to `count` of the remaining request bytes into `file` at `offset` (one or more
    /// `pwritev` calls; stops early only on a short write). Returns the number of bytes written,
    /// which are consumed from the request.
    fn read_to_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize>;
}

/// Moves file bytes into the transport's reply buffers.
pub trait ZeroCopyWriter {
    /// Reads up to `count` bytes from `file` at `offset` straight into the reply buffers (one or more
    /// `preadv` calls; stops early at end of file). Returns the number of bytes read.
    fn write_from_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize>;
}

/// The readable part of a request: header, arguments and, for WRITE, the payload.
pub trait RequestReader: ZeroCopyReader {
    /// Fills `buf` completely, or fails with `UnexpectedEof` when fewer bytes remain.
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()>;
    /// Bytes not yet consumed.
    fn available_bytes(&self) -> usize;
}

/// The writable part of a request: room for the reply header and payload.
pub trait ReplyWriter: ZeroCopyWriter + Sized {
    /// Writes all of `buf`, or fails (without a partial write being reported as success) when the
    /// buffers are too small.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Room left, in bytes.
    fn available_bytes(&self) -> usize;
    /// Bytes written so far through this writer (not counting writers split off it).
    fn bytes_written(&self) -> usize;
    /// Splits off a writer for everything after the first `offset` unwritten bytes, so a reply
    /// payload can be produced before its header, whose length field depends on the payload.
    /// `self` keeps the first `offset` bytes.
    fn split_at(&mut self, offset: usize) -> io::Result<Self>;
}
