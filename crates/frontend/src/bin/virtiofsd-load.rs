//! `virtiofsd-load`: drives a virtio-fs daemon's vhost-user socket without a VM.
//!
//! virtiofsd-load bench --socket PATH --workload W [--queues N] [--depth D] [--seconds S] [--ops N] [--json]
//! virtiofsd-load probe --socket PATH
//! virtiofsd-load hold --socket PATH [--creates N] [--write-bytes B] [--missing-lookups K]
//!
//! `hold` sends a known request mix (for checking a device's statistics), prints what it sent
//! as one JSON line, and keeps the connection until its stdin closes: the device exits when its
//! frontend goes away, so statistics must be read while the connection lasts.

use std::process::ExitCode;
use std::time::Duration;

use virtiofsd_frontend::fuse::ROOT_ID;
use virtiofsd_frontend::load::{self, Params, Workload};
use virtiofsd_frontend::{Options, Session};

const USAGE: &str = "usage:
  virtiofsd-load bench --socket PATH --workload W [--queues N] [--depth D] [--seconds S] [--ops N] [--json]
      W: lookup | create | readdirplus | randread | randwrite | seqread | seqwrite
  virtiofsd-load probe --socket PATH
  virtiofsd-load hold --socket PATH [--creates N] [--write-bytes B] [--missing-lookups K]";

struct Args {
    command: String,
    socket: Option<String>,
    workload: Option<Workload>,
    queues: usize,
    depth: usize,
    seconds: f64,
    ops: Option<u64>,
    json: bool,
    creates: u64,
    write_bytes: u64,
    missing_lookups: u64,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    let command = it.next().ok_or("missing command")?.clone();
    if !["bench", "probe", "hold"].contains(&command.as_str()) {
        return Err(format!("unknown command '{command}'"));
    }
    let mut a = Args {
        command,
        socket: None,
        workload: None,
        queues: 1,
        depth: 1,
        seconds: 5.0,
        ops: None,
        json: false,
        creates: 1,
        write_bytes: 0,
        missing_lookups: 0,
    };
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if key == "--json" {
            a.json = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{key} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}: '{v}' is not a non-negative integer"))
        };
        match key {
            "--socket" => a.socket = Some(value()?),
            "--workload" => {
                let v = value()?;
                a.workload = Some(Workload::parse(&v).ok_or(format!("unknown workload '{v}'"))?);
            }
            "--queues" => a.queues = num(value()?)? as usize,
            "--depth" => a.depth = num(value()?)? as usize,
            "--ops" => a.ops = Some(num(value()?)?),
            "--creates" => a.creates = num(value()?)?,
            "--write-bytes" => a.write_bytes = num(value()?)?,
            "--missing-lookups" => a.missing_lookups = num(value()?)?,
            "--seconds" => {
                let v = value()?;
                a.seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or(format!("--seconds: '{v}' is not a positive number"))?;
            }
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    if a.socket.is_none() {
        return Err("--socket is required".into());
    }
    if a.command == "bench" && a.workload.is_none() {
        return Err("--workload is required".into());
    }
    if a.command == "hold" && a.creates == 0 && a.write_bytes > 0 {
        return Err("--write-bytes needs a file: --creates must be at least 1".into());
    }
    if a.queues == 0 || a.depth == 0 || a.depth > 64 {
        return Err("--queues must be at least 1 and --depth between 1 and 64".into());
    }
    Ok(a)
}

fn probe(s: &mut Session) -> virtiofsd_frontend::Result<()> {
    println!(
        "features {:#x}, protocol features {:#x}, backend queues {}",
        s.features(),
        s.protocol_features(),
        s.backend_queues()
    );
    let init = s.init()?;
    println!(
        "INIT: {}.{} max_write {} max_pages {} flags {:#x}",
        init.major, init.minor, init.max_write, init.max_pages, init.flags
    );
    let root = s.getattr(ROOT_ID)?;
    println!(
        "GETATTR /: mode {:o} ino {} nlink {}",
        root.attr.mode, root.attr.ino, root.attr.nlink
    );
    let st = s.statfs(ROOT_ID)?;
    println!(
        "STATFS: bsize {} blocks {} namelen {}",
        st.bsize, st.blocks, st.namelen
    );
    let dir = s.opendir(ROOT_ID)?;
    let entries = s.list_dir(ROOT_ID, dir.fh, false, 4096)?;
    s.releasedir(ROOT_ID, dir.fh)?;
    let names: Vec<String> = entries
        .iter()
        .take(20)
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    println!("READDIR /: {} entries: {}", entries.len(), names.join(" "));
    Ok(())
}

/// Bytes per WRITE and READ of `hold`.
const HOLD_CHUNK: u64 = 64 * 1024;

/// `hold`: CREATE `creates` files (RELEASE all but the first), WRITE `write_bytes` into the
/// first and READ them back in [`HOLD_CHUNK`] pieces, LOOKUP `missing_lookups` names that do
/// not exist (each ENOENT); then print the request counts and wait for stdin to close.
fn hold(s: &mut Session, a: &Args) -> virtiofsd_frontend::Result<()> {
    s.init()?;
    let tag = std::process::id();
    let mut first = None;
    for i in 0..a.creates {
        let name = format!("stats-{tag}-{i}");
        let (entry, open) = s.create(ROOT_ID, name.as_bytes(), libc::O_RDWR as u32, 0o644, 0)?;
        match first {
            None => first = Some((entry.nodeid, open.fh)),
            Some(_) => s.release(entry.nodeid, open.fh)?,
        }
    }
    let (mut writes, mut reads, mut read_bytes) = (0u64, 0u64, 0u64);
    if let Some((node, fh)) = first {
        let mut offset = 0;
        while offset < a.write_bytes {
            let len = HOLD_CHUNK.min(a.write_bytes - offset);
            let data = vec![0x5a; len as usize];
            let n = s.write(node, fh, offset, &data)?;
            offset += u64::from(n);
            writes += 1;
        }
        let mut offset = 0;
        while offset < a.write_bytes {
            let len = HOLD_CHUNK.min(a.write_bytes - offset) as u32;
            read_bytes += s.read(node, fh, offset, len)?.len() as u64;
            offset += u64::from(len);
            reads += 1;
        }
    }
    let mut enoent = 0u64;
    for i in 0..a.missing_lookups {
        let name = format!("missing-{tag}-{i}");
        match s.lookup(ROOT_ID, name.as_bytes()) {
            Err(e) if e.errno() == Some(libc::ENOENT) => enoent += 1,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    println!(
        "{{\"creates\":{},\"releases\":{},\"writes\":{writes},\"bytesWritten\":{},\"reads\":{reads},\"bytesRead\":{read_bytes},\"lookups\":{},\"enoent\":{enoent}}}",
        a.creates,
        a.creates.saturating_sub(1),
        a.write_bytes,
        a.missing_lookups
    );
    use std::io::{Read, Write};
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("virtiofsd-load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let socket = a.socket.clone().unwrap_or_default();
    let opts = Options {
        request_queues: a.queues,
        queue_size: 256,
        ..Options::default()
    };
    let result =
        Session::connect_retry(&socket, &opts, Duration::from_secs(5)).and_then(|mut s| {
            if a.command == "probe" {
                return probe(&mut s);
            }
            if a.command == "hold" {
                return hold(&mut s, &a);
            }
            s.init()?;
            let workload = a.workload.expect("checked in parse");
            if s.request_queues() < a.queues {
                eprintln!(
                    "virtiofsd-load: the backend offers {} request queue(s); using them",
                    s.request_queues()
                );
            }
            let warmup = Duration::from_secs_f64((a.seconds / 10.0).min(0.5));
            let p = Params {
                workload,
                depth: a.depth,
                seconds: a.seconds,
                max_ops: a.ops,
                warmup,
            };
            let stats = load::run(&mut s, &p)?;
            if a.json {
                println!("{}", stats.json());
            } else {
                println!("{stats}");
            }
            Ok(())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtiofsd-load: {e}");
            ExitCode::FAILURE
        }
    }
}
