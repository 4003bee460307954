#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The malformed-VHDX corpus: damaged files made here from pristine ones
# written by the independent generator (tests/vhdxgen.py: a dynamic base
# with a differencing child, a file with a pending log, a 4 KiB-sector
# file), patched field by field with tests/vhdxpatch.py (CRC-32C
# recomputed unless the case is about the checksum): truncations at many
# offsets, identifier, headers, region tables, metadata table and items,
# parameters, parent locator, BAT entries, the log, and chains (loop,
# wrong linkage, a VHD parent, a parent of another sector size, too
# deep).
#
# Two kinds of case.  "open": nbdkit refuses to start, within the time
# limit, with an error naming the damaged file and the problem.  "read":
# BAT entries are validated when they are read, so nbdkit starts, and
# reading the whole disk (nbdcopy) fails with an error naming the file
# and the entry, nbdkit itself exiting normally (no crash).  For both:
# vhdtool check exits 1 or 2 naming the file and the problem, vhdtool
# info does not crash, and nothing is modified (sha256 of every file of
# the case before and after).
#
# The time limit is MALFORMED_TIME_LIMIT milliseconds (default 5000;
# 20000 in a sanitizer build), as in tests/test-malformed.sh: a guard
# against a hang or a walk over a huge table, not a speed test.
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in sha256sum timeout nbdcopy; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done

d=$(cd "$tmp" && pwd -P)
limit=${MALFORMED_TIME_LIMIT:-$([ -n "$SANITIZERS" ] && echo 20000 || echo 5000)}
VHDXGEN="$PY $top_srcdir/tests/vhdxgen.py"

# ---- pristine files
mkdir "$d/spec"
cat > "$d/spec/base.json" <<'JSON'
{"size": 8388608, "block_size": 1048576, "layers": [
 {"file": "base.vhdx", "writes": [[0, 65536], [2101248, 8192], [5242880, 4096]]},
 {"file": "child.vhdx", "type": "differencing",
  "writes": [[512, 1024], [1048576, 1048576, 0], [3146240, 512]]}]}
JSON
cat > "$d/spec/logged.json" <<'JSON'
{"size": 8388608, "block_size": 1048576, "layers": [
 {"file": "logged.vhdx", "writes": [[0, 65536], [3145728, 4096]],
  "log": {"entries": 2, "changes": ["bat", "metadata"]}}]}
JSON
cat > "$d/spec/flushed.json" <<'JSON'
{"size": 8388608, "block_size": 1048576, "layers": [
 {"file": "flushed.vhdx", "writes": [[0, 65536]],
  "log": {"flushed_beyond_eof": true}}]}
JSON
cat > "$d/spec/k4.json" <<'JSON'
{"size": 8388608, "block_size": 1048576, "logical_sector_size": 4096,
 "layers": [{"file": "base4k.vhdx", "writes": [[0, 65536]]}]}
JSON
for s in base logged flushed k4; do
  $VHDXGEN make "$d/spec/$s.json" "$d/gen" > "$d/spec/$s.log" 2>&1 || {
    echo "Bail out! vhdxgen.py make $s.json failed"
    cat "$d/spec/$s.log"
    exit 1
  }
done
# A VHD, for a parent of the other format.
"$VHDTOOL" create "$d/gen/base.vhd" 8M > /dev/null ||
  { echo "Bail out! vhdtool create failed"; exit 1; }

cat > "$d/mk.py" <<'EOS'
# mk.py GEN DIR TESTSDIR: make the malformed cases from GEN's pristine
# files; print one line per case:
# NAME<TAB>MODE<TAB>FILE-TO-SERVE<TAB>DAMAGED-FILE<TAB>REGEX
import os, struct, sys
gen, top = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
from vhdxpatch import *

def copy(src, dst):
    """A sparse copy (the files are mostly holes)."""
    if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src))
    with open(src, "rb") as i, open(dst, "wb") as o:
        while True:
            b = i.read(65536)
            if not b:
                break
            if b.count(0) == len(b):
                o.seek(len(b), 1)
            else:
                o.write(b)
        o.truncate()

cases = []
def case(name, want, files=("base.vhdx",), serve=None, damaged=None,
         mode="open"):
    d = os.path.join(top, name)
    os.mkdir(d)
    for f in files:
        copy(os.path.join(gen, f), d)
    serve = serve or files[-1]
    cases.append((name, mode, os.path.join(d, serve),
                  os.path.join(d, damaged or serve), want))
    return d

def B(d, f="base.vhdx"):
    return os.path.join(d, f)
def C(d):
    return os.path.join(d, "child.vhdx")
CHILD = ("base.vhdx", "child.vhdx")
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)
size = os.path.getsize(os.path.join(gen, "base.vhdx"))
base = os.path.join(gen, "base.vhdx")
blk0 = getbat(base, 0) & ~0xFFFFF
blk2 = getbat(base, 2) & ~0xFFFFF

# ---- truncated, at many offsets
trunc = ("not a VHD file|shorter than the 1 MiB header section|"
         "ends past the end of the "
         "file|lies past the end of the file|reading the (file identifier|"
         "region tables|metadata table)")
for at in [0, 7, 520, 0x10000 + 100, 0x20000 + 4000, 0x30000 + 16,
           0x40000 + 100, 0xFFFFF, 0x100000 + 4096, 0x200000 + 100,
           0x200000 + 0x10010, 0x300000 + 8]:
    d = case("trunc-%d" % at, trunc); os.truncate(B(d), at)
# Inside a block and inside the BAT's last payload block: the entry is
# refused when read.
for at in [blk0 + 4096, blk2 + MiB - 512, size - 1]:
    d = case("trunc-%d" % at, "BAT\\]? entry [0-9]+: block at offset [0-9]+ "
             "lies past the end of the file", mode="read")
    os.truncate(B(d), at)

# ---- identifier and headers
d = case("no-vhdxfile", "not a VHD file|not a VHDX file")
wr(B(d), 0, b"vhdxfilE")
d = case("both-headers-bad-crc", "no valid header: header 1: CRC-32C mismatch")
header(B(d), 100, b"\x01", fix=False)
d = case("both-headers-no-signature", "no valid header: header 1: no 'head'")
header(B(d), 0, b"hexd")
d = case("equal-seq-differ", "both headers have sequence number 77 but differ")
header(B(d), 8, u64(77), slots=(0, 1))
header(B(d), 16, b"\x55" * 16, slots=(0,))
d = case("version-2", "version 2, only version 1 is defined")
header(B(d), 66, struct.pack("<H", 2))
d = case("logversion-1-with-logguid", "log version 1, only version 0")
header(B(d), 64, struct.pack("<H", 1))
header(B(d), 48, b"\x42" * 16)
d = case("log-offset-unaligned", "log at offset 1052672, length 1048576: "
         "both must be whole MiB")
header(B(d), 72, u64(MiB + 4096))
d = case("log-past-eof", "the log \\(offset 1099511627776, length 1048576\\) "
         "ends past the end of the file")
header(B(d), 72, u64(1 << 40))
header(B(d), 48, b"\x42" * 16)
d = case("log-offset-wraps", "the log \\(offset 18446744073708503040, length "
         "1048576\\) ends past the end of the file")
header(B(d), 72, u64(0xFFFFFFFFFFF00000))
header(B(d), 48, b"\x42" * 16)
d = case("log-in-header-section", "log at offset 0, length 1048576")
header(B(d), 72, u64(0))

# ---- region tables
d = case("both-region-tables-bad", "no valid region table: table 1: "
         "CRC-32C mismatch; table 2: CRC-32C mismatch")
region(B(d), 1000, b"\x01", fix=False)
d = case("region-count-2048", "no valid region table: table 1: 2048 entries")
region(B(d), 8, u32(2048))
d = case("unknown-required-region", "unknown region "
         "12345678-.* is marked required")
region(B(d), 8, u32(3))
region(B(d), 16 + 64, guid("12345678-1111-2222-3333-444455556666")
       + u64(5 * MiB) + u32(MiB) + u32(1))
d = case("region-overlaps-log", "region BAT overlaps the log")
region(B(d), region_entry_at(base, BAT) + 16, u64(MiB))
d = case("regions-overlap", "overlaps region (BAT|metadata)")
region(B(d), region_entry_at(base, METADATA) + 16, u64(3 * MiB))
d = case("region-past-eof", "region metadata \\(offset 1099511627776, length "
         "1048576\\) ends past the end of the file")
region(B(d), region_entry_at(base, METADATA) + 16, u64(1 << 40))
d = case("region-offset-wraps", "region metadata \\(offset "
         "18446744073708503040, length 1048576\\) ends past the end")
region(B(d), region_entry_at(base, METADATA) + 16, u64(0xFFFFFFFFFFF00000))
d = case("region-unaligned", "region BAT at offset 3149824, length 1048576: "
         "both must be non-zero whole MiB")
region(B(d), region_entry_at(base, BAT) + 16, u64(3 * MiB + 4096))
d = case("region-in-header-section", "region BAT at offset 0")
region(B(d), region_entry_at(base, BAT) + 16, u64(0))
d = case("region-twice", "region metadata is listed twice")
region(B(d), region_entry_at(base, BAT), METADATA)
d = case("no-bat-region", "the region table has no BAT region")
region(B(d), region_entry_at(base, BAT),
       guid("12345678-1111-2222-3333-444455556666") + u64(3 * MiB) + u32(MiB)
       + u32(0))
d = case("no-metadata-region", "the region table has no metadata region")
region(B(d), region_entry_at(base, METADATA),
       guid("12345678-1111-2222-3333-444455556666") + u64(2 * MiB) + u32(MiB)
       + u32(0))

# ---- metadata table
d = case("metadata-signature", "no 'metadata' signature at offset 2097152")
meta(B(d), 0, b"metadatA")
d = case("metadata-count-2048", "more than 2047 entries")
meta(B(d), 10, struct.pack("<H", 2048))
d = case("item-outside-region", "item 2fa54224-.*: offset 1048572, length 8 "
         "lies outside")
meta(B(d), item_entry_at(base, DISK_SIZE) + 16, u32(MiB - 4))
d = case("item-in-table", "item 2fa54224-.*: offset 4096, length 8 lies "
         "outside")
meta(B(d), item_entry_at(base, DISK_SIZE) + 16, u32(4096))
d = case("item-twice", "item caa16737-.* is listed twice")
meta(B(d), item_entry_at(base, DISK_SIZE), FILE_PARAMS)
d = case("items-overlap", "overlaps another item")
meta(B(d), item_entry_at(base, DISK_SIZE) + 16,
     u32(items(base)[item_index(base, FILE_PARAMS)][1] + 4))
d = case("item-user-required", "user item 2fa54224-.* is marked required")
meta(B(d), item_entry_at(base, DISK_SIZE) + 24, u32(1 | 4))
d = case("unknown-required-item", "unknown metadata item "
         "12345678-.* is marked required")
meta(B(d), item_entry_at(base, DISK_ID), guid("12345678-1111-2222-3333-444455556666"))
meta(B(d), item_entry_at(base, DISK_ID) + 24, u32(4))
d = case("incomplete-file-item", "the file carries the 'incomplete file' item")
n = len(items(base))
meta(B(d), 10, struct.pack("<H", n + 1))
meta(B(d), 32 + 32 * n, INCOMPLETE + u32(0) + u32(0) + u32(4))
d = case("item-length-wrong", "\\(virtual disk size\\) is 4 bytes long, not 8")
meta(B(d), item_entry_at(base, DISK_SIZE) + 20, u32(4))
d = case("mandatory-item-missing", "the mandatory virtual disk id item is "
         "missing")
meta(B(d), item_entry_at(base, DISK_ID), guid("12345678-1111-2222-3333-444455556666"))
meta(B(d), item_entry_at(base, DISK_ID) + 24, u32(0))

# ---- parameters
for name, v in [("block-size-3m", 3 * MiB), ("block-size-512k", MiB // 2),
                ("block-size-512m", 512 * MiB), ("block-size-0", 0)]:
    d = case(name, "block size %d is not a power of two from 1 MiB to "
             "256 MiB" % v)
    item_data(B(d), FILE_PARAMS, 0, u32(v))
d = case("file-flags-reserved", "reserved flags 0x4 set")
item_data(B(d), FILE_PARAMS, 4, u32(4))
for name, v in [("size-0", 0), ("size-over-64t", (64 << 40) + 512),
                ("size-not-sector-multiple", 8 * MiB + 100)]:
    d = case(name, "virtual disk size %d is not a non-zero multiple" % v)
    item_data(B(d), DISK_SIZE, 0, u64(v))
d = case("logical-sector-1024", "logical sector size 1024: only 512 and 4096")
item_data(B(d), LOGICAL_SECTOR, 0, u32(1024))
d = case("physical-sector-1000", "physical sector size 1000")
item_data(B(d), PHYSICAL_SECTOR, 0, u32(1000))
d = case("bat-region-too-small", "the BAT region holds 1048576 bytes, too few "
         "for the 1048831 entries")
item_data(B(d), DISK_SIZE, 0, u64(1 << 40))

# ---- parent locator (child)
child = os.path.join(gen, "child.vhdx")
d = case("hasparent-without-locator", "a differencing disk \\(HasParent\\) "
         "without a parent locator")
item_data(B(d), FILE_PARAMS, 4, u32(2))
d = case("locator-wrong-type", "unknown locator type", CHILD)
item_data(C(d), PARENT_LOCATOR, 0, b"\x00" * 16)
d = case("locator-key-outside-item", "entry 2: key at 1000000 .* outside "
         "the item", CHILD)
item_data(C(d), PARENT_LOCATOR, 20 + 12 * 2, u32(1000000))
d = case("locator-key-odd-length", "entry 0: key at [0-9]+ \\(27 bytes\\) "
         ".*odd-sized", CHILD)
item_data(C(d), PARENT_LOCATOR, 20 + 8, struct.pack("<H", 27))
d = case("locator-count-too-big", "1000 key-value entries do not fit", CHILD)
item_data(C(d), PARENT_LOCATOR, 18, struct.pack("<H", 1000))
d = case("locator-no-linkage", "no parent_linkage key", CHILD)
rename_locator_key(C(d), "parent_linkage", "parent_linkagX")
d = case("locator-bad-linkage", "parent_linkage \"not-a-guid\" is not a GUID",
         CHILD)
set_locator_value(C(d), "parent_linkage", "not-a-guid")
d = case("locator-key-twice", "key parent_linkage appears twice", CHILD)
# parent_linkage2's key cut to its first 14 characters
item_data(C(d), PARENT_LOCATOR, locator_entry(child, "parent_linkage2")[2] + 8,
          struct.pack("<H", 28))
# 63236 distinct keys, then one twice: found quickly (the time limit
# catches a pairwise comparison of every key, seconds on this file).
d = case("locator-65535-keys-last-twice", "key .* appears twice", CHILD)
many_locator_keys(C(d))

# ---- BAT entries: refused when read
read = dict(mode="read")
d = case("bat-reserved-bits", "BAT\\]? entry 0: reserved bits set", **read)
bat(B(d), 0, getbat(base, 0) | 1 << 3)
d = case("bat-state-4", "BAT\\]? entry 0: undefined state 4", **read)
bat(B(d), 0, blk0 | 4)
d = case("bat-past-eof", "BAT\\]? entry 2: block at offset 1099511627776 lies "
         "past the end of the file", **read)
bat(B(d), 2, (1 << 40) | 6)
d = case("bat-offset-wraps", "BAT\\]? entry 2: block at offset "
         "18446744073708503040 lies past the end of the file", **read)
bat(B(d), 2, 0xFFFFFFFFFFF00000 | 6)
d = case("bat-in-header-section", "BAT\\]? entry 2: block at offset 0 lies in "
         "the header section", **read)
bat(B(d), 2, 6)
d = case("bat-overlaps-bat", "BAT\\]? entry 2: block at offset 3145728 overlaps "
         "the BAT", **read)
bat(B(d), 2, 3 * MiB | 6)
d = case("bat-overlaps-metadata", "BAT\\]? entry 2: block at offset 2097152 "
         "overlaps the metadata region", **read)
bat(B(d), 2, 2 * MiB | 6)
d = case("bat-overlaps-log", "BAT\\]? entry 2: block at offset 1048576 overlaps "
         "the log", **read)
bat(B(d), 2, MiB | 6)
d = case("partial-without-sb", "sector bitmap block of its chunk \\(BAT "
         "entry 4096\\) is not present|entry 4096: the sector bitmap block "
         "is not present, but block entry 0 of its chunk is partially present",
         CHILD, **read)
bat(C(d), 4096, 0)
d = case("sb-state-3", "BAT\\]? entry 4096: undefined sector bitmap state 3",
         CHILD, **read)
bat(C(d), 4096, getbat(child, 4096) & ~7 | 3)

# ---- the log
logged = os.path.join(gen, "logged.vhdx")
d = case("log-guid-no-entry", "the header names log .*, but the log holds "
         "no valid sequence")
header(B(d), 48, b"\x42" * 16)
d = case("log-torn-only", "the log holds no valid sequence",
         ("logged.vhdx",))
for p in log_entries(logged):
    wr(B(d, "logged.vhdx"), log_area(logged)[0] + p + 4, b"\xde\xad\xbe\xef")
d = case("log-entry-seq-zero", "the log holds no valid sequence",
         ("logged.vhdx",))
for p in log_entries(logged):
    wr(B(d, "logged.vhdx"), log_area(logged)[0] + p + 16, u64(0))
    fix_log_entry(B(d, "logged.vhdx"), p)
d = case("log-flushed-beyond-eof", "shorter than the [0-9]+ its log says "
         "were durable", ("flushed.vhdx",))

# ---- chains
d = case("parent-loop", "parent loop: its parent .*base.vhdx is already in "
         "the chain", CHILD, damaged="base.vhdx")
set_locator_value(C(d), "parent_linkage", guid_text(data_write_guid(child)))
copy(C(d), B(d))
d = case("parent-wrong-linkage", "parent id mismatch|id mismatch", CHILD)
header(B(d), 32, b"\x66" * 16)
d = case("parent-is-vhd", "VHD.*mixes formats|mixes formats",
         ("base.vhd", "child.vhdx"))
set_locator_value(C(d), "relative_path", ".\\base.vhd")
d = case("parent-4k-sectors", "logical sector size mismatch",
         ("base4k.vhdx", "child.vhdx"))
os.rename(B(d, "base4k.vhdx"), B(d))
set_locator_value(C(d), "parent_linkage",
                  guid_text(data_write_guid(B(d))))
# 257 layers, one more than the default max-depth (256): copies of the
# child, each naming the previous by a name of the same length.
d = case("too-deep", "chain too deep: more than 256 layers", CHILD)
os.rename(B(d), B(d, "l000.vhdx"))
os.rename(C(d), B(d, "l001.vhdx"))
set_locator_value(B(d, "l001.vhdx"), "relative_path", ".\\l000.vhdx")
link = guid_text(data_write_guid(B(d, "l001.vhdx")))
for i in range(2, 257):
    f = B(d, "l%03d.vhdx" % i)
    copy(B(d, "l001.vhdx"), f)
    set_locator_value(f, "relative_path", ".\\l%03d.vhdx" % (i - 1))
    set_locator_value(f, "parent_linkage", link)
cases[-1] = cases[-1][:2] + (B(d, "l256.vhdx"), B(d, "l256.vhdx"),
                             cases[-1][4])

for c in cases:
    print("\t".join(c))
EOS
mkdir "$d/c"
$PY "$d/mk.py" "$d/gen" "$d/c" "$top_srcdir/tests" > "$d/cases.tsv" || {
  echo "Bail out! the corpus generator failed"
  exit 1
}

crashed () {  # crashed FILE: a sanitizer report or a fatal signal in it
  grep -Eq 'Sanitizer|runtime error:|Segmentation fault|Aborted|core dumped' "$1"
}

n=0
while IFS=$'\t' read -r name mode file damaged w; do
  n=$((n + 1))
  dir=$(dirname "$file")
  sha256sum "$dir"/* > "$d/.sums"

  rm -f "$d/.ran" "$d/.rc"
  t0=$(date +%s%N)
  st=0
  if [ "$mode" = open ]; then
    # The plugin refuses to start, in time, naming the file and problem.
    timeout 60 nbdkit -U "$(newsock)" "$PLUGIN" "$file" -r \
      --run "touch '$d/.ran'" > "$d/.out" 2>&1 || st=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ "$st" -ne 0 ] && [ "$st" -lt 124 ] && [ ! -e "$d/.ran" ] &&
       ! crashed "$d/.out" &&
       grep -Eq -- "error: $(re "$damaged"): .*($w)" "$d/.out"; then
      pass "$name: nbdkit refuses it, naming the file and the problem"
    else
      fail "$name: nbdkit refuses it (exit $st, wanted /error: $damaged: .*($w)/)"
      diag_file "$d/.out"
    fi
  else
    # nbdkit starts (BAT entries are checked when read); reading the
    # whole disk fails, the error naming the file and the entry, and
    # nbdkit exits with the client's status: it did not crash.
    timeout 60 nbdkit -U "$(newsock)" "$PLUGIN" "$file" -r \
      --run "nbdcopy \"\$uri\" null:; echo \$? > '$d/.rc'" \
      > "$d/.out" 2>&1 || st=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    rc=$(cat "$d/.rc" 2>/dev/null || echo none)
    if [ "$st" -eq 0 ] && [ "$rc" != none ] && [ "$rc" -ne 0 ] &&
       [ "$rc" -lt 124 ] && ! crashed "$d/.out" &&
       grep -Eq -- "error: $(re "$damaged"): .*($w)" "$d/.out"; then
      pass "$name: nbdkit starts, the read fails naming the file and the problem"
    else
      fail "$name: the read fails (nbdkit exit $st, nbdcopy exit $rc, wanted /error: $damaged: .*($w)/)"
      diag_file "$d/.out"
    fi
  fi
  if [ "$ms" -le "$limit" ]; then
    pass "$name: done in ${ms} ms"
  else
    fail "$name: done in ${ms} ms (limit $limit ms)"
  fi

  corpus_check_reports "$name" "$file" "$damaged" "$w"

  # vhdtool info does not crash (it may refuse the file).
  st=0
  timeout 60 "$VHDTOOL" info "$file" > "$d/.out" 2>&1 || st=$?
  if [ "$st" -lt 124 ] && ! crashed "$d/.out"; then
    pass "$name: vhdtool info does not crash (exit $st)"
  else
    fail "$name: vhdtool info crashed (exit $st)"
    diag_file "$d/.out"
  fi

  corpus_unmodified "$name" "$d/.sums"
done < "$d/cases.tsv"

corpus_size "$n"

done_testing
