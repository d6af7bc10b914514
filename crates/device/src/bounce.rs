//! Heap-backed request and reply buffers, for requests that run detached from guest memory.
//!
//! A request that may block for a long time is copied out of its descriptor chain before it
//! runs, and its reply is copied back only when it completes, if the queue is still running.
//! Otherwise a reply could land in guest memory that a reset guest has since reused.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use virtiofsd_fuse::io::{ReplyWriter, RequestReader, ZeroCopyReader, ZeroCopyWriter};

fn dup(fd: BorrowedFd<'_>) -> io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// A request held in memory.
pub(crate) struct BounceReader {
    data: Vec<u8>,
    pos: usize,
}

impl BounceReader {
    pub(crate) fn new(data: Vec<u8>) -> Self {
        Self { data, pos: 0 }
    }
}

impl ZeroCopyReader for BounceReader {
    fn read_to_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let count = count.min(self.data.len() - self.pos);
        let file = dup(file)?;
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

impl RequestReader for BounceReader {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let end = self
            .pos
            .checked_add(buf.len())
            .filter(|&end| end <= self.data.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(())
    }

    fn available_bytes(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Reply space of a fixed size; writers split off it share the one buffer.
pub(crate) struct BounceWriter {
    buf: Rc<RefCell<Vec<u8>>>,
    start: usize,
    end: usize,
    written: usize,
}

impl BounceWriter {
    /// A writer with `room` bytes.
    pub(crate) fn new(room: usize) -> Self {
        Self {
            buf: Rc::new(RefCell::new(vec![0; room])),
            start: 0,
            end: room,
            written: 0,
        }
    }

    /// A handle on the whole buffer, to read the reply once the writer is consumed.
    pub(crate) fn contents(&self) -> Rc<RefCell<Vec<u8>>> {
        Rc::clone(&self.buf)
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = self.start + self.written;
        self.buf.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
        self.written += bytes.len();
    }
}

impl ZeroCopyWriter for BounceWriter {
    fn write_from_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let count = count.min(self.available_bytes());
        let file = dup(file)?;
        let mut tmp = vec![0u8; count];
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

impl ReplyWriter for BounceWriter {
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
        let tail = Self {
            buf: Rc::clone(&self.buf),
            start: mid,
            end: self.end,
            written: 0,
        };
        self.end = mid;
        Ok(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_serves_bytes_once_and_reports_short_requests() {
        let mut r = BounceReader::new(b"abcdef".to_vec());
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        assert_eq!(r.available_bytes(), 2);
        let err = r.read_exact(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(r.available_bytes(), 2, "a failed read consumes nothing");
    }

    #[test]
    fn reader_moves_the_rest_into_a_file() {
        let dir = std::env::temp_dir().join(format!("bounce-test-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dir)
            .unwrap();
        std::fs::remove_file(&dir).unwrap();
        let mut r = BounceReader::new(b"xxpayload".to_vec());
        r.read_exact(&mut [0u8; 2]).unwrap();
        use std::os::fd::AsFd;
        assert_eq!(r.read_to_file(file.as_fd(), 100, 3).unwrap(), 7);
        let mut back = [0u8; 7];
        file.read_exact_at(&mut back, 3).unwrap();
        assert_eq!(&back, b"payload");
        assert_eq!(r.available_bytes(), 0);
    }

    #[test]
    fn writer_split_puts_payload_after_header() {
        let mut w = BounceWriter::new(10);
        let contents = w.contents();
        let mut tail = w.split_at(4).unwrap();
        tail.write_all(b"body").unwrap();
        assert!(tail.write_all(b"toolong").is_err());
        w.write_all(b"head").unwrap();
        assert!(
            w.write_all(b"x").is_err(),
            "the head part keeps only 4 bytes"
        );
        assert_eq!(&contents.borrow()[..8], b"headbody");
        assert!(w.split_at(1).is_err());
    }
}
