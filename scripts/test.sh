#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Quick start, second command: install dependencies, build, run the
# test suite (make check) in a normal build, the unit tests and vhdtool
# under valgrind (scripts/valgrind.sh), and the test suite again in an
# ASan + UBSan build, then print "N passed, N failed[, N skipped]".
# Exits non-zero if any test failed or errored, or a sanitizer or
# valgrind reported.
#
#   scripts/test.sh               all three, one summary line (.ci/run)
#   scripts/test.sh --normal      the normal suite, built in the source tree
#   scripts/test.sh --valgrind    the valgrind run only
#   scripts/test.sh --sanitizers  the whole suite under ASan + UBSan: a
#                                 clean copy of the source in build-san/src,
#                                 configured --enable-sanitizers and built
#                                 apart from it (VPATH) in build-san/build
#   scripts/test.sh --all         the same as no option
#
# See docs/reliability.md.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

mode=all
case "${1:-}" in
  ""|--all) ;;
  --normal) mode=normal ;;
  --valgrind) mode=valgrind ;;
  --sanitizers) mode=sanitizers ;;
  *) echo "usage: $0 [--normal|--valgrind|--sanitizers|--all]" >&2; exit 2 ;;
esac

total_passed=0 total_failed=0 total_skipped=0

# tally DIR STATUS: count individual TAP results from automake's .trs
# files in DIR/tests, show the logs of failed tests, add to the totals.
tally () {
  local dir=$1 status=$2 passed failed skipped log
  count () {
    cat "$dir"/tests/*.trs 2>/dev/null | grep -c "^:test-result: $1" || true
  }
  passed=$(( $(count PASS) + $(count XFAIL) ))
  failed=$(( $(count FAIL) + $(count XPASS) + $(count ERROR) ))
  skipped=$(count SKIP)
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1                    # make itself failed (build or harness)
  fi
  for log in "$dir"/tests/*.log; do
    [ "$log" = "$dir/tests/test-suite.log" ] && continue
    if grep -q "^:test-result: \(FAIL\|ERROR\|XPASS\)" "${log%.log}.trs" 2>/dev/null; then
      echo "---- $log"
      grep -v "^ok " "$log" | tail -n 40
    fi
  done
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
  suite_line="$passed ok, $failed not ok, $skipped skipped"
}

run_normal () {
  scripts/build.sh || { total_failed=$((total_failed + 1)); return 1; }
  rm -f tests/*.trs tests/*.log
  make -j"$(nproc)" check
  tally "$top" $?
  echo "== normal suite: $suite_line"
}

# scripts/valgrind.sh prints one line per program run and a last line
# "N passed, N failed".
run_valgrind () {
  local out passed failed
  out=$(bash scripts/valgrind.sh 2>&1)
  echo "$out"
  passed=$(echo "$out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
  failed=$(echo "$out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
  if [ -z "$passed" ]; then
    passed=0 failed=1         # it did not get as far as its summary
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  echo "== valgrind: $passed ok, $failed not ok"
}

# The sanitizer suite.  A VPATH build cannot share a source tree that is
# itself configured (the normal build is in-tree), so the source is
# copied and cleaned first; the build directory is then separate from
# that copy, which also tests top_builddir != top_srcdir.
run_sanitizers () {
  local san=$top/build-san libdir reports st n f
  libdir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null ||
                    gcc -print-multiarch)
  rm -rf "$san"
  mkdir -p "$san/src" "$san/build" "$san/reports"
  tar -C "$top" -cf - --exclude=./build-san --exclude=./.git --exclude=./fuzz/build \
      --exclude=./autom4te.cache . | tar -C "$san/src" -xf -
  ( cd "$san/src" &&
    { [ ! -f Makefile ] || make distclean > /dev/null 2>&1 || :; } &&
    rm -f config.status config.h config.log &&
    autoreconf -fi > /dev/null 2>&1 ) || {
      echo "sanitizers: preparing the source copy failed" >&2
      total_failed=$((total_failed + 1)); return 1; }
  ( cd "$san/build" &&
    ../src/configure -q --prefix=/usr --libdir="$libdir" \
      --sysconfdir=/etc --enable-sanitizers &&
    make -j"$(nproc)" > /dev/null ) || {
      echo "sanitizers: build failed" >&2
      total_failed=$((total_failed + 1)); return 1; }

  # Every sanitizer report goes to a file of its own, whatever process
  # it came from (a report inside a test that expects a failure would
  # otherwise go unnoticed); each one counts as a failure.  The real
  # images beside the checkout are found from the original tree.
  export ASAN_OPTIONS="log_path=$san/reports/asan:detect_leaks=1"
  export UBSAN_OPTIONS="log_path=$san/reports/ubsan:halt_on_error=1:print_stacktrace=1"
  export VHD_IMAGES_DIR=${VHD_IMAGES_DIR:-$top/../shared/images}
  ( cd "$san/build" && make -j"$(nproc)" check )
  st=$?
  tally "$san/build" $st
  # Reports in files of their own, and reports printed to a test's
  # output (gcc's UBSan ignores log_path; see tests/functions.sh).
  n=0
  for f in "$san"/reports/*; do
    [ -s "$f" ] || continue
    n=$((n + 1))
    echo "---- sanitizer report $f"
    head -n 60 "$f"
  done
  for f in "$san"/build/tests/*.log; do
    [ "$f" = "$san/build/tests/test-suite.log" ] && continue
    grep -Eq 'runtime error:|ERROR: (Address|Leak)Sanitizer' "$f" || continue
    n=$((n + 1))
    echo "---- sanitizer report in $f"
    grep -E -A 20 'runtime error:|ERROR: (Address|Leak)Sanitizer' "$f" | head -n 60
  done
  total_failed=$((total_failed + n))
  echo "== sanitizer suite: $suite_line, $n sanitizer reports"
  unset ASAN_OPTIONS UBSAN_OPTIONS
}

scripts/deps.sh || exit 1
case $mode in
  normal) run_normal ;;
  sanitizers) run_sanitizers ;;
  valgrind) run_valgrind ;;
  all) run_normal; run_valgrind; run_sanitizers ;;
esac

summary="$total_passed passed, $total_failed failed"
[ "$total_skipped" -gt 0 ] && summary="$summary, $total_skipped skipped"
echo "$summary"
[ "$total_failed" -eq 0 ]
