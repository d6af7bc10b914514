//! A classic BPF program for `seccomp(SECCOMP_SET_MODE_FILTER)`.
//!
//! Layout: check the architecture (a call made through another ABI, such as 32-bit `int 0x80`
//! on x86-64, has different numbers and meets the default action), then compare the syscall
//! number against each allowed entry in turn. Every comparison jumps at most a few instructions,
//! so the 8-bit jump offsets of classic BPF never overflow however long the list grows.

use crate::allowlist::{Allowed, Args};
use crate::Error;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO`; the low 16 bits are the errno the call returns.
pub const RET_ERRNO: u32 = 0x0005_0000;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// Longest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(target_arch = "riscv64")]
pub const AUDIT_ARCH: u32 = 0xc000_00f3;
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!("virtiofsd-seccomp supports x86_64, aarch64 and riscv64");

/// Offset of the low 32 bits of argument `index`: the kernel reads the arguments this list
/// filters (`prctl`'s option, `ioctl`'s request) as 32-bit integers, so the high half is noise.
fn arg_low_offset(index: u8) -> u32 {
    let base = OFFSET_ARGS + 8 * u32::from(index);
    if cfg!(target_endian = "little") {
        base
    } else {
        base + 4
    }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Builds the program: `allowed` calls return `SECCOMP_RET_ALLOW`, everything else `default`.
pub fn compile(allowed: &[Allowed], default: u32) -> Result<Vec<libc::sock_filter>, Error> {
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jeq(AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, default),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
    ];
    // Unconditional entries first: they are the hot path (read, write, epoll, futex...). Then
    // calls that always fail with an errno, then calls allowed with some arguments only.
    for entry in allowed.iter().filter(|a| matches!(a.args, Args::Any)) {
        prog.push(jeq(nr_u32(entry)?, 0, 1));
        prog.push(stmt(BPF_RET_K, RET_ALLOW));
    }
    for entry in allowed {
        if let Args::Fail { errno } = entry.args {
            prog.push(jeq(nr_u32(entry)?, 0, 1));
            prog.push(stmt(BPF_RET_K, RET_ERRNO | u32::from(errno)));
        }
    }
    for entry in allowed {
        let (index, values) = match entry.args {
            Args::Any | Args::Fail { .. } => continue,
            Args::In { index, values } => (index, values),
        };
        // nr matched: load the argument, allow listed values, otherwise the default action.
        // The block ends in a return, so the accumulator need not be reloaded with the number.
        let skip = u8::try_from(2 * values.len() + 2).map_err(|_| Error::ProgramTooLong(0))?;
        prog.push(jeq(nr_u32(entry)?, 0, skip));
        prog.push(stmt(BPF_LD_W_ABS, arg_low_offset(index)));
        for &value in values {
            prog.push(jeq(value, 0, 1));
            prog.push(stmt(BPF_RET_K, RET_ALLOW));
        }
        prog.push(stmt(BPF_RET_K, default));
    }
    prog.push(stmt(BPF_RET_K, default));
    if prog.len() > MAX_INSNS {
        return Err(Error::ProgramTooLong(prog.len()));
    }
    Ok(prog)
}

fn nr_u32(entry: &Allowed) -> Result<u32, Error> {
    u32::try_from(entry.nr).map_err(|_| Error::BadSyscallNumber(entry.name))
}

/// Runs `prog` on one `seccomp_data` the way the kernel would, so the filter's decisions can be
/// unit tested without installing it. Supports exactly the instructions [`compile`] emits.
#[cfg(test)]
pub fn evaluate(prog: &[libc::sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        let off = OFFSET_ARGS as usize + 8 * i;
        data[off..off + 8].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let ins = prog[pc];
        match ins.code {
            BPF_LD_W_ABS => {
                let off = ins.k as usize;
                acc = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
                pc += 1;
            }
            BPF_JEQ_K => {
                let jump = if acc == ins.k { ins.jt } else { ins.jf };
                pc += 1 + usize::from(jump);
            }
            BPF_RET_K => return ins.k,
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
    }
}
