#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Cheap self-test of vhdxgen.py: every spec below is made with --check
# (the built-in reader must agree with the model, or refuse where the
# manifest says so).  With qemu-img present, plain 512-byte files are also
# compared with qemu's view.  Usage: tests/vhdxgen-selftest.sh [TMPDIR]
set -e
here=$(cd "$(dirname "$0")" && pwd)
gen="python3 $here/vhdxgen.py"
tmp=${1:-$(mktemp -d)}
mkdir -p "$tmp"
fail=0
run() {   # name spec [qemu]
    printf '%s\n' "$2" > "$tmp/$1.json"
    rm -rf "$tmp/$1"
    if ! $gen make --check "$tmp/$1.json" "$tmp/$1" >/dev/null; then
        echo "FAIL: $1"; fail=1; return
    fi
    if [ -n "$3" ] && command -v qemu-img >/dev/null; then
        qemu-img convert -f vhdx -O raw "$tmp/$1/a.vhdx" "$tmp/$1/q.raw" &&
            cmp -s "$tmp/$1/q.raw" "$tmp/$1/expected.raw" ||
            { echo "FAIL: $1 (qemu-img)"; fail=1; return; }
        rm -f "$tmp/$1/q.raw"
    fi
    echo "ok: $1"
}
M=1048576
run dyn '{"size": 104857600, "block_size": 1048576, "layers": [{"file": "a.vhdx", "writes": [[0, 1000], [5000000, 3000000], [104857088, 512, 9]], "block_order": "shuffle"}]}' qemu
run fixed '{"size": 20971520, "block_size": 2097152, "layers": [{"file": "a.vhdx", "type": "fixed", "writes": [[0, 1000], [7340032, 2097152]]}]}' qemu
run layout '{"size": 8388608, "block_size": 8388608, "layers": [{"file": "a.vhdx", "writes": [[0, 5000]], "bat_offset": 5242880, "metadata_offset": 1048576, "log_offset": 3145728, "metadata_item_order": "qemu", "region_order": "metadata_first", "region_required": 0, "chs_item": true, "bad_header_crc": 2}]}' qemu
run chain '{"size": 52428800, "block_size": 2097152, "layers": [
 {"file": "base.vhdx", "writes": [[0, 52428800]]},
 {"file": "mid.avhdx", "type": "differencing", "block_size": 1048576, "writes": [[512, 1024], [4194304, 1048576], [6291456, 4096, 0]], "full_blocks": [10], "states": {"20": "zero", "21": "undefined", "22": "unmapped", "23": "unmapped5"}, "soft_anchor": true},
 {"file": "sub/top.avhdx", "type": "differencing", "block_size": 4194304, "writes": [[1000, 10]], "states": {"3": "zero"}, "locator": {"case": "upper"}}]}'
run s4k '{"size": 41943040000, "block_size": 1048576, "logical_sector_size": 4096, "layers": [{"file": "a.vhdx", "writes": [[0, 5000], [34359738368, 8192]]}, {"file": "b.vhdx", "type": "differencing", "block_size": 268435456, "writes": [[34359738368, 4096], [41943035904, 4096, 0]], "states": {"1": "zero"}}]}'
for log in '"entries": 3, "changes": ["bat", "metadata", "data", "sb"], "wrap": true, "zero_descriptor": true, "torn": true, "stale": true, "tail_outside": true' \
           '"entries": 2, "changes": ["data"], "torn": "seq", "truncate": true' \
           '"changes": ["bat"], "stale_behind_zero_guid": true' \
           '"no_valid_entry": true' '"flushed_beyond_eof": true'; do
    run log '{"size": 52428800, "block_size": 2097152, "layers": [
 {"file": "base.vhdx", "writes": [[0, 20000000]]},
 {"file": "top.avhdx", "type": "differencing", "writes": [[512, 1024], [4194304, 2097152], [10485760, 4096]], "log": {'"$log"'}}]}'
done
run refuse '{"size": 8388608, "block_size": 1048576, "layers": [{"file": "a.vhdx", "writes": [[0, 5000]], "extra_metadata": [{"guid": "11111111-2222-3333-4444-555555555555", "flags": 4, "data_hex": "abcd"}]}, {"file": "b.vhdx", "type": "differencing", "parent": "a.vhdx", "locator": {"parent_linkage": "wrong"}}]}'
[ $fail = 0 ] && echo "vhdxgen-selftest: all ok"
exit $fail
