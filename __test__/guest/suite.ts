// What the guest suites (conformance.spec.ts, policy.spec.ts) share: the transcript format of their
// scripts, the static build of scripts/guest/conformance-helper.c, and a guest run retried once when
// the emulated kernel itself falls over.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GuestError, repoRoot, runGuest, type GuestRun, type RunGuestOptions } from './harness.ts';

export interface Transcript {
  /** Case name -> "ok" or "FAIL got X want Y", in script order. */
  cases: Map<string, string>;
  /** Lines that are neither a case nor the summary: the script or the helper misbehaved. */
  unexpected: string[];
  summary?: { total: number; passed: number; failed: number };
}

const LINE = /^([a-z0-9][a-z0-9-]*): (ok|FAIL got .* want .*)$/;
const SUMMARY = /^summary: total=(\d+) passed=(\d+) failed=(\d+)$/;

/** Parses a script's output: one "<case>: ok" / "<case>: FAIL got X want Y" line per case, then the summary. */
export function parseTranscript(output: string): Transcript {
  const cases = new Map<string, string>();
  const unexpected: string[] = [];
  let summary: Transcript['summary'];
  for (const line of output.split('\n')) {
    if (line === '') continue;
    const m = LINE.exec(line);
    if (m?.[1] && m[2]) {
      if (cases.has(m[1])) unexpected.push(`duplicate case: ${line}`);
      cases.set(m[1], m[2]);
      continue;
    }
    const s = SUMMARY.exec(line);
    if (s) {
      summary = { total: Number(s[1]), passed: Number(s[2]), failed: Number(s[3]) };
      continue;
    }
    unexpected.push(line);
  }
  return { cases, unexpected, summary };
}

/** The failing cases, as "<case>: FAIL got X want Y". */
export function failures(tr: Transcript): string[] {
  return [...tr.cases].filter(([, value]) => value !== 'ok').map(([name, value]) => `${name}: ${value}`);
}

export function describeTranscript(tr: Transcript): string {
  const s = tr.summary;
  return s ? `${s.passed}/${s.total} cases pass` : 'no summary line';
}

export interface Helper {
  /** The static executable, for the guest's initramfs. */
  data: Buffer;
  /** The same executable on the host, for reading a shared directory as the host stores it. */
  file: string;
}

let helperBuilt: Promise<Helper> | undefined;
let helperDir: string | undefined;

/** The helper, compiled statically (the initramfs has no libc); built once per process. */
export function helper(): Promise<Helper> {
  helperBuilt ??= (async () => {
    helperDir = await fs.mkdtemp(path.join(os.tmpdir(), 'virtiofsd-cx-'));
    const file = path.join(helperDir, 'cx');
    const src = path.join(repoRoot, 'scripts', 'guest', 'conformance-helper.c');
    const cc = spawnSync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', file, src], { encoding: 'utf8' });
    if (cc.error || cc.status !== 0) {
      throw new Error(
        `cannot build the guest helper with \`gcc -static\` (the guest suites need gcc and a static libc, ` +
          `e.g. Debian's gcc and libc6-dev): ${cc.error?.message ?? ''}\n${cc.stderr}`,
      );
    }
    return { data: await fs.readFile(file), file };
  })();
  return helperBuilt;
}

/** Removes the host copy of the helper (call from test.after.always). */
export async function removeHelper(): Promise<void> {
  await helperBuilt?.catch(() => undefined);
  if (helperDir) await fs.rm(helperDir, { recursive: true, force: true });
}

/**
 * runGuest on a fresh directory from `freshDir`. TCG guests on a loaded host occasionally panic in
 * kernel text patching (clocksource watchdog); that says nothing about the daemon, so such a run is
 * retried once, on another fresh directory. Returns the run and the directory it used.
 */
export async function runGuestRetrying(
  freshDir: () => Promise<string>,
  opts: Omit<RunGuestOptions, 'sharedDir'>,
): Promise<{ run: GuestRun; sharedDir: string }> {
  let sharedDir = await freshDir();
  try {
    return { run: await runGuest({ ...opts, sharedDir }), sharedDir };
  } catch (error) {
    if (!(error instanceof GuestError) || !/Kernel panic/.test(error.console)) throw error;
    sharedDir = await freshDir();
    return { run: await runGuest({ ...opts, sharedDir }), sharedDir };
  }
}
