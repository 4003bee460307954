#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Replay the fuzzing seed corpus (fuzz/corpus/TARGET/) and every input
# that once crashed, hung or leaked (fuzz/regressions/TARGET/) through
# the fuzz targets, built normally (gcc, no libFuzzer) as
# fuzz/TARGET-standalone.  Each input must finish, within 20 seconds,
# without a crash.  Under --enable-sanitizers the same run is checked by
# ASan and UBSan too.  See docs/reliability.md.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

for t in fuzz-open fuzz-chain fuzz-check fuzz-store; do
  prog=$top_builddir/fuzz/$t-standalone
  if [ ! -x "$prog" ]; then
    skip "$t: $prog not built"
    continue
  fi
  for kind in corpus regressions; do
    for f in "$top_srcdir/fuzz/$kind/$t"/*; do
      [ -f "$f" ] || continue
      # The library's messages are wanted here: a regression input must
      # be refused with a message, not crash.
      st=0
      FUZZ_VERBOSE=1 timeout 20 "$prog" "$f" > "$tmp/.out" 2>&1 || st=$?
      if [ "$st" -eq 0 ]; then
        pass "$t $kind/$(basename "$f")"
      else
        fail "$t $kind/$(basename "$f") (exit $st)"
        diag_file "$tmp/.out"
      fi
    done
  done
done

# Found in review while fuzzing: a parent that is a FIFO (a hostile
# locator can name any path) must be refused at once, not block open()
# for ever.
if command -v mkfifo > /dev/null; then
  cat > "$tmp/fifo.json" <<'JSON'
{"size": 65536, "block_size": 4096, "layers": [
  {"file": "b.vhd"},
  {"file": "a.vhd", "type": "differencing",
   "locators": [{"code": "W2ru", "path": ".\\b.vhd"}]}]}
JSON
  $VHDGEN make "$tmp/fifo.json" "$tmp/fifo" > /dev/null
  rm "$tmp/fifo/b.vhd"
  mkfifo "$tmp/fifo/b.vhd"
  check_fails "parent that is a FIFO: check refuses it without blocking" \
    'not a regular file' timeout 10 "$VHDTOOL" check "$tmp/fifo/a.vhd"
  check_fails "parent that is a FIFO: info refuses it without blocking" \
    'not a regular file' timeout 10 "$VHDTOOL" info "$tmp/fifo/b.vhd"
fi

done_testing
