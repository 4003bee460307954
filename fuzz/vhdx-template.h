/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: structure-aware VHDX inputs (vhdx-template.c).
 *
 * A VHDX file is at least a few MiB (1 MiB header section, then the
 * log, metadata and BAT regions and blocks on 1 MiB boundaries), far
 * too large for a libFuzzer input.  So a VHDX input is not the files
 * themselves: the harness builds small valid files from a template and
 * the input patches chosen slices of them.
 *
 *   bytes 0-7    VHDX_FUZZ_MAGIC ("VHDXFUZZ"); the rest is:
 *   byte 0       options
 *                  bits 0-1  0: one dynamic file a.vhdx
 *                            1: one fixed file (LeaveBlockAllocated)
 *                            2: a.vhdx differencing, parent b.vhdx
 *                            3: a.vhdx -> b.vhdx (differencing) -> c.vhdx
 *                  bit 2     4096-byte logical sectors (else 512)
 *                  bit 3     a.vhdx has a live log (LogGuid set, two
 *                            entries to replay: a BAT page and the
 *                            metadata table page are stale on disk)
 *                  bit 4     the parents have live logs too
 *                  bit 5     open with ignore_checksums
 *                  bit 6     open with ignore_id_mismatch
 *                  bit 7     unused
 *   then patch records, as many as the input holds:
 *     byte T       bits 0-3 target (below), bit 4 recompute the
 *                  target's CRC-32C after patching, bits 5-6 the file
 *                  (modulo the number of files)
 *     3 bytes      offset in the target, little-endian (modulo its size)
 *     byte N       length, then N bytes of data (fewer at the end of
 *                  the input); a patch is clipped to its target
 *
 * Targets: 0 file identifier, 1 header 1, 2 header 2, 3 region table 1,
 * 4 region table 2, 5 metadata table (first 64 KiB of the region),
 * 6 metadata items (the rest of the region), 7 the parent locator item,
 * 8 the BAT region, 9 the sector bitmap block (differencing files; the
 * first payload block otherwise), 10 the log (CRC fix-up: every entry
 * header in the ring whose EntryLength is usable), 11 the payload block
 * area, 12 the file size (offset = the new size, up to 16 MiB),
 * 13 both headers, 14 both region tables, 15 any byte of the first
 * 16 MiB.
 *
 * Layout of every file: header section, log 1 MiB at 1 MiB, metadata
 * 1 MiB at 2 MiB, BAT 1 MiB at 3 MiB, blocks (1 MiB) from 4 MiB.  The
 * disk is 4 MiB + 3 sectors: five blocks, the last one partial.  The
 * parent's locator names it by relative_path ".\b.vhdx" (and
 * absolute_win32_path, volume_path), parent_linkage its DataWriteGuid.
 * Files are written sparsely (only the pages that hold something).
 */
#ifndef FUZZ_VHDX_TEMPLATE_H
#define FUZZ_VHDX_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHDX_FUZZ_MAGIC "VHDXFUZZ"
#define VHDX_FUZZ_FILES 3

extern const char *const VHDX_FUZZ_NAMES[VHDX_FUZZ_FILES];

struct vhdx_fuzz {
  int n_files;                  /* written: VHDX_FUZZ_NAMES[0..n_files) */
  bool ignore_checksums, ignore_id_mismatch;
  unsigned patches;             /* patch records applied */
};

/* Does this input start with VHDX_FUZZ_MAGIC? */
bool vhdx_fuzz_input (const uint8_t *data, size_t size);
/* Build the files of the input (after the magic) in fuzz_dir(). */
void vhdx_fuzz_build (const uint8_t *data, size_t size, struct vhdx_fuzz *x);
/* Abort unless every file built is still exactly as written. */
void vhdx_fuzz_assert_intact (void);
/* With no patch record, the guest view of a.vhdx's chain is known:
 * abort unless buf (len bytes at disk offset off) matches it. */
void vhdx_fuzz_assert_content (const uint8_t *buf, uint64_t off,
                               uint64_t len);
/* The virtual size of the template's disks. */
uint64_t vhdx_fuzz_disk_size (void);

#endif
