#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# VHDX chains from the independent generator (tests/vhdxgen.py), each
# read through the plugin and vhdtool and compared byte for byte with
# the generator's own model (expected.raw): differencing chains to depth
# 16 with per-layer block sizes, every payload state, PARTIALLY_PRESENT
# with odd bitmap patterns, 4096-byte sectors, chunks past 4 GiB, pending
# logs (BAT, metadata, data, sector bitmap pages; wrapped, zero
# descriptors, torn, stale, truncated files), header and region table
# variants, moved chains, wrong linkage, mixed formats.  Every file is
# left unmodified.
. "${top_srcdir:-.}/tests/functions.sh"

d=$(cd "$tmp" && pwd -P)
n=0

# gen NAME SPEC-JSON: make the case in $d/NAME (one TAP check).
gen () {
  mkdir -p "$d/$1"
  printf '%s\n' "$2" > "$d/$1.json"
  vhdxgen_make "vhdxgen: $1" "$d/$1.json" "$d/$1"
}

# model NAME TOP [PLUGIN-ARGS...]: plugin and vhdtool convert show the
# model; vhdtool check is clean; extents never call data zero.
model () {
  local name=$1 top=$2
  shift 2
  snap "$d/$name"/*.vhdx
  reads_as "$name: plugin reads the model" "$d/$name/expected.raw" \
    "$d/$name/$top" "$@"
  rm -f "$d/$name/conv.raw"
  check "$name: vhdtool convert -t raw" \
    "$VHDTOOL" convert -t raw "$d/$name/$top" "$d/$name/conv.raw"
  check_same "$name: ... equals the model" "$d/$name/conv.raw" \
    "$d/$name/expected.raw"
  rm -f "$d/$name/conv.raw"
  serve -r "$d/$name/$top" "$@" -- 'nbdinfo --map --json "$uri"' \
    > "$d/$name/map.json" 2> "$tmp/.out"
  check "$name: extents reported as zero read as zeros in the model" \
    /usr/bin/python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
f = open(sys.argv[2], "rb")
end = 0
for e in m:
    assert e["offset"] == end, ("gap", e)
    end = e["offset"] + e["length"]
    if e["type"] & 2:
        f.seek(e["offset"])
        left = e["length"]
        while left:
            b = f.read(min(left, 1 << 20))
            assert b.count(0) == len(b), ("data in a zero extent", e)
            left -= len(b)
import os
assert end == os.path.getsize(sys.argv[2]), ("size", end)
' "$d/$name/map.json" "$d/$name/expected.raw"
  unchanged "$name: no file modified"
}

# randreads NAME TOP: 3000 reads of random offsets and lengths (unaligned
# heads and tails, one byte, whole blocks, the end of the disk), 16 in
# flight, against the model.
randreads () {
  serve -r "$d/$1/$2" -- '/usr/bin/python3 -c "
import random, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size = h.get_size()
model = open(sys.argv[2], \"rb\")
r = random.Random(99)
reqs = []
for i in range(3000):
    n = r.choice([1, 511, 512, 4095, 4096, 65537, 1 << 20, 3 << 20])
    off = r.choice([r.randrange(size), size - r.randrange(1, 70000),
                    r.randrange(size // 512) * 512])
    off = max(0, min(off, size - 1))
    reqs.append((off, min(n, size - off)))
bufs = {}
def done(i, err):
    return 1
inflight = []
for i, (off, n) in enumerate(reqs):
    b = nbd.Buffer(n)
    bufs[i] = b
    inflight.append(h.aio_pread(b, off))
    while h.aio_in_flight() >= 16:
        h.poll(-1)
while h.aio_in_flight() > 0:
    h.poll(-1)
for i, (off, n) in enumerate(reqs):
    model.seek(off)
    assert bufs[i].to_bytearray() == model.read(n), (off, n)
print(len(reqs), \"reads ok\")
" "$uri" '"$d/$1/expected.raw" > "$tmp/.out" 2>&1 &&
    pass "$1: 3000 random concurrent reads equal the model" ||
    { fail "$1: random reads"; diag_file "$tmp/.out"; }
}

# ------------------------------------------------------------ chains

# Depth 16, block sizes from 1 to 256 MiB per layer, a size that is not
# a multiple of any block size, unaligned writes, full blocks, and
# ZERO / UNMAPPED / UNDEFINED blocks in the middle hiding their parents.
/usr/bin/python3 - > "$d/deep.json" <<'PY'
import json, random
r = random.Random(16)
size = (96 << 20) + 7 * 512
bs = [1, 2, 32, 256, 4, 8, 1, 16, 2, 64, 1, 128, 4, 2, 1, 8]
layers = []
for i in range(16):
    b = bs[i] << 20
    l = {"file": "l%02d.vhdx" % i, "block_size": b,
         "type": "dynamic" if i == 0 else "differencing"}
    w = []
    for k in range(6):
        off = r.randrange(0, size - 70000)
        w.append([off, r.randrange(1, 70000)])
    w.append([size - 1000, 1000])
    l["writes"] = w
    if i in (5, 11):
        l["full_blocks"] = [min(1, (size - 1) // b)]
    if i in (6, 9, 13):
        # a dataless state, in a block no write of this layer touches
        nb = (size + b - 1) // b
        held = {o // b for o, n in w} | {(o + n - 1) // b for o, n in w}
        free = [k for k in range(nb) if k not in held]
        if free:
            l["states"] = {str(free[0]): ["zero", "unmapped", "undefined"][i % 3]}
    layers.append(l)
print(json.dumps({"size": size, "seed": 16, "layers": layers}))
PY
gen deep "$(cat "$d/deep.json")"
model deep l15.vhdx
randreads deep l15.vhdx

# 4096-byte logical sectors: bitmaps of one bit per 4 KiB, odd patterns.
gen sector4k '{ "size": 203423744, "seed": 4, "logical_sector_size": 4096,
  "physical_sector_size": 4096, "block_size": 1048576, "layers": [
  { "file": "base.vhdx", "writes": [[0, 1048576], [5000000, 30000]] },
  { "file": "mid.vhdx", "type": "differencing", "block_size": 2097152,
    "writes": [[4096, 4096], [12288, 4096], [20480, 8192], [36864, 4096],
               [203419648, 4096], [1048576, 1]] },
  { "file": "top.vhdx", "type": "differencing",
    "writes": [[0, 1], [8192, 4096], [200000000, 40960]],
    "states": {"3": "zero"} } ] }'
model sector4k top.vhdx
randreads sector4k top.vhdx

# Past the first chunk (4 GiB at 512-byte sectors): the interleaved
# sector-bitmap entries, and bitmap addressing by chunk.
gen chunks '{ "size": 10737418240, "seed": 5, "block_size": 1048576,
  "layers": [
  { "file": "base.vhdx", "writes": [[4294966272, 4096], [8589934080, 2048]] },
  { "file": "top.vhdx", "type": "differencing",
    "writes": [[4294967296, 512], [4295491584, 1536], [8589933568, 1024],
               [10737417728, 512]] } ] }'
model chunks top.vhdx

# Every dataless state, with soft anchors a reader must not follow;
# partially present blocks in a dynamic disk (read as present); qemu's
# "fixed" files whose entries are ZERO.
gen states '{ "size": 67108864, "seed": 6, "block_size": 2097152, "layers": [
  { "file": "base.vhdx", "writes": [[0, 67108864]] },
  { "file": "top.vhdx", "type": "differencing", "soft_anchor": true,
    "writes": [[4096, 512]],
    "states": {"1": "undefined", "2": "zero", "3": "unmapped",
               "4": "unmapped5", "5": "not_present"} } ] }'
model states top.vhdx
serve -r "$d/states/top.vhdx" -- 'nbdinfo --map "$uri"' > "$tmp/.out" 2>&1
out_has "extents: UNDEFINED, ZERO, UNMAPPED and state 5 report as zero" \
  "^ +2097152 +8388608 +[23] +(hole,)?zero"
gen partial-dynamic '{ "size": 16777216, "seed": 7, "block_size": 2097152,
  "layers": [ { "file": "d.vhdx", "writes": [[100000, 5000]],
                "partial_in_dynamic": [0, 3] } ] }'
model partial-dynamic d.vhdx
gen qemu-fixed '{ "size": 16777216, "seed": 8, "block_size": 2097152,
  "layers": [ { "file": "f.vhdx", "type": "fixed", "qemu_fixed": true,
                "writes": [[3000000, 7000]] } ] }'
model qemu-fixed f.vhdx

# Layout variants: regions anywhere, metadata first, qemu's item order,
# optional unknown and user items, a damaged header or region table
# (the other one is used), equal sequence numbers on identical headers.
gen layout '{ "size": 33554432, "seed": 9, "block_size": 1048576, "layers": [
  { "file": "base.vhdx", "writes": [[0, 9999]], "bat_offset": 9437184,
    "metadata_offset": 4194304, "log_offset": 6291456, "log_length": 2097152,
    "region_order": "metadata_first", "metadata_item_order": "qemu",
    "region_required": 0, "chs_item": true, "bad_header_crc": 2,
    "extra_metadata": [{"guid": "12345678-1234-1234-1234-123456789abc",
                        "flags": 0, "data_hex": "00ff"}],
    "user_metadata": [{"guid": "virtual_disk_size", "data_hex": "0000000000000001"}] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[5000000, 3333]],
    "bad_region_crc": 1, "block_order": "reverse" } ] }'
model layout top.vhdx
gen equal-seq '{ "size": 8388608, "seed": 10, "layers": [
  { "file": "e.vhdx", "writes": [[0, 4096]], "equal_seq": true,
    "bad_header_crc": 1 } ] }'
model equal-seq e.vhdx

# ------------------------------------------------------------ logs

for opts in '"changes": ["bat"]' \
            '"entries": 3, "changes": ["bat", "metadata", "data", "sb"]' \
            '"entries": 2, "changes": ["bat", "sb"], "wrap": true' \
            '"changes": ["bat", "data"], "zero_descriptor": true' \
            '"changes": ["bat"], "truncate": true' \
            '"entries": 2, "changes": ["bat", "metadata"], "torn": "crc"' \
            '"changes": ["bat", "sb"], "torn": "seq"' \
            '"entries": 2, "changes": ["bat"], "stale": true' \
            '"changes": ["bat", "data"], "tail_outside": true'; do
  n=$((n + 1))
  gen "log$n" '{ "size": 67108864, "seed": '$((20 + n))', "block_size": 2097152,
    "layers": [
    { "file": "base.vhdx", "writes": [[0, 300000], [40000000, 5000]] },
    { "file": "top.vhdx", "type": "differencing",
      "writes": [[1000, 2000], [9000000, 100000], [33554432, 4096]],
      "log": { '"$opts"' } } ] }'
  echo "$opts" > "$d/log$n/what"
  model "log$n" top.vhdx
done
randreads log2 top.vhdx
# A pending log in a parent too, and clean files with stale entries.
gen log-parent '{ "size": 33554432, "seed": 40, "block_size": 1048576,
  "layers": [
  { "file": "base.vhdx", "writes": [[0, 3000000]],
    "log": { "entries": 2, "changes": ["bat", "metadata"] } },
  { "file": "top.vhdx", "type": "differencing", "writes": [[1048576, 4096]],
    "log": { "stale_behind_zero_guid": true } } ] }'
model log-parent top.vhdx
serve -r "$d/log-parent/top.vhdx" -v -D vhd.verbose=1 -- true > "$tmp/.out" 2>&1
out_has "-D vhd.verbose=1 says what was replayed, in which file" \
  'base\.vhdx: log [0-9a-f-]+: replayed 2 entries \(sequence [0-9]+\.\.[0-9]+\) in memory'
check "vhdtool info shows the replayed log" \
  "$VHDTOOL" info "$d/log-parent/base.vhdx"
out_has "... its entries and LastFileOffset" \
  '^log: +replayed in memory: 2 entries, sequence [0-9]+\.\.[0-9]+, FlushedFileOffset [0-9]+, LastFileOffset [0-9]+'

# Logs that must make the file refused.
for bad in no_valid_entry flushed_beyond_eof; do
  gen "log-$bad" '{ "size": 8388608, "seed": 50, "layers": [
    { "file": "x.vhdx", "writes": [[0, 4096]],
      "log": { "changes": ["bat"], "'$bad'": true } } ] }'
  snap "$d/log-$bad/x.vhdx"
  case $bad in
    no_valid_entry) why='holds no valid sequence of its entries' ;;
    flushed_beyond_eof) why='shorter than the [0-9]+ its log says were durable' ;;
  esac
  check_fails "log $bad: refused, the file and the cause named" \
    "x\.vhdx: .*$why" \
    nbdkit -U "$(newsock)" -r "$PLUGIN" "$d/log-$bad/x.vhdx" --run true
  check_fails "log $bad: vhdtool check reports it" "\[log\] .*$why" \
    "$VHDTOOL" check "$d/log-$bad/x.vhdx"
  unchanged "log $bad: file not modified"
done

# ------------------------------------------------------------ parents

# A moved chain: found by relative_path; the parent moved elsewhere:
# found with parent-dir=; only an absolute Windows path and upper case.
gen moved '{ "size": 16777216, "seed": 60, "layers": [
  { "file": "base.vhdx", "writes": [[0, 65536]] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[4096, 512]] } ] }'
mv "$d/moved" "$d/moved-away"
mkdir "$d/moved"
mv "$d/moved-away/expected.raw" "$d/moved/"
mv "$d/moved-away"/*.vhdx "$d/moved/"
model moved top.vhdx
mkdir "$d/elsewhere"
mv "$d/moved/base.vhdx" "$d/elsewhere/"
check_fails "parent moved away: not found, what was tried listed" \
  'top\.vhdx: parent not found .*tried: .*moved/base\.vhdx' \
  nbdkit -U "$(newsock)" -r "$PLUGIN" "$d/moved/top.vhdx" --run true
reads_as "parent moved away: found with parent-dir=" \
  "$d/moved/expected.raw" "$d/moved/top.vhdx" parent-dir="$d/elsewhere"
gen abs-only '{ "size": 16777216, "seed": 61, "layers": [
  { "file": "Base.VHDX", "writes": [[0, 65536]] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[4096, 512]],
    "locator": { "relative_path": null, "volume_path": null,
                 "absolute_win32_path": "\\\\?\\D:\\VMs\\BASE.vhdx" } } ] }'
reads_as "only an extended absolute path, other case: found beside the child" \
  "$d/abs-only/expected.raw" "$d/abs-only/top.vhdx"

# Wrong linkage: refused, or read with ignore-id-mismatch=true; a
# match on parent_linkage2 is accepted (a merge in progress).
gen wrong-link '{ "size": 8388608, "seed": 62, "layers": [
  { "file": "base.vhdx", "writes": [[0, 65536]] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[4096, 512]],
    "locator": { "parent_linkage": "wrong" } } ] }'
check_fails "wrong parent_linkage: refused with both GUIDs" \
  'top\.vhdx: parent id mismatch: the child expects parent id [0-9a-f-]{36}, but .*base\.vhdx has id [0-9a-f-]{36}.*ignore-id-mismatch' \
  nbdkit -U "$(newsock)" -r "$PLUGIN" "$d/wrong-link/top.vhdx" --run true
reads_as "wrong parent_linkage: read with ignore-id-mismatch=true" \
  "$d/wrong-link/expected.raw" "$d/wrong-link/top.vhdx" ignore-id-mismatch=true
gen link2 '{ "size": 8388608, "seed": 63, "layers": [
  { "file": "base.vhdx", "writes": [[0, 65536]] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[4096, 512]],
    "locator": { "parent_linkage": "wrong", "parent_linkage2": "auto" } } ] }'
model link2 top.vhdx

# Formats never mix: a VHD where the VHDX child's parent should be; and
# parents whose logical sector size differs.
gen mixed '{ "size": 8388608, "seed": 64, "layers": [
  { "file": "base.vhdx", "writes": [[0, 65536]] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[4096, 512]] } ] }'
"$VHDTOOL" create -t dynamic "$d/mixed/base.vhd" 8M > /dev/null
mv "$d/mixed/base.vhd" "$d/mixed/base.vhdx"
check_fails "a VHD as a VHDX child's parent: refused, formats named" \
  'top\.vhdx: parent not found .*base\.vhdx is a VHD file but the child is VHDX \(a chain never mixes formats\)' \
  nbdkit -U "$(newsock)" -r "$PLUGIN" "$d/mixed/top.vhdx" --run true
check_fails "... also with ignore-id-mismatch=true" \
  'a chain never mixes formats' \
  nbdkit -U "$(newsock)" -r "$PLUGIN" "$d/mixed/top.vhdx" \
    ignore-id-mismatch=true --run true
gen ss '{ "size": 8388608, "seed": 65, "layers": [
  { "file": "base.vhdx", "writes": [[0, 65536]] },
  { "file": "top.vhdx", "type": "differencing", "writes": [[4096, 512]] } ] }'
guid=$(/usr/bin/python3 -c '
import json, sys
print(json.load(open(sys.argv[1]))["layers"][0]["data_write_guid"])
' "$d/ss/manifest.json")
gen ss4k '{ "size": 8388608, "seed": 66, "logical_sector_size": 4096,
  "layers": [ { "file": "base.vhdx", "writes": [[0, 4096]],
    "data_write_guid": "'"$guid"'" } ] }'
cp "$d/ss4k/base.vhdx" "$d/ss/base.vhdx"
check_fails "parent of another logical sector size: refused" \
  'top\.vhdx: logical sector size mismatch: the child has 512-byte sectors but its parent .*base\.vhdx has 4096-byte sectors' \
  nbdkit -U "$(newsock)" -r "$PLUGIN" "$d/ss/top.vhdx" --run true

# libvhdi (20210425) as a second reader, where it is right: a single
# dynamic VHDX past the first chunk.  Not for chains: measured here, its
# vhdimount serves a differencing VHDX chain as the bottom layer's
# content alone (the children's blocks, full or partial, never show).
gen libvhdi '{ "size": 6442450944, "seed": 70, "block_size": 1048576,
  "layers": [ { "file": "top.vhdx",
    "writes": [[0, 1048576], [500000000, 70000], [4294966272, 4096],
               [6442449920, 1024]] } ] }'
model libvhdi top.vhdx
if command -v vhdimount > /dev/null && [ -c /dev/fuse ]; then
  mnt="$tmp/mnt"
  mkdir "$mnt"
  cleanup_fn "umount '$mnt' 2>/dev/null || fusermount -u '$mnt' 2>/dev/null"
  if vhdimount "$d/libvhdi/top.vhdx" "$mnt" > "$tmp/.out" 2>&1; then
    check_same "libvhdi reads the dynamic VHDX as the model" \
      "$mnt/vhdi1" "$d/libvhdi/expected.raw"
    umount "$mnt" 2>/dev/null || fusermount -u "$mnt"
  else
    fail "vhdimount could not mount our generator's chain"
    diag_file "$tmp/.out"
  fi
fi

done_testing
