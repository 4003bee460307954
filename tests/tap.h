/* SPDX-License-Identifier: BSD-3-Clause */
/* Minimal TAP output for the C unit tests. */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>
#include <stdlib.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                   \
  do {                                                  \
    int ok_ = (cond);                                   \
    printf ("%s %d - ", ok_ ? "ok" : "not ok", ++tap_n); \
    printf (__VA_ARGS__);                               \
    printf ("\n");                                      \
    if (!ok_) {                                         \
      tap_failed++;                                     \
      printf ("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                   \
    fflush (stdout);                                    \
  } while (0)

static inline int
tap_done (void)
{
  printf ("1..%d\n", tap_n);
  return tap_failed ? 1 : 0;
}

#endif
