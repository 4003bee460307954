#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The bash completion of vhdtool (bash-completion/vhdtool): commands,
# option names, option values and file names, by calling its function
# the way bash does (COMP_WORDS, COMP_CWORD), without the bash-completion
# package.  Its long options must be exactly those each command's --help
# lists (plus --help).

. "${top_srcdir:-.}/tests/functions.sh"

COMPLETION="$top_srcdir/bash-completion/vhdtool"
[ -f "$COMPLETION" ] || skip_all "no $COMPLETION"
# shellcheck source=/dev/null
. "$COMPLETION" || skip_all "sourcing $COMPLETION failed"

# comp WORDS...: complete the last word; the offers, sorted, one line.
comp () {
  COMP_WORDS=("$@")
  COMP_CWORD=$(( $# - 1 ))
  COMPREPLY=()
  _vhdtool 2> /dev/null
  printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | LC_ALL=C sort | tr '\n' ' ' |
    sed 's/ $//'
}

# offers DESC EXPECTED WORDS...: exactly EXPECTED (sorted, space
# separated) is offered.
offers () {
  local desc=$1 want=$2 got
  shift 2
  got=$(comp "$@")
  if [ "$got" = "$want" ]; then
    pass "$desc"
  else
    fail "$desc: got '$got', wanted '$want'"
  fi
}

# A directory of its own ($tmp may hold the harness's hidden files).
mkdir "$tmp/files" && cd "$tmp/files" || exit 1
mkdir sub
touch a.vhd B.VHD c.avhd d.raw

offers "vhdtool cr<TAB> gives create" "create" vhdtool cr
offers "vhdtool <TAB> lists the commands" \
  "check compact convert create help info map merge resize scan set-parent" vhdtool ""
offers "vhdtool --v<TAB> gives --version" "--version" vhdtool --v
offers "convert -t <TAB>: fixed dynamic raw" "dynamic fixed raw" \
  vhdtool convert -t ""
offers "create --type <TAB>: fixed dynamic" "dynamic fixed" \
  vhdtool create --type ""
offers "convert --type=<TAB> (split at =)" "dynamic fixed raw" \
  vhdtool convert --type = ""
offers "convert --type=r<TAB> (one word)" "--type=raw" vhdtool convert --type=r
offers "info <TAB>: directories and VHD files" "B.VHD a.vhd c.avhd sub" \
  vhdtool info ""
offers "info --parent <TAB>: VHD files" "B.VHD a.vhd c.avhd sub" \
  vhdtool info --parent ""
offers "check --parent-dir <TAB>: directories" "sub" \
  vhdtool check --parent-dir ""
offers "merge --into <TAB>: VHD files" "B.VHD a.vhd c.avhd sub" \
  vhdtool merge --into ""
offers "merge -p is --progress: FILE follows" "B.VHD a.vhd c.avhd sub" \
  vhdtool merge -p ""
offers "create -p <TAB>: the parent, a VHD file" "B.VHD a.vhd c.avhd sub" \
  vhdtool create -p ""
offers "convert FILE <TAB>: OUTPUT, any file" "B.VHD a.vhd c.avhd d.raw sub" \
  vhdtool convert -t raw a.vhd ""
offers "convert FILE OUTPUT <TAB>: nothing more" "" \
  vhdtool convert a.vhd out.raw ""
offers "set-parent FILE <TAB>: PARENT, a VHD file" "B.VHD a.vhd c.avhd sub" \
  vhdtool set-parent a.vhd ""
offers "create FILE <TAB>: SIZE, nothing offered" "" vhdtool create a.vhd ""
offers "resize <TAB>: FILE, a VHD file" "B.VHD a.vhd c.avhd sub" \
  vhdtool resize ""
offers "resize FILE <TAB>: SIZE, nothing offered" "" vhdtool resize a.vhd ""
offers "create --block-size <TAB>: nothing offered" "" \
  vhdtool create --block-size ""
offers "map --c<TAB> gives --cache-size --confine-parents" \
  "--cache-size --confine-parents" vhdtool map --c
offers "map --cache-size <TAB>: a size, nothing offered" "" \
  vhdtool map --cache-size ""
offers "compact -p <TAB>: VHD files" "B.VHD a.vhd c.avhd sub" \
  vhdtool compact -p ""
offers "merge --cache-size 4M <TAB>: FILE" "B.VHD a.vhd c.avhd sub" \
  vhdtool merge --cache-size 4M ""
offers "create -f <TAB>: vhd vhdx" "vhd vhdx" vhdtool create -f ""
offers "convert --format <TAB>: vhd vhdx raw" "raw vhd vhdx" \
  vhdtool convert --format ""
offers "create --logical-sector-size <TAB>: 512 4096" "4096 512" \
  vhdtool create --logical-sector-size ""
offers "create --physical-sector-size=<TAB> (split at =)" "4096 512" \
  vhdtool create --physical-sector-size = ""
offers "create -f vhdx -b 1M <TAB>: FILE" "B.VHD a.vhd c.avhd sub" \
  vhdtool create -f vhdx -b 1M ""
offers "scan <TAB>: directories and any file" "B.VHD a.vhd c.avhd d.raw sub" \
  vhdtool scan ""
offers "scan -r DIR <TAB>: more of them" "B.VHD a.vhd c.avhd d.raw sub" \
  vhdtool scan -r sub ""
mkdir vx && touch vx/d.vhdx vx/e.AVHDX vx/f.txt
offers "info vx/<TAB>: VHDX and AVHDX files too" "vx/d.vhdx vx/e.AVHDX" \
  vhdtool info vx/

# Every command's long options, against its own --help.
for cmd in create info check map merge compact convert set-parent resize scan; do
  want=$( { "$VHDTOOL" "$cmd" --help | grep -o -- '--[a-z][a-z-]*'
            echo --help; } | LC_ALL=C sort -u | tr '\n' ' ' | sed 's/ $//')
  got=$(comp vhdtool "$cmd" -- | tr ' ' '\n' | grep -- '^--' | tr '\n' ' ' |
        sed 's/ $//')
  if [ "$got" = "$want" ]; then
    pass "$cmd: the long options of $cmd --help"
  else
    fail "$cmd: offers '$got', --help lists '$want'"
  fi
done

# A real bash, as an interactive user has it: sourcing the file
# registers the function for vhdtool.
out=$(bash --norc --noprofile -c '. "$1"; complete -p vhdtool' _ "$COMPLETION" 2>&1)
case $out in
  *"-F _vhdtool vhdtool"*) pass "complete -p vhdtool after sourcing" ;;
  *) fail "complete -p vhdtool: $out" ;;
esac

done_testing
