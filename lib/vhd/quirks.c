/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: one table of the producer quirks we tolerate, and the
 * guest-visible size of a file by its producer.
 *
 * THE QUIRK TABLE.  Real VHD files depart from the specification in
 * known ways, each typical of some producers.  Every departure the
 * library accepts is listed below once, with the producers (creator
 * application codes, as stored at footer offset 28) known to make it,
 * what is tolerated and why.  The code that tolerates it calls
 * vhd_quirk_met with the entry's id (grep for VHD_QUIRK_): a debug
 * message names the entry, and the file's quirks bit set records it for
 * vhdtool info.  Problems that are refused (a bad cookie, a BAT entry
 * past the end of the file, ...) are not quirks and are not here.
 *
 * THE SIZE RULE.  A VHD footer holds two sizes: "current size" and a
 * cylinder/head/sector geometry.  The specification's geometry
 * algorithm rounds down, so C*H*S*512 is usually a little smaller than
 * the current size.  Virtual PC, whose guests saw an ATA disk of C*H*S
 * sectors, sized its disks by the geometry; Hyper-V and every later
 * producer by the current size.  A real case: a 127 GiB Virtual PC disk
 * has current size 136,365,211,648 bytes but geometry 65278/16/255,
 * 136,363,130,880 bytes, and the GPT its guest wrote keeps its backup
 * header at the end of the geometry.  vhd_quirk_disk_size serves each
 * file at the size its producer meant (the creators table below) unless
 * the user forces a rule (open option disk_size).
 *
 * Sources of the facts (all read, none copied): the VHD specification
 * v1.0 (geometry algorithm, 511-byte footers of old images); QEMU's
 * block/vpc.c, whose creator table says which creators size by
 * geometry: up to 9.x every creator except 'win ', 'qem2', 'd2v ',
 * 'CTXS' and 'tap\0'; since 10.0 (commit "vpc: Read images exported
 * from Azure correctly", Vitaly Kuznetsov, Feb 2025) only 'vpc ' and
 * 'qemu'; in every version a geometry whose product is 65535*16*255
 * means current size, even when its force_size_calc option asks for
 * the geometry; QEMU iotest 146 (the real Virtual PC, Hyper-V and
 * Disk2vhd images); blktap's libvhd (batmap, locator space, hidden
 * flag); libvhdi and Windows-made samples (locators, parent name,
 * timestamps).  See the project's docs/design.md and vhd-format.md.
 */
#include <config.h>

#include <stdio.h>

#include "vhd-format.h"

/* ------------------------------------------------------------ quirks */

const struct vhd_quirk_entry vhd_quirk_table[VHD_QUIRK_COUNT] = {
  { VHD_QUIRK_FOOTER_511, "footer-511", "'vpc ' (before Virtual PC 2004)",
    "a 511-byte footer at 511 bytes before the end of the file; the "
    "missing last reserved byte reads as zero",
    "the specification says images of Virtual PC versions before 2004 "
    "may have it; blktap retries at EOF-511 too" },
  { VHD_QUIRK_FOOTER_COPY_ONLY, "footer-copy-only",
    "any dynamic or differencing producer ('tap\\0', 'qemu', 'win ')",
    "no valid footer at the end of the file: the copy at offset 0 is used "
    "(with a warning)",
    "a crash while a writer extends the file leaves the end without a "
    "footer; the copy at 0 is identical by construction (qemu reads the "
    "copy first)" },
  { VHD_QUIRK_FOOTER_COPY_DIFFERS, "footer-copy-differs",
    "'tap\\0' (tapdisk leaves one stale while running)",
    "the copy at offset 0 differs from the footer at the end: the end's "
    "is used, check notes it",
    "readers differ on which one they trust (qemu: offset 0, libvhdi: "
    "the end); the end's is the one every writer updates last" },
  { VHD_QUIRK_BAD_CHECKSUM, "bad-checksum",
    "hand-edited files; 'tap\\0' v0.1/1.1 (td-util set the hidden byte "
    "without fixing the checksum)",
    "a footer or header checksum mismatch, only with the ignore-checksums "
    "option",
    "libvhdi opens such files, qemu refuses them; real ones exist "
    "(dfvfs test images), so refusal by default with an opt-out" },
  { VHD_QUIRK_FEATURES_RESERVED, "features-reserved",
    "none known",
    "the reserved feature bit 0x2 clear: ignored, check notes it",
    "no reader depends on it" },
  { VHD_QUIRK_FIXED_DATA_OFFSET, "fixed-data-offset",
    "writers following the specification's text literally",
    "a fixed disk's data offset other than all ones: ignored, check "
    "notes it",
    "the specification's text says 0xFFFFFFFF, every producer writes 64 "
    "one-bits; a fixed disk has no header, so the field is unused" },
  { VHD_QUIRK_HEADER_DATA_OFFSET, "header-data-offset",
    "none known",
    "a dynamic header's data offset other than all ones: ignored, check "
    "notes it",
    "unused by the format; qemu notes Microsoft tools want all ones, "
    "blktap refuses other values" },
  { VHD_QUIRK_BAT_OVERSIZED, "bat-oversized",
    "'tap\\0' (pre-sized for resize), 'qemu' before 5.0 (rounded up)",
    "more BAT entries than the disk size needs: entries past the disk "
    "end are ignored",
    "the specification allows it; qemu changed its writer in 2020 "
    "because Azure refused one entry too many" },
  { VHD_QUIRK_PARTIAL_LAST_BLOCK, "partial-last-block",
    "'qemu' (sizes not a multiple of the block size)",
    "the file ends inside the last block's data area, after the bytes "
    "the disk size needs",
    "the disk ends there; the bytes past it are never read" },
  { VHD_QUIRK_TAP_BATMAP, "tap-batmap", "'tap\\0' (blktap, vhd-util)",
    "blktap's private 'tdbatmap' header and map after the BAT: kept as "
    "metadata, never allocated over",
    "blktap's libvhd writes it; overwriting it would corrupt the file "
    "for blktap" },
  { VHD_QUIRK_LOCATOR_SPACE_BYTES, "locator-space-bytes",
    "'win ', 'tap\\0', 'vbox' (every producer seen)",
    "a parent locator's data space in bytes (a multiple of 512); values "
    "below 512 are sectors as the specification says",
    "the specification says sectors, producers write bytes; blktap's "
    "rule tells them apart" },
  { VHD_QUIRK_LOCATOR_OVERLAP, "locator-overlap", "none known",
    "a locator's reserved area overlapping the header, the BAT or "
    "another locator: read, never rewritten in place, check notes it",
    "readers only read the locator's own bytes" },
  { VHD_QUIRK_PARENT_NAME_PATH, "parent-name-path", "'win ' (Windows 10)",
    "the parent name field holding a full Windows path instead of a "
    "file name: used as a path and as a file name",
    "Windows-made differencing disks (dfvfs sample) store "
    "C:\\...\\parent.vhd there" },
  { VHD_QUIRK_WINDOWS_PATH, "windows-path", "'win ', 'vpc ', 'vs  '",
    "Windows paths in locators: drive letter dropped, backslashes made "
    "slashes, '.\\' relative to the child's directory",
    "W2ku/W2ru/Wi2k/Wi2r locators name Windows files" },
  { VHD_QUIRK_PATH_CASE, "path-case", "'win ', 'vpc ', 'vs  '",
    "a parent path that does not exist as written, found by matching "
    "its components case-insensitively",
    "files copied from a case-insensitive file system keep their "
    "names, locators another spelling" },
  { VHD_QUIRK_PARENT_TIMESTAMP, "parent-timestamp",
    "'win ' (writes 0), Linux tools (write the mtime)",
    "the parent timestamp is never checked",
    "producers disagree on its meaning and time-zone bugs exist; the "
    "unique id identifies the parent" },
  { VHD_QUIRK_SIZE_GEOMETRY, "size-geometry", "'vpc ', 'qemu'",
    "the disk is served at its geometry C*H*S*512 when that is smaller "
    "than the current size",
    "Virtual PC's guests saw C*H*S sectors (real 127 GiB case: "
    "136,363,130,880 instead of 136,365,211,648 bytes); QEMU, all "
    "versions, reads 'vpc ' and 'qemu' files so" },
  { VHD_QUIRK_SIZE_MAX_GEOMETRY, "size-max-geometry",
    "'d2v ' (Disk2vhd), 'qem2', any disk over 127 GiB",
    "a geometry of 65535/16/255 always means the current size, even "
    "when the geometry is asked for",
    "the geometry saturates there: it says 'larger than CHS can "
    "express'; QEMU does the same" },
  { VHD_QUIRK_SIZE_GEOMETRY_UNUSABLE, "size-geometry-unusable",
    "damaged or hand-made files",
    "a geometry of zero, or larger than the current size, where the "
    "geometry is wanted: the current size is served (with a warning)",
    "the file's BAT or data area only covers the current size; a zero "
    "geometry gives no size at all" },
};

const char *
vhd_quirk_name (unsigned i)
{
  return i < VHD_QUIRK_COUNT ? vhd_quirk_table[i].name : NULL;
}

void
vhd_quirk_met (const char *file, uint32_t *seen, enum vhd_quirk q,
               const char *fs, ...)
{
  char what[512];
  va_list args;

  if (seen)
    *seen |= UINT32_C (1) << q;
  va_start (args, fs);
  vsnprintf (what, sizeof what, fs, args);
  va_end (args);
  vhd_debug ("%s: tolerated quirk %s (%s): %s", file,
             vhd_quirk_table[q].name, vhd_quirk_table[q].producers, what);
}

/* ------------------------------------------------------------ size */

/* Creators, and how each sizes its disks.  Unlisted creators use the
 * current size, as in QEMU 10: the geometry is the exception. */
struct creator {
  char app[4];
  bool geometry;                /* the producer means C*H*S */
  const char *rule;             /* size_rule text */
};

static const struct creator creators[] = {
  /* Virtual PC emulated an ATA disk of C*H*S sectors.  QEMU, every
   * version, reads 'vpc ' files by geometry. */
  { "vpc ", true, "creator 'vpc ': Virtual PC sizes disks by geometry" },
  /* qemu-img create rounds the size up until the geometry expresses it
   * exactly, so both agree in the files it makes; QEMU, every version,
   * reads 'qemu' files by geometry. */
  { "qemu", true, "creator 'qemu': qemu-img sizes disks by geometry" },
  /* qemu-img -o force_size=on: exact current size, geometry forced to
   * 65535/16/255. */
  { "qem2", false, "creator 'qem2': qemu-img force_size uses current size" },
  /* Hyper-V, Disk Management, diskpart, New-VHD: floor geometry. */
  { "win ", false, "creator 'win ': Windows uses current size" },
  /* Virtual Server 2005: QEMU 10 reads it by current size; Hyper-V,
   * Virtual Server's successor, opens its files by current size. */
  { "vs  ", false, "creator 'vs  ': Virtual Server, read by current size "
    "as QEMU 10 and Hyper-V do" },
  /* Disk2vhd writes the maximum geometry: both forms of its code. */
  { "d2v ", false, "creator 'd2v ': Disk2vhd uses current size" },
  { "d2v\0", false, "creator 'd2v': Disk2vhd uses current size" },
  { "tap\0", false, "creator 'tap': blktap uses current size" },
  { "CTXS", false, "creator 'CTXS': XenConverter uses current size" },
  { "vbox", false, "creator 'vbox': VirtualBox uses current size" },
  { "wa\0\0", false, "creator 'wa': Azure uses current size" },
};


static const struct creator *
find_creator (const char app[4])
{
  size_t i;

  for (i = 0; i < sizeof creators / sizeof creators[0]; i++)
    if (memcmp (creators[i].app, app, 4) == 0)
      return &creators[i];
  return NULL;
}

bool
vhd_quirk_creator_uses_geometry (const struct vhd_footer *ft)
{
  const struct creator *cr = find_creator (ft->creator_app);

  return cr && cr->geometry &&
         (uint64_t) ft->cylinders * ft->heads * ft->sectors_per_track !=
           VHD_MAX_GEOMETRY;
}

void
vhd_quirk_disk_size (struct vhd_file *f, const struct vhd_open_options *opts)
{
  const struct vhd_footer *ft = &f->footer;
  const struct creator *cr = find_creator (ft->creator_app);
  uint64_t sectors = (uint64_t) ft->cylinders * ft->heads *
                     ft->sectors_per_track;
  bool want_geometry;

  f->geometry_size = sectors * VHD_SECTOR;
  f->l.disk_size = f->l.size;
  f->size_from_geometry = false;

  switch (opts->disk_size) {
  case VHD_DISK_SIZE_CURRENT:
    f->size_rule = "forced by disk-size=current";
    return;
  case VHD_DISK_SIZE_GEOMETRY:
    f->size_rule = "forced by disk-size=geometry";
    want_geometry = true;
    break;
  default:
    f->size_rule = cr ? cr->rule
                      : "creator not known to size disks by geometry";
    want_geometry = cr && cr->geometry;
  }
  if (!want_geometry)
    return;

  if (sectors == VHD_MAX_GEOMETRY) {
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_SIZE_MAX_GEOMETRY,
                   "geometry %u/%u/%u: current size %" PRIu64 " used",
                   ft->cylinders, ft->heads, ft->sectors_per_track, f->l.size);
    f->size_rule = "geometry 65535/16/255 is the maximum: it means a "
                   "disk of the current size";
    return;
  }
  if (sectors == 0 || f->geometry_size > f->l.size) {
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_SIZE_GEOMETRY_UNUSABLE,
                   "geometry %u/%u/%u", ft->cylinders, ft->heads,
                   ft->sectors_per_track);
    vhd_report (opts, VHD_WARN, f->l.path, "footer",
                "; serving the current size",
                "footer: geometry %u/%u/%u (%" PRIu64 " bytes) %s the "
                "current size %" PRIu64 " [quirk %s]",
                ft->cylinders, ft->heads, ft->sectors_per_track,
                f->geometry_size,
                sectors == 0 ? "is empty, unlike" : "exceeds",
                f->l.size,
                vhd_quirk_table[VHD_QUIRK_SIZE_GEOMETRY_UNUSABLE].name);
    f->size_rule = sectors == 0
      ? "the geometry is zero: current size instead"
      : "the geometry exceeds the current size: current size instead";
    return;
  }
  f->l.disk_size = f->geometry_size;
  f->size_from_geometry = true;
  if (f->l.disk_size != f->l.size)
    vhd_quirk_met (f->l.path, &f->quirks, VHD_QUIRK_SIZE_GEOMETRY,
                   "served at geometry %u/%u/%u, %" PRIu64 " bytes, not "
                   "the current size %" PRIu64 " (%s)", ft->cylinders,
                   ft->heads, ft->sectors_per_track, f->l.disk_size, f->l.size,
                   f->size_rule);
}

void
vhd_quirk_chain_size (const struct vhd_open_options *opts,
                      const struct vhd_chain *c,
                      const struct vhd_layer *parent_layer)
{
  const struct vhd_file *top = vhd_cfile (c->layers[0]);
  const struct vhd_file *parent = vhd_cfile (parent_layer);

  /* A forced rule is the same for every layer: nothing to tell.  (The
   * size rules are VHD's: another format has one size.) */
  if (opts->problem || opts->disk_size != VHD_DISK_SIZE_AUTO ||
      parent_layer->ops != &vhd_format_ops ||
      c->layers[0]->ops != &vhd_format_ops ||
      parent->l.disk_size == c->size)
    return;
  vhd_warning ("%s: its parent %s would be served alone at %" PRIu64
               " bytes (%s), the chain is served at %" PRIu64 " bytes, "
               "the size of its top (%s); the disk-size option chooses "
               "one rule for every layer", top->l.path, parent->l.path,
               parent->l.disk_size, parent->size_rule, c->size,
               top->size_rule);
}

/* ------------------------------------------------------------ option */

int
vhd_disk_size_parse (const char *s, enum vhd_disk_size *out)
{
  if (strcmp (s, "auto") == 0)
    *out = VHD_DISK_SIZE_AUTO;
  else if (strcmp (s, "geometry") == 0 || strcmp (s, "chs") == 0)
    *out = VHD_DISK_SIZE_GEOMETRY;
  else if (strcmp (s, "current") == 0 || strcmp (s, "current-size") == 0)
    *out = VHD_DISK_SIZE_CURRENT;
  else
    return -1;
  return 0;
}

const char *
vhd_disk_size_name (enum vhd_disk_size d)
{
  switch (d) {
  case VHD_DISK_SIZE_GEOMETRY: return "geometry";
  case VHD_DISK_SIZE_CURRENT: return "current";
  default: return "auto";
  }
}
