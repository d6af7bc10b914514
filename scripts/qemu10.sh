#!/usr/bin/env bash
# Installs QEMU 10 (Debian 13's qemu-system-x86) into a private root file system, without touching
# the system's packages, and writes an executable wrapper DIR/qemu-system-x86_64 that runs it through
# that root's own dynamic loader and libraries, with its firmware and modules (no chroot at run time).
# The system QEMU of Debian 12 (7.2) cannot migrate a vhost-user-fs device; QEMU 10 can, and the
# migration tests and benchmarks use this one.
#
#   scripts/qemu10.sh [DIR]    (default DIR: ${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/qemu10)
#
# Needs root the first time (debootstrap, chroot). About 340 MB. Prints the wrapper's path on its last
# line; everything else goes to stderr. Safe to run again: it reuses a working installation at once.
set -euo pipefail
dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/qemu10}
wrapper=$dir/qemu-system-x86_64
log() { echo "qemu10: $*" >&2; }
die() { echo "qemu10: error: $*" >&2; exit 1; }
works() { [[ -x $wrapper ]] && "$wrapper" --version 2>/dev/null | grep -qE 'version (1[0-9]|[2-9][0-9])\.'; }
if works; then echo "$wrapper"; exit 0; fi

[[ $(id -u) -eq 0 ]] || die "must run as root the first time (debootstrap and chroot)"
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get install -y -qq --no-install-recommends debootstrap >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends debootstrap >&2; } \
    || die "apt-get install debootstrap failed"
fi
# Reuse the mirror that this machine's apt already uses; only the suite differs.
uri=$( (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
      | grep -oE '^(URIs:|deb) *[a-z]+://[^ ]+' | grep -v security | head -n1 | awk '{print $2}')
[[ -n $uri ]] || die "no Debian mirror found in the apt configuration"

mkdir -p "$dir"
root=$dir/root
stage=$dir/root.tmp
rm -rf "$stage"
log "debootstrap trixie (minbase) from $uri"
debootstrap --variant=minbase trixie "$stage" "$uri" >&2 || die "debootstrap failed (see $stage/debootstrap/debootstrap.log)"
log "installing qemu-system-x86 into the private root"
chroot "$stage" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2 \
  || die "apt-get install qemu-system-x86 in the private root failed"
chroot "$stage" apt-get clean >&2 || true
[[ -x $stage/usr/bin/qemu-system-x86_64 ]] || die "no usr/bin/qemu-system-x86_64 in the private root"
rm -rf "$root"
mv "$stage" "$root"

# Firmware: QEMU's own folder and the ones its files link to (absolute links would point at the
# host's copies, so every firmware folder is named explicitly).
fw=()
for d in "$root"/usr/share/qemu "$root"/usr/share/seabios "$root"/usr/share/ipxe/qemu "$root"/usr/lib/ipxe/qemu; do
  [[ -d $d ]] && fw+=(-L "$d")
done
libs=$root/usr/lib/x86_64-linux-gnu
cat > "$wrapper.tmp" <<WRAP
#!/bin/sh
QEMU_MODULE_DIR="$libs/qemu" exec "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$libs:$libs/pulseaudio:$root/usr/lib" "$root/usr/bin/qemu-system-x86_64" ${fw[*]} "\$@"
WRAP
chmod +x "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"
works || die "the installed QEMU does not run: $("$wrapper" --version 2>&1 | tail -n3)"
"$wrapper" --version | head -n1 >&2
echo "$wrapper"
