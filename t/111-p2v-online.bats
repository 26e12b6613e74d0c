#!/usr/bin/env bats
# p2v-agent send --online: a running server's disks, delta passes, a frozen final
# pass. The end-to-end test plays the server with the tiny guest (scripts/mkguest):
# the static agent and a writer loop run inside it, the stream leaves through the
# guest's user network to a listener on this host's loopback (HOST.md: 10.0.2.2)
# and into p2v-convert. The other tests need no VM: an ext4 on a loop device of
# the test's own, mounted here, plays the running server (HOST.md: loop devices,
# mounts and fsfreeze work on this host; only those file systems are ever frozen).

load helpers

AGENT=$TOP/p2v-agent/p2v-agent

# A file system of this test's own: 256 MiB ext4 on a loop device, mounted on
# $MNT, with 80 MiB of data. Sets LOOP and MNT.
make_loop_fs() {
  local img=$BATS_TEST_TMPDIR/fs.img
  truncate -s 256M "$img"
  mkfs.ext4 -q -F "$img"
  LOOP=$(losetup -f --show "$img")
  echo "$LOOP" > "$BATS_TEST_TMPDIR/loop"
  MNT=$BATS_TEST_TMPDIR/mnt
  mkdir -p "$MNT"
  mount "$LOOP" "$MNT"
  head -c $((80 << 20)) /dev/urandom > "$MNT/big"
  sync
}

# writes_pass DIR: a write into DIR finishes within 2 s (the file system is not frozen).
writes_pass() { timeout 2 sh -c "echo x > '$1/probe'"; }

# A writer of numbered records, each made durable before it is counted in
# $BATS_TEST_TMPDIR/committed; and, with CHURN set, files made, removed, renamed
# and a file written at random places (an extent tree), until $BATS_TEST_TMPDIR/stop.
start_writers() {
  local dir=$1 stop=$BATS_TEST_TMPDIR/stop
  rm -f "$stop"
  (
    i=0
    while [ ! -e "$stop" ]; do
      echo "record $i" >> "$dir/log" && sync "$dir/log" && echo "$i" > "$BATS_TEST_TMPDIR/committed.new" &&
        mv "$BATS_TEST_TMPDIR/committed.new" "$BATS_TEST_TMPDIR/committed"
      i=$((i + 1))
    done
  ) 3>&- &
  echo $! > "$BATS_TEST_TMPDIR/writer"
  (
    j=0
    while [ ! -e "$stop" ]; do
      d=$dir/d$((j % 7))
      mkdir -p "$d"
      head -c $((RANDOM * 3)) /dev/urandom > "$d/f$j"
      [ $((j % 3)) -ne 0 ] || rm -f "$dir/d$(((j + 3) % 7))/f$((j - 5))"
      [ $((j % 5)) -ne 0 ] || mv "$d/f$j" "$dir/d$(((j + 1) % 7))/m$j" 2>/dev/null
      dd if=/dev/urandom of="$dir/scattered" bs=4k count=1 seek=$((RANDOM % 4000)) conv=notrunc status=none
      j=$((j + 1))
    done
  ) 3>&- &
  echo $! > "$BATS_TEST_TMPDIR/churn"
}
stop_writers() {
  touch "$BATS_TEST_TMPDIR/stop"
  local f
  for f in writer churn; do
    [ -f "$BATS_TEST_TMPDIR/$f" ] && wait "$(cat "$BATS_TEST_TMPDIR/$f")" 2>/dev/null || true
    rm -f "$BATS_TEST_TMPDIR/$f"
  done
}

# records_ok FILE: "record 0", "record 1" ... with no gap, no repeat, no torn line;
# prints the last number.
records_ok() {
  awk '$0 != "record " NR - 1 { l = $0; gsub(/[^[:print:]]/, "?", l)
                                 print "record line " NR " of " FILENAME " is \"" substr(l, 1, 200) "\"" > "/dev/stderr"; bad = 1; exit 1 }
       END { if (!bad) print NR - 1 }' "$1"
}

# same_file IMG FILE PATH: PATH of the ext image IMG is FILE; where not, the
# first bytes that differ and how many do (a failure says where to look).
same_file() {
  local a=$BATS_TEST_TMPDIR/same.a b=$2
  debugfs -R "cat $3" "$1" > "$a" 2>/dev/null
  cmp -s "$a" "$b" && return 0
  echo "$3 of $1 differs from $2: $(stat -c %s "$a") and $(stat -c %s "$b") bytes, $(cmp -l "$a" "$b" 2>/dev/null | wc -l) differ, the first at:" >&2
  cmp -l "$a" "$b" 2>/dev/null | head -n 5 >&2
  return 1
}

teardown() {
  stop_writers
  # The agent, if a failed test left it (it holds the mount point open).
  if [ -n "${AGENT_PID:-}" ]; then
    kill -9 "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
    sleep 0.2
  fi
  # Never leave a file system frozen: only the test's own loop file systems.
  if [ -f "$BATS_TEST_TMPDIR/loop" ]; then
    fsfreeze -u "$BATS_TEST_TMPDIR/mnt" 2>/dev/null || true
    umount "$BATS_TEST_TMPDIR/mnt" 2>/dev/null || true
    losetup -d "$(cat "$BATS_TEST_TMPDIR/loop")" 2>/dev/null || true
  fi
  [ -z "${LISTENER:-}" ] || kill "$LISTENER" 2>/dev/null || true
  common_teardown
}

# copy_log REPORT FILE: the converted disk of p2v-convert's JSON report, as raw in
# $BATS_TEST_TMPDIR/out.raw, is a clean ext file system; FILE of it goes to
# $BATS_TEST_TMPDIR/log.
copy_log() {
  local vol out=$BATS_TEST_TMPDIR/out.raw
  vol=$(jq -r '.disks[0].volume' "$1")
  qemu-img convert -O raw "$vol" "$out"
  run e2fsck -fn "$out"
  [ "$status" -eq 0 ] || { echo "$output" >&2; return 1; }
  debugfs -R "cat $2" "$out" > "$BATS_TEST_TMPDIR/log" 2>/dev/null
}

@test "online on this host: delta passes while files are written, made, removed and renamed; the copy is clean and holds every committed record" {
  local vm=$(vm_name loop) vol out last
  make_loop_fs
  start_writers "$MNT"
  sleep 1
  run --separate-stderr bash -c "'$AGENT' send --online --disk '$LOOP' --block-size 64K --final-delta 1K --max-passes 5 | '$TOP/p2v-convert/p2v-convert' --name '$vm' --memory 256M -o json > '$BATS_TEST_TMPDIR/conv.json'; echo \"\${PIPESTATUS[*]}\""
  stop_writers
  # Read once the writer stopped (a record it made after the agent ended is
  # not in the copy, which is all this bound needs).
  last=$(cat "$BATS_TEST_TMPDIR/committed")
  [ "${lines[-1]}" = "0 0" ] || { echo "$output" "$stderr" >&2; return 1; }
  # Pass 1, then delta passes while the writers run (pass 2 at least: they wrote
  # during pass 1), until one finds nothing or the fifth, the final one, frozen.
  local passes
  passes=$(jq -r '.passes' "$BATS_TEST_TMPDIR/conv.json")
  [ "$passes" -ge 3 ] && [ "$passes" -le 5 ] || { echo "$stderr" >&2; return 1; }
  [[ "$stderr" == *"p2v-agent: pass 2: read"* ]]
  [[ "$stderr" == *"p2v-agent: pass $passes (final): read "*" while frozen for "*" ms"* ]]
  [[ "$stderr" == *"p2v-agent: sent 1 disk in $passes passes"* ]]
  [[ "$stderr" == *"p2v-agent: frozen for "*" ms"* ]]
  copy_log "$BATS_TEST_TMPDIR/conv.json" /log
  local got
  got=$(records_ok "$BATS_TEST_TMPDIR/log")
  # Every record made durable before the agent ended is there, and none beyond
  # what the writer made.
  [ "$got" -le "$last" ]
  [ "$got" -ge 0 ]
  # The file system here was thawed.
  writes_pass "$MNT"
}

@test "lost events (fanotify's queue overflowed): a checkpoint and every used block again; the copy is clean" {
  local vm=$(vm_name lost) i
  make_loop_fs
  mkdir "$MNT/many"
  # The agent stopped once it watches the file system, while 30000 files are
  # made (more events than fanotify's queue holds), then let go. Blocks of 16M:
  # the agent reads its events every 64 blocks, so here only between passes
  # (and the final pass reads most of the disk again: a generous --max-freeze).
  "$AGENT" send --online --disk "$LOOP" --max-freeze 60s --block-size 16M 2> "$BATS_TEST_TMPDIR/err" |
    "$TOP/p2v-convert/p2v-convert" --name "$vm" --memory 256M -o json > "$BATS_TEST_TMPDIR/conv.json" 2>/dev/null &
  local pipe=$!
  for i in $(seq 300); do grep -q 'delta passes' "$BATS_TEST_TMPDIR/err" && break; sleep 0.1; done
  AGENT_PID=$(pgrep -o -f "p2v-agent send --online --disk $LOOP ")
  kill -STOP "$AGENT_PID"
  (cd "$MNT/many" && seq 30000 | xargs touch)
  kill -CONT "$AGENT_PID"
  wait "$pipe"
  grep -q "events were lost: every used block goes again" "$BATS_TEST_TMPDIR/err" || { cat "$BATS_TEST_TMPDIR/err" >&2; return 1; }
  grep -q "p2v-agent: sent 1 disk in" "$BATS_TEST_TMPDIR/err"
  local vol out
  vol=$(jq -r '.disks[0].volume' "$BATS_TEST_TMPDIR/conv.json")
  out=$BATS_TEST_TMPDIR/out.raw
  qemu-img convert -O raw "$vol" "$out"
  run e2fsck -fn "$out"
  [ "$status" -eq 0 ] || { echo "$output" >&2; return 1; }
  [ "$(debugfs -R "ls -l /many" "$out" 2>/dev/null | grep -c ' [0-9]*$')" -ge 30000 ]
}

@test "the watchdog thaws the file systems when the agent is killed with kill -9 during the freeze" {
  make_loop_fs
  # A freeze held 60 s on purpose (the test hook), far past the kill.
  VMKIT_TEST_FREEZE_MS=60000 "$AGENT" send --online --disk "$LOOP" --max-freeze 60s \
    > /dev/null 2> "$BATS_TEST_TMPDIR/err" &
  local pid=$! i
  AGENT_PID=$pid
  for i in $(seq 300); do grep -q 'freezing the file systems' "$BATS_TEST_TMPDIR/err" && break; sleep 0.1; done
  sleep 0.5
  # Frozen: a write waits (in the background: it cannot be interrupted).
  (echo x > "$MNT/probe" && touch "$BATS_TEST_TMPDIR/written") 3>&- &
  sleep 1
  [ ! -e "$BATS_TEST_TMPDIR/written" ]
  kill -9 "$pid"
  wait "$pid" || [ $? -eq 137 ]
  # Thawed at once by the watchdog, which says so.
  for i in $(seq 50); do [ -e "$BATS_TEST_TMPDIR/written" ] && break; sleep 0.1; done
  [ -e "$BATS_TEST_TMPDIR/written" ]
  writes_pass "$MNT"
  for i in $(seq 20); do grep -q 'watchdog' "$BATS_TEST_TMPDIR/err" && break; sleep 0.1; done
  grep -q 'p2v-agent: watchdog: the agent died during the freeze: file systems thawed' "$BATS_TEST_TMPDIR/err"
}

@test "a freeze past --max-freeze: thawed, an ABORT in the stream, exit 5; a stopped agent is thawed by the watchdog's deadline" {
  local vm=$(vm_name late) t0 t1
  make_loop_fs
  run --separate-stderr bash -c "VMKIT_TEST_FREEZE_MS=1500 '$AGENT' send --online --disk '$LOOP' --max-freeze 1s | '$TOP/p2v-convert/p2v-convert' --name '$vm'; echo \"\${PIPESTATUS[*]}\""
  [ "${lines[-1]}" = "5 1" ] || { echo "$output" "$stderr" >&2; return 1; }
  [[ "$stderr" == *"p2v-agent: the final pass was frozen longer than --max-freeze (1000 ms)"* ]]
  [[ "$stderr" == *"p2v-convert: p2v-agent failed: the final pass was frozen longer than --max-freeze"* ]]
  writes_pass "$MNT"
  run virsh_q dominfo "$vm"
  [ "$status" -ne 0 ]
  # An agent stopped (SIGSTOP) while frozen: the watchdog thaws at --max-freeze
  # and its margin (2 s).
  VMKIT_TEST_FREEZE_MS=6000 "$AGENT" send --online --disk "$LOOP" --max-freeze 1s > /dev/null 2> "$BATS_TEST_TMPDIR/err" &
  local pid=$! i
  AGENT_PID=$pid
  for i in $(seq 300); do grep -q 'freezing the file systems' "$BATS_TEST_TMPDIR/err" && break; sleep 0.1; done
  kill -STOP "$pid"
  t0=$(date +%s%N)
  echo y > "$MNT/probe"
  t1=$(date +%s%N)
  kill -CONT "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 5 ]
  # Blocked for a while, thawed before the agent could act.
  [ $(( (t1 - t0) / 1000000 )) -lt 5000 ]
  grep -q 'p2v-agent: watchdog: the freeze lasted past --max-freeze: file systems thawed' "$BATS_TEST_TMPDIR/err"
  writes_pass "$MNT"
}

@test "online with nothing mounted (an image file): one pass, said; bad online options are usage errors" {
  local img=$BATS_TEST_TMPDIR/img
  truncate -s 32M "$img"
  mkfs.ext4 -q -F "$img"
  run --separate-stderr bash -c "'$AGENT' send --online --disk '$img' > '$BATS_TEST_TMPDIR/s'"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"no file system of $img mounted: one pass, as offline"* ]]
  [[ "$stderr" == *"sent 1 disk in 1 pass"* ]]
  run_tool 2 p2v-agent send --online --disk "$img" --max-freeze soon
  assert_stderr_has "invalid --max-freeze 'soon'"
  run_tool 2 p2v-agent send --online --disk "$img" --max-freeze 0
  run_tool 2 p2v-agent send --online --disk "$img" --max-passes 1
  run_tool 2 p2v-agent send --online --disk "$img" --final-delta lots
  run_tool 2 p2v-agent send --disk "$img" --max-freeze 5s
  assert_stderr_has "go with --online"
}

# The guest's root disk: the tiny guest's, grown to 256 MiB, holding the static
# agent, 40 MiB of data, and /etc/vmkit/rc: the network up, a writer of records
# each made durable (sync FILE) and then said on the console, the agent streaming
# to this host, and its exit status said.
make_server_disk() {
  local img=$1 port=$2 m=$BATS_TEST_TMPDIR/root
  qemu-img convert -q -f qcow2 -O raw "$VMKIT_FIXTURE/root.qcow2" "$img"
  truncate -s 256M "$img"
  e2fsck -fp "$img" >/dev/null
  resize2fs -f "$img" >/dev/null 2>&1
  mkdir -p "$m"
  mount -o loop "$img" "$m"
  mkdir -p "$m/usr/sbin" "$m/etc/vmkit"
  cp "$AGENT" "$m/usr/sbin/p2v-agent"
  head -c $((40 << 20)) /dev/urandom > "$BATS_TEST_TMPDIR/filler"
  cp "$BATS_TEST_TMPDIR/filler" "$m/data/filler"
  cat > "$m/etc/vmkit/rc" <<EOF
#!/bin/sh
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
i=0
while :; do
  echo "record \$i" >> /mnt/data/log && sync /mnt/data/log && echo "committed \$i"
  i=\$((i + 1))
  sleep 0.2
done &
sleep 3
{ /mnt/usr/sbin/p2v-agent send --online --disk /dev/vda --block-size 256K --final-delta 64K --max-passes 4
  echo "agent-exit=\$?" > /dev/console; } | nc 10.0.2.2 $port
echo "stream-sent"
EOF
  chmod 755 "$m/etc/vmkit/rc"
  umount "$m"
}

@test "online from a running guest: the agent inside streams through the user network; the VM's disk is clean, holds every record committed before the freeze, and the final pass read far less than the first" {
  local vm=$(vm_name srv) conv=$(vm_name conv) img port dir=$VMKIT_STORAGE_DIR
  img=$dir/$vm.img
  port=$((20000 + RANDOM % 20000))
  make_server_disk "$img" "$port"
  cp "$VMKIT_FIXTURE/vmlinuz" "$dir/$vm.vmlinuz"
  cp "$VMKIT_FIXTURE/initrd.img" "$dir/$vm.initrd"
  # The listener and the converter, before the guest starts. busybox nc stops
  # reading the connection when its input ends: its input is a FIFO of the
  # test's own, open for writing too, which never ends.
  mkfifo "$BATS_TEST_TMPDIR/never"
  (exec 7<> "$BATS_TEST_TMPDIR/never"
   busybox nc -l -p "$port" <&7 |
    "$TOP/p2v-convert/p2v-convert" --name "$conv" --memory 256M -o json \
      > "$BATS_TEST_TMPDIR/conv.json" 2> "$BATS_TEST_TMPDIR/conv.err"
   echo $? > "$BATS_TEST_TMPDIR/conv.rc") 3>&- &
  LISTENER=$!
  cat > "$BATS_TEST_TMPDIR/vm.xml" <<EOF
<domain type='qemu'>
  <name>$vm</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$dir/$vm.vmlinuz</kernel>
    <initrd>$dir/$vm.initrd</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet vmkit.agent=off</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='file'><source path='/var/log/libvirt/qemu/$vm-console.log'/><target port='0'/></serial>
  </devices>
</domain>
EOF
  virsh_q create "$BATS_TEST_TMPDIR/vm.xml" >/dev/null
  local i
  # Under TCG: about a minute; ten at most.
  for i in $(seq 600); do
    [ -f "$BATS_TEST_TMPDIR/conv.rc" ] && console "$vm" | grep -q 'agent-exit=' && break
    sleep 1
  done
  console "$vm" > "$BATS_TEST_TMPDIR/console"
  virsh_q destroy "$vm" >/dev/null
  grep -q 'agent-exit=0' "$BATS_TEST_TMPDIR/console" || { cat "$BATS_TEST_TMPDIR/console" "$BATS_TEST_TMPDIR/conv.err" >&2; return 1; }
  [ "$(cat "$BATS_TEST_TMPDIR/conv.rc")" -eq 0 ] || { cat "$BATS_TEST_TMPDIR/conv.err" >&2; return 1; }
  local json=$BATS_TEST_TMPDIR/conv.json vol out
  # Pass 1, delta passes (one at least: the writer wrote during pass 1), the
  # final pass (the fourth at the latest).
  local passes
  passes=$(jq -r '.passes' "$json")
  [ "$passes" -ge 3 ] && [ "$passes" -le 4 ]
  # The copy: a clean file system holding the records in order, at least up to
  # the last one the writer said was committed before the agent said it was
  # freezing.
  copy_log "$json" /data/log
  out=$BATS_TEST_TMPDIR/out.raw
  local got before
  got=$(records_ok "$BATS_TEST_TMPDIR/log")
  before=$(sed -n '/freezing the file systems/q; s/^committed \([0-9]*\)$/\1/p' "$BATS_TEST_TMPDIR/console" | tail -n 1)
  [ -n "$before" ]
  [ "$got" -ge "$before" ] || { echo "the copy ends at record $got, $before was committed before the freeze" >&2; return 1; }
  # The data arrived whole.
  same_file "$out" "$BATS_TEST_TMPDIR/filler" /data/filler || { same_file "$img" "$BATS_TEST_TMPDIR/filler" /data/filler; return 1; }
  # The agent's summary: pass 1 read the used blocks, the final pass (frozen)
  # far less.
  local first final
  first=$(sed -n 's/.*p2v-agent: pass 1: read \([0-9.]*[KMG]\?\),.*/\1/p' "$BATS_TEST_TMPDIR/console" | tr -d '\r')
  final=$(sed -n "s/.*p2v-agent: pass $passes (final): read \\([0-9.]*[KMG]\\?\\) while frozen for [0-9]* ms.*/\\1/p" "$BATS_TEST_TMPDIR/console")
  [ -n "$first" ] && [ -n "$final" ] || { cat "$BATS_TEST_TMPDIR/console" >&2; return 1; }
  first=$(numfmt --from=iec "$first")
  final=$(numfmt --from=iec "$final")
  [ "$first" -ge $((40 << 20)) ]
  [ $((final * 5)) -lt "$first" ] || { echo "pass 1 read $first bytes, the final pass $final" >&2; return 1; }
  grep -q 'p2v-agent: frozen for [0-9]* ms' "$BATS_TEST_TMPDIR/console"
}

@test "a freeze that does not hold (thawed by another process during the final pass): a warning, exit 5; a file system frozen already: exit 4, left frozen; a hidden mount point: refused" {
  make_loop_fs
  VMKIT_TEST_FREEZE_MS=3000 "$AGENT" send --online --disk "$LOOP" --block-size 64K > /dev/null 2> "$BATS_TEST_TMPDIR/err" &
  local pid=$! i rc=0
  AGENT_PID=$pid
  for i in $(seq 300); do grep -q 'freezing the file systems' "$BATS_TEST_TMPDIR/err" && break; sleep 0.1; done
  sleep 0.5
  fsfreeze -u "$MNT"
  wait "$pid" || rc=$?
  [ "$rc" -eq 5 ] || { cat "$BATS_TEST_TMPDIR/err" >&2; return 1; }
  grep -q "warning: '$MNT' was thawed by another process during the final pass" "$BATS_TEST_TMPDIR/err"
  writes_pass "$MNT"
  # Frozen by someone else: a conflict, and the agent does not thaw it.
  fsfreeze -f "$MNT"
  run --separate-stderr "$AGENT" send --online --disk "$LOOP" > /dev/null
  [ "$status" -eq 4 ]
  [[ "$stderr" == *"cannot freeze '$MNT': it is frozen already"* ]]
  # Still frozen: a write waits (in the background: it cannot be interrupted).
  (echo x > "$MNT/probe2" && touch "$BATS_TEST_TMPDIR/written") 3>&- &
  local w=$!
  sleep 1
  [ ! -e "$BATS_TEST_TMPDIR/written" ]
  fsfreeze -u "$MNT"
  wait "$w"
  # A mount on top hides it: neither frozen nor mapped through the wrong one.
  mount -t tmpfs tmpfs "$MNT"
  run --separate-stderr "$AGENT" send --online --disk "$LOOP" > /dev/null
  umount "$MNT"
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"cannot reach the file system mounted on '$MNT': a mount on top hides it"* ]]
}
