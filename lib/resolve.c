/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: resolving byte ranges of a chain into runs, and reading.
 *
 * Design.  The unit of caching is one block of the top file.  The first
 * request touching a block walks the chain once for that block: for
 * each layer it looks at the BAT entry and, if allocated, reads the
 * sector bitmap (at most once per layer and block), and produces a short
 * list of runs "sectors [a, b) come from layer k at file offset x" or
 * "are zeros".  The runs of the layers under the top never change (the
 * parents are read-only), so they are kept; the top's bitmap is kept
 * beside them and the merged list is rebuilt whenever a write sets bits.
 * A later request costs one lookup and one pread per run, whatever the
 * depth of the chain.  Blocks that no layer holds share one static
 * all-zero entry, so huge sparse chains cost no memory until written.
 *
 * Locking: a block's entry is created, read and changed only under its
 * stripe lock.  Readers copy the runs they need and drop the lock before
 * doing the data I/O, so reads of different blocks, and of the same
 * block, proceed in parallel; only cache misses do I/O under the lock.
 *
 * Semantics (the VHD spec, as Hyper-V reads it): in a differencing disk
 * a set bitmap bit means "this file holds the sector", a clear bit or an
 * unallocated block means "ask the parent".  In a dynamic disk a clear
 * bit reads as zeros, as libvhdi, blktap and VirtualBox read it (QEMU
 * ignores the bitmap; we always zero-fill new blocks so both agree on
 * files we write).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define N_STRIPES 256

struct vhd_cache {
  struct block_entry **entries;   /* per top block; NULL = not resolved */
  pthread_mutex_t stripes[N_STRIPES];
};

/* Blocks no layer holds.  Its single run is clipped to the real block
 * length by every user. */
static struct run zero_run = { 0, UINT32_MAX, -1, 0 };
static struct block_entry zero_entry = { &zero_run, 1, &zero_run, 1,
                                         NULL, 0, false };

static struct vhd_layer *
top (const struct vhd_chain *c)
{
  return c->layers[0];
}

uint32_t
vhd_block_sectors (const struct vhd_chain *c, uint32_t blk)
{
  uint64_t spb = top (c)->block_size / c->sector;
  uint64_t total = c->size / c->sector;
  return MIN (spb, total - blk * spb);
}

int
vhd_cache_init (struct vhd_chain *c)
{
  struct vhd_cache *cache;
  int i;

  if (top (c)->flat)
    return 0;
  cache = calloc (1, sizeof *cache);
  if (cache == NULL ||
      (cache->entries = calloc (top (c)->n_blocks + 1,
                                sizeof *cache->entries)) == NULL) {
    free (cache);
    vhd_error ("%s: block cache: %m", top (c)->path);
    return -1;
  }
  for (i = 0; i < N_STRIPES; i++)
    pthread_mutex_init (&cache->stripes[i], NULL);
  c->cache = cache;
  return 0;
}

static void
free_entry (struct block_entry *e)
{
  if (e == NULL || e == &zero_entry)
    return;
  free (e->below);
  free (e->merged);
  free (e->top_bitmap);
  free (e);
}

void
vhd_cache_free (struct vhd_chain *c)
{
  struct vhd_cache *cache = c->cache;
  uint32_t i;

  if (cache == NULL)
    return;
  for (i = 0; i < top (c)->n_blocks; i++)
    free_entry (cache->entries[i]);
  for (i = 0; i < N_STRIPES; i++)
    pthread_mutex_destroy (&cache->stripes[i]);
  free (cache->entries);
  free (cache);
  c->cache = NULL;
}

void
vhd_cache_lock (struct vhd_chain *c, uint32_t blk)
{
  pthread_mutex_lock (&c->cache->stripes[blk % N_STRIPES]);
}

void
vhd_cache_unlock (struct vhd_chain *c, uint32_t blk)
{
  pthread_mutex_unlock (&c->cache->stripes[blk % N_STRIPES]);
}

/* ------------------------------------------------------------ run lists */

struct runlist {
  struct run *r;
  uint32_t n;
  size_t cap;
};

/* Append, merging with the previous run when contiguous in the same
 * source, so a fully present block is a single run. */
static int
emit (struct runlist *l, uint32_t sector, uint32_t rel, uint32_t n,
      int32_t layer, uint64_t file_off)
{
  struct run *last = l->n ? &l->r[l->n - 1] : NULL;

  if (n == 0)
    return 0;
  if (last && last->layer == layer && last->rel + last->n == rel &&
      (layer == -1 ||
       last->file_off + (uint64_t) last->n * sector == file_off)) {
    last->n += n;
    return 0;
  }
  if (ARRAY_RESERVE (l->r, l->cap, l->n + 1) == -1)
    return -1;
  l->r[l->n++] = (struct run) { rel, n, layer, file_off };
  return 0;
}

/* First index in [i, end) whose bit differs from value (or end). */
static uint32_t
bit_run_end (const uint8_t *bm, uint32_t i, uint32_t end, bool value)
{
  uint8_t skip = value ? 0xFF : 0x00;

  while (i < end && (i & 7))
    if (bitmap_get (bm, i) == value) i++; else return i;
  while (i + 8 <= end && bm[i >> 3] == skip)
    i += 8;
  while (i < end && bitmap_get (bm, i) == value)
    i++;
  return i;
}

/* ------------------------------------------------------------ walking */

/* Bitmaps read during one fill, one slot per layer, so that a layer's
 * block is read once even when many runs of the layer above fall
 * through to it. */
struct walk {
  struct vhd_chain *c;
  uint32_t *cached_blk;
  uint8_t **bitmap;
};

static const uint8_t *
layer_bitmap (struct walk *w, unsigned k, uint32_t lblk,
              const struct block_map *m)
{
  struct vhd_layer *l = w->c->layers[k];

  if (w->bitmap[k] && w->cached_blk[k] == lblk)
    return w->bitmap[k];
  if (w->bitmap[k] == NULL &&
      (w->bitmap[k] = malloc (layer_bitmap_bytes (l))) == NULL)
    return NULL;
  if (l->ops->read_bitmap (l, lblk, m, w->bitmap[k]) == -1)
    return NULL;
  w->cached_blk[k] = lblk;
  return w->bitmap[k];
}

/* Sectors of layer k that it does not hold: its parent's, or zeros. */
static int
fall_through (struct walk *w, unsigned k, uint64_t vsec, uint32_t n,
              uint64_t base, struct runlist *out);

/* Resolve virtual sectors [vsec, vsec+n) through layers k, k+1, ...
 * Runs are emitted relative to base (the first sector of the top block
 * being filled). */
static int
walk_layers (struct walk *w, unsigned k, uint64_t vsec, uint32_t n,
             uint64_t base, struct runlist *out)
{
  uint32_t sector = w->c->sector;
  struct vhd_layer *l;
  uint32_t spb;

  if (k == w->c->depth)
    return emit (out, sector, vsec - base, n, -1, 0);
  l = w->c->layers[k];
  if (l->flat)
    return emit (out, sector, vsec - base, n, k, vsec * sector);

  spb = l->block_size / sector;
  while (n > 0) {
    uint32_t lblk = vsec / spb;
    uint32_t within = vsec % spb;
    uint32_t m = MIN (n, spb - within);
    struct block_map map;
    const uint8_t *bm;
    uint32_t i;
    int r = 0;

    l->ops->lookup (l, lblk, &map);
    switch (map.state) {
    case BLOCK_ABSENT:
      r = fall_through (w, k, vsec, m, base, out);
      break;
    case BLOCK_ZERO:
      r = emit (out, sector, vsec - base, m, -1, 0);
      break;
    case BLOCK_PRESENT:
      r = emit (out, sector, vsec - base, m, k,
                map.data_off + (uint64_t) within * sector);
      break;
    case BLOCK_PARTIAL:
      if ((bm = layer_bitmap (w, k, lblk, &map)) == NULL)
        return -1;
      for (i = within; r == 0 && i < within + m; ) {
        bool present = bitmap_get (bm, i);
        uint32_t j = bit_run_end (bm, i, within + m, present);
        uint64_t v = vsec + (i - within);

        if (present)
          r = emit (out, sector, v - base, j - i, k,
                    map.data_off + (uint64_t) i * sector);
        else
          r = fall_through (w, k, v, j - i, base, out);
        i = j;
      }
      break;
    }
    if (r == -1)
      return -1;
    vsec += m;
    n -= m;
  }
  return 0;
}

static int
fall_through (struct walk *w, unsigned k, uint64_t vsec, uint32_t n,
              uint64_t base, struct runlist *out)
{
  if (w->c->layers[k]->has_parent)
    return walk_layers (w, k + 1, vsec, n, base, out);
  return emit (out, w->c->sector, vsec - base, n, -1, 0);
}

/* Might any layer below the top hold data in these sectors? */
static bool
parents_hold_anything (const struct vhd_chain *c, uint64_t vsec, uint32_t n)
{
  unsigned k;

  for (k = 1; k < c->depth; k++) {
    struct vhd_layer *l = c->layers[k];
    uint64_t spb = l->block_size / c->sector, b;

    if (l->flat)
      return true;
    for (b = vsec / spb; b <= (vsec + n - 1) / spb; b++) {
      struct block_map map;
      l->ops->lookup (l, b, &map);
      if (map.state == BLOCK_PRESENT || map.state == BLOCK_PARTIAL)
        return true;
    }
    if (!l->has_parent)
      break;
  }
  return false;
}

/* Rebuild e->merged: sectors the top holds, else whatever is below. */
static int
merge_top (struct vhd_chain *c, struct block_entry *e, uint32_t nsec)
{
  struct vhd_layer *t = top (c);
  struct runlist l = { NULL, 0, 0 };
  uint32_t i = 0, b;

  while (i < nsec) {
    bool present = e->top_bitmap && bitmap_get (e->top_bitmap, i);
    uint32_t j = e->top_bitmap ? bit_run_end (e->top_bitmap, i, nsec, present)
                               : nsec;
    if (present) {
      if (emit (&l, c->sector, i, j - i, 0,
                e->top_data_off + (uint64_t) i * c->sector) == -1)
        goto nomem;
    }
    else
      for (b = 0; b < e->n_below; b++) {
        const struct run *r = &e->below[b];
        uint32_t s = MAX (r->rel, i), x = MIN (r->rel + r->n, j);
        if (s < x &&
            emit (&l, c->sector, s, x - s, r->layer,
                  r->file_off + (uint64_t) (s - r->rel) * c->sector) == -1)
          goto nomem;
      }
    i = j;
  }
  free (e->merged);
  e->merged = l.r;
  e->n_merged = l.n;
  return 0;

 nomem:
  free (l.r);
  vhd_error ("%s: block cache: %m", t->path);
  return -1;
}

static struct block_entry *
fill_entry (struct vhd_chain *c, uint32_t blk, bool materialize)
{
  struct vhd_layer *t = top (c);
  uint32_t nsec = vhd_block_sectors (c, blk);
  uint64_t base = (uint64_t) blk * (t->block_size / c->sector);
  struct runlist below = { NULL, 0, 0 };
  struct block_entry *e;
  struct walk w = { c, NULL, NULL };
  struct block_map map;

  t->ops->lookup (t, blk, &map);
  if (map.state == BLOCK_ABSENT && !materialize &&
      (!t->has_parent || !parents_hold_anything (c, base, nsec)))
    return &zero_entry;

  e = calloc (1, sizeof *e);
  w.cached_blk = calloc (c->depth, sizeof *w.cached_blk);
  w.bitmap = calloc (c->depth, sizeof *w.bitmap);
  if (e == NULL || w.cached_blk == NULL || w.bitmap == NULL) {
    vhd_error ("%s: block cache: %m", t->path);
    goto err;
  }
  /* What shows where the top holds nothing: a top block that reads as
   * zeros hides its parents (so do clear bits of a top without one). */
  if (t->has_parent && map.state != BLOCK_ZERO) {
    if (walk_layers (&w, 1, base, nsec, base, &below) == -1)
      goto err;
  }
  else if (emit (&below, c->sector, 0, nsec, -1, 0) == -1)
    goto err;
  e->below = below.r;
  e->n_below = below.n;
  below.r = NULL;

  if (map.state == BLOCK_PRESENT || map.state == BLOCK_PARTIAL) {
    uint32_t bytes = layer_bitmap_bytes (t);

    e->top_data_off = map.data_off;
    e->top_bitmap = malloc (bytes);
    if (e->top_bitmap == NULL) {
      vhd_error ("%s: block cache: %m", t->path);
      goto err;
    }
    if (map.state == BLOCK_PRESENT)
      memset (e->top_bitmap, 0xFF, bytes);
    else if (t->ops->read_bitmap (t, blk, &map, e->top_bitmap) == -1)
      goto err;
  }
  if (merge_top (c, e, nsec) == -1)
    goto err;
  goto out;

 err:
  free (below.r);
  free_entry (e);
  e = NULL;
 out:
  if (w.bitmap)
    for (unsigned k = 0; k < c->depth; k++)
      free (w.bitmap[k]);
  free (w.bitmap);
  free (w.cached_blk);
  return e;
}

struct block_entry *
vhd_cache_get (struct vhd_chain *c, uint32_t blk, bool materialize)
{
  struct block_entry **slot = &c->cache->entries[blk];

  if (*slot == NULL || (materialize && *slot == &zero_entry)) {
    struct block_entry *e = fill_entry (c, blk, materialize);
    if (e == NULL)
      return NULL;
    *slot = e;
  }
  return *slot;
}

bool
vhd_cache_range_is_zero (const struct block_entry *e, uint32_t rel,
                         uint32_t end)
{
  uint32_t i;

  for (i = 0; i < e->n_merged; i++) {
    const struct run *r = &e->merged[i];
    if (r->rel < end && rel < r->rel + (uint64_t) r->n && r->layer != -1)
      return false;
  }
  return true;
}

int
vhd_cache_top_written (struct vhd_chain *c, struct block_entry *e,
                       uint32_t blk, uint64_t data_off, uint32_t rel,
                       uint32_t n)
{
  bool changed = false;
  uint32_t i;

  if (e->top_bitmap == NULL) {
    e->top_bitmap = calloc (1, layer_bitmap_bytes (top (c)));
    if (e->top_bitmap == NULL)
      return -1;
    e->top_data_off = data_off;
  }
  for (i = rel; i < rel + n; i++)
    if (!bitmap_get (e->top_bitmap, i)) {
      bitmap_set (e->top_bitmap, i);
      changed = true;
    }
  if (changed && merge_top (c, e, vhd_block_sectors (c, blk)) == -1)
    return -1;
  return changed;
}

/* ------------------------------------------------------------ reading */

/* Serve [offset, offset+count) of block blk from the runs given. */
static int
read_runs (struct vhd_chain *c, const struct run *runs, uint32_t n,
           uint32_t blk, char *buf, uint64_t count, uint64_t offset)
{
  uint64_t block_start = (uint64_t) blk * top (c)->block_size;
  uint32_t i;

  for (i = 0; i < n; i++) {
    uint64_t rs = block_start + (uint64_t) runs[i].rel * c->sector;
    uint64_t re = rs + (uint64_t) runs[i].n * c->sector;
    uint64_t s = MAX (rs, offset), e = MIN (re, offset + count);
    struct vhd_layer *f;

    if (s >= e)
      continue;
    if (runs[i].layer == -1) {
      memset (buf + (s - offset), 0, e - s);
      continue;
    }
    f = c->layers[runs[i].layer];
    if (full_pread (f->fd, buf + (s - offset), e - s,
                    runs[i].file_off + (s - rs)) == -1) {
      vhd_error ("%s: read at offset %" PRIu64 ": %m", f->path,
                 runs[i].file_off + (s - rs));
      return -1;
    }
  }
  return 0;
}

int
vhd_cache_read_locked (struct vhd_chain *c, const struct block_entry *e,
                       void *buf, uint64_t count, uint64_t offset)
{
  uint32_t blk = offset / top (c)->block_size;
  return read_runs (c, e->merged, e->n_merged, blk, buf, count, offset);
}

/* Copy the runs of e that intersect sectors [rel, end) into out (up to
 * cap); returns how many there are. */
static uint32_t
copy_runs (const struct block_entry *e, uint32_t rel, uint32_t end,
           struct run *out, uint32_t cap)
{
  uint32_t i, n = 0;

  for (i = 0; i < e->n_merged; i++) {
    const struct run *r = &e->merged[i];
    if (r->rel < end && rel < r->rel + (uint64_t) r->n) {
      if (n < cap)
        out[n] = *r;
      n++;
    }
  }
  return n;
}

static int
read_piece (struct vhd_chain *c, uint32_t blk, char *buf, uint64_t count,
            uint64_t offset)
{
  uint64_t block_start = (uint64_t) blk * top (c)->block_size;
  uint32_t rel = (offset - block_start) / c->sector;
  uint32_t end = (offset + count - block_start + c->sector - 1) / c->sector;
  struct run local[32], *runs = local;
  uint32_t cap = 32, n;
  struct block_entry *e;
  int r;

  for (;;) {
    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    n = e ? copy_runs (e, rel, end, runs, cap) : 0;
    vhd_cache_unlock (c, blk);
    if (e == NULL)
      goto err;
    if (n <= cap)
      break;
    /* Many runs (a block split across layers): retry with room. */
    if (runs != local)
      free (runs);
    cap = n;
    if ((runs = malloc (cap * sizeof *runs)) == NULL) {
      vhd_error ("%s: read: %m", top (c)->path);
      goto err;
    }
  }
  r = read_runs (c, runs, n, blk, buf, count, offset);
  if (runs != local)
    free (runs);
  return r;

 err:
  if (runs != local)
    free (runs);
  if (errno == 0)
    errno = EIO;
  return -1;
}

int
vhd_chain_pread (struct vhd_chain *c, void *buf, uint64_t count,
                 uint64_t offset)
{
  struct vhd_layer *t = top (c);
  char *p = buf;

  if (t->flat) {
    if (full_pread (t->fd, buf, count, offset) == -1) {
      vhd_error ("%s: read at offset %" PRIu64 ": %m", t->path, offset);
      return -1;
    }
    return 0;
  }
  while (count > 0) {
    uint32_t blk = offset / t->block_size;
    uint64_t n = MIN (count, (uint64_t) (blk + 1) * t->block_size - offset);

    if (read_piece (c, blk, p, n, offset) == -1)
      return -1;
    p += n;
    offset += n;
    count -= n;
  }
  return 0;
}

/* ------------------------------------------------------------ extents */

int
vhd_chain_extents (struct vhd_chain *c, uint64_t offset, uint64_t count,
                   vhd_extent_fn fn, void *opaque)
{
  struct vhd_layer *t = top (c);
  uint64_t end = MIN (offset + count, c->size);
  uint64_t pend_off = offset, pend_len = 0;
  int pend_layer = 0;

  /* Nothing is reported past offset + count, though nbdkit allows it:
   * nbdkit 1.32 merges the extents it is given and aborts (an assertion
   * in extents_to_block_descriptors) when a request of 0xFFFFFFFF bytes
   * gets back one extent longer than 4 GiB.  So extents stop at end. */
  if (offset >= end)
    return 0;
  if (t->flat)
    return fn (opaque, offset, end - offset, 0) == -1 ? -1 : 0;

  while (offset < end) {
    uint32_t blk = offset / t->block_size;
    uint64_t block_start = (uint64_t) blk * t->block_size;
    uint64_t block_end = MIN (block_start + t->block_size, end);
    struct block_entry *e;
    uint32_t i;

    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    for (i = 0; e && i < e->n_merged; i++) {
      const struct run *r = &e->merged[i];
      uint64_t s = block_start + (uint64_t) r->rel * c->sector;
      uint64_t x = MIN (s + (uint64_t) r->n * c->sector, block_end);
      int kind = r->layer;

      s = MAX (s, offset);
      if (s >= x)
        continue;
      if (pend_len && kind == pend_layer && pend_off + pend_len == s)
        pend_len += x - s;
      else {
        int fr = pend_len ? fn (opaque, pend_off, pend_len, pend_layer) : 0;
        if (fr != 0) {
          vhd_cache_unlock (c, blk);
          return fr == 1 ? 0 : -1;
        }
        pend_off = s;
        pend_len = x - s;
        pend_layer = kind;
      }
    }
    vhd_cache_unlock (c, blk);
    if (e == NULL)
      return -1;
    offset = block_end;
  }
  if (pend_len && fn (opaque, pend_off, pend_len, pend_layer) == -1)
    return -1;
  return 0;
}
