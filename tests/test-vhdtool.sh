#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool: create (fixed, dynamic, differencing; sizes; refusing to
# overwrite; usage errors), --help/--version, and info (text and JSON,
# chains, missing parents, a real Windows-made differencing image).
# Files it creates are checked by independent readers: the test
# oracle's parser (tests/vhdgen.py dump), qemu-img and libvhdi's
# vhdiinfo.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

command -v /usr/bin/python3 > /dev/null || skip_all "python3 not installed"

d=$(cd "$tmp" && pwd -P)
PY=/usr/bin/python3

# run_tool OUT CMD...: run, stdout to OUT, stderr to OUT.err, set $rc.
run_tool () {
  local out=$1
  shift
  rc=0
  "$@" > "$out" 2> "$out.err" || rc=$?
}

# expect_rc DESC WANT [REGEX]: the last run_tool exited WANT and (if
# given) its stderr matches REGEX.
expect_rc () {
  local desc=$1 want=$2 re=${3-}
  if [ "$rc" -eq "$want" ] &&
     { [ -z "$re" ] || grep -Eq -- "$re" "$last.err"; }; then
    pass "$desc"
  else
    fail "$desc (exit $rc, wanted $want${re:+ and /$re/ on stderr})"
    diag_file "$last"
    diag_file "$last.err"
  fi
}
t () {
  last=$tmp/.last
  run_tool "$last" "$VHDTOOL" "$@"
}

# json_check DESC FILE PYEXPR: PYEXPR (with j = the parsed JSON and the
# environment in E) must be true.
json_check () {
  if $PY -c '
import json, os, sys
j = json.load(open(sys.argv[1]))
E = os.environ
ok = eval("(" + sys.argv[2].strip() + "\n)")
if not ok:
    print("false:", sys.argv[2])
    print(json.dumps(j, indent=1)[:3000])
sys.exit(0 if ok else 1)' "$2" "$3" > "$tmp/.jc" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.jc"
  fi
}

# dump FILE JSON: the oracle's view of FILE's on-disk structures.
dump () {
  $VHDGEN dump --json "$1" > "$2" 2> "$2.err"
}

# ------------------------------------------------------------ --help etc.

t --help
expect_rc "--help exits 0" 0
grep -q '^Usage: vhdtool COMMAND' "$last" && grep -q 'create' "$last" &&
  grep -q 'info' "$last" && pass "--help prints usage with the commands on stdout" ||
  fail "--help prints usage with the commands on stdout"
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' \
  "$top_builddir/config.h")
t --version
expect_rc "--version exits 0" 0
[ "$(cat "$last")" = "vhdtool $version" ] &&
  pass "--version prints 'vhdtool $version'" ||
  { fail "--version prints 'vhdtool $version'"; diag_file "$last"; }
t create --help
expect_rc "create --help exits 0" 0
grep -q '^Usage: vhdtool create' "$last" && grep -q -- '--parent' "$last" &&
  pass "create --help describes create" || fail "create --help describes create"
t info --help
expect_rc "info --help exits 0" 0
grep -q '^Usage: vhdtool info' "$last" && grep -q -- '--json' "$last" &&
  pass "info --help describes info" || fail "info --help describes info"

# ------------------------------------------------------------ usage errors

mkdir "$d/usage"
cd "$d/usage" || exit 1
t;                                       expect_rc "no arguments: exit 2" 2 'Usage'
t frobnicate;                            expect_rc "unknown command: exit 2" 2 "unknown command 'frobnicate'"
t create;                                expect_rc "create without FILE SIZE: exit 2" 2 'create takes FILE and SIZE'
t create a.vhd;                          expect_rc "create without SIZE: exit 2" 2 'create takes FILE and SIZE'
t create a.vhd 1M extra;                 expect_rc "create with an extra argument: exit 2" 2 'create takes FILE and SIZE'
t create a.vhd 1.5G;                     expect_rc "create with size 1.5G: exit 2" 2 "invalid size '1\.5G'"
t create a.vhd 12X;                      expect_rc "create with size 12X: exit 2" 2 "invalid size '12X'"
t create a.vhd -- -1M;                   expect_rc "create with a negative size: exit 2" 2 "invalid size '-1M'"
t create a.vhd 99999999999999999999;     expect_rc "create with a size overflowing 64 bits: exit 2" 2 "invalid size"
t create a.vhd 17179869184T;             expect_rc "create with 2^64 bytes via suffix: exit 2" 2 "invalid size"
t create -t sparse a.vhd 1M;             expect_rc "create -t sparse: exit 2" 2 "unknown type 'sparse'"
t create -b lots a.vhd 1M;               expect_rc "create -b lots: exit 2" 2 "invalid block size 'lots'"
t create -b 8G a.vhd 1M;                 expect_rc "create -b over 32 bits: exit 2" 2 "invalid block size '8G'"
t create -t fixed -b 1M a.vhd 1M;        expect_rc "create -t fixed -b: exit 2" 2 'fixed disks have no blocks'
t create --frob a.vhd 1M;                expect_rc "create --frob: exit 2" 2 'bad option'
t create -p p.vhd -t dynamic a.vhd;      expect_rc "create -p with -t: exit 2" 2 '-t and -p cannot be combined'
t create -p p.vhd a.vhd 1M;              expect_rc "create -p with a SIZE: exit 2" 2 'exactly one FILE'
t create -p p.vhd;                       expect_rc "create -p without FILE: exit 2" 2 'exactly one FILE'
t info;                                  expect_rc "info without FILE: exit 2" 2 'info takes one FILE'
t info a.vhd b.vhd;                      expect_rc "info with two FILEs: exit 2" 2 'info takes one FILE'
t info --frob a.vhd;                     expect_rc "info --frob: exit 2" 2 'bad option'
t info --parent;                         expect_rc "info --parent without argument: exit 2" 2 ''
[ -z "$(ls -A "$d/usage")" ] && pass "usage errors created no file" ||
  { fail "usage errors created no file"; ls -la "$d/usage" | diag_file /dev/stdin; }

# Valid syntax, invalid values: exit 1 with a message naming the file.
t create s.vhd 1000;    expect_rc "size 1000 (not a multiple of 512): exit 1" 1 's\.vhd: size 1000 must be a non-zero multiple of 512'
t create s.vhd 0;       expect_rc "size 0: exit 1" 1 's\.vhd: size 0 must be a non-zero multiple of 512'
t create s.vhd 2041G;   expect_rc "size 2041G (over 2040 GiB): exit 1" 1 's\.vhd: size 2191507062784 .*at most 2040 GiB'
t create -b 3M s.vhd 8M; expect_rc "block size 3M: exit 1" 1 's\.vhd: block size 3145728 is not a power of two'
t create -b 256 s.vhd 8M; expect_rc "block size 256: exit 1" 1 's\.vhd: block size 256 is not a power of two between 512'
t create -p nosuch.vhd s.vhd; expect_rc "create -p with a missing parent: exit 1" 1 'nosuch\.vhd: No such file or directory'
echo "not a vhd" > notvhd.txt
t create -p notvhd.txt s.vhd; expect_rc "create -p with a non-VHD parent: exit 1" 1 "$(re "$d/usage/notvhd.txt"): not a VHD file"
t create "$d/usage/no/such/dir/s.vhd" 1M
expect_rc "create in a missing directory: exit 1" 1 "$(re "$d/usage/no/such/dir/s.vhd")"
[ "$(ls -A "$d/usage")" = notvhd.txt ] &&
  pass "failed creates left no file (nor temporary file)" ||
  { fail "failed creates left no file (nor temporary file)"; ls -la "$d/usage" > "$tmp/.ls"; diag_file "$tmp/.ls"; }
cd "$d" || exit 1

# ------------------------------------------------------------ create

mkdir "$d/c"
t create -t fixed "$d/c/fixed.vhd" 8M
expect_rc "create -t fixed 8M: exit 0" 0
t create -t dynamic "$d/c/dyn.vhd" 8M
expect_rc "create -t dynamic 8M: exit 0" 0
t create "$d/c/default.vhd" 8M
expect_rc "create 8M (default type): exit 0" 0
t create -p "$d/c/dyn.vhd" "$d/c/child.vhd"
expect_rc "create -p dyn.vhd child.vhd: exit 0" 0
t create -p "$d/c/fixed.vhd" "$d/c/fchild.vhd"
expect_rc "create -p fixed.vhd fchild.vhd: exit 0" 0
t create -b 512K "$d/c/small.vhd" 8M
expect_rc "create -b 512K: exit 0" 0
t create -p "$d/c/small.vhd" "$d/c/schild.vhd"
expect_rc "create -p of a 512K-block parent: exit 0" 0
t create -p "$d/c/small.vhd" -b 1M "$d/c/s1child.vhd"
expect_rc "create -p -b 1M: exit 0" 0

for f in fixed dyn default child fchild small schild s1child; do
  dump "$d/c/$f.vhd" "$d/c/$f.json" ||
    { fail "oracle parses $f.vhd"; diag_file "$d/c/$f.json.err"; }
done

[ "$(stat -c %s "$d/c/fixed.vhd")" = $((8388608 + 512)) ] &&
  pass "fixed 8M file is 8M + 512 bytes" || fail "fixed 8M file is 8M + 512 bytes"
json_check "fixed: footer as New-VHD writes it" "$d/c/fixed.json" '
  j["footer_source"] == "eof" and j["footer"]["cookie"] == "conectix" and
  j["footer"]["checksum_ok"] and j["footer"]["disk_type"] == "fixed" and
  j["footer"]["creator"] == "win " and j["footer"]["current_size"] == 8388608 and
  j["footer"]["original_size"] == 8388608 and
  j["footer"]["data_offset"] == "0xffffffffffffffff" and
  j["footer"]["features"] == 2 and j["footer"]["version"] == "0x00010000" and
  j["footer"]["geometry"] == j["footer"]["spec_geometry"]'
# The data area of a new fixed disk is zero.
if cmp -s -n 8388608 "$d/c/fixed.vhd" /dev/zero; then
  pass "fixed: data area is all zero"
else
  fail "fixed: data area is all zero"
fi
for f in dyn default; do
  json_check "$f: dynamic, footer copy at 0, header at 512, BAT at 1536, 2 MiB blocks" \
    "$d/c/$f.json" '
    j["footer"]["disk_type"] == "dynamic" and j["footer"]["checksum_ok"] and
    j["footer"]["creator"] == "win " and j["footer"]["current_size"] == 8388608 and
    j["footer"]["data_offset"] == "0x200" and
    j["footer_copy_at_0"] == "identical" and j["header"]["cookie"] == "cxsparse" and
    j["header"]["checksum_ok"] and j["header"]["table_offset"] == 1536 and
    j["header"]["block_size"] == 2097152 and j["header"]["max_table_entries"] == 4 and
    j["header"]["data_offset"] == "0xffffffffffffffff" and
    j["bat"]["allocated"] == 0 and j["locators"] == []'
done
dyn_id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["footer"]["unique_id"])' "$d/c/dyn.json")
fixed_id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["footer"]["unique_id"])' "$d/c/fixed.json")
export dyn_id fixed_id cdir=$d/c
json_check "child: differencing, parent id = parent's unique id, parent name = base name" \
  "$d/c/child.json" '
  j["footer"]["disk_type"] == "differencing" and j["footer"]["checksum_ok"] and
  j["header"]["checksum_ok"] and j["footer"]["current_size"] == 8388608 and
  j["header"]["parent_id"] == E["dyn_id"] and j["header"]["parent_name"] == "dyn.vhd" and
  j["header"]["block_size"] == 2097152 and j["footer"]["unique_id"] != E["dyn_id"]'
json_check "child: W2ru .\\dyn.vhd in slot 0, W2ku absolute path in slot 1" \
  "$d/c/child.json" '
  [(l["slot"], l["code"], l["path"]) for l in j["locators"]] ==
  [(0, "W2ru", ".\\dyn.vhd"), (1, "W2ku", (E["cdir"] + "/dyn.vhd").replace("/", "\\"))]'
json_check "child of a fixed disk: parent id, 2 MiB blocks" "$d/c/fchild.json" '
  j["footer"]["disk_type"] == "differencing" and
  j["header"]["parent_id"] == E["fixed_id"] and
  j["header"]["parent_name"] == "fixed.vhd" and j["header"]["block_size"] == 2097152'
json_check "-b 512K: block size and BAT entries" "$d/c/small.json" '
  j["header"]["block_size"] == 524288 and j["header"]["max_table_entries"] == 16'
json_check "child inherits the parent's block size" "$d/c/schild.json" '
  j["header"]["block_size"] == 524288'
json_check "child with -b 1M keeps 1M" "$d/c/s1child.json" '
  j["header"]["block_size"] == 1048576 and j["header"]["max_table_entries"] == 8'

# ------------------------------------------------------------ sizes

mkdir "$d/sizes"
for spec in 4096:4096 512K:524288 1M:1048576 1m:1048576 1MiB:1048576 \
            1MB:1048576 100M:104857600 3G:3221225472 1T:1099511627776; do
  s=${spec%%:*} bytes=${spec##*:}
  rm -f "$d/sizes/s.vhd"
  t create "$d/sizes/s.vhd" "$s"
  if [ "$rc" -eq 0 ] && dump "$d/sizes/s.vhd" "$d/sizes/s.json" &&
     bytes=$bytes $PY -c 'import json,os,sys
j = json.load(open(sys.argv[1]))
sys.exit(j["footer"]["current_size"] != int(os.environ["bytes"]))' "$d/sizes/s.json"
  then
    pass "size $s is $bytes bytes"
  else
    fail "size $s is $bytes bytes (exit $rc)"
    diag_file "$last.err"
  fi
done

# ------------------------------------------------------------ overwrite

mkdir "$d/ow"
echo "precious data" > "$d/ow/file.vhd"
"$VHDTOOL" create "$d/ow/real.vhd" 1M
sha256sum "$d/ow/file.vhd" "$d/ow/real.vhd" > "$tmp/ow.sum"
t create "$d/ow/file.vhd" 1M
expect_rc "create over an existing file: exit 1" 1 "$(re "$d/ow/file.vhd"): file already exists; refusing to overwrite it"
t create -t fixed "$d/ow/real.vhd" 1M
expect_rc "create -t fixed over an existing VHD: exit 1" 1 "$(re "$d/ow/real.vhd"): file already exists"
t create -p "$d/ow/real.vhd" "$d/ow/file.vhd"
expect_rc "create -p over an existing file: exit 1" 1 "$(re "$d/ow/file.vhd"): file already exists"
t create -p "$d/ow/real.vhd" "$d/ow/real.vhd"
expect_rc "create -p of a file onto itself: exit 1" 1 "$(re "$d/ow/real.vhd"): file already exists"
ln -s "$d/ow/nowhere" "$d/ow/dangling.vhd"
t create "$d/ow/dangling.vhd" 1M
expect_rc "create over a dangling symlink: exit 1" 1 "$(re "$d/ow/dangling.vhd")"
[ ! -e "$d/ow/nowhere" ] && pass "the dangling symlink's target was not created" ||
  fail "the dangling symlink's target was not created"
if sha256sum --quiet -c "$tmp/ow.sum" > "$tmp/.out" 2>&1; then
  pass "refused creates left the existing files unchanged"
else
  fail "refused creates left the existing files unchanged"
  diag_file "$tmp/.out"
fi
[ "$(ls -A "$d/ow" | sort | tr '\n' ' ')" = "dangling.vhd file.vhd real.vhd " ] &&
  pass "refused creates left no temporary file" ||
  { fail "refused creates left no temporary file"; ls -la "$d/ow" > "$tmp/.ls"; diag_file "$tmp/.ls"; }

# ------------------------------------------------------------ qemu-img

if command -v qemu-img > /dev/null; then
  mkdir "$d/q"
  for s in 1M 100M 127M 9999872 8G 1T; do
    bytes=$(printf '%s' "$s" | sed 's/M$/*1048576/; s/G$/*1073741824/; s/T$/*1099511627776/')
    bytes=$((bytes))
    for type in fixed dynamic; do
      f=$d/q/$type-$s.vhd
      "$VHDTOOL" create -t "$type" "$f" "$s" > /dev/null 2>&1
      vs=$(qemu-img info -f vpc --output=json "$f" 2> "$tmp/.qerr" |
        $PY -c 'import json,sys; j = json.load(sys.stdin); print(j["format"], j["virtual-size"])' 2>> "$tmp/.qerr")
      if [ "$vs" = "vpc $bytes" ]; then
        pass "qemu-img: $type $s has virtual size $bytes"
      else
        fail "qemu-img: $type $s has virtual size $bytes (got '$vs')"
        diag_file "$tmp/.qerr"
      fi
      rm -f "$f"
    done
  done
  # qemu reads a new dynamic and differencing disk as zeros.
  "$VHDTOOL" create "$d/q/z.vhd" 5M > /dev/null
  "$VHDTOOL" create -p "$d/q/z.vhd" "$d/q/zc.vhd" > /dev/null
  head -c 5242880 /dev/zero > "$d/q/zero.raw"
  check "qemu-img: a new dynamic disk reads as zeros" \
    qemu-img compare -f vpc -F raw "$d/q/z.vhd" "$d/q/zero.raw"
  # qemu can write a vhdtool disk; the oracle still parses it.
  "$VHDTOOL" create "$d/q/w.vhd" 8M > /dev/null
  check "qemu-io writes into a vhdtool dynamic disk" \
    qemu-io -f vpc -c 'write -P 0x61 2097152 65536' "$d/q/w.vhd"
  qemu-img convert -f vpc -O raw "$d/q/w.vhd" "$d/q/w.raw"
  head -c 8388608 /dev/zero > "$d/q/w-expected.raw"
  printf 'a%.0s' $(seq 65536) |
    dd of="$d/q/w-expected.raw" bs=1 seek=2097152 conv=notrunc status=none
  check_same "qemu-img reads back what qemu-io wrote" "$d/q/w.raw" "$d/q/w-expected.raw"
else
  skip "qemu-img not installed"
fi

# ------------------------------------------------------------ vhdiinfo

if command -v vhdiinfo > /dev/null; then
  vhdiinfo "$d/c/child.vhd" > "$tmp/vi.txt" 2>&1
  if grep -Eq 'Disk type[[:space:]]*: Differential' "$tmp/vi.txt" &&
     grep -Eq 'Parent filename[[:space:]]*: dyn\.vhd$' "$tmp/vi.txt" &&
     grep -Eq "Parent identifier[[:space:]]*: $dyn_id\$" "$tmp/vi.txt" &&
     grep -q '(8388608 bytes)' "$tmp/vi.txt"; then
    pass "vhdiinfo: child is Differential with parent dyn.vhd and the parent's id"
  else
    fail "vhdiinfo: child is Differential with parent dyn.vhd and the parent's id"
    diag_file "$tmp/vi.txt"
  fi
  vhdiinfo "$d/c/dyn.vhd" > "$tmp/vi.txt" 2>&1
  grep -Eq 'Disk type[[:space:]]*: Dynamic' "$tmp/vi.txt" &&
    grep -Eq "Identifier[[:space:]]*: $dyn_id\$" "$tmp/vi.txt" &&
    pass "vhdiinfo: dynamic disk" || { fail "vhdiinfo: dynamic disk"; diag_file "$tmp/vi.txt"; }
  vhdiinfo "$d/c/fixed.vhd" > "$tmp/vi.txt" 2>&1
  grep -Eq 'Disk type[[:space:]]*: Fixed' "$tmp/vi.txt" &&
    pass "vhdiinfo: fixed disk" || { fail "vhdiinfo: fixed disk"; diag_file "$tmp/vi.txt"; }
else
  skip "vhdiinfo not installed"
fi

# ------------------------------------------------------------ info (text)

t info "$d/c/child.vhd"
expect_rc "info child: exit 0" 0
info_has () {
  if grep -Eq -- "$2" "$last"; then
    pass "$1"
  else
    fail "$1 (wanted /$2/)"
    diag_file "$last"
    diag_file "$last.err"
  fi
}
info_has "info text: file"          "^file: +$(re "$d/c/child.vhd")\$"
info_has "info text: type"          '^type: +differencing$'
info_has "info text: virtual size"  '^virtual size: +8388608 \(8\.0 MiB\)$'
info_has "info text: block size"    '^block size: +2097152$'
info_has "info text: creator"       '^creator: +"win " 10\.0 \(Wi2k\)$'
info_has "info text: parent id"     "^parent id: +$dyn_id\$"
info_has "info text: parent name"   '^parent name: +dyn\.vhd$'
info_has "info text: W2ru locator"  '^locator 0: +W2ru \.\\dyn\.vhd$'
info_has "info text: W2ku locator"  "^locator 1: +W2ku $(re "$(printf '%s' "$d/c/dyn.vhd" | tr / '\\')")\$"
info_has "info text: chain layer 0" "^  0  differencing +$(re "$d/c/child.vhd")\$"
info_has "info text: chain layer 1" "^  1  dynamic +$(re "$d/c/dyn.vhd")\$"

t info "$d/c/fixed.vhd"
expect_rc "info fixed: exit 0" 0
info_has "info text: fixed type"    '^type: +fixed$'
grep -q '^block size' "$last" && fail "info text: fixed disk shows no block size" ||
  pass "info text: fixed disk shows no block size"

# ------------------------------------------------------------ info --json

# info_json FILE OUT [OPTIONS...]: run info --json; sets rc.
info_json () {
  local f=$1 out=$2
  shift 2
  last=$out
  run_tool "$out" "$VHDTOOL" info --json "$@" "$f"
}
info_json "$d/c/dyn.vhd" "$d/c/dyn.info.json"
expect_rc "info --json dyn: exit 0" 0
info_json "$d/c/fixed.vhd" "$d/c/fixed.info.json"
expect_rc "info --json fixed: exit 0" 0
info_json "$d/c/child.vhd" "$d/c/child.info.json"
expect_rc "info --json child: exit 0" 0
json_check "info --json dynamic: type, sizes, id as on disk" "$d/c/dyn.info.json" '
  j["type"] == "dynamic" and j["virtual-size"] == 8388608 and
  j["block-size"] == 2097152 and j["unique-id"] == E["dyn_id"] and
  j["creator"] == "win " and j["allocated"] == 0 and j["file-size"] == 2560 and
  j["chain"] == [{"depth": 0, "type": "dynamic", "file": E["cdir"] + "/dyn.vhd"}]'
json_check "info --json fixed: no block-size, allocated = size" "$d/c/fixed.info.json" '
  j["type"] == "fixed" and j["virtual-size"] == 8388608 and
  "block-size" not in j and j["unique-id"] == E["fixed_id"] and
  j["allocated"] == 8388608 and j["file-size"] == 8388608 + 512'
child_id=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["footer"]["unique_id"])' "$d/c/child.json")
export child_id
json_check "info --json child: parent-id is the parent's unique-id" "$d/c/child.info.json" '
  j["type"] == "differencing" and j["virtual-size"] == 8388608 and
  j["block-size"] == 2097152 and j["unique-id"] == E["child_id"] and
  j["parent-id"] == json.load(open(E["cdir"] + "/dyn.info.json"))["unique-id"] and
  j["parent-name"] == "dyn.vhd"'
json_check "info --json child: chain of two, depths and files" "$d/c/child.info.json" '
  j["chain"] == [{"depth": 0, "type": "differencing", "file": E["cdir"] + "/child.vhd"},
                 {"depth": 1, "type": "dynamic", "file": E["cdir"] + "/dyn.vhd"}]'
json_check "info --json child: locators W2ru and W2ku" "$d/c/child.info.json" '
  j["locators"] == [{"slot": 0, "code": "W2ru", "path": ".\\dyn.vhd"},
                    {"slot": 1, "code": "W2ku", "path": (E["cdir"] + "/dyn.vhd").replace("/", "\\")}]'

# A grandchild: a chain of three.
"$VHDTOOL" create -p "$d/c/child.vhd" "$d/c/grand.vhd" > /dev/null
info_json "$d/c/grand.vhd" "$d/c/grand.info.json"
expect_rc "info --json grandchild: exit 0" 0
json_check "info --json grandchild: chain of three" "$d/c/grand.info.json" '
  [(l["depth"], l["type"], l["file"]) for l in j["chain"]] ==
  [(0, "differencing", E["cdir"] + "/grand.vhd"),
   (1, "differencing", E["cdir"] + "/child.vhd"),
   (2, "dynamic", E["cdir"] + "/dyn.vhd")] and j["parent-id"] == E["child_id"]'

# ------------------------------------------------------------ other directories

# Parent in A, child in B: W2ru goes up with ..\ and info resolves it,
# also when run from elsewhere with a relative path, and after the
# whole tree has moved (only the relative locator still fits).
mkdir -p "$d/tree/A" "$d/tree/B" "$d/elsewhere"
"$VHDTOOL" create "$d/tree/A/base.vhd" 4M > /dev/null
(cd "$d/tree/B" && "$VHDTOOL" create -p ../A/base.vhd child.vhd) > /dev/null 2>&1
info_json "$d/tree/B/child.vhd" "$d/tree/child.info.json"
expect_rc "info child in another directory: exit 0" 0
export tree=$d/tree
json_check "child in another directory: W2ru ..\\A\\base.vhd, W2ku absolute" \
  "$d/tree/child.info.json" '
  j["locators"] == [{"slot": 0, "code": "W2ru", "path": "..\\A\\base.vhd"},
                    {"slot": 1, "code": "W2ku", "path": (E["tree"] + "/A/base.vhd").replace("/", "\\")}]
  and j["parent-name"] == "base.vhd"'
json_check "child in another directory: chain resolves to A/base.vhd" \
  "$d/tree/child.info.json" '
  [l["file"] for l in j["chain"]] == [E["tree"] + "/B/child.vhd", E["tree"] + "/A/base.vhd"]'
last=$tmp/.rel
(cd "$d/elsewhere" && "$VHDTOOL" info --json ../tree/B/child.vhd) > "$last" 2> "$last.err"
rc=$?
expect_rc "info with a relative path from another directory: exit 0" 0
json_check "relative path from another directory: chain resolves" "$last" '
  [l["file"] for l in j["chain"]] == [E["tree"] + "/B/child.vhd", E["tree"] + "/A/base.vhd"]'
mv "$d/tree" "$d/tree2"
export tree2=$d/tree2
info_json "$d/tree2/B/child.vhd" "$d/tree2/child.info.json"
expect_rc "moved tree: info exits 0 (W2ru still fits)" 0
json_check "moved tree: chain resolves through the relative locator" \
  "$d/tree2/child.info.json" '
  [l["file"] for l in j["chain"]] == [E["tree2"] + "/B/child.vhd", E["tree2"] + "/A/base.vhd"]'

# Parent moved away: --parent-dir and --parent find it.
mkdir "$d/mv" "$d/mv/store"
"$VHDTOOL" create "$d/mv/base.vhd" 4M > /dev/null
"$VHDTOOL" create -p "$d/mv/base.vhd" "$d/mv/child.vhd" > /dev/null
mv "$d/mv/base.vhd" "$d/mv/store/renamed.vhd"
export mvd=$d/mv
info_json "$d/mv/child.vhd" "$d/mv/none.json"
expect_rc "parent moved: info exits 1" 1 "$(re "$d/mv/child.vhd"): parent not found"
info_json "$d/mv/child.vhd" "$d/mv/p.json" --parent "$d/mv/store/renamed.vhd"
expect_rc "parent moved: info --parent exits 0" 0
json_check "info --parent: chain uses the named file" "$d/mv/p.json" '
  [l["file"] for l in j["chain"]] == [E["mvd"] + "/child.vhd", E["mvd"] + "/store/renamed.vhd"]'
cp "$d/mv/store/renamed.vhd" "$d/mv/store/base.vhd"
info_json "$d/mv/child.vhd" "$d/mv/pd.json" --parent-dir "$d/mv/store"
expect_rc "parent moved: info --parent-dir exits 0" 0
json_check "info --parent-dir: chain uses the file in that directory" "$d/mv/pd.json" '
  [l["file"] for l in j["chain"]] == [E["mvd"] + "/child.vhd", E["mvd"] + "/store/base.vhd"]'

# ------------------------------------------------------------ missing parent

mkdir "$d/miss"
"$VHDTOOL" create "$d/miss/base.vhd" 4M > /dev/null
"$VHDTOOL" create -p "$d/miss/base.vhd" "$d/miss/child.vhd" > /dev/null
rm "$d/miss/base.vhd"
t info "$d/miss/child.vhd"
expect_rc "info, parent missing: exit 1 with 'parent not found' naming the child" 1 \
  "$(re "$d/miss/child.vhd"): parent not found"
info_has "info, parent missing: still prints the type" '^type: +differencing$'
info_has "info, parent missing: still prints the locators" '^locator 0: +W2ru \.\\base\.vhd$'
info_has "info, parent missing: chain cannot be resolved" \
  "^  cannot be resolved: $(re "$d/miss/child.vhd"): parent not found"
info_json "$d/miss/child.vhd" "$d/miss/child.info.json"
expect_rc "info --json, parent missing: exit 1" 1 'parent not found'
json_check "info --json, parent missing: valid JSON with type, chain null, chain-error" \
  "$d/miss/child.info.json" '
  j["type"] == "differencing" and j["chain"] is None and
  "parent not found" in j["chain-error"] and j["parent-name"] == "base.vhd"'

# Bad checksum: info refuses unless --ignore-checksums.
mkdir "$d/ck"
"$VHDTOOL" create "$d/ck/x.vhd" 4M > /dev/null
size=$(stat -c %s "$d/ck/x.vhd")
printf '\x01' | dd of="$d/ck/x.vhd" bs=1 seek=$((size - 512 + 200)) conv=notrunc status=none
t info "$d/ck/x.vhd"
expect_rc "info, bad footer checksum: exit 1" 1 "$(re "$d/ck/x.vhd"): footer checksum mismatch"
t info --ignore-checksums "$d/ck/x.vhd"
expect_rc "info --ignore-checksums: exit 0" 0
info_has "info --ignore-checksums: prints the type" '^type: +dynamic$'

# Wrong parent id: info refuses unless --ignore-id-mismatch.
mkdir "$d/idm"
"$VHDTOOL" create "$d/idm/base.vhd" 4M > /dev/null
"$VHDTOOL" create -p "$d/idm/base.vhd" "$d/idm/child.vhd" > /dev/null
rm "$d/idm/base.vhd"
"$VHDTOOL" create "$d/idm/base.vhd" 4M > /dev/null
t info "$d/idm/child.vhd"
expect_rc "info, parent replaced (new id): exit 1" 1 "$(re "$d/idm/child.vhd"): parent id mismatch"
t info --ignore-id-mismatch "$d/idm/child.vhd"
expect_rc "info --ignore-id-mismatch: exit 0" 0
info_has "info --ignore-id-mismatch: chain includes the replacement" "^  1  dynamic +$(re "$d/idm/base.vhd")\$"

# ------------------------------------------------------------ real image

if [ -f "$IMAGES/dfvfs-fat-differential.vhd.gz" ]; then
  mkdir "$d/real"
  gunzip -c "$IMAGES/dfvfs-fat-differential.vhd.gz" > "$d/real/fat-differential.vhd"
  sha256sum "$d/real/fat-differential.vhd" > "$tmp/real.sum"
  t info "$d/real/fat-differential.vhd"
  expect_rc "real diskpart image: info exits 1 (parent missing)" 1 'parent not found'
  info_has "real image: type differencing" '^type: +differencing$'
  info_has "real image: virtual size 4 MiB" '^virtual size: +4194304 '
  info_has "real image: W2ku C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd" \
    '^locator [0-7]: +W2ku C:\\Projects\\dfvfs\\test_data\\fat-parent\.vhd$'
  info_has "real image: W2ru .\\fat-parent.vhd" \
    '^locator [0-7]: +W2ru \.\\fat-parent\.vhd$'
  info_has "real image: parent name is the full Windows path" \
    '^parent name: +C:\\Projects\\dfvfs\\test_data\\fat-parent\.vhd$'
  info_has "real image: creator win" '^creator: +"win "'
  info_has "real image: tried the W2ru path next to the child" \
    "cannot be resolved: .*tried: .*$(re "$d/real/fat-parent.vhd")"
  info_has "real image: tried the W2ku path without its drive letter" \
    'cannot be resolved: .*tried: .*/Projects/dfvfs/test_data/fat-parent\.vhd'
  info_json "$d/real/fat-differential.vhd" "$d/real/info.json"
  expect_rc "real image: info --json exits 1" 1
  json_check "real image: JSON type, locators, null chain" "$d/real/info.json" '
    j["type"] == "differencing" and j["virtual-size"] == 4194304 and
    {(l["code"], l["path"]) for l in j["locators"]} >=
    {("W2ku", "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd"),
     ("W2ru", ".\\fat-parent.vhd")} and j["chain"] is None'
  if sha256sum --quiet -c "$tmp/real.sum" > /dev/null 2>&1; then
    pass "real image: info did not modify it"
  else
    fail "real image: info did not modify it"
  fi
else
  skip "real images not found in $IMAGES"
fi

done_testing
