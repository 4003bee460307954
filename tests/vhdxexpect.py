#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""vhdxexpect.py FILE ASSERTION...: check the BAT of the VHDX file FILE
(read by tests/vhdxgen.py's independent reader, a pending log replayed
in memory) against ASSERTIONs; exit 1 naming every one that fails.

Assertions:
  B=STATES[:BITS]  payload block B (a number, or "last") is in one of
                   STATES, '|'-separated names or numbers: np (0),
                   undef (1), zero (2), unmapped (3), full (6),
                   partial (7).  BITS, checked only when the block is
                   partial: the exact set of its sectors whose bitmap bit
                   is set, "FIRST+COUNT,..." (block-relative sectors), or
                   "all" (every sector of the block inside the disk).
  others=STATES    every payload block not named in a B= assertion.
  sb=C,...         the chunks whose sector bitmap block is present,
                   exactly ("sb=" for none).
  offsets=JSON     every payload block has the state and file offset it
                   has in JSON (an earlier `vhdxgen.py states` output).
Always checked: a ZERO entry has file offset 0; a file without a parent
has no PARTIALLY_PRESENT block; no two blocks share a file offset (the
reader refuses that already).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdxgen  # noqa: E402

NAMES = {"np": 0, "undef": 1, "zero": 2, "unmapped": 3, "full": 6,
         "partial": 7}


def states_of(text):
    out = set()
    for w in text.split("|"):
        out.add(NAMES[w] if w in NAMES else int(w))
    return out


def bits_of(text, spb):
    if text == "all":
        return [[0, spb]] if spb else []
    out = []
    for part in filter(None, text.split(",")):
        first, count = part.split("+")
        out.append([int(first), int(count)])
    return out


def main(argv):
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[0]
    try:
        info = vhdxgen.states_info(path)
    except (vhdxgen.SpecError, OSError, ValueError) as e:
        print("vhdxexpect: %s" % e)
        return 1
    blocks = info["blocks"]
    n = info["payload_blocks"]
    spb_last = (info["virtual_disk_size"] - (n - 1) * info["block_size"]) \
        // info["logical_sector_size"]
    errs = []
    named = set()
    others = None

    def entry(b):
        return blocks.get(str(b), {"state": "not_present", "value": 0,
                                   "offset": 0, "bits": []})

    for a in argv[1:]:
        key, _, val = a.partition("=")
        if key == "others":
            others = states_of(val)
        elif key == "sb":
            want = sorted(int(c) for c in filter(None, val.split(",")))
            got = sorted(int(c) for c in info["sb"])
            if want != got:
                errs.append("sector bitmap blocks present for chunks %s, "
                            "wanted %s" % (got, want))
        elif key == "offsets":
            old = json.load(open(val))["blocks"]
            for b in range(n):
                o = old.get(str(b), {"value": 0, "offset": 0})
                e = entry(b)
                if (o["value"], o["offset"]) != (e["value"], e["offset"]):
                    errs.append("block %d: state %d offset %d, was state %d "
                                "offset %d" % (b, e["value"], e["offset"],
                                               o["value"], o["offset"]))
        else:
            b = n - 1 if key == "last" else int(key)
            named.add(b)
            st, _, bits = val.partition(":")
            e = entry(b)
            if e["value"] not in states_of(st):
                errs.append("block %d is %s (%d), wanted %s"
                            % (b, e["state"], e["value"], st))
            elif bits and e["value"] == 7:
                spb = spb_last if b == n - 1 else info["sectors_per_block"]
                want = bits_of(bits, spb)
                if e["bits"] != want:
                    errs.append("block %d: bitmap bits set %s, wanted %s"
                                % (b, e["bits"], want))
    for k, e in blocks.items():
        if e["value"] == 2 and e["offset"] != 0:
            errs.append("block %s is ZERO with file offset %d (must be 0)"
                        % (k, e["offset"]))
        if e["value"] == 7 and not info["has_parent"]:
            errs.append("block %s is PARTIALLY_PRESENT in a file without "
                        "a parent" % k)
    if others is not None:
        for b in range(n):
            if b not in named and entry(b)["value"] not in others:
                errs.append("block %d is %s, wanted one of %s"
                            % (b, entry(b)["state"], sorted(others)))
                if len(errs) > 20:
                    break
    for e in errs[:20]:
        print(e)
    if not errs:
        print("%s: %s" % (path, json.dumps(info["counts"], sort_keys=True)))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
