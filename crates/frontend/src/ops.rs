//! Typed helpers for every FUSE opcode the daemon implements, one synchronous request each.

use crate::error::{Error, Result};
use crate::fuse::{
    op, parse_dirents, AttrOut, DirEntry, EntryOut, InitOut, OpenOut, Reader, StatfsOut, Writer,
    FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION,
};
use crate::session::{Request, Session, HIPRIO};
use crate::virtq::Buf;

/// INIT flags this frontend asks for (what a Linux guest typically asks of virtio-fs).
pub const INIT_FLAGS: u64 = 1 // ASYNC_READ
    | (1 << 5) // BIG_WRITES
    | (1 << 13) // DO_READDIRPLUS
    | (1 << 14) // READDIRPLUS_AUTO
    | (1 << 22) // MAX_PAGES
    | (1 << 30); // INIT_EXT

/// Fields of a SETATTR; only those whose bit is in `valid` are applied.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub valid: u32,
    pub fh: u64,
    pub size: u64,
    pub atime: u64,
    pub mtime: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn init_args(flags: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(FUSE_KERNEL_VERSION)
        .u32(FUSE_KERNEL_MINOR_VERSION)
        .u32(128 << 10);
    w.u32(flags as u32).u32((flags >> 32) as u32).zeros(44);
    w.take()
}

pub fn read_args(fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(fh).u64(offset).u32(size).u32(0).u64(0).u32(0).u32(0);
    w.take()
}

pub fn write_args(fh: u64, offset: u64, size: u32) -> Vec<u8> {
    read_args(fh, offset, size)
}

fn entry(body: &[u8]) -> Result<EntryOut> {
    EntryOut::decode(&mut Reader::new(body))
}

fn fh_args(fh: u64) -> Vec<u8> {
    // fuse_release_in / fuse_flush_in: fh, two u32, lock_owner
    let mut w = Writer::default();
    w.u64(fh).u32(0).u32(0).u64(0);
    w.take()
}

impl Session {
    fn simple(&mut self, opcode: u32, nodeid: u64, args: &[u8]) -> Result<Vec<u8>> {
        self.call(&Request::new(opcode, nodeid, args))
    }

    pub fn init(&mut self) -> Result<InitOut> {
        self.init_with_flags(INIT_FLAGS)
    }

    pub fn init_with_flags(&mut self, flags: u64) -> Result<InitOut> {
        let body = self.simple(op::INIT, 0, &init_args(flags))?;
        let out = InitOut::decode(&body)?;
        if out.major != FUSE_KERNEL_VERSION {
            return Err(Error::BadReply(format!("INIT major {}", out.major)));
        }
        Ok(out)
    }

    /// DESTROY; returns whether the daemon sent a reply (the reference daemon sends none).
    pub fn destroy(&mut self) -> Result<bool> {
        let slot = self.scratch();
        let t = self.submit(1, slot, &Request::new(op::DESTROY, 0, &[]))?;
        let used = self.wait_for(1, t.head, self.timeout)?;
        if used.len == 0 {
            return Ok(false);
        }
        let r = self.decode(&t, used, false)?;
        if r.header.error != 0 {
            return Err(Error::Fuse {
                opcode: op::DESTROY,
                errno: -r.header.error,
            });
        }
        Ok(true)
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<EntryOut> {
        let mut w = Writer::default();
        w.name(name);
        entry(&self.simple(op::LOOKUP, parent, &w.take())?)
    }

    /// FORGET goes on the hiprio queue, as the Linux driver sends it; it has no reply.
    pub fn forget(&mut self, nodeid: u64, nlookup: u64) -> Result<()> {
        let args = nlookup.to_le_bytes();
        let mut req = Request::new(op::FORGET, nodeid, &args);
        req.expects_reply = false;
        self.call_on(HIPRIO, &req).map(drop)
    }

    pub fn batch_forget(&mut self, items: &[(u64, u64)]) -> Result<()> {
        for chunk in items.chunks(4096) {
            let mut w = Writer::default();
            w.u32(chunk.len() as u32).u32(0);
            for (n, c) in chunk {
                w.u64(*n).u64(*c);
            }
            let args = w.take();
            let mut req = Request::new(op::BATCH_FORGET, 0, &args);
            req.expects_reply = false;
            self.call_on(HIPRIO, &req)?;
        }
        Ok(())
    }

    pub fn getattr(&mut self, nodeid: u64) -> Result<AttrOut> {
        let mut w = Writer::default();
        w.u32(0).u32(0).u64(0);
        AttrOut::decode(&mut Reader::new(&self.simple(
            op::GETATTR,
            nodeid,
            &w.take(),
        )?))
    }

    pub fn setattr(&mut self, nodeid: u64, s: &SetAttr) -> Result<AttrOut> {
        let mut w = Writer::default();
        w.u32(s.valid).u32(0).u64(s.fh).u64(s.size).u64(0);
        w.u64(s.atime).u64(s.mtime).u64(0).u32(0).u32(0).u32(0);
        w.u32(s.mode).u32(0).u32(s.uid).u32(s.gid).u32(0);
        AttrOut::decode(&mut Reader::new(&self.simple(
            op::SETATTR,
            nodeid,
            &w.take(),
        )?))
    }

    fn open_like(&mut self, opcode: u32, nodeid: u64, flags: u32) -> Result<OpenOut> {
        let mut w = Writer::default();
        w.u32(flags).u32(0);
        OpenOut::decode(&mut Reader::new(&self.simple(opcode, nodeid, &w.take())?))
    }

    pub fn open(&mut self, nodeid: u64, flags: u32) -> Result<OpenOut> {
        self.open_like(op::OPEN, nodeid, flags)
    }

    pub fn opendir(&mut self, nodeid: u64) -> Result<OpenOut> {
        self.open_like(op::OPENDIR, nodeid, libc::O_RDONLY as u32)
    }

    fn readdir_like(
        &mut self,
        plus: bool,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<DirEntry>> {
        let opcode = if plus { op::READDIRPLUS } else { op::READDIR };
        let body = self.simple(opcode, nodeid, &read_args(fh, offset, size))?;
        if body.len() > size as usize {
            return Err(Error::BadReply(format!(
                "{} bytes of entries for a {size}-byte buffer",
                body.len()
            )));
        }
        parse_dirents(&body, plus)
    }

    pub fn readdir(
        &mut self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<DirEntry>> {
        self.readdir_like(false, nodeid, fh, offset, size)
    }

    pub fn readdirplus(
        &mut self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<DirEntry>> {
        self.readdir_like(true, nodeid, fh, offset, size)
    }

    /// Reads a whole directory with READDIRPLUS (or READDIR), following offsets to the end.
    /// `size` is the buffer each request offers (the Linux driver offers one page).
    pub fn list_dir(
        &mut self,
        nodeid: u64,
        fh: u64,
        plus: bool,
        size: u32,
    ) -> Result<Vec<DirEntry>> {
        let mut all = Vec::new();
        let mut off = 0;
        loop {
            let batch = self.readdir_like(plus, nodeid, fh, off, size)?;
            match batch.last() {
                None => return Ok(all),
                Some(last) => off = last.off,
            }
            all.extend(batch);
        }
    }

    pub fn releasedir(&mut self, nodeid: u64, fh: u64) -> Result<()> {
        self.simple(op::RELEASEDIR, nodeid, &fh_args(fh)).map(drop)
    }

    pub fn release(&mut self, nodeid: u64, fh: u64) -> Result<()> {
        self.simple(op::RELEASE, nodeid, &fh_args(fh)).map(drop)
    }

    pub fn flush(&mut self, nodeid: u64, fh: u64) -> Result<()> {
        self.simple(op::FLUSH, nodeid, &fh_args(fh)).map(drop)
    }

    pub fn fsync(&mut self, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        let mut w = Writer::default();
        w.u64(fh).u32(u32::from(datasync)).u32(0);
        self.simple(op::FSYNC, nodeid, &w.take()).map(drop)
    }

    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        flags: u32,
        mode: u32,
        umask: u32,
    ) -> Result<(EntryOut, OpenOut)> {
        let mut w = Writer::default();
        w.u32(flags).u32(mode).u32(umask).u32(0).name(name);
        let body = self.simple(op::CREATE, parent, &w.take())?;
        let mut r = Reader::new(&body);
        let e = EntryOut::decode(&mut r)?;
        Ok((e, OpenOut::decode(&mut r)?))
    }

    /// READ into the session's scratch area and copy the data out. Like the Linux driver, the
    /// reply gets a header buffer and a data buffer of exactly `size` bytes.
    pub fn read(&mut self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let slot = self.scratch();
        if u64::from(size) + 64 > u64::from(slot.reply_cap) {
            return Err(Error::Memory(format!(
                "read of {size} bytes exceeds the scratch area"
            )));
        }
        let at = slot.reply + 64;
        let n = self.read_into(nodeid, fh, offset, Buf::writable(at, size))?;
        if n > size {
            return Err(Error::BadReply(format!(
                "READ returned {n} bytes for {size}"
            )));
        }
        self.mem().read_vec(at, n as usize)
    }

    /// READ straight into guest memory at `buf`; returns the bytes read.
    pub fn read_into(&mut self, nodeid: u64, fh: u64, offset: u64, buf: Buf) -> Result<u32> {
        let args = read_args(fh, offset, buf.len);
        let mut req = Request::new(op::READ, nodeid, &args);
        req.reply_data = Some(Buf::writable(buf.addr, buf.len));
        let r = self.call_raw(&req)?;
        if r.header.error != 0 {
            return Err(Error::Fuse {
                opcode: op::READ,
                errno: -r.header.error,
            });
        }
        Ok(r.used_len - 16)
    }

    /// WRITE `data` (copied into guest memory first); returns the size the daemon reports.
    pub fn write(&mut self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let slot = self.scratch();
        let at = slot.reply + 64;
        if data.len() as u64 + 64 > u64::from(slot.reply_cap) {
            return Err(Error::Memory(format!(
                "write of {} bytes exceeds the scratch area",
                data.len()
            )));
        }
        // The payload sits in the reply area, which is free until the reply arrives; the reply
        // header is only 24 bytes and lands before it.
        self.mem().write(at, data)?;
        self.write_from(nodeid, fh, offset, Buf::readable(at, data.len() as u32))
    }

    /// WRITE a payload that is already in guest memory.
    pub fn write_from(&mut self, nodeid: u64, fh: u64, offset: u64, payload: Buf) -> Result<u32> {
        let args = write_args(fh, offset, payload.len);
        let mut req = Request::new(op::WRITE, nodeid, &args);
        req.payload = Some(Buf::readable(payload.addr, payload.len));
        let body = self.call(&req)?;
        Reader::new(&body).u32()
    }

    pub fn mkdir(&mut self, parent: u64, name: &[u8], mode: u32, umask: u32) -> Result<EntryOut> {
        let mut w = Writer::default();
        w.u32(mode).u32(umask).name(name);
        entry(&self.simple(op::MKDIR, parent, &w.take())?)
    }

    pub fn mknod(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> Result<EntryOut> {
        let mut w = Writer::default();
        w.u32(mode).u32(rdev).u32(umask).u32(0).name(name);
        entry(&self.simple(op::MKNOD, parent, &w.take())?)
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        let mut w = Writer::default();
        w.name(name);
        self.simple(op::UNLINK, parent, &w.take()).map(drop)
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        let mut w = Writer::default();
        w.name(name);
        self.simple(op::RMDIR, parent, &w.take()).map(drop)
    }

    pub fn rename(&mut self, olddir: u64, old: &[u8], newdir: u64, new: &[u8]) -> Result<()> {
        let mut w = Writer::default();
        w.u64(newdir).name(old).name(new);
        self.simple(op::RENAME, olddir, &w.take()).map(drop)
    }

    pub fn rename2(
        &mut self,
        olddir: u64,
        old: &[u8],
        newdir: u64,
        new: &[u8],
        flags: u32,
    ) -> Result<()> {
        let mut w = Writer::default();
        w.u64(newdir).u32(flags).u32(0).name(old).name(new);
        self.simple(op::RENAME2, olddir, &w.take()).map(drop)
    }

    pub fn link(&mut self, nodeid: u64, newparent: u64, newname: &[u8]) -> Result<EntryOut> {
        let mut w = Writer::default();
        w.u64(nodeid).name(newname);
        entry(&self.simple(op::LINK, newparent, &w.take())?)
    }

    pub fn symlink(&mut self, parent: u64, name: &[u8], target: &[u8]) -> Result<EntryOut> {
        let mut w = Writer::default();
        w.name(name).name(target);
        entry(&self.simple(op::SYMLINK, parent, &w.take())?)
    }

    pub fn readlink(&mut self, nodeid: u64) -> Result<Vec<u8>> {
        self.simple(op::READLINK, nodeid, &[])
    }

    pub fn statfs(&mut self, nodeid: u64) -> Result<StatfsOut> {
        StatfsOut::decode(&self.simple(op::STATFS, nodeid, &[])?)
    }

    pub fn access(&mut self, nodeid: u64, mask: u32) -> Result<()> {
        let mut w = Writer::default();
        w.u32(mask).u32(0);
        self.simple(op::ACCESS, nodeid, &w.take()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_sizes_match_the_kernel_abi() {
        assert_eq!(init_args(INIT_FLAGS).len(), 64);
        assert_eq!(read_args(1, 2, 3).len(), 40);
        assert_eq!(fh_args(1).len(), 24);
    }
}
