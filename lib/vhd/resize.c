/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: growing a VHD file (vhdtool resize; the rules, and why a
 * VHD never shrinks and a differencing VHD is refused, are in
 * lib/resize.c).
 *
 * CRASH SAFETY.  Every write below is followed by an fdatasync before
 * the next one depends on it, and each step is named (vhd_step_fn)
 * for the kill test.  Every state between steps opens as exactly the
 * old disk or exactly the new one (new space reading as zeros), and a
 * re-run of the same resize, which redoes each step idempotently from
 * what it finds, finishes it.
 *
 * Fixed disk (the guest's bytes are the file's; the footer follows
 * them; the reader accepts a footer anywhere at or past the size the
 * footer states):
 *   1. "footer-copied": the OLD footer is written at the new size (the
 *      file grows; the gap reads as zeros).  Now the EOF footer is that
 *      copy: the disk is the old one, its old footer's bytes are
 *      unreferenced.  Skipped when the footer is already at or past the
 *      new size (a re-run).
 *   2. "old-footer-zeroed": bytes [old size, footer) become zeros (a
 *      hole punched, or zeros written): the old footer and anything
 *      between it and the new footer.  Still the old disk.
 *   3. "footer-written": the new footer (current and original size, CHS
 *      geometry, checksum)
 *      replaces the copy, one sector: the new disk, whose new part is
 *      the zeros of (1) and (2).
 *
 * Dynamic disk (footer at EOF and its copy at 0, dynamic header, BAT of
 * max_table_entries 32-bit entries, blocks anywhere after it):
 *   1. Only when the BAT must cover more entries than it holds: the
 *      table grows in place, into the space after it.  A footer lying
 *      there moves past the new end of the table first (alloc.c's
 *      protocol, "footer-moved"), so that nothing new lands there.
 *      Blocks lying there are moved, one at a time ("block-moved"): new space
 *      at EOF by the growth protocol of alloc.c ("footer-moved"), the
 *      block's bitmap and data copied there and synced, then the one
 *      BAT sector holding its entry rewritten and synced.  Before that
 *      write the old copy is referenced, after it the new one, both
 *      identical: the disk never changes.  (A kill before the entry is
 *      written leaves unreferenced space, as an interrupted allocation
 *      does.)  A parent locator or other metadata in the way: refused.
 *   2. "bat-extended": entries past max_table_entries, up to the new
 *      count, are written unused (0xFFFFFFFF).  Readers do not look past
 *      max_table_entries: still the old disk.
 *   3. "header-written": the dynamic header's max_table_entries (and
 *      checksum: both in its first sector, one sector write).  A BAT
 *      larger than the disk needs is legal: still the old disk.
 *   3b. Entries from the old block count to the new one are made unused
 *      and the old last block's bitmap bits past the old end cleared
 *      (clear_new_space): all invisible until the size changes.
 *   4. "footer-written": the footer at EOF gets the new size and
 *      geometry: the new disk (the reader uses the EOF footer; a copy
 *      at 0 that differs is only noted).  New blocks are unused: zeros.
 *   5. "footer-copy-written": the copy at offset 0, the same bytes.
 * A re-run finds the BAT large enough (steps 1-3 done) or not (redone:
 * rewriting unused entries past the count is harmless), and rewrites
 * the footers when they differ from the new ones.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "vhd-format.h"

static int
sync_fd (struct vhd_file *f)
{
  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    return -1;
  }
  return 0;
}

static void
step_at (vhd_step_fn step, void *opaque, const char *name)
{
  if (step)
    step (opaque, name);
}

/* The footer f would have at size bytes. */
static void
new_footer (const struct vhd_file *f, uint64_t size,
            uint8_t buf[VHD_FOOTER_SIZE])
{
  struct vhd_footer ft = f->footer;

  /* Both sizes, as Hyper-V's Resize-VHD: libvhdi reports the
   * original size as the disk's. */
  ft.original_size = ft.current_size = size;
  vhd_chs (size, &ft.cylinders, &ft.heads, &ft.sectors_per_track);
  vhd_footer_encode (&ft, buf);
}

/* Make [off, off+len) read as zeros (zero_file_range). */
static int
zero_range (struct vhd_file *f, uint64_t off, uint64_t len)
{
  if (zero_file_range (f->l.fd, off, len) == -1) {
    vhd_error ("%s: zeroing offset %" PRIu64 ": %m", f->l.path, off);
    return -1;
  }
  return 0;
}

static int
write_at (struct vhd_file *f, const void *buf, size_t n, uint64_t off,
          const char *what)
{
  if (full_pwrite (f->l.fd, buf, n, off) == -1) {
    vhd_error ("%s: writing the %s at offset %" PRIu64 ": %m", f->l.path,
               what, off);
    return -1;
  }
  return sync_fd (f);
}

static int
grow_fixed (struct vhd_file *f, uint64_t size, vhd_step_fn step,
            void *opaque)
{
  uint8_t buf[VHD_FOOTER_SIZE];
  uint64_t at = f->footer_offset;

  if (size == f->l.size)
    return 0;
  if (at < size) {
    vhd_file_footer_bytes (f, buf);
    if (write_at (f, buf, sizeof buf, size, "footer copy") == -1)
      return -1;
    at = size;
    step_at (step, opaque, "footer-copied");
  }
  if (zero_range (f, f->l.size, at - f->l.size) == -1 || sync_fd (f) == -1)
    return -1;
  step_at (step, opaque, "old-footer-zeroed");
  new_footer (f, size, buf);
  if (write_at (f, buf, sizeof buf, at, "footer") == -1)
    return -1;
  step_at (step, opaque, "footer-written");
  return 0;
}

/* Step 1 for one block: copy it to new space at EOF, then point its
 * entry there. */
static int
move_block (struct vhd_file *f, uint32_t blk, uint32_t entry,
            vhd_step_fn step, void *opaque)
{
  uint64_t len = (uint64_t) f->bitmap_bytes + f->l.block_size;
  uint64_t at = vhd_next_free (f), from = (uint64_t) entry * VHD_SECTOR;
  uint64_t sec = f->header.table_offset + ROUND_DOWN ((uint64_t) blk * 4,
                                                      VHD_SECTOR);
  uint8_t s[VHD_SECTOR];

  if (vhd_grow (f, at, len, step, opaque) == -1)
    return -1;
  if (copy_file_bytes (f->l.fd, from, len, at) == -1) {
    vhd_error ("%s: moving block %u: %m", f->l.path, blk);
    return -1;
  }
  if (sync_fd (f) == -1)
    return -1;
  if (full_pread (f->l.fd, s, sizeof s, sec) == -1) {
    vhd_error ("%s: reading the BAT: %m", f->l.path);
    return -1;
  }
  put_be32 (s + (blk * 4) % VHD_SECTOR, at / VHD_SECTOR);
  if (write_at (f, s, sizeof s, sec, "BAT") == -1)
    return -1;
  step_at (step, opaque, "block-moved");
  return 0;
}

/* Steps 1 and 2: room for n entries in the table. */
static int
extend_bat (struct vhd_file *f, uint32_t n, vhd_step_fn step, void *opaque)
{
  struct vhd_header *h = &f->header;
  uint64_t start = h->table_offset;
  uint64_t old_end = start + ROUND_UP ((uint64_t) h->max_table_entries * 4,
                                       VHD_SECTOR);
  uint64_t end = start + ROUND_UP ((uint64_t) n * 4, VHD_SECTOR);
  uint64_t hdr = f->footer.data_offset;
  uint32_t blk, e, *moving = NULL;
  size_t n_moving = 0;
  uint8_t s[VHD_SECTOR];
  uint64_t sec, i;
  int k, r = -1;

  if (overlaps (start, end, hdr, hdr + VHD_HEADER_SIZE) ||
      memcmp (f->footer.creator_app, "tap\0", 4) == 0) {
    vhd_error ("%s: the BAT (%u entries) must grow to %u entries, but the "
               "dynamic header or other metadata follows it", f->l.path,
               h->max_table_entries, n);
    errno = ENOTSUP;
    return -1;
  }
  for (k = 0; k < VHD_NUM_LOCATORS; k++) {
    const struct vhd_locator *l = &h->loc[k];
    if (l->code != 0 &&
        overlaps (start, end, l->offset,
                  l->offset + vhd_locator_space_bytes (l->space))) {
      vhd_error ("%s: the BAT must grow to %u entries, but parent locator "
                 "%d lies in the way", f->l.path, n, k);
      errno = ENOTSUP;
      return -1;
    }
  }
  /* The footer in the way (no block after the table, or few): move it
   * past the table's new end first (alloc.c's protocol, new space of
   * no length), so that blocks moved next land past it too. */
  if (f->footer_offset < end &&
      vhd_grow (f, MAX (vhd_next_free (f), ROUND_UP (end, 4096)), 0,
                step, opaque) == -1)
    return -1;
  /* Which blocks lie in the way: read every entry before moving any. */
  moving = calloc (f->l.n_blocks ? f->l.n_blocks : 1, sizeof *moving);
  if (moving == NULL) {
    vhd_error ("%s: %m", f->l.path);
    return -1;
  }
  for (blk = 0; blk < f->l.n_blocks; blk++) {
    if (vhd_bat_lookup (f, blk, &e) == -1)
      goto out;
    if (e != VHD_BAT_UNUSED &&
        overlaps ((uint64_t) e * VHD_SECTOR, (uint64_t) e * VHD_SECTOR +
                  f->bitmap_bytes + f->l.block_size, old_end, end))
      moving[n_moving++] = blk;
  }
  for (i = 0; i < n_moving; i++) {
    if (vhd_bat_lookup (f, moving[i], &e) == -1 ||
        move_block (f, moving[i], e, step, opaque) == -1)
      goto out;
  }
  /* Step 2: every entry from the old count on, unused. */
  for (sec = ROUND_DOWN (start + (uint64_t) h->max_table_entries * 4,
                         VHD_SECTOR); sec < end; sec += VHD_SECTOR) {
    uint64_t first = (sec - start) / 4;
    if (full_pread (f->l.fd, s, sizeof s, sec) == -1) {
      vhd_error ("%s: reading the BAT: %m", f->l.path);
      goto out;
    }
    for (i = 0; i < VHD_SECTOR / 4; i++)
      if (first + i >= h->max_table_entries)
        put_be32 (s + 4 * i, VHD_BAT_UNUSED);
    if (full_pwrite (f->l.fd, s, sizeof s, sec) == -1) {
      vhd_error ("%s: writing the BAT: %m", f->l.path);
      goto out;
    }
  }
  if (sync_fd (f) == -1)
    goto out;
  step_at (step, opaque, "bat-extended");
  r = 0;
 out:
  free (moving);
  return r;
}

/* Step 3. */
static int
write_max_entries (struct vhd_file *f, uint32_t n)
{
  uint8_t b[VHD_HEADER_SIZE];
  uint64_t off = f->footer.data_offset;

  if (full_pread (f->l.fd, b, sizeof b, off) == -1) {
    vhd_error ("%s: reading the dynamic header: %m", f->l.path);
    return -1;
  }
  put_be32 (b + 28, n);
  put_be32 (b + 36, vhd_checksum (b, sizeof b, 36));
  if (write_at (f, b, VHD_SECTOR, off, "dynamic header") == -1)
    return -1;
  f->header.max_table_entries = n;
  return 0;
}

/* Before the footer makes them visible (readers look at no entry past
 * the size, nor at bitmap bits past it): the entries of the blocks the
 * disk gains, and the bitmap bits of the old last block past the old
 * end, cleared.  A BAT longer than the disk needed (blktap pre-sizes
 * it, or a tool shrank the file) may hold anything there, as may the
 * bits of a file another program wrote: the new space must read as
 * zeros. */
static int
clear_new_space (struct vhd_file *f, uint64_t n)
{
  uint32_t old = f->l.n_blocks, tail = f->l.size % f->l.block_size, e;
  uint8_t s[VHD_SECTOR];
  uint64_t blk;

  for (blk = old; blk < n; ) {
    uint64_t sec = f->header.table_offset +
                   ROUND_DOWN (blk * 4, VHD_SECTOR);
    bool changed = false;

    if (full_pread (f->l.fd, s, sizeof s, sec) == -1) {
      vhd_error ("%s: reading the BAT: %m", f->l.path);
      return -1;
    }
    for (; blk < n && f->header.table_offset + blk * 4 < sec + VHD_SECTOR;
         blk++)
      if (get_be32 (s + (blk * 4) % VHD_SECTOR) != VHD_BAT_UNUSED) {
        put_be32 (s + (blk * 4) % VHD_SECTOR, VHD_BAT_UNUSED);
        changed = true;
      }
    if (changed && full_pwrite (f->l.fd, s, sizeof s, sec) == -1) {
      vhd_error ("%s: writing the BAT: %m", f->l.path);
      return -1;
    }
  }
  if (tail > 0 && old > 0) {
    uint8_t *bm;
    uint32_t k, first = tail / VHD_SECTOR;
    bool changed = false;

    if (vhd_bat_lookup (f, old - 1, &e) == -1)
      return -1;
    if (e != VHD_BAT_UNUSED) {
      if ((bm = malloc (f->bitmap_bytes)) == NULL) {
        vhd_error ("%s: %m", f->l.path);
        return -1;
      }
      if (full_pread (f->l.fd, bm, f->bitmap_bytes,
                      (uint64_t) e * VHD_SECTOR) == -1) {
        vhd_error ("%s: reading the bitmap of block %u: %m", f->l.path,
                   old - 1);
        free (bm);
        return -1;
      }
      for (k = first; k < f->l.block_size / VHD_SECTOR; k++)
        if (bm[k / 8] & (0x80 >> (k % 8))) {
          bm[k / 8] &= ~(0x80 >> (k % 8));
          changed = true;
        }
      if (changed && full_pwrite (f->l.fd, bm, f->bitmap_bytes,
                                  (uint64_t) e * VHD_SECTOR) == -1) {
        vhd_error ("%s: writing the bitmap of block %u: %m", f->l.path,
                   old - 1);
        free (bm);
        return -1;
      }
      free (bm);
    }
  }
  return sync_fd (f);
}

static int
grow_dynamic (struct vhd_file *f, uint64_t size, vhd_step_fn step,
              void *opaque)
{
  uint8_t want[VHD_FOOTER_SIZE], have[VHD_FOOTER_SIZE];
  uint64_t n = (size + f->l.block_size - 1) / f->l.block_size;

  if (size > VHD_MAX_SIZE || n > UINT32_MAX) {
    vhd_error ("%s: cannot grow to %" PRIu64 " bytes: a VHD holds at most "
               "%llu bytes (2040 GiB)", f->l.path, size, VHD_MAX_SIZE);
    errno = EINVAL;
    return -1;
  }
  if (n > f->header.max_table_entries) {
    if (extend_bat (f, n, step, opaque) == -1)
      return -1;
    if (write_max_entries (f, n) == -1)
      return -1;
    step_at (step, opaque, "header-written");
  }
  if (clear_new_space (f, n) == -1)
    return -1;
  /* A footer lost at EOF (a power loss while growing): put it back at
   * the end, as the writer does (alloc.c). */
  if (f->footer_from_copy) {
    f->footer_offset = ROUND_UP (f->l.file_size, VHD_SECTOR);
    f->footer_from_copy = false;
  }
  new_footer (f, size, want);
  if (full_pread (f->l.fd, have, sizeof have, f->footer_offset) == -1)
    memset (have, 0, sizeof have);
  if (memcmp (want, have, sizeof want) != 0) {
    if (write_at (f, want, sizeof want, f->footer_offset, "footer") == -1)
      return -1;
    step_at (step, opaque, "footer-written");
  }
  if (full_pread (f->l.fd, have, sizeof have, 0) == -1)
    memset (have, 0, sizeof have);
  if (memcmp (want, have, sizeof want) != 0) {
    if (write_at (f, want, sizeof want, 0, "footer copy") == -1)
      return -1;
    step_at (step, opaque, "footer-copy-written");
  }
  return 0;
}

/* A file whose creator sizes disks by the CHS geometry (Virtual PC,
 * qemu: their readers, and ours by default, show C*H*S sectors) gets
 * the smallest geometry that covers size, and that geometry's size as
 * its current size, as qemu-img sizes such files: the disk shown is
 * never smaller than asked (a geometry of the exact size may not
 * exist, and the geometry the specification's algorithm gives for a
 * size may show fewer sectors than the old one did: data cut).  Other
 * files: size itself. */
static uint64_t
size_for_creator (const struct vhd_file *f, uint64_t size)
{
  uint64_t want = size / VHD_SECTOR, i;
  uint16_t c;
  uint8_t h, s;

  if (!vhd_quirk_creator_uses_geometry (&f->footer) ||
      want >= VHD_MAX_GEOMETRY)
    return size;
  /* The geometry grows with the size asked, so the first few hundred
   * sizes up cover it (qemu-img searches the same way). */
  for (i = 0; i < 65536; i++) {
    uint64_t got;

    vhd_chs ((want + i) * VHD_SECTOR, &c, &h, &s);
    got = (uint64_t) c * h * s;
    if (got >= want && got < VHD_MAX_GEOMETRY) {
      if (got != want)
        vhd_warning ("%s: its creator ('%.4s') sizes disks by CHS "
                     "geometry: rounded up to %" PRIu64 " bytes, the "
                     "geometry %u/%u/%u", f->l.path, f->footer.creator_app,
                     got * VHD_SECTOR, c, h, s);
      return got * VHD_SECTOR;
    }
  }
  return size;
}

int
vhd_resize_layer (struct vhd_layer *l, uint64_t size, vhd_step_fn step,
                  void *opaque)
{
  struct vhd_file *f = vhd_file (l);
  int r;

  if (size < l->size || f->type == VHD_TYPE_DIFF) {
    /* resize.c refuses these with the reason; never reached. */
    vhd_error ("%s: internal error: VHD files only grow", l->path);
    errno = EINVAL;
    return -1;
  }
  size = size_for_creator (f, size);
  if (f->type == VHD_TYPE_FIXED) {
    if (size > VHD_MAX_SIZE) {
      vhd_error ("%s: cannot grow to %" PRIu64 " bytes: a VHD holds at "
                 "most %llu bytes (2040 GiB)", l->path, size, VHD_MAX_SIZE);
      errno = EINVAL;
      return -1;
    }
    r = grow_fixed (f, size, step, opaque);
  }
  else
    r = grow_dynamic (f, size, step, opaque);
  return r;
}
