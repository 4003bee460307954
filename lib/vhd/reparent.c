/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: pointing a differencing disk at its parent (vhdtool
 * set-parent, Hyper-V's Set-VHD -ParentPath; also the last step of a
 * merge into an ancestor, merge.c).
 *
 * What changes: the header's parent id (only when the caller accepts a
 * parent with another id), parent timestamp and parent name, and the
 * data of every locator whose kind we can write (W2ru, W2ku, Wi2r,
 * Wi2k, MacX), plus W2ru and W2ku themselves if the file lacks them.
 * Mac alias locators and unknown kinds are left alone.
 *
 * CRASH SAFETY.  The rule: nothing the current header refers to is
 * overwritten before the new header is in place.
 *
 *  1. New locator data goes where the current header does not point:
 *     a. in the unused tail of the locator's own reserved area, after
 *        the data it holds now ("tail": the entry will then start
 *        there, with the space that is left), or
 *     b. failing that, in new space after every piece of metadata and
 *        data, reserved by vhd_grow (alloc.c), the protocol that also
 *        places new blocks: the footer is first written at the new end
 *        of the file, then the locator data over the old footer's place
 *        ("move").
 *     An area shared with the header, the BAT or another locator (a
 *     malformed file, which check reports) is never written: such a
 *     locator is moved.
 *  2. fdatasync: the new locator data and footer are durable.
 *  3. The new header (parent id, timestamp, name, locator entries and
 *     its checksum) is written in one 1024-byte pwrite, then fdatasync.
 *
 * A kill before 3 leaves the old header, which refers only to bytes
 * that were not touched: the file opens exactly as before (a moved
 * footer leaves unreferenced space before it, which later allocations
 * skip).  A kill after 3 leaves the new header, whose locators were
 * made durable in 2.  So a kill at any point leaves either the old
 * parent link or the new one, complete, and running the command again
 * finishes the job.  Power loss adds two cases: the EOF footer written
 * in 1b lost while its zeroing reached the disk (the opener falls back
 * to the identical footer copy at offset 0, as after an interrupted
 * block allocation), and a device that can tear a 1024-byte write
 * between its two sectors, which would leave a header whose checksum
 * does not match (reported as such, never read as a wrong parent).
 */
#include <config.h>

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhd-format.h"

/* ------------------------------------------------------------ planning */

enum placement { UNCHANGED, TAIL, MOVE };

struct new_locator {
  uint8_t *data;                /* NULL: slot not rewritten */
  size_t len;
  enum placement how;
  uint64_t offset, space;       /* the new entry */
};

struct plan {
  struct vhd_header h;          /* the new header */
  struct new_locator loc[VHD_NUM_LOCATORS];
  uint64_t move_at, move_bytes; /* new space for moved locators */
};

static bool
writable_kind (uint32_t code)
{
  return code == VHD_LOC_W2RU || code == VHD_LOC_W2KU ||
         code == VHD_LOC_WI2R || code == VHD_LOC_WI2K ||
         code == VHD_LOC_MACX;
}

/* Is slot i's reserved area its own (sound, shared with nothing)? */
static bool
area_is_own (const struct vhd_file *f, int i)
{
  const struct vhd_header *h = &f->header;
  const struct vhd_locator *l = &h->loc[i];
  uint64_t space = vhd_locator_space_bytes (l->space);
  uint64_t s = l->offset, e = l->offset + space;
  uint64_t bat = h->table_offset;
  uint64_t bat_end = bat + ROUND_UP ((uint64_t) h->max_table_entries * 4,
                                     VHD_SECTOR);
  int j;

  if (space == 0 || l->length > space || s % VHD_SECTOR ||
      s > f->l.file_size || f->l.file_size - s < space ||
      overlaps (s, e, 0, f->footer.data_offset + VHD_HEADER_SIZE) ||
      overlaps (s, e, bat, bat_end) || e > f->footer_offset)
    return false;
  for (j = 0; j < VHD_NUM_LOCATORS; j++) {
    const struct vhd_locator *o = &h->loc[j];
    if (j != i && o->code != 0 &&
        overlaps (s, e, o->offset,
                  o->offset + vhd_locator_space_bytes (o->space)))
      return false;
  }
  return true;
}

/* Does slot i already hold exactly these bytes? */
static bool
same_data (const struct vhd_file *f, int i, const uint8_t *data, size_t len)
{
  const struct vhd_locator *l = &f->header.loc[i];
  uint8_t *cur;
  bool same;

  if (l->length != len || len == 0 || !area_is_own (f, i))
    return false;
  cur = malloc (len);
  if (cur == NULL)
    return false;
  same = full_pread (f->l.fd, cur, len, l->offset) == 0 &&
         memcmp (cur, data, len) == 0;
  free (cur);
  return same;
}

/* Decide where slot i's new data goes (step 1 of the argument). */
static void
place (const struct vhd_file *f, struct plan *pl, int i)
{
  const struct vhd_locator *l = &f->header.loc[i];
  struct new_locator *n = &pl->loc[i];
  uint64_t space = vhd_locator_space_bytes (l->space);
  uint64_t used = ROUND_UP ((uint64_t) l->length, VHD_SECTOR);

  if (l->code != 0 && same_data (f, i, n->data, n->len)) {
    n->how = UNCHANGED;
    n->offset = l->offset;
    n->space = space;
  }
  else if (l->code != 0 && area_is_own (f, i) && used + n->len <= space) {
    n->how = TAIL;
    n->offset = l->offset + used;
    n->space = space - used;
  }
  else {
    n->how = MOVE;
    n->offset = pl->move_at + pl->move_bytes;
    n->space = MAX (ROUND_UP (n->len, VHD_SECTOR), VHD_LOCATOR_MIN_SPACE);
    pl->move_bytes += n->space;
  }
}

static int
free_slot (const struct vhd_header *h, const struct plan *pl)
{
  int i;
  for (i = 0; i < VHD_NUM_LOCATORS; i++)
    if (h->loc[i].code == 0 && pl->loc[i].data == NULL)
      return i;
  return -1;
}

static bool
has_kind (const struct vhd_header *h, uint32_t code)
{
  int i;
  for (i = 0; i < VHD_NUM_LOCATORS; i++)
    if (h->loc[i].code == code)
      return true;
  return false;
}

static int
make_plan (const struct vhd_file *child, const struct vhd_file *parent,
           struct plan *pl)
{
  static const uint32_t wanted[] = { VHD_LOC_W2RU, VHD_LOC_W2KU };
  char *copy = strdup (child->l.path), *dir;
  const char *base = strrchr (parent->l.path, '/') + 1;
  uint8_t *name = NULL;
  size_t name_len, k;
  struct stat st;
  int i, r = -1;

  memset (pl, 0, sizeof *pl);
  pl->h = child->header;
  pl->move_at = ROUND_UP (MAX (MAX (child->metadata_end, child->data_end),
                               child->footer_offset), VHD_SECTOR);
  if (copy == NULL)
    goto nomem;
  dir = dirname (copy);

  name = vhd_utf8_to_utf16 (base, true, &name_len);
  if (name == NULL) {
    vhd_error ("%s: file name is not valid UTF-8", parent->l.path);
    goto out;
  }
  if (name_len > sizeof pl->h.parent_name) {
    vhd_error ("%s: file name is longer than 256 UTF-16 units",
               parent->l.path);
    errno = ENAMETOOLONG;
    goto out;
  }
  memset (pl->h.parent_name, 0, sizeof pl->h.parent_name);
  memcpy (pl->h.parent_name, name, name_len);
  memcpy (pl->h.parent_id, parent->footer.unique_id, 16);
  pl->h.parent_timestamp = fstat (parent->l.fd, &st) == 0
                           ? vhd_timestamp (st.st_mtime) : 0;

  for (i = 0; i < VHD_NUM_LOCATORS; i++)
    if (writable_kind (child->header.loc[i].code)) {
      pl->loc[i].data = vhd_locator_encode (child->header.loc[i].code, dir,
                                            parent->l.path, &pl->loc[i].len);
      if (pl->loc[i].data == NULL)
        goto bad_path;
    }
  /* Every file gets the two locators Windows reads, if a slot is free. */
  for (k = 0; k < sizeof wanted / sizeof wanted[0]; k++)
    if (!has_kind (&child->header, wanted[k]) &&
        (i = free_slot (&child->header, pl)) >= 0) {
      pl->h.loc[i].code = wanted[k];
      pl->loc[i].data = vhd_locator_encode (wanted[k], dir, parent->l.path,
                                            &pl->loc[i].len);
      if (pl->loc[i].data == NULL)
        goto bad_path;
    }

  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    struct new_locator *n = &pl->loc[i];
    if (n->data == NULL)
      continue;
    place (child, pl, i);
    pl->h.loc[i].space = n->space;      /* bytes, as every producer */
    pl->h.loc[i].length = n->len;
    pl->h.loc[i].offset = n->offset;
  }
  if (pl->move_bytes &&
      (pl->move_at + pl->move_bytes) / VHD_SECTOR > UINT32_MAX) {
    vhd_error ("%s: file cannot grow further for new locators",
               child->l.path);
    errno = ENOSPC;
    goto out;
  }
  r = 0;
  goto out;

 bad_path:
  vhd_error ("%s: cannot encode the path of %s in a locator: %m",
             child->l.path, parent->l.path);
  goto out;
 nomem:
  vhd_error ("%s: %m", child->l.path);
 out:
  free (copy);
  free (name);
  return r;
}

static void
free_plan (struct plan *pl)
{
  int i;
  for (i = 0; i < VHD_NUM_LOCATORS; i++)
    free (pl->loc[i].data);
}

/* ------------------------------------------------------------ writing */

static int
write_padded (struct vhd_file *f, const uint8_t *data, size_t len,
              uint64_t padded, uint64_t off)
{
  uint8_t *buf = calloc (1, padded);
  int r;

  if (buf == NULL)
    return -1;
  memcpy (buf, data, len);
  r = full_pwrite (f->l.fd, buf, padded, off);
  free (buf);
  return r;
}

/* Steps 1a and 1b. */
static int
write_locators (struct vhd_file *f, const struct plan *pl,
                vhd_step_fn step, void *opaque)
{
  int i;

  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    const struct new_locator *n = &pl->loc[i];
    if (n->data && n->how == TAIL &&
        write_padded (f, n->data, n->len, ROUND_UP (n->len, VHD_SECTOR),
                      n->offset) == -1)
      goto err;
  }
  if (pl->move_bytes == 0)
    return 0;

  /* The one way a VHD file grows (alloc.c). */
  if (vhd_grow (f, pl->move_at, pl->move_bytes, step, opaque) == -1)
    return -1;
  for (i = 0; i < VHD_NUM_LOCATORS; i++) {
    const struct new_locator *n = &pl->loc[i];
    if (n->data && n->how == MOVE &&
        write_padded (f, n->data, n->len, n->space, n->offset) == -1)
      goto err;
  }
  return 0;

 err:
  vhd_error ("%s: writing parent locators: %m", f->l.path);
  return -1;
}

int
vhd_reparent (struct vhd_file *child, const struct vhd_file *parent,
              vhd_step_fn step, void *opaque)
{
  uint8_t hbuf[VHD_HEADER_SIZE];
  struct plan pl;
  char *name;
  int i, r = -1;

  if (!child->l.writable || child->type != VHD_TYPE_DIFF) {
    vhd_error ("%s: not a differencing disk opened for writing",
               child->l.path);
    errno = EINVAL;
    return -1;
  }
  if (make_plan (child, parent, &pl) == -1)
    goto out;
  if (write_locators (child, &pl, step, opaque) == -1)
    goto out;
  if (fdatasync (child->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", child->l.path);
    goto out;
  }
  if (step)
    step (opaque, "locators-written");
  vhd_header_encode (&pl.h, hbuf);
  if (full_pwrite (child->l.fd, hbuf, sizeof hbuf,
                   child->footer.data_offset) == -1) {
    vhd_error ("%s: writing dynamic header: %m", child->l.path);
    goto out;
  }
  if (step)
    step (opaque, "header-written");
  if (fdatasync (child->l.fd) == -1) {
    vhd_error ("%s: fdatasync: %m", child->l.path);
    goto out;
  }
  child->header = pl.h;
  for (i = 0; i < VHD_NUM_LOCATORS; i++)
    if (pl.loc[i].data)
      child->metadata_end = MAX (child->metadata_end,
                                 pl.loc[i].offset + pl.loc[i].space);
  name = vhd_utf16_to_utf8 (pl.h.parent_name, sizeof pl.h.parent_name, true);
  if (name) {
    free (child->l.parent_name);
    child->l.parent_name = name;
  }
  r = 0;
 out:
  free_plan (&pl);
  return r;
}
