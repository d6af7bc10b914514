//! POSIX ACLs (`Config::posix_acl`): negotiation, the ACL names without it, and new inodes
//! under a default ACL, compared with what the host kernel gives a local caller.

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use virtiofsd_fuse::filesystem::{FileSystem, InitOptions, Inode, XattrReply, ROOT_ID};

use crate::consts::*;
use crate::oslib;
use crate::tests::{cstr, errno, lookup, setup_with, TmpfsMount, ROOT};
use crate::PassthroughFs;

const ACCESS: &std::ffi::CStr = c"system.posix_acl_access";
const DEFAULT: &std::ffi::CStr = c"system.posix_acl_default";
const UNDEFINED: u32 = u32::MAX;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// A `posix_acl_xattr` value.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A default ACL that grants more than a 027 umask would leave, with a named user so new
/// inodes get an access ACL of their own.
fn generous_default() -> Vec<u8> {
    acl(&[
        (USER_OBJ, 7, UNDEFINED),
        (USER, 6, 1000),
        (GROUP_OBJ, 7, UNDEFINED),
        (MASK, 7, UNDEFINED),
        (OTHER, 7, UNDEFINED),
    ])
}

fn host_xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = oslib::getxattr(&cstr(path.to_str().unwrap()), name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn guest_xattr(fs: &PassthroughFs, inode: Inode, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    match fs.getxattr(ROOT, inode, name, 1024) {
        Ok(XattrReply::Data(v)) => Some(v),
        Ok(XattrReply::Size(_)) => panic!("a data query answered with a size"),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => None,
        Err(e) => panic!("getxattr: {e}"),
    }
}

/// Runs `f` on a thread with a umask of its own (`unshare(CLONE_FS)`): the process-wide umask
/// stays 0, as every filesystem in this test process relies on.
fn with_umask<T: Send>(umask: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(CLONE_FS) only gives this thread its own cwd, root and umask.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_FS) }, 0);
            // SAFETY: umask has no preconditions; after the unshare it affects this thread only.
            unsafe { libc::umask(umask) };
            f()
        })
        .join()
        .unwrap()
    })
}

/// What one round of creates gives: modes and access ACLs of a directory, a regular file, a
/// FIFO and an O_TMPFILE file, and the directory's default ACL.
#[derive(Debug, PartialEq, Eq)]
struct Made {
    modes: [u32; 4],
    access: [Option<Vec<u8>>; 4],
    dir_default: Option<Vec<u8>>,
}

/// The oracle: the same creates made directly in `dir` with umask `umask`.
fn made_locally(dir: &Path, umask: u32) -> Made {
    with_umask(umask, || {
        fs::DirBuilder::new()
            .mode(0o777)
            .create(dir.join("sub"))
            .unwrap();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(dir.join("f"))
            .unwrap();
        let dirfd = fs::File::open(dir).unwrap();
        // SAFETY: a borrowed open directory and a NUL-terminated name.
        let ret =
            unsafe { libc::mknodat(dirfd.as_raw_fd(), c"p".as_ptr(), libc::S_IFIFO | 0o666, 0) };
        assert_eq!(ret, 0);
        let tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o666)
            .open(dir)
            .unwrap();
        let tmp_path = Path::new("/proc/self/fd").join(tmp.as_raw_fd().to_string());
        let paths = [dir.join("sub"), dir.join("f"), dir.join("p"), tmp_path];
        Made {
            modes: paths
                .each_ref()
                .map(|p| fs::metadata(p).unwrap().mode() & 0o7777),
            access: paths.each_ref().map(|p| host_xattr(p, ACCESS)),
            dir_default: host_xattr(&paths[0], DEFAULT),
        }
    })
}

/// The same creates through the filesystem, as the guest sends them with DONT_MASK.
fn made_by_guest(fs: &PassthroughFs, dir: Inode, umask: u32) -> Made {
    let sub = fs.mkdir(ROOT, dir, c"sub", 0o777, umask).unwrap();
    let (f, h, _) = fs
        .create(ROOT, dir, c"f", 0o666, libc::O_WRONLY as u32, umask, false)
        .unwrap();
    fs.release(ROOT, f.inode, 0, h.unwrap(), false, None)
        .unwrap();
    let p = fs
        .mknod(ROOT, dir, c"p", libc::S_IFIFO | 0o666, 0, umask)
        .unwrap();
    let (t, th, _) = fs
        .tmpfile(ROOT, dir, 0o666, libc::O_RDWR as u32, umask)
        .unwrap();
    let entries = [sub, f, p, t];
    let made = Made {
        modes: entries.each_ref().map(|e| e.attr.st_mode & 0o7777),
        access: entries.each_ref().map(|e| guest_xattr(fs, e.inode, ACCESS)),
        dir_default: guest_xattr(fs, sub.inode, DEFAULT),
    };
    fs.release(ROOT, t.inode, 0, th.unwrap(), false, None)
        .unwrap();
    made
}

fn acl_setup() -> (crate::tests::TestDir, PassthroughFs) {
    setup_with(|c| c.posix_acl = true)
}

/// Compares guest creates with local ones in directories with and without a default ACL,
/// under `base` (a directory inside the shared one, on the filesystem under test).
fn creates_follow_the_host_kernel(fs: &PassthroughFs, base: &Path, base_inode: Inode) {
    for with_default in [true, false] {
        let tag = if with_default { "acl" } else { "plain" };
        let (guest_dir, local_dir) = (base.join(format!("g-{tag}")), base.join(format!("l-{tag}")));
        for d in [&guest_dir, &local_dir] {
            fs::create_dir(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
            if with_default {
                oslib::setxattr(&cstr(d.to_str().unwrap()), DEFAULT, &generous_default(), 0)
                    .unwrap();
            }
        }
        let name = cstr(&format!("g-{tag}"));
        let dir = fs.lookup(ROOT, base_inode, &name).unwrap().inode;
        let guest = made_by_guest(fs, dir, 0o027);
        let local = made_locally(&local_dir, 0o027);
        assert_eq!(guest, local, "creates in the {tag} directory");
        if with_default {
            // The umask was ignored: the default ACL granted group and others everything.
            assert_eq!(guest.modes, [0o777, 0o666, 0o666, 0o666]);
            assert_eq!(guest.dir_default, Some(generous_default()));
            assert!(guest.access.iter().all(Option::is_some));
        } else {
            assert_eq!(guest.modes, [0o750, 0o640, 0o640, 0o640]);
            assert!(guest.access.iter().all(Option::is_none));
        }
    }
}

#[test]
fn acls_need_all_three_flags_or_init_fails() {
    let (_d, fs) = acl_setup();
    let got = fs.init(InitOptions { offered: u64::MAX }).unwrap();
    assert_eq!(
        got & (FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT),
        FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT
    );
    for missing in [FUSE_POSIX_ACL, FUSE_DONT_MASK, FUSE_SETXATTR_EXT] {
        let offered = !missing;
        assert_eq!(errno(fs.init(InitOptions { offered })), libc::EPROTO);
    }
    // Implied xattrs, whatever the configuration said.
    let (_d, fs) = setup_with(|c| {
        c.posix_acl = true;
        c.xattr = false;
    });
    assert!(fs.config().xattr);
    assert_eq!(errno(fs.getxattr(ROOT, ROOT_ID, ACCESS, 0)), libc::ENODATA);
}

#[test]
fn acl_names_are_unsupported_and_unlisted_without_posix_acl() {
    let (d, fs) = setup_with(|c| c.xattr = true);
    fs::write(d.join("f"), b"").unwrap();
    let path = cstr(d.join("f").to_str().unwrap());
    let value = acl(&[
        (USER_OBJ, 6, UNDEFINED),
        (USER, 6, 1000),
        (GROUP_OBJ, 4, UNDEFINED),
        (MASK, 6, UNDEFINED),
        (OTHER, 4, UNDEFINED),
    ]);
    oslib::setxattr(&path, ACCESS, &value, 0).unwrap();
    oslib::setxattr(&path, c"user.a", b"1", 0).unwrap();
    let f = lookup(&fs, "f").inode;
    for name in [ACCESS, DEFAULT] {
        assert_eq!(errno(fs.getxattr(ROOT, f, name, 0)), libc::EOPNOTSUPP);
        assert_eq!(errno(fs.getxattr(ROOT, f, name, 100)), libc::EOPNOTSUPP);
        assert_eq!(
            errno(fs.setxattr(ROOT, f, name, &value, 0, 0)),
            libc::EOPNOTSUPP
        );
        assert_eq!(errno(fs.removexattr(ROOT, f, name)), libc::EOPNOTSUPP);
    }
    // The host still has the ACL; the guest does not see it, and the size says so.
    assert!(host_xattr(&d.join("f"), ACCESS).is_some());
    assert_eq!(fs.listxattr(ROOT, f, 0).unwrap(), XattrReply::Size(7));
    assert_eq!(
        fs.listxattr(ROOT, f, 7).unwrap(),
        XattrReply::Data(b"user.a\0".to_vec())
    );
    // With ACLs on, the same file lists and reads its ACL.
    let acls = PassthroughFs::new({
        let mut c = crate::Config::new(&d.0);
        c.posix_acl = true;
        c
    })
    .unwrap();
    acls.init(InitOptions { offered: u64::MAX }).unwrap();
    let f = acls.lookup(ROOT, ROOT_ID, c"f").unwrap().inode;
    assert_eq!(guest_xattr(&acls, f, ACCESS), Some(value));
    let XattrReply::Size(n) = acls.listxattr(ROOT, f, 0).unwrap() else {
        panic!("size query answered with data")
    };
    assert_eq!(n as usize, b"user.a\0system.posix_acl_access\0".len());
}

#[test]
fn setting_an_access_acl_updates_the_mode() {
    let (d, fs) = acl_setup();
    fs::write(d.join("f"), b"").unwrap();
    fs::set_permissions(d.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let f = lookup(&fs, "f").inode;
    let value = acl(&[
        (USER_OBJ, 6, UNDEFINED),
        (USER, 6, 1000),
        (GROUP_OBJ, 4, UNDEFINED),
        (MASK, 6, UNDEFINED),
        (OTHER, 0, UNDEFINED),
    ]);
    fs.setxattr(ROOT, f, ACCESS, &value, 0, 0).unwrap();
    // The group bits show the mask, as on a local filesystem.
    let (st, _) = fs.getattr(ROOT, f, None).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o660);
    fs.removexattr(ROOT, f, ACCESS).unwrap();
    assert_eq!(guest_xattr(&fs, f, ACCESS), None);
}

#[test]
fn new_inodes_under_a_default_acl_ignore_the_umask_as_locally() {
    let (d, fs) = acl_setup();
    fs::create_dir(d.join("disk")).unwrap();
    let disk = lookup(&fs, "disk").inode;
    creates_follow_the_host_kernel(&fs, &d.join("disk"), disk);
}

#[test]
fn new_inodes_under_a_default_acl_on_tmpfs() {
    let (d, fs) = acl_setup();
    fs::create_dir(d.join("mem")).unwrap();
    let _mnt = TmpfsMount::new(&d.join("mem"));
    let mem = lookup(&fs, "mem").inode;
    creates_follow_the_host_kernel(&fs, &d.join("mem"), mem);
}

#[test]
fn without_acls_the_umask_always_applies() {
    let (d, fs) = setup_with(|c| c.xattr = true);
    fs::create_dir(d.join("a")).unwrap();
    oslib::setxattr(
        &cstr(d.join("a").to_str().unwrap()),
        DEFAULT,
        &generous_default(),
        0,
    )
    .unwrap();
    let a = lookup(&fs, "a").inode;
    // Without FUSE_POSIX_ACL the guest's VFS masked already, whatever the parent's ACL says,
    // and the daemon masks the same way again: the default ACL cannot widen the result.
    let sub = fs.mkdir(ROOT, a, c"sub", 0o777, 0o027).unwrap();
    assert_eq!(sub.attr.st_mode & 0o7777, 0o750);
}
