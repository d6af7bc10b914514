// The virtiofsd(1) man page, generated from the same option table as `--help` (written to
// dist/virtiofsd.1 by `npm run build:ts`, see scripts/man.mjs).
import { SUMMARY, describe, notSupportedNote, valueName } from './help';
import { OPTION_TABLE, OptionSpec } from './options';

/** Escapes text for roff: backslashes, hyphens (so they are not hyphenation points) and leading dots. */
export function roffEscape(text: string): string {
  const escaped = text.replace(/\\/g, '\\e').replace(/-/g, '\\-');
  return /^[.']/.test(escaped) ? `\\&${escaped}` : escaped;
}

const bold = (text: string): string => `\\fB${roffEscape(text)}\\fR`;
const italic = (text: string): string => `\\fI${roffEscape(text)}\\fR`;

/** `--log-level LOG_LEVEL`, `-h, --help`, `--inode-file-handles=MODE` in man-page fonts. */
export function manHeading(spec: OptionSpec): string {
  const names = [spec.short !== undefined ? bold(`-${spec.short}`) : '', spec.long !== undefined ? bold(`--${spec.long}`) : '']
    .filter((name) => name !== '')
    .join(', ');
  if (!spec.takesValue) return names;
  return spec.requireEquals ? `${names}${bold('=')}${italic(valueName(spec))}` : `${names} ${italic(valueName(spec))}`;
}

function manEntry(spec: OptionSpec): string {
  const { text, marks } = describe(spec);
  const lines = ['.TP', manHeading(spec), roffEscape([text, ...marks].join(' '))];
  if (spec.help.default !== undefined) lines.push('.br', roffEscape(`Default: ${spec.help.default}.`));
  return lines.join('\n');
}

const paragraphs = (...texts: string[]): string => texts.map((text) => `.PP\n${roffEscape(text)}`).join('\n');

/** The whole page. No date or version in the title line, so it depends on the option table only. */
export function manPage(table: readonly OptionSpec[] = OPTION_TABLE): string {
  return [
    '.TH VIRTIOFSD 1 "" "virtiofsd" "User Commands"',
    '.SH NAME',
    `virtiofsd \\- ${roffEscape(SUMMARY.charAt(0).toLowerCase() + SUMMARY.slice(1).replace(/\.$/, ''))}`,
    '.SH SYNOPSIS',
    `${bold('virtiofsd')} ${bold('--shared-dir')} ${italic('SHARED_DIR')} ${bold('--socket-path')} ${italic('SOCKET_PATH')} [${italic('OPTIONS')}]`,
    '.br',
    `${bold('virtiofsd')} ${bold('--shared-dir')} ${italic('SHARED_DIR')} ${bold('--fd')} ${italic('FD')} [${italic('OPTIONS')}]`,
    '.SH DESCRIPTION',
    paragraphs(
      'virtiofsd serves a host directory to a virtual machine as a virtio-fs device. A VM monitor (QEMU, ' +
        'cloud-hypervisor, crosvm, libvirt) connects to its vhost-user socket, and the guest mounts the share with ' +
        'mount -t virtiofs TAG /mnt. Guest RAM must be shared memory (for QEMU, a memory-backend-memfd or ' +
        'memory-backend-file with share=on).',
      'The command line is that of upstream virtiofsd 1.13, plus --reconnect. The daemon serves one frontend ' +
        'connection and exits when it disconnects (with --reconnect it keeps listening and serves the next frontend ' +
        'with a fresh FUSE session); SIGTERM, SIGINT and SIGHUP stop it cleanly and remove the socket it created. SIGUSR1 ' +
        'makes it print its statistics (requests and errors by opcode and errno, bytes, latency per queue, ' +
        'inodes, handles and descriptors held, sandbox and seccomp state) as one JSON line on stderr, or with ' +
        '--syslog to the system log, and go on serving.',
      ...notSupportedNote(table),
      'The package\'s virtiofsd-descriptor command prints or installs the vhost-user backend descriptor ' +
        '(50-virtiofsd.json) through which libvirt finds this program.',
    ),
    '.SH OPTIONS',
    table.map(manEntry).join('\n'),
    '.SH FILES',
    '.TP',
    italic('SOCKET_PATH.pid'),
    roffEscape(
      'Next to a socket created with --socket-path: holds the daemon\'s process ID and an exclusive lock for as long ' +
        'as the daemon runs, so a second daemon on the same path fails rather than replacing the socket. It is left in ' +
        'place on exit, as upstream virtiofsd leaves it.',
    ),
    '.SH EXIT STATUS',
    roffEscape(
      '0 when the frontend disconnected (without --reconnect) or a stop signal was received; non-zero when an option ' +
        'is refused or the device cannot start, with the reason on standard error.',
    ),
    '.SH SEE ALSO',
    `${bold('qemu-system-x86_64')}(1), ${bold('mount')}(8)`,
    '',
  ].join('\n');
}
