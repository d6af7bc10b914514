//! Whole-tree workloads: `walk`, the metadata pass of a `git status` over the `walk/` fixture,
//! and [`lookup_tree`], which leaves every inode of a tree known to the daemon.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Clock, Params, Stats};
use crate::error::{Error, Result};
use crate::fuse::{DirEntry, ROOT_ID};
use crate::session::Session;

const DT_DIR: u32 = libc::DT_DIR as u32;

fn is_dot(e: &DirEntry) -> bool {
    e.name == b"." || e.name == b".."
}

/// File inodes a walk lets the daemon hold before it forgets them (untimed). A guest's inode
/// cache would keep all 50,000, but a daemon that holds a descriptor per inode then needs as
/// many descriptors, more than a hard limit of 20,000 allows; this bound keeps thousands held
/// (as a guest does) and the walk runnable under such a limit.
const HELD_FILES: usize = 8192;

fn add(counts: &mut HashMap<u64, u64>, node: u64) {
    *counts.entry(node).or_default() += 1;
}

fn forget_all(s: &mut Session, counts: &mut HashMap<u64, u64>) -> Result<()> {
    s.batch_forget(&counts.drain().collect::<Vec<_>>())
}

/// One walk: LOOKUP `walk`, then for every directory OPENDIR, READDIRPLUS through it in 4 KiB
/// pages and RELEASEDIR, a LOOKUP of each subdirectory (walked in turn) and a LOOKUP and
/// GETATTR of each file, as `lstat` of every index entry does. Every lookup the daemon counted,
/// READDIRPLUS entries included, is forgotten afterwards, files whenever more than
/// [`HELD_FILES`] are held, directories at the end; the FORGETs are not timed. Returns the files
/// stat'ed and the time of the walk without the FORGETs.
fn walk_once(s: &mut Session) -> Result<(u64, Duration)> {
    let mut t0 = Instant::now();
    let mut took = Duration::ZERO;
    let mut dirs = HashMap::new();
    let mut held = HashMap::new();
    let top = s.lookup(ROOT_ID, b"walk")?.nodeid;
    add(&mut dirs, top);
    let mut stack = vec![top];
    let mut files = 0u64;
    while let Some(dir) = stack.pop() {
        let o = s.opendir(dir)?;
        let entries = s.list_dir(dir, o.fh, true, 4096)?;
        s.releasedir(dir, o.fh)?;
        for e in entries.iter().filter(|e| !is_dot(e)) {
            let subdir = e.typ == DT_DIR;
            let counts = if subdir { &mut dirs } else { &mut held };
            if let Some(eo) = e.entry.filter(|eo| eo.nodeid != 0) {
                add(counts, eo.nodeid);
            }
            let node = s.lookup(dir, &e.name)?.nodeid;
            add(counts, node);
            if subdir {
                stack.push(node);
            } else {
                s.getattr(node)?;
                files += 1;
            }
        }
        if held.len() >= HELD_FILES {
            took += t0.elapsed();
            forget_all(s, &mut held)?;
            t0 = Instant::now();
        }
    }
    took += t0.elapsed();
    forget_all(s, &mut held)?;
    forget_all(s, &mut dirs)?;
    Ok((files, took))
}

/// `walk`: one operation is one whole walk ([`walk_once`]); the measured time is the sum of the
/// walks alone.
pub(super) fn run(s: &mut Session, p: &Params) -> Result<Stats> {
    let mut clock = Clock::new(p);
    let mut lat = Vec::new();
    let mut walking = Duration::ZERO;
    let mut files = 0u64;
    while !clock.done(lat.len() as u64) {
        let (n, took) = walk_once(s)?;
        if n == 0 {
            return Err(Error::BadReply("walk/ holds no files".into()));
        }
        if clock.measuring() {
            lat.push(took.as_secs_f64() * 1e6);
            walking += took;
            files += n;
        }
    }
    let mut stats = Stats::from(p.workload, &mut lat, 0, walking);
    stats.files = Some(files);
    Ok(stats)
}

/// What [`lookup_tree`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeLookups {
    /// Successful LOOKUPs: inodes the daemon now holds (each looked up exactly once).
    pub inodes: u64,
    /// LOOKUPs that failed with an errno (the tree then has more inodes than `inodes`).
    pub failed: u64,
    /// Directories whose OPENDIR or READDIR failed with an errno (their entries are not counted).
    pub unlisted_dirs: u64,
    /// The errno of the first failure.
    pub first_errno: Option<i32>,
    pub seconds: f64,
}

impl TreeLookups {
    pub fn json(&self) -> String {
        let errno = self
            .first_errno
            .map_or("null".to_string(), |e| format!("\"{}\"", errno_name(e)));
        format!(
            "{{\"inodes\":{},\"failed\":{},\"unlistedDirs\":{},\"firstError\":{errno},\"seconds\":{:.3}}}",
            self.inodes, self.failed, self.unlisted_dirs, self.seconds
        )
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EMFILE => "EMFILE".into(),
        libc::ENFILE => "ENFILE".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EACCES => "EACCES".into(),
        _ => format!("errno {e}"),
    }
}

/// READDIR of every directory under the root and a LOOKUP of every entry, depth first, with no
/// FORGET: afterwards the daemon knows every inode of the tree, as a guest's inode cache that
/// has seen the whole tree and is under no memory pressure. A request that fails with an errno
/// is counted and the walk goes on (a daemon out of descriptors fails some and not others).
pub fn lookup_tree(s: &mut Session) -> Result<TreeLookups> {
    let t0 = Instant::now();
    let mut out = TreeLookups::default();
    let mut stack = vec![ROOT_ID];
    while let Some(dir) = stack.pop() {
        let listed = s.opendir(dir).and_then(|o| {
            let entries = s.list_dir(dir, o.fh, false, 4096);
            s.releasedir(dir, o.fh)?;
            entries
        });
        let entries = match listed {
            Ok(entries) => entries,
            Err(Error::Fuse { errno, .. }) => {
                out.unlisted_dirs += 1;
                out.first_errno.get_or_insert(errno);
                continue;
            }
            Err(e) => return Err(e),
        };
        for e in entries.iter().filter(|e| !is_dot(e)) {
            match s.lookup(dir, &e.name) {
                Ok(eo) => {
                    out.inodes += 1;
                    if e.typ == DT_DIR {
                        stack.push(eo.nodeid);
                    }
                }
                Err(Error::Fuse { errno, .. }) => {
                    out.failed += 1;
                    out.first_errno.get_or_insert(errno);
                }
                Err(e) => return Err(e),
            }
        }
    }
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_lookups_json() {
        let t = TreeLookups {
            inodes: 10,
            failed: 2,
            unlisted_dirs: 1,
            first_errno: Some(libc::EMFILE),
            seconds: 1.5,
        };
        assert_eq!(
            t.json(),
            "{\"inodes\":10,\"failed\":2,\"unlistedDirs\":1,\"firstError\":\"EMFILE\",\"seconds\":1.500}"
        );
        assert!(TreeLookups::default()
            .json()
            .contains("\"firstError\":null"));
    }
}
