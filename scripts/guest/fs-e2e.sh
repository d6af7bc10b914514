#!/bin/sh
# Guest-side file system end-to-end test (busybox sh), run from the virtio-fs mount point.
# Every line it prints is "name: value" and deterministic (no inode numbers, varying times or random
# data), so the transcripts of two daemons can be compared line by line. Checks whose expected value
# is known here also print "MISMATCH name: expected ..." and make the exit status non-zero.
# The host puts fixture.txt in the share beforehand and verifies the host side afterwards.
set -u
umask 022
fails=0

say() { echo "$1: $2"; }
# expect NAME ACTUAL EXPECTED
expect() {
  say "$1" "$2"
  if [ "$2" != "$3" ]; then echo "MISMATCH $1: expected $3"; fails=$((fails + 1)); fi
}
# The errno text of a failed command, e.g. "No such file or directory"; "ok" if it succeeded.
err() {
  if out=$("$@" 2>&1); then echo ok; else echo "${out##*: }"; fi
}
exists() { if [ -e "$1" ] || [ -L "$1" ]; then echo yes; else echo no; fi; }
oneline() { tr '\n' '|' < "$1"; }
# Reads must reach the daemon, not the guest page cache.
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# --- host-created fixture ----------------------------------------------------------------------
expect fixture-read "$(oneline fixture.txt)" "hello from the host|second line|"
expect fixture-sha256 "$(sha256sum < fixture.txt | cut -d' ' -f1)" "$(printf 'hello from the host\nsecond line\n' | sha256sum | cut -d' ' -f1)"

# --- create, write, read, append, truncate -----------------------------------------------------
: > a.txt
expect create "$(stat -c '%F %s %a' a.txt)" "regular empty file 0 644"
printf 'hello\n' > a.txt
expect write "$(oneline a.txt)" "hello|"
printf 'world\n' >> a.txt
dropcaches
expect append "$(oneline a.txt)" "hello|world|"
expect append-size "$(stat -c %s a.txt)" 12
truncate -s 3 a.txt
expect truncate-shrink "$(stat -c %s a.txt) $(cat a.txt)" "3 hel"
truncate -s 8 a.txt
dropcaches
expect truncate-grow "$(stat -c %s a.txt) $(od -An -tx1 a.txt | tr -s ' ' | sed 's/^ //')" "8 68 65 6c 00 00 00 00 00"
printf 'XY' | dd of=a.txt bs=1 seek=6 conv=notrunc 2>/dev/null
expect pwrite "$(od -An -c a.txt | tr -s ' ' | sed 's/^ //')" 'h e l \0 \0 \0 X Y'

# --- rename ------------------------------------------------------------------------------------
mv a.txt b.txt
expect rename-same-dir "$(exists a.txt) $(exists b.txt) $(stat -c %s b.txt)" "no yes 8"
mkdir d1 d2
mv b.txt d1/b.txt
mv d1/b.txt d2/c.txt
expect rename-across-dirs "$(exists d1/b.txt) $(exists d2/c.txt) $(stat -c %s d2/c.txt)" "no yes 8"
echo old > d2/old.txt
echo new > d2/new.txt
mv d2/new.txt d2/old.txt
expect rename-over-existing "$(exists d2/new.txt) $(cat d2/old.txt)" "no new"
mv d2 d3
expect rename-dir "$(exists d2) $(cat d3/old.txt)" "no new"

# --- hard links --------------------------------------------------------------------------------
echo linked > h1
ln h1 h2
expect hardlink-nlink "$(stat -c %h h1) $(stat -c %h h2) $(cat h2)" "2 2 linked"
ln h2 h3
rm h1
expect hardlink-after-unlink "$(exists h1) $(stat -c %h h2) $(cat h3)" "no 2 linked"
expect hardlink-of-dir "$(err ln d3 d3link)" "Operation not permitted"

# --- symlinks ----------------------------------------------------------------------------------
ln -s d3/old.txt sl
expect symlink "$(stat -c %F sl) $(readlink sl) $(cat sl)" "symbolic link d3/old.txt new"
ln -s does/not/exist dangling
expect symlink-dangling "$(readlink dangling) $(exists dangling) $(err cat dangling)" "does/not/exist yes No such file or directory"
expect readlink-regular "$(readlink d3/old.txt >/dev/null 2>&1 && echo succeeds || echo fails)" "fails"

# --- directories -------------------------------------------------------------------------------
mkdir emptydir
expect mkdir "$(stat -c '%F %a' emptydir)" "directory 755"
rmdir emptydir
expect rmdir "$(exists emptydir)" "no"
mkdir nonempty
: > nonempty/f
expect rmdir-nonempty "$(err rmdir nonempty)" "Directory not empty"
expect mkdir-existing "$(err mkdir nonempty)" "File exists"
expect rmdir-file "$(err rmdir nonempty/f)" "Not a directory"
expect unlink-dir "$(err unlink nonempty)" "Is a directory"
mkdir -p deep/a/b/c
echo leaf > deep/a/b/c/leaf
expect nested "$(cat deep/a/b/c/leaf)" "leaf"

# --- unlink and ENOENT -------------------------------------------------------------------------
: > u
rm u
expect unlink "$(exists u)" "no"
expect enoent-cat "$(err cat missing.txt)" "No such file or directory"
expect enoent-stat "$(err stat missing.txt)" "No such file or directory"
expect enoent-rm "$(err rm missing.txt)" "No such file or directory"
expect enoent-parent "$(err touch nodir/x)" "No such file or directory"
expect eisdir-write "$(err sh -c 'echo x > d3')" "Is a directory"

# --- attributes --------------------------------------------------------------------------------
echo mode > m
chmod 0751 m
expect chmod "$(stat -c %a m)" 751
mkdir md
chmod 0700 md
expect chmod-dir "$(stat -c %a md)" 700
echo own > o
chown 1234:5678 o
expect chown "$(stat -c %u:%g o)" "1234:5678"
chown 4321 o
expect chown-uid-only "$(stat -c %u:%g o)" "4321:5678"
echo time > t
touch -d '2001-02-03 04:05:06' t
expect utimes "$(stat -c '%X %Y' t)" "981173106 981173106"
touch -m -d '2010-01-01 00:00:00' t
expect utimes-mtime-only "$(stat -c '%X %Y' t)" "981173106 1262304000"
mkfifo fifo
expect mkfifo "$(stat -c '%F %a' fifo)" "fifo 644"

# --- statfs ------------------------------------------------------------------------------------
expect statfs-type "$(stat -f -c %t .)" 65735546
expect statfs-namelen "$(stat -f -c %l .)" 255
if [ "$(stat -f -c %b .)" -gt 0 ]; then say statfs-blocks positive; else say statfs-blocks zero; fails=$((fails + 1)); fi

# --- readdir of 1000 entries -------------------------------------------------------------------
mkdir many
i=1
while [ $i -le 1000 ]; do : > many/entry-$i; i=$((i + 1)); done
dropcaches
expect readdir-count "$(ls many | wc -l)" 1000
expect readdir-count-all "$(ls -a many | wc -l)" 1002
expect readdir-names-sha256 "$(ls many | LC_ALL=C sort | sha256sum | cut -d' ' -f1)" \
  "$(seq 1 1000 | sed 's/^/entry-/' | LC_ALL=C sort | sha256sum | cut -d' ' -f1)"
seq 1 500 | sed "s:^:many/entry-:" | xargs rm
expect readdir-after-unlink "$(ls many | wc -l)" 500

# --- 8 MiB of deterministic data ---------------------------------------------------------------
# One 65,472-byte seed (1023 lines of 63 hex digits from a small LCG the host repeats), then 128
# blocks of "block NNN" padded to 64 bytes plus the seed: exactly 8 MiB.
awk 'BEGIN { x = 12345; h = "0123456789abcdef"
  for (l = 0; l < 1023; l++) { s = ""
    for (i = 0; i < 63; i++) { x = (x * 75 + 74) % 65537; s = s substr(h, x % 16 + 1, 1) }
    print s } }' > /tmp/seed
b=0
while [ $b -lt 128 ]; do printf 'block %03d%54s\n' $b ''; cat /tmp/seed; b=$((b + 1)); done > big.bin
sync
say big-write-sha256 "$(sha256sum < big.bin | cut -d' ' -f1)"
dropcaches
expect big-size "$(stat -c %s big.bin)" 8388608
say big-read-sha256 "$(dd if=big.bin bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
expect big-block-77 "$(dd if=big.bin bs=65536 skip=77 count=1 2>/dev/null | head -c 9)" "block 077"
cp big.bin big-copy.bin
dropcaches
expect big-copy "$(cmp big.bin big-copy.bin >/dev/null 2>&1 && echo same || echo differ)" same
rm big-copy.bin

# --- final listing (names, types, modes, sizes, links, owners; no inode numbers or times) ------
for f in $(find . | LC_ALL=C sort | grep -v '^./many/'); do
  case $(stat -c %F "$f") in directory) stat -c 'list: %n %F %a %h %u:%g' "$f" ;; *) stat -c 'list: %n %F %a %s %h %u:%g' "$f" ;; esac
done

say failures $fails
[ $fails -eq 0 ]
