/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-overlay-filter: the overlay store (mechanism).
 *
 * Design.  The overlay holds data in a sparse temporary file, unlinked
 * as soon as it is created, at the same offsets as the disk; the map of
 * what it holds lives in memory.  The map is kept per *sector*: a sector
 * is either held by the overlay (written, zeroed or trimmed by a client)
 * or not (it reads through to the plugin).  Sector granularity means
 * there is no copy-up: a 4 KiB write is one 4 KiB pwrite, never a
 * read-modify-write of a larger block, and a saved overlay stores
 * exactly the sectors clients wrote.  Only a write that does not cover
 * whole sectors reads the rest of its first or last sector.
 *
 * The map is split into blocks (overlay-block-size, default 64 KiB);
 * each block gets, on first write, two bitmaps (held, and "has data in
 * the file" as opposed to zeroed).  A block zeroed or trimmed as a
 * whole is marked by a sentinel pointer with no bitmaps.  The block
 * pointers live in chunks of CHUNK_BLOCKS, allocated on first write
 * into them; a chunk zeroed or trimmed as a whole is a sentinel too.
 * So memory follows what clients wrote, not the disk size: an untouched
 * 2040 GiB disk costs one 64 KiB table of chunk pointers (not 256 MiB of
 * block pointers), and discarding a whole disk (mkfs does) costs no more.
 *
 * Locking (the race nbdkit 1.32's cow filter loses writes to): blocks
 * are guarded by a fixed array of striped mutexes.  Every write, zero
 * and trim locks the stripes of all the blocks it touches, in ascending
 * stripe order (so two requests cannot deadlock), and holds them while
 * it reads partial sectors, writes the overlay file and sets the bits.
 * Nothing else ever writes the overlay file: reads never fill it, so a
 * read can never put stale data over a concurrent write.  A read locks
 * a block's stripe only to copy its bits, then does its I/O unlocked; it
 * sees a sector's bit set only after that sector's data is in the file.
 *
 * The size limit counts bytes of data in the file (zeroed and trimmed
 * ranges are holes and cost nothing).  Because all blocks of a request
 * are locked before anything is written, a write that would exceed the
 * limit is refused with ENOSPC before it changes anything.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "store.h"
#include "util.h"

#define SECTOR 512

/* Both overridable at build time only so that fuzz/fuzz-store, whose
 * disks are small, reaches the chunk code (whole chunks zeroed, blocks
 * made inside a zeroed chunk) with a handful of blocks. */
#ifndef N_STRIPES
#define N_STRIPES 1024
#endif

struct block {
  uint8_t bits[1];              /* held bits, then data bits */
};

/* Every sector of the block held, all zero: no bitmaps needed. */
#define ZERO_BLOCK ((struct block *) 1)

/* Block pointers per chunk (32 KiB of pointers), and the sentinel for
 * a chunk whose every block is ZERO_BLOCK. */
#ifndef CHUNK_BLOCKS
#define CHUNK_BLOCKS 4096
#endif
#define ZERO_CHUNK ((struct block **) 1)
/* mark_sectors drops a whole chunk holding the locks of its blocks
 * only, which must then be all the stripes. */
_Static_assert (CHUNK_BLOCKS >= N_STRIPES, "a chunk spans every stripe");

struct store {
  int fd;
  uint32_t block_size;
  uint32_t spb;                 /* sectors per block */
  uint64_t limit;
  uint64_t data_sectors;        /* sectors with data in the file */
  pthread_mutex_t size_lock;
  uint64_t size;                /* 0 until the first connection */
  uint64_t n_blocks;
  uint64_t n_chunks;
  /* Chunk c holds blocks [c * CHUNK_BLOCKS, (c + 1) * CHUNK_BLOCKS):
   * NULL (no block written), ZERO_CHUNK, or an array of block pointers
   * (NULL, ZERO_BLOCK or bitmaps).  Block pointers are read and written
   * under their block's stripe lock.  A chunk is created by whoever
   * first needs it, with a compare-and-swap (requests on other stripes
   * may race for it), and only becomes ZERO_CHUNK again under the locks
   * of all its blocks. */
  struct block ***chunks;
  pthread_mutex_t stripes[N_STRIPES];
};

/* The maps use lib's MSB-first bitmap helpers (util.h). */

static uint8_t *
held_bits (struct block *b)
{
  return b->bits;
}

static uint8_t *
data_bits (struct store *s, struct block *b)
{
  return b->bits + s->spb / 8;
}

static void
free_chunk (struct block **chunk)
{
  uint32_t k;

  if (chunk == NULL || chunk == ZERO_CHUNK)
    return;
  for (k = 0; k < CHUNK_BLOCKS; k++)
    if (chunk[k] != ZERO_BLOCK)
      free (chunk[k]);
  free (chunk);
}

/* Block i as the map has it (its stripe lock held). */
static struct block *
block_at (struct store *s, uint64_t i)
{
  struct block **chunk = __atomic_load_n (&s->chunks[i / CHUNK_BLOCKS],
                                          __ATOMIC_ACQUIRE);
  if (chunk == NULL)
    return NULL;
  if (chunk == ZERO_CHUNK)
    return ZERO_BLOCK;
  return chunk[i % CHUNK_BLOCKS];
}

/* Where block i's pointer is stored, creating its chunk if needed (its
 * stripe lock held).  NULL when out of memory. */
static struct block **
block_slot (struct store *s, uint64_t i)
{
  struct block ***cp = &s->chunks[i / CHUNK_BLOCKS];
  struct block **chunk = __atomic_load_n (cp, __ATOMIC_ACQUIRE), **fresh;
  uint32_t k;

  if (chunk != NULL && chunk != ZERO_CHUNK)
    return &chunk[i % CHUNK_BLOCKS];
  fresh = calloc (CHUNK_BLOCKS, sizeof *fresh);
  if (fresh == NULL)
    return NULL;
  if (chunk == ZERO_CHUNK)
    for (k = 0; k < CHUNK_BLOCKS; k++)
      fresh[k] = ZERO_BLOCK;
  /* Both views mean the same to a reader, so publishing is enough; if
   * another request on another stripe got there first, use its chunk. */
  if (!__atomic_compare_exchange_n (cp, &chunk, fresh, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    free (fresh);
    if (chunk == ZERO_CHUNK)    /* only under all locks: cannot happen */
      return NULL;
  }
  else
    chunk = fresh;
  return &chunk[i % CHUNK_BLOCKS];
}

struct store *
store_new (const char *dir, uint32_t block_size, uint64_t limit)
{
  struct store *s = calloc (1, sizeof *s);
  char *template = NULL;

  if (s == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  s->fd = -1;
  if (asprintf (&template, "%s/overlay.XXXXXX", dir) == -1) {
    nbdkit_error ("asprintf: %m");
    goto err;
  }
  s->fd = mkostemp (template, O_CLOEXEC);
  if (s->fd == -1) {
    nbdkit_error ("cannot create the overlay file in %s: %m", dir);
    goto err;
  }
  /* Nobody else may see it, and it must vanish however we exit. */
  unlink (template);
  free (template);
  s->block_size = block_size;
  s->spb = block_size / SECTOR;
  s->limit = limit;
  pthread_mutex_init (&s->size_lock, NULL);
  for (int i = 0; i < N_STRIPES; i++)
    pthread_mutex_init (&s->stripes[i], NULL);
  return s;

 err:
  free (template);
  if (s->fd >= 0)
    close (s->fd);
  free (s);
  return NULL;
}

void
store_free (struct store *s)
{
  uint64_t i;

  if (s == NULL)
    return;
  for (i = 0; i < s->n_chunks; i++)
    free_chunk (s->chunks[i]);
  free (s->chunks);
  pthread_mutex_destroy (&s->size_lock);
  for (i = 0; i < N_STRIPES; i++)
    pthread_mutex_destroy (&s->stripes[i]);
  close (s->fd);
  free (s);
}

int
store_set_size (struct store *s, uint64_t size)
{
  int r = 0;

  pthread_mutex_lock (&s->size_lock);
  if (s->chunks == NULL) {
    s->n_blocks = (size + s->block_size - 1) / s->block_size;
    s->n_chunks = (s->n_blocks + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS;
    s->chunks = calloc (s->n_chunks + 1, sizeof *s->chunks);
    if (s->chunks == NULL || ftruncate (s->fd, size) == -1) {
      nbdkit_error ("overlay for a disk of %" PRIu64 " bytes: %m", size);
      free (s->chunks);
      s->chunks = NULL;
      r = -1;
    }
    else
      s->size = size;
  }
  else if (size != s->size) {
    nbdkit_error ("the plugin's size changed from %" PRIu64 " to %" PRIu64
                  " bytes; the overlay cannot follow", s->size, size);
    r = -1;
  }
  pthread_mutex_unlock (&s->size_lock);
  return r;
}

static pthread_mutex_t *
stripe_of (struct store *s, uint64_t i)
{
  return &s->stripes[i % N_STRIPES];
}

/* Sectors of block i inside the disk (the last block may be short). */
static uint32_t
block_sectors (struct store *s, uint64_t i)
{
  uint64_t start = i * s->block_size;
  uint64_t len = s->size - start < s->block_size ? s->size - start
                                                  : s->block_size;
  return (len + SECTOR - 1) / SECTOR;
}

/* Block i with bitmaps, created on first use (stripe lock held). */
static struct block *
get_block (struct store *s, uint64_t i)
{
  struct block **slot = block_slot (s, i);
  struct block *b;
  uint32_t k, n;

  if (slot == NULL)
    return NULL;
  b = *slot;
  if (b && b != ZERO_BLOCK)
    return b;
  b = calloc (1, 2 * (s->spb / 8));
  if (b == NULL)
    return NULL;
  if (*slot == ZERO_BLOCK)
    for (k = 0, n = block_sectors (s, i); k < n; k++)
      bitmap_set (held_bits (b), k);
  *slot = b;
  return b;
}

/* Sectors of block b with data in the file. */
static uint64_t
block_data_sectors (struct store *s, struct block *b)
{
  uint64_t n = 0;
  uint32_t k;

  if (b == NULL || b == ZERO_BLOCK)
    return 0;
  for (k = 0; k < s->spb / 8; k++)
    n += __builtin_popcount (data_bits (s, b)[k]);
  return n;
}

/* Where sector k of block b comes from (stripe lock held). */
static enum store_src
sector_src (struct store *s, struct block *b, uint32_t k)
{
  if (b == NULL)
    return SRC_BELOW;
  if (b == ZERO_BLOCK)
    return SRC_ZERO;
  if (!bitmap_get (held_bits (b), k))
    return SRC_BELOW;
  return bitmap_get (data_bits (s, b), k) ? SRC_DATA : SRC_ZERO;
}

/* ------------------------------------------------------------ planning */

struct run {
  uint64_t off, len;
  enum store_src src;
};

struct plan {
  struct run *r;
  size_t n, cap;
};

static int
plan_add (struct plan *p, uint64_t off, uint64_t len, enum store_src src)
{
  struct run *last = p->n ? &p->r[p->n - 1] : NULL;

  if (len == 0)
    return 0;
  if (last && last->src == src && last->off + last->len == off) {
    last->len += len;
    return 0;
  }
  if (ARRAY_RESERVE (p->r, p->cap, p->n + 1) == -1)
    return -1;
  p->r[p->n++] = (struct run) { off, len, src };
  return 0;
}

/* Classify [offset, offset+count) sector by sector.  Each block's
 * stripe is locked only while its bits are read. */
static int
make_plan (struct store *s, uint64_t offset, uint64_t count, struct plan *p)
{
  uint64_t end = offset + count;

  while (offset < end) {
    uint64_t i = offset / s->block_size;
    uint64_t bstart = i * s->block_size;
    uint64_t bend = bstart + s->block_size < end ? bstart + s->block_size
                                                 : end;
    pthread_mutex_t *lock = stripe_of (s, i);
    struct block *b;
    int r = 0;

    pthread_mutex_lock (lock);
    b = block_at (s, i);
    if (b == NULL || b == ZERO_BLOCK) {
      r = plan_add (p, offset, bend - offset,
                    b == NULL ? SRC_BELOW : SRC_ZERO);
      offset = bend;
    }
    else while (r == 0 && offset < bend) {
      uint32_t sec = (offset - bstart) / SECTOR;
      uint64_t send = bstart + (uint64_t) (sec + 1) * SECTOR;
      uint64_t n = (send < bend ? send : bend) - offset;

      r = plan_add (p, offset, n, sector_src (s, b, sec));
      offset += n;
    }
    pthread_mutex_unlock (lock);
    if (r == -1)
      return -1;
  }
  return 0;
}

/* The overlay file is read and written with lib's full_pread and
 * full_pwrite (util.h).  Their end-of-file rule (EIO) is right here:
 * only sectors whose data bit is set are read from the file, and their
 * data was written first, so the file always reaches past them (zeroed
 * and trimmed sectors are never read from it, punched or not). */

/* Serve a plan into buf (which starts at disk offset base). */
static int
execute_plan (struct store *s, const struct plan *p, char *buf,
              uint64_t base, below_read_fn below, void *opaque, int *err)
{
  size_t i;

  for (i = 0; i < p->n; i++) {
    const struct run *r = &p->r[i];
    char *dst = buf + (r->off - base);

    switch (r->src) {
    case SRC_ZERO:
      memset (dst, 0, r->len);
      break;
    case SRC_DATA:
      if (full_pread (s->fd, dst, r->len, r->off) == -1) {
        *err = errno;
        nbdkit_error ("overlay read at %" PRIu64 ": %m", r->off);
        return -1;
      }
      break;
    case SRC_BELOW:
      if (below (opaque, dst, r->len, r->off, err) == -1)
        return -1;
      break;
    }
  }
  return 0;
}

int
store_read (struct store *s, void *buf, uint32_t count, uint64_t offset,
            below_read_fn below, void *opaque, int *err)
{
  struct plan p = { NULL, 0, 0 };
  int r = -1;

  if (make_plan (s, offset, count, &p) == -1)
    *err = ENOMEM;
  else
    r = execute_plan (s, &p, buf, offset, below, opaque, err);
  free (p.r);
  return r;
}

int
store_map (struct store *s, uint64_t offset, uint64_t len,
           store_range_fn fn, void *opaque)
{
  struct plan p = { NULL, 0, 0 };
  size_t i;
  int r = 0;

  if (make_plan (s, offset, len, &p) == -1) {
    errno = ENOMEM;
    return -1;
  }
  for (i = 0; i < p.n && r == 0; i++)
    r = fn (opaque, p.r[i].off, p.r[i].len, p.r[i].src);
  free (p.r);
  return r;
}

/* ------------------------------------------------------------ writing */

/* Lock (or unlock) the stripes of blocks [first, last], each once, in
 * ascending stripe order.  The blocks map to a contiguous range of
 * stripes that may wrap around the end of the array. */
static void
lock_blocks (struct store *s, uint64_t first, uint64_t last, bool lock)
{
  uint64_t lo, hi, i;

  if (last - first >= N_STRIPES - 1) {
    lo = 0;
    hi = N_STRIPES - 1;
  }
  else {
    lo = first % N_STRIPES;
    hi = last % N_STRIPES;
  }
  if (lo > hi) {                /* wrapped: [0, hi] comes first */
    for (i = 0; i <= hi; i++)
      lock ? pthread_mutex_lock (&s->stripes[i])
           : pthread_mutex_unlock (&s->stripes[i]);
    hi = N_STRIPES - 1;
  }
  for (i = lo; i <= hi; i++)
    lock ? pthread_mutex_lock (&s->stripes[i])
         : pthread_mutex_unlock (&s->stripes[i]);
}

/* Sectors in [s0, s1) without data in the file (locks held). */
static uint64_t
count_new_data (struct store *s, uint64_t s0, uint64_t s1)
{
  uint64_t n = 0, sec;

  for (sec = s0; sec < s1; sec++) {
    struct block *b = block_at (s, sec / s->spb);
    n += sector_src (s, b, sec % s->spb) != SRC_DATA;
  }
  return n;
}

/* Make sure every block that will get per-sector bits has them, before
 * anything is written, so running out of memory changes nothing.
 * Sectors [s0, s1) are marked as data when data is set, else as zero;
 * only a block that the zeroed sectors cover entirely can do without
 * bitmaps (it becomes ZERO_BLOCK).  Partial edge sectors are always
 * marked as data (store_write), so they are prepared separately. */
static int
prepare_blocks (struct store *s, uint64_t s0, uint64_t s1, bool data)
{
  uint64_t cs = (uint64_t) CHUNK_BLOCKS * s->spb;     /* sectors a chunk */
  uint64_t i;

  for (i = s0 / s->spb; s0 < s1 && i <= (s1 - 1) / s->spb; i++) {
    uint64_t c = i / CHUNK_BLOCKS;
    bool whole = s0 <= i * s->spb && (i + 1) * s->spb <= s1;

    if (!data && s0 <= c * cs && (c + 1) * cs <= s1) {
      /* The whole chunk becomes ZERO_CHUNK: nothing to allocate. */
      i = (c + 1) * CHUNK_BLOCKS - 1;
      continue;
    }
    if (data || !whole) {
      if (get_block (s, i) == NULL)
        return -1;
    }
    else if (block_slot (s, i) == NULL)       /* to become ZERO_BLOCK */
      return -1;
  }
  return 0;
}

/* Set held, and data or not, for sectors [s0, s1) (locks held, blocks
 * prepared); returns the change in data sectors.  Blocks zeroed as a
 * whole drop their bitmaps. */
static int64_t
mark_sectors (struct store *s, uint64_t s0, uint64_t s1, bool data)
{
  int64_t delta = 0;
  uint64_t sec = s0;

  uint64_t cs = (uint64_t) CHUNK_BLOCKS * s->spb;     /* sectors a chunk */

  while (sec < s1) {
    uint64_t i = sec / s->spb, c = i / CHUNK_BLOCKS;
    uint64_t bend = (i + 1) * s->spb < s1 ? (i + 1) * s->spb : s1;
    struct block **slot, *b;

    if (!data && sec == c * cs && (c + 1) * cs <= s1) {
      /* A whole chunk (its blocks' locks are all held: a chunk has more
       * blocks than there are stripes): drop it and its data. */
      struct block **chunk = s->chunks[c];
      uint32_t k;

      if (chunk != NULL && chunk != ZERO_CHUNK)
        for (k = 0; k < CHUNK_BLOCKS; k++)
          delta -= (int64_t) block_data_sectors (s, chunk[k]);
      __atomic_store_n (&s->chunks[c], ZERO_CHUNK, __ATOMIC_RELEASE);
      free_chunk (chunk);
      sec = (c + 1) * cs;
      continue;
    }
    slot = block_slot (s, i);   /* prepared: cannot fail */
    b = *slot;
    if (!data && sec == i * s->spb && bend == (i + 1) * s->spb) {
      /* Its data sectors are dropped. */
      delta -= (int64_t) block_data_sectors (s, b);
      if (b != ZERO_BLOCK)
        free (b);
      *slot = ZERO_BLOCK;
      sec = bend;
      continue;
    }
    while (sec < bend) {
      uint32_t k = sec % s->spb;

      if ((k & 7) == 0 && bend - sec >= 8) {   /* a whole byte at once */
        uint8_t *d = &data_bits (s, b)[k >> 3];
        delta += (data ? 8 : 0) - __builtin_popcount (*d);
        held_bits (b)[k >> 3] = 0xFF;
        *d = data ? 0xFF : 0;
        sec += 8;
        continue;
      }
      delta += (int64_t) data - (int64_t) bitmap_get (data_bits (s, b), k);
      bitmap_set (held_bits (b), k);
      bitmap_put (data_bits (s, b), k, data);
      sec++;
    }
  }
  return delta;
}

/* Read the current content of the sector at sec_off through the
 * overlay, with its block's lock already held.  The last sector of a
 * disk whose size is not a multiple of 512 is read only up to the end. */
static int
read_locked (struct store *s, char *sector, uint64_t sec_off,
             below_read_fn below, void *opaque, int *err)
{
  struct block *b = block_at (s, sec_off / s->block_size);
  uint32_t k = (sec_off % s->block_size) / SECTOR;
  uint64_t len = s->size - sec_off < SECTOR ? s->size - sec_off : SECTOR;
  enum store_src src = sector_src (s, b, k);

  if (src == SRC_BELOW)
    return below (opaque, sector, len, sec_off, err);
  if (src == SRC_ZERO)
    memset (sector, 0, SECTOR);
  else if (full_pread (s->fd, sector, len, sec_off) == -1) {
    *err = errno;
    nbdkit_error ("overlay read at %" PRIu64 ": %m", sec_off);
    return -1;
  }
  return 0;
}

/* Zeros become holes: they cost no space and read back as zeros. */
static int
punch (struct store *s, uint64_t offset, uint64_t len)
{
  static const char zeros[65536];

  if (fallocate (s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, len) == 0)
    return 0;
  while (len > 0) {
    uint64_t n = len < sizeof zeros ? len : sizeof zeros;
    if (full_pwrite (s->fd, zeros, n, offset) == -1)
      return -1;
    offset += n;
    len -= n;
  }
  return 0;
}

/* Write the sector at sec_off with bytes [from, to) of it replaced by
 * src (or zeros), keeping the rest as the disk shows it now. */
static int
patch_sector (struct store *s, uint64_t sec_off, uint64_t from, uint64_t to,
              const char *src, below_read_fn below, void *opaque, int *err)
{
  char sector[SECTOR] = { 0 };

  if (read_locked (s, sector, sec_off, below, opaque, err) == -1)
    return -1;
  if (src)
    memcpy (sector + (from - sec_off), src, to - from);
  else
    memset (sector + (from - sec_off), 0, to - from);
  if (full_pwrite (s->fd, sector, SECTOR, sec_off) == -1) {
    *err = errno;
    nbdkit_error ("overlay write at %" PRIu64 ": %m", sec_off);
    return -1;
  }
  return 0;
}

int
store_write (struct store *s, const void *buf, uint32_t count,
             uint64_t offset, below_read_fn below, void *opaque, int *err)
{
  const char *src = buf;
  uint64_t end = offset + count;
  uint64_t a0 = offset / SECTOR * SECTOR;            /* sectors touched */
  uint64_t a1 = (end + SECTOR - 1) / SECTOR * SECTOR;
  uint64_t m0 = (offset + SECTOR - 1) / SECTOR * SECTOR; /* whole ones */
  uint64_t m1 = end / SECTOR * SECTOR;
  uint64_t first = offset / s->block_size;
  uint64_t last = (end - 1) / s->block_size;
  bool zero = buf == NULL;
  int64_t delta = 0, reserved = 0;
  int r = -1;

  if (count == 0)
    return 0;
  lock_blocks (s, first, last, true);
  /* The partial first and last sectors are patched and hold data even
   * for a zero request; only the whole sectors between follow !zero. */
  if ((a0 < m0 && prepare_blocks (s, a0 / SECTOR, a0 / SECTOR + 1, true) == -1) ||
      (m1 < end && prepare_blocks (s, m1 / SECTOR, m1 / SECTOR + 1, true) == -1) ||
      (m0 < m1 && prepare_blocks (s, m0 / SECTOR, m1 / SECTOR, !zero) == -1)) {
    *err = ENOMEM;
    nbdkit_error ("overlay: out of memory");
    goto out;
  }

  /* Reserve the new data before writing anything: requests on other
   * stripes run concurrently, so the check and the reservation must be
   * one atomic step.  Zero and trim requests are never refused
   * (nbdkit-overlay-filter(1) promises it, and test-overlay.sh zeroes
   * part of a sector at the limit): the partial first and last
   * sectors they keep as data are counted afterwards, in delta. */
  if (s->limit && !zero) {
    uint64_t add = 0, have;

    if (m0 < m1)
      add += count_new_data (s, m0 / SECTOR, m1 / SECTOR);
    if (a0 < m0)                /* partial first sector */
      add += count_new_data (s, a0 / SECTOR, a0 / SECTOR + 1);
    if (m1 < end && m1 >= m0)   /* partial last sector, if another one */
      add += count_new_data (s, m1 / SECTOR, m1 / SECTOR + 1);
    have = __atomic_load_n (&s->data_sectors, __ATOMIC_RELAXED);

    do {
      if ((have + add) * SECTOR > s->limit) {
        nbdkit_error ("overlay size limit of %" PRIu64 " bytes reached",
                      s->limit);
        *err = ENOSPC;
        goto out;
      }
    } while (!__atomic_compare_exchange_n (&s->data_sectors, &have,
                                           have + add, false,
                                           __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED));
    reserved = add;
  }

  /* Partial first and last sectors: read, patch, write back. */
  if (m0 > m1) {                /* inside a single sector */
    if (patch_sector (s, a0, offset, end, src, below, opaque, err) == -1)
      goto out;
  }
  else {
    if (offset < m0 &&
        patch_sector (s, a0, offset, m0, src, below, opaque, err) == -1)
      goto out;
    if (m1 < end &&
        patch_sector (s, m1, m1, end, src ? src + (m1 - offset) : NULL,
                      below, opaque, err) == -1)
      goto out;
  }
  if (a0 < m0)
    delta += mark_sectors (s, a0 / SECTOR, m0 / SECTOR, true);
  if (m1 < a1 && m1 >= m0)
    delta += mark_sectors (s, m1 / SECTOR, a1 / SECTOR, true);

  /* Whole sectors: written straight from the client's buffer, or
   * punched out for zeros. */
  if (m0 < m1) {
    if (zero ? punch (s, m0, m1 - m0) == -1
             : full_pwrite (s->fd, src + (m0 - offset), m1 - m0, m0) == -1) {
      *err = errno;
      nbdkit_error ("overlay write at %" PRIu64 ": %m", m0);
      goto out;
    }
    delta += mark_sectors (s, m0 / SECTOR, m1 / SECTOR, !zero);
  }
  r = 0;

 out:
  /* What was marked, less what was reserved for it. */
  __atomic_add_fetch (&s->data_sectors, delta - reserved, __ATOMIC_RELAXED);
  lock_blocks (s, first, last, false);
  return r;
}

/* ------------------------------------------------------------ saving */

int
store_foreach_held (struct store *s, store_range_fn fn, void *opaque)
{
  uint64_t i;

  for (i = 0; i < s->n_blocks; i++) {
    uint64_t start = i * s->block_size;
    uint64_t len = start + s->block_size <= s->size ? s->block_size
                                                    : s->size - start;
    struct plan p = { NULL, 0, 0 };
    size_t k;
    int r = 0;
    bool empty;

    if (i % CHUNK_BLOCKS == 0 &&
        __atomic_load_n (&s->chunks[i / CHUNK_BLOCKS], __ATOMIC_ACQUIRE)
        == NULL) {
      i += CHUNK_BLOCKS - 1;    /* nothing written in the whole chunk */
      continue;
    }
    pthread_mutex_lock (stripe_of (s, i));
    empty = block_at (s, i) == NULL;
    pthread_mutex_unlock (stripe_of (s, i));
    if (empty)
      continue;
    if (make_plan (s, start, len, &p) == -1) {
      errno = ENOMEM;
      return -1;
    }
    for (k = 0; k < p.n && r == 0; k++)
      if (p.r[k].src != SRC_BELOW)
        r = fn (opaque, p.r[k].off, p.r[k].len, p.r[k].src);
    free (p.r);
    if (r == -1)
      return -1;
  }
  return 0;
}

int
store_pread_data (struct store *s, void *buf, uint32_t count,
                  uint64_t offset)
{
  return full_pread (s->fd, buf, count, offset);
}
