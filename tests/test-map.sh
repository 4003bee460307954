#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool map: for chains written by the independent generator, the map
# must equal the one computed from the generator's manifest (which
# sectors each layer holds): every range goes to the nearest layer
# holding it, ranges no layer holds are zero (a fixed base holds
# everything), adjacent ranges of one layer are merged, and the ranges
# cover the disk exactly.  Text and JSON output, usage and errors.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
command -v $PY > /dev/null || skip_all "python3 not installed"
d=$(cd "$tmp" && pwd -P)

# expected_map OUTDIR: the map, as JSON, computed from manifest.json.
cat > "$tmp/expect.py" <<'EOF'
import json, os, sys
outdir = sys.argv[1]
m = json.load(open(os.path.join(outdir, "manifest.json")))
layers = {l["file"]: l for l in m["layers"]}
chain, f = [], m["top"]
while f is not None:
    chain.append(layers[f])
    f = layers[f]["parent"]
size = chain[0]["size"]
nsec = size // 512
owner = [None] * nsec                  # depth of the layer supplying it
for depth in reversed(range(len(chain))):
    lay = chain[depth]
    if lay["type"] == "fixed":
        owner = [depth] * nsec
    for first, count in lay["held"]:
        for s in range(first, min(first + count, nsec)):
            owner[s] = depth
out = []
for s, o in enumerate(owner):
    if out and out[-1]["depth"] == o:
        out[-1]["length"] += 512
        continue
    path = os.path.realpath(os.path.join(outdir, chain[o]["file"])) if o is not None else None
    out.append({"start": s * 512, "length": 512, "depth": o,
                "zero": o is None, "data": o is not None, "file": path})
print(json.dumps(out))
EOF

# map_case NAME: build $tmp/NAME.json (spec on stdin) and compare.
map_case () {
  local name=$1 out=$d/$1
  cat > "$d/$name.spec"
  if ! $VHDGEN make "$d/$name.spec" "$out" > "$d/$name.log" 2>&1; then
    fail "$name: vhdgen"
    diag_file "$d/$name.log"
    return
  fi
  top=$out/$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["top"])' "$out/manifest.json")
  $PY "$tmp/expect.py" "$out" > "$d/$name.expected.json"
  sha256sum "$out"/*.vhd > "$d/$name.sums"
  if "$VHDTOOL" map --json "$top" > "$d/$name.map.json" 2> "$d/$name.map.err"; then
    pass "$name: map --json exits 0"
  else
    fail "$name: map --json exits 0"
    diag_file "$d/$name.map.err"
  fi
  if $PY -c '
import json, sys
got = json.load(open(sys.argv[1])); want = json.load(open(sys.argv[2]))
if got != want:
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            print("first difference at range", i, "\n got ", g, "\n want", w)
            break
    print(len(got), "ranges, wanted", len(want))
    sys.exit(1)' "$d/$name.map.json" "$d/$name.expected.json" > "$d/$name.diff" 2>&1; then
    pass "$name: map equals the map computed from the manifest ($(grep -o '"start"' "$d/$name.expected.json" | wc -l) ranges)"
  else
    fail "$name: map equals the map computed from the manifest"
    diag_file "$d/$name.diff"
  fi
  # The text form says the same, row for row.
  "$VHDTOOL" map "$top" > "$d/$name.map.txt" 2>&1
  if $PY -c '
import json, sys
rows = open(sys.argv[1]).read().splitlines()
want = json.load(open(sys.argv[2]))
assert rows[0].split() == ["Offset", "Length", "Depth", "File"], rows[0]
assert len(rows) == len(want) + 1, (len(rows), len(want))
for row, w in zip(rows[1:], want):
    off, n, depth, f = row.split(None, 3)
    assert int(off, 0) == w["start"] and int(n, 0) == w["length"], row
    if w["zero"]:
        assert depth == "-" and f == "(zero)", row
    else:
        assert int(depth) == w["depth"] and f == w["file"], row
' "$d/$name.map.txt" "$d/$name.expected.json" > "$d/$name.tdiff" 2>&1; then
    pass "$name: text map has the same rows"
  else
    fail "$name: text map has the same rows"
    diag_file "$d/$name.tdiff"
    diag_file "$d/$name.map.txt"
  fi
  sha256sum --quiet -c "$d/$name.sums" > /dev/null 2>&1 &&
    pass "$name: map modified no file" || fail "$name: map modified no file"
}

size=$((10 * 1024 * 1024 + 5 * 512))   # partial last block

# A dynamic base (clear bitmap bits over stale bytes read as zeros),
# two differencing layers with other block sizes; explicit zero writes
# in the middle layer are data of that layer.
map_case dyn3 <<EOF
{ "size": $size, "seed": 11, "layers": [
  { "file": "base.vhd", "type": "dynamic",
    "writes": [[0, 70000], [3000000, 1500000], [10000000, 485000]],
    "layout": { "stale_fill": 170 } },
  { "file": "mid.vhd", "type": "differencing", "block_size": 65536,
    "writes": [[512, 512], [60000, 30000, 0], [3500000, 9000], [8000000, 4096]] },
  { "file": "top.vhd", "type": "differencing", "block_size": 1048576,
    "writes": [[1024, 2048], [3400000, 200000], [10480000, 5000]],
    "full_blocks": [6] }
] }
EOF

# A fixed base: every sector no other layer holds is the base's.
map_case fixed2 <<EOF
{ "size": $size, "seed": 12, "layers": [
  { "file": "base.vhd", "type": "fixed", "writes": [[0, 4096]] },
  { "file": "child.vhd", "type": "differencing",
    "writes": [[0, 512], [2097152, 2097152], [9999872, 512]] }
] }
EOF

# Only a dynamic disk, nothing written: one zero range.
map_case empty <<EOF
{ "size": $size, "layers": [ { "file": "e.vhd", "type": "dynamic" } ] }
EOF

# A deep chain of small scattered writes.
{
  echo "{ \"size\": $size, \"seed\": 13, \"layers\": ["
  echo "  { \"file\": \"l0.vhd\", \"type\": \"dynamic\", \"writes\": [[0, 4000000]] }"
  for i in $(seq 1 7); do
    printf '  ,{ "file": "l%d.vhd", "type": "differencing", "block_size": %d, "writes": [[%d, 3000], [%d, 70000]] }\n' \
      "$i" $((4096 << (i % 3 * 4))) $((i * 300000)) $((i * 1100000 + 512))
  done
  echo "] }"
} > "$d/deep8.in"
map_case deep8 < "$d/deep8.in"

# ------------------------------------------------------------ errors

cd "$d" || exit 1
check_fails "map without FILE: exit 2" 'map takes one FILE' "$VHDTOOL" map
check_fails "map with two FILEs: exit 2" 'map takes one FILE' "$VHDTOOL" map a b
check_fails "map --frob: exit 2" 'bad option' "$VHDTOOL" map --frob x
"$VHDTOOL" map "$d/nosuch.vhd" > /dev/null 2>&1
[ $? -eq 1 ] && pass "map of a missing file: exit 1" || fail "map of a missing file: exit 1"
mkdir "$d/orphan"
"$VHDTOOL" create "$d/orphan/b.vhd" 1M
"$VHDTOOL" create -p "$d/orphan/b.vhd" "$d/orphan/c.vhd"
rm "$d/orphan/b.vhd"
check_fails "map of a child whose parent is missing: exit 1, parent not found" \
  'c\.vhd: parent not found' "$VHDTOOL" map "$d/orphan/c.vhd"
"$VHDTOOL" map --help > "$tmp/.help" 2>&1 && grep -q '^Usage: vhdtool map' "$tmp/.help" &&
  pass "map --help" || fail "map --help"

done_testing
