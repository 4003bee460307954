#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Concurrent OVERLAPPING writes.  test-concurrent.sh keeps concurrent
# requests apart (so its result is fixed); here many connections, each
# driven by its own thread with many requests in flight, write
# overlapping and adjacent ranges of the same fresh blocks of a
# differencing disk at once: aligned and unaligned, within a block and
# across block boundaries, plus zero requests.  The result is not fixed,
# but it is constrained.  The range is cut at every request boundary and
# every sector boundary into pieces; each piece must equal the same
# piece of one of the requests that covered it (no torn or lost pieces,
# no data from elsewhere), a piece covered by exactly one request must
# equal it exactly, and a piece no request covered must still show the
# parent.  Each round starts from what the previous one left (read back
# and checked), and after the last round the disk must read the same
# after a restart.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"

K=1024
M=$((1024 * K))
SIZE=$((16 * M))
cd "$tmp"

cat > overlap.py <<'EOF'
import nbd, random, sys, threading
uri, before, after = sys.argv[1], sys.argv[2], sys.argv[3]
seed, nconn, lo, hi, nreq, rounds = map(int, sys.argv[4:10])
rng = random.Random(seed)
cur = bytearray(open(before, "rb").read())
hs = []
for _ in range(nconn):
    h = nbd.NBD()
    h.connect_uri(uri)
    hs.append(h)
IN_FLIGHT = 32
errors = []
peak = [0]
lock = threading.Lock()

for rnd in range(rounds):
    reqs = []                     # (offset, length, data or None=zero)
    for _ in range(nreq):
        x = rng.random()
        if x < 0.5:               # sector aligned, up to 3 blocks
            off = lo + rng.randrange(0, (hi - lo) // 512) * 512
            n = rng.choice([512, 4096, 8192, 65536, 70 * 512, 140000])
        else:                     # unaligned, small or crossing sectors
            off = rng.randrange(lo, hi)
            n = rng.choice([1, 7, 300, 511, 513, 1000, 4097])
        n = max(1, min(n, hi - off))
        if rng.random() < 0.1:
            reqs.append((off, n, None))
        else:
            reqs.append((off, n, rng.randbytes(n)))
    # Adjacent pairs: requests that end exactly where another starts.
    for _ in range(nreq // 10):
        off = lo + rng.randrange(1, (hi - lo) // 4096) * 4096 - rng.choice([0, 1, 256])
        n = rng.choice([512, 4096, 1000])
        if off - n >= lo and off + n <= hi:
            reqs.append((off - n, n, rng.randbytes(n)))
            reqs.append((off, n, rng.randbytes(n)))
    rng.shuffle(reqs)
    per = [[] for _ in hs]
    for k, r in enumerate(reqs):
        per[k % nconn].append(r)
    def run(h, rs):
        keep = []
        i = 0
        cookies = []
        try:
            while i < len(rs) or h.aio_in_flight() > 0:
                while i < len(rs) and h.aio_in_flight() < IN_FLIGHT:
                    off, n, data = rs[i]
                    i += 1
                    if data is None:
                        cookies.append(h.aio_zero(n, off))
                    else:
                        b = nbd.Buffer.from_bytearray(bytearray(data))
                        keep.append(b)
                        cookies.append(h.aio_pwrite(b, off))
                with lock:
                    peak[0] = max(peak[0], sum(x.aio_in_flight() for x in hs))
                h.poll(-1)
            for c in cookies:
                h.aio_command_completed(c)   # raises if the request failed
            h.flush()
        except nbd.Error as e:
            with lock:
                errors.append(str(e))
    ts = [threading.Thread(target=run, args=(hs[j], per[j])) for j in range(nconn)]
    for t in ts: t.start()
    for t in ts: t.join()
    if errors:
        sys.exit("round %d: %s" % (rnd, "; ".join(errors[:5])))

    # Read back (every connection must agree) and check against the model.
    got = hs[0].pread(hi - lo, lo)
    for h in hs[1:]:
        if h.pread(hi - lo, lo) != got:
            sys.exit("round %d: connections disagree" % rnd)
    cuts = set(range(lo - lo % 512, hi + 1, 512)) | {lo, hi}
    for off, n, _ in reqs:
        cuts.add(off); cuts.add(off + n)
    cuts = sorted(c for c in cuts if lo <= c <= hi)
    # Requests covering each piece: sweep.
    starts = sorted(range(len(reqs)), key=lambda k: reqs[k][0])
    active, si, bad, single, multi = [], 0, 0, 0, 0
    for a, b in zip(cuts, cuts[1:]):
        while si < len(starts) and reqs[starts[si]][0] <= a:
            active.append(starts[si]); si += 1
        active = [k for k in active if reqs[k][0] + reqs[k][1] > a]
        piece = got[a - lo:b - lo]
        cands = []
        for k in active:
            off, n, data = reqs[k]
            cands.append(bytes(b - a) if data is None else data[a - off:b - off])
        if not cands:
            ok = piece == cur[a:b]
        else:
            ok = any(piece == c for c in cands)
            if len(cands) == 1: single += 1
            else: multi += 1
        if not ok:
            bad += 1
            if bad <= 5:
                print("round %d: piece [%d, %d) covered by %d requests "
                      "matches none of them" % (rnd, a, b, len(cands)))
    if bad:
        sys.exit("round %d: %d bad pieces" % (rnd, bad))
    if multi == 0:
        sys.exit("round %d: no piece was covered twice" % rnd)
    cur[lo:hi] = got
    print("round %d: %d requests, %d pieces single, %d overlapped"
          % (rnd, len(reqs), single, multi))
if peak[0] < 2 * nconn:
    sys.exit("only %d requests were ever in flight at once" % peak[0])
print("peak in flight:", peak[0])
open(after, "wb").write(cur)
EOF

check "create the parent" "$VHDTOOL" create base.vhd $SIZE
$PY -c "import random,sys; sys.stdout.buffer.write(random.Random(5).randbytes($SIZE))" \
  > parent.raw
check "fill the parent" serve base.vhd -- "nbdcopy $tmp/parent.raw \"\$uri\""
sha_base=$(sha256sum < base.vhd)

# 64 KiB blocks: the range spans eight fresh blocks; 2 MiB blocks: the
# range straddles the boundary between two fresh blocks.
n=0
for spec in "64K $((M + 100)) $((M + 512 * K + 100))" \
            "2M $((2 * M - 256 * K - 7)) $((2 * M + 256 * K + 3))"; do
  set -- $spec
  bs=$1 lo=$2 hi=$3
  n=$((n + 1))
  check "create child -b $bs" "$VHDTOOL" create -p base.vhd -b "$bs" c$bs.vhd
  check "$bs: 6 connections x 32 in flight, 180 requests a round, overlapping writes, 3 rounds" \
    serve c$bs.vhd -- "$PY $tmp/overlap.py \"\$uri\" $tmp/parent.raw \
      $tmp/model$bs.raw $((40 + n)) 6 $lo $hi 150 3"
  grep -E "round|peak" "$tmp/.out" | sed 's/^/# /'
  rm -f out.raw
  read_all out.raw c$bs.vhd
  if [ -f model$bs.raw ]; then
    check_same "$bs: after a restart the disk shows what was read back" \
      out.raw model$bs.raw
  else
    fail "$bs: no model written"
  fi
  check "$bs: vhdtool check is clean" "$VHDTOOL" check c$bs.vhd
done
check "the parent is unchanged" test "$(sha256sum < base.vhd)" = "$sha_base"

done_testing
