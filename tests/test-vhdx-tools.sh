#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# vhdtool merge, set-parent and convert on VHDX chains, every result
# read back by tests/vhdxgen.py (an independent reader that replays
# logs and checks parent linkage) against the model vhdxgen made:
#
# - merge of a 4-layer chain (dynamic base, three differencing layers
#   with 1 and 2 MiB blocks, ZERO and UNMAPPED blocks hiding parent
#   data) into its parent and into the base; killed (SIGKILL) at every
#   step: FILE's chain still reads as the model while it exists (the
#   layer above the target carries the target's next DataWriteGuid as
#   parent_linkage2), and the same command completes the merge;
# - afterwards the target's DataWriteGuid has changed, and a sibling
#   child of the target is refused (linkage mismatch): what the help
#   says a merge does to other children;
# - set-parent after moving the parent, killed at its step and run
#   again; refused onto a disk with another DataWriteGuid unless
#   --ignore-id-mismatch;
# - convert: VHD chain -> VHDX -> VHD and raw, byte for byte; the VHDX
#   output read by vhdxgen, qemu-img and libvhdi; sizes the target
#   format cannot hold refused with a message, no output left.
. "${top_srcdir:-.}/tests/functions.sh"

command -v nbdcopy > /dev/null || skip_all "nbdcopy not installed"
M=$((1024 * 1024))
d=$tmp
cd "$tmp"

# xreads DESC FILE MODEL: vhdxgen reads FILE's chain as MODEL.
xreads () {
  if $VHDXGEN read "$2" "$tmp/.x.raw" > "$tmp/.x.out" 2>&1 &&
     cmp "$tmp/.x.raw" "$3" > /dev/null 2>&1; then
    pass "$1"
  else
    fail "$1"
    diag_file "$tmp/.x.out"
  fi
  rm -f "$tmp/.x.raw"
}

# data_write_guid FILE
data_write_guid () {
  "$VHDTOOL" info "$1" 2>/dev/null | sed -n 's/^data write guid: *//p'
}

cat > chain.json <<'EOF'
{"size": 83886080, "block_size": 2097152, "seed": 21, "layers": [
  {"file": "l0.vhdx", "writes": [[0, 40000000], [60000000, 9000000]]},
  {"file": "l1.avhdx", "type": "differencing",
   "writes": [[1048576, 4096], [20000000, 3000000]],
   "states": {"15": "zero"}},
  {"file": "l2.avhdx", "type": "differencing", "block_size": 1048576,
   "writes": [[5000, 10000], [50000000, 2000000]],
   "states": {"3": "zero", "30": "unmapped"}},
  {"file": "l3.avhdx", "type": "differencing",
   "writes": [[7340032, 65536], [30000000, 1000]],
   "states": {"33": "zero"}}]}
EOF
vhdxgen_make "a 4-layer VHDX chain with zero states" chain.json k4

# ------------------------------------------------------------ merge

for into in l2.avhdx l0.vhdx; do
  rm -rf m && cp -a k4 m
  g0=$(data_write_guid "m/$into")
  if [ $into = l2.avhdx ]; then
    (cd m && "$VHDTOOL" merge l3.avhdx) > "$tmp/.out" 2>&1
  else
    (cd m && "$VHDTOOL" merge --into l0.vhdx l3.avhdx) > "$tmp/.out" 2>&1
  fi
  st=$?
  out_has "merge into $into warns that its other children become invalid" \
    "$into: the merge changes it \\(and its DataWriteGuid, so they are refused\\)"
  check "... exit 0" test $st -eq 0
  xreads "... $into now reads as the chain did" "m/$into" k4/expected.raw
  check "... l3.avhdx is gone" test ! -e m/l3.avhdx
  check "... vhdtool check finds $into's chain clean" "$VHDTOOL" check "m/$into"
  g1=$(data_write_guid "m/$into")
  check "... $into's DataWriteGuid changed ($g0 -> $g1)" \
    test -n "$g1" -a "$g0" != "$g1"
done
check "merge --into the base removed the intermediates" \
  test ! -e m/l1.avhdx -a ! -e m/l2.avhdx -a ! -e m/l3.avhdx.merge-journal

# A sibling of the target (another child of l2) no longer opens.
rm -rf m && cp -a k4 m
"$VHDTOOL" create -p m/l2.avhdx m/sibling.avhdx > /dev/null
(cd m && "$VHDTOOL" merge l3.avhdx) > /dev/null 2>&1
check_fails "a sibling of the merge target is refused afterwards" \
  'sibling\.avhdx: .*parent id mismatch' "$VHDTOOL" check m/sibling.avhdx

for step in journal-written linkage2-written copied target-flushed \
            locator-written reparented intermediate-removed file-removed \
            journal-removed; do
  rm -rf "ks-$step" && cp -a k4 "ks-$step"
  st=$( (cd "ks-$step" && VHDTOOL_TEST_KILL_AT=$step "$VHDTOOL" merge \
          --into l0.vhdx l3.avhdx > /dev/null 2>&1; echo $?) 2> /dev/null)
  check "merge killed at $step (exit $st)" test "$st" -eq 137
  if [ -e "ks-$step/l3.avhdx" ]; then
    xreads "killed at $step: l3.avhdx's chain still reads as the model" \
      "ks-$step/l3.avhdx" k4/expected.raw
  else
    xreads "killed at $step: l3.avhdx is gone and l0.vhdx reads as the model" \
      "ks-$step/l0.vhdx" k4/expected.raw
  fi
  [ $step = journal-removed ] && continue
  check "killed at $step: the same command completes the merge" \
    sh -c "cd ks-$step && \"$VHDTOOL\" merge --into l0.vhdx l3.avhdx"
  xreads "killed at $step, re-run: l0.vhdx reads as the model" \
    "ks-$step/l0.vhdx" k4/expected.raw
  check "killed at $step, re-run: only l0.vhdx is left" \
    test "$(cd "ks-$step" && ls | grep -E 'vhdx|journal' | tr '\n' ' ')" = "l0.vhdx "
done

# ------------------------------------------------------------ set-parent

rm -rf sp && cp -a k4 sp && mkdir sp/moved && mv sp/l2.avhdx sp/moved/
check_fails "the moved parent is not found" 'parent not found' \
  "$VHDTOOL" check sp/l3.avhdx
check "set-parent of the moved l2.avhdx onto l1.avhdx (its own link)" \
  "$VHDTOOL" set-parent sp/moved/l2.avhdx sp/l1.avhdx
st=$( (VHDTOOL_TEST_KILL_AT=locator-written "$VHDTOOL" set-parent \
        sp/l3.avhdx sp/moved/l2.avhdx > /dev/null 2>&1; echo $?) 2> /dev/null)
check "set-parent killed once its log entry is durable (exit $st)" test "$st" -eq 137
xreads "... the killed set-parent took effect (the log replays)" \
  sp/l3.avhdx k4/expected.raw
check "set-parent run again" "$VHDTOOL" set-parent sp/l3.avhdx sp/moved/l2.avhdx
"$VHDTOOL" info sp/l3.avhdx > "$tmp/.out" 2>&1
out_has "... relative_path names the moved parent" \
  'locator: +relative_path = \.\\moved\\l2\.avhdx'
out_has "... and the log is empty" '^log: +empty'
xreads "... the chain reads as the model" sp/l3.avhdx k4/expected.raw
check "... vhdtool check is clean" "$VHDTOOL" check sp/l3.avhdx
cp k4/l1.avhdx sp/other.avhdx
snap sp/l3.avhdx
check_fails "set-parent onto another disk: refused (DataWriteGuid)" \
  'l3\.avhdx: parent id mismatch: the child expects parent id' \
  "$VHDTOOL" set-parent sp/l3.avhdx sp/other.avhdx
unchanged "... and the child is unchanged"

# ------------------------------------------------------------ convert

cat > vchain.json <<'EOF'
{"size": 67108864, "block_size": 2097152, "seed": 5, "layers": [
  {"file": "v0.vhd", "writes": [[0, 30000000]]},
  {"file": "v1.vhd", "type": "differencing",
   "writes": [[4096, 8192], [40000000, 5000000]]}]}
EOF
vhdgen_make "a 2-layer VHD chain" vchain.json vc
check "convert the VHD chain to VHDX" "$VHDTOOL" convert vc/v1.vhd vc.vhdx
"$VHDTOOL" info vc.vhdx > "$tmp/.out" 2>&1
out_has "... the output is a dynamic VHDX" '^type: +dynamic'
xreads "... vhdxgen reads it as the VHD chain's model" vc.vhdx vc/expected.raw
if command -v qemu-img > /dev/null; then
  qemu-img convert -O raw vc.vhdx vc.q.raw
  check "... qemu-img reads it the same" cmp vc.q.raw vc/expected.raw
  check "... qemu-img check finds no errors" qemu-img check vc.vhdx
fi
check "convert the VHDX back to VHD" "$VHDTOOL" convert vc.vhdx vc.back.vhd
reads_as "... which the plugin reads as the model" vc/expected.raw vc.back.vhd
check "convert the VHDX to raw" "$VHDTOOL" convert -f raw vc.vhdx vc.raw
check "... byte for byte the model" cmp vc.raw vc/expected.raw
check "convert to a fixed VHDX" "$VHDTOOL" convert -t fixed vc/v1.vhd vcf.vhdx
xreads "... vhdxgen reads it as the model" vcf.vhdx vc/expected.raw
check "convert the VHDX chain to a VHD" "$VHDTOOL" convert m/l2.avhdx k.vhd
reads_as "... the merged VHDX chain's content in a VHD" k4/expected.raw k.vhd

# What VHD cannot hold: 4096-byte sectors, over 2040 GiB.
"$VHDTOOL" create --logical-sector-size 4096 s4k.vhdx 64M > /dev/null
check_fails "convert of a 4096-sector VHDX to VHD: refused" \
  '4096' "$VHDTOOL" convert s4k.vhdx s4k.vhd
check "... no output left" test ! -e s4k.vhd
"$VHDTOOL" create big.vhdx 3T > /dev/null
check_fails "convert of a 3 TiB VHDX to VHD: refused" \
  '2040 GiB' "$VHDTOOL" convert big.vhdx big.vhd
check "... no output left" test ! -e big.vhd
if command -v vhdiinfo > /dev/null; then
  check "libvhdi opens the converted VHDX" vhdiinfo vc.vhdx
fi

done_testing
