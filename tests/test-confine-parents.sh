#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# confine-parents: serving images one did not make.  A child's locators
# can name any path on the host (absolute, relative with "..", or a
# symlink beside the child); without the option each of those works,
# with it each is refused before the outside file is opened, with an
# error naming the child, the locator and the path, and nothing of the
# outside file (its unique id in particular) in the output.  The places
# that stay allowed: the top file's real directory, parent-dir
# directories with their subdirectories, parent= files, symlinks that
# stay inside.  Through the plugin and through vhdtool info, check,
# map, convert and merge; under strace (when installed), that a path
# leading outside as written is never even looked up, and one leading
# outside through a symlink never opened.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in nbdcopy $PY sha256sum; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
# Messages name files by their real path.
d=$(cd "$tmp" && pwd -P)

# ------------------------------------------------------------ fixtures

# Everything is made by the independent writer (tests/vhdgen.py), with
# the locators written exactly as given.  other/base.vhd is the file
# the images under up/ must not reach; every X/child.vhd has a twin
# X/wrong.vhd with the same locators but a parent id nobody has: it
# shows what a locator leaks without the option (the "parent id
# mismatch" error prints the id of the file it found).  The ids of the
# matching children are the outside file's id, so the "id not in the
# output" checks use the twins.
$PY - "$d" > "$d/spec.json" <<'EOF'
import json, sys
d = sys.argv[1]
win = lambda p: "C:" + p.replace("/", "\\")
S = 4194304
def diff(f, parent, locs, expected=None, wrong=False, seed_off=0):
    l = {"file": f, "type": "differencing", "parent": parent,
         "writes": [[4096 + 512 * seed_off, 4096], [2101248, 1024]],
         "locators": [{"code": c, "path": p} for c, p in locs]}
    if expected: l["expected"] = expected
    if wrong: l["wrong_parent_id"] = True
    return l
def base(f, expected):
    return {"file": f, "type": "dynamic", "expected": expected,
            "writes": [[0, 65536], [2097152, 8192]]}
L = [base("other/base.vhd", "base.raw")]
routes = {
    "abs": [("W2ku", win(d + "/other/base.vhd"))],
    "rel": [("W2ru", "..\\..\\other\\base.vhd")],
    "link": [("W2ru", ".\\base.vhd")],
}
for r, locs in routes.items():
    L.append(diff("up/%s/child.vhd" % r, "other/base.vhd", locs, r + ".raw"))
    L.append(diff("up/%s/wrong.vhd" % r, "other/base.vhd", locs, wrong=True))
# /srv/a must not let in /srv/ab.
L.append(base("pre/ab/base.vhd", "pre.base.raw"))
L.append(diff("pre/a/child.vhd", "pre/ab/base.vhd",
              [("W2ku", win(d + "/pre/ab/base.vhd"))], "pre.raw"))
# Allowed: the same directory; a parent-dir subdirectory; a symlink
# that stays inside.
L.append(base("same/base.vhd", "same.base.raw"))
L.append(diff("same/child.vhd", "same/base.vhd", [("W2ru", ".\\base.vhd")],
              "same.raw"))
L.append(base("lib/sub/base.vhd", "lib.base.raw"))
L.append(diff("up/pd/child.vhd", "lib/sub/base.vhd",
              [("W2ku", win(d + "/lib/sub/base.vhd"))], "pd.raw"))
L.append(base("up/inlink/store/base.vhd", "inlink.base.raw"))
L.append(diff("up/inlink/child.vhd", "up/inlink/store/base.vhd",
              [("W2ru", ".\\base.vhd")], "inlink.raw"))
# The search goes on past refused candidates: both locators lead out,
# a copy of the parent (same id) lies beside the child.
L.append(diff("up/cont/child.vhd", "other/base.vhd",
              [("W2ru", "..\\..\\other\\base.vhd"),
               ("W2ku", win(d + "/other/base.vhd"))], "cont.raw"))
# A grandparent is confined like a parent: mid.vhd, inside, leads out.
L.append(diff("up/deep/mid.vhd", "other/base.vhd",
              [("W2ku", win(d + "/other/base.vhd"))], seed_off=1))
L.append(diff("up/deep/child.vhd", "up/deep/mid.vhd",
              [("W2ru", ".\\mid.vhd")], "deep.raw", seed_off=2))
# merge: m1/top.vhd -> m1/sub/t.vhd -> m1/b.vhd (all inside m1), and
# m2/top.vhd, whose parent is outside.
L.append(base("m1/b.vhd", "m1.b.raw"))
L.append(diff("m1/sub/t.vhd", "m1/b.vhd", [("W2ru", "..\\b.vhd")]))
L.append(diff("m1/top.vhd", "m1/sub/t.vhd", [("W2ru", ".\\sub\\t.vhd")],
              "m1.raw", seed_off=3))
L.append(diff("m2/top.vhd", "other/base.vhd",
              [("W2ku", win(d + "/other/base.vhd"))], "m2.raw"))
json.dump({"size": S, "seed": 17, "layers": L}, sys.stdout, indent=1)
EOF
$VHDGEN make "$d/spec.json" "$d" > "$d/gen.log" 2>&1 || {
  cat "$d/gen.log"
  echo "Bail out! vhdgen could not make the fixtures"
  exit 1
}
ln -s ../../other/base.vhd "$d/up/link/base.vhd"
ln -s store/base.vhd "$d/up/inlink/base.vhd"
cp "$d/other/base.vhd" "$d/up/cont/base.vhd"
# The top named through a symlink: its real directory is what counts.
ln -s ../up/abs/child.vhd "$d/other/via-link.vhd"
# A parent-dir whose name is a prefix of the parent's directory.
mkdir "$d/li"

outside_id=$($VHDTOOL info "$d/other/base.vhd" | sed -n 's/^unique id: *//p')
[ -n "$outside_id" ] || {
  echo "Bail out! no unique id from vhdtool info"
  exit 1
}

# ------------------------------------------------------------ helpers

# serve_fails DESC REGEX ARGS...: nbdkit serving ARGS fails at start-up
# (the --run command never runs) with output matching REGEX.
serve_fails () {
  local desc=$1 re=$2
  shift 2
  rm -f "$tmp/.ran"
  check_fails "$desc" "$re" \
    nbdkit -U "$(newsock)" -r "$PLUGIN" "$@" --run "touch '$tmp/.ran'"
  [ ! -e "$tmp/.ran" ] || fail "$desc: nbdkit ran the client anyway"
}

# no_leak DESC: the output of the previous check holds nothing of the
# outside file: not its id, no word of a mismatch.
no_leak () {
  if grep -Fqi -- "$outside_id" "$tmp/.out" ||
     grep -Eq -- 'mismatch|has id' "$tmp/.out"; then
    fail "$1 (the outside file's id or a mismatch is in the output)"
    diag_file "$tmp/.out"
  else
    pass "$1"
  fi
}

refused_re='refused by confine-parents \(outside the allowed directories\)'

# ------------------------------------------------------------ outside routes

# route NAME CANDIDATE LOCATOR: up/NAME/child.vhd reaches other/base.vhd
# through CANDIDATE (the path as the locator names it), from LOCATOR.
route () {
  local n=$1 cand=$2 loc=$3 c="$d/up/$1/child.vhd" w="$d/up/$1/wrong.vhd"
  local named="$(re "$cand") \\(from parent locator $loc\\)"

  reads_as "$n: without confine-parents the outside parent is used" \
    "$d/$n.raw" "$c"
  serve_fails "$n: without confine-parents the wrong-id twin shows the outside id" \
    "$(re "$outside_id")" "$w"
  serve_fails "$n: confine-parents=true refuses it, naming the child, locator and path" \
    "$(re "$c"): parent not found .*$refused_re: $named" \
    "$c" confine-parents=true
  serve_fails "$n: confine-parents=true refuses the wrong-id twin too" \
    "$(re "$w"): parent not found .*$refused_re: $named" \
    "$w" confine-parents=true
  no_leak "$n: nothing of the outside file in the plugin's error"
  check_fails "$n: vhdtool info --confine-parents refuses it" \
    "cannot be resolved: $(re "$w"): parent not found .*$refused_re: $named" \
    $VHDTOOL info --confine-parents "$w"
  no_leak "$n: nothing of the outside file in vhdtool info's output"
  check_fails "$n: vhdtool check --confine-parents reports a [parent] problem" \
    "$(re "$w"): \\[parent\\] parent not found .*$refused_re: $named" \
    $VHDTOOL check --confine-parents "$w"
  no_leak "$n: nothing of the outside file in vhdtool check's output"
  rm -f "$d/out.raw"
  check "$n: vhdtool convert without --confine-parents works" \
    $VHDTOOL convert -t raw "$c" "$d/out.raw"
  check_same "$n: ... and shows the chain" "$d/out.raw" "$d/$n.raw"
  rm -f "$d/out.raw"
  check_fails "$n: vhdtool convert --confine-parents refuses it" \
    "$(re "$c"): parent not found .*$refused_re: $named" \
    $VHDTOOL convert -t raw --confine-parents "$c" "$d/out.raw"
  [ ! -e "$d/out.raw" ] || fail "$n: convert left an output behind"
}

route abs "$d/other/base.vhd" "0, W2ku"
route rel "$d/up/rel/../../other/base.vhd" "0, W2ru"
route link "$d/up/link/base.vhd" "0, W2ru"

# untouched DESC PATTERN CHILD: vhdtool info --confine-parents CHILD
# makes no system call on a path matching PATTERN (under strace).
untouched () {
  if ! command -v strace > /dev/null; then
    skip "$1 (strace not installed)"
  elif ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
         strace -f -qq -o "$tmp/.strace" \
         $VHDTOOL info --confine-parents "$3" > /dev/null 2>&1;
       [ -s "$tmp/.strace" ] && ! grep -E -- "$2" "$tmp/.strace" > "$tmp/.out"; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.out"
  fi
}
# A path that leads outside as written is not even looked up; one that
# leads outside only through a symlink is resolved, never opened.
untouched "abs: the outside path is never looked at" \
  "$(re "$d/other")" "$d/up/abs/wrong.vhd"
untouched "rel: the outside path is never looked at" \
  "$(re "$d/other")|\\.\\./\\.\\./other" "$d/up/rel/wrong.vhd"
untouched "link: the outside file is never opened" \
  "open.*($(re "$d/other/base.vhd")|$(re "$d/up/link/base.vhd"))" \
  "$d/up/link/wrong.vhd"

check_fails "link: vhdtool map --confine-parents refuses it" \
  "$refused_re: $(re "$d/up/link/base.vhd")" \
  $VHDTOOL map --confine-parents "$d/up/link/wrong.vhd"
no_leak "link: nothing of the outside file in vhdtool map's output"

reads_as "prefix: without confine-parents, /x/a/child reaches /x/ab/base" \
  "$d/pre.raw" "$d/pre/a/child.vhd"
serve_fails "prefix: the directory a does not let in ab/base.vhd" \
  "$refused_re: $(re "$d/pre/ab/base.vhd") \\(from parent locator 0, W2ku\\)" \
  "$d/pre/a/child.vhd" confine-parents=true
serve_fails "prefix: nor does parent-dir=li let in lib/sub/base.vhd" \
  "$refused_re: $(re "$d/lib/sub/base.vhd")" \
  "$d/up/pd/child.vhd" parent-dir="$d/li" confine-parents=true

serve_fails "top as a symlink: the real directory counts, not the link's" \
  "$(re "$d/up/abs/child.vhd"): parent not found .*$refused_re: $(re "$d/other/base.vhd")" \
  "$d/other/via-link.vhd" confine-parents=true

serve_fails "a grandparent outside is refused, naming the layer that leads out" \
  "$(re "$d/up/deep/mid.vhd"): parent not found .*$refused_re: $(re "$d/other/base.vhd") \\(from parent locator 0, W2ku\\)" \
  "$d/up/deep/child.vhd" confine-parents=true
reads_as "... which works without confine-parents" \
  "$d/deep.raw" "$d/up/deep/child.vhd"

# ------------------------------------------------------------ allowed

reads_as "confined: a parent in the same directory" \
  "$d/same.raw" "$d/same/child.vhd" confine-parents=true
reads_as "confined: a parent in a subdirectory of a parent-dir" \
  "$d/pd.raw" "$d/up/pd/child.vhd" parent-dir="$d/lib" confine-parents=true
serve_fails "confined: ... but not without that parent-dir" \
  "$refused_re: $(re "$d/lib/sub/base.vhd")" \
  "$d/up/pd/child.vhd" confine-parents=true
reads_as "confined: an outside parent named with parent=" \
  "$d/abs.raw" "$d/up/abs/child.vhd" parent="$d/other/base.vhd" \
  confine-parents=true
reads_as "confined: parent= allows it whichever locator names it (relative)" \
  "$d/rel.raw" "$d/up/rel/child.vhd" parent="$d/other/base.vhd" \
  confine-parents=true
reads_as "confined: a symlink that stays inside" \
  "$d/inlink.raw" "$d/up/inlink/child.vhd" confine-parents=true
reads_as "confined: a symlink to the outside file named with parent=" \
  "$d/link.raw" "$d/up/link/child.vhd" parent="$d/other/base.vhd" \
  confine-parents=true

# Refused locators do not end the search: the copy beside the child
# (found by file name in the child's directory) is used.
reads_as "confined: the search goes on past refused locators" \
  "$d/cont.raw" "$d/up/cont/child.vhd" confine-parents=true
check "vhdtool info --confine-parents resolves the chain past them" \
  $VHDTOOL info --confine-parents "$d/up/cont/child.vhd"
out_has "... to the copy inside, not the outside file" \
  "^  1  dynamic +$(re "$d/up/cont/base.vhd")\$"
check "vhdtool check --confine-parents finds no problem there" \
  $VHDTOOL check --confine-parents "$d/up/cont/child.vhd"
rm -f "$d/out.raw"
check "vhdtool convert --confine-parents with --parent-dir" \
  $VHDTOOL convert -t raw --confine-parents --parent-dir "$d/lib" \
  "$d/up/pd/child.vhd" "$d/out.raw"
check_same "... shows the chain" "$d/out.raw" "$d/pd.raw"

# ------------------------------------------------------------ merge

snap "$d/m2/top.vhd" "$d/other/base.vhd"
check_fails "vhdtool merge --confine-parents refuses an outside parent" \
  "$(re "$d/m2/top.vhd"): parent not found .*$refused_re: $(re "$d/other/base.vhd")" \
  $VHDTOOL merge --confine-parents "$d/m2/top.vhd"
unchanged "... and changes nothing"
# The target sits in a subdirectory; its own parent, in FILE's
# directory, is inside what FILE's chain is confined to.
check "vhdtool merge --confine-parents into a parent in a subdirectory" \
  $VHDTOOL merge --confine-parents "$d/m1/top.vhd"
rm -f "$d/out.raw"
check "... whose chain then shows what the top showed" \
  $VHDTOOL convert -t raw --confine-parents --parent-dir "$d/m1" \
  "$d/m1/sub/t.vhd" "$d/out.raw"
check_same "... byte for byte" "$d/out.raw" "$d/m1.raw"

done_testing
