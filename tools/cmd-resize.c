/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool resize: Resize-VHD. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
resize_help (void)
{
  printf ("Usage: vhdtool resize FILE SIZE\n"
          "       vhdtool resize --to-minimum FILE\n"
          "\n"
          "Change the virtual size of FILE, offline (FILE must not be in use).\n"
          "SIZE takes the suffixes of create (K, M, G, T) and is a multiple of\n"
          "the logical sector.  Growing: fixed and dynamic VHD and VHDX, and\n"
          "differencing VHDX; the new space reads as zeros.  Shrinking: fixed\n"
          "and dynamic VHDX only, never below the minimum size (the end of the\n"
          "last non-zero sector, shown by info).  A differencing VHD keeps its\n"
          "parent's size and is refused; a differencing VHDX only grows.\n"
          "Disks that use FILE as their parent no longer open afterwards (VHD:\n"
          "their size no longer matches; VHDX: FILE gets a new DataWriteGuid).\n"
          "\n"
          "  --to-minimum  shrink a VHDX to its minimum size\n");
}

int
cmd_resize (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "to-minimum", no_argument, NULL, 'M' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_resize_params p = { .step = test_step };
  uint64_t size = 0;
  int ch;

  while ((ch = getopt_long (argc, argv, "h", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'M': p.to_minimum = true; break;
    case 'h':
      resize_help ();
      return EXIT_OK;
    default:
      usage_error ("resize: bad option");
      return EXIT_USAGE;
    }
  }
  if (argc - optind != (p.to_minimum ? 1 : 2)) {
    usage_error (p.to_minimum ? "resize --to-minimum takes FILE only"
                 : "resize takes FILE and SIZE");
    return EXIT_USAGE;
  }
  if (!p.to_minimum && parse_size (argv[optind + 1], &size) == -1) {
    usage_error ("resize: bad SIZE '%s'", argv[optind + 1]);
    return EXIT_USAGE;
  }
  return vhd_resize (argv[optind], size, &p) == 0 ? EXIT_OK : EXIT_FAILED;
}
