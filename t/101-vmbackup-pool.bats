#!/usr/bin/env bats
# vmbackup with a VM of another host: a namespaced libvirt daemon (h2) whose
# QEMU exports the backup over TCP (libvirt picks the port), read with libnbd from
# here; scratch files made and removed on that host through its storage pool;
# restore --as uploads the disk to that host through a libvirt stream.

load helpers

setup_file() {
  pool_start 2
  pool_local_pools
  export VMKIT_PASSPHRASE="a pool of hosts"
  export REPO=$BATS_FILE_TMPDIR/repo
  "$TOP/vmbackup/vmbackup" init "$REPO" --kdf-cost 10 2>/dev/null
}
teardown_file() { pool_stop; }
teardown() { pool_teardown; }

json_of() { jq -r ".[0].$1" <<< "$output"; }

@test "a running VM of another host: full and incremental over TCP, restored here and as a VM there" {
  local vm new snap img
  vm=$(vm_name far)
  new=$(vm_name back)
  # The VM's disk in h2's own pool, at a folder this host's pools do not have.
  VMKIT_POOL=$LOCAL_POOL run_tool 0 vmrun -c h2 create "$vm" --template tiny --start
  run_tool 0 vmrun -c h2 wait "$vm" --agent --timeout 120
  run_tool 0 vmbackup -c h2 backup "$REPO" "$vm" -o json
  [ "$(json_of kind)" = full ]
  on_host 2 guest_exec "$vm" 'dd if=/dev/urandom of=/mnt/data/far bs=1M count=2 2>/dev/null; sync; md5sum /mnt/data/far' > "$BATS_TEST_TMPDIR/far.md5"
  run_tool 0 vmbackup -c h2 backup "$REPO" "$vm" --quiesce -o json
  [ "$(json_of kind)" = incremental ]
  [ "$(json_of bytes_read)" -lt $((8 << 20)) ]
  snap=$(json_of snapshot)
  # Nothing left on that host: no scratch file in its pool, no job, one checkpoint.
  [ -z "$(ls "$POOL_DIR/local-h2" | grep scratch)" ]
  run on_host 2 virsh_q checkpoint-list "$vm" --name
  [ "$(grep -c vmbackup- <<< "$output")" -eq 1 ]
  # Restored here: the file the guest wrote.
  mkdir "$BATS_TEST_TMPDIR/r"
  run_tool 0 vmbackup restore "$REPO" "$snap" --to "$BATS_TEST_TMPDIR/r"
  img=$BATS_TEST_TMPDIR/r/$vm.vda.raw
  e2fsck -fn "$img"
  [ "$(debugfs -R "cat /data/far" "$img" 2>/dev/null | md5sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$BATS_TEST_TMPDIR/far.md5")" ]
  # Restored as a new VM on h2: its disk uploaded into h2's own pool.
  run_tool 0 vmbackup restore "$REPO" "$snap" --as "$new" --on h2 --pool "$LOCAL_POOL" --start
  [ -f "$POOL_DIR/local-h2/$new.qcow2" ]
  [ ! -e "$POOL_DIR/local-h1/$new.qcow2" ]
  run_tool 0 vmrun -c h2 wait "$new" --agent --timeout 120
  [ "$(on_host 2 guest_exec "$new" 'md5sum /mnt/data/far' | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$BATS_TEST_TMPDIR/far.md5")" ]
  # --tls needs certificates on both sides; here it is refused for this host's VMs.
  run_tool 2 vmbackup backup "$REPO" "$vm" --tls
}
