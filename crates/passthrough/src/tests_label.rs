//! Security labels (`Config::security_label`): set on every new inode before the reply, mapped
//! through the xattr map, and the inode removed again when the label cannot be set.

use std::ffi::CStr;
use std::fs;
use std::sync::Arc;

use virtiofsd_fuse::filesystem::{
    Context, Entry, FileSystem, InitOptions, SecurityContext, XattrReply, ROOT_ID,
};
use virtiofsd_policy::{XattrMap, XattrRule, XattrRuleKind};

use crate::consts::FUSE_SECURITY_CTX;
use crate::tests::{errno, setup_with, TestDir, ROOT};
use crate::PassthroughFs;

/// A name no host LSM claims, so the host stores it as given.
const LABEL: &CStr = c"security.vfsd-test";

fn labelled(name: &CStr, value: &[u8]) -> Context {
    Context {
        security_context: Some(Arc::new(SecurityContext {
            name: name.into(),
            value: value.to_vec(),
        })),
        ..ROOT
    }
}

fn label_of(fs: &PassthroughFs, e: &Entry, name: &CStr) -> Option<Vec<u8>> {
    match fs.getxattr(ROOT, e.inode, name, 256) {
        Ok(XattrReply::Data(v)) => Some(v),
        Ok(XattrReply::Size(_)) => panic!("a data query answered with a size"),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => None,
        Err(e) => panic!("getxattr: {e}"),
    }
}

/// Each create-type operation, by name, as `ctx`; tmpfile's entry has no name.
fn create_each(fs: &PassthroughFs, ctx: &Context) -> Vec<(&'static str, std::io::Result<Entry>)> {
    let release = |r: std::io::Result<(Entry, Option<u64>, _)>| {
        r.map(|(e, h, _)| {
            fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
                .unwrap();
            e
        })
    };
    vec![
        (
            "file",
            release(fs.create(
                ctx.clone(),
                ROOT_ID,
                c"file",
                0o644,
                libc::O_RDWR as u32,
                0,
                false,
            )),
        ),
        ("dir", fs.mkdir(ctx.clone(), ROOT_ID, c"dir", 0o755, 0)),
        (
            "fifo",
            fs.mknod(ctx.clone(), ROOT_ID, c"fifo", libc::S_IFIFO | 0o644, 0, 0),
        ),
        ("link", fs.symlink(ctx.clone(), c"file", ROOT_ID, c"link")),
        // Left open: a nameless file lives only while something holds it open, which an inode
        // held as a file handle does not.
        (
            "",
            fs.tmpfile(ctx.clone(), ROOT_ID, 0o644, libc::O_RDWR as u32, 0)
                .map(|(e, _, _)| e),
        ),
    ]
}

fn labels_on() -> (TestDir, PassthroughFs) {
    setup_with(|c| c.security_label = true)
}

/// Nothing of a failed create is left: no name, no inode, no handle, no descriptor.
fn nothing_left(d: &TestDir, fs: &PassthroughFs, fds_before: usize) {
    for name in ["file", "dir", "fifo", "link"] {
        assert!(
            fs::symlink_metadata(d.join(name)).is_err(),
            "{name} was left behind"
        );
    }
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.handle_count(), 0);
    assert_eq!(fs.fds_held(), fds_before);
}

#[test]
fn security_ctx_is_required_when_labels_are_on() {
    let (_d, fs) = labels_on();
    assert!(fs.config().xattr, "labels imply xattrs");
    let got = fs.init(InitOptions { offered: u64::MAX }).unwrap();
    assert_eq!(got & FUSE_SECURITY_CTX, FUSE_SECURITY_CTX);
    let offered = !FUSE_SECURITY_CTX;
    assert_eq!(errno(fs.init(InitOptions { offered })), libc::EPROTO);
    let (_d, plain) = setup_with(|_| {});
    let got = plain.init(InitOptions { offered: u64::MAX }).unwrap();
    assert_eq!(got & FUSE_SECURITY_CTX, 0);
}

#[test]
fn every_new_inode_carries_the_guest_label() {
    let (_d, fs) = labels_on();
    let ctx = labelled(LABEL, b"system_u:object_r:test_t:s0");
    for (what, r) in create_each(&fs, &ctx) {
        let e = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            label_of(&fs, &e, LABEL).as_deref(),
            Some(&b"system_u:object_r:test_t:s0"[..]),
            "{what}"
        );
    }
    // Opening an existing file is not a creation: its label stays.
    let other = labelled(LABEL, b"other");
    let (e, h, _) = fs
        .create(
            other,
            ROOT_ID,
            c"file",
            0o644,
            libc::O_RDWR as u32,
            0,
            false,
        )
        .unwrap();
    fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
        .unwrap();
    assert_eq!(
        label_of(&fs, &e, LABEL).as_deref(),
        Some(&b"system_u:object_r:test_t:s0"[..])
    );
}

#[test]
fn labels_are_ignored_unless_configured() {
    let (_d, fs) = setup_with(|c| c.xattr = true);
    let ctx = labelled(LABEL, b"ignored");
    for (what, r) in create_each(&fs, &ctx) {
        let e = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(label_of(&fs, &e, LABEL), None, "{what}");
    }
}

#[test]
fn a_label_that_cannot_be_set_undoes_the_create() {
    let (d, fs) = labels_on();
    let fds = fs.fds_held();
    // Larger than any xattr value may be (XATTR_SIZE_MAX): the host refuses it after the
    // inode exists.
    let ctx = labelled(LABEL, &vec![b'x'; 65537]);
    for (what, r) in create_each(&fs, &ctx) {
        assert_eq!(errno(r), libc::E2BIG, "{what}");
    }
    nothing_left(&d, &fs, fds);
}

fn map() -> XattrMap {
    let rule = |kind, key: &str, prepend: &str| XattrRule {
        kind,
        client: true,
        server: true,
        key: key.into(),
        prepend: prepend.into(),
    };
    XattrMap::new(vec![
        rule(XattrRuleKind::Bad, "security.denied", ""),
        rule(XattrRuleKind::Prefix, "security.", "user.virtiofs."),
        rule(XattrRuleKind::Ok, "", ""),
    ])
    .unwrap()
}

#[test]
fn label_names_go_through_the_map() {
    let (d, fs) = setup_with(|c| {
        c.security_label = true;
        c.xattr_map = Some(map());
    });
    let fds = fs.fds_held();
    let ctx = labelled(c"security.selinux", b"l");
    let (e, h, _) = fs
        .create(
            ctx.clone(),
            ROOT_ID,
            c"file",
            0o644,
            libc::O_RDWR as u32,
            0,
            false,
        )
        .unwrap();
    fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
        .unwrap();
    // Stored under the host name, read back under the guest's.
    let mut buf = [0u8; 8];
    let n = crate::oslib::getxattr(
        &crate::tests::cstr(d.join("file").to_str().unwrap()),
        c"user.virtiofs.security.selinux",
        &mut buf,
    )
    .unwrap();
    assert_eq!(&buf[..n], b"l");
    assert_eq!(
        label_of(&fs, &e, c"security.selinux").as_deref(),
        Some(&b"l"[..])
    );
    fs.forget(ROOT, e.inode, 1);
    fs::remove_file(d.join("file")).unwrap();

    // user.* names cannot be set on symlinks and FIFOs: the host refuses them once made.
    assert_eq!(
        errno(fs.symlink(ctx.clone(), c"t", ROOT_ID, c"link")),
        libc::EPERM
    );
    assert_eq!(
        errno(fs.mknod(ctx.clone(), ROOT_ID, c"fifo", libc::S_IFIFO | 0o644, 0, 0)),
        libc::EPERM
    );
    nothing_left(&d, &fs, fds);

    // A name the map refuses fails every create before anything is made.
    let denied = labelled(c"security.denied", b"l");
    for (what, r) in create_each(&fs, &denied) {
        assert_eq!(errno(r), libc::EPERM, "{what}");
    }
    nothing_left(&d, &fs, fds);
}
