#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# VHDX files made by Windows 10, Hyper-V (../shared/images) and qemu-img:
# the plugin and vhdtool must give their documented content (Windows)
# or exactly what qemu-img reads (qemu's own files), describe them,
# and refuse what cannot be served with a message naming the cause.
. "${top_srcdir:-.}/tests/functions.sh"

[ -d "$IMAGES" ] || skip_all "no images directory ($IMAGES)"
command -v qemu-img > /dev/null || skip_all "qemu-img not installed"

for f in win10-dynamic.vhdx win10-fixed.vhdx win-differencing.avhdx; do
  gunzip -c "$IMAGES/$f.gz" > "$tmp/$f"
done
snap "$tmp"/*.vhdx "$tmp"/*.avhdx

check_hash "Windows 10 dynamic VHDX (32 MiB blocks, stale log entries)" \
  8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac \
  "$tmp/win10-dynamic.vhdx"
check_hash "Windows 10 fixed VHDX" \
  bc0be4623b15aa84216fb31ba24e3b621ec7f1c72d198c990ac0eced222d9f62 \
  "$tmp/win10-fixed.vhdx"
check_hash "the format is found by content, not by extension" \
  8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac \
  file="$(cp "$tmp/win10-dynamic.vhdx" "$tmp/disk.img"; echo "$tmp/disk.img")"
rm -f "$tmp/disk.img"

# vhdtool info describes the Hyper-V checkpoint completely.
check "info on a Hyper-V checkpoint whose parent is missing" \
  sh -c "\"$VHDTOOL\" info \"$tmp/win-differencing.avhdx\"; [ \$? -eq 1 ]"
out_has "format and type" '^format: +VHDX' 
out_has "identity is the DataWriteGuid" \
  '^data write guid: +b298d413-f67e-412a-9a72-c7c7fc9b6cb5'
out_has "parent linkage" '^parent id: +ff34003b-11ed-4cf8-a166-b2be05e20b80'
out_has "relative_path key" \
  'locator: +relative_path = \.\\Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385\.avhdx'
out_has "volume_path key" 'locator: +volume_path = \\\\\?\\Volume\{0eba351e'
out_has "parent_linkage2 key" \
  'locator: +parent_linkage2 = \{00000000-0000-0000-0000-000000000000\}'
out_has "both headers, their sequence numbers" \
  '^header 2: +sequence 7, FileWriteGuid ccbd40d9-cf89-45da-8e46-a805ce97e20d'
out_has "the clean log" '^log: +empty'
out_has "the BAT: 4098 entries, chunk ratio 2048" \
  '^BAT: +4098 entries .*chunk ratio 2048'
out_has "the BAT's block states" '^BAT blocks: +4064 not present, 32 partially present'
out_has "the metadata items" '^metadata item 5: +parent locator .*1014 bytes'
out_has "the chain error names what was tried" \
  'cannot be resolved: .*parent not found .*tried: .*Generation 1_49C4BAF3'

"$VHDTOOL" info --json "$tmp/win-differencing.avhdx" > "$tmp/info.json" 2>/dev/null
check "info --json is JSON with the locator keys and details" \
  /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["format"] == "VHDX" and j["type"] == "differencing", j
assert j["virtual-size"] == 8589934592 and j["block-size"] == 2097152
keys = {l["key"]: l["value"] for l in j["locators"]}
assert keys["parent_linkage"] == "{ff34003b-11ed-4cf8-a166-b2be05e20b80}", keys
assert j["details"]["BAT blocks"] == "4064 not present, 32 partially present"
assert j["chain"] is None and "parent not found" in j["chain-error"]
' "$tmp/info.json"

check_fails "plugin: the checkpoint's missing parent, and what was tried" \
  'win-differencing\.avhdx: parent not found \(parent id ff34003b-11ed-4cf8-a166-b2be05e20b80.*tried: .*/Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385\.avhdx.*/Users/Public/Documents/Hyper-V/' \
  nbdkit -U "$(newsock)" "$PLUGIN" "$tmp/win-differencing.avhdx" --run true
check_fails "check: the missing parent is a problem (exit 1)" \
  '\[parent\] parent not found' "$VHDTOOL" check "$tmp/win-differencing.avhdx"
check "check: the Windows dynamic VHDX is clean" \
  "$VHDTOOL" check "$tmp/win10-dynamic.vhdx"

# A writable client writes into (a copy of) a Windows VHDX, which stays
# clean; the overlay filter keeps the writes in memory.
cp "$tmp/win10-dynamic.vhdx" "$tmp/w.vhdx"
serve "$tmp/w.vhdx" -- '
  nbdsh -u "$uri" -c "assert not h.is_read_only(); h.pwrite(b\"Z\" * 4096, 8192)" &&
  nbdsh -u "$uri" -c "assert h.pread(4096, 8192) == b\"Z\" * 4096"' \
  > "$tmp/.out" 2>&1 &&
  pass "writable open of a VHDX: written, read back" ||
  { fail "writable open of a VHDX"; diag_file "$tmp/.out"; }
check "... and vhdtool check finds it clean" "$VHDTOOL" check "$tmp/w.vhdx"
rm -f "$tmp/w.vhdx"
ovserve "$PLUGIN" "$tmp/win10-dynamic.vhdx" overlay-scope=connection -- '
  nbdsh -u "$uri" -c "h.pwrite(b\"Z\" * 4096, 8192); assert h.pread(4096, 8192) == b\"Z\" * 4096" &&
  nbdsh -u "$uri" -c "assert h.pread(4096, 8192) != b\"Z\" * 4096"' \
  > "$tmp/.out" 2>&1 &&
  pass "overlay filter over a VHDX, overlay-scope=connection" ||
  { fail "overlay filter over a VHDX"; diag_file "$tmp/.out"; }
# A child of a Windows VHDX is a VHDX (whatever its name), reads as its
# parent and leaves it alone; one of the other format is refused.
check "create -p of a Windows VHDX" \
  "$VHDTOOL" create -p "$tmp/win10-dynamic.vhdx" "$tmp/child.vhd"
check_hash "... the child reads as its parent" \
  8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac \
  "$tmp/child.vhd"
"$VHDTOOL" info "$tmp/child.vhd" > "$tmp/.out" 2>&1
out_has "... and is a VHDX" '^format: +VHDX'
out_has "... linked to the parent's DataWriteGuid" \
  '^locator: +parent_linkage = \{28e09ae1-ab94-4815-a155-f143e2d00a3f\}'
check_fails "create -f vhd -p with a VHDX parent: refused" \
  'child2\.vhd: a child must be of its parent.s format: .*win10-dynamic\.vhdx is a VHDX file, not VHD' \
  "$VHDTOOL" create -f vhd -p "$tmp/win10-dynamic.vhdx" "$tmp/child2.vhd"
[ ! -e "$tmp/child2.vhd" ] && pass "... and no file made" || fail "child2.vhd made"
# Commands that would change a file refuse what cannot be done, and
# change nothing.
check_fails "set-parent of a VHDX onto a disk of another size: refused" \
  'win-differencing\.avhdx: size mismatch: the child is 8589934592 bytes but .*win10-dynamic\.vhdx is 10485760 bytes' \
  "$VHDTOOL" set-parent "$tmp/win-differencing.avhdx" "$tmp/win10-dynamic.vhdx"
check_fails "merge of a VHDX: refused" 'win-differencing\.avhdx: ' \
  "$VHDTOOL" merge "$tmp/win-differencing.avhdx"
check_fails "overlay-save onto a VHDX parent: refused at start" \
  'overlay-save-parent: .*win10-dynamic\.vhdx is a VHDX file: saving the overlay as a child of it is not supported yet' \
  nbdkit -U "$(newsock)" --filter="$FILTER" "$PLUGIN" "$tmp/win10-dynamic.vhdx" \
    overlay-save="$tmp/saved.vhd" overlay-save-parent="$tmp/win10-dynamic.vhdx" \
    --run true
unchanged "the image files were never modified"

# qemu-img's own VHDX files (dynamic and fixed, several block and log
# sizes): we read exactly what qemu-img reads.  The dynamic ones are
# over 4 GiB, so that the BAT has an interleaved sector-bitmap entry;
# fixed files are allocated in full, so they stay small.
/usr/bin/python3 - "$tmp/src.raw" "$tmp/small.raw" <<'PY'
import os, random, sys
random.seed(7)
def make(path, size, writes):
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in writes:
            f.seek(off)
            f.write(random.randbytes(n))
big = 4608 << 20                      # 4.5 GiB, past the first chunk
make(sys.argv[1], big, [(0, 4096), (1 << 20, 5000), ((4 << 30) - 2048, 8192),
                        ((4 << 30) + 12345 // 512 * 512, 70000),
                        (big - 512, 512)])
small = 300 << 20                     # not a multiple of 256 MiB
make(sys.argv[2], small, [(0, 4096), (3 << 20, 9000), (small - 1024, 1024)])
PY
for case in "src subformat=dynamic,block_size=1M" \
            "src subformat=dynamic,block_size=8M,log_size=4M" \
            "small subformat=dynamic,block_size=256M" \
            "small subformat=fixed,block_size=32M" \
            "small subformat=fixed,block_size=2M,block_state_zero=off"; do
  set -- $case
  rm -f "$tmp/q.vhdx" "$tmp/q.raw"
  if qemu-img convert -f raw -O vhdx -o "$2" "$tmp/$1.raw" "$tmp/q.vhdx" \
       > "$tmp/.out" 2>&1 &&
     qemu-img convert -f vhdx -O raw "$tmp/q.vhdx" "$tmp/q.raw" >> "$tmp/.out" 2>&1
  then
    reads_as "qemu-img VHDX $2: as qemu-img reads it" "$tmp/q.raw" \
      "$tmp/q.vhdx"
  else
    fail "qemu-img could not make $2"
    diag_file "$tmp/.out"
  fi
done
rm -f "$tmp/q.vhdx" "$tmp/q.raw"

# vhdtool convert -t raw and map on a VHDX.
qemu-img convert -f raw -O vhdx -o block_size=8M "$tmp/src.raw" "$tmp/m.vhdx"
check "vhdtool convert -t raw flattens a VHDX" \
  "$VHDTOOL" convert -t raw "$tmp/m.vhdx" "$tmp/m.raw"
check_same "... identical to the source" "$tmp/m.raw" "$tmp/src.raw"
rm -f "$tmp/m.raw"
serve -r "$tmp/m.vhdx" -- 'nbdinfo --map --json "$uri"' > "$tmp/map.json" 2>&1
check "nbdinfo --map: data exactly where blocks are present" \
  /usr/bin/python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
data = [(e["offset"], e["length"]) for e in m if not (e["type"] & 2)]
want = [(0, 8 << 20), ((4 << 30) - (8 << 20), 16 << 20),
        ((4608 << 20) - (8 << 20), 8 << 20)]
assert data == want, data
' "$tmp/map.json"

done_testing
