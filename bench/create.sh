#!/usr/bin/env bash
# bench/create.sh: the time from the command to a defined and running VM, from a
# template holding 1 GiB of data and one holding 8 GiB, side by side in one run:
#   vmrun         vmrun create NAME --template T --start -q       (a linked qcow2 clone)
#   vmrun --full  the same with --full                            (a full copy)
#   virt-install  virt-install --import of a linked clone of the same template disk,
#                 made beforehand with qemu-img create -b (untimed): only virt-install
#                 itself is timed
#   floor         qemu-img create -b + virsh define + virsh start, nothing around them,
#                 with the XML `vmrun create --dry-run` prints for the same VM (so the
#                 same devices), timed as one sequence
# Each round runs every method once per template, in an order that rotates from round to
# round so that drift affects all of them alike; round 0 is a warm-up and is not counted.
# hyperfine times each run (wall time, its shell start-up subtracted). Between runs, and
# untimed, the VM is destroyed and undefined, its disk removed and `sync` run so that the
# write-back of one run does not land in the next.
#
# Usage: bash bench/create.sh            (as root; `make` first)
# Prints a markdown table on stdout, progress on stderr. Environment:
#   BENCH_RUNS   counted runs per method and template (default 5)
#   BENCH_SIZES  the templates, GiB of data each holds (default "1 8")
#   BENCH_TMP    where the scratch directory goes (default /var/tmp; needs the sum of
#                the sizes plus the largest one free: 17 GiB by default)
# Needs: a running libvirtd on qemu:///system, hyperfine, jq, virtinst, qemu-utils and
# what scripts/mkguest needs (scripts/setup installs all of them).
# Guests run under TCG (<domain type='qemu'>, VMKIT_VIRT_TYPE=qemu): on this machine a
# KVM guest hangs after "Booting from ROM" (HOST.md).
# Every VM is named bench-<pid>-...; all of them, their disks and logs and the scratch
# directory are removed when the script ends, whether it succeeds or not.
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
methods=(vmrun full virt-install floor)
declare -A label=([vmrun]="vmrun" [full]="vmrun --full" [virt-install]="virt-install --import"
                  [floor]="floor (qemu-img + virsh)")

log() { echo "create.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Destroys and undefines every domain of this run, removes their disks, XML and
# logs, then flushes the page cache's dirty data. A domain that is not running when
# it is removed means a run did not do what it was timed for: noted in errors.
remove_vms() {
  local n state found=0
  for n in $(virsh -q -c qemu:///system list --all --name | grep "^$BENCH_PREFIX" || true); do
    found=1
    state=$(virsh -q -c qemu:///system domstate "$n" 2>/dev/null || echo unknown)
    [ "$state" = running ] || echo "$n was $state after its run" >> "$BENCH_SCRATCH/errors"
    virsh -q -c qemu:///system destroy "$n" >/dev/null 2>&1 || true
    virsh -q -c qemu:///system undefine "$n" >/dev/null 2>&1 || true
  done
  rm -f "$VMKIT_STORAGE_DIR/$BENCH_PREFIX"* "$BENCH_SCRATCH/$BENCH_PREFIX"*.xml \
    /var/log/libvirt/qemu/"$BENCH_PREFIX"*.log
  sync
  [ "${1:-}" != check ] || [ "$found" = 1 ] || echo "a run made no VM" >> "$BENCH_SCRATCH/errors"
}

# Internal steps that hyperfine runs (untimed) around each timed command.
case "${1:-}" in
  __prepare) # METHOD NAME TEMPLATE
    case "$2" in
      virt-install)
        qemu-img create -q -f qcow2 -F qcow2 -b "$VMKIT_TEMPLATE_DIR/$4.qcow2" \
          "$VMKIT_STORAGE_DIR/$3.qcow2" ;;
      floor)
        "$BENCH_VMRUN" create "$3" --template "$4" --dry-run > "$BENCH_SCRATCH/$3.xml" 2>/dev/null ;;
    esac
    exit 0 ;;
  __cleanup)
    remove_vms check
    exit 0 ;;
esac

[ "$(id -u)" = 0 ] || die "run me as root"
for t in hyperfine jq virsh virt-install qemu-img qemu-io; do
  command -v "$t" >/dev/null || die "$t is missing (run scripts/setup)"
done
[ -x "$root/vmrun/vmrun" ] || die "no $root/vmrun/vmrun: run make first"
virsh -q -c qemu:///system version >/dev/null 2>&1 || die "libvirtd does not answer on qemu:///system"
runs=${BENCH_RUNS:-5}
read -r -a sizes <<< "${BENCH_SIZES:-1 8}"
for s in "${sizes[@]}"; do
  [[ "$s" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZES: '$s' is not a whole number of GiB"
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS: '$runs' is not a positive number"

scratch=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-create.XXXXXX")
chmod 755 "$scratch"  # QEMU runs as libvirt-qemu and must reach the disks
export BENCH_SCRATCH=$scratch BENCH_PREFIX="bench-$$-" BENCH_VMRUN=$root/vmrun/vmrun
# The run's own storage pools over its scratch folders (bench/lib.sh).
source "$root/bench/lib.sh"
bench_pools "$scratch" "bench-$$-"
export VMKIT_VIRT_TYPE=qemu
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  remove_vms || true
  # The run's pools, and the one virt-install makes for the folder of its disk.
  bench_unpool "$scratch"
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the templates --------------------------------------------------------------
log "building the tiny guest"
"$root/scripts/mkguest" "$scratch/guest" >&2
cmdline=$(cat "$scratch/guest/cmdline")

# A template whose disk holds GIB GiB of data: the guest's 64 MiB ext4 filesystem
# (what it boots from /dev/vda), then GIB GiB of non-zero bytes after it, flattened
# into one qcow2 that really stores them (so that a copy has to copy them).
make_template() { # NAME GIB
  local name=$1 gib=$2 actual
  "$root/scripts/mktemplate" "$scratch/guest" "$VMKIT_TEMPLATE_DIR" "$name" $((gib << 10))
  actual=$(qemu-img info --output=json "$VMKIT_TEMPLATE_DIR/$name.qcow2" | jq '."actual-size"')
  [ "$actual" -ge $((gib << 30)) ] || die "template $name stores only $actual bytes"
  log "template $name: $(awk -v a="$actual" 'BEGIN { printf "%.2f", a / 2^30 }') GiB stored"
}
for s in "${sizes[@]}"; do
  log "building the ${s} GiB template"
  make_template "bench-${s}g" "$s"
done

# --- the runs -------------------------------------------------------------------
# The timed command of METHOD for VM NAME from template TEMPLATE (a shell string for
# hyperfine, whose output goes to a log shown when a command fails).
command_for() { # METHOD NAME TEMPLATE
  local name=$2 tpl=$3 tdir=$VMKIT_TEMPLATE_DIR disk=$VMKIT_STORAGE_DIR/$2.qcow2
  case "$1" in
    vmrun) printf '%q ' "$BENCH_VMRUN" create "$name" --template "$tpl" --start -q ;;
    full) printf '%q ' "$BENCH_VMRUN" create "$name" --template "$tpl" --full --start -q ;;
    virt-install)
      printf '%q ' virt-install --connect qemu:///system --virt-type qemu --name "$name" \
        --memory 256 --vcpus 1 --import --disk "path=$disk,format=qcow2" \
        --boot "kernel=$tdir/$tpl.vmlinuz,initrd=$tdir/$tpl.initrd,kernel_args=\"$cmdline\"" \
        --network user --graphics none --noautoconsole --osinfo detect=on,require=off ;;
    floor)
      printf '%q ' qemu-img create -f qcow2 -F qcow2 -b "$tdir/$tpl.qcow2" "$disk"
      printf '&& '
      printf '%q ' virsh -c qemu:///system define "$BENCH_SCRATCH/$name.xml"
      printf '&& '
      printf '%q ' virsh -c qemu:///system start "$name" ;;
  esac
}

times=$scratch/times.tsv
: > "$times"
for ((r = 0; r <= runs; r++)); do
  for s in "${sizes[@]}"; do
    tpl=bench-${s}g
    args=()
    cmds=()
    for ((i = 0; i < ${#methods[@]}; i++)); do
      m=${methods[$(((i + r) % ${#methods[@]}))]}
      name="${BENCH_PREFIX}${s}g-r$r-$m"
      args+=(-n "$m" -p "$(printf '%q ' bash "$self" __prepare "$m" "$name" "$tpl")")
      # (exec 2>&1: hyperfine's --output keeps stdout only, and errors should be seen)
      cmds+=("exec 2>&1; $(command_for "$m" "$name" "$tpl")")
    done
    [ "$r" -gt 0 ] || log "round 0 (warm-up, not counted), ${s} GiB: ${cmds[*]/#/$'\n  '}"
    : > "$scratch/errors"
    if ! hyperfine --runs 1 --style none --output "$scratch/output.log" \
        --export-json "$scratch/round.json" --cleanup "$(printf '%q ' bash "$self" __cleanup)" \
        "${args[@]}" "${cmds[@]}" > "$scratch/hyperfine.log" 2>&1; then
      cat "$scratch/hyperfine.log" "$scratch/output.log" >&2 2>/dev/null || true
      die "round $r, ${s} GiB: a command failed"
    fi
    if [ -s "$scratch/errors" ]; then
      cat "$scratch/errors" >&2
      die "round $r, ${s} GiB: a run did not leave a running VM"
    fi
    line=$(jq -r '[.results[] | "\(.command)=\(.times[0] | . * 1000 | round / 1000)"] | join(" ")' \
      "$scratch/round.json")
    log "round $r, ${s} GiB: $line"
    [ "$r" -gt 0 ] || continue
    jq -r --arg s "$s" --arg r "$r" '.results[] | [$s, .command, $r, .times[0]] | @tsv' \
      "$scratch/round.json" >> "$times"
  done
done

# --- the report -----------------------------------------------------------------
# stat SIZE METHOD median|min: seconds, three decimals.
stat() {
  awk -F'\t' -v s="$1" -v m="$2" '$1 == s && $2 == m { print $4 }' "$times" | sort -g |
    awk -v w="$3" '{ v[NR] = $1 } END {
      if (w == "min") x = v[1]
      else x = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.3f", x }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
declare -A med mn
for s in "${sizes[@]}"; do
  for m in "${methods[@]}"; do
    med[$s,$m]=$(stat "$s" "$m" median)
    mn[$s,$m]=$(stat "$s" "$m" min)
  done
done

head="| method |" sep="| --- |"
for s in "${sizes[@]}"; do
  head+=" ${s} GiB median (s) | ${s} GiB min (s) |"
  sep+=" ---: | ---: |"
done
echo "Time from the command to a defined and running VM, $runs runs each (after a warm-up round)."
echo
echo "$head"
echo "$sep"
for m in "${methods[@]}"; do
  row="| ${label[$m]} |"
  for s in "${sizes[@]}"; do row+=" ${med[$s,$m]} | ${mn[$s,$m]} |"; done
  echo "$row"
done
echo
head="| ratio of medians |" sep="| --- |"
for s in "${sizes[@]}"; do head+=" ${s} GiB |"; sep+=" ---: |"; done
echo "$head"
echo "$sep"
for pair in floor:"vmrun / floor" virt-install:"vmrun / virt-install" full:"vmrun / vmrun --full"; do
  row="| ${pair#*:} |"
  for s in "${sizes[@]}"; do row+=" $(ratio "${med[$s,vmrun]}" "${med[$s,${pair%%:*}]}") |"; done
  echo "$row"
done
echo
yes_no() { awk "BEGIN { exit !($1) }" && echo yes || echo no; }
under=yes floor_ok=yes faster=yes
for s in "${sizes[@]}"; do
  [ "$(yes_no "${med[$s,vmrun]} < 0.5")" = yes ] || under=no
  [ "$(yes_no "${med[$s,vmrun]} <= 1.15 * ${med[$s,floor]}")" = yes ] || floor_ok=no
  [ "$(yes_no "${med[$s,vmrun]} < ${med[$s,virt-install]}")" = yes ] || faster=no
done
echo "Targets (medians, every template): vmrun under 0.5 s: $under;" \
  "within 1.15x of the floor: $floor_ok; faster than virt-install: $faster."
