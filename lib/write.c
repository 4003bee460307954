/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: writing into the top file of a chain.
 *
 * Only the top file is ever written; parents are opened O_RDONLY.
 *
 * CRASH SAFETY.  The argument has two parts: the order of the writes
 * (which protects against the process being killed: the kernel keeps
 * every completed write), and the flush protocol (which protects against
 * power loss, where the disk may persist writes in any order between
 * two fdatasync calls).
 *
 * 1. Allocating a block: the back-end places it (layer_ops.alloc_block,
 *    with the format's own protocol: for VHD, lib/vhd/alloc.c) where
 *    nothing referenced lies, and nothing on disk refers to it yet; the
 *    caller writes the data into it, and only then publishes it
 *    (layer_ops.publish: readers may now find it, its table entry is
 *    dirty in memory).  A crash before the next flush leaves the file
 *    as it was, with unreferenced space.
 *
 * 2. Writing sectors into an allocated block writes the data in place
 *    and sets the bitmap bits in memory only.  Until the bits reach the
 *    file, a sector written for the first time is invisible on disk (its
 *    old content, from the parent or zeros, still shows), so a crash
 *    shows every sector either old or new, never a sector whose bit is
 *    set over data that did not arrive.
 *
 * 3. Flush (vhd_chain_flush), serialised by the flush lock:
 *      a. snapshot the dirty bitmaps (every bit in the snapshot belongs
 *         to a write that has completed);
 *      b. the back-end commits them and every published block
 *         (layer_ops.commit): it first makes the data written so far
 *         durable, then its metadata, bitmaps before the table entries
 *         that point at them, with the format's crash-safe protocol
 *         (VHD: lib/vhd/alloc.c).
 *    A snapshot that failed to commit is put back as dirty.
 *
 * 4. Trim (vhd_chain_trim) punches holes in the data of sectors the top
 *    file already holds, and changes no metadata.  It is a write of
 *    zeros into those sectors: a crash shows each of them as before or
 *    as zeros, both allowed after a trim.  A sector whose bit is set
 *    only in memory (written since the last flush) may come back from
 *    a crash as the parent's data, exactly as the unflushed write would
 *    have.  Sectors the top does not hold are left alone, so the
 *    parent never shows through where it did not before.
 *
 * 5. Zero of a whole block, to the byte, through the back-end's
 *    zero_block (VHDX: the ZERO state; the argument is step 5 at the
 *    top of lib/vhdx/write.c): the entry changes in memory like a new
 *    block's, and reaches the file at the next commit; the cache entry
 *    then reads zeros (vhd_cache_top_zeroed) and a later write takes a
 *    new block.  Before any of these changes the back-end's begin_write
 *    runs once (VHDX: the new write GUIDs, lib/vhdx/logwrite.c).
 *
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

struct vhd_writer {
  pthread_mutex_t begin_lock;
  bool began;                   /* begin_write was called (atomics) */
  pthread_mutex_t dirty_lock;
  uint32_t *dirty_blocks;       /* blocks whose bitmap must be written */
  size_t n_dirty;

  pthread_mutex_t flush_lock;
  char *zeros;                  /* one block of zeros for zero requests */
  bool punch_works;             /* until fallocate says otherwise (set
                                   and read by any thread: atomics) */
};

static struct vhd_layer *
top (const struct vhd_chain *c)
{
  return c->layers[0];
}

int
vhd_writer_init (struct vhd_chain *c)
{
  struct vhd_layer *t = top (c);
  struct vhd_writer *w = calloc (1, sizeof *w);

  if (w == NULL)
    goto nomem;
  pthread_mutex_init (&w->begin_lock, NULL);
  pthread_mutex_init (&w->dirty_lock, NULL);
  pthread_mutex_init (&w->flush_lock, NULL);
  w->punch_works = true;
  c->writer = w;
  if (t->ops->writer_init (t) == -1)
    return -1;
  if (t->flat)
    return 0;
  w->dirty_blocks = malloc ((t->n_blocks + 1) * sizeof *w->dirty_blocks);
  w->zeros = calloc (1, t->block_size);
  if (w->dirty_blocks == NULL || w->zeros == NULL)
    goto nomem;
  return 0;

 nomem:
  vhd_error ("%s: %m", t->path);
  return -1;
}

void
vhd_writer_free (struct vhd_chain *c)
{
  struct vhd_writer *w = c->writer;

  if (w == NULL)
    return;
  top (c)->ops->writer_free (top (c));
  pthread_mutex_destroy (&w->begin_lock);
  pthread_mutex_destroy (&w->dirty_lock);
  pthread_mutex_destroy (&w->flush_lock);
  free (w->dirty_blocks);
  free (w->zeros);
  free (w);
  c->writer = NULL;
}

/* Before the first change to the top file of this session: the
 * back-end's begin_write (VHDX: new write GUIDs), once. */
static int
begin_write (struct vhd_chain *c)
{
  struct vhd_writer *w = c->writer;
  struct vhd_layer *t = top (c);
  int r = 0;

  if (__atomic_load_n (&w->began, __ATOMIC_ACQUIRE))
    return 0;
  pthread_mutex_lock (&w->begin_lock);
  if (!w->began) {
    if (t->ops->begin_write)
      r = t->ops->begin_write (t);
    if (r == 0)
      __atomic_store_n (&w->began, true, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&w->begin_lock);
  return r;
}

/* The dirty list has room for every block (reserved at init, touched
 * only as used), and a block is listed at most once: this cannot fail. */
static void
mark_block_dirty (struct vhd_chain *c, struct block_entry *e, uint32_t blk)
{
  struct vhd_writer *w = c->writer;

  if (e->dirty)
    return;
  pthread_mutex_lock (&w->dirty_lock);
  w->dirty_blocks[w->n_dirty++] = blk;
  e->dirty = true;
  pthread_mutex_unlock (&w->dirty_lock);
}

/* Write [offset, offset+count), inside block blk, into the top file. */
static int
write_piece (struct vhd_chain *c, uint32_t blk, const char *buf,
             uint64_t count, uint64_t offset)
{
  struct vhd_layer *t = top (c);
  uint32_t sector = c->sector;
  uint64_t block_start = (uint64_t) blk * t->block_size;
  uint32_t rel = (offset - block_start) / sector;
  uint32_t end = (offset + count - block_start + sector - 1) / sector;
  uint64_t aligned_off = block_start + (uint64_t) rel * sector;
  uint64_t aligned_len = (uint64_t) (end - rel) * sector;
  char *bounce = NULL;
  const char *src = buf;
  struct block_entry *e;
  uint64_t data_off;
  bool fresh;
  int r = -1;

  vhd_cache_lock (c, blk);
  e = vhd_cache_get (c, blk, true);
  if (e == NULL)
    goto out;

  /* Partial sectors: merge with what the chain shows there now. */
  if (aligned_off != offset || aligned_len != count) {
    bounce = malloc (aligned_len);
    if (bounce == NULL) {
      vhd_error ("%s: write: %m", t->path);
      goto out;
    }
    if (vhd_cache_read_locked (c, e, bounce, aligned_len, aligned_off) == -1)
      goto out;
    memcpy (bounce + (offset - aligned_off), buf, count);
    src = bounce;
  }

  if (begin_write (c) == -1)
    goto out;
  fresh = e->top_bitmap == NULL;
  if (fresh) {
    if (t->ops->alloc_block (t, blk, &data_off) == -1)
      goto out;
  }
  else
    data_off = e->top_data_off;
  if (full_pwrite (t->fd, src, aligned_len,
                   data_off + (uint64_t) rel * sector) == -1) {
    vhd_error ("%s: write at offset %" PRIu64 ": %m", t->path, offset);
    goto out;
  }
  /* Only now may readers find the block through the table. */
  if (fresh && t->ops->publish (t, blk, data_off) == -1)
    goto out;
  switch (vhd_cache_top_written (c, e, blk, data_off, rel, end - rel)) {
  case -1:
    vhd_error ("%s: write: %m", t->path);
    goto out;
  case 1:
    mark_block_dirty (c, e, blk);
  }
  r = 0;

 out:
  vhd_cache_unlock (c, blk);
  free (bounce);
  if (r == -1 && errno == 0)
    errno = EIO;
  return r;
}

/* Give the host space of [offset, offset+len) of the top file back:
 * afterwards the range reads as zeros.  1 if done, 0 if the file system
 * cannot punch holes, -1 on error. */
static int
punch_hole (struct vhd_chain *c, uint64_t offset, uint64_t len)
{
  const struct vhd_layer *f = top (c);

  if (len == 0)
    return 1;
  if (begin_write (c) == -1)
    return -1;
  if (fallocate (f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, len) == 0)
    return 1;
  if (errno == EOPNOTSUPP || errno == ENOSYS)
    return 0;
  vhd_error ("%s: punching a hole at offset %" PRIu64 ": %m", f->path,
             offset);
  return -1;
}

static int
check_writable (struct vhd_chain *c)
{
  if (!c->writable) {
    vhd_error ("%s: opened read-only", top (c)->path);
    errno = EROFS;
    return -1;
  }
  return 0;
}

/* Block blk (its lock held) through the back-end's zero_block: 1 if
 * done, 0 if the caller must write zeros, -1 on error. */
static int
zero_whole_block (struct vhd_chain *c, uint32_t blk)
{
  struct vhd_layer *t = top (c);
  struct block_entry *e;
  int r;

  if (begin_write (c) == -1)
    return -1;
  r = t->ops->zero_block (t, blk);
  if (r != 1)
    return r;
  e = vhd_cache_get (c, blk, true);
  if (e == NULL || vhd_cache_top_zeroed (c, e, blk) == -1) {
    vhd_error ("%s: zero: %m", t->path);
    return -1;
  }
  return 1;
}

static int
write_one (struct vhd_chain *c, uint32_t blk, uint64_t done, uint64_t n,
           uint64_t offset, void *buf)
{
  return write_piece (c, blk, (const char *) buf + done, n, offset);
}

int
vhd_chain_pwrite (struct vhd_chain *c, const void *buf, uint64_t count,
                  uint64_t offset)
{
  struct vhd_layer *t = top (c);
  const char *p = buf;

  if (check_writable (c) == -1)
    return -1;
  if (t->flat) {
    if (begin_write (c) == -1 ||
        full_pwrite (t->fd, buf, count, offset) == -1) {
      vhd_error ("%s: write at offset %" PRIu64 ": %m", t->path, offset);
      return -1;
    }
    return 0;
  }
  return vhd_each_block (c, count, offset, write_one, (void *) p);
}

int
vhd_chain_zero (struct vhd_chain *c, uint64_t count, uint64_t offset)
{
  struct vhd_layer *t = top (c);

  if (check_writable (c) == -1)
    return -1;
  while (count > 0) {
    uint64_t n;

    if (t->flat) {
      static const char zeros[65536];
      /* Whole sectors of a fixed disk: a hole reads as zeros. */
      if (__atomic_load_n (&c->writer->punch_works, __ATOMIC_RELAXED) &&
          offset % c->sector == 0 &&
          count >= c->sector) {
        int p;
        n = ROUND_DOWN (count, c->sector);
        p = punch_hole (c, offset, n);
        if (p == -1)
          return -1;
        if (p == 1) {
          offset += n;
          count -= n;
          continue;
        }
        __atomic_store_n (&c->writer->punch_works, false, __ATOMIC_RELAXED);
      }
      n = MIN (count, sizeof zeros);
      if (begin_write (c) == -1 ||
          full_pwrite (t->fd, zeros, n, offset) == -1) {
        vhd_error ("%s: write at offset %" PRIu64 ": %m", t->path, offset);
        return -1;
      }
    }
    else {
      uint32_t blk = offset / t->block_size;
      uint64_t block_start = (uint64_t) blk * t->block_size;
      uint32_t rel, end;
      struct block_entry *e;
      bool already_zero;

      int done = 0;

      n = MIN (count, block_start + t->block_size - offset);
      rel = (offset - block_start) / c->sector;
      end = (offset + n - block_start + c->sector - 1) / c->sector;
      vhd_cache_lock (c, blk);
      e = vhd_cache_get (c, blk, false);
      already_zero = e && vhd_cache_range_is_zero (e, rel, end);
      /* The whole block, to the byte (up to the end of the disk): a
       * back-end with a zero state takes it without data. */
      if (e && !already_zero && t->ops->zero_block &&
          offset == block_start &&
          offset + n == MIN (block_start + t->block_size, c->size))
        done = zero_whole_block (c, blk);
      vhd_cache_unlock (c, blk);
      if (e == NULL || done == -1)
        return -1;
      /* Ranges no layer holds already read as zeros.  Anything else gets
       * real zeros in the top file with its bits set: a cleared bit
       * would let the parent's data show through. */
      if (!already_zero && done == 0 &&
          write_piece (c, blk, c->writer->zeros, n, offset) == -1)
        return -1;
    }
    offset += n;
    count -= n;
  }
  return 0;
}

/* Sectors [rel, end) of block blk: punch the ones the top file holds
 * (the block's lock keeps writes to it out meanwhile). */
static int
trim_piece (struct vhd_chain *c, uint32_t blk, uint32_t rel, uint32_t end)
{
  struct block_entry *e;
  uint32_t i;
  int r = 0;

  vhd_cache_lock (c, blk);
  e = vhd_cache_get (c, blk, false);
  if (e == NULL)
    r = -1;
  for (i = 0; e && r != -1 && i < e->n_merged; i++) {
    const struct run *run = &e->merged[i];
    uint32_t s = MAX (run->rel, rel), x = MIN (run->rel + run->n, end);

    if (run->layer == 0 && s < x)
      r = punch_hole (c, run->file_off +
                      (uint64_t) (s - run->rel) * c->sector,
                      (uint64_t) (x - s) * c->sector);
  }
  vhd_cache_unlock (c, blk);
  return r == -1 ? -1 : 0;
}

int
vhd_chain_trim (struct vhd_chain *c, uint64_t count, uint64_t offset)
{
  struct vhd_layer *t = top (c);
  /* Whole sectors only: a partial one keeps its content. */
  uint64_t start = ROUND_UP (offset, c->sector);
  uint64_t end = ROUND_DOWN (MIN (offset + count, c->size), c->sector);

  if (check_writable (c) == -1)
    return -1;
  if (start >= end)
    return 0;
  if (t->flat)
    return punch_hole (c, start, end - start) == -1 ? -1 : 0;
  while (start < end) {
    uint32_t blk = start / t->block_size;
    uint64_t block_start = (uint64_t) blk * t->block_size;
    uint64_t n = MIN (end, block_start + t->block_size) - start;

    if (trim_piece (c, blk, (start - block_start) / c->sector,
                    (start + n - block_start) / c->sector) == -1)
      return -1;
    start += n;
  }
  return 0;
}

/* FAST_ZERO: zeroing [offset, offset+count) costs no data writes when
 * it is a hole in a fixed disk (punched) or reads as zeros already. */
bool
vhd_chain_zero_is_fast (struct vhd_chain *c, uint64_t count, uint64_t offset)
{
  struct vhd_layer *t = top (c);
  uint64_t end = MIN (offset + count, c->size);

  if (t->flat)
    return c->writer &&
           __atomic_load_n (&c->writer->punch_works, __ATOMIC_RELAXED) &&
           offset % c->sector == 0 && end % c->sector == 0;
  while (offset < end) {
    uint32_t blk = offset / t->block_size;
    uint64_t block_start = (uint64_t) blk * t->block_size;
    uint64_t n = MIN (end, block_start + t->block_size) - offset;
    struct block_entry *e;
    bool zero;

    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    zero = e && vhd_cache_range_is_zero (e, (offset - block_start) / c->sector,
                                         (offset + n - block_start +
                                          c->sector - 1) / c->sector);
    vhd_cache_unlock (c, blk);
    if (!zero)
      return false;
    offset += n;
  }
  return true;
}

/* ------------------------------------------------------------ flush */

struct snapshot {
  struct dirty_block *blocks;   /* dirty blocks taken, with their bitmaps */
  uint8_t *bitmaps;
  size_t n;
};

/* The end of a flush, done or failed: the blocks of the snapshot are
 * unpinned (their bitmaps are in the file now, or they are dirty
 * again); after a failure they are put back to dirty.  Their entries
 * are the ones take_snapshot saw: flushing kept them from being
 * evicted (see there). */
static void
end_flush (struct vhd_chain *c, struct snapshot *s, bool failed)
{
  size_t i;

  for (i = 0; i < s->n; i++) {
    uint32_t blk = s->blocks[i].blk;
    struct block_entry *e;

    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    if (e) {
      e->flushing = false;
      if (failed)
        mark_block_dirty (c, e, blk);
      vhd_cache_unpinned (c, e);
    }
    vhd_cache_unlock (c, blk);
  }
}

/* Put blocks taken from the dirty list back (their entries are still
 * marked dirty, so no writer listed them again meanwhile). */
static void
give_back (struct vhd_writer *w, const uint32_t *blocks, size_t n)
{
  pthread_mutex_lock (&w->dirty_lock);
  memcpy (w->dirty_blocks + w->n_dirty, blocks, n * sizeof *blocks);
  w->n_dirty += n;
  pthread_mutex_unlock (&w->dirty_lock);
}

/* Step 3a of the crash-safety argument: copy the bitmaps now, so that
 * only bits of completed writes reach the file. */
static int
take_snapshot (struct vhd_chain *c, struct snapshot *s)
{
  struct vhd_layer *t = top (c);
  struct vhd_writer *w = c->writer;
  uint32_t bytes = layer_bitmap_bytes (t);
  uint32_t *taken;
  size_t i, n;

  taken = malloc ((t->n_blocks + 1) * sizeof *taken);
  if (taken == NULL) {
    vhd_error ("%s: flush: %m", t->path);
    return -1;
  }
  pthread_mutex_lock (&w->dirty_lock);
  memcpy (taken, w->dirty_blocks, w->n_dirty * sizeof *taken);
  n = w->n_dirty;
  w->n_dirty = 0;
  pthread_mutex_unlock (&w->dirty_lock);

  s->blocks = malloc (n * sizeof *s->blocks + 1);
  s->bitmaps = malloc (n * bytes + 1);
  if (s->blocks == NULL || s->bitmaps == NULL) {
    vhd_error ("%s: flush: %m", t->path);
    give_back (w, taken, n);
    free (taken);
    return -1;
  }
  for (i = 0; i < n; i++) {
    uint32_t blk = taken[i];
    struct block_entry *e;

    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    if (e == NULL) {
      vhd_cache_unlock (c, blk);
      give_back (w, taken + i, n - i);
      free (taken);
      errno = EIO;
      return -1;
    }
    if (e->top_bitmap == NULL) {
      /* Zeroed since it was written (zero_block): no bitmap to write. */
      e->dirty = false;
      vhd_cache_unpinned (c, e);
      vhd_cache_unlock (c, blk);
      continue;
    }
    memcpy (s->bitmaps + s->n * bytes, e->top_bitmap, bytes);
    s->blocks[s->n] = (struct dirty_block) { blk, e->top_data_off,
                                             s->bitmaps + s->n * bytes };
    /* Clean from now on: a write that sets bits after this copy lists
     * the block again for the next flush.  But the file still holds the
     * old bitmap until the commit: were the entry evicted and re-filled
     * from the file meanwhile, reads would lose the sectors written
     * since the last flush, and a failed flush could not put the bits
     * back.  flushing pins it until end_flush. */
    e->dirty = false;
    e->flushing = true;
    s->n++;
    vhd_cache_unlock (c, blk);
  }
  free (taken);
  return 0;
}

int
vhd_chain_flush (struct vhd_chain *c)
{
  struct vhd_layer *t = top (c);
  struct vhd_writer *w = c->writer;
  struct snapshot s = { NULL, NULL, 0 };
  int r = -1;

  if (!c->writable)
    return 0;
  pthread_mutex_lock (&w->flush_lock);
  if ((t->flat || take_snapshot (c, &s) == 0) &&
      t->ops->commit (t, s.blocks, s.n) == 0)
    r = 0;
  end_flush (c, &s, r == -1);
  pthread_mutex_unlock (&w->flush_lock);
  free (s.blocks);
  free (s.bitmaps);
  if (r == -1 && errno == 0)
    errno = EIO;
  return r;
}
