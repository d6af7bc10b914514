// Texts printed by `--help`, `--version` and `--print-capabilities`.
import fs from 'node:fs';
import path from 'node:path';

/**
 * vhost-user backend capabilities (vhost-user.json). Only features that work are listed;
 * `migrate-precopy` joins when migration is implemented.
 */
export const CAPABILITIES = { type: 'fs', features: ['separate-options'] } as const;

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

export const HELP_TEXT = `Serve a host directory to a virtual machine as a virtio-fs device (vhost-user backend).

Usage: virtiofsd --shared-dir <SHARED_DIR> --socket-path <SOCKET_PATH> [OPTIONS]

Options marked (not supported yet) are accepted by upstream virtiofsd; this version checks their
syntax and then refuses to start, rather than ignoring them.

Options:
      --shared-dir <SHARED_DIR>
          Directory to share with the guest

      --tag <TAG>
          Tag the device reports to the guest (1 to 36 bytes). The frontend may ignore it: QEMU
          does not negotiate the vhost-user CONFIG feature, so the tag set on its -device wins

      --socket <SOCKET>
          Old name of --socket-path [deprecated]

      --socket-path <SOCKET_PATH>
          Create and listen on this vhost-user UNIX socket

      --socket-group <SOCKET_GROUP>
          Give this group ownership of the vhost-user socket

      --fd <FD>
          Use an inherited file descriptor that is a listening, not yet connected socket

      --thread-pool-size <THREAD_POOL_SIZE>
          Upper bound of worker threads for requests; 0 handles requests on the queue thread
          [default: 0]

      --xattr
          Support extended attributes

      --posix-acl
          Support POSIX ACLs; implies --xattr (not supported yet)

      --xattrmap <XATTRMAP>
          Rules that rename extended attributes between guest and host, e.g. :map::user.virtiofs.:
          (not supported yet)

      --sandbox <SANDBOX>
          How to isolate the daemon: namespace (new mount, PID and network namespaces, plus a
          user namespace when not root, with the shared directory as root), chroot (root only)
          or none
          [default: namespace]

      --readonly
          Refuse every guest request that would modify the shared directory

      --seccomp <SECCOMP>
          What seccomp does on a forbidden system call: none, kill, log or trap
          [default: kill]

      --announce-submounts
          Report mount points inside the shared directory to the guest [default]

      --no-announce-submounts
          Do not report mount points inside the shared directory

      --inode-file-handles=<INODE_FILE_HANDLES>
          Reference inodes by file handle instead of O_PATH descriptors: never, prefer
          (alias: fallback) or mandatory. Handles keep the number of open descriptors bounded
          however many inodes the guest has looked up; they need CAP_DAC_READ_SEARCH
          [default: never]

      --cache <CACHE>
          Guest caching policy: auto, always, never or metadata
          [default: auto]

      --allow-mmap
          Let the guest mmap shared files even with --cache=never or --cache=metadata; only safe
          when nothing else modifies the shared directory

      --no-readdirplus
          Turn off READDIRPLUS

      --writeback
          Turn on the guest writeback cache

      --allow-direct-io
          Honour O_DIRECT requested by guest applications

      --print-capabilities
          Print the vhost-user.json capabilities of this backend and exit

      --modcaps <MODCAPS>
          Add or drop capabilities, e.g. --modcaps=+sys_admin:-chown

      --log-level <LOG_LEVEL>
          Most detailed messages to print: error, warn, info, debug, trace or off
          [default: info]

      --syslog
          Send log messages to syslog instead of stderr (not supported yet)

      --rlimit-nofile <RLIMIT_NOFILE>
          Open file limit to set at start; 0 keeps the current limit
          [default: min(1000000, /proc/sys/fs/nr_open)]

  -o <COMPAT_OPTIONS>
          Comma-separated options in the syntax of the old C daemon, e.g. -o source=DIR,cache=none
          [deprecated]

  -d
          Same as --log-level=debug [deprecated]

      --no-killpriv-v2
          Do not offer FUSE KILLPRIV_V2 [default]

      --killpriv-v2
          Offer FUSE KILLPRIV_V2: the guest asks to clear setuid/setgid on write, truncate and chown

  -f
          Accepted for compatibility; does nothing [deprecated]

      --security-label
          Store the security label the guest sends at file creation; implies --xattr
          (not supported yet)

      --uid-map <UID_MAP>
          User namespace UID range :inside:outside:count:, repeatable; needs newuidmap when not
          root

      --gid-map <GID_MAP>
          User namespace GID range :inside:outside:count:, repeatable; needs newgidmap when not
          root

      --translate-uid <TRANSLATE_UID>
          UID translation done by the daemon, <type>:<source>:<target>:<count> with type guest,
          host, squash-guest, squash-host or map, or forbid-guest:<base>:<count>; repeatable
          (not supported yet)

      --translate-gid <TRANSLATE_GID>
          Like --translate-uid, for GIDs (not supported yet)

      --preserve-noatime
          Keep O_NOATIME on opens instead of dropping it

      --migration-mode <MIGRATION_MODE>
          How to transfer state on migration: find-paths or file-handles (not supported yet)

      --migration-on-error <MIGRATION_ON_ERROR>
          What to do with inodes that fail to migrate: abort or guest-error (not supported yet)

      --migration-verify-handles
          Check with file handles that migrated inodes are the same (not supported yet)

      --migration-confirm-paths
          Re-check migrated paths at switch-over (not supported yet)

  -h, --help
          Print this help and exit

  -V, --version
          Print the version and exit
`;
