/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX log, replayed in memory.
 *
 * A header with a non-zero LogGuid says that metadata updates were
 * committed to the log and may not have reached their place in the
 * file (a host crashed).  The file must not be read without them.  We
 * never write a file we read (every parent, and the top opened
 * read-only): the active sequence is found exactly as MS-VHDX 2.3.3
 * says, its pages are rebuilt in memory, and every read of the file
 * (vhdx_pread) sees them in place of the bytes on disk, with zeros past
 * EOF up to the LastFileOffset the log guarantees.
 *
 * Finding the active sequence.  The ring is scanned from offset 0: a
 * run is the longest list of valid entries (checks of valid_entry) each
 * following the previous on the ring with the next sequence number; it
 * is a sequence if its last entry's Tail falls on one of its entries.
 * The sequence with the highest head sequence number wins, and its
 * active part runs from the head's Tail to the head.  No sequence:
 * the file is corrupt.  Entries of another LogGuid (older sessions) are
 * not entries at all, whatever their checksums.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "vhdx-format.h"

struct entry {
  uint64_t pos, length, tail, seq;
  uint32_t n_desc;
  uint64_t flushed, last;
};

struct ring {
  struct vhdx_file *f;
  const struct vhdx_header *h;
  uint8_t *buf;                 /* the whole log */
  uint64_t len;
  /* What valid_entry found at each 4 KiB page of the ring: 0 not yet
   * looked at, 1 no entry, 2 an entry (memo).  Each page is examined
   * once, so the scan costs O(log size) whatever the log holds. */
  uint8_t *seen;
  struct entry *memo;
};

/* The bytes at ring offset pos + x.  Entries start on 4 KiB pages and
 * the ring is a whole number of pages, so a 32-byte descriptor or a
 * 4 KiB page of an entry never straddles the end of the ring. */
static const uint8_t *
at (const struct ring *r, uint64_t pos, uint64_t x)
{
  return r->buf + (pos + x) % r->len;
}

/* Copy n bytes at ring offset pos (wrapping) into out. */
static void
ring_copy (const struct ring *r, uint64_t pos, uint8_t *out, uint64_t n)
{
  uint64_t first = MIN (n, r->len - pos);
  memcpy (out, r->buf + pos, first);
  memcpy (out + first, r->buf, n - first);
}

/* Is there a valid entry at pos (MS-VHDX 2.3.1 and 2.3.3: the checks
 * of docs section 4.6)?  Cheap checks first, the CRC last.  Every page
 * an entry's checks look at past its first starts with a descriptor or
 * "data" signature, so cannot start another entry: the pages examined
 * for different candidates are disjoint. */
static bool
check_entry (const struct ring *r, uint64_t pos, struct entry *e)
{
  const uint8_t *hd = at (r, pos, 0);
  uint64_t d, n_data = 0, desc_sectors, x;
  uint8_t first[VHDX_LOG_PAGE];
  uint32_t crc;

  if (memcmp (hd, "loge", 4) != 0 || memcmp (hd + 32, r->h->log_guid, 16) != 0)
    return false;
  e->pos = pos;
  e->length = le32 (hd + 8);
  e->tail = le32 (hd + 12);
  e->seq = le64 (hd + 16);
  e->n_desc = le32 (hd + 24);
  e->flushed = le64 (hd + 48);
  e->last = le64 (hd + 56);
  if (e->length < VHDX_LOG_PAGE || e->length % VHDX_LOG_PAGE ||
      e->length >= r->len || e->tail % VHDX_LOG_PAGE || e->tail >= r->len ||
      e->seq == 0 || le32 (hd + 28) != 0 ||
      e->flushed % VHDX_MiB || e->last % VHDX_MiB)
    return false;
  desc_sectors = ((uint64_t) e->n_desc + 2 + 127) / 128;
  if (desc_sectors * VHDX_LOG_PAGE > e->length)
    return false;

  for (d = 0; d < e->n_desc; d++) {
    const uint8_t *p = at (r, pos, 64 + 32 * d);
    uint64_t off = le64 (p + 16), len;
    bool data = memcmp (p, "desc", 4) == 0;

    if (!data && memcmp (p, "zero", 4) != 0)
      return false;
    if (le64 (p + 24) != e->seq)
      return false;
    len = data ? VHDX_LOG_PAGE : le64 (p + 8);
    if (!data && le32 (p + 4) != 0)
      return false;
    /* Never the identifier or the headers, never the log itself. */
    if (off % VHDX_LOG_PAGE || len % VHDX_LOG_PAGE || len == 0 ||
        off < (uint64_t) VHDX_REGION_OFFSET (0) || off + len < off ||
        overlaps (off, off + len, r->h->log_offset,
                  r->h->log_offset + r->h->log_length))
      return false;
    if (data) {
      const uint8_t *s;
      n_data++;
      if ((desc_sectors + n_data) * VHDX_LOG_PAGE > e->length)
        return false;
      s = at (r, pos, (desc_sectors + n_data - 1) * VHDX_LOG_PAGE);
      if (memcmp (s, "data", 4) != 0 || le32 (s + 4) != e->seq >> 32 ||
          le32 (s + 4092) != (uint32_t) e->seq)
        return false;
    }
  }
  if ((desc_sectors + n_data) * VHDX_LOG_PAGE != e->length)
    return false;

  memcpy (first, hd, sizeof first);
  memset (first + 4, 0, 4);
  crc = vhdx_crc32c_update (0, first, sizeof first);
  for (x = VHDX_LOG_PAGE; x < e->length; x += VHDX_LOG_PAGE)
    crc = vhdx_crc32c_update (crc, at (r, pos, x), VHDX_LOG_PAGE);
  return crc == le32 (hd + 4);
}

static bool
valid_entry (const struct ring *r, uint64_t pos, struct entry *e)
{
  uint64_t page = pos / VHDX_LOG_PAGE;

  if (r->seen[page] == 0) {
    r->seen[page] = check_entry (r, pos, &r->memo[page]) ? 2 : 1;
  }
  *e = r->memo[page];
  return r->seen[page] == 2;
}

/* Inside the circular range [a, a+n)? */
static bool
in_ring_range (const struct ring *r, uint64_t x, uint64_t a, uint64_t n)
{
  return (x + r->len - a) % r->len < n || n == r->len;
}

/* Index of the first patch ending after off (rp->n if none). */
static size_t
first_after (const struct vhdx_log_replay *rp, uint64_t off)
{
  size_t lo = 0, hi = rp->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (rp->v[mid].off + rp->v[mid].len <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Record that [off, off+len) reads as data (NULL: zeros), unless a
 * later entry already said what those bytes are: entries are applied
 * newest first, so only the parts nobody covered yet are added. */
static int
add_patch (struct vhdx_log_replay *rp, uint64_t off, uint64_t len,
           const uint8_t *data)
{
  uint64_t end = off + len;

  while (off < end) {
    uint64_t piece_end = end;
    size_t at = first_after (rp, off);
    if (at < rp->n && rp->v[at].off <= off) {
      /* Covered already: skip it. */
      uint64_t skip = rp->v[at].off + rp->v[at].len - off;
      if (data)
        data += MIN (skip, end - off);
      off += MIN (skip, end - off);
      continue;
    }
    if (at < rp->n)
      piece_end = MIN (end, rp->v[at].off);
    if (ARRAY_RESERVE (rp->v, rp->cap, rp->n + 1) == -1)
      return -1;
    memmove (&rp->v[at + 1], &rp->v[at], (rp->n - at) * sizeof rp->v[0]);
    rp->v[at] = (struct vhdx_patch) { off, piece_end - off, data };
    rp->n++;
    if (data)
      data += piece_end - off;
    off = piece_end;
  }
  return 0;
}

/* Apply one entry (newer ones already applied). */
static int
apply_entry (const struct ring *r, const struct entry *e,
             struct vhdx_log_replay *rp)
{
  uint8_t *whole = malloc (e->length);
  uint64_t desc_sectors = ((uint64_t) e->n_desc + 2 + 127) / 128;
  uint64_t d, n_data = 0;
  int ret = -1;

  if (whole == NULL)
    return -1;
  ring_copy (r, e->pos, whole, e->length);
  /* Later descriptors of the same entry win too: walk backwards. */
  for (d = 0; d < e->n_desc; d++)
    n_data += memcmp (whole + 64 + 32 * d, "desc", 4) == 0;
  for (d = e->n_desc; d-- > 0; ) {
    const uint8_t *p = whole + 64 + 32 * d;
    uint64_t off = le64 (p + 16);

    if (memcmp (p, "desc", 4) == 0) {
      const uint8_t *s = whole + (desc_sectors + --n_data) * VHDX_LOG_PAGE;
      uint8_t *page = rp->pages + rp->n_pages++ * VHDX_LOG_PAGE;

      memcpy (page, p + 8, 8);                  /* leading bytes */
      memcpy (page + 8, s + 8, 4084);
      memcpy (page + 4092, p + 4, 4);           /* trailing bytes */
      if (add_patch (rp, off, VHDX_LOG_PAGE, page) == -1)
        goto out;
    }
    else if (add_patch (rp, off, le64 (p + 8), NULL) == -1)
      goto out;
  }
  ret = 0;
 out:
  free (whole);
  return ret;
}

/* The run of consecutive valid entries starting at start (at most the
 * whole ring); returns how many, entries in *run. */
static size_t
build_run (const struct ring *r, uint64_t start, struct entry **run,
           size_t *cap, uint64_t *covered)
{
  size_t n = 0;
  uint64_t pos = start;
  struct entry e;

  *covered = 0;
  while (*covered < r->len && valid_entry (r, pos, &e) &&
         (n == 0 || e.seq == (*run)[n - 1].seq + 1) &&
         e.length <= r->len - *covered) {
    if (ARRAY_RESERVE (*run, *cap, n + 1) == -1)
      break;
    (*run)[n++] = e;
    *covered += e.length;
    pos = (pos + e.length) % r->len;
  }
  return n;
}

int
vhdx_log_replay (struct vhdx_file *f, const struct vhd_open_options *opts)
{
  const struct vhdx_header *h = &f->hdr[f->current];
  struct ring r = { f, h, NULL, h->log_length, NULL, NULL };
  struct entry *run = NULL, *best = NULL;
  size_t cap = 0, n, n_best = 0, first = 0, i;
  uint64_t start = 0, covered, pages = 0;
  struct vhdx_log_replay *rp = NULL;
  char guid[37];

  vhdx_guid_format (h->log_guid, guid);
  if (r.len > VHDX_MAX_LOG) {
    vhd_report (opts, VHD_ERROR, f->l.path, "log", "",
                "the log (LogGuid %s) needs replaying but is %" PRIu64
                " bytes long, more than the %" PRIu64 " this reader "
                "replays in memory", guid, r.len, VHDX_MAX_LOG);
    f->l.unusable = true;
    errno = ENOTSUP;
    return -1;
  }
  r.buf = malloc (r.len);
  r.seen = calloc (r.len / VHDX_LOG_PAGE, 1);
  r.memo = calloc (r.len / VHDX_LOG_PAGE, sizeof *r.memo);
  if (r.buf == NULL || r.seen == NULL || r.memo == NULL || full_pread (f->l.fd, r.buf, r.len, h->log_offset) == -1) {
    vhd_report (opts, VHD_ERROR, f->l.path, "log", "", "reading the log: %m");
    goto err;
  }

  /* MS-VHDX 2.3.3: scan the whole ring for sequences. */
  while (start < r.len) {
    n = build_run (&r, start, &run, &cap, &covered);
    if (n > 0) {
      const struct entry *head = &run[n - 1];
      size_t k;
      bool seq = false;

      /* The head's Tail must be the start of one of the run's entries. */
      for (k = 0; k < n; k++)
        if (run[k].pos == head->tail) {
          seq = in_ring_range (&r, head->tail, start, covered);
          break;
        }
      if (seq && (best == NULL || head->seq > best[n_best - 1].seq)) {
        free (best);
        best = malloc (n * sizeof *best);
        if (best == NULL)
          goto nomem;
        memcpy (best, run, n * sizeof *best);
        n_best = n;
        first = k;
      }
      /* MS-VHDX moves on by one page after a run that is not a
       * sequence; we move past the whole run, which finds the same
       * sequences in linear time.  A later start inside the run is
       * either inside an entry (its pages begin "desc", "zero" or
       * "data", never "loge": no entry) or an entry boundary, whose
       * run is a suffix of this one with the same head (an entry that
       * did not fit after the head would overlap this run's first
       * page, whose "loge" no page of a valid entry can hold), and
       * the head's Tail, outside [start, end), is outside every
       * suffix too. */
      start += covered;
      continue;
    }
    start += VHDX_LOG_PAGE;
  }
  if (best == NULL) {
    vhd_report (opts, VHD_ERROR, f->l.path, "log", "",
                "the header names log %s, but the log holds no valid "
                "sequence of its entries: the file is corrupt", guid);
    f->l.unusable = true;
    errno = EINVAL;
    goto err;
  }
  if (f->l.file_size < best[n_best - 1].flushed) {
    vhd_report (opts, VHD_ERROR, f->l.path, "log", "",
                "the file is %" PRIu64 " bytes, shorter than the %" PRIu64
                " its log says were durable (FlushedFileOffset): the file "
                "was truncated", f->l.file_size, best[n_best - 1].flushed);
    f->l.unusable = true;
    errno = EINVAL;
    goto err;
  }

  rp = calloc (1, sizeof *rp);
  if (rp == NULL)
    goto nomem;
  for (i = first; i < n_best; i++)
    pages += best[i].length / VHDX_LOG_PAGE;
  rp->pages = malloc (pages * VHDX_LOG_PAGE);
  if (rp->pages == NULL && pages)
    goto nomem;
  for (i = n_best; i-- > first; )
    if (apply_entry (&r, &best[i], rp) == -1)
      goto nomem;
  rp->entries = n_best - first;
  rp->first_seq = best[first].seq;
  rp->last_seq = best[n_best - 1].seq;
  rp->flushed_file_offset = best[n_best - 1].flushed;
  rp->last_file_offset = best[n_best - 1].last;
  f->replay = rp;
  f->data_end = MAX (f->l.file_size, rp->last_file_offset);
  vhd_report (opts, VHD_NOTE, f->l.path, "log", "",
              "the log (LogGuid %s) needs replaying: %u entries (sequence %"
              PRIu64 "..%" PRIu64 ") hold metadata updates not yet in "
              "place (the file was not closed cleanly); they are read "
              "from the log, the file is not written", guid, rp->entries,
              rp->first_seq, rp->last_seq);
  vhd_debug ("%s: log %s: replayed %u entries (sequence %" PRIu64 "..%"
             PRIu64 ") in memory: %zu ranges, LastFileOffset %" PRIu64,
             f->l.path, guid, rp->entries, rp->first_seq, rp->last_seq,
             rp->n, rp->last_file_offset);
  free (best);
  free (run);
  free (r.buf);
  free (r.seen);
  free (r.memo);
  return 0;

 nomem:
  vhd_report (opts, VHD_ERROR, f->l.path, "log", "", "replaying the log: %m");
 err:
  if (rp) {
    free (rp->v);
    free (rp->pages);
    free (rp);
  }
  free (best);
  free (run);
  free (r.buf);
  free (r.seen);
  free (r.memo);
  return -1;
}

void
vhdx_log_free (struct vhdx_file *f)
{
  struct vhdx_log_replay *rp[2] = { f->replay, f->replay_retired };

  for (int i = 0; i < 2; i++)
    if (rp[i]) {
      free (rp[i]->v);
      free (rp[i]->pages);
      free (rp[i]);
    }
  f->replay = f->replay_retired = NULL;
}

int
vhdx_pread (struct vhdx_file *f, void *buf, size_t n, uint64_t off)
{
  /* Atomic: a writer's first open retires the replay (logwrite.c)
   * while other connections may be reading. */
  const struct vhdx_log_replay *rp = __atomic_load_n (&f->replay,
                                                      __ATOMIC_ACQUIRE);
  uint8_t *out = buf;
  uint64_t end = off + n;
  size_t i;

  if (end < off || end > f->data_end) {
    errno = EIO;
    return -1;
  }
  if (end <= f->l.file_size) {
    if (full_pread (f->l.fd, buf, n, off) == -1)
      return -1;
  }
  else {
    uint64_t inside = off < f->l.file_size ? f->l.file_size - off : 0;
    if (inside && full_pread (f->l.fd, buf, inside, off) == -1)
      return -1;
    memset (out + inside, 0, n - inside);
  }
  if (rp == NULL || rp->n == 0)
    return 0;
  for (i = first_after (rp, off); i < rp->n && rp->v[i].off < end; i++) {
    const struct vhdx_patch *p = &rp->v[i];
    uint64_t s = MAX (p->off, off), e = MIN (p->off + p->len, end);
    if (p->data)
      memcpy (out + (s - off), p->data + (s - p->off), e - s);
    else
      memset (out + (s - off), 0, e - s);
  }
  return 0;
}
