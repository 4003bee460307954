# SPDX-License-Identifier: BSD-3-Clause
"""vhdxpatch.py - field-level patching of VHDX files for the malformed
corpus (tests/test-vhdx-malformed.sh).

Written from the format description (docs: vhdx-format.md sections 1-4),
like tests/vhdxgen.py and independently of lib/vhdx.  Every function
takes the file's path and rewrites bytes in place; fix=True recomputes
the CRC-32C of the structure patched (headers, region tables, log
entries), fix=False leaves it stale.  Python 3 standard library only.
"""

import os
import struct
import sys
import uuid

# Whole-file byte access, shared with the VHD patcher beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vhdpatch import rd, wr  # noqa: E402

MiB = 1 << 20


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc_table()


def crc32c(data, csum_at=None):
    """CRC-32C of data; the 4 bytes at csum_at count as zeros."""
    if csum_at is not None:
        data = bytes(data[:csum_at]) + bytes(4) + bytes(data[csum_at + 4:])
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def guid(text):
    """Stored (Windows layout) bytes of a GUID's text."""
    return uuid.UUID(text).bytes_le


def guid_text(b):
    return "{%s}" % uuid.UUID(bytes_le=bytes(b))


BAT = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMS = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
DISK_SIZE = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
DISK_ID = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
INCOMPLETE = guid("71CC85F0-1B69-4E28-9558-C3BF83AE75D3")

HEADER = (0x10000, 0x20000)
REGION = (0x30000, 0x40000)


# ------------------------------------------------------------ headers

def fix_header(f, slot):
    h = bytearray(rd(f, HEADER[slot], 4096))
    h[4:8] = struct.pack("<I", crc32c(h, 4))
    wr(f, HEADER[slot], h)


def header(f, at, data, fix=True, slots=(0, 1)):
    """Patch both headers (or those of slots) at field offset at."""
    for s in slots:
        wr(f, HEADER[s] + at, data)
        if fix:
            fix_header(f, s)


def header_field(f, slot, at, n):
    return rd(f, HEADER[slot] + at, n)


def current_header(f):
    """Slot (0 or 1) of the header with the higher sequence number."""
    s = [struct.unpack("<Q", header_field(f, i, 8, 8))[0] for i in (0, 1)]
    return 1 if s[1] > s[0] else 0


def data_write_guid(f):
    return bytes(header_field(f, current_header(f), 32, 16))


# ------------------------------------------------------------ region tables

def fix_region(f, table):
    t = bytearray(rd(f, REGION[table], 65536))
    t[4:8] = struct.pack("<I", crc32c(t, 4))
    wr(f, REGION[table], t)


def region(f, at, data, fix=True, tables=(0, 1)):
    for t in tables:
        wr(f, REGION[t] + at, data)
        if fix:
            fix_region(f, t)


def region_entries(f, table=0):
    t = rd(f, REGION[table], 65536)
    n = struct.unpack("<I", t[8:12])[0]
    out = []
    for i in range(min(n, 2047)):
        e = t[16 + 32 * i:48 + 32 * i]
        out.append((bytes(e[:16]),) + struct.unpack("<QII", e[16:32]))
    return out


def region_index(f, g):
    for i, e in enumerate(region_entries(f)):
        if e[0] == g:
            return i
    raise KeyError(guid_text(g))


def region_entry_at(f, g):
    """Table offset of the entry of region g."""
    return 16 + 32 * region_index(f, g)


def region_offset(f, g):
    return region_entries(f)[region_index(f, g)][1]


def bat_off(f):
    return region_offset(f, BAT)


def meta_off(f):
    return region_offset(f, METADATA)


# ------------------------------------------------------------ metadata

def items(f):
    m = meta_off(f)
    t = rd(f, m, 65536)
    n = struct.unpack("<H", t[10:12])[0]
    out = []
    for i in range(n):
        e = t[32 + 32 * i:64 + 32 * i]
        out.append((bytes(e[:16]),) + struct.unpack("<III", e[16:28]))
    return out


def item_index(f, g, user=False):
    for i, it in enumerate(items(f)):
        if it[0] == g and bool(it[3] & 1) == user:
            return i
    raise KeyError(guid_text(g))


def meta(f, at, data):
    """Patch the metadata region at offset at."""
    wr(f, meta_off(f) + at, data)


def item_entry_at(f, g):
    """Metadata-region offset of the table entry of item g."""
    return 32 + 32 * item_index(f, g)


def item_data(f, g, at, data):
    """Patch item g's data at offset at inside the item."""
    it = items(f)[item_index(f, g)]
    meta(f, it[1] + at, data)


def item_read(f, g):
    it = items(f)[item_index(f, g)]
    return rd(f, meta_off(f) + it[1], it[2])


# ------------------------------------------------------------ locator

def locator_entries(f):
    """[(key, value, entry_offset_in_item, ko, vo, kl, vl)]"""
    d = item_read(f, PARENT_LOCATOR)
    n = struct.unpack("<H", d[18:20])[0]
    out = []
    for i in range(n):
        ko, vo, kl, vl = struct.unpack("<IIHH", d[20 + 12 * i:32 + 12 * i])
        out.append((d[ko:ko + kl].decode("utf-16-le"),
                    d[vo:vo + vl].decode("utf-16-le"),
                    20 + 12 * i, ko, vo, kl, vl))
    return out


def locator_entry(f, key):
    for e in locator_entries(f):
        if e[0] == key:
            return e
    raise KeyError(key)


def set_locator_value(f, key, value):
    """Replace a value by one no longer than the stored one."""
    e = locator_entry(f, key)
    b = value.encode("utf-16-le")
    assert len(b) <= e[6], "value longer than the stored one"
    item_data(f, PARENT_LOCATOR, e[4], b)
    item_data(f, PARENT_LOCATOR, e[2] + 10, struct.pack("<H", len(b)))


def rename_locator_key(f, key, new):
    e = locator_entry(f, key)
    b = new.encode("utf-16-le")
    assert len(b) == e[5]
    item_data(f, PARENT_LOCATOR, e[3], b)


# ------------------------------------------------------------ BAT

def bat(f, i, v):
    wr(f, bat_off(f) + 8 * i, struct.pack("<Q", v))


def getbat(f, i):
    return struct.unpack("<Q", rd(f, bat_off(f) + 8 * i, 8))[0]


# ------------------------------------------------------------ log

def log_area(f):
    s = current_header(f)
    length, off = struct.unpack("<IQ", header_field(f, s, 68, 12))
    return off, length


def fix_log_entry(f, pos):
    """Recompute the CRC of the log entry at ring offset pos."""
    off, length = log_area(f)
    ring = bytearray(rd(f, off, length))
    n = struct.unpack("<I", ring[pos + 8:pos + 12])[0]
    e = bytearray((ring + ring)[pos:pos + n])
    wr(f, off + pos + 4, struct.pack("<I", crc32c(e, 4)))


def log_entries(f):
    """Ring offsets of the entry headers ('loge') in the log."""
    off, length = log_area(f)
    ring = rd(f, off, length)
    return [p for p in range(0, length, 4096) if ring[p:p + 4] == b"loge"]


def many_locator_keys(f, dup_last=True):
    """Rewrite the parent locator with its keys plus as many distinct
    one-character keys as fit (up to 65535 entries in all), the last a
    copy of the one before when dup_last; every value the
    parent_linkage one."""
    it = items(f)[item_index(f, PARENT_LOCATOR)]
    orig = item_read(f, PARENT_LOCATOR)
    ents = locator_entries(f)
    old_base = 20 + 12 * len(ents)
    chars = [c for c in range(0x100, 0xD800)] + list(range(0xE000, 0xFFFF))
    n = min(len(ents) + len(chars), 65535)
    chars = chars[:n - len(ents)]
    if dup_last:
        chars[-1] = chars[-2]
    base = 20 + 12 * n
    table = bytearray(orig[:18] + struct.pack("<H", n))
    for e in ents:
        table += struct.pack("<IIHH", e[3] - old_base + base,
                             e[4] - old_base + base, e[5], e[6])
    blob = bytearray(orig[old_base:])
    value = ents[0][4] - old_base + base
    for c in chars:
        table += struct.pack("<IIHH", base + len(blob), value, 2, 2)
        blob += struct.pack("<H", c)
    data = bytes(table + blob)
    assert it[1] + len(data) <= MiB
    meta(f, it[1], data)
    meta(f, item_entry_at(f, PARENT_LOCATOR) + 20, struct.pack("<I", len(data)))
    return chr(chars[-1])
