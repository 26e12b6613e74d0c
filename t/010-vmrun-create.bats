#!/usr/bin/env bats
# vmrun create: from a template (linked or full), from an image (in place or
# copied), blank disks, CD-ROM, NICs; the dry run; bad input and rollback.

load helpers

@test "create --dry-run prints the XML and the volumes it would make, and makes nothing" {
  local vm
  vm=$(vm_name dry)
  run_tool 0 vmrun create "$vm" --template tiny --disk 1G --dry-run
  [[ "$output" == *"<name>$vm</name>"* ]]
  [[ "$output" == *"<source file=\"$VMKIT_STORAGE_DIR/$vm.qcow2\"/>"* ]]
  [[ "$output" == *"<vmkit:template>tiny</vmkit:template>"* ]]
  [[ "$output" == *'<domain type="qemu">'* ]]
  [[ "$stderr" == *"would create volume '$vm.qcow2' in pool '$VMKIT_POOL': a linked clone of $VMKIT_TEMPLATE_DIR/tiny.qcow2 (64M)"* ]]
  [[ "$stderr" == *"would create volume '$vm-disk1.qcow2' in pool '$VMKIT_POOL': a new volume (1G)"* ]]
  # The XML is what libvirt would accept.
  echo "$output" > "$BATS_TEST_TMPDIR/dom.xml"
  virt-xml-validate "$BATS_TEST_TMPDIR/dom.xml" domain
  [ ! -e "$VMKIT_STORAGE_DIR/$vm.qcow2" ]
  [ ! -e "$VMKIT_STORAGE_DIR/$vm-disk1.qcow2" ]
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
}

@test "create --template makes a linked clone that inherits the template's settings" {
  local vm
  vm=$(vm_name linked)
  run_tool 0 vmrun create "$vm" --template tiny
  [[ "$stderr" == *"created VM '$vm' (linked clone of 'tiny')"* ]]
  run qemu-img info --output=json "$VMKIT_STORAGE_DIR/$vm.qcow2"
  [ "$(jq -r '."backing-filename"' <<< "$output")" = "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  [ "$(jq -r '."backing-filename-format"' <<< "$output")" = qcow2 ]
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq -r .state <<< "$output")" = shutoff ]
  [ "$(jq -r .template <<< "$output")" = tiny ]
  [ "$(jq -r .memory <<< "$output")" = 268435456 ]
  [ "$(jq -r .vcpus <<< "$output")" = 1 ]
  [ "$(jq -r .kernel <<< "$output")" = "$VMKIT_TEMPLATE_DIR/tiny.vmlinuz" ]
  [ "$(jq -r '.disks[0].source' <<< "$output")" = "$VMKIT_STORAGE_DIR/$vm.qcow2" ]
  [ "$(jq -r '.disks[0].encrypted' <<< "$output")" = false ]
  # Shut off: the host's drivers, DAC's label the host's base label for QEMU.
  [ "$(jq -r '.security[] | select(.model == "dac") | .type' <<< "$output")" = dynamic ]
  [[ "$(jq -r '.security[] | select(.model == "dac") | .label' <<< "$output")" =~ ^\+[0-9]+:\+[0-9]+$ ]]
  [ "$(jq -r '.nics[0].type' <<< "$output")" = user ]
  run_tool 0 vmrun list -o tsv
  grep -qx "$vm	shutoff	1	268435456	no	tiny" <<< "$output"
}

@test "create --full copies the template: no backing file" {
  local vm
  vm=$(vm_name full)
  run_tool 0 vmrun create "$vm" --template tiny --full --size 128M
  run qemu-img info --output=json "$VMKIT_STORAGE_DIR/$vm.qcow2"
  [ "$(jq -r '."backing-filename" // "none"' <<< "$output")" = none ]
  [ "$(jq -r '."virtual-size"' <<< "$output")" = 134217728 ]
}

@test "create --image --copy, data disks, CD-ROM, options and --autostart" {
  local vm iso
  vm=$(vm_name img)
  iso=$BATS_TEST_TMPDIR/cd.iso
  truncate -s 1M "$iso"
  run_tool 0 vmrun create "$vm" --image "$VMKIT_FIXTURE/root.qcow2" --copy \
    --kernel "$VMKIT_FIXTURE/vmlinuz" --initrd "$VMKIT_FIXTURE/initrd.img" \
    --cmdline "console=ttyS0 quiet" --vcpus 2 --memory 300 --disk 2G --disk 512M \
    --cdrom "$iso" --mac 52:54:00:aa:bb:cc --autostart
  [ "$(qemu-img info --output=json "$VMKIT_STORAGE_DIR/$vm-disk1.qcow2" | jq '."virtual-size"')" = 2147483648 ]
  [ "$(qemu-img info --output=json "$VMKIT_STORAGE_DIR/$vm-disk2.qcow2" | jq '."virtual-size"')" = 536870912 ]
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq -r .vcpus <<< "$output")" = 2 ]
  [ "$(jq -r .memory <<< "$output")" = $((300 * 1024 * 1024)) ]
  [ "$(jq -r .autostart <<< "$output")" = true ]
  [ "$(jq -r .cmdline <<< "$output")" = "console=ttyS0 quiet" ]
  [ "$(jq -r '[.disks[].target] | join(",")' <<< "$output")" = "vda,vdb,vdc,sda" ]
  [ "$(jq -r '.disks[3].device' <<< "$output")" = cdrom ]
  [ "$(jq -r '.nics[0].mac' <<< "$output")" = 52:54:00:aa:bb:cc ]
  # The copy is the VM's own: the original is untouched and not its backing.
  [ "$(qemu-img info --output=json "$VMKIT_STORAGE_DIR/$vm.qcow2" | jq -r '."backing-filename" // "none"')" = none ]
}

@test "create --network bridge= and network=, and --network none" {
  local vm br
  vm=$(vm_name net)
  br=$(make_bridge)
  run_tool 0 vmrun create "$vm-a" --template tiny --network "bridge=$br" --network user --start
  run_tool 0 vmrun info "$vm-a" -o json
  [ "$(jq -r '[.nics[] | .type + ":" + (.source // "")] | join(",")' <<< "$output")" = "bridge:$br,user:" ]
  run_tool 0 vmrun create "$vm-b" --template tiny --network none --dry-run
  [[ "$output" != *"<interface"* ]]
  run_tool 0 vmrun create "$vm-c" --template tiny --network network=default --dry-run
  [[ "$output" == *'<source network="default"/>'* ]]
}

@test "create an existing VM: exit 4, nothing changed" {
  local vm
  vm=$(vm_name dup)
  run_tool 0 vmrun create "$vm" --template tiny
  local before
  before=$(stat -c %Y "$VMKIT_STORAGE_DIR/$vm.qcow2")
  run_tool 4 vmrun create "$vm" --template tiny
  assert_one_error_line "VM '$vm' already exists"
  [ "$(stat -c %Y "$VMKIT_STORAGE_DIR/$vm.qcow2")" = "$before" ]
}

@test "create refuses a disk file that already exists (exit 4) and leaves it alone" {
  local vm
  vm=$(vm_name exists)
  echo precious > "$VMKIT_STORAGE_DIR/$vm.qcow2"
  run_tool 4 vmrun create "$vm" --template tiny
  assert_one_error_line "already exists"
  [ "$(cat "$VMKIT_STORAGE_DIR/$vm.qcow2")" = precious ]
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
}

@test "create with bad sizes, counts and names: exit 2 with one error line" {
  local vm
  vm=$(vm_name bad)
  run_tool 2 vmrun create "$vm" --template tiny --memory 12Q
  [[ "${stderr_lines[0]}" == "vmrun: invalid memory size '12Q': expected at least 16M" ]]
  [[ "${stderr_lines[1]}" == "Try 'vmrun create --help' for more information." ]]
  run_tool 2 vmrun create "$vm" --template tiny --memory 1M
  run_tool 2 vmrun create "$vm" --template tiny --vcpus 0
  run_tool 2 vmrun create "$vm" --template tiny --vcpus many
  run_tool 2 vmrun create "$vm" --template tiny --disk 0
  run_tool 2 vmrun create "$vm" --template tiny --disk -5G
  run_tool 2 vmrun create "$vm" --template tiny --size 1X
  run_tool 2 vmrun create "$vm" --template tiny --size 16M
  [[ "$stderr" == *"smaller than the template's disk"* ]]
  run_tool 2 vmrun create "$vm" --template tiny --mac 52:54:00:zz:00:01
  run_tool 2 vmrun create "$vm" --template tiny --mac 52:54:00:00:00:01 --mac 52:54:00:00:00:02
  run_tool 2 vmrun create "$vm" --template tiny --network wifi
  run_tool 2 vmrun create "$vm" --template tiny --hostname 'bad host'
  run_tool 2 vmrun create "$vm" --template tiny --image "$VMKIT_FIXTURE/root.qcow2"
  run_tool 2 vmrun create "$vm" --image "$VMKIT_FIXTURE/root.qcow2" --full
  run_tool 2 vmrun create "$vm" --template tiny --virt-type xen
  run_tool 2 vmrun create "$vm" --template tiny -o yaml
  run_tool 2 vmrun create
  run_tool 2 vmrun create "$vm" "$vm"
  run_tool 2 vmrun create "$vm" --bogus
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
}

@test "create refuses names with spaces or shell metacharacters (exit 2)" {
  local name
  for name in 'a b' 'x;rm -rf /' '$(id)' '../escape' '-rf' '.hidden' "quote'd" 'a/b' ''; do
    run_tool 2 vmrun create --template tiny -- "$name"
    [[ "${stderr_lines[0]}" == "vmrun: invalid VM name "* ]]
  done
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep -v "^${VMKIT_TEST_PREFIX}" || true)" ]
}

@test "create from a missing template, image, CD-ROM, kernel or key: exit 3" {
  local vm
  vm=$(vm_name missing)
  run_tool 3 vmrun create "$vm" --template nosuch
  assert_one_error_line "no such template 'nosuch'"
  run_tool 3 vmrun create "$vm" --image /nonexistent/disk.qcow2
  assert_one_error_line "cannot use image '/nonexistent/disk.qcow2': No such file or directory"
  run_tool 3 vmrun create "$vm" --template tiny --cdrom /nonexistent.iso
  run_tool 3 vmrun create "$vm" --kernel /nonexistent/vmlinuz --disk 1G
  run_tool 3 vmrun create "$vm" --template tiny --ssh-key /nonexistent.pub
  run_tool 3 vmrun create "$vm" --template tiny --root-password-file /nonexistent
  VMKIT_POOL=${VMKIT_TEST_PREFIX}nosuchpool run_tool 3 vmrun create "$vm" --template tiny
  assert_one_error_line "no storage pool '${VMKIT_TEST_PREFIX}nosuchpool' on"
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
}

@test "create that libvirt rejects leaves no disk and no domain behind" {
  local vm
  vm=$(vm_name rejected)
  # A multicast MAC passes vmrun's syntax check; libvirt refuses the XML.
  run_tool 1 vmrun create "$vm" --template tiny --disk 1G --mac 01:00:5e:00:00:01
  assert_one_error_line "cannot define VM '$vm': XML error: expected unicast mac address"
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
}

@test "create --start that cannot start leaves no disk and no domain behind" {
  local vm
  vm=$(vm_name nostart)
  run_tool 3 vmrun create "$vm" --template tiny --network network=vmkit-no-such-net --start
  assert_one_error_line "cannot start VM '$vm'"
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
}

@test "create --image in place refuses an image another VM uses or stands on, or a template (exit 4)" {
  local vm img
  vm=$(vm_name inplace)
  img=$VMKIT_STORAGE_DIR/$vm-base.qcow2
  qemu-img convert -O qcow2 "$VMKIT_FIXTURE/root.qcow2" "$img"
  qemu-img create -q -f qcow2 -F qcow2 -b "$img" "$VMKIT_STORAGE_DIR/$vm-over.qcow2"
  run_tool 0 vmrun create "$vm-a" --image "$VMKIT_STORAGE_DIR/$vm-over.qcow2" --kernel "$VMKIT_FIXTURE/vmlinuz"
  # The base is not $vm-a's disk, but $vm-a's disk is backed by it.
  run_tool 4 vmrun create "$vm-b" --image "$img" --kernel "$VMKIT_FIXTURE/vmlinuz"
  assert_one_error_line "image '$img' is in use by VM '$vm-a': use --copy"
  run_tool 4 vmrun create "$vm-b" --image "$VMKIT_STORAGE_DIR/$vm-over.qcow2" --kernel "$VMKIT_FIXTURE/vmlinuz"
  run_tool 0 vmrun create "$vm-b" --image "$img" --copy --kernel "$VMKIT_FIXTURE/vmlinuz"
  run_tool 4 vmrun create "$vm-d" --image "$VMKIT_TEMPLATE_DIR/tiny.qcow2"
  assert_one_error_line "is a template: use --template"
  run virsh_q dominfo "$vm-d"
  [ "$status" -ne 0 ]
}
