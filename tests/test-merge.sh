#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool merge: chains of depth 1, 3 and 10 written by the independent
# generator, with overlapping writes (and explicit zeros) in every
# layer, merged into the parent and, with --into, into ancestors further
# down.  Afterwards the target must show the generator's model of the
# chain byte for byte (served by the plugin; qemu-img too for fixed and
# dynamic targets), the merged-from files must be gone, and the layers
# under the target untouched.  A merge killed (SIGKILL) at each of its
# steps, and at random moments, must leave FILE opening with the same
# content, and running the command again must complete the merge.
#
# TAP output, via tests/functions.sh.

. "${top_srcdir:-.}/tests/functions.sh"

PY=/usr/bin/python3
for prog in nbdcopy qemu-img $PY sha256sum; do
  command -v "$prog" > /dev/null || skip_all "$prog not installed"
done
d=$(cd "$tmp" && pwd -P)

# Random sector runs for a layer, as JSON: random_writes SEED COUNT SIZE MAXLEN [ZEROFRAC]
random_writes () {
  $PY -c '
import json, random, sys
seed, count, size, maxlen = map(int, sys.argv[1:5])
zero = float(sys.argv[5]) if len(sys.argv) > 5 else 0.1
r = random.Random(seed)
w = []
for _ in range(count):
    n = r.randrange(1, maxlen // 512 + 1) * 512
    off = r.randrange(0, (size - n) // 512 + 1) * 512
    w.append([off, n, 0] if r.random() < zero else [off, n])
print(json.dumps(w))' "$@"
}

# make_chain NAME DEPTH SIZE BASETYPE SEED [MAXLEN]: $d/NAME/l0.vhd (the
# base) .. lDEPTH.vhd, block sizes varying, every layer overlapping the
# others; expected.raw is lDEPTH's view.
make_chain () {
  local name=$1 depth=$2 size=$3 btype=$4 seed=$5 maxlen=${6:-300000} i bs
  {
    echo "{ \"size\": $size, \"seed\": $seed, \"layers\": ["
    echo "  { \"file\": \"l0.vhd\", \"type\": \"$btype\", \"writes\": $(random_writes "$seed" 25 "$size" "$maxlen" 0) }"
    for i in $(seq 1 "$depth"); do
      case $((i % 4)) in
      0) bs=2097152 ;; 1) bs=2097152 ;; 2) bs=524288 ;; 3) bs=65536 ;;
      esac
      printf '  ,{ "file": "l%d.vhd", "type": "differencing", "block_size": %d, "writes": %s }\n' \
        "$i" "$bs" "$(random_writes $((seed * 100 + i)) 20 "$size" "$maxlen")"
    done
    echo "] }"
  } > "$d/$name.json"
  $VHDGEN make "$d/$name.json" "$d/$name" > "$d/$name.log" 2>&1 || {
    diag_file "$d/$name.log"
    echo "Bail out! vhdgen failed for $name"
    exit 1
  }
}

# copy_chain FROM TO: a fresh copy of a generated chain.
copy_chain () {
  rm -rf "$d/$2"
  cp -a "$d/$1" "$d/$2"
}

# shows DESC FILE: the plugin serves FILE's chain as the chain's model.
shows () {
  reads_as "$1" "$(dirname "$2")/expected.raw" "$2"
}

# files_are DESC DIR NAMES: the .vhd and journal files in DIR are NAMES.
files_are () {
  local got
  got=$(cd "$2" && ls | grep -E '\.vhd$|journal|\.tmp' | sort | tr '\n' ' ')
  [ "$got" = "$3 " ] && pass "$1" || fail "$1 (files: $got, wanted $3)"
}


# merge_ok DESC DIR ARGS...: run merge in DIR, expect exit 0.
merge_ok () {
  local desc=$1 dir=$2
  shift 2
  if (cd "$dir" && "$VHDTOOL" merge "$@") > "$tmp/.merge" 2>&1; then
    pass "$desc"
  else
    fail "$desc"
    diag_file "$tmp/.merge"
  fi
}

M=$((1024 * 1024))
SIZE=$((12 * M + 3 * 512))              # a partial last block

# ------------------------------------------------------------ depth 1

make_chain d1 1 $SIZE dynamic 1
copy_chain d1 d1a
merge_ok "depth 1: merge l1.vhd into its dynamic parent" "$d/d1a" l1.vhd
files_are "depth 1: l1.vhd removed, no journal left" "$d/d1a" "l0.vhd"
shows "depth 1: the parent shows what l1.vhd showed" "$d/d1a/l0.vhd"
check "depth 1: qemu-img agrees (dynamic target)" \
  qemu-img compare -f vpc -F raw "$d/d1a/l0.vhd" "$d/d1a/expected.raw"
check "depth 1: the target passes vhdtool check" "$VHDTOOL" check "$d/d1a/l0.vhd"
if command -v vhdiinfo > /dev/null; then
  check "depth 1: vhdiinfo opens the target" vhdiinfo "$d/d1a/l0.vhd"
fi

make_chain f1 1 $SIZE fixed 2
copy_chain f1 f1a
merge_ok "depth 1: merge into a fixed parent" "$d/f1a" l1.vhd
files_are "fixed parent: l1.vhd removed" "$d/f1a" "l0.vhd"
check "fixed parent: qemu-img reads the merged content" \
  qemu-img compare -f vpc -F raw "$d/f1a/l0.vhd" "$d/f1a/expected.raw"
[ "$(stat -c %s "$d/f1a/l0.vhd")" = "$(stat -c %s "$d/f1/l0.vhd")" ] &&
  pass "fixed parent: the file did not grow" || fail "fixed parent: the file did not grow"

# ------------------------------------------------------------ depth 3

make_chain d3 3 $SIZE dynamic 3
copy_chain d3 d3a
snap "$d/d3a/l0.vhd" "$d/d3a/l1.vhd"
merge_ok "depth 3: merge l3.vhd into l2.vhd (its parent)" "$d/d3a" l3.vhd
files_are "depth 3: only l3.vhd removed" "$d/d3a" "l0.vhd l1.vhd l2.vhd"
shows "depth 3: l2.vhd shows what l3.vhd showed" "$d/d3a/l2.vhd"
unchanged "depth 3: the layers under the target are untouched"
check "depth 3: the merged chain passes vhdtool check" "$VHDTOOL" check "$d/d3a/l2.vhd"

copy_chain d3 d3b
merge_ok "depth 3: merge --into l0.vhd (skipping two levels)" "$d/d3b" --into l0.vhd l3.vhd
files_are "--into l0.vhd: l1, l2, l3 removed, no journal left" "$d/d3b" "l0.vhd"
shows "--into l0.vhd: the base shows what l3.vhd showed" "$d/d3b/l0.vhd"
check "--into l0.vhd: qemu-img agrees" \
  qemu-img compare -f vpc -F raw "$d/d3b/l0.vhd" "$d/d3b/expected.raw"

copy_chain d3 d3c
snap "$d/d3c/l0.vhd"
merge_ok "depth 3: merge --into l1.vhd (a differencing ancestor)" "$d/d3c" --into "$d/d3c/l1.vhd" l3.vhd
files_are "--into l1.vhd: l2 and l3 removed" "$d/d3c" "l0.vhd l1.vhd"
shows "--into l1.vhd: l1.vhd shows what l3.vhd showed" "$d/d3c/l1.vhd"
unchanged "--into l1.vhd: the base is untouched"

# ------------------------------------------------------------ depth 10

make_chain d10 10 $SIZE dynamic 10 200000
copy_chain d10 d10a
snap "$d/d10a/l0.vhd" "$d/d10a/l1.vhd" "$d/d10a/l2.vhd"
merge_ok "depth 10: merge --into l3.vhd l10.vhd (seven levels)" "$d/d10a" --into l3.vhd l10.vhd
files_are "depth 10 --into l3: l4 .. l10 removed" "$d/d10a" "l0.vhd l1.vhd l2.vhd l3.vhd"
shows "depth 10 --into l3: l3.vhd shows what l10.vhd showed" "$d/d10a/l3.vhd"
unchanged "depth 10 --into l3: l0 .. l2 untouched"
copy_chain d10 d10b
merge_ok "depth 10: merge l10.vhd into its parent" "$d/d10b" l10.vhd
shows "depth 10: l9.vhd shows what l10.vhd showed" "$d/d10b/l9.vhd"
merge_ok "depth 10: then merge --into l0.vhd l9.vhd" "$d/d10b" --into l0.vhd l9.vhd
files_are "depth 10: everything merged into the base" "$d/d10b" "l0.vhd"
shows "depth 10: the base shows what l10.vhd showed" "$d/d10b/l0.vhd"
check "depth 10: qemu-img agrees" \
  qemu-img compare -f vpc -F raw "$d/d10b/l0.vhd" "$d/d10b/expected.raw"

# ------------------------------------------------------------ siblings

copy_chain d1 sib
"$VHDTOOL" create -p "$d/sib/l0.vhd" "$d/sib/other.vhd"
merge_ok "a target with another child: merge succeeds" "$d/sib" l1.vhd
grep -q "warning: $d/sib/l0.vhd: the merge changes it, so its other differencing disks become invalid: $d/sib/other.vhd" "$tmp/.merge" &&
  pass "the other child is named in a warning" || { fail "the other child is named in a warning"; diag_file "$tmp/.merge"; }
copy_chain d1 nosib
merge_ok "a target without other children: merge succeeds" "$d/nosib" l1.vhd
grep -q "warning: .*l0.vhd: the merge changes it: any other differencing disk based on it (none found beside it) becomes invalid" "$tmp/.merge" &&
  pass "the warning is given even when no other child is found" ||
  { fail "the warning is given even when no other child is found"; diag_file "$tmp/.merge"; }

# ------------------------------------------------------------ refusals

copy_chain d3 bad
snap "$d/bad/"*.vhd
cd "$d/bad" || exit 1
check_fails "merging a dynamic disk: refused" 'l0\.vhd: not a differencing disk \(it is dynamic\)' \
  "$VHDTOOL" merge l0.vhd
check_fails "--into a file outside the chain: refused" "$(basename "$d/d1/l0.vhd")|not in the chain" \
  "$VHDTOOL" merge --into "$d/d1/l0.vhd" l3.vhd
check_fails "--into the file itself: refused" 'cannot merge a file into itself' \
  "$VHDTOOL" merge --into l3.vhd l3.vhd
check_fails "--into a missing file: refused" 'nosuch\.vhd: No such file or directory' \
  "$VHDTOOL" merge --into nosuch.vhd l3.vhd
check_fails "a missing FILE: exit 1" 'nosuch\.vhd' "$VHDTOOL" merge nosuch.vhd
check_fails "merge without FILE: exit 2" 'merge takes one FILE' "$VHDTOOL" merge
check_fails "merge --frob: exit 2" 'bad option' "$VHDTOOL" merge --frob l3.vhd
check_fails "merge --parent-dir: exit 2 (a merge follows the locators only)" \
  'bad option' "$VHDTOOL" merge --parent-dir . l3.vhd
mv l1.vhd l1-moved.vhd
check_fails "a parent missing: refused, pointing at set-parent" \
  "l2\.vhd: parent not found .*a merge follows the parent locators only: point the child at its parent with 'vhdtool set-parent' first" \
  "$VHDTOOL" merge l3.vhd
mv l1-moved.vhd l1.vhd
unchanged "refused merges modified nothing"
files_are "refused merges left no journal" "$d/bad" "l0.vhd l1.vhd l2.vhd l3.vhd"

# Locks: FILE served by nbdkit; the target's other chain served.
start_server () {
  rm -f "$d/srv.sock" "$d/srv.pid"
  nbdkit -r -U "$d/srv.sock" -P "$d/srv.pid" "$PLUGIN" "$1" > "$tmp/.nbdkit" 2>&1
}
cleanup_fn "kill \$(cat '$d/srv.pid' 2>/dev/null) 2>/dev/null"
"$VHDTOOL" create -p "$d/bad/l2.vhd" "$d/bad/other.vhd"
snap "$d/bad/"*.vhd
if start_server "$d/bad/l3.vhd"; then
  check_fails "FILE served by nbdkit: refused" 'l3\.vhd: file is in use' "$VHDTOOL" merge l3.vhd
  kill "$(cat "$d/srv.pid")"; sleep 0.2
else
  fail "nbdkit serves l3.vhd"
fi
if start_server "$d/bad/other.vhd"; then
  check_fails "the target used by another served chain: refused" 'l2\.vhd: file is in use' \
    "$VHDTOOL" merge l3.vhd
  kill "$(cat "$d/srv.pid")"; sleep 0.2
else
  fail "nbdkit serves other.vhd"
fi
unchanged "merges refused for locks modified nothing"
cd "$d" || exit 1

# ------------------------------------------------------------ killed at each step

# after_kill DESC DIR FILE TARGET: FILE, while it exists, shows the
# chain's model; once it is gone, the target does.
after_kill () {
  if [ -e "$2/$3" ]; then
    shows "$1: $3 still shows the same content" "$2/$3"
    check "$1: $3's chain passes vhdtool check" "$VHDTOOL" check "$2/$3"
  else
    shows "$1: $3 is gone and $4 shows the content" "$2/$4"
  fi
}

make_chain k3 3 $SIZE dynamic 7
for step in journal-written copied target-flushed locators-written header-written \
            reparented intermediate-removed file-removed journal-removed; do
  copy_chain k3 "ks-$step"
  dir=$d/ks-$step
  st=$( (cd "$dir" && VHDTOOL_TEST_KILL_AT=$step "$VHDTOOL" merge --into l0.vhd l3.vhd \
          > /dev/null 2>&1; echo $?) 2> /dev/null)
  [ "$st" -eq 137 ] && pass "merge killed at $step" || fail "merge killed at $step (exit $st)"
  after_kill "killed at $step" "$dir" l3.vhd l0.vhd
  if [ "$step" = journal-removed ]; then
    files_are "killed after the journal went: the merge was complete" "$dir" "l0.vhd"
    continue
  fi
  merge_ok "killed at $step: running the same command again succeeds" "$dir" --into l0.vhd l3.vhd
  files_are "killed at $step, re-run: everything merged, journal removed" "$dir" "l0.vhd"
  shows "killed at $step, re-run: the base shows the content" "$dir/l0.vhd"
done

# A different merge of FILE while a journal records one: refused, with
# the command that completes the recorded one.
copy_chain k3 ks-other
(cd "$d/ks-other" && VHDTOOL_TEST_KILL_AT=copied "$VHDTOOL" merge --into l0.vhd l3.vhd > /dev/null 2>&1) 2> /dev/null
snap "$d/ks-other/"*.vhd
(cd "$d/ks-other" && "$VHDTOOL" merge l3.vhd) > "$tmp/.out" 2>&1
st=$?
[ $st -eq 1 ] && grep -q "records an interrupted merge of $d/ks-other/l3.vhd into $d/ks-other/l0.vhd; run 'vhdtool merge --into $d/ks-other/l0.vhd $d/ks-other/l3.vhd'" "$tmp/.out" &&
  pass "another merge of a half-merged FILE: refused, naming the recorded merge" ||
  { fail "another merge of a half-merged FILE: refused (exit $st)"; diag_file "$tmp/.out"; }
unchanged "the refused merge modified nothing"
# Once FILE points at the target, a plain merge is that same merge.
copy_chain k3 ks-plain
(cd "$d/ks-plain" && VHDTOOL_TEST_KILL_AT=reparented "$VHDTOOL" merge --into l0.vhd l3.vhd > /dev/null 2>&1) 2> /dev/null
merge_ok "killed after FILE was re-pointed: a plain 'merge l3.vhd' completes it" "$d/ks-plain" l3.vhd
files_are "... removing the intermediates recorded in the journal" "$d/ks-plain" "l0.vhd"
shows "... and the base shows the content" "$d/ks-plain/l0.vhd"

# Killed after FILE went, and a new FILE of that name made before the
# merge is run again: the journal is recognised as stale (another
# unique id) and dropped, and the new FILE is merged.
copy_chain k3 ks-stale
(cd "$d/ks-stale" && VHDTOOL_TEST_KILL_AT=file-removed "$VHDTOOL" merge --into l0.vhd l3.vhd > /dev/null 2>&1) 2> /dev/null
"$VHDTOOL" create -p "$d/ks-stale/l0.vhd" "$d/ks-stale/l3.vhd"
merge_ok "a new FILE where a merged one was: merge succeeds" "$d/ks-stale" l3.vhd
grep -q "l3.vhd.merge-journal: removing this journal of a finished merge" "$tmp/.merge" &&
  pass "... saying it drops the stale journal" || { fail "... saying it drops the stale journal"; diag_file "$tmp/.merge"; }
files_are "... leaving only the base" "$d/ks-stale" "l0.vhd"
shows "... which still shows the first merge's content" "$d/ks-stale/l0.vhd"

# ------------------------------------------------------------ killed at random

# A larger chain, killed again and again at random moments of the same
# merge until one run completes.
make_chain kr 2 $((64 * M)) dynamic 9 6000000
dur_ms=1000
for i in 1 2 3; do
  copy_chain kr kr-time
  t0=$(date +%s%N)
  (cd "$d/kr-time" && "$VHDTOOL" merge --into l0.vhd l2.vhd > /dev/null 2>&1)
  t1=$(date +%s%N)
  t=$(( (t1 - t0) / 1000000 ))
  [ "$t" -lt "$dur_ms" ] && dur_ms=$t
done
echo "# an uninterrupted merge takes ${dur_ms} ms (fastest of three)"
seed=${VHD_TEST_SEED:-$RANDOM}
echo "# random kill seed: $seed"
RANDOM=$seed
for trial in 1 2 3; do
  copy_chain kr "kr-$trial"
  dir=$d/kr-$trial
  kills=0
  while :; do
    (cd "$dir" && exec "$VHDTOOL" merge --into l0.vhd l2.vhd > /dev/null 2>&1) &
    pid=$!
    delay_ms=$(( RANDOM % (dur_ms + 1) ))
    sleep "$(printf '0.%03d' "$delay_ms")"
    kill -9 "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    st=$?
    if [ "$st" -eq 0 ]; then
      break
    fi
    kills=$((kills + 1))
    echo "# trial $trial, kill $kills after ${delay_ms} ms: $(cd "$dir" && ls | grep -E 'vhd|journal' | tr '\n' ' ')"
    after_kill "trial $trial, kill $kills after ${delay_ms} ms" "$dir" l2.vhd l0.vhd
    # Killed after its last step (the journal removed): complete.
    if [ ! -e "$dir/l2.vhd" ] && [ ! -e "$dir/l2.vhd.merge-journal" ]; then
      break
    fi
    if [ "$kills" -ge 8 ]; then
      merge_ok "trial $trial: after $kills kills, the merge completes" "$dir" --into l0.vhd l2.vhd
      break
    fi
  done
  files_are "trial $trial ($kills kills): everything merged" "$dir" "l0.vhd"
  shows "trial $trial ($kills kills): the base shows the content" "$dir/l0.vhd"
  check "trial $trial: the base passes vhdtool check" "$VHDTOOL" check "$dir/l0.vhd"
done

"$VHDTOOL" merge --help > "$tmp/.help" 2>&1 && grep -q '^Usage: vhdtool merge' "$tmp/.help" &&
  grep -q -- '--into' "$tmp/.help" && pass "merge --help describes merge" || fail "merge --help describes merge"

done_testing
