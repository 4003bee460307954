#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The plugin's interface: parameters, --help, --dump-plugin, the magic
# file key, read-only serving and what it advertises.
. "${top_srcdir:-.}/tests/functions.sh"

nbdkit "$PLUGIN" --help > "$tmp/help" 2>&1
for p in file parent parent-dir ignore-checksums ignore-id-mismatch max-depth; do
  grep -q "^$p=\|^\[file=\]" "$tmp/help" && grep -q "$p" "$tmp/help" &&
    pass "--help lists $p" || fail "--help lists $p"
done

nbdkit "$PLUGIN" --dump-plugin > "$tmp/dump" 2>&1
version=$(sed -n 's/^AC_INIT(\[nbdkit-vhd\], \[\(.*\)\])/\1/p' "$top_srcdir/configure.ac")
grep -qx "vhd_version=$version" "$tmp/dump" &&
  grep -qx "thread_model=parallel" "$tmp/dump" &&
  grep -qx "magic_config_key=file" "$tmp/dump" &&
  pass "--dump-plugin: version $version, parallel, magic key file" ||
  { fail "--dump-plugin"; diag_file "$tmp/dump"; }

check_fails "no file: clear error" 'file=<FILENAME>' \
  nbdkit -U "$(newsock)" "$PLUGIN" --run true
check_fails "unknown parameter refused" "unknown parameter 'bogus'" \
  nbdkit -U "$(newsock)" "$PLUGIN" file=x.vhd bogus=1 --run true
check_fails "missing file named" 'nosuch\.vhd: No such file' \
  nbdkit -U "$(newsock)" "$PLUGIN" "$tmp/nosuch.vhd" --run true

"$VHDTOOL" create -t dynamic "$tmp/base.vhd" 16M
serve "$tmp/base.vhd" -- \
  'nbdsh -u "$uri" -c "h.pwrite(b\"base!\" * 1000, 12345)" -c "h.flush()"'
"$VHDTOOL" create -p "$tmp/base.vhd" "$tmp/child.vhd"

# file= and the bare form name the same export.
a=$(serve -r "file=$tmp/child.vhd" -- 'nbdcopy "$uri" - | sha256sum')
b=$(serve -r "$tmp/child.vhd" -- 'nbdcopy "$uri" - | sha256sum')
[ -n "$a" ] && [ "$a" = "$b" ] && pass "file=X and bare X serve the same disk" ||
  fail "file= vs bare: $a / $b"
serve -r "$tmp/child.vhd" -- 'nbdsh -u "$uri" -c "assert h.pread(5, 12345) == b\"base!\""' \
  && pass "child shows the parent's data" || fail "child shows the parent's data"

# Advertised capabilities.
serve "$tmp/child.vhd" -- 'nbdinfo --json "$uri"' > "$tmp/info.json"
/usr/bin/python3 - "$tmp/info.json" <<'PY' > "$tmp/.out" 2>&1 &&
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
want = {"can_multi_conn": True, "can_flush": True, "can_fua": True,
        "can_zero": True, "can_trim": True, "is_read_only": False,
        "block_size_minimum": 1, "block_size_preferred": 4096,
        "export-size": 16 * 1024 * 1024}
bad = {k: e.get(k) for k in want if e.get(k) != want[k]}
assert not bad, bad
assert "base:allocation" in e["contexts"], e["contexts"]
PY
  pass "advertises multi-conn, flush, FUA, zero, trim, extents, block sizes" ||
  { fail "advertised capabilities"; diag_file "$tmp/.out"; }

# -r: read-only export, the top file opened read-only with a shared
# lock, nothing written.
sum=$(sha256sum "$tmp/child.vhd" "$tmp/base.vhd")
check "-r: export is read-only" \
  serve -r "$tmp/child.vhd" -- 'nbdinfo "$uri" | grep -q "is_read_only: true"'
check_fails "-r: writes refused" 'EPERM|Operation not permitted|read-only|EROFS' \
  serve -r "$tmp/child.vhd" -- 'nbdsh -u "$uri" -c "h.pwrite(b\"x\", 0)"'
# (--run forks the command from a copy of nbdkit: find the server by its
# pid file, not as the command's parent.)
check "-r: top file opened O_RDONLY, lock shared" \
  serve -r -P "$tmp/pid" "$tmp/child.vhd" -- '
    pid=$(cat "'$tmp/pid'")
    for fd in /proc/$pid/fd/*; do
      [ "$(readlink $fd)" = "'"$tmp/child.vhd"'" ] || continue
      flags=$(awk "/^flags/ {print \$2}" /proc/$pid/fdinfo/${fd##*/})
      [ $(( 0$flags & 3 )) -eq 0 ] || exit 1
      ino=$(stat -c %i "'"$tmp/child.vhd"'")
      grep -q "FLOCK.*READ.*:$ino " /proc/locks || exit 1
      exit 0
    done
    exit 1'
[ "$sum" = "$(sha256sum "$tmp/child.vhd" "$tmp/base.vhd")" ] &&
  pass "-r: files unchanged" || fail "-r: files changed"

# Writable: the top is reopened read-write, exclusively locked, on the
# first writing connection; the parent stays read-only and shared.
check "writable: top O_RDWR with exclusive lock, parent O_RDONLY shared" \
  serve -P "$tmp/pid" "$tmp/child.vhd" -- '
    nbdsh -u "$uri" -c "h.pwrite(b\"child\", 0)" -c "h.flush()" || exit 1
    pid=$(cat "'$tmp/pid'")
    ok=0
    for fd in /proc/$pid/fd/*; do
      f=$(readlink $fd); acc=$(( 0$(awk "/^flags/ {print \$2}" /proc/$pid/fdinfo/${fd##*/}) & 3 ))
      case $f in
        '"$tmp/child.vhd"') [ $acc -eq 2 ] && ok=$((ok + 1)) ;;
        '"$tmp/base.vhd"') [ $acc -eq 0 ] && ok=$((ok + 1)) ;;
      esac
    done
    cino=$(stat -c %i "'"$tmp/child.vhd"'"); bino=$(stat -c %i "'"$tmp/base.vhd"'")
    grep -q "FLOCK.*WRITE.*:$cino " /proc/locks && ok=$((ok + 1))
    grep -q "FLOCK.*READ.*:$bino " /proc/locks && ok=$((ok + 1))
    [ $ok -eq 4 ]'

done_testing
