// `--help` and the man page are both generated from the option table: every option appears in
// both with the same marks, the built dist/virtiofsd.1 is the generated page, and groff renders it
// without a warning.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HELP_TEXT, NOT_SUPPORTED_MARK, NOT_SUPPORTED_NOTE, helpText } from '../ts/help.ts';
import { manHeading, manPage, roffEscape } from '../ts/man.ts';
import { OPTION_TABLE, type OptionSpec } from '../ts/options.ts';
import { root } from './support/build.ts';

const builtPage = path.join(root, 'dist', 'virtiofsd.1');

const display = (spec: OptionSpec): string => (spec.long !== undefined ? `--${spec.long}` : `-${spec.short}`);

/** The --help entry of `spec`: its heading line up to the blank line before the next entry. */
function helpEntry(spec: OptionSpec): string {
  const lines = HELP_TEXT.split('\n');
  // Headings are indented by 2 or 6 columns, descriptions (which may name options) by 10.
  const at = lines.findIndex((line) => !line.startsWith(' '.repeat(10)) && line.trimStart().startsWith(spec.long !== undefined ? (spec.short ? `-${spec.short}, --${spec.long}` : `--${spec.long}`) : `-${spec.short}`));
  if (at === -1) return '';
  const end = lines.indexOf('', at);
  return lines.slice(at, end === -1 ? undefined : end).join('\n');
}

/** The man page entry of `spec`: from its .TP to the next one. */
function manEntry(page: string, spec: OptionSpec): string {
  const at = page.indexOf(`.TP\n${manHeading(spec)}\n`);
  if (at === -1) return '';
  const end = page.indexOf('\n.TP\n', at + 1);
  return page.slice(at, end === -1 ? page.indexOf('\n.SH', at) : end);
}

/** Renders the page as `man` shows it, with lines long enough that no option name wraps. */
function rendered(page: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-man-'));
  try {
    const file = path.join(dir, 'virtiofsd.1');
    fs.writeFileSync(file, page);
    return execFileSync('man', ['-l', file], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '200', MAN_KEEP_FORMATTING: '', PAGER: 'cat', MANPAGER: 'cat' } });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('every option of the table has an entry in --help and in the man page, with the same marks', (t) => {
  const page = manPage();
  t.true(OPTION_TABLE.length >= 40, 'the table lost options');
  for (const spec of OPTION_TABLE) {
    const name = display(spec);
    const help = helpEntry(spec);
    const man = manEntry(page, spec);
    t.not(help, '', `${name} has no --help entry`);
    t.not(man, '', `${name} has no man page entry`);
    const firstWords = spec.help.text.split(' ').slice(0, 4).join(' ');
    t.true(help.replace(/\s+/g, ' ').includes(firstWords), `${name}: --help lacks its description`);
    t.true(man.includes(roffEscape(firstWords)), `${name}: man page lacks its description`);
    const marks: [string, boolean][] = [
      [NOT_SUPPORTED_MARK, spec.notSupported === true],
      ['[deprecated]', spec.help.deprecated === true],
      ['[default]', spec.help.isDefault === true],
      [`[default: ${spec.help.default}]`, spec.help.default !== undefined],
    ];
    for (const [mark, expected] of marks) t.is(help.includes(mark), expected, `${name}: --help mark ${mark}`);
    t.is(man.includes(roffEscape(NOT_SUPPORTED_MARK)), spec.notSupported === true, `${name}: man page (not supported yet)`);
    t.is(man.includes(roffEscape(`Default: ${spec.help.default}.`)), spec.help.default !== undefined, `${name}: man page default`);
  }
});

test('the help text is generated from the table: a changed entry changes --help', (t) => {
  t.is(helpText(), HELP_TEXT);
  const table = OPTION_TABLE.map((spec) => (spec.long === 'xattr' ? { ...spec, notSupported: true } : spec));
  const changed = helpText(table);
  t.regex(changed, /--xattr\n {10}Support extended attributes \(not supported yet\)\n/);
  t.notRegex(HELP_TEXT, /Support extended attributes \(not supported yet\)/);
  t.regex(manPage(table), /Support extended attributes \(not supported yet\)/);
  // The note about the mark is there only while an option carries it: none does now.
  t.false(HELP_TEXT.includes(NOT_SUPPORTED_NOTE));
  t.false(manPage().includes(roffEscape(NOT_SUPPORTED_NOTE).slice(0, 40)));
  t.true(changed.includes(NOT_SUPPORTED_NOTE.slice(0, 60)));
});

test('no --help line is wider than 100 columns', (t) => {
  for (const line of HELP_TEXT.split('\n')) t.true(line.length <= 100, line);
});

test('the built dist/virtiofsd.1 is the generated page, and package.json installs it', (t) => {
  t.true(fs.existsSync(builtPage), `${builtPage} is missing: run 'npm run build:ts'`);
  t.is(fs.readFileSync(builtPage, 'utf8'), manPage(), "dist/virtiofsd.1 is stale: run 'npm run build:ts'");
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { man?: unknown; files?: string[] };
  t.is(manifest.man, 'dist/virtiofsd.1');
  t.true(manifest.files?.some((entry) => entry === 'dist' || entry === 'dist/virtiofsd.1'), 'the man page is not in "files"');
});

test('groff renders the man page without warnings', (t) => {
  const result = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z'], { input: manPage(), encoding: 'utf8' });
  if (result.error) throw new Error(`groff cannot be run (apt-get install groff-base): ${result.error.message}`);
  t.is(result.status, 0, result.stderr);
  t.is(result.stderr, '');
});

test('man shows every option name as typed on a command line', (t) => {
  const text = rendered(manPage());
  t.regex(text, /^VIRTIOFSD\(1\)/);
  for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'FILES', 'EXIT STATUS']) t.regex(text, new RegExp(`^${section}$`, 'm'));
  for (const spec of OPTION_TABLE) {
    const heading = spec.long !== undefined ? (spec.short ? `-${spec.short}, --${spec.long}` : `--${spec.long}`) : `-${spec.short}`;
    t.regex(text, new RegExp(`^ {7}${heading.replace(/[-[\]]/g, '\\$&')}(?:[ =]|$)`, 'm'), `${heading} not rendered`);
  }
});
