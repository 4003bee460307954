#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Real images made by Windows 10, Hyper-V and qemu (../shared/images):
# the plugin must give their documented content hashes.
. "${top_srcdir:-.}/tests/functions.sh"

[ -d "$IMAGES" ] || skip_all "no images directory ($IMAGES)"

unpack () {
  gunzip -c "$IMAGES/$1" > "$tmp/$2"
}

unpack win10-dynamic.vhd.gz win10-dynamic.vhd
unpack win10-fixed.vhd.gz win10-fixed.vhd
unpack dfvfs-ext2.vhd.gz ext2.vhd
check_hash "Windows 10 dynamic VHD (4 KiB-aligned blocks, gaps)" \
  ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784 \
  "$tmp/win10-dynamic.vhd"
check_hash "Windows 10 fixed VHD" \
  459325ab1fcd1d5ec9854cba790ee26378317cda177ffc1072008a1df88e6463 \
  "$tmp/win10-fixed.vhd"
check_hash "qemu-img dynamic VHD with ext2" \
  870be7ae16c1fa8faab05c6eb9205dc9a7ae35c5f552c5cf8a267c0bc6a5cb99 \
  "$tmp/ext2.vhd"

# Sizes are the footer's current size (Hyper-V semantics).
size=$(serve -r "$tmp/win10-dynamic.vhd" -- 'nbdinfo --size "$uri"')
[ "$size" = 10485760 ] && pass "Windows dynamic size is current_size" ||
  fail "Windows dynamic size: $size"

# A chain whose files have wrong checksums and no locators (the parent
# is found by the name field): refused by default with a message naming
# the file and the structure, read with ignore-checksums=true.
mkdir "$tmp/chain"
gunzip -c "$IMAGES/dfvfs-image-chain/image.vhd.gz" > "$tmp/chain/image.vhd"
gunzip -c "$IMAGES/dfvfs-image-chain/image-differential.vhd.gz" \
  > "$tmp/chain/image-differential.vhd"
sha_before=$(sha256sum "$tmp"/chain/*.vhd)
check_fails "bad checksum refused, file and structure named" \
  'image-differential\.vhd: footer checksum mismatch.*ignore-checksums' \
  nbdkit -U "$(newsock)" "$PLUGIN" "$tmp/chain/image-differential.vhd" --run true
check_hash "dfvfs chain with ignore-checksums=true" \
  c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25 \
  "$tmp/chain/image-differential.vhd" ignore-checksums=true
# Writable use of such a chain does not touch the parent either.
serve "$tmp/chain/image-differential.vhd" ignore-checksums=true -- \
  'nbdsh -u "$uri" -c "h.pwrite(b\"x\" * 4096, 8192)" -c "h.flush()"' \
  > /dev/null 2>&1
sha_after=$(sha256sum "$tmp/chain/image.vhd")
echo "$sha_before" | grep -qF "$sha_after" &&
  pass "parent untouched after writing the child" ||
  fail "parent changed"

# Windows diskpart differencing disk whose parent is not available:
# refused, with the locator paths it tried.
unpack dfvfs-fat-differential.vhd.gz fat-diff.vhd
check_fails "Windows child with missing parent: clear error" \
  'fat-diff\.vhd: parent not found.*fat-parent\.vhd' \
  nbdkit -U "$(newsock)" "$PLUGIN" "$tmp/fat-diff.vhd" --run true

# The same child served over a stand-in parent with the right id and
# size: the child's partial sector bitmaps (Windows writes bits only for
# the sectors it changed) must leave every other sector to the parent.
/usr/bin/python3 - "$tmp/fat-diff.vhd" "$tmp/fat-parent.vhd" <<'PY'
import struct, sys
child, out = sys.argv[1], sys.argv[2]
data = open(child, "rb").read()
hdr = data[512:1536]
parent_id = hdr[40:56]
size = struct.unpack(">Q", data[-512 + 48:-512 + 56])[0]
# A fixed parent: every sector holds its own number, then a footer.
body = b"".join(struct.pack(">Q", s) * 64 for s in range(size // 512))
f = bytearray(512)
f[0:8] = b"conectix"; f[8:12] = struct.pack(">I", 2)
f[12:16] = struct.pack(">I", 0x10000)
f[16:24] = b"\xff" * 8
f[28:32] = b"test"
f[40:48] = struct.pack(">Q", size); f[48:56] = struct.pack(">Q", size)
f[60:64] = struct.pack(">I", 2); f[68:84] = parent_id
f[64:68] = struct.pack(">I", ~sum(f) & 0xffffffff)
open(out, "wb").write(body + bytes(f))
PY
serve -r "$tmp/fat-diff.vhd" -- 'nbdcopy "$uri" "'"$tmp/fat.raw"'"' \
  2> "$tmp/.err"
/usr/bin/python3 - "$tmp/fat-diff.vhd" "$tmp/fat.raw" > "$tmp/.out" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
got = open(sys.argv[2], "rb").read()
hdr = data[512:1536]
bat_off = struct.unpack(">Q", hdr[16:24])[0]
bs = struct.unpack(">I", hdr[32:36])[0]
n = (len(got) + bs - 1) // bs
spb = bs // 512
bad = 0
child_sectors = 0
for b in range(n):
    e = struct.unpack(">I", data[bat_off + 4 * b:bat_off + 4 * b + 4])[0]
    for s in range(spb):
        v = b * spb + s
        if v * 512 >= len(got):
            break
        bit = False
        if e != 0xffffffff:
            bit = data[e * 512 + s // 8] & (0x80 >> (s % 8))
        if bit:
            want = data[e * 512 + 512 + s * 512:e * 512 + 1024 + s * 512]
            child_sectors += 1
        else:
            want = struct.pack(">Q", v) * 64
        if got[v * 512:(v + 1) * 512] != want:
            bad += 1
print(child_sectors, bad)
PY
read -r child_sectors bad < "$tmp/.out"
if [ "${bad:-x}" = 0 ] && [ "${child_sectors:-0}" -gt 0 ]; then
  pass "Windows partial bitmaps: $child_sectors sectors from the child, rest from the parent"
else
  fail "Windows partial bitmaps: ${bad:-?} sectors wrong"
  diag_file "$tmp/.err"
fi

done_testing
