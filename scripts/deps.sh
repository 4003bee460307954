#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install what building and testing nbdkit-vhd needs on Debian 12.
# Idempotent: installs only packages that are missing.
#
#   scripts/deps.sh              build and test
#   scripts/deps.sh --packaging  that, and what building and checking the
#                                Debian packages needs (scripts/package.sh)
set -euo pipefail

packages=(
  build-essential autoconf automake libtool pkg-config perl
  nbdkit nbdkit-plugin-dev uuid-dev
  libnbd-bin python3-libnbd libnbd-dev
  qemu-utils libvhdi-utils fuse3 fio valgrind time strace bash-completion
)
case "${1:-}" in
  "") ;;
  --packaging) packages+=(dpkg-dev debhelper lintian) ;;
  *) echo "usage: $0 [--packaging]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: need root to install packages (or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
