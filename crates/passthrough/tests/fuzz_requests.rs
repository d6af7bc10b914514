//! Property-based fuzzing of the FUSE dispatcher with a real `PassthroughFs`: random and mutated
//! requests into `Server::handle_message`. Properties: no panic; every reply is well formed
//! (length = bytes written, unique echoed, errno in range); a sibling "outside" directory is
//! never modified and its content never comes back.
//!
//! Deterministic (seeded xorshift). `FUZZ_SECS` (time budget) or `FUZZ_ITERS` (iterations)
//! and `FUZZ_SEED` select the run; the default is a short run for `cargo test`.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtiofsd_fuse::abi::{OutHeader, WireStruct};
use virtiofsd_fuse::testing::{init_request, request, TestReader, TestWriter};
use virtiofsd_fuse::Server;
use virtiofsd_passthrough::{Config, PassthroughFs};

const SECRET: &[u8] = b"outside secret";
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

struct Budget {
    iters: Option<u64>,
    until: Instant,
    seed: u64,
}

fn budget(default_secs: f64) -> Budget {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let iters = env("FUZZ_ITERS").map(|v| v.parse().expect("FUZZ_ITERS must be a number"));
    let secs: f64 = env("FUZZ_SECS").map_or(default_secs, |v| {
        v.parse().expect("FUZZ_SECS must be a number")
    });
    let seed = env("FUZZ_SEED").map_or(0x5eed_f00d, |v| v.parse().expect("FUZZ_SEED number"));
    Budget {
        iters,
        until: Instant::now() + Duration::from_secs_f64(secs),
        seed,
    }
}

impl Budget {
    fn more(&self, done: u64) -> bool {
        match self.iters {
            Some(n) => done < n,
            None => Instant::now() < self.until,
        }
    }
}

struct Dirs {
    base: PathBuf,
    share: PathBuf,
    outside: PathBuf,
}

impl Dirs {
    fn new(tag: &str) -> Dirs {
        let base = std::env::temp_dir().join(format!("vfsd-fuzz-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let share = base.join("share");
        let outside = base.join("outside");
        fs::create_dir_all(share.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), SECRET).unwrap();
        // Explicit mode: PassthroughFs may change the process umask while other tests run.
        fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(share.join("file"), b"inside data").unwrap();
        symlink("../outside", share.join("escape")).unwrap();
        symlink(outside.join("secret"), share.join("abs")).unwrap();
        Dirs {
            base,
            share,
            outside,
        }
    }

    fn assert_outside_untouched(&self, ctx: &str) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["secret"], "{ctx}: outside directory changed");
        assert_eq!(
            fs::read(self.outside.join("secret")).unwrap(),
            SECRET,
            "{ctx}: outside file changed"
        );
        let meta = fs::metadata(self.outside.join("secret")).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o644,
            "{ctx}: file mode"
        );
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let me = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((meta.uid(), meta.gid()), me, "{ctx}: file owner");
        let dir = fs::metadata(&self.outside).unwrap();
        assert_eq!(dir.permissions().mode() & 0o7777, 0o755, "{ctx}: dir mode");
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn names() -> Vec<&'static [u8]> {
    vec![
        b"file",
        b"sub",
        b"escape",
        b"abs",
        b"new",
        b"x",
        b"..",
        b".",
        b"",
        b"a/b",
        b"../outside",
        b"/etc",
        b"secret",
        b"sub/../..",
        b"fifo",
        b"link",
    ]
}

/// A plausible request: the right argument layout for its opcode, random values inside.
fn plausible(rng: &mut Rng, unique: u64, nodes: &[u64], fhs: &[u64]) -> Vec<u8> {
    let node = *rng.pick(nodes);
    let fh = *rng.pick(fhs);
    let mut name = rng.pick(&names()).to_vec();
    if rng.chance(8) {
        name = (0..rng.below(300)).map(|_| rng.below(256) as u8).collect();
    }
    let mut nul = name.clone();
    nul.push(0);
    let u32s = |rng: &mut Rng| -> u32 {
        match rng.below(4) {
            0 => 0,
            1 => rng.below(4096) as u32,
            2 => u32::MAX - rng.below(4) as u32,
            _ => rng.next() as u32,
        }
    };
    let u64s = |rng: &mut Rng| -> u64 {
        match rng.below(4) {
            0 => 0,
            1 => rng.below(1 << 20),
            2 => u64::MAX - rng.below(4),
            _ => rng.next(),
        }
    };
    let le32 = |v: u32| v.to_le_bytes().to_vec();
    let le64 = |v: u64| v.to_le_bytes().to_vec();
    let ops: [u32; 44] = [
        1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 27, 28,
        29, 30, 31, 32, 34, 35, 36, 37, 39, 40, 42, 43, 44, 45, 46, 47, 50, 51, 52,
    ];
    let opcode = *rng.pick(&ops);
    let mut args: Vec<u8>;
    match opcode {
        1 | 10 | 11 | 24 => args = nul,
        6 => {
            args = nul;
            let targets: [&[u8]; 3] = [b"../outside/secret\0", b"/etc/passwd\0", b"x\0"];
            let target: &&[u8] = rng.pick(&targets);
            args.extend_from_slice(target);
        }
        8 => {
            // Regular files and FIFOs only: device nodes need root, which the test creds lack.
            let mode = if rng.chance(2) {
                libc::S_IFREG
            } else {
                libc::S_IFIFO
            } | 0o644;
            args = [le32(mode), le32(0), le32(0o022), le32(0)].concat();
            args.extend(nul);
        }
        9 => {
            args = [le32(0o755), le32(0o022)].concat();
            args.extend(nul);
        }
        12 | 45 => {
            args = le64(*rng.pick(nodes));
            if opcode == 45 {
                args.extend(le32(rng.below(8) as u32));
                args.extend(le32(0));
            }
            args.extend(nul.clone());
            args.extend(rng.pick(&names()).to_vec());
            args.push(0);
        }
        13 => {
            args = le64(*rng.pick(nodes));
            args.extend(nul);
        }
        14 | 27 => args = [le32(u32s(rng) & !(libc::O_CREAT as u32)), le32(0)].concat(),
        35 | 51 => {
            args = [le32(u32s(rng)), le32(0o644), le32(0o022), le32(0)].concat();
            args.extend(nul);
        }
        15 | 16 | 28 | 44 => {
            let size = if rng.chance(2) {
                rng.below(9000) as u32
            } else {
                u32s(rng)
            };
            args = [
                le64(fh),
                le64(u64s(rng)),
                le32(size),
                le32(0),
                le64(0),
                le32(0),
                le32(0),
            ]
            .concat();
            if opcode == 16 {
                let n = (size as usize).min(rng.below(9000) as usize);
                args.extend((0..n).map(|_| b'w'));
            }
        }
        18 | 29 | 25 => args = [le64(fh), le32(0), le32(0), le64(u64s(rng))].concat(),
        20 | 30 => args = [le64(fh), le32(rng.below(2) as u32), le32(0)].concat(),
        21 => {
            let val: Vec<u8> = (0..rng.below(100)).map(|_| b'v').collect();
            args = [
                le32(u32s(rng).min(val.len() as u32 + 2)),
                le32(0),
                le32(0),
                le32(0),
            ]
            .concat();
            let keys: [&[u8]; 3] = [b"user.x\0", b"trusted.x\0", b"security.capability\0"];
            args.extend(rng.pick(&keys).to_vec());
            args.extend(val);
        }
        22 | 23 => {
            args = [le32(u32s(rng)), le32(0)].concat();
            if opcode == 22 {
                args.extend_from_slice(b"user.x\0");
            }
        }
        31 | 32 => {
            // fh, owner, lk{start,end,type,pid}, lk_flags, padding
            args = [
                le64(fh),
                le64(rng.below(4)),
                le64(u64s(rng)),
                le64(u64s(rng)),
                le32(rng.below(3) as u32),
                le32(0),
                le32(rng.below(2) as u32),
                le32(0),
            ]
            .concat();
        }
        34 => args = [le32(rng.below(8) as u32), le32(0)].concat(),
        4 => {
            // fuse_setattr_in: valid, pad, fh, size, lock_owner, atime, mtime, ctime,
            // atimensec, mtimensec, ctimensec, mode, unused4, uid, gid, unused5
            args = [
                le32(u32s(rng) & 0x3ff),
                le32(0),
                le64(fh),
                le64(rng.below(1 << 16)),
                le64(0),
                le64(u64s(rng)),
                le64(u64s(rng)),
                le64(0),
                le32(u32s(rng)),
                le32(u32s(rng)),
                le32(0),
                le32(u32s(rng)),
                le32(0),
                le32(u32s(rng)),
                le32(u32s(rng)),
                le32(0),
            ]
            .concat();
        }
        43 => {
            args = [
                le64(fh),
                le64(u64s(rng) >> 40),
                le64(rng.below(1 << 20)),
                le32(u32s(rng) & 0x7f),
                le32(0),
            ]
            .concat()
        }
        46 => {
            args = [
                le64(fh),
                le64(u64s(rng)),
                le32(rng.below(6) as u32),
                le32(0),
            ]
            .concat()
        }
        47 => {
            args = [
                le64(fh),
                le64(u64s(rng)),
                le64(*rng.pick(nodes)),
                le64(*rng.pick(fhs)),
                le64(u64s(rng)),
                le64(u64s(rng) >> 44),
                le64(0),
            ]
            .concat()
        }
        42 => {
            let n = rng.below(4);
            args = [
                le32(if rng.chance(4) { u32s(rng) } else { n as u32 }),
                le32(0),
            ]
            .concat();
            for _ in 0..n {
                args.extend(le64(*rng.pick(nodes)));
                args.extend(le64(rng.below(3)));
            }
        }
        2 => args = le64(rng.below(3)),
        _ => {
            args = (0..rng.below(64)).map(|_| rng.below(256) as u8).collect();
        }
    }
    request(opcode, unique, node, &[&args])
}

/// Byte-level damage on a request: flips, truncation, extension, lying header fields.
fn mutate(rng: &mut Rng, mut req: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !req.is_empty() => {
                let i = rng.below(req.len() as u64) as usize;
                req[i] ^= 1 << rng.below(8);
            }
            1 => req.truncate(rng.below(req.len() as u64 + 1) as usize),
            2 => req.extend((0..rng.below(128)).map(|_| rng.next() as u8)),
            3 if req.len() >= 4 => {
                let len = *rng.pick(&[0u32, 1, 39, 40, 41, u32::MAX, req.len() as u32 + 1]);
                req[..4].copy_from_slice(&len.to_le_bytes());
            }
            4 if req.len() >= 8 => {
                let op = rng.below(64) as u32;
                req[4..8].copy_from_slice(&op.to_le_bytes());
            }
            5 if req.len() >= 40 => {
                // total_extlen
                let ext = rng.below(8) as u16;
                req[36..38].copy_from_slice(&ext.to_le_bytes());
            }
            _ if req.len() >= 24 => {
                let node = rng.next() % 64;
                req[16..24].copy_from_slice(&node.to_le_bytes());
            }
            _ => {}
        }
    }
    req
}

/// Sends one request; checks the reply's shape and returns (errno, body).
fn send(server: &Server<PassthroughFs>, req: Vec<u8>, room: usize) -> Option<(i32, Vec<u8>)> {
    let unique = (req.len() >= 16).then(|| u64::from_le_bytes(req[8..16].try_into().unwrap()));
    let mut r = TestReader::new(req);
    let (w, out) = TestWriter::new(room);
    let n = match server.handle_message(&mut r, w) {
        Ok(n) => n,
        // Malformed requests that cannot take a reply are transport errors, not panics.
        Err(_) => return None,
    };
    if n == 0 {
        return None;
    }
    assert!(n <= room, "reply of {n} bytes in {room} bytes of room");
    let bytes = out.bytes(n);
    assert!(n >= OUT_HEADER_LEN, "reply of {n} bytes has no header");
    let (h, body) = OutHeader::from_prefix(&bytes).expect("reply header");
    assert_eq!(h.len as usize, n, "reply header length");
    assert_eq!(Some(h.unique), unique, "reply unique");
    assert!(
        (-4095..=0).contains(&h.error),
        "error field {} out of range",
        h.error
    );
    assert!(h.error == 0 || body.is_empty(), "error reply with a body");
    Some((-h.error, body.to_vec()))
}

fn assert_no_secret(data: &[u8]) {
    assert!(
        !data.windows(SECRET.len()).any(|w| w == SECRET),
        "content of the outside file came back in a reply"
    );
}

fn server_on(share: &Path) -> Server<PassthroughFs> {
    let mut cfg = Config::new(share);
    cfg.fd_budget = 512;
    cfg.xattr = true;
    let server = Server::new(PassthroughFs::new(cfg).expect("PassthroughFs on a temp dir"));
    let (e, _) = send(
        &server,
        init_request(1, u64::from(u32::MAX) | (u64::MAX << 32)),
        4096,
    )
    .expect("INIT reply");
    assert_eq!(e, 0, "INIT failed");
    server
}

/// Returns (requests sent, successful replies).
fn fuzz(tag: &str, default_secs: f64, mutated: bool) -> (u64, u64) {
    let b = budget(default_secs);
    let dirs = Dirs::new(tag);
    let mut server = server_on(&dirs.share);
    let mut rng = Rng(b.seed ^ u64::from(mutated) | 1);
    let mut nodes = vec![0u64, 1, 2, 3, u64::MAX];
    let mut fhs = vec![0u64, 1, u64::MAX];
    let mut done = 0u64;
    let mut ok = 0u64;
    while b.more(done) {
        done += 1;
        let mut req = plausible(&mut rng, done + 1, &nodes, &fhs);
        if mutated {
            req = mutate(&mut rng, req);
        }
        let opcode = (req.len() >= 8).then(|| u32::from_le_bytes(req[4..8].try_into().unwrap()));
        // SETLKW may wait for a lock another owner holds, which a single-threaded harness
        // cannot release: it is exercised by the lock tests, not here.
        if opcode == Some(33) {
            continue;
        }
        let room = *rng.pick(&[16usize, 17, 100, 4096, 70000]);
        if let Some((err, body)) = send(&server, req, room) {
            assert_no_secret(&body);
            if err == 0 {
                ok += 1;
                // Learn node ids and handles from entry and open replies so later requests
                // reach real inodes.
                match opcode {
                    Some(1 | 6 | 8 | 9 | 13) if body.len() >= 8 => {
                        nodes.push(u64::from_le_bytes(body[..8].try_into().unwrap()));
                    }
                    Some(14 | 27) if body.len() >= 8 => {
                        fhs.push(u64::from_le_bytes(body[..8].try_into().unwrap()));
                    }
                    Some(35) if body.len() >= 128 + 16 => {
                        nodes.push(u64::from_le_bytes(body[..8].try_into().unwrap()));
                        fhs.push(u64::from_le_bytes(body[128..136].try_into().unwrap()));
                    }
                    Some(38) => server = server_on(&dirs.share),
                    _ => {}
                }
                nodes.truncate(256);
                fhs.truncate(256);
            }
        }
        if done & 0xff == 0 {
            dirs.assert_outside_untouched(&format!("iteration {done} (seed {})", b.seed));
        }
    }
    dirs.assert_outside_untouched("end");
    eprintln!("{tag}: {done} requests, {ok} successful");
    (done, ok)
}

#[test]
fn fuzz_plausible_requests() {
    let (done, ok) = fuzz("plausible", 2.0, false);
    assert!(
        done > 100 && ok > 10,
        "the run exercised too little: {done} sent, {ok} ok"
    );
}

#[test]
fn fuzz_mutated_requests() {
    let (done, ok) = fuzz("mutated", 2.0, true);
    assert!(
        done > 100 && ok > 10,
        "the run exercised too little: {done} sent, {ok} ok"
    );
}

#[test]
fn rng_is_deterministic() {
    let (mut a, mut b) = (Rng(7), Rng(7));
    let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
    let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs[0], xs[1]);
}

#[test]
fn header_constants_match_the_abi() {
    assert_eq!(request(3, 1, 1, &[]).len(), IN_HEADER_LEN);
    assert_eq!(OutHeader::default().as_bytes().len(), OUT_HEADER_LEN);
}

/// Regression: a guest root may MKNOD a device node in the share (the daemon has CAP_MKNOD
/// when run as root), but OPEN of it must be refused, or the guest gets the host device (here
/// the host's /dev/null, 1:3; it could as well be a disk). Found by this harness's author while
/// writing the device-node confinement case; upstream answers EBADF too.
#[test]
fn device_node_made_by_guest_root_is_never_opened() {
    let dirs = Dirs::new("devnode");
    let server = server_on(&dirs.share);
    let le32 = |v: u32| v.to_le_bytes().to_vec();
    for (mode, rdev) in [(libc::S_IFCHR, libc::makedev(1, 3)), (libc::S_IFIFO, 0)] {
        let mut args = [le32(mode | 0o666), le32(rdev as u32), le32(0), le32(0)].concat();
        args.extend_from_slice(b"node\0");
        let mut req = request(8, 2, 1, &[&args]);
        // uid 0, gid 0: the guest's root.
        req[24..32].fill(0);
        let (e, body) = send(&server, req, 4096).expect("MKNOD reply");
        if e != 0 {
            // Not running as root: the host refused the node, which is just as safe.
            assert!(e == libc::EPERM || e == libc::EACCES, "MKNOD errno {e}");
            continue;
        }
        let node = u64::from_le_bytes(body[..8].try_into().unwrap());
        for flags in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR] {
            let open = request(14, 3, node, &[&[le32(flags as u32), le32(0)].concat()]);
            let (e, _) = send(&server, open, 4096).expect("OPEN reply");
            assert_eq!(
                e,
                libc::EBADF,
                "OPEN of a special file (mode {mode:o}) flags {flags}"
            );
        }
        let _ = fs::remove_file(dirs.share.join("node"));
        let forget = request(2, 4, node, &[&1u64.to_le_bytes()]);
        let _ = send(&server, forget, 4096);
    }
}
