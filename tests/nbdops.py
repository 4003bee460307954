#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""nbdops.py [--trim-sectors] [--sparse] URI MODEL OPSFILE [MAPJSON]

Apply each line of OPSFILE to the NBD export at URI and to MODEL, a raw
file holding what the export must show; log the byte ranges written or
zeroed to MODEL.log (for extents checks).  With MAPJSON, also write the
export's allocation map as this connection sees it, in the form of
`nbdinfo --map --json`.  Numbers may be Python expressions using M, K
and SIZE.  Lines:

  p OFF LEN TAG      write a text pattern ("TAG" + absolute offset)
  w OFF LEN SEED     write pseudo-random bytes
  W OFF LEN SEED     same, with FUA
  r SEED N MAXLEN [LO HI]  N random writes (some 4 KiB aligned, most at
                     odd offsets and lengths) inside [LO, HI)
  z OFF LEN          zero            (model: zeros)
  Z OFF LEN          zero, FAST_ZERO (model: zeros)
  t OFF LEN          trim            (model: zeros; with
                     --trim-sectors, for the vhd plugin, whose trim
                     punches out whole sectors the top file holds:
                     read back at once, each whole sector of the range
                     must read as before or as zeros, partial sectors
                     as before, and the model takes what was read)
  f                  flush
  v                  compare the whole export with MODEL (also done at
                     the end).  --sparse, for disks of gigabytes: only
                     the 1 MiB pieces where MODEL has data (SEEK_DATA)
                     or the export reports an extent not flagged ZERO
                     are read and compared; the rest is zero on both
                     sides by the export's own account

Used by the shell tests; the system python has the nbd module.
"""
import nbd, os, random, sys
K = 1024; M = K * K
args = sys.argv[1:]
trim_sectors = "--trim-sectors" in args
sparse = "--sparse" in args
args = [x for x in args if x not in ("--trim-sectors", "--sparse")]
uri, model, opsfile = args[:3]
mapjson = args[3] if len(args) > 3 else None
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
SIZE = h.get_size()
mf = open(model, "r+b")
log = open(model + ".log", "a")
env = {"M": M, "K": K, "SIZE": SIZE}
def num(s): return int(eval(s, {}, env))

def pattern(tag, off, n):
    start = off - off % 32
    out = bytearray()
    a = start
    while a < off + n:
        out += ("%s%x" % (tag, a)).encode().ljust(31, b".") + b"\n"
        a += 32
    return bytes(out[off - start:off - start + n])

def write(off, data, flags=0):
    h.pwrite(data, off, flags)
    mf.seek(off); mf.write(data)
    log.write("w %d %d\n" % (off, len(data)))

def zero(off, n, how):
    if how == "t":
        h.trim(n, off)
        if trim_sectors:
            trimmed(off, n)
            return
    else:
        h.zero(n, off, nbd.CMD_FLAG_FAST_ZERO if how == "Z" else 0)
    mf.seek(off); mf.write(bytes(n))
    log.write("z %d %d\n" % (off, n))

def trimmed(off, n):
    """Check [off, off+n) after a trim: whole sectors old or zero,
    partial ones old; then the model takes what the disk shows."""
    S = 512
    mf.seek(off); old = mf.read(n)
    got = bytearray()
    for p in range(0, n, 4 * M):
        got += h.pread(min(4 * M, n - p), off + p)
    pos = 0
    while pos < n:
        sec_end = min(n, (off + pos) // S * S + S - off)
        o, g = old[pos:sec_end], bytes(got[pos:sec_end])
        whole = (off + pos) % S == 0 and sec_end - pos == S
        if g != o and not (whole and g == bytes(S)):
            sys.exit("trim at %d+%d: bytes at %d read %r, were %r"
                     % (off, n, off + pos, g[:16], o[:16]))
        pos = sec_end
    mf.seek(off); mf.write(got)
    log.write("t %d %d\n" % (off, n))

def pieces():
    """The 1 MiB pieces verify() reads: all, or (--sparse) those where
    the model or the export may hold data."""
    if not sparse:
        return range(0, SIZE, M)
    want = set()
    fd = mf.fileno()
    pos = 0
    while pos < SIZE:
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        if d >= SIZE:
            break
        e = min(os.lseek(fd, d, os.SEEK_HOLE), SIZE)
        want.update(range(d // M * M, e, M))
        pos = e
    seen = []
    def cb(meta, off, entries, err):
        p = off
        for i in range(0, len(entries), 2):
            if not entries[i + 1] & nbd.STATE_ZERO:
                want.update(range(p // M * M, min(p + entries[i], SIZE), M))
            p += entries[i]
        seen.append(p)
        return 0
    pos = 0
    while pos < SIZE:
        h.block_status(min(SIZE - pos, 1 << 30), pos, cb)
        pos = seen[-1]
    return sorted(want)

def verify():
    mf.flush()
    for off in pieces():
        n = min(M, SIZE - off)
        got = h.pread(n, off)
        mf.seek(off); exp = mf.read(n)
        if got != exp:
            i = next(i for i in range(n) if got[i] != exp[i])
            sys.exit("mismatch at offset %d: got %r expected %r"
                     % (off + i, bytes(got[i:i+16]), exp[i:i+16]))

for line in open(opsfile):
    a = line.split()
    if not a or a[0].startswith("#"):
        continue
    op = a[0]
    if op == "p":
        write(num(a[1]), pattern(a[3], num(a[1]), num(a[2])))
    elif op in "wW":
        write(num(a[1]), random.Random(num(a[3])).randbytes(num(a[2])),
              nbd.CMD_FLAG_FUA if op == "W" else 0)
    elif op == "r":
        rng = random.Random(num(a[1]))
        lo, hi = (num(a[4]), num(a[5])) if len(a) > 4 else (0, SIZE)
        for _ in range(num(a[2])):
            off = rng.randrange(lo, hi - 1)
            n = rng.randint(1, num(a[3]))
            if rng.random() < 0.3:
                off &= ~4095
                n = (n + 4095) & ~4095
            n = min(n, hi - off)
            write(off, rng.randbytes(n))
    elif op in "zZt":
        zero(num(a[1]), num(a[2]), op)
    elif op == "f":
        h.flush()
    elif op == "v":
        verify()
    else:
        sys.exit("bad op " + line)
h.flush()
verify()
if mapjson:
    # The map as this connection sees it, in nbdinfo --map --json's form.
    import json
    ext = []
    def cb(meta, off, entries, err):
        pos = off
        for i in range(0, len(entries), 2):
            ext.append({"offset": pos, "length": entries[i], "type": entries[i + 1]})
            pos += entries[i]
        return 0
    off = 0
    while off < SIZE:
        h.block_status(min(SIZE - off, 64 * M), off, cb)
        off = ext[-1]["offset"] + ext[-1]["length"]
    out = []
    for e in ext:
        e["length"] = min(e["length"], SIZE - e["offset"])
        if out and out[-1]["type"] == e["type"]:
            out[-1]["length"] += e["length"]
        else:
            out.append(e)
    json.dump(out, open(mapjson, "w"))
h.shutdown()
