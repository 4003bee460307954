# SPDX-License-Identifier: BSD-3-Clause
"""nbdaio.py: many libnbd AIO commands in flight on several connections
at once, for the concurrency tests (imported by the scripts that
test-concurrent.sh and test-overlay-race.sh write; functions.sh puts
tests/ on PYTHONPATH)."""
import select

import nbd


def drive(hs, submit):
    """Run the connections hs until nothing is left to do.

    submit(i) queues on hs[i] whatever it may (the caller bounds how
    much is in flight); it is called again each time replies arrive, so
    it can refill.  Returns the peak number of commands in flight over
    all connections."""
    peak = 0
    while True:
        for i in range(len(hs)):
            submit(i)
        busy = [h for h in hs if h.aio_in_flight() > 0]
        if not busy:
            return peak
        peak = max(peak, sum(h.aio_in_flight() for h in busy))
        r, w = [], []
        for h in busy:
            d = h.aio_get_direction()
            if d & nbd.AIO_DIRECTION_READ:
                r.append(h.aio_get_fd())
            if d & nbd.AIO_DIRECTION_WRITE:
                w.append(h.aio_get_fd())
        rr, ww, _ = select.select(r, w, [], 10)
        for h in busy:
            fd = h.aio_get_fd()
            if fd in rr:
                h.aio_notify_read()
            if fd in ww:
                h.aio_notify_write()
