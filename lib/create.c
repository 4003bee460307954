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

/* Only VHD files are made so far: a child must be of its parent's
 * format (Hyper-V never mixes them), so a VHDX parent gets none. */
static int
refuse_other_format (const char *parent)
{
  struct vhd_open_options o = { .readonly = true, .no_parents = true,
                                .no_lock = true,
                                .problem = vhd_ignore_problem };
  struct vhd_layer *l;
  bool other;

  if (parent == NULL || vhd_layer_open (parent, false, &o, &l) == -1)
    return 0;                   /* new_image reports what is wrong */
  other = l->ops != &vhd_format_ops;
  if (other)
    vhd_error ("%s: is a %s file: creating %s files (and children of "
               "them) is not supported yet", parent, l->ops->format,
               l->ops->format);
  vhd_layer_close (l);
  errno = ENOTSUP;
  return other ? -1 : 0;
}

int
vhd_create (const char *path, const struct vhd_create_params *p)
{
  char *tmp = NULL;
  int fd = -1, r = -1;

  if (p->type == VHD_TYPE_DIFF && refuse_other_format (p->parent) == -1)
    return -1;
  if ((fd = vhd_new_file_begin (path, &tmp)) == -1)
    goto out;
  if (vhd_format_ops.new_image (fd, path, p) == -1 ||
      vhd_new_file_commit (fd, tmp, path) == -1)
    goto out;
  r = 0;

 out:
  vhd_new_file_end (fd, tmp);
  return r;
}
