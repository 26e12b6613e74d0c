#!/usr/bin/env bats
# P2V of a real Debian 12 server, offline: the "physical server" of scripts/mkserver
# (built once per machine and cached: an OS disk with root, swap and free space, a
# data disk, an initramfs without virtio drivers, fstab and root= by /dev/sdX, no
# serial console, NIC enp3s0, a service bound to dev-sdb.device). p2v-agent reads
# its two disk images as a rescue system would read the disks, naming them as one
# booted from a stick would (sdb and sdc: the stick is sda); p2v-convert adapts
# the guest and proves that it boots under TCG; without the adaptation it does not.
# Two TCG boots (about 1 and 1.5 minutes) and four libguestfs launches.

load helpers

setup_file() {
  export SRVD=${VMKIT_CACHE:-/var/cache/vmkit}/server12
  "$TOP/scripts/mkserver" "$SRVD" >&2
  export VM=${VMKIT_TEST_PREFIX}112-db1 RAW=${VMKIT_TEST_PREFIX}112-raw
  mkdir -p "$BATS_FILE_TMPDIR/dev"
  ln -sf "$SRVD/sda.raw" "$BATS_FILE_TMPDIR/dev/sdb"
  ln -sf "$SRVD/sdb.raw" "$BATS_FILE_TMPDIR/dev/sdc"
  "$TOP/p2v-agent/p2v-agent" send -q --disk "$BATS_FILE_TMPDIR/dev/sdb" --disk "$BATS_FILE_TMPDIR/dev/sdc" \
    > "$BATS_FILE_TMPDIR/srv.p2v"
  # The NICs the agent saw (offline: the rescue system's, here this machine's).
  "$TOP/p2v-agent/p2v-agent" inventory --disk "$SRVD/sda.raw" | jq -c '[.nics[] | {name, mac}]' > "$BATS_FILE_TMPDIR/nics"
}
teardown() { :; }
teardown_file() { common_teardown_file; }

# change TEXT: the conversion's report lists a change containing TEXT.
change() {
  jq -e --arg t "$1" '[.changes[] | select(contains($t))] | length > 0' "$BATS_FILE_TMPDIR/report.json" >/dev/null || {
    echo "no change says '$1'; the changes:" >&2
    jq -r '.changes[]' "$BATS_FILE_TMPDIR/report.json" >&2
    return 1
  }
}

@test "a Debian 12 server converted offline: adapted, its OS and data disks told apart, booted to its login prompt" {
  local mac
  mac=$(jq -r '.[0].mac' "$BATS_FILE_TMPDIR/nics")
  # Offline, the inventory describes the system the agent ran on (here this machine):
  # the VM's size is given.
  run_tool 0 p2v-convert -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$VM" --network "$mac=user" \
    --memory 1G --vcpus 1 --boot-test -o json
  echo "$output" > "$BATS_FILE_TMPDIR/report.json"
  local r=$BATS_FILE_TMPDIR/report.json
  [[ "$(jq -r .os "$r")" == "debian 12."* ]]
  [ "$(jq -r '.disks[0].role' "$r")" = os ]
  [ "$(jq -r '.disks[0].mounts | join(",")' "$r")" = / ]
  [ "$(jq -r '.disks[1].role' "$r")" = data ]
  [ "$(jq -r '.disks[1].mounts | join(",")' "$r")" = /srv/data ]
  [ "$(jq -r .adapted "$r")" = true ]
  [ "$(jq -r .boot_test.booted "$r")" = true ]
  [ "$(jq -r .boot_test.proof "$r")" = "login prompt on the serial console" ]
  # Every change the adaptation made, listed.
  change "/etc/fstab: /dev/sda1 (/) by UUID="
  change "/etc/fstab: /dev/sda2 (none) by UUID="
  change "/etc/fstab: /dev/sdb1 (/srv/data) by UUID="
  change "/etc/initramfs-tools/conf.d/resume: RESUME=/dev/sda2 by UUID="
  change "/etc/initramfs-tools/modules: 'virtio_pci', 'virtio_blk'"
  change "update-initramfs -u -k all"
  # Debian has /etc/default/grub.d: the additions go in a file of it sourced last.
  change "/etc/default/grub.d/zz-p2v-convert.cfg: GRUB_DISABLE_LINUX_UUID=false added"
  change "console=ttyS0,115200"
  change "update-grub"
  change "disk-health.service disabled"
  # The swap area made again with its UUID; the report on stderr names the disks.
  [ "$(jq -r '.disks[0].swap_areas' "$r")" -eq 1 ]
  grep -q "disk sdc: a data disk, holds '/srv/data'" <<< "$stderr"
  # The rescue system's names (sdb, sdc) are not the server's (sda, sdb): its fstab
  # fits the disks' order, and the names were mapped so.
  assert_stderr_has "/dev names mapped by order"
  # A commented-out serial console is no serial console; the command line is
  # extended after everything that sets it.
  change 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX console=tty0 console=ttyS0,115200" added'
  change 'GRUB_TERMINAL="console serial" added'
  # The boot test's overlays are gone, the volumes stay.
  virsh_q pool-refresh "$VMKIT_POOL" >/dev/null
  ! virsh_q vol-list "$VMKIT_POOL" | grep -q boottest
  [ -s "$VMKIT_STORAGE_DIR/$VM.qcow2" ] && [ -s "$VMKIT_STORAGE_DIR/$VM-disk1.qcow2" ]
  run virsh_q dominfo "$VM-boottest"
  [ "$status" -ne 0 ]
}

@test "the converted guest: fstab and root= by UUID, virtio in its initramfs, a serial console, its NIC pinned" {
  [ -s "$BATS_FILE_TMPDIR/report.json" ] || skip "the conversion test did not run"
  local out kver
  out=$(LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg guestfish --ro \
    -a "$VMKIT_STORAGE_DIR/$VM.qcow2" -a "$VMKIT_STORAGE_DIR/$VM-disk1.qcow2" -i <<'EOF'
echo ---fstab
cat /etc/fstab
echo ---grub
sh "grep -E '^[[:space:]]*linux' /boot/grub/grub.cfg | head -n 1"
cat /etc/default/grub
cat /etc/default/grub.d/zz-p2v-convert.cfg
cat /etc/initramfs-tools/conf.d/resume
echo ---initrd
sh "lsinitramfs /boot/initrd.img-$(ls /lib/modules | sort -V | tail -n 1) | grep -E 'virtio_(blk|pci|net)[.]ko' | sort"
echo ---links
sh "cat /etc/systemd/network/*.link 2>/dev/null; true"
echo ---units
sh "ls /etc/systemd/system/multi-user.target.wants/"
echo ---end
EOF
)
  echo "$out"
  local fstab grub initrd links units
  fstab=$(sed -n '/^---fstab$/,/^---grub$/p' <<< "$out")
  grub=$(sed -n '/^---grub$/,/^---initrd$/p' <<< "$out")
  initrd=$(sed -n '/^---initrd$/,/^---links$/p' <<< "$out")
  links=$(sed -n '/^---links$/,/^---units$/p' <<< "$out")
  units=$(sed -n '/^---units$/,/^---end$/p' <<< "$out")
  ! grep -q '^/dev/sd' <<< "$fstab"
  [ "$(grep -c '^UUID=' <<< "$fstab")" -eq 3 ]
  grep -q 'root=UUID=' <<< "$grub"
  grep -q 'console=ttyS0,115200' <<< "$grub"
  # The line the installer wrote, its comment and blanks kept; RESUME still quoted.
  grep -qF 'GRUB_CMDLINE_LINUX="net.ifnames=1"   # set by the installer' <<< "$grub"
  grep -qE '^RESUME="UUID=[0-9a-f-]+"$' <<< "$grub"
  grep -q "^GRUB_DISABLE_LINUX_UUID=false" <<< "$grub"
  grep -q virtio_blk.ko <<< "$initrd"
  grep -q virtio_pci.ko <<< "$initrd"
  ! grep -q disk-health <<< "$units"
  # The VM: both disks on virtio, the server's MACs, a CD-ROM, a serial console.
  local xml
  xml=$(virsh_q dumpxml "$VM")
  [ "$(xmllint --xpath 'count(/domain/devices/disk[@device="disk"]/target[@bus="virtio"])' - <<< "$xml")" -eq 2 ]
  [ "$(xmllint --xpath 'count(/domain/devices/disk[@device="cdrom"])' - <<< "$xml")" -eq 1 ]
  [ "$(xmllint --xpath 'count(/domain/devices/serial)' - <<< "$xml")" -eq 1 ]
  [ "$(xmllint --xpath 'string(/domain/devices/interface[1]/mac/@address)' - <<< "$xml")" = \
    "$(jq -r '.[0].mac' "$BATS_FILE_TMPDIR/nics")" ]
  # No journal record is left in the definition.
  ! grep -q vmkitjournal <<< "$xml"
  # Offline, the inventory has this machine's NICs (the rescue system's): with one,
  # the only NIC on each side is enp3s0.
  local nn
  nn=$(jq length "$BATS_FILE_TMPDIR/nics")
  [ "$nn" -eq 1 ] || skip "this machine, the rescue system here, has $nn NICs: offline, which was enp3s0 is not known"
  grep -q "Name=enp3s0" <<< "$links"
  grep -qi "MACAddress=$(jq -r '.[0].mac' "$BATS_FILE_TMPDIR/nics")" <<< "$links"
}

@test "not adapted (--no-adapt), the server's guest does not boot on virtio: exit 6, the VM kept, its console shown" {
  run_tool 6 p2v-convert -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$RAW" --memory 1G --vcpus 1 \
    --no-adapt --boot-test --boot-timeout 100
  assert_stderr_has "no login prompt and no guest agent after 100 s"
  assert_stderr_has "did not pass its boot test"
  virsh_q dominfo "$RAW" >/dev/null
  ! virsh_q dumpxml "$RAW" | grep -q vmkitjournal
  virsh_q pool-refresh "$VMKIT_POOL" >/dev/null
  ! virsh_q vol-list "$VMKIT_POOL" | grep -q boottest
}

@test "--network: a MAC the server does not have, or a bad NET, is a usage error and leaves nothing" {
  run_tool 2 p2v-convert -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$VM-x" --network 02:00:00:00:00:01=user
  assert_one_error_line
  assert_stderr_has "the server has no NIC with MAC 02:00:00:00:00:01"
  run_tool 2 p2v-convert -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$VM-x" --network 02:00:00:00:00:01=bridge=
  assert_stderr_has "invalid --network"
  run_tool 2 p2v-convert -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$VM-x" --network nomac
  run_tool 2 p2v-convert -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$VM-x" --boot-timeout 0
  run virsh_q dominfo "$VM-x"
  [ "$status" -ne 0 ]
  ! ls "$VMKIT_STORAGE_DIR" | grep -q -- "$VM-x"
}

@test "kill -9 during the adaptation or the boot test: no transient VM stays, and vmrun undefine leaves nothing" {
  local vm=${VMKIT_TEST_PREFIX}112-kill t pid k anchor
  # 0 to 150 s after libguestfs starts (the adaptation, 60 to 90 s, then the boot
  # test), or 0 to 10 s after the boot test starts (its overlays, its domain).
  if [ "${P2V_KILL_ANCHOR:-$((RANDOM % 2))}" = 1 ]; then
    anchor='boot test: starting' t=${P2V_KILL_AT:-$((RANDOM % 10))}
  else
    anchor='looking inside' t=${P2V_KILL_AT:-$((RANDOM % 150))}
  fi
  "$TOP/p2v-convert/p2v-convert" -i "$BATS_FILE_TMPDIR/srv.p2v" --name "$vm" --memory 1G --vcpus 1 --boot-test \
    2> "$BATS_TEST_TMPDIR/err" &
  pid=$!
  for k in $(seq 2000); do grep -q "$anchor" "$BATS_TEST_TMPDIR/err" && break; sleep 0.2; done
  sleep "$t"
  echo "killed $t s after '$anchor'; its messages:"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  cat "$BATS_TEST_TMPDIR/err"
  echo "# killed $t s after '$anchor', after: $(tail -n 1 "$BATS_TEST_TMPDIR/err")" >&3
  # The boot test's domain dies with the connection (libvirt's autodestroy).
  for k in $(seq 50); do virsh_q dominfo "$vm-boottest" >/dev/null 2>&1 || break; sleep 0.2; done
  run virsh_q dominfo "$vm-boottest"
  [ "$status" -ne 0 ]
  for k in $(seq 50); do pgrep -f "$VMKIT_STORAGE_DIR/$vm" >/dev/null || break; sleep 0.2; done
  ! pgrep -af "$VMKIT_STORAGE_DIR/$vm"
  # Rolled back (a record left) or removed (the run had finished): nothing of it stays,
  # the boot test's overlays neither.
  run --separate-stderr "$TOP/vmrun/vmrun" undefine "$vm" --remove-storage
  echo "vmrun undefine: exit $status: $stderr"
  # 3: the record rolled back, the VM went with it.
  [ "$status" -eq 0 ] || { [ "$status" -eq 3 ] && grep -q 'rolled back the create' <<< "$stderr"; }
  virsh_q pool-refresh "$VMKIT_POOL" >/dev/null
  ! ls "$VMKIT_STORAGE_DIR" | grep -q "$vm"
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
}
