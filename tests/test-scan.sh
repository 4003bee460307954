#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool scan: messy folders of VHD and VHDX files, one per verdict
# (ok, parent missing, locators stale and its repair, identity mismatch,
# duplicate identity, loop, damaged, not a virtual disk), the exit codes,
# the JSON forest, -r, symlinks and FIFOs, and that nothing is written
# without --fix-locators.  The time to scan 1000 files is printed as a
# diagnostic, never asserted.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in nbdkit nbdsh $PY sha256sum; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
d=$(cd "$tmp" && pwd -P)

mk () { "$VHDTOOL" create "$@" > /dev/null; }

# scanned DESC STATUS ARGS...: vhdtool scan --json ARGS exits STATUS;
# its JSON is kept in $tmp/.json and its text output in $tmp/.out.
scanned () {
  local desc=$1 want=$2 st=0
  shift 2
  "$VHDTOOL" scan --json "$@" > "$tmp/.json" 2> "$tmp/.err" || st=$?
  "$VHDTOOL" scan "$@" > "$tmp/.out" 2>&1 || :
  if [ "$st" -eq "$want" ] && ! sanitizer_report "$tmp/.err" &&
     $PY -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp/.json" \
       2> "$tmp/.jerr"; then
    pass "$desc"
  else
    fail "$desc (exit $st, wanted $want)"
    cat "$tmp/.err" "$tmp/.jerr" "$tmp/.json" > "$tmp/.all" 2>/dev/null
    diag_file "$tmp/.all"
  fi
}

# json DESC PYEXPR: PYEXPR holds for the last scan's JSON: j is the
# document, N maps each file's base name to its node (with "depth" and
# "parent", the base name of the node above it, added), O the others
# by base name, E the environment variable E.
json () {
  if $PY -c '
import json, os, re, sys
j = json.load(open(sys.argv[1]))
E = os.environ.get("E", "")
N = {}
def walk(n, depth, parent):
    n["depth"], n["parent"] = depth, parent
    N[os.path.basename(n["path"])] = n
    for c in n["children"]:
        walk(c, depth + 1, os.path.basename(n["path"]))
for t in j["trees"]:
    walk(t, 0, None)
O = {os.path.basename(o["path"]): o for o in j["others"]}
ok = eval("(" + sys.argv[2].strip() + "\n)")
if not ok:
    print(json.dumps(j, indent=1)[:3000])
sys.exit(0 if ok else 1)' "$tmp/.json" "$2" > "$tmp/.jc" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.jc"
  fi
}

# ------------------------------------------------------------ usage
check_fails "no argument: usage error" 'at least one' "$VHDTOOL" scan
st=0; "$VHDTOOL" scan > /dev/null 2>&1 || st=$?
[ $st -eq 2 ] && pass "no argument: exit 2" || fail "no argument: exit $st"
check "--help" "$VHDTOOL" scan --help
out_has "--help names the options" 'fix-locators'
scanned "a missing argument: exit 2" 2 "$d/nonexistent"
out_has "a missing argument is named" 'nonexistent'

# ------------------------------------------------------------ whole
w=$d/whole
mkdir "$w"
mk -t dynamic "$w/base.vhd" 64M
mk -p "$w/base.vhd" "$w/child.vhd"
mk -p "$w/child.vhd" "$w/grand.vhd"
mk -f vhdx -t dynamic "$w/xbase.vhdx" 64M
mk -p "$w/xbase.vhdx" "$w/xchild.vhdx"
mk -t fixed "$w/fixed.vhd" 1M
# Recognised by content, whatever the name; other files ignored.
cp "$w/fixed.vhd" "$w/disk.img"
echo "not a disk" > "$w/notes.txt"
mkfifo "$w/fifo"
ln -s . "$w/self"
ln -s base.vhd "$w/link-to-base.vhd"
ln -s nowhere "$w/dangling.vhd"
snap "$w"/base.vhd "$w"/child.vhd "$w"/grand.vhd "$w"/fixed.vhd \
  "$w"/xbase.vhdx "$w"/xchild.vhdx "$w/disk.img"
scanned "whole chains: exit 0" 0 "$w"
json "whole chains: every verdict ok, status whole" \
  'j["status"] == "whole" and j["problems"] == 0 and
   all(n.get("verdict", "ok") == "ok" for n in N.values())'
json "whole chains: the trees by identity, VHD and VHDX" \
  'N["child.vhd"]["parent"] == "base.vhd" and
   N["grand.vhd"]["parent"] == "child.vhd" and N["grand.vhd"]["depth"] == 2
   and N["xchild.vhdx"]["parent"] == "xbase.vhdx" and
   N["xchild.vhdx"]["format"] == "VHDX" and N["base.vhd"]["depth"] == 0
   and N["fixed.vhd"]["type"] == "fixed"'
json "recognised by content (disk.img); notes.txt, the FIFO, symlinks to a file seen or nowhere skipped" \
  '"disk.img" in N and "notes.txt" not in N and "notes.txt" not in O and
   "fifo" not in O and "link-to-base.vhd" not in N and j["files"] == 7'
json "JSON keys of a node" \
  'all(k in N["child.vhd"] for k in ("path", "real-path", "format", "type",
   "virtual-size", "allocated", "file-size", "id", "parent-id", "verdict",
   "detail", "locators-lead-to", "children")) and
   N["child.vhd"]["virtual-size"] == 64 << 20 and
   N["child.vhd"]["parent-id"] == N["base.vhd"]["id"] and
   N["child.vhd"]["locators-lead-to"] == N["base.vhd"]["real-path"]'
out_has "text: the child indented under its parent, with its verdict" \
  "^  $(re "$w/child.vhd") \\[VHD differencing, 64.0 MiB, .*\\]: ok$"
out_has "text: a summary line" '^7 files, 4 trees, 0 problems$'
scanned "-r through a symlink loop: exit 0" 0 -r "$w"
json "-r: each file once" 'j["files"] == 7'
scanned "a FIFO named explicitly is not a virtual disk" 1 "$w/fifo"
json "the FIFO: not a regular file" \
  'O["fifo"]["verdict"] == "not-a-disk" and "regular" in O["fifo"]["reason"]'
scanned "a text file named explicitly: exit 1" 1 "$w/notes.txt" "$w/base.vhd"
json "the text file: not a virtual disk" \
  'O["notes.txt"]["verdict"] == "not-a-disk" and "base.vhd" in N'
unchanged "scan wrote nothing"

# ------------------------------------------------------------ orphan
o=$d/orphan
mkdir "$o"
mk -f vhdx -t dynamic "$o/base.vhdx" 64M
mk -p "$o/base.vhdx" "$o/child.vhdx"
rm "$o/base.vhdx"
scanned "orphan: exit 1" 1 "$o"
json "orphan: parent missing, a root" \
  'N["child.vhdx"]["verdict"] == "parent-missing" and
   N["child.vhdx"]["depth"] == 0 and N["child.vhdx"]["locators-lead-to"] is None'
out_has "orphan: text verdict" 'child.vhdx .*: parent missing$'

# ------------------------------------------------------------ moved
m=$d/moved
mkdir -p "$m/old" "$m/new"
mk -t dynamic "$m/old/base.vhd" 64M
mk -p "$m/old/base.vhd" "$m/child.vhd"
mk -f vhdx -t dynamic "$m/old/xbase.vhdx" 64M
mk -p "$m/old/xbase.vhdx" "$m/xchild.vhdx"
mv "$m/old/base.vhd" "$m/new/renamed-base.vhd"
mv "$m/old/xbase.vhdx" "$m/new/renamed-xbase.vhdx"
scanned "moved parents, without -r: parent missing" 1 "$m"
json "without -r the parents are not scanned" \
  'N["child.vhd"]["verdict"] == "parent-missing" and
   N["xchild.vhdx"]["verdict"] == "parent-missing"'
snap "$m/child.vhd" "$m/xchild.vhdx"
scanned "moved parents, -r: exit 1" 1 -r "$m"
E=$m json "moved parents: locators stale, the repair command" \
  'N["child.vhd"]["verdict"] == "locators-stale" and
   N["child.vhd"]["parent"] == "renamed-base.vhd" and
   N["child.vhd"]["repair"] == ["vhdtool", "set-parent", E + "/child.vhd",
                                E + "/new/renamed-base.vhd"] and
   N["child.vhd"]["repaired"] is False and
   N["xchild.vhdx"]["verdict"] == "locators-stale" and
   N["xchild.vhdx"]["parent"] == "renamed-xbase.vhdx"' 
unchanged "moved parents: scan wrote nothing"
repair=$(sed -n 's/^ *repair: vhdtool set-parent //p' "$tmp/.out" |
         grep '/child\.vhd ')
if [ -n "$repair" ]; then pass "the text names the repair"; else fail "the text names the repair"; diag_file "$tmp/.out"; fi
eval "check 'the printed command repairs the VHD child' \"\$VHDTOOL\" set-parent $repair"
scanned "after the printed repair: the VHDX child still stale" 1 -r "$m"
json "after the printed repair: the VHD child ok" \
  'N["child.vhd"]["verdict"] == "ok" and
   N["xchild.vhdx"]["verdict"] == "locators-stale"'
scanned "--fix-locators: exit 0" 0 -r --fix-locators "$m"
json "--fix-locators: repaired" \
  'N["xchild.vhdx"]["repaired"] is True and j["status"] == "whole"'
scanned "a re-scan after --fix-locators: exit 0" 0 -r "$m"
json "a re-scan: the VHDX child ok" \
  'N["xchild.vhdx"]["verdict"] == "ok" and
   N["xchild.vhdx"]["locators-lead-to"] == N["renamed-xbase.vhdx"]["real-path"]'
check "the repaired VHDX chain opens" "$VHDTOOL" check "$m/xchild.vhdx"

# ------------------------------------------------------------ modified
x=$d/modified
mkdir "$x"
mk -f vhdx -t dynamic "$x/xbase.vhdx" 64M
mk -p "$x/xbase.vhdx" "$x/xchild.vhdx"
mk -t dynamic "$x/base.vhd" 64M
mk -p "$x/base.vhd" "$x/child.vhd"
# VHDX: a write gives the parent a new DataWriteGuid.
check "write to the VHDX parent through the plugin" \
  serve file="$x/xbase.vhdx" -- 'nbdsh -u "$uri" -c "h.pwrite(b\"x\" * 512, 0)"'
# VHD: the parent replaced by a new file of the same name.
sleep 1
rm "$x/base.vhd"
mk -t dynamic "$x/base.vhd" 64M
scanned "modified parents: exit 1" 1 "$x"
json "modified VHDX parent: identity mismatch, with its date" \
  'N["xchild.vhdx"]["verdict"] == "identity-mismatch" and
   N["xchild.vhdx"]["locators-lead-to"] == N["xbase.vhdx"]["real-path"] and
   "modified" in N["xchild.vhdx"]["detail"] and
   re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", N["xchild.vhdx"]["detail"])
   and N["xchild.vhdx"]["depth"] == 0' 
json "replaced VHD parent: identity mismatch, replaced after the child, with dates" \
  'N["child.vhd"]["verdict"] == "identity-mismatch" and
   "replaced" in N["child.vhd"]["detail"] and
   len(re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                  N["child.vhd"]["detail"])) == 3'
out_has "text: identity mismatch" 'child.vhd .*: identity mismatch$'

# ------------------------------------------------------------ copy
c=$d/copy
mkdir "$c"
mk -t dynamic "$c/base.vhd" 64M
mk -p "$c/base.vhd" "$c/child.vhd"
cp "$c/base.vhd" "$c/base-copy.vhd"
scanned "a copied parent: exit 1" 1 "$c"
E=$c json "a copied parent: duplicate identity, the locators choose base.vhd" \
  'N["child.vhd"]["verdict"] == "duplicate-identity" and
   N["child.vhd"]["parent"] == "base.vhd" and
   N["child.vhd"]["detail"].endswith("its locators choose " + E + "/base.vhd")
   and "base-copy.vhd" in N["child.vhd"]["detail"]'

# ------------------------------------------------------------ loop
l=$d/loop
mkdir "$l"
mk -t dynamic "$l/base.vhd" 64M
mk -p "$l/base.vhd" "$l/x.vhd"
mk -p "$l/x.vhd" "$l/y.vhd"
mk -p "$l/y.vhd" "$l/z.vhd"
check "make x.vhd's parent identity y.vhd's" \
  vp set-parent-id "$l/x.vhd" "$(vp uid "$l/y.vhd")"
scanned "a loop: exit 1" 1 "$l"
json "a loop: x and y, z below y, base alone" \
  'N["x.vhd"]["verdict"] == "loop" and N["y.vhd"]["verdict"] == "loop" and
   "x.vhd -> " in N["x.vhd"]["detail"] and
   N["z.vhd"]["verdict"] == "ok" and N["z.vhd"]["parent"] == "y.vhd" and
   N["base.vhd"]["children"] == []'

# ------------------------------------------------------------ damaged
g=$d/damaged
mkdir "$g"
mk -t dynamic "$g/bad.vhd" 64M
mk -t dynamic "$g/good.vhd" 64M
# The dynamic header's checksum no longer matches.
vp flip "$g/bad.vhd" 600
scanned "a damaged file: exit 1" 1 "$g"
json "a damaged file: damaged with check's reason, the other fine" \
  'O["bad.vhd"]["verdict"] == "damaged" and
   "checksum" in O["bad.vhd"]["reason"] and "good.vhd" in N'
out_has "text: damaged" 'bad.vhd: damaged: .*checksum'
# Named like a disk (a zero-filled and a truncated copy: the second still
# starts like a VHD, so it is damaged rather than not one),
# beside a text file that is skipped.
head -c 4096 /dev/zero > "$g/zeros.avhdx"
head -c 100 "$g/good.vhd" > "$g/cut.VHD"
echo "not a disk" > "$g/readme.txt"
scanned "files named like disks that are not: exit 1" 1 "$g"
json "zero-filled: not a virtual disk; truncated: damaged; the text file skipped" \
  'O["zeros.avhdx"]["verdict"] == "not-a-disk" and
   O["cut.VHD"]["verdict"] == "damaged" and "readme.txt" not in O and
   O["bad.vhd"]["verdict"] == "damaged" and j["problems"] == 3'
rm "$g/zeros.avhdx" "$g/cut.VHD"

# ------------------------------------------------------------ everything
scanned "every folder at once, -r: exit 1" 1 -r "$d"
json "every folder at once: 7 problems (orphan, 2 modified, copy, 2 in the loop, damaged)" \
  'j["status"] == "problems" and j["problems"] == 7'

# ------------------------------------------------------------ 1000 files
# A diagnostic only: timings are not asserted.
k=$d/thousand
mkdir "$k"
mk -t dynamic "$k/b.vhd" 1G
mk -p "$k/b.vhd" "$k/c.vhd"
mk -f vhdx -t dynamic "$k/xb.vhdx" 1G
mk -p "$k/xb.vhdx" "$k/xc.vhdx"
for i in $(seq 1 249); do
  cp "$k/b.vhd" "$k/b$i.vhd"
  cp "$k/c.vhd" "$k/c$i.vhd"
  cp "$k/xb.vhdx" "$k/xb$i.vhdx"
  cp "$k/xc.vhdx" "$k/xc$i.vhdx"
done
t0=$(date +%s.%N)
"$VHDTOOL" scan "$k" > "$tmp/.out" 2>&1
t1=$(date +%s.%N)
echo "# scan of $(ls "$k" | wc -l) files took $($PY -c "print(round($t1 - $t0, 2))") s"
out_has "1000 files scanned" '^1000 files, '

done_testing
