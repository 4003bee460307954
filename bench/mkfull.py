#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Fully allocated, sparse VHD chains for the memory (peak RSS) benchmarks.

  bench/mkfull.py [options] DIR

Writes DIR/l0.vhd (dynamic) and DIR/l1.vhd .. DIR/l<DEPTH-1>.vhd
(differencing, each the child of the one before) directly, without
going through our library, so that nothing we benchmark builds its own
fixture.  The files are laid out as lib/create.c and lib/write.c lay
them out: footer copy at 0, dynamic header at 512, BAT at 1536, in a
child one W2ru locator (".\\l<k-1>.vhd", 4 KiB reserved) after the BAT,
then the blocks, each a one-sector bitmap followed by the 2 MiB of data,
placed so that every data area starts on a 4 KiB boundary (a block
takes 2 MiB + 4 KiB of the file), and the footer after the last block.
Creator "win ", CHS by the spec's algorithm.

What the layers hold (SIZE default 2040 GiB = 1,044,480 blocks):

  * EVERY BAT entry of EVERY layer is allocated: a reader has to read
    the sector bitmap of every layer for every block it resolves.
  * The data areas are never written: they are file holes and read as
    zeros.  Only bitmap sectors and metadata occupy disk.
  * "Fragmented" blocks, every FRAG-th block (block b with b % FRAG ==
    0; --frag 0: none): in every layer the bitmap holds runs of RUN
    sectors interleaved across the layers, layer k holding the sectors
    s with (s // RUN) % DEPTH == k.  With DEPTH 32, RUN 4 a block
    resolves into 1024 runs alternating between all 32 layers: the
    largest per-block resolution our plugin can be made to build (the
    idea of bench/run's chain-worst, on a huge disk).
  * The other blocks: the base (l0) bitmap is all ones with --base full
    (the block's data is in l0, so a read falls through all the
    children's empty bitmaps down to l0's data), all zeros with --base
    empty (nothing holds the block; it reads as zeros after every
    layer's bitmap was read).  The children's bitmaps there are zero.
  * --base fixed: l0 is a fixed disk instead (a sparse file of SIZE
    bytes and a footer; no disk used), which holds every sector: every
    block of the chain resolves to data (no "all zeros" shortcut can
    apply), after all the children's bitmaps were read, at no disk
    cost.  In the fragmented blocks l0 holds what no child holds (the
    share of "layer 0").

Why so few non-zero bitmaps: besides the 4 KiB each, every one is a
separate file extent (the 2 MiB data holes split them), and on a file
system mounted with "discard" (this machine's /) deleting a file costs
one synchronous discard per extent: ~10 minutes for a million
(measured: rm of one fully allocated 2040 GiB disk, 1,044,480 extents).

Disk: a non-zero bitmap sector costs one 4 KiB file-system block, an
all-zero one is left as a hole and costs nothing.  So a layer costs its
BAT (4 MiB at 2040 GiB) + 4 KiB per non-zero bitmap:
  --base full: l0 ~4.0 GiB; --base fixed or empty: l0 ~0 (+ 4 MiB of
  BAT if empty); each child 4 MiB + 4 KiB * blocks/FRAG
  --frag 64, DEPTH 32, 2040 GiB: 31 or 32 * 68 MiB ~ 2.1 GiB
  (bench/run's chain-full-2040g and tools-rss), + 4 GiB with --base full
A single fully allocated 2040 GiB disk (-d 1 --frag 0 --base full) is
4 GiB.  Apparent file sizes are ~2044 GiB each (the files are sparse:
cp --sparse=always, du, not ls).

--seed makes the unique ids reproducible: a chain and a base generated
separately with the same seed (--only-base) fit together, which lets
two chains share their upper layers (hard links) over two bases.
"""
import argparse
import hashlib
import os
import struct
import sys
import time

SECTOR = 512
BLOCK = 2 << 20
VHD_EPOCH = 946684800


def checksum(buf):
    return ~sum(buf) & 0xFFFFFFFF


def chs(size):
    t = min(size // SECTOR, 65535 * 16 * 255)
    if t >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = t // spt
    else:
        spt = 17
        cth = t // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = t // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = t // spt
    return cth // heads, heads, spt


def footer(size, disk_type, uid, ts):
    c, h, s = chs(size)
    f = bytearray(512)
    struct.pack_into(">8sIIQI4sI4sQQHBBI", f, 0, b"conectix", 2, 0x00010000,
                     512, ts, b"win ", 0x000A0000, b"Wi2k", size, size,
                     c, h, s, disk_type)
    f[68:84] = uid
    struct.pack_into(">I", f, 64, checksum(f))
    return bytes(f)


def header(entries, parent_uid, parent_ts, parent_name, loc):
    h = bytearray(1024)
    struct.pack_into(">8sQQIII", h, 0, b"cxsparse", 0xFFFFFFFFFFFFFFFF,
                     1536, 0x00010000, entries, BLOCK)
    if parent_uid:
        h[40:56] = parent_uid
        struct.pack_into(">I", h, 56, parent_ts)
        name = parent_name.encode("utf-16-be")
        h[64:64 + len(name)] = name
        code, space, length, off = loc
        struct.pack_into(">IIIIQ", h, 576, code, space, length, 0, off)
    struct.pack_into(">I", h, 36, checksum(h))
    return bytes(h)


def uid_of(seed, k):
    u = bytearray(hashlib.md5(("%s:%d" % (seed, k)).encode()).digest())
    u[6] = (u[6] & 0x0F) | 0x40     # RFC 4122 version 4, variant 1
    u[8] = (u[8] & 0x3F) | 0x80
    return bytes(u)


def frag_bitmap(k, depth, run):
    bm = bytearray(SECTOR)
    for s in range(BLOCK // SECTOR):
        if (s // run) % depth == k:
            bm[s >> 3] |= 0x80 >> (s & 7)
    return bytes(bm)


def write_layer(path, k, a, uid, parent_uid, ts):
    size = a.size
    n = size // BLOCK
    bat_bytes = (n * 4 + SECTOR - 1) // SECTOR * SECTOR
    meta_end = 1536 + bat_bytes
    loc = None
    pname = None
    if k > 0:
        pname = "l%d.vhd" % (k - 1)
        w2ru = (".\\" + pname).encode("utf-16-le")
        loc = (0x57327275, 4096, len(w2ru), meta_end)
        meta_end += 4096
    # First bitmap so that its data starts on 4 KiB; blocks every 2 MiB + 4 KiB.
    first = (meta_end + SECTOR + 4095) // 4096 * 4096 - SECTOR
    stride = BLOCK + 4096
    foot_off = first + (n - 1) * stride + SECTOR + BLOCK
    assert (foot_off // SECTOR) < 2 ** 32
    disk_type = 3 if k == 0 else 4
    if k == 0 and a.base == "fixed":
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size + SECTOR)
            f = bytearray(footer(size, 2, uid, ts))
            f[16:24] = b"\xff" * 8       # data offset: none
            f[64:68] = bytes(4)
            struct.pack_into(">I", f, 64, checksum(f))
            os.pwrite(fd, bytes(f), size)
        finally:
            os.close(fd)
        os.rename(path + ".tmp", path)
        return
    ft = footer(size, disk_type, uid, ts)
    hd = header(n, parent_uid, ts, pname, loc)
    bat = bytearray(b"\xff" * bat_bytes)
    struct.pack_into(">%dI" % n, bat, 0,
                     *range(first // SECTOR, first // SECTOR + n * (stride // SECTOR),
                            stride // SECTOR))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, foot_off + SECTOR)
        os.pwrite(fd, ft + hd, 0)
        os.pwrite(fd, bytes(bat), 1536)
        if loc:
            os.pwrite(fd, w2ru, loc[3])
        fb = frag_bitmap(k, a.depth, a.run) if a.frag else None
        ones = b"\xff" * SECTOR
        pw = os.pwrite
        if k == 0 and a.base == "full":
            # Every block: ones, but the fragmented ones get l0's share.
            for b in range(n):
                pw(fd, fb if fb and b % a.frag == 0 else ones, first + b * stride)
        elif fb:
            for b in range(0, n, a.frag):
                pw(fd, fb, first + b * stride)
        os.pwrite(fd, ft, foot_off)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s[-1].upper() in mult:
        return int(s[:-1]) * mult[s[-1].upper()]
    return int(s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("-s", "--size", default="2040G", type=parse_size,
                   help="virtual size, a multiple of 2 MiB (default 2040G)")
    p.add_argument("-d", "--depth", default=1, type=int,
                   help="number of layers (default 1: a single dynamic disk)")
    p.add_argument("--frag", default=0, type=int,
                   help="every FRAG-th block is fragmented (default 0: none)")
    p.add_argument("--run", default=4, type=int,
                   help="sectors per interleaved run (default 4)")
    p.add_argument("--base", default="full", choices=("full", "empty", "fixed"),
                   help="l0: dynamic with bitmaps all ones outside the "
                   "fragmented blocks (full, default) or all zeros (empty), "
                   "or a fixed disk (holding every sector)")
    p.add_argument("--seed", default=None,
                   help="seed of the unique ids (default: random)")
    p.add_argument("--only-base", action="store_true",
                   help="write l0.vhd only (with --seed: for an existing chain)")
    a = p.parse_args()
    if a.size % BLOCK or not 0 < a.size <= 2040 << 30:
        sys.exit("mkfull: size must be a multiple of 2 MiB, at most 2040 GiB")
    if a.depth < 1 or a.run < 1 or a.frag < 0:
        sys.exit("mkfull: bad depth, run or frag")
    seed = a.seed if a.seed is not None else os.urandom(8).hex()
    os.makedirs(a.dir, exist_ok=True)
    ts = int(time.time()) - VHD_EPOCH
    for k in range(1 if a.only_base else a.depth):
        write_layer(os.path.join(a.dir, "l%d.vhd" % k), k, a, uid_of(seed, k),
                    uid_of(seed, k - 1) if k else None, ts)


if __name__ == "__main__":
    main()
