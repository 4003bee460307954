#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Files we create and write must open in libvhdi (vhdiinfo, vhdimount):
# a chain made by vhdtool and written through the plugin is read back by
# libvhdi's FUSE mount and must equal what the plugin serves.  Writes
# are 4 KiB runs so that libvhdi's known bitmap bug (a set bit also
# marks the later bits of the same byte) cannot show.
. "${top_srcdir:-.}/tests/functions.sh"

command -v vhdimount > /dev/null || skip_all "vhdimount not installed"
[ -c /dev/fuse ] || skip_all "no /dev/fuse"

mnt="$tmp/mnt"
mkdir "$mnt"
cleanup_fn "umount '$mnt' 2>/dev/null || fusermount -u '$mnt' 2>/dev/null"

"$VHDTOOL" create -t dynamic "$tmp/base.vhd" 20M
"$VHDTOOL" create -p "$tmp/base.vhd" "$tmp/mid.vhd"
"$VHDTOOL" create -p "$tmp/mid.vhd" "$tmp/top.vhd"

# write_layer FILE SEED: 4 KiB-aligned runs of random data, flushed.
write_layer () {
  serve "$1" -- '/usr/bin/python3 -c "
import nbd, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
r = random.Random(int(sys.argv[2]))
size = h.get_size()
for i in range(60):
    n = r.randrange(1, 64) * 4096
    off = r.randrange(0, (size - n) // 4096) * 4096
    h.pwrite(r.randbytes(n), off)
h.flush()
" "$uri" '"$2"
}
write_layer "$tmp/base.vhd" 1 && write_layer "$tmp/mid.vhd" 2 &&
  write_layer "$tmp/top.vhd" 3 && pass "wrote every layer through the plugin" ||
  fail "writing layers"

vhdiinfo "$tmp/top.vhd" > "$tmp/info" 2>&1
mid_id=$("$VHDTOOL" info --json "$tmp/mid.vhd" |
         /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["unique-id"])')
grep -q "Differential" "$tmp/info" && grep -q "Parent filename.*mid.vhd" "$tmp/info" &&
  grep -q "Parent identifier.*$mid_id" "$tmp/info" &&
  pass "vhdiinfo: differencing, parent name and id" ||
  { fail "vhdiinfo"; diag_file "$tmp/info"; }

read_all "$tmp/plugin.raw" "$tmp/top.vhd"
if vhdimount "$tmp/top.vhd" "$mnt" > "$tmp/.out" 2>&1; then
  last=$(ls "$mnt" | sort -V | tail -n 1)
  [ "$(ls "$mnt" | wc -l)" -eq 3 ] && pass "vhdimount follows the 3-layer chain" ||
    fail "vhdimount layers: $(ls "$mnt")"
  # O_DIRECT 512-byte reads: libvhdi mishandles some larger reads.
  dd if="$mnt/$last" of="$tmp/libvhdi.raw" bs=512 iflag=direct status=none
  check_same "libvhdi reads the chain as the plugin serves it" \
    "$tmp/plugin.raw" "$tmp/libvhdi.raw"
else
  fail "vhdimount"
  diag_file "$tmp/.out"
fi

done_testing
