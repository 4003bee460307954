/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX block allocation table.
 *
 * Entry i of the BAT is payload block i - i / (chunk_ratio + 1) unless
 * (i + 1) is a multiple of chunk_ratio + 1: then it is the sector bitmap
 * block of chunk i / (chunk_ratio + 1) (MS-VHDX 2.5).
 *
 * Memory.  The table is not kept: a 64 TiB disk with 32 MiB blocks has
 * a 16 MiB BAT, and a chain has one per layer.  A few 4 KiB pages (512
 * entries, 16 GiB of disk at the default block size) are cached per
 * layer, with a lock, and refilled from the file (through the replayed
 * log, vhdx_pread).  Every entry is checked each time its page is read:
 * a file changed under us gives an error, never a read elsewhere.
 *
 * Writers keep the pages they changed in an overlay, in front of the
 * cache and the file, until the change is in the file (write.c takes
 * the dirty pages for a commit, logs them, writes them in place and
 * then drops them here): lookups always see the newest entries, and
 * the memory is bounded by the pages changed since the last flush.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "vhdx-format.h"

#define PAGE 4096
#define ENTRIES_PER_PAGE (PAGE / 8)
#define SLOTS 16

struct overlay_page {
  uint64_t page;
  bool dirty;                   /* changed since taken for a commit */
  uint8_t fresh[ENTRIES_PER_PAGE / 8];  /* see VHDX_BAT_FRESH */
  uint8_t data[PAGE];
};

struct vhdx_bat_cache {
  pthread_mutex_t lock;
  uint64_t page[SLOTS];         /* page number + 1; 0: empty */
  unsigned next;                /* round-robin victim */
  uint8_t data[SLOTS][PAGE];
  struct overlay_page **ov;     /* writers: sorted by page */
  size_t n_ov, cap_ov;
};

int
vhdx_bat_init (struct vhdx_file *f)
{
  f->bat_cache = calloc (1, sizeof *f->bat_cache);
  if (f->bat_cache == NULL)
    return -1;
  pthread_mutex_init (&f->bat_cache->lock, NULL);
  return 0;
}

void
vhdx_bat_free (struct vhdx_file *f)
{
  if (f->bat_cache) {
    size_t i;
    for (i = 0; i < f->bat_cache->n_ov; i++)
      free (f->bat_cache->ov[i]);
    free (f->bat_cache->ov);
    pthread_mutex_destroy (&f->bat_cache->lock);
    free (f->bat_cache);
    f->bat_cache = NULL;
  }
}

static bool
is_sb_index (const struct vhdx_file *f, uint64_t i)
{
  return (i + 1) % (f->chunk_ratio + (uint64_t) 1) == 0;
}

/* What is wrong with entry e at index i, or NULL.  why holds the text. */
static const char *
entry_problem (const struct vhdx_file *f, uint64_t i, uint64_t e,
               char *why, size_t len)
{
  unsigned state = VHDX_BAT_STATE (e);
  uint64_t off = VHDX_BAT_OFFSET (e), need;
  const struct vhdx_header *h = &f->hdr[f->current];
  bool sb = is_sb_index (f, i);

  if (VHDX_BAT_RESERVED (e)) {
    snprintf (why, len, "reserved bits set (entry 0x%016" PRIx64 ")", e);
    return why;
  }
  if (sb ? state != VHDX_SB_NOT_PRESENT && state != VHDX_SB_PRESENT &&
           state != VHDX_PARTIALLY_PRESENT
         : state == 4) {
    snprintf (why, len, "undefined %sstate %u",
              sb ? "sector bitmap " : "", state);
    return why;
  }
  if (state < VHDX_FULLY_PRESENT)
    return NULL;                /* no data: the offset is never used */
  if (sb)
    need = VHDX_MiB;
  else {
    uint64_t blk = i - i / (f->chunk_ratio + (uint64_t) 1);
    uint64_t start = blk * f->block_size;
    need = MIN ((uint64_t) f->block_size, f->virtual_size - start);
  }
  /* off is up to 2^64 - 1 MiB: off + need may wrap. */
  if (off < VHDX_HEADER_SECTION || need > f->data_end ||
      off > f->data_end - need) {
    snprintf (why, len, "%s at offset %" PRIu64 " lies %s",
              sb ? "sector bitmap block" : "block", off,
              off < VHDX_HEADER_SECTION ? "in the header section"
              : "past the end of the file");
    return why;
  }
  if (overlaps (off, off + need, f->bat_offset, f->bat_offset + f->bat_length) ||
      overlaps (off, off + need, f->meta_offset,
                f->meta_offset + f->meta_length) ||
      (h->log_length && overlaps (off, off + need, h->log_offset,
                                  h->log_offset + h->log_length))) {
    snprintf (why, len, "%s at offset %" PRIu64 " overlaps the %s",
              sb ? "sector bitmap block" : "block", off,
              overlaps (off, off + need, f->bat_offset,
                        f->bat_offset + f->bat_length) ? "BAT"
              : overlaps (off, off + need, f->meta_offset,
                          f->meta_offset + f->meta_length) ? "metadata region"
              : "log");
    return why;
  }
  return NULL;
}

static int
read_page (struct vhdx_file *f, uint64_t page, uint8_t *out)
{
  return vhdx_pread (f, out, PAGE, f->bat_offset + page * PAGE);
}

/* The overlay's index of page, or where it would go (*found false). */
static size_t
ov_find (const struct vhdx_bat_cache *c, uint64_t page, bool *found)
{
  size_t lo = 0, hi = c->n_ov;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->ov[mid]->page < page)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = lo < c->n_ov && c->ov[lo]->page == page;
  return lo;
}

static unsigned
cache_slot (const struct vhdx_bat_cache *c, uint64_t page)
{
  unsigned s;

  for (s = 0; s < SLOTS; s++)
    if (c->page[s] == page + 1)
      break;
  return s;
}

int
vhdx_bat_entry (struct vhdx_file *f, uint64_t i, uint64_t *entry)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  uint64_t page = i / ENTRIES_PER_PAGE;
  char why[160];
  unsigned s;
  uint64_t e;
  bool found;
  size_t o;

  pthread_mutex_lock (&c->lock);
  o = c->n_ov ? ov_find (c, page, &found) : (found = false, 0);
  if (found) {
    e = le64 (c->ov[o]->data + (i % ENTRIES_PER_PAGE) * 8);
    pthread_mutex_unlock (&c->lock);
    goto check;
  }
  s = cache_slot (c, page);
  if (s == SLOTS) {
    s = c->next;
    c->next = (c->next + 1) % SLOTS;
    c->page[s] = 0;
    if (read_page (f, page, c->data[s]) == -1) {
      pthread_mutex_unlock (&c->lock);
      vhd_error ("%s: reading the BAT at offset %" PRIu64 ": %m", f->l.path,
                 f->bat_offset + page * PAGE);
      return -1;
    }
    c->page[s] = page + 1;
  }
  e = le64 (c->data[s] + (i % ENTRIES_PER_PAGE) * 8);
  pthread_mutex_unlock (&c->lock);

 check:
  if (entry_problem (f, i, e, why, sizeof why)) {
    vhd_error ("%s: BAT entry %" PRIu64 ": %s", f->l.path, i, why);
    errno = EINVAL;
    return -1;
  }
  *entry = e;
  return 0;
}

/* ------------------------------------------------------------ writers */


/* The overlay page for page, made from the cache or the file (with the
 * lock held; NULL after a message). */
static struct overlay_page *
ov_get (struct vhdx_file *f, uint64_t page)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  struct overlay_page *p;
  bool found;
  size_t o = ov_find (c, page, &found);
  unsigned s;

  if (found)
    return c->ov[o];
  if (c->n_ov == c->cap_ov) {
    size_t cap = c->cap_ov ? 2 * c->cap_ov : 16;
    struct overlay_page **v = realloc (c->ov, cap * sizeof *v);
    if (v == NULL)
      goto nomem;
    c->ov = v;
    c->cap_ov = cap;
  }
  p = calloc (1, sizeof *p);
  if (p == NULL)
    goto nomem;
  p->page = page;
  s = cache_slot (c, page);
  if (s < SLOTS) {
    memcpy (p->data, c->data[s], PAGE);
    c->page[s] = 0;             /* the overlay is in front from now on */
  }
  else if (read_page (f, page, p->data) == -1) {
    vhd_error ("%s: reading the BAT at offset %" PRIu64 ": %m", f->l.path,
               f->bat_offset + page * PAGE);
    free (p);
    return NULL;
  }
  memmove (c->ov + o + 1, c->ov + o, (c->n_ov - o) * sizeof *c->ov);
  c->ov[o] = p;
  c->n_ov++;
  return p;

 nomem:
  vhd_error ("%s: BAT: %m", f->l.path);
  return NULL;
}

int
vhdx_bat_set (struct vhdx_file *f, uint64_t i, uint64_t entry, unsigned flags)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  uint64_t page = i / ENTRIES_PER_PAGE;
  unsigned j = i % ENTRIES_PER_PAGE, s;
  struct overlay_page *p = NULL;
  bool found = false;
  size_t o;

  pthread_mutex_lock (&c->lock);
  if (flags & VHDX_BAT_DIRTY)
    p = ov_get (f, page);
  else if (c->n_ov && (o = ov_find (c, page, &found), found))
    p = c->ov[o];
  else if ((s = cache_slot (c, page)) < SLOTS)
    /* The file holds the entry already: read it from there. */
    c->page[s] = 0;
  if (p) {
    put_le64 (p->data + 8 * j, entry);
    if (flags & VHDX_BAT_DIRTY)
      p->dirty = true;
    if (flags & VHDX_BAT_FRESH)
      p->fresh[j / 8] |= 1 << (j % 8);
    else
      p->fresh[j / 8] &= ~(1 << (j % 8));
  }
  pthread_mutex_unlock (&c->lock);
  if ((flags & VHDX_BAT_DIRTY) && p == NULL)
    return -1;
  return 0;
}

int
vhdx_bat_replace (struct vhdx_file *f, uint64_t i, uint64_t old_entry,
                  uint64_t entry)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  unsigned j = i % ENTRIES_PER_PAGE;
  struct overlay_page *p;
  int r = 0;

  pthread_mutex_lock (&c->lock);
  p = ov_get (f, i / ENTRIES_PER_PAGE);
  if (p == NULL)
    r = -1;
  else if (le64 (p->data + 8 * j) == old_entry) {
    put_le64 (p->data + 8 * j, entry);
    p->dirty = true;
    p->fresh[j / 8] &= ~(1 << (j % 8));
    r = 1;
  }
  pthread_mutex_unlock (&c->lock);
  return r;
}

int
vhdx_bat_take_dirty (struct vhdx_file *f, struct vhdx_bat_page **out,
                     size_t *n)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  struct vhdx_bat_page *v;
  size_t i, m = 0;

  pthread_mutex_lock (&c->lock);
  for (i = 0; i < c->n_ov; i++)
    m += c->ov[i]->dirty;
  v = malloc (m * sizeof *v + 1);
  if (v == NULL) {
    pthread_mutex_unlock (&c->lock);
    vhd_error ("%s: flush: %m", f->l.path);
    return -1;
  }
  for (i = 0, m = 0; i < c->n_ov; i++) {
    struct overlay_page *p = c->ov[i];
    if (!p->dirty)
      continue;
    v[m].page = p->page;
    memcpy (v[m].data, p->data, PAGE);
    memcpy (v[m].fresh, p->fresh, sizeof p->fresh);
    memset (p->fresh, 0, sizeof p->fresh);
    p->dirty = false;
    m++;
  }
  pthread_mutex_unlock (&c->lock);
  *out = v;
  *n = m;
  return 0;
}

void
vhdx_bat_retake (struct vhdx_file *f, const struct vhdx_bat_page *v, size_t n)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  size_t i, k, o;
  bool found;

  pthread_mutex_lock (&c->lock);
  for (i = 0; i < n; i++) {
    o = ov_find (c, v[i].page, &found);
    if (!found)                 /* cannot happen: only applied drops */
      continue;
    c->ov[o]->dirty = true;
    for (k = 0; k < sizeof v[i].fresh; k++)
      c->ov[o]->fresh[k] |= v[i].fresh[k];
  }
  pthread_mutex_unlock (&c->lock);
}

void
vhdx_bat_applied (struct vhdx_file *f)
{
  struct vhdx_bat_cache *c = f->bat_cache;
  size_t i, m = 0;

  pthread_mutex_lock (&c->lock);
  for (i = 0; i < c->n_ov; i++) {
    if (c->ov[i]->dirty)
      c->ov[m++] = c->ov[i];
    else
      free (c->ov[i]);
  }
  c->n_ov = m;
  pthread_mutex_unlock (&c->lock);
}

/* ------------------------------------------------------------ scans */

/* Read every entry in 1 MiB pieces; fn sees each (index, entry). */
static int
each_entry (struct vhdx_file *f,
            void (*fn) (void *opaque, uint64_t i, uint64_t e), void *opaque)
{
  const uint64_t per = VHDX_MiB / 8;
  uint8_t *buf = malloc (VHDX_MiB);
  uint64_t i, k, n;

  if (buf == NULL)
    return -1;
  for (i = 0; i < f->bat_entries; i += n) {
    n = MIN (per, f->bat_entries - i);
    if (vhdx_pread (f, buf, n * 8, f->bat_offset + i * 8) == -1) {
      free (buf);
      return -1;
    }
    for (k = 0; k < n; k++)
      fn (opaque, i + k, le64 (buf + k * 8));
  }
  free (buf);
  return 0;
}

struct counting {
  struct vhdx_file *f;
  uint64_t *counts;
};

static void
count_one (void *opaque, uint64_t i, uint64_t e)
{
  struct counting *c = opaque;
  /* A differencing BAT runs to the end of its last chunk: entries past
   * the last payload block are padding, not blocks. */
  if (!is_sb_index (c->f, i) &&
      vhdx_payload_index (c->f, c->f->l.n_blocks - 1) >= i)
    c->counts[VHDX_BAT_STATE (e)]++;
}

int
vhdx_bat_count (struct vhdx_file *f, uint64_t counts[8])
{
  struct counting c = { f, counts };

  memset (counts, 0, 8 * sizeof counts[0]);
  return each_entry (f, count_one, &c);
}

/* Check mode: every entry's problems, states the file's type does not
 * allow, and blocks that share bytes of the file. */
struct extent {
  uint64_t off, len, index;
};

struct checking {
  struct vhdx_file *f;
  const struct vhd_open_options *opts;
  struct extent *v;
  size_t n, cap;
  unsigned reported;
  bool nomem;
  /* Differencing: a payload entry of the current chunk is partially
   * present (its sector bitmap block must then be present), the first
   * such one. */
  bool partial_in_chunk;
  uint64_t first_partial;
};

#define MAX_REPORTS 20

static void
check_one (void *opaque, uint64_t i, uint64_t e)
{
  struct checking *k = opaque;
  struct vhdx_file *f = k->f;
  unsigned state = VHDX_BAT_STATE (e);
  bool sb = is_sb_index (f, i);
  char why[160];

  if (f->has_parent && sb) {
    if (k->partial_in_chunk && state == VHDX_SB_NOT_PRESENT &&
        k->reported++ < MAX_REPORTS)
      vhd_report (k->opts, VHD_ERROR, f->l.path, "BAT", "",
                  "entry %" PRIu64 ": the sector bitmap block is not "
                  "present, but block entry %" PRIu64 " of its chunk is "
                  "partially present", i, k->first_partial);
    k->partial_in_chunk = false;
  }
  else if (f->has_parent && state == VHDX_PARTIALLY_PRESENT &&
           !k->partial_in_chunk) {
    k->partial_in_chunk = true;
    k->first_partial = i;
  }
  if (entry_problem (f, i, e, why, sizeof why)) {
    if (k->reported++ < MAX_REPORTS)
      vhd_report (k->opts, VHD_ERROR, f->l.path, "BAT", "",
                  "entry %" PRIu64 ": %s", i, why);
    return;
  }
  if (!f->has_parent && !sb && state == VHDX_PARTIALLY_PRESENT)
    vhd_report (k->opts, VHD_WARN, f->l.path, "BAT", "",
                "entry %" PRIu64 ": a partially present block in a disk "
                "without a parent (read as fully present)", i);
  if (!f->has_parent && sb && state != VHDX_SB_NOT_PRESENT)
    vhd_report (k->opts, VHD_NOTE, f->l.path, "BAT", "",
                "entry %" PRIu64 ": a sector bitmap block in a disk "
                "without a parent (unused)", i);
  if (!sb && state == VHDX_UNMAPPED_DRAFT)
    vhd_report (k->opts, VHD_NOTE, f->l.path, "BAT", "",
                "entry %" PRIu64 ": state 5 (UNMAPPED of draft 0.95), "
                "read as unmapped", i);
  if (state >= VHDX_FULLY_PRESENT) {
    uint64_t blk = i - i / (f->chunk_ratio + (uint64_t) 1);
    uint64_t len = sb ? VHDX_MiB
      : MIN ((uint64_t) f->block_size, f->virtual_size - blk * f->block_size);
    if (ARRAY_RESERVE (k->v, k->cap, k->n + 1) == -1) {
      k->nomem = true;
      return;
    }
    k->v[k->n++] = (struct extent) { VHDX_BAT_OFFSET (e), len, i };
  }
}

static int
compare_extent (const void *a, const void *b)
{
  const struct extent *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

void
vhdx_bat_check (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  struct checking k = { f, opts, NULL, 0, 0, 0, false, false, 0 };
  size_t i;

  if (each_entry (f, check_one, &k) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "", "reading it: %m");
    goto out;
  }
  if (k.reported > MAX_REPORTS)
    vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                "%u more bad entries not listed", k.reported - MAX_REPORTS);
  if (k.nomem) {
    vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                "out of memory checking overlaps");
    goto out;
  }
  /* No present block: k.v is NULL, which qsort must not be given. */
  if (k.n > 1)
    qsort (k.v, k.n, sizeof *k.v, compare_extent);
  for (i = 1, k.reported = 0; i < k.n; i++)
    if (k.v[i].off < k.v[i - 1].off + k.v[i - 1].len &&
        k.reported++ < MAX_REPORTS)
      vhd_report (opts, VHD_ERROR, f->l.path, "BAT", "",
                  "entries %" PRIu64 " and %" PRIu64 " overlap at offset %"
                  PRIu64, k.v[i - 1].index, k.v[i].index, k.v[i].off);
 out:
  free (k.v);
}
