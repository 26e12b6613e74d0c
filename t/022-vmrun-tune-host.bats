#!/usr/bin/env bats
# Limits the host may refuse (HOST.md names both): NIC bandwidth, which libvirt
# applies with tc on the tap device, and a memory hard limit, which can make the
# next QEMU start fail. Either the limit works, or vmrun says so in one line.

load helpers

@test "NIC bandwidth on a bridge NIC: applied, or refused in one line where the host lacks the qdiscs" {
  local vm br mac
  vm=$(vm_name bw)
  br=$(make_bridge)
  run_tool 0 vmrun create "$vm" --template tiny --network "bridge=$br" --start
  mac=$("$TOP/vmrun/vmrun" info "$vm" -o json | jq -r '.nics[0].mac')
  # libvirt shapes inbound traffic with htb and sfq: does this kernel have sfq?
  if tc qdisc add dev "$br" root sfq 2>/dev/null; then
    has_sfq=1
    tc qdisc del dev "$br" root
  else
    has_sfq=0
  fi
  if [ "$has_sfq" = 1 ]; then
    run_tool 0 vmrun tune "$vm" --nic "$mac" --inbound 1M --outbound 512K --live
    run_tool 0 vmrun tune "$vm" -o json
    [ "$(jq '.nics[0].inbound' <<< "$output")" = 1048576 ]
    [ "$(jq '.nics[0].outbound' <<< "$output")" = 524288 ]
  else
    run_tool 1 vmrun tune "$vm" --nic "$mac" --inbound 1M --live
    assert_one_error_line "cannot limit bandwidth of NIC '$mac' of '$vm': "
    [[ "$stderr" == *"qdisc"* ]]
  fi
  # The persistent definition takes the limit either way (no tc until the next boot).
  run_tool 0 vmrun destroy "$vm"
  run_tool 0 vmrun tune "$vm" --nic "$mac" --inbound 2M --config
  run_tool 0 vmrun tune "$vm" --config -o json
  [ "$(jq '.nics[0].inbound' <<< "$output")" = 2097152 ]
}

@test "a memory hard limit: the VM starts under it, or start says the host refuses it in one line" {
  local vm
  vm=$(vm_name memhard)
  run_tool 0 vmrun create "$vm" --template tiny
  run_tool 0 vmrun tune "$vm" --mem-hard 600M --config
  run_tool 0 vmrun tune "$vm" --config -o json
  [ "$(jq .mem_hard <<< "$output")" = $((600 << 20)) ]
  run --separate-stderr "$TOP/vmrun/vmrun" start "$vm"
  if [ "$status" = 0 ]; then
    run_tool 0 vmrun list -o tsv --state running
    grep -q "^$vm	" <<< "$output"
  else
    [ "$status" = 1 ]
    assert_one_error_line "cannot start VM '$vm': this host refuses its memory hard limit"
    # The way out that the message names works.
    run_tool 0 vmrun tune "$vm" --mem-hard 0 --config
    run_tool 0 vmrun start "$vm"
  fi
}
