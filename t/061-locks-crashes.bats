#!/usr/bin/env bats
# Two runs on one VM at once, and runs killed (kill -9) at random instants: the
# per-VM lock lets exactly one change a VM at a time, and the journal lets the next
# run finish or roll back what a killed one started, with nothing left behind
# (vmsnap verify reports leftover files, jobs and records: it must find none).
# One running guest for the file; the rounds run one after another.

load helpers

setup_file() {
  export VM
  VM=$(file_vm_name lk)
  boot_vm "$VM"
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
}

teardown() { :; }

ROUNDS=${VMKIT_CRASH_ROUNDS:-6}

# Loops count with "round": bats's own run sets a global i.

# A pause of 0 to $1 ms, chosen at random: where the kill lands.
random_pause() { sleep "$(printf '0.%03d' $((RANDOM % $1)))"; }

# The VM is whole: the guest answers, its data reads back, verify finds nothing.
assert_whole() {
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
  [ "$(guest_data "$VM")" = "$1" ]
  run_tool 0 vmsnap verify "$VM"
}

@test "two vmsnap create of one name at once: one wins, the other exits 4; the winner's overlay and the guest intact" {
  local round r1 r2
  for round in $(seq 1 "$ROUNDS"); do
    set_guest_data "$VM" "race$round"
    "$TOP/vmsnap/vmsnap" create "$VM" "race$round" > "$BATS_TEST_TMPDIR/o1" 2> "$BATS_TEST_TMPDIR/e1" & local p1=$!
    "$TOP/vmsnap/vmsnap" create "$VM" "race$round" > "$BATS_TEST_TMPDIR/o2" 2> "$BATS_TEST_TMPDIR/e2" & local p2=$!
    r1=0; wait $p1 || r1=$?
    r2=0; wait $p2 || r2=$?
    echo "round $round: $r1 $r2: $(cat "$BATS_TEST_TMPDIR/e1" "$BATS_TEST_TMPDIR/e2")" >&3
    [ $((r1 + r2)) = 4 ]
    [ "$r1" = 0 ] || [ "$r2" = 0 ]
    # The loser says why: the lock, or (had it waited) the snapshot it found.
    grep -Eq "is busy: .*vmsnap create .*holds its lock|already has a snapshot 'race$round'" \
      "$BATS_TEST_TMPDIR/e$([ "$r1" = 4 ] && echo 1 || echo 2)"
    [ -f "$VMKIT_STORAGE_DIR/$VM-vda.race$round.qcow2" ]
    [ "$(virsh_q domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "$VMKIT_STORAGE_DIR/$VM-vda.race$round.qcow2" ]
  done
  assert_whole "race$ROUNDS"
  run_tool 0 vmsnap prune "$VM" --keep 0
  run_tool 0 vmsnap delete "$VM" "race$ROUNDS"
  assert_whole "race$ROUNDS"
}

@test "--lock-wait: a second run waits for the first, then acts on what it left; without it, exit 4 naming the holder" {
  local vm
  vm=$(vm_name slow)
  # A guest that ignores the power button: stop holds the VM for its whole timeout.
  boot_vm "$vm" --cmdline "$(cat "$VMKIT_FIXTURE/cmdline") vmkit.acpi=ignore"
  "$TOP/vmrun/vmrun" stop "$vm" --timeout 8 2>/dev/null & local stopper=$!
  # Until stop holds the VM's lock (the kernel's list of locks names its pid).
  local tries=0
  until grep -Eq "POSIX +ADVISORY +WRITE +$stopper " /proc/locks; do
    tries=$((tries + 1))
    [ $tries -lt 200 ]
    sleep 0.05
  done
  run_tool 4 vmsnap create "$vm" s1
  assert_one_error_line "VM '$vm' is busy: vmrun stop $vm --timeout 8 (pid $stopper) holds its lock (wait for it with --lock-wait SECONDS)"
  run_tool 4 vmrun start "$vm"
  assert_stderr_has "holds its lock"
  # Waiting, it takes the snapshot once stop has forced the VM off.
  run_tool 0 vmsnap create "$vm" s1 --lock-wait 120
  [ "$(snap_json "$vm" s1 kind)" = offline ]
  wait $stopper
  run_tool 2 vmsnap create "$vm" s2 --lock-wait forever
  run_tool 2 vmsnap create "$vm" s2 --lock-wait 86401
}

@test "template delete racing a clone of it: never both" {
  local round tpl clone rc rd
  for round in $(seq 1 "$ROUNDS"); do
    tpl=${VMKIT_TEST_PREFIX}t61-$round
    clone=$(vm_name "c$round")
    "$TOP/scripts/mktemplate" "$VMKIT_FIXTURE" "$VMKIT_TEMPLATE_DIR" "$tpl"
    "$TOP/vmrun/vmrun" create "$clone" --template "$tpl" 2> "$BATS_TEST_TMPDIR/ec" & local pc=$!
    [ $((RANDOM % 2)) = 0 ] || random_pause 100
    rd=0; "$TOP/vmrun/vmrun" template delete "$tpl" 2> "$BATS_TEST_TMPDIR/ed" || rd=$?
    rc=0; wait $pc || rc=$?
    echo "round $round: create $rc, delete $rd" >&3
    if [ "$rd" = 0 ]; then
      # The template went first: the clone was refused, and left nothing.
      [ "$rc" != 0 ]
      run virsh_q dominfo "$clone"
      [ "$status" -ne 0 ]
      [ ! -e "$VMKIT_STORAGE_DIR/$clone.qcow2" ]
      [ ! -e "$VMKIT_TEMPLATE_DIR/$tpl.qcow2" ]
    else
      [ "$rd" = 4 ]
      [ -f "$VMKIT_TEMPLATE_DIR/$tpl.qcow2" ]
      if [ "$rc" = 0 ]; then
        qemu-img info -U "$VMKIT_STORAGE_DIR/$clone.qcow2" >/dev/null
        run_tool 0 vmrun undefine "$clone" --remove-storage
      fi
      run_tool 0 vmrun template delete "$tpl"
    fi
  done
}

@test "vmsnap create killed at random instants: the next run finishes or rolls back, nothing is left" {
  local round
  for round in $(seq 1 "$ROUNDS"); do
    set_guest_data "$VM" "k$round"
    "$TOP/vmsnap/vmsnap" create "$VM" "k$round" --quiesce=auto >/dev/null 2>&1 & local p=$!
    random_pause 300
    kill -9 $p 2>/dev/null || true
    wait $p || true
    # The next run on the VM (any that changes it) deals with what is left.
    run_tool 0 vmsnap create "$VM" "after$round"
    assert_whole "k$round"
  done
  run_tool 0 vmsnap prune "$VM" --keep 0
  run_tool 0 vmsnap delete "$VM" "after$ROUNDS"
  assert_whole "k$ROUNDS"
}

@test "vmsnap delete killed during its merge: the next run finishes it; the data written after the snapshot stays" {
  local round left
  for round in $(seq 1 "$ROUNDS"); do
    run_tool 0 vmsnap create "$VM" "d$round"
    # Something to merge, so that the kill can land inside the block commit.
    guest_exec "$VM" "dd if=/dev/urandom of=/mnt/data/fill bs=1M count=24 2>/dev/null; echo d$round > /mnt/data/value; sync" >/dev/null
    "$TOP/vmsnap/vmsnap" delete "$VM" "d$round" >/dev/null 2>&1 & local p=$!
    random_pause 900
    kill -9 $p 2>/dev/null || true
    wait $p || true
    run_tool 0 vmsnap create "$VM" "probe$round"
    echo "round $round: $stderr" >&3
    # Finished, or (killed before it began) still there to delete now.
    left=$(snap_json "$VM" "d$round" name)
    if [ -n "$left" ]; then run_tool 0 vmsnap delete "$VM" "d$round"; fi
    run_tool 0 vmsnap delete "$VM" "probe$round"
    no_snapshot "$VM" "d$round" name
    [ ! -e "$VMKIT_STORAGE_DIR/$VM-vda.d$round.qcow2" ]
    assert_whole "d$round"
  done
}

@test "vmsnap delete killed with its merge ready at 100 %: verify reports it, the next run pivots and finishes" {
  set_guest_data "$VM" before
  run_tool 0 vmsnap create "$VM" ready
  set_guest_data "$VM" after
  # The injector holds the pivot for 30 s: the kill lands while the job waits for it.
  VMKIT_INJECT='virDomainBlockJobAbort:delay:30000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    "$TOP/vmsnap/vmsnap" delete "$VM" ready >/dev/null 2>&1 & local p=$!
  local tries=0
  until [ "$(virsh_q blockjob "$VM" vda --raw 2>/dev/null | grep -o 'cur=[0-9]*' | cut -d= -f2)" = \
          "$(virsh_q blockjob "$VM" vda --raw 2>/dev/null | grep -o 'end=[0-9]*' | cut -d= -f2)" ] &&
        virsh_q blockjob "$VM" vda --raw 2>/dev/null | grep -q 'end=[1-9]'; do
    tries=$((tries + 1))
    [ $tries -lt 300 ]
    sleep 0.1
  done
  sleep 0.5
  kill -9 $p
  wait $p || true
  # The job is still there, ready, and nothing follows it.
  virsh_q blockjob "$VM" vda --raw | grep -q 'type=Active Block Commit'
  run_tool 6 vmsnap verify "$VM"
  [[ "$output" == *"an unfinished snapshot-delete by vmsnap"* ]]
  [[ "$output" == *"a block job (active commit) runs on it, ready at 100 % for its pivot, and no vmkit run follows it"* ]]
  # Any vmsnap run that changes the VM finishes the delete first.
  run_tool 0 vmsnap create "$VM" next
  assert_stderr_has "finishing the delete of snapshot 'ready'"
  refute job_on "$VM" vda
  no_snapshot "$VM" ready name
  [ ! -e "$VMKIT_STORAGE_DIR/$VM-vda.ready.qcow2" ]
  run_tool 0 vmsnap delete "$VM" next
  assert_whole after
}

@test "vmsnap revert killed at random instants: the VM stays usable, the next revert works, no overlay is left" {
  local round
  set_guest_data "$VM" base
  run_tool 0 vmsnap create "$VM" rb
  for round in $(seq 1 "$ROUNDS"); do
    run_tool 0 vmrun wait "$VM" --agent --timeout 120
    set_guest_data "$VM" "x$round"
    "$TOP/vmsnap/vmsnap" revert "$VM" rb --running >/dev/null 2>&1 & local p=$!
    random_pause 400
    kill -9 $p 2>/dev/null || true
    wait $p || true
    run_tool 0 vmsnap revert "$VM" rb --running
    echo "round $round: $stderr" >&3
    run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --new --timeout 120 || true
    assert_whole base
    # One overlay of the revert in use; the discarded ones are gone.
    [ "$(ls "$VMKIT_STORAGE_DIR" | grep -c "^$VM-vda\.rb-r")" = 1 ]
  done
  run_tool 0 vmsnap delete "$VM" rb
  assert_whole base
}

@test "a quiesced snapshot killed while libvirt has the guest frozen: the guest is thawed" {
  # The fault injector holds the snapshot call for 3 s, inside which the old code
  # had already frozen the guest itself; libvirt freezes and thaws within the call.
  VMKIT_INJECT='virDomainSnapshotCreateXML:delay:3000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    "$TOP/vmsnap/vmsnap" create "$VM" q1 --quiesce >/dev/null 2>&1 & local p=$!
  sleep 1.5
  kill -9 $p
  wait $p || true
  sleep 1
  [ "$(virsh_q qemu-agent-command "$VM" '{"execute":"guest-fsfreeze-status"}' | jq -r .return)" = thawed ]
  run_tool 0 vmsnap create "$VM" q2 --quiesce
  [ "$(virsh_q qemu-agent-command "$VM" '{"execute":"guest-fsfreeze-status"}' | jq -r .return)" = thawed ]
  run_tool 0 vmsnap delete "$VM" q2
  assert_whole base
}

@test "vmrun create killed at random instants: the next create of the name succeeds, no volume is left over" {
  local round vm
  vm=$(vm_name kc)
  for round in $(seq 1 "$ROUNDS"); do
    "$TOP/vmrun/vmrun" create "$vm" --template tiny --disk 64M --start >/dev/null 2>&1 & local p=$!
    random_pause 400
    kill -9 $p 2>/dev/null || true
    wait $p || true
    # A VM left half-made is rolled back by the next run; a whole one is kept (4).
    run --separate-stderr "$TOP/vmrun/vmrun" create "$vm" --template tiny --disk 64M
    echo "round $round: $status $stderr" >&3
    if [ "$status" = 4 ]; then
      [[ "$stderr" == *"VM '$vm' already exists"* ]]
      qemu-img info -U "$VMKIT_STORAGE_DIR/$vm.qcow2" >/dev/null
      qemu-img info -U "$VMKIT_STORAGE_DIR/$vm-disk1.qcow2" >/dev/null
    else
      [ "$status" = 0 ]
    fi
    run_tool 0 vmrun undefine "$vm" --force --remove-storage
    [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
  done
}
