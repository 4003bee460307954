/* nbdkit-vhd: advisory locks on the files of a chain.
 *
 * The top file is locked exclusively when it is opened for writing and
 * shared otherwise; parents are always locked shared.  So two writers
 * cannot open one chain, and nobody can write a file that is the parent
 * of a chain being served.  flock locks belong to the open file
 * description, so closing some other descriptor of the same file (as
 * parent probing does) does not drop them, unlike POSIX record locks.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
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
lock_holder (const struct vhd_file *f)
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
process_with_file_open (const struct vhd_file *f)
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

int
vhd_lock_file (struct vhd_file *f, bool exclusive)
{
  long pid;
  char name[64];

  if (flock (f->fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
    return 0;
  if (errno != EWOULDBLOCK) {
    vhd_error ("%s: lock: %m", f->path);
    return -1;
  }
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
