#!/usr/bin/env bats
# vmpatch apply --template T --as NEW on a real Debian 12 template: a template is
# never patched in place (its linked clones stand on it), so a new one is made
# of it the way vmrun template create makes one (its lock, its record written
# first as incomplete, marked complete last), patched offline from a local APT
# repository (t/fixtures/mkdebrepo) and sealed again; T stays as it was, a linked
# clone of NEW boots with the fix. Nothing newer makes no template; an existing
# NEW exits 4, an unknown T 3; a kill -9 in the middle leaves an incomplete NEW
# that the next run removes. One TCG boot and about a dozen libguestfs launches.
# The tests run in order.

load helpers

setup_file() {
  export DEB=${VMKIT_CACHE:-/var/cache/vmkit}/debian12
  "$TOP/scripts/mkdebian" "$DEB" >&2
  export REPO=$BATS_FILE_TMPDIR/repo VM DISK T T2 T3 T4 C
  "$TOP/t/fixtures/mkdebrepo" "$REPO" >&2
  VM=$(file_vm_name src)
  T=$(file_vm_name tpl) T2=$(file_vm_name tpl2) T3=$(file_vm_name tpl3) T4=$(file_vm_name tpl4)
  C=$(file_vm_name clone)
  DISK=$VMKIT_STORAGE_DIR/$VM.qcow2
  patch_guest_vm "$VM"
  "$TOP/vmrun/vmrun" -q template create "$T" --from "$VM"
  # What a package's scripts may leave in the patched copy: a machine-id and ssh
  # host keys. Put into T here (it has no clones yet), the new template's seal
  # must remove them.
  LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
    virt-customize -q --format qcow2 -a "$VMKIT_TEMPLATE_DIR/$T.qcow2" \
    --write /etc/machine-id:0123456789abcdef0123456789abcdef --touch /etc/ssh/ssh_host_vmkit_key >&2
}

teardown() { :; }

teardown_file() {
  common_teardown_file
  local t
  for t in "$T4" "$T3" "$T2" "$T"; do
    [ -n "$t" ] && "$TOP/vmrun/vmrun" -q template delete "$t" 2>/dev/null || true
  done
}

# version_in TEMPLATE PACKAGE: its version in the template's inventory (read offline).
version_in() {
  "$TOP/vmpatch/vmpatch" inventory -q -o tsv --template "$1" | awk -F'\t' -v p="$2" '$4 == p { print $5 }'
}

# gfs COMMAND ARGS...: a libguestfs tool on a template's disk, as the tests run them.
gfs() { LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg "$@"; }

# record TEMPLATE FIELD: a field of the template's record.
record() { jq -r ".$2" "$VMKIT_TEMPLATE_DIR/$1.template"; }

# volumes TEMPLATE: the volumes of the template pool named after it, one a line.
volumes() { virsh_q vol-list "$VMKIT_TEMPLATE_POOL" | awk -v t="$1" 'index($1, t ".") == 1 { print $1 }'; }

@test "apply --template T --as T2 makes a patched, sealed new template; T stays as it was" {
  [ "$(version_in "$T" libvmkit-canary1)" = 1.0-1 ]
  run_tool 0 vmpatch apply --template "$T" --as "$T2" --repo "$REPO/fixed" -o tsv
  [ "$output" = "$T2"$'\tpatched\t1\tno\t' ]
  [ "$(record "$T2" state)" = complete ]
  [ "$(record "$T2" patched_from)" = "$T" ]
  [[ "$(record "$T2" description)" == "$T patched by vmpatch on "* ]]
  [ "$(record "$T2" vcpus)" = "$(record "$T" vcpus)" ]
  [ "$(record "$T2" memory)" = "$(record "$T" memory)" ]
  [ "$(record "$T2" virtual_size)" = "$(record "$T" virtual_size)" ]
  [ "$(record "$T2" id)" != "$(record "$T" id)" ]
  [ "$(stat -c %a "$VMKIT_TEMPLATE_DIR/$T2.qcow2")" = 444 ]
  # The copy is patched; the template it came from is not.
  [ "$(version_in "$T2" libvmkit-canary1)" = 1.0-2 ]
  [ "$(version_in "$T" libvmkit-canary1)" = 1.0-1 ]
  # T2 is sealed again: no machine-id, no ssh host keys, the first-boot keygen
  # unit; no trace of the run's repository.
  run gfs virt-cat --format=qcow2 -a "$VMKIT_TEMPLATE_DIR/$T2.qcow2" /etc/machine-id
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  run gfs guestfish --ro --format=qcow2 -a "$VMKIT_TEMPLATE_DIR/$T2.qcow2" -i \
    ls /etc/ssh : ls /etc/systemd/system : ls /var/lib
  [ "$status" -eq 0 ]
  [[ "$output" != *ssh_host_* ]]
  [[ "$output" == *vmkit-ssh-keygen.service* ]]
  [[ "$output" != *vmpatch-apply* ]]
  # Listed like any other template.
  run_tool 0 vmrun template list -o tsv
  [[ "$output" == *"$T2"$'\t'* ]]
}

@test "a linked clone of the patched template boots with the fix and an identity of its own" {
  run_tool 0 vmrun create "$C" --template "$T2" --network none --memory 768M
  run_tool 0 vmrun start "$C"
  run_tool 0 vmrun wait "$C" --agent --timeout 300
  run guest_exec "$C" "dpkg-query -W -f='\${Version}' libvmkit-canary1"
  [ "$status" -eq 0 ]
  [ "$output" = 1.0-2 ]
  run guest_exec "$C" 'cat /etc/machine-id'
  [ "$status" -eq 0 ]
  [ -n "$output" ]
  [ "$output" != 0123456789abcdef0123456789abcdef ]
  # A template with a clone is never patched in place, nor deleted.
  run_tool 4 vmrun template delete "$T2"
  run_tool 0 vmrun destroy "$C"
}

@test "nothing newer in the repository: up-to-date, and no new template is made" {
  run_tool 0 vmpatch apply --template "$T2" --as "$T3" --repo "$REPO/fixed" -o tsv
  [ "$output" = "$T3"$'\tup-to-date\t0\tno\t' ]
  [ -z "$(volumes "$T3")" ]
  [ -z "$(virsh_q vol-list "$VMKIT_TEMPLATE_POOL" | grep -F "$T3" || true)" ]
}

@test "an existing --as exits 4, an unknown template 3, an incomplete one 4; nothing is made or removed" {
  run_tool 4 vmpatch apply --template "$T" --as "$T2" --repo "$REPO/fixed" -o tsv
  [[ "$stderr" == *"template '$T2' already exists"* ]]
  [ "$(record "$T2" state)" = complete ]
  run_tool 3 vmpatch apply --template "$(vm_name nosuch)" --as "$T3" --repo "$REPO/fixed" -o tsv
  [[ "$stderr" == *"no such template '$(vm_name nosuch)'"* ]]
  [ -z "$(volumes "$T3")" ]
  [ "$(version_in "$T" libvmkit-canary1)" = 1.0-1 ]
}

@test "a kill -9 in the middle leaves an incomplete template, removed by the next apply of that name" {
  "$TOP/vmpatch/vmpatch" apply --template "$T" --as "$T4" --repo "$REPO/fixed" > /dev/null \
    2> "$BATS_TEST_TMPDIR/err" &
  local pid=$! i
  # Killed once the copy is being patched (its appliance is up).
  for i in $(seq 1 1500); do
    grep -q "updating from" "$BATS_TEST_TMPDIR/err" && break
    sleep 0.2
  done
  grep -q "updating from" "$BATS_TEST_TMPDIR/err"
  sleep 2
  kill -9 "$pid"
  wait "$pid" || true
  [ "$(record "$T4" state)" = incomplete ]
  [ "$(record "$T4" run.pid)" = "$pid" ]
  [ -n "$(volumes "$T4")" ]
  # Not a template to clone, nor to patch.
  run_tool 4 vmpatch apply --template "$T4" --as "$T3" --repo "$REPO/fixed" -o tsv
  [[ "$stderr" == *"template '$T4' is incomplete"* ]]
  # The next apply as T4 removes it first (here from T2, which is up to date:
  # no new T4 is made either).
  run_tool 0 vmpatch apply --template "$T2" --as "$T4" --repo "$REPO/fixed" -o tsv
  [[ "$stderr" == *"removing the incomplete template '$T4' that an interrupted run left"* ]]
  [ "$output" = "$T4"$'\tup-to-date\t0\tno\t' ]
  [ -z "$(volumes "$T4")" ]
}

@test "bad usage exits 2, before anything is made" {
  run_tool 2 vmpatch apply "$VM" --template "$T" --as "$T3" --repo "$REPO/fixed"
  [ "${stderr_lines[0]}" = "vmpatch: --template patches a template, not VMs: name no VM with it" ]
  [ -z "$output" ]
  run_tool 2 vmpatch apply "$VM" --as "$T3" --repo "$REPO/fixed"
  [ "${stderr_lines[0]}" = "vmpatch: --as goes with --template" ]
  run_tool 2 vmpatch apply --as "$T3" --repo "$REPO/fixed"
  [ "${stderr_lines[0]}" = "vmpatch: --as goes with --template" ]
  run_tool 2 vmpatch apply --repo "$REPO/fixed"
  [ "${stderr_lines[0]}" = "vmpatch: name the VMs to patch, or --template NAME --as NEW" ]
  run_tool 2 vmpatch apply --template "$T" --as "$T3" --repo "$REPO/fixed" --reboot always
  [ "${stderr_lines[0]}" = "vmpatch: --reboot is for VMs: a template is not booted" ]
  run_tool 2 vmpatch apply --template "$T" --repo "$REPO/fixed"
  [ "${stderr_lines[0]}" = "vmpatch: --template needs --as NEW, the name of the patched template" ]
  # A template is never patched in place.
  run_tool 2 vmpatch apply --template "$T" --as "$T" --repo "$REPO/fixed"
  [ "${stderr_lines[0]}" = "vmpatch: --as must name a new template: a template is never patched in place" ]
  [ -z "$(volumes "$T3")" ]
  [ -z "$(virsh_q snapshot-list "$VM" --name | sed '/^$/d')" ]
}
