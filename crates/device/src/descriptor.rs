//! Views of one virtqueue descriptor chain as a request reader and a reply writer.
//!
//! Every descriptor is translated into guest-memory slices before any byte is touched, so a chain
//! that points outside guest memory is rejected as a whole instead of half-processed. READ/WRITE
//! payloads go through `preadv`/`pwritev` whose iovecs point straight into guest memory.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use virtio_queue::desc::split::Descriptor;
use virtiofsd_fuse::io::{ReplyWriter, RequestReader, ZeroCopyReader, ZeroCopyWriter};
use vm_memory::bitmap::{BitmapSlice, MS};
use vm_memory::{GuestMemoryBackend, VolatileSlice};

mod slices;

use slices::SliceList;

/// Largest iovec array handed to one `preadv`/`pwritev` call (Linux `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;
/// iovecs built on the stack for one call; a transfer over more slices builds them on the heap.
const STACK_IOVECS: usize = 16;

/// Why a descriptor chain cannot be turned into a reader and a writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The chain yielded no descriptor at all (for example a broken indirect table).
    Empty,
    /// Iteration stopped at a descriptor that still announces a successor: a loop, a `next`
    /// index outside the table, an unreadable table entry, or a nested indirect table.
    Truncated,
    /// A device-readable descriptor follows a device-writable one (virtio 1.2, 2.7.4.2).
    ReadableAfterWritable,
    /// The descriptor lengths add up to more than 2^32 - 1 bytes.
    TooLong,
    /// A descriptor covers bytes outside guest memory.
    OutOfBounds {
        /// Guest physical address of the descriptor.
        addr: u64,
        /// Length of the descriptor.
        len: u32,
    },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "descriptor chain is empty"),
            Self::Truncated => write!(f, "descriptor chain is malformed (loop or bad link)"),
            Self::ReadableAfterWritable => {
                write!(f, "readable descriptor after a writable one")
            }
            Self::TooLong => write!(f, "descriptor chain is longer than 4 GiB"),
            Self::OutOfBounds { addr, len } => write!(
                f,
                "descriptor at {addr:#x} with length {len} lies outside guest memory"
            ),
        }
    }
}

impl std::error::Error for ChainError {}

impl From<ChainError> for io::Error {
    fn from(e: ChainError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The request and reply views of one chain in memory `M`.
pub type ChainParts<'a, M> = (ChainReader<'a, MS<'a, M>>, ChainWriter<'a, MS<'a, M>>);

/// Splits a descriptor chain into its device-readable part (the request) and its
/// device-writable part (room for the reply).
///
/// `descs` is normally a `virtio_queue::DescriptorChain`, whose iterator already follows indirect
/// tables; any iterator of descriptors works, which keeps this testable.
pub fn split_chain<'a, M, I>(mem: &'a M, descs: I) -> Result<ChainParts<'a, M>, ChainError>
where
    M: GuestMemoryBackend,
    I: IntoIterator<Item = Descriptor>,
{
    // One pass that checks the structure and translates as it goes, without a list of the
    // descriptors: a structural fault (which nothing of the chain may survive) is reported before
    // a translation fault, whichever descriptor comes first, as if structure were checked first.
    let mut last: Option<Descriptor> = None;
    let mut total: u32 = 0;
    let mut seen_writable = false;
    let mut readable = SliceList::default();
    let mut writable = SliceList::default();
    let mut read_len = 0usize;
    let mut write_len = 0usize;
    let mut unbacked: Option<ChainError> = None;
    for desc in descs {
        total = total.checked_add(desc.len()).ok_or(ChainError::TooLong)?;
        let write_only = desc.is_write_only();
        if !write_only && seen_writable {
            return Err(ChainError::ReadableAfterWritable);
        }
        seen_writable |= write_only;
        last = Some(desc);
        if unbacked.is_some() {
            continue;
        }
        let (bufs, sum) = if write_only {
            (&mut writable, &mut write_len)
        } else {
            (&mut readable, &mut read_len)
        };
        // Every byte must be backed by guest memory.
        match translate(mem, &desc, bufs) {
            Ok(()) => *sum += desc.len() as usize,
            Err(e) => unbacked = Some(e),
        }
    }
    match last {
        None => return Err(ChainError::Empty),
        Some(last) if last.has_next() => return Err(ChainError::Truncated),
        Some(_) => {}
    }
    if let Some(e) = unbacked {
        return Err(e);
    }
    Ok((
        ChainReader {
            bufs: Cursor::new(readable, read_len),
        },
        ChainWriter {
            bufs: Cursor::new(writable, write_len),
            written: 0,
        },
    ))
}

fn translate<'a, M: GuestMemoryBackend>(
    mem: &'a M,
    desc: &Descriptor,
    out: &mut SliceList<VolatileSlice<'a, MS<'a, M>>>,
) -> Result<(), ChainError> {
    let oob = || ChainError::OutOfBounds {
        addr: desc.addr().0,
        len: desc.len(),
    };
    let len = desc.len() as usize;
    if len == 0 {
        return Ok(());
    }
    let mut covered = 0usize;
    for slice in mem.get_slices(desc.addr(), len) {
        let slice = slice.map_err(|_| oob())?;
        covered += slice.len();
        out.push(slice);
    }
    if covered != len {
        return Err(oob());
    }
    Ok(())
}

/// An ordered list of guest-memory slices with a consuming front.
struct Cursor<'a, B> {
    bufs: SliceList<VolatileSlice<'a, B>>,
    /// Index of the first slice with unconsumed bytes.
    pos: usize,
    /// Unconsumed bytes over all slices.
    avail: usize,
}

impl<'a, B: BitmapSlice> Cursor<'a, B> {
    fn new(bufs: SliceList<VolatileSlice<'a, B>>, avail: usize) -> Self {
        Self {
            bufs,
            pos: 0,
            avail,
        }
    }

    /// Drops `n` bytes from the front; `n` must not exceed `avail`.
    fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.avail);
        n = n.min(self.avail);
        self.avail -= n;
        while n > 0 {
            let Some(cur) = self.bufs.get(self.pos) else {
                break;
            };
            if n >= cur.len() {
                n -= cur.len();
                self.pos += 1;
            } else {
                // In range by the branch condition, so `offset` cannot fail.
                if let Ok(rest) = cur.offset(n) {
                    self.bufs.set(self.pos, rest);
                }
                n = 0;
            }
        }
        while self.bufs.get(self.pos).is_some_and(|s| s.is_empty()) {
            self.pos += 1;
        }
    }

    /// The front slices covering at most `limit` bytes, at most `max_slices` of them.
    fn front(
        &self,
        limit: usize,
        max_slices: usize,
    ) -> impl Iterator<Item = VolatileSlice<'a, B>> + '_ {
        let mut left = limit;
        self.bufs
            .iter_from(self.pos)
            .take(max_slices)
            .map_while(move |s| {
                if left == 0 {
                    return None;
                }
                let take = s.len().min(left);
                left -= take;
                s.subslice(0, take).ok()
            })
    }

    /// Splits off everything after the first `offset` unconsumed bytes.
    fn split_off(&mut self, offset: usize) -> io::Result<Self> {
        if offset > self.avail {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("split at {offset} beyond {} available bytes", self.avail),
            ));
        }
        let mut left = offset;
        let mut idx = self.pos;
        let mut tail = SliceList::default();
        while let Some(cur) = self.bufs.get(idx) {
            if left < cur.len() {
                let (head, rest) = cur
                    .split_at(left)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                tail.push(rest);
                for s in self.bufs.iter_from(idx + 1) {
                    tail.push(s.clone());
                }
                self.bufs.truncate(idx);
                self.bufs.push(head);
                break;
            }
            left -= cur.len();
            idx += 1;
        }
        let tail_avail = self.avail - offset;
        self.avail = offset;
        Ok(Self::new(tail, tail_avail))
    }
}

/// Builds iovecs over `slices`. The pointers stay valid as long as the slices' borrow of guest
/// memory (lifetime `'a`) does, which outlives the syscall they are used for.
impl<B: BitmapSlice> Cursor<'_, B> {
    /// Moves up to `count` bytes between the front of the buffers and a file at `offset` with one
    /// vectored syscall (`op`, named `what` in logs) per MAX_IOVECS slices, until all is moved, a
    /// transfer comes up short (end of file, full disk), or a call fails. An error after some
    /// progress ends the transfer with what was moved, as a short read or write would. Consumes
    /// the moved bytes, marking them dirty when the kernel wrote them (`into_guest`).
    fn transfer(
        &mut self,
        count: usize,
        offset: u64,
        what: &str,
        into_guest: bool,
        mut op: impl FnMut(&[libc::iovec], libc::off_t) -> isize,
    ) -> io::Result<usize> {
        let count = count.min(self.avail);
        let mut done = 0usize;
        let mut stack = [NO_IOVEC; STACK_IOVECS];
        let mut heap = Vec::new();
        while done < count {
            let iov = self.iovecs(count - done, &mut stack, &mut heap);
            let want: usize = iov.iter().map(|v| v.iov_len).sum();
            let ret = op(iov, file_offset(offset, done)?);
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if done > 0 {
                    virtiofsd_fuse::guest_log!(
                        log::Level::Debug,
                        "{what} failed after {done} bytes: {err}"
                    );
                    return Ok(done);
                }
                return Err(err);
            }
            let n = ret as usize;
            if into_guest {
                // The first `n` bytes are exactly the front slices the call was given.
                mark_dirty(self.front(n, MAX_IOVECS), n);
            }
            self.consume(n);
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }
}

impl<B: BitmapSlice> Cursor<'_, B> {
    /// The iovecs of the front slices covering at most `limit` bytes (at most MAX_IOVECS of
    /// them): in `stack` when they fit, which is nearly always, else in `heap`.
    fn iovecs<'v>(
        &self,
        limit: usize,
        stack: &'v mut [libc::iovec; STACK_IOVECS],
        heap: &'v mut Vec<libc::iovec>,
    ) -> &'v [libc::iovec] {
        let mut n = 0;
        for s in self.front(limit, MAX_IOVECS) {
            if n == STACK_IOVECS {
                heap.clear();
                heap.extend(self.front(limit, MAX_IOVECS).map(|s| iovec(&s)));
                return heap;
            }
            stack[n] = iovec(&s);
            n += 1;
        }
        &stack[..n]
    }
}

const NO_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

fn iovec<B: BitmapSlice>(s: &VolatileSlice<'_, B>) -> libc::iovec {
    libc::iovec {
        // Only the address is taken here; the guard matters for Xen grant mappings, which this
        // device does not use (vm-memory's `xen` feature is off).
        iov_base: s.ptr_guard_mut().as_ptr().cast(),
        iov_len: s.len(),
    }
}

fn short_request(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_owned())
}

/// The device-readable part of a chain: the FUSE request.
pub struct ChainReader<'a, B = ()> {
    bufs: Cursor<'a, B>,
}

impl<B: BitmapSlice> RequestReader for ChainReader<'_, B> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > self.bufs.avail {
            return Err(short_request("request shorter than expected"));
        }
        let mut done = 0;
        for s in self.bufs.front(buf.len(), usize::MAX) {
            done += s.copy_to(&mut buf[done..]);
        }
        self.bufs.consume(done);
        if done != buf.len() {
            return Err(short_request("request shorter than expected"));
        }
        Ok(())
    }

    fn available_bytes(&self) -> usize {
        self.bufs.avail
    }
}

impl<B> fmt::Debug for ChainReader<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainReader")
            .field("available", &self.bufs.avail)
            .finish()
    }
}

impl<B: BitmapSlice> ZeroCopyReader for ChainReader<'_, B> {
    fn read_to_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        self.bufs
            .transfer(count, offset, "pwritev", false, |iov, off| {
                // SAFETY: `iov` holds at most MAX_IOVECS entries, each describing a slice that
                // was bounds-checked against guest memory when the chain was split and that the
                // reader borrows, so the memory stays mapped during the call. The kernel only
                // reads from it; `file` is a valid descriptor for the duration of the borrow.
                unsafe {
                    libc::pwritev(
                        file.as_raw_fd(),
                        iov.as_ptr(),
                        iov.len() as libc::c_int,
                        off,
                    )
                }
            })
    }
}

/// The device-writable part of a chain: room for the FUSE reply.
pub struct ChainWriter<'a, B = ()> {
    bufs: Cursor<'a, B>,
    written: usize,
}

impl<B: BitmapSlice> ReplyWriter for ChainWriter<'_, B> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() > self.bufs.avail {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "reply of {} bytes does not fit in {} bytes",
                    buf.len(),
                    self.bufs.avail
                ),
            ));
        }
        let mut done = 0;
        for s in self.bufs.front(buf.len(), usize::MAX) {
            let n = s.len().min(buf.len() - done);
            // `copy_from` marks the written range dirty in the slice's bitmap.
            s.copy_from(&buf[done..done + n]);
            done += n;
        }
        self.bufs.consume(done);
        self.written += done;
        Ok(())
    }

    fn available_bytes(&self) -> usize {
        self.bufs.avail
    }

    fn bytes_written(&self) -> usize {
        self.written
    }

    fn split_at(&mut self, offset: usize) -> io::Result<Self> {
        Ok(Self {
            bufs: self.bufs.split_off(offset)?,
            written: 0,
        })
    }
}

impl<B> fmt::Debug for ChainWriter<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainWriter")
            .field("available", &self.bufs.avail)
            .field("written", &self.written)
            .finish()
    }
}

impl<B: BitmapSlice> ZeroCopyWriter for ChainWriter<'_, B> {
    fn write_from_file(
        &mut self,
        file: BorrowedFd<'_>,
        count: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let done = self
            .bufs
            .transfer(count, offset, "preadv", true, |iov, off| {
                // SAFETY: `iov` holds at most MAX_IOVECS entries, each describing a slice that was
                // bounds-checked against guest memory when the chain was split and that the writer
                // borrows, so the memory stays mapped during the call. The device owns writable
                // descriptors until it returns them, so the kernel may write into them; no Rust
                // reference aliases guest memory (all other access is volatile).
                unsafe {
                    libc::preadv(
                        file.as_raw_fd(),
                        iov.as_ptr(),
                        iov.len() as libc::c_int,
                        off,
                    )
                }
            })?;
        self.written += done;
        Ok(done)
    }
}

/// Records guest pages written behind vm-memory's back (by `preadv`) for dirty-page logging.
fn mark_dirty<'a, B: BitmapSlice + 'a>(
    slices: impl Iterator<Item = VolatileSlice<'a, B>>,
    mut n: usize,
) {
    for s in slices {
        if n == 0 {
            break;
        }
        let len = s.len().min(n);
        s.bitmap().mark_dirty(0, len);
        n -= len;
    }
}

fn file_offset(base: u64, done: usize) -> io::Result<libc::off_t> {
    base.checked_add(done as u64)
        .and_then(|o| libc::off_t::try_from(o).ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests;
