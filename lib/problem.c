/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: reporting problems found in a file's structure.
 *
 * The same validation code serves two masters.  A normal open stops at
 * the first real problem with an error message (vhd_error), and only
 * warns about what it can live with.  vhdtool check wants every
 * problem, each labelled with the file and the structure at fault, and
 * wants the examination to go on.  Validation code therefore describes
 * each problem once, with its severity, through vhd_report, and this
 * file decides what becomes of it.
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

bool
vhd_report (const struct vhd_open_options *opts, enum vhd_severity sev,
            const char *file, const char *structure, const char *suffix,
            const char *fs, ...)
{
  int saved_errno = errno;      /* the message may use %m */
  char what[1024];
  va_list args;

  va_start (args, fs);
  vsnprintf (what, sizeof what, fs, args);
  va_end (args);

  if (opts->problem) {
    opts->problem (opts->problem_opaque, file, structure, what);
    errno = saved_errno;
    return false;
  }
  switch (sev) {
  case VHD_NOTE:
    break;
  case VHD_WARN:
    vhd_warning ("%s: %s%s", file, what, suffix);
    break;
  case VHD_ERROR:
    vhd_error ("%s: %s%s", file, what, suffix);
    errno = saved_errno;
    return true;
  }
  errno = saved_errno;
  return false;
}

void
vhd_ignore_problem (void *opaque, const char *file, const char *structure,
                    const char *what)
{
}
