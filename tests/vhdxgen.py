#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""vhdxgen.py - independent VHDX (v2) writer, reader and reference model.

Written from the format description (docs: vhdx-format.md, MS-VHDX as
quoted there), deliberately NOT from the project's C code or any other
implementation, so that the two can check each other.  Python 3 standard
library only.

Usage
-----
  vhdxgen.py make [--check] SPEC.json OUTDIR
                       write every layer of SPEC into OUTDIR plus
                       OUTDIR/expected.raw (guest view of the last layer's
                       chain, after any log replay) and OUTDIR/manifest.json.
                       --check: afterwards read every layer with the built-in
                       reader and compare with the model (or the refusal).
  vhdxgen.py read [--no-replay] FILE OUT.raw
                       independent reader: writes the guest view of FILE
                       (following its parents) sparsely to OUT.raw.  A
                       pending log is replayed in memory (the file is never
                       modified); --no-replay ignores it (for tests only).
  vhdxgen.py dump [--json] FILE
                       print headers, region tables, metadata items,
                       parent locator, BAT summary and log state.
  vhdxgen.py ids FILE  print as JSON the identity of FILE from its headers
                       alone (no log replay, no parent): "current" (slot
                       1 or 2), the current header's "sequence_number",
                       "file_write_guid", "data_write_guid", "log_guid",
                       "log_pending" (LogGuid non-zero) and "headers"
                       (both slots, as dump shows them).  For tests of
                       writers: which GUIDs a session changed.
  vhdxgen.py states [--no-replay] FILE
                       print as JSON the BAT of FILE alone (a pending log
                       replayed in memory): geometry ("block_size",
                       "logical_sector_size", "sectors_per_block",
                       "chunk_ratio", "payload_blocks", "has_parent"),
                       "counts" (payload states), "sb_counts", "sb"
                       ({chunk: file offset} of present sector bitmaps)
                       and "blocks": {block: {"state": name, "value": n,
                       "offset": file offset, "bits": [[first, count],
                       ...]}} for every payload block not NOT_PRESENT;
                       "bits" (sectors of the block whose bitmap bit is
                       set, block-relative, LSB-first order) is given
                       whenever the block's chunk has a present sector
                       bitmap, else [].

Exit status 0 on success, 1 on error (message on stderr).  All files are
written sparsely (zero runs are seeked over, then ftruncate), so a 64 TiB
disk with a few writes is small and fast.  (ext4 cannot hold a sparse file
above 16 TiB: give such specs "expected": false.)

Spec (JSON).  Defaults are given in brackets.
----------------------------------------------
{
  "size": N,                   # virtual size in bytes (required unless every
                               #   layer has its own); multiple of the logical
                               #   sector size, <= 64 TiB
  "seed": 1,                   # [1] seeds data, GUIDs, shuffles
  "block_size": N,             # [32 MiB] default for layers
  "logical_sector_size": 512,  # [512] default for layers (512 | 4096)
  "physical_sector_size": 4096,# [4096] default for layers (512 | 4096)
  "expected": true,            # [true] false: do not write expected.raw
  "layers": [                  # base first; the LAST one is modelled
    {
      "file": "base.vhdx",     # required, relative to OUTDIR
      "type": "dynamic",       # [dynamic] | "fixed" | "differencing"
      "size", "block_size", "logical_sector_size", "physical_sector_size":
                               # [spec values]; block size a power of two in
                               #   1 MiB..256 MiB; the sector size must be the
                               #   same in a whole chain
      "parent": "base.vhdx",   # [previous layer] differencing parent
      "writes": [[off, len], [off, len, fill], ...],
                               # byte ranges the layer holds, rounded out to
                               #   whole logical sectors; pseudo-random tagged
                               #   data (see "Sector data") or every byte =
                               #   fill (0..255).  Later writes win.
      "full_blocks": [i, ...], # whole blocks FULLY_PRESENT, random data
                               #   where not written
      "states": {"i": "not_present"|"undefined"|"zero"|"unmapped"|
                       "unmapped5"},
                               # force a dataless state on payload block i
                               #   (must hold no data)
      "soft_anchor": false,    # [false] undefined/unmapped/unmapped5 entries
                               #   get a non-zero FileOffsetMB (another
                               #   allocated block, or the metadata region)
      "partial_in_dynamic": [i, ...],
                               # fixed/dynamic only: block i is written as
                               #   PARTIALLY_PRESENT (pitfall 17) with an
                               #   SB_BLOCK_PRESENT entry holding an all-zero
                               #   bitmap; model: fully present (random data
                               #   if nothing written in it)
      "qemu_fixed": false,     # [false] fixed only: all entries ZERO offset 0
                               #   with the space preallocated (pitfall 22);
                               #   written blocks FULLY_PRESENT in their slot
      "layout": {              # these keys may also be given directly in the
                               #   layer
        "block_order": "ascending", # | "reverse" | "shuffle" (dyn/diff)
        "log_offset": 1048576,      # [1 MiB]  all offsets/lengths MiB
        "log_length": 1048576,      # [1 MiB]  multiples; the regions may
        "metadata_offset": 2097152, # [2 MiB]  be put anywhere outside the
        "bat_offset": 3145728,      # [3 MiB]  first MiB without overlap;
                                    #   blocks are first-fit in the gaps
        "region_required": 1,       # [1] Required field of both regions
        "region_order": "bat_first",# | "metadata_first"
        "metadata_item_order": "hyperv",  # | "qemu"
        "header_seq": [n, n+1],     # [random n] sequence numbers of the
                                    #   headers in slot 1 and slot 2
        "bad_header_crc": 1,        # 1 | 2 | [1, 2]: that slot's header gets
                                    #   a wrong CRC (and a different
                                    #   DataWriteGuid, so using it shows)
        "bad_region_crc": 1,        # 1 | 2 | [1, 2]: that region table gets a
                                    #   wrong CRC (and its BAT entry points at
                                    #   the log)
        "equal_seq": false,         # both headers identical, equal sequence
        "extra_metadata": [{"guid": G, "flags": F, "data_hex": "..."}],
                                    # extra items; F bit0 IsUser, bit1
                                    #   IsVirtualDisk, bit2 IsRequired.  An
                                    #   unknown required system item (or
                                    #   IsUser+IsRequired) makes the file
                                    #   refused.  G may also be a known item
                                    #   name (e.g. "virtual_disk_size")
        "user_metadata": [{"guid": G, "data_hex": "..."}],
                                    # user items (IsUser only); may reuse a
                                    #   system GUID (pitfall 28)
        "chs_item": false           # add the CHS item (16 heads, 63 spt)
      },
      "locator": {             # differencing only
        "parent_linkage": "auto",   # "auto" (parent's DataWriteGuid) |
                                    #   "wrong" (random) | text
        "parent_linkage2": "{0..0}",# [all-zero GUID as Hyper-V] | "auto" |
                                    #   text | null (key omitted)
        "relative_path": "auto",    # ".\\name" / "..\\dir\\name" | text |
                                    #   null (key omitted)
        "absolute_win32_path": "auto", # "C:\\...\\name" | text | null
        "volume_path": "auto",      # "\\\\?\\Volume{G}\\...\\name" | text |
                                    #   null
        "case": "upper",            # [as is] upper-case the path values
        "linkage_upper": false      # GUID text of auto/wrong in upper case
      },
      "data_write_guid", "file_write_guid", "virtual_disk_id": "GUID text",
                               # [random from the seed; the virtual disk id
                               #   of a differencing layer is its parent's]
      "log": {                 # a pending (not yet applied) log
        "entries": 1,          # [1] number of entries of the active sequence
        "changes": ["bat"],    # ["bat"] subset of "bat", "metadata", "data",
                               #   "sb": kinds of 4 KiB pages carried by the
                               #   log; the file holds old/poisoned versions
                               #   of them (asserted: a reader skipping the
                               #   replay sees different content)
        "truncate": false,     # an extra FULLY_PRESENT (zero) block lies at
                               #   the end, past EOF (file < LastFileOffset)
        "wrap": false,         # an entry wraps around the end of the ring
        "zero_descriptor": false, # one target is given by a zero descriptor
        "torn": false,         # true | "crc" | "seq": an extra last entry
                               #   with a bad CRC / data sector sequence,
                               #   carrying poison; must not be applied
        "stale": false,        # poison entries that must be ignored: one
                               #   with another LogGuid right after the head,
                               #   an older complete sequence elsewhere
        "tail_outside": false, # a higher-numbered run of poison entries
                               #   whose head Tail lies outside the run
        "no_valid_entry": false,   # LogGuid set, every entry invalid: refused
        "flushed_beyond_eof": false, # FlushedFileOffset > file size: refused
        "stale_behind_zero_guid": false
                               # no pending log: LogGuid 0, but the ring holds
                               #   a valid sequence of poison (as in Windows
                               #   files); must be ignored
      },
      "expected": "mid.raw"    # [none] also write this layer's chain view
    } ] }

Sector data
-----------
A held sector without "fill" contains a 16-byte ASCII tag "L<layer index,
3 digits>S<sector, 11 hex digits>" followed by SHAKE-128(seed, layer index,
sector) up to the logical sector size: never all-zero.

On-disk choices
---------------
Identifier creator "vhdxgen.py"; headers in both slots (LogVersion 0,
Version 1); two region tables; metadata items contiguous from region offset
64 KiB with Hyper-V flags (0x4 parameters/locator, 0x6 others); locator keys
in Hyper-V order.  Fixed: LeaveBlockAllocated, every payload entry
FULLY_PRESENT at consecutive offsets, SB slots NOT_PRESENT.  Dynamic: a
block is FULLY_PRESENT iff it holds data (rest of the block zero).
Differencing: a block holding every one of its sectors (inside the disk) or
listed in full_blocks is FULLY_PRESENT (its bitmap bits are left CLEAR: a
reader must not consult them), else PARTIALLY_PRESENT with exactly the held
sectors' bits set; an SB block per chunk that has a partial block, allocated
just before the first such block.  Dataless entries have offset 0 (unless
soft_anchor).  Identifier, headers, region tables, metadata, BAT and log are
written in full; zero runs are holes.

Model (expected.raw)
--------------------
Per sector from the top layer down (§3.8): FULLY_PRESENT (or partially
present in a non-differencing file) -> this layer's data or zero;
PARTIALLY_PRESENT -> data if held, else the parent; NOT_PRESENT -> the parent
in a differencing layer, zero otherwise; undefined/zero/unmapped/5 -> zero
(never the parent); past a layer's size -> zero.  The pending log carries the
correct pages, so the model is the file after replay.  Refused files still
get the model of their content (manifest says "refuse").

manifest.json
-------------
{"top": FILE, "refuse": reason-or-null (for the top's chain), "layers":
[{"file", "index", "type", "parent", "size", "block_size",
"logical_sector_size", "physical_sector_size", "chunk_ratio",
"bat_entries", "bat_offset", "metadata_offset", "log_offset", "log_length",
"file_write_guid", "data_write_guid", "log_guid", "virtual_disk_id",
"parent_linkage", "held": [[first_sector, count], ...],
"bat": [[first_index, count, state, first_offset], ...] (runs of non-zero
entries), "refuse": reason or absent, "log": summary or null}, ...]}
"""

import array
import bisect
import hashlib
import json
import os
import random
import struct
import sys
import uuid

KiB = 1024
MiB = 1024 * KiB
PAGE = 4096
MAX_SIZE = 64 << 40
CREATOR = "vhdxgen.py"

NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED = 0, 1, 2, 3
UNMAPPED5, FULLY_PRESENT, PARTIALLY_PRESENT = 5, 6, 7
STATE_NAMES = {0: "not_present", 1: "undefined", 2: "zero", 3: "unmapped",
               4: "reserved4", 5: "unmapped5", 6: "fully_present",
               7: "partially_present"}
FORCED_STATES = {"not_present": 0, "undefined": 1, "zero": 2,
                 "unmapped": 3, "unmapped5": 5}
SB_STATE_NAMES = {0: "sb_not_present", 6: "sb_present"}


def guid_bytes(text):
    """GUID text (braces optional, any case) -> 16 bytes, Windows layout."""
    return uuid.UUID(text.strip().strip("{}")).bytes_le


def guid_text(raw):
    return str(uuid.UUID(bytes_le=bytes(raw)))


ZERO_GUID = bytes(16)
BAT_REGION = guid_bytes("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = guid_bytes("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = guid_bytes("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = guid_bytes("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID = guid_bytes("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR = guid_bytes("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR = guid_bytes("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = guid_bytes("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
CHS_PARAMETERS = guid_bytes("DA02D7BC-3D3A-423C-AC88-2A36AB21479B")
INCOMPLETE_FILE = guid_bytes("71CC85F0-1B69-4E28-9558-C3BF83AE75D3")
PMEM_LABEL = guid_bytes("10E1AE8A-4B7E-4169-A40F-CD70DE928393")
LOCATOR_TYPE = guid_bytes("B04AEFB7-D19E-4A81-B789-25B8E9445913")

REGION_NAMES = {BAT_REGION: "bat", METADATA_REGION: "metadata"}
ITEM_NAMES = {
    FILE_PARAMETERS: "file_parameters", VIRTUAL_DISK_SIZE: "virtual_disk_size",
    VIRTUAL_DISK_ID: "virtual_disk_id", LOGICAL_SECTOR: "logical_sector_size",
    PHYSICAL_SECTOR: "physical_sector_size", PARENT_LOCATOR: "parent_locator",
    CHS_PARAMETERS: "chs_parameters", INCOMPLETE_FILE: "incomplete_file",
    PMEM_LABEL: "pmem_label_storage",
}
ITEM_BY_NAME = {v: k for k, v in ITEM_NAMES.items()}
ITEM_LENGTHS = {FILE_PARAMETERS: 8, VIRTUAL_DISK_SIZE: 8, VIRTUAL_DISK_ID: 16,
                LOGICAL_SECTOR: 4, PHYSICAL_SECTOR: 4}

HEADER_FMT = "<4sIQ16s16s16sHHIQ"       # 80 used bytes of 4096
LOG_ENTRY_FMT = "<4sIIIQII16sQQ"        # 64 bytes
ZERO_DESC_FMT = "<4sIQQQ"               # 32 bytes
DATA_DESC_FMT = "<4s4s8sQQ"             # 32 bytes
assert struct.calcsize(HEADER_FMT) == 80
assert struct.calcsize(LOG_ENTRY_FMT) == 64
assert struct.calcsize(ZERO_DESC_FMT) == 32
assert struct.calcsize(DATA_DESC_FMT) == 32
ZERO_PAGE = bytes(PAGE)


class SpecError(Exception):
    """A problem with the spec or an input file; reported without traceback."""


# ----------------------------------------------------------------- helpers

def round_up(n, m):
    return (n + m - 1) // m * m


def div_round_up(n, m):
    return (n + m - 1) // m


def is_power_of_two(n):
    return n > 0 and n & (n - 1) == 0


def _crc_tables():
    t8 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t8.append(c)
    # Two bytes per step: t16[x] = the register after feeding two zero bytes
    # into register value x (x < 2^16); CRC is linear, so the data can be
    # xor-ed into the low 16 bits first.
    t16 = [0] * 65536
    for x in range(65536):
        c = (x >> 8) ^ t8[x & 0xFF]
        t16[x] = (c >> 8) ^ t8[c & 0xFF]
    return t8, t16


_CRC = None


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, reflected 0x82F63B78, init/final xor ~0)."""
    global _CRC
    if _CRC is None:
        _CRC = _crc_tables()
    t8, t16 = _CRC
    crc ^= 0xFFFFFFFF
    data = bytes(data)
    n = len(data) & ~1
    words = array.array("H", data[:n])
    if sys.byteorder != "little":
        words.byteswap()
    for w in words:
        crc = (crc >> 16) ^ t16[(crc ^ w) & 0xFFFF]
    if len(data) & 1:
        crc = (crc >> 8) ^ t8[(crc ^ data[-1]) & 0xFF]
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def crc_with_field_zeroed(buf, field_off=4):
    b = bytearray(buf)
    b[field_off:field_off + 4] = bytes(4)
    return crc32c(b)


def sector_data(seed, layer_index, sector, ss):
    """Deterministic, layer-tagged pseudo-random content of one sector."""
    tag = b"L%03dS%011x" % (layer_index % 1000, sector)
    key = b"vhdxgen:%d:%d:%d" % (seed, layer_index, sector)
    return tag + hashlib.shake_128(key).digest(ss - len(tag))


def utf16(text):
    return text.encode("utf-16-le")


class PageSink:
    """Receives guest data in increasing offset order; keeps only non-zero
    4 KiB pages: writes them sparsely to a file and/or hashes them."""

    def __init__(self, size, f=None):
        self.size = size
        self.f = f
        self.hash = hashlib.sha256(b"%d:" % size)
        self.pno = -1
        self.buf = None
        self.pages = 0

    def _emit(self, pno, page):
        if page == ZERO_PAGE:
            return
        self.pages += 1
        self.hash.update(struct.pack("<Q", pno))
        self.hash.update(page)
        if self.f is not None:
            self.f.seek(pno * PAGE)
            self.f.write(page)

    def _flush(self):
        if self.buf is not None:
            self._emit(self.pno, bytes(self.buf))
        self.buf = None
        self.pno = -1

    def write(self, off, data):
        mv = memoryview(data)
        end = off + len(mv)
        if end > self.size:
            raise SpecError("internal: write past the disk size")
        while off < end:
            pno, o = divmod(off, PAGE)
            n = min(end - off, PAGE - o)
            if o == 0 and n == PAGE:
                self._flush()
                self._emit(pno, bytes(mv[:PAGE]))
            else:
                if pno != self.pno:
                    self._flush()
                    self.pno = pno
                    self.buf = bytearray(PAGE)
                self.buf[o:o + n] = mv[:n]
            mv = mv[n:]
            off += n

    def close(self):
        self._flush()
        if self.f is not None:
            self.f.truncate(self.size)
        return self.hash.hexdigest()


def write_nonzero(f, off, data, step=64 * KiB):
    """Write data at off, skipping all-zero 64 KiB pieces (holes)."""
    mv = memoryview(data)
    zero = bytes(step)
    for i in range(0, len(mv), step):
        piece = mv[i:i + step]
        if piece == zero[:len(piece)]:
            continue
        f.seek(off + i)
        f.write(piece)


def runs(sorted_items):
    """Sorted integers -> [[first, count], ...] of consecutive runs."""
    out = []
    for s in sorted_items:
        if out and out[-1][0] + out[-1][1] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return out


# ----------------------------------------------------------------- spec

SPEC_KEYS = {"size", "seed", "block_size", "logical_sector_size",
             "physical_sector_size", "layers", "expected"}
LAYOUT_KEYS = {"block_order", "log_offset", "log_length", "metadata_offset",
               "bat_offset", "region_required", "region_order",
               "metadata_item_order", "header_seq", "bad_header_crc",
               "bad_region_crc", "equal_seq", "extra_metadata",
               "user_metadata", "chs_item"}
LAYER_KEYS = {"file", "type", "size", "block_size", "logical_sector_size",
              "physical_sector_size", "parent", "writes", "full_blocks",
              "states", "soft_anchor", "partial_in_dynamic", "qemu_fixed",
              "layout", "locator", "data_write_guid", "file_write_guid",
              "virtual_disk_id", "log", "expected"} | LAYOUT_KEYS
LOCATOR_KEYS = {"parent_linkage", "parent_linkage2", "relative_path",
                "absolute_win32_path", "volume_path", "case",
                "linkage_upper"}
LOG_KEYS = {"entries", "changes", "truncate", "wrap", "zero_descriptor",
            "torn", "stale", "tail_outside", "no_valid_entry",
            "flushed_beyond_eof", "stale_behind_zero_guid"}
LOG_CHANGES = ("bat", "metadata", "data", "sb")
TYPES = ("dynamic", "fixed", "differencing")
WIN_DIR = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"


def check_keys(d, known, what):
    """Unknown keys are errors: a typo must not silently do nothing."""
    if not isinstance(d, dict):
        raise SpecError("%s: must be an object" % what)
    unknown = set(d) - known
    if unknown:
        raise SpecError("%s: unknown keys %s" % (what, sorted(unknown)))


def as_int(value, what, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError("%s: integer expected, got %r" % (what, value))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SpecError("%s: %d out of range" % (what, value))
    return value


def slots(value, what):
    """1 | 2 | [1, 2] -> set of header/region slots."""
    if value is None:
        return set()
    vals = value if isinstance(value, list) else [value]
    for v in vals:
        if v not in (1, 2):
            raise SpecError("%s: 1, 2 or [1, 2] expected" % what)
    return set(vals)


class Layer:
    """One layer of the spec, validated, with its block classification."""

    def __init__(self, spec, index, raw, by_file, seed, previous):
        check_keys(raw, LAYER_KEYS, "layer %d" % index)
        self.index, self.seed, self.raw = index, seed, raw
        self.rng = random.Random("vhdxgen:%d:%d" % (seed, index))
        self.file = raw.get("file")
        if not isinstance(self.file, str) or not self.file:
            raise SpecError("layer %d: \"file\" required" % index)
        what = self.what = "layer %d (%s)" % (index, self.file)
        self.type = raw.get("type", "dynamic")
        if self.type not in TYPES:
            raise SpecError("%s: bad type %r" % (what, self.type))
        self.ss = as_int(raw.get("logical_sector_size",
                                 spec.get("logical_sector_size", 512)),
                         what + ": logical_sector_size")
        self.pss = as_int(raw.get("physical_sector_size",
                                  spec.get("physical_sector_size", 4096)),
                          what + ": physical_sector_size")
        if self.ss not in (512, 4096) or self.pss not in (512, 4096):
            raise SpecError("%s: sector sizes must be 512 or 4096" % what)
        self.size = as_int(raw.get("size", spec.get("size")), what + ": size",
                           1, MAX_SIZE)
        if self.size % self.ss:
            raise SpecError("%s: size not a multiple of %d" % (what, self.ss))
        self.bs = as_int(raw.get("block_size", spec.get("block_size",
                                                        32 * MiB)),
                         what + ": block_size", MiB, 256 * MiB)
        if not is_power_of_two(self.bs):
            raise SpecError("%s: block_size not a power of two" % what)
        self.spb = self.bs // self.ss              # sectors per block
        self.cr = (1 << 23) * self.ss // self.bs   # chunk ratio
        self.sectors = self.size // self.ss
        self.payload = div_round_up(self.size, self.bs)
        self.sb_count = div_round_up(self.payload, self.cr)
        if self.type == "differencing":
            self.entries = self.sb_count * (self.cr + 1)
        else:
            self.entries = self.payload + (self.payload - 1) // self.cr
        self.expected = raw.get("expected")
        self._parse_parent(raw, by_file, previous)
        self._parse_layout(raw)
        self._parse_data(raw)
        self._parse_identity(raw)
        self._parse_locator(raw)
        self._parse_log(raw)
        self.classify()

    def _parse_parent(self, raw, by_file, previous):
        self.parent = None
        if self.type != "differencing":
            if "parent" in raw or "locator" in raw:
                raise SpecError("%s: parent/locator only for differencing"
                                % self.what)
            return
        name = raw.get("parent", previous.file if previous else None)
        if name not in by_file:
            raise SpecError("%s: parent %r is not an earlier layer"
                            % (self.what, name))
        self.parent = by_file[name]
        if self.parent.ss != self.ss:
            raise SpecError("%s: logical sector size differs from the parent"
                            % self.what)

    def _parse_layout(self, raw):
        lay = dict(raw.get("layout", {}))
        check_keys(lay, LAYOUT_KEYS, self.what + ": layout")
        for k in LAYOUT_KEYS & set(raw):
            if k in lay:
                raise SpecError("%s: %s given twice" % (self.what, k))
            lay[k] = raw[k]
        d = {"block_order": "ascending", "log_offset": MiB,
             "log_length": MiB, "metadata_offset": 2 * MiB,
             "bat_offset": 3 * MiB, "region_required": 1,
             "region_order": "bat_first", "metadata_item_order": "hyperv",
             "header_seq": None, "bad_header_crc": None,
             "bad_region_crc": None, "equal_seq": False,
             "extra_metadata": [], "user_metadata": [], "chs_item": False}
        d.update(lay)
        for k in ("log_offset", "log_length", "metadata_offset",
                  "bat_offset"):
            v = as_int(d[k], "%s: %s" % (self.what, k), MiB)
            if v % MiB:
                raise SpecError("%s: %s not a MiB multiple" % (self.what, k))
        if d["block_order"] not in ("ascending", "reverse", "shuffle"):
            raise SpecError("%s: bad block_order" % self.what)
        if d["region_order"] not in ("bat_first", "metadata_first"):
            raise SpecError("%s: bad region_order" % self.what)
        if d["metadata_item_order"] not in ("hyperv", "qemu"):
            raise SpecError("%s: bad metadata_item_order" % self.what)
        as_int(d["region_required"], self.what + ": region_required", 0)
        d["bad_header_crc"] = slots(d["bad_header_crc"],
                                    self.what + ": bad_header_crc")
        d["bad_region_crc"] = slots(d["bad_region_crc"],
                                    self.what + ": bad_region_crc")
        if d["header_seq"] is None:
            n = self.rng.randrange(1, 1 << 32)
            d["header_seq"] = [n, n] if d["equal_seq"] else [n, n + 1]
        elif (not isinstance(d["header_seq"], list)
              or len(d["header_seq"]) != 2):
            raise SpecError("%s: header_seq must be [n1, n2]" % self.what)
        self.layout = d

    def _parse_data(self, raw):
        ss = self.ss
        self.held = {}                  # sector -> fill byte or None
        for w in raw.get("writes", []):
            if not isinstance(w, list) or len(w) not in (2, 3):
                raise SpecError("%s: write %r is not [off, len(, fill)]"
                                % (self.what, w))
            off = as_int(w[0], self.what + ": write offset", 0)
            length = as_int(w[1], self.what + ": write length", 1)
            fill = as_int(w[2], self.what + ": fill", 0, 255) \
                if len(w) == 3 else None
            if off + length > self.size:
                raise SpecError("%s: write %r past the disk end"
                                % (self.what, w))
            for s in range(off // ss, div_round_up(off + length, ss)):
                self.held[s] = fill
        self.full = set()
        for b in raw.get("full_blocks", []):
            self.full.add(as_int(b, self.what + ": full block", 0,
                                 self.payload - 1))
        self.partial_dyn = set()
        for b in raw.get("partial_in_dynamic", []):
            if self.type == "differencing":
                raise SpecError("%s: partial_in_dynamic in a differencing "
                                "layer" % self.what)
            self.partial_dyn.add(as_int(b, self.what + ": partial block", 0,
                                        self.payload - 1))
        self.forced = {}
        states = raw.get("states", {})
        if not isinstance(states, dict):
            raise SpecError("%s: states must be an object" % self.what)
        for k, v in states.items():
            try:
                b = int(k)
            except ValueError:
                raise SpecError("%s: states key %r" % (self.what, k))
            as_int(b, self.what + ": states block", 0, self.payload - 1)
            if v not in FORCED_STATES:
                raise SpecError("%s: unknown state %r" % (self.what, v))
            self.forced[b] = FORCED_STATES[v]
        self.soft_anchor = bool(raw.get("soft_anchor", False))
        self.qemu_fixed = bool(raw.get("qemu_fixed", False))
        if self.qemu_fixed and self.type != "fixed":
            raise SpecError("%s: qemu_fixed only for fixed" % self.what)
        # sectors held per block (full blocks are implicit)
        self.held_by_block = {}
        for s in sorted(self.held):
            self.held_by_block.setdefault(s // self.spb, []).append(s)
        for b in self.forced:
            if b in self.full or b in self.partial_dyn or \
                    b in self.held_by_block:
                raise SpecError("%s: forced state on block %d that holds "
                                "data" % (self.what, b))

    def _guid(self, raw, key, default):
        v = raw.get(key)
        if v is None:
            return default
        try:
            return guid_bytes(v)
        except (ValueError, AttributeError):
            raise SpecError("%s: %s: bad GUID %r" % (self.what, key, v))

    def random_guid(self):
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).bytes_le

    def _parse_identity(self, raw):
        self.file_write_guid = self._guid(raw, "file_write_guid",
                                          self.random_guid())
        self.data_write_guid = self._guid(raw, "data_write_guid",
                                          self.random_guid())
        self.virtual_disk_id = self._guid(
            raw, "virtual_disk_id",
            self.parent.virtual_disk_id if self.parent else
            self.random_guid())
        self.log_guid = ZERO_GUID

    def _parse_locator(self, raw):
        self.locator_keys = None
        if self.type != "differencing":
            return
        loc = raw.get("locator", {})
        check_keys(loc, LOCATOR_KEYS, self.what + ": locator")
        up = (lambda t: t.upper()) if loc.get("linkage_upper") else \
            (lambda t: t)
        pl = loc.get("parent_linkage", "auto")
        if pl == "auto":
            pl = up("{%s}" % guid_text(self.parent.data_write_guid))
        elif pl == "wrong":
            pl = up("{%s}" % guid_text(self.random_guid()))
        pl2 = loc.get("parent_linkage2",
                      "{00000000-0000-0000-0000-000000000000}")
        if pl2 == "auto":
            pl2 = up("{%s}" % guid_text(self.parent.data_write_guid))
        child_dir = os.path.dirname(self.file)
        rel = os.path.relpath(self.parent.file, child_dir or ".")
        rel = rel.replace("/", "\\")
        if not rel.startswith(".."):
            rel = ".\\" + rel
        win = self.parent.file.replace("/", "\\")
        auto = {
            "relative_path": rel,
            "absolute_win32_path": WIN_DIR + "\\" + win,
            "volume_path": "\\\\?\\Volume{%s}%s\\%s" % (
                guid_text(self.random_guid()), WIN_DIR[2:], win),
        }
        paths = {}
        for k in ("absolute_win32_path", "relative_path", "volume_path"):
            v = loc.get(k, "auto")
            if v == "auto":
                v = auto[k]
            if v is not None and loc.get("case") == "upper":
                v = v.upper()
            elif loc.get("case") not in (None, "upper"):
                raise SpecError("%s: locator case must be \"upper\""
                                % self.what)
            paths[k] = v
        keys = [("parent_linkage", pl),
                ("absolute_win32_path", paths["absolute_win32_path"]),
                ("relative_path", paths["relative_path"]),
                ("volume_path", paths["volume_path"]),
                ("parent_linkage2", pl2)]
        self.locator_keys = [(k, v) for k, v in keys if v is not None]
        for k, v in self.locator_keys:
            if not isinstance(v, str) or not v:
                raise SpecError("%s: locator %s must be non-empty text"
                                % (self.what, k))
        self.parent_linkage = pl

    def _parse_log(self, raw):
        log = raw.get("log")
        self.log = None
        if log is None:
            return
        check_keys(log, LOG_KEYS, self.what + ": log")
        d = {"entries": 1, "changes": ["bat"], "truncate": False,
             "wrap": False, "zero_descriptor": False, "torn": False,
             "stale": False, "tail_outside": False, "no_valid_entry": False,
             "flushed_beyond_eof": False, "stale_behind_zero_guid": False}
        d.update(log)
        as_int(d["entries"], self.what + ": log entries", 1, 64)
        for c in d["changes"]:
            if c not in LOG_CHANGES:
                raise SpecError("%s: unknown log change %r" % (self.what, c))
        if d["torn"] not in (False, True, "crc", "seq"):
            raise SpecError("%s: log torn must be true, \"crc\" or \"seq\""
                            % self.what)
        self.log = d

    # ------------------------------------------------------------ blocks

    def classify(self):
        """payload block -> state (NOT_PRESENT blocks absent)."""
        st = {}
        data_blocks = set(self.held_by_block) | self.full
        if self.type == "fixed":
            for b in range(self.payload):
                st[b] = FULLY_PRESENT
                if self.qemu_fixed and b not in data_blocks and \
                        b not in self.partial_dyn:
                    st[b] = ZERO
        elif self.type == "dynamic":
            for b in data_blocks:
                st[b] = FULLY_PRESENT
        else:
            for b in data_blocks:
                first = b * self.spb
                last = min(first + self.spb, self.sectors)
                n = len(self.held_by_block.get(b, ()))
                st[b] = FULLY_PRESENT if b in self.full or n == last - first \
                    else PARTIALLY_PRESENT
        for b in self.partial_dyn:
            st[b] = PARTIALLY_PRESENT
            if b not in data_blocks:
                self.full.add(b)
        for b, s in self.forced.items():
            if s == NOT_PRESENT:
                st.pop(b, None)
            else:
                st[b] = s
        self.state = st

    def own(self, s):
        """Bytes this layer holds at sector s, or None."""
        if s in self.held:
            fill = self.held[s]
            if fill is not None:
                return bytes([fill]) * self.ss
            return sector_data(self.seed, self.index, s, self.ss)
        if s // self.spb in self.full and s < self.sectors:
            return sector_data(self.seed, self.index, s, self.ss)
        return None

    def held_sectors(self):
        """Sorted list of every sector this layer holds."""
        out = set(self.held)
        for b in self.full:
            out.update(range(b * self.spb,
                             min((b + 1) * self.spb, self.sectors)))
        return sorted(out)

    def block_sectors(self, b):
        """Sorted held sectors of block b."""
        if b in self.full:
            return range(b * self.spb, min((b + 1) * self.spb, self.sectors))
        return self.held_by_block.get(b, [])

    def chain(self):
        out, lay = [], self
        while lay is not None:
            out.append(lay)
            lay = lay.parent
        return out

    def model_sector(self, s):
        """Model of the chain of this layer: bytes at sector s or None."""
        lay = self
        while lay is not None:
            if s >= lay.sectors:
                return None
            st = lay.state.get(s // lay.spb, NOT_PRESENT)
            diff = lay.type == "differencing"
            if st == FULLY_PRESENT or (st == PARTIALLY_PRESENT and not diff):
                return lay.own(s)
            if st == PARTIALLY_PRESENT:
                d = lay.own(s)
                if d is not None:
                    return d
                lay = lay.parent
            elif st == NOT_PRESENT and diff:
                lay = lay.parent
            else:
                return None
        return None

    def model_to(self, sink):
        cand = set()
        for lay in self.chain():
            cand.update(lay.held_sectors())
        for s in sorted(cand):
            if s >= self.sectors:
                break
            d = self.model_sector(s)
            if d is not None:
                sink.write(s * self.ss, d)
        return sink.close()


def load_spec(path):
    try:
        with open(path) as f:
            spec = json.load(f)
    except ValueError as e:
        raise SpecError("%s: %s" % (path, e))
    check_keys(spec, SPEC_KEYS, "spec")
    seed = as_int(spec.get("seed", 1), "seed")
    raws = spec.get("layers")
    if not isinstance(raws, list) or not raws:
        raise SpecError("spec: \"layers\" must be a non-empty list")
    by_file, layers = {}, []
    for i, raw in enumerate(raws):
        lay = Layer(spec, i, raw, by_file, seed, layers[-1] if layers
                    else None)
        if lay.file in by_file:
            raise SpecError("layer %d: file %r listed twice" % (i, lay.file))
        by_file[lay.file] = lay
        layers.append(lay)
    return spec, layers


# ----------------------------------------------------------------- writer

class Allocator:
    """Used 1 MiB-aligned ranges of a file; first fit above the header."""

    def __init__(self):
        self.used = []

    def add(self, start, length, what):
        for s, e, w in self.used:
            if start < e and s < start + length:
                raise SpecError("%s overlaps %s" % (what, w))
        self.used.append((start, start + length, what))
        self.used.sort()

    def first_fit(self, length, what):
        pos = MiB
        for s, e, _ in self.used:
            if pos + length <= s:
                break
            pos = max(pos, e)
        self.add(pos, length, what)
        return pos

    def end(self):
        return max(e for _, e, _ in self.used)


def build_header(seq, fwg, dwg, lg, log_len, log_off, bad=False):
    buf = bytearray(PAGE)
    struct.pack_into(HEADER_FMT, buf, 0, b"head", 0, seq, fwg, dwg, lg,
                     0, 1, log_len, log_off)
    struct.pack_into("<I", buf, 4, crc32c(buf) ^ (0xDEAD if bad else 0))
    return bytes(buf)


def build_region_table(regions, bad=False):
    buf = bytearray(64 * KiB)
    struct.pack_into("<4sIII", buf, 0, b"regi", 0, len(regions), 0)
    for i, (guid, off, length, req) in enumerate(regions):
        struct.pack_into("<16sQII", buf, 16 + 32 * i, guid, off, length, req)
    struct.pack_into("<I", buf, 4, crc32c(buf) ^ (0xBEEF if bad else 0))
    return bytes(buf)


def build_locator(keys):
    n = len(keys)
    head = bytearray(LOCATOR_TYPE + struct.pack("<HH", 0, n))
    table = bytearray()
    strings = bytearray()
    pos = 20 + 12 * n
    for k, v in keys:
        kb, vb = utf16(k), utf16(v)
        table += struct.pack("<IIHH", pos, pos + len(kb), len(kb), len(vb))
        strings += kb + vb
        pos += len(kb) + len(vb)
    return bytes(head + table + strings)


def parse_item_guid(text, what):
    if text in ITEM_BY_NAME:
        return ITEM_BY_NAME[text]
    try:
        return guid_bytes(text)
    except (ValueError, AttributeError):
        raise SpecError("%s: bad GUID %r" % (what, text))


def hex_data(text, what):
    try:
        return bytes.fromhex(text or "")
    except ValueError:
        raise SpecError("%s: bad data_hex" % what)


class Image:
    """The planned file of one layer: metadata pieces, block placement,
    log, poison pages; everything needed to write it."""

    def __init__(self, layer):
        self.L = layer
        self.refuse = None
        self.pieces = []            # (offset, bytes) non-payload structures
        self.poison = {}            # offset -> bytes written over the file
        self.log_summary = None
        self.plan()

    def set_refuse(self, reason):
        if self.refuse is None:
            self.refuse = reason

    # ---------------------------------------------------------- layout

    def plan(self):
        L, lay = self.L, self.L.layout
        al = self.al = Allocator()
        al.add(0, MiB, "header section")
        self.log_off, self.log_len = lay["log_offset"], lay["log_length"]
        self.md_off = lay["metadata_offset"]
        self.bat_off = lay["bat_offset"]
        self.bat_len = round_up(8 * L.entries, MiB)
        al.add(self.log_off, self.log_len, "%s: log" % L.what)
        al.add(self.md_off, MiB, "%s: metadata region" % L.what)
        al.add(self.bat_off, self.bat_len, "%s: BAT" % L.what)
        B = L.bs
        self.block_off = {}
        self.sb_off = {}
        data_blocks = sorted(b for b, s in L.state.items()
                             if s in (FULLY_PRESENT, PARTIALLY_PRESENT))
        if L.type == "differencing":
            sb_chunks = {b // L.cr for b in data_blocks
                         if L.state[b] == PARTIALLY_PRESENT}
        else:
            sb_chunks = {b // L.cr for b in L.partial_dyn
                         if (b // L.cr) * (L.cr + 1) + L.cr < L.entries}
        if L.type == "fixed":
            base = al.first_fit(L.payload * B, "%s: payload" % L.what)
            for b in data_blocks:
                self.block_off[b] = base + b * B
            for c in sorted(sb_chunks):
                self.sb_off[c] = al.first_fit(MiB, "sb")
        else:
            order, seen = [], set()
            for b in data_blocks:
                c = b // L.cr
                if c in sb_chunks and c not in seen:
                    seen.add(c)
                    order.append(("sb", c))
                order.append(("block", b))
            if lay["block_order"] == "reverse":
                order.reverse()
            elif lay["block_order"] == "shuffle":
                L.rng.shuffle(order)
            for kind, i in order:
                if kind == "sb":
                    self.sb_off[i] = al.first_fit(MiB, "sb")
                else:
                    self.block_off[i] = al.first_fit(B, "block")
        self.file_size = al.end()
        self.last_file_offset = self.file_size
        self.trunc_block = None
        if L.log and L.log["truncate"]:
            free = [b for b in range(L.payload - 1, -1, -1)
                    if b not in L.state and b not in L.forced]
            if not free:
                raise SpecError("%s: log truncate needs a free block"
                                % L.what)
            b = self.trunc_block = free[0]
            L.state[b] = FULLY_PRESENT
            self.block_off[b] = round_up(self.file_size, MiB)
            self.last_file_offset = self.block_off[b] + B
            self.file_size = self.block_off[b]
        # BAT
        anchor = self.md_off
        if self.block_off:
            anchor = min(self.block_off.values())
        self.bat = {}
        for b, s in L.state.items():
            off = self.block_off.get(b, 0)
            if s in (UNDEFINED, UNMAPPED, UNMAPPED5) and L.soft_anchor:
                off = anchor
            self.bat[b + b // L.cr] = off | s
        for c, off in self.sb_off.items():
            self.bat[c * (L.cr + 1) + L.cr] = off | FULLY_PRESENT
        # sector bitmaps
        self.sb_data = {c: bytearray(MiB) for c in self.sb_off}
        if L.type == "differencing":
            for b in data_blocks:
                if L.state[b] != PARTIALLY_PRESENT:
                    continue
                bm = self.sb_data[b // L.cr]
                base = (b % L.cr) * L.spb - b * L.spb
                for s in L.held_by_block.get(b, ()):
                    bit = base + s
                    bm[bit >> 3] |= 1 << (bit & 7)
        self.block_at = sorted((off, b) for b, off in self.block_off.items())

    # ---------------------------------------------------------- structures

    def bat_page(self, pno):
        """Correct 4 KiB page pno of the BAT."""
        buf = bytearray(PAGE)
        first = pno * 512
        for i in range(first, first + 512):
            e = self.bat.get(i)
            if e:
                struct.pack_into("<Q", buf, (i - first) * 8, e)
        return bytes(buf)

    def metadata_items(self, poison_size=None):
        L, lay = self.L, self.L.layout
        flags = 1 if L.type == "fixed" else 2 if L.type == "differencing" \
            else 0
        size = L.size if poison_size is None else poison_size
        items = {
            "fp": (FILE_PARAMETERS, 0x4, struct.pack("<II", L.bs, flags)),
            "size": (VIRTUAL_DISK_SIZE, 0x6, struct.pack("<Q", size)),
            "id": (VIRTUAL_DISK_ID, 0x6, L.virtual_disk_id),
            "ls": (LOGICAL_SECTOR, 0x6, struct.pack("<I", L.ss)),
            "ps": (PHYSICAL_SECTOR, 0x6, struct.pack("<I", L.pss)),
        }
        order = ["fp", "size", "ls", "ps", "id"] \
            if lay["metadata_item_order"] == "hyperv" else \
            ["fp", "size", "id", "ls", "ps"]
        out = [items[k] for k in order]
        if L.locator_keys is not None:
            out.append((PARENT_LOCATOR, 0x4, build_locator(L.locator_keys)))
        if lay["chs_item"]:
            out.append((CHS_PARAMETERS, 0x2, struct.pack("<II", 16, 63)))
        for x in lay["extra_metadata"]:
            w = L.what + ": extra_metadata"
            check_keys(x, {"guid", "flags", "data_hex"}, w)
            g = parse_item_guid(x.get("guid"), w)
            fl = as_int(x.get("flags", 0), w + " flags", 0, 0xFFFFFFFF)
            out.append((g, fl, hex_data(x.get("data_hex"), w)))
            if fl & 5 == 5:
                self.set_refuse("user metadata item marked required")
            elif fl & 4 and not fl & 1 and (g == INCOMPLETE_FILE or (
                    g not in ITEM_NAMES)):
                self.set_refuse("unknown required metadata item %s"
                                % guid_text(g))
        for x in lay["user_metadata"]:
            w = L.what + ": user_metadata"
            check_keys(x, {"guid", "data_hex"}, w)
            out.append((parse_item_guid(x.get("guid"), w), 0x1,
                        hex_data(x.get("data_hex"), w)))
        return out

    def metadata_region(self, poison_size=None):
        items = self.metadata_items(poison_size)
        if len(items) > 2047:
            raise SpecError("%s: too many metadata items" % self.L.what)
        table = bytearray(64 * KiB)
        struct.pack_into("<8sHH", table, 0, b"metadata", 0, len(items))
        data = bytearray()
        size_at = None
        for i, (g, fl, d) in enumerate(items):
            off = 64 * KiB + len(data) if d else 0
            if g == VIRTUAL_DISK_SIZE and not fl & 1:
                size_at = off
            struct.pack_into("<16sIII", table, 32 + 32 * i, g, off, len(d),
                             fl)
            data += d
        if 64 * KiB + len(data) > MiB:
            raise SpecError("%s: metadata items exceed 1 MiB" % self.L.what)
        return bytes(table) + bytes(data), size_at

    def build_structures(self):
        L, lay = self.L, self.L.layout
        ident = bytearray(64 * KiB)
        ident[0:8] = b"vhdxfile"
        c = utf16(CREATOR)
        ident[8:8 + len(c)] = c
        self.pieces.append((0, bytes(ident)))
        seq = lay["header_seq"]
        bad = lay["bad_header_crc"]
        if bad == {1, 2}:
            self.set_refuse("no valid header")
        for slot in (1, 2):
            dwg = L.random_guid() if slot in bad else L.data_write_guid
            h = build_header(seq[slot - 1], L.file_write_guid, dwg,
                             L.log_guid, self.log_len, self.log_off,
                             slot in bad)
            self.pieces.append((slot * 64 * KiB, h))
        if seq[0] == seq[1] and not bad:
            pass   # identical headers with equal numbers: accepted
        req = lay["region_required"]
        regs = [(BAT_REGION, self.bat_off, self.bat_len, req),
                (METADATA_REGION, self.md_off, MiB, req)]
        if lay["region_order"] == "metadata_first":
            regs.reverse()
        badr = lay["bad_region_crc"]
        if badr == {1, 2}:
            self.set_refuse("no valid region table")
        for slot in (1, 2):
            r = regs
            if slot in badr:
                r = [(g, self.log_off if g == BAT_REGION else o, n, q)
                     for g, o, n, q in regs]
            self.pieces.append((0x20000 + slot * 0x10000,
                                build_region_table(r, slot in badr)))
        md, self.size_item_at = self.metadata_region()
        self.pieces.append((self.md_off, md))
        for pno in sorted({i // 512 for i in self.bat}):
            self.pieces.append((self.bat_off + pno * PAGE, self.bat_page(pno)))
        for c, bm in self.sb_data.items():
            self.pieces.append((self.sb_off[c], bytes(bm)))

    def page(self, off):
        """Correct content of the 4 KiB page at file offset off."""
        buf = bytearray(PAGE)
        for po, data in self.pieces:
            if po < off + PAGE and off < po + len(data):
                a, b = max(po, off), min(po + len(data), off + PAGE)
                buf[a - off:b - off] = data[a - po:b - po]
        i = bisect.bisect_right(self.block_at, (off, 1 << 62)) - 1
        if i >= 0:
            bo, b = self.block_at[i]
            if off < bo + self.L.bs:
                L = self.L
                s0 = b * L.spb + (off - bo) // L.ss
                for k in range(max(1, PAGE // L.ss)):
                    d = L.own(s0 + k) if s0 + k < (b + 1) * L.spb else None
                    if d is not None and (self.L.state[b] == FULLY_PRESENT
                                          or s0 + k in L.held
                                          or L.type != "differencing"):
                        buf[k * L.ss:(k + 1) * L.ss] = d[:PAGE]
        return bytes(buf)

    # ---------------------------------------------------------- file

    def write(self, path):
        L = self.L
        with open(path, "wb") as f:
            for off, data in self.pieces:
                write_nonzero(f, off, data)
            for b, bo in sorted(self.block_off.items()):
                if b == self.trunc_block:
                    continue
                for first, n in runs(L.block_sectors(b)):
                    for k in range(first, first + n, 2048):
                        m = min(2048, first + n - k)
                        buf = b"".join(L.own(s) for s in range(k, k + m))
                        write_nonzero(f, bo + (k - b * L.spb) * L.ss, buf)
            for off, data in sorted(self.poison.items()):
                f.seek(off)
                f.write(data)
            f.truncate(self.file_size)

    def bat_runs(self):
        out = []
        for i in sorted(self.bat):
            e = self.bat[i]
            name = self.state_name(i, e)
            if out and out[-1][0] + out[-1][1] == i and out[-1][2] == name:
                out[-1][1] += 1
            else:
                out.append([i, 1, name, e & ~0xFFFFF])
        return out

    def state_name(self, i, e):
        if i % (self.L.cr + 1) == self.L.cr:
            return SB_STATE_NAMES.get(e & 7, "sb_%d" % (e & 7))
        return STATE_NAMES[e & 7]

    # ---------------------------------------------------------- log

    def junk(self, off, tag=b"POISON"):
        pat = b"%s@%x;" % (tag, off)
        return (pat * (PAGE // len(pat) + 1))[:PAGE]

    def cand_data_page(self):
        """Offset of a page of this layer's visible data, or None."""
        L = self.L
        for bo, b in self.block_at:
            if b == self.trunc_block:
                continue
            for s in L.block_sectors(b):
                return bo + (s - b * L.spb) * L.ss // PAGE * PAGE
        return None

    def cand_bat_pages(self):
        pages = sorted({(i * 8) // PAGE for i, e in self.bat.items()
                        if e & 7 in (FULLY_PRESENT, PARTIALLY_PRESENT)})
        return [self.bat_off + p * PAGE for p in pages[:4]]

    def cand_sb_page(self):
        for c in sorted(self.sb_data):
            bm = self.sb_data[c]
            for p in range(0, MiB, PAGE):
                if bm[p:p + PAGE] != ZERO_PAGE:
                    return self.sb_off[c] + p
        return None

    def poison_of(self, off):
        """Old/poisoned version of the correct page at off."""
        L = self.L
        if self.bat_off <= off < self.bat_off + self.bat_len:
            if "bat" in L.log["changes"]:
                return ZERO_PAGE
            # only the truncated block's entry is new
            buf = bytearray(self.page(off))
            i = self.trunc_block + self.trunc_block // L.cr
            p = i * 8 - (off - self.bat_off)
            buf[p:p + 8] = bytes(8)
            return bytes(buf)
        if self.md_off <= off < self.md_off + MiB:
            md, _ = self.metadata_region(self.poison_size())
            return md[off - self.md_off:off - self.md_off + PAGE].ljust(
                PAGE, b"\0")
        if any(o <= off < o + MiB for o in self.sb_off.values()):
            return ZERO_PAGE
        return self.junk(off)

    def poison_size(self):
        L = self.L
        s = L.size * 2
        if s > MAX_SIZE:
            s = max(L.ss, L.size // 2 // L.ss * L.ss)
        return s

    def choose_log_guid(self):
        """Before the headers are built: the LogGuid of a pending log."""
        lg = self.L.log
        if lg is not None:
            self.pending_guid = self.L.random_guid()
            if not lg["stale_behind_zero_guid"]:
                self.L.log_guid = self.pending_guid

    def build_log(self):
        """Decide the logged pages, the poison, and the ring."""
        L, lg = self.L, self.L.log
        if lg is None:
            return
        rng = L.rng
        targets = []                      # (offset, kind)
        for kind in lg["changes"]:
            if kind == "bat":
                pages = self.cand_bat_pages()
                if not pages:
                    raise SpecError("%s: log change bat needs allocated "
                                    "blocks" % L.what)
                targets += pages
            elif kind == "metadata":
                targets.append(self.md_off)
                p = self.md_off + self.size_item_at // PAGE * PAGE
                if p != self.md_off:
                    targets.append(p)
            elif kind == "data":
                p = self.cand_data_page()
                if p is None:
                    raise SpecError("%s: log change data needs data"
                                    % L.what)
                targets.append(p)
            else:
                p = self.cand_sb_page()
                if p is None:
                    raise SpecError("%s: log change sb needs a partially "
                                    "present block" % L.what)
                targets.append(p)
        if self.trunc_block is not None:
            i = self.trunc_block + self.trunc_block // L.cr
            targets.append(self.bat_off + i * 8 // PAGE * PAGE)
        seen, pages = set(), []
        for t in targets:
            if t not in seen:
                seen.add(t)
                pages.append(t)
        # descriptors: ("data", off, page) | ("zero", off, length)
        descs = [("data", off, self.page(off)) for off in pages]
        for off in pages:
            self.poison[off] = self.poison_of(off)
        if lg["zero_descriptor"]:
            zoff, zlen = None, 0
            for bo, b in self.block_at:
                if b == self.trunc_block or L.state[b] != FULLY_PRESENT:
                    continue
                for p in range(bo, bo + L.bs, PAGE):
                    if self.page(p) == ZERO_PAGE:
                        zoff, zlen = p, PAGE
                        break
                if zoff is not None:
                    break
            if zoff is None:
                zoff, zlen = self.md_off + MiB // 2, 2 * PAGE
            descs.append(("zero", zoff, zlen))
            for p in range(zoff, zoff + zlen, PAGE):
                self.poison[p] = self.junk(p, b"ZERO-ME")
        if not descs and not lg["stale_behind_zero_guid"]:
            raise SpecError("%s: the log carries nothing" % L.what)
        poison_descs = [("data", off, self.poison_of(off)) for off in pages]
        if not poison_descs:
            p = self.cand_data_page()
            if p is not None:
                poison_descs = [("data", p, self.junk(p))]
            elif self.cand_bat_pages():
                poison_descs = [("data", self.cand_bat_pages()[0], ZERO_PAGE)]
            else:
                p = self.md_off + self.size_item_at // PAGE * PAGE
                md, _ = self.metadata_region(self.poison_size())
                poison_descs = [("data", p, md[p - self.md_off:][:PAGE]
                                 .ljust(PAGE, b"\0"))]
        guid = self.pending_guid
        size = self.file_size
        flushed = size + MiB if lg["flushed_beyond_eof"] else size
        last = self.last_file_offset
        Lr = self.log_len
        ring = bytearray(Lr)
        summary = {"log_guid": guid_text(guid), "pending": True,
                   "flushed_file_offset": flushed,
                   "last_file_offset": last, "file_size": size,
                   "pages": ["0x%x" % o for o in pages]}
        if lg["stale_behind_zero_guid"]:
            # nothing pending: the file itself is correct
            self.poison = {}
            seq = rng.randrange(1 << 40, 1 << 62)
            e0 = make_entry(guid, seq, 0, [], flushed, last)
            e1 = make_entry(guid, seq + 1, 0, poison_descs, flushed, last)
            put_ring(ring, 0, e0)
            put_ring(ring, len(e0), e1)
            self.pieces.append((self.log_off, bytes(ring)))
            summary.update(pending=False, stale_sequence=[seq, seq + 1],
                           log_guid=guid_text(ZERO_GUID),
                           stale_log_guid=guid_text(guid))
            self.log_summary = summary
            return
        n = lg["entries"]
        groups = [[] for _ in range(n)]
        for i, d in enumerate(descs):
            groups[i % n].append(d)
        if n >= 2 and descs:
            # an older entry carries a wrong version that a later one fixes
            last_d = groups[(len(descs) - 1) % n][-1]
            if (len(descs) - 1) % n != 0:
                groups[0].insert(0, ("data", last_d[1], self.junk(
                    last_d[1], b"OVERWRITTEN")))
        seq0 = rng.randrange(1 << 40, 1 << 62)
        lengths = [entry_length(g) for g in groups]
        start = 0
        if lg["wrap"]:
            acc = 0
            for ln in lengths:
                if ln >= 2 * PAGE:
                    start = (Lr - acc - PAGE) % Lr
                    break
                acc += ln
            else:
                raise SpecError("%s: log wrap needs an entry with data"
                                % L.what)
        entries = []
        for i, g in enumerate(groups):
            entries.append(make_entry(guid, seq0 + i, start, g, flushed,
                                      last))
        if lg["no_valid_entry"]:
            entries = [corrupt_crc(e) for e in entries]
            self.set_refuse("log has no valid sequence")
        pos = start
        for e in entries:
            put_ring(ring, pos, e)
            pos = (pos + len(e)) % Lr
        used = sum(lengths)
        head_seq = seq0 + n - 1
        extra = []
        if not lg["no_valid_entry"]:
            if lg["torn"]:
                t = make_entry(guid, head_seq + 1, start, poison_descs,
                               flushed, last,
                               torn="seq" if lg["torn"] == "seq" else "crc")
                extra.append(("torn", t))
            if lg["stale"]:
                # a complete newer sequence of another session: only the
                # LogGuid check rejects it
                other = L.random_guid()
                op = (pos + sum(len(x) for _, x in extra)) % Lr
                extra.append(("other_guid", make_entry(
                    other, head_seq + 1 + len(extra), op, poison_descs,
                    flushed, last)))
                extra.append(("gap", bytes(PAGE)))
                so = (pos + sum(len(x) for _, x in extra)) % Lr
                e1 = make_entry(guid, seq0 - 50, so, poison_descs, flushed,
                                last)
                e2 = make_entry(guid, seq0 - 49, so, poison_descs, flushed,
                                last)
                extra += [("older", e1), ("older", e2)]
            if lg["tail_outside"]:
                extra.append(("gap", bytes(PAGE)))
                tail = (pos + sum(len(x) for _, x in extra) - PAGE) % Lr
                for k in (10, 11):
                    extra.append(("tail_outside", make_entry(
                        guid, head_seq + k, tail, poison_descs, flushed,
                        last)))
        used += sum(len(x) for _, x in extra)
        if used + PAGE > Lr:
            raise SpecError("%s: log entries (%d bytes) do not fit the "
                            "log (%d)" % (L.what, used, Lr))
        for _, x in extra:
            put_ring(ring, pos, x)
            pos = (pos + len(x)) % Lr
        self.pieces.append((self.log_off, bytes(ring)))
        if lg["flushed_beyond_eof"]:
            self.set_refuse("file shorter than FlushedFileOffset")
        summary.update(start=start, entries=n, sequence=[seq0, head_seq],
                       lengths=lengths, extra=[k for k, _ in extra],
                       truncated_block=self.trunc_block)
        self.log_summary = summary


def entry_length(descs):
    nd = sum(1 for d in descs if d[0] == "data")
    return PAGE * (div_round_up(64 + 32 * len(descs), PAGE) + nd)


def make_entry(guid, seq, tail, descs, flushed, last, torn=None):
    n = len(descs)
    dsec = div_round_up(64 + 32 * n, PAGE)
    length = entry_length(descs)
    buf = bytearray(length)
    struct.pack_into(LOG_ENTRY_FMT, buf, 0, b"loge", 0, length, tail, seq, n,
                     0, guid, flushed, last)
    k = 0
    for i, d in enumerate(descs):
        p = 64 + 32 * i
        if d[0] == "zero":
            struct.pack_into(ZERO_DESC_FMT, buf, p, b"zero", 0, d[2], d[1],
                             seq)
            continue
        page = d[2]
        struct.pack_into(DATA_DESC_FMT, buf, p, b"desc", page[4092:4096],
                         page[0:8], d[1], seq)
        s = PAGE * (dsec + k)
        k += 1
        buf[s:s + 4] = b"data"
        low = seq & 0xFFFFFFFF
        if torn == "seq":
            low ^= 1
        struct.pack_into("<I", buf, s + 4, seq >> 32)
        buf[s + 8:s + 4092] = page[8:4092]
        struct.pack_into("<I", buf, s + 4092, low)
    if torn == "seq" and k == 0:
        raise SpecError("torn seq entry needs data")
    struct.pack_into("<I", buf, 4, crc32c(buf))
    if torn == "crc":
        return corrupt_crc(bytes(buf))
    return bytes(buf)


def corrupt_crc(entry):
    b = bytearray(entry)
    b[4] ^= 0x5A
    return bytes(b)


def put_ring(ring, pos, data):
    n = len(ring)
    first = min(len(data), n - pos)
    ring[pos:pos + first] = data[:first]
    if first < len(data):
        ring[0:len(data) - first] = data[first:]


# ----------------------------------------------------------------- reader

def parse_header(buf):
    sig, crc, seq, fwg, dwg, lg, lver, ver, llen, loff = \
        struct.unpack_from(HEADER_FMT, buf, 0)
    return {"signature_ok": sig == b"head",
            "crc_ok": crc == crc_with_field_zeroed(buf),
            "checksum": crc, "sequence_number": seq,
            "file_write_guid": fwg, "data_write_guid": dwg, "log_guid": lg,
            "log_version": lver, "version": ver, "log_length": llen,
            "log_offset": loff, "raw80": bytes(buf[:80])}


def parse_region_table(buf):
    sig, crc, count, _ = struct.unpack_from("<4sIII", buf, 0)
    ok = sig == b"regi" and crc == crc_with_field_zeroed(buf) and \
        count <= 2047
    entries = []
    if ok:
        for i in range(count):
            g, off, length, req = struct.unpack_from("<16sQII", buf,
                                                     16 + 32 * i)
            entries.append({"guid": g, "offset": off, "length": length,
                            "required": req})
    return {"valid": ok, "signature_ok": sig == b"regi",
            "checksum": crc, "entry_count": count, "entries": entries}


class LogEntry:
    pass


class VhdxFile:
    """One VHDX file opened read-only; a pending log is replayed into an
    in-memory overlay.  Attributes are filled in stage by stage, so `dump`
    can show what was parsed before an error."""

    def __init__(self, path, replay=True):
        self.path = path
        self.replay = replay
        self.parent = None
        self.overlay = {}
        self.overlay_keys = []
        self.log = None
        self.sb_cache = {}
        self.f = open(path, "rb", buffering=0)
        self.file_size = os.fstat(self.f.fileno()).st_size
        self.eff_size = self.file_size

    def close(self):
        self.f.close()
        if self.parent:
            self.parent.close()

    def err(self, msg):
        raise SpecError("%s: %s" % (self.path, msg))

    # raw and overlaid reads
    def raw_read(self, off, n):
        # pread: data_ranges() moves the descriptor's offset with lseek
        parts, fd = [], self.f.fileno()
        while n > 0:
            data = os.pread(fd, n, off)
            if not data:
                break
            parts.append(data)
            off += len(data)
            n -= len(data)
        parts.append(bytes(n))
        return b"".join(parts)

    def read(self, off, n):
        data = self.raw_read(off, n)
        if not self.overlay:
            return data
        lo = bisect.bisect_left(self.overlay_keys, off - PAGE + 1)
        hi = bisect.bisect_left(self.overlay_keys, off + n)
        if lo == hi:
            return data
        buf = bytearray(data)
        for po in self.overlay_keys[lo:hi]:
            page = self.overlay[po]
            a, b = max(po, off), min(po + PAGE, off + n)
            buf[a - off:b - off] = page[a - po:b - po]
        return bytes(buf)

    def data_ranges(self, off, n):
        """Sub-ranges of [off, off+n) of the file that may be non-zero."""
        out = []
        try:
            fd = self.f.fileno()
            pos, end = off, min(off + n, self.file_size)
            while pos < end:
                d = os.lseek(fd, pos, os.SEEK_DATA)
                if d >= end:
                    break
                h = min(os.lseek(fd, d, os.SEEK_HOLE), end)
                out.append((d, h - d))
                pos = h
        except OSError:
            out = [(off, n)]
        lo = bisect.bisect_left(self.overlay_keys, off - PAGE + 1)
        hi = bisect.bisect_left(self.overlay_keys, off + n)
        for po in self.overlay_keys[lo:hi]:
            a = max(po, off)
            out.append((a, min(po + PAGE, off + n) - a))
        out.sort()
        merged = []
        for a, ln in out:
            if merged and a <= merged[-1][0] + merged[-1][1]:
                m = merged[-1]
                m[1] = max(m[1], a + ln - m[0])
            else:
                merged.append([a, ln])
        return merged

    # stages
    def open(self):
        if self.file_size < MiB:
            self.err("file smaller than 1 MiB")
        self.creator = self.raw_read(8, 512).decode(
            "utf-16-le", errors="replace").split("\0")[0]
        if self.raw_read(0, 8) != b"vhdxfile":
            self.err("not a VHDX file (no vhdxfile signature)")
        self.open_headers()
        if self.header["log_guid"] != ZERO_GUID and self.replay:
            self.open_log()
        self.open_regions()
        self.open_metadata()
        self.open_bat()
        return self

    def open_headers(self):
        self.headers = [parse_header(self.raw_read(s * 64 * KiB, PAGE))
                        for s in (1, 2)]
        valid = [h["signature_ok"] and h["crc_ok"] for h in self.headers]
        h1, h2 = self.headers
        if valid[0] and valid[1]:
            if h1["sequence_number"] == h2["sequence_number"]:
                if h1["raw80"] != h2["raw80"]:
                    self.err("both headers valid with equal sequence "
                             "numbers but different contents")
                cur = 0
            else:
                cur = 0 if h1["sequence_number"] > h2["sequence_number"] \
                    else 1
        elif valid[0]:
            cur = 0
        elif valid[1]:
            cur = 1
        else:
            self.err("no valid header")
        self.current = cur + 1
        h = self.header = self.headers[cur]
        if h["version"] != 1:
            self.err("header version %d, not 1" % h["version"])
        if h["log_guid"] != ZERO_GUID and h["log_version"] != 0:
            self.err("log version %d" % h["log_version"])
        lo, ll = h["log_offset"], h["log_length"]
        if lo % MiB or ll % MiB or (ll and lo < MiB):
            self.err("log offset/length not MiB aligned")
        if h["log_guid"] != ZERO_GUID and (ll == 0 or
                                           lo + ll > self.file_size):
            self.err("log outside the file")

    # ---- log (sections 4.5 - 4.8)
    def entry_at(self, ring, pos, guid, cache):
        if pos in cache:
            return cache[pos]
        cache[pos] = None
        L = len(ring)
        if ring[pos:pos + 4] != b"loge":
            return None
        (sig, crc, length, tail, seq, n, _, lg, flushed,
         last) = struct.unpack_from(LOG_ENTRY_FMT, ring, pos)
        if lg != guid or length % PAGE or length < PAGE or length >= L or \
                tail % PAGE or tail >= L or seq == 0 or \
                64 + 32 * n > length:
            return None
        buf = ring[pos:pos + length]
        if len(buf) < length:
            buf += ring[:length - len(buf)]
        dsec = div_round_up(64 + 32 * n, PAGE)
        descs, nd = [], 0
        lo, ll = self.header["log_offset"], self.header["log_length"]
        for i in range(n):
            p = 64 + 32 * i
            kind = buf[p:p + 4]
            if kind == b"zero":
                _, _, zlen, off, dseq = struct.unpack_from(ZERO_DESC_FMT,
                                                           buf, p)
                if zlen % PAGE:
                    return None
                d = ("zero", off, zlen, None)
            elif kind == b"desc":
                _, trail, lead, off, dseq = struct.unpack_from(
                    DATA_DESC_FMT, buf, p)
                zlen = PAGE
                s = PAGE * (dsec + nd)
                nd += 1
                if s + PAGE > length:
                    return None
                ds = buf[s:s + PAGE]
                hi_, = struct.unpack_from("<I", ds, 4)
                low, = struct.unpack_from("<I", ds, 4092)
                if ds[0:4] != b"data" or hi_ != seq >> 32 or \
                        low != seq & 0xFFFFFFFF:
                    return None
                d = ("data", off, zlen, lead + ds[8:4092] + trail)
            else:
                return None
            if dseq != seq or off % PAGE or off + zlen >= 1 << 64:
                return None
            if off < 0x30000 or (off < lo + ll and lo < off + zlen):
                return None
            descs.append(d)
        if length != PAGE * (dsec + nd):
            return None
        if crc != crc_with_field_zeroed(buf):
            return None
        e = LogEntry()
        e.pos, e.length, e.tail, e.seq = pos, length, tail, seq
        e.flushed, e.last, e.descs = flushed, last, descs
        cache[pos] = e
        return e

    def find_sequence(self, ring, guid):
        L = len(ring)
        cache = {}
        best = None
        start = 0
        while start < L:
            run, pos, covered = [], start, 0
            while covered < L:
                e = self.entry_at(ring, pos, guid, cache)
                if e is None or (run and e.seq != run[-1].seq + 1) or \
                        covered + e.length > L:
                    break
                run.append(e)
                covered += e.length
                pos = (pos + e.length) % L
            is_seq = bool(run) and (covered == L or
                                    (run[-1].tail - start) % L < covered)
            if is_seq and (best is None or run[-1].seq > best[1][-1].seq):
                best = (start, run)
            start = start + covered if is_seq else start + PAGE
        return best

    def open_log(self):
        h = self.header
        ring = self.raw_read(h["log_offset"], h["log_length"])
        best = self.find_sequence(ring, h["log_guid"])
        if best is None:
            self.err("LogGuid is set but the log has no valid sequence")
        start, run = best
        head = run[-1]
        idx = [i for i, e in enumerate(run) if e.pos == head.tail]
        if not idx:
            self.err("log tail is not at an entry of the active sequence")
        active = run[idx[0]:]
        if self.file_size < head.flushed:
            self.err("file (%d bytes) shorter than the log's "
                     "FlushedFileOffset %d (truncated)"
                     % (self.file_size, head.flushed))
        for e in active:
            for kind, off, zlen, data in e.descs:
                if kind == "data":
                    self.overlay[off] = data
                else:
                    for p in range(off, off + zlen, PAGE):
                        self.overlay[p] = ZERO_PAGE
        self.overlay_keys = sorted(self.overlay)
        self.eff_size = max(self.file_size, head.last,
                            max((k + PAGE for k in self.overlay_keys),
                                default=0))
        self.log = {"entries": [{"offset": e.pos, "sequence": e.seq,
                                 "length": e.length, "tail": e.tail,
                                 "descriptors": len(e.descs)}
                                for e in active],
                    "flushed_file_offset": head.flushed,
                    "last_file_offset": head.last}

    # ---- regions
    def open_regions(self):
        self.region_tables = [parse_region_table(self.read(o, 64 * KiB))
                              for o in (0x30000, 0x40000)]
        t1, t2 = self.region_tables
        if t1["valid"]:
            self.region_table_used = 1
        elif t2["valid"]:
            self.region_table_used = 2
        else:
            self.err("no valid region table")
        t = self.region_tables[self.region_table_used - 1]
        self.regions = {}
        spans = []
        h = self.header
        if h["log_length"]:
            spans.append((h["log_offset"], h["log_length"], "log"))
        for r in t["entries"]:
            g = r["guid"]
            if g in self.regions:
                self.err("region %s listed twice" % guid_text(g))
            if g not in REGION_NAMES:
                if r["required"] & 1:
                    self.err("unknown required region %s" % guid_text(g))
                continue
            if r["offset"] % MiB or r["offset"] < MiB or \
                    r["length"] % MiB or r["length"] == 0:
                self.err("region %s not MiB aligned" % REGION_NAMES[g])
            self.regions[g] = r
            spans.append((r["offset"], r["length"], REGION_NAMES[g]))
        for g in (BAT_REGION, METADATA_REGION):
            if g not in self.regions:
                self.err("%s region missing" % REGION_NAMES[g])
        spans.sort()
        for (a, al, an), (b, _, bn) in zip(spans, spans[1:]):
            if b < a + al:
                self.err("%s overlaps %s" % (an, bn))
        self.spans = spans

    # ---- metadata
    def open_metadata(self):
        r = self.regions[METADATA_REGION]
        mo, ml = r["offset"], r["length"]
        table = self.read(mo, 64 * KiB)
        sig, _, count = struct.unpack_from("<8sHH", table, 0)
        if sig != b"metadata":
            self.err("bad metadata table signature")
        if count > 2047:
            self.err("metadata entry count %d" % count)
        self.items = []
        seen = set()
        known = {}
        used = []
        for i in range(count):
            g, off, length, flags = struct.unpack_from("<16sIII", table,
                                                       32 + 32 * i)
            user = flags & 1
            item = {"guid": g, "offset": off, "length": length,
                    "flags": flags,
                    "name": "user" if user else ITEM_NAMES.get(g, "unknown")}
            self.items.append(item)
            if (g, user) in seen:
                self.err("metadata item %s listed twice" % guid_text(g))
            seen.add((g, user))
            if length > MiB or (length == 0 and off != 0) or \
                    (length and (off < 64 * KiB or off + length > ml)):
                self.err("metadata item %s out of bounds" % guid_text(g))
            if length:
                used.append((off, length, g))
            item["data"] = self.read(mo + off, length) if length else b""
            if user:
                if flags & 4:
                    self.err("user metadata item %s marked required"
                             % guid_text(g))
                continue
            if g == INCOMPLETE_FILE:
                self.err("incomplete file marker present")
            if g not in ITEM_NAMES:
                if flags & 4:
                    self.err("unknown required metadata item %s"
                             % guid_text(g))
                continue
            known[g] = item["data"]
        used.sort()
        for (a, al, _), (b, _, g) in zip(used, used[1:]):
            if b < a + al:
                self.err("metadata item %s overlaps another" % guid_text(g))
        for g, n in ITEM_LENGTHS.items():
            if g not in known:
                self.err("metadata item %s missing" % ITEM_NAMES[g])
            if len(known[g]) != n:
                self.err("metadata item %s has length %d"
                         % (ITEM_NAMES[g], len(known[g])))
        self.block_size, self.flags = struct.unpack("<II",
                                                    known[FILE_PARAMETERS])
        self.size, = struct.unpack("<Q", known[VIRTUAL_DISK_SIZE])
        self.virtual_disk_id = known[VIRTUAL_DISK_ID]
        self.ss, = struct.unpack("<I", known[LOGICAL_SECTOR])
        self.pss, = struct.unpack("<I", known[PHYSICAL_SECTOR])
        B = self.block_size
        if not is_power_of_two(B) or not MiB <= B <= 256 * MiB:
            self.err("bad block size %d" % B)
        if self.flags & ~3:
            self.err("reserved file parameter flags 0x%x" % self.flags)
        if self.ss not in (512, 4096) or self.pss not in (512, 4096):
            self.err("bad sector sizes %d/%d" % (self.ss, self.pss))
        if self.size == 0 or self.size % self.ss or self.size > MAX_SIZE:
            self.err("bad virtual disk size %d" % self.size)
        self.has_parent = bool(self.flags & 2)
        self.locator = None
        if PARENT_LOCATOR in known:
            self.locator = self.parse_locator(known[PARENT_LOCATOR])
        if self.has_parent != (self.locator is not None):
            self.err("HasParent flag and parent locator disagree")

    def parse_locator(self, d):
        if len(d) < 20:
            self.err("parent locator too short")
        if d[:16] != LOCATOR_TYPE:
            self.err("unknown parent locator type %s" % guid_text(d[:16]))
        n, = struct.unpack_from("<H", d, 18)
        if n == 0 or 20 + 12 * n > len(d):
            self.err("bad parent locator key count %d" % n)
        keys = {}
        for i in range(n):
            ko, vo, kl, vl = struct.unpack_from("<IIHH", d, 20 + 12 * i)
            if not (ko and vo and kl and vl) or kl % 2 or vl % 2 or \
                    ko + kl > len(d) or vo + vl > len(d):
                self.err("bad parent locator entry %d" % i)
            try:
                k = d[ko:ko + kl].decode("utf-16-le")
                v = d[vo:vo + vl].decode("utf-16-le")
            except UnicodeDecodeError:
                self.err("parent locator entry %d is not UTF-16" % i)
            if k in keys:
                self.err("parent locator key %r twice" % k)
            keys[k] = v
        return keys

    # ---- BAT
    def open_bat(self):
        B, ss = self.block_size, self.ss
        self.cr = cr = (1 << 23) * ss // B
        self.spb = B // ss
        self.payload = div_round_up(self.size, B)
        if self.has_parent:
            self.entries = div_round_up(self.payload, cr) * (cr + 1)
        else:
            self.entries = self.payload + (self.payload - 1) // cr
        r = self.regions[BAT_REGION]
        if r["length"] < 8 * self.entries:
            self.err("BAT region (%d bytes) too small for %d entries"
                     % (r["length"], self.entries))
        raw = self.read(r["offset"], 8 * self.entries)
        self.blocks = {}            # payload block -> (state, offset)
        self.sb_off = {}            # chunk -> offset
        self.counts = {}
        self.sb_counts = {}
        seen_off = {}
        for p in range(0, len(raw), PAGE):
            page = raw[p:p + PAGE]
            if page == ZERO_PAGE[:len(page)]:
                continue
            vals = array.array("Q", page)
            if sys.byteorder != "little":
                vals.byteswap()
            for j, e in enumerate(vals):
                if e == 0:
                    continue
                i = p // 8 + j
                self.check_entry(i, e, seen_off)
        n_sb = self.entries // (cr + 1)
        self.counts["not_present"] = self.payload - sum(self.counts.values())
        self.sb_counts["sb_not_present"] = n_sb - sum(
            self.sb_counts.values())
        for b, (st, _) in self.blocks.items():
            if st == PARTIALLY_PRESENT and self.has_parent and \
                    b // cr not in self.sb_off:
                self.err("block %d partially present but its sector bitmap "
                         "is not present" % b)
        self.block_keys = sorted(self.blocks)

    def check_entry(self, i, e, seen_off):
        cr, B = self.cr, self.block_size
        st, off = e & 7, e & ~0xFFFFF
        if (e >> 3) & 0x1FFFF:
            self.err("BAT entry %d has reserved bits set" % i)
        is_sb = i % (cr + 1) == cr
        if is_sb:
            if st not in (0, 6, 7):
                self.err("sector bitmap entry %d has state %d" % (i, st))
            name = SB_STATE_NAMES.get(st, "sb_present")
            if st == 0:
                return
            self.sb_counts[name] = self.sb_counts.get(name, 0) + 1
            length = MiB
        else:
            b = i - i // (cr + 1)
            if b >= self.payload:
                return       # slot past the disk (last chunk of a child)
            if st == 4:
                self.err("BAT entry %d has reserved state 4" % i)
            self.counts[STATE_NAMES[st]] = \
                self.counts.get(STATE_NAMES[st], 0) + 1
            if st == 0:
                return
            self.blocks[b] = (st, off)
            if st not in (6, 7):
                return
            length = B
        if off < MiB or off >= self.eff_size:
            self.err("BAT entry %d points at %d, outside the file" % (i, off))
        for s, ln, name in self.spans:
            if off < s + ln and s < off + length:
                self.err("BAT entry %d overlaps the %s" % (i, name))
        if off in seen_off:
            self.err("BAT entries %d and %d share offset %d"
                     % (seen_off[off], i, off))
        seen_off[off] = i
        if is_sb:
            self.sb_off[i // (cr + 1)] = off

    def sb_block(self, c):
        if c not in self.sb_cache:
            self.sb_cache[c] = self.read(self.sb_off[c], MiB)
        return self.sb_cache[c]

    # ---- chain
    def find_parent(self):
        keys = self.locator
        d = os.path.dirname(os.path.abspath(self.path))
        cands = []
        rp = keys.get("relative_path")
        if rp:
            parts = [x for x in rp.replace("\\", "/").split("/")
                     if x not in ("", ".")]
            cands.append(parts)
        ap = keys.get("absolute_win32_path")
        if ap:
            cands.append([ap.replace("\\", "/").split("/")[-1]])
        for parts in cands:
            p = os.path.join(d, *parts)
            if parts and os.path.isfile(p):
                return p
        for parts in cands:          # case-insensitive retry
            p = d
            for x in parts:
                if x == ".." or os.path.exists(os.path.join(p, x)):
                    p = os.path.join(p, x)
                    continue
                try:
                    m = [n for n in os.listdir(p) if n.lower() == x.lower()]
                except OSError:
                    m = []
                if not m:
                    p = None
                    break
                p = os.path.join(p, m[0])
            if p and parts and os.path.isfile(p):
                return p
        return None

    def open_parent(self, seen):
        p = self.find_parent()
        if p is None:
            self.err("parent not found (relative_path %r, "
                     "absolute_win32_path %r)"
                     % (self.locator.get("relative_path"),
                        self.locator.get("absolute_win32_path")))
        real = os.path.realpath(p)
        if real in seen:
            self.err("parent chain loops at %s" % p)
        if len(seen) > 256:
            self.err("parent chain deeper than 256")
        seen.add(real)
        par = open_chain(p, self.replay, seen)
        self.parent = par
        dwg = par.header["data_write_guid"]
        ok = False
        for k in ("parent_linkage", "parent_linkage2"):
            v = self.locator.get(k)
            if v is None:
                continue
            try:
                g = guid_bytes(v)
            except ValueError:
                if k == "parent_linkage":
                    self.err("parent_linkage %r is not a GUID" % v)
                continue
            if k == "parent_linkage2" and g == ZERO_GUID:
                continue
            if g == dwg:
                ok = True
        if not ok:
            self.err("parent linkage mismatch: %s has DataWriteGuid %s, "
                     "parent_linkage is %s"
                     % (p, guid_text(dwg), self.locator.get("parent_linkage")))
        if par.ss != self.ss:
            self.err("logical sector size %d differs from the parent's %d"
                     % (self.ss, par.ss))

    # ---- resolution (section 3.8)
    def resolve(self, start, end):
        """Yield (start, end, VhdxFile or None, file offset) pieces."""
        if start >= self.size:
            yield (start, end, None, 0)
            return
        tail = None
        if end > self.size:
            tail, end = (self.size, end), self.size
        B = self.block_size
        keys = self.block_keys
        i = bisect.bisect_left(keys, start // B)
        pos = start
        while pos < end:
            b = keys[i] if i < len(keys) else None
            if b is None or b * B >= end:
                yield from self.pass_down(pos, end)
                break
            bstart = b * B
            if bstart > pos:
                yield from self.pass_down(pos, bstart)
                pos = bstart
            bend = min(end, bstart + B)
            st, off = self.blocks[b]
            if st == FULLY_PRESENT or (st == PARTIALLY_PRESENT and
                                       not self.has_parent):
                yield (pos, bend, self, off + pos - bstart)
            elif st == PARTIALLY_PRESENT:
                bm = self.sb_block(b // self.cr)
                s0 = (pos - bstart) // self.ss
                bit0 = (b % self.cr) * self.spb + s0
                for rs, rn, val in bit_runs(bm, bit0,
                                            (bend - pos) // self.ss):
                    a = pos + rs * self.ss
                    z = a + rn * self.ss
                    if val:
                        yield (a, z, self, off + a - bstart)
                    else:
                        yield from self.pass_down(a, z)
            else:
                yield (pos, bend, None, 0)
            pos = bend
            i += 1
        if tail:
            yield (tail[0], tail[1], None, 0)

    def pass_down(self, a, b):
        if self.has_parent:
            yield from self.parent.resolve(a, b)
        else:
            yield (a, b, None, 0)

    def read_to(self, sink):
        for a, z, src, off in self.resolve(0, self.size):
            if src is None:
                continue
            for o, n in src.data_ranges(off, z - a):
                for k in range(0, n, 4 * MiB):
                    m = min(4 * MiB, n - k)
                    sink.write(a + o - off + k, src.read(o + k, m))
        return sink.close()


def bit_runs(bm, first, count):
    """[[start, length, bit], ...] over bits first..first+count (LSB first)."""
    out = []
    i = 0
    while i < count:
        b = first + i
        byte = bm[b >> 3]
        if not b & 7 and count - i >= 8 and byte in (0, 255):
            val, n = byte == 255, 8
        else:
            val, n = bool((byte >> (b & 7)) & 1), 1
        if out and out[-1][2] == val:
            out[-1][1] += n
        else:
            out.append([i, n, val])
        i += n
    return out


def open_chain(path, replay=True, seen=None):
    img = VhdxFile(path, replay)
    try:
        img.open()
        if img.has_parent:
            if seen is None:
                seen = {os.path.realpath(path)}
            img.open_parent(seen)
    except BaseException:
        img.close()
        raise
    return img


def read_digest(path, replay=True, out=None):
    """Read the chain of path; returns the content digest (and writes
    out sparsely when given)."""
    img = open_chain(path, replay)
    try:
        if out is None:
            return img.read_to(PageSink(img.size))
        with open(out, "wb") as f:
            return img.read_to(PageSink(img.size, f))
    finally:
        img.close()


# ----------------------------------------------------------------- make

def manifest_entry(layer, img):
    L = layer
    e = {"file": L.file, "index": L.index, "type": L.type,
         "parent": L.parent.file if L.parent else None,
         "size": L.size, "block_size": L.bs,
         "logical_sector_size": L.ss, "physical_sector_size": L.pss,
         "chunk_ratio": L.cr, "bat_entries": L.entries,
         "bat_offset": img.bat_off, "metadata_offset": img.md_off,
         "log_offset": img.log_off, "log_length": img.log_len,
         "file_size": img.file_size,
         "file_write_guid": guid_text(L.file_write_guid),
         "data_write_guid": guid_text(L.data_write_guid),
         "log_guid": guid_text(L.log_guid),
         "virtual_disk_id": guid_text(L.virtual_disk_id),
         "parent_linkage": getattr(L, "parent_linkage", None),
         "held": runs(L.held_sectors()),
         "bat": img.bat_runs(),
         "log": img.log_summary}
    if img.refuse:
        e["refuse"] = img.refuse
    return e


def linkage_refusal(layer):
    """Would a correct reader refuse the link of layer to its parent?"""
    keys = dict(layer.locator_keys)
    d = os.path.dirname(layer.file)
    target = os.path.normpath(layer.parent.file).lower()
    found = False
    rp = keys.get("relative_path")
    if rp:
        parts = [x for x in rp.replace("\\", "/").split("/")
                 if x not in ("", ".")]
        found = os.path.normpath(os.path.join(d, *parts)).lower() == target
    ap = keys.get("absolute_win32_path")
    if not found and ap:
        p = os.path.join(d, ap.replace("\\", "/").split("/")[-1])
        found = os.path.normpath(p).lower() == target
    if not found:
        return "parent not found"
    dwg = layer.parent.data_write_guid
    for k in ("parent_linkage", "parent_linkage2"):
        try:
            g = guid_bytes(keys.get(k, ""))
        except ValueError:
            continue
        if g == dwg and not (k == "parent_linkage2" and g == ZERO_GUID):
            return None
    return "parent linkage mismatch"


def cmd_make(spec_path, outdir, check=False):
    spec, layers = load_spec(spec_path)
    entries, refuse, images = [], {}, {}
    for L in layers:
        img = Image(L)
        img.choose_log_guid()
        img.build_structures()
        img.build_log()
        if L.parent is not None and img.refuse is None:
            img.set_refuse(linkage_refusal(L))
        if L.parent is not None and img.refuse is None and \
                refuse[L.parent.file]:
            img.set_refuse("parent refused: " + refuse[L.parent.file])
        refuse[L.file] = img.refuse
        images[L.file] = img
        path = os.path.join(outdir, L.file)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        img.write(path)
        entries.append(manifest_entry(L, img))
    digests = {}
    for L in layers:
        names = [L.expected] if L.expected else []
        if L is layers[-1] and spec.get("expected", True):
            names.append("expected.raw")
        for name in names:
            p = os.path.join(outdir, name)
            os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
            with open(p, "wb") as f:
                digests[L.file] = L.model_to(PageSink(L.size, f))
    for L in layers:
        if L.log is None or refuse[L.file] or \
                L.log["stale_behind_zero_guid"]:
            continue
        want = digests.get(L.file) or L.model_to(PageSink(L.size))
        digests[L.file] = want
        path = os.path.join(outdir, L.file)
        try:
            got = read_digest(path, replay=False)
        except SpecError:
            got = None
        if got == want:
            raise SpecError("%s: skipping the log replay gives the same "
                            "content; choose other log changes" % L.what)
    top = layers[-1]
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        f.write('{"top": %s, "refuse": %s, "layers": [\n'
                % (json.dumps(top.file), json.dumps(refuse[top.file])))
        f.write(",\n".join(json.dumps(e) for e in entries))
        f.write("\n]}\n")
    if check:
        for L in layers:
            path = os.path.join(outdir, L.file)
            try:
                got = read_digest(path)
                err = None
            except SpecError as e:
                got, err = None, str(e)
            if refuse[L.file]:
                if err is None:
                    raise SpecError("check: %s read although it must be "
                                    "refused (%s)" % (L.file,
                                                      refuse[L.file]))
                continue
            if err:
                raise SpecError("check: " + err)
            want = digests.get(L.file) or L.model_to(PageSink(L.size))
            if got != want:
                raise SpecError("check: %s: reader and model differ"
                                % L.file)
        print("vhdxgen: check ok (%d layers)" % len(layers))


# ----------------------------------------------------------------- dump

def header_info(h, slot, current):
    return {"slot": slot, "current": slot == current,
            "signature_ok": h["signature_ok"], "crc_ok": h["crc_ok"],
            "sequence_number": h["sequence_number"],
            "file_write_guid": guid_text(h["file_write_guid"]),
            "data_write_guid": guid_text(h["data_write_guid"]),
            "log_guid": guid_text(h["log_guid"]),
            "log_version": h["log_version"], "version": h["version"],
            "log_offset": h["log_offset"], "log_length": h["log_length"]}


def scan_ring(img):
    """Every CRC-valid entry in the ring, whatever its LogGuid."""
    h = img.header
    if not h["log_length"] or h["log_offset"] + h["log_length"] > \
            img.file_size:
        return []
    ring = img.raw_read(h["log_offset"], h["log_length"])
    out = []
    for pos in range(0, len(ring), PAGE):
        if ring[pos:pos + 4] != b"loge":
            continue
        guid = ring[pos + 32:pos + 48]
        e = img.entry_at(ring, pos, guid, {})
        if e is not None:
            out.append({"offset": pos, "log_guid": guid_text(guid),
                        "sequence": e.seq, "length": e.length,
                        "tail": e.tail, "descriptors": len(e.descs)})
    return out


def dump_info(path):
    img = VhdxFile(path)
    info = {"file": path, "file_size": img.file_size}
    try:
        try:
            img.open()
        except SpecError as e:
            info["error"] = str(e)
        if hasattr(img, "creator"):
            info["creator"] = img.creator
        if hasattr(img, "headers"):
            info["headers"] = [header_info(h, i + 1,
                                           getattr(img, "current", 0))
                               for i, h in enumerate(img.headers)]
        if hasattr(img, "header"):
            info["log"] = {"log_guid": guid_text(img.header["log_guid"]),
                           "active": img.log,
                           "valid_entries_in_ring": scan_ring(img)}
        if hasattr(img, "region_tables"):
            info["region_tables"] = [
                {"slot": i + 1, "valid": t["valid"],
                 "entry_count": t["entry_count"],
                 "entries": [{"guid": guid_text(r["guid"]),
                              "name": REGION_NAMES.get(r["guid"], "unknown"),
                              "offset": r["offset"], "length": r["length"],
                              "required": r["required"]}
                             for r in t["entries"]]}
                for i, t in enumerate(img.region_tables)]
            info["region_table_used"] = getattr(img, "region_table_used",
                                                None)
        if hasattr(img, "items"):
            info["metadata_items"] = [
                {"guid": guid_text(it["guid"]), "name": it["name"],
                 "offset": it["offset"], "length": it["length"],
                 "flags": it["flags"],
                 "value": item_value(it)} for it in img.items]
        if hasattr(img, "size"):
            info["parameters"] = {
                "block_size": img.block_size, "flags": img.flags,
                "virtual_disk_size": img.size,
                "logical_sector_size": img.ss,
                "physical_sector_size": img.pss,
                "virtual_disk_id": guid_text(img.virtual_disk_id),
                "has_parent": img.has_parent}
            info["parent_locator"] = img.locator
        if hasattr(img, "blocks"):
            info["bat"] = {"entries": img.entries, "chunk_ratio": img.cr,
                           "payload_blocks": img.payload,
                           "payload_states": img.counts,
                           "sector_bitmap_states": img.sb_counts}
    finally:
        img.close()
    return info


def item_value(it):
    d, g = it["data"], it["guid"]
    if it["flags"] & 1:
        return d.hex()
    if g == FILE_PARAMETERS:
        bs, fl = struct.unpack("<II", d)
        return "block_size %d flags 0x%x" % (bs, fl)
    if g in (VIRTUAL_DISK_SIZE,) and len(d) == 8:
        return struct.unpack("<Q", d)[0]
    if g in (LOGICAL_SECTOR, PHYSICAL_SECTOR) and len(d) == 4:
        return struct.unpack("<I", d)[0]
    if g == VIRTUAL_DISK_ID and len(d) == 16:
        return guid_text(d)
    if g == PARENT_LOCATOR:
        return "%d bytes" % len(d)
    return d[:64].hex()


def print_info(info):
    for k in ("file", "file_size", "creator", "error"):
        if k in info:
            print("%s: %s" % (k, info[k]))
    for h in info.get("headers", []):
        print("header[%d]%s: %s" % (h["slot"], " (current)" if h["current"]
                                    else "", ", ".join(
                                        "%s=%s" % (k, v) for k, v in h.items()
                                        if k not in ("slot", "current"))))
    for t in info.get("region_tables", []):
        print("region_table[%d]: valid=%s entries=%d%s"
              % (t["slot"], t["valid"], t["entry_count"],
                 " (used)" if info.get("region_table_used") == t["slot"]
                 else ""))
        for r in t["entries"]:
            print("  region %s %s offset=%d length=%d required=%d"
                  % (r["name"], r["guid"], r["offset"], r["length"],
                     r["required"]))
    for it in info.get("metadata_items", []):
        print("metadata %s %s offset=0x%x length=%d flags=0x%x: %s"
              % (it["name"], it["guid"], it["offset"], it["length"],
                 it["flags"], it["value"]))
    for k, v in (info.get("parameters") or {}).items():
        print("param.%s: %s" % (k, v))
    for k, v in (info.get("parent_locator") or {}).items():
        print("locator.%s: %s" % (k, v))
    if "bat" in info:
        b = info["bat"]
        print("bat: entries=%d chunk_ratio=%d payload_blocks=%d"
              % (b["entries"], b["chunk_ratio"], b["payload_blocks"]))
        print("bat.payload_states: %s" % json.dumps(b["payload_states"],
                                                    sort_keys=True))
        print("bat.sector_bitmap_states: %s"
              % json.dumps(b["sector_bitmap_states"], sort_keys=True))
    if "log" in info:
        lg = info["log"]
        print("log.log_guid: %s" % lg["log_guid"])
        if lg["active"]:
            print("log.active: flushed=%d last=%d"
                  % (lg["active"]["flushed_file_offset"],
                     lg["active"]["last_file_offset"]))
            for e in lg["active"]["entries"]:
                print("  entry %s" % json.dumps(e))
        for e in lg["valid_entries_in_ring"]:
            print("log.ring_entry: %s" % json.dumps(e))


# ----------------------------------------------------------------- ids, states

def ids_info(path):
    """The identity fields of path's headers, without opening the rest."""
    img = VhdxFile(path)
    try:
        if img.file_size < MiB or img.raw_read(0, 8) != b"vhdxfile":
            img.err("not a VHDX file")
        img.open_headers()
        h = img.header
        return {"file": path, "current": img.current,
                "sequence_number": h["sequence_number"],
                "file_write_guid": guid_text(h["file_write_guid"]),
                "data_write_guid": guid_text(h["data_write_guid"]),
                "log_guid": guid_text(h["log_guid"]),
                "log_pending": h["log_guid"] != ZERO_GUID,
                "headers": [header_info(x, i + 1, img.current)
                            for i, x in enumerate(img.headers)]}
    finally:
        img.close()


def states_info(path, replay=True):
    """The BAT of path alone (no parent), as described in the usage."""
    img = VhdxFile(path, replay)
    try:
        img.open()
        blocks = {}
        for b in img.block_keys:
            st, off = img.blocks[b]
            e = {"state": STATE_NAMES[st], "value": st, "offset": off,
                 "bits": []}
            c = b // img.cr
            if c in img.sb_off:
                bm = img.sb_block(c)
                first = (b % img.cr) * img.spb
                count = min(img.spb, div_round_up(img.size - b * img.block_size,
                                                  img.ss))
                e["bits"] = [[s, n] for s, n, v in bit_runs(bm, first, count)
                             if v]
            blocks[str(b)] = e
        return {"file": path, "block_size": img.block_size,
                "logical_sector_size": img.ss, "sectors_per_block": img.spb,
                "chunk_ratio": img.cr, "payload_blocks": img.payload,
                "virtual_disk_size": img.size, "has_parent": img.has_parent,
                "fixed": bool(img.flags & 1),
                "counts": img.counts, "sb_counts": img.sb_counts,
                "sb": {str(c): o for c, o in sorted(img.sb_off.items())},
                "blocks": blocks}
    finally:
        img.close()


# ----------------------------------------------------------------- main

USAGE = """usage: vhdxgen.py make [--check] SPEC.json OUTDIR
       vhdxgen.py read [--no-replay] FILE OUT.raw
       vhdxgen.py dump [--json] FILE
       vhdxgen.py ids FILE
       vhdxgen.py states [--no-replay] FILE"""


def main(argv):
    try:
        if argv[:1] == ["make"] and len(argv) in (3, 4):
            check = argv[1] == "--check"
            if check != (len(argv) == 4):
                raise SpecError(USAGE)
            cmd_make(argv[-2], argv[-1], check)
        elif argv[:1] == ["read"] and len(argv) in (3, 4):
            replay = argv[1] != "--no-replay"
            if replay != (len(argv) == 3):
                raise SpecError(USAGE)
            read_digest(argv[-2], replay, argv[-1])
        elif argv[:1] == ["dump"] and len(argv) in (2, 3):
            as_json = argv[1] == "--json"
            if as_json != (len(argv) == 3):
                raise SpecError(USAGE)
            info = dump_info(argv[-1])
            if as_json:
                print(json.dumps(info, indent=2))
            else:
                print_info(info)
        elif argv[:1] == ["ids"] and len(argv) == 2:
            print(json.dumps(ids_info(argv[1]), indent=2))
        elif argv[:1] == ["states"] and len(argv) in (2, 3):
            replay = argv[1] != "--no-replay"
            if replay != (len(argv) == 2):
                raise SpecError(USAGE)
            print(json.dumps(states_info(argv[-1], replay), indent=2))
        else:
            print(USAGE, file=sys.stderr)
            return 1
    except SpecError as e:
        print("vhdxgen: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError, OverflowError, struct.error) as e:
        print("vhdxgen: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
