#!/bin/sh
# Policy suite (busybox sh), run in the guest from the virtio-fs mount point, as root: what the
# daemon's policy options do as the guest sees them. $POLICY names the section, one per daemon
# configuration (__test__/policy.spec.ts prepends "POLICY=<section>" and gives the daemon that
# section's options; it prepares host files before the run and checks the host side after it):
#   translate      --translate-uid/--translate-gid of every type (map, squash-guest, squash-host,
#                  forbid-guest, guest, host)
#   acl            --posix-acl
#   noacl          --xattr --killpriv-v2: ACLs refused without --posix-acl; setuid/setgid cleared on
#                  writes as the guest's own tmpfs clears them
#   xattrmap       --xattr --xattrmap=<rules>
#   label          --security-label (the guest boots with SELinux enabled, no policy loaded)
#   acl-translate  --posix-acl with --translate-uid/gid: ids inside ACL values translated
# Output and helpers are those of conformance.sh: one "<case>: ok" or "<case>: FAIL got X want Y"
# line per case, then "summary: total=N passed=P failed=F"; exit status 1 if a case failed. The
# wanted values are what a local file system answers where one exists (checked by running the acl
# section on a host ext4 directory; the killpriv cases ask the guest's tmpfs at run time), and
# otherwise what upstream virtiofsd documents for the option.
set -u
umask 022
CX=${CX:-/test/cx}
POLICY=${POLICY:-}
total=0
passed=0

if [ ! -x "$CX" ]; then
  echo "policy: helper $CX missing (the runner must put the static build of conformance-helper.c there)"
  exit 2
fi

# t CASE WANT COMMAND...  -- runs COMMAND, joins its output lines with "|", compares with WANT.
t() {
  name=$1 want=$2
  shift 2
  got=$("$@" 2>&1 | tr '\n' '|')
  got=${got%|}
  [ -n "$got" ] || got="<nothing>"
  total=$((total + 1))
  if [ "$got" = "$want" ]; then
    passed=$((passed + 1))
    echo "$name: ok"
  else
    echo "$name: FAIL got $got want $want"
  fi
}
# v CASE WANT VALUE -- compares an already computed value.
v() { t "$1" "$2" echo "$3"; }

cx() { "$CX" "$@"; }
u1() { "$CX" -u 1000:1000 "$@"; }
u2() { "$CX" -u 1001:1001 "$@"; }
mode() { stat -c %a "$1"; }
# Owner without following a symlink (busybox stat does not follow unless -L).
owner() { stat -c %u:%g "$1"; }
e() { eval "$1"; }
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Each of the named paths: "ok" if it exists, else the errno name; joined by spaces.
exists() { for p in "$@"; do printf '%s ' "$(cx lstat "$p")"; done | sed 's/ $//'; }

chmod 755 / 2>/dev/null
for knob in protected_hardlinks protected_symlinks protected_regular protected_fifos; do
  echo 0 > /proc/sys/fs/$knob 2>/dev/null || echo "policy: cannot set fs.$knob" >&2
done
XDEV=${XDEV:-/tmp}

# --- translate -----------------------------------------------------------------------------------
# Daemon: map:1000:101000:100, squash-guest:3000:103000:10, squash-host:105000:5000:10,
# forbid-guest:2000:1, guest:6000:106000:10, host:107000:7000:10, each for uids and gids alike.
# Host files (prepared by the spec): tr/h<N> owned by host N:N (tr/h105003 by 105003:105007), mode
# 644; tr/h101005 and tr/h1005 mode 600 holding "h".
section_translate() {
  t tr-map-owner 1005:1005 owner tr/h101005
  t tr-map-base 1000:1000 owner tr/h101000
  t tr-map-last 1099:1099 owner tr/h101099
  t tr-map-past-end 101100:101100 owner tr/h101100
  t tr-squash-host-owner 5000:5000 owner tr/h105003
  t tr-host-owner 7002:7002 owner tr/h107002
  t tr-unmapped-owner 500:500 owner tr/h500
  # Host 1005 is outside every host range, so it shows as itself: the same guest id as host 101005.
  t tr-unmapped-alias-owner 1005:1005 owner tr/h1005
  # guest: and squash-guest: map guest ids to host ids only, not back.
  t tr-guest-type-one-way 106000:106000 owner tr/h106000
  t tr-squash-guest-one-way 103000:103000 owner tr/h103000
  t tr-map-owner-fresh 1005:1005 e 'dropcaches; owner tr/h101005'
  t tr-map-readdir-owner 1005:1005 e "ls -ln tr | awk '\$NF == \"h101005\" { print \$3 \":\" \$4 }'"
  # The guest checks permissions against the ids it sees: guest 1005 owns the 0600 file.
  t tr-map-owner-reads h cx -u 1005:1005 pread tr/h101005 0 10
  t tr-map-owner-writes ok cx -u 1005:1005 write tr/h101005 w,append x
  t tr-map-nonowner-denied EACCES cx -u 1006:1006 open tr/h101005 r
  t tr-map-chmod-by-owner ok cx -u 1005:1005 chmod tr/h101005 640
  t tr-map-chmod-mode 640 mode tr/h101005

  mkdir tr/g && chmod 1777 tr/g
  t tr-create-root ok cx open tr/g/c0 w,creat
  t tr-create-root-owner 0:0 owner tr/g/c0
  t tr-create-map ok cx -u 1000:1000 open tr/g/c1000 w,creat
  t tr-create-map-owner 1000:1000 owner tr/g/c1000
  t tr-create-map-owner-fresh 1000:1000 e 'dropcaches; owner tr/g/c1000'
  t tr-create-map-other-ids ok cx -u 1050:1060 open tr/g/c1050 w,creat
  t tr-create-map-other-ids-owner 1050:1060 owner tr/g/c1050
  t tr-mkdir-map ok cx -u 1000:1000 mkdir tr/g/d1000 755
  t tr-mkdir-map-owner 1000:1000 owner tr/g/d1000
  t tr-symlink-map ok cx -u 1000:1000 symlink c1000 tr/g/s1000
  t tr-symlink-map-owner 1000:1000 owner tr/g/s1000
  t tr-mknod-map ok cx -u 1000:1000 mknod tr/g/p1000 fifo
  t tr-mknod-map-owner 1000:1000 owner tr/g/p1000
  t tr-create-in-mapped-dir ok e 'chown 1000:1000 tr/g/d1000; cx -u 1000:1000 write tr/g/d1000/n w,creat x'
  t tr-create-in-mapped-dir-owner 1000:1000 owner tr/g/d1000/n
  # squash-guest: every guest id of the range becomes the one host id, which maps back to itself.
  t tr-create-squash ok cx -u 3005:3007 open tr/g/c3005 w,creat
  t tr-create-squash-owner 103000:103000 owner tr/g/c3005
  t tr-create-guest-type ok cx -u 6003:6004 open tr/g/c6003 w,creat
  t tr-create-guest-type-owner 106003:106004 owner tr/g/c6003
  t tr-create-unmapped ok cx -u 5000:5000 open tr/g/c5000 w,creat
  t tr-create-unmapped-owner 5000:5000 owner tr/g/c5000
  # forbid-guest: no new file may get the id, nor may an existing one be given it.
  t tr-forbid-create-uid EPERM cx -u 2000:1000 open tr/g/c2000 w,creat
  t tr-forbid-create-gid EPERM cx -u 1000:2000 open tr/g/c2000g w,creat
  t tr-forbid-mkdir EPERM cx -u 2000:2000 mkdir tr/g/d2000 755
  t tr-forbid-symlink EPERM cx -u 2000:2000 symlink x tr/g/s2000
  t tr-forbid-mknod EPERM cx -u 2000:2000 mknod tr/g/p2000 fifo
  t tr-forbid-nothing-created "ENOENT ENOENT ENOENT ENOENT ENOENT" exists tr/g/c2000 tr/g/c2000g tr/g/d2000 tr/g/s2000 tr/g/p2000
  t tr-forbid-chown-uid EPERM cx chown tr/g/c1000 2000 -1
  t tr-forbid-chown-gid EPERM cx chown tr/g/c1000 -1 2000
  t tr-forbid-chown-kept 1000:1000 e 'dropcaches; owner tr/g/c1000'
  t tr-forbid-neighbour-ok ok cx -u 2001:2001 open tr/g/c2001 w,creat
  t tr-forbid-neighbour-owner 2001:2001 owner tr/g/c2001
  : > tr/g/o1 && : > tr/g/o2 && : > tr/g/o3 && : > tr/g/o4
  t tr-chown-map ok cx chown tr/g/o1 1042 1043
  t tr-chown-map-owner 1042:1043 e 'dropcaches; owner tr/g/o1'
  t tr-chown-squash ok cx chown tr/g/o2 3009 3001
  t tr-chown-squash-owner 103000:103000 e 'dropcaches; owner tr/g/o2'
  t tr-chown-unmapped ok cx chown tr/g/o3 4000 4000
  t tr-chown-unmapped-owner 4000:4000 owner tr/g/o3
  # A guest id inside the host side of the map is not translated going in, but the host id it
  # lands on is translated coming back.
  t tr-chown-host-range ok cx chown tr/g/o4 101005 101005
  t tr-chown-host-range-owner 1005:1005 e 'dropcaches; owner tr/g/o4'
  t tr-chgrp-by-owner ok cx -u 1000:1000:1000,1001 chown tr/g/c1000 -1 1001
  t tr-chgrp-by-owner-owner 1000:1001 owner tr/g/c1000
  t tr-lchown-map ok cx lchown tr/g/s1000 1010 1011
  t tr-lchown-map-owner 1010:1011 owner tr/g/s1000
  # A setgid directory passes its (host) group to new entries, which shows as the guest group.
  t tr-setgid-dir ok e 'mkdir tr/g/sg && chown 1000:1070 tr/g/sg && chmod 2777 tr/g/sg && cx open tr/g/sg/f w,creat'
  t tr-setgid-dir-owner 0:1070 owner tr/g/sg/f
  t tr-setgid-dir-user ok cx -u 1001:1001 mkdir tr/g/sg/d 755
  t tr-setgid-dir-user-owner "1001:1070 2755" cx owner tr/g/sg/d
}

# --- acl: --posix-acl ----------------------------------------------------------------------------
section_acl() {
  mkdir -p acl && chmod 755 acl
  : > acl/f && chmod 644 acl/f
  t acl-none ENODATA cx aclget acl/f access
  t acl-set ok cx aclset acl/f access u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--
  t acl-get "u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--" cx aclget acl/f access
  # The group class bits of the mode are the mask.
  t acl-mode-group-is-mask 674 mode acl/f
  t acl-mode-fresh 674 e 'dropcaches; mode acl/f'
  t acl-get-fresh "u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--" e 'dropcaches; cx aclget acl/f access'
  t acl-value-size 44 cx getx acl/f system.posix_acl_access -1
  t acl-listed system.posix_acl_access cx listx acl/f system.
  # Only the named entry lets uid 1000 write: it is neither owner nor in the group, other is r--.
  t acl-named-user-writes ok u1 write acl/f w,append x
  t acl-named-user-access ok u1 access acl/f rwx
  t acl-other-user-denied EACCES u2 write acl/f w,append x
  t acl-nonowner-set EPERM u2 aclset acl/f access u::rwx,g::rwx,o::rwx
  # chmod sets the mask, not the owning group's entry.
  t acl-chmod ok cx chmod acl/f 640
  t acl-chmod-sets-mask "u::rw-,u:1000:rwx,g::r--,m::r--,o::---" cx aclget acl/f access
  t acl-chmod-mode 640 mode acl/f
  t acl-chmod-mask-limits-named EACCES u1 write acl/f w,append x
  t acl-chmod-named-still-reads ok u1 open acl/f r
  t acl-remove ok cx rmx acl/f system.posix_acl_access
  t acl-remove-gone ENODATA cx aclget acl/f access
  t acl-remove-mode-kept 640 mode acl/f
  t acl-remove-named-gone EACCES u1 open acl/f r
  # An ACL the mode bits can express is not stored: it only sets the mode.
  : > acl/e && chmod 600 acl/e
  t acl-equivalent ok cx aclset acl/e access u::rwx,g::r-x,o::r--
  t acl-equivalent-mode 754 mode acl/e
  t acl-equivalent-not-stored ENODATA cx aclget acl/e access
  t acl-invalid-no-mask EINVAL cx aclset acl/e access u::rwx,u:1000:rwx,g::r-x,o::---
  t acl-default-on-file EACCES cx aclset acl/e default u::rwx,g::r-x,o::---
  # Setting an ACL clears setgid when the caller is not in the file's group (the guest asks with
  # FUSE_SETXATTR_ACL_KILL_SGID), as chmod would.
  t acl-sgid-cleared "1000:3000 775" e 'chown 1000:3000 acl/e && chmod 2775 acl/e && cx -u 1000:1000 aclset acl/e access u::rwx,u:1001:rwx,g::rwx,m::rwx,o::r-x >/dev/null; cx owner acl/e'
  t acl-sgid-kept-member "1000:3000 2775" e 'chmod 2775 acl/e && cx -u 1000:1000:1000,3000 aclset acl/e access u::rwx,u:1002:rwx,g::rwx,m::rwx,o::r-x >/dev/null; cx owner acl/e'

  # Default ACLs: inherited by new entries, and then the umask does not apply.
  mkdir acl/d && chmod 755 acl/d
  t acl-default-set ok cx aclset acl/d default u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::rwx,o::---
  t acl-default-get "u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::rwx,o::---" cx aclget acl/d default
  t acl-default-no-access ENODATA cx aclget acl/d access
  t acl-default-dir-mode 755 mode acl/d
  t acl-inherit-file ok e 'umask 077; cx open acl/d/f w,creat 666'
  t acl-inherit-file-acl "u::rw-,u:1000:rwx,g::r-x,g:2000:rwx,m::rw-,o::---" cx aclget acl/d/f access
  t acl-inherit-file-mode 660 mode acl/d/f
  t acl-inherit-file-no-default ENODATA cx aclget acl/d/f default
  t acl-inherit-dir ok e 'umask 077; cx mkdir acl/d/sub 777'
  t acl-inherit-dir-acl "u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::rwx,o::---" cx aclget acl/d/sub access
  t acl-inherit-dir-default "u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::rwx,o::---" cx aclget acl/d/sub default
  t acl-inherit-dir-mode 770 mode acl/d/sub
  t acl-inherit-mknod ok e 'umask 077; cx mknod acl/d/p fifo'
  t acl-inherit-mknod-mode 640 mode acl/d/p
  t acl-inherit-fresh "660 770" e 'dropcaches; echo $(mode acl/d/f) $(mode acl/d/sub)'
  t acl-inherit-named-group-writes ok cx -u 1001:1001:1001,2000 write acl/d/f w,append x
  t acl-inherit-other-denied EACCES u2 write acl/d/f w,append x
  # uid 1000 may create in acl/d/sub only through its named entry.
  t acl-inherit-named-user-creates ok e 'umask 022; cx -u 1000:1000 open acl/d/sub/u1 w,creat 644'
  t acl-inherit-named-user-owner "1000:1000 640" cx owner acl/d/sub/u1
  t acl-inherit-named-user-acl "u::rw-,u:1000:rwx,g::r-x,g:2000:rwx,m::r--,o::---" cx aclget acl/d/sub/u1 access
  t acl-inherit-other-user-create-denied EACCES u2 open acl/d/sub/u2 w,creat
  t acl-dir-chmod-mask "u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::r-x,o::---" e 'chmod 750 acl/d/sub; cx aclget acl/d/sub access'
  t acl-dir-chmod-default-kept "u::rwx,u:1000:rwx,g::r-x,g:2000:rwx,m::rwx,o::---" cx aclget acl/d/sub default
  t acl-rename-keeps "u::rw-,u:1000:rwx,g::r-x,g:2000:rwx,m::rw-,o::---" e 'mv acl/d/f acl/moved; dropcaches; cx aclget acl/moved access'
  t acl-default-remove ok cx rmx acl/d system.posix_acl_default
  t acl-default-removed-no-inherit "ENODATA 600" e 'umask 077; cx open acl/d/g w,creat 666 >/dev/null; echo $(cx aclget acl/d/g access) $(mode acl/d/g)'
  # Without a default ACL the umask applies (the guest leaves it to the daemon: FUSE_DONT_MASK).
  t acl-umask-file 600 e 'umask 077; cx open acl/nf w,creat 666 >/dev/null; mode acl/nf'
  t acl-umask-dir 700 e 'umask 077; cx mkdir acl/nd 777 >/dev/null; mode acl/nd'
  t acl-umask-mknod 600 e 'umask 077; cx mknod acl/np fifo >/dev/null; mode acl/np'
}

# --- noacl: --xattr --killpriv-v2 ----------------------------------------------------------------
# Host files (prepared by the spec): na/hostacl (mode 644 before its ACL
# u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--, so 674) and the directory na/hostdef with the default ACL
# u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---.
# kp CASE OWNER MODE WHO OP [ARGS...] -- makes a file owned by OWNER with MODE on the guest's tmpfs
# and on the share, lets WHO (UID:GID[:GROUPS]) run the helper's OP on it, and wants the share to
# end with the mode the tmpfs ended with.
kp() {
  kname=$1 kown=$2 kmode=$3 kwho=$4 kop=$5
  shift 5
  for base in "$XDEV/kp" na/kp; do
    f=$base/$kname
    echo data > "$f" && chown "$kown" "$f" && chmod "$kmode" "$f"
    "$CX" -u "$kwho" "$kop" "$f" "$@" > /dev/null
  done
  v "kp-$kname" "$(mode "$XDEV/kp/$kname")" "$(mode "na/kp/$kname")"
}
section_noacl() {
  mkdir -p na && chmod 755 na
  : > na/f && chmod 644 na/f && mkdir na/d
  t noacl-set EOPNOTSUPP cx aclset na/f access u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--
  t noacl-set-mode-kept 644 mode na/f
  t noacl-get-none EOPNOTSUPP cx aclget na/f access
  t noacl-get-host-acl EOPNOTSUPP cx aclget na/hostacl access
  t noacl-get-host-default EOPNOTSUPP cx aclget na/hostdef default
  t noacl-set-default EOPNOTSUPP cx aclset na/d default u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---
  t noacl-remove EOPNOTSUPP cx rmx na/hostacl system.posix_acl_access
  t noacl-host-acl-mode 674 mode na/hostacl
  # The guest checks the mode only: uid 1000 is "other" (r--) there.
  t noacl-host-acl-not-honoured EACCES u1 write na/hostacl w,append x
  t noacl-user-xattr ok cx setx na/f user.a v
  t noacl-user-xattr-read v cx getx na/f user.a

  mkdir "$XDEV/kp" na/kp && chmod 777 "$XDEV/kp" na/kp
  # Local premise (the issue): the owner writing a 6745 file of its own group loses setuid only.
  t kp-local-premise 2745 e "echo data > $XDEV/kp/premise && chown 1000:1000 $XDEV/kp/premise && chmod 6745 $XDEV/kp/premise && cx -u 1000:1000 write $XDEV/kp/premise w,append x >/dev/null; mode $XDEV/kp/premise"
  kp owner-write 1000:1000 6745 1000:1000 write w,append x
  kp owner-write-not-in-group 1000:3000 6745 1000:1000 write w,append x
  kp owner-write-supplementary-group 1000:3000 6745 1000:1000:1000,3000 write w,append x
  kp nonowner-write-group-exec 0:0 6777 1000:1000 write w,append x
  kp nonowner-write-group-member 0:1000 6767 1000:1000 write w,append x
  kp nonowner-write-not-in-group 0:0 6766 1000:1000 write w,append x
  kp root-write 1000:1000 6745 0:0 write w,append x
  kp owner-truncate 1000:1000 6745 1000:1000 truncate 1
  kp owner-open-trunc 1000:1000 6745 1000:1000 open w,trunc
  kp nonowner-truncate-group-member 0:1000 6767 1000:1000 truncate 1
  kp nonowner-open-trunc-not-in-group 0:0 6766 1000:1000 open w,trunc
  kp owner-chgrp-same 1000:1000 6745 1000:1000 chown -1 1000
  kp owner-chgrp-group-exec 1000:1000 6755 1000:1000:1000,1001 chown -1 1001
}

# --- xattrmap ------------------------------------------------------------------------------------
# Daemon rules:
#   /prefix/all/trusted./user.virtiofs./  /bad/server//trusted./  /bad/client/user.virtiofs.//
#   /unsupported/all/user.unsup./user.unsup./  /bad/all/user.hidden./user.hidden./  /ok/all///
# Host file xm/f (prepared by the spec) has user.virtiofs.foo=fv, user.virtiofs.trusted.pre=pre,
# trusted.secret=ts, user.plain=pv, user.hidden.h=hv, user.unsup.u=uv.
section_xattrmap() {
  t xm-list "foo,trusted.pre,user.plain" cx listx xm/f ""
  t xm-prefixed-get pre cx getx xm/f trusted.pre
  t xm-plain-get pv cx getx xm/f user.plain
  t xm-trusted-set ok cx setx xm/f trusted.x tv
  t xm-trusted-get tv cx getx xm/f trusted.x
  t xm-trusted-keep ok cx setx xm/f trusted.keep kv
  t xm-trusted-remove ok cx rmx xm/f trusted.x
  t xm-trusted-removed ENODATA cx getx xm/f trusted.x
  t xm-list-after "foo,trusted.keep,trusted.pre,user.plain" cx listx xm/f ""
  # The unprefixed host trusted.secret is out of reach: the guest's trusted.secret is another name.
  t xm-host-trusted-unreachable ENODATA cx getx xm/f trusted.secret
  # "foo" is listed (host user.virtiofs.foo with the prefix stripped), but the guest's "foo" goes
  # through the ok rule unchanged, a name the host file system does not have a namespace for.
  t xm-stripped-name-get EOPNOTSUPP cx getx xm/f foo
  t xm-bad-client-set EPERM cx setx xm/f user.virtiofs.x v
  t xm-bad-client-get ENODATA cx getx xm/f user.virtiofs.foo
  t xm-bad-client-remove EPERM cx rmx xm/f user.virtiofs.foo
  t xm-bad-all-set EPERM cx setx xm/f user.hidden.n v
  t xm-bad-all-get ENODATA cx getx xm/f user.hidden.h
  t xm-bad-all-remove EPERM cx rmx xm/f user.hidden.h
  t xm-unsupported-set EOPNOTSUPP cx setx xm/f user.unsup.n v
  t xm-unsupported-get EOPNOTSUPP cx getx xm/f user.unsup.u
  t xm-unsupported-remove EOPNOTSUPP cx rmx xm/f user.unsup.u
  t xm-plain-set ok cx setx xm/f user.other ov
  t xm-plain-read ov cx getx xm/f user.other
  t xm-new-file-prefixed ok e ': > xm/n; cx setx xm/n trusted.n nv'
  t xm-new-file-list trusted.n cx listx xm/n ""
  t xm-trusted-user-get ENODATA u1 getx xm/f trusted.keep
  t xm-trusted-user-set EPERM u1 setx xm/n trusted.u v
  t xm-list-size nonzero cx listx xm/f "" 0
  t xm-list-small-buffer ERANGE cx listx xm/f "" 4
}

# --- label: --security-label ---------------------------------------------------------------------
# The guest runs SELinux without a policy, whose label for every new inode is "unlabeled"; the guest
# sends it with each create (FUSE_SECURITY_CTX) and the daemon stores it as security.selinux.
section_label() {
  mount -t securityfs none /sys/kernel/security 2>/dev/null
  t sl-selinux-enabled yes e 'tr , "\n" < /sys/kernel/security/lsm | grep -qx selinux && echo yes'
  mkdir -p sl && chmod 755 sl
  t sl-create ok cx open sl/f w,creat
  t sl-create-label unlabeled cx getx sl/f security.selinux
  t sl-mkdir ok cx mkdir sl/d 755
  t sl-mkdir-label unlabeled cx getx sl/d security.selinux
  t sl-mknod ok cx mknod sl/p fifo
  t sl-mknod-label unlabeled cx lgetx sl/p security.selinux
  t sl-symlink ok cx symlink f sl/s
  t sl-symlink-label unlabeled cx lgetx sl/s security.selinux
  t sl-user-create ok e 'chmod 777 sl/d; cx -u 1000:1000 open sl/d/u w,creat'
  t sl-user-create-label unlabeled cx getx sl/d/u security.selinux
  t sl-user-create-owner 1000:1000 owner sl/d/u
  t sl-tmpfile "nlink=0 mode=600 linked-nlink=1" cx tmpfile sl tl
  t sl-tmpfile-label unlabeled cx getx sl/tl security.selinux
  t sl-host-unlabeled ENODATA cx getx sl/host security.selinux
  t sl-relabel ok cx setx sl/f security.selinux relabeled
  t sl-relabel-read relabeled e 'dropcaches; cx getx sl/f security.selinux'
  t sl-listed security.selinux cx listx sl/d/u security.
}

# --- acl-translate: --posix-acl with --translate-uid/gid ------------------------------------------
# Daemon: map:1000:101000:100, squash-guest:3000:103000:10 and forbid-guest:2000:1, for uids and
# gids. Host files (prepared by the spec): at/h (ACL u::rw-,u:101020:rw-,g::r--,g:101021:r--,m::rw-,
# o::r--) and the directory at/hd (default ACL u::rwx,u:101030:rwx,g::r-x,m::rwx,o::---).
section_acl_translate() {
  t at-host-acl-mapped "u::rw-,u:1020:rw-,g::r--,g:1021:r--,m::rw-,o::r--" cx aclget at/h access
  t at-host-default-mapped "u::rwx,u:1030:rwx,g::r-x,m::rwx,o::---" cx aclget at/hd default
  t at-host-acl-user-writes ok cx -u 1020:1020 write at/h w,append x
  : > at/f && chmod 644 at/f
  # u:50000 is unmapped and sorts after u:1005 in the guest, before u:101005 on the host.
  t at-set ok cx aclset at/f access u::rw-,u:1005:rwx,u:50000:r--,g::r--,g:1007:r-x,m::rwx,o::r--
  t at-get "u::rw-,u:1005:rwx,u:50000:r--,g::r--,g:1007:r-x,m::rwx,o::r--" cx aclget at/f access
  t at-get-fresh "u::rw-,u:1005:rwx,u:50000:r--,g::r--,g:1007:r-x,m::rwx,o::r--" e 'dropcaches; cx aclget at/f access'
  t at-mode 674 mode at/f
  t at-named-user-writes ok cx -u 1005:1005 write at/f w,append x
  t at-named-group-reads ok cx -u 1001:1001:1001,1007 open at/f r
  t at-other-denied EACCES cx -u 1001:1001 write at/f w,append x
  t at-forbid-user EPERM cx aclset at/f access u::rw-,u:2000:rwx,g::r--,m::rwx,o::r--
  t at-forbid-group EPERM cx aclset at/f access u::rw-,g::r--,g:2000:rwx,m::rwx,o::r--
  t at-forbid-kept "u::rw-,u:1005:rwx,u:50000:r--,g::r--,g:1007:r-x,m::rwx,o::r--" cx aclget at/f access
  t at-chmod-mask "u::rw-,u:1005:rwx,u:50000:r--,g::r--,g:1007:r-x,m::r--,o::---" e 'chmod 640 at/f; cx aclget at/f access'
  # squash-guest: two guest entries land on one host id (permissions joined), which reads back as itself.
  : > at/q
  t at-squash ok cx aclset at/q access u::rw-,u:3001:rwx,u:3002:r--,g::r--,m::rwx,o::r--
  t at-squash-get "u::rw-,u:103000:rwx,g::r--,m::rwx,o::r--" e 'dropcaches; cx aclget at/q access'
  t at-inherit-host-default ok e 'umask 022; cx open at/hd/n w,creat 644'
  t at-inherit-host-default-acl "u::rw-,u:1030:rwx,g::r-x,m::r--,o::---" cx aclget at/hd/n access
  mkdir at/d && chmod 755 at/d
  t at-default-set ok cx aclset at/d default u::rwx,u:1040:rwx,g::r-x,g:1041:r-x,m::rwx,o::---
  t at-default-get "u::rwx,u:1040:rwx,g::r-x,g:1041:r-x,m::rwx,o::---" cx aclget at/d default
  t at-default-inherit-dir ok cx mkdir at/d/s 775
  t at-default-inherit-dir-acl "u::rwx,u:1040:rwx,g::r-x,g:1041:r-x,m::rwx,o::---" cx aclget at/d/s access
  t at-default-inherit-dir-default "u::rwx,u:1040:rwx,g::r-x,g:1041:r-x,m::rwx,o::---" cx aclget at/d/s default
  t at-named-user-creates ok cx -u 1040:1040 open at/d/s/u w,creat 600
  t at-named-user-creates-owner 1040:1040 owner at/d/s/u
  t at-owner-maps 1005:1005 e 'chown 1005:1005 at/q; dropcaches; owner at/q'
}

case $POLICY in
  translate | acl | noacl | xattrmap | label | acl-translate) "section_$(echo "$POLICY" | tr - _)" ;;
  *) echo "policy: unknown POLICY=$POLICY"; exit 2 ;;
esac
echo "summary: total=$total passed=$passed failed=$((total - passed))"
[ "$passed" -eq "$total" ]
