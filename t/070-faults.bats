#!/usr/bin/env bats
# The faults a review of vmrun and vmsnap found (issue 6, section 3), each shown
# fixed by a test that failed before. Those of pure logic are C unit tests
# (t/unit: sizes, durable files, programs and signals, the pause watch under ASan,
# file names); those of locks and kills are in t/061. One running guest here.

load helpers

setup_file() {
  export VM
  VM=$(file_vm_name f)
  boot_vm "$VM"
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
}

teardown() { :; }

@test "vmsnap does not take a failed read of its records for none, and so never overwrites them" {
  run_tool 0 vmsnap create "$VM" r1 --quiesce
  [ "$(snap_json "$VM" r1 kind)" = quiesced ]
  # libvirt fails to read vmsnap's metadata (the injector makes the call fail the
  # way libvirt does): the run stops, the records stay.
  VMKIT_INJECT='virDomainGetMetadata:fail:https://vmkit.dev/xmlns/snapshots/1' \
    LD_PRELOAD="$TOP/t/fault/libinject.so" run_tool 1 vmsnap create "$VM" r2
  assert_one_error_line "cannot read vmkit metadata of '$VM'"
  no_snapshot "$VM" r2
  [ "$(snap_json "$VM" r1 kind)" = quiesced ]
  [ "$(snap_json "$VM" r1 frozen_ms)" -ge 0 ]
  run_tool 0 vmsnap delete "$VM" r1
}

@test "vmsnap list shows every snapshot of a chain deeper than 64, the current one included" {
  local vm n prev=
  vm=$(vm_name deep)
  run_tool 0 vmrun create "$vm" --template tiny
  # Records only (libvirt's redefine): a 70-long chain without 70 images.
  for n in $(seq 1 70); do
    {
      echo "<domainsnapshot><name>c$n</name>"
      [ -z "$prev" ] || echo "<parent><name>$prev</name></parent>"
      echo "<state>shutoff</state><creationTime>$((1700000000 + n))</creationTime>"
      echo "<memory snapshot='no'/><disks><disk name='vda' snapshot='internal'/></disks>"
      virsh_q dumpxml "$vm" --inactive
      echo "</domainsnapshot>"
    } > "$BATS_TEST_TMPDIR/s.xml"
    virsh_q snapshot-create "$vm" "$BATS_TEST_TMPDIR/s.xml" --redefine --current >/dev/null
    prev=c$n
  done
  run_tool 0 vmsnap list "$vm" -o json
  [ "$(jq length <<< "$output")" = 70 ]
  [ "$(jq -r '.[-1].name' <<< "$output")" = c70 ]
  [ "$(jq -r '.[-1].current' <<< "$output")" = true ]
  run_tool 0 vmsnap list "$vm"
  [ "${#lines[@]}" = 71 ]
  [[ "${lines[70]}" == *"\`- c70 *"* ]]
  run_tool 0 vmsnap list "$vm" -o tsv
  [ "${#lines[@]}" = 70 ]
}

@test "new disks are 0600 (a customized one, holding a password hash: t/030)" {
  local vm
  vm=$(vm_name mode)
  run_tool 0 vmrun create "$vm" --template tiny --disk 64M
  [ "$(stat -c %a "$VMKIT_STORAGE_DIR/$vm.qcow2")" = 600 ]
  [ "$(stat -c %a "$VMKIT_STORAGE_DIR/$vm-disk1.qcow2")" = 600 ]
  run_tool 0 vmrun create "$vm-c" --image "$VMKIT_FIXTURE/root.qcow2" --copy
  [ "$(stat -c %a "$VMKIT_STORAGE_DIR/$vm-c.qcow2")" = 600 ]
}

@test "wait reports Ctrl-C and SIGTERM as an interruption (exit 1), not a timeout" {
  local sig p rc
  for sig in INT TERM; do
    "$TOP/vmrun/vmrun" wait "$VM" --console-line 'never printed' --timeout 60 2> "$BATS_TEST_TMPDIR/err" & p=$!
    sleep 1
    kill -s "$sig" $p
    rc=0; wait $p || rc=$?
    [ "$rc" = 1 ]
    [ "$(cat "$BATS_TEST_TMPDIR/err")" = "vmrun: interrupted by SIG$sig" ]
  done
}

@test "stats: --interval is bounded (no overflow); a reader that closes the pipe early ends it quietly, exit 0" {
  run_tool 2 vmrun stats --interval 2147484
  assert_stderr_has "invalid --interval 2147484: expected 1 to 86400 seconds"
  run_tool 2 vmrun stats --interval 86401
  # stats -n 0 runs until stopped; head takes one line and goes.
  run bash -c "'$TOP/vmrun/vmrun' stats -n 0 --interval 1 2> '$BATS_TEST_TMPDIR/err' | head -1; echo \"\${PIPESTATUS[0]}\""
  [ "${lines[0]%% *}" = NAME ]
  [ "${lines[1]}" = 0 ]
  [ ! -s "$BATS_TEST_TMPDIR/err" ]
}

@test "tsv escapes tabs, newlines and backslashes, and never slashes" {
  run_tool 0 vmsnap create "$VM" tab --description $'one\ttwo\nthree\\four /five'
  run_tool 0 vmsnap list "$VM" -o tsv
  [ "${#lines[@]}" = 1 ]
  [ "$(cut -f9 <<< "${lines[0]}")" = 'one\ttwo\nthree\\four /five' ]
  [ "$(awk -F'\t' '{print NF}' <<< "${lines[0]}")" = 9 ]
  run_tool 0 vmrun info "$VM" -o tsv
  grep -q "^disks	{\"target\":\"vda\",\"device\":\"disk\",\"source\":\"$VMKIT_STORAGE_DIR/$VM-vda.tab.qcow2\"" <<< "$output"
  refute grep -q '\\/' <<< "$output"
  run_tool 0 vmsnap delete "$VM" tab
}

@test "tune applies all its settings or none: a refused I/O limit leaves the CPU shares as they were" {
  local before
  run_tool 0 vmrun tune "$VM" --live -o json
  before=$(jq .cpu_shares <<< "$output")
  # QEMU refuses a total limit beside a read limit: the third call fails.
  run_tool 2 vmrun tune "$VM" --cpu-shares 777 --mem-soft 300M --disk vda --total-bytes-sec 1M --read-bytes-sec 1M --live
  assert_one_error_line "cannot set I/O limits of disk 'vda' of '$VM'"
  run_tool 0 vmrun tune "$VM" --live -o json
  [ "$(jq .cpu_shares <<< "$output")" = "$before" ]
  [ "$(jq .mem_soft <<< "$output")" = null ]
  # The same with an injected failure of the last call.
  VMKIT_INJECT='virDomainSetBlockIoTune:fail' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    run_tool 1 vmrun tune "$VM" --cpu-shares 777 --disk vda --total-bytes-sec 1M --live
  run_tool 0 vmrun tune "$VM" --live -o json
  [ "$(jq .cpu_shares <<< "$output")" = "$before" ]
  run_tool 0 vmrun tune "$VM" --cpu-shares 777 --disk vda --total-bytes-sec 1M --live
  run_tool 0 vmrun tune "$VM" --live -o json
  [ "$(jq .cpu_shares <<< "$output")" = 777 ]
}

@test "undefine --remove-storage of VM 'web' leaves 'web-1.qcow2', another VM's name, alone" {
  local web s=$VMKIT_STORAGE_DIR
  web=$(vm_name web)
  # web's disk stands on a base named like a VM "web-1" (which no VM uses now).
  qemu-img convert -O qcow2 "$VMKIT_FIXTURE/root.qcow2" "$s/$web-1.qcow2"
  qemu-img create -q -f qcow2 -F qcow2 -b "$s/$web-1.qcow2" "$s/$web.qcow2"
  run_tool 0 vmrun create "$web" --image "$s/$web.qcow2" --kernel "$VMKIT_FIXTURE/vmlinuz"
  run_tool 0 vmrun undefine "$web" --remove-storage
  [ ! -e "$s/$web.qcow2" ]
  [ -f "$s/$web-1.qcow2" ]
}

@test "template delete exits with the first failure's code; a missing revert image exits 3" {
  run_tool 3 vmrun template delete "${VMKIT_TEST_PREFIX}nosuch" tiny
  [[ "$stderr" == *"no such template '${VMKIT_TEST_PREFIX}nosuch'"* ]]
  [[ "$stderr" == *"template 'tiny' has"* ]] || [[ "$stderr" != *"deleted template 'tiny'"* ]]
  [ -f "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  local vm
  vm=$(vm_name gone)
  run_tool 0 vmrun create "$vm" --template tiny --disk 64M
  run_tool 0 vmsnap create "$vm" s1
  run_tool 0 vmsnap create "$vm" s2
  mv "$VMKIT_STORAGE_DIR/$vm-vda.s1.qcow2" "$BATS_TEST_TMPDIR/away.qcow2"
  run_tool 3 vmsnap revert "$vm" s2
  assert_one_error_line "cannot revert '$vm' to 's2': its image '$VMKIT_STORAGE_DIR/$vm-vda.s1.qcow2' of vda is missing"
  mv "$BATS_TEST_TMPDIR/away.qcow2" "$VMKIT_STORAGE_DIR/$vm-vda.s1.qcow2"
}

@test "t/run fails when bats dies midway, or runs fewer tests than it planned" {
  local fake=$BATS_TEST_TMPDIR/fake
  mkdir -p "$fake"
  printf '#!/bin/sh\necho 1..40\necho "ok 1 first"\nexit 137\n' > "$fake/bats"
  chmod +x "$fake/bats"
  run env PATH="$fake:$PATH" VMKIT_RUN_UNITS=no "$TOP/t/run" t/000-help.bats
  [ "$status" -ne 0 ]
  [ "${lines[-1]}" = "1 passed, 1 failed, 0 skipped" ]
  # A plan not met, with bats's exit status 0.
  printf '#!/bin/sh\necho 1..3\necho "ok 1 a"\necho "ok 2 b"\nexit 0\n' > "$fake/bats"
  run env PATH="$fake:$PATH" VMKIT_RUN_UNITS=no "$TOP/t/run" t/000-help.bats
  [ "$status" -ne 0 ]
  [ "${lines[-1]}" = "2 passed, 1 failed, 0 skipped" ]
  printf '#!/bin/sh\necho 1..2\necho "ok 1 a"\necho "ok 2 b # skip no reason"\nexit 0\n' > "$fake/bats"
  run env PATH="$fake:$PATH" VMKIT_RUN_UNITS=no "$TOP/t/run" t/000-help.bats
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = "1 passed, 0 failed, 1 skipped" ]
}
