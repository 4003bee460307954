#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# overlay-save: at clean exit the overlay becomes a VHD differencing
# child of the served VHD.
#
# The saved child is read back through the vhd plugin and compared byte
# for byte with what the clients saw just before exit (nbdcopy of the
# export) and with a model of every request; vhdtool info shows the
# parent (name, chain, parent-id = the parent's unique-id).  Saving is
# sector-granular: the allocated blocks and bitmap bits (vhdgen.py dump)
# are exactly the sectors written (and zeroed over parent data).  Over
# a dynamic golden.vhd, over the top of a 2-layer chain, over a fixed
# VHD served by nbdkit's file plugin (truncate filter hiding the
# footer), with nothing written, with several connections (nbdcopy) and
# as a daemon stopped by SIGTERM (relative paths).  The parents never
# change (sha256).  Start-up refusals (non-zero exit, a clear message,
# no file left): FILE exists, parent size differs, parent is not a VHD
# or missing, scope=connection, one option without the other, FILE in a
# missing directory, and the size check as a daemon.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
[ -f "$FILTER" ] || skip_all "overlay filter not built"
need_nbd_clients

M=$((1024 * 1024))
K=1024

cd "$tmp"

# ------------------------------------------------------------ helpers

# The ops scripts below are run by tests/nbdops.py (see its header).
OPS="$PY $top_srcdir/tests/nbdops.py"

# info.py CHILD PARENT-ID PARENT-NAME FILE...: vhdtool info --json of
# CHILD: differencing, the parent's id and name, the chain CHILD FILE...
cat > info.py <<'EOF'
import json, os, sys
info = json.load(sys.stdin)
child, pid, pname = sys.argv[1:4]
chain = [os.path.abspath(child)] + [os.path.abspath(f) for f in sys.argv[4:]]
errs = []
if info["type"] != "differencing": errs.append("type %s" % info["type"])
if info.get("parent-id") != pid: errs.append("parent-id %s, want %s" % (info.get("parent-id"), pid))
if info.get("parent-name") != pname: errs.append("parent-name %s" % info.get("parent-name"))
got = [c["file"] for c in info["chain"]]
if got != chain: errs.append("chain %r, want %r" % (got, chain))
if errs: sys.exit("; ".join(errs))
EOF

# bits.py FILE: "allocated BLOCK:BITS ..." from vhdgen.py dump --json.
cat > bits.py <<'EOF'
import json, sys
bat = json.load(sys.stdin)["bat"]
print(bat["allocated"], " ".join("%d:%d" % (b["index"], b["bits_set"])
                                  for b in bat["blocks"]))
EOF

uid () {
  "$VHDTOOL" info --json "$1" | $PY -c 'import json, sys; print(json.load(sys.stdin)["unique-id"])'
}
bits () {
  $VHDGEN dump --json "$1" | $PY bits.py
}
nonzero_range () {
  tail -c +$(($2 + 1)) "$1" | head -c "$3" | tr -d '\0' | grep -q .
}
zero_range () {
  ! nonzero_range "$@"
}

# save_run NAME PARENT OUT OPS MODEL PLUGIN-ARGS...: serve PLUGIN-ARGS
# through the filter saving to OUT as a child of PARENT, apply OPS to
# MODEL (which starts as the parent's content), copy the export to
# seen.raw just before exit; then compare OUT read through the plugin.
save_run () {
  local name=$1 parent=$2 out=$3 ops=$4 model=$5
  shift 5
  rm -f seen.raw back.raw
  check "$name: serve, write, copy the export, exit" \
    ovserve "$@" overlay-save="$out" overlay-save-parent="$parent" -- \
      "$OPS \"\$uri\" $tmp/$model $tmp/$ops &&
       nbdcopy \"\$uri\" $tmp/seen.raw"
  check "$name: $out was written" test -f "$out"
  check "$name: no temporary file left" test ! -e "$out.partial"
  check_same "$name: the clients saw the model" seen.raw "$model"
  read_all back.raw "$out"
  check_same "$name: $out through the vhd plugin equals what clients saw" \
    back.raw seen.raw
  check "$name: vhdtool check $out" "$VHDTOOL" check "$out"
}

# ------------------------------------------------------------ golden

# Dynamic, 2 MiB blocks, size not a multiple of the block size: a text
# pattern in [0, 3M), random data in [4M+100, 5M), nothing elsewhere.
GS=$((6 * M + 1536))
check "create golden.vhd" "$VHDTOOL" create golden.vhd $GS
truncate -s $GS golden.raw
cat > ops-golden <<'EOF'
p 0 3*M GOLD
w 4*M+100 M-100 1
EOF
check "fill golden.vhd through the plugin" \
  serve golden.vhd -- "$OPS \"\$uri\" $tmp/golden.raw $tmp/ops-golden"
sha_golden=$(sha256sum < golden.vhd)
uid_golden=$(uid golden.vhd)

cp golden.raw model.raw
cat > ops-run42 <<'EOF'
p 1000 5000 RUN
w 64*K-3 7 2
w 2*M-100 200 3
w 3*M+5 7 4
r 5 100 30000
# zero over parent data: unaligned, aligned, crossing the 2 MiB block
z 100*K+1 4000
z 512*K 64*K
z 2*M-4*K 8*K
# zero over a parent hole, trim over parent data
z 3*M+64*K 64*K
t 4*M+64*K 128*K
# the last, partial VHD block and the last byte
w SIZE-1537 1537 6
w SIZE-1 1 7
v
EOF
save_run "golden" golden.vhd run42.vhd ops-run42 model.raw \
  "$PLUGIN" golden.vhd
check "golden.vhd unchanged (sha256)" test "$(sha256sum < golden.vhd)" = "$sha_golden"
"$VHDTOOL" info --json run42.vhd > info.json
check "vhdtool info: parent-name golden.vhd, parent-id, chain" \
  $PY info.py run42.vhd "$uid_golden" golden.vhd golden.vhd < info.json
diag_file "$tmp/.out"
check "vhdtool info: virtual size is the export's" \
  $PY -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["virtual-size"] != int(sys.argv[2]))' \
    info.json $GS
check "zeroed range over parent data reads zero from the child" \
  zero_range back.raw $((512 * K)) $((64 * K))
check "... and the parent has data there" \
  nonzero_range golden.raw $((512 * K)) $((64 * K))
check "trimmed range over parent data reads zero from the child" \
  zero_range back.raw $((4 * M + 64 * K)) $((128 * K))
check "... and the parent has data there" \
  nonzero_range golden.raw $((4 * M + 64 * K)) $((128 * K))
check "zero crossing the 2 MiB block boundary reads zero" \
  zero_range back.raw $((2 * M - 4 * K)) $((8 * K))
read_all back.raw golden.vhd
check_same "golden.vhd still shows its own content" back.raw golden.raw

# The saved child is a normal writable VHD: a further child over it
# reads the same.
check "create a child of run42.vhd" "$VHDTOOL" create -p run42.vhd next.vhd
read_all back.raw next.vhd
check_same "a child of the saved child reads the same" back.raw seen.raw

# ------------------------------------------------------------ sectors

# Exactly what was written is stored: one sector for a 512-byte write.
# golden's 2 MiB blocks: block 0 [0, 2M), 1 [2M, 4M), 2 [4M, 6M), 3 rest.
cp golden.raw model.raw
cat > ops-sec <<'EOF'
# block 0: 1 byte over parent data (1 sector), 3 sectors zeroed over
# parent data, the first half of a write crossing into block 1
w 100 1 11
z 5*K 1536
w 2*M-512 1024 12
# block 1: an aligned 512-byte write into a parent hole (1 sector), the
# other half of the crossing write, a zero over a parent hole (nothing)
w 3*M+2560 512 13
z 3*M+64*K 64*K
# block 2: 4 KiB aligned over parent data (8 sectors)
w 4*M+100*K 4*K 14
EOF
save_run "sectors" golden.vhd run-sec.vhd ops-sec model.raw \
  "$PLUGIN" golden.vhd
check "sectors: blocks 0, 1, 2 allocated with 5, 2 and 8 bits set" \
  test "$(bits run-sec.vhd)" = "3 0:5 1:2 2:8"
diag_file "$tmp/.out"
echo "# run-sec.vhd: allocated and bits: $(bits run-sec.vhd)"
check "sectors: the 1-byte write's sector keeps the parent's other bytes" \
  $PY -c '
import sys
a = open(sys.argv[1], "rb").read(512); b = open(sys.argv[2], "rb").read(512)
sys.exit(a[:100] != b[:100] or a[101:] != b[101:] or a[100] == b[100])
' back.raw golden.raw

# Nothing written: an empty child that reads as the parent.
rm -f seen.raw
check "nothing written: serve and exit" \
  ovserve "$PLUGIN" golden.vhd overlay-save=empty.vhd \
    overlay-save-parent=golden.vhd -- "nbdcopy \"\$uri\" $tmp/seen.raw"
check "nothing written: empty.vhd exists" test -f empty.vhd
check "nothing written: no block allocated" test "$(bits empty.vhd)" = "0 "
read_all back.raw empty.vhd
check_same "nothing written: empty.vhd reads as golden.vhd" back.raw golden.raw
check "nothing written: vhdtool info shows golden.vhd as parent" \
  $PY info.py empty.vhd "$uid_golden" golden.vhd golden.vhd \
    < <("$VHDTOOL" info --json empty.vhd)

# Several connections: nbdcopy writes a file with holes (zero requests
# over parent data) on 4 connections.
$PY -c '
import random, sys
rng = random.Random(3)
with open(sys.argv[1], "wb") as f:
    size = int(sys.argv[2])
    f.truncate(size)
    off = 0
    while off < size:
        n = min(rng.choice([4096, 65536, 300000, 1 << 20]), size - off)
        if rng.random() < 0.6:
            f.seek(off); f.write(rng.randbytes(n))
        off += n
' src.raw $GS
rm -f seen.raw
check "nbdcopy on 4 connections into the export, then saved" \
  ovserve "$PLUGIN" golden.vhd overlay-save=multi.vhd \
    overlay-save-parent=golden.vhd -- \
    "nbdcopy --connections=4 --requests=16 $tmp/src.raw \"\$uri\" &&
     nbdcopy \"\$uri\" $tmp/seen.raw"
check_same "nbdcopy: the clients saw the source" seen.raw src.raw
read_all back.raw multi.vhd
check_same "nbdcopy: multi.vhd through the plugin equals the source" back.raw src.raw
check "golden.vhd unchanged after all the saves" \
  test "$(sha256sum < golden.vhd)" = "$sha_golden"

# ------------------------------------------------------------ chain top

check "create base2.vhd (64K blocks)" "$VHDTOOL" create -b 64K base2.vhd $((4 * M))
check "create top2.vhd over it" "$VHDTOOL" create -p base2.vhd top2.vhd
truncate -s $((4 * M)) chain.raw
printf 'r 21 60 50000\n' > ops-b2
printf 'r 22 60 50000\nz 2*M 64*K\n' > ops-t2
check "fill base2.vhd" serve base2.vhd -- "$OPS \"\$uri\" $tmp/chain.raw $tmp/ops-b2"
check "fill top2.vhd" serve top2.vhd -- "$OPS \"\$uri\" $tmp/chain.raw $tmp/ops-t2"
sha_b2=$(sha256sum < base2.vhd)
sha_t2=$(sha256sum < top2.vhd)
cp chain.raw model2.raw
cat > ops-c <<'EOF'
r 23 100 20000
z 100*K 200*K
w 64*K-1 2 24
w SIZE-3 3 25
v
EOF
save_run "chain top" top2.vhd run-chain.vhd ops-c model2.raw "$PLUGIN" top2.vhd
check "chain top: vhdtool info shows top2.vhd as parent, 3-layer chain" \
  $PY info.py run-chain.vhd "$(uid top2.vhd)" top2.vhd top2.vhd base2.vhd \
    < <("$VHDTOOL" info --json run-chain.vhd)
diag_file "$tmp/.out"
check "chain top: base2.vhd unchanged" test "$(sha256sum < base2.vhd)" = "$sha_b2"
check "chain top: top2.vhd unchanged" test "$(sha256sum < top2.vhd)" = "$sha_t2"
read_all back.raw top2.vhd
check_same "chain top: top2.vhd still shows its content" back.raw chain.raw

# ------------------------------------------------------------ file plugin

# A fixed VHD served by nbdkit's file plugin: the truncate filter hides
# the 512-byte footer, so the export is the fixed disk's raw data.
if nbdkit --filter=truncate null --version > /dev/null 2>&1; then
  FS=$((3 * M))
  check "create fixed.vhd" "$VHDTOOL" create -t fixed fixed.vhd $FS
  truncate -s $FS fixed.raw
  printf 'r 31 50 60000\n' > ops-f
  check "fill fixed.vhd" serve fixed.vhd -- "$OPS \"\$uri\" $tmp/fixed.raw $tmp/ops-f"
  sha_fixed=$(sha256sum < fixed.vhd)
  cp fixed.raw model3.raw
  printf 'r 32 50 9000\nz 1000 100000\nw SIZE-1 1 33\nv\n' > ops-f2
  save_run "file plugin" fixed.vhd run-file.vhd ops-f2 model3.raw \
    --filter=truncate file fixed.vhd truncate=$FS
  check "file plugin: vhdtool info shows fixed.vhd as parent" \
    $PY info.py run-file.vhd "$(uid fixed.vhd)" fixed.vhd fixed.vhd \
      < <("$VHDTOOL" info --json run-file.vhd)
  diag_file "$tmp/.out"
  check "file plugin: fixed.vhd unchanged" test "$(sha256sum < fixed.vhd)" = "$sha_fixed"
  check_fails "file plugin without truncate: the parent size differs, refused" \
    "$tmp/fixed.vhd.*bytes" \
    ovserve file fixed.vhd overlay-save=run-bad.vhd \
      overlay-save-parent=fixed.vhd -- "timeout 10 nbdinfo \"\$uri\""
  check "... and no file created" test ! -e run-bad.vhd -a ! -e run-bad.vhd.partial
else
  skip "nbdkit truncate filter missing"
fi

# ------------------------------------------------------------ daemon

# As a daemon (nbdkit changes directory to /) with relative paths,
# stopped by SIGTERM: that is a clean exit too.
cp golden.raw model.raw
printf 'w 7 70000 41\nz 3*M 4*K\nw 5*M+1 511 42\nv\n' > ops-d
sock=$(mktemp -u "$tmp/sock.XXXXXX")
nbdkit -U "$sock" -P "$tmp/d.pid" --filter="$FILTER" "$PLUGIN" golden.vhd \
  overlay-save=run-d.vhd overlay-save-parent=golden.vhd
for _ in $(seq 100); do [ -s d.pid ] && break; sleep 0.1; done
pid=$(cat d.pid 2> /dev/null || echo 0)
cleanup_fn "kill -9 $pid 2> /dev/null"
check "daemon: write through it" \
  $OPS "nbd+unix:///?socket=$sock" model.raw ops-d
check "daemon: copy the export" nbdcopy "nbd+unix:///?socket=$sock" seen.raw
kill -TERM "$pid"
for _ in $(seq 200); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
check "daemon: exited after SIGTERM" bash -c "! kill -0 $pid 2> /dev/null"
check "daemon: run-d.vhd saved in the starting directory" test -f run-d.vhd
read_all back.raw run-d.vhd
check_same "daemon: run-d.vhd equals what the clients saw" back.raw seen.raw
check_same "daemon: ... which is the model" seen.raw model.raw

# The parent's size can only be compared with the export once the
# plugin answers, which nbdkit 1.32 allows only after it has forked
# (filters' .after_fork).  So a daemon cannot fail its own start: it
# must shut itself down at once, refuse every connection meanwhile, and
# create nothing.
sock=$(mktemp -u "$tmp/sock.XXXXXX")
check "create small.vhd (2 MiB)" "$VHDTOOL" create small.vhd $((2 * M))
nbdkit -U "$sock" -P "$tmp/d2.pid" --filter="$FILTER" "$PLUGIN" golden.vhd \
  overlay-save=run-d2.vhd overlay-save-parent=small.vhd > d2.out 2>&1
for _ in $(seq 100); do [ -s d2.pid ] && break; sleep 0.1; done
pid=$(cat d2.pid 2> /dev/null || echo 0)
cleanup_fn "kill -9 $pid 2> /dev/null"
for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
if ! kill -0 "$pid" 2> /dev/null; then
  pass "daemon: parent size mismatch: the daemon shuts itself down"
else
  fail "daemon: parent size mismatch: daemon still running after 5 s"
fi
check_fails "daemon: ... and a client is refused" "." \
  timeout 10 nbdsh -u "nbd+unix:///?socket=$sock" -c 'h.pwrite(b"x", 0)'
check "daemon: ... and no file created" test ! -e run-d2.vhd -a ! -e run-d2.vhd.partial

# ------------------------------------------------------------ refusals

# refused DESC REGEX FILTER-ARGS...: start-up fails with REGEX, no
# run-x.vhd (or .partial) appears, and the client (--run) never starts
# (or, for the size check, is refused).
# (The client gets 10 s: if it starts against a server that is gone,
# it would otherwise wait for the handshake for ever.)
refused () {
  local desc=$1 re=$2
  shift 2
  rm -f run-x.vhd.partial ran
  check_fails "refused: $desc" "$re" \
    timeout 60 nbdkit -U "$(newsock)" --filter="$FILTER" "$PLUGIN" golden.vhd "$@" \
      --run "touch $tmp/ran; timeout 10 nbdsh -u \"\$uri\" -c 'h.pwrite(b\"x\" * 512, 0)'"
  check "refused: $desc: no file created" \
    test ! -e run-x.vhd -a ! -e run-x.vhd.partial
  # Only the size check runs after start-up (see above): there the
  # client starts but is refused.
  if [ "$desc" != "parent size differs" ]; then
    check "refused: $desc: before any client ran" test ! -e ran
  fi
}
echo "keep me" > exists.vhd
sha_exists=$(sha256sum < exists.vhd)
check_fails "refused: FILE exists" "$tmp/exists.vhd.*(exists|refus)" \
  ovserve "$PLUGIN" golden.vhd overlay-save=exists.vhd \
    overlay-save-parent=golden.vhd -- "true"
check "refused: FILE exists: it is untouched" \
  test "$(sha256sum < exists.vhd)" = "$sha_exists"
check "refused: FILE exists: no temporary file" test ! -e exists.vhd.partial
refused "parent size differs" "small.vhd.*2097152.*$GS" \
  overlay-save=run-x.vhd overlay-save-parent=small.vhd
head -c $GS golden.raw > notvhd.raw
refused "parent is not a VHD" "notvhd.raw.*(not|VHD)" \
  overlay-save=run-x.vhd overlay-save-parent=notvhd.raw
refused "parent missing" "missing.vhd" \
  overlay-save=run-x.vhd overlay-save-parent=missing.vhd
refused "overlay-scope=connection with overlay-save" "overlay-scope" \
  overlay-save=run-x.vhd overlay-save-parent=golden.vhd overlay-scope=connection
refused "overlay-save without overlay-save-parent" "overlay-save-parent" \
  overlay-save=run-x.vhd
refused "overlay-save-parent without overlay-save" "overlay-save" \
  overlay-save-parent=golden.vhd
rm -f run-x.vhd
check_fails "refused: FILE in a missing directory" "$tmp/nodir" \
  ovserve "$PLUGIN" golden.vhd overlay-save=nodir/run-x.vhd \
    overlay-save-parent=golden.vhd -- "true"
check "golden.vhd unchanged at the end" \
  test "$(sha256sum < golden.vhd)" = "$sha_golden"

# FILE appearing while nbdkit runs is not replaced at exit.
echo "appeared" > late.vhd.x
ovserve "$PLUGIN" golden.vhd overlay-save=late.vhd overlay-save-parent=golden.vhd -- \
  "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"x\" * 512, 0)' && cp $tmp/late.vhd.x $tmp/late.vhd" \
  > late.out 2>&1
check "FILE created meanwhile: not replaced" cmp late.vhd late.vhd.x
check "FILE created meanwhile: the failure is reported" grep -q "NOT saved" late.out

# A VHDX parent gets a VHDX child (a Hyper-V checkpoint's shape): the
# overlay's data and zeros over the chain, read back by tests/vhdxgen.py
# (an independent reader); the chain's files unchanged; a name of the
# other format refused at start.
cat > xspec.json <<'EOF2'
{"size": 20971520, "block_size": 2097152, "seed": 11, "layers": [
  {"file": "xbase.vhdx", "writes": [[0, 9000000]]},
  {"file": "xtop.avhdx", "type": "differencing", "writes": [[4194304, 70000]]}]}
EOF2
vhdxgen_make "a VHDX chain for overlay-save" xspec.json xchain
sha_x=$(cat xchain/*.vhdx xchain/*.avhdx | sha256sum)
ovserve "$PLUGIN" xchain/xtop.avhdx overlay-save=xsaved.avhdx \
  overlay-save-parent=xchain/xtop.avhdx -- \
  "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"V\" * 5000, 12345); h.zero(4194304, 2097152)'" \
  > xsave.out 2>&1
check "VHDX parent: the overlay saved as a VHDX child" \
  sh -c "\"$VHDTOOL\" info xsaved.avhdx | grep -q '^format: *VHDX'"
$VHDXGEN read xsaved.avhdx xsaved.raw > /dev/null 2>&1
check "VHDX child: vhdxgen reads the chain with the overlay's changes" \
  /usr/bin/python3 -c "
import sys
a = bytearray(open('xchain/expected.raw', 'rb').read())
b = open('xsaved.raw', 'rb').read()
a[12345:17345] = b'V' * 5000
a[2097152:6291456] = bytes(4194304)
sys.exit(a != b)"
check "VHDX child: vhdtool check is clean" "$VHDTOOL" check xsaved.avhdx
check "VHDX chain unchanged" \
  test "$(cat xchain/*.vhdx xchain/*.avhdx | sha256sum)" = "$sha_x"
refused "VHDX parent, child named .vhd" "x\.vhd: the child of .*xtop\.avhdx is a VHDX file: name it \.vhdx or \.avhdx" \
  overlay-save=x.vhd overlay-save-parent=xchain/xtop.avhdx

done_testing
