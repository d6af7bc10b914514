#!/bin/sh
# Guest side of --readonly (busybox sh): reads succeed, every kind of change fails with EROFS.
# Prints deterministic "name: value" lines; known values are checked ("MISMATCH ...", exit 1).
set -u
fails=0
say() { echo "$1: $2"; }
expect() {
  say "$1" "$2"
  if [ "$2" != "$3" ]; then echo "MISMATCH $1: expected $3"; fails=$((fails + 1)); fi
}
# The errno text of a failed command; "ok" if it succeeded.
err() {
  if out=$("$@" 2>&1); then echo ok; else echo "${out##*: }"; fi
}
exists() { if [ -e "$1" ] || [ -L "$1" ]; then echo yes; else echo no; fi; }
rofs="Read-only file system"

expect read "$(tr '\n' '|' < fixture.txt)" "hello from the host|second line|"
expect read-sub "$(cat sub/inner.txt)" "inner"
expect readdir "$(ls -a | tr '\n' ' ')" ". .. fixture.txt sub "
expect stat "$(stat -c '%F %a %s' fixture.txt)" "regular file 644 32"
expect create "$(err touch new.txt)" "$rofs"
expect create-redirect "$(err sh -c ': > new2.txt')" "$rofs"
expect mkdir "$(err mkdir newdir)" "$rofs"
expect write-existing "$(err sh -c 'echo more >> fixture.txt')" "$rofs"
expect truncate-existing "$(err sh -c ': > fixture.txt')" "$rofs"
expect truncate-size "$(err truncate -s 0 fixture.txt)" "$rofs"
expect rm "$(err rm fixture.txt)" "$rofs"
expect rmdir "$(err rmdir sub/empty)" "$rofs"
expect chmod "$(err chmod 600 fixture.txt)" "$rofs"
expect chown "$(err chown 1:1 fixture.txt)" "$rofs"
expect touch-existing "$(err touch fixture.txt)" "$rofs"
expect mv "$(err mv fixture.txt moved.txt)" "$rofs"
expect symlink "$(err ln -s fixture.txt link)" "$rofs"
expect hardlink "$(err ln fixture.txt hard)" "$rofs"
expect mkfifo "$(err mkfifo fifo)" "$rofs"
expect gone "$(exists new.txt) $(exists new2.txt) $(exists newdir) $(exists moved.txt) $(exists link) $(exists hard) $(exists fifo)" "no no no no no no no"
expect read-after "$(tr '\n' '|' < fixture.txt) $(stat -c '%a %s' fixture.txt)" "hello from the host|second line| 644 32"
say failures $fails
[ $fails -eq 0 ]
