/* vhdtool: shared declarations of the command implementations. */
#ifndef VHDTOOL_H
#define VHDTOOL_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vhd.h"

/* Exit codes. */
#define EXIT_OK 0
#define EXIT_FAILED 1           /* the operation failed or found problems */
#define EXIT_USAGE 2            /* bad command line */

int cmd_create (int argc, char **argv);
int cmd_info (int argc, char **argv);

/* util.c */
extern const char *progname;
void tool_init (void);
/* The last error the library reported (for --json output). */
const char *tool_last_error (void);
int parse_size (const char *s, uint64_t *out);
void usage_error (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void json_string (FILE *fp, const char *s);
void human_size (uint64_t bytes, char *buf, size_t len);

#endif
