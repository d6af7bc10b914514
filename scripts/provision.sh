#!/usr/bin/env bash
# Provisions everything the guest end-to-end tests need, reusing what is already there:
#   - system packages: qemu-system-x86 (QEMU), busybox-static, cpio, zstd, uidmap, groff-base, man-db,
#     systemd (installed with apt; root only)
#   - the reference daemon (scripts/reference-virtiofsd.sh)
#   - QEMU 10 (Debian 13's, in a private root: scripts/qemu10.sh), for the live-migration tests: the
#     system QEMU of Debian 12 (7.2) cannot migrate a vhost-user-fs device
#   - a guest kernel: Debian 13's 6.12 kernel, which has virtio-pci, FUSE and virtio-fs built in, so the
#     initramfs needs no modules. QEMU boots its uncompressed vmlinux through PVH, much faster under TCG
#     than decompressing a bzImage.
#   - the base busybox initramfs (scripts/guest/init as /init)
# Downloads and artifacts are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/.
# The last line printed is JSON: {"qemu":...,"vmlinux":...,"initramfs":...,"reference":...,"qemuMigration":...}.
# Everything else goes to stderr, so callers can parse stdout's last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node
mkdir -p "$cache"
log() { echo "provision: $*" >&2; }
die() { echo "provision: error: $*" >&2; exit 1; }

# --- system packages -----------------------------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
# The static build matters: the initramfs holds no shared libraries.
[[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) == 'install ok installed' && -x /bin/busybox ]] \
  || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v zstd >/dev/null || missing+=(zstd)
# newuidmap/newgidmap: an unprivileged daemon maps --uid-map/--gid-map ranges with them.
command -v newuidmap >/dev/null || missing+=(uidmap)
# The man page test renders virtiofsd.1 with groff and man.
command -v groff >/dev/null || missing+=(groff-base)
command -v man >/dev/null || missing+=(man-db)
# The socket-activation test starts daemons the way a systemd .socket unit does.
command -v systemd-socket-activate >/dev/null || missing+=(systemd)
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "must run as root to install: ${missing[*]} (or install them yourself: apt-get install ${missing[*]})"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; } \
    || die "apt-get install ${missing[*]} failed"
fi
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found after installation"

# --- reference daemon ----------------------------------------------------------------------------
refdir=$cache/reference
reference=$(bash "$here/reference-virtiofsd.sh" "$refdir" | tail -n1)
[[ -x $reference ]] || die "reference daemon installation failed"

# --- QEMU able to migrate vhost-user-fs -----------------------------------------------------------
qemu_migration=$(bash "$here/qemu10.sh" "$cache/qemu10" | tail -n1)
[[ -x $qemu_migration ]] || die "QEMU 10 installation failed"

# --- guest kernel --------------------------------------------------------------------------------
vmlinux=$cache/kernel/vmlinux
if [[ ! -s $vmlinux ]]; then
  # The reference step left a private apt state for Debian 13 (trixie); reuse it, never the system's.
  apt_opts=(-o Dir::Etc::sourcelist="$refdir/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
            -o Dir::State::Lists="$refdir/apt/lists" -o Dir::Cache="$refdir/apt/cache" -o APT::Sandbox::User=root)
  [[ -s $refdir/apt/sources.list ]] || die "private apt state missing in $refdir/apt"
  pkg() { apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null \
            | grep -oE 'linux-image-6\.12\.[^ ]*-amd64(-unsigned)?$' | head -n1; }
  image=$(pkg || true)
  if [[ -z $image ]]; then
    apt-get "${apt_opts[@]}" -qq update >&2
    image=$(pkg || true)
  fi
  [[ -n $image ]] || die "cannot resolve the linux-image-6.12.*-amd64 package from linux-image-amd64 (trixie)"
  log "downloading guest kernel $image"
  work=$cache/kernel/work
  rm -rf "$work" && mkdir -p "$work/root"
  (cd "$work" && apt-get "${apt_opts[@]}" -qq download "$image" >&2) || die "apt-get download $image failed"
  dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work/root" --wildcards './boot/vmlinuz-*' \
    || die "no /boot/vmlinuz-* in $image"
  bz=$(ls "$work"/root/boot/vmlinuz-* | head -n1)
  # The bzImage embeds the kernel as a zstd stream; the first one that decompresses to an ELF is it.
  found=
  for off in $(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$bz" | cut -d: -f1); do
    tail -c +$((off + 1)) "$bz" | zstd -dcq 2>/dev/null > "$work/vmlinux" || true
    if [[ $(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then found=1; break; fi
  done
  [[ -n $found ]] || die "no zstd-compressed ELF kernel found in $bz"
  mv "$work/vmlinux" "$vmlinux.tmp" && mv "$vmlinux.tmp" "$vmlinux"
  echo "$image" > "$cache/kernel/package"
  rm -rf "$work"
fi

# --- base initramfs ------------------------------------------------------------------------------
initramfs=$cache/initramfs.cpio
stamp=$(cat "$here/guest/init" /bin/busybox | sha256sum | cut -c1-16)
if [[ ! -s $initramfs || $(cat "$initramfs.stamp" 2>/dev/null) != "$stamp" ]]; then
  log "building base initramfs"
  stage=$(mktemp -d "$cache/initramfs.XXXXXX")
  mkdir -p "$stage"/{bin,sbin,dev,proc,sys,mnt,tmp,test,etc,root}
  cp /bin/busybox "$stage/bin/busybox"
  cp "$here/guest/init" "$stage/init"
  chmod 755 "$stage/init" "$stage/bin/busybox"
  # Without /dev/console the kernel starts init with no stdio at all.
  mknod -m 600 "$stage/dev/console" c 5 1
  mknod -m 666 "$stage/dev/null" c 1 3
  (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) > "$initramfs.tmp"
  rm -rf "$stage"
  mv "$initramfs.tmp" "$initramfs"
  echo "$stamp" > "$initramfs.stamp"
fi

printf '{"qemu":"%s","vmlinux":"%s","initramfs":"%s","reference":"%s","qemuMigration":"%s"}\n' \
  "$qemu" "$vmlinux" "$initramfs" "$reference" "$qemu_migration"
