#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool resize (Resize-VHD): VHD and VHDX grow, VHDX shrink down to
# the minimum size, the refusals (VHD shrink, differencing VHD,
# differencing VHDX shrink, below the minimum, a file in use: each
# leaves the file byte-identical), the minimum size in info, and a kill
# at every named step (VHDTOOL_TEST_KILL_AT) followed by a re-run.
#
# Content is checked against a model (the old content, plus zeros when
# growing, its prefix when shrinking) by independent readers: qemu-img
# for files without a parent (VHDX: 512-byte sectors, what it supports),
# tests/vhdxgen.py for every VHDX; and by vhdtool itself.  libvhdi's
# vhdiinfo must report the new size.
. "${top_srcdir:-.}/tests/functions.sh"

d=$tmp
have_qemu=; command -v qemu-img > /dev/null && have_qemu=1
have_vhdi=; command -v vhdiinfo > /dev/null && have_vhdi=1
cd "$d" || exit 1

# model SIZE OUT: a raw disk of SIZE bytes, zeros but for random data
# at a few places (the last one at the very end).
model () {
  local size out=$2
  size=$(numfmt --from=iec "$1")
  rm -f "$out"
  truncate -s "$size" "$out"
  dd if=/dev/urandom of="$out" bs=4096 count=3 conv=notrunc status=none
  dd if=/dev/urandom of="$out" bs=4096 count=5 seek=$((size / 4096 / 2)) \
    conv=notrunc status=none
  dd if=/dev/urandom of="$out" bs=512 count=1 seek=$((size / 512 - 1)) \
    conv=notrunc status=none
}
# put FILE RAW: write RAW into FILE through the plugin.
put () {
  serve "$1" -- "nbdcopy '$2' \"\$uri\"" > "$tmp/.put" 2>&1 ||
    { echo "Bail out! could not write $2 into $1"; cat "$tmp/.put"; exit 1; }
}
# put_at FILE RAW OFF LEN: write LEN bytes of RAW at OFF into FILE.
put_at () {
  serve "$1" -- "nbdsh -u \"\$uri\" -c 'import os; h.pwrite(os.pread(os.open(\"$2\", 0), $4, $3), $3); h.flush()'" > "$tmp/.put" 2>&1 ||
    { echo "Bail out! could not write $2 into $1"; cat "$tmp/.put"; exit 1; }
}
# grown RAW SIZE OUT: RAW cut or extended with zeros to SIZE.
grown () {
  cp --sparse=always "$1" "$3" && truncate -s "$2" "$3"
}
qfmt () {
  case $1 in *.vhdx|*.avhdx) echo vhdx ;; *) echo vpc ;; esac
}
# reads DESC FILE MODEL: vhdtool, vhdxgen.py (VHDX) and qemu-img (no
# parent, 512-byte sectors) read FILE as MODEL; qemu-img info and
# vhdiinfo report its size.
reads () {
  local desc=$1 f=$2 m=$3 size
  size=$(stat -c %s "$m")
  rm -f "$tmp/.r.raw"
  check "$desc: vhdtool convert -t raw" "$VHDTOOL" convert -t raw "$f" "$tmp/.r.raw"
  check_same "$desc: ... reads the model" "$tmp/.r.raw" "$m"
  rm -f "$tmp/.r.raw"
  case $f in
    *.vhdx|*.avhdx)
      check "$desc: vhdxgen.py reads it" $VHDXGEN read "$f" "$tmp/.r.raw"
      check_same "$desc: ... as the model" "$tmp/.r.raw" "$m"
      rm -f "$tmp/.r.raw" ;;
  esac
  if [ -n "$have_vhdi" ]; then
    check "$desc: vhdiinfo reports $size bytes" \
      sh -c "vhdiinfo '$f' | grep -q 'Media size.*($size bytes)'"
  fi
  [ -n "$have_qemu" ] && [ "${4:-}" != noqemu ] || return 0
  check "$desc: qemu-img info reports $size bytes" \
    sh -c "qemu-img info -f $(qfmt "$f") '$f' | grep -q 'virtual size.*($size bytes)'"
  check "$desc: qemu-img convert -O raw" \
    qemu-img convert -f "$(qfmt "$f")" -O raw "$f" "$tmp/.r.raw"
  check_same "$desc: ... reads the model" "$tmp/.r.raw" "$m"
  rm -f "$tmp/.r.raw"
}
# refused DESC REGEX FILE ARGS...: resize refuses, the file unchanged.
refused () {
  local desc=$1 re=$2 f=$3
  shift 3
  cp --sparse=always "$f" "$tmp/.before"
  check_fails "$desc" "$re" "$VHDTOOL" resize "$@"
  check "$desc: the file is unchanged" cmp "$tmp/.before" "$f"
}

# ------------------------------------------------------------ VHD

"$VHDTOOL" create -t fixed fixed.vhd 8M > /dev/null
model 8M m8.raw
put fixed.vhd m8.raw
grown m8.raw 20M m20.raw
check "fixed VHD: grow 8M -> 20M" "$VHDTOOL" resize fixed.vhd 20M
reads "fixed VHD grown" fixed.vhd m20.raw
vhdtool_check_clean "fixed VHD grown" fixed.vhd

# 100 MiB with 2 MiB blocks: 50 entries, one BAT sector (128) at 1536,
# the first block's bitmap at 3584; 2 GiB needs 1024 entries, eight
# sectors, up to 5632: the first block is in the way and moves.
"$VHDTOOL" create -t dynamic dyn.vhd 100M > /dev/null
model 100M m100.raw
put dyn.vhd m100.raw
grown m100.raw 2G m2g.raw
cp dyn.vhd dyn-orig.vhd
check "dynamic VHD: grow 100M -> 2G (the BAT grows, blocks move)" \
  "$VHDTOOL" resize dyn.vhd 2G
reads "dynamic VHD grown" dyn.vhd m2g.raw
vhdtool_check_clean "dynamic VHD grown" dyn.vhd
check "dynamic VHD: the dynamic header has 1024 BAT entries" \
  sh -c "$VHDGEN dump dyn.vhd | grep -q '^header.max_table_entries: 1024\$'"
check "dynamic VHD: block 0 moved (past the old end of file)" \
  test "$($VHDGEN dump dyn.vhd | sed -n 's/^bat\[0\]: sector \([0-9]*\).*/\1/p')" -gt 7
check "dynamic VHD: grow within the BAT (2G -> 2049M)" \
  "$VHDTOOL" resize dyn.vhd 2049M
grown m100.raw 2049M m2049.raw
reads "dynamic VHD grown again" dyn.vhd m2049.raw

# An empty dynamic VHD: its footer follows the BAT, where the BAT must
# grow; it moves past the table's new end first.
"$VHDTOOL" create -t dynamic empty.vhd 100M > /dev/null
cp empty.vhd empty-orig.vhd
check "empty dynamic VHD: grow 100M -> 2G (the footer moves)" \
  "$VHDTOOL" resize empty.vhd 2G
truncate -s 2G z2g.raw
reads "empty dynamic VHD grown" empty.vhd z2g.raw
vhdtool_check_clean "empty dynamic VHD grown" empty.vhd
# Small blocks: several blocks in the way, and a table end past the end
# of the first moved block.
"$VHDTOOL" create -t dynamic -b 4K small.vhd 512K > /dev/null
model 512K m512k.raw
put small.vhd m512k.raw
cp small.vhd small-orig.vhd
grown m512k.raw 8M m8m.raw
check "4K-block dynamic VHD: grow 512K -> 8M (many blocks move)" \
  "$VHDTOOL" resize small.vhd 8M
reads "4K-block dynamic VHD grown" small.vhd m8m.raw
vhdtool_check_clean "4K-block dynamic VHD grown" small.vhd

refused "VHD shrink refused" \
  'dyn\.vhd: cannot shrink a VHD file \(Hyper-V shrinks only VHDX\)' \
  dyn.vhd dyn.vhd 100M
refused "VHD --to-minimum refused" 'only a fixed or dynamic VHDX file' \
  dyn.vhd --to-minimum dyn.vhd
refused "size not a multiple of 512 refused" 'multiple of the 512-byte' \
  dyn.vhd dyn.vhd 700000000
refused "VHD past 2040 GiB refused" 'at most .* \(2040 GiB\)' \
  dyn.vhd dyn.vhd 2041G
"$VHDTOOL" create -p dyn.vhd dchild.vhd > /dev/null
refused "differencing VHD refused" \
  'dchild\.vhd: cannot resize a differencing VHD file: it must keep the size of its parent' \
  dchild.vhd dchild.vhd 3G
check "VHD parent of a child: grow (allowed)" "$VHDTOOL" resize dyn.vhd 3G
check_fails "usage: SIZE missing" 'resize takes FILE and SIZE' \
  "$VHDTOOL" resize dyn.vhd
check_fails "usage: a bad SIZE" "bad SIZE 'x'" "$VHDTOOL" resize dyn.vhd x
check_fails "a VHD child of a grown parent is refused (size mismatch)" \
  'size mismatch' "$VHDTOOL" info dchild.vhd

# ------------------------------------------------------------ VHDX

for ss in 512 4096; do
  for t in dynamic fixed; do
    n=x$t$ss
    "$VHDTOOL" create -t $t --logical-sector-size $ss $n.vhdx 40M > /dev/null
    model 40M m40.raw
    put $n.vhdx m40.raw
    q=; [ $ss = 512 ] || q=noqemu
    grown m40.raw 300M m300.raw
    check "$t VHDX ($ss): grow 40M -> 300M" "$VHDTOOL" resize $n.vhdx 300M
    reads "$t VHDX ($ss) grown" $n.vhdx m300.raw $q
    vhdtool_check_clean "$t VHDX ($ss) grown" $n.vhdx
    check "$t VHDX ($ss): info shows the minimum size (40M)" \
      sh -c "'$VHDTOOL' info $n.vhdx | grep -q '^minimum size: *41943040 '"
    check "$t VHDX ($ss): info --json shows it" \
      sh -c "'$VHDTOOL' info --json $n.vhdx | grep -q '\"minimum-size\": 41943040,'"
    refused "$t VHDX ($ss): shrink below the minimum refused" \
      "$n\\.vhdx: cannot shrink to 41938944 bytes: it holds data up to 41943040 bytes \\(minimum size\\)" \
      $n.vhdx $n.vhdx 41938944
    check "$t VHDX ($ss): shrink 300M -> 50M" "$VHDTOOL" resize $n.vhdx 50M
    grown m40.raw 50M m50.raw
    reads "$t VHDX ($ss) shrunk" $n.vhdx m50.raw $q
    vhdtool_check_clean "$t VHDX ($ss) shrunk" $n.vhdx
    check "$t VHDX ($ss): --to-minimum" \
      "$VHDTOOL" resize --to-minimum $n.vhdx
    reads "$t VHDX ($ss) at its minimum" $n.vhdx m40.raw $q
    vhdtool_check_clean "$t VHDX ($ss) at its minimum" $n.vhdx
  done
done
check "fixed VHDX: the shrink gave the space back" \
  test "$(stat -c %s xfixed512.vhdx)" -lt $((40 * 1048576 + 8 * 1048576))

# The BAT region is not moved: 1 MiB of it covers 128 GiB of 1 MiB
# blocks; past that, refused.
"$VHDTOOL" create -t dynamic -b 1M batcap.vhdx 100M > /dev/null
refused "VHDX: growing past its BAT region refused" \
  'batcap\.vhdx: cannot grow to 214748364800 bytes: its BAT region \(1048576 bytes\) holds 131072 entries, and 204849 are needed' \
  batcap.vhdx batcap.vhdx 200G
check "VHDX: growing up to its BAT region's capacity (100G)" \
  "$VHDTOOL" resize batcap.vhdx 100G
vhdtool_check_clean "VHDX grown to 100G" batcap.vhdx
rm -f batcap.vhdx

# Differencing: grows (zeros past the parent's end), never shrinks.
"$VHDTOOL" create -t dynamic xp.vhdx 40M > /dev/null
put xp.vhdx m40.raw
"$VHDTOOL" create -p xp.vhdx xc.avhdx > /dev/null
model 40M c40.raw
dd if=/dev/urandom of=c40.raw bs=4096 count=2 seek=100 conv=notrunc status=none
cp --sparse=always m40.raw cm.raw
dd if=c40.raw of=cm.raw bs=4096 count=2 skip=100 seek=100 conv=notrunc status=none
put_at xc.avhdx c40.raw 409600 8192
grown cm.raw 100M cm100.raw
check "differencing VHDX: grow 40M -> 100M" "$VHDTOOL" resize xc.avhdx 100M
reads "differencing VHDX grown" xc.avhdx cm100.raw noqemu
vhdtool_check_clean "differencing VHDX grown" xc.avhdx
check "differencing VHDX: info shows its size as its minimum" \
  sh -c "'$VHDTOOL' info xc.avhdx | grep -q '^minimum size: *104857600 '"
dd if=/dev/urandom of=cm100.raw bs=4096 count=1 seek=$((90 * 256)) conv=notrunc status=none
put_at xc.avhdx cm100.raw $((90 * 1048576)) 4096
reads "differencing VHDX written past its parent's end" xc.avhdx cm100.raw noqemu
refused "differencing VHDX: shrink refused" \
  'xc\.avhdx: cannot shrink a differencing disk' xc.avhdx xc.avhdx 60M
check_fails "differencing VHDX: merge into its smaller parent refused" \
  'merging into a smaller disk is not supported' "$VHDTOOL" merge xc.avhdx
"$VHDTOOL" create -p xp.vhdx xc2.avhdx > /dev/null
old_guid=$(vhdx_id xp.vhdx data_write_guid)
check "VHDX parent: grow" "$VHDTOOL" resize xp.vhdx 50M
check "VHDX parent: the resize gave it a new DataWriteGuid" \
  test "$(vhdx_id xp.vhdx data_write_guid)" != "$old_guid"
check_fails "VHDX child of a resized parent: refused (orphaned)" \
  'parent id mismatch' "$VHDTOOL" info xc2.avhdx

# ------------------------------------------------------------ large, sparse

"$VHDTOOL" create -t dynamic big.vhdx 1G > /dev/null
check "sparse VHDX: grow 1G -> 6G" "$VHDTOOL" resize big.vhdx 6G
truncate -s 6G big.raw
dd if=/dev/urandom of=big.raw bs=4096 count=1 seek=$((5 * 262144)) conv=notrunc status=none
put_at big.vhdx big.raw $((5 << 30)) 4096
reads "sparse VHDX at 6G" big.vhdx big.raw
check "sparse VHDX: minimum size past 5 GiB" \
  sh -c "'$VHDTOOL' info big.vhdx | grep -q '^minimum size: *$(((5 << 30) + 4096)) '"
check "sparse VHDX: --to-minimum" "$VHDTOOL" resize --to-minimum big.vhdx
grown big.raw $(((5 << 30) + 4096)) big2.raw
reads "sparse VHDX at its minimum" big.vhdx big2.raw
"$VHDTOOL" create -t fixed bigf.vhd 4G > /dev/null
check "sparse fixed VHD: grow 4G -> 5G" "$VHDTOOL" resize bigf.vhd 5G
if [ -n "$have_qemu" ]; then
  check "sparse fixed VHD: qemu-img info reports 5G" \
    sh -c "qemu-img info -f vpc bigf.vhd | grep -q 'virtual size.*($((5 << 30)) bytes)'"
fi
vhdtool_check_clean "sparse fixed VHD at 5G" bigf.vhd
check "sparse fixed VHD: still sparse" \
  test "$(du -k bigf.vhd | cut -f1)" -lt 1024
rm -f big.raw bigf.vhd big.vhdx

# ------------------------------------------------------------ in use

"$VHDTOOL" create lock.vhdx 8M > /dev/null
if nbdkit -U "$d/sock" -P "$d/pid" "$PLUGIN" "$d/lock.vhdx" > "$tmp/.nbdkit" 2>&1; then
  cleanup_fn "kill \$(cat '$d/pid') 2>/dev/null"
  for i in $(seq 100); do [ -S "$d/sock" ] && break; sleep 0.05; done
  nbdsh -u "nbd+unix:///?socket=$d/sock" -c 'h.pwrite(b"x" * 512, 0); h.flush()' > /dev/null 2>&1
  check_fails "resize refuses a file nbdkit holds for writing" \
    'lock\.vhdx: file is in use' "$VHDTOOL" resize lock.vhdx 16M
  kill "$(cat "$d/pid")"
else
  fail "nbdkit serves lock.vhdx"
  diag_file "$tmp/.nbdkit"
fi

# ------------------------------------------------------------ kills

# kills NAME ORIG SIZE OLD NEW STEP...: for each STEP, a copy of ORIG
# resized to SIZE is killed there; it then reads exactly OLD or NEW (a
# raw model), and the same command, run again, finishes the resize.
kills () {
  local name=$1 orig=$2 size=$3 old=$4 new=$5 step f st
  shift 5
  for step in "$@"; do
    f=$d/k.${orig##*.}
    rm -f "$f"
    cp --sparse=always "$orig" "$f"
    st=0
    VHDTOOL_TEST_KILL_AT=$step "$VHDTOOL" resize "$f" "$size" > "$tmp/.out" 2>&1 ||
      st=$?
    if [ "$st" -eq 137 ]; then
      pass "$name: killed at $step"
    else
      fail "$name: killed at $step (exit $st)"
      diag_file "$tmp/.out"
    fi
    rm -f "$tmp/.k.raw"
    if "$VHDTOOL" convert -t raw "$f" "$tmp/.k.raw" > "$tmp/.out" 2>&1 &&
       { $SPARSECMP "$tmp/.k.raw" "$old" > /dev/null 2>&1 ||
         $SPARSECMP "$tmp/.k.raw" "$new" > /dev/null 2>&1; }; then
      pass "$name: after a kill at $step it reads the old or the new disk"
    else
      fail "$name: after a kill at $step it reads the old or the new disk"
      diag_file "$tmp/.out"
    fi
    rm -f "$tmp/.k.raw"
    case $f in
      *.vhdx)
        if $VHDXGEN read "$f" "$tmp/.k.raw" > "$tmp/.out" 2>&1 &&
           { $SPARSECMP "$tmp/.k.raw" "$old" > /dev/null 2>&1 ||
             $SPARSECMP "$tmp/.k.raw" "$new" > /dev/null 2>&1; }; then
          pass "$name: ... so does vhdxgen.py"
        else
          fail "$name: ... so does vhdxgen.py"
          diag_file "$tmp/.out"
        fi
        rm -f "$tmp/.k.raw" ;;
    esac
    check "$name: re-run after a kill at $step" "$VHDTOOL" resize "$f" "$size"
    rm -f "$tmp/.k.raw"
    "$VHDTOOL" convert -t raw "$f" "$tmp/.k.raw" > /dev/null 2>&1
    check_same "$name: re-run after $step: the new disk" "$tmp/.k.raw" "$new"
    rm -f "$tmp/.k.raw"
    vhdtool_check_clean "$name: re-run after $step" "$f"
  done
}

# A qemu-made VHD (creator 'qemu': its readers size it by the CHS
# geometry) grows to the smallest geometry covering the size asked, as
# qemu-img sizes such files, with a warning naming it; vhdtool info and
# qemu-img agree on it.  35616768 bytes is geometry 1023/4/17, and the
# specification's geometry for 35651584 shows fewer sectors than that:
# taken as is, the "grow" would have cut the disk's last sectors.
if [ -n "$have_qemu" ]; then
  qemu-img create -q -f vpc -o subformat=dynamic q.vhd 35616768
  qemu-io -f vpc -c "write -P 0xab 35551232 65536" q.vhd > /dev/null
  for want in 35651584 1000000000; do
    if "$VHDTOOL" resize q.vhd $want > "$tmp/.out" 2>&1 &&
       grep -q "creator ('qemu') sizes disks by CHS geometry: rounded up to" "$tmp/.out"; then
      pass "qemu-made VHD grown to $want bytes: rounded up to a geometry, said"
    else
      fail "qemu-made VHD grown to $want bytes: rounded up to a geometry, said"
      diag_file "$tmp/.out"
    fi
    g=$(sed -n 's/.*rounded up to \([0-9]*\) bytes.*/\1/p' "$tmp/.out")
    check "... to $g bytes (not less than asked), what vhdtool info shows" \
      sh -c "[ -n '$g' ] && [ '$g' -ge $want ] && \"$VHDTOOL\" info --json q.vhd | grep -q '\"virtual-size\": $g,'"
    check "... and what qemu-img info shows" \
      sh -c "qemu-img info -f vpc q.vhd | grep -q 'virtual size.*($g bytes)'"
    rm -f "$tmp/.q.raw"
    "$VHDTOOL" convert -t raw q.vhd "$tmp/.q.raw" > /dev/null 2>&1
    check "... the data at the old end kept (vhdtool)" /usr/bin/python3 -c '
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(35551232)
    assert f.read(65536) == b"\xab" * 65536' "$tmp/.q.raw"
    rm -f "$tmp/.q.raw"
    check "... and qemu-io agrees" \
      sh -c "! qemu-io -f vpc -c 'read -P 0xab 35551232 65536' q.vhd | grep -q 'verification failed'"
  done
  "$VHDTOOL" create -t dynamic own.vhd 100M > /dev/null
  "$VHDTOOL" resize own.vhd 1000000000 > "$tmp/.out" 2>&1
  check "a VHD of ours grown the same way: no warning, info shows 1000000000" \
    sh -c "! grep -q geometry '$tmp/.out' && \"$VHDTOOL\" info --json own.vhd | grep -q '\"virtual-size\": 1000000000,'"
  rm -f q.vhd own.vhd
fi

# A BAT longer than the disk needs (blktap pre-sizes it; or a tool cut
# the disk down) whose extra entries hold anything, and bits set past
# the end in the last block's bitmap: invisible until a grow makes them
# part of the disk, which must then read zeros there.  3 MiB of 2 MiB
# blocks: entries 2 and 3 made to point at block 0's data, the header's
# entry count 4; block 1's bitmap bits for its second MiB set.
"$VHDTOOL" create -t dynamic -b 2M ob.vhd 3M > /dev/null
model 3M m3.raw
put ob.vhd m3.raw
/usr/bin/python3 -c '
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(512 + 16); bat = struct.unpack(">Q", f.read(8))[0]
    f.seek(bat); e0, e1 = struct.unpack(">II", f.read(8))
    assert e0 != 0xFFFFFFFF and e1 != 0xFFFFFFFF
    f.write(struct.pack(">II", e0, e0))           # entries 2 and 3
    f.seek(e1 * 512 + 256); f.write(b"\xff" * 256)  # bits of 1-2 MiB
    f.seek(512); h = bytearray(f.read(1024))
    struct.pack_into(">I", h, 28, 4)
    struct.pack_into(">I", h, 36, 0)
    struct.pack_into(">I", h, 36, ~sum(h) & 0xFFFFFFFF)
    f.seek(512); f.write(h)' ob.vhd
check "oversized BAT with stale entries: still reads the old disk" \
  sh -c "'$VHDTOOL' convert -t raw ob.vhd ob0.raw && cmp ob0.raw m3.raw"
rm -f ob0.raw
check "oversized BAT: resize 3M -> 8M" "$VHDTOOL" resize ob.vhd 8M
grown m3.raw 8M m3to8.raw
reads "oversized BAT grown to 8M: the old disk, then zeros" ob.vhd m3to8.raw
vhdtool_check_clean "oversized BAT grown to 8M" ob.vhd
rm -f ob.vhd m3.raw m3to8.raw

# info reads at most 256 MiB of data to find the minimum size: a fixed
# VHDX of 400 MiB whose last 399 MiB hold written zeros (not holes) gets
# an upper bound, said so; resize --to-minimum reads all it needs.
"$VHDTOOL" create -t fixed zf.vhdx 400M > /dev/null
serve zf.vhdx -- "nbdsh -u \"\$uri\" -c 'z = bytes(1 << 20)
h.pwrite(b\"x\" * 512, 0)
for i in range(1, 400): h.pwrite(z, i << 20)
h.flush()'" > "$tmp/.put" 2>&1 || diag_file "$tmp/.put"
"$VHDTOOL" info --json zf.vhdx > "$tmp/.info" 2>&1
check "info on 399 MiB of written zeros: the minimum size is a bound" \
  /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["minimum-size-exact"] is False, j
assert 512 <= j["minimum-size"] <= 400 << 20, j' "$tmp/.info"
check "... said so in text" sh -c "'$VHDTOOL' info zf.vhdx | grep -q '^minimum size: *at most '"
check "resize --to-minimum finds the exact minimum (512)" "$VHDTOOL" resize --to-minimum zf.vhdx
"$VHDTOOL" info --json zf.vhdx > "$tmp/.info" 2>&1
check "... info: 512 bytes, exact" /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["virtual-size"] == 512 and j["minimum-size"] == 512, j
assert j["minimum-size-exact"] is True, j' "$tmp/.info"
rm -f zf.vhdx

# Killed between its two footer writes, a resize leaves the copy at
# offset 0 stale; the next writer makes it the end's again (it is what
# an opener falls back to when a power loss takes the end's footer).
"$VHDTOOL" create -t dynamic fc.vhd 8M > /dev/null
VHDTOOL_TEST_KILL_AT=footer-written "$VHDTOOL" resize fc.vhd 64M > /dev/null 2>&1
check "killed after the end's footer: the copy at 0 differs" \
  sh -c "[ \"\$(head -c 512 fc.vhd | md5sum)\" != \"\$(tail -c 512 fc.vhd | md5sum)\" ]"
model 64M m64.raw
put_at fc.vhd m64.raw 0 4096
check "... after a write through the plugin, the copy at 0 is the end's" \
  sh -c "[ \"\$(head -c 512 fc.vhd | md5sum)\" = \"\$(tail -c 512 fc.vhd | md5sum)\" ]"
rm -f fc.vhd m64.raw

# A fixed VHDX whose file goes on past every structure it references
# (space a preallocating writer left, here holding 0xFF bytes): the
# blocks a grow puts there read as zeros.
"$VHDTOOL" create -t fixed pa.vhdx 40M > /dev/null
model 40M m40p.raw
put pa.vhdx m40p.raw
head -c $((8 << 20)) /dev/zero | tr '\0' '\377' >> pa.vhdx
check "fixed VHDX with 8 MiB of 0xFF past its structures: grow to 48M" \
  "$VHDTOOL" resize pa.vhdx 48M
grown m40p.raw 48M m48p.raw
reads "fixed VHDX grown over preallocated space: the new blocks read zeros" pa.vhdx m48p.raw
vhdtool_check_clean "fixed VHDX grown over preallocated space" pa.vhdx
rm -f pa.vhdx m40p.raw m48p.raw

"$VHDTOOL" create -t fixed kf.vhd 8M > /dev/null
put kf.vhd m8.raw
kills "fixed VHD grow" kf.vhd 20M m8.raw m20.raw \
  footer-copied old-footer-zeroed footer-written
kills "dynamic VHD grow" dyn-orig.vhd 2G m100.raw m2g.raw \
  footer-moved block-moved bat-extended header-written footer-written \
  footer-copy-written
truncate -s 100M z100.raw
kills "empty dynamic VHD grow" empty-orig.vhd 2G z100.raw z2g.raw \
  footer-moved bat-extended header-written footer-written
rm -f z2g.raw z100.raw
kills "4K-block dynamic VHD grow" small-orig.vhd 8M m512k.raw m8m.raw \
  footer-moved block-moved bat-extended header-written footer-written \
  footer-copy-written
"$VHDTOOL" create -t dynamic kd.vhdx 40M > /dev/null
put kd.vhdx m40.raw
kills "dynamic VHDX grow" kd.vhdx 300M m40.raw m300.raw \
  log-begun tail-zeroed size-logged log-ended
"$VHDTOOL" create -t fixed kx.vhdx 40M > /dev/null
put kx.vhdx m40.raw
kills "fixed VHDX grow" kx.vhdx 300M m40.raw m300.raw \
  log-begun space-added tail-zeroed size-logged log-ended
"$VHDTOOL" resize kx.vhdx 300M
kills "fixed VHDX shrink" kx.vhdx 50M m300.raw m50.raw \
  log-begun size-logged log-ended truncated

done_testing
