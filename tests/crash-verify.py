#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# crash-verify.py PARENT.RAW DISK.RAW LOG: the model check of
# test-crash.sh (see its header), on the log crash-writer.py keeps.
import hashlib, sys
parent = open(sys.argv[1], "rb").read()
disk = open(sys.argv[2], "rb").read()
def sector(w, s):
    return hashlib.sha256(b"%d:%d" % (w, s)).digest() * 16
ns = len(disk) // 512
writes = {}           # id -> (s, n)
order = []            # ids in submission order
acked = set()
durable = set()       # writes acknowledged before a flush of their session
session_start = 0     # position in order where the current server began
durable_upto = 0      # for the summary line
for line in open(sys.argv[3]):
    f = line.split()
    if f[0] == "S":
        w, s, n = map(int, f[1:])
        writes[w] = (s, n)
        order.append(w)
    elif f[0] == "A":
        acked.add(int(f[1]))
    elif f[0] == "F":
        # A flush covers what this server acknowledged.  Writes left
        # unflushed when an earlier server was killed stay undecided
        # for ever: they may or may not have survived that kill.
        durable.update(w for w in order[session_start:] if w in acked)
        durable_upto = len(order)
    elif f[0] == "END":
        session_start = len(order)
pos = {w: i for i, w in enumerate(order)}
# per sector: ids that covered it, in order
cover = [[] for _ in range(ns)]
for w in order:
    s, n = writes[w]
    for x in range(s, s + n):
        cover[x].append(w)
bad = 0
lost = 0
for x in range(ns):
    got = disk[x * 512:(x + 1) * 512]
    flushed = [w for w in cover[x] if w in durable]
    floor = pos[flushed[-1]] if flushed else -1
    allowed = [w for w in cover[x] if pos[w] >= floor]
    if any(got == sector(w, x) for w in allowed):
        continue
    if floor < 0 and got == parent[x * 512:(x + 1) * 512]:
        continue
    if any(got == sector(w, x) for w in cover[x]) or \
       got == parent[x * 512:(x + 1) * 512]:
        lost += 1
        what = "an older value than its last flushed write %d" % flushed[-1]
    else:
        bad += 1
        what = "data never written to it"
    if lost + bad <= 5:
        print("sector %d holds %s" % (x, what))
print("%d writes sent, %d acknowledged, %d durable (acknowledged and then "
      "flushed); %d sent before the last completed flush"
      % (len(order), len(acked), len(durable), durable_upto))
sys.exit(1 if bad or lost else 0)
