/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool: helpers shared by the commands. */
#include <config.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vhdtool.h"

const char *progname = "vhdtool";
static char last_error[1024];

static void
message (enum vhd_msg_level level, const char *msg)
{
  if (level == VHD_MSG_DEBUG)
    return;
  if (level == VHD_MSG_ERROR)
    snprintf (last_error, sizeof last_error, "%s", msg);
  fprintf (stderr, "%s: %s%s\n", progname,
           level == VHD_MSG_WARNING ? "warning: " : "", msg);
}

void
tool_init (void)
{
  vhd_set_message_handler (message);
}

const char *
tool_last_error (void)
{
  return last_error;
}

void
usage_error (const char *fs, ...)
{
  va_list args;

  fprintf (stderr, "%s: ", progname);
  va_start (args, fs);
  vfprintf (stderr, fs, args);
  va_end (args);
  fprintf (stderr, "\nTry '%s --help' for more information.\n", progname);
}

/* "8G", "100MiB", "512k", "1T", "4096": binary multiples. */
int
parse_size (const char *s, uint64_t *out)
{
  static const char suffixes[] = "KMGTPE";
  char *end;
  unsigned long long v;
  const char *p;
  int shift = 0;

  errno = 0;
  if (*s < '0' || *s > '9')
    return -1;
  v = strtoull (s, &end, 10);
  if (errno)
    return -1;
  if (*end) {
    p = strchr (suffixes, *end >= 'a' ? *end - 32 : *end);
    if (p == NULL)
      return (strcasecmp (end, "b") == 0) ? (*out = v, 0) : -1;
    shift = 10 * (p - suffixes + 1);
    end++;
    if (*end && strcasecmp (end, "b") != 0 && strcasecmp (end, "ib") != 0)
      return -1;
  }
  if (shift && v > (UINT64_MAX >> shift))
    return -1;
  *out = (uint64_t) v << shift;
  return 0;
}

void
json_string (FILE *fp, const char *s)
{
  fputc ('"', fp);
  for (; s && *s; s++) {
    unsigned char c = *s;
    if (c == '"' || c == '\\')
      fprintf (fp, "\\%c", c);
    else if (c < 0x20)
      fprintf (fp, "\\u%04x", c);
    else
      fputc (c, fp);
  }
  fputc ('"', fp);
}

void
human_size (uint64_t bytes, char *buf, size_t len)
{
  static const char *units[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
  double v = bytes;
  int u = 0;

  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf (buf, len, "%" PRIu64 " bytes", bytes);
  else
    snprintf (buf, len, "%.1f %s", v, units[u]);
}

/* vhd_step_fn.  The crash tests set VHDTOOL_TEST_KILL_AT to a step name
 * to have the process killed (SIGKILL, nothing cleaned up) exactly when
 * an operation reaches that step. */
void
test_step (void *opaque, const char *step)
{
  const char *at = getenv ("VHDTOOL_TEST_KILL_AT");

  if (at && strcmp (at, step) == 0)
    raise (SIGKILL);
}

/* Appends v to a candidate list of the library's open options (declared
 * const there: the library only reads it).  The public struct keeps no
 * capacity, so the list is taken as full (cap = n) and grows on every
 * append, as it always did: a command line names a handful. */
static int
append (const char *const **list, size_t *n, const char *v)
{
  const char **p = (const char **) *list;
  size_t cap = *n;

  if (ARRAY_RESERVE (p, cap, *n + 1) == -1) {
    fprintf (stderr, "%s: %s\n", progname, strerror (errno));
    return -1;
  }
  p[(*n)++] = v;
  *list = p;
  return 0;
}

int
parent_option (struct vhd_open_options *o, int ch, const char *arg)
{
  if (ch == OPT_CONFINE_PARENTS) {
    o->confine_parents = true;
    return 0;
  }
  if (ch == OPT_PARENT)
    return append (&o->parent_files, &o->n_parent_files, arg);
  return append (&o->parent_dirs, &o->n_parent_dirs, arg);
}

int
disk_size_option (struct vhd_open_options *o, const char *arg)
{
  if (vhd_disk_size_parse (arg, &o->disk_size) == -1) {
    usage_error ("--disk-size must be auto, geometry or current, not '%s'",
                 arg);
    return -1;
  }
  return 0;
}

int
cache_size_option (const char *cmd, const char *arg, uint64_t *out)
{
  if (parse_size (arg, out) == -1 || *out == 0) {
    usage_error ("%s: bad --cache-size '%s' (a size like 4M, at least 1)",
                 cmd, arg);
    return -1;
  }
  return 0;
}

void
parent_options_free (struct vhd_open_options *o)
{
  free ((void *) o->parent_files);
  free ((void *) o->parent_dirs);
  o->parent_files = o->parent_dirs = NULL;
  o->n_parent_files = o->n_parent_dirs = 0;
}

int
chain_option (const char *cmd, struct vhd_open_options *o, int ch,
              const char *arg)
{
  switch (ch) {
  case OPT_PARENT: case OPT_PARENT_DIR: case OPT_CONFINE_PARENTS:
    return parent_option (o, ch, arg) == -1 ? EXIT_FAILED : EXIT_OK;
  case OPT_DISK_SIZE:
    return disk_size_option (o, arg) == -1 ? EXIT_USAGE : EXIT_OK;
  case OPT_CACHE_SIZE:
    return cache_size_option (cmd, arg, &o->cache_budget) == -1
           ? EXIT_USAGE : EXIT_OK;
  default:
    usage_error ("%s: bad option", cmd);
    return EXIT_USAGE;
  }
}
