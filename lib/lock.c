/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: advisory locks on the files of a chain.
 *
 * The top file is locked exclusively when it is opened for writing and
 * shared otherwise; parents are always locked shared.  So two writers
 * cannot open one chain, and nobody can write a file that is the parent
 * of a chain being served.  flock locks belong to the open file
 * description, so closing some other descriptor of the same file (as
 * parent probing does) does not drop them, unlike POSIX record locks.
 *
 * The writers' byte.  flock cannot turn a shared lock into an exclusive
 * one atomically (Linux drops the old lock first, then looks for
 * conflicts), and a server that opened the chain read-only trades its
 * shared lock for an exclusive one when the first client wants to
 * write.  Between the two, another process could take the exclusive
 * lock and leave the server with none.  So whoever takes an exclusive
 * lock first takes an open-file-description lock on one byte far past
 * the end of any VHD (a write lock, or a read lock from a read-only
 * descriptor), and keeps it while the file stays open; a server trading
 * up holds the write lock on that byte through the whole trade.  While
 * it does, nobody can take the exclusive flock, so if the trade fails
 * (other readers hold shared locks) the shared lock can always be taken
 * back.  qemu's image locks use bytes 100 to 300: no conflict.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

/* Find who holds a lock on the file from /proc/locks (Linux), to tell
 * the user which process to look at.  Returns the pid or -1. */
static long
lock_holder (const struct vhd_layer *f)
{
  FILE *fp = fopen ("/proc/locks", "r");
  char line[256];
  long pid = -1;

  if (fp == NULL)
    return -1;
  while (fgets (line, sizeof line, fp)) {
    unsigned maj, min;
    unsigned long long ino;
    long p;
    char kind[16];

    /* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" */
    if (sscanf (line, "%*d: %15s %*s %*s %ld %x:%x:%llu", kind, &p, &maj,
                &min, &ino) == 5 &&
        strcmp (kind, "FLOCK") == 0 &&
        makedev (maj, min) == f->dev && ino == (unsigned long long) f->ino &&
        p != (long) getpid ()) {
      pid = p;
      break;
    }
  }
  fclose (fp);
  return pid;
}

/* flock records the process that took the lock, and a daemon takes its
 * locks before it forks into the background: that pid may be gone.
 * Then look for a live process that has the file open. */
static bool
process_exists (long pid)
{
  char path[64];
  snprintf (path, sizeof path, "/proc/%ld", pid);
  return access (path, F_OK) == 0;
}

static long
process_with_file_open (const struct vhd_layer *f)
{
  DIR *proc = opendir ("/proc");
  struct dirent *p;
  long found = -1;

  if (proc == NULL)
    return -1;
  while (found == -1 && (p = readdir (proc)) != NULL) {
    long pid = atol (p->d_name);
    char path[300];
    DIR *fds;
    struct dirent *fd;

    if (pid <= 0 || pid == (long) getpid ())
      continue;
    snprintf (path, sizeof path, "/proc/%ld/fd", pid);
    if ((fds = opendir (path)) == NULL)
      continue;
    while ((fd = readdir (fds)) != NULL) {
      struct stat st;
      snprintf (path, sizeof path, "/proc/%ld/fd/%s", pid, fd->d_name);
      if (fd->d_name[0] != '.' && stat (path, &st) == 0 &&
          st.st_dev == f->dev && st.st_ino == f->ino) {
        found = pid;
        break;
      }
    }
    closedir (fds);
  }
  closedir (proc);
  return found;
}

static void
process_name (long pid, char *buf, size_t len)
{
  char path[64];
  FILE *fp;

  snprintf (buf, len, "unknown");
  snprintf (path, sizeof path, "/proc/%ld/comm", pid);
  fp = fopen (path, "r");
  if (fp == NULL)
    return;
  if (fgets (buf, len, fp))
    buf[strcspn (buf, "\n")] = '\0';
  fclose (fp);
}

#define WRITERS_BYTE (1LL << 62)

/* 0, or -1 with errno (EAGAIN when someone else holds it). */
static int
take_writers_byte (int fd, bool write)
{
  struct flock fl = {
    .l_type = write ? F_WRLCK : F_RDLCK,
    .l_whence = SEEK_SET,
    .l_start = WRITERS_BYTE,
    .l_len = 1,
  };

  if (fcntl (fd, F_OFD_SETLK, &fl) == 0)
    return 0;
  if (errno == EACCES)
    errno = EAGAIN;
  return -1;
}

static bool
fd_writable (int fd)
{
  int fl = fcntl (fd, F_GETFL);
  return fl != -1 && (fl & O_ACCMODE) != O_RDONLY;
}

/* Report that f is in use by someone else and fail with EBUSY. */
static int
in_use (const struct vhd_layer *f, bool exclusive)
{
  long pid;
  char name[64];

  pid = lock_holder (f);
  if (pid <= 0 || !process_exists (pid))
    pid = process_with_file_open (f);
  if (pid > 0) {
    process_name (pid, name, sizeof name);
    vhd_error ("%s: file is in use: locked by process %ld (%s); refusing "
               "to open it %s", f->path, pid, name,
               exclusive ? "for writing" : "while it may be written");
  }
  else
    vhd_error ("%s: file is in use: locked by another process; refusing "
               "to open it %s", f->path,
               exclusive ? "for writing" : "while it may be written");
  errno = EBUSY;
  return -1;
}

/* A lock was refused with err: someone else holds it (EWOULDBLOCK,
 * which is EAGAIN), or something else went wrong. */
static int
lock_failed (const struct vhd_layer *f, bool exclusive, int err)
{
  if (err == EWOULDBLOCK)
    return in_use (f, exclusive);
  errno = err;
  vhd_error ("%s: lock: %m", f->path);
  return -1;
}

/* The file is locked after it was parsed (every opener validates it
 * first).  A writer that finished in between, unseen by the lock, left
 * us a stale picture of its tables: compact or resize would then work
 * from it and undo the writer's commit.  Its writes changed the file's
 * modification or change time or its size since the open (fstat before
 * the parse): refuse, and the user runs the command again.  (Time
 * stamps are coarse, a tick of a few ms: two writes of the other
 * program straddling our open within one tick, then its exit before
 * our lock, would go unseen.) */
static int
unchanged_since_open (const struct vhd_layer *f)
{
  struct stat st;

  if (fstat (f->fd, &st) == -1) {
    vhd_error ("%s: %m", f->path);
    return -1;
  }
  if (st.st_size != f->opened_size ||
      st.st_mtim.tv_sec != f->opened_mtime.tv_sec ||
      st.st_mtim.tv_nsec != f->opened_mtime.tv_nsec ||
      st.st_ctim.tv_sec != f->opened_ctime.tv_sec ||
      st.st_ctim.tv_nsec != f->opened_ctime.tv_nsec) {
    vhd_error ("%s: file is in use: another process changed it while it "
               "was being opened; try again once it has finished", f->path);
    errno = EBUSY;
    return -1;
  }
  return 0;
}

int
vhd_lock_file (struct vhd_layer *f, bool exclusive)
{
  if (exclusive && take_writers_byte (f->fd, fd_writable (f->fd)) == -1)
    return lock_failed (f, true, errno);
  if (flock (f->fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == -1)
    return lock_failed (f, exclusive, errno);
  return unchanged_since_open (f);
}

int
vhd_lock_upgrade (struct vhd_layer *f, int wfd)
{
  int err;

  if (take_writers_byte (wfd, true) == -1)
    return lock_failed (f, true, errno);
  /* Nobody can take the exclusive lock from here on (see the top). */
  flock (f->fd, LOCK_UN);
  if (flock (wfd, LOCK_EX | LOCK_NB) == 0)
    return 0;
  err = errno;
  if (flock (f->fd, LOCK_SH | LOCK_NB) == -1) {
    /* Only a process that ignores the writers' byte gets here.  Wait
     * for our shared lock rather than go on without one. */
    vhd_warning ("%s: another process took the file while it was being "
                 "opened for writing; waiting for it to let go", f->path);
    while (flock (f->fd, LOCK_SH) == -1 && errno == EINTR)
      ;
  }
  return lock_failed (f, true, err);
}
