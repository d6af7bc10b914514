//! Request counters of a [`Server`](crate::Server): requests and errors by opcode, error replies
//! by errno, and the payload bytes READ and WRITE moved.
//!
//! They are cheap enough to leave on: every thread that handles requests claims a shard of its
//! own (cache-line aligned, so no two threads write the same line) and only that thread writes
//! it, with plain relaxed loads and stores (no locked instruction, no syscall). The registry lock
//! is taken once per thread when it claims a shard and when a snapshot sums them. A thread that
//! ends gives its shard back for the next thread to continue, so short-lived threads (a waiting
//! request's) do not make the registry grow.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::abi::Opcode;

/// Counter slots by opcode: the opcode number itself for known opcodes, 0 for any other number.
pub const OPCODE_SLOTS: usize = 53;
/// Counter slots by errno: the errno itself up to the largest Linux errno, 0 for larger ones.
pub const ERRNO_SLOTS: usize = 134;

/// One thread's counters. Written only by the thread that claimed it.
#[repr(align(64))]
struct Shard {
    claimed: AtomicBool,
    requests: [AtomicU64; OPCODE_SLOTS],
    errors: [AtomicU64; OPCODE_SLOTS],
    errno: [AtomicU64; ERRNO_SLOTS],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    unanswered: AtomicU64,
}

impl Shard {
    fn new() -> Self {
        Self {
            claimed: AtomicBool::new(true),
            requests: [const { AtomicU64::new(0) }; OPCODE_SLOTS],
            errors: [const { AtomicU64::new(0) }; OPCODE_SLOTS],
            errno: [const { AtomicU64::new(0) }; ERRNO_SLOTS],
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
        }
    }
}

/// Adds to a counter that only the calling thread writes: a load and a store, not a locked
/// read-modify-write, since no other writer can interleave.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A thread's hold on a shard of one registry; gives it back when the thread ends.
struct Claim {
    registry: u64,
    shard: Arc<Shard>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Release: whoever claims the shard next sees every count this thread made.
        self.shard.claimed.store(false, Ordering::Release);
    }
}

/// What the request being handled on this thread turned out to be, filled in as it is handled.
#[derive(Clone, Copy, Default)]
pub(crate) struct Note {
    opcode_slot: u8,
    errno: i32,
    bytes_read: u64,
    bytes_written: u64,
}

thread_local! {
    static CLAIM: RefCell<Option<Claim>> = const { RefCell::new(None) };
    static NOTE: Cell<Note> = const {
        Cell::new(Note { opcode_slot: 0, errno: 0, bytes_read: 0, bytes_written: 0 })
    };
}

fn update_note(f: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|cell| {
        let mut note = cell.get();
        f(&mut note);
        cell.set(note);
    });
}

/// Starts the note of a new request on this thread.
pub(crate) fn begin() {
    let _ = NOTE.try_with(|cell| cell.set(Note::default()));
}

/// The request's opcode (`Err` for a number this crate does not know).
pub(crate) fn note_opcode<E>(opcode: &Result<Opcode, E>) {
    let slot = match opcode {
        Ok(op) => *op as u8,
        Err(_) => 0,
    };
    update_note(|n| n.opcode_slot = slot);
}

/// The request is answered with this errno.
pub(crate) fn note_errno(errno: i32) {
    update_note(|n| n.errno = errno);
}

/// READ payload bytes put into the guest's buffers.
pub(crate) fn note_bytes_read(bytes: usize) {
    update_note(|n| n.bytes_read = bytes as u64);
}

/// WRITE payload bytes the filesystem accepted.
pub(crate) fn note_bytes_written(bytes: usize) {
    update_note(|n| n.bytes_written = bytes as u64);
}

fn take_note() -> Note {
    NOTE.try_with(|cell| cell.replace(Note::default()))
        .unwrap_or_default()
}

/// Source of registry ids; never reused, unlike addresses.
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

/// The counters of one server.
pub struct RequestStats {
    id: u64,
    shards: Mutex<Vec<Arc<Shard>>>,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestStats {
    pub fn new() -> Self {
        Self {
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
        }
    }

    fn shards(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A shard for the calling thread: one a finished thread gave back, or a new one.
    fn claim(&self) -> Claim {
        let mut shards = self.shards();
        let free = shards.iter().find(|s| {
            s.claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        let shard = match free {
            Some(shard) => Arc::clone(shard),
            None => {
                let shard = Arc::new(Shard::new());
                shards.push(Arc::clone(&shard));
                shard
            }
        };
        Claim {
            registry: self.id,
            shard,
        }
    }

    /// Counts the request noted on this thread since [`begin`]; `answered` is false when no
    /// reply could be produced at all.
    pub(crate) fn record(&self, answered: bool) {
        let note = take_note();
        let _ = CLAIM.try_with(|cell| {
            let Ok(mut claim) = cell.try_borrow_mut() else {
                return;
            };
            if claim.as_ref().map(|c| c.registry) != Some(self.id) {
                // First request of this thread for this server (tests run several servers on
                // one thread; a device process has one).
                *claim = None;
                *claim = Some(self.claim());
            }
            let Some(claim) = claim.as_ref() else {
                return;
            };
            let shard = &claim.shard;
            let op = usize::from(note.opcode_slot).min(OPCODE_SLOTS - 1);
            bump(&shard.requests[op], 1);
            if !answered {
                bump(&shard.unanswered, 1);
            }
            if note.errno != 0 {
                bump(&shard.errors[op], 1);
                bump(&shard.errno[errno_slot(note.errno)], 1);
            }
            if note.bytes_read != 0 {
                bump(&shard.bytes_read, note.bytes_read);
            }
            if note.bytes_written != 0 {
                bump(&shard.bytes_written, note.bytes_written);
            }
        });
    }

    /// The sums over every shard. Counts of requests still being handled may or may not be in.
    pub fn snapshot(&self) -> RequestCounts {
        let mut total = RequestCounts::default();
        let add = |into: &mut [u64], from: &[AtomicU64]| {
            for (sum, counter) in into.iter_mut().zip(from) {
                *sum = sum.wrapping_add(counter.load(Ordering::Relaxed));
            }
        };
        for shard in self.shards().iter() {
            add(&mut total.requests, &shard.requests);
            add(&mut total.errors, &shard.errors);
            add(&mut total.errno, &shard.errno);
            total.bytes_read = total
                .bytes_read
                .wrapping_add(shard.bytes_read.load(Ordering::Relaxed));
            total.bytes_written = total
                .bytes_written
                .wrapping_add(shard.bytes_written.load(Ordering::Relaxed));
            total.unanswered = total
                .unanswered
                .wrapping_add(shard.unanswered.load(Ordering::Relaxed));
        }
        total
    }

    /// Shards in the registry: at most the number of threads that handled requests at once.
    pub fn shard_count(&self) -> usize {
        self.shards().len()
    }
}

fn errno_slot(errno: i32) -> usize {
    usize::try_from(errno)
        .ok()
        .filter(|&e| e < ERRNO_SLOTS)
        .unwrap_or(0)
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests by opcode slot (see [`opcode_name`]).
    pub requests: [u64; OPCODE_SLOTS],
    /// Error replies by opcode slot.
    pub errors: [u64; OPCODE_SLOTS],
    /// Error replies by errno slot (see [`errno_name`]).
    pub errno: [u64; ERRNO_SLOTS],
    /// READ payload bytes sent to the guest.
    pub bytes_read: u64,
    /// WRITE payload bytes written to host files.
    pub bytes_written: u64,
    /// Requests for which no reply could be produced (malformed beyond answering, or a reply
    /// that did not fit the guest's buffers).
    pub unanswered: u64,
}

impl Default for RequestCounts {
    fn default() -> Self {
        Self {
            requests: [0; OPCODE_SLOTS],
            errors: [0; OPCODE_SLOTS],
            errno: [0; ERRNO_SLOTS],
            bytes_read: 0,
            bytes_written: 0,
            unanswered: 0,
        }
    }
}

impl RequestCounts {
    /// Every request counted.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// The count of one opcode.
    pub fn requests_of(&self, op: Opcode) -> u64 {
        self.requests[op as usize]
    }

    /// The error replies of one opcode.
    pub fn errors_of(&self, op: Opcode) -> u64 {
        self.errors[op as usize]
    }

    /// The error replies with one errno.
    pub fn errno_count(&self, errno: i32) -> u64 {
        self.errno[errno_slot(errno)]
    }
}

/// The name of an opcode slot, as the kernel's `FUSE_*` constant without its prefix.
pub fn opcode_name(slot: usize) -> &'static str {
    let op = u32::try_from(slot)
        .ok()
        .filter(|&n| n != 0)
        .and_then(|n| Opcode::try_from(n).ok());
    let Some(op) = op else {
        return "UNKNOWN";
    };
    match op {
        Opcode::Lookup => "LOOKUP",
        Opcode::Forget => "FORGET",
        Opcode::Getattr => "GETATTR",
        Opcode::Setattr => "SETATTR",
        Opcode::Readlink => "READLINK",
        Opcode::Symlink => "SYMLINK",
        Opcode::Mknod => "MKNOD",
        Opcode::Mkdir => "MKDIR",
        Opcode::Unlink => "UNLINK",
        Opcode::Rmdir => "RMDIR",
        Opcode::Rename => "RENAME",
        Opcode::Link => "LINK",
        Opcode::Open => "OPEN",
        Opcode::Read => "READ",
        Opcode::Write => "WRITE",
        Opcode::Statfs => "STATFS",
        Opcode::Release => "RELEASE",
        Opcode::Fsync => "FSYNC",
        Opcode::Setxattr => "SETXATTR",
        Opcode::Getxattr => "GETXATTR",
        Opcode::Listxattr => "LISTXATTR",
        Opcode::Removexattr => "REMOVEXATTR",
        Opcode::Flush => "FLUSH",
        Opcode::Init => "INIT",
        Opcode::Opendir => "OPENDIR",
        Opcode::Readdir => "READDIR",
        Opcode::Releasedir => "RELEASEDIR",
        Opcode::Fsyncdir => "FSYNCDIR",
        Opcode::Getlk => "GETLK",
        Opcode::Setlk => "SETLK",
        Opcode::Setlkw => "SETLKW",
        Opcode::Access => "ACCESS",
        Opcode::Create => "CREATE",
        Opcode::Interrupt => "INTERRUPT",
        Opcode::Bmap => "BMAP",
        Opcode::Destroy => "DESTROY",
        Opcode::Ioctl => "IOCTL",
        Opcode::Poll => "POLL",
        Opcode::NotifyReply => "NOTIFY_REPLY",
        Opcode::BatchForget => "BATCH_FORGET",
        Opcode::Fallocate => "FALLOCATE",
        Opcode::Readdirplus => "READDIRPLUS",
        Opcode::Rename2 => "RENAME2",
        Opcode::Lseek => "LSEEK",
        Opcode::CopyFileRange => "COPY_FILE_RANGE",
        Opcode::Setupmapping => "SETUPMAPPING",
        Opcode::Removemapping => "REMOVEMAPPING",
        Opcode::Syncfs => "SYNCFS",
        Opcode::Tmpfile => "TMPFILE",
        Opcode::Statx => "STATX",
    }
}

/// The symbolic name of an errno slot; `None` for slot 0 (an errno beyond the table) and for
/// numbers Linux does not use.
pub fn errno_name(slot: usize) -> Option<&'static str> {
    ERRNO_NAMES
        .iter()
        .find(|(n, _)| usize::try_from(*n).ok() == Some(slot) && slot != 0)
        .map(|(_, name)| *name)
}

/// Linux errno names (the same numbers on every architecture this package is built for).
const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::ENOEXEC, "ENOEXEC"),
    (libc::EBADF, "EBADF"),
    (libc::ECHILD, "ECHILD"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::ENOTBLK, "ENOTBLK"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EMLINK, "EMLINK"),
    (libc::EPIPE, "EPIPE"),
    (libc::EDOM, "EDOM"),
    (libc::ERANGE, "ERANGE"),
    (libc::EDEADLK, "EDEADLK"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOLCK, "ENOLCK"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ELOOP, "ELOOP"),
    (libc::ENOMSG, "ENOMSG"),
    (libc::EIDRM, "EIDRM"),
    (libc::ENOSTR, "ENOSTR"),
    (libc::ENODATA, "ENODATA"),
    (libc::ETIME, "ETIME"),
    (libc::ENOSR, "ENOSR"),
    (libc::EREMOTE, "EREMOTE"),
    (libc::ENOLINK, "ENOLINK"),
    (libc::EPROTO, "EPROTO"),
    (libc::EMULTIHOP, "EMULTIHOP"),
    (libc::EBADMSG, "EBADMSG"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::EBADFD, "EBADFD"),
    (libc::EILSEQ, "EILSEQ"),
    (libc::EUSERS, "EUSERS"),
    (libc::ENOTSOCK, "ENOTSOCK"),
    (libc::EDESTADDRREQ, "EDESTADDRREQ"),
    (libc::EMSGSIZE, "EMSGSIZE"),
    (libc::EPROTOTYPE, "EPROTOTYPE"),
    (libc::ENOPROTOOPT, "ENOPROTOOPT"),
    (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::EISCONN, "EISCONN"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::EALREADY, "EALREADY"),
    (libc::EINPROGRESS, "EINPROGRESS"),
    (libc::ESTALE, "ESTALE"),
    (libc::EUCLEAN, "EUCLEAN"),
    (libc::EREMOTEIO, "EREMOTEIO"),
    (libc::EDQUOT, "EDQUOT"),
    (libc::ENOMEDIUM, "ENOMEDIUM"),
    (libc::EMEDIUMTYPE, "EMEDIUMTYPE"),
    (libc::ECANCELED, "ECANCELED"),
    (libc::ENOKEY, "ENOKEY"),
    (libc::EKEYEXPIRED, "EKEYEXPIRED"),
    (libc::EKEYREVOKED, "EKEYREVOKED"),
    (libc::EKEYREJECTED, "EKEYREJECTED"),
    (libc::EOWNERDEAD, "EOWNERDEAD"),
    (libc::ENOTRECOVERABLE, "ENOTRECOVERABLE"),
    (libc::ERFKILL, "ERFKILL"),
    (libc::EHWPOISON, "EHWPOISON"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_every_opcode_and_linux_errno() {
        assert!(Opcode::ALL
            .iter()
            .all(|op| (*op as usize) < OPCODE_SLOTS && *op as usize != 0));
        assert_eq!(libc::EHWPOISON as usize, ERRNO_SLOTS - 1);
        assert_eq!(
            opcode_name(Opcode::CopyFileRange as usize),
            "COPY_FILE_RANGE"
        );
        assert_eq!(opcode_name(0), "UNKNOWN");
        assert_eq!(opcode_name(7), "UNKNOWN");
        assert_eq!(errno_name(libc::ENOENT as usize), Some("ENOENT"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_slot(4000), 0);
        assert_eq!(errno_slot(-3), 0);
    }

    #[test]
    fn threads_count_into_their_own_shards_and_hand_them_on() {
        let stats = Arc::new(RequestStats::new());
        let run = |n: usize| {
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                for _ in 0..n {
                    begin();
                    note_opcode::<()>(&Ok(Opcode::Lookup));
                    note_errno(libc::ENOENT);
                    stats.record(true);
                }
            })
        };
        let (a, b) = (run(1000), run(500));
        a.join().unwrap();
        b.join().unwrap();
        let shards = stats.shard_count();
        assert!((1..=2).contains(&shards), "{shards}");
        // Finished threads gave their shards back: later threads reuse them.
        for _ in 0..10 {
            run(1).join().unwrap();
        }
        assert_eq!(stats.shard_count(), shards);
        let counts = stats.snapshot();
        assert_eq!(counts.requests_of(Opcode::Lookup), 1510);
        assert_eq!(counts.errors_of(Opcode::Lookup), 1510);
        assert_eq!(counts.errno_count(libc::ENOENT), 1510);
        assert_eq!(counts.total_requests(), 1510);
    }

    #[test]
    fn one_thread_serving_two_registries_keeps_them_apart() {
        let (one, two) = (RequestStats::new(), RequestStats::new());
        for _ in 0..3 {
            begin();
            note_opcode::<()>(&Ok(Opcode::Read));
            note_bytes_read(100);
            one.record(true);
            begin();
            note_opcode::<()>(&Err(()));
            two.record(false);
        }
        let (a, b) = (one.snapshot(), two.snapshot());
        assert_eq!(a.requests_of(Opcode::Read), 3);
        assert_eq!(a.bytes_read, 300);
        assert_eq!(a.unanswered, 0);
        assert_eq!(b.requests[0], 3);
        assert_eq!(b.unanswered, 3);
        assert_eq!(b.bytes_read, 0);
        assert_eq!((one.shard_count(), two.shard_count()), (1, 1));
    }
}
