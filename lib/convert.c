/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: flattening a chain into a new standalone disk (vhdtool
 * convert, Hyper-V's Convert-VHD and "merge to a new disk").
 *
 * The output is built under a temporary name and linked to its final
 * name only once complete and durable (create.c), so a crash never
 * leaves a partial OUTPUT and an existing file is never overwritten.
 * VHD and VHDX output is written through the normal write path of a
 * chain whose only layer is the new file: the same allocation,
 * alignment and metadata code as every other write.  Runs of zeros are not written at
 * all: the new file already reads as zeros there, and so stays sparse
 * (file holes in raw and fixed output, unallocated blocks in dynamic).
 */
#include <config.h>

#include <errno.h>
#include <unistd.h>

#include "internal.h"

struct sink {
  struct vhd_chain *out;        /* VHD or VHDX output */
  int fd;                       /* raw output */
  const char *path;
};

static int
write_vhd (void *opaque, const void *buf, uint64_t len, uint64_t off)
{
  struct sink *s = opaque;

  if (vhd_chain_pwrite (s->out, buf, len, off) == -1)
    return -1;
  /* Every block written stays cached until a flush writes its bitmap
   * (resolve.c): flush now and then to keep within the budget.  Any
   * flush is safe mid-copy (the output has no name yet anyway). */
  if (vhd_cache_pinned_over_budget (s->out) && vhd_chain_flush (s->out) == -1)
    return -1;
  return 0;
}

static int
write_raw (void *opaque, const void *buf, uint64_t len, uint64_t off)
{
  struct sink *s = opaque;

  if (full_pwrite (s->fd, buf, len, off) == -1) {
    vhd_error ("%s: write at offset %" PRIu64 ": %m", s->path, off);
    return -1;
  }
  return 0;
}

/* Can the output's format hold exactly the chain's disk?  Nothing is
 * ever rounded: a disk the format cannot represent is refused. */
static int
check_representable (const char *output, const struct layer_ops *ops,
                     const struct vhd_chain *src)
{
  if (ops != &vhd_format_ops)
    return 0;                   /* VHDX holds whatever a chain can be */
  if (src->sector != 512) {
    vhd_error ("%s: the disk has %u-byte sectors and VHD only 512-byte "
               "ones: convert to VHDX or raw instead", output, src->sector);
    errno = EINVAL;
    return -1;
  }
  if (src->size > VHD_MAX_SIZE) {
    vhd_error ("%s: the disk is %" PRIu64 " bytes, more than VHD's "
               "maximum of 2040 GiB: convert to VHDX or raw instead",
               output, src->size);
    errno = EFBIG;
    return -1;
  }
  if (src->size % 512 != 0) {
    vhd_error ("%s: the disk is %" PRIu64 " bytes, not a whole number of "
               "512-byte sectors, which VHD needs: convert to raw instead",
               output, src->size);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

/* Create the empty output in fd (named tmp) and open it as a chain. */
static int
prepare_output (struct sink *s, const char *tmp, const struct vhd_chain *src,
                const struct vhd_convert_params *p)
{
  struct vhd_create_params cp = {
    .type = p->type, .size = src->size, .block_size = p->block_size,
    .format = p->format, .logical_sector_size = src->sector,
  };
  struct vhd_open_options o = {
    .no_lock = true, .cache_budget = vhd_cache_budget (src),
  };
  const struct layer_ops *ops;

  if (p->type == VHD_OUTPUT_RAW) {
    if (ftruncate (s->fd, src->size) == -1) {
      vhd_error ("%s: %m", s->path);
      return -1;
    }
    return 0;
  }
  if (p->type != VHD_TYPE_FIXED && p->type != VHD_TYPE_DYNAMIC) {
    vhd_error ("%s: cannot convert to disk type %u", s->path, p->type);
    errno = EINVAL;
    return -1;
  }
  if ((ops = vhd_format_ops_for (p->format, s->path)) == NULL ||
      check_representable (s->path, ops, src) == -1 ||
      ops->new_image (s->fd, s->path, &cp) == -1)
    return -1;
  return vhd_chain_open (tmp, &o, &s->out);
}

int
vhd_convert (struct vhd_chain *src, const char *output,
             const struct vhd_convert_params *p)
{
  struct sink s = { NULL, -1, output };
  struct vhd_copy copy = {
    .src = src, .lo = 0, .hi = src->depth, .opaque = &s,
    .progress = p->progress, .progress_opaque = p->opaque,
  };
  char *tmp = NULL;
  int r = -1;

  s.fd = vhd_new_file_begin (output, &tmp);
  if (s.fd == -1 || prepare_output (&s, tmp, src, p) == -1)
    goto out;
  copy.data = s.out ? write_vhd : write_raw;
  if (vhd_copy_chain (&copy) == -1)
    goto out;
  /* Closing flushes the bitmaps and BAT of VHD and VHDX output. */
  if (s.out) {
    r = vhd_chain_close (s.out);
    s.out = NULL;
    if (r == -1)
      goto out;
    r = -1;
  }
  if (vhd_new_file_commit (s.fd, tmp, output) == -1)
    goto out;
  r = 0;
 out:
  if (s.out)
    vhd_chain_close (s.out);
  vhd_new_file_end (s.fd, tmp);
  return r;
}
