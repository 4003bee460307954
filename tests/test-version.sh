#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# One version number: configure.ac's AC_INIT, as configure put it in
# config.h, is what vhdtool --version, "nbdkit vhd --dump-plugin"
# (vhd_version=) and "nbdkit vhd --version" report, what the man pages
# and the first entry of NEWS carry, and, in a git tree with the Debian
# packaging (the release tarball has none), the upstream part of the
# newest debian/changelog entry.

. "${top_srcdir:-.}/tests/functions.sh"

version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' \
  "$top_builddir/config.h")
[ -n "$version" ] || {
  echo "Bail out! no PACKAGE_VERSION in $top_builddir/config.h"
  exit 1
}
echo "# version $version"

# same DESC GOT: GOT is the version.
same () {
  if [ "$2" = "$version" ]; then
    pass "$1 ($2)"
  else
    fail "$1: '$2', configure says '$version'"
  fi
}

same "configure.ac's AC_INIT" "$(sed -n \
  's/^AC_INIT(\[nbdkit-vhd\], *\[\([^]]*\)\].*/\1/p' "$top_srcdir/configure.ac")"

same "vhdtool --version" "$("$VHDTOOL" --version | sed -n 's/^vhdtool //p')"

same "nbdkit vhd --dump-plugin: vhd_version=" \
  "$(nbdkit "$PLUGIN" --dump-plugin | sed -n 's/^vhd_version=//p')"

same "nbdkit vhd --version" \
  "$(nbdkit "$PLUGIN" --version | sed -n 's/^vhd //p')"

# The first release heading in NEWS ("0.1.0 (DATE)").
same "NEWS, first entry" "$(grep -Em1 '^[0-9]+\.[0-9]+\.[0-9]+' \
  "$top_srcdir/NEWS" | cut -d' ' -f1)"

# The man pages (pod2man's .TH line names the release), when built.
for page in plugin/nbdkit-vhd-plugin.1 filters/nbdkit-overlay-filter.1 \
            tools/vhdtool.1; do
  if [ -f "$top_builddir/$page" ]; then
    same "$page" "$(sed -n 's/^\.TH .*"nbdkit-vhd \([^"]*\)".*/\1/p' \
      "$top_builddir/$page")"
  else
    skip "$page not built (no pod2man)"
  fi
done

# debian/changelog: "nbdkit-vhd (EPOCH:UPSTREAM-REVISION) ...".
if [ -f "$top_srcdir/debian/changelog" ]; then
  same "debian/changelog, newest entry" "$(sed -n \
    '1s/^[^ ]* (\([0-9]*:\)\{0,1\}\([^)]*\)).*/\2/p' \
    "$top_srcdir/debian/changelog" | sed 's/-[^-]*$//')"
else
  skip "no debian/changelog (not in the release tarball)"
fi

done_testing
