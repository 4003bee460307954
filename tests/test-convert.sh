#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool convert: chains written by the independent generator are
# flattened to raw, fixed and dynamic output, which must hold exactly
# the generator's model of the chain: raw compared byte for byte, fixed
# and dynamic read by qemu-img (an independent VHD reader) and libvhdi.
# Zero ranges stay sparse; sources are never modified; OUTPUT is never
# overwritten; outputs pass vhdtool check; -p draws only on a terminal.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in qemu-img $PY sha256sum; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
d=$(cd "$tmp" && pwd -P)


# qemu_raw VHD RAW: what qemu-img reads from VHD, as a raw file.
qemu_raw () {
  qemu-img convert -f vpc -O raw "$1" "$2" > "$tmp/.qerr" 2>&1
}

# nonzero_blocks RAW BLOCK: how many BLOCK-sized blocks of RAW hold a
# non-zero byte (what a sparse dynamic disk must allocate, no more).
nonzero_blocks () {
  $PY -c '
import sys
data = open(sys.argv[1], "rb").read(); bs = int(sys.argv[2])
print(sum(1 for i in range(0, len(data), bs) if any(data[i:i + bs])))' "$1" "$2"
}

# generated_case NAME TOP: make the chain $d/NAME from the vhdgen spec
# $d/NAME.json, then convert_case it.
generated_case () {
  if $VHDGEN make "$d/$1.json" "$d/$1" > "$tmp/.gen" 2>&1; then
    convert_case "$1" "$2"
  else
    fail "vhdgen: $1"
    diag_file "$tmp/.gen"
  fi
}

# convert_case NAME TOP: convert the chain in $d/NAME (made by vhdgen)
# to every type and compare with expected.raw.
convert_case () {
  local name=$1 top=$2 dir=$d/$1 t out
  snap "$dir"/*.vhd
  for t in raw fixed dynamic; do
    out=$dir/out-$t
    if "$VHDTOOL" convert -t "$t" "$dir/$top" "$out" > "$tmp/.out" 2>&1; then
      pass "$name: convert -t $t exits 0"
    else
      fail "$name: convert -t $t exits 0"
      diag_file "$tmp/.out"
      continue
    fi
    [ -z "$(ls "$dir" | grep '\.tmp')" ] && pass "$name -t $t: no temporary file left" ||
      fail "$name -t $t: no temporary file left"
    case $t in
    raw)
      check_same "$name: raw output equals the model" "$out" "$dir/expected.raw"
      # Zero ranges are holes: the file uses less space than the disk.
      used=$(( $(stat -c %b "$out") * $(stat -c %B "$out") ))
      nz=$(nonzero_blocks "$dir/expected.raw" 4096)
      [ "$used" -le $(( (nz + 64) * 4096 )) ] &&
        pass "$name: raw output is sparse ($used bytes used for $nz non-zero 4 KiB blocks)" ||
        fail "$name: raw output is sparse ($used bytes used for $nz non-zero 4 KiB blocks)"
      ;;
    *)
      if qemu_raw "$out" "$dir/qemu-$t.raw"; then
        check_same "$name: qemu-img reads the $t output as the model" \
          "$dir/qemu-$t.raw" "$dir/expected.raw"
      else
        fail "$name: qemu-img reads the $t output"
        diag_file "$tmp/.qerr"
      fi
      check "$name: qemu-img compare $t output with the model" \
        qemu-img compare -f vpc -F raw "$out" "$dir/expected.raw"
      qemu-img info -f vpc --output=json "$out" > "$tmp/.qi" 2>&1
      grep -q "\"virtual-size\": $(stat -c %s "$dir/expected.raw")," "$tmp/.qi" &&
        pass "$name: qemu-img sees the $t output's exact size" ||
        { fail "$name: qemu-img sees the $t output's exact size"; diag_file "$tmp/.qi"; }
      check "$name: vhdtool check passes the $t output" "$VHDTOOL" check "$out"
      if command -v vhdiinfo > /dev/null; then
        vhdiinfo "$out" > "$tmp/.vi" 2>&1 &&
          grep -q "Disk type.*$([ $t = fixed ] && echo Fixed || echo Dynamic)" "$tmp/.vi" &&
          pass "$name: vhdiinfo opens the $t output" ||
          { fail "$name: vhdiinfo opens the $t output"; diag_file "$tmp/.vi"; }
      fi
      ;;
    esac
  done
  # Dynamic output allocates exactly the blocks holding non-zero data.
  "$VHDTOOL" info --json "$dir/out-dynamic" > "$tmp/.info" 2>&1
  alloc=$($PY -c 'import json,sys; j = json.load(open(sys.argv[1])); print(j["allocated"] // j["block-size"])' "$tmp/.info")
  want=$(nonzero_blocks "$dir/expected.raw" 2097152)
  [ "$alloc" = "$want" ] &&
    pass "$name: dynamic output allocates only the $want blocks holding data" ||
    fail "$name: dynamic output allocates $alloc blocks, wanted $want"
  unchanged "$name: the source files were not modified"
}

size=$((12 * 1024 * 1024 + 7 * 512))

# 1. Fixed base with a data-free middle, a Windows-style middle layer,
#    explicit zeros in the top (which hide the layers under them), a
#    partial last block.
mkdir "$d/mixed"
cat > "$d/mixed.json" <<EOF
{ "size": $size, "seed": 21, "layers": [
  { "file": "base.vhd", "type": "fixed",
    "writes": [[0, 3000000], [8388608, 2097152], [$((size - 4096)), 4096]] },
  { "file": "mid.vhd", "type": "differencing", "block_size": 524288,
    "writes": [[100000, 50000], [5000000, 600000]],
    "layout": { "align_data_4k": true, "stale_fill": 85 } },
  { "file": "top.vhd", "type": "differencing",
    "writes": [[0, 512], [2000000, 300000, 0], [5200000, 100000, 0],
               [9000000, 70000], [$((size - 512)), 512]] }
] }
EOF
generated_case mixed top.vhd

# 2. Dynamic base whose allocated blocks carry stale bytes under clear
#    bits (must read as zeros), odd block order, two differencing layers.
cat > "$d/dyn.json" <<EOF
{ "size": $size, "seed": 22, "layers": [
  { "file": "base.vhd", "type": "dynamic", "block_size": 1048576,
    "writes": [[0, 65536], [4200000, 9000], [11000000, 900000]],
    "layout": { "stale_fill": 170, "block_order": "reverse" } },
  { "file": "c1.vhd", "type": "differencing", "block_size": 65536,
    "writes": [[32768, 4096], [6000000, 1000000]] },
  { "file": "c2.vhd", "type": "differencing",
    "writes": [[4096, 8192], [6500000, 10000], [11500000, 512, 0]] }
] }
EOF
generated_case dyn c2.vhd

# The dynamic output read through libvhdi's FUSE mount too.
if command -v vhdimount > /dev/null && [ -c /dev/fuse ] && [ -f "$d/dyn/out-dynamic" ]; then
  mkdir "$d/mnt"
  cleanup_fn "fusermount -u '$d/mnt' 2>/dev/null || umount '$d/mnt' 2>/dev/null"
  if vhdimount "$d/dyn/out-dynamic" "$d/mnt" > "$tmp/.out" 2>&1; then
    dd if="$d/mnt/vhdi1" of="$d/dyn/libvhdi.raw" bs=512 iflag=direct status=none
    check_same "libvhdi reads the dynamic output as the model" \
      "$d/dyn/libvhdi.raw" "$d/dyn/expected.raw"
    fusermount -u "$d/mnt" 2> /dev/null || umount "$d/mnt"
  else
    fail "vhdimount opens the dynamic output"
    diag_file "$tmp/.out"
  fi
else
  skip "vhdimount not usable"
fi

# 3. Single files: a vhdtool-made fixed disk with data written through
#    the plugin, converted to every type, back and forth.
mkdir "$d/single"
"$VHDTOOL" create -t fixed "$d/single/f.vhd" 6M
serve "$d/single/f.vhd" -- '/usr/bin/python3 -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b\"single\" * 1000, 1000); h.pwrite(b\"\\xff\" * 65536, 5 * 1048576)
h.flush()" "$uri"' > "$tmp/.out" 2>&1
qemu_raw "$d/single/f.vhd" "$d/single/f.raw"
check "convert fixed -> dynamic" "$VHDTOOL" convert "$d/single/f.vhd" "$d/single/d.vhd"
check "convert dynamic -> fixed" "$VHDTOOL" convert -t fixed "$d/single/d.vhd" "$d/single/f2.vhd"
check "convert fixed -> raw" "$VHDTOOL" convert -t raw "$d/single/f2.vhd" "$d/single/r.raw"
check_same "fixed -> dynamic -> fixed -> raw keeps the content" "$d/single/r.raw" "$d/single/f.raw"
qemu-img info -f vpc "$d/single/d.vhd" 2>&1 | grep -q 'vpc' &&
  "$VHDTOOL" info "$d/single/d.vhd" | grep -q '^type: *dynamic$' &&
  pass "convert without -t writes a dynamic disk" || fail "convert without -t writes a dynamic disk"

# ------------------------------------------------------------ refusals

mkdir "$d/ow"
"$VHDTOOL" create "$d/ow/src.vhd" 1M
echo "precious" > "$d/ow/out.vhd"
snap "$d/ow/src.vhd" "$d/ow/out.vhd"
check_fails "existing OUTPUT: exit 1, refused" 'out\.vhd: file already exists; refusing to overwrite it' \
  "$VHDTOOL" convert "$d/ow/src.vhd" "$d/ow/out.vhd"
check_fails "OUTPUT = FILE: refused" 'file already exists' \
  "$VHDTOOL" convert -t raw "$d/ow/src.vhd" "$d/ow/src.vhd"
unchanged "refused converts modified nothing"
[ "$(ls "$d/ow" | tr '\n' ' ')" = "out.vhd src.vhd " ] &&
  pass "refused converts left no temporary file" || fail "refused converts left no temporary file"

mkdir "$d/orphan"
"$VHDTOOL" create "$d/orphan/b.vhd" 1M
"$VHDTOOL" create -p "$d/orphan/b.vhd" "$d/orphan/c.vhd"
rm "$d/orphan/b.vhd"
check_fails "a chain that does not open: exit 1, parent not found" 'parent not found' \
  "$VHDTOOL" convert "$d/orphan/c.vhd" "$d/orphan/out.vhd"
[ ! -e "$d/orphan/out.vhd" ] && [ -z "$(ls "$d/orphan" | grep tmp)" ] &&
  pass "failed convert created nothing" || fail "failed convert created nothing"
check_fails "... and the error names vhdtool's own options" \
  'parent not found.*; use --parent or --parent-dir to say where it is' \
  "$VHDTOOL" convert "$d/orphan/c.vhd" "$d/orphan/out.vhd"

# The parent moved: convert, map and check find it when told where.
mkdir "$d/orphan/moved"
"$VHDTOOL" create "$d/orphan/moved/b.vhd" 1M
serve "$d/orphan/moved/b.vhd" -- \
  "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"B\" * 4096, 8192); h.flush()'"
# c.vhd names b.vhd's old id: the new b.vhd is a different disk.
"$VHDTOOL" set-parent --ignore-id-mismatch "$d/orphan/c.vhd" "$d/orphan/moved/b.vhd" > /dev/null
mv "$d/orphan/moved/b.vhd" "$d/orphan/moved/renamed.vhd"
check "convert --parent FILE: the chain opens" \
  "$VHDTOOL" convert -t raw --parent "$d/orphan/moved/renamed.vhd" \
    "$d/orphan/c.vhd" "$d/orphan/out.raw"
check "... and the parent's data is in the output" \
  test "$(od -An -c -j 8192 -N 4 "$d/orphan/out.raw" | tr -d ' ')" = BBBB
rm -f "$d/orphan/out.raw"
# Under its own name but in a directory no locator names.
mkdir "$d/orphan/elsewhere"
mv "$d/orphan/moved/renamed.vhd" "$d/orphan/elsewhere/b.vhd"
check "convert --parent-dir DIR: the chain opens" \
  "$VHDTOOL" convert -t raw --parent-dir "$d/orphan/elsewhere" \
    "$d/orphan/c.vhd" "$d/orphan/out.raw"
check "... and the parent's data is in the output" \
  test "$(od -An -c -j 8192 -N 4 "$d/orphan/out.raw" | tr -d ' ')" = BBBB
mv "$d/orphan/elsewhere/b.vhd" "$d/orphan/moved/renamed.vhd"
check_fails "map without the hint: parent not found, with the hint" \
  'parent not found.*use --parent or --parent-dir' "$VHDTOOL" map "$d/orphan/c.vhd"
check "map --parent FILE: the parent's range is listed as depth 1" \
  sh -c "'$VHDTOOL' map --parent '$d/orphan/moved/renamed.vhd' '$d/orphan/c.vhd' |
         grep -Eq '^0x2000 +0x1000 +1 +$d/orphan/moved/renamed.vhd\$'"
check "check --parent FILE: the chain is examined, no problems" \
  "$VHDTOOL" check --parent "$d/orphan/moved/renamed.vhd" "$d/orphan/c.vhd"
check_fails "check without it: the missing parent is the problem" \
  'parent not found' "$VHDTOOL" check "$d/orphan/c.vhd"

# Locks: a chain being written by nbdkit cannot be converted.
mkdir "$d/lock"
"$VHDTOOL" create "$d/lock/a.vhd" 1M
if nbdkit -U "$d/lock/sock" -P "$d/lock/pid" "$PLUGIN" "$d/lock/a.vhd" > "$tmp/.nbdkit" 2>&1; then
  cleanup_fn "kill \$(cat '$d/lock/pid') 2>/dev/null"
  for i in $(seq 100); do [ -S "$d/lock/sock" ] && break; sleep 0.05; done
  nbdsh -u "nbd+unix:///?socket=$d/lock/sock" -c 'h.pwrite(b"x" * 512, 0); h.flush()' > /dev/null 2>&1
  check_fails "convert refuses a file nbdkit holds for writing" 'a\.vhd: file is in use' \
    "$VHDTOOL" convert "$d/lock/a.vhd" "$d/lock/o.vhd"
  kill "$(cat "$d/lock/pid")"
else
  fail "nbdkit serves a.vhd"
  diag_file "$tmp/.nbdkit"
fi

cd "$d" || exit 1
check_fails "convert without OUTPUT: exit 2" 'convert takes FILE and OUTPUT' "$VHDTOOL" convert a.vhd
check_fails "convert -t vhdx: exit 2" "unknown type 'vhdx'" "$VHDTOOL" convert -t vhdx a b
check_fails "convert --frob: exit 2" 'bad option' "$VHDTOOL" convert --frob a b

# ------------------------------------------------------------ progress

"$VHDTOOL" convert -p "$d/dyn/c2.vhd" "$d/p1.vhd" > "$tmp/p1.out" 2> "$tmp/p1.err"
[ ! -s "$tmp/p1.err" ] && [ ! -s "$tmp/p1.out" ] &&
  pass "-p with stderr not a terminal: no output" || fail "-p with stderr not a terminal: no output"
if script -qec "'$VHDTOOL' convert -p '$d/dyn/c2.vhd' '$d/p2.vhd'" /dev/null > "$tmp/p2.tty" 2>&1; then
  grep -q '(100\.00/100%)' "$tmp/p2.tty" &&
    pass "-p on a terminal draws the progress up to 100%" ||
    { fail "-p on a terminal draws the progress up to 100%"; diag_file "$tmp/p2.tty"; }
else
  fail "convert -p under a pseudo-terminal"
  diag_file "$tmp/p2.tty"
fi
"$VHDTOOL" convert -t raw "$d/p2.vhd" "$d/p2.raw" > /dev/null 2>&1
check_same "-p changes nothing in the output" "$d/dyn/expected.raw" "$d/p2.raw"

"$VHDTOOL" convert --help > "$tmp/.help" 2>&1 && grep -q '^Usage: vhdtool convert' "$tmp/.help" &&
  grep -q -- '--type' "$tmp/.help" && pass "convert --help describes convert" || fail "convert --help describes convert"

done_testing
