#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""opmodel.py [OPTIONS] URI: a randomized sequence of NBD requests
against the export at URI, every answer checked against a byte-exact
model of the disk kept here.

The model starts as --initial (a raw file: what the export shows now).
Requests, at arbitrary byte offsets and lengths (unaligned heads and
tails, pieces crossing --block boundaries, ranges ending exactly at the
disk's end, single bytes of the last partial sector):

  write      random bytes, sometimes FUA                  (model: the bytes)
  zero       plain, NO_HOLE, FAST_ZERO (when advertised), FUA
                                                         (model: zeros; a
             FAST_ZERO refused with ENOTSUP changes nothing)
  trim       (model: each byte reads as its old value or as zero; see below)
  read       compared with the model
  extents    base:allocation, sometimes REQ_ONE: the reply starts at the
             offset, is contiguous, covers the range (REQ_ONE: one
             extent), stops at the disk's end, and every byte of an
             extent flagged ZERO is zero in the model
  flush
  zero-size  a request of length 0 (libnbd refuses them unless strict
             mode is relaxed; nbdkit then refuses them before any
             plugin or filter sees them): must fail or succeed without
             changing anything or breaking the connection
  (--enospc, for an overlay size limit: a write refused with ENOSPC
  must have changed nothing; zeros and trims are never refused, as
  nbdkit-overlay-filter(1) promises)
  batch      (--aio) many requests in flight at once on byte ranges that
             do not overlap (often adjacent sub-sector pieces of the
             same sectors), each checked as above; with --batch-flush
             some of them are flushes, racing the writes and reads
             (--flush-weight: how often plain flushes come, default 2)

Trim: NBD lets trimmed bytes read as anything until rewritten; the
implementations tested here either keep the data (vhd plugin) or zero
it (overlay filter), so a trimmed byte must read as its old value or as
zero.  The model keeps a per-byte "uncertain" mark for them, cleared by
the next write or zero of that byte.  The first read (or ZERO extent)
that shows an uncertain byte fixes it: from then on it must keep
reading as what was seen.

Every --verify-every requests, and at the end, the whole disk is read
and compared.  --second: a second connection; "shared" (the same disk:
some reads go through it and must show the model) or "private" (a
per-connection overlay: it must show --initial throughout, and what it
writes at the end must not show through the first).  --final FILE: the
model at the end (every byte certain after the last full read).

The seed (--seed, default $MODEL_SEED or 1) and the number of requests
(--ops, default $MODEL_OPS or 3000) are printed; a failure names the
request number, the seed and the last requests, so it can be replayed.
Exit status 0 if everything matched.
"""
import argparse
import errno
import os
import random
import sys

import nbd

ap = argparse.ArgumentParser()
ap.add_argument("uri")
ap.add_argument("--initial", required=True)
ap.add_argument("--seed", type=int,
                default=int(os.environ.get("MODEL_SEED") or 1))
ap.add_argument("--ops", type=int,
                default=int(os.environ.get("MODEL_OPS") or 3000))
ap.add_argument("--block", type=int, default=65536)
ap.add_argument("--verify-every", type=int, default=250)
ap.add_argument("--second", choices=["none", "shared", "private"],
                default="none")
ap.add_argument("--aio", action="store_true")
ap.add_argument("--batch-flush", action="store_true")
ap.add_argument("--flush-weight", type=int, default=2)
ap.add_argument("--enospc", action="store_true")
ap.add_argument("--final")
ap.add_argument("--name", default="")
a = ap.parse_args()

rng = random.Random(a.seed)
initial = open(a.initial, "rb").read()
model = bytearray(initial)
size = len(model)
unc = bytearray(size)           # 1: trimmed, old value or zero
B = a.block
n_op = 0
history = []
stats = dict(write=0, zero=0, trim=0, read=0, extents=0, flush=0,
             zero_no_hole=0, zero_fast=0, zerosize=0, batch=0, inflight=0, fastzero_refused=0,
             enospc=0, trimmed_read_unchanged=0, trimmed_read_as_zero=0)


def connect():
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(a.uri)
    return h


def fail(msg):
    print("FAIL %s: request %d of %d, seed %d: %s"
          % (a.name, n_op, a.ops, a.seed, msg), file=sys.stderr)
    print("  last requests (newest last):", file=sys.stderr)
    for line in history[-12:]:
        print("    " + line, file=sys.stderr)
    print("  replay: MODEL_SEED=%d MODEL_OPS=%d" % (a.seed, n_op),
          file=sys.stderr)
    sys.exit(1)


def note(desc):
    global n_op
    n_op += 1
    history.append("#%d %s" % (n_op, desc))
    del history[:-50]


h = connect()
h2 = connect() if a.second != "none" else None
if h.get_size() != size:
    fail("export size %d, the initial content has %d" % (h.get_size(), size))
can_fua = h.can_fua()
can_fast_zero = h.can_fast_zero()
can_trim = h.can_trim()

# ------------------------------------------------------------ the model


def define(off, data):
    """A write or zero: the bytes are certain again."""
    model[off:off + len(data)] = data
    unc[off:off + len(data)] = bytes(len(data))


def first_diff(x, y):
    return next(i for i in range(len(x)) if x[i] != y[i])


def check_read(off, got, what):
    """got was read at off: compare with the model, fixing uncertain
    bytes to what was seen."""
    n = len(got)
    end = off + n
    if got == model[off:end]:
        k = unc.count(1, off, end)
        if k:
            stats["trimmed_read_unchanged"] += k
            unc[off:end] = bytes(n)
        return
    pos = off
    while pos < end:
        u = unc.find(1, pos, end)
        cend = end if u < 0 else u
        if got[pos - off:cend - off] != model[pos:cend]:
            i = pos + first_diff(got[pos - off:cend - off], model[pos:cend])
            fail("%s: byte %d (0x%x) reads %r, expected %r (not trimmed)"
                 % (what, i, i, bytes(got[i - off:i - off + 8]),
                    bytes(model[i:i + 8])))
        if u < 0:
            break
        ue = unc.find(0, u, end)
        ue = end if ue < 0 else ue
        seg = bytes(got[u - off:ue - off])
        old = model[u:ue]
        if seg == old:
            stats["trimmed_read_unchanged"] += ue - u
        elif seg.count(0) == len(seg):
            stats["trimmed_read_as_zero"] += ue - u
        else:
            for i in range(len(seg)):
                if seg[i] != old[i] and seg[i] != 0:
                    fail("%s: trimmed byte %d reads %r, neither its old "
                         "value %r nor zero" % (what, u + i, seg[i:i + 8],
                                                bytes(old[i:i + 8])))
        model[u:ue] = seg
        unc[u:ue] = bytes(ue - u)
        pos = ue


def zero_extent_holds(start, end):
    """An extent flagged ZERO: certain bytes must be zero, and uncertain
    ones now are."""
    pos = start
    while pos < end:
        u = unc.find(1, pos, end)
        cend = end if u < 0 else u
        seg = model[pos:cend]
        if seg.count(0) != len(seg):
            i = pos + next(i for i in range(len(seg)) if seg[i])
            fail("extent [%d, %d) is flagged ZERO but byte %d is %r"
                 % (start, end, i, bytes(model[i:i + 8])))
        if u < 0:
            break
        ue = unc.find(0, u, end)
        ue = end if ue < 0 else ue
        model[u:ue] = bytes(ue - u)
        unc[u:ue] = bytes(ue - u)
        stats["trimmed_read_as_zero"] += ue - u
        pos = ue


def verify_all(hh, what, expect=None):
    for off in range(0, size, 1 << 20):
        n = min(1 << 20, size - off)
        try:
            got = hh.pread(n, off)
        except nbd.Error as e:
            fail("%s: pread(%d, %d): %s" % (what, n, off, e))
        if expect is None:
            check_read(off, got, what)
        elif got != expect[off:off + n]:
            i = off + first_diff(got, expect[off:off + n])
            fail("%s: byte %d reads %r, expected %r" % (
                what, i, bytes(got[i - off:i - off + 8]),
                bytes(expect[i:i + 8])))

# ------------------------------------------------------------ ranges


def gen_off():
    r = rng.random()
    if r < 0.25:
        off = rng.randrange(size)
    elif r < 0.45:                      # around a block boundary
        off = rng.randrange(size // B + 1) * B + rng.randint(-700, 700)
    elif r < 0.58:
        off = rng.randrange(size // 512 + 1) * 512
    elif r < 0.66:
        off = rng.randrange(size // 4096 + 1) * 4096
    elif r < 0.80:                      # the last blocks
        off = size - rng.randint(1, 3 * B)
    elif r < 0.90:                      # the last sectors, the last bytes
        off = size - rng.randint(1, 1100)
    else:                               # next to a recent request
        off = rng.choice(recent) if recent else rng.randrange(size)
        off += rng.choice([0, 0, -1, 1, -512, 512])
    return min(max(off, 0), size - 1)


def gen_len(off):
    r = rng.random()
    left = size - off
    if r < 0.30:
        n = rng.randint(1, 600)
    elif r < 0.52:
        n = rng.randint(1, 2 * B + 1024)
    elif r < 0.66:
        n = rng.randint(1, 128) * 512 + rng.choice([0, 0, 0, -1, 1])
    elif r < 0.76:
        n = left                        # to the very end
    elif r < 0.86:
        n = rng.randint(1, 512 * 1024)
    elif r < 0.93:                      # to the next block boundary (+-)
        n = (off // B + 1) * B - off + rng.choice([0, 0, -1, 1, 512])
    else:
        n = rng.randint(4 * B, 6 * B)   # several blocks at once
    return min(max(n, 1), left)


recent = []


def gen_range():
    if rng.random() < 0.04:
        # One byte of the last sector (partial when the size is odd).
        off, n = size - 1 - rng.randrange(size % 512 or 512), 1
    else:
        off = gen_off()
        n = gen_len(off)
    recent.append(off)
    recent.append(off + n)
    del recent[:-16]
    return off, n

# ------------------------------------------------------------ requests


def refused(e, kind):
    """With --enospc (an overlay size limit), a write may be refused
    for lack of space; then it must have changed nothing."""
    if a.enospc and kind == "w" and e.errnum == errno.ENOSPC:
        stats["enospc"] += 1
        return True
    return False


def req(desc, fn, *args):
    try:
        return fn(*args)
    except nbd.Error as e:
        fail("%s: %s" % (desc, e))


def change(desc, kind, fn, *args):
    """req for a write or trim: False if refused (--enospc)."""
    try:
        fn(*args)
        return True
    except nbd.Error as e:
        if refused(e, kind):
            return False
        fail("%s: %s" % (desc, e))


def do_write(off, n):
    data = rng.randbytes(n)
    fl = nbd.CMD_FLAG_FUA if can_fua and rng.random() < 0.15 else 0
    desc = "pwrite(%d bytes, %d%s)" % (n, off, ", FUA" if fl else "")
    note(desc)
    if change(desc, "w", h.pwrite, data, off, fl):
        define(off, data)
    stats["write"] += 1


def zero_flags():
    fl = 0
    names = []
    r = rng.random()
    if r < 0.3:
        fl |= nbd.CMD_FLAG_NO_HOLE
        names.append("NO_HOLE")
    elif r < 0.5 and can_fast_zero:
        fl |= nbd.CMD_FLAG_FAST_ZERO
        names.append("FAST_ZERO")
    if can_fua and rng.random() < 0.1:
        fl |= nbd.CMD_FLAG_FUA
        names.append("FUA")
    return fl, "".join(", " + x for x in names)


def do_zero(off, n):
    fl, fn = zero_flags()
    desc = "zero(%d, %d%s)" % (n, off, fn)
    note(desc)
    try:
        h.zero(n, off, fl)
    except nbd.Error as e:
        # A fast zero may be refused, and then nothing changed.
        if fl & nbd.CMD_FLAG_FAST_ZERO and e.errnum in (errno.ENOTSUP,
                                                        errno.EOPNOTSUPP):
            stats["fastzero_refused"] += 1
            return
        fail("%s: %s" % (desc, e))
    define(off, bytes(n))
    stats["zero"] += 1
    stats["zero_no_hole"] += bool(fl & nbd.CMD_FLAG_NO_HOLE)
    stats["zero_fast"] += bool(fl & nbd.CMD_FLAG_FAST_ZERO)


def do_trim(off, n):
    desc = "trim(%d, %d)" % (n, off)
    note(desc)
    if change(desc, "t", h.trim, n, off):
        unc[off:off + n] = b"\1" * n
    stats["trim"] += 1


def do_read(off, n, hh=None, private=False):
    which = " on connection 2" if hh else ""
    desc = "pread(%d, %d)%s" % (n, off, which)
    note(desc)
    got = req(desc, (hh or h).pread, n, off)
    if private:
        if got != initial[off:off + n]:
            i = off + first_diff(got, initial[off:off + n])
            fail("%s: the private connection 2 reads %r at %d, the "
                 "original content is %r"
                 % (desc, bytes(got[i - off:i - off + 8]), i,
                    initial[i:i + 8]))
    else:
        check_read(off, got, desc)
    stats["read"] += 1


def do_extents(off, n):
    one = rng.random() < 0.2
    desc = "block_status(%d, %d%s)" % (n, off, ", REQ_ONE" if one else "")
    note(desc)
    ext = []

    def cb(meta, start, entries, err):
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            ext.append((start, list(entries)))
        return 0
    req(desc, h.block_status, n, off, cb,
        nbd.CMD_FLAG_REQ_ONE if one else 0)
    if len(ext) != 1:
        fail("%s: %d base:allocation replies" % (desc, len(ext)))
    start, entries = ext[0]
    if start != off or not entries or len(entries) % 2:
        fail("%s: reply at %d with %r" % (desc, start, entries[:8]))
    if one and len(entries) != 2:
        fail("%s: REQ_ONE answered with %d extents" % (desc,
                                                      len(entries) // 2))
    pos = off
    for i in range(0, len(entries), 2):
        length, flags = entries[i], entries[i + 1]
        if length == 0:
            fail("%s: an extent of length 0 at %d" % (desc, pos))
        if pos + length > size:
            fail("%s: extent [%d, %d) past the end of the disk (%d)"
                 % (desc, pos, pos + length, size))
        if flags & nbd.STATE_ZERO:
            zero_extent_holds(pos, pos + length)
        pos += length
    if not one and pos < off + n:
        fail("%s: the extents end at %d, short of %d" % (desc, pos, off + n))
    stats["extents"] += 1


def do_zero_size():
    off = rng.choice([0, rng.randrange(size), size])
    kind = rng.choice(["pread", "pwrite", "zero", "trim"])
    desc = "%s of 0 bytes at %d (strict mode relaxed)" % (kind, off)
    note(desc)
    mode = h.get_strict_mode()
    h.set_strict_mode(mode & ~nbd.STRICT_ZERO_SIZE & ~nbd.STRICT_BOUNDS)
    try:
        if kind == "pread":
            h.pread(0, off)
        elif kind == "pwrite":
            h.pwrite(b"", off)
        elif kind == "zero":
            h.zero(0, off)
        else:
            h.trim(0, off)
    except nbd.Error:
        pass                    # refusing it is fine; breaking is not
    h.set_strict_mode(mode)
    if not h.aio_is_ready():
        fail("%s: the connection is no longer usable" % desc)
    stats["zerosize"] += 1


def do_flush():
    note("flush")
    req("flush", h.flush)
    stats["flush"] += 1


def do_batch():
    """Many requests in flight at once on byte ranges that do not
    overlap, so the result is fixed whatever the order."""
    global n_op
    items = []
    busy = []
    want = rng.randint(4, 32)
    if rng.random() < 0.5:
        # Adjacent small pieces: several requests per sector and block.
        pos = gen_off()
        while len(items) < want and pos < size:
            n = min(rng.randint(1, 700), size - pos)
            items.append((pos, n))
            pos += n + rng.choice([0, 0, 0, 1, 3])
    else:
        for _ in range(4 * want):
            if len(items) >= want:
                break
            off = gen_off()
            n = min(gen_len(off), 128 * 1024)
            if any(off < e and s < off + n for s, e in busy):
                continue
            busy.append((off, off + n))
            items.append((off, n))
    ops = []
    for off, n in items:
        kind = rng.choices("wzrtf", [4, 2, 3, 1 if can_trim else 0,
                                     1 if a.batch_flush else 0])[0]
        if kind == "f":
            ops.append((kind, off, n, None, h.aio_flush(), "aio_flush"))
        elif kind == "w":
            data = rng.randbytes(n)
            buf = nbd.Buffer.from_bytearray(bytearray(data))
            desc = "aio_pwrite(%d bytes, %d)" % (n, off)
            ck = h.aio_pwrite(buf, off)
            ops.append((kind, off, n, data, ck, desc))
        elif kind == "z":
            desc = "aio_zero(%d, %d)" % (n, off)
            ops.append((kind, off, n, None, h.aio_zero(n, off), desc))
        elif kind == "t":
            desc = "aio_trim(%d, %d)" % (n, off)
            ops.append((kind, off, n, None, h.aio_trim(n, off), desc))
        else:
            buf = nbd.Buffer(n)
            desc = "aio_pread(%d, %d)" % (n, off)
            ops.append((kind, off, n, buf, h.aio_pread(buf, off), desc))
    peak = h.aio_in_flight()
    stats["inflight"] = max(stats["inflight"], peak)
    history.append("batch of %d in flight: %s"
                   % (len(ops), "; ".join(o[5] for o in ops)))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for kind, off, n, data, ck, desc in ops:
        n_op += 1
        try:
            h.aio_command_completed(ck)
        except nbd.Error as e:
            if refused(e, kind):
                continue
            fail("%s (in a batch): %s" % (desc, e))
        if kind == "w":
            define(off, data)
        elif kind == "z":
            define(off, bytes(n))
        elif kind == "t":
            unc[off:off + n] = b"\1" * n
    # Reads last: their ranges met no other request of the batch.
    for kind, off, n, buf, ck, desc in ops:
        if kind == "r":
            check_read(off, buf.to_bytearray(), desc + " (in a batch)")
    stats["batch"] += 1

# ------------------------------------------------------------ the run


verify_all(h, "the initial content", initial)
if a.second == "private":
    verify_all(h2, "connection 2, initial content", initial)

kinds = ["write", "zero", "trim", "read", "extents", "flush", "zerosize",
         "read2", "batch"]
weights = [28, 18, 12 if can_trim else 0, 22, 10, a.flush_weight, 1,
           6 if h2 else 0, 4 if a.aio else 0]
since_verify = 0
while n_op < a.ops:
    k = rng.choices(kinds, weights)[0]
    before = n_op
    if k in ("write", "zero", "trim", "read", "extents", "read2"):
        off, n = gen_range()
        if k == "write":
            do_write(off, n)
        elif k == "zero":
            do_zero(off, n)
        elif k == "trim":
            do_trim(off, n)
        elif k == "read":
            do_read(off, n)
        elif k == "read2":
            do_read(off, n, h2, a.second == "private")
        else:
            do_extents(off, n)
    elif k == "flush":
        do_flush()
    elif k == "zerosize":
        do_zero_size()
    else:
        do_batch()
    since_verify += n_op - before
    if since_verify >= a.verify_every:
        since_verify = 0
        note("read the whole disk")
        verify_all(h, "whole-disk read")
        if a.second == "private":
            verify_all(h2, "connection 2, whole disk", initial)

note("flush, then read the whole disk")
req("flush", h.flush)
verify_all(h, "final whole-disk read")
if a.second == "shared":
    note("read the whole disk on connection 2")
    verify_all(h2, "final whole-disk read on connection 2")
elif a.second == "private":
    note("private connection 2 writes; connection 1 must not see it")
    verify_all(h2, "connection 2, final whole disk", initial)
    off = rng.randrange(size)
    n = min(100000, size - off)
    data = rng.randbytes(n)
    req("pwrite on connection 2", h2.pwrite, data, off)
    if h2.pread(n, off) != data:
        fail("connection 2 does not read back its own write")
    verify_all(h, "connection 1 after connection 2 wrote")
if unc.count(1):
    fail("%d bytes still uncertain after the final read" % unc.count(1))
if a.final:
    with open(a.final, "wb") as f:
        f.write(model)
h.shutdown()
if h2:
    h2.shutdown()
print("%s: seed %d, %d requests: %s" % (
    a.name, a.seed, n_op,
    ", ".join("%s %d" % (k, v) for k, v in stats.items())))
