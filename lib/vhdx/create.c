/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX back-end's new files: fixed, dynamic and
 * differencing (layer_ops.new_image).
 *
 * Files are laid out the way Hyper-V's New-VHD lays them out (docs
 * sections 6.2 and 6.3), so that every reader that copes with Hyper-V's
 * files copes with ours: the file identifier, two headers with
 * sequence numbers n and n+1 (the higher one, in slot 2, current) and
 * the same random FileWriteGuid and DataWriteGuid, an empty 1 MiB log
 * at 1 MiB, two identical region tables (BAT, then metadata, both
 * required), the metadata region at 2 MiB with its items from 0x10000
 * in Hyper-V's order, and the BAT at 3 MiB.  Fixed disks have every
 * block FULLY_PRESENT, in order, right after the BAT, with the
 * sector-bitmap slots of the interleave left NOT_PRESENT; dynamic and
 * differencing disks have an all-zero (NOT_PRESENT) BAT.  Everything
 * that is zero (log, BAT of a sparse disk, blocks of a fixed one) is
 * left to ftruncate, so even a 64 TiB disk is created at once.
 *
 * The image is written into a descriptor that the core (create.c)
 * made under a temporary name; see there for the crash safety.  No log
 * is needed: nothing reads the file before it is complete.
 */
#include <config.h>

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "vhdx-format.h"

#define LOG_OFFSET VHDX_MiB
#define LOG_LENGTH VHDX_MiB
#define META_OFFSET (2 * VHDX_MiB)
#define META_LENGTH VHDX_MiB
#define BAT_OFFSET (3 * VHDX_MiB)
#define ITEMS_AT 0x10000        /* item data, from the metadata region */
#define CREATOR "nbdkit-vhd " PACKAGE_VERSION

/* Defaults: Hyper-V's (the Windows 10 fixed and dynamic samples, and
 * checkpoints, which are differencing disks). */
#define DEFAULT_BLOCK_FIXED (2u << 20)
#define DEFAULT_BLOCK_DYNAMIC (32u << 20)
#define DEFAULT_BLOCK_DIFF (2u << 20)
#define DEFAULT_PHYSICAL_SECTOR 4096


/* What the new file will be. */
struct plan {
  uint32_t type;
  uint64_t size;
  uint32_t block, logical, physical;
  uint8_t disk_id[16];
  uint64_t chunk_ratio, payload, entries;
  uint32_t bat_length;
  uint64_t data_start;          /* fixed: block 0 */
  uint64_t file_end;
  uint8_t *locator;             /* differencing: the locator item */
  size_t locator_len;
};

/* ------------------------------------------------------------ parent */

/* A child inherits every IsVirtualDisk item of its parent (docs
 * section 6.3): size, logical and physical sector size, disk id. */
static int
plan_child (const char *path, const struct vhd_create_params *p,
            struct plan *pl)
{
  struct vhd_open_options o = { .readonly = true,
                                .ignore_checksums = p->ignore_checksums };
  struct vhdx_file *pf = NULL;
  char *copy = strdup (path), *dir = NULL;
  int r = -1;

  if (copy == NULL || (dir = realpath (dirname (copy), NULL)) == NULL) {
    vhd_error ("%s: %m", path);
    goto out;
  }
  if (vhdx_file_open (p->parent, false, &o, &pf) == -1)
    goto out;
  if (p->logical_sector_size && p->logical_sector_size != pf->logical_sector) {
    vhd_error ("%s: logical sector size %u: a child has its parent's "
               "(%s: %u)", path, p->logical_sector_size, pf->l.path,
               pf->logical_sector);
    errno = EINVAL;
    goto out;
  }
  pl->size = pf->virtual_size;
  pl->logical = pf->logical_sector;
  pl->physical = p->physical_sector_size ? p->physical_sector_size
    : pf->physical_sector;
  memcpy (pl->disk_id, pf->disk_id, 16);
  pl->block = p->block_size ? p->block_size : DEFAULT_BLOCK_DIFF;
  if (vhdx_locator_build (path, pf, dir, NULL, &pl->locator, &pl->locator_len)
      == -1)
    goto out;
  if (ITEMS_AT + 0x28 + pl->locator_len > META_LENGTH) {
    vhd_error ("%s: parent locator: the parent's path is too long for the "
               "metadata region", path);
    errno = ENAMETOOLONG;
    goto out;
  }
  r = 0;
 out:
  if (pf)
    vhdx_file_close (pf);
  free (copy);
  free (dir);
  return r;
}

/* ------------------------------------------------------------ plan */

static int
invalid (void)
{
  errno = EINVAL;
  return -1;
}

static int
check_plan (const char *path, const struct plan *pl)
{
  if (pl->logical != 512 && pl->logical != 4096) {
    vhd_error ("%s: logical sector size %u is not 512 or 4096", path,
               pl->logical);
    return invalid ();
  }
  if (pl->physical != 512 && pl->physical != 4096) {
    vhd_error ("%s: physical sector size %u is not 512 or 4096", path,
               pl->physical);
    return invalid ();
  }
  if (!IS_POWER_OF_2 (pl->block) || pl->block < VHDX_MIN_BLOCK ||
      pl->block > VHDX_MAX_BLOCK) {
    vhd_error ("%s: block size %u is not a power of two between 1 MiB "
               "and 256 MiB", path, pl->block);
    return invalid ();
  }
  if (pl->size == 0) {
    vhd_error ("%s: size 0: a disk needs at least one sector", path);
    return invalid ();
  }
  if (pl->size % pl->logical != 0) {
    vhd_error ("%s: size %" PRIu64 " is not a multiple of the logical "
               "sector size %u", path, pl->size, pl->logical);
    return invalid ();
  }
  if (pl->size > VHDX_MAX_SIZE) {
    vhd_error ("%s: size %" PRIu64 " is over 64 TiB, the most a VHDX "
               "disk can be", path, pl->size);
    return invalid ();
  }
  return 0;
}

/* Geometry (docs section 3.1): the BAT's entry count depends on the
 * type, a differencing BAT including the last chunk's bitmap slot. */
static void
plan_layout (struct plan *pl)
{
  uint64_t sb_count;

  pl->chunk_ratio = ((UINT64_C (1) << 23) * pl->logical) / pl->block;
  pl->payload = (pl->size + pl->block - 1) / pl->block;
  sb_count = (pl->payload + pl->chunk_ratio - 1) / pl->chunk_ratio;
  pl->entries = pl->type == VHD_TYPE_DIFF
    ? sb_count * (pl->chunk_ratio + 1)
    : pl->payload + (pl->payload - 1) / pl->chunk_ratio;
  pl->bat_length = ROUND_UP (pl->entries * 8, VHDX_MiB);
  pl->data_start = BAT_OFFSET + pl->bat_length;
  /* Whole blocks, the last one too: its tail is never read, but a
   * reader may check that every present block lies inside the file. */
  pl->file_end = pl->data_start +
    (pl->type == VHD_TYPE_FIXED ? pl->payload * pl->block : 0);
}

/* ------------------------------------------------------------ writing */

static int
write_at (int fd, const char *path, const char *what, const void *buf,
          size_t n, uint64_t off)
{
  if (full_pwrite (fd, buf, n, off) == -1) {
    vhd_error ("%s: writing the %s: %m", path, what);
    return -1;
  }
  return 0;
}

/* File identifier, headers and region tables: the first 1 MiB. */
static int
write_header_section (int fd, const char *path, const struct plan *pl)
{
  uint8_t ident[8 + 512] = "vhdxfile", hdr[VHDX_HEADER_SIZE];
  uint8_t *rt = calloc (1, VHDX_REGION_SIZE);
  uint8_t *creator;
  size_t creator_len;
  int i, r = -1;

  creator = vhd_utf8_to_utf16 (CREATOR, false, &creator_len);
  if (rt == NULL || creator == NULL) {
    vhd_error ("%s: %m", path);
    goto out;
  }
  memcpy (ident + 8, creator, MIN (creator_len, 512));
  if (write_at (fd, path, "file identifier", ident, sizeof ident, 0) == -1)
    goto out;

  memset (hdr, 0, sizeof hdr);
  memcpy (hdr, "head", 4);
  vhdx_guid_new (hdr + 16);          /* FileWriteGuid */
  vhdx_guid_new (hdr + 32);          /* DataWriteGuid */
  /* LogGuid (48) zero: the log is empty; LogVersion (64) 0. */
  put_le16 (hdr + 66, 1);
  put_le32 (hdr + 68, LOG_LENGTH);
  put_le64 (hdr + 72, LOG_OFFSET);
  for (i = 0; i < 2; i++) {
    put_le64 (hdr + 8, 1 + i);
    put_le32 (hdr + 4, 0);
    put_le32 (hdr + 4, vhdx_crc32c (hdr, sizeof hdr, 4));
    if (write_at (fd, path, "headers", hdr, sizeof hdr,
                  VHDX_HEADER_OFFSET (i)) == -1)
      goto out;
  }

  memcpy (rt, "regi", 4);
  put_le32 (rt + 8, 2);
  memcpy (rt + 16, vhdx_guid_bat, 16);
  put_le64 (rt + 32, BAT_OFFSET);
  put_le32 (rt + 40, pl->bat_length);
  put_le32 (rt + 44, 1);
  memcpy (rt + 48, vhdx_guid_metadata, 16);
  put_le64 (rt + 64, META_OFFSET);
  put_le32 (rt + 72, META_LENGTH);
  put_le32 (rt + 76, 1);
  put_le32 (rt + 4, vhdx_crc32c (rt, VHDX_REGION_SIZE, 4));
  for (i = 0; i < 2; i++)
    if (write_at (fd, path, "region tables", rt, VHDX_REGION_SIZE,
                  VHDX_REGION_OFFSET (i)) == -1)
      goto out;
  r = 0;
 out:
  free (creator);
  free (rt);
  return r;
}

/* Metadata table entry i: item guid, its data at off, n bytes. */
static void
put_item (uint8_t *m, int i, const uint8_t guid[16], uint32_t off,
          uint32_t n, uint32_t flags)
{
  uint8_t *e = m + 32 + 32 * i;

  memcpy (e, guid, 16);
  put_le32 (e + 16, off);
  put_le32 (e + 20, n);
  put_le32 (e + 24, flags);
}

/* The metadata table and items, in Hyper-V's order and with its
 * flags: the file parameters and the locator describe this file
 * (required), the others the virtual disk (copied into children). */
static int
write_metadata (int fd, const char *path, const struct plan *pl)
{
  const uint32_t vd = VHDX_ITEM_VIRTUAL_DISK | VHDX_ITEM_REQUIRED;
  size_t len = ITEMS_AT + 0x28 + pl->locator_len;
  uint8_t *m = calloc (1, len), *d = m + ITEMS_AT;
  int r;

  if (m == NULL) {
    vhd_error ("%s: %m", path);
    return -1;
  }
  memcpy (m, "metadata", 8);
  put_le16 (m + 10, pl->locator ? 6 : 5);
  put_item (m, 0, vhdx_item_file_params, ITEMS_AT, 8, VHDX_ITEM_REQUIRED);
  put_item (m, 1, vhdx_item_disk_size, ITEMS_AT + 0x08, 8, vd);
  put_item (m, 2, vhdx_item_logical_sector, ITEMS_AT + 0x10, 4, vd);
  put_item (m, 3, vhdx_item_physical_sector, ITEMS_AT + 0x14, 4, vd);
  put_item (m, 4, vhdx_item_disk_id, ITEMS_AT + 0x18, 16, vd);
  put_le32 (d, pl->block);
  put_le32 (d + 4, pl->type == VHD_TYPE_FIXED ? 1      /* LeaveBlockAllocated */
                 : pl->type == VHD_TYPE_DIFF ? 2 : 0); /* HasParent */
  put_le64 (d + 0x08, pl->size);
  put_le32 (d + 0x10, pl->logical);
  put_le32 (d + 0x14, pl->physical);
  memcpy (d + 0x18, pl->disk_id, 16);
  if (pl->locator) {
    put_item (m, 5, vhdx_item_parent_locator, ITEMS_AT + 0x28,
              pl->locator_len, VHDX_ITEM_REQUIRED);
    memcpy (d + 0x28, pl->locator, pl->locator_len);
  }
  r = write_at (fd, path, "metadata region", m, len, META_OFFSET);
  free (m);
  return r;
}

/* A fixed disk's BAT: payload block b FULLY_PRESENT at data_start +
 * b * block, the interleaved bitmap slots NOT_PRESENT (zero).  Written
 * a megabyte at a time: 64 TiB of 1 MiB blocks take a 512 MiB BAT. */
static int
write_fixed_bat (int fd, const char *path, const struct plan *pl)
{
  const size_t per_buf = VHDX_MiB / 8;
  uint8_t *buf = malloc (VHDX_MiB);
  uint64_t i, b = 0;
  int r = 0;

  if (buf == NULL) {
    vhd_error ("%s: %m", path);
    return -1;
  }
  for (i = 0; i < pl->entries && r == 0; i += per_buf) {
    size_t k, n = MIN (per_buf, pl->entries - i);
    memset (buf, 0, VHDX_MiB);
    for (k = 0; k < n; k++) {
      if ((i + k) % (pl->chunk_ratio + 1) == pl->chunk_ratio)
        continue;               /* a sector bitmap slot */
      put_le64 (buf + 8 * k,
                (pl->data_start + b++ * pl->block) | VHDX_FULLY_PRESENT);
    }
    r = write_at (fd, path, "BAT", buf, n * 8, BAT_OFFSET + i * 8);
  }
  free (buf);
  return r;
}

int
vhdx_new_image (int fd, const char *path, const struct vhd_create_params *p)
{
  struct plan pl = { .type = p->type };
  int r = -1;

  switch (p->type) {
  case VHD_TYPE_DIFF:
    if (plan_child (path, p, &pl) == -1)
      goto out;
    break;
  case VHD_TYPE_FIXED: case VHD_TYPE_DYNAMIC:
    pl.size = p->size;
    pl.logical = p->logical_sector_size ? p->logical_sector_size : 512;
    pl.physical = p->physical_sector_size ? p->physical_sector_size
      : DEFAULT_PHYSICAL_SECTOR;
    pl.block = p->block_size ? p->block_size
      : p->type == VHD_TYPE_FIXED ? DEFAULT_BLOCK_FIXED
      : DEFAULT_BLOCK_DYNAMIC;
    vhdx_guid_new (pl.disk_id);
    break;
  default:
    vhd_error ("%s: unknown disk type %u", path, p->type);
    errno = EINVAL;
    goto out;
  }
  if (check_plan (path, &pl) == -1)
    goto out;
  plan_layout (&pl);

  if (ftruncate (fd, pl.file_end) == -1) {
    vhd_error ("%s: cannot make the file %" PRIu64 " bytes long: %m",
               path, pl.file_end);
    goto out;
  }
  if (write_header_section (fd, path, &pl) == -1 ||
      write_metadata (fd, path, &pl) == -1 ||
      (pl.type == VHD_TYPE_FIXED && write_fixed_bat (fd, path, &pl) == -1))
    goto out;
  r = 0;
 out:
  free (pl.locator);
  return r;
}
