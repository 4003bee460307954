# SPDX-License-Identifier: BSD-3-Clause
# Sourced by every shell test: TAP output, a private temporary
# directory, and the paths of what is being tested.
#
#   . "${top_srcdir:-.}/tests/functions.sh"
#   check "what it shows" command args...
#   check_fails "what it shows" 'regex the output must match' command...
#   done_testing
#
# A test may also call pass/fail directly.  skip_all prints the TAP
# whole-file skip (exit 77 would be an error under the TAP driver).

set -u

# nbdsh is "python3 -m nbd": the system python has the module, a
# python first on PATH from elsewhere may not.
export PATH="/usr/bin:$PATH"

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
# The tests' Python helpers (nbdaio.py) import from tests/.
export PYTHONPATH="$top_srcdir/tests${PYTHONPATH:+:$PYTHONPATH}"
PLUGIN="$top_builddir/plugin/.libs/nbdkit-vhd-plugin.so"
VHDTOOL="$top_builddir/tools/vhdtool"
FILTER="$top_builddir/filters/.libs/nbdkit-overlay-filter.so"
VHDGEN="/usr/bin/python3 $top_srcdir/tests/vhdgen.py"
VHDXGEN="/usr/bin/python3 $top_srcdir/tests/vhdxgen.py"
# cmp for sparse images: reads only where either file has data.
SPARSECMP="/usr/bin/python3 $top_srcdir/tests/sparsecmp.py"
# vhdgen_make DESCRIPTION SPEC DIR: build the images of SPEC into DIR
# with tests/vhdgen.py, as one TAP check (its log on failure);
# vhdxgen_make: the same with tests/vhdxgen.py.
_gen_make () {
  local gen=$1
  shift
  if $gen make "$2" "$3" > "$tmp/.gen" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.gen"
  fi
}
vhdgen_make () { _gen_make "$VHDGEN" "$@"; }
vhdxgen_make () { _gen_make "$VHDXGEN" "$@"; }
# vhdxexpect.py FILE ASSERTION...: BAT states and bitmap bits of a VHDX
# file, read by vhdxgen.py's reader (see its header).
VHDXEXPECT="/usr/bin/python3 $top_srcdir/tests/vhdxexpect.py"
# vhdx_id FILE KEY: KEY of `vhdxgen.py ids FILE` (the current header:
# file_write_guid, data_write_guid, log_guid, sequence_number, ...).
vhdx_id () {
  $VHDXGEN ids "$1" 2> /dev/null |
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
# Real images made by other producers, beside the checkout.
IMAGES=${VHD_IMAGES_DIR:-$top_srcdir/../shared/images}

_tap_n=0
_tap_failed=0
_cleanup_fns=()

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vhdtest.XXXXXX")

_cleanup () {
  local fn
  for fn in "${_cleanup_fns[@]+"${_cleanup_fns[@]}"}"; do
    eval "$fn" || :
  done
  rm -rf "$tmp"
}
trap _cleanup EXIT INT TERM

# Register a command to run at exit (before the directory goes).
cleanup_fn () {
  _cleanup_fns+=("$*")
}

pass () {
  _tap_n=$((_tap_n + 1))
  echo "ok $_tap_n - $*"
}

fail () {
  _tap_n=$((_tap_n + 1))
  _tap_failed=$((_tap_failed + 1))
  echo "not ok $_tap_n - $*"
}

skip () {
  _tap_n=$((_tap_n + 1))
  echo "ok $_tap_n # SKIP $*"
}

skip_all () {
  echo "1..0 # SKIP $*"
  exit 0
}

# Show a file's content as TAP diagnostics.
diag_file () {
  sed 's/^/#   /' "$1" | head -n 40
}

# sanitizer_report FILE: FILE holds an ASan or UBSan report.  UBSan in
# gcc's combined runtime prints to stderr whatever log_path says, so a
# command expected to fail could otherwise fail for the wrong reason.
sanitizer_report () {
  grep -Eq 'runtime error:|ERROR: (Address|Leak)Sanitizer' "$1"
}

# check DESC CMD...: passes if CMD exits 0 (and, like check_fails, with
# no sanitizer report in its output).
check () {
  local desc=$1
  shift
  if "$@" > "$tmp/.out" 2>&1 && ! sanitizer_report "$tmp/.out"; then
    pass "$desc"
  else
    fail "$desc (exit $?)"
    diag_file "$tmp/.out"
  fi
}

# check_fails DESC REGEX CMD...: passes if CMD exits non-zero and its
# output (stdout and stderr) matches the extended regex.
check_fails () {
  local desc=$1 re=$2 st=0
  shift 2
  "$@" > "$tmp/.out" 2>&1 || st=$?
  if [ "$st" -ne 0 ] && grep -Eq -- "$re" "$tmp/.out" &&
     ! sanitizer_report "$tmp/.out"; then
    pass "$desc"
  else
    fail "$desc (exit $st, wanted non-zero and /$re/)"
    diag_file "$tmp/.out"
  fi
}

# out_has DESC REGEX: the output of the previous check matches REGEX.
out_has () {
  if grep -Eq -- "$2" "$tmp/.out"; then
    pass "$1"
  else
    fail "$1 (wanted /$2/)"
    diag_file "$tmp/.out"
  fi
}

# check_same DESC FILE1 FILE2: byte-identical files.
check_same () {
  if $SPARSECMP "$2" "$3" > "$tmp/.out" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.out"
  fi
}

# re STRING: STRING quoted for use inside an extended regex.
re () {
  printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'
}

# vp ARGS...: tests/vhdpatch.py, the VHD field patcher.
vp () { /usr/bin/python3 "$top_srcdir/tests/vhdpatch.py" "$@"; }

# fixture_chain DIR: the two-layer chain several tests start from, made
# in DIR by the independent writer (tests/vhdgen.py): a dynamic base.vhd
# (8 MiB, 2 MiB blocks) with data in blocks 0 and 2, and a differencing
# child.vhd with data in blocks 0 and 3 whose locators are W2ru
# ".\base.vhd" and a W2ku path that does not exist here.  DIR/base.raw
# is the base's guest view.  Bails out if the chain cannot be made.
fixture_chain () {
  mkdir -p "$1"
  cat > "$1.spec.json" <<'EOF'
{ "size": 8388608, "seed": 3, "layers": [
  { "file": "base.vhd", "type": "dynamic",
    "writes": [[0, 65536], [4198400, 8192]], "expected": "base.raw" },
  { "file": "child.vhd", "type": "differencing",
    "writes": [[4096, 4096], [6295552, 4096]],
    "locators": [ { "code": "W2ru", "path": ".\\base.vhd" },
                  { "code": "W2ku", "path": "C:\\images\\old\\base.vhd" } ] }
] }
EOF
  $VHDGEN make "$1.spec.json" "$1" > "$1.log" 2>&1 || {
    cat "$1.log"
    echo "Bail out! vhdgen could not make the fixture chain in $1"
    exit 1
  }
}

# snap FILE...: remember the files' hashes; unchanged DESC: passes if
# none of them changed since.
snap () {
  sha256sum "$@" > "$tmp/.snap"
}
unchanged () {
  if sha256sum --quiet -c "$tmp/.snap" > "$tmp/.sumout" 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.sumout"
  fi
}

# reads_as DESC EXPECTED ARGS...: nbdkit -r serving ARGS (the plugin's
# arguments) shows exactly the raw file EXPECTED.
reads_as () {
  local desc=$1 exp=$2
  shift 2
  rm -f "$tmp/.read.raw"
  if read_all "$tmp/.read.raw" "$@" > "$tmp/.out" 2>&1 &&
     $SPARSECMP "$tmp/.read.raw" "$exp" >> "$tmp/.out" 2>&1; then
    pass "$desc"
  else
    fail "$desc"
    diag_file "$tmp/.out"
  fi
}

# hash_of ARGS...: sha256 of what the plugin serves (read-only) for ARGS.
hash_of () {
  serve -r "$@" -- 'nbdcopy "$uri" -' | sha256sum | cut -d' ' -f1
}

# check_hash DESC SHA256 ARGS...: the plugin serving ARGS shows content
# of that sha256.
check_hash () {
  local desc=$1 want=$2 got
  shift 2
  got=$(hash_of "$@" 2> "$tmp/.err")
  if [ "$got" = "$want" ]; then
    pass "$desc"
  else
    fail "$desc: got $got"
    diag_file "$tmp/.err"
  fi
}

# The malformed-image corpora (test-malformed.sh, test-vhdx-malformed.sh):
# corpus_check_reports NAME FILE DAMAGED REGEX: vhdtool check on FILE
# exits 1 or 2 naming DAMAGED and the problem; corpus_unmodified NAME
# SUMS: nothing changed since SUMS (sha256sum output) was taken;
# corpus_size N: the corpus is big enough.
corpus_check_reports () {
  local name=$1 file=$2 damaged=$3 w=$4 st=0
  timeout 60 "$VHDTOOL" check "$file" > "$tmp/.out" 2>&1 || st=$?
  if { [ "$st" -eq 1 ] || [ "$st" -eq 2 ]; } &&
     ! grep -Eq 'Sanitizer|runtime error:|Segmentation fault|Aborted|core dumped' "$tmp/.out" &&
     grep -Eq -- "$(re "$damaged"): .*($w)" "$tmp/.out"; then
    pass "$name: vhdtool check reports it (exit $st)"
  else
    fail "$name: vhdtool check reports it (exit $st, wanted 1 or 2 and /$damaged: .*($w)/)"
    diag_file "$tmp/.out"
  fi
}
corpus_unmodified () {
  if sha256sum --quiet -c "$2" > "$tmp/.sumout" 2>&1; then
    pass "$1: nothing modified"
  else
    fail "$1: nothing modified"
    diag_file "$tmp/.sumout"
  fi
}
corpus_size () {
  if [ "$1" -ge 30 ]; then
    pass "the corpus has $1 cases"
  else
    fail "the corpus has only $1 cases (wanted at least 30)"
  fi
}

# run_opmodel NAME FILE INITIAL OPMODEL-ARGS...: serve FILE read-write
# and run tests/opmodel.py (randomized requests checked against a
# byte-exact model) from INITIAL, a raw file of what FILE shows now,
# with seed $seed (then incremented) and $ops requests; the final model
# goes to FILE.model.  One check; returns 1 when it failed.  nbdkit's
# complaints about the zero-length requests opmodel.py sends on purpose
# (and nbdkit's debug lines) are left out of the diagnostics; the whole
# output stays in $tmp/.run.  OPMODEL_SERVE (nbdkit options) and
# OPMODEL_PARAMS (plugin parameters) are added to the server's command.
run_opmodel () {
  local name=$1 file=$2 init=$3 s=$seed t0 st=0
  shift 3
  seed=$((seed + 1))
  t0=$SECONDS
  serve ${OPMODEL_SERVE:-} "$file" ${OPMODEL_PARAMS:-} -- \
    "/usr/bin/python3 $top_srcdir/tests/opmodel.py --seed $s --ops $ops \
       --name '$name' --initial $init --final $file.model \
       $* \"\$uri\"" > "$tmp/.run" 2>&1 || st=$?
  grep -v 'invalid request: .* count=0$' "$tmp/.run" |
    grep -v ' debug: ' > "$tmp/.out"
  if [ "$st" -eq 0 ] && ! sanitizer_report "$tmp/.out"; then
    pass "$name: $ops requests match the model (seed $s, $((SECONDS - t0)) s)"
    grep "^$name: seed" "$tmp/.out" | sed 's/^/# /'
  else
    fail "$name: requests match the model (seed $s, exit $st)"
    diag_file "$tmp/.out"
    return 1
  fi
}

# need_nbd_clients: skip the test unless nbdsh, nbdcopy, nbdinfo and the
# python3 nbd module are there.
need_nbd_clients () {
  local prog
  for prog in nbdsh nbdcopy nbdinfo; do
    command -v "$prog" > /dev/null || skip_all "$prog not installed"
  done
  /usr/bin/python3 -c 'import nbd' 2> /dev/null ||
    skip_all "python3 nbd module missing"
}

# crash_setup: what the crash tests need (or skip), and their
# parameters: iterations (CRASH_ITERATIONS, default 4), seed (CRASH_SEED,
# default random, printed), PY, M.
crash_setup () {
  PY=/usr/bin/python3
  $PY -c 'import nbd' 2> /dev/null || skip_all "python3 nbd module missing"
  command -v nbdcopy > /dev/null || skip_all "nbdcopy not installed"
  iterations=${CRASH_ITERATIONS:-4}
  seed=${CRASH_SEED:-$RANDOM}
  echo "# CRASH_ITERATIONS=$iterations CRASH_SEED=$seed"
  M=$((1024 * 1024))
}

# crash_iterations FILE PARENT.RAW: the kill loop of the crash tests
# (test-crash.sh, test-vhdx-crash.sh; see test-crash.sh's header).
# $iterations times: serve FILE read-write, let tests/crash-writer.py
# write and flush (its log in crash.log, write ids carried on), SIGKILL
# nbdkit after 50 ms .. 1.5 s (the sequence from $seed; one check that it
# was still running), then: the chain
# opens (nbdkit -r reads it to disk.raw), the caller's crash_checks I
# FILE runs (format-specific checks), and tests/crash-verify.py checks
# disk.raw against the log, PARENT.RAW being what FILE showed first.
crash_iterations () {
  local file=$1 parent=$2 i sock pidf pid wpid wid=0 _rng
  : > crash.log
  for i in $(seq 1 "$iterations"); do
    sock=$(newsock)
    pidf=$(mktemp -u "$tmp/pidXXXXXX")
    nbdkit -U "$sock" -P "$pidf" "$PLUGIN" "$file" 2> "nbdkit$i.log"
    for _ in $(seq 200); do [ -s "$pidf" ] && [ -S "$sock" ] && break; sleep 0.05; done
    pid=$(cat "$pidf" 2> /dev/null || echo 0)
    cleanup_fn "kill -9 $pid 2> /dev/null"
    _crash_rng 1000000
    /usr/bin/python3 "$top_srcdir/tests/crash-writer.py" \
      "nbd+unix:///?socket=$sock" crash.log "$_rng" "$wid" \
      2> "writer$i.err" &
    wpid=$!
    _crash_rng 1450
    sleep "$((_rng + 50))e-3"
    if kill -9 "$pid" 2> /dev/null; then
      pass "kill $i: nbdkit was serving until killed"
    else
      fail "kill $i: nbdkit was serving until killed"
      diag_file "nbdkit$i.log"
    fi
    wait "$wpid"
    wid=$(awk '$1 == "END" { w = $2 } END { print w + 0 }' crash.log)
    for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.05; done

    rm -f disk.raw
    if read_all disk.raw "$file" > "open$i.log" 2>&1; then
      pass "kill $i: the chain opens"
    else
      fail "kill $i: the chain opens"
      diag_file "open$i.log"
      continue
    fi
    crash_checks "$i" "$file"
    check "kill $i: flushed writes read back, nothing never written" \
      /usr/bin/python3 "$top_srcdir/tests/crash-verify.py" "$parent" disk.raw \
      crash.log
    grep -h "writes" "$tmp/.out" | sed "s/^/# kill $i: /"
  done
}
# _crash_rng N: _rng = a pseudo-random number in [0, N) from $seed (not
# in a subshell: the seed must advance).
_crash_rng () {
  seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
  _rng=$(( (seed / 65536) % $1 ))
}

# vhdtool_check_clean NAME FILE [ALLOW]: vhdtool check FILE finds
# nothing wrong, or (ALLOW, an extended regex) only problems matching
# ALLOW, e.g. a parent's pending log (kept on purpose: parents are never
# written).
vhdtool_check_clean () {
  local st=0
  "$VHDTOOL" check "$2" > "$tmp/.out" 2>&1 || st=$?
  if sanitizer_report "$tmp/.out"; then
    st=99
  elif [ "$st" -eq 1 ] && [ -n "${3:-}" ] &&
       ! sed -n '/^problems:/,/problems* found/p' "$tmp/.out" |
         sed '1d;$d' | grep -Evq -- "$3"; then
    st=0
  fi
  if [ "$st" -eq 0 ]; then
    pass "$1: vhdtool check is clean${3:+ (but for /$3/)}"
  else
    fail "$1: vhdtool check is clean (exit $st)"
    diag_file "$tmp/.out"
  fi
}

# vhdx_written_ok NAME FILE MODEL: the checks after a session wrote the
# VHDX file FILE and nbdkit exited cleanly, MODEL (a raw file) being what
# it must show: the plugin, restarted, reads MODEL; so does vhdxgen.py's
# independent reader; vhdtool check is clean; the log is empty (LogGuid
# 0; vhdx_check_allow: a regex of vhdtool check problems that are
# expected); libvhdi's vhdiinfo opens it; and for a file without a parent and
# with 512-byte sectors (what qemu supports), qemu-img check finds no
# error and qemu-img convert reads MODEL.
vhdx_written_ok () {
  local name=$1 file=$2 model=$3 geo
  reads_as "$name: the plugin, restarted, reads the model" "$model" "$file"
  rm -f "$tmp/.vx.raw"
  check "$name: vhdxgen reads the file" $VHDXGEN read "$file" "$tmp/.vx.raw"
  check_same "$name: ... as the model" "$tmp/.vx.raw" "$model"
  rm -f "$tmp/.vx.raw"
  vhdtool_check_clean "$name" "$file" "${vhdx_check_allow:-}"
  check "$name: the log is empty (LogGuid 0)" test \
    "$(vhdx_id "$file" log_guid)" = 00000000-0000-0000-0000-000000000000
  if command -v vhdiinfo > /dev/null; then
    check "$name: vhdiinfo (libvhdi) opens it" vhdiinfo "$file"
  else
    skip "$name: vhdiinfo not installed"
  fi
  geo=$($VHDXGEN states "$file" 2> /dev/null | /usr/bin/python3 -c '
import json, sys
i = json.load(sys.stdin)
print("%s%d" % ("diff" if i["has_parent"] else "base", i["logical_sector_size"]))')
  [ "$geo" = base512 ] || return 0
  if ! command -v qemu-img > /dev/null; then
    skip "$name: qemu-img not installed"
    return 0
  fi
  check "$name: qemu-img check finds no error" qemu-img check -f vhdx "$file"
  rm -f "$tmp/.q.raw"
  check "$name: qemu-img convert -f vhdx -O raw" \
    qemu-img convert -f vhdx -O raw "$file" "$tmp/.q.raw"
  check_same "$name: ... reads the model" "$tmp/.q.raw" "$model"
  rm -f "$tmp/.q.raw"
}

done_testing () {
  echo "1..$_tap_n"
  [ "$_tap_failed" -eq 0 ]
}

# A fresh Unix socket path in $tmp, for nbdkit -U.  Tests never use
# "-U -": nbdkit 1.32 leaves the directory it makes for it in /tmp
# behind whenever start-up fails, which half the tests provoke.
newsock () {
  mktemp -u "$tmp/sockXXXXXX"
}

# captive NBDKIT-ARGS... -- COMMAND: run COMMAND (a shell string using
# "$uri") against nbdkit started with NBDKIT-ARGS (nbdkit -U --run).
captive () {
  local args=()
  while [ "$1" != "--" ]; do
    args+=("$1")
    shift
  done
  shift
  nbdkit -U "$(newsock)" "${args[@]}" --run "$1"
}

# serve ARGS... -- COMMAND: the vhd plugin serving ARGS.
serve () {
  captive "$PLUGIN" "$@"
}

# ovserve ARGS... -- COMMAND: through the overlay filter; ARGS start with
# the plugin (name or path).
ovserve () {
  captive --filter="$FILTER" "$@"
}

# The guest-visible content of a VHD chain as a raw file, via nbdcopy.
read_all () {
  local out=$1
  shift
  serve -r "$@" -- "nbdcopy \"\$uri\" '$out'"
}

[ -x "$VHDTOOL" ] && [ -f "$PLUGIN" ] ||
  skip_all "not built (run make first)"
command -v nbdkit > /dev/null || skip_all "nbdkit not installed"

# A sanitizer build (./configure --enable-sanitizers): vhdtool and the
# unit tests carry the ASan runtime themselves, but nbdkit is not
# instrumented and dlopens the plugin and filter, so the runtime must be
# preloaded into it.  Every test calls "nbdkit" through PATH: a wrapper
# first on PATH does the preloading.  Leak detection is off in nbdkit
# only: nbdkit itself is not instrumented and leaves its own and the
# plugin's process-lifetime allocations at exit (vhdtool and the unit
# tests keep it; scripts/valgrind.sh covers the library's leaks).
SANITIZERS=
_libasan=$(ldd "$VHDTOOL" 2> /dev/null | awk '/libasan/ { print $3; exit }')
if [ -n "$_libasan" ]; then
  SANITIZERS=1
  : "${UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1}"
  export UBSAN_OPTIONS
  mkdir "$tmp/.sanbin"
  # See tests/nbdkit-exit-shim.c for why nbdkit needs help to exit.
  cc -shared -fPIC -o "$tmp/.sanbin/exit-shim.so" \
    "$top_srcdir/tests/nbdkit-exit-shim.c" -ldl
  # The --run command is a client, not code under test, and must not
  # inherit the preloaded runtime (qemu-img's coroutines hang under an
  # ASan it was not built with): the wrapper prefixes it with the
  # caller's own LD_PRELOAD and ASAN_OPTIONS.
  cat > "$tmp/.sanbin/nbdkit" <<EOF
#!/bin/bash
restore="unset LD_PRELOAD ASAN_OPTIONS; "
[ -n "\${LD_PRELOAD:-}" ] &&
  restore+="export LD_PRELOAD=\$(printf %q "\$LD_PRELOAD"); "
[ -n "\${ASAN_OPTIONS:-}" ] &&
  restore+="export ASAN_OPTIONS=\$(printf %q "\$ASAN_OPTIONS"); "
args=()
while [ \$# -gt 0 ]; do
  case \$1 in
    --run) args+=("\$1" "\$restore\${2-}"); shift; [ \$# -gt 0 ] && shift ;;
    --run=*) args+=("--run=\$restore\${1#--run=}"); shift ;;
    *) args+=("\$1"); shift ;;
  esac
done
LD_PRELOAD="$_libasan:$tmp/.sanbin/exit-shim.so\${LD_PRELOAD:+:\$LD_PRELOAD}" \\
ASAN_OPTIONS="\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}detect_leaks=0" \\
  exec $(command -v nbdkit) "\${args[@]}"
EOF
  chmod +x "$tmp/.sanbin/nbdkit"
  export PATH="$tmp/.sanbin:$PATH"
fi
