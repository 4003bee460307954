#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build the Debian packages (debian/): nbdkit-plugin-vhd (the plugin and
# the overlay filter) and vhdtool; check them with lintian; install them
# and smoke-test what got installed (vhdtool, the plugin through nbdkit,
# the overlay filter, the bash completion).
#
#   scripts/package.sh [OUTDIR]      OUTDIR defaults to build-deb/
#
# The packages are built in OUTDIR from a copy of this tree (the files
# git knows, uncommitted changes included, and untracked files git does
# not ignore), never in the tree itself: dpkg-buildpackage starts with
# "dh clean", which would remove the build the other scripts made here.
# OUTDIR keeps the .debs (and -dbgsym .debs), the .changes, build.log
# and lintian.log; a new run replaces them.
# Prints one line per check and "N passed, N failed"; exits non-zero on
# any failure.  Needs root (dpkg -i); the packages stay installed.
set -uo pipefail
out=${1:-}
case $out in ""|/*) ;; *) out=$PWD/$out ;; esac
cd "$(dirname "$0")/.."
top=$(pwd)
out=${out:-$top/build-deb}

passed=0 failed=0
ok () { passed=$((passed + 1)); echo "ok   $*"; }
notok () { failed=$((failed + 1)); echo "FAIL $*"; }
finish () {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
# run DESC CMD...: CMD must exit 0; its output is shown if it does not.
run () {
  local desc=$1 st=0
  shift
  "$@" > "$tmp/out" 2>&1 || st=$?
  if [ "$st" -eq 0 ]; then
    ok "$desc"
  else
    notok "$desc (exit $st)"
    tail -n 30 "$tmp/out" | sed 's/^/     /'
  fi
  return "$st"
}

[ -d debian ] || { echo "$0: no debian/ here (the release tarball has none)" >&2; exit 1; }
scripts/deps.sh --packaging || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- build
version=$(dpkg-parsechangelog -S Version)           # 0.1.0-1
upstream=${version#*:}
upstream=${upstream%-*}                              # 0.1.0
src=$out/nbdkit-vhd-$upstream
# Only what an earlier run made goes (OUTDIR may hold other files).
rm -rf "$out"/nbdkit-vhd-[0-9]*/
rm -f "$out"/nbdkit-plugin-vhd_*.deb "$out"/nbdkit-plugin-vhd-dbgsym_*.deb \
      "$out"/vhdtool_*.deb "$out"/vhdtool-dbgsym_*.deb \
      "$out"/nbdkit-vhd_*.changes "$out"/nbdkit-vhd_*.buildinfo \
      "$out"/build.log "$out"/lintian.log
mkdir -p "$src"
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2> /dev/null |
    tar -C "$src" -xf -
else
  tar -cf - --exclude=./build-deb --exclude=./build-san . | tar -C "$src" -xf -
  ( cd "$src" && { [ ! -f Makefile ] || make distclean > /dev/null 2>&1 || :; } )
fi
echo "Building the packages in $src (log: $out/build.log)"
if ( cd "$src" && dpkg-buildpackage -us -uc -b ) > "$out/build.log" 2>&1; then
  ok "dpkg-buildpackage -us -uc -b"
else
  notok "dpkg-buildpackage -us -uc -b"
  tail -n 40 "$out/build.log" | sed 's/^/     /'
  finish
fi
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
plugin_deb=$out/nbdkit-plugin-vhd_${version#*:}_$arch.deb
tool_deb=$out/vhdtool_${version#*:}_$arch.deb
changes=$out/nbdkit-vhd_${version#*:}_$arch.changes
for f in "$plugin_deb" "$tool_deb" "$changes"; do
  [ -f "$f" ] && ok "built $(basename "$f")" || notok "built $(basename "$f")"
done
[ "$failed" -eq 0 ] || finish

# ---------------------------------------------------------------- lintian
# Errors fail; warnings are shown (and kept in lintian.log).
st=0
lintian --fail-on error "$changes" > "$out/lintian.log" 2>&1 || st=$?
sed 's/^/     /' "$out/lintian.log"
[ "$st" -eq 0 ] && ok "lintian: no errors" || notok "lintian (exit $st)"

# ---------------------------------------------------------------- contents
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
plugindir=/usr/lib/$multiarch/nbdkit/plugins
filterdir=/usr/lib/$multiarch/nbdkit/filters
dpkg-deb -c "$plugin_deb" | awk '{ print $6 }' | sed 's,^\.,,' > "$tmp/plugin.list"
dpkg-deb -c "$tool_deb" | awk '{ print $6 }' | sed 's,^\.,,' > "$tmp/tool.list"
has () {   # has LIST PATH DESC
  grep -qx "$2" "$tmp/$1.list" && ok "$3" || notok "$3 ($2 not in the package)"
}
has plugin "$plugindir/nbdkit-vhd-plugin.so" "plugin in $plugindir"
has plugin "$filterdir/nbdkit-overlay-filter.so" "filter in $filterdir"
has plugin /usr/share/man/man1/nbdkit-vhd-plugin.1.gz "nbdkit-vhd-plugin(1)"
has plugin /usr/share/man/man1/nbdkit-overlay-filter.1.gz "nbdkit-overlay-filter(1)"
has tool /usr/bin/vhdtool "vhdtool in /usr/bin"
has tool /usr/share/man/man1/vhdtool.1.gz "vhdtool(1)"
has tool /usr/share/bash-completion/completions/vhdtool "bash completion"
if grep -E 'libvhd|\.la$|\.a$|/include/' "$tmp/plugin.list" "$tmp/tool.list"; then
  notok "no library, libtool archive or header in the packages"
else
  ok "no library, libtool archive or header in the packages"
fi

# The filter's nbdkit: exactly the upstream version whose headers built it.
nbdkit_built=$(pkg-config --modversion nbdkit)
depends=$(dpkg-deb -f "$plugin_deb" Depends)
echo "     Depends: $depends"
case $depends in
  *"nbdkit (>= $nbdkit_built), nbdkit (<< $nbdkit_built.~)"*)
    [ -n "$nbdkit_built" ] && ok "Depends pins nbdkit $nbdkit_built" ||
      notok "Depends pins nbdkit (no version found)" ;;
  *) notok "Depends pins nbdkit $nbdkit_built" ;;
esac

# ---------------------------------------------------------------- install
run "dpkg -i $(basename "$plugin_deb") $(basename "$tool_deb")" \
  dpkg -i "$plugin_deb" "$tool_deb"
for p in nbdkit-plugin-vhd vhdtool; do
  [ "$(dpkg-query -W -f='${Status} ${Version}' "$p" 2> /dev/null)" = \
    "install ok installed ${version#*:}" ] &&
    ok "$p ${version#*:} installed" || notok "$p ${version#*:} installed"
done

# ---------------------------------------------------------------- smoke test
# The installed programs only: system paths first (nbdsh needs the
# system python3 and its nbd module).
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
cd "$tmp" || finish
# A new socket each time: nbdkit 1.32 leaves its socket behind.
srv () { nbdkit -U "$(mktemp -u "$tmp/sockXXXXXX")" "$@"; }

[ "$(command -v vhdtool)" = /usr/bin/vhdtool ] && ok "vhdtool is /usr/bin/vhdtool" ||
  notok "vhdtool is $(command -v vhdtool), not /usr/bin/vhdtool"
v=$(vhdtool --version 2>&1)
[ "$v" = "vhdtool $upstream" ] && ok "vhdtool --version: $v" ||
  notok "vhdtool --version: '$v', wanted 'vhdtool $upstream'"
v=$(nbdkit vhd --dump-plugin 2>&1 | grep '^vhd_version=')
[ "$v" = "vhd_version=$upstream" ] && ok "nbdkit vhd --dump-plugin: $v" ||
  notok "nbdkit vhd --dump-plugin: '$v', wanted vhd_version=$upstream"
v=$(nbdkit vhd --dump-plugin 2>&1 | grep '^path=')
[ "$v" = "path=$plugindir/nbdkit-vhd-plugin.so" ] && ok "nbdkit finds $v" ||
  notok "nbdkit vhd --dump-plugin: '$v'"

run "vhdtool create -t dynamic base.vhd 64M" vhdtool create -t dynamic base.vhd 64M
run "vhdtool create -p base.vhd child.vhd" vhdtool create -p base.vhd child.vhd
run "nbdkit vhd file=child.vhd: write x*512 at 0" \
  srv vhd file=child.vhd --run 'nbdsh -u "$uri" -c "h.pwrite(b\"x\" * 512, 0)"'
run "nbdkit -r vhd child.vhd: read back x*512, zeros after" \
  srv -r vhd child.vhd --run 'nbdsh -u "$uri" -c "
assert h.pread(1024, 0) == b\"x\" * 512 + bytes(512)
assert h.get_size() == 64 << 20"'
run "nbdkit -r vhd base.vhd: the parent still reads zeros" \
  srv -r vhd base.vhd --run 'nbdsh -u "$uri" -c "assert h.pread(512, 0) == bytes(512)"'
run "nbdkit --filter=overlay vhd file=child.vhd: write y*512 at 512, read both" \
  srv --filter=overlay vhd file=child.vhd --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"y\" * 512, 512)
assert h.pread(1024, 0) == b\"x\" * 512 + b\"y\" * 512"'
run "after the overlay: child.vhd unchanged (zeros at 512)" \
  srv -r vhd child.vhd --run 'nbdsh -u "$uri" -c "assert h.pread(1024, 0) == b\"x\" * 512 + bytes(512)"'
run "vhdtool check child.vhd" vhdtool check child.vhd
run "vhdtool info child.vhd names base.vhd" \
  sh -c 'vhdtool info child.vhd | grep -q "base\.vhd"'
run "vhdtool convert -t raw child.vhd flat.raw" vhdtool convert -t raw child.vhd flat.raw
run "flat.raw: x*512 then zeros" sh -c \
  '[ "$(head -c 512 flat.raw | tr -d x | wc -c)" -eq 0 ] &&
   [ "$(tail -c +513 flat.raw | tr -d "\000" | wc -c)" -eq 0 ]'

# The completion as an interactive bash gets it: bash-completion loads it
# from its completions directory on first use.
if [ -f /usr/share/bash-completion/bash_completion ]; then
  v=$(bash --norc --noprofile -c '
    . /usr/share/bash-completion/bash_completion
    __load_completion vhdtool
    COMP_WORDS=(vhdtool convert -t ""); COMP_CWORD=3; _vhdtool
    echo "${COMPREPLY[*]}"' 2>&1)
  [ "$v" = "fixed dynamic raw" ] && ok "bash completion: vhdtool convert -t <TAB>: $v" ||
    notok "bash completion: vhdtool convert -t <TAB>: '$v'"
fi

finish
