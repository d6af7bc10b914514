#!/bin/sh
# Release smoke test, run on the platform itself (for musl: in an Alpine container): installs the
# packed root package and the platform package from DIR, offline, then checks that
#   - the root package holds no native code and the platform package an executable device program;
#   - `virtiofsd --help` works through the installed command;
#   - the device executable loads here (dynamic loader, libc): a bad argument is a usage error;
#   - the command starts a device that listens, runs the installed executable and stops cleanly on
#     SIGTERM, removing its socket.
# Usage: smoke-package.sh DIR PLATFORM   (DIR holds virtiofsd-<v>.tgz and
# virtiofsd-binding-<PLATFORM>-<v>.tgz; PLATFORM is e.g. linux-x64-musl). Needs root: the device's
# default sandbox. POSIX sh, so it runs under busybox too.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 DIR PLATFORM" >&2; exit 2; }
pkgs=$(cd "$1" && pwd)
platform=$2
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
step() { echo "smoke: $*" >&2; }

set -- "$pkgs"/virtiofsd-[0-9]*.tgz
[ -f "$1" ] || fail "no root package tarball in $pkgs"
root_tgz=$1
set -- "$pkgs"/virtiofsd-binding-"$platform"-[0-9]*.tgz
[ -f "$1" ] || fail "no $platform package tarball in $pkgs"
platform_tgz=$1

work=$(mktemp -d)
pid=
cleanup() { [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
echo '{ "name": "smoke", "version": "1.0.0", "private": true }' > package.json
step "npm install $(basename "$root_tgz") $(basename "$platform_tgz")"
# The other platforms' optional dependencies cannot be fetched offline; npm skips them.
npm install --offline --no-audit --no-fund --no-package-lock "$root_tgz" "$platform_tgz" >&2

bin=$work/node_modules/.bin/virtiofsd
exe=$work/node_modules/@virtiofsd/binding-$platform/virtiofsd
native=$(find node_modules/virtiofsd -type f \( -name '*.node' -o -name virtiofsd \))
[ -z "$native" ] || fail "native code in the root package: $native"
[ -x "$exe" ] || fail "$exe is missing or not executable"

step "virtiofsd --help"
"$bin" --help | grep -q '^Usage: virtiofsd ' || fail "virtiofsd --help printed no usage"

step "device executable with a bad argument"
status=0
out=$("$exe" --bogus 2>&1) || status=$?
[ "$status" -eq 2 ] || fail "the device executable exited $status on a bad argument, expected 2: $out"
echo "$out" | grep -q "unexpected argument '--bogus'" || fail "unexpected output: $out"

step "a device serving a folder"
mkdir share
"$bin" --socket-path="$work/vfsd.sock" --shared-dir="$work/share" &
pid=$!
tries=0
until [ -S "$work/vfsd.sock" ]; do
  kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; pid=; fail "the device exited before listening"; }
  tries=$((tries + 1))
  [ "$tries" -le 300 ] || fail "no socket after 30 s"
  sleep 0.1
done
[ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$exe")" ] \
  || fail "the device runs $(readlink "/proc/$pid/exe"), not the installed executable"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "the device exited $status on SIGTERM, expected 0"
[ ! -e "$work/vfsd.sock" ] || fail "the device left its socket behind"
step "ok ($platform)"
