/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX parent locator: building it (new children,
 * create.c) and rewriting it (vhdtool set-parent, Hyper-V's Set-VHD
 * -ParentPath; also the last step of a merge into an ancestor).
 *
 * What set-parent changes: the parent locator item of the metadata
 * region (parent_linkage = the new parent's DataWriteGuid,
 * relative_path, absolute_win32_path; keys that named the old parent
 * and cannot be rebuilt here, volume_path and parent_linkage2, are
 * dropped) and its entry in the metadata table.  A merge also writes
 * parent_linkage2, the identity the merge target is about to get
 * (vhdx_expect_parent_id).  The FileWriteGuid
 * changes (the file's bytes do); the DataWriteGuid does not: the disk
 * shows the same content over a parent with the same content, and this
 * file's own children stay valid.
 *
 * CRASH SAFETY.  A pending log is first replayed into the file
 * (logwrite.c).  Then every changed page of the metadata region (the
 * table's page with the item's entry, the pages of the item's new
 * data) goes into ONE log entry (logwrite.c: durable before anything
 * is written in place), so a crash leaves either the old locator or,
 * once the entry is durable, the new one (by replay, ours or Hyper-V's),
 * never a table entry that disagrees with its item.  The header's
 * LogGuid goes back to zero once the pages are durable in place.
 * Running the command again after a crash finishes the job.
 */
#include <config.h>

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>

#include "vhdx-format.h"

#define META_TABLE 0x10000      /* the table's size: items lie past it */

/* One key/value of the locator, as UTF-16LE. */
struct kv16 {
  uint8_t *key, *value;
  size_t key_len, value_len;
};

/* The parent locator item (docs section 2.3): the keys Hyper-V writes
 * that mean something off Windows, in its order.  No volume_path (this
 * host has no volume GUIDs) and no parent_linkage2 (only a re-link in
 * progress writes one, section 5.2). */
int
vhdx_locator_build (const char *path, const struct vhdx_file *pf,
                    const char *child_dir, const uint8_t *linkage2,
                    uint8_t **out, size_t *out_len)
{
  char linkage[39], second[39], g[37];
  char *abs = vhd_windows_path (pf->l.path);
  char *rel = vhd_windows_relative_path (child_dir, pf->l.path);
  const char *text[4][2] = {
    { "parent_linkage", linkage },
    { "absolute_win32_path", abs },
    { "relative_path", rel },
    { "parent_linkage2", second },
  };
  struct kv16 kv[4] = { { NULL } };
  uint8_t *locator;
  size_t n = linkage2 ? 4 : 3, i, at, len = 20 + 12 * n;
  int r = -1;

  vhdx_guid_format (pf->hdr[pf->current].data_write_guid, g);
  snprintf (linkage, sizeof linkage, "{%s}", g);
  if (linkage2) {
    vhdx_guid_format (linkage2, g);
    snprintf (second, sizeof second, "{%s}", g);
  }
  if (abs == NULL || rel == NULL) {
    vhd_error ("%s: %m", path);
    goto out;
  }
  for (i = 0; i < n; i++) {
    kv[i].key = vhd_utf8_to_utf16 (text[i][0], false, &kv[i].key_len);
    kv[i].value = vhd_utf8_to_utf16 (text[i][1], false, &kv[i].value_len);
    if (kv[i].key == NULL || kv[i].value == NULL) {
      vhd_error ("%s: the parent's path %s is not valid UTF-8", path,
                 pf->l.path);
      goto out;
    }
    /* Lengths are 16-bit fields. */
    if (kv[i].value_len > UINT16_MAX - 1) {
      vhd_error ("%s: parent locator %s: the parent's path is too long "
                 "(%zu bytes as UTF-16, at most 65534)", path, text[i][0],
                 kv[i].value_len);
      errno = ENAMETOOLONG;
      goto out;
    }
    len += kv[i].key_len + kv[i].value_len;
  }
  locator = calloc (1, len);
  if (locator == NULL) {
    vhd_error ("%s: %m", path);
    goto out;
  }
  memcpy (locator, vhdx_locator_type, 16);
  put_le16 (locator + 18, n);
  /* Key, value, key, value... after the entries, as Hyper-V does;
   * offsets from the start of the item. */
  at = 20 + 12 * n;
  for (i = 0; i < n; i++) {
    uint8_t *e = locator + 20 + 12 * i;
    put_le32 (e, at);
    put_le16 (e + 8, kv[i].key_len);
    memcpy (locator + at, kv[i].key, kv[i].key_len);
    at += kv[i].key_len;
    put_le32 (e + 4, at);
    put_le16 (e + 10, kv[i].value_len);
    memcpy (locator + at, kv[i].value, kv[i].value_len);
    at += kv[i].value_len;
  }
  *out = locator;
  *out_len = len;
  r = 0;
 out:
  for (i = 0; i < n; i++) {
    free (kv[i].key);
    free (kv[i].value);
  }
  free (abs);
  free (rel);
  return r;
}

/* Where the new item of len bytes goes: where the old one is when it
 * fits before the next item (or the region's end), else after the
 * last item.  -1 after a message when it fits nowhere. */
static int
place_item (const struct vhdx_file *f, const struct vhdx_item *old,
            size_t len, uint64_t *at)
{
  uint64_t next = f->meta_length, last_end = META_TABLE;
  uint32_t i;

  for (i = 0; i < f->n_items; i++) {
    const struct vhdx_item *it = &f->items[i];
    if (it == old)
      continue;
    if (it->offset >= old->offset && it->offset < next)
      next = it->offset;
    last_end = MAX (last_end, (uint64_t) it->offset + it->length);
  }
  if (old->offset + (uint64_t) len <= next) {
    *at = old->offset;
    return 0;
  }
  last_end = MAX (last_end, (uint64_t) old->offset + old->length);
  if (last_end + len <= f->meta_length) {
    *at = last_end;
    return 0;
  }
  vhd_error ("%s: the new parent locator (%zu bytes) does not fit in the "
             "metadata region", f->l.path, len);
  errno = ENOSPC;
  return -1;
}

/* The metadata pages that change: the table entry of the item, the
 * item's data (len bytes at at). */
static int
changed_pages (struct vhdx_file *f, uint32_t index, uint64_t at,
               const uint8_t *item, size_t len, struct vhdx_page **out,
               size_t *n)
{
  uint64_t first = ROUND_DOWN (at, VHDX_LOG_PAGE);
  uint64_t end = ROUND_UP (at + len, VHDX_LOG_PAGE);
  size_t k, count = 1 + (end - first) / VHDX_LOG_PAGE;
  struct vhdx_page *p = calloc (count, sizeof *p);
  uint8_t *entry;

  if (p == NULL)
    goto err;
  /* The table entry (at 32 + 32 * index of the table). */
  p[0].off = f->meta_offset + ROUND_DOWN (32 + 32 * index, VHDX_LOG_PAGE);
  if (vhdx_pread (f, p[0].data, VHDX_LOG_PAGE, p[0].off) == -1)
    goto err;
  entry = p[0].data + (32 + 32 * index) % VHDX_LOG_PAGE;
  put_le32 (entry + 16, at);
  put_le32 (entry + 20, len);
  /* The item's pages, with the bytes around it as they are. */
  for (k = 1; k < count; k++) {
    uint64_t page = first + (k - 1) * VHDX_LOG_PAGE;
    uint64_t s = MAX (page, at), e = MIN (page + VHDX_LOG_PAGE, at + len);
    p[k].off = f->meta_offset + page;
    if (vhdx_pread (f, p[k].data, VHDX_LOG_PAGE, p[k].off) == -1)
      goto err;
    memcpy (p[k].data + (s - page), item + (s - at), e - s);
  }
  *out = p;
  *n = count;
  return 0;

 err:
  vhd_error ("%s: reading the metadata region: %m", f->l.path);
  free (p);
  return -1;
}

/* Point child at parent; linkage2: also accept a parent with that
 * DataWriteGuid. */
static int
relink (struct vhd_layer *child, const struct vhd_layer *parent,
        const uint8_t *linkage2, vhd_step_fn step, void *opaque)
{
  struct vhdx_file *f = vhdx_file (child);
  const struct vhdx_item *old = NULL;
  struct vhdx_page *pages = NULL;
  char *copy = strdup (child->path), *dir = NULL;
  uint8_t *item = NULL;
  size_t len, n = 0;
  uint64_t at;
  uint32_t i;
  int r = -1;

  for (i = 0; i < f->n_items; i++)
    if (!(f->items[i].flags & VHDX_ITEM_USER) &&
        memcmp (f->items[i].guid, vhdx_item_parent_locator, 16) == 0)
      old = &f->items[i];
  if (old == NULL) {
    vhd_error ("%s: has no parent locator item to rewrite", child->path);
    errno = EINVAL;
    goto out;
  }
  if (copy == NULL || (dir = realpath (dirname (copy), NULL)) == NULL) {
    vhd_error ("%s: %m", child->path);
    goto out;
  }
  if (vhdx_locator_build (child->path, vhdx_file ((struct vhd_layer *) parent),
                          dir, linkage2, &item, &len) == -1 ||
      place_item (f, old, len, &at) == -1 ||
      changed_pages (f, old - f->items, at, item, len, &pages, &n) == -1)
    goto out;
  /* Table and item must change together: one log entry (about 120
   * pages at the smallest log, far more than any locator takes). */
  if (n > vhdx_log_max_pages (f)) {
    vhd_error ("%s: the new parent locator is too large (%zu pages)",
               child->path, n);
    errno = ENOSPC;
    goto out;
  }
  if (vhdx_log_replay_into_file (f) == -1 ||
      vhdx_log_begin (f, NULL) == -1)
    goto out;
  if (vhdx_log_pages (f, pages, n) == -1)
    goto out;
  if (step)
    step (opaque, "locator-written");
  if (vhdx_log_end (f) == -1)
    goto out;
  r = 0;
 out:
  free (pages);
  free (item);
  free (copy);
  free (dir);
  return r;
}

int
vhdx_set_parent (struct vhd_layer *child, const struct vhd_layer *parent,
                 vhd_step_fn step, void *opaque)
{
  return relink (child, parent, NULL, step, opaque);
}

/* Note <12> of MS-VHDX 2.6.2.6.3, the safe path through a merge: the
 * identity the parent is about to get is first recorded in the child
 * as parent_linkage2, then the parent changes; the child opens over
 * the parent before, during and after. */
int
vhdx_expect_parent_id (struct vhd_layer *child,
                       const struct vhd_layer *parent, const uint8_t id[16])
{
  return relink (child, parent, id, NULL, NULL);
}
