#!/usr/bin/env node
// `npm test`: provisions what the guest tests need, builds, then runs the Rust unit tests and the
// ava suites (options, lifecycle, guest end-to-end against this daemon and the reference daemon).
// It ends with one summary line, `N passed, N failed`, and a non-zero status on any failure,
// including skipped tests, which never count as passing.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const totals = { passed: 0, failed: 0, skipped: 0 };

function run(label, cmd, args, { capture = false } = {}) {
  process.stderr.write(`\n=== ${label}: ${cmd} ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', capture ? 'pipe' : 'inherit', capture ? 'pipe' : 'inherit'] });
    let output = '';
    const tee = (stream, sink) => stream?.on('data', (chunk) => { output += chunk; sink.write(chunk); });
    tee(child.stdout, process.stdout);
    tee(child.stderr, process.stderr);
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? 128, signal, output }));
  });
}

function count(output, pattern) {
  let total = 0;
  for (const match of output.matchAll(pattern)) total += Number(match[1]);
  return total;
}

async function main() {
  const steps = [
    ['provision', 'bash', ['scripts/provision.sh']],
    ['build', 'npm', ['run', 'build']],
  ];
  for (const [label, cmd, args] of steps) {
    const { code } = await run(label, cmd, args);
    if (code !== 0) {
      process.stderr.write(`\n${label} failed (exit ${code}); no tests were run\n`);
      console.log('0 passed, 1 failed');
      process.exit(1);
    }
  }

  const unit = await run('rust unit tests', 'cargo', ['test', '--workspace', '--exclude', 'virtiofsd-napi'], { capture: true });
  const unitPassed = count(unit.output, /test result: \w+\. (\d+) passed/g);
  const unitFailed = count(unit.output, /test result: \w+\. \d+ passed; (\d+) failed/g);
  totals.passed += unitPassed;
  totals.failed += unitFailed + (unit.code !== 0 && unitFailed === 0 ? 1 : 0);
  totals.skipped += count(unit.output, /(\d+) ignored/g);

  const ava = await run('ava', 'npx', ['ava', ...process.argv.slice(2)], { capture: true });
  const avaPassed = count(ava.output, /(\d+) tests? passed/g);
  const avaFailed = count(ava.output, /(\d+) tests? failed/g) + count(ava.output, /(\d+) uncaught exceptions?/g)
    + count(ava.output, /(\d+) unhandled rejections?/g) + count(ava.output, /(\d+) tests? remained pending/g);
  totals.passed += avaPassed;
  totals.failed += avaFailed + (ava.code !== 0 && avaFailed === 0 ? 1 : 0);
  totals.skipped += count(ava.output, /(\d+) tests? skipped/g) + count(ava.output, /(\d+) tests? todo/g);

  if (totals.skipped > 0) {
    process.stderr.write(`\n${totals.skipped} test(s) skipped or todo: a skipped test is not a passing test\n`);
    totals.failed += totals.skipped;
  }
  if (totals.passed === 0) totals.failed += 1;
  console.log(`\n${totals.passed} passed, ${totals.failed} failed`);
  process.exit(totals.failed === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  console.log('0 passed, 1 failed');
  process.exit(1);
});
