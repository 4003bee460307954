#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""bsprobe.py URI DATA_RANGES [SEED]

Send NBD block status requests of every shape a client may send to the
export at URI and check each answer against what the disk holds.
DATA_RANGES is a comma-separated list of START:END byte ranges (Python
expressions allowed, with G, M, K and SIZE) that must be reported as
data; everything else must be reported as a zero hole.  "none" means
no data at all.

Shapes: offsets 0, 1, 511, 512, around 4 GiB boundaries, around
each data range's ends, near the end of the disk and some random ones;
counts 1, 511, 4096, 2^31-1, 2^32-512, 2^32-1 (the largest a request
can carry) and "to the end of the disk", each clipped to the disk,
with and without REQ_ONE.  Checks: the server answers (an abort would
end the connection), the first extent starts at the offset and
extents are contiguous, REQ_ONE gets exactly one extent no longer than
the request and as long as the disk allows (the whole run of that
type up to the request's end), and every byte of an answer inside the
request has the expected type.  Prints one line per failure and a
summary; exits 1 on any failure.
"""
import random
import sys

import nbd

K = 1024
M = K * K
G = M * K
U32 = 2**32 - 1

uri, spec = sys.argv[1:3]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rng = random.Random(seed)

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
SIZE = h.get_size()
env = {"G": G, "M": M, "K": K, "SIZE": SIZE}

data = []
if spec != "none":
    for r in spec.split(","):
        a, b = r.split(":")
        data.append((eval(a, env), eval(b, env)))
data.sort()


def type_runs(lo, hi):
    """Expected (start, end, flags) runs covering [lo, hi)."""
    runs = []
    pos = lo
    for a, b in data:
        if b <= pos or a >= hi:
            continue
        if a > pos:
            runs.append((pos, min(a, hi), 3))
        runs.append((max(a, pos), min(b, hi), 0))
        pos = min(b, hi)
    if pos < hi:
        runs.append((pos, hi, 3))
    return runs


def run_end(off):
    """End of the maximal run of one type that contains off."""
    for s, e, _ in type_runs(off, SIZE):
        return e
    return SIZE


failures = 0
probes = 0


def bad(msg):
    global failures
    failures += 1
    print("FAIL", msg)


def probe(off, count, req_one):
    global probes
    if off < 0 or off >= SIZE:
        return
    count = min(count, SIZE - off, U32)
    if count <= 0:
        return
    probes += 1
    got = []

    def cb(metacontext, offset, entries, err):
        got.extend(zip(entries[0::2], entries[1::2]))
        return 0

    what = "block_status(off=%d, count=%d%s)" % (
        off, count, ", REQ_ONE" if req_one else "")
    try:
        h.block_status(count, off, cb,
                       nbd.CMD_FLAG_REQ_ONE if req_one else 0)
    except nbd.Error as e:
        bad("%s: %s" % (what, e))
        raise SystemExit(1)     # the server is gone: stop here
    if not got:
        bad("%s: no extents" % what)
        return
    if req_one:
        if len(got) != 1:
            bad("%s: %d extents" % (what, len(got)))
        want = min(run_end(off), off + count) - off
        if got[0][0] != want:
            bad("%s: extent of %d bytes, wanted %d" % (what, got[0][0], want))
    pos = off
    for length, flags in got:
        if length == 0:
            bad("%s: zero-length extent at %d" % (what, pos))
            return
        lo, hi = pos, min(pos + length, off + count)
        for s, e, want in type_runs(lo, hi):
            if (flags & 3) != want:
                bad("%s: [%d, %d) reported flags %d, wanted %d"
                    % (what, s, e, flags & 3, want))
                return
        pos += length


offsets = {0, 1, 511, 512, 4096, SIZE - 1, SIZE - 512, SIZE - 4096,
           max(0, SIZE - U32), max(0, SIZE - U32 - 1)}
# Around the first two 4 GiB boundaries and the last one.
for k in sorted({1, 2, SIZE // (4 * G)} - {0}):
    for d in (-513, -1, 0, 1, 512):
        offsets.add(k * 4 * G + d)
for a, b in data:
    for d in (-1, 0, 1):
        offsets.update({a + d, b + d})
offsets.update(rng.randrange(SIZE) for _ in range(8))
counts = [1, 511, 4096, 2**31 - 1, 2**32 - 512, U32, None]
for off in sorted(o for o in offsets if 0 <= o < SIZE):
    for c in counts:
        for req_one in (False, True):
            probe(off, SIZE - off if c is None else c, req_one)

print("%d probes, %d failures" % (probes, failures))
sys.exit(1 if failures else 0)
