/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: small helpers: whole-buffer I/O, growable arrays (see
 * util.h, shared beyond lib/) and names. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

const char *
vhd_type_name (uint32_t disk_type)
{
  switch (disk_type) {
  case VHD_TYPE_FIXED: return "fixed";
  case VHD_TYPE_DYNAMIC: return "dynamic";
  case VHD_TYPE_DIFF: return "differencing";
  default: return "unknown";
  }
}

void
vhd_uuid_format (const uint8_t id[16], char out[37])
{
  snprintf (out, 37,
            "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x",
            id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7],
            id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
}

int
full_pread (int fd, void *buf, size_t count, uint64_t offset)
{
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;              /* unexpected end of file */
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

int
full_pwrite (int fd, const void *buf, size_t count, uint64_t offset)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t r = pwrite (fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

int
zero_file_range (int fd, uint64_t offset, uint64_t len)
{
  static const uint8_t zeros[65536];

  if (len == 0 ||
      fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                 len) == 0)
    return 0;
  while (len > 0) {
    size_t n = len < sizeof zeros ? len : sizeof zeros;

    if (full_pwrite (fd, zeros, n, offset) == -1)
      return -1;
    offset += n;
    len -= n;
  }
  return 0;
}

int
copy_file_bytes (int fd, uint64_t from, uint64_t len, uint64_t to)
{
  const size_t chunk = 1 << 20;
  uint8_t *buf = malloc (len < chunk ? (len ? len : 1) : chunk);
  uint64_t done;
  int err;

  if (buf == NULL)
    return -1;
  for (done = 0; done < len; ) {
    size_t n = len - done < chunk ? len - done : chunk;

    if (full_pread (fd, buf, n, from + done) == -1 ||
        full_pwrite (fd, buf, n, to + done) == -1) {
      err = errno;
      free (buf);
      errno = err;
      return -1;
    }
    done += n;
  }
  free (buf);
  return 0;
}

/* The smallest capacity given: the runlists of the block cache
 * (resolve.c) are kept as built, most of one or two runs, so a larger
 * floor would cost memory per cached block. */
#define ARRAY_MIN_CAP 4

int
array_reserve (void *array_ptr, size_t *cap, size_t n, size_t elem_size)
{
  void *old, *p;
  size_t new_cap;

  if (n <= *cap)
    return 0;
  new_cap = *cap <= SIZE_MAX / 2 ? *cap * 2 : SIZE_MAX;
  if (new_cap < n)
    new_cap = n;
  if (new_cap < ARRAY_MIN_CAP)
    new_cap = ARRAY_MIN_CAP;
  if (elem_size && new_cap > SIZE_MAX / elem_size) {
    errno = ENOMEM;
    return -1;
  }
  /* array_ptr points to a T * of the caller's; object pointers share
   * one representation on every platform this builds on (POSIX), and
   * memcpy keeps clear of aliasing rules. */
  memcpy (&old, array_ptr, sizeof old);
  p = realloc (old, new_cap * elem_size);
  if (p == NULL)
    return -1;
  memcpy (array_ptr, &p, sizeof p);
  *cap = new_cap;
  return 0;
}
