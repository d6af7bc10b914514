#!/bin/sh
# Short guest workload (busybox sh) run once per cache/readdir/writeback/thread-pool option: create,
# write, read, append, rename, readdir of 200 entries, a 4 MiB checksum, truncate. Every line is
# "name: value" and deterministic so two daemons' transcripts compare; known values are checked here
# too ("MISMATCH ...", non-zero exit). With /test/live present the host edits live.txt while we run.
set -u
umask 022
fails=0
say() { echo "$1: $2"; }
expect() {
  say "$1" "$2"
  if [ "$2" != "$3" ]; then echo "MISMATCH $1: expected $3"; fails=$((fails + 1)); fi
}
exists() { if [ -e "$1" ]; then echo yes; else echo no; fi; }
oneline() { tr '\n' '|' < "$1"; }
# Reads must reach the daemon, not the guest page cache.
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

expect fixture-read "$(oneline fixture.txt)" "hello from the host|second line|"

: > w.txt
expect create "$(stat -c '%F %s %a' w.txt)" "regular empty file 0 644"
printf 'alpha\n' > w.txt
expect write "$(oneline w.txt)" "alpha|"
printf 'beta\n' >> w.txt
dropcaches
expect append "$(oneline w.txt) $(stat -c %s w.txt)" "alpha|beta| 11"
mkdir dir
mv w.txt dir/renamed.txt
expect rename "$(exists w.txt) $(oneline dir/renamed.txt)" "no alpha|beta|"
printf 'gamma\n' >> dir/renamed.txt
truncate -s 8 dir/renamed.txt
dropcaches
expect truncate "$(stat -c %s dir/renamed.txt) $(od -An -c dir/renamed.txt | tr -s ' ' | sed 's/^ //')" '8 a l p h a \n b e'

mkdir many
i=1
while [ $i -le 200 ]; do : > many/e-$i; i=$((i + 1)); done
dropcaches
expect readdir-count "$(ls many | wc -l) $(ls -a many | wc -l)" "200 202"
expect readdir-names "$(ls many | LC_ALL=C sort | sha256sum | cut -d' ' -f1)" \
  "$(seq 1 200 | sed 's/^/e-/' | LC_ALL=C sort | sha256sum | cut -d' ' -f1)"
expect readdir-stat "$(ls -l many | grep -c '^-rw-r--r--')" 200
seq 1 100 | sed 's:^:many/e-:' | xargs rm
expect readdir-after-unlink "$(ls many | wc -l)" 100

# 4 MiB: 64 blocks of a "block NNN" line plus a 65,472-byte LCG seed the host can repeat.
awk 'BEGIN { x = 12345; h = "0123456789abcdef"
  for (l = 0; l < 1023; l++) { s = ""
    for (i = 0; i < 63; i++) { x = (x * 75 + 74) % 65537; s = s substr(h, x % 16 + 1, 1) }
    print s } }' > /tmp/seed
b=0
while [ $b -lt 64 ]; do printf 'block %03d%54s\n' $b ''; cat /tmp/seed; b=$((b + 1)); done > big.bin
sync
say big-write-sha256 "$(sha256sum < big.bin | cut -d' ' -f1)"
dropcaches
expect big-size "$(stat -c %s big.bin)" 4194304
say big-read-sha256 "$(dd if=big.bin bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
expect big-block-33 "$(dd if=big.bin bs=65536 skip=33 count=1 2>/dev/null | head -c 9)" "block 033"
truncate -s 1000000 big.bin
dropcaches
say big-truncated "$(stat -c %s big.bin) $(sha256sum < big.bin | cut -d' ' -f1)"

if [ -e /test/live ]; then
  # The host rewrites live.txt once "ready" appears, then creates "done".
  expect live-before "$(cat live.txt)" "version one"
  : > ready
  n=0
  while [ ! -e done ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
  expect live-host-done "$(exists done)" yes
  expect live-after "$(cat live.txt) $(stat -c %s live.txt)" "version two, longer 20"
  rm ready done
fi

sync
for f in $(find . | LC_ALL=C sort | grep -v '^./many/'); do
  case $(stat -c %F "$f") in directory) stat -c 'list: %n %F %a %h' "$f" ;; *) stat -c 'list: %n %F %a %s %h' "$f" ;; esac
done
say failures $fails
[ $fails -eq 0 ]
