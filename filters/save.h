/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-overlay-filter: keeping the overlay as a VHD differencing
 * child (overlay-save). */
#ifndef OVERLAY_SAVE_H
#define OVERLAY_SAVE_H

#include <stdint.h>

#include "store.h"

/* At start-up: the target must not exist, the parent must be a VHD. */
int save_check_start (const char *path, const char *parent);
/* Once the export size is known: the parent must have that size. */
int save_check_size (const char *parent, uint64_t export_size);
/* At clean shutdown: write the child. */
int save_overlay (struct store *s, const char *path, const char *parent);

#endif
