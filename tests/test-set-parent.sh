#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool set-parent: re-point a differencing disk after its chain has
# moved.  The locators and parent name are checked with the independent
# generator's parser, the chain's content against the generator's
# model (served by the plugin), libvhdi's view with vhdiinfo.  Refusals
# (other id, other size, loops, not differencing) change nothing;
# --ignore-id-mismatch records the new id; locators that do not fit
# their reserved space are moved to the end of the file; a run killed at
# every step leaves a file that still opens and shows the same data.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in nbdcopy $PY sha256sum; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
d=$(cd "$tmp" && pwd -P)

# winpath PATH: PATH with backslashes, as the W2ku locator holds it.
winpath () { printf '%s' "$1" | tr / '\\'; }

# dumped DESC FILE PYEXPR: PYEXPR holds for j = vhdgen dump of FILE
# (L = {code: path} of its locators, E = environment).
dumped () {
  if $VHDGEN dump --json "$2" > "$tmp/.dump" 2>&1 && $PY -c '
import json, os, sys
j = json.load(open(sys.argv[1]))
L = {l["code"]: l["path"] for l in j["locators"]}
E = os.environ
ok = eval("(" + sys.argv[2].strip() + "\n)")
if not ok:
    print(json.dumps(j, indent=1)[:3000])
sys.exit(0 if ok else 1)' "$tmp/.dump" "$3" > "$tmp/.jc" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.jc"
  fi
}

# The fixture: base with data, child with data over it, locators
# W2ru .\base.vhd and a W2ku from another machine.
mkdir "$d/gen"
cat > "$d/gen/spec.json" <<'EOF'
{ "size": 6295552, "seed": 31, "layers": [
  { "file": "base.vhd", "type": "dynamic",
    "writes": [[0, 100000], [3000000, 500000], [6290000, 5552]] },
  { "file": "child.vhd", "type": "differencing",
    "writes": [[4096, 8192], [3200000, 100000], [6000000, 4096]],
    "locators": [ { "code": "W2ru", "path": ".\\base.vhd" },
                  { "code": "W2ku", "path": "C:\\VMs\\base.vhd" } ] }
] }
EOF
$VHDGEN make "$d/gen/spec.json" "$d/gen" > "$d/gen/log" 2>&1 || {
  cat "$d/gen/log"
  echo "Bail out! vhdgen could not make the fixture"
  exit 1
}
EXPECTED=$d/gen/expected.raw
base_id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["unique_id"])' "$d/gen/manifest.json")
base_uuid=$($PY -c 'import sys,uuid; print(uuid.UUID(sys.argv[1]))' "$base_id")
export base_uuid

# ------------------------------------------------------------ the move

# The chain is moved: base and child land in different directories, so
# neither locator (nor the name beside the child) finds the parent.
mkdir -p "$d/m/store" "$d/m/vms"
cp "$d/gen/base.vhd" "$d/m/store/base.vhd"
cp "$d/gen/child.vhd" "$d/m/vms/child.vhd"
check_fails "moved chain: the child no longer finds its parent" 'parent not found' \
  "$VHDTOOL" info "$d/m/vms/child.vhd"
snap "$d/m/store/base.vhd"
check "set-parent vms/child.vhd store/base.vhd (relative paths): exit 0" \
  sh -c "cd '$d/m' && '$VHDTOOL' set-parent vms/child.vhd store/base.vhd"
export M=$d/m
dumped "W2ru is the path relative to the child, W2ku the absolute path" "$d/m/vms/child.vhd" '
  L == {"W2ru": "..\\store\\base.vhd",
        "W2ku": (E["M"] + "/store/base.vhd").replace("/", "\\")}'
dumped "parent name is the base name, parent id unchanged, checksums right" "$d/m/vms/child.vhd" '
  j["header"]["parent_name"] == "base.vhd" and
  j["header"]["parent_id"] == E["base_uuid"] and
  j["header"]["checksum_ok"] and j["footer"]["checksum_ok"] and
  j["footer_copy_at_0"] == "identical"'
reads_as "the chain reads as the model again" "$EXPECTED" "$d/m/vms/child.vhd"
check "vhdtool check: the re-pointed chain is clean" "$VHDTOOL" check "$d/m/vms/child.vhd"
unchanged "set-parent did not modify the parent"
if command -v vhdiinfo > /dev/null; then
  vhdiinfo "$d/m/vms/child.vhd" > "$tmp/.vi" 2>&1
  grep -Eq 'Parent filename[[:space:]]*: base\.vhd$' "$tmp/.vi" &&
    grep -Eq "Parent identifier[[:space:]]*: $base_uuid\$" "$tmp/.vi" &&
    pass "vhdiinfo: the re-pointed child names its parent" ||
    { fail "vhdiinfo: the re-pointed child names its parent"; diag_file "$tmp/.vi"; }
else
  skip "vhdiinfo not installed"
fi
# Moving the whole tree again: the relative locator keeps working.
mv "$d/m" "$d/m2"
reads_as "after moving the whole tree, the relative locator still finds the parent" \
  "$EXPECTED" "$d/m2/vms/child.vhd"
# Running it again with nothing to change is harmless.
sha256sum "$d/m2/vms/child.vhd" > "$tmp/.again"
"$VHDTOOL" set-parent "$d/m2/vms/child.vhd" "$d/m2/store/base.vhd" > /dev/null 2>&1
reads_as "set-parent after the move re-points the absolute locator" "$EXPECTED" "$d/m2/vms/child.vhd"
export M2=$d/m2
dumped "... to the new absolute path" "$d/m2/vms/child.vhd" '
  L["W2ku"] == (E["M2"] + "/store/base.vhd").replace("/", "\\")'

# ------------------------------------------------------------ refusals

mkdir "$d/r"
cp "$d/gen/base.vhd" "$d/gen/child.vhd" "$d/r/"
"$VHDTOOL" create "$d/r/other.vhd" 6295552
"$VHDTOOL" create "$d/r/small.vhd" 1M
other_id=$("$VHDTOOL" info --json "$d/r/other.vhd" | $PY -c 'import json,sys; print(json.load(sys.stdin)["unique-id"])')
snap "$d/r/"*.vhd
check_fails "a parent with another unique id: refused, naming both ids" \
  "$(re "$d/r/child.vhd"): parent id mismatch: the child expects parent id $base_uuid, but $(re "$d/r/other.vhd") has id $other_id" \
  "$VHDTOOL" set-parent "$d/r/child.vhd" "$d/r/other.vhd"
check_fails "a parent of another size: refused" \
  "size mismatch: the child is 6295552 bytes but $(re "$d/r/small.vhd") is 1048576 bytes" \
  "$VHDTOOL" set-parent "$d/r/child.vhd" "$d/r/small.vhd"
check_fails "a file as its own parent: refused" 'a file cannot be its own parent' \
  "$VHDTOOL" set-parent "$d/r/child.vhd" "$d/r/child.vhd"
check_fails "a dynamic disk has no parent: refused" 'base\.vhd: not a differencing disk \(it is dynamic\)' \
  "$VHDTOOL" set-parent "$d/r/base.vhd" "$d/r/other.vhd"
check_fails "PARENT not a VHD: refused" 'not a VHD file' \
  "$VHDTOOL" set-parent "$d/r/child.vhd" "$d/gen/spec.json"
check_fails "FILE missing: exit 1" 'nosuch\.vhd: No such file or directory' \
  "$VHDTOOL" set-parent "$d/r/nosuch.vhd" "$d/r/base.vhd"
unchanged "refused set-parents modified nothing"

# A loop: grand's chain contains child, so grand cannot be child's parent.
"$VHDTOOL" create -p "$d/r/child.vhd" "$d/r/grand.vhd" 2> /dev/null
snap "$d/r/"*.vhd
check_fails "a descendant as the parent (a loop): refused" \
  "$(re "$d/r/grand.vhd") cannot be its parent: $(re "$d/r/child.vhd") is part of the chain of $(re "$d/r/grand.vhd") \(a loop\)" \
  "$VHDTOOL" set-parent --ignore-id-mismatch "$d/r/child.vhd" "$d/r/grand.vhd"
unchanged "a refused loop modified nothing"

# --ignore-id-mismatch: accepted, with a warning, and the id recorded.
check_fails "--ignore-id-mismatch warns" 'warning: .*parent id mismatch ignored' \
  sh -c "'$VHDTOOL' set-parent --ignore-id-mismatch '$d/r/child.vhd' '$d/r/other.vhd' && false"
export other_id
dumped "--ignore-id-mismatch: the child now records the new parent's id" "$d/r/child.vhd" '
  j["header"]["parent_id"] == E["other_id"] and j["header"]["checksum_ok"]'
"$VHDTOOL" info --json "$d/r/child.vhd" > "$tmp/.info" 2>&1
export R=$d/r
$PY -c 'import json,os,sys; j = json.load(open(sys.argv[1]))
sys.exit(j["chain"][1]["file"] != os.environ["R"] + "/other.vhd")' "$tmp/.info" &&
  pass "--ignore-id-mismatch: the chain now opens on the new parent" ||
  { fail "--ignore-id-mismatch: the chain now opens on the new parent"; diag_file "$tmp/.info"; }

cd "$d" || exit 1
check_fails "set-parent without PARENT: exit 2" 'set-parent takes FILE and PARENT' \
  "$VHDTOOL" set-parent a.vhd
check_fails "set-parent --frob: exit 2" 'bad option' "$VHDTOOL" set-parent --frob a b

# Locks: a child served by nbdkit cannot be re-pointed.
mkdir "$d/lock"
cp "$d/gen/base.vhd" "$d/gen/child.vhd" "$d/lock/"
snap "$d/lock/child.vhd"
if nbdkit -r -U "$d/lock/sock" -P "$d/lock/pid" "$PLUGIN" "$d/lock/child.vhd" > "$tmp/.nbdkit" 2>&1; then
  cleanup_fn "kill \$(cat '$d/lock/pid') 2>/dev/null"
  check_fails "set-parent refuses a child nbdkit is serving" 'child\.vhd: file is in use' \
    "$VHDTOOL" set-parent "$d/lock/child.vhd" "$d/lock/base.vhd"
  kill "$(cat "$d/lock/pid")"
else
  fail "nbdkit serves the child"
  diag_file "$tmp/.nbdkit"
fi
unchanged "a refused (locked) set-parent modified nothing"

# ------------------------------------------------------------ relocation

# Locators with only 512 bytes reserved, and a parent whose path needs
# more: the new locators go to the end of the file.
long=$d/reloc/$(printf 'a%.0s' $(seq 120))/$(printf 'b%.0s' $(seq 120))/$(printf 'c%.0s' $(seq 60))
mkdir -p "$long" "$d/reloc/vms"
cat > "$d/reloc/spec.json" <<'EOF'
{ "size": 6295552, "seed": 31, "layers": [
  { "file": "base.vhd", "type": "dynamic",
    "writes": [[0, 100000], [3000000, 500000], [6290000, 5552]] },
  { "file": "child.vhd", "type": "differencing",
    "writes": [[4096, 8192], [3200000, 100000], [6000000, 4096]],
    "locators": [ { "code": "W2ru", "path": ".\\base.vhd", "space": 512 },
                  { "code": "W2ku", "path": "C:\\VMs\\base.vhd", "space": 512 } ] }
] }
EOF
$VHDGEN make "$d/reloc/spec.json" "$d/reloc/gen" > "$tmp/.gen" 2>&1
mv "$d/reloc/gen/base.vhd" "$long/base.vhd"
mv "$d/reloc/gen/child.vhd" "$d/reloc/vms/child.vhd"
old_size=$(stat -c %s "$d/reloc/vms/child.vhd")
export old_size LONG=$long RELOC=$d/reloc
check "set-parent with a 600-byte path into 512-byte locators: exit 0" \
  "$VHDTOOL" set-parent "$d/reloc/vms/child.vhd" "$long/base.vhd"
dumped "relocated: both locators moved past the old end of file, complete" "$d/reloc/vms/child.vhd" '
  all(l["offset"] >= int(E["old_size"]) - 512 and l["space"] >= l["length"]
      for l in j["locators"]) and
  L["W2ku"] == (E["LONG"] + "/base.vhd").replace("/", "\\") and
  L["W2ru"] == "..\\" + (E["LONG"] + "/base.vhd")[len(E["RELOC"]) + 1:].replace("/", "\\") and
  j["file_size"] > int(E["old_size"]) and j["footer_source"] == "eof" and
  j["footer_copy_at_0"] == "identical"'
reads_as "relocated: the chain reads as the model" "$d/reloc/gen/expected.raw" "$d/reloc/vms/child.vhd"
check "relocated: vhdtool check is clean" "$VHDTOOL" check "$d/reloc/vms/child.vhd"
if command -v vhdiinfo > /dev/null; then
  check "relocated: vhdiinfo opens it" vhdiinfo "$d/reloc/vms/child.vhd"
fi
# Data written after the relocation lands after the new locators.
serve "$d/reloc/vms/child.vhd" -- 'nbdsh -u "$uri" -c "h.pwrite(b\"\\x77\" * 4096, 5 * 1024 * 1024); h.flush()"' > "$tmp/.out" 2>&1
cp "$d/reloc/gen/expected.raw" "$tmp/reloc.raw"
printf '\x77%.0s' $(seq 4096) | dd of="$tmp/reloc.raw" bs=1 seek=$((5 * 1024 * 1024)) conv=notrunc status=none
reads_as "relocated: a later write allocates past the moved locators" "$tmp/reloc.raw" "$d/reloc/vms/child.vhd"
check "relocated and written: vhdtool check is clean" "$VHDTOOL" check "$d/reloc/vms/child.vhd"

# ------------------------------------------------------------ every kind

# Wi2r, Wi2k and MacX are rewritten too; W2ru and W2ku are added.
mkdir -p "$d/kinds/p"
cat > "$d/kinds/spec.json" <<'EOF'
{ "size": 6295552, "seed": 31, "layers": [
  { "file": "base.vhd", "type": "dynamic", "writes": [[0, 100000]] },
  { "file": "child.vhd", "type": "differencing", "writes": [[4096, 8192]],
    "locators": [ { "code": "Wi2r", "path": ".\\base.vhd" },
                  { "code": "Wi2k", "path": "C:\\base.vhd" },
                  { "code": "MacX", "path": "file://./base.vhd" } ],
    "layout": { "align_data_4k": true, "bat_offset": "after_locators" } }
] }
EOF
$VHDGEN make "$d/kinds/spec.json" "$d/kinds" > "$tmp/.gen" 2>&1
mv "$d/kinds/base.vhd" "$d/kinds/p/base 1%.vhd"
export K=$d/kinds
check "set-parent on a child with Wi2r, Wi2k and MacX locators: exit 0" \
  "$VHDTOOL" set-parent "$d/kinds/child.vhd" "$d/kinds/p/base 1%.vhd"
dumped "every kind rewritten, W2ru and W2ku added" "$d/kinds/child.vhd" '
  L == {"Wi2r": ".\\p\\base 1%.vhd",
        "Wi2k": (E["K"] + "/p/base 1%.vhd").replace("/", "\\"),
        "MacX": "file://" + E["K"] + "/p/base%201%25.vhd",
        "W2ru": ".\\p\\base 1%.vhd",
        "W2ku": (E["K"] + "/p/base 1%.vhd").replace("/", "\\")} and
  j["header"]["parent_name"] == "base 1%.vhd"'
reads_as "every kind: the chain reads as the model" "$d/kinds/expected.raw" "$d/kinds/child.vhd"

# ------------------------------------------------------------ killed

# Re-point from a working parent to an identical copy elsewhere (same
# id), killing the process at each step: the child must open and show
# the same data after every kill, and running again must finish.
for step in footer-moved locators-written header-written; do
  k=$d/kill-$step
  mkdir -p "$k/vms"
  $VHDGEN make "$d/reloc/spec.json" "$k/gen" > /dev/null 2>&1
  cp "$k/gen/base.vhd" "$k/vms/base.vhd"
  cp "$k/gen/child.vhd" "$k/vms/child.vhd"
  mkdir -p "$k/deep/$(printf 'x%.0s' $(seq 200))"
  newp=$k/deep/$(printf 'x%.0s' $(seq 200))/base-copy.vhd
  cp "$k/gen/base.vhd" "$newp"
  st=$( (VHDTOOL_TEST_KILL_AT=$step "$VHDTOOL" set-parent "$k/vms/child.vhd" "$newp" \
          > /dev/null 2>&1; echo $?) 2> /dev/null)
  [ "$st" -eq 137 ] && pass "killed at $step (SIGKILL)" || fail "killed at $step (exit $st)"
  reads_as "killed at $step: the child still opens and shows the same data" \
    "$k/gen/expected.raw" "$k/vms/child.vhd"
  check "killed at $step: vhdtool check is clean" "$VHDTOOL" check "$k/vms/child.vhd"
  check "killed at $step: running again completes" \
    "$VHDTOOL" set-parent "$k/vms/child.vhd" "$newp"
  rm "$k/vms/base.vhd"
  reads_as "killed at $step, then completed: the child now opens through the new parent" \
    "$k/gen/expected.raw" "$k/vms/child.vhd"
done

"$VHDTOOL" set-parent --help > "$tmp/.help" 2>&1 && grep -q '^Usage: vhdtool set-parent' "$tmp/.help" &&
  grep -q -- '--ignore-id-mismatch' "$tmp/.help" && pass "set-parent --help describes set-parent" || fail "set-parent --help describes set-parent"

done_testing
