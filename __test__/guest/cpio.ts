// Writes "newc" cpio archives. The per-run guest files travel as one of these appended to the base
// initramfs: the kernel unpacks concatenated archives in order, so no root privileges or cpio tool
// are needed at test time.

export interface CpioEntry {
  /** Path inside the archive, without a leading slash, e.g. "test/run.sh". */
  name: string;
  /** Absent for a directory. */
  data?: Buffer | string;
  /** Permission bits; defaults to 0o755 (scripts must be executable). */
  mode?: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function header(fields: number[]): string {
  return '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
}

function record(ino: number, name: string, mode: number, data: Buffer): Buffer {
  const nameBytes = Buffer.from(name + '\0', 'utf8');
  // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  const head = Buffer.from(
    header([ino, mode, 0, 0, mode & S_IFDIR ? 2 : 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0]),
    'ascii',
  );
  const headAndName = head.length + nameBytes.length;
  return Buffer.concat([head, nameBytes, pad4(headAndName), data, pad4(data.length)]);
}

export function cpioArchive(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((entry, index) => {
    if (entry.name.startsWith('/') || entry.name.length === 0) {
      throw new Error(`cpio entry name must be relative and non-empty: ${JSON.stringify(entry.name)}`);
    }
    const perm = (entry.mode ?? 0o755) & 0o7777;
    if (entry.data === undefined) {
      parts.push(record(index + 1, entry.name, S_IFDIR | perm, Buffer.alloc(0)));
    } else {
      const data = typeof entry.data === 'string' ? Buffer.from(entry.data, 'utf8') : entry.data;
      parts.push(record(index + 1, entry.name, S_IFREG | perm, data));
    }
  });
  parts.push(record(0, 'TRAILER!!!', 0, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
