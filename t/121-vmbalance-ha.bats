#!/usr/bin/env bats
# vmbalance ha on a pool of three real libvirt hosts on this machine (h1: this
# machine's daemon; h2, h3: namespaced daemons that can be killed and brought back,
# HOST.md), TCG guests on storage every host sees. The fence agent is
# t/fixtures/fence_test: it follows fence-agents' convention (options on stdin,
# action=off, exit 0 for success) and records what it was given. The tests run in
# order; a watcher runs in the background from the first to the last.

load helpers

setup_file() {
  pool_start 3
  sed -i 's/$/ own-load=none/' "$POOL_DIR/hosts"
  export HA1 HA2 PLAIN HA3
  HA1=$(file_vm_name ha1) HA2=$(file_vm_name ha2) PLAIN=$(file_vm_name plain) HA3=$(file_vm_name ha3)
  # One after the other: on another host, vmrun wait follows the console from
  # when it attaches, and a guest that came up before would not be seen.
  local vm
  for vm in "$HA1" "$HA2" "$PLAIN"; do
    run_tool 0 vmrun -c h2 create "$vm" --template tiny --start
    run_tool 0 vmrun -c h2 wait "$vm" --console-line 'vmkit-guest: up' --timeout 120
  done
  run_tool 0 vmrun -c h3 create "$HA3" --template tiny --start
  run_tool 0 vmrun -c h3 wait "$HA3" --console-line 'vmkit-guest: up' --timeout 120
  export REC=$BATS_FILE_TMPDIR/fence.rec REC3=$BATS_FILE_TMPDIR/fence3.rec
  export CONF=$BATS_FILE_TMPDIR/vmbalance.conf WLOG=$BATS_FILE_TMPDIR/watcher.log
  cat > "$CONF" <<EOF
ha $HA1 $HA2 $HA3
priority $HA1 90
fence h2 $TOP/t/fixtures/fence_test record=$REC ipaddr=192.0.2.2 username=admin
fence h3 $TOP/t/fixtures/fence_test record=$REC3 ipaddr=192.0.2.3 result=1
EOF
  # The watcher of this file's pool, its own state (VMKIT_STATE_DIR is the run's).
  "$TOP/vmbalance/vmbalance" ha -C "$CONF" --interval 1 --grace 4 --timeout 5 >"$WLOG" 2>&1 &
  echo $! > "$BATS_FILE_TMPDIR/watcher.pid"
}
teardown_file() {
  kill "$(cat "$BATS_FILE_TMPDIR/watcher.pid")" 2>/dev/null || true
  pool_stop
}
teardown() { :; }

# until_true SECONDS COMMAND...: runs COMMAND every half second until it succeeds.
until_true() {
  local end=$((SECONDS + $1))
  shift
  while [ "$SECONDS" -lt "$end" ]; do
    "$@" && return 0
    sleep 0.5
  done
  { echo "not true after the wait: $*"; echo "--- watcher log"; cat "$WLOG"; } >&3
  return 1
}
kept() { [ -s "$VMKIT_STATE_DIR/ha/defs/$1/$2.xml" ]; }
running_on_one() {
  local h n=0
  for h in 1 2 3; do [ "$(vm_state_on "$h" "$1")" = running ] && n=$((n + 1)); done
  [ "$n" -eq 1 ]
}
on_none() {
  local h
  for h in 1 2 3; do [ "$(vm_state_on "$h" "$1")" != running ] || return 1; done
}
logged() { grep -q -- "$1" "$WLOG"; }

@test "the watcher keeps the definitions of the HA VMs, and of no other" {
  until_true 30 kept h2 "$HA1"
  until_true 30 kept h2 "$HA2"
  until_true 30 kept h3 "$HA3"
  refute kept h2 "$PLAIN"
  grep -q "<name>$HA1</name>" "$VMKIT_STATE_DIR/ha/defs/h2/$HA1.xml"
  # One watcher at a time.
  run_tool 4 vmbalance ha -C "$CONF" --once
  assert_stderr_has "busy"
}

@test "a host whose fence fails: its HA VM is not restarted anywhere, and the fence is tried again" {
  "$TOP/scripts/host2" crash "$POOL_DIR/h3"
  until_true 60 logged "fencing host 'h3' failed (exit 1: fence_test: Failed: unable to reach the power switch)"
  grep -qx 'action=off' "$REC3"
  grep -qx 'ipaddr=192.0.2.3' "$REC3"
  # Tried again once per grace time; never restarted without a fence.
  until_true 30 eval '[ "$(grep -c "fencing host '"'h3'"' failed" "$WLOG")" -ge 2 ]'
  on_none "$HA3"
  logged "its HA VMs are not restarted"
  # Back: it answers again, was never fenced, and nothing of it is cleared.
  HOST2_QEMU_CONF="migration_port_min = 49452
migration_port_max = 49515" "$TOP/scripts/host2" start "$POOL_DIR/h3" host3 >/dev/null
  until_true 30 logged "host 'h3' answers again before it was fenced"
  on_host 3 virsh_q dominfo "$HA3" >/dev/null
}

@test "a host that dies: it is fenced (fence-agents' stdin), its HA VMs start elsewhere by priority, the others do not" {
  on_host 2 virsh_q autostart "$HA1" >/dev/null
  "$TOP/scripts/host2" crash "$POOL_DIR/h2"
  until_true 90 running_on_one "$HA1"
  until_true 60 running_on_one "$HA2"
  # The fence ran once, with its options as KEY=VALUE lines and action=off last.
  [ "$(grep -c '^action=off$' "$REC")" -eq 1 ]
  [ "$(sed -n 1,4p "$REC" | tr '\n' ' ')" = "record=$REC ipaddr=192.0.2.2 username=admin action=off " ]
  # By priority: HA1 (90) before HA2 (50).
  local l1 l2
  l1=$(grep -n "restarted HA VM '$HA1'" "$WLOG" | cut -d: -f1)
  l2=$(grep -n "restarted HA VM '$HA2'" "$WLOG" | cut -d: -f1)
  [ "$l1" -lt "$l2" ]
  logged "host 'h2' is fenced"
  on_none "$PLAIN"
  # A guest restarted elsewhere answers.
  local h
  for h in 1 3; do
    [ "$(vm_state_on "$h" "$HA1")" = running ] && on_host "$h" guest_exec "$HA1" 'echo alive' | grep -qx alive
  done
  true
}

@test "a fenced host that comes back is not used until the watcher has cleared its HA VMs' definitions and autostart" {
  local wpid
  wpid=$(cat "$BATS_FILE_TMPDIR/watcher.pid")
  # The watcher is stopped: h2 comes back fenced and stays so.
  kill "$wpid" 2>/dev/null || true
  until_true 30 eval "! kill -0 $wpid 2>/dev/null"
  HOST2_QEMU_CONF="migration_port_min = 49352
migration_port_max = 49415" "$TOP/scripts/host2" start "$POOL_DIR/h2" host2 >/dev/null
  # Its autostart may have tried HA1 again; the disk's lock keeps a second copy from writing.
  [ -e "$VMKIT_STATE_DIR/ha/fenced/h2" ]
  printf 'level 1\npin %s h2\n' "$HA1" > "$BATS_FILE_TMPDIR/pin.conf"
  run_tool 0 vmbalance plan -C "$BATS_FILE_TMPDIR/pin.conf" --interval 1 -o json
  [ "$(jq '.moves | length' <<< "$output")" -eq 0 ]
  jq -e --arg v "$HA1" '.not_placed | index($v) != null' <<< "$output"
  # A watcher clears it: HA1 and HA2 are no longer defined there (PLAIN is), then
  # it is a host like the others.
  run_tool 0 vmbalance ha -C "$CONF" --once --grace 4
  assert_stderr_has "host 'h2' answers again: 2 definitions of HA VMs restarted elsewhere cleared; it is used again"
  [ "$(vm_state_on 2 "$HA1")" = none ]
  [ "$(vm_state_on 2 "$HA2")" = none ]
  [ "$(vm_state_on 2 "$PLAIN")" = "shut off" ]
  [ ! -e "$VMKIT_STATE_DIR/ha/fenced/h2" ]
  running_on_one "$HA1"
  running_on_one "$HA2"
  run_tool 0 vmbalance plan -C "$BATS_FILE_TMPDIR/pin.conf" --interval 1
  grep -Eq "^$HA1 h[13] h2$" <<< "$output"
}

@test "a watcher that reaches fewer than half of the hosts fences nobody; fences are capped per window" {
  local st=$BATS_FILE_TMPDIR/st-quorum hf=$BATS_FILE_TMPDIR/hosts-q cf=$BATS_FILE_TMPDIR/q.conf
  grep '^h1 ' "$POOL_DIR/hosts" > "$hf"
  echo "b1 qemu+unix:///system?socket=$BATS_FILE_TMPDIR/no-b1" >> "$hf"
  echo "b2 qemu+unix:///system?socket=$BATS_FILE_TMPDIR/no-b2" >> "$hf"
  printf 'fence b1 %s record=%s\nfence b2 %s record=%s\n' "$TOP/t/fixtures/fence_test" "$st.rec" \
    "$TOP/t/fixtures/fence_test" "$st.rec" > "$cf"
  VMKIT_STATE_DIR=$st run_tool 0 vmbalance ha -H "$hf" -C "$cf" --once --grace 0
  VMKIT_STATE_DIR=$st run_tool 0 vmbalance ha -H "$hf" -C "$cf" --once --grace 0
  assert_stderr_has "this watcher reaches 1 of 3 hosts: it may be the one cut off, and fences nobody"
  [ ! -e "$st.rec" ]
  # With h2 and h3 in the file, three of five answer: one fence, then the cap.
  grep -E '^h[23] ' "$POOL_DIR/hosts" >> "$hf"
  VMKIT_STATE_DIR=$st run_tool 0 vmbalance ha -H "$hf" -C "$cf" --once --grace 0 --max-fences 1
  assert_stderr_has "host 'b1' is fenced"
  assert_stderr_has "host 'b2' has not answered for"
  assert_stderr_has "(--max-fences): not fenced"
  [ "$(grep -c '^action=off$' "$st.rec")" -eq 1 ]
  # b2 does not answer and is not fenced: it may run a VM of b1 (moved there just
  # before b1 died), so b1's restarts wait for it.
  assert_stderr_has "the HA VMs of fenced host 'b1' wait: host 'b2' does not answer"
  # A host that answers with an error is alive: warned about, never fenced
  # (libvirt's test driver answers, but has no memory counters).
  grep '^h1 ' "$POOL_DIR/hosts" > "$hf.err"
  echo "t1 test:///default" >> "$hf.err"
  printf 'fence t1 %s record=%s\n' "$TOP/t/fixtures/fence_test" "$st.err.rec" > "$cf.err"
  VMKIT_STATE_DIR=$st.err run_tool 0 vmbalance ha -H "$hf.err" -C "$cf.err" --once --grace 0
  VMKIT_STATE_DIR=$st.err run_tool 0 vmbalance ha -H "$hf.err" -C "$cf.err" --once --grace 0
  assert_stderr_has "host 't1' answers with an error"
  [ ! -e "$st.err.rec" ]
  # A fence agent that is not there is found missing at the start, not at a failure.
  printf 'fence b1 fence_no_such_agent\n' > "$cf.missing"
  VMKIT_STATE_DIR=$st run_tool 3 vmbalance ha -H "$hf" -C "$cf.missing" --once
  assert_stderr_has "fence agent 'fence_no_such_agent' of host 'b1' not found"
  # SIGTERM stops a watcher with exit 0 (a service's stop), even mid-probe.
  VMKIT_STATE_DIR=$st "$TOP/vmbalance/vmbalance" ha -H "$hf" -C "$cf" --interval 1 --grace 3600 2>"$st.term" &
  local w=$!
  sleep 2
  kill -TERM "$w"
  local wrc=0
  wait "$w" || wrc=$?
  [ "$wrc" -eq 0 ]
  refute grep -q "interrupted" "$st.term"
  # Bad options and config.
  run_tool 2 vmbalance ha --grace -1
  run_tool 2 vmbalance ha --max-fences 1001
  run_tool 3 vmbalance ha -C "$BATS_FILE_TMPDIR/nosuch.conf" --once
}
