/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool check: Test-VHD, plus the structure of every file.
 *
 * The examination is the library's own validation run in check mode
 * (see vhd_problem_fn in vhd.h): the checks are those that guard every
 * open, so check can never disagree with what the plugin accepts.
 */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

/* Exit status 2: the file cannot be examined at all. */
#define EXIT_CANNOT_CHECK 2

static void
check_help (void)
{
  printf ("Usage: vhdtool check [--json] [--parent FILE]... [--parent-dir DIR]...\n"
          "                     [--confine-parents] [--disk-size=RULE] FILE\n"
          "\n"
          "Examine FILE and its whole chain of parents and report every\n"
          "problem found: checksums, footer copy, header fields, BAT entries,\n"
          "parent locators, missing parents, parent id and size mismatches,\n"
          "loops.\n"
          "\n"
          "  --json                machine-readable output\n"
          PARENT_OPTIONS_HELP
          DISK_SIZE_HELP
          "\n"
          "Exit status: 0 no problems, 1 problems found, 2 FILE cannot be\n"
          "checked at all (unreadable, not a VHD) or bad usage.\n");
}

struct problem {
  char *file, *structure, *what;
};

struct report {
  struct problem *p;
  size_t n, cap;
  bool nomem;
};

static void
collect (void *opaque, const char *file, const char *structure,
         const char *what)
{
  struct report *r = opaque;
  struct problem *p;

  if (ARRAY_RESERVE (r->p, r->cap, r->n + 1) == -1) {
    r->nomem = true;
    return;
  }
  p = r->p;
  p[r->n].file = strdup (file);
  p[r->n].structure = strdup (structure);
  p[r->n].what = strdup (what);
  if (!p[r->n].file || !p[r->n].structure || !p[r->n].what)
    r->nomem = true;
  r->n++;
}

static void
free_report (struct report *r)
{
  size_t i;

  for (i = 0; i < r->n; i++) {
    free (r->p[i].file);
    free (r->p[i].structure);
    free (r->p[i].what);
  }
  free (r->p);
}

static const char *
status_name (int status)
{
  switch (status) {
  case EXIT_OK: return "clean";
  case EXIT_FAILED: return "problems";
  default: return "cannot-check";
  }
}

static void
print_json (const char *file, const struct vhd_chain *c,
            const struct report *r, int status)
{
  unsigned k;
  size_t i;

  printf ("{\n  \"file\": ");
  json_string (stdout, c ? vhd_layer_path (vhd_chain_layer (c, 0)) : file);
  printf (",\n  \"status\": \"%s\",\n  \"chain\": [", status_name (status));
  for (k = 0; c && k < vhd_chain_depth (c); k++) {
    printf ("%s\n    { \"depth\": %u, \"type\": \"%s\", \"file\": ",
            k ? "," : "", k, vhd_layer_type (vhd_chain_layer (c, k)));
    json_string (stdout, vhd_layer_path (vhd_chain_layer (c, k)));
    printf (" }");
  }
  printf ("%s],\n  \"problems\": [", c && vhd_chain_depth (c) ? "\n  " : "");
  for (i = 0; i < r->n; i++) {
    printf ("%s\n    { \"file\": ", i ? "," : "");
    json_string (stdout, r->p[i].file);
    printf (", \"structure\": ");
    json_string (stdout, r->p[i].structure);
    printf (", \"problem\": ");
    json_string (stdout, r->p[i].what);
    printf (" }");
  }
  printf ("%s]\n}\n", r->n ? "\n  " : "");
}

static void
print_text (const struct vhd_chain *c, const struct report *r)
{
  unsigned k;
  size_t i;

  printf ("chain:\n");
  for (k = 0; k < vhd_chain_depth (c); k++)
    printf ("  %u  %-12s %s\n", k,
            vhd_layer_type (vhd_chain_layer (c, k)),
            vhd_layer_path (vhd_chain_layer (c, k)));
  if (r->n == 0) {
    printf ("no problems found\n");
    return;
  }
  printf ("problems:\n");
  for (i = 0; i < r->n; i++)
    printf ("  %s: [%s] %s\n", r->p[i].file, r->p[i].structure,
            r->p[i].what);
  printf ("%zu problem%s found\n", r->n, r->n == 1 ? "" : "s");
}

int
cmd_check (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "json", no_argument, NULL, 'j' },
    PARENT_LONG_OPTIONS,
    DISK_SIZE_LONG_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct report r = { NULL, 0, 0, false };
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true, .problem = collect, .problem_opaque = &r,
    .missing_parent_hint = PARENT_OPTIONS_HINT,
  };
  struct vhd_chain *c = NULL;
  bool json = false;
  int ch, status;
  size_t i;

  while ((ch = getopt_long (argc, argv, "h", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'j': json = true; break;
    case 'h':
      check_help ();
      parent_options_free (&o);
      return EXIT_OK;
    default:
      if ((status = chain_option ("check", &o, ch, optarg)) != EXIT_OK) {
        parent_options_free (&o);
        return status == EXIT_FAILED ? EXIT_CANNOT_CHECK : status;
      }
    }
  }
  if (argc - optind != 1) {
    usage_error ("check takes one FILE");
    parent_options_free (&o);
    return EXIT_USAGE;
  }

  if (vhd_chain_open (argv[optind], &o, &c) == -1) {
    /* What makes the file impossible to examine was reported as a
     * problem; it is an error here. */
    for (i = 0; i < r.n; i++)
      fprintf (stderr, "%s: %s: %s\n", progname, r.p[i].file, r.p[i].what);
    if (r.n == 0)
      fprintf (stderr, "%s: %s: %s\n", progname, argv[optind],
               tool_last_error ());
    status = EXIT_CANNOT_CHECK;
  }
  else
    status = r.n ? EXIT_FAILED : EXIT_OK;
  if (r.nomem) {
    fprintf (stderr, "%s: check: out of memory\n", progname);
    status = EXIT_CANNOT_CHECK;
  }

  if (json)
    print_json (argv[optind], c, &r, status);
  else if (c)
    print_text (c, &r);
  vhd_chain_close (c);
  free_report (&r);
  parent_options_free (&o);
  return status;
}
