/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests of lib/ondisk.c: checksums, footer and header encoding,
 * CHS geometry, bitmap and locator sizes.  Expected values come from
 * the VHD specification and from files made by other producers. */
#include <config.h>

#include <string.h>

#include "vhd/vhd-format.h"
#include "tap.h"

/* The checksum is the one's complement of the byte sum, its own four
 * bytes counted as zero. */
static void
test_checksum (void)
{
  uint8_t b[512] = { 0 };
  uint32_t sum = 0;
  int i;

  for (i = 0; i < 512; i++)
    b[i] = (uint8_t) (i * 7 + 3);
  for (i = 0; i < 512; i++)
    if (i < 64 || i >= 68)
      sum += b[i];
  ok (vhd_checksum (b, 512, 64) == ~sum, "checksum skips its own field");
  memset (b, 0, sizeof b);
  ok (vhd_checksum (b, 512, 64) == 0xFFFFFFFF, "checksum of zeros is ~0");
  b[0] = 0xFF;
  b[64] = 0x12;                 /* inside the field: ignored */
  ok (vhd_checksum (b, 512, 64) == ~(uint32_t) 0xFF, "checksum of one byte");
}

static void
test_footer_roundtrip (void)
{
  struct vhd_footer f, g;
  uint8_t b[512];

  memset (&f, 0, sizeof f);
  memcpy (f.cookie, "conectix", 8);
  f.features = 2;
  f.version = 0x00010000;
  f.data_offset = 512;
  f.timestamp = 0x2A3B4C5D;
  memcpy (f.creator_app, "qemu", 4);
  f.creator_version = 0x00050003;
  f.creator_os = 0x5769326B;
  f.original_size = f.current_size = 104865792;
  vhd_chs (f.current_size, &f.cylinders, &f.heads, &f.sectors_per_track);
  f.disk_type = VHD_TYPE_DYNAMIC;
  memset (f.unique_id, 0xAB, 16);
  vhd_footer_encode (&f, b);

  /* Bytes from the format reference's hex dump of a qemu footer. */
  static const uint8_t start[] = {
    0x63, 0x6f, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x78, 0, 0, 0, 2,
    0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0,
  };
  ok (memcmp (b, start, sizeof start) == 0, "footer prefix matches qemu's");
  ok (memcmp (b + 28, "qemu", 4) == 0 && b[36] == 'W' && b[39] == 'k',
      "creator app and host OS placed at 28 and 36");
  ok (vhd_checksum (b, 512, 64) == f.checksum &&
      ((uint32_t) b[64] << 24 | (uint32_t) b[65] << 16 |
       (uint32_t) b[66] << 8 | b[67]) == f.checksum,
      "encode stores a valid checksum big-endian");
  vhd_footer_decode (b, &g);
  ok (g.current_size == 104865792 && g.disk_type == 3 &&
      g.cylinders == 1004 && g.heads == 12 && g.sectors_per_track == 17 &&
      g.data_offset == 512 && memcmp (g.unique_id, f.unique_id, 16) == 0,
      "footer decodes to what was encoded (CHS 1004/12/17 as qemu writes)");
}

static void
test_header_roundtrip (void)
{
  struct vhd_header h, g;
  uint8_t b[1024];

  memset (&h, 0, sizeof h);
  memcpy (h.cookie, "cxsparse", 8);
  h.data_offset = UINT64_MAX;
  h.table_offset = 8192;
  h.version = 0x00010000;
  h.max_table_entries = 51;
  h.block_size = 2 << 20;
  h.loc[2].code = VHD_LOC_W2RU;
  h.loc[2].space = 65536;
  h.loc[2].length = 84;
  h.loc[2].offset = 12288;
  vhd_header_encode (&h, b);
  ok (memcmp (b + 576 + 48, "W2ru", 4) == 0, "locator slot 2 at 624");
  ok (b[16 + 6] == 0x20 && b[16 + 7] == 0x00, "table offset 8192 big-endian");
  ok (vhd_checksum (b, 1024, 36) == h.checksum, "header checksum valid");
  vhd_header_decode (b, &g);
  ok (g.table_offset == 8192 && g.max_table_entries == 51 &&
      g.block_size == (2u << 20) && g.loc[2].offset == 12288 &&
      g.loc[2].length == 84 && g.data_offset == UINT64_MAX,
      "header decodes to what was encoded");
}

static void
test_chs (void)
{
  uint16_t c;
  uint8_t h, s;

  /* Values from the format reference (spec algorithm, qemu, Windows). */
  vhd_chs (100ULL << 20, &c, &h, &s);
  ok (c == 1003 && h == 12 && s == 17, "100 MiB -> 1003/12/17 (%u/%u/%u)",
      c, h, s);
  vhd_chs (10ULL << 20, &c, &h, &s);
  ok (c == 301 && h == 4 && s == 17, "10 MiB -> 301/4/17 (Windows sample)");
  vhd_chs (266338304ULL * 512, &c, &h, &s);
  ok (c == 65278 && h == 16 && s == 255, "127 GiB -> 65278/16/255");
  vhd_chs (2040ULL << 30, &c, &h, &s);
  ok (c == 65535 && h == 16 && s == 255, "2040 GiB saturates at 65535/16/255");
}

static void
test_sizes (void)
{
  ok (vhd_bitmap_bytes (2 << 20) == 512, "2 MiB block: 512-byte bitmap");
  ok (vhd_bitmap_bytes (512) == 512, "one-sector block: bitmap padded to 512");
  ok (vhd_bitmap_bytes (4 << 20) == 1024, "4 MiB block: 1024-byte bitmap");
  ok (vhd_bitmap_bytes (256 << 20) == 65536, "256 MiB block: 64 KiB bitmap");
  ok (vhd_locator_space_bytes (1) == 512, "locator space 1 = one sector");
  ok (vhd_locator_space_bytes (4096) == 4096, "locator space 4096 = bytes");
  ok (vhd_locator_space_bytes (65536) == 65536, "locator space 65536 = bytes");
  ok (vhd_locator_space_bytes (513) == 0, "locator space 513 is invalid");
}

static void
test_format (void)
{
  uint8_t id[16] = { 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                     1, 2, 3, 4, 5, 6, 7, 8 };
  char s[37], cr[5], code[5];

  vhd_uuid_format (id, s);
  ok (strcmp (s, "12345678-9abc-def0-0102-030405060708") == 0,
      "uuid printed in storage order");
  vhd_creator_format ("tap\0", cr);
  ok (strcmp (cr, "tap") == 0, "creator 'tap\\0' printed as tap");
  ok (strcmp (vhd_locator_code_name (VHD_LOC_W2KU, code), "W2ku") == 0,
      "locator code name");
  ok (strcmp (vhd_type_name (4), "differencing") == 0, "type name");
}

int
main (void)
{
  test_checksum ();
  test_footer_roundtrip ();
  test_header_roundtrip ();
  test_chs ();
  test_sizes ();
  test_format ();
  return tap_done ();
}
