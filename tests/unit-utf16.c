/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests of lib/utf16.c: locator and parent-name text decoding. */
#include <config.h>

#include <errno.h>
#include <string.h>
#include <stdlib.h>

#include "vhd.h"
#include "tap.h"

int
main (void)
{
  /* "C:\" as Windows writes it in a W2ku locator (format reference). */
  static const uint8_t w2ku[] = { 0x43, 0, 0x3a, 0, 0x5c, 0 };
  static const uint8_t be_name[] = { 0, 'a', 0, '.', 0, 'v', 0, 0, 0, 'x' };
  static const uint8_t pair_le[] = { 0x3d, 0xd8, 0x00, 0xde };   /* U+1F600 */
  static const uint8_t lone_le[] = { 0x41, 0, 0x00, 0xdc };      /* A, low */
  static const uint8_t hi_end[] = { 0x3d, 0xd8 };
  char *s;
  uint8_t *u;
  size_t n;

  s = vhd_utf16_to_utf8 (w2ku, sizeof w2ku, false);
  ok (s && strcmp (s, "C:\\") == 0, "UTF-16LE locator decodes");
  free (s);
  s = vhd_utf16_to_utf8 (be_name, sizeof be_name, true);
  ok (s && strcmp (s, "a.v") == 0, "UTF-16BE name stops at NUL");
  free (s);
  s = vhd_utf16_to_utf8 (pair_le, sizeof pair_le, false);
  ok (s && strcmp (s, "\xF0\x9F\x98\x80") == 0, "surrogate pair decodes");
  free (s);
  errno = 0;
  s = vhd_utf16_to_utf8 (lone_le, sizeof lone_le, false);
  ok (s == NULL && errno == EILSEQ, "lone low surrogate rejected");
  s = vhd_utf16_to_utf8 (hi_end, sizeof hi_end, false);
  ok (s == NULL && errno == EILSEQ, "high surrogate at end rejected");
  s = vhd_utf16_to_utf8 (w2ku, 5, false);
  ok (s && strcmp (s, "C:") == 0, "odd byte length: last byte ignored");
  free (s);

  u = vhd_utf8_to_utf16 ("é\\b", true, &n);
  ok (u && n == 6 && u[0] == 0 && u[1] == 0xe9 && u[3] == '\\',
      "UTF-8 to UTF-16BE");
  free (u);
  u = vhd_utf8_to_utf16 ("\xF0\x9F\x98\x80", false, &n);
  ok (u && n == 4 && memcmp (u, pair_le, 4) == 0, "astral to surrogates");
  free (u);
  u = vhd_utf8_to_utf16 ("\xC0\xAF", false, &n);
  ok (u == NULL && errno == EILSEQ, "overlong UTF-8 rejected");
  u = vhd_utf8_to_utf16 ("\xED\xA0\x80", false, &n);
  ok (u == NULL, "encoded surrogate rejected");
  return tap_done ();
}
