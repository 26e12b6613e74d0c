#!/usr/bin/env bash
# bench/backup.sh: vmbackup against borg 1.2 and restic 0.14, side by side in one run,
# on the same data:
#   full     a BENCH_SIZE_GB (default 4) GiB disk holding an ext4 filesystem made
#            (mkfs.ext4 -d, no mount) from this machine's /usr/bin and
#            /usr/lib/x86_64-linux-gnu, files taken in name order up to BENCH_DATA_MB
#            (default 1536) MiB: the data of bench/chunksize.sh
#   later    the same disk with BENCH_WRITES (default 1024) writes of 64 KiB of
#            random bytes (AES-CTR of zeros under a fixed key: the same bytes every
#            run) at random 4 KiB-aligned offsets (a fixed seed) within the used
#            area (the extents `qemu-img map` calls data), 64 MiB by default
# The VM's disk is a qcow2 image (vm.qcow2); the file borg and restic read is a raw
# copy of it (disk.raw), made with `qemu-img convert` (untimed), so both hold the same
# guest-visible bytes and the same holes. The writes go into the qcow2 through QEMU
# (`qemu-io -c 'write -s FILE OFF 64k'`, the VM shut off), so that the persistent dirty
# bitmap of vmbackup's last checkpoint records them; disk.raw is then made again from
# the qcow2. The VM is never booted: it is defined with `vmrun create --image` under TCG
# (<domain type='qemu'>) and vmbackup starts it paused for each backup.
#
# Timed, in this order, each after `sync; echo 3 > /proc/sys/vm/drop_caches`:
#   full         borg create, restic backup, vmbackup (zstd 3), vmbackup (zstd 1),
#                vmbackup (zstd 1, 64 KiB chunks: the chunk size's trade-off, beside
#                the default's 256 KiB)
#   incremental  the same four, after the writes
#   restore      of the incremental snapshot: borg extract --sparse, restic restore,
#                vmbackup restore (zstd 3), vmbackup restore (zstd 1), and of 64 KiB chunks
# with:
#   borg 1.2     borg init --encryption repokey (HMAC-SHA-256 ids, AES-CTR + HMAC-SHA-256:
#                faster than repokey-blake2 on a CPU with SHA extensions, which this
#                script checks and says); borg create --chunker-params fixed,4194304
#                -C zstd,3 REPO::NAME disk.raw; borg extract --sparse REPO::later
#   restic 0.14  restic init --repository-version 2 (compression: auto, zstd);
#                restic backup disk.raw; restic restore latest --target DIR
#   vmbackup     vmbackup init --zstd-level 3 REPO (aes-256-gcm, 256 KiB chunks) and
#                vmbackup init REPO (the default since: zstd 1); vmbackup backup REPO VM -o json;
#                vmbackup restore REPO SNAPSHOT --to DIR
# A step's time is the wall time from its start until its command has ended and a
# `sync` after it has returned (so a tool that leaves its writes in the page cache is
# not favoured); peak RSS and CPU time (user + system) come from `/usr/bin/time -v`
# (the tool's own process: QEMU, which serves vmbackup's reads, is not in them). The
# repositories' sizes are `du -sb` after both backups. Each restore is compared with
# disk.raw (untimed), and vmbackup's incremental must be incremental and read no more
# than twice the 256 KiB chunks the writes touch (it reads exactly those when the bitmap
# works): the check that writes made through QEMU while the VM is shut off are in the
# bitmap. Measured once beside them, not in the targets: `virsh start --paused` and
# `virsh destroy` of the VM (what every vmbackup run on a shut-off VM pays libvirt and
# QEMU), and opening a repository (`vmbackup list`: scrypt at the default cost).
#
# Usage: bash bench/backup.sh > table.md     (as root; `make` and scripts/setup first)
# Prints markdown on stdout, progress on stderr. Environment:
#   BENCH_SIZE_GB   the disk's size in GiB (default 4)
#   BENCH_DATA_MB   at most this many MiB of files in its filesystem (default 1536)
#   BENCH_WRITES    the number of 64 KiB writes between the backups (default 1024)
#   BENCH_TMP       where the scratch directory goes (default /var/tmp; needs about
#                   5 times BENCH_DATA_MB free, 8 GiB by default; ~3 minutes)
# A small variant to try it: BENCH_SIZE_GB=1 BENCH_DATA_MB=300 BENCH_WRITES=256.
# It runs a copy of vmbackup taken at its start (others rebuild the tree meanwhile).
# Its VM is named bench-<pid>-backup; it (with its checkpoints), its logs, the
# repositories, borg's and restic's caches, the images and the scratch directory are
# removed when the script ends, whether it succeeds or not, also on Ctrl-C.
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)

log() { echo "backup.sh: $*" >&2; }
die() { log "$*"; exit 1; }
virsh_q() { virsh -q -c qemu:///system "$@"; }

[ "$(id -u)" = 0 ] || die "run me as root (drop_caches, libvirt)"
for t in borg restic jq virsh qemu-img qemu-io mkfs.ext4 openssl cpio cmp; do
  command -v "$t" >/dev/null || die "$t is missing (run scripts/setup)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian's time package)"
[ -x "$root/vmbackup/vmbackup" ] && [ -x "$root/vmrun/vmrun" ] || die "run make first"
virsh_q version >/dev/null 2>&1 || die "libvirtd does not answer on qemu:///system"
size_gb=${BENCH_SIZE_GB:-4} data_mb=${BENCH_DATA_MB:-1536} writes=${BENCH_WRITES:-1024}
for v in size_gb data_mb writes; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v: '${!v}' is not a positive whole number"
done
[ $((data_mb * 10)) -lt $((size_gb * 1024 * 9)) ] || die "BENCH_DATA_MB does not fit in BENCH_SIZE_GB"

scratch=$(mktemp -d "${BENCH_TMP:-/var/tmp}/bench-backup.XXXXXX")
chmod 755 "$scratch"  # QEMU runs as libvirt-qemu and must reach the disk
vm="bench-$$-backup"
remove_vm() {
  virsh_q destroy "$vm" >/dev/null 2>&1 || true
  virsh_q undefine "$vm" --checkpoints-metadata >/dev/null 2>&1 ||
    virsh_q undefine "$vm" >/dev/null 2>&1 || true
  rm -f /var/log/libvirt/qemu/"$vm"*.log
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  remove_vm
  source "$root/bench/lib.sh"
  bench_unpool "$scratch"
  rm -rf --one-file-system "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started=$(date -u)
machine=$(source "$root/bench/lib.sh"; bench_machine)

mkdir -p -m 755 "$scratch/bin" "$scratch/tmp" "$scratch/data" "$scratch/disk" "$scratch/time" "$scratch/out"
cp "$root/vmbackup/vmbackup" "$root/vmrun/vmrun" "$scratch/bin/"
built=$(git -C "$root" log -1 --format='%h, %cI' 2>/dev/null || echo unknown)
changed=$(git -C "$root" status --porcelain -- vmbackup common 2>/dev/null | grep -c . || true)
binage=$(date -u -r "$root/vmbackup/vmbackup" +%Y-%m-%dT%H:%M:%SZ)
vmb=$scratch/bin/vmbackup

export VMKIT_VIRT_TYPE=qemu LIBVIRT_DEFAULT_URI=qemu:///system
export TMPDIR=$scratch/tmp  # vmbackup's socket folder
export VMKIT_PASSPHRASE=bench-passphrase BORG_PASSPHRASE=bench-passphrase RESTIC_PASSWORD=bench-passphrase
export BORG_BASE_DIR=$scratch/borg-home RESTIC_CACHE_DIR=$scratch/restic-cache
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no
borgrepo=$scratch/repo-borg
export RESTIC_REPOSITORY=$scratch/repo-restic
vrepo3=$scratch/repo-vmbackup-z3 vrepo1=$scratch/repo-vmbackup-z1 vrepo64=$scratch/repo-vmbackup-z1-64k
qcow=$scratch/disk/vm.qcow2 raw=$scratch/data/disk.raw

# --- the data ---------------------------------------------------------------------
log "staging at most $data_mb MiB of /usr/bin and /usr/lib/x86_64-linux-gnu"
# Files (and symlinks) in name order until the cap (a file with several names counted
# once: mkfs.ext4 -d keeps hard links); hard links into the stage when the scratch
# folder is on /usr's file system (mkfs only reads them), else copies.
find /usr/bin /usr/lib/x86_64-linux-gnu -xdev \( -type f -o -type l \) -printf '%s\t%i\t%p\n' |
  LC_ALL=C sort -t $'\t' -k3 |
  awk -F'\t' -v cap=$((data_mb << 20)) 'full { next }
    { if (!($2 in seen)) s += $1; seen[$2] = 1; if (s > cap) full = 1; else print substr($3, 2) }' \
  > "$scratch/files"
mkdir "$scratch/stage"
(cd / && cpio -pdml --quiet "$scratch/stage" < "$scratch/files") 2>/dev/null ||
  (cd / && cpio -pdm --quiet "$scratch/stage" < "$scratch/files")
staged=$(du -sb "$scratch/stage" | cut -f1)
log "$(wc -l < "$scratch/files") files, $((staged >> 20)) MiB; making the ${size_gb} GiB filesystem"
truncate -s "${size_gb}G" "$scratch/full.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d "$scratch/stage" "$scratch/full.img"
rm -rf --one-file-system "$scratch/stage"
qemu-img convert -f raw -O qcow2 -o compat=1.1 "$scratch/full.img" "$qcow"
rm -f "$scratch/full.img"
qemu-img convert -f qcow2 -O raw "$qcow" "$raw"
chmod 644 "$qcow"

# The writes between the backups: WRITES files of 64 KiB of AES-CTR output (fixed key
# and IV) and WRITES offsets, 4 KiB-aligned, uniform over the image's data extents.
openssl enc -aes-256-ctr -nosalt -K "$(printf '%064d' 0)" -iv "$(printf '%032d' 42)" \
  -in <(head -c $((writes << 16)) /dev/zero) -out "$scratch/writes.bin"
mkdir "$scratch/w"
split -b 65536 -a 5 -d "$scratch/writes.bin" "$scratch/w/w"
rm "$scratch/writes.bin"
qemu-img map -f qcow2 --output=json "$qcow" |
  jq -r '.[] | select(.data and (.zero | not)) | "\(.start) \(.length)"' > "$scratch/extents"
used=$(awk '{ s += $2 } END { print s }' "$scratch/extents")
vsize=$(qemu-img info -f qcow2 --output=json "$qcow" | jq '."virtual-size"')
awk -v n="$writes" -v vsize="$vsize" -v dir="$scratch/w" '
  { st[NR] = $1; len[NR] = $2; tot += $2 }
  END {
    srand(42)
    for (i = 0; i < n; i++) {
      p = int(rand() * (tot / 4096)) * 4096
      for (k = 1; p >= len[k]; k++) p -= len[k]
      off = st[k] + p
      if (off + 65536 > vsize) off = vsize - 65536
      printf "write -q -s %s/w%05d %d 64k\n", dir, i, off
    }
  }' "$scratch/extents" > "$scratch/writes.qemu-io"
log "data: $((used >> 20)) MiB allocated in the ${size_gb} GiB image ($(wc -l < "$scratch/extents") extents)"

# --- the VM and the repositories ----------------------------------------------------
"$scratch/bin/vmrun" create "$vm" --image "$qcow" --memory 256 --network none -q
"$vmb" init -q --zstd-level 3 "$vrepo3"
"$vmb" init -q --zstd-level 1 "$vrepo1"
"$vmb" init -q --zstd-level 1 --chunk-size 64K "$vrepo64"
borg init --encryption repokey "$borgrepo" > "$scratch/out/borg-init" 2>&1 ||
  { cat "$scratch/out/borg-init" >&2; die "borg init failed"; }
restic init -q --repository-version 2 >/dev/null
grep -qw sha_ni /proc/cpuinfo && shani=yes || shani=no
# The floor under each vmbackup run on a shut-off VM, measured once (not in the
# targets): libvirt starting the VM paused and destroying it again, and opening a
# repository (scrypt; `vmbackup list` does little else).
t0=$(date +%s%N)
virsh_q start --paused "$vm" >/dev/null
t1=$(date +%s%N)
virsh_q destroy "$vm" >/dev/null
t2=$(date +%s%N)
"$vmb" list "$vrepo3" >/dev/null
t3=$(date +%s%N)
floor_start=$(((t1 - t0) / 1000000)) floor_destroy=$(((t2 - t1) / 1000000)) floor_open=$(((t3 - t2) / 1000000))
log "floor: start paused $floor_start ms, destroy $floor_destroy ms, repository open $floor_open ms"

# --- the timed steps ---------------------------------------------------------------
# timed STEP DIR CMD...: runs CMD in DIR after dropping the page cache; its wall time
# (to the end of a sync after it), peak RSS and CPU time go to results.tsv, its
# stdout to out/STEP.
results=$scratch/results.tsv
: > "$results"
timed() {
  local step=$1 dir=$2 t0 t1
  shift 2
  sync
  echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s%N)
  if ! (cd "$dir" && exec /usr/bin/time -v -o "$scratch/time/$step" "$@" \
        > "$scratch/out/$step" 2> "$scratch/out/$step.err"); then
    cat "$scratch/out/$step" "$scratch/out/$step.err" >&2
    die "$step: '$*' failed"
  fi
  sync
  t1=$(date +%s%N)
  awk -F': ' -v s="$step" -v w=$(((t1 - t0) / 1000000)) '
    /Maximum resident set size/ { rss = $2 } /User time/ { u = $2 } /System time/ { sy = $2 }
    END { printf "%s\t%.3f\t%d\t%.2f\n", s, w / 1000, rss, u + sy }' "$scratch/time/$step" >> "$results"
  log "$step: $(tail -1 "$results" | cut -f2) s"
}
# field STEP COLUMN: 2 wall s, 3 peak RSS KiB, 4 CPU s.
field() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$results"; }
vjson() { jq -r ".[0].$2" "$scratch/out/$1"; }

log "full backups"
timed borg-full "$scratch/data" borg create --chunker-params fixed,4194304 -C zstd,3 "$borgrepo::full" disk.raw
timed restic-full "$scratch/data" restic backup -q disk.raw
# vmbackup backs up a running VM (the issue's case): started (paused: it is never
# booted) before, untimed, so that its start and stop are not in the times.
virsh_q start --paused "$vm" >/dev/null
timed vmb3-full "$scratch" "$vmb" backup "$vrepo3" "$vm" -o json
timed vmb1-full "$scratch" "$vmb" backup "$vrepo1" "$vm" -o json
timed vmb64-full "$scratch" "$vmb" backup "$vrepo64" "$vm" -o json
for z in 3 1 64; do
  [ "$(vjson vmb$z-full kind)" = full ] || die "vmbackup (zstd $z): the first backup is not full"
done
[ "$(virsh_q domstate "$vm")" = "paused" ] || die "vmbackup left $vm $(virsh_q domstate "$vm")"
virsh_q destroy "$vm" >/dev/null

log "writing $writes x 64 KiB into the shut-off VM's qcow2 through qemu-io"
mapfile -t wcmds < "$scratch/writes.qemu-io"
args=()
for c in "${wcmds[@]}"; do args+=(-c "$c"); done
qemu-io -f qcow2 "${args[@]}" "$qcow" >&2
log "the qcow2's bitmaps: $(qemu-img info -f qcow2 --output=json "$qcow" |
  jq -c '[."format-specific".data.bitmaps[]? | {name, flags, granularity}]')"
rm -f "$raw"
qemu-img convert -f qcow2 -O raw "$qcow" "$raw"

log "incremental backups"
timed borg-incr "$scratch/data" borg create --chunker-params fixed,4194304 -C zstd,3 "$borgrepo::later" disk.raw
timed restic-incr "$scratch/data" restic backup -q disk.raw
virsh_q start --paused "$vm" >/dev/null
timed vmb3-incr "$scratch" "$vmb" backup "$vrepo3" "$vm" -o json
timed vmb1-incr "$scratch" "$vmb" backup "$vrepo1" "$vm" -o json
timed vmb64-incr "$scratch" "$vmb" backup "$vrepo64" "$vm" -o json
virsh_q destroy "$vm" >/dev/null
# The 256 KiB chunks (vmbackup init's default) that the writes touch: what an
# incremental through the bitmap (64 KiB granularity) reads, give or take.
touched_of() {
  awk -v cs="$1" '{ for (c = int($5 / cs); c <= int(($5 + 65535) / cs); c++) t[c] = 1 } END { print length(t) }' \
    "$scratch/writes.qemu-io"
}
touched=$(touched_of 262144) touched64=$(touched_of 65536)
for z in 3 1 64; do
  kind=$(vjson vmb$z-incr kind) rd=$(vjson vmb$z-incr bytes_read)
  [ "$kind" = incremental ] || die "vmbackup ($z): the second backup is $kind: $(vjson vmb$z-incr why)"
  if [ $z = 64 ]; then max=$((2 * touched64 << 16)); else max=$((2 * touched << 18)); fi
  [ "$rd" -le "$max" ] || die "vmbackup ($z): the incremental read $rd bytes, more than twice the chunks the writes touch"
done
declare -A repo
repo[borg]=$(du -sb "$borgrepo" | cut -f1)
repo[restic]=$(du -sb "$RESTIC_REPOSITORY" | cut -f1)
repo[vmb3]=$(du -sb "$vrepo3" | cut -f1)
repo[vmb1]=$(du -sb "$vrepo1" | cut -f1)
repo[vmb64]=$(du -sb "$vrepo64" | cut -f1)

log "restores of the incremental snapshot"
# check_restore STEP FILE: the restored disk must be disk.raw's bytes; then it goes.
check_restore() {
  [ -f "$2" ] || die "$1: no restored disk at $2"
  cmp -s "$2" "$raw" || die "$1: the restored disk differs from disk.raw"
  rm -rf --one-file-system "$scratch/restore"
}
mkdir "$scratch/restore"
timed borg-restore "$scratch/restore" borg extract --sparse "$borgrepo::later"
check_restore borg-restore "$scratch/restore/disk.raw"
mkdir "$scratch/restore"
timed restic-restore "$scratch" restic restore -q latest --target "$scratch/restore"
# (restic keeps the path as given, relative or not, depending on its version)
check_restore restic-restore "$(find "$scratch/restore" -name disk.raw -type f | head -1)"
for z in 3 1 64; do
  mkdir "$scratch/restore"
  r=$scratch/repo-vmbackup-z$z
  [ $z = 64 ] && r=$vrepo64
  timed vmb$z-restore "$scratch" "$vmb" restore -q "$r" \
    "$(vjson vmb$z-incr snapshot)" --to "$scratch/restore"
  check_restore vmb$z-restore "$scratch/restore/$vm.vda.raw"
done

# --- the report --------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
met() { awk "BEGIN { exit !($1) }" && echo "**met**" || echo "**not met**"; }
w() { field "$1" 2; }
rss() { awk -v k="$(field "$1" 3)" 'BEGIN { printf "%.0f", k / 1024 }'; }
cpu() { field "$1" 4; }
declare -A label=([borg]="borg $(borg --version | cut -d' ' -f2)"
                  [restic]="restic $(restic version | cut -d' ' -f2)"
                  [vmb3]="vmbackup (zstd 3)" [vmb1]="vmbackup (zstd 1)"
                  [vmb64]="vmbackup (zstd 1, 64 KiB chunks)")
tools=(borg restic vmb3 vmb1 vmb64)

cat <<EOF
## backup: vmbackup against borg and restic (\`bash bench/backup.sh\`)

Taken \`$started\` (\`date -u\` when the run started).

$machine

vmbackup: a copy of the binary built at $binage (HEAD $built; uncommitted changes
under vmbackup/ and common/: $changed files). borg: \`--encryption repokey\` (this CPU
has SHA extensions: $shani). restic: repository version 2, compression auto.

Data: a ${size_gb} GiB disk, ext4 made with \`mkfs.ext4 -d\` from $(wc -l < "$scratch/files") files
of /usr/bin and /usr/lib/x86_64-linux-gnu ($(mib "$staged") MiB of files;
$(mib "$used") MiB allocated in the image); then $writes writes of 64 KiB of random bytes
($(mib $((writes << 16))) MiB) at random 4 KiB-aligned offsets within the allocated extents, through
\`qemu-io\` into the shut-off VM's qcow2. Each step after \`sync; echo 3 >
/proc/sys/vm/drop_caches\`; times are wall seconds up to the end of a \`sync\` after
the command; RSS and CPU (user + system) are the tool's own process (\`/usr/bin/time
-v\`; QEMU, which serves vmbackup's reads, is not in them).

| tool | full (s) | incremental (s) | restore (s) | repository after both (MiB) | peak RSS full / incr / restore (MiB) | CPU full / incr / restore (s) |
| --- | ---: | ---: | ---: | ---: | --- | --- |
EOF
for t in "${tools[@]}"; do
  echo "| ${label[$t]} | $(w $t-full) | $(w $t-incr) | $(w $t-restore) | $(mib "${repo[$t]}") |" \
    "$(rss $t-full) / $(rss $t-incr) / $(rss $t-restore) | $(cpu $t-full) / $(cpu $t-incr) / $(cpu $t-restore) |"
done
echo
echo "vmbackup's own reports (\`-o json\`; READ: bytes_read, NEW: bytes_new, STORED: bytes_stored, seconds: its own count, after the repository is opened):"
echo
echo "| backup | kind | read (MiB) | new (MiB) | stored (MiB) | seconds |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for z in 3 1 64; do
  for k in full incr; do
    s=vmb$z-$k
    n="zstd $z"
    [ $z = 64 ] && n="zstd 1, 64 KiB chunks"
    echo "| $n, $k | $(vjson $s kind) | $(mib "$(vjson $s bytes_read)") | $(mib "$(vjson $s bytes_new)") |" \
      "$(mib "$(vjson $s bytes_stored)") | $(vjson $s seconds) |"
  done
done
cat <<EOF

| ratio | zstd 3 | zstd 1 | zstd 1, 64 KiB chunks | target (vmbackup's default: zstd 1, 256 KiB chunks) |
| --- | ---: | ---: | ---: | --- |
| borg full / vmbackup full | $(ratio "$(w borg-full)" "$(w vmb3-full)") | $(ratio "$(w borg-full)" "$(w vmb1-full)") | $(ratio "$(w borg-full)" "$(w vmb64-full)") | >= 2: $(met "$(w borg-full) >= 2 * $(w vmb1-full)") |
| restic full / vmbackup full | $(ratio "$(w restic-full)" "$(w vmb3-full)") | $(ratio "$(w restic-full)" "$(w vmb1-full)") | $(ratio "$(w restic-full)" "$(w vmb64-full)") | >= 4: $(met "$(w restic-full) >= 4 * $(w vmb1-full)") |
| borg incremental / vmbackup incremental | $(ratio "$(w borg-incr)" "$(w vmb3-incr)") | $(ratio "$(w borg-incr)" "$(w vmb1-incr)") | $(ratio "$(w borg-incr)" "$(w vmb64-incr)") | >= 10: $(met "$(w borg-incr) >= 10 * $(w vmb1-incr)") |
| restic incremental / vmbackup incremental | $(ratio "$(w restic-incr)" "$(w vmb3-incr)") | $(ratio "$(w restic-incr)" "$(w vmb1-incr)") | $(ratio "$(w restic-incr)" "$(w vmb64-incr)") | - |
| vmbackup incremental / its full | $(ratio "$(w vmb3-incr)" "$(w vmb3-full)") | $(ratio "$(w vmb1-incr)" "$(w vmb1-full)") | $(ratio "$(w vmb64-incr)" "$(w vmb64-full)") | < 0.10: $(met "$(w vmb1-incr) < 0.10 * $(w vmb1-full)") |
| vmbackup repository / borg's | $(ratio "${repo[vmb3]}" "${repo[borg]}") | $(ratio "${repo[vmb1]}" "${repo[borg]}") | $(ratio "${repo[vmb64]}" "${repo[borg]}") | <= 1.15: $(met "${repo[vmb1]} <= 1.15 * ${repo[borg]}") |
| vmbackup repository / restic's | $(ratio "${repo[vmb3]}" "${repo[restic]}") | $(ratio "${repo[vmb1]}" "${repo[restic]}") | $(ratio "${repo[vmb64]}" "${repo[restic]}") | - |
| borg extract / vmbackup restore | $(ratio "$(w borg-restore)" "$(w vmb3-restore)") | $(ratio "$(w borg-restore)" "$(w vmb1-restore)") | $(ratio "$(w borg-restore)" "$(w vmb64-restore)") | >= 3: $(met "$(w borg-restore) >= 3 * $(w vmb1-restore)") |
| restic restore / vmbackup restore | $(ratio "$(w restic-restore)" "$(w vmb3-restore)") | $(ratio "$(w restic-restore)" "$(w vmb1-restore)") | $(ratio "$(w restic-restore)" "$(w vmb64-restore)") | - |

Every restore was compared with the source disk (\`cmp\`): identical. The incremental
backups were incremental (the dirty bitmap of the last checkpoint, written to by
\`qemu-io\` while the VM was shut off): they read $(mib "$(vjson vmb3-incr bytes_read)") MiB
(zstd 3) and $(mib "$(vjson vmb1-incr bytes_read)") MiB (zstd 1) for $(mib $((writes << 16))) MiB written, which
touched $touched chunks of 256 KiB ($(mib $((touched << 18))) MiB); of 64 KiB chunks,
$(mib "$(vjson vmb64-incr bytes_read)") MiB read for $touched64 chunks touched ($(mib $((touched64 << 16))) MiB).
Measured once beside them (not timed steps): \`virsh start --paused\` of the VM took
$floor_start ms and \`virsh destroy\` $floor_destroy ms (what every vmbackup run on a shut-off VM
pays libvirt and QEMU), and opening a vmbackup repository (\`vmbackup list\`: scrypt at the
default cost) $floor_open ms.
The run took $(awk -v s=$(( $(date +%s) - $(date -d "$started" +%s) )) 'BEGIN { printf "%.1f", s / 60 }') min; load average at its end $(cut -d' ' -f1-3 /proc/loadavg).
EOF
