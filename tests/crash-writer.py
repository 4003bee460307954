#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# crash-writer.py URI LOG SEED FIRST-ID: random writes and flushes until
# the server goes away (test-crash.sh, test-vhdx-crash.sh).  LOG gets
# "S id off n" before a write is sent, "A id" once it is acknowledged,
# "F" once a flush is acknowledged.
import hashlib, nbd, random, sys
uri, log, seed, wid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
size_s = None
def sector(w, s):
    return hashlib.sha256(b"%d:%d" % (w, s)).digest() * 16
out = open(log, "a", buffering=1)
h = nbd.NBD()
h.connect_uri(uri)
size_s = h.get_size() // 512
try:
    while True:
        if rng.random() < 0.15:
            h.flush()
            out.write("F\n")
            continue
        n = rng.choice([1, 1, 8, 8, 64, 128, 300])
        s = rng.randrange(0, size_s - n)
        wid += 1
        data = b"".join(sector(wid, x) for x in range(s, s + n))
        out.write("S %d %d %d\n" % (wid, s, n))
        h.pwrite(data, s * 512)
        out.write("A %d\n" % wid)
except nbd.Error:
    pass
out.write("END %d\n" % wid)
