#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Self-check of tests/vhdgen.py, the test oracle: files it writes must be
# read back by independent readers (qemu-img for fixed/dynamic files, libvhdi's
# vhdimount for differencing chains) exactly as its model (expected.raw) says,
# and its "dump" must parse files made by other producers.
#
# TAP output.  Needs qemu-utils; libvhdi-utils + FUSE (as root) for the chain
# cases, which are skipped when FUSE is unavailable.

export PATH=/usr/bin:/bin:$PATH
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
VHDGEN=("/usr/bin/python3" "$srcdir/vhdgen.py")
images=${VHD_IMAGES_DIR:-$srcdir/../../shared/images}

for prog in /usr/bin/python3 qemu-img qemu-io; do
    if ! command -v "$prog" >/dev/null; then
        echo "1..0 # SKIP $prog not installed"
        exit 0
    fi
done

tmp=$(mktemp -d)
mounts=()
cleanup() {
    local m
    for m in ${mounts[@]+"${mounts[@]}"}; do
        umount "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null ||
            fusermount3 -u "$m" 2>/dev/null
    done
    # VHDGEN_KEEP_TMP=1 keeps the files for debugging.
    if [ -n "${VHDGEN_KEEP_TMP:-}" ]; then
        echo "# kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ------------------------------------------------------------ TAP harness
# Each case is a function returning 0 (pass), 77 (skip, reason in
# $tmp/skip) or anything else (fail; its output is shown as a diagnostic).
n=0
run() {
    local desc=$1 rc log
    shift
    n=$((n + 1))
    log=$tmp/log.$n
    rm -f "$tmp/skip"
    "$@" >"$log" 2>&1
    rc=$?
    case $rc in
        0) echo "ok $n - $desc" ;;
        77) echo "ok $n # SKIP $(cat "$tmp/skip")" ;;
        *) echo "not ok $n - $desc"; sed 's/^/# /' "$log" ;;
    esac
}
skip() { echo "$*" >"$tmp/skip"; return 77; }

# gen CASE: spec on stdin -> $tmp/CASE/spec.json, files in $tmp/CASE/out.
gen() {
    mkdir -p "$tmp/$1"
    cat >"$tmp/$1/spec.json"
    "${VHDGEN[@]}" make "$tmp/$1/spec.json" "$tmp/$1/out"
}

# qemu_cmp DIR FILE: qemu's view of FILE must equal DIR/expected.raw.
qemu_cmp() {
    qemu-img convert -f vpc -O raw "$1/$2" "$1/qemu.raw" &&
        cmp "$1/qemu.raw" "$1/expected.raw"
}

# ------------------------------------------------------------ FUSE helpers
# libvhdi 20210425 has two read bugs that matter here (read from its source,
# libvhdi_block_descriptor.c / libvhdi_file.c, and seen on our files):
#  A. The bitmap decoder computes bit i of a byte as byte >> (7 - i) without
#     "& 1", so once a bit is set every LATER bit of the same byte counts as
#     set: those sectors read the layer's own data area (zeros, or stale
#     junk) instead of falling through to the parent / reading as zero.
#  B. It decodes the whole 512-byte bitmap even when the block has fewer
#     sectors, so the last clear run "extends" past the block end; a single
#     read that starts in it and crosses into the next block(s) is served
#     from the parent.  Only for block sizes below 2 MiB.
# B is avoided by reading the FUSE file with one 512-byte O_DIRECT read per
# sector.  A is emulated exactly below: a mismatch consisting only of
# A-shaped sectors is reported as a SKIP, anything else fails.
fuse_state=unknown   # unknown | yes | the reason FUSE is not usable

fuse_usable() {
    if [ "$fuse_state" = unknown ]; then
        local d=$tmp/fuseprobe
        mkdir -p "$d/mnt"
        if [ ! -c /dev/fuse ] || ! command -v vhdimount >/dev/null; then
            fuse_state="no fuse"
        # Probe with a qemu-made image, so a failure here is the
        # environment's fault, not vhdgen's.
        elif ! qemu-img create -q -f vpc "$d/p.vhd" 1M ||
            ! vhdimount_to "$d/p.vhd" "$d/mnt" >/dev/null 2>&1; then
            fuse_state="no fuse (vhdimount cannot mount)"
        elif ! dd if="$d/mnt/vhdi1" of=/dev/null bs=512 count=1 \
            iflag=direct status=none 2>/dev/null; then
            fuse_state="no O_DIRECT reads on fuse"
        else
            fuse_state=yes
        fi
    fi
    [ "$fuse_state" = yes ]
}

# vhdimount_to IMAGE MNT: mount, remember for cleanup, wait for vhdi1.
vhdimount_to() {
    vhdimount "$1" "$2" || return 1
    mounts+=("$2")
    local i
    for i in $(seq 50); do
        [ -e "$2/vhdi1" ] && return 0
        sleep 0.1
    done
    echo "vhdimount: $2/vhdi1 never appeared"
    return 1
}

# Name of the last vhdi* file (the top layer's view) under MNT.
last_vhdi() { ls "$1" | grep '^vhdi[0-9]*$' | sort -V | tail -n 1; }

# libvhdi_cmp CASEDIR: mount CASEDIR/out/<top>, read the top view sector by
# sector and compare it with expected.raw (see bugs A and B above).
libvhdi_cmp() {
    local dir=$1 mnt=$1/mnt top last
    fuse_usable || { skip "$fuse_state"; return; }
    top=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["top"])' \
        "$dir/out/manifest.json") || return 1
    mkdir -p "$mnt"
    vhdimount_to "$dir/out/$top" "$mnt" || return 1
    last=$(last_vhdi "$mnt")
    dd if="$mnt/$last" of="$dir/libvhdi.raw" bs=512 iflag=direct \
        status=none || return 1
    cmp "$dir/libvhdi.raw" "$dir/out/expected.raw" && return 0
    /usr/bin/python3 - "$dir/libvhdi.raw" "$dir/out/expected.raw" \
        "$dir/out/manifest.json" <<'EOF' || return 1
import json, sys

got_f, exp_f = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
man = json.load(open(sys.argv[3]))
layers = {l["file"]: l for l in man["layers"]}
for l in layers.values():
    l["held_set"] = {s for first, n in l["held"] for s in range(first, first + n)}
chain, l = [], layers[man["top"]]
while l is not None:
    chain.append(l)
    l = layers[l["parent"]] if l["type"] == "differencing" else None

def bug_a(sector):
    """What libvhdi returns for sector if bug A decides it, else None."""
    for l in chain:
        if sector in l["held_set"] or l["type"] == "fixed":
            return None
        spb = l["block_size"] // 512
        if str(sector // spb) in l.get("blocks", {}):
            byte_start = sector - (sector % spb) % 8
            if any(t in l["held_set"] for t in range(byte_start, sector)):
                return bytes([l["stale_fill"]]) * 512
        if l["type"] == "dynamic":
            return None
    return None

known = bad = sector = 0
while True:
    got, exp = got_f.read(512), exp_f.read(512)
    if not got and not exp:
        break
    if got != exp:
        if got == bug_a(sector):
            known += 1
        else:
            bad += 1
            if bad <= 20:
                print("sector %d: libvhdi %r... model %r..."
                      % (sector, got[:16], exp[:16]))
    sector += 1
print("differing sectors: %d explained by libvhdi bug A, %d not" % (known, bad))
sys.exit(1 if bad else 0)
EOF
    skip "libvhdi disagrees (known bug)"
}

# ------------------------------------------------------------ cases

case_qemu_dynamic() {
    gen dyn <<'EOF' || return 1
{ "size": 8388608, "seed": 1, "layers": [
  { "file": "dyn.vhd", "type": "dynamic", "creator": "win ",
    "writes": [[0, 4096], [1000, 10], [2097152, 512], [2100000, 70000],
               [8388096, 512], [6291456, 1024, 0], [6292480, 512, 171]],
    "full_blocks": [1] } ] }
EOF
    qemu_cmp "$tmp/dyn/out" dyn.vhd
}

# Odd layout: BAT far out and oversized, blocks reversed with gaps and 4K
# alignment, 64 KiB blocks, partial last block.
case_qemu_dynamic_layout() {
    gen dynlay <<'EOF' || return 1
{ "size": 1050112, "seed": 7, "layers": [
  { "file": "lay.vhd", "block_size": 65536,
    "writes": [[0, 512], [65536, 131072], [300000, 9000], [1049600, 512]],
    "full_blocks": [7, 16],
    "layout": { "bat_offset": 8192, "bat_extra_entries": 5,
                "block_order": "reverse", "gap_sectors": 3,
                "align_data_4k": true } } ] }
EOF
    qemu_cmp "$tmp/dynlay/out" lay.vhd
}

# Tiny blocks (bitmap of 1 byte padded to a sector), shuffled, first block
# only at data_start (a gap after the BAT).
case_qemu_dynamic_small_blocks() {
    gen dynsmall <<'EOF' || return 1
{ "size": 262144, "seed": 9, "block_size": 4096, "layers": [
  { "file": "small.vhd",
    "writes": [[0, 100], [4096, 4096], [8704, 1], [100000, 30000],
               [261632, 512]],
    "layout": { "block_order": "shuffle", "data_start": 65536 } } ] }
EOF
    qemu_cmp "$tmp/dynsmall/out" small.vhd
}

case_qemu_fixed() {
    gen fixed <<'EOF' || return 1
{ "size": 3146240, "seed": 2, "layers": [
  { "file": "fixed.vhd", "type": "fixed",
    "writes": [[0, 512], [1000000, 5000], [3145728, 512]] } ] }
EOF
    local f=$tmp/fixed/out/fixed.vhd
    [ "$(stat -c %s "$f")" = $((3146240 + 512)) ] || return 1
    qemu_cmp "$tmp/fixed/out" fixed.vhd
}

# qemu falls back to the footer copy at offset 0 when the EOF one is missing.
case_qemu_no_eof_footer() {
    gen noeof <<'EOF' || return 1
{ "size": 4194304, "layers": [
  { "file": "noeof.vhd", "writes": [[4096, 8192]],
    "layout": { "no_eof_footer": true } } ] }
EOF
    qemu_cmp "$tmp/noeof/out" noeof.vhd
}

# 511-byte footer: no reader here accepts it, so check the bytes directly.
case_footer511_fixed() {
    gen f511 <<'EOF' || return 1
{ "size": 1048576, "layers": [
  { "file": "f511.vhd", "type": "fixed", "writes": [[512, 512]],
    "layout": { "footer511": true } } ] }
EOF
    local d=$tmp/f511/out
    [ "$(stat -c %s "$d/f511.vhd")" = $((1048576 + 511)) ] || return 1
    [ "$(tail -c 511 "$d/f511.vhd" | head -c 8)" = conectix ] || return 1
    head -c 1048576 "$d/f511.vhd" | cmp - "$d/expected.raw" || return 1
    "${VHDGEN[@]}" dump "$d/f511.vhd" | grep -qx 'footer_source: eof511'
}

# Checksums: qemu refuses a bad footer checksum (so ours are really
# checked when they are good).
case_qemu_bad_checksum() {
    gen badck <<'EOF' || return 1
{ "size": 1048576, "layers": [
  { "file": "bad.vhd", "writes": [[0, 512]], "bad_footer_checksum": true } ] }
EOF
    if qemu-img info -f vpc "$tmp/badck/out/bad.vhd"; then
        echo "qemu accepted a bad footer checksum"
        return 1
    fi
    "${VHDGEN[@]}" dump "$tmp/badck/out/bad.vhd" |
        grep -qx 'footer.checksum_ok: False'
}

# CHS geometry: for sizes qemu-img creates (it rounds up to a CHS-exact
# size, or saturates at 65535/16/255), our algorithm applied to the size
# must give qemu's geometry; and with creator "vpc " qemu sizes a vhdgen
# disk by our CHS fields (100 MiB -> 1003/12/17 = 104761344 bytes).
case_chs_geometry() {
    local d=$tmp/chs size g want vsize
    mkdir -p "$d"
    for size in 1M 100M 200M 500M 20G 40G 200G; do
        qemu-img create -q -f vpc "$d/q.vhd" "$size" || return 1
        "${VHDGEN[@]}" dump "$d/q.vhd" >"$d/dump.txt" || return 1
        g=$(sed -n 's/^footer.geometry: //p' "$d/dump.txt")
        want=$(sed -n 's/^footer.spec_geometry: //p' "$d/dump.txt")
        echo "$size: qemu $g, vhdgen $want"
        [ -n "$g" ] && [ "$g" = "$want" ] || return 1
    done
    gen chs <<'EOF' || return 1
{ "size": 104857600, "layers": [ { "file": "vpc.vhd", "creator": "vpc " } ] }
EOF
    vsize=$(qemu-img info -f vpc --output=json "$d/out/vpc.vhd" |
        sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    echo "qemu virtual size of a vpc-creator 100 MiB disk: $vsize"
    [ "$vsize" = 104761344 ]
}

# Independent (not vhdgen's) checksum of the dynamic header: valid normally,
# invalid with bad_header_checksum.  qemu does not check this one.
case_header_checksum() {
    gen hck <<'EOF' || return 1
{ "size": 1048576, "layers": [
  { "file": "good.vhd", "writes": [[0, 512]] },
  { "file": "bad.vhd", "type": "differencing", "bad_header_checksum": true } ] }
EOF
    /usr/bin/python3 - "$tmp/hck/out/good.vhd" "$tmp/hck/out/bad.vhd" <<'EOF'
import struct, sys
def header_ok(path):
    with open(path, "rb") as f:
        f.seek(512)
        h = bytearray(f.read(1024))
    stored = struct.unpack(">I", h[36:40])[0]
    h[36:40] = b"\0\0\0\0"
    return h[:8] == b"cxsparse" and stored == (~sum(h) & 0xffffffff)
print(header_ok(sys.argv[1]), header_ok(sys.argv[2]))
sys.exit(0 if header_ok(sys.argv[1]) and not header_ok(sys.argv[2]) else 1)
EOF
}

# Locator entries and data, parsed independently: code, byte or sector
# count space, length, sector-aligned offset, encoding, padding, and the
# parent name in UTF-16BE.
case_locators_raw() {
    gen loc <<'EOF' || return 1
{ "size": 1048576, "layers": [
  { "file": "parents/base.vhd" },
  { "file": "child.vhd", "type": "differencing",
    "parent_name": "C:\\Fo\u00f6\\base.vhd",
    "locators": [
      { "code": "W2ku", "path": "C:\\Fo\u00f6\\base.vhd" },
      { "code": "W2ru", "path": "..\\parents\\base.vhd", "space": 65536 },
      { "code": "Wi2r", "path": ".\\parents\\base.vhd",
        "space": 1024, "space_in_sectors": true },
      { "code": "MacX", "path": "file://./parents/base.vhd" } ],
    "layout": { "bat_offset": 8192 } } ] }
EOF
    /usr/bin/python3 - "$tmp/loc/out/child.vhd" <<'EOF'
import struct, sys
want = [(b"W2ku", "C:\\Fo\u00f6\\base.vhd".encode("utf-16-le"), 512),
        (b"W2ru", "..\\parents\\base.vhd".encode("utf-16-le"), 65536),
        (b"Wi2r", b".\\parents\\base.vhd", 2),
        (b"MacX", b"file://./parents/base.vhd", 512)]
data = open(sys.argv[1], "rb").read()
hdr = data[512:1536]
assert struct.unpack(">Q", hdr[16:24])[0] == 8192, "BAT offset"
name = hdr[64:576].decode("utf-16-be").rstrip("\0")
assert name == "C:\\Fo\u00f6\\base.vhd", name
used = [(0, 1536), (8192, 8704)]
for slot in range(8):
    code, space, length, res, off = struct.unpack(">4sIIIQ", hdr[576 + 24 * slot:600 + 24 * slot])
    if slot >= len(want):
        assert code == b"\0" * 4 and space == length == off == 0, slot
        continue
    wcode, wdata, wspace = want[slot]
    assert (code, space, length, res) == (wcode, wspace, len(wdata), 0), (slot, code, space, length)
    assert off % 512 == 0 and data[off:off + length] == wdata, slot
    nbytes = space * 512 if space < 512 else space
    assert data[off + length:off + nbytes] == bytes(nbytes - length), "padding"
    for s, e in used:
        assert off + nbytes <= s or off >= e, "overlap"
    used.append((off, off + nbytes))
print("ok")
EOF
}

# A wrong parent id is really wrong: libvhdi refuses the chain.
case_wrong_parent_id() {
    gen wrongid <<'EOF' || return 1
{ "size": 1048576, "layers": [
  { "file": "base.vhd", "writes": [[0, 4096]] },
  { "file": "child.vhd", "type": "differencing", "wrong_parent_id": true,
    "writes": [[512, 512]] } ] }
EOF
    fuse_usable || { skip "$fuse_state"; return; }
    mkdir -p "$tmp/wrongid/mnt"
    if vhdimount_to "$tmp/wrongid/out/child.vhd" "$tmp/wrongid/mnt"; then
        echo "vhdimount accepted a wrong parent id"
        return 1
    fi
    return 0
}

# 511-byte EOF footer on a dynamic disk: qemu reads the copy at offset 0.
case_footer511_dynamic() {
    gen d511 <<'EOF' || return 1
{ "size": 2097152, "block_size": 524288, "layers": [
  { "file": "d511.vhd", "writes": [[0, 512], [1048576, 70000]],
    "layout": { "footer511": true, "gap_sectors": 2 } } ] }
EOF
    local f=$tmp/d511/out/d511.vhd
    [ "$(tail -c 511 "$f" | head -c 8)" = conectix ] || return 1
    [ $(( $(stat -c %s "$f") % 512 )) = 511 ] || return 1
    qemu_cmp "$tmp/d511/out" d511.vhd
}

# Negative control: the comparison really notices a changed data byte.
case_negative_control() {
    local d=$tmp/dyn/out
    [ -f "$d/dyn.vhd" ] || return 1
    cp "$d/dyn.vhd" "$tmp/dyn/corrupt.vhd"
    # Block 0 is the first block (ascending order, right after the BAT at
    # 1536 + 512): its data starts at sector 4 + 1 bitmap sector.
    printf '\x55' | dd of="$tmp/dyn/corrupt.vhd" bs=1 seek=$((5 * 512 + 7)) \
        conv=notrunc status=none
    qemu-img convert -f vpc -O raw "$tmp/dyn/corrupt.vhd" "$tmp/dyn/c.raw" ||
        return 1
    ! cmp -s "$tmp/dyn/c.raw" "$d/expected.raw"
}

# Same spec twice: same guest data (ids and timestamps may differ); the
# layers' data differ from each other.
case_deterministic() {
    local s='{ "size": 1048576, "seed": 5, "layers": [
      { "file": "a.vhd", "writes": [[0, 65536]] },
      { "file": "b.vhd", "type": "differencing", "writes": [[0, 65536]],
        "expected": "b.raw" } ] }'
    echo "$s" | gen det1 || return 1
    echo "$s" | gen det2 || return 1
    cmp "$tmp/det1/out/expected.raw" "$tmp/det2/out/expected.raw" || return 1
    qemu-img convert -f vpc -O raw "$tmp/det1/out/a.vhd" "$tmp/det1/a.raw" ||
        return 1
    ! cmp -s "$tmp/det1/a.raw" "$tmp/det1/out/expected.raw"
}

# libvhdi honours the bitmap of a dynamic disk: stale junk under clear bits
# must read as zero.  Held runs end on 8-sector boundaries (bug A free) but
# start mid-byte, so a wrong bit order would show.
case_libvhdi_dynamic_stale() {
    gen stale <<'EOF' || return 1
{ "size": 4194304, "seed": 4, "layers": [
  { "file": "stale.vhd", "writes": [[2560, 1536], [2999808, 2560]],
    "layout": { "stale_fill": 171 } } ] }
EOF
    libvhdi_cmp "$tmp/stale"
}

# The chain from the brief: dynamic base + two differencing children with
# overlapping, unaligned writes and Windows-style locators.  May hit bug A.
case_libvhdi_chain() {
    gen chain <<'EOF' || return 1
{ "size": 8388608, "seed": 11, "layers": [
  { "file": "base.vhd", "type": "dynamic",
    "writes": [[0, 65536], [2097152, 1048576], [6291456, 4096],
               [8384512, 4096]] },
  { "file": "mid.vhd", "type": "differencing",
    "writes": [[4096, 4096], [2098176, 512], [2200000, 100000],
               [4194304, 8192]],
    "locators": [ { "code": "W2ku", "path": "C:\\VMs\\base.vhd" },
                  { "code": "W2ru", "path": ".\\base.vhd" } ] },
  { "file": "top.vhd", "type": "differencing",
    "writes": [[6144, 4096], [2098176, 1024], [2250000, 512],
               [4198400, 512, 0], [7000000, 512]],
    "locators": [ { "code": "W2ru", "path": ".\\mid.vhd" },
                  { "code": "W2ku", "path": "C:\\VMs\\mid.vhd" },
                  { "code": "MacX", "path": "file://./mid.vhd" } ] } ] }
EOF
    libvhdi_cmp "$tmp/chain"
}

# A chain libvhdi must read exactly: every held run ends on an 8-sector
# boundary (bug A free) but most start mid-byte, so bit order, "clear bit =
# parent" and "stale data under a clear bit is ignored" are all checked.
# Includes an explicit zero write masking the parent.
case_libvhdi_chain_exact() {
    gen exact <<'EOF' || return 1
{ "size": 6291456, "seed": 13, "layers": [
  { "file": "base.vhd", "type": "dynamic",
    "writes": [[0, 2097152], [4194304, 1048576]],
    "layout": { "stale_fill": 85 } },
  { "file": "mid.vhd", "type": "differencing",
    "writes": [[512, 3584], [10240, 6144], [2099200, 2048],
               [4195840, 2560, 0]],
    "layout": { "stale_fill": 204 },
    "locators": [ { "code": "W2ru", "path": ".\\base.vhd" } ] },
  { "file": "top.vhd", "type": "differencing",
    "writes": [[3584, 512], [12800, 3584], [2101248, 4096],
               [5242368, 512]],
    "layout": { "stale_fill": 119 },
    "locators": [ { "code": "W2ru", "path": ".\\mid.vhd" } ] } ] }
EOF
    libvhdi_cmp "$tmp/exact"
}

# libvhdi sees the right identities: top's parent id = mid's unique id,
# size and type as written (cross-checks our field offsets and UUIDs).
case_vhdiinfo_ids() {
    local d=$tmp/chain/out info mid_id
    [ -f "$d/top.vhd" ] || return 1
    info=$(vhdiinfo "$d/top.vhd") || return 1
    echo "$info"
    mid_id=$("${VHDGEN[@]}" dump "$d/mid.vhd" |
        sed -n 's/^footer.unique_id: //p')
    echo "mid unique id: $mid_id"
    echo "$info" | grep -q "Disk type.*: Differential" &&
        echo "$info" | grep -q "(8388608 bytes)" &&
        echo "$info" | grep -q "Parent identifier.*: $mid_id\$" &&
        echo "$info" | grep -q "Parent filename.*: mid.vhd\$"
}

# Every layout knob turned: fixed base, 64 KiB blocks (padded bitmaps),
# partial last block, BAT at 8192 with locators before it, BAT after the
# locators, extra BAT entries, shuffled/reversed blocks, gaps, 4K-aligned
# data, sector-count locator space.  Bug A free, so it must match exactly.
case_libvhdi_chain_layout() {
    gen chain2 <<'EOF' || return 1
{ "size": 1311232, "seed": 12, "block_size": 65536, "layers": [
  { "file": "base.vhd", "type": "fixed",
    "writes": [[0, 1311232]] },
  { "file": "mid.vhd", "type": "differencing",
    "writes": [[0, 4096], [70000, 3728], [1310720, 512]],
    "full_blocks": [4],
    "locators": [ { "code": "W2ku", "path": "C:\\x\\base.vhd", "space": 4096 },
                  { "code": "W2ru", "path": ".\\base.vhd", "space": 65536 } ],
    "layout": { "bat_offset": 8192, "align_data_4k": true,
                "block_order": "shuffle", "gap_sectors": 7,
                "stale_fill": 238 } },
  { "file": "top.vhd", "type": "differencing",
    "writes": [[3584, 512], [65536, 4096], [327680, 65536],
               [1000448, 3072]],
    "locators": [ { "code": "Wi2r", "path": ".\\mid.vhd" },
                  { "code": "W2ru", "path": ".\\mid.vhd",
                    "space": 1024, "space_in_sectors": true } ],
    "layout": { "bat_offset": "after_locators", "block_order": "reverse",
                "bat_extra_entries": 3 } } ] }
EOF
    libvhdi_cmp "$tmp/chain2"
}

# dump parses a foreign (qemu-made) dynamic VHD and agrees with qemu.
case_dump_qemu_file() {
    local d=$tmp/qdump f vsize
    mkdir -p "$d"
    f=$d/q.vhd
    qemu-img create -q -f vpc "$f" 10M || return 1
    qemu-io -c 'write -P 0xab 0 512' -c 'write -P 0xcd 4195328 4096' "$f" ||
        return 1
    vsize=$(qemu-img info -f vpc --output=json "$f" |
        sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    "${VHDGEN[@]}" dump --json "$f" >"$d/dump.json" || return 1
    "${VHDGEN[@]}" dump "$f" || return 1
    /usr/bin/python3 - "$d/dump.json" "$vsize" <<'EOF'
import json, sys
info, vsize = json.load(open(sys.argv[1])), int(sys.argv[2])
ft, hd, bat = info["footer"], info["header"], info["bat"]
checks = {
    "footer source": info["footer_source"] == "eof",
    "cookie": ft["cookie"] == "conectix",
    "creator": ft["creator"] == "qemu",
    "type": ft["disk_type"] == "dynamic",
    "footer checksum": ft["checksum_ok"],
    "size": ft["current_size"] == vsize,
    "qemu's CHS covers the size": ft["chs_size"] == vsize,
    "copy at 0": info["footer_copy_at_0"] == "identical",
    "header cookie": hd["cookie"] == "cxsparse",
    "header checksum": hd["checksum_ok"],
    "header data offset": hd["data_offset"] == "0xffffffffffffffff",
    "table offset": hd["table_offset"] == 1536,
    "block size": hd["block_size"] == 2097152,
    "entries": bat["entries"] == bat["entries_for_size"] == -(-vsize // 2097152),
    "allocated": [b["index"] for b in bat["blocks"]] == [0, 2],
    "qemu bitmaps all ones": all(b["bits_set"] == 4096 for b in bat["blocks"]),
}
bad = [k for k, v in checks.items() if not v]
print("failed checks:", bad)
sys.exit(1 if bad else 0)
EOF
}

# dump parses real Windows files (shared sample images), if present.
case_dump_windows_files() {
    local d=$tmp/win
    [ -f "$images/win10-dynamic.vhd.gz" ] &&
        [ -f "$images/dfvfs-fat-differential.vhd.gz" ] ||
        { skip "sample images not found in $images"; return; }
    mkdir -p "$d"
    gunzip -c "$images/win10-dynamic.vhd.gz" >"$d/dyn.vhd" || return 1
    gunzip -c "$images/dfvfs-fat-differential.vhd.gz" >"$d/diff.vhd" || return 1
    "${VHDGEN[@]}" dump "$d/dyn.vhd" >"$d/dyn.txt" || return 1
    "${VHDGEN[@]}" dump "$d/diff.vhd" >"$d/diff.txt" || return 1
    cat "$d/dyn.txt" "$d/diff.txt"
    grep -qx 'footer.creator: win ' "$d/dyn.txt" &&
        grep -qx 'header.checksum_ok: True' "$d/dyn.txt" &&
        grep -qx 'footer.current_size: 10485760' "$d/dyn.txt" &&
        grep -qx 'footer.disk_type: differencing' "$d/diff.txt" &&
        grep -qF "header.parent_name: C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd" "$d/diff.txt" &&
        grep -q "W2ku .*path='C:\\\\\\\\Projects" "$d/diff.txt" &&
        grep -q "W2ru " "$d/diff.txt"
}

# Bad specs fail cleanly: exit 1, a message, no traceback.
case_bad_spec() {
    local out rc
    mkdir -p "$tmp/bad"
    echo '{ "size": 1000, "layers": [ { "file": "x.vhd" } ] }' \
        >"$tmp/bad/spec.json"
    out=$("${VHDGEN[@]}" make "$tmp/bad/spec.json" "$tmp/bad/out" 2>&1)
    rc=$?
    echo "rc=$rc: $out"
    [ $rc = 1 ] && echo "$out" | grep -q "multiple of 512" &&
        ! echo "$out" | grep -q Traceback || return 1
    echo '{ "size": 1048576, "layers": [ { "file": "x.vhd",
           "type": "differencing" } ] }' >"$tmp/bad/spec.json"
    out=$("${VHDGEN[@]}" make "$tmp/bad/spec.json" "$tmp/bad/out" 2>&1)
    rc=$?
    echo "rc=$rc: $out"
    [ $rc = 1 ] && echo "$out" | grep -q "parent"
}

cases=(
    "qemu reads a vhdgen dynamic disk as modelled:case_qemu_dynamic"
    "qemu: dynamic, BAT@8192, extra entries, reverse+gaps+4K, partial block:case_qemu_dynamic_layout"
    "qemu: dynamic, 4 KiB blocks, shuffled, data_start:case_qemu_dynamic_small_blocks"
    "qemu reads a vhdgen fixed disk as modelled:case_qemu_fixed"
    "qemu: dynamic without EOF footer (copy at 0):case_qemu_no_eof_footer"
    "fixed disk with a 511-byte footer:case_footer511_fixed"
    "qemu rejects bad_footer_checksum, dump notices:case_qemu_bad_checksum"
    "CHS geometry agrees with qemu:case_chs_geometry"
    "dynamic header checksum, checked independently:case_header_checksum"
    "locator entries and data as specified:case_locators_raw"
    "libvhdi refuses a wrong_parent_id chain:case_wrong_parent_id"
    "qemu: dynamic with a 511-byte EOF footer:case_footer511_dynamic"
    "negative control: a corrupted data byte is detected:case_negative_control"
    "expected.raw is deterministic, layers differ:case_deterministic"
    "libvhdi: dynamic bitmap honoured over stale data:case_libvhdi_dynamic_stale"
    "libvhdi: 3-layer dynamic+diff+diff chain as modelled:case_libvhdi_chain"
    "libvhdi: chain with mid-byte runs, zero mask, stale data, exact:case_libvhdi_chain_exact"
    "vhdiinfo: parent id, name, size, type:case_vhdiinfo_ids"
    "libvhdi: fixed+diff+diff chain, odd layouts:case_libvhdi_chain_layout"
    "dump parses a qemu-made dynamic VHD:case_dump_qemu_file"
    "dump parses Windows-made VHDs:case_dump_windows_files"
    "bad specs fail with exit 1 and a message:case_bad_spec"
)

echo "1..${#cases[@]}"
for c in "${cases[@]}"; do
    run "${c%:*}" "${c##*:}"
done
