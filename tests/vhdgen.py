#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""vhdgen.py - independent VHD (v1.0) writer and reference model (test oracle).

Written from the format description (docs/vhd-format.md, the Microsoft VHD
spec as quoted there), deliberately NOT from the project's C code, so that
the two can check each other.  Python 3 standard library only.

Usage
-----
  vhdgen.py make SPEC.json OUTDIR   write every layer of SPEC into OUTDIR plus
                                    OUTDIR/expected.raw (guest view of the
                                    last layer's chain) and
                                    OUTDIR/manifest.json (see below)
  vhdgen.py dump [--json] FILE      print footer / header / locators / BAT
                                    summary of any VHD file (ours or foreign)

Exit status 0 on success, 1 on error (message on stderr).

Spec (JSON).  Defaults are given in brackets.
----------------------------------------------
{
  "size": 8388608,         # virtual size in bytes, multiple of 512 (required
                           #   unless every layer has its own "size")
  "seed": 1,               # [1] seeds sector data, shuffles, nothing else
  "block_size": 2097152,   # [2 MiB] default for layers (power of two >= 512)
  "creator": "win ",       # [win ] default creator application for layers
  "layers": [              # base first, top last; the LAST layer is the one
                           # whose chain is modelled in expected.raw
    {
      "file": "base.vhd",  # required; relative to OUTDIR, may contain dirs
      "type": "dynamic",   # [dynamic] | "fixed" | "differencing"
      "size": N,           # [spec size] this layer's virtual size
      "block_size": N,     # [spec block_size]
      "writes": [[off, len], [off, len, fill], ...],
                           # byte ranges this layer holds, rounded outward to
                           # whole sectors.  Without "fill" the data is
                           # pseudo-random (see "Sector data" below); with an
                           # integer fill 0..255 every byte is that value
                           # (e.g. 0 = explicitly written zeros, which in a
                           # differencing layer masks the parent).  Later
                           # writes override earlier ones in the same layer.
      "full_blocks": [i, ...],
                           # whole blocks present: every bitmap bit of block
                           # i set; sectors inside the disk get pseudo-random
                           # data (unless also in "writes"), the data area
                           # past the end of the disk (partial last block) is
                           # zero with its bits set.
      "layout": {          # dynamic/differencing only unless noted
        "bat_offset": 1536,        # [1536] byte offset of the BAT (multiple
                                   #   of 512, not overlapping offset 0..1535)
                                   #   or "after_locators"
        "bat_extra_entries": 0,    # [0] extra BAT entries (0xFFFFFFFF)
        "block_order": "ascending",# ["ascending"] | "reverse" | "shuffle":
                                   #   physical order of allocated blocks
        "data_start": N,           # [end of metadata] byte offset (multiple
                                   #   of 512) where the first block may go
        "gap_sectors": 0,          # [0] zero sectors after EVERY block,
                                   #   including the last (so the EOF footer
                                   #   then follows a gap, as Windows does)
        "align_data_4k": false,    # [false] bump each bitmap so the block's
                                   #   data area starts on a 4 KiB boundary;
                                   #   the EOF footer goes where the next
                                   #   bitmap would go (Windows 10 layout)
        "stale_fill": 0,           # [0] byte written into data sectors of
                                   #   allocated blocks whose bit is clear
                                   #   (non-zero = stale junk a reader must
                                   #   ignore; qemu does NOT ignore it)
        "footer511": false,        # [false] 511-byte EOF footer (any type)
        "no_eof_footer": false     # [false] dyn/diff: only the copy at 0
      },
      "locators": [        # differencing only; slot order as listed (max 8)
        { "code": "W2ru",          # W2ru/W2ku: UTF-16LE, Wi2r/Wi2k: latin-1,
                                   # MacX: UTF-8; any other 4-char code needs
                                   # "encoding" (a Python codec name)
          "path": ".\\\\base.vhd", # written exactly as given, no terminator
          "space": N,              # [length rounded up to 512, min 512]
                                   #   reserved bytes, multiple of 512
          "space_in_sectors": false,# [false] store space/512 in the entry
          "offset": N }            # [first free sector-aligned spot after
                                   #   offset 1536] byte offset of the data
      ],
      "parent": "base.vhd",        # [previous layer] differencing parent,
                                   #   by "file"; must be listed earlier
      "parent_name": "base.vhd",   # [base name of the parent's file]
                                   #   stored UTF-16BE (<= 256 code units)
      "parent_timestamp": 0,       # [0, as Windows writes]
      "wrong_parent_id": false,    # [false] store a random parent id
      "unique_id": "32 hex digits",# [random uuid4]
      "timestamp": N,              # [now] footer timestamp, VHD epoch
      "creator": "win ",           # [spec creator] 4 chars (padded with NUL)
      "creator_version": 655360,   # [0x000A0000]
      "creator_os": "Wi2k",        # [Wi2k]
      "bad_footer_checksum": false,# [false] both footers get checksum ^ 1
      "bad_header_checksum": false,# [false] header gets checksum ^ 1
      "expected": "mid.raw"        # [none] also write this layer's chain view
    } ] }

Sector data
-----------
A held sector without "fill" contains a 16-byte ASCII tag "L<layer index,
3 digits>S<sector, 11 hex digits>" followed by 496 bytes of
SHAKE-128(seed, layer index, sector).  Deterministic, different per layer and
sector, never all-zero, and a hexdump shows which layer a sector came from.

On-disk choices
---------------
Footer: cookie conectix, features 2, version 0x00010000, CHS by the spec
algorithm (floor), original = current = size, host OS Wi2k, saved state 0.
Fixed: data offset all ones, [data][footer].  Dynamic/differencing: footer
copy at 0, header at 512 (data offset all ones, version 0x00010000),
max table entries = ceil(size / block_size) + bat_extra_entries, BAT entries
are bitmap sector numbers, bitmap = ceil(block_size/512/8) rounded up to 512
bytes, MSB first.  A block is allocated iff the layer holds a sector in it.
Dynamic: bits set only for held sectors, unheld data sectors zero (or
stale_fill).  Differencing: bits set only for held sectors.

Model (expected.raw)
--------------------
The chain of a layer is the layer, its parent, ... down to the first
non-differencing layer.  Going from the base up, every layer paints the
sectors it holds; a fixed or dynamic base additionally defines every other
sector (inside its size) as zero.  A sector no layer holds reads as zero.
The file is as long as the modelled layer's size.

manifest.json
-------------
{"top": FILE, "layers": [{"file", "index", "type", "size", "block_size",
"parent" (file or null), "unique_id" (32 hex digits, raw byte order),
"held": [[first_sector, count], ...] (sectors whose bitmap bit is set /
which a fixed layer wrote), "stale_fill", and for dynamic/differencing
"bat_offset", "bat_entries", "blocks": {"block index": bitmap sector},
"footer_offset"}, ...]} - in spec order.
"""

import hashlib
import json
import os
import random
import struct
import sys
import time
import uuid

SECTOR = 512
VHD_EPOCH = 946684800          # 2000-01-01T00:00:00Z in Unix time
FOOTER_SIZE = 512
HEADER_OFFSET = 512
HEADER_SIZE = 1024
METADATA_START = HEADER_OFFSET + HEADER_SIZE   # first byte after the header
UNALLOCATED = 0xFFFFFFFF
ALL_ONES64 = 0xFFFFFFFFFFFFFFFF

DISK_TYPES = {"fixed": 2, "dynamic": 3, "differencing": 4}
DISK_TYPE_NAMES = {0: "none", 1: "reserved(1)", 2: "fixed", 3: "dynamic",
                   4: "differencing", 5: "reserved(5)", 6: "reserved(6)"}

# Locator codes the format defines, with the encoding of their data.
LOCATOR_ENCODINGS = {
    "W2ku": "utf-16-le", "W2ru": "utf-16-le",
    "Wi2k": "latin-1", "Wi2r": "latin-1",
    "MacX": "utf-8",
}

# struct layouts (all big-endian).  Sizes are asserted below.
FOOTER_FMT = ">8sIIQI4sI4sQQHBBII16sB427x"
HEADER_FMT = ">8sQQIIII16sI4x512s192s256x"
LOCATOR_FMT = ">4sIIIQ"
assert struct.calcsize(FOOTER_FMT) == FOOTER_SIZE
assert struct.calcsize(HEADER_FMT) == HEADER_SIZE
assert struct.calcsize(LOCATOR_FMT) == 24


class SpecError(Exception):
    """A problem with the spec or an input file; reported without traceback."""


# ----------------------------------------------------------------- helpers

def round_up(n, m):
    return (n + m - 1) // m * m


def div_round_up(n, m):
    return (n + m - 1) // m


def is_power_of_two(n):
    return n > 0 and n & (n - 1) == 0


def vhd_checksum(buf):
    """One's complement of the byte sum; caller zeroes the checksum field."""
    return ~sum(buf) & 0xFFFFFFFF


def chs_geometry(size):
    """CHS geometry from the spec appendix (docs section 2.1), rounding down."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(div_round_up(cth, 1024), 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def bitmap_bytes(block_size):
    return round_up(div_round_up(block_size // SECTOR, 8), SECTOR)


def fourcc(text, what):
    """A 4-byte field from a string of at most 4 chars, NUL padded."""
    raw = text.encode("latin-1")
    if len(raw) > 4:
        raise SpecError("%s %r is longer than 4 bytes" % (what, text))
    return raw.ljust(4, b"\0")


def sector_data(seed, layer_index, sector):
    """Deterministic, layer-tagged pseudo-random content of one sector."""
    tag = b"L%03dS%011x" % (layer_index % 1000, sector)
    key = b"vhdgen:%d:%d:%d" % (seed, layer_index, sector)
    return tag + hashlib.shake_128(key).digest(SECTOR - len(tag))


# ----------------------------------------------------------------- spec

SPEC_KEYS = {"size", "seed", "block_size", "creator", "layers"}
LAYER_KEYS = {"file", "type", "size", "block_size", "writes", "full_blocks",
              "layout", "locators", "parent", "parent_name",
              "parent_timestamp", "wrong_parent_id", "unique_id", "timestamp",
              "creator", "creator_version", "creator_os",
              "bad_footer_checksum", "bad_header_checksum", "expected"}
LOCATOR_KEYS = {"code", "path", "space", "space_in_sectors", "offset",
                "encoding"}


def check_keys(d, known, what):
    """Unknown keys are errors: a typo must not silently do nothing."""
    unknown = set(d) - known
    if unknown:
        raise SpecError("%s: unknown keys %s" % (what, sorted(unknown)))


class Layer:
    """One layer of the spec, validated, with everything the writers need."""

    def __init__(self, spec, index, raw, by_file, seed):
        self.index = index
        self.seed = seed
        self.raw = raw
        if not isinstance(raw, dict):
            raise SpecError("layer %d is not an object" % index)
        check_keys(raw, LAYER_KEYS, "layer %d" % index)
        self.file = self._req_str("file")
        self.type = raw.get("type", "dynamic")
        if self.type not in DISK_TYPES:
            raise SpecError("%s: unknown type %r" % (self.file, self.type))
        self.size = self._int(raw.get("size", spec.get("size")), "size")
        if self.size <= 0 or self.size % SECTOR:
            raise SpecError("%s: size %d is not a positive multiple of 512"
                            % (self.file, self.size))
        self.block_size = self._int(raw.get("block_size",
                                            spec.get("block_size", 2 << 20)),
                                    "block_size")
        if not is_power_of_two(self.block_size) or self.block_size < SECTOR:
            raise SpecError("%s: block_size %d is not a power of two >= 512"
                            % (self.file, self.block_size))
        self.sectors = self.size // SECTOR
        self.sectors_per_block = self.block_size // SECTOR
        self.blocks = div_round_up(self.size, self.block_size)

        self.held = self._parse_held()
        self.full_blocks = set(self._parse_full_blocks())
        self.layout = self._parse_layout()
        self.parent = self._parse_parent(by_file)
        self.locators = self._parse_locators()
        self._parse_identity(spec)

    # --- small validators
    def _req_str(self, key):
        value = self.raw.get(key)
        if not isinstance(value, str) or not value:
            raise SpecError("layer %d: %r must be a non-empty string"
                            % (self.index, key))
        return value

    def _int(self, value, what):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError("layer %d: %s must be an integer, got %r"
                            % (self.index, what, value))
        return value

    def _bool(self, d, key):
        value = d.get(key, False)
        if not isinstance(value, bool):
            raise SpecError("%s: %s must be true/false" % (self.file, key))
        return value

    # --- content
    def _parse_held(self):
        """sector -> fill byte (None = pseudo-random) for every held sector."""
        held = {}
        for w in self.raw.get("writes", []):
            if not isinstance(w, list) or len(w) not in (2, 3):
                raise SpecError("%s: write %r is not [offset, length(, fill)]"
                                % (self.file, w))
            off, length = self._int(w[0], "offset"), self._int(w[1], "length")
            fill = None
            if len(w) == 3:
                fill = self._int(w[2], "fill")
                if not 0 <= fill <= 255:
                    raise SpecError("%s: fill %d not a byte" % (self.file, fill))
            if off < 0 or length < 0:
                raise SpecError("%s: negative write %r" % (self.file, w))
            first = off // SECTOR
            end = div_round_up(off + length, SECTOR)   # round outward
            if end > self.sectors:
                raise SpecError("%s: write %r goes past the end of the disk"
                                % (self.file, w))
            for s in range(first, end):
                held[s] = fill
        return held

    def _parse_full_blocks(self):
        blocks = self.raw.get("full_blocks", [])
        for b in blocks:
            if not 0 <= self._int(b, "full_blocks entry") < self.blocks:
                raise SpecError("%s: full block %d out of range (0..%d)"
                                % (self.file, b, self.blocks - 1))
            # Data for the whole block, unless a write already chose a fill.
            first = b * self.sectors_per_block
            for s in range(first, min(first + self.sectors_per_block,
                                      self.sectors)):
                self.held.setdefault(s, None)
        return blocks

    def _parse_layout(self):
        lay = dict(self.raw.get("layout", {}))
        check_keys(lay, {"bat_offset", "bat_extra_entries", "block_order",
                         "data_start", "gap_sectors", "align_data_4k",
                         "stale_fill", "footer511", "no_eof_footer"},
                   "%s: layout" % self.file)
        bat = lay.get("bat_offset", METADATA_START)
        if bat != "after_locators":
            bat = self._int(bat, "bat_offset")
            if bat % SECTOR or bat < METADATA_START:
                raise SpecError("%s: bat_offset %d must be a multiple of 512 "
                                ">= %d" % (self.file, bat, METADATA_START))
        lay["bat_offset"] = bat
        lay["bat_extra_entries"] = self._int(lay.get("bat_extra_entries", 0),
                                             "bat_extra_entries")
        lay["block_order"] = lay.get("block_order", "ascending")
        if lay["block_order"] not in ("ascending", "reverse", "shuffle"):
            raise SpecError("%s: bad block_order %r"
                            % (self.file, lay["block_order"]))
        if "data_start" in lay:
            ds = self._int(lay["data_start"], "data_start")
            if ds % SECTOR:
                raise SpecError("%s: data_start must be a multiple of 512"
                                % self.file)
        lay["gap_sectors"] = self._int(lay.get("gap_sectors", 0), "gap_sectors")
        lay["stale_fill"] = self._int(lay.get("stale_fill", 0), "stale_fill")
        if not 0 <= lay["stale_fill"] <= 255:
            raise SpecError("%s: stale_fill must be a byte" % self.file)
        for key in ("align_data_4k", "footer511", "no_eof_footer"):
            lay[key] = self._bool(lay, key)
        if lay["no_eof_footer"] and self.type == "fixed":
            raise SpecError("%s: no_eof_footer makes no sense for a fixed disk"
                            % self.file)
        if lay["no_eof_footer"] and lay["footer511"]:
            raise SpecError("%s: footer511 and no_eof_footer conflict"
                            % self.file)
        return lay

    # --- chain
    def _parse_parent(self, by_file):
        if self.type != "differencing":
            for key in ("parent", "parent_name", "locators", "wrong_parent_id"):
                if key in self.raw:
                    raise SpecError("%s: %r is only for differencing layers"
                                    % (self.file, key))
            return None
        name = self.raw.get("parent")
        if name is None:
            if not by_file:
                raise SpecError("%s: differencing layer has no earlier layer "
                                "to be its parent" % self.file)
            return list(by_file.values())[-1]
        if name not in by_file:
            raise SpecError("%s: parent %r is not an earlier layer"
                            % (self.file, name))
        return by_file[name]

    def _parse_locators(self):
        locs = []
        for loc in self.raw.get("locators", []):
            if not isinstance(loc, dict):
                raise SpecError("%s: locator %r is not an object"
                                % (self.file, loc))
            check_keys(loc, LOCATOR_KEYS, "%s: locator" % self.file)
            code = loc.get("code")
            if not isinstance(code, str) or len(code) != 4:
                raise SpecError("%s: locator code %r must be 4 chars"
                                % (self.file, code))
            encoding = loc.get("encoding", LOCATOR_ENCODINGS.get(code))
            if encoding is None:
                raise SpecError("%s: locator %r needs an \"encoding\""
                                % (self.file, code))
            try:
                data = loc.get("path", "").encode(encoding)
            except (LookupError, UnicodeError) as e:
                raise SpecError("%s: locator %s: %s" % (self.file, code, e))
            space = loc.get("space", max(round_up(len(data), SECTOR), SECTOR))
            space = self._int(space, "locator space")
            if space % SECTOR or space < len(data):
                raise SpecError("%s: locator %s: space %d must be a multiple "
                                "of 512 holding %d bytes"
                                % (self.file, code, space, len(data)))
            offset = loc.get("offset")
            if offset is not None and (self._int(offset, "locator offset")
                                       % SECTOR):
                raise SpecError("%s: locator offset must be sector aligned"
                                % self.file)
            locs.append({"code": code, "data": data, "space": space,
                         "in_sectors": self._bool(loc, "space_in_sectors"),
                         "offset": offset})
        if len(locs) > 8:
            raise SpecError("%s: at most 8 locators" % self.file)
        return locs

    def _parse_identity(self, spec):
        raw = self.raw
        if "unique_id" in raw:
            try:
                self.unique_id = bytes.fromhex(raw["unique_id"])
            except (TypeError, ValueError):
                self.unique_id = b""
            if len(self.unique_id) != 16:
                raise SpecError("%s: unique_id must be 32 hex digits"
                                % self.file)
        else:
            self.unique_id = uuid.uuid4().bytes
        self.timestamp = self._int(raw.get("timestamp",
                                           int(time.time()) - VHD_EPOCH),
                                   "timestamp") & 0xFFFFFFFF
        self.creator = fourcc(raw.get("creator", spec.get("creator", "win ")),
                              "creator")
        self.creator_version = self._int(raw.get("creator_version",
                                                 0x000A0000), "creator_version")
        self.creator_os = fourcc(raw.get("creator_os", "Wi2k"), "creator_os")
        self.bad_footer_checksum = self._bool(raw, "bad_footer_checksum")
        self.bad_header_checksum = self._bool(raw, "bad_header_checksum")
        self.wrong_parent_id = self._bool(raw, "wrong_parent_id")
        self.parent_timestamp = self._int(raw.get("parent_timestamp", 0),
                                          "parent_timestamp")
        self.parent_name = None
        if self.parent is not None:
            self.parent_name = raw.get(
                "parent_name", os.path.basename(self.parent.file))
            if len(self.parent_name.encode("utf-16-be")) > 512:
                raise SpecError("%s: parent_name longer than 256 UTF-16 units"
                                % self.file)
        self.expected = raw.get("expected")

    # --- content queries
    def sector_bytes(self, sector):
        """The bytes this layer stores for a held sector."""
        fill = self.held[sector]
        if fill is None:
            return sector_data(self.seed, self.index, sector)
        return bytes([fill]) * SECTOR

    def allocated_blocks(self):
        """Blocks with at least one held sector (others stay unallocated)."""
        blocks = {s // self.sectors_per_block for s in self.held}
        return sorted(blocks | self.full_blocks)

    def chain(self):
        """This layer, its parent, ..., down to the first non-differencing."""
        out, layer = [], self
        while layer is not None:
            out.append(layer)
            layer = layer.parent
        return out


def load_spec(path):
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise SpecError("cannot read spec %s: %s" % (path, e))
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) \
            or not spec["layers"]:
        raise SpecError("spec needs a non-empty \"layers\" list")
    check_keys(spec, SPEC_KEYS, "spec")
    seed = spec.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError("seed must be an integer")
    by_file = {}
    for i, raw in enumerate(spec["layers"]):
        layer = Layer(spec, i, raw, by_file, seed)
        if layer.file in by_file or layer.file in ("expected.raw",
                                                    "manifest.json"):
            raise SpecError("duplicate or reserved file name %r" % layer.file)
        by_file[layer.file] = layer
    return spec, list(by_file.values())


# ----------------------------------------------------------------- structures

def build_footer(layer, data_offset):
    fields = [b"conectix", 2, 0x00010000, data_offset, layer.timestamp,
              layer.creator, layer.creator_version, layer.creator_os,
              layer.size, layer.size, *chs_geometry(layer.size),
              DISK_TYPES[layer.type], 0, layer.unique_id, 0]
    buf = bytearray(struct.pack(FOOTER_FMT, *fields))
    checksum = vhd_checksum(buf) ^ (1 if layer.bad_footer_checksum else 0)
    struct.pack_into(">I", buf, 64, checksum)
    return bytes(buf)


def parent_id_for(layer):
    if layer.parent is None:
        return bytes(16)
    if layer.wrong_parent_id:
        # Guaranteed different from the real one.
        while True:
            wrong = uuid.uuid4().bytes
            if wrong != layer.parent.unique_id:
                return wrong
    return layer.parent.unique_id


def build_header(layer, bat_offset, bat_entries, placed_locators):
    entries = b""
    for loc, offset in placed_locators:
        space = loc["space"] // SECTOR if loc["in_sectors"] else loc["space"]
        entries += struct.pack(LOCATOR_FMT, loc["code"].encode("latin-1"),
                               space, len(loc["data"]), 0, offset)
    entries = entries.ljust(8 * 24, b"\0")
    name = (layer.parent_name or "").encode("utf-16-be")
    buf = bytearray(struct.pack(
        HEADER_FMT, b"cxsparse", ALL_ONES64, bat_offset, 0x00010000,
        bat_entries, layer.block_size, 0, parent_id_for(layer),
        layer.parent_timestamp, name, entries))
    checksum = vhd_checksum(buf) ^ (1 if layer.bad_header_checksum else 0)
    struct.pack_into(">I", buf, 36, checksum)
    return bytes(buf)


# ----------------------------------------------------------------- layout

class Extents:
    """Byte ranges already used in the metadata area, for first-fit placing."""

    def __init__(self):
        self.ranges = []

    def add(self, start, length, what):
        for s, e, w in self.ranges:
            if start < e and s < start + length:
                raise SpecError("%s [%d, %d) overlaps %s [%d, %d)"
                                % (what, start, start + length, w, s, e))
        self.ranges.append((start, start + length, what))

    def first_fit(self, length, lowest=METADATA_START):
        pos = lowest
        for s, e, _ in sorted(self.ranges):
            if pos + length <= s:
                break
            pos = max(pos, round_up(e, SECTOR))
        return pos

    def end(self):
        return max(e for _, e, _ in self.ranges)


def plan_sparse(layer):
    """Decide where every structure of a dynamic/differencing file goes."""
    lay = layer.layout
    bat_entries = layer.blocks + lay["bat_extra_entries"]
    bat_len = round_up(bat_entries * 4, SECTOR)
    used = Extents()
    used.add(0, METADATA_START, "footer copy + header")
    if lay["bat_offset"] != "after_locators":
        used.add(lay["bat_offset"], bat_len, "BAT")
    # Explicitly placed locators first, so first-fit ones avoid them.
    placed = [None] * len(layer.locators)
    for i, loc in enumerate(layer.locators):
        if loc["offset"] is not None:
            used.add(loc["offset"], loc["space"], "locator %s" % loc["code"])
            placed[i] = (loc, loc["offset"])
    for i, loc in enumerate(layer.locators):
        if placed[i] is None:
            off = used.first_fit(loc["space"])
            used.add(off, loc["space"], "locator %s" % loc["code"])
            placed[i] = (loc, off)
    bat_offset = lay["bat_offset"]
    if bat_offset == "after_locators":
        bat_offset = round_up(used.end(), SECTOR)
        used.add(bat_offset, bat_len, "BAT")

    data_start = round_up(used.end(), SECTOR)
    if "data_start" in lay:
        if lay["data_start"] < data_start:
            raise SpecError("%s: data_start %d overlaps metadata ending at %d"
                            % (layer.file, lay["data_start"], data_start))
        data_start = lay["data_start"]

    blocks = layer.allocated_blocks()
    if lay["block_order"] == "reverse":
        blocks.reverse()
    elif lay["block_order"] == "shuffle":
        random.Random("%d:%d" % (layer.seed, layer.index)).shuffle(blocks)

    bm = bitmap_bytes(layer.block_size)

    def next_slot(pos):
        # Windows style: pad so that the data area (after the bitmap) is 4K
        # aligned.  The EOF footer also lands on such a slot.
        if lay["align_data_4k"]:
            pos = round_up(pos + bm, 4096) - bm
        return pos

    positions = {}
    pos = data_start
    for b in blocks:
        pos = next_slot(pos)
        positions[b] = pos
        pos += bm + layer.block_size + lay["gap_sectors"] * SECTOR
    footer_offset = next_slot(pos)
    if footer_offset // SECTOR > UNALLOCATED - 1:
        raise SpecError("%s: file too large for 32-bit BAT entries"
                        % layer.file)
    return {"bat_offset": bat_offset, "bat_entries": bat_entries,
            "locators": placed, "positions": positions,
            "footer_offset": footer_offset, "bitmap_bytes": bm}


# ----------------------------------------------------------------- writers

def write_fixed(layer, path):
    footer = build_footer(layer, ALL_ONES64)
    if layer.layout["footer511"]:
        footer = footer[:511]        # the dropped byte is reserved (zero)
    with open(path, "wb") as f:
        f.truncate(layer.size + len(footer))
        for s in sorted(layer.held):
            f.seek(s * SECTOR)
            f.write(layer.sector_bytes(s))
        f.seek(layer.size)
        f.write(footer)


def block_image(layer, block, bm):
    """Bitmap + data of one allocated block, as bytes."""
    spb = layer.sectors_per_block
    first = block * spb
    bitmap = bytearray(bm)
    data = bytearray([layer.layout["stale_fill"]]) * layer.block_size
    if block in layer.full_blocks:
        for i in range(spb):
            bitmap[i // 8] |= 0x80 >> (i % 8)
        # Past the end of the disk there is nothing to hold: zeros.
        tail = max(0, first + spb - layer.sectors)
        if tail:
            data[(spb - tail) * SECTOR:] = bytes(tail * SECTOR)
    for i in range(spb):
        if first + i in layer.held:
            bitmap[i // 8] |= 0x80 >> (i % 8)       # MSB first
            data[i * SECTOR:(i + 1) * SECTOR] = layer.sector_bytes(first + i)
    return bytes(bitmap) + bytes(data)


def write_sparse(layer, path):
    plan = plan_sparse(layer)
    footer = build_footer(layer, HEADER_OFFSET)
    header = build_header(layer, plan["bat_offset"], plan["bat_entries"],
                          plan["locators"])
    bat = [UNALLOCATED] * plan["bat_entries"]
    for b, pos in plan["positions"].items():
        bat[b] = pos // SECTOR
    bat_raw = struct.pack(">%dI" % len(bat), *bat)
    bat_raw += b"\xff" * (round_up(len(bat_raw), SECTOR) - len(bat_raw))

    eof_footer = footer
    if layer.layout["footer511"]:
        eof_footer = footer[:511]
    elif layer.layout["no_eof_footer"]:
        eof_footer = b""

    with open(path, "wb") as f:
        f.truncate(plan["footer_offset"] + len(eof_footer))
        pieces = [(0, footer), (HEADER_OFFSET, header),
                  (plan["bat_offset"], bat_raw),
                  (plan["footer_offset"], eof_footer)]
        pieces += [(off, loc["data"]) for loc, off in plan["locators"]]
        for off, buf in pieces:
            f.seek(off)
            f.write(buf)
        for b, pos in plan["positions"].items():
            f.seek(pos)
            f.write(block_image(layer, b, plan["bitmap_bytes"]))
    return plan


# ----------------------------------------------------------------- model

def model_owners(layer):
    """sector -> the layer whose data the chain of `layer` shows there.

    Painting from the base up makes the layer nearest the top win.  The
    base (fixed or dynamic) ends the chain, so sectors nobody holds are
    missing from the result and read as zero."""
    owners = {}
    for lay in reversed(layer.chain()):          # base first, top last
        for s in lay.held:
            owners[s] = lay
    return owners


def write_expected(layer, path):
    owners = model_owners(layer)
    with open(path, "wb") as f:
        f.truncate(layer.size)
        for s in sorted(owners):
            if s < layer.sectors:
                f.seek(s * SECTOR)
                f.write(owners[s].sector_bytes(s))


def runs(sectors):
    """Sorted sector numbers -> [[first, count], ...] of consecutive runs."""
    out = []
    for s in sorted(sectors):
        if out and out[-1][0] + out[-1][1] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return out


def manifest_entry(layer, plan):
    """What a test may want to know about a layer without parsing it."""
    entry = {
        "file": layer.file, "index": layer.index, "type": layer.type,
        "size": layer.size, "block_size": layer.block_size,
        "parent": layer.parent.file if layer.parent else None,
        "unique_id": layer.unique_id.hex(),
        "held": runs(layer.held),
        "stale_fill": layer.layout["stale_fill"],
    }
    if plan is not None:
        entry["bat_offset"] = plan["bat_offset"]
        entry["bat_entries"] = plan["bat_entries"]
        entry["blocks"] = {str(b): pos // SECTOR
                           for b, pos in sorted(plan["positions"].items())}
        entry["footer_offset"] = plan["footer_offset"]
    return entry


def cmd_make(spec_path, outdir):
    _, layers = load_spec(spec_path)
    manifest = {"top": layers[-1].file, "layers": []}
    for layer in layers:
        path = os.path.join(outdir, layer.file)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        plan = None
        if layer.type == "fixed":
            write_fixed(layer, path)
        else:
            plan = write_sparse(layer, path)
        manifest["layers"].append(manifest_entry(layer, plan))
        if layer.expected:
            path = os.path.join(outdir, layer.expected)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            write_expected(layer, path)
    write_expected(layers[-1], os.path.join(outdir, "expected.raw"))
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        # One layer per line: readable and still small for big "held" lists.
        f.write('{"top": %s, "layers": [\n' % json.dumps(manifest["top"]))
        f.write(",\n".join(json.dumps(e) for e in manifest["layers"]))
        f.write("\n]}\n")


# ----------------------------------------------------------------- dump

def uuid_str(raw):
    return str(uuid.UUID(bytes=raw))


def ts_str(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts + VHD_EPOCH))


def parse_footer(buf):
    f = struct.unpack(FOOTER_FMT, buf)
    zeroed = bytearray(buf)
    zeroed[64:68] = bytes(4)
    keys = ["cookie", "features", "version", "data_offset", "timestamp",
            "creator", "creator_version", "creator_os", "original_size",
            "current_size", "cylinders", "heads", "sectors_per_track",
            "disk_type", "checksum", "unique_id", "saved_state"]
    d = dict(zip(keys, f))
    d["checksum_ok"] = vhd_checksum(zeroed) == d["checksum"]
    return d


def parse_header(buf):
    h = struct.unpack(HEADER_FMT, buf)
    keys = ["cookie", "data_offset", "table_offset", "version",
            "max_table_entries", "block_size", "checksum", "parent_id",
            "parent_timestamp", "parent_name", "locators"]
    d = dict(zip(keys, h))
    zeroed = bytearray(buf)
    zeroed[36:40] = bytes(4)
    d["checksum_ok"] = vhd_checksum(zeroed) == d["checksum"]
    return d


def read_footer(f, file_size):
    """Find the footer like a lenient reader: EOF-512, EOF-511, offset 0."""
    if file_size >= 512:
        f.seek(file_size - 512)
        buf = f.read(512)
        if buf[:8] == b"conectix":
            return buf, "eof"
    if file_size >= 511:
        f.seek(file_size - 511)
        buf = f.read(511)
        if buf[:8] == b"conectix":
            return buf + b"\0", "eof511"
    if file_size >= 512:
        f.seek(0)
        buf = f.read(512)
        if buf[:8] == b"conectix":
            return buf, "offset0"
    raise SpecError("no VHD footer found")


def text(raw):
    return raw.rstrip(b"\0").decode("latin-1")


def decode_locator(code, data):
    enc = LOCATOR_ENCODINGS.get(code)
    if enc is None:
        return data.hex()
    return data.decode(enc, errors="replace")


def count_bits(buf):
    return sum(bin(b).count("1") for b in buf)


def dump_info(path):
    """Everything dump prints, as a JSON-able dict."""
    size = os.path.getsize(path)
    info = {"file": path, "file_size": size}
    with open(path, "rb") as f:
        fbuf, source = read_footer(f, size)
        ft = parse_footer(fbuf)
        info["footer_source"] = source
        info["footer"] = {
            "cookie": text(ft["cookie"]),
            "features": ft["features"], "version": "0x%08x" % ft["version"],
            "data_offset": "0x%x" % ft["data_offset"],
            "timestamp": ft["timestamp"], "time": ts_str(ft["timestamp"]),
            "creator": ft["creator"].decode("latin-1"),
            "creator_version": "0x%08x" % ft["creator_version"],
            "creator_os": ft["creator_os"].decode("latin-1"),
            "original_size": ft["original_size"],
            "current_size": ft["current_size"],
            "geometry": "%d/%d/%d" % (ft["cylinders"], ft["heads"],
                                      ft["sectors_per_track"]),
            "chs_size": ft["cylinders"] * ft["heads"]
            * ft["sectors_per_track"] * SECTOR,
            "spec_geometry": "%d/%d/%d" % chs_geometry(ft["current_size"]),
            "disk_type": DISK_TYPE_NAMES.get(ft["disk_type"],
                                             str(ft["disk_type"])),
            "checksum": "0x%08x" % ft["checksum"],
            "checksum_ok": ft["checksum_ok"],
            "unique_id": uuid_str(ft["unique_id"]),
            "saved_state": ft["saved_state"],
        }
        if ft["disk_type"] not in (3, 4):
            return info
        f.seek(0)
        copy = f.read(512)
        if source == "offset0":
            info["footer_copy_at_0"] = "used (no EOF footer)"
        elif copy == fbuf:
            info["footer_copy_at_0"] = "identical"
        else:
            info["footer_copy_at_0"] = ("differs" if copy[:8] == b"conectix"
                                        else "missing")
        f.seek(ft["data_offset"])
        hbuf = f.read(HEADER_SIZE)
        if len(hbuf) != HEADER_SIZE:
            raise SpecError("header at %d truncated" % ft["data_offset"])
        hd = parse_header(hbuf)
        info["header"] = dump_header(hd)
        info["locators"] = dump_locators(f, hd["locators"])
        info["bat"] = dump_bat(f, hd, ft["current_size"])
    return info


def dump_header(hd):
    return {
        "cookie": text(hd["cookie"]),
        "data_offset": "0x%x" % hd["data_offset"],
        "table_offset": hd["table_offset"],
        "version": "0x%08x" % hd["version"],
        "max_table_entries": hd["max_table_entries"],
        "block_size": hd["block_size"],
        "checksum": "0x%08x" % hd["checksum"],
        "checksum_ok": hd["checksum_ok"],
        "parent_id": uuid_str(hd["parent_id"]),
        "parent_timestamp": hd["parent_timestamp"],
        "parent_name": hd["parent_name"].decode("utf-16-be", errors="replace")
        .rstrip("\0"),
    }


def dump_locators(f, raw):
    out = []
    for slot in range(8):
        code, space, length, _, offset = struct.unpack_from(LOCATOR_FMT, raw,
                                                            slot * 24)
        if code == bytes(4):
            continue
        f.seek(offset)
        data = f.read(length)
        out.append({"slot": slot, "code": code.decode("latin-1"),
                    "space": space, "length": length, "offset": offset,
                    "path": decode_locator(code.decode("latin-1"), data)})
    return out


def dump_bat(f, hd, current_size):
    n, bs = hd["max_table_entries"], hd["block_size"]
    if hd["table_offset"] + n * 4 > os.fstat(f.fileno()).st_size:
        raise SpecError("BAT (%d entries at %d) extends past end of file"
                        % (n, hd["table_offset"]))
    f.seek(hd["table_offset"])
    raw = f.read(n * 4)
    if len(raw) != n * 4:
        raise SpecError("BAT truncated")
    entries = struct.unpack(">%dI" % n, raw)
    used = div_round_up(current_size, bs) if bs else 0
    bm = bitmap_bytes(bs) if is_power_of_two(bs) else SECTOR
    blocks = []
    for i, e in enumerate(entries):
        if e == UNALLOCATED:
            continue
        f.seek(e * SECTOR)
        bits = count_bits(f.read(bm)[:div_round_up(bs // SECTOR, 8)])
        blocks.append({"index": i, "sector": e, "bits_set": bits,
                       "beyond_disk": i >= used})
    return {"entries": n, "entries_for_size": used,
            "allocated": len(blocks), "blocks": blocks}


def print_info(info):
    print("file: %s (%d bytes)" % (info["file"], info["file_size"]))
    print("footer_source: %s" % info["footer_source"])
    for k, v in info["footer"].items():
        print("footer.%s: %s" % (k, v))
    if "header" not in info:
        return
    print("footer_copy_at_0: %s" % info["footer_copy_at_0"])
    for k, v in info["header"].items():
        print("header.%s: %s" % (k, v))
    for loc in info["locators"]:
        print("locator[%d]: %s space=%d length=%d offset=%d path=%r"
              % (loc["slot"], loc["code"], loc["space"], loc["length"],
                 loc["offset"], loc["path"]))
    bat = info["bat"]
    print("bat.entries: %d (needed for size: %d)"
          % (bat["entries"], bat["entries_for_size"]))
    print("bat.allocated: %d" % bat["allocated"])
    for b in bat["blocks"]:
        print("bat[%d]: sector %d, %d bitmap bits set%s"
              % (b["index"], b["sector"], b["bits_set"],
                 " (beyond disk)" if b["beyond_disk"] else ""))


# ----------------------------------------------------------------- main

USAGE = """usage: vhdgen.py make SPEC.json OUTDIR
       vhdgen.py dump [--json] FILE"""


def main(argv):
    try:
        if len(argv) == 3 and argv[0] == "make":
            cmd_make(argv[1], argv[2])
        elif len(argv) in (2, 3) and argv[0] == "dump":
            as_json = argv[1] == "--json"
            if as_json != (len(argv) == 3):
                raise SpecError(USAGE)
            info = dump_info(argv[-1])
            if as_json:
                print(json.dumps(info, indent=2))
            else:
                print_info(info)
        else:
            print(USAGE, file=sys.stderr)
            return 1
    except SpecError as e:
        print("vhdgen: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError, OverflowError, struct.error) as e:
        # ValueError etc.: malformed numbers in a foreign file being dumped.
        print("vhdgen: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
