#!/usr/bin/env bats
# vmrun on one running guest, booted once for the whole file: wait, list, info,
# stats, pause/resume, reboot, tune, then a graceful stop. The tests run in order.

load helpers

setup_file() {
  export VM
  VM=$(file_vm_name life)
  boot_vm "$VM"
}

teardown() { :; }

@test "wait --agent: the guest agent answers" {
  run_tool 0 vmrun wait "$VM" --agent --timeout 60
  run_tool 0 vmrun wait "$VM" --state running --timeout 5
}

@test "list shows the running VM in table, tsv and json" {
  run_tool 0 vmrun list
  [[ "${lines[0]}" == "NAME"*"STATE"*"VCPUS"*"MEMORY"*"AUTOSTART"*"TEMPLATE" ]]
  grep -E "^$VM +running +1 +256M +no +tiny$" <<< "$output"
  run_tool 0 vmrun list -o tsv --state running
  grep -qx "$VM	running	1	268435456	no	tiny" <<< "$output"
  run_tool 0 vmrun list -o json --state shutoff
  [ "$(jq --arg n "$VM" '[.[] | select(.name == $n)] | length' <<< "$output")" = 0 ]
  run_tool 2 vmrun list --state sleepy
}

@test "info shows state, id, disks, console log and the security label QEMU runs under" {
  run_tool 0 vmrun info "$VM" -o json
  [ "$(jq -r .state <<< "$output")" = running ]
  [ "$(jq -r '.id | type' <<< "$output")" = number ]
  [ "$(jq -r .console_log <<< "$output")" = "/var/log/libvirt/qemu/$VM-console.log" ]
  [ "$(jq -r '.disks[0].capacity' <<< "$output")" = "$(jq -r .virtual_size "$VMKIT_TEMPLATE_DIR/tiny.template")" ]
  [ "$(jq -r '.disks[0].encrypted' <<< "$output")" = false ]
  # Its isolation: DAC's label is the user and group its QEMU runs as.
  local label ids
  label=$(jq -r '.security[] | select(.model == "dac") | .label' <<< "$output")
  ids=$(ps -o uid=,gid= -p "$(cat "/run/libvirt/qemu/$VM.pid")" | awk '{ print "+" $1 ":+" $2 }')
  [ -n "$label" ] && [ "$label" = "$ids" ] || { echo "dac label '$label', the QEMU process runs as '$ids'" >&2; return 1; }
  run_tool 0 vmrun info "$VM" -o tsv
  grep -qx "state	running" <<< "$output"
  run_tool 3 vmrun info "${VM}-nosuch"
  assert_one_error_line "no such VM '${VM}-nosuch'"
}

@test "stats reports CPU, memory and disk reads from two samples" {
  # The guest reads its disk while the samples are taken.
  virsh_q qemu-agent-command "$VM" \
    '{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","for i in 1 2 3 4 5 6; do dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null; done"]}}' >/dev/null
  run_tool 0 vmrun stats "$VM" -o json --interval 2
  [ "$(jq -r '.[0].name' <<< "$output")" = "$VM" ]
  [ "$(jq -r '.[0].state' <<< "$output")" = running ]
  jq -e '.[0].cpu_percent > 0' <<< "$output"
  jq -e '.[0].memory == 268435456' <<< "$output"
  jq -e '.[0].rss > 0' <<< "$output"
  jq -e '.[0].disk_read > 0' <<< "$output"
  # All running VMs when none is named; tsv has no header and raw numbers.
  run_tool 0 vmrun stats -o tsv
  grep -E "^$VM	running	[0-9.]+	268435456	[0-9]+	[0-9]+	[0-9]+	[0-9]+	[0-9]+$" <<< "$output"
  run_tool 0 vmrun stats "$VM" --count 2 -o tsv
  [ "${#lines[@]}" -eq 2 ]
  run_tool 2 vmrun stats --interval 0
  run_tool 3 vmrun stats "${VM}-nosuch"
  # Prometheus text format: a TYPE line, then a sample labelled by the VM.
  run_tool 0 vmrun stats "$VM" -o prom
  [ "${lines[0]}" = "# TYPE vmkit_vm_cpu_percent gauge" ]
  local host
  host=$(hostname)
  grep -Eqx "vmkit_vm_cpu_percent\{host=\"$host\",vm=\"$VM\"\} [0-9.e+-]+" <<< "$output"
  grep -qx "vmkit_vm_memory_bytes{host=\"$host\",vm=\"$VM\"} 268435456" <<< "$output"
  grep -Eqx "vmkit_vm_net_tx_bytes_per_second\{host=\"$host\",vm=\"$VM\"\} [0-9]+" <<< "$output"
  run_tool 2 vmrun stats "$VM" -o prom --count 2
  # Other verbs have no metrics to give.
  run_tool 2 vmrun list -o prom
  assert_stderr_has "unknown output format 'prom': use table, tsv or json"
}

@test "start on a running VM succeeds; --strict makes it exit 4" {
  run_tool 0 vmrun start "$VM"
  [[ "$stderr" == *"already running"* ]]
  run_tool 4 vmrun start "$VM" --strict
  assert_one_error_line "VM '$VM' is already running"
}

@test "pause and resume, idempotent, and the guest keeps running" {
  run_tool 0 vmrun pause "$VM"
  run_tool 0 vmrun wait "$VM" --state paused --timeout 5
  run_tool 0 vmrun pause "$VM"
  run_tool 4 vmrun pause "$VM" --strict
  run_tool 0 vmrun list -o tsv --state paused
  grep -q "^$VM	paused" <<< "$output"
  run_tool 0 vmrun resume "$VM"
  run_tool 0 vmrun resume "$VM"
  run_tool 0 vmrun wait "$VM" --agent --timeout 30
}

@test "tune sets CPU shares and quota, memory soft limit and disk throttling live" {
  run_tool 0 vmrun tune "$VM" --cpu-shares 512 --cpu-quota 50000 --mem-soft 200M --live
  run_tool 0 vmrun tune "$VM" --disk vda --total-bytes-sec 10M --read-iops-sec 200 --live
  run_tool 0 vmrun tune "$VM" -o json
  [ "$(jq .cpu_shares <<< "$output")" = 512 ]
  [ "$(jq .cpu_quota <<< "$output")" = 50000 ]
  [ "$(jq .mem_soft <<< "$output")" = 209715200 ]
  [ "$(jq '.disks[0].total_bytes_sec' <<< "$output")" = 10485760 ]
  [ "$(jq '.disks[0].read_iops_sec' <<< "$output")" = 200 ]
  # The limits are in force where the host enforces them: QEMU's throttle and the cgroup.
  [ "$(virsh_q blkdeviotune "$VM" vda | awk '$1 == "total_bytes_sec:" {print $2}')" = 10485760 ]
  [ "$(virsh_q schedinfo "$VM" | awk '$1 == "cpu_shares" {print $3}')" = 512 ]
}

@test "tune refuses bad values (exit 2) and bandwidth on a user-mode NIC in one line" {
  run_tool 2 vmrun tune "$VM" --cpu-shares 1
  run_tool 2 vmrun tune "$VM" --cpu-quota 10
  run_tool 2 vmrun tune "$VM" --mem-hard lots
  run_tool 2 vmrun tune "$VM" --total-bytes-sec 10M
  run_tool 2 vmrun tune "$VM" --disk vda
  run_tool 2 vmrun tune "$VM" --inbound 1M
  local mac
  mac=$("$TOP/vmrun/vmrun" info "$VM" -o json | jq -r '.nics[0].mac')
  run_tool 1 vmrun tune "$VM" --nic "$mac" --inbound 1M --live
  assert_one_error_line "a user-mode NIC has no tap device to shape"
  run_tool 3 vmrun tune "$VM" --nic 52:54:00:00:00:99 --inbound 1M --live
  run_tool 3 vmrun tune "$VM" --disk vdz --total-bytes-sec 1M --live
  assert_one_error_line "VM '$VM' has no disk 'vdz'"
}

@test "reboot: the guest goes down and comes up again" {
  run_tool 0 vmrun reboot "$VM"
  run_tool 0 vmrun wait "$VM" --console-line 'vmkit-guest: up' --new --timeout 120
  [ "$(console "$VM" | grep -c 'vmkit-guest: up')" -ge 2 ]
  [ "$(console "$VM" | grep -c 'vmkit-guest: going down')" -ge 1 ]
}

@test "stop shuts the guest down gracefully; stopping again succeeds, --strict exits 4" {
  run_tool 0 vmrun stop "$VM" --timeout 60
  assert_stderr_has "stopped VM '$VM'"
  console "$VM" | grep -q 'vmkit-guest: going down (poweroff)'
  run_tool 0 vmrun list -o tsv --state shutoff
  grep -q "^$VM	shutoff" <<< "$output"
  run_tool 0 vmrun stop "$VM"
  run_tool 4 vmrun stop "$VM" --strict
  run_tool 0 vmrun destroy "$VM"
  run_tool 4 vmrun reboot "$VM"
  assert_one_error_line "VM '$VM' is not running"
  run_tool 4 vmrun pause "$VM"
  run_tool 4 vmrun wait "$VM" --console-line 'never printed' --timeout 5
  assert_one_error_line "VM '$VM' is shutoff"
}
