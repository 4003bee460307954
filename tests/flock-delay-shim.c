/* SPDX-License-Identifier: BSD-3-Clause */
/* Test-only LD_PRELOAD shim: every flock(LOCK_UN) returns only after
 * FLOCK_DELAY_MS milliseconds (default 300).  It widens the window in
 * which a process that trades a shared flock for an exclusive one holds
 * no lock at all, so tests/test-capabilities.sh can make two servers
 * race through it every time instead of once in a million. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/file.h>
#include <time.h>

int
flock (int fd, int op)
{
  static int (*real) (int, int);
  int r;

  if (real == NULL)
    real = (int (*) (int, int)) dlsym (RTLD_NEXT, "flock");
  r = real (fd, op);
  if ((op & ~LOCK_NB) == LOCK_UN) {
    const char *ms = getenv ("FLOCK_DELAY_MS");
    long d = ms ? atol (ms) : 300;
    struct timespec ts = { d / 1000, (d % 1000) * 1000000 };
    nanosleep (&ts, NULL);
  }
  return r;
}
