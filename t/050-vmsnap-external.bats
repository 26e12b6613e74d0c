#!/usr/bin/env bats
# vmsnap on one running guest with external snapshots, booted once for the file.
# Every revert is proven by data: the guest writes a value, a snapshot is taken,
# it writes another, and the revert brings the first back. The tests run in order.

load helpers

setup_file() {
  export VM
  VM=$(file_vm_name ext)
  boot_vm "$VM"
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
}

teardown() { :; }

disk() { echo "$VMKIT_STORAGE_DIR/$VM$1"; }

@test "create --quiesce: an external quiesced snapshot, its name on stdout, its kind recorded" {
  set_guest_data "$VM" A
  run_tool 0 vmsnap create "$VM" s1 --quiesce --description "before B"
  [ "$output" = s1 ]
  [[ "$stderr" == *"created quiesced snapshot 's1' of '$VM' (external; paused "* ]]
  [ "$(snap_json "$VM" s1 kind)" = quiesced ]
  [ "$(snap_json "$VM" s1 location)" = external ]
  [ "$(snap_json "$VM" s1 description)" = "before B" ]
  [ "$(snap_json "$VM" s1 frozen_ms)" -ge 0 ]
  [ "$(snap_json "$VM" s1 paused_ms)" -ge 0 ]
  [ -f "$(disk -vda.s1.qcow2)" ]
  [ "$(virsh_q domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "$(disk -vda.s1.qcow2)" ]
}

@test "create: a crash-consistent disk-only snapshot by default; bad names and duplicates refused" {
  set_guest_data "$VM" B
  run_tool 0 vmsnap create "$VM" s2
  [ "$(snap_json "$VM" s2 kind)" = crash-consistent ]
  [ "$(snap_json "$VM" s2 parent)" = s1 ]
  run_tool 4 vmsnap create "$VM" s2
  assert_one_error_line "VM '$VM' already has a snapshot 's2'"
  run_tool 2 vmsnap create "$VM" 'bad name'
  run_tool 2 vmsnap create "$VM" x --memory --disk-only
  run_tool 2 vmsnap create "$VM" x --external
  run_tool 2 vmsnap create "$VM" x --quiesce=always
  run_tool 2 vmsnap create "$VM" x --memory --quiesce
  run_tool 3 vmsnap create "$(vm_name nosuch)" x
  run_tool 0 vmsnap list "$VM" -o json
  [ "$(jq length <<< "$output")" = 2 ]
}

@test "list: a tree with the current snapshot marked, in table, tsv and json" {
  run_tool 0 vmsnap list "$VM"
  [[ "${lines[0]}" == "NAME"*"KIND"*"LOCATION"*"CREATED"*"PAUSED-MS"*"DESCRIPTION" ]]
  [[ "${lines[1]}" == "s1 "*"quiesced"*"external"*"before B" ]]
  [[ "${lines[2]}" == '`- s2 *'*"crash-consistent"* ]]
  run_tool 0 vmsnap list "$VM" -o tsv
  [[ "${lines[1]}" == "s2	s1	crash-consistent	external	"*"	yes	" ]]
  run_tool 0 vmsnap list "$VM" -o json
  [ "$(jq -r '.[0].children | join(",")' <<< "$output")" = s2 ]
  [ "$(jq -r '.[1].disks[0].base' <<< "$output")" = "$(disk -vda.s1.qcow2)" ]
  [ "$(jq -r '.[1].current' <<< "$output")" = true ]
  run_tool 3 vmsnap list "$(vm_name nosuch)"
}

@test "revert to an external snapshot on libvirt 9.0: the first value is back" {
  set_guest_data "$VM" C
  run_tool 0 vmsnap revert "$VM" s1 --running
  run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --timeout 120
  console "$VM" | grep -qx 'vmkit-guest: data=A'
  [ "$(snap_json "$VM" s1 current)" = true ]
  # The disk now stands on a fresh overlay on what s1 froze; what the VM ran on
  # after s2 is gone; what s2 froze stays.
  [ "$(virsh_q domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "$(disk -vda.s1-r1.qcow2)" ]
  [ "$(qemu-img info -U --output=json "$(disk -vda.s1-r1.qcow2)" | jq -r '."backing-filename"')" = "$(disk .qcow2)" ]
  [ ! -e "$(disk -vda.s2.qcow2)" ]
  [ -f "$(disk -vda.s1.qcow2)" ]
  run_tool 0 vmsnap verify "$VM"
  # The records came back after the definition did.
  [ "$(snap_json "$VM" s1 kind)" = quiesced ]
}

@test "revert to the other branch, then back: each snapshot brings its own data" {
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
  run_tool 0 vmsnap revert "$VM" s2 --running
  run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --timeout 120
  console "$VM" | grep -qx 'vmkit-guest: data=B'
  run_tool 0 vmsnap revert "$VM" s1 --running
  run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --timeout 120
  console "$VM" | grep -qx 'vmkit-guest: data=A'
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
}

@test "delete with children keeps the images both branches stand on; delete of a leaf merges" {
  set_guest_data "$VM" D
  run_tool 0 vmsnap create "$VM" s3
  # s1 froze the VM's own disk; two branches (s2's and the running one) stand on it.
  run_tool 0 vmsnap delete "$VM" s1
  [[ "$stderr" == *"keeping '$(disk .qcow2)': 2 images stand on it"* ]]
  no_snapshot "$VM" s1 name
  [ -f "$(disk -vda.s1.qcow2)" ]
  # s2's frozen image has nothing on it any more: it goes with s2.
  run_tool 0 vmsnap delete "$VM" s2
  [ ! -e "$(disk -vda.s1.qcow2)" ]
  # s3 is the running top's base: deleting it merges the running top down (active commit).
  set_guest_data "$VM" E
  run_tool 0 vmsnap delete "$VM" s3
  [ "$(virsh_q domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "$(disk -vda.s1-r1.qcow2)" ]
  [ ! -e "$(disk -vda.s3.qcow2)" ]
  [ "$(guest_data "$VM")" = E ]
  run_tool 0 vmsnap list "$VM" -o json
  [ "$(jq length <<< "$output")" = 0 ]
  run_tool 0 vmsnap verify "$VM"
}

@test "delete in the middle of a chain: the later snapshot still reverts to its data" {
  set_guest_data "$VM" t1
  run_tool 0 vmsnap create "$VM" t1
  set_guest_data "$VM" t2
  run_tool 0 vmsnap create "$VM" t2
  set_guest_data "$VM" t3
  run_tool 0 vmsnap create "$VM" t3
  set_guest_data "$VM" now
  run_tool 0 vmsnap delete "$VM" t2
  [ "$(snap_json "$VM" t3 parent)" = t1 ]
  [ ! -e "$(disk -vda.t2.qcow2)" ]
  [ "$(guest_data "$VM")" = now ]
  run_tool 0 vmsnap verify "$VM"
  run_tool 0 vmsnap revert "$VM" t3 --running
  run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --timeout 120
  console "$VM" | grep -qx 'vmkit-guest: data=t3'
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
}

@test "revert, create and delete while a backup job runs: exit 4 naming the job" {
  # HOST.md: QEMU (libvirt-qemu) must be able to create the socket and scratch file.
  local bk=$VMKIT_TEST_RUN/backup-$FILETAG
  mkdir -p "$bk"
  chown libvirt-qemu "$bk"
  cat > "$BATS_TEST_TMPDIR/backup.xml" <<XML
<domainbackup mode="pull">
  <server transport="unix" socket="$bk/nbd.sock"/>
  <disks><disk name="vda" backup="yes" type="file"><scratch file="$bk/scratch.qcow2"/></disk></disks>
</domainbackup>
XML
  virsh_q backup-begin "$VM" "$BATS_TEST_TMPDIR/backup.xml"
  run_tool 4 vmsnap revert "$VM" t1
  assert_one_error_line "cannot revert '$VM': a backup job is running"
  run_tool 4 vmsnap create "$VM" during
  run_tool 4 vmsnap delete "$VM" t1
  virsh_q domjobabort "$VM"
  run_tool 3 vmsnap revert "$VM" nosuch
  assert_one_error_line "VM '$VM' has no snapshot 'nosuch'"
  run_tool 3 vmsnap delete "$VM" nosuch
  run_tool 2 vmsnap revert "$VM" t1 --running --paused
}

@test "prune keeps the newest N and those within a duration, never the current one" {
  run_tool 0 vmsnap create "$VM" p1
  run_tool 0 vmsnap create "$VM" p2
  run_tool 0 vmsnap create "$VM" p3
  # t1 and t3 are older; the current snapshot is p3.
  run_tool 0 vmsnap prune "$VM" --keep-within 1h --dry-run
  [ -z "$output" ]
  run_tool 0 vmsnap prune "$VM" --keep 2 --dry-run
  [ "$(echo $output)" = "t1 t3 p1" ]
  run_tool 0 vmsnap list "$VM" -o json
  [ "$(jq length <<< "$output")" = 5 ]
  run_tool 0 vmsnap prune "$VM" --keep 2
  run_tool 0 vmsnap list "$VM" -o json
  [ "$(jq -r '[.[].name] | sort | join(",")' <<< "$output")" = "p2,p3" ]
  # The revert to t3 before gave the guest t3's data; the merges kept it.
  [ "$(guest_data "$VM")" = t3 ]
  run_tool 0 vmsnap verify "$VM"
  run_tool 0 vmsnap prune "$VM" --keep 0
  run_tool 0 vmsnap list "$VM" -o tsv
  [ "$(cut -f1 <<< "$output")" = p3 ]
  run_tool 2 vmsnap prune "$VM"
  run_tool 2 vmsnap prune "$VM" --keep-within 3y
  run_tool 2 vmsnap prune "$VM" --keep -1
}

@test "offline snapshots of the shut-off VM, deleted with qemu-img commit" {
  set_guest_data "$VM" off
  run_tool 0 vmrun stop "$VM" --timeout 60
  run_tool 0 vmsnap create "$VM" o1
  [ "$(snap_json "$VM" o1 kind)" = offline ]
  run_tool 0 vmsnap create "$VM" o2
  run_tool 4 vmsnap create "$VM" o3 --memory
  run_tool 4 vmsnap create "$VM" o3 --quiesce
  run_tool 0 vmsnap delete "$VM" o2
  [ "$(virsh_q domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "$(disk -vda.o1.qcow2)" ]
  run_tool 0 vmsnap delete "$VM" p3
  run_tool 0 vmsnap verify "$VM"
  run_tool 0 vmrun start "$VM"
  run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --timeout 120
  console "$VM" | grep -qx 'vmkit-guest: data=off'
}

@test "verify catches a broken backing link (exit 6) and names it" {
  run_tool 0 vmrun destroy "$VM"
  local top base
  top=$(disk -vda.o1.qcow2)
  base=$(qemu-img info --output=json "$top" | jq -r '."backing-filename"')
  qemu-img rebase -q -u -F qcow2 -b "$VMKIT_STORAGE_DIR/nowhere.qcow2" "$top"
  run_tool 6 vmsnap verify "$VM"
  [[ "$output" == *"backing file '$VMKIT_STORAGE_DIR/nowhere.qcow2' of '$top' is missing"* ]]
  # The snapshot that made that overlay no longer matches the files either.
  [[ "$output" == *"overlay '$top' of vda stands on '$VMKIT_STORAGE_DIR/nowhere.qcow2', not on the image the snapshot froze"* ]]
  assert_one_error_line "VM '$VM' failed verification: 2 problems"
  run_tool 6 vmsnap verify "$VM" -o json
  [ "$(jq -r '.[0].object' <<< "$output")" = vda ]
  [ "$(jq -r '.[1].object' <<< "$output")" = "snapshot o1" ]
  qemu-img rebase -q -u -F qcow2 -b "$base" "$top"
  run_tool 0 vmsnap verify "$VM"
}
