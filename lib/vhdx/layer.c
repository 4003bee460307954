/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX back-end's operations table (layer.h): how the
 * core reads blocks, finds parents and describes a VHDX file.
 *
 * Block states mapped onto the core's (docs section 3.3): NOT_PRESENT
 * is absent (the parent's in a differencing disk, zeros otherwise);
 * UNDEFINED, ZERO and UNMAPPED (and draft 0.95's 5) read as zeros and
 * hide the parent; FULLY_PRESENT is present; PARTIALLY_PRESENT is
 * partial in a differencing disk (its chunk's sector bitmap says which
 * sectors) and, tolerated in a disk without a parent, present. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "vhdx-format.h"

static bool
vhdx_probe (const uint8_t *head, size_t head_len,
            const uint8_t *tail, size_t tail_len)
{
  return head_len >= 8 && memcmp (head, "vhdxfile", 8) == 0;
}

static int
vhdx_open_layer (const char *path, bool writable,
                 const struct vhd_open_options *opts, struct vhd_layer **out)
{
  struct vhdx_file *f;

  if (vhdx_file_open (path, writable, opts, &f) == -1)
    return -1;
  *out = &f->l;
  return 0;
}

static void
vhdx_close_layer (struct vhd_layer *l)
{
  vhdx_file_close (vhdx_file (l));
}

static int
vhdx_lookup (struct vhd_layer *l, uint32_t blk, struct block_map *m)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t e;

  if (vhdx_bat_entry (f, vhdx_payload_index (f, blk), &e) == -1)
    return -1;
  m->data_off = 0;
  switch (VHDX_BAT_STATE (e)) {
  case VHDX_NOT_PRESENT:
    m->state = BLOCK_ABSENT;
    break;
  case VHDX_FULLY_PRESENT:
    m->state = BLOCK_PRESENT;
    m->data_off = VHDX_BAT_OFFSET (e);
    break;
  case VHDX_PARTIALLY_PRESENT:
    m->state = f->has_parent ? BLOCK_PARTIAL : BLOCK_PRESENT;
    m->data_off = VHDX_BAT_OFFSET (e);
    break;
  default:                      /* undefined, zero, unmapped */
    m->state = BLOCK_ZERO;
    break;
  }
  return 0;
}


/* The block's bits of its chunk's sector bitmap block (LSB first, block
 * k of the chunk from bit k * B / S), handed to the core MSB first. */
static int
vhdx_read_bitmap (struct vhd_layer *l, uint32_t blk,
                  const struct block_map *m, uint8_t *bitmap)
{
  struct vhdx_file *f = vhdx_file (l);
  uint32_t bytes = layer_bitmap_bytes (l), i;
  uint64_t chunk = blk / f->chunk_ratio, k = blk % f->chunk_ratio, e;

  if (vhdx_bat_entry (f, vhdx_sb_index (f, chunk), &e) == -1)
    return -1;
  if (VHDX_BAT_STATE (e) == VHDX_SB_NOT_PRESENT) {
    vhd_error ("%s: block %u is partially present but the sector bitmap "
               "block of its chunk (BAT entry %" PRIu64 ") is not present",
               l->path, blk, vhdx_sb_index (f, chunk));
    errno = EINVAL;
    return -1;
  }
  if (vhdx_pread (f, bitmap, bytes, VHDX_BAT_OFFSET (e) + k * bytes) == -1) {
    vhd_error ("%s: reading the sector bitmap of block %u: %m", l->path, blk);
    return -1;
  }
  for (i = 0; i < bytes; i++)
    bitmap[i] = reverse_bits (bitmap[i]);
  return 0;
}

static int
vhdx_layer_pread (struct vhd_layer *l, void *buf, size_t n, uint64_t off)
{
  return vhdx_pread (vhdx_file (l), buf, n, off);
}

static uint64_t
vhdx_allocated (struct vhd_layer *l)
{
  uint64_t counts[8];

  if (vhdx_bat_count (vhdx_file (l), counts) == -1)
    return 0;
  return counts[VHDX_FULLY_PRESENT] + counts[VHDX_PARTIALLY_PRESENT];
}

/* MS-VHDX's order: relative_path, volume_path, absolute_win32_path.  A
 * volume GUID path cannot be mapped off Windows; the core skips it. */
static void
vhdx_parent_hints (struct vhd_layer *l, hint_fn add, void *opaque)
{
  static const char *const keys[] = {
    "relative_path", "volume_path", "absolute_win32_path",
  };
  struct vhdx_file *f = vhdx_file (l);
  size_t i;

  for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const char *v = vhdx_locator_get (f, keys[i]);
    char *from;
    if (v == NULL || asprintf (&from, "parent locator %s", keys[i]) == -1)
      continue;
    add (opaque, v, HINT_WINDOWS, from);
  }
}

/* ------------------------------------------------------------ describe */

static void
fact (struct vhd_layer_info *x, const char *name, const char *fs, ...)
  __attribute__ ((format (printf, 3, 4)));
static void
fact (struct vhd_layer_info *x, const char *name, const char *fs, ...)
{
  struct vhd_fact *v;
  va_list args;

  if (x->n_facts % 16 == 0) {
    v = realloc (x->facts, (x->n_facts + 16) * sizeof *v);
    if (v == NULL)
      return;
    x->facts = v;
  }
  v = &x->facts[x->n_facts];
  va_start (args, fs);
  if (vasprintf (&v->value, fs, args) == -1)
    v->value = NULL;
  va_end (args);
  v->name = strdup (name);
  if (v->name && v->value)
    x->n_facts++;
  else {
    free (v->name);
    free (v->value);
  }
}

static const char *
item_name (const uint8_t g[16])
{
  static const struct { const uint8_t *g; const char *name; } names[] = {
    { vhdx_item_file_params, "file parameters" },
    { vhdx_item_disk_size, "virtual disk size" },
    { vhdx_item_disk_id, "virtual disk id" },
    { vhdx_item_logical_sector, "logical sector size" },
    { vhdx_item_physical_sector, "physical sector size" },
    { vhdx_item_parent_locator, "parent locator" },
    { vhdx_item_chs, "CHS parameters" },
    { vhdx_item_pmem, "PMEM label storage" },
  };
  size_t i;

  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (memcmp (names[i].g, g, 16) == 0)
      return names[i].name;
  return "unknown";
}

static void
describe_headers (struct vhdx_file *f, struct vhd_layer_info *x)
{
  char name[64], g[3][37];
  int i;

  fact (x, "current header", "%d", f->current + 1);
  for (i = 0; i < 2; i++) {
    const struct vhdx_header *h = &f->hdr[i];
    snprintf (name, sizeof name, "header %d", i + 1);
    if (!h->valid) {
      fact (x, name, "not valid");
      continue;
    }
    vhdx_guid_format (h->file_write_guid, g[0]);
    vhdx_guid_format (h->data_write_guid, g[1]);
    vhdx_guid_format (h->log_guid, g[2]);
    fact (x, name, "sequence %" PRIu64 ", FileWriteGuid %s, DataWriteGuid "
          "%s, LogGuid %s, log %u bytes at %" PRIu64 ", version %u",
          h->seq, g[0], g[1], g[2], h->log_length, h->log_offset,
          h->version);
  }
}

static void
describe_regions (struct vhdx_file *f, struct vhd_layer_info *x)
{
  char name[64], g[37];
  uint32_t i;

  fact (x, "region table", "%d%s", f->region_table + 1,
        f->region_tables_differ ? " (the two tables differ)" : "");
  for (i = 0; i < f->n_regions; i++) {
    const struct vhdx_region *r = &f->regions[i];
    const char *what = memcmp (r->guid, vhdx_guid_bat, 16) == 0 ? "BAT"
      : memcmp (r->guid, vhdx_guid_metadata, 16) == 0 ? "metadata" : NULL;
    vhdx_guid_format (r->guid, g);
    snprintf (name, sizeof name, "region %u", i);
    fact (x, name, "%s (%s): %u bytes at %" PRIu64 ", required %u",
          what ? what : "unknown", g, r->length, r->offset, r->required);
  }
}

static void
describe_metadata (struct vhdx_file *f, struct vhd_layer_info *x)
{
  char name[64], g[37];
  uint32_t i;

  for (i = 0; i < f->n_items; i++) {
    const struct vhdx_item *it = &f->items[i];
    vhdx_guid_format (it->guid, g);
    snprintf (name, sizeof name, "metadata item %u", i);
    fact (x, name, "%s (%s): %u bytes at %u, flags 0x%x%s%s%s",
          it->flags & VHDX_ITEM_USER ? "user" : item_name (it->guid), g,
          it->length, it->offset, it->flags,
          it->flags & VHDX_ITEM_USER ? " user" : "",
          it->flags & VHDX_ITEM_VIRTUAL_DISK ? " virtual-disk" : "",
          it->flags & VHDX_ITEM_REQUIRED ? " required" : "");
  }
}

/* counts: blocks per state (vhdx_bat_count), NULL if unreadable. */
static void
describe_bat (struct vhdx_file *f, struct vhd_layer_info *x,
              const uint64_t *counts)
{
  static const char *const names[8] = {
    "not present", "undefined", "zero", "unmapped", "state 4",
    "unmapped (state 5)", "fully present", "partially present",
  };
  char text[512] = "";
  size_t len = 0;
  int s;

  fact (x, "BAT", "%" PRIu64 " entries (%u bytes region at %" PRIu64
        "), chunk ratio %u", f->bat_entries, f->bat_length, f->bat_offset,
        f->chunk_ratio);
  if (counts == NULL) {
    fact (x, "BAT blocks", "unreadable");
    return;
  }
  for (s = 0; s < 8; s++)
    if (counts[s])
      len += snprintf (text + len, sizeof text - len, "%s%" PRIu64 " %s",
                       len ? ", " : "", counts[s], names[s]);
  fact (x, "BAT blocks", "%s", text);
}

static void
vhdx_describe (struct vhd_layer *l, struct vhd_layer_info *x)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t counts[8];
  char g[37];
  uint32_t i;

  memset (x, 0, sizeof *x);
  x->format = "VHDX";
  x->type = l->type;
  x->size = x->current_size = l->disk_size;
  x->sector_size = l->sector_size;
  x->block_size = l->block_size;
  /* One scan of the BAT for both (16 MiB for a 64 TiB layer). */
  bool counted = !l->headers_only && vhdx_bat_count (f, counts) == 0;

  x->allocated_known = counted;
  if (counted)
    x->allocated = (counts[VHDX_FULLY_PRESENT] +
                    counts[VHDX_PARTIALLY_PRESENT]) * (uint64_t) l->block_size;
  x->file_size = l->file_size;
  vhdx_guid_format (l->id, x->id);
  snprintf (x->creator, sizeof x->creator, "%s", f->creator ? f->creator : "");

  fact (x, "physical sector size", "%u", f->physical_sector);
  vhdx_guid_format (f->disk_id, g);
  fact (x, "virtual disk id", "%s", g);
  fact (x, "file flags", "%s%s%s",
        f->leave_allocated ? "LeaveBlockAllocated" : "",
        f->leave_allocated && f->has_parent ? ", " : "",
        f->has_parent ? "HasParent" : !f->leave_allocated ? "none" : "");
  describe_headers (f, x);
  if (f->replay)
    fact (x, "log", "replayed in memory: %u entries, sequence %" PRIu64
          "..%" PRIu64 ", FlushedFileOffset %" PRIu64 ", LastFileOffset %"
          PRIu64, f->replay->entries, f->replay->first_seq,
          f->replay->last_seq, f->replay->flushed_file_offset,
          f->replay->last_file_offset);
  else
    fact (x, "log", "empty (LogGuid zero)");
  describe_regions (f, x);
  describe_metadata (f, x);
  if (!l->headers_only)
    describe_bat (f, x, counted ? counts : NULL);

  if (!f->has_parent)
    return;
  vhdx_guid_format (l->parent_id, x->parent_id);
  if (l->has_parent_id2)
    vhdx_guid_format (l->parent_id2, x->parent_id2);
  x->parent_name = strdup (l->parent_name ? l->parent_name : "");
  for (i = 0; i < f->n_locator && x->n_locators < VHD_MAX_LOCATOR_INFO; i++) {
    struct vhd_locator_info *li = &x->locators[x->n_locators++];
    li->slot = i;
    snprintf (li->kind, sizeof li->kind, "%s", f->locator[i].key);
    li->text = strdup (f->locator[i].value);
  }
}

const struct layer_ops vhdx_format_ops = {
  .format = "VHDX",
  .probe = vhdx_probe,
  .open = vhdx_open_layer,
  .close = vhdx_close_layer,
  .lookup = vhdx_lookup,
  .read_bitmap = vhdx_read_bitmap,
  .pread = vhdx_layer_pread,
  .allocated_blocks = vhdx_allocated,
  .parent_hints = vhdx_parent_hints,
  .writer_init = vhdx_writer_init,
  .writer_free = vhdx_writer_free,
  .alloc_block = vhdx_alloc_block,
  .publish = vhdx_publish,
  .commit = vhdx_commit,
  .begin_write = vhdx_begin_write,
  .set_parent = vhdx_set_parent,
  .expect_parent_id = vhdx_expect_parent_id,
  .zero_block = vhdx_zero_block,
  .compact_begin = vhdx_compact_begin,
  .compact_release = vhdx_compact_release,
  .compact_layout = vhdx_compact_layout,
  .compact_move = vhdx_compact_move,
  .compact_truncate = vhdx_compact_truncate,
  .format_id = vhdx_guid_format,
  .new_image = vhdx_new_image,
  .describe = vhdx_describe,
  .resize = vhdx_resize_layer,
  .minimum_size = vhdx_minimum_size,
};
