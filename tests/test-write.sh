#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Writing through the plugin into fixed, dynamic and differencing disks.
#
# Every write, zero and trim sent to the plugin is applied by the same
# helper to a raw "model" file (plain bytes, no VHD involved), and the
# guest view the plugin serves is compared with the model: in the same
# session, after a restart (metadata written at exit), and, for fixed
# and dynamic disks, through qemu-img as an independent VHD reader.
# Chains mix 2 MiB and 64 KiB blocks in both directions, and the writes
# include odd offsets and lengths, sub-sector pieces, block-crossing
# pieces and partial writes into blocks the top does not hold yet (whose
# unwritten sectors must keep showing the parent).

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in nbdsh nbdcopy nbdinfo qemu-img; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"

M=$((1024 * 1024))
# Not a multiple of any block size: the last block is partial.
SIZE=$((13 * M + 3 * 512))

# ------------------------------------------------------------ helpers

# The ops scripts below are run by tests/nbdops.py (see its header).
OPS="$PY $top_srcdir/tests/nbdops.py --trim-sectors"

# extents.py MAPJSON MODEL LOG...: check `nbdinfo --map --json` against
# what was written: the map covers the disk exactly; every sector some
# write touched is data; every sector no write or zero request touched
# is hole,zero; and every extent flagged zero really reads as zeros.
cat > "$tmp/extents.py" <<'EOF'
import json, sys
ext = json.load(open(sys.argv[1]))
model = open(sys.argv[2], "rb").read()
size = len(model)
nsec = (size + 511) // 512
written = bytearray(nsec)
zeroed = bytearray(nsec)
for log in sys.argv[3:]:
    for line in open(log):
        op, off, n = line.split()
        off, n = int(off), int(n)
        for s in range(off // 512, (off + n + 511) // 512):
            (written if op == "w" else zeroed)[s] = 1
pos = 0
errs = []
kind = bytearray(nsec)          # 1 data, 2 hole,zero, 3 other
for e in ext:
    off, n, t = e["offset"], e["length"], e["type"]
    if off != pos:
        errs.append("gap/overlap at %d (extent starts %d)" % (pos, off))
    pos = off + n
    if t & 2 and any(model[off:off + n]):
        errs.append("extent %d+%d flagged zero but holds data" % (off, n))
    for s in range(off // 512, (off + n + 511) // 512):
        kind[s] = 1 if t == 0 else 2 if t == 3 else 3
if pos != size:
    errs.append("map ends at %d, size %d" % (pos, size))
for s in range(nsec):
    if written[s] and kind[s] != 1:
        errs.append("sector %d was written but is not data" % s)
    if not written[s] and not zeroed[s] and kind[s] != 2:
        errs.append("sector %d was never written but is not hole,zero" % s)
if errs:
    sys.exit("\n".join(errs[:20]))
EOF

# maptype.py MAPJSON OFF LEN TYPE: every extent meeting [OFF, OFF+LEN)
# has TYPE.
cat > "$tmp/maptype.py" <<'EOF2'
import json, sys
off, n, t = map(int, sys.argv[2:5])
hit = [e for e in json.load(open(sys.argv[1]))
       if e["offset"] < off + n and off < e["offset"] + e["length"]]
bad = [e for e in hit if e["type"] != t]
if not hit or bad:
    sys.exit("unexpected extents: %r" % (bad or "none"))
EOF2

# Apply an ops file to FILE through the plugin and to MODEL.
apply_ops () {
  local file=$1 model=$2 ops=$3
  serve "$file" -- "$OPS \"\$uri\" $tmp/$model $tmp/$ops"
}

# Independent comparison of two byte ranges of two files.
same_range () {
  cmp -s <(tail -c +$(($3 + 1)) "$1" | head -c "$4") \
         <(tail -c +$(($3 + 1)) "$2" | head -c "$4")
}

nonzero_range () {
  tail -c +$(($2 + 1)) "$1" | head -c "$3" | tr -d '\0' | grep -q .
}

zero_range () {
  ! nonzero_range "$@"
}

cd "$tmp"

# ------------------------------------------------------------ the chain

# base: dynamic, 2 MiB blocks.  [8M, 10M) is never held by any layer.
check "create base" "$VHDTOOL" create base.vhd $SIZE
truncate -s $SIZE model.raw
cat > ops-base <<'EOF'
p 0 M BASE
p 2*M+512 2*M+1000 BASE
p 5*M+3 7 BASE
p 12*M SIZE-12*M BASE
p 6*M+100 300000 BASE
EOF
check "write a pattern into base through the plugin" \
  apply_ops base.vhd model.raw ops-base
cp model.raw model-base.raw
read_all out.raw base.vhd
check_same "base read back after restart equals its model" out.raw model-base.raw

# child: differencing, 64 KiB blocks over the 2 MiB base.
check "create child -b 64K" "$VHDTOOL" create -p base.vhd -b 64K child.vhd
cat > ops-child <<'EOF'
p M-3 70000 CHILD
p 3*M+100 5000 CHILD
p 5*M 64*K CHILD
w 12*M+65536-1 3 11
r 1 60 100000 0 8*M
r 2 20 3000 10*M SIZE
EOF
check "write into child through the plugin" \
  apply_ops child.vhd model.raw ops-child
cp model.raw model-child.raw
read_all out.raw child.vhd
check_same "child read back after restart equals its model" out.raw model-child.raw

# grandchild: differencing, 2 MiB blocks over the 64 KiB child.
check "create grandchild -b 2M" "$VHDTOOL" create -p child.vhd -b 2M gc.vhd
sha_base=$(sha256sum < base.vhd)
sha_child=$(sha256sum < child.vhd)

# Partial writes into blocks gc does not hold, where the parents do.
cat > ops-gc1 <<'EOF'
# one byte in the middle of base's pattern (gc block 1)
w 2*M+512+100 1 21
# sub-sector, inside one sector of the child's data (gc block 0)
w M+1001 5 22
# crossing the 2 MiB (gc) and 64 KiB (child) block boundary, odd both ends
w 2*M-7 13 23
v
EOF
check "partial writes into new grandchild blocks" \
  apply_ops gc.vhd model.raw ops-gc1
read_all out.raw gc.vhd
# The QEMU bug: a new block must not hide the parent's other sectors.
check "gc block 1: parent data still shows around the new byte" \
  same_range out.raw model.raw $((2 * M)) $((2 * M))
check "gc block 1: that range does hold parent data" \
  nonzero_range model-child.raw $((2 * M + 512)) 4096
check "gc block 0: child and base data still show" \
  same_range out.raw model.raw 0 $((2 * M))

cat > ops-gc2 <<'EOF'
# aligned
w 4*M 4096 31
w 6*M+64*K 128*K 32
# unaligned, crossing several blocks of every layer
w 3*M+511 2*M+3 33
# into the never-held range (hole) and next to it
w 9*M+7 100 34
# the very end of the disk (partial last block)
w SIZE-5 5 35
w SIZE-70001 70000 36
# FUA write
W 7*M+333 999 37
f
r 3 300 70000 0 8*M
r 4 200 700 10*M SIZE
v
EOF
check "random aligned and unaligned writes into the grandchild" \
  apply_ops gc.vhd model.raw ops-gc2
read_all out.raw gc.vhd
check_same "grandchild after restart equals the model" out.raw model.raw
check "base file unchanged (sha256)" test "$(sha256sum < base.vhd)" = "$sha_base"
check "child file unchanged (sha256)" test "$(sha256sum < child.vhd)" = "$sha_child"
read_all out.raw base.vhd
check_same "base view unchanged" out.raw model-base.raw
read_all out.raw child.vhd
check_same "child view unchanged" out.raw model-child.raw

# Extents.
serve -r gc.vhd -- 'nbdinfo --map --json "$uri"' > map.json
check "nbdinfo --map reflects the writes" \
  $PY extents.py map.json model.raw model.raw.log
check "[8M, 9M) (no layer holds it) is hole,zero" \
  $PY maptype.py map.json $((8 * M)) $M 3

# Zero and trim over ranges the parents hold, then restart.
cat > ops-gc3 <<'EOF'
# whole base pattern block 0 and the child's data in it
z 0 2*M
# unaligned, only parents hold data there
z 6*M+100-3 5001
# part held by gc, part by parents, across a gc block boundary
z 4*M-1000 2*M+1999
# a range nobody holds: stays hole
z 8*M+4096 8192
# trim over parent data and gc data: nbdops checks each sector reads
# as before or as zeros (gc's own sectors are punched out)
t 2*M 2*M
t 12*M SIZE-12*M
v
EOF
check "zero and trim requests" apply_ops gc.vhd model.raw ops-gc3
read_all out.raw gc.vhd
check_same "after zero/trim and restart the grandchild equals the model" \
  out.raw model.raw
check "zeroed parent-held range reads zero after restart" \
  zero_range out.raw 0 $((2 * M))
check "that range held parent data" nonzero_range model-child.raw 0 $((2 * M))
serve -r gc.vhd -- 'nbdinfo --map --json "$uri"' > map.json
check "nbdinfo --map after zero/trim" \
  $PY extents.py map.json model.raw model.raw.log
check "zeroing a range no layer holds leaves a hole" \
  $PY maptype.py map.json $((8 * M)) $M 3
check "the zeroed parent range is data (real zeros in the top)" \
  $PY maptype.py map.json 0 $((2 * M)) 0
check "base file still unchanged" test "$(sha256sum < base.vhd)" = "$sha_base"
check "child file still unchanged" test "$(sha256sum < child.vhd)" = "$sha_child"

# A second chain the other way round: 64 KiB blocks over 2 MiB blocks
# over 64 KiB blocks, written where the lower layers split blocks.
check "create a 64K dynamic base" "$VHDTOOL" create -b 64K b2.vhd $SIZE
check "create a 2M child of it" "$VHDTOOL" create -p b2.vhd -b 2M c2.vhd
check "create a child with the parent's block size (64K)" \
  "$VHDTOOL" create -p c2.vhd g2.vhd
truncate -s $SIZE model2.raw
cat > ops-b2 <<'EOF'
r 5 100 200000
EOF
cat > ops-c2 <<'EOF'
r 6 100 50000
z 3*M+17 70000
EOF
cat > ops-g2 <<'EOF'
r 7 300 5000
w 64*K-1 2 71
w 2*M-100 200 72
z 5*M+1 3
v
EOF
check "write into the 64K base" apply_ops b2.vhd model2.raw ops-b2
check "write into the 2M child" apply_ops c2.vhd model2.raw ops-c2
check "write into the 64K grandchild" apply_ops g2.vhd model2.raw ops-g2
read_all out.raw g2.vhd
check_same "64K/2M/64K chain after restart equals the model" out.raw model2.raw
serve -r g2.vhd -- 'nbdinfo --map --json "$uri"' > map2.json
check "nbdinfo --map of the 64K/2M/64K chain" \
  $PY extents.py map2.json model2.raw model2.raw.log

# Extreme block sizes: 4M (2-sector bitmap) <- 4K <- 512 <- 16M
# (4-sector bitmap, larger than the disk).
check "create a 4M dynamic base" "$VHDTOOL" create -b 4M b3.vhd $SIZE
check "create a 4K child" "$VHDTOOL" create -p b3.vhd -b 4K c3.vhd
check "create a 512-byte-block grandchild" "$VHDTOOL" create -p c3.vhd -b 512 g3.vhd
check "create a 16M great-grandchild" "$VHDTOOL" create -p g3.vhd -b 16M t3.vhd
truncate -s $SIZE model3.raw
printf 'r 11 60 300000\nw 4*M-1 2 111\n' > ops-b3
printf 'r 12 200 9000\nz 2*M+5 10000\n' > ops-c3
printf 'r 13 300 1500\nw SIZE-513 513 131\n' > ops-g3
printf 'r 14 200 20000\nz 100 700\nz 8*M-3 6\nv\n' > ops-t3
for f in b3 c3 g3 t3; do
  check "write into $f" apply_ops $f.vhd model3.raw ops-$f
  read_all out.raw $f.vhd
  check_same "$f chain after restart equals the model" out.raw model3.raw
done
serve -r t3.vhd -- 'nbdinfo --map --json "$uri"' > map3.json
check "nbdinfo --map of the 4M/4K/512/16M chain" \
  $PY extents.py map3.json model3.raw model3.raw.log

# Zero the whole of the 64K/2M/64K chain's top: nothing may show through.
printf 'z 0 SIZE\n' > ops-zero
check "zero the whole grandchild" apply_ops g2.vhd model2.raw ops-zero
read_all out.raw g2.vhd
check "after restart the whole disk reads zero" \
  cmp out.raw <(head -c $SIZE /dev/zero)

# ------------------------------------------------------------ fixed

check "create fixed" "$VHDTOOL" create -t fixed fixed.vhd $SIZE
truncate -s $SIZE model-fixed.raw
cat > ops-fixed <<'EOF'
r 8 200 100000
w 0 1 81
w SIZE-1 1 82
z M+1 4097
t 0 SIZE
v
EOF
check "write into the fixed disk" apply_ops fixed.vhd model-fixed.raw ops-fixed
check "fixed file size unchanged" test "$(stat -c %s fixed.vhd)" -eq $((SIZE + 512))
read_all out.raw fixed.vhd
check_same "fixed disk after restart equals the model" out.raw model-fixed.raw
qemu-img convert -f vpc -O raw fixed.vhd qemu.raw
check_same "qemu-img reads the fixed disk as the model" qemu.raw model-fixed.raw

# A differencing disk over the fixed one.
sha_fixed=$(sha256sum < fixed.vhd)
check "create a 64K child of the fixed disk" \
  "$VHDTOOL" create -p fixed.vhd -b 64K cfixed.vhd
cp model-fixed.raw model-cfixed.raw
printf 'r 15 200 5000\nz 3*M-1 3\nw 64*K-2 4 151\nv\n' > ops-cfixed
check "write into the child of the fixed disk" \
  apply_ops cfixed.vhd model-cfixed.raw ops-cfixed
read_all out.raw cfixed.vhd
check_same "child of the fixed disk after restart equals the model" \
  out.raw model-cfixed.raw
check "the fixed parent is unchanged" test "$(sha256sum < fixed.vhd)" = "$sha_fixed"

# ------------------------------------------------------------ dynamic

for bs in 2M 64K; do
  check "create dynamic -b $bs" "$VHDTOOL" create -b $bs dyn$bs.vhd $SIZE
  rm -f model-dyn.raw model-dyn.raw.log
  truncate -s $SIZE model-dyn.raw
  cat > ops-dyn <<'EOF'
# partial writes into new blocks: the rest of each block reads as zero
w 4*M+1000 10 91
w 6*M+511 2 92
f
EOF
  # While nbdkit still runs (metadata written by the flush), read the
  # file with qemu-img, which ignores bitmaps: the unwritten sectors of
  # the new blocks must really be zeros in the file.
  serve dyn$bs.vhd -- "$OPS \"\$uri\" $tmp/model-dyn.raw $tmp/ops-dyn &&
    qemu-img convert -U -f vpc -O raw $tmp/dyn$bs.vhd $tmp/qemu-live.raw"
  check_same "dyn $bs: qemu-img reads the flushed file (nbdkit running)" \
    qemu-live.raw model-dyn.raw
  read_all out.raw dyn$bs.vhd
  check_same "dyn $bs: partial writes into new blocks, plugin view" \
    out.raw model-dyn.raw
  check "dyn $bs: unwritten sectors of the new block read zero" \
    zero_range out.raw $((4 * M)) 1000
  check "dyn $bs: the written bytes are there" \
    nonzero_range out.raw $((4 * M + 1000)) 10
  check "dyn $bs: qemu-img (ignores bitmaps) reads zeros before them" \
    zero_range qemu-live.raw $((4 * M)) 1000
  check "dyn $bs: qemu-img reads zeros after them to the end of the block" \
    zero_range qemu-live.raw $((4 * M + 1010)) $((64 * 1024 - 1010))
  check "dyn $bs: qemu-img sees the written bytes" \
    same_range qemu-live.raw model-dyn.raw $((4 * M + 1000)) 10
  cat > ops-dyn <<'EOF'
r 9 150 100000
w 2*M-1 2 93
z 5*M-3 7
z 8*M 2*M
t 0 SIZE
w SIZE-3 3 94
EOF
  check "dyn $bs: random writes" apply_ops dyn$bs.vhd model-dyn.raw ops-dyn
  read_all out.raw dyn$bs.vhd
  check_same "dyn $bs: after restart equals the model" out.raw model-dyn.raw
  qemu-img convert -f vpc -O raw dyn$bs.vhd qemu.raw
  check_same "dyn $bs: qemu-img reads it as the model" qemu.raw model-dyn.raw
  serve -r dyn$bs.vhd -- 'nbdinfo --map --json "$uri"' > map.json
  check "dyn $bs: nbdinfo --map reflects the writes" \
    $PY extents.py map.json model-dyn.raw model-dyn.raw.log
done

done_testing
