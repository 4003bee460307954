/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: run a fuzz target on files, without libFuzzer.
 *
 * Built in the normal (gcc) build as fuzz/fuzz-*-standalone, so that
 * make check replays the seed corpus and every regression input
 * (tests/test-fuzz-regressions.sh).  Usage: PROG FILE...; a crash is a
 * failure, any return from the target is success.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include "common.h"

int
main (int argc, char **argv)
{
  int i;

  /* make check runs check_PROGRAMS as tests, with no arguments. */
  if (argc == 1) {
    printf ("1..0 # SKIP run by tests/test-fuzz-regressions.sh\n");
    return 0;
  }
  for (i = 1; i < argc; i++) {
    FILE *fp = fopen (argv[i], "rb");
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;

    if (fp == NULL) {
      perror (argv[i]);
      return 1;
    }
    for (;;) {
      if (n == cap) {
        cap = cap ? cap * 2 : 65536;
        buf = realloc (buf, cap);
        if (buf == NULL) {
          perror ("realloc");
          return 1;
        }
      }
      size_t r = fread (buf + n, 1, cap - n, fp);
      if (r == 0)
        break;
      n += r;
    }
    if (ferror (fp)) {
      perror (argv[i]);
      return 1;
    }
    fclose (fp);
    LLVMFuzzerTestOneInput (buf, n);
    free (buf);
  }
  return 0;
}
