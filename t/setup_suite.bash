# Once per `bats t/` run: the per-run folder, the tiny guest fixture built from
# Debian packages (HOST.md), and a template made from it that most tests clone.

# A run whose every file needs no VM (each carries the line "# vmkit-test: no-vm",
# as t/000-help.bats and t/130-vmpatch-scan.bats do) makes no storage pool, no
# guest fixture and no template, and so never talks to libvirtd: such files can
# run on a machine where libvirtd is busy with another run, or absent. Any other
# file in the run, and a bats that does not list the run's files
# (BATS_UNIQUE_TEST_FILENAMES, bats-core's own, 1.5 and later), give the full
# setup, so a full run is unchanged.
no_vm_run() {
  local f
  [ -n "${BATS_UNIQUE_TEST_FILENAMES+x}" ] && [ "${#BATS_UNIQUE_TEST_FILENAMES[@]}" -gt 0 ] || return 1
  for f in "${BATS_UNIQUE_TEST_FILENAMES[@]}"; do
    grep -qx '# vmkit-test: no-vm' "$f" || return 1
  done
}

setup_suite() {
  bats_require_minimum_version 1.5.0
  local top
  top=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
  # On disk, not tmpfs, and traversable by the libvirt-qemu user that QEMU runs as.
  export VMKIT_TEST_RUN=${VMKIT_TEST_RUN:-$(mktemp -d /var/tmp/vmkit-test.XXXXXX)}
  chmod 755 "$VMKIT_TEST_RUN"
  export VMKIT_TEST_PREFIX="vmkt$(basename "$VMKIT_TEST_RUN" | cut -d. -f2 | tr -cd 'a-zA-Z0-9' | cut -c1-6)-"
  # HOST.md: KVM guests hang on the build machine; everything runs under TCG.
  export VMKIT_VIRT_TYPE=qemu
  export LIBVIRT_DEFAULT_URI=qemu:///system
  # The run's own storage pools (transient: gone with libvirtd too), for VM disks
  # and for templates; the tools find them by name, the tests their folders by path.
  export VMKIT_STORAGE_DIR=$VMKIT_TEST_RUN/storage
  export VMKIT_TEMPLATE_DIR=$VMKIT_TEST_RUN/templates
  export VMKIT_POOL=${VMKIT_TEST_PREFIX}images
  export VMKIT_TEMPLATE_POOL=${VMKIT_TEST_PREFIX}templates
  export VMKIT_FIXTURE=${VMKIT_FIXTURE:-$top/t/.run/guest}
  # vmmigrate's records of moves under way: the run's own, not this machine's.
  export VMKIT_STATE_DIR=$VMKIT_TEST_RUN/state
  # Encrypted VMs' disk keys: the run's own folder, not this machine's.
  export VMKIT_KEY_DIR=$VMKIT_TEST_RUN/keys
  mkdir -p "$VMKIT_STORAGE_DIR" "$VMKIT_TEMPLATE_DIR"
  chmod 755 "$VMKIT_STORAGE_DIR" "$VMKIT_TEMPLATE_DIR"
  ! no_vm_run || return 0
  virsh -q -c qemu:///system pool-create-as "$VMKIT_POOL" dir --target "$VMKIT_STORAGE_DIR" >/dev/null
  virsh -q -c qemu:///system pool-create-as "$VMKIT_TEMPLATE_POOL" dir --target "$VMKIT_TEMPLATE_DIR" >/dev/null
  "$top/scripts/mkguest" "$VMKIT_FIXTURE" >&2

  # The shared template, made directly in vmrun's template format so that tests
  # which only clone it need no libguestfs launch.
  "$top/scripts/mktemplate" "$VMKIT_FIXTURE" "$VMKIT_TEMPLATE_DIR" tiny
}

teardown_suite() {
  local d
  if no_vm_run; then
    [ -z "${VMKIT_TEST_KEEP:-}" ] && rm -rf --one-file-system "$VMKIT_TEST_RUN"
    return 0
  fi
  for d in $(virsh -q -c qemu:///system list --all --name | grep "^$VMKIT_TEST_PREFIX" || true); do
    virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
    virsh -q -c qemu:///system undefine "$d" --snapshots-metadata >/dev/null 2>&1 || true
  done
  rm -f /var/log/libvirt/qemu/"$VMKIT_TEST_PREFIX"*-console.log
  # The disk keys of the run's encrypted VMs that a failed test left on the host.
  for d in $(virsh -q -c qemu:///system secret-list | awk '{print $1}'); do
    virsh -q -c qemu:///system secret-dumpxml "$d" 2>/dev/null |
      grep -q "<description>vmkit: the disk key of VM $VMKIT_TEST_PREFIX" &&
      virsh -q -c qemu:///system secret-undefine "$d" >/dev/null 2>&1 || true
  done
  for d in $(virsh -q -c qemu:///system pool-list --all --name | grep "^$VMKIT_TEST_PREFIX" || true); do
    virsh -q -c qemu:///system pool-destroy "$d" >/dev/null 2>&1 || true
    virsh -q -c qemu:///system pool-undefine "$d" >/dev/null 2>&1 || true
  done
  # The pools of hosts (t/helpers.bash pool_start) bind-mount /run/libvirt under
  # the run's folder; one a killed file left is unmounted, and nothing is removed
  # through a mount that stays (it would empty /run/libvirt).
  for d in "$VMKIT_TEST_RUN"/pool-*/h1-run; do
    ! mountpoint -q "$d" 2>/dev/null || umount "$d" || true
  done
  [ -z "${VMKIT_TEST_KEEP:-}" ] && rm -rf --one-file-system "$VMKIT_TEST_RUN"
  return 0
}
