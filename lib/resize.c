/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: vhd_resize (Hyper-V's Resize-VHD), the format-neutral
 * half: open the file writable with its exclusive lock (a file served
 * by nbdkit or written by another vhdtool is refused as in use), apply
 * Hyper-V's rules, then let the back-end change the file.
 *
 * The rules:
 *   - the size is a non-zero multiple of the file's logical sector;
 *   - VHD grows only (fixed and dynamic); a differencing VHD keeps its
 *     parent's size (its footer's size must match the parent's), so it
 *     is refused;
 *   - VHDX grows (fixed, dynamic and differencing: past the parent's
 *     end a child reads zeros) and shrinks (fixed and dynamic) down to
 *     the minimum size, the end of its last non-zero logical sector: no
 *     data is ever cut.  A differencing VHDX does not shrink: what it
 *     shows comes partly from its parent, which keeps its size.
 * A disk other disks use as their parent is not looked for: resizing it
 * invalidates them (VHD: sizes no longer match; VHDX: the resize gives
 * the file a new DataWriteGuid, they are orphaned), as with Hyper-V.
 *
 * CRASH SAFETY is the back-ends' (lib/vhd/resize.c, lib/vhdx/resize.c):
 * every state an interruption leaves opens as exactly the old disk or
 * exactly the new one, and running the same resize again finishes it.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

int
vhd_layer_minimum_size (struct vhd_layer *l, uint64_t budget, uint64_t *out)
{
  if (l->ops->minimum_size == NULL) {
    errno = ENOTSUP;
    return -1;
  }
  return l->ops->minimum_size (l, budget, out);
}

static int
check_rules (struct vhd_layer *l, uint64_t size)
{
  uint64_t min;

  if (l->ops->resize == NULL) {
    vhd_error ("%s: resizing %s files is not supported", l->path,
               l->ops->format);
    errno = ENOTSUP;
    return -1;
  }
  if (size == 0 || size % l->sector_size != 0) {
    vhd_error ("%s: cannot resize to %" PRIu64 " bytes: the size must be a "
               "non-zero multiple of the %u-byte logical sector", l->path,
               size, l->sector_size);
    errno = EINVAL;
    return -1;
  }
  if (l->has_parent && l->ops->minimum_size == NULL) {
    vhd_error ("%s: cannot resize a differencing %s file: it must keep "
               "the size of its parent (resize the parent, then make the "
               "child again)", l->path, l->ops->format);
    errno = EINVAL;
    return -1;
  }
  if (size >= l->size)
    return 0;
  if (l->ops->minimum_size == NULL) {
    vhd_error ("%s: cannot shrink a %s file (Hyper-V shrinks only VHDX): "
               "it is %" PRIu64 " bytes, %" PRIu64 " asked", l->path,
               l->ops->format, l->size, size);
    errno = EINVAL;
    return -1;
  }
  if (l->has_parent) {
    vhd_error ("%s: cannot shrink a differencing disk: what it shows comes "
               "partly from its parent, which keeps its size (it may only "
               "grow)", l->path);
    errno = EINVAL;
    return -1;
  }
  if (l->ops->minimum_size (l, 0, &min) == -1)
    return -1;
  if (size < min) {
    vhd_error ("%s: cannot shrink to %" PRIu64 " bytes: it holds data up to "
               "%" PRIu64 " bytes (minimum size); shrinking would cut it",
               l->path, size, min);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

int
vhd_resize (const char *file, uint64_t size,
            const struct vhd_resize_params *p)
{
  struct vhd_open_options o = { .no_parents = true };
  struct vhd_layer *l = NULL;
  int r = -1;

  if (vhd_layer_open (file, true, &o, &l) == -1 ||
      vhd_lock_file (l, true) == -1)
    goto out;
  if (p->to_minimum) {
    if (l->ops->minimum_size == NULL || l->has_parent) {
      vhd_error ("%s: --to-minimum: only a fixed or dynamic VHDX file can "
                 "shrink (this is a %s %s file)", l->path,
                 vhd_type_name (l->type), l->ops->format);
      errno = EINVAL;
      goto out;
    }
    if (l->ops->minimum_size (l, 0, &size) == -1)
      goto out;
    if (size == 0)
      size = l->sector_size;   /* an empty disk still has one sector */
  }
  if (check_rules (l, size) == -1 ||
      l->ops->resize (l, size, p->step, p->opaque) == -1)
    goto out;
  r = 0;
 out:
  vhd_layer_close (l);
  return r;
}
