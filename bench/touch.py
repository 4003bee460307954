#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Touch every block of a disk through an NBD server; time and peak RSS.

  bench/touch.py SERVER PLUGIN FILE [STRIDE] [INFLIGHT]

SERVER is "ours" (nbdkit PLUGIN FILE) or "qemu-nbd" (qemu-nbd -r -f vpc
FILE; PLUGIN is ignored).  Starts the server on a Unix socket, reads
4 KiB at the start of every STRIDE bytes (default 2 MiB: one read per
block) over one connection with INFLIGHT requests in flight (default
64), then reads the server's peak RSS (VmHWM in /proc/PID/status:
the server process alone, not the client) and stops the server.
Prints "SECONDS RSS_MIB": the wall time of the reads (not of the
server's start) and the server's peak RSS.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

import nbd


def hwm_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM for pid %d" % pid)


def main():
    server, plugin, path = sys.argv[1:4]
    stride = int(sys.argv[4]) if len(sys.argv) > 4 else 2 << 20
    inflight = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    d = tempfile.mkdtemp(prefix="touch.")
    sock, pidf = d + "/sock", d + "/pid"
    if server == "ours":
        cmd = ["nbdkit", "-U", sock, "-P", pidf, plugin, path]
    elif server == "qemu-nbd":
        cmd = ["qemu-nbd", "-r", "-t", "-f", "vpc", "--fork",
               "--pid-file=" + pidf, "-k", sock, path]
    else:
        sys.exit("touch: unknown server " + server)
    subprocess.run(cmd, check=True)    # both return once serving
    pid = None
    try:
        for _ in range(600):
            if os.path.exists(sock) and os.path.exists(pidf):
                s = open(pidf).read().strip()
                if s:
                    pid = int(s)
                    break
            time.sleep(0.05)
        if pid is None:
            sys.exit("touch: the server did not start")
        h = nbd.NBD()
        h.connect_unix(sock)
        size = h.get_size()
        buf = nbd.Buffer(4096)
        t = time.monotonic()
        for off in range(0, size - 4095, stride):
            while h.aio_in_flight() >= inflight:
                h.poll(-1)
            h.aio_pread(buf, off, completion=lambda *a: 1)   # auto-retire
        while h.aio_in_flight() > 0:
            h.poll(-1)
        el = time.monotonic() - t
        rss = hwm_mib(pid)
        h.shutdown()
        print("%.3f %.1f" % (el, rss))
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        for f in (sock, pidf):
            if os.path.exists(f):
                os.unlink(f)
        os.rmdir(d)


if __name__ == "__main__":
    main()
