#!/usr/bin/env bats
# vmbalance collect, plan and run on a pool of three real libvirt hosts on this
# machine (h2, h3, h4: namespaced daemons, HOST.md; this machine's own daemon, h1,
# is left out of vmbalance's pool, so that VMs that are not this file's are never
# counted or moved), with three TCG guests that start on h2. The hosts share this
# machine's kernel, so their own load (the machine's, not theirs) is left out
# with the hosts file's own-load=none tag: each host's load is its VMs'. The tests
# run in order: each starts from where the VMs were left by the one before.

load helpers

setup_file() {
  pool_start 4
  grep -v '^h1 ' "$POOL_DIR/hosts" | sed 's/$/ own-load=none/' > "$POOL_DIR/bal-hosts"
  export VMKIT_HOSTS=$POOL_DIR/bal-hosts
  export A B C
  A=$(file_vm_name a) B=$(file_vm_name b) C=$(file_vm_name c)
  # One after the other: on another host, vmrun wait follows the console from
  # when it attaches, and a guest that came up before would not be seen.
  local vm
  for vm in "$A" "$B" "$C"; do
    run_tool 0 vmrun -c h2 create "$vm" --template tiny --start
    run_tool 0 vmrun -c h2 wait "$vm" --console-line 'vmkit-guest: up' --timeout 120
  done
  export CONF=$BATS_FILE_TMPDIR/vmbalance.conf
}
teardown_file() { pool_stop; }
teardown() { :; }

# where VM: the one host that has VM (h2, h3 or h4), or a message and failure when
# it is on none or on several.
where() {
  local h
  h=$(vm_hosts_of "$1")
  [ "$(wc -w <<< "$h")" -eq 1 ] || { echo "$1 is on: '$h'" >&3; return 1; }
  [ "$(vm_state_on "${h#h}" "$1")" = running ] || { echo "$1 is not running on $h" >&3; return 1; }
  echo "$h"
}

# busy VM / idle VM: a loop that keeps the guest's CPU busy, or its end.
busy() { on_host "${2#h}" guest_exec "$1" '(while :; do :; done) </dev/null >/dev/null 2>&1 & echo $! > /tmp/busy'; }
idle() { on_host "${2#h}" guest_exec "$1" 'kill $(cat /tmp/busy)'; }

# moves: the move lines of the plan in $output.
moves() { grep -v '^#' <<< "$output" | grep -c . || true; }
# assert_moves N: the plan in $output has N moves (else it is shown).
assert_moves() {
  [ "$(moves)" -eq "$1" ] && return 0
  { echo "expected $1 moves; the plan:"; echo "$output"; echo "--- stderr"; echo "$stderr"; } >&3
  return 1
}

@test "bad input: a config file's error names its line, a named config must exist, bad options; nothing moves" {
  printf 'level 3\nweight cpu 2\nspeed 9\n' > "$CONF"
  run_tool 2 vmbalance plan -C "$CONF"
  assert_one_error_line
  assert_stderr_has "$CONF: line 3: "
  printf 'anti-affinity x y\naffinity x y\n' > "$CONF"
  run_tool 2 vmbalance plan -C "$CONF"
  assert_stderr_has "$CONF: line 1: 'x' and 'y' are kept apart here and together by affinity rules"
  run_tool 3 vmbalance plan -C "$BATS_FILE_TMPDIR/nosuch.conf"
  assert_one_error_line
  run_tool 2 vmbalance plan --level 6
  run_tool 2 vmbalance plan --policy pack
  run_tool 2 vmbalance plan --interval 0
  run_tool 2 vmbalance run --parallel 0
  run_tool 2 vmbalance plan extra-argument
  run_tool 2 vmbalance collect --alert 'host.cpu>'
  run_tool 2 vmbalance collect --alert 'host.temperature>50'
  run_tool 2 vmbalance collect --alert 'host.cpu>90' -o prom
  run_tool 3 vmbalance collect h7
  run_tool 3 vmbalance collect -H "$BATS_FILE_TMPDIR/nosuch-hosts"
  printf 'h2 %s cpus=many\n' "$H2_URI" > "$BATS_FILE_TMPDIR/badtag"
  run_tool 2 vmbalance collect -H "$BATS_FILE_TMPDIR/badtag"
  assert_stderr_has "invalid cpus= tag 'many'"
  [ "$(where "$A")" = h2 ] && [ "$(where "$B")" = h2 ] && [ "$(where "$C")" = h2 ]
}

@test "collect: each host and VM with rates, as tsv, json and Prometheus text; a host that does not answer, or hangs, is reported, and --alert exits 6" {
  run_tool 0 vmbalance collect -o json
  [ "$(jq '[.[] | select(.kind == "host" and .up)] | length' <<< "$output")" -eq 3 ]
  [ "$(jq -r '.[] | select(.kind == "host" and .host == "h2") | .vms' <<< "$output")" -eq 3 ]
  [ "$(jq -r --arg a "$A" '.[] | select(.vm == $a) | .host' <<< "$output")" = h2 ]
  jq -e --arg a "$A" '.[] | select(.vm == $a) | .memory == 268435456 and .cpu_percent >= 0 and .state == "running"' <<< "$output"
  jq -e '.[] | select(.host == "h3" and .kind == "host") | .vms == 0 and .cpus > 0 and .memory > 0' <<< "$output"
  run_tool 0 vmbalance collect -o tsv h3
  [ "${#lines[@]}" -eq 1 ]
  [[ "${lines[0]}" == "h3		up	yes	"* ]]
  run_tool 0 vmbalance collect -o prom
  grep -qx 'vmkit_host_up{host="h4"} 1' <<< "$output"
  grep -qx "vmkit_host_vms{host=\"h2\"} 3" <<< "$output"
  grep -Eqx "vmkit_vm_cpu_percent\\{host=\"h2\",vm=\"$B\"\\} [0-9.e+-]+" <<< "$output"
  grep -qx "vmkit_vm_memory_bytes{host=\"h2\",vm=\"$C\"} 268435456" <<< "$output"
  [ "$(grep -c '^# TYPE vmkit_host_up gauge$' <<< "$output")" -eq 1 ]

  # A host that does not answer: reported in its row and on stderr, not fatal.
  cp "$VMKIT_HOSTS" "$BATS_FILE_TMPDIR/hosts+"
  echo "h9 qemu+unix:///system?socket=$BATS_FILE_TMPDIR/no-such-sock cpus=4" >> "$BATS_FILE_TMPDIR/hosts+"
  run_tool 0 vmbalance collect -H "$BATS_FILE_TMPDIR/hosts+" -o json
  [ "$(jq -r '.[] | select(.host == "h9") | .state' <<< "$output")" = unreachable ]
  jq -e '.[] | select(.host == "h9") | .error | test("no-such-sock")' <<< "$output"
  assert_stderr_has "host 'h9' did not answer"

  # A host that accepts the connection and never answers costs its timeout only.
  local sock=$BATS_FILE_TMPDIR/hung.sock
  perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 5) or die;
    @c = (); while (1) { push @c, $s->accept() }' "$sock" &
  local hung=$!
  until_sock() { [ -S "$sock" ]; }
  for _ in $(seq 50); do until_sock && break; sleep 0.1; done
  echo "h8 qemu+unix:///system?socket=$sock" >> "$BATS_FILE_TMPDIR/hosts+"
  local t0=$SECONDS
  run_tool 0 vmbalance collect -H "$BATS_FILE_TMPDIR/hosts+" --timeout 3 -o json
  kill "$hung"
  [ $((SECONDS - t0)) -lt 30 ]
  [ "$(jq -r '.[] | select(.host == "h8") | .error' <<< "$output")" = "no answer within 3 s" ]
  [ "$(jq '[.[] | select(.kind == "host" and .up)] | length' <<< "$output")" -eq 3 ]
  sed -i '/^h8 /d' "$BATS_FILE_TMPDIR/hosts+"

  # Alerts: what crosses, exit 6; nothing crosses, exit 0.
  run_tool 6 vmbalance collect -H "$BATS_FILE_TMPDIR/hosts+" --alert 'host.up<1' --alert 'host.vms>=3' -o tsv
  [ "${#lines[@]}" -eq 2 ]
  grep -q '^host.up<1	h9		0.0	cannot connect: ' <<< "$output"
  grep -q '^host.vms>=3	h2		3.0	$' <<< "$output"
  run_tool 6 vmbalance collect --alert 'vm.memory>1K' -o json
  [ "$(jq length <<< "$output")" -eq 3 ]
  run_tool 0 vmbalance collect --alert 'host.cpu>100' --alert 'vm.net>1T' -o tsv
  [ -z "$output" ]
  # No host answers: the rows, and exit 1.
  grep '^h9 ' "$BATS_FILE_TMPDIR/hosts+" > "$BATS_FILE_TMPDIR/hosts-none"
  run_tool 1 vmbalance collect -H "$BATS_FILE_TMPDIR/hosts-none" -o tsv
  [[ "$output" == "h9		unreachable	no"* ]]
  assert_stderr_has "no host of $BATS_FILE_TMPDIR/hosts-none answered"
}

@test "balance: three busy guests on one host are spread over the three hosts, within a pin; the spread drops" {
  busy "$A" h2 && busy "$B" h2 && busy "$C" h2
  # Level 5: any move that helps. (At level 3 a host is relieved only while it is
  # 10 points above the mean: how far two moves get depends on how much CPU the
  # guests get on this machine, which is shared.)
  printf 'level 5\npin %s h2 h3\n' "$C" > "$CONF"
  run_tool 0 vmbalance plan -C "$CONF" --interval 3 -v
  [ "${lines[0]}" = '#!vmkit-plan 1' ]
  assert_moves 2
  # Two of the three leave h2, to two hosts; C never to h4.
  [ "$(grep -v '^#' <<< "$output" | awk '{print $3}' | sort -u | wc -l)" -eq 2 ]
  refute grep -q "^$C h2 h4" <<< "$output"
  grep -Eq '# balance: gain [0-9.]+, cost [0-9.]+ s$' <<< "$output"
  assert_stderr_has "2 moves; spread of the hosts' load"
  # The plan as JSON says the same.
  run_tool 0 vmbalance plan -C "$CONF" --interval 3 -o json
  [ "$(jq '.moves | length' <<< "$output")" -eq 2 ]
  jq -e '.spread_after < .spread_before' <<< "$output"

  run_tool 0 vmbalance run -C "$CONF" --interval 3 -o json
  [ "$(jq '.moves | length' <<< "$output")" -eq 2 ]
  jq -e '[.moves[] | .result == "moved"] | all' <<< "$output"
  jq -e '.failed == 0 and .spread_after < .spread_before / 2' <<< "$output"
  local ha hb hc
  ha=$(where "$A") && hb=$(where "$B") && hc=$(where "$C")
  [ "$(printf '%s\n' "$ha" "$hb" "$hc" | sort -u | wc -l)" -eq 3 ]
  [ "$hc" != h4 ]
  # Balanced: nothing left to move.
  run_tool 0 vmbalance plan -C "$CONF" --interval 3
  assert_moves 0
  idle "$A" "$ha" && idle "$B" "$hb" && idle "$C" "$hc"
}

@test "anti-affinity at level 1: of two VMs that share a host, the one of lower priority moves, and nothing else" {
  local ha hb hc
  ha=$(where "$A") && hb=$(where "$B")
  # B joins A, by hand.
  VMKIT_VIRT_TYPE=qemu run_tool 0 vmmigrate -c "$hb" "$B" "$ha" -q
  printf 'level 1\nanti-affinity %s %s\npriority %s 90\n' "$A" "$B" "$A" > "$CONF"
  run_tool 0 vmbalance plan -C "$CONF" --interval 1 -v
  assert_moves 1
  grep -Eq "^$B $ha h[234]  # anti-affinity$" <<< "$output"
  run_tool 0 vmbalance run -C "$CONF" --interval 1
  [ "$(where "$A")" = "$ha" ]
  [ "$(where "$B")" != "$ha" ]
  run_tool 0 vmbalance plan -C "$CONF" --interval 1
  assert_moves 0
}

@test "maintenance: a host is emptied, nothing goes onto it, and a run killed at a random instant is finished by the next" {
  local h vm
  h=$(where "$A")
  printf 'level 1\nmaintenance %s\n' "$h" > "$CONF"
  run_tool 0 vmbalance plan -C "$CONF" --interval 1 -v
  [ "$(moves)" -ge 1 ]
  refute grep -Eq " $h( |$)" <<< "$(grep -v '^#' <<< "$output" | awk '{print $3}')"
  grep -q "# host in maintenance" <<< "$output"
  # A VM whose lock another run of this machine holds (a move that rolls back
  # after its run was killed) stays where it is, even on a host in maintenance.
  local huuid vuuid dir=${VMKIT_LOCK_DIR:-/run/vmkit/locks} tries=0
  huuid=$(on_host "${h#h}" virsh_q capabilities | grep -m1 -o '<uuid>[^<]*' | cut -c7-)
  vuuid=$(on_host "${h#h}" virsh_q domuuid "$A")
  mkdir -p "$dir"
  perl -MFcntl -e 'open(my $f, ">>", $ARGV[0]) or die "$!";
    fcntl($f, F_SETLK, pack("s s x4 q q i x4", F_WRLCK, SEEK_SET, 0, 0, 0)) or die "$!"; sleep 600' \
    "$dir/$huuid.vm.$vuuid.lock" &
  local holder=$!
  until grep -Eq "POSIX +ADVISORY +WRITE +$holder " /proc/locks; do
    tries=$((tries + 1))
    [ $tries -lt 200 ]
    sleep 0.05
  done
  run_tool 0 vmbalance plan -C "$CONF" --interval 1
  kill "$holder"
  wait "$holder" || true
  refute grep -q "^$A " <<< "$output"
  assert_stderr_has "VM '$A' is locked by another run (a move, a snapshot): it stays where it is"
  # kill -9 while it samples or moves: the moves it started are stopped cleanly
  # (vmmigrate gets SIGTERM with its parent gone) or finished, never half-made.
  "$TOP/vmbalance/vmbalance" run -C "$CONF" --interval 1 -q >/dev/null 2>&1 &
  local pid=$! i
  # Killed while a move runs, at a random instant of it.
  for i in $(seq 100); do pgrep -x vmmigrate >/dev/null && break; sleep 0.1; done
  sleep "0.$((RANDOM % 10))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # vmmigrate got SIGTERM with its parent gone: it rolls its move back or ends it.
  for i in $(seq 600); do pgrep -x vmmigrate >/dev/null || break; sleep 0.1; done
  refute pgrep -x vmmigrate
  for vm in "$A" "$B" "$C"; do where "$vm" >/dev/null; done
  run_tool 0 vmbalance run -C "$CONF" --interval 1
  for vm in "$A" "$B" "$C"; do [ "$(where "$vm")" != "$h" ]; done
}

@test "consolidate: the VMs are packed onto fewer hosts, an anti-affinity pair kept apart, and the empty host named for power-off" {
  printf 'policy consolidate\nanti-affinity %s %s\n' "$A" "$C" > "$CONF"
  run_tool 0 vmbalance run -C "$CONF" --interval 1 -o json
  jq -e '.failed == 0' <<< "$output"
  [ "$(jq '.power_off | length' <<< "$output")" -eq 1 ]
  local off ha hb hc
  off=$(jq -r '.power_off[0]' <<< "$output")
  ha=$(where "$A") && hb=$(where "$B") && hc=$(where "$C")
  [ "$ha" != "$hc" ]
  [ "$hb" = "$ha" ] || [ "$hb" = "$hc" ]
  [ "$off" != "$ha" ] && [ "$off" != "$hc" ]
  # Packed: nothing left to move, and the plan says which host can be turned off.
  run_tool 0 vmbalance plan -C "$CONF" --interval 1
  assert_moves 0
  grep -qx "# power-off $off" <<< "$output"
}

@test "power on: when the hosts that answer are past their headroom, a host that does not answer is named to power on" {
  local hb
  hb=$(where "$B")
  # One host with room for less than its VMs (memory= tag), one that is off.
  grep "^$hb " "$VMKIT_HOSTS" | sed 's/$/ memory=300M/' > "$BATS_FILE_TMPDIR/hosts-on"
  echo "h9 qemu+unix:///system?socket=$BATS_FILE_TMPDIR/no-such-sock cpus=2 memory=4G" >> "$BATS_FILE_TMPDIR/hosts-on"
  printf 'policy consolidate\n' > "$CONF"
  run_tool 0 vmbalance plan -H "$BATS_FILE_TMPDIR/hosts-on" -C "$CONF" --interval 1
  grep -qx "# power-on h9" <<< "$output"
  assert_stderr_has "host 'h9' did not answer"
  # With room enough, nothing to power on.
  sed -i 's/ memory=300M/ memory=8G/' "$BATS_FILE_TMPDIR/hosts-on"
  run_tool 0 vmbalance plan -H "$BATS_FILE_TMPDIR/hosts-on" -C "$CONF" --interval 1
  refute grep -q "power-on" <<< "$output"
}
