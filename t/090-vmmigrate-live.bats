#!/usr/bin/env bats
# vmmigrate: live and offline moves between real libvirt daemons on this machine
# (h1: this machine's; h2 and h3: namespaced daemons with their own /run,
# /var/lib/libvirt and host UUID, HOST.md), TCG guests built from Debian packages.
# The run's test pools are defined on every host at the same folders (shared
# storage); LOCAL_POOL has one name and a folder per host (no two share it).

load helpers

setup_file() {
  pool_start 3
  pool_local_pools
  # Post-copy's host setting (HOST.md): a test turns it off; it is put back.
  export USERFAULTFD=$(cat /proc/sys/vm/unprivileged_userfaultfd)
}
teardown_file() { pool_stop; }
teardown() {
  pool_teardown
  # Post-copy's host setting, as it was.
  sysctl -qw vm.unprivileged_userfaultfd="$USERFAULTFD" 2>/dev/null || true
}

# report FIELD: a field of the JSON report in $output.
report() { jq -r ".$1" <<<"$output"; }

# disk_of K VM: the file of the VM's first disk on host hK.
disk_of() { on_host "$1" virsh_q domblklist "$2" --details | awk '$2 == "disk" {print $4; exit}'; }

@test "live on shared storage: pre-copy moves an idle guest, defined there only, the guest still answering" {
  local vm
  vm=$(vm_name idle)
  boot_vm "$vm"
  set_guest_data "$vm" before-move
  run_tool 0 vmmigrate "$vm" h2 -o json
  [ "$(report mode)" = live ]
  [ "$(report strategy)" = auto ]
  [ "$(report finished_by)" = precopy ]
  [ "$(report storage)" = shared ]
  [ "$(report postcopy)" = false ]
  [ "$(report result)" = moved ]
  [[ "$(report downtime_ms)" =~ ^[0-9]+$ ]]
  [ "$(report memory_bytes)" -gt 0 ]
  [ "$(report iterations)" -ge 1 ]
  [ "$(vm_state_on 2 "$vm")" = running ]
  [ "$(vm_state_on 1 "$vm")" = none ]
  on_host 2 virsh_q dominfo "$vm" | grep -Eq '^Persistent: +yes'
  # The disk stayed where it was: the pool is shared.
  [ "$(disk_of 2 "$vm")" = "$VMKIT_STORAGE_DIR/$vm.qcow2" ]
  [ "$(on_host 2 guest_data "$vm")" = before-move ]
  # The move's record (for a run killed midway) is gone with the move.
  refute grep -qs "\"$vm\"" $VMKIT_STATE_DIR/migrations/*.json

  # --keep-source: h3 runs it, h2 keeps the definition, shut off.
  run_tool 0 vmmigrate -c h2 "$vm" h3 --keep-source -o tsv
  [[ "$output" == *"storage	shared"* ]]
  [ "$(vm_state_on 3 "$vm")" = running ]
  [ "$(vm_state_on 2 "$vm")" = "shut off" ]
  # Back to this machine, from a namespaced daemon: it reaches h1 by the socket
  # path every host sees.
  run_tool 0 vmmigrate -c h3 "$vm" h1 -q
  [ -z "$stderr" ]
  [ "$(vm_state_on 1 "$vm")" = running ]
  [ "$(vm_state_on 3 "$vm")" = none ]
  [ "$(guest_data "$vm")" = before-move ]
}

@test "--copy-storage moves a local disk: top image, then the whole chain; the guest's value read back there" {
  local vm f
  vm=$(vm_name copy)
  boot_vm "$vm" --pool "$LOCAL_POOL"
  set_guest_data "$vm" written-on-h1
  [ -f "$POOL_DIR/local-h1/$vm.qcow2" ]
  # Without the option: refused before anything moves.
  run_tool 4 vmmigrate "$vm" h2
  assert_one_error_line "is not on storage that h2 shares: use --copy-storage"
  [ ! -e "$POOL_DIR/local-h2/$vm.qcow2" ]
  run_tool 0 vmmigrate "$vm" h2 --copy-storage -o json
  [ "$(report storage)" = "copied (top image)" ]
  [ "$(report disk_bytes)" -gt 0 ]
  # The copy is h2's volume, in its folder of the pool, standing on the template.
  f=$POOL_DIR/local-h2/$vm.qcow2
  [ "$(disk_of 2 "$vm")" = "$f" ]
  [ "$(qemu-img info -U --output=json "$f" | jq -r '."backing-filename"')" = "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  # The source's copy is gone; the template stays.
  [ ! -e "$POOL_DIR/local-h1/$vm.qcow2" ]
  [ -f "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  [ "$(on_host 2 guest_data "$vm")" = written-on-h1 ]

  # The whole chain, flattened, to h3.
  on_host 2 set_guest_data "$vm" written-on-h2
  run_tool 0 vmmigrate -c h2 "$vm" h3 --copy-storage-all -o json
  [ "$(report storage)" = "copied (whole chain, flattened)" ]
  f=$POOL_DIR/local-h3/$vm.qcow2
  [ "$(qemu-img info -U --output=json "$f" | jq -r '."backing-filename" // "none"')" = none ]
  [ ! -e "$POOL_DIR/local-h2/$vm.qcow2" ]
  [ "$(on_host 3 guest_data "$vm")" = written-on-h2 ]
}

@test "offline: a shut-off VM's disk and definition are copied, verified by digest, and the source let go" {
  local vm
  vm=$(vm_name off)
  boot_vm "$vm" --pool "$LOCAL_POOL"
  set_guest_data "$vm" offline-value
  run_tool 0 vmrun stop "$vm"
  # --offline refuses a running VM; a shut-off one moves offline without it.
  run_tool 0 vmmigrate "$vm" h2 -o json -v
  assert_stderr_has "'$vm' is shut off: moving it offline"
  assert_stderr_has "disk vda: $POOL_DIR/local-h1/$vm.qcow2: sha256 "
  [ "$(report mode)" = offline ]
  [ "$(report storage)" = "copied and verified (sha256)" ]
  [ "$(vm_state_on 2 "$vm")" = "shut off" ]
  [ "$(vm_state_on 1 "$vm")" = none ]
  [ ! -e "$POOL_DIR/local-h1/$vm.qcow2" ]
  [ -f "$POOL_DIR/local-h2/$vm.qcow2" ]
  # It boots there with its data.
  run_tool 0 vmrun -c h2 start "$vm" --paused
  run_tool 0 vmrun -c h2 wait "$vm" --console-line 'vmkit-guest: up' --resume --timeout 120
  [ "$(on_host 2 guest_data "$vm")" = offline-value ]
  run_tool 4 vmmigrate -c h2 "$vm" h3 --offline
  assert_one_error_line "cannot move '$vm' offline: it is running"
}

@test "post-copy: --strategy postcopy pulls the rest after the first pass; without the host setting it is refused, and auto goes on without it" {
  local vm
  vm=$(vm_name post)
  sysctl -qw vm.unprivileged_userfaultfd=1
  boot_vm "$vm" --memory 512M
  # A guest whose pre-copy cannot finish in its first pass at this bandwidth, so
  # that the switch after it is sure to come.
  guest_dirty "$vm"
  run_tool 0 vmmigrate "$vm" h2 --strategy postcopy --bandwidth 16 -o json
  [ "$(report postcopy)" = true ]
  [ "$(report finished_by)" = postcopy ]
  [ "$(vm_state_on 2 "$vm")" = running ]
  # The guest runs there: its vCPU time goes on. (Not through its agent: after a
  # switch right after the first pass, libvirt 9.0 on the destination may keep
  # the agent's channel for disconnected, which says nothing of the guest.)
  local t1 t2
  t1=$(on_host 2 virsh_q domstats "$vm" --cpu-total | awk -F= '/cpu.time=/ {print $2}')
  sleep 2
  t2=$(on_host 2 virsh_q domstats "$vm" --cpu-total | awk -F= '/cpu.time=/ {print $2}')
  [ "$t2" -gt "$t1" ]
  # HOST.md: QEMU runs unprivileged and needs this for post-copy.
  sysctl -qw vm.unprivileged_userfaultfd=0
  run_tool 4 vmmigrate -c h2 "$vm" h3 --strategy postcopy
  assert_one_error_line "post-copy: it is not available there"
  [ "$(vm_state_on 2 "$vm")" = running ]
  [ "$(vm_state_on 3 "$vm")" = none ]
  run_tool 0 vmmigrate -c h2 "$vm" h3 -o json
  assert_stderr_has "warning: post-copy is not available on h3"
  [ "$(report postcopy)" = false ]
  [ "$(vm_state_on 3 "$vm")" = running ]
}

@test "a guest that dirties memory faster than the capped link: auto escalates and completes, and says what finished it" {
  local vm
  vm=$(vm_name dirty)
  boot_vm "$vm" --memory 512M
  guest_dirty "$vm"
  sleep 3
  run_tool 0 vmmigrate "$vm" h2 --bandwidth 8 --precopy-budget 20 --max-downtime 500 -o json -v
  [ "$(report result)" = moved ]
  # Pre-copy alone cannot finish at 8 MiB/s against ~8 MB/s of dirty pages.
  [ "$(report finished_by)" != precopy ]
  [[ "$(report finished_by)" == @(postcopy|auto-converge|"precopy (longer downtime)") ]]
  # The pause is reported (its length is the machine's, not a test's business).
  [[ "$(report downtime_ms)" =~ ^[0-9]+$ ]]
  [ "$(vm_state_on 2 "$vm")" = running ]
  # The writer still runs in the guest, now on h2.
  [ "$(on_host 2 guest_exec "$vm" 'ps | grep -c "[c]p /tmp/a"')" -ge 1 ]
}

@test "network continuity: the guest keeps its MAC, and after the switch a frame from it is seen on its bridge" {
  local vm br mac cap pid
  br=$(make_bridge)
  vm=$(vm_name arp)
  boot_vm "$vm" --network "bridge=$br"
  mac=$(virsh_q domiflist "$vm" | awk '{print $5; exit}')
  [[ "$mac" =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]]
  cap=$BATS_TEST_TMPDIR/frames
  # QEMU's self-announce: RARP frames (ethertype 0x8035) from the guest's MAC.
  tcpdump -i "$br" -nn -e -l "ether src $mac and ether proto 0x8035" >"$cap" 2>/dev/null &
  pid=$!
  sleep 1
  [ ! -s "$cap" ]
  run_tool 0 vmmigrate "$vm" h2
  sleep 2
  kill "$pid"
  wait "$pid" || true
  grep -qi "$mac" "$cap"
  [ "$(on_host 2 virsh_q domiflist "$vm" | awk '{print $5; exit}')" = "$mac" ]
}

@test "an encrypted VM moves live with its disk copied: its key defined there by the move (not by --check), the copy encrypted, the guest's data read there" {
  local vm f u
  vm=$(vm_name enc)
  boot_vm "$vm" --pool "$LOCAL_POOL" --full --encrypt
  set_guest_data "$vm" kept-secret
  u=$(virsh_q dumpxml --inactive "$vm" | xmllint --xpath 'string(//disk/source/encryption/secret/@uuid)' -)
  [ -n "$u" ]
  run_tool 0 vmmigrate "$vm" h2 --copy-storage --check -o json
  [ "$(jq -r --arg c "disk key $u" '.[] | select(.check == $c) | .detail' <<<"$output")" = \
    "h2 lacks the disk key: the move defines it there from $VMKIT_KEY_DIR/$u.key" ]
  ! on_host 2 virsh_q secret-dumpxml "$u" 2>/dev/null
  run_tool 0 vmmigrate "$vm" h2 --copy-storage -o json
  on_host 2 virsh_q secret-dumpxml "$u" | grep -q "private='yes'"
  f=$POOL_DIR/local-h2/$vm.qcow2
  [ "$(qemu-img info -U --output=json "$f" | jq -r .encrypted)" = true ]
  ! grep -q 'tiny guest root' "$f"
  [ "$(on_host 2 guest_data "$vm")" = kept-secret ]
  # The source host let the key go with the VM.
  ! on_host 1 virsh_q secret-dumpxml "$u" 2>/dev/null
  # A move refused by a check defines nothing there: a VM of that name on h3.
  printf '<domain type="qemu"><name>%s</name><memory>65536</memory><os><type>hvm</type></os></domain>' "$vm" \
    > "$BATS_TEST_TMPDIR/clash.xml"
  on_host 3 virsh_q define "$BATS_TEST_TMPDIR/clash.xml" >/dev/null
  run_tool 4 vmmigrate -c h2 "$vm" h3 --copy-storage
  ! on_host 3 virsh_q secret-dumpxml "$u" 2>/dev/null
  on_host 3 virsh_q undefine "$vm" >/dev/null
  # Without the key kept here, a host that lacks it is refused before anything moves.
  run_tool 0 vmrun -c h2 destroy "$vm"
  mv "$VMKIT_KEY_DIR/$u.key" "$BATS_TEST_TMPDIR/key"
  run_tool 4 vmmigrate -c h2 "$vm" h3
  assert_stderr_has "h3 lacks the disk key and this machine does not keep it"
  mv "$BATS_TEST_TMPDIR/key" "$VMKIT_KEY_DIR/$u.key"
  ! on_host 3 virsh_q secret-dumpxml "$u" 2>/dev/null
  [ "$(vm_state_on 3 "$vm")" = none ]
}
