/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: merging a differencing disk into an ancestor (vhdtool
 * merge, Hyper-V's Merge-VHD).
 *
 * FILE is layer L0 of its chain, its parent L1, and so on; the target
 * T is Lk (k = 1, the parent, unless an ancestor is named).  Afterwards
 * T shows exactly what FILE showed, and L0 .. Lk-1 are removed.
 *
 * CRASH SAFETY AND RESUMING.
 *
 *  0. Locks: L0 .. Lk-1 exclusive (nobody may use files that are being
 *     merged away), T exclusive through its own writable chain, the
 *     layers under T shared.  The chain that reads FILE's view takes no
 *     locks of its own: flock locks belong to open file descriptions,
 *     and its descriptions of T would conflict with the writable one.
 *  1. The journal (journal.c) records FILE, T and the intermediates
 *     with their unique ids, and the identity T will have: a VHDX
 *     file's DataWriteGuid changes when it is first written (MS-VHDX),
 *     so the merge picks the new one now (T's writer uses it: the same
 *     on every re-run).
 *  1b. VHDX: the layer above T records that identity as its
 *     parent_linkage2 (one log entry, lib/vhdx/reparent.c), so FILE's
 *     chain still opens once T has it; T's other children do not
 *     (they are invalid after a merge anyway, and now detectably).
 *  2. Copy: every sector that L0 .. Lk-1 hold is written into T, with
 *     the content FILE shows there, through T's normal write path
 *     (write.c: crash-safe allocation; bitmaps and BAT at flush).  Only
 *     sectors held above T are written, and FILE's view of exactly those
 *     never comes from T: however far the copy got, FILE's view is
 *     unchanged, and copying again writes the same bytes.
 *  3. T is flushed: it now shows FILE's view everywhere.
 *  4. If k > 1, FILE is re-pointed at T (reparent.c: the new header
 *     replaces the old in one write).  FILE over T shows FILE's view
 *     too, since T now holds it wherever L1 .. Lk-1 held anything; and
 *     FILE no longer needs the intermediates.
 *  5. The intermediates are removed (each only if its unique id is the
 *     recorded one), and their directories synced.
 *  6. FILE is removed, and its directory synced.
 *  7. The journal is removed.
 *
 * Killed anywhere before 6, FILE still exists, opens (through L1 .. Lk-1
 * before the header write of step 4, through T after it) and shows what
 * it showed.  Running the same command again finds the journal, checks
 * that it records this same merge, and redoes every step: 2 and 3 write
 * the same data again, 4 finds FILE already pointing at T (or does it),
 * 5 removes whatever the journal lists and still exists (the journal is
 * how they are found once FILE no longer leads to them).  Killed
 * between 6 and 7, FILE is gone and the journal alone finishes the job.
 * Against power loss, each step is synced before the next begins (T's
 * flush before FILE changes, FILE's header before the intermediates go,
 * the directories before FILE goes), so the disk never holds the
 * effect of a later step without the earlier ones.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "internal.h"

struct merge {
  const struct vhd_merge_params *p;
  const char *jpath;
  struct merge_journal j;
  bool have_journal;
  struct vhd_chain *locks;      /* FILE's chain, holding the locks */
  struct vhd_chain *view;       /* FILE's chain, read for the copy */
  struct vhd_chain *target;     /* T's chain, writable */
  unsigned k;                   /* T's depth in FILE's chain */
  uint8_t new_id[16];           /* the identity T gets (VHDX: its new
                                   DataWriteGuid), chosen beforehand */
};

static void
step (const struct merge *m, const char *name)
{
  if (m->p->step)
    m->p->step (m->p->opaque, name);
}

static bool
same_file (const struct vhd_layer *a, const struct vhd_layer *b)
{
  return a->dev == b->dev && a->ino == b->ino;
}

/* ------------------------------------------------------------ removing */

/* Remove the file an entry names, if it is still the merged one. */
static int
remove_if_same (const struct journal_entry *e)
{
  struct vhd_open_options quiet = { .readonly = true, .no_parents = true,
                                    .problem = vhd_ignore_problem };
  struct vhd_layer *f;
  bool same;

  if (access (e->path, F_OK) == -1 && errno == ENOENT)
    return 0;
  if (vhd_layer_open (e->path, false, &quiet, &f) == -1) {
    vhd_warning ("%s: not removed: it is no longer a VHD file", e->path);
    return 0;
  }
  same = memcmp (f->id, e->id, 16) == 0;
  vhd_layer_close (f);
  if (!same) {
    vhd_warning ("%s: not removed: its unique id is not the one that was "
                 "merged", e->path);
    return 0;
  }
  if (unlink (e->path) == -1 && errno != ENOENT) {
    vhd_error ("%s: removing a merged file: %m", e->path);
    return -1;
  }
  return vhd_sync_dir (e->path);
}

static int
remove_journal (const struct merge *m)
{
  if (unlink (m->jpath) == -1 && errno != ENOENT) {
    vhd_error ("%s: %m", m->jpath);
    return -1;
  }
  if (vhd_sync_dir (m->jpath) == -1)
    return -1;
  step (m, "journal-removed");
  return 0;
}

/* Steps 5 to 7, once the target holds everything and FILE no longer
 * needs the intermediates. */
static int
remove_merged (const struct merge *m)
{
  size_t i;

  for (i = 0; i < m->j.n_remove; i++) {
    if (remove_if_same (&m->j.remove[i]) == -1)
      return -1;
    step (m, "intermediate-removed");
  }
  if (remove_if_same (&m->j.file) == -1)
    return -1;
  step (m, "file-removed");
  return remove_journal (m);
}

/* ------------------------------------------------------------ opening */

static int
pick_target (struct merge *m, const char *file)
{
  const struct vhd_chain *c = m->locks;
  struct stat st;
  unsigned k;

  if (c->depth < 2) {
    vhd_error ("%s: not a differencing disk (it is %s): there is no "
               "parent to merge it into", c->layers[0]->path,
               vhd_type_name (c->layers[0]->type));
    errno = EINVAL;
    return -1;
  }
  if (m->p->into == NULL) {
    m->k = 1;
    return 0;
  }
  if (stat (m->p->into, &st) == -1) {
    vhd_error ("%s: %m", m->p->into);
    return -1;
  }
  for (k = 0; k < c->depth; k++)
    if (c->layers[k]->dev == st.st_dev && c->layers[k]->ino == st.st_ino) {
      if (k == 0) {
        vhd_error ("%s: cannot merge a file into itself", file);
        errno = EINVAL;
        return -1;
      }
      m->k = k;
      return 0;
    }
  vhd_error ("%s: not in the chain of %s (its ancestors are those that "
             "vhdtool info lists)", m->p->into, c->layers[0]->path);
  errno = EINVAL;
  return -1;
}

/* The chains opened one after the other must be the same files. */
static int
check_same_chains (const struct merge *m)
{
  unsigned i;

  if (m->view->depth != m->locks->depth ||
      m->target->depth != m->view->depth - m->k)
    goto changed;
  for (i = 0; i < m->view->depth; i++)
    if (!same_file (m->view->layers[i], m->locks->layers[i]))
      goto changed;
  for (i = 0; i < m->target->depth; i++)
    if (!same_file (m->target->layers[i], m->view->layers[m->k + i]))
      goto changed;
  return 0;

 changed:
  vhd_error ("%s: its chain changed while it was being opened, or %s "
             "resolves its own parents differently; not merging",
             m->view->layers[0]->path, m->target->layers[0]->path);
  errno = EINVAL;
  return -1;
}

/* The files must be removable before anything is changed. */
static int
check_removable (const struct merge *m)
{
  unsigned i;

  for (i = 0; i < m->k; i++) {
    const char *path = m->view->layers[i]->path;
    char *copy = strdup (path);
    int ok = copy && access (dirname (copy), W_OK) == 0;

    free (copy);
    if (!ok) {
      vhd_error ("%s: cannot be removed after the merge: %m", path);
      return -1;
    }
  }
  if (m->k > 1 && access (m->view->layers[0]->path, W_OK) == -1) {
    vhd_error ("%s: cannot be re-pointed at %s during the merge: %m",
               m->view->layers[0]->path, m->view->layers[m->k]->path);
    return -1;
  }
  return 0;
}

static bool
vhd_name (const char *name)
{
  static const char *const ext[] = { ".vhd", ".avhd", ".vhdx", ".avhdx" };
  size_t n = strlen (name);

  for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
    if (n > strlen (ext[i]) &&
        strcasecmp (name + n - strlen (ext[i]), ext[i]) == 0)
      return true;
  return false;
}

/* Differencing disks beside T or FILE whose parent is T, outside the
 * chain: T changes under them.  (dir comes from realpath, like the
 * paths in the journal.) */
static void
find_other_children (const struct merge *m, const char *dir, char *found,
                     size_t len)
{
  const struct vhd_layer *t = m->view->layers[m->k];
  struct vhd_open_options quiet = { .readonly = true, .no_parents = true,
                                    .problem = vhd_ignore_problem };
  DIR *d = opendir (dir);
  struct dirent *e;

  if (d == NULL)
    return;
  while ((e = readdir (d)) != NULL) {
    char *path;
    struct stat st;
    struct vhd_layer *f;
    unsigned i;
    bool in_chain = false;

    if (!vhd_name (e->d_name) ||
        asprintf (&path, "%s/%s", dir, e->d_name) == -1)
      continue;
    if (stat (path, &st) == 0 && S_ISREG (st.st_mode)) {
      size_t n;
      for (i = 0; i < m->view->depth; i++)
        in_chain |= m->view->layers[i]->dev == st.st_dev &&
                    m->view->layers[i]->ino == st.st_ino;
      /* Intermediates an interrupted merge already cut out of the chain. */
      for (n = 0; n < m->j.n_remove; n++)
        in_chain |= strcmp (m->j.remove[n].path, path) == 0;
      if (!in_chain && !strstr (found, path) &&
          vhd_layer_open (path, false, &quiet, &f) == 0) {
        if (f->has_parent && !f->unusable &&
            memcmp (f->parent_id, t->id, 16) == 0 &&
            strlen (found) + strlen (path) + 3 < len)
          snprintf (found + strlen (found), len - strlen (found), "%s%s",
                    found[0] ? ", " : "", path);
        vhd_layer_close (f);
      }
    }
    free (path);
  }
  closedir (d);
}

static void
warn_other_children (const struct merge *m)
{
  const char *t = m->view->layers[m->k]->path;
  char *d1 = strdup (t), *d2 = strdup (m->view->layers[0]->path);
  char found[2048] = "";

  if (d1 && d2) {
    find_other_children (m, dirname (d1), found, sizeof found);
    find_other_children (m, dirname (d2), found, sizeof found);
  }
  const char *how = m->view->layers[m->k]->ops == &vhd_format_ops ? ""
                    : " (and its DataWriteGuid, so they are refused)";

  if (found[0])
    vhd_warning ("%s: the merge changes it%s, so its other differencing "
                 "disks become invalid: %s", t, how, found);
  else
    vhd_warning ("%s: the merge changes it%s: any other differencing disk "
                 "based on it (none found beside it) becomes invalid", t,
                 how);
  free (d1);
  free (d2);
}

/* A merge follows the parent locators only, never a search the user
 * steers: the files it rewrites and deletes must be the ones the chain
 * itself names. */
#define MERGE_PARENT_HINT \
  "; a merge follows the parent locators only: point the child at its " \
  "parent with 'vhdtool set-parent' first"

/* Step 0: open and lock everything, in an order that never reads a
 * file's metadata before it is locked. */
static int
open_chains (struct merge *m, const char *file)
{
  /* Every sector the files hold is merged, up to their current size,
   * whatever size a guest is shown (quirks.c): merge changes no size. */
  struct vhd_open_options unlocked = {
    .readonly = true, .no_lock = true, .missing_parent_hint = MERGE_PARENT_HINT,
    .confine_parents = m->p->confine_parents,
    .disk_size = VHD_DISK_SIZE_CURRENT,
    .cache_budget = m->p->cache_budget,
  };
  struct vhd_open_options writable = {
    .readonly = false, .missing_parent_hint = MERGE_PARENT_HINT,
    .confine_parents = m->p->confine_parents,
    .disk_size = VHD_DISK_SIZE_CURRENT,
    .cache_budget = m->p->cache_budget,
    .new_data_id = m->new_id,
  };
  char *dir = NULL;
  unsigned i;
  int r = -1;

  if (vhd_chain_open (file, &unlocked, &m->locks) == -1 ||
      pick_target (m, file) == -1)
    return -1;
  /* A differencing VHDX grown by resize is larger than its parent: its
   * data past the target's end has nowhere to go. */
  for (i = 0; i < m->k; i++)
    if (m->locks->layers[i]->size != m->locks->layers[m->k]->size) {
      vhd_error ("%s: it is %" PRIu64 " bytes but the merge target %s is %"
                 PRIu64 " bytes (a differencing disk grown by resize); "
                 "merging into a smaller disk is not supported",
                 m->locks->layers[i]->path, m->locks->layers[i]->size,
                 m->locks->layers[m->k]->path, m->locks->layers[m->k]->size);
      errno = EINVAL;
      return -1;
    }
  for (i = 0; i < m->k; i++)
    if (vhd_lock_file (m->locks->layers[i], true) == -1)
      return -1;
  /* T's chain is confined to FILE's directory, like FILE's chain. */
  if ((dir = strdup (m->locks->layers[0]->path)) == NULL) {
    vhd_error ("%s: %m", file);
    return -1;
  }
  if (vhd_chain_open_confined (m->locks->layers[m->k]->path, &writable,
                               dirname (dir), &m->target) == -1 ||
      vhd_chain_open (file, &unlocked, &m->view) == -1 ||
      check_same_chains (m) == -1)
    goto out;
  r = 0;
 out:
  free (dir);
  return r;
}

/* ------------------------------------------------------------ journal */

static void
set_entry (struct journal_entry *e, const struct vhd_layer *f)
{
  memcpy (e->id, f->id, 16);
  e->path = strdup (f->path);
}

static bool
entry_is (const struct journal_entry *e, const struct vhd_layer *f)
{
  return memcmp (e->id, f->id, 16) == 0 &&
         strcmp (e->path, f->path) == 0;
}

/* The target as recorded: with the identity it had, or the one the
 * merge gives it (it changes when the merge first writes a VHDX). */
static bool
target_is (const struct merge_journal *j, const struct vhd_layer *t)
{
  return entry_is (&j->target, t) ||
         (j->has_target_new && memcmp (j->target_new, t->id, 16) == 0 &&
          strcmp (j->target.path, t->path) == 0);
}

/* Step 1, or the check that the recorded merge is this one. */
static int
record (struct merge *m)
{
  const struct vhd_chain *c = m->view;
  unsigned i;

  if (m->have_journal) {
    if (target_is (&m->j, c->layers[m->k]))
      return 0;
    vhd_error ("%s: records an interrupted merge of %s into %s; run "
               "'vhdtool merge --into %s %s' to complete it first",
               m->jpath, m->j.file.path, m->j.target.path, m->j.target.path,
               m->j.file.path);
    errno = EINVAL;
    return -1;
  }
  set_entry (&m->j.file, c->layers[0]);
  set_entry (&m->j.target, c->layers[m->k]);
  m->j.has_target_new = true;
  memcpy (m->j.target_new, m->new_id, 16);
  m->j.remove = calloc (m->k, sizeof *m->j.remove);
  /* Counted only once the array exists: vhd_journal_free walks it. */
  m->j.n_remove = m->j.remove ? m->k - 1 : 0;
  m->j.remove_cap = m->j.remove ? m->k : 0;
  if (m->j.remove == NULL || !m->j.file.path || !m->j.target.path)
    goto nomem;
  for (i = 1; i < m->k; i++) {
    set_entry (&m->j.remove[i - 1], c->layers[i]);
    if (m->j.remove[i - 1].path == NULL)
      goto nomem;
  }
  if (vhd_journal_write (m->jpath, &m->j) == -1)
    return -1;
  m->have_journal = true;
  step (m, "journal-written");
  return 0;

 nomem:
  vhd_error ("%s: %m", m->jpath);
  return -1;
}

/* FILE is gone: the recorded merge got past step 6; finish it. */
static int
finish_recorded (struct merge *m)
{
  vhd_warning ("%s: completing the interrupted merge of %s into %s",
               m->jpath, m->j.file.path, m->j.target.path);
  return remove_merged (m);
}

/* The journal records another file of that name (another unique id):
 * its merge got past step 6 before this FILE was made.  Only the
 * journal is left of it; files it lists that still exist were not
 * left by the merge, and are not touched. */
static int
drop_stale_journal (struct merge *m)
{
  vhd_warning ("%s: removing this journal of a finished merge of an "
               "earlier %s", m->jpath, m->j.file.path);
  if (remove_journal (m) == -1)
    return -1;
  vhd_journal_free (&m->j);
  m->have_journal = false;
  return 0;
}

/* ------------------------------------------------------------ copying */

/* Every block written stays cached until a flush writes its bitmap
 * (resolve.c): flush T now and then to keep within the cache budget.
 * Flushing T during the copy is safe: FILE's view never comes from
 * what is being copied into T (step 2 above), whatever of it is on
 * disk. */
static int
flush_if_pinned (struct merge *m)
{
  if (vhd_cache_pinned_over_budget (m->target))
    return vhd_chain_flush (m->target);
  return 0;
}

static int
copy_data (void *opaque, const void *buf, uint64_t len, uint64_t off)
{
  struct merge *m = opaque;

  if (vhd_chain_pwrite (m->target, buf, len, off) == -1)
    return -1;
  return flush_if_pinned (m);
}

/* Zeros held above T: nothing to write where T already reads as zeros. */
static int
copy_zero (void *opaque, uint64_t len, uint64_t off)
{
  struct merge *m = opaque;

  if (vhd_chain_zero (m->target, len, off) == -1)
    return -1;
  return flush_if_pinned (m);
}

/* Step 1b: the layer right above T learns T's next identity (VHDX:
 * parent_linkage2), so that FILE's chain opens before, during and
 * after the copy, by any reader that knows the second linkage. */
static int
announce_new_id (struct merge *m)
{
  struct vhd_layer *t = m->view->layers[m->k], *above;
  struct vhd_open_options o = { .no_parents = true };
  int r;

  if (t->ops->expect_parent_id == NULL)
    return 0;
  /* Locked by m->locks; this second description is unlocked. */
  if (vhd_layer_open (m->view->layers[m->k - 1]->path, true, &o, &above) == -1)
    return -1;
  r = above->ops->expect_parent_id (above, t, m->new_id);
  vhd_layer_close (above);
  if (r == 0)
    step (m, "linkage2-written");
  return r;
}

/* Steps 2 to 4. */
static int
merge_into_target (struct merge *m)
{
  struct vhd_copy copy = {
    .src = m->view, .lo = 0, .hi = m->k, .data = copy_data,
    .zero = copy_zero, .opaque = m,
    .progress = m->p->progress, .progress_opaque = m->p->opaque,
  };
  struct vhd_open_options o = { .no_parents = true };
  struct vhd_layer *top;
  int r;

  if (announce_new_id (m) == -1 || vhd_copy_chain (&copy) == -1)
    return -1;
  step (m, "copied");
  if (vhd_chain_flush (m->target) == -1)
    return -1;
  step (m, "target-flushed");
  if (m->k == 1)
    return 0;
  /* FILE is locked by m->locks; this second description is unlocked. */
  if (vhd_layer_open (m->view->layers[0]->path, true, &o, &top) == -1)
    return -1;
  /* T as its writable chain knows it: a VHDX T has its new identity
   * now, which FILE must record. */
  r = vhd_layer_set_parent (top, m->target->layers[0], m->p->step,
                            m->p->opaque);
  vhd_layer_close (top);
  if (r == 0)
    step (m, "reparented");
  return r;
}

/* Intermediates of the chain as it is now that the journal lacks (the
 * journal's list wins: it was made when FILE still led to all). */
static int
add_current_intermediates (struct merge *m)
{
  unsigned i;
  size_t n;

  for (i = 1; i < m->k; i++) {
    const struct vhd_layer *f = m->view->layers[i];
    struct journal_entry *e;
    bool listed = false;

    for (n = 0; n < m->j.n_remove; n++)
      listed |= entry_is (&m->j.remove[n], f);
    if (listed)
      continue;
    if (ARRAY_RESERVE (m->j.remove, m->j.remove_cap, m->j.n_remove + 1) == -1)
      return -1;
    e = m->j.remove;
    set_entry (&e[m->j.n_remove], f);
    if (e[m->j.n_remove++].path == NULL)
      return -1;
  }
  return 0;
}

int
vhd_merge (const char *file, const struct vhd_merge_params *p)
{
  struct merge m = { .p = p };
  char *jpath = vhd_journal_path (file);
  int r = -1;

  if (jpath == NULL)
    return -1;
  m.jpath = jpath;
  if (vhd_journal_read (jpath, &m.j) == 0)
    m.have_journal = true;
  else if (errno != ENOENT)
    goto out;

  if (m.have_journal && m.j.has_target_new)
    memcpy (m.new_id, m.j.target_new, 16);
  else
    uuid_generate (m.new_id);
  if (m.have_journal && access (file, F_OK) == -1 && errno == ENOENT) {
    r = finish_recorded (&m);
    goto out;
  }
  if (open_chains (&m, file) == -1)
    goto out;
  if (m.have_journal &&
      memcmp (m.j.file.id, m.view->layers[0]->id, 16) != 0) {
    if (drop_stale_journal (&m) == -1)
      goto out;
    /* Not the finished merge's identity: T may carry it already.  (T's
     * writer reads new_id at its first write, which is later.) */
    uuid_generate (m.new_id);
  }
  if (check_removable (&m) == -1)
    goto out;
  warn_other_children (&m);
  if (record (&m) == -1 || add_current_intermediates (&m) == -1 ||
      merge_into_target (&m) == -1)
    goto out;
  if (vhd_chain_close (m.target) == -1) {
    m.target = NULL;
    goto out;
  }
  m.target = NULL;
  r = remove_merged (&m);

 out:
  vhd_chain_close (m.target);
  vhd_chain_close (m.view);
  vhd_chain_close (m.locks);
  vhd_journal_free (&m.j);
  free (jpath);
  return r;
}
