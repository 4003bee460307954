/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: opening and validating one VHD file.
 *
 * Every offset and count read from the file is checked before it is
 * used, with overflow-safe arithmetic, so that a hostile file can only
 * produce an error naming the file and the structure at fault.  Nothing
 * here writes to the file.
 *
 * Every problem goes through vhd_report (problem.c), so the same code
 * is also vhdtool check's examination: in check mode a problem is
 * reported and the examination goes on where it can.  Where it cannot
 * (the rest of the file depends on the broken field), unusable() marks
 * the file and vhd_file_open returns it as far as it got.  Problems that
 * mean the file cannot be examined at all (unreadable, not a VHD) still
 * make the open fail, in check mode too.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhd-format.h"

#define CHECKSUM_HINT "use the ignore-checksums option to open it anyway"

/* The rest of the file cannot be examined.  Normal opens fail; check
 * mode keeps what was found (see vhd_file_open). */
static int
unusable (struct vhd_file *f)
{
  f->l.unusable = true;
  errno = EINVAL;
  return -1;
}

static bool
footer_cookie_ok (const uint8_t *b)
{
  return memcmp (b, "conectix", 8) == 0;
}

/* Read the footer: at EOF (512 or, for very old files, 511 bytes), or
 * for dynamic/differencing disks the copy at offset 0. */
static int
read_footer (struct vhd_file *f, const struct vhd_open_options *opts)
{
  uint8_t eof[VHD_FOOTER_SIZE], copy[VHD_FOOTER_SIZE];
  uint8_t *use = NULL;
  struct vhd_footer cf;
  uint32_t sum;

  if (f->l.file_size < VHD_FOOTER_SIZE) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "",
                "not a VHD file: only %" PRIu64 " bytes long, too short "
                "for a footer", f->l.file_size);
    errno = EINVAL;
    return -1;
  }
  if (full_pread (f->l.fd, eof, VHD_FOOTER_SIZE,
                  f->l.file_size - VHD_FOOTER_SIZE) == -1 ||
      full_pread (f->l.fd, copy, VHD_FOOTER_SIZE, 0) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "", "reading footer: %m");
    return -1;
  }

  if (footer_cookie_ok (eof)) {
    use = eof;
    f->footer_offset = f->l.file_size - VHD_FOOTER_SIZE;
  }
  else if (footer_cookie_ok (eof + 1)) {
    /* 511-byte footer of pre-2004 Virtual PC: the last reserved byte is
     * missing; treat it as zero. */
    memmove (eof, eof + 1, VHD_FOOTER_SIZE - 1);
    eof[VHD_FOOTER_SIZE - 1] = 0;
    use = eof;
    f->footer_offset = f->l.file_size - (VHD_FOOTER_SIZE - 1);
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_FOOTER_511, "footer at %"
                   PRIu64, f->footer_offset);
  }

  vhd_footer_decode (copy, &cf);
  if (use == NULL) {
    if (footer_cookie_ok (copy) &&
        (cf.disk_type == VHD_TYPE_DYNAMIC || cf.disk_type == VHD_TYPE_DIFF)) {
      /* A crash while extending the file can leave no valid footer at
       * the end; the copy at offset 0 is identical by construction. */
      vhd_report (opts, VHD_WARN, f->l.path, "footer",
                  ", using the copy at offset 0",
                  "no valid footer at end of file");
      use = copy;
      f->footer_from_copy = true;
      f->footer_offset = f->l.file_size;
      vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_FOOTER_COPY_ONLY,
                     "copy at offset 0 used");
    }
    else {
      vhd_report (opts, VHD_ERROR, f->l.path, "file", "",
                  "not a VHD file: no 'conectix' footer cookie at the end "
                  "of the file or at offset 0");
      errno = EINVAL;
      return -1;
    }
  }

  vhd_footer_decode (use, &f->footer);
  sum = vhd_checksum (use, VHD_FOOTER_SIZE, 64);
  if (sum != f->footer.checksum &&
      vhd_report (opts, opts->ignore_checksums ? VHD_WARN : VHD_ERROR,
                  f->l.path, "footer",
                  opts->ignore_checksums ? ", ignored" : "; " CHECKSUM_HINT,
                  "footer checksum mismatch (stored 0x%08x, computed "
                  "0x%08x)", f->footer.checksum, sum)) {
    errno = EINVAL;
    return -1;
  }
  if (sum != f->footer.checksum)
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_BAD_CHECKSUM, "footer");
  if (!f->footer_from_copy &&
      (f->footer.disk_type == VHD_TYPE_DYNAMIC ||
       f->footer.disk_type == VHD_TYPE_DIFF)) {
    f->footer_copy_differs = memcmp (copy, use, VHD_FOOTER_SIZE - 1) != 0;
    if (f->footer_copy_differs) {
      vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_FOOTER_COPY_DIFFERS,
                     "the footer at the end is used");
      vhd_report (opts, VHD_NOTE, f->l.path, "footer copy", "",
                  "footer copy at offset 0 differs from the footer at the "
                  "end of the file%s", footer_cookie_ok (copy) ? ""
                  : " (it has no 'conectix' cookie)");
    }
  }
  return 0;
}

static int
check_footer_fields (struct vhd_file *f, const struct vhd_open_options *opts)
{
  const struct vhd_footer *ft = &f->footer;

  if ((ft->version >> 16) != 1 &&
      vhd_report (opts, VHD_ERROR, f->l.path, "footer", "",
                  "footer: unsupported file format version 0x%08x",
                  ft->version))
    goto inval;
  if (ft->disk_type != VHD_TYPE_FIXED && ft->disk_type != VHD_TYPE_DYNAMIC &&
      ft->disk_type != VHD_TYPE_DIFF) {
    vhd_report (opts, VHD_ERROR, f->l.path, "footer", "",
                "footer: unsupported disk type %u", ft->disk_type);
    return unusable (f);
  }
  if (ft->current_size % VHD_SECTOR != 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "footer", "",
                "footer: current size %" PRIu64 " is not a multiple of %d",
                ft->current_size, VHD_SECTOR);
    return unusable (f);
  }
  f->type = ft->disk_type;
  f->l.size = ft->current_size;
  vhd_quirk_disk_size (f, opts);
  if (f->type == VHD_TYPE_FIXED && f->l.size > f->footer_offset) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "",
                "truncated: fixed disk of %" PRIu64 " bytes but the footer "
                "is at offset %" PRIu64, f->l.size, f->footer_offset);
    return unusable (f);
  }
  /* Harmless to readers, but no producer writes them: worth a note. */
  if (!(ft->features & 2)) {
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_FEATURES_RESERVED,
                   "features 0x%08x", ft->features);
    vhd_report (opts, VHD_NOTE, f->l.path, "footer", "",
                "footer: features 0x%08x lack the reserved bit 0x2 that "
                "must always be set", ft->features);
  }
  if (f->type == VHD_TYPE_FIXED && ft->data_offset != UINT64_MAX) {
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_FIXED_DATA_OFFSET,
                   "data offset 0x%" PRIx64, ft->data_offset);
    vhd_report (opts, VHD_NOTE, f->l.path, "footer", "",
                "footer: data offset of a fixed disk is 0x%" PRIx64
                ", not all ones", ft->data_offset);
  }
  return 0;

 inval:
  errno = EINVAL;
  return -1;
}

static int
read_header (struct vhd_file *f, const struct vhd_open_options *opts)
{
  uint8_t buf[VHD_HEADER_SIZE];
  struct vhd_header *h = &f->header;
  uint64_t off = f->footer.data_offset;
  uint32_t sum;

  if (off % VHD_SECTOR != 0 || off > f->l.file_size ||
      f->l.file_size - off < VHD_HEADER_SIZE) {
    vhd_report (opts, VHD_ERROR, f->l.path, "footer", "",
                "footer: dynamic header offset %" PRIu64 " is not inside "
                "the file", off);
    return unusable (f);
  }
  if (full_pread (f->l.fd, buf, sizeof buf, off) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "",
                "reading dynamic header: %m");
    return -1;
  }
  vhd_header_decode (buf, h);
  if (memcmp (h->cookie, "cxsparse", 8) != 0) {
    vhd_report (opts, VHD_ERROR, f->l.path, "dynamic header", "",
                "dynamic header at offset %" PRIu64 ": bad cookie "
                "(expected 'cxsparse')", off);
    return unusable (f);
  }
  sum = vhd_checksum (buf, sizeof buf, 36);
  if (sum != h->checksum &&
      vhd_report (opts, opts->ignore_checksums ? VHD_WARN : VHD_ERROR,
                  f->l.path, "dynamic header",
                  opts->ignore_checksums ? ", ignored" : "; " CHECKSUM_HINT,
                  "dynamic header checksum mismatch (stored 0x%08x, "
                  "computed 0x%08x)", h->checksum, sum))
    goto inval;
  if (sum != h->checksum)
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_BAD_CHECKSUM,
                   "dynamic header");
  if ((h->version >> 16) != 1 &&
      vhd_report (opts, VHD_ERROR, f->l.path, "dynamic header", "",
                  "dynamic header: unsupported version 0x%08x", h->version))
    goto inval;
  if (h->data_offset != UINT64_MAX) {
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_HEADER_DATA_OFFSET,
                   "data offset 0x%" PRIx64, h->data_offset);
    vhd_report (opts, VHD_NOTE, f->l.path, "dynamic header", "",
                "dynamic header: data offset is 0x%" PRIx64 ", not all "
                "ones", h->data_offset);
  }
  if (!IS_POWER_OF_2 (h->block_size) || h->block_size < VHD_SECTOR ||
      h->block_size > VHD_MAX_BLOCK_SIZE) {
    vhd_report (opts, VHD_ERROR, f->l.path, "dynamic header", "",
                "dynamic header: block size %u is not a power of two "
                "between 512 and %u", h->block_size, VHD_MAX_BLOCK_SIZE);
    return unusable (f);
  }
  f->l.block_size = h->block_size;
  f->bitmap_bytes = vhd_bitmap_bytes (h->block_size);
  f->sectors_per_block = h->block_size / VHD_SECTOR;
  if (f->l.size > (uint64_t) UINT32_MAX * f->l.block_size) {
    vhd_report (opts, VHD_ERROR, f->l.path, "footer", "",
                "footer: current size %" PRIu64 " is too large for block "
                "size %u", f->l.size, f->l.block_size);
    return unusable (f);
  }
  f->l.n_blocks = (f->l.size + f->l.block_size - 1) / f->l.block_size;
  if (h->max_table_entries < f->l.n_blocks) {
    vhd_report (opts, VHD_ERROR, f->l.path, "dynamic header", "",
                "dynamic header: %u BAT entries cannot cover a disk of "
                "%" PRIu64 " bytes with %u-byte blocks (need %u)",
                h->max_table_entries, f->l.size, f->l.block_size, f->l.n_blocks);
    return unusable (f);
  }
  if (h->max_table_entries > MAX (f->l.n_blocks,
                                  VHD_MAX_SIZE / f->l.block_size)) {
    vhd_report (opts, VHD_ERROR, f->l.path, "dynamic header", "",
                "dynamic header: absurd BAT entry count %u",
                h->max_table_entries);
    return unusable (f);
  }
  if (h->max_table_entries > f->l.n_blocks)
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_BAT_OVERSIZED,
                   "%u BAT entries for %u blocks", h->max_table_entries,
                   f->l.n_blocks);
  if (f->type == VHD_TYPE_DIFF) {
    f->l.parent_name = vhd_utf16_to_utf8 (h->parent_name,
                                        sizeof h->parent_name, true);
    if (f->l.parent_name == NULL &&
        vhd_report (opts, VHD_ERROR, f->l.path, "dynamic header", "",
                    "dynamic header: parent name is not valid UTF-16"))
      goto inval;
  }
  return 0;

 inval:
  errno = EINVAL;
  return -1;
}

/* [start, end) of locator slot i's reserved area (empty if unusable). */
static void
locator_area (const struct vhd_file *f, int i, uint64_t *start, uint64_t *end)
{
  const struct vhd_locator *l = &f->header.loc[i];
  uint64_t space = vhd_locator_space_bytes (l->space);

  *start = *end = 0;
  if (l->code != 0 && l->offset <= f->l.file_size &&
      f->l.file_size - l->offset >= space) {
    *start = l->offset;
    *end = l->offset + space;
  }
}

/* Reserved areas that overlap other metadata: readers do not mind,
 * but rewriting such a locator (set-parent) would corrupt the other
 * structure, so set-parent never does, and check notes it. */
static void
note_locator_overlaps (struct vhd_file *f,
                       const struct vhd_open_options *opts, int i,
                       uint64_t bat_start, uint64_t bat_end)
{
  uint64_t s, e, s2, e2;
  int j;

  locator_area (f, i, &s, &e);
  if (s == e)
    return;
  if (overlaps (s, e, 0, f->footer.data_offset + VHD_HEADER_SIZE) ||
      overlaps (s, e, bat_start, bat_end)) {
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_LOCATOR_OVERLAP,
                   "parent locator %d", i);
    vhd_report (opts, VHD_NOTE, f->l.path, "parent locator", "",
                "parent locator %d: its reserved area [%" PRIu64 ", %"
                PRIu64 ") overlaps the header or the BAT", i, s, e);
  }
  for (j = 0; j < i; j++) {
    locator_area (f, j, &s2, &e2);
    if (s2 != e2 && overlaps (s, e, s2, e2)) {
      vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_LOCATOR_OVERLAP,
                     "parent locators %d and %d", j, i);
      vhd_report (opts, VHD_NOTE, f->l.path, "parent locator", "",
                  "parent locators %d and %d: their reserved areas "
                  "overlap", j, i);
    }
  }
}

/* Locator areas, checked for differencing disks (ignored otherwise:
 * dynamic disks should have none, and we never use them). */
static int
check_locators (struct vhd_file *f, const struct vhd_open_options *opts,
                uint64_t bat_start, uint64_t bat_end)
{
  int i;
  char name[5];

  if (f->type != VHD_TYPE_DIFF)
    return 0;
  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    const struct vhd_locator *l = &f->header.loc[i];
    uint64_t space;

    if (l->code == 0)
      continue;
    vhd_locator_code_name (l->code, name);
    space = vhd_locator_space_bytes (l->space);
    if (space == 0 && l->length > 0) {
      if (vhd_report (opts, VHD_ERROR, f->l.path, "parent locator", "",
                      "parent locator %d (%s): invalid data space %u",
                      i, name, l->space))
        goto inval;
      continue;
    }
    if (l->length > space) {
      if (vhd_report (opts, VHD_ERROR, f->l.path, "parent locator", "",
                      "parent locator %d (%s): length %u exceeds its "
                      "reserved space of %" PRIu64 " bytes", i, name,
                      l->length, space))
        goto inval;
      continue;
    }
    if (l->offset > f->l.file_size || f->l.file_size - l->offset < space) {
      if (vhd_report (opts, VHD_ERROR, f->l.path, "parent locator", "",
                      "parent locator %d (%s): data at offset %" PRIu64
                      " (%" PRIu64 " bytes) lies past the end of the file",
                      i, name, l->offset, space))
        goto inval;
      continue;
    }
    f->metadata_end = MAX (f->metadata_end, l->offset + space);
    if (l->space >= VHD_SECTOR)
      vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_LOCATOR_SPACE_BYTES,
                     "parent locator %d (%s): data space %u", i, name,
                     l->space);
    note_locator_overlaps (f, opts, i, bat_start, bat_end);
  }
  return 0;

 inval:
  errno = EINVAL;
  return -1;
}

/* blktap's private "batmap" follows the BAT in 'tap' images; it is
 * metadata we must never allocate over. */
static void
note_tap_batmap (struct vhd_file *f, uint64_t bat_end)
{
  uint8_t b[VHD_SECTOR];
  uint64_t map_off, map_end;

  if (memcmp (f->footer.creator_app, "tap\0", 4) != 0 ||
      bat_end > f->l.file_size || f->l.file_size - bat_end < VHD_SECTOR ||
      full_pread (f->l.fd, b, sizeof b, bat_end) == -1 ||
      memcmp (b, "tdbatmap", 8) != 0)
    return;
  map_off = get_be64 (b + 8);
  map_end = map_off + (uint64_t) get_be32 (b + 16) * VHD_SECTOR;
  f->metadata_end = MAX (f->metadata_end, bat_end + VHD_SECTOR);
  vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_TAP_BATMAP,
                 "batmap at %" PRIu64, map_off);
  if (map_off < f->l.file_size && map_end <= f->l.file_size)
    f->metadata_end = MAX (f->metadata_end, map_end);
}

static int
compare_u32 (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
  return x < y ? -1 : x > y;
}

/* Bytes of block blk that must exist in the file: the last block may
 * be partial and some writers stop the file there. */
static uint64_t
block_needed_bytes (const struct vhd_file *f, uint32_t blk)
{
  uint64_t start = (uint64_t) blk * f->l.block_size;
  return f->bitmap_bytes + MIN ((uint64_t) f->l.block_size, f->l.size - start);
}

/* Is BAT entry i (allocated, [start, end) in the file) sound?  Reports
 * what is wrong; false means the entry must not be used. */
static bool
bat_entry_ok (struct vhd_file *f, const struct vhd_open_options *opts,
              uint32_t i, uint32_t entry, uint64_t start, uint64_t end,
              uint64_t data_limit, uint64_t bat_bytes, bool *fail)
{
  const struct vhd_header *h = &f->header;
  uint32_t j;

  if (end > data_limit) {
    *fail = vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                        "BAT entry %u (sector %u) points past the end of "
                        "the file data (%" PRIu64 " bytes)", i, entry,
                        data_limit);
    return false;
  }
  if (overlaps (start, end, 0, f->footer.data_offset + VHD_HEADER_SIZE) ||
      overlaps (start, end, h->table_offset, h->table_offset + bat_bytes)) {
    *fail = vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                        "BAT entry %u (sector %u) overlaps the header or "
                        "the BAT", i, entry);
    return false;
  }
  for (j = 0; j < VHD_NUM_LOCATORS; j++) {
    const struct vhd_locator *l = &h->loc[j];
    if (f->type == VHD_TYPE_DIFF && l->code != 0 &&
        overlaps (start, end, l->offset,
                  l->offset + vhd_locator_space_bytes (l->space))) {
      *fail = vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                          "BAT entry %u (sector %u) overlaps parent "
                          "locator %u", i, entry, j);
      return false;
    }
  }
  return true;
}

/* The BAT is read and validated in chunks of this many bytes (a
 * multiple of the sector size), so that opening a layer with a huge BAT
 * needs no buffer as large as the BAT. */
#define BAT_CHUNK (64 * 1024)

/* Bytes of the anonymous mapping holding a file's BAT (see bat_get):
 * never zero, as mmap refuses empty mappings. */
static size_t
bat_map_bytes (const struct vhd_file *f)
{
  return f->bat_loaded * sizeof *f->bat + 1;
}

/* The in-memory table of a layer that is written (see bat_get): an
 * anonymous mapping, empty.  (Its page bits, f->bat_pages, exist for
 * every layer: read_bat sets them.) */
static uint32_t *
table_alloc (const struct vhd_file *f)
{
  void *map = mmap (NULL, bat_map_bytes (f), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  return map == MAP_FAILED ? NULL : map;
}

/* A few pages of the table of a layer that is only read, cached: the
 * page holding entry blk lives in slot page % BAT_CACHE_SLOTS. */
#define BAT_CACHE_SLOTS 8
#define BAT_CACHE_PAGE 1024             /* entries: 4 KiB of the file */

struct vhd_bat_cache {
  pthread_mutex_t lock;
  struct {
    uint64_t page;
    bool valid;
    uint32_t entry[BAT_CACHE_PAGE];
  } slot[BAT_CACHE_SLOTS];
};

/* Entries [first, first+n) of the file's table, decoded into out.  The
 * entries were validated when the file was opened and the file is
 * locked against writers since; an entry that nevertheless points
 * outside the data (the file changed under us) is an error, not a
 * read.  raw has room for n entries. */
static int
read_entries (struct vhd_file *f, uint64_t first, uint32_t n, uint8_t *raw,
              uint32_t *out)
{
  uint64_t data_limit = f->footer_from_copy ? f->l.file_size
                                            : f->footer_offset;
  uint32_t k;

  if (full_pread (f->l.fd, raw, (size_t) n * 4,
                  f->header.table_offset + first * 4) == -1) {
    vhd_error ("%s: reading BAT: %m", f->l.path);
    return -1;
  }
  for (k = 0; k < n; k++) {
    uint32_t e = get_be32 (raw + 4 * k);
    if (e != VHD_BAT_UNUSED && first + k < f->l.n_blocks &&
        (uint64_t) e * VHD_SECTOR + block_needed_bytes (f, first + k) >
        data_limit) {
      vhd_error ("%s: BAT entry %" PRIu64 " changed since the file was "
                 "opened (it points past the end of the data)", f->l.path,
                 first + k);
      errno = EIO;
      return -1;
    }
    out[k] = e;
  }
  return 0;
}

/* Load the page into a slot (under the cache's lock). */
static int
cache_load (struct vhd_file *f, uint64_t page, uint32_t *out)
{
  uint8_t raw[BAT_CACHE_PAGE * 4];
  uint64_t first = page * BAT_CACHE_PAGE;

  return read_entries (f, first,
                       MIN ((uint64_t) BAT_CACHE_PAGE, f->bat_loaded - first),
                       raw, out);
}

int
vhd_bat_lookup (struct vhd_file *f, uint32_t blk, uint32_t *entry)
{
  struct vhd_bat_cache *bc = f->bat_cache;
  uint64_t page = blk / BAT_CACHE_PAGE;
  int r = 0;

  /* A page of the table without an allocated entry (most of a sparse
   * layer) is answered from its bit, without a lock or a read. */
  if (blk >= f->bat_loaded ||
      !(__atomic_load_n (&f->bat_pages[(blk >> BAT_PAGE_SHIFT) / 32],
                         __ATOMIC_ACQUIRE) &
        (1u << ((blk >> BAT_PAGE_SHIFT) % 32)))) {
    *entry = VHD_BAT_UNUSED;
    return 0;
  }
  if (__atomic_load_n (&f->bat, __ATOMIC_ACQUIRE) != NULL) {
    *entry = bat_get (f, blk);
    return 0;
  }
  pthread_mutex_lock (&bc->lock);
  if (!bc->slot[page % BAT_CACHE_SLOTS].valid ||
      bc->slot[page % BAT_CACHE_SLOTS].page != page) {
    bc->slot[page % BAT_CACHE_SLOTS].valid = false;
    r = cache_load (f, page, bc->slot[page % BAT_CACHE_SLOTS].entry);
    if (r == 0) {
      bc->slot[page % BAT_CACHE_SLOTS].page = page;
      bc->slot[page % BAT_CACHE_SLOTS].valid = true;
    }
  }
  if (r == 0)
    *entry = bc->slot[page % BAT_CACHE_SLOTS].entry[blk % BAT_CACHE_PAGE];
  pthread_mutex_unlock (&bc->lock);
  return r;
}

int
vhd_bat_load_table (struct vhd_file *f)
{
  uint32_t *table, *chunk = NULL;
  uint8_t *raw = NULL;
  uint64_t base, i;
  int r = -1;

  if (f->bat != NULL)
    return 0;
  table = table_alloc (f);
  if (table == NULL || (raw = malloc (BAT_CHUNK)) == NULL ||
      (chunk = malloc (BAT_CHUNK)) == NULL) {
    vhd_error ("%s: BAT: %m", f->l.path);
    goto out;
  }
  /* Read in large chunks, filled in, then published: readers use the
   * page cache until they see the table.  The page bits, set at open,
   * already describe it. */
  for (base = 0; base < f->bat_loaded; base += BAT_CHUNK / 4) {
    uint32_t n = MIN ((uint64_t) BAT_CHUNK / 4, f->bat_loaded - base);
    if (read_entries (f, base, n, raw, chunk) == -1)
      goto out;
    for (i = 0; i < n; i++)
      if (chunk[i] != VHD_BAT_UNUSED)
        table[base + i] = ~chunk[i];
  }
  __atomic_store_n (&f->bat, table, __ATOMIC_RELEASE);
  table = NULL;
  r = 0;
 out:
  if (table)
    munmap (table, bat_map_bytes (f));
  free (raw);
  free (chunk);
  return r;
}

static int
read_bat (struct vhd_file *f, const struct vhd_open_options *opts)
{
  const struct vhd_header *h = &f->header;
  uint64_t bat_bytes = ROUND_UP ((uint64_t) h->max_table_entries * 4,
                                 VHD_SECTOR);
  uint64_t loaded = MIN ((uint64_t) h->max_table_entries,
                         ROUND_UP ((uint64_t) f->l.n_blocks, VHD_SECTOR / 4));
  uint64_t data_limit = f->footer_from_copy ? f->l.file_size : f->footer_offset;
  uint8_t *raw = NULL;
  uint32_t *sorted = NULL;      /* allocated entries, for the overlap check */
  size_t sorted_cap = 0;
  uint32_t i, n_alloc = 0;
  uint64_t base;
  void *map;
  bool fail = false;

  if (h->table_offset % VHD_SECTOR != 0 || h->table_offset > f->l.file_size ||
      f->l.file_size - h->table_offset < bat_bytes) {
    vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                "dynamic header: BAT at offset %" PRIu64 " (%" PRIu64
                " bytes) lies past the end of the file", h->table_offset,
                bat_bytes);
    return unusable (f);
  }
  f->metadata_end = MAX (f->footer.data_offset + VHD_HEADER_SIZE,
                         h->table_offset + bat_bytes);
  note_tap_batmap (f, h->table_offset + bat_bytes);
  if (check_locators (f, opts, h->table_offset,
                      h->table_offset + bat_bytes) == -1)
    return -1;
  if (opts->headers_only)
    return 0;

  /* Every entry is read and validated here, at open.  Only a layer
   * opened for writing keeps the table in memory (table_alloc); the
   * others look entries up through a few cached pages of the file's
   * table (vhd_bat_lookup), so a deep chain of fully allocated layers
   * costs a bounded amount of memory per layer, not its whole BAT. */
  f->bat_loaded = loaded;
  raw = malloc (BAT_CHUNK);
  f->bat_cache = calloc (1, sizeof *f->bat_cache);
  if (raw == NULL || f->bat_cache == NULL ||
      (f->bat_pages = calloc ((loaded >> BAT_PAGE_SHIFT) / 32 + 1,
                              sizeof *f->bat_pages)) == NULL ||
      (f->l.writable && (f->bat = table_alloc (f)) == NULL)) {
    vhd_report (opts, VHD_ERROR, f->l.path, "file", "", "BAT: %m");
    goto err;
  }
  pthread_mutex_init (&f->bat_cache->lock, NULL);
  map = f->bat;

  for (base = 0; base < loaded; base += BAT_CHUNK / 4) {
    uint32_t n = MIN ((uint64_t) BAT_CHUNK / 4, loaded - base), k;

    if (full_pread (f->l.fd, raw, (size_t) n * 4,
                    h->table_offset + base * 4) == -1) {
      vhd_report (opts, VHD_ERROR, f->l.path, "file", "", "reading BAT: %m");
      goto err;
    }
    for (k = 0; k < n; k++) {
      uint32_t entry = get_be32 (raw + 4 * k);
      uint64_t start, end;

      i = base + k;
      if (entry == VHD_BAT_UNUSED)
        continue;               /* already ~0 = 0 in the mapping */
      if (map)
        bat_set (f, i, entry);
      else                      /* not shared yet: no atomics needed */
        f->bat_pages[(i >> BAT_PAGE_SHIFT) / 32] |=
          1u << ((i >> BAT_PAGE_SHIFT) % 32);
      if (i >= f->l.n_blocks)
        continue;               /* padding of the last BAT sector */
      start = (uint64_t) entry * VHD_SECTOR;
      end = start + block_needed_bytes (f, i);
      if (!bat_entry_ok (f, opts, i, entry, start, end, data_limit,
                         bat_bytes, &fail)) {
        if (fail)
          goto inval;
        continue;
      }
      f->data_end = MAX (f->data_end,
                         start + f->bitmap_bytes + f->l.block_size);
      if (start + f->bitmap_bytes + f->l.block_size > data_limit)
        vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_PARTIAL_LAST_BLOCK,
                       "BAT entry %u", i);
      if (ARRAY_RESERVE (sorted, sorted_cap, n_alloc + 1) == -1) {
        vhd_report (opts, VHD_ERROR, f->l.path, "file", "", "BAT: %m");
        goto err;
      }
      sorted[n_alloc++] = entry;
    }
  }

  /* Two entries pointing into each other would let a write to one
   * block change another. */
  if (n_alloc > 1)
    qsort (sorted, n_alloc, sizeof *sorted, compare_u32);
  for (i = 1; i < n_alloc; i++) {
    uint64_t prev_end = (uint64_t) sorted[i - 1] * VHD_SECTOR +
                        f->bitmap_bytes + f->l.block_size;
    if ((uint64_t) sorted[i] * VHD_SECTOR < prev_end &&
        prev_end <= data_limit &&
        vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                    "BAT: blocks at sectors %u and %u overlap",
                    sorted[i - 1], sorted[i]))
      goto inval;
  }
  f->n_allocated = n_alloc;
  free (raw);
  free (sorted);
  return 0;

 inval:
  errno = EINVAL;
 err:
  free (raw);
  free (sorted);
  return -1;
}

/* What the core needs to know (layer.h), from the decoded metadata. */
static void
set_layer_facts (struct vhd_file *f)
{
  f->l.ops = &vhd_format_ops;
  f->l.type = f->footer.disk_type;
  f->l.sector_size = VHD_SECTOR;
  f->l.has_parent = f->type == VHD_TYPE_DIFF;
  f->l.flat = f->type == VHD_TYPE_FIXED;
  memcpy (f->l.id, f->footer.unique_id, 16);
  if (f->type == VHD_TYPE_DIFF)
    memcpy (f->l.parent_id, f->header.parent_id, 16);
  if (f->type == VHD_TYPE_FIXED) {
    /* No table: the core reads a fixed disk directly; the block size
     * is only the unit of its lookups when it lies under other layers. */
    f->l.block_size = VHD_DEFAULT_BLOCK_SIZE;
    f->l.n_blocks = (f->l.size + f->l.block_size - 1) / f->l.block_size;
  }
}

int
vhd_file_open (const char *path, bool writable,
               const struct vhd_open_options *opts, struct vhd_file **out)
{
  struct vhd_file *f = calloc (1, sizeof *f);

  if (f == NULL) {
    vhd_error ("%s: %m", path);
    return -1;
  }
  if (vhd_layer_open_file (&f->l, path, writable, opts) == -1)
    goto err;
  if (read_footer (f, opts) == -1 || check_footer_fields (f, opts) == -1 ||
      (f->type != VHD_TYPE_FIXED &&
       (read_header (f, opts) == -1 || read_bat (f, opts) == -1))) {
    /* Check mode: what was found is reported; the file is returned
     * for the rest of the examination, which stops at it. */
    if (f->l.unusable && opts->problem)
      goto done;
    goto err;
  }
 done:
  set_layer_facts (f);
  *out = f;
  return 0;

 err:
  vhd_file_close (f);
  return -1;
}

void
vhd_file_close (struct vhd_file *f)
{
  int saved_errno = errno;

  if (f == NULL)
    return;
  vhd_layer_close_file (&f->l);
  if (f->bat != NULL)
    munmap (f->bat, bat_map_bytes (f));
  free (f->bat_pages);
  if (f->bat_cache) {
    pthread_mutex_destroy (&f->bat_cache->lock);
    free (f->bat_cache);
  }
  free (f);
  errno = saved_errno;
}

uint64_t
vhd_file_allocated_blocks (const struct vhd_file *f)
{
  uint64_t n = 0;
  uint32_t i;

  if (f->type == VHD_TYPE_FIXED)
    return 0;
  if (f->bat == NULL)
    return f->n_allocated;      /* counted at open: never written since */
  for (i = 0; i < f->l.n_blocks; i++)
    n += bat_get (f, i) != VHD_BAT_UNUSED;
  return n;
}

void
vhd_file_footer_bytes (const struct vhd_file *f, uint8_t buf[VHD_FOOTER_SIZE])
{
  struct vhd_footer ft = f->footer;
  vhd_footer_encode (&ft, buf);
}

const char *
vhd_locator_code_name (uint32_t code, char buf[5])
{
  int i;

  for (i = 0; i < 4; i++) {
    char c = (code >> (24 - 8 * i)) & 0xff;
    buf[i] = c >= 0x20 && c < 0x7f ? c : '?';
  }
  buf[4] = '\0';
  return buf;
}

char *
vhd_locator_text (const struct vhd_file *f, int i)
{
  const struct vhd_locator *l = &f->header.loc[i];
  uint8_t *raw;
  char *text = NULL;

  if (f->type != VHD_TYPE_DIFF || l->code == 0 || l->length == 0 ||
      l->length > 65536)
    return NULL;
  raw = malloc (l->length + 1);
  if (raw == NULL)
    return NULL;
  if (full_pread (f->l.fd, raw, l->length, l->offset) == 0) {
    switch (l->code) {
    case VHD_LOC_W2RU: case VHD_LOC_W2KU:
      text = vhd_utf16_to_utf8 (raw, l->length, false);
      break;
    case VHD_LOC_WI2R: case VHD_LOC_WI2K: case VHD_LOC_MACX:
      raw[l->length] = '\0';
      text = strdup ((char *) raw);
      break;
    }
  }
  free (raw);
  return text;
}
