#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Regenerate the seed corpus fuzz/corpus/TARGET/ (run from anywhere;
# needs a built tools/vhdtool).  Small disks with small blocks, so every
# seed is a few KiB to ~100 KiB and an iteration stays fast:
#   fuzz-open   single files: fixed, dynamic, differencing, every locator
#               kind, odd layouts (vhdgen.py), the small test images
#   fuzz-chain  containers (fuzz/common.h) of top a.vhd + parents b.vhd
#               (+ c.vhd), flags 0 and 5 (ignore checksums, write a copy)
#   fuzz-check  the single files, and the chains behind FUZZ_CHECK_MAGIC
#   fuzz-store  op sequences (fuzz/fuzz-store.c): small disks of odd
#               sizes, every block size, with and without a size limit
#               and failing reads from below
#   vhdx-*      (in fuzz-open, fuzz-chain, fuzz-check) VHDX inputs: the
#               template of fuzz/vhdx-template.h in each of its shapes
#               (dynamic, fixed, a 2- and 3-file chain, 4 KiB sectors,
#               live logs), unpatched and with a few patches
# "fuzz/mkseeds.sh fuzz-store" regenerates only the fuzz-store and VHDX
# seeds (no vhdtool needed, and the other corpora, whose files vary
# from run to run with UUIDs and timestamps, are left alone).
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
vhdtool=${VHDTOOL:-$top/tools/vhdtool}
gen="python3 $top/tests/vhdgen.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$top/fuzz/corpus

# ---- fuzz-store: the input format is described in fuzz/fuzz-store.c
mkdir -p "$out/fuzz-store"
python3 - "$out/fuzz-store" <<'PY'
import random, sys
out = sys.argv[1]

def header(size, bshift, limit=None, fail=0):
    lim = 0 if limit is None else 0x80 | (limit // 1000 - 1)
    return (size - 1).to_bytes(3, "little") + bytes([bshift, lim, fail])

def op(kind, omode, lmode, x, y, extra=b""):
    return (bytes([kind | omode << 3 | lmode << 5]) + x.to_bytes(3, "little")
            + y.to_bytes(3, "little") + extra)

def ops(rng, n, kinds="0123456701201711"):
    b = b""
    for _ in range(n):
        k = int(rng.choice(kinds))
        extra = b""
        if k in (0, 6):
            extra = bytes([rng.randrange(256)])
        elif k == 5:
            m = rng.randint(1, 64)
            extra = bytes([m]) + rng.randbytes(m)
        b += op(k, rng.randrange(4), rng.randrange(8), rng.randrange(1 << 24),
                rng.randrange(1 << 24), extra)
    return b

seeds = {
    # size, block shift, limit, fail every, ops, kinds
    "mixed-4k": (200000, 0, None, 0, 60, None),
    "big-64k": (393000, 4, None, 0, 50, "1711001233"),
    "limit-8k": (300000, 1, 41000, 0, 60, "0000561123"),
    "limit-odd": (77777, 2, 9000, 0, 50, None),
    "failing-below-16k": (100000, 2, None, 3, 50, None),
    "tail-32k": (5000, 3, None, 0, 40, None),
    "one-byte": (1, 0, None, 0, 10, None),
}
for i, (name, (size, bsh, lim, fail, n, kinds)) in enumerate(sorted(seeds.items())):
    rng = random.Random(i + 1)
    data = header(size, bsh, lim, fail) + ops(rng, n, kinds or "0123456701201711")
    open("%s/%s" % (out, name), "wb").write(data)
PY

# ---- VHDX inputs (fuzz/vhdx-template.h), deterministic
mkdir -p "$out/fuzz-open" "$out/fuzz-chain" "$out/fuzz-check"
python3 - "$out" <<'PY'
import struct, sys
out = sys.argv[1]

def rec(target, off, data, fix=False, file=0):
    return (bytes([target | (16 if fix else 0) | file << 5])
            + struct.pack("<I", off)[:3] + bytes([len(data)]) + data)

def seed(opt, *recs):
    return b"VHDXFUZZ" + bytes([opt]) + b"".join(recs)

# option bits: 0-1 shape, 2 4K sectors, 3 log in a, 4 logs in parents,
# 5 ignore checksums, 6 ignore id mismatch
shapes = {
    "dyn": 0, "fixed": 1, "diff": 2, "chain3": 3, "dyn-4k": 4,
    "diff-4k": 6, "chain3-4k": 7, "dyn-log": 8, "diff-log": 10,
    "chain3-logs": 27, "chain3-4k-logs": 31, "diff-ignore": 98,
}
patched = {
    # header 2 (current) sequence number lowered: header 1 wins
    "hdr-seq": seed(2, rec(2, 8, struct.pack("<Q", 3), fix=True)),
    # both headers' log version, CRC fixed
    "hdr-logver": seed(10, rec(13, 64, struct.pack("<H", 1), fix=True)),
    # region table 1 damaged: table 2 is used
    "rt1-bad": seed(2, rec(3, 8, struct.pack("<I", 9))),
    # BAT entry 1 of the child: fully present at 9 MiB, past EOF
    "bat-past-eof": seed(2, rec(8, 8, struct.pack("<Q", (9 << 20) | 6))),
    # metadata: the block size item says 2 MiB
    "meta-bs": seed(0, rec(6, 0, struct.pack("<I", 2 << 20))),
    # locator: relative_path's key length odd
    "loc-odd": seed(2, rec(7, 20 + 12 * 2 + 8, struct.pack("<H", 25))),
    # sector bitmap bits of block 0
    "sb-bits": seed(3, rec(9, 0, bytes(range(0, 256, 3)))),
    # log: the second entry's sequence number, CRC fixed (no sequence)
    "log-seq": seed(10, rec(10, 8192 + 16, struct.pack("<Q", 7), fix=True)),
    # log: a data sector's SequenceLow, CRC fixed
    "log-data": seed(8, rec(10, 4096 + 4092, b"\x01\x02\x03\x04", fix=True)),
    # the parent's DataWriteGuid changed: linkage mismatch
    "parent-dwg": seed(2, rec(13, 32, b"\xaa" * 16, fix=True, file=1)),
    # truncated to 5 MiB
    "trunc": seed(2, rec(12, 5 << 20, b"")),
}
def put(target, name, data):
    open("%s/%s/vhdx-%s" % (out, target, name), "wb").write(data)
for name, opt in shapes.items():
    for t in ("fuzz-chain", "fuzz-check"):
        put(t, name, seed(opt))
    if opt & 3 != 3:
        put("fuzz-open", name, seed(opt))
for name, data in patched.items():
    for t in ("fuzz-open", "fuzz-chain", "fuzz-check"):
        put(t, name, data)
PY
[ "${1:-}" = fuzz-store ] && exit 0

mkdir -p "$out/fuzz-open" "$out/fuzz-chain" "$out/fuzz-check"

# ---- single files
cd "$tmp"
"$vhdtool" create -t fixed fixed-64k.vhd 64K >/dev/null
"$vhdtool" create -t dynamic -b 4K dyn-1m-4k.vhd 1M >/dev/null
"$vhdtool" create -t dynamic -b 64K dyn-4m-64k.vhd 4M >/dev/null
"$vhdtool" create -p dyn-1m-4k.vhd diff-1m-4k.vhd >/dev/null
# The same pair under the container's names.
mkdir pair
"$vhdtool" create -t dynamic -b 4K pair/b.vhd 1M >/dev/null
"$vhdtool" create -p pair/b.vhd pair/a.vhd >/dev/null

spec() {  # spec NAME JSON: vhdgen.py make; keeps every layer
  mkdir -p "$tmp/g-$1"
  echo "$2" > "$tmp/$1.json"
  $gen make "$tmp/$1.json" "$tmp/g-$1" >/dev/null
}
spec chain2 '{"size": 65536, "block_size": 4096, "layers": [
  {"file": "b.vhd", "writes": [[0, 4096], [20480, 1024, 0]]},
  {"file": "a.vhd", "type": "differencing", "writes": [[512, 512], [8192, 6000]],
   "locators": [{"code": "W2ru", "path": ".\\b.vhd"},
                {"code": "Wi2r", "path": ".\\b.vhd"},
                {"code": "MacX", "path": "file://./b.vhd"}]}]}'
spec chain3 '{"size": 32768, "block_size": 4096, "layers": [
  {"file": "c.vhd", "type": "fixed", "writes": [[0, 32768]]},
  {"file": "b.vhd", "type": "differencing", "writes": [[4096, 4096, 0]],
   "locators": [{"code": "W2ru", "path": ".\\c.vhd"}]},
  {"file": "a.vhd", "type": "differencing", "writes": [[0, 1024]],
   "layout": {"block_order": "reverse", "gap_sectors": 1},
   "locators": [{"code": "W2ku", "path": "C:\\x\\b.vhd"},
                {"code": "W2ru", "path": ".\\b.vhd", "space_in_sectors": true}]}]}'
spec odd '{"size": 49152, "block_size": 8192, "layers": [
  {"file": "b.vhd", "full_blocks": [0, 5],
   "layout": {"bat_offset": "after_locators", "bat_extra_entries": 3,
              "align_data_4k": true, "stale_fill": 255}},
  {"file": "a.vhd", "type": "differencing", "writes": [[100, 10]],
   "layout": {"footer511": true},
   "locators": [{"code": "W2ru", "path": ".\\b.vhd"}]}]}'
spec nofooter '{"size": 16384, "block_size": 4096, "layers": [
  {"file": "a.vhd", "writes": [[0, 512]], "layout": {"no_eof_footer": true},
   "bad_header_checksum": true}]}'

for f in fixed-64k dyn-1m-4k dyn-4m-64k diff-1m-4k; do
  cp $f.vhd "$out/fuzz-open/$f.vhd"
done
for g in chain2 chain3 odd nofooter; do
  for f in g-$g/*.vhd; do
    cp "$f" "$out/fuzz-open/$g-$(basename "$f")"
  done
done

# ---- containers
pack() {  # pack OUT FLAGS PREFIX FILE...
  python3 - "$@" <<'PY'
import struct, sys
out, flags, prefix, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
b = prefix.encode() + bytes([flags])
for f in files:
    d = open(f, 'rb').read()
    b += struct.pack('<I', len(d)) + d
open(out, 'wb').write(b)
PY
}
pack "$out/fuzz-chain/diff-1m-4k" 0 "" pair/a.vhd pair/b.vhd
pack "$out/fuzz-chain/diff-1m-4k-w" 5 "" pair/a.vhd pair/b.vhd
pack "$out/fuzz-chain/chain2" 0 "" g-chain2/a.vhd g-chain2/b.vhd
pack "$out/fuzz-chain/chain2-w" 5 "" g-chain2/a.vhd g-chain2/b.vhd
pack "$out/fuzz-chain/chain3" 4 "" g-chain3/a.vhd g-chain3/b.vhd g-chain3/c.vhd
pack "$out/fuzz-chain/odd" 4 "" g-odd/a.vhd g-odd/b.vhd
pack "$out/fuzz-chain/dyn" 4 "" dyn-4m-64k.vhd
pack "$out/fuzz-chain/fixed" 4 "" fixed-64k.vhd
cp "$out"/fuzz-open/* "$out/fuzz-check/"
pack "$out/fuzz-check/chain2" 0 VHDFUZZ3 g-chain2/a.vhd g-chain2/b.vhd
pack "$out/fuzz-check/chain3" 0 VHDFUZZ3 g-chain3/a.vhd g-chain3/b.vhd g-chain3/c.vhd
pack "$out/fuzz-check/diff-1m-4k" 0 VHDFUZZ3 pair/a.vhd pair/b.vhd
du -sh "$out"/*
