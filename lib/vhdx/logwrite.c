/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: writing VHDX metadata crash-safely: header updates and
 * the log (MS-VHDX 2.2.2 and 2.3; docs sections 4.9 and 4.10).
 *
 * CRASH SAFETY.
 *
 * Headers.  There are two header slots; the current one is the valid
 * one with the higher sequence number.  An update writes the other
 * slot with the next sequence number and syncs.  A crash mid-write
 * leaves that slot with a bad CRC-32C (or its old, lower number): the
 * old header stays current.  After the sync the new one is.
 *
 * The log.  Every change to the region tables, the metadata region, the
 * BAT or a sector bitmap block is a set of whole 4 KiB pages, written
 * like this (vhdx_log_pages):
 *   1. an entry holding the new pages (descriptors and data sectors,
 *      CRC-32C over the whole entry, sequence number spread over every
 *      data sector) is written at the head of the ring and synced: the
 *      change is now committed: any reader replays it;
 *   2. the pages are written in place;
 *   3. once every entry of the change is written, a sync: the pages are
 *      durable in place, and the next entry's Tail may move past them.
 * A crash before (1) completes leaves an entry that fails its CRC or
 * sequence checks: it does not exist, and the file is as before.  After
 * (1), replay (ours in memory, in the file at the next writable open;
 * Hyper-V's) rebuilds every page from the entries from Tail on, so
 * partial in-place writes of (2) do not matter.  A change too large for
 * one entry becomes several, each a consistent state on its own (the
 * writer orders them: write.c).
 *
 * Each entry's Tail names the oldest entry whose pages may not yet be
 * durable in place; entries are contiguous with consecutive sequence
 * numbers from there, so the head's sequence is found as MS-VHDX 2.3.3
 * says.  The ring never fills: when an entry would not fit in the free
 * space (keeping one 4 KiB sector free, so head never meets tail), the
 * pages written so far are synced and Tail moves to the last entry
 * written, which is never overwritten before the next entry is
 * complete: the ring always holds a valid sequence (no entry is larger
 * than half the ring, so two always fit).
 *
 * A session starts (vhdx_log_begin) by writing an empty entry under a
 * fresh LogGuid and syncing, and only then the header naming that
 * LogGuid (never a header naming a log without a valid entry, qemu's
 * window, pitfall 10).  A clean end (vhdx_log_end) writes a header with
 * LogGuid 0 once every entry is durable in place.  FlushedFileOffset is
 * a file size known durable, LastFileOffset the size that holds every
 * structure the entry refers to (both whole MiB).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhdx-format.h"


static int
sync_file (struct vhdx_file *f)
{
  /* Read before the sync: every growth up to this size has completed
   * (write.c grows the file, then the size), so the sync covers it. */
  uint64_t size = __atomic_load_n (&f->l.file_size, __ATOMIC_ACQUIRE);

  if (fdatasync (f->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", f->l.path);
    return -1;
  }
  f->log.durable_size = size;
  return 0;
}

/* Everything written so far is durable in place: entries before the
 * last are free space again.  The last one stays (its Tail is where the
 * next sequence starts): until the next entry is complete it is the
 * only valid entry of the ring, and overwriting it first would leave a
 * log with no valid sequence, a file the spec calls corrupt.
 * Replaying it again is harmless: its pages are in place already, and
 * later entries follow it. */
static void
checkpoint (struct vhdx_log_writer *lw)
{
  lw->tail = lw->last;
  lw->used = lw->last_len;
}


int
vhdx_header_update (struct vhdx_file *f, const uint8_t *file_write,
                    const uint8_t *data_write, const uint8_t *log_guid)
{
  struct vhdx_header h = f->hdr[f->current];
  int slot = !f->current;
  uint8_t b[VHDX_HEADER_SIZE] = { 0 };

  h.seq = MAX (f->hdr[0].valid ? f->hdr[0].seq : 0,
               f->hdr[1].valid ? f->hdr[1].seq : 0) + 1;
  if (file_write)
    memcpy (h.file_write_guid, file_write, 16);
  if (data_write)
    memcpy (h.data_write_guid, data_write, 16);
  if (log_guid)
    memcpy (h.log_guid, log_guid, 16);
  memcpy (b, "head", 4);
  put_le64 (b + 8, h.seq);
  memcpy (b + 16, h.file_write_guid, 16);
  memcpy (b + 32, h.data_write_guid, 16);
  memcpy (b + 48, h.log_guid, 16);
  put_le16 (b + 64, h.log_version);
  put_le16 (b + 66, h.version);
  put_le32 (b + 68, h.log_length);
  put_le64 (b + 72, h.log_offset);
  h.checksum = vhdx_crc32c (b, sizeof b, 4);
  put_le32 (b + 4, h.checksum);
  h.valid = true;
  if (full_pwrite (f->l.fd, b, sizeof b, VHDX_HEADER_OFFSET (slot)) == -1) {
    vhd_error ("%s: writing header %d: %m", f->l.path, slot + 1);
    return -1;
  }
  if (sync_file (f) == -1)
    return -1;
  f->hdr[slot] = h;
  f->current = slot;
  memcpy (f->l.id, h.data_write_guid, 16);
  return 0;
}

/* Bytes of an entry carrying n pages: descriptor sectors (the 64-byte
 * header counts as two descriptors), then one data sector per page. */
static uint64_t
entry_length (size_t n)
{
  return VHDX_LOG_PAGE * ((n + 2 + 127) / 128 + n);
}

/* Write the entry for pages p[0..n) at the head (it may wrap). */
static int
write_entry (struct vhdx_file *f, const struct vhdx_page *p, size_t n)
{
  const struct vhdx_header *h = &f->hdr[f->current];
  struct vhdx_log_writer *lw = &f->log;
  uint64_t len = entry_length (n), first;
  uint64_t desc_sectors = (n + 2 + 127) / 128;
  uint8_t *e = calloc (1, len);
  size_t i;
  int r = -1;

  if (e == NULL) {
    vhd_error ("%s: log entry: %m", f->l.path);
    return -1;
  }
  memcpy (e, "loge", 4);
  put_le32 (e + 8, len);
  put_le32 (e + 12, lw->tail);
  put_le64 (e + 16, lw->seq);
  put_le32 (e + 24, n);
  memcpy (e + 32, lw->guid, 16);
  put_le64 (e + 48, ROUND_DOWN (lw->durable_size, VHDX_MiB));
  put_le64 (e + 56, ROUND_UP (f->l.file_size, VHDX_MiB));
  for (i = 0; i < n; i++) {
    uint8_t *d = e + 64 + 32 * i;
    uint8_t *s = e + (desc_sectors + i) * VHDX_LOG_PAGE;

    memcpy (d, "desc", 4);
    memcpy (d + 4, p[i].data + 4092, 4);
    memcpy (d + 8, p[i].data, 8);
    put_le64 (d + 16, p[i].off);
    put_le64 (d + 24, lw->seq);
    memcpy (s, "data", 4);
    put_le32 (s + 4, lw->seq >> 32);
    memcpy (s + 8, p[i].data + 8, 4084);
    put_le32 (s + 4092, lw->seq);
  }
  put_le32 (e + 4, vhdx_crc32c (e, len, 4));

  first = MIN (len, h->log_length - lw->head);
  if (full_pwrite (f->l.fd, e, first, h->log_offset + lw->head) == -1 ||
      (len > first &&
       full_pwrite (f->l.fd, e + first, len - first, h->log_offset) == -1)) {
    vhd_error ("%s: writing the log: %m", f->l.path);
    goto out;
  }
  lw->last = lw->head;
  lw->last_len = len;
  lw->head = (lw->head + len) % h->log_length;
  lw->used += len;
  lw->seq++;
  r = 0;
 out:
  free (e);
  return r;
}

int
vhdx_log_begin (struct vhdx_file *f, const uint8_t *data_write)
{
  struct vhdx_log_writer *lw = &f->log;
  uint8_t file_write[16];
  const struct vhdx_header *h = &f->hdr[f->current];

  if (h->log_length < VHDX_MiB) {
    vhd_error ("%s: the file has no log (header: log length %u): it cannot "
               "be written crash-safely", f->l.path, h->log_length);
    errno = ENOTSUP;
    return -1;
  }
  /* MS-VHDX 2.2.2: a new FileWriteGuid before any other byte of the
   * file changes; then the empty entry, durable; only then a header
   * naming its log (never a header naming a log without a valid
   * entry). */
  vhdx_guid_new (file_write);
  if (vhdx_header_update (f, file_write, NULL, NULL) == -1)
    return -1;
  vhdx_guid_new (lw->guid);
  lw->seq = 1;
  lw->head = lw->tail = lw->used = 0;
  if (write_entry (f, NULL, 0) == -1 || sync_file (f) == -1)
    return -1;
  if (vhdx_header_update (f, NULL, data_write, lw->guid) == -1)
    return -1;
  lw->live = true;
  return 0;
}

/* Pages that fit in one entry in the free part of the ring. */
static size_t
fitting (const struct vhdx_file *f, size_t n)
{
  uint64_t len = f->hdr[f->current].log_length;
  /* One sector always free (head never meets tail), and no entry over
   * half the rest: after a checkpoint the last entry stays, and the
   * next must fit beside it. */
  uint64_t room = MIN (len - VHDX_LOG_PAGE - f->log.used,
                       (len - VHDX_LOG_PAGE) / 2);
  size_t k = MIN (n, room / VHDX_LOG_PAGE);

  while (k > 0 && entry_length (k) > room)
    k--;
  return k;
}

int
vhdx_log_pages (struct vhdx_file *f, const struct vhdx_page *p, size_t n)
{
  struct vhdx_log_writer *lw = &f->log;
  size_t i = 0, k, j;

  if (!lw->live) {
    vhd_error ("%s: internal error: metadata update without a log",
               f->l.path);
    errno = EINVAL;
    return -1;
  }
  while (i < n) {
    k = fitting (f, n - i);
    if (k == 0) {
      /* Step 3 early: the pages written so far are durable in place,
       * their entries need no replay, the ring is free again. */
      if (sync_file (f) == -1)
        return -1;
      checkpoint (lw);
      continue;
    }
    if (write_entry (f, p + i, k) == -1 || sync_file (f) == -1)
      return -1;
    for (j = i; j < i + k; j++)
      if (full_pwrite (f->l.fd, p[j].data, VHDX_LOG_PAGE, p[j].off) == -1) {
        vhd_error ("%s: writing metadata at offset %" PRIu64 ": %m",
                   f->l.path, p[j].off);
        return -1;
      }
    i += k;
  }
  if (sync_file (f) == -1)
    return -1;
  checkpoint (lw);
  return 0;
}

size_t
vhdx_log_max_pages (const struct vhdx_file *f)
{
  struct vhdx_file copy = *f;

  /* The most a fresh log (its empty first entry kept) takes at once. */
  copy.log.used = VHDX_LOG_PAGE;
  return fitting (&copy, SIZE_MAX);
}

int
vhdx_log_end (struct vhdx_file *f)
{
  static const uint8_t zero[16];

  if (!f->log.live)
    return 0;
  if (vhdx_header_update (f, NULL, NULL, zero) == -1)
    return -1;
  f->log.live = false;
  return 0;
}

int
vhdx_log_replay_into_file (struct vhdx_file *f)
{
  static const uint8_t zero[16], zeros[65536];
  const struct vhdx_log_replay *rp = f->replay;
  uint8_t file_write[16];
  struct stat st;
  size_t i;

  if (rp == NULL)
    return 0;
  /* docs 4.9: a new FileWriteGuid first, the same DataWriteGuid (the
   * replay only completes updates already committed: children made
   * against this content stay valid), the log still named. */
  vhdx_guid_new (file_write);
  if (vhdx_header_update (f, file_write, NULL, NULL) == -1)
    return -1;
  for (i = 0; i < rp->n; i++) {
    const struct vhdx_patch *p = &rp->v[i];
    uint64_t done;

    for (done = 0; done < p->len; ) {
      uint64_t m = p->data ? p->len - done : MIN (p->len - done, sizeof zeros);
      if (full_pwrite (f->l.fd, p->data ? p->data + done : zeros, m,
                       p->off + done) == -1) {
        vhd_error ("%s: replaying the log at offset %" PRIu64 ": %m",
                   f->l.path, p->off + done);
        return -1;
      }
      done += m;
    }
  }
  if (f->l.file_size < rp->last_file_offset &&
      ftruncate (f->l.fd, rp->last_file_offset) == -1) {
    vhd_error ("%s: extending to the log's LastFileOffset: %m", f->l.path);
    return -1;
  }
  if (fstat (f->l.fd, &st) == -1) {
    vhd_error ("%s: fstat: %m", f->l.path);
    return -1;
  }
  f->l.file_size = st.st_size;
  if (sync_file (f) == -1 || vhdx_header_update (f, NULL, NULL, zero) == -1)
    return -1;
  vhd_debug ("%s: log replayed into the file (%u entries)", f->l.path,
             rp->entries);
  /* The file now holds what the replay showed: reads go to it.  A read
   * running now may still use the patches (the same bytes): they are
   * freed at close. */
  f->data_end = f->l.file_size;
  f->replay_retired = f->replay;
  __atomic_store_n (&f->replay, NULL, __ATOMIC_RELEASE);
  return 0;
}
