#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The size rule (lib/quirks.c): a file made by Virtual PC ('vpc ') or
# qemu ('qemu') is served at its CHS geometry, every other file at its
# current size; disk-size=geometry|current (plugin) and --disk-size
# (vhdtool) force one reading; a geometry of 65535/16/255 always means
# the current size; a geometry that is zero or larger than the current
# size is never served.  The files are made by vhdtool and patched
# (creator, geometry) with tests/vhdpatch.py, both footer copies, the
# checksum fixed.  The main case is the real one: a 127 GiB Virtual PC
# disk, 136,365,211,648 bytes by current size, 65278/16/255 =
# 136,363,130,880 bytes by geometry.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

for prog in nbdsh nbdinfo; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

CUR=136365211648                # current size (266,338,304 sectors)
GEO=136363130880                # 65278 * 16 * 255 * 512
G200=$((200 * 1024 ** 3))       # over the geometry's maximum

# size_is DESC EXPECTED ARGS...: the plugin serving ARGS has this size.
size_is () {
  local desc=$1 want=$2 got
  shift 2
  got=$(serve -r "$@" -- 'nbdinfo --size "$uri"' 2> "$tmp/.err")
  if [ "$got" = "$want" ]; then
    pass "$desc"
  else
    fail "$desc (size '$got', wanted $want)"
    diag_file "$tmp/.err"
  fi
}

# reads DESC OFFSET BYTE ARGS...: the 512 bytes at OFFSET are all BYTE.
reads () {
  local desc=$1 off=$2 byte=$3
  shift 3
  check "$desc" serve -r "$@" -- "nbdsh -u \"\$uri\" -c '
assert h.pread(512, $off) == b\"$byte\" * 512'"
}

# copy_as SRC DST CREATOR: a copy of SRC with another creator code.
copy_as () {
  cp "$1" "$2" && vp set-creator "$2" "$3"
}

# ---------------------------------------------------------------- files

# win.vhd: 127 GiB dynamic (vhdtool writes creator 'win ' and the floor
# geometry 65278/16/255), with "G" in the last sector of the geometry
# and "T" in the last sector of the current size.
check "create the 127 GiB disk" "$VHDTOOL" create "$tmp/win.vhd" $CUR
check "write the last geometry sector and the last sector" \
  serve "$tmp/win.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"G\" * 512, $((GEO - 512)))
h.pwrite(b\"T\" * 512, $((CUR - 512)))
h.flush()'"
vp footer "$tmp/win.vhd" > "$tmp/footer.txt"
check "vhdtool wrote 'win ', the current size and 65278/16/255" \
  grep -qx "win  $CUR 65278/16/255" "$tmp/footer.txt"
copy_as "$tmp/win.vhd" "$tmp/vpc.vhd" 'vpc '
copy_as "$tmp/win.vhd" "$tmp/qemu.vhd" qemu

# ---------------------------------------------------------------- sizes

size_is "vpc: served at the geometry by default" $GEO "$tmp/vpc.vhd"
size_is "vpc: disk-size=auto is the default" $GEO "$tmp/vpc.vhd" disk-size=auto
size_is "vpc: disk-size=current serves the current size" $CUR \
  "$tmp/vpc.vhd" disk-size=current
size_is "win: served at the current size by default" $CUR "$tmp/win.vhd"
size_is "win: disk-size=geometry serves the geometry" $GEO \
  "$tmp/win.vhd" disk-size=geometry
size_is "qemu: served at the geometry, as QEMU reads it" $GEO "$tmp/qemu.vhd"
for app in qem2 'tap\0' 'vs  ' 'd2v ' vbox 'wa\0\0' CTXS abcd; do
  copy_as "$tmp/win.vhd" "$tmp/other.vhd" "$app"
  size_is "creator '$app': served at the current size" $CUR "$tmp/other.vhd"
done

if command -v qemu-img > /dev/null; then
  check "qemu-img info on the NBD export shows the geometry size" \
    serve -r "$tmp/vpc.vhd" -- "qemu-img info --output=json \"\$uri\" |
      grep -q '\"virtual-size\": $GEO,'"
else
  skip "qemu-img not installed"
fi

# The maximum geometry: 200 GiB, so 65535/16/255 (136,899,993,600
# bytes) is smaller than the current size, and still means current size.
check "create a 200 GiB disk" "$VHDTOOL" create "$tmp/max.vhd" $G200
vp set-creator "$tmp/max.vhd" 'vpc '
vp footer "$tmp/max.vhd" > "$tmp/footer.txt"
check "its geometry is the maximum 65535/16/255" \
  grep -qx "vpc  $G200 65535/16/255" "$tmp/footer.txt"
size_is "vpc with 65535/16/255: served at the current size" $G200 \
  "$tmp/max.vhd"
size_is "65535/16/255 means the current size even with disk-size=geometry" \
  $G200 "$tmp/max.vhd" disk-size=geometry

# A geometry larger than the current size, and an empty one: never
# served; the current size is, with a warning.
check "create an 8 MiB disk" "$VHDTOOL" create "$tmp/small.vhd" 8M
vp set-creator "$tmp/small.vhd" 'vpc '
vp set-geometry "$tmp/small.vhd" 1000 16 63
size_is "geometry larger than the current size: current size served" \
  8388608 "$tmp/small.vhd"
check "... with a warning naming the fields" \
  grep -q "geometry 1000/16/63 (516096000 bytes) exceeds the current size 8388608" \
  "$tmp/.err"
vp set-geometry "$tmp/small.vhd" 0 0 0
size_is "geometry 0/0/0: current size served" 8388608 "$tmp/small.vhd"
size_is "geometry 0/0/0 with disk-size=geometry: current size served" \
  8388608 "$tmp/small.vhd" disk-size=geometry

check_fails "plugin: a bad disk-size value is refused" \
  "disk-size must be auto, geometry or current" \
  serve -r "$tmp/vpc.vhd" disk-size=cylinders -- true
check_fails "vhdtool: a bad --disk-size value is a usage error" \
  "disk-size must be auto, geometry or current" \
  "$VHDTOOL" info --disk-size=cylinders "$tmp/vpc.vhd"

# ---------------------------------------------------------------- data

reads "vpc: the last sector of the geometry reads back" $((GEO - 512)) G \
  "$tmp/vpc.vhd"
check_fails "vpc: nothing past the geometry can be read" \
  "out of bounds|[Ii]nvalid|out of range" \
  serve -r "$tmp/vpc.vhd" -- "nbdsh -u \"\$uri\" -c 'h.pread(512, $GEO)'"
reads "vpc with disk-size=current: the last sector reads back" \
  $((CUR - 512)) T "$tmp/vpc.vhd" disk-size=current
reads "win with disk-size=geometry: the geometry's last sector" \
  $((GEO - 512)) G "$tmp/win.vhd" disk-size=geometry

cp "$tmp/vpc.vhd" "$tmp/vpcw.vhd"
check "vpc: a write to the geometry's last sector" \
  serve "$tmp/vpcw.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"W\" * 512, $((GEO - 512)))
h.flush()'"
check_fails "vpc: a write past the geometry is refused" \
  "out of bounds|[Ii]nvalid|out of range" \
  serve "$tmp/vpcw.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"X\" * 512, $GEO)'"
reads "the write landed" $((GEO - 512)) W "$tmp/vpcw.vhd"
reads "the tail past the geometry is untouched" $((CUR - 512)) T \
  "$tmp/vpcw.vhd" disk-size=current

# ---------------------------------------------------------------- vhdtool

check "info on the vpc file" "$VHDTOOL" info "$tmp/vpc.vhd"
out_has "info: virtual size is the geometry" "^virtual size: +$GEO "
out_has "info: the rule and its reason" \
  "^size rule: +geometry \(creator 'vpc ': Virtual PC"
out_has "info: both sizes" "^current size: +$CUR$"
out_has "info: ... and the geometry's" "^geometry size: +$GEO$"
out_has "info: the quirk is listed" "^quirks tolerated: .*size-geometry"
check "info --disk-size=current" \
  "$VHDTOOL" info --disk-size=current "$tmp/vpc.vhd"
out_has "info: forced current size" \
  "^size rule: +current size \(forced by disk-size=current\)"
out_has "info: forced: virtual size is the current size" \
  "^virtual size: +$CUR "
check "info --json on the vpc file" "$VHDTOOL" info --json "$tmp/vpc.vhd"
out_has "info --json: size-rule geometry" '"size-rule": "geometry"'
out_has "info --json: current-size" "\"current-size\": $CUR,"
check "info on the win file" "$VHDTOOL" info "$tmp/win.vhd"
out_has "info: win rule is the current size" \
  "^size rule: +current size \(creator 'win '"
check "info on the 65535/16/255 file" "$VHDTOOL" info "$tmp/max.vhd"
out_has "info: the maximum geometry means current size" \
  "^size rule: +current size \(geometry 65535/16/255"

if "$VHDTOOL" map --json "$tmp/vpc.vhd" | /usr/bin/python3 -c "
import json, sys
m = json.load(sys.stdin)
last = m[-1]
sys.exit(0 if last['start'] + last['length'] == $GEO else 1)" 2> "$tmp/.out"; then
  pass "map: the ranges cover exactly the geometry size"
else
  fail "map: the ranges cover exactly the geometry size"
  diag_file "$tmp/.out"
fi

check "convert the vpc file (default rule)" \
  "$VHDTOOL" convert "$tmp/vpc.vhd" "$tmp/conv-geo.vhd"
size_is "convert: the output has the geometry size" $GEO "$tmp/conv-geo.vhd"
reads "convert: the geometry's last sector was copied" $((GEO - 512)) G \
  "$tmp/conv-geo.vhd"
check "convert --disk-size=current" \
  "$VHDTOOL" convert --disk-size=current "$tmp/vpc.vhd" "$tmp/conv-cur.vhd"
size_is "convert --disk-size=current: the output has the current size" \
  $CUR "$tmp/conv-cur.vhd"
reads "convert --disk-size=current: the last sector was copied" \
  $((CUR - 512)) T "$tmp/conv-cur.vhd"

check "check: the vpc file is clean" "$VHDTOOL" check "$tmp/vpc.vhd"
check "check --disk-size=geometry: the win file is clean" \
  "$VHDTOOL" check --disk-size=geometry "$tmp/win.vhd"

# ---------------------------------------------------------------- chains

# A vpc child over the vpc parent: the chain has the geometry size and
# shows the parent's data at its end.
mkdir "$tmp/chain"
cp "$tmp/vpc.vhd" "$tmp/chain/base.vhd"
check "create a child of the vpc file" \
  "$VHDTOOL" create -p "$tmp/chain/base.vhd" "$tmp/chain/child.vhd"
vp set-creator "$tmp/chain/child.vhd" 'vpc '
size_is "vpc child over vpc parent: the geometry size" $GEO \
  "$tmp/chain/child.vhd"
check "no size warning for a chain of one rule" \
  bash -c "! grep -q 'would be served alone' '$tmp/.err'"
reads "vpc child: the parent's last geometry sector" $((GEO - 512)) G \
  "$tmp/chain/child.vhd"
reads "vpc child, disk-size=current: the parent's tail" $((CUR - 512)) T \
  "$tmp/chain/child.vhd" disk-size=current
check "info on the vpc child" "$VHDTOOL" info "$tmp/chain/child.vhd"
out_has "info: the child's rule is geometry" "^size rule: +geometry"

# A 'win ' child (as vhdtool and Hyper-V make them) over the vpc parent:
# served at the child's current size, with a warning about the parent.
cp "$tmp/chain/child.vhd" "$tmp/chain/wchild.vhd"
vp set-creator "$tmp/chain/wchild.vhd" 'win '
size_is "win child over vpc parent: the top's current size" $CUR \
  "$tmp/chain/wchild.vhd"
check "... with a warning that the parent alone is smaller" \
  grep -q "would be served alone at $GEO bytes" "$tmp/.err"
size_is "win child, disk-size=geometry: the geometry for every layer" $GEO \
  "$tmp/chain/wchild.vhd" disk-size=geometry

# Merge copies everything the files hold, whatever the size rule: data
# written past the geometry in a vpc child reaches the vpc parent.
cp "$tmp/vpc.vhd" "$tmp/chain/mbase.vhd"
check "create a child to merge" \
  "$VHDTOOL" create -p "$tmp/chain/mbase.vhd" "$tmp/chain/mchild.vhd"
vp set-creator "$tmp/chain/mchild.vhd" 'vpc '
check "write past the geometry in the child (disk-size=current)" \
  serve "$tmp/chain/mchild.vhd" disk-size=current -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"M\" * 512, $((CUR - 512)))
h.pwrite(b\"N\" * 512, $((GEO - 512)))
h.flush()'"
check "merge the vpc child" "$VHDTOOL" merge "$tmp/chain/mchild.vhd"
reads "merge: the sector past the geometry reached the parent" \
  $((CUR - 512)) M "$tmp/chain/mbase.vhd" disk-size=current
reads "merge: the geometry's last sector reached the parent" \
  $((GEO - 512)) N "$tmp/chain/mbase.vhd"
size_is "merge: the parent keeps its geometry size" $GEO \
  "$tmp/chain/mbase.vhd"

done_testing
