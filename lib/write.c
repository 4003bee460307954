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
 * 1. Allocating a block (alloc_block), under the allocation lock:
 *      a. write the footer at the new end of file, after the new block;
 *      b. zero the old footer (the new block, or the alignment gap before
 *         it, covers its place);
 *      c. the caller writes the data into the block.
 *    The BAT entry and the bitmap are NOT written now: they stay in
 *    memory, marked dirty.  A kill after (a) leaves two valid footers;
 *    after (b) or (c) the new footer is the EOF footer and the block is
 *    unreferenced space: the file opens with exactly its old content,
 *    and the next allocation starts after that space, never inside it.
 *    The new block lies past every piece of metadata and data (and past
 *    the old footer), so nothing referenced is ever overwritten.
 *
 * 2. Writing sectors into an allocated block writes the data in place
 *    and sets the bitmap bits in memory only.  Until the bits reach the
 *    file, a sector written for the first time is invisible on disk (its
 *    old content, from the parent or zeros, still shows), so a crash
 *    shows every sector either old or new, never a sector whose bit is
 *    set over data that did not arrive.
 *
 * 3. Flush (vhd_chain_flush), serialised by the flush lock:
 *      a. snapshot the dirty bitmaps and BAT sectors (every bit and entry
 *         in the snapshot belongs to a write that has completed);
 *      b. fdatasync: the data, zeroing and footers of those writes are
 *         now durable;
 *      c. write the snapshot bitmaps, then the BAT sectors: data and
 *         bitmap are durable before any BAT entry points at them;
 *      d. fdatasync: everything acknowledged before the flush is durable.
 *    A crash between (c) and (d) can persist any subset of the metadata
 *    writes; each bitmap and BAT sector write covers whole sectors, and
 *    each subset describes durable data only.  A BAT entry reaching the
 *    disk before its bitmap points at a bitmap that is still all zero
 *    (zeroed when allocated), which reads as "not here".
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
 * The only state a power loss can leave that differs from a kill: the
 *    footer written in 1a may be lost while 1b reached the disk, leaving
 *    no valid footer at end of file.  The copy at offset 0 is identical
 *    (allocation never changes footer contents), the opener falls back
 *    to it, and the next writable open rewrites the EOF footer.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

struct vhd_writer {
  pthread_mutex_t alloc_lock;
  uint64_t next_free;           /* where the next block's bitmap goes */
  uint64_t footer_off;          /* offset of the current EOF footer */
  uint64_t file_end;            /* current file size */

  pthread_mutex_t dirty_lock;
  uint32_t *dirty_blocks;       /* blocks whose bitmap must be written */
  size_t n_dirty;
  uint8_t *dirty_bat;           /* one byte per BAT sector */
  size_t n_bat_sectors;

  pthread_mutex_t flush_lock;
  char *zeros;                  /* one block of zeros for zero requests */
  bool punch_works;             /* until fallocate says otherwise (set
                                   and read by any thread: atomics) */
};

static struct vhd_file *
top (const struct vhd_chain *c)
{
  return c->layers[0];
}

/* Data areas start on a 4 KiB boundary, as Windows lays them out. */
static uint64_t
align_block_start (const struct vhd_file *f, uint64_t at)
{
  return ROUND_UP (at + f->bitmap_bytes, 4096) - f->bitmap_bytes;
}

uint64_t
vhd_next_free (const struct vhd_file *f)
{
  return align_block_start (f, MAX (MAX (f->metadata_end, f->data_end),
                                    f->footer_offset));
}

static int
write_footer_at (struct vhd_file *f, uint64_t off)
{
  uint8_t buf[VHD_FOOTER_SIZE];

  vhd_file_footer_bytes (f, buf);
  if (full_pwrite (f->fd, buf, sizeof buf, off) == -1) {
    vhd_error ("%s: writing footer at offset %" PRIu64 ": %m", f->path, off);
    return -1;
  }
  return 0;
}

int
vhd_writer_init (struct vhd_chain *c)
{
  struct vhd_file *t = top (c);
  struct vhd_writer *w = calloc (1, sizeof *w);

  if (w == NULL)
    goto nomem;
  pthread_mutex_init (&w->alloc_lock, NULL);
  pthread_mutex_init (&w->dirty_lock, NULL);
  pthread_mutex_init (&w->flush_lock, NULL);
  w->punch_works = true;
  c->writer = w;
  if (t->type == VHD_TYPE_FIXED)
    return 0;

  w->footer_off = t->footer_offset;
  w->file_end = t->file_size;
  if (t->footer_from_copy) {
    /* Repair what a power loss during allocation can leave (see the
     * top of this file): put a footer back at the end. */
    w->footer_off = ROUND_UP (t->file_size, VHD_SECTOR);
    if (write_footer_at (t, w->footer_off) == -1 || fdatasync (t->fd) == -1)
      return -1;
    w->file_end = w->footer_off + VHD_FOOTER_SIZE;
    vhd_warning ("%s: rewrote the missing footer at end of file", t->path);
  }
  t->footer_offset = w->footer_off;
  w->next_free = vhd_next_free (t);
  w->n_bat_sectors = ROUND_UP (t->bat_loaded * 4, VHD_SECTOR) / VHD_SECTOR;
  w->dirty_bat = calloc (w->n_bat_sectors + 1, 1);
  w->dirty_blocks = malloc ((t->n_blocks + 1) * sizeof *w->dirty_blocks);
  w->zeros = calloc (1, t->block_size);
  if (w->dirty_bat == NULL || w->dirty_blocks == NULL || w->zeros == NULL)
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
  pthread_mutex_destroy (&w->alloc_lock);
  pthread_mutex_destroy (&w->dirty_lock);
  pthread_mutex_destroy (&w->flush_lock);
  free (w->dirty_blocks);
  free (w->dirty_bat);
  free (w->zeros);
  free (w);
  c->writer = NULL;
}

/* Steps 1a and 1b of the crash-safety argument. */
static int
alloc_block (struct vhd_chain *c, uint32_t *entry)
{
  struct vhd_file *t = top (c);
  struct vhd_writer *w = c->writer;
  uint64_t at, new_footer;
  int r = -1;

  pthread_mutex_lock (&w->alloc_lock);
  at = w->next_free;
  new_footer = at + t->bitmap_bytes + t->block_size;
  if (new_footer / VHD_SECTOR > UINT32_MAX) {
    vhd_error ("%s: file cannot grow further: block sector numbers are "
               "32 bits", t->path);
    errno = ENOSPC;
    goto out;
  }
  if (write_footer_at (t, new_footer) == -1)
    goto out;
  if (w->file_end > w->footer_off &&
      full_pwrite (t->fd, w->zeros, MIN (w->file_end - w->footer_off,
                                         (uint64_t) t->block_size),
                   w->footer_off) == -1) {
    vhd_error ("%s: clearing old footer: %m", t->path);
    goto out;
  }
  w->footer_off = new_footer;
  w->file_end = new_footer + VHD_FOOTER_SIZE;
  w->next_free = align_block_start (t, w->file_end);
  *entry = at / VHD_SECTOR;
  r = 0;
 out:
  pthread_mutex_unlock (&w->alloc_lock);
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
  struct vhd_file *t = top (c);
  uint64_t block_start = (uint64_t) blk * t->block_size;
  uint32_t rel = (offset - block_start) / VHD_SECTOR;
  uint32_t end = (offset + count - block_start + VHD_SECTOR - 1) / VHD_SECTOR;
  uint64_t aligned_off = block_start + (uint64_t) rel * VHD_SECTOR;
  uint64_t aligned_len = (uint64_t) (end - rel) * VHD_SECTOR;
  char *bounce = NULL;
  const char *src = buf;
  struct block_entry *e;
  uint32_t entry;
  bool fresh = false;
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

  entry = bat_get (t, blk);
  if (entry == VHD_BAT_UNUSED) {
    if (alloc_block (c, &entry) == -1)
      goto out;
    fresh = true;
  }
  if (full_pwrite (t->fd, src, aligned_len,
                   block_data_offset (t, entry) +
                   (uint64_t) rel * VHD_SECTOR) == -1) {
    vhd_error ("%s: write at offset %" PRIu64 ": %m", t->path, offset);
    goto out;
  }
  if (fresh) {
    /* Only now may readers find the block through the BAT. */
    bat_set (t, blk, entry);
    pthread_mutex_lock (&c->writer->dirty_lock);
    c->writer->dirty_bat[blk / (VHD_SECTOR / 4)] = 1;
    pthread_mutex_unlock (&c->writer->dirty_lock);
  }
  switch (vhd_cache_top_written (c, e, blk, rel, end - rel)) {
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

/* Give the host space of [offset, offset+len) of f back: afterwards
 * the range reads as zeros.  1 if done, 0 if the file system cannot
 * punch holes, -1 on error. */
static int
punch_hole (const struct vhd_file *f, uint64_t offset, uint64_t len)
{
  if (len == 0 ||
      fallocate (f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
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

int
vhd_chain_pwrite (struct vhd_chain *c, const void *buf, uint64_t count,
                  uint64_t offset)
{
  struct vhd_file *t = top (c);
  const char *p = buf;

  if (check_writable (c) == -1)
    return -1;
  if (t->type == VHD_TYPE_FIXED) {
    if (full_pwrite (t->fd, buf, count, offset) == -1) {
      vhd_error ("%s: write at offset %" PRIu64 ": %m", t->path, offset);
      return -1;
    }
    return 0;
  }
  while (count > 0) {
    uint32_t blk = offset / t->block_size;
    uint64_t n = MIN (count, (uint64_t) (blk + 1) * t->block_size - offset);

    if (write_piece (c, blk, p, n, offset) == -1)
      return -1;
    p += n;
    offset += n;
    count -= n;
  }
  return 0;
}

int
vhd_chain_zero (struct vhd_chain *c, uint64_t count, uint64_t offset)
{
  struct vhd_file *t = top (c);

  if (check_writable (c) == -1)
    return -1;
  while (count > 0) {
    uint64_t n;

    if (t->type == VHD_TYPE_FIXED) {
      static const char zeros[65536];
      /* Whole sectors of a fixed disk: a hole reads as zeros. */
      if (__atomic_load_n (&c->writer->punch_works, __ATOMIC_RELAXED) &&
          offset % VHD_SECTOR == 0 &&
          count >= VHD_SECTOR) {
        int p;
        n = ROUND_DOWN (count, VHD_SECTOR);
        p = punch_hole (t, offset, n);
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
      if (full_pwrite (t->fd, zeros, n, offset) == -1) {
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

      n = MIN (count, block_start + t->block_size - offset);
      rel = (offset - block_start) / VHD_SECTOR;
      end = (offset + n - block_start + VHD_SECTOR - 1) / VHD_SECTOR;
      vhd_cache_lock (c, blk);
      e = vhd_cache_get (c, blk, false);
      already_zero = e && vhd_cache_range_is_zero (e, rel, end);
      vhd_cache_unlock (c, blk);
      if (e == NULL)
        return -1;
      /* Ranges no layer holds already read as zeros.  Anything else gets
       * real zeros in the top file with its bits set: a cleared bit
       * would let the parent's data show through. */
      if (!already_zero &&
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
      r = punch_hole (top (c), run->file_off +
                      (uint64_t) (s - run->rel) * VHD_SECTOR,
                      (uint64_t) (x - s) * VHD_SECTOR);
  }
  vhd_cache_unlock (c, blk);
  return r == -1 ? -1 : 0;
}

int
vhd_chain_trim (struct vhd_chain *c, uint64_t count, uint64_t offset)
{
  struct vhd_file *t = top (c);
  /* Whole sectors only: a partial one keeps its content. */
  uint64_t start = ROUND_UP (offset, VHD_SECTOR);
  uint64_t end = ROUND_DOWN (MIN (offset + count, c->size), VHD_SECTOR);

  if (check_writable (c) == -1)
    return -1;
  if (start >= end)
    return 0;
  if (t->type == VHD_TYPE_FIXED)
    return punch_hole (t, start, end - start) == -1 ? -1 : 0;
  while (start < end) {
    uint32_t blk = start / t->block_size;
    uint64_t block_start = (uint64_t) blk * t->block_size;
    uint64_t n = MIN (end, block_start + t->block_size) - start;

    if (trim_piece (c, blk, (start - block_start) / VHD_SECTOR,
                    (start + n - block_start) / VHD_SECTOR) == -1)
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
  struct vhd_file *t = top (c);
  uint64_t end = MIN (offset + count, c->size);

  if (t->type == VHD_TYPE_FIXED)
    return c->writer &&
           __atomic_load_n (&c->writer->punch_works, __ATOMIC_RELAXED) &&
           offset % VHD_SECTOR == 0 && end % VHD_SECTOR == 0;
  while (offset < end) {
    uint32_t blk = offset / t->block_size;
    uint64_t block_start = (uint64_t) blk * t->block_size;
    uint64_t n = MIN (end, block_start + t->block_size) - offset;
    struct block_entry *e;
    bool zero;

    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    zero = e && vhd_cache_range_is_zero (e, (offset - block_start) / VHD_SECTOR,
                                         (offset + n - block_start +
                                          VHD_SECTOR - 1) / VHD_SECTOR);
    vhd_cache_unlock (c, blk);
    if (!zero)
      return false;
    offset += n;
  }
  return true;
}

/* ------------------------------------------------------------ flush */

struct snapshot {
  uint32_t *blocks;             /* dirty blocks taken */
  uint32_t *entries;            /* their BAT entries */
  uint8_t *bitmaps;             /* their bitmaps, bitmap_bytes each */
  size_t n;
  uint8_t *bat_sectors;         /* flags taken from dirty_bat */
  uint8_t *bat_data;            /* those BAT sectors, encoded */
};

/* The end of a flush, done or failed: the blocks of the snapshot are
 * unpinned (their bitmaps are in the file now, or they are dirty
 * again); after a failure the blocks and BAT sectors taken are put back
 * to dirty.  Their entries are the ones take_snapshot saw: flushing
 * kept them from being evicted (see there). */
static void
end_flush (struct vhd_chain *c, struct snapshot *s, bool failed)
{
  struct vhd_writer *w = c->writer;
  size_t i;

  for (i = 0; i < s->n; i++) {
    uint32_t blk = s->blocks[i];
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
  if (!failed)
    return;
  pthread_mutex_lock (&w->dirty_lock);
  for (i = 0; i < w->n_bat_sectors; i++)
    w->dirty_bat[i] |= s->bat_sectors[i];
  pthread_mutex_unlock (&w->dirty_lock);
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

/* Step 3a of the crash-safety argument: copy the bitmaps and encode
 * the BAT sectors now, before the fdatasync, so that nothing written
 * after it (a block allocated meanwhile) can reach the metadata. */
static int
take_snapshot (struct vhd_chain *c, struct snapshot *s)
{
  struct vhd_file *t = top (c);
  struct vhd_writer *w = c->writer;
  size_t i, j;

  s->blocks = malloc ((t->n_blocks + 1) * sizeof *s->blocks);
  s->bat_sectors = calloc (w->n_bat_sectors + 1, 1);
  if (s->blocks == NULL || s->bat_sectors == NULL) {
    vhd_error ("%s: flush: %m", t->path);
    return -1;
  }
  pthread_mutex_lock (&w->dirty_lock);
  memcpy (s->blocks, w->dirty_blocks, w->n_dirty * sizeof *s->blocks);
  s->n = w->n_dirty;
  w->n_dirty = 0;
  memcpy (s->bat_sectors, w->dirty_bat, w->n_bat_sectors);
  memset (w->dirty_bat, 0, w->n_bat_sectors);
  pthread_mutex_unlock (&w->dirty_lock);

  s->entries = malloc (s->n * sizeof *s->entries + 1);
  s->bitmaps = malloc (s->n * t->bitmap_bytes + 1);
  s->bat_data = malloc (w->n_bat_sectors * VHD_SECTOR + 1);
  if (s->entries == NULL || s->bitmaps == NULL || s->bat_data == NULL) {
    vhd_error ("%s: flush: %m", t->path);
    give_back (w, s->blocks, s->n);
    s->n = 0;
    return -1;
  }
  for (i = 0; i < s->n; i++) {
    uint32_t blk = s->blocks[i];
    struct block_entry *e;

    vhd_cache_lock (c, blk);
    e = vhd_cache_get (c, blk, false);
    if (e == NULL || e->top_bitmap == NULL) {   /* cannot happen */
      vhd_cache_unlock (c, blk);
      give_back (w, s->blocks + i, s->n - i);
      s->n = i;
      errno = EIO;
      return -1;
    }
    memcpy (s->bitmaps + i * t->bitmap_bytes, e->top_bitmap, t->bitmap_bytes);
    s->entries[i] = e->top_entry;
    /* Clean from now on: a write that sets bits after this copy lists
     * the block again for the next flush.  But the file still holds the
     * old bitmap until write_snapshot: were the entry evicted and
     * re-filled from the file meanwhile, reads would lose the sectors
     * written since the last flush, and a failed flush could not put
     * the bits back.  flushing pins it until end_flush. */
    e->dirty = false;
    e->flushing = true;
    vhd_cache_unlock (c, blk);
  }
  for (i = 0; i < w->n_bat_sectors; i++) {
    uint8_t *sector = s->bat_data + i * VHD_SECTOR;
    if (!s->bat_sectors[i])
      continue;
    for (j = 0; j < VHD_SECTOR / 4; j++) {
      uint64_t idx = i * (VHD_SECTOR / 4) + j;
      /* Past the last entry the BAT sector is 0xFF padding. */
      put_be32 (sector + 4 * j, idx < t->bat_loaded ? bat_get (t, idx)
                                                    : VHD_BAT_UNUSED);
    }
  }
  return 0;
}

static int
write_snapshot (struct vhd_chain *c, struct snapshot *s)
{
  struct vhd_file *t = top (c);
  struct vhd_writer *w = c->writer;
  size_t i;

  for (i = 0; i < s->n; i++)
    if (full_pwrite (t->fd, s->bitmaps + i * t->bitmap_bytes,
                     t->bitmap_bytes,
                     (uint64_t) s->entries[i] * VHD_SECTOR) == -1) {
      vhd_error ("%s: writing bitmap of block %u: %m", t->path,
                 s->blocks[i]);
      return -1;
    }
  for (i = 0; i < w->n_bat_sectors; i++)
    if (s->bat_sectors[i] &&
        full_pwrite (t->fd, s->bat_data + i * VHD_SECTOR, VHD_SECTOR,
                     t->header.table_offset + i * VHD_SECTOR) == -1) {
      vhd_error ("%s: writing BAT: %m", t->path);
      return -1;
    }
  return 0;
}

int
vhd_chain_flush (struct vhd_chain *c)
{
  struct vhd_file *t = top (c);
  struct vhd_writer *w = c->writer;
  struct snapshot s = { NULL, NULL, NULL, 0, NULL, NULL };
  int r = -1;

  if (!c->writable)
    return 0;
  if (t->type == VHD_TYPE_FIXED) {
    if (fdatasync (t->fd) == -1) {
      vhd_error ("%s: fdatasync: %m", t->path);
      return -1;
    }
    return 0;
  }

  pthread_mutex_lock (&w->flush_lock);
  if (take_snapshot (c, &s) == -1)
    goto out;
  if (fdatasync (t->fd) == -1) {
    vhd_error ("%s: fdatasync: %m", t->path);
    goto out;
  }
  if (write_snapshot (c, &s) == -1)
    goto out;
  if (fdatasync (t->fd) == -1) {
    vhd_error ("%s: fdatasync: %m", t->path);
    goto out;
  }
  r = 0;
 out:
  if (s.bat_sectors)
    end_flush (c, &s, r == -1);
  pthread_mutex_unlock (&w->flush_lock);
  free (s.blocks);
  free (s.entries);
  free (s.bitmaps);
  free (s.bat_sectors);
  free (s.bat_data);
  if (r == -1 && errno == 0)
    errno = EIO;
  return r;
}
