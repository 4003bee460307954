/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool convert: Convert-VHD, flattening a whole chain. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
convert_help (void)
{
  printf ("Usage: vhdtool convert [-f vhd|vhdx|raw] [-t fixed|dynamic|raw]\n"
          "                       [-b BLOCK_SIZE] [-p] [--parent FILE]...\n"
          "                       [--parent-dir DIR]... [--confine-parents]\n"
          "                       [--disk-size=RULE] [--cache-size SIZE]\n"
          "                       FILE OUTPUT\n"
          "\n"
          "Write what FILE's chain shows into a new standalone disk OUTPUT.\n"
          "The source files are only read; an existing OUTPUT is never\n"
          "overwritten.  Ranges that read as zeros stay sparse.\n"
          "\n"
          "  -f, --format FORMAT   vhd, vhdx or raw (default: vhdx for OUTPUT\n"
          "                        named *.vhdx or *.avhdx, else vhd)\n"
          "  -t, --type TYPE       fixed, dynamic (the default) or raw (the\n"
          "                        same as -f raw)\n"
          "  -b, --block-size SIZE block size of the output (default: the\n"
          "                        format's, as for create)\n"
          "  -p, --progress        show a progress bar (on a terminal)\n"
          PARENT_OPTIONS_HELP
          DISK_SIZE_HELP
          CACHE_SIZE_HELP
          "OUTPUT has the size FILE's chain is served at (see --disk-size).\n");
}

int
cmd_convert (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "format", required_argument, NULL, 'f' },
    { "type", required_argument, NULL, 't' },
    { "block-size", required_argument, NULL, 'b' },
    { "progress", no_argument, NULL, 'p' },
    PARENT_LONG_OPTIONS,
    DISK_SIZE_LONG_OPTION,
    CACHE_SIZE_LONG_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_convert_params p = { .type = VHD_TYPE_DYNAMIC };
  struct vhd_open_options o = {
    .readonly = true, .missing_parent_hint = PARENT_OPTIONS_HINT,
  };
  struct vhd_chain *c = NULL;
  struct progress bar;
  bool want_progress = false, raw_format = false, type_given = false;
  uint64_t v;
  int ch, r = EXIT_FAILED;

  while ((ch = getopt_long (argc, argv, "f:t:b:ph", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'f':
      if (strcmp (optarg, "vhd") == 0)
        p.format = VHD_FORMAT_VHD;
      else if (strcmp (optarg, "vhdx") == 0)
        p.format = VHD_FORMAT_VHDX;
      else if (strcmp (optarg, "raw") == 0)
        raw_format = true;
      else {
        usage_error ("convert: unknown format '%s' (vhd, vhdx or raw)",
                     optarg);
        r = EXIT_USAGE;
        goto out;
      }
      break;
    case 'b':
      if (parse_size (optarg, &v) == -1 || v > UINT32_MAX) {
        usage_error ("convert: invalid block size '%s'", optarg);
        r = EXIT_USAGE;
        goto out;
      }
      p.block_size = v;
      break;
    case 't':
      type_given = true;
      if (strcmp (optarg, "fixed") == 0)
        p.type = VHD_TYPE_FIXED;
      else if (strcmp (optarg, "dynamic") == 0)
        p.type = VHD_TYPE_DYNAMIC;
      else if (strcmp (optarg, "raw") == 0)
        p.type = VHD_OUTPUT_RAW;
      else {
        usage_error ("convert: unknown type '%s' (fixed, dynamic or raw)",
                     optarg);
        r = EXIT_USAGE;
        goto out;
      }
      break;
    case 'p': want_progress = true; break;
    case 'h':
      convert_help ();
      r = EXIT_OK;
      goto out;
    default:
      if ((r = chain_option ("convert", &o, ch, optarg)) != EXIT_OK)
        goto out;
      r = EXIT_FAILED;
    }
  }
  if (argc - optind != 2) {
    usage_error ("convert takes FILE and OUTPUT");
    r = EXIT_USAGE;
    goto out;
  }
  /* -f raw and -t raw say the same; raw has neither a type nor a disk
   * format nor blocks. */
  if (raw_format) {
    if (type_given && p.type != VHD_OUTPUT_RAW) {
      usage_error ("convert: -f raw has no type (-t)");
      r = EXIT_USAGE;
      goto out;
    }
    p.type = VHD_OUTPUT_RAW;
  }
  if (p.type == VHD_OUTPUT_RAW && p.format != VHD_FORMAT_AUTO) {
    usage_error ("convert: -t raw makes a raw image, not a %s file (-f)",
                 p.format == VHD_FORMAT_VHDX ? "VHDX" : "VHD");
    r = EXIT_USAGE;
    goto out;
  }
  if (p.type == VHD_OUTPUT_RAW && p.block_size) {
    usage_error ("convert: raw images have no blocks (-b)");
    r = EXIT_USAGE;
    goto out;
  }
  if (p.type == VHD_TYPE_FIXED && p.block_size &&
      (p.format == VHD_FORMAT_AUTO ? vhd_format_for_name (argv[optind + 1])
                                   : p.format) == VHD_FORMAT_VHD) {
    usage_error ("convert: fixed disks have no blocks (-b) in VHD files");
    r = EXIT_USAGE;
    goto out;
  }
  progress_init (&bar, want_progress);
  p.progress = progress_update;
  p.opaque = &bar;

  if (vhd_chain_open (argv[optind], &o, &c) == 0) {
    if (vhd_convert (c, argv[optind + 1], &p) == 0)
      r = EXIT_OK;
    vhd_chain_close (c);
  }
  progress_done (&bar);
 out:
  parent_options_free (&o);
  return r;
}
