// Guest-side helper of scripts/guest/conformance.sh: one system call (or one small scenario) per
// invocation, printing a single deterministic word -- "ok", a value, or the errno name -- because
// busybox applets only print localized messages and cannot reach xattrs, record locks, O_TMPFILE,
// renameat2, fallocate modes, SEEK_HOLE/SEEK_DATA, copy_file_range or POSIX ACLs (aclset/aclget
// read and write the raw system.posix_acl_* values, no libacl needed).
// Built statically on the host at test time (see __test__/conformance.spec.ts); the policy suite
// (__test__/policy.spec.ts) also runs the same binary on the host, to read a shared directory's
// owners, xattrs and ACLs as the host stores them. The migration suite (__test__/migration.spec.ts)
// uses `hold`: descriptors of every kind held across a live migration.
//
//   cx [-u UID:GID[:G1,G2...]] OP ARGS...
//
// -u drops to that identity first (setgroups, setresgid, setresuid), so permission checks run as an
// unprivileged guest user. The exit status is 0 whenever the word was printed: the word is the result.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "EUNKNOWN";
}

// Prints "ok" or the errno name of a failed call (rc < 0).
static int res(long rc) {
  puts(rc < 0 ? ename(errno) : "ok");
  return 0;
}

static int usage(const char *why) {
  fprintf(stderr, "cx: %s\n", why);
  return 2;
}

static int parse_flags(const char *s) {
  int f = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    if (!strcmp(tok, "r")) f |= O_RDONLY;
    else if (!strcmp(tok, "w")) f |= O_WRONLY;
    else if (!strcmp(tok, "rw")) f |= O_RDWR;
    else if (!strcmp(tok, "creat")) f |= O_CREAT;
    else if (!strcmp(tok, "excl")) f |= O_EXCL;
    else if (!strcmp(tok, "trunc")) f |= O_TRUNC;
    else if (!strcmp(tok, "append")) f |= O_APPEND;
    else if (!strcmp(tok, "dir")) f |= O_DIRECTORY;
    else if (!strcmp(tok, "nofollow")) f |= O_NOFOLLOW;
    else if (!strcmp(tok, "tmpfile")) f |= O_TMPFILE;
    else if (!strcmp(tok, "path")) f |= O_PATH;
    else if (!strcmp(tok, "noatime")) f |= O_NOATIME;
    else if (!strcmp(tok, "direct")) f |= O_DIRECT;
    else {
      fprintf(stderr, "cx: unknown open flag %s\n", tok);
      exit(2);
    }
  }
  return f;
}

static int drop_to(const char *spec) {
  unsigned uid, gid;
  int n = 0;
  if (sscanf(spec, "%u:%u%n", &uid, &gid, &n) != 2) return usage("-u wants UID:GID[:G1,G2]");
  gid_t groups[32];
  size_t ng = 0;
  if (spec[n] == ':') {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec + n + 1);
    for (char *tok = strtok(buf, ","); tok && ng < 32; tok = strtok(NULL, ",")) groups[ng++] = (gid_t)strtoul(tok, NULL, 10);
  }
  if (setgroups(ng, groups) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
    fprintf(stderr, "cx: cannot switch to %s: %s\n", spec, strerror(errno));
    return 2;
  }
  return 0;
}

static long num(const char *s) { return strtol(s, NULL, 0); }

// Writes all of buf; -1 with errno on failure.
static long write_all(int fd, const char *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(fd, buf + done, len - done);
    if (w < 0) return -1;
    done += (size_t)w;
  }
  return (long)done;
}

static int op_write(const char *path, const char *flags, const char *data) {
  int fd = open(path, parse_flags(flags), 0644);
  if (fd < 0) return res(-1);
  long rc = write_all(fd, data, strlen(data));
  int saved = errno;
  close(fd);
  errno = saved;
  return res(rc);
}

static int op_pread(const char *path, long off, long len) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return res(-1);
  char buf[4096];
  if (len > (long)sizeof buf) len = sizeof buf;
  ssize_t r = pread(fd, buf, (size_t)len, off);
  if (r < 0) return res(-1);
  for (ssize_t i = 0; i < r; i++) {
    unsigned char c = (unsigned char)buf[i];
    if (c >= 0x21 && c < 0x7f && c != '\\') putchar(c);
    else printf("\\%02x", c);
  }
  if (r == 0) fputs("<eof>", stdout);
  putchar('\n');
  close(fd);
  return 0;
}

// Write/append through O_APPEND then report where the data landed.
static int op_append_pos(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND);
  if (fd < 0) return res(-1);
  if (lseek(fd, 0, SEEK_SET) < 0 || write(fd, "Z", 1) != 1) return res(-1);
  off_t pos = lseek(fd, 0, SEEK_CUR);
  struct stat st;
  fstat(fd, &st);
  printf("%lld %lld\n", (long long)pos, (long long)st.st_size);
  close(fd);
  return 0;
}

// An open file keeps working after unlink: read it back, count links, write more through it.
static int op_unlink_open(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return res(-1);
  if (write(fd, "abc", 3) != 3) return res(-1);
  if (unlink(path) < 0) return res(-1);
  struct stat st;
  if (fstat(fd, &st) < 0) return res(-1);
  char buf[8] = {0};
  if (pwrite(fd, "de", 2, 3) != 2) return res(-1);
  if (pread(fd, buf, sizeof buf - 1, 0) < 0) return res(-1);
  struct stat after;
  int gone = lstat(path, &after) < 0 ? errno : 0;
  printf("%s nlink=%lu lookup=%s\n", buf, (unsigned long)st.st_nlink, gone ? ename(gone) : "found");
  close(fd);
  return 0;
}

// An open file follows its rename.
static int op_rename_open(const char *from, const char *to) {
  int fd = open(from, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return res(-1);
  if (rename(from, to) < 0) return res(-1);
  if (write(fd, "moved", 5) != 5) return res(-1);
  close(fd);
  fd = open(to, O_RDONLY);
  if (fd < 0) return res(-1);
  char buf[16] = {0};
  if (read(fd, buf, sizeof buf - 1) < 0) return res(-1);
  puts(buf);
  close(fd);
  return 0;
}

static int op_rename2(const char *a, const char *b, const char *mode) {
  unsigned flags = 0;
  if (!strcmp(mode, "noreplace")) flags = RENAME_NOREPLACE;
  else if (!strcmp(mode, "exchange")) flags = RENAME_EXCHANGE;
  else if (!strcmp(mode, "whiteout")) flags = RENAME_WHITEOUT;
  else if (strcmp(mode, "none")) return usage("rename2 mode: none|noreplace|exchange|whiteout");
  return res(syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, flags));
}

static int op_times(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) return res(-1);
  printf("%lld.%09ld %lld.%09ld\n", (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec, (long long)st.st_mtim.tv_sec,
         st.st_mtim.tv_nsec);
  return 0;
}

static int op_utimens(const char *path, const char *a, const char *m, int flags) {
  struct timespec ts[2];
  const char *src[2] = {a, m};
  for (int i = 0; i < 2; i++) {
    if (!strcmp(src[i], "now")) ts[i].tv_nsec = UTIME_NOW, ts[i].tv_sec = 0;
    else if (!strcmp(src[i], "omit")) ts[i].tv_nsec = UTIME_OMIT, ts[i].tv_sec = 0;
    else {
      long long s = 0;
      long ns = 0;
      sscanf(src[i], "%lld.%ld", &s, &ns);
      ts[i].tv_sec = s;
      ts[i].tv_nsec = ns;
    }
  }
  return res(utimensat(AT_FDCWD, path, ts, flags));
}

// Changed-time moves forward on the operation: prints "yes" if ctime changed.
static int op_ctime_bumps(const char *path, const char *what) {
  struct stat a, b;
  if (lstat(path, &a) < 0) return res(-1);
  struct timespec pause = {0, 20 * 1000 * 1000};
  nanosleep(&pause, NULL);
  long rc;
  if (!strcmp(what, "chmod")) rc = chmod(path, a.st_mode & 07777);
  else if (!strcmp(what, "write")) {
    int fd = open(path, O_WRONLY | O_APPEND);
    rc = fd < 0 ? -1 : write(fd, "x", 1);
    if (fd >= 0) close(fd);
  } else if (!strcmp(what, "link")) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.ctlink", path);
    rc = link(path, tmp);
    if (rc == 0) unlink(tmp);
  } else return usage("ctime: chmod|write|link");
  if (rc < 0) return res(-1);
  if (lstat(path, &b) < 0) return res(-1);
  int later = b.st_ctim.tv_sec > a.st_ctim.tv_sec ||
              (b.st_ctim.tv_sec == a.st_ctim.tv_sec && b.st_ctim.tv_nsec > a.st_ctim.tv_nsec);
  puts(later ? "yes" : "no");
  return 0;
}

static int op_setx(const char *path, const char *name, const char *value, const char *mode, int nofollow) {
  int flags = 0;
  if (mode && !strcmp(mode, "create")) flags = XATTR_CREATE;
  else if (mode && !strcmp(mode, "replace")) flags = XATTR_REPLACE;
  size_t len = strlen(value);
  if (nofollow) return res(lsetxattr(path, name, value, len, flags));
  return res(setxattr(path, name, value, len, flags));
}

static int op_getx(const char *path, const char *name, long size, int nofollow) {
  char buf[65536];
  if (size < 0) {
    ssize_t r = nofollow ? lgetxattr(path, name, NULL, 0) : getxattr(path, name, NULL, 0);
    if (r < 0) return res(-1);
    printf("%zd\n", r);
    return 0;
  }
  if (size > (long)sizeof buf - 1) size = sizeof buf - 1;
  ssize_t r = nofollow ? lgetxattr(path, name, buf, (size_t)size) : getxattr(path, name, buf, (size_t)size);
  if (r < 0) return res(-1);
  buf[r] = 0;
  printf("%s\n", r ? buf : "<empty>");
  return 0;
}

static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Lists xattr names with the given prefix, sorted, comma-joined ("-" when none); or the errno.
static int op_listx(const char *path, const char *prefix, long size) {
  char buf[65536];
  ssize_t r = listxattr(path, size < 0 ? buf : buf, size < 0 ? sizeof buf : (size_t)size);
  if (r < 0) return res(-1);
  if (size == 0) {
    printf("%s\n", r > 0 ? "nonzero" : "zero");
    return 0;
  }
  char *names[1024];
  size_t n = 0;
  for (ssize_t i = 0; i < r && n < 1024; i += (ssize_t)strlen(buf + i) + 1)
    if (!strncmp(buf + i, prefix, strlen(prefix))) names[n++] = buf + i;
  qsort(names, n, sizeof names[0], cmpstr);
  if (!n) puts("-");
  for (size_t i = 0; i < n; i++) printf("%s%s", names[i], i + 1 < n ? "," : "\n");
  return 0;
}

static int op_falloc(const char *path, const char *mode, long off, long len) {
  int m = 0;
  if (!strcmp(mode, "keep")) m = FALLOC_FL_KEEP_SIZE;
  else if (!strcmp(mode, "punch")) m = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  else if (!strcmp(mode, "punch-nokeep")) m = FALLOC_FL_PUNCH_HOLE;
  else if (!strcmp(mode, "zero")) m = FALLOC_FL_ZERO_RANGE;
  else if (strcmp(mode, "default")) return usage("falloc mode: default|keep|punch|punch-nokeep|zero");
  int fd = open(path, O_RDWR);
  if (fd < 0) return res(-1);
  long rc = fallocate(fd, m, off, len);
  int saved = errno;
  close(fd);
  errno = saved;
  return res(rc);
}

static int op_seek(const char *path, const char *whence, long off) {
  int w = !strcmp(whence, "data") ? SEEK_DATA : !strcmp(whence, "hole") ? SEEK_HOLE : !strcmp(whence, "end") ? SEEK_END : -1;
  if (w < 0) return usage("seek whence: data|hole|end");
  int fd = open(path, O_RDONLY);
  if (fd < 0) return res(-1);
  off_t r = lseek(fd, off, w);
  if (r < 0) return res(-1);
  printf("%lld\n", (long long)r);
  close(fd);
  return 0;
}

static int op_cfr(const char *src, const char *dst, long off_in, long off_out, long len) {
  int in = open(src, O_RDONLY);
  if (in < 0) return res(-1);
  int out = open(dst, O_WRONLY | O_CREAT, 0644);
  if (out < 0) return res(-1);
  loff_t oi = off_in, oo = off_out;
  ssize_t r = copy_file_range(in, &oi, out, &oo, (size_t)len, 0);
  if (r < 0) return res(-1);
  printf("%zd\n", r);
  return 0;
}

// O_TMPFILE in DIR: write, check it is nameless (nlink 0), then give it NAME with linkat.
static int op_tmpfile(const char *dir, const char *name) {
  int fd = open(dir, O_TMPFILE | O_RDWR, 0600);
  if (fd < 0) return res(-1);
  if (write(fd, "tmp", 3) != 3) return res(-1);
  struct stat st;
  if (fstat(fd, &st) < 0) return res(-1);
  char proc[64], target[4096];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  snprintf(target, sizeof target, "%s/%s", dir, name);
  long rc = linkat(AT_FDCWD, proc, AT_FDCWD, target, AT_SYMLINK_FOLLOW);
  if (rc < 0) return res(-1);
  struct stat linked;
  if (stat(target, &linked) < 0) return res(-1);
  printf("nlink=%lu mode=%o linked-nlink=%lu\n", (unsigned long)st.st_nlink, st.st_mode & 07777,
         (unsigned long)linked.st_nlink);
  return 0;
}

static int op_statfs(const char *path) {
  struct statfs s;
  if (statfs(path, &s) < 0) return res(-1);
  printf("namelen=%ld bsize-positive=%s blocks-positive=%s bfree<=blocks=%s\n", (long)s.f_namelen,
         s.f_bsize > 0 ? "yes" : "no", s.f_blocks > 0 ? "yes" : "no", s.f_bfree <= s.f_blocks ? "yes" : "no");
  return 0;
}

static int op_statx(const char *path) {
  struct statx sx;
  if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) < 0) return res(-1);
  printf("basic=%s size=%llu nlink=%u\n", (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS ? "yes" : "no",
         (unsigned long long)sx.stx_size, sx.stx_nlink);
  return 0;
}

static void settle(void) {
  struct timespec t = {0, 150 * 1000 * 1000};
  nanosleep(&t, NULL);
}

// flock contention: the parent holds MODE1 on its own open file description; a child with another
// open file description tries MODE2 without blocking, then blocks until the parent unlocks.
// Prints "<nonblocking result> <blocking result after release>".
static int op_flock(const char *path, const char *m1, const char *m2) {
  int l1 = !strcmp(m1, "ex") ? LOCK_EX : LOCK_SH, l2 = !strcmp(m2, "ex") ? LOCK_EX : LOCK_SH;
  // Read-only opens, so directories can be locked too.
  int fd = open(path, O_RDONLY);
  if (fd < 0) return res(-1);
  if (flock(fd, l1) < 0) return res(-1);
  int pipefd[2];
  if (pipe(pipefd) < 0) return res(-1);
  pid_t pid = fork();
  if (pid < 0) return res(-1);
  if (pid == 0) {
    int cfd = open(path, O_RDONLY);
    char out[64];
    const char *first = flock(cfd, l2 | LOCK_NB) < 0 ? ename(errno) : "ok";
    if (write(pipefd[1], "1", 1) != 1) _exit(3);
    const char *second = flock(cfd, l2) < 0 ? ename(errno) : "ok";
    snprintf(out, sizeof out, "%s %s", first, second);
    puts(out);
    fflush(stdout);
    _exit(0);
  }
  char c;
  if (read(pipefd[0], &c, 1) != 1) return res(-1);
  settle();
  flock(fd, LOCK_UN);
  int status;
  waitpid(pid, &status, 0);
  return 0;
}

// POSIX record locks: the parent holds T1 on bytes [0,10); a child tries T2 on [5,15) with F_SETLK
// (prints ok or the errno), asks F_GETLK who conflicts (prints the lock type and whether the pid is
// the parent's), then waits in F_SETLKW until the parent unlocks.
// The parent locks bytes 0-9 (or, with `whole`, the whole file: l_len 0), a child asks for an
// overlapping lock, reports who holds the conflicting one (F_GETLK), then waits for it.
static int op_posixlock(const char *path, const char *t1, const char *t2, int whole) {
  short k1 = !strcmp(t1, "wr") ? F_WRLCK : F_RDLCK, k2 = !strcmp(t2, "wr") ? F_WRLCK : F_RDLCK;
  int fd = open(path, O_RDWR);
  if (fd < 0) return res(-1);
  struct flock fl = {.l_type = k1, .l_whence = SEEK_SET, .l_start = 0, .l_len = whole ? 0 : 10};
  if (fcntl(fd, F_SETLK, &fl) < 0) return res(-1);
  pid_t parent = getpid();
  int pipefd[2];
  if (pipe(pipefd) < 0) return res(-1);
  pid_t pid = fork();
  if (pid < 0) return res(-1);
  if (pid == 0) {
    int cfd = open(path, O_RDWR);
    struct flock want = {.l_type = k2, .l_whence = SEEK_SET, .l_start = 5, .l_len = 10};
    const char *first = fcntl(cfd, F_SETLK, &want) < 0 ? ename(errno) : "ok";
    struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 10};
    char who[48];
    if (fcntl(cfd, F_GETLK, &probe) < 0) snprintf(who, sizeof who, "%s", ename(errno));
    else if (probe.l_type == F_UNLCK) snprintf(who, sizeof who, "unlck");
    else
      snprintf(who, sizeof who, "%s@%lld+%lld/%s", probe.l_type == F_WRLCK ? "wr" : "rd", (long long)probe.l_start,
               (long long)probe.l_len, probe.l_pid == parent ? "parent" : "other");
    if (write(pipefd[1], "1", 1) != 1) _exit(3);
    want.l_type = F_WRLCK;
    const char *second = fcntl(cfd, F_SETLKW, &want) < 0 ? ename(errno) : "ok";
    printf("%s %s %s\n", first, who, second);
    fflush(stdout);
    _exit(0);
  }
  char c;
  if (read(pipefd[0], &c, 1) != 1) return res(-1);
  settle();
  fl.l_type = F_UNLCK;
  fcntl(fd, F_SETLK, &fl);
  int status;
  waitpid(pid, &status, 0);
  return 0;
}

static const char *setlk(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  return fcntl(fd, cmd, &fl) < 0 ? ename(errno) : "ok";
}

// Runs probe(fd of a fresh open of path) in a child process and prints what it printed.
static int in_child(const char *path, const char *(*probe)(int)) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return res(-1);
  if (pid == 0) {
    int fd = open(path, O_RDWR);
    puts(fd < 0 ? ename(errno) : probe(fd));
    fflush(stdout);
    _exit(0);
  }
  int status;
  waitpid(pid, &status, 0);
  return 0;
}

static const char *probe_wr_0_10(int fd) { return setlk(fd, F_SETLK, F_WRLCK, 0, 10); }
static const char *probe_wr_45_5(int fd) { return setlk(fd, F_SETLK, F_WRLCK, 45, 5); }
static const char *probe_wr_30_5(int fd) { return setlk(fd, F_SETLK, F_WRLCK, 30, 5); }
static const char *probe_flock_nb(int fd) { return flock(fd, LOCK_EX | LOCK_NB) < 0 ? ename(errno) : "ok"; }

// POSIX quirks a server must keep: closing ANY fd of the file drops the process's record locks;
// unlocking the middle of a range splits it; a process never conflicts with itself, while OFD locks
// of two open file descriptions in one process do. Prints one word per probe.
static int op_lock_semantics(const char *path, const char *which) {
  int fd = open(path, O_RDWR);
  if (fd < 0) return res(-1);
  if (!strcmp(which, "close-releases")) {
    setlk(fd, F_SETLK, F_WRLCK, 0, 10);
    in_child(path, probe_wr_0_10);
    close(open(path, O_RDONLY));
    return in_child(path, probe_wr_0_10);
  }
  if (!strcmp(which, "split")) {
    setlk(fd, F_SETLK, F_WRLCK, 0, 100);
    setlk(fd, F_SETLK, F_UNLCK, 40, 20);
    in_child(path, probe_wr_45_5);
    return in_child(path, probe_wr_30_5);
  }
  if (!strcmp(which, "same-process")) {
    int fd2 = open(path, O_RDWR);
    printf("%s ", setlk(fd, F_SETLK, F_WRLCK, 0, 10));
    printf("%s ", setlk(fd2, F_SETLK, F_WRLCK, 0, 10));
    setlk(fd, F_SETLK, F_UNLCK, 0, 0);
    printf("%s ", setlk(fd, F_OFD_SETLK, F_WRLCK, 0, 10));
    printf("%s ", setlk(fd2, F_OFD_SETLK, F_WRLCK, 0, 10));
    setlk(fd, F_OFD_SETLK, F_UNLCK, 0, 10);
    printf("%s\n", setlk(fd2, F_OFD_SETLK, F_WRLCK, 0, 10));
    return 0;
  }
  if (!strcmp(which, "upgrade")) {
    printf("%s ", setlk(fd, F_SETLK, F_RDLCK, 0, 10));
    printf("%s ", setlk(fd, F_SETLK, F_WRLCK, 0, 10));
    in_child(path, probe_wr_0_10);
    return 0;
  }
  if (!strcmp(which, "flock-close")) {
    flock(fd, LOCK_EX);
    int dupfd = dup(fd);
    close(fd);
    in_child(path, probe_flock_nb);
    close(dupfd);
    return in_child(path, probe_flock_nb);
  }
  if (!strcmp(which, "flock-convert")) {
    printf("%s ", flock(fd, LOCK_SH) < 0 ? ename(errno) : "ok");
    printf("%s ", flock(fd, LOCK_EX | LOCK_NB) < 0 ? ename(errno) : "ok");
    in_child(path, probe_flock_nb);
    return 0;
  }
  return usage("lock semantics: close-releases|split|same-process|upgrade|flock-close|flock-convert");
}

// Reads a directory while creating and deleting entries in it. Every entry present for the whole
// scan must be returned exactly once. Prints "ok" or what went wrong.
static int op_readdir_modify(const char *dir, long n) {
  DIR *d = opendir(dir);
  if (!d) return res(-1);
  char *seen = calloc((size_t)n, 1);
  long dups = 0, count = 0;
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d))) {
    long idx;
    if (sscanf(e->d_name, "e%ld", &idx) == 1 && idx >= 0 && idx < n) {
      if (seen[idx]++) dups++;
      count++;
    }
    if (count == n / 4) {
      // Deleting only odd entries from the upper half and creating new ones; the even ones must all show up.
      for (long i = n / 2 + 1; i < n; i += 2) {
        snprintf(path, sizeof path, "%s/e%ld", dir, i);
        unlink(path);
      }
      for (long i = 0; i < n / 4; i++) {
        snprintf(path, sizeof path, "%s/new%ld", dir, i);
        close(open(path, O_CREAT | O_WRONLY, 0644));
      }
    }
  }
  closedir(d);
  long missing = 0;
  for (long i = 0; i < n; i++)
    if (!seen[i] && (i <= n / 2 || i % 2 == 0)) missing++;
  if (dups || missing) printf("dups=%ld missing=%ld\n", dups, missing);
  else puts("ok");
  return 0;
}

// Counts directory entries other than "." and "..", and checks "." and ".." are both present.
static int op_count(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return res(-1);
  long n = 0;
  int dot = 0, dotdot = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".")) dot++;
    else if (!strcmp(e->d_name, "..")) dotdot++;
    else n++;
  }
  closedir(d);
  printf("%ld dots=%d%d\n", n, dot, dotdot);
  return 0;
}

// Creates N empty files e0..e(N-1) in DIR.
static int op_mkfiles(const char *dir, long n) {
  char path[4096];
  for (long i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s/e%ld", dir, i);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return res(-1);
    close(fd);
  }
  return res(0);
}

static int op_fdwork(const char *path) {
  // ftruncate and fchmod on an fd whose mode no longer allows writing: the open fd keeps its rights.
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return res(-1);
  if (fchmod(fd, 0400) < 0) return res(-1);
  long a = write(fd, "data", 4);
  long b = ftruncate(fd, 2);
  struct stat st;
  fstat(fd, &st);
  printf("write=%s ftruncate=%s size=%lld\n", a == 4 ? "ok" : ename(errno), b == 0 ? "ok" : ename(errno),
         (long long)st.st_size);
  return 0;
}

// POSIX ACLs without libacl: the value of system.posix_acl_{access,default} as the kernel
// exchanges it (struct posix_acl_xattr_header/entry): le32 version 2, then {le16 tag, le16 perm,
// le32 id} entries sorted by tag, then id. SPEC is the compact text form with numeric ids,
// "u::rwx,u:1000:rw-,g::r-x,g:2000:r--,m::rwx,o::r--"; "aclget" prints the same form back (or the
// errno name), so a value read in the guest and one read on the host compare as words.
#define ACL_VERSION 2
#define ACL_USER_OBJ 0x01
#define ACL_USER 0x02
#define ACL_GROUP_OBJ 0x04
#define ACL_GROUP 0x08
#define ACL_MASK 0x10
#define ACL_OTHER 0x20
#define ACL_UNDEFINED_ID 0xffffffffu
#define ACL_MAX_ENTRIES 64

struct acl_ent {
  uint16_t tag, perm;
  uint32_t id;
};

static const char *acl_xattr(const char *which) {
  if (!strcmp(which, "access")) return "system.posix_acl_access";
  if (!strcmp(which, "default")) return "system.posix_acl_default";
  return NULL;
}

static int acl_cmp(const void *a, const void *b) {
  const struct acl_ent *x = a, *y = b;
  if (x->tag != y->tag) return x->tag < y->tag ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

// Parses SPEC into e (at most ACL_MAX_ENTRIES); returns the count, -1 on a syntax error.
static int acl_parse(const char *spec, struct acl_ent *e) {
  char buf[4096];
  int n = 0;
  snprintf(buf, sizeof buf, "%s", spec);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (n == ACL_MAX_ENTRIES) return -1;
    char *c1 = strchr(tok, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2 || strlen(c2 + 1) != 3) return -1;
    *c1 = *c2 = 0;
    const char *tag = tok, *id = c1 + 1, *perm = c2 + 1;
    int named = *id != 0;
    if (!strcmp(tag, "u") || !strcmp(tag, "user")) e[n].tag = named ? ACL_USER : ACL_USER_OBJ;
    else if (!strcmp(tag, "g") || !strcmp(tag, "group")) e[n].tag = named ? ACL_GROUP : ACL_GROUP_OBJ;
    else if ((!strcmp(tag, "m") || !strcmp(tag, "mask")) && !named) e[n].tag = ACL_MASK;
    else if ((!strcmp(tag, "o") || !strcmp(tag, "other")) && !named) e[n].tag = ACL_OTHER;
    else return -1;
    char *end;
    e[n].id = named ? (uint32_t)strtoul(id, &end, 10) : ACL_UNDEFINED_ID;
    if (named && *end) return -1;
    e[n].perm = 0;
    for (int i = 0; i < 3; i++) {
      if (perm[i] == "rwx"[i]) e[n].perm |= (uint16_t)(4 >> i);
      else if (perm[i] != '-') return -1;
    }
    n++;
  }
  qsort(e, (size_t)n, sizeof e[0], acl_cmp);
  return n;
}

static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, (uint16_t)v), put16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const unsigned char *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }

static int op_aclset(const char *path, const char *which, const char *spec) {
  const char *name = acl_xattr(which);
  if (!name) return usage("acl type: access|default");
  struct acl_ent e[ACL_MAX_ENTRIES];
  int n = acl_parse(spec, e);
  if (n < 0) return usage("acl spec: TAG:[ID]:PERM,... with TAG u|g|m|o and PERM like rw-");
  unsigned char value[4 + 8 * ACL_MAX_ENTRIES];
  put32(value, ACL_VERSION);
  for (int i = 0; i < n; i++) {
    put16(value + 4 + 8 * i, e[i].tag);
    put16(value + 6 + 8 * i, e[i].perm);
    put32(value + 8 + 8 * i, e[i].id);
  }
  return res(setxattr(path, name, value, 4 + 8 * (size_t)n, 0));
}

static int op_aclget(const char *path, const char *which) {
  const char *name = acl_xattr(which);
  if (!name) return usage("acl type: access|default");
  unsigned char value[4 + 8 * 1024];
  ssize_t r = getxattr(path, name, value, sizeof value);
  if (r < 0) return res(-1);
  if (r < 4 || (r - 4) % 8 || get32(value) != ACL_VERSION) {
    printf("malformed(%zd bytes)\n", r);
    return 0;
  }
  if (r == 4) puts("<empty>");
  for (ssize_t off = 4; off < r; off += 8) {
    uint16_t tag = get16(value + off), perm = get16(value + off + 2);
    uint32_t id = get32(value + off + 4);
    const char *t = tag == ACL_USER_OBJ || tag == ACL_USER     ? "u"
                    : tag == ACL_GROUP_OBJ || tag == ACL_GROUP ? "g"
                    : tag == ACL_MASK                          ? "m"
                    : tag == ACL_OTHER                         ? "o"
                                                               : "?";
    printf("%s:", t);
    if (tag == ACL_USER || tag == ACL_GROUP) printf("%u", id);
    else if (id != ACL_UNDEFINED_ID || !strcmp(t, "?")) printf("#%u/%#x", id, tag);
    printf(":%c%c%c%s", perm & 4 ? 'r' : '-', perm & 2 ? 'w' : '-', perm & 1 ? 'x' : '-', off + 8 < r ? "," : "\n");
  }
  return 0;
}

// "uid:gid mode" of PATH without following a symlink, the mode in octal with its special bits.
static int op_owner(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) return res(-1);
  printf("%u:%u %o\n", (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777));
  return 0;
}

// --- live migration: descriptors held across the move ----------------------------------------------

// "ok", or what the descriptor read at offset 0 instead of WANT (or the errno name).
static const char *pread_is(int fd, const char *want) {
  static char buf[128];
  char got[64];
  ssize_t r = pread(fd, got, sizeof got - 1, 0);
  if (r < 0) return ename(errno);
  got[r] = 0;
  if (!strcmp(got, want)) return "ok";
  snprintf(buf, sizeof buf, "content:%zd", r);
  return buf;
}

static const char *write_is(int fd, const char *data) {
  ssize_t r = write(fd, data, strlen(data));
  return r < 0 ? ename(errno) : r == (ssize_t)strlen(data) ? "ok" : "short";
}

// A fresh process asks for what FD's holder holds: a write lock (F_GETLK) and a flock.
static const char *probe_plock(int fd) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
  if (fcntl(fd, F_GETLK, &fl) < 0) return ename(errno);
  return fl.l_type == F_UNLCK ? "unlocked" : "held";
}
static const char *probe_flock(int fd) {
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return "unlocked";
  return errno == EWOULDBLOCK ? "held" : ename(errno);
}
static const char *child_probe(const char *path, const char *(*probe)(int)) {
  static char word[64];
  int p[2];
  if (pipe(p) < 0) return ename(errno);
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return ename(errno);
  if (pid == 0) {
    int fd = open(path, O_RDWR);
    const char *w = fd < 0 ? ename(errno) : probe(fd);
    ssize_t ignored = write(p[1], w, strlen(w));
    (void)ignored;
    _exit(0);
  }
  close(p[1]);
  ssize_t r = read(p[0], word, sizeof word - 1);
  close(p[0]);
  waitpid(pid, NULL, 0);
  word[r > 0 ? r : 0] = 0;
  return word;
}

// Opens descriptors of every kind in DIR, says "held" (and creates DIR/held), waits for DIR/go (the
// host creates it once the guest runs on the destination), then uses each descriptor and prints one
// "<case>: <word>" line per case. DIR must hold r.txt ("read-me\n"), the folder d with e1 and e2,
// and, if the case is wanted, vanish ("vanish\n", deleted by the host while held). With OPTS
// "nounlink" there is no unlinked-while-open file (an inode without a name cannot be found by path).
static int op_hold(const char *dir, const char *opts) {
  int with_unlink = !strstr(opts, "nounlink");
  if (chdir(dir) < 0) return res(-1);
  int r = open("r.txt", O_RDONLY);
  int w = open("w.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
  int a = open("a.txt", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
  DIR *d = opendir("d");
  int rn = open("ren-old", O_RDWR | O_CREAT | O_TRUNC, 0644);
  int un = with_unlink ? open("unl", O_RDWR | O_CREAT | O_TRUNC, 0644) : open("unl", O_RDWR | O_CREAT, 0644);
  int pl = open("plock", O_RDWR | O_CREAT, 0644);
  int fl = open("flock", O_RDWR | O_CREAT, 0644);
  int v = open("vanish", O_RDWR);
  if (r < 0 || w < 0 || a < 0 || !d || rn < 0 || un < 0 || pl < 0 || fl < 0) return res(-1);
  const char *setup[] = {
      write_is(w, "before\n"), write_is(a, "A1\n"), write_is(rn, "R1\n"), write_is(un, "U1\n"),
      rename("ren-old", "ren-new") < 0 ? ename(errno) : "ok", !with_unlink ? "ok" : unlink("unl") < 0 ? ename(errno) : "ok",
      setlk(pl, F_SETLK, F_WRLCK, 0, 100), flock(fl, LOCK_EX) < 0 ? ename(errno) : "ok",
  };
  for (size_t i = 0; i < sizeof setup / sizeof *setup; i++) {
    if (strcmp(setup[i], "ok")) {
      printf("setup %zu: %s\n", i, setup[i]);
      return 1;
    }
  }
  while (readdir(d)) {}
  printf("held vanish=%s\n", v < 0 ? ename(errno) : "open");
  fflush(stdout);
  int h = open("held", O_WRONLY | O_CREAT, 0644);
  if (h >= 0) close(h);
  struct stat st;
  for (int i = 0; stat("go", &st) < 0; i++) {
    if (i > 6000) return usage("no go file after 600 s");
    usleep(100000);
  }
  printf("read-fd: %s\n", pread_is(r, "read-me\n"));
  const char *wr = write_is(w, "after\n");
  printf("write-fd: %s\n", strcmp(wr, "ok") ? wr : pread_is(w, "before\nafter\n"));
  printf("append-fd: %s\n", write_is(a, "A2\n"));
  rewinddir(d);
  char names[256] = "";
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strlen(names) + strlen(e->d_name) + 2 < sizeof names) {
      strcat(names, *names ? "," : "");
      strcat(names, e->d_name);
    }
  }
  printf("dir-fd: %s\n", !strcmp(names, "e1,e2") || !strcmp(names, "e2,e1") ? "ok" : *names ? names : "empty");
  printf("renamed-fd: %s\n", write_is(rn, "R2\n"));
  if (with_unlink) {
    const char *ur = pread_is(un, "U1\n");
    printf("unlinked-fd: %s\n", strcmp(ur, "ok") ? ur : write_is(un, "U2\n"));
  }
  printf("posix-lock: %s\n", child_probe("plock", probe_plock));
  printf("flock: %s\n", child_probe("flock", probe_flock));
  if (v >= 0) printf("vanished-fd: %s\n", pread_is(v, "vanish\n"));
  int fds[] = {r, w, a, rn, un, pl, fl};
  int bad = 0;
  for (size_t i = 0; i < sizeof fds / sizeof *fds; i++) bad += close(fds[i]) < 0;
  bad += closedir(d) < 0;
  printf("close: %s\n", bad ? "failed" : "ok");
  return 0;
}

int main(int argc, char **argv) {
  int i = 1;
  if (i + 1 < argc && !strcmp(argv[i], "-u")) {
    int rc = drop_to(argv[i + 1]);
    if (rc) return rc;
    i += 2;
  }
  if (i >= argc) return usage("no operation");
  const char *op = argv[i];
  char **a = argv + i + 1;
  int n = argc - i - 1;
#define NEED(k)                                                        \
  do {                                                                 \
    if (n < (k)) return usage("too few arguments for an operation"); \
  } while (0)
  if (!strcmp(op, "exec")) {
    NEED(1);
    execv(a[0], a);
    return res(-1);
  }
  if (!strcmp(op, "open")) {
    NEED(2);
    int fd = open(a[0], parse_flags(a[1]), n > 2 ? (mode_t)strtol(a[2], NULL, 8) : 0644);
    return res(fd);
  }
  if (!strcmp(op, "mkdir")) { NEED(2); return res(mkdir(a[0], (mode_t)strtol(a[1], NULL, 8))); }
  if (!strcmp(op, "rmdir")) { NEED(1); return res(rmdir(a[0])); }
  if (!strcmp(op, "unlink")) { NEED(1); return res(unlink(a[0])); }
  if (!strcmp(op, "rename")) { NEED(2); return res(rename(a[0], a[1])); }
  if (!strcmp(op, "rename2")) { NEED(3); return op_rename2(a[0], a[1], a[2]); }
  if (!strcmp(op, "link")) { NEED(2); return res(link(a[0], a[1])); }
  if (!strcmp(op, "symlink")) { NEED(2); return res(symlink(a[0], a[1])); }
  if (!strcmp(op, "readlink")) {
    NEED(1);
    char buf[4096];
    ssize_t r = readlink(a[0], buf, sizeof buf - 1);
    if (r < 0) return res(-1);
    buf[r] = 0;
    puts(buf);
    return 0;
  }
  if (!strcmp(op, "mknod")) {
    NEED(2);
    mode_t t = !strcmp(a[1], "fifo") ? S_IFIFO : !strcmp(a[1], "sock") ? S_IFSOCK : !strcmp(a[1], "chr") ? S_IFCHR : S_IFREG;
    return res(mknod(a[0], t | 0644, t == S_IFCHR ? makedev(1, 3) : 0));
  }
  if (!strcmp(op, "chmod")) { NEED(2); return res(chmod(a[0], (mode_t)strtol(a[1], NULL, 8))); }
  if (!strcmp(op, "chown")) { NEED(3); return res(chown(a[0], (uid_t)num(a[1]), (gid_t)num(a[2]))); }
  if (!strcmp(op, "lchown")) { NEED(3); return res(lchown(a[0], (uid_t)num(a[1]), (gid_t)num(a[2]))); }
  if (!strcmp(op, "truncate")) { NEED(2); return res(truncate(a[0], num(a[1]))); }
  if (!strcmp(op, "access")) {
    NEED(2);
    int m = 0;
    for (const char *c = a[1]; *c; c++) m |= *c == 'r' ? R_OK : *c == 'w' ? W_OK : *c == 'x' ? X_OK : F_OK;
    return res(access(a[0], m));
  }
  if (!strcmp(op, "lstat")) {
    NEED(1);
    struct stat st;
    return res(lstat(a[0], &st));
  }
  if (!strcmp(op, "stat")) {
    NEED(1);
    struct stat st;
    return res(stat(a[0], &st));
  }
  if (!strcmp(op, "opendir")) {
    NEED(1);
    DIR *d = opendir(a[0]);
    return res(d ? 0 : -1);
  }
  if (!strcmp(op, "chdir")) { NEED(1); return res(chdir(a[0])); }
  if (!strcmp(op, "write")) { NEED(3); return op_write(a[0], a[1], a[2]); }
  if (!strcmp(op, "pread")) { NEED(3); return op_pread(a[0], num(a[1]), num(a[2])); }
  if (!strcmp(op, "append-pos")) { NEED(1); return op_append_pos(a[0]); }
  if (!strcmp(op, "unlink-open")) { NEED(1); return op_unlink_open(a[0]); }
  if (!strcmp(op, "rename-open")) { NEED(2); return op_rename_open(a[0], a[1]); }
  if (!strcmp(op, "times")) { NEED(1); return op_times(a[0]); }
  if (!strcmp(op, "utimens")) { NEED(3); return op_utimens(a[0], a[1], a[2], 0); }
  if (!strcmp(op, "lutimens")) { NEED(3); return op_utimens(a[0], a[1], a[2], AT_SYMLINK_NOFOLLOW); }
  if (!strcmp(op, "ctime")) { NEED(2); return op_ctime_bumps(a[0], a[1]); }
  if (!strcmp(op, "setx")) { NEED(3); return op_setx(a[0], a[1], a[2], n > 3 ? a[3] : NULL, 0); }
  if (!strcmp(op, "lsetx")) { NEED(3); return op_setx(a[0], a[1], a[2], n > 3 ? a[3] : NULL, 1); }
  if (!strcmp(op, "getx")) { NEED(2); return op_getx(a[0], a[1], n > 2 ? num(a[2]) : 4096, 0); }
  if (!strcmp(op, "lgetx")) { NEED(2); return op_getx(a[0], a[1], n > 2 ? num(a[2]) : 4096, 1); }
  if (!strcmp(op, "listx")) { NEED(2); return op_listx(a[0], a[1], n > 2 ? num(a[2]) : -1); }
  if (!strcmp(op, "rmx")) { NEED(2); return res(removexattr(a[0], a[1])); }
  if (!strcmp(op, "falloc")) { NEED(4); return op_falloc(a[0], a[1], num(a[2]), num(a[3])); }
  if (!strcmp(op, "seek")) { NEED(3); return op_seek(a[0], a[1], num(a[2])); }
  if (!strcmp(op, "cfr")) { NEED(5); return op_cfr(a[0], a[1], num(a[2]), num(a[3]), num(a[4])); }
  if (!strcmp(op, "tmpfile")) { NEED(2); return op_tmpfile(a[0], a[1]); }
  if (!strcmp(op, "statfs")) { NEED(1); return op_statfs(a[0]); }
  if (!strcmp(op, "statx")) { NEED(1); return op_statx(a[0]); }
  if (!strcmp(op, "flock")) { NEED(3); return op_flock(a[0], a[1], a[2]); }
  if (!strcmp(op, "trylock")) {
    // A fresh process asks for a write lock on the whole file, and a flock: any lock left behind by
    // an earlier, exited process shows up here.
    NEED(1);
    int fd = open(a[0], O_RDWR);
    if (fd < 0) return res(-1);
    printf("%s ", setlk(fd, F_SETLK, F_WRLCK, 0, 0));
    puts(flock(fd, LOCK_EX | LOCK_NB) < 0 ? ename(errno) : "ok");
    return 0;
  }
  if (!strcmp(op, "locksem")) { NEED(2); return op_lock_semantics(a[0], a[1]); }
  if (!strcmp(op, "posixlock")) { NEED(3); return op_posixlock(a[0], a[1], a[2], n > 3 && !strcmp(a[3], "whole")); }
  if (!strcmp(op, "readdir-modify")) { NEED(2); return op_readdir_modify(a[0], num(a[1])); }
  if (!strcmp(op, "count")) { NEED(1); return op_count(a[0]); }
  if (!strcmp(op, "mkfiles")) { NEED(2); return op_mkfiles(a[0], num(a[1])); }
  if (!strcmp(op, "fdwork")) { NEED(1); return op_fdwork(a[0]); }
  if (!strcmp(op, "aclset")) { NEED(3); return op_aclset(a[0], a[1], a[2]); }
  if (!strcmp(op, "aclget")) { NEED(2); return op_aclget(a[0], a[1]); }
  if (!strcmp(op, "owner")) { NEED(1); return op_owner(a[0]); }
  if (!strcmp(op, "hold")) { NEED(1); return op_hold(a[0], n > 1 ? a[1] : ""); }
  return usage("unknown operation");
}
