/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests of lib/vhdx/ondisk.c: CRC-32C and GUIDs.  Expected values
 * come from the iSCSI CRC-32C check value (RFC 3720 appendix B.4) and
 * from the GUIDs MS-VHDX lists with their stored bytes. */
#include <config.h>

#include <string.h>

#include "vhdx/vhdx-format.h"
#include "tap.h"

/* The eight-bytes-a-step CRC against the definition (a bit at a time),
 * over every start alignment and length up to 64 and a few long runs,
 * also split in two pieces at every point. */
static uint32_t
crc32c_bitwise (const uint8_t *p, size_t n)
{
  uint32_t c = 0xFFFFFFFFu;
  int k;

  while (n--) {
    c ^= *p++;
    for (k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

static void
test_crc32c_sliced (void)
{
  static uint8_t buf[4096 + 8];
  unsigned bad = 0, start, len, cut;
  uint32_t x = 12345;

  for (len = 0; len < sizeof buf; len++) {
    x = x * 1103515245 + 12345;
    buf[len] = x >> 16;
  }
  for (start = 0; start < 8; start++)
    for (len = 0; len <= 64; len++) {
      uint32_t want = crc32c_bitwise (buf + start, len);

      if (vhdx_crc32c_update (0, buf + start, len) != want)
        bad++;
      for (cut = 0; cut <= len; cut++)
        if (vhdx_crc32c_update (vhdx_crc32c_update (0, buf + start, cut),
                                buf + start + cut, len - cut) != want)
          bad++;
    }
  for (start = 0; start < 8; start++)
    if (vhdx_crc32c_update (0, buf + start, 4096) !=
        crc32c_bitwise (buf + start, 4096))
      bad++;
  ok (bad == 0, "eight bytes a step agrees with the bitwise definition "
      "(every alignment, lengths 0-64 split anywhere, and 4 KiB)");
}

static void
test_crc32c (void)
{
  uint8_t b[32];
  uint32_t c;

  ok (vhdx_crc32c ((const uint8_t *) "123456789", 9, 9) == 0xE3069283,
      "CRC-32C check value of \"123456789\"");
  memset (b, 0, sizeof b);
  ok (vhdx_crc32c (b, 32, 32) == 0x8A9136AA,
      "CRC-32C of 32 zero bytes (RFC 3720 B.4)");
  memset (b, 0xFF, sizeof b);
  ok (vhdx_crc32c (b, 32, 32) == 0x62A8AB43,
      "CRC-32C of 32 0xFF bytes (RFC 3720 B.4)");
  /* The checksum field counts as zeros, wherever it is. */
  memset (b, 0, sizeof b);
  b[4] = 0x12; b[5] = 0x34; b[6] = 0x56; b[7] = 0x78;
  ok (vhdx_crc32c (b, 32, 4) == 0x8A9136AA, "the field itself is skipped");
  /* Pieces chain as one buffer. */
  c = vhdx_crc32c_update (0, (const uint8_t *) "1234", 4);
  c = vhdx_crc32c_update (c, (const uint8_t *) "56789", 5);
  ok (c == 0xE3069283, "running CRC over two pieces");
  for (c = 0; c < 32; c++)
    b[c] = c;
  ok (vhdx_crc32c (b, 32, 32) == 0x46DD794E,
      "CRC-32C of bytes 0 to 31 (RFC 3720 B.4)");
  for (c = 0; c < 32; c++)
    b[c] = 31 - c;
  ok (vhdx_crc32c (b, 32, 32) == 0x113FDB5C,
      "CRC-32C of bytes 31 down to 0 (RFC 3720 B.4)");
  test_crc32c_sliced ();
}

static void
test_guids (void)
{
  static const uint8_t bat[16] = {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
  };
  uint8_t g[16];
  char text[37];

  ok (memcmp (vhdx_guid_bat, bat, 16) == 0, "BAT region GUID bytes");
  vhdx_guid_format (bat, text);
  ok (strcmp (text, "2dc27766-f623-4200-9d64-115e9bfd4a08") == 0,
      "GUID text: Data1-3 little-endian (%s)", text);
  ok (vhdx_guid_parse ("{2DC27766-F623-4200-9D64-115E9BFD4A08}", g) == 0 &&
      memcmp (g, bat, 16) == 0, "parse: braces, upper case");
  ok (vhdx_guid_parse ("2dc27766-f623-4200-9d64-115e9bfd4a08", g) == 0 &&
      memcmp (g, bat, 16) == 0, "parse: no braces");
  ok (vhdx_guid_parse ("{2dc27766-f623-4200-9d64-115e9bfd4a08", g) == -1,
      "parse: unbalanced brace refused");
  ok (vhdx_guid_parse ("2dc27766f623-4200-9d64-115e9bfd4a08", g) == -1,
      "parse: missing dash refused");
  ok (vhdx_guid_parse ("2dc27766-f623-4200-9d64-115e9bfd4a0", g) == -1,
      "parse: short refused");
  ok (vhdx_guid_parse ("2dc27766-f623-4200-9d64-115e9bfd4a08x", g) == -1,
      "parse: trailing junk refused");
  ok (vhdx_guid_parse ("2dc27766-f623-4200-9d64-115e9bfd4a0g", g) == -1,
      "parse: non-hex refused");
  memset (g, 0, 16);
  ok (vhdx_guid_is_zero (g), "all-zero GUID");
}

int
main (void)
{
  test_crc32c ();
  test_guids ();
  return tap_done ();
}
