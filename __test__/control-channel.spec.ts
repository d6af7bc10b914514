// The device control channel seen from Node: bounded line splitting, escaping of device text, and
// a real child process that sends an over-long line being killed without affecting its neighbour.
import test from 'ava';
import { ChildProcess, spawn } from 'node:child_process';
import { Device, ExitStatus, LogRecord, adoptDeviceProcess } from '../ts/device.ts';
import { escapeLogText, formatLogLine } from '../ts/log.ts';
import { LineSplitter, LineTooLongError, MAX_CONTROL_LINE_BYTES } from '../ts/protocol.ts';

test('the control line limit is 64 KiB', (t) => {
  t.is(MAX_CONTROL_LINE_BYTES, 65536);
});

test('a line of exactly the limit passes, one byte more split across chunks is refused', (t) => {
  const ok = new LineSplitter();
  const exact = 'a'.repeat(MAX_CONTROL_LINE_BYTES);
  let out: string[] = [];
  for (let i = 0; i < exact.length; i += 1000) out = out.concat(ok.push(exact.slice(i, i + 1000)));
  t.deepEqual(out.concat(ok.push('\n')), [exact]);

  const splitter = new LineSplitter();
  const line = 'b'.repeat(MAX_CONTROL_LINE_BYTES + 1);
  let pushed = 0;
  const error = t.throws(
    () => {
      for (let i = 0; i < line.length; i += 997) {
        splitter.push(line.slice(i, i + 997));
        pushed += 1;
      }
    },
    { instanceOf: LineTooLongError },
  );
  t.regex(error!.message, /65536 bytes/);
  t.is(pushed, Math.floor(MAX_CONTROL_LINE_BYTES / 997), 'refused by the chunk that crosses the limit');
  t.throws(() => splitter.push('\n'), { instanceOf: LineTooLongError }, 'stays refused');
});

test('the limit counts bytes, not UTF-16 units', (t) => {
  const splitter = new LineSplitter();
  // 'é' is two bytes: half the limit in characters is exactly the limit in bytes.
  t.deepEqual(splitter.push(`${'é'.repeat(MAX_CONTROL_LINE_BYTES / 2)}\n`), ['é'.repeat(MAX_CONTROL_LINE_BYTES / 2)]);
  t.throws(() => splitter.push(`${'é'.repeat(MAX_CONTROL_LINE_BYTES / 2)}x\n`), { instanceOf: LineTooLongError });
});

test('many lines across chunk boundaries come out exactly', (t) => {
  const lines = Array.from({ length: 2000 }, (_, i) => JSON.stringify({ event: 'log', n: i, text: 'ü€😀'.repeat(i % 7), pad: 'x'.repeat(i % 300) }));
  const stream = Buffer.from(lines.map((line) => `${line}\n`).join(''), 'utf8');
  for (const size of [1, 3, 7, 64, 4096]) {
    const splitter = new LineSplitter();
    const out: string[] = [];
    // Byte-sized chunks also cut multi-byte characters in half.
    for (let i = 0; i < stream.length; i += size) out.push(...splitter.push(stream.subarray(i, i + size)));
    t.deepEqual(out, lines, `chunk size ${size}`);
  }
});

test('a 32 MiB stream without newline fails at the limit, not at the end', (t) => {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const total = (32 * 1024 * 1024) / chunk.length;
  const splitter = new LineSplitter();
  let consumed = 0;
  let error: unknown = null;
  for (let i = 0; i < total; i++) {
    consumed += 1;
    try {
      splitter.push(chunk);
    } catch (caught) {
      error = caught;
      break;
    }
  }
  t.true(error instanceof LineTooLongError);
  t.is(consumed, 2, 'the first chunk fills the limit exactly, the second exceeds it');
});

test('a long stream of short lines splits exactly', (t) => {
  // 16 MiB of 100-byte lines in 1-KiB chunks (quadratic re-scanning would stall the suite).
  const line = `${'y'.repeat(99)}\n`;
  const chunk = Buffer.from(line.repeat(1024).slice(0, 1024 * 100), 'utf8');
  const piece = 1000;
  const splitter = new LineSplitter();
  let count = 0;
  for (let round = 0; round < 160; round++) {
    for (let i = 0; i < chunk.length; i += piece) count += splitter.push(chunk.subarray(i, i + piece)).length;
  }
  t.is(count, 160 * 1024);
});

test('escaping device text', (t) => {
  t.is(escapeLogText('a\nb\r\tc'), 'a\\nb\\r\\tc');
  t.is(escapeLogText('\x1b[2J\x1b]0;title\x07'), '\\x1b[2J\\x1b]0;title\\x07');
  t.is(escapeLogText('\x00\x1f\x7f'), '\\x00\\x1f\\x7f');
  t.is(escapeLogText('\u0080\u009b31m\u009f'), '\\x80\\x9b31m\\x9f');
  t.is(escapeLogText('grüße 日本 😀 \u00a0\u00ff'), 'grüße 日本 😀 \u00a0\u00ff');
  t.is(escapeLogText('plain \\n text'), 'plain \\n text');
  const once = escapeLogText('x\ny\x1b');
  t.is(escapeLogText(once), once, 'idempotent');
});

test('a forged log line stays on one line of output', (t) => {
  const line = formatLogLine('info', 'dev\x1b[31m', 'hi\n[2026-11-27T19:00:00Z ERROR virtiofsd] forged', new Date('2026-11-27T19:00:00Z'));
  t.is(line, '[2026-11-27T19:00:00Z INFO  dev\\x1b[31m] hi\\n[2026-11-27T19:00:00Z ERROR virtiofsd] forged\n');
  t.is(line.split('\n').length, 2);
});

/**
 * A stand-in device: a real child process with the descriptor layout of the device executable
 * (control channel on fd 4), running `script`, which writes control lines with `send(text)`.
 */
function startFake(script: string): { device: Device; child: ChildProcess; logs: LogRecord[] } {
  const program = `const fs = require('node:fs'); const send = (text) => fs.writeSync(4, text); ${script}; setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', program], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  const device = adoptDeviceProcess(child, {} as never);
  const logs: LogRecord[] = [];
  device.on('log', (record) => logs.push(record));
  return { device, child, logs };
}

test('a device sending an over-long control line is killed; its neighbour keeps working', async (t) => {
  const listening = JSON.stringify({ event: 'listening', socket: '/nowhere' });
  const children: ChildProcess[] = [];
  try {
    // Floods: 1 MiB without newline, in 8 KiB writes.
    const bad = startFake(`send(${JSON.stringify(`${listening}\n`)}); for (let i = 0; i < 128; i++) send('z'.repeat(8192));`);
    // Behaves: listens, then logs (with a forged line inside) every 20 ms.
    const good = startFake(
      `send(${JSON.stringify(`${listening}\n`)}); let n = 0; setInterval(() => send(JSON.stringify({ event: 'log', level: 'info', target: 'dev', message: 'tick ' + (n++) + '\\n[fake] \\u001b[2J' }) + '\\n'), 20);`,
    );
    children.push(bad.child, good.child);
    await Promise.all([bad.device.ready, good.device.ready]);

    const status: ExitStatus = await Promise.race([
      bad.device.exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('over-long line did not kill the device')), 10_000)),
    ]);
    t.deepEqual(status, { code: null, signal: 'SIGKILL' });
    t.is(bad.device.exitStatus?.signal, 'SIGKILL');
    t.regex(bad.device.failure ?? '', /killed: control line longer than 65536 bytes/);
    t.true(bad.logs.some((record) => record.level === 'error' && /longer than 65536 bytes/.test(record.message)));
    t.is(children[0]!.signalCode, 'SIGKILL');

    // The neighbour still delivers messages after the other device died, escaped.
    const before = good.logs.length;
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (good.logs.length >= before + 3) resolve();
        else setTimeout(check, 10);
      };
      check();
    });
    t.is(good.device.exitStatus, null);
    const tick = good.logs.find((record) => record.message.startsWith('tick'))!;
    t.regex(tick.message, /^tick \d+\\n\[fake\] \\x1b\[2J$/);
    t.false(/[\n\x1b]/.test(tick.message));
    good.device.kill('SIGKILL');
    t.is((await good.device.exited).signal, 'SIGKILL');
  } finally {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
