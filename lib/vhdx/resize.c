/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: resizing a VHDX file (vhdtool resize, Resize-VHD; the
 * rules are lib/resize.c's) and its minimum size (info).
 *
 * What changes: the Virtual Disk Size metadata item, and the BAT
 * entries between the old and the new entry count (the count follows
 * the size; chunk_ratio does not, so no existing entry moves).  Growing
 * writes the new entries NOT_PRESENT (fixed: FULLY_PRESENT, pointing at
 * new space); shrinking writes the dropped ones NOT_PRESENT (they hold
 * only zeros: a disk never shrinks below its minimum size).  The BAT
 * region is not moved: a size its region cannot cover is refused (the
 * region is a whole number of MiB, room for far more than the disk
 * needs at the default block sizes).
 *
 * The minimum size: the end of the last logical sector holding
 * non-zero data in this file: the last allocated block found in the
 * BAT, then read backwards (file holes skipped with SEEK_DATA).  Not
 * Hyper-V's MinimumSize, which comes from the partition table.
 *
 * CRASH SAFETY.  Steps (named for the kill test, each durable before
 * the next):
 *   0. A pending log is replayed into the file first (logwrite.c).
 *   1. "log-begun": vhdx_log_begin: a new FileWriteGuid (before any
 *      other write of the session, as MS-VHDX wants: (2) and (3) write
 *      too) and a new DataWriteGuid (a resize is a user-visible change:
 *      MS-VHDX 2.2.2; children of this file are orphaned, as they would
 *      be by Hyper-V).  Still the old disk.
 *   2. "space-added" (fixed grow): the file is extended for the new
 *      blocks, at the first MiB past every referenced structure, and
 *      synced.  Unreferenced space: still the old disk.  A re-run puts
 *      them at the same place (space past every referenced structure
 *      is never in use), so an interrupted attempt leaks nothing.
 *   3. "tail-zeroed" (grow): bytes of the old last block past the old
 *      size, if that block is allocated, are zeroed and synced: they
 *      are past the old disk's end (invisible), and must read as zeros
 *      in the new one.
 *   4. "size-logged": the BAT pages and the metadata page holding the
 *      size, through the log (vhdx_log_pages): each entry durable before
 *      its pages are written in place.  They may take several entries,
 *      each a consistent state: growing, the BAT pages go first (entries
 *      past the old count are ignored by every reader: the old disk) and
 *      the size last; shrinking, the size first (the new, smaller disk,
 *      which no longer looks at the dropped entries) and then those
 *      entries.  A crash before the entry with the size is durable: the
 *      old disk; after: the new one (replayed by any reader).
 *   5. "log-ended": the clean end of the log (LogGuid 0).
 *   6. "truncated" (shrink): a fixed file whose dropped blocks were at
 *      its end is cut back to the end of its last referenced
 *      structure: those blocks are referenced by nothing any more.
 * A re-run finds the size already right after (4) and redoes (5) and
 * (6); before (4), it starts again.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "vhdx-format.h"

#define SCAN_CHUNK VHDX_MiB

static void
step_at (vhd_step_fn step, void *opaque, const char *name)
{
  if (step)
    step (opaque, name);
}

/* BAT entries covering a disk of size bytes. */
static uint64_t
entries_for (const struct vhdx_file *f, uint64_t size)
{
  uint64_t payload = (size + f->block_size - 1) / f->block_size;
  uint64_t sb = (payload + f->chunk_ratio - 1) / f->chunk_ratio;

  return f->has_parent ? sb * (f->chunk_ratio + 1)
                       : payload + (payload - 1) / f->chunk_ratio;
}

static bool
is_payload_index (const struct vhdx_file *f, uint64_t i)
{
  return (i + 1) % (f->chunk_ratio + 1) != 0;
}

/* ------------------------------------------------------------ minimum */

/* The end (relative to off) of the last non-zero byte of [off,
 * off+len), 0 if all zero; -1 on error.  *left: bytes it may still
 * read (UINT64_MAX: no limit); once spent, 1 with *end where the scan
 * stopped (nothing past it is non-zero). */
static int
last_nonzero (struct vhdx_file *f, uint8_t *buf, uint64_t off, uint64_t len,
              uint64_t *left, uint64_t *end)
{
  uint64_t ce = len;

  while (ce > 0) {
    uint64_t cs = ce > SCAN_CHUNK ? ce - SCAN_CHUNK : 0;
    off_t d = lseek (f->l.fd, off + cs, SEEK_DATA);
    size_t k;

    if ((d == -1 && errno == ENXIO) ||
        (d != -1 && (uint64_t) d >= off + ce)) {
      ce = cs;                  /* a hole: zeros */
      continue;
    }
    if (*left < ce - cs) {
      *end = ce;
      return 1;
    }
    *left -= ce - cs;
    if (vhdx_pread (f, buf, ce - cs, off + cs) == -1) {
      vhd_error ("%s: reading offset %" PRIu64 ": %m", f->l.path, off + cs);
      return -1;
    }
    for (k = ce - cs; k > 0; k--)
      if (buf[k - 1] != 0) {
        *end = cs + k;
        return 0;
      }
    ce = cs;
  }
  *end = 0;
  return 0;
}

int
vhdx_minimum_size (struct vhd_layer *l, uint64_t budget, uint64_t *min)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t left = budget ? budget : UINT64_MAX;
  uint8_t *buf;
  uint64_t e, end;
  uint32_t blk;
  int r = -1, k;

  if (f->has_parent) {
    *min = l->size;
    return 0;
  }
  buf = malloc (SCAN_CHUNK);
  if (buf == NULL) {
    vhd_error ("%s: %m", l->path);
    return -1;
  }
  *min = 0;
  for (blk = l->n_blocks; blk-- > 0; ) {
    uint64_t start = (uint64_t) blk * f->block_size;
    unsigned s;

    if (vhdx_bat_entry (f, vhdx_payload_index (f, blk), &e) == -1)
      goto out;
    s = VHDX_BAT_STATE (e);
    if (s != VHDX_FULLY_PRESENT && s != VHDX_PARTIALLY_PRESENT)
      continue;
    k = last_nonzero (f, buf, VHDX_BAT_OFFSET (e),
                      MIN (f->block_size, l->size - start), &left, &end);
    if (k == -1)
      goto out;
    if (end > 0) {
      *min = ROUND_UP (start + end, l->sector_size);
      r = k;                    /* 1: a bound, the budget spent */
      goto out;
    }
  }
  r = 0;
 out:
  free (buf);
  return r;
}

/* ------------------------------------------------------------ resize */

/* The end of every structure the file references, counting BAT
 * entries [0, limit): past it the file holds nothing in use. */
static int
used_end (struct vhdx_file *f, uint64_t limit, uint64_t *out)
{
  const struct vhdx_header *h = &f->hdr[f->current];
  uint64_t end = VHDX_HEADER_SECTION, i, e;
  uint32_t k;

  end = MAX (end, h->log_offset + h->log_length);
  for (k = 0; k < f->n_regions; k++)
    end = MAX (end, f->regions[k].offset + f->regions[k].length);
  for (i = 0; i < limit; i++) {
    if (vhdx_bat_entry (f, i, &e) == -1)
      return -1;
    if (VHDX_BAT_OFFSET (e) != 0)
      end = MAX (end, VHDX_BAT_OFFSET (e) +
                 (is_payload_index (f, i) ? f->block_size : VHDX_MiB));
  }
  *out = ROUND_UP (end, VHDX_MiB);
  return 0;
}

/* Step 1: n new blocks at *at, durable. */
static int
add_space (struct vhdx_file *f, uint64_t n, uint64_t *at)
{
  uint64_t size;

  if (used_end (f, f->bat_entries, at) == -1)
    return -1;
  size = *at + n * f->block_size;
  /* The file may go on past every referenced structure (space a
   * preallocating writer left): whatever lies there must read as zeros
   * in the new blocks. */
  if (f->l.file_size > *at &&
      zero_file_range (f->l.fd, *at, MIN (f->l.file_size, size) - *at) == -1) {
    vhd_error ("%s: zeroing the space for the new blocks: %m", f->l.path);
    return -1;
  }
  if (size > f->l.file_size && ftruncate (f->l.fd, size) == -1) {
    vhd_error ("%s: growing the file to %" PRIu64 " bytes: %m", f->l.path,
               size);
    return -1;
  }
  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    return -1;
  }
  f->l.file_size = MAX (f->l.file_size, size);
  f->data_end = MAX (f->data_end, size);
  f->log.durable_size = f->l.file_size;
  return 0;
}

/* Step 2. */
static int
zero_tail (struct vhdx_file *f)
{
  static const uint8_t zeros[65536];
  uint64_t e, rel = f->l.size % f->block_size, off;
  unsigned s;

  if (rel == 0)
    return 0;
  if (vhdx_bat_entry (f, vhdx_payload_index (f, f->l.n_blocks - 1), &e) == -1)
    return -1;
  s = VHDX_BAT_STATE (e);
  if (s != VHDX_FULLY_PRESENT && s != VHDX_PARTIALLY_PRESENT)
    return 0;
  for (off = rel; off < f->block_size; ) {
    size_t n = MIN (f->block_size - off, sizeof zeros);
    if (full_pwrite (f->l.fd, zeros, n, VHDX_BAT_OFFSET (e) + off) == -1) {
      vhd_error ("%s: zeroing the last block past the old size: %m",
                 f->l.path);
      return -1;
    }
    off += n;
  }
  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    return -1;
  }
  return 0;
}

/* Append the BAT pages with entries [from, to) set: fixed growth
 * (space != 0) gives new payload block k (from payload index first)
 * the k-th block of the space, everything else is NOT_PRESENT. */
static int
bat_pages (struct vhdx_file *f, uint64_t from, uint64_t to, uint64_t space,
           struct vhdx_page *p, size_t *n)
{
  const uint64_t per = VHDX_LOG_PAGE / 8;
  uint64_t page, i, k = 0;

  for (page = from / per; page * per < to; page++) {
    struct vhdx_page *pg = &p[(*n)++];
    pg->off = f->bat_offset + page * VHDX_LOG_PAGE;
    if (vhdx_pread (f, pg->data, VHDX_LOG_PAGE, pg->off) == -1) {
      vhd_error ("%s: reading the BAT: %m", f->l.path);
      return -1;
    }
    for (i = MAX (from, page * per); i < MIN (to, (page + 1) * per); i++) {
      uint64_t e = 0;
      if (space && is_payload_index (f, i))
        e = (space + k++ * f->block_size) | VHDX_FULLY_PRESENT;
      put_le64 (pg->data + (i % per) * 8, e);
    }
  }
  return 0;
}

/* The metadata page with the size item, set to size. */
static int
size_page (struct vhdx_file *f, uint64_t size, struct vhdx_page *p)
{
  uint64_t at = 0;
  uint32_t k;

  for (k = 0; k < f->n_items; k++)
    if (!(f->items[k].flags & VHDX_ITEM_USER) &&
        memcmp (f->items[k].guid, vhdx_item_disk_size, 16) == 0)
      at = f->meta_offset + f->items[k].offset;
  if (at == 0) {
    vhd_error ("%s: no virtual disk size item", f->l.path);
    errno = EINVAL;
    return -1;
  }
  p->off = ROUND_DOWN (at, VHDX_LOG_PAGE);
  if (at + 8 > p->off + VHDX_LOG_PAGE) {
    vhd_error ("%s: the virtual disk size item straddles two pages",
               f->l.path);
    errno = ENOTSUP;
    return -1;
  }
  if (vhdx_pread (f, p->data, VHDX_LOG_PAGE, p->off) == -1) {
    vhd_error ("%s: reading the metadata region: %m", f->l.path);
    return -1;
  }
  put_le64 (p->data + (at - p->off), size);
  return 0;
}

/* Step 6. */
static int
truncate_unused (struct vhdx_file *f, uint64_t end, vhd_step_fn step,
                 void *opaque)
{
  if (!f->leave_allocated || end >= f->l.file_size)
    return 0;
  if (ftruncate (f->l.fd, end) == -1 || fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: cutting the file back to %" PRIu64 " bytes: %m",
               f->l.path, end);
    return -1;
  }
  f->l.file_size = f->data_end = end;
  step_at (step, opaque, "truncated");
  return 0;
}

int
vhdx_resize_layer (struct vhd_layer *l, uint64_t size, vhd_step_fn step,
                   void *opaque)
{
  struct vhdx_file *f = vhdx_file (l);
  uint64_t old = f->bat_entries, want = entries_for (f, size);
  uint64_t per = VHDX_LOG_PAGE / 8, space = 0, end;
  struct vhdx_page *p = NULL;
  uint8_t data_write[16];
  size_t n = 0;
  int r = -1;

  if (size > VHDX_MAX_SIZE) {
    vhd_error ("%s: cannot grow to %" PRIu64 " bytes: a VHDX holds at most "
               "64 TiB", l->path, size);
    errno = EINVAL;
    return -1;
  }
  if (want * 8 > f->bat_length) {
    vhd_error ("%s: cannot grow to %" PRIu64 " bytes: its BAT region (%u "
               "bytes) holds %u entries, and %" PRIu64 " are needed; moving "
               "the BAT is not supported (convert the disk to a new file of "
               "the size wanted instead)", l->path, size, f->bat_length,
               f->bat_length / 8, want);
    errno = ENOTSUP;
    return -1;
  }
  if (vhdx_log_replay_into_file (f) == -1)
    return -1;
  if (size == l->size) {
    /* Nothing to change, or an interrupted resize whose size reached
     * the file: finish it. */
    if (used_end (f, f->bat_entries, &end) == -1)
      return -1;
    return truncate_unused (f, end, step, opaque);
  }
  p = calloc (2 + (MAX (old, want) - MIN (old, want)) / per + 1, sizeof *p);
  if (p == NULL) {
    vhd_error ("%s: %m", l->path);
    return -1;
  }
  vhdx_guid_new (data_write);
  if (vhdx_log_begin (f, data_write) == -1)
    goto out;
  step_at (step, opaque, "log-begun");
  if (size > l->size) {
    uint64_t grown = (size + f->block_size - 1) / f->block_size - l->n_blocks;
    if (f->leave_allocated && grown > 0) {
      if (add_space (f, grown, &space) == -1)
        goto out;
      step_at (step, opaque, "space-added");
    }
    if (zero_tail (f) == -1)
      goto out;
    step_at (step, opaque, "tail-zeroed");
    if (bat_pages (f, old, want, space, p, &n) == -1 ||
        size_page (f, size, &p[n++]) == -1)
      goto out;
    end = 0;
  }
  else {
    if (used_end (f, want, &end) == -1 ||
        size_page (f, size, &p[n++]) == -1 ||
        bat_pages (f, want, old, 0, p, &n) == -1)
      goto out;
  }
  if (vhdx_log_pages (f, p, n) == -1)
    goto out;
  step_at (step, opaque, "size-logged");
  if (vhdx_log_end (f) == -1)
    goto out;
  step_at (step, opaque, "log-ended");
  if (end && truncate_unused (f, end, step, opaque) == -1)
    goto out;
  r = 0;
 out:
  free (p);
  return r;
}
