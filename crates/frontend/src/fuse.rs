//! FUSE wire format, written independently of the daemon's own ABI module so that tests built on
//! it can catch layout mistakes on either side (the reference daemon arbitrates).

use crate::error::{Error, Result};

pub const FUSE_KERNEL_VERSION: u32 = 7;
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 38;
pub const ROOT_ID: u64 = 1;
pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
pub const ENTRY_OUT_LEN: usize = 128;
pub const ATTR_OUT_LEN: usize = 104;
pub const OPEN_OUT_LEN: usize = 16;

pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
}

/// SETATTR `valid` bits.
pub mod setattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
}

pub fn opcode_name(opcode: u32) -> &'static str {
    match opcode {
        op::LOOKUP => "LOOKUP",
        op::FORGET => "FORGET",
        op::GETATTR => "GETATTR",
        op::SETATTR => "SETATTR",
        op::READLINK => "READLINK",
        op::SYMLINK => "SYMLINK",
        op::MKNOD => "MKNOD",
        op::MKDIR => "MKDIR",
        op::UNLINK => "UNLINK",
        op::RMDIR => "RMDIR",
        op::RENAME => "RENAME",
        op::LINK => "LINK",
        op::OPEN => "OPEN",
        op::READ => "READ",
        op::WRITE => "WRITE",
        op::STATFS => "STATFS",
        op::RELEASE => "RELEASE",
        op::FSYNC => "FSYNC",
        op::FLUSH => "FLUSH",
        op::INIT => "INIT",
        op::OPENDIR => "OPENDIR",
        op::READDIR => "READDIR",
        op::RELEASEDIR => "RELEASEDIR",
        op::ACCESS => "ACCESS",
        op::CREATE => "CREATE",
        op::DESTROY => "DESTROY",
        op::BATCH_FORGET => "BATCH_FORGET",
        op::READDIRPLUS => "READDIRPLUS",
        op::RENAME2 => "RENAME2",
        _ => "unknown",
    }
}

/// The 40-byte request header.
#[derive(Clone, Copy, Debug, Default)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    pub fn encode(&self) -> [u8; IN_HEADER_LEN] {
        let mut w = Writer::default();
        w.u32(self.len)
            .u32(self.opcode)
            .u64(self.unique)
            .u64(self.nodeid);
        w.u32(self.uid).u32(self.gid).u32(self.pid).u32(0);
        w.0.try_into().expect("header is 40 bytes")
    }
}

/// Little builder for argument structs.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A name as FUSE sends it: the bytes and one NUL.
    pub fn name(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self.0.push(0);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Bounds-checked little-endian reader over reply bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::BadReply(format!(
                "reply too short: need {n} bytes at {}, have {}",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// The 16-byte reply header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

impl OutHeader {
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        Ok(OutHeader {
            len: r.u32()?,
            error: r.u32()? as i32,
            unique: r.u64()?,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

impl Attr {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Attr {
            ino: r.u64()?,
            size: r.u64()?,
            blocks: r.u64()?,
            atime: r.u64()?,
            mtime: r.u64()?,
            ctime: r.u64()?,
            atimensec: r.u32()?,
            mtimensec: r.u32()?,
            ctimensec: r.u32()?,
            mode: r.u32()?,
            nlink: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            rdev: r.u32()?,
            blksize: r.u32()?,
            flags: r.u32()?,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub attr: Attr,
}

impl EntryOut {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let nodeid = r.u64()?;
        let generation = r.u64()?;
        let entry_valid = r.u64()?;
        let attr_valid = r.u64()?;
        r.bytes(8)?; // the two nsec fields
        Ok(EntryOut {
            nodeid,
            generation,
            entry_valid,
            attr_valid,
            attr: Attr::decode(r)?,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr: Attr,
}

impl AttrOut {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let attr_valid = r.u64()?;
        r.bytes(8)?;
        Ok(AttrOut {
            attr_valid,
            attr: Attr::decode(r)?,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
}

impl OpenOut {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let fh = r.u64()?;
        let open_flags = r.u32()?;
        r.bytes(4)?;
        Ok(OpenOut { fh, open_flags })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u64,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
}

impl InitOut {
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        let major = r.u32()?;
        let minor = r.u32()?;
        let max_readahead = r.u32()?;
        let flags_lo = r.u32()?;
        let bg = r.u32()?;
        let max_write = r.u32()?;
        let time_gran = r.u32()?;
        let pages = r.u32()?;
        // flags2 follows from minor 36 on; older replies end earlier.
        let flags_hi = if r.remaining() >= 4 { r.u32()? } else { 0 };
        Ok(InitOut {
            major,
            minor,
            max_readahead,
            flags: u64::from(flags_lo) | (u64::from(flags_hi) << 32),
            max_background: bg as u16,
            congestion_threshold: (bg >> 16) as u16,
            max_write,
            time_gran,
            max_pages: pages as u16,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatfsOut {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl StatfsOut {
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        Ok(StatfsOut {
            blocks: r.u64()?,
            bfree: r.u64()?,
            bavail: r.u64()?,
            files: r.u64()?,
            ffree: r.u64()?,
            bsize: r.u32()?,
            namelen: r.u32()?,
            frsize: r.u32()?,
        })
    }
}

/// One READDIR entry (READDIRPLUS entries carry an `EntryOut` as well).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub off: u64,
    pub typ: u32,
    pub name: Vec<u8>,
    pub entry: Option<EntryOut>,
}

/// Parses a READDIR (`plus == false`) or READDIRPLUS reply body.
pub fn parse_dirents(b: &[u8], plus: bool) -> Result<Vec<DirEntry>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let entry = if plus {
            Some(EntryOut::decode(&mut r)?)
        } else {
            None
        };
        let ino = r.u64()?;
        let off = r.u64()?;
        let namelen = r.u32()? as usize;
        let typ = r.u32()?;
        if namelen == 0 || namelen > 1024 {
            return Err(Error::BadReply(format!("dirent name length {namelen}")));
        }
        let name = r.bytes(namelen)?.to_vec();
        let pad = (8 - namelen % 8) % 8;
        r.bytes(pad.min(r.remaining()))?;
        out.push(DirEntry {
            ino,
            off,
            typ,
            name,
            entry,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = InHeader {
            len: 41,
            opcode: 1,
            unique: 2,
            nodeid: 3,
            uid: 4,
            gid: 5,
            pid: 6,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], &41u32.to_le_bytes());
        assert_eq!(&b[8..16], &2u64.to_le_bytes());
        assert_eq!(&b[24..28], &4u32.to_le_bytes());
        assert_eq!(&b[32..40], &[6, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn dirents_round_trip_and_reject_garbage() {
        let mut w = Writer::default();
        w.u64(5).u64(1).u32(3).u32(8).bytes(b"abc").zeros(5);
        w.u64(6).u64(2).u32(8).u32(4).bytes(b"12345678");
        let v = parse_dirents(&w.take(), false).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, b"abc");
        assert_eq!(v[1].off, 2);
        assert!(parse_dirents(&[1, 2, 3], false).is_err());
        let mut w = Writer::default();
        w.u64(5).u64(1).u32(0).u32(8);
        assert!(parse_dirents(&w.take(), false).is_err());
    }

    #[test]
    fn short_replies_are_errors() {
        assert!(OutHeader::decode(&[0; 15]).is_err());
        assert!(StatfsOut::decode(&[0; 20]).is_err());
        assert!(EntryOut::decode(&mut Reader::new(&[0; 127])).is_err());
        assert!(EntryOut::decode(&mut Reader::new(&[0; 128])).is_ok());
    }
}
