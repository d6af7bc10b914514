//! The native row: each workload's system calls made directly on the host directory by this
//! process, no daemon and no virtqueue in between. What a file server over that directory would
//! have to do at the least, so the daemons' figures read as fractions of it.
//!
//! | workload | one operation |
//! | --- | --- |
//! | lookup | `fstatat(meta, "f<i mod 1000>", AT_SYMLINK_NOFOLLOW)` |
//! | getattr | `fstatat(fd, "", AT_EMPTY_PATH)` of an `O_PATH` descriptor of `meta/f<i mod 1000>` opened before the run |
//! | create | `openat(scratch, name, O_CREAT\|O_EXCL\|O_RDWR)`, `close`, `unlinkat` |
//! | readdirplus | `openat(dir10k)`, `getdents64` in 32 KiB batches, `fstatat` of every entry, `close` |
//! | randread, randwrite | a 4 KiB `pread`/`pwrite` at a random offset of `data.bin`; depth D = D threads |
//! | seqread, seqwrite | a 1 MiB `pread`/`pwrite`, front to back |
//! | walk | `fstatat` of `walk`, then per directory `openat`, `getdents64`, `close`, and an `fstatat` of every entry |

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::load::{Params, Rng, Stats, Workload, META_FILES};
use crate::sys;

/// One operation's result: data bytes moved and files stat'ed.
#[derive(Default, Clone, Copy)]
struct Done {
    bytes: u64,
    files: u64,
}

type Op = Box<dyn FnMut() -> io::Result<Done> + Send>;

/// A thread's latencies, its sums and when its last measured operation completed.
type ThreadResult = io::Result<(Vec<f64>, Done, Option<Instant>)>;

/// Runs workload `p.workload` on the fixtures under `dir`, `p.depth` threads for the workloads
/// that take a depth (one otherwise), and reports in the shape of the daemon runs.
pub fn run(dir: &Path, p: &Params) -> Result<Stats> {
    let threads = if p.workload.pipelined() {
        p.depth.max(1)
    } else if p.depth > 1 {
        return Err(Error::Unsupported(format!(
            "--depth {} with {}: this workload runs one operation at a time",
            p.depth,
            p.workload.name()
        )));
    } else {
        1
    };
    let io = |what: &'static str| move |e| Error::Io(what, e);
    let root = Arc::new(
        sys::open_path(dir, libc::O_RDONLY | libc::O_DIRECTORY).map_err(io("open --dir"))?,
    );
    let names: Arc<Vec<CString>> = Arc::new(
        (0..META_FILES)
            .map(|i| CString::new(format!("f{i}")).expect("no NUL"))
            .collect(),
    );
    let mut ops: Vec<Op> = Vec::new();
    match p.workload {
        Workload::Lookup | Workload::Getattr => {
            let meta = Arc::new(
                sys::openat(
                    root.as_raw_fd(),
                    c"meta",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(io("open meta"))?,
            );
            let known: Arc<Vec<OwnedFd>> = if p.workload == Workload::Getattr {
                let fds = names
                    .iter()
                    .map(|n| sys::openat(meta.as_raw_fd(), n, libc::O_PATH, 0))
                    .collect::<io::Result<Vec<_>>>()
                    .map_err(io("open meta/f*"))?;
                Arc::new(fds)
            } else {
                Arc::new(Vec::new())
            };
            for t in 0..threads {
                let (meta, names, known) = (meta.clone(), names.clone(), known.clone());
                let mut i = t * 7;
                ops.push(Box::new(move || {
                    let k = i % names.len();
                    i += 1;
                    if known.is_empty() {
                        sys::fstatat(meta.as_raw_fd(), &names[k], libc::AT_SYMLINK_NOFOLLOW)?;
                    } else {
                        sys::fstatat(known[k].as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
                    }
                    Ok(Done::default())
                }));
            }
        }
        Workload::Create => {
            let scratch = sys::openat(
                root.as_raw_fd(),
                c"scratch",
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .map_err(io("open scratch"))?;
            let mut i = 0u64;
            ops.push(Box::new(move || {
                // The pid keeps two tools on one fixture (parallel tests) apart.
                let name = CString::new(format!("c{}-{i}", std::process::id())).expect("no NUL");
                i += 1;
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR;
                drop(sys::openat(scratch.as_raw_fd(), &name, flags, 0o644)?);
                sys::unlinkat(scratch.as_raw_fd(), &name)?;
                Ok(Done::default())
            }));
        }
        Workload::Readdirplus => {
            let root = root.clone();
            let mut buf = vec![0u8; 32 << 10];
            ops.push(Box::new(move || {
                let d = sys::openat(
                    root.as_raw_fd(),
                    c"dir10k",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?;
                let mut names = Vec::new();
                sys::read_dir(d.as_raw_fd(), &mut buf, |e| names.push(e.name))?;
                for n in names.iter().filter(|n| !sys::is_dot(n)) {
                    sys::fstatat(d.as_raw_fd(), n, libc::AT_SYMLINK_NOFOLLOW)?;
                }
                if names.len() <= 2 {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "dir10k is empty"));
                }
                Ok(Done::default())
            }));
        }
        Workload::Randread | Workload::Randwrite | Workload::Seqread | Workload::Seqwrite => {
            let write = matches!(p.workload, Workload::Randwrite | Workload::Seqwrite);
            let random = matches!(p.workload, Workload::Randread | Workload::Randwrite);
            let size: usize = if random { 4096 } else { 1 << 20 };
            let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
            let file = Arc::new(
                sys::openat(root.as_raw_fd(), c"data.bin", flags, 0)
                    .map_err(io("open data.bin"))?,
            );
            let len = sys::fstatat(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
                .map_err(io("stat data.bin"))?
                .st_size as u64;
            let blocks = len / size as u64;
            if blocks == 0 {
                return Err(Error::Unsupported(format!(
                    "data.bin is {len} bytes, need at least {size}"
                )));
            }
            for t in 0..threads {
                let file = file.clone();
                let mut rng = Rng::new(0x5eed_1234 + t as u64);
                let mut seq = 0u64;
                let mut buf = vec![0xa5u8; size];
                ops.push(Box::new(move || {
                    let block = if random {
                        rng.next_u64() % blocks
                    } else {
                        seq += 1;
                        (seq - 1) % blocks
                    };
                    let at = block * size as u64;
                    let n = if write {
                        sys::pwrite(file.as_raw_fd(), &buf, at)?
                    } else {
                        sys::pread(file.as_raw_fd(), &mut buf, at)?
                    };
                    if n != size {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short I/O"));
                    }
                    Ok(Done {
                        bytes: n as u64,
                        files: 0,
                    })
                }));
            }
        }
        Workload::Walk => {
            let root = root.clone();
            let mut buf = vec![0u8; 32 << 10];
            ops.push(Box::new(move || walk(root.as_raw_fd(), &mut buf)));
        }
    }
    threaded(p, ops)
}

/// The native `walk`: the same directories read and the same entries stat'ed as by the load
/// tool's walk through a daemon, one system call per LOOKUP+GETATTR.
fn walk(root: RawFd, buf: &mut [u8]) -> io::Result<Done> {
    sys::fstatat(root, c"walk", libc::AT_SYMLINK_NOFOLLOW)?;
    let mut stack = vec![CString::new("walk").expect("no NUL")];
    let mut files = 0;
    while let Some(path) = stack.pop() {
        let d = sys::openat(root, &path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut names = Vec::new();
        sys::read_dir(d.as_raw_fd(), buf, |e| names.push(e.name))?;
        drop(d);
        let parent = sys::openat(root, &path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        for n in names.into_iter().filter(|n| !sys::is_dot(n)) {
            let st = sys::fstatat(parent.as_raw_fd(), &n, libc::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let mut child = path.as_bytes().to_vec();
                child.push(b'/');
                child.extend_from_slice(n.as_bytes());
                stack.push(CString::new(child).expect("no NUL"));
            } else {
                files += 1;
            }
        }
    }
    if files == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "walk/ holds no files",
        ));
    }
    Ok(Done { bytes: 0, files })
}

/// Runs each op on a thread of its own until the run is over, times every operation, and counts
/// those that complete after the warm-up, within the measured window.
fn threaded(p: &Params, ops: Vec<Op>) -> Result<Stats> {
    let threads = ops.len() as u64;
    let start = Instant::now();
    let warm_until = start + p.warmup;
    let end = warm_until + Duration::from_secs_f64(p.seconds);
    let results: Vec<ThreadResult> = std::thread::scope(|sc| {
        let handles: Vec<_> = ops
            .into_iter()
            .enumerate()
            .map(|(t, mut op)| {
                // The --ops budget split over the threads, the first ones taking the remainder.
                let quota = p
                    .max_ops
                    .map(|m| m / threads + u64::from((t as u64) < m % threads));
                sc.spawn(move || {
                    let mut lat = Vec::new();
                    let mut sum = Done::default();
                    let mut last = None;
                    while quota.map_or(true, |q| (lat.len() as u64) < q) {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        let d = op()?;
                        let t1 = Instant::now();
                        if t1 >= warm_until {
                            lat.push((t1 - t0).as_secs_f64() * 1e6);
                            sum.bytes += d.bytes;
                            sum.files += d.files;
                            last = Some(t1);
                        }
                    }
                    Ok((lat, sum, last))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a native worker panicked"))
            .collect()
    });
    let mut lat = Vec::new();
    let mut total = Done::default();
    let mut last = warm_until;
    for r in results {
        let (l, d, t) = r.map_err(|e| Error::Io("native workload", e))?;
        lat.extend(l);
        total.bytes += d.bytes;
        total.files += d.files;
        last = last.max(t.unwrap_or(warm_until));
    }
    // A walk is long against the warm-up, so its time is that of the walks themselves, as the
    // daemon runs count it.
    let window = if p.workload == Workload::Walk {
        Duration::from_secs_f64(lat.iter().sum::<f64>() / 1e6)
    } else {
        last - warm_until
    };
    let mut stats = Stats::from(p.workload, &mut lat, total.bytes, window);
    if p.workload == Workload::Walk {
        stats.files = Some(total.files);
    }
    Ok(stats)
}
