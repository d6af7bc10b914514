// Texts printed by `--help`, `--version` and `--print-capabilities`. The per-option help comes from
// the option table in ./options, which the man page (./man) is generated from too.
import fs from 'node:fs';
import path from 'node:path';
import { OPTION_TABLE, OptionSpec } from './options';

/**
 * vhost-user backend capabilities (vhost-user.json), as upstream: pre-copy live migration of the
 * device state, and options separate from the program name.
 */
export const CAPABILITIES = { type: 'fs', features: ['migrate-precopy', 'separate-options'] } as const;

export function capabilitiesText(): string {
  return `${JSON.stringify(CAPABILITIES, null, 2)}\n`;
}

/** The package version, read at run time so the CLI and the package can never disagree. */
export function packageVersion(): string {
  // Both ts/ (tests) and dist/ (installed) sit one level below the package root.
  const manifest = path.join(__dirname, '..', 'package.json');
  const parsed = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { version?: unknown };
  if (typeof parsed.version !== 'string') throw new Error(`no version in ${manifest}`);
  return parsed.version;
}

export function versionText(): string {
  return `virtiofsd ${packageVersion()}\n`;
}

export const SUMMARY = 'Serve a host directory to a virtual machine as a virtio-fs device (vhost-user backend).';
export const USAGE = 'virtiofsd --shared-dir <SHARED_DIR> --socket-path <SOCKET_PATH> [OPTIONS]';
export const NOT_SUPPORTED_NOTE =
  'Options marked (not supported yet) are accepted by upstream virtiofsd; this version checks their syntax and ' +
  'then refuses to start, rather than ignoring them.';
export const NOT_SUPPORTED_MARK = '(not supported yet)';

/** The note about the mark, for `--help` and the man page; none while no option carries the mark. */
export function notSupportedNote(table: readonly OptionSpec[] = OPTION_TABLE): string[] {
  return table.some((spec) => spec.notSupported === true) ? [NOT_SUPPORTED_NOTE] : [];
}

/** Lines of --help are at most this wide, so they read in a terminal of 100 columns. */
const WIDTH = 100;
const BODY_INDENT = ' '.repeat(10);

/** The value placeholder of a value-taking option, e.g. `LOG_LEVEL`. */
export function valueName(spec: OptionSpec): string {
  return spec.help.valueName ?? (spec.long ?? spec.short ?? '').toUpperCase().replace(/-/g, '_');
}

/** The option's description, then its [default], [deprecated] and (not supported yet) marks. */
export function describe(spec: OptionSpec): { text: string; marks: string[] } {
  const { help } = spec;
  const marks = [help.isDefault ? '[default]' : '', help.deprecated ? '[deprecated]' : '', spec.notSupported ? NOT_SUPPORTED_MARK : ''];
  return { text: help.text, marks: marks.filter((mark) => mark !== '') };
}

/** Greedy wrap of `words`, each kept whole (a mark such as `(not supported yet)` is one word). */
function wrap(words: readonly string[], indent: string): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    if (line !== '' && indent.length + line.length + 1 + word.length > WIDTH) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(indent + line);
  return lines;
}

const words = (text: string): string[] => text.split(/\s+/).filter((w) => w !== '');

function heading(spec: OptionSpec): string {
  const value = spec.takesValue ? `${spec.requireEquals ? '=' : ' '}<${valueName(spec)}>` : '';
  if (spec.long === undefined) return `  -${spec.short}${value}`;
  return `${spec.short === undefined ? '      ' : `  -${spec.short}, `}--${spec.long}${value}`;
}

function helpEntry(spec: OptionSpec): string {
  const { text, marks } = describe(spec);
  const lines = [heading(spec), ...wrap([...words(text), ...marks], BODY_INDENT)];
  if (spec.help.default !== undefined) lines.push(`${BODY_INDENT}[default: ${spec.help.default}]`);
  return lines.join('\n');
}

export function helpText(table: readonly OptionSpec[] = OPTION_TABLE): string {
  const note = notSupportedNote(table).flatMap((text) => [...wrap(words(text), ''), '']);
  const intro = [SUMMARY, '', `Usage: ${USAGE}`, '', ...note, 'Options:'].join('\n');
  return `${intro}\n${table.map(helpEntry).join('\n\n')}\n`;
}

export const HELP_TEXT = helpText();
