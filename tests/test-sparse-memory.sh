#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Memory of huge sparse chains: serving an 8-deep chain of 2040 GiB
# layers (a 4 MiB BAT each) must not cost a resident copy of every BAT
# (lib/file.c keeps BATs complemented in anonymous mappings, so pages
# without an allocated entry are never touched; see bat_get in
# lib/internal.h).  Also checks that such a chain still reads and
# writes correctly far into the disk and passes vhdtool check.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"
[ -z "$SANITIZERS" ] || skip_all "RSS under ASan is not the plugin's"

for prog in nbdsh nbdinfo /usr/bin/time; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

depth=8
check "create a 2040 GiB dynamic base" "$VHDTOOL" create "$tmp/l0.vhd" 2040G
for k in $(seq 1 $((depth - 1))); do
  "$VHDTOOL" create -p "$tmp/l$((k - 1)).vhd" "$tmp/l$k.vhd" > /dev/null ||
    fail "create layer $k"
done
top=$tmp/l$((depth - 1)).vhd

# Data near the end of the base and in the middle of layer 3, written
# through the plugin.
write_at () {
  serve "$1" -- "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"$2\" * 4096, $3); h.flush()'"
}
check "write near the end of the base" write_at "$tmp/l0.vhd" B $((2040 * 1024 ** 3 - 8192))
check "write into layer 3" write_at "$tmp/l3.vhd" M $((1000 * 1024 ** 3))
check "write into the top" write_at "$top" T $((1000 * 1024 ** 3 + 1024 ** 2))

# Peak RSS of nbdkit serving the whole chain (opened, every BAT read
# and validated, the whole disk mapped: every block of every layer
# looked up).  Eight resident BATs alone would be
# 32 MiB; nbdkit itself needs well under 16.  Without the malloc
# perturbation of make check, which writes (so makes resident) every
# malloc'd buffer, such as the writer's per-block arrays.
env -u GLIBC_TUNABLES /usr/bin/time -o "$tmp/rss" -f %M \
  nbdkit -U "$(newsock)" "$PLUGIN" "$top" --run 'nbdinfo --map "$uri" > /dev/null && nbdinfo --size "$uri"' > "$tmp/size" 2>&1
rss=$(tail -n 1 "$tmp/rss")
if [ "$(cat "$tmp/size")" = $((2040 * 1024 ** 3)) ] && [ "$rss" -lt 24576 ]; then
  pass "8 x 2040 GiB chain served and mapped with peak RSS ${rss} KiB (< 24 MiB)"
else
  fail "size $(cat "$tmp/size"), peak RSS ${rss} KiB (wanted < 24 MiB)"
fi

check "reads through the chain see every layer's data" \
  serve -r "$top" -- "nbdsh -u \"\$uri\" -c '
assert h.pread(4096, $((2040 * 1024 ** 3 - 8192))) == b\"B\" * 4096
assert h.pread(4096, $((1000 * 1024 ** 3))) == b\"M\" * 4096
assert h.pread(4096, $((1000 * 1024 ** 3 + 1024 ** 2))) == b\"T\" * 4096
assert h.pread(4096, 0) == bytes(4096)
'"
check "vhdtool check passes on the chain" "$VHDTOOL" check "$top"

# The overlay over the same 2040 GiB chain: its map of the disk is
# allocated as clients write, so mapping the whole disk, discarding all
# of it (as mkfs does) and writing far into it stays small.  A flat
# table of block pointers was 256 MiB for this size (276 MiB peak).
env -u GLIBC_TUNABLES /usr/bin/time -o "$tmp/rss" -f %M   nbdkit -U "$(newsock)" --filter="$FILTER" "$PLUGIN" "$top" --run "
nbdinfo --map \"\$uri\" > /dev/null &&
nbdsh -u \"\$uri\" -c '
step = 2**32 - 2**20
for off in range(0, h.get_size(), step):
    h.trim(min(step, h.get_size() - off), off)
h.pwrite(b\"o\" * 1000, $((1500 * 1024 ** 3 + 7)))
assert h.pread(1000, $((1500 * 1024 ** 3 + 7))) == b\"o\" * 1000
assert h.pread(4096, $((1000 * 1024 ** 3))) == bytes(4096)
'" > "$tmp/ov.out" 2>&1
st=$?
rss=$(tail -n 1 "$tmp/rss")
if [ "$st" -eq 0 ] && [ "$rss" -lt 49152 ]; then
  pass "overlay over the 2040 GiB chain: map, discard all, write; peak RSS ${rss} KiB (< 48 MiB)"
else
  fail "overlay over the 2040 GiB chain: exit $st, peak RSS ${rss} KiB (wanted < 48 MiB)"
  diag_file "$tmp/ov.out"
fi

done_testing
