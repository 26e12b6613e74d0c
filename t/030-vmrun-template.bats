#!/usr/bin/env bats
# vmrun template create|list|delete, and first-boot customization of clones. The
# two libguestfs launches here (seal, customize) are the expensive part: one each.

load helpers

@test "template create seals a shut-off VM's disk; clones boot sealed; delete waits for clones" {
  local src tpl clone
  src=$(vm_name src)
  tpl=${VMKIT_TEST_PREFIX}t30
  clone=$(vm_name clone)
  run_tool 0 vmrun create "$src" --image "$VMKIT_FIXTURE/root.qcow2" --copy --vcpus 2 --memory 300 \
    --kernel "$VMKIT_FIXTURE/vmlinuz" --initrd "$VMKIT_FIXTURE/initrd.img" --cmdline "$(cat "$VMKIT_FIXTURE/cmdline")"

  run_tool 0 vmrun start "$src"
  run_tool 4 vmrun template create "$tpl" --from "$src"
  assert_one_error_line "VM '$src' is running: stop it before making a template of it"
  run_tool 0 vmrun destroy "$src"
  run_tool 3 vmrun template create "$tpl" --from "$(vm_name nosuch)"
  run_tool 2 vmrun template create "$tpl"
  run_tool 2 vmrun template create 'bad name' --from "$src"

  run_tool 0 vmrun template create "$tpl" --from "$src" --description "sealed tiny"
  local d=$VMKIT_TEMPLATE_DIR/$tpl
  [ "$(stat -c %a "$d.qcow2")" = 444 ]
  [ -f "$d.vmlinuz" ]
  [ -f "$d.initrd" ]
  [ "$(jq -r .source "$d.template")" = "$src" ]
  [ "$(jq -r .state "$d.template")" = complete ]
  [ "$(jq -r .vcpus "$d.template")" = 2 ]
  [ "$(jq -r .memory "$d.template")" = $((300 << 20)) ]
  [ "$(qemu-img info --output=json "$d.qcow2" | jq -r '."backing-filename" // "none"')" = none ]
  # The source VM's disk was read, never written.
  qemu-img compare -q "$VMKIT_FIXTURE/root.qcow2" "$VMKIT_STORAGE_DIR/$src.qcow2"
  run_tool 4 vmrun template create "$tpl" --from "$src"
  assert_one_error_line "template '$tpl' already exists on"

  run_tool 0 vmrun template list -o json
  [ "$(jq --arg t "$tpl" '.[] | select(.name == $t) | .clones' <<< "$output")" = 0 ]
  [ "$(jq -r --arg t "$tpl" '.[] | select(.name == $t) | .description' <<< "$output")" = "sealed tiny" ]

  boot_vm "$clone" --template "$tpl"
  console "$clone" | grep -qx 'vmkit-guest: machine-id='
  console "$clone" | grep -qx 'vmkit-guest: ssh-host-keys=0'
  run_tool 0 vmrun info "$clone" -o json
  [ "$(jq .vcpus <<< "$output")" = 2 ]
  run_tool 0 vmrun template list -o tsv
  grep -q "^$tpl	[0-9]*	[0-9]*	2	$((300 << 20))	1	" <<< "$output"

  run_tool 4 vmrun template delete "$tpl"
  assert_one_error_line "template '$tpl' has 1 clone: '$clone'"
  run_tool 0 vmrun undefine "$clone" --force --remove-storage
  [[ "$stderr" == *"keeping template image"* ]]
  [ ! -e "$VMKIT_STORAGE_DIR/$clone.qcow2" ]
  [ -f "$d.qcow2" ]
  run_tool 0 vmrun template delete "$tpl"
  [ -z "$(ls "$VMKIT_TEMPLATE_DIR" | grep "^$tpl\." || true)" ]
  run_tool 3 vmrun template delete "$tpl"
}

@test "create with --hostname, --ssh-key and --root-password-file customizes the clone only" {
  local vm salt hash
  vm=$(vm_name custom)
  echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIvmkittestkey test@vmkit' > "$BATS_TEST_TMPDIR/key.pub"
  printf 's3cret pass\nsecond line ignored\n' > "$BATS_TEST_TMPDIR/pw"
  boot_vm "$vm" --hostname web-01 --ssh-key "$BATS_TEST_TMPDIR/key.pub" \
    --root-password-file "$BATS_TEST_TMPDIR/pw"
  console "$vm" | grep -qx 'vmkit-guest: hostname=web-01'
  console "$vm" | grep -qx 'vmkit-guest: ssh-keys=1'
  console "$vm" | grep -Fqx 'vmkit-guest: root-password=$6$'
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  [ "$(guest_exec "$vm" 'cat /mnt/root/.ssh/authorized_keys')" = "$(cat "$BATS_TEST_TMPDIR/key.pub")" ]
  [ "$(guest_exec "$vm" 'stat -c %a /mnt/root/.ssh /mnt/root/.ssh/authorized_keys' | tr '\n' ' ')" = "700 600 " ]
  # The hash is of the first line of the file, with a random salt.
  hash=$(guest_exec "$vm" "awk -F: '\$1 == \"root\" {print \$2}' /mnt/etc/shadow")
  salt=$(cut -d'$' -f3 <<< "$hash")
  [ "$(busybox mkpasswd -m sha512 's3cret pass' "$salt")" = "$hash" ]
  # The disk that holds the password hash is the VM's host's alone to read.
  [ "$(stat -c %a "$VMKIT_STORAGE_DIR/$vm.qcow2")" = 600 ]
  # The template's disk is untouched: the writes went into the clone's overlay.
  qemu-img compare -q "$VMKIT_FIXTURE/root.qcow2" "$VMKIT_TEMPLATE_DIR/tiny.qcow2"
}

@test "customization inputs are checked before anything is made" {
  local vm
  vm=$(vm_name badcust)
  echo 'not a key' > "$BATS_TEST_TMPDIR/key.pub"
  run_tool 2 vmrun create "$vm" --template tiny --ssh-key "$BATS_TEST_TMPDIR/key.pub"
  assert_one_error_line "does not look like an ssh public key"
  printf '\n' > "$BATS_TEST_TMPDIR/pw"
  run_tool 2 vmrun create "$vm" --template tiny --root-password-file "$BATS_TEST_TMPDIR/pw"
  assert_one_error_line "has an empty first line"
  run_tool 2 vmrun create "$vm" --disk 1G --hostname x
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
}
