/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the VHD back-end's own declarations (lib/vhd/ only, and
 * the unit tests and fuzzers of the format).
 *
 * The VHD format: a 512-byte footer at the end of the file (and, for
 * dynamic and differencing disks, a copy at offset 0), a dynamic header,
 * a block allocation table (BAT) of 32-bit sector numbers, and blocks
 * each made of a sector bitmap and the block's data.  See
 * ../shared/docs/vhd-format.md of the project's reference material.
 */
#ifndef VHD_FORMAT_H
#define VHD_FORMAT_H

#include "internal.h"
#include "layer.h"

#define VHD_SECTOR 512
#define VHD_FOOTER_SIZE 512
#define VHD_HEADER_SIZE 1024
#define VHD_BAT_UNUSED 0xFFFFFFFFu
#define VHD_NUM_LOCATORS 8

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
/* Sectors of the largest CHS geometry, 65535/16/255: readers take it to
 * mean "the current size" (quirks.c). */
#define VHD_MAX_GEOMETRY (65535ULL * 16 * 255)

/* Bytes of sector bitmap in front of each block: one bit per sector,
 * rounded up to a whole sector. */
uint32_t vhd_bitmap_bytes (uint32_t block_size);

/* Locator platform data space: the spec says sectors, every producer
 * writes bytes.  Returns the byte count, or 0 if the value is invalid. */
uint64_t vhd_locator_space_bytes (uint32_t space);

/* Printable creator application ("win ", "qemu", "tap\0" -> "tap"). */
void vhd_creator_format (const char app[4], char out[5]);

/* ------------------------------------------------------------ one file */

struct vhd_file {
  struct vhd_layer l;           /* first: the core sees only this */

  struct vhd_footer footer;
  uint64_t footer_offset;       /* where the footer in use was found */
  bool footer_from_copy;        /* EOF footer unusable, copy at 0 used */
  bool footer_copy_differs;     /* dyn/diff: copy at 0 != EOF footer */

  uint32_t type;                /* enum vhd_type */
  uint64_t geometry_size;       /* cylinders * heads * spt * 512 */
  bool size_from_geometry;      /* l.disk_size is the geometry size */
  const char *size_rule;        /* why l.disk_size: static text */
  uint32_t quirks;              /* bit (1 << enum vhd_quirk) per producer
                                   quirk tolerated in this file */

  /* Dynamic and differencing only. */
  struct vhd_header header;
  uint32_t bitmap_bytes;        /* on disk: whole sectors */
  uint32_t sectors_per_block;
  uint32_t *bat;                /* layers written only: host order,
                                   complemented (~entry), see bat_get */
  uint64_t bat_loaded;          /* entries in bat: whole BAT sectors */
  uint32_t *bat_pages;          /* one bit per 1024 entries, set when
                                   one of them is allocated (every layer:
                                   see bat_get, vhd_bat_lookup) */
  struct vhd_bat_cache *bat_cache;  /* pages of the table, while bat is
                                       NULL (file.c) */
  uint64_t metadata_end;        /* end of header, BAT, locators, batmap */
  uint64_t data_end;            /* end of the last allocated block */
  uint64_t n_allocated;         /* allocated blocks, counted at open */
  pthread_mutex_t alloc_lock;   /* writer: placing blocks (alloc.c) */
  struct vhd_bat_dirty *dirty;  /* writer: BAT sectors to write */
};

static inline struct vhd_file *
vhd_file (struct vhd_layer *l)
{
  return (struct vhd_file *) l;
}
static inline const struct vhd_file *
vhd_cfile (const struct vhd_layer *l)
{
  return (const struct vhd_file *) l;
}

int vhd_file_open (const char *path, bool writable,
                   const struct vhd_open_options *opts,
                   struct vhd_file **out);
void vhd_file_close (struct vhd_file *f);

/* Number of allocated blocks (within the disk size). */
uint64_t vhd_file_allocated_blocks (const struct vhd_file *f);
/* BAT entry blk (VHD_BAT_UNUSED when unallocated): from the in-memory
 * table of a layer that is written, else from a few cached pages of
 * the file's table.  -1 on a read error. */
int vhd_bat_lookup (struct vhd_file *f, uint32_t blk, uint32_t *entry);
/* Before the first write: keep the whole table in memory. */
int vhd_bat_load_table (struct vhd_file *f);
/* Decoded text of locator slot i, as found (malloc'd), or NULL. */
char *vhd_locator_text (const struct vhd_file *f, int i);
const char *vhd_locator_code_name (uint32_t code, char buf[5]);


/* BAT entries are read by readers while a writer allocates.
 *
 * The table is stored complemented (~entry), in an anonymous mapping
 * (file.c): an unallocated entry (0xffffffff) is then a zero word, and
 * pages of the table that hold no allocated block are never written.
 * They are never read either: bat_pages has a bit per page (1024
 * entries) set once the page is written, and an entry of a page never
 * written is unallocated without looking.  (Reading an untouched page
 * maps the zero page, which some kernels and sandboxes count as
 * resident: mapping a whole 2040 GiB layer then cost its full 4 MiB.)
 * So a 32-deep chain of 2040 GiB sparse layers costs almost no RSS
 * instead of 128 MiB.  Only bat_get/bat_set touch f->bat. */
#define BAT_PAGE_SHIFT 10
static inline uint32_t bat_get (const struct vhd_file *f, uint32_t blk)
{
  uint32_t page = blk >> BAT_PAGE_SHIFT;
  if (!(__atomic_load_n (&f->bat_pages[page / 32], __ATOMIC_ACQUIRE) &
        (1u << (page % 32))))
    return VHD_BAT_UNUSED;
  return ~__atomic_load_n (&f->bat[blk], __ATOMIC_ACQUIRE);
}
static inline void bat_set (struct vhd_file *f, uint32_t blk, uint32_t v)
{
  uint32_t page = blk >> BAT_PAGE_SHIFT;
  __atomic_store_n (&f->bat[blk], ~v, __ATOMIC_RELEASE);
  __atomic_or_fetch (&f->bat_pages[page / 32], 1u << (page % 32),
                     __ATOMIC_RELEASE);
}
/* Byte offset of block blk's data area (after its bitmap). */
static inline uint64_t block_data_offset (const struct vhd_file *f,
                                          uint32_t entry)
{ return (uint64_t) entry * VHD_SECTOR + f->bitmap_bytes; }

/* alloc.c: where new space may start (past everything referenced), and
 * the one protocol that grows the file (see there): reserve [at,
 * at+len) by moving the footer after it.  step (may be NULL) is told
 * "footer-moved". */
uint64_t vhd_next_free (const struct vhd_file *f);
int vhd_grow (struct vhd_file *f, uint64_t at, uint64_t len,
              vhd_step_fn step, void *opaque);
/* alloc.c: the writing operations of layer.h. */
int vhd_file_writer_init (struct vhd_layer *l);
void vhd_file_writer_free (struct vhd_layer *l);
int vhd_file_alloc_block (struct vhd_layer *l, uint32_t blk,
                          uint64_t *data_off);
int vhd_file_publish (struct vhd_layer *l, uint32_t blk, uint64_t data_off);
/* BAT entry blk becomes entry in memory, its sector dirty (for the next
 * commit): publish, and compact.c's releases and moves. */
void vhd_file_set_entry (struct vhd_file *f, uint32_t blk, uint32_t entry);
int vhd_file_commit (struct vhd_layer *l, const struct dirty_block *b,
                     size_t n);

/* compact.c: the compaction operations of layer.h. */
int vhd_compact_release (struct vhd_layer *l, uint32_t blk,
                         enum block_state to);
int vhd_compact_layout (struct vhd_layer *l, struct compact_layout *out);
int vhd_compact_move (struct vhd_layer *l, const struct compact_extent *x,
                      uint64_t to);
int vhd_compact_truncate (struct vhd_layer *l, uint64_t end,
                          vhd_step_fn step, void *opaque);

/* ondisk.c: time stamps count seconds from 2000-01-01T00:00:00Z. */
#define VHD_EPOCH 946684800
uint32_t vhd_timestamp (time_t t);

/* locator-data.c: the data of a locator of kind code naming
 * parent_path (absolute) for a child in child_dir (absolute); malloc'd,
 * NULL (errno ENOTSUP) for kinds we cannot write. */
#define VHD_LOCATOR_MIN_SPACE 4096  /* room to rewrite a locator later */
uint8_t *vhd_locator_encode (uint32_t code, const char *child_dir,
                             const char *parent_path, size_t *len);

/* reparent.c: point child (a differencing disk opened writable, locked
 * by the caller) at parent: parent id, timestamp, name, locators. */
int vhd_reparent (struct vhd_file *child, const struct vhd_file *parent,
                  vhd_step_fn step, void *opaque);

/* resize.c: layer_ops.resize (grow only; the rules are resize.c's). */
int vhd_resize_layer (struct vhd_layer *l, uint64_t size, vhd_step_fn step,
                      void *opaque);

/* The footer to write at EOF: the one in use, with a correct checksum. */
void vhd_file_footer_bytes (const struct vhd_file *f,
                            uint8_t buf[VHD_FOOTER_SIZE]);
/* create.c: layer_ops.new_image. */
int vhd_new_image (int fd, const char *path,
                   const struct vhd_create_params *p);

/* quirks.c: decide f's guest-visible size (f->l.disk_size,
 * f->geometry_size, f->size_rule) from its footer (f->l.size holds the current
 * size), by its creator and opts->disk_size.  Never more than the
 * current size, which is all the file's structures cover. */
void vhd_quirk_disk_size (struct vhd_file *f,
                          const struct vhd_open_options *opts);
/* quirks.c: whether the default size rule serves a file with footer ft
 * at its CHS geometry's size (its creator sizes disks so: 'vpc ',
 * 'qemu'; the maximum geometry excepted), for resize's warning. */
bool vhd_quirk_creator_uses_geometry (const struct vhd_footer *ft);


#endif /* VHD_FORMAT_H */
