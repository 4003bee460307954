/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX back-end's half of compaction (lib/compact.c
 * decides what changes): releasing blocks, moving them down the file,
 * shortening it.
 *
 * CRASH SAFETY (the order of the three phases is at the top of
 * lib/compact.c; the log's protocol at the top of logwrite.c, the
 * commit's at the top of write.c, step 4).
 *
 * 0. Begin: our log, as a writing session starts it (logwrite.c,
 *    vhdx_log_begin), with a new FileWriteGuid but the DataWriteGuid
 *    kept (docs 5.1): the disk's content does not change, so its
 *    children stay valid.  Opening for writing replayed any pending
 *    log first (write.c, step 0).
 *    Soft anchors (file offsets kept by entries that hold no data) are
 *    dropped and committed first (drop_soft_anchors): no read changes,
 *    and their space is free from then on.
 * 1. Release: the payload entry becomes ZERO or NOT_PRESENT (offset 0)
 *    in memory; the commit puts the BAT pages through the log: one
 *    entry (or several, each a set of whole pages whose every mix reads
 *    the same disk: compact.c releases only blocks the disk does not
 *    need).  The old data is not touched.
 * 2. Move: the 1 MiB-aligned block (payload, or a sector bitmap block)
 *    is copied into space nothing references (outside the header
 *    section, the log, every region and every other block: compact.c's
 *    plan), its entry changes in memory (same state, new offset), and
 *    the commit syncs the copies (write.c 4c) before the BAT pages go
 *    through the log: whichever entries a crash leaves committed point
 *    at durable copies identical to the old ones, which stay untouched.
 * 3. Truncate, once every entry is applied in place and synced: the
 *    log ends (a header with LogGuid 0, synced), then the file is cut
 *    after the highest structure left, and synced.  Cutting before the
 *    log ends could let a replay grow the file back to an entry's
 *    LastFileOffset: harmless, but the space would not be given back.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "vhdx-format.h"

static bool is_sb (const struct vhdx_file *f, uint64_t i);

/* Soft anchors: a payload entry that holds no data (NOT_PRESENT, ZERO,
 * UNMAPPED, UNDEFINED) may keep a file offset, where another writer
 * (OpenVMM, maybe Hyper-V) puts the block again when it is next
 * written.  Every reader ignores it (docs 3.3: never dereference), but
 * packing would take that space for another block, which such a writer
 * would then overwrite.  So the offsets go, committed before anything
 * is planned: what reads return does not change. */
static int
drop_soft_anchors (struct vhd_layer *l)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t i, e;
  bool any = false;

  for (i = 0; i < f->bat_entries; i++) {
    unsigned s;

    if (is_sb (f, i))
      continue;
    if (vhdx_bat_entry (f, i, &e) == -1)
      return -1;
    s = VHDX_BAT_STATE (e);
    if (s == VHDX_FULLY_PRESENT || s == VHDX_PARTIALLY_PRESENT ||
        VHDX_BAT_OFFSET (e) == 0)
      continue;
    if (vhdx_bat_set (f, i, s, VHDX_BAT_DIRTY) == -1)
      return -1;
    any = true;
  }
  return any ? l->ops->commit (l, NULL, 0) : 0;
}

int
vhdx_compact_begin (struct vhd_layer *l)
{
  if (vhdx_writer_log (l, true) == -1)
    return -1;
  return drop_soft_anchors (l);
}

int
vhdx_compact_release (struct vhd_layer *l, uint32_t blk, enum block_state to)
{
  struct vhdx_file *f = vhdx_file (l);
  unsigned state = to == BLOCK_ZERO ? VHDX_ZERO : VHDX_NOT_PRESENT;

  if (to == BLOCK_ABSENT && !f->has_parent) {
    vhd_error ("%s: internal error: a block without a parent cannot be "
               "absent", l->path);
    errno = EINVAL;
    return -1;
  }
  return vhdx_bat_set (f, vhdx_payload_index (f, blk), state,
                       VHDX_BAT_DIRTY);
}

static bool
is_sb (const struct vhdx_file *f, uint64_t i)
{
  return (i + 1) % (f->chunk_ratio + (uint64_t) 1) == 0;
}

int
vhdx_compact_layout (struct vhd_layer *l, struct compact_layout *out)
{
  struct vhdx_file *f = vhdx_file (l);
  const struct vhdx_header *h = &f->hdr[f->current];
  size_t cap = 0;
  uint64_t i, e;
  uint32_t r;

  out->align = out->min_align = VHDX_MiB;
  out->align_off = 0;
  if (compact_layout_add (out, &cap, 0, VHDX_HEADER_SECTION, -1) == -1 ||
      compact_layout_add (out, &cap, h->log_offset, h->log_length, -1) == -1)
    goto nomem;
  /* BAT, metadata and any region we do not know: never moved. */
  for (r = 0; r < f->n_regions; r++)
    if (compact_layout_add (out, &cap, f->regions[r].offset,
                            f->regions[r].length, -1) == -1)
      goto nomem;
  for (i = 0; i < f->bat_entries; i++) {
    unsigned s;

    if (vhdx_bat_entry (f, i, &e) == -1)
      goto err;
    s = VHDX_BAT_STATE (e);
    if (is_sb (f, i) ? !VHDX_SB_HELD (e)
                     : s != VHDX_FULLY_PRESENT && s != VHDX_PARTIALLY_PRESENT)
      continue;
    if (compact_layout_add (out, &cap, VHDX_BAT_OFFSET (e),
                            is_sb (f, i) ? VHDX_MiB : f->block_size,
                            (int64_t) i) == -1)
      goto nomem;
  }
  return 0;

 nomem:
  vhd_error ("%s: %m", l->path);
 err:
  free (out->v);
  out->v = NULL;
  return -1;
}

int
vhdx_compact_move (struct vhd_layer *l, const struct compact_extent *x,
                   uint64_t to)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t e;

  if (to % VHDX_MiB != 0 || to + x->len > x->start) {
    vhd_error ("%s: internal error: BAT entry %" PRId64 " cannot go to "
               "offset %" PRIu64, l->path, x->index, to);
    errno = EINVAL;
    return -1;
  }
  if (vhdx_bat_entry (f, x->index, &e) == -1)
    return -1;
  /* The file itself: opening it for writing replayed any log into it. */
  if (copy_file_bytes (l->fd, x->start, x->len, to) == -1) {
    vhd_error ("%s: moving a block from offset %" PRIu64 " to %" PRIu64
               ": %m", l->path, x->start, to);
    return -1;
  }
  return vhdx_bat_set (f, x->index, to | VHDX_BAT_STATE (e), VHDX_BAT_DIRTY);
}

int
vhdx_compact_truncate (struct vhd_layer *l, uint64_t end, vhd_step_fn step,
                       void *opaque)
{
  uint64_t size = ROUND_UP (end, VHDX_MiB);

  if (vhdx_writer_log (l, false) == -1)
    return -1;
  if (step)
    step (opaque, "log-ended");
  if (size >= l->file_size)
    return 0;
  if (ftruncate (l->fd, size) == -1 || fdatasync (l->fd) == -1) {
    vhd_error ("%s: shortening the file to %" PRIu64 " bytes: %m", l->path,
               size);
    return -1;
  }
  vhdx_writer_truncated (l, size);
  return 0;
}
