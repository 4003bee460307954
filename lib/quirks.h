/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the producer quirks the library tolerates (quirks.c).
 *
 * Every departure from the VHD specification that some producer makes
 * and that we accept has one entry in the table of quirks.c: its id
 * here, the producers (creator application codes) known to do it, what
 * is tolerated and why.  The code that tolerates a quirk says so with
 * vhd_quirk_met (id), which names the entry in a debug message and
 * records it in the file's quirks (vhdtool info lists them), so the
 * table is the index of every such place: grep for the id.
 *
 * Included by internal.h; only lib/ uses it.  The table itself is the
 * VHD back-end's (lib/vhd/quirks.c).
 */
#ifndef VHD_QUIRKS_H
#define VHD_QUIRKS_H

#include <stdarg.h>
#include <stdint.h>

#include "vhd.h"

enum vhd_quirk {
  /* Footer. */
  VHD_QUIRK_FOOTER_511,           /* 511-byte footer at EOF-511 */
  VHD_QUIRK_FOOTER_COPY_ONLY,     /* no EOF footer: the copy at 0 is used */
  VHD_QUIRK_FOOTER_COPY_DIFFERS,  /* the copy at 0 differs from EOF's */
  VHD_QUIRK_BAD_CHECKSUM,         /* only with ignore-checksums */
  VHD_QUIRK_FEATURES_RESERVED,    /* reserved feature bit 0x2 clear */
  VHD_QUIRK_FIXED_DATA_OFFSET,    /* fixed disk: data offset not ~0 */
  /* Dynamic header and BAT. */
  VHD_QUIRK_HEADER_DATA_OFFSET,   /* header data offset not ~0 */
  VHD_QUIRK_BAT_OVERSIZED,        /* more BAT entries than the size needs */
  VHD_QUIRK_PARTIAL_LAST_BLOCK,   /* file ends inside the last block */
  VHD_QUIRK_TAP_BATMAP,           /* blktap's batmap after the BAT */
  /* Parent locators and the parent. */
  VHD_QUIRK_LOCATOR_SPACE_BYTES,  /* locator data space in bytes */
  VHD_QUIRK_LOCATOR_OVERLAP,      /* reserved areas overlap metadata */
  VHD_QUIRK_PARENT_NAME_PATH,     /* parent name field holds a path */
  VHD_QUIRK_WINDOWS_PATH,         /* drive letters, backslashes */
  VHD_QUIRK_PATH_CASE,            /* path found case-insensitively */
  VHD_QUIRK_PARENT_TIMESTAMP,     /* parent timestamp 0 / not checked */
  /* Disk size (vhd_quirk_disk_size). */
  VHD_QUIRK_SIZE_GEOMETRY,        /* served at C*H*S*512, not current */
  VHD_QUIRK_SIZE_MAX_GEOMETRY,    /* 65535/16/255: current size */
  VHD_QUIRK_SIZE_GEOMETRY_UNUSABLE, /* zero or larger than current */
  VHD_QUIRK_COUNT
};

struct vhd_quirk_entry {
  enum vhd_quirk id;
  const char *name;             /* short tag, as in messages and info */
  const char *producers;        /* creator codes known to do it */
  const char *tolerated;        /* what the library accepts */
  const char *why;              /* and why, with the source of the fact */
};

extern const struct vhd_quirk_entry vhd_quirk_table[VHD_QUIRK_COUNT];

/* Quirk q was met (and tolerated) in file (a path, for the message);
 * seen (NULL: not recorded) is the file's quirks bit set. */
void vhd_quirk_met (const char *file, uint32_t *seen, enum vhd_quirk q,
                    const char *fs, ...)
  __attribute__ ((format (printf, 4, 5)));

/* vhd/quirks.c */
/* A chain is served at the size of its top layer; tell (a warning) when
 * parent, opened alone, would be served at another size. */
void vhd_quirk_chain_size (const struct vhd_open_options *opts,
                           const struct vhd_chain *c,
                           const struct vhd_layer *parent);

#endif /* VHD_QUIRKS_H */
