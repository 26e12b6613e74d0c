#!/usr/bin/env bats
# Traffic filters on the wire (HOST.md: nwfilter's ebtables rules work here): a
# guest on a test bridge sends from a forged IP and from a forged MAC, through its
# agent; with clean-traffic the frames never reach the bridge, without it they do.
# Each capture also holds the guest's own frames, so that an empty one proves a drop.

load helpers

# capture BR FILTER VM COMMAND: runs COMMAND in the guest while tcpdump watches the
# bridge for FILTER, into $CAP.
capture() {
  local br=$1 filter=$2 vm=$3 cmd=$4 pid
  CAP=$BATS_TEST_TMPDIR/cap
  : > "$CAP"
  tcpdump -i "$br" -nn -e -l "$filter" > "$CAP" 2>/dev/null &
  pid=$!
  sleep 1
  guest_exec "$vm" "$cmd" > /dev/null || true
  sleep 1
  kill "$pid"
  wait "$pid" || true
}
# frames TEXT: the captured frames that mention TEXT.
frames() { grep -c -F -- "$1" "$CAP" || true; }

@test "--filter: clean-traffic drops frames from a forged IP or MAC and passes the guest's own; tune takes it off and on; --allow-port lets in only its ports; bad input" {
  local vm br mac net=10.251.$((RANDOM % 250))
  br=$(make_bridge)
  ip addr add "$net.1/24" dev "$br"
  vm=$(vm_name f)
  # Bad input first: nothing is made.
  run_tool 3 vmrun create "$vm" --template tiny --network "bridge=$br" --filter=no-such-filter
  assert_one_error_line "no traffic filter 'no-such-filter' on "
  refute virsh_q dominfo "$vm"
  run_tool 2 vmrun create "$vm" --template tiny --ip "$net.2"
  assert_stderr_has "--ip needs --filter"
  run_tool 2 vmrun create "$vm" --template tiny --filter
  assert_stderr_has "--filter needs a network= or bridge= NIC"
  run_tool 2 vmrun create "$vm" --template tiny --network "bridge=$br" --filter --ip 10.0.0.300
  assert_stderr_has "invalid --ip '10.0.0.300'"
  run_tool 2 vmrun create "$vm" --template tiny --network "bridge=$br" --allow-port 0
  assert_stderr_has "invalid --allow-port"
  run_tool 3 vmrun create "$vm" --template tiny --network "bridge=$br" --filter=no-such-filter --allow-port 22 --dry-run
  assert_one_error_line "no traffic filter 'no-such-filter' on "
  refute virsh_q dominfo "$vm"

  boot_vm "$vm" --network "bridge=$br" --filter --ip "$net.2"
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq -r '.nics[0].filter' <<< "$output")" = clean-traffic ]
  [ "$(jq -r '.nics[0].filter_ip' <<< "$output")" = "$net.2" ]
  mac=$(jq -r '.nics[0].mac' <<< "$output")
  guest_exec "$vm" "ip link set eth0 up && ip addr add $net.2/24 dev eth0 && ip addr add $net.3/24 dev eth0"
  # Its own address passes: the host answers.
  guest_exec "$vm" "ping -c 2 -W 2 $net.1"
  # A forged IP, and a forged MAC, never reach the bridge; its own frames do.
  local spoof_ip="ping -c 2 -W 1 $net.1; ping -c 3 -W 1 -I $net.3 $net.1"
  local spoof_mac="ping -c 2 -W 1 $net.1; ip link set eth0 address 52:54:00:00:be:ef && ping -c 3 -W 1 $net.1; ip link set eth0 address $mac"
  capture "$br" "icmp" "$vm" "$spoof_ip"
  [ "$(frames "$net.2 >")" -gt 0 ]
  [ "$(frames "$net.3 >")" -eq 0 ]
  capture "$br" "icmp" "$vm" "$spoof_mac"
  [ "$(frames "$mac >")" -gt 0 ]
  [ "$(frames "52:54:00:00:be:ef >")" -eq 0 ]

  # Taken off, live: both pass.
  run_tool 0 vmrun tune "$vm" --filter none
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq -r '.nics[0].filter // "none"' <<< "$output")" = none ]
  capture "$br" "icmp" "$vm" "$spoof_ip"
  [ "$(frames "$net.3 >")" -gt 0 ]
  capture "$br" "icmp" "$vm" "$spoof_mac"
  [ "$(frames "52:54:00:00:be:ef >")" -gt 0 ]

  # And on again, live and in the definition; an unknown filter is refused.
  run_tool 3 vmrun tune "$vm" --filter=no-such-filter
  assert_one_error_line "no traffic filter 'no-such-filter' on "
  run_tool 0 vmrun tune "$vm" --filter --ip "$net.2"
  capture "$br" "icmp" "$vm" "$spoof_ip"
  [ "$(frames "$net.2 >")" -gt 0 ]
  [ "$(frames "$net.3 >")" -eq 0 ]
  virsh_q dumpxml --inactive "$vm" | grep -q "<filterref filter='clean-traffic'>"

  # --allow-port: in, only connections to the ports named (and ICMP); the filter
  # under it and the IP stay.
  listen() { guest_exec "$vm" "(nc -l -p $1 </dev/null >/dev/null 2>&1 &)"; }
  reach() { timeout 5 bash -c "exec 3<>/dev/tcp/$net.2/$1"; }
  listen 2323
  reach 2323
  run_tool 2 vmrun tune "$vm" --allow-port 70000
  assert_stderr_has "invalid --allow-port"
  run_tool 0 vmrun tune "$vm" --allow-port 2222 --allow-port 5353/udp
  run_tool 0 vmrun info "$vm" -o json
  [ "$(jq -r '.nics[0].filter' <<< "$output")" = vmkit-inbound-clean-traffic ]
  [ "$(jq -r '.nics[0].filter_ip' <<< "$output")" = "$net.2" ]
  listen 2323
  listen 2222
  reach 2222
  refute reach 2323
  guest_exec "$vm" "ping -c 2 -W 2 $net.1"
  # Its own spoofing is still dropped.
  capture "$br" "icmp" "$vm" "$spoof_ip"
  [ "$(frames "$net.2 >")" -gt 0 ]
  [ "$(frames "$net.3 >")" -eq 0 ]
  # The listener on 2323 was there all along: without the filter it is reached.
  run_tool 0 vmrun tune "$vm" --filter none
  reach 2323
}
