/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: opening and validating one VHDX file.
 *
 * The order is the one MS-VHDX requires (docs section 2.5): the file
 * identifier, the current header, the log (replayed in memory when the
 * header names one, before anything else is read: region tables,
 * metadata and BAT may all have updates in it), the region table, the
 * metadata table and its items, the parent locator.  Every offset,
 * length and count read from the file is checked before it is used, so
 * a hostile file only produces an error naming the file and the
 * structure at fault.  Nothing here writes to the file.
 *
 * Problems go through vhd_report (problem.c), as for VHD, so this is
 * also vhdtool check's examination; unusable() marks a file whose rest
 * cannot be examined.  The BAT is not read at open (a 64 TiB layer's
 * BAT is 16 MiB): entries are checked as they are read (bat.c), and
 * check mode examines every one.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "vhdx-format.h"

static int
unusable (struct vhdx_file *f)
{
  f->l.unusable = true;
  errno = EINVAL;
  return -1;
}

static int
read_identifier (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  uint8_t id[8 + 512];

  if (f->l.file_size < VHDX_HEADER_SECTION) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "",
                "not a VHDX file: %" PRIu64 " bytes long, shorter than the "
                "1 MiB header section", f->l.file_size);
    errno = EINVAL;
    return -1;
  }
  if (full_pread (f->l.fd, id, sizeof id, 0) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "",
                "reading the file identifier: %m");
    return -1;
  }
  if (memcmp (id, "vhdxfile", 8) != 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file identifier", "",
                "not a VHDX file: no 'vhdxfile' signature at offset 0");
    errno = EINVAL;
    return -1;
  }
  f->identified = true;
  /* Diagnostic only (MS-VHDX 2.2.1): never acted upon. */
  f->creator = vhd_utf16_to_utf8 (id + 8, 512, false);
  return 0;
}

static void
header_decode (const uint8_t *b, struct vhdx_header *h)
{
  h->checksum = le32 (b + 4);
  h->seq = le64 (b + 8);
  memcpy (h->file_write_guid, b + 16, 16);
  memcpy (h->data_write_guid, b + 32, 16);
  memcpy (h->log_guid, b + 48, 16);
  h->log_version = le16 (b + 64);
  h->version = le16 (b + 66);
  h->log_length = le32 (b + 68);
  h->log_offset = le64 (b + 72);
}

/* The current header: valid (signature and CRC), and the one with the
 * higher sequence number when both are (MS-VHDX 2.2.2).  Equal numbers
 * are accepted only when the headers say the same (Disk2VHD writes
 * such files): otherwise which one is current is unknowable. */
static int
read_headers (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  uint8_t b[2][VHDX_HEADER_SIZE];
  char why[2][64];
  int i;

  for (i = 0; i < 2; i++) {
    struct vhdx_header *h = &f->hdr[i];
    if (full_pread (f->l.fd, b[i], VHDX_HEADER_SIZE,
                    VHDX_HEADER_OFFSET (i)) == -1) {
      vhd_report (opts, VHD_ERROR, f->l.path, "header", "",
                  "reading header %d: %m", i + 1);
      return -1;
    }
    header_decode (b[i], h);
    if (memcmp (b[i], "head", 4) != 0)
      snprintf (why[i], sizeof why[i], "no 'head' signature");
    else if (vhdx_crc32c (b[i], VHDX_HEADER_SIZE, 4) != h->checksum)
      snprintf (why[i], sizeof why[i], "CRC-32C mismatch (stored 0x%08x, "
                "computed 0x%08x)", h->checksum,
                vhdx_crc32c (b[i], VHDX_HEADER_SIZE, 4));
    else
      h->valid = true;
  }
  if (!f->hdr[0].valid && !f->hdr[1].valid) {
    vhd_report (opts, VHD_ERROR, f->l.path, "headers", "",
                "no valid header: header 1: %s; header 2: %s",
                why[0], why[1]);
    return unusable (f);
  }
  for (i = 0; i < 2; i++)
    if (!f->hdr[i].valid)
      vhd_report (opts, VHD_NOTE, f->l.path, "headers", "",
                  "header %d is not valid (%s): header %d is used "
                  "(an interrupted header update leaves this)",
                  i + 1, why[i], 2 - i);
  if (f->hdr[0].valid && f->hdr[1].valid &&
      f->hdr[0].seq == f->hdr[1].seq && memcmp (b[0], b[1], 80) != 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "headers", "",
                "both headers have sequence number %" PRIu64 " but differ: "
                "which one is current cannot be known", f->hdr[0].seq);
    return unusable (f);
  }
  f->current = !f->hdr[0].valid ||
               (f->hdr[1].valid && f->hdr[1].seq > f->hdr[0].seq);
  return 0;
}

static bool
log_past_eof (const struct vhdx_header *h, uint64_t file_size)
{
  return h->log_length > file_size ||
         h->log_offset > file_size - h->log_length;
}

static int
check_header (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  const struct vhdx_header *h = &f->hdr[f->current];
  bool dirty = !vhdx_guid_is_zero (h->log_guid);
  int n = f->current + 1;

  if (h->version != 1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "header", "",
                "header %d: version %u, only version 1 is defined", n,
                h->version);
    return unusable (f);
  }
  if (dirty && h->log_version != 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "header", "",
                "header %d: log version %u, only version 0 is defined, and "
                "the log needs replaying", n, h->log_version);
    return unusable (f);
  }
  if (h->log_length == 0 && !dirty)
    return 0;
  if (h->log_offset % VHDX_MiB || h->log_length % VHDX_MiB ||
      h->log_offset < VHDX_HEADER_SECTION || h->log_length == 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "header", "",
                "header %d: log at offset %" PRIu64 ", length %u: both "
                "must be whole MiB, outside the first MiB", n,
                h->log_offset, h->log_length);
    return unusable (f);
  }
  /* log_offset is any MiB multiple: the sum may wrap. */
  if (log_past_eof (h, f->l.file_size) &&
      vhd_report (opts, dirty ? VHD_ERROR : VHD_NOTE, f->l.path, "header", "",
                  "header %d: the log (offset %" PRIu64 ", length %u) "
                  "ends past the end of the file (%" PRIu64 " bytes)", n,
                  h->log_offset, h->log_length, f->l.file_size))
    return unusable (f);
  if (dirty && log_past_eof (h, f->l.file_size))
    return unusable (f);
  return 0;
}

static const char *
region_name (const uint8_t g[16], char buf[40])
{
  if (memcmp (g, vhdx_guid_bat, 16) == 0)
    return "BAT";
  if (memcmp (g, vhdx_guid_metadata, 16) == 0)
    return "metadata";
  vhdx_guid_format (g, buf);
  return buf;
}

static bool
region_table_ok (const uint8_t *t, char *why, size_t len)
{
  if (memcmp (t, "regi", 4) != 0)
    snprintf (why, len, "no 'regi' signature");
  else if (vhdx_crc32c (t, VHDX_REGION_SIZE, 4) != le32 (t + 4))
    snprintf (why, len, "CRC-32C mismatch");
  else if (le32 (t + 8) > VHDX_REGION_MAX)
    snprintf (why, len, "%u entries, more than %u", le32 (t + 8),
              VHDX_REGION_MAX);
  else
    return true;
  return false;
}

/* Region table 1, or 2 when 1 is damaged (qemu and others read only
 * table 1; a torn update of it must not lose the file). */
static int
read_region_table (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  uint8_t *t[2] = { malloc (VHDX_REGION_SIZE), malloc (VHDX_REGION_SIZE) };
  char why[2][64];
  bool ok[2];
  uint32_t i, k;
  int use, r = -1;
  const struct vhdx_header *h = &f->hdr[f->current];

  if (t[0] == NULL || t[1] == NULL ||
      vhdx_pread (f, t[0], VHDX_REGION_SIZE, VHDX_REGION_OFFSET (0)) == -1 ||
      vhdx_pread (f, t[1], VHDX_REGION_SIZE, VHDX_REGION_OFFSET (1)) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                "reading the region tables: %m");
    goto out;
  }
  for (i = 0; i < 2; i++)
    ok[i] = region_table_ok (t[i], why[i], sizeof why[i]);
  if (!ok[0] && !ok[1]) {
    vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                "no valid region table: table 1: %s; table 2: %s",
                why[0], why[1]);
    r = unusable (f);
    goto out;
  }
  use = ok[0] ? 0 : 1;
  f->region_table = use;
  if (!ok[0])
    vhd_report (opts, VHD_WARN, f->l.path, "region table", "",
                "region table 1 is not valid (%s): region table 2 is used",
                why[0]);
  else if (!ok[1])
    vhd_report (opts, VHD_NOTE, f->l.path, "region table", "",
                "region table 2 is not valid (%s)", why[1]);
  else if (memcmp (t[0], t[1], VHDX_REGION_SIZE) != 0) {
    f->region_tables_differ = true;
    vhd_report (opts, VHD_NOTE, f->l.path, "region table", "",
                "the two region tables differ: table 1 is used");
  }

  f->n_regions = le32 (t[use] + 8);
  f->regions = calloc (f->n_regions + 1, sizeof *f->regions);
  if (f->regions == NULL) {
    vhd_report (opts, VHD_ERROR, f->l.path, "region table", "", "%m");
    goto out;
  }
  for (i = 0; i < f->n_regions; i++) {
    const uint8_t *e = t[use] + 16 + 32 * i;
    struct vhdx_region *g = &f->regions[i];
    char buf[40];
    const char *name;

    memcpy (g->guid, e, 16);
    g->offset = le64 (e + 16);
    g->length = le32 (e + 24);
    g->required = le32 (e + 28);
    /* The BAT and metadata names are not written into buf. */
    name = region_name (g->guid, buf);
    for (k = 0; k < i; k++)
      if (memcmp (f->regions[k].guid, g->guid, 16) == 0) {
        vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                    "region %s is listed twice", name);
        r = unusable (f);
        goto out;
      }
    if (memcmp (g->guid, vhdx_guid_bat, 16) != 0 &&
        memcmp (g->guid, vhdx_guid_metadata, 16) != 0) {
      if (g->required & 1) {
        vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                    "unknown region %s is marked required: this file "
                    "needs a reader that knows it", name);
        r = unusable (f);
        goto out;
      }
      vhd_report (opts, VHD_NOTE, f->l.path, "region table", "",
                  "unknown optional region %s ignored", name);
    }
    if (g->offset % VHDX_MiB || g->offset < VHDX_HEADER_SECTION ||
        g->length % VHDX_MiB || g->length == 0) {
      vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                  "region %s at offset %" PRIu64 ", length %u: both must "
                  "be non-zero whole MiB, outside the first MiB", name,
                  g->offset, g->length);
      r = unusable (f);
      goto out;
    }
    if (g->length > f->data_end || g->offset > f->data_end - g->length) {
      vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                  "region %s (offset %" PRIu64 ", length %u) ends past the "
                  "end of the file (%" PRIu64 " bytes): the file is "
                  "truncated", name, g->offset, g->length, f->data_end);
      r = unusable (f);
      goto out;
    }
    if (h->log_length &&
        overlaps (g->offset, g->offset + g->length, h->log_offset,
                  h->log_offset + h->log_length)) {
      vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                  "region %s overlaps the log", name);
      r = unusable (f);
      goto out;
    }
    for (k = 0; k < i; k++)
      if (overlaps (g->offset, g->offset + g->length, f->regions[k].offset,
                    f->regions[k].offset + f->regions[k].length)) {
        char other[40];
        vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                    "region %s overlaps region %s", name,
                    region_name (f->regions[k].guid, other));
        r = unusable (f);
        goto out;
      }
    if (memcmp (g->guid, vhdx_guid_bat, 16) == 0) {
      f->bat_offset = g->offset;
      f->bat_length = g->length;
    }
    else if (memcmp (g->guid, vhdx_guid_metadata, 16) == 0) {
      f->meta_offset = g->offset;
      f->meta_length = g->length;
    }
  }
  if (f->bat_length == 0 || f->meta_length == 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "region table", "",
                "the region table has no %s region",
                f->bat_length == 0 ? "BAT" : "metadata");
    r = unusable (f);
    goto out;
  }
  r = 0;
 out:
  free (t[0]);
  free (t[1]);
  return r;
}

/* ------------------------------------------------------------ metadata */

static const struct known_item {
  const uint8_t *guid;
  const char *name;
  uint32_t length;              /* exact; 0: any */
} known_items[] = {
  { vhdx_item_file_params, "file parameters", 8 },
  { vhdx_item_disk_size, "virtual disk size", 8 },
  { vhdx_item_disk_id, "virtual disk id", 16 },
  { vhdx_item_logical_sector, "logical sector size", 4 },
  { vhdx_item_physical_sector, "physical sector size", 4 },
  { vhdx_item_parent_locator, "parent locator", 0 },
  /* Known, no effect on where bytes are. */
  { vhdx_item_chs, "CHS parameters", 8 },
  { vhdx_item_pmem, "PMEM label storage", 0 },
};
#define N_MANDATORY 5
#define N_KNOWN (sizeof known_items / sizeof known_items[0])

static const struct vhdx_item *
find_item (const struct vhdx_file *f, const uint8_t guid[16])
{
  uint32_t i;

  for (i = 0; i < f->n_items; i++)
    if (!(f->items[i].flags & VHDX_ITEM_USER) &&
        memcmp (f->items[i].guid, guid, 16) == 0)
      return &f->items[i];
  return NULL;
}

static int
read_item (struct vhdx_file *f, const struct vhdx_item *it, void *buf)
{
  return vhdx_pread (f, buf, it->length, f->meta_offset + it->offset);
}

/* The metadata table: entries inside the region, disjoint, unique,
 * every required system item known (MS-VHDX 2.6.1). */
static int
read_metadata_table (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  uint8_t *t = malloc (VHDX_META_TABLE_SIZE);
  uint32_t i, k;
  int r = -1;

  if (t == NULL ||
      vhdx_pread (f, t, VHDX_META_TABLE_SIZE, f->meta_offset) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                "reading the metadata table: %m");
    goto out;
  }
  if (memcmp (t, "metadata", 8) != 0 || le16 (t + 10) > VHDX_META_MAX) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                memcmp (t, "metadata", 8) != 0
                ? "no 'metadata' signature at offset %" PRIu64
                : "more than 2047 entries in the table at offset %" PRIu64,
                f->meta_offset);
    r = unusable (f);
    goto out;
  }
  f->n_items = le16 (t + 10);
  f->items = calloc (f->n_items + 1, sizeof *f->items);
  if (f->items == NULL)
    goto out;
  for (i = 0; i < f->n_items; i++) {
    const uint8_t *e = t + 32 + 32 * i;
    struct vhdx_item *it = &f->items[i];
    char g[37];
    size_t j;
    bool known = false;

    memcpy (it->guid, e, 16);
    it->offset = le32 (e + 16);
    it->length = le32 (e + 20);
    it->flags = le32 (e + 24);
    vhdx_guid_format (it->guid, g);
    if (it->length == 0 ? it->offset != 0
        : (it->offset < VHDX_META_TABLE_SIZE || it->length > VHDX_MiB ||
           (uint64_t) it->offset + it->length > f->meta_length)) {
      vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                  "item %s: offset %u, length %u lies outside the "
                  "metadata region's item area (64 KiB to %u)", g,
                  it->offset, it->length, f->meta_length);
      r = unusable (f);
      goto out;
    }
    if ((it->flags & VHDX_ITEM_USER) && (it->flags & VHDX_ITEM_REQUIRED)) {
      vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                  "user item %s is marked required, which the format "
                  "forbids", g);
      r = unusable (f);
      goto out;
    }
    for (k = 0; k < i; k++) {
      const struct vhdx_item *o = &f->items[k];
      if (memcmp (o->guid, it->guid, 16) == 0 &&
          (o->flags & VHDX_ITEM_USER) == (it->flags & VHDX_ITEM_USER)) {
        vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                    "item %s is listed twice", g);
        r = unusable (f);
        goto out;
      }
      if (overlaps (it->offset, (uint64_t) it->offset + it->length,
                    o->offset, (uint64_t) o->offset + o->length)) {
        vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                    "item %s overlaps another item", g);
        r = unusable (f);
        goto out;
      }
    }
    if (it->flags & VHDX_ITEM_USER)
      continue;
    for (j = 0; j < N_KNOWN; j++)
      if (memcmp (known_items[j].guid, it->guid, 16) == 0) {
        known = true;
        if (known_items[j].length && it->length != known_items[j].length) {
          vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                      "item %s (%s) is %u bytes long, not %u", g,
                      known_items[j].name, it->length, known_items[j].length);
          r = unusable (f);
          goto out;
        }
      }
    if (memcmp (it->guid, vhdx_item_incomplete, 16) == 0) {
      vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                  "the file carries the 'incomplete file' item %s: its "
                  "creation never finished", g);
      r = unusable (f);
      goto out;
    }
    if (!known && (it->flags & VHDX_ITEM_REQUIRED)) {
      vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                  "unknown metadata item %s is marked required: this file "
                  "needs a reader that knows it", g);
      r = unusable (f);
      goto out;
    }
    if (!known)
      vhd_report (opts, VHD_NOTE, f->l.path, "metadata table", "",
                  "unknown optional metadata item %s ignored", g);
  }
  for (i = 0; i < N_MANDATORY; i++)
    if (find_item (f, known_items[i].guid) == NULL) {
      vhd_report (opts, VHD_ERROR, f->l.path, "metadata table", "",
                  "the mandatory %s item is missing", known_items[i].name);
      r = unusable (f);
      goto out;
    }
  r = 0;
 out:
  if (r == -1 && errno == 0)
    errno = EINVAL;
  free (t);
  return r;
}

static int
read_parameters (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  uint8_t params[8], size[8], lss[4], pss[4];
  uint32_t flags;

  if (read_item (f, find_item (f, vhdx_item_file_params), params) == -1 ||
      read_item (f, find_item (f, vhdx_item_disk_size), size) == -1 ||
      read_item (f, find_item (f, vhdx_item_disk_id), f->disk_id) == -1 ||
      read_item (f, find_item (f, vhdx_item_logical_sector), lss) == -1 ||
      read_item (f, find_item (f, vhdx_item_physical_sector), pss) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata", "",
                "reading the metadata items: %m");
    return -1;
  }
  f->block_size = le32 (params);
  flags = le32 (params + 4);
  f->leave_allocated = flags & 1;
  f->has_parent = flags & 2;
  f->virtual_size = le64 (size);
  f->logical_sector = le32 (lss);
  f->physical_sector = le32 (pss);
  f->has_chs = find_item (f, vhdx_item_chs) != NULL;

  if (f->block_size < VHDX_MIN_BLOCK || f->block_size > VHDX_MAX_BLOCK ||
      (f->block_size & (f->block_size - 1))) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata: file parameters", "",
                "block size %u is not a power of two from 1 MiB to 256 MiB",
                f->block_size);
    return unusable (f);
  }
  if (flags & ~UINT32_C (3)) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata: file parameters", "",
                "reserved flags 0x%x set", flags & ~UINT32_C (3));
    return unusable (f);
  }
  if (f->logical_sector != 512 && f->logical_sector != 4096) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata: logical sector size",
                "", "logical sector size %u: only 512 and 4096 are defined",
                f->logical_sector);
    return unusable (f);
  }
  if (f->physical_sector != 512 && f->physical_sector != 4096 &&
      vhd_report (opts, VHD_ERROR, f->l.path,
                  "metadata: physical sector size", "",
                  "physical sector size %u: only 512 and 4096 are defined",
                  f->physical_sector))
    return unusable (f);
  if (f->virtual_size == 0 || f->virtual_size > VHDX_MAX_SIZE ||
      f->virtual_size % f->logical_sector) {
    vhd_report (opts, VHD_ERROR, f->l.path, "metadata: virtual disk size", "",
                "virtual disk size %" PRIu64 " is not a non-zero multiple of "
                "the %u-byte logical sector up to 64 TiB", f->virtual_size,
                f->logical_sector);
    return unusable (f);
  }
  return 0;
}

/* ------------------------------------------------------------ locator */

const char *
vhdx_locator_get (const struct vhdx_file *f, const char *key)
{
  uint32_t i;

  for (i = 0; i < f->n_locator; i++)
    if (strcmp (f->locator[i].key, key) == 0)
      return f->locator[i].value;
  return NULL;
}

static int
compare_key (const void *a, const void *b)
{
  const struct vhdx_kv *const *x = a, *const *y = b;

  return strcmp ((*x)->key, (*y)->key);
}

/* The parent locator item (MS-VHDX 2.6.2.6): UTF-16LE keys and values,
 * offsets from the start of the item. */
static int
read_locator (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  const struct vhdx_item *it = find_item (f, vhdx_item_parent_locator);
  const char *s = "metadata: parent locator";
  const char *link, *link2;
  uint8_t *buf = NULL;
  const struct vhdx_kv **sorted = NULL;
  uint32_t count, i;
  int r = -1;

  if (!f->has_parent) {
    if (it)
      vhd_report (opts, VHD_NOTE, f->l.path, s, "",
                  "a parent locator in a disk without a parent: ignored");
    return 0;
  }
  if (it == NULL) {
    vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                "a differencing disk (HasParent) without a parent locator");
    return unusable (f);
  }
  buf = malloc (it->length + 1);
  if (buf == NULL || read_item (f, it, buf) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, s, "", "reading it: %m");
    goto out;
  }
  if (it->length < 20 || memcmp (buf, vhdx_locator_type, 16) != 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                "%s", it->length < 20 ? "too short"
                : "unknown locator type (only the VHDX one is defined)");
    r = unusable (f);
    goto out;
  }
  count = le16 (buf + 18);
  if (count == 0 || 20 + 12 * (uint64_t) count > it->length) {
    vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                "%u key-value entries do not fit its %u bytes", count,
                it->length);
    r = unusable (f);
    goto out;
  }
  f->locator = calloc (count, sizeof *f->locator);
  if (f->locator == NULL)
    goto out;
  for (i = 0; i < count; i++) {
    const uint8_t *e = buf + 20 + 12 * i;
    uint32_t ko = le32 (e), vo = le32 (e + 4);
    uint16_t kl = le16 (e + 8), vl = le16 (e + 10);
    struct vhdx_kv *kv = &f->locator[i];

    if (ko == 0 || vo == 0 || kl == 0 || vl == 0 || kl % 2 || vl % 2 ||
        (uint64_t) ko + kl > it->length || (uint64_t) vo + vl > it->length) {
      vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                  "entry %u: key at %u (%u bytes) or value at %u (%u bytes) "
                  "is empty, odd-sized or outside the item", i, ko, kl, vo,
                  vl);
      r = unusable (f);
      goto out;
    }
    kv->key = vhd_utf16_to_utf8 (buf + ko, kl, false);
    kv->value = vhd_utf16_to_utf8 (buf + vo, vl, false);
    f->n_locator++;
    if (kv->key == NULL || kv->value == NULL) {
      vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                  "entry %u: not valid UTF-16", i);
      r = unusable (f);
      goto out;
    }
  }
  /* Every key once.  Sorted, not compared pairwise: an item may hold
   * 65535 keys, and n^2 comparisons took seconds. */
  sorted = malloc (count * sizeof *sorted);
  if (sorted == NULL)
    goto out;
  for (i = 0; i < count; i++)
    sorted[i] = &f->locator[i];
  qsort (sorted, count, sizeof *sorted, compare_key);
  for (i = 1; i < count; i++)
    if (strcmp (sorted[i - 1]->key, sorted[i]->key) == 0) {
      vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                  "key %s appears twice", sorted[i]->key);
      r = unusable (f);
      goto out;
    }
  link = vhdx_locator_get (f, "parent_linkage");
  if (link == NULL || vhdx_guid_parse (link, f->l.parent_id) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, s, "",
                link ? "parent_linkage \"%s\" is not a GUID"
                : "no parent_linkage key: the parent cannot be identified%s",
                link ? link : "");
    r = unusable (f);
    goto out;
  }
  /* A second acceptable identity, meaningful only when not all-zero
   * (Hyper-V writes zeros; see docs section 5.2). */
  link2 = vhdx_locator_get (f, "parent_linkage2");
  if (link2 && vhdx_guid_parse (link2, f->l.parent_id2) == 0 &&
      !vhdx_guid_is_zero (f->l.parent_id2))
    f->l.has_parent_id2 = true;
  r = 0;
 out:
  free (sorted);
  free (buf);
  return r;
}

/* ------------------------------------------------------------ open */

static int
set_geometry (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  uint64_t payload, sb_count;

  f->chunk_ratio = ((UINT64_C (1) << 23) * f->logical_sector) / f->block_size;
  payload = (f->virtual_size + f->block_size - 1) / f->block_size;
  sb_count = (payload + f->chunk_ratio - 1) / f->chunk_ratio;
  f->bat_entries = f->has_parent
    ? sb_count * (f->chunk_ratio + 1)
    : payload + (payload - 1) / f->chunk_ratio;
  if (f->bat_entries * 8 > f->bat_length) {
    vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                "the BAT region holds %u bytes, too few for the %" PRIu64
                " entries a %" PRIu64 "-byte disk with %u-byte blocks needs",
                f->bat_length, f->bat_entries, f->virtual_size,
                f->block_size);
    return unusable (f);
  }

  f->l.size = f->l.disk_size = f->virtual_size;
  f->l.sector_size = f->logical_sector;
  f->l.block_size = f->block_size;
  f->l.n_blocks = payload;
  f->l.type = f->has_parent ? VHD_TYPE_DIFF
    : f->leave_allocated ? VHD_TYPE_FIXED : VHD_TYPE_DYNAMIC;
  f->l.has_parent = f->has_parent;
  f->l.flat = false;
  memcpy (f->l.id, f->hdr[f->current].data_write_guid, 16);
  if (f->has_parent) {
    const char *name = vhdx_locator_get (f, "relative_path");
    if (name == NULL)
      name = vhdx_locator_get (f, "absolute_win32_path");
    if (name == NULL)
      name = vhdx_locator_get (f, "volume_path");
    f->l.parent_name = name ? strdup (name) : NULL;
  }
  return 0;
}

int
vhdx_file_open (const char *path, bool writable,
                const struct vhd_open_options *opts, struct vhdx_file **out)
{
  struct vhdx_file *f = calloc (1, sizeof *f);

  if (f == NULL) {
    vhd_error ("%s: %m", path);
    return -1;
  }
  if (vhd_layer_open_file (&f->l, path, writable, opts) == -1)
    goto err;
  f->new_data_id = opts->new_data_id;
  f->data_end = f->l.file_size;
  f->l.sector_size = 512;       /* until the metadata says */

  if (read_identifier (f, opts) == -1 || read_headers (f, opts) == -1 ||
      check_header (f, opts) == -1 ||
      (!vhdx_guid_is_zero (f->hdr[f->current].log_guid) &&
       vhdx_log_replay (f, opts) == -1) ||
      read_region_table (f, opts) == -1 ||
      read_metadata_table (f, opts) == -1 ||
      read_parameters (f, opts) == -1 || read_locator (f, opts) == -1 ||
      set_geometry (f, opts) == -1) {
    if (f->l.unusable && opts->problem && f->identified)
      goto done;
    goto err;
  }
  if (vhdx_bat_init (f) == -1) {
    vhd_error ("%s: %m", f->l.path);
    goto err;
  }
  if (opts->problem && !opts->headers_only)
    vhdx_bat_check (f, opts);
 done:
  *out = f;
  return 0;

 err:
  vhdx_file_close (f);
  return -1;
}

void
vhdx_file_close (struct vhdx_file *f)
{
  int saved_errno = errno;
  uint32_t i;

  if (f == NULL)
    return;
  vhd_layer_close_file (&f->l);
  vhdx_log_free (f);
  vhdx_bat_free (f);
  free (f->creator);
  free (f->regions);
  free (f->items);
  for (i = 0; i < f->n_locator; i++) {
    free (f->locator[i].key);
    free (f->locator[i].value);
  }
  free (f->locator);
  free (f);
  errno = saved_errno;
}
