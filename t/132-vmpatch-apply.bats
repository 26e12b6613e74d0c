#!/usr/bin/env bats
# vmpatch apply on a real Debian 12 guest (a qcow2 overlay on scripts/mkdebian's
# cached image, the VM's own disk), from a local APT repository the suite builds
# (t/fixtures/mkdebrepo: libvmkit-canary1 of source vmkit-canary, 1.0-1 and the
# fixed 1.0-2; vmkit-breaker, whose 2.0-1 masks the guest agent) and an OSV
# feed naming canary 1.0-1 vulnerable: scan finds it, apply installs the fix
# offline, boots the VM, checks it and shuts it down, and scan is then clean; the
# breaking update is rolled back when the agent does not come back; a kill in
# the middle is rolled back by the next run; a batch has a row per VM and stops
# at --max-failures; a running VM (degraded as before) is updated through its
# agent (canary 1.0-3) and kept running; killed in the middle it is reverted and
# started again by the next run; the breaking update rebooted, reverted and
# started again; bad repositories are refused before any VM is touched. Seven
# boots under TCG and a dozen libguestfs launches. The tests run in order.

load helpers

setup_file() {
  export DEB=${VMKIT_CACHE:-/var/cache/vmkit}/debian12
  "$TOP/scripts/mkdebian" "$DEB" >&2
  export REPO=$BATS_FILE_TMPDIR/repo VM DISK
  "$TOP/t/fixtures/mkdebrepo" "$REPO" >&2
  VM=$(file_vm_name deb)
  DISK=$VMKIT_STORAGE_DIR/$VM.qcow2
  patch_guest_vm "$VM"
}

teardown() { common_teardown; }
teardown_file() { common_teardown_file; }

# version_in PACKAGE: its version in the VM's inventory (read offline).
version_in() {
  "$TOP/vmpatch/vmpatch" inventory -q -o tsv "$VM" | awk -F'\t' -v p="$1" '$4 == p { print $5 }'
}

# snapshots: the VM's snapshots, one name a line.
snapshots() { virsh_q snapshot-list "$VM" --name | sed '/^$/d'; }

@test "scan finds the vulnerable canary in the guest: exit 6" {
  [ "$(version_in libvmkit-canary1)" = 1.0-1 ]
  [ "$(version_in vmkit-breaker)" = 1.0-1 ]
  run --separate-stderr bash -c 'set -o pipefail; "$1" inventory -q "$2" -o json | "$1" scan -q -o tsv --inventory - --feed "$3"' \
    _ "$TOP/vmpatch/vmpatch" "$VM" "$REPO/feed"
  [ "$status" -eq 6 ]
  [ "$output" = "$VM"$'\tlibvmkit-canary1\tvmkit-canary\t1.0-1\t1.0-2\tDEBIAN-VMKIT-0001\tCVE-2099-0001\thigh\tno' ]
}

@test "apply --security-only installs the fix offline, boots and checks the VM, shuts it down; scan is then clean" {
  run_tool 0 vmpatch apply "$VM" --repo "$REPO/fixed" --security-only --feed "$REPO/feed" -o tsv
  [ "$output" = "$VM"$'\tpatched\t1\tno\t' ]
  [[ "$stderr" == *"VM '$VM': checked, shutting it down again"* ]]
  [[ "$stderr" == *"1 of 1 VM patched"* ]]
  [ "$(virsh_q domstate "$VM")" = "shut off" ]
  # The snapshot taken first is gone (merged), and so is the mark.
  [ -z "$(snapshots)" ]
  [ -z "$(virsh_q metadata "$VM" https://vmkit.dev/xmlns/vmpatch/1 2>/dev/null || true)" ]
  # The canary was updated; the breaker, not vulnerable, was not.
  [ "$(version_in libvmkit-canary1)" = 1.0-2 ]
  [ "$(version_in vmkit-breaker)" = 1.0-1 ]
  # No trace of the run's repository in the guest; the cache image untouched.
  LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
    run virt-ls --format=qcow2 -a "$DISK" /var/lib
  [ "$status" -eq 0 ]
  [[ "$output" == *dpkg* ]]
  [[ "$output" != *vmpatch* ]]
  run --separate-stderr bash -c 'set -o pipefail; "$1" inventory -q "$2" -o json | "$1" scan -q --inventory - --feed "$3"' \
    _ "$TOP/vmpatch/vmpatch" "$VM" "$REPO/feed"
  [ "$status" -eq 0 ]
  # A second apply finds nothing to do: no boot, nothing changed.
  run_tool 0 vmpatch apply "$VM" --repo "$REPO/fixed" -o tsv
  [ "$output" = "$VM"$'\tup-to-date\t0\tno\t' ]
  [ -z "$(snapshots)" ]
}

@test "a batch: --parallel patches VMs side by side, --max-failures stops the rollout; each VM has its row" {
  local a=${VMKIT_TEST_PREFIX}132-nosuch-a b=${VMKIT_TEST_PREFIX}132-nosuch-b c=${VMKIT_TEST_PREFIX}132-nosuch-c
  # Two workers, three failures allowed: every VM is tried; the worst exit wins.
  run_tool 3 vmpatch apply "$a" "$VM" "$b" --repo "$REPO/fixed" --parallel 2 --max-failures 3 -o tsv
  [ "${lines[0]}" = "$a"$'\tfailed\t0\tno\t'"no such VM '$a'" ]
  [ "${lines[1]}" = "$VM"$'\tup-to-date\t0\tno\t' ]
  [ "${lines[2]}" = "$b"$'\tfailed\t0\tno\t'"no such VM '$b'" ]
  [[ "$stderr" == *"0 of 3 VMs patched"* ]]
  # One at a time, two failures allowed: the rollout stops before the VMs after them.
  run_tool 3 vmpatch apply "$a" "$b" "$VM" "$c" --repo "$REPO/fixed" --max-failures 2 -o json
  [ "$(jq -r '[.[] | .vm + "=" + .result] | join(" ")' <<< "$output")" = "$a=failed $b=failed $VM=not-started $c=not-started" ]
  assert_stderr_has "rollout stopped after 2 failures (--max-failures 2): 2 VMs not started"
  [ -z "$(snapshots)" ]
  [ "$(virsh_q domstate "$VM")" = "shut off" ]
}

@test "an update that masks the guest agent is reverted when the VM does not come back: exit 6" {
  # 90 s: twice what a good boot takes here to its agent, so a guest that would
  # answer does.
  run_tool 6 vmpatch apply "$VM" --repo "$REPO/breaking" --timeout 90 -o tsv
  [[ "$output" == "$VM"$'\treverted\t1\tno\t'"VM '$VM' failed its check after the patch (its agent did not answer within 90 s): reverted to snapshot 'vmpatch-"* ]]
  [ "$(virsh_q domstate "$VM")" = "shut off" ]
  [ -z "$(snapshots)" ]
  [ "$(version_in vmkit-breaker)" = 1.0-1 ]
  [ "$(version_in libvmkit-canary1)" = 1.0-2 ]
}

@test "a kill -9 while the guest is being patched: the next apply rolls it back first" {
  "$TOP/vmpatch/vmpatch" -q apply "$VM" --repo "$REPO/breaking" --timeout 120 > /dev/null 2>&1 &
  local pid=$! i
  # Killed once the mark names its snapshot (the patch is under way).
  for i in $(seq 1 600); do
    virsh_q metadata "$VM" https://vmkit.dev/xmlns/vmpatch/1 2>/dev/null | grep -q 'step="patching"' && break
    sleep 0.2
  done
  sleep 3
  kill -9 "$pid"
  wait "$pid" || true
  [ -n "$(snapshots)" ]
  # Nothing newer in the fixed repository: the run reverts, then has nothing to do.
  run_tool 0 vmpatch apply "$VM" --repo "$REPO/fixed" -o tsv
  [[ "$stderr" == *"reverting '$VM' to snapshot 'vmpatch-"*"': vmpatch (pid $pid) did not finish patching it"* ]]
  [ "$output" = "$VM"$'\tup-to-date\t0\tno\t' ]
  [ -z "$(snapshots)" ]
  [ "$(version_in vmkit-breaker)" = 1.0-1 ]
}

@test "apply on a running VM: updated through its agent, checked, kept running; nothing newer leaves it alone" {
  run_tool 0 vmrun start "$VM"
  run_tool 0 vmrun wait "$VM" --agent --timeout 300
  # A paused VM is refused in its row.
  virsh_q suspend "$VM" > /dev/null
  run_tool 4 vmpatch apply "$VM" --repo "$REPO/newer" -o tsv
  [ "$output" = "$VM"$'\tfailed\t0\tno\t'"VM '$VM' is paused: vmpatch apply patches shut-off or running VMs" ]
  virsh_q resume "$VM" > /dev/null
  # A unit failed before the patch: degraded before and after by the same unit passes.
  guest_exec "$VM" "systemd-run --wait --unit=vmkit-t132-broken /bin/false" >/dev/null || true
  run guest_exec "$VM" "systemctl is-system-running --wait"
  [ "$output" = degraded ]
  run_tool 0 vmpatch apply "$VM" --repo "$REPO/newer" -o tsv
  [ "$output" = "$VM"$'\tpatched\t1\tno\t' ]
  [[ "$stderr" == *"VM '$VM': degraded as before the patch (the same units failed): passed"* ]]
  [[ "$stderr" == *"VM '$VM': checked, running"* ]]
  guest_exec "$VM" "systemctl reset-failed"
  [ "$(virsh_q domstate "$VM")" = running ]
  [ -z "$(snapshots)" ]
  [ -z "$(virsh_q metadata "$VM" https://vmkit.dev/xmlns/vmpatch/1 2>/dev/null || true)" ]
  # The guest's own dpkg has the new version; the run's folder is gone.
  run guest_exec "$VM" "dpkg-query -W -f='\${Version}' libvmkit-canary1"
  [ "$status" -eq 0 ]
  [ "$output" = 1.0-3 ]
  guest_exec "$VM" "test ! -e /var/lib/vmpatch-apply"
  # The VM's disk is one image again: the snapshot's overlay was merged.
  [ "$(virsh_q domblklist "$VM" --details | awk '$2 == "disk" { print $4 }')" = "$DISK" ]
  run_tool 0 vmpatch apply "$VM" --repo "$REPO/newer" -o tsv
  [ "$output" = "$VM"$'\tup-to-date\t0\tno\t' ]
  [ "$(virsh_q domstate "$VM")" = running ]
  [ -z "$(snapshots)" ]
}

@test "a kill -9 while a running VM is patched: the next apply reverts it, starts it again and waits for its agent" {
  [ "$(virsh_q domstate "$VM")" = running ]
  "$TOP/vmpatch/vmpatch" -q apply "$VM" --repo "$REPO/breaking" --reboot never --timeout 120 > /dev/null 2>&1 &
  local pid=$! i
  for i in $(seq 1 900); do
    virsh_q metadata "$VM" https://vmkit.dev/xmlns/vmpatch/1 2>/dev/null | grep -q 'step="patching"' && break
    sleep 0.2
  done
  # At once: the breaking update passes its check with --reboot never (the agent
  # it masks still runs), and the run must not get that far.
  kill -9 "$pid"
  wait "$pid" || true
  [ -n "$(snapshots)" ]
  virsh_q metadata "$VM" https://vmkit.dev/xmlns/vmpatch/1 | grep -q 'step="patching"'
  run_tool 0 vmpatch apply "$VM" --repo "$REPO/newer" -o tsv
  [[ "$stderr" == *"reverting '$VM' to snapshot 'vmpatch-"*"': vmpatch (pid $pid) did not finish patching it"* ]]
  [[ "$stderr" == *"VM '$VM': started again, waiting for its agent"* ]]
  [ "$output" = "$VM"$'\tup-to-date\t0\tno\t' ]
  [ "$(virsh_q domstate "$VM")" = running ]
  [ -z "$(snapshots)" ]
  run guest_exec "$VM" "dpkg-query -W -f='\${Version}' vmkit-breaker"
  [ "$output" = 1.0-1 ]
}

@test "a running VM whose update masks its agent: rebooted (--reboot always), reverted and started again: exit 6" {
  [ "$(virsh_q domstate "$VM")" = running ]
  # 90 s: twice a good reboot's time to the agent; it bounds the guest's apt-get runs too.
  run_tool 6 vmpatch apply "$VM" --repo "$REPO/breaking" --reboot always --timeout 90 -o tsv
  [[ "$output" == "$VM"$'\treverted\t1\tdone\t'"VM '$VM' failed its check after the patch (its agent did not answer within 90 s): reverted to snapshot 'vmpatch-"*"' and started again" ]]
  [[ "$stderr" == *"VM '$VM': rebooting it"* ]]
  [ "$(virsh_q domstate "$VM")" = running ]
  [ -z "$(snapshots)" ]
  run_tool 0 vmrun wait "$VM" --agent --timeout 300
  run guest_exec "$VM" "dpkg-query -W -f='\${Package}=\${Version} ' vmkit-breaker libvmkit-canary1"
  [ "$output" = "libvmkit-canary1=1.0-3 vmkit-breaker=1.0-1 " ]
  run_tool 2 vmpatch apply "$VM" --repo "$REPO/newer" --reboot sometimes
  assert_stderr_has "vmpatch: invalid --reboot 'sometimes': expected auto, always or never"
  virsh_q destroy "$VM" > /dev/null
}

@test "bad repositories and usage are refused in one line before any VM is touched" {
  run_tool 1 vmpatch apply "$VM" --repo "$REPO/bad"
  assert_one_error_line "vmpatch: repository $REPO/bad: Packages: line 1: package 'libvmkit-canary1' has no Filename"
  run_tool 3 vmpatch apply "$VM" --repo "$REPO/nothing"
  assert_one_error_line "vmpatch: repository $REPO/nothing: No such file or directory"
  mkdir "$BATS_TEST_TMPDIR/empty"
  run_tool 1 vmpatch apply "$VM" --repo "$BATS_TEST_TMPDIR/empty"
  assert_one_error_line "vmpatch: repository $BATS_TEST_TMPDIR/empty: no Packages index (a flat APT repository, as dpkg-scanpackages or apt-ftparchive make one)"
  # An index naming a .deb it does not hold.
  cp -r "$REPO/fixed" "$BATS_TEST_TMPDIR/holey"
  rm "$BATS_TEST_TMPDIR"/holey/libvmkit-canary1_1.0-2_all.deb
  run_tool 1 vmpatch apply "$VM" --repo "$BATS_TEST_TMPDIR/holey"
  assert_one_error_line "vmpatch: repository $BATS_TEST_TMPDIR/holey: Packages names './libvmkit-canary1_1.0-2_all.deb', which it does not hold (as a file)"
  run_tool 2 vmpatch apply "$VM" --repo http://deb.debian.org/debian
  assert_stderr_has "vmpatch: invalid --repo 'http://deb.debian.org/debian': a directory or a file:// URL of one (a local mirror)"
  run_tool 2 vmpatch apply "$VM"
  assert_stderr_has "vmpatch: --repo DIR is required"
  run_tool 2 vmpatch apply "$VM" --repo "$REPO/fixed" --security-only
  assert_stderr_has "vmpatch: --security-only needs --feed PATH"
  run_tool 2 vmpatch apply "$VM" --repo "$REPO/fixed" --packages 'Bad;name'
  assert_stderr_has "vmpatch: invalid package name 'Bad;name'"
  run_tool 2 vmpatch apply "$VM" "$VM" --repo "$REPO/fixed"
  assert_stderr_has "vmpatch: VM '$VM' is named twice"
  local uuid
  uuid=$(virsh_q domuuid "$VM")
  run_tool 2 vmpatch apply "$VM" "$uuid" --repo "$REPO/fixed" --parallel 2
  assert_stderr_has "vmpatch: '$VM' and '$uuid' are one VM"
  [ -z "$(virsh_q metadata "$VM" https://vmkit.dev/xmlns/vmpatch/1 2>/dev/null || true)" ]
  # An unknown VM fails its row; the others go on (none here).
  run_tool 3 vmpatch apply "${VM}-none" --repo "$REPO/fixed" -o tsv
  [ "$output" = "${VM}-none"$'\tfailed\t0\tno\t'"no such VM '${VM}-none'" ]
  [ -z "$(snapshots)" ]
}
