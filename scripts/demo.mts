// `npm run demo`: boots a throwaway guest against a local folder (default: a new temporary one)
// and shows a round trip through this daemon: a file written on the host is read in the guest, a
// file written in the guest is read on the host.
//
//   npm run demo [-- /path/to/folder]
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { provision, runGuest } from '../__test__/guest/harness.ts';

const folder = process.argv[2] ? path.resolve(process.argv[2]) : await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-demo-'));
await fs.mkdir(folder, { recursive: true });
const stamp = new Date().toISOString();
await fs.writeFile(path.join(folder, 'from-host.txt'), `written by the host at ${stamp}\n`);

console.log(`shared folder: ${folder}`);
console.log('provisioning QEMU and the guest kernel (first run only)...');
await provision();
console.log('booting a guest (QEMU, TCG) against this daemon...');
const run = await runGuest({
  daemon: { kind: 'ours' },
  sharedDir: folder,
  script: [
    'echo "guest: uname -r = $(uname -r)"',
    'echo "guest: mount = $(grep virtiofs /proc/mounts)"',
    'echo "guest: from-host.txt says: $(cat from-host.txt)"',
    'echo "written by the guest, kernel $(uname -r)" > from-guest.txt',
    'echo "guest: ls:"; ls -l',
  ].join('\n'),
});
console.log(run.output.trimEnd());
console.log(`guest exit status ${run.status}, daemon exit ${run.daemonExit.code}, ${run.durationMs} ms`);
const back = await fs.readFile(path.join(folder, 'from-guest.txt'), 'utf8');
console.log(`host: from-guest.txt says: ${back.trimEnd()}`);
process.exit(run.status === 0 && run.daemonExit.code === 0 ? 0 : 1);
