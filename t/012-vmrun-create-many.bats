#!/usr/bin/env bats
# vmrun create of several VMs in one command: names, or --count with a pattern;
# one connection, starts overlapped, each VM all or nothing, a report of each.

load helpers

@test "create --count N with a pattern: N linked clones, started paused, a report of each" {
  local p
  p=$(vm_name "m%02d")
  run_tool 0 vmrun create "$p" --count 3 --template tiny --start --paused -o tsv
  [ "${#lines[@]}" = 3 ]
  [ "${lines[0]}" = "$(vm_name m01)	paused	" ]
  [ "${lines[2]}" = "$(vm_name m03)	paused	" ]
  [[ "$stderr" == *"created 3 of 3 VMs"* ]]
  local n
  for n in 01 02 03; do
    [ "$(virsh_q domstate "$(vm_name "m$n")")" = paused ]
    [ "$(qemu-img info -U --output=json "$VMKIT_STORAGE_DIR/$(vm_name "m$n").qcow2" | jq -r '."backing-filename"')" = \
      "$VMKIT_TEMPLATE_DIR/tiny.qcow2" ]
  done
  run_tool 0 vmrun resume "$(vm_name m02)"
  run_tool 0 vmrun wait "$(vm_name m02)" --console-line 'vmkit-guest: up' --timeout 120
}

@test "create of several names: one that cannot be made fails alone and leaves nothing; the others are made" {
  local a b c
  a=$(vm_name a)
  b=$(vm_name b)
  c=$(vm_name c)
  run_tool 0 vmrun create "$b" --network none
  run_tool 4 vmrun create "$a" "$b" "$c" --template tiny --disk 64M -o json
  [ "$(jq -r '.[0].result' <<< "$output")" = defined ]
  [ "$(jq -r '.[1].result' <<< "$output")" = failed ]
  [ "$(jq -r '.[2].result' <<< "$output")" = defined ]
  assert_stderr_has "VM '$b' already exists"
  assert_stderr_has "created 2 of 3 VMs"
  [ -f "$VMKIT_STORAGE_DIR/$a-disk1.qcow2" ]
  [ -f "$VMKIT_STORAGE_DIR/$c-disk1.qcow2" ]
  [ ! -e "$VMKIT_STORAGE_DIR/$b-disk1.qcow2" ]
  # b was left as it was: no template, no disk.
  run_tool 0 vmrun info "$b" -o json
  [ "$(jq -r .template <<< "$output")" = null ]
  [ "$(jq '.disks | length' <<< "$output")" = 0 ]
}

@test "create of several: usage errors before anything is made" {
  local p
  p=$(vm_name "u%d")
  run_tool 2 vmrun create "$(vm_name u)" --count 2 --template tiny
  assert_stderr_has "with --count, NAME must hold one %d"
  run_tool 2 vmrun create "$p" "$p" --count 2 --template tiny
  run_tool 2 vmrun create "$p" --count 0 --template tiny
  run_tool 2 vmrun create "$(vm_name u%d%d)" --count 2 --template tiny
  run_tool 2 vmrun create "$(vm_name x)" "$(vm_name y)" --template tiny --hostname h
  run_tool 2 vmrun create "$p" --count 2 --template tiny --hostname h
  run_tool 2 vmrun create "$(vm_name x)" "$(vm_name y)" --template tiny --mac 52:54:00:00:00:01
  run_tool 2 vmrun create "$(vm_name x)" "$(vm_name y)" --image "$VMKIT_FIXTURE/root.qcow2"
  run_tool 2 vmrun create "$(vm_name x)" "$(vm_name x)" --template tiny
  run_tool 2 vmrun create "$(vm_name x)" --template tiny --paused
  [ -z "$(ls "$VMKIT_STORAGE_DIR" | grep "^$(vm_name '')" || true)" ]
}

@test "create --count with a hostname pattern: each clone customized with its own name" {
  local p
  p=$(vm_name "h%d")
  run_tool 0 vmrun create "$p" --count 2 --template tiny --hostname "web-%02d" --start
  run_tool 0 vmrun wait "$(vm_name h1)" --console-line 'vmkit-guest: up' --timeout 120
  run_tool 0 vmrun wait "$(vm_name h2)" --console-line 'vmkit-guest: up' --timeout 120
  console "$(vm_name h1)" | grep -qx 'vmkit-guest: hostname=web-01'
  console "$(vm_name h2)" | grep -qx 'vmkit-guest: hostname=web-02'
}
