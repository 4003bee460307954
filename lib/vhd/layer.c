/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHD back-end's operations table (layer.h): how the
 * core reads blocks, finds parents and describes a VHD file. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include "vhd-format.h"

static bool
vhd_probe (const uint8_t *head, size_t head_len,
           const uint8_t *tail, size_t tail_len)
{
  /* The footer at the end (512 bytes, or 511 from old producers), or
   * its copy at offset 0 of a dynamic disk whose end was lost. */
  return (head_len >= 8 && memcmp (head, "conectix", 8) == 0) ||
         (tail_len >= VHD_FOOTER_SIZE &&
          memcmp (tail + tail_len - VHD_FOOTER_SIZE, "conectix", 8) == 0) ||
         (tail_len >= VHD_FOOTER_SIZE - 1 &&
          memcmp (tail + tail_len - (VHD_FOOTER_SIZE - 1), "conectix", 8) == 0);
}

static int
vhd_open_layer (const char *path, bool writable,
                const struct vhd_open_options *opts, struct vhd_layer **out)
{
  struct vhd_file *f;

  if (vhd_file_open (path, writable, opts, &f) == -1)
    return -1;
  *out = &f->l;
  return 0;
}

static void
vhd_close_layer (struct vhd_layer *l)
{
  vhd_file_close (vhd_file (l));
}

/* In a dynamic disk a clear bit and an unallocated block read as zeros
 * (as libvhdi, blktap and VirtualBox read it); in a differencing disk
 * they ask the parent.  The core reads has_parent for that. */
static int
vhd_lookup (struct vhd_layer *l, uint32_t blk, struct block_map *m)
{
  struct vhd_file *f = vhd_file (l);
  uint32_t entry;

  if (f->type == VHD_TYPE_FIXED) {
    m->state = BLOCK_PRESENT;
    m->data_off = (uint64_t) blk * l->block_size;
    return 0;
  }
  if (vhd_bat_lookup (f, blk, &entry) == -1)
    return -1;
  if (entry == VHD_BAT_UNUSED) {
    m->state = BLOCK_ABSENT;
    m->data_off = 0;
  }
  else {
    m->state = BLOCK_PARTIAL;
    m->data_off = block_data_offset (f, entry);
  }
  return 0;
}

static int
vhd_read_bitmap (struct vhd_layer *l, uint32_t blk,
                 const struct block_map *m, uint8_t *bitmap)
{
  struct vhd_file *f = vhd_file (l);

  if (full_pread (l->fd, bitmap, layer_bitmap_bytes (l),
                  m->data_off - f->bitmap_bytes) == -1) {
    vhd_error ("%s: reading sector bitmap of block %u: %m", l->path, blk);
    return -1;
  }
  return 0;
}

static uint64_t
vhd_allocated (struct vhd_layer *l)
{
  return vhd_file_allocated_blocks (vhd_file (l));
}

static void
vhd_parent_hints (struct vhd_layer *l, hint_fn add, void *opaque)
{
  /* Relative before absolute, Unicode before the old code page. */
  static const uint32_t order[] = {
    VHD_LOC_W2RU, VHD_LOC_W2KU, VHD_LOC_WI2R, VHD_LOC_WI2K, VHD_LOC_MACX,
  };
  struct vhd_file *f = vhd_file (l);
  size_t k;
  int slot;

  for (k = 0; k < sizeof order / sizeof order[0]; k++)
    for (slot = 0; slot < VHD_NUM_LOCATORS; slot++) {
      char *text, code[5], *from;
      if (f->header.loc[slot].code != order[k])
        continue;
      text = vhd_locator_text (f, slot);
      if (text == NULL)
        continue;
      if (asprintf (&from, "parent locator %d, %s", slot,
                    vhd_locator_code_name (order[k], code)) == -1)
        from = NULL;
      add (opaque, text,
           order[k] == VHD_LOC_MACX ? HINT_MAC_URL : HINT_WINDOWS, from);
      free (text);
    }
  if (f->l.parent_name && f->l.parent_name[0])
    add (opaque, f->l.parent_name, HINT_WINDOWS, strdup ("parent name field"));
}

static int
vhd_set_parent_layer (struct vhd_layer *child, const struct vhd_layer *parent,
                      vhd_step_fn step, void *opaque)
{
  return vhd_reparent (vhd_file (child), vhd_cfile (parent), step, opaque);
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

static void
vhd_describe (struct vhd_layer *l, struct vhd_layer_info *x)
{
  struct vhd_file *f = vhd_file (l);
  const struct vhd_footer *ft = &f->footer;
  int i;

  memset (x, 0, sizeof *x);
  x->format = "VHD";
  x->type = f->type;
  x->size = l->disk_size;
  x->current_size = l->size;
  x->geometry_size = f->geometry_size;
  x->size_from_geometry = f->size_from_geometry;
  x->size_rule = f->size_rule;
  x->quirks = f->quirks;
  x->sector_size = l->sector_size;
  x->block_size = f->type == VHD_TYPE_FIXED ? 0 : l->block_size;
  x->allocated_known = f->type == VHD_TYPE_FIXED || !l->headers_only;
  if (x->allocated_known)
    x->allocated = f->type == VHD_TYPE_FIXED
      ? l->size : vhd_file_allocated_blocks (f) * l->block_size;
  x->file_size = l->file_size;
  vhd_uuid_format (ft->unique_id, x->id);
  vhd_creator_format (ft->creator_app, x->creator);
  x->creator_version = ft->creator_version;
  x->creator_os = creator_os (ft->creator_os);
  x->created = (time_t) ft->timestamp + VHD_EPOCH;
  x->has_geometry = true;
  x->cylinders = ft->cylinders;
  x->heads = ft->heads;
  x->sectors_per_track = ft->sectors_per_track;
  x->footer_from_copy = f->footer_from_copy;
  if (f->type != VHD_TYPE_DIFF)
    return;
  vhd_uuid_format (f->header.parent_id, x->parent_id);
  x->parent_name = strdup (f->l.parent_name ? f->l.parent_name : "");
  x->parent_time = (time_t) f->header.parent_timestamp + VHD_EPOCH;
  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    struct vhd_locator_info *li = &x->locators[x->n_locators];
    if (f->header.loc[i].code == 0)
      continue;
    li->slot = i;
    vhd_locator_code_name (f->header.loc[i].code, li->kind);
    li->text = vhd_locator_text (f, i);
    x->n_locators++;
  }
}

const struct layer_ops vhd_format_ops = {
  .format = "VHD",
  .probe = vhd_probe,
  .open = vhd_open_layer,
  .close = vhd_close_layer,
  .lookup = vhd_lookup,
  .read_bitmap = vhd_read_bitmap,
  .allocated_blocks = vhd_allocated,
  .writer_init = vhd_file_writer_init,
  .writer_free = vhd_file_writer_free,
  .alloc_block = vhd_file_alloc_block,
  .publish = vhd_file_publish,
  .commit = vhd_file_commit,
  .compact_release = vhd_compact_release,
  .compact_layout = vhd_compact_layout,
  .compact_move = vhd_compact_move,
  .compact_truncate = vhd_compact_truncate,
  .parent_hints = vhd_parent_hints,
  .set_parent = vhd_set_parent_layer,
  .format_id = vhd_uuid_format,
  .new_image = vhd_new_image,
  .describe = vhd_describe,
  .resize = vhd_resize_layer,
};
