/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX back-end's writing: new blocks, the ZERO state,
 * and committing BAT entries and sector bitmaps through the log.
 *
 * CRASH SAFETY (the core's half, the order of data writes and the flush
 * protocol, is at the top of lib/write.c; the log's, at the top of
 * logwrite.c).
 *
 * 0. Opening for writing replays a pending log into the file (docs
 *    4.9: new FileWriteGuid, replay, sync, LogGuid 0), keeping the
 *    DataWriteGuid: the content is the one children were made against.
 *    Nothing else changes until the first write of a client.
 *
 * 1. The first change of a session (begin_write, called by the core
 *    before it writes anything) starts our log: an empty entry under a
 *    new LogGuid, synced, then one header update naming it, with a new
 *    FileWriteGuid and a new DataWriteGuid (the content is about to
 *    change: children of this file no longer match it, as MS-VHDX
 *    wants).  A session that only reads changes nothing.
 *
 * 2. New space is only ever taken at the end of the file (1 MiB
 *    aligned), by growing the file: it reads as zeros, and nothing in
 *    the file refers to it until a commit.  Space given up (ZERO) is
 *    never reused, so no crash can make old data appear in another
 *    block.  A new block is published in memory only after its data was
 *    written (core).
 *
 * 3. A differencing block that becomes PARTIALLY_PRESENT needs the
 *    sector bitmap block of its chunk.  When that is missing, the
 *    allocation first makes one: 1 MiB of new (zero) space, synced, and
 *    a log entry that sets only the bitmap block's BAT entry (the page
 *    as the file holds it, with that one entry changed): the bitmap
 *    block is durable before any entry that relies on it is committed.
 *
 * 4. Commit (the core's flush, data written before; the log lock keeps
 *    commits and step 3 apart):
 *      a. blocks whose bitmap is now full become FULLY_PRESENT;
 *      b. the dirty BAT pages are taken;
 *      c. fdatasync: every block they refer to is durable, and so is
 *         the file's size;
 *      d. the sector bitmap pages of the committed blocks are built: the
 *         bits of each PARTIALLY_PRESENT block from the core's snapshot
 *         when it describes that very allocation (same data offset),
 *         zeros for a block newly partial without one (the file may
 *         hold stale bits there: a clear bit shows the parent, as the
 *         unflushed write allows);
 *      e. bitmap pages, then BAT pages, go through the log
 *         (vhdx_log_pages).  When they need several entries, every
 *         prefix is consistent: bitmap bits of blocks not yet committed
 *         are not read, and a committed entry only ever points at
 *         durable data and (3) a durable bitmap block.
 *    On failure the pages are dirty again, and the log stays named in
 *    the header (a later open replays what was committed).
 *
 * 5. ZERO (whole blocks of a dynamic or differencing file): the entry
 *    becomes ZERO with offset 0 in memory (committed like any other),
 *    and the old data is punched out.  Until the commit the file still
 *    points at the old block: each sector reads old or zero, as an
 *    unflushed zero allows.  Fixed files keep their blocks (core writes
 *    zeros instead).
 *
 * 6. Close after a clean commit: LogGuid 0 (the log is empty).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "vhdx-format.h"

struct vhdx_writer {
  pthread_mutex_t log_lock;     /* the log, headers, commits */
  pthread_mutex_t alloc_lock;   /* file_end and the file's size */
  uint64_t file_end;            /* where the next new space goes */
  bool failed;                  /* a commit failed: keep the log */
};

static uint64_t
make_entry (uint64_t off, unsigned state)
{
  return off | state;
}

int
vhdx_writer_init (struct vhd_layer *l)
{
  struct vhdx_file *f = vhdx_file (l);
  struct vhdx_writer *w;

  if (vhdx_log_replay_into_file (f) == -1)
    return -1;
  w = calloc (1, sizeof *w);
  if (w == NULL) {
    vhd_error ("%s: %m", l->path);
    return -1;
  }
  pthread_mutex_init (&w->log_lock, NULL);
  pthread_mutex_init (&w->alloc_lock, NULL);
  w->file_end = ROUND_UP (MAX (l->file_size, f->data_end), VHDX_MiB);
  f->log.durable_size = l->file_size;
  f->w = w;
  return 0;
}

void
vhdx_writer_free (struct vhd_layer *l)
{
  struct vhdx_file *f = vhdx_file (l);
  struct vhdx_writer *w = f->w;

  if (w == NULL)
    return;
  pthread_mutex_lock (&w->log_lock);
  if (!w->failed && vhdx_log_end (f) == -1)
    vhd_warning ("%s: the log stays named in the header: the next open "
                 "replays it (harmless)", l->path);
  pthread_mutex_unlock (&w->log_lock);
  pthread_mutex_destroy (&w->log_lock);
  pthread_mutex_destroy (&w->alloc_lock);
  free (w);
  f->w = NULL;
}

/* Step 1. */
int
vhdx_begin_write (struct vhd_layer *l)
{
  struct vhdx_file *f = vhdx_file (l);
  uint8_t data_write[16];
  int r = 0;

  pthread_mutex_lock (&f->w->log_lock);
  if (!f->log.live) {
    if (f->new_data_id)
      memcpy (data_write, f->new_data_id, 16);
    else
      vhdx_guid_new (data_write);
    r = vhdx_log_begin (f, data_write);
  }
  pthread_mutex_unlock (&f->w->log_lock);
  return r;
}

/* Step 2: len bytes of new space at the end of the file. */
static int
grow (struct vhdx_file *f, uint64_t len, uint64_t *at)
{
  struct vhdx_writer *w = f->w;
  int r = 0;

  pthread_mutex_lock (&w->alloc_lock);
  *at = w->file_end;
  if (ftruncate (f->l.fd, w->file_end + len) == -1) {
    vhd_error ("%s: growing the file to %" PRIu64 " bytes: %m", f->l.path,
               w->file_end + len);
    r = -1;
  }
  else {
    w->file_end += len;
    f->data_end = w->file_end;
    __atomic_store_n (&f->l.file_size, w->file_end, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&w->alloc_lock);
  return r;
}

/* After a failed sync or write nothing more is committed: the kernel
 * may have dropped the failed pages (a later sync would then succeed
 * over lost data), and the file's BAT pages may lag the log.  The log
 * stays named, so the next open replays what was committed. */
static int
refuse_after_failure (struct vhdx_file *f)
{
  if (!f->w->failed)
    return 0;
  vhd_error ("%s: an earlier write or sync of this file failed: nothing "
             "more is committed in this session (the next open replays "
             "what was)", f->l.path);
  errno = EIO;
  return -1;
}

/* Step 3: the sector bitmap block of chunk, with the log lock held. */
static int
add_bitmap_block (struct vhdx_file *f, uint64_t chunk)
{
  uint64_t i = vhdx_sb_index (f, chunk), e, at, size;
  struct vhdx_page *p;
  int r = -1;

  if (refuse_after_failure (f) == -1)
    return -1;
  if (vhdx_bat_entry (f, i, &e) == -1)
    return -1;
  if (VHDX_SB_HELD (e))
    return 0;                   /* another writer made it meanwhile */
  p = malloc (sizeof *p);
  if (p == NULL) {
    vhd_error ("%s: %m", f->l.path);
    return -1;
  }
  p->off = f->bat_offset + ROUND_DOWN (i * 8, VHDX_LOG_PAGE);
  e = 0;
  if (grow (f, VHDX_MiB, &at) == -1)
    goto out;
  size = __atomic_load_n (&f->l.file_size, __ATOMIC_ACQUIRE);
  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    f->w->failed = true;
    goto out;
  }
  f->log.durable_size = size;
  if (full_pread (f->l.fd, p->data, VHDX_LOG_PAGE, p->off) == -1) {
    vhd_error ("%s: adding a sector bitmap block: %m", f->l.path);
    goto out;
  }
  e = make_entry (at, VHDX_SB_PRESENT);
  put_le64 (p->data + i * 8 % VHDX_LOG_PAGE, e);
  if (vhdx_log_pages (f, p, 1) == -1) {
    f->w->failed = true;
    goto out;
  }
  r = vhdx_bat_set (f, i, e, 0);
 out:
  free (p);
  return r;
}

int
vhdx_alloc_block (struct vhd_layer *l, uint32_t blk, uint64_t *data_off)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t e;

  if (vhdx_bat_entry (f, vhdx_payload_index (f, blk), &e) == -1)
    return -1;
  if (f->has_parent && VHDX_BAT_STATE (e) == VHDX_NOT_PRESENT) {
    int r;
    pthread_mutex_lock (&f->w->log_lock);
    r = add_bitmap_block (f, blk / f->chunk_ratio);
    pthread_mutex_unlock (&f->w->log_lock);
    if (r == -1)
      return -1;
  }
  return grow (f, l->block_size, data_off);
}

/* A block that showed its parent becomes PARTIALLY_PRESENT (bits say
 * which sectors are new); one that read as zeros (ZERO, UNMAPPED,
 * UNDEFINED, or any block without a parent) becomes FULLY_PRESENT: its
 * new space reads as zeros where not written, never as the parent
 * (pitfall 20). */
int
vhdx_publish (struct vhd_layer *l, uint32_t blk, uint64_t data_off)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t i = vhdx_payload_index (f, blk), e;
  bool partial;

  if (vhdx_bat_entry (f, i, &e) == -1)
    return -1;
  partial = f->has_parent && VHDX_BAT_STATE (e) == VHDX_NOT_PRESENT;
  return vhdx_bat_set (f, i, make_entry (data_off, partial
                                         ? VHDX_PARTIALLY_PRESENT
                                         : VHDX_FULLY_PRESENT),
                       VHDX_BAT_DIRTY | (partial ? VHDX_BAT_FRESH : 0));
}

int
vhdx_zero_block (struct vhd_layer *l, uint32_t blk)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t i = vhdx_payload_index (f, blk), e;

  if (f->leave_allocated)
    return 0;                   /* fixed: zeros are written in place */
  if (vhdx_bat_entry (f, i, &e) == -1 ||
      vhdx_bat_set (f, i, make_entry (0, VHDX_ZERO), VHDX_BAT_DIRTY) == -1)
    return -1;
  if ((VHDX_BAT_STATE (e) == VHDX_FULLY_PRESENT ||
       VHDX_BAT_STATE (e) == VHDX_PARTIALLY_PRESENT) &&
      fallocate (l->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 VHDX_BAT_OFFSET (e), l->block_size) == -1 &&
      errno != EOPNOTSUPP && errno != ENOSYS) {
    vhd_error ("%s: punching out block %u: %m", l->path, blk);
    return -1;
  }
  return 1;
}

/* ------------------------------------------------------------ commit */

static bool
all_set (const uint8_t *bitmap, uint32_t bytes)
{
  for (uint32_t k = 0; k < bytes; k++)
    if (bitmap[k] != 0xFF)
      return false;
  return true;
}

/* Step 4a. */
static int
promote_full_blocks (struct vhdx_file *f, const struct dirty_block *b,
                     size_t n)
{
  uint32_t bytes = layer_bitmap_bytes (&f->l);

  for (size_t k = 0; k < n; k++) {
    uint64_t i = vhdx_payload_index (f, b[k].blk), e;

    if (!all_set (b[k].bitmap, bytes))
      continue;
    /* Only if the entry is still that allocation: writers and zeroes
     * hold the block's lock, not ours. */
    e = make_entry (b[k].data_off, VHDX_PARTIALLY_PRESENT);
    if (vhdx_bat_replace (f, i, e, make_entry (b[k].data_off,
                                               VHDX_FULLY_PRESENT)) == -1)
      return -1;
  }
  return 0;
}

/* Sector bitmap pages being built (sorted by offset). */
struct sb_pages {
  struct vhdx_page *v;
  size_t n, cap;
};

static int
room_for_one (struct sb_pages *s)
{
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 16;
    struct vhdx_page *v = realloc (s->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    s->v = v;
    s->cap = cap;
  }
  return 0;
}

/* The page at off, read from the file the first time. */
static struct vhdx_page *
sb_page (struct vhdx_file *f, struct sb_pages *s, uint64_t off)
{
  size_t k;

  for (k = s->n; k > 0 && s->v[k - 1].off >= off; k--)
    if (s->v[k - 1].off == off)
      return &s->v[k - 1];
  if (room_for_one (s) == -1)
    return NULL;
  memmove (s->v + k + 1, s->v + k, (s->n - k) * sizeof *s->v);
  s->n++;
  s->v[k].off = off;
  if (full_pread (f->l.fd, s->v[k].data, VHDX_LOG_PAGE, off) == -1) {
    memmove (s->v + k, s->v + k + 1, (s->n - k - 1) * sizeof *s->v);
    s->n--;
    return NULL;
  }
  return &s->v[k];
}


/* Put blk's bits (MSB first, as the core keeps them; NULL: all clear)
 * into the bitmap pages, LSB first as the file keeps them. */
static int
put_bits (struct vhdx_file *f, struct sb_pages *s, uint32_t blk,
          const uint8_t *bitmap)
{
  uint32_t bytes = layer_bitmap_bytes (&f->l), k = 0;
  uint64_t chunk = blk / f->chunk_ratio, e, off;

  if (vhdx_bat_entry (f, vhdx_sb_index (f, chunk), &e) == -1)
    return -1;
  if (!VHDX_SB_HELD (e)) {     /* step 3 made it */
    vhd_error ("%s: internal error: block %u has no sector bitmap block",
               f->l.path, blk);
    errno = EIO;
    return -1;
  }
  off = VHDX_BAT_OFFSET (e) + (blk % f->chunk_ratio) * (uint64_t) bytes;
  while (k < bytes) {
    uint64_t page = ROUND_DOWN (off + k, VHDX_LOG_PAGE);
    uint32_t in = off + k - page;
    uint32_t m = MIN (bytes - k, VHDX_LOG_PAGE - in);
    struct vhdx_page *p = sb_page (f, s, page);

    if (p == NULL) {
      vhd_error ("%s: sector bitmap of block %u: %m", f->l.path, blk);
      return -1;
    }
    for (uint32_t j = 0; j < m; j++)
      p->data[in + j] = bitmap ? reverse_bits (bitmap[k + j]) : 0;
    k += m;
  }
  return 0;
}

/* The entry of payload block blk as it is being committed: from the
 * taken pages when one holds it, else as the file says. */
static int
committed_entry (struct vhdx_file *f, const struct vhdx_bat_page *t, size_t nt,
                 uint64_t i, uint64_t *e, bool *taken)
{
  uint64_t page = i / (VHDX_LOG_PAGE / 8);
  uint8_t buf[8];
  size_t lo = 0, hi = nt;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (t[mid].page < page)
      lo = mid + 1;
    else
      hi = mid;
  }
  *taken = lo < nt && t[lo].page == page;
  if (*taken) {
    *e = le64 (t[lo].data + i % (VHDX_LOG_PAGE / 8) * 8);
    return 0;
  }
  /* Not being committed: what the file holds (under the log lock, all
   * of the committed state), not memory, which may have moved on (a
   * block zeroed since the snapshot still has its old entry on disk,
   * and needs its bits). */
  if (full_pread (f->l.fd, buf, 8, f->bat_offset + i * 8) == -1) {
    vhd_error ("%s: reading BAT entry %" PRIu64 ": %m", f->l.path, i);
    return -1;
  }
  *e = le64 (buf);
  return 0;
}

static bool
payload_of_chunk_index (const struct vhdx_file *f, uint64_t i, uint32_t *blk)
{
  uint64_t r = f->chunk_ratio + (uint64_t) 1;

  if ((i + 1) % r == 0)
    return false;
  *blk = i - i / r;
  return true;
}

/* Step 4d. */
static int
build_bitmaps (struct vhdx_file *f, const struct dirty_block *b, size_t n,
               const struct vhdx_bat_page *t, size_t nt, struct sb_pages *s)
{
  size_t k;

  for (k = 0; k < n; k++) {
    uint64_t e;
    bool taken;
    if (committed_entry (f, t, nt, vhdx_payload_index (f, b[k].blk), &e,
                         &taken) == -1)
      return -1;
    if (VHDX_BAT_STATE (e) == VHDX_PARTIALLY_PRESENT &&
        VHDX_BAT_OFFSET (e) == b[k].data_off &&
        put_bits (f, s, b[k].blk, b[k].bitmap) == -1)
      return -1;
  }
  /* Newly partial blocks the snapshot does not describe: clear bits. */
  for (k = 0; k < nt; k++)
    for (uint32_t j = 0; j < VHDX_LOG_PAGE / 8; j++) {
      uint64_t i = t[k].page * (VHDX_LOG_PAGE / 8) + j;
      uint64_t e = le64 (t[k].data + 8 * j);
      uint32_t blk;
      bool described = false;

      if (!(t[k].fresh[j / 8] & (1 << (j % 8))) ||
          VHDX_BAT_STATE (e) != VHDX_PARTIALLY_PRESENT ||
          !payload_of_chunk_index (f, i, &blk))
        continue;
      for (size_t d = 0; d < n && !described; d++)
        described = b[d].blk == blk && b[d].data_off == VHDX_BAT_OFFSET (e);
      if (!described && put_bits (f, s, blk, NULL) == -1)
        return -1;
    }
  return 0;
}

int
vhdx_commit (struct vhd_layer *l, const struct dirty_block *b, size_t n)
{
  struct vhdx_file *f = vhdx_file (l);
  struct vhdx_writer *w = f->w;
  struct vhdx_bat_page *t = NULL;
  struct sb_pages s = { NULL, 0, 0 };
  size_t nt = 0, k;
  uint64_t size;
  int r = -1;

  pthread_mutex_lock (&w->log_lock);
  if (refuse_after_failure (f) == -1)
    goto out;
  if (f->has_parent && promote_full_blocks (f, b, n) == -1)
    goto out;
  if (vhdx_bat_take_dirty (f, &t, &nt) == -1)
    goto out;
  size = __atomic_load_n (&l->file_size, __ATOMIC_ACQUIRE);
  if (fdatasync (l->fd) == -1) {
    vhd_error ("%s: fdatasync: %m", l->path);
    w->failed = true;
    goto fail;
  }
  f->log.durable_size = size;
  /* Bits of blocks whose entries do not change (more sectors of a
   * partial block) are committed too. */
  if (f->has_parent && build_bitmaps (f, b, n, t, nt, &s) == -1)
    goto fail;
  /* Bitmaps first, then the table (step 4e). */
  for (k = 0; k < nt; k++) {
    if (room_for_one (&s) == -1) {
      vhd_error ("%s: flush: %m", l->path);
      goto fail;
    }
    s.v[s.n].off = f->bat_offset + t[k].page * VHDX_LOG_PAGE;
    memcpy (s.v[s.n++].data, t[k].data, VHDX_LOG_PAGE);
  }
  if (s.n > 0 && vhdx_log_pages (f, s.v, s.n) == -1) {
    w->failed = true;
    goto fail;
  }
  vhdx_bat_applied (f);
  r = 0;
  goto out;

 fail:
  vhdx_bat_retake (f, t, nt);
 out:
  pthread_mutex_unlock (&w->log_lock);
  free (t);
  free (s.v);
  return r;
}

/* compact.c cut the file to size (everything past it unreferenced):
 * new space starts there again. */
void
vhdx_writer_truncated (struct vhd_layer *l, uint64_t size)
{
  struct vhdx_file *f = vhdx_file (l);

  pthread_mutex_lock (&f->w->alloc_lock);
  f->w->file_end = size;
  f->data_end = size;
  __atomic_store_n (&l->file_size, size, __ATOMIC_RELEASE);
  f->log.durable_size = size;
  pthread_mutex_unlock (&f->w->alloc_lock);
}

/* compact.c: start a log keeping the DataWriteGuid (begin), or end it
 * once every entry is applied (!begin), under the log lock. */
int
vhdx_writer_log (struct vhd_layer *l, bool begin)
{
  struct vhdx_file *f = vhdx_file (l);
  int r = 0;

  pthread_mutex_lock (&f->w->log_lock);
  if (begin && !f->log.live)
    r = vhdx_log_begin (f, NULL);       /* NULL: DataWriteGuid kept */
  else if (!begin)
    r = vhdx_log_end (f);
  pthread_mutex_unlock (&f->w->log_lock);
  return r;
}
