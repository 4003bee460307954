/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool info: Get-VHD, plus the on-disk details and the chain. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vhdtool.h"

static void
info_help (void)
{
  printf ("Usage: vhdtool info [--json] [OPTIONS] FILE\n"
          "\n"
          "Show the metadata of FILE and the chain of parents it resolves to.\n"
          "\n"
          "  --json                machine-readable output\n"
          "  --ignore-checksums    read files with bad footer/header checksums\n"
          "  --ignore-id-mismatch  accept a parent whose unique id differs\n"
          PARENT_OPTIONS_HELP
          DISK_SIZE_HELP);
}

static void
format_time (time_t t, char *buf, size_t len)
{
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Everything info reports about one file, formatted once. */
struct facts {
  struct vhd_layer_info i;
  const char *path;
  char created[32], parent_time[32];
  char size_h[32], alloc_h[32];
  struct vhd_fragmentation frag;  /* see vhd_layer_fragmentation */
  bool frag_known;
  bool has_min;                 /* VHDX: the minimum size resize takes */
  bool min_bound;               /* only an upper bound: see gather */
  uint64_t min;
  char min_h[32];
};

static bool
is_vhdx (const struct vhd_layer_info *f)
{
  return strcmp (f->format, "VHDX") == 0;
}

/* Data info reads at most to find a VHDX's minimum size. */
#define INFO_MINIMUM_READ (256u << 20)

static void
gather (struct vhd_layer *l, struct facts *x)
{
  int r;

  vhd_layer_describe (l, &x->i);
  x->path = vhd_layer_path (l);
  format_time (x->i.created, x->created, sizeof x->created);
  human_size (x->i.size, x->size_h, sizeof x->size_h);
  human_size (x->i.allocated, x->alloc_h, sizeof x->alloc_h);
  x->frag_known = x->i.allocated_known &&
                  vhd_layer_fragmentation (l, &x->frag) == 0;
  /* Finding it reads data backwards from the last allocated block: a
   * preallocated disk whose end holds written zeros would cost a read
   * of all of it.  info reads at most this much, and past that says
   * only how large the minimum can be (resize reads all it needs). */
  r = vhd_layer_minimum_size (l, INFO_MINIMUM_READ, &x->min);
  x->has_min = r >= 0;
  x->min_bound = r == 1;
  if (x->has_min)
    human_size (x->min, x->min_h, sizeof x->min_h);
  if (x->i.type == VHD_TYPE_DIFF && !is_vhdx (&x->i))
    format_time (x->i.parent_time, x->parent_time, sizeof x->parent_time);
}

/* The size rule applied (lib/vhd/quirks.c): which field, and why. */
static const char *
size_field (const struct vhd_layer_info *f)
{
  return f->size_from_geometry ? "geometry" : "current size";
}

static void
print_quirks (const struct vhd_layer_info *f, bool json)
{
  unsigned i;
  bool first = true;

  for (i = 0; vhd_quirk_name (i); i++)
    if (f->quirks & (UINT32_C (1) << i)) {
      printf (json ? "%s\"%s\"" : "%s%s", first ? "" : ", ",
              vhd_quirk_name (i));
      first = false;
    }
}

static void
print_text (const struct facts *x, const struct vhd_chain *c,
            const char *chain_error)
{
  const struct vhd_layer_info *f = &x->i;
  unsigned i, k;

  printf ("file:              %s\n", x->path);
  printf ("format:            %s\n", f->format);
  printf ("type:              %s\n", vhd_type_name (f->type));
  printf ("virtual size:      %" PRIu64 " (%s)\n", f->size, x->size_h);
  if (f->size_rule)
    printf ("size rule:         %s (%s)\n", size_field (f), f->size_rule);
  if (f->has_geometry && f->geometry_size != f->current_size) {
    printf ("current size:      %" PRIu64 "\n", f->current_size);
    printf ("geometry size:     %" PRIu64 "\n", f->geometry_size);
  }
  if (f->type != VHD_TYPE_FIXED || is_vhdx (f))
    printf ("block size:        %u\n", f->block_size);
  if (is_vhdx (f)) {
    printf ("logical sector:    %u\n", f->sector_size);
    printf ("creator:           \"%s\"\n", f->creator);
    printf ("data write guid:   %s\n", f->id);
  }
  else {
    printf ("creator:           \"%s\" %u.%u (%s)\n", f->creator,
            f->creator_version >> 16, f->creator_version & 0xffff,
            f->creator_os);
    printf ("created:           %s\n", x->created);
    printf ("unique id:         %s\n", f->id);
  }
  if (f->has_geometry)
    printf ("geometry (CHS):    %u/%u/%u\n", f->cylinders, f->heads,
            f->sectors_per_track);
  printf ("allocated:         %" PRIu64 " (%s)\n", f->allocated, x->alloc_h);
  printf ("file size:         %" PRIu64 "\n", f->file_size);
  if (x->frag_known)
    printf ("fragmentation:     %.0f%% (%" PRIu64 " of %" PRIu64
            " allocated blocks out of place)\n", x->frag.percent,
            x->frag.fragmented_blocks, x->frag.allocated_blocks);
  if (x->has_min)
    printf ("minimum size:      %s%" PRIu64 " (%s)%s\n",
            x->min_bound ? "at most " : "", x->min, x->min_h,
            x->min_bound ? ": the exact figure takes reading more of the "
            "data than info reads (resize --to-minimum does)" : "");
  if (f->footer_from_copy)
    printf ("footer:            missing at end of file, copy at offset 0 used\n");
  if (f->quirks) {
    printf ("quirks tolerated:  ");
    print_quirks (f, false);
    printf ("\n");
  }
  if (f->type == VHD_TYPE_DIFF) {
    printf ("parent id:         %s\n", f->parent_id);
    printf ("parent name:       %s\n", f->parent_name);
    if (!is_vhdx (f))
      printf ("parent timestamp:  %s\n", x->parent_time);
    for (i = 0; i < f->n_locators; i++)
      if (is_vhdx (f))
        printf ("locator:           %s = %s\n", f->locators[i].kind,
                f->locators[i].text ? f->locators[i].text : "(unreadable)");
      else
        printf ("locator %d:         %s %s\n", f->locators[i].slot,
                f->locators[i].kind,
                f->locators[i].text ? f->locators[i].text : "(unreadable)");
  }
  for (i = 0; i < f->n_facts; i++) {
    int w = printf ("%s:", f->facts[i].name);
    printf ("%*s%s\n", w < 19 ? 19 - w : 1, "", f->facts[i].value);
  }
  printf ("chain:\n");
  if (c)
    for (k = 0; k < vhd_chain_depth (c); k++)
      printf ("  %u  %-12s %s\n", k,
              vhd_layer_type (vhd_chain_layer (c, k)),
              vhd_layer_path (vhd_chain_layer (c, k)));
  else
    printf ("  cannot be resolved: %s\n", chain_error);
}

static void
print_json (const struct facts *x, const struct vhd_chain *c,
            const char *chain_error)
{
  const struct vhd_layer_info *f = &x->i;
  unsigned i, k;

  printf ("{\n  \"file\": ");
  json_string (stdout, x->path);
  printf (",\n  \"format\": \"%s\",\n", f->format);
  printf ("  \"type\": \"%s\",\n", vhd_type_name (f->type));
  printf ("  \"virtual-size\": %" PRIu64 ",\n", f->size);
  printf ("  \"current-size\": %" PRIu64 ",\n", f->current_size);
  if (!is_vhdx (f)) {
    printf ("  \"geometry-size\": %" PRIu64 ",\n", f->geometry_size);
    printf ("  \"size-rule\": \"%s\",\n",
            f->size_from_geometry ? "geometry" : "current");
    printf ("  \"size-rule-reason\": ");
    json_string (stdout, f->size_rule ? f->size_rule : "");
    printf (",\n  \"quirks\": [");
    print_quirks (f, true);
    printf ("],\n");
  }
  if (f->type != VHD_TYPE_FIXED || is_vhdx (f))
    printf ("  \"block-size\": %u,\n", f->block_size);
  printf ("  \"logical-sector-size\": %u,\n", f->sector_size);
  printf ("  \"creator\": ");
  json_string (stdout, f->creator);
  printf (",\n");
  if (!is_vhdx (f)) {
    printf ("  \"creator-version\": \"%u.%u\",\n",
            f->creator_version >> 16, f->creator_version & 0xffff);
    printf ("  \"creator-os\": \"%s\",\n", f->creator_os);
    printf ("  \"created\": \"%s\",\n", x->created);
  }
  printf ("  \"unique-id\": \"%s\",\n", f->id);
  if (f->has_geometry)
    printf ("  \"geometry\": { \"cylinders\": %u, \"heads\": %u, "
            "\"sectors\": %u },\n", f->cylinders, f->heads,
            f->sectors_per_track);
  printf ("  \"allocated\": %" PRIu64 ",\n", f->allocated);
  printf ("  \"file-size\": %" PRIu64 ",\n", f->file_size);
  if (x->frag_known)
    printf ("  \"fragmentation-percentage\": %.1f,\n", x->frag.percent);
  if (x->has_min)
    printf ("  \"minimum-size\": %" PRIu64 ",\n"
            "  \"minimum-size-exact\": %s,\n", x->min,
            x->min_bound ? "false" : "true");
  if (!is_vhdx (f))
    printf ("  \"footer-from-copy\": %s,\n",
            f->footer_from_copy ? "true" : "false");
  if (f->type == VHD_TYPE_DIFF) {
    printf ("  \"parent-id\": \"%s\",\n  \"parent-name\": ", f->parent_id);
    json_string (stdout, f->parent_name);
    if (!is_vhdx (f))
      printf (",\n  \"parent-timestamp\": \"%s\"", x->parent_time);
    printf (",\n  \"locators\": [");
    for (i = 0; i < f->n_locators; i++) {
      const struct vhd_locator_info *li = &f->locators[i];
      if (is_vhdx (f))
        printf ("%s\n    { \"key\": ", i ? "," : "");
      else
        printf ("%s\n    { \"slot\": %d, \"code\": ", i ? "," : "",
                li->slot);
      json_string (stdout, li->kind);
      printf (is_vhdx (f) ? ", \"value\": " : ", \"path\": ");
      if (li->text)
        json_string (stdout, li->text);
      else
        printf ("null");
      printf (" }");
    }
    printf ("\n  ],\n");
  }
  if (f->n_facts) {
    printf ("  \"details\": {");
    for (i = 0; i < f->n_facts; i++) {
      printf ("%s\n    ", i ? "," : "");
      json_string (stdout, f->facts[i].name);
      printf (": ");
      json_string (stdout, f->facts[i].value);
    }
    printf ("\n  },\n");
  }
  printf ("  \"chain\": ");
  if (c) {
    printf ("[");
    for (k = 0; k < vhd_chain_depth (c); k++) {
      printf ("%s\n    { \"depth\": %u, \"type\": \"%s\", \"file\": ",
              k ? "," : "", k, vhd_layer_type (vhd_chain_layer (c, k)));
      json_string (stdout, vhd_layer_path (vhd_chain_layer (c, k)));
      printf (" }");
    }
    printf ("\n  ]\n}\n");
  }
  else {
    printf ("null,\n  \"chain-error\": ");
    json_string (stdout, chain_error);
    printf ("\n}\n");
  }
}

int
cmd_info (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "ignore-checksums", no_argument, NULL, 'C' },
    { "ignore-id-mismatch", no_argument, NULL, 'I' },
    PARENT_LONG_OPTIONS,
    DISK_SIZE_LONG_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true,
    .missing_parent_hint = PARENT_OPTIONS_HINT,
  };
  struct vhd_layer *f = NULL;
  struct vhd_chain *c = NULL;
  struct facts x;
  char chain_error[1024] = "";
  bool json = false;
  int ch, r = EXIT_FAILED;

  while ((ch = getopt_long (argc, argv, "h", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'j': json = true; break;
    case 'C': o.ignore_checksums = true; break;
    case 'I': o.ignore_id_mismatch = true; break;
    case 'h':
      info_help ();
      r = EXIT_OK;
      goto out;
    default:
      if ((r = chain_option ("info", &o, ch, optarg)) != EXIT_OK)
        goto out;
      r = EXIT_FAILED;
    }
  }
  if (argc - optind != 1) {
    usage_error ("info takes one FILE");
    r = EXIT_USAGE;
    goto out;
  }

  if (vhd_layer_open (argv[optind], false, &o, &f) == -1)
    goto out;
  /* The file itself is readable: report it even if the chain is not. */
  if (vhd_chain_open (argv[optind], &o, &c) == -1)
    snprintf (chain_error, sizeof chain_error, "%s", tool_last_error ());
  gather (f, &x);
  if (json)
    print_json (&x, c, chain_error);
  else
    print_text (&x, c, chain_error);
  vhd_layer_info_free (&x.i);
  r = c ? EXIT_OK : EXIT_FAILED;

 out:
  vhd_chain_close (c);
  vhd_layer_close (f);
  parent_options_free (&o);
  return r;
}
