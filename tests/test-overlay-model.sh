#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Randomized model test of the overlay filter: thousands of requests
# per configuration (tests/opmodel.py: writes, zeros with and without
# NO_HOLE and FAST_ZERO, trims, flushes, reads and extents at arbitrary
# offsets and lengths, batches of many requests in flight), every answer
# checked against a byte-exact model of the disk, which is also read
# whole every 250 requests and at the end.
#
# Configurations: over nbdkit's file plugin (random data with holes,
# 4 MiB with 4 KiB overlay blocks, shared scope, a second connection
# reading the same disk; and 3 MiB + 1234 bytes, a size no sector or
# overlay block divides, per-connection scope, where a second connection
# must keep seeing the file's own content), over the memory plugin (all
# zeros below, odd size, 4 KiB blocks), with a size limit (a write
# refused with ENOSPC must change nothing), and over the vhd plugin (a
# differencing chain written by tests/vhdgen.py, and a VHDX one written
# by tests/vhdxgen.py).  Afterwards the files
# below are unchanged (sha256), and a new connection sees them again.
#
# MODEL_SEED (default 1) seeds the first configuration, each next one
# the seed after; MODEL_OPS (default 2000) is the number of requests
# per configuration.  A failure prints the request number, the seed and
# the last requests.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
[ -f "$FILTER" ] || skip_all "overlay filter not built"
command -v nbdcopy > /dev/null || skip_all "nbdcopy not installed"
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"
for p in file memory; do
  nbdkit $p --version > /dev/null 2>&1 || skip_all "nbdkit $p plugin missing"
done

seed=${MODEL_SEED:-1}
ops=${MODEL_OPS:-2000}
M=$((1024 * 1024))
K=1024
cd "$tmp"

# model NAME INITIAL OPMODEL-ARGS -- PLUGIN ARGS...: the overlay over
# PLUGIN, whose content is the raw file INITIAL; run opmodel.py with
# the next seed.  nbdkit's complaints about the zero-length requests
# opmodel.py sends on purpose are left out of the diagnostics.
model () {
  local name=$1 init=$2 margs=() s=$seed t0 st=0
  shift 2
  while [ "$1" != "--" ]; do
    margs+=("$1")
    shift
  done
  shift
  seed=$((seed + 1))
  rm -f "$tmp/.summary"
  t0=$SECONDS
  ovserve "$@" overlay-dir="$tmp" -- \
    "$PY $top_srcdir/tests/opmodel.py --seed $s --ops $ops \
       --name '$name' --initial $tmp/$init ${margs[*]} \"\$uri\"" \
    > "$tmp/.run" 2>&1 || st=$?
  grep -v 'invalid request: .* count=0$' "$tmp/.run" > "$tmp/.out"
  if [ "$st" -eq 0 ] && ! sanitizer_report "$tmp/.out"; then
    pass "$name: $ops requests match the model (seed $s, $((SECONDS - t0)) s)"
    grep "^$name: seed" "$tmp/.out" | tee "$tmp/.summary" | sed 's/^/# /'
  else
    fail "$name: requests match the model (seed $s, exit $st)"
    diag_file "$tmp/.out"
  fi
}

# rawfile FILE SIZE SEED: random data with holes in it.
rawfile () {
  $PY -c '
import random, sys
size, r = int(sys.argv[2]), random.Random(int(sys.argv[3]))
d = bytearray(size)
off = 0
while off < size:
    n = min(r.randint(1, 300000), size - off)
    if r.random() < 0.7:
        d[off:off + n] = r.randbytes(n)
    off += n + r.randint(0, 200000)
d[-700:] = r.randbytes(700)
open(sys.argv[1], "wb").write(d)' "$@"
}

# ------------------------------------------------------------ file plugin

rawfile disk4m.raw $((4 * M)) 11
rawfile disk-odd.raw $((3 * M + 1234)) 12
snap disk4m.raw disk-odd.raw

model "file 4M, 4K blocks, scope=server" disk4m.raw \
  --block 4096 --second shared --aio -- \
  file disk4m.raw overlay-block-size=4K
model "file 3M+1234, 64K blocks, scope=connection" disk-odd.raw \
  --block 65536 --second private --aio -- \
  file disk-odd.raw overlay-scope=connection
model "file 3M+1234, 4K blocks, limit 1M" disk-odd.raw \
  --block 4096 --enospc -- \
  file disk-odd.raw overlay-block-size=4K overlay-limit=1M
if [ "$ops" -ge 1000 ]; then
  check "... and the limit was reached (requests refused with ENOSPC)" \
    grep -q 'enospc [1-9]' "$tmp/.summary"
fi
unchanged "the files below are unchanged (sha256)"
check "a new connection sees the file again" \
  ovserve file disk-odd.raw -- "nbdcopy \"\$uri\" $tmp/seen.raw"
check_same "... byte for byte" seen.raw disk-odd.raw

# ------------------------------------------------------------ memory plugin

truncate -s $((3 * M + 1234)) zero-odd.raw
model "memory 3M+1234, 4K blocks" zero-odd.raw --block 4096 -- \
  memory $((3 * M + 1234)) overlay-block-size=4K

# ------------------------------------------------------------ vhd plugin

# A parent with random data in most of it (2 MiB blocks) and a child
# with 64 KiB blocks holding pieces of its own, some explicit zeros.
cat > chain.json <<EOF
{ "size": $((4 * M + 1536)), "seed": 7, "layers": [
  { "file": "parent.vhd", "type": "dynamic",
    "writes": [[0, $((3 * M))], [$((3 * M + 512 * K)), $((512 * K + 1536))]] },
  { "file": "child.vhd", "type": "differencing", "block_size": 65536,
    "writes": [[4096, 8192], [$((M - 1024)), 70000], [$((2 * M)), 65536, 0],
               [$((3 * M + 100 * K)), 300000], [$((4 * M)), 1536]] } ] }
EOF
vhdgen_make "vhdgen made the chain" chain.json chain
snap chain/parent.vhd chain/child.vhd
model "vhd chain, 4K blocks, scope=server" chain/expected.raw \
  --block 4096 --second shared --aio -- \
  "$PLUGIN" chain/child.vhd overlay-block-size=4K
model "vhd chain, 64K blocks, scope=connection" chain/expected.raw \
  --block 65536 --second private -- \
  "$PLUGIN" chain/child.vhd overlay-scope=connection
unchanged "the chain's files are unchanged (sha256)"

# The same over a VHDX chain (tests/vhdxgen.py): a parent with 2 MiB
# blocks, a child with 1 MiB blocks holding pieces, explicit zeros and
# a ZERO block hiding the parent.
cat > xchain.json <<EOF
{ "size": $((4 * M + 1536)), "seed": 8, "layers": [
  { "file": "parent.vhdx", "block_size": $((2 * M)),
    "writes": [[0, $((3 * M))], [$((3 * M + 512 * K)), $((512 * K + 1536))]] },
  { "file": "child.avhdx", "type": "differencing", "block_size": $M,
    "writes": [[4096, 8192], [$((M - 1024)), 70000], [$((3 * M + 100 * K)), 300000],
               [$((4 * M)), 1536]], "states": {"2": "zero"} } ] }
EOF
vhdxgen_make "vhdxgen made the VHDX chain" xchain.json xchain
snap xchain/parent.vhdx xchain/child.avhdx
model "vhdx chain, 4K blocks, scope=server" xchain/expected.raw \
  --block 4096 --second shared --aio -- \
  "$PLUGIN" xchain/child.avhdx overlay-block-size=4K
unchanged "the VHDX chain's files are unchanged (sha256)"

done_testing
