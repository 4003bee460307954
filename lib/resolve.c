/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: resolving byte ranges of a chain into runs, and reading.
 *
 * Design.  The unit of caching is one block of the top file.  The first
 * request touching a block walks the chain once for that block: it asks
 * each layer the sectors fall through to about its block (layer_ops
 * lookup: absent, zero, present or partial) and, for a partial block,
 * reads its sector bitmap (at most once per layer and block), and
 * produces a short
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
 * Memory.  Entries cost their runs and the top's bitmap (a block split
 * into many small runs by several layers costs tens of KB), so the cache
 * has a budget (vhd_open_options.cache_budget) and evicts clean entries
 * when over it: CLOCK, an approximation of LRU.  Resident entries live in
 * a small chained hash table per stripe (sized by what is resident, not
 * by the disk: a pointer per block of a 2040 GiB disk would be 8 MiB),
 * and on one ring of eviction candidates that a hand walks, under
 * clock_lock, giving each entry used since the last pass a second chance.
 *
 * Eviction never loses data, and a re-filled entry is the same entry:
 * its runs below the top come from the parents, which are read-only; the
 * top's block comes from the back-end's lookup, whose table in memory
 * is always current (published before the entry is updated);
 * only the top's bitmap is read back from the file, and it is equal to
 * the one evicted whenever neither e->dirty (bits not yet written) nor
 * e->flushing (bits a flush has copied and marked clean but not yet
 * written, see take_snapshot in write.c) is set.  Entries with either
 * set are pinned: never evicted.  So the budget can be exceeded by the
 * blocks written since the last flush (at most a bitmap and a few runs
 * each), never for long when clients flush.  Nor can a re-fill read a
 * bitmap while a flush writes it: flushes write bitmaps of pinned, hence
 * resident, entries only.
 *
 * Who may free an entry: eviction runs in vhd_cache_get, whose caller
 * holds the stripe lock of the block asked for.  Every user of an entry
 * holds its stripe lock from vhd_cache_get to its last use of the
 * pointer (readers copy the runs out first), so an entry is freed only
 * with its stripe lock held: a trylock on other stripes (never waiting
 * while holding clock_lock, so lock order cannot deadlock; a busy stripe
 * is passed over), or the stripe our caller already holds, where the
 * only entry it can be using is the one being returned, which is kept.
 * Nobody keeps an entry pointer across unlocking its stripe.
 *
 * Semantics: a sector a layer does not hold (absent block, clear bit of
 * a partial block) is its parent's when the layer has one, else zeros;
 * a zero block reads as zeros whatever lies below.  Each back-end maps
 * its format onto these (VHD: lib/vhd/layer.c).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define N_STRIPES 256

/* Heap bookkeeping that one allocation costs beyond its size (glibc:
 * 8 to 24 bytes), counted so that many small entries are not
 * undercounted. */
#define ALLOC_OVERHEAD 16

struct stripe {
  pthread_mutex_t lock;
  struct block_entry **buckets; /* resident entries by blk / N_STRIPES */
  uint32_t n_buckets;           /* 0 or a power of 2 */
  uint32_t n;                   /* entries in the table */
};

struct vhd_cache {
  struct stripe stripes[N_STRIPES];
  uint64_t budget;              /* bytes */
  uint64_t used;                /* bytes charged now (atomic) */
  uint64_t ring_bytes;          /* of those, entries on the ring (atomic) */
  uint64_t table_bytes;         /* of those, the hash tables (atomic) */

  pthread_mutex_t clock_lock;   /* the ring and the counters below */
  struct block_entry *hand;     /* NULL when the ring is empty */
  uint64_t n_ring;
  uint64_t fills, evictions, peak;  /* reported at close (vhd_debug) */
};

/* Blocks no layer holds.  Its single run is clipped to the real block
 * length by every user.  Never in the table: finding a block to be
 * such costs no I/O (BAT lookups only), so it is simply found again. */
static struct run zero_run = { 0, UINT32_MAX, -1, 0 };
static struct block_entry zero_entry = {
  .below = &zero_run, .n_below = 1, .merged = &zero_run, .n_merged = 1,
};

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
vhd_cache_init (struct vhd_chain *c, uint64_t budget)
{
  struct vhd_cache *cache;
  int i;

  if (top (c)->flat)
    return 0;
  cache = calloc (1, sizeof *cache);
  if (cache == NULL) {
    vhd_error ("%s: block cache: %m", top (c)->path);
    return -1;
  }
  cache->budget = budget ? budget : VHD_DEFAULT_CACHE_BUDGET;
  for (i = 0; i < N_STRIPES; i++)
    pthread_mutex_init (&cache->stripes[i].lock, NULL);
  pthread_mutex_init (&cache->clock_lock, NULL);
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
  uint32_t i, b;

  if (cache == NULL)
    return;
  vhd_debug ("%s: block cache: %" PRIu64 " fills, %" PRIu64 " evictions, "
             "peak %" PRIu64 " bytes, budget %" PRIu64 " bytes",
             top (c)->path, cache->fills, cache->evictions, cache->peak,
             cache->budget);
  for (i = 0; i < N_STRIPES; i++) {
    struct stripe *st = &cache->stripes[i];
    for (b = 0; b < st->n_buckets; b++)
      while (st->buckets[b]) {
        struct block_entry *e = st->buckets[b];
        st->buckets[b] = e->hnext;
        free_entry (e);
      }
    free (st->buckets);
    pthread_mutex_destroy (&st->lock);
  }
  pthread_mutex_destroy (&cache->clock_lock);
  free (cache);
  c->cache = NULL;
}

void
vhd_cache_lock (struct vhd_chain *c, uint32_t blk)
{
  pthread_mutex_lock (&c->cache->stripes[blk % N_STRIPES].lock);
}

void
vhd_cache_unlock (struct vhd_chain *c, uint32_t blk)
{
  pthread_mutex_unlock (&c->cache->stripes[blk % N_STRIPES].lock);
}

/* ------------------------------------------------------------ the table */

/* Entries of stripe s are the blocks s, s + N_STRIPES, ...: blk /
 * N_STRIPES numbers them densely. */
static struct block_entry **
bucket (struct stripe *st, uint32_t blk)
{
  return &st->buckets[(blk / N_STRIPES) & (st->n_buckets - 1)];
}

static struct block_entry *
table_find (struct stripe *st, uint32_t blk)
{
  struct block_entry *e;

  if (st->n_buckets == 0)
    return NULL;
  for (e = *bucket (st, blk); e; e = e->hnext)
    if (e->blk == blk)
      return e;
  return NULL;
}

static void
charge (struct vhd_cache *cache, int64_t delta)
{
  __atomic_add_fetch (&cache->used, (uint64_t) delta, __ATOMIC_RELAXED);
}

/* Grows the table to keep chains short (its bytes are charged too: it
 * is sized by the peak number of resident entries, which the budget
 * bounds).  -1 only when there is no table at all. */
static int
table_insert (struct vhd_cache *cache, struct stripe *st,
              struct block_entry *e)
{
  if (st->n >= st->n_buckets) {
    uint32_t nb = st->n_buckets ? st->n_buckets * 2 : 4, i;
    struct block_entry **b = calloc (nb, sizeof *b);

    if (b == NULL && st->n_buckets == 0)
      return -1;
    if (b) {
      for (i = 0; i < st->n_buckets; i++)
        while (st->buckets[i]) {
          struct block_entry *x = st->buckets[i];
          st->buckets[i] = x->hnext;
          x->hnext = b[(x->blk / N_STRIPES) & (nb - 1)];
          b[(x->blk / N_STRIPES) & (nb - 1)] = x;
        }
      free (st->buckets);
      charge (cache, (int64_t) (nb - st->n_buckets) * sizeof *b);
      __atomic_add_fetch (&cache->table_bytes,
                          (uint64_t) (nb - st->n_buckets) * sizeof *b,
                          __ATOMIC_RELAXED);
      st->buckets = b;
      st->n_buckets = nb;
    }
  }
  e->hnext = *bucket (st, e->blk);
  *bucket (st, e->blk) = e;
  st->n++;
  return 0;
}

static void
table_remove (struct stripe *st, struct block_entry *e)
{
  struct block_entry **p = bucket (st, e->blk);

  while (*p != e)
    p = &(*p)->hnext;
  *p = e->hnext;
  st->n--;
}

/* ------------------------------------------------------------ budget */

/* Shrink a run array built by doubling to its length: the budget
 * should buy entries, not spare capacity. */
static void
fit_runs (struct run **r, uint32_t n)
{
  struct run *p = realloc (*r, (n ? n : 1) * sizeof *p);
  if (p)
    *r = p;
}

/* Recharge e for what it holds now (with its stripe lock held). */
static void
account (struct vhd_chain *c, struct block_entry *e)
{
  uint64_t bytes = sizeof *e + ALLOC_OVERHEAD +
    (uint64_t) (e->n_below + e->n_merged) * sizeof (struct run) +
    2 * ALLOC_OVERHEAD +
    (e->top_bitmap ? layer_bitmap_bytes (top (c)) + ALLOC_OVERHEAD : 0);

  charge (c->cache, (int64_t) (bytes - e->bytes));
  /* on_ring cannot change while we hold the stripe lock. */
  if (e->on_ring)
    __atomic_add_fetch (&c->cache->ring_bytes, bytes - e->bytes,
                        __ATOMIC_RELAXED);
  e->bytes = bytes;
}

/* The ring, under clock_lock; an entry joins behind the hand (it is
 * looked at last). */
static void
ring_add (struct vhd_cache *cache, struct block_entry *e)
{
  if (cache->hand == NULL) {
    e->next = e->prev = e;
    cache->hand = e;
  }
  else {
    e->next = cache->hand;
    e->prev = cache->hand->prev;
    e->prev->next = e;
    e->next->prev = e;
  }
  e->on_ring = true;
  cache->n_ring++;
  __atomic_add_fetch (&cache->ring_bytes, e->bytes, __ATOMIC_RELAXED);
}

static void
ring_remove (struct vhd_cache *cache, struct block_entry *e)
{
  if (e->next == e)
    cache->hand = NULL;
  else {
    e->prev->next = e->next;
    e->next->prev = e->prev;
    if (cache->hand == e)
      cache->hand = e->next;
  }
  e->next = e->prev = NULL;
  e->on_ring = false;
  cache->n_ring--;
  __atomic_sub_fetch (&cache->ring_bytes, e->bytes, __ATOMIC_RELAXED);
}

/* Evict until within budget, keeping keep (just inserted, about to be
 * returned; its stripe is the one our caller holds).  Under clock_lock.
 * Two turns of the hand clear every second chance; entries in busy
 * stripes are passed over, and pinned ones leave the ring (they come
 * back through vhd_cache_unpinned), so this ends, and costs O(1)
 * amortised per entry filled.  If what remains is pinned or busy the
 * cache stays over budget until a later call. */
static void
evict (struct vhd_chain *c, struct block_entry *keep)
{
  struct vhd_cache *cache = c->cache;
  struct stripe *held = &cache->stripes[keep->blk % N_STRIPES];
  uint64_t steps = 2 * cache->n_ring;

  while (__atomic_load_n (&cache->used, __ATOMIC_RELAXED) > cache->budget &&
         cache->hand && steps-- > 0) {
    struct block_entry *x = cache->hand;
    struct stripe *st = &cache->stripes[x->blk % N_STRIPES];

    cache->hand = x->next;
    if (x == keep || (st != held && pthread_mutex_trylock (&st->lock) != 0))
      continue;
    if (x->dirty || x->flushing)
      ring_remove (cache, x);
    else if (x->referenced)
      x->referenced = false;
    else {
      ring_remove (cache, x);
      table_remove (st, x);
      charge (cache, -(int64_t) x->bytes);
      free_entry (x);
      cache->evictions++;
    }
    if (st != held)
      pthread_mutex_unlock (&st->lock);
  }
}

/* Entries off the ring are pinned ones the hand has met (or is about
 * to: it meets them whenever it must evict).  Only a flush frees them
 * for eviction; writers that never flush on their own (convert, merge)
 * ask this to know when to. */
bool
vhd_cache_pinned_over_budget (const struct vhd_chain *c)
{
  const struct vhd_cache *cache = c->cache;
  uint64_t used, ring, tables;

  if (cache == NULL)
    return false;
  used = __atomic_load_n (&cache->used, __ATOMIC_RELAXED);
  ring = __atomic_load_n (&cache->ring_bytes, __ATOMIC_RELAXED);
  tables = __atomic_load_n (&cache->table_bytes, __ATOMIC_RELAXED);
  return used > ring + tables && used - ring - tables > cache->budget / 2;
}

uint64_t
vhd_cache_budget (const struct vhd_chain *c)
{
  return c->cache ? c->cache->budget : 0;
}

void
vhd_cache_unpinned (struct vhd_chain *c, struct block_entry *e)
{
  struct vhd_cache *cache = c->cache;

  if (e == &zero_entry || e->dirty || e->flushing || e->on_ring)
    return;
  pthread_mutex_lock (&cache->clock_lock);
  ring_add (cache, e);
  pthread_mutex_unlock (&cache->clock_lock);
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
      (layer < 0 ||
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
  uint32_t spb, past = 0;
  uint64_t lsec;

  if (k == w->c->depth)
    return emit (out, sector, vsec - base, n, -1, 0);
  l = w->c->layers[k];
  /* A parent smaller than its child (a differencing VHDX grown after it
   * was made, chain.c): past the parent's end, zeros.  Runs are emitted
   * in order: the zeros after the rest. */
  lsec = l->size / sector;
  if (vsec + n > lsec) {
    past = vsec >= lsec ? n : (uint32_t) (vsec + n - lsec);
    n -= past;
    if (n == 0)
      return emit (out, sector, vsec - base, past, -1, 0);
  }
  if (l->flat)
    return emit (out, sector, vsec - base, n, k, vsec * sector) == -1 ||
           (past && emit (out, sector, vsec + n - base, past, -1, 0) == -1)
           ? -1 : 0;

  spb = l->block_size / sector;
  while (n > 0) {
    uint32_t lblk = vsec / spb;
    uint32_t within = vsec % spb;
    uint32_t m = MIN (n, spb - within);
    struct block_map map;
    const uint8_t *bm;
    uint32_t i;
    int r = 0;

    if (l->ops->lookup (l, lblk, &map) == -1)
      return -1;
    switch (map.state) {
    case BLOCK_ABSENT:
      r = fall_through (w, k, vsec, m, base, out);
      break;
    case BLOCK_ZERO:
      r = emit (out, sector, vsec - base, m, RUN_ZERO_BY (k), 0);
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
  return past ? emit (out, sector, vsec - base, past, -1, 0) : 0;
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
    /* Past a smaller parent's end: zeros (walk_layers). */
    for (b = vsec / spb; b <= (vsec + n - 1) / spb && b < l->n_blocks; b++) {
      struct block_map map;
      /* An error counts as data: the fill that follows reports it. */
      if (l->ops->lookup (l, b, &map) == -1 ||
          map.state == BLOCK_PRESENT || map.state == BLOCK_PARTIAL)
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

  if (t->ops->lookup (t, blk, &map) == -1)
    return NULL;
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
  else if (emit (&below, c->sector, 0, nsec,
                 map.state == BLOCK_ZERO ? RUN_ZERO_BY (0) : -1, 0) == -1)
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
  struct vhd_cache *cache = c->cache;
  struct stripe *st = &cache->stripes[blk % N_STRIPES];
  struct block_entry *e = table_find (st, blk);
  uint64_t used;

  if (e) {
    e->referenced = true;
    return e;
  }
  e = fill_entry (c, blk, materialize);
  if (e == NULL || e == &zero_entry)
    return e;
  e->blk = blk;
  if (table_insert (cache, st, e) == -1) {
    vhd_error ("%s: block cache: %m", top (c)->path);
    free_entry (e);
    return NULL;
  }
  fit_runs (&e->below, e->n_below);
  fit_runs (&e->merged, e->n_merged);
  account (c, e);

  pthread_mutex_lock (&cache->clock_lock);
  ring_add (cache, e);
  cache->fills++;
  used = __atomic_load_n (&cache->used, __ATOMIC_RELAXED);
  cache->peak = MAX (cache->peak, used);
  evict (c, e);
  pthread_mutex_unlock (&cache->clock_lock);
  return e;
}

bool
vhd_cache_range_is_zero (const struct block_entry *e, uint32_t rel,
                         uint32_t end)
{
  uint32_t i;

  for (i = 0; i < e->n_merged; i++) {
    const struct run *r = &e->merged[i];
    if (r->rel < end && rel < r->rel + (uint64_t) r->n && r->layer >= 0)
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
  if (changed && merge_top (c, e, vhd_block_sectors (c, blk)) == -1) {
    account (c, e);
    return -1;
  }
  /* Charged now, evicted (once clean) by a later vhd_cache_get: our
   * caller holds e. */
  fit_runs (&e->merged, e->n_merged);
  account (c, e);
  return changed;
}

int
vhd_cache_top_zeroed (struct vhd_chain *c, struct block_entry *e,
                      uint32_t blk)
{
  struct runlist zeros = { NULL, 0, 0 };

  if (emit (&zeros, c->sector, 0, vhd_block_sectors (c, blk),
            RUN_ZERO_BY (0), 0) == -1)
    return -1;
  free (e->below);
  e->below = zeros.r;
  e->n_below = zeros.n;
  free (e->top_bitmap);
  e->top_bitmap = NULL;
  e->top_data_off = 0;
  if (merge_top (c, e, vhd_block_sectors (c, blk)) == -1) {
    account (c, e);
    return -1;
  }
  fit_runs (&e->merged, e->n_merged);
  account (c, e);
  return 0;
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
    if (runs[i].layer < 0) {
      memset (buf + (s - offset), 0, e - s);
      continue;
    }
    f = c->layers[runs[i].layer];
    if (layer_pread (f, buf + (s - offset), e - s,
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
vhd_each_block (struct vhd_chain *c, uint64_t count, uint64_t offset,
                vhd_piece_fn fn, void *opaque)
{
  uint32_t bs = top (c)->block_size;
  uint64_t done = 0;

  while (done < count) {
    uint32_t blk = (offset + done) / bs;
    uint64_t n = MIN (count - done,
                      (uint64_t) (blk + 1) * bs - (offset + done));

    if (fn (c, blk, done, n, offset + done, opaque) == -1)
      return -1;
    done += n;
  }
  return 0;
}

static int
read_one (struct vhd_chain *c, uint32_t blk, uint64_t done, uint64_t n,
          uint64_t offset, void *buf)
{
  return read_piece (c, blk, (char *) buf + done, n, offset);
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
  return vhd_each_block (c, count, offset, read_one, p);
}

/* ------------------------------------------------------------ extents */

int
vhd_chain_extents (struct vhd_chain *c, uint64_t offset, uint64_t count,
                   vhd_extent_fn fn, void *opaque)
{
  return vhd_chain_extents_by (c, offset, count, fn, opaque, false);
}

int
vhd_chain_extents_by (struct vhd_chain *c, uint64_t offset, uint64_t count,
                      vhd_extent_fn fn, void *opaque, bool zero_layers)
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
      int kind = r->layer < 0 && !zero_layers ? -1 : r->layer;

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

/* The whole of block blk as the layers under the top show it (compact.c
 * compares the top's sectors with it).  The runs are copied under the
 * block's lock: the entry may be evicted once it is released. */
int
vhd_cache_read_below (struct vhd_chain *c, uint32_t blk, void *buf)
{
  uint64_t block_start = (uint64_t) blk * top (c)->block_size;
  uint64_t count = (uint64_t) vhd_block_sectors (c, blk) * c->sector;
  struct block_entry *e;
  struct run *runs = NULL;
  uint32_t n = 0;
  bool oom = false;
  int r;

  vhd_cache_lock (c, blk);
  e = vhd_cache_get (c, blk, false);
  if (e != NULL && e->n_below > 0) {
    runs = malloc ((size_t) e->n_below * sizeof *runs);
    oom = runs == NULL;
    if (runs != NULL) {
      memcpy (runs, e->below, (size_t) e->n_below * sizeof *runs);
      n = e->n_below;
    }
  }
  vhd_cache_unlock (c, blk);
  if (e == NULL)
    return -1;
  if (oom) {
    vhd_error ("%s: %m", top (c)->path);
    return -1;
  }
  /* Sectors no run covers read as zeros (no layer holds them). */
  memset (buf, 0, count);
  r = read_runs (c, runs, n, blk, buf, count, block_start);
  free (runs);
  return r;
}
