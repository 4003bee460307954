/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: helpers shared by the fuzz targets.
 *
 * Each target is a libFuzzer entry point (LLVMFuzzerTestOneInput).  The
 * library reads files, not buffers, so the input is written to files in
 * a private temporary directory (on /dev/shm when there is one, for
 * speed) made once per process and removed at exit.
 *
 * Multi-file inputs (fuzz-chain, and fuzz-check when the input starts
 * with the magic) use this container, easy for a mutator to keep
 * valid:
 *
 *   byte 0        flags (meaning per target)
 *   then up to 3 records: 4-byte little-endian length, then that many
 *                 bytes (a length past the end takes what is left)
 *
 * Record k becomes the file FUZZ_NAMES[k]: "a.vhd" (the top), "b.vhd",
 * "c.vhd", so parent locators and parent names can refer to each other
 * by those fixed names (relative locators ".\b.vhd", or the unicode
 * parent name "b.vhd" found beside the child).
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "vhd.h"

#define FUZZ_MAX_FILES 3
#define FUZZ_CHECK_MAGIC "VHDFUZZ3"

extern const char *const FUZZ_NAMES[FUZZ_MAX_FILES];

/* The per-process temporary directory (created on first use). */
const char *fuzz_dir (void);
/* fuzz_dir()/name, in a static buffer per slot (0..3). */
const char *fuzz_path (int slot, const char *name);
/* Write data to fuzz_dir()/name, replacing it.  Aborts on I/O errors:
 * those are the harness's, not the library's. */
void fuzz_write_file (const char *name, const uint8_t *data, size_t size);
void fuzz_unlink (const char *name);
/* Unpack the container into files; returns the number of files written
 * (at least 1: an empty record is an empty file) and the flags byte. */
int fuzz_unpack (const uint8_t *data, size_t size, uint8_t *flags);
/* Abort unless every file fuzz_unpack wrote from this input is still
 * byte-identical to its record: read-only opens, and writes to a
 * writable top, must leave every file of the input alone. */
void fuzz_assert_inputs_intact (const uint8_t *data, size_t size);
/* Silence the library. */
void fuzz_quiet (void);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#endif
