//! The migration stream: a versioned, self-describing, hand-written binary encoding.
//!
//! All integers are little-endian. Byte strings are a `u32` length followed by the bytes.
//!
//! ```text
//! header   magic "VFSDPT\0\x01" (8) | version u32 | mode u8 (0 find-paths, 1 file-handles)
//!          | session_flags u64 | next_inode u64 | next_handle u64
//! mounts   count u32, then per mount: mnt_id u64 | path bytes   (file-handles mode only)
//! inodes   count u32, then per inode:
//!          id u64 | generation u64 | lookups u64 | file_type u32
//!          | location u8 (0 root, 1 path, 2 file handle, 3 invalid) and its payload:
//!              path: path bytes; file handle: mnt_id u64 | handle; invalid: reason bytes
//!          | verify u8 (0 none, 1 handle follows) [| handle]
//! handles  count u32, then per handle: id u64 | inode u64 | flags u32
//! locks    count u32, then per lock: kind u8 (0 POSIX owner, 1 flock) | inode u64
//!          | owner u64 (the POSIX lock owner, or the handle holding the flock); informational
//! handle   = handle_type i32 | bytes (at most MAX_HANDLE_BYTES)
//! ```
//!
//! Limits: paths [`MAX_PATH`] bytes, handles [`MAX_HANDLE_BYTES`], reasons [`MAX_REASON`], at
//! most [`MAX_ENTRIES`] records per section, next ids at most [`MAX_NEXT_ID`]; the caller
//! bounds the whole stream (`MAX_STATE_BYTES`). Nothing may follow the last section. Decoding checks every length against both its limit and
//! the bytes left, before allocating anything, and [`decode`] validates the whole state (unique
//! ids, the root, references, paths) so that the restore code only ever sees a consistent state.

use std::collections::HashSet;
use std::fmt;

use virtiofsd_fuse::filesystem::ROOT_ID;

/// First bytes of every stream.
pub const MAGIC: [u8; 8] = *b"VFSDPT\0\x01";
/// The only version this code writes and reads.
pub const VERSION: u32 = 1;
/// Longest path (the host's `PATH_MAX`, terminating NUL excluded).
pub const MAX_PATH: usize = 4095;
/// Longest file handle (the kernel's `MAX_HANDLE_SZ`).
pub const MAX_HANDLE_BYTES: usize = 128;
/// Longest reason recorded for an inode the source could not describe.
pub const MAX_REASON: usize = 256;
/// Most inodes, handles, mounts or lock owners in one stream.
pub const MAX_ENTRIES: usize = 1 << 24;
/// Largest next inode or handle id: ids count up from there and must never wrap around to the
/// root's id.
pub const MAX_NEXT_ID: u64 = 1 << 62;

/// How inodes are described (the source's `--migration-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    FindPaths,
    FileHandles,
}

/// A file handle as it travels: the destination rebuilds an [`crate::oslib::FileHandle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireHandle {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

/// Where the destination finds an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The shared directory itself; the destination has its own.
    Root,
    /// A path relative to the shared directory (validated by [`check_path`]).
    Path(Vec<u8>),
    /// A file handle on the mount the source knew as `mnt_id` (see [`Mount`]).
    Handle { mnt_id: u64, handle: WireHandle },
    /// The source could not describe it; the destination's `--migration-on-error` decides.
    Invalid(String),
}

/// One inode the guest knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord {
    pub id: u64,
    pub generation: u64,
    /// The guest's lookup count.
    pub lookups: u64,
    /// `S_IFMT` bits.
    pub file_type: u32,
    pub location: Location,
    /// With `--migration-verify-handles`: the source's file handle, to compare.
    pub verify: Option<WireHandle>,
}

/// One open handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleRecord {
    pub id: u64,
    pub inode: u64,
    /// The host descriptor's `F_GETFL` flags (access mode and status flags).
    pub flags: u32,
}

/// A mount of the source, named by a directory on it inside the shared directory (empty: the
/// shared directory itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mnt_id: u64,
    pub path: Vec<u8>,
}

/// What kind of lock the source held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// POSIX record locks of one guest lock owner (on a host OFD of the source's).
    Posix,
    /// A BSD flock on the descriptor of one handle.
    Flock,
}

/// Locks the source held for the guest (recorded only: they cannot move).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRecord {
    pub kind: LockKind,
    pub inode: u64,
    /// The guest's lock owner ([`LockKind::Posix`]) or the handle id ([`LockKind::Flock`]).
    pub owner: u64,
}

/// Everything in a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub mode: Mode,
    /// What the source's INIT derived (the flags it returned).
    pub session_flags: u64,
    pub next_inode: u64,
    pub next_handle: u64,
    pub mounts: Vec<Mount>,
    pub inodes: Vec<InodeRecord>,
    pub handles: Vec<HandleRecord>,
    pub locks: Vec<LockRecord>,
}

/// Why a stream was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    BadMagic,
    UnsupportedVersion(u32),
    Truncated { what: &'static str },
    TrailingBytes(usize),
    TooLong { what: &'static str, len: usize },
    BadTag { what: &'static str, tag: u8 },
    BadPath { reason: &'static str },
    BadReason,
    DuplicateId { what: &'static str, id: u64 },
    NoRoot,
    BadRoot,
    ZeroId { what: &'static str },
    UnknownInode { handle: u64, inode: u64 },
    UnknownMount { inode: u64, mnt_id: u64 },
    IdNotBelowNext { what: &'static str, id: u64 },
    NextTooLarge { what: &'static str, next: u64 },
    BadFileType { inode: u64, file_type: u32 },
    ZeroLookups { inode: u64 },
    Generation { inode: u64 },
    WrongMode { inode: u64 },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match self {
            BadMagic => write!(f, "not a passthrough migration stream (bad magic)"),
            UnsupportedVersion(v) => {
                write!(f, "unsupported stream version {v} (expected {VERSION})")
            }
            Truncated { what } => write!(f, "stream ends inside {what}"),
            TrailingBytes(n) => write!(f, "{n} unexpected bytes after the stream"),
            TooLong { what, len } => write!(f, "{what} of {len} is over its limit"),
            BadTag { what, tag } => write!(f, "unknown {what} tag {tag}"),
            BadPath { reason } => write!(f, "refused path: {reason}"),
            BadReason => write!(f, "an invalid inode's reason is not UTF-8"),
            DuplicateId { what, id } => write!(f, "{what} id {id} appears twice"),
            NoRoot => write!(f, "the root inode is missing"),
            BadRoot => write!(f, "the root inode must be id 1 with the root location"),
            ZeroId { what } => write!(f, "{what} id 0"),
            UnknownInode { handle, inode } => {
                write!(
                    f,
                    "handle {handle} names inode {inode}, which is not in the stream"
                )
            }
            UnknownMount { inode, mnt_id } => {
                write!(
                    f,
                    "inode {inode} names mount {mnt_id}, which is not in the stream"
                )
            }
            IdNotBelowNext { what, id } => write!(f, "{what} id {id} is not below the next id"),
            NextTooLarge { what, next } => write!(f, "next {what} id {next} is over the limit"),
            BadFileType { inode, file_type } => {
                write!(f, "inode {inode} has file type {file_type:#o}")
            }
            ZeroLookups { inode } => write!(f, "inode {inode} has no lookups"),
            Generation { inode } => write!(f, "inode {inode} has a generation other than 0"),
            WrongMode { inode } => {
                write!(
                    f,
                    "inode {inode} is described in a way its stream's mode never uses"
                )
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Checks a path relative to the shared directory: non-empty, relative, at most [`MAX_PATH`]
/// bytes, no NUL, and every `/`-separated component a plain name (not empty, `.` or `..`).
/// Symlinks are not visible here; the destination's walk refuses them.
pub fn check_path(path: &[u8]) -> Result<(), FormatError> {
    let bad = |reason| Err(FormatError::BadPath { reason });
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH {
        return bad("too long");
    }
    if path.contains(&0) {
        return bad("contains NUL");
    }
    if path[0] == b'/' {
        return bad("absolute");
    }
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return bad("empty component"),
            b"." | b".." => return bad("dot component"),
            _ => {}
        }
    }
    Ok(())
}

const FILE_TYPES: [u32; 7] = [
    libc::S_IFREG,
    libc::S_IFDIR,
    libc::S_IFLNK,
    libc::S_IFCHR,
    libc::S_IFBLK,
    libc::S_IFIFO,
    libc::S_IFSOCK,
];

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }
    fn handle(&mut self, h: &WireHandle) {
        self.0.extend_from_slice(&h.handle_type.to_le_bytes());
        self.bytes(&h.bytes);
    }
}

/// Encodes `state`. The caller builds only states that [`decode`] accepts (the save side keeps
/// every limit); nothing here can fail.
pub fn encode(state: &State) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.0.extend_from_slice(&MAGIC);
    w.u32(VERSION);
    w.u8(match state.mode {
        Mode::FindPaths => 0,
        Mode::FileHandles => 1,
    });
    w.u64(state.session_flags);
    w.u64(state.next_inode);
    w.u64(state.next_handle);
    w.count(state.mounts.len());
    for m in &state.mounts {
        w.u64(m.mnt_id);
        w.bytes(&m.path);
    }
    w.count(state.inodes.len());
    for i in &state.inodes {
        w.u64(i.id);
        w.u64(i.generation);
        w.u64(i.lookups);
        w.u32(i.file_type);
        match &i.location {
            Location::Root => w.u8(0),
            Location::Path(p) => {
                w.u8(1);
                w.bytes(p);
            }
            Location::Handle { mnt_id, handle } => {
                w.u8(2);
                w.u64(*mnt_id);
                w.handle(handle);
            }
            Location::Invalid(reason) => {
                w.u8(3);
                w.bytes(reason.as_bytes());
            }
        }
        match &i.verify {
            None => w.u8(0),
            Some(h) => {
                w.u8(1);
                w.handle(h);
            }
        }
    }
    w.count(state.handles.len());
    for h in &state.handles {
        w.u64(h.id);
        w.u64(h.inode);
        w.u32(h.flags);
    }
    w.count(state.locks.len());
    for l in &state.locks {
        w.u8(match l.kind {
            LockKind::Posix => 0,
            LockKind::Flock => 1,
        });
        w.u64(l.inode);
        w.u64(l.owner);
    }
    w.0
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Truncated { what });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FormatError> {
        let b = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count of records at least `min_size` bytes each: bounded by [`MAX_ENTRIES`] and by
    /// what is left, so a huge count never reaches an allocation.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, FormatError> {
        let n = self.u32(what)? as usize;
        if n > MAX_ENTRIES {
            return Err(FormatError::TooLong { what, len: n });
        }
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(FormatError::Truncated { what });
        }
        Ok(n)
    }
    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, FormatError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(FormatError::TooLong { what, len: n });
        }
        Ok(self.take(n, what)?.to_vec())
    }
    fn handle(&mut self) -> Result<WireHandle, FormatError> {
        let handle_type = i32::from_le_bytes(self.array("file handle")?);
        let bytes = self.bytes("file handle", MAX_HANDLE_BYTES)?;
        Ok(WireHandle { handle_type, bytes })
    }
}

/// Smallest encodings, for bounding counts.
const MIN_MOUNT: usize = 8 + 4;
const MIN_INODE: usize = 8 + 8 + 8 + 4 + 1 + 1;
const MIN_HANDLE: usize = 8 + 8 + 4;
const MIN_LOCK: usize = 1 + 16;

/// Decodes and validates a stream.
pub fn decode(data: &[u8]) -> Result<State, FormatError> {
    let mut r = Reader(data);
    if r.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let mode = match r.u8("mode")? {
        0 => Mode::FindPaths,
        1 => Mode::FileHandles,
        tag => return Err(FormatError::BadTag { what: "mode", tag }),
    };
    let session_flags = r.u64("session flags")?;
    let next_inode = r.u64("next inode")?;
    let next_handle = r.u64("next handle")?;

    let n = r.count("mounts", MIN_MOUNT)?;
    let mut mounts = Vec::with_capacity(n);
    for _ in 0..n {
        let mnt_id = r.u64("mount")?;
        let path = r.bytes("mount path", MAX_PATH)?;
        mounts.push(Mount { mnt_id, path });
    }

    let n = r.count("inodes", MIN_INODE)?;
    let mut inodes = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u64("inode")?;
        let generation = r.u64("inode")?;
        let lookups = r.u64("inode")?;
        let file_type = r.u32("inode")?;
        let location = match r.u8("inode location")? {
            0 => Location::Root,
            1 => Location::Path(r.bytes("path", MAX_PATH)?),
            2 => {
                let mnt_id = r.u64("inode location")?;
                let handle = r.handle()?;
                Location::Handle { mnt_id, handle }
            }
            3 => {
                let reason = r.bytes("reason", MAX_REASON)?;
                Location::Invalid(String::from_utf8(reason).map_err(|_| FormatError::BadReason)?)
            }
            tag => {
                return Err(FormatError::BadTag {
                    what: "location",
                    tag,
                })
            }
        };
        let verify = match r.u8("inode verify")? {
            0 => None,
            1 => Some(r.handle()?),
            tag => {
                return Err(FormatError::BadTag {
                    what: "verify",
                    tag,
                })
            }
        };
        inodes.push(InodeRecord {
            id,
            generation,
            lookups,
            file_type,
            location,
            verify,
        });
    }

    let n = r.count("handles", MIN_HANDLE)?;
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u64("handle")?;
        let inode = r.u64("handle")?;
        let flags = r.u32("handle")?;
        handles.push(HandleRecord { id, inode, flags });
    }

    let n = r.count("locks", MIN_LOCK)?;
    let mut locks = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = match r.u8("lock")? {
            0 => LockKind::Posix,
            1 => LockKind::Flock,
            tag => return Err(FormatError::BadTag { what: "lock", tag }),
        };
        let inode = r.u64("lock")?;
        let owner = r.u64("lock")?;
        locks.push(LockRecord { kind, inode, owner });
    }
    if !r.0.is_empty() {
        return Err(FormatError::TrailingBytes(r.0.len()));
    }
    let state = State {
        mode,
        session_flags,
        next_inode,
        next_handle,
        mounts,
        inodes,
        handles,
        locks,
    };
    validate(&state)?;
    Ok(state)
}

/// The consistency rules [`decode`] enforces.
fn validate(s: &State) -> Result<(), FormatError> {
    for (what, next) in [("inode", s.next_inode), ("handle", s.next_handle)] {
        if next > MAX_NEXT_ID {
            return Err(FormatError::NextTooLarge { what, next });
        }
    }
    let mut mounts = HashSet::new();
    for m in &s.mounts {
        if !mounts.insert(m.mnt_id) {
            return Err(FormatError::DuplicateId {
                what: "mount",
                id: m.mnt_id,
            });
        }
        // Empty: the shared directory itself.
        if !m.path.is_empty() {
            check_path(&m.path)?;
        }
    }
    let mut ids = HashSet::new();
    let mut root = false;
    for i in &s.inodes {
        if i.id == 0 {
            return Err(FormatError::ZeroId { what: "inode" });
        }
        if !ids.insert(i.id) {
            return Err(FormatError::DuplicateId {
                what: "inode",
                id: i.id,
            });
        }
        if i.id >= s.next_inode {
            return Err(FormatError::IdNotBelowNext {
                what: "inode",
                id: i.id,
            });
        }
        if !FILE_TYPES.contains(&i.file_type) {
            return Err(FormatError::BadFileType {
                inode: i.id,
                file_type: i.file_type,
            });
        }
        if i.generation != 0 {
            return Err(FormatError::Generation { inode: i.id });
        }
        let is_root = i.id == ROOT_ID;
        match &i.location {
            Location::Root if is_root && i.file_type == libc::S_IFDIR => root = true,
            Location::Root => return Err(FormatError::BadRoot),
            _ if is_root => return Err(FormatError::BadRoot),
            Location::Path(p) => {
                if s.mode != Mode::FindPaths {
                    return Err(FormatError::WrongMode { inode: i.id });
                }
                check_path(p)?;
            }
            Location::Handle { mnt_id, .. } => {
                if s.mode != Mode::FileHandles || i.verify.is_some() {
                    return Err(FormatError::WrongMode { inode: i.id });
                }
                if !mounts.contains(mnt_id) {
                    return Err(FormatError::UnknownMount {
                        inode: i.id,
                        mnt_id: *mnt_id,
                    });
                }
            }
            Location::Invalid(_) => {}
        }
        if !is_root && i.lookups == 0 {
            return Err(FormatError::ZeroLookups { inode: i.id });
        }
    }
    if !root {
        return Err(FormatError::NoRoot);
    }
    let mut handles = HashSet::new();
    for h in &s.handles {
        if h.id == 0 {
            return Err(FormatError::ZeroId { what: "handle" });
        }
        if !handles.insert(h.id) {
            return Err(FormatError::DuplicateId {
                what: "handle",
                id: h.id,
            });
        }
        // Handle ids are handed out as `next + 1`, so the last one given equals `next`.
        if h.id > s.next_handle {
            return Err(FormatError::IdNotBelowNext {
                what: "handle",
                id: h.id,
            });
        }
        if !ids.contains(&h.inode) {
            return Err(FormatError::UnknownInode {
                handle: h.id,
                inode: h.inode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mutation = Box<dyn Fn(&mut State)>;

    pub(crate) fn sample() -> State {
        State {
            mode: Mode::FindPaths,
            session_flags: 0x1234,
            next_inode: 10,
            next_handle: 5,
            mounts: vec![],
            inodes: vec![
                InodeRecord {
                    id: ROOT_ID,
                    generation: 0,
                    lookups: 1,
                    file_type: libc::S_IFDIR,
                    location: Location::Root,
                    verify: None,
                },
                InodeRecord {
                    id: 3,
                    generation: 0,
                    lookups: 2,
                    file_type: libc::S_IFREG,
                    location: Location::Path(b"a/b".to_vec()),
                    verify: Some(WireHandle {
                        handle_type: 1,
                        bytes: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    }),
                },
                InodeRecord {
                    id: 4,
                    generation: 0,
                    lookups: 1,
                    file_type: libc::S_IFREG,
                    location: Location::Invalid("unlinked".into()),
                    verify: None,
                },
            ],
            handles: vec![HandleRecord {
                id: 5,
                inode: 3,
                flags: libc::O_RDWR as u32,
            }],
            locks: vec![
                LockRecord {
                    kind: LockKind::Posix,
                    inode: 3,
                    owner: 77,
                },
                LockRecord {
                    kind: LockKind::Flock,
                    inode: 3,
                    owner: 5,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(decode(&encode(&s)), Ok(s));
        let mut fh = sample();
        fh.mode = Mode::FileHandles;
        fh.mounts = vec![Mount {
            mnt_id: 9,
            path: vec![],
        }];
        fh.inodes[1].location = Location::Handle {
            mnt_id: 9,
            handle: WireHandle {
                handle_type: 1,
                bytes: vec![0; MAX_HANDLE_BYTES],
            },
        };
        fh.inodes[1].verify = None;
        assert_eq!(decode(&encode(&fh)), Ok(fh));
    }

    #[test]
    fn header_and_lengths_are_checked() {
        let good = encode(&sample());
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad), Err(FormatError::BadMagic));
        let mut bad = good.clone();
        bad[8] = 2;
        assert_eq!(decode(&bad), Err(FormatError::UnsupportedVersion(2)));
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "truncated to {len}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(FormatError::TrailingBytes(1)));
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut s = sample();
        s.mounts.clear();
        let mut b = encode(&s);
        // The mount count follows the 8 + 4 + 1 + 24 header bytes.
        b[37..41].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Err(FormatError::TooLong { .. })));
        b[37..41].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(matches!(decode(&b), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            &b""[..],
            b"/etc/passwd",
            b"..",
            b"a/../../x",
            b"a/./b",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            let mut s = sample();
            s.inodes[1].location = Location::Path(p.to_vec());
            assert!(
                matches!(decode(&encode(&s)), Err(FormatError::BadPath { .. })),
                "{p:?}"
            );
        }
        let mut s = sample();
        s.inodes[1].location = Location::Path(vec![b'a'; MAX_PATH + 1]);
        assert!(decode(&encode(&s)).is_err());
        assert!(check_path(b"a/b c/..d/.e").is_ok());
    }

    #[test]
    fn inconsistent_states_are_refused() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("duplicate inode", Box::new(|s| s.inodes[2].id = 3)),
            (
                "duplicate handle",
                Box::new(|s| s.handles.push(s.handles[0].clone())),
            ),
            (
                "no root",
                Box::new(|s| {
                    s.inodes.remove(0);
                }),
            ),
            (
                "root elsewhere",
                Box::new(|s| s.inodes[1].location = Location::Root),
            ),
            (
                "root by path",
                Box::new(|s| s.inodes[0].location = Location::Path(b"x".to_vec())),
            ),
            ("inode 0", Box::new(|s| s.inodes[2].id = 0)),
            ("handle 0", Box::new(|s| s.handles[0].id = 0)),
            ("dangling handle", Box::new(|s| s.handles[0].inode = 99)),
            ("inode past next", Box::new(|s| s.next_inode = 4)),
            ("handle past next", Box::new(|s| s.next_handle = 4)),
            ("next inode wraps", Box::new(|s| s.next_inode = u64::MAX)),
            ("next handle wraps", Box::new(|s| s.next_handle = u64::MAX)),
            ("bad type", Box::new(|s| s.inodes[1].file_type = 0o170000)),
            ("no lookups", Box::new(|s| s.inodes[1].lookups = 0)),
            ("generation", Box::new(|s| s.inodes[1].generation = 1)),
            (
                "handle in find-paths",
                Box::new(|s| {
                    s.inodes[1].location = Location::Handle {
                        mnt_id: 1,
                        handle: WireHandle {
                            handle_type: 1,
                            bytes: vec![],
                        },
                    };
                    s.inodes[1].verify = None;
                }),
            ),
            (
                "unknown mount",
                Box::new(|s| {
                    s.mode = Mode::FileHandles;
                    s.inodes[1].location = Location::Handle {
                        mnt_id: 1,
                        handle: WireHandle {
                            handle_type: 1,
                            bytes: vec![],
                        },
                    };
                    s.inodes[1].verify = None;
                }),
            ),
            (
                "duplicate mount",
                Box::new(|s| {
                    s.mounts = vec![
                        Mount {
                            mnt_id: 1,
                            path: vec![]
                        };
                        2
                    ];
                }),
            ),
            (
                "absolute mount",
                Box::new(|s| {
                    s.mounts = vec![Mount {
                        mnt_id: 1,
                        path: b"/x".to_vec(),
                    }];
                }),
            ),
        ];
        for (name, mutate) in cases {
            let mut s = sample();
            mutate(&mut s);
            assert!(decode(&encode(&s)).is_err(), "{name} accepted");
        }
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let good = encode(&sample());
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(5) {
                    0 => {
                        let i = rng.below(b.len());
                        b[i] = rng.next() as u8;
                    }
                    1 => {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                    2 => b.truncate(rng.below(b.len())),
                    3 => {
                        let i = rng.below(b.len() + 1);
                        b.insert(i, rng.next() as u8);
                    }
                    _ => {
                        // A length-sized field set to something large.
                        let i = rng.below(b.len().saturating_sub(4));
                        if b.len() >= i + 4 {
                            b[i..i + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                        }
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            if let Ok(s) = decode(&b) {
                // Whatever passes is consistent: re-encoding gives the same bytes back.
                assert_eq!(encode(&s), b);
                accepted += 1;
            }
        }
        assert!(accepted < 20_000);
    }
}
