/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: helpers shared by the files of lib/ only. */
#ifndef VHD_INTERNAL_H
#define VHD_INTERNAL_H

#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include "vhd.h"
#include "layer.h"
#include "quirks.h"
#include "util.h"

struct vhd_cache;

struct vhd_chain {
  unsigned depth;               /* number of layers */
  struct vhd_layer **layers;    /* layers[0] is the top (the named file) */
  size_t layers_cap;            /* allocated (chain.c add_layer) */
  uint64_t size;
  uint32_t sector;              /* logical sector size, every layer's */
  bool writable;
  struct vhd_cache *cache;      /* per-block resolution (resolve.c) */
  struct vhd_writer *writer;    /* dirty metadata (write.c) */
};

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ROUND_UP(x, n) (((x) + (n) - 1) / (n) * (n))
#define ROUND_DOWN(x, n) ((x) / (n) * (n))
#define IS_POWER_OF_2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)

static inline uint16_t get_be16 (const uint8_t *p)
{ return (uint16_t) ((p[0] << 8) | p[1]); }
static inline uint32_t get_be32 (const uint8_t *p)
{ return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
         ((uint32_t) p[2] << 8) | p[3]; }
static inline uint64_t get_be64 (const uint8_t *p)
{ return ((uint64_t) get_be32 (p) << 32) | get_be32 (p + 4); }
static inline void put_be16 (uint8_t *p, uint16_t v)
{ p[0] = v >> 8; p[1] = v; }
static inline void put_be32 (uint8_t *p, uint32_t v)
{ p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static inline void put_be64 (uint8_t *p, uint64_t v)
{ put_be32 (p, v >> 32); put_be32 (p + 4, (uint32_t) v); }

/* full_pread/full_pwrite, growable arrays, overlaps() and the
 * MSB-first bitmap helpers are in util.h (shared beyond lib/). */

/* resolve.c: per-block resolution of the chain, cached.
 *
 * A run says where sectors [rel, rel+n) of a block (numbered from the
 * block start) come from: layer -1 is zeros, otherwise the layer index
 * and the byte offset in that layer's file of sector rel. */
struct run {
  uint32_t rel;
  uint32_t n;
  int32_t layer;                /* the layer holding the data; negative:
                                   zeros, -1 as no layer holds anything,
                                   RUN_ZERO_BY (k) as layer k says so (a
                                   VHDX block in a zero state) */
  uint64_t file_off;
};
#define RUN_ZERO_BY(k) (-2 - (int32_t) (k))
#define RUN_ZERO_LAYER(layer) (-2 - (layer))

/* vhd_chain_extents, where zero_layers gives zeros a layer decided as
 * RUN_ZERO_BY (k) (merge copies those: they hide what lies below). */
int vhd_chain_extents_by (struct vhd_chain *c, uint64_t offset,
                          uint64_t count, vhd_extent_fn fn, void *opaque,
                          bool zero_layers);

struct block_entry {
  struct run *below;            /* resolution by the layers under the top */
  uint32_t n_below;
  struct run *merged;           /* the whole chain: top bitmap over below */
  uint32_t n_merged;
  uint8_t *top_bitmap;          /* NULL while the top has no such block */
  uint64_t top_data_off;        /* where the top holds the block */
  bool dirty;                   /* top_bitmap differs from the file */
  /* Cache bookkeeping (resolve.c, see "Memory" there), all under the
   * block's stripe lock; on_ring, next and prev also change only with
   * the cache's clock lock held. */
  bool flushing;                /* a flush copied top_bitmap and has not
                                   written it yet: pinned (write.c) */
  bool referenced;              /* CLOCK: used since the hand passed */
  bool on_ring;                 /* on the CLOCK ring of eviction candidates */
  uint32_t blk;                 /* the top block it describes */
  uint64_t bytes;               /* charged against the cache budget */
  struct block_entry *hnext;    /* next in the stripe's hash chain */
  struct block_entry *next, *prev;  /* CLOCK ring */
};

/* Cut [offset, offset+count) at the top's block boundaries and call fn
 * for each piece (done: bytes of the range before it), in order; stops
 * at the first -1. */
typedef int (*vhd_piece_fn) (struct vhd_chain *c, uint32_t blk,
                             uint64_t done, uint64_t n, uint64_t offset,
                             void *opaque);
int vhd_each_block (struct vhd_chain *c, uint64_t count, uint64_t offset,
                    vhd_piece_fn fn, void *opaque);

/* Block granularity of the cache: the top file's block. */
uint32_t vhd_block_sectors (const struct vhd_chain *c, uint32_t blk);
void vhd_cache_lock (struct vhd_chain *c, uint32_t blk);
void vhd_cache_unlock (struct vhd_chain *c, uint32_t blk);
/* With the block's lock held.  materialize: never return the shared
 * all-zero entry, the caller is going to change the block. */
struct block_entry *vhd_cache_get (struct vhd_chain *c, uint32_t blk,
                                   bool materialize);
int vhd_cache_read_locked (struct vhd_chain *c, const struct block_entry *e,
                           void *buf, uint64_t count, uint64_t offset);
bool vhd_cache_range_is_zero (const struct block_entry *e, uint32_t rel,
                              uint32_t end);
/* Record that sectors [rel, rel+n) now live in the top file, in the
 * block whose data starts at data_off.  Returns
 * true if any bitmap bit changed, -1 on allocation failure. */
int vhd_cache_top_written (struct vhd_chain *c, struct block_entry *e,
                           uint32_t blk, uint64_t data_off, uint32_t rel,
                           uint32_t n);
/* Block blk as the layers under the top show it: vhd_block_sectors
 * sectors into buf (compact.c); -1 after a message. */
int vhd_cache_read_below (struct vhd_chain *c, uint32_t blk, void *buf);
/* The top file now reads as zeros in all of block blk (its back-end's
 * zero_block), whatever lies below; -1 on allocation failure. */
int vhd_cache_top_zeroed (struct vhd_chain *c, struct block_entry *e,
                          uint32_t blk);
/* With the block's lock held, after clearing e->flushing (write.c):
 * an entry neither dirty nor flushing may be evicted again. */
void vhd_cache_unpinned (struct vhd_chain *c, struct block_entry *e);
/* True when entries only a flush can make evictable hold more than
 * half the budget (any thread, no lock needed). */
bool vhd_cache_pinned_over_budget (const struct vhd_chain *c);
/* The budget in bytes (0 for a fixed disk: no cache). */
uint64_t vhd_cache_budget (const struct vhd_chain *c);

/* problem.c: one problem found while validating.  NOTE: only check
 * mode reports it; WARN: a warning otherwise; ERROR: otherwise an error
 * (with suffix appended) and the return value is true: the caller must
 * fail.  In check mode the return value is false and the caller carries
 * on where it can (suffix, a hint for the normal message, is dropped). */
enum vhd_severity { VHD_NOTE, VHD_WARN, VHD_ERROR };
bool vhd_report (const struct vhd_open_options *opts, enum vhd_severity sev,
                 const char *file, const char *structure, const char *suffix,
                 const char *fs, ...)
  __attribute__ ((format (printf, 6, 7)));
/* problem.c: a vhd_problem_fn that drops every problem: opening with it
 * is check mode (carry on past damage) without a report, for callers
 * that only need to know what a chain leads to. */
void vhd_ignore_problem (void *opaque, const char *file,
                         const char *structure, const char *what);

/* locator.c: the places confine_parents lets parents come from, for
 * one chain: the directory of the top file (top_dir: its real path;
 * top_dir_given: as the caller spelled it, or NULL), the parent_dirs
 * and the parent_files of opts.  NULL (after a message) when out of
 * memory. */
struct vhd_confine;
struct vhd_confine *vhd_confine_new (const struct vhd_open_options *opts,
                                     const char *top_dir,
                                     const char *top_dir_given);
void vhd_confine_free (struct vhd_confine *cf);

/* locator.c: open the parent of child, honouring the options; cf (NULL
 * unless confine_parents) says where parents may come from. */
int vhd_find_parent (struct vhd_layer *child,
                     const struct vhd_open_options *opts,
                     const struct vhd_confine *cf,
                     struct vhd_layer **parent);
/* Relative path from directory dir to file target (both absolute). */
char *vhd_relative_path (const char *dir, const char *target);
/* winpath.c: path (absolute, this host's) in Windows form, and the
 * Windows relative path from directory child_dir to parent_path (both
 * absolute): how a child names its parent.  malloc'd, NULL on ENOMEM. */
char *vhd_windows_path (const char *path);
char *vhd_windows_relative_path (const char *child_dir,
                                 const char *parent_path);

/* chain.c: vhd_chain_open, with confine_parents confining the chain to
 * confine_dir (a real path) instead of the top file's directory (merge
 * opens its target's chain this way: confined to FILE's directory). */
int vhd_chain_open_confined (const char *path,
                             const struct vhd_open_options *opts,
                             const char *confine_dir,
                             struct vhd_chain **out);

/* lock.c */
int vhd_lock_file (struct vhd_layer *f, bool exclusive);
/* Trade f's shared lock for an exclusive one on wfd, a writable
 * descriptor of the same file.  On failure f->fd still holds its shared
 * lock: f is never left unlocked (see the top of lock.c). */
int vhd_lock_upgrade (struct vhd_layer *f, int wfd);

/* resolve.c: budget in bytes, 0 = VHD_DEFAULT_CACHE_BUDGET. */
int vhd_cache_init (struct vhd_chain *c, uint64_t budget);
void vhd_cache_free (struct vhd_chain *c);

/* write.c */
int vhd_writer_init (struct vhd_chain *c);
void vhd_writer_free (struct vhd_chain *c);

/* create.c: a new file is built under a temporary name next to path
 * (begin returns its descriptor), made durable and linked to path
 * (commit: fails if path exists), and the temporary name removed (end,
 * always). */
int vhd_new_file_begin (const char *path, char **tmp);
int vhd_new_file_commit (int fd, const char *tmp, const char *path);
void vhd_new_file_end (int fd, char *tmp);
/* create.c: the back-end making files of format (enum vhd_format;
 * AUTO: by path's name); NULL (after a message) for an unknown one. */
const struct layer_ops *vhd_format_ops_for (uint32_t format,
                                            const char *path);





/* journal.c: the merge journal (see there). */
struct journal_entry {
  uint8_t id[16];
  char *path;
};
struct merge_journal {
  struct journal_entry file, target;
  bool has_target_new;                  /* the identity the merge gives */
  uint8_t target_new[16];               /* the target (VHDX) */
  struct journal_entry *remove;         /* intermediate layers */
  size_t n_remove, remove_cap;
};
char *vhd_journal_path (const char *file);
/* -1 with errno ENOENT (and no message) when there is none. */
int vhd_journal_read (const char *jpath, struct merge_journal *j);
int vhd_journal_write (const char *jpath, const struct merge_journal *j);
void vhd_journal_free (struct merge_journal *j);

/* copy.c: copy the ranges of src's view that layers [lo, hi) supply,
 * read in chunks; each chunk is cut into runs that are all zeros and
 * runs that are not, passed to zero (or skipped if it is NULL) and to
 * data.  Ranges that no layer holds are never copied. */
struct vhd_copy {
  struct vhd_chain *src;
  int lo, hi;
  int (*data) (void *opaque, const void *buf, uint64_t len, uint64_t off);
  int (*zero) (void *opaque, uint64_t len, uint64_t off);
  void *opaque;
  vhd_progress_fn progress;
  void *progress_opaque;
};
int vhd_copy_chain (const struct vhd_copy *cp);


#endif /* VHD_INTERNAL_H */
