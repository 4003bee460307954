/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHDX back-end's own declarations (lib/vhdx/ only, and
 * the fuzzers of the format).
 *
 * The VHDX format (MS-VHDX v2, Hyper-V since 2012, checkpoints are
 * .avhdx files): a 1 MiB header section (file identifier, two headers
 * with CRC-32C and sequence numbers, two region tables), a metadata
 * region (block size, sizes, sector sizes, parent locator), a block
 * allocation table (BAT) of 64-bit entries with one sector-bitmap entry
 * after every chunk_ratio payload entries, payload and sector-bitmap
 * blocks anywhere on 1 MiB boundaries, and a write-ahead log that may
 * hold metadata updates not yet applied.  Everything little-endian.
 * See ../shared/docs/vhdx-format.md of the project's reference material.
 */
#ifndef VHDX_FORMAT_H
#define VHDX_FORMAT_H

#include <pthread.h>

#include "internal.h"
#include "layer.h"

#define VHDX_MiB (UINT64_C (1) << 20)
#define VHDX_HEADER_SECTION VHDX_MiB
#define VHDX_HEADER_OFFSET(i) ((i) == 0 ? 0x10000 : 0x20000)
#define VHDX_HEADER_SIZE 4096
#define VHDX_REGION_OFFSET(i) ((i) == 0 ? 0x30000 : 0x40000)
#define VHDX_REGION_SIZE 65536
#define VHDX_REGION_MAX 2047
#define VHDX_META_TABLE_SIZE 65536
#define VHDX_META_MAX 2047
#define VHDX_MAX_SIZE (UINT64_C (64) << 40)
#define VHDX_MIN_BLOCK (UINT32_C (1) << 20)
#define VHDX_MAX_BLOCK (UINT32_C (256) << 20)
#define VHDX_LOG_PAGE 4096
/* A log this large is not something any producer writes (every file
 * seen has 1 MiB); replaying it in memory would cost that much. */
#define VHDX_MAX_LOG (UINT64_C (32) << 20)

/* Payload block states (BAT entry bits 0-2). */
enum vhdx_state {
  VHDX_NOT_PRESENT = 0,
  VHDX_UNDEFINED = 1,
  VHDX_ZERO = 2,
  VHDX_UNMAPPED = 3,
  VHDX_UNMAPPED_DRAFT = 5,      /* draft 0.95's UNMAPPED (qemu reads it) */
  VHDX_FULLY_PRESENT = 6,
  VHDX_PARTIALLY_PRESENT = 7,
};
/* Sector bitmap block states. */
#define VHDX_SB_NOT_PRESENT 0
#define VHDX_SB_PRESENT 6

#define VHDX_BAT_STATE(e) ((unsigned) ((e) & 7))
#define VHDX_BAT_RESERVED(e) (((e) >> 3) & 0x1FFFF)
#define VHDX_BAT_OFFSET(e) ((e) & ~UINT64_C (0xFFFFF))
/* A sector bitmap entry holds a block: SB_PRESENT, or 7, which some
 * writers use and the BAT check accepts (bat.c) and every reader
 * (layer.c) dereferences alike.  Writers and compaction must agree. */
#define VHDX_SB_HELD(e) (VHDX_BAT_STATE (e) != VHDX_SB_NOT_PRESENT)

/* Little-endian fields. */
static inline uint16_t le16 (const uint8_t *p)
{ return p[0] | (uint16_t) p[1] << 8; }
static inline uint32_t le32 (const uint8_t *p)
{ return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
         (uint32_t) p[3] << 24; }
static inline uint64_t le64 (const uint8_t *p)
{ return le32 (p) | (uint64_t) le32 (p + 4) << 32; }
/* Sector bitmaps are LSB first in the file, MSB first in the core. */
static inline uint8_t reverse_bits (uint8_t b)
{
  b = (b & 0xF0) >> 4 | (b & 0x0F) << 4;
  b = (b & 0xCC) >> 2 | (b & 0x33) << 2;
  return (b & 0xAA) >> 1 | (b & 0x55) << 1;
}
static inline void put_le16 (uint8_t *p, uint16_t v)
{ p[0] = v; p[1] = v >> 8; }
static inline void put_le32 (uint8_t *p, uint32_t v)
{ put_le16 (p, v); put_le16 (p + 2, v >> 16); }
static inline void put_le64 (uint8_t *p, uint64_t v)
{ put_le32 (p, v); put_le32 (p + 4, v >> 32); }

/* CRC-32C (Castagnoli) of buf, whose 4 bytes at csum_off count as
 * zero: the checksum of headers, region tables and log entries. */
uint32_t vhdx_crc32c (const uint8_t *buf, size_t len, size_t csum_off);
/* Running CRC-32C: start from 0, feed pieces in order. */
uint32_t vhdx_crc32c_update (uint32_t crc, const uint8_t *buf, size_t len);

/* GUIDs are kept as the 16 bytes stored (Windows layout: Data1-3
 * little-endian).  Text form "xxxxxxxx-xxxx-...", lower case. */
void vhdx_guid_format (const uint8_t g[16], char out[37]);
/* Parse "{xxxxxxxx-...}" (braces optional, any case); -1 if not. */
int vhdx_guid_parse (const char *s, uint8_t g[16]);
bool vhdx_guid_is_zero (const uint8_t g[16]);
/* A new random GUID (version 4 in its text form). */
void vhdx_guid_new (uint8_t g[16]);

/* Known GUIDs, as stored. */
extern const uint8_t vhdx_guid_bat[16], vhdx_guid_metadata[16];
extern const uint8_t vhdx_item_file_params[16], vhdx_item_disk_size[16],
  vhdx_item_disk_id[16], vhdx_item_logical_sector[16],
  vhdx_item_physical_sector[16], vhdx_item_parent_locator[16],
  vhdx_item_chs[16], vhdx_item_incomplete[16], vhdx_item_pmem[16],
  vhdx_locator_type[16];

struct vhdx_header {
  bool valid;                   /* signature and CRC */
  uint32_t checksum;
  uint64_t seq;
  uint8_t file_write_guid[16], data_write_guid[16], log_guid[16];
  uint16_t log_version, version;
  uint32_t log_length;
  uint64_t log_offset;
};

struct vhdx_region {
  uint8_t guid[16];
  uint64_t offset;
  uint32_t length;
  uint32_t required;
};

struct vhdx_item {
  uint8_t guid[16];
  uint32_t offset, length, flags;
};
#define VHDX_ITEM_USER 1u
#define VHDX_ITEM_VIRTUAL_DISK 2u
#define VHDX_ITEM_REQUIRED 4u

struct vhdx_kv {
  char *key, *value;            /* UTF-8 */
};

/* A range of the file as the replayed log says it is (log.c). */
struct vhdx_patch {
  uint64_t off, len;
  const uint8_t *data;          /* NULL: zeros */
};

struct vhdx_log_replay {
  struct vhdx_patch *v;         /* sorted by off, disjoint */
  size_t n, cap;
  uint8_t *pages;               /* the rebuilt data pages */
  size_t n_pages;
  unsigned entries;             /* entries of the active sequence */
  uint64_t first_seq, last_seq;
  uint64_t flushed_file_offset, last_file_offset;
};

struct vhdx_bat_cache;
struct vhdx_writer;

/* The log as this process writes it (logwrite.c). */
struct vhdx_log_writer {
  bool live;                    /* the current header names our log */
  uint8_t guid[16];
  uint64_t seq;                 /* of the next entry */
  uint64_t head;                /* ring offset of the next entry */
  uint64_t tail;                /* of the oldest entry not yet applied
                                   and durable in place */
  uint64_t used;                /* bytes from tail to head */
  uint64_t last, last_len;      /* the entry written last */
  uint64_t durable_size;        /* a file size known durable */
};

/* One 4 KiB metadata page to go through the log (logwrite.c): its
 * place in the file and its new content. */
struct vhdx_page {
  uint64_t off;
  uint8_t data[VHDX_LOG_PAGE];
};

struct vhdx_file {
  struct vhd_layer l;           /* first: the core sees only this */

  bool identified;               /* the 'vhdxfile' signature is there */
  char *creator;                /* the identifier's creator (UTF-8) */
  struct vhdx_header hdr[2];
  int current;                  /* index of the current header */
  struct vhdx_region *regions;  /* of the table in use */
  uint32_t n_regions;
  int region_table;             /* 0 or 1: the one in use */
  bool region_tables_differ;
  uint64_t bat_offset, meta_offset;
  uint32_t bat_length, meta_length;

  struct vhdx_item *items;      /* the metadata table */
  uint32_t n_items;
  uint32_t block_size;
  bool leave_allocated, has_parent;
  uint64_t virtual_size;
  uint8_t disk_id[16];
  uint32_t logical_sector, physical_sector;
  bool has_chs;
  struct vhdx_kv *locator;      /* the parent locator's keys */
  uint32_t n_locator;
  bool has_linkage2;

  uint32_t chunk_ratio;         /* payload blocks per sector bitmap */
  uint64_t bat_entries;

  struct vhdx_log_replay *replay;  /* NULL: the log is empty */
  struct vhdx_log_replay *replay_retired;  /* replayed into the file by
                                   a writer: kept (readers may still be
                                   using it) until close */
  uint64_t data_end;            /* file size, or LastFileOffset of a
                                   replayed log when larger: bytes past
                                   EOF up to it read as zeros */
  struct vhdx_bat_cache *bat_cache;

  struct vhdx_log_writer log;
  struct vhdx_writer *w;        /* write.c: the top file of a writable
                                   chain, after writer_init */
  const uint8_t *new_data_id;   /* the DataWriteGuid a writing session
                                   gives the file (NULL: a random one);
                                   the opener's, read at the first write */
};

static inline struct vhdx_file *
vhdx_file (struct vhd_layer *l)
{
  return (struct vhdx_file *) l;
}

/* file.c */
int vhdx_file_open (const char *path, bool writable,
                    const struct vhd_open_options *opts,
                    struct vhdx_file **out);
void vhdx_file_close (struct vhdx_file *f);
/* The value of locator key (NULL if absent). */
const char *vhdx_locator_get (const struct vhdx_file *f, const char *key);

/* log.c: find the active sequence of the log named by the current
 * header and replay it into f->replay (never into the file). */
int vhdx_log_replay (struct vhdx_file *f, const struct vhd_open_options *opts);
void vhdx_log_free (struct vhdx_file *f);
/* Read the file as the replayed log says it is: every read of the
 * file's structures and data goes through this.  Bytes past EOF (up
 * to data_end) are zeros. */
int vhdx_pread (struct vhdx_file *f, void *buf, size_t n, uint64_t off);

/* bat.c */
int vhdx_bat_init (struct vhdx_file *f);
void vhdx_bat_free (struct vhdx_file *f);
/* BAT entry i, decoded and validated (-1 after a message). */
int vhdx_bat_entry (struct vhdx_file *f, uint64_t i, uint64_t *entry);
static inline uint64_t vhdx_payload_index (const struct vhdx_file *f,
                                           uint64_t blk)
{ return blk + blk / f->chunk_ratio; }
static inline uint64_t vhdx_sb_index (const struct vhdx_file *f, uint64_t chunk)
{ return chunk * (f->chunk_ratio + (uint64_t) 1) + f->chunk_ratio; }
/* Writers (write.c): set entry i in memory.  VHDX_BAT_DIRTY: the page
 * is to be committed (vhdx_bat_take_dirty); else the file holds the
 * entry already.  VHDX_BAT_FRESH: a payload entry that has just become
 * PARTIALLY_PRESENT, whose sector bitmap bits in the file are stale.
 * -1 after a message. */
#define VHDX_BAT_DIRTY 1u
#define VHDX_BAT_FRESH 2u
int vhdx_bat_set (struct vhdx_file *f, uint64_t i, uint64_t entry,
                  unsigned flags);
/* Set entry i (dirty) only if it is old_entry now, atomically with
 * respect to the other writers of the table: 1 if replaced, 0 if not,
 * -1 after a message. */
int vhdx_bat_replace (struct vhdx_file *f, uint64_t i, uint64_t old_entry,
                      uint64_t entry);
/* A BAT page taken for a commit: its number, content and the payload
 * entries marked fresh since the last take (bit j: entry j). */
struct vhdx_bat_page {
  uint64_t page;
  uint8_t data[VHDX_LOG_PAGE];
  uint8_t fresh[VHDX_LOG_PAGE / 8 / 8];
};
/* Copy out every dirty page (sorted by page), marking them clean
 * (-1 after a message). */
int vhdx_bat_take_dirty (struct vhdx_file *f, struct vhdx_bat_page **out,
                         size_t *n);
/* After a failed commit: the taken pages are dirty again. */
void vhdx_bat_retake (struct vhdx_file *f, const struct vhdx_bat_page *p,
                      size_t n);
/* After a commit: pages written in place and not dirtied since are
 * read from the file again. */
void vhdx_bat_applied (struct vhdx_file *f);

/* logwrite.c: metadata updates through the log (docs section 4.10),
 * and header updates.  The caller holds the writer's log lock. */
/* A new current header: the current one with the next sequence number
 * and the GUIDs given (NULL: unchanged), written over the other slot and
 * made durable. */
int vhdx_header_update (struct vhdx_file *f, const uint8_t *file_write,
                        const uint8_t *data_write, const uint8_t *log_guid);
/* Start a log of its own (after any replay): a fresh LogGuid, an empty
 * first entry, durable, then the header naming it, with a new
 * FileWriteGuid and, if data_write, that DataWriteGuid. */
int vhdx_log_begin (struct vhdx_file *f, const uint8_t *data_write);
/* Make pages p[0..n) the file's content, crash-safely: each entry of
 * the log durable before its pages are written in place; everything
 * durable in place on return.  The caller made the file's size
 * durable (f->log.durable_size). */
int vhdx_log_pages (struct vhdx_file *f, const struct vhdx_page *p, size_t n);
/* The most pages vhdx_log_pages writes in one entry (atomically) into
 * a log that has just begun. */
size_t vhdx_log_max_pages (const struct vhdx_file *f);
/* Clean end of the log (every entry applied and durable): LogGuid 0. */
int vhdx_log_end (struct vhdx_file *f);
/* Replay a pending log (f->replay) into the file (docs section 4.9). */
int vhdx_log_replay_into_file (struct vhdx_file *f);

/* reparent.c: the parent locator item of a child of pf that will be
 * at path (in child_dir, a real path), as Hyper-V writes it; and
 * set_parent (layer.h). */
int vhdx_locator_build (const char *path, const struct vhdx_file *pf,
                        const char *child_dir, const uint8_t *linkage2,
                        uint8_t **out, size_t *out_len);
int vhdx_set_parent (struct vhd_layer *child, const struct vhd_layer *parent,
                     vhd_step_fn step, void *opaque);
int vhdx_expect_parent_id (struct vhd_layer *child,
                           const struct vhd_layer *parent,
                           const uint8_t id[16]);

/* write.c: the writer operations (layer.h). */
int vhdx_writer_init (struct vhd_layer *l);
void vhdx_writer_free (struct vhd_layer *l);
int vhdx_begin_write (struct vhd_layer *l);
int vhdx_alloc_block (struct vhd_layer *l, uint32_t blk, uint64_t *data_off);
int vhdx_publish (struct vhd_layer *l, uint32_t blk, uint64_t data_off);
int vhdx_zero_block (struct vhd_layer *l, uint32_t blk);
int vhdx_commit (struct vhd_layer *l, const struct dirty_block *b, size_t n);

/* write.c: after compact.c cut the file to size. */
void vhdx_writer_truncated (struct vhd_layer *l, uint64_t size);
/* write.c: compact.c's log, begun keeping the DataWriteGuid (begin) or
 * ended (!begin), under the writer's log lock. */
int vhdx_writer_log (struct vhd_layer *l, bool begin);
/* compact.c: the compaction operations (layer.h). */
int vhdx_compact_begin (struct vhd_layer *l);
int vhdx_compact_release (struct vhd_layer *l, uint32_t blk,
                          enum block_state to);
int vhdx_compact_layout (struct vhd_layer *l, struct compact_layout *out);
int vhdx_compact_move (struct vhd_layer *l, const struct compact_extent *x,
                       uint64_t to);
int vhdx_compact_truncate (struct vhd_layer *l, uint64_t end,
                           vhd_step_fn step, void *opaque);

/* Check mode: every entry, every overlap (reports, no failure). */
void vhdx_bat_check (struct vhdx_file *f, const struct vhd_open_options *opts);
/* Payload blocks per state (counts[8]); -1 on a read error. */
int vhdx_bat_count (struct vhdx_file *f, uint64_t counts[8]);

/* resize.c: layer_ops.resize and minimum_size. */
int vhdx_resize_layer (struct vhd_layer *l, uint64_t size, vhd_step_fn step,
                       void *opaque);
int vhdx_minimum_size (struct vhd_layer *l, uint64_t budget, uint64_t *min);

/* create.c: layer_ops.new_image. */
int vhdx_new_image (int fd, const char *path,
                    const struct vhd_create_params *p);

#endif /* VHDX_FORMAT_H */
