//! In-memory transports: a request held in a `Vec` and reply room on the heap.
//!
//! For requests that must run detached from the transport's memory (a device copies a request
//! that may block for long out of guest memory, and copies its reply back only if the queue still
//! runs), and for tests. [`MemoryWriter`] shares its buffer with a [`ReplyBuffer`] handle, so the
//! reply can be read after the writer has been consumed by
//! [`Server::handle_message`](crate::Server::handle_message).

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use crate::io::{ReplyWriter, RequestReader, ZeroCopyReader, ZeroCopyWriter};

fn dup_file(fd: BorrowedFd<'_>) -> io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// A request held in memory.
pub struct MemoryReader {
    data: Vec<u8>,
    pos: usize,
}

impl MemoryReader {
    pub fn new(data: Vec<u8>) -> Self {
        MemoryReader { data, pos: 0 }
    }
}

impl ZeroCopyReader for MemoryReader {
    fn read_to_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let count = count.min(self.data.len() - self.pos);
        let file = dup_file(file)?;
        let mut done = 0;
        while done < count {
            let at = self.pos + done;
            let n = file.write_at(&self.data[at..self.pos + count], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        self.pos += done;
        Ok(done)
    }
}

impl RequestReader for MemoryReader {
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

/// Reads back what [`MemoryWriter`]s wrote.
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
pub struct MemoryWriter {
    buf: Arc<Mutex<Vec<u8>>>,
    start: usize,
    end: usize,
    written: usize,
}

impl MemoryWriter {
    /// A writer with `room` bytes, and the handle to read them back.
    pub fn new(room: usize) -> (MemoryWriter, ReplyBuffer) {
        let buf = Arc::new(Mutex::new(vec![0u8; room]));
        let w = MemoryWriter {
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

impl ZeroCopyWriter for MemoryWriter {
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

impl ReplyWriter for MemoryWriter {
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
        let other = MemoryWriter {
            buf: self.buf.clone(),
            start: mid,
            end: self.end,
            written: 0,
        };
        self.end = mid;
        Ok(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reader_serves_bytes_once_and_reports_short_requests() {
        let mut r = MemoryReader::new(b"abcdef".to_vec());
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        assert_eq!(r.available_bytes(), 2);
        let err = r.read_exact(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(r.available_bytes(), 2, "a failed read consumes nothing");
    }

    #[test]
    fn reader_moves_the_rest_into_a_file_and_writer_reads_it_back() {
        let path = std::env::temp_dir().join(format!("fuse-memory-test-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut r = MemoryReader::new(b"xxpayload".to_vec());
        r.read_exact(&mut [0u8; 2]).unwrap();
        assert_eq!(r.read_to_file(file.as_fd(), 100, 3).unwrap(), 7);
        assert_eq!(r.available_bytes(), 0);
        let (mut w, reply) = MemoryWriter::new(16);
        // Stops at end of file: 7 bytes from offset 3, not 16.
        assert_eq!(w.write_from_file(file.as_fd(), 16, 3).unwrap(), 7);
        assert_eq!(reply.bytes(7), b"payload");
    }

    #[test]
    fn writer_split_puts_payload_after_header() {
        let (mut w, reply) = MemoryWriter::new(10);
        let mut tail = w.split_at(4).unwrap();
        tail.write_all(b"body").unwrap();
        assert!(tail.write_all(b"toolong").is_err());
        w.write_all(b"head").unwrap();
        assert!(
            w.write_all(b"x").is_err(),
            "the head part keeps only 4 bytes"
        );
        assert_eq!(reply.bytes(8), b"headbody");
        assert!(w.split_at(1).is_err());
    }
}
