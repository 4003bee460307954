#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The block cache under a budget so small that it evicts all the time
# (lib/resolve.c, "Memory"): the request mix of tests/opmodel.py
# (writes, zeros, trims and reads at arbitrary offsets and lengths,
# batches of requests in flight, flushes among them, and a second
# connection reading) against the vhd plugin serving a three-layer
# differencing chain whose middle layer is split into small pieces,
# every answer checked against a byte-exact model.
#
# What can go wrong if eviction is wrong: an entry dropped while its
# bitmap bits exist only in memory (written since the last flush, or
# copied by a flush that has not written them yet) is read back from
# the file without them, and the sectors written show the parent's data
# again; an entry freed while another request uses it is a
# use-after-free (the sanitizer builds of scripts/test.sh catch those).
#
# Flushes are slowed down (tests/fdatasync-delay-shim.c) so that
# requests racing a flush evict while it is between marking entries
# clean and writing their bitmaps.
#
# The plugin's debug output (-D vhd.verbose=1) reports, at exit, how
# many entries were filled and evicted: the test insists that eviction
# happened, and a lot, so it cannot pass with a cache that never evicts.
#
# MODEL_SEED (default 301) seeds the first run, each next one the seed
# after; MODEL_OPS (default 3000) is the number of requests per run.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"

seed=${MODEL_SEED:-301}
ops=${MODEL_OPS:-3000}
M=$((1024 * 1024))
K=1024
SIZE=$((4 * M + 1536))
cd "$tmp"

# The middle layer holds every other 2 KiB of its first 2 MiB (4 KiB
# blocks): a top block over it resolves into many runs, some entries
# cost several KB, more than the whole budget of the first run.
writes=
for ((o = 0; o < 2 * M; o += 4 * K)); do
  writes+="[$o, 2048], "
done
cat > chain.json <<EOF
{ "size": $SIZE, "seed": 11, "layers": [
  { "file": "base.vhd", "type": "dynamic", "block_size": 65536,
    "writes": [[0, $((3 * M))], [$((3 * M + 512 * K)), $((512 * K + 1536))]] },
  { "file": "mid.vhd", "type": "differencing", "block_size": 4096,
    "writes": [$writes[$((3 * M + 100 * K)), 300000], [$((4 * M)), 1536]] },
  { "file": "top.vhd", "type": "differencing", "block_size": 65536,
    "writes": [[4096, 8192], [$((M - 1024)), 70000], [$((2 * M)), 65536, 0]] } ] }
EOF
vhdgen_make "vhdgen made the chain" chain.json chain
snap chain/base.vhd chain/mid.vhd

shim=$tmp/fdatasync-delay.so
cc -shared -fPIC -o "$shim" "$top_srcdir/tests/fdatasync-delay-shim.c" -ldl ||
  fail "build tests/fdatasync-delay-shim.c"

# model NAME FILE INITIAL BUDGET BLOCK: serve FILE (read-write, a cache
# of BUDGET bytes) and run opmodel.py from INITIAL with the next seed.
# Then: the model held, evictions happened, and the file reopened with
# the default budget is the final model.
model () {
  local name=$1 file=$2 init=$3 budget=$4 block=$5
  local fills evictions
  LD_PRELOAD=$shim OPMODEL_SERVE="-v -D vhd.verbose=1" \
    OPMODEL_PARAMS="cache-size=$budget" \
    run_opmodel "$name" "$file" "$tmp/$init" --block "$block" --aio \
      --batch-flush --flush-weight 6 --second shared || return

  # "FILE: block cache: F fills, E evictions, peak P bytes, budget B bytes"
  read -r fills evictions < <(
    sed -n 's/.*block cache: \([0-9]*\) fills, \([0-9]*\) evictions.*/\1 \2/p' \
      "$tmp/.run" | tail -n 1)
  # Most fills must have evicted something (the budget holds a handful
  # of entries at most).
  if [ -n "$evictions" ] && [ "$evictions" -ge 100 ] &&
     [ $((2 * evictions)) -ge "$fills" ]; then
    pass "$name: the cache evicted ($fills fills, $evictions evictions)"
  else
    fail "$name: the cache evicted (fills '$fills', evictions '$evictions')"
    grep 'block cache' "$tmp/.run" > "$tmp/.cache"
    diag_file "$tmp/.cache"
  fi

  rm -f seen.raw
  reads_as "$name: reopened after nbdkit exited, the disk is the model" \
    "$file.model" "$file"
  check "$name: vhdtool check finds nothing wrong" "$VHDTOOL" check "$file"
}

model "64K blocks, 4K budget" chain/top.vhd chain/expected.raw 4K 65536

check "create a 4K-block child of the middle layer" \
  "$VHDTOOL" create -p chain/mid.vhd -b 4K top4.vhd
read_all mid.raw chain/mid.vhd
model "4K blocks, 16K budget" top4.vhd mid.raw 16K 4096

unchanged "the layers below are unchanged (sha256)"

# cache-size= must be a size, and not 0.
for bad in 0 lots; do
  if nbdkit -U - "$PLUGIN" chain/top.vhd cache-size=$bad --run true \
       > bad.log 2>&1; then
    fail "cache-size=$bad is refused"
  elif grep -q "cache-size\|could not parse size" bad.log; then
    pass "cache-size=$bad is refused"
  else
    fail "cache-size=$bad is refused with a message about it"
    diag_file bad.log
  fi
done

# vhdtool's --cache-size: the whole-chain commands with a tiny cache.
"$VHDTOOL" map chain/top.vhd > map-default.txt 2>&1
check "map --cache-size 4K" sh -c \
  "'$VHDTOOL' map --cache-size 4K chain/top.vhd > map-4k.txt"
check_same "... the same map as with the default" map-4k.txt map-default.txt
check "convert --cache-size 4K to a dynamic disk, 4K blocks" \
  "$VHDTOOL" convert --cache-size 4K top4.vhd flat.vhd
reads_as "... it reads as the model" top4.vhd.model flat.vhd
# Merge writes every block of the child into its parent: with a 4K
# budget it must flush as it goes (lib/merge.c, flush_if_pinned).
cp -r chain mchain
check "merge --cache-size 4K" "$VHDTOOL" merge --cache-size 4K mchain/top.vhd
reads_as "... the parent now reads as the child did" \
  chain/top.vhd.model mchain/mid.vhd

done_testing
