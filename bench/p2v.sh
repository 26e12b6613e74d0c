#!/usr/bin/env bash
# bench/p2v.sh: p2v-agent | p2v-convert against the whole-disk copy that virt-p2v's
# path amounts to, side by side in one run, on the same disk:
#   disk   a BENCH_SIZE_GB (default 4) GiB raw disk, an MBR and one ext4 partition
#          made (mkfs.ext4 -d) from files of /usr/lib/x86_64-linux-gnu and /usr/bin
#          taken in name order up to BENCH_DATA_MB (default 600) MiB
# Measured, each after `sync; echo 3 > /proc/sys/vm/drop_caches`:
#   stream      the bytes of `p2v-agent send` (zstd level 3, the default) against
#               the used data compressed by zstd at the same level: `e2image -ra` of
#               the partition (its used blocks, the rest holes, read as zeros) through
#               `zstd -3 -T0` (target: at most 1.05x)
#   1 Gbit/s    `p2v-agent send | pv -q -L 125m | p2v-convert` against
#               `dd if=DISK bs=1M | pv -q -L 125m | dd of=FILE bs=1M` then
#               `qemu-img convert -O qcow2 FILE OUT` (qemu-img cannot read a pipe)
#               (target: at most 0.2x)
#   unlimited   `p2v-agent send | p2v-convert` against `qemu-img convert -O qcow2
#               DISK OUT` (no target: the cost of compression on 2 cores)
# Times are wall seconds until the last command ended and a `sync` after it returned.
# p2v-convert writes into a pool of the run's own (a dir pool in the scratch folder),
# through qemu-nbd; each result is compared with the disk (`qemu-img compare`): the
# partition's files must be identical (the free blocks are not sent, so the disk's
# bytes may differ there: a fresh mkfs leaves them zeros, and they compare equal).
#
# Usage: bash bench/p2v.sh > table.md     (as root; `make` and scripts/setup first)
# Environment: BENCH_SIZE_GB, BENCH_DATA_MB, BENCH_TMP (default /var/tmp; needs about
# 3 times BENCH_SIZE_GB free). The pool, its VMs and the scratch folder are removed
# when the script ends, also on failure or Ctrl-C.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
size_gb=${BENCH_SIZE_GB:-4}
data_mb=${BENCH_DATA_MB:-600}
tmp=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-p2v.XXXXXX")
pool=bench-$$-p2v
export VMKIT_VIRT_TYPE=qemu VMKIT_POOL=$pool
say() { echo "bench/p2v: $*" >&2; }

cleanup() {
  for vm in $(virsh -q list --all --name | grep "^bench-$$-" || true); do
    virsh -q undefine "$vm" >/dev/null 2>&1 || true
  done
  virsh -q pool-destroy "$pool" >/dev/null 2>&1 || true
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for c in pv e2image zstd qemu-img; do
  command -v "$c" >/dev/null || { say "$c is missing: run scripts/setup"; exit 1; }
done
agent=$top/p2v-agent/p2v-agent
convert=$top/p2v-convert/p2v-convert
[ -x "$agent" ] && [ -x "$convert" ] || { say "build first: make"; exit 1; }

# The disk.
say "building a ${size_gb} GiB disk with ${data_mb} MiB of files"
mkdir -p "$tmp/files" "$tmp/pool"
chmod 755 "$tmp/pool"
left=$((data_mb << 20))
while IFS= read -r -d '' f; do
  s=$(stat -c %s "$f")
  [ "$s" -le "$left" ] || continue
  rel=${f#/usr/}
  mkdir -p "$tmp/files/$(dirname "$rel")"
  cp "$f" "$tmp/files/$rel"
  left=$((left - s))
  [ "$left" -gt $((1 << 20)) ] || break
done < <(find /usr/lib/x86_64-linux-gnu /usr/bin -type f -print0 | sort -z)
used_files=$(( (data_mb << 20) - left ))
disk=$tmp/disk.raw
truncate -s "${size_gb}G" "$disk"
printf 'label: dos\n,,L\n' | sfdisk -q "$disk"
part_bytes=$(( (size_gb << 30) - (1 << 20) ))
mkfs.ext4 -q -F -E offset=$((1 << 20)) -d "$tmp/files" "$disk" "$((part_bytes >> 10))k"
rm -rf "$tmp/files"
virsh -q pool-create-as "$pool" dir --target "$tmp/pool" >/dev/null

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# timed CMD...: wall seconds of a shell command line, then a sync.
timed() {
  local t0 t1
  drop
  t0=$(date +%s.%N)
  bash -c "$1"
  sync
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l | xargs printf '%.3f'
}
same_fs() {
  # The partition's files: e2fsck clean, and the same bytes where ext4 uses them.
  local img=$1 raw=$tmp/check.raw
  qemu-img convert -O raw "$img" "$raw"
  cmp -n $((1 << 20)) "$disk" "$raw"
  local loop
  loop=$(losetup -f --show -r -o $((1 << 20)) "$raw")
  e2fsck -fn "$loop" >/dev/null 2>&1 || { losetup -d "$loop"; say "$img: e2fsck found errors"; return 1; }
  losetup -d "$loop"
  qemu-img compare -q -f raw -F raw "$disk" "$raw" || say "$img: bytes differ from the disk (free blocks)"
  rm -f "$raw"
}

say "stream size"
"$agent" send --disk "$disk" -q > "$tmp/stream"
stream_bytes=$(stat -c %s "$tmp/stream")
rm -f "$tmp/stream"
loop=$(losetup -f --show -r -o $((1 << 20)) "$disk")
e2image -ra "$loop" "$tmp/used.raw"
losetup -d "$loop"
used_blocks=$(du -B1 "$tmp/used.raw" | cut -f1)
ref_bytes=$(zstd -3 -T0 -q -c "$tmp/used.raw" | wc -c)
rm -f "$tmp/used.raw"

say "1 Gbit/s: p2v"
t_p2v_link=$(timed "'$agent' send --disk '$disk' -q | pv -q -L 125m | '$convert' --name bench-$$-a --memory 512M -q")
same_fs "$tmp/pool/bench-$$-a.qcow2"
say "1 Gbit/s: dd | pv | dd, then qemu-img convert"
t_dd_link=$(timed "dd if='$disk' bs=1M status=none | pv -q -L 125m | dd of='$tmp/copy.raw' bs=1M status=none && qemu-img convert -O qcow2 '$tmp/copy.raw' '$tmp/copy.qcow2'")
rm -f "$tmp/copy.raw" "$tmp/copy.qcow2"
say "unlimited: p2v"
t_p2v=$(timed "'$agent' send --disk '$disk' -q | '$convert' --name bench-$$-b --memory 512M -q")
same_fs "$tmp/pool/bench-$$-b.qcow2"
say "unlimited: qemu-img convert"
t_img=$(timed "qemu-img convert -O qcow2 '$disk' '$tmp/img.qcow2'")
rm -f "$tmp/img.qcow2"

mib() { echo "$1 / 1048576" | bc -l | xargs printf '%.1f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
cat <<EOF
Taken \`$(date -u)\`; machine: $(nproc) cores, \`$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\`,
$(uname -r), HEAD $(git -C "$top" rev-parse --short HEAD). Disk: ${size_gb} GiB, one ext4
partition holding $(mib "$used_files") MiB of files ($(mib "$used_blocks") MiB of used blocks by \`e2image -ra\`).

| measure | p2v | anchor | ratio | target |
| --- | ---: | ---: | ---: | --- |
| stream bytes vs zstd -3 of the used blocks (MiB) | $(mib "$stream_bytes") | $(mib "$ref_bytes") | $(ratio "$stream_bytes" "$ref_bytes") | <= 1.05 |
| through 1 Gbit/s (\`pv -L 125m\`), s: agent \| convert vs dd \| dd + qemu-img convert | $t_p2v_link | $t_dd_link | $(ratio "$t_p2v_link" "$t_dd_link") | <= 0.2 |
| unlimited, s: agent \| convert vs qemu-img convert -O qcow2 | $t_p2v | $t_img | $(ratio "$t_p2v" "$t_img") | - |
EOF
