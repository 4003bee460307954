/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool merge: Merge-VHD. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
merge_help (void)
{
  printf ("Usage: vhdtool merge [--into ANCESTOR] [--confine-parents]\n"
          "                     [--cache-size SIZE] [-p] FILE\n"
          "\n"
          "Merge the differencing disk FILE into its parent, or with --into\n"
          "FILE and every disk between it and ANCESTOR into ANCESTOR, which\n"
          "then shows exactly what FILE showed.  The merged-from files are\n"
          "removed.  A merge that was interrupted (even killed) is completed\n"
          "by running the same command again.\n"
          "\n"
          "Other differencing disks based on the target become invalid: they\n"
          "would show the merged data under their own.  A VHDX target gets a\n"
          "new DataWriteGuid, so they are refused from then on (\"parent id\n"
          "mismatch\"): orphaned.  merge names those it finds.\n"
          "\n"
          "  --into ANCESTOR   the ancestor to merge into (default: the parent)\n"
          "  --confine-parents refuse parents outside FILE's directory (and\n"
          "                    its subdirectories): never open, rewrite or\n"
          "                    remove a file a locator names elsewhere\n"
          "  --cache-size SIZE memory for resolved blocks (default 16M)\n"
          "  -p, --progress    show a progress bar (on a terminal)\n");
}

int
cmd_merge (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "into", required_argument, NULL, 'i' },
    { "progress", no_argument, NULL, 'p' },
    { "confine-parents", no_argument, NULL, OPT_CONFINE_PARENTS },
    CACHE_SIZE_LONG_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_merge_params p = { .step = test_step };
  struct progress bar;
  bool want_progress = false;
  int ch, r;

  while ((ch = getopt_long (argc, argv, "ph", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'i': p.into = optarg; break;
    case 'p': want_progress = true; break;
    case OPT_CONFINE_PARENTS: p.confine_parents = true; break;
    case OPT_CACHE_SIZE:
      if (cache_size_option ("merge", optarg, &p.cache_budget) == -1)
        return EXIT_USAGE;
      break;
    case 'h':
      merge_help ();
      return EXIT_OK;
    default:
      usage_error ("merge: bad option");
      return EXIT_USAGE;
    }
  }
  if (argc - optind != 1) {
    usage_error ("merge takes one FILE");
    return EXIT_USAGE;
  }
  progress_init (&bar, want_progress);
  p.progress = progress_update;
  p.opaque = &bar;
  r = vhd_merge (argv[optind], &p);
  progress_done (&bar);
  return r == 0 ? EXIT_OK : EXIT_FAILED;
}
