/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHD back-end's new files: fixed, dynamic and
 * differencing.
 *
 * Files are written the way Hyper-V's New-VHD writes them: creator
 * "win " (so that every reader, QEMU included, takes the disk size from
 * current_size rather than from the CHS geometry, which rounds down),
 * CHS by the spec's algorithm, 2 MiB blocks, BAT at 1536, and for
 * differencing disks W2ru and W2ku locators plus the parent name.
 *
 * The image is written into a descriptor that the core (create.c)
 * made under a temporary name; see there for the crash safety.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "vhd-format.h"

static void
init_footer (struct vhd_footer *f, uint32_t type, uint64_t size)
{
  memset (f, 0, sizeof *f);
  memcpy (f->cookie, "conectix", 8);
  f->features = 2;
  f->version = 0x00010000;
  f->data_offset = type == VHD_TYPE_FIXED ? UINT64_MAX : VHD_FOOTER_SIZE;
  f->timestamp = vhd_timestamp (time (NULL));
  memcpy (f->creator_app, "win ", 4);
  f->creator_version = 0x000A0000;
  f->creator_os = 0x5769326B;   /* "Wi2k" */
  f->original_size = f->current_size = size;
  vhd_chs (size, &f->cylinders, &f->heads, &f->sectors_per_track);
  f->disk_type = type;
  uuid_generate (f->unique_id);
}

static int
check_params (const char *path, struct vhd_create_params *p)
{
  if (p->logical_sector_size != 0 && p->logical_sector_size != VHD_SECTOR) {
    vhd_error ("%s: logical sector size %u: VHD files have 512-byte "
               "sectors only (VHDX has 4096)", path, p->logical_sector_size);
    goto inval;
  }
  if (p->physical_sector_size != 0) {
    vhd_error ("%s: physical sector size %u: VHD files do not record one "
               "(VHDX does)", path, p->physical_sector_size);
    goto inval;
  }
  if (p->block_size == 0)
    p->block_size = VHD_DEFAULT_BLOCK_SIZE;
  if (!IS_POWER_OF_2 (p->block_size) || p->block_size < VHD_SECTOR ||
      p->block_size > VHD_MAX_BLOCK_SIZE) {
    vhd_error ("%s: block size %u is not a power of two between 512 and "
               "%u", path, p->block_size, VHD_MAX_BLOCK_SIZE);
    goto inval;
  }
  if (p->size == 0 || p->size % VHD_SECTOR != 0 || p->size > VHD_MAX_SIZE) {
    vhd_error ("%s: size %" PRIu64 " must be a non-zero multiple of 512, "
               "at most 2040 GiB", path, p->size);
    goto inval;
  }
  return 0;
 inval:
  errno = EINVAL;
  return -1;
}

/* Parent locator data for a differencing child. */
struct parent_info {
  struct vhd_file *file;
  uint8_t *w2ku, *w2ru, *name;
  size_t w2ku_len, w2ru_len, name_len;
};

static void
free_parent_info (struct parent_info *pi)
{
  vhd_file_close (pi->file);
  free (pi->w2ku);
  free (pi->w2ru);
  free (pi->name);
}

static int
load_parent (const char *child_path, const struct vhd_create_params *p,
             struct parent_info *pi)
{
  struct vhd_open_options opts = { .readonly = true,
                                   .ignore_checksums = p->ignore_checksums };
  char *copy = strdup (child_path), *dir = NULL;
  const char *base;
  int r = -1;

  if (copy == NULL || (dir = realpath (dirname (copy), NULL)) == NULL) {
    vhd_error ("%s: %m", child_path);
    goto out;
  }
  if (vhd_file_open (p->parent, false, &opts, &pi->file) == -1)
    goto out;
  base = strrchr (pi->file->l.path, '/') + 1;
  pi->w2ku = vhd_locator_encode (VHD_LOC_W2KU, dir, pi->file->l.path,
                                 &pi->w2ku_len);
  pi->w2ru = vhd_locator_encode (VHD_LOC_W2RU, dir, pi->file->l.path,
                                 &pi->w2ru_len);
  pi->name = vhd_utf8_to_utf16 (base, true, &pi->name_len);
  if (pi->w2ku == NULL || pi->w2ru == NULL || pi->name == NULL) {
    vhd_error ("%s: parent path is not valid UTF-8", p->parent);
    goto out;
  }
  if (pi->name_len > 512) {
    vhd_error ("%s: parent file name is longer than 256 UTF-16 units",
               p->parent);
    errno = ENAMETOOLONG;
    goto out;
  }
  r = 0;
 out:
  free (copy);
  free (dir);
  return r;
}

static void
set_locator (struct vhd_locator *l, uint32_t code, size_t len, uint64_t *at)
{
  uint64_t space = MAX (ROUND_UP (len, VHD_SECTOR), VHD_LOCATOR_MIN_SPACE);

  l->code = code;
  l->space = space;             /* bytes, as every producer writes it */
  l->length = len;
  l->offset = *at;
  *at += space;
}

/* Write the whole image of a new file to fd. */
static int
write_image (int fd, const struct vhd_create_params *p,
             struct parent_info *pi, const char *path)
{
  struct vhd_footer ft;
  struct vhd_header h;
  uint8_t fbuf[VHD_FOOTER_SIZE], hbuf[VHD_HEADER_SIZE];
  uint64_t size = pi->file ? pi->file->l.size : p->size;
  uint32_t entries = (size + p->block_size - 1) / p->block_size;
  uint64_t bat_bytes = ROUND_UP ((uint64_t) entries * 4, VHD_SECTOR);
  uint64_t at, end;
  uint8_t *bat;
  int r = -1;

  init_footer (&ft, p->type, size);
  vhd_footer_encode (&ft, fbuf);
  if (p->type == VHD_TYPE_FIXED) {
    if (ftruncate (fd, size) == -1 ||
        full_pwrite (fd, fbuf, sizeof fbuf, size) == -1) {
      vhd_error ("%s: %m", path);
      return -1;
    }
    return 0;
  }

  memset (&h, 0, sizeof h);
  memcpy (h.cookie, "cxsparse", 8);
  h.data_offset = UINT64_MAX;
  h.table_offset = VHD_FOOTER_SIZE + VHD_HEADER_SIZE;
  h.version = 0x00010000;
  h.max_table_entries = entries;
  h.block_size = p->block_size;
  at = h.table_offset + bat_bytes;
  if (pi->file) {
    struct stat st;
    memcpy (h.parent_id, pi->file->footer.unique_id, 16);
    if (fstat (pi->file->l.fd, &st) == 0)
      h.parent_timestamp = vhd_timestamp (st.st_mtime);
    memcpy (h.parent_name, pi->name, pi->name_len);
    set_locator (&h.loc[0], VHD_LOC_W2RU, pi->w2ru_len, &at);
    set_locator (&h.loc[1], VHD_LOC_W2KU, pi->w2ku_len, &at);
  }
  vhd_header_encode (&h, hbuf);
  end = at;

  bat = malloc (bat_bytes);
  if (bat == NULL) {
    vhd_error ("%s: %m", path);
    return -1;
  }
  memset (bat, 0xFF, bat_bytes);
  if (full_pwrite (fd, fbuf, sizeof fbuf, 0) == -1 ||
      full_pwrite (fd, hbuf, sizeof hbuf, VHD_FOOTER_SIZE) == -1 ||
      full_pwrite (fd, bat, bat_bytes, h.table_offset) == -1 ||
      (pi->file &&
       (full_pwrite (fd, pi->w2ru, pi->w2ru_len, h.loc[0].offset) == -1 ||
        full_pwrite (fd, pi->w2ku, pi->w2ku_len, h.loc[1].offset) == -1)) ||
      ftruncate (fd, end) == -1 ||
      full_pwrite (fd, fbuf, sizeof fbuf, end) == -1)
    vhd_error ("%s: %m", path);
  else
    r = 0;
  free (bat);
  return r;
}

int
vhd_new_image (int fd, const char *path, const struct vhd_create_params *params)
{
  struct vhd_create_params p = *params;
  struct parent_info pi = { NULL };
  int r = -1;

  if (p.type == VHD_TYPE_DIFF) {
    if (load_parent (path, &p, &pi) == -1)
      goto out;
    p.size = pi.file->l.size;
    if (p.block_size == 0 && pi.file->type != VHD_TYPE_FIXED)
      p.block_size = pi.file->l.block_size;
  }
  else if (p.type != VHD_TYPE_FIXED && p.type != VHD_TYPE_DYNAMIC) {
    vhd_error ("%s: unknown disk type %u", path, p.type);
    errno = EINVAL;
    goto out;
  }
  if (check_params (path, &p) == -1)
    goto out;
  r = write_image (fd, &p, &pi, path);
 out:
  free_parent_info (&pi);
  return r;
}
