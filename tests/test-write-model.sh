#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Randomized model test of the plugin's write path: the request mix of
# tests/opmodel.py (writes, zeros, trims, flushes, reads and extents at
# arbitrary offsets and lengths, batches of requests in flight) sent to
# the vhd plugin serving a fixed disk, a dynamic disk (64 KiB blocks,
# empty at first) and a differencing child (64 KiB blocks) of a parent
# holding random data, every answer checked against a byte-exact model.
# Trimmed bytes may read as their old value or as zeros (the plugin's
# trim keeps data today; both are valid NBD semantics).
#
# After each run nbdkit exits, and then: the disk, opened again, is the
# final model byte for byte; vhdtool check finds nothing wrong; the
# parent is unchanged (sha256); and qemu-img, an independent VHD
# reader, reads the fixed and dynamic disks as the model (not the
# differencing one: qemu does not follow our parents).
#
# MODEL_SEED (default 101) seeds the first disk, each next one the seed
# after; MODEL_OPS (default 3000) is the number of requests per disk.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
command -v nbdcopy > /dev/null || skip_all "nbdcopy not installed"
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"
QEMU=
command -v qemu-img > /dev/null && QEMU=1

seed=${MODEL_SEED:-101}
ops=${MODEL_OPS:-3000}
M=$((1024 * 1024))
K=1024
# Not a multiple of either block size: the last block is partial.
SIZE=$((4 * M + 1536))
cd "$tmp"

# model NAME FILE INITIAL OPMODEL-ARGS...: run_opmodel (functions.sh),
# then the checks after a clean exit.
model () {
  local name=$1 file=$2
  run_opmodel "$@" || return 0
  reads_as "$name: reopened after nbdkit exited, the disk is the model" \
    "$file.model" "$file"
  check "$name: vhdtool check finds nothing wrong" "$VHDTOOL" check "$file"
}

# qemu_reads NAME FILE: qemu-img's reading of FILE is FILE.model.
qemu_reads () {
  if [ -z "$QEMU" ]; then
    skip "$1: qemu-img not installed"
    return
  fi
  rm -f qemu.raw
  check "$1: qemu-img convert -f vpc" \
    qemu-img convert -f vpc -O raw "$2" qemu.raw
  check_same "$1: qemu-img reads the disk as the model" qemu.raw "$2.model"
}

# Disks with data from the independent writer (tests/vhdgen.py).
cat > gen.json <<EOF
{ "size": $SIZE, "seed": 9, "layers": [
  { "file": "fixed.vhd", "type": "fixed", "expected": "fixed.raw",
    "writes": [[0, $M], [$((2 * M + 100)), 500000], [$((SIZE - 4096)), 4096]] },
  { "file": "parent.vhd", "type": "dynamic", "expected": "parent.raw",
    "writes": [[0, $((3 * M))], [$((3 * M + 512 * K)), $((512 * K + 1536))]] } ] }
EOF
vhdgen_make "vhdgen made a fixed disk and a parent" gen.json .

model "fixed" fixed.vhd fixed.raw --block 65536 --aio
qemu_reads "fixed" fixed.vhd

check "create a dynamic disk, 64K blocks" \
  "$VHDTOOL" create -t dynamic -b 64K dyn.vhd $SIZE
truncate -s $SIZE zero.raw
model "dynamic, 64K blocks" dyn.vhd zero.raw --block 65536 --aio \
  --second shared
qemu_reads "dynamic, 64K blocks" dyn.vhd

snap parent.vhd
check "create a differencing child, 64K blocks" \
  "$VHDTOOL" create -p parent.vhd -b 64K child.vhd
model "differencing child" child.vhd parent.raw --block 65536 --aio
unchanged "the parent is unchanged (sha256)"

done_testing
