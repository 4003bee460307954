/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool: create and inspect VHD files (Hyper-V semantics). */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static const struct command {
  const char *name;
  int (*fn) (int argc, char **argv);
  const char *summary;
} commands[] = {
  { "create", cmd_create, "create a fixed, dynamic or differencing VHD" },
  { "info", cmd_info, "show a VHD's metadata and its resolved chain" },
  { "check", cmd_check, "examine a VHD and its chain, report every problem" },
  { "map", cmd_map, "show which file of the chain supplies each range" },
  { "merge", cmd_merge, "merge a differencing disk into an ancestor" },
  { "compact", cmd_compact, "give back unused space of a dynamic or "
    "differencing disk" },
  { "convert", cmd_convert, "flatten a chain into a new standalone disk" },
  { "set-parent", cmd_set_parent, "point a differencing disk at its parent" },
  { "resize", cmd_resize, "grow a VHD or VHDX, shrink a VHDX (Resize-VHD)" },
  { "scan", cmd_scan, "find the trees of disks in folders, check their links" },
};

static void
usage (FILE *fp)
{
  size_t i;

  fprintf (fp,
           "Usage: %s COMMAND [OPTIONS] ARGS...\n"
           "\n"
           "Commands:\n", progname);
  for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf (fp, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf (fp,
           "\n"
           "  vhdtool create [-t fixed|dynamic] [-b BLOCK_SIZE] FILE SIZE\n"
           "  vhdtool create -p PARENT [-b BLOCK_SIZE] FILE\n"
           "  vhdtool info [--json] [--ignore-checksums] [--ignore-id-mismatch]\n"
           "               [--parent FILE]... [--parent-dir DIR]... FILE\n"
           "  vhdtool check [--json] [--parent FILE]... [--parent-dir DIR]... FILE\n"
           "  vhdtool map [--json] [--parent FILE]... [--parent-dir DIR]... FILE\n"
           "  vhdtool merge [--into ANCESTOR] [-p] FILE\n"
           "  vhdtool compact [-p] FILE\n"
           "  vhdtool convert [-t fixed|dynamic|raw] [-p] [--parent FILE]...\n"
           "                  [--parent-dir DIR]... FILE OUTPUT\n"
           "  vhdtool set-parent [--ignore-id-mismatch] FILE PARENT\n"
           "  vhdtool resize FILE SIZE | --to-minimum FILE\n"
           "  vhdtool scan [--json] [-r] [--fix-locators] DIR|FILE...\n"
           "\n"
           "Run '%s COMMAND --help' for a command's options; see vhdtool(1).\n"
           "Exit status: 0 success, 1 failure (check: problems found),\n"
           "2 bad usage (check: FILE cannot be checked).\n", progname);
}

int
main (int argc, char **argv)
{
  size_t i;

  tool_init ();
  if (argc < 2) {
    usage (stderr);
    return EXIT_USAGE;
  }
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0 ||
      strcmp (argv[1], "help") == 0) {
    usage (stdout);
    return EXIT_OK;
  }
  if (strcmp (argv[1], "--version") == 0 || strcmp (argv[1], "-V") == 0) {
    printf ("vhdtool %s\n", PACKAGE_VERSION);
    return EXIT_OK;
  }
  for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (argv[1], commands[i].name) == 0) {
      /* getopt prefixes its own messages with argv[0]. */
      static char name[64];
      snprintf (name, sizeof name, "%s %s", progname, commands[i].name);
      argv[1] = name;
      return commands[i].fn (argc - 1, argv + 1);
    }
  usage_error ("unknown command '%s'", argv[1]);
  return EXIT_USAGE;
}
