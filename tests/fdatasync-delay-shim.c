/* SPDX-License-Identifier: BSD-3-Clause */
/* Test-only LD_PRELOAD shim: every fdatasync takes FDATASYNC_DELAY_MS
 * milliseconds longer (default 10), as on a slow disk.  A flush of the
 * vhd plugin marks the entries of the blocks it flushes clean, syncs,
 * and only then writes their bitmaps (lib/write.c): the delay holds
 * that window open long enough for concurrent requests to fill the
 * cache and evict, so tests/test-cache-eviction.sh sees what an
 * entry evicted inside it would lose. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int
fdatasync (int fd)
{
  static int (*real) (int);
  const char *ms = getenv ("FDATASYNC_DELAY_MS");
  long d = ms ? atol (ms) : 10;
  struct timespec ts = { d / 1000, (d % 1000) * 1000000 };

  if (real == NULL)
    real = (int (*) (int)) dlsym (RTLD_NEXT, "fdatasync");
  nanosleep (&ts, NULL);
  return real (fd);
}
