#!/usr/bin/env bats
# vmbackup against the real thing: libvirt's backup API in pull mode, checkpoints
# with persistent dirty bitmaps in qcow2, libnbd reading the export, TCG guests
# that write while they are backed up. Restores are compared bit for bit, or,
# for a running guest's point in time, checked with e2fsck and the files the
# guest wrote.

load helpers

setup_file() {
  export VMKIT_PASSPHRASE="correct horse battery staple"
  export REPO=$BATS_FILE_TMPDIR/repo
  # The lowest scrypt cost: every run opens the key.
  "$TOP/vmbackup/vmbackup" init "$REPO" --kdf-cost 10 2>/dev/null
  VM=$(file_vm_name run)
  export VM
  "$TOP/vmrun/vmrun" create "$VM" --template tiny --start >/dev/null 2>&1
  "$TOP/vmrun/vmrun" wait "$VM" --console-line 'vmkit-guest: up' --timeout 120 >/dev/null 2>&1
  "$TOP/vmrun/vmrun" wait "$VM" --agent --timeout 60 >/dev/null 2>&1
}

# json_of FIELD: a field of the (one) backup report in $output.
json_of() { jq -r ".[0].$1" <<< "$output"; }

# The snapshots of REPO as "ID KIND" lines, oldest first.
snaps() { "$TOP/vmbackup/vmbackup" list "${1:-$REPO}" -o tsv | cut -f1,7; }

# restore_disk REPO SNAPSHOT DIR: the restored image's path on stdout.
restore_disk() {
  mkdir -p "$3"
  "$TOP/vmbackup/vmbackup" restore "$1" "$2" --to "$3" >/dev/null
  ls "$3"/*.vda.raw
}

# file_in IMAGE PATH: a file of the guest's ext4 (the disk is the file system).
file_in() { debugfs -R "cat $2" "$1" 2>/dev/null; }

@test "init: a passphrase is needed and never on argv; none is said so; wrong ones are refused" {
  local r=$BATS_TEST_TMPDIR/r
  VMKIT_PASSPHRASE= run_tool 2 vmbackup init "$r"
  [ ! -e "$r" ]
  unset VMKIT_PASSPHRASE
  run_tool 2 vmbackup init "$r"
  assert_stderr_has "needs a passphrase"
  echo "from a file" > "$BATS_TEST_TMPDIR/pf"
  run_tool 0 vmbackup init "$r" --passphrase-file "$BATS_TEST_TMPDIR/pf" --kdf-cost 10
  run_tool 4 vmbackup init "$r" --passphrase-file "$BATS_TEST_TMPDIR/pf" --kdf-cost 10
  assert_one_error_line "is a repository already"
  run_tool 2 vmbackup list "$r"
  assert_one_error_line "is encrypted: give its passphrase"
  echo "wrong" > "$BATS_TEST_TMPDIR/wrong"
  run_tool 1 vmbackup list "$r" --passphrase-file "$BATS_TEST_TMPDIR/wrong"
  assert_one_error_line "wrong passphrase"
  run_tool 0 vmbackup list "$r" --passphrase-file "$BATS_TEST_TMPDIR/pf"
  [ -z "$output" ] || [ "${#lines[@]}" -eq 1 ]
  run_tool 0 vmbackup init "$BATS_TEST_TMPDIR/plain" --encryption none
  assert_stderr_has "WITHOUT encryption"
  # A passphrase for a repository without encryption: its config may have been edited.
  VMKIT_PASSPHRASE=x run_tool 4 vmbackup list "$BATS_TEST_TMPDIR/plain"
  run_tool 2 vmbackup init "$BATS_TEST_TMPDIR/x" --encryption rot13
  run_tool 2 vmbackup init "$BATS_TEST_TMPDIR/x" --chunk-size 100K --encryption none
  run_tool 3 vmbackup list "$BATS_TEST_TMPDIR/nothing-here"
}

@test "key: change-passphrase, export and import" {
  local r=$BATS_TEST_TMPDIR/r
  run_tool 0 vmbackup init "$r" --kdf-cost 10
  run_tool 0 vmbackup key export "$r" "$BATS_TEST_TMPDIR/key"
  VMKIT_NEW_PASSPHRASE=second run_tool 0 vmbackup key change-passphrase "$r"
  run_tool 1 vmbackup list "$r"
  VMKIT_PASSPHRASE=second run_tool 0 vmbackup list "$r"
  # The exported key still opens with the old passphrase: importing it puts that back.
  rm "$r/config"
  run_tool 3 vmbackup list "$r"
  VMKIT_PASSPHRASE=bad run_tool 1 vmbackup key import "$r" "$BATS_TEST_TMPDIR/key"
  [ ! -e "$r/config" ]
  run_tool 0 vmbackup key import "$r" "$BATS_TEST_TMPDIR/key"
  run_tool 0 vmbackup list "$r"
  run_tool 0 vmbackup init "$BATS_TEST_TMPDIR/other" --kdf-cost 10
  run_tool 4 vmbackup key import "$BATS_TEST_TMPDIR/other" "$BATS_TEST_TMPDIR/key"
  assert_one_error_line "another repository"
}

@test "full, then incremental of a running VM while the guest writes; the restores hold what the guest wrote" {
  # A writer in the guest the whole time.
  guest_exec "$VM" 'setsid sh -c "while :; do dd if=/dev/urandom of=/mnt/data/churn bs=64k count=8 2>/dev/null; sleep 0.2; done" </dev/null >/dev/null 2>&1 & echo $! > /tmp/churn.pid'
  guest_exec "$VM" 'dd if=/dev/urandom of=/mnt/data/one bs=1M count=2 2>/dev/null; sync; md5sum /mnt/data/one' > "$BATS_TEST_TMPDIR/one.md5"
  run_tool 0 vmbackup backup "$REPO" "$VM" --quiesce -o json
  [ "$(json_of kind)" = full ]
  [ "$(json_of why)" = "the first backup of this VM in this repository" ]
  [ "$(json_of quiesced)" = true ]
  local full
  full=$(json_of snapshot)
  # The guest writes a few MiB; the next backup reads about that, not the disk.
  guest_exec "$VM" 'dd if=/dev/urandom of=/mnt/data/two bs=1M count=3 2>/dev/null; sync; md5sum /mnt/data/two' > "$BATS_TEST_TMPDIR/two.md5"
  run_tool 0 vmbackup backup "$REPO" "$VM" --quiesce -o json
  [ "$(json_of kind)" = incremental ]
  local read inc
  read=$(json_of bytes_read)
  inc=$(json_of snapshot)
  echo "incremental read $read bytes" >&3
  [ "$read" -ge $((3 << 20)) ]
  [ "$read" -le $((12 << 20)) ]
  [ "$(json_of bytes_new)" -le "$read" ]
  guest_exec "$VM" 'kill $(cat /tmp/churn.pid)' >/dev/null
  # Each restore is a clean file system holding what the guest had written by then.
  local img
  img=$(restore_disk "$REPO" "$full" "$BATS_TEST_TMPDIR/full")
  e2fsck -fn "$img"
  [ "$(file_in "$img" /data/one | md5sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$BATS_TEST_TMPDIR/one.md5")" ]
  run debugfs -R "stat /data/two" "$img"
  [[ "$output" == *"File not found"* ]]
  img=$(restore_disk "$REPO" "$inc" "$BATS_TEST_TMPDIR/inc")
  e2fsck -fn "$img"
  [ "$(file_in "$img" /data/two | md5sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$BATS_TEST_TMPDIR/two.md5")" ]
  [ -s "$BATS_TEST_TMPDIR/inc/$VM.xml" ]
  grep -q "<name>$VM</name>" "$BATS_TEST_TMPDIR/inc/$VM.xml"
  # Sparse: the 64 MiB image takes what the guest used.
  [ "$(du -k "$img" | cut -f1)" -lt 40000 ]
  # Only the newest checkpoint stays on the VM; no scratch file, no job, no journal.
  run virsh_q checkpoint-list "$VM" --name
  [ "$(grep -c . <<< "$output")" -eq 1 ]
  [[ "$output" == *"$inc"* ]]
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep scratch)" ]
  run_tool 0 vmbackup check "$REPO" --read-data
}

@test "a shut-off VM is started paused, backed up, stopped; its restore is bit-identical" {
  local vm
  vm=$(vm_name off)
  run_tool 0 vmrun create "$vm" --template tiny
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  [ "$(json_of started_paused)" = true ]
  [ "$(json_of kind)" = full ]
  [ "$(virsh_q domstate "$vm")" = "shut off" ]
  local s1
  s1=$(json_of snapshot)
  # Changed offline by the guest (a boot), then an incremental through the bitmap kept in the qcow2.
  run_tool 0 vmrun start "$vm"
  run_tool 0 vmrun wait "$vm" --agent --timeout 120
  guest_exec "$vm" 'dd if=/dev/urandom of=/mnt/data/x bs=1M count=1 2>/dev/null; sync'
  run_tool 0 vmrun destroy "$vm"
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  [ "$(json_of kind)" = incremental ]
  [ "$(json_of bytes_read)" -lt $((8 << 20)) ]
  local img
  img=$(restore_disk "$REPO" "$(json_of snapshot)" "$BATS_TEST_TMPDIR/r2")
  qemu-img compare -f raw -F qcow2 "$img" "$VMKIT_STORAGE_DIR/$vm.qcow2"
  # A prefix of the ID names it too; a restore never overwrites.
  run_tool 4 vmbackup restore "$REPO" "${s1:0:8}" --to "$BATS_TEST_TMPDIR/r2"
  img=$(restore_disk "$REPO" "${s1:0:8}" "$BATS_TEST_TMPDIR/r1")
  # --full reads the whole disk again, and says why.
  run_tool 0 vmbackup backup "$REPO" "$vm" --full -o json
  [ "$(json_of kind)" = full ]
  [[ "$(json_of why)" == *"--full"* ]]
  [ "$(json_of bytes_new)" -eq 0 ]
  # A wrong passphrase is known only once the job has begun (the key is derived
  # meanwhile): one line, exit 1, and the VM as it was, with its one checkpoint.
  local cps
  cps=$(virsh_q checkpoint-list "$vm" --name)
  echo wrong > "$BATS_TEST_TMPDIR/wrong"
  run_tool 1 vmbackup backup "$REPO" "$vm" --passphrase-file "$BATS_TEST_TMPDIR/wrong"
  assert_one_error_line "wrong passphrase"
  [ "$(virsh_q domstate "$vm")" = "shut off" ]
  [ "$(virsh_q checkpoint-list "$vm" --name)" = "$cps" ]
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep scratch)" ]
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  [ "$(json_of kind)" = incremental ]
}

@test "a VM redefined without its checkpoints falls back to a full read, deduplicated, and says why" {
  local vm xml
  vm=$(vm_name redef)
  run_tool 0 vmrun create "$vm" --template tiny
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  xml=$(virsh_q dumpxml "$vm")
  virsh_q undefine "$vm" --checkpoints-metadata >/dev/null
  virsh_q define /dev/stdin <<< "$xml" >/dev/null
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  [ "$(json_of kind)" = full ]
  [[ "$(json_of why)" == *"checkpoint of the last backup is gone"* ]]
  [ "$(json_of bytes_new)" -eq 0 ]
}

@test "bad input: no such VM, no such snapshot, no repository; nothing is left behind" {
  run_tool 3 vmbackup backup "$REPO" no-such-vm-here
  assert_one_error_line "no such VM"
  run_tool 3 vmbackup restore "$REPO" abcdef012345 --to "$BATS_TEST_TMPDIR"
  run_tool 2 vmbackup restore "$REPO" xyz --to "$BATS_TEST_TMPDIR"
  run_tool 2 vmbackup restore "$REPO" abcdef012345
  run_tool 3 vmbackup backup "$BATS_TEST_TMPDIR/none" "$VM"
  [ -z "$(ls "$REPO/tmp")" ]
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep scratch)" ]
  run_tool 0 vmbackup check "$REPO"
}

@test "a flipped byte in a pack is found by check --read-data and refused at restore" {
  local bad=$BATS_TEST_TMPDIR/bad
  cp -a "$REPO" "$bad"
  local p
  p=$(find "$bad/packs" -type f -size +100k | head -1)
  [ -n "$p" ]
  printf '\xff' | dd of="$p" bs=1 seek=40000 conv=notrunc 2>/dev/null
  run_tool 0 vmbackup check "$bad"
  run_tool 6 vmbackup check "$bad" --read-data
  [[ "$output" == *"fails authentication"* ]]
  [[ "$output" == *"cannot be restored whole"* ]]
  # Each snapshot that names the damaged chunk is refused, and leaves no file.
  local s refused=0
  for s in $(snaps "$bad" | cut -f1); do
    mkdir -p "$BATS_TEST_TMPDIR/out-$s"
    run --separate-stderr "$TOP/vmbackup/vmbackup" restore "$bad" "$s" --to "$BATS_TEST_TMPDIR/out-$s"
    if [ "$status" -ne 0 ]; then
      [ "$status" -eq 6 ]
      [[ "$stderr" == *"fails authentication"* ]]
      [ -z "$(ls "$BATS_TEST_TMPDIR/out-$s")" ]
      refused=$((refused + 1))
    fi
  done
  [ "$refused" -ge 1 ]
}

@test "two VMs back up into one repository at the same time" {
  local off r=$BATS_TEST_TMPDIR/two
  off=$(vm_name two)
  run_tool 0 vmrun create "$off" --template tiny
  run_tool 0 vmbackup init "$r" --kdf-cost 10
  "$TOP/vmbackup/vmbackup" backup "$r" "$VM" 2>"$BATS_TEST_TMPDIR/a.err" &
  local a=$!
  "$TOP/vmbackup/vmbackup" backup "$r" "$off" 2>"$BATS_TEST_TMPDIR/b.err" &
  local b=$!
  wait "$a" || { cat "$BATS_TEST_TMPDIR/a.err" >&3; false; }
  wait "$b" || { cat "$BATS_TEST_TMPDIR/b.err" >&3; false; }
  [ "$(snaps "$r" | grep -c full)" -eq 2 ]
  run_tool 0 vmbackup list "$r" "$off" -o tsv
  [ "${#lines[@]}" -eq 1 ]
  run_tool 0 vmbackup check "$r" --read-data
  local img
  img=$(restore_disk "$r" "$(cut -f1 <<< "$output")" "$BATS_TEST_TMPDIR/o" 2>/dev/null || true)
  run_tool 0 vmbackup list "$r" "$off" -o tsv
  img=$(restore_disk "$r" "$(cut -f1 <<< "$output")" "$BATS_TEST_TMPDIR/o")
  qemu-img compare -f raw -F qcow2 "$img" "$VMKIT_STORAGE_DIR/$off.qcow2"
}

# One round of the kill test: a backup of VM killed with SIGKILL after a random
# delay (or finished first); then check is clean and every snapshot made so far
# restores to the bytes it restored to when it was made.
kill_round() {
  local r=$1 vm=$2 i=$3 span=$4 pid delay s sum
  # Anywhere in the run: SPAN is how long a whole backup of this VM took.
  delay=$((RANDOM % span))
  "$TOP/vmbackup/vmbackup" backup "$r" "$vm" 2>>"$BATS_TEST_TMPDIR/kill.err" &
  pid=$!
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  run_tool 0 vmbackup check "$r"
  for s in $(snaps "$r" | cut -f1); do
    rm -rf "$BATS_TEST_TMPDIR/k"
    mkdir "$BATS_TEST_TMPDIR/k"
    "$TOP/vmbackup/vmbackup" restore "$r" "$s" --to "$BATS_TEST_TMPDIR/k" >/dev/null
    sum=$(cat "$BATS_TEST_TMPDIR"/k/*.vda.raw | sha256sum | cut -d" " -f1)
    if [ -f "$BATS_TEST_TMPDIR/sum.$s" ]; then
      [ "$(cat "$BATS_TEST_TMPDIR/sum.$s")" = "$sum" ] || { echo "round $i: snapshot $s restores differently" >&3; return 1; }
    else
      echo "$sum" > "$BATS_TEST_TMPDIR/sum.$s"
    fi
  done
}

@test "kill -9 at random instants of backups, 20 times: check stays clean, every snapshot restores the same, the next run cleans up" {
  local r=$BATS_TEST_TMPDIR/kr off i
  off=$(vm_name koff)
  run_tool 0 vmrun create "$off" --template tiny
  run_tool 0 vmbackup init "$r" --kdf-cost 10
  # How long a backup of each takes (an incremental, as the rounds' are), to
  # kill them anywhere in it.
  local t0 span_on span_off
  run_tool 0 vmbackup backup "$r" "$VM"
  t0=$(date +%s%N)
  run_tool 0 vmbackup backup "$r" "$VM"
  span_on=$(( ($(date +%s%N) - t0) / 1000000 + 50 ))
  t0=$(date +%s%N)
  run_tool 0 vmbackup backup "$r" "$off"
  span_off=$(( ($(date +%s%N) - t0) / 1000000 + 50 ))
  echo "a backup takes ${span_on} ms running, ${span_off} ms shut off" >&3
  for i in $(seq 1 20); do
    if [ $((i % 4)) -eq 0 ]; then
      # A shut-off VM: killed while started paused, or later.
      kill_round "$r" "$off" "$i" "$span_off"
    else
      guest_exec "$VM" "dd if=/dev/urandom of=/mnt/data/k$((i % 3)) bs=256k count=$((1 + RANDOM % 8)) 2>/dev/null; sync" >/dev/null
      kill_round "$r" "$VM" "$i" "$span_on"
    fi
  done
  echo "$(snaps "$r" | grep -c .) snapshots after 20 rounds (3 before them)" >&3
  # The next runs finish what the killed ones left: no job, no scratch file, one
  # checkpoint each, the shut-off VM off again, tmp/ empty after a writer.
  run_tool 0 vmbackup backup "$r" "$VM" "$off"
  [ "$(virsh_q domstate "$off")" = "shut off" ]
  local mine
  mine=vmbackup-$(jq -r .id "$r/config" | cut -c1-8)-
  run virsh_q checkpoint-list "$VM" --name
  [ "$(grep -c "$mine" <<< "$output")" -eq 1 ]
  run virsh_q checkpoint-list "$off" --name
  [ "$(grep -c "$mine" <<< "$output")" -eq 1 ]
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep scratch)" ]
  [ -z "$(ls "$r/tmp")" ]
  run virsh_q domjobinfo "$VM"
  [[ "$output" == *"None"* ]]
  # The dead runs' locks are taken over by an exclusive one, which says so.
  run_tool 0 vmbackup check "$r" --repair --read-data
  [ -z "$(ls "$r/locks")" ]
  # A run killed after its job began leaves a newer checkpoint that names no
  # snapshot: the next backup reads from the newest that does, incrementally,
  # then deletes the other.
  virsh_q checkpoint-create-as "$VM" --name "${mine}$(printf '%032x' 7)" >/dev/null
  run_tool 0 vmbackup backup "$r" "$VM" -o json
  [ "$(json_of kind)" = incremental ]
  run virsh_q checkpoint-list "$VM" --name
  [ "$(grep -c "$mine" <<< "$output")" -eq 1 ]
}

# at TIME CMD...: runs a tool as if the clock said TIME (UTC), through libfaketime.
at() {
  local t=$1
  shift
  TZ=UTC FAKETIME="@$t" FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 "$@"
}

# kept_by RULE...: the start times (HH:MM of the day, with the date) of the snapshots
# a dry-run prune with those rules keeps, oldest first, one line.
kept_by() {
  "$TOP/vmbackup/vmbackup" prune "$PR" "$@" --dry-run -o tsv | awk -F'\t' '$4 == "keep" { print $2 }' |
    sed 's/:00Z$//' | tr '\n' ' '
}

@test "prune: each keep rule, per VM, then compact; what stays restores the same" {
  local r=$BATS_TEST_TMPDIR/pr t other
  export PR=$r
  other=$(vm_name prother)
  run_tool 0 vmrun create "$other" --template tiny
  run_tool 0 vmbackup init "$r" --kdf-cost 10
  # Monday 5 January 2026 (ISO week 2) 10:00, 10:30, 11:10; Tuesday 09:00; a week
  # later; the next month.
  for t in "2026-01-05 10:00:00" "2026-01-05 10:30:00" "2026-01-05 11:10:00" "2026-01-06 09:00:00" \
           "2026-01-13 09:00:00" "2026-02-02 09:00:00"; do
    guest_exec "$VM" "dd if=/dev/urandom of=/mnt/data/p bs=256k count=4 2>/dev/null; sync" >/dev/null
    at "$t" "$TOP/vmbackup/vmbackup" backup "$r" "$VM"
  done
  # Another VM's one snapshot, older than all: its own newest, always kept.
  at "2025-12-01 08:00:00" "$TOP/vmbackup/vmbackup" backup "$r" "$other"
  run_tool 0 vmbackup list "$r" -o tsv
  [ "${#lines[@]}" -eq 7 ]
  local old=2025-12-01T08:00
  [ "$(kept_by --keep-last 2)" = "$old 2026-01-13T09:00 2026-02-02T09:00 " ]
  [ "$(kept_by --keep-hourly 5)" = "$old 2026-01-05T10:30 2026-01-05T11:10 2026-01-06T09:00 2026-01-13T09:00 2026-02-02T09:00 " ]
  [ "$(kept_by --keep-daily 4)" = "$old 2026-01-05T11:10 2026-01-06T09:00 2026-01-13T09:00 2026-02-02T09:00 " ]
  [ "$(kept_by --keep-weekly 2)" = "$old 2026-01-13T09:00 2026-02-02T09:00 " ]
  [ "$(kept_by --keep-monthly 2)" = "$old 2026-01-13T09:00 2026-02-02T09:00 " ]
  [ "$(kept_by --keep-weekly 3)" = "$old 2026-01-06T09:00 2026-01-13T09:00 2026-02-02T09:00 " ]
  [ "$(kept_by --keep-last 1 --keep-monthly 3)" = "$old 2026-01-13T09:00 2026-02-02T09:00 " ]
  # Only the VMs named.
  run_tool 0 vmbackup prune "$r" "$other" --keep-last 1 --dry-run -o tsv
  [ "${#lines[@]}" -eq 1 ]
  run_tool 2 vmbackup prune "$r"
  run_tool 2 vmbackup prune "$r" --keep-last -1
  # The real thing: a dry run changed nothing; the survivors restore as before.
  local s before=() after=()
  for s in $(snaps "$r" | cut -f1); do
    mkdir -p "$BATS_TEST_TMPDIR/b-$s"
    "$TOP/vmbackup/vmbackup" restore "$r" "$s" --to "$BATS_TEST_TMPDIR/b-$s" >/dev/null
  done
  local size0
  size0=$(du -sb "$r" | cut -f1)
  run_tool 0 vmbackup prune "$r" --keep-daily 2
  [ "$(snaps "$r" | grep -c .)" -eq 3 ]
  [ "$(du -sb "$r" | cut -f1)" -lt "$size0" ]
  [ -f "$r/index/merged.1" ]
  run_tool 0 vmbackup check "$r" --read-data
  for s in $(snaps "$r" | cut -f1); do
    mkdir -p "$BATS_TEST_TMPDIR/a-$s"
    "$TOP/vmbackup/vmbackup" restore "$r" "$s" --to "$BATS_TEST_TMPDIR/a-$s" >/dev/null
    cmp "$BATS_TEST_TMPDIR"/a-"$s"/*.raw "$BATS_TEST_TMPDIR"/b-"$s"/*.raw
  done
  # A backup after the compact deduplicates against the merged index.
  run_tool 0 vmbackup backup "$r" "$VM" --full -o json
  [ "$(json_of bytes_new)" -lt $((2 << 20)) ]
  run_tool 0 vmbackup compact "$r"
  run_tool 0 vmbackup check "$r" --read-data
}

@test "kill -9 at random instants of prune and compact, 20 times: check stays clean, what stays restores the same" {
  local r=$BATS_TEST_TMPDIR/kp i pid delay s sum t0 span
  run_tool 0 vmbackup init "$r" --kdf-cost 10
  for i in 1 2 3; do
    guest_exec "$VM" "dd if=/dev/urandom of=/mnt/data/q$i bs=256k count=6 2>/dev/null; sync" >/dev/null
    run_tool 0 vmbackup backup "$r" "$VM"
  done
  t0=$(date +%s%N)
  run_tool 0 vmbackup prune "$r" --keep-last 3
  span=$(( ($(date +%s%N) - t0) / 1000000 + 30 ))
  echo "a prune takes ${span} ms" >&3
  for i in $(seq 1 20); do
    guest_exec "$VM" "dd if=/dev/urandom of=/mnt/data/q$((i % 4)) bs=256k count=$((1 + RANDOM % 6)) 2>/dev/null; sync" >/dev/null
    run_tool 0 vmbackup backup "$r" "$VM"
    # Every snapshot's bytes, before the prune that may remove it.
    for s in $(snaps "$r" | cut -f1); do
      [ -f "$BATS_TEST_TMPDIR/sum.$s" ] && continue
      rm -rf "$BATS_TEST_TMPDIR/k" && mkdir "$BATS_TEST_TMPDIR/k"
      "$TOP/vmbackup/vmbackup" restore "$r" "$s" --to "$BATS_TEST_TMPDIR/k" >/dev/null
      cat "$BATS_TEST_TMPDIR"/k/*.raw | sha256sum | cut -d' ' -f1 > "$BATS_TEST_TMPDIR/sum.$s"
    done
    delay=$((RANDOM % span))
    if [ $((i % 2)) -eq 0 ]; then
      "$TOP/vmbackup/vmbackup" prune "$r" --keep-last 2 2>/dev/null >/dev/null &
    else
      "$TOP/vmbackup/vmbackup" compact "$r" 2>/dev/null &
    fi
    pid=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    run_tool 0 vmbackup check "$r"
    for s in $(snaps "$r" | cut -f1); do
      rm -rf "$BATS_TEST_TMPDIR/k" && mkdir "$BATS_TEST_TMPDIR/k"
      "$TOP/vmbackup/vmbackup" restore "$r" "$s" --to "$BATS_TEST_TMPDIR/k" >/dev/null
      sum=$(cat "$BATS_TEST_TMPDIR"/k/*.raw | sha256sum | cut -d' ' -f1)
      [ "$sum" = "$(cat "$BATS_TEST_TMPDIR/sum.$s")" ] || { echo "round $i: snapshot $s restores differently" >&3; return 1; }
    done
  done
  # The next prune finishes the work; the repository is whole.
  run_tool 0 vmbackup prune "$r" --keep-last 2
  run_tool 0 vmbackup check "$r" --read-data
  [ "$(snaps "$r" | grep -c .)" -eq 2 ]
  [ -z "$(ls "$r/tmp")" ]
}

@test "restore --as: a new VM with new UUID and MACs boots from the snapshot; nothing is left when it fails" {
  local new snap
  new=$(vm_name as)
  guest_exec "$VM" 'echo restored-as > /mnt/data/value; sync'
  run_tool 0 vmbackup backup "$REPO" "$VM" -o json
  snap=$(json_of snapshot)
  run_tool 0 vmbackup restore "$REPO" "$snap" --as "$new" --start
  assert_stderr_has "as VM '$new'"
  [ "$(virsh_q domuuid "$new")" != "$(virsh_q domuuid "$VM")" ]
  [ "$(virsh_q domiflist "$new" | awk '{print $5}')" != "$(virsh_q domiflist "$VM" | awk '{print $5}')" ]
  run virsh_q dumpxml "$new"
  [[ "$output" != *"backingStore type"* ]]
  [[ "$output" == *"$VMKIT_STORAGE_DIR/$new.qcow2"* ]]
  run_tool 0 vmrun wait "$new" --console-line 'vmkit-guest: data=restored-as' --timeout 120
  # Its disk keeps bitmaps: its own backups are incremental after the first.
  run_tool 0 vmbackup backup "$REPO" "$new" -o json
  run_tool 0 vmbackup backup "$REPO" "$new" -o json
  [ "$(json_of kind)" = incremental ]
  # A name in use, or a bad one: refused before anything is made.
  run_tool 4 vmbackup restore "$REPO" "$snap" --as "$new"
  run_tool 2 vmbackup restore "$REPO" "$snap" --as "bad/name"
  run_tool 2 vmbackup restore "$REPO" "$snap" --as "$new-x" --to /tmp
  run_tool 3 vmbackup restore "$REPO" "$snap" --as "$new-x" --pool no-such-pool
  [ ! -e "$VMKIT_STORAGE_DIR/$new-x.qcow2" ]
  [ "$(virsh_q list --all --name | grep -c "$new-x")" -eq 0 ]
}

@test "ls, restore-file and serve: files from inside a snapshot, reading only the chunks they touch" {
  local snap uri pid n
  guest_exec "$VM" 'mkdir -p /mnt/data/docs; echo "written by the guest" > /mnt/data/docs/note.txt; sync'
  run_tool 0 vmbackup backup "$REPO" "$VM" -o json
  snap=$(json_of snapshot)
  run_tool 0 vmbackup ls "$REPO" "$snap" /data/docs -o tsv -v
  [[ "$output" == *"note.txt"* ]]
  assert_stderr_has "chunks of the repository"
  run_tool 0 vmbackup restore-file "$REPO" "${snap:0:10}" /data/docs/note.txt /data/docs --to "$BATS_TEST_TMPDIR"
  [ "$(cat "$BATS_TEST_TMPDIR/note.txt")" = "written by the guest" ]
  [ "$(cat "$BATS_TEST_TMPDIR/docs/note.txt")" = "written by the guest" ]
  # Only what the lookups and the file touch: a few chunks of the 256.
  n=$(sed -n 's/.*read \([0-9]*\) chunks of the repository.*/\1/p' <<< "$stderr")
  echo "restore-file read $n chunks" >&3
  [ "$n" -ge 1 ] && [ "$n" -le 26 ]
  # Never over a file; a path the snapshot lacks leaves nothing.
  run_tool 4 vmbackup restore-file "$REPO" "$snap" /data/docs/note.txt --to "$BATS_TEST_TMPDIR"
  mkdir "$BATS_TEST_TMPDIR/x"
  run_tool 3 vmbackup restore-file "$REPO" "$snap" /data/docs /no/such/file --to "$BATS_TEST_TMPDIR/x"
  [ -z "$(ls "$BATS_TEST_TMPDIR/x")" ]
  run_tool 2 vmbackup restore-file "$REPO" "$snap" relative/path
  # serve: an NBD URI on stdout that qemu-img reads as the restored disk.
  "$TOP/vmbackup/vmbackup" serve "$REPO" "$snap" vda > "$BATS_TEST_TMPDIR/uri" &
  pid=$!
  for n in $(seq 1 100); do [ -s "$BATS_TEST_TMPDIR/uri" ] && break; sleep 0.1; done
  uri=$(cat "$BATS_TEST_TMPDIR/uri")
  [[ "$uri" == nbd+unix://* ]]
  qemu-img convert -f raw -O raw "$uri" "$BATS_TEST_TMPDIR/served.raw"
  kill -TERM "$pid"
  wait "$pid"
  mkdir "$BATS_TEST_TMPDIR/r"
  img=$(restore_disk "$REPO" "$snap" "$BATS_TEST_TMPDIR/r")
  cmp "$img" "$BATS_TEST_TMPDIR/served.raw"
  run_tool 3 vmbackup serve "$REPO" "$snap" vdz
  assert_stderr_has "no disk 'vdz'"
}

# defined VM PID: waits until PID (a restore) has defined VM.
defined() {
  local i
  for i in $(seq 1 300); do
    virsh_q dominfo "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "the restore ended without defining $1" >&3; return 1; }
    sleep 0.2
  done
  return 1
}

@test "restore --live: the VM boots on the backup before its data is in, then stands alone; killed, it pauses" {
  local new snap pid
  new=$(vm_name live)
  guest_exec "$VM" 'echo live-data > /mnt/data/value; dd if=/dev/urandom of=/mnt/data/big bs=1M count=8 2>/dev/null; sync'
  run_tool 0 vmbackup backup "$REPO" "$VM" -o json
  snap=$(json_of snapshot)
  # 2 MiB/s: the pull outlasts the boot.
  "$TOP/vmbackup/vmbackup" restore "$REPO" "$snap" --as "$new" --live --pull-bandwidth 2 2>"$BATS_TEST_TMPDIR/live.err" &
  pid=$!
  defined "$new" "$pid"
  run_tool 0 vmrun wait "$new" --console-line 'vmkit-guest: data=live-data' --timeout 120
  run virsh_q blockjob "$new" vda --info
  echo "while the guest is up: $output" >&3
  [[ "$output" == *"Pull"* ]]
  kill -0 "$pid"
  wait "$pid" || { cat "$BATS_TEST_TMPDIR/live.err" >&3; false; }
  grep -q "no longer needs the backup" "$BATS_TEST_TMPDIR/live.err"
  run virsh_q dumpxml "$new"
  [[ "$output" != *"protocol='nbd'"* ]]
  run virsh_q dumpxml --inactive "$new"
  [[ "$output" != *"error_policy"* ]]
  [ "$(guest_exec "$new" 'md5sum < /mnt/data/big')" = "$(guest_exec "$VM" 'md5sum < /mnt/data/big')" ]
  # The process that serves the backup killed midway: the VM pauses at its next
  # read of data not yet pulled (error_policy='stop'), it never reads garbage.
  local new2
  new2=$(vm_name live2)
  "$TOP/vmbackup/vmbackup" restore "$REPO" "$snap" --as "$new2" --live --pull-bandwidth 1 2>/dev/null &
  pid=$!
  defined "$new2" "$pid"
  run_tool 0 vmrun wait "$new2" --console-line 'vmkit-guest: up' --timeout 120
  kill -9 "$pid"
  wait "$pid" || true
  # Its nbdkit ends with it (its guardian sees the pipe close).
  local i
  for i in $(seq 1 60); do pgrep -f "nbdkit.*snapshot=$snap" >/dev/null || break; sleep 0.5; done
  run pgrep -af "nbdkit.*snapshot=$snap"
  [ "$status" -ne 0 ]
  # Reads of the whole disk past the page cache, until one reaches data not yet pulled.
  for i in $(seq 1 12); do
    [ "$(virsh_q domstate "$new2")" = paused ] && break
    guest_exec "$new2" 'dd if=/dev/vda of=/dev/null bs=1M iflag=direct' >/dev/null 2>&1 &
    sleep 5
  done
  run virsh_q domstate "$new2" --reason
  echo "after the kill: $output" >&3
  [[ "$output" == *"paused (I/O error)"* ]]
}

@test "restore --in-place: a shut-off VM gets its disks back, a running one is refused, a killed one is rolled back" {
  local vm snap disk i pid
  vm=$(vm_name inp)
  boot_vm "$vm"
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  set_guest_data "$vm" before
  run_tool 0 vmrun stop "$vm" --timeout 60
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  snap=$(json_of snapshot)
  run_tool 0 vmrun start "$vm"
  run_tool 0 vmrun wait "$vm" --agent --timeout 60
  set_guest_data "$vm" after
  run_tool 4 vmbackup restore "$REPO" "$snap" --in-place
  assert_stderr_has "needs it shut off"
  run_tool 0 vmrun stop "$vm" --timeout 60
  # Killed at random instants: each time the VM is as it was ("after"), or restored.
  for i in 1 2 3; do
    "$TOP/vmbackup/vmbackup" restore "$REPO" "$snap" --in-place 2>/dev/null &
    pid=$!
    sleep "0.$((RANDOM % 9))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  run_tool 0 vmbackup restore "$REPO" "$snap" --in-place
  disk=$(virsh_q domblklist "$vm" | awk '$1 == "vda" {print $2}')
  [[ "$disk" == *"/$vm-vda.restored-${snap:0:12}-"??????".qcow2" ]]
  [ ! -e "$VMKIT_STORAGE_DIR/$vm.qcow2" ]
  # Only the VM's disk and nothing a killed run left.
  [ "$(ls "$VMKIT_STORAGE_DIR" | grep -c "^$vm")" -eq 1 ]
  [ -f "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  run_tool 0 vmrun start "$vm"
  run_tool 0 vmrun wait "$vm" --console-line 'vmkit-guest: data=before' --timeout 120
  # Its checkpoints went with its old disk: the next backup reads it whole, and says why.
  run_tool 0 vmbackup backup "$REPO" "$vm" -o json
  [ "$(json_of kind)" = full ]
  run_tool 2 vmbackup restore "$REPO" "$snap" --in-place --pool x
}

# start_sshd DIR: an sshd of the test's own on the loopback (its port in
# $SSHD_PORT), whose authorized_keys is DIR/authorized_keys, for keys DIR/full
# (any command) and DIR/append (forced: an append-only server restricted to
# DIR/srv, as an off-site host's authorized_keys line would have it).
start_sshd() {
  local d=$1 k
  mkdir -p "$d/srv" /run/sshd
  for k in hostkey full append; do ssh-keygen -q -t ed25519 -N '' -f "$d/$k"; done
  {
    printf 'command="%s serve --stdio --append-only --restrict-to-path %s",restrict %s\n' \
      "$TOP/vmbackup/vmbackup" "$d/srv" "$(cat "$d/append.pub")"
    cat "$d/full.pub"
  } > "$d/authorized_keys"
  SSHD_PORT=$((20000 + RANDOM % 20000))
  cat > "$d/sshd_config" <<CONF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $d/hostkey
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
CONF
  /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log"
  sleep 0.3
}

# The test's sshd goes with its test, however the test ends.
teardown() {
  [ -f "$BATS_TEST_TMPDIR/ssh/sshd.pid" ] && kill "$(cat "$BATS_TEST_TMPDIR/ssh/sshd.pid")" 2>/dev/null
  common_teardown
}

# rsh KEY: the ssh command (VMKIT_RSH) that logs in with DIR/KEY.
rsh() { echo "ssh -i $SSHD_DIR/$1 -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR -o BatchMode=yes"; }

@test "ssh:// repository: backups through ssh to an append-only server, which refuses a prune and a new key; a killed client leaves nothing" {
  SSHD_DIR=$BATS_TEST_TMPDIR/ssh
  start_sshd "$SSHD_DIR"
  export VMKIT_REMOTE_PATH=$TOP/vmbackup/vmbackup
  local srv=$SSHD_DIR/srv/repo r i s
  r=ssh://root@127.0.0.1:$SSHD_PORT$srv
  VMKIT_RSH=$(rsh full) run_tool 0 vmbackup init "$r" --kdf-cost 10
  [ -f "$srv/config" ]
  export VMKIT_RSH
  VMKIT_RSH=$(rsh append)
  run_tool 0 vmbackup backup "$r" "$VM" -o json
  [ "$(json_of kind)" = full ]
  guest_exec "$VM" 'dd if=/dev/urandom of=/mnt/data/ssh bs=1M count=2 2>/dev/null; sync' >/dev/null
  run_tool 0 vmbackup backup "$r" "$VM" -o json
  [ "$(json_of kind)" = incremental ]
  s=$(json_of snapshot)
  # What crossed is what a local run reads: the same snapshot restores the same
  # through ssh and from the folder itself.
  [ "$(snaps "$r" | grep -c .)" -eq 2 ]
  mkdir "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b"
  run_tool 0 vmbackup restore "$r" "$s" --to "$BATS_TEST_TMPDIR/a"
  run_tool 0 vmbackup restore "$srv" "$s" --to "$BATS_TEST_TMPDIR/b"
  cmp "$BATS_TEST_TMPDIR"/a/*.vda.raw "$BATS_TEST_TMPDIR"/b/*.vda.raw
  e2fsck -fn "$BATS_TEST_TMPDIR"/a/*.vda.raw
  run_tool 0 vmbackup check "$r" --read-data
  # Append-only: no prune, no compact, no new key; history stays as it was.
  cp "$srv/config" "$BATS_TEST_TMPDIR/config.before"
  run_tool 4 vmbackup prune "$r" --keep-last 1
  assert_one_error_line "append-only"
  run_tool 4 vmbackup compact "$r"
  assert_one_error_line "append-only"
  VMKIT_NEW_PASSPHRASE=other run_tool 4 vmbackup key change-passphrase "$r"
  assert_one_error_line "append-only"
  cmp "$srv/config" "$BATS_TEST_TMPDIR/config.before"
  [ "$(snaps "$r" | grep -c .)" -eq 2 ]
  # The key's forced command serves only under its folder.
  run_tool 4 vmbackup list "ssh://root@127.0.0.1:$SSHD_PORT$BATS_TEST_TMPDIR/elsewhere"
  assert_one_error_line "outside the paths"
  # A client killed anywhere in a backup: the server drops what was not
  # committed and releases the lock; check stays clean; the next run goes on.
  for i in 1 2 3 4 5; do
    guest_exec "$VM" "dd if=/dev/urandom of=/mnt/data/k$i bs=256k count=4 2>/dev/null; sync" >/dev/null
    "$TOP/vmbackup/vmbackup" backup "$r" "$VM" 2>>"$BATS_TEST_TMPDIR/kill.err" &
    local pid=$!
    sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # The server sees its input end and ends.
    local n=0
    while pgrep -f "serve --stdio --append-only --restrict-to-path $SSHD_DIR/srv" >/dev/null && [ $n -lt 50 ]; do
      sleep 0.2
      n=$((n + 1))
    done
    [ -z "$(ls "$srv/tmp")" ]
    [ -z "$(ls "$srv/locks")" ]
    run_tool 0 vmbackup check "$r"
  done
  run_tool 0 vmbackup backup "$r" "$VM"
  # The key that may do anything prunes; what stays restores the same.
  VMKIT_RSH=$(rsh full) run_tool 0 vmbackup prune "$r" --keep-last 1
  [ "$(snaps "$r" | grep -c .)" -eq 1 ]
  run_tool 0 vmbackup check "$srv" --read-data
  kill "$(cat "$SSHD_DIR/sshd.pid")"
}
