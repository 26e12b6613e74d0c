#!/usr/bin/env bash
# bench/chunksize.sh: the measurement behind the chunk size of a vmbackup
# repository (man/vmbackup-repository.5), on the data of vmbackup's benchmark:
#   full.img   a 4 GiB raw image holding an ext4 filesystem made from /usr/bin and
#              /usr/lib/x86_64-linux-gnu of this machine (about 1.5 GiB of real
#              files; mkfs.ext4 -d, no mount needed)
#   later.img  the same image with 64 MiB overwritten: 1024 writes of 64 KiB of
#              random data at random 4 KiB-aligned offsets (a fixed seed)
# For each chunk size (64 KiB to 4 MiB), fixed chunks at disk offsets: what the full
# image stores (unique chunks, their zstd -3 size chunk by chunk), what the later
# one adds (new chunks), the size of the chunk index per TiB of unique data (64-byte
# merged entries), and how much a restore of one small file reads: the chunks that
# hold what mounting the filesystem and reading /usr/bin/true touch (superblock,
# group descriptors, journal superblock, the inodes and directory blocks on the
# path, the file's blocks), as debugfs locates them.
# Usage: bash bench/chunksize.sh > table.md      (no root needed; ~2 minutes)
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
log() { echo "chunksize.sh: $*" >&2; }
for t in mkfs.ext4 debugfs cc; do command -v "$t" >/dev/null || { log "$t is missing (run scripts/setup)"; exit 1; }; done

scratch=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-chunksize.XXXXXX")
trap 'rm -rf --one-file-system "$scratch"' EXIT
started=$(date -u)

cc -O2 -o "$scratch/chunkstat" "$root/bench/chunkstat.c" -lcrypto -lzstd
log "making the images"
mkdir -p "$scratch/stage/usr/lib"
# Hard links when the scratch folder is on /usr's filesystem (mkfs only reads them).
for d in bin lib/x86_64-linux-gnu; do
  cp -al "/usr/$d" "$scratch/stage/usr/$d" 2>/dev/null || cp -a "/usr/$d" "$scratch/stage/usr/$d"
done
truncate -s 4G "$scratch/full.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d "$scratch/stage" "$scratch/full.img"
rm -rf "$scratch/stage"
cp --sparse=always "$scratch/full.img" "$scratch/later.img"
RANDOM=42
for ((i = 0; i < 1024; i++)); do
  blk=$(((RANDOM << 15 | RANDOM) % (4 * 1024 * 1024 / 4 - 16)))
  head -c 65536 /dev/urandom | dd of="$scratch/later.img" bs=4096 seek="$blk" conv=notrunc status=none
done
files=$(debugfs -R 'stat /usr/bin' "$scratch/full.img" 2>/dev/null | grep -c . || true)
[ "$files" -gt 0 ] || { log "debugfs cannot read the image"; exit 1; }

log "chunking"
"$scratch/chunkstat" 3 "$scratch/full.img" "$scratch/later.img" > "$scratch/stat"

# The 4 KiB blocks a mount and a read of /usr/bin/true touch.
blocks="0 1"
for p in / /usr /usr/bin /usr/bin/true; do
  blocks+=" $(debugfs -R "imap $p" "$scratch/full.img" 2>/dev/null | awk '/located at block/ {sub(",", "", $4); print $4}')"
done
for p in / /usr /usr/bin /usr/bin/true '<8>'; do
  b=$(debugfs -R "blocks $p" "$scratch/full.img" 2>/dev/null)
  # The journal (inode 8): its superblock only.
  [ "$p" = '<8>' ] && b=${b%% *}
  blocks+=" $b"
done
size=$(stat -c %s "$scratch/full.img")

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
cat <<EOF
## chunksize: fixed chunk sizes for the vmbackup repository (\`bash bench/chunksize.sh\`)

Taken \`$started\` (\`date -u\` when the run started), on $(nproc) cores, \`$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\`.

A 4 GiB ext4 image of /usr/bin and /usr/lib/x86_64-linux-gnu, then the same image
with 1024 scattered 64 KiB writes of random data (64 MiB). Sizes in MiB; "stored"
is zstd -3 of each new chunk on its own.

| chunk | full: data chunks | full: stored | later: new chunks | later: new raw | later: stored | index per TiB of unique data | small-file restore reads |
| --- | --- | --- | --- | --- | --- | --- | --- |
EOF
while read -r kib kind data uniq raw z; do
  if [ "$kind" = full ]; then
    f_data=$data f_z=$z
    continue
  fi
  cs=$((kib * 1024))
  n=$(for b in $blocks; do echo $((b * 4096 / cs)); done | sort -u | wc -l)
  echo "| $kib KiB | $f_data | $(mib "$f_z") | $uniq | $(mib "$raw") | $(mib "$z") |" \
    "$(((1 << 40) / cs * 64 / 1048576)) MiB | $n chunks, $(mib $((n * cs))) MiB ($(awk -v a=$((n * cs)) -v s="$size" 'BEGIN {printf "%.2f", a * 100 / s}')% of the disk) |"
done < "$scratch/stat"
