//! Inodes named by file handles are keyed by the handle: after the host reuses a freed inode
//! number, a lookup of the new file must not return the old nodeid (whose handle is stale and
//! whose recorded type may be wrong). A test binary of its own, so no other test allocates
//! inodes on the filesystem while this one waits for the number to come back.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;

use virtiofsd_fuse::filesystem::{Context, Entry, FileSystem, InitOptions, ROOT_ID};
use virtiofsd_passthrough::{Config, FileHandleMode, PassthroughFs};

const ROOT: Context = Context {
    uid: 0,
    gid: 0,
    pid: 1,
    supplementary_gid: None,
    security_context: None,
};

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn lookup(fs: &PassthroughFs, name: &str) -> Entry {
    fs.lookup(ROOT, ROOT_ID, &cstr(name)).unwrap()
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn a_recycled_inode_number_gets_a_new_nodeid_with_file_handles() {
    let dir = std::env::temp_dir().join(format!("virtiofsd-inode-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = Config::new(&dir);
    cfg.inode_file_handles = FileHandleMode::Mandatory;
    // No slots for pinned descriptors (a quarter of the budget): a pinned inode would stay
    // alive, and its number would never come back.
    cfg.fd_budget = 3;
    let fs = PassthroughFs::new(cfg).unwrap();
    fs.init(InitOptions { offered: u64::MAX }).unwrap();
    let d = Dir(dir);
    std::fs::write(d.join("a"), b"old").unwrap();
    let old = lookup(&fs, "a");
    // The guest keeps its reference (no FORGET) while the file goes and another takes a number.
    let mut reused = None;
    for i in 0..5000 {
        std::fs::remove_file(d.join("a")).ok();
        std::fs::remove_file(d.join("b")).ok();
        let fifo = i % 2 == 0;
        let p = cstr(d.join("b").to_str().unwrap());
        if fifo {
            // SAFETY: `p` is a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
        } else {
            std::fs::write(d.join("b"), b"new").unwrap();
        }
        let e = lookup(&fs, "b");
        if e.attr.st_ino == old.attr.st_ino {
            reused = Some((e, fifo));
            break;
        }
        fs.forget(ROOT, e.inode, 1);
    }
    // ext4 (the test machines' filesystem) hands a freed number out again at once.
    let (new, fifo) = reused.expect("the test filesystem never reused a freed inode number");
    assert_ne!(
        new.inode, old.inode,
        "a recycled inode number kept the old nodeid"
    );
    if fifo {
        assert_eq!(errno(fs.open(ROOT, new.inode, 0, false)), libc::EBADF);
    } else {
        let (h, _) = fs.open(ROOT, new.inode, 0, false).unwrap();
        fs.release(ROOT, new.inode, 0, h.unwrap(), false, None)
            .unwrap();
    }
    // The old nodeid is stale, never the new file.
    assert!(fs.open(ROOT, old.inode, 0, false).is_err());
}

struct Dir(std::path::PathBuf);

impl Dir {
    fn join(&self, p: &str) -> std::path::PathBuf {
        self.0.join(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
