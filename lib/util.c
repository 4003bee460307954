/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: small helpers of the core: whole-buffer I/O and names. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
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
