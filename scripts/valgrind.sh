#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Run the C unit tests and a set of vhdtool commands (create, info,
# check, map, convert, merge, set-parent, resize) on small files under
#   valgrind --error-exitcode=1 --leak-check=full
# against the in-tree build (scripts/build.sh first).  Prints one line
# per command and "N passed, N failed"; non-zero if any run reported a
# memory error or a definite leak.  scripts/test.sh (and so CI) runs it
# between the normal and the sanitizer suites (docs/reliability.md).
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
command -v valgrind > /dev/null || { echo "valgrind not installed" >&2; exit 1; }
scripts/build.sh || exit 1
make -j"$(nproc)" tests/unit-ondisk tests/unit-utf16 tests/unit-chain > /dev/null || exit 1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
vg () {   # vg NAME EXPECTED-EXIT CMD...: valgrind CMD; libtool wrappers resolved
  local name=$1 want=$2 st=0
  shift 2
  valgrind -q --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    "$@" > "$tmp/out" 2>&1 || st=$?
  if [ "$st" -eq "$want" ]; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name (exit $st, wanted $want)"
    tail -n 40 "$tmp/out"
  fi
}
real () {   # the real binary behind a libtool wrapper
  if [ -x "$(dirname "$1")/.libs/$(basename "$1")" ]; then
    echo "$(dirname "$1")/.libs/$(basename "$1")"
  else
    echo "$1"
  fi
}
export LD_LIBRARY_PATH="$top/lib/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for t in unit-ondisk unit-utf16 unit-chain; do
  vg "$t" 0 "$(real tests/$t)"
done
V=$(real "$top/tools/vhdtool")
cd "$tmp"
head -c 3145728 /dev/urandom > data.raw
vg "create dynamic" 0 "$V" create base.vhd 8M
vg "create fixed" 0 "$V" create -t fixed fixed.vhd 1M
dd if=data.raw of=fixed.vhd bs=1M count=1 conv=notrunc status=none
vg "convert fixed->dynamic" 0 "$V" convert fixed.vhd conv.vhd
vg "create differencing" 0 "$V" create -p conv.vhd child.vhd
vg "create grandchild" 0 "$V" create -p child.vhd gchild.vhd
vg "info" 0 "$V" info gchild.vhd
vg "check" 0 "$V" check gchild.vhd
vg "check --json" 0 "$V" check --json gchild.vhd
vg "map" 0 "$V" map gchild.vhd
vg "convert chain->dynamic" 0 "$V" convert gchild.vhd flat.vhd
vg "convert chain->fixed" 0 "$V" convert -t fixed gchild.vhd flatfixed.vhd
mkdir up
"$V" create -p child.vhd up/c.vhd > /dev/null
vg "info --confine-parents (parent outside: fails)" 1 \
  "$V" info --confine-parents up/c.vhd
vg "check --confine-parents (parent outside: problems)" 1 \
  "$V" check --confine-parents up/c.vhd
vg "map --confine-parents --parent-dir" 0 \
  "$V" map --confine-parents --parent-dir . up/c.vhd
vg "merge --confine-parents (parent outside: fails)" 1 \
  "$V" merge --confine-parents up/c.vhd
cp conv.vhd other.vhd
vg "set-parent" 0 "$V" set-parent child.vhd other.vhd
vg "merge" 0 "$V" merge gchild.vhd
# VHDX: creation, the writer (convert into a new VHDX, merge into a
# VHDX parent through the log), set-parent through one log entry.
vg "create VHDX" 0 "$V" create xbase.vhdx 64M
vg "create VHDX child" 0 "$V" create -p xbase.vhdx xchild.avhdx
vg "create VHDX grandchild" 0 "$V" create -p xchild.avhdx xgchild.avhdx
vg "convert VHD chain -> VHDX" 0 "$V" convert child.vhd xconv.vhdx
vg "convert VHDX -> VHD" 0 "$V" convert xconv.vhdx xback.vhd
vg "info VHDX" 0 "$V" info xgchild.avhdx
vg "check VHDX" 0 "$V" check xgchild.avhdx
vg "set-parent VHDX" 0 "$V" set-parent xgchild.avhdx xchild.avhdx
vg "merge VHDX" 0 "$V" merge --into xbase.vhdx xgchild.avhdx
# compact: the flattened dynamic VHD, the VHDX merged into.
vg "compact VHD" 0 "$V" compact flat.vhd
vg "compact VHDX" 0 "$V" compact xbase.vhdx
vg "compact fixed (refused)" 1 "$V" compact fixed.vhd
# resize: VHD grow (the BAT grown, blocks moved), VHDX grow and shrink
# (one log session), the minimum size; a refused shrink.
vg "resize VHD (grow, blocks moved)" 0 "$V" resize conv.vhd 600M
vg "resize VHD shrink (refused)" 1 "$V" resize conv.vhd 1M
vg "resize VHDX (grow)" 0 "$V" resize xconv.vhdx 2G
vg "resize VHDX --to-minimum" 0 "$V" resize --to-minimum xconv.vhdx
vg "info VHDX (minimum size)" 0 "$V" info xconv.vhdx
head -c 4096 /dev/urandom > junk.vhd
vg "check of junk (exit 2)" 2 "$V" check junk.vhd
vg "info of junk (fails)" 1 "$V" info junk.vhd
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
