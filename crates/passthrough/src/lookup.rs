//! Looking up a name whose file the inode table already holds, without opening it.
//!
//! A guest looks the same names up again and again (each time its entry times out), and most of
//! them name inodes the table holds. Opening the file only to find that out, then closing the
//! new descriptor again, costs two system calls more than asking about the name itself:
//! `statx` of the name tells which inode number it has, and when the table's inode under that
//! number is held by a descriptor (which pins the number) that settles it. An inode held by a
//! file handle pins nothing, so the name's own handle (`name_to_handle_at`, which opens nothing
//! either) must equal the held one.
//!
//! The name goes through the same checks as an open: one component, never `.` or `..` (so the
//! walk cannot leave the directory), and a symlink is described, not followed. Nothing is opened,
//! so a device or FIFO is never touched either.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use virtiofsd_fuse::filesystem::Entry;

use crate::fs::PassthroughFs;
use crate::inode::{InodeData, InodeFile, InodeKey};
use crate::oslib;

impl PassthroughFs {
    /// The entry of `name` in `parent` (whose descriptor is `dir`) when the table holds its file,
    /// with one more lookup reference taken; `None` when only opening it can tell. `name` must
    /// have passed `check_name`.
    ///
    /// A missing name answers `ENOENT` right away: the open would say the same. Any other
    /// failure is left to the open, so the guest sees exactly the error it always saw.
    pub(crate) fn lookup_pinned(
        &self,
        parent: &InodeData,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> io::Result<Option<Entry>> {
        let (st, mnt_id) = match oslib::statx_at(dir, name, 0) {
            Ok(found) => found,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(e),
            Err(_) => return Ok(None),
        };
        let key = InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
            mnt_id,
        };
        let Some(data) = self.inodes.find(&key) else {
            return Ok(None);
        };
        let same = match &data.file {
            // A descriptor keeps its inode alive, so no other file can carry this key meanwhile:
            // the name named this very inode when it was stat'ed, as an open would have found.
            InodeFile::Fd(_)
            | InodeFile::Handle {
                pinned: Some(_), ..
            } => true,
            // Handles name one file for good: equal handles, same file, now. It is the file
            // the stat described too, since while it lives no other file has its number.
            InodeFile::Handle { handle, .. } => oslib::name_has_handle(dir, name, handle, mnt_id),
            InodeFile::Broken => false,
        };
        if !same || !self.inodes.ref_held(&data) {
            return Ok(None);
        }
        Ok(Some(self.entry_for(parent, &data, st, mnt_id)))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    use virtiofsd_fuse::filesystem::{FileSystem, ROOT_ID};

    use crate::config::FileHandleMode;
    use crate::inode::InodeFile;
    use crate::tests::{setup_with, ROOT};

    #[test]
    fn known_names_are_found_without_a_descriptor_and_unknown_ones_are_not() {
        for mode in [FileHandleMode::Never, FileHandleMode::Mandatory] {
            known_names_are_found(mode);
        }
    }

    fn known_names_are_found(mode: FileHandleMode) {
        let (d, fs) = setup_with(|c| c.inode_file_handles = mode);
        fs::write(d.join("a"), b"x").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        symlink("a", d.join("link")).unwrap();
        let root = fs.inodes.get(ROOT_ID).unwrap();
        let dir = root.fd().unwrap();

        assert!(fs
            .lookup_pinned(&root, dir.as_fd(), c"a")
            .unwrap()
            .is_none());
        let first = fs.lookup(ROOT, ROOT_ID, c"a").unwrap();
        let held = fs.fds_held();
        let again = fs.lookup_pinned(&root, dir.as_fd(), c"a").unwrap().unwrap();
        assert_eq!(again.inode, first.inode);
        assert_eq!(again.attr.st_size, 1);
        assert_eq!(fs.fds_held(), held);
        assert_eq!(fs.inodes.get(first.inode).unwrap().lookups(), 2);

        // The symlink itself, never its target.
        let link = fs.lookup(ROOT, ROOT_ID, c"link").unwrap();
        let link_again = fs
            .lookup_pinned(&root, dir.as_fd(), c"link")
            .unwrap()
            .unwrap();
        assert_eq!(link_again.inode, link.inode);
        assert_ne!(link_again.inode, first.inode);
        assert_eq!(link_again.attr.st_mode & libc::S_IFMT, libc::S_IFLNK);

        let missing = fs.lookup_pinned(&root, dir.as_fd(), c"nope").err();
        assert_eq!(missing.and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
    }

    #[test]
    fn a_replaced_name_is_looked_up_afresh() {
        for mode in [FileHandleMode::Never, FileHandleMode::Mandatory] {
            let (d, fs) = setup_with(|c| c.inode_file_handles = mode);
            fs::write(d.join("a"), b"old").unwrap();
            let old = fs.lookup(ROOT, ROOT_ID, c"a").unwrap();
            fs::write(d.join("b"), b"new!").unwrap();
            fs::rename(d.join("b"), d.join("a")).unwrap();
            let new = fs.lookup(ROOT, ROOT_ID, c"a").unwrap();
            assert_ne!(new.inode, old.inode);
            assert_eq!(new.attr.st_size, 4);
            assert_eq!(fs.lookup(ROOT, ROOT_ID, c"a").unwrap().inode, new.inode);
        }
    }

    #[test]
    fn a_handle_that_differs_is_not_the_held_inode() {
        let (d, fs) = setup_with(|c| c.inode_file_handles = FileHandleMode::Mandatory);
        fs::write(d.join("a"), b"x").unwrap();
        fs::write(d.join("b"), b"y").unwrap();
        let a = fs.lookup(ROOT, ROOT_ID, c"a").unwrap();
        let root = fs.inodes.get(ROOT_ID).unwrap();
        let dir = root.fd().unwrap();
        let held = fs.inodes.get(a.inode).unwrap();
        let InodeFile::Handle { handle, .. } = &held.file else {
            panic!("a mandatory-handles inode holds a handle");
        };
        let mnt = held.key.mnt_id;
        assert!(crate::oslib::name_has_handle(
            dir.as_fd(),
            c"a",
            handle,
            mnt
        ));
        assert!(!crate::oslib::name_has_handle(
            dir.as_fd(),
            c"b",
            handle,
            mnt
        ));
        assert!(!crate::oslib::name_has_handle(
            dir.as_fd(),
            c"a",
            handle,
            mnt + 1
        ));
        assert!(!crate::oslib::name_has_handle(
            dir.as_fd(),
            c"nope",
            handle,
            mnt
        ));
    }
}
