#!/usr/bin/env bats
# vmrun create --encrypt: qcow2 disks with LUKS, the key a private libvirt secret
# on the host and a root-only file in vmkit's key folder ($VMKIT_KEY_DIR, the run's
# own here); the key follows the VM (start defines it where it is missing); bad
# input refused with nothing made; a create killed at any instant leaves no key.

load helpers

# secret_of VM: the UUID of the secret that the VM's first encrypted disk names.
secret_of() { virsh_q dumpxml --inactive "$1" | xmllint --xpath 'string(//disk/source/encryption/secret/@uuid)' -; }

# keys_of VM: the host's secrets that vmkit made for VM, one UUID a line.
keys_of() {
  local u
  for u in $(virsh_q secret-list | awk '{print $1}'); do
    virsh_q secret-dumpxml "$u" 2>/dev/null | grep -q "<description>vmkit: the disk key of VM $1</description>" &&
      echo "$u"
  done
  return 0
}

@test "an encrypted, customized full copy of a template boots; info says so; no clear data in its file; start defines a missing key; undefine takes the key" {
  local vm f u
  vm=$(vm_name enc)
  boot_vm "$vm" --full --encrypt --disk 64M --hostname enc-01
  console "$vm" | grep -qx 'vmkit-guest: hostname=enc-01'
  f=$VMKIT_STORAGE_DIR/$vm.qcow2
  # The customized overlay was flattened into the encrypted disk, and is gone.
  [ ! -e "$f.custom" ]
  [ "$(qemu-img info -U --output=json "$f" | jq -r .encrypted)" = true ]
  [ "$(qemu-img info -U --output=json "$VMKIT_STORAGE_DIR/$vm-disk1.qcow2" | jq -r .encrypted)" = true ]
  # The template holds its files in clear; the copy holds none of them.
  grep -q 'tiny guest root' "$VMKIT_TEMPLATE_DIR/tiny.qcow2"
  ! grep -q 'tiny guest root' "$f"
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq '[.disks[] | select(.encrypted and .encryption == "luks")] | length' <<<"$output")" = 2 ]
  # One key for the VM: a private libvirt secret, and a root-only file here.
  u=$(secret_of "$vm")
  [ "$(keys_of "$vm")" = "$u" ]
  virsh_q secret-dumpxml "$u" | grep -q "private='yes'"
  [ "$(stat -c %a "$VMKIT_KEY_DIR")" = 700 ]
  [ "$(stat -c %a "$VMKIT_KEY_DIR/$u.key")" = 600 ]
  [ "$(stat -c %s "$VMKIT_KEY_DIR/$u.key")" = 64 ]
  # Snapshots, backups and templates of it are refused (their files would be in clear).
  run_tool 4 vmsnap create "$vm" s1
  assert_one_error_line "VM '$vm' has encrypted disks, which vmsnap does not snapshot yet"
  run_tool 0 vmbackup init "$BATS_TEST_TMPDIR/repo" --encryption none
  run_tool 4 vmbackup backup "$BATS_TEST_TMPDIR/repo" "$vm"
  assert_one_error_line "VM '$vm' has encrypted disks, which vmbackup does not back up yet"
  # The key is nowhere on an argv: not QEMU's.
  ! grep -qF "$(cat "$VMKIT_KEY_DIR/$u.key")" "/proc/$(cat "/run/libvirt/qemu/$vm.pid")/cmdline"

  # A host without the secret (the VM moved, the secret removed): start defines it.
  run_tool 0 vmrun destroy "$vm"
  virsh_q secret-undefine "$u" >/dev/null
  run_tool 0 vmrun start "$vm" -v
  assert_stderr_has "defined the disk key $u of VM '$vm'"
  run_tool 0 vmrun wait "$vm" --console-line 'vmkit-guest: up' --timeout 120
  # Without the key file either: a clear error, and the VM stays off.
  run_tool 0 vmrun destroy "$vm"
  virsh_q secret-undefine "$u" >/dev/null
  mv "$VMKIT_KEY_DIR/$u.key" "$BATS_TEST_TMPDIR/key"
  run_tool 3 vmrun start "$vm"
  assert_one_error_line "VM '$vm' needs the disk key $u"
  [ "$(virsh_q domstate "$vm")" = "shut off" ]
  mv "$BATS_TEST_TMPDIR/key" "$VMKIT_KEY_DIR/$u.key"

  run_tool 0 vmrun undefine "$vm" --remove-storage
  [ -z "$(keys_of "$vm")" ]
  ! virsh_q secret-dumpxml "$u" 2>/dev/null
  [ ! -e "$VMKIT_KEY_DIR/$u.key" ]
  [ ! -e "$f" ]
}

@test "--passphrase-file: the disk opens with that passphrase and no other; an image copy is encrypted; --dry-run makes no key" {
  local vm pf f u before
  vm=$(vm_name pass)
  pf=$BATS_TEST_TMPDIR/pass
  printf 'correct horse battery\nsecond line ignored\n' > "$pf"
  before=$(ls "$VMKIT_KEY_DIR" 2>/dev/null | wc -l)
  run_tool 0 vmrun create "$vm" --dry-run --encrypt --passphrase-file "$pf" --disk 32M --network none
  assert_stderr_has "would encrypt the disk (qcow2 with LUKS) with the key of secret"
  [[ "$output" == *"<encryption format=\"luks\">"* ]]
  [ -z "$(keys_of "$vm")" ]
  [ "$(ls "$VMKIT_KEY_DIR" 2>/dev/null | wc -l)" = "$before" ]
  ! virsh_q dominfo "$vm" 2>/dev/null

  run_tool 0 vmrun create "$vm" --image "$VMKIT_FIXTURE/root.qcow2" --copy --encrypt --passphrase-file "$pf" \
    --network none
  f=$VMKIT_STORAGE_DIR/$vm.qcow2
  u=$(secret_of "$vm")
  [ "$(printf %s 'correct horse battery')" = "$(cat "$VMKIT_KEY_DIR/$u.key")" ]
  qemu-img info -U --object secret,id=s0,data='correct horse battery' \
    --image-opts "driver=qcow2,file.filename=$f,encrypt.key-secret=s0" >/dev/null
  # Decrypted with the passphrase, the copy is the image.
  qemu-img compare -U --object secret,id=s0,data='correct horse battery' --image-opts \
    "driver=qcow2,file.filename=$f,encrypt.key-secret=s0" "driver=qcow2,file.filename=$VMKIT_FIXTURE/root.qcow2"
  ! qemu-img compare -U --object secret,id=s0,data='wrong' --image-opts \
    "driver=qcow2,file.filename=$f,encrypt.key-secret=s0" "driver=qcow2,file.filename=$VMKIT_FIXTURE/root.qcow2" 2>/dev/null
  run_tool 0 vmrun undefine "$vm" --remove-storage
  [ ! -e "$VMKIT_KEY_DIR/$u.key" ]
}

@test "bad input: each refused with one line and its exit code, nothing made" {
  local vm pf
  vm=$(vm_name bad)
  pf=$BATS_TEST_TMPDIR/pass
  echo secret > "$pf"
  run_tool 2 vmrun create "$vm" --disk 32M --passphrase-file "$pf"
  assert_stderr_has "--passphrase-file needs --encrypt"
  run_tool 2 vmrun create "$vm" --template tiny --encrypt
  assert_stderr_has "--encrypt with --template needs --full"
  run_tool 2 vmrun create "$vm" --image "$VMKIT_FIXTURE/root.qcow2" --encrypt
  assert_stderr_has "--encrypt with --image needs --copy"
  run_tool 2 vmrun create "$vm" --encrypt --network none
  assert_stderr_has "--encrypt: the VM has no disk to encrypt"
  run_tool 2 vmrun create "$vm" --image "$VMKIT_FIXTURE/root.qcow2" --copy --encrypt --hostname h1
  assert_stderr_has "--encrypt: a copied image is customized in place"
  run_tool 3 vmrun create "$vm" --disk 32M --encrypt --passphrase-file "$BATS_TEST_TMPDIR/nosuch"
  assert_one_error_line "cannot read the passphrase file '$BATS_TEST_TMPDIR/nosuch': No such file or directory"
  printf '\nlater\n' > "$pf"
  run_tool 2 vmrun create "$vm" --disk 32M --encrypt --passphrase-file "$pf"
  assert_stderr_has "starts with an empty line"
  ! virsh_q dominfo "$vm" 2>/dev/null
  [ -z "$(keys_of "$vm")" ]
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
}

@test "a create --encrypt killed at random instants: the next run rolls it back, no key or disk left over" {
  local vm i pid u t ms
  vm=$(vm_name kill)
  # This test's own key folder: every key file left in it would be a leftover.
  export VMKIT_KEY_DIR=$BATS_TEST_TMPDIR/keys
  # How long a whole create takes here: the kills are spread over it.
  t=$(date +%s%N)
  run_tool 0 vmrun create "$vm" --template tiny --full --encrypt --disk 32M --network none
  ms=$((($(date +%s%N) - t) / 1000000))
  run_tool 0 vmrun undefine "$vm" --remove-storage
  [ -z "$(ls -A "$VMKIT_KEY_DIR")" ]
  for i in 1 2 3 4 5 6; do
    "$TOP/vmrun/vmrun" create "$vm" --template tiny --full --encrypt --disk 32M --network none 2>/dev/null &
    pid=$!
    sleep "$(awk -v ms="$ms" -v r="$RANDOM" 'BEGIN { printf "%.3f", ms * (r / 32768) / 1000 }')"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Any verb that takes the VM's lock finishes or rolls back what was left
    # (libvirtd may still be writing a volume the killed run asked for: its
    # removal waits until that is done).
    if virsh_q dominfo "$vm" >/dev/null 2>&1; then
      t=$((SECONDS + 60))
      while :; do
        run "$TOP/vmrun/vmrun" undefine "$vm" --remove-storage
        # Rolled back (the VM is gone: exit 3), or whole and removed.
        if [ "$status" = 0 ] || [ "$status" = 3 ] || [ "$SECONDS" -ge "$t" ]; then break; fi
        sleep 1
      done
      [ "$status" = 0 ] || [ "$status" = 3 ]
    fi
    ! virsh_q dominfo "$vm" 2>/dev/null
    [ -z "$(keys_of "$vm")" ]
    [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$vm" || true)" ]
    [ -z "$(ls -A "$VMKIT_KEY_DIR" 2>/dev/null)" ]
  done
}
