#!/usr/bin/env bats
# vmrun and vmsnap on another host, through its URI only: a second libvirt daemon on
# this machine (scripts/host2) whose /var/lib/libvirt, /var/lib/vmkit, /var/log/libvirt
# and /run are its own, a fresh host with no storage pool. Every file the tools make
# there appears, and vanishes, under that host's folders (seen from here under
# $H2/lib/...), never at the same path on this host, where decoys wait untouched.
# The tests run in order on one clone.

load helpers

setup_file() {
  export H2=$VMKIT_TEST_RUN/host2-$FILETAG
  export URI
  URI=$("$TOP/scripts/host2" start "$H2")
  export VM=${VMKIT_TEST_PREFIX}060-r
  export DECOY=/var/lib/libvirt/images/$VM.qcow2
  mkdir -p /var/lib/libvirt/images
  echo "this host's own file" > "$DECOY"
  # The remote host's folders, as this machine sees them.
  export H2IMG=$H2/lib/libvirt/images H2TPL=$H2/lib/vmkit/templates
}

teardown() { :; }

teardown_file() {
  [ -z "${VMKIT_TEST_KEEP:-}" ] || return 0
  "$TOP/scripts/host2" stop "$H2" || true
  rm -f "$DECOY"
  rm -rf "$H2"
}

# r TOOL ARGS...: a tool run against the other host, with the default pool names
# (this file's environment names the test pools of this host).
r() {
  local want=$1 tool=$2
  shift 2
  VMKIT_POOL= VMKIT_TEMPLATE_POOL= run_tool "$want" "$tool" -c "$URI" "$@"
}

decoy_intact() { [ "$(cat "$DECOY")" = "this host's own file" ]; }

@test "a fresh host: push defines its template pool, sends only allocated data, and list names the hosts" {
  run virsh -q -c "$URI" pool-list --all --name
  [ -z "$output" ]
  # The template of this host's test pool goes to the other host's default pool.
  run_tool 0 vmrun template push tiny "$URI" --dest-pool vmkit-templates
  [[ "$stderr" == *"had no storage pool 'vmkit-templates': defined it at /var/lib/vmkit/templates"* ]]
  [[ "$stderr" == *"pushed template 'tiny' to host2"* ]]
  [ -f "$H2TPL/tiny.qcow2" ]
  [ -f "$H2TPL/tiny.vmlinuz" ]
  [ -f "$H2TPL/tiny.template" ]
  [ ! -e /var/lib/vmkit/templates/tiny.qcow2 ]
  cmp "$VMKIT_TEMPLATE_DIR/tiny.qcow2" "$H2TPL/tiny.qcow2"
  # Sparse: the copy holds no more blocks than the original (plus one for the tail).
  [ "$(stat -c %b "$H2TPL/tiny.qcow2")" -le $(($(stat -c %b "$VMKIT_TEMPLATE_DIR/tiny.qcow2") + 8)) ]
  [ "$(stat -c %a "$H2TPL/tiny.qcow2")" = 444 ]
  # The same id on both hosts: the copies are one template.
  [ "$(jq -r .id "$H2TPL/tiny.template")" = "$(jq -r .id "$VMKIT_TEMPLATE_DIR/tiny.template")" ]
  # Again: nothing to do.
  run_tool 0 vmrun template push tiny "$URI" --dest-pool vmkit-templates
  [[ "$stderr" == *"host2 holds template 'tiny' already"* ]]
  # With a hosts file, list says which hosts hold it (host names work as URIs too).
  printf 'here qemu:///system\nh2 %s\n' "$URI" > "$BATS_TEST_TMPDIR/hosts"
  VMKIT_TEMPLATE_POOL= run_tool 0 vmrun -H "$BATS_TEST_TMPDIR/hosts" template list --pool vmkit-templates -o json
  [ "$(jq -r '.[] | select(.name == "tiny") | .hosts' <<< "$output")" = h2 ]
  run_tool 0 vmrun -H "$BATS_TEST_TMPDIR/hosts" template list -o json
  [ "$(jq -r '.[] | select(.name == "tiny") | .hosts' <<< "$output")" = here ]
  r 0 vmrun template list -o tsv --pool vmkit-templates
  [[ "$output" == "tiny	"* ]]
}

@test "create there: the disk is that host's volume, 0600; the console is watched through libvirt's stream" {
  r 0 vmrun create "$VM" --template tiny --template-pool vmkit-templates --start --paused
  [[ "$stderr" == *"had no storage pool 'default': defined it at /var/lib/libvirt/images"* ]]
  [ -f "$H2IMG/$VM.qcow2" ]
  [ "$(stat -c %a "$H2IMG/$VM.qcow2")" = 600 ]
  [ "$(qemu-img info -U --output=json "$H2IMG/$VM.qcow2" | jq -r '."backing-filename"')" = /var/lib/vmkit/templates/tiny.qcow2 ]
  decoy_intact
  # Paused, then attached and resumed by wait: the boot's lines come through the stream.
  r 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --resume --timeout 120
  r 0 vmrun wait "$VM" --agent --timeout 60
  # The console log is that host's file too.
  grep -aq 'vmkit-guest: up' "$H2/log/libvirt/qemu/$VM-console.log"
  [ ! -e "/var/log/libvirt/qemu/$VM-console.log" ]
  run_tool 0 vmrun list -o tsv
  refute grep -q "^$VM	" <<< "$output"
  r 0 vmrun list -o tsv
  grep -q "^$VM	running	" <<< "$output"
}

@test "snapshot, revert and delete with merge there, running and shut off; verify checks it through libvirt" {
  local uri_env=$URI
  VIRSH_URI=$uri_env guest_exec "$VM" 'echo A > /mnt/data/value; sync' >/dev/null
  r 0 vmsnap create "$VM" s1 --quiesce
  [ -f "$H2IMG/$VM-vda.s1.qcow2" ]
  [ ! -e "/var/lib/libvirt/images/$VM-vda.s1.qcow2" ]
  VIRSH_URI=$uri_env guest_exec "$VM" 'echo B > /mnt/data/value; sync' >/dev/null
  r 0 vmsnap create "$VM" s2
  r 0 vmsnap revert "$VM" s1 --paused
  [ -f "$H2IMG/$VM-vda.s1-r1.qcow2" ]
  [ ! -e "$H2IMG/$VM-vda.s2.qcow2" ]
  r 0 vmrun wait "$VM" --console-line 'vmkit-guest: data=A' --resume --timeout 120
  r 0 vmsnap verify "$VM"
  [[ "$stderr" == *"qemu-img check runs only on this machine's files"* ]]
  # s1's base keeps two branches (no merge); s2's frozen image goes with s2.
  r 0 vmsnap delete "$VM" s1 s2
  [ ! -e "$H2IMG/$VM-vda.s1.qcow2" ]
  [ "$(virsh -q -c "$URI" domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "/var/lib/libvirt/images/$VM-vda.s1-r1.qcow2" ]
  # A live merge (an active block commit) of the running top into what s3 froze.
  r 0 vmsnap create "$VM" s3
  [ -f "$H2IMG/$VM-vda.s3.qcow2" ]
  r 0 vmsnap delete "$VM" s3
  [ ! -e "$H2IMG/$VM-vda.s3.qcow2" ]
  [ "$(virsh -q -c "$URI" domblklist "$VM" | awk '$1 == "vda" {print $2}')" = "/var/lib/libvirt/images/$VM-vda.s1-r1.qcow2" ]
  [ "$(VIRSH_URI=$uri_env guest_exec "$VM" 'sync; echo 3 > /proc/sys/vm/drop_caches; cat /mnt/data/value')" = A ]
  # Shut off: the merge runs in a paused helper domain on that host.
  r 0 vmrun destroy "$VM"
  r 0 vmsnap create "$VM" o1
  r 0 vmsnap create "$VM" o2
  r 0 vmsnap delete "$VM" o1
  r 0 vmsnap delete "$VM" o2
  [ -z "$(ls "$H2IMG" | grep "^$VM-vda\.o" || true)" ]
  [ "$(virsh -q -c "$URI" list --all --name | grep -c vmsnap-merge || true)" = 0 ]
  r 0 vmsnap verify "$VM"
  decoy_intact
}

@test "first-boot customization there: a local copy of the template is customized and sent" {
  local vm=${VM}c
  echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIvmkittestkey test@vmkit' > "$BATS_TEST_TMPDIR/key.pub"
  # This machine holds the same template (same id) in its test pool.
  VMKIT_POOL= run_tool 0 vmrun -c "$URI" create "$vm" --template tiny --template-pool vmkit-templates \
    --hostname far-01 --ssh-key "$BATS_TEST_TMPDIR/key.pub" --start --paused
  r 0 vmrun wait "$vm" --console-line 'vmkit-guest: up' --resume --timeout 120
  grep -aq 'vmkit-guest: hostname=far-01' "$H2/log/libvirt/qemu/$vm-console.log"
  grep -aq 'vmkit-guest: ssh-keys=1' "$H2/log/libvirt/qemu/$vm-console.log"
  [ "$(qemu-img info -U --output=json "$H2IMG/$vm.qcow2" | jq -r '."backing-filename"')" = /var/lib/vmkit/templates/tiny.qcow2 ]
  r 0 vmrun undefine "$vm" --force --remove-storage
  [ ! -e "$H2IMG/$vm.qcow2" ]
}

@test "template create there (sealed here, sent back) and delete; undefine --remove-storage removes only that host's files" {
  r 0 vmrun template create far --from "$VM" --description "made there"
  [ -f "$H2TPL/far.qcow2" ]
  [ ! -e "/var/lib/vmkit/templates/far.qcow2" ]
  [ "$(jq -r .state "$H2TPL/far.template")" = complete ]
  [ "$(qemu-img info -U --output=json "$H2TPL/far.qcow2" | jq -r '."backing-filename" // "none"')" = none ]
  r 0 vmrun template delete far
  [ ! -e "$H2TPL/far.qcow2" ]
  [ ! -e "$H2TPL/far.template" ]
  r 4 vmrun template delete tiny --pool vmkit-templates
  r 0 vmrun undefine "$VM" --remove-storage
  [[ "$stderr" == *"keeping template image '/var/lib/vmkit/templates/tiny.qcow2'"* ]]
  [ ! -e "$H2IMG/$VM.qcow2" ]
  decoy_intact
  r 0 vmrun template delete tiny --pool vmkit-templates
  [ ! -e "$H2TPL/tiny.qcow2" ]
  # This host's template is this host's.
  [ -f "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
}

@test "a disk in no pool is refused on a remote host in one line" {
  r 3 vmrun create "${VM}x" --image /var/tmp/nowhere-$$.qcow2
  assert_one_error_line "no image '/var/tmp/nowhere-$$.qcow2' in the storage pools of host2"
  r 3 vmrun create "${VM}x" --kernel "$VMKIT_FIXTURE/vmlinuz"
  assert_one_error_line "in the storage pools of host2"
  run virsh -q -c "$URI" dominfo "${VM}x"
  [ "$status" -ne 0 ]
}
