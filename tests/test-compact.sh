#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool compact (Optimize-VHD) on dynamic and differencing VHD and
# VHDX files made by the independent generators (tests/vhdgen.py,
# tests/vhdxgen.py) and by the plugin: zero blocks between data blocks,
# differencing blocks equal to their parent's data (released), zeros
# over parent data (must stay zeros) and blocks that differ.  The guest
# view is read before and after by readers that are not ours
# (qemu-img, tests/vhdread.py, vhdxgen.py read) and must not change;
# the file must shrink by what the released blocks held, parents must
# not change, and a compact killed (SIGKILL) at each of its steps must
# leave a file that reads the same, checks clean and compacts to the
# same size when run again.  Refusals: fixed disks, files in use.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in qemu-img $PY cmp; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
d=$(cd "$tmp" && pwd -P)
M=1048576
VHDREAD="$PY $top_srcdir/tests/vhdread.py"

size_of () { stat -c %s "$1"; }

# view OUT FILE [PARENT...]: FILE's guest view, read independently.
view () {
  local out=$1 file=$2
  shift 2
  case $file in
    *.vhdx) $VHDXGEN read "$file" "$out" ;;
    *) $VHDREAD "$out" "$file" "$@" ;;
  esac
}

# compact_ok DESC FILE RELEASED MOVED: compact succeeds, saying what it
# did, and the sizes it reports are the file's.
compact_ok () {
  local desc=$1 file=$2 rel=$3 mov=$4 before after
  before=$(size_of "$file")
  check "$desc: compact succeeds" "$VHDTOOL" compact "$file"
  after=$(size_of "$file")
  out_has "$desc: reports released $rel, moved $mov, $before → $after" \
    "^$(re "$file"): released $rel blocks, moved $mov, file $before → $after bytes \($((before - after)) reclaimed\)\$"
}

# same_view DESC EXPECTED FILE [PARENT...]
same_view () {
  local desc=$1 exp=$2
  shift 2
  rm -f "$d/.view"
  if view "$d/.view" "$@" > "$tmp/.vout" 2>&1 && cmp "$d/.view" "$exp" >> "$tmp/.vout" 2>&1; then
    pass "$desc"
  else
    fail "$desc"
    diag_file "$tmp/.vout"
  fi
}

# ------------------------------------------------------------ dynamic VHD
B=$((2 * M))
cat > "$d/dyn.json" <<EOF
{"size": $((32 * M)), "seed": 3, "layers": [{"file": "d.vhd", "type": "dynamic",
 "writes": [[0, $B, 0], [$B, 4096], [$((2 * B)), $B, 0], [$((3 * B)), 1000, 0],
            [$((4 * B)), 512], [$((5 * B)), 4096, 0], [$((15 * B)), 8192]],
 "layout": {"align_data_4k": true, "block_order": "shuffle"}}]}
EOF
vhdgen_make "dynamic VHD with zero blocks between data" "$d/dyn.json" "$d/dyn"
cp "$d/dyn/d.vhd" "$d/dyn.pristine"
qemu-img convert -O raw "$d/dyn/d.vhd" "$d/dyn/qemu-before.raw"
check "qemu-img reads it as the model" cmp "$d/dyn/qemu-before.raw" "$d/dyn/expected.raw"
check "info shows a fragmentation figure" sh -c "'$VHDTOOL' info '$d/dyn/d.vhd' | grep -Eq '^fragmentation: +[0-9]+% \\([0-9]+ of 7 allocated blocks out of place\\)'"
check "info --json has fragmentation-percentage" sh -c "'$VHDTOOL' info --json '$d/dyn/d.vhd' | $PY -c 'import json,sys; d=json.load(sys.stdin); assert 0 <= d[\"fragmentation-percentage\"] <= 100 and d[\"allocated\"] == 7 * $B'"
before=$(size_of "$d/dyn/d.vhd")
compact_ok "dynamic VHD" "$d/dyn/d.vhd" 4 '[0-9]+'
after=$(size_of "$d/dyn/d.vhd")
# 3 blocks of data left, each 512 bytes of bitmap + 2 MiB, packed after
# the metadata with the data areas 4 KiB aligned: the file lost 4 blocks.
if [ $((before - after)) -ge $((4 * B)) ]; then
  pass "dynamic VHD: shrank by at least the 4 released blocks ($before → $after)"
else
  fail "dynamic VHD: shrank by at least the 4 released blocks ($before → $after)"
fi
qemu-img convert -O raw "$d/dyn/d.vhd" "$d/dyn/qemu-after.raw"
check "dynamic VHD: qemu-img reads the same disk" cmp "$d/dyn/qemu-after.raw" "$d/dyn/expected.raw"
same_view "dynamic VHD: vhdread.py reads the same disk" "$d/dyn/expected.raw" "$d/dyn/d.vhd"
vhdtool_check_clean "dynamic VHD" "$d/dyn/d.vhd"
check "dynamic VHD: qemu-img info opens it" qemu-img info "$d/dyn/d.vhd"
if command -v vhdiinfo > /dev/null; then
  check "dynamic VHD: vhdiinfo opens it" vhdiinfo "$d/dyn/d.vhd"
else
  skip "vhdiinfo not installed"
fi
check "dynamic VHD: 3 blocks allocated now" sh -c "'$VHDTOOL' info --json '$d/dyn/d.vhd' | $PY -c 'import json,sys; assert json.load(sys.stdin)[\"allocated\"] == 3 * $B'"
compact_ok "dynamic VHD, again" "$d/dyn/d.vhd" 0 0
check "dynamic VHD: a second run changes nothing" test "$(size_of "$d/dyn/d.vhd")" -eq "$after"
dyn_after=$after

# qemu's layout: each block right after the previous one, data areas
# not 4 KiB aligned; every other block zeros written as data (-S 0).
$PY -c '
import os, sys
B = 2 << 20
with open(sys.argv[1], "wb") as f:
    for b in range(8):
        f.write(bytes(B) if b % 2 == 0 else os.urandom(B))' "$d/q.raw"
qemu-img convert -S 0 -f raw -O vpc -o force_size=on "$d/q.raw" "$d/q.vhd"
before=$(size_of "$d/q.vhd")
compact_ok "qemu-made VHD" "$d/q.vhd" 4 2
check "qemu-made VHD: 4 blocks given back" test $((before - $(size_of "$d/q.vhd"))) -eq $((4 * (B + 512)))
qemu-img convert -O raw "$d/q.vhd" "$d/q-after.raw"
check "qemu-made VHD: qemu-img reads the same disk" cmp "$d/q.raw" "$d/q-after.raw"
vhdtool_check_clean "qemu-made VHD" "$d/q.vhd"

# The order of the VHD protocol under strace: a block's copy is synced
# before any BAT sector points at it, BAT sectors are synced before the
# footer goes to the new end, which is synced before the file is cut.
if command -v strace > /dev/null; then
  cp "$d/dyn.pristine" "$d/order.vhd"
  bat=$($VHDGEN dump --json "$d/order.vhd" | $PY -c 'import json,sys; h=json.load(sys.stdin)["header"]; print(h["table_offset"], h["table_offset"] + 4 * h["max_table_entries"])')
  # LeakSanitizer cannot run under ptrace (sanitizer builds).
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -e trace=pwrite64,fdatasync,ftruncate -o "$d/order.trace" \
    "$VHDTOOL" compact "$d/order.vhd" > /dev/null 2>&1
  check "VHD: copies, BAT, footer and cut in crash-safe order (strace)" $PY -c '
import re, sys
lo, hi = int(sys.argv[2]), int(sys.argv[3])
ev = []
for line in open(sys.argv[1]):
    if "fdatasync(" in line:
        ev.append("sync")
    elif "ftruncate(" in line:
        ev.append("cut")
    elif "pwrite64(" in line:
        off = int(re.search(r", (\d+)\) += \d+", line).group(1))
        ev.append("bat" if lo <= off < hi else
                  "footer" if "conectix" in line else "copy")
pending = set()          # written since the last sync
for e in ev:
    if e == "sync":
        pending.clear()
        continue
    if e == "bat":
        assert "copy" not in pending, ev
    if e == "footer":
        assert "bat" not in pending and "copy" not in pending, ev
    if e == "cut":
        assert not pending, ev
    pending.add(e)
assert ev.count("cut") == 1 and ev[-1] == "sync" and "bat" in ev and "copy" in ev, ev
' "$d/order.trace" $bat
else
  skip "strace not installed"
fi

# A writer that finishes while compact is parsing the file, between its
# open and its lock (strace delays the lock by 5 s): compact refuses,
# and the other program's write is kept (before, compact went on from
# the stale BAT and cut the new block off).  Block 10 was unallocated.
if command -v strace > /dev/null && command -v qemu-io > /dev/null; then
  cp "$d/dyn.pristine" "$d/race.vhd"
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -o /dev/null -e inject=flock:delay_enter=5000000 \
    "$VHDTOOL" compact "$d/race.vhd" > "$d/race.out" 2>&1 &
  pid=$!
  # Parsed and about to lock: the writers' byte (an OFD lock, taken
  # just before the delayed flock) shows in /proc/locks.
  ino=$(stat -c %i "$d/race.vhd") seen=
  for i in $(seq 40); do
    if grep -q "OFDLCK.*:$ino " /proc/locks 2> /dev/null; then
      seen=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$seen" ]; then
    wait $pid
    skip "compact was not seen reaching its lock (no /proc/locks?)"
  else
    qemu-io -f vpc -c "write -P 0x22 $((10 * B)) $B" "$d/race.vhd" > /dev/null
    wait $pid; st=$?
    check "a file written while compact opened it: refused (exit $st)" test $st -eq 1
    check "... saying another process changed it" \
      grep -q "another process changed it while it was being opened" "$d/race.out"
    qemu-img convert -O raw "$d/race.vhd" "$d/race.raw"
    check "... the other program's write kept" $PY -c '
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2]))
    assert f.read(int(sys.argv[3])) == b"\x22" * int(sys.argv[3])' \
      "$d/race.raw" $((10 * B)) $B
  fi
  rm -f "$d/race.vhd" "$d/race.raw"
else
  skip "strace or qemu-io not installed"
fi

# ------------------------------------------------------------ dynamic VHDX
for ls in 512 4096; do
  cat > "$d/dx$ls.json" <<EOF
{"size": $((32 * M)), "seed": 4, "block_size": $M, "logical_sector_size": $ls,
 "layers": [{"file": "d.vhdx", "type": "dynamic",
 "writes": [[0, $M, 0], [$((2 * M)), 4096], [$((4 * M)), $M, 0], [$((6 * M)), 4096, 0],
            [$((8 * M)), 4096], [$((10 * M)), 8192, 0], [$((30 * M)), 8192]],
 "layout": {"block_order": "reverse"}}]}
EOF
  vhdxgen_make "dynamic VHDX ($ls-byte sectors) with zero blocks" "$d/dx$ls.json" "$d/dx$ls"
  f=$d/dx$ls/d.vhdx
  cp "$f" "$d/dx$ls.pristine"
  did=$(vhdx_id "$f" data_write_guid)
  fid=$(vhdx_id "$f" file_write_guid)
  before=$(size_of "$f")
  compact_ok "dynamic VHDX ($ls)" "$f" 4 1
  check "dynamic VHDX ($ls): 4 blocks of 1 MiB given back" test $((before - $(size_of "$f"))) -eq $((4 * M))
  same_view "dynamic VHDX ($ls): vhdxgen.py reads the same disk" "$d/dx$ls/expected.raw" "$f"
  if [ $ls = 512 ]; then         # qemu reads 512-byte sectors only
    qemu-img convert -O raw "$f" "$d/dx$ls/q.raw"
    check "dynamic VHDX ($ls): qemu-img reads the same disk" cmp "$d/dx$ls/q.raw" "$d/dx$ls/expected.raw"
    check "dynamic VHDX ($ls): qemu-img check" qemu-img check "$f"
  fi
  vhdtool_check_clean "dynamic VHDX ($ls)" "$f"
  check "dynamic VHDX ($ls): released blocks are ZERO" sh -c "$VHDXGEN states '$f' | $PY -c 'import json,sys; c=json.load(sys.stdin)[\"counts\"]; assert c.get(\"zero\") == 4, c'"
  check "dynamic VHDX ($ls): DataWriteGuid kept" test "$(vhdx_id "$f" data_write_guid)" = "$did"
  check "dynamic VHDX ($ls): FileWriteGuid changed" test "$(vhdx_id "$f" file_write_guid)" != "$fid"
  check "dynamic VHDX ($ls): no log left named" test "$(vhdx_id "$f" log_guid)" = 00000000-0000-0000-0000-000000000000
done

# ------------------------------------------------------------ differencing
# Parent blocks: 0 random, 1 fill 7, 2 random, 3 fill 9, 6 random.  Child:
# 0 zeros over random (stays), 1 equal (released), 2 differs (stays), 3
# sectors equal to the parent's (released), 4 zeros over nothing
# (released), 5 random (stays), 6 one zero sector over random (stays).
diff_spec () {   # EXT BLOCK LS
  cat <<EOF
{"size": $((16 * M)), "seed": 5, "block_size": $2, "logical_sector_size": $3, "layers": [
 {"file": "p.$1", "type": "dynamic", "writes": [[0, $2], [$2, $2, 7], [$((2 * $2)), $2], [$((3 * $2)), $2, 9], [$((6 * $2)), $2]]},
 {"file": "c.$1", "type": "differencing", "parent": "p.$1",
  "writes": [[0, $2, 0], [$2, $2, 7], [$((2 * $2)), 4096], [$((3 * $2)), 4096, 9], [$((4 * $2)), $2, 0], [$((5 * $2)), 8192], [$((6 * $2)), 4096, 0]],
  "layout": {"block_order": "reverse"}}]}
EOF
}
diff_spec vhd $B 512 | sed 's/, "logical_sector_size": 512//' > "$d/dv.json"
vhdgen_make "differencing VHD chain" "$d/dv.json" "$d/dv"
cp "$d/dv/p.vhd" "$d/dv.parent"
cp "$d/dv/c.vhd" "$d/dv.pristine"
same_view "differencing VHD: vhdread.py reads the model before" "$d/dv/expected.raw" "$d/dv/c.vhd" "$d/dv/p.vhd"
compact_ok "differencing VHD" "$d/dv/c.vhd" 3 '[0-9]+'
same_view "differencing VHD: the same disk after (zeros over parent data kept)" "$d/dv/expected.raw" "$d/dv/c.vhd" "$d/dv/p.vhd"
check "differencing VHD: parent unchanged" cmp "$d/dv/p.vhd" "$d/dv.parent"
vhdtool_check_clean "differencing VHD" "$d/dv/c.vhd"
check "differencing VHD: 4 blocks left" sh -c "'$VHDTOOL' info --json '$d/dv/c.vhd' | $PY -c 'import json,sys; assert json.load(sys.stdin)[\"allocated\"] == 4 * $B'"
if command -v vhdiinfo > /dev/null; then
  check "differencing VHD: vhdiinfo opens it" vhdiinfo "$d/dv/c.vhd"
else
  skip "vhdiinfo not installed"
fi
dv_after=$(size_of "$d/dv/c.vhd")

# Three layers, block sizes differing: a fixed base, a middle layer of
# 512 KiB blocks, the top of 2 MiB.  Blocks 0 (the base's fill), 2 (the
# middle's) and 4 (zeros over the base's zeros) go; 3 and 5 stay.
cat > "$d/mix.json" <<EOF
{"size": $((16 * M)), "seed": 9, "layers": [
 {"file": "f.vhd", "type": "fixed", "writes": [[0, $B, 7], [$B, 4096]]},
 {"file": "m.vhd", "type": "differencing", "block_size": 524288, "writes": [[$((2 * B)), $B, 5], [$((3 * B)), 4096]]},
 {"file": "c.vhd", "type": "differencing", "writes": [[0, $B, 7], [$((2 * B)), $B, 5], [$((3 * B)), 4096], [$((4 * B)), $B, 0], [$((5 * B)), 512]]}]}
EOF
vhdgen_make "3-deep VHD chain, mixed block sizes" "$d/mix.json" "$d/mix"
snap "$d/mix/f.vhd" "$d/mix/m.vhd"
compact_ok "3-deep VHD chain" "$d/mix/c.vhd" 3 '[0-9]+'
same_view "3-deep VHD chain: the same disk after" "$d/mix/expected.raw" "$d/mix/c.vhd" "$d/mix/m.vhd" "$d/mix/f.vhd"
unchanged "3-deep VHD chain: the layers below unchanged"
vhdtool_check_clean "3-deep VHD chain" "$d/mix/c.vhd"

for ls in 512 4096; do
  diff_spec vhdx $B $ls > "$d/dx-diff$ls.json"
  vhdxgen_make "differencing VHDX chain ($ls)" "$d/dx-diff$ls.json" "$d/dxd$ls"
  cp "$d/dxd$ls/p.vhdx" "$d/dxd$ls.parent"
  cp "$d/dxd$ls/c.vhdx" "$d/dxd$ls.pristine"
  did=$(vhdx_id "$d/dxd$ls/c.vhdx" data_write_guid)
  compact_ok "differencing VHDX ($ls)" "$d/dxd$ls/c.vhdx" 4 '[0-9]+'
  same_view "differencing VHDX ($ls): the same disk after" "$d/dxd$ls/expected.raw" "$d/dxd$ls/c.vhdx"
  check "differencing VHDX ($ls): parent unchanged" cmp "$d/dxd$ls/p.vhdx" "$d/dxd$ls.parent"
  vhdtool_check_clean "differencing VHDX ($ls)" "$d/dxd$ls/c.vhdx"
  check "differencing VHDX ($ls): block 0 (zeros over data) ZERO, 1 3 4 absent, 2 5 6 kept" \
    sh -c "$VHDXGEN states '$d/dxd$ls/c.vhdx' | $PY -c '
import json, sys
b = {int(k): v[\"state\"] for k, v in json.load(sys.stdin)[\"blocks\"].items()}
assert b == {0: \"zero\", 2: \"partially_present\", 5: \"partially_present\", 6: \"partially_present\"}, b'"
  check "differencing VHDX ($ls): DataWriteGuid kept" test "$(vhdx_id "$d/dxd$ls/c.vhdx" data_write_guid)" = "$did"
  # 4 MiB of header section, log, metadata and BAT; 3 blocks of 2 MiB;
  # the sector bitmap block (moved down too: it was at the end).
  check "differencing VHDX ($ls): packed to 11 MiB" test "$(size_of "$d/dxd$ls/c.vhdx")" -eq $((11 * M))
done
dxd_after=$(size_of "$d/dxd512/c.vhdx")
# Its sector bitmap block's entry in state 7 instead of 6 (tolerated:
# every reader dereferences it): it is still the chunk's bitmaps, moved
# as one, never a free slot for another block.  (BAT at 3 MiB; with
# 2 MiB blocks and 512-byte sectors, chunk 0's entry is number 2048.)
cp "$d/dxd512.pristine" "$d/dxd512/sb7.vhdx"
$PY -c '
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(3 * 1048576 + 2048 * 8)
    e = struct.unpack("<Q", f.read(8))[0]
    assert e & 7 == 6 and e >> 20, hex(e)
    f.seek(3 * 1048576 + 2048 * 8)
    f.write(struct.pack("<Q", e | 7))' "$d/dxd512/sb7.vhdx"
same_view "differencing VHDX, bitmap entry in state 7: read as before" "$d/dxd512/expected.raw" "$d/dxd512/sb7.vhdx"
compact_ok "differencing VHDX, bitmap entry in state 7" "$d/dxd512/sb7.vhdx" 4 '[0-9]+'
same_view "differencing VHDX, bitmap entry in state 7: the same disk after" "$d/dxd512/expected.raw" "$d/dxd512/sb7.vhdx"
vhdtool_check_clean "differencing VHDX, bitmap entry in state 7" "$d/dxd512/sb7.vhdx"
rm -f "$d/dxd512/sb7.vhdx"

# Soft anchors: entries holding no data (UNMAPPED, UNDEFINED) that keep
# a file offset, which another writer may reuse when it next writes the
# block.  They are dropped (offset 0, the states kept) before packing
# takes their space for other blocks; what reads return is unchanged.
cat > "$d/sa.json" <<EOF
{"size": $((16 * M)), "seed": 12, "block_size": $M, "layers": [
 {"file": "s.vhdx", "type": "dynamic", "soft_anchor": true,
  "states": {"2": "unmapped", "4": "undefined", "6": "unmapped"},
  "writes": [[0, $M, 0], [$M, 4096], [$((3 * M)), $M, 0], [$((9 * M)), 8192], [$((12 * M)), 4096]],
  "layout": {"block_order": "reverse"}}]}
EOF
vhdxgen_make "dynamic VHDX with soft anchors" "$d/sa.json" "$d/sa"
check "soft anchors: vhdxgen gave the dataless entries offsets" \
  sh -c "$VHDXGEN states '$d/sa/s.vhdx' | $PY -c '
import json, sys
b = json.load(sys.stdin)[\"blocks\"]
assert all(b[k][\"offset\"] for k in (\"2\", \"4\", \"6\")), b'"
compact_ok "soft anchors" "$d/sa/s.vhdx" 2 '[0-9]+'
same_view "soft anchors: the same disk after" "$d/sa/expected.raw" "$d/sa/s.vhdx"
vhdtool_check_clean "soft anchors" "$d/sa/s.vhdx"
check "soft anchors: dropped, the states kept; no two blocks share an offset" \
  sh -c "$VHDXGEN states '$d/sa/s.vhdx' | $PY -c '
import json, sys
b = json.load(sys.stdin)[\"blocks\"]
assert [b[k][\"state\"] for k in (\"2\", \"4\", \"6\")] == [\"unmapped\", \"undefined\", \"unmapped\"], b
assert all(b[k][\"offset\"] == 0 for k in (\"2\", \"4\", \"6\")), b
offs = [v[\"offset\"] for v in b.values() if v[\"offset\"]]
assert len(offs) == len(set(offs)), b'"

# A compacted VHDX parent keeps its DataWriteGuid: its child still opens.
cat > "$d/pc.json" <<EOF
{"size": $((16 * M)), "seed": 6, "block_size": $M, "layers": [
 {"file": "p.vhdx", "type": "dynamic", "writes": [[0, $M, 0], [$M, 4096], [$((2 * M)), $M, 0], [$((5 * M)), 4096]], "layout": {"block_order": "reverse"}},
 {"file": "c.vhdx", "type": "differencing", "parent": "p.vhdx", "writes": [[$((3 * M)), 4096]]}]}
EOF
vhdxgen_make "VHDX chain to compact the parent of" "$d/pc.json" "$d/pc"
compact_ok "VHDX parent" "$d/pc/p.vhdx" 2 '[0-9]+'
vhdtool_check_clean "the child of the compacted VHDX (DataWriteGuid unchanged)" "$d/pc/c.vhdx"
same_view "the child of the compacted VHDX reads the same" "$d/pc/expected.raw" "$d/pc/c.vhdx"

# ------------------------------------------------------------ refusals
"$VHDTOOL" create -t fixed "$d/fixed.vhd" 4M > /dev/null
snap "$d/fixed.vhd"
check_fails "a fixed VHD is refused" 'fixed\.vhd: a fixed disk cannot be compacted' "$VHDTOOL" compact "$d/fixed.vhd"
unchanged "the fixed VHD is unchanged"
"$VHDTOOL" create -t fixed "$d/fixed.vhdx" 4M > /dev/null
check "info: fragmentation 0 for a fixed disk" sh -c "'$VHDTOOL' info '$d/fixed.vhd' | grep -q '^fragmentation: *0% (0 of 0 allocated'"
check_fails "a fixed VHDX is refused" 'fixed\.vhdx: a fixed disk cannot be compacted' "$VHDTOOL" compact "$d/fixed.vhdx"
check_fails "compact takes one FILE" 'compact takes one FILE' "$VHDTOOL" compact
check "compact --help" sh -c "'$VHDTOOL' compact --help | grep -q 'Usage: vhdtool compact'"

# In use: nbdkit writing the file holds its lock; compact refuses it.
if command -v nbdsh > /dev/null && $PY -c 'import nbd' 2> /dev/null; then
  mkdir "$d/lock"
  cp "$d/dyn.pristine" "$d/lock/a.vhd"
  if nbdkit -U "$d/lock/sock" -P "$d/lock/pid" "$PLUGIN" "$d/lock/a.vhd" > "$tmp/.nbdkit" 2>&1; then
    cleanup_fn "kill \$(cat '$d/lock/pid') 2>/dev/null"
    for i in $(seq 100); do [ -S "$d/lock/sock" ] && break; sleep 0.05; done
    nbdsh -u "nbd+unix:///?socket=$d/lock/sock" -c 'h.pwrite(h.pread(512, 2097152), 2097152); h.flush()' > /dev/null 2>&1
    snap "$d/lock/a.vhd"
    check_fails "compact refuses a file nbdkit serves" 'a\.vhd: file is in use' \
      "$VHDTOOL" compact "$d/lock/a.vhd"
    unchanged "the served file is unchanged"
    kill "$(cat "$d/lock/pid")"
    for i in $(seq 100); do [ -e "$d/lock/pid" ] && kill -0 "$(cat "$d/lock/pid")" 2> /dev/null || break; sleep 0.05; done
  else
    fail "nbdkit serves a.vhd"
    diag_file "$tmp/.nbdkit"
  fi

  # The parent of a served chain is share-locked: not compacted either.
  cp "$d/dv.pristine" "$d/lock/c.vhd"
  cp "$d/dv.parent" "$d/lock/p.vhd"
  if nbdkit -r -U "$d/lock/sock2" -P "$d/lock/pid2" "$PLUGIN" "$d/lock/c.vhd" > "$tmp/.nbdkit" 2>&1; then
    cleanup_fn "kill \$(cat '$d/lock/pid2') 2>/dev/null"
    check_fails "compact refuses the parent of a served chain" 'p\.vhd: file is in use' \
      "$VHDTOOL" compact "$d/lock/p.vhd"
    check "the served chain's parent is unchanged" cmp "$d/lock/p.vhd" "$d/dv.parent"
    kill "$(cat "$d/lock/pid2")"
  else
    fail "nbdkit serves c.vhd"
    diag_file "$tmp/.nbdkit"
  fi

  # A dynamic VHD written through the plugin: data, explicit zeros, data.
  "$VHDTOOL" create -t dynamic "$d/plug.vhd" 16M > /dev/null
  check "the plugin writes data and zero blocks" \
    serve "$d/plug.vhd" -- "nbdsh -u \"\$uri\" -c '
import os
h.pwrite(os.urandom(4096), 0)
h.pwrite(bytes(2097152), 2097152)
h.pwrite(os.urandom(2097152), 4194304)
h.pwrite(bytes(65536), 6291456)
h.pwrite(os.urandom(512), 10485760)
h.flush()'"
  qemu-img convert -O raw "$d/plug.vhd" "$d/plug-before.raw"
  compact_ok "VHD written by the plugin" "$d/plug.vhd" 2 '[0-9]+'
  qemu-img convert -O raw "$d/plug.vhd" "$d/plug-after.raw"
  check "VHD written by the plugin: qemu-img reads the same disk" cmp "$d/plug-before.raw" "$d/plug-after.raw"
  vhdtool_check_clean "VHD written by the plugin" "$d/plug.vhd"
else
  skip "nbdsh or the python3 nbd module missing: no in-use test"
fi

# ------------------------------------------------------------ killed
# kill_at NAME SRC FILE EXPECTED FINAL_SIZE STEP [PARENT_SRC PARENT]:
# a copy of SRC named FILE (beside a copy of PARENT_SRC named PARENT)
# compacted and killed at STEP, then compacted again.
kill_at () {
  local name=$1 src=$2 file=$3 exp=$4 final=$5 step=$6 st=0 k f
  local parents=()
  k=$d/ks-$name-$step
  mkdir -p "$k"
  f=$k/$file
  cp "$src" "$f"
  if [ $# -ge 8 ]; then
    cp "$7" "$k/$8"
    case $f in *.vhd) parents=("$k/$8") ;; esac
  fi
  (VHDTOOL_TEST_KILL_AT=$step "$VHDTOOL" compact "$f" > /dev/null 2>&1) 2> /dev/null || st=$?
  if [ "$st" -eq 137 ]; then
    pass "$name: killed at $step"
  else
    fail "$name: killed at $step (exit $st)"
  fi
  same_view "$name, killed at $step: reads the same" "$exp" "$f" "${parents[@]+"${parents[@]}"}"
  # A VHDX killed while its log is named: check says it needs a replay
  # (the next writable open does it; readers replay it in memory).
  vhdtool_check_clean "$name, killed at $step" "$f" 'needs replaying'
  check "$name, killed at $step: compact again succeeds" "$VHDTOOL" compact "$f"
  same_view "$name, killed at $step, run again: reads the same" "$exp" "$f" "${parents[@]+"${parents[@]}"}"
  check "$name, killed at $step, run again: the size of an uninterrupted run" \
    test "$(size_of "$f")" -eq "$final"
  if [ $# -ge 8 ]; then
    check "$name, killed at $step: parent unchanged" cmp "$7" "$k/$8"
  fi
}
for s in released block-copied moved footer-written truncated; do
  kill_at dyn "$d/dyn.pristine" d.vhd "$d/dyn/expected.raw" "$dyn_after" $s
  kill_at dv "$d/dv.pristine" c.vhd "$d/dv/expected.raw" "$dv_after" $s "$d/dv.parent" p.vhd
done
dx_after=$(size_of "$d/dx512/d.vhdx")
for s in released block-copied moved log-ended truncated; do
  kill_at dx "$d/dx512.pristine" d.vhdx "$d/dx512/expected.raw" "$dx_after" $s
  kill_at dxd "$d/dxd512.pristine" c.vhdx "$d/dxd512/expected.raw" "$dxd_after" $s "$d/dxd512.parent" p.vhdx
done
check "differencing VHD: parent unchanged by every killed run" cmp "$d/dv/p.vhd" "$d/dv.parent"

done_testing
