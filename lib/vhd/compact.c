/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHD back-end's half of compaction (lib/compact.c
 * decides what changes): releasing blocks, moving them down the file,
 * shortening it.
 *
 * CRASH SAFETY (the order of the three phases is at the top of
 * lib/compact.c; the commit is alloc.c's, step 3 there).
 *
 * 1. Release: the BAT entry becomes 0xFFFFFFFF in memory; the commit
 *    writes the BAT sectors holding it and syncs.  Each sector write is
 *    atomic enough: any mix of old and new entries reads the same disk
 *    (compact.c only releases blocks the disk does not need).
 * 2. Move: bitmap and data of the block are copied into space nothing
 *    references (never metadata, never another block, never the
 *    block's own old place: compact.c's plan), the entry changes in
 *    memory, and the commit syncs the copies (its first fdatasync)
 *    before it writes the BAT sectors and syncs again.  Until that last
 *    sync each entry points at the old copy or the new one: both
 *    durable and identical.  The old copy is not touched.
 * 3. Truncate to end (past every referenced byte, all committed):
 *      a. the footer is written at end (unreferenced space), synced;
 *      b. the file is cut right after it, synced.
 *    Until (b) the EOF footer is the old one, still valid: compaction
 *    never changes footer contents, so either footer is the file's.
 *    Power loss around (b) leaves the file at either length.
 *
 * Data areas keep Windows' 4 KiB alignment (alloc.c, align_block_start)
 * where a hole has room for it; a file laid out without it (qemu puts
 * each block right after the previous one) is packed sector-aligned.
 * Parent locators, the header and the BAT are metadata: never a slot,
 * never moved.  blktap's batmap would go stale: such files are refused.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "vhd-format.h"

int
vhd_compact_release (struct vhd_layer *l, uint32_t blk, enum block_state to)
{
  struct vhd_file *f = vhd_file (l);

  if (to != BLOCK_ABSENT) {
    errno = EINVAL;
    vhd_error ("%s: internal error: a VHD block can only become "
               "unallocated", l->path);
    return -1;
  }
  vhd_file_set_entry (f, blk, VHD_BAT_UNUSED);
  return 0;
}

int
vhd_compact_layout (struct vhd_layer *l, struct compact_layout *out)
{
  struct vhd_file *f = vhd_file (l);
  const struct vhd_header *h = &f->header;
  uint64_t bat_bytes = ROUND_UP ((uint64_t) h->max_table_entries * 4,
                                 VHD_SECTOR);
  size_t cap = 0;
  uint32_t blk;
  int i;

  if (f->quirks & (1u << VHD_QUIRK_TAP_BATMAP)) {
    vhd_error ("%s: blktap's batmap would no longer match the blocks: "
               "compacting this file is not supported", l->path);
    errno = ENOTSUP;
    return -1;
  }
  out->align = 4096;
  out->min_align = VHD_SECTOR;
  out->align_off = f->bitmap_bytes;
  if (compact_layout_add (out, &cap, 0,
                          f->footer.data_offset + VHD_HEADER_SIZE, -1) == -1 ||
      compact_layout_add (out, &cap, h->table_offset, bat_bytes, -1) == -1)
    goto nomem;
  if (f->type == VHD_TYPE_DIFF)
    for (i = 0; i < VHD_NUM_LOCATORS; i++)
      if (h->loc[i].code != 0 &&
          compact_layout_add (out, &cap, h->loc[i].offset,
                              vhd_locator_space_bytes (h->loc[i].space),
                              -1) == -1)
        goto nomem;
  for (blk = 0; blk < l->n_blocks; blk++) {
    uint32_t e = bat_get (f, blk);
    if (e != VHD_BAT_UNUSED &&
        compact_layout_add (out, &cap, (uint64_t) e * VHD_SECTOR,
                            f->bitmap_bytes + (uint64_t) l->block_size,
                            blk) == -1)
      goto nomem;
  }
  return 0;

 nomem:
  vhd_error ("%s: %m", l->path);
  free (out->v);
  out->v = NULL;
  return -1;
}

/* Copy [from, from+len) to to; bytes past the footer (a last block the
 * file cuts short) are zeros. */
static int
copy_range (struct vhd_file *f, uint64_t from, uint64_t len, uint64_t to)
{
  uint64_t have = from < f->footer_offset
                  ? MIN (len, f->footer_offset - from) : 0;

  if (copy_file_bytes (f->l.fd, from, have, to) == -1 ||
      zero_file_range (f->l.fd, to + have, len - have) == -1) {
    vhd_error ("%s: moving a block from offset %" PRIu64 " to %" PRIu64
               ": %m", f->l.path, from, to);
    return -1;
  }
  return 0;
}

int
vhd_compact_move (struct vhd_layer *l, const struct compact_extent *x,
                  uint64_t to)
{
  struct vhd_file *f = vhd_file (l);
  uint32_t blk = x->index;

  if (to % VHD_SECTOR != 0 || to + x->len > f->footer_offset) {
    vhd_error ("%s: internal error: block %u cannot go to offset %" PRIu64,
               l->path, blk, to);
    errno = EINVAL;
    return -1;
  }
  if (copy_range (f, x->start, x->len, to) == -1)
    return -1;
  vhd_file_set_entry (f, blk, to / VHD_SECTOR);
  return 0;
}

int
vhd_compact_truncate (struct vhd_layer *l, uint64_t end, vhd_step_fn step,
                      void *opaque)
{
  struct vhd_file *f = vhd_file (l);
  uint8_t footer[VHD_FOOTER_SIZE];

  end = ROUND_UP (end, VHD_SECTOR);
  if (end >= f->footer_offset)
    return 0;
  vhd_file_footer_bytes (f, footer);
  if (full_pwrite (l->fd, footer, sizeof footer, end) == -1 ||
      fdatasync (l->fd) == -1) {
    vhd_error ("%s: writing the footer at offset %" PRIu64 ": %m", l->path,
               end);
    return -1;
  }
  if (step)
    step (opaque, "footer-written");
  if (ftruncate (l->fd, end + VHD_FOOTER_SIZE) == -1 ||
      fdatasync (l->fd) == -1) {
    vhd_error ("%s: shortening the file to %" PRIu64 " bytes: %m", l->path,
               end + VHD_FOOTER_SIZE);
    return -1;
  }
  f->footer_offset = end;
  f->l.file_size = end + VHD_FOOTER_SIZE;
  f->data_end = MIN (f->data_end, end);
  return 0;
}
