/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool set-parent: Set-VHD -ParentPath. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
set_parent_help (void)
{
  printf ("Usage: vhdtool set-parent [--ignore-id-mismatch] FILE PARENT\n"
          "\n"
          "Make the differencing disk FILE point at PARENT: rewrite its\n"
          "parent locators (relative and absolute paths) and parent name.\n"
          "PARENT's unique id (VHDX: its DataWriteGuid) must be the one FILE\n"
          "records.  VHD or VHDX; PARENT is of FILE's format.\n"
          "\n"
          "  --ignore-id-mismatch  accept a PARENT with another id, and record\n"
          "                        that id in FILE (dangerous: FILE shows\n"
          "                        corrupt data unless PARENT holds the data\n"
          "                        FILE was made on)\n");
}

int
cmd_set_parent (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "ignore-id-mismatch", no_argument, NULL, 'I' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_set_parent_params p = { .step = test_step };
  int ch;

  while ((ch = getopt_long (argc, argv, "h", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'I': p.ignore_id_mismatch = true; break;
    case 'h':
      set_parent_help ();
      return EXIT_OK;
    default:
      usage_error ("set-parent: bad option");
      return EXIT_USAGE;
    }
  }
  if (argc - optind != 2) {
    usage_error ("set-parent takes FILE and PARENT");
    return EXIT_USAGE;
  }
  return vhd_set_parent (argv[optind], argv[optind + 1], &p) == 0
         ? EXIT_OK : EXIT_FAILED;
}
