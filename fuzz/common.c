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

/* The next record of the container at *data (see common.h): sets *rec
 * and *len, advances past it.  A length past the end takes what is
 * left; fewer than 4 bytes left make an empty last record. */
static void
next_record (const uint8_t **data, size_t *size,
             const uint8_t **rec, size_t *len)
{
  const uint8_t *d = *data;

  *len = 0;
  if (*size >= 4) {
    *len = d[0] | (d[1] << 8) | (d[2] << 16) | ((size_t) d[3] << 24);
    d += 4, *size -= 4;
    if (*len > *size)
      *len = *size;
  }
  else
    *size = 0;
  *rec = d;
  *data = d + *len;
  *size -= *len;
}

int
fuzz_unpack (const uint8_t *data, size_t size, uint8_t *flags)
{
  const uint8_t *rec;
  size_t len;
  int n = 0;

  *flags = size > 0 ? data[0] : 0;
  if (size > 0)
    data++, size--;
  do {
    next_record (&data, &size, &rec, &len);
    fuzz_write_file (FUZZ_NAMES[n], rec, len);
    n++;
  } while (size > 0 && n < FUZZ_MAX_FILES);
  /* Files of a previous input that this one has not rewritten must not
   * take part. */
  for (int k = n; k < FUZZ_MAX_FILES; k++)
    fuzz_unlink (FUZZ_NAMES[k]);
  return n;
}

/* Whether fuzz_dir()/name holds exactly len bytes equal to want. */
static bool
same_content (const char *name, const uint8_t *want, size_t len)
{
  static uint8_t buf[65536];
  int fd = open (fuzz_path (3, name), O_RDONLY | O_CLOEXEC);
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
    same = (size_t) r <= len - done && memcmp (buf, want + done, r) == 0;
    done += r;
  }
  if (fd != -1)
    close (fd);
  return same;
}

void
fuzz_assert_inputs_intact (const uint8_t *data, size_t size)
{
  const uint8_t *rec;
  size_t len;
  int n = 0;

  if (size > 0)
    data++, size--;
  do {
    next_record (&data, &size, &rec, &len);
    if (!same_content (FUZZ_NAMES[n], rec, len)) {
      fprintf (stderr, "fuzz: %s was modified: only the writable top "
               "may change\n", FUZZ_NAMES[n]);
      abort ();
    }
    n++;
  } while (size > 0 && n < FUZZ_MAX_FILES);
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
