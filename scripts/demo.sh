#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Quick start, first command: install dependencies, build and install
# nbdkit-vhd, create a demo chain and serve it over NBD.
#
#   base.vhd   dynamic, 64 MiB: every 1 MiB starts with the text
#              "BASE block N", the rest of the disk is zeros
#   child.vhd  differencing child of base.vhd that overrides part of it:
#              "CHILD wrote this" at 1 MiB and at 3 MiB + 512 bytes
#
# The child is served on nbd://localhost (port 10809) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
scripts/build.sh
make install > /dev/null        # nbdkit finds the plugin as "vhd"

demo=${DEMO_DIR:-/tmp/nbdkit-vhd-demo}
rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"

vhdtool create -t dynamic base.vhd 64M
nbdkit -U - vhd base.vhd --run '
  /usr/bin/python3 - "$uri" <<PY
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for i in range(64):
    h.pwrite(("BASE block %d" % i).encode().ljust(512, b"."), i << 20)
h.flush()
PY'
vhdtool create -p base.vhd child.vhd
nbdkit -U - vhd child.vhd --run '
  /usr/bin/python3 - "$uri" <<PY
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b"CHILD wrote this", 1 << 20)
h.pwrite(b"CHILD wrote this", (3 << 20) + 512)
h.flush()
PY'

vhdtool info child.vhd
cat <<MSG

Demo chain in $demo: child.vhd -> base.vhd.  Serving child.vhd on
nbd://localhost (Ctrl-C stops).  In another terminal try:

  nbdinfo --map nbd://localhost           # which ranges hold data
  nbdsh -u nbd://localhost -c 'print(h.pread(16, 0))'
        # b'BASE block 0....'  (from the parent)
  nbdsh -u nbd://localhost -c 'print(h.pread(16, 1<<20))'
        # b'CHILD wrote this'  (the child overrides "BASE block 1")
  nbdcopy nbd://localhost $demo/disk.raw
  qemu-img convert -f raw -O qcow2 nbd://localhost $demo/guest.qcow2

Writes from clients land in child.vhd; base.vhd is never modified.
MSG
exec nbdkit -f -i 127.0.0.1 vhd file=child.vhd
