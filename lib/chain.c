/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: opening a chain (a file and all its ancestors).
 *
 * The named file is the top layer; each differencing layer's parent is
 * found (locator.c), checked (unique id, size, no loop, depth cap) and
 * opened read-only.  Locks are taken as each file joins the chain.
 * With confine_parents, the places parents may come from are fixed once
 * for the whole chain, from the top file's real directory and the
 * options: a grandparent is confined like a parent.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int
add_layer (struct vhd_chain *c, struct vhd_layer *f)
{
  if (ARRAY_RESERVE (c->layers, c->layers_cap, c->depth + 1) == -1) {
    vhd_error ("%s: %m", f->path);
    return -1;
  }
  c->layers[c->depth++] = f;
  return 0;
}

/* Refuse a parent that is already in the chain (a loop). */
static int
check_loop (const struct vhd_chain *c, const struct vhd_open_options *opts,
            const struct vhd_layer *child, const struct vhd_layer *parent)
{
  unsigned k;

  for (k = 0; k < c->depth; k++)
    if (c->layers[k]->dev == parent->dev && c->layers[k]->ino == parent->ino) {
      vhd_report (opts, VHD_ERROR, child->path, "chain", "",
                  "parent loop: its parent %s is already in the chain "
                  "(at depth %u)", parent->path, k);
      errno = ELOOP;
      return -1;
    }
  return 0;
}

/* Check mode reports a size mismatch and goes on down the chain.  The
 * logical sector sizes must agree: a sector bitmap bit of a child means
 * a whole sector of its parent. */
static int
check_parent_size (const struct vhd_open_options *opts,
                   const struct vhd_layer *child, const struct vhd_layer *parent)
{
  if (child->ops != parent->ops) {
    vhd_report (opts, VHD_ERROR, child->path, "parent", "",
                "its parent %s is a %s file but the child is %s: a chain "
                "never mixes formats", parent->path, parent->ops->format,
                child->ops->format);
    errno = EINVAL;
    return -1;
  }
  if (child->sector_size != parent->sector_size &&
      vhd_report (opts, VHD_ERROR, child->path, "parent", "",
                  "logical sector size mismatch: the child has %u-byte "
                  "sectors but its parent %s has %u-byte sectors",
                  child->sector_size, parent->path, parent->sector_size)) {
    errno = EINVAL;
    return -1;
  }
  /* A differencing VHDX may be grown (vhdtool resize, as Hyper-V's
   * Resize-VHD): past its parent's end it reads zeros (resolve.c).  A
   * smaller VHDX child, or any VHD child of another size, is not
   * something either tool makes. */
  if (child->size != parent->size &&
      !(child->size > parent->size &&
        strcmp (child->ops->format, "VHDX") == 0) &&
      vhd_report (opts, VHD_ERROR, child->path, "parent", "",
                  "size mismatch: the child is %" PRIu64 " bytes but its "
                  "parent %s is %" PRIu64 " bytes", child->size,
                  parent->path, parent->size)) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static int
open_parents (struct vhd_chain *c, const struct vhd_open_options *opts,
              const struct vhd_confine *cf)
{
  unsigned max_depth = opts->max_depth ? opts->max_depth
                                       : VHD_DEFAULT_MAX_DEPTH;

  while (c->layers[c->depth - 1]->has_parent &&
         !c->layers[c->depth - 1]->unusable) {
    struct vhd_layer *child = c->layers[c->depth - 1], *parent;

    if (c->depth >= max_depth) {
      vhd_report (opts, VHD_ERROR, c->layers[0]->path, "chain",
                  " (the max-depth option raises the limit)",
                  "chain too deep: more than %u layers", max_depth);
      errno = ELOOP;
      return -1;
    }
    if (vhd_find_parent (child, opts, cf, &parent) == -1)
      return -1;
    if (check_loop (c, opts, child, parent) == -1 ||
        check_parent_size (opts, child, parent) == -1 ||
        (!opts->no_lock && vhd_lock_file (parent, false) == -1) ||
        add_layer (c, parent) == -1) {
      vhd_layer_close (parent);
      return -1;
    }
    vhd_quirk_chain_size (opts, c, parent);
  }
  return 0;
}

/* confine-parents: the places parents may come from (locator.c): the
 * top file's real directory (or confine_dir), and what opts names. */
static struct vhd_confine *
make_confine (const char *path, const struct vhd_layer *top,
              const struct vhd_open_options *opts, const char *confine_dir)
{
  char *real = strdup (top->path), *given = strdup (path);
  struct vhd_confine *cf = NULL;

  if (real == NULL || given == NULL)
    vhd_error ("%s: %m", top->path);
  else if (confine_dir)
    cf = vhd_confine_new (opts, confine_dir, NULL);
  else
    cf = vhd_confine_new (opts, dirname (real), dirname (given));
  free (real);
  free (given);
  return cf;
}

int
vhd_chain_open (const char *path, const struct vhd_open_options *opts,
                struct vhd_chain **out)
{
  return vhd_chain_open_confined (path, opts, NULL, out);
}

int
vhd_chain_open_confined (const char *path,
                         const struct vhd_open_options *opts,
                         const char *confine_dir, struct vhd_chain **out)
{
  struct vhd_chain *c;
  struct vhd_confine *cf = NULL;
  struct vhd_layer *t;

  if (opts->headers_only) {
    vhd_error ("%s: a chain cannot be opened headers-only", path);
    errno = EINVAL;
    return -1;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL) {
    vhd_error ("%s: %m", path);
    return -1;
  }
  /* Check mode only examines. */
  c->writable = !opts->readonly && opts->problem == NULL;
  if (vhd_layer_open (path, c->writable, opts, &t) == -1)
    goto err;
  if ((!opts->no_lock && vhd_lock_file (t, c->writable) == -1) ||
      add_layer (c, t) == -1) {
    vhd_layer_close (t);
    goto err;
  }
  c->size = t->disk_size;       /* the top's size rule (vhd/quirks.c) */
  c->sector = t->sector_size;
  /* In check mode the problem that stopped the walk was reported, and
   * the chain is returned as far as it goes. */
  if (!opts->no_parents) {
    if (opts->confine_parents &&
        (cf = make_confine (path, t, opts, confine_dir)) == NULL)
      goto err;
    if (open_parents (c, opts, cf) == -1 && !opts->problem)
      goto err;
  }
  if (!opts->problem &&
      (vhd_cache_init (c, opts->cache_budget) == -1 ||
       (c->writable && vhd_writer_init (c) == -1)))
    goto err;
  vhd_confine_free (cf);
  *out = c;
  return 0;

 err:
  vhd_confine_free (cf);
  c->writable = false;          /* nothing to flush */
  vhd_chain_close (c);
  return -1;
}

int
vhd_chain_make_writable (struct vhd_chain *c)
{
  struct vhd_layer *t = c->layers[0];
  struct stat st;
  int fd;

  if (c->writable)
    return 0;
  if (t->ops->writer_init == NULL) {
    vhd_error ("%s: writing %s files is not supported yet (they can be "
               "read: nbdkit -r or the overlay filter; vhdtool info, check, "
               "map and convert)", t->path, t->ops->format);
    errno = ENOTSUP;
    return -1;
  }
  fd = open (t->path, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    vhd_error ("%s: open for writing: %m", t->path);
    return -1;
  }
  if (fstat (fd, &st) == -1 || st.st_dev != t->dev || st.st_ino != t->ino) {
    vhd_error ("%s: the file was replaced since it was opened", t->path);
    close (fd);
    errno = ESTALE;
    return -1;
  }
  /* Trade the shared lock for an exclusive one on the new descriptor
   * (flock locks belong to open file descriptions, so ours would
   * conflict with itself if the old one were kept).  On failure the
   * old descriptor keeps its shared lock. */
  if (vhd_lock_upgrade (t, fd) == -1) {
    close (fd);
    return -1;
  }
  /* Readers may be using the old descriptor number right now: make it
   * refer to the writable description atomically (which also drops the
   * old description, whose lock is already gone). */
  if (dup2 (fd, t->fd) == -1) {
    vhd_error ("%s: dup2: %m", t->path);
    close (fd);
    flock (t->fd, LOCK_SH | LOCK_NB);
    return -1;
  }
  close (fd);
  t->writable = true;
  if (vhd_writer_init (c) == -1)
    return -1;
  c->writable = true;
  return 0;
}

int
vhd_chain_close (struct vhd_chain *c)
{
  int r = 0, saved_errno = errno;
  unsigned k;

  if (c == NULL)
    return 0;
  if (c->writable && c->writer && vhd_chain_flush (c) == -1) {
    r = -1;
    saved_errno = errno;
  }
  vhd_writer_free (c);
  vhd_cache_free (c);
  for (k = 0; k < c->depth; k++)
    vhd_layer_close (c->layers[k]);
  free (c->layers);
  free (c);
  errno = saved_errno;
  return r;
}

uint64_t
vhd_chain_size (const struct vhd_chain *c)
{
  return c->size;
}

unsigned
vhd_chain_depth (const struct vhd_chain *c)
{
  return c->depth;
}

struct vhd_layer *
vhd_chain_layer (const struct vhd_chain *c, unsigned k)
{
  return k < c->depth ? c->layers[k] : NULL;
}

bool
vhd_chain_writable (const struct vhd_chain *c)
{
  return c->writable;
}
