# bench/lib.sh: what the benchmarks share. Sourced, not run.
#
# bench_pools SCRATCH PREFIX: the run's storage pools, transient (they go with
# libvirtd too), over SCRATCH/storage (new VM disks) and SCRATCH/templates
# (templates), named PREFIXimages and PREFIXtemplates; exports VMKIT_POOL,
# VMKIT_TEMPLATE_POOL and, for the scripts' own use, VMKIT_STORAGE_DIR and
# VMKIT_TEMPLATE_DIR (the pools' folders).
bench_pools() {
  local scratch=$1 prefix=$2
  export VMKIT_STORAGE_DIR=$scratch/storage VMKIT_TEMPLATE_DIR=$scratch/templates
  export VMKIT_POOL=${prefix}images VMKIT_TEMPLATE_POOL=${prefix}templates
  mkdir -p -m 755 "$VMKIT_STORAGE_DIR" "$VMKIT_TEMPLATE_DIR"
  virsh -q -c qemu:///system pool-create-as "$VMKIT_POOL" dir --target "$VMKIT_STORAGE_DIR" >/dev/null
  virsh -q -c qemu:///system pool-create-as "$VMKIT_TEMPLATE_POOL" dir --target "$VMKIT_TEMPLATE_DIR" >/dev/null
}

# bench_unpool SCRATCH: removes every pool that points into SCRATCH (the run's own,
# and the one virt-install makes for the folder of a disk it is given).
bench_unpool() {
  local scratch=$1 p
  for p in $(virsh -q -c qemu:///system pool-list --all --name); do
    case "$(virsh -q -c qemu:///system pool-dumpxml "$p" 2>/dev/null)" in
      *"<path>$scratch/"*|*"<path>$scratch<"*)
        virsh -q -c qemu:///system pool-destroy "$p" >/dev/null 2>&1 || true
        virsh -q -c qemu:///system pool-undefine "$p" >/dev/null 2>&1 || true ;;
    esac
  done
}

# bench_machine: the machine, for RESULTS.md.
bench_machine() {
  echo "Machine: $(nproc) cores (\`nproc\`), \`$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\`," \
    "$(awk '/MemTotal/ {printf "%d GiB", $2 / 1048576}' /proc/meminfo) memory, Linux $(uname -r)," \
    "Debian $(cat /etc/debian_version), libvirt $(virsh -q version | awk '/Using library/ {print $4}')," \
    "QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}')," \
    "virt-install $(virt-install --version 2>/dev/null || echo '-'), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start."
}
