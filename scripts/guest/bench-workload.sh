#!/bin/sh
# Guest-side benchmark workload (busybox sh), run from the virtio-fs mount point by
# scripts/bench-guest.mts against each daemon in turn. Prints one "PHASE <name> <microseconds>" line
# per phase and "PHASE total <microseconds>"; any failure prints "BENCH-ERROR ..." and exits non-zero,
# because timings of a workload that did not complete mean nothing.
#
# Inputs (set by the orchestrator before this file's text):
#   TREE_TAR   tarball of the file tree, in the guest's RAM (so only the unpack touches the share)
#   TREE_FILES number of regular files the tree holds (checked after unpacking)
#   BIG_MIB    size of the sequential file in MiB
#   RAND_OPS   number of random 4 KiB reads, and again of writes
set -u
: "${TREE_TAR:?}" "${TREE_FILES:?}" "${BIG_MIB:?}" "${RAND_OPS:?}"

fail() { echo "BENCH-ERROR $*"; exit 1; }
# busybox date has no %N; adjtimex reports the clock in microseconds.
now_us() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%.0f\n", s * 1000000 + u }'; }
# Reads must reach the daemon, not the guest page cache.
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

phase_start=0
begin() { phase_start=$(now_us); }
finish() { echo "PHASE $1 $(($(now_us) - phase_start))"; }

[ "$(now_us)" -gt 0 ] 2>/dev/null || fail "no microsecond clock (adjtimex)"
# One offset list for both reads and writes, the same for every run and daemon (fixed seed).
blocks=$((BIG_MIB * 256))
awk -v n="$RAND_OPS" -v max="$blocks" 'BEGIN { srand(42); for (i = 0; i < n; i++) print int(rand() * max) }' > /tmp/offsets
[ "$(wc -l < /tmp/offsets)" -eq "$RAND_OPS" ] || fail "offset list"

total_start=$(now_us)

# --- metadata: unpack, walk, search, delete a file tree -------------------------------------------
dropcaches
begin
tar -xf "$TREE_TAR" || fail "tar -xf"
sync
finish untar
[ "$(find tree -type f | wc -l)" -eq "$TREE_FILES" ] || fail "unpacked tree has the wrong file count"

dropcaches
begin
n=$(find tree | wc -l)
finish find
[ "$n" -gt "$TREE_FILES" ] || fail "find saw $n entries"

dropcaches
begin
n=$(grep -r -l needle tree | wc -l)
finish grep
[ "$n" -gt 0 ] || fail "grep -r found nothing"

dropcaches
begin
rm -rf tree || fail "rm -rf"
finish rm
[ ! -e tree ] || fail "tree still exists after rm -rf"

# --- data: sequential write and read, then random 4 KiB reads and writes -------------------------
dropcaches
begin
dd if=/dev/zero of=big.bin bs=1M count="$BIG_MIB" conv=fsync 2>/dev/null || fail "dd write"
finish seqwrite
[ "$(stat -c %s big.bin)" -eq $((BIG_MIB * 1048576)) ] || fail "big.bin has the wrong size"

dropcaches
begin
dd if=big.bin of=/dev/null bs=1M 2>/dev/null || fail "dd read"
finish seqread

dropcaches
begin
while read -r off; do
  dd if=big.bin of=/dev/null bs=4k count=1 skip="$off" 2>/dev/null || fail "random read at block $off"
done < /tmp/offsets
finish randread

dropcaches
begin
while read -r off; do
  dd if=/dev/zero of=big.bin bs=4k count=1 seek="$off" conv=notrunc 2>/dev/null || fail "random write at block $off"
done < /tmp/offsets
sync
finish randwrite

rm -f big.bin || fail "rm big.bin"
echo "PHASE total $(($(now_us) - total_start))"
