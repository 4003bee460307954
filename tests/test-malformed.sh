#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The malformed-image corpus: at least 30 damaged files, generated here
# from a pristine chain made by the independent generator (tests/
# vhdgen.py): truncated at many offsets, wrong cookies, bad checksums,
# absurd sizes and counts, bad block sizes, BAT entries past EOF / into
# metadata / overlapping, locators past EOF or too long, invalid UTF-16
# in the parent name, parent loops (a file its own parent, A->B->A), a
# chain deeper than the default limit, parents of a different size.
#
# For every case: nbdkit refuses to start, within the time limit, with
# an error naming the damaged file and the problem; vhdtool check
# reports it (exit 1 or 2, the file and the problem named); and nothing
# is modified (sha256 of every file before and after).
#
# The time limit is MALFORMED_TIME_LIMIT milliseconds (default 5000; 20000
# in a sanitizer build).  It is a guard against a hang or a walk over a
# huge table, not a speed test: a refusal takes milliseconds, but a busy
# shared machine (CI beside a benchmark) can stretch it past a second.  tests/test-errors.sh and tests/test-check.sh
# test the exact wording of many of these messages; this file is the
# corpus.  TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in sha256sum timeout; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

d=$(cd "$tmp" && pwd -P)
limit=${MALFORMED_TIME_LIMIT:-$([ -n "$SANITIZERS" ] && echo 20000 || echo 5000)}

fixture_chain "$d/gen"

cat > "$d/mk.py" <<'EOS'
# mk.py GENOUT DIR TESTSDIR: make the malformed cases from vhdgen's base.vhd and
# child.vhd (see the spec in test-malformed.sh); print one line per case:
# NAME<TAB>FILE-TO-SERVE<TAB>DAMAGED-FILE
import os, shutil, struct, sys
gen, top = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
from vhdpatch import rd, wr, bat_off, patch_footer, patch_header

def footer(f, at, data, fix=True):
    patch_footer(f, at, data, fix=fix)
def header(f, at, data, fix=True):
    patch_header(f, at, data, fix=fix)
def bat(f, i, v):
    wr(f, bat_off(f) + 4 * i, struct.pack(">I", v))
def getbat(f, i):
    return struct.unpack(">I", rd(f, bat_off(f) + 4 * i, 4))[0]
def loc(f, i, field, v):   # field: 4 space, 8 length, 16 offset
    fmt = ">Q" if field == 16 else ">I"
    header(f, 576 + 24 * i + field, struct.pack(fmt, v))

cases = []
def case(name, target="base.vhd", damaged=None, both=False):
    d = os.path.join(top, name)
    os.mkdir(d)
    shutil.copy(os.path.join(gen, "base.vhd"), d)
    if both or target == "child.vhd":
        shutil.copy(os.path.join(gen, "child.vhd"), d)
    cases.append((name, os.path.join(d, target),
                  os.path.join(d, damaged or target)))
    return d

B = lambda d: os.path.join(d, "base.vhd")
C = lambda d: os.path.join(d, "child.vhd")
size = os.path.getsize(os.path.join(gen, "base.vhd"))
blk0 = getbat(os.path.join(gen, "base.vhd"), 0)
blk2 = getbat(os.path.join(gen, "base.vhd"), 2)

# Truncated at many offsets (not inside the EOF footer alone: that is
# the documented fallback to the copy at 0, tested in test-errors.sh).
for at in [0, 1, 100, 511, 512, 700, 1024, 1535, 1600, 2047,
           blk0 * 512 + 10, blk0 * 512 + 512 + 4096, blk2 * 512 + 100,
           blk2 * 512 + 512 + 65536 - 1, size - 1024]:
    d = case("trunc-%d" % at)
    os.truncate(B(d), at)
# Wrong cookies.
d = case("footer-cookie"); footer(B(d), 0, b"conectiX")
d = case("header-cookie"); header(B(d), 0, b"cxsparsE")
# Bad checksums.
d = case("footer-checksum"); footer(B(d), 64, b"\x12\x34\x56\x78", fix=False)
d = case("header-checksum"); header(B(d), 36, b"\x12\x34\x56\x78", fix=False)
d = case("child-header-checksum", "child.vhd")
header(C(d), 600, b"\xff", fix=False)
# Absurd sizes and counts.
d = case("size-2^63"); footer(B(d), 48, struct.pack(">Q", 1 << 63))
d = case("size-not-sector-multiple"); footer(B(d), 48, struct.pack(">Q", 8388608 + 100))
d = case("max-table-entries-huge"); header(B(d), 28, struct.pack(">I", 0xffffffff))
d = case("max-table-entries-small"); header(B(d), 28, struct.pack(">I", 1))
d = case("disk-type-7"); footer(B(d), 60, struct.pack(">I", 7))
d = case("data-offset-past-eof"); footer(B(d), 16, struct.pack(">Q", 1 << 40))
d = case("bat-offset-past-eof"); header(B(d), 16, struct.pack(">Q", 1 << 40))
d = case("bat-offset-in-footer"); header(B(d), 16, struct.pack(">Q", 0))
# Block size: zero, not a power of two, absurd.
d = case("block-size-0"); header(B(d), 32, struct.pack(">I", 0))
d = case("block-size-3-sectors"); header(B(d), 32, struct.pack(">I", 1536))
d = case("block-size-not-pow2"); header(B(d), 32, struct.pack(">I", 3 << 20))
d = case("block-size-2^31"); header(B(d), 32, struct.pack(">I", 1 << 31))
# BAT entries.
d = case("bat-past-eof"); bat(B(d), 1, 0x00100000)
d = case("bat-0xfffffffe"); bat(B(d), 3, 0xfffffffe)
d = case("bat-into-header"); bat(B(d), 1, 1)
d = case("bat-into-bat"); bat(B(d), 1, 3)
d = case("bat-overlap-same"); bat(B(d), 1, blk0)
d = case("bat-overlap-partial"); bat(B(d), 1, blk0 + 8)
d = case("bat-into-locator", "child.vhd", both=True); bat(C(d), 3, 4)
# Locators (child).
d = case("locator-offset-past-eof", "child.vhd", both=True); loc(C(d), 0, 16, 1 << 40)
d = case("locator-length-too-long", "child.vhd", both=True); loc(C(d), 0, 8, 0x7fffffff)
d = case("locator-length-over-space", "child.vhd", both=True); loc(C(d), 0, 8, 4096)
# Invalid UTF-16 in the parent name (a lone high surrogate), the child
# otherwise intact: its locators still find the parent by path, so
# the parent name is what is wrong.
d = case("parent-name-lone-surrogate", "child.vhd", both=True)
header(C(d), 64, b"\xd8\x00\x00\x41\x00\x00")
d = case("parent-name-unpaired-low", "child.vhd", both=True)
header(C(d), 64, b"\x00\x41\xdc\x00\x00\x00")
# Parent of a different size.
d = case("parent-size-differs", "child.vhd", both=True)
footer(C(d), 48, struct.pack(">Q", 4194304))
d = case("parent-size-bigger", "child.vhd", "base.vhd", both=True)
footer(B(d), 48, struct.pack(">Q", 16777216))

for c in cases:
    print("\t".join(c))
EOS
mkdir "$d/c"
$PY "$d/mk.py" "$d/gen" "$d/c" "$top_srcdir/tests" > "$d/cases.tsv" || {
  echo "Bail out! the corpus generator failed"
  exit 1
}

# Loops and depth, made with vhdtool and patched like the rest.
cat > "$d/pid.py" <<'EOS'
import os, struct, sys, uuid
f, cmd = sys.argv[1], sys.argv[2]
def rd(off, n):
    with open(f, "rb") as fp:
        fp.seek(off); return fp.read(n)
eof = os.path.getsize(f) - 512
if cmd == "uid":
    print(uuid.UUID(bytes=rd(eof + 68, 16)))
else:
    ho = struct.unpack(">Q", rd(eof + 16, 8))[0]
    b = bytearray(rd(ho, 1024))
    b[40:56] = uuid.UUID(sys.argv[3]).bytes
    b[36:40] = bytes(4)
    b[36:40] = struct.pack(">I", ~sum(b) & 0xffffffff)
    with open(f, "r+b") as fp:
        fp.seek(ho); fp.write(b)
EOS
pid () { $PY "$d/pid.py" "$@"; }

x=$d/c/self-parent
mkdir "$x"
"$VHDTOOL" create "$x/x.vhd" 8M > /dev/null &&
  "$VHDTOOL" create -p "$x/x.vhd" "$x/y.vhd" > /dev/null &&
  mv -f "$x/y.vhd" "$x/x.vhd" &&
  pid "$x/x.vhd" set "$(pid "$x/x.vhd" uid)" &&
  printf 'self-parent\t%s\t%s\n' "$x/x.vhd" "$x/x.vhd" >> "$d/cases.tsv"

x=$d/c/loop-a-b-a
mkdir "$x"
"$VHDTOOL" create "$x/a.vhd" 8M > /dev/null &&
  "$VHDTOOL" create -p "$x/a.vhd" "$x/b.vhd" > /dev/null &&
  "$VHDTOOL" create -p "$x/b.vhd" "$x/a2.vhd" > /dev/null &&
  mv -f "$x/a2.vhd" "$x/a.vhd" &&
  pid "$x/b.vhd" set "$(pid "$x/a.vhd" uid)" &&
  printf 'loop-a-b-a\t%s\t%s\n' "$x/a.vhd" "$x/b.vhd" >> "$d/cases.tsv"

# 257 layers: one more than the default max-depth (256).
x=$d/c/too-deep
mkdir "$x"
ok=1
"$VHDTOOL" create "$x/l0.vhd" 1M > /dev/null || ok=
for i in $(seq 1 256); do
  [ -n "$ok" ] || break
  "$VHDTOOL" create -p "$x/l$((i - 1)).vhd" "$x/l$i.vhd" > /dev/null || ok=
done
[ -n "$ok" ] &&
  printf 'too-deep\t%s\t%s\n' "$x/l256.vhd" "$x/l256.vhd" >> "$d/cases.tsv"

# The problem each case must be reported with (extended regex).
declare -A want=(
  [footer-cookie]="no 'conectix' footer cookie"
  [header-cookie]="bad cookie \(expected 'cxsparse'\)"
  [footer-checksum]="footer checksum mismatch"
  [header-checksum]="header checksum mismatch"
  [child-header-checksum]="header checksum mismatch"
  [size-2^63]="current size 9223372036854775808 is too large"
  [size-not-sector-multiple]="current size 8388708 is not a multiple of 512"
  [max-table-entries-huge]="absurd BAT entry count 4294967295"
  [max-table-entries-small]="1 BAT entries cannot cover a disk"
  [disk-type-7]="unsupported disk type 7"
  [data-offset-past-eof]="dynamic header offset 1099511627776 is not inside the file"
  [bat-offset-past-eof]="BAT at offset 1099511627776 .* lies past the end of the file"
  [bat-offset-in-footer]="BAT entry 0 .* points past the end of the file"
  [block-size-0]="block size 0 is not a power of two"
  [block-size-3-sectors]="block size 1536 is not a power of two"
  [block-size-not-pow2]="block size 3145728 is not a power of two"
  [block-size-2^31]="block size 2147483648 is not a power of two"
  [bat-past-eof]="BAT entry 1 \(sector 1048576\) points past the end"
  [bat-0xfffffffe]="BAT entry 3 \(sector 4294967294\) points past the end"
  [bat-into-header]="BAT entry 1 \(sector 1\) overlaps the header or the BAT"
  [bat-into-bat]="BAT entry 1 \(sector 3\) overlaps the header or the BAT"
  [bat-overlap-same]="blocks at sectors 4 and 4 overlap"
  [bat-overlap-partial]="blocks at sectors 4 and 12 overlap"
  [bat-into-locator]="BAT entry 3 \(sector 4\) overlaps parent locator 0"
  [locator-offset-past-eof]="parent locator 0 \(W2ru\): data at offset 1099511627776 .* lies past the end"
  [locator-length-too-long]="parent locator 0 \(W2ru\): length 2147483647 exceeds its reserved space"
  [locator-length-over-space]="parent locator 0 \(W2ru\): length 4096 exceeds its reserved space"
  [parent-name-lone-surrogate]="parent name is not valid UTF-16"
  [parent-name-unpaired-low]="parent name is not valid UTF-16"
  [parent-size-differs]="size mismatch: the child is 4194304 bytes but its parent"
  [parent-size-bigger]="BAT entries cannot cover a disk of 16777216 bytes"
  [self-parent]="parent loop"
  [loop-a-b-a]="parent loop"
  [too-deep]="chain too deep: more than 256 layers"
)
trunc_re="not a VHD file|is not inside the file|lies past the end of the file|points past the end of the file"

n=0
while IFS=$'\t' read -r name file damaged; do
  n=$((n + 1))
  case $name in
    trunc-*) w=$trunc_re ;;
    *) w=${want[$name]:-} ;;
  esac
  if [ -z "$w" ]; then
    fail "$name: no expected message in the test"
    continue
  fi
  dir=$(dirname "$file")
  sha256sum "$dir"/*.vhd > "$d/.sums"

  # The plugin refuses to start, in time, naming the file and problem.
  rm -f "$d/.ran"
  t0=$(date +%s%N)
  st=0
  timeout 60 nbdkit -U "$(newsock)" "$PLUGIN" "$file" --run "touch '$d/.ran'" \
    > "$d/.out" 2>&1 || st=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && [ ! -e "$d/.ran" ] &&
     grep -Eq -- "error: $(re "$damaged"): .*($w)" "$d/.out"; then
    pass "$name: nbdkit refuses it, naming the file and the problem"
  else
    fail "$name: nbdkit refuses it (exit $st, wanted /error: $damaged: .*($w)/)"
    diag_file "$d/.out"
  fi
  if [ "$ms" -le "$limit" ]; then
    pass "$name: refused in ${ms} ms"
  else
    fail "$name: refused in ${ms} ms (limit $limit ms)"
  fi

  # vhdtool check reports it.
  corpus_check_reports "$name" "$file" "$damaged" "$w"
  corpus_unmodified "$name" "$d/.sums"
done < "$d/cases.tsv"

corpus_size "$n"

done_testing
