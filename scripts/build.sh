#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Configure and build nbdkit-vhd in the source tree, for Debian's
# multiarch layout (so that "make install" puts the plugin where nbdkit
# looks for it).  Extra arguments go to ./configure.
set -euo pipefail
cd "$(dirname "$0")/.."

libdir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null ||
                  gcc -print-multiarch)
if [ ! -f config.status ] || [ configure.ac -nt configure ] ||
   [ Makefile.am -nt Makefile.in ] || [ tests/Makefile.inc -nt Makefile.in ]; then
  autoreconf -fi > /dev/null
  ./configure -q --prefix=/usr --libdir="$libdir" --sysconfdir=/etc "$@"
fi
make -j"$(nproc)" > /dev/null
