//! A request's argument bytes, read out of the transport without a heap allocation when they
//! are short, as nearly all are (READ, WRITE's header, GETATTR: under 64 bytes; LOOKUP, CREATE: a
//! name of at most 255 bytes and a small struct).

use std::ops::Deref;

use crate::io::RequestReader;

/// Argument bytes kept on the stack; longer arguments (SYMLINK, SETXATTR, BATCH_FORGET) go to
/// the heap.
const INLINE: usize = 384;

/// The argument bytes of one request.
pub(crate) struct ArgBuf {
    inline: [u8; INLINE],
    heap: Vec<u8>,
    len: usize,
}

impl ArgBuf {
    /// Reads the next `len` bytes of `r`. The caller bounds `len`.
    pub(crate) fn read<R: RequestReader>(r: &mut R, len: usize) -> std::io::Result<Self> {
        let mut buf = ArgBuf {
            inline: [0; INLINE],
            heap: Vec::new(),
            len,
        };
        if len <= INLINE {
            r.read_exact(&mut buf.inline[..len])?;
        } else {
            buf.heap = vec![0; len];
            r.read_exact(&mut buf.heap)?;
        }
        Ok(buf)
    }
}

impl Deref for ArgBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryReader;

    #[test]
    fn short_and_long_arguments_read_back_whole() {
        let data: Vec<u8> = (0..2 * INLINE).map(|i| i as u8).collect();
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 2 * INLINE] {
            let mut r = MemoryReader::new(data.clone());
            let args = ArgBuf::read(&mut r, len).unwrap();
            assert_eq!(&*args, &data[..len]);
            assert_eq!(args.heap.capacity() > 0, len > INLINE);
            assert_eq!(r.available_bytes(), data.len() - len);
        }
        assert!(ArgBuf::read(&mut MemoryReader::new(vec![0; 3]), 4).is_err());
    }
}
