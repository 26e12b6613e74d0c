#!/usr/bin/env bats
# vmrun undefine, with and without --remove-storage: what goes and what stays.

load helpers

@test "undefine a running VM exits 4 unless --force; an unknown VM exits 3" {
  local vm
  vm=$(vm_name run)
  run_tool 0 vmrun create "$vm" --template tiny --start
  run_tool 4 vmrun undefine "$vm"
  assert_one_error_line "VM '$vm' is running: stop it first, or use --force"
  run_tool 0 vmrun undefine "$vm" --force
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
  # Without --remove-storage the disk stays.
  [ -f "$VMKIT_STORAGE_DIR/$vm.qcow2" ]
  run_tool 3 vmrun undefine "$vm"
  assert_one_error_line "no such VM '$vm'"
}

@test "undefine --remove-storage removes the VM's own chain and keeps templates, CD-ROMs and shared bases" {
  local a b c iso s=$VMKIT_STORAGE_DIR
  a=$(vm_name a)
  b=$(vm_name b)
  c=$(vm_name c)
  iso=$s/$a-install.iso
  truncate -s 1M "$iso"
  # a: a clone of the template with a data disk and a CD-ROM.
  run_tool 0 vmrun create "$a" --template tiny --disk 1G --cdrom "$iso"
  # b: an overlay named after b on its own base (b's chain), and c standing on b's base too.
  qemu-img convert -O qcow2 "$VMKIT_FIXTURE/root.qcow2" "$s/$b.qcow2"
  qemu-img create -q -f qcow2 -F qcow2 -b "$s/$b.qcow2" "$s/$b.snap1.qcow2"
  qemu-img create -q -f qcow2 -F qcow2 -b "$s/$b.qcow2" "$s/$c.qcow2"
  run_tool 0 vmrun create "$b" --image "$s/$b.snap1.qcow2" --kernel "$VMKIT_FIXTURE/vmlinuz"
  run_tool 0 vmrun create "$c" --image "$s/$c.qcow2" --kernel "$VMKIT_FIXTURE/vmlinuz"

  run_tool 0 vmrun undefine "$a" --remove-storage
  [ ! -e "$s/$a.qcow2" ]
  [ ! -e "$s/$a-disk1.qcow2" ]
  [ -f "$iso" ]
  [ -f "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  [[ "$stderr" == *"keeping template image"* ]]

  run_tool 0 vmrun undefine "$b" --remove-storage
  [ ! -e "$s/$b.snap1.qcow2" ]
  [ -f "$s/$b.qcow2" ]
  [[ "$stderr" == *"keeping '$s/$b.qcow2': VM '$c' uses it"* ]]
  qemu-img check -q "$s/$c.qcow2"

  run_tool 0 vmrun undefine "$c" --remove-storage
  [ ! -e "$s/$c.qcow2" ]
  # b's base is not named after c: it is not c's to remove.
  [ -f "$s/$b.qcow2" ]
}
