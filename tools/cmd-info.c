/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool info: Get-VHD, plus the on-disk details and the chain. */
#include <config.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vhdtool.h"

#define VHD_EPOCH 946684800

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
format_time (uint32_t vhd_time, char *buf, size_t len)
{
  time_t t = (time_t) vhd_time + VHD_EPOCH;
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Everything info reports about one file, formatted once. */
struct facts {
  char id[37], parent_id[37], creator[5], created[32], parent_time[32];
  char size_h[32], alloc_h[32];
  uint64_t allocated;
};

static void
gather (const struct vhd_file *f, struct facts *x)
{
  vhd_uuid_format (f->footer.unique_id, x->id);
  vhd_creator_format (f->footer.creator_app, x->creator);
  format_time (f->footer.timestamp, x->created, sizeof x->created);
  human_size (f->disk_size, x->size_h, sizeof x->size_h);
  x->allocated = f->type == VHD_TYPE_FIXED ? f->size
               : vhd_file_allocated_blocks (f) * f->block_size;
  human_size (x->allocated, x->alloc_h, sizeof x->alloc_h);
  if (f->type == VHD_TYPE_DIFF) {
    vhd_uuid_format (f->header.parent_id, x->parent_id);
    format_time (f->header.parent_timestamp, x->parent_time,
                 sizeof x->parent_time);
  }
}

static const char *
creator_os (uint32_t os)
{
  switch (os) {
  case 0x5769326B: return "Wi2k";
  case 0x4D616320: return "Mac";
  default: return "other";
  }
}

/* The size rule applied (lib/quirks.c): which field, and why. */
static const char *
size_field (const struct vhd_file *f)
{
  return f->size_from_geometry ? "geometry" : "current size";
}

static void
print_quirks (const struct vhd_file *f, bool json)
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
print_text (const struct vhd_file *f, const struct vhd_chain *c,
            const char *chain_error)
{
  struct facts x;
  int i;
  unsigned k;

  gather (f, &x);
  printf ("file:              %s\n", f->path);
  printf ("type:              %s\n", vhd_type_name (f->type));
  printf ("virtual size:      %" PRIu64 " (%s)\n", f->disk_size, x.size_h);
  printf ("size rule:         %s (%s)\n", size_field (f), f->size_rule);
  if (f->geometry_size != f->size) {
    printf ("current size:      %" PRIu64 "\n", f->size);
    printf ("geometry size:     %" PRIu64 "\n", f->geometry_size);
  }
  if (f->type != VHD_TYPE_FIXED)
    printf ("block size:        %u\n", f->block_size);
  printf ("creator:           \"%s\" %u.%u (%s)\n", x.creator,
          f->footer.creator_version >> 16,
          f->footer.creator_version & 0xffff, creator_os (f->footer.creator_os));
  printf ("created:           %s\n", x.created);
  printf ("unique id:         %s\n", x.id);
  printf ("geometry (CHS):    %u/%u/%u\n", f->footer.cylinders,
          f->footer.heads, f->footer.sectors_per_track);
  printf ("allocated:         %" PRIu64 " (%s)\n", x.allocated, x.alloc_h);
  printf ("file size:         %" PRIu64 "\n", f->file_size);
  if (f->footer_from_copy)
    printf ("footer:            missing at end of file, copy at offset 0 used\n");
  if (f->quirks) {
    printf ("quirks tolerated:  ");
    print_quirks (f, false);
    printf ("\n");
  }
  if (f->type == VHD_TYPE_DIFF) {
    printf ("parent id:         %s\n", x.parent_id);
    printf ("parent name:       %s\n", f->parent_name);
    printf ("parent timestamp:  %s\n", x.parent_time);
    for (i = 0; i < VHD_NUM_LOCATORS; i++) {
      char code[5], *text;
      if (f->header.loc[i].code == 0)
        continue;
      text = vhd_locator_text (f, i);
      printf ("locator %d:         %s %s\n", i,
              vhd_locator_code_name (f->header.loc[i].code, code),
              text ? text : "(unreadable)");
      free (text);
    }
  }
  printf ("chain:\n");
  if (c)
    for (k = 0; k < c->depth; k++)
      printf ("  %u  %-12s %s\n", k, vhd_type_name (c->layers[k]->type),
              c->layers[k]->path);
  else
    printf ("  cannot be resolved: %s\n", chain_error);
}

static void
print_json (const struct vhd_file *f, const struct vhd_chain *c,
            const char *chain_error)
{
  struct facts x;
  int i;
  unsigned k;
  bool first = true;

  gather (f, &x);
  printf ("{\n  \"file\": ");
  json_string (stdout, f->path);
  printf (",\n  \"type\": \"%s\",\n", vhd_type_name (f->type));
  printf ("  \"virtual-size\": %" PRIu64 ",\n", f->disk_size);
  printf ("  \"current-size\": %" PRIu64 ",\n", f->size);
  printf ("  \"geometry-size\": %" PRIu64 ",\n", f->geometry_size);
  printf ("  \"size-rule\": \"%s\",\n",
          f->size_from_geometry ? "geometry" : "current");
  printf ("  \"size-rule-reason\": ");
  json_string (stdout, f->size_rule);
  printf (",\n  \"quirks\": [");
  print_quirks (f, true);
  printf ("],\n");
  if (f->type != VHD_TYPE_FIXED)
    printf ("  \"block-size\": %u,\n", f->block_size);
  printf ("  \"creator\": ");
  json_string (stdout, x.creator);
  printf (",\n  \"creator-version\": \"%u.%u\",\n",
          f->footer.creator_version >> 16, f->footer.creator_version & 0xffff);
  printf ("  \"creator-os\": \"%s\",\n", creator_os (f->footer.creator_os));
  printf ("  \"created\": \"%s\",\n", x.created);
  printf ("  \"unique-id\": \"%s\",\n", x.id);
  printf ("  \"geometry\": { \"cylinders\": %u, \"heads\": %u, "
          "\"sectors\": %u },\n", f->footer.cylinders, f->footer.heads,
          f->footer.sectors_per_track);
  printf ("  \"allocated\": %" PRIu64 ",\n", x.allocated);
  printf ("  \"file-size\": %" PRIu64 ",\n", f->file_size);
  printf ("  \"footer-from-copy\": %s,\n", f->footer_from_copy ? "true" : "false");
  if (f->type == VHD_TYPE_DIFF) {
    printf ("  \"parent-id\": \"%s\",\n  \"parent-name\": ", x.parent_id);
    json_string (stdout, f->parent_name);
    printf (",\n  \"parent-timestamp\": \"%s\",\n  \"locators\": [",
            x.parent_time);
    for (i = 0; i < VHD_NUM_LOCATORS; i++) {
      char code[5], *text;
      if (f->header.loc[i].code == 0)
        continue;
      text = vhd_locator_text (f, i);
      printf ("%s\n    { \"slot\": %d, \"code\": ", first ? "" : ",", i);
      json_string (stdout, vhd_locator_code_name (f->header.loc[i].code, code));
      printf (", \"path\": ");
      if (text)
        json_string (stdout, text);
      else
        printf ("null");
      printf (" }");
      free (text);
      first = false;
    }
    printf ("\n  ],\n");
  }
  printf ("  \"chain\": ");
  if (c) {
    printf ("[");
    for (k = 0; k < c->depth; k++) {
      printf ("%s\n    { \"depth\": %u, \"type\": \"%s\", \"file\": ",
              k ? "," : "", k, vhd_type_name (c->layers[k]->type));
      json_string (stdout, c->layers[k]->path);
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
  struct vhd_file *f = NULL;
  struct vhd_chain *c = NULL;
  char chain_error[1024] = "";
  bool json = false;
  int ch, r = EXIT_FAILED;

  while ((ch = getopt_long (argc, argv, "h", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'j': json = true; break;
    case 'C': o.ignore_checksums = true; break;
    case 'I': o.ignore_id_mismatch = true; break;
    case OPT_PARENT: case OPT_PARENT_DIR: case OPT_CONFINE_PARENTS:
      if (parent_option (&o, ch, optarg) == -1)
        goto out;
      break;
    case OPT_DISK_SIZE:
      if (disk_size_option (&o, optarg) == -1) {
        r = EXIT_USAGE;
        goto out;
      }
      break;
    case 'h':
      info_help ();
      r = EXIT_OK;
      goto out;
    default:
      usage_error ("info: bad option");
      r = EXIT_USAGE;
      goto out;
    }
  }
  if (argc - optind != 1) {
    usage_error ("info takes one FILE");
    r = EXIT_USAGE;
    goto out;
  }

  if (vhd_file_open (argv[optind], false, &o, &f) == -1)
    goto out;
  /* The file itself is readable: report it even if the chain is not. */
  if (vhd_chain_open (argv[optind], &o, &c) == -1)
    snprintf (chain_error, sizeof chain_error, "%s", tool_last_error ());
  if (json)
    print_json (f, c, chain_error);
  else
    print_text (f, c, chain_error);
  r = c ? EXIT_OK : EXIT_FAILED;

 out:
  vhd_chain_close (c);
  vhd_file_close (f);
  parent_options_free (&o);
  return r;
}
