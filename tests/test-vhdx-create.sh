#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool create -f vhdx: fixed, dynamic and differencing VHDX files,
# 512- and 4096-byte sectors, every block size, up to 64 TiB.  Each new
# file must be clean for vhdtool check, described as asked by vhdtool
# info, laid out as Hyper-V lays files out (read back byte by byte
# here), read as zeros (a child: as its parent) by the project's
# independent reader (tests/vhdxgen.py), by the plugin, and, where they
# read VHDX at all, by qemu-img and libvhdi.  Bad parameters are refused
# naming the field, and nothing is ever overwritten.  convert writes
# VHDX output, and new files take writes through the plugin.
. "${top_srcdir:-.}/tests/functions.sh"

d="$tmp/c"
mkdir "$d"
have_qemu=; command -v qemu-img > /dev/null && have_qemu=1
have_vhdi=; command -v vhdiinfo > /dev/null && have_vhdi=1

# info_is FILE DESC PYTHON-ASSERTIONS [ARGS]: vhdtool info --json FILE
# as j (its details as d) passes the assertions (ARGS: sys.argv[2:]).
info_is () {
  local f=$1 desc=$2 code=$3
  "$VHDTOOL" info --json "$f" > "$tmp/info.json" 2> "$tmp/.out"
  check "$desc" /usr/bin/python3 -c "
import json, sys
j = json.load(open(sys.argv[1]))
d = j.get('details', {})
$code" "$tmp/info.json" "${@:4}"
}

# layout_ok FILE TYPE SIZE BLOCK LOGICAL PHYSICAL: the bytes of FILE are
# what docs sections 6.2 and 6.3 say Hyper-V writes, read here without
# the library.
layout_ok () {
  check "$(basename "$1"): the layout Hyper-V writes, byte by byte" \
    /usr/bin/python3 - "$@" <<'PY'
import os, struct, sys, zlib
path, typ, size, block, logical, physical = sys.argv[1:7]
size, block, logical, physical = map(int, (size, block, logical, physical))
MiB = 1 << 20
f = open(path, "rb")
def rd(off, n):
    f.seek(off)
    return f.read(n)
# CRC-32C (reflected 0x82F63B78).
T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    T.append(c)
def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
def crc_ok(b):
    return struct.unpack_from("<I", b, 4)[0] == crc32c(b[:4] + b"\0" * 4 + b[8:])
ident = rd(0, 520)
assert ident[:8] == b"vhdxfile", ident[:8]
creator = ident[8:].decode("utf-16-le").rstrip("\0")
assert creator.startswith("nbdkit-vhd "), creator
h1, h2 = rd(0x10000, 4096), rd(0x20000, 4096)
for h in (h1, h2):
    assert h[:4] == b"head" and crc_ok(h)
    seq, = struct.unpack_from("<Q", h, 8)
    assert h[48:64] == b"\0" * 16, "LogGuid"
    lv, ver, ll, lo = struct.unpack_from("<HHIQ", h, 64)
    assert (lv, ver, ll, lo) == (0, 1, MiB, MiB), (lv, ver, ll, lo)
    assert h[80:] == b"\0" * (4096 - 80)
s1, s2 = (struct.unpack_from("<Q", h, 8)[0] for h in (h1, h2))
assert s2 == s1 + 1, (s1, s2)
assert h1[16:48] == h2[16:48], "FileWriteGuid and DataWriteGuid differ"
assert h1[16:32] != h1[32:48] and h1[16:32] != b"\0" * 16
r1, r2 = rd(0x30000, 65536), rd(0x40000, 65536)
assert r1 == r2, "the region tables differ"
assert r1[:4] == b"regi" and crc_ok(r1)
assert struct.unpack_from("<I", r1, 8)[0] == 2
bat_guid = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
meta_guid = bytes.fromhex("06a27c8b90479a4bb8fe575f050f886e")
g, bo, bl, breq = struct.unpack_from("<16sQII", r1, 16)
assert g == bat_guid and bo == 3 * MiB and breq == 1, (g, bo, breq)
g, mo, ml, mreq = struct.unpack_from("<16sQII", r1, 48)
assert g == meta_guid and (mo, ml, mreq) == (2 * MiB, MiB, 1)
assert r1[80:] == b"\0" * (65536 - 80)
assert rd(0x50000, MiB - 0x50000) == b"\0" * (MiB - 0x50000)
assert rd(MiB, MiB) == b"\0" * MiB, "the log is not zero"
# Metadata: items in Hyper-V's order, flags 0x4 / 0x6, data from 0x10000.
m = rd(2 * MiB, 65536)
assert m[:8] == b"metadata"
n = struct.unpack_from("<H", m, 10)[0]
items = [struct.unpack_from("<16sIII", m, 32 + 32 * i) for i in range(n)]
want = [("3767a1ca36fa434db3b633f0aa44e76b", 0x10000, 8, 4),
        ("2442a52f1bcd7648b2115dbed83bf4b8", 0x10008, 8, 6),
        ("1dbf41816fa90947ba47f233a8faab5f", 0x10010, 4, 6),
        ("c748a3cd5d4471449cc9e9885251c556", 0x10014, 4, 6),
        ("ab12cabee6b2234593efc309e000c746", 0x10018, 16, 6)]
if typ == "differencing":
    want.append(("2d5fd3a80bb34d45abf7d3d84834ab0c", 0x10028, None, 4))
assert n == len(want), n
for (g, off, ln, fl), (wg, wo, wl, wf) in zip(items, want):
    assert g == bytes.fromhex(wg), g.hex()
    assert off == wo and fl == wf and (wl is None or ln == wl), (off, ln, fl)
md = rd(2 * MiB + 0x10000, 0x28)
bs, flags, vsize, ls, ps = struct.unpack_from("<IIQII", md, 0)
wflags = {"fixed": 1, "dynamic": 0, "differencing": 2}[typ]
assert (bs, flags, vsize, ls, ps) == (block, wflags, size, logical, physical), \
    (bs, flags, vsize, ls, ps)
# BAT (docs section 3.1), then the file's end.
cr = (1 << 23) * logical // block
payload = -(-size // block)
entries = (-(-payload // cr) * (cr + 1) if typ == "differencing"
           else payload + (payload - 1) // cr)
assert bl == -(-entries * 8 // MiB) * MiB, (bl, entries)
start = 3 * MiB + bl
end = start + (payload * block if typ == "fixed" else 0)
assert os.path.getsize(path) == end, (os.path.getsize(path), end)
bat = rd(3 * MiB, min(bl, 64 * MiB))
nread = len(bat) // 8
if typ != "fixed":
    assert bat == b"\0" * len(bat), "a sparse disk's BAT is not all zero"
else:
    b = 0
    for i in range(min(entries, nread)):
        e, = struct.unpack_from("<Q", bat, 8 * i)
        if i % (cr + 1) == cr:
            assert e == 0, (i, hex(e))
        else:
            assert e == (start + b * block) | 6, (i, hex(e), b)
            b += 1
    assert bat[8 * min(entries, nread):] == b"\0" * (len(bat) - 8 * min(entries, nread))
PY
}

# gen_sees DESC FILE TYPE: the independent reader's account of FILE's
# BAT: every payload block FULLY_PRESENT (fixed) or NOT_PRESENT, every
# sector bitmap slot NOT_PRESENT.
gen_sees () {
  $VHDXGEN dump --json "$2" > "$tmp/dump.json" 2> "$tmp/.out"
  check "$1: vhdxgen.py dump: the BAT's states" /usr/bin/python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))["bat"]
state = "fully_present" if sys.argv[2] == "fixed" else "not_present"
ps = {k: v for k, v in b["payload_states"].items() if v}
assert ps == {state: b["payload_blocks"]}, b
assert set(k for k, v in b["sector_bitmap_states"].items() if v) <= {"sb_not_present"}, b
' "$tmp/dump.json" "$3"
}

# reads_zeros DESC FILE SIZE TYPE: the independent reader and the plugin
# both read FILE as SIZE zero bytes.  (vhdxgen.py reads present blocks
# at some 50 MB/s: not a fixed disk of gigabytes.)
reads_zeros () {
  local desc=$1 f=$2 size=$3 type=$4
  rm -f "$tmp/z.raw" "$tmp/g.raw"
  truncate -s "$size" "$tmp/z.raw"
  if [ "$type" = fixed ] && [ "$size" -gt $((1 << 30)) ]; then
    skip "$desc: vhdxgen.py reads zeros (too slow on a large fixed disk)"
  elif $VHDXGEN read "$f" "$tmp/g.raw" > "$tmp/.out" 2>&1 &&
     $SPARSECMP "$tmp/g.raw" "$tmp/z.raw" >> "$tmp/.out" 2>&1; then
    pass "$desc: vhdxgen.py reads zeros"
  else
    fail "$desc: vhdxgen.py reads zeros"
    diag_file "$tmp/.out"
  fi
  rm -f "$tmp/g.raw"
  if [ "$type" = fixed ] && [ "$size" -gt $((1 << 30)) ]; then
    spot_zeros "$desc" "$f" "$size"
  else
    reads_as "$desc: the plugin serves zeros" "$tmp/z.raw" "$f"
  fi
  rm -f "$tmp/z.raw" "$tmp/.read.raw"
}

# spot_zeros DESC FILE SIZE: the plugin serves a disk of SIZE bytes,
# zeros at its start, around 4 GiB (the first chunk's end) and its end.
spot_zeros () {
  serve -r "$2" -- 'nbdsh -u "$uri" -c "
size = '"$3"'
assert h.get_size() == size, h.get_size()
for off in (0, (4 << 30) - 65536, 4 << 30, size - 65536):
    assert h.pread(65536, off) == bytes(65536), off
"' > "$tmp/.out" 2>&1 &&
    pass "$1: the plugin serves $3 bytes, zeros where tried" ||
    { fail "$1: the plugin serves zeros"; diag_file "$tmp/.out"; }
}

# qemu_reads DESC FILE SIZE LOGICAL TYPE: qemu-img (fixed and dynamic,
# 512 only) checks and reads FILE as zeros; with 4096-byte sectors it
# refuses, for that reason.
qemu_reads () {
  local desc=$1 f=$2 size=$3 logical=$4 type=$5
  [ -n "$have_qemu" ] || { skip "$desc: qemu-img not installed"; return; }
  if [ "$logical" = 4096 ]; then
    check_fails "$desc: qemu-img refuses 4096-byte logical sectors" \
      'Operation not supported' qemu-img info -f vhdx "$f"
    return
  fi
  check "$desc: qemu-img check" qemu-img check -f vhdx "$f"
  qemu-img info -f vhdx --output=json "$f" > "$tmp/.out" 2>&1
  out_has "$desc: qemu-img info: the size" "\"virtual-size\": $size,"
  if [ "$type" = fixed ] && [ "$size" -gt $((1 << 30)) ] &&
     command -v qemu-io > /dev/null; then
    # A whole read of gigabytes of present blocks takes long: spots,
    # around the first chunk's end (4 GiB) too.
    qemu-io -r -f vhdx -c "read -P 0 0 64k" -c "read -P 0 $(((4 << 30) - 65536)) 128k" \
      -c "read -P 0 $((size - 65536)) 64k" "$f" > "$tmp/.out" 2>&1 &&
      ! grep -q 'Pattern verification failed' "$tmp/.out" &&
      pass "$desc: qemu-io reads zeros where tried" ||
      { fail "$desc: qemu-io reads zeros"; diag_file "$tmp/.out"; }
    return
  fi
  rm -f "$tmp/q.raw" "$tmp/z.raw"
  truncate -s "$size" "$tmp/z.raw"
  if qemu-img convert -f vhdx -O raw "$f" "$tmp/q.raw" > "$tmp/.out" 2>&1; then
    check_same "$desc: qemu-img convert -O raw reads zeros" "$tmp/q.raw" "$tmp/z.raw"
  else
    fail "$desc: qemu-img convert"
    diag_file "$tmp/.out"
  fi
  rm -f "$tmp/q.raw" "$tmp/z.raw"
}

# vhdi_reads DESC FILE SIZE LOGICAL KIND: vhdiinfo's view.
vhdi_reads () {
  local desc=$1 f=$2 size=$3 logical=$4 kind=$5
  [ -n "$have_vhdi" ] || { skip "$desc: vhdiinfo not installed"; return; }
  vhdiinfo "$f" > "$tmp/.out" 2>&1
  if grep -Eq "Disk type[[:space:]]+: $kind\$" "$tmp/.out" &&
     grep -Eq "Media size[[:space:]]+: .*\($size bytes\)" "$tmp/.out" &&
     grep -Eq "Bytes per sector[[:space:]]+: $logical bytes" "$tmp/.out"; then
    pass "$desc: vhdiinfo: $kind, $size bytes, $logical-byte sectors"
  else
    fail "$desc: vhdiinfo"
    diag_file "$tmp/.out"
  fi
}

# ------------------------------------------------------------ base disks
# NAME TYPE SIZE BLOCK(- = default) LOGICAL(- = default) WANT_BLOCK
# WANT_LOGICAL WANT_PHYSICAL [PHYSICAL option]
cases=(
  "dyn-default dynamic 10M - - 33554432 512 4096"
  "fixed-default fixed 10M - - 2097152 512 4096"
  "dyn-1M dynamic 300M 1M - 1048576 512 4096 512"
  "dyn-256M dynamic 300M 256M - 268435456 512 4096"
  "fixed-256M fixed 100M 256M - 268435456 512 4096"
  "dyn-4k dynamic 100M 1M 4096 1048576 4096 4096"
  "fixed-4k fixed 40M 8M 4096 8388608 4096 4096 512"
  "dyn-5G dynamic 5G 1M - 1048576 512 4096"
  "fixed-5G fixed 5G 1M - 1048576 512 4096"
  "dyn-4k-40G dynamic 40G 1M 4096 1048576 4096 4096"
)
for c in "${cases[@]}"; do
  set -- $c
  name=$1 type=$2 size=$3 block=$4 logical=$5
  wblock=$6 wlogical=$7 wphys=$8 phys=${9:-}
  [ -n "$phys" ] && wphys=$phys
  f="$d/$name.vhdx"
  args=(-t "$type")
  [ "$block" != - ] && args+=(-b "$block")
  [ "$logical" != - ] && args+=(--logical-sector-size "$logical")
  [ -n "$phys" ] && args+=(--physical-sector-size "$phys")
  check "$name: create ${args[*]} $size" "$VHDTOOL" create "${args[@]}" "$f" "$size"
  [ -f "$f" ] || continue
  bytes=$(numfmt --from=iec "$size")
  check "$name: vhdtool check is clean" "$VHDTOOL" check "$f"
  info_is "$f" "$name: info: VHDX, $type, $bytes bytes, block $wblock, sectors $wlogical/$wphys" "
assert j['format'] == 'VHDX' and j['type'] == '$type', j
assert j['virtual-size'] == $bytes and j['block-size'] == $wblock, j
assert j['logical-sector-size'] == $wlogical, j
assert d['physical sector size'] == '$wphys', d
assert j['creator'].startswith('nbdkit-vhd '), j['creator']
assert d['file flags'] == {'fixed': 'LeaveBlockAllocated', 'dynamic': 'none'}['$type']
assert j['chain'] and len(j['chain']) == 1"
  layout_ok "$f" "$type" "$bytes" "$wblock" "$wlogical" "$wphys"
  gen_sees "$name" "$f" "$type"
  reads_zeros "$name" "$f" "$bytes" "$type"
  qemu_reads "$name" "$f" "$bytes" "$wlogical" "$type"
  vhdi_reads "$name" "$f" "$bytes" "$wlogical" \
    "$( [ "$type" = fixed ] && echo Fixed || echo Dynamic)"
  [ "$type" = fixed ] && rm -f "$f"
done

# 64 TiB, the format's maximum: the file is small and quick to make (its
# BAT is all zero, so sparse); ext4 cannot hold a raw copy, so the reads
# are spot checks through the plugin.
for c in "512 32M" "4096 1M" "512 256M"; do
  set -- $c
  f="$d/max-$1-$2.vhdx"
  check "64 TiB, $1-byte sectors, $2 blocks: create" \
    "$VHDTOOL" create -b "$2" --logical-sector-size "$1" "$f" 64T
  [ -f "$f" ] || continue
  check "64 TiB, $1/$2: vhdtool check is clean" "$VHDTOOL" check "$f"
  layout_ok "$f" dynamic $((64 << 40)) "$(numfmt --from=iec "$2")" "$1" 4096
  spot_zeros "64 TiB, $1/$2" "$f" $((64 << 40))
  rm -f "$f"
done
check_fails "64 TiB + 512 bytes: refused, naming the size" \
  "$(re "$d/over.vhdx"): size 70368744178176 is over 64 TiB" \
  "$VHDTOOL" create "$d/over.vhdx" 70368744178176
# A fixed 64 TiB file is beyond some file systems (ext4: 16 TiB): then
# the reason must be given.
if "$VHDTOOL" create -t fixed "$d/fixed-max.vhdx" 64T > "$tmp/.out" 2>&1; then
  check "fixed 64 TiB: vhdtool check is clean" "$VHDTOOL" check "$d/fixed-max.vhdx"
else
  out_has "fixed 64 TiB: refused by the file system, which is said" \
    "$(re "$d/fixed-max.vhdx"): cannot make the file [0-9]+ bytes long: "
fi
rm -f "$d/fixed-max.vhdx"

# ------------------------------------------------------------ the format
check "a .vhdx name makes VHDX" "$VHDTOOL" create "$d/n1.VHDX" 8M
info_is "$d/n1.VHDX" "... (.VHDX, any case)" "assert j['format'] == 'VHDX'"
check "a .avhdx name makes VHDX" "$VHDTOOL" create "$d/n2.avhdx" 8M
info_is "$d/n2.avhdx" "... (.avhdx)" "assert j['format'] == 'VHDX'"
check "another name makes VHD" "$VHDTOOL" create "$d/n3.img" 8M
info_is "$d/n3.img" "... (.img: VHD)" "assert j['format'] == 'VHD'"
check "-f vhdx whatever the name" "$VHDTOOL" create -f vhdx "$d/n4.img" 8M
info_is "$d/n4.img" "... (-f vhdx n4.img)" "assert j['format'] == 'VHDX'"
check "-f vhd whatever the name" "$VHDTOOL" create -f vhd "$d/n5.vhdx" 8M
info_is "$d/n5.vhdx" "... (-f vhd n5.vhdx)" "assert j['format'] == 'VHD'"
check "fixed VHDX takes -b" "$VHDTOOL" create -t fixed -b 4M "$d/n6.vhdx" 8M
info_is "$d/n6.vhdx" "... block size 4 MiB" "assert j['block-size'] == 4 << 20"
rm -f "$d"/n*

# ------------------------------------------------------------ refusals
r="$d/bad"
mkdir "$r"
refused () {
  local desc=$1 re=$2
  shift 2
  check_fails "$desc" "$re" "$VHDTOOL" create "$@"
}
refused "size 0" "$(re "$r/a.vhdx"): size 0: a disk needs at least one sector" "$r/a.vhdx" 0
refused "size not a multiple of 512" "$(re "$r/a.vhdx"): size 1000 is not a multiple of the logical sector size 512" "$r/a.vhdx" 1000
refused "size not a multiple of 4096" "$(re "$r/a.vhdx"): size 1049088 is not a multiple of the logical sector size 4096" \
  --logical-sector-size 4096 "$r/a.vhdx" 1049088
refused "block size 3M" "$(re "$r/a.vhdx"): block size 3145728 is not a power of two between 1 MiB and 256 MiB" -b 3M "$r/a.vhdx" 8M
refused "block size 512K" "$(re "$r/a.vhdx"): block size 524288 is not a power of two between 1 MiB and 256 MiB" -b 512K "$r/a.vhdx" 8M
refused "block size 512M" "$(re "$r/a.vhdx"): block size 536870912 is not a power of two between 1 MiB and 256 MiB" -b 512M "$r/a.vhdx" 8M
refused "logical sector 1024" "$(re "$r/a.vhdx"): logical sector size 1024 is not 512 or 4096" --logical-sector-size 1024 "$r/a.vhdx" 8M
refused "physical sector 2048" "$(re "$r/a.vhdx"): physical sector size 2048 is not 512 or 4096" --physical-sector-size 2K "$r/a.vhdx" 8M
refused "VHD with 4096-byte sectors" "$(re "$r/a.vhd"): logical sector size 4096: VHD files have 512-byte sectors only" \
  --logical-sector-size 4096 "$r/a.vhd" 8M
refused "VHD with a physical sector size" "$(re "$r/a.vhd"): physical sector size 4096: VHD files do not record one" \
  --physical-sector-size 4096 "$r/a.vhd" 8M
refused "-f qcow2: usage" "unknown format 'qcow2' \\(vhd or vhdx\\)" -f qcow2 "$r/a.vhdx" 8M
refused "--logical-sector-size x: usage" "invalid logical sector size 'x'" --logical-sector-size x "$r/a.vhdx" 8M
refused "fixed VHD with -b: usage" "fixed disks have no blocks \\(-b\\) in VHD files" -t fixed -b 1M "$r/a.vhd" 8M
[ -z "$(ls -A "$r")" ] && pass "refused creates left no file (nor temporary file)" ||
  { fail "refused creates left files"; ls -la "$r" > "$tmp/.ls"; diag_file "$tmp/.ls"; }

# ------------------------------------------------------------ children
# Bases with content, made by the independent writer: 512-byte sectors
# (32 MiB blocks, data across two of them and past 4 GiB) and 4096-byte
# sectors.
cat > "$tmp/base.json" <<'EOF'
{ "size": 5368709120, "seed": 11, "layers": [
  { "file": "base.vhdx", "type": "dynamic",
    "writes": [[0, 65536], [33550000, 9000], [4294963200, 12288],
               [5368705024, 4096]] } ] }
EOF
vhdxgen_make "vhdxgen: a 5 GiB dynamic base with data" "$tmp/base.json" "$d/b512"
cat > "$tmp/base4k.json" <<'EOF'
{ "size": 104857600, "seed": 12, "logical_sector_size": 4096,
  "physical_sector_size": 512, "block_size": 4194304, "layers": [
  { "file": "base.vhdx", "type": "fixed", "writes": [[8192, 40960], [104849408, 8192]] } ] }
EOF
vhdxgen_make "vhdxgen: a 100 MiB fixed base, 4096-byte sectors" "$tmp/base4k.json" "$d/b4k"

# The children: beside the base, and in another directory.
mkdir "$d/b512/sub" "$d/kids"
check "create -p base.vhdx child.vhdx" \
  "$VHDTOOL" create -p "$d/b512/base.vhdx" "$d/b512/child.vhdx"
check "create -p ../b512/base.vhdx (another directory), an .avhdx" \
  "$VHDTOOL" create -p "$d/b512/base.vhdx" "$d/kids/child.avhdx"
check "create -p child.vhdx grandchild.vhdx -b 32M" \
  "$VHDTOOL" create -p "$d/b512/child.vhdx" -b 32M "$d/b512/sub/grand.vhdx"
check "create -p base.vhdx (4096-byte sectors)" \
  "$VHDTOOL" create -p "$d/b4k/base.vhdx" "$d/b4k/child.vhdx"
snap "$d"/b512/*.vhdx "$d"/b4k/*.vhdx

base_guid=$("$VHDTOOL" info --json "$d/b512/base.vhdx" |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["unique-id"])')
base_diskid=$("$VHDTOOL" info --json "$d/b512/base.vhdx" |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["details"]["virtual disk id"])')
real=$(realpath "$d/b512/base.vhdx")
win=${real//\//\\}
for c in "b512/child.vhdx .\\\\base.vhdx" "kids/child.avhdx ..\\\\b512\\\\base.vhdx"; do
  set -- $c
  f="$d/$1"
  check "$1: vhdtool check is clean (the chain resolves)" "$VHDTOOL" check "$f"
  info_is "$f" "$1: differencing, the parent's size, sectors and disk id; 2 MiB blocks" "
assert j['format'] == 'VHDX' and j['type'] == 'differencing', j
assert j['virtual-size'] == 5368709120 and j['block-size'] == 2 << 20, j
assert j['logical-sector-size'] == 512 and d['physical sector size'] == '4096'
assert d['virtual disk id'] == '$base_diskid', d['virtual disk id']
assert d['file flags'] == 'HasParent'
assert j['parent-id'] == '$base_guid', j['parent-id']
assert [c['file'] for c in j['chain']] == [j['file'], '$real'], j['chain']"
  info_is "$f" "$1: locator: parent_linkage, absolute_win32_path, relative_path" "
loc = [(l['key'], l['value']) for l in j['locators']]
want = [('parent_linkage', '{$base_guid}'),
        ('absolute_win32_path', sys.argv[2]),
        ('relative_path', '$2')]
assert loc == want, (loc, want)" "$win"
  layout_ok "$f" differencing 5368709120 2097152 512 4096
  reads_as "$1: the plugin reads it exactly as the base" "$d/b512/expected.raw" "$f"
  rm -f "$tmp/g.raw"
  $VHDXGEN read "$f" "$tmp/g.raw" > "$tmp/.out" 2>&1 &&
    check_same "$1: vhdxgen.py follows it to the base, same content" \
      "$tmp/g.raw" "$d/b512/expected.raw" ||
    { fail "$1: vhdxgen.py read"; diag_file "$tmp/.out"; }
  rm -f "$tmp/g.raw" "$tmp/.read.raw"
  if [ -n "$have_qemu" ]; then
    check_fails "$1: qemu-img does not read differencing VHDX" \
      'Operation not supported' qemu-img info -f vhdx "$f"
  else
    skip "$1: qemu-img not installed"
  fi
  if [ -n "$have_vhdi" ]; then
    vhdiinfo "$f" > "$tmp/.out" 2>&1
    grep -q "Differential" "$tmp/.out" &&
      grep -Eq "Parent identifier[[:space:]]+: $base_guid" "$tmp/.out" &&
      pass "$1: vhdiinfo: differential, the parent's DataWriteGuid" ||
      { fail "$1: vhdiinfo"; diag_file "$tmp/.out"; }
  else
    skip "$1: vhdiinfo not installed"
  fi
done
check "sub/grand.vhdx: vhdtool check is clean (three layers)" \
  "$VHDTOOL" check "$d/b512/sub/grand.vhdx"
info_is "$d/b512/sub/grand.vhdx" "sub/grand.vhdx: 32 MiB blocks (-b), relative ..\\\\child.vhdx" "
assert j['block-size'] == 32 << 20 and len(j['chain']) == 3, j
assert {l['key']: l['value'] for l in j['locators']}['relative_path'] == '..\\\\child.vhdx'"
reads_as "sub/grand.vhdx: reads as the base" "$d/b512/expected.raw" "$d/b512/sub/grand.vhdx"
rm -f "$tmp/.read.raw"

f="$d/b4k/child.vhdx"
check "4096 child: vhdtool check is clean" "$VHDTOOL" check "$f"
info_is "$f" "4096 child: 4096-byte logical, the parent's 512 physical" "
assert j['logical-sector-size'] == 4096 and d['physical sector size'] == '512', j
assert j['virtual-size'] == 104857600"
layout_ok "$f" differencing 104857600 2097152 4096 512
reads_as "4096 child: reads as the base" "$d/b4k/expected.raw" "$f"
check "4096 child: --physical-sector-size 4096 is taken" \
  "$VHDTOOL" create -p "$d/b4k/base.vhdx" --physical-sector-size 4096 "$d/b4k/c2.vhdx"
info_is "$d/b4k/c2.vhdx" "... and recorded" "assert d['physical sector size'] == '4096'"
refused "a child's logical sector size is its parent's" \
  "$(re "$d/b4k/c3.vhdx"): logical sector size 512: a child has its parent's \\(.*base\\.vhdx: 4096\\)" \
  -p "$d/b4k/base.vhdx" --logical-sector-size 512 "$d/b4k/c3.vhdx"
refused "a child's block size is checked too" \
  "$(re "$d/b4k/c3.vhdx"): block size 524288 is not a power of two between 1 MiB and 256 MiB" \
  -p "$d/b4k/base.vhdx" -b 512K "$d/b4k/c3.vhdx"
[ ! -e "$d/b4k/c3.vhdx" ] && pass "... and made nothing" || fail "c3.vhdx made"

# A child is of its parent's format, whatever its name says.
"$VHDTOOL" create "$d/vbase.vhd" 8M
check "create -p base.vhd child.vhdx: a VHD child" \
  "$VHDTOOL" create -p "$d/vbase.vhd" "$d/vchild.vhdx"
out_has "... with a warning that says why" \
  "vchild\\.vhdx: making a VHD file, the format of its parent .*vbase\\.vhd, whatever the name says"
info_is "$d/vchild.vhdx" "... it is VHD, the child of vbase.vhd" "
assert j['format'] == 'VHD' and j['type'] == 'differencing' and len(j['chain']) == 2, j"
refused "-f vhdx -p base.vhd: refused" \
  "$(re "$d/x.vhdx"): a child must be of its parent's format: .*vbase\\.vhd is a VHD file, not VHDX" \
  -f vhdx -p "$d/vbase.vhd" "$d/x.vhdx"
refused "-f vhd -p base.vhdx: refused" \
  "$(re "$d/x.vhd"): a child must be of its parent's format: .*base\\.vhdx is a VHDX file, not VHD" \
  -f vhd -p "$d/b512/base.vhdx" "$d/x.vhd"
refused "-p a file of neither format" "$(re "$tmp/base.json"): not a VHDX file" \
  -p "$tmp/base.json" "$d/x.vhdx"
[ ! -e "$d/x.vhdx" ] && [ ! -e "$d/x.vhd" ] && pass "... and made nothing" ||
  fail "a refused child was made"

# An existing output is never overwritten, whatever it is.
cp "$d/vbase.vhd" "$d/exists.vhdx"
snap "$d"/b512/*.vhdx "$d"/b4k/*.vhdx "$d/exists.vhdx"
refused "create over an existing file: refused" \
  "$(re "$d/exists.vhdx"): file already exists; refusing to overwrite it" \
  -t fixed "$d/exists.vhdx" 8M
refused "create -p over an existing file: refused" \
  "$(re "$d/b512/child.vhdx"): file already exists" \
  -p "$d/b512/base.vhdx" "$d/b512/child.vhdx"
unchanged "no file was modified (parents included)"
[ -z "$(find "$d" -name '*.tmp*')" ] && pass "no temporary file left behind" ||
  fail "temporary files left: $(find "$d" -name '*.tmp*')"

# ------------------------------------------------------------ convert
# VHD holds 512-byte sectors only and at most 2040 GiB: never rounded.
check_fails "convert a 4096-sector VHDX to VHD: refused, raw suggested" \
  "$(re "$d/o.vhd"): the disk has 4096-byte sectors and VHD only 512-byte ones: convert to VHDX or raw" \
  "$VHDTOOL" convert "$d/b4k/child.vhdx" "$d/o.vhd"
"$VHDTOOL" create "$d/big.vhdx" 3T
check_fails "convert a 3 TiB VHDX to VHD: refused" \
  "$(re "$d/o.vhd"): the disk is 3298534883328 bytes, more than VHD's maximum of 2040 GiB" \
  "$VHDTOOL" convert -f vhd "$d/big.vhdx" "$d/o.vhd"
[ ! -e "$d/o.vhd" ] && pass "... and made nothing" || fail "o.vhd made"
check "convert -f raw of the 4096 chain" \
  "$VHDTOOL" convert -f raw "$d/b4k/child.vhdx" "$d/o.img"
check_same "... reads as the base" "$d/o.img" "$d/b4k/expected.raw"
check_fails "convert -f raw -t fixed: usage" '-f raw has no type' \
  "$VHDTOOL" convert -f raw -t fixed "$d/b4k/child.vhdx" "$d/o2.img"
check_fails "convert -f vhdx -t raw: usage" '-t raw makes a raw image, not a VHDX file' \
  "$VHDTOOL" convert -f vhdx -t raw "$d/b4k/child.vhdx" "$d/o2.img"
# Into VHDX: written through the VHDX writer.
for c in "dynamic b512/child.vhdx b512" "fixed b4k/child.vhdx b4k"; do
  set -- $c
  out="$d/conv-$1-$3.vhdx"
  "$VHDTOOL" convert -t "$1" "$d/$2" "$out" > "$tmp/.out" 2>&1
  st=$?
  [ "$st" -eq 0 ] && pass "convert -t $1 $2 to VHDX" ||
    { fail "convert -t $1 $2 to VHDX (exit $st)"; diag_file "$tmp/.out"; continue; }
  info_is "$out" "... VHDX, $1, the chain's sector size" "
assert j['format'] == 'VHDX' and j['type'] == '$1', j
assert j['logical-sector-size'] == ('$3' == 'b4k' and 4096 or 512)"
  check "... vhdtool check is clean" "$VHDTOOL" check "$out"
  reads_as "... the plugin reads the chain's content" "$d/$3/expected.raw" "$out"
done
unchanged "converts modified none of their sources"

# ------------------------------------------------------------ writing
# New files take writes through the plugin (the VHDX writer): afterwards
# they are still clean, and the independent reader (and qemu-img, for
# what it reads) sees what the plugin serves.  The child's base is
# never written.
w="$d/w"
mkdir "$w"
"$VHDTOOL" create "$w/dyn.vhdx" 300M
"$VHDTOOL" create -t fixed "$w/fixed.vhdx" 100M
"$VHDTOOL" create --logical-sector-size 4096 -b 1M "$w/dyn4k.vhdx" 100M
cp "$d/b512/base.vhdx" "$w/base.vhdx"
"$VHDTOOL" create -p "$w/base.vhdx" "$w/child.avhdx"
snap "$w/base.vhdx"
for f in dyn.vhdx fixed.vhdx dyn4k.vhdx child.avhdx; do
  # The model: what the disk showed before, plus the same writes.
  rm -f "$tmp/m.raw"
  if [ "$f" = child.avhdx ]; then
    cp --sparse=always "$d/b512/expected.raw" "$tmp/m.raw"
  else
    truncate -s "$(serve -r "$w/$f" -- 'nbdinfo --size "$uri"')" "$tmp/m.raw"
  fi
  serve "$w/$f" -- 'nbdsh -u "$uri" -c "
import random
assert not h.is_read_only()
r = random.Random(9)
m = open(\"'"$tmp/m.raw"'\", \"r+b\")
for i in range(24):
    n = r.randrange(1, 40) * 4096
    off = r.randrange(0, (100 << 20) // 4096 - 40) * 4096
    buf = r.randbytes(n)
    h.pwrite(buf, off)
    m.seek(off)
    m.write(buf)
h.flush()
"' > "$tmp/.out" 2>&1
  st=$?
  if [ "$st" -ne 0 ]; then
    fail "$f: writes through the plugin (exit $st)"
    diag_file "$tmp/.out"
    continue
  fi
  pass "$f: writes through the plugin"
  check "$f: still clean for vhdtool check" "$VHDTOOL" check "$w/$f"
  rm -f "$tmp/g.raw" "$tmp/.read.raw"
  reads_as "$f: the plugin reads the writes back" "$tmp/m.raw" "$w/$f"
  $VHDXGEN read "$w/$f" "$tmp/g.raw" > "$tmp/.out" 2>&1 &&
    check_same "$f: so does vhdxgen.py" "$tmp/g.raw" "$tmp/m.raw" ||
    { fail "$f: vhdxgen.py read"; diag_file "$tmp/.out"; }
  case $f in
    dyn.vhdx|fixed.vhdx)
      if [ -n "$have_qemu" ]; then
        check "$f: qemu-img check" qemu-img check -f vhdx "$w/$f"
        check "$f: and qemu-img" qemu-img compare -f vhdx -F raw "$w/$f" "$tmp/m.raw"
      fi ;;
  esac
  rm -f "$tmp/g.raw" "$tmp/m.raw" "$tmp/.read.raw"
done
unchanged "the child's base was never written"

done_testing
