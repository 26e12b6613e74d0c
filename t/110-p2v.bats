#!/usr/bin/env bats
# p2v-agent and p2v-convert, offline: a "server" disk built here (there is no
# physical server: HOST.md) with an MBR, bytes in the gap after it where a boot
# loader lives, an ext4 root holding files and the garbage of a deleted file, a
# swap partition, an ext4 data partition and unpartitioned space. The agent reads
# the image file as a disk, the converter writes it through qemu-nbd into the
# suite's pool, makes the swap again through libguestfs and defines the VM; a
# second, namespaced host gets one built here and uploaded. Streams that are
# corrupt, truncated, repeated or of another format leave nothing behind.

load helpers

# build_server_disk IMG: 256 MiB; partitions 1 (ext4 root, 120M), 2 (swap, 32M),
# 3 (ext4 data, 64M), then 39M unpartitioned.
build_server_disk() {
  local img=$1 d=$BATS_FILE_TMPDIR loop
  truncate -s 256M "$img"
  printf 'label: dos\n,120M,L,*\n,32M,S\n,64M,L\n' | sfdisk -q "$img"
  # What a boot loader would hold between the MBR and the first partition.
  head -c 65536 /dev/urandom | dd of="$img" bs=512 seek=1 conv=notrunc status=none
  mkdir -p "$d/root/etc" "$d/root/usr" "$d/data"
  cp -r /usr/share/doc/bash /usr/share/doc/coreutils "$d/root/usr/"
  printf '/dev/sda1 / ext4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n' > "$d/root/etc/fstab"
  head -c 3000000 /dev/urandom > "$d/data/records"
  mkfs.ext4 -q -F -E offset=$((1 << 20)) -d "$d/root" "$img" 120M
  mkfs.ext4 -q -F -E offset=$(((1 + 120 + 32) << 20)) -L data -d "$d/data" "$img" 64M
  # A deleted file's garbage in the root's free blocks: never sent.
  loop=$(losetup -f --show -o $((1 << 20)) --sizelimit $((120 << 20)) "$img")
  mkdir -p "$d/mnt"
  mount "$loop" "$d/mnt"
  head -c $((24 << 20)) /dev/urandom > "$d/mnt/deleted"
  sync
  rm "$d/mnt/deleted"
  umount "$d/mnt"
  losetup -d "$loop"
  loop=$(losetup -f --show -o $(((1 + 120) << 20)) --sizelimit $((32 << 20)) "$img")
  mkswap -q -L srvswap -U 5c0f0a1e-1111-4222-8333-444455556666 "$loop"
  losetup -d "$loop"
}

setup_file() {
  export SRV=$BATS_FILE_TMPDIR/server.img
  build_server_disk "$SRV"
  # The stream, kept for the tests that damage it.
  "$TOP/p2v-agent/p2v-agent" send --disk "$SRV" -q > "$BATS_FILE_TMPDIR/good.p2v"
  # A second host, with a pool of its own, for the last test.
  pool_start 2
  pool_local_pools
}
teardown_file() { pool_stop; }
teardown() { pool_teardown; }

# part_of IMG START_MIB SIZE_MIB: a loop device on a partition of an image.
part_of() { losetup -f --show -r -o $(($2 << 20)) --sizelimit $(($3 << 20)) "$1"; }

# nothing_left NAME: no VM and no volume of that name.
nothing_left() {
  local n=$1
  run virsh_q dominfo "$n"
  [ "$status" -ne 0 ] || { echo "VM $n is defined" >&2; return 1; }
  virsh_q pool-refresh "$VMKIT_POOL" >/dev/null
  if virsh_q vol-list "$VMKIT_POOL" | grep -q "$n"; then
    echo "volumes of $n are left:" >&2
    virsh_q vol-list "$VMKIT_POOL" >&2
    return 1
  fi
  ! ls "$VMKIT_STORAGE_DIR" | grep -q "$n"
}

@test "inventory: the disk's partitions and file systems, the host's NICs, as JSON" {
  run_tool 0 p2v-agent inventory --disk "$SRV"
  [ "$(jq -r '.disks[0].table' <<< "$output")" = dos ]
  [ "$(jq -r '.disks[0].size' <<< "$output")" -eq $((256 << 20)) ]
  [ "$(jq -r '[.disks[0].partitions[].fstype] | join(",")' <<< "$output")" = "ext4,swap,ext4" ]
  [ "$(jq -r '.disks[0].partitions[1].uuid' <<< "$output")" = 5c0f0a1e-1111-4222-8333-444455556666 ]
  [ "$(jq -r '.disks[0].partitions[2].label' <<< "$output")" = data ]
  [ "$(jq -r '.disks[0].partitions[0].start' <<< "$output")" -eq $((1 << 20)) ]
  [ "$(jq -r '.boot' <<< "$output")" = bios ]
  [ "$(jq -r '.cpu.threads' <<< "$output")" -eq "$(nproc)" ]
  [ "$(jq -r '.os.id' <<< "$output")" = debian ]
  # Every NIC listed has the MAC of the kernel's own view.
  local name mac
  while read -r name mac; do
    [ "$mac" = "$(cat "/sys/class/net/$name/address")" ]
  done < <(jq -r '.nics[] | "\(.name) \(.mac)"' <<< "$output")
}

@test "send and convert: the VM defined, the file systems and the boot gap identical, free blocks and swap not sent" {
  local vm=$(vm_name srv) vol out loop
  run --separate-stderr bash -c "'$TOP/p2v-agent/p2v-agent' send --disk '$SRV' | '$TOP/p2v-convert/p2v-convert' --name '$vm' --memory 256M -o json"
  [ "$status" -eq 0 ] || { echo "$stderr" >&2; return 1; }
  vol=$(jq -r '.disks[0].volume' <<< "$output")
  [ "$vol" = "$VMKIT_STORAGE_DIR/$vm.qcow2" ]
  [ "$(jq -r '.disks[0].swap_areas' <<< "$output")" -eq 1 ]
  # The agent said what it skipped; the stream is smaller than the deleted file alone.
  [[ "$stderr" == *"p2v-agent: sent 1 disk in 1 pass"*"swap"* ]]
  [ "$(jq -r '.stream_bytes' <<< "$output")" -lt $((24 << 20)) ]
  # The definition: memory as asked, vCPUs from the server, the disk, an empty
  # CD-ROM drive, the server's MACs.
  virsh_q dumpxml "$vm" > "$BATS_TEST_TMPDIR/vm.xml"
  [ "$(xmllint --xpath 'string(/domain/memory)' "$BATS_TEST_TMPDIR/vm.xml")" -eq 262144 ]
  [ "$(xmllint --xpath 'string(/domain/vcpu)' "$BATS_TEST_TMPDIR/vm.xml")" -eq "$(nproc)" ]
  [ "$(xmllint --xpath "string(/domain/devices/disk[@device='disk']/source/@file)" "$BATS_TEST_TMPDIR/vm.xml")" = "$vol" ]
  [ "$(xmllint --xpath "count(/domain/devices/disk[@device='cdrom'])" "$BATS_TEST_TMPDIR/vm.xml")" -eq 1 ]
  diff <(xmllint --xpath '/domain/devices/interface/mac/@address' "$BATS_TEST_TMPDIR/vm.xml" 2>/dev/null |
    grep -o '[0-9a-f:]\{17\}' | sort) \
    <("$TOP/p2v-agent/p2v-agent" inventory --disk "$SRV" | jq -r '.nics[].mac' | sort)
  # The disk, as raw bytes.
  out=$BATS_TEST_TMPDIR/out.raw
  qemu-img convert -O raw "$vol" "$out"
  [ "$(stat -c %s "$out")" -eq $((256 << 20)) ]
  # The MBR and the boot loader's gap: the same bytes.
  cmp -n $((1 << 20)) "$SRV" "$out"
  # Both file systems clean and holding the same files.
  local p start size
  for p in "1 120" "153 64"; do
    read -r start size <<< "$p"
    loop=$(part_of "$out" "$start" "$size")
    e2fsck -fn "$loop" >/dev/null 2>&1 || { losetup -d "$loop"; return 1; }
    losetup -d "$loop"
  done
  mkdir "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b"
  mount -o ro,loop,offset=$((1 << 20)),sizelimit=$((120 << 20)) "$SRV" "$BATS_TEST_TMPDIR/a"
  mount -o ro,loop,offset=$((1 << 20)),sizelimit=$((120 << 20)) "$out" "$BATS_TEST_TMPDIR/b"
  run diff -r "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b"
  umount "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b"
  [ "$status" -eq 0 ]
  cmp <(dd if="$SRV" bs=1M skip=153 count=64 status=none) <(dd if="$out" bs=1M skip=153 count=64 status=none)
  # The deleted file's garbage did not travel: the root's bytes differ, its files do not.
  ! cmp -s <(dd if="$SRV" bs=1M skip=1 count=120 status=none) <(dd if="$out" bs=1M skip=1 count=120 status=none)
  # The swap area made again, with its UUID and label.
  [ "$(blkid -p -o value -s UUID -O $((121 << 20)) "$out")" = 5c0f0a1e-1111-4222-8333-444455556666 ]
  [ "$(blkid -p -o value -s LABEL -O $((121 << 20)) "$out")" = srvswap ]
  [ "$(blkid -p -o value -s TYPE -O $((121 << 20)) "$out")" = swap ]
  # Unpartitioned zeros stay holes in the qcow2.
  [ "$(qemu-img map --output=json "$vol" | jq --argjson lim $((217 << 20)) '[.[] | select(.data and .start >= $lim)] | length')" -eq 0 ]

  # The same name again: refused, the VM and its volume untouched.
  local before=$(md5sum < "$vol")
  run_tool 4 p2v-convert --name "$vm" -i "$BATS_FILE_TMPDIR/good.p2v"
  assert_one_error_line "a VM named '$vm' exists"
  [ "$(md5sum < "$vol")" = "$before" ]
}

@test "refused streams: corrupt, truncated, repeated, not a stream, a newer format; nothing is left" {
  local vm=$(vm_name bad) good=$BATS_FILE_TMPDIR/good.p2v f=$BATS_TEST_TMPDIR/s size
  size=$(stat -c %s "$good")
  # A byte flipped halfway.
  cp "$good" "$f"
  printf '\x5a' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc status=none
  cmp -s "$good" "$f" && printf '\x5b' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc status=none
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "corrupt: its checksum does not match"
  nothing_left "$vm"
  # Cut halfway.
  head -c $((size / 2)) "$good" > "$f"
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "truncated"
  nothing_left "$vm"
  # Cut exactly before the trailer record: every record whole, no end.
  # (The trailer is the last record: its header, a short JSON, its tag.)
  head -c $((size - 120)) "$good" > "$f"
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "truncated"
  nothing_left "$vm"
  # The whole stream twice (a replay behind it).
  cat "$good" "$good" > "$f"
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "goes on after its trailer"
  nothing_left "$vm"
  # Not a stream, and an empty one (an agent that failed before it began).
  head -c 4096 /dev/urandom > "$f"
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "not a p2v stream"
  : > "$f"
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "empty"
  # A newer format.
  cp "$good" "$f"
  printf '\x02' | dd of="$f" bs=1 seek=8 conv=notrunc status=none
  run_tool 6 p2v-convert --name "$vm" -i "$f"
  assert_stderr_has "newer p2v-agent"
  nothing_left "$vm"
  # Through a pipe: an agent that cannot read its disk sends nothing.
  run --separate-stderr bash -c "'$TOP/p2v-agent/p2v-agent' send --disk /nonexistent/sdz | '$TOP/p2v-convert/p2v-convert' --name '$vm'; echo \"\${PIPESTATUS[*]}\""
  [ "${lines[-1]}" = "3 6" ]
  nothing_left "$vm"
}

@test "usage: a bad block size, a disk named twice, a name that cannot be a VM's" {
  run_tool 2 p2v-agent send --disk "$SRV" --block-size 3000
  run_tool 2 p2v-agent send --disk "$SRV" --disk "$SRV"
  run_tool 3 p2v-agent inventory --disk /nonexistent/sdz
  run_tool 2 p2v-convert --name 'a/b' -i "$BATS_FILE_TMPDIR/good.p2v"
  run_tool 2 p2v-convert --memory 1K -i "$BATS_FILE_TMPDIR/good.p2v"
  run_tool 3 p2v-convert -i /nonexistent/stream
}

@test "another host: the disk built here and uploaded into that host's own pool, the VM defined there" {
  local vm=$(vm_name far) vol out
  run --separate-stderr bash -c "'$TOP/p2v-agent/p2v-agent' send --disk '$SRV' --block-size 256K | VMKIT_POOL='$LOCAL_POOL' '$TOP/p2v-convert/p2v-convert' -c h2 --name '$vm' --memory 256M -o json"
  [ "$status" -eq 0 ] || { echo "$stderr" >&2; return 1; }
  vol=$(jq -r '.disks[0].volume' <<< "$output")
  [ "$vol" = "$POOL_DIR/local-h2/$vm.qcow2" ]
  [ "$(vm_state_on 2 "$vm")" = "shut off" ]
  [ "$(vm_hosts_of "$vm")" = h2 ]
  out=$BATS_TEST_TMPDIR/far.raw
  qemu-img convert -O raw "$vol" "$out"
  cmp -n $((1 << 20)) "$SRV" "$out"
  cmp <(dd if="$SRV" bs=1M skip=153 count=64 status=none) <(dd if="$out" bs=1M skip=153 count=64 status=none)
  [ "$(blkid -p -o value -s UUID -O $((121 << 20)) "$out")" = 5c0f0a1e-1111-4222-8333-444455556666 ]
  # Nothing left in this host's pool, nor in a scratch folder here.
  ! ls "$VMKIT_STORAGE_DIR" | grep -q "$vm"
  ! ls "${TMPDIR:-/var/tmp}" | grep -q "vmkit-p2v.$"
}

@test "kill -9 at random instants of a conversion: the next run with the name rolls it back and converts" {
  local vm=$(vm_name kill) round t vol out
  for round in 1 2 3 4; do
    # 0 to 6 s: the stream, the writes, libguestfs making the swap, the define.
    t=$(( (RANDOM % 60) ))
    "$TOP/p2v-convert/p2v-convert" --name "$vm" --memory 256M -q -i "$BATS_FILE_TMPDIR/good.p2v" 2>/dev/null &
    local pid=$!
    sleep "$((t / 10)).$((t % 10))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Its qemu-nbd ends with its only client; libguestfs's appliance with its parent.
    local k
    for k in $(seq 50); do pgrep -f "$VMKIT_STORAGE_DIR/$vm" >/dev/null || break; sleep 0.2; done
    ! pgrep -af "$VMKIT_STORAGE_DIR/$vm"
    # The next run finishes the job whatever the kill left.
    run_tool 0 p2v-convert --name "$vm" --memory 256M -i "$BATS_FILE_TMPDIR/good.p2v"
    vol=$VMKIT_STORAGE_DIR/$vm.qcow2
    out=$BATS_TEST_TMPDIR/k.raw
    qemu-img convert -O raw "$vol" "$out"
    cmp -n $((1 << 20)) "$SRV" "$out"
    cmp <(dd if="$SRV" bs=1M skip=153 count=64 status=none) <(dd if="$out" bs=1M skip=153 count=64 status=none)
    [ "$(blkid -p -o value -s UUID -O $((121 << 20)) "$out")" = 5c0f0a1e-1111-4222-8333-444455556666 ]
    # No record left on it.
    ! virsh_q dumpxml "$vm" | grep -q 'vmkit.dev/xmlns/journal'
    rm -f "$out"
    # vmrun removes it with its disk, for the next round.
    run_tool 0 vmrun undefine "$vm" --remove-storage
    nothing_left "$vm"
  done
}
