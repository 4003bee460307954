#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Interoperability with QEMU's vpc driver, in both directions.
#
# * VHDs made by qemu-img (fixed, dynamic, convert from raw, force_size)
#   and written by qemu-io are served by the plugin exactly as qemu-img
#   reads them, and as a raw model to which qemu-io applied the same
#   writes through its raw driver.  qemu's creator is "qemu", read by
#   CHS; qemu-img create rounds the size up so that CHS and current_size
#   agree: the plugin must export the footer's current_size.
# * A chain over a qemu-made parent, written through the plugin, is
#   copied by qemu-img itself from the NBD export into a qcow2 and
#   compared with the model by qemu-img compare.
# * Dynamic disks written through the plugin (vhdtool-made and
#   qemu-made) read in qemu-img as the plugin shows them, and writes
#   qemu-io makes afterwards show through the plugin.
# qemu has no differencing support, so it is never the oracle for a
# chain: there the model is raw bytes.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in qemu-img qemu-io nbdcopy nbdinfo; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"

M=$((1024 * 1024))
cd "$tmp"

# Footer current_size of a VHD (big-endian u64 at 48 in the EOF footer).
footer_size () {
  $PY -c '
import sys
f = open(sys.argv[1], "rb"); f.seek(-512, 2); b = f.read(512)
assert b[:8] == b"conectix", "no footer"
print(int.from_bytes(b[48:56], "big"))' "$1"
}

qemu_size () {
  qemu-img info -f vpc --output=json "$1" |
    $PY -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])'
}

plugin_size () {
  serve -r "$1" -- 'nbdinfo --size "$uri"'
}

# qemu-io writes: the same commands go to the VHD (vpc driver) and to a
# raw model (raw driver).  Offsets include odd ones, sub-sector lengths
# and 2 MiB block crossings.
QIO_CMDS=(
  -c "write -P 0xab 0 4096"
  -c "write -P 0xcd $((M + 100)) 3000"
  -c "write -P 0x5a $((2 * M - 1)) 2"
  -c "write -P 0x11 $((3 * M + 511)) $((2 * M + 3))"
  -c "write -P 0x77 $((7 * M)) 512"
)
qio_both () {
  qemu-io -f vpc "${QIO_CMDS[@]}" "$1" > /dev/null &&
  qemu-io -f raw "${QIO_CMDS[@]}" "$2" > /dev/null
}

# Plugin view, qemu view and model agree (over qemu's size; the plugin's
# size must be the footer's current_size).
compare_three () {
  local name=$1 file=$2 model=$3 qs fs ps
  qs=$(qemu_size "$file")
  fs=$(footer_size "$file")
  ps=$(plugin_size "$file")
  check "$name: nbdinfo --size ($ps) is the footer's current_size ($fs)" \
    test "$ps" = "$fs"
  check "$name: qemu's size ($qs) is not larger" test "$qs" -le "$fs"
  read_all plugin.raw "$file"
  qemu-img convert -f vpc -O raw "$file" qemu.raw
  check "$name: plugin view equals qemu-img's (over qemu's size)" \
    cmp -n "$qs" plugin.raw qemu.raw
  check "$name: plugin view equals the model" \
    cmp -n "$qs" plugin.raw "$model"
  check "$name: anything past qemu's size is zero in the plugin view" \
    test -z "$(tail -c +$((qs + 1)) plugin.raw | tr -d '\0' | head -c 1)"
}

# ------------------------------------------------------------ qemu-made

qemu-img create -q -f vpc -o subformat=fixed qfixed.vhd 10M
truncate -s "$(footer_size qfixed.vhd)" model-qfixed.raw
check "qemu-io writes into the qemu fixed VHD and the model" \
  qio_both qfixed.vhd model-qfixed.raw
compare_three "qemu fixed" qfixed.vhd model-qfixed.raw

qemu-img create -q -f vpc qdyn.vhd 20M
truncate -s "$(footer_size qdyn.vhd)" model-qdyn.raw
check "qemu-io writes into the qemu dynamic VHD and the model" \
  qio_both qdyn.vhd model-qdyn.raw
compare_three "qemu dynamic" qdyn.vhd model-qdyn.raw
check "qemu dynamic: the size was CHS-rounded (not 20 MiB)" \
  test "$(footer_size qdyn.vhd)" -ne $((20 * M))

# A random raw file with holes, converted by qemu-img.
$PY -c '
import random, sys
rng = random.Random(5)
with open(sys.argv[1], "wb") as f:
    f.truncate(9 * 1024 * 1024 + 4096)
    for i in range(40):
        f.seek(rng.randrange(0, 9 * 1024 * 1024)); f.write(rng.randbytes(rng.randint(1, 300000)))
' src.raw
RAWSIZE=$(stat -c %s src.raw)
for sub in dynamic fixed; do
  qemu-img convert -f raw -O vpc -o subformat=$sub src.raw conv-$sub.vhd
  cp src.raw model-conv.raw
  truncate -s "$(footer_size conv-$sub.vhd)" model-conv.raw
  compare_three "convert -O vpc $sub" conv-$sub.vhd model-conv.raw
done
qemu-img convert -f raw -O vpc -o force_size=on src.raw conv-force.vhd
check "force_size: the plugin exports exactly the raw size" \
  test "$(plugin_size conv-force.vhd)" = "$RAWSIZE"
compare_three "convert -O vpc force_size" conv-force.vhd src.raw

# ------------------------------------------------------------ chain -> qcow2

# ops.py URI MODEL SEED N: N random writes (odd offsets and lengths,
# some 4 KiB aligned) and a few zero requests, applied to the export
# and to the raw model.
cat > ops.py <<'EOF'
import nbd, random, sys
uri, model, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
h = nbd.NBD(); h.connect_uri(uri)
size = h.get_size()
m = bytearray(open(model, "rb").read())
assert len(m) == size, (len(m), size)
for i in range(n):
    off = rng.randrange(size - 1)
    ln = min(rng.randint(1, 200000), size - off)
    if rng.random() < 0.3:
        off &= ~4095; ln = min((ln + 4095) & ~4095, size - off)
    if rng.random() < 0.1:
        h.zero(ln, off); m[off:off + ln] = bytes(ln)
    else:
        d = rng.randbytes(ln); h.pwrite(d, off); m[off:off + ln] = d
h.flush()
assert h.pread(size, 0) == m, "read back differs"
open(model, "wb").write(m)
EOF

# qdyn.vhd (qemu-made, with qemu-io data) <- child (64K) <- gc (2M)
qemu-img convert -f vpc -O raw qdyn.vhd model-chain.raw
truncate -s "$(footer_size qdyn.vhd)" model-chain.raw
check "vhdtool child of the qemu disk" "$VHDTOOL" create -p qdyn.vhd -b 64K qchild.vhd
check "write into the child" \
  serve qchild.vhd -- "$PY $tmp/ops.py \"\$uri\" $tmp/model-chain.raw 1 60"
check "vhdtool grandchild" "$VHDTOOL" create -p qchild.vhd -b 2M qgc.vhd
check "write into the grandchild" \
  serve qgc.vhd -- "$PY $tmp/ops.py \"\$uri\" $tmp/model-chain.raw 2 60"
check "qemu-img convert of the NBD export to qcow2" \
  serve -r qgc.vhd -- "qemu-img convert -f raw -O qcow2 \"\$uri\" $tmp/chain.qcow2"
check "qemu-img compare: qcow2 copy equals the model" \
  qemu-img compare -f qcow2 -F raw chain.qcow2 model-chain.raw
check "the qcow2 has the export's size" \
  test "$(qemu-img info --output=json chain.qcow2 |
          $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" \
       = "$(stat -c %s model-chain.raw)"
check "qemu-img compare straight from the NBD export" \
  serve -r qgc.vhd -- "qemu-img compare -f raw -F raw \"\$uri\" $tmp/model-chain.raw"
check "the qemu parent still reads the same in qemu" \
  qemu-img compare -f vpc -F raw qdyn.vhd model-qdyn.raw

# ------------------------------------------------------------ plugin -> qemu

# vhdtool dynamic disk (creator "win ", read by current_size), written
# through the plugin, read by qemu.
check "vhdtool dynamic disk" "$VHDTOOL" create vdyn.vhd $((11 * M + 1536))
truncate -s $((11 * M + 1536)) model-vdyn.raw
check "write into it through the plugin" \
  serve vdyn.vhd -- "$PY $tmp/ops.py \"\$uri\" $tmp/model-vdyn.raw 3 80"
check "qemu agrees with the footer size" \
  test "$(qemu_size vdyn.vhd)" = $((11 * M + 1536))
compare_three "vhdtool dynamic written by the plugin" vdyn.vhd model-vdyn.raw
# ... and then qemu-io writes into it, which the plugin must show.
check "qemu-io writes into the plugin-written disk" \
  qio_both vdyn.vhd model-vdyn.raw
compare_three "plugin-written, then qemu-written" vdyn.vhd model-vdyn.raw

# qemu-made dynamic and fixed disks written through the plugin: new
# blocks placed after qemu's layout, qemu reads them back.
for f in qdyn qfixed conv-dynamic; do
  cp "$f.vhd" "w-$f.vhd"
  qemu-img convert -f vpc -O raw "$f.vhd" model-w.raw
  truncate -s "$(footer_size "$f.vhd")" model-w.raw
  check "$f: write through the plugin" \
    serve "w-$f.vhd" -- "$PY $tmp/ops.py \"\$uri\" $tmp/model-w.raw 4 80"
  compare_three "$f written by the plugin" "w-$f.vhd" model-w.raw
done

done_testing
