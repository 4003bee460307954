#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Every way opening a chain can fail, through the plugin: nbdkit must
# exit non-zero at startup with a message naming the file and the
# problem, and must not modify any file.  Also: the options that get
# past the problem (parent=, parent-dir=, ignore-checksums,
# ignore-id-mismatch, max-depth), locking between servers, and relative
# paths in daemon mode (nbdkit chdirs to / after forking).
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

for prog in nbdcopy nbdsh /usr/bin/python3 sha256sum; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

# The real path of the temporary directory: messages name files by
# their realpath().
d=$(cd "$tmp" && pwd -P)

# ------------------------------------------------------------ helpers

# startup_fails DESC REGEX ARGS...: nbdkit serving ARGS must fail at
# startup (the --run command must never run) with output matching REGEX.
startup_fails () {
  local desc=$1 re=$2
  shift 2
  rm -f "$tmp/.ran"
  check_fails "$desc" "$re" \
    nbdkit -U "$(newsock)" "$PLUGIN" "$@" --run "touch '$tmp/.ran'"
  if [ -e "$tmp/.ran" ]; then
    fail "$desc: nbdkit ran the client although the chain is bad"
  fi
}

# Daemons: start_daemon NAME ARGS... serves ARGS on $d/NAME.sock.
daemons=()
start_daemon () {
  local name=$1 i
  shift
  rm -f "$d/$name.sock" "$d/$name.pid"
  nbdkit -U "$d/$name.sock" -P "$d/$name.pid" "$PLUGIN" "$@" \
    > "$d/$name.log" 2>&1 || return 1
  daemons+=("$name")
  for i in $(seq 100); do
    [ -s "$d/$name.pid" ] && [ -S "$d/$name.sock" ] && return 0
    sleep 0.05
  done
  return 1
}
stop_daemon () {
  local pid i
  [ -s "$d/$1.pid" ] || return 0
  pid=$(cat "$d/$1.pid")
  kill "$pid" 2> /dev/null
  for i in $(seq 100); do
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.05
  done
  rm -f "$d/$1.pid"
}
stop_all_daemons () {
  local n
  for n in "${daemons[@]+"${daemons[@]}"}"; do
    stop_daemon "$n"
  done
}
cleanup_fn stop_all_daemons

# ------------------------------------------------------------ fixtures

# The shared fixture chain (functions.sh), written by the independent
# test oracle, which also gives the guest view of each chain.
fixture_chain "$d/gen/out"
BASE_RAW=$d/gen/out/base.raw
CHILD_RAW=$d/gen/out/expected.raw
base_id=$(vp uid "$d/gen/out/base.vhd")

# fresh NAME: a new directory $d/NAME holding copies of base and child.
fresh () {
  mkdir "$d/$1"
  cp "$d/gen/out/base.vhd" "$d/gen/out/child.vhd" "$d/$1/"
  c=$d/$1
}

# Sanity: the pristine chain opens and reads as modelled (otherwise
# every failure below would prove nothing).
fresh ok
snap "$c/base.vhd" "$c/child.vhd"
reads_as "pristine chain reads as modelled" "$CHILD_RAW" "$c/child.vhd"
reads_as "pristine base reads as modelled" "$BASE_RAW" "$c/base.vhd"
unchanged "pristine chain: no file modified"

# ------------------------------------------------------------ not a VHD

mkdir "$d/junk"
head -c 1048576 /dev/urandom > "$d/junk/random.vhd"
: > "$d/junk/empty.vhd"
head -c 511 /dev/urandom > "$d/junk/short.vhd"
mkdir "$d/junk/dir.vhd"
snap "$d/junk/random.vhd" "$d/junk/empty.vhd" "$d/junk/short.vhd"
startup_fails "random bytes: not a VHD, no footer cookie" \
  "error: $(re "$d/junk/random.vhd"): not a VHD file: no 'conectix' footer cookie" \
  "$d/junk/random.vhd"
startup_fails "empty file: not a VHD, too short for a footer" \
  "error: $(re "$d/junk/empty.vhd"): not a VHD file: only 0 bytes long, too short for a footer" \
  "$d/junk/empty.vhd"
startup_fails "511-byte file: too short for a footer" \
  "error: $(re "$d/junk/short.vhd"): not a VHD file: only 511 bytes long" \
  "$d/junk/short.vhd"
startup_fails "a directory: not a regular file" \
  "error: $(re "$d/junk/dir.vhd"): not a regular file or block device" \
  "$d/junk/dir.vhd"
startup_fails "nonexistent file" \
  "error: $(re "$d/junk/nosuch.vhd"): No such file or directory" \
  "$d/junk/nosuch.vhd"
unchanged "not a VHD: no file modified"
[ ! -e "$d/junk/nosuch.vhd" ] && pass "nonexistent file was not created" ||
  fail "nonexistent file was not created"

# ------------------------------------------------------------ missing parent

# Move the child away from its parent: W2ru now resolves next to the
# child, W2ku to /images/old; both must be listed as tried.
fresh missing
mkdir "$c/moved"
mv "$c/child.vhd" "$c/moved/child.vhd"
rm "$c/base.vhd"
snap "$c/moved/child.vhd"
startup_fails "missing parent: names the child and says 'parent not found'" \
  "error: $(re "$c/moved/child.vhd"): parent not found \(parent id $base_id, name \"base\.vhd\"\)" \
  "$c/moved/child.vhd"
check_fails "missing parent: lists the W2ru candidate (child's dir) as tried" \
  "tried: .*$(re "$c/moved/base.vhd")" \
  nbdkit -U "$(newsock)" "$PLUGIN" "$c/moved/child.vhd" --run true
check_fails "missing parent: lists the W2ku candidate (drive letter dropped)" \
  "tried: .*/images/old/base\.vhd" \
  nbdkit -U "$(newsock)" "$PLUGIN" "$c/moved/child.vhd" --run true
check_fails "missing parent: hints at parent= / parent-dir=" \
  "use the parent or parent-dir option" \
  nbdkit -U "$(newsock)" "$PLUGIN" "$c/moved/child.vhd" --run true
startup_fails "missing parent: parent-dir= without it is listed as tried" \
  "parent not found.*tried: .*$(re "$c/empty/base.vhd")" \
  "$c/moved/child.vhd" parent-dir="$c/empty"
unchanged "missing parent: no file modified"

# The parent exists elsewhere, under another name: parent= finds it.
fresh parentopt
mkdir "$c/store"
mv "$c/base.vhd" "$c/store/renamed.vhd"
snap "$c/child.vhd" "$c/store/renamed.vhd"
startup_fails "parent renamed: not found without parent=" \
  "error: $(re "$c/child.vhd"): parent not found" "$c/child.vhd"
reads_as "parent= names the moved, renamed parent: chain reads as modelled" \
  "$CHILD_RAW" "$c/child.vhd" parent="$c/store/renamed.vhd"
# parent= with a relative path (relative to the user's directory).
rm -f "$tmp/.read.raw"
if (cd "$c" && read_all "$tmp/.read.raw" child.vhd parent=store/renamed.vhd) \
     > "$tmp/.out" 2>&1 && cmp -s "$tmp/.read.raw" "$CHILD_RAW"; then
  pass "relative parent= path works"
else
  fail "relative parent= path works"
  diag_file "$tmp/.out"
fi
unchanged "parent=: no file modified"

# The parent keeps its name but lives in another directory.
fresh parentdir
mkdir "$c/store"
mv "$c/base.vhd" "$c/store/base.vhd"
snap "$c/child.vhd" "$c/store/base.vhd"
startup_fails "parent moved: not found without parent-dir=" \
  "error: $(re "$c/child.vhd"): parent not found" "$c/child.vhd"
reads_as "parent-dir= finds the moved parent: chain reads as modelled" \
  "$CHILD_RAW" "$c/child.vhd" parent-dir="$c/nowhere" parent-dir="$c/store"
unchanged "parent-dir=: no file modified"

# A parent= that is a different VHD than the child's parent, and no
# other candidate: id mismatch naming that file.
fresh wrongparentopt
"$VHDTOOL" create "$c/other.vhd" 8M > /dev/null
other_id=$(vp uid "$c/other.vhd")
rm "$c/base.vhd"
snap "$c/child.vhd" "$c/other.vhd"
startup_fails "parent= of a different disk: id mismatch naming both" \
  "error: $(re "$c/child.vhd"): parent id mismatch: the child expects parent id $base_id, but $(re "$c/other.vhd") has id $other_id" \
  "$c/child.vhd" parent="$c/other.vhd"
unchanged "parent= of a different disk: no file modified"

# ------------------------------------------------------------ wrong parent id

fresh wrongid
bogus=0badc0de-0bad-4bad-8bad-0badc0de0bad
vp set-parent-id "$c/child.vhd" "$bogus"
[ "$(vp parent-id "$c/child.vhd")" = "$bogus" ] ||
  echo "Bail out! could not patch the parent id"
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "wrong parent id: message names child, parent and both ids" \
  "error: $(re "$c/child.vhd"): parent id mismatch: the child expects parent id $bogus, but $(re "$c/base.vhd") has id $base_id \(use the ignore-id-mismatch option" \
  "$c/child.vhd"
startup_fails "wrong parent id: ignore-id-mismatch=false still refuses" \
  "parent id mismatch" "$c/child.vhd" ignore-id-mismatch=false
reads_as "wrong parent id: ignore-id-mismatch=true opens the chain" \
  "$CHILD_RAW" "$c/child.vhd" ignore-id-mismatch=true
if grep -Eq "parent id mismatch ignored.*$bogus.*$(re "$c/base.vhd").*$base_id" \
     "$tmp/.out"; then
  pass "wrong parent id: ignore-id-mismatch=true warns with both ids"
else
  fail "wrong parent id: ignore-id-mismatch=true warns with both ids"
  diag_file "$tmp/.out"
fi
unchanged "wrong parent id: no file modified"

# ------------------------------------------------------------ size mismatch

fresh size
vp set-size "$c/child.vhd" 4194304
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "child/parent size mismatch: names both files and sizes" \
  "error: $(re "$c/child.vhd"): size mismatch: the child is 4194304 bytes but its parent $(re "$c/base.vhd") is 8388608 bytes" \
  "$c/child.vhd"
unchanged "size mismatch: no file modified"

# ------------------------------------------------------------ loops

# A file that is its own parent: a child whose locators say ".\x.vhd"
# renamed to x.vhd, with its parent id set to its own unique id.
mkdir "$d/self"
"$VHDTOOL" create "$d/self/x.vhd" 8M > /dev/null &&
  "$VHDTOOL" create -p "$d/self/x.vhd" "$d/self/y.vhd" > /dev/null &&
  mv -f "$d/self/y.vhd" "$d/self/x.vhd" &&
  vp set-parent-id "$d/self/x.vhd" "$(vp uid "$d/self/x.vhd")"
snap "$d/self/x.vhd"
startup_fails "file that is its own parent: parent loop" \
  "error: $(re "$d/self/x.vhd"): parent loop: its parent $(re "$d/self/x.vhd") is already in the chain \(at depth 0\)" \
  "$d/self/x.vhd"
unchanged "self-parent loop: no file modified"

# A -> B -> A: a.vhd is a child of b.vhd, b.vhd a child of a.vhd.
mkdir "$d/ab"
"$VHDTOOL" create "$d/ab/a.vhd" 8M > /dev/null &&
  "$VHDTOOL" create -p "$d/ab/a.vhd" "$d/ab/b.vhd" > /dev/null &&
  "$VHDTOOL" create -p "$d/ab/b.vhd" "$d/ab/a2.vhd" > /dev/null &&
  mv -f "$d/ab/a2.vhd" "$d/ab/a.vhd" &&
  vp set-parent-id "$d/ab/b.vhd" "$(vp uid "$d/ab/a.vhd")"
snap "$d/ab/a.vhd" "$d/ab/b.vhd"
startup_fails "A->B->A from A: parent loop naming B and A" \
  "error: $(re "$d/ab/b.vhd"): parent loop: its parent $(re "$d/ab/a.vhd") is already in the chain \(at depth 0\)" \
  "$d/ab/a.vhd"
startup_fails "A->B->A from B: parent loop naming A and B" \
  "error: $(re "$d/ab/a.vhd"): parent loop: its parent $(re "$d/ab/b.vhd") is already in the chain \(at depth 0\)" \
  "$d/ab/b.vhd"
startup_fails "A->B->A with a large max-depth: still a loop, not a depth error" \
  "parent loop" "$d/ab/a.vhd" max-depth=100000
unchanged "A->B->A loop: no file modified"

# ------------------------------------------------------------ depth

# base <- c1 <- c2 <- c3: four layers.
mkdir "$d/deep"
"$VHDTOOL" create "$d/deep/base.vhd" 4M > /dev/null &&
  "$VHDTOOL" create -p "$d/deep/base.vhd" "$d/deep/c1.vhd" > /dev/null &&
  "$VHDTOOL" create -p "$d/deep/c1.vhd" "$d/deep/c2.vhd" > /dev/null &&
  "$VHDTOOL" create -p "$d/deep/c2.vhd" "$d/deep/c3.vhd" > /dev/null
snap "$d/deep/"*.vhd
head -c 4194304 /dev/zero > "$tmp/zero4m.raw"
startup_fails "4-layer chain with max-depth=3: chain too deep" \
  "error: $(re "$d/deep/c3.vhd"): chain too deep: more than 3 layers \(the max-depth option" \
  "$d/deep/c3.vhd" max-depth=3
startup_fails "4-layer chain with max-depth=1: chain too deep" \
  "error: $(re "$d/deep/c3.vhd"): chain too deep: more than 1 layers" \
  "$d/deep/c3.vhd" max-depth=1
reads_as "4-layer chain with max-depth=4 opens" "$tmp/zero4m.raw" \
  "$d/deep/c3.vhd" max-depth=4
reads_as "3-layer chain with max-depth=3 opens" "$tmp/zero4m.raw" \
  "$d/deep/c2.vhd" max-depth=3
startup_fails "max-depth=0 is refused" "max-depth must be at least 1" \
  "$d/deep/c3.vhd" max-depth=0
unchanged "depth: no file modified"

# ------------------------------------------------------------ checksums

fresh fcsum
vp flip "$c/base.vhd" -400         # a reserved byte of the EOF footer
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "bad footer checksum: names the file, says footer checksum" \
  "error: $(re "$c/base.vhd"): footer checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\); use the ignore-checksums option" \
  "$c/base.vhd"
startup_fails "bad footer checksum in the parent: names the parent" \
  "error: $(re "$c/base.vhd"): footer checksum mismatch" "$c/child.vhd"
out_has "bad footer checksum in the parent: the child names its parent" \
  "error: $(re "$c/child.vhd"): its parent candidate $(re "$c/base.vhd") cannot be opened"
reads_as "bad footer checksum: ignore-checksums=true opens it" \
  "$BASE_RAW" "$c/base.vhd" ignore-checksums=true
grep -q "footer checksum mismatch.*ignored" "$tmp/.out" &&
  pass "bad footer checksum: ignore-checksums=true warns" ||
  fail "bad footer checksum: ignore-checksums=true warns"
reads_as "bad footer checksum in the parent: ignore-checksums=true opens the chain" \
  "$CHILD_RAW" "$c/child.vhd" ignore-checksums=true
unchanged "bad footer checksum: no file modified"

fresh hcsum
vp flip "$c/base.vhd" $((512 + 800))  # a reserved byte of the header
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "bad header checksum: names the file, says header checksum" \
  "error: $(re "$c/base.vhd"): dynamic header checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\); use the ignore-checksums option" \
  "$c/base.vhd"
reads_as "bad header checksum: ignore-checksums=true opens it" \
  "$BASE_RAW" "$c/base.vhd" ignore-checksums=true
unchanged "bad header checksum: no file modified"

fresh ccsum
vp flip "$c/child.vhd" $((512 + 800))
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "bad header checksum in the child of a chain" \
  "error: $(re "$c/child.vhd"): dynamic header checksum mismatch" \
  "$c/child.vhd"
reads_as "bad child header checksum: ignore-checksums=true opens the chain" \
  "$CHILD_RAW" "$c/child.vhd" ignore-checksums=true
unchanged "bad child header checksum: no file modified"

# ------------------------------------------------------------ truncation

# Block 2 of the base is the last one in the file (see manifest.json).
blk2=$(/usr/bin/python3 -c 'import json,sys
m = json.load(open(sys.argv[1]))
print(m["layers"][0]["blocks"]["2"])' "$d/gen/out/manifest.json")
base_size=$(stat -c %s "$d/gen/out/base.vhd")

# trunc_case LABEL LENGTH REGEX: base.vhd cut to LENGTH bytes must fail.
trunc_n=0
trunc_case () {
  trunc_n=$((trunc_n + 1))
  fresh "trunc$trunc_n"
  truncate -s "$2" "$c/base.vhd"
  snap "$c/base.vhd"
  startup_fails "base cut at $2 ($1)" "error: $(re "$c/base.vhd"): $3" \
    "$c/base.vhd"
  unchanged "base cut at $2 ($1): no file modified"
}
trunc_case "inside the last block" $((blk2 * 512 + 512 + 1000)) \
  "BAT entry 2 \(sector $blk2\) points past the end of the file data"
trunc_case "inside the last block's bitmap" $((blk2 * 512 + 100)) \
  "BAT entry 2 \(sector $blk2\) points past the end of the file data"
trunc_case "inside the first block" $((4 * 512 + 4096)) \
  "BAT entry 0 \(sector 4\) points past the end of the file data"
trunc_case "inside the BAT" $((1536 + 100)) \
  "dynamic header: BAT at offset 1536 \(512 bytes\) lies past the end of the file"
trunc_case "inside the dynamic header" 1000 \
  "footer: dynamic header offset 512 is not inside the file"
trunc_case "inside the footer copy at 0" 300 \
  "not a VHD file: only 300 bytes long"

# Cut inside the EOF footer: the data is intact and the footer copy at
# offset 0 is used (documented crash recovery), with a warning.  Read
# only, the file must stay as it is.
fresh trunc-footer
truncate -s $((base_size - 100)) "$c/base.vhd"
snap "$c/base.vhd"
reads_as "base cut inside the EOF footer: copy at 0 used, data intact" \
  "$BASE_RAW" "$c/base.vhd"
grep -q "$(re "$c/base.vhd"): no valid footer at end of file, using the copy at offset 0" \
  "$tmp/.out" && pass "base cut inside the EOF footer: warns" ||
  { fail "base cut inside the EOF footer: warns"; diag_file "$tmp/.out"; }
unchanged "base cut inside the EOF footer (read-only): no file modified"

# ... and the same cut in a fixed disk (no copy at 0) is fatal.
mkdir "$d/tfixed"
"$VHDTOOL" create -t fixed "$d/tfixed/f.vhd" 1M > /dev/null
truncate -s $((1048576 + 512 - 100)) "$d/tfixed/f.vhd"
snap "$d/tfixed/f.vhd"
startup_fails "fixed disk cut inside its footer: not a VHD" \
  "error: $(re "$d/tfixed/f.vhd"): not a VHD file: no 'conectix' footer cookie" \
  "$d/tfixed/f.vhd"
unchanged "fixed disk cut inside its footer: no file modified"

# A fixed disk whose footer claims more data than the file holds.
mkdir "$d/tfixed2"
"$VHDTOOL" create -t fixed "$d/tfixed2/f.vhd" 1M > /dev/null
vp set-size "$d/tfixed2/f.vhd" 2097152
snap "$d/tfixed2/f.vhd"
startup_fails "fixed disk larger than its file: truncated" \
  "error: $(re "$d/tfixed2/f.vhd"): truncated: fixed disk of 2097152 bytes but the footer is at offset 1048576" \
  "$d/tfixed2/f.vhd"
unchanged "fixed disk larger than its file: no file modified"

# A differencing child cut inside its locator data.
fresh trunc-loc
truncate -s 2100 "$c/child.vhd"
snap "$c/child.vhd" "$c/base.vhd"
startup_fails "child cut inside its locator data" \
  "error: $(re "$c/child.vhd"): parent locator 0 \(W2ru\): data at offset 2048 \(512 bytes\) lies past the end of the file" \
  "$c/child.vhd"
unchanged "child cut inside its locator data: no file modified"

# ------------------------------------------------------------ bad BAT entries

fresh batpast
vp set-bat "$c/base.vhd" 1 0x00100000
snap "$c/base.vhd"
startup_fails "BAT entry past EOF" \
  "error: $(re "$c/base.vhd"): BAT entry 1 \(sector 1048576\) points past the end of the file data \($((base_size - 512)) bytes\)" \
  "$c/base.vhd"
unchanged "BAT entry past EOF: no file modified"

fresh batpast2
vp set-bat "$c/base.vhd" 3 0xfffffffe
snap "$c/base.vhd"
startup_fails "BAT entry 0xfffffffe (near the 32-bit limit)" \
  "error: $(re "$c/base.vhd"): BAT entry 3 \(sector 4294967294\) points past the end" \
  "$c/base.vhd"
unchanged "BAT entry 0xfffffffe: no file modified"

fresh bathdr
vp set-bat "$c/base.vhd" 1 1
snap "$c/base.vhd"
startup_fails "BAT entry pointing into the dynamic header" \
  "error: $(re "$c/base.vhd"): BAT entry 1 \(sector 1\) overlaps the header or the BAT" \
  "$c/base.vhd"
unchanged "BAT entry into the header: no file modified"

fresh batfooter
vp set-bat "$c/base.vhd" 1 0
snap "$c/base.vhd"
startup_fails "BAT entry pointing at sector 0 (the footer copy)" \
  "error: $(re "$c/base.vhd"): BAT entry 1 \(sector 0\) overlaps the header or the BAT" \
  "$c/base.vhd"
unchanged "BAT entry at sector 0: no file modified"

fresh batbat
vp set-bat "$c/base.vhd" 1 3
snap "$c/base.vhd"
startup_fails "BAT entry pointing into the BAT" \
  "error: $(re "$c/base.vhd"): BAT entry 1 \(sector 3\) overlaps the header or the BAT" \
  "$c/base.vhd"
unchanged "BAT entry into the BAT: no file modified"

fresh batdup
vp set-bat "$c/base.vhd" 1 "$(vp bat "$c/base.vhd" 0)"
snap "$c/base.vhd"
startup_fails "two BAT entries sharing a block" \
  "error: $(re "$c/base.vhd"): BAT: blocks at sectors 4 and 4 overlap" \
  "$c/base.vhd"
unchanged "two BAT entries sharing a block: no file modified"

fresh batloc
vp set-bat "$c/child.vhd" 3 4     # sector 4 = offset 2048 = W2ru data
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "child BAT entry pointing into its parent locator" \
  "error: $(re "$c/child.vhd"): BAT entry 3 \(sector 4\) overlaps parent locator 0" \
  "$c/child.vhd"
unchanged "child BAT entry into a locator: no file modified"

# A corrupt parent found by the locator: the child names it.
fresh badparent
head -c 65536 /dev/urandom > "$c/base.vhd"
snap "$c/base.vhd" "$c/child.vhd"
startup_fails "parent replaced by junk: the parent is not a VHD" \
  "error: $(re "$c/base.vhd"): not a VHD file" "$c/child.vhd"
out_has "parent replaced by junk: the child says its parent cannot be opened" \
  "error: $(re "$c/child.vhd"): its parent candidate $(re "$c/base.vhd") cannot be opened"
unchanged "parent replaced by junk: no file modified"

# ------------------------------------------------------------ real images

# qemu-made chain, hand-edited: wrong checksums in both files, no
# locators (only the parent name).  Content sha256 from images/README.md.
if [ -f "$IMAGES/dfvfs-image-chain/image.vhd.gz" ] &&
   [ -f "$IMAGES/dfvfs-image-chain/image-differential.vhd.gz" ] &&
   [ -f "$IMAGES/dfvfs-fat-differential.vhd.gz" ]; then
  mkdir "$d/real"
  gunzip -c "$IMAGES/dfvfs-image-chain/image.vhd.gz" > "$d/real/image.vhd"
  gunzip -c "$IMAGES/dfvfs-image-chain/image-differential.vhd.gz" \
    > "$d/real/image-differential.vhd"
  gunzip -c "$IMAGES/dfvfs-fat-differential.vhd.gz" \
    > "$d/real/fat-differential.vhd"
  snap "$d/real/"*.vhd
  startup_fails "real chain with bad checksums: footer checksum of the child" \
    "error: $(re "$d/real/image-differential.vhd"): footer checksum mismatch" \
    "$d/real/image-differential.vhd"
  startup_fails "real parent with a bad checksum served alone" \
    "error: $(re "$d/real/image.vhd"): footer checksum mismatch" \
    "$d/real/image.vhd"
  rm -f "$tmp/.read.raw"
  if read_all "$tmp/.read.raw" "$d/real/image-differential.vhd" \
       ignore-checksums=true > "$tmp/.out" 2>&1 &&
     [ "$(sha256sum < "$tmp/.read.raw" | cut -d' ' -f1)" = \
       c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25 ]; then
    pass "real chain with bad checksums: ignore-checksums=true reads the known content"
  else
    fail "real chain with bad checksums: ignore-checksums=true reads the known content"
    diag_file "$tmp/.out"
  fi
  out_has "real chain: the header checksum of the child is reported too" \
    "$(re "$d/real/image-differential.vhd"): dynamic header checksum mismatch .*ignored"
  startup_fails "real diskpart child without its parent: parent not found" \
    "error: $(re "$d/real/fat-differential.vhd"): parent not found \(parent id [0-9a-f-]{36}, name \"C:\\\\Projects\\\\dfvfs\\\\test_data\\\\fat-parent\.vhd\"\)" \
    "$d/real/fat-differential.vhd"
  out_has "real diskpart child: tried the W2ru path next to the child" \
    "tried: .*$(re "$d/real/fat-parent.vhd")"
  out_has "real diskpart child: tried the W2ku path without the drive letter" \
    "tried: .*/Projects/dfvfs/test_data/fat-parent\.vhd"
  unchanged "real images: no file modified"
else
  skip "real images not found in $IMAGES"
fi

# ------------------------------------------------------------ locking

fresh lock
snap "$c/base.vhd"
if start_daemon lock "$c/child.vhd"; then
  pass "daemon serving child.vhd writable started"
else
  fail "daemon serving child.vhd writable started"
  diag_file "$d/lock.log"
fi
lock_pid=$(cat "$d/lock.pid" 2> /dev/null || echo none)
lock_uri="nbd+unix:///?socket=$d/lock.sock"
check "a client writes and flushes through the daemon" \
  nbdsh -u "$lock_uri" -c 'h.pwrite(b"\x5a" * 4096, 1048576); h.flush()'
startup_fails "second server on the write-locked child refuses, naming the daemon" \
  "error: $(re "$c/child.vhd"): file is in use: locked by process $lock_pid \(nbdkit\)" \
  "$c/child.vhd"
check_fails "second read-only server on the write-locked child refuses too" \
  "error: $(re "$c/child.vhd"): file is in use: locked by process $lock_pid \(nbdkit\)" \
  nbdkit -r -U "$(newsock)" "$PLUGIN" "$c/child.vhd" --run true

# The parent of the served chain is share-locked: it can be read by
# another server, but not written.
reads_as "parent of the served chain can be served read-only" \
  "$BASE_RAW" "$c/base.vhd"
rm -f "$tmp/.wrote"
nbdkit -U "$(newsock)" "$PLUGIN" "$c/base.vhd" --run "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"\\xa5\" * 512, 0); h.flush()' && touch '$tmp/.wrote'" \
  > "$tmp/.out" 2>&1
st=$?
if [ "$st" -ne 0 ] && [ ! -e "$tmp/.wrote" ] &&
   grep -Eq "error: $(re "$c/base.vhd"): file is in use: locked by process [0-9]+ .*refusing to open it for writing" "$tmp/.out"; then
  pass "a client cannot write the parent of a chain being served"
else
  fail "a client cannot write the parent of a chain being served (exit $st)"
  diag_file "$tmp/.out"
fi
# Only the daemon has the parent open: it is the process to look at.
if grep -Eq "$(re "$c/base.vhd"): file is in use: locked by process $lock_pid \(nbdkit\)" "$tmp/.out"; then
  pass "the parent's lock message names the live daemon ($lock_pid)"
else
  fail "the parent's lock message names the live daemon ($lock_pid)"
  diag_file "$tmp/.out"
fi
unchanged "parent of a served chain: no file modified"

# The daemon really wrote (the write lock was taken for a reason) and
# releases its locks when it exits.
stop_daemon lock
cp "$CHILD_RAW" "$tmp/lock-expected.raw"
printf '\x5a%.0s' $(seq 4096) |
  dd of="$tmp/lock-expected.raw" bs=1 seek=1048576 conv=notrunc status=none
reads_as "after the daemon exits, the chain reads with its write" \
  "$tmp/lock-expected.raw" "$c/child.vhd"
reads_as "after the daemon exits, the parent is unchanged" \
  "$BASE_RAW" "$c/base.vhd"

# ------------------------------------------------------------ daemon mode

# nbdkit without -f forks and chdirs to /: a relative file name and the
# relative W2ru locator must have been resolved before that.
fresh rel
mkdir "$c/store"
cp "$c/base.vhd" "$c/store/base.vhd"
snap "$c/base.vhd" "$c/child.vhd"
if (cd "$c" && start_daemon rel child.vhd); then
  daemons+=(rel)
  pass "daemon started with a relative file name"
else
  daemons+=(rel)
  fail "daemon started with a relative file name"
  diag_file "$d/rel.log"
fi
rm -f "$tmp/rel.raw"
check "nbdcopy reads the relative-path daemon" \
  nbdcopy "nbd+unix:///?socket=$d/rel.sock" "$tmp/rel.raw"
check_same "relative-path daemon serves the chain as modelled" \
  "$tmp/rel.raw" "$CHILD_RAW"
stop_daemon rel
unchanged "relative-path daemon (read only): no file modified"

# Relative parent-dir= in daemon mode, and a write through it (the top
# file is reopened for writing after the chdir).
rm "$c/base.vhd"
if (cd "$c" && start_daemon rel2 child.vhd parent-dir=store); then
  daemons+=(rel2)
  pass "daemon started with a relative parent-dir="
else
  daemons+=(rel2)
  fail "daemon started with a relative parent-dir="
  diag_file "$d/rel2.log"
fi
check "write+flush through the relative-path daemon" \
  nbdsh -u "nbd+unix:///?socket=$d/rel2.sock" \
    -c 'h.pwrite(b"\x33" * 8192, 3 * 1048576); h.flush()'
rm -f "$tmp/rel2.raw"
check "nbdcopy reads the relative parent-dir daemon" \
  nbdcopy "nbd+unix:///?socket=$d/rel2.sock" "$tmp/rel2.raw"
cp "$CHILD_RAW" "$tmp/rel2-expected.raw"
printf '\x33%.0s' $(seq 8192) |
  dd of="$tmp/rel2-expected.raw" bs=1 seek=$((3 * 1048576)) conv=notrunc status=none
check_same "relative parent-dir daemon shows the chain plus the write" \
  "$tmp/rel2.raw" "$tmp/rel2-expected.raw"
stop_daemon rel2
cmp -s "$c/store/base.vhd" "$d/gen/out/base.vhd" &&
  pass "writing through the daemon left the parent untouched" ||
  fail "writing through the daemon left the parent untouched"

done_testing
