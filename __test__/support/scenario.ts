// Runs library code against the built package in a plain Node process, as an embedder would.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { root } from './build.ts';

/**
 * Helpers the scenario body can use, besides `lib` (the built package), `dir` (a fresh temporary
 * directory), `fs`, `net` and `path`:
 * - `sleep(ms)`, `isSocket(file)`, `vanish(socketPath)` (a frontend that connects and leaves);
 * - `processesOf(needle)`: live (non-zombie) processes whose command line contains `needle`, as
 *   `{ pid, comm }`. A device's labels put its socket path on its command line, and the sandbox's
 *   second process is a fork with the same command line, so a test's unique socket path finds
 *   every process of that device, started or half-started.
 */
const PRELUDE = `
  const fs = require('node:fs');
  const net = require('node:net');
  const path = require('node:path');
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const isSocket = (f) => { try { return fs.statSync(f).isSocket(); } catch { return false; } };
  const vanish = (p) => new Promise((resolve, reject) => {
    const c = net.connect(p, () => { c.end(); resolve(); });
    c.on('error', reject);
  });
  const processesOf = (needle) => {
    const found = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\\d+$/.test(entry)) continue;
      try {
        const cmdline = fs.readFileSync('/proc/' + entry + '/cmdline', 'utf8');
        if (!cmdline.split('\\0').some((arg) => arg.includes(needle))) continue;
        const stat = fs.readFileSync('/proc/' + entry + '/stat', 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2).charAt(0) === 'Z') continue;
        found.push({ pid: Number(entry), comm: fs.readFileSync('/proc/' + entry + '/comm', 'utf8').trim() });
      } catch {
        // The process ended while we looked.
      }
    }
    return found;
  };
`;

export interface ScenarioOutcome {
  dir: string;
  result: any;
}

/**
 * Runs `body` (the inside of an async function, CommonJS JavaScript) and returns what it returns,
 * JSON-encoded, with `lib` = `require` of dist/index.js. A thrown error comes back as `{ thrown: { name, message, reason } }`. The scenario's own
 * process must exit by itself: a device it leaves running keeps it alive until the timeout.
 */
export async function libraryScenario(body: string, options: { timeoutMs?: number; cwd?: string } = {}): Promise<ScenarioOutcome> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-lib-'));
  const script = `
    const lib = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
    const dir = ${JSON.stringify(dir)};
    ${PRELUDE}
    (async () => { ${body} })().then(
      (result) => { process.stdout.write(JSON.stringify(result === undefined ? null : result)); process.exitCode = 0; },
      (e) => { process.stdout.write(JSON.stringify({ thrown: { name: e.name, message: e.message, reason: e.reason ?? null } })); process.exitCode = 0; },
    );`;
  const timeoutMs = options.timeoutMs ?? 60_000;
  try {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const status = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('close', (code, signal) => resolve({ code, signal })),
    );
    clearTimeout(timer);
    if (status.code !== 0) {
      throw new Error(`library scenario failed (${JSON.stringify(status)}; a process left running keeps it alive): ${stderr}\n${stdout}`);
    }
    return { dir, result: JSON.parse(stdout) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
