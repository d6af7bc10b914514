#!/usr/bin/env bash
# Installs the linker toolchain of the native build, reusing what is already there:
#   - zig (the `ziglang` wheel from PyPI, unpacked with pip --target, no Python environment touched)
#   - cargo-zigbuild (cargo install --locked, from crates.io)
# Zig links against the glibc 2.28 symbol set (and against musl), so a gnu build runs on any
# distribution with glibc 2.28 or newer, whatever the build host has.
# Both land in ${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/toolchain/<name>-<version>; the last
# line printed is the PATH entries to prepend (zig's folder, then cargo-zigbuild's), colon-separated.
set -euo pipefail
ZIG_VERSION=0.13.0
ZIGBUILD_VERSION=0.24.1
cache=${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/toolchain
mkdir -p "$cache"
log() { echo "toolchain: $*" >&2; }
die() { echo "toolchain: error: $*" >&2; exit 1; }

# Installs into a fresh folder and renames it into place, so an interrupted or concurrent run
# never leaves a half-installed tool where the next run would take it as complete.
publish() {
  local tmp=$1 dest=$2
  if [[ -e $dest ]]; then rm -rf "$tmp"; else mv "$tmp" "$dest"; fi
}

zigdir=$cache/zig-$ZIG_VERSION
if [[ ! -x $zigdir/ziglang/zig ]]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null \
      || die "zig comes from PyPI with pip, and python3 -m pip is missing: install python3-pip"
    log "installing python3-pip"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends python3-pip >&2 \
      || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends python3-pip >&2; } \
      || die "apt-get install python3-pip failed"
  fi
  log "installing zig $ZIG_VERSION (ziglang wheel, about 80 MB)"
  tmp=$(mktemp -d "$cache/.zig.XXXXXX")
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --no-compile --target "$tmp" \
    "ziglang==$ZIG_VERSION" >&2 || { rm -rf "$tmp"; die "pip install ziglang==$ZIG_VERSION failed"; }
  [[ $("$tmp/ziglang/zig" version) == "$ZIG_VERSION" ]] || { rm -rf "$tmp"; die "the ziglang wheel has no working zig $ZIG_VERSION"; }
  publish "$tmp" "$zigdir"
fi

czbdir=$cache/cargo-zigbuild-$ZIGBUILD_VERSION
if [[ ! -x $czbdir/bin/cargo-zigbuild ]]; then
  command -v cargo >/dev/null || die "cargo is not on PATH"
  log "installing cargo-zigbuild $ZIGBUILD_VERSION (cargo install, about two minutes)"
  tmp=$(mktemp -d "$cache/.cargo-zigbuild.XXXXXX")
  # A private target dir: the install must not touch, nor be slowed by, the project's target/.
  CARGO_TARGET_DIR=$tmp/build cargo install --quiet --locked --root "$tmp" "cargo-zigbuild@$ZIGBUILD_VERSION" >&2 \
    || { rm -rf "$tmp"; die "cargo install cargo-zigbuild@$ZIGBUILD_VERSION failed"; }
  rm -rf "$tmp/build"
  publish "$tmp" "$czbdir"
fi

echo "$zigdir/ziglang:$czbdir/bin"
