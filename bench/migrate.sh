#!/usr/bin/env bash
# bench/migrate.sh: live migration, vmmigrate side by side with
# `virsh migrate --live --p2p`, between this machine's libvirtd (h1) and a second
# daemon in its own namespaces (h2, scripts/host2), the same guests in one run.
#   idle   a 256 MiB tiny guest (scripts/mkguest), moved h1 -> h2 -> h1 ...,
#          BENCH_MOVES (default 5) moves with each tool, each tool both ways:
#          downtime as QEMU measured it (the completed job's statistics on the
#          destination, the same query for both tools) and the wall time of the
#          command.
#   dirty  a 512 MiB tiny guest whose writer loop copies 100 MB of random data in
#          its RAM over and over (HOST.md: about 2,000 pages/s under TCG), both tools
#          capped at BENCH_BW MiB/s (default 8): virsh migrate --live is given 120 s
#          and then aborted (its job's progress recorded); vmmigrate's auto strategy
#          (--precopy-budget 30 --max-downtime 1000) must finish.
#          BENCH_IDLE_ONLY=1 runs the idle part alone.
# Usage: bash bench/migrate.sh > table.md      (as root; `make` first)
# Guests run under TCG (HOST.md). Everything the script makes (VMs, pools, the
# second host, the scratch folder) is removed when it ends, however it ends.
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
source "$root/bench/lib.sh"
log() { echo "migrate.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root"
for t in jq virsh qemu-img; do command -v "$t" >/dev/null || die "$t is missing (run scripts/setup)"; done
[ -x "$root/vmmigrate/vmmigrate" ] || die "no $root/vmmigrate/vmmigrate: run make first"
moves=${BENCH_MOVES:-5} bw=${BENCH_BW:-8}
[[ "$moves" =~ ^[1-9][0-9]*$ ]] || die "BENCH_MOVES: '$moves' is not a positive number"

started=$(date -u)
machine=$(bench_machine)
scratch=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-migrate.XXXXXX")
chmod 755 "$scratch"
prefix="bench-$$-"
export VMKIT_VIRT_TYPE=qemu
H2DIR=$scratch/h2
cleanup() {
  local u n
  for u in qemu:///system "${H2:-}"; do
    [ -n "$u" ] || continue
    for n in $(virsh -q -c "$u" list --all --name 2>/dev/null | grep "^$prefix" || true); do
      virsh -q -c "$u" destroy "$n" >/dev/null 2>&1 || true
      virsh -q -c "$u" undefine "$n" >/dev/null 2>&1 || true
    done
  done
  "$root/scripts/host2" stop "$H2DIR" >/dev/null 2>&1 || true
  mountpoint -q "$scratch/h1-run" 2>/dev/null && umount "$scratch/h1-run"
  bench_unpool "$scratch"
  rm -rf --one-file-system "$scratch"
}
trap cleanup EXIT

bench_pools "$scratch" "$prefix"
"$root/scripts/mkguest" "$scratch/guest" >&2
"$root/scripts/mktemplate" "$scratch/guest" "$VMKIT_TEMPLATE_DIR" tiny
# h1 by a socket path the second host's daemon sees too (t/helpers.bash pool_start).
mkdir -p "$scratch/h1-run"
mount --bind /run/libvirt "$scratch/h1-run"
H1="qemu+unix:///system?socket=$scratch/h1-run/libvirt-sock"
H2=$(HOST2_QEMU_CONF="migration_port_min = 49352
migration_port_max = 49415" "$root/scripts/host2" start "$H2DIR" host2)
for p in "$VMKIT_POOL:$VMKIT_STORAGE_DIR" "$VMKIT_TEMPLATE_POOL:$VMKIT_TEMPLATE_DIR"; do
  virsh -q -c "$H2" pool-create-as "${p%%:*}" dir --target "${p#*:}" >/dev/null
done
printf 'h1 %s migrate-uri=tcp://127.0.0.1\nh2 %s migrate-uri=tcp://127.0.0.1\n' "$H1" "$H2" > "$scratch/hosts"
export VMKIT_HOSTS=$scratch/hosts
uri_of() { [ "$1" = h1 ] && echo "$H1" || echo "$H2"; }
other() { [ "$1" = h1 ] && echo h2 || echo h1; }
now() { date +%s%N; }

# downtime_on HOST VM: the completed job's downtime in ms, from the destination.
downtime_on() {
  virsh -q -c "$(uri_of "$1")" domjobinfo "$2" --completed --keep-completed 2>/dev/null |
    awk -F: '/^Total downtime/ {gsub(/[^0-9]/, "", $2); print $2}'
}

boot() {
  local vm=$1
  shift
  "$root/vmrun/vmrun" create "$vm" --template tiny --start -q "$@" >/dev/null
  "$root/vmrun/vmrun" wait "$vm" --console-line 'vmkit-guest: up' --timeout 120 -q
}

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# --- idle --------------------------------------------------------------------------
vm=${prefix}idle
boot "$vm"
at=h1
declare -a vd vt sd st vdir sdir
# The tools take turns in the order vmmigrate, virsh, virsh, vmmigrate, ... so that
# each moves the guest both ways (h1 -> h2 and h2 -> h1) as often as the other: the
# two daemons are not alike (h2 runs in namespaces, h1 is the machine's), and a
# plain alternation would give every h1 -> h2 move to one tool.
for ((i = 0; i < moves * 2; i++)); do
  to=$(other "$at")
  t0=$(now)
  if ((i % 4 == 0 || i % 4 == 3)); then
    "$root/vmmigrate/vmmigrate" -c "$at" "$vm" "$to" -q -o json >/dev/null
    t1=$(now)
    vd+=("$(downtime_on "$to" "$vm")")
    vdir+=("$at>$to:${vd[-1]}")
    vt+=("$(((t1 - t0) / 1000000))")
  else
    virsh -q -c "$(uri_of "$at")" migrate --live --p2p --persistent --undefinesource --unsafe \
      "$vm" "$(uri_of "$to")" tcp://127.0.0.1 >/dev/null
    t1=$(now)
    sd+=("$(downtime_on "$to" "$vm")")
    sdir+=("$at>$to:${sd[-1]}")
    st+=("$(((t1 - t0) / 1000000))")
  fi
  log "idle move $((i + 1)): $at -> $to ($( ((i % 4 == 0 || i % 4 == 3)) && echo vmmigrate || echo virsh)) $(((t1 - t0) / 1000000)) ms"
  at=$to
done
vdm=$(printf '%s\n' "${vd[@]}" | median) sdm=$(printf '%s\n' "${sd[@]}" | median)
vtm=$(printf '%s\n' "${vt[@]}" | median) stm=$(printf '%s\n' "${st[@]}" | median)
virsh -q -c "$(uri_of "$at")" destroy "$vm" >/dev/null
virsh -q -c "$(uri_of "$at")" undefine "$vm" >/dev/null

# dir_median DIRECTION ENTRY...: the median of the downtimes of one direction.
dir_median() {
  local d=$1 e
  shift
  for e in "$@"; do [ "${e%%:*}" = "$d" ] && echo "${e#*:}"; done | median
}
cat <<EOF
## migrate: live migration against \`virsh migrate --live --p2p\` (\`bash bench/migrate.sh\`)

Taken \`$started\` (\`date -u\` when the run started).

$machine

Two libvirt daemons on this one machine: h1 (this machine's) and h2 (scripts/host2: its
own mount and UTS namespace, /run, /var/lib/libvirt and host UUID), disks on a folder
both see (shared storage), the migration stream on tcp://127.0.0.1. Guests under TCG:
the tiny guest of scripts/mkguest. Both tools' downtime is read the same way, from
the completed job's statistics on the destination (\`virsh domjobinfo --completed\`:
QEMU's own measure); times are the wall time of the command.

### Idle guest (256 MiB), $moves moves with each tool, taking turns so each moves it both ways as often

| tool | command | median downtime | median h1 > h2 / h2 > h1 | median total time | downtimes (ms), in order |
| --- | --- | --- | --- | --- | --- |
| vmmigrate | \`vmmigrate -c SRC VM DEST\` | $vdm ms | $(dir_median 'h1>h2' "${vdir[@]}") / $(dir_median 'h2>h1' "${vdir[@]}") ms | $vtm ms | ${vdir[*]} |
| virsh | \`virsh migrate --live --p2p --persistent --undefinesource --unsafe VM DESTURI tcp://127.0.0.1\` | $sdm ms | $(dir_median 'h1>h2' "${sdir[@]}") / $(dir_median 'h2>h1' "${sdir[@]}") ms | $stm ms | ${sdir[*]} |

Ratio (vmmigrate / virsh): downtime $(awk -v a="$vdm" -v b="$sdm" 'BEGIN {printf "%.2f", a / b}')x
(target: within 1.1x), total time $(awk -v a="$vtm" -v b="$stm" 'BEGIN {printf "%.2f", a / b}')x.

EOF
[ -n "${BENCH_IDLE_ONLY:-}" ] && exit 0

# --- dirty ---------------------------------------------------------------------------
dirty_guest() {
  virsh -q -c "$(uri_of "$1")" qemu-agent-command "$2" "$(jq -cn '{execute:"guest-exec",arguments:{path:"/bin/sh",
    arg:["-c","dd if=/dev/urandom of=/tmp/a bs=1M count=100 2>/dev/null; (while :; do cp /tmp/a /tmp/b; done) >/dev/null 2>&1 </dev/null &"]}}')" >/dev/null
  sleep 5
}
vm=${prefix}dirty
boot "$vm" --memory 512M
dirty_guest h1 "$vm"
# virsh: plain pre-copy, 120 s, then aborted.
t0=$(now)
virsh -q -c qemu:///system migrate --live --p2p --persistent --undefinesource --unsafe --bandwidth "$bw" \
  "$vm" "$H2" tcp://127.0.0.1 >/dev/null 2>"$scratch/virsh.err" &
vpid=$!
info=
for ((s = 0; s < 120; s++)); do
  kill -0 "$vpid" 2>/dev/null || break
  sleep 1
  info=$(virsh -q -c qemu:///system domjobinfo "$vm" 2>/dev/null || true)
done
virsh_done=no
if kill -0 "$vpid" 2>/dev/null; then
  virsh -q -c qemu:///system domjobabort "$vm" >/dev/null 2>&1 || true
  wait "$vpid" || true
else
  wait "$vpid" && virsh_done=yes || true
fi
t1=$(now)
vs_time=$(((t1 - t0) / 1000))
vs_left=$(awk -F: '/^Memory remaining/ {print $2}' <<<"$info" | xargs)
vs_iter=$(awk -F: '/^Iteration/ {print $2}' <<<"$info" | xargs)
vs_dirty=$(awk -F: '/^Dirty rate/ {print $2}' <<<"$info" | xargs)
vs_sent=$(awk -F: '/^Memory processed/ {print $2}' <<<"$info" | xargs)
log "virsh on the dirty guest: finished=$virsh_done after $((vs_time / 1000000)) s, $vs_left left, iteration $vs_iter"
[ "$(virsh -q -c qemu:///system domstate "$vm")" = running ] || die "the dirty guest is not running on h1 after virsh"
# vmmigrate: auto.
t0=$(now)
out=$("$root/vmmigrate/vmmigrate" -c h1 "$vm" h2 --bandwidth "$bw" --precopy-budget 30 --max-downtime 1000 -o json -q)
t1=$(now)
mm_time=$(((t1 - t0) / 1000000))
mm_down=$(jq -r .downtime_ms <<<"$out") mm_by=$(jq -r .finished_by <<<"$out") mm_bytes=$(jq -r .memory_bytes <<<"$out")
pages=$(awk '{print $1}' <<<"$vs_dirty")

cat <<EOF
### A guest that dirties memory faster than the link (512 MiB, $bw MiB/s for both)

The guest copies 100 MB of random data in its RAM over and over: libvirt reported a
dirty rate of $vs_dirty (about $(awk -v p="${pages:-0}" 'BEGIN {printf "%.1f", p * 4096 / 1048576}') MiB/s of 4 KiB pages) during virsh's attempt.

| tool | command | finished | time | downtime | what finished it |
| --- | --- | --- | --- | --- | --- |
| virsh | \`virsh migrate --live --p2p ... --bandwidth $bw\` | $virsh_done (aborted after $((vs_time / 1000000)) s: $vs_sent sent, $vs_left left, iteration $vs_iter) | - | - | - |
| vmmigrate | \`vmmigrate VM DEST --bandwidth $bw --precopy-budget 30 --max-downtime 1000\` | yes | $((mm_time / 1000)) s | $mm_down ms | $mm_by ($((mm_bytes / 1048576)) MiB of memory sent) |

Target: vmmigrate completes with downtime under 1 s where plain \`virsh migrate --live\`
has not finished after 120 s.
EOF
