/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: creating new files, whatever their format.
 *
 * Crash safety: the new file is built under a temporary name in the
 * target directory, made durable, and then linked to its final name.
 * link() fails if the name exists, so an existing file is never
 * overwritten, and a crash never leaves a half-written file under the
 * final name.  vhdtool convert builds its output the same way
 * (vhd_new_file_begin/commit/end); the back-end only writes the image
 * (layer_ops.new_image).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int
vhd_new_file_begin (const char *path, char **tmp)
{
  int fd;

  *tmp = NULL;
  if (access (path, F_OK) == 0) {
    vhd_error ("%s: file already exists; refusing to overwrite it", path);
    errno = EEXIST;
    return -1;
  }
  if (asprintf (tmp, "%s.tmpXXXXXX", path) == -1) {
    *tmp = NULL;
    vhd_error ("%s: %m", path);
    return -1;
  }
  fd = mkostemp (*tmp, O_CLOEXEC);
  if (fd == -1 || fchmod (fd, 0644) == -1) {
    vhd_error ("%s: cannot create a file there: %m", path);
    if (fd >= 0) {
      close (fd);
      unlink (*tmp);
    }
    free (*tmp);
    *tmp = NULL;
    return -1;
  }
  return fd;
}

int
vhd_new_file_commit (int fd, const char *tmp, const char *path)
{
  if (fsync (fd) == -1) {
    vhd_error ("%s: fsync: %m", path);
    return -1;
  }
  if (link (tmp, path) == -1) {
    if (errno == EEXIST)
      vhd_error ("%s: file already exists; refusing to overwrite it", path);
    else
      vhd_error ("%s: %m", path);
    return -1;
  }
  /* The new name must survive a power loss too, not only the data. */
  return vhd_sync_dir (path);
}

void
vhd_new_file_end (int fd, char *tmp)
{
  int saved_errno = errno;

  if (fd >= 0)
    close (fd);
  if (tmp)
    unlink (tmp);
  free (tmp);
  errno = saved_errno;
}

enum vhd_format
vhd_format_for_name (const char *path)
{
  const char *dot = strrchr (path, '.');

  if (dot && strchr (dot, '/') == NULL &&
      (strcasecmp (dot, ".vhdx") == 0 || strcasecmp (dot, ".avhdx") == 0))
    return VHD_FORMAT_VHDX;
  return VHD_FORMAT_VHD;
}

const struct layer_ops *
vhd_format_ops_for (uint32_t format, const char *path)
{
  switch (format == VHD_FORMAT_AUTO ? vhd_format_for_name (path) : format) {
  case VHD_FORMAT_VHD:
    return &vhd_format_ops;
  case VHD_FORMAT_VHDX:
    return &vhdx_format_ops;
  default:
    vhd_error ("%s: unknown format %u", path, format);
    errno = EINVAL;
    return NULL;
  }
}

/* The back-end of the parent's format, NULL if it cannot be opened
 * (the back-end chosen otherwise then says what is wrong with it). */
static const struct layer_ops *
parent_format (const char *parent)
{
  struct vhd_open_options o = { .readonly = true, .no_parents = true,
                                .no_lock = true,
                                .problem = vhd_ignore_problem };
  const struct layer_ops *ops;
  struct vhd_layer *l;

  if (vhd_layer_open (parent, false, &o, &l) == -1)
    return NULL;
  ops = l->ops;
  vhd_layer_close (l);
  return ops;
}

/* The back-end that makes path: the format asked for; a child's is its
 * parent's (VHD and VHDX never mix in a chain: neither format can name
 * a parent of the other); otherwise the name's. */
static const struct layer_ops *
choose_format (const char *path, const struct vhd_create_params *p)
{
  const struct layer_ops *ops = NULL, *parent = NULL;

  if (p->format != VHD_FORMAT_AUTO &&
      (ops = vhd_format_ops_for (p->format, path)) == NULL)
    return NULL;
  if (p->type == VHD_TYPE_DIFF && p->parent)
    parent = parent_format (p->parent);
  if (ops && parent && ops != parent) {
    vhd_error ("%s: a child must be of its parent's format: %s is a %s "
               "file, not %s", path, p->parent, parent->format, ops->format);
    errno = EINVAL;
    return NULL;
  }
  if (ops == NULL && parent) {
    ops = parent;
    if (ops != vhd_format_ops_for (VHD_FORMAT_AUTO, path))
      vhd_warning ("%s: making a %s file, the format of its parent %s, "
                   "whatever the name says", path, ops->format, p->parent);
  }
  return ops ? ops : vhd_format_ops_for (VHD_FORMAT_AUTO, path);
}

int
vhd_create (const char *path, const struct vhd_create_params *p)
{
  const struct layer_ops *ops;
  char *tmp = NULL;
  int fd = -1, r = -1;

  if ((ops = choose_format (path, p)) == NULL)
    return -1;
  if ((fd = vhd_new_file_begin (path, &tmp)) == -1)
    goto out;
  if (ops->new_image (fd, path, p) == -1 ||
      vhd_new_file_commit (fd, tmp, path) == -1)
    goto out;
  r = 0;

 out:
  vhd_new_file_end (fd, tmp);
  return r;
}
