#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Every capability the plugin advertises does what it says:
#  - trim gives host space back where the top file holds the data and
#    never lets a parent show through where the client wrote;
#  - FAST_ZERO succeeds only where zeroing writes no data, and fails
#    with ENOTSUP (changing nothing) elsewhere;
#  - a connection that cannot write (no permission, another server
#    holds the file) is served read-only instead of being refused;
#  - two servers racing to write the same file never leave either
#    without a lock (tests/flock-delay-shim.c widens the window);
#  - a created file's name is made durable (directory fsync after link).
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

command -v nbdsh > /dev/null || skip_all "nbdsh not installed"
M=$((1024 * 1024))

used_kib () { du -k "$1" | cut -f1; }
# space_freed DESC FILE BEFORE_KIB MIN_KIB: FILE now uses at least
# MIN_KIB less than BEFORE_KIB.
space_freed () {
  local after
  after=$(used_kib "$2")
  if [ "$after" -le $(($3 - $4)) ]; then
    pass "$1 (${3} KiB used before, ${after} KiB after)"
  else
    fail "$1: ${3} KiB used before, ${after} KiB after"
  fi
}

# ---------------------------------------------------------------- trim

check "create a dynamic disk" "$VHDTOOL" create -t dynamic "$tmp/dyn.vhd" 16M
check "fill 8 MiB of it" serve "$tmp/dyn.vhd" -- "nbdsh -u \"\$uri\" -c '
import os
h.pwrite(os.urandom($((8 * M))), 0); h.flush()'"
before=$(used_kib "$tmp/dyn.vhd")
check "trim the 8 MiB, then they read as zeros; a partial sector keeps its bytes" \
  serve "$tmp/dyn.vhd" -- "nbdsh -u \"\$uri\" -c '
assert h.can_trim()
keep = h.pread(512, $((8 * M)) - 512)
h.trim($((8 * M)) - 100, 0)
h.flush()
assert h.pread($((8 * M)) - 512, 0) == bytes($((8 * M)) - 512)
assert h.pread(512, $((8 * M)) - 512) == keep'"
space_freed "trim gave the space back" "$tmp/dyn.vhd" "$before" $((7 * 1024))
check "vhdtool check passes after the trim" "$VHDTOOL" check "$tmp/dyn.vhd"
check "qemu-img reads the trimmed range as zeros" /usr/bin/python3 -c '
import subprocess, sys
subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", sys.argv[1], sys.argv[2]], check=True)
d = open(sys.argv[2], "rb").read()
assert d[:8 * 2**20 - 512] == bytes(8 * 2**20 - 512)' "$tmp/dyn.vhd" "$tmp/dyn.raw"

check "trim of an unaligned range: whole sectors inside become zeros, the edges keep theirs" \
  serve "$tmp/dyn.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"x\" * 4096, $((10 * M)))
h.trim(1000, $((10 * M)) + 100)
got = h.pread(4096, $((10 * M)))
assert got == b\"x\" * 512 + bytes(512) + b\"x\" * 3072, got[:1100]
h.trim(511, $((10 * M)) + 1)  # inside one sector: nothing happens
assert h.pread(4096, $((10 * M))) == got
h.trim(512, $((16 * M)) - 512)  # the very end of the disk
assert h.pread(512, $((16 * M)) - 512) == bytes(512)'"

# Differencing: the parent has data everywhere in [0, 4 MiB); the child
# wrote zeros over the first MiB and data over the second.  After a trim
# of everything: the first MiB must stay zeros (never the parent), the
# second reads as zeros (punched) and the rest is still the parent.
check "create a parent with data" "$VHDTOOL" create -t dynamic "$tmp/p.vhd" 8M
check "fill the parent" serve "$tmp/p.vhd" -- "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"P\" * $((4 * M)), 0); h.flush()'"
check "create a differencing child" "$VHDTOOL" create -p "$tmp/p.vhd" "$tmp/c.vhd"
snap "$tmp/p.vhd"
check "trim in a child: where it wrote zeros the parent never shows through" \
  serve "$tmp/c.vhd" -- "nbdsh -u \"\$uri\" -c '
h.zero($M, 0)
h.pwrite(b\"C\" * $M, $M)
h.flush()
h.trim($((8 * M)), 0)
h.flush()
assert h.pread($M, 0) == bytes($M)
assert h.pread($M, $M) == bytes($M)
assert h.pread($((2 * M)), $((2 * M))) == b\"P\" * $((2 * M))'"
check "the child reads the same after the server is gone" \
  serve -r "$tmp/c.vhd" -- "nbdsh -u \"\$uri\" -c '
assert h.pread($((2 * M)), 0) == bytes($((2 * M)))
assert h.pread($((2 * M)), $((2 * M))) == b\"P\" * $((2 * M))'"
check "vhdtool check passes on the child" "$VHDTOOL" check "$tmp/c.vhd"
unchanged "the parent was not modified"

check "create a fixed disk" "$VHDTOOL" create -t fixed "$tmp/fixed.vhd" 8M
check "fill it" serve "$tmp/fixed.vhd" -- "nbdsh -u \"\$uri\" -c '
import os
h.pwrite(os.urandom($((8 * M))), 0); h.flush()'"
before=$(used_kib "$tmp/fixed.vhd")
check "trim a fixed disk: zeros" serve "$tmp/fixed.vhd" -- "nbdsh -u \"\$uri\" -c '
h.trim($((6 * M)), $M); h.flush()
assert h.pread($((6 * M)), $M) == bytes($((6 * M)))'"
space_freed "trim of the fixed disk gave the space back" "$tmp/fixed.vhd" "$before" $((5 * 1024))
check "vhdtool check passes on the fixed disk" "$VHDTOOL" check "$tmp/fixed.vhd"

# ---------------------------------------------------------------- fast zero

# A write of zeros is "fast" only where nothing has to be written: the
# range reads as zeros already, or a fixed disk gets a hole punched.
fast_zero_fails () {
  cat <<EOF
try:
    h.zero($1, $2, nbd.CMD_FLAG_FAST_ZERO)
    raise SystemExit("FAST_ZERO of $1 at $2 succeeded")
except nbd.Error as e:
    assert e.errno == "ENOTSUP", e
EOF
}
check "FAST_ZERO: refused over data in a dynamic disk (nothing changes), fine where it is zero" \
  serve "$tmp/dyn.vhd" -- "nbdsh -u \"\$uri\" -c '
import nbd
assert h.can_fast_zero()
h.pwrite(b\"d\" * 4096, $((12 * M)))
$(fast_zero_fails 8192 $((12 * M)))
assert h.pread(4096, $((12 * M))) == b\"d\" * 4096
h.zero($M, $((13 * M)), nbd.CMD_FLAG_FAST_ZERO)
assert h.pread($M, $((13 * M))) == bytes($M)
h.zero(8192, $((12 * M)))
assert h.pread(4096, $((12 * M))) == bytes(4096)'"
check "FAST_ZERO: refused where the child would hide its parent's data" \
  serve "$tmp/c.vhd" -- "nbdsh -u \"\$uri\" -c '
import nbd
$(fast_zero_fails 4096 $((3 * M)))
assert h.pread(4096, $((3 * M))) == b\"P\" * 4096'"
check "FAST_ZERO: whole sectors of a fixed disk are punched; a partial one is refused" \
  serve "$tmp/fixed.vhd" -- "nbdsh -u \"\$uri\" -c '
import nbd, os
h.pwrite(os.urandom($M), 0)
h.zero(65536, 512, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(65536, 512) == bytes(65536)
$(fast_zero_fails 100 $((2 * M)))'"

# ---------------------------------------------------------------- read-only fallback

if id nobody > /dev/null 2>&1; then
  # The chain is opened as root before nbdkit changes user; a writing
  # client then finds the top file unwritable ($tmp is private).
  check "a top file it cannot write: the connection is served read-only" \
    serve -u nobody "$tmp/dyn.vhd" -- "nbdsh -u \"\$uri\" -c '
assert h.is_read_only()
assert not h.can_trim() and not h.can_zero()
assert h.pread(4096, $((12 * M))) == bytes(4096)'"
  grep -q "cannot write (see above): serving this connection read-only" \
    "$tmp/.out" && grep -q "open for writing: Permission denied" "$tmp/.out" &&
    pass "the log says why" || { fail "the log says why"; diag_file "$tmp/.out"; }
else
  skip "no user nobody"
  skip "no user nobody"
fi

# ---------------------------------------------------------------- two servers

inode=$(stat -c %i "$tmp/dyn.vhd")
# flock_holders: pids holding a flock on dyn.vhd (/proc/locks).
flock_holders () {
  awk -v ino="$inode" '$2 == "FLOCK" { split($6, a, ":"); if (a[3] == ino) print $5 }' /proc/locks | sort -u
}
shim=$tmp/flock-delay.so
cc -shared -fPIC -o "$shim" "$top_srcdir/tests/flock-delay-shim.c" -ldl ||
  fail "build tests/flock-delay-shim.c"

sa=$(newsock) sb=$(newsock)
LD_PRELOAD=$shim nbdkit -f -U "$sa" "$PLUGIN" "$tmp/dyn.vhd" 2> "$tmp/a.log" &
pa=$!
LD_PRELOAD=$shim nbdkit -f -U "$sb" "$PLUGIN" "$tmp/dyn.vhd" 2> "$tmp/b.log" &
pb=$!
cleanup_fn "kill $pa $pb 2> /dev/null"
for i in $(seq 100); do
  [ -S "$sa" ] && [ -S "$sb" ] && break
  sleep 0.1
done
# Both servers have the file share-locked; two clients ask to write at
# the same moment, both servers try to trade up.
write_client () {
  nbdsh -u "nbd+unix://?socket=$1" -c '
try:
    h.pwrite(b"w" * 512, 0)
    print("wrote")
except nbd.Error as e:
    print("refused:", e)' > "$2" 2>&1
}
write_client "$sa" "$tmp/ca.out" &
write_client "$sb" "$tmp/cb.out" &
wait %3 %4 2> /dev/null
sleep 0.5
holders=$(flock_holders | tr '\n' ' ')
if [[ " $holders " == *" $pa "* && " $holders " == *" $pb "* ]]; then
  pass "after racing to write, both servers still hold a lock (holders: $holders)"
else
  fail "a server was left without a lock (holders: ${holders:-none}; servers $pa $pb)"
  diag_file "$tmp/a.log"
  diag_file "$tmp/b.log"
fi
wrote=$(cat "$tmp/ca.out" "$tmp/cb.out" | grep -c '^wrote')
if [ "$wrote" -le 1 ]; then
  pass "at most one server wrote ($wrote)"
else
  fail "both servers wrote"
fi
kill "$pa" "$pb" 2> /dev/null
wait "$pa" "$pb" 2> /dev/null
check "the file is sound after the race" "$VHDTOOL" check "$tmp/dyn.vhd"

# ---------------------------------------------------------------- durable names

if command -v strace > /dev/null; then
  # After link() puts the new file under its name, the directory holding
  # it must be fsync'd (else a power loss can lose the name).
  dir_synced_after_link () {
    # LeakSanitizer cannot run under ptrace (sanitizer builds).
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
      strace -f -qq -e trace=link,openat,fsync -o "$tmp/strace" "$@" \
      > /dev/null 2>&1 &&
    awk '
      /link\(/ && !/unlink/ && / = 0/ { linked = 1; next }
      linked && /O_DIRECTORY/ && / = [0-9]+$/ { fd = $NF; next }
      linked && fd != "" && $0 ~ ("fsync\\(" fd "\\) += 0") { ok = 1 }
      END { exit !ok }' "$tmp/strace"
  }
  check "vhdtool create fsyncs the directory after linking the new file" \
    dir_synced_after_link "$VHDTOOL" create "$tmp/new.vhd" 1G
  check "vhdtool convert fsyncs the directory after linking the output" \
    dir_synced_after_link "$VHDTOOL" convert "$tmp/c.vhd" "$tmp/flat.vhd"
else
  skip "strace not installed"
  skip "strace not installed"
fi

done_testing
