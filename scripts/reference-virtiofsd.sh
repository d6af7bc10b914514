#!/usr/bin/env bash
# Installs the reference daemon -- Debian 13's virtiofsd (1.13.x), the upstream Rust implementation --
# into a private folder, without touching the system's packages or apt configuration, and writes an
# executable wrapper DIR/virtiofsd-ref that runs it with the newer C library it needs.
#
#   scripts/reference-virtiofsd.sh [DIR]    (default DIR: ${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/reference)
#   DIR/virtiofsd-ref --socket-path=/tmp/x.sock --shared-dir=/srv/share
#
# The guest end-to-end tests use it as the oracle of the differential tests, and benchmarks as the
# side-by-side baseline. Prints the wrapper's path on its last line. Safe to run again (it reuses what
# it already has).
set -euo pipefail
dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/virtiofsd-node/reference}
wrapper=$dir/virtiofsd-ref
if [[ -x $wrapper ]] && "$wrapper" --version >/dev/null 2>&1; then echo "$wrapper"; exit 0; fi
mkdir -p "$dir"/apt/lists/partial "$dir"/apt/cache/archives/partial "$dir"/debs "$dir"/root
# Reuse the mirror that this machine's apt already uses; only the suite differs.
uri=$( (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
      | grep -oE '^(URIs:|deb) *[a-z]+://[^ ]+' | grep -v security | head -n1 | awk '{print $2}')
[[ -n $uri ]] || { echo "reference-virtiofsd: no Debian mirror found in the apt configuration" >&2; exit 1; }
echo "deb $uri trixie main" > "$dir/apt/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$dir/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
          -o Dir::State::Lists="$dir/apt/lists" -o Dir::Cache="$dir/apt/cache" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" -qq update
(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download virtiofsd libc6 libcap-ng0 libseccomp2 libgcc-s1)
for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
cat > "$wrapper" <<WRAP
#!/bin/sh
exec "$dir/root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$dir/root/usr/lib/x86_64-linux-gnu" "$dir/root/usr/libexec/virtiofsd" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" --version >&2
echo "$wrapper"
