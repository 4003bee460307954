#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool check: clean files pass (files vhdtool and the independent
# generator make, real images from other producers); every malformed
# case the plugin's error tests use is reported with the file, the
# structure and what is wrong; several problems are all reported;
# exit status 0 / 1 / 2; --json; and check never modifies anything.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
command -v $PY > /dev/null || skip_all "python3 not installed"

d=$(cd "$tmp" && pwd -P)

# chk NAME FILE: run check (text) and check --json on FILE; outputs in
# $d/NAME.txt, $d/NAME.json (stderr in .err); statuses in $rc, $jrc.
chk () {
  local name=$1 file=$2
  rc=0 jrc=0
  "$VHDTOOL" check "$file" > "$d/$name.txt" 2> "$d/$name.err" || rc=$?
  "$VHDTOOL" check --json "$file" > "$d/$name.json" 2> "$d/$name.jerr" || jrc=$?
  last=$name
}

# expect DESC STATUS [REGEX...]: the last chk exited STATUS (text and
# JSON alike) and its text output (stdout + stderr) matches every REGEX.
expect () {
  local desc=$1 want=$2 r ok=true
  shift 2
  [ "$rc" -eq "$want" ] && [ "$jrc" -eq "$want" ] || ok=false
  for r in "$@"; do
    cat "$d/$last.txt" "$d/$last.err" | grep -Eq -- "$r" || { ok=false; echo "# missing /$r/"; }
  done
  if $ok; then
    pass "$desc"
  else
    fail "$desc (exit $rc/$jrc, wanted $want)"
    diag_file "$d/$last.txt"
    diag_file "$d/$last.err"
  fi
}

# jexpect DESC PYEXPR: PYEXPR holds for j = the last --json output
# (P = its problems as (file, structure, problem) tuples, E = environ).
jexpect () {
  if $PY -c '
import json, os, sys
j = json.load(open(sys.argv[1]))
P = [(p["file"], p["structure"], p["problem"]) for p in j["problems"]]
E = os.environ
ok = eval("(" + sys.argv[2].strip() + "\n)")
if not ok:
    print(json.dumps(j, indent=1)[:3000])
sys.exit(0 if ok else 1)' "$d/$last.json" "$2" > "$tmp/.jc" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.jc"
  fi
}

# ------------------------------------------------------------ usage

last=usage
rc=0; "$VHDTOOL" check > "$d/usage.txt" 2> "$d/usage.err" || rc=$?; jrc=$rc
expect "check without FILE: exit 2" 2 'check takes one FILE'
rc=0; "$VHDTOOL" check --frob x > "$d/usage.txt" 2> "$d/usage.err" || rc=$?; jrc=$rc
expect "check --frob: exit 2" 2 'bad option'
rc=0; "$VHDTOOL" check --help > "$d/usage.txt" 2> "$d/usage.err" || rc=$?; jrc=$rc
expect "check --help: exit 0, describes the exit status" 0 '^Usage: vhdtool check' '0 no problems'

# ------------------------------------------------------------ clean files

mkdir "$d/clean"
"$VHDTOOL" create -t fixed "$d/clean/fixed.vhd" 4M
"$VHDTOOL" create "$d/clean/dyn.vhd" 4M
"$VHDTOOL" create -p "$d/clean/dyn.vhd" "$d/clean/child.vhd"
"$VHDTOOL" create -p "$d/clean/child.vhd" "$d/clean/grand.vhd"
snap "$d/clean/"*.vhd
for f in fixed dyn child grand; do
  chk "clean-$f" "$d/clean/$f.vhd"
  expect "vhdtool-made $f.vhd: exit 0, no problems found" 0 '^no problems found$'
done
export CLEAN=$d/clean
jexpect "clean grandchild: JSON status clean, chain of 3, no problems" '
  j["status"] == "clean" and j["problems"] == [] and
  j["file"] == E["CLEAN"] + "/grand.vhd" and
  [(l["depth"], l["type"], l["file"]) for l in j["chain"]] ==
  [(0, "differencing", E["CLEAN"] + "/grand.vhd"),
   (1, "differencing", E["CLEAN"] + "/child.vhd"),
   (2, "dynamic", E["CLEAN"] + "/dyn.vhd")]'
grep -q "^  2  dynamic      $(re "$d/clean/dyn.vhd")\$" "$d/clean-grand.txt" &&
  pass "clean grandchild: text lists the chain" ||
  { fail "clean grandchild: text lists the chain"; diag_file "$d/clean-grand.txt"; }
unchanged "clean vhdtool-made files: check modified no file"

# Generator-made files with unusual but valid layouts.
mkdir "$d/gen"
cat > "$d/gen/spec.json" <<'EOF'
{ "size": 6292992, "seed": 3, "layers": [
  { "file": "fixed.vhd", "type": "fixed", "writes": [[0, 100000]] },
  { "file": "win.vhd", "type": "differencing", "block_size": 524288,
    "writes": [[4096, 70000]],
    "locators": [ { "code": "W2ku", "path": "C:\\x\\fixed.vhd" },
                  { "code": "W2ru", "path": ".\\fixed.vhd", "space": 65536 } ],
    "layout": { "align_data_4k": true, "bat_offset": "after_locators",
                "stale_fill": 85 } },
  { "file": "odd.vhd", "type": "differencing", "block_size": 65536,
    "writes": [[0, 5000], [3000000, 200000]], "full_blocks": [96],
    "locators": [ { "code": "Wi2r", "path": ".\\win.vhd", "space_in_sectors": true },
                  { "code": "MacX", "path": "file://./win.vhd" } ],
    "layout": { "bat_offset": 8192, "bat_extra_entries": 50,
                "block_order": "shuffle", "gap_sectors": 3 } },
  { "file": "old.vhd", "type": "differencing", "writes": [[512, 512]],
    "layout": { "footer511": true } }
] }
EOF
if $VHDGEN make "$d/gen/spec.json" "$d/gen" > "$d/gen/log" 2>&1; then
  snap "$d/gen/"*.vhd
  chk gen-old "$d/gen/old.vhd"
  expect "generated 4-layer chain (fixed base, Windows layout, odd layout, 511-byte footer): clean" \
    0 '^no problems found$' "^  3  fixed +$(re "$d/gen/fixed.vhd")\$"
  unchanged "generated chain: check modified no file"
else
  fail "vhdgen made the clean chain"
  diag_file "$d/gen/log"
fi

# Real images from other producers.
mkdir "$d/real"
for img in win10-dynamic win10-fixed dfvfs-ext2; do
  if [ -f "$IMAGES/$img.vhd.gz" ]; then
    gunzip -c "$IMAGES/$img.vhd.gz" > "$d/real/$img.vhd"
    snap "$d/real/$img.vhd"
    chk "real-$img" "$d/real/$img.vhd"
    expect "real image $img.vhd: clean" 0 '^no problems found$'
    unchanged "real image $img.vhd: check modified no file"
  else
    skip "real image $img.vhd not found in $IMAGES"
  fi
done

# ------------------------------------------------------------ cannot check

mkdir "$d/junk"
head -c 1048576 /dev/urandom > "$d/junk/random.vhd"
: > "$d/junk/empty.vhd"
head -c 511 /dev/urandom > "$d/junk/short.vhd"
mkdir "$d/junk/dir.vhd"
snap "$d/junk/random.vhd" "$d/junk/empty.vhd" "$d/junk/short.vhd"
chk junk-random "$d/junk/random.vhd"
expect "random bytes: exit 2, not a VHD" 2 \
  "$(re "$d/junk/random.vhd"): not a VHD file: no 'conectix' footer cookie"
export JUNK=$d/junk
jexpect "random bytes: JSON status cannot-check with the reason" '
  j["status"] == "cannot-check" and j["chain"] == [] and
  P == [(E["JUNK"] + "/random.vhd", "file",
         "not a VHD file: no '"'"'conectix'"'"' footer cookie at the end of the file or at offset 0")]'
chk junk-empty "$d/junk/empty.vhd"
expect "empty file: exit 2" 2 "$(re "$d/junk/empty.vhd"): not a VHD file: only 0 bytes long"
chk junk-short "$d/junk/short.vhd"
expect "511-byte file: exit 2" 2 "not a VHD file: only 511 bytes long"
chk junk-dir "$d/junk/dir.vhd"
expect "a directory: exit 2" 2 "$(re "$d/junk/dir.vhd"): not a regular file or block device"
chk junk-nosuch "$d/junk/nosuch.vhd"
expect "nonexistent file: exit 2" 2 "nosuch\.vhd: No such file or directory"
unchanged "files that cannot be checked: check modified no file"

# ------------------------------------------------------------ fixtures

# The shared fixture chain (functions.sh), as in the plugin's error
# tests.
fixture_chain "$d/fx"
base_id=$(vp uid "$d/fx/base.vhd")
base_size=$(stat -c %s "$d/fx/base.vhd")
blk2=$($PY -c 'import json,sys
print(json.load(open(sys.argv[1]))["layers"][0]["blocks"]["2"])' "$d/fx/manifest.json")

# fresh NAME: $c = new directory $d/NAME with copies of base and child.
fresh () {
  mkdir "$d/$1"
  cp "$d/fx/base.vhd" "$d/fx/child.vhd" "$d/$1/"
  c=$d/$1
  export C=$c
}

fresh ok
chk ok "$c/child.vhd"
expect "pristine fixture chain: clean" 0 '^no problems found$'

# ------------------------------------------------------------ chain problems

fresh missing
rm "$c/base.vhd"
snap "$c/child.vhd"
chk missing "$c/child.vhd"
expect "missing parent: exit 1, [parent] parent not found naming the candidates" 1 \
  "^  $(re "$c/child.vhd"): \[parent\] parent not found \(parent id $base_id, name \"base\.vhd\"\); tried: .*$(re "$c/base.vhd").*/images/old/base\.vhd" \
  '^1 problem found$'
jexpect "missing parent: JSON status problems, one problem on the child" '
  j["status"] == "problems" and len(j["chain"]) == 1 and
  [(f, s) for f, s, _ in P] == [(E["C"] + "/child.vhd", "parent")] and
  P[0][2].startswith("parent not found")'
unchanged "missing parent: check modified no file"

fresh wrongid
vp set-parent-id "$c/child.vhd" 0badc0de-0bad-4bad-8bad-0badc0de0bad
snap "$c/base.vhd" "$c/child.vhd"
chk wrongid "$c/child.vhd"
expect "wrong parent id: exit 1, [parent] parent id mismatch with both ids" 1 \
  "\[parent\] parent id mismatch: the child expects parent id 0badc0de-0bad-4bad-8bad-0badc0de0bad, but $(re "$c/base.vhd") has id $base_id"
jexpect "wrong parent id: the rest of the chain is still examined" '
  [l["file"] for l in j["chain"]] == [E["C"] + "/child.vhd", E["C"] + "/base.vhd"] and
  len(P) == 1'
unchanged "wrong parent id: check modified no file"

fresh size
vp set-size "$c/child.vhd" 4194304
snap "$c/base.vhd" "$c/child.vhd"
chk size "$c/child.vhd"
expect "size mismatch: exit 1, names both sizes" 1 \
  "\[parent\] size mismatch: the child is 4194304 bytes but its parent $(re "$c/base.vhd") is 8388608 bytes"
unchanged "size mismatch: check modified no file"

mkdir "$d/self"
"$VHDTOOL" create "$d/self/x.vhd" 8M && "$VHDTOOL" create -p "$d/self/x.vhd" "$d/self/y.vhd" &&
  mv -f "$d/self/y.vhd" "$d/self/x.vhd" && vp set-parent-id "$d/self/x.vhd" "$(vp uid "$d/self/x.vhd")"
snap "$d/self/x.vhd"
chk self "$d/self/x.vhd"
expect "file that is its own parent: exit 1, [chain] parent loop" 1 \
  "\[chain\] parent loop: its parent $(re "$d/self/x.vhd") is already in the chain \(at depth 0\)"
unchanged "self loop: check modified no file"

mkdir "$d/ab"
"$VHDTOOL" create "$d/ab/a.vhd" 8M && "$VHDTOOL" create -p "$d/ab/a.vhd" "$d/ab/b.vhd" &&
  "$VHDTOOL" create -p "$d/ab/b.vhd" "$d/ab/a2.vhd" && mv -f "$d/ab/a2.vhd" "$d/ab/a.vhd" &&
  vp set-parent-id "$d/ab/b.vhd" "$(vp uid "$d/ab/a.vhd")"
snap "$d/ab/a.vhd" "$d/ab/b.vhd"
chk ab "$d/ab/a.vhd"
expect "A->B->A: exit 1, loop reported on B" 1 \
  "$(re "$d/ab/b.vhd"): \[chain\] parent loop: its parent $(re "$d/ab/a.vhd")"
unchanged "A->B->A loop: check modified no file"

fresh junkparent
head -c 65536 /dev/urandom > "$c/base.vhd"
snap "$c/base.vhd" "$c/child.vhd"
chk junkparent "$c/child.vhd"
expect "parent replaced by junk: exit 1, the child's parent cannot be opened, and why" 1 \
  "$(re "$c/child.vhd"): \[parent\] its parent candidate $(re "$c/base.vhd") cannot be opened: not a VHD file"
unchanged "parent replaced by junk: check modified no file"

# ------------------------------------------------------------ checksums, footers

fresh fcsum
vp flip "$c/base.vhd" -400
snap "$c/base.vhd" "$c/child.vhd"
chk fcsum "$c/child.vhd"
expect "bad footer checksum in the parent: exit 1, [footer] on the parent" 1 \
  "$(re "$c/base.vhd"): \[footer\] footer checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$"
# The flipped byte is in the EOF footer only: its copy at 0 differs too.
jexpect "bad footer checksum: the parent's footer and footer copy, nothing else" '
  [(f, s) for f, s, _ in P] == [(E["C"] + "/base.vhd", "footer"),
                               (E["C"] + "/base.vhd", "footer copy")]'
unchanged "bad footer checksum: check modified no file"

fresh hcsum
vp flip "$c/child.vhd" $((512 + 800))
snap "$c/base.vhd" "$c/child.vhd"
chk hcsum "$c/child.vhd"
expect "bad header checksum: exit 1, [dynamic header]" 1 \
  "$(re "$c/child.vhd"): \[dynamic header\] dynamic header checksum mismatch"
unchanged "bad header checksum: check modified no file"

fresh copy
vp set-copy-timestamp "$c/base.vhd" 12345
snap "$c/base.vhd"
chk copy "$c/base.vhd"
expect "footer copy differing from the EOF footer: exit 1, [footer copy]" 1 \
  "\[footer copy\] footer copy at offset 0 differs from the footer at the end of the file"
unchanged "footer copy mismatch: check modified no file"

fresh nofooter
truncate -s $((base_size - 100)) "$c/base.vhd"
snap "$c/base.vhd"
chk nofooter "$c/base.vhd"
expect "EOF footer cut: exit 1, [footer] no valid footer at end of file" 1 \
  "\[footer\] no valid footer at end of file$"
unchanged "EOF footer cut: check modified no file"

fresh features
vp set-features "$c/base.vhd" 0
snap "$c/base.vhd"
chk features "$c/base.vhd"
expect "footer features without the reserved bit: exit 1, [footer]" 1 \
  "\[footer\] footer: features 0x00000000 lack the reserved bit 0x2"
unchanged "features: check modified no file"

fresh hdroff
vp set-header-data-offset "$c/base.vhd" 0x1234
snap "$c/base.vhd"
chk hdroff "$c/base.vhd"
expect "header data offset not all ones: exit 1, [dynamic header]" 1 \
  "\[dynamic header\] dynamic header: data offset is 0x1234, not all ones"
unchanged "header data offset: check modified no file"

fresh badtype
vp set-type "$c/base.vhd" 5
snap "$c/base.vhd"
chk badtype "$c/base.vhd"
expect "unsupported disk type: exit 1 (a VHD, but unusable)" 1 \
  "\[footer\] footer: unsupported disk type 5"
unchanged "unsupported disk type: check modified no file"

mkdir "$d/tfixed"
"$VHDTOOL" create -t fixed "$d/tfixed/f.vhd" 1M
vp set-size "$d/tfixed/f.vhd" 2097152
snap "$d/tfixed/f.vhd"
chk tfixed "$d/tfixed/f.vhd"
expect "fixed disk larger than its file: exit 1, [file] truncated" 1 \
  "\[file\] truncated: fixed disk of 2097152 bytes but the footer is at offset 1048576"
unchanged "truncated fixed disk: check modified no file"

# ------------------------------------------------------------ truncation, BAT

fresh tblock
truncate -s $((blk2 * 512 + 512 + 1000)) "$c/base.vhd"
snap "$c/base.vhd"
chk tblock "$c/base.vhd"
expect "base cut inside its last block: exit 1, BAT entry past the end and no EOF footer" 1 \
  "\[BAT\] BAT entry 2 \(sector $blk2\) points past the end of the file data" \
  "\[footer\] no valid footer at end of file"
unchanged "base cut inside a block: check modified no file"

fresh tbat
truncate -s $((1536 + 100)) "$c/base.vhd"
snap "$c/base.vhd"
chk tbat "$c/base.vhd"
expect "base cut inside the BAT: exit 1, [BAT] lies past the end" 1 \
  "\[BAT\] dynamic header: BAT at offset 1536 \(512 bytes\) lies past the end of the file"
unchanged "base cut inside the BAT: check modified no file"

fresh thdr
truncate -s 1000 "$c/base.vhd"
snap "$c/base.vhd"
chk thdr "$c/base.vhd"
expect "base cut inside the header: exit 1, [footer] header offset not inside" 1 \
  "\[footer\] footer: dynamic header offset 512 is not inside the file"
unchanged "base cut inside the header: check modified no file"

fresh tloc
truncate -s 2100 "$c/child.vhd"
snap "$c/child.vhd" "$c/base.vhd"
chk tloc "$c/child.vhd"
expect "child cut inside its locator data: exit 1, [parent locator]" 1 \
  "\[parent locator\] parent locator 0 \(W2ru\): data at offset 2048 \(512 bytes\) lies past the end of the file"
unchanged "child cut inside its locators: check modified no file"

# bat_case NAME DESC FILE ENTRY VALUE REGEX
bat_case () {
  fresh "$1"
  vp set-bat "$c/$3" "$4" "$5"
  snap "$c/base.vhd" "$c/child.vhd"
  chk "$1" "$c/$3"
  expect "$2: exit 1, [BAT]" 1 "$(re "$c/$3"): \[BAT\] $6"
  unchanged "$2: check modified no file"
}
bat_case batpast "BAT entry past EOF" base.vhd 1 0x00100000 \
  "BAT entry 1 \(sector 1048576\) points past the end of the file data \($((base_size - 512)) bytes\)"
bat_case batmax "BAT entry 0xfffffffe" base.vhd 3 0xfffffffe \
  "BAT entry 3 \(sector 4294967294\) points past the end"
bat_case bathdr "BAT entry into the header" base.vhd 1 1 \
  "BAT entry 1 \(sector 1\) overlaps the header or the BAT"
bat_case bat0 "BAT entry at sector 0" base.vhd 1 0 \
  "BAT entry 1 \(sector 0\) overlaps the header or the BAT"
bat_case batbat "BAT entry into the BAT" base.vhd 1 3 \
  "BAT entry 1 \(sector 3\) overlaps the header or the BAT"
bat_case batdup "two BAT entries sharing a block" base.vhd 1 "$(vp bat "$d/fx/base.vhd" 0)" \
  "BAT: blocks at sectors 4 and 4 overlap"
bat_case batloc "child BAT entry into its locator" child.vhd 3 4 \
  "BAT entry 3 \(sector 4\) overlaps parent locator 0"

fresh locbat
vp set-locator-offset "$c/child.vhd" 1 1536
snap "$c/base.vhd" "$c/child.vhd"
chk locbat "$c/child.vhd"
expect "locator area over the BAT: exit 1, [parent locator] overlap" 1 \
  "\[parent locator\] parent locator 1: its reserved area \[1536, 2048\) overlaps the header or the BAT"
unchanged "locator over the BAT: check modified no file"

# ------------------------------------------------------------ many problems

# One file, five problems: all reported, in one run.
fresh many
vp flip "$c/base.vhd" -400
vp flip "$c/base.vhd" $((512 + 800))
vp set-bat "$c/base.vhd" 1 0x00100000
vp set-bat "$c/base.vhd" 3 "$(vp bat "$d/fx/base.vhd" 0)"
snap "$c/base.vhd" "$c/child.vhd"
chk many "$c/child.vhd"
expect "five problems in the parent: exit 1, all five reported" 1 \
  "$(re "$c/base.vhd"): \[footer\] footer checksum mismatch" \
  "$(re "$c/base.vhd"): \[footer copy\] footer copy at offset 0 differs" \
  "$(re "$c/base.vhd"): \[dynamic header\] dynamic header checksum mismatch" \
  "$(re "$c/base.vhd"): \[BAT\] BAT entry 1 \(sector 1048576\) points past the end" \
  "$(re "$c/base.vhd"): \[BAT\] BAT: blocks at sectors 4 and 4 overlap" \
  '^5 problems found$'
jexpect "five problems: JSON lists them with file and structure" '
  j["status"] == "problems" and
  [(f, s) for f, s, _ in P] == [(E["C"] + "/base.vhd", "footer"),
                               (E["C"] + "/base.vhd", "footer copy"),
                               (E["C"] + "/base.vhd", "dynamic header"),
                               (E["C"] + "/base.vhd", "BAT"),
                               (E["C"] + "/base.vhd", "BAT")]'
unchanged "five problems: check modified no file"

# Problems in two files of one chain.
fresh two
vp flip "$c/child.vhd" -400
vp set-bat "$c/base.vhd" 1 1
snap "$c/base.vhd" "$c/child.vhd"
chk two "$c/child.vhd"
expect "problems in child and parent: all reported" 1 \
  "$(re "$c/child.vhd"): \[footer\] footer checksum mismatch" \
  "$(re "$c/child.vhd"): \[footer copy\] footer copy at offset 0 differs" \
  "$(re "$c/base.vhd"): \[BAT\] BAT entry 1 \(sector 1\) overlaps" '^3 problems found$'
unchanged "problems in two files: check modified no file"

# ------------------------------------------------------------ real images

if [ -f "$IMAGES/dfvfs-image-chain/image.vhd.gz" ] &&
   [ -f "$IMAGES/dfvfs-fat-differential.vhd.gz" ]; then
  gunzip -c "$IMAGES/dfvfs-image-chain/image.vhd.gz" > "$d/real/image.vhd"
  gunzip -c "$IMAGES/dfvfs-image-chain/image-differential.vhd.gz" \
    > "$d/real/image-differential.vhd"
  gunzip -c "$IMAGES/dfvfs-fat-differential.vhd.gz" > "$d/real/fat-differential.vhd"
  snap "$d/real/image.vhd" "$d/real/image-differential.vhd" "$d/real/fat-differential.vhd"
  chk real-chain "$d/real/image-differential.vhd"
  expect "real hand-edited chain: the three bad checksums in both files" 1 \
    "$(re "$d/real/image-differential.vhd"): \[footer\] footer checksum mismatch" \
    "$(re "$d/real/image-differential.vhd"): \[dynamic header\] dynamic header checksum mismatch" \
    "$(re "$d/real/image.vhd"): \[footer\] footer checksum mismatch" '^3 problems found$'
  chk real-diskpart "$d/real/fat-differential.vhd"
  expect "real diskpart child without its parent: parent not found" 1 \
    "\[parent\] parent not found .*C:\\\\Projects\\\\dfvfs\\\\test_data\\\\fat-parent\.vhd" '^1 problem found$'
  unchanged "real images with problems: check modified no file"
else
  skip "real images not found in $IMAGES"
fi

done_testing
