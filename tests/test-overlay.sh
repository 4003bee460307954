#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The overlay filter over three plugins: the vhd plugin (a 2-layer
# chain holding data), nbdkit's file plugin (a sparse raw file whose size
# is not a multiple of 512) and nbdkit's memory plugin (1000000 bytes).
#
# Every write, zero and trim is applied by the same helper to a raw
# model of what the export should show (trim in the overlay reads as
# zeros), and the export is compared with the model: odd offsets and
# lengths, sub-sector pieces, pieces crossing 64 KiB (and 4 KiB, 1 MiB)
# overlay blocks, FUA and fast-zero requests.  Extents (nbdinfo --map)
# are checked sector by sector: written -> data, zeroed or trimmed ->
# hole,zero, untouched -> exactly the plugin's own map.  After each run
# the files below are byte-identical (sha256) and a restarted nbdkit
# shows the plugin's content again.
#
# Then: scope=server (writes seen by other connections, multi-conn) and
# scope=connection (private, gone on reconnect, no multi-conn); the size
# limit (ENOSPC, nothing changed, zero still works); overlay-dir and
# overlay-block-size validation; where the temporary file lives; --help.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
[ -f "$FILTER" ] || skip_all "overlay filter not built"
for prog in nbdsh nbdcopy nbdinfo; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"
for p in file memory; do
  nbdkit $p --version > /dev/null 2>&1 || skip_all "nbdkit $p plugin missing"
done

M=$((1024 * 1024))
K=1024

cd "$tmp"

# ------------------------------------------------------------ helpers

# The ops scripts below are run by tests/nbdops.py (see its header).
OPS="$PY $top_srcdir/tests/nbdops.py"

# ovmap.py MAP PLUGINMAP MODEL LOG: check the filter's `nbdinfo --map
# --json` sector by sector.  The map must cover the disk exactly, every
# extent flagged zero must read as zeros, and, by what last touched each
# sector: a write -> data; a zero/trim covering the whole sector ->
# hole,zero; a zero covering only part of it -> anything (content is
# checked elsewhere); nothing -> the type the plugin itself reports.
cat > ovmap.py <<'EOF'
import json, sys
ext = json.load(open(sys.argv[1]))
below = json.load(open(sys.argv[2]))
model = open(sys.argv[3], "rb").read()
size = len(model)
nsec = (size + 511) // 512
state = bytearray(b"P" * nsec)
for line in open(sys.argv[4]):
    op, off, n = line.split()
    off, n = int(off), int(n)
    for s in range(off // 512, (off + n + 511) // 512):
        if op == "w":
            state[s] = ord("D")
        elif off <= s * 512 and (s + 1) * 512 <= off + n:
            state[s] = ord("Z")
        else:
            state[s] = ord("A")

def per_sector(ext, what, errs):
    types = [None] * nsec
    pos = 0
    for e in ext:
        off, n, t = e["offset"], e["length"], e["type"]
        if off != pos:
            errs.append("%s: gap/overlap at %d (extent starts %d)" % (what, pos, off))
        pos = off + n
        for s in range(off // 512, min(nsec, (off + n + 511) // 512)):
            if types[s] is None:
                types[s] = t
    if pos != size:
        errs.append("%s: map ends at %d, size %d" % (what, pos, size))
    return types

errs = []
got = per_sector(ext, "filter", errs)
exp = per_sector(below, "plugin", errs)
for e in ext:
    if e["type"] & 2 and any(model[e["offset"]:e["offset"] + e["length"]]):
        errs.append("extent %d+%d flagged zero but holds data"
                    % (e["offset"], e["length"]))
for s in range(nsec):
    st = chr(state[s])
    if st == "D" and got[s] != 0:
        errs.append("sector %d was written but is type %s" % (s, got[s]))
    if st == "Z" and got[s] != 3:
        errs.append("sector %d was zeroed but is type %s" % (s, got[s]))
    if st == "P" and got[s] != exp[s]:
        errs.append("sector %d untouched: type %s, the plugin says %s"
                    % (s, got[s], exp[s]))
if errs:
    sys.exit("\n".join(errs[:20]))
print("sectors: %d written, %d zeroed, %d untouched"
      % (state.count(b"D"), state.count(b"Z"), state.count(b"P")))
EOF

# shared.py URI MODEL SCOPE: two connections at once; what one writes
# the other sees (server) or does not see (connection), and after a
# reconnect a private overlay is gone.  MODEL is the plugin's content.
cat > shared.py <<'EOF'
import nbd, sys
uri, model, scope = sys.argv[1:4]
base = open(model, "rb").read()
def conn():
    h = nbd.NBD(); h.connect_uri(uri); return h
def check(cond, msg):
    if not cond:
        sys.exit(msg)
h1, h2 = conn(), conn()
mc = h1.can_multi_conn()
check(mc == (scope == "server"), "can_multi_conn is %s for scope %s" % (mc, scope))
check(h1.is_read_only() == 0 and h1.can_zero() and h1.can_trim() and
      h1.can_flush() and h1.can_fua() and h1.can_fast_zero(),
      "not writable/zero/trim/flush/fua/fast_zero")
# Offsets where the plugin holds data (the callers make sure).
o1, o2 = 65536 - 100, 3 * 65536 + 7
d1, d2, d3 = b"\x11" * 300, b"\x22" * 5000, b"\x33" * 300
check(base[o1:o1 + 300] != d1 and base[o2:o2 + 5000] != d2, "bad offsets")
h1.pwrite(d1, o1)
check(h1.pread(300, o1) == d1, "connection 1 does not see its own write")
if scope == "server":
    check(h2.pread(300, o1) == d1, "connection 2 does not see connection 1's write")
    h2.pwrite(d2, o2)
    check(h1.pread(5000, o2) == d2, "connection 1 does not see connection 2's write")
    h2.zero(300, o1)
    check(h1.pread(300, o1) == bytes(300), "connection 1 does not see connection 2's zero")
    h1.pwrite(d3, o1)
    h1.shutdown(); h2.shutdown()
    h3 = conn()
    check(h3.pread(300, o1) == d3 and h3.pread(5000, o2) == d2,
          "a new connection does not see the earlier writes")
    h3.shutdown()
else:
    check(h2.pread(300, o1) == base[o1:o1 + 300],
          "connection 2 sees connection 1's private write")
    h2.pwrite(d2, o1 - 1000)
    check(h2.pread(5000, o1 - 1000) == d2, "connection 2 does not see its own write")
    check(h1.pread(300, o1) == d1, "connection 2's write changed connection 1's view")
    check(h1.pread(1000, o1 - 1000) == base[o1 - 1000:o1],
          "connection 1 sees connection 2's private write")
    h1.zero(65536, 0)
    check(h2.pread(60000, 0) == base[:60000], "connection 1's zero leaked")
    h1.shutdown()
    h3 = conn()
    check(h3.pread(300, o1) == base[o1:o1 + 300],
          "connection 1's write survived its reconnect")
    check(h3.pread(65536, 0) == base[:65536],
          "connection 1's zero survived its reconnect")
    check(h2.pread(5000, o1 - 1000) == d2,
          "connection 2 lost its write when connection 1 left")
    h3.shutdown(); h2.shutdown()
EOF

# run_plugin NAME MODEL-OF-PLUGIN OPSFILE PLUGIN ARGS...: one filter run
# applying OPSFILE, the extents check, then a restart.
run_plugin () {
  local name=$1 base=$2 ops=$3
  shift 3
  rm -f model.raw model.raw.log map.json seen.raw
  cp "$base" model.raw
  : > model.raw.log
  if [ "${SCOPE:-server}" = server ]; then
    check "$name: writes, zeroes and trims equal the model" \
      ovserve "$@" -- "$OPS \"\$uri\" $tmp/model.raw $tmp/$ops &&
        nbdinfo --map --json \"\$uri\" > $tmp/map.json &&
        nbdcopy \"\$uri\" $tmp/seen.raw"
    check_same "$name: nbdcopy of the export equals the model" seen.raw model.raw
  else
    # A private overlay: the map is read in the same connection, and
    # the next connection sees the plugin's content.
    check "$name: writes, zeroes and trims equal the model" \
      ovserve "$@" -- "$OPS \"\$uri\" $tmp/model.raw $tmp/$ops \
          $tmp/map.json &&
        nbdcopy \"\$uri\" $tmp/seen.raw"
    check_same "$name: nbdcopy (next connection) sees the plugin's content" \
      seen.raw "$base"
  fi
  check "$name: extents: written data, zeroed hole,zero, rest as the plugin" \
    $PY ovmap.py map.json plugin-map.json model.raw model.raw.log
  diag_file "$tmp/.out"
  check "$name: the run changed something" \
    test "$(sha256sum < model.raw)" != "$(sha256sum < "$base")"
  rm -f seen.raw
  check "$name: after a restart the export is the plugin's content again" \
    ovserve "$@" -- "nbdcopy \"\$uri\" $tmp/seen.raw"
  check_same "$name: restarted export equals the plugin's content" seen.raw "$base"
}

nonzero_range () {
  tail -c +$(($2 + 1)) "$1" | head -c "$3" | tr -d '\0' | grep -q .
}
zero_range () {
  ! nonzero_range "$@"
}

# ------------------------------------------------------------ vhd plugin

# A 2-layer chain: base (2 MiB blocks) with a text pattern, child
# (64 KiB blocks) with random pieces; [4M+512K, 5M) is held by neither.
SIZE=$((6 * M + 1536))
check "create base.vhd" "$VHDTOOL" create base.vhd $SIZE
truncate -s $SIZE plugin.raw
cat > ops-base <<'EOF'
p 0 4*M BASE
p 5*M SIZE-5*M BASE
EOF
check "write a pattern into base.vhd through the plugin" \
  serve base.vhd -- "$OPS \"\$uri\" $tmp/plugin.raw $tmp/ops-base"
check "create child.vhd -b 64K" "$VHDTOOL" create -p base.vhd -b 64K child.vhd
cat > ops-child <<'EOF'
r 1 40 100000 0 4*M
w 4*M+100 300000 2
EOF
check "write into child.vhd through the plugin" \
  serve child.vhd -- "$OPS \"\$uri\" $tmp/plugin.raw $tmp/ops-child"
rm -f plugin.raw.log
read_all seen.raw child.vhd
check_same "the chain holds what was written" seen.raw plugin.raw
check "[4M+512K, 5M) is a hole in the chain (for the extents check)" \
  zero_range plugin.raw $((4 * M + 512 * K)) $((512 * K))
cp plugin.raw vhd.raw
serve -r child.vhd -- 'nbdinfo --map --json "$uri"' > plugin-map.json
sha_base=$(sha256sum < base.vhd)
sha_child=$(sha256sum < child.vhd)

cat > ops-vhd <<'EOF'
# aligned, then pieces crossing 64 KiB blocks, odd both ends
p 0 4096 OV
w 64*K-3 7 1
w 2*64*K-1 2 2
w 3*64*K+100 2*64*K+33 3
# 4 KiB and 1 MiB block boundaries
w 4*K-1 2 4
w M-5 10 5
# one byte at the end of a sector, the start of the next, and the rest
w 2*M+511 1 6
w 2*M+512 1 7
w 2*M+513 510 8
# a sub-sector write into the hole, and one spanning hole and data
w 4*M+600*K+3 5 9
w 5*M-1000 2000 10
# FUA, the very end of the disk
W 3*M+7 9000 11
w SIZE-1 1 12
w SIZE-1000 999 13
r 14 150 70000
f
# zeros: unaligned over the pattern crossing a 64 KiB boundary,
# aligned over plugin data, fast zero, trims aligned and unaligned
z M+64*K-5000 70001
z 2*M+128*K 128*K
Z 3*M+64*K 64*K
t 3*M+256*K 64*K
t 3*M+400*K+3 1000
# write into zeroed ranges, partially
w M+64*K-10 20 15
w 2*M+128*K+512 512 16
# zero over written data, sub-sector and whole
z 3*K+1 100
z 64*K-2 4
v
EOF

run_plugin "vhd chain" vhd.raw ops-vhd "$PLUGIN" child.vhd
check "vhd: zeroed range over plugin data reads zero" \
  zero_range model.raw $((2 * M + 128 * K + 1024)) $((127 * K))
check "vhd: ... where the plugin has data" \
  nonzero_range vhd.raw $((2 * M + 128 * K + 1024)) $((127 * K))
check "vhd: trimmed range over plugin data reads zero" \
  zero_range model.raw $((3 * M + 256 * K)) $((64 * K))
check "vhd: ... where the plugin has data" \
  nonzero_range vhd.raw $((3 * M + 256 * K)) $((64 * K))
check "vhd: base.vhd unchanged (sha256)" test "$(sha256sum < base.vhd)" = "$sha_base"
check "vhd: child.vhd unchanged (sha256)" test "$(sha256sum < child.vhd)" = "$sha_child"

for bs in 4K 1M; do
  run_plugin "vhd chain, overlay-block-size=$bs" vhd.raw ops-vhd \
    "$PLUGIN" child.vhd overlay-block-size=$bs
done
SCOPE=connection run_plugin "vhd chain, overlay-scope=connection" vhd.raw \
  ops-vhd "$PLUGIN" child.vhd overlay-scope=connection
check "vhd: base.vhd still unchanged" test "$(sha256sum < base.vhd)" = "$sha_base"
check "vhd: child.vhd still unchanged" test "$(sha256sum < child.vhd)" = "$sha_child"

check "vhd, scope=server: writes visible to other connections, multi-conn" \
  ovserve "$PLUGIN" child.vhd -- "$PY $tmp/shared.py \"\$uri\" $tmp/vhd.raw server"
check "vhd, scope=connection: private per connection, gone on reconnect" \
  ovserve "$PLUGIN" child.vhd overlay-scope=connection -- \
    "$PY $tmp/shared.py \"\$uri\" $tmp/vhd.raw connection"
read_all seen.raw child.vhd
check_same "vhd: the chain still holds its own content" seen.raw vhd.raw
check "vhd: child.vhd unchanged after the sharing tests" \
  test "$(sha256sum < child.vhd)" = "$sha_child"

# ------------------------------------------------------------ file plugin

# A sparse raw file, size not a multiple of 512.
FSIZE=$((3 * M + 1234))
$PY -c '
import random, sys
rng = random.Random(5)
with open(sys.argv[1], "wb") as f:
    f.truncate(int(sys.argv[2]))
    for off in (0, 256 * 1024, 2 * 1024 * 1024):
        f.seek(off); f.write(rng.randbytes(200 * 1024))
    f.seek(int(sys.argv[2]) - 3000); f.write(rng.randbytes(3000))
' disk.raw $FSIZE
cp disk.raw file.raw
sha_disk=$(sha256sum < disk.raw)
nbdkit -U "$(newsock)" file disk.raw --run 'nbdinfo --map --json "$uri"' > plugin-map.json

cat > ops-file <<'EOF'
w 64*K-1 3 21
w 200*K-5 100000 22
w 512*K+1 510 23
w 2*M+200*K-7 14 24
r 25 100 50000
w SIZE-3 3 26
w SIZE-1234-100 200 27
z 10*K 64*K
t 2*M 128*K
Z 2*M+192*K 4*K
z SIZE-1234 1234
w SIZE-700 10 28
v
EOF
run_plugin "file plugin" file.raw ops-file file disk.raw
run_plugin "file plugin, overlay-block-size=4K" file.raw ops-file \
  file disk.raw overlay-block-size=4K
check "file: zeroed range over file data reads zero" \
  zero_range model.raw $((10 * K)) $((64 * K))
check "file: ... where the file has data" \
  nonzero_range file.raw $((10 * K)) $((64 * K))
check "file: disk.raw unchanged (sha256)" test "$(sha256sum < disk.raw)" = "$sha_disk"
check "file, scope=server: writes visible to other connections" \
  ovserve file disk.raw -- "$PY $tmp/shared.py \"\$uri\" $tmp/file.raw server"
check "file, scope=connection: private per connection" \
  ovserve file disk.raw overlay-scope=connection -- \
    "$PY $tmp/shared.py \"\$uri\" $tmp/file.raw connection"
check "file: disk.raw still unchanged" test "$(sha256sum < disk.raw)" = "$sha_disk"

# ------------------------------------------------------------ memory plugin

# 1000000 bytes: 1953 sectors and a 64-byte partial last one.
truncate -s 1000000 mem.raw
nbdkit -U "$(newsock)" memory 1000000 --run 'nbdinfo --map --json "$uri"' > plugin-map.json
cat > ops-mem <<'EOF'
w 0 1 31
w 64*K-1 2 32
r 33 100 30000
w SIZE-64 64 34
w SIZE-65 2 35
w SIZE-1 1 36
z 128*K+1 64*K
t 512*K 64*K
w SIZE-600 599 37
z SIZE-30 10
v
EOF
run_plugin "memory 1000000" mem.raw ops-mem memory 1000000
run_plugin "memory 1000000, overlay-block-size=4K" mem.raw ops-mem \
  memory 1000000 overlay-block-size=4K
SCOPE=connection run_plugin "memory 1000000, overlay-scope=connection" \
  mem.raw ops-mem memory 1000000 overlay-scope=connection
check "memory: export size is 1000000" \
  test "$(ovserve memory 1000000 -- 'nbdinfo --size "$uri"')" = 1000000

# ------------------------------------------------------------ multi-conn

# nbdinfo --json: can_multi_conn true for server, false for connection.
mc () {
  ovserve memory 1M "$@" -- 'nbdinfo --json "$uri"' |
    $PY -c 'import json, sys; print(json.load(sys.stdin)["exports"][0]["can_multi_conn"])'
}
check "nbdinfo: can_multi_conn true with the default scope" test "$(mc)" = True
check "nbdinfo: can_multi_conn true with overlay-scope=server" \
  test "$(mc overlay-scope=server)" = True
check "nbdinfo: can_multi_conn false with overlay-scope=connection" \
  test "$(mc overlay-scope=connection)" = False
ovserve memory 1M -- 'nbdinfo --json "$uri"' > info.json
check "nbdinfo: writable, zero, fast zero, trim, flush, fua, extents advertised" \
  $PY -c '
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
want = dict(is_read_only=False, can_zero=True, can_fast_zero=True,
            can_trim=True, can_flush=True, can_fua=True)
bad = {k: e.get(k) for k in want if e.get(k) != want[k]}
if bad or "base:allocation" not in e["contexts"]:
    sys.exit("unexpected: %r %r" % (bad, e["contexts"]))
if e["block_size_minimum"] != 1 or e["block_size_preferred"] < 4096:
    sys.exit("block sizes %r %r" % (e["block_size_minimum"], e["block_size_preferred"]))
' info.json

# ------------------------------------------------------------ size limit

# limit.py URI: overlay-limit=1M over a file full of data.
dd if=/dev/urandom of=lim.raw bs=1M count=8 status=none
sha_lim=$(sha256sum < lim.raw)
cat > limit.py <<'EOF'
import errno, nbd, sys
uri, base = sys.argv[1], open(sys.argv[2], "rb").read()
K = 1024; M = K * K
h = nbd.NBD(); h.connect_uri(uri)
model = bytearray(base)
def ok(data, off, what):
    h.pwrite(data, off)
    model[off:off + len(data)] = data
def enospc(data, off, what):
    try:
        h.pwrite(data, off)
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC:
            sys.exit("%s: failed with errno %s, not ENOSPC" % (what, e.errnum))
        print("%s: ENOSPC (%s)" % (what, e.string.strip()))
        return
    sys.exit("%s: succeeded beyond the limit" % what)
def same(what):
    for off in range(0, len(model), M):
        if h.pread(M, off) != model[off:off + M]:
            sys.exit("%s: content differs from the model near %d" % (what, off))

ok(b"a" * (512 * K), 0, "first half")
enospc(b"b" * (M), 4 * M, "1M more at once")
same("after a refused 1M write")
ok(b"c" * (512 * K - 4 * K), 2 * M, "up to 4K below the limit")
ok(b"d" * (300 * K), 100 * K, "rewriting held data costs nothing")
ok(b"f" * (4 * K - 512), 3 * M, "up to one sector below the limit")
enospc(b"e" * (8 * K), 2 * M + 512 * K - 8 * K, "4K held + 4K new")
same("after a refused write half over held data")
enospc(b"g" * 513, 5 * M + 1000, "513 unaligned bytes (2 sectors)")
ok(b"h", 6 * M + 7, "one byte: the last sector")
same("at the limit")
enospc(b"i", 7 * M, "one more byte")
enospc(b"j" * (64 * K), 7 * M - 1, "64K crossing a block")
h.pwrite(b"k" * 10, 100 * K)      # held: still fine at the limit
model[100 * K:100 * K + 10] = b"k" * 10
same("after every refusal")
# Zeroing costs nothing, even at the limit, over held and new ranges.
h.zero(M, 5 * M)
h.zero(4 * K, 7 * M)
h.trim(64 * K, 6 * M + 64 * K)
h.zero(512, 2 * M, nbd.CMD_FLAG_FAST_ZERO)
model[5 * M:6 * M] = bytes(M)
model[7 * M:7 * M + 4 * K] = bytes(4 * K)
model[6 * M + 64 * K:6 * M + 128 * K] = bytes(64 * K)
model[2 * M:2 * M + 512] = bytes(512)
same("after zeroing at the limit")
# Zeroing held data frees it: 8K zeroed, then 8.5K written elsewhere
# (the 512 bytes zeroed at 2M freed one more sector).
h.zero(8 * K, 0)
model[0:8 * K] = bytes(8 * K)
ok(b"l" * (8 * K + 512), 4 * M, "8.5K after freeing 8.5K by zeroing")
enospc(b"m" * 512, 4 * M + 512 * K, "again at the limit")
same("final")
# A sub-sector zero at the limit still works (it cannot be free: the
# rest of the sector must be kept), and the data is right.
h.zero(3, 7 * M + 100 * K + 1)
model[7 * M + 100 * K + 1:7 * M + 100 * K + 4] = bytes(3)
same("after a sub-sector zero at the limit")
h.shutdown()
EOF
check "overlay-limit=1M: writes up to the limit, ENOSPC beyond, nothing changed" \
  ovserve file lim.raw overlay-limit=1M -- "$PY $tmp/limit.py \"\$uri\" $tmp/lim.raw"
check "overlay-limit: the file below unchanged" test "$(sha256sum < lim.raw)" = "$sha_lim"
check "overlay-limit=1M: a client sees ENOSPC from nbdsh" \
  ovserve memory 4M overlay-limit=1M -- 'nbdsh -u "$uri" -c "
import errno
h.pwrite(b\"x\" * 1048576, 0)
try:
    h.pwrite(b\"y\", 2 * 1048576)
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e.errnum
else:
    assert False, \"no error\"
assert h.pread(1, 2 * 1048576) == b\"\\0\"
"'
check "overlay-limit with scope=connection applies per overlay" \
  ovserve memory 4M overlay-limit=1M overlay-scope=connection -- 'nbdsh -c "
import errno
for i in range(2):
    h = nbd.NBD()
    h.connect_uri(\"$uri\")
    h.pwrite(b\"x\" * 1048576, 0)
    try:
        h.pwrite(b\"y\", 2 * 1048576)
    except nbd.Error as e:
        assert e.errnum == errno.ENOSPC, e.errnum
    else:
        assert False, \"no error\"
    h.shutdown()
"'
check_fails "overlay-limit=junk refused" "overlay-limit|junk|parse" \
  ovserve memory 1M overlay-limit=junk -- true

# ------------------------------------------------------------ overlay-dir

mkdir ovdir
# fd.sh DIR: the nbdkit process holds an unlinked file in DIR.
cat > fd.sh <<'EOF'
# Some process has an open, deleted file in $1 (the overlay), and the
# directory itself is empty.
set -e
test -z "$(ls -A "$1")"
find /proc/[0-9]*/fd -lname "$1/*" -printf '%l\n' 2> /dev/null |
  grep -q "^$1/.* (deleted)\$"
EOF
check "overlay-dir=DIR: the overlay is an unlinked file in DIR" \
  ovserve memory 1M overlay-dir="$tmp/ovdir" -- \
    "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"x\" * 4096, 0)' && bash $tmp/fd.sh $tmp/ovdir"
mkdir td
check "without overlay-dir the overlay goes to \$TMPDIR" \
  env TMPDIR="$tmp/td" nbdkit -U "$(newsock)" --filter="$FILTER" memory 1M \
    --run "bash $tmp/fd.sh $tmp/td"
check "scope=connection: each connection's overlay is an unlinked file in DIR" \
  ovserve memory 1M overlay-dir="$tmp/ovdir" overlay-scope=connection -- \
    "nbdsh -u \"\$uri\" -c 'import subprocess; h.pwrite(b\"x\", 0); subprocess.check_call([\"bash\", \"$tmp/fd.sh\", \"$tmp/ovdir\"])'"
check "overlay-dir is left empty" test -z "$(ls -A ovdir)"
check "\$TMPDIR is left empty" test -z "$(ls -A td)"
rm -f ran
check_fails "overlay-dir pointing at a missing directory fails at start-up" \
  "$tmp/missing.*(No such file|does not exist)" \
  ovserve memory 1M overlay-dir="$tmp/missing" -- "touch $tmp/ran"
check "... and no client ran" test ! -e ran
check_fails "... also with scope=connection" "$tmp/missing" \
  ovserve memory 1M overlay-dir="$tmp/missing" overlay-scope=connection -- \
    "touch $tmp/ran"
check "... and no client ran" test ! -e ran
touch notadir
check_fails "overlay-dir naming a regular file fails at start-up" \
  "notadir.*Not a directory" \
  ovserve memory 1M overlay-dir="$tmp/notadir" -- "touch $tmp/ran"
check "... and no client ran" test ! -e ran
check_fails "... also with scope=connection" \
  "notadir.*Not a directory" \
  ovserve memory 1M overlay-dir="$tmp/notadir" overlay-scope=connection -- \
    "touch $tmp/ran"
check "... and no client ran" test ! -e ran

# ------------------------------------------------------------ parameters

rm -f ran
for bad in 0 512 2048 3000 12K 100000 128M 1G junk -4096; do
  check_fails "overlay-block-size=$bad refused" \
    "overlay-block-size|parse|size" \
    ovserve memory 1M overlay-block-size=$bad -- "touch $tmp/ran"
done
check "... and no client ran" test ! -e ran
for good in 4K 4096 8K 64K 1M 64M; do
  check "overlay-block-size=$good accepted and works" \
    ovserve memory 5M overlay-block-size=$good -- 'nbdsh -u "$uri" -c "
h.pwrite(b\"ab\" * 5000, 4095)
assert h.pread(10002, 4094) == b\"\\0\" + b\"ab\" * 5000 + b\"\\0\"
"'
done
check_fails "overlay-scope=global refused" "overlay-scope" \
  ovserve memory 1M overlay-scope=global -- true
check "unknown keys still reach the plugin" \
  ovserve file file=disk.raw -- 'test "$(nbdinfo --size "$uri")" = '$FSIZE

nbdkit --filter="$FILTER" memory --help > help.txt 2>&1
for p in block-size scope limit dir save save-parent; do
  check "--help lists overlay-$p" grep -q "^overlay-$p=" help.txt
done

check "disk.raw unchanged at the end" test "$(sha256sum < disk.raw)" = "$sha_disk"

done_testing
