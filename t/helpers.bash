# Shared by every bats file: load with `load helpers`.
#
# The suite runs the real thing: the tools in this tree against the real libvirtd
# (qemu:///system), guests under TCG (HOST.md: KVM guests hang on the build machine),
# real qemu-img and real libguestfs. Everything a test makes lives under
# $VMKIT_TEST_RUN (a per-run folder on disk, removed at the end) and every VM it
# defines is named with the run's prefix, so teardown can remove it even when the
# test failed halfway.

bats_require_minimum_version 1.5.0

TOP=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
TOOLS="vmrun vmsnap vmmigrate vmbackup p2v-agent p2v-convert vmbalance vmpatch"

# One-letter file tag from the file's number: t/020-vmrun-lifecycle.bats -> 020.
FILETAG=$(basename "$BATS_TEST_FILENAME" .bats | cut -d- -f1)

# run_tool EXPECTED_RC TOOL ARGS...: runs a tool of this tree; fails the test,
# showing both streams, unless it exits with exactly EXPECTED_RC. Sets $output
# (stdout), $stderr, $lines and $stderr_lines.
run_tool() {
  local want=$1 tool=$2
  shift 2
  run --separate-stderr "$TOP/$tool/$tool" "$@"
  if [ "$status" -ne "$want" ]; then
    {
      echo "command: $tool $*"
      echo "expected exit $want, got $status"
      echo "--- stdout"; echo "$output"
      echo "--- stderr"; echo "$stderr"
    } >&3
    return 1
  fi
}

# The tool wrote exactly one line on stderr, containing TEXT.
assert_one_error_line() {
  local n
  n=$(printf '%s' "$stderr" | grep -c '')
  if [ "$n" -ne 1 ] || [[ "$stderr" != *"$1"* ]]; then
    echo "expected one stderr line containing '$1', got $n:" >&3
    echo "$stderr" >&3
    return 1
  fi
}

# The tool's stderr contains TEXT (shown whole when it does not).
assert_stderr_has() {
  [[ "$stderr" == *"$1"* ]] && return 0
  echo "expected stderr to contain '$1'; it was:" >&3
  echo "$stderr" >&3
  return 1
}

# vm_name SUFFIX: a VM name unique to this run, file and test.
vm_name() { echo "${VMKIT_TEST_PREFIX}${FILETAG}-${BATS_TEST_NUMBER}-$1"; }
# file_vm_name SUFFIX: a VM shared by the tests of one file (setup_file).
file_vm_name() { echo "${VMKIT_TEST_PREFIX}${FILETAG}-f-$1"; }

# virsh on this host, or on the one VIRSH_URI names.
virsh_q() { virsh -q -c "${VIRSH_URI:-qemu:///system}" "$@"; }

# Removes every VM whose name starts with PREFIX, with its snapshot records.
remove_vms() {
  local prefix=$1 d
  # Never with an empty or foreign prefix: that would match VMs this run did not make.
  case "$prefix" in vmkt?*) ;; *) echo "remove_vms: refusing prefix '$prefix'" >&2; return 1 ;; esac
  for d in $(virsh_q list --all --name | grep "^$prefix" || true); do
    virsh_q destroy "$d" >/dev/null 2>&1 || true
    virsh_q undefine "$d" --snapshots-metadata --checkpoints-metadata --managed-save --nvram >/dev/null 2>&1 ||
      virsh_q undefine "$d" >/dev/null 2>&1 || true
  done
}

# A VM from the shared fixture template, started, waiting until the guest is up.
# boot_vm NAME [vmrun create options...]
boot_vm() {
  local name=$1
  shift
  run_tool 0 vmrun create "$name" --template tiny --start "$@"
  run_tool 0 vmrun wait "$name" --console-line 'vmkit-guest: up' --timeout 120
}

# console NAME: the guest's serial console log so far.
# (The serial line ends lines with CR LF; the CRs are dropped.)
console() { tr -d '\r' < "/var/log/libvirt/qemu/$1-console.log" 2>/dev/null; }

# make_bridge: creates a host bridge for this test (up), prints its name; the
# test's teardown removes it.
make_bridge() {
  local br=vmkbr$$$BATS_TEST_NUMBER
  ip link add "$br" type bridge && ip link set "$br" up && echo "$br" >> "$BATS_TEST_TMPDIR/bridges" &&
    echo "$br"
}

# Each test removes its own VMs, files and bridges, passed or failed.
common_teardown() {
  remove_vms "${VMKIT_TEST_PREFIX}${FILETAG}-${BATS_TEST_NUMBER}-"
  rm -f "$VMKIT_STORAGE_DIR/${VMKIT_TEST_PREFIX}${FILETAG}-${BATS_TEST_NUMBER}-"*
  if [ -f "$BATS_TEST_TMPDIR/bridges" ]; then
    while read -r br; do ip link del "$br" 2>/dev/null || true; done < "$BATS_TEST_TMPDIR/bridges"
  fi
}
common_teardown_file() {
  remove_vms "${VMKIT_TEST_PREFIX}${FILETAG}-"
  rm -f "$VMKIT_STORAGE_DIR/${VMKIT_TEST_PREFIX}${FILETAG}-"*
}

teardown() { common_teardown; }
teardown_file() { common_teardown_file; }

# guest_exec VM COMMAND: runs COMMAND with /bin/sh in the guest through its agent
# (guest-exec), waits for it, prints its stdout and returns its exit code.
guest_exec() {
  local vm=$1 cmd=$2 pid= st i
  # The agent may take a few seconds to answer after a move (its channel
  # reconnects on the new host): the exec is tried again for up to 30 s.
  local until=$((SECONDS + 30))
  while [ "$SECONDS" -lt "$until" ]; do
    pid=$(virsh_q qemu-agent-command "$vm" --timeout 5 "$(jq -cn --arg c "$cmd" \
      '{execute:"guest-exec",arguments:{path:"/bin/sh",arg:["-c",$c],"capture-output":true}}')" 2>/dev/null |
      jq .return.pid) && [ -n "$pid" ] && break
    pid=
    sleep 0.5
  done
  [ -n "$pid" ] || { echo "guest_exec: the agent of $vm does not answer" >&2; return 1; }
  for i in $(seq 1 600); do
    st=$(virsh_q qemu-agent-command "$vm" "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":$pid}}")
    if [ "$(jq .return.exited <<< "$st")" = true ]; then
      jq -r '.return["out-data"] // ""' <<< "$st" | base64 -d
      return "$(jq '.return.exitcode // 1' <<< "$st")"
    fi
    sleep 0.1
  done
  echo "guest_exec: '$cmd' did not finish in 60 s" >&2
  return 1
}

# guest_data VM: the value the guest finds in /data/value on its disk, read past
# its page cache.
guest_data() { guest_exec "$1" 'sync; echo 3 > /proc/sys/vm/drop_caches; cat /mnt/data/value'; }
# set_guest_data VM VALUE: writes it there and syncs.
set_guest_data() { guest_exec "$1" "echo $2 > /mnt/data/value; sync" >/dev/null; }

# snap_json VM SNAPSHOT FIELD: one field of a snapshot in `vmsnap list -o json`;
# fails (showing why) when vmsnap does, instead of handing jq nothing.
snap_json() {
  local out
  out=$("$TOP/vmsnap/vmsnap" list "$1" -o json) || { echo "snap_json: vmsnap list $1 failed" >&2; return 1; }
  jq -r --arg n "$2" ".[] | select(.name == \$n) | .$3" <<< "$out"
}

# no_snapshot VM SNAPSHOT [name]: the VM has no such snapshot (and vmsnap list worked).
no_snapshot() {
  local got
  got=$(snap_json "$1" "$2" name)
  [ -z "$got" ]
}

# refute COMMAND...: COMMAND must fail. (A line "! command" never fails a bats test
# unless it is the test's last: bash's -e ignores negated commands.)
refute() {
  if "$@"; then
    echo "expected to fail: $*" >&2
    return 1
  fi
}

# job_on VM DISK: a block job runs on the disk.
job_on() { virsh_q blockjob "$1" "$2" --raw 2>/dev/null | grep -q 'type='; }

# make_test_pki DIR: a CA of the test's own and, signed by it, a server and a
# client certificate, in DIR as QEMU (tls-creds-x509: ca-cert.pem, server-cert.pem,
# server-key.pem) and libnbd (ca-cert.pem, client-cert.pem, client-key.pem) read
# them: one folder serves both ends. Each certificate names the addresses and
# host names that the pool's streams go to (127.0.0.1, localhost, host2, host3).
# The CA's key is thrown away. The folder is readable by all (QEMU runs as
# libvirt-qemu): test keys only.
make_test_pki() {
  local pki=$1 role
  mkdir -p "$pki" || return 1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=vmkit test CA" \
    -keyout "$pki/ca-key.pem" -out "$pki/ca-cert.pem" 2>/dev/null || return 1
  for role in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=vmkit test $role" \
      -keyout "$pki/$role-key.pem" -out "$pki/$role.csr" 2>/dev/null || return 1
    openssl x509 -req -in "$pki/$role.csr" -CA "$pki/ca-cert.pem" -CAkey "$pki/ca-key.pem" \
      -CAcreateserial -days 2 \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:host2,DNS:host3\nextendedKeyUsage=serverAuth,clientAuth\n') \
      -out "$pki/$role-cert.pem" 2>/dev/null || return 1
  done
  rm -f "$pki"/*.csr "$pki"/ca-key.pem "$pki"/ca-cert.srl
  chmod 755 "$pki"
  chmod 644 "$pki"/*.pem
}

# ---- A pool of hosts on this one machine (vmmigrate, vmbalance) ----------------------
# HOST.md: more libvirt hosts run as namespaced daemons (scripts/host2), each with
# its own /run, /var/lib/libvirt, /etc/libvirt and host UUID; they share this
# machine's other files, so the run's test pools, defined on each host at the same
# folders, are shared storage, and a pool of one name at different folders is not.

# pool_start N [QEMU_CONF_LINES]: this machine's daemon as h1 and N-1 more hosts
# h2..hN, in a hosts file that this run's tools use (VMKIT_HOSTS). Exports POOL_DIR,
# H1_URI .. HN_URI. h1 is reached through a bind mount of /run/libvirt that every
# host sees (made before the others start, so that it is in their mount tables):
# a peer-to-peer migration from another host names h1 by that socket, since its
# own /run is another. QEMU_CONF_LINES go into each new host's qemu.conf.
pool_start() {
  local n=$1 conf=${2:-} k uri
  export POOL_DIR=$VMKIT_TEST_RUN/pool-$FILETAG
  mkdir -p "$POOL_DIR/h1-run"
  mountpoint -q "$POOL_DIR/h1-run" || mount --bind /run/libvirt "$POOL_DIR/h1-run"
  export H1_URI="qemu+unix:///system?socket=$POOL_DIR/h1-run/libvirt-sock"
  echo "h1 $H1_URI migrate-uri=tcp://127.0.0.1" > "$POOL_DIR/hosts"
  for ((k = 2; k <= n; k++)); do
    # The hosts share this machine's network: each takes incoming migrations on
    # ports of its own, or two moves at once to two hosts would both bind 49152.
    uri=$(HOST2_QEMU_CONF="migration_port_min = $((49152 + 100 * k))
migration_port_max = $((49152 + 100 * k + 63))
$conf" "$TOP/scripts/host2" start "$POOL_DIR/h$k" "host$k") || return 1
    export "H${k}_URI=$uri"
    echo "h$k $uri migrate-uri=tcp://127.0.0.1" >> "$POOL_DIR/hosts"
    virsh -q -c "$uri" pool-create-as "$VMKIT_POOL" dir --target "$VMKIT_STORAGE_DIR" >/dev/null || return 1
    virsh -q -c "$uri" pool-create-as "$VMKIT_TEMPLATE_POOL" dir --target "$VMKIT_TEMPLATE_DIR" >/dev/null || return 1
  done
  export VMKIT_HOSTS=$POOL_DIR/hosts
}

# host_uri K: the URI of host hK.
host_uri() { local v="H${1}_URI"; echo "${!v}"; }

# pool_local_pools: a pool named ${VMKIT_TEST_PREFIX}local on every host, each at a
# folder of its own (POOL_DIR/local-hK): storage that no two hosts share.
pool_local_pools() {
  local k uri
  export LOCAL_POOL=${VMKIT_TEST_PREFIX}local
  for uri in $(awk '{print $2}' "$POOL_DIR/hosts"); do
    k=$(awk -v u="$uri" '$2 == u {print $1}' "$POOL_DIR/hosts")
    mkdir -p "$POOL_DIR/local-$k"
    chmod 755 "$POOL_DIR/local-$k"
    virsh -q -c "$uri" pool-create-as "$LOCAL_POOL" dir --target "$POOL_DIR/local-$k" >/dev/null || return 1
  done
}

# pool_vms_remove PREFIX: removes the VMs named PREFIX* on every host of the pool.
pool_vms_remove() {
  local uri
  for uri in $(awk '{print $2}' "$POOL_DIR/hosts" 2>/dev/null); do
    VIRSH_URI=$uri remove_vms "$1" || true
  done
  rm -f "$POOL_DIR"/local-h*/"$1"* 2>/dev/null || true
}

# pool_teardown: a pool suite's teardown after each test: the test's VMs on every
# host, then what common_teardown removes.
pool_teardown() {
  pool_vms_remove "${VMKIT_TEST_PREFIX}${FILETAG}-${BATS_TEST_NUMBER}-"
  common_teardown
}

# pool_stop: stops the hosts h2.. and removes what pool_start made.
pool_stop() {
  local d
  [ -n "${POOL_DIR:-}" ] && [ -d "$POOL_DIR" ] || return 0
  pool_vms_remove "${VMKIT_TEST_PREFIX}${FILETAG}-"
  if [ -n "${LOCAL_POOL:-}" ]; then
    virsh -q -c qemu:///system pool-destroy "$LOCAL_POOL" >/dev/null 2>&1 || true
  fi
  for d in "$POOL_DIR"/h[0-9]*; do
    [ -d "$d/run" ] && "$TOP/scripts/host2" stop "$d"
  done
  mountpoint -q "$POOL_DIR/h1-run" && umount "$POOL_DIR/h1-run"
  [ -n "${VMKIT_TEST_KEEP:-}" ] || rm -rf --one-file-system "$POOL_DIR"
}

# on_host K COMMAND...: runs COMMAND with virsh_q (and guest_exec) aimed at host hK.
on_host() {
  local k=$1
  shift
  VIRSH_URI=$(host_uri "$k") "$@"
}

# vm_host VM: the hosts (h1 ...) that have VM defined or running, one a line.
vm_hosts_of() {
  local name uri
  while read -r name uri _; do
    virsh -q -c "$uri" dominfo "$1" >/dev/null 2>&1 && echo "$name"
  done < "$POOL_DIR/hosts"
  return 0
}

# vm_state_on K VM: the VM's state on host hK ("running", "shut off", or "none").
vm_state_on() { virsh -q -c "$(host_uri "$1")" domstate "$2" 2>/dev/null || echo none; }

# guest_dirty VM: starts a writer loop in the guest (through its agent) that dirties
# about 8 MB/s of memory under TCG (HOST.md): 100 MB of random data copied over and
# over in the guest's RAM. Zero pages migrate nearly free; these are not zero.
guest_dirty() {
  guest_exec "$1" 'dd if=/dev/urandom of=/tmp/a bs=1M count=100 2>/dev/null; (while :; do cp /tmp/a /tmp/b; done) >/dev/null 2>&1 </dev/null &'
}

# patch_guest_vm VM: for vmpatch's tests, the VM defined on a qcow2 overlay
# ($VMKIT_STORAGE_DIR/VM.qcow2, its own disk) of the patch guest image: the cached
# Debian 12 image ($DEB) with the old packages of the repository fixture ($REPO/old,
# from t/fixtures/mkdebrepo) installed by libguestfs's own tool, as an admin would.
# That image is made once per machine (one libguestfs launch, shared by t/132 and
# t/133) in ${VMKIT_CACHE:-/var/cache/vmkit}/patchguest: an overlay of $DEB's disk,
# made again when $DEB's build, mkdebrepo or this function changes (its stamp), moved into
# place whole, under a lock.
patch_guest_vm() {
  local vm=$1 disk=$VMKIT_STORAGE_DIR/$1.qcow2
  local cache=${VMKIT_CACHE:-/var/cache/vmkit}/patchguest stamp
  # $DEB's README names its build (date, file system UUID): a rebuilt base is a new stamp.
  stamp=$({ cat "$DEB/stamp" "$DEB/README"; sha256sum < "$TOP/t/fixtures/mkdebrepo"; declare -f patch_guest_vm; } |
    sha256sum | cut -c1-16)
  mkdir -p "$cache"
  (
    flock 9
    if [ "$(cat "$cache/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -s "$cache/disk.qcow2" ]; then
      rm -f "$cache/stamp" "$cache/disk.qcow2" "$cache/.disk.qcow2.new"
      qemu-img create -q -f qcow2 -F qcow2 -b "$DEB/disk.qcow2" "$cache/.disk.qcow2.new" &&
        LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
          virt-customize -q --format qcow2 -a "$cache/.disk.qcow2.new" --copy-in "$REPO/old:/root" \
          --run-command 'dpkg -i /root/old/*.deb && rm -r /root/old' >&2 &&
        chmod 644 "$cache/.disk.qcow2.new" &&
        mv -f "$cache/.disk.qcow2.new" "$cache/disk.qcow2" &&
        echo "$stamp" > "$cache/stamp"
    fi
  ) 9> "$cache/lock" || return 1
  qemu-img create -q -f qcow2 -F qcow2 -b "$cache/disk.qcow2" "$disk"
  "$TOP/vmrun/vmrun" -q create "$vm" --image "$disk" --memory 768M --network none
}
