#!/usr/bin/env bats
# vmrun stop against a guest that ignores shutdown requests (its kernel command
# line turns off its power-button handler and its guest agent), and wait timeouts.

load helpers

@test "stop --no-force times out with exit 5; stop forces the VM off after --timeout" {
  local vm
  vm=$(vm_name deaf)
  boot_vm "$vm" --cmdline "console=ttyS0 panic=-1 quiet vmkit.acpi=ignore vmkit.agent=off"
  run_tool 5 vmrun stop "$vm" --timeout 3 --no-force
  assert_one_error_line "VM '$vm' did not shut down within 3 s"
  run_tool 0 vmrun list -o tsv --state running
  grep -q "^$vm	running" <<< "$output"
  run_tool 0 vmrun stop "$vm" --timeout 2
  [[ "$stderr" == *"forced VM '$vm' off after 2 s"* ]]
  run_tool 0 vmrun wait "$vm" --state shutoff --timeout 5
  refute grep -q 'vmkit-guest: going down' <<< "$(console "$vm")"
}

@test "stop of several VMs asks all at once: one that shuts down is done before one forced off at the deadline" {
  local a b c
  a=$(vm_name deaf)
  b=$(vm_name one)
  c=$(vm_name two)
  run_tool 0 vmrun create "$a" --template tiny --start --cmdline "console=ttyS0 panic=-1 quiet vmkit.acpi=ignore vmkit.agent=off"
  run_tool 0 vmrun create "$b" --template tiny --start
  run_tool 0 vmrun create "$c" --template tiny --start
  run_tool 0 vmrun wait "$a" --console-line 'vmkit-guest: up' --timeout 120
  run_tool 0 vmrun wait "$b" --console-line 'vmkit-guest: up' --timeout 120
  run_tool 0 vmrun wait "$c" --console-line 'vmkit-guest: up' --timeout 120
  # The deaf VM comes first: stopped one after another, the others would be asked
  # only after its timeout, and their messages would follow its own.
  run_tool 3 vmrun stop "$a" "$(vm_name nosuch)" "$b" "$c" --timeout 20
  [[ "$stderr" == *"no such VM"* ]]
  grep -n . <<< "$stderr" >&3
  local nb nc na
  nb=$(grep -n "stopped VM '$b'" <<< "$stderr" | cut -d: -f1)
  nc=$(grep -n "stopped VM '$c'" <<< "$stderr" | cut -d: -f1)
  na=$(grep -n "forced VM '$a' off after 20 s" <<< "$stderr" | cut -d: -f1)
  [ -n "$na" ]
  [ -n "$nb" ]
  [ -n "$nc" ]
  [ "$nb" -lt "$na" ]
  [ "$nc" -lt "$na" ]
  console "$b" | grep -q 'vmkit-guest: going down'
  console "$c" | grep -q 'vmkit-guest: going down'
}

@test "wait times out with exit 5; bad wait requests exit 2; unknown VM exits 3" {
  local vm
  vm=$(vm_name wait)
  boot_vm "$vm"
  run_tool 5 vmrun wait "$vm" --console-line 'this line is never printed' --timeout 2
  assert_one_error_line "timed out after 2 s waiting for the console line of VM '$vm'"
  run_tool 5 vmrun wait "$vm" --state paused --timeout 1
  run_tool 2 vmrun wait "$vm"
  run_tool 2 vmrun wait "$vm" --state dancing
  run_tool 2 vmrun wait "$vm" --new
  run_tool 3 vmrun wait "$(vm_name nosuch)" --state running
  run_tool 0 vmrun destroy "$vm"
  run_tool 0 vmrun destroy "$vm"
  run_tool 4 vmrun destroy "$vm" --strict
}
