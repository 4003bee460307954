#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The randomized model test of the write path (test-write-model.sh's
# tests/opmodel.py run: writes, zeros, trims, flushes, reads and extents
# at arbitrary offsets and lengths, batches in flight) over VHDX files
# made by the independent generator (tests/vhdxgen.py): fixed (with
# data), dynamic (empty) and differencing (over a parent holding random
# data; and a second child grown by vhdtool resize past the parent's
# end), each with 512 and 4096-byte logical sectors, all with 1 MiB
# blocks so that a run touches many blocks, and a size that leaves the
# last block partial.
#
# After each run nbdkit exits, and then (vhdx_written_ok, functions.sh):
# the plugin, restarted, reads the final model; so does vhdxgen.py's
# reader; vhdtool check is clean; the log is empty; vhdiinfo opens the
# file; qemu-img checks and reads the fixed and dynamic 512-byte-sector
# files as the model.  The parents are unchanged (sha256).
#
# MODEL_SEED (default 201) seeds the first disk, each next one the seed
# after; MODEL_OPS (default 3000) is the number of requests per disk.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
command -v nbdcopy > /dev/null || skip_all "nbdcopy not installed"
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"

seed=${MODEL_SEED:-201}
ops=${MODEL_OPS:-3000}
M=$((1024 * 1024))
cd "$tmp"

for ss in 512 4096; do
  # 12 blocks and 3 sectors.
  size=$((12 * M + 3 * ss))
  mkdir -p "s$ss"
  cat > "s$ss.json" <<EOF
{ "size": $size, "seed": $ss, "block_size": $M, "logical_sector_size": $ss,
  "layers": [
  { "file": "fixed.vhdx", "type": "fixed", "expected": "fixed.raw",
    "writes": [[0, $M], [$((2 * M + 100)), 500000], [$((size - 4096)), 4096]] },
  { "file": "dyn.vhdx", "expected": "dyn.raw" },
  { "file": "parent.vhdx", "expected": "parent.raw",
    "writes": [[0, $((7 * M))],
               [$((7 * M + 512 * 1024)), $((size - 7 * M - 512 * 1024))]] },
  { "file": "child.avhdx", "type": "differencing" } ] }
EOF
  vhdxgen_make "$ss-byte sectors: vhdxgen made fixed, dynamic, parent, child" \
    "s$ss.json" "s$ss"
  snap "s$ss/parent.vhdx"

  name="fixed, $ss-byte sectors"
  run_opmodel "$name" "s$ss/fixed.vhdx" "s$ss/fixed.raw" --block $M --aio &&
    vhdx_written_ok "$name" "s$ss/fixed.vhdx" "s$ss/fixed.vhdx.model"
  name="dynamic, $ss-byte sectors"
  run_opmodel "$name" "s$ss/dyn.vhdx" "s$ss/dyn.raw" --block $M --aio \
    --second shared &&
    vhdx_written_ok "$name" "s$ss/dyn.vhdx" "s$ss/dyn.vhdx.model"
  name="differencing, $ss-byte sectors"
  run_opmodel "$name" "s$ss/child.avhdx" "s$ss/parent.raw" --block $M --aio &&
    vhdx_written_ok "$name" "s$ss/child.avhdx" "s$ss/child.avhdx.model"
  # A child grown by vhdtool resize past its parent's end (by 3 blocks
  # and 5 sectors: its last block partial, the parent's too): zeros
  # there, over a parent that ends inside a block of the child.
  name="grown differencing, $ss-byte sectors"
  grown=$((size + 3 * M + 5 * ss))
  "$VHDTOOL" create -p "s$ss/parent.vhdx" "s$ss/grown.avhdx" > /dev/null &&
    "$VHDTOOL" resize "s$ss/grown.avhdx" $grown ||
    echo "Bail out! could not make the grown child"
  cp "s$ss/parent.raw" "s$ss/grown.raw"
  truncate -s $grown "s$ss/grown.raw"
  run_opmodel "$name" "s$ss/grown.avhdx" "s$ss/grown.raw" --block $M --aio &&
    vhdx_written_ok "$name" "s$ss/grown.avhdx" "s$ss/grown.avhdx.model"
  unchanged "$ss-byte sectors: the parent is unchanged (sha256)"
done

done_testing
