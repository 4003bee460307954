/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the Windows form of this host's paths, as a child records
 * its parent (VHD W2ku/W2ru locators, VHDX absolute_win32_path and
 * relative_path).  The reading side is locator.c (windows_to_posix).
 *
 * Paths get backslashes and no drive letter (this host has none).
 * Relative paths are relative to the child's directory and start with
 * .\ (as Windows writes them) unless they begin with ..\ to climb out
 * of it.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* "prefix" + s with every '/' turned into '\'. */
static char *
backslashed (const char *s, const char *prefix)
{
  char *r, *p;

  if (asprintf (&r, "%s%s", prefix, s) == -1)
    return NULL;
  for (p = r; *p; p++)
    if (*p == '/')
      *p = '\\';
  return r;
}

char *
vhd_windows_path (const char *path)
{
  return backslashed (path, "");
}

char *
vhd_windows_relative_path (const char *child_dir, const char *parent_path)
{
  char *rel = vhd_relative_path (child_dir, parent_path), *r;

  if (rel == NULL)
    return NULL;
  r = backslashed (rel, strncmp (rel, "../", 3) ? ".\\" : "");
  free (rel);
  return r;
}
