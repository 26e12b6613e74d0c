#!/usr/bin/env bats
# vmmigrate --tls: the migration stream encrypted by libvirt's TLS migration. The
# test makes its own CA and certificates (openssl) and gives them to h2 and h3
# through their qemu.conf; this machine's daemon (h1) has none. On the wire (the
# loopback, where these hosts' streams run), a marker the guest holds in memory
# is seen in a plain move and not in an encrypted one.

load helpers

setup_file() {
  local pki=$VMKIT_TEST_RUN/pki-$FILETAG
  make_test_pki "$pki"
  pool_start 3 "migrate_tls_x509_cert_dir = \"$pki\""
}
teardown_file() { pool_stop; }
teardown() { pool_teardown; }

# capture_move K ARGS...: runs vmmigrate ARGS while capturing the loopback traffic
# to host hK's incoming-migration ports (t/helpers.bash: 49152 + 100 K ...), and
# prints how many times the guest's marker crossed in clear.
capture_move() {
  local k=$1 cap pid lo
  shift
  cap=$BATS_TEST_TMPDIR/cap.$RANDOM
  lo=$((49152 + 100 * k))
  tcpdump -i lo -s 0 -U -w "$cap" "tcp portrange $lo-$((lo + 63))" 2>/dev/null &
  pid=$!
  sleep 1
  run_tool 0 vmmigrate "$@" || { kill "$pid"; return 1; }
  sleep 1
  kill "$pid"
  wait "$pid" || true
  # The stream was there to see: more than the 8 MB the guest holds crossed.
  [ "$(stat -c %s "$cap")" -gt 8000000 ] || { echo "captured only $(stat -c %s "$cap") bytes" >&2; return 1; }
  grep -a -c VMKITMARKER "$cap" || true
}

@test "--tls encrypts the stream: the guest's memory crosses in clear without it and not with it; a host without certificates refuses" {
  local vm n
  vm=$(vm_name tls)
  run_tool 0 vmrun -c h2 create "$vm" --template tiny --start --paused
  run_tool 0 vmrun -c h2 wait "$vm" --console-line 'vmkit-guest: up' --resume --timeout 120
  # The marker, 8 MB of it in the guest's RAM (its root is an initramfs).
  on_host 2 guest_exec "$vm" 'yes VMKITMARKER | head -c 8000000 > /tmp/marker'
  n=$(capture_move 3 -c h2 "$vm" h3)
  [ "$n" -gt 0 ]
  [ "$(vm_state_on 3 "$vm")" = running ]
  n=$(capture_move 2 -c h3 "$vm" h2 --tls)
  [ "$n" -eq 0 ]
  [ "$(vm_state_on 2 "$vm")" = running ]
  [ "$(on_host 2 guest_exec "$vm" 'head -c 11 /tmp/marker')" = VMKITMARKER ]
  # h1 has no certificates: the move fails in one line and the VM stays on h2.
  run_tool 1 vmmigrate -c h2 "$vm" h1 --tls
  assert_one_error_line "cannot move '$vm' to h1: "
  [ "$(vm_state_on 2 "$vm")" = running ]
  [ "$(vm_state_on 1 "$vm")" = none ]
}
