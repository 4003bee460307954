#!/bin/bash
# Regenerate the seed corpus fuzz/corpus/TARGET/ (run from anywhere;
# needs a built tools/vhdtool).  Small disks with small blocks, so every
# seed is a few KiB to ~100 KiB and an iteration stays fast:
#   fuzz-open   single files: fixed, dynamic, differencing, every locator
#               kind, odd layouts (vhdgen.py), the small test images
#   fuzz-chain  containers (fuzz/common.h) of top a.vhd + parents b.vhd
#               (+ c.vhd), flags 0 and 5 (ignore checksums, write a copy)
#   fuzz-check  the single files, and the chains behind FUZZ_CHECK_MAGIC
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
vhdtool=${VHDTOOL:-$top/tools/vhdtool}
gen="python3 $top/tests/vhdgen.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$top/fuzz/corpus
mkdir -p "$out/fuzz-open" "$out/fuzz-chain" "$out/fuzz-check"

# ---- single files
cd "$tmp"
"$vhdtool" create -t fixed fixed-64k.vhd 64K >/dev/null
"$vhdtool" create -t dynamic -b 4K dyn-1m-4k.vhd 1M >/dev/null
"$vhdtool" create -t dynamic -b 64K dyn-4m-64k.vhd 4M >/dev/null
"$vhdtool" create -p dyn-1m-4k.vhd diff-1m-4k.vhd >/dev/null
# The same pair under the container's names.
mkdir pair
"$vhdtool" create -t dynamic -b 4K pair/b.vhd 1M >/dev/null
"$vhdtool" create -p pair/b.vhd pair/a.vhd >/dev/null

spec() {  # spec NAME JSON: vhdgen.py make; keeps every layer
  mkdir -p "$tmp/g-$1"
  echo "$2" > "$tmp/$1.json"
  $gen make "$tmp/$1.json" "$tmp/g-$1" >/dev/null
}
spec chain2 '{"size": 65536, "block_size": 4096, "layers": [
  {"file": "b.vhd", "writes": [[0, 4096], [20480, 1024, 0]]},
  {"file": "a.vhd", "type": "differencing", "writes": [[512, 512], [8192, 6000]],
   "locators": [{"code": "W2ru", "path": ".\\b.vhd"},
                {"code": "Wi2r", "path": ".\\b.vhd"},
                {"code": "MacX", "path": "file://./b.vhd"}]}]}'
spec chain3 '{"size": 32768, "block_size": 4096, "layers": [
  {"file": "c.vhd", "type": "fixed", "writes": [[0, 32768]]},
  {"file": "b.vhd", "type": "differencing", "writes": [[4096, 4096, 0]],
   "locators": [{"code": "W2ru", "path": ".\\c.vhd"}]},
  {"file": "a.vhd", "type": "differencing", "writes": [[0, 1024]],
   "layout": {"block_order": "reverse", "gap_sectors": 1},
   "locators": [{"code": "W2ku", "path": "C:\\x\\b.vhd"},
                {"code": "W2ru", "path": ".\\b.vhd", "space_in_sectors": true}]}]}'
spec odd '{"size": 49152, "block_size": 8192, "layers": [
  {"file": "b.vhd", "full_blocks": [0, 5],
   "layout": {"bat_offset": "after_locators", "bat_extra_entries": 3,
              "align_data_4k": true, "stale_fill": 255}},
  {"file": "a.vhd", "type": "differencing", "writes": [[100, 10]],
   "layout": {"footer511": true},
   "locators": [{"code": "W2ru", "path": ".\\b.vhd"}]}]}'
spec nofooter '{"size": 16384, "block_size": 4096, "layers": [
  {"file": "a.vhd", "writes": [[0, 512]], "layout": {"no_eof_footer": true},
   "bad_header_checksum": true}]}'

for f in fixed-64k dyn-1m-4k dyn-4m-64k diff-1m-4k; do
  cp $f.vhd "$out/fuzz-open/$f.vhd"
done
for g in chain2 chain3 odd nofooter; do
  for f in g-$g/*.vhd; do
    cp "$f" "$out/fuzz-open/$g-$(basename "$f")"
  done
done

# ---- containers
pack() {  # pack OUT FLAGS PREFIX FILE...
  python3 - "$@" <<'PY'
import struct, sys
out, flags, prefix, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
b = prefix.encode() + bytes([flags])
for f in files:
    d = open(f, 'rb').read()
    b += struct.pack('<I', len(d)) + d
open(out, 'wb').write(b)
PY
}
pack "$out/fuzz-chain/diff-1m-4k" 0 "" pair/a.vhd pair/b.vhd
pack "$out/fuzz-chain/diff-1m-4k-w" 5 "" pair/a.vhd pair/b.vhd
pack "$out/fuzz-chain/chain2" 0 "" g-chain2/a.vhd g-chain2/b.vhd
pack "$out/fuzz-chain/chain2-w" 5 "" g-chain2/a.vhd g-chain2/b.vhd
pack "$out/fuzz-chain/chain3" 4 "" g-chain3/a.vhd g-chain3/b.vhd g-chain3/c.vhd
pack "$out/fuzz-chain/odd" 4 "" g-odd/a.vhd g-odd/b.vhd
pack "$out/fuzz-chain/dyn" 4 "" dyn-4m-64k.vhd
pack "$out/fuzz-chain/fixed" 4 "" fixed-64k.vhd
cp "$out"/fuzz-open/* "$out/fuzz-check/"
pack "$out/fuzz-check/chain2" 0 VHDFUZZ3 g-chain2/a.vhd g-chain2/b.vhd
pack "$out/fuzz-check/chain3" 0 VHDFUZZ3 g-chain3/a.vhd g-chain3/b.vhd g-chain3/c.vhd
pack "$out/fuzz-check/diff-1m-4k" 0 VHDFUZZ3 pair/a.vhd pair/b.vhd
du -sh "$out"/*
