#!/usr/bin/env bats
# Templates of a real distribution: a Debian 12 guest (systemd, openssh-server,
# qemu-guest-agent, grub, root by UUID; scripts/mkdebian builds it once per machine
# and caches it outside the clone), sealed into a template, and clones of it made
# with first-boot customization: each comes up with its own hostname, machine-id
# and ssh host keys, the injected key and password, sshd running and no failed
# unit; quiesced snapshots, revert and the graceful stop work on it.
# Two TCG boots of about 30 s each, and three libguestfs launches; the tests run in
# order.

load helpers

setup_file() {
  export DEB=${VMKIT_CACHE:-/var/cache/vmkit}/debian12
  "$TOP/scripts/mkdebian" "$DEB" >&2
  export SRC=${VMKIT_TEST_PREFIX}080-src TPL=${VMKIT_TEST_PREFIX}deb12
  export D1=${VMKIT_TEST_PREFIX}080-d1 D2=${VMKIT_TEST_PREFIX}080-d2
  echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIvmkitdebiankey test@vmkit' > "$BATS_FILE_TMPDIR/key.pub"
  printf 'debian pass\n' > "$BATS_FILE_TMPDIR/pw"
}

teardown() { :; }

teardown_file() {
  common_teardown_file
  "$TOP/vmrun/vmrun" -q template delete "$TPL" 2>/dev/null || true
}

# g VM COMMAND: a command in the guest, through its agent.
g() { guest_exec "$1" "$2"; }

@test "a Debian 12 VM sealed into a template: no machine-id, no host keys, a unit that makes them" {
  # The cached image is copied into the pool: the cache is never written.
  run_tool 0 vmrun create "$SRC" --image "$DEB/disk.qcow2" --copy --memory 1G --network none
  run_tool 0 vmrun template create "$TPL" --from "$SRC" --description "Debian 12"
  run_tool 0 vmrun undefine "$SRC" --remove-storage
  [ "$(stat -c %a "$VMKIT_TEMPLATE_DIR/$TPL.qcow2")" = 444 ]
  [ "$(jq -r .virtual_size "$VMKIT_TEMPLATE_DIR/$TPL.template")" = $((4 << 30)) ]
}

@test "a clone with --hostname, --ssh-key and --root-password-file boots with its own identity and sshd running" {
  run_tool 0 vmrun create "$D1" --template "$TPL" --memory 1G --hostname d1 \
    --ssh-key "$BATS_FILE_TMPDIR/key.pub" --root-password-file "$BATS_FILE_TMPDIR/pw" --start
  run_tool 0 vmrun wait "$D1" --agent --timeout 300
  # The agent answers before boot is over: wait for systemd to finish starting.
  local state i
  for i in $(seq 1 90); do
    state=$(g "$D1" 'systemctl is-system-running' || true)
    [ "$state" = starting ] || break
    sleep 2
  done
  [ "$(g "$D1" hostname)" = d1 ]
  grep -q "127.0.1.1.*d1" <<< "$(g "$D1" 'cat /etc/hosts')"
  [ "$(g "$D1" 'cat /root/.ssh/authorized_keys')" = "$(cat "$BATS_FILE_TMPDIR/key.pub")" ]
  # The password: the first line of the file, hashed with SHA-512.
  local hash salt
  hash=$(g "$D1" "awk -F: '\$1 == \"root\" {print \$2}' /etc/shadow")
  [[ "$hash" == '$6$'* ]]
  salt=$(cut -d'$' -f3 <<< "$hash")
  [ "$(busybox mkpasswd -m sha512 'debian pass' "$salt")" = "$hash" ]
  # systemd made a machine-id; ssh host keys were made at this first boot.
  [ -n "$(g "$D1" 'cat /etc/machine-id')" ]
  [ "$(g "$D1" 'ls /etc/ssh/ssh_host_*_key | wc -l')" -ge 3 ]
  # Up: sshd active, nothing failed.
  [ "$(g "$D1" 'systemctl is-active ssh.service')" = active ]
  [ -z "$(g "$D1" 'systemctl --failed --no-legend --plain')" ]
  [ "$state" = running ]
}

@test "each clone has its own machine-id and ssh host keys" {
  run_tool 0 vmrun create "$D2" --template "$TPL" --memory 1G --start
  run_tool 0 vmrun wait "$D2" --agent --timeout 300
  local k1 k2 m1 m2 tries
  for tries in $(seq 1 60); do
    [ "$(g "$D2" 'systemctl is-active ssh.service' || true)" = active ] && break
    sleep 2
  done
  [ "$(g "$D2" 'systemctl is-active ssh.service')" = active ]
  m1=$(g "$D1" 'cat /etc/machine-id')
  m2=$(g "$D2" 'cat /etc/machine-id')
  [ -n "$m2" ]
  [ "$m1" != "$m2" ]
  k1=$(g "$D1" 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')
  k2=$(g "$D2" 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')
  [ -n "$k2" ]
  [ "$k1" != "$k2" ]
  # The template's own default hostname: this clone was not renamed.
  [ "$(g "$D2" hostname)" = debian12 ]
  run_tool 0 vmrun undefine "$D2" --force --remove-storage
}

@test "quiesced snapshot, revert and the graceful stop on the Debian clone" {
  g "$D1" 'echo before > /root/value; sync'
  run_tool 0 vmsnap create "$D1" q1 --quiesce
  [ "$(snap_json "$D1" q1 kind)" = quiesced ]
  [ "$(virsh_q qemu-agent-command "$D1" '{"execute":"guest-fsfreeze-status"}' | jq -r .return)" = thawed ]
  g "$D1" 'echo after > /root/value; sync'
  run_tool 0 vmsnap revert "$D1" q1 --running
  run_tool 0 vmrun wait "$D1" --agent --timeout 300
  [ "$(g "$D1" 'cat /root/value')" = before ]
  # ssh keys made at first boot stay: the revert went back to after that boot.
  [ "$(g "$D1" 'ls /etc/ssh/ssh_host_*_key | wc -l')" -ge 3 ]
  run_tool 0 vmsnap delete "$D1" q1
  run_tool 0 vmsnap verify "$D1"
  # The ACPI power button: a clean shutdown, not a forced one.
  run_tool 0 vmrun stop "$D1" --timeout 120
  [[ "$stderr" == *"stopped VM '$D1'"* ]]
  [[ "$stderr" != *"forced"* ]]
  run_tool 0 vmrun undefine "$D1" --remove-storage
  run_tool 0 vmrun template delete "$TPL"
}
