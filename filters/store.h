/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-overlay-filter: the overlay store (mechanism).
 *
 * See the comment at the top of store.c for the design. */
#ifndef OVERLAY_STORE_H
#define OVERLAY_STORE_H

#include <stdbool.h>
#include <stdint.h>

struct store;

/* Reads from the layer below (the plugin), for sectors the overlay
 * does not hold.  Returns -1 and sets *err on failure. */
typedef int (*below_read_fn) (void *opaque, void *buf, uint32_t count,
                              uint64_t offset, int *err);

/* Where a range of the disk comes from. */
enum store_src { SRC_BELOW, SRC_DATA, SRC_ZERO };

typedef int (*store_range_fn) (void *opaque, uint64_t offset, uint64_t len,
                               enum store_src src);

/* A new, empty store backed by an unlinked temporary file in dir.
 * limit: maximum bytes of data held (0 = none).  NULL on error (already
 * reported with nbdkit_error). */
struct store *store_new (const char *dir, uint32_t block_size, uint64_t limit);
void store_free (struct store *s);

/* Fix the disk size on first use; later calls must give the same. */
int store_set_size (struct store *s, uint64_t size);

int store_read (struct store *s, void *buf, uint32_t count, uint64_t offset,
                below_read_fn below, void *opaque, int *err);
/* buf == NULL writes zeros (zero and trim requests). */
int store_write (struct store *s, const void *buf, uint32_t count,
                 uint64_t offset, below_read_fn below, void *opaque,
                 int *err);
/* Classify [offset, offset+len) into runs (for extents). */
int store_map (struct store *s, uint64_t offset, uint64_t len,
               store_range_fn fn, void *opaque);
/* Every range the overlay holds, in order (for saving). */
int store_foreach_held (struct store *s, store_range_fn fn, void *opaque);
/* Read held data straight from the overlay file. */
int store_pread_data (struct store *s, void *buf, uint32_t count,
                      uint64_t offset);

#endif
