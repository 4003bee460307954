/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the data a parent locator holds, for writing one (create
 * and set-parent).  The reading side is locator.c.
 *
 * The Windows kinds are written as ../winpath.c spells this host's
 * paths for Windows.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "vhd-format.h"

/* MacX: a file:// URL, bytes outside the unreserved set %-encoded. */
static char *
file_url (const char *path)
{
  static const char hex[] = "0123456789ABCDEF";
  char *r = malloc (strlen (path) * 3 + 8), *o;
  const unsigned char *p;

  if (r == NULL)
    return NULL;
  o = r + sprintf (r, "file://");
  for (p = (const unsigned char *) path; *p; p++) {
    if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
        (*p >= '0' && *p <= '9') || strchr ("/-._~", *p))
      *o++ = *p;
    else {
      *o++ = '%';
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 15];
    }
  }
  *o = '\0';
  return r;
}

uint8_t *
vhd_locator_encode (uint32_t code, const char *child_dir,
                    const char *parent_path, size_t *len)
{
  char *text = NULL;
  uint8_t *out = NULL;

  switch (code) {
  case VHD_LOC_W2RU: case VHD_LOC_WI2R:
    text = vhd_windows_relative_path (child_dir, parent_path);
    break;
  case VHD_LOC_W2KU: case VHD_LOC_WI2K:
    text = vhd_windows_path (parent_path);
    break;
  case VHD_LOC_MACX:
    text = file_url (parent_path);
    break;
  default:
    errno = ENOTSUP;
    return NULL;
  }
  if (text == NULL)
    goto out;
  if (code == VHD_LOC_W2RU || code == VHD_LOC_W2KU)
    out = vhd_utf8_to_utf16 (text, false, len);
  else {
    /* Single-byte kinds: the bytes of the path as they are. */
    *len = strlen (text);
    out = (uint8_t *) text;
    text = NULL;
  }
 out:
  free (text);
  return out;
}
