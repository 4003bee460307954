/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: helpers shared by the fuzz targets (common.h). */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "vhdx-template.h"

const char *const FUZZ_NAMES[FUZZ_MAX_FILES] = { "a.vhd", "b.vhd", "c.vhd" };

static char dir[64];

static void
remove_dir (void)
{
  DIR *d = opendir (dir);
  struct dirent *e;

  if (d == NULL)
    return;
  while ((e = readdir (d)) != NULL)
    if (strcmp (e->d_name, ".") && strcmp (e->d_name, ".."))
      unlinkat (dirfd (d), e->d_name, 0);
  closedir (d);
  rmdir (dir);
}

const char *
fuzz_dir (void)
{
  struct stat st;

  if (dir[0])
    return dir;
  snprintf (dir, sizeof dir, "%s/vhdfuzz.XXXXXX",
            stat ("/dev/shm", &st) == 0 && S_ISDIR (st.st_mode)
            && access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  if (mkdtemp (dir) == NULL) {
    perror ("fuzz: mkdtemp");
    abort ();
  }
  atexit (remove_dir);
  return dir;
}

const char *
fuzz_path (int slot, const char *name)
{
  static char buf[4][128];

  snprintf (buf[slot], sizeof buf[slot], "%s/%s", fuzz_dir (), name);
  return buf[slot];
}

void
fuzz_write_file (const char *name, const uint8_t *data, size_t size)
{
  const char *path = fuzz_path (3, name);
  int fd;

  /* A fresh inode each time: a writable open earlier may have left
   * the old one larger. */
  unlink (path);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    perror (path);
    abort ();
  }
  while (size > 0) {
    ssize_t r = write (fd, data, size);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      perror (path);
      abort ();
    }
    data += r;
    size -= r;
  }
  close (fd);
}

void
fuzz_unlink (const char *name)
{
  unlink (fuzz_path (3, name));
}

/* Calls fn for each record of the container (see common.h) after the
 * flags byte, with its index: a length past the end takes what is
 * left; fewer than 4 bytes left make an empty last record.  Returns the
 * number of records (at least 1). */
static int
each_record (const uint8_t *data, size_t size,
             void (*fn) (int k, const uint8_t *rec, size_t len))
{
  int n = 0;

  if (size > 0)
    data++, size--;
  do {
    size_t len = 0;

    if (size >= 4) {
      len = data[0] | (data[1] << 8) | (data[2] << 16) |
            ((size_t) data[3] << 24);
      data += 4, size -= 4;
      if (len > size)
        len = size;
    }
    else
      size = 0;
    fn (n, data, len);
    data += len, size -= len;
    n++;
  } while (size > 0 && n < FUZZ_MAX_FILES);
  return n;
}

static void
write_record (int k, const uint8_t *rec, size_t len)
{
  fuzz_write_file (FUZZ_NAMES[k], rec, len);
}

int
fuzz_unpack (const uint8_t *data, size_t size, uint8_t *flags)
{
  int n;

  *flags = size > 0 ? data[0] : 0;
  n = each_record (data, size, write_record);
  /* Files of a previous input that this one has not rewritten must not
   * take part (nor those of a VHDX input, which a locator may name). */
  for (int k = n; k < FUZZ_MAX_FILES; k++)
    fuzz_unlink (FUZZ_NAMES[k]);
  for (int k = 0; k < VHDX_FUZZ_FILES; k++)
    fuzz_unlink (VHDX_FUZZ_NAMES[k]);
  return n;
}

/* Aborts unless fuzz_dir()/FUZZ_NAMES[k] holds exactly rec. */
static void
assert_record_intact (int k, const uint8_t *rec, size_t len)
{
  static uint8_t buf[65536];
  int fd = open (fuzz_path (3, FUZZ_NAMES[k]), O_RDONLY | O_CLOEXEC);
  bool same = fd != -1;
  size_t done = 0;

  while (same) {
    ssize_t r = read (fd, buf, sizeof buf);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      same = r == 0 && done == len;
      break;
    }
    same = (size_t) r <= len - done && memcmp (buf, rec + done, r) == 0;
    done += r;
  }
  if (fd != -1)
    close (fd);
  if (!same) {
    fprintf (stderr, "fuzz: %s was modified: only the writable top "
             "may change\n", FUZZ_NAMES[k]);
    abort ();
  }
}

void
fuzz_assert_inputs_intact (const uint8_t *data, size_t size)
{
  each_record (data, size, assert_record_intact);
}

static void
discard (enum vhd_msg_level level, const char *msg)
{
  (void) level, (void) msg;
}

void
fuzz_quiet (void)
{
  static int done;

  if (!done) {
    /* A verbose run (FUZZ_VERBOSE=1) keeps the messages: useful when
     * looking at what a regression input does. */
    if (getenv ("FUZZ_VERBOSE") == NULL)
      vhd_set_message_handler (discard);
    done = 1;
  }
}
