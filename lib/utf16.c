/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: UTF-16 <-> UTF-8 for parent names and locators.
 *
 * VHD stores the parent name as UTF-16 big-endian and the W2ku/W2ru
 * locators as UTF-16 little-endian; paths on this host are UTF-8.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static uint16_t
unit_at (const uint8_t *p, bool big_endian)
{
  return big_endian ? (uint16_t) (p[0] << 8 | p[1])
                    : (uint16_t) (p[1] << 8 | p[0]);
}

static size_t
put_utf8 (char *out, uint32_t cp)
{
  if (cp < 0x80) {
    out[0] = cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = 0xC0 | (cp >> 6);
    out[1] = 0x80 | (cp & 0x3F);
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = 0xE0 | (cp >> 12);
    out[1] = 0x80 | ((cp >> 6) & 0x3F);
    out[2] = 0x80 | (cp & 0x3F);
    return 3;
  }
  out[0] = 0xF0 | (cp >> 18);
  out[1] = 0x80 | ((cp >> 12) & 0x3F);
  out[2] = 0x80 | ((cp >> 6) & 0x3F);
  out[3] = 0x80 | (cp & 0x3F);
  return 4;
}

char *
vhd_utf16_to_utf8 (const uint8_t *buf, size_t bytes, bool big_endian)
{
  size_t n = bytes / 2, i, o = 0;
  char *out = malloc (n * 3 + 1);  /* a unit never needs more than 3 */

  if (out == NULL)
    return NULL;
  for (i = 0; i < n; i++) {
    uint32_t u = unit_at (buf + 2 * i, big_endian);

    if (u == 0)
      break;
    if (u >= 0xD800 && u <= 0xDBFF) {
      uint32_t lo = i + 1 < n ? unit_at (buf + 2 * (i + 1), big_endian) : 0;
      if (lo < 0xDC00 || lo > 0xDFFF)
        goto bad;
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      i++;
    }
    else if (u >= 0xDC00 && u <= 0xDFFF)
      goto bad;
    o += put_utf8 (out + o, u);
  }
  out[o] = '\0';
  return out;

 bad:
  free (out);
  errno = EILSEQ;
  return NULL;
}

/* Returns the code point at *s and advances, or -1 on invalid UTF-8. */
static int32_t
next_code_point (const unsigned char **s)
{
  const unsigned char *p = *s;
  uint32_t cp;
  int extra, i;

  if (p[0] < 0x80) { cp = p[0]; extra = 0; }
  else if ((p[0] & 0xE0) == 0xC0) { cp = p[0] & 0x1F; extra = 1; }
  else if ((p[0] & 0xF0) == 0xE0) { cp = p[0] & 0x0F; extra = 2; }
  else if ((p[0] & 0xF8) == 0xF0) { cp = p[0] & 0x07; extra = 3; }
  else return -1;
  for (i = 1; i <= extra; i++) {
    if ((p[i] & 0xC0) != 0x80)
      return -1;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  /* Reject overlong forms, surrogates and values past Unicode. */
  if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
      (extra == 3 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return -1;
  *s = p + extra + 1;
  return (int32_t) cp;
}

static void
put_unit (uint8_t *p, uint16_t u, bool big_endian)
{
  if (big_endian) { p[0] = u >> 8; p[1] = u; }
  else { p[0] = u; p[1] = u >> 8; }
}

uint8_t *
vhd_utf8_to_utf16 (const char *str, bool big_endian, size_t *bytes)
{
  const unsigned char *s = (const unsigned char *) str;
  uint8_t *out = malloc (strlen (str) * 4 + 2);
  size_t o = 0;

  if (out == NULL)
    return NULL;
  while (*s) {
    int32_t cp = next_code_point (&s);
    if (cp < 0) {
      free (out);
      errno = EILSEQ;
      return NULL;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      put_unit (out + o, 0xD800 + (cp >> 10), big_endian);
      put_unit (out + o + 2, 0xDC00 + (cp & 0x3FF), big_endian);
      o += 4;
    }
    else {
      put_unit (out + o, cp, big_endian);
      o += 2;
    }
  }
  *bytes = o;
  return out;
}
