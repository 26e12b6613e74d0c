#!/usr/bin/env bats
# vmpatch inventory: the packages of a real Debian 12 guest (scripts/mkdebian's
# image, built once per machine and cached; here a qcow2 overlay on it in the
# run's pool, defined as a shut-off VM: the cache is never written), read offline
# through libguestfs and checked against the image's own /var/lib/dpkg/status
# (read by virt-cat); the host's packages (the VMM's among them) against
# dpkg-query; the JSON inventory piped into vmpatch scan; a template and a disk
# with no OS (exit 4); an encrypted copy read through qemu-nbd, nothing left
# behind; usage errors and an unknown VM.
# About eight libguestfs launches under TCG and one 0.7 GB encrypted copy; no VM
# is started. The tests run in order (the first keeps the inventory the others
# compare with).

load helpers

setup_file() {
  export DEB=${VMKIT_CACHE:-/var/cache/vmkit}/debian12
  "$TOP/scripts/mkdebian" "$DEB" >&2
  export VM
  VM=$(file_vm_name deb)
  # An overlay on the cached image, the VM's own disk: libguestfs only reads it.
  qemu-img create -q -f qcow2 -F qcow2 -b "$DEB/disk.qcow2" "$VMKIT_STORAGE_DIR/$VM.qcow2"
  "$TOP/vmrun/vmrun" -q create "$VM" --image "$VMKIT_STORAGE_DIR/$VM.qcow2" --memory 512M --network none
  # What the image says is installed, read by libguestfs's own tool (TCG, as the
  # tools run here).
  LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
    virt-cat --format=qcow2 -a "$DEB/disk.qcow2" /var/lib/dpkg/status > "$BATS_FILE_TMPDIR/status"
  [ -s "$BATS_FILE_TMPDIR/status" ]
}

teardown() { common_teardown; }
teardown_file() { common_teardown_file; }

# installed_in STATUS-FILE: "NAME VERSION" of each installed package, sorted, as
# awk reads the paragraphs (an independent reading of dpkg's format).
installed_in() {
  awk 'BEGIN { RS = ""; FS = "\n" }
    { p = v = s = ""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Package: /) p = substr($i, 10)
        else if ($i ~ /^Version: /) v = substr($i, 10)
        else if ($i ~ /^Status: /) s = substr($i, 9)
      }
      n = split(s, w, " ")
      if (n == 3 && w[3] != "not-installed" && w[3] != "config-files") print p, v }' "$1" | sort
}

# field_of PACKAGE FIELD: a field of the package's paragraph in the image's status.
field_of() {
  awk -v p="$1" -v f="$2" 'BEGIN { RS = ""; FS = "\n" }
    { hit = 0; for (i = 1; i <= NF; i++) if ($i == "Package: " p) hit = 1
      if (hit) for (i = 1; i <= NF; i++) if (index($i, f ": ") == 1) print substr($i, length(f) + 3) }' \
    "$BATS_FILE_TMPDIR/status"
}

@test "inventory of a shut-off Debian 12 VM: OS debian 12 and exactly the installed packages of its dpkg status" {
  run_tool 0 vmpatch inventory -q "$VM" -o json
  echo "$output" > "$BATS_FILE_TMPDIR/vm.json"
  local j=$BATS_FILE_TMPDIR/vm.json
  [ "$(jq -r '.format, .version' "$j" | paste -sd' ')" = "vmpatch-inventory 1" ]
  [ "$(jq '.targets | length' "$j")" = 1 ]
  [ "$(jq -r '.targets[0] | [.name, .kind, .os.id, .os.version_id, .os.package_format] | @tsv' "$j")" = \
    "$VM"$'\tvm\tdebian\t12\tdeb' ]
  # Every installed package with its version, and nothing else.
  diff <(installed_in "$BATS_FILE_TMPDIR/status") <(jq -r '.targets[0].packages[] | "\(.name) \(.version)"' "$j" | sort)
  [ "$(jq '.targets[0].packages | length' "$j")" -gt 100 ]
  # libc6 comes from glibc, libssl3 from openssl, at the versions the status says.
  local v
  v=$(field_of libc6 Version)
  [ -n "$v" ]
  [ "$(jq -r '.targets[0].packages[] | select(.name == "libc6") | [.version, .arch, .source, .source_version] | @tsv' "$j")" = \
    "$v"$'\tamd64\tglibc\t'"$v" ]
  v=$(field_of libssl3 Version)
  [ "$(jq -r '.targets[0].packages[] | select(.name == "libssl3") | [.version, .source] | @tsv' "$j")" = "$v"$'\topenssl' ]
  # A package that is its own source: bash.
  [ "$(jq -r '.targets[0].packages[] | select(.name == "bash") | .source' "$j")" = bash ]
  # The inventory reads back: scan accepts it, and says a feed of another
  # ecosystem has nothing to say of it (exit 4, not clean).
  mkdir -p "$BATS_TEST_TMPDIR/feed"
  echo '{"id": "GHSA-1", "affected": [{"package": {"ecosystem": "npm", "name": "x"}, "versions": ["1.0.0"]}]}' \
    > "$BATS_TEST_TMPDIR/feed/GHSA-1.json"
  run_tool 4 vmpatch scan -q --inventory "$j" --feed "$BATS_TEST_TMPDIR/feed"
  [ "$stderr" = "vmpatch: vm '$VM' (debian 12) not scanned: feed $BATS_TEST_TMPDIR/feed has no record for its distribution and release" ]
}

@test "inventory --host: the host's packages with dpkg-query's versions, the VMM's among them" {
  run_tool 0 vmpatch inventory --host -o tsv
  [[ "$stderr" == "vmpatch: "*" packages on 1 target" ]]
  local host os p want got
  host=$(hostname)
  os=$(. /etc/os-release && echo "$ID $VERSION_ID")
  for p in qemu-system-x86 libvirt-daemon libvirt0 libc6; do
    want=$(dpkg-query -W -f '${Version}' "$p")
    got=$(awk -F'\t' -v p="$p" '$4 == p { print $5 }' <<<"$output")
    [ "$got" = "$want" ] || { echo "$p: '$got', dpkg-query says '$want'" >&2; return 1; }
  done
  [ "$(awk -F'\t' '$4 == "qemu-system-x86" { print $1, $2, $3, $7 }' <<<"$output")" = "$host host $os qemu" ]
  # As many rows as dpkg-query has installed (ii) or held (hi) packages.
  [ "${#lines[@]}" -eq "$(dpkg-query -W -f '${db:Status-Abbrev}\n' | grep -cE '^[ih]i')" ]
  # Every row has the eight columns.
  [ -z "$(awk -F'\t' 'NF != 8' <<<"$output")" ]
}

@test "inventory VM --host -o json | scan: the image's openssl named vulnerable exits 6; table rows per package" {
  local sv
  sv=$(jq -r '.targets[0].packages[] | select(.name == "libssl3") | .source_version' "$BATS_FILE_TMPDIR/vm.json")
  [ -n "$sv" ]
  mkdir -p "$BATS_TEST_TMPDIR/feed"
  cat > "$BATS_TEST_TMPDIR/feed/DSA-TEST-1.json" <<J
{"id": "DSA-TEST-1", "aliases": ["CVE-2099-0001"],
 "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "$sv+vmkt1"}]}],
   "ecosystem_specific": {"urgency": "high"}}]}
J
  run --separate-stderr bash -c 'set -o pipefail; "$1" inventory -q "$2" --host -o json |
    "$1" scan -q -o tsv --inventory - --feed "$3"' _ "$TOP/vmpatch/vmpatch" "$VM" "$BATS_TEST_TMPDIR/feed"
  [ "$status" -eq 6 ] || { echo "exit $status: $stderr" >&2; return 1; }
  grep -qx "$VM"$'\tlibssl3\topenssl\t[^\t]*\t'"$sv+vmkt1"$'\tDSA-TEST-1\tCVE-2099-0001\thigh\tno' <<<"$output"
  # The table: a header, then one row per package, the VM's first.
  run_tool 0 vmpatch inventory -q "$VM"
  [[ "${lines[0]}" == "TARGET "*"KIND "*"OS "*"PACKAGE "*"VERSION "*"ARCH "*"SOURCE "*"SOURCE-VERSION" ]]
  [ "$((${#lines[@]} - 1))" -eq "$(jq '.targets[0].packages | length' "$BATS_FILE_TMPDIR/vm.json")" ]
  [[ "${lines[1]}" == "$VM "*" vm "*" debian 12 "* ]]
}

@test "a disk with no operating system exits 4 naming the VM; a template without one too" {
  local vm
  vm=$(vm_name blank)
  qemu-img create -q -f qcow2 "$VMKIT_STORAGE_DIR/$vm.qcow2" 64M
  run_tool 0 vmrun create "$vm" --image "$VMKIT_STORAGE_DIR/$vm.qcow2" --memory 128M --network none
  run_tool 4 vmpatch inventory -q "$vm" -o json
  [ -z "$output" ]
  assert_one_error_line "vmpatch: no operating system found on the disks of VM '$vm'"
  # The suite's tiny template is a busybox guest: no distribution, no package database.
  run_tool 4 vmpatch inventory -q --template tiny
  assert_one_error_line "template 'tiny'"
}

@test "an encrypted copy of the image is read through qemu-nbd: the same packages, no qemu-nbd or scratch folder left" {
  local vm
  vm=$(vm_name enc)
  run_tool 0 vmrun create "$vm" --image "$DEB/disk.qcow2" --copy --encrypt --memory 512M --network none
  [ "$(qemu-img info -U --output=json "$VMKIT_STORAGE_DIR/$vm.qcow2" | jq -r .encrypted)" = true ]
  # The run's scratch folder goes to TMPDIR; libguestfs's appliance cache stays
  # where it was (it follows TMPDIR otherwise, and is kept by design).
  export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-${TMPDIR:-/var/tmp}}
  export TMPDIR=$BATS_TEST_TMPDIR/tmp
  mkdir -p "$TMPDIR"
  run_tool 0 vmpatch inventory -q "$vm" -o json
  diff <(jq -r '.targets[0].packages[] | "\(.name) \(.version)"' "$BATS_FILE_TMPDIR/vm.json") \
    <(jq -r '.targets[0].packages[] | "\(.name) \(.version)"' <<<"$output")
  [ "$(jq -r '.targets[0].os | "\(.id) \(.version_id)"' <<<"$output")" = "debian 12" ]
  [ -z "$(ls -A "$TMPDIR")" ] || { ls -la "$TMPDIR" >&2; return 1; }
  [ -z "$(pgrep -f "qemu-nbd .*$vm.qcow2" || true)" ]
  # Without its key here, the disk is not read, and nothing is left either.
  mkdir -p "$BATS_TEST_TMPDIR/nokeys"
  VMKIT_KEY_DIR=$BATS_TEST_TMPDIR/nokeys run_tool 3 vmpatch inventory -q "$vm"
  assert_one_error_line "cannot read the disk key '$BATS_TEST_TMPDIR/nokeys/"
  # A wrong key: qemu-nbd says why, in the one line; no libguestfs launch.
  local u
  u=$(virsh_q dumpxml "$vm" | xmllint --xpath 'string(//disk/source/encryption/secret/@uuid)' -)
  mkdir -p "$BATS_TEST_TMPDIR/badkeys"
  printf 'not the key' > "$BATS_TEST_TMPDIR/badkeys/$u.key"
  VMKIT_KEY_DIR=$BATS_TEST_TMPDIR/badkeys run_tool 1 vmpatch inventory -q "$vm"
  assert_one_error_line "vmpatch: qemu-nbd cannot open encrypted disk '$VMKIT_STORAGE_DIR/$vm.qcow2': "
  assert_stderr_has "Invalid password"
  [ -z "$(ls -A "$TMPDIR")" ] || { ls -la "$TMPDIR" >&2; return 1; }
  [ -z "$(pgrep -f "qemu-nbd .*$vm.qcow2" || true)" ]
  run_tool 0 vmrun undefine "$vm" --remove-storage
}

@test "usage errors exit 2 and an unknown VM or template exits 3, each in one line, nothing on stdout" {
  run_tool 2 vmpatch inventory
  [ -z "$output" ]
  [ "${stderr_lines[0]}" = "vmpatch: nothing to read: name a VM, --template NAME or --host" ]
  [ "${stderr_lines[1]}" = "Try 'vmpatch inventory --help' for more information." ]
  run_tool 2 vmpatch inventory "$VM" --template "$VM"
  [[ "${stderr_lines[0]}" == "vmpatch: '$VM' is named twice"* ]]
  run_tool 2 vmpatch inventory --host -o yaml
  run_tool 3 vmpatch inventory "$(vm_name nosuch)" --host
  [ -z "$output" ]
  assert_one_error_line "$(vm_name nosuch)"
  run_tool 3 vmpatch inventory --template "$(vm_name nosuch)"
  assert_one_error_line "no such template '$(vm_name nosuch)'"
}
