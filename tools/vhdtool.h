/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool: shared declarations of the command implementations. */
#ifndef VHDTOOL_H
#define VHDTOOL_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vhd.h"
#include "util.h"

/* Exit codes. */
#define EXIT_OK 0
#define EXIT_FAILED 1           /* the operation failed or found problems */
#define EXIT_USAGE 2            /* bad command line */

int cmd_create (int argc, char **argv);
int cmd_info (int argc, char **argv);
int cmd_check (int argc, char **argv);
int cmd_map (int argc, char **argv);
int cmd_merge (int argc, char **argv);
int cmd_compact (int argc, char **argv);
int cmd_convert (int argc, char **argv);
int cmd_set_parent (int argc, char **argv);
int cmd_scan (int argc, char **argv);
int cmd_resize (int argc, char **argv);

/* util.c */
extern const char *progname;
void tool_init (void);
/* The last error the library reported (for --json output). */
const char *tool_last_error (void);
int parse_size (const char *s, uint64_t *out);
void usage_error (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void json_string (FILE *fp, const char *s);
void human_size (uint64_t bytes, char *buf, size_t len);

/* util.c: --parent FILE, --parent-dir DIR and --confine-parents, the
 * parent search of the commands that read a chain without changing it
 * (info, check, map, convert).  Long options with these values, parsed
 * by parent_option into a struct vhd_open_options (the candidate lists,
 * which parent_options_free releases, and confine_parents). */
enum { OPT_PARENT = 0x100, OPT_PARENT_DIR, OPT_CONFINE_PARENTS,
       OPT_DISK_SIZE };
#define PARENT_LONG_OPTIONS \
  { "parent", required_argument, NULL, OPT_PARENT }, \
  { "parent-dir", required_argument, NULL, OPT_PARENT_DIR }, \
  { "confine-parents", no_argument, NULL, OPT_CONFINE_PARENTS }
#define PARENT_OPTIONS_HELP \
  "  --parent FILE         a candidate parent (repeatable)\n" \
  "  --parent-dir DIR      a directory to search for parents (repeatable)\n" \
  CONFINE_PARENTS_HELP
#define CONFINE_PARENTS_HELP \
  "  --confine-parents     take parents only from FILE's directory, the\n" \
  "                        --parent-dir directories (with subdirectories)\n" \
  "                        and the --parent files; never open a file a\n" \
  "                        locator names elsewhere (untrusted images)\n"
/* util.c: --disk-size=RULE of the commands that read a chain (info,
 * check, map, convert): which footer field sizes the disk (struct
 * vhd_open_options, disk_size).  -1 (after a message) for a bad RULE. */
#define DISK_SIZE_LONG_OPTION \
  { "disk-size", required_argument, NULL, OPT_DISK_SIZE }
#define DISK_SIZE_HELP \
  "  --disk-size=RULE      auto (the default: the size the file's creator\n" \
  "                        means), geometry (the CHS geometry, as Virtual\n" \
  "                        PC) or current (the footer's current size)\n"
int disk_size_option (struct vhd_open_options *o, const char *arg);
#define PARENT_OPTIONS_HINT \
  "; use --parent or --parent-dir to say where it is"
/* Returns -1 (after a message) when out of memory. */
int parent_option (struct vhd_open_options *o, int ch, const char *arg);
void parent_options_free (struct vhd_open_options *o);

/* util.c: --cache-size SIZE, the memory for resolved blocks of the
 * commands that read a whole chain (map, convert, merge): the library's
 * cache_budget.  Returns -1 (after a usage message) on a bad SIZE. */
enum { OPT_CACHE_SIZE = 0x200 };
#define CACHE_SIZE_LONG_OPTION \
  { "cache-size", required_argument, NULL, OPT_CACHE_SIZE }
#define CACHE_SIZE_HELP \
  "  --cache-size SIZE     memory for resolved blocks (default 16M)\n"
int cache_size_option (const char *cmd, const char *arg, uint64_t *out);

/* util.c: every option above that a command opening a chain takes
 * (--parent, --parent-dir, --confine-parents, --disk-size,
 * --cache-size), into o; the default case of each command's option
 * switch.  EXIT_OK when ch was taken; otherwise, after a message,
 * EXIT_USAGE (a bad value, or not one of these: "CMD: bad option") or
 * EXIT_FAILED (out of memory). */
int chain_option (const char *cmd, struct vhd_open_options *o, int ch,
                  const char *arg);

/* progress.c: -p */
struct progress {
  bool enabled;                 /* -p given and stderr is a terminal */
  int shown;                    /* hundredths of a percent on screen */
};
void progress_init (struct progress *p, bool wanted);
void progress_update (void *opaque, uint64_t done, uint64_t total);
void progress_done (struct progress *p);

/* util.c: the step hook of the crash tests (see vhdtool(1), ENVIRONMENT). */
void test_step (void *opaque, const char *step);

#endif
