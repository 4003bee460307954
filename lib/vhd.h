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

#define VHD_SECTOR 512
#define VHD_FOOTER_SIZE 512
#define VHD_HEADER_SIZE 1024
#define VHD_BAT_UNUSED 0xFFFFFFFFu
#define VHD_NUM_LOCATORS 8
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

/* ------------------------------------------------------------ on disk */

/* Hard disk footer (512 bytes, big-endian on disk), decoded. */
struct vhd_footer {
  char cookie[8];
  uint32_t features;
  uint32_t version;
  uint64_t data_offset;
  uint32_t timestamp;
  char creator_app[4];
  uint32_t creator_version;
  uint32_t creator_os;
  uint64_t original_size;
  uint64_t current_size;
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors_per_track;
  uint32_t disk_type;
  uint32_t checksum;
  uint8_t unique_id[16];
  uint8_t saved_state;
};

struct vhd_locator {
  uint32_t code;                /* platform code, 0 = unused slot */
  uint32_t space;               /* as stored (bytes or sectors) */
  uint32_t length;              /* bytes of locator data */
  uint64_t offset;              /* absolute byte offset of the data */
};

/* Dynamic disk header (1024 bytes), decoded. */
struct vhd_header {
  char cookie[8];
  uint64_t data_offset;
  uint64_t table_offset;
  uint32_t version;
  uint32_t max_table_entries;
  uint32_t block_size;
  uint32_t checksum;
  uint8_t parent_id[16];
  uint32_t parent_timestamp;
  uint8_t parent_name[512];     /* UTF-16BE, NUL padded */
  struct vhd_locator loc[VHD_NUM_LOCATORS];
};

#define VHD_LOC_W2RU 0x57327275u
#define VHD_LOC_W2KU 0x57326B75u
#define VHD_LOC_WI2R 0x57693272u
#define VHD_LOC_WI2K 0x5769326Bu
#define VHD_LOC_MACX 0x4D616358u
#define VHD_LOC_MAC  0x4D616320u

/* Checksum: one's complement of the byte sum, checksum field as zero. */
uint32_t vhd_checksum (const uint8_t *buf, size_t len, size_t csum_offset);

void vhd_footer_decode (const uint8_t buf[VHD_FOOTER_SIZE], struct vhd_footer *f);
/* Encodes and stores a fresh checksum (into f->checksum too). */
void vhd_footer_encode (struct vhd_footer *f, uint8_t buf[VHD_FOOTER_SIZE]);
void vhd_header_decode (const uint8_t buf[VHD_HEADER_SIZE], struct vhd_header *h);
void vhd_header_encode (struct vhd_header *h, uint8_t buf[VHD_HEADER_SIZE]);

/* CHS geometry by the algorithm of the VHD specification's appendix. */
void vhd_chs (uint64_t size, uint16_t *cyl, uint8_t *heads, uint8_t *spt);

/* Bytes of sector bitmap in front of each block: one bit per sector,
 * rounded up to a whole sector. */
uint32_t vhd_bitmap_bytes (uint32_t block_size);

/* Locator platform data space: the spec says sectors, every producer
 * writes bytes.  Returns the byte count, or 0 if the value is invalid. */
uint64_t vhd_locator_space_bytes (uint32_t space);

const char *vhd_type_name (uint32_t disk_type);
/* "xxxxxxxx-xxxx-..." from the 16 raw bytes in storage order. */
void vhd_uuid_format (const uint8_t id[16], char out[37]);
/* Printable creator application ("win ", "qemu", "tap\0" -> "tap"). */
void vhd_creator_format (const char app[4], char out[5]);

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

struct vhd_open_options {
  bool readonly;                /* open the top file read-only */
  bool ignore_checksums;        /* accept footer/header checksum errors */
  bool ignore_id_mismatch;      /* accept a parent whose id differs */
  bool no_lock;                 /* skip advisory locking (inspection) */
  bool no_parents;              /* open only the named file (info) */
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
  /* Bytes the chain's cache of resolved blocks may use; 0 means
   * VHD_DEFAULT_CACHE_BUDGET.  Blocks with writes not yet flushed stay
   * cached whatever it costs (see resolve.c), so it may be exceeded
   * until the next flush. */
  uint64_t cache_budget;
};

struct vhd_file {
  char *path;                   /* absolute */
  int fd;
  bool writable;
  dev_t dev;
  ino_t ino;
  uint64_t file_size;

  struct vhd_footer footer;
  uint64_t footer_offset;       /* where the footer in use was found */
  bool footer_from_copy;        /* EOF footer unusable, copy at 0 used */
  bool footer_copy_differs;     /* dyn/diff: copy at 0 != EOF footer */

  uint32_t type;                /* enum vhd_type */
  uint64_t size;                /* current size: the guest-visible size */

  /* Dynamic and differencing only. */
  struct vhd_header header;
  uint32_t block_size;
  uint32_t bitmap_bytes;
  uint32_t sectors_per_block;
  uint32_t n_blocks;            /* blocks covering size */
  uint32_t *bat;                /* host order, complemented (~entry):
                                   see bat_get in internal.h */
  uint64_t bat_loaded;          /* entries in bat: whole BAT sectors */
  uint32_t *bat_pages;          /* one bit per page of bat ever written:
                                   see bat_get in internal.h */
  uint64_t metadata_end;        /* end of header, BAT, locators, batmap */
  uint64_t data_end;            /* end of the last allocated block */
  char *parent_name;            /* parent unicode name as UTF-8 */
  bool unusable;                /* check mode: too damaged to examine
                                   further (its parent is not looked for) */
};

int vhd_file_open (const char *path, bool writable,
                   const struct vhd_open_options *opts,
                   struct vhd_file **out);
void vhd_file_close (struct vhd_file *f);

/* Number of allocated blocks (within the disk size). */
uint64_t vhd_file_allocated_blocks (const struct vhd_file *f);
/* Decoded text of locator slot i, as found (malloc'd), or NULL. */
char *vhd_locator_text (const struct vhd_file *f, int i);
const char *vhd_locator_code_name (uint32_t code, char buf[5]);

/* ------------------------------------------------------------ chain */

struct vhd_cache;

struct vhd_chain {
  unsigned depth;               /* number of layers */
  struct vhd_file **layers;     /* layers[0] is the top (the named file) */
  uint64_t size;
  bool writable;
  struct vhd_cache *cache;      /* per-block resolution (resolve.c) */
  struct vhd_writer *writer;    /* dirty metadata (write.c) */
};

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

struct vhd_create_params {
  uint32_t type;                /* fixed, dynamic or differencing */
  uint64_t size;                /* ignored for differencing */
  uint32_t block_size;          /* 0 = 2 MiB */
  const char *parent;           /* differencing: the parent file */
  bool ignore_checksums;        /* for reading the parent */
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
  uint32_t block_size;          /* dynamic: 0 = 2 MiB */
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

#endif /* VHD_H */
