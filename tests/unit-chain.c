/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests of the chain: create, write, read, zero, extents, flush,
 * reopen and concurrent writes, checked against an in-memory model of
 * what the guest must see (plain arrays updated in write order: no VHD
 * code is involved in computing expected content). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhd.h"
#include "tap.h"

#define SIZE (24ULL << 20)      /* 24 MiB: several blocks of each size */

static char dir[] = "/tmp/unit-chain.XXXXXX";
static uint8_t model[SIZE];
static uint8_t got[SIZE];
static unsigned seed = 12345;

static unsigned
rnd (void)
{
  seed = seed * 1103515245 + 12345;
  return (seed >> 8) & 0xFFFFFF;
}

static char *
path_of (const char *name)
{
  static char buf[8][256];
  static int i;
  i = (i + 1) % 8;
  snprintf (buf[i], sizeof buf[i], "%s/%s", dir, name);
  return buf[i];
}

static struct vhd_chain *
open_chain (const char *name, bool readonly)
{
  struct vhd_open_options o = { .readonly = readonly };
  struct vhd_chain *c = NULL;
  if (vhd_chain_open (path_of (name), &o, &c) == -1)
    return NULL;
  if (!readonly && vhd_chain_make_writable (c) == -1) {
    vhd_chain_close (c);
    return NULL;
  }
  return c;
}

static bool
chain_matches_model (struct vhd_chain *c)
{
  memset (got, 0xEE, sizeof got);
  if (vhd_chain_pread (c, got, SIZE, 0) == -1)
    return false;
  for (uint64_t i = 0; i < SIZE; i++)
    if (got[i] != model[i]) {
      printf ("# first difference at byte %" PRIu64 ": got %02x want %02x\n",
              i, got[i], model[i]);
      return false;
    }
  return true;
}

/* Random writes, some sector-aligned, some not, some crossing blocks. */
static bool
random_writes (struct vhd_chain *c, int n, uint8_t tag)
{
  static uint8_t buf[3 << 20];
  int i;

  for (i = 0; i < n; i++) {
    uint64_t len = 1 + rnd () % (i % 4 == 0 ? (3 << 20) - 1 : 9000);
    uint64_t off = ((uint64_t) rnd () * 16 + rnd ()) % (SIZE - len);
    if (i % 2)
      off &= ~511ULL, len = (len + 511) & ~511ULL;
    if (off + len > SIZE)
      len = SIZE - off;
    for (uint64_t j = 0; j < len; j++)
      buf[j] = tag ^ (uint8_t) (j * 31 + i);
    if (vhd_chain_pwrite (c, buf, len, off) == -1)
      return false;
    memcpy (model + off, buf, len);
  }
  return true;
}

/* Small reads at odd offsets, each compared with the model. */
static bool
odd_reads (struct vhd_chain *c)
{
  uint8_t buf[5000];
  int i;

  for (i = 0; i < 300; i++) {
    uint64_t len = 1 + rnd () % sizeof buf;
    uint64_t off = ((uint64_t) rnd () * 7) % (SIZE - len);
    if (vhd_chain_pread (c, buf, len, off) == -1 ||
        memcmp (buf, model + off, len) != 0) {
      printf ("# odd read %" PRIu64 "+%" PRIu64 " differs\n", off, len);
      return false;
    }
  }
  return true;
}

static bool
file_equal (const char *a, const uint8_t *content, size_t len)
{
  static uint8_t buf[SIZE + (1 << 20)];
  int fd = open (a, O_RDONLY);
  ssize_t r = read (fd, buf, sizeof buf);
  close (fd);
  return r == (ssize_t) len && memcmp (buf, content, len) == 0;
}

static uint8_t *
slurp (const char *a, size_t *len)
{
  static uint8_t buf[4][SIZE + (1 << 20)];
  static int i;
  int fd = open (a, O_RDONLY);
  ssize_t r;

  i = (i + 1) % 4;
  r = read (fd, buf[i], sizeof buf[i]);
  close (fd);
  *len = r < 0 ? 0 : r;
  return buf[i];
}

/* Extents must cover the disk and every zero extent must read zero. */
static int
check_extent (void *opaque, uint64_t off, uint64_t len, int layer)
{
  uint64_t *next = opaque;
  if (off != *next)
    return -1;
  if (layer < 0)
    for (uint64_t i = off; i < off + len && i < SIZE; i++)
      if (model[i] != 0)
        return -1;
  *next = off + len;
  return 0;
}

static bool
extents_consistent (struct vhd_chain *c)
{
  uint64_t next = 0;
  return vhd_chain_extents (c, 0, SIZE, check_extent, &next) == 0 &&
         next >= SIZE;
}

struct thread_arg {
  struct vhd_chain *c;
  int id;
  int ok;
};

/* Eight threads write interleaved sectors of the same fresh blocks:
 * every write must survive (no lost bitmap update, no double
 * allocation). */
static void *
writer_thread (void *p)
{
  struct thread_arg *a = p;
  uint8_t sector[512];
  uint64_t off;

  a->ok = 1;
  for (off = (uint64_t) a->id * 512; off < (8ULL << 20); off += 8 * 512) {
    memset (sector, 0x40 + a->id, sizeof sector);
    if (vhd_chain_pwrite (a->c, sector, 512, (16ULL << 20) + off) == -1)
      a->ok = 0;
  }
  return NULL;
}

int
main (void)
{
  struct vhd_create_params dyn = { .type = VHD_TYPE_DYNAMIC, .size = SIZE,
                                   .block_size = 1 << 20 };
  struct vhd_create_params diff = { .type = VHD_TYPE_DIFF };
  struct vhd_chain *c;
  size_t base_len, mid_len;
  uint8_t *base_copy, *mid_copy;
  pthread_t th[8];
  struct thread_arg args[8];
  int i;

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }

  /* Base: a dynamic disk with 1 MiB blocks. */
  ok (vhd_create (path_of ("base.vhd"), &dyn) == 0, "create dynamic base");
  ok (vhd_create (path_of ("base.vhd"), &dyn) == -1 && errno == EEXIST,
      "create refuses to overwrite");
  c = open_chain ("base.vhd", false);
  ok (c != NULL && vhd_chain_depth (c) == 1 && vhd_chain_size (c) == SIZE, "open base");
  ok (chain_matches_model (c), "new dynamic disk reads as zeros");
  ok (extents_consistent (c), "extents of an empty disk");
  ok (random_writes (c, 40, 0x11), "random writes into base");
  ok (chain_matches_model (c), "base reads back what was written");
  ok (odd_reads (c), "unaligned reads of base");
  ok (vhd_chain_close (c) == 0, "close base (flushes)");
  c = open_chain ("base.vhd", true);
  ok (c && chain_matches_model (c), "base content survives reopen");
  vhd_chain_close (c);
  base_copy = slurp (path_of ("base.vhd"), &base_len);

  /* Child with the parent's block size, grandchild with smaller blocks,
   * so a top block covers only part of a parent block. */
  diff.parent = path_of ("base.vhd");
  ok (vhd_create (path_of ("mid.vhd"), &diff) == 0, "create child");
  c = open_chain ("mid.vhd", false);
  ok (c && vhd_chain_depth (c) == 2, "child chain has two layers");
  ok (chain_matches_model (c), "fresh child shows the parent");
  ok (random_writes (c, 40, 0x22), "random writes into child");
  ok (chain_matches_model (c), "child reads back merged content");
  ok (odd_reads (c), "unaligned reads of child");
  ok (extents_consistent (c), "child extents consistent");
  ok (vhd_chain_zero (c, 3 << 20, 1000) == 0, "zero a range in child");
  memset (model + 1000, 0, 3 << 20);
  ok (chain_matches_model (c), "zeroed range reads zero, parent hidden");
  vhd_chain_close (c);
  ok (file_equal (path_of ("base.vhd"), base_copy, base_len),
      "parent byte-identical after writing the child");

  diff.parent = path_of ("mid.vhd");
  diff.block_size = 256 << 10;
  ok (vhd_create (path_of ("top.vhd"), &diff) == 0, "create grandchild "
      "with 256 KiB blocks");
  mid_copy = slurp (path_of ("mid.vhd"), &mid_len);
  c = open_chain ("top.vhd", false);
  ok (c && vhd_chain_depth (c) == 3, "three-layer chain");
  ok (chain_matches_model (c), "grandchild shows the chain");
  ok (random_writes (c, 60, 0x33), "random writes into grandchild");
  ok (chain_matches_model (c) && odd_reads (c), "grandchild content");
  ok (vhd_chain_flush (c) == 0, "flush");

  for (i = 0; i < 8; i++) {
    args[i] = (struct thread_arg) { c, i, 0 };
    pthread_create (&th[i], NULL, writer_thread, &args[i]);
  }
  for (i = 0; i < 8; i++)
    pthread_join (th[i], NULL);
  for (i = 0; i < 8; i++) {
    uint64_t off;
    for (off = (uint64_t) i * 512; off < (8ULL << 20); off += 8 * 512)
      memset (model + (16ULL << 20) + off, 0x40 + i, 512);
  }
  ok (args[0].ok && args[7].ok && chain_matches_model (c),
      "8 threads writing interleaved sectors of fresh blocks: nothing lost");
  ok (vhd_chain_close (c) == 0, "close grandchild");
  c = open_chain ("top.vhd", true);
  ok (c && chain_matches_model (c) && extents_consistent (c),
      "grandchild content survives reopen");
  vhd_chain_close (c);
  ok (file_equal (path_of ("base.vhd"), base_copy, base_len) &&
      file_equal (path_of ("mid.vhd"), mid_copy, mid_len),
      "both parents byte-identical");

  /* Read-only chains refuse writes. */
  c = open_chain ("top.vhd", true);
  ok (c && vhd_chain_pwrite (c, "x", 1, 0) == -1 && errno == EROFS,
      "read-only chain refuses writes");
  vhd_chain_close (c);

  /* A 40-deep chain, each layer writing one distinct sector run. */
  {
    char prev[64] = "top.vhd", name[64];
    int d;
    bool all = true;

    for (d = 0; d < 37 && all; d++) {
      snprintf (name, sizeof name, "deep%02d.vhd", d);
      diff.parent = path_of (prev);
      diff.block_size = 0;
      all = vhd_create (path_of (name), &diff) == 0 &&
            (c = open_chain (name, false)) != NULL;
      if (all) {
        uint8_t b[1536];
        uint64_t off = (uint64_t) d * 70000 + 333;
        memset (b, d + 1, sizeof b);
        all = vhd_chain_pwrite (c, b, sizeof b, off) == 0;
        memcpy (model + off, b, sizeof b);
        all = vhd_chain_close (c) == 0 && all;
      }
      strcpy (prev, name);
    }
    ok (all, "built a 40-layer chain");
    c = open_chain (prev, true);
    ok (c && vhd_chain_depth (c) == 40 && chain_matches_model (c),
        "40-layer chain reads the model");
    vhd_chain_close (c);
  }

  if (fork () == 0)
    execlp ("rm", "rm", "-rf", dir, (char *) NULL);
  return tap_done ();
}
