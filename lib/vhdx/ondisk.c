/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: VHDX checksums and GUIDs. */
#include <config.h>

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>

#include <uuid/uuid.h>

#include "vhdx-format.h"

/* CRC-32C, reflected polynomial 0x82F63B78, table-driven, eight bytes
 * per step ("slicing by 8": table k gives the CRC of a byte followed by
 * k zero bytes, so eight lookups fold in eight bytes at once).  Only
 * headers, region tables and log entries are summed, never the data,
 * but every open sums two 64 KiB region tables: vhdtool scan of a
 * thousand files spent most of its time here a byte at a time. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init (void)
{
  uint32_t i, k, c;

  for (i = 0; i < 256; i++) {
    c = i;
    for (k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (i = 0; i < 256; i++)
    for (k = 1; k < 8; k++)
      crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^
                        crc_table[0][crc_table[k - 1][i] & 0xff];
}

uint32_t
vhdx_crc32c_update (uint32_t crc, const uint8_t *buf, size_t len)
{
  uint32_t c = ~crc;

  pthread_once (&crc_once, crc_init);
  for (; len >= 8; buf += 8, len -= 8) {
    /* The bytes as a little-endian word, whatever the host's order. */
    uint32_t lo = c ^ ((uint32_t) buf[0] | (uint32_t) buf[1] << 8 |
                       (uint32_t) buf[2] << 16 | (uint32_t) buf[3] << 24);

    c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
        crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
        crc_table[3][buf[4]] ^ crc_table[2][buf[5]] ^
        crc_table[1][buf[6]] ^ crc_table[0][buf[7]];
  }
  for (; len > 0; buf++, len--)
    c = crc_table[0][(c ^ *buf) & 0xff] ^ (c >> 8);
  return ~c;
}

uint32_t
vhdx_crc32c (const uint8_t *buf, size_t len, size_t csum_off)
{
  static const uint8_t zero[4];
  uint32_t c;

  if (csum_off + 4 > len)
    return vhdx_crc32c_update (0, buf, len);
  c = vhdx_crc32c_update (0, buf, csum_off);
  c = vhdx_crc32c_update (c, zero, 4);
  return vhdx_crc32c_update (c, buf + csum_off + 4, len - csum_off - 4);
}

void
vhdx_guid_format (const uint8_t g[16], char out[37])
{
  snprintf (out, 37,
            "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
            le32 (g), le16 (g + 4), le16 (g + 6), g[8], g[9], g[10], g[11],
            g[12], g[13], g[14], g[15]);
}

static int
hex (int c)
{
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower (c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int
vhdx_guid_parse (const char *s, uint8_t g[16])
{
  /* Field widths in hex digits; Data1-3 are stored little-endian. */
  static const int width[5] = { 8, 4, 4, 4, 12 };
  uint8_t be[16];
  int f, i, n = 0;
  bool brace = *s == '{';

  if (brace)
    s++;
  for (f = 0; f < 5; f++) {
    if (f > 0 && *s++ != '-')
      return -1;
    for (i = 0; i < width[f]; i += 2) {
      int hi = hex (s[0]), lo = hi < 0 ? -1 : hex (s[1]);
      if (lo < 0)
        return -1;
      be[n++] = hi << 4 | lo;
      s += 2;
    }
  }
  if (brace && *s++ != '}')
    return -1;
  if (*s != '\0')
    return -1;
  g[0] = be[3]; g[1] = be[2]; g[2] = be[1]; g[3] = be[0];
  g[4] = be[5]; g[5] = be[4];
  g[6] = be[7]; g[7] = be[6];
  memcpy (g + 8, be + 8, 8);
  return 0;
}

/* A random GUID, stored the Windows way (so that its text form is a
 * well-formed version 4 GUID). */
void
vhdx_guid_new (uint8_t g[16])
{
  uuid_t u;
  char text[37];

  uuid_generate_random (u);
  uuid_unparse_lower (u, text);
  vhdx_guid_parse (text, g);
}

bool
vhdx_guid_is_zero (const uint8_t g[16])
{
  static const uint8_t zero[16];
  return memcmp (g, zero, 16) == 0;
}

#define G(...) { __VA_ARGS__ }
const uint8_t vhdx_guid_bat[16] =
  G (0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
     0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08);
const uint8_t vhdx_guid_metadata[16] =
  G (0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
     0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e);
const uint8_t vhdx_item_file_params[16] =
  G (0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
     0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b);
const uint8_t vhdx_item_disk_size[16] =
  G (0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
     0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8);
const uint8_t vhdx_item_disk_id[16] =
  G (0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
     0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46);
const uint8_t vhdx_item_logical_sector[16] =
  G (0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
     0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f);
const uint8_t vhdx_item_physical_sector[16] =
  G (0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
     0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56);
const uint8_t vhdx_item_parent_locator[16] =
  G (0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
     0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c);
/* DA02D7BC-3D3A-423C-AC88-2A36AB21479B */
const uint8_t vhdx_item_chs[16] =
  G (0xbc, 0xd7, 0x02, 0xda, 0x3a, 0x3d, 0x3c, 0x42,
     0xac, 0x88, 0x2a, 0x36, 0xab, 0x21, 0x47, 0x9b);
/* 71CC85F0-1B69-4E28-9558-C3BF83AE75D3 */
const uint8_t vhdx_item_incomplete[16] =
  G (0xf0, 0x85, 0xcc, 0x71, 0x69, 0x1b, 0x28, 0x4e,
     0x95, 0x58, 0xc3, 0xbf, 0x83, 0xae, 0x75, 0xd3);
/* 10E1AE8A-4B7E-4169-A40F-CD70DE928393 */
const uint8_t vhdx_item_pmem[16] =
  G (0x8a, 0xae, 0xe1, 0x10, 0x7e, 0x4b, 0x69, 0x41,
     0xa4, 0x0f, 0xcd, 0x70, 0xde, 0x92, 0x83, 0x93);
const uint8_t vhdx_locator_type[16] =
  G (0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
     0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13);
