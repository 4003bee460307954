/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-overlay-filter: saving the overlay as a VHD differencing child.
 *
 * The child is built with lib/ exactly as vhdtool and the vhd plugin
 * would build it: vhd_create makes an empty differencing disk of the
 * parent (locators, parent id, the parent's block size), then every
 * range the overlay holds is written through the chain's normal write
 * path, which sets bitmap bits only for the sectors written.  Zeroed
 * ranges are written as zeros where the parent shows anything else, so
 * the parent's data never shows through them.
 *
 * Crash safety: the child is built under a temporary name beside the
 * target and flushed (lib/write.c's ordering) before it is linked to its
 * final name; link() refuses to replace a file that appeared meanwhile.
 * A crash during saving leaves at most the temporary file, never a
 * half-written child under the final name.  If the final name appeared
 * while nbdkit ran, the finished child is kept under the temporary
 * name (and the error says so) rather than thrown away.
 */
#include <config.h>

#include <errno.h>
#include <libgen.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "vhd.h"
#include "save.h"

static void
message (enum vhd_msg_level level, const char *msg)
{
  if (level == VHD_MSG_ERROR)
    nbdkit_error ("%s", msg);
  else
    nbdkit_debug ("%s", msg);
}

static int
open_parent (const char *parent, struct vhd_layer **f)
{
  struct vhd_open_options o = { .readonly = true };

  vhd_set_message_handler (message);
  return vhd_layer_open (parent, false, &o, f);
}

int
save_check_start (const char *path, const char *parent)
{
  struct vhd_layer *f;

  char *copy = strdup (path);
  const char *dir = copy ? dirname (copy) : ".";
  int r = access (dir, W_OK);

  if (r == -1)
    nbdkit_error ("overlay-save: cannot write in %s: %m", dir);
  free (copy);
  if (r == -1)
    return -1;
  if (access (path, F_OK) == 0) {
    nbdkit_error ("overlay-save: %s already exists; refusing to "
                  "overwrite it", path);
    return -1;
  }
  if (open_parent (parent, &f) == -1) {
    nbdkit_error ("overlay-save-parent: %s is not a usable VHD file", parent);
    return -1;
  }
  /* A child is of its parent's format, and the overlay is copied into
   * it through the chain's write path, which writes VHD files only so
   * far. */
  if (strcmp (vhd_layer_format (f), "VHD") != 0) {
    nbdkit_error ("overlay-save-parent: %s is a %s file: saving the "
                  "overlay as a child of it is not supported yet", parent,
                  vhd_layer_format (f));
    vhd_layer_close (f);
    return -1;
  }
  vhd_layer_close (f);
  return 0;
}

int
save_check_size (const char *parent, uint64_t export_size)
{
  struct vhd_layer_info info;
  struct vhd_layer *f;
  int r = 0;

  if (open_parent (parent, &f) == -1)
    return -1;
  /* The plugin serves a file at its current size or, by the size rule
   * (lib/vhd/quirks.c, the plugin's disk-size option), at its geometry:
   * either may be what is served. */
  vhd_layer_describe (f, &info);
  if (export_size != info.current_size &&
      (export_size != info.geometry_size ||
       info.geometry_size > info.current_size)) {
    nbdkit_error ("overlay-save-parent: %s is %" PRIu64 " bytes but the "
                  "export is %" PRIu64 " bytes: it cannot be the parent "
                  "of what is served", parent, info.size, export_size);
    r = -1;
  }
  vhd_layer_info_free (&info);
  vhd_layer_close (f);
  return r;
}

struct copy_ctx {
  struct store *store;
  struct vhd_chain *child;
  char *buf;
};

#define COPY_CHUNK (1 << 20)

static int
copy_range (void *opaque, uint64_t offset, uint64_t len, enum store_src src)
{
  struct copy_ctx *x = opaque;

  if (src == SRC_ZERO)
    return vhd_chain_zero (x->child, len, offset);
  while (len > 0) {
    uint32_t n = len < COPY_CHUNK ? len : COPY_CHUNK;
    if (store_pread_data (x->store, x->buf, n, offset) == -1) {
      nbdkit_error ("overlay-save: reading the overlay: %m");
      return -1;
    }
    if (vhd_chain_pwrite (x->child, x->buf, n, offset) == -1)
      return -1;
    offset += n;
    len -= n;
  }
  return 0;
}

int
save_overlay (struct store *s, const char *path, const char *parent)
{
  struct vhd_create_params p = { .type = VHD_TYPE_DIFF, .parent = parent };
  struct vhd_open_options o = { .readonly = true };
  struct copy_ctx x = { s, NULL, NULL };
  char *tmp = NULL;
  int r = -1;

  vhd_set_message_handler (message);
  if (asprintf (&tmp, "%s.partial", path) == -1) {
    nbdkit_error ("asprintf: %m");
    return -1;
  }
  unlink (tmp);                 /* left by an earlier crash */
  x.buf = malloc (COPY_CHUNK);
  if (x.buf == NULL || vhd_create (tmp, &p) == -1)
    goto out;
  if (vhd_chain_open (tmp, &o, &x.child) == -1 ||
      vhd_chain_make_writable (x.child) == -1 ||
      store_foreach_held (s, copy_range, &x) == -1)
    goto out;
  if (vhd_chain_close (x.child) == -1) {
    x.child = NULL;
    goto out;
  }
  x.child = NULL;
  if (link (tmp, path) == -1) {
    /* The child is complete: keep it rather than lose the changes. */
    nbdkit_error ("overlay-save: %s: %m; the overlay is saved as %s "
                  "instead", path, tmp);
    free (tmp);
    tmp = NULL;
    goto out;
  }
  /* The data is durable (closing flushed it); now the name. */
  if (vhd_sync_dir (path) == -1) {
    nbdkit_error ("overlay-save: %s is saved but may not survive a power "
                  "loss", path);
    goto out;
  }
  nbdkit_debug ("overlay saved to %s", path);
  r = 0;

 out:
  if (x.child)
    vhd_chain_close (x.child);
  if (tmp)
    unlink (tmp);
  free (tmp);
  free (x.buf);
  return r;
}
