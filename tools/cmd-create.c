/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool create: New-VHD. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

enum { OPT_LOGICAL = 0x300, OPT_PHYSICAL };

static void
create_help (void)
{
  printf ("Usage: vhdtool create [-f vhd|vhdx] [-t fixed|dynamic] [-b BLOCK_SIZE]\n"
          "                      [--logical-sector-size 512|4096]\n"
          "                      [--physical-sector-size 512|4096] FILE SIZE\n"
          "       vhdtool create -p PARENT [-f vhd|vhdx] [-b BLOCK_SIZE]\n"
          "                      [--physical-sector-size 512|4096] FILE\n"
          "\n"
          "Create a new VHD or VHDX file; an existing FILE is never overwritten.\n"
          "\n"
          "  -f, --format FORMAT     vhd or vhdx (default: the parent's, else\n"
          "                          vhdx for FILE named *.vhdx or *.avhdx,\n"
          "                          else vhd)\n"
          "  -t, --type TYPE         fixed or dynamic (default dynamic)\n"
          "  -b, --block-size SIZE   block size (VHD: default 2M, or the\n"
          "                          parent's; VHDX: 1M to 256M, default 32M\n"
          "                          dynamic, 2M fixed and differencing)\n"
          "  -p, --parent PARENT     create a differencing disk of PARENT;\n"
          "                          the size is the parent's\n"
          "      --logical-sector-size SIZE   512 (the default) or 4096\n"
          "                          (VHDX only; a child has its parent's)\n"
          "      --physical-sector-size SIZE  512 or 4096 (VHDX only;\n"
          "                          default 4096, or the parent's)\n"
          "      --ignore-checksums  accept a parent with bad checksums\n"
          "\n"
          "SIZE takes K, M, G and T suffixes (powers of 1024).\n");
}

/* --logical-sector-size and --physical-sector-size: a number (the
 * library says which values the format takes). */
static int
sector_option (const char *name, const char *arg, uint32_t *out)
{
  uint64_t v;

  if (parse_size (arg, &v) == -1 || v == 0 || v > UINT32_MAX) {
    usage_error ("create: invalid %s '%s'", name, arg);
    return -1;
  }
  *out = v;
  return 0;
}

int
cmd_create (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "format", required_argument, NULL, 'f' },
    { "type", required_argument, NULL, 't' },
    { "block-size", required_argument, NULL, 'b' },
    { "parent", required_argument, NULL, 'p' },
    { "logical-sector-size", required_argument, NULL, OPT_LOGICAL },
    { "physical-sector-size", required_argument, NULL, OPT_PHYSICAL },
    { "ignore-checksums", no_argument, NULL, 'C' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_create_params p = { .type = VHD_TYPE_DYNAMIC };
  const char *type = NULL;
  uint64_t v;
  int c;

  while ((c = getopt_long (argc, argv, "f:t:b:p:h", long_opts, NULL)) != -1) {
    switch (c) {
    case 'f':
      if (strcmp (optarg, "vhd") == 0)
        p.format = VHD_FORMAT_VHD;
      else if (strcmp (optarg, "vhdx") == 0)
        p.format = VHD_FORMAT_VHDX;
      else {
        usage_error ("create: unknown format '%s' (vhd or vhdx)", optarg);
        return EXIT_USAGE;
      }
      break;
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
    case OPT_LOGICAL:
      if (sector_option ("logical sector size", optarg,
                         &p.logical_sector_size) == -1)
        return EXIT_USAGE;
      break;
    case OPT_PHYSICAL:
      if (sector_option ("physical sector size", optarg,
                         &p.physical_sector_size) == -1)
        return EXIT_USAGE;
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
  /* A fixed VHD is the disk's bytes and a footer: no blocks.  A fixed
   * VHDX has blocks (all allocated). */
  if (p.type == VHD_TYPE_FIXED && p.block_size &&
      (p.format == VHD_FORMAT_AUTO ? vhd_format_for_name (argv[optind])
                                   : p.format) == VHD_FORMAT_VHD) {
    usage_error ("create: fixed disks have no blocks (-b) in VHD files");
    return EXIT_USAGE;
  }
  return vhd_create (argv[optind], &p) == 0 ? EXIT_OK : EXIT_FAILED;
}
