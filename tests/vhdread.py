#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""vhdread.py - independent reader of a VHD chain (test oracle).

  vhdread.py OUT.raw TOP.vhd [PARENT.vhd ...]

Writes the guest view of TOP over its parents, named explicitly (no
locator search), to OUT.raw.  Only the footer, dynamic header, BAT and
sector bitmaps are used, decoded by tests/vhdgen.py's parsers (written
from the format description, not from the project's C code), so that
vhdtool compact's results are read by something other than what wrote
them.  A fixed base is read as is; sectors no layer holds read as
zeros.  Sizes: the top's current size.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdgen  # noqa: E402


class Layer:
    def __init__(self, path):
        self.f = open(path, "rb")
        size = os.fstat(self.f.fileno()).st_size
        raw, _ = vhdgen.read_footer(self.f, size)
        self.footer = vhdgen.parse_footer(raw)
        self.type = self.footer["disk_type"]
        self.size = self.footer["current_size"]
        if self.type == 2:
            return
        self.f.seek(self.footer["data_offset"])
        self.header = vhdgen.parse_header(self.f.read(1024))
        self.block_size = self.header["block_size"]
        n = self.header["max_table_entries"]
        self.f.seek(self.header["table_offset"])
        self.bat = struct.unpack(">%dI" % n, self.f.read(4 * n))
        self.bitmap_bytes = vhdgen.round_up(self.block_size // 512 // 8, 512)

    def read_block(self, b):
        """(bitmap, data) of block b, or None when unallocated."""
        entry = self.bat[b]
        if entry == 0xFFFFFFFF:
            return None
        self.f.seek(entry * 512)
        bm = self.f.read(self.bitmap_bytes)
        data = self.f.read(self.block_size)
        return bm, data.ljust(self.block_size, b"\0")

    def sector(self, s):
        """The 512 bytes of sector s, or None when not held here."""
        if self.type == 2:
            self.f.seek(s * 512)
            return self.f.read(512)
        spb = self.block_size // 512
        b = s // spb
        if getattr(self, "_cached", (None,))[0] != b:
            self._cached = (b, self.read_block(b))
        held = self._cached[1]
        if held is None:
            return None
        bm, data = held
        rel = s % spb
        if not bm[rel // 8] & (0x80 >> (rel % 8)):
            return None
        return data[rel * 512:(rel + 1) * 512]


ZERO = bytes(512)


def main():
    out, paths = sys.argv[1], sys.argv[2:]
    layers = [Layer(p) for p in paths]
    size = layers[0].size
    with open(out, "wb") as o:
        o.truncate(size)
        for s in range(size // 512):
            for lay in layers:
                data = lay.sector(s)
                if data is not None:
                    break
                if lay.type == 3:       # dynamic: the chain ends here
                    break
            if data is not None and data != ZERO:
                o.seek(s * 512)
                o.write(data)


if __name__ == "__main__":
    main()
