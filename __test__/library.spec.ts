// The lifecycle an orchestrator relies on, with real device processes: cancellation, readiness,
// typed events on a device and a group, supervision with restarts, and stopping without leftovers.
import test from 'ava';
import { spawn } from 'node:child_process';
import { Device, adoptDeviceProcess } from '../ts/device.ts';
import { ensureBuilt, requireNative } from './support/build.ts';
import { libraryScenario } from './support/scenario.ts';

test.before(() => {
  requireNative();
  ensureBuilt();
});

test('abort before start: AbortError-like DeviceError, no process, no socket', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'early.sock');
    const controller = new AbortController();
    controller.abort(new Error('changed my mind'));
    let spawned = false;
    try {
      await lib.startDevice({ sharedDir: dir, socketPath }, { signal: controller.signal, onSpawn: () => (spawned = true) });
      return { started: true };
    } catch (e) {
      return {
        name: e.name, reason: e.reason, code: e.code, cause: e.cause?.message ?? null,
        isDeviceError: e instanceof lib.DeviceError, isAbortError: e instanceof lib.DeviceAbortError,
        spawned, socket: fs.existsSync(socketPath), processes: processesOf(socketPath),
      };
    }
  `);
  t.deepEqual(result, {
    name: 'AbortError',
    reason: 'aborted',
    code: 'ABORT_ERR',
    cause: 'changed my mind',
    isDeviceError: true,
    isAbortError: true,
    spawned: false,
    socket: false,
    processes: [],
  });
});

test('abort during start: the process that existed is gone when startDevice rejects', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'starting.sock');
    const controller = new AbortController();
    let seen = null;
    let readyOutcome = null;
    try {
      await lib.startDevice({ sharedDir: dir, socketPath }, {
        signal: controller.signal,
        onSpawn: (device) => {
          seen = { pid: device.pid, comm: fs.readFileSync('/proc/' + device.pid + '/comm', 'utf8').trim(), socket: device.socket };
          device.ready.then(() => (readyOutcome = 'resolved'), (e) => (readyOutcome = e.reason));
          controller.abort();
        },
      });
      return { started: true };
    } catch (e) {
      await sleep(0);
      return {
        name: e.name, reason: e.reason, seen, readyOutcome,
        pidAlive: fs.existsSync('/proc/' + seen.pid), processes: processesOf(socketPath),
      };
    }
  `);
  t.is(result.name, 'AbortError', JSON.stringify(result));
  t.is(result.reason, 'aborted');
  t.true(result.seen.pid > 0);
  t.is(result.seen.comm, 'virtiofsd');
  t.is(result.seen.socket, null);
  t.is(result.readyOutcome, 'aborted');
  // Node reaped it: no /proc entry, no zombie, nothing else with its command line.
  t.false(result.pidAlive);
  t.deepEqual(result.processes, []);
});

test('abort at every moment of a start leaves no process, whether or not it got to listen', async (t) => {
  const { result } = await libraryScenario(`
    const outcomes = [];
    for (const delay of [1, 3, 6, 10, 20, 40, 80]) {
      const socketPath = path.join(dir, 'd' + delay + '.sock');
      const controller = new AbortController();
      setTimeout(() => controller.abort(), delay);
      let outcome;
      try {
        const device = await lib.startDevice({ sharedDir: dir, socketPath }, { signal: controller.signal });
        // Listening before the abort: the abort then stops the running device.
        outcome = { started: true, status: await device.exited };
      } catch (e) {
        outcome = { started: false, reason: e.reason };
      }
      outcomes.push({ delay, ...outcome, processes: processesOf(socketPath), socket: isSocket(socketPath) });
    }
    return outcomes;
  `);
  for (const outcome of result) {
    t.deepEqual(outcome.processes, [], JSON.stringify(outcome));
    if (outcome.started) {
      t.deepEqual(outcome.status, { code: 0, signal: null }, JSON.stringify(outcome));
      // A device that stops cleanly removes its socket; one killed mid-start may leave the file
      // (the next device on that path replaces it, as the restart test shows).
      t.false(outcome.socket, JSON.stringify(outcome));
    } else {
      t.is(outcome.reason, 'aborted', JSON.stringify(outcome));
    }
  }
});

test('aborting the signal of a running device stops it cleanly', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'run.sock');
    const controller = new AbortController();
    const device = await lib.startDevice({ sharedDir: dir, socketPath }, { signal: controller.signal });
    const before = { processes: processesOf(socketPath).map((p) => p.comm), socket: isSocket(socketPath) };
    controller.abort();
    const status = await device.exited;
    return { before, status, exitedWithError: device.exitedWithError, processes: processesOf(socketPath), socket: fs.existsSync(socketPath) };
  `);
  t.true(result.before.socket, JSON.stringify(result));
  t.true(result.before.processes.length >= 1);
  t.true(result.before.processes.every((comm: string) => comm === 'virtiofsd'));
  t.deepEqual(result.status, { code: 0, signal: null });
  t.false(result.exitedWithError);
  t.deepEqual(result.processes, []);
  t.false(result.socket);
});

test('ready and typed events: listening, connected, disconnected, exit; ready resolves on listening', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'ev.sock');
    const events = [];
    const device = await lib.startDevice({ sharedDir: dir, socketPath }, {
      onSpawn: (d) => {
        events.push('spawn');
        d.on('listening', (socket) => events.push('listening ' + (socket === socketPath)));
        d.ready.then(() => events.push('ready'));
        d.on('connected', () => events.push('connected'));
        d.on('disconnected', () => events.push('disconnected'));
        d.on('exit', (status) => events.push('exit ' + status.code));
      },
    });
    events.push('resolved');
    await device.ready;
    await vanish(socketPath);
    const status = await device.exited;
    return { events, status, exitedWithError: device.exitedWithError };
  `);
  t.deepEqual(result.events, ['spawn', 'listening true', 'ready', 'resolved', 'connected', 'disconnected', 'exit 0']);
  t.false(result.exitedWithError);
});

test('a device failing to start: error event with reason failed, ready rejects, no process left', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'no', 'such', 'dir.sock');
    const errors = [];
    let ready = null;
    try {
      await lib.startDevice({ sharedDir: dir, socketPath }, {
        onSpawn: (d) => {
          d.on('error', (e) => errors.push({ name: e.name, reason: e.reason, isDeviceError: e instanceof lib.DeviceError }));
          d.ready.catch((e) => (ready = e.reason));
        },
      });
      return { started: true };
    } catch (e) {
      return { reason: e.reason, errors, ready, processes: processesOf(socketPath) };
    }
  `);
  t.is(result.reason, 'failed', JSON.stringify(result));
  t.deepEqual(result.errors, [{ name: 'DeviceError', reason: 'failed', isDeviceError: true }]);
  t.is(result.ready, 'failed');
  t.deepEqual(result.processes, []);
});

test('a device with every policy option starts; one whose tables cannot work fails naming why', async (t) => {
  // Rules any identity can use: host ids 0 (root, or the user's own id in its namespace) only.
  const { result } = await libraryScenario(`
    const policies = {
      posixAcl: true,
      securityLabel: true,
      xattrMap: ':prefix:all:trusted.:user.virtiofs.: :ok:all:::',
      translateUid: ['squash-host:0:1000:1', { type: 'forbid-guest', guest: 5000, count: 10 }],
      translateGid: [{ type: 'map', guest: 0, host: 0, count: 1 }],
    };
    const socketPath = path.join(dir, 'policies.sock');
    const warnings = [];
    const device = await lib.startDevice({ sharedDir: dir, socketPath, ...policies }, { onLog: (r) => r.level === 'warn' && warnings.push(r.message) });
    const listening = isSocket(socketPath);
    await device.stop();
    // The device checks the tables again: POSIX ACLs with an xattr map that refuses their names
    // cannot work, which only the device's own rule matching can tell.
    let refused = null;
    const aclSocket = path.join(dir, 'acl.sock');
    try {
      await lib.startDevice({ sharedDir: dir, socketPath: aclSocket, posixAcl: true, xattrMap: ':bad:all:system.:: :ok:all:::' });
    } catch (e) {
      refused = { reason: e.reason, message: e.message };
    }
    return { listening, warnings, refused, processes: [...processesOf(socketPath), ...processesOf(aclSocket)] };
  `);
  t.true(result.listening);
  t.deepEqual(result.warnings, []);
  t.is(result.refused?.reason, 'failed');
  t.regex(result.refused?.message ?? '', /posixAcl cannot work: rule 1 of the compiled xattr map \(Bad all, key "system\.", prepend ""\) refuses or renames system\.posix_acl_access/);
  t.deepEqual(result.processes, []);
});

test('Device cannot be constructed from outside the library', async (t) => {
  const { result } = await libraryScenario(`
    const attempts = [() => new lib.Device(), () => new lib.Device(Symbol('virtiofsd Device construction'), null, {})];
    return attempts.map((attempt) => {
      try { attempt(); return 'constructed'; } catch (e) { return { name: e.name, reason: e.reason }; }
    });
  `);
  t.deepEqual(result, [
    { name: 'DeviceError', reason: 'misuse' },
    { name: 'DeviceError', reason: 'misuse' },
  ]);
});

test('group: events carry the device name', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    const events = [];
    for (const event of ['listening', 'connected', 'disconnected', 'exit']) {
      group.on(event, (name, arg) => events.push([event, name, event === 'listening' ? path.basename(arg) : event === 'exit' ? arg : null]));
    }
    const logs = new Set();
    group.on('log', (name, record) => logs.add(name + ':' + typeof record.message));
    await group.startAll({ a: { sharedDir: dir, socketPath: path.join(dir, 'a.sock') }, b: { sharedDir: dir, socketPath: path.join(dir, 'b.sock') } });
    await vanish(path.join(dir, 'a.sock'));
    await group.devices.get('a').exited;
    await group.stopAll();
    return { events: events.sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))), logs: [...logs].sort() };
  `);
  t.deepEqual(result.events, [
    ['connected', 'a', null],
    ['disconnected', 'a', null],
    ['exit', 'a', { code: 0, signal: null }],
    ['exit', 'b', { code: 0, signal: null }],
    ['listening', 'a', 'a.sock'],
    ['listening', 'b', 'b.sock'],
  ]);
  t.deepEqual(result.logs, ['a:string', 'b:string']);
});

test('group: the error event names the device whose start failed', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    const errors = [];
    group.on('error', (name, error) => errors.push([name, error.reason]));
    try {
      await group.add('broken', { sharedDir: dir, socketPath: path.join(dir, 'missing', 'x.sock') });
      return { added: true };
    } catch (e) {
      return { reason: e.reason, errors, size: group.devices.size };
    }
  `);
  t.deepEqual(result, { reason: 'failed', errors: [['broken', 'failed']], size: 0 });
});

test('group: concurrent adds of one name start one device; the other rejects', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    const first = path.join(dir, 'first.sock');
    const second = path.join(dir, 'second.sock');
    const outcomes = await Promise.allSettled([
      group.add('same', { sharedDir: dir, socketPath: first }),
      group.add('same', { sharedDir: dir, socketPath: second }),
    ]);
    const summary = outcomes.map((o) => o.status === 'fulfilled' ? 'fulfilled' : o.reason.name + ' ' + o.reason.reason + ' ' + o.reason.key + ': ' + o.reason.message);
    const running = { first: processesOf(first).length > 0, second: processesOf(second).length > 0, secondSocket: fs.existsSync(second) };
    const statuses = Object.fromEntries(await group.stopAll());
    return { summary, running, statuses, left: processesOf(first).length };
  `);
  t.deepEqual(result.summary, ['fulfilled', "OptionError conflict name: a device named 'same' is already in this group"]);
  t.deepEqual(result.running, { first: true, second: false, secondSocket: false });
  t.deepEqual(result.statuses, { same: { code: 0, signal: null } });
  t.is(result.left, 0);
});

test('group: without a restart policy a crashed device stays down', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    const restarting = [];
    group.on('restarting', (event) => restarting.push(event));
    const device = await group.add('solo', { sharedDir: dir, socketPath: path.join(dir, 'solo.sock') });
    process.kill(device.pid, 'SIGKILL');
    const status = await device.exited;
    await sleep(700);
    const current = group.devices.get('solo');
    await group.stopAll();
    return { status, exitedWithError: device.exitedWithError, restarting, same: current === device };
  `);
  t.deepEqual(result, { status: { code: null, signal: 'SIGKILL' }, exitedWithError: true, restarting: [], same: true });
});

test('group: restart policy restarts a crashed device with back-off, reports it, and gives up', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'flaky.sock');
    const group = new lib.DeviceGroup({ restart: { initialDelayMs: 150, maxDelayMs: 400, maxRestarts: 3 } });
    const log = [];
    const at = () => Date.now();
    group.on('exit', (name, status) => log.push({ event: 'exit', name, status, at: at() }));
    group.on('restarting', (e) => log.push({ event: 'restarting', name: e.name, attempt: e.attempt, delayMs: e.delayMs, status: e.status, at: at() }));
    group.on('restarted', (e) => log.push({ event: 'restarted', name: e.name, attempt: e.attempt, pid: e.device.pid, current: group.devices.get(e.name) === e.device, at: at() }));
    group.on('gaveUp', (e) => log.push({ event: 'gaveUp', name: e.name, restarts: e.restarts, status: e.status }));
    let device = await group.add('flaky', { sharedDir: dir, socketPath });
    const pids = [device.pid];
    for (let crash = 0; crash < 4; crash++) {
      // An outside kill, not device.kill(): a signal the device was not asked for.
      process.kill(device.pid, 'SIGKILL');
      await device.exited;
      if (crash === 3) break;
      device = await new Promise((resolve) => group.once('restarted', (e) => resolve(e.device)));
      pids.push(device.pid);
      if (!isSocket(socketPath)) throw new Error('restarted device is not listening');
    }
    await sleep(600);
    const afterGiveUp = processesOf(socketPath).length;
    // A clean stop of a supervised device is not restarted either.
    const statuses = Object.fromEntries(await group.stopAll());
    return { log, pids, afterGiveUp, statuses };
  `);
  const log = result.log;
  const kinds = log.map((entry: { event: string }) => entry.event);
  t.deepEqual(kinds, ['exit', 'restarting', 'restarted', 'exit', 'restarting', 'restarted', 'exit', 'restarting', 'restarted', 'exit', 'gaveUp'], JSON.stringify(log));
  const restarting = log.filter((entry: { event: string }) => entry.event === 'restarting');
  t.deepEqual(restarting.map((e: { attempt: number; delayMs: number }) => [e.attempt, e.delayMs]), [[1, 150], [2, 300], [3, 400]]);
  for (const entry of restarting) t.deepEqual(entry.status, { code: null, signal: 'SIGKILL' });
  // Each restart waited its delay after the exit that caused it.
  for (let i = 0; i < log.length; i++) {
    if (log[i].event !== 'restarted') continue;
    t.true(log[i].at - log[i - 1].at >= log[i - 1].delayMs - 5, JSON.stringify([log[i - 1], log[i]]));
    t.true(log[i].current);
    t.is(log[i].name, 'flaky');
  }
  t.is(new Set(result.pids).size, 4, 'every restart is a new process');
  t.deepEqual(log.at(-1), { event: 'gaveUp', name: 'flaky', restarts: 3, status: { code: null, signal: 'SIGKILL' } });
  t.is(result.afterGiveUp, 0);
  t.deepEqual(result.statuses, { flaky: { code: null, signal: 'SIGKILL' } });
});

test('group: stopAll during a restart wait cancels the restart and leaves no process', async (t) => {
  const { result } = await libraryScenario(`
    const socketPath = path.join(dir, 'wait.sock');
    const group = new lib.DeviceGroup({ restart: { initialDelayMs: 2000 } });
    const events = [];
    group.on('restarting', (e) => events.push('restarting ' + e.delayMs));
    group.on('restarted', () => events.push('restarted'));
    group.on('listening', (name) => events.push('listening ' + name));
    const device = await group.add('w', { sharedDir: dir, socketPath });
    const waiting = new Promise((resolve) => group.once('restarting', resolve));
    process.kill(device.pid, 'SIGKILL');
    await waiting;
    const started = Date.now();
    const statuses = Object.fromEntries(await group.stopAll());
    const elapsed = Date.now() - started;
    // Past the moment the restart would have happened.
    await sleep(2300);
    return { events, statuses, elapsed, size: group.devices.size, processes: processesOf(socketPath) };
  `);
  t.deepEqual(result.events, ['listening w', 'restarting 2000'], JSON.stringify(result));
  t.deepEqual(result.statuses, { w: { code: null, signal: 'SIGKILL' } });
  t.true(result.elapsed < 1000, JSON.stringify(result));
  t.is(result.size, 0);
  t.deepEqual(result.processes, []);
});

test('group: stopAll while devices are still starting ends them; their adds reject as aborted', async (t) => {
  const { result } = await libraryScenario(`
    const group = new lib.DeviceGroup();
    const sockets = ['s1', 's2', 's3'].map((name) => path.join(dir, name + '.sock'));
    const adds = Promise.allSettled(sockets.map((socketPath, index) => group.add('d' + index, { sharedDir: dir, socketPath })));
    // Let the processes exist, then stop before they can listen.
    await sleep(1);
    const statuses = await group.stopAll();
    const outcomes = (await adds).map((o) => o.status === 'fulfilled' ? 'fulfilled' : o.reason.reason);
    return { outcomes, stopped: statuses.size, processes: sockets.flatMap((s) => processesOf(s)) };
  `);
  for (const outcome of result.outcomes) t.true(outcome === 'aborted' || outcome === 'fulfilled', JSON.stringify(result));
  t.true(result.outcomes.includes('aborted'), JSON.stringify(result));
  t.is(result.stopped, 3, 'every device had a process, and stopAll reports how each ended');
  t.deepEqual(result.processes, []);
});

test('group: a removed name can be added again; the group signal stops everything', async (t) => {
  const { result } = await libraryScenario(`
    const controller = new AbortController();
    const group = new lib.DeviceGroup({ signal: controller.signal });
    const socketPath = path.join(dir, 'again.sock');
    await group.add('again', { sharedDir: dir, socketPath });
    const removed = await group.remove('again');
    const device = await group.add('again', { sharedDir: dir, socketPath });
    controller.abort();
    // A stopAll of its own, concurrent with the one the signal started, reports the same stop.
    const concurrent = Object.fromEntries(await group.stopAll());
    const status = await device.exited;
    let late = null;
    try { await group.add('late', { sharedDir: dir, socketPath: path.join(dir, 'late.sock') }); } catch (e) { late = e.reason; }
    await sleep(50);
    return { removed, concurrent, status, late, size: group.devices.size, processes: processesOf(socketPath) };
  `);
  t.deepEqual(result, {
    removed: { code: 0, signal: null },
    concurrent: { again: { code: 0, signal: null } },
    status: { code: 0, signal: null },
    late: 'aborted',
    size: 0,
    processes: [],
  });
});

test('group: a restart policy with a bad value is an OptionError naming the key', async (t) => {
  const { result } = await libraryScenario(`
    return [{ initialDelayMs: -1 }, { maxRestarts: 'many' }].map((restart) => {
      try { new lib.DeviceGroup({ restart }); return 'accepted'; } catch (e) { return [e.name, e.key, e.reason]; }
    });
  `);
  t.deepEqual(result, [
    ['OptionError', 'restart.initialDelayMs', 'out-of-range'],
    ['OptionError', 'restart.maxRestarts', 'invalid-type'],
  ]);
});

/**
 * A stand-in device (a real child with the control channel on fd 4) that sends `lines` one by
 * one, 20 ms apart, then idles until killed.
 */
function fakeDevice(config: object, lines: object[]): Device {
  const text = lines.map((line) => `${JSON.stringify(line)}\n`);
  const program = `const fs = require('node:fs'); const lines = ${JSON.stringify(text)}; let i = 0;
    const timer = setInterval(() => { if (i < lines.length) fs.writeSync(4, lines[i++]); }, 20);`;
  const child = spawn(process.execPath, ['-e', program], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  return adoptDeviceProcess(child, { sharedDir: '/srv', tag: null, ...config } as never);
}

test('reconnect: a disconnect is not the end; connected and disconnected carry the connection number', async (t) => {
  const device = fakeDevice({ reconnect: true }, [
    { event: 'listening', socket: '/nowhere' },
    { event: 'connected' },
    { event: 'disconnected' },
    { event: 'connected' },
    { event: 'disconnected' },
    { event: 'connected' },
  ]);
  const events: string[] = [];
  device.on('connected', (n) => events.push(`connected ${n}`));
  device.on('disconnected', (n) => events.push(`disconnected ${n}`));
  try {
    await device.ready;
    t.true(device.reconnect);
    const deadline = Date.now() + 10_000;
    while (events.length < 5 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    t.deepEqual(events, ['connected 1', 'disconnected 1', 'connected 2', 'disconnected 2', 'connected 3']);
    t.true(device.connected);
    t.is(device.connections, 3);
    t.is(device.exitStatus, null, 'the device outlives its frontends');
  } finally {
    device.kill('SIGKILL');
    await device.exited;
  }
  t.false(device.connected);
});

test('a second connected before disconnected, or a disconnected with no frontend, is ignored with a warning', async (t) => {
  const device = fakeDevice({}, [
    { event: 'listening', socket: '/nowhere' },
    { event: 'disconnected' },
    { event: 'connected' },
    { event: 'connected' },
    { event: 'disconnected' },
  ]);
  const events: string[] = [];
  const warnings: string[] = [];
  device.on('connected', (n) => events.push(`connected ${n}`));
  device.on('disconnected', (n) => events.push(`disconnected ${n}`));
  device.on('log', (record) => record.level === 'warn' && warnings.push(record.message));
  try {
    await device.ready;
    t.false(device.reconnect, 'off unless configured');
    const deadline = Date.now() + 10_000;
    while (events.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    t.deepEqual(events, ['connected 1', 'disconnected 1']);
    t.deepEqual(warnings, [
      'ignored control event disconnected: no frontend is attached',
      'ignored control event connected: a frontend is already attached',
    ]);
    t.is(device.connections, 1);
  } finally {
    device.kill('SIGKILL');
    await device.exited;
  }
});
