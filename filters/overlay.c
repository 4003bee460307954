/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-overlay-filter: a transient copy-on-write overlay over any
 * plugin (policy: parameters, negotiation, requests).
 *
 * The plugin below is always opened read-only; every write, zero and
 * trim lands in the overlay (store.c) and is discarded at exit, unless
 * overlay-save asks for the overlay to be kept as a VHD differencing
 * child of the served VHD file (save.c).
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "store.h"
#include "save.h"

#define DEFAULT_BLOCK_SIZE (64 * 1024)

enum scope { SCOPE_SERVER, SCOPE_CONNECTION };

static uint32_t block_size = DEFAULT_BLOCK_SIZE;
static enum scope scope = SCOPE_SERVER;
static uint64_t limit;
static char *dir;
static char *save_path;
static char *save_parent;

/* Set when overlay-save cannot work (found just after start-up). */
static bool save_refused;

/* scope=server: the one overlay shared by every connection. */
static struct store *server_store;

struct handle {
  struct store *store;
};

static void
overlay_unload (void)
{
  store_free (server_store);
  free (dir);
  free (save_path);
  free (save_parent);
}

static int
overlay_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                const char *key, const char *value)
{
  if (strcmp (key, "overlay-block-size") == 0) {
    int64_t r = nbdkit_parse_size (value);
    if (r == -1)
      return -1;
    if (r < 4096 || r > (64 << 20) || (r & (r - 1))) {
      nbdkit_error ("overlay-block-size must be a power of two between "
                    "4K and 64M");
      return -1;
    }
    block_size = r;
  }
  else if (strcmp (key, "overlay-scope") == 0) {
    if (strcmp (value, "server") == 0)
      scope = SCOPE_SERVER;
    else if (strcmp (value, "connection") == 0)
      scope = SCOPE_CONNECTION;
    else {
      nbdkit_error ("overlay-scope must be server or connection");
      return -1;
    }
  }
  else if (strcmp (key, "overlay-limit") == 0) {
    int64_t r = nbdkit_parse_size (value);
    if (r == -1)
      return -1;
    limit = r;
  }
  else if (strcmp (key, "overlay-dir") == 0) {
    free (dir);
    if ((dir = nbdkit_realpath (value)) == NULL)
      return -1;
  }
  else if (strcmp (key, "overlay-save") == 0) {
    free (save_path);
    if ((save_path = nbdkit_absolute_path (value)) == NULL)
      return -1;
  }
  else if (strcmp (key, "overlay-save-parent") == 0) {
    free (save_parent);
    if ((save_parent = nbdkit_realpath (value)) == NULL)
      return -1;
  }
  else
    return next (nxdata, key, value);
  return 0;
}

static int
overlay_config_complete (nbdkit_next_config_complete *next,
                         nbdkit_backend *nxdata)
{
  /* Absolute now: per-connection overlays are made after nbdkit has
   * changed directory to /. */
  if (dir == NULL) {
    const char *t = getenv ("TMPDIR");
    if ((dir = nbdkit_realpath (t && *t ? t : "/var/tmp")) == NULL)
      return -1;
  }
  if ((save_path == NULL) != (save_parent == NULL)) {
    nbdkit_error ("overlay-save and overlay-save-parent go together");
    return -1;
  }
  if (save_path) {
    if (scope != SCOPE_SERVER) {
      nbdkit_error ("overlay-save needs overlay-scope=server (a "
                    "per-connection overlay is gone when its client "
                    "disconnects)");
      return -1;
    }
    if (save_check_start (save_path, save_parent) == -1)
      return -1;
  }
  return next (nxdata);
}

#define overlay_config_help \
  "overlay-block-size=<SIZE>  Map and lock granularity (default 64K).\n" \
  "overlay-scope=server|connection  One overlay shared, or one per client.\n" \
  "overlay-limit=<SIZE>       Refuse writes (ENOSPC) past this much data.\n" \
  "overlay-dir=<DIR>          Where the temporary file goes ($TMPDIR, /var/tmp).\n" \
  "overlay-save=<FILE>        At exit, save the overlay as a VHD child ...\n" \
  "overlay-save-parent=<VHD>  ... of this VHD (the file being served)."

/* Create the shared overlay before nbdkit forks, so a bad directory
 * is reported on the terminal. */
static int
overlay_get_ready (int thread_model)
{
  server_store = store_new (dir, block_size, limit);
  if (server_store == NULL)
    return -1;
  /* Per-connection overlays come later; this one only proved that the
   * directory works. */
  if (scope == SCOPE_CONNECTION) {
    store_free (server_store);
    server_store = NULL;
  }
  return 0;
}

/* The parent must have exactly the export's size, which only the
 * plugin knows: ask it once, now that it can be asked.  Failing here
 * would leave a --run command hanging on a dead socket, so refuse every
 * connection instead and shut down. */
static int
overlay_after_fork (nbdkit_backend *backend)
{
  nbdkit_next *next;
  int64_t size;
  if (save_path == NULL)
    return 0;
  /* Outside any connection, so a shared context, under our control. */
  next = nbdkit_next_context_open (backend, 1, "", 1);
  if (next == NULL)
    return -1;
  if (next->prepare (next) == -1) {
    nbdkit_next_context_close (next);
    return -1;
  }
  size = next->get_size (next);
  next->finalize (next);
  nbdkit_next_context_close (next);
  if (size == -1 || save_check_size (save_parent, size) == -1) {
    save_refused = true;
    nbdkit_shutdown ();
  }
  return 0;
}

static void
overlay_cleanup (nbdkit_backend *backend)
{
  if (save_path && server_store && !save_refused &&
      save_overlay (server_store, save_path, save_parent) == -1)
    nbdkit_error ("the overlay was NOT saved to %s", save_path);
}

static void *
overlay_open (nbdkit_next_open *next, nbdkit_context *context,
              int readonly, const char *exportname, int is_tls)
{
  struct handle *h;

  /* The plugin is never written. */
  if (next (context, 1, exportname) == -1)
    return NULL;
  h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->store = scope == SCOPE_SERVER ? server_store
                                   : store_new (dir, block_size, limit);
  if (h->store == NULL) {
    free (h);
    return NULL;
  }
  return h;
}

static void
overlay_close (void *handle)
{
  struct handle *h = handle;

  if (scope == SCOPE_CONNECTION)
    store_free (h->store);
  free (h);
}

static int
overlay_prepare (nbdkit_next *next, void *handle, int readonly)
{
  struct handle *h = handle;
  int64_t size;

  if (save_refused) {
    nbdkit_error ("overlay-save cannot work (see the error at start-up); "
                  "refusing connections");
    return -1;
  }
  size = next->get_size (next);
  if (size == -1)
    return -1;
  return store_set_size (h->store, size);
}

static int
overlay_can_write (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
overlay_can_flush (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
overlay_can_trim (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
overlay_can_zero (nbdkit_next *next, void *handle)
{
  return NBDKIT_ZERO_NATIVE;
}

/* Zeroing punches holes in the overlay file: always fast. */
static int
overlay_can_fast_zero (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
overlay_can_extents (nbdkit_next *next, void *handle)
{
  return 1;
}

/* The overlay is thrown away at exit: nothing to make durable. */
static int
overlay_can_fua (nbdkit_next *next, void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

/* One overlay shared by all connections sees every write at once. */
static int
overlay_can_multi_conn (nbdkit_next *next, void *handle)
{
  return scope == SCOPE_SERVER;
}

static int
overlay_block_size (nbdkit_next *next, void *handle, uint32_t *minimum,
                    uint32_t *preferred, uint32_t *maximum)
{
  if (next->block_size (next, minimum, preferred, maximum) == -1)
    return -1;
  /* Any alignment works (partial sectors are merged); whole 4 KiB
   * pieces avoid reading the rest of a sector. */
  *minimum = 1;
  if (*preferred < 4096)
    *preferred = 4096;
  if (*maximum == 0)
    *maximum = 0xffffffff;
  return 0;
}

static int
read_below (void *opaque, void *buf, uint32_t count, uint64_t offset,
            int *err)
{
  nbdkit_next *next = opaque;
  return next->pread (next, buf, count, offset, 0, err);
}

static int
overlay_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  return store_read (h->store, buf, count, offset, read_below, next, err);
}

static int
overlay_pwrite (nbdkit_next *next, void *handle, const void *buf,
                uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  return store_write (h->store, buf, count, offset, read_below, next, err);
}

static int
overlay_zero (nbdkit_next *next, void *handle, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  return store_write (h->store, NULL, count, offset, read_below, next, err);
}

/* Trim is zeroing in the overlay: the ranges read as zeros and hold no
 * space, and the plugin's data never shows through again. */
static int
overlay_trim (nbdkit_next *next, void *handle, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  return overlay_zero (next, handle, count, offset, flags, err);
}

static int
overlay_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  return 0;
}

struct extents_ctx {
  nbdkit_next *next;
  struct nbdkit_extents *out;
  uint32_t flags;
  int *err;
};

/* Ranges the overlay does not hold are described by the plugin. */
static int
add_range (void *opaque, uint64_t offset, uint64_t len, enum store_src src)
{
  struct extents_ctx *x = opaque;
  struct nbdkit_extents *below;
  size_t i;

  if (src == SRC_DATA)
    return nbdkit_add_extent (x->out, offset, len, 0);
  if (src == SRC_ZERO)
    return nbdkit_add_extent (x->out, offset, len,
                              NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO);
  if (x->next->can_extents (x->next) != 1)
    return nbdkit_add_extent (x->out, offset, len, 0);
  below = nbdkit_extents_full (x->next, len, offset, 0, x->err);
  if (below == NULL)
    return -1;
  for (i = 0; i < nbdkit_extents_count (below); i++) {
    struct nbdkit_extent e = nbdkit_get_extent (below, i);
    uint64_t s = e.offset > offset ? e.offset : offset;
    uint64_t end = e.offset + e.length < offset + len ? e.offset + e.length
                                                      : offset + len;
    if (s < end && nbdkit_add_extent (x->out, s, end - s, e.type) == -1) {
      nbdkit_extents_free (below);
      return -1;
    }
  }
  nbdkit_extents_free (below);
  return 0;
}

static int
overlay_extents (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags,
                 struct nbdkit_extents *extents, int *err)
{
  struct handle *h = handle;
  struct extents_ctx x = { next, extents, flags, err };

  if (store_map (h->store, offset, count, add_range, &x) == -1) {
    if (*err == 0)
      *err = errno ? errno : EIO;
    return -1;
  }
  return 0;
}

static struct nbdkit_filter filter = {
  .name              = "overlay",
  .longname          = "nbdkit transient copy-on-write overlay filter",
  .unload            = overlay_unload,
  .config            = overlay_config,
  .config_complete   = overlay_config_complete,
  .config_help       = overlay_config_help,
  .get_ready         = overlay_get_ready,
  .after_fork        = overlay_after_fork,
  .cleanup           = overlay_cleanup,
  .open              = overlay_open,
  .close             = overlay_close,
  .prepare           = overlay_prepare,
  .block_size        = overlay_block_size,
  .can_write         = overlay_can_write,
  .can_flush         = overlay_can_flush,
  .can_trim          = overlay_can_trim,
  .can_zero          = overlay_can_zero,
  .can_fast_zero     = overlay_can_fast_zero,
  .can_extents       = overlay_can_extents,
  .can_fua           = overlay_can_fua,
  .can_multi_conn    = overlay_can_multi_conn,
  .pread             = overlay_pread,
  .pwrite            = overlay_pwrite,
  .zero              = overlay_zero,
  .trim              = overlay_trim,
  .flush             = overlay_flush,
  .extents           = overlay_extents,
};

NBDKIT_REGISTER_FILTER (filter)
