#!/usr/bin/env bash
# bench/p2v-boot.sh: a real Debian 12 server made a VM, side by side in one run, on the
# same disks: scripts/mkserver's "physical server" (a 4 GiB OS disk, a 512 MiB data
# disk; an initramfs without virtio, fstab by /dev/sdX, no serial console):
#   vmkit     `p2v-agent send --disk sda.raw --disk sdb.raw | p2v-convert --memory 1G --boot-test`:
#             streamed, written, adapted (initramfs, fstab, GRUB, NIC names, units),
#             the VM defined, and booted to its login prompt on throwaway overlays
#             (target: under 3 minutes)
#   virt-v2v  `virt-v2v -i disk sda.raw -o local -os DIR` (virt-v2v takes one disk):
#             converted only, no boot; capped at BENCH_V2V_CAP seconds (default 900)
# Both under TCG (KVM guests hang on this machine: shared/HOST.md); libguestfs's
# appliance too (LIBGUESTFS_BACKEND_SETTINGS=force_tcg). Wall seconds, caches dropped
# before each.
#
# Usage: bash bench/p2v-boot.sh > table.md     (as root; `make`, scripts/setup first)
# Environment: BENCH_V2V_CAP, BENCH_TMP (default /var/tmp). The pool, the VM and the
# scratch folder are removed when the script ends, also on failure or Ctrl-C.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cap=${BENCH_V2V_CAP:-900}
tmp=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-p2vboot.XXXXXX")
pool=bench-$$-p2vboot
vm=bench-$$-srv
export VMKIT_VIRT_TYPE=qemu VMKIT_POOL=$pool
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
say() { echo "bench/p2v-boot: $*" >&2; }

cleanup() {
  virsh -q destroy "$vm-boottest" >/dev/null 2>&1 || true
  virsh -q undefine "$vm" >/dev/null 2>&1 || true
  virsh -q pool-destroy "$pool" >/dev/null 2>&1 || true
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v virt-v2v >/dev/null || { say "virt-v2v is missing: run scripts/setup"; exit 1; }
agent=$top/p2v-agent/p2v-agent
convert=$top/p2v-convert/p2v-convert
[ -x "$agent" ] && [ -x "$convert" ] || { say "build first: make"; exit 1; }
srv=${VMKIT_CACHE:-/var/cache/vmkit}/server12
"$top/scripts/mkserver" "$srv" >&2
mkdir -p "$tmp/pool" "$tmp/v2v"
# QEMU runs as another user: it must reach the pool through the scratch folder.
chmod 755 "$tmp" "$tmp/pool"
virsh -q pool-create-as "$pool" dir --target "$tmp/pool" >/dev/null

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

say "vmkit: p2v-agent | p2v-convert --boot-test"
drop
t0=$(now)
"$agent" send -q --disk "$srv/sda.raw" --disk "$srv/sdb.raw" |
  "$convert" --name "$vm" --memory 1G --boot-test -o json > "$tmp/report.json" 2> "$tmp/convert.err" ||
  { cat "$tmp/convert.err" >&2; say "p2v-convert failed"; exit 1; }
t1=$(now)
vmkit_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
boot_s=$(jq -r .boot_test.seconds "$tmp/report.json")
[ "$(jq -r .boot_test.booted "$tmp/report.json")" = true ] || { say "the VM did not boot"; exit 1; }
nchanges=$(jq '.changes | length' "$tmp/report.json")

say "virt-v2v -i disk -o local (capped at $cap s)"
drop
t0=$(now)
v2v_rc=0
timeout "$cap" virt-v2v -i disk "$srv/sda.raw" -o local -os "$tmp/v2v" -of qcow2 -on v2v \
  > "$tmp/v2v.log" 2>&1 || v2v_rc=$?
t1=$(now)
v2v_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
if [ "$v2v_rc" = 124 ]; then
  v2v_what="not finished after ${cap} s (stopped)"
elif [ "$v2v_rc" != 0 ]; then
  v2v_what="failed (exit $v2v_rc): $(grep -m 1 -i error "$tmp/v2v.log" | cut -c1-120)"
else
  v2v_what="converted (no boot)"
fi

fmt_s() { printf '%.0f' "$1"; }
cat <<EOF
| run | what it did | wall s | ratio to vmkit |
|---|---|---|---|
| vmkit: \`p2v-agent send \| p2v-convert --boot-test\` | streamed 2 disks, adapted ($nchanges changes), defined, booted to its login prompt (boot test $(fmt_s "$boot_s") s) | $(fmt_s "$vmkit_s") | 1.00 |
| \`virt-v2v -i disk -o local\` (OS disk only) | $v2v_what | $(fmt_s "$v2v_s") | $(awk -v a="$v2v_s" -v b="$vmkit_s" 'BEGIN { printf "%.2f", a / b }') |

Target: converted and proven booting in under 180 s: $(fmt_s "$vmkit_s") s, $(awk -v a="$vmkit_s" 'BEGIN { print (a < 180 ? "met" : "not met") }').
EOF
