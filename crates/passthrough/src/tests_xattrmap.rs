//! `--xattrmap` (`Config::xattr_map`): names renamed both ways, hidden and refused, list sizes,
//! and a renamed `security.capability` dropped where the host kernel drops the real one.

use std::ffi::CStr;
use std::fs;
use std::path::Path;

use virtiofsd_fuse::filesystem::{Context, FileSystem, Inode, SetAttr, XattrReply, ROOT_ID};
use virtiofsd_policy::{XattrMap, XattrRule, XattrRuleKind};

use crate::oslib;
use crate::tests::{cstr, errno, lookup, setup_with, write_all, TestDir, ROOT};
use crate::PassthroughFs;

const USER: Context = Context {
    uid: 1000,
    gid: 1000,
    pid: 2,
    supplementary_gid: None,
    security_context: None,
};

fn rule(kind: XattrRuleKind, key: &str, prepend: &str) -> XattrRule {
    XattrRule {
        kind,
        client: true,
        server: true,
        key: key.into(),
        prepend: prepend.into(),
    }
}

/// Guest trusted.* and security.* live under user.virtiofs. on the host; the host's own
/// trusted.* and the guest's user.virtiofs.* are off limits; user.nosup.* is unsupported.
fn map() -> XattrMap {
    use XattrRuleKind::*;
    XattrMap::new(vec![
        rule(Unsupported, "user.nosup.", "user.nosup."),
        rule(Prefix, "trusted.", "user.virtiofs."),
        rule(Prefix, "security.", "user.virtiofs."),
        rule(Bad, "user.virtiofs.", "trusted."),
        rule(Ok, "", ""),
    ])
    .unwrap()
}

fn mapped() -> (TestDir, PassthroughFs) {
    setup_with(|c| c.xattr_map = Some(map()))
}

fn host_get(path: &Path, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = oslib::getxattr(&cstr(path.to_str().unwrap()), name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn host_set(path: &Path, name: &CStr, value: &[u8]) {
    oslib::setxattr(&cstr(path.to_str().unwrap()), name, value, 0).unwrap();
}

fn list(fs: &PassthroughFs, ctx: Context, inode: Inode) -> Vec<u8> {
    let XattrReply::Size(n) = fs.listxattr(ctx.clone(), inode, 0).unwrap() else {
        panic!("size query answered with data")
    };
    let XattrReply::Data(list) = fs.listxattr(ctx, inode, n).unwrap() else {
        panic!("data query answered with a size")
    };
    // The size answer is exactly what the data answer holds.
    assert_eq!(list.len(), n as usize);
    list
}

#[test]
fn names_are_renamed_both_ways() {
    let (d, fs) = mapped();
    assert!(fs.config().xattr, "a map implies xattrs");
    fs::write(d.join("f"), b"").unwrap();
    let f = lookup(&fs, "f").inode;
    fs.setxattr(ROOT, f, c"trusted.t", b"guest", 0, 0).unwrap();
    assert_eq!(
        host_get(&d.join("f"), c"user.virtiofs.trusted.t"),
        Some(b"guest".to_vec())
    );
    assert_eq!(host_get(&d.join("f"), c"trusted.t"), None);
    host_set(&d.join("f"), c"user.virtiofs.security.s", b"host");
    assert_eq!(
        fs.getxattr(ROOT, f, c"security.s", 0).unwrap(),
        XattrReply::Size(4)
    );
    assert_eq!(
        fs.getxattr(ROOT, f, c"security.s", 10).unwrap(),
        XattrReply::Data(b"host".to_vec())
    );
    assert_eq!(list(&fs, ROOT, f), b"trusted.t\0security.s\0".to_vec());
    fs.removexattr(ROOT, f, c"trusted.t").unwrap();
    assert_eq!(host_get(&d.join("f"), c"user.virtiofs.trusted.t"), None);
    // Unmatched by a renaming rule: unchanged.
    fs.setxattr(ROOT, f, c"user.plain", b"p", 0, 0).unwrap();
    assert_eq!(host_get(&d.join("f"), c"user.plain"), Some(b"p".to_vec()));
}

#[test]
fn refused_names_answer_per_operation_and_hidden_names_are_unlisted() {
    let (d, fs) = mapped();
    fs::write(d.join("f"), b"").unwrap();
    host_set(&d.join("f"), c"trusted.real", b"host-only");
    host_set(&d.join("f"), c"user.nosup.h", b"x");
    host_set(&d.join("f"), c"user.a", b"1");
    let f = lookup(&fs, "f").inode;
    // Denied: ENODATA to read, EPERM to change.
    let denied = c"user.virtiofs.trusted.t";
    assert_eq!(errno(fs.getxattr(ROOT, f, denied, 0)), libc::ENODATA);
    assert_eq!(errno(fs.getxattr(ROOT, f, denied, 10)), libc::ENODATA);
    assert_eq!(errno(fs.setxattr(ROOT, f, denied, b"v", 0, 0)), libc::EPERM);
    assert_eq!(errno(fs.removexattr(ROOT, f, denied)), libc::EPERM);
    // Unsupported: EOPNOTSUPP whatever the operation.
    let nosup = c"user.nosup.h";
    assert_eq!(errno(fs.getxattr(ROOT, f, nosup, 10)), libc::EOPNOTSUPP);
    assert_eq!(
        errno(fs.setxattr(ROOT, f, nosup, b"v", 0, 0)),
        libc::EOPNOTSUPP
    );
    assert_eq!(errno(fs.removexattr(ROOT, f, nosup)), libc::EOPNOTSUPP);
    // The host's trusted.real is not reachable as itself either (the guest name maps away).
    assert_eq!(
        errno(fs.getxattr(ROOT, f, c"trusted.real", 10)),
        libc::ENODATA
    );
    assert_eq!(list(&fs, ROOT, f), b"user.a\0".to_vec());
    assert_eq!(
        host_get(&d.join("f"), c"trusted.real"),
        Some(b"host-only".to_vec())
    );
}

#[test]
fn list_sizes_are_those_of_the_mapped_list() {
    let (d, fs) = mapped();
    fs::write(d.join("f"), b"").unwrap();
    let f = lookup(&fs, "f").inode;
    // A long host list that maps to a short one, and a renamed name that gets shorter.
    for i in 0..20 {
        host_set(&d.join("f"), &cstr(&format!("trusted.hidden-{i:02}")), b"x");
    }
    host_set(&d.join("f"), c"user.virtiofs.trusted.t", b"t");
    host_set(&d.join("f"), c"user.virtiofs.security.s", b"s");
    host_set(&d.join("f"), c"user.a", b"a");
    let guest = b"trusted.t\0security.s\0user.a\0";
    let mut got = list(&fs, ROOT, f);
    // Host order is the filesystem's; compare as sets of names.
    let sorted = |l: &[u8]| {
        let mut v: Vec<Vec<u8>> = l
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&got), sorted(guest));
    let exact = guest.len() as u32;
    assert_eq!(fs.listxattr(ROOT, f, 0).unwrap(), XattrReply::Size(exact));
    // The guest buffer needs only the mapped length, far less than the host list's.
    assert!(
        matches!(fs.listxattr(ROOT, f, exact).unwrap(), XattrReply::Data(l) if l.len() == guest.len())
    );
    assert_eq!(errno(fs.listxattr(ROOT, f, exact - 1)), libc::ERANGE);
    // An unprivileged caller sees no guest trusted.* name, and the size says so too.
    got = list(&fs, USER, f);
    assert_eq!(sorted(&got), sorted(b"security.s\0user.a\0"));
    assert_eq!(
        fs.listxattr(USER, f, 0).unwrap(),
        XattrReply::Size(b"security.s\0user.a\0".len() as u32)
    );
}

#[test]
fn unprivileged_lists_hide_trusted_names_without_a_map() {
    let (d, fs) = setup_with(|c| c.xattr = true);
    fs::write(d.join("f"), b"").unwrap();
    host_set(&d.join("f"), c"trusted.t", b"t");
    host_set(&d.join("f"), c"user.a", b"a");
    let f = lookup(&fs, "f").inode;
    assert_eq!(list(&fs, USER, f), b"user.a\0".to_vec());
    assert_eq!(errno(fs.listxattr(USER, f, 3)), libc::ERANGE);
}

const CAP: &CStr = c"security.capability";
const HOST_CAP: &CStr = c"user.virtiofs.security.capability";

/// Sets the guest's (renamed) capability and another attribute on `f`.
fn grant(fs: &PassthroughFs, d: &TestDir, f: Inode) {
    fs.setxattr(ROOT, f, CAP, b"cap", 0, 0).unwrap();
    fs.setxattr(ROOT, f, c"user.keep", b"k", 0, 0).unwrap();
    assert_eq!(host_get(&d.join("f"), HOST_CAP), Some(b"cap".to_vec()));
}

fn dropped(d: &TestDir) -> bool {
    // Only the capability goes.
    assert_eq!(host_get(&d.join("f"), c"user.keep"), Some(b"k".to_vec()));
    host_get(&d.join("f"), HOST_CAP).is_none()
}

#[test]
fn renamed_capability_is_dropped_on_write_truncate_and_chown() {
    let (d, fs) = mapped();
    fs::write(d.join("f"), b"data").unwrap();
    let f = lookup(&fs, "f").inode;

    grant(&fs, &d, f);
    let (h, _) = fs.open(ROOT, f, libc::O_RDWR as u32, false).unwrap();
    let h = h.unwrap();
    assert!(!dropped(&d), "opening without O_TRUNC changes nothing");
    write_all(&fs, f, h, b"x", 0, false);
    assert!(dropped(&d), "write");

    grant(&fs, &d, f);
    let size = SetAttr {
        size: Some(1),
        ..SetAttr::default()
    };
    fs.setattr(ROOT, f, size, Some(h)).unwrap();
    assert!(dropped(&d), "truncate through a handle");
    grant(&fs, &d, f);
    fs.setattr(ROOT, f, size, None).unwrap();
    assert!(dropped(&d), "truncate by inode");
    fs.release(ROOT, f, 0, h, false, None).unwrap();

    grant(&fs, &d, f);
    let (h, _) = fs
        .open(ROOT, f, (libc::O_WRONLY | libc::O_TRUNC) as u32, false)
        .unwrap();
    assert!(dropped(&d), "open with O_TRUNC");
    fs.release(ROOT, f, 0, h.unwrap(), false, None).unwrap();

    grant(&fs, &d, f);
    let (e, h, _) = fs
        .create(
            ROOT,
            ROOT_ID,
            c"f",
            0o644,
            (libc::O_WRONLY | libc::O_TRUNC) as u32,
            0,
            false,
        )
        .unwrap();
    assert_eq!(e.inode, f);
    assert!(dropped(&d), "create of an existing file with O_TRUNC");
    fs.release(ROOT, f, 0, h.unwrap(), false, None).unwrap();

    grant(&fs, &d, f);
    let chown = SetAttr {
        uid: Some(1000),
        ..SetAttr::default()
    };
    fs.setattr(ROOT, f, chown, None).unwrap();
    assert!(dropped(&d), "chown");

    // Not on a plain attribute change.
    grant(&fs, &d, f);
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    fs.setattr(ROOT, f, chmod, None).unwrap();
    assert!(!dropped(&d), "chmod keeps it");
}

#[test]
fn chown_of_other_types_is_not_hindered_by_the_renamed_capability() {
    let (d, fs) = mapped();
    std::os::unix::fs::symlink("nowhere", d.join("link")).unwrap();
    let link = lookup(&fs, "link").inode;
    let fifo = fs
        .mknod(ROOT, ROOT_ID, c"fifo", libc::S_IFIFO | 0o600, 0, 0)
        .unwrap()
        .inode;
    let chown = SetAttr {
        uid: Some(1000),
        gid: Some(1000),
        ..SetAttr::default()
    };
    // user.* names are refused on symlinks and FIFOs: trying to drop one must not fail chown.
    for inode in [link, fifo] {
        let (st, _) = fs.setattr(ROOT, inode, chown, None).unwrap();
        assert_eq!((st.st_uid, st.st_gid), (1000, 1000));
    }
}

#[test]
fn without_a_renaming_map_writes_leave_xattrs_alone() {
    let (d, fs) = setup_with(|c| c.xattr = true);
    fs::write(d.join("f"), b"").unwrap();
    host_set(&d.join("f"), HOST_CAP, b"cap");
    let f = lookup(&fs, "f").inode;
    let (h, _) = fs.open(ROOT, f, libc::O_RDWR as u32, false).unwrap();
    write_all(&fs, f, h.unwrap(), b"x", 0, false);
    assert_eq!(host_get(&d.join("f"), HOST_CAP), Some(b"cap".to_vec()));
}
