#!/usr/bin/env bats
# vmmigrate's pre-flight: every refusal is one line and exit 4, and nothing is made
# on the destination; --check prints each check. The CPU decision is also tested
# against recorded host CPU definitions of hosts this machine is not
# (t/fixtures/cpu: an older Intel host and an older AMD one), since the daemons
# here all share this machine's CPU. Then the pool's baseline CPU, and a plan of
# three moves of which one must fail.

load helpers

setup_file() {
  pool_start 3
  pool_local_pools
}
teardown_file() { pool_stop; }
teardown() {
  pool_teardown
  virsh -q -c qemu:///system net-destroy "${VMKIT_TEST_PREFIX}net" >/dev/null 2>&1 || true
  virsh -q -c qemu:///system pool-destroy "${VMKIT_TEST_PREFIX}cmp" >/dev/null 2>&1 || true
  virsh -q -c "$H2_URI" pool-destroy "${VMKIT_TEST_PREFIX}cmp" >/dev/null 2>&1 || true
  rm -rf --one-file-system "/var/lib/libvirt/images/${VMKIT_TEST_PREFIX}cmp"
  if mountpoint -q "$POOL_DIR/small-h1" 2>/dev/null; then
    virsh -q -c qemu:///system pool-destroy "${VMKIT_TEST_PREFIX}small" >/dev/null 2>&1 || true
    umount "$POOL_DIR/small-h1"
  fi
}

CPU=$BATS_TEST_DIRNAME/fixtures/cpu

# nothing_on K VM: host hK has no VM of that name and no file of it in its folder.
nothing_on() {
  [ "$(vm_state_on "$1" "$2")" = none ] && ! ls "$POOL_DIR/local-h$1/$2"* >/dev/null 2>&1
}

@test "refusals of a running VM: same host, memory, CPU vendor, a missing network; --check lists each check" {
  local vm net hosts
  vm=$(vm_name run)
  net=${VMKIT_TEST_PREFIX}net
  # A libvirt network that only this host has (isolated: no addresses, no dnsmasq).
  virsh -q -c qemu:///system net-create /dev/stdin >/dev/null <<EOF
<network><name>$net</name><bridge name='vmkn${VMKIT_TEST_PREFIX:4:6}'/></network>
EOF
  boot_vm "$vm" --network user --network "network=$net"

  run_tool 4 vmmigrate "$vm" h1
  assert_one_error_line "'$vm' is on h1 already"

  run_tool 4 vmmigrate "$vm" h2
  assert_one_error_line "h2 has no libvirt network '$net'"
  nothing_on 2 "$vm"

  # --check: every check, the failed one among them, and exit 4.
  run_tool 4 vmmigrate --check "$vm" h2 -o json
  [ "$(jq -r '.[] | select(.check == "network '"$net"'") | .result' <<<"$output")" = failed ]
  [ "$(jq -r '.[] | select(.check == "memory") | .result' <<<"$output")" = ok ]
  [ "$(jq -r '.[] | select(.check == "storage vda") | .result' <<<"$output")" = ok ]
  [ "$(jq -r '.[] | select(.check == "cpu") | .result' <<<"$output")" = ok ]
  [ "$(jq -r '.[] | select(.check == "name") | .result' <<<"$output")" = ok ]
  [ "$(jq -r '[.[] | select(.result == "failed")] | length' <<<"$output")" = 1 ]
  # Once h2 has the network too, the same move passes the check.
  on_host 2 virsh_q net-create /dev/stdin >/dev/null <<EOF
<network><name>$net</name><bridge name='vmko${VMKIT_TEST_PREFIX:4:6}'/></network>
EOF
  run_tool 0 vmmigrate --check "$vm" h2
  [[ "$output" == *"network $net"*ok* ]]

  # Memory: the hosts file lets VMs on h2 have 100M in all.
  hosts=$BATS_TEST_TMPDIR/hosts
  sed 's|^h2 .*|& memory=100M|' "$POOL_DIR/hosts" > "$hosts"
  run_tool 4 vmmigrate -H "$hosts" "$vm" h2
  assert_one_error_line "not enough memory on h2: the VM needs 256M"
  # A tag that is not a size is the hosts file's error, with its place.
  sed 's|^h2 .*|& memory=lots|' "$POOL_DIR/hosts" > "$hosts"
  run_tool 2 vmmigrate -H "$hosts" "$vm" h2
  assert_one_error_line "$hosts: host 'h2': invalid memory= tag 'lots'"

  # A host of the other CPU vendor, from its recorded CPU definition.
  local other=Intel file=$CPU/intel-core-i7-2600.xml
  if virsh_q capabilities | grep -q '<vendor>Intel</vendor>'; then other=AMD file=$CPU/amd-opteron-2356.xml; fi
  run_tool 4 vmmigrate "$vm" h2 --dest-cpu "$file"
  assert_one_error_line "h2 has an $other CPU and "
  assert_stderr_has "a running guest cannot move to another CPU vendor"
  nothing_on 2 "$vm"
  on_host 2 virsh_q net-destroy "$net" >/dev/null
}

@test "refusals of shut-off VMs: CPU (live comparison and recorded hosts), name and UUID clash, snapshots, a missing bridge or traffic filter, a saved state, a backing file that differs, pool space, a host that does not answer" {
  local vm vm2 uuid small
  vm=$(vm_name cpu)
  # A CPU this machine's TCG cannot give: libvirt's hypervisor comparison says so.
  run_tool 0 vmrun create "$vm" --template tiny --cpu-model Haswell-noTSX
  run_tool 4 vmmigrate "$vm" h2
  assert_one_error_line "h2 cannot run the guest's CPU (Haswell-noTSX)"
  # Against recorded hosts: feature by feature (an offline move may change vendor).
  run_tool 4 vmmigrate "$vm" h2 --dest-cpu "$CPU/intel-core-i7-2600.xml"
  assert_one_error_line "lacks 9 feature(s) that the guest's CPU (Haswell-noTSX) needs: 'avx2', 'bmi1', 'bmi2', 'erms', 'fma', 'fsgsbase', 'invpcid', 'movbe' and 'smep'"
  run_tool 4 vmmigrate "$vm" h2 --dest-cpu "$CPU/amd-opteron-2356.xml" --check -o json
  [ "$(jq -r '.[] | select(.check == "cpu") | .result' <<<"$output")" = failed ]
  [[ "$(jq -r '.[] | select(.check == "cpu") | .detail' <<<"$output")" == *"'sse4.1', 'sse4.2', 'ssse3'"* ]]
  [ "$(jq -r '.[] | select(.check == "cpu-vendor") | .result' <<<"$output")" = ok ]
  run_tool 0 vmrun undefine "$vm" --remove-storage

  # A name there already; a UUID there already (under another name).
  vm=$(vm_name clash)
  run_tool 0 vmrun create "$vm" --template tiny
  uuid=$(virsh_q domuuid "$vm")
  on_host 2 virsh_q define /dev/stdin >/dev/null <<EOF
<domain type='qemu'><name>$vm</name><memory>65536</memory><os><type>hvm</type></os></domain>
EOF
  run_tool 4 vmmigrate "$vm" h2
  assert_one_error_line "h2 has a VM named '$vm' already"
  vm2=$(vm_name other)
  on_host 3 virsh_q define /dev/stdin >/dev/null <<EOF
<domain type='qemu'><name>$vm2</name><uuid>$uuid</uuid><memory>65536</memory><os><type>hvm</type></os></domain>
EOF
  run_tool 4 vmmigrate "$vm" h3
  assert_one_error_line "h3 has a VM with the UUID of '$vm' already ('$vm2')"

  # Snapshots: libvirt moves no snapshot metadata.
  vm2=$(vm_name snap)
  run_tool 0 vmrun create "$vm2" --template tiny
  run_tool 0 vmsnap create "$vm2" s1
  run_tool 4 vmmigrate "$vm2" h2
  assert_one_error_line "'$vm2' has 1 snapshot(s) and 0 checkpoint(s)"

  # A bridge the destination lacks. The hosts here share one network namespace, so
  # a running VM's bridge is on each of them: a shut-off VM names one none has.
  vm2=$(vm_name nobr)
  run_tool 0 vmrun create "$vm2" --template tiny --network "bridge=vmknobr$$"
  run_tool 4 vmmigrate "$vm2" h2
  assert_one_error_line "h2 has no bridge 'vmknobr$$'"
  [ "$(vm_hosts_of "$vm2")" = h1 ]

  # A traffic filter the destination lacks (defined here after h2 started).
  local br flt=vmkt-flt-$$
  br=$(make_bridge)
  virsh_q nwfilter-define /dev/stdin >/dev/null <<EOF
<filter name='$flt' chain='root'><filterref filter='clean-traffic'/></filter>
EOF
  vm2=$(vm_name flt)
  run_tool 0 vmrun create "$vm2" --template tiny --network "bridge=$br" --filter="$flt"
  run_tool 4 vmmigrate "$vm2" h2
  assert_one_error_line "h2 has no traffic filter '$flt'"
  run_tool 0 vmrun undefine "$vm2" --remove-storage
  virsh_q nwfilter-undefine "$flt" >/dev/null
  # vmkit's inbound firewall (--allow-port) needs its base filter there; the move,
  # not the check, makes it there.
  vm2=$(vm_name inb)
  run_tool 0 vmrun create "$vm2" --template tiny --network "bridge=$br" --allow-port 22
  on_host 2 virsh_q nwfilter-undefine vmkit-inbound-clean-traffic >/dev/null 2>&1 || true
  refute on_host 2 virsh_q nwfilter-dumpxml vmkit-inbound-clean-traffic
  run_tool 0 vmmigrate "$vm2" h2 --check
  [[ "$output" == *"h2 has traffic filter 'clean-traffic', which the move's firewall stands on"* ]]
  refute on_host 2 virsh_q nwfilter-dumpxml vmkit-inbound-clean-traffic
  run_tool 0 vmmigrate "$vm2" h2
  on_host 2 virsh_q nwfilter-dumpxml vmkit-inbound-clean-traffic | grep -q 'TCP_PORTS'
  run_tool 0 vmrun -c h2 undefine "$vm2" --remove-storage
  on_host 2 virsh_q nwfilter-undefine vmkit-inbound-clean-traffic >/dev/null

  # A saved state (managed save): libvirt would not move it.
  vm2=$(vm_name saved)
  run_tool 0 vmrun create "$vm2" --template tiny --start
  virsh_q managedsave "$vm2" >/dev/null
  run_tool 4 vmmigrate "$vm2" h2
  assert_one_error_line "'$vm2' has a saved state (managed save) on "
  [ "$(vm_state_on 2 "$vm2")" = none ]

  # A backing file at one path on both hosts, of one format and size, but not one
  # image (h2's /var/lib/libvirt is its own): refused; once it is the same image,
  # only the top image is copied.
  local cmp=/var/lib/libvirt/images/${VMKIT_TEST_PREFIX}cmp
  local h2cmp=$POOL_DIR/h2/lib/libvirt/images/${VMKIT_TEST_PREFIX}cmp
  mkdir -p "$cmp" "$h2cmp"
  chmod 755 "$POOL_DIR/h2/lib/libvirt/images"
  virsh_q pool-create-as "${VMKIT_TEST_PREFIX}cmp" dir --target "$cmp" >/dev/null
  on_host 2 virsh_q pool-create-as "${VMKIT_TEST_PREFIX}cmp" dir --target "$cmp" >/dev/null
  qemu-img create -q -f qcow2 "$cmp/base.qcow2" 16M
  qemu-io -c 'write -P 0x11 0 64k' "$cmp/base.qcow2" >/dev/null
  qemu-img create -q -f qcow2 "$h2cmp/base.qcow2" 16M
  qemu-io -c 'write -P 0x22 0 64k' "$h2cmp/base.qcow2" >/dev/null
  qemu-img create -q -f qcow2 -b "$cmp/base.qcow2" -F qcow2 "$cmp/top.qcow2"
  virsh_q pool-refresh "${VMKIT_TEST_PREFIX}cmp" >/dev/null
  on_host 2 virsh_q pool-refresh "${VMKIT_TEST_PREFIX}cmp" >/dev/null
  vm2=$(vm_name chain)
  virsh_q define /dev/stdin >/dev/null <<EOF
<domain type='qemu'><name>$vm2</name><memory>65536</memory><os><type>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$cmp/top.qcow2'/>
<target dev='vda' bus='virtio'/></disk></devices></domain>
EOF
  run_tool 4 vmmigrate "$vm2" h2
  assert_one_error_line "disk vda: h2 has another image at $cmp/base.qcow2 (its content differs"
  [ ! -e "$h2cmp/top.qcow2" ]
  cp "$cmp/base.qcow2" "$h2cmp/base.qcow2"
  run_tool 0 vmmigrate "$vm2" h2 -q
  [ "$(vm_hosts_of "$vm2")" = h2 ]
  [ -f "$h2cmp/top.qcow2" ] && [ ! -e "$cmp/top.qcow2" ] && [ -f "$cmp/base.qcow2" ]
  [ "$(qemu-img info --output=json "$h2cmp/top.qcow2" | jq -r '.["backing-filename"]')" = "$cmp/base.qcow2" ]

  # Pool space: the same-named pool on h1 is a 64 KiB filesystem.
  small=${VMKIT_TEST_PREFIX}small
  mkdir -p "$POOL_DIR/small-h1" "$POOL_DIR/small-h2"
  chmod 755 "$POOL_DIR/small-h2"
  mount -t tmpfs -o size=64k tmpfs "$POOL_DIR/small-h1"
  virsh_q pool-create-as "$small" dir --target "$POOL_DIR/small-h1" >/dev/null
  on_host 2 virsh_q pool-create-as "$small" dir --target "$POOL_DIR/small-h2" >/dev/null
  vm2=$(vm_name space)
  run_tool 0 vmrun -c h2 create "$vm2" --template tiny --pool "$small"
  run_tool 4 vmmigrate -c h2 "$vm2" h1
  assert_one_error_line "not enough space in pool '$small' on h1"
  [ -z "$(ls "$POOL_DIR/small-h1")" ]
  [ "$(vm_state_on 2 "$vm2")" = "shut off" ]
  run_tool 0 vmrun -c h2 undefine "$vm2" --remove-storage
  on_host 2 virsh_q pool-destroy "$small" >/dev/null

  # A destination that does not answer.
  run_tool 4 vmmigrate "$vm" "qemu+unix:///system?socket=$POOL_DIR/no-such-sock"
  assert_one_error_line "cannot connect to qemu+unix:///system?socket=$POOL_DIR/no-such-sock"
  # And what is not a VM or not an argument.
  run_tool 3 vmmigrate "${vm}-none" h2
  assert_one_error_line "no such VM '${vm}-none'"
  run_tool 2 vmmigrate "$vm"
  [[ "${stderr_lines[0]}" == *"missing destination host for '$vm'"* ]]
  run_tool 2 vmmigrate "$vm" h2 --strategy fast
  [[ "${stderr_lines[0]}" == *"unknown strategy 'fast'"* ]]
}

@test "baseline: the CPU every host can run; a VM created with it boots and passes the CPU check of every recorded host" {
  local vm f
  run_tool 0 vmmigrate baseline -o json
  [ "$(jq -r '.hosts | length' <<<"$output")" = 3 ]
  [ -n "$(jq -r .model <<<"$output")" ]
  run_tool 0 vmmigrate baseline --include "$CPU/intel-core-i7-2600.xml" --include "$CPU/amd-opteron-2356.xml" --xml
  assert_one_error_line "the pool mixes CPU vendors ('AMD' and 'Intel')"
  f=$BATS_TEST_TMPDIR/pool-cpu.xml
  printf '%s\n' "$output" > "$f"
  xmllint --xpath '/cpu/model' "$f" >/dev/null
  vm=$(vm_name base)
  boot_vm "$vm" --cpu-model "$f"
  [ "$(virsh_q dumpxml "$vm" | xmllint --xpath 'string(/domain/cpu/model)' -)" = "$(xmllint --xpath 'string(/cpu/model)' "$f")" ]
  run_tool 0 vmrun stop "$vm"
  for f in "$CPU"/*.xml; do
    run_tool 0 vmmigrate --check "$vm" h2 --dest-cpu "$f" -o json
    [ "$(jq -r '.[] | select(.check == "cpu") | .result' <<<"$output")" = ok ]
  done
}

@test "a plan of three moves: memory adds up, so the third is refused while the others move, two at once" {
  local a b c hosts watcher
  a=$(vm_name pa) b=$(vm_name pb) c=$(vm_name pc)
  run_tool 0 vmrun create "$a" "$b" "$c" --template tiny --start
  for v in "$a" "$b" "$c"; do
    run_tool 0 vmrun wait "$v" --console-line 'vmkit-guest: up' --timeout 120
  done
  # h3 may give its VMs 400M in all: one 256M VM fits, two do not.
  hosts=$BATS_TEST_TMPDIR/hosts
  sed 's|^h3 .*|& memory=400M|' "$POOL_DIR/hosts" > "$hosts"
  # A watcher sees both moves' migration jobs on h1 at one instant: two at once.
  (
    for n in $(seq 1 600); do
      if virsh_q domjobinfo "$a" 2>/dev/null | grep -q '^Job type: *Unbounded' &&
        virsh_q domjobinfo "$b" 2>/dev/null | grep -q '^Job type: *Unbounded'; then
        touch "$BATS_TEST_TMPDIR/overlap"
        exit 0
      fi
      sleep 0.1
    done
  ) >/dev/null 2>&1 3>&- &
  watcher=$!
  run_tool 1 vmmigrate -H "$hosts" --plan - --parallel 2 -o json <<EOF || { echo "$output" >&3; false; }
# evacuate h1
$a h1 h2
$b h1 h3
$c h1 h3
EOF
  [ "$(jq -r --arg v "$a" '.[] | select(.vm == $v) | .result' <<<"$output")" = moved ]
  [ "$(jq -r --arg v "$b" '.[] | select(.vm == $v) | .result' <<<"$output")" = moved ]
  [ "$(jq -r --arg v "$c" '.[] | select(.vm == $v) | .result' <<<"$output")" = refused ]
  [[ "$(jq -r --arg v "$c" '.[] | select(.vm == $v) | .error' <<<"$output")" == *"not enough memory on h3"* ]]
  [ "$(jq -r --arg v "$a" '.[] | select(.vm == $v) | .finished_by' <<<"$output")" = precopy ]
  assert_stderr_has "1 of 3 moves failed"
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" || true
  [ -e "$BATS_TEST_TMPDIR/overlap" ]
  [ "$(vm_state_on 2 "$a")" = running ]
  [ "$(vm_state_on 3 "$b")" = running ]
  [ "$(vm_state_on 1 "$c")" = running ]
  [ "$(vm_state_on 3 "$c")" = none ]
  # A broken plan line is refused with its number, before anything moves.
  run_tool 2 vmmigrate --plan - <<EOF
$a h2 h1
$b h3
EOF
  assert_one_error_line "stdin:2: expected 'VM SOURCE DEST'"
  [ "$(vm_state_on 2 "$a")" = running ]
}
