/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool create: New-VHD. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
create_help (void)
{
  printf ("Usage: vhdtool create [-t fixed|dynamic] [-b BLOCK_SIZE] FILE SIZE\n"
          "       vhdtool create -p PARENT [-b BLOCK_SIZE] FILE\n"
          "\n"
          "Create a new VHD file; an existing FILE is never overwritten.\n"
          "\n"
          "  -t, --type TYPE         fixed or dynamic (default dynamic)\n"
          "  -b, --block-size SIZE   block size of dynamic and differencing\n"
          "                          disks (default 2M, or the parent's)\n"
          "  -p, --parent PARENT     create a differencing disk of PARENT;\n"
          "                          the size is the parent's\n"
          "      --ignore-checksums  accept a parent with bad checksums\n"
          "\n"
          "SIZE takes K, M, G and T suffixes (powers of 1024).\n");
}

int
cmd_create (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "type", required_argument, NULL, 't' },
    { "block-size", required_argument, NULL, 'b' },
    { "parent", required_argument, NULL, 'p' },
    { "ignore-checksums", no_argument, NULL, 'C' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_create_params p = { .type = VHD_TYPE_DYNAMIC };
  const char *type = NULL;
  uint64_t v;
  int c;

  while ((c = getopt_long (argc, argv, "t:b:p:h", long_opts, NULL)) != -1) {
    switch (c) {
    case 't':
      type = optarg;
      if (strcmp (optarg, "fixed") == 0)
        p.type = VHD_TYPE_FIXED;
      else if (strcmp (optarg, "dynamic") == 0)
        p.type = VHD_TYPE_DYNAMIC;
      else {
        usage_error ("create: unknown type '%s' (fixed or dynamic)", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'b':
      if (parse_size (optarg, &v) == -1 || v > UINT32_MAX) {
        usage_error ("create: invalid block size '%s'", optarg);
        return EXIT_USAGE;
      }
      p.block_size = v;
      break;
    case 'p':
      p.parent = optarg;
      break;
    case 'C':
      p.ignore_checksums = true;
      break;
    case 'h':
      create_help ();
      return EXIT_OK;
    default:
      usage_error ("create: bad option");
      return EXIT_USAGE;
    }
  }

  if (p.parent) {
    if (type) {
      usage_error ("create: -t and -p cannot be combined (-p makes a "
                   "differencing disk)");
      return EXIT_USAGE;
    }
    if (argc - optind != 1) {
      usage_error ("create -p PARENT takes exactly one FILE (the size is "
                   "the parent's)");
      return EXIT_USAGE;
    }
    p.type = VHD_TYPE_DIFF;
  }
  else {
    if (argc - optind != 2) {
      usage_error ("create takes FILE and SIZE");
      return EXIT_USAGE;
    }
    if (parse_size (argv[optind + 1], &p.size) == -1) {
      usage_error ("create: invalid size '%s'", argv[optind + 1]);
      return EXIT_USAGE;
    }
  }
  if (p.type == VHD_TYPE_FIXED && p.block_size) {
    usage_error ("create: fixed disks have no blocks (-b)");
    return EXIT_USAGE;
  }
  return vhd_create (argv[optind], &p) == 0 ? EXIT_OK : EXIT_FAILED;
}
