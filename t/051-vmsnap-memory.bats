#!/usr/bin/env bats
# vmsnap with memory: internal and external snapshots that keep the guest's RAM,
# proven by a value only in guest memory (a tmpfs file) and one on its disk; the
# family rule; quiesce without an agent; and a merge that would write into an
# image another VM stands on.

load helpers

# mem_and_disk VM: "MEMORY-VALUE DISK-VALUE" as the running guest sees them.
mem_and_disk() { guest_exec "$1" 'sync; echo 3 > /proc/sys/vm/drop_caches; cat /tmp/inmem /mnt/data/value' | tr '\n' ' '; }

@test "internal snapshot with memory: revert brings back memory and disk; the family rule holds" {
  local vm
  vm=$(vm_name int)
  boot_vm "$vm"
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  guest_exec "$vm" 'echo M1 > /tmp/inmem; echo D1 > /mnt/data/value; sync'
  run_tool 0 vmsnap create "$vm" m1 --memory
  [[ "$stderr" == *"created memory snapshot 'm1' of '$vm' (internal; paused "* ]]
  [ "$(snap_json "$vm" m1 kind)" = memory ]
  [ "$(snap_json "$vm" m1 location)" = internal ]
  [ "$(snap_json "$vm" m1 paused_ms)" -gt 0 ]
  guest_exec "$vm" 'echo M2 > /tmp/inmem; echo D2 > /mnt/data/value; sync'
  # One family per VM: no external snapshot next to an internal one.
  run_tool 4 vmsnap create "$vm" d1
  assert_one_error_line "VM '$vm' has internal snapshots"
  run_tool 4 vmsnap create "$vm" d1 --memory --external
  run_tool 0 vmsnap revert "$vm" m1
  run_tool 0 vmrun list -o tsv --state running
  grep -q "^$vm	" <<< "$output"
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  [ "$(mem_and_disk "$vm")" = "M1 D1 " ]
  run_tool 0 vmsnap revert "$vm" m1 --paused
  run_tool 0 vmrun wait "$vm" --state paused --timeout 10
  run_tool 0 vmrun resume "$vm"
  # Offline snapshots of a VM with internal ones are internal too.
  run_tool 0 vmrun destroy "$vm"
  run_tool 0 vmsnap create "$vm" off1
  [ "$(snap_json "$vm" off1 location)" = internal ]
  [ "$(snap_json "$vm" off1 kind)" = offline ]
  run_tool 0 vmsnap verify "$vm"
  run_tool 0 vmsnap delete "$vm" m1 off1
  run_tool 0 vmsnap list "$vm" -o json
  [ "$(jq length <<< "$output")" = 0 ]
  [ "$(qemu-img info --output=json "$VMKIT_STORAGE_DIR/$vm.qcow2" | jq '.snapshots // [] | length')" = 0 ]
}

@test "external snapshot with memory: revert restores the saved memory; delete removes the memory file" {
  local vm mem
  vm=$(vm_name extmem)
  mem=$VMKIT_STORAGE_DIR/$vm.em1.mem
  boot_vm "$vm"
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  guest_exec "$vm" 'echo X1 > /tmp/inmem; echo Y1 > /mnt/data/value; sync'
  run_tool 0 vmsnap create "$vm" em1 --memory --external
  [ "$(snap_json "$vm" em1 kind)" = memory ]
  [ "$(snap_json "$vm" em1 location)" = external ]
  [ -s "$mem" ]
  guest_exec "$vm" 'echo X2 > /tmp/inmem; echo Y2 > /mnt/data/value; sync'
  run_tool 0 vmsnap revert "$vm" em1
  [[ "$stderr" == *"(now running)"* ]]
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  [ "$(mem_and_disk "$vm")" = "X1 Y1 " ]
  run_tool 0 vmsnap verify "$vm"
  # With external snapshots, --memory goes external by itself.
  run_tool 0 vmsnap create "$vm" em2 --memory
  [ "$(snap_json "$vm" em2 location)" = external ]
  run_tool 0 vmsnap delete "$vm" em1 em2
  [ ! -e "$mem" ]
  [ ! -e "$VMKIT_STORAGE_DIR/$vm.em2.mem" ]
  [ "$(mem_and_disk "$vm")" = "X1 Y1 " ]
  run_tool 0 vmsnap verify "$vm"
  # Removing the VM removes what its snapshots made too: overlays and memory files.
  run_tool 0 vmsnap create "$vm" em3 --memory --external
  [ -s "$VMKIT_STORAGE_DIR/$vm.em3.mem" ]
  run_tool 0 vmrun undefine "$vm" --force --remove-storage
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
}

@test "quiesce needs an agent: --quiesce exits 4 without one, --quiesce=auto falls back" {
  local vm
  vm=$(vm_name noagent)
  boot_vm "$vm" --cmdline "console=ttyS0 panic=-1 quiet vmkit.agent=off"
  run_tool 4 vmsnap create "$vm" q1 --quiesce
  assert_one_error_line "cannot quiesce '$vm': "
  run_tool 0 vmsnap list "$vm" -o json
  [ "$(jq length <<< "$output")" = 0 ]
  [ ! -e "$VMKIT_STORAGE_DIR/$vm-vda.q1.qcow2" ]
  run_tool 0 vmsnap create "$vm" q1 --quiesce=auto
  [ "$(snap_json "$vm" q1 kind)" = crash-consistent ]
  run_tool 0 vmrun pause "$vm"
  run_tool 4 vmsnap create "$vm" q2 --quiesce
  assert_one_error_line "it is paused"
}

@test "delete refuses to merge into an image another VM stands on; --metadata drops only the record" {
  local a b
  a=$(vm_name base)
  b=$(vm_name fromsnap)
  run_tool 0 vmrun create "$a" --template tiny --start
  run_tool 0 vmsnap create "$a" s1
  # b is a linked clone of what s1 froze.
  qemu-img create -q -f qcow2 -F qcow2 -b "$VMKIT_STORAGE_DIR/$a.qcow2" "$VMKIT_STORAGE_DIR/$b.qcow2"
  run_tool 0 vmrun create "$b" --image "$VMKIT_STORAGE_DIR/$b.qcow2" --kernel "$VMKIT_FIXTURE/vmlinuz"
  run_tool 4 vmsnap delete "$a" s1
  assert_one_error_line "which VM '$b' stands on (use --metadata to drop only the record)"
  [ -f "$VMKIT_STORAGE_DIR/$a-vda.s1.qcow2" ]
  [ "$(snap_json "$a" s1 name)" = s1 ]
  run_tool 0 vmsnap delete "$a" s1 --metadata
  no_snapshot "$a" s1 name
  [ -f "$VMKIT_STORAGE_DIR/$a-vda.s1.qcow2" ]
  qemu-img check -q "$VMKIT_STORAGE_DIR/$b.qcow2"
}

@test "revert keeps a data disk attached after the snapshot; it only drops the reverted disks' overlays" {
  local vm data
  vm=$(vm_name added)
  data=$VMKIT_STORAGE_DIR/$vm-disk9.qcow2
  run_tool 0 vmrun create "$vm" --template tiny
  run_tool 0 vmsnap create "$vm" before
  qemu-img create -q -f qcow2 "$data" 64M
  virsh_q attach-disk "$vm" "$data" vdb --subdriver qcow2 --config >/dev/null
  run_tool 0 vmsnap create "$vm" after
  run_tool 0 vmsnap revert "$vm" before
  [ -f "$data" ]
  # vda's old top is discarded; what 'after' froze stays for 'after'.
  [ ! -e "$VMKIT_STORAGE_DIR/$vm-vda.after.qcow2" ]
  [ -f "$VMKIT_STORAGE_DIR/$vm-vda.before.qcow2" ]
  [ "$(snap_json "$vm" after name)" = after ]
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq -r '[.disks[].target] | join(",")' <<< "$output")" = vda ]
  run_tool 0 vmsnap verify "$vm"
}

@test "delete refuses to merge into a template's image" {
  local vm xml
  vm=$(vm_name ontpl)
  # vmrun never puts a VM on a template's image itself; virsh can.
  run_tool 0 vmrun create "$vm" --template tiny --dry-run
  xml=$(sed "s|$VMKIT_STORAGE_DIR/$vm.qcow2|$VMKIT_TEMPLATE_DIR/tiny.qcow2|" <<< "$output")
  virsh_q define /dev/stdin <<< "$xml" >/dev/null
  run_tool 0 vmsnap create "$vm" s1
  run_tool 4 vmsnap delete "$vm" s1
  assert_one_error_line "would write into template image '$VMKIT_TEMPLATE_DIR/tiny.qcow2'"
  qemu-img compare -q "$VMKIT_FIXTURE/root.qcow2" "$VMKIT_TEMPLATE_DIR/tiny.qcow2"
  run_tool 0 vmsnap delete "$vm" s1 --metadata
  # Nothing of the VM's went into the template's folder.
  [ -f "$VMKIT_STORAGE_DIR/$vm-vda.s1.qcow2" ]
  [ -z "$(ls "$VMKIT_TEMPLATE_DIR" | grep "^$vm" || true)" ]
}
