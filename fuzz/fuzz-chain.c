/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: resolve, read and write a chain of fuzzed files.
 *
 * The input is the container of common.h: up to three files a.vhd (the
 * top), b.vhd, c.vhd in one directory.  Flags byte:
 *   bit 0     ignore_checksums
 *   bit 1     ignore_id_mismatch
 *   bit 2     also open a copy of the top writable and write to it
 *   bits 3-7  unused
 * The last three bytes of the input pick the offsets and lengths of the
 * reads and of the write.
 * The chain is opened as the plugin opens it, then read (a few ranges,
 * unaligned too), and its extents listed.  Afterwards every file of the
 * input must be unchanged: only the copy w.vhd may be written.  Everything is capped to the
 * first FUZZ_SPAN bytes of the disk (plus its last sectors) so an
 * iteration stays fast whatever size the footer claims.
 *
 * An input starting with VHDX_FUZZ_MAGIC is a VHDX one (the template and
 * its patches, vhdx-template.h): a.vhdx and its parents b.vhdx, c.vhdx.
 * The chain is opened read-only (as the plugin opens parents), the
 * whole disk read (up to FUZZ_SPAN) in pieces and its extents listed,
 * then the chain is opened again in check mode.  Unpatched, what is
 * read must be the template's content.  When the last byte of the
 * input is odd, a copy of the top (w.vhdx, beside the others) is then
 * opened writable (a pending log is replayed into it), written,
 * zeroed, trimmed and flushed as above, closed (the log ended), and
 * opened and read once more: the writer on hostile files.
 *
 * The written copy (w.vhd or w.vhdx) is then compacted and resized
 * (vhdtool compact and resize: grown by up to 127 MiB, or a VHDX shrunk
 * to its minimum, by the input's last byte but one), then opened,
 * read and written once more.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "vhdx-template.h"

#define FUZZ_SPAN (64ULL << 20)
#define FUZZ_IO 65536
/* A VHDX disk is read whole up to this much. */
#define FUZZ_VHDX_SPAN (16ULL << 20)
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

static int
count_extent (void *opaque, uint64_t offset, uint64_t len, int layer)
{
  uint64_t *n = opaque;

  (void) offset, (void) len, (void) layer;
  /* Bounded whatever the library does: a runaway extent walk would
   * otherwise only show up as a timeout. */
  return ++*n > 1000000 ? -1 : 0;
}

static void
exercise (struct vhd_chain *c, const uint8_t *data, size_t size, bool write)
{
  static uint8_t buf[FUZZ_IO];
  uint64_t span = vhd_chain_size (c) < FUZZ_SPAN ? vhd_chain_size (c) : FUZZ_SPAN, n = 0;
  uint64_t pick = size >= 8 ? data[size - 1] | data[size - 2] << 8 |
                  (uint64_t) data[size - 3] << 16 : 0;
  struct { uint64_t off, len; } r[5];
  int i;

  r[0].off = 0, r[0].len = FUZZ_IO;
  r[1].off = pick % (span + 1), r[1].len = 1 + pick % 4099;
  r[2].off = (pick * 512) % (span + 1), r[2].len = 512 * (1 + pick % 33);
  r[3].off = vhd_chain_size (c) > FUZZ_IO ? vhd_chain_size (c) - FUZZ_IO : 0, r[3].len = FUZZ_IO;
  r[4].off = vhd_chain_size (c) > 4096 ? vhd_chain_size (c) / 2 - 4096 / 2 : 0, r[4].len = 4096;
  for (i = 0; i < 5; i++) {
    /* Within the disk: the plugin never asks for more (nbdkit checks
     * the client's ranges). */
    if (r[i].off >= vhd_chain_size (c))
      continue;
    if (r[i].len > vhd_chain_size (c) - r[i].off)
      r[i].len = vhd_chain_size (c) - r[i].off;
    if (r[i].len > FUZZ_IO)
      r[i].len = FUZZ_IO;
    (void) vhd_chain_pread (c, buf, r[i].len, r[i].off);
  }
  if (span > 0)
    (void) vhd_chain_extents (c, 0, span, count_extent, &n);
  if (vhd_chain_size (c) > FUZZ_SPAN)
    (void) vhd_chain_extents (c, vhd_chain_size (c) - 4096, 4096, count_extent, &n);

  if (write && vhd_chain_writable (c) && span > 0) {
    uint64_t off = r[1].off < span ? r[1].off : 0;
    uint64_t len = r[1].len > span - off ? span - off : r[1].len;

    memset (buf, 0xa5, len);
    if (vhd_chain_pwrite (c, buf, len, off) == 0) {
      (void) vhd_chain_zero (c, len / 2, off);
      /* Trim and the FAST_ZERO probe: an unaligned range, zero length,
       * and the last bytes of the disk. */
      (void) vhd_chain_zero_is_fast (c, len, off);
      (void) vhd_chain_trim (c, len - len / 3, off + len / 3);
      (void) vhd_chain_trim (c, 0, off);
      (void) vhd_chain_trim (c, vhd_chain_size (c) < 1000 ? vhd_chain_size (c) : 1000,
                             vhd_chain_size (c) < 1000 ? 0 : vhd_chain_size (c) - 1000);
      (void) vhd_chain_flush (c);
      /* Reading back what was written goes through the new block. */
      (void) vhd_chain_pread (c, buf, len, off);
    }
  }
}

static void
count_problem (void *opaque, const char *file, const char *structure,
               const char *what)
{
  size_t *n = opaque;

  *n += strlen (file) + strlen (structure) + strlen (what);
}

/* vhdtool compact, then resize (grown by up to 127 MiB, or a VHDX
 * shrunk to its minimum size), on the written copy at path: the same
 * hostile bytes the writer had, plus what it wrote. */
static void
compact_and_resize (const char *path, const uint8_t *data, size_t size,
                    uint64_t disk_size)
{
  struct vhd_resize_params rp = { 0 };
  uint8_t pick = size > 1 ? data[size - 2] : 0;

  struct vhd_open_options o = { .no_lock = true, .ignore_id_mismatch = true };
  struct vhd_chain *c;

  (void) vhd_compact (path, NULL, NULL);
  rp.to_minimum = pick & 1;
  (void) vhd_resize (path, disk_size + ((uint64_t) (pick >> 1) << 20), &rp);
  /* The result read and written again: a child grown past its parent's
   * end reads zeros there (resolve.c). */
  if (vhd_chain_open (path, &o, &c) == 0) {
    exercise (c, data, size, true);
    vhd_chain_close (c);
  }
}

/* The writer on a copy of the (fuzzed) top file. */
static void
fuzz_vhdx_write (const uint8_t *data, size_t size)
{
  struct vhd_open_options o = { .no_lock = true, .ignore_id_mismatch = true };
  static uint8_t buf[FUZZ_IO];
  struct vhd_chain *c;
  uint8_t *copy;
  FILE *fp = fopen (fuzz_path (0, VHDX_FUZZ_NAMES[0]), "rb");
  long len;

  if (fp == NULL)
    return;
  /* Template files are a few MiB; a patched size may claim more. */
  if (fseek (fp, 0, SEEK_END) == -1 || (len = ftell (fp)) < 0 ||
      len > (64L << 20) || fseek (fp, 0, SEEK_SET) == -1 ||
      (copy = malloc (len + 1)) == NULL) {
    fclose (fp);
    return;
  }
  if (fread (copy, 1, len, fp) == (size_t) len)
    fuzz_write_file ("w.vhdx", copy, len);
  fclose (fp);
  free (copy);
  if (vhd_chain_open (fuzz_path (1, "w.vhdx"), &o, &c) == 0) {
    uint64_t disk_size = vhd_chain_size (c);

    exercise (c, data, size, true);
    vhd_chain_close (c);
    compact_and_resize (fuzz_path (1, "w.vhdx"), data, size, disk_size);
  }
  o.readonly = true;
  if (vhd_chain_open (fuzz_path (1, "w.vhdx"), &o, &c) == 0) {
    (void) vhd_chain_pread (c, buf, MIN ((uint64_t) FUZZ_IO,
                                         vhd_chain_size (c)), 0);
    vhd_chain_close (c);
  }
  fuzz_unlink ("w.vhdx");
}

static void
fuzz_vhdx (const uint8_t *data, size_t size)
{
  struct vhd_open_options o = { .readonly = true, .no_lock = true };
  struct vhdx_fuzz x;
  struct vhd_chain *c;
  size_t problems = 0;

  vhdx_fuzz_build (data, size, &x);
  o.ignore_checksums = x.ignore_checksums;
  o.ignore_id_mismatch = x.ignore_id_mismatch;
  if (vhd_chain_open (fuzz_path (0, VHDX_FUZZ_NAMES[0]), &o, &c) == 0) {
    static uint8_t buf[FUZZ_IO];
    uint64_t dsize = vhd_chain_size (c), span = MIN (dsize, FUZZ_VHDX_SPAN);
    uint64_t off, n = 0;

    /* The whole disk, in pieces; the last ones unaligned. */
    for (off = 0; off < span; off += FUZZ_IO) {
      uint64_t len = MIN ((uint64_t) FUZZ_IO, span - off);
      if (vhd_chain_pread (c, buf, len, off) == 0)
        vhdx_fuzz_assert_content (buf, off, len);
    }
    if (dsize > 1000 && vhd_chain_pread (c, buf, 777, dsize - 1000) == 0)
      vhdx_fuzz_assert_content (buf, dsize - 1000, 777);
    if (span > 0)
      (void) vhd_chain_extents (c, 0, span, count_extent, &n);
    if (dsize > span && dsize >= 4096)
      (void) vhd_chain_extents (c, dsize - 4096, 4096, count_extent, &n);
    vhd_chain_close (c);
  }
  /* Check mode, as vhdtool check runs it. */
  o.ignore_checksums = o.ignore_id_mismatch = false;
  o.problem = count_problem;
  o.problem_opaque = &problems;
  if (vhd_chain_open (fuzz_path (0, VHDX_FUZZ_NAMES[0]), &o, &c) == 0)
    vhd_chain_close (c);
  vhdx_fuzz_assert_intact ();
  if (size > 0 && (data[size - 1] & 1))
    fuzz_vhdx_write (data, size);
  vhdx_fuzz_assert_intact ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct vhd_open_options o = { .readonly = true, .no_lock = true };
  struct vhd_chain *c;
  uint8_t flags;

  fuzz_quiet ();
  if (vhdx_fuzz_input (data, size)) {
    fuzz_vhdx (data, size);
    return 0;
  }
  fuzz_unpack (data, size, &flags);
  o.ignore_checksums = flags & 1;
  o.ignore_id_mismatch = flags & 2;
  if (vhd_chain_open (fuzz_path (0, FUZZ_NAMES[0]), &o, &c) == 0) {
    exercise (c, data, size, false);
    vhd_chain_close (c);
  }

  /* Writable: on a copy of the top (w.vhd, beside the others so its
   * parent is found the same way), never on a file of the input. */
  if (flags & 4) {
    size_t len = 0;
    const uint8_t *top = NULL;

    if (size >= 5) {
      len = data[1] | (data[2] << 8) | (data[3] << 16) |
            ((size_t) data[4] << 24);
      top = data + 5;
      if (len > size - 5)
        len = size - 5;
    }
    fuzz_write_file ("w.vhd", top, len);
    o.readonly = false;
    if (vhd_chain_open (fuzz_path (1, "w.vhd"), &o, &c) == 0) {
      uint64_t disk_size = vhd_chain_size (c);

      exercise (c, data, size, true);
      vhd_chain_close (c);
      compact_and_resize (fuzz_path (1, "w.vhd"), data, size, disk_size);
    }
    fuzz_unlink ("w.vhd");
  }
  fuzz_assert_inputs_intact (data, size);
  return 0;
}
