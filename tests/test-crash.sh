#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Crash consistency of the write path (lib/write.c's argument, tested):
# start nbdkit on a differencing disk, let a client write random
# sector-aligned ranges and flush now and then, and SIGKILL nbdkit at a
# random moment.  After every kill:
#   - the chain opens (nbdkit serves it) and vhdtool check is clean;
#   - every write acknowledged before a completed flush reads back (or
#     a later write over the same sector does);
#   - no sector holds data never written to it: every sector shows the
#     parent's content or one of the writes ever submitted over it (and
#     none older than its last flushed write).
# The child accumulates over the iterations, so later runs allocate
# into a file an earlier kill left behind.  Every sector a write puts
# down encodes the write's number and the sector, so the check knows
# exactly which write a sector came from.
#
# CRASH_ITERATIONS (default 4) sets the number of kills; the long mode
# is CRASH_ITERATIONS=100 (docs/reliability.md).  CRASH_SEED picks the
# random sequence (default: random, printed).

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
$PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"
command -v nbdcopy > /dev/null || skip_all "nbdcopy not installed"

iterations=${CRASH_ITERATIONS:-4}
seed=${CRASH_SEED:-$RANDOM}
echo "# CRASH_ITERATIONS=$iterations CRASH_SEED=$seed"
M=$((1024 * 1024))
SIZE=$((8 * M))
cd "$tmp"

cat > writer.py <<'EOF2'
# writer.py URI LOG SEED FIRST-ID: random writes and flushes until the
# server goes away.  LOG gets "S id off n" before a write is sent, "A id"
# once it is acknowledged, "F" once a flush is acknowledged.
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
EOF2

cat > verify.py <<'EOF2'
# verify.py PARENT.RAW DISK.RAW LOG: the model check described above.
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
EOF2

check "create the parent" "$VHDTOOL" create -b 512K base.vhd $SIZE
$PY -c "import random,sys; sys.stdout.buffer.write(random.Random(1).randbytes($SIZE))" \
  > parent.raw
check "fill the parent" serve base.vhd -- "nbdcopy $tmp/parent.raw \"\$uri\""
sha_base=$(sha256sum < base.vhd)
check "create the child (64 KiB blocks)" \
  "$VHDTOOL" create -p base.vhd -b 64K child.vhd
: > log

rng () {    # rng N: a pseudo-random number in [0, N) from the seed
  seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
  echo $(( (seed / 65536) % $1 ))
}

wid=0
for i in $(seq 1 "$iterations"); do
  sock=$tmp/sock$i
  pidf=$tmp/pid$i
  nbdkit -U "$sock" -P "$pidf" "$PLUGIN" "$tmp/child.vhd" 2> "nbdkit$i.log"
  for _ in $(seq 200); do [ -s "$pidf" ] && [ -S "$sock" ] && break; sleep 0.05; done
  pid=$(cat "$pidf" 2> /dev/null || echo 0)
  cleanup_fn "kill -9 $pid 2> /dev/null"
  $PY writer.py "nbd+unix:///?socket=$sock" log "$(rng 1000000)" "$wid" \
    2> "writer$i.err" &
  wpid=$!
  # Kill after 50 ms .. 1.5 s.
  sleep "$(( $(rng 1450) + 50 ))e-3"
  kill -9 "$pid"
  wait "$wpid"
  wid=$(awk '$1 == "END" { w = $2 } END { print w + 0 }' log)
  for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.05; done

  rm -f disk.raw
  if read_all disk.raw child.vhd > "open$i.log" 2>&1; then
    pass "kill $i: the chain opens"
  else
    fail "kill $i: the chain opens"
    diag_file "open$i.log"
    continue
  fi
  check "kill $i: vhdtool check is clean" "$VHDTOOL" check child.vhd
  check "kill $i: flushed writes read back, nothing never written" \
    $PY verify.py parent.raw disk.raw log
  grep -h "writes" "$tmp/.out" | sed "s/^/# kill $i: /"
done
check "the parent is unchanged" test "$(sha256sum < base.vhd)" = "$sha_base"

done_testing
