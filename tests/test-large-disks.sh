#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Disks larger than 4 GiB, up to the format's maximum, through every
# client that asks for block status (nbdinfo --map, --map --totals,
# qemu-img map, nbdcopy, raw block status of every request shape in
# tests/bsprobe.py), served by the plugin, through the overlay filter,
# and with nbdkit's own filters stacked on top.
#
# Before the fix, nbdinfo --map killed nbdkit (SIGABRT in nbdkit
# 1.32's extents_to_block_descriptors) on any disk over 4 GiB: the
# plugin reported extents past the end of the request, nbdkit merged
# them into one longer than 4 GiB, and a request of 0xFFFFFFFF bytes
# then trips its assertion.  And a REQ_ONE answer was cut to 1 byte,
# so qemu-img map through nbdkit's cache filter crawled.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

for prog in nbdinfo nbdcopy qemu-img; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

G=$((1024 ** 3))
M=$((1024 ** 2))
MAX=$((2040 * G))
# probe DATA_RANGES: the --run command that checks every request shape.
probe () {
  printf '/usr/bin/python3 %q "$uri" %q' "$top_srcdir/tests/bsprobe.py" "$1"
}

# ---------------------------------------------------------------- disks

# empty.vhd: dynamic, 5 GiB, nothing allocated (one hole of 5 GiB).
check "create a 5 GiB empty dynamic disk" \
  "$VHDTOOL" create -t dynamic "$tmp/empty.vhd" 5G
# fixed.vhd: fixed, 4 GiB + 1 MiB: one data run longer than 4 GiB.
check "create a fixed disk of 4 GiB + 1 MiB" \
  "$VHDTOOL" create -t fixed "$tmp/fixed.vhd" 4097M
# max.vhd: dynamic, 2040 GiB (the format's maximum), whole 2 MiB blocks
# written at 0, across the 4 GiB boundary, at 100 GiB and at the very
# end; holes of hundreds of GiB between.
check "create a 2040 GiB dynamic disk" "$VHDTOOL" create "$tmp/max.vhd" 2040G
max_data="0:2*M,4*G-2*M:4*G+2*M,100*G:100*G+2*M,SIZE-2*M:SIZE"
check "write whole blocks into the 2040 GiB disk" \
  serve "$tmp/max.vhd" -- "nbdsh -u \"\$uri\" -c '
for off in (0, $((4 * G - 2 * M)), $((4 * G)), $((100 * G)), $((MAX - 2 * M))):
    h.pwrite(b\"D\" * $((2 * M)), off)
h.flush()'"
# child.vhd: differencing child of max.vhd with blocks of its own at
# 1 TiB and over the parent's block at 100 GiB: data from two layers.
check "create a differencing child of the 2040 GiB disk" \
  "$VHDTOOL" create -p "$tmp/max.vhd" "$tmp/child.vhd"
child_data="0:2*M,4*G-2*M:4*G+2*M,100*G:100*G+2*M,1024*G:1024*G+2*M,SIZE-2*M:SIZE"
check "write a block into the child" \
  serve "$tmp/child.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"C\" * $((2 * M)), $((1024 * G)))
h.pwrite(b\"C\" * $((2 * M)), $((100 * G)))
h.flush()'"
# fixchild.vhd: a child of the fixed disk: data everywhere, from two
# layers, one run of 4 GiB + 1 MiB.
check "create a differencing child of the fixed disk" \
  "$VHDTOOL" create -p "$tmp/fixed.vhd" "$tmp/fixchild.vhd"
check "write into the fixed disk's child" \
  serve "$tmp/fixchild.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"c\" * 4096, $((4 * G))); h.flush()'"
# fixed.vhd is 4 GiB of hole: hashing it would read 4 GiB, and nothing
# of it can change unnoticed but its footer and modification time.
snap "$tmp"/{empty,max,child,fixchild}.vhd
fixed_id () { stat -c '%s %Y' "$tmp/fixed.vhd"; tail -c 512 "$tmp/fixed.vhd" | sha256sum; }
fixed_before=$(fixed_id)

# ---------------------------------------------------------------- plugin

# nbdinfo --map shows exactly the layout (merged runs, types).
map_is () {
  local desc=$1 want=$2
  shift 2
  if captive "$@" -- 'nbdinfo --map "$uri"' > "$tmp/map" 2>&1 &&
     diff <(printf "$want") <(awk '{ print $1, $2, $3 }' "$tmp/map") \
       > "$tmp/.out" 2>&1; then
    pass "$desc"
  else
    fail "$desc"
    diag_file "$tmp/map"
  fi
}

map_is "nbdinfo --map of the 5 GiB empty disk: one 5 GiB hole" \
  "0 $((5 * G)) 3\n" -r "$PLUGIN" "$tmp/empty.vhd"
map_is "nbdinfo --map of the fixed disk: one data run of 4 GiB + 1 MiB" \
  "0 $((4097 * M)) 0\n" -r "$PLUGIN" "$tmp/fixed.vhd"
map_is "nbdinfo --map of the fixed disk's child: one data run" \
  "0 $((4097 * M)) 0\n" -r "$PLUGIN" "$tmp/fixchild.vhd"
map_is "nbdinfo --map of the 2040 GiB disk" \
"0 $((2 * M)) 0
$((2 * M)) $((4 * G - 4 * M)) 3
$((4 * G - 2 * M)) $((4 * M)) 0
$((4 * G + 2 * M)) $((96 * G - 2 * M)) 3
$((100 * G)) $((2 * M)) 0
$((100 * G + 2 * M)) $((MAX - 100 * G - 4 * M)) 3
$((MAX - 2 * M)) $((2 * M)) 0\n" -r "$PLUGIN" "$tmp/max.vhd"

for d in empty fixed max child fixchild; do
  case $d in
    empty) want=none ;;
    fixed|fixchild) want=0:SIZE ;;
    max) want=$max_data ;;
    child) want=$child_data ;;
  esac
  check "$d.vhd: block status of every request shape (tests/bsprobe.py)" \
    serve -r "$tmp/$d.vhd" -- "$(probe "$want")"
  check "$d.vhd: nbdinfo --map --totals" \
    serve -r "$tmp/$d.vhd" -- 'nbdinfo --map --totals "$uri"'
done

# qemu-img map sees the same data ranges (its own request shapes).
qemu_map_is () {
  local desc=$1 want=$2
  shift 2
  if captive "$@" -- 'qemu-img map -f raw --output=json "$uri"' \
       > "$tmp/qmap" 2>&1 &&
     /usr/bin/python3 -c '
import json, sys
got = [(e["start"], e["start"] + e["length"])
       for e in json.load(open(sys.argv[1])) if e["data"]]
merged = []
for a, b in got:
    if merged and merged[-1][1] == a:
        merged[-1] = (merged[-1][0], b)
    else:
        merged.append((a, b))
want = [tuple(int(x) for x in r.split(":")) for r in sys.argv[2].split(",") if r]
sys.exit(0 if merged == want else "got %s, want %s" % (merged, want))
' "$tmp/qmap" "$want" > "$tmp/.out" 2>&1; then
    pass "$desc"
  else
    fail "$desc"
    diag_file "$tmp/.out"
    diag_file "$tmp/qmap"
  fi
}
qemu_map_is "qemu-img map of the 5 GiB empty disk: no data" "" \
  -r "$PLUGIN" "$tmp/empty.vhd"
qemu_map_is "qemu-img map of the 2040 GiB disk" \
  "0:$((2 * M)),$((4 * G - 2 * M)):$((4 * G + 2 * M)),$((100 * G)):$((100 * G + 2 * M)),$((MAX - 2 * M)):$MAX" \
  -r "$PLUGIN" "$tmp/max.vhd"

# nbdcopy walks the extents and reads only the data.
check "nbdcopy of the 2040 GiB child (reads its 10 MiB of data)" \
  serve -r "$tmp/child.vhd" -- 'nbdcopy "$uri" null:'
check "nbdcopy of the 5 GiB empty disk to a sparse file" \
  serve -r "$tmp/empty.vhd" -- "nbdcopy \"\$uri\" '$tmp/empty.raw'"
if [ "$(stat -c %s "$tmp/empty.raw")" = $((5 * G)) ] &&
   [ "$(du -k "$tmp/empty.raw" | cut -f1)" -lt 1024 ]; then
  pass "the copy is 5 GiB and sparse"
else
  fail "the copy: $(stat -c %s "$tmp/empty.raw") bytes, $(du -k "$tmp/empty.raw" | cut -f1) KiB used"
fi
rm -f "$tmp/empty.raw"

check "reads at the block boundaries of the child show the right layer" \
  serve -r "$tmp/child.vhd" -- "nbdsh -u \"\$uri\" -c '
assert h.pread(4096, $((4 * G - 2048))) == b\"D\" * 4096
assert h.pread(2, $((1024 * G - 1))) == b\"\\0C\"
assert h.pread(2, $((100 * G - 1))) == b\"\\0C\"
assert h.pread(1, $((MAX - 1))) == b\"D\"
assert h.pread(4096, $((2000 * G))) == bytes(4096)'"

# ---------------------------------------------------------------- overlay

# Through the overlay, with writes at unaligned offsets around 4 GiB and
# at the very end: the overlay's own ranges are data (whole sectors).
check "overlay over the 2040 GiB child: writes, then every request shape" \
  ovserve "$PLUGIN" "$tmp/child.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"o\" * 1000, $((3 * G + 100)))
h.zero(4096, $((4 * G - 2 * M)))
h.pwrite(b\"e\", $((MAX - 1)))' && $(probe "${child_data/4\*G-2\*M:/4*G-2*M+4096:},3*G:3*G+1536")"
check "overlay-scope=connection over the 5 GiB empty disk" \
  ovserve "$PLUGIN" "$tmp/empty.vhd" overlay-scope=connection -- \
  "$(probe none) && nbdinfo --map --totals \"\$uri\""
check "overlay over the fixed disk: nbdinfo --map, qemu-img map" \
  ovserve "$PLUGIN" "$tmp/fixed.vhd" -- \
  'nbdinfo --map "$uri" && qemu-img map -f raw "$uri"'

# ---------------------------------------------------------------- stacks

# nbdkit's own filters over the plugin and over the overlay.  Not cow:
# nbdkit 1.32's cow filter aborts the same way over its own memory
# plugin (nbdkit --filter=cow memory 5G, nbdinfo --map), which is not
# something the plugin below can avoid.
for f in cache blocksize readahead; do
  check "--filter=$f over the plugin: every request shape, qemu-img map" \
    captive --filter=$f "$PLUGIN" "$tmp/max.vhd" -- \
    "$(probe "$max_data") && qemu-img map -f raw \"\$uri\""
  check "--filter=$f over the overlay: nbdinfo --map, qemu-img map" \
    captive --filter=$f --filter="$FILTER" "$PLUGIN" "$tmp/max.vhd" -- \
    'nbdinfo --map "$uri" && qemu-img map -f raw "$uri"'
done

unchanged "no file was modified by the read-only runs and the overlay"
if [ "$(fixed_id)" = "$fixed_before" ]; then
  pass "fixed.vhd was not modified"
else
  fail "fixed.vhd was modified"
fi

done_testing
