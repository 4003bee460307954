#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""vhdpatch.py COMMAND FILE [ARGS...]: change one on-disk field of a VHD
file, for the error-path tests (also imported by test-malformed.sh).  Standard library only, written from the
format description.  Footers are the EOF one and, when present, the copy
at offset 0; "set-*" commands recompute the checksum of the structure
they change, "flip" and "poke" deliberately do not.  See the command
list at the bottom.
"""
import os, struct, sys, uuid

def rd(f, off, n):
    with open(f, "rb") as fp:
        fp.seek(off)
        return fp.read(n)

def wr(f, off, data):
    with open(f, "r+b") as fp:
        fp.seek(off)
        fp.write(data)

def csum(b, at):
    b = bytearray(b)
    b[at:at + 4] = bytes(4)
    return ~sum(b) & 0xffffffff

def eof(f):
    return os.path.getsize(f) - 512

def footers(f):
    offs = [eof(f)]
    if rd(f, 0, 8) == b"conectix" and offs[0] > 0:
        offs.append(0)
    return offs

def hdr(f):
    return struct.unpack(">Q", rd(f, eof(f) + 16, 8))[0]

def patch_footer(f, at, data, where=None, fix=True):
    for fo in where if where is not None else footers(f):
        b = bytearray(rd(f, fo, 512))
        b[at:at + len(data)] = data
        if fix:
            b[64:68] = struct.pack(">I", csum(b, 64))
        wr(f, fo, bytes(b))

def patch_header(f, at, data, fix=True):
    ho = hdr(f)
    b = bytearray(rd(f, ho, 1024))
    b[at:at + len(data)] = data
    if fix:
        b[36:40] = struct.pack(">I", csum(b, 36))
    wr(f, ho, bytes(b))

def bat_off(f):
    return struct.unpack(">Q", rd(f, hdr(f) + 16, 8))[0]

def main():
    cmd, f, a = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "uid":
        print(uuid.UUID(bytes=rd(f, eof(f) + 68, 16)))
    elif cmd == "parent-id":
        print(uuid.UUID(bytes=rd(f, hdr(f) + 40, 16)))
    elif cmd == "set-parent-id":
        patch_header(f, 40, uuid.UUID(a[0]).bytes)
    elif cmd == "set-size":
        patch_footer(f, 48, struct.pack(">Q", int(a[0])))
    elif cmd == "set-creator":                 # 4 bytes, \0 allowed
        app = a[0].encode().replace(b"\\0", b"\0")
        if len(app) != 4:
            sys.exit("vhdpatch.py: a creator code is 4 bytes")
        patch_footer(f, 28, app)
    elif cmd == "set-geometry":                # cylinders heads sectors
        c, h, s = (int(x) for x in a[:3])
        patch_footer(f, 56, struct.pack(">HBB", c, h, s))
    elif cmd == "footer":                      # creator size C/H/S
        b = rd(f, eof(f), 512)
        c, h, s = struct.unpack(">HBB", b[56:60])
        print(b[28:32].decode("latin-1").replace("\0", "\\0"),
              struct.unpack(">Q", b[48:56])[0], "%d/%d/%d" % (c, h, s))
    elif cmd == "set-type":
        patch_footer(f, 60, struct.pack(">I", int(a[0])))
    elif cmd == "set-features":
        patch_footer(f, 8, struct.pack(">I", int(a[0], 0)))
    elif cmd == "set-copy-timestamp":          # only the footer copy at 0
        patch_footer(f, 24, struct.pack(">I", int(a[0])), where=[0])
    elif cmd == "set-header-data-offset":
        patch_header(f, 8, struct.pack(">Q", int(a[0], 0)))
    elif cmd == "set-locator-offset":          # slot, byte offset
        patch_header(f, 576 + 24 * int(a[0]) + 16, struct.pack(">Q", int(a[1])))
    elif cmd == "set-bat":
        wr(f, bat_off(f) + 4 * int(a[0]), struct.pack(">I", int(a[1], 0)))
    elif cmd == "bat":
        print(struct.unpack(">I", rd(f, bat_off(f) + 4 * int(a[0]), 4))[0])
    elif cmd == "flip":
        off = int(a[0])
        if off < 0:
            off += os.path.getsize(f)
        wr(f, off, bytes([rd(f, off, 1)[0] ^ 0xff]))
    else:
        sys.exit("vhdpatch.py: unknown command " + cmd)

if __name__ == "__main__":
    main()
