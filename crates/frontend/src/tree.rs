//! Builds (once) a tree of many small files: `files` files, `per_dir` to a leaf directory, the
//! leaf directories spread `fanout` to a directory over as few levels as that takes (0: all in
//! the top directory). Leaf `i` is `d<digit>/d<digit>/…`, the digits of `i` in base `fanout`;
//! its files are `f0`, `f1`, …. A tree that is already complete is reused as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::sys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeSpec {
    pub files: u64,
    pub per_dir: u64,
    pub fanout: u64,
    /// Bytes written into every file (0: empty files, one mknodat each).
    pub file_bytes: usize,
}

impl TreeSpec {
    pub fn leaves(&self) -> u64 {
        self.files.div_ceil(self.per_dir)
    }

    /// Directory levels below the top one.
    pub fn levels(&self) -> u32 {
        let mut levels = 1;
        if self.fanout >= 2 {
            while self.fanout.saturating_pow(levels) < self.leaves() {
                levels += 1;
            }
        }
        levels
    }

    /// Relative path of leaf directory `i`.
    pub fn leaf(&self, i: u64) -> String {
        if self.fanout < 2 {
            return format!("d{i}");
        }
        let levels = self.levels();
        (0..levels)
            .rev()
            .map(|l| format!("d{}", (i / self.fanout.pow(l)) % self.fanout))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Files in leaf directory `i`.
    pub fn files_in(&self, i: u64) -> u64 {
        self.per_dir.min(self.files - i * self.per_dir)
    }

    /// Every directory of the tree ("" is the top) with the number of entries it must hold.
    pub fn expected(&self) -> BTreeMap<String, u64> {
        let parent = |p: &str| p.rfind('/').map_or(String::new(), |at| p[..at].to_string());
        let mut paths = BTreeSet::new();
        for i in 0..self.leaves() {
            let mut path = self.leaf(i);
            while !path.is_empty() {
                let up = parent(&path);
                // A directory seen before brought its ancestors along.
                if !paths.insert(path) {
                    break;
                }
                path = up;
            }
        }
        let mut dirs: BTreeMap<String, u64> = BTreeMap::from([(String::new(), 0)]);
        for p in &paths {
            dirs.insert(p.clone(), 0);
        }
        for p in &paths {
            *dirs.get_mut(&parent(p)).expect("ancestors are in the set") += 1;
        }
        for i in 0..self.leaves() {
            *dirs.get_mut(&self.leaf(i)).expect("leaves are in the set") += self.files_in(i);
        }
        dirs
    }
}

/// What [`make_tree`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeReport {
    pub created: bool,
    pub files: u64,
    pub dirs: u64,
    pub seconds: f64,
}

impl TreeReport {
    pub fn json(&self) -> String {
        format!(
            "{{\"created\":{},\"files\":{},\"dirs\":{},\"seconds\":{:.3}}}",
            self.created, self.files, self.dirs, self.seconds
        )
    }
}

enum Check {
    Complete,
    /// Entries are missing (a tree never built, or one whose build was interrupted).
    Incomplete,
}

fn count_entries(dir: &Path, buf: &mut [u8]) -> io::Result<u64> {
    let fd = sys::open_path(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut n = 0;
    sys::read_dir(fd.as_raw_fd(), buf, |e| {
        n += u64::from(!sys::is_dot(&e.name))
    })?;
    Ok(n)
}

fn check(top: &Path, spec: &TreeSpec) -> Result<Check> {
    let mut buf = vec![0u8; 64 << 10];
    let mut incomplete = false;
    for (rel, want) in spec.expected() {
        let dir = top.join(&rel);
        let have = match count_entries(&dir, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::Io("read the tree", e)),
        };
        if have > want {
            return Err(Error::Unsupported(format!(
                "{} holds {have} entries where the tree has {want}: not a tree of this shape (remove it)",
                dir.display()
            )));
        }
        incomplete |= have < want;
    }
    Ok(if incomplete {
        Check::Incomplete
    } else {
        Check::Complete
    })
}

fn fill_leaf(top: &Path, spec: &TreeSpec, i: u64, content: &[u8]) -> io::Result<()> {
    let dir: PathBuf = top.join(spec.leaf(i));
    std::fs::create_dir_all(&dir)?;
    let fd = sys::open_path(&dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    for j in 0..spec.files_in(i) {
        let name = CString::new(format!("f{j}")).expect("no NUL");
        let made = if content.is_empty() {
            sys::mknodat(fd.as_raw_fd(), &name, libc::S_IFREG | 0o644)
        } else {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
            sys::openat(fd.as_raw_fd(), &name, flags, 0o644)
                .and_then(|f| sys::write_all(&f, content))
        };
        match made {
            // Left by an interrupted build: complete it rather than start again.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            r => r?,
        }
    }
    Ok(())
}

/// Creates the tree under `top` unless it is already complete; several threads, one leaf
/// directory at a time each.
pub fn make_tree(top: &Path, spec: &TreeSpec) -> Result<TreeReport> {
    if spec.files == 0 || spec.per_dir == 0 || spec.fanout == 1 {
        return Err(Error::Unsupported(
            "--files and --per-dir must be positive, --fanout 0 or at least 2".into(),
        ));
    }
    let t0 = Instant::now();
    std::fs::create_dir_all(top).map_err(|e| Error::Io("create --dir", e))?;
    let dirs = spec.expected().len() as u64 - 1;
    let mut created = false;
    if let Check::Incomplete = check(top, spec)? {
        created = true;
        let content = vec![b'x'; spec.file_bytes];
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u64;
        let results: Vec<io::Result<()>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let content = &content;
                    sc.spawn(move || {
                        let mut i = t;
                        while i < spec.leaves() {
                            fill_leaf(top, spec, i, content)?;
                            i += threads;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a tree builder panicked"))
                .collect()
        });
        for r in results {
            r.map_err(|e| Error::Io("create the tree", e))?;
        }
        if let Check::Incomplete = check(top, spec)? {
            return Err(Error::Unsupported(
                "the tree is still incomplete after building it".into(),
            ));
        }
    }
    Ok(TreeReport {
        created,
        files: spec.files,
        dirs,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(files: u64, per_dir: u64, fanout: u64) -> TreeSpec {
        TreeSpec {
            files,
            per_dir,
            fanout,
            file_bytes: 0,
        }
    }

    #[test]
    fn layout_of_a_flat_and_a_deep_tree() {
        let flat = spec(1_000_000, 1000, 0);
        assert_eq!((flat.leaves(), flat.levels()), (1000, 1));
        assert_eq!(flat.leaf(999), "d999");
        assert_eq!(flat.expected().len(), 1001);
        assert_eq!(flat.expected()[""], 1000);

        let walk = spec(50_000, 200, 8);
        assert_eq!((walk.leaves(), walk.levels()), (250, 3));
        assert_eq!(walk.leaf(0), "d0/d0/d0");
        assert_eq!(walk.leaf(249), "d3/d7/d1");
        let e = walk.expected();
        // The top, 4 + 32 inner directories and 250 leaves.
        assert_eq!(e.len(), 1 + 4 + 32 + 250);
        assert_eq!(e[""], 4);
        assert_eq!(e["d3"], 8);
        assert_eq!(e["d3/d7"], 2);
        assert_eq!(e["d3/d7/d1"], 200);
        assert_eq!(e.values().sum::<u64>(), 50_000 + 4 + 32 + 250);
    }

    #[test]
    fn a_short_last_leaf() {
        let s = spec(2500, 1000, 0);
        assert_eq!(s.leaves(), 3);
        assert_eq!(s.files_in(2), 500);
    }

    #[test]
    fn builds_reuses_completes_and_refuses_a_foreign_tree() {
        let top = std::env::temp_dir().join(format!("virtiofsd-load-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let s = TreeSpec {
            files: 350,
            per_dir: 100,
            fanout: 2,
            file_bytes: 3,
        };
        let r = make_tree(&top, &s).unwrap();
        assert!(r.created);
        assert_eq!(std::fs::read(top.join("d1/d1/f49")).unwrap(), b"xxx");
        assert!(!make_tree(&top, &s).unwrap().created);
        std::fs::remove_file(top.join("d0/d1/f7")).unwrap();
        assert!(make_tree(&top, &s).unwrap().created);
        std::fs::write(top.join("stray"), b"").unwrap();
        assert!(make_tree(&top, &s).is_err());
        std::fs::remove_dir_all(&top).unwrap();
    }
}
