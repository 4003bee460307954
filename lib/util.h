/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: general helpers with no knowledge of any file format,
 * shared by lib/, the plugin, the overlay filter and vhdtool (all link
 * lib/libvhd.la statically, so its hidden symbols are theirs too).
 * One implementation each, so that a fix reaches every user. */
#ifndef VHD_UTIL_H
#define VHD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whole-buffer pread/pwrite: retry on EINTR and short transfers.  A
 * short read at end of file is an error (EIO): callers only read what
 * they know to be inside the file. */
int full_pread (int fd, void *buf, size_t count, uint64_t offset);
int full_pwrite (int fd, const void *buf, size_t count, uint64_t offset);
/* Make [offset, offset+len) of fd read as zeros: a hole where the file
 * system punches one, zeros written otherwise (-1 with errno). */
int zero_file_range (int fd, uint64_t offset, uint64_t len);
/* Copy len bytes of fd from offset from to offset to, a MiB at a time
 * (the ranges must not overlap): -1 with errno. */
int copy_file_bytes (int fd, uint64_t from, uint64_t len, uint64_t to);

/* Growable arrays.  Make room for n elements of elem_size bytes in the
 * array *array_ptr (any object pointer, NULL when empty) whose capacity
 * is *cap: when n > *cap, reallocate to at least twice the capacity
 * (amortised constant appends) and update both.  -1 with errno set
 * (ENOMEM, also on size overflow) and nothing changed on failure, so the
 * caller still owns and frees the old array.
 *
 * Use ARRAY_RESERVE, which takes the array and capacity lvalues and the
 * element size from the array's own type:
 *   if (ARRAY_RESERVE (l->v, l->cap, l->n + 1) == -1) ...
 *   l->v[l->n++] = x;
 */
int array_reserve (void *array_ptr, size_t *cap, size_t n, size_t elem_size);
/* The dead assignment makes the compiler insist that arr is a
 * modifiable pointer (not an array, not a pointer-to-const slot), and
 * &(cap) must be a size_t *. */
#define ARRAY_RESERVE(arr, cap, n)                              \
  ((void) (0 ? ((arr) = NULL) : NULL),                          \
   array_reserve (&(arr), &(cap), (n), sizeof *(arr)))

/* [s1, e1) intersects [s2, e2)?  (Half-open; an empty range
 * intersects nothing.) */
static inline bool
overlaps (uint64_t s1, uint64_t e1, uint64_t s2, uint64_t e2)
{
  return s1 < e2 && s2 < e1;
}

/* Bitmaps, MSB-first: bit i is (0x80 >> (i % 8)) of byte i / 8, the
 * order of VHD sector bitmaps (the overlay filter's maps use it too). */
static inline bool
bitmap_get (const uint8_t *bm, uint32_t i)
{
  return bm[i >> 3] & (0x80 >> (i & 7));
}

static inline void
bitmap_set (uint8_t *bm, uint32_t i)
{
  bm[i >> 3] |= 0x80 >> (i & 7);
}

static inline void
bitmap_clear (uint8_t *bm, uint32_t i)
{
  bm[i >> 3] &= ~(0x80 >> (i & 7));
}

static inline void
bitmap_put (uint8_t *bm, uint32_t i, bool v)
{
  if (v)
    bitmap_set (bm, i);
  else
    bitmap_clear (bm, i);
}

#endif /* VHD_UTIL_H */
