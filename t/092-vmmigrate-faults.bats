#!/usr/bin/env bats
# vmmigrate when things go wrong: Ctrl-C, SIGTERM and --timeout abort the move and
# leave the VM running where it was with nothing left on the destination; so does
# a destination that dies midway; and a run killed with SIGKILL at a random
# instant leaves nothing that the next run cannot finish or roll back.
# The moves are slowed down by a bandwidth cap, so that each fault lands midway.

load helpers

setup_file() {
  pool_start 3
  pool_local_pools
}
teardown_file() { pool_stop; }
teardown() { pool_teardown; }

# start_move ARGS...: vmmigrate in the background; $MOVE_PID, stderr in $MOVE_ERR.
start_move() {
  MOVE_ERR=$BATS_TEST_TMPDIR/move.err
  "$TOP/vmmigrate/vmmigrate" "$@" >"$BATS_TEST_TMPDIR/move.out" 2>"$MOVE_ERR" &
  MOVE_PID=$!
}
# end_move: waits for it; $MOVE_RC.
end_move() {
  MOVE_RC=0
  wait "$MOVE_PID" || MOVE_RC=$?
}

# wait_job_started VM: until the VM's migration job runs on h1 (up to 30 s).
wait_job_started() {
  local n
  for n in $(seq 1 150); do
    virsh_q domjobinfo "$1" 2>/dev/null | grep -q '^Job type: *Unbounded' && return 0
    sleep 0.2
  done
  echo "no migration job started on $1" >&2
  return 1
}

# wait_no_job VM K: until no job runs on the VM on host hK (a move a killed run
# started goes on in libvirt), up to 120 s.
wait_no_job() {
  local n
  for n in $(seq 1 600); do
    on_host "$2" virsh_q domjobinfo "$1" 2>/dev/null | grep -q '^Job type: *Unbounded' || return 0
    sleep 0.2
  done
  echo "a job still runs on $1" >&2
  return 1
}

@test "Ctrl-C, SIGTERM and --timeout abort a move: the VM runs on the source, nothing is left on the destination; after the switch to post-copy, Ctrl-C lets it finish" {
  local vm sig
  vm=$(vm_name abort)
  boot_vm "$vm" --pool "$LOCAL_POOL" --memory 512M
  guest_dirty "$vm"
  for sig in INT TERM; do
    start_move "$vm" h2 --copy-storage --bandwidth 2
    wait_job_started "$vm"
    [ -f "$POOL_DIR/local-h2/$vm.qcow2" ]
    kill -"$sig" "$MOVE_PID"
    end_move
    [ "$MOVE_RC" -eq 1 ]
    [ "$(wc -l < "$MOVE_ERR")" -eq 1 ] || { cat "$MOVE_ERR" >&2; false; }
    grep -q "interrupted by SIG$sig: the move of '$vm' was aborted; the VM runs on " "$MOVE_ERR"
    [ "$(vm_state_on 1 "$vm")" = running ]
    [ "$(vm_state_on 2 "$vm")" = none ]
    [ ! -e "$POOL_DIR/local-h2/$vm.qcow2" ]
    [ -f "$POOL_DIR/local-h1/$vm.qcow2" ]
  done
  run_tool 5 vmmigrate "$vm" h2 --copy-storage --bandwidth 2 --timeout 3
  assert_one_error_line "moving '$vm' to h2 timed out after 3 s: aborted; the VM runs on "
  [ "$(vm_state_on 1 "$vm")" = running ]
  [ "$(vm_state_on 2 "$vm")" = none ]
  [ ! -e "$POOL_DIR/local-h2/$vm.qcow2" ]
  # The guest never noticed: its writer still runs.
  [ "$(guest_exec "$vm" 'ps | grep -c "[c]p /tmp/a"')" -ge 1 ]

  # Once post-copy has started, Ctrl-C lets the move finish, and says so. The test
  # holds the move in post-copy (libvirt's post-copy bandwidth, set on the running
  # job) until the interrupt has been seen, then lets it go.
  start_move "$vm" h2 --copy-storage --strategy postcopy --bandwidth 16
  wait_job_started "$vm"
  virsh_q migrate-setspeed --postcopy "$vm" 1
  wait_for eval '[ "$(virsh_q domstate --reason "$vm" 2>/dev/null)" = "paused (post-copy)" ]'
  kill -INT "$MOVE_PID"
  wait_for grep -q "warning: post-copy has started: the move cannot be undone; letting it finish" "$MOVE_ERR"
  virsh_q migrate-setspeed --postcopy "$vm" 1000
  end_move
  [ "$MOVE_RC" -eq 0 ] || { cat "$MOVE_ERR" >&2; false; }
  [ "$(vm_hosts_of "$vm")" = h2 ]
  [ "$(vm_state_on 2 "$vm")" = running ]
  [ ! -e "$POOL_DIR/local-h1/$vm.qcow2" ]
}

@test "the destination dies midway: the VM keeps running on the source, and the next move cleans up and succeeds" {
  local vm
  vm=$(vm_name dies)
  boot_vm "$vm" --pool "$LOCAL_POOL" --memory 512M
  guest_dirty "$vm"
  start_move "$vm" h3 --copy-storage --bandwidth 2
  wait_job_started "$vm"
  [ -f "$POOL_DIR/local-h3/$vm.qcow2" ]
  # h3's daemons and QEMU are gone at once, as when the host loses power.
  "$TOP/scripts/host2" stop "$POOL_DIR/h3"
  end_move
  # h3 comes back at once (a fresh boot: its transient pools are defined again),
  # so that a failure below leaves the next tests their third host.
  HOST2_QEMU_CONF="migration_port_min = 49452
migration_port_max = 49515" "$TOP/scripts/host2" start "$POOL_DIR/h3" host3 >/dev/null
  on_host 3 virsh_q pool-create-as "$VMKIT_POOL" dir --target "$VMKIT_STORAGE_DIR" >/dev/null
  on_host 3 virsh_q pool-create-as "$VMKIT_TEMPLATE_POOL" dir --target "$VMKIT_TEMPLATE_DIR" >/dev/null
  on_host 3 virsh_q pool-create-as "$LOCAL_POOL" dir --target "$POOL_DIR/local-h3" >/dev/null
  cat "$MOVE_ERR" >&3
  [ "$MOVE_RC" -eq 1 ]
  grep -q "cannot move '$vm' to h3: .*; the VM runs on " "$MOVE_ERR"
  [ "$(vm_state_on 1 "$vm")" = running ]
  [ "$(guest_exec "$vm" 'echo alive')" = alive ]
  # The volume it made there could not be removed when h3 did not answer (whether
  # the run saw the connection dead first, or the removal fail, depends on
  # timing); when h3's QEMU went first and its daemon still answered, the run
  # removed it itself.
  local left=yes
  if ! grep -Eq "warning: (the volumes this run made on h3 stay until the next move of '$vm'|cannot remove $POOL_DIR/local-h3/$vm.qcow2 from h3 yet|kept $POOL_DIR/local-h3/$vm.qcow2 on h3)" "$MOVE_ERR"; then
    left=no
    [ ! -e "$POOL_DIR/local-h3/$vm.qcow2" ]
    refute grep -qs "\"$vm\"" $VMKIT_STATE_DIR/migrations/*.json
  fi
  [ "$(vm_state_on 3 "$vm")" = none ]
  # The next move of the VM removes what the failed one left, then moves it.
  run_tool 0 vmmigrate "$vm" h3 --copy-storage
  [ "$left" = no ] || assert_stderr_has "rolled back the move of '$vm' to host3"
  [ "$(vm_state_on 3 "$vm")" = running ]
  [ "$(vm_state_on 1 "$vm")" = none ]
  [ ! -e "$POOL_DIR/local-h1/$vm.qcow2" ]
}

@test "SIGKILL at random instants: the next run finishes or rolls back, and the VM is on one host with one disk" {
  local vm round dest src delay rc where uuid
  vm=$(vm_name kill)
  boot_vm "$vm" --pool "$LOCAL_POOL"
  uuid=$(virsh_q domuuid "$vm")
  src=1
  for round in 1 2 3 4 5 6; do
    dest=$((src % 3 + 1))
    # Live moves, and offline ones (every other round the VM is shut off). An
    # offline move of this guest's small disk takes about 0.1-0.2 s here, a
    # live one a few: the kill comes at a random instant within that.
    delay=$(awk -v s="$RANDOM" -v r="$round" 'BEGIN { srand(s); printf "%.2f", rand() * (r % 2 ? 2.5 : 0.15) }')
    if [ $((round % 2)) -eq 0 ]; then
      on_host "$src" virsh_q destroy "$vm" >/dev/null 2>&1 || true
    elif [ "$(vm_state_on "$src" "$vm")" != running ]; then
      on_host "$src" virsh_q start "$vm" >/dev/null
    fi
    start_move -c "h$src" "$vm" "h$dest" --copy-storage --bandwidth 20
    sleep "$delay"
    kill -KILL "$MOVE_PID" 2>/dev/null || true
    end_move
    echo "# round $round: h$src -> h$dest, killed after $delay s (exit $MOVE_RC$( [ "$MOVE_RC" = 0 ] && echo ': it had finished'))" >&3
    wait_no_job "$vm" "$src"
    [ -n "$(vm_hosts_of "$vm")" ]
    # The next run of the same move finishes or rolls back what the killed one
    # left, then moves the VM (0), or finds that the killed run's move had
    # finished: no such VM on the source any more (3).
    # Every other round the VM is named by its UUID, in capitals: a killed run's
    # record is found by it too.
    local arg=$vm
    [ $((round % 2)) -eq 0 ] && arg=${uuid^^}
    run --separate-stderr "$TOP/vmmigrate/vmmigrate" -c "h$src" "$arg" "h$dest" --copy-storage
    echo "# next run ($arg): exit $status: $stderr" >&3
    [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
    # Exactly one host holds the VM, and exactly one disk file of it exists.
    [ "$(vm_hosts_of "$vm")" = "h$dest" ]
    [ "$(ls "$POOL_DIR"/local-h*/"$vm".qcow2 | wc -l)" -eq 1 ]
    [ -f "$POOL_DIR/local-h$dest/$vm.qcow2" ]
    refute grep -qs "\"$vm\"" $VMKIT_STATE_DIR/migrations/*.json
    on_host "$dest" virsh_q dominfo "$vm" | grep -Eq '^Persistent: +yes'
    src=$dest
  done
}

# wait_for CONDITION...: until it holds, up to 60 s.
wait_for() {
  local n
  for n in $(seq 1 300); do
    "$@" && return 0
    sleep 0.2
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

@test "SIGKILL at each step that leaves something (t/fault holds the tool there): rolled back before the switch, finished after the verify; a copy that differs (exit 6)" {
  local vm rec
  vm=$(vm_name step)
  boot_vm "$vm" --pool "$LOCAL_POOL"
  # 1. Live: the record and h2's volume made, the migration not started.
  VMKIT_INJECT='virDomainMigrateToURI3:delay:60000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    start_move "$vm" h2 --copy-storage
  wait_for test -f "$POOL_DIR/local-h2/$vm.qcow2"
  kill -KILL "$MOVE_PID"
  end_move
  run_tool 0 vmmigrate "$vm" h2 --copy-storage
  assert_stderr_has "removed $POOL_DIR/local-h2/$vm.qcow2, left by an earlier move"
  assert_stderr_has "rolled back the move of '$vm' to host2"
  [ "$(vm_hosts_of "$vm")" = h2 ]
  [ ! -e "$POOL_DIR/local-h1/$vm.qcow2" ]

  # 2. Offline: the disk copied to h3, the copy not defined there yet.
  run_tool 0 vmrun -c h2 stop "$vm"
  VMKIT_INJECT='virDomainDefineXMLFlags:delay:60000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    start_move -c h2 "$vm" h3
  wait_for test -f "$POOL_DIR/local-h3/$vm.qcow2"
  sleep 2
  kill -KILL "$MOVE_PID"
  end_move
  [ "$(vm_state_on 3 "$vm")" = none ]
  run_tool 0 vmmigrate -c h2 "$vm" h3
  assert_stderr_has "rolled back the move of '$vm' to host3"
  [ "$(vm_hosts_of "$vm")" = h3 ]
  [ ! -e "$POOL_DIR/local-h2/$vm.qcow2" ]

  # 3. Offline: defined on h1 and verified, the source not let go yet.
  VMKIT_INJECT='virDomainUndefine:delay:60000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    start_move -c h3 "$vm" h1
  rec=$VMKIT_STATE_DIR/migrations/$(on_host 3 virsh_q domuuid "$vm").json
  wait_for eval '[ "$(jq -r .phase "$rec" 2>/dev/null)" = offline-verified ]' ||
    { cat "$MOVE_ERR" >&2; false; }
  kill -KILL "$MOVE_PID"
  end_move
  [ "$(vm_state_on 1 "$vm")" = "shut off" ]
  [ "$(vm_state_on 3 "$vm")" = "shut off" ]
  # The next run from h3 finishes it: the source's definition and disk go.
  run_tool 3 vmmigrate -c h3 "$vm" h1
  assert_stderr_has "finished the move of '$vm' to "
  [ "$(vm_hosts_of "$vm")" = h1 ]
  [ ! -e "$POOL_DIR/local-h3/$vm.qcow2" ]
  [ -f "$POOL_DIR/local-h1/$vm.qcow2" ]
  refute grep -qs "\"$vm\"" $VMKIT_STATE_DIR/migrations/*.json

  # 4. The same, but the source's copy is used before the next run (it boots:
  # its disk changes): the verified copy is stale, and the move is rolled back.
  VMKIT_INJECT='virDomainUndefine:delay:60000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    start_move -c h1 "$vm" h2
  rec=$VMKIT_STATE_DIR/migrations/$(virsh_q domuuid "$vm").json
  wait_for eval '[ "$(jq -r .phase "$rec" 2>/dev/null)" = offline-verified ]'
  kill -KILL "$MOVE_PID"
  end_move
  run_tool 0 vmrun start "$vm" --paused
  run_tool 0 vmrun wait "$vm" --console-line 'vmkit-guest: up' --resume --timeout 120
  run_tool 0 vmrun stop "$vm"
  run_tool 0 vmmigrate -c h1 "$vm" h2
  assert_stderr_has "rolled back the move of '$vm' to host2"
  [ "$(vm_hosts_of "$vm")" = h2 ]

  # 5. --timeout on an offline move: the deadline comes while it is held before
  # defining the verified copy; the definition it then makes is undone, what it
  # made is removed, the VM stays (exit 5).
  VMKIT_INJECT='virDomainDefineXMLFlags:delay:6000' LD_PRELOAD="$TOP/t/fault/libinject.so" \
    run_tool 5 vmmigrate -c h2 "$vm" h3 --timeout 2
  assert_stderr_has "interrupted by its time limit (SIGALRM)"
  [ "$(vm_hosts_of "$vm")" = h2 ]
  [ ! -e "$POOL_DIR/local-h3/$vm.qcow2" ]
  refute grep -qs "\"$vm\"" $VMKIT_STATE_DIR/migrations/*.json

  # 6. A copy that does not match: h3's copy changed after it was written (t/fault
  # holds the tool between the copy and the verify: its second read of the disk's
  # volume is the first digest). The digests differ: exit 6, the VM stays on h2
  # with its disk, nothing of it stays on h3.
  VMKIT_INJECT='virStorageVolDownload:delay:10000@2' VMKIT_INJECT_VOL=$vm.qcow2 \
    VMKIT_INJECT_MARK=$BATS_TEST_TMPDIR/held \
    LD_PRELOAD="$TOP/t/fault/libinject.so" start_move -q -c h2 "$vm" h3
  wait_for test -e "$BATS_TEST_TMPDIR/held"
  local copy=$POOL_DIR/local-h3/$vm.qcow2
  printf 'vmkit' | dd of="$copy" bs=1 seek=$(($(stat -c %s "$copy") - 5)) conv=notrunc status=none
  end_move
  [ "$MOVE_RC" -eq 6 ] || { cat "$MOVE_ERR" >&2; false; }
  [ "$(wc -l < "$MOVE_ERR")" -eq 1 ] || { cat "$MOVE_ERR" >&2; false; }
  grep -q "the copy of $POOL_DIR/local-h2/$vm.qcow2 (disk vda) on h3 differs from the source" "$MOVE_ERR"
  [ "$(vm_hosts_of "$vm")" = h2 ]
  [ "$(vm_state_on 2 "$vm")" = "shut off" ]
  [ -f "$POOL_DIR/local-h2/$vm.qcow2" ]
  [ ! -e "$copy" ]
  refute grep -qs "\"$vm\"" $VMKIT_STATE_DIR/migrations/*.json
}
