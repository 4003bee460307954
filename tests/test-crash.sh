#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Crash consistency of the write path (lib/write.c's argument, tested):
# start nbdkit on a differencing disk, let a client write random
# sector-aligned ranges and flush now and then, and SIGKILL nbdkit at a
# random moment.  After every kill:
#   - the chain opens (nbdkit serves it) and vhdtool check is clean;
#   - every write acknowledged before a completed flush reads back (or
#     a later write over the same sector does);
#   - no sector holds data never written to it: every sector shows the
#     parent's content or one of the writes ever submitted over it (and
#     none older than its last flushed write).
# The child accumulates over the iterations, so later runs allocate
# into a file an earlier kill left behind.  Every sector a write puts
# down encodes the write's number and the sector, so the check knows
# exactly which write a sector came from.
#
# CRASH_ITERATIONS (default 4) sets the number of kills; the long mode
# is CRASH_ITERATIONS=100 (docs/reliability.md).  CRASH_SEED picks the
# random sequence (default: random, printed).

. "${top_srcdir:-.}/tests/functions.sh"

crash_setup
SIZE=$((8 * M))
cd "$tmp"

check "create the parent" "$VHDTOOL" create -b 512K base.vhd $SIZE
$PY -c "import random,sys; sys.stdout.buffer.write(random.Random(1).randbytes($SIZE))" \
  > parent.raw
check "fill the parent" serve base.vhd -- "nbdcopy $tmp/parent.raw \"\$uri\""
sha_base=$(sha256sum < base.vhd)
check "create the child (64 KiB blocks)" \
  "$VHDTOOL" create -p base.vhd -b 64K child.vhd

# After each kill, besides the checks of crash_iterations: vhdtool check.
crash_checks () {
  check "kill $1: vhdtool check is clean" "$VHDTOOL" check "$2"
}
crash_iterations child.vhd parent.raw
check "the parent is unchanged" test "$(sha256sum < base.vhd)" = "$sha_base"

done_testing
