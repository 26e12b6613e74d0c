#!/usr/bin/env bats
# vmbackup backup --tls: the backup export of a VM of another host served by its
# QEMU with TLS and read by libnbd with this test's own client certificate. The
# test makes a CA and certificates (t/helpers.bash make_test_pki) and gives them to
# h2 through its qemu.conf (backup_tls_x509_cert_dir; QEMU checks the client's
# certificate too, backup_tls_x509_verify defaulting to 1). On the wire (the
# loopback, where the export's TCP ports are read), a marker on the VM's disk is
# seen in a plain backup and never in an encrypted one.
#
# The VMs are never booted: their disks are written with qemu-io while they are
# shut off, then they are started paused (QEMU holds the disks, the guest never
# runs, so what a backup reads is exactly what was written).

load helpers

setup_file() {
  export PKI=$VMKIT_TEST_RUN/pki-$FILETAG
  make_test_pki "$PKI"
  pool_start 2 "backup_tls_x509_cert_dir = \"$PKI\""
  export VMKIT_PASSPHRASE="backups in the clear and not"
  export REPO=$BATS_FILE_TMPDIR/repo
  "$TOP/vmbackup/vmbackup" init "$REPO" --kdf-cost 10 2>/dev/null
  export MARKER=VMKITBACKUPMARKER
  # 4 MiB of it, for the VMs' data disks.
  export MARKFILE=$BATS_FILE_TMPDIR/marker
  yes "$MARKER" | head -c $((4 << 20)) > "$MARKFILE"
}
teardown_file() { pool_stop; }
teardown() { pool_teardown; }

# disk_of VM TARGET: the image of a disk of a VM of h2.
disk_of() { on_host 2 virsh_q domblklist "$1" --details | awk -v t="$2" '$3 == t {print $4}'; }

# marked_vm VM: a VM of h2 with a data disk (vdb) that holds the 4 MiB of marker
# from offset 1 MiB, started paused.
marked_vm() {
  run_tool 0 vmrun -c h2 create "$1" --template tiny --disk 16M
  qemu-io -f qcow2 -c "write -q -s $MARKFILE 1M 4M" "$(disk_of "$1" vdb)"
  on_host 2 virsh_q start "$1" --paused > /dev/null
}

# capture ARGS...: runs `vmbackup -c h2 backup ARGS...` (exit 0) while capturing
# the loopback traffic to and from the ports of backup exports (vmbackup/backup.c:
# 10809 and the 63 after it), and prints how many times the marker crossed in
# clear.
capture() {
  local cap=$BATS_TEST_TMPDIR/cap pid
  rm -f "$cap"
  # A buffer of 64 MiB: with the default 2 MiB the kernel drops some of the
  # loopback's 64 KiB frames.
  tcpdump -i lo -s 0 -B 65536 -U -w "$cap" "tcp portrange 10809-10872" 2> "$cap.err" &
  pid=$!
  # It says "tcpdump: listening on lo ..." once it captures.
  for _ in $(seq 1 50); do
    grep -q 'listening on' "$cap.err" && break
    sleep 0.1
  done
  run_tool 0 vmbackup -c h2 backup "$@" || { kill "$pid"; return 1; }
  # -U: each frame is written as it is read; once the file stops growing,
  # tcpdump has read the last ones (stopped earlier, it drops what it had yet to
  # read).
  local size=-1 now
  for _ in $(seq 1 20); do
    sleep 0.5
    now=$(stat -c %s "$cap")
    [ "$now" != "$size" ] || break
    size=$now
  done
  kill "$pid"
  wait "$pid" || true
  # Every frame was seen, and the export was there to see: more than the 4 MiB
  # of marker crossed.
  grep -q '^0 packets dropped by kernel' "$cap.err" || { cat "$cap.err" >&2; return 1; }
  [ "$(stat -c %s "$cap")" -gt $((4 << 20)) ] || { echo "captured only $(stat -c %s "$cap") bytes:" >&2; cat "$cap.err" >&2; return 1; }
  grep -a -c "$MARKER" "$cap" || true
}

# nothing_left VM: after a failed backup of a VM of h2 (paused, never backed up
# into REPO): still paused, no job on it, no checkpoint, no scratch file, no
# snapshot of it in the repository.
nothing_left() {
  [ "$(vm_state_on 2 "$1")" = paused ]
  on_host 2 virsh_q domjobinfo "$1" | grep -Eq '^Job type: +None'
  [ -z "$(on_host 2 virsh_q checkpoint-list "$1" --name)" ]
  [ -z "$(find "$VMKIT_STORAGE_DIR" -name "$1*scratch*")" ]
  run_tool 0 vmbackup list "$REPO" "$1" -o json
  [ "$(jq length <<< "$output")" -eq 0 ]
}

@test "--tls encrypts the backup export: the disk's marker crosses in clear without it and never with it; the snapshot restores the disks" {
  local vm snap n r=$BATS_TEST_TMPDIR/r
  vm=$(vm_name tls)
  marked_vm "$vm"
  n=$(capture "$REPO" "$vm")
  [ "$n" -gt 0 ]
  # Encrypted, with the client certificate of the test's CA; --full: the whole
  # disks again, not what changed since (nothing).
  export VMKIT_NBD_TLS_DIR=$PKI
  n=$(capture "$REPO" "$vm" --tls --full)
  [ "$n" -eq 0 ]
  run_tool 0 vmbackup list "$REPO" "$vm" -o json
  [ "$(jq length <<< "$output")" -eq 2 ]
  [ "$(jq -r '.[1].kind' <<< "$output")" = full ]
  snap=$(jq -r '.[1].snapshot' <<< "$output")
  # Both disks restored as they are on h2, the marker with them.
  mkdir "$r"
  run_tool 0 vmbackup restore "$REPO" "$snap" --to "$r"
  qemu-img compare -q -U -f raw -F qcow2 "$r/$vm.vdb.raw" "$(disk_of "$vm" vdb)"
  qemu-img compare -q -U -f raw -F qcow2 "$r/$vm.vda.raw" "$(disk_of "$vm" vda)"
  [ "$(dd if="$r/$vm.vdb.raw" bs=1M skip=1 count=1 2> /dev/null | head -c ${#MARKER})" = "$MARKER" ]
  # The VM as it was (paused), with the TLS backup's checkpoint alone.
  [ "$(vm_state_on 2 "$vm")" = paused ]
  on_host 2 virsh_q domjobinfo "$vm" | grep -Eq '^Job type: +None'
  [ "$(on_host 2 virsh_q checkpoint-list "$vm" --name | grep -c .)" -eq 1 ]
}

@test "--tls without certificates, on the VM's host or here: one error line, nothing left behind" {
  local vm rc=0 other=$BATS_TEST_TMPDIR/other-pki
  vm=$(vm_name nocerts)
  marked_vm "$vm"
  export VMKIT_NBD_TLS_DIR=$PKI
  # h2's QEMU without its certificate and key (it reads them at each backup):
  # the job cannot begin.
  mkdir "$BATS_TEST_TMPDIR/away"
  mv "$PKI"/server-*.pem "$BATS_TEST_TMPDIR/away/"
  run_tool 1 vmbackup -c h2 backup "$REPO" "$vm" --tls || rc=$?
  mv "$BATS_TEST_TMPDIR/away"/*.pem "$PKI/"
  [ "$rc" -eq 0 ]
  assert_one_error_line "cannot begin the backup of '$vm' with TLS on host2 "
  assert_stderr_has "server-cert.pem"
  nothing_left "$vm"
  # No folder of client certificates here: refused before anything is done.
  VMKIT_NBD_TLS_DIR=$BATS_TEST_TMPDIR/none run_tool 3 vmbackup -c h2 backup "$REPO" "$vm" --tls
  assert_one_error_line "cannot read the client's TLS file '$BATS_TEST_TMPDIR/none/ca-cert.pem'"
  nothing_left "$vm"
  # Certificates of another CA here: the handshake fails, the job is ended.
  make_test_pki "$other"
  VMKIT_NBD_TLS_DIR=$other run_tool 1 vmbackup -c h2 backup "$REPO" "$vm" --tls
  assert_one_error_line "cannot read disk vda of VM '$vm' from its backup export with TLS"
  nothing_left "$vm"
  # This machine's own VMs are exported on a Unix socket: --tls is a usage error
  # (its one line, then vmkit(7)'s "Try 'vmbackup backup --help' ...").
  run_tool 2 vmbackup -c h1 backup "$REPO" "$vm" --tls
  [ "${stderr_lines[0]}" = "vmbackup: --tls is for a VM of another host (this one's export is a Unix socket)" ]
  [ "${#stderr_lines[@]}" -eq 2 ]
}
