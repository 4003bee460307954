/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHD format library.
 *
 * Everything that knows the on-disk format of Microsoft VHD files lives
 * behind this header.  It makes no nbdkit calls, so the plugin, vhdtool,
 * the overlay filter and the unit tests all use it the same way.
 *
 * Errors: functions return -1 (or NULL) with errno set and report a
 * human-readable message, naming the file and the structure at fault,
 * through the message handler (vhd_set_message_handler).
 */
#ifndef VHD_H
#define VHD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Microsoft's limit, also what 32-bit sector BAT entries allow. */
#define VHD_MAX_SIZE (2040ULL << 30)
#define VHD_DEFAULT_BLOCK_SIZE (2u << 20)
#define VHD_DEFAULT_MAX_DEPTH 256
#define VHD_MAX_BLOCK_SIZE (256u << 20)
/* Memory for the per-block resolution cache of an open chain (bytes).
 * Enough for every block of a 2040 GiB chain to be resolved in turn
 * without a process growing past some tens of MiB. */
#define VHD_DEFAULT_CACHE_BUDGET (16u << 20)

enum vhd_type {
  VHD_TYPE_FIXED = 2,
  VHD_TYPE_DYNAMIC = 3,
  VHD_TYPE_DIFF = 4,
};

/* ------------------------------------------------------------ messages */

enum vhd_msg_level { VHD_MSG_ERROR, VHD_MSG_WARNING, VHD_MSG_DEBUG };
typedef void (*vhd_message_fn) (enum vhd_msg_level level, const char *msg);

/* Default handler prints errors and warnings to stderr. */
void vhd_set_message_handler (vhd_message_fn fn);
void vhd_error (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void vhd_warning (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
void vhd_debug (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));

/* ------------------------------------------------------------ names */

const char *vhd_type_name (uint32_t disk_type);
/* "xxxxxxxx-xxxx-..." from the 16 raw bytes in storage order. */
void vhd_uuid_format (const uint8_t id[16], char out[37]);

/* ------------------------------------------------------------ text */

/* Decode UTF-16 (little- or big-endian) into a malloc'd UTF-8 string.
 * Stops at the first NUL code unit.  Returns NULL (errno EILSEQ) on an
 * unpaired surrogate. */
char *vhd_utf16_to_utf8 (const uint8_t *buf, size_t bytes, bool big_endian);
/* Encode UTF-8 as UTF-16; returns malloc'd buffer and its byte length,
 * or NULL (errno EILSEQ) on invalid UTF-8. */
uint8_t *vhd_utf8_to_utf16 (const char *s, bool big_endian, size_t *bytes);

/* ------------------------------------------------------------ one file */

/* Check mode (vhdtool check).  With a problem handler in the open
 * options, opening a file or a chain reports every problem it finds to
 * the handler, instead of failing at the first one, and carries on
 * wherever the rest can still be examined.  file is the file at fault,
 * structure the part of it ("footer", "dynamic header", "BAT",
 * "parent locator 0", "parent", "chain", ...) and what the message,
 * worded as the error a normal open would give.  A chain opened in
 * check mode can be inspected (its layers), not read or written. */
typedef void (*vhd_problem_fn) (void *opaque, const char *file,
                                const char *structure, const char *what);

/* Which footer field gives the guest-visible disk size (the size rule,
 * see vhd_quirk_disk_size in quirks.c).  AUTO: the one the file's
 * producer (creator application) means: the CHS geometry for Virtual
 * PC ('vpc ') and qemu ('qemu'), the current size for everything else.
 * GEOMETRY / CURRENT force one reading for every layer.  Whatever the
 * rule, a disk is never served larger than its current size, and a
 * geometry of 65535/16/255 (the maximum) always means current size. */
enum vhd_disk_size {
  VHD_DISK_SIZE_AUTO = 0,
  VHD_DISK_SIZE_GEOMETRY,
  VHD_DISK_SIZE_CURRENT,
};
/* "auto", "geometry", "current" (also "chs" and "current-size"). */
int vhd_disk_size_parse (const char *s, enum vhd_disk_size *out);
const char *vhd_disk_size_name (enum vhd_disk_size d);
/* Tag of the tolerated producer quirk number i (the bits of
 * vhd_layer_info.quirks; the table is in lib/vhd/quirks.c), NULL past
 * the last. */
const char *vhd_quirk_name (unsigned i);

struct vhd_open_options {
  bool readonly;                /* open the top file read-only */
  bool ignore_checksums;        /* accept footer/header checksum errors */
  bool ignore_id_mismatch;      /* accept a parent whose id differs */
  bool no_lock;                 /* skip advisory locking (inspection) */
  bool no_parents;              /* open only the named file (info) */
  /* Read only what says who a file is and who its parent is (footer,
   * headers, metadata, locators): the block table is neither read nor
   * checked, so the layer can be described (allocated_known false) and
   * searched for its parent, not read.  For looking at many files at
   * once (vhdtool scan).  vhd_layer_open read-only and
   * vhd_layer_find_parent only: vhd_chain_open refuses it (EINVAL). */
  bool headers_only;
  unsigned max_depth;           /* 0 = VHD_DEFAULT_MAX_DEPTH */
  const char *const *parent_files;  /* explicit parent candidates */
  size_t n_parent_files;
  const char *const *parent_dirs;   /* directories to search for parents */
  size_t n_parent_dirs;
  /* For images from untrusted sources: a parent (at any depth) may only
   * be a file whose real path (realpath(3)) lies inside the top file's
   * real directory or one of parent_dirs (subdirectories included), or
   * is one of parent_files.  A candidate anywhere else is refused before
   * it is opened, and the search goes on (see locator.c). */
  bool confine_parents;
  vhd_problem_fn problem;       /* check mode when set (see above) */
  void *problem_opaque;
  /* Appended to "parent not found": how this program's user says where
   * a parent is.  NULL: the plugin's parent= and parent-dir= options. */
  const char *missing_parent_hint;
  enum vhd_disk_size disk_size; /* size rule of every layer (above) */
  /* Bytes the chain's cache of resolved blocks may use; 0 means
   * VHD_DEFAULT_CACHE_BUDGET.  Blocks with writes not yet flushed stay
   * cached whatever it costs (see resolve.c), so it may be exceeded
   * until the next flush. */
  uint64_t cache_budget;
  /* VHDX: the DataWriteGuid a writing session gives the top file (NULL:
   * a random one, as MS-VHDX wants; merge.c chooses it beforehand so
   * that an interrupted merge can recognise its target).  Read at the
   * first write, not at open: it must stay valid until then. */
  const uint8_t *new_data_id;
};

/* ------------------------------------------------------------ layers */

/* One file of a chain, whatever its format (opaque). */
struct vhd_layer;

/* Open one file alone (no parents), validated as vhd_chain_open would:
 * what vhdtool info shows when the chain cannot be resolved. */
int vhd_layer_open (const char *path, bool writable,
                    const struct vhd_open_options *opts,
                    struct vhd_layer **out);
void vhd_layer_close (struct vhd_layer *l);
/* "VHD" or "VHDX" when the content of path (a regular file: its first
 * and last bytes) is recognised by one of the back-ends, else NULL
 * (also when path cannot be read).  Nothing is validated: a recognised
 * file may still fail to open. */
const char *vhd_probe_format (const char *path);
const char *vhd_layer_path (const struct vhd_layer *l);
/* Guest-visible size (by the size rule: see vhd_layer_info). */
uint64_t vhd_layer_size (const struct vhd_layer *l);
/* "fixed", "dynamic" or "differencing". */
const char *vhd_layer_type (const struct vhd_layer *l);
/* "VHD" or "VHDX". */
const char *vhd_layer_format (const struct vhd_layer *l);

/* Plain facts about one layer, for vhdtool info.  Strings are owned
 * by the structure: vhd_layer_info_free. */
struct vhd_locator_info {
  int slot;
  char kind[24];                /* VHD: "W2ru", ...; VHDX: the key */
  char *text;                   /* NULL: unreadable */
};
#define VHD_MAX_LOCATOR_INFO 16

/* A format's own detail, in the order worth reading (VHDX: headers,
 * region tables, metadata items, log, BAT summary). */
struct vhd_fact {
  char *name;                   /* unique within one layer */
  char *value;
};

struct vhd_layer_info {
  const char *format;           /* "VHD" or "VHDX" */
  uint32_t type;                /* enum vhd_type */
  uint64_t size;                /* guest-visible: by the size rule */
  uint64_t current_size;        /* what the file's structures cover */
  uint64_t geometry_size;       /* cylinders * heads * spt * 512 */
  bool size_from_geometry;      /* size is the geometry size */
  const char *size_rule;        /* why, static text */
  uint32_t quirks;              /* bit i: vhd_quirk_name (i) tolerated */
  uint32_t block_size;          /* 0 for fixed disks */
  uint32_t sector_size;         /* logical */
  uint64_t allocated;           /* bytes of blocks allocated (fixed: size) */
  bool allocated_known;         /* false: opened headers_only, allocated 0 */
  uint64_t file_size;
  char id[37];
  char creator[128];            /* VHD: application code; VHDX: the
                                   file identifier's creator text */
  uint32_t creator_version;     /* major << 16 | minor */
  const char *creator_os;       /* "Wi2k", "Mac" or "other" */
  time_t created;
  bool has_geometry;
  unsigned cylinders, heads, sectors_per_track;
  bool footer_from_copy;        /* EOF footer unusable, copy at 0 used */
  /* Differencing disks only. */
  char parent_id[37];
  char parent_id2[37];          /* VHDX: a second identity the parent may
                                   have (parent_linkage2, as in the
                                   middle of a merge), "" when none */
  char *parent_name;
  time_t parent_time;
  unsigned n_locators;
  struct vhd_locator_info locators[VHD_MAX_LOCATOR_INFO];
  struct vhd_fact *facts;
  unsigned n_facts;
};

void vhd_layer_describe (struct vhd_layer *l, struct vhd_layer_info *info);
void vhd_layer_info_free (struct vhd_layer_info *info);

/* Where the parent search of vhd_chain_open (locator.c: the options'
 * parent files and directories, the child's locators, its parent name
 * field, its parent's file name in its own directory) leads from the
 * differencing layer child, one step: the first candidate of child's
 * format whose identity is the one child records, or failing that the
 * first candidate of child's format that exists, whatever its identity
 * (the caller compares: vhd_layer_describe's id against the child's
 * parent_id and parent_id2).  On success *parent is that file, opened
 * read-only with opts (no_parents is implied).  In check mode
 * (opts->problem) what the search finds wrong is reported there and a
 * damaged candidate is returned too; otherwise a candidate of another
 * identity is accepted with a warning.  -1 with errno ENOENT when no
 * candidate exists, EINVAL when child has no parent or
 * opts->confine_parents is set (not supported here); other errno: a
 * candidate exists but cannot be opened.  vhdtool scan uses it to tell
 * whether a child's locators lead to the parent it found by identity. */
int vhd_layer_find_parent (struct vhd_layer *child,
                           const struct vhd_open_options *opts,
                           struct vhd_layer **parent);

/* ------------------------------------------------------------ chain */

/* The layers of a disk, top first (opaque). */
struct vhd_chain;

int vhd_chain_open (const char *path, const struct vhd_open_options *opts,
                    struct vhd_chain **out);
/* fsync the directory holding path, so that a name just created,
 * linked or removed there is durable. */
int vhd_sync_dir (const char *path);
/* Reopen the top file for writing (exclusive lock) in a chain opened
 * read-only: lets a server validate everything read-only at start-up
 * and write only once a client asks to. */
int vhd_chain_make_writable (struct vhd_chain *c);
/* Flushes pending metadata when writable, then closes every file. */
int vhd_chain_close (struct vhd_chain *c);

uint64_t vhd_chain_size (const struct vhd_chain *c);
unsigned vhd_chain_depth (const struct vhd_chain *c);
/* Layer k, 0 being the top (the named file); k < depth. */
struct vhd_layer *vhd_chain_layer (const struct vhd_chain *c, unsigned k);
bool vhd_chain_writable (const struct vhd_chain *c);

int vhd_chain_pread (struct vhd_chain *c, void *buf, uint64_t count,
                     uint64_t offset);
int vhd_chain_pwrite (struct vhd_chain *c, const void *buf, uint64_t count,
                      uint64_t offset);
/* Makes the range read as zeros; never lets parent data show through. */
int vhd_chain_zero (struct vhd_chain *c, uint64_t count, uint64_t offset);
/* True if vhd_chain_zero of the range would write no data (a hole
 * punched in a fixed disk, or a range that reads as zeros already). */
bool vhd_chain_zero_is_fast (struct vhd_chain *c, uint64_t count,
                             uint64_t offset);
/* Gives back host space: whole sectors of the range that the top file
 * holds become holes (they read as zeros after it; partial sectors and
 * sectors held by a parent or by no layer keep their content). */
int vhd_chain_trim (struct vhd_chain *c, uint64_t count, uint64_t offset);
/* Makes every completed write durable. */
int vhd_chain_flush (struct vhd_chain *c);

/* Extents: calls fn for consecutive ranges covering exactly
 * [offset, offset+count) (clipped to the disk), each either data or
 * zero/unallocated, adjacent ranges of the same layer merged.  The
 * layer argument is the index of the layer supplying data, -1 for zero.
 * fn returns 0 to go on, 1 to stop early (success), -1 on error. */
typedef int (*vhd_extent_fn) (void *opaque, uint64_t offset, uint64_t len,
                              int layer);
int vhd_chain_extents (struct vhd_chain *c, uint64_t offset, uint64_t count,
                       vhd_extent_fn fn, void *opaque);

/* ------------------------------------------------------------ create */

/* The format of a new file. */
enum vhd_format {
  VHD_FORMAT_AUTO = 0,          /* a child: its parent's; otherwise by the
                                   name (vhd_format_for_name) */
  VHD_FORMAT_VHD,
  VHD_FORMAT_VHDX,
};
/* VHDX for names ending .vhdx or .avhdx (any case), VHD otherwise. */
enum vhd_format vhd_format_for_name (const char *path);

struct vhd_create_params {
  uint32_t type;                /* fixed, dynamic or differencing */
  uint64_t size;                /* ignored for differencing */
  uint32_t block_size;          /* 0 = the format's default: VHD 2 MiB
                                   (a child: its parent's); VHDX fixed
                                   2 MiB, dynamic 32 MiB, differencing
                                   2 MiB (Hyper-V's) */
  const char *parent;           /* differencing: the parent file */
  bool ignore_checksums;        /* for reading the parent */
  uint32_t format;              /* enum vhd_format; a child must be of
                                   its parent's */
  uint32_t logical_sector_size; /* 0 = 512 (a child: its parent's);
                                   4096: VHDX only */
  uint32_t physical_sector_size;  /* VHDX only: 0 = 4096 (a child: its
                                     parent's), else 512 or 4096 */
};

/* Creates FILE; refuses (EEXIST) to overwrite an existing file. */
int vhd_create (const char *path, const struct vhd_create_params *p);

/* ------------------------------------------------------------ operations */

/* Progress of a long operation: done out of total bytes. */
typedef void (*vhd_progress_fn) (void *opaque, uint64_t done, uint64_t total);
/* Called as a long operation passes each of its named steps (see the
 * crash-safety comments of merge.c and reparent.c); lets vhdtool's test
 * suite kill the process at exactly that point. */
typedef void (*vhd_step_fn) (void *opaque, const char *step);

#define VHD_OUTPUT_RAW 0        /* convert: a plain raw image */

struct vhd_convert_params {
  uint32_t type;                /* VHD_TYPE_FIXED, _DYNAMIC or VHD_OUTPUT_RAW */
  uint32_t block_size;          /* 0 = the format's default */
  uint32_t format;              /* enum vhd_format (not raw); AUTO: by
                                   OUTPUT's name.  A VHDX output has the
                                   chain's logical sector size. */
  vhd_progress_fn progress;
  void *opaque;
};

/* Flattens the chain into the new standalone file OUTPUT; refuses
 * (EEXIST) to overwrite an existing file.  Ranges that read as zeros
 * are not written: holes in raw and fixed output, unallocated blocks
 * in dynamic output. */
int vhd_convert (struct vhd_chain *src, const char *output,
                 const struct vhd_convert_params *p);

struct vhd_merge_params {
  const char *into;             /* ancestor to merge into; NULL = parent */
  bool confine_parents;         /* as in struct vhd_open_options */
  uint64_t cache_budget;        /* as in struct vhd_open_options */
  vhd_progress_fn progress;
  vhd_step_fn step;
  void *opaque;
};

/* Merge-VHD: FILE and every layer between it and the target go into
 * the target, then are removed.  Crash-safe and resumable: see merge.c. */
int vhd_merge (const char *file, const struct vhd_merge_params *p);

struct vhd_set_parent_params {
  bool ignore_id_mismatch;      /* accept (and record) a different id */
  vhd_step_fn step;
  void *opaque;
};

/* Set-VHD -ParentPath: point differencing disk FILE at PARENT,
 * rewriting its parent id (only with ignore_id_mismatch), name,
 * timestamp and locators.  Crash-safe: see reparent.c. */
int vhd_set_parent (const char *file, const char *parent,
                    const struct vhd_set_parent_params *p);

struct vhd_compact_params {
  vhd_progress_fn progress;     /* the examination of the blocks */
  vhd_step_fn step;
  void *opaque;
};
struct vhd_compact_result {
  uint64_t released_blocks;     /* blocks given up (unallocated, absent
                                   or, VHDX, ZERO) */
  uint64_t moved_blocks;        /* blocks moved down the file */
  uint64_t bytes_before, bytes_after;  /* file size */
};

/* Optimize-VHD: give back the space of blocks the disk does not need
 * (all zeros in a dynamic disk; equal to the parent's data, or VHDX
 * zeros, in a differencing disk), pack the blocks left and shorten the
 * file, without changing what the disk reads (nor, VHDX, its
 * DataWriteGuid: children stay valid).  FILE is locked like a writing
 * server's top file; fixed disks are refused (EINVAL).  Crash-safe and
 * re-runnable: see compact.c.  res may be NULL; it is filled as far as
 * the work got, also on failure. */
int vhd_compact (const char *file, const struct vhd_compact_params *p,
                 struct vhd_compact_result *res);

/* Fragmentation of one layer (vhdtool info, as Get-VHD's
 * FragmentationPercentage): taking the allocated blocks in disk order,
 * a block after the first is fragmented when its data does not follow
 * the previous one's in the file (it starts before it ends, or 1 MiB
 * or more after: VHD's bitmap and padding in between do not count).
 * percent = 100 * fragmented / (allocated - 1); 0 with fewer than two
 * blocks and for fixed disks.  One pass over the block table. */
struct vhd_fragmentation {
  uint64_t allocated_blocks;
  uint64_t fragmented_blocks;
  double percent;
};
int vhd_layer_fragmentation (struct vhd_layer *l,
                             struct vhd_fragmentation *out);
struct vhd_resize_params {
  bool to_minimum;              /* ignore size: shrink to the minimum
                                   size (VHDX) */
  vhd_step_fn step;
  void *opaque;
};

/* Resize-VHD: make FILE's virtual disk size bytes (a multiple of the
 * logical sector).  Grows fixed and dynamic VHD and VHDX files and
 * differencing VHDX files (new space reads as zeros); shrinks fixed
 * and dynamic VHDX files down to their minimum size (no data is ever
 * cut).  Refuses to shrink a VHD and to resize a differencing VHD.
 * Offline: FILE is opened writable and locked exclusively.  A file
 * other disks use as their parent no longer fits them afterwards.
 * Crash-safe and finished by running it again: see lib/resize.c. */
int vhd_resize (const char *file, uint64_t size,
                const struct vhd_resize_params *p);

/* The smallest size layer l can be shrunk to without cutting data: the
 * end of its last logical sector holding non-zero data (not Hyper-V's
 * partition-based MinimumSize; see vhdtool(1)).  VHDX only (-1 with
 * errno ENOTSUP otherwise, no message); a differencing VHDX cannot
 * shrink: its minimum is its size.  It reads the data backwards from
 * the last allocated block, at most budget bytes of it (0: no limit):
 * 1 when that was not enough, *out then being an upper bound (where
 * the scan stopped), 0 when exact. */
int vhd_layer_minimum_size (struct vhd_layer *l, uint64_t budget,
                            uint64_t *out);

#endif /* VHD_H */
