#!/usr/bin/env bash
# bench/snap.sh: what each kind of snapshot costs a running guest, side by side on one
# VM in one run, and what a chain of overlays costs the guest's disk reads.
#
# Part 1, snapshot kinds. One running VM (the tiny guest, 256 MiB, 1 vCPU). Each round
# takes one snapshot of every kind, in an order that rotates from round to round;
# round 0 is a warm-up and is not counted:
#   disk      vmsnap create VM NAME --disk-only          (external, crash-consistent)
#   quiesce   vmsnap create VM NAME --quiesce            (external, filesystems frozen
#                                                         through the guest agent)
#   mem       vmsnap create VM NAME --memory             (internal, with memory)
#   memext    vmsnap create VM NAME --memory --external  (memory file + overlays)
#   virsh     virsh snapshot-create-as VM NAME           (libvirt's defaults: internal,
#                                                         with memory)
# hyperfine times each command (wall time, --runs 1, its shell start-up subtracted).
# How long the guest's vCPUs were paused is measured outside vmsnap, the same way for
# every command: `virsh event --event lifecycle --loop --timestamp` runs in the
# background and each run's Suspended -> Resumed time is read from its timestamps
# (when virsh received the events); `virsh qemu-monitor-event` gives QEMU's own STOP ->
# RESUME timestamps as a second witness. Beside them: what vmsnap recorded itself
# (`vmsnap list -o json`: paused_ms, and frozen_ms for --quiesce) and the duration of
# the libvirt call it reports ("N ms in all"). A probe in the guest (started through
# the guest agent) writes a file on the guest's root filesystem and then a dot on the
# serial console every ~10 ms; a poller here notes when the console log grows, and the
# longest gap during each command is what a client of the guest would have seen
# (a vCPU pause or a filesystem freeze both stop it; the longest gap in the quiet
# second before each run is the baseline). After each run, untimed, the snapshot is
# deleted again (`vmsnap delete`, or `virsh snapshot-delete` for virsh's), which
# merges an external snapshot's overlay back, so every run starts from the same
# one-image disk; the script checks that nothing is left behind. A `vmsnap delete`
# that fails to pivot its merge (a race in vmsnap, see delete_snap) is finished by
# hand and counted, so that it does not end the run.
#
# Part 2, chain length. A second VM whose disk holds the guest's 64 MiB filesystem and
# then BENCH_DATA_MIB MiB of non-zero data (in its template, which the VM's own disk is a
# linked clone of). With 0, 1 and 10 external overlays on top (`vmsnap create
# --disk-only`, made and merged away again with `vmsnap delete`, untimed), the guest
# reads its whole disk: `echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null
# bs=1M iflag=direct`, run through the guest agent (guest-exec) and timed inside the
# guest (the kernel's clock, from /proc/timer_list). The same chain is also read here,
# `qemu-img convert -n -U TOP --target-image-opts driver=null-co,size=SIZE`, timed with
# date. BENCH_READS rounds, each reading every chain length (ascending, then descending
# in the next round), after one untimed warm-up read.
#
# Usage: bash bench/snap.sh > snap.md      (as root; `make` first)
# Prints markdown on stdout, progress and every run on stderr. Environment:
#   BENCH_RUNS      counted rounds of part 1 (default 5)
#   BENCH_READS     rounds of part 2 (default 3)
#   BENCH_CHAINS    the chain lengths of part 2 (default "0 1 10")
#   BENCH_DATA_MIB  MiB of data after the filesystem on part 2's disk (default 256)
#   BENCH_TMP       where the scratch directory goes (default /var/tmp)
# Needs: a running libvirtd on qemu:///system, hyperfine, jq, qemu-utils, and what
# scripts/mkguest needs (scripts/setup installs them); perl with Time::HiRes for the
# console probe (Debian's perl package; without it the stall column is left out).
# Guests run under TCG (<domain type='qemu'>, VMKIT_VIRT_TYPE=qemu): on this machine a
# KVM guest hangs after "Booting from ROM" (HOST.md).
# The script runs copies of vmrun and vmsnap taken at its start (others rebuild the tree
# while it runs) and prints the commit they were built at.
# Every VM is named bench-<pid>-...; they, their snapshots, disks and logs, the
# background listeners and the scratch directory are removed when the script ends,
# whether it succeeds or not. Other VMs on the host are not touched.
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
kinds=(disk quiesce mem memext virsh)
declare -A label=([disk]="vmsnap --disk-only" [quiesce]="vmsnap --quiesce" [mem]="vmsnap --memory"
                  [memext]="vmsnap --memory --external" [virsh]="virsh snapshot-create-as")

log() { echo "snap.sh: $*" >&2; }
die() { log "$*"; exit 1; }
virsh_q() { virsh -q -c qemu:///system "$@"; }
now_ms() { date +%s%3N; }

# The timed command of KIND for snapshot SNAP of VM (a shell string for hyperfine; its
# output goes to a log per run, shown when it fails).
command_for() { # KIND VM SNAP
  local vm=$2 snap=$3
  printf 'exec >%q 2>&1; ' "$BENCH_SCRATCH/out/$snap.log"
  case "$1" in
    disk) printf '%q ' "$BENCH_VMSNAP" create "$vm" "$snap" --disk-only ;;
    quiesce) printf '%q ' "$BENCH_VMSNAP" create "$vm" "$snap" --quiesce ;;
    mem) printf '%q ' "$BENCH_VMSNAP" create "$vm" "$snap" --memory ;;
    memext) printf '%q ' "$BENCH_VMSNAP" create "$vm" "$snap" --memory --external ;;
    virsh) printf '%q ' virsh -c qemu:///system snapshot-create-as "$vm" "$snap" ;;
  esac
}

# delete_snap VM SNAP: `vmsnap delete`, and the way out of one failure seen on this
# machine (RESULTS.md): vmsnap pivots the active commit as soon as
# virDomainGetBlockJobInfo reports cur == end, which can be before libvirt marks the
# job ready ("block job ... not ready for pivot yet"); vmsnap then fails ("cannot
# pivot vda ...") and leaves the commit job running. Here the job is then pivoted with
# virsh, the snapshot's record dropped (`vmsnap delete --metadata`) and its overlay and
# memory file removed; every such case is written to $BENCH_SCRATCH/incidents.
delete_snap() {
  local vm=$1 snap=$2 out=$BENCH_SCRATCH/delete.log i t0
  echo "== vmsnap delete $vm $snap" >> "$out"
  t0=$(now_ms)
  if "$BENCH_VMSNAP" delete -q "$vm" "$snap" >> "$out" 2>&1; then
    echo "$snap $(($(now_ms) - t0))" >> "$BENCH_SCRATCH/deletes"  # (its time, for the report)
    return 0
  fi
  echo "$snap -" >> "$BENCH_SCRATCH/deletes"
  tail -n 3 "$out" | grep -q 'cannot pivot' || return 1
  for ((i = 0; i < 50; i++)); do
    virsh_q blockjob "$vm" vda --pivot >> "$out" 2>&1 && break
    sleep 0.1
  done
  [ -z "$(virsh_q blockjob "$vm" vda --info 2>/dev/null)" ] || return 1
  "$BENCH_VMSNAP" delete -q --metadata "$vm" "$snap" >> "$out" 2>&1 || return 1
  rm -f "$VMKIT_STORAGE_DIR/$vm-vda.$snap.qcow2" "$VMKIT_STORAGE_DIR/$vm.$snap.mem"
  echo "$vm $snap: $(tail -n 1 "$out")" >> "$BENCH_SCRATCH/incidents"
  log "vmsnap delete $vm $snap failed to pivot (recovered): $(tail -n 1 "$out")"
}

# Internal steps that hyperfine runs (untimed) around each timed command.
case "${1:-}" in
  __prepare) # KIND SNAP ROUND: notes which run this is and when it starts
    echo "$2 $3 $4 $(now_ms)" > "$BENCH_SCRATCH/current"
    exit 0 ;;
  __cleanup) # after each run: vmsnap's record, then the snapshot goes again
    read -r kind snap round start < "$BENCH_SCRATCH/current"
    end=$(now_ms)
    sleep 0.5  # a RESUMED event may be received just after the command returned
    settled=$(now_ms)
    err=$BENCH_SCRATCH/errors vm=$BENCH_VM
    rec=$("$BENCH_VMSNAP" list "$vm" -o json |
      jq -r --arg n "$snap" '.[] | select(.name == $n) | "\(.paused_ms // "-")\t\(.frozen_ms // "-")"') || true
    [ -n "$rec" ] || { echo "round $round, $kind: no snapshot '$snap' after the run" >> "$err"; rec=$'-\t-'; }
    inall=$(grep -o '[0-9]* ms in all' "$BENCH_SCRATCH/out/$snap.log" | cut -d' ' -f1 || true)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$kind" "$snap" "$start" "$end" "$settled" \
      "$rec" "${inall:--}" >> "$BENCH_SCRATCH/runs.tsv"
    if [ "$kind" = virsh ]; then
      virsh_q snapshot-delete "$vm" "$snap" >> "$BENCH_SCRATCH/delete.log" 2>&1 ||
        echo "round $round, $kind: virsh snapshot-delete failed" >> "$err"
    else
      delete_snap "$vm" "$snap" || echo "round $round, $kind: vmsnap delete failed" >> "$err"
    fi
    left=$("$BENCH_VMSNAP" list "$vm" -o json | jq -r '.[].name' || echo '?')
    [ -z "$left" ] || echo "round $round, $kind: snapshots left after the delete: $left" >> "$err"
    [ "$(virsh_q domstate "$vm")" = running ] || echo "round $round, $kind: $vm is not running" >> "$err"
    files=$(cd "$VMKIT_STORAGE_DIR" && ls -A | grep -vx "$vm.qcow2" || true)
    [ -z "$files" ] || echo "round $round, $kind: left in the storage folder: $files" >> "$err"
    sleep 1  # a quiet second before the next run (the console probe's baseline)
    exit 0 ;;
esac

[ "$(id -u)" = 0 ] || die "run me as root"
for t in hyperfine jq virsh qemu-img qemu-io; do
  command -v "$t" >/dev/null || die "$t is missing (run scripts/setup)"
done
[ -x "$root/vmrun/vmrun" ] && [ -x "$root/vmsnap/vmsnap" ] || die "no vmrun or vmsnap binary: run make first"
virsh -q -c qemu:///system version >/dev/null 2>&1 || die "libvirtd does not answer on qemu:///system"
runs=${BENCH_RUNS:-5} reads=${BENCH_READS:-3} data_mib=${BENCH_DATA_MIB:-256}
read -r -a chains <<< "${BENCH_CHAINS:-0 1 10}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS: '$runs' is not a positive number"
[[ "$reads" =~ ^[1-9][0-9]*$ ]] || die "BENCH_READS: '$reads' is not a positive number"
[[ "$data_mib" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DATA_MIB: '$data_mib' is not a positive number"
for c in "${chains[@]}"; do
  [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -le 50 ] || die "BENCH_CHAINS: '$c' is not a number from 0 to 50"
done
probe=yes
perl -MTime::HiRes -e 1 2>/dev/null || { probe=no; log "no perl Time::HiRes: no console probe"; }

started=$(date -u)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
scratch=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-snap.XXXXXX")
chmod 755 "$scratch"  # QEMU runs as libvirt-qemu and must reach the disks
export BENCH_SCRATCH=$scratch BENCH_PREFIX="bench-$$-" BENCH_VMSNAP=$scratch/bin/vmsnap
# The run's own storage pools over its scratch folders (bench/lib.sh).
source "$root/bench/lib.sh"
bench_pools "$scratch" "bench-$$-"
export VMKIT_VIRT_TYPE=qemu
mkdir -m 755 "$scratch/out" "$scratch/bin"
: > "$scratch/deletes"
: > "$scratch/incidents"
vmrun=$scratch/bin/vmrun vmsnap=$scratch/bin/vmsnap
bg=()  # background processes of this script

stop_bg() {
  local p
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bg[@]}"; do wait "$p" 2>/dev/null || true; done
  bg=()
}
# Destroys and undefines every domain of this run, with its snapshots' records (the
# files go with the scratch directory), and removes its logs.
remove_vms() {
  local n
  for n in $(virsh_q list --all --name | grep "^$BENCH_PREFIX" || true); do
    virsh_q destroy "$n" >/dev/null 2>&1 || true
    virsh_q undefine "$n" --snapshots-metadata >/dev/null 2>&1 ||
      virsh_q undefine "$n" >/dev/null 2>&1 || true
  done
  rm -f /var/log/libvirt/qemu/"$BENCH_PREFIX"*.log
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_bg
  remove_vms || true
  bench_unpool "$scratch"
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Copies of the tools, so that a rebuild in the tree during the run (others work in
# it) changes nothing halfway.
cp "$root/vmrun/vmrun" "$root/vmsnap/vmsnap" "$scratch/bin/"
built=$(git -C "$root" log -1 --format='%h, %cI' 2>/dev/null || echo unknown)
changed=$(git -C "$root" status --porcelain -- vmsnap common vmrun 2>/dev/null | grep -c . || true)
binage=$(date -u -r "$root/vmsnap/vmsnap" +%Y-%m-%dT%H:%M:%SZ)

# gexec VM CMD: runs CMD with /bin/sh in the guest through its agent, waits for it to
# end and prints its stdout; fails (showing its stderr) when it exits non-zero.
gexec() {
  local vm=$1 pid r i
  pid=$(virsh_q qemu-agent-command "$vm" "$(jq -cn --arg c "$2" \
    '{execute: "guest-exec", arguments: {path: "/bin/sh", arg: ["-c", $c], "capture-output": true}}')" |
    jq -e .return.pid) || { log "guest-exec failed in $vm"; return 1; }
  for ((i = 0; i < 6000; i++)); do
    r=$(virsh_q qemu-agent-command "$vm" "{\"execute\": \"guest-exec-status\", \"arguments\": {\"pid\": $pid}}")
    [ "$(jq .return.exited <<< "$r")" != true ] || break
    sleep 0.05
  done
  [ "$(jq .return.exited <<< "$r")" = true ] || { log "guest command did not end: $2"; return 1; }
  if [ "$(jq .return.exitcode <<< "$r")" != 0 ]; then
    log "guest command failed: $2: $(jq -r '.return."err-data" // "" | @base64d' <<< "$r")"
    return 1
  fi
  jq -r '.return."out-data" // "" | @base64d' <<< "$r"
}

boot() { # NAME TEMPLATE
  "$vmrun" create "$1" --template "$2" --start -q >&2
  "$vmrun" wait "$1" --console-line 'vmkit-guest: up' --timeout 180 >&2
  "$vmrun" wait "$1" --agent --timeout 120 >&2
}

# --- the templates --------------------------------------------------------------
log "building the tiny guest"
"$root/scripts/mkguest" "$scratch/guest" >&2

# A template whose disk holds the guest's 64 MiB ext4 filesystem (what it boots from
# /dev/vda) and then MIB MiB of non-zero bytes after it, flattened into one qcow2 that
# really stores them.
make_template() { # NAME MIB
  local name=$1 mib=$2 actual
  "$root/scripts/mktemplate" "$scratch/guest" "$VMKIT_TEMPLATE_DIR" "$name" "$mib" ||
    die "cannot make template $name"
  actual=$(qemu-img info --output=json "$VMKIT_TEMPLATE_DIR/$name.qcow2" | jq '."actual-size"')
  [ "$actual" -ge $((mib << 20)) ] || die "template $name stores only $actual bytes"
}
make_template bench-tiny 0
make_template bench-data "$data_mib"
# The templates' writes reach the disk now, not during part 1: a snapshot with memory
# flushes what it writes, and a host busy writing back makes its pause several times
# longer (seen here: 0.4-1 s instead of 0.15 s after a 2 GiB template).
sync

# --- part 1: the kinds of snapshot ------------------------------------------------
vm=${BENCH_PREFIX}snap
export BENCH_VM=$vm
log "part 1: booting $vm"
boot "$vm" bench-tiny
events=$scratch/events.log qmp=$scratch/qmp.log ticks=$scratch/ticks.log
virsh -c qemu:///system event "$vm" --event lifecycle --loop --timestamp > "$events" 2>&1 &
bg+=($!)
virsh -c qemu:///system qemu-monitor-event "$vm" --event '^(STOP|RESUME)$' --regex --loop \
  --timestamp > "$qmp" 2>&1 &
bg+=($!)
: > "$ticks"
if [ "$probe" = yes ]; then
  # The guest: a write on its root filesystem, then a dot on its serial console.
  virsh_q qemu-agent-command "$vm" "$(jq -cn --arg c \
    'i=0; while :; do i=$((i+1)); echo $i > /mnt/.probe; echo . > /dev/ttyS0; usleep 10000; done' \
    '{execute: "guest-exec", arguments: {path: "/bin/sh", arg: ["-c", $c]}}')" >/dev/null
  # Here: the time (ms) of every growth of the console log.
  perl -MTime::HiRes=time,sleep -e '$| = 1; $f = shift; $s = -s $f;
    while (1) { $n = -s $f; if ($n != $s) { printf "%d\n", time() * 1000; $s = $n } sleep 0.001 }' \
    "/var/log/libvirt/qemu/$vm-console.log" > "$ticks" &
  bg+=($!)
fi
sleep 3

: > "$scratch/runs.tsv"
for ((r = 0; r <= runs; r++)); do
  args=() cmds=() order=()
  for ((i = 0; i < ${#kinds[@]}; i++)); do
    k=${kinds[$(((i + r) % ${#kinds[@]}))]}
    snap=r$r-$k
    order+=("$k")
    args+=(-n "$k" -p "$(printf '%q ' bash "$self" __prepare "$k" "$snap" "$r")")
    cmds+=("$(command_for "$k" "$vm" "$snap")")
  done
  [ "$r" -gt 0 ] || log "round 0 (warm-up, not counted): ${cmds[*]/#/$'\n  '}"
  : > "$scratch/errors"
  if ! hyperfine --runs 1 --style none --export-json "$scratch/round.json" \
      --cleanup "$(printf '%q ' bash "$self" __cleanup)" \
      "${args[@]}" "${cmds[@]}" > "$scratch/hyperfine.log" 2>&1; then
    cat "$scratch/hyperfine.log" "$scratch"/out/r"$r"-*.log "$scratch/delete.log" >&2 2>/dev/null || true
    die "round $r: a command failed"
  fi
  if [ -s "$scratch/errors" ]; then
    cat "$scratch/errors" "$scratch/delete.log" >&2 2>/dev/null || true
    die "round $r: a run did not leave the VM as it found it"
  fi
  jq -r --arg r "$r" '.results[] | [$r, .command, .times[0]] | @tsv' "$scratch/round.json" >> "$scratch/walls.tsv"
  log "round $r: $(jq -r '[.results[] | "\(.command) \(.times[0] | . * 1000 | round) ms"] | join(", ")' \
    "$scratch/round.json")"
done
sleep 1
stop_bg
load_mid=$(cut -d' ' -f1-3 /proc/loadavg)

# Every run with its measures: round kind wall_s ev_ms qmp_ms vmsnap_ms frozen_ms inall_ms gap_ms.
# Event times (virsh prints "YYYY-MM-DD HH:MM:SS.mmm+0000: event ...") in ms since 1970.
TZ=UTC awk -F'\t' -v OFS='\t' -v probe="$probe" '
  function ms(d, t,   a, b) {
    split(d, a, "-"); split(substr(t, 1, 12), b, ":")
    return mktime(a[1] " " a[2] " " a[3] " " b[1] " " b[2] " " int(b[3])) * 1000 + int(substr(b[3], 4, 3))
  }
  # The paused time inside [from, to] from one stream of S(uspend)/R(esume) marks;
  # "?" when a pause does not end inside the window.
  function paused(src, from, to,   i, tot, open, since) {
    tot = 0; open = 0
    for (i = 1; i <= n[src]; i++) {
      if (when[src, i] < from || when[src, i] > to) continue
      if (what[src, i] == "S" && !open) { open = 1; since = when[src, i] }
      else if (what[src, i] == "R" && open) { open = 0; tot += when[src, i] - since }
    }
    return open ? "?" : tot
  }
  FILENAME ~ /events.log$/ && / event .lifecycle. / {
    m = $0 ~ /: Suspended / ? "S" : $0 ~ /: Resumed / ? "R" : ""
    if (m != "") { split($0, f, " "); n["ev"]++; when["ev", n["ev"]] = ms(f[1], f[2]); what["ev", n["ev"]] = m }
    next
  }
  FILENAME ~ /qmp.log$/ && / event (STOP|RESUME) / {
    split($0, f, " "); n["qmp"]++; when["qmp", n["qmp"]] = ms(f[1], f[2])
    what["qmp", n["qmp"]] = f[4] == "STOP" ? "S" : "R"
    next
  }
  FILENAME ~ /ticks.log$/ { tick[++nt] = $1; next }
  FILENAME ~ /walls.tsv$/ { wall[$1, $2] = $3; next }
  FILENAME ~ /runs.tsv$/ {
    # round kind snap start end settled vmsnap_paused frozen inall
    # the longest gap between console ticks during the command, and in the quiet
    # time just before it (the baseline)
    gap = base = "-"
    if (probe == "yes" && nt > 1) {
      gap = base = 0
      for (i = 2; i <= nt; i++) {
        d = tick[i] - tick[i - 1]
        if (tick[i] > $4 && tick[i - 1] < $5 && d > gap) gap = d
        if (tick[i] > $4 - 900 && tick[i - 1] < $4 - 100 && tick[i] <= $4 && d > base) base = d
      }
    }
    print $1, $2, wall[$1, $2], paused("ev", $4, $6), paused("qmp", $4, $6), $7, $8, $9, gap, base
  }' "$events" "$qmp" "$ticks" "$scratch/walls.tsv" "$scratch/runs.tsv" > "$scratch/measures.tsv"
# The console probe's ordinary gap (median over the part), for reading the stall column.
tick_median=$(awk 'NR > 1 && $1 - p > 3 { print $1 - p } { p = $1 }' "$ticks" | sort -n |
  awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }')
base_gaps=$(awk -F'\t' '$1 > 0 { print $10 }' "$scratch/measures.tsv")

# --- part 2: reads through a chain of overlays ------------------------------------
virsh_q destroy "$vm" >/dev/null  # one guest at a time
cvm=${BENCH_PREFIX}chain
log "part 2: booting $cvm"
boot "$cvm" bench-data
nchain=0
set_chain() { # LENGTH: adds or merges away overlays (newest first) until there are LENGTH
  while [ "$nchain" -lt "$1" ]; do
    nchain=$((nchain + 1))
    "$vmsnap" create -q "$cvm" "chain-$nchain" --disk-only >/dev/null
  done
  while [ "$nchain" -gt "$1" ]; do
    delete_snap "$cvm" "chain-$nchain" || die "vmsnap delete $cvm chain-$nchain failed"
    nchain=$((nchain - 1))
  done
  local n
  n=$("$vmsnap" list "$cvm" -o json | jq length)
  [ "$n" = "$1" ] || die "the chain should have $1 overlays, vmsnap lists $n snapshots"
}
top_image() { virsh_q domblklist "$cvm" | awk '$1 == "vda" { print $2 }'; }
# Inside the guest: bytes and nanoseconds of one full read of /dev/vda, the clock read
# with shell builtins only (no process started inside the timed part).
guest_read='echo 3 > /proc/sys/vm/drop_caches
now() { { read -r x; read -r x; read -r x x ns x; } < /proc/timer_list; }
now; t0=$ns
dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null
now; t1=$ns
echo $(( $(cat /sys/block/vda/size) * 512 )) $((t1 - t0))'
host_read() { # prints bytes and nanoseconds of one read of the whole chain here
  local top size t0 t1
  top=$(top_image)
  size=$(qemu-img info -U --output=json "$top" | jq '."virtual-size"')
  t0=$(date +%s%N)
  qemu-img convert -n -U "$top" --target-image-opts "driver=null-co,size=$size"
  t1=$(date +%s%N)
  echo "$size $((t1 - t0))"
}
set_chain "${chains[0]}"
gexec "$cvm" "$guest_read" >/dev/null  # warm-up (the host's page cache), not counted
host_read >/dev/null
: > "$scratch/reads.tsv"
declare -A depth
for ((k = 1; k <= reads; k++)); do
  order=("${chains[@]}")
  if [ $((k % 2)) = 0 ]; then
    order=()
    for ((i = ${#chains[@]} - 1; i >= 0; i--)); do order+=("${chains[$i]}"); done
  fi
  for c in "${order[@]}"; do
    set_chain "$c"
    depth[$c]=$(qemu-img info -U --backing-chain --output=json "$(top_image)" | jq length)
    out=$(gexec "$cvm" "$guest_read")
    read -r gb gns <<< "$out"
    out=$(host_read)
    read -r hb hns <<< "$out"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$c" "$gb" "$gns" "$hb" "$hns" >> "$scratch/reads.tsv"
    log "read round $k, $c overlays (${depth[$c]} images): guest $(awk -v b="$gb" -v t="$gns" \
      'BEGIN { printf "%.0f", b / t * 1000 }') MB/s, host $(awk -v b="$hb" -v t="$hns" \
      'BEGIN { printf "%.0f", b / t * 1000 }') MB/s"
  done
done
set_chain 0
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
t_end=$(date +%s)

# --- the report -----------------------------------------------------------------
# median/min/max of the numbers on stdin ("-" and "?" skipped); "-" when none.
stat() {
  grep -E '^-?[0-9.]+$' | sort -g | awk -v w="$1" -v f="${2:-%.0f}" '{ v[NR] = $1 } END {
    if (!NR) { print "-"; exit }
    if (w == "min") x = v[1]; else if (w == "max") x = v[NR]
    else x = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    x = sprintf(f, x); if (x ~ /^-0(\.0*)?$/) x = substr(x, 2)
    print x }'
}
col() { awk -F'\t' -v k="$1" -v c="$2" '$1 > 0 && $2 == k { print $c }' "$scratch/measures.tsv"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)

echo "Taken \`$started\` (\`date -u\` at the start; it took $(( (t_end - t_start + 30) / 60 )) min)."
echo
echo "Machine: $(nproc) cores (\`nproc\`), \`$cpu\`, $mem GiB memory, Linux $(uname -r)," \
  "Debian $(cat /etc/debian_version), libvirt $(virsh -c qemu:///system version --daemon |
  awk '/Running against daemon/ { print $NF }'), QEMU $(qemu-system-x86_64 --version |
  awk 'NR == 1 { print $4 }'), $(hyperfine --version). Load average (1, 5, 15 min) at the" \
  "start $load_start, after part 1 $load_mid, at the end $load_end. vmrun and vmsnap as built" \
  "at $binage (HEAD $built; uncommitted changes under vmsnap/, common/, vmrun/: $changed files)."
echo
echo "### Part 1: each kind of snapshot on one running VM"
echo
echo "$runs rounds after a warm-up; in each, one snapshot of every kind, deleted again" \
  "(untimed) before the next. Medians (min-max in brackets for the wall time)."
echo
echo "| kind | wall (s) | libvirt call, vmsnap's \"in all\" (ms) | paused, lifecycle events (ms) |" \
  "paused, QEMU STOP->RESUME (ms) | paused, vmsnap's record (ms) | frozen, vmsnap's record (ms) |" \
  "longest console gap (ms) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
declare -A wmed pev
for k in "${kinds[@]}"; do
  wmed[$k]=$(col "$k" 3 | stat median %.3f)
  pev[$k]=$(col "$k" 4 | stat median)
  echo "| ${label[$k]} | ${wmed[$k]} ($(col "$k" 3 | stat min %.3f)-$(col "$k" 3 | stat max %.3f)) |" \
    "$(col "$k" 8 | stat median) | ${pev[$k]} | $(col "$k" 5 | stat median) | $(col "$k" 6 | stat median) |" \
    "$(col "$k" 7 | stat median) | $(col "$k" 9 | stat median) |"
done
echo
echo "| ratio to virsh snapshot-create-as (medians) | wall | paused (lifecycle events) |"
echo "| --- | ---: | ---: |"
for k in disk quiesce mem memext; do
  echo "| ${label[$k]} | $(ratio "${wmed[$k]}" "${wmed[virsh]}") | $(ratio "${pev[$k]}" "${pev[virsh]}") |"
done
echo
diffs=$(awk -F'\t' '$1 > 0 && $2 != "virsh" && $4 ~ /^[0-9]+$/ && $6 ~ /^[0-9]+$/ && $4 > 0 { print $6 - $4 }' \
  "$scratch/measures.tsv")
echo "vmsnap's recorded pause minus the pause from the lifecycle events, over the" \
  "$(grep -c . <<< "$diffs" || true) vmsnap runs that paused the guest: median $(stat median <<< "$diffs") ms," \
  "from $(stat min <<< "$diffs") to $(stat max <<< "$diffs") ms. The console probe's ordinary gap" \
  "is ${tick_median} ms (median); the longest gap in the quiet 0.8 s before each run is" \
  "$(stat median <<< "$base_gaps") ms (median; at most $(stat max <<< "$base_gaps") ms)."
echo
echo "Every run (round, kind: wall s / paused by events, QEMU, vmsnap ms / frozen ms / console gap ms):"
echo
echo "| round | runs in the order taken |"
echo "| --- | --- |"
awk -F'\t' -v OFS='\t' '$1 > 0 { r[$1] = r[$1] (r[$1] == "" ? "" : ", ") \
  sprintf("%s %.3f / %s, %s, %s / %s / %s", $2, $3, $4, $5, $6, $7, $9) }
  END { for (i = 1; i in r; i++) print "| " i " | " r[i] " |" }' "$scratch/measures.tsv"
echo
echo "### Part 2: reading the whole disk through a chain of overlays"
echo
bytes=$(awk -F'\t' 'NR == 1 { print $3 }' "$scratch/reads.tsv")
echo "The guest's disk: $((bytes >> 20)) MiB (64 MiB filesystem + $data_mib MiB of data, stored in the" \
  "template the VM's disk is a linked clone of). $reads rounds, one read per chain length each;" \
  "MB/s = 10^6 bytes per second, medians (min-max)."
echo
echo "| overlays | images in the chain | guest dd, iflag=direct (MB/s) | host qemu-img convert (MB/s) |"
echo "| ---: | ---: | ---: | ---: |"
declare -A gmed hmed
for c in "${chains[@]}"; do
  g() { awk -F'\t' -v c="$c" '$2 == c { printf "%.1f\n", $3 / $4 * 1000 }' "$scratch/reads.tsv"; }
  h() { awk -F'\t' -v c="$c" '$2 == c { printf "%.1f\n", $5 / $6 * 1000 }' "$scratch/reads.tsv"; }
  gmed[$c]=$(g | stat median) hmed[$c]=$(h | stat median)
  echo "| $c | ${depth[$c]} | ${gmed[$c]} ($(g | stat min)-$(g | stat max)) |" \
    "${hmed[$c]} ($(h | stat min)-$(h | stat max)) |"
done
echo
ref=${chains[0]}
for c in "${chains[@]}"; do [ "$c" != 1 ] || ref=1; done
echo "| ratio of medians | guest | host |"
echo "| --- | ---: | ---: |"
for c in "${chains[@]}"; do
  [ "$c" != "$ref" ] || continue
  echo "| $c overlays / $ref | $(ratio "${gmed[$c]}" "${gmed[$ref]}") | $(ratio "${hmed[$c]}" "${hmed[$ref]}") |"
done
echo
echo "Untimed \`vmsnap delete\` runs between measurements: $(grep -c . "$scratch/deletes" || true);" \
  "failed with \"cannot pivot\" and recovered by hand (virsh blockjob --pivot, then" \
  "\`vmsnap delete --metadata\`): $(grep -c . "$scratch/incidents" || true). Their times" \
  "(ms, median): $(for k in disk quiesce mem memext; do
    printf '%s %s, ' "${label[$k]}" "$(awk -v k="$k" '$1 ~ "^r[1-9][0-9]*-" k "$" { print $2 }' \
      "$scratch/deletes" | stat median)"; done)merging one of the chain's empty overlays" \
  "$(awk '$1 ~ /^chain-/ { print $2 }' "$scratch/deletes" | stat median)."
