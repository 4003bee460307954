/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: vhdtool set-parent, Hyper-V's Set-VHD -ParentPath.
 *
 * The checks Windows makes before re-pointing a child (the new parent's
 * unique id must be the one the child records, unless the caller
 * insists; the sizes must agree), plus a loop check, then reparent.c.
 * Only FILE is written; it is locked exclusively, the parent shared.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* Would PARENT's own chain lead back to child?  Its chain is walked in
 * check mode, quietly: a parent whose own parents are missing can still
 * be set (chains are often repaired one link at a time). */
static bool
makes_loop (const struct vhd_layer *child, const char *parent)
{
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true, .problem = vhd_ignore_problem,
  };
  struct vhd_chain *c;
  bool loop = false;
  unsigned k;

  if (vhd_chain_open (parent, &o, &c) == -1)
    return false;
  for (k = 0; k < c->depth; k++)
    if (c->layers[k]->dev == child->dev && c->layers[k]->ino == child->ino)
      loop = true;
  vhd_chain_close (c);
  return loop;
}

static int
check_pair (const struct vhd_layer *c, const struct vhd_layer *p,
            const struct vhd_set_parent_params *params)
{
  char want[37], got[37];

  if (!c->has_parent) {
    vhd_error ("%s: not a differencing disk (it is %s): only differencing "
               "disks have a parent", c->path, vhd_type_name (c->type));
    goto inval;
  }
  if (c->dev == p->dev && c->ino == p->ino) {
    vhd_error ("%s: a file cannot be its own parent", c->path);
    errno = ELOOP;
    return -1;
  }
  if (makes_loop (c, p->path)) {
    vhd_error ("%s: %s cannot be its parent: %s is part of the chain of "
               "%s (a loop)", c->path, p->path, c->path, p->path);
    errno = ELOOP;
    return -1;
  }
  if (c->size != p->size) {
    vhd_error ("%s: size mismatch: the child is %" PRIu64 " bytes but %s "
               "is %" PRIu64 " bytes", c->path, c->size, p->path, p->size);
    goto inval;
  }
  if (memcmp (p->id, c->parent_id, 16) != 0) {
    vhd_layer_format_id (c, c->parent_id, want);
    vhd_layer_format_id (p, p->id, got);
    if (!params->ignore_id_mismatch) {
      vhd_error ("%s: parent id mismatch: the child expects parent id %s, "
                 "but %s has id %s; refusing (ignore the mismatch only if "
                 "%s holds exactly the data the child was made on)",
                 c->path, want, p->path, got, p->path);
      goto inval;
    }
    vhd_warning ("%s: parent id mismatch ignored: the child expected "
                 "parent id %s, %s has id %s; the child now records %s, "
                 "and shows corrupt data if that is not the disk it was "
                 "made on", c->path, want, p->path, got, got);
  }
  return 0;

 inval:
  errno = EINVAL;
  return -1;
}

int
vhd_set_parent (const char *file, const char *parent,
                const struct vhd_set_parent_params *params)
{
  struct vhd_open_options o = { .no_parents = true };
  struct vhd_layer *c = NULL, *p = NULL;
  int r = -1;

  /* The parent is locked after the checks: locking FILE twice (PARENT
   * = FILE) would report a conflict with ourselves instead of a loop. */
  if (vhd_layer_open (file, true, &o, &c) == -1 ||
      vhd_lock_file (c, true) == -1 ||
      vhd_layer_open (parent, false, &o, &p) == -1 ||
      check_pair (c, p, params) == -1 ||
      vhd_lock_file (p, false) == -1 ||
      vhd_layer_set_parent (c, p, params->step, params->opaque) == -1)
    goto out;
  r = 0;
 out:
  vhd_layer_close (p);
  vhd_layer_close (c);
  return r;
}
