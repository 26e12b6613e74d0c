#!/usr/bin/env bash
# bench/deploy.sh: deploying many VMs at once. The time from the command to N linked
# clones of one template (default 20), all in libvirt's running state (started
# paused, or booting), side by side in one run:
#   vmrun-many    vmrun create 'NAME-%02d' --count N --template T --start [--paused] -q
#                 (one command: one connection, the starts overlapped)
#   vmrun-loop    N times: vmrun create NAME --template T --start [--paused] -q
#   virt-install  N times: qemu-img create -b, then virt-install --import (booting
#                 only: virt-install cannot start a guest paused)
#   floor         N times: qemu-img create -b + virsh define + virsh start [--paused],
#                 with the XML `vmrun create --dry-run` prints (the same devices)
# Paused is the measure that counts: booting TCG guests eat the same two cores that
# the starts need, so the booting case says more about the guests than the tools.
# Each round runs every method in both modes, in an order that rotates from round to
# round; round 0 is a warm-up and is not counted. A method's time runs from before
# its first command to after its last, when every domain is running or paused (the
# script checks). Between methods, untimed: every VM destroyed and undefined, its
# disk removed, sync. vmrun-many's own account (vmrun -v) of where its time went is
# kept too.
#
# Usage: bash bench/deploy.sh > table.md     (as root; `make` first)
# Environment: BENCH_RUNS (counted rounds, default 3), BENCH_VMS (default 20),
# BENCH_TMP (scratch, default /var/tmp). Needs what scripts/setup installs.
# Guests run under TCG (VMKIT_VIRT_TYPE=qemu): KVM guests hang on this machine
# (HOST.md). VMs are named bench-<pid>-...; they, their disks, logs, pools and the
# scratch directory are removed when the script ends, however it ends.
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
source "$root/bench/lib.sh"
log() { echo "deploy.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root"
for t in jq virsh virt-install qemu-img; do command -v "$t" >/dev/null || die "$t is missing (run scripts/setup)"; done
[ -x "$root/vmrun/vmrun" ] || die "no $root/vmrun/vmrun: run make first"
virsh -q -c qemu:///system version >/dev/null 2>&1 || die "libvirtd does not answer on qemu:///system"
runs=${BENCH_RUNS:-3} nvms=${BENCH_VMS:-20}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS: '$runs' is not a positive number"
[[ "$nvms" =~ ^[1-9][0-9]*$ ]] || die "BENCH_VMS: '$nvms' is not a positive number"

started=$(date -u)
scratch=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-deploy.XXXXXX")
chmod 755 "$scratch"
prefix="bench-$$-"
export VMKIT_VIRT_TYPE=qemu
V="virsh -q -c qemu:///system"

remove_vms() {
  local n
  for n in $($V list --all --name | grep "^$prefix" || true); do
    $V destroy "$n" >/dev/null 2>&1 || true
    $V undefine "$n" >/dev/null 2>&1 || true
  done
  rm -f "$VMKIT_STORAGE_DIR/$prefix"* /var/log/libvirt/qemu/"$prefix"*.log 2>/dev/null || true
  $V pool-refresh "$VMKIT_POOL" >/dev/null 2>&1 || true
  sync
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  remove_vms || true
  bench_unpool "$scratch"
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_pools "$scratch" "$prefix"
log "building the tiny guest and its template"
"$root/scripts/mkguest" "$scratch/guest" >&2
"$root/scripts/mktemplate" "$scratch/guest" "$VMKIT_TEMPLATE_DIR" "${prefix}tpl"
tpl=${prefix}tpl
cp "$root/vmrun/vmrun" "$scratch/vmrun" # a rebuild in the tree during the run changes nothing
vmrun=$scratch/vmrun
cmdline=$(cat "$scratch/guest/cmdline")
# The floor's definition: what vmrun would define, for each name.
# (Without the UUID vmrun chose for that one.)
"$vmrun" create "${prefix}xml" --template "$tpl" --dry-run 2>/dev/null | grep -v '<uuid>' > "$scratch/one.xml"

# run_method METHOD MODE TAG: makes the VMs; echo nothing.
run_method() {
  local m=$1 mode=$2 tag=$3 i name paused=()
  [ "$mode" = paused ] && paused=(--paused)
  case "$m" in
    vmrun-many)
      "$vmrun" -v create "${prefix}${tag}-%02d" --count "$nvms" --template "$tpl" --start "${paused[@]}" -q \
        >/dev/null 2> "$scratch/many.err" ;;
    vmrun-loop)
      for i in $(seq -w 1 "$nvms"); do
        "$vmrun" create "${prefix}${tag}-$i" --template "$tpl" --start "${paused[@]}" -q
      done ;;
    virt-install)
      for i in $(seq -w 1 "$nvms"); do
        name=${prefix}${tag}-$i
        qemu-img create -q -f qcow2 -F qcow2 -b "$VMKIT_TEMPLATE_DIR/$tpl.qcow2" "$VMKIT_STORAGE_DIR/$name.qcow2"
        virt-install --connect qemu:///system --virt-type qemu --name "$name" --memory 256 --vcpus 1 --import \
          --disk "path=$VMKIT_STORAGE_DIR/$name.qcow2,format=qcow2" \
          --boot "kernel=$VMKIT_TEMPLATE_DIR/$tpl.vmlinuz,initrd=$VMKIT_TEMPLATE_DIR/$tpl.initrd,kernel_args=$cmdline" \
          --network user --graphics none --noautoconsole --osinfo detect=on,require=off >/dev/null 2>&1
      done ;;
    floor)
      for i in $(seq -w 1 "$nvms"); do
        name=${prefix}${tag}-$i
        qemu-img create -q -f qcow2 -F qcow2 -b "$VMKIT_TEMPLATE_DIR/$tpl.qcow2" "$VMKIT_STORAGE_DIR/$name.qcow2"
        sed "s|${prefix}xml|$name|g" "$scratch/one.xml" > "$scratch/$name.xml"
        $V define "$scratch/$name.xml" >/dev/null
        $V start "$name" "${paused[@]}" >/dev/null
      done ;;
  esac
}

# Every VM of the tag is in the state the mode asks for.
check() {
  local tag=$1 mode=$2 n count=0 want=running
  [ "$mode" = paused ] && want=paused
  for n in $($V list --all --name | grep "^${prefix}${tag}-" || true); do
    [ "$($V domstate "$n")" = "$want" ] || die "$n is $($V domstate "$n"), not $want"
    count=$((count + 1))
  done
  [ "$count" = "$nvms" ] || die "$tag made $count VMs, not $nvms"
}

methods=(vmrun-many vmrun-loop virt-install floor)
declare -A times
phases=()
for round in $(seq 0 "$runs"); do
  for mode in paused booting; do
    for k in "${!methods[@]}"; do
      m=${methods[$(((k + round) % ${#methods[@]}))]}
      [ "$m" = virt-install ] && [ "$mode" = paused ] && continue
      tag=r$round-$m-${mode:0:1}
      t0=$(date +%s%N)
      run_method "$m" "$mode" "$tag"
      t1=$(date +%s%N)
      check "$tag" "$mode"
      ms=$(((t1 - t0) / 1000000))
      log "round $round $mode $m: $ms ms"
      if [ "$round" -gt 0 ]; then
        times[$m.$mode]+="$ms "
        [ "$m" = vmrun-many ] && phases+=("$mode: $(grep -o 'made .*' "$scratch/many.err" || true)")
      fi
      remove_vms
    done
  done
done

stat() { # median and min of "ms ms ms", in seconds
  tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{a[NR] = $1} END {
    m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f %.2f", m / 1000, a[1] / 1000 }'
}
declare -A med mn
echo "## deploy: $nvms linked clones, from the command to all in libvirt's running state (\`bash bench/deploy.sh\`)"
echo
echo "Taken \`$started\` ($runs counted rounds after a warm-up)."
echo
bench_machine
echo
echo "| method | paused: median (s) | paused: min (s) | booting: median (s) | booting: min (s) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for m in "${methods[@]}"; do
  row="| $m |"
  for mode in paused booting; do
    if [ -n "${times[$m.$mode]:-}" ]; then
      read -r a b <<< "$(stat "${times[$m.$mode]}")"
      med[$m.$mode]=$a mn[$m.$mode]=$b
      row+=" $a | $b |"
    else
      row+=" - | - |"
    fi
  done
  echo "$row"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "-" }'; }
echo "| ratio of medians | paused | booting |"
echo "| --- | ---: | ---: |"
for m in vmrun-loop virt-install floor; do
  echo "| $m / vmrun-many | $(ratio "${med[$m.paused]:-0}" "${med[vmrun-many.paused]}") | $(ratio "${med[$m.booting]:-0}" "${med[vmrun-many.booting]}") |"
done
echo
p=$(ratio "${med[vmrun-loop.paused]}" "${med[vmrun-many.paused]}")
verdict=$(awk -v r="$p" 'BEGIN { print (r >= 1.5 ? "met" : "NOT met") }')
echo "Target (paused): vmrun-many at least 1.5x faster than the vmrun loop: $p, $verdict."
echo
echo "vmrun-many's own account (\`vmrun -v\`: volumes and definitions, then the starts), each counted run:"
echo
for ph in "${phases[@]}"; do echo "- $ph"; done
