/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: small valid VHDX files built in memory, patched
 * by the fuzz input (the input format is in vhdx-template.h).
 *
 * Written from the format description (docs: vhdx-format.md sections
 * 1-4), not from lib/vhdx: the CRC-32C, GUID layout, structures and
 * the log entries are built here independently, so a harness bug and a
 * library bug do not hide each other.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "vhdx-template.h"

const char *const VHDX_FUZZ_NAMES[VHDX_FUZZ_FILES] = {
  "a.vhdx", "b.vhdx", "c.vhdx"
};

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#define MiB (UINT64_C (1) << 20)
#define PAGE 4096
#define CAP (16 * MiB)
#define N_PAGES (CAP / PAGE)
#define LOG_OFF (1 * MiB)
#define LOG_LEN (1 * MiB)
#define META_OFF (2 * MiB)
#define BAT_OFF (3 * MiB)
#define BLOCKS_OFF (4 * MiB)
#define BLOCK MiB
#define N_BLOCKS 5
#define ITEMS 0x10000           /* item area, from the metadata region */
#define LOC_ITEM 0x10040
#define LOC_MAX 0x1000

enum { ST_NOT_PRESENT = 0, ST_ZERO = 2, ST_UNMAPPED = 3, ST_FULL = 6,
       ST_PARTIAL = 7 };

struct image {
  uint8_t *buf;                 /* CAP bytes */
  uint64_t size;
  uint8_t dirty[N_PAGES];       /* page holds something to write */
  /* The model of the unpatched file. */
  bool diff;
  unsigned state[N_BLOCKS];
  uint64_t block_off[N_BLOCKS];
  uint64_t sb_off;              /* 0: none */
  uint32_t loc_len;
  uint32_t sector;
  uint32_t chunk_ratio;
};

static struct image img[VHDX_FUZZ_FILES];
static int n_files;
static unsigned n_patches;

/* ---------------------------------------------------------------- CRC */

/* CRC-32C: reflected polynomial 0x82F63B78, initial and final XOR
 * 0xFFFFFFFF (docs 1.1). */
static uint32_t crc_table[256];

static void
crc_init (void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78 : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t
crc_run (uint32_t crc, const uint8_t *p, size_t n)
{
  while (n--)
    crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

/* The checksum of buf[0..n) with its field at csum treated as zeros. */
static uint32_t
crc_with_hole (const uint8_t *buf, size_t n, size_t csum)
{
  static const uint8_t zero[4];
  uint32_t c = 0xFFFFFFFF;

  c = crc_run (c, buf, csum);
  c = crc_run (c, zero, 4);
  c = crc_run (c, buf + csum + 4, n - csum - 4);
  return c ^ 0xFFFFFFFF;
}

/* ---------------------------------------------------------------- image */

static void
mark (struct image *m, uint64_t off, uint64_t len)
{
  for (uint64_t p = off / PAGE; len && p <= (off + len - 1) / PAGE &&
       p < N_PAGES; p++)
    m->dirty[p] = 1;
}

static void
put (struct image *m, uint64_t off, const void *data, size_t len)
{
  if (off >= CAP)
    return;
  if (len > CAP - off)
    len = CAP - off;
  memcpy (m->buf + off, data, len);
  mark (m, off, len);
  if (off + len > m->size)
    m->size = off + len;
}

static void
put16 (struct image *m, uint64_t off, uint16_t v)
{
  uint8_t b[2] = { v, v >> 8 };
  put (m, off, b, 2);
}

static void
put32 (struct image *m, uint64_t off, uint32_t v)
{
  uint8_t b[4] = { v, v >> 8, v >> 16, v >> 24 };
  put (m, off, b, 4);
}

static void
put64 (struct image *m, uint64_t off, uint64_t v)
{
  put32 (m, off, v);
  put32 (m, off + 4, v >> 32);
}

static uint32_t
get32 (const uint8_t *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24;
}

static void
fix_crc (struct image *m, uint64_t off, size_t len)
{
  put32 (m, off + 4, crc_with_hole (m->buf + off, len, 4));
}

/* ---------------------------------------------------------------- GUIDs */

/* As stored (docs 1.1, 1.5, 2.2, 2.3). */
static const uint8_t G_BAT[16] = {
  0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
  0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
static const uint8_t G_META[16] = {
  0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
  0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
static const uint8_t G_PARAMS[16] = {
  0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
  0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };
static const uint8_t G_SIZE[16] = {
  0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
  0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 };
static const uint8_t G_DISKID[16] = {
  0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
  0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 };
static const uint8_t G_LSS[16] = {
  0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
  0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f };
static const uint8_t G_PSS[16] = {
  0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
  0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 };
static const uint8_t G_LOCATOR[16] = {
  0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
  0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c };
static const uint8_t G_LOCTYPE[16] = {
  0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
  0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13 };
/* CHS parameters (undocumented, known). */
static const uint8_t G_CHS[16] = {
  0xbc, 0xd7, 0x02, 0xda, 0x3a, 0x3d, 0x3c, 0x42,
  0xac, 0x88, 0x2a, 0x36, 0xab, 0x21, 0x47, 0x9b };

/* Per-file GUIDs: a recognisable pattern with the file index in it. */
static void
file_guid (uint8_t g[16], int k, int what)
{
  for (int i = 0; i < 16; i++)
    g[i] = 0x11 * (what + 1) + i * 7 + k * 0x40;
}

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}", lower case, of stored g. */
static void
guid_text (const uint8_t g[16], char out[39])
{
  snprintf (out, 39, "{%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x}",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6],
            g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
}

/* ------------------------------------------------------------ template */

/* UTF-16LE of an ASCII string at off; returns the byte length. */
static uint16_t
put_utf16 (struct image *m, uint64_t off, const char *s)
{
  uint16_t n = 0;

  for (; *s; s++, n += 2)
    put16 (m, off + n, (uint8_t) *s);
  return n;
}

static uint32_t
build_locator (struct image *m, const uint8_t parent_dwg[16],
               const char *parent)
{
  uint64_t base = META_OFF + LOC_ITEM;
  char link[39], abs[64], vol[96];
  const char *kv[5][2];
  uint32_t str = 20 + 12 * 5;

  guid_text (parent_dwg, link);
  snprintf (abs, sizeof abs, "C:\\vms\\%s", parent);
  snprintf (vol, sizeof vol, "\\\\?\\Volume{0eba351e-5634-46d6-a8cf-"
            "4ddc2d6ac0b9}\\vms\\%s", parent);
  kv[0][0] = "parent_linkage", kv[0][1] = link;
  kv[1][0] = "parent_linkage2",
    kv[1][1] = "{00000000-0000-0000-0000-000000000000}";
  kv[2][0] = "relative_path", kv[2][1] = parent[0] == 'b'
    ? ".\\b.vhdx" : ".\\c.vhdx";
  kv[3][0] = "absolute_win32_path", kv[3][1] = abs;
  kv[4][0] = "volume_path", kv[4][1] = vol;

  put (m, base, G_LOCTYPE, 16);
  put16 (m, base + 16, 0);
  put16 (m, base + 18, 5);
  for (int i = 0; i < 5; i++) {
    uint16_t kl, vl;
    kl = put_utf16 (m, base + str, kv[i][0]);
    put32 (m, base + 20 + 12 * i, str);
    put16 (m, base + 20 + 12 * i + 8, kl);
    str += kl;
    vl = put_utf16 (m, base + str, kv[i][1]);
    put32 (m, base + 20 + 12 * i + 4, str);
    put16 (m, base + 20 + 12 * i + 10, vl);
    str += vl;
  }
  return str;
}

/* A few recognisable pages of each allocated block (the rest reads as
 * zeros: the file is sparse there). */
static void
fill_block (struct image *m, int k, unsigned blk, uint64_t off)
{
  static const uint64_t pages[] = { 0, 1, 100, 255 };
  uint8_t p[PAGE];

  for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
    for (unsigned j = 0; j < PAGE; j++)
      p[j] = (uint8_t) (j * 13 + blk * 29 + k * 71 + i * 5 + 1);
    put (m, off + pages[i] * PAGE, p, PAGE);
  }
}

/* One log entry at ring offset pos: the data descriptors' pages
 * (targets and contents), then zero descriptors. */
struct desc {
  bool zero;
  uint64_t target, zero_len;
  const uint8_t *page;
};

static uint64_t
build_entry (struct image *m, uint64_t pos, uint64_t seq, uint64_t tail,
             const uint8_t log_guid[16], const struct desc *d, unsigned n)
{
  uint64_t e = LOG_OFF + pos, n_data = 0, sectors;
  unsigned i;

  for (i = 0; i < n; i++)
    n_data += !d[i].zero;
  sectors = (n + 2 + 127) / 128;
  put (m, e, "loge", 4);
  put32 (m, e + 8, (sectors + n_data) * PAGE);
  put32 (m, e + 12, tail);
  put64 (m, e + 16, seq);
  put32 (m, e + 24, n);
  put (m, e + 32, log_guid, 16);
  put64 (m, e + 48, m->size);           /* FlushedFileOffset */
  put64 (m, e + 56, m->size);           /* LastFileOffset */
  n_data = 0;
  for (i = 0; i < n; i++) {
    uint64_t p = e + 64 + 32 * i;
    if (d[i].zero) {
      put (m, p, "zero", 4);
      put64 (m, p + 8, d[i].zero_len);
    }
    else {
      uint64_t s = e + (sectors + n_data++) * PAGE;
      put (m, p, "desc", 4);
      put (m, p + 4, d[i].page + 4092, 4);
      put (m, p + 8, d[i].page, 8);
      put (m, s, "data", 4);
      put32 (m, s + 4, seq >> 32);
      put (m, s + 8, d[i].page + 8, 4084);
      put32 (m, s + 4092, seq);
    }
    put64 (m, p + 16, d[i].target);
    put64 (m, p + 24, seq);
  }
  fix_crc (m, e, (sectors + n_data) * PAGE);
  return (sectors + n_data) * PAGE;
}

/* kind: 0 dynamic, 1 fixed, 2 differencing.  parent: file index of the
 * parent (differencing). */
static void
build_file (int k, int kind, uint32_t sector, bool log, int parent)
{
  struct image *m = &img[k];
  uint8_t g[16], log_guid[16];
  uint64_t disk_size = vhdx_fuzz_disk_size ();
  uint32_t bat_entries;
  uint64_t next = BLOCKS_OFF;
  unsigned b;

  m->sector = sector;
  m->diff = kind == 2;
  m->sb_off = 0;
  m->loc_len = 0;
  m->chunk_ratio = (uint32_t) (((UINT64_C (1) << 23) * sector) / BLOCK);
  bat_entries = m->diff ? m->chunk_ratio + 1 : N_BLOCKS;

  /* Block states per kind. */
  for (b = 0; b < N_BLOCKS; b++) {
    static const unsigned dyn[N_BLOCKS] = {
      ST_FULL, ST_NOT_PRESENT, ST_FULL, ST_ZERO, ST_FULL };
    static const unsigned dif[N_BLOCKS] = {
      ST_PARTIAL, ST_FULL, ST_UNMAPPED, ST_NOT_PRESENT, ST_PARTIAL };
    m->state[b] = kind == 1 ? ST_FULL : kind == 2 ? dif[b] : dyn[b];
    /* In a middle layer, make block 3 present so the chain's three
     * layers all matter. */
    if (kind == 2 && k == 1 && b == 3)
      m->state[b] = ST_FULL;
    m->block_off[b] = 0;
    if (m->state[b] >= ST_FULL) {
      m->block_off[b] = next;
      next += BLOCK;
    }
    if (kind == 2 && b == 0) {
      m->sb_off = next;
      next += MiB;
    }
  }
  m->size = next;

  /* File identifier. */
  put (m, 0, "vhdxfile", 8);
  put_utf16 (m, 8, "nbdkit-vhd fuzz");

  /* Metadata region. */
  put (m, META_OFF, "metadata", 8);
  {
    struct { const uint8_t *g; uint32_t off, len, flags; } it[7] = {
      { G_PARAMS, ITEMS, 8, 4 },
      { G_SIZE, ITEMS + 8, 8, 6 },
      { G_DISKID, ITEMS + 16, 16, 6 },
      { G_LSS, ITEMS + 32, 4, 6 },
      { G_PSS, ITEMS + 36, 4, 6 },
      { G_CHS, ITEMS + 48, 8, 0 },
      { G_LOCATOR, LOC_ITEM, 0, 4 },
    };
    unsigned n = 6;

    if (m->diff) {
      uint8_t pdwg[16];
      file_guid (pdwg, parent, 1);
      m->loc_len = it[6].len =
        build_locator (m, pdwg, VHDX_FUZZ_NAMES[parent]);
      n = 7;
    }
    put16 (m, META_OFF + 10, n);
    for (unsigned i = 0; i < n; i++) {
      uint64_t e = META_OFF + 32 + 32 * i;
      put (m, e, it[i].g, 16);
      put32 (m, e + 16, it[i].off);
      put32 (m, e + 20, it[i].len);
      put32 (m, e + 24, it[i].flags);
    }
    put32 (m, META_OFF + ITEMS, BLOCK);
    put32 (m, META_OFF + ITEMS + 4, kind == 1 ? 1 : kind == 2 ? 2 : 0);
    put64 (m, META_OFF + ITEMS + 8, disk_size);
    file_guid (g, 0, 9);                /* one disk id for the chain */
    put (m, META_OFF + ITEMS + 16, g, 16);
    put32 (m, META_OFF + ITEMS + 32, sector);
    put32 (m, META_OFF + ITEMS + 36, 4096);
    put32 (m, META_OFF + ITEMS + 48, 16);
    put32 (m, META_OFF + ITEMS + 52, 63);
  }

  /* BAT, blocks, sector bitmap. */
  for (b = 0; b < N_BLOCKS; b++) {
    uint64_t i = b + b / m->chunk_ratio;
    put64 (m, BAT_OFF + 8 * i, m->block_off[b] | m->state[b]);
    if (m->block_off[b])
      fill_block (m, k, b, m->block_off[b]);
  }
  if (m->sb_off) {
    uint32_t bytes = BLOCK / sector / 8;
    uint8_t bits[256];

    put64 (m, BAT_OFF + 8 * (uint64_t) m->chunk_ratio, m->sb_off | 6);
    /* Block 0: a mix (bytes of alternating nibbles, then runs); block
     * 4: its first half. */
    for (unsigned j = 0; j < sizeof bits; j++)
      bits[j] = j < 8 ? 0x0F << (j % 2 * 4) : j % 3 == 0 ? 0xFF : 0;
    put (m, m->sb_off, bits, MIN (bytes, sizeof bits));
    memset (bits, 0xFF, sizeof bits);
    for (uint32_t x = 0; x < bytes / 2; x += sizeof bits)
      put (m, m->sb_off + 4 * bytes + x, bits,
           MIN (sizeof bits, bytes / 2 - x));
  }
  (void) bat_entries;

  /* Region tables. */
  for (int t = 0; t < 2; t++) {
    uint64_t r = t == 0 ? 0x30000 : 0x40000;
    put (m, r, "regi", 4);
    put32 (m, r + 8, 2);
    put (m, r + 16, G_BAT, 16);
    put64 (m, r + 32, BAT_OFF);
    put32 (m, r + 40, MiB);
    put32 (m, r + 44, 1);
    put (m, r + 48, G_META, 16);
    put64 (m, r + 64, META_OFF);
    put32 (m, r + 72, MiB);
    put32 (m, r + 76, 1);
    fix_crc (m, r, 65536);
  }

  /* The log: the BAT's first page and the metadata table's first page
   * are stale on disk; two entries hold the current ones (and zero a
   * page of junk). */
  file_guid (log_guid, k, 2);
  if (log) {
    static uint8_t bat_page[VHDX_FUZZ_FILES][PAGE], meta_page[VHDX_FUZZ_FILES][PAGE];
    struct desc d1[1], d2[2];
    uint64_t len;

    memcpy (bat_page[k], m->buf + BAT_OFF, PAGE);
    memcpy (meta_page[k], m->buf + META_OFF, PAGE);
    d1[0] = (struct desc) { false, BAT_OFF, 0, bat_page[k] };
    d2[0] = (struct desc) { false, META_OFF, 0, meta_page[k] };
    d2[1] = (struct desc) { true, BAT_OFF + 0x80000, 2 * PAGE, NULL };
    len = build_entry (m, 0, UINT64_C (0x100000005), 0, log_guid, d1, 1);
    build_entry (m, len, UINT64_C (0x100000006), 0, log_guid, d2, 2);
    /* Stale: block 2 not present, no table signature, junk. */
    put64 (m, BAT_OFF + 16, 0);
    put (m, META_OFF, "metadatX", 8);
    put (m, BAT_OFF + 0x80000, "junkjunk", 8);
  }
  else
    memset (log_guid, 0, 16);

  /* Headers: sequence 10 and 11, the same otherwise. */
  for (int h = 0; h < 2; h++) {
    uint64_t o = h == 0 ? 0x10000 : 0x20000;
    put (m, o, "head", 4);
    put64 (m, o + 8, 10 + h);
    file_guid (g, k, 0);
    put (m, o + 16, g, 16);
    file_guid (g, k, 1);
    put (m, o + 32, g, 16);
    put (m, o + 48, log_guid, 16);
    put16 (m, o + 64, 0);
    put16 (m, o + 66, 1);
    put32 (m, o + 68, LOG_LEN);
    put64 (m, o + 72, LOG_OFF);
    fix_crc (m, o, PAGE);
  }
}

/* ------------------------------------------------------------ patching */

struct target {
  uint64_t off, len;
};

static struct target
target_of (const struct image *m, unsigned t)
{
  switch (t) {
  case 0: return (struct target) { 0, 0x10000 };
  case 1: case 13: return (struct target) { 0x10000, PAGE };
  case 2: return (struct target) { 0x20000, PAGE };
  case 3: case 14: return (struct target) { 0x30000, 0x10000 };
  case 4: return (struct target) { 0x40000, 0x10000 };
  case 5: return (struct target) { META_OFF, 0x10000 };
  case 6: return (struct target) { META_OFF + ITEMS, MiB - ITEMS };
  case 7: return (struct target) { META_OFF + LOC_ITEM,
                                   m->loc_len ? m->loc_len : LOC_MAX };
  case 8: return (struct target) { BAT_OFF, MiB };
  case 9: return (struct target) { m->sb_off ? m->sb_off : BLOCKS_OFF, MiB };
  case 10: return (struct target) { LOG_OFF, LOG_LEN };
  case 11: return (struct target) { BLOCKS_OFF, CAP - BLOCKS_OFF };
  default: return (struct target) { 0, CAP };
  }
}

/* Every entry header in the ring whose EntryLength is usable gets the
 * CRC-32C of its bytes (following the wrap). */
static void
fix_log (struct image *m)
{
  for (uint64_t pos = 0; pos < LOG_LEN; pos += PAGE) {
    uint8_t *e = m->buf + LOG_OFF + pos;
    uint32_t len = get32 (e + 8), c;

    if (memcmp (e, "loge", 4) != 0 || len == 0 || len % PAGE ||
        len > LOG_LEN)
      continue;
    c = 0xFFFFFFFF;
    c = crc_run (c, e, 4);
    c = crc_run (c, (const uint8_t *) "\0\0\0\0", 4);
    c = crc_run (c, e + 8, PAGE - 8);
    for (uint64_t x = PAGE; x < len; x += PAGE)
      c = crc_run (c, m->buf + LOG_OFF + (pos + x) % LOG_LEN, PAGE);
    put32 (m, LOG_OFF + pos + 4, c ^ 0xFFFFFFFF);
  }
}

static void
apply (struct image *m, unsigned t, bool fix, uint32_t off,
       const uint8_t *data, size_t len)
{
  struct target g = target_of (m, t);

  if (t == 12) {                        /* the file size */
    uint64_t s = MIN ((uint64_t) off, CAP);
    if (s < m->size)
      memset (m->buf + s, 0, m->size - s);
    m->size = s;
    return;
  }
  off %= g.len;
  len = MIN (len, g.len - off);
  if (g.off + off >= CAP)
    return;
  put (m, g.off + off, data, len);
  if (t == 13 || t == 14)               /* both copies */
    put (m, g.off + off + 0x10000, data, len);  /* the second copy */
  if (!fix)
    return;
  switch (t) {
  case 1: case 2: fix_crc (m, g.off, PAGE); break;
  case 13: fix_crc (m, 0x10000, PAGE); fix_crc (m, 0x20000, PAGE); break;
  case 3: case 4: fix_crc (m, g.off, 0x10000); break;
  case 14: fix_crc (m, 0x30000, 0x10000); fix_crc (m, 0x40000, 0x10000);
    break;
  case 10: fix_log (m); break;
  }
}

/* ------------------------------------------------------------ files */

static void
write_image (int k)
{
  struct image *m = &img[k];
  const char *path = fuzz_path (3, VHDX_FUZZ_NAMES[k]);
  uint64_t p, q;
  int fd;

  unlink (path);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    perror (path);
    abort ();
  }
  for (p = 0; p < N_PAGES && p * PAGE < m->size; p = q) {
    for (q = p; q < N_PAGES && m->dirty[q] == m->dirty[p]; q++)
      ;
    if (m->dirty[p]) {
      uint64_t end = MIN (q * PAGE, m->size);
      if (pwrite (fd, m->buf + p * PAGE, end - p * PAGE, p * PAGE) !=
          (ssize_t) (end - p * PAGE)) {
        perror (path);
        abort ();
      }
    }
  }
  if (ftruncate (fd, m->size) == -1) {
    perror (path);
    abort ();
  }
  close (fd);
}

bool
vhdx_fuzz_input (const uint8_t *data, size_t size)
{
  size_t ml = strlen (VHDX_FUZZ_MAGIC);
  return size >= ml && memcmp (data, VHDX_FUZZ_MAGIC, ml) == 0;
}

uint64_t
vhdx_fuzz_disk_size (void)
{
  return (N_BLOCKS - 1) * BLOCK + 3 * img[0].sector;
}

void
vhdx_fuzz_build (const uint8_t *data, size_t size, struct vhdx_fuzz *x)
{
  uint8_t opt;
  int kind, k;
  uint32_t sector;

  if (crc_table[1] == 0)
    crc_init ();
  if (vhdx_fuzz_input (data, size)) {
    data += strlen (VHDX_FUZZ_MAGIC);
    size -= strlen (VHDX_FUZZ_MAGIC);
  }
  opt = size ? data[0] : 0;
  if (size)
    data++, size--;
  kind = opt & 3;
  sector = opt & 4 ? 4096 : 512;

  /* Start from clean images: only the pages written last time. */
  for (k = 0; k < VHDX_FUZZ_FILES; k++) {
    struct image *m = &img[k];
    if (m->buf == NULL) {
      m->buf = calloc (1, CAP);
      if (m->buf == NULL)
        abort ();
    }
    for (uint64_t p = 0; p < N_PAGES; p++)
      if (m->dirty[p]) {
        memset (m->buf + p * PAGE, 0, PAGE);
        m->dirty[p] = 0;
      }
    m->size = 0;
    m->sector = sector;
  }
  n_files = kind < 2 ? 1 : kind == 2 ? 2 : 3;
  if (kind < 2)
    build_file (0, kind, sector, opt & 8, 0);
  else {
    build_file (0, 2, sector, opt & 8, 1);
    build_file (1, kind == 3 ? 2 : 0, sector, opt & 16, 2);
    if (kind == 3)
      build_file (2, 0, sector, opt & 16, 0);
  }

  n_patches = 0;
  while (size >= 5) {
    unsigned t = data[0];
    uint32_t off = data[1] | data[2] << 8 | (uint32_t) data[3] << 16;
    size_t len = MIN ((size_t) data[4], size - 5);

    apply (&img[(t >> 5 & 3) % n_files], t & 15, t & 16, off, data + 5, len);
    data += 5 + len, size -= 5 + len;
    n_patches++;
  }

  for (k = 0; k < n_files; k++)
    write_image (k);
  /* FUZZ_SAVE=DIR: also leave a copy of the files there (to look at a
   * regression input's files with vhdtool or vhdxgen.py). */
  if (getenv ("FUZZ_SAVE")) {
    char cmd[512];
    snprintf (cmd, sizeof cmd, "cp --sparse=always %s/*.vhdx '%s'/",
              fuzz_dir (), getenv ("FUZZ_SAVE"));
    if (system (cmd) != 0)
      fprintf (stderr, "fuzz: FUZZ_SAVE: copy failed\n");
  }
  for (; k < VHDX_FUZZ_FILES; k++)
    unlink (fuzz_path (3, VHDX_FUZZ_NAMES[k]));
  /* Nor the files of a VHD input before this one: a patched locator
   * may name any of them, and what an input does must not depend on
   * the inputs run before it. */
  for (k = 0; k < FUZZ_MAX_FILES; k++)
    fuzz_unlink (FUZZ_NAMES[k]);
  fuzz_unlink ("w.vhd");
  x->n_files = n_files;
  x->ignore_checksums = opt & 32;
  x->ignore_id_mismatch = opt & 64;
  x->patches = n_patches;
}

void
vhdx_fuzz_assert_intact (void)
{
  static uint8_t buf[64 * PAGE];

  for (int k = 0; k < n_files; k++) {
    const struct image *m = &img[k];
    const char *path = fuzz_path (3, VHDX_FUZZ_NAMES[k]);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    bool same = fd != -1 && fstat (fd, &st) == 0 &&
                (uint64_t) st.st_size == m->size;
    uint64_t p, q;

    /* The pages written (the rest are holes, zeros in the image too),
     * in runs of up to 64. */
    for (p = 0; same && p < N_PAGES && p * PAGE < m->size; p = q) {
      uint64_t n;
      for (q = p; q < N_PAGES && q - p < 64 && m->dirty[q] == m->dirty[p];
           q++)
        ;
      if (!m->dirty[p])
        continue;
      n = MIN (q * PAGE, m->size) - p * PAGE;
      same = pread (fd, buf, n, p * PAGE) == (ssize_t) n &&
             memcmp (buf, m->buf + p * PAGE, n) == 0;
    }
    if (fd != -1)
      close (fd);
    if (!same) {
      fprintf (stderr, "fuzz: %s was modified: nothing may write to it\n",
               VHDX_FUZZ_NAMES[k]);
      abort ();
    }
  }
}

/* The guest byte at disk offset x, from layer k down (model). */
static uint8_t
model_byte (int k, uint64_t x)
{
  for (; k < n_files; k++) {
    const struct image *m = &img[k];
    unsigned b = x / BLOCK;
    uint64_t in = x % BLOCK;

    switch (m->state[b]) {
    case ST_FULL:
      return m->buf[m->block_off[b] + in];
    case ST_PARTIAL:
      if (m->diff) {
        uint64_t bit = (uint64_t) (b % m->chunk_ratio) * (BLOCK / m->sector)
                       + in / m->sector;
        if (!(m->buf[m->sb_off + bit / 8] & (1 << bit % 8)))
          continue;
      }
      return m->buf[m->block_off[b] + in];
    case ST_NOT_PRESENT:
      if (m->diff)
        continue;
      return 0;
    default:
      return 0;
    }
  }
  return 0;
}

void
vhdx_fuzz_assert_content (const uint8_t *buf, uint64_t off, uint64_t len)
{
  if (n_patches != 0)
    return;
  for (uint64_t i = 0; i < len; i++)
    if (off + i < vhdx_fuzz_disk_size () &&
        buf[i] != model_byte (0, off + i)) {
      fprintf (stderr, "fuzz: the unpatched chain reads 0x%02x at disk "
               "offset %" PRIu64 ", the template holds 0x%02x\n", buf[i],
               off + i, model_byte (0, off + i));
      abort ();
    }
}
