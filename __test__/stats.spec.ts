// Device statistics: the control protocol's strict parsing, and `device.stats()` on a real device
// against a known request mix from a VM-less frontend (`virtiofsd-load hold`).
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { DeviceError } from '../ts/errors.ts';
import { adoptDeviceProcess } from '../ts/device.ts';
import { ProtocolError, parseDeviceMessage } from '../ts/protocol.ts';
import { ensureBuilt, requireNative, root } from './support/build.ts';
import { libraryScenario } from './support/scenario.ts';

const cargoTarget = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
const loadTool = path.join(cargoTarget, 'debug', 'virtiofsd-load');

function sample(): Record<string, unknown> {
  return {
    requests: { INIT: 1, LOOKUP: 3 },
    errors: { LOOKUP: 3 },
    errno: { ENOENT: 3 },
    bytesRead: 0,
    bytesWritten: 10,
    unanswered: 0,
    inFlight: 1,
    queues: [
      { requests: 0, inFlight: 0, latencyUsSum: 0, latencyBuckets: [] },
      { requests: 5, inFlight: 1, latencyUsSum: 80, latencyBuckets: [0, 0, 1, 3] },
    ],
    inodes: 1,
    handles: 0,
    fdsHeld: 1,
    fdBudget: 1000,
    hostFds: 20,
    sandbox: 'namespace',
    userNamespace: false,
    seccomp: 'kill',
    capabilities: ['chown', 'setfcap'],
  };
}

const line = (stats: unknown, id: unknown = 7): string => JSON.stringify({ event: 'stats', id, stats });

test('a stats reply is parsed into its typed fields', (t) => {
  const message = parseDeviceMessage(line(sample()));
  t.is(message.event, 'stats');
  if (message.event !== 'stats') return;
  t.is(message.id, 7);
  t.deepEqual({ ...message.stats.requests }, { INIT: 1, LOOKUP: 3 });
  t.deepEqual(message.stats.queues[1], { requests: 5, inFlight: 1, latencyUsSum: 80, latencyBuckets: [0, 0, 1, 3] });
  t.is(message.stats.hostFds, 20);
  t.is(parseDeviceMessage(line({ ...sample(), hostFds: null })).event, 'stats');
});

test('a stats reply that is not exactly the contract is a protocol error', (t) => {
  const bad: Array<[string, unknown, unknown?]> = [
    ['missing field', (({ inodes: _, ...rest }) => rest)(sample())],
    ['unknown field', { ...sample(), extra: 1 }],
    ['negative count', { ...sample(), bytesRead: -1 }],
    ['fractional count', { ...sample(), handles: 1.5 }],
    ['count as string', { ...sample(), inodes: '1' }],
    ['bad map key', { ...sample(), requests: { 'LOOK UP': 1 } }],
    ['too many map entries', { ...sample(), errno: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`E${i}`, 1])) }],
    ['too many queues', { ...sample(), queues: Array.from({ length: 65 }, () => ({ requests: 0, inFlight: 0, latencyUsSum: 0, latencyBuckets: [] })) }],
    ['too many buckets', { ...sample(), queues: [{ requests: 0, inFlight: 0, latencyUsSum: 0, latencyBuckets: new Array(65).fill(0) }] }],
    ['queue with an extra field', { ...sample(), queues: [{ requests: 0, inFlight: 0, latencyUsSum: 0, latencyBuckets: [], x: 1 }] }],
    ['unknown sandbox', { ...sample(), sandbox: 'jail' }],
    ['unknown seccomp action', { ...sample(), seccomp: 'maybe' }],
    ['userNamespace not boolean', { ...sample(), userNamespace: 1 }],
    ['capability not a name', { ...sample(), capabilities: ['cap sys admin'] }],
    ['stats not an object', [1, 2]],
    ['id missing', sample(), null],
    ['id zero', sample(), 0],
    ['id not an integer', sample(), 1.5],
  ];
  for (const [why, stats, id] of bad) {
    const text = id === null ? JSON.stringify({ event: 'stats', stats }) : line(stats, id ?? 7);
    t.throws(() => parseDeviceMessage(text), { instanceOf: ProtocolError }, why);
  }
});

test('a __proto__ key stays a plain counter', (t) => {
  const text = line(sample()).replace('"INIT":1', '"__proto__":1');
  const message = parseDeviceMessage(text);
  if (message.event !== 'stats') return t.fail();
  t.is(Object.getPrototypeOf(message.stats.requests), null);
  t.is(message.stats.requests.__proto__, 1);
});

test('device.stats() counts a known request mix; after the exit it rejects with reason exited', async (t) => {
  requireNative();
  ensureBuilt();
  execFileSync('cargo', ['build', '--quiet', '-p', 'virtiofsd-frontend', '--bin', 'virtiofsd-load'], { cwd: root, stdio: 'inherit' });
  const { result } = await libraryScenario(`
    const { spawn } = require('node:child_process');
    const share = path.join(dir, 'share');
    fs.mkdirSync(share);
    const socketPath = path.join(dir, 'vfs.sock');
    const device = await lib.startDevice({ sharedDir: share, socketPath });
    const before = await device.stats();
    const hold = spawn(${JSON.stringify(loadTool)},
      ['hold', '--socket', socketPath, '--creates', '9', '--write-bytes', '300000', '--missing-lookups', '5'],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    const done = await new Promise((resolve, reject) => {
      let out = '';
      hold.stdout.setEncoding('utf8').on('data', (chunk) => {
        out += chunk;
        if (out.includes('\\n')) resolve(JSON.parse(out));
      });
      hold.on('exit', (code) => reject(new Error('virtiofsd-load hold exited ' + code)));
    });
    // Several at once: each gets its own reply.
    const [after, again] = await Promise.all([device.stats(), device.stats()]);
    hold.stdin.end();
    const status = await device.exited;
    let late = null;
    try { await device.stats(); } catch (e) { late = { name: e.name, reason: e.reason }; }
    return { before, done, after, again, status, late };
  `);
  const { before, done, after, again, status, late } = result;
  t.deepEqual(before.requests, {});
  t.is(before.inodes, 1);
  t.is(before.sandbox, 'namespace');
  t.is(before.seccomp, 'kill');
  t.deepEqual(done, { creates: 9, releases: 8, writes: 5, bytesWritten: 300000, reads: 5, bytesRead: 300000, lookups: 5, enoent: 5 });
  t.deepEqual(after.requests, { INIT: 1, CREATE: 9, RELEASE: 8, WRITE: 5, READ: 5, LOOKUP: 5 });
  t.deepEqual(after.errors, { LOOKUP: 5 });
  t.deepEqual(after.errno, { ENOENT: 5 });
  t.is(after.bytesWritten, 300000);
  t.is(after.bytesRead, 300000);
  t.is(after.unanswered, 0);
  t.is(after.inFlight, 0);
  t.is(after.inodes, 10);
  t.is(after.handles, 1);
  // The default --inode-file-handles=prefer holds the created inodes as file handles, and these
  // first few keep their descriptor too (the pinned slots): one per inode but the root, plus the
  // open handle.
  t.is(after.fdsHeld, after.handles + after.inodes - 1, `fdsHeld ${after.fdsHeld}`);
  t.true(after.hostFds > before.hostFds, `host fds ${before.hostFds} -> ${after.hostFds}`);
  t.is(after.queues.length, 2);
  t.is(after.queues[1].requests, 33);
  t.is(after.queues[1].latencyBuckets.reduce((a: number, b: number) => a + b, 0), 33);
  t.true(after.queues[1].latencyUsSum > 0);
  t.deepEqual(again.requests, after.requests);
  t.deepEqual(status, { code: 0, signal: null });
  t.deepEqual(late, { name: 'DeviceError', reason: 'exited' });
});

test('replies with another id or a bad payload are not taken; a silent device times out', async (t) => {
  // A fake device (control channel on fd 4) that answers stats request N with a reply for N + 1000,
  // then a malformed one for N, and only to the second request with a proper one.
  const reply = JSON.stringify(sample());
  const program = `
    const net = require('node:net');
    const control = new net.Socket({ fd: 4, readable: true, writable: true });
    control.write(JSON.stringify({ event: 'listening', socket: '/nowhere' }) + '\\n');
    let buffered = '';
    control.on('data', (chunk) => {
      buffered += chunk;
      let at;
      while ((at = buffered.indexOf('\\n')) >= 0) {
        const { cmd, id } = JSON.parse(buffered.slice(0, at));
        buffered = buffered.slice(at + 1);
        if (cmd !== 'stats') continue;
        control.write('{"event":"stats","id":' + (id + 1000) + ',"stats":' + ${JSON.stringify(reply)} + '}\\n');
        control.write('{"event":"stats","id":' + id + ',"stats":{"requests":{}}}\\n');
        if (id === 2) control.write('{"event":"stats","id":' + id + ',"stats":' + ${JSON.stringify(reply)} + '}\\n');
      }
    });`;
  const child = spawn(process.execPath, ['-e', program], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  const device = adoptDeviceProcess(child, {} as never);
  const warnings: string[] = [];
  device.on('log', (record) => warnings.push(record.message));
  try {
    await device.ready;
    const error = await t.throwsAsync(device.stats(300), { instanceOf: DeviceError });
    t.is(error?.reason, 'timeout');
    const stats = await device.stats(5_000);
    t.deepEqual({ ...stats.requests }, { INIT: 1, LOOKUP: 3 });
    t.true(warnings.some((m) => /ignored bad control message: stats lacks field/.test(m)), warnings.join('\n'));
    const pending = device.stats(60_000);
    device.kill('SIGKILL');
    const gone = await t.throwsAsync(pending, { instanceOf: DeviceError });
    t.is(gone?.reason, 'exited');
  } finally {
    child.kill('SIGKILL');
  }
});
