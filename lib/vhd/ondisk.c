/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: on-disk structures (footer, dynamic header, locators),
 * checksums and geometry.  Pure functions over byte buffers: nothing
 * here does I/O except the two full_pread/full_pwrite helpers.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "vhd-format.h"

uint32_t
vhd_checksum (const uint8_t *buf, size_t len, size_t csum_offset)
{
  uint32_t sum = 0;
  size_t i;

  for (i = 0; i < len; i++)
    if (i < csum_offset || i >= csum_offset + 4)
      sum += buf[i];
  return ~sum;
}

void
vhd_footer_decode (const uint8_t b[VHD_FOOTER_SIZE], struct vhd_footer *f)
{
  memcpy (f->cookie, b, 8);
  f->features = get_be32 (b + 8);
  f->version = get_be32 (b + 12);
  f->data_offset = get_be64 (b + 16);
  f->timestamp = get_be32 (b + 24);
  memcpy (f->creator_app, b + 28, 4);
  f->creator_version = get_be32 (b + 32);
  f->creator_os = get_be32 (b + 36);
  f->original_size = get_be64 (b + 40);
  f->current_size = get_be64 (b + 48);
  f->cylinders = get_be16 (b + 56);
  f->heads = b[58];
  f->sectors_per_track = b[59];
  f->disk_type = get_be32 (b + 60);
  f->checksum = get_be32 (b + 64);
  memcpy (f->unique_id, b + 68, 16);
  f->saved_state = b[84];
}

void
vhd_footer_encode (struct vhd_footer *f, uint8_t b[VHD_FOOTER_SIZE])
{
  memset (b, 0, VHD_FOOTER_SIZE);
  memcpy (b, f->cookie, 8);
  put_be32 (b + 8, f->features);
  put_be32 (b + 12, f->version);
  put_be64 (b + 16, f->data_offset);
  put_be32 (b + 24, f->timestamp);
  memcpy (b + 28, f->creator_app, 4);
  put_be32 (b + 32, f->creator_version);
  put_be32 (b + 36, f->creator_os);
  put_be64 (b + 40, f->original_size);
  put_be64 (b + 48, f->current_size);
  put_be16 (b + 56, f->cylinders);
  b[58] = f->heads;
  b[59] = f->sectors_per_track;
  put_be32 (b + 60, f->disk_type);
  memcpy (b + 68, f->unique_id, 16);
  b[84] = f->saved_state;
  f->checksum = vhd_checksum (b, VHD_FOOTER_SIZE, 64);
  put_be32 (b + 64, f->checksum);
}

void
vhd_header_decode (const uint8_t b[VHD_HEADER_SIZE], struct vhd_header *h)
{
  int i;

  memcpy (h->cookie, b, 8);
  h->data_offset = get_be64 (b + 8);
  h->table_offset = get_be64 (b + 16);
  h->version = get_be32 (b + 24);
  h->max_table_entries = get_be32 (b + 28);
  h->block_size = get_be32 (b + 32);
  h->checksum = get_be32 (b + 36);
  memcpy (h->parent_id, b + 40, 16);
  h->parent_timestamp = get_be32 (b + 56);
  memcpy (h->parent_name, b + 64, 512);
  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    const uint8_t *l = b + 576 + 24 * i;
    h->loc[i].code = get_be32 (l);
    h->loc[i].space = get_be32 (l + 4);
    h->loc[i].length = get_be32 (l + 8);
    h->loc[i].offset = get_be64 (l + 16);
  }
}

void
vhd_header_encode (struct vhd_header *h, uint8_t b[VHD_HEADER_SIZE])
{
  int i;

  memset (b, 0, VHD_HEADER_SIZE);
  memcpy (b, h->cookie, 8);
  put_be64 (b + 8, h->data_offset);
  put_be64 (b + 16, h->table_offset);
  put_be32 (b + 24, h->version);
  put_be32 (b + 28, h->max_table_entries);
  put_be32 (b + 32, h->block_size);
  memcpy (b + 40, h->parent_id, 16);
  put_be32 (b + 56, h->parent_timestamp);
  memcpy (b + 64, h->parent_name, 512);
  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    uint8_t *l = b + 576 + 24 * i;
    put_be32 (l, h->loc[i].code);
    put_be32 (l + 4, h->loc[i].space);
    put_be32 (l + 8, h->loc[i].length);
    put_be64 (l + 16, h->loc[i].offset);
  }
  h->checksum = vhd_checksum (b, VHD_HEADER_SIZE, 36);
  put_be32 (b + 36, h->checksum);
}

void
vhd_chs (uint64_t size, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
  uint64_t total = size / VHD_SECTOR, cth;
  uint32_t h, s;

  if (total > 65535ULL * 16 * 255)
    total = 65535ULL * 16 * 255;
  if (total >= 65535ULL * 16 * 63) {
    s = 255;
    h = 16;
    cth = total / s;
  }
  else {
    s = 17;
    cth = total / s;
    h = (cth + 1023) / 1024;
    if (h < 4)
      h = 4;
    if (cth >= h * 1024ULL || h > 16) {
      s = 31;
      h = 16;
      cth = total / s;
    }
    if (cth >= h * 1024ULL) {
      s = 63;
      h = 16;
      cth = total / s;
    }
  }
  *cyl = cth / h;
  *heads = h;
  *spt = s;
}

uint32_t
vhd_timestamp (time_t t)
{
  return t > VHD_EPOCH ? (uint32_t) (t - VHD_EPOCH) : 0;
}

uint32_t
vhd_bitmap_bytes (uint32_t block_size)
{
  uint32_t sectors = block_size / VHD_SECTOR;
  return ROUND_UP ((sectors + 7) / 8, VHD_SECTOR);
}

uint64_t
vhd_locator_space_bytes (uint32_t space)
{
  /* blktap's rule, which fits every producer seen: small values are
   * sectors (the spec), sector multiples are bytes (everyone else):
   * VHD_QUIRK_LOCATOR_SPACE_BYTES in quirks.c. */
  if (space < VHD_SECTOR)
    return (uint64_t) space * VHD_SECTOR;
  if (space % VHD_SECTOR == 0)
    return space;
  return 0;
}

void
vhd_creator_format (const char app[4], char out[5])
{
  int i, n = 4;

  while (n > 0 && app[n - 1] == '\0')
    n--;
  for (i = 0; i < n; i++)
    out[i] = app[i] >= 0x20 && app[i] < 0x7f ? app[i] : '?';
  out[n] = '\0';
}
