/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: opening a layer with the back-end that recognises it, and
 * the public accessors of layers (vhd.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Every back-end, in the order they are asked. */
static const struct layer_ops *const formats[] = {
  &vhd_format_ops,
  &vhdx_format_ops,
};

/* The back-end whose probe accepts the first and last bytes of path,
 * NULL when none does. */
static const struct layer_ops *
probe_format (const char *path)
{
  uint8_t head[512], tail[512];
  ssize_t nh = 0, nt = 0;
  struct stat st;
  size_t i;
  int fd;

  /* Only regular files are probed here: the back-end's open checks the
   * kind of file before it opens it (no FIFO is ever opened). */
  if (stat (path, &st) == 0 && S_ISREG (st.st_mode) &&
      (fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) >= 0) {
    nh = pread (fd, head, sizeof head, 0);
    if (st.st_size > 0)
      nt = pread (fd, tail, MIN ((off_t) sizeof tail, st.st_size),
                  st.st_size - MIN ((off_t) sizeof tail, st.st_size));
    close (fd);
  }
  for (i = 0; i < sizeof formats / sizeof formats[0]; i++)
    if (formats[i]->probe (head, nh > 0 ? nh : 0, tail, nt > 0 ? nt : 0))
      return formats[i];
  return NULL;
}

/* The back-end for path.  A file nobody recognises goes to the first,
 * whose open explains what is wrong with it. */
static const struct layer_ops *
pick_format (const char *path)
{
  const struct layer_ops *ops = probe_format (path);

  return ops ? ops : formats[0];
}

const char *
vhd_probe_format (const char *path)
{
  const struct layer_ops *ops = probe_format (path);

  return ops ? ops->format : NULL;
}

int
vhd_layer_set_parent (struct vhd_layer *child,
                      const struct vhd_layer *parent, vhd_step_fn step,
                      void *opaque)
{
  if (child->ops->set_parent == NULL) {
    vhd_error ("%s: re-pointing %s files at a parent is not supported yet",
               child->path, child->ops->format);
    errno = ENOTSUP;
    return -1;
  }
  return child->ops->set_parent (child, parent, step, opaque);
}

int
vhd_layer_open (const char *path, bool writable,
                const struct vhd_open_options *opts, struct vhd_layer **out)
{
  const struct layer_ops *ops = pick_format (path);
  struct vhd_layer *l;

  if (writable && opts->headers_only) {
    vhd_error ("%s: a file opened headers-only cannot be written", path);
    errno = EINVAL;
    return -1;
  }
  if (writable && ops->writer_init == NULL) {
    vhd_error ("%s: writing %s files is not supported yet (they can be "
               "read: nbdkit -r or the overlay filter; vhdtool info, check, "
               "map and convert)", path, ops->format);
    errno = ENOTSUP;
    return -1;
  }
  if (ops->open (path, writable, opts, &l) == -1)
    return -1;
  l->ops = ops;
  *out = l;
  return 0;
}

void
vhd_layer_close (struct vhd_layer *l)
{
  if (l)
    l->ops->close (l);
}

int
vhd_layer_open_file (struct vhd_layer *l, const char *path, bool writable,
                     const struct vhd_open_options *opts)
{
  struct stat st;
  off_t end;

  l->fd = -1;
  l->path = realpath (path, NULL);
  if (l->path == NULL) {
    vhd_report (opts, VHD_ERROR, path, "file", "", "%m");
    return -1;
  }
  l->writable = writable;
  l->headers_only = opts->headers_only;
  /* A parent locator of a hostile file can name any path: a FIFO would
   * block open() forever (a server that never starts), a device could
   * react to being opened.  So look before opening, and open without
   * blocking or acquiring a terminal; the fstat check below closes the
   * race with a file replaced in between. */
  if (stat (l->path, &st) == 0 && !S_ISREG (st.st_mode) &&
      !S_ISBLK (st.st_mode)) {
    vhd_report (opts, VHD_ERROR, l->path, "file", "",
                "not a regular file or block device");
    errno = EINVAL;
    return -1;
  }
  l->fd = open (l->path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC |
                O_NONBLOCK | O_NOCTTY);
  if (l->fd >= 0)
    fcntl (l->fd, F_SETFL, fcntl (l->fd, F_GETFL) & ~O_NONBLOCK);
  if (l->fd == -1) {
    vhd_report (opts, VHD_ERROR, l->path, "file", "", "open%s: %m",
                writable ? " for writing" : "");
    return -1;
  }
  if (fstat (l->fd, &st) == -1 || (end = lseek (l->fd, 0, SEEK_END)) == -1) {
    vhd_report (opts, VHD_ERROR, l->path, "file", "", "%m");
    return -1;
  }
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode)) {
    vhd_report (opts, VHD_ERROR, l->path, "file", "",
                "not a regular file or block device");
    errno = EINVAL;
    return -1;
  }
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  l->file_size = end;
  l->opened_mtime = st.st_mtim;
  l->opened_ctime = st.st_ctim;
  l->opened_size = st.st_size;
  return 0;
}

void
vhd_layer_close_file (struct vhd_layer *l)
{
  if (l->fd >= 0)
    close (l->fd);
  l->fd = -1;
  free (l->path);
  l->path = NULL;
  free (l->parent_name);
  l->parent_name = NULL;
}

void
vhd_layer_format_id (const struct vhd_layer *l, const uint8_t id[16],
                     char out[37])
{
  if (l->ops && l->ops->format_id)
    l->ops->format_id (id, out);
  else
    vhd_uuid_format (id, out);
}

const char *
vhd_layer_path (const struct vhd_layer *l)
{
  return l->path;
}

uint64_t
vhd_layer_size (const struct vhd_layer *l)
{
  return l->disk_size;
}

const char *
vhd_layer_type (const struct vhd_layer *l)
{
  return vhd_type_name (l->type);
}

const char *
vhd_layer_format (const struct vhd_layer *l)
{
  return l->ops->format;
}

void
vhd_layer_describe (struct vhd_layer *l, struct vhd_layer_info *info)
{
  l->ops->describe (l, info);
}

void
vhd_layer_info_free (struct vhd_layer_info *info)
{
  unsigned i;

  free (info->parent_name);
  for (i = 0; i < info->n_locators; i++)
    free (info->locators[i].text);
  for (i = 0; i < info->n_facts; i++) {
    free (info->facts[i].name);
    free (info->facts[i].value);
  }
  free (info->facts);
  memset (info, 0, sizeof *info);
}
