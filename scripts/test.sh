#!/usr/bin/env bash
# Quick start, second command: install dependencies, build, run the
# test suite (make check), then print "N passed, N failed[, N skipped]".
# Exits non-zero if any test failed or errored.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh || exit 1
scripts/build.sh || exit 1

rm -f tests/*.trs tests/*.log
make -j"$(nproc)" check
status=$?

# Count individual TAP results from automake's .trs files.
count () {
  cat tests/*.trs 2>/dev/null | grep -c "^:test-result: $1" || true
}
passed=$(( $(count PASS) + $(count XFAIL) ))
failed=$(( $(count FAIL) + $(count XPASS) + $(count ERROR) ))
skipped=$(count SKIP)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1                      # make itself failed (build or harness)
fi
for log in tests/*.log; do
  [ "$log" = tests/test-suite.log ] && continue
  if grep -q "^:test-result: \(FAIL\|ERROR\|XPASS\)" "${log%.log}.trs" 2>/dev/null; then
    echo "---- $log"
    grep -v "^ok " "$log" | tail -n 40
  fi
done
summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
