#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# VHDX disks near the format's maximum (64 TiB) and across chunk
# boundaries (4 GiB at 512-byte sectors, 32 GiB at 4096), through every
# client request shape that asks for block status (tests/bsprobe.py,
# nbdinfo --map --totals, qemu-img map) and through reads of unaligned
# ranges at every boundary, compared with a model of what was written.
. "${top_srcdir:-.}/tests/functions.sh"

for prog in nbdinfo qemu-img; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

G=$((1024 ** 3))
M=$((1024 ** 2))
T=$((1024 * G))
MAX=$((64 * T))

# Layers hold constant-filled ranges, so the model is simple: the top's
# ranges over the base's, zeros elsewhere.
# max: a 64 TiB dynamic base with 32 MiB blocks written at 0, across
# the 4 GiB chunk boundary, at 100 GiB and at the very end; a child
# with a block of its own at 1 TiB and sectors over the base's blocks.
cat > "$tmp/max.json" <<EOF
{ "size": $MAX, "expected": false, "layers": [
  { "file": "base.vhdx", "writes": [[0, $((32 * M)), 68],
      [$((4 * G - 32 * M)), $((64 * M)), 68], [$((100 * G)), $((32 * M)), 68],
      [$((MAX - 32 * M)), $((32 * M)), 68]] },
  { "file": "child.avhdx", "type": "differencing",
    "writes": [[$T, $((32 * M)), 67], [$((100 * G + 4096)), 4096, 67],
               [$((4 * G - 512)), 1024, 67], [$((MAX - 512)), 512, 67]] } ] }
EOF
# k4: 4096-byte sectors, 40 GiB, 1 MiB blocks (chunk ratio 32768): data
# on both sides of the 32 GiB chunk boundary, partial blocks in both
# chunks of the child.
cat > "$tmp/k4.json" <<EOF
{ "size": $((40 * G)), "expected": false, "logical_sector_size": 4096,
  "block_size": $M, "layers": [
  { "file": "base.vhdx", "writes": [[$((32 * G - M)), $((2 * M)), 66]] },
  { "file": "child.avhdx", "type": "differencing", "block_size": $((2 * M)),
    "writes": [[$((32 * G - 8192)), 16384, 65], [$((40 * G - 4096)), 4096, 65],
               [12288, 4096, 65]] } ] }
EOF
for d in max k4; do
  vhdxgen_make "vhdxgen: $d" "$tmp/$d.json" "$tmp/$d"
done
snap "$tmp"/max/*.vhdx "$tmp"/max/*.avhdx "$tmp"/k4/*.vhdx "$tmp"/k4/*.avhdx

probe () {
  printf '/usr/bin/python3 %q "$uri" %q' "$top_srcdir/tests/bsprobe.py" "$1"
}
max_base="0:32*M,4*G-32*M:4*G+32*M,100*G:100*G+32*M,SIZE-32*M:SIZE"
max_child="0:32*M,4*G-32*M:4*G+32*M,100*G:100*G+32*M,1024*G:1024*G+32*M,SIZE-32*M:SIZE"
k4_child="12288:16384,32*G-1*M:32*G+1*M,40*G-4096:40*G"
check "64 TiB base: block status of every request shape" \
  serve -r "$tmp/max/base.vhdx" -- "$(probe "$max_base")"
check "64 TiB chain: block status of every request shape" \
  serve -r "$tmp/max/child.avhdx" -- "$(probe "$max_child")"
check "4K sectors across the 32 GiB chunk: block status of every shape" \
  serve -r "$tmp/k4/child.avhdx" -- "$(probe "$k4_child")"
check "64 TiB chain: nbdinfo --map --totals" \
  serve -r "$tmp/max/child.avhdx" -- 'nbdinfo --map --totals "$uri"'
out_has "... 192 MiB of data in 64 TiB" "^ *$((192 * M)) +[0-9.]+% +0 +data"

serve -r "$tmp/max/child.avhdx" -- 'qemu-img map -f raw --output=json "$uri"' \
  > "$tmp/qmap" 2>&1
check "qemu-img map: the same data ranges" /usr/bin/python3 -c '
import json, sys
G, M, T = 1 << 30, 1 << 20, 1 << 40
SIZE = 64 * T
got = []
for e in json.load(open(sys.argv[1])):
    if e["data"]:
        a, b = e["start"], e["start"] + e["length"]
        if got and got[-1][1] == a:
            got[-1] = (got[-1][0], b)
        else:
            got.append((a, b))
want = [(0, 32*M), (4*G - 32*M, 4*G + 32*M), (100*G, 100*G + 32*M),
        (T, T + 32*M), (SIZE - 32*M, SIZE)]
assert got == want, got
' "$tmp/qmap"

# Reads at every boundary, unaligned, against the model.
check "reads across chunk, block and disk boundaries equal the model" \
  serve -r "$tmp/max/child.avhdx" -- '/usr/bin/python3 -c "
import json, random, sys, nbd
spec = json.load(open(sys.argv[2]))
layers = [l[\"writes\"] for l in spec[\"layers\"]]
def model(off, n):
    out = bytearray(n)
    for w in layers:                       # base first, top last
        for a, ln, fill in w:
            s, e = max(a, off), min(a + ln, off + n)
            if s < e:
                out[s - off:e - off] = bytes([fill]) * (e - s)
    return bytes(out)
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size = h.get_size()
G, M = 1 << 30, 1 << 20
points = [0, 4 * G, 4 * G - 512, 100 * G, 100 * G + 4096, 1 << 40,
          size - 512, size - 32 * M, 32 * M]
r = random.Random(1)
for p in points:
    for delta in (-70000, -1, 0, 1, 511, 4097):
        off = min(max(p + delta, 0), size - 1)
        n = min(r.choice([1, 512, 4096, 65537, 3 * M + 5]), size - off)
        got = h.pread(n, off)
        assert got == model(off, n), (off, n)
print(\"ok\")
" "$uri" '"$tmp/max.json"

check "vhdtool check: the 64 TiB chain is clean" \
  "$VHDTOOL" check "$tmp/max/child.avhdx"
check "vhdtool info: the 64 TiB chain" "$VHDTOOL" info "$tmp/max/child.avhdx"
out_has "... its size" '^virtual size: +70368744177664 \(64\.0 TiB\)'
unchanged "no file modified"

done_testing
