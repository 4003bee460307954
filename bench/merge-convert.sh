#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Merge and convert of a 1 GiB VHD chain against cp of the same data.
#
#   bench/merge-convert.sh [DIR]      (default: a new directory in /tmp)
#
# The chain: a 1 GiB dynamic base holding 512 MiB of random data and a
# differencing child holding another 512 MiB, half of it over the
# base's data: 1 GiB of files, 768 MiB of visible data.  Each operation
# is timed against cp of the files whose data it moves:
#   convert (every type)  vs  cp base.vhd child.vhd
#   merge child -> base   vs  cp child.vhd
# Both sides are timed twice: "cached" (files in the page cache, what
# cp usually sees) and, when the caches can be dropped (root), "cold".
# Every vhdtool operation syncs what it wrote (it must, to be crash
# safe); cp does not, so cp is timed with and without a final sync.
# Prints a table of times and ratios (vhdtool / cp+sync).
set -euo pipefail
cd "$(dirname "$0")/.."
VHDTOOL=$PWD/tools/vhdtool
PLUGIN=$PWD/plugin/.libs/nbdkit-vhd-plugin.so
[ -x "$VHDTOOL" ] && [ -f "$PLUGIN" ] || { echo "build first (make)"; exit 1; }

dir=${1:-$(mktemp -d /tmp/vhd-bench.XXXXXX)}
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
M=$((1024 * 1024))

can_drop=false
if [ -w /proc/sys/vm/drop_caches ] && (sync; echo 3 > /proc/sys/vm/drop_caches) 2> /dev/null; then
  can_drop=true
fi
drop () { if $can_drop; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }

# fill VHD CHUNK_MIB STRIDE_MIB FIRST_MIB: random data in CHUNK_MIB out
# of every STRIDE_MIB, from FIRST_MIB on, written through the plugin.
fill () {
  nbdkit -U - "$PLUGIN" "$1" --run "/usr/bin/python3 -c '
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
M = 1 << 20
chunk, stride, first = map(int, sys.argv[2:5])
for off in range(first * M, h.get_size(), stride * M):
    for o in range(off, off + chunk * M, 4 * M):
        h.pwrite(os.urandom(4 * M), o)
h.flush()
' \"\$uri\" $2 $3 $4"
}

echo "building the chain in $dir ..."
"$VHDTOOL" create "$dir/base.vhd" 1G
fill "$dir/base.vhd" 4 8 0                # 512 MiB: the first half of each 8 MiB
"$VHDTOOL" create -p "$dir/base.vhd" "$dir/child.vhd"
fill "$dir/child.vhd" 4 8 2               # 512 MiB, half over the base's data
sync
mkdir "$dir/work"

# timeit CMD...: seconds (wall clock) to run CMD, the median of five
# runs; before each, pending writeback is flushed (so that no run pays
# for the previous one) and prep sets up the page cache; after each,
# cleanup removes what it wrote.
timeit () {
  local t0 t1 i times=()
  for i in 1 2 3 4 5; do
    sync
    prep
    t0=$(date +%s.%N)
    "$@" > /dev/null 2>&1
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
    cleanup
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 3p
}

results=()
# run MODE: time everything with the page cache warm or cold.
run () {
  local mode=$1 t
  rm -rf "$dir/work"/*
  prep () {
    if [ "$mode" = cold ]; then drop; else cat "$dir"/*.vhd > /dev/null; fi
  }
  cleanup () { rm -f "$dir/work"/*; }

  cp_chain=$(timeit cp "$dir/base.vhd" "$dir/child.vhd" "$dir/work/")
  cp_chain_sync=$(timeit sh -c "cp '$dir/base.vhd' '$dir/child.vhd' '$dir/work/' && sync")
  results+=("$mode|cp base.vhd child.vhd (1 GiB)|$cp_chain|")
  results+=("$mode|cp base.vhd child.vhd + sync|$cp_chain_sync|")
  for type in dynamic fixed raw; do
    t=$(timeit "$VHDTOOL" convert -t "$type" "$dir/child.vhd" "$dir/work/out")
    results+=("$mode|convert -t $type|$t|$(echo "scale=2; $t / $cp_chain_sync" | bc)")
  done

  cp_child=$(timeit cp "$dir/child.vhd" "$dir/work/")
  cp_child_sync=$(timeit sh -c "cp '$dir/child.vhd' '$dir/work/' && sync")
  results+=("$mode|cp child.vhd (512 MiB)|$cp_child|")
  results+=("$mode|cp child.vhd + sync|$cp_child_sync|")
  # Merge works on copies (it removes child.vhd); making them is not
  # timed: prep makes them, and the cache is then set up for the
  # copies.
  prep () {
    rm -f "$dir/work"/*
    cp "$dir/base.vhd" "$dir/child.vhd" "$dir/work/"
    sync
    if [ "$mode" = cold ]; then drop; else cat "$dir/work"/*.vhd > /dev/null; fi
  }
  t=$(timeit "$VHDTOOL" merge "$dir/work/child.vhd")
  results+=("$mode|merge child.vhd into base.vhd|$t|$(echo "scale=2; $t / $cp_child_sync" | bc)")
  rm -f "$dir/work"/*
}

run cached
if $can_drop; then run cold; fi

printf '\n%-7s %-34s %9s %10s\n' cache operation seconds "vs cp+sync"
for r in "${results[@]}"; do
  IFS='|' read -r mode op t ratio <<< "$r"
  printf '%-7s %-34s %9.2f %10s\n' "$mode" "$op" "$t" "${ratio:--}"
done
