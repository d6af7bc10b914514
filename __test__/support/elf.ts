// Reads what the dynamic loader checks in a 64-bit little-endian ELF file: its machine, the
// interpreter and libraries it needs, and the symbol versions it requires from each library
// (the GNU version-needs section). Read here rather than with readelf so the test has no
// binutils dependency and asserts on the structure, not on a tool's text output.
import fs from 'node:fs';

export interface VersionNeed {
  /** The library the versions come from, e.g. `libc.so.6`. */
  file: string;
  /** Version names, e.g. `GLIBC_2.17`. */
  versions: { name: string; weak: boolean }[];
}

export interface ElfInfo {
  /** e_type: 2 executable, 3 shared object or position-independent executable. */
  type: number;
  /** e_machine: 62 x86-64, 183 AArch64. */
  machine: number;
  /** The PT_INTERP path; null for a static executable. */
  interpreter: string | null;
  /** DT_NEEDED entries of the dynamic section. */
  needed: string[];
  versionNeeds: VersionNeed[];
}

export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;
const PT_INTERP = 3;
const PT_DYNAMIC = 2;
const SHT_DYNAMIC = 6;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NEEDED = 1;
const VER_FLG_WEAK = 2;

function cstring(buf: Buffer, offset: number): string {
  const end = buf.indexOf(0, offset);
  if (end < 0) throw new Error(`unterminated string at ${offset}`);
  return buf.toString('latin1', offset, end);
}

interface Section { type: number; offset: number; size: number; link: number }

export function readElf(file: string): ElfInfo {
  const buf = fs.readFileSync(file);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file}: not an ELF file`);
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error(`${file}: not a 64-bit little-endian ELF file`);
  const type = buf.readUInt16LE(16);
  const machine = buf.readUInt16LE(18);
  const phoff = Number(buf.readBigUInt64LE(32));
  const shoff = Number(buf.readBigUInt64LE(40));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  const shentsize = buf.readUInt16LE(58);
  const shnum = buf.readUInt16LE(60);

  let interpreter: string | null = null;
  let hasDynamicSegment = false;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const ptype = buf.readUInt32LE(at);
    const offset = Number(buf.readBigUInt64LE(at + 8));
    const size = Number(buf.readBigUInt64LE(at + 32));
    if (ptype === PT_INTERP) interpreter = buf.toString('latin1', offset, offset + size).replace(/\0+$/, '');
    if (ptype === PT_DYNAMIC) hasDynamicSegment = true;
  }

  const sections: Section[] = [];
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * shentsize;
    sections.push({
      type: buf.readUInt32LE(at + 4),
      offset: Number(buf.readBigUInt64LE(at + 24)),
      size: Number(buf.readBigUInt64LE(at + 32)),
      link: buf.readUInt32LE(at + 40),
    });
  }

  const needed: string[] = [];
  const dynamic = sections.find((s) => s.type === SHT_DYNAMIC);
  if (hasDynamicSegment && dynamic === undefined) throw new Error(`${file}: a dynamic segment without a dynamic section`);
  if (dynamic !== undefined) {
    const strtab = sections[dynamic.link];
    for (let at = dynamic.offset; at + 16 <= dynamic.offset + dynamic.size; at += 16) {
      const tag = buf.readBigInt64LE(at);
      if (tag === 0n) break;
      if (tag === BigInt(DT_NEEDED)) needed.push(cstring(buf, strtab.offset + Number(buf.readBigUInt64LE(at + 8))));
    }
  }

  const versionNeeds: VersionNeed[] = [];
  const verneed = sections.find((s) => s.type === SHT_GNU_VERNEED);
  if (verneed !== undefined) {
    const strtab = sections[verneed.link];
    // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32.
    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32.
    let at = verneed.offset;
    for (;;) {
      const count = buf.readUInt16LE(at + 2);
      const need: VersionNeed = { file: cstring(buf, strtab.offset + buf.readUInt32LE(at + 4)), versions: [] };
      let aux = at + buf.readUInt32LE(at + 8);
      for (let i = 0; i < count; i++) {
        need.versions.push({
          name: cstring(buf, strtab.offset + buf.readUInt32LE(aux + 8)),
          weak: (buf.readUInt16LE(aux + 4) & VER_FLG_WEAK) !== 0,
        });
        const next = buf.readUInt32LE(aux + 12);
        if (next === 0) break;
        aux += next;
      }
      versionNeeds.push(need);
      const next = buf.readUInt32LE(at + 12);
      if (next === 0) break;
      at += next;
    }
  }
  return { type, machine, interpreter, needed, versionNeeds };
}

/** Compares dotted versions numerically: `2.9` < `2.28`. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The highest `GLIBC_x.y` the file requires from any library, or null when it requires none. */
export function maxGlibcVersion(info: ElfInfo): string | null {
  let max: string | null = null;
  for (const need of info.versionNeeds) {
    for (const { name } of need.versions) {
      const match = /^GLIBC_(\d+(?:\.\d+)+)$/.exec(name);
      if (match && (max === null || compareVersions(match[1], max) > 0)) max = match[1];
    }
  }
  return max;
}
