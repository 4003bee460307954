#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Many connections and many requests in flight at once against one
# nbdkit serving a differencing disk over a parent that holds data.
#
# 1. nbdcopy (multi-conn, 4 connections, 64 requests in flight) copies a
#    64 MiB raw file with holes into a fresh child: the holes become zero
#    requests that must mask the parent.  The export must equal the
#    source, in the same session, after a clean restart, and the parent
#    must be unchanged.
# 2. A libnbd aio client opens several connections and fires unaligned
#    writes and zero requests into the same fresh blocks at once: pieces
#    of 1 byte to a few KiB, adjacent, many sharing a sector (so the
#    plugin's read-modify-write of partial sectors and the allocation of
#    a block race with each other), plus flushes while writes are in
#    flight and reads of the untouched pieces in between.  No two
#    concurrent requests touch the same byte, so the result is fixed
#    and checked against a model.  nbdkit is then killed with SIGKILL
#    after the final flush: what the flush wrote must be enough.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in nbdcopy nbdinfo; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"

M=$((1024 * 1024))
SIZE=$((64 * M))
cd "$tmp"

# mkraw.py OUT SEED HOLE_EVERY: SIZE bytes of random data in which
# chunks are left as real holes (sparse file) at pseudo-random places.
cat > mkraw.py <<'EOF'
import random, sys
out, seed, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(out, "wb") as f:
    f.truncate(size)
    off = 0
    while off < size:
        n = min(rng.choice([4096, 65536, 300000, 1 << 20, 3 << 20]), size - off)
        if rng.random() < 0.7:
            f.seek(off)
            f.write(rng.randbytes(n))
        off += n
EOF

# ------------------------------------------------------------ parent

check "create the parent" "$VHDTOOL" create base.vhd $SIZE
$PY mkraw.py parent.raw 1 $SIZE
check "fill the parent with nbdcopy" \
  serve base.vhd -- "nbdcopy --connections=4 --requests=64 \
                      $tmp/parent.raw \"\$uri\""
read_all out.raw base.vhd
check_same "the parent holds the data" out.raw parent.raw
sha_base=$(sha256sum < base.vhd)

# ------------------------------------------------------------ nbdcopy

$PY mkraw.py src.raw 2 $SIZE
check "source has holes where the parent has data" \
  $PY -c '
import sys
s = open(sys.argv[1], "rb").read(); p = open(sys.argv[2], "rb").read()
sys.exit(not any(s[i] == 0 and p[i] != 0 for i in range(0, len(s), 4096)))
' src.raw parent.raw

for bs in 2M 64K; do
  check "create child -b $bs" "$VHDTOOL" create -p base.vhd -b $bs child$bs.vhd
  rm -f out.raw
  check "child $bs: nbdcopy 4 connections x 64 requests, then read back" \
    serve child$bs.vhd -- "
      nbdcopy --connections=4 --requests=64 --threads=4 \
        $tmp/src.raw \"\$uri\" &&
      nbdcopy --connections=4 --requests=64 \"\$uri\" $tmp/out.raw"
  check_same "child $bs: read back in the same session equals the source" \
    out.raw src.raw
  read_all out.raw child$bs.vhd
  check_same "child $bs: after restart equals the source" out.raw src.raw
done
check "the parent file is unchanged" test "$(sha256sum < base.vhd)" = "$sha_base"

# ------------------------------------------------------------ aio

# aio.py URI MODEL SEED NCONN LO HI ROUNDS: see the top of this file.
# MODEL holds the expected content before and is updated after.
cat > aio.py <<'EOF'
import nbd, nbdaio, random, sys
uri, model = sys.argv[1], sys.argv[2]
seed, nconn, lo, hi, rounds = map(int, sys.argv[3:8])
rng = random.Random(seed)
m = bytearray(open(model, "rb").read())
hs = []
for _ in range(nconn):
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_multi_conn() and h.can_zero() and h.can_flush()
    hs.append(h)
failures = []
MAX_IN_FLIGHT = 64
peak = 0

def run(queue):
    """queue: list of (handle index, kind, args).  Keep up to
    MAX_IN_FLIGHT commands in flight per handle until all are done."""
    global peak
    pending = [[] for _ in hs]
    for q in queue:
        pending[q[0]].append(q)
    keep = []
    def submit(i):
        h = hs[i]
        while pending[i] and h.aio_in_flight() < MAX_IN_FLIGHT:
            _, kind, a = pending[i].pop(0)
            def done(err, kind=kind, a=a):
                if err.value:
                    failures.append("%s %r failed: errno %d" % (kind, a[:2], err.value))
                return 1
            if kind == "w":
                buf = nbd.Buffer.from_bytearray(bytearray(a[2]))
                keep.append(buf)
                h.aio_pwrite(buf, a[0], completion=done)
            elif kind == "z":
                h.aio_zero(a[1], a[0], completion=done)
            elif kind == "r":
                buf = nbd.Buffer(a[1])
                def rdone(err, buf=buf, a=a):
                    if err.value:
                        failures.append("read %r failed" % (a,))
                    elif buf.to_bytearray() != a[2]:
                        failures.append("read %d+%d saw wrong data" % a[:2])
                    return 1
                keep.append(buf)
                h.aio_pread(buf, a[0], completion=rdone)
            elif kind == "f":
                h.aio_flush(completion=done)
    peak = max(peak, nbdaio.drive(hs, submit))

for rnd in range(rounds):
    # Split [lo, hi) into adjacent pieces, most shorter than a sector.
    pieces, off = [], lo
    while off < hi:
        n = min(rng.choice([1, 3, 100, 511, 512, 513, 700, 2000, 4096, 9000]),
                hi - off)
        pieces.append((off, n))
        off += n
    queue = []
    for off, n in pieces:
        x = rng.random()
        if x < 0.55:
            data = rng.randbytes(n)
            queue.append((rng.randrange(nconn), "w", (off, n, data)))
            m[off:off + n] = data
        elif x < 0.7:
            queue.append((rng.randrange(nconn), "z", (off, n)))
            m[off:off + n] = bytes(n)
        elif x < 0.8:
            # Untouched this round: read it while the neighbours change.
            queue.append((rng.randrange(nconn), "r", (off, n, m[off:off + n])))
    rng.shuffle(queue)
    for k in range(0, len(queue), 97):
        queue.insert(k, (rng.randrange(nconn), "f", ()))
    run(queue)
    if failures:
        sys.exit("round %d: %s" % (rnd, "; ".join(failures[:10])))
    for h in hs:
        h.flush()
    # Every connection sees the result (multi-conn consistency); the
    # whole disk is read once at the end.
    for i, h in enumerate(hs):
        a, b = max(0, lo - 65536), min(len(m), hi + 65536)
        if rnd == rounds - 1 and i == 0:
            a, b = 0, len(m)
        for off in range(a, b, 1 << 20):
            got = h.pread(min(1 << 20, b - off), off)
            exp = m[off:off + len(got)]
            if got != exp:
                j = next(j for j in range(len(got)) if got[j] != exp[j])
                sys.exit("round %d, connection %d: offset %d differs"
                         % (rnd, i, off + j))
open(model, "wb").write(m)
# The point is concurrency: make sure requests really overlapped.
if peak < 2 * nconn:
    sys.exit("only %d requests were ever in flight at once" % peak)
print("peak in flight:", peak)
EOF

for bs in 2M 64K; do
  check "create aio child -b $bs" "$VHDTOOL" create -p base.vhd -b $bs aio$bs.vhd
  cp parent.raw model$bs.raw
  sock=$(mktemp -u "$tmp/sock.XXXXXX")
  pidf=$tmp/nbdkit$bs.pid
  # A daemon, so that it can be killed hard after the flush.
  nbdkit -U "$sock" -P "$pidf" "$PLUGIN" "$tmp/aio$bs.vhd"
  for _ in $(seq 100); do [ -s "$pidf" ] && break; sleep 0.1; done
  check "aio $bs: nbdkit daemon started" test -s "$pidf"
  pid=$(cat "$pidf" 2> /dev/null || echo 0)
  cleanup_fn "kill -9 $pid 2> /dev/null"
  # Three rounds over 5 MiB that start and end mid-sector and cross
  # several blocks (both sizes) and the parent's data and holes.
  check "aio $bs: 4 connections, concurrent adjacent unaligned writes" \
    $PY aio.py "nbd+unix:///?socket=$sock" model$bs.raw 7 4 \
      $((3 * M + 333)) $((8 * M + 77)) 3
  kill -9 "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  read_all out.raw "$tmp/aio$bs.vhd"
  check_same "aio $bs: after SIGKILL following the flush, equals the model" \
    out.raw model$bs.raw
  check "aio $bs: the region was written" \
    $PY -c 'import sys; sys.exit(open(sys.argv[1],"rb").read() == open(sys.argv[2],"rb").read())' \
    model$bs.raw parent.raw

  # Again in a captive nbdkit with clean exit, over the whole disk
  # start (block 0) and end.
  check "aio $bs: second pass, 6 connections" \
    serve "$tmp/aio$bs.vhd" -- "$PY $tmp/aio.py \"\$uri\" $tmp/model$bs.raw 8 6 \
      $((SIZE - 3 * M - 5)) $SIZE 1 &&
      $PY $tmp/aio.py \"\$uri\" $tmp/model$bs.raw 9 6 0 $((2 * M + 1)) 1"
  read_all out.raw "$tmp/aio$bs.vhd"
  check_same "aio $bs: after restart equals the model" out.raw model$bs.raw
done
check "the parent file is still unchanged" \
  test "$(sha256sum < base.vhd)" = "$sha_base"

done_testing
