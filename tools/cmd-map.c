/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool map: which layer of the chain supplies each byte range, like
 * qemu-img map, with the ranges no layer holds (zeros) shown too. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "vhdtool.h"

static void
map_help (void)
{
  printf ("Usage: vhdtool map [--json] [--parent FILE]... [--parent-dir DIR]...\n"
          "                   [--confine-parents] [--disk-size=RULE]\n"
          "                   [--cache-size SIZE] FILE\n"
          "\n"
          "Show which file of FILE's chain supplies each byte range of the\n"
          "disk, and which ranges no file holds (they read as zeros).\n"
          "Adjacent ranges from the same file are merged.\n"
          "\n"
          "  --json                machine-readable output\n"
          PARENT_OPTIONS_HELP
          DISK_SIZE_HELP
          CACHE_SIZE_HELP);
}

struct mapper {
  const struct vhd_chain *c;
  bool json;
  bool first;
};

static int
print_extent (void *opaque, uint64_t offset, uint64_t len, int layer)
{
  struct mapper *m = opaque;
  const char *file = layer >= 0 ? vhd_layer_path (vhd_chain_layer (m->c, layer)) : NULL;

  if (m->json) {
    printf ("%s\n  { \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", ",
            m->first ? "" : ",", offset, len);
    if (layer >= 0) {
      printf ("\"depth\": %d, \"zero\": false, \"data\": true, \"file\": ",
              layer);
      json_string (stdout, file);
    }
    else
      printf ("\"depth\": null, \"zero\": true, \"data\": false, "
              "\"file\": null");
    printf (" }");
  }
  else if (layer >= 0)
    printf ("%#-18" PRIx64 " %#-18" PRIx64 " %-6d %s\n", offset, len, layer,
            file);
  else
    printf ("%#-18" PRIx64 " %#-18" PRIx64 " %-6s %s\n", offset, len, "-",
            "(zero)");
  m->first = false;
  return 0;
}

int
cmd_map (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "json", no_argument, NULL, 'j' },
    PARENT_LONG_OPTIONS,
    DISK_SIZE_LONG_OPTION,
    CACHE_SIZE_LONG_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true,
    .missing_parent_hint = PARENT_OPTIONS_HINT,
  };
  struct vhd_chain *c = NULL;
  struct mapper m = { NULL, false, true };
  int ch, r = EXIT_FAILED;

  while ((ch = getopt_long (argc, argv, "h", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'j': m.json = true; break;
    case 'h':
      map_help ();
      r = EXIT_OK;
      goto out;
    default:
      if ((r = chain_option ("map", &o, ch, optarg)) != EXIT_OK)
        goto out;
      r = EXIT_FAILED;
    }
  }
  if (argc - optind != 1) {
    usage_error ("map takes one FILE");
    r = EXIT_USAGE;
    goto out;
  }
  if (vhd_chain_open (argv[optind], &o, &c) == -1)
    goto out;
  m.c = c;
  if (m.json)
    printf ("[");
  else
    printf ("%-18s %-18s %-6s %s\n", "Offset", "Length", "Depth", "File");
  if (vhd_chain_extents (c, 0, vhd_chain_size (c), print_extent, &m) == 0)
    r = EXIT_OK;
  if (m.json)
    printf ("\n]\n");
  if (vhd_chain_close (c) == -1)
    r = EXIT_FAILED;
 out:
  parent_options_free (&o);
  return r;
}
