/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: compacting a dynamic or differencing disk (vhdtool
 * compact, Hyper-V's Optimize-VHD), and the fragmentation figure of
 * vhdtool info.
 *
 * This file decides WHAT changes; the back-ends (lib/vhd/compact.c,
 * lib/vhdx/compact.c) do each change with their format's crash-safe
 * protocol (the compact_* operations of layer.h).
 *
 * 1. Release.  A block of the top file is released when the disk reads
 *    the same without it:
 *      - no parent (dynamic): every sector the block holds is zero; it
 *        becomes unallocated (VHD) or ZERO (VHDX);
 *      - a parent (differencing): every sector the block holds equals
 *        what the layers below show there; it becomes absent (the
 *        parent's again).  Otherwise, in a format with a ZERO state
 *        (VHDX), a block that reads as zeros everywhere becomes ZERO.
 *        Zeros over non-zero parent data stay in a VHD: releasing them
 *        would make the parent's data appear.
 * 2. Pack.  The file's extents (back-end: metadata that never moves,
 *    and the blocks its table references) are sorted; while the
 *    highest one is a block and a free slot ending below its start
 *    exists, it is moved to the lowest such slot (aligned as the format
 *    prefers where the hole has room, else as it allows: VHD data
 *    areas 4 KiB or sector aligned, VHDX blocks 1 MiB aligned).  Slots are
 *    taken bottom-up and sources top-down, so no slot ever overlaps a
 *    block's old place: every move of the batch is a copy into space
 *    nothing references, then one commit points the table at the
 *    copies.
 * 3. Truncate after the highest extent left.
 *
 * CRASH SAFETY.  Each of the three is durable before the next starts
 * (the back-end's commit syncs), and each leaves a file that reads the
 * same disk at every point: a release changes only table entries whose
 * blocks read the same without them; a copy goes to unreferenced space
 * and is synced before the table points at it, while the old copy
 * stays untouched until the file is truncated (after the table
 * change is durable); the truncation removes only unreferenced space.
 * Killed anywhere, the file opens and shows the same disk; running
 * compact again finds less (or nothing) to do and finishes the job.
 *
 * Locks: the chain is opened with the top writable (exclusive lock)
 * and its parents shared, like a writing server: a file some server or
 * tool is using is refused ("in use"), and no parent changes while its
 * data is compared.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "internal.h"

struct compactor {
  const struct vhd_compact_params *p;
  struct vhd_chain *c;
  struct vhd_layer *t;
  uint8_t *top, *below, *bitmap;
};

static void
step (const struct compactor *k, const char *name)
{
  if (k->p && k->p->step)
    k->p->step (k->p->opaque, name);
}

static void
progress (const struct compactor *k, uint64_t done, uint64_t total)
{
  if (k->p && k->p->progress)
    k->p->progress (k->p->opaque, done, total);
}

static bool
all_zero (const uint8_t *b, size_t n)
{
  return n == 0 || (b[0] == 0 && memcmp (b, b + 1, n - 1) == 0);
}

/* decide() without a parent: the block goes if every sector it holds
 * is zero.  Read piece by piece, so that a block of data usually costs
 * one piece, not the whole block. */
static int
decide_alone (struct compactor *k, uint32_t blk, const struct block_map *m,
              uint32_t nsec, enum block_state *to)
{
  struct vhd_layer *t = k->t;
  uint32_t sec = t->sector_size, per = MAX (1, (64u << 10) / sec), i, j;

  for (i = 0; i < nsec; i += per) {
    uint32_t n = MIN (per, nsec - i);

    if (layer_pread (t, k->top, (uint64_t) n * sec,
                     m->data_off + (uint64_t) i * sec) == -1) {
      vhd_error ("%s: reading block %u: %m", t->path, blk);
      return -1;
    }
    for (j = 0; j < n; j++)
      if (bitmap_get (k->bitmap, i + j) &&
          !all_zero (k->top + (uint64_t) j * sec, sec))
        return 0;               /* data: kept */
  }
  /* Clear bits read as zeros too (no parent). */
  *to = t->ops->zero_block ? BLOCK_ZERO : BLOCK_ABSENT;
  return 0;
}

/* Step 1 for one block: the state it may become, or BLOCK_PRESENT to
 * keep it.  -1 after a message.  With a parent: absent when every
 * sector held equals what is below; else ZERO (formats that have it)
 * when the block reads as zeros throughout, held or not. */
static int
decide (struct compactor *k, uint32_t blk, const struct block_map *m,
        enum block_state *to)
{
  struct vhd_layer *t = k->t;
  uint32_t sec = t->sector_size, nsec = vhd_block_sectors (k->c, blk), i;
  uint64_t bytes = (uint64_t) nsec * sec;
  bool same = true, zero = true;

  *to = BLOCK_PRESENT;
  if (m->state == BLOCK_PARTIAL) {
    if (t->ops->read_bitmap (t, blk, m, k->bitmap) == -1)
      return -1;
  }
  else
    memset (k->bitmap, 0xFF, layer_bitmap_bytes (t));
  if (!t->has_parent)
    return decide_alone (k, blk, m, nsec, to);
  if (layer_pread (t, k->top, bytes, m->data_off) == -1) {
    vhd_error ("%s: reading block %u: %m", t->path, blk);
    return -1;
  }
  if (vhd_cache_read_below (k->c, blk, k->below) == -1)
    return -1;
  for (i = 0; i < nsec && (same || zero); i++) {
    const uint8_t *a = k->top + (uint64_t) i * sec;
    const uint8_t *b = k->below + (uint64_t) i * sec;

    if (!bitmap_get (k->bitmap, i)) {
      /* Not held here: below shows through. */
      if (zero && !all_zero (b, sec))
        zero = false;
      continue;
    }
    if (zero && !all_zero (a, sec))
      zero = false;
    if (same && memcmp (a, b, sec) != 0)
      same = false;
  }
  if (same)
    *to = BLOCK_ABSENT;
  else if (zero && t->ops->zero_block)
    *to = BLOCK_ZERO;
  return 0;
}

static int
release_blocks (struct compactor *k, uint64_t *released)
{
  struct vhd_layer *t = k->t;
  uint64_t total = (uint64_t) t->n_blocks * t->block_size;
  uint32_t blk;

  for (blk = 0; blk < t->n_blocks &&
         (uint64_t) blk * t->block_size < k->c->size; blk++) {
    struct block_map m;
    enum block_state to;

    progress (k, (uint64_t) blk * t->block_size, total);
    if (t->ops->lookup (t, blk, &m) == -1)
      return -1;
    if (m.state != BLOCK_PRESENT && m.state != BLOCK_PARTIAL)
      continue;
    if (decide (k, blk, &m, &to) == -1)
      return -1;
    if (to == BLOCK_PRESENT)
      continue;
    if (t->ops->compact_release (t, blk, to) == -1)
      return -1;
    ++*released;
  }
  progress (k, total, total);
  if (*released > 0) {
    if (t->ops->commit (t, NULL, 0) == -1)
      return -1;
    step (k, "released");
  }
  return 0;
}

/* ------------------------------------------------------------ packing */

int
compact_layout_add (struct compact_layout *out, size_t *cap, uint64_t start,
                    uint64_t len, int64_t index)
{
  if (ARRAY_RESERVE (out->v, *cap, out->n + 1) == -1)
    return -1;
  out->v[out->n++] = (struct compact_extent) { start, len, index };
  return 0;
}

static int
by_start (const void *a, const void *b)
{
  const struct compact_extent *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

static uint64_t
align_slot (const struct compact_layout *lay, uint64_t at, uint64_t align)
{
  return ROUND_UP (at + lay->align_off, align) - lay->align_off;
}

/* Step 2: moves the highest blocks down while a slot exists; returns
 * the end of the highest extent left in *end. */
static int
pack (struct compactor *k, uint64_t *moved, uint64_t *end)
{
  struct vhd_layer *t = k->t;
  struct compact_layout lay = { NULL, 0, 1, 1, 0 };
  uint64_t pos = 0;
  size_t n, j = 0, i;
  int r = -1;

  if (t->ops->compact_layout (t, &lay) == -1)
    return -1;
  qsort (lay.v, lay.n, sizeof *lay.v, by_start);
  n = lay.n;
  while (n > 0 && lay.v[n - 1].index >= 0) {
    const struct compact_extent *x = &lay.v[n - 1];
    uint64_t s = pos, gap_end, a;
    bool found = false;

    /* Gaps between the extents [j, n-1) not yet passed, bottom-up: the
     * first that holds the block, aligned as the format prefers or
     * failing that as it allows, below the block's own place. */
    for (;;) {
      while (j < n - 1 && lay.v[j].start + lay.v[j].len <= s)
        j++;
      if (j < n - 1 && lay.v[j].start <= s) {
        s = lay.v[j].start + lay.v[j].len;     /* s is inside it */
        continue;
      }
      gap_end = MIN (j < n - 1 ? lay.v[j].start : x->start, x->start);
      if (s >= gap_end)
        break;
      a = align_slot (&lay, s, lay.align);
      if (a + x->len > gap_end)
        a = align_slot (&lay, s, lay.min_align);
      if (a + x->len <= gap_end) {
        s = a;
        found = true;
        break;
      }
      if (gap_end == x->start)
        break;
      s = lay.v[j].start + lay.v[j].len;
    }
    if (!found)
      break;                    /* no slot below it */
    if (t->ops->compact_move (t, x, s) == -1)
      goto out;
    ++*moved;
    pos = s + x->len;
    n--;
    step (k, "block-copied");
  }
  if (*moved > 0) {
    if (t->ops->commit (t, NULL, 0) == -1)
      goto out;
    step (k, "moved");
  }
  /* The extents left: the n not moved, and the moved ones below pos. */
  *end = pos;
  for (i = 0; i < n; i++)
    *end = MAX (*end, lay.v[i].start + lay.v[i].len);
  r = 0;
 out:
  free (lay.v);
  return r;
}

/* ------------------------------------------------------------ entry */

static int
refuse_fixed (const char *file)
{
  struct vhd_open_options o = { .readonly = true, .no_lock = true,
                                .no_parents = true, .headers_only = true };
  struct vhd_layer *l;
  bool fixed;

  if (vhd_layer_open (file, false, &o, &l) == -1)
    return -1;
  fixed = l->type == VHD_TYPE_FIXED;
  vhd_layer_close (l);
  if (fixed) {
    vhd_error ("%s: a fixed disk cannot be compacted: it has no unused "
               "blocks to give back (compact works on dynamic and "
               "differencing disks; 'vhdtool convert' makes a dynamic "
               "copy)", file);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static uint64_t
size_of (const char *file)
{
  struct stat st;
  return stat (file, &st) == 0 ? (uint64_t) st.st_size : 0;
}

int
vhd_compact (const char *file, const struct vhd_compact_params *p,
             struct vhd_compact_result *res)
{
  /* Every sector the file holds is examined, up to its current size,
   * whatever size a guest is shown (quirks.c). */
  struct vhd_open_options o = { .readonly = false,
                                .disk_size = VHD_DISK_SIZE_CURRENT };
  struct compactor k = { .p = p };
  struct vhd_compact_result r0 = { 0 };
  uint64_t end = 0;
  size_t bytes;
  int r = -1;

  if (res == NULL)
    res = &r0;
  memset (res, 0, sizeof *res);
  if (refuse_fixed (file) == -1)
    return -1;
  res->bytes_before = size_of (file);
  if (vhd_chain_open (file, &o, &k.c) == -1)
    return -1;
  k.t = k.c->layers[0];
  if (k.t->ops->compact_layout == NULL) {
    vhd_error ("%s: compacting %s files is not supported", file,
               k.t->ops->format);
    errno = ENOTSUP;
    goto out;
  }
  bytes = k.t->block_size;
  k.top = malloc (bytes);
  k.below = malloc (bytes);
  k.bitmap = malloc (layer_bitmap_bytes (k.t));
  if (k.top == NULL || k.below == NULL || k.bitmap == NULL) {
    vhd_error ("%s: %m", file);
    goto out;
  }
  res->bytes_before = k.t->file_size;
  if ((k.t->ops->compact_begin && k.t->ops->compact_begin (k.t) == -1) ||
      release_blocks (&k, &res->released_blocks) == -1 ||
      pack (&k, &res->moved_blocks, &end) == -1 ||
      k.t->ops->compact_truncate (k.t, end, p ? p->step : NULL,
                                  p ? p->opaque : NULL) == -1)
    goto out;
  step (&k, "truncated");
  r = 0;
 out:
  free (k.top);
  free (k.below);
  free (k.bitmap);
  if (vhd_chain_close (k.c) == -1)
    r = -1;
  res->bytes_after = size_of (file);
  return r;
}

/* ------------------------------------------------------------ fragmentation */

int
vhd_layer_fragmentation (struct vhd_layer *l, struct vhd_fragmentation *out)
{
  uint64_t prev_end = 0;
  bool have_prev = false;
  uint32_t blk;

  memset (out, 0, sizeof *out);
  if (l->flat || l->type == VHD_TYPE_FIXED || l->headers_only)
    return 0;
  /* Disk order: a block is in place when its data starts where the
   * previous allocated block's data ended, or less than 1 MiB further
   * on: a VHD block's bitmap and alignment padding lie between (at most
   * 68 KiB), while a VHDX block is 1 MiB aligned and contiguous data
   * leaves no gap at all. */
  for (blk = 0; blk < l->n_blocks; blk++) {
    struct block_map m;

    if (l->ops->lookup (l, blk, &m) == -1)
      return -1;
    if (m.state != BLOCK_PRESENT && m.state != BLOCK_PARTIAL)
      continue;
    out->allocated_blocks++;
    if (have_prev && (m.data_off < prev_end ||
                      m.data_off - prev_end >= (1u << 20)))
      out->fragmented_blocks++;
    prev_end = m.data_off + l->block_size;
    have_prev = true;
  }
  if (out->allocated_blocks > 1)
    out->percent = 100.0 * out->fragmented_blocks /
                   (out->allocated_blocks - 1);
  return 0;
}
