//! xattrs, data-range operations, statx, O_TMPFILE, credentials and other POSIX details.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use virtiofsd_fuse::filesystem::{
    Context, DirEntry, FileSystem, SetAttr, SetTime, XattrReply, ROOT_ID,
};

use crate::oslib;
use crate::tests::{cstr, errno, lookup, read_all, setup, setup_with, write_all, ROOT};
use crate::xattr::FUSE_SETXATTR_ACL_KILL_SGID;

const USER: Context = Context {
    uid: 1000,
    gid: 1000,
    pid: 2,
    supplementary_gid: None,
    security_context: None,
};

#[test]
fn xattrs_answer_enosys_unless_enabled() {
    let (d, fs) = setup();
    fs::write(d.join("f"), b"").unwrap();
    let f = lookup(&fs, "f").inode;
    assert_eq!(errno(fs.getxattr(ROOT, f, c"user.a", 0)), libc::ENOSYS);
    assert_eq!(errno(fs.listxattr(ROOT, f, 0)), libc::ENOSYS);
    assert_eq!(
        errno(fs.setxattr(ROOT, f, c"user.a", b"v", 0, 0)),
        libc::ENOSYS
    );
    assert_eq!(errno(fs.removexattr(ROOT, f, c"user.a")), libc::ENOSYS);
}

#[test]
fn xattr_set_get_list_remove_and_flags() {
    let (d, fs) = setup_with(|c| c.xattr = true);
    fs::write(d.join("f"), b"").unwrap();
    let f = lookup(&fs, "f").inode;
    fs.setxattr(ROOT, f, c"user.color", b"blue", 0, 0).unwrap();
    fs.setxattr(ROOT, f, c"trusted.t", b"root-only", 0, 0)
        .unwrap();
    assert_eq!(
        fs.getxattr(ROOT, f, c"user.color", 0).unwrap(),
        XattrReply::Size(4)
    );
    assert_eq!(
        fs.getxattr(ROOT, f, c"user.color", 100).unwrap(),
        XattrReply::Data(b"blue".to_vec())
    );
    assert_eq!(errno(fs.getxattr(ROOT, f, c"user.color", 2)), libc::ERANGE);
    assert_eq!(errno(fs.getxattr(ROOT, f, c"user.none", 10)), libc::ENODATA);
    // The value really is on the host file.
    let mut buf = [0u8; 16];
    let n = oslib::getxattr(
        &cstr(d.join("f").to_str().unwrap()),
        c"user.color",
        &mut buf,
    )
    .unwrap();
    assert_eq!(&buf[..n], b"blue");
    let XattrReply::Size(n) = fs.listxattr(ROOT, f, 0).unwrap() else {
        panic!("size query answered with data")
    };
    let XattrReply::Data(list) = fs.listxattr(ROOT, f, n).unwrap() else {
        panic!("data query answered with a size")
    };
    let names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
    assert!(names.contains(&&b"user.color"[..]) && names.contains(&&b"trusted.t"[..]));
    assert_eq!(
        errno(fs.setxattr(ROOT, f, c"user.color", b"x", libc::XATTR_CREATE as u32, 0)),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.setxattr(ROOT, f, c"user.new", b"x", libc::XATTR_REPLACE as u32, 0)),
        libc::ENODATA
    );
    fs.removexattr(ROOT, f, c"user.color").unwrap();
    assert_eq!(
        errno(fs.getxattr(ROOT, f, c"user.color", 10)),
        libc::ENODATA
    );
    assert_eq!(errno(fs.removexattr(ROOT, f, c"user.color")), libc::ENODATA);
}

#[test]
fn xattrs_of_symlinks_and_fifos_are_their_own() {
    let (d, fs) = setup_with(|c| c.xattr = true);
    fs::write(d.join("target"), b"").unwrap();
    std::os::unix::fs::symlink("target", d.join("link")).unwrap();
    let link = lookup(&fs, "link").inode;
    let target = lookup(&fs, "target").inode;
    fs.setxattr(ROOT, link, c"trusted.on-link", b"1", 0, 0)
        .unwrap();
    assert_eq!(
        errno(fs.getxattr(ROOT, target, c"trusted.on-link", 10)),
        libc::ENODATA
    );
    assert_eq!(
        fs.getxattr(ROOT, link, c"trusted.on-link", 10).unwrap(),
        XattrReply::Data(b"1".to_vec())
    );
    // user.* is not allowed on symlinks by the host kernel; the error passes through.
    assert_eq!(
        errno(fs.setxattr(ROOT, link, c"user.x", b"1", 0, 0)),
        libc::EPERM
    );
    let fifo = fs
        .mknod(ROOT, ROOT_ID, c"fifo", libc::S_IFIFO | 0o600, 0, 0)
        .unwrap();
    fs.setxattr(ROOT, fifo.inode, c"trusted.f", b"2", 0, 0)
        .unwrap();
    assert_eq!(
        fs.getxattr(ROOT, fifo.inode, c"trusted.f", 10).unwrap(),
        XattrReply::Data(b"2".to_vec())
    );
}

/// A POSIX ACL xattr value: user::rwx, user:1000:rw-, group::r-x, mask::rwx, other::r-x.
fn acl_with_named_user() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 6, 1000),
        (0x04, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn acls_pass_through_and_acl_kill_sgid_clears_setgid() {
    let (d, fs) = setup_with(|c| {
        c.posix_acl = true;
        c.killpriv_v2 = true;
    });
    for name in ["keep", "kill"] {
        fs::write(d.join(name), b"").unwrap();
        fs::set_permissions(d.join(name), fs::Permissions::from_mode(0o2775)).unwrap();
    }
    let acl = acl_with_named_user();
    let keep = lookup(&fs, "keep").inode;
    fs.setxattr(ROOT, keep, c"system.posix_acl_access", &acl, 0, 0)
        .unwrap();
    assert_eq!(
        fs.getxattr(ROOT, keep, c"system.posix_acl_access", 100)
            .unwrap(),
        XattrReply::Data(acl.clone())
    );
    assert_eq!(
        fs::metadata(d.join("keep")).unwrap().mode() & 0o7777,
        0o2775
    );
    let kill = lookup(&fs, "kill").inode;
    fs.setxattr(
        ROOT,
        kill,
        c"system.posix_acl_access",
        &acl,
        0,
        FUSE_SETXATTR_ACL_KILL_SGID,
    )
    .unwrap();
    assert_eq!(
        fs::metadata(d.join("kill")).unwrap().mode() & 0o7777,
        0o0775
    );
}

#[test]
fn fallocate_modes_and_seek_data_hole() {
    let (_d, fs) = setup();
    let (e, h, _) = fs
        .create(ROOT, ROOT_ID, c"f", 0o644, libc::O_RDWR as u32, 0, false)
        .unwrap();
    let (ino, h) = (e.inode, h.unwrap());
    const B: u64 = 4096;
    fs.fallocate(ROOT, ino, h, 0, 0, 4 * B).unwrap();
    assert_eq!(fs.getattr(ROOT, ino, None).unwrap().0.st_size, 4 * B as i64);
    write_all(&fs, ino, h, &vec![b'x'; 4 * B as usize], 0, false);
    // Punch a hole in the second block: size stays, data reads as zeros.
    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32;
    fs.fallocate(ROOT, ino, h, punch, B, B).unwrap();
    assert_eq!(fs.getattr(ROOT, ino, None).unwrap().0.st_size, 4 * B as i64);
    assert!(read_all(&fs, ino, h, B as u32, B).iter().all(|&b| b == 0));
    assert_eq!(
        fs.lseek(ROOT, ino, h, 0, libc::SEEK_HOLE as u32).unwrap(),
        B
    );
    assert_eq!(
        fs.lseek(ROOT, ino, h, B, libc::SEEK_DATA as u32).unwrap(),
        2 * B
    );
    assert_eq!(
        errno(fs.lseek(ROOT, ino, h, 10 * B, libc::SEEK_DATA as u32)),
        libc::ENXIO
    );
    assert_eq!(fs.lseek(ROOT, ino, h, 7, libc::SEEK_SET as u32).unwrap(), 7);
    // Zero a range.
    fs.fallocate(ROOT, ino, h, libc::FALLOC_FL_ZERO_RANGE as u32, 0, 100)
        .unwrap();
    assert!(read_all(&fs, ino, h, 100, 0).iter().all(|&b| b == 0));
    // Collapse and insert ranges, where the host filesystem has them.
    match fs.fallocate(ROOT, ino, h, libc::FALLOC_FL_COLLAPSE_RANGE as u32, 0, B) {
        Ok(()) => {
            assert_eq!(fs.getattr(ROOT, ino, None).unwrap().0.st_size, 3 * B as i64);
            fs.fallocate(ROOT, ino, h, libc::FALLOC_FL_INSERT_RANGE as u32, 0, B)
                .unwrap();
            assert_eq!(fs.getattr(ROOT, ino, None).unwrap().0.st_size, 4 * B as i64);
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP)),
    }
    // Bad requests are errors from the host, not crashes.
    assert_eq!(
        errno(fs.fallocate(ROOT, ino, h, libc::FALLOC_FL_COLLAPSE_RANGE as u32, 1, 3)),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.fallocate(ROOT, ino, h, 0, u64::MAX, 1)),
        libc::EINVAL
    );
    assert_eq!(errno(fs.lseek(ROOT, ino, h, 0, 99)), libc::EINVAL);
    assert_eq!(errno(fs.fallocate(ROOT, ino, 9999, 0, 0, 1)), libc::EBADF);
}

#[test]
fn copy_file_range_between_handles() {
    let (d, fs) = setup();
    fs::write(d.join("src"), b"0123456789").unwrap();
    let src = lookup(&fs, "src").inode;
    let (hs, _) = fs.open(ROOT, src, libc::O_RDONLY as u32, false).unwrap();
    let (e, hd, _) = fs
        .create(ROOT, ROOT_ID, c"dst", 0o644, libc::O_RDWR as u32, 0, false)
        .unwrap();
    let n = fs
        .copy_file_range(ROOT, src, hs.unwrap(), 2, e.inode, hd.unwrap(), 1, 5, 0)
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(fs::read(d.join("dst")).unwrap(), b"\x0023456");
    assert_eq!(
        errno(fs.copy_file_range(ROOT, src, hs.unwrap(), 0, e.inode, hd.unwrap(), 0, 1, 1)),
        libc::EINVAL
    );
    // The destination handle must be writable.
    assert_eq!(
        errno(fs.copy_file_range(ROOT, e.inode, hd.unwrap(), 0, src, hs.unwrap(), 0, 1, 0)),
        libc::EBADF
    );
}

#[test]
fn syncfs_fsyncdir_and_statx() {
    let (d, fs) = setup();
    fs::write(d.join("f"), b"abc").unwrap();
    std::os::unix::fs::symlink("f", d.join("l")).unwrap();
    let f = lookup(&fs, "f");
    let l = lookup(&fs, "l");
    fs.syncfs(ROOT, f.inode).unwrap();
    fs.syncfs(ROOT, l.inode).unwrap();
    fs.syncfs(ROOT, ROOT_ID).unwrap();
    let (dh, _) = fs.opendir(ROOT, ROOT_ID, 0).unwrap();
    fs.fsyncdir(ROOT, ROOT_ID, true, dh.unwrap()).unwrap();
    fs.fsyncdir(ROOT, ROOT_ID, false, dh.unwrap()).unwrap();

    let (stx, _) = fs
        .statx(
            ROOT,
            f.inode,
            None,
            0,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
        )
        .unwrap();
    assert_eq!(stx.stx_ino, f.attr.st_ino);
    assert_eq!(stx.stx_size, 3);
    assert_eq!(u32::from(stx.stx_mode) & libc::S_IFMT, libc::S_IFREG);
    // The symlink itself, never its target.
    let (stx, _) = fs
        .statx(ROOT, l.inode, None, 0, libc::STATX_BASIC_STATS)
        .unwrap();
    assert_eq!(u32::from(stx.stx_mode) & libc::S_IFMT, libc::S_IFLNK);
    let (h, _) = fs
        .open(ROOT, f.inode, libc::O_RDONLY as u32, false)
        .unwrap();
    let (stx, _) = fs
        .statx(
            ROOT,
            f.inode,
            h,
            libc::AT_STATX_FORCE_SYNC as u32,
            libc::STATX_SIZE,
        )
        .unwrap();
    assert_eq!(stx.stx_size, 3);
    assert_eq!(
        errno(fs.statx(ROOT, f.inode, Some(9999), 0, 0)),
        libc::EBADF
    );
}

#[test]
fn tmpfile_belongs_to_the_caller_and_has_no_name() {
    let (d, fs) = setup();
    let (e, h, _) = fs
        .tmpfile(USER, ROOT_ID, 0o666, libc::O_RDWR as u32, 0o022)
        .unwrap();
    let h = h.unwrap();
    assert_eq!((e.attr.st_uid, e.attr.st_gid), (1000, 1000));
    assert_eq!(e.attr.st_mode & 0o7777, 0o644);
    assert_eq!(e.attr.st_nlink, 0);
    write_all(&fs, e.inode, h, b"temp", 0, false);
    assert_eq!(read_all(&fs, e.inode, h, 10, 0), b"temp");
    assert_eq!(fs::read_dir(&d.0).unwrap().count(), 0);
    // It can be given a name later, as linkat(AT_EMPTY_PATH) does in the guest.
    fs.link(ROOT, e.inode, ROOT_ID, c"named").unwrap();
    assert_eq!(fs::read(d.join("named")).unwrap(), b"temp");
    assert_eq!(
        errno(fs.tmpfile(USER, ROOT_ID, 0o600, libc::O_RDONLY as u32, 0)),
        libc::EINVAL
    );
}

#[test]
fn supplementary_group_grants_create_access() {
    let (d, fs) = setup();
    fs::create_dir(d.join("team")).unwrap();
    fs::set_permissions(d.join("team"), fs::Permissions::from_mode(0o770)).unwrap();
    std::os::unix::fs::chown(d.join("team"), Some(0), Some(5000)).unwrap();
    let team = lookup(&fs, "team").inode;
    assert_eq!(errno(fs.mkdir(USER, team, c"no", 0o755, 0)), libc::EACCES);
    let member = Context {
        supplementary_gid: Some(5000),
        ..USER
    };
    let e = fs.mkdir(member.clone(), team, c"yes", 0o755, 0).unwrap();
    assert_eq!((e.attr.st_uid, e.attr.st_gid), (1000, 1000));
    let (e, h, _) = fs
        .create(member, team, c"file", 0o640, libc::O_RDWR as u32, 0, false)
        .unwrap();
    assert_eq!(e.attr.st_uid, 1000);
    fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
        .unwrap();
    // The daemon's own groups never leak to the caller, and come back afterwards.
    assert_eq!(errno(fs.mkdir(USER, team, c"no", 0o755, 0)), libc::EACCES);
    assert!(!oslib::getgroups().unwrap().contains(&5000));
}

#[test]
fn kill_suidgid_on_open_and_chown() {
    let (d, fs) = setup_with(|c| c.killpriv_v2 = true);
    for n in ["o", "c"] {
        fs::write(d.join(n), b"data").unwrap();
        fs::set_permissions(d.join(n), fs::Permissions::from_mode(0o6755)).unwrap();
    }
    let o = lookup(&fs, "o").inode;
    let flags = (libc::O_RDWR | libc::O_TRUNC) as u32;
    let (h, _) = fs.open(ROOT, o, flags, false).unwrap();
    fs.release(ROOT, o, 0, h.unwrap(), false, None).unwrap();
    assert_eq!(fs::metadata(d.join("o")).unwrap().mode() & 0o7777, 0o6755);
    let (h, _) = fs.open(ROOT, o, flags, true).unwrap();
    fs.release(ROOT, o, 0, h.unwrap(), false, None).unwrap();
    assert_eq!(fs::metadata(d.join("o")).unwrap().mode() & 0o7777, 0o0755);
    let c = lookup(&fs, "c").inode;
    let attr = SetAttr {
        uid: Some(1000),
        ..Default::default()
    };
    let (st, _) = fs.setattr(ROOT, c, attr, None).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o0755);
}

#[test]
fn noatime_is_stripped_unless_preserved() {
    for preserve in [false, true] {
        let (d, fs) = setup_with(|c| c.preserve_noatime = preserve);
        fs::write(d.join("f"), b"").unwrap();
        let f = lookup(&fs, "f").inode;
        let (h, _) = fs
            .open(ROOT, f, (libc::O_RDONLY | libc::O_NOATIME) as u32, false)
            .unwrap();
        let hd = fs.handles.get(h.unwrap(), f).unwrap();
        let fl = oslib::get_fl(hd.fd().as_fd()).unwrap();
        assert_eq!(fl & libc::O_NOATIME != 0, preserve);
    }
}

#[test]
fn timestamps_keep_nanoseconds() {
    let (d, fs) = setup();
    fs::write(d.join("f"), b"").unwrap();
    let f = lookup(&fs, "f").inode;
    let attr = SetAttr {
        atime: Some(SetTime::At {
            secs: 1_000_000_000,
            nsecs: 1,
        }),
        mtime: Some(SetTime::At {
            secs: 1_700_000_000,
            nsecs: 123_456_789,
        }),
        ..Default::default()
    };
    fs.setattr(ROOT, f, attr, None).unwrap();
    let (st, _) = fs.getattr(ROOT, f, None).unwrap();
    assert_eq!(
        (st.st_mtime, st.st_mtime_nsec),
        (1_700_000_000, 123_456_789)
    );
    assert_eq!((st.st_atime, st.st_atime_nsec), (1_000_000_000, 1));
    let (stx, _) = fs.statx(ROOT, f, None, 0, libc::STATX_MTIME).unwrap();
    assert_eq!(stx.stx_mtime.tv_nsec, 123_456_789);
}

#[test]
fn readdir_offsets_survive_deletions_between_calls() {
    let (d, fs) = setup();
    for i in 0..200 {
        fs::write(d.join(&format!("e{i:03}")), b"").unwrap();
    }
    let (h, _) = fs.opendir(ROOT, ROOT_ID, 0).unwrap();
    let h = h.unwrap();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut offset = 0;
    let mut first = true;
    loop {
        let mut batch = Vec::new();
        fs.readdir(ROOT, ROOT_ID, h, 4096, offset, &mut |e: DirEntry<'_>| {
            if batch.len() == 10 {
                return Ok(0);
            }
            batch.push((e.name.to_vec(), e.offset));
            Ok(1)
        })
        .unwrap();
        if batch.is_empty() {
            break;
        }
        offset = batch.last().unwrap().1;
        seen.extend(batch.into_iter().map(|(n, _)| n));
        if first {
            // Delete every other file, seen or not, between the first and second call.
            for i in (0..200).step_by(2) {
                fs.unlink(ROOT, ROOT_ID, &cstr(&format!("e{i:03}")))
                    .unwrap();
            }
            first = false;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "an entry was listed twice");
    // Every file that still exists was listed exactly once.
    for i in (1..200).step_by(2) {
        let name = format!("e{i:03}").into_bytes();
        assert!(
            seen.contains(&name),
            "{} missing",
            String::from_utf8_lossy(&name)
        );
    }
}

#[test]
fn forbidden_ids_create_nothing() {
    use virtiofsd_fuse::filesystem::FORBIDDEN_ID;
    let (d, fs) = setup();
    for ctx in [
        Context {
            uid: FORBIDDEN_ID,
            ..USER
        },
        Context {
            gid: FORBIDDEN_ID,
            ..USER
        },
    ] {
        assert_eq!(
            errno(fs.mkdir(ctx.clone(), ROOT_ID, c"d", 0o755, 0)),
            libc::EPERM
        );
        assert_eq!(
            errno(fs.create(
                ctx.clone(),
                ROOT_ID,
                c"f",
                0o644,
                libc::O_RDWR as u32,
                0,
                false
            )),
            libc::EPERM
        );
        assert_eq!(
            errno(fs.tmpfile(ctx, ROOT_ID, 0o644, libc::O_RDWR as u32, 0)),
            libc::EPERM
        );
    }
    assert_eq!(fs::read_dir(&d.0).unwrap().count(), 0);
    assert_eq!(fs.inode_count(), 1);
}
