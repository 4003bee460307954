/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd-plugin: serve a VHD file and its whole parent chain.
 *
 * Thin glue over lib/: configuration, nbdkit callbacks, error mapping.
 * One chain is opened per process in .get_ready (after configuration,
 * before nbdkit forks and changes directory to /, so every relative
 * path is resolved against the user's directory) and shared by all
 * connections: that is what makes flush on one connection cover writes
 * from every connection, so multi-conn is safe to advertise.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "vhd.h"
#include "util.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Set with -D vhd.verbose=1: library debug messages. */
NBDKIT_DLL_PUBLIC int vhd_debug_verbose = 0;

static const char *filename;
static const char **parent_files;
static size_t n_parent_files, parent_files_cap;
static const char **parent_dirs;
static size_t n_parent_dirs, parent_dirs_cap;
static struct vhd_open_options options;

/* The chain, opened read-only by get_ready and made writable by the
 * first connection that wants to write.  Under nbdkit -r, or a filter
 * that opens the plugin read-only (overlay, cow), no connection does,
 * so the top file is never opened for writing and is only share-locked,
 * like the parents. */
static struct vhd_chain *chain;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static void
message (enum vhd_msg_level level, const char *msg)
{
  switch (level) {
  case VHD_MSG_ERROR:
    nbdkit_error ("%s", msg);
    break;
  case VHD_MSG_WARNING:
    /* Before the fork stderr is the user's terminal; afterwards it is
     * wherever nbdkit sent it. */
    fprintf (stderr, "nbdkit: vhd: warning: %s\n", msg);
    nbdkit_debug ("warning: %s", msg);
    break;
  case VHD_MSG_DEBUG:
    if (vhd_debug_verbose)
      nbdkit_debug ("%s", msg);
    break;
  }
}

static void
vhd_load (void)
{
  vhd_set_message_handler (message);
}

/* Flush and close in .cleanup, after the last connection and while
 * nbdkit's logging (stderr, --log=syslog) still reports errors; .unload
 * only frees (and closes if start-up failed before .cleanup). */
static void
vhd_cleanup (void)
{
  if (chain && vhd_chain_close (chain) == -1)
    nbdkit_error ("%s: flushing at exit failed: writes acknowledged "
                  "without a flush may be lost", filename);
  chain = NULL;
}

static void
vhd_unload (void)
{
  vhd_cleanup ();       /* done already, unless start-up failed first */
  free (parent_files);
  free (parent_dirs);
}

static int
append (const char ***list, size_t *n, size_t *cap, const char *value)
{
  if (ARRAY_RESERVE (*list, *cap, *n + 1) == -1) {
    nbdkit_error ("realloc: %m");
    return -1;
  }
  (*list)[(*n)++] = value;
  return 0;
}

static int
parse_bool_option (const char *key, const char *value, bool *out)
{
  int r = nbdkit_parse_bool (value);
  if (r == -1)
    return -1;
  *out = r;
  return 0;
}

static int
vhd_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    if (filename) {
      nbdkit_error ("file parameter given twice");
      return -1;
    }
    filename = value;
  }
  else if (strcmp (key, "parent") == 0)
    return append (&parent_files, &n_parent_files, &parent_files_cap, value);
  else if (strcmp (key, "parent-dir") == 0)
    return append (&parent_dirs, &n_parent_dirs, &parent_dirs_cap, value);
  else if (strcmp (key, "ignore-checksums") == 0)
    return parse_bool_option (key, value, &options.ignore_checksums);
  else if (strcmp (key, "ignore-id-mismatch") == 0)
    return parse_bool_option (key, value, &options.ignore_id_mismatch);
  else if (strcmp (key, "confine-parents") == 0)
    return parse_bool_option (key, value, &options.confine_parents);
  else if (strcmp (key, "disk-size") == 0) {
    if (vhd_disk_size_parse (value, &options.disk_size) == -1) {
      nbdkit_error ("disk-size must be auto, geometry or current, not '%s'",
                    value);
      return -1;
    }
  }
  else if (strcmp (key, "cache-size") == 0) {
    int64_t r = nbdkit_parse_size (value);
    if (r == -1)
      return -1;
    if (r == 0) {
      nbdkit_error ("cache-size must be at least 1");
      return -1;
    }
    options.cache_budget = r;
  }
  else if (strcmp (key, "max-depth") == 0) {
    if (nbdkit_parse_unsigned ("max-depth", value, &options.max_depth) == -1)
      return -1;
    if (options.max_depth == 0) {
      nbdkit_error ("max-depth must be at least 1");
      return -1;
    }
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int
vhd_config_complete (void)
{
  if (filename == NULL) {
    nbdkit_error ("you must supply the file=<FILENAME> parameter");
    return -1;
  }
  return 0;
}

#define vhd_config_help \
  "[file=]<FILENAME>      (required) The VHD file to serve (the top of the chain).\n" \
  "parent=<FILE>          A candidate parent file (repeatable); matched by unique id.\n" \
  "parent-dir=<DIR>       Directory to search for parents by name (repeatable).\n" \
  "ignore-checksums=true  Open files whose footer/header checksums are wrong.\n" \
  "ignore-id-mismatch=true Accept a parent whose unique id differs (risky).\n" \
  "confine-parents=true   Parents only from FILENAME's directory, parent-dir=\n" \
  "                       directories and parent= files (untrusted images).\n" \
  "max-depth=<N>          Refuse chains deeper than N layers (default 256).\n" \
  "disk-size=auto|geometry|current  Size from the creator's rule (auto), the\n" \
  "                       CHS geometry or the footer's current size.\n" \
  "cache-size=<SIZE>      Memory for resolved blocks (default 16M)."

/* Open the chain now: errors reach the user's terminal, and relative
 * paths (ours and those in parent locators) are resolved before nbdkit
 * changes directory to /. */
static int
vhd_get_ready (void)
{
  options.parent_files = parent_files;
  options.n_parent_files = n_parent_files;
  options.parent_dirs = parent_dirs;
  options.n_parent_dirs = n_parent_dirs;
  options.readonly = true;
  return vhd_chain_open (filename, &options, &chain);
}

/* Handles only say whether the connection may write. */
static int readonly_handle, writable_handle;

/* A client that wants to write gets the top file opened for writing.
 * If that is impossible (no write permission, a read-only file system,
 * another writer holds the file) the connection is served read-only,
 * like nbdkit's file plugin does, instead of being refused: reading
 * still works.  The chain keeps its shared lock either way. */
static void *
vhd_open (int readonly)
{
  int r;

  if (readonly)
    return &readonly_handle;
  pthread_mutex_lock (&open_lock);
  r = vhd_chain_make_writable (chain);
  pthread_mutex_unlock (&open_lock);
  if (r == -1) {
    nbdkit_error ("%s: cannot write (see above): serving this connection "
                  "read-only", filename);
    return &readonly_handle;
  }
  return &writable_handle;
}

/* A client that wrote and went away without flushing: make its writes
 * durable now rather than only at exit, which a kill would skip. */
static void
vhd_close (void *handle)
{
  if (handle == &writable_handle && vhd_chain_flush (chain) == -1)
    nbdkit_error ("%s: flush when the client disconnected failed",
                  filename);
}

static int64_t
vhd_get_size (void *handle)
{
  return vhd_chain_size (chain);
}

static int
vhd_can_write (void *handle)
{
  return handle == &writable_handle;
}

static int
vhd_can_multi_conn (void *handle)
{
  return 1;
}

static int
vhd_can_zero (void *handle)
{
  return handle == &writable_handle;
}

/* Answered per request (vhd_zero): fast only where no data is written. */
static int
vhd_can_fast_zero (void *handle)
{
  return handle == &writable_handle;
}

static int
vhd_can_trim (void *handle)
{
  return handle == &writable_handle;
}

static int
vhd_can_fua (void *handle)
{
  return NBDKIT_FUA_EMULATE;
}

static int
vhd_can_extents (void *handle)
{
  return 1;
}

static int
vhd_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                uint32_t *maximum)
{
  /* Any alignment works (sub-sector writes are merged with the chain's
   * content), but 4 KiB requests avoid the read-modify-write. */
  *minimum = 1;
  *preferred = 4096;
  *maximum = 32 * 1024 * 1024;
  return 0;
}

static int
vhd_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  return vhd_chain_pread (chain, buf, count, offset);
}

static int
vhd_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  return vhd_chain_pwrite (chain, buf, count, offset);
}

static int
vhd_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  /* FAST_ZERO: only where zeroing writes no data: a range that reads
   * as zeros already, or whole sectors of a fixed disk (a hole is
   * punched).  Anything else costs a write of zeros into the top file,
   * so the client is told to do it its own way. */
  if ((flags & NBDKIT_FLAG_FAST_ZERO) &&
      !vhd_chain_zero_is_fast (chain, count, offset)) {
    nbdkit_set_error (ENOTSUP);
    return -1;
  }
  return vhd_chain_zero (chain, count, offset);
}

/* Trim gives host space back where the top file holds the data: those
 * sectors become holes and read as zeros.  Sectors held by a parent, or
 * by nobody, are left as they are (deallocating them in the top file
 * would expose the parent; see vhd_chain_trim). */
static int
vhd_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return vhd_chain_trim (chain, count, offset);
}

static int
vhd_flush (void *handle, uint32_t flags)
{
  return vhd_chain_flush (chain);
}

struct extents_ctx {
  struct nbdkit_extents *out;
  bool req_one;
  bool added;
  uint32_t type;                /* of the last extent added */
};

static int
add_extent (void *opaque, uint64_t offset, uint64_t len, int layer)
{
  struct extents_ctx *x = opaque;
  uint32_t type = layer < 0 ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;

  /* REQ_ONE: the first extent, whole, is the answer: stop at the first
   * change of type (ranges of different layers with the same type make
   * one extent).  Cutting it shorter would make qemu-img map step
   * through an empty disk in tiny pieces. */
  if (x->req_one && x->added && type != x->type)
    return 1;
  if (nbdkit_add_extent (x->out, offset, len, type) == -1)
    return -1;
  x->added = true;
  x->type = type;
  return 0;
}

/* Extents end at offset + count exactly (see vhd_chain_extents). */
static int
vhd_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
             struct nbdkit_extents *extents)
{
  struct extents_ctx x = { .out = extents,
                           .req_one = flags & NBDKIT_FLAG_REQ_ONE };

  return vhd_chain_extents (chain, offset, count, add_extent, &x);
}

static void
vhd_dump_plugin (void)
{
  printf ("vhd_version=%s\n", PACKAGE_VERSION);
  printf ("vhd_max_depth=%d\n", VHD_DEFAULT_MAX_DEPTH);
}

static struct nbdkit_plugin plugin = {
  .name              = "vhd",
  .longname          = "nbdkit VHD plugin (fixed, dynamic, differencing chains)",
  .version           = PACKAGE_VERSION,
  .load              = vhd_load,
  .unload            = vhd_unload,
  .cleanup           = vhd_cleanup,
  .config            = vhd_config,
  .config_complete   = vhd_config_complete,
  .config_help       = vhd_config_help,
  .magic_config_key  = "file",
  .get_ready         = vhd_get_ready,
  .open              = vhd_open,
  .close             = vhd_close,
  .get_size          = vhd_get_size,
  .block_size        = vhd_block_size,
  .can_write         = vhd_can_write,
  .can_multi_conn    = vhd_can_multi_conn,
  .can_zero          = vhd_can_zero,
  .can_trim          = vhd_can_trim,
  .can_fast_zero     = vhd_can_fast_zero,
  .can_fua           = vhd_can_fua,
  .can_extents       = vhd_can_extents,
  .pread             = vhd_pread,
  .pwrite            = vhd_pwrite,
  .zero              = vhd_zero,
  .trim              = vhd_trim,
  .flush             = vhd_flush,
  .extents           = vhd_extents,
  .dump_plugin       = vhd_dump_plugin,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
