/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the interface between the format-neutral core and the
 * format back-ends.
 *
 * A layer is one file of a chain.  The core (chain.c, resolve.c,
 * write.c, copy.c, convert.c, merge.c, locator.c, set-parent.c, ...)
 * knows a layer only through struct vhd_layer and its operations table:
 * how blocks of the virtual disk map to bytes of the file, which
 * sectors a block holds, how a new block is placed and how dirty
 * metadata reaches the file crash-safely.  Everything else about the
 * file (headers, tables, checksums, locators) is the back-end's.
 *
 * A back-end embeds struct vhd_layer as the first member of its own
 * structure.  Back-ends: lib/vhd/ (VHD, Virtual PC's format) and
 * lib/vhdx/ (VHDX, Hyper-V's).
 */
#ifndef VHD_LAYER_H
#define VHD_LAYER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "util.h"
#include "vhd.h"

struct layer_ops;

struct vhd_layer {
  const struct layer_ops *ops;
  char *path;                   /* absolute */
  int fd;
  bool writable;
  bool headers_only;            /* opened so: no block table (vhd.h) */
  dev_t dev;
  ino_t ino;
  uint64_t file_size;
  /* The file as it was when opened, before anything was parsed: lock.c
   * refuses a lock taken on a file that changed since (a writer that
   * finished between the parse and the lock). */
  struct timespec opened_mtime, opened_ctime;
  off_t opened_size;

  uint64_t size;                /* size the file records (its structures
                                   cover it): chains match on it */
  uint64_t disk_size;           /* guest-visible size (<= size): the
                                   producer's meaning, see vhd/quirks.c */
  uint32_t sector_size;         /* logical sector: one bitmap bit */
  uint32_t block_size;          /* bytes per block (the lookup unit) */
  uint32_t n_blocks;            /* blocks covering size */
  uint32_t type;                /* enum vhd_type, as the file says (any
                                   other value: unknown, check mode) */
  bool has_parent;              /* differencing: absent sectors ask the
                                   parent, else they read as zeros */
  bool flat;                    /* byte x of the disk is byte x of the
                                   file (no table): a fixed VHD */
  bool unusable;                /* check mode: too damaged to examine
                                   further (its parent is not looked for) */
  uint8_t id[16];               /* identity, as stored */
  uint8_t parent_id[16];        /* has_parent: the parent's identity */
  bool has_parent_id2;          /* a second identity the parent may have */
  uint8_t parent_id2[16];       /* (VHDX parent_linkage2) */
  char *parent_name;            /* has_parent: the parent's file name as
                                   the child records it (UTF-8), or NULL */
};

/* What a layer says about one of its blocks. */
enum block_state {
  BLOCK_ABSENT,                 /* nothing here: the parent's (or zeros
                                   without a parent) */
  BLOCK_ZERO,                   /* reads as zeros, whatever is below */
  BLOCK_PRESENT,                /* every sector here, at data_off */
  BLOCK_PARTIAL,                /* the sectors whose bitmap bit is set
                                   are here (read_bitmap); the others
                                   are absent */
};

struct block_map {
  enum block_state state;
  uint64_t data_off;            /* PRESENT/PARTIAL: file offset of the
                                   block's first sector */
};

/* One block's sector bitmap to commit: the block, where its data lies
 * (block_map.data_off) and one bit per sector, MSB first. */
struct dirty_block {
  uint32_t blk;
  uint64_t data_off;
  const uint8_t *bitmap;
};

/* One extent of a file (compact_layout): [start, start + len).  index:
 * the back-end's table entry that references it (movable), or -1 for
 * metadata that never moves. */
struct compact_extent {
  uint64_t start, len;
  int64_t index;
};

/* Everything a file holds, for compact.c's packing plan.  A movable
 * extent may only start where (start + align_off) % min_align == 0,
 * and preferably where (start + align_off) % align == 0 (VHD: data
 * areas 4 KiB aligned as Windows lays them out, in files laid out so). */
struct compact_layout {
  struct compact_extent *v;     /* malloc'd, any order */
  size_t n;
  uint64_t align, min_align, align_off;
};
/* compact.c: append an extent to out->v (capacity *cap): for the
 * back-ends' compact_layout.  -1 (errno ENOMEM) when out of memory. */
int compact_layout_add (struct compact_layout *out, size_t *cap,
                        uint64_t start, uint64_t len, int64_t index);

/* How a parent may be named by a child. */
enum hint_syntax { HINT_WINDOWS, HINT_MAC_URL };
typedef void (*hint_fn) (void *opaque, const char *text,
                         enum hint_syntax syntax, char *from);

struct layer_ops {
  const char *format;           /* "VHD" */

  /* Does this file look like one of ours?  head: its first bytes, tail:
   * its last 512 (fewer when the file is shorter). */
  bool (*probe) (const uint8_t *head, size_t head_len,
                 const uint8_t *tail, size_t tail_len);
  /* Open and validate (every offset checked; problems through
   * vhd_report, see problem.c).  On success *out is the layer. */
  int (*open) (const char *path, bool writable,
               const struct vhd_open_options *opts, struct vhd_layer **out);
  void (*close) (struct vhd_layer *l);

  /* Reading (any thread, concurrently).  lookup may read the file's
   * table (-1 on error, after a message); read_bitmap fills
   * layer_bitmap_bytes bytes for a PARTIAL block. */
  int (*lookup) (struct vhd_layer *l, uint32_t blk, struct block_map *m);
  int (*read_bitmap) (struct vhd_layer *l, uint32_t blk,
                      const struct block_map *m, uint8_t *bitmap);
  uint64_t (*allocated_blocks) (struct vhd_layer *l);
  /* Read n bytes of the file at off (data of the runs lookup gave).
   * NULL: pread of l->fd.  VHDX reads through its replayed log. */
  int (*pread) (struct vhd_layer *l, void *buf, size_t n, uint64_t off);

  /* Writing, top layer only; NULL when the back-end cannot write (the
   * file is then only ever opened read-only).  writer_init prepares (and repairs what an
   * interrupted allocation can leave).  alloc_block places a new block
   * for blk with the format's allocation protocol and returns its
   * data_off; the block is not yet visible.  publish makes lookup find
   * it (after the caller wrote its data) and marks the table dirty.
   * commit makes the given bitmaps and every published block durable,
   * with the format's crash-safe protocol (it starts by making the data
   * written so far durable); on failure the back-end keeps its own
   * metadata dirty.  publish fails only for want of memory: the block
   * then stays unreferenced. */
  int (*writer_init) (struct vhd_layer *l);
  void (*writer_free) (struct vhd_layer *l);
  int (*alloc_block) (struct vhd_layer *l, uint32_t blk, uint64_t *data_off);
  int (*publish) (struct vhd_layer *l, uint32_t blk, uint64_t data_off);
  int (*commit) (struct vhd_layer *l, const struct dirty_block *b, size_t n);
  /* Optional.  begin_write: called once per writable session, before
   * the first change the core makes to the file (a session that only
   * reads never calls it): VHDX's new FileWriteGuid and DataWriteGuid.
   * zero_block: make block blk read as zeros without writing data
   * (VHDX's ZERO state): 1 if done, 0 if this file keeps its blocks
   * (the core writes zeros), -1 on error. */
  int (*begin_write) (struct vhd_layer *l);
  int (*zero_block) (struct vhd_layer *l, uint32_t blk);

  /* Compaction (compact.c: Optimize-VHD), optional, on the top file of
   * a writable chain after writer_init; the crash-safe order is the
   * back-end's (lib/vhd/compact.c, lib/vhdx/compact.c).  compact_begin:
   * before the first change (VHDX: a log under a new FileWriteGuid,
   * the DataWriteGuid kept: the content does not change).
   * compact_release: block blk becomes to (BLOCK_ABSENT, or BLOCK_ZERO
   * where zero_block exists), in memory until commit (ops->commit with
   * no bitmaps).  compact_layout: every extent of the file, see struct
   * compact_layout.  compact_move: copy the extent of table entry index
   * from its offset to to (free space, below it, not overlapping) and
   * point the entry there in memory, until commit (which syncs the copy
   * first).  compact_truncate: the file ends right after end (nothing
   * at or past end is referenced, every change committed).  step names
   * the back-end's own steps for the crash tests. */
  int (*compact_begin) (struct vhd_layer *l);
  int (*compact_release) (struct vhd_layer *l, uint32_t blk,
                          enum block_state to);
  int (*compact_layout) (struct vhd_layer *l, struct compact_layout *out);
  int (*compact_move) (struct vhd_layer *l, const struct compact_extent *x,
                       uint64_t to);
  int (*compact_truncate) (struct vhd_layer *l, uint64_t end,
                           vhd_step_fn step, void *opaque);

  /* Chains: every way this (differencing) layer names its parent, in
   * the order to try them. */
  void (*parent_hints) (struct vhd_layer *l, hint_fn add, void *opaque);
  /* Point child at parent (set-parent and merge): crash-safe. */
  int (*set_parent) (struct vhd_layer *child, const struct vhd_layer *parent,
                     vhd_step_fn step, void *opaque);
  /* Optional (formats whose identity changes when a file is written):
   * let child also accept parent once parent's identity is id
   * (merge.c, before it writes into parent), crash-safe. */
  int (*expect_parent_id) (struct vhd_layer *child,
                           const struct vhd_layer *parent,
                           const uint8_t id[16]);

  /* An identity (id, parent_id) as text, the way the format's own tools
   * print it. */
  void (*format_id) (const uint8_t id[16], char out[37]);

  /* Creation (create, convert): write an empty image into fd. */
  int (*new_image) (int fd, const char *path,
                    const struct vhd_create_params *p);
  /* info: plain facts, see struct vhd_layer_info in vhd.h. */
  void (*describe) (struct vhd_layer *l, struct vhd_layer_info *info);

  /* Optional (resize.c).  resize: make the virtual disk size bytes, l
   * opened writable and locked exclusively, the format-neutral rules
   * checked (a multiple of l->sector_size, shrinking only to at least
   * minimum_size), crash-safe; size == l->size finishes what an
   * interrupted resize left.  minimum_size: the end of the last
   * logical sector of l holding non-zero data, reading at most budget
   * bytes of data (0: no limit); 1 when the budget ran out, *min then
   * being where the scan stopped (an upper bound); NULL: the format
   * never shrinks. */
  int (*resize) (struct vhd_layer *l, uint64_t size, vhd_step_fn step,
                 void *opaque);
  int (*minimum_size) (struct vhd_layer *l, uint64_t budget, uint64_t *min);
};

extern const struct layer_ops vhd_format_ops;
extern const struct layer_ops vhdx_format_ops;

/* Bytes of a bitmap of one block of l (one bit per sector). */
static inline uint32_t
layer_bitmap_bytes (const struct vhd_layer *l)
{
  return (l->block_size / l->sector_size + 7) / 8;
}

/* Read n bytes of layer l's file at off, as its back-end says they are
 * (-1 with errno set, no message). */
static inline int
layer_pread (struct vhd_layer *l, void *buf, size_t n, uint64_t off)
{
  return l->ops->pread ? l->ops->pread (l, buf, n, off)
                       : full_pread (l->fd, buf, n, off);
}

/* layer.c: what every back-end's open and close do with the file
 * itself: its real path, the checks on its kind (no FIFO is ever
 * opened), the descriptor, device, inode and size. */
int vhd_layer_open_file (struct vhd_layer *l, const char *path,
                         bool writable, const struct vhd_open_options *opts);
void vhd_layer_close_file (struct vhd_layer *l);
/* layer.c: id as text, as l's format prints it. */
void vhd_layer_format_id (const struct vhd_layer *l, const uint8_t id[16],
                          char out[37]);

/* layer.c: the back-end's set_parent, or an error when it has none. */
int vhd_layer_set_parent (struct vhd_layer *child,
                          const struct vhd_layer *parent, vhd_step_fn step,
                          void *opaque);

/* layer.c: open path with the back-end that recognises it. */
int vhd_layer_open (const char *path, bool writable,
                    const struct vhd_open_options *opts,
                    struct vhd_layer **out);

#endif /* VHD_LAYER_H */
