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
};

/* The back-end for path: the one whose probe accepts the first and last
 * bytes of the file.  A file nobody recognises goes to the first, whose
 * open explains what is wrong with it. */
static const struct layer_ops *
pick_format (const char *path)
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
  return formats[0];
}

int
vhd_layer_open (const char *path, bool writable,
                const struct vhd_open_options *opts, struct vhd_layer **out)
{
  return pick_format (path)->open (path, writable, opts, out);
}

void
vhd_layer_close (struct vhd_layer *l)
{
  if (l)
    l->ops->close (l);
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
  memset (info, 0, sizeof *info);
}
