/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: copying what a chain shows, range by range (merge and
 * convert).
 *
 * The ranges come from the chain's extents, so blocks that no layer
 * holds are never read.  Inside the ranges that are copied, runs of
 * zeros are found (at 4 KiB granularity) and handed to the caller
 * separately: convert skips them, which keeps its output sparse;
 * merge turns them into zero requests, which cost nothing where the
 * target already reads as zeros.  Reads and writes are large (whole
 * chunks, cut at chunk boundaries so they line up with blocks), which
 * is what keeps the copy close to the speed of cp.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define CHUNK (4u << 20)        /* a multiple of every usual block size */
#define GRANULE 4096            /* zero detection */

struct range {
  uint64_t off, len;
};

struct ranges {
  struct range *r;
  size_t n, cap;
  int lo, hi;
  uint64_t total;
};

static int
add_range (void *opaque, uint64_t off, uint64_t len, int layer)
{
  struct ranges *rs = opaque;

  /* Zeros a layer decides (a VHDX zero state) hide what is below it:
   * they are copied like data (as zeros) when that layer is. */
  if (layer < -1)
    layer = RUN_ZERO_LAYER (layer);
  if (layer < rs->lo || layer >= rs->hi)
    return 0;
  rs->total += len;
  /* Neighbours from different layers are one copy. */
  if (rs->n && rs->r[rs->n - 1].off + rs->r[rs->n - 1].len == off) {
    rs->r[rs->n - 1].len += len;
    return 0;
  }
  if (ARRAY_RESERVE (rs->r, rs->cap, rs->n + 1) == -1)
    return -1;
  rs->r[rs->n++] = (struct range) { off, len };
  return 0;
}

static bool
is_zero (const char *buf, size_t len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

/* Hand the chunk buf, holding [off, off+len), to the caller cut into
 * runs of zero and of non-zero granules (aligned to absolute offsets). */
static int
emit_chunk (const struct vhd_copy *cp, const char *buf, uint64_t off,
            uint64_t len)
{
  uint64_t end = off + len, s = off;

  while (s < end) {
    uint64_t e = MIN (ROUND_DOWN (s, GRANULE) + GRANULE, end);
    bool zero = is_zero (buf + (s - off), e - s);

    while (e < end) {
      uint64_t e2 = MIN (e + GRANULE, end);
      if (is_zero (buf + (e - off), e2 - e) != zero)
        break;
      e = e2;
    }
    if (zero) {
      if (cp->zero && cp->zero (cp->opaque, e - s, s) == -1)
        return -1;
    }
    else if (cp->data (cp->opaque, buf + (s - off), e - s, s) == -1)
      return -1;
    s = e;
  }
  return 0;
}

int
vhd_copy_chain (const struct vhd_copy *cp)
{
  struct ranges rs = { NULL, 0, 0, cp->lo, cp->hi, 0 };
  uint64_t done = 0;
  char *buf = NULL;
  size_t i;
  int r = -1;

  if (vhd_chain_extents_by (cp->src, 0, cp->src->size, add_range, &rs,
                            true) == -1) {
    if (errno == ENOMEM)
      vhd_error ("%s: %m", cp->src->layers[0]->path);
    goto out;
  }
  buf = malloc (CHUNK);
  if (buf == NULL) {
    vhd_error ("%s: %m", cp->src->layers[0]->path);
    goto out;
  }
  if (cp->progress)
    cp->progress (cp->progress_opaque, 0, rs.total);
  for (i = 0; i < rs.n; i++) {
    uint64_t off = rs.r[i].off, end = off + rs.r[i].len;

    while (off < end) {
      uint64_t n = MIN (end, ROUND_DOWN (off, CHUNK) + CHUNK) - off;

      if (vhd_chain_pread (cp->src, buf, n, off) == -1 ||
          emit_chunk (cp, buf, off, n) == -1)
        goto out;
      off += n;
      done += n;
      if (cp->progress)
        cp->progress (cp->progress_opaque, done, rs.total);
    }
  }
  r = 0;
 out:
  free (rs.r);
  free (buf);
  return r;
}
