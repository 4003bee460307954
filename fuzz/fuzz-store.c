/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: the overlay filter's store (filters/store.c).
 *
 * store.c is linked in directly, without nbdkit: the two nbdkit calls
 * it makes (nbdkit_error, nbdkit_debug) are defined below.  Every
 * answer of the store is checked against a model kept here: the bytes
 * the disk must show, and per sector where they come from (below, data
 * in the overlay file, zero), as store.c documents it: a write makes
 * every sector it touches data; a zero makes the whole sectors it
 * covers zero and the partial first and last ones data; untouched
 * sectors read through to below.  With a size limit, whether a write
 * is refused with ENOSPC is predicted exactly from the data sectors
 * (a refused write must change nothing; a zero is never refused, as
 * nbdkit-overlay-filter(1) says).  Any disagreement aborts.
 *
 * Input (all little-endian; the ops go on while bytes are left):
 *
 *   3 bytes  disk size - 1, modulo 384 KiB (not necessarily whole sectors)
 *   1 byte   block size: 4096 << (b % 5)  (4K .. 64K)
 *   1 byte   bit 7 set: a limit of ((b & 0x7f) + 1) * 1000 bytes
 *   1 byte   low 4 bits n != 0: every nth read from below fails (EIO)
 *   then ops, each: 1 byte op, 3 bytes x, 3 bytes y (+ what the op takes)
 *     op & 7      0, 6 write (+1 byte: seed of the pseudo-random data),
 *                 1, 7 zero (store_write with buf NULL), 2 read and
 *                 compare, 3 store_map and compare, 4 store_foreach_held
 *                 and store_pread_data and compare, 5 write (+1 byte
 *                 k, then k % 65 bytes of data from the input itself;
 *                 y is not used)
 *     (op >> 3) & 3   where x puts the offset: anywhere, around a block
 *                 boundary, before the end, at a sector
 *     op >> 5     how y makes the length (0 included): anything left,
 *                 short, to the end, to about the next block boundary,
 *                 whole sectors, a few blocks, one byte
 *
 * At the end the whole disk is read, mapped and walked once more.
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "common.h"
#include "store.h"

#define SECTOR 512
#define MAX_SIZE (384 * 1024)

enum { S_BELOW, S_DATA, S_ZERO };

/* ------------------------------------------------------------ nbdkit */

static bool
verbose (void)
{
  static int v = -1;

  if (v == -1)
    v = getenv ("FUZZ_VERBOSE") != NULL;
  return v;
}

void
nbdkit_error (const char *fs, ...)
{
  va_list ap;

  if (!verbose ())
    return;
  va_start (ap, fs);
  fprintf (stderr, "store error: ");
  vfprintf (stderr, fs, ap);
  fprintf (stderr, "\n");
  va_end (ap);
}

void
nbdkit_debug (const char *fs, ...)
{
  (void) fs;
}

/* ------------------------------------------------------------ the model */

static uint64_t size, nsec, bs, limit;
static uint8_t model[MAX_SIZE];         /* what the disk shows */
static uint8_t state[MAX_SIZE / SECTOR + 1];   /* per sector: S_* */
static uint8_t buf[MAX_SIZE];

/* Reads from below: failures injected every fail_every calls while
 * armed (requests of the op being tested, never the checks). */
static unsigned fail_every, below_calls;
static bool armed, below_failed;

/* What the input did (printed under FUZZ_VERBOSE). */
static unsigned n_ops, n_writes, n_zeros, n_enospc, n_failed;

#define CHECK(cond, ...) do {                                   \
    if (!(cond)) {                                              \
      fprintf (stderr, "fuzz-store: " __VA_ARGS__);             \
      fprintf (stderr, " [size %lu, block %lu, limit %lu]\n",   \
               (unsigned long) size, (unsigned long) bs,        \
               (unsigned long) limit);                          \
      abort ();                                                 \
    }                                                           \
  } while (0)

/* What the layer below holds: the same pseudo-random bytes for every
 * input (made once). */
static uint8_t below_data[MAX_SIZE];
static const uint8_t zeros[MAX_SIZE];

static void
make_below (void)
{
  static bool done;

  if (done)
    return;
  for (uint64_t p = 0; p < MAX_SIZE; p++)
    below_data[p] = ((p + 1) * 0x9E3779B97F4A7C15ull) >> 56;
  done = true;
}

static int
below (void *opaque, void *b, uint32_t count, uint64_t offset, int *err)
{
  uint8_t *p = b;

  (void) opaque;
  CHECK (offset <= size && count <= size - offset,
         "read from below past the end: %lu + %u",
         (unsigned long) offset, count);
  if (armed && fail_every && ++below_calls % fail_every == 0) {
    below_failed = true;
    *err = EIO;
    return -1;
  }
  memcpy (p, below_data + offset, count);
  return 0;
}

static uint64_t
data_sectors (void)
{
  uint64_t n = 0;

  for (uint64_t s = 0; s < nsec; s++)
    n += state[s] == S_DATA;
  return n;
}

/* Bytes of sector s inside the disk. */
static uint64_t
sector_len (uint64_t s)
{
  return size - s * SECTOR < SECTOR ? size - s * SECTOR : SECTOR;
}

/* ------------------------------------------------------------ checks */

static void
check_read (struct store *st, uint64_t off, uint64_t len, bool inject)
{
  int err = 0, r;

  armed = inject;
  below_failed = false;
  r = store_read (st, buf, len, off, below, NULL, &err);
  armed = false;
  if (r == -1) {
    CHECK (below_failed && err == EIO,
           "read %lu+%lu failed (err %d) but below did not",
           (unsigned long) off, (unsigned long) len, err);
    return;
  }
  CHECK (r == 0, "read returned %d", r);
  if (memcmp (buf, model + off, len) == 0)
    return;
  for (uint64_t i = 0; i < len; i++)
    CHECK (buf[i] == model[off + i],
           "read %lu+%lu: byte %lu is 0x%02x, expected 0x%02x (sector %s)",
           (unsigned long) off, (unsigned long) len,
           (unsigned long) (off + i), buf[i], model[off + i],
           state[(off + i) / SECTOR] == S_BELOW ? "below" :
           state[(off + i) / SECTOR] == S_DATA ? "data" : "zero");
}

/* A run's bytes agree with the model and its sectors' states. */
static void
check_run (uint64_t off, uint64_t len, enum store_src src, const char *what)
{
  int want = src == SRC_BELOW ? S_BELOW : src == SRC_DATA ? S_DATA : S_ZERO;

  CHECK (src == SRC_BELOW || src == SRC_DATA || src == SRC_ZERO,
         "%s: bad source %d", what, (int) src);
  CHECK (len > 0 && off <= size && len <= size - off,
         "%s: run %lu+%lu outside the disk", what,
         (unsigned long) off, (unsigned long) len);
  for (uint64_t s = off / SECTOR; s <= (off + len - 1) / SECTOR; s++)
    CHECK (state[s] == want, "%s: sector %lu is %d, the run says %d",
           what, (unsigned long) s, state[s], want);
  if (src == SRC_ZERO)
    CHECK (memcmp (model + off, zeros, len) == 0,
           "%s: the zero run %lu+%lu holds data", what,
           (unsigned long) off, (unsigned long) len);
  if (src == SRC_BELOW)
    CHECK (memcmp (model + off, below_data + off, len) == 0,
           "%s: the below run %lu+%lu differs from below", what,
           (unsigned long) off, (unsigned long) len);
}

struct walk {
  uint64_t pos;                 /* where the next run must start */
  uint64_t held;                /* bytes in held runs */
  struct store *st;
};

static int
map_run (void *opaque, uint64_t off, uint64_t len, enum store_src src)
{
  struct walk *w = opaque;

  CHECK (off == w->pos, "map: run at %lu, expected %lu",
         (unsigned long) off, (unsigned long) w->pos);
  check_run (off, len, src, "map");
  w->pos = off + len;
  return 0;
}

static void
check_map (struct store *st, uint64_t off, uint64_t len)
{
  struct walk w = { off, 0, st };

  CHECK (store_map (st, off, len, map_run, &w) == 0, "store_map failed");
  CHECK (w.pos == off + len, "map of %lu+%lu ends at %lu",
         (unsigned long) off, (unsigned long) len, (unsigned long) w.pos);
}

/* store_foreach_held: in order, only held runs, all of them; the data
 * of data runs straight from the overlay file (what overlay-save
 * copies) is the model's. */
static int
held_run (void *opaque, uint64_t off, uint64_t len, enum store_src src)
{
  struct walk *w = opaque;

  CHECK (off >= w->pos, "held: run at %lu before the end of the last (%lu)",
         (unsigned long) off, (unsigned long) w->pos);
  CHECK (src != SRC_BELOW, "held: a below run at %lu", (unsigned long) off);
  check_run (off, len, src, "held");
  if (src == SRC_DATA) {
    CHECK (store_pread_data (w->st, buf, len, off) == 0,
           "store_pread_data %lu+%lu failed",
           (unsigned long) off, (unsigned long) len);
    CHECK (memcmp (buf, model + off, len) == 0,
           "store_pread_data %lu+%lu differs from the model",
           (unsigned long) off, (unsigned long) len);
  }
  w->pos = off + len;
  w->held += len;
  return 0;
}

static void
check_held (struct store *st)
{
  struct walk w = { 0, 0, st };
  uint64_t want = 0;

  CHECK (store_foreach_held (st, held_run, &w) == 0,
         "store_foreach_held failed");
  for (uint64_t s = 0; s < nsec; s++)
    if (state[s] != S_BELOW)
      want += sector_len (s);
  CHECK (w.held == want, "held runs cover %lu bytes, the model %lu",
         (unsigned long) w.held, (unsigned long) want);
}

/* ------------------------------------------------------------ writes */

static int
probe_run (void *opaque, uint64_t off, uint64_t len, enum store_src src)
{
  (void) off, (void) len;
  *(enum store_src *) opaque = src;
  return 0;
}

/* Sector s's state as store_map reports it. */
static int
sector_state (struct store *st, uint64_t s)
{
  enum store_src src = SRC_BELOW;

  CHECK (store_map (st, s * SECTOR, sector_len (s), probe_run, &src) == 0,
         "store_map of sector %lu failed", (unsigned long) s);
  return src == SRC_BELOW ? S_BELOW : src == SRC_DATA ? S_DATA : S_ZERO;
}

/* The state store_write gives sector s for a request [off, end). */
static int
new_state (uint64_t s, uint64_t off, uint64_t end, bool zero)
{
  bool whole = off <= s * SECTOR && s * SECTOR + SECTOR <= end;

  return zero && whole ? S_ZERO : S_DATA;
}

static void
do_write (struct store *st, uint64_t off, uint64_t len, const uint8_t *data)
{
  uint64_t end = off + len, s0 = off / SECTOR;
  uint64_t s1 = (end + SECTOR - 1) / SECTOR;
  uint64_t add = 0, have = data_sectors ();
  bool zero = data == NULL, enospc;
  const char *what = zero ? "zero" : "write";
  int err = 0, r;

  for (uint64_t s = s0; s < s1; s++)
    add += new_state (s, off, end, zero) == S_DATA && state[s] != S_DATA;
  /* Zeros are never refused, though their partial sectors count. */
  enospc = len > 0 && limit && !zero && (have + add) * SECTOR > limit;

  armed = true;
  below_failed = false;
  r = store_write (st, data, len, off, below, NULL, &err);
  armed = false;

  n_writes += !zero;
  n_zeros += zero;
  n_enospc += r == -1 && err == ENOSPC;
  n_failed += r == -1 && err != ENOSPC;
  if (r == -1 && err == ENOSPC) {
    CHECK (enospc, "%s %lu+%lu refused (ENOSPC) with %lu + %lu data "
           "sectors", what, (unsigned long) off, (unsigned long) len,
           (unsigned long) have, (unsigned long) add);
    /* Nothing changed: the reads and maps around show the old model. */
  }
  else if (r == -1) {
    CHECK (below_failed && err == EIO && !enospc,
           "%s %lu+%lu failed (err %d), below did not",
           what, (unsigned long) off, (unsigned long) len, err);
    /* A failed write may have done part of its work: each byte shows
     * its old or its new value, each sector its old or its new state.
     * Adopt what the store shows. */
    uint64_t a0 = s0 * SECTOR, a1 = s1 * SECTOR < size ? s1 * SECTOR : size;

    CHECK (store_read (st, buf, a1 - a0, a0, below, NULL, &err) == 0,
           "read after a failed write failed");
    for (uint64_t i = a0; i < a1; i++) {
      uint8_t nv = i < off || i >= end ? model[i] : zero ? 0 : data[i - off];
      CHECK (buf[i - a0] == model[i] || buf[i - a0] == nv,
             "after a failed write byte %lu is 0x%02x, neither old 0x%02x "
             "nor new 0x%02x", (unsigned long) i, buf[i - a0], model[i], nv);
      model[i] = buf[i - a0];
    }
    for (uint64_t s = s0; s < s1; s++) {
      int now = sector_state (st, s);
      CHECK (now == state[s] || now == new_state (s, off, end, zero),
             "after a failed write sector %lu is %d, neither old %d nor "
             "new %d", (unsigned long) s, now, state[s],
             new_state (s, off, end, zero));
      state[s] = now;
    }
  }
  else {
    CHECK (r == 0 && !enospc,
           "%s %lu+%lu returned %d, ENOSPC expected: %d",
           what, (unsigned long) off, (unsigned long) len, r, enospc);
    for (uint64_t s = s0; s < s1 && len > 0; s++)
      state[s] = new_state (s, off, end, zero);
    if (zero)
      memset (model + off, 0, len);
    else
      memcpy (model + off, data, len);
  }

  /* The request's sectors and one each side read and map as modelled. */
  {
    uint64_t c0 = s0 > 0 ? (s0 - 1) * SECTOR : 0;
    uint64_t c1 = (s1 + 1) * SECTOR < size ? (s1 + 1) * SECTOR : size;

    check_read (st, c0, c1 - c0, false);
    check_map (st, c0, c1 - c0);
  }
}

/* ------------------------------------------------------------ input */

struct input {
  const uint8_t *p;
  size_t n;
};

/* The next k bytes, little-endian; false when the input is used up. */
static bool
take (struct input *in, size_t k, uint64_t *v)
{
  if (in->n < k)
    return false;
  *v = 0;
  for (size_t i = 0; i < k; i++)
    *v |= (uint64_t) in->p[i] << (8 * i);
  in->p += k;
  in->n -= k;
  return true;
}

static uint64_t
clamp (int64_t v, uint64_t hi)
{
  return v < 0 ? 0 : (uint64_t) v > hi ? hi : (uint64_t) v;
}

static uint64_t
decode_offset (unsigned mode, uint64_t x)
{
  switch (mode) {
  case 0:
    return x % (size + 1);
  case 1:                       /* around a block boundary */
    return clamp ((int64_t) (((x >> 12) % (size / bs + 2)) * bs) +
                  (int64_t) (x & 0xfff) - 2048, size);
  case 2:                       /* before the end */
    return size - x % (size < 4096 ? size + 1 : 4096);
  default:                      /* at a sector */
    return clamp ((x % (nsec + 1)) * SECTOR, size);
  }
}

static uint64_t
decode_length (unsigned mode, uint64_t y, uint64_t off)
{
  uint64_t left = size - off;

  switch (mode) {
  case 0: case 1:
    return y % (left + 1);
  case 2:
    return clamp (y % 1024, left);
  case 3:
    return left;
  case 4:                       /* about to the next block boundary */
    return clamp ((int64_t) ((off / bs + 1) * bs) + (int64_t) (y & 0xff)
                  - 128 - (int64_t) off, left);
  case 5:
    return clamp ((y % 64) * SECTOR, left);
  case 6:
    return clamp (y % (4 * bs), left);
  default:
    return left ? 1 : 0;
  }
}

static uint8_t wbuf[MAX_SIZE + 8];

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t n)
{
  struct input in = { data, n };
  uint64_t v, op, x, y;
  struct store *st;

  if (!take (&in, 3, &v))
    return 0;
  size = v % MAX_SIZE + 1;
  nsec = (size + SECTOR - 1) / SECTOR;
  if (!take (&in, 1, &v))
    return 0;
  bs = 4096 << (v % 5);
  if (!take (&in, 1, &v))
    return 0;
  limit = v & 0x80 ? ((v & 0x7f) + 1) * 1000 : 0;
  if (!take (&in, 1, &v))
    return 0;
  fail_every = v & 0x0f;
  below_calls = 0;
  n_ops = n_writes = n_zeros = n_enospc = n_failed = 0;

  make_below ();
  memcpy (model, below_data, size);
  memset (state, S_BELOW, sizeof state);

  st = store_new (fuzz_dir (), bs, limit);
  CHECK (st != NULL, "store_new failed");
  CHECK (store_set_size (st, size) == 0, "store_set_size failed");
  CHECK (store_set_size (st, size) == 0, "store_set_size again failed");
  CHECK (store_set_size (st, size + 1) == -1,
         "store_set_size accepted a new size");

  while (take (&in, 1, &op) && take (&in, 3, &x) && take (&in, 3, &y)) {
    uint64_t off = decode_offset ((op >> 3) & 3, x);
    uint64_t len = decode_length (op >> 5, y, off);

    n_ops++;
    switch (op & 7) {
    case 0: case 6: {           /* pseudo-random data from a seed */
      uint64_t seed, r;
      if (!take (&in, 1, &seed))
        break;
      r = seed * 0x2545F4914F6CDD1Dull + off + 1;
      for (uint64_t i = 0; i < len; i += 8) {   /* 8 bytes at a time */
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        memcpy (wbuf + i, &r, 8);
      }
      do_write (st, off, len, wbuf);
      break;
    }
    case 1: case 7:
      do_write (st, off, len, NULL);
      break;
    case 2:
      check_read (st, off, len, true);
      break;
    case 3:
      check_map (st, off, len);
      break;
    case 4:
      check_held (st);
      break;
    case 5: {                   /* data from the input itself */
      uint64_t k;
      if (!take (&in, 1, &k))
        break;
      k = k % 65 < in.n ? k % 65 : in.n;
      memcpy (wbuf, in.p, k);
      in.p += k, in.n -= k;
      do_write (st, off, k < size - off ? k : size - off, wbuf);
      break;
    }
    }
  }

  check_read (st, 0, size, false);
  check_map (st, 0, size);
  check_held (st);
  store_free (st);
  if (verbose ())
    fprintf (stderr, "fuzz-store: size %lu, block %lu, limit %lu: %u ops, "
             "%u writes, %u zeros, %u refused (ENOSPC), %u failed (below)\n",
             (unsigned long) size, (unsigned long) bs, (unsigned long) limit,
             n_ops, n_writes, n_zeros, n_enospc, n_failed);
  return 0;
}
