#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Quick start, second command: install dependencies, build, run the
# test suite (make check) in a normal build, the unit tests and vhdtool
# under valgrind (scripts/valgrind.sh), the test suite again in an
# ASan + UBSan build, "make distcheck" (the release tarball, its tests
# run from it) and the Debian packages (built, lintian, installed and
# smoke-tested by scripts/package.sh), then print
# "N passed, N failed[, N skipped]".  Exits non-zero if any test failed
# or errored, a sanitizer or valgrind reported, distcheck failed or a
# package check failed.  Each stage prints its own line and time.
#
#   scripts/test.sh               all five, one summary line (.ci/run)
#   scripts/test.sh --normal      the normal suite, built in the source tree
#   scripts/test.sh --valgrind    the valgrind run only
#   scripts/test.sh --sanitizers  the whole suite under ASan + UBSan: a
#                                 clean copy of the source in build-san/src,
#                                 configured --enable-sanitizers and built
#                                 apart from it (VPATH) in build-san/build
#   scripts/test.sh --distcheck   make distcheck in the source tree (its
#                                 test results count; the tarball stays)
#   scripts/test.sh --package     scripts/package.sh: the .debs are built
#                                 from a copy in build-deb/, so the build
#                                 in the source tree is left alone
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
  --distcheck) mode=distcheck ;;
  --package) mode=package ;;
  *) echo "usage: $0 [--normal|--valgrind|--sanitizers|--distcheck|--package|--all]" >&2
     exit 2 ;;
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

# run_counted NAME SCRIPT: run SCRIPT, which prints a line per check
# and last "N passed, N failed", and add its counts to the totals.
run_counted () {
  local name=$1 out passed failed
  out=$(bash "$2" 2>&1)
  echo "$out"
  passed=$(echo "$out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
  failed=$(echo "$out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
  if [ -z "$passed" ]; then
    passed=0 failed=1         # it did not get as far as its summary
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  echo "== $name: $passed ok, $failed not ok"
}

run_valgrind () { run_counted valgrind scripts/valgrind.sh; }

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

# suite_count WHAT LOG: the number on the last "# WHAT: N" line of LOG
# (automake's test suite summary), 0 if there is none.
suite_count () {
  local v
  v=$(sed -n "s/^# $1: *\([0-9]*\)\$/\1/p" "$2" | tail -n 1)
  echo "${v:-0}"
}

# make distcheck: the tarball is made, unpacked, built in a VPATH build
# against its read-only source, its test suite run (with the real images
# of this tree, see AM_DISTCHECK_CONFIGURE_FLAGS), installed, uninstalled
# and cleaned.  Its test results count like the other suites'; distcheck
# failing anywhere else counts one failure.
run_distcheck () {
  local log=$top/distcheck.log st f
  scripts/build.sh || { total_failed=$((total_failed + 1)); return 1; }
  make -j"$(nproc)" distcheck > "$log" 2>&1
  st=$?
  # automake's summary of the suite distcheck ran ("# PASS:  N").
  local pass fail skip
  pass=$(( $(suite_count PASS "$log") + $(suite_count XFAIL "$log") ))
  fail=$(( $(suite_count FAIL "$log") + $(suite_count XPASS "$log") +
           $(suite_count ERROR "$log") ))
  skip=$(suite_count SKIP "$log")
  if [ "$st" -ne 0 ]; then
    # A failed distcheck leaves its tree: show the failed tests' logs.
    for f in "$top"/nbdkit-vhd-*/_build/sub/tests/*.trs; do
      grep -q "^:test-result: \(FAIL\|ERROR\|XPASS\)" "$f" 2> /dev/null ||
        continue
      echo "---- ${f%.trs}.log"
      grep -v "^ok " "${f%.trs}.log" | tail -n 40
    done
    [ "$fail" -eq 0 ] && fail=1
    echo "---- $log"
    grep -v "^\(PASS\|SKIP\|XFAIL\): " "$log" | tail -n 40
  fi
  total_passed=$((total_passed + pass))
  total_failed=$((total_failed + fail))
  total_skipped=$((total_skipped + skip))
  echo "== distcheck: $pass ok, $fail not ok, $skip skipped;" \
    "$(grep -m1 'archives ready for distribution' "$log" || echo 'no archives')"
}

run_package () { run_counted packages scripts/package.sh; }

# stage NAME: run run_NAME and say how long it took.
stage () {
  local start=$SECONDS
  "run_$1"
  echo "== $1 took $((SECONDS - start)) s"
}

scripts/deps.sh || exit 1
case $mode in
  all) for s in normal valgrind sanitizers distcheck package; do stage $s; done ;;
  *) stage "$mode" ;;
esac

summary="$total_passed passed, $total_failed failed"
[ "$total_skipped" -gt 0 ] && summary="$summary, $total_skipped skipped"
echo "$summary"
[ "$total_failed" -eq 0 ]
