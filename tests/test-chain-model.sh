#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Chains written by an independent generator (tests/vhdgen.py, written
# from the format description, not from lib/) with many layouts, depths,
# block sizes and locator styles: what the plugin serves must equal the
# generator's model of the chain, byte for byte, for whole-disk copies
# and for reads at arbitrary offsets and lengths.
. "${top_srcdir:-.}/tests/functions.sh"

# make_case NAME: write spec $tmp/NAME.json (from stdin) and build it.
make_case () {
  cat > "$tmp/$1.json"
  $VHDGEN make "$tmp/$1.json" "$tmp/$1" > "$tmp/.gen" 2>&1 || {
    diag_file "$tmp/.gen"
    return 1
  }
}

# Random sector runs for a layer, as JSON: random_writes SEED COUNT SIZE MAXLEN
random_writes () {
  /usr/bin/python3 -c '
import json, random, sys
seed, count, size, maxlen = map(int, sys.argv[1:5])
r = random.Random(seed)
w = []
for _ in range(count):
    n = r.randrange(1, maxlen // 512 + 1) * 512
    off = r.randrange(0, (size - n) // 512 + 1) * 512
    w.append([off, n])
print(json.dumps(w))' "$@"
}

# compare_case NAME TOP [PLUGIN ARGS...]: whole-disk copy and random
# unaligned reads against expected.raw.
compare_case () {
  local name=$1 top=$2
  shift 2
  if ! (cd "$tmp/$name" && serve -r "$top" "$@" -- \
          'nbdcopy "$uri" "'"$tmp/$name/got.raw"'"') > "$tmp/.out" 2>&1; then
    fail "$name: serving failed"
    diag_file "$tmp/.out"
    return
  fi
  check_same "$name: whole disk equals the model" \
    "$tmp/$name/expected.raw" "$tmp/$name/got.raw"
  check "$name: 200 reads at odd offsets and lengths" \
    serve -r "$tmp/$name/$top" "$@" -- '/usr/bin/python3 -c "
import nbd, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
want = open(sys.argv[2], \"rb\").read()
r = random.Random(7)
for i in range(200):
    n = r.randrange(1, 300000)
    off = r.randrange(0, len(want) - n)
    got = h.pread(n, off)
    assert got == want[off:off + n], (off, n)
" "$uri" "'"$tmp/$name/expected.raw"'"'
}

size=$((12 * 1024 * 1024 + 7 * 512))       # partial last block

# 1. One dynamic disk, every layout oddity at once.
make_case odd-layout <<JSON
{ "size": $size, "seed": 3, "layers": [
  { "file": "d.vhd", "type": "dynamic", "block_size": 1048576,
    "writes": $(random_writes 1 40 $size 300000), "full_blocks": [0, 12],
    "layout": { "bat_offset": 8192, "bat_extra_entries": 300,
                "block_order": "shuffle", "gap_sectors": 5,
                "stale_fill": 170 } } ] }
JSON
compare_case odd-layout d.vhd

# 2. Windows-style layout (4 KiB-aligned data, footer where the next
#    bitmap goes), BAT after the locators, parent in another directory
#    found through a relative W2ru locator with "..\".
make_case windows-style <<JSON
{ "size": $size, "seed": 4, "layers": [
  { "file": "parents/base.vhd", "type": "dynamic",
    "writes": $(random_writes 2 30 $size 200000),
    "layout": { "align_data_4k": true } },
  { "file": "children/child.vhd", "type": "differencing",
    "writes": $(random_writes 3 60 $size 40000),
    "locators": [ { "code": "W2ku", "path": "C:\\\\nowhere\\\\base.vhd" },
                  { "code": "W2ru", "path": "..\\\\parents\\\\base.vhd",
                    "space": 65536 } ],
    "parent_name": "C:\\\\nowhere\\\\base.vhd",
    "layout": { "align_data_4k": true, "bat_offset": "after_locators",
                "stale_fill": 85 } } ] }
JSON
compare_case windows-style children/child.vhd

# 3. Fixed base under five differencing layers of different block sizes
#    (2 MiB, 512 KiB, 64 KiB, 4 KiB, 2 MiB), one locator style each:
#    W2ru, W2ku with a drive letter and wrong case, Wi2r, MacX URL,
#    parent name only (no locators at all).
make_case mixed <<JSON
{ "size": $size, "seed": 5, "layers": [
  { "file": "l0.vhd", "type": "fixed", "writes": [[0, $size]] },
  { "file": "l1.vhd", "type": "differencing", "block_size": 2097152,
    "writes": $(random_writes 11 40 $size 100000),
    "locators": [ { "code": "W2ru", "path": ".\\\\l0.vhd" } ] },
  { "file": "l2.vhd", "type": "differencing", "block_size": 524288,
    "writes": $(random_writes 12 40 $size 60000),
    "locators": [ { "code": "W2ku", "path": "D:\\\\VMs\\\\L1.VHD" } ] },
  { "file": "l3.vhd", "type": "differencing", "block_size": 65536,
    "writes": $(random_writes 13 60 $size 30000),
    "locators": [ { "code": "Wi2r", "path": ".\\\\l2.vhd",
                    "space_in_sectors": true } ] },
  { "file": "l4.vhd", "type": "differencing", "block_size": 4096,
    "writes": $(random_writes 14 80 $size 9000),
    "locators": [ { "code": "MacX", "path": "file://./l3.vhd" } ] },
  { "file": "l5.vhd", "type": "differencing", "block_size": 2097152,
    "writes": $(random_writes 15 30 $size 5000), "parent_name": "l4.vhd" }
] }
JSON
compare_case mixed l5.vhd

# 4. Zero writes in a child hide the parent; old 511-byte footer on the
#    base; the top has lost its EOF footer (copy at offset 0 only).
make_case footers <<JSON
{ "size": $size, "seed": 6, "layers": [
  { "file": "base.vhd", "type": "dynamic", "writes": [[0, $size]],
    "layout": { "footer511": true } },
  { "file": "top.vhd", "type": "differencing",
    "writes": [[4096, 1048576, 0], [5000000, 512, 0], [9000000, 70000]],
    "layout": { "no_eof_footer": true } } ] }
JSON
compare_case footers top.vhd

# 5. A 32-deep chain of checkpoint-shaped layers: each holds a few whole
#    blocks and scattered 4 KiB runs.
{
  echo "{ \"size\": $size, \"seed\": 8, \"layers\": ["
  echo "  { \"file\": \"c00.vhd\", \"type\": \"dynamic\", \"writes\": $(random_writes 100 20 $size 600000) }"
  for i in $(seq 1 31); do
    printf '  ,{ "file": "c%02d.vhd", "type": "differencing", "writes": %s, "full_blocks": [%d] }\n' \
      "$i" "$(random_writes $((100 + i)) 12 $size 4096)" $((i % 6))
  done
  echo "] }"
} | make_case deep32
compare_case deep32 c31.vhd

# 6. The same 32-deep chain with the parents found through parent-dir=
#    after the whole chain moved to a directory its locators do not name.
mkdir "$tmp/moved"
mv "$tmp"/deep32/c0*.vhd "$tmp"/deep32/c1*.vhd "$tmp"/deep32/c2*.vhd "$tmp/moved/"
check_fails "moved chain without hints: parent not found" \
  'parent not found' serve -r "$tmp/deep32/c31.vhd" -- true
compare_case deep32 c31.vhd parent-dir="$tmp/moved"

done_testing
