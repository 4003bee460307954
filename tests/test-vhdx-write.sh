#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Writing through the plugin into VHDX files (MS-VHDX; the rules are in
# the project's VHDX notes, sections 3, 4.9, 4.10, 5.1, 6.4, 6.5).
#
# Every file starts as made by the independent generator
# (tests/vhdxgen.py); every write, zero and trim goes through
# tests/nbdops.py, which applies it to a raw model too; and after every
# session (nbdkit exited) vhdx_written_ok (functions.sh) compares the
# plugin, vhdxgen's own reader, qemu-img (512-byte sectors, no parent)
# and vhdtool check with the model.  On top of the bytes, each case
# asserts what the file must look like (tests/vhdxexpect.py, reading the
# BAT with vhdxgen's reader):
#   - dynamic: a written block becomes FULLY_PRESENT (rest zero); a
#     whole-block zero makes it ZERO with file offset 0; a partial zero
#     writes zeros.  Fixed: zeros in place, every block stays
#     FULLY_PRESENT at its offset.
#   - differencing: a write into a NOT_PRESENT block makes it
#     PARTIALLY_PRESENT with exactly the written sectors' bitmap bits
#     (FULLY_PRESENT accepted once every bit would be set); into a
#     ZERO / UNMAPPED / UNDEFINED block, FULLY_PRESENT with zero fill; a
#     whole-block zero makes it ZERO (not the parent), a partial one
#     writes zeros with bits set.
#   - 512 and 4096-byte logical sectors; 1 MiB and 32 MiB blocks;
#     chunks past 4 GiB (sparse files); unaligned heads and tails;
#     zero-length requests; the last, partial block.
#   - GUIDs: FileWriteGuid and DataWriteGuid change in a session that
#     writes (zeroes, trims), DataWriteGuid once per session; a writable
#     session that only reads changes no byte of the file; the log is
#     empty after a clean exit.
#   - a pending log (made by vhdxgen): a writable session that only
#     reads replays it into the file (FileWriteGuid changes,
#     DataWriteGuid does not, the file then reads right without a
#     replay); a read-only one changes nothing; parents with a pending
#     log are never written; a child stays linked to a parent whose log
#     was replayed, and is refused (parent id mismatch) once the parent
#     is written.
#   - parents are never modified (sha256).

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
need_nbd_clients

M=$((1024 * 1024))
K=1024
G=$((1024 * M))
ZG=00000000-0000-0000-0000-000000000000
OPS="$PY $top_srcdir/tests/nbdops.py --trim-sectors"
cd "$tmp"

# ------------------------------------------------------------ helpers

# gen NAME SPEC-JSON: make the files of SPEC in NAME/ (one check); the
# model NAME/model.raw starts as the generator's expected.raw.
gen () {
  mkdir -p "$1"
  printf '%s\n' "$2" > "$1.json"
  vhdxgen_make "vhdxgen made $1" "$1.json" "$1"
  cp --sparse=always "$1/expected.raw" "$1/model.raw" 2> /dev/null || :
}

# ids FILE: remember FILE's identity (current header) in fwg, dwg, seq.
ids () {
  fwg=$(vhdx_id "$1" file_write_guid)
  dwg=$(vhdx_id "$1" data_write_guid)
  seq=$(vhdx_id "$1" sequence_number)
}

# session NAME FILE MODEL OPS [PLUGIN-ARGS...]: serve FILE read-write and
# apply OPS (lines for tests/nbdops.py; ops_args: its options) to the
# export and to MODEL; then
# (nbdkit gone) FILE's identity must show a writing session: a new
# FileWriteGuid and DataWriteGuid, a higher header sequence number.
session () {
  local name=$1 file=$2 model=$3 ops=$4 fwg0 dwg0 seq0
  shift 4
  printf '%s\n' "$ops" > "$tmp/.ops"
  ids "$file"
  fwg0=$fwg dwg0=$dwg seq0=$seq
  rm -f "$model.log"
  check "$name: the requests succeed and read back" \
    serve "$file" "$@" -- "$OPS ${ops_args:-} \"\$uri\" $model $tmp/.ops"
  ids "$file"
  check "$name: FileWriteGuid changed" test "$fwg" != "$fwg0"
  check "$name: DataWriteGuid changed" test "$dwg" != "$dwg0"
  check "$name: the current header's sequence number grew" \
    test "${seq:-0}" -gt "${seq0:-0}"
}

# expect NAME FILE ASSERTION...: tests/vhdxexpect.py.
expect () {
  local name=$1
  shift
  check "$name: BAT states and bitmap bits" $VHDXEXPECT "$@"
}

# readonly_session NAME FILE [ARGS...]: a writable session (no -r) whose
# client only reads: not one byte of FILE changes.
readonly_session () {
  local name=$1 file=$2
  shift 2
  snap "$file"
  rm -f "$tmp/.ro.raw"
  check "$name: a writable session that only reads" \
    serve "$file" "$@" -- "nbdcopy \"\$uri\" $tmp/.ro.raw"
  unchanged "$name: ... changes no byte of the file (sha256)"
}

# ------------------------------------------------------------ dynamic, 512

# 1 MiB blocks; the size leaves a last block of 3 sectors.  The
# generator puts data in blocks 2 and 9.
S=$((10 * M + 1536))
gen dyn "{ \"size\": $S, \"block_size\": $M, \"seed\": 11, \"layers\": [
  { \"file\": \"dyn.vhdx\", \"writes\": [[$((2 * M)), 100000],
                                        [$((9 * M + 512)), 4096]] } ] }"
session "dynamic 512" dyn/dyn.vhdx dyn/model.raw '
w 1000 5000 1
w M-700 1400 2
w 3*M 100000 3
z 3*M M
z 4*M M
w 5*M 3*M 4
z 5*M+512 2*M+1024
w 2*M+50000 10 5
W 2*M+M-1 1 6
w SIZE-1000 1000 7
v
f
v'
expect "dynamic 512" dyn/dyn.vhdx 0=full 1=full 2=full 3=zero 4=zero\|np \
  5=full 6=zero 7=full 8=np 9=full last=full others=np sb=
vhdx_written_ok "dynamic 512" dyn/dyn.vhdx dyn/model.raw
readonly_session "dynamic 512" dyn/dyn.vhdx

# Zero-length requests (libnbd's strict mode relaxed), at 0, inside and
# at the end of the disk: refused or ignored, the connection stays
# usable, the file does not change.
snap dyn/dyn.vhdx
check "zero-length requests: the connection stays usable" \
  serve dyn/dyn.vhdx -- '/usr/bin/python3 -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ZERO_SIZE)
size = h.get_size()
for off in (0, 5000, size - 1, size):
    for f in (lambda: h.pwrite(b\"\", off), lambda: h.zero(0, off),
              lambda: h.trim(0, off), lambda: h.pread(0, off)):
        try:
            f()
        except nbd.Error:
            pass
        assert h.aio_is_ready()
h.flush()
h.shutdown()
" "$uri"'
unchanged "zero-length requests: no byte of the file changed"

# A zero-only and a trim-only session are user-visible writes too.
session "dynamic 512, only a zero" dyn/dyn.vhdx dyn/model.raw '
z 9*M M'
expect "dynamic 512, only a zero" dyn/dyn.vhdx 9=zero
vhdx_written_ok "dynamic 512, only a zero" dyn/dyn.vhdx dyn/model.raw
if serve dyn/dyn.vhdx -- 'nbdinfo --can trim "$uri"' 2> /dev/null; then
  session "dynamic 512, only a trim" dyn/dyn.vhdx dyn/model.raw '
t 2*M M'
  vhdx_written_ok "dynamic 512, only a trim" dyn/dyn.vhdx dyn/model.raw
else
  skip "dynamic 512: the plugin does not advertise trim"
fi

# DataWriteGuid changes once per session, before the first write is
# acknowledged, FileWriteGuid too: read the headers from the file while
# the session goes on (after flushes).
ids dyn/dyn.vhdx
check "one session: DataWriteGuid changes once, FileWriteGuid once" \
  serve dyn/dyn.vhdx -- '/usr/bin/python3 -c "
import json, nbd, subprocess, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
def ids():
    out = subprocess.run(sys.argv[2].split() + [\"ids\", sys.argv[3]],
                         check=True, capture_output=True).stdout
    j = json.loads(out)
    return j[\"file_write_guid\"], j[\"data_write_guid\"]
f0, d0 = sys.argv[4], sys.argv[5]
h.pwrite(b\"a\" * 4096, 0); h.flush()
f1, d1 = ids()
assert d1 != d0, \"DataWriteGuid did not change before the first write\"
assert f1 != f0, \"FileWriteGuid did not change before the first write\"
h.pwrite(b\"b\" * 512, 7 << 20); h.zero(1 << 20, 6 << 20); h.flush()
assert ids() == (f1, d1), \"a GUID changed again in the same session\"
h.shutdown()
" "$uri" "'"$VHDXGEN"'" '"dyn/dyn.vhdx $fwg $dwg"
$PY -c '
import sys
f = open(sys.argv[1], "r+b")
f.seek(0); f.write(b"a" * 4096)
f.seek(7 << 20); f.write(b"b" * 512)
f.seek(6 << 20); f.write(bytes(1 << 20))' dyn/model.raw
vhdx_written_ok "dynamic 512, the GUID session" dyn/dyn.vhdx dyn/model.raw

# ------------------------------------------------------------ later bits

# New bits in a block that is already PARTIALLY_PRESENT, after the
# transaction that allocated it: in the same session after a flush, and
# in a later session.  Nothing else happens in the chunk afterwards, so
# only the bitmap update itself can make these sectors this file's.
S=$((4 * M))
gen bits "{ \"size\": $S, \"block_size\": $M, \"seed\": 22, \"layers\": [
  { \"file\": \"base.vhdx\", \"writes\": [[0, $S]] },
  { \"file\": \"child.vhdx\", \"type\": \"differencing\",
    \"writes\": [[$((2 * M + 512)), 512]] } ] }"
session "later bits, one session" bits/child.vhdx bits/model.raw '
w 100*512 512 1
f
w 200*512 512 2
f
v'
expect "later bits, one session" bits/child.vhdx 0=partial:100+1,200+1 \
  2=partial:1+1 others=np
vhdx_written_ok "later bits, one session" bits/child.vhdx bits/model.raw
session "later bits, the next session" bits/child.vhdx bits/model.raw '
w 300*512 512 3
w 2*M+2*512 512 4
v'
expect "later bits, the next session" bits/child.vhdx \
  0=partial:100+1,200+1,300+1 2=partial:1+2 others=np
vhdx_written_ok "later bits, the next session" bits/child.vhdx bits/model.raw

# ------------------------------------------------------------ almost whole blocks

# Zero requests covering every sector of a block but only part of its
# first or last sector: not a whole-block zero; the bytes outside the
# request keep their value (the parent's, in a child).  The child goes
# first: writing the base afterwards orphans it.
S=$((4 * M + 1536))
gen edge "{ \"size\": $S, \"block_size\": $M, \"seed\": 20, \"layers\": [
  { \"file\": \"base.vhdx\", \"expected\": \"base.raw\", \"writes\": [[0, $S]] },
  { \"file\": \"child.vhdx\", \"type\": \"differencing\" } ] }"
cp edge/base.raw edge/base-model.raw
EDGE_OPS='
z M+84 M-84
z 2*M M-84
z 3*M+50 M-100
z SIZE-1536+1 1535
v'
session "almost whole blocks, differencing" edge/child.vhdx edge/model.raw \
  "$EDGE_OPS"
expect "almost whole blocks, differencing" edge/child.vhdx \
  0=np 1=partial\|full:all 2=partial\|full:all 3=partial\|full:all \
  last=partial\|full:all
vhdx_written_ok "almost whole blocks, differencing" edge/child.vhdx \
  edge/model.raw
session "almost whole blocks, dynamic" edge/base.vhdx edge/base-model.raw \
  "$EDGE_OPS"
expect "almost whole blocks, dynamic" edge/base.vhdx others=full
vhdx_written_ok "almost whole blocks, dynamic" edge/base.vhdx \
  edge/base-model.raw

# ------------------------------------------------------------ fixed, 512

S=$((6 * M + 1536))
gen fixed "{ \"size\": $S, \"block_size\": $M, \"seed\": 12, \"layers\": [
  { \"file\": \"fixed.vhdx\", \"type\": \"fixed\",
    \"writes\": [[0, $M], [$((3 * M + 100)), 5000]] } ] }"
$VHDXGEN states fixed/fixed.vhdx > fixed/before.json 2> /dev/null
session "fixed 512" fixed/fixed.vhdx fixed/model.raw '
w 100 700 1
w 2*M-5 10 2
z 3*M M
z 4*M+1 3*512
w SIZE-700 700 3
v'
expect "fixed 512: every block FULLY_PRESENT where it was" fixed/fixed.vhdx \
  others=full offsets=fixed/before.json sb=
vhdx_written_ok "fixed 512" fixed/fixed.vhdx fixed/model.raw

# ------------------------------------------------------------ differencing, 512

# The parent: 2 MiB blocks, data everywhere but [10M, 11M).  The child:
# 1 MiB blocks (2048 sectors), blocks 4, 5, 6 ZERO, UNMAPPED, UNDEFINED,
# block 7 PARTIALLY_PRESENT with sectors 8..23.  Last block: 3 sectors.
S=$((12 * M + 1536))
gen diff "{ \"size\": $S, \"seed\": 13, \"layers\": [
  { \"file\": \"base.vhdx\", \"block_size\": $((2 * M)),
    \"writes\": [[0, $((10 * M))], [$((11 * M)), $((M + 1536))]] },
  { \"file\": \"child.avhdx\", \"type\": \"differencing\", \"block_size\": $M,
    \"writes\": [[$((7 * M + 4096)), 8192]],
    \"states\": {\"4\": \"zero\", \"5\": \"unmapped\", \"6\": \"undefined\"} } ] }"
sha_base=$(sha256sum < diff/base.vhdx)
ids diff/base.vhdx
base_ids="$fwg $dwg"
session "differencing 512" diff/child.avhdx diff/model.raw '
w 612 1000 1
w M 4096 2
w 4*M+4096 512 3
w 5*M+10 20 4
w 6*M+M-512 512 5
w 7*M 512 6
w 8*M M 7
z 9*M M
z 2*M+1024 2048
z 3*M+100 200
w 10*M+2*512 512 8
w SIZE-700 700 9
v
f'
expect "differencing 512" diff/child.avhdx 0=partial:1+3 1=partial:0+8 \
  2=partial:2+4 3=partial:0+1 4=full 5=full 6=full 7=partial:0+1,8+16 \
  8=partial\|full:all 9=zero 10=partial:2+1 11=np last=partial:1+2 sb=0
vhdx_written_ok "differencing 512" diff/child.avhdx diff/model.raw
check "differencing 512: the parent is unchanged (sha256)" \
  test "$(sha256sum < diff/base.vhdx)" = "$sha_base"
ids diff/base.vhdx
check "differencing 512: the parent's GUIDs are unchanged" \
  test "$fwg $dwg" = "$base_ids"

# A second session: a whole-block write over a partial block, a
# whole-block zero over another.
session "differencing 512, session 2" diff/child.avhdx diff/model.raw '
w 0 M 10
z 7*M M
w 9*M+512 512 11
v'
expect "differencing 512, session 2" diff/child.avhdx 0=partial\|full:all \
  7=zero 9=full
vhdx_written_ok "differencing 512, session 2" diff/child.avhdx diff/model.raw
readonly_session "differencing 512" diff/child.avhdx
check "differencing 512: the parent is still unchanged (sha256)" \
  test "$(sha256sum < diff/base.vhdx)" = "$sha_base"

# ------------------------------------------------------------ 4096-byte sectors

# A differencing child with 32 MiB blocks (8192 sectors) over a parent
# with 1 MiB blocks; the child's last block holds 2051 sectors.  Writes
# smaller than a sector: read-modify-write with the parent's sector.
S=$((40 * M + 3 * 4096))
gen s4k "{ \"size\": $S, \"seed\": 14, \"logical_sector_size\": 4096,
  \"layers\": [
  { \"file\": \"base.vhdx\", \"block_size\": $M, \"writes\": [[0, $S]] },
  { \"file\": \"child.vhdx\", \"type\": \"differencing\",
    \"block_size\": $((32 * M)) } ] }"
sha_base=$(sha256sum < s4k/base.vhdx)
session "4096-byte sectors, differencing" s4k/child.vhdx s4k/model.raw '
w 5000 100 1
w 8*4096-10 20 2
z 16*4096+1 4096
w 32*M+4096 4096 4
w SIZE-4097 4097 5
v'
expect "4096-byte sectors, differencing" s4k/child.vhdx \
  0=partial:1+1,7+2,16+2 1=partial:1+1,2049+2 sb=0
vhdx_written_ok "4096-byte sectors, differencing" s4k/child.vhdx s4k/model.raw
session "4096-byte sectors, differencing, whole-block zero" \
  s4k/child.vhdx s4k/model.raw '
z 0 32*M
v'
expect "4096-byte sectors, whole-block zero" s4k/child.vhdx 0=zero
vhdx_written_ok "4096-byte sectors, whole-block zero" s4k/child.vhdx \
  s4k/model.raw
check "4096-byte sectors: the parent is unchanged (sha256)" \
  test "$(sha256sum < s4k/base.vhdx)" = "$sha_base"

S=$((5 * M + 3 * 4096))
gen d4k "{ \"size\": $S, \"block_size\": $M, \"seed\": 15,
  \"logical_sector_size\": 4096, \"layers\": [
  { \"file\": \"d.vhdx\", \"writes\": [[$((3 * M)), 8192]] } ] }"
session "4096-byte sectors, dynamic" d4k/d.vhdx d4k/model.raw '
w 1 4094 1
w M-4095 8190 2
z 3*M M
w SIZE-1 1 3
v'
expect "4096-byte sectors, dynamic" d4k/d.vhdx 0=full 1=full 2=np 3=zero \
  4=np last=full
vhdx_written_ok "4096-byte sectors, dynamic" d4k/d.vhdx d4k/model.raw

# ------------------------------------------------------------ past 4 GiB

# 512-byte sectors: a chunk (one sector bitmap block) covers 4 GiB, so
# the BAT has a sector bitmap slot between blocks 127 and 128 (32 MiB
# blocks) or 4095 and 4096 (1 MiB blocks).  Sparse files.
S=$((4 * G + 64 * M + 1536))
gen big "{ \"size\": $S, \"block_size\": $((32 * M)), \"seed\": 16,
  \"expected\": false, \"layers\": [ { \"file\": \"big.vhdx\" } ] }"
truncate -s $S big/model.raw
ops_args=--sparse session "dynamic 4 GiB+, 32 MiB blocks" big/big.vhdx big/model.raw '
w 4*1024*M-700 1400 1
w 4*1024*M+32*M+5 10 2
z 4*1024*M+32*M 32*M
w SIZE-1000 1000 3'
expect "dynamic 4 GiB+, 32 MiB blocks" big/big.vhdx 127=full 128=full \
  129=zero last=full others=np sb=
vhdx_written_ok "dynamic 4 GiB+, 32 MiB blocks" big/big.vhdx big/model.raw

S=$((4 * G + 3 * M + 1536))
gen bigdiff "{ \"size\": $S, \"seed\": 17, \"layers\": [
  { \"file\": \"base.vhdx\", \"block_size\": $((32 * M)),
    \"writes\": [[$((4 * G - 3 * M)), $((6 * M))]] },
  { \"file\": \"child.vhdx\", \"type\": \"differencing\",
    \"block_size\": $M } ] }"
sha_base=$(sha256sum < bigdiff/base.vhdx)
ops_args=--sparse session "differencing 4 GiB+, 1 MiB blocks" bigdiff/child.vhdx \
  bigdiff/model.raw '
w 4*1024*M-1000 2000 1
z 4*1024*M+M M
w 4*1024*M+2*M+512 512 2'
expect "differencing 4 GiB+, 1 MiB blocks" bigdiff/child.vhdx \
  4095=partial:2046+2 4096=partial:0+2 4097=zero 4098=partial:1+1 \
  others=np sb=0,1
vhdx_written_ok "differencing 4 GiB+, 1 MiB blocks" bigdiff/child.vhdx \
  bigdiff/model.raw
check "differencing 4 GiB+: the parent is unchanged (sha256)" \
  test "$(sha256sum < bigdiff/base.vhdx)" = "$sha_base"

# ------------------------------------------------------------ pending logs

# A dynamic file with a pending log (BAT, metadata and data pages, a
# zero descriptor): read-only sessions change nothing; a writable
# session that only reads replays the log into the file (then the file
# reads right even without a replay), with a new FileWriteGuid and the
# same DataWriteGuid.
S=$((8 * M + 512))
gen logdyn "{ \"size\": $S, \"block_size\": $M, \"seed\": 18, \"layers\": [
  { \"file\": \"l.vhdx\",
    \"writes\": [[0, 300000], [$((3 * M)), $((2 * M))], [$((8 * M)), 512]],
    \"log\": {\"entries\": 3, \"changes\": [\"bat\", \"metadata\", \"data\"],
             \"zero_descriptor\": true} } ] }"
check "pending log: the generator made a file with a pending log" \
  test "$(vhdx_id logdyn/l.vhdx log_pending)" = True
snap logdyn/l.vhdx
reads_as "pending log: nbdkit -r reads the replayed content" \
  logdyn/expected.raw logdyn/l.vhdx
unchanged "pending log: nbdkit -r changes no byte"
ids logdyn/l.vhdx
fwg0=$fwg dwg0=$dwg
rm -f ro.raw
check "pending log: a writable session that only reads" \
  serve logdyn/l.vhdx -- "nbdcopy \"\$uri\" $tmp/ro.raw"
check_same "pending log: ... reads the replayed content" ro.raw \
  logdyn/expected.raw
ids logdyn/l.vhdx
check "pending log: replayed, the log is empty" \
  test "$(vhdx_id logdyn/l.vhdx log_guid)" = $ZG
check "pending log: FileWriteGuid changed" test "$fwg" != "$fwg0"
check "pending log: DataWriteGuid did not change" test "$dwg" = "$dwg0"
rm -f nr.raw
check "pending log: the replay is in the file (read without replay)" \
  $VHDXGEN read --no-replay logdyn/l.vhdx nr.raw
check_same "pending log: ... equals the replayed content" nr.raw \
  logdyn/expected.raw
vhdx_written_ok "pending log, replayed" logdyn/l.vhdx logdyn/model.raw
readonly_session "pending log, replayed" logdyn/l.vhdx

# A chain whose both files have a pending log: writing the child
# replays the child's log into it and never touches the parent; the
# child stays linked when the parent's log is replayed by a session that
# only reads it; writing into the parent orphans the child, which is
# then refused (parent id mismatch) unless ignore-id-mismatch=true.
S=$((6 * M))
gen logchain "{ \"size\": $S, \"block_size\": $M, \"seed\": 19, \"layers\": [
  { \"file\": \"base.vhdx\", \"writes\": [[0, $((5 * M))]],
    \"expected\": \"base.raw\",
    \"log\": {\"entries\": 2, \"changes\": [\"bat\", \"data\"]} },
  { \"file\": \"child.avhdx\", \"type\": \"differencing\",
    \"writes\": [[$((M + 512)), 4096], [$((3 * M)), $M]],
    \"log\": {\"entries\": 2, \"changes\": [\"bat\", \"sb\"], \"wrap\": true} } ] }"
check "pending logs in a chain: both files have one" test \
  "$(vhdx_id logchain/base.vhdx log_pending) $(vhdx_id logchain/child.avhdx log_pending)" \
  = "True True"
sha_base=$(sha256sum < logchain/base.vhdx)
session "pending logs in a chain: the child" logchain/child.avhdx \
  logchain/model.raw '
w M+100 300 1
w 2*M 8192 2
z 4*M M
v'
expect "pending logs in a chain: the child" logchain/child.avhdx \
  1=partial:0+9 2=partial:0+16 3=full 4=zero others=np sb=0
vhdx_check_allow="base\.vhdx: \[log\] .*needs replaying" \
vhdx_written_ok "pending logs in a chain: the child" logchain/child.avhdx \
  logchain/model.raw
check "pending logs in a chain: the parent is unchanged (sha256)" \
  test "$(sha256sum < logchain/base.vhdx)" = "$sha_base"
check "pending logs in a chain: the parent's log is still pending" \
  test "$(vhdx_id logchain/base.vhdx log_pending)" = True

ids logchain/base.vhdx
fwg0=$fwg dwg0=$dwg
check "the parent alone: a writable session that only reads" \
  serve logchain/base.vhdx -- 'nbdcopy "$uri" null:'
ids logchain/base.vhdx
check "the parent alone: its log was replayed (LogGuid 0)" \
  test "$(vhdx_id logchain/base.vhdx log_guid)" = $ZG
check "the parent alone: FileWriteGuid changed" test "$fwg" != "$fwg0"
check "the parent alone: DataWriteGuid did not change" test "$dwg" = "$dwg0"
reads_as "the child is still linked to the replayed parent (plugin)" \
  logchain/model.raw logchain/child.avhdx
rm -f vx.raw
check "the child is still linked to the replayed parent (vhdxgen)" \
  $VHDXGEN read logchain/child.avhdx vx.raw
check_same "... and reads the model" vx.raw logchain/model.raw

session "the parent alone, written" logchain/base.vhdx logchain/base.raw '
w 5*M 512 1
v'
vhdx_written_ok "the parent alone, written" logchain/base.vhdx \
  logchain/base.raw
check_fails "the orphaned child is refused (plugin)" \
  "parent id mismatch.*$dwg" \
  serve -r logchain/child.avhdx -- true
check_fails "the orphaned child is refused (vhdxgen)" "linkage mismatch" \
  $VHDXGEN read logchain/child.avhdx vx.raw
check_fails "the orphaned child is reported (vhdtool check)" \
  "parent id mismatch" "$VHDTOOL" check logchain/child.avhdx
check "the orphaned child opens with ignore-id-mismatch=true" \
  serve -r logchain/child.avhdx ignore-id-mismatch=true -- true

done_testing
