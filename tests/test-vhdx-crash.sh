#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Crash consistency of the VHDX write path: test-crash.sh's kill loop
# (crash_iterations in functions.sh: random sector writes and flushes,
# SIGKILL at a random moment, then every write acknowledged before a
# completed flush must read back and no sector may hold data never
# written to it) over a dynamic VHDX (empty at first) and a
# differencing one (1 MiB blocks) whose parent holds data, both made by
# tests/vhdxgen.py.  After every kill, besides that:
#   - vhdtool check finds nothing wrong but, at most, the file's pending
#     log (a kill may leave one: it is replayed at the next open);
#   - vhdxgen.py's independent reader (replaying the log in memory)
#     reads what the plugin read;
#   - after every other kill, a writable session that only reads
#     replays the log into the file: afterwards the log is empty, the
#     content is the same, the DataWriteGuid has not changed, vhdtool
#     check is clean.  After the other kills the log stays pending, so
#     that the next session replays it before it writes.
# The parent is never modified (sha256).
#
# CRASH_ITERATIONS (default 4) and CRASH_SEED as in test-crash.sh.

. "${top_srcdir:-.}/tests/functions.sh"

crash_setup
SIZE=$((24 * M))
ZG=00000000-0000-0000-0000-000000000000
cd "$tmp"

crash_checks () {
  local i=$1 file=$2 dwg0
  vhdtool_check_clean "kill $i" "$file" \
    "$(re "$(basename "$file")"): \[log\] .*needs replaying"
  rm -f vx.raw
  check "kill $i: vhdxgen reads the file" $VHDXGEN read "$file" vx.raw
  check_same "kill $i: ... as the plugin does" vx.raw disk.raw
  [ $((i % 2)) -eq 1 ] || return 0
  dwg0=$(vhdx_id "$file" data_write_guid)
  rm -f rw.raw
  check "kill $i: a writable session that only reads" \
    serve "$file" -- "nbdcopy \"\$uri\" $tmp/rw.raw"
  check_same "kill $i: ... reads the same" rw.raw disk.raw
  check "kill $i: ... leaves the log empty" \
    test "$(vhdx_id "$file" log_guid)" = $ZG
  check "kill $i: ... and the DataWriteGuid unchanged" \
    test "$(vhdx_id "$file" data_write_guid)" = "$dwg0"
  vhdtool_check_clean "kill $i, replayed" "$file"
}

cat > gen.json <<EOF
{ "size": $SIZE, "block_size": $M, "seed": 21, "layers": [
  { "file": "dyn.vhdx", "expected": "zero.raw" },
  { "file": "base.vhdx", "expected": "parent.raw", "writes": [[0, $SIZE]] },
  { "file": "child.avhdx", "type": "differencing", "parent": "base.vhdx" } ] }
EOF
vhdxgen_make "vhdxgen made a dynamic disk, a parent and its child" gen.json .

echo "# dynamic"
crash_iterations dyn.vhdx zero.raw

echo "# differencing"
sha_base=$(sha256sum < base.vhdx)
crash_iterations child.avhdx parent.raw
check "the parent is unchanged" test "$(sha256sum < base.vhdx)" = "$sha_base"

done_testing
