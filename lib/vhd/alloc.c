/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHD back-end's writing: placing new space at the end
 * of the file, and committing bitmaps and BAT sectors.
 *
 * CRASH SAFETY (the core's half, the order of data writes and the flush
 * protocol, is at the top of write.c).
 *
 * 1. Growing the file (vhd_grow: new blocks here, moved parent locators
 *    in reparent.c; the only code that moves the footer):
 *      a. write the footer at the new end of file, after the new space;
 *      b. zero the old footer's bytes (the new space, or unreferenced
 *         space before it, covers its place);
 *      c. the caller writes into the new space.
 *    A kill after (a) leaves two valid footers; after (b) or (c) the
 *    new footer is the EOF footer and the new space is unreferenced:
 *    the file opens with exactly its old content, and the next growth
 *    starts after that space, never inside it.  The new space lies past
 *    every piece of metadata and data (and past the old footer), so
 *    nothing referenced is ever overwritten.  Power loss may lose the
 *    footer of (a) while (b) reached the disk, leaving no valid footer
 *    at end of file: the copy at offset 0 is identical (growth never
 *    changes footer contents), the opener falls back to it, and the
 *    next writable open puts a footer back at the end (writer_init).
 *
 * 2. A new block is placed by (1) but its BAT entry and bitmap are
 *    written only by a commit: until then the file does not reference
 *    it.  (Its bitmap, in space that was past the end of the file or
 *    zeroed in 1b, reads as all zero: "not here".)
 *
 * 3. Commit (called by the core's flush, after the data it covers was
 *    written):
 *      a. snapshot the dirty BAT sectors (every entry in them belongs
 *         to a block whose data was written before it was published);
 *      b. fdatasync: that data is durable;
 *      c. write the bitmaps, then the BAT sectors: data and bitmap are
 *         durable before any BAT entry points at them;
 *      d. fdatasync.
 *    A crash between (c) and (d) can persist any subset of these
 *    writes; each covers whole sectors and each subset describes
 *    durable data only.  A BAT entry reaching the disk before its
 *    bitmap points at a bitmap that is still all zero.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "vhd-format.h"

struct vhd_bat_dirty {
  pthread_mutex_t lock;
  uint8_t *sectors;             /* one byte per BAT sector */
  size_t n_sectors;
};

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
  if (full_pwrite (f->l.fd, buf, sizeof buf, off) == -1) {
    vhd_error ("%s: writing footer at offset %" PRIu64 ": %m", f->l.path,
               off);
    return -1;
  }
  return 0;
}

int
vhd_grow (struct vhd_file *f, uint64_t at, uint64_t len,
          vhd_step_fn step, void *opaque)
{
  static const uint8_t zeros[VHD_FOOTER_SIZE];
  uint64_t new_footer = at + len;

  if (at < f->footer_offset) {         /* would overwrite the footer */
    vhd_error ("%s: internal error: new space inside the file", f->l.path);
    errno = EINVAL;
    return -1;
  }
  if (new_footer / VHD_SECTOR > UINT32_MAX) {
    vhd_error ("%s: file cannot grow further: block sector numbers are "
               "32 bits", f->l.path);
    errno = ENOSPC;
    return -1;
  }
  if (write_footer_at (f, new_footer) == -1)
    return -1;
  if (step)
    step (opaque, "footer-moved");
  /* 1b.  Only the footer's bytes: past them is unreferenced space. */
  if (f->l.file_size > f->footer_offset &&
      full_pwrite (f->l.fd, zeros, MIN (f->l.file_size - f->footer_offset,
                                        sizeof zeros),
                   f->footer_offset) == -1) {
    vhd_error ("%s: clearing old footer: %m", f->l.path);
    return -1;
  }
  f->footer_offset = new_footer;
  f->l.file_size = new_footer + VHD_FOOTER_SIZE;
  f->footer_from_copy = false;
  return 0;
}

int
vhd_file_writer_init (struct vhd_layer *l)
{
  struct vhd_file *f = vhd_file (l);

  if (f->type == VHD_TYPE_FIXED)
    return 0;
  if (f->footer_from_copy) {
    /* Repair what a power loss while growing can leave (see the top of
     * this file): put a footer back at the end. */
    uint64_t at = ROUND_UP (f->l.file_size, VHD_SECTOR);
    if (write_footer_at (f, at) == -1 || fdatasync (f->l.fd) == -1)
      return -1;
    f->footer_offset = at;
    f->l.file_size = at + VHD_FOOTER_SIZE;
    f->footer_from_copy = false;
    vhd_warning ("%s: rewrote the missing footer at end of file", f->l.path);
  }
  else if (f->footer_copy_differs) {
    /* The copy at 0 is what the opener falls back to when a power loss
     * while growing (1) takes the end's footer: it must be the same.
     * A resize killed between its two footer writes (resize.c), or
     * tapdisk, leaves it stale. */
    if (write_footer_at (f, 0) == -1 || fdatasync (f->l.fd) == -1)
      return -1;
    f->footer_copy_differs = false;
  }
  /* Writers need the whole table in memory (publish, commit). */
  if (vhd_bat_load_table (f) == -1)
    return -1;
  f->dirty = calloc (1, sizeof *f->dirty);
  if (f->dirty == NULL)
    goto nomem;
  pthread_mutex_init (&f->dirty->lock, NULL);
  pthread_mutex_init (&f->alloc_lock, NULL);
  f->dirty->n_sectors = ROUND_UP (f->bat_loaded * 4, VHD_SECTOR) / VHD_SECTOR;
  f->dirty->sectors = calloc (f->dirty->n_sectors + 1, 1);
  if (f->dirty->sectors == NULL)
    goto nomem;
  return 0;

 nomem:
  vhd_error ("%s: %m", f->l.path);
  return -1;
}

void
vhd_file_writer_free (struct vhd_layer *l)
{
  struct vhd_file *f = vhd_file (l);

  if (f->dirty == NULL)
    return;
  pthread_mutex_destroy (&f->dirty->lock);
  pthread_mutex_destroy (&f->alloc_lock);
  free (f->dirty->sectors);
  free (f->dirty);
  f->dirty = NULL;
}

/* 1 and 2: a new block for blk, at the end of the file. */
int
vhd_file_alloc_block (struct vhd_layer *l, uint32_t blk, uint64_t *data_off)
{
  struct vhd_file *f = vhd_file (l);
  uint64_t at;
  int r;

  pthread_mutex_lock (&f->alloc_lock);
  at = vhd_next_free (f);
  r = vhd_grow (f, at, f->bitmap_bytes + f->l.block_size, NULL, NULL);
  if (r == 0) {
    f->data_end = at + f->bitmap_bytes + f->l.block_size;
    *data_off = at + f->bitmap_bytes;
  }
  pthread_mutex_unlock (&f->alloc_lock);
  return r;
}

void
vhd_file_set_entry (struct vhd_file *f, uint32_t blk, uint32_t entry)
{
  bat_set (f, blk, entry);
  pthread_mutex_lock (&f->dirty->lock);
  f->dirty->sectors[blk / (VHD_SECTOR / 4)] = 1;
  pthread_mutex_unlock (&f->dirty->lock);
}

int
vhd_file_publish (struct vhd_layer *l, uint32_t blk, uint64_t data_off)
{
  struct vhd_file *f = vhd_file (l);

  vhd_file_set_entry (f, blk, (data_off - f->bitmap_bytes) / VHD_SECTOR);
  return 0;
}

/* 3a: the dirty BAT sectors, encoded now. */
static uint8_t *
take_bat (struct vhd_file *f, uint8_t **taken)
{
  struct vhd_bat_dirty *d = f->dirty;
  uint8_t *data;
  size_t i, j;

  *taken = calloc (d->n_sectors + 1, 1);
  data = malloc (d->n_sectors * VHD_SECTOR + 1);
  if (*taken == NULL || data == NULL) {
    free (*taken);
    free (data);
    *taken = NULL;
    return NULL;
  }
  pthread_mutex_lock (&d->lock);
  memcpy (*taken, d->sectors, d->n_sectors);
  memset (d->sectors, 0, d->n_sectors);
  pthread_mutex_unlock (&d->lock);
  for (i = 0; i < d->n_sectors; i++) {
    uint8_t *sector = data + i * VHD_SECTOR;
    if (!(*taken)[i])
      continue;
    for (j = 0; j < VHD_SECTOR / 4; j++) {
      uint64_t idx = i * (VHD_SECTOR / 4) + j;
      /* Past the last entry the BAT sector is 0xFF padding. */
      put_be32 (sector + 4 * j, idx < f->bat_loaded ? bat_get (f, idx)
                                                    : VHD_BAT_UNUSED);
    }
  }
  return data;
}

/* 3c. */
static int
write_metadata (struct vhd_file *f, const struct dirty_block *b, size_t n,
                const uint8_t *taken, const uint8_t *bat)
{
  uint32_t bits = layer_bitmap_bytes (&f->l);
  uint8_t *buf = calloc (1, f->bitmap_bytes);
  size_t i;

  if (buf == NULL)
    return -1;
  for (i = 0; i < n; i++) {
    /* Bits past the block's sectors, up to the sector's end, are 0. */
    memcpy (buf, b[i].bitmap, bits);
    if (full_pwrite (f->l.fd, buf, f->bitmap_bytes,
                     b[i].data_off - f->bitmap_bytes) == -1) {
      vhd_error ("%s: writing bitmap of block %u: %m", f->l.path, b[i].blk);
      free (buf);
      return -1;
    }
  }
  free (buf);
  for (i = 0; i < f->dirty->n_sectors; i++)
    if (taken[i] &&
        full_pwrite (f->l.fd, bat + i * VHD_SECTOR, VHD_SECTOR,
                     f->header.table_offset + i * VHD_SECTOR) == -1) {
      vhd_error ("%s: writing BAT: %m", f->l.path);
      return -1;
    }
  return 0;
}

int
vhd_file_commit (struct vhd_layer *l, const struct dirty_block *b, size_t n)
{
  struct vhd_file *f = vhd_file (l);
  uint8_t *taken = NULL, *bat = NULL;
  size_t i;
  int r = -1;

  if (f->type == VHD_TYPE_FIXED) {
    if (fdatasync (f->l.fd) == -1) {
      vhd_error ("%s: fdatasync: %m", f->l.path);
      return -1;
    }
    return 0;
  }
  if ((bat = take_bat (f, &taken)) == NULL) {
    vhd_error ("%s: flush: %m", f->l.path);
    return -1;
  }
  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    goto out;
  }
  if (write_metadata (f, b, n, taken, bat) == -1)
    goto out;
  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    goto out;
  }
  r = 0;
 out:
  if (r == -1) {
    /* Everything taken stays to be written by the next commit. */
    pthread_mutex_lock (&f->dirty->lock);
    for (i = 0; i < f->dirty->n_sectors; i++)
      f->dirty->sectors[i] |= taken[i];
    pthread_mutex_unlock (&f->dirty->lock);
  }
  free (taken);
  free (bat);
  return r;
}
