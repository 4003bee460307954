/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool compact: Optimize-VHD. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
compact_help (void)
{
  printf ("Usage: vhdtool compact [-p] FILE\n"
          "\n"
          "Give back the space of the dynamic or differencing disk FILE that\n"
          "the disk does not need, without changing what it reads: blocks\n"
          "of a dynamic disk holding only zeros are released, and so are\n"
          "blocks of a differencing disk holding what its parent shows there\n"
          "(VHDX: also blocks reading as zeros, which become ZERO); then the\n"
          "blocks left are moved down and the file is shortened.  A VHDX\n"
          "keeps its DataWriteGuid: its differencing disks stay valid.\n"
          "Safe to interrupt (even kill): the file always reads the same,\n"
          "and running the command again finishes the job.  A file in use\n"
          "(served, or being merged) is refused; fixed disks too.\n"
          "\n"
          "  -p, --progress    show a progress bar (on a terminal)\n");
}

int
cmd_compact (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "progress", no_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_compact_params p = { .step = test_step };
  struct vhd_compact_result res;
  struct progress bar;
  bool want_progress = false;
  const char *file;
  int ch, r;

  while ((ch = getopt_long (argc, argv, "ph", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'p': want_progress = true; break;
    case 'h':
      compact_help ();
      return EXIT_OK;
    default:
      usage_error ("compact: bad option");
      return EXIT_USAGE;
    }
  }
  if (argc - optind != 1) {
    usage_error ("compact takes one FILE");
    return EXIT_USAGE;
  }
  file = argv[optind];
  progress_init (&bar, want_progress);
  p.progress = progress_update;
  p.opaque = &bar;
  r = vhd_compact (file, &p, &res);
  progress_done (&bar);
  if (r == -1)
    return EXIT_FAILED;
  printf ("%s: released %" PRIu64 " blocks, moved %" PRIu64 ", file %"
          PRIu64 " \u2192 %" PRIu64 " bytes (%" PRIu64 " reclaimed)\n",
          file, res.released_blocks, res.moved_blocks, res.bytes_before,
          res.bytes_after,
          res.bytes_before > res.bytes_after
          ? res.bytes_before - res.bytes_after : 0);
  return EXIT_OK;
}
