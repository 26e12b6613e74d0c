#!/usr/bin/env bats
# vmpatch scan end to end: an OSV feed (a directory and a zip) and an inventory
# made here, the findings, the exit codes (0 clean, 6 vulnerable, 3 not found, 1
# for a feed or inventory that does not read), the filters and the output shapes.
# vmkit-test: no-vm
# Only vmpatch runs: no libvirt, no VMs, no libguestfs (t/setup_suite.bash then
# sets up nothing when every file of the run is of this kind).

load helpers

# Nothing here makes VMs: the shared teardown, which asks libvirt, is replaced.
teardown() { :; }
teardown_file() { :; }

# A feed: openssl in bookworm (fixed, high, with a CVE alias), the kernel (no fix
# yet), bash (fixed below what is installed), an npm record (not read).
make_feed() {
  local d=$1
  mkdir -p "$d/sub"
  cat > "$d/DSA-5532-1.json" <<'J'
{"id": "DSA-5532-1", "aliases": ["CVE-2023-5678"],
 "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u3"}]}],
   "ecosystem_specific": {"urgency": "high"}}]}
J
  cat > "$d/sub/DEBIAN-CVE-2024-0001.json" <<'J'
{"id": "DEBIAN-CVE-2024-0001", "aliases": ["CVE-2024-0001"],
 "affected": [{"package": {"ecosystem": "Debian:12", "name": "linux"},
   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}
J
  cat > "$d/DSA-9-1.json" <<'J'
{"id": "DSA-9-1", "affected": [{"package": {"ecosystem": "Debian:12", "name": "bash"},
   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "5.2.15-1"}]}],
   "ecosystem_specific": {"urgency": "medium"}}]}
J
  cat > "$d/GHSA-1.json" <<'J'
{"id": "GHSA-xxxx-yyyy-zzzz", "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.0.0"]}]}
J
}

# An inventory: web1 (bookworm, vulnerable), clean1 (bookworm, all fixed), old1
# (bullseye: the Debian:12 records are not for it).
make_inventory() {
  cat > "$1" <<'J'
{"format": "vmpatch-inventory", "version": 1, "targets": [
 {"name": "web1", "kind": "vm", "os": {"id": "debian", "version_id": "12", "package_format": "deb"},
  "packages": [
   {"name": "libssl3", "version": "3.0.11-1~deb12u2", "arch": "amd64", "source": "openssl", "source_version": "3.0.11-1~deb12u2"},
   {"name": "linux-image-amd64", "version": "6.1.76-1", "arch": "amd64", "source": "linux-signed-amd64", "source_version": "6.1.76+1"},
   {"name": "bash", "version": "5.2.15-2+b2", "arch": "amd64", "source": "bash", "source_version": "5.2.15-2"}]},
 {"name": "clean1", "kind": "template", "os": {"id": "debian", "version_id": "12", "package_format": "deb"},
  "packages": [
   {"name": "libssl3", "version": "3.0.11-1~deb12u3+b1", "arch": "amd64", "source": "openssl", "source_version": "3.0.11-1~deb12u3"}]},
 {"name": "old1", "kind": "host", "os": {"id": "debian", "version_id": "11", "package_format": "deb"},
  "packages": [
   {"name": "libssl1.1", "version": "1.1.1w-0+deb11u1", "source": "openssl"}]}]}
J
}

setup() {
  FEED=$BATS_TEST_TMPDIR/feed
  INV=$BATS_TEST_TMPDIR/inventory.json
  make_feed "$FEED"
  make_inventory "$INV"
}

@test "scan: each vulnerable binary package of web1, by its source package, exit 6" {
  run_tool 6 vmpatch scan -o tsv --feed "$FEED" --inventory "$INV"
  [ "${#lines[@]}" -eq 2 ]
  [ "${lines[0]}" = $'web1\tlibssl3\topenssl\t3.0.11-1~deb12u2\t3.0.11-1~deb12u3\tDSA-5532-1\tCVE-2023-5678\thigh\tno' ]
  # The signed kernel's binaries, under the linux source Debian's records name.
  [ "${lines[1]}" = $'web1\tlinux-image-amd64\tlinux\t6.1.76-1\tnone\tDEBIAN-CVE-2024-0001\tCVE-2024-0001\tunknown\tyes' ]
  [ "${stderr_lines[0]}" = "vmpatch: host 'old1' (debian 11) not scanned: feed $FEED has no record for its distribution and release" ]
  [ "${stderr_lines[1]}" = "vmpatch: 2 vulnerabilities found" ]
  # The table has a header and the same rows.
  run_tool 6 vmpatch scan -q --feed "$FEED" --inventory "$INV" web1 clean1
  [ -z "$stderr" ]
  [[ "${lines[0]}" == "TARGET "*"PACKAGE "*"FIXED "*"ADVISORY "*"SEVERITY "*"REBOOT" ]]
  [ "${#lines[@]}" -eq 3 ]
}

@test "scan: a clean target exits 0 with no rows; a release the feed does not cover is said, exit 4" {
  run_tool 0 vmpatch scan -q -o tsv --feed "$FEED" --inventory "$INV" clean1
  [ -z "$output" ]
  run_tool 4 vmpatch scan -q -o tsv --feed "$FEED" --inventory "$INV" old1 clean1
  [ -z "$output" ]
  [ "$stderr" = "vmpatch: host 'old1' (debian 11) not scanned: feed $FEED has no record for its distribution and release" ]
  run_tool 0 vmpatch scan -q -o json --feed "$FEED" --inventory "$INV" clean1
  [ "$(jq -c . <<<"$output")" = "[]" ]
}

@test "scan: the feed as a zip, as OSV publishes it, gives the same rows and leaves no scratch folder" {
  (cd "$FEED" && zip -qr "$BATS_TEST_TMPDIR/all.zip" .)
  export TMPDIR=$BATS_TEST_TMPDIR/tmp
  mkdir -p "$TMPDIR"
  run_tool 6 vmpatch scan -q -o tsv --feed "$FEED" --inventory "$INV"
  local from_dir=$output
  run_tool 6 vmpatch scan -q -o tsv --feed "$BATS_TEST_TMPDIR/all.zip" --inventory "$INV"
  [ "$output" = "$from_dir" ]
  [ -z "$(ls -A "$TMPDIR")" ]
  # A name unzip would take for an option or a wildcard is still just a name.
  cp "$BATS_TEST_TMPDIR/all.zip" "$BATS_TEST_TMPDIR/-[a]ll.zip"
  cd "$BATS_TEST_TMPDIR"
  run_tool 6 vmpatch scan -q -o tsv --feed "-[a]ll.zip" --inventory "$INV"
  [ "$output" = "$from_dir" ]
  # A member that unpacks past any record (a zip bomb) stops unzip, in one line.
  mkdir bomb && head -c 80M /dev/zero > bomb/x.json && (cd bomb && zip -q ../bomb.zip x.json) && rm -r bomb
  run_tool 1 vmpatch scan -q --feed bomb.zip --inventory "$INV"
  [ "${#stderr_lines[@]}" -eq 1 ]
  [ "$stderr" = "vmpatch: feed bomb.zip: unzip stopped: a member unpacks past 64 MiB, more than any OSV record" ]
  # Not a zip at all.
  echo nonsense > notzip.zip
  run_tool 1 vmpatch scan -q --feed notzip.zip --inventory "$INV"
  [ "$stderr" = "vmpatch: feed notzip.zip: not a zip file (neither a folder nor a .json file)" ]
  [ -z "$(ls -A "$TMPDIR")" ]
}

@test "scan --min-severity and --fixed-only filter the rows, and the exit code follows" {
  run_tool 6 vmpatch scan -q -o tsv --feed "$FEED" --inventory "$INV" --min-severity high
  [ "${#lines[@]}" -eq 1 ]
  [[ "${lines[0]}" == $'web1\tlibssl3\t'* ]]
  run_tool 6 vmpatch scan -q -o tsv --feed "$FEED" --inventory "$INV" --fixed-only
  [ "${#lines[@]}" -eq 1 ]
  [[ "${lines[0]}" == *$'\tDSA-5532-1\t'* ]]
  run_tool 0 vmpatch scan -q -o tsv --feed "$FEED" --inventory "$INV" --min-severity critical web1 clean1
  [ -z "$output" ]
  run_tool 2 vmpatch scan --feed "$FEED" --inventory "$INV" --min-severity urgent
  [[ "${stderr_lines[0]}" == "vmpatch: invalid --min-severity 'urgent'"* ]]
}

@test "scan -o json: one object per finding, null for no fix, aliases as a list; the inventory from stdin" {
  run --separate-stderr bash -c '"$1" scan -q -o json --feed "$2" --inventory - < "$3"' _ "$TOP/vmpatch/vmpatch" "$FEED" "$INV"
  [ "$status" -eq 6 ]
  [ "$(jq length <<<"$output")" -eq 2 ]
  [ "$(jq -r '.[0] | [.target, .package, .source, .installed, .source_version, .fixed, .id, .severity, .ecosystem] | @tsv' <<<"$output")" = \
    $'web1\tlibssl3\topenssl\t3.0.11-1~deb12u2\t3.0.11-1~deb12u2\t3.0.11-1~deb12u3\tDSA-5532-1\thigh\tDebian:12' ]
  [ "$(jq -c '.[0].aliases' <<<"$output")" = '["CVE-2023-5678"]' ]
  [ "$(jq -c '.[1] | [.fixed, .reboot, .source_version]' <<<"$output")" = '[null,true,"6.1.76-1"]' ]
  [ "$(jq -c '.[0].reboot' <<<"$output")" = false ]
}

@test "scan: a malformed record refuses the whole feed in one line naming its file, exit 1" {
  echo '{"id": "DSA-2-1", "affected": [{"ranges": []}]}' > "$FEED/sub/DSA-2-1.json"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  [ -z "$output" ]
  assert_one_error_line "vmpatch: feed $FEED/sub/DSA-2-1.json: affected[0] has no package"
  echo '{"id": "DSA-2-1", ' > "$FEED/sub/DSA-2-1.json"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "vmpatch: feed $FEED/sub/DSA-2-1.json: not JSON"
  echo '{"aliases": []}' > "$FEED/sub/DSA-2-1.json"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "DSA-2-1.json: the record has no 'id'"
  # A forged line in an alias, a link, a folder too deep: refused, not passed over.
  printf '{"id": "DSA-2-1", "aliases": ["CVE-1\\nweb1\\tfake"]}\n' > "$FEED/sub/DSA-2-1.json"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "vmpatch: feed $FEED/sub/DSA-2-1.json: aliases[0] is not a non-empty string without control characters"
  rm "$FEED/sub/DSA-2-1.json"
  ln -s "$FEED/DSA-9-1.json" "$FEED/sub/link.json"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "vmpatch: feed $FEED/sub/link.json: a symbolic link (a feed holds its records itself)"
  rm "$FEED/sub/link.json"
  mkdir -p "$FEED/1/2/3/4/5/6/7/8/9"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "vmpatch: feed $FEED/1/2/3/4/5/6/7/8/9: folders nested deeper than 8"
  rm -r "$FEED/1"
  echo '{"aliases": []}' > "$FEED/sub/DSA-2-1.json"
  # In a zip, the zip and the member are named.
  (cd "$FEED" && zip -qr "$BATS_TEST_TMPDIR/bad.zip" .)
  run_tool 1 vmpatch scan --feed "$BATS_TEST_TMPDIR/bad.zip" --inventory "$INV"
  assert_one_error_line "vmpatch: feed $BATS_TEST_TMPDIR/bad.zip/sub/DSA-2-1.json: the record has no 'id'"
  # An empty feed is refused too; a missing one is not found.
  mkdir "$BATS_TEST_TMPDIR/empty"
  run_tool 1 vmpatch scan --feed "$BATS_TEST_TMPDIR/empty" --inventory "$INV"
  assert_one_error_line "no OSV records"
  run_tool 3 vmpatch scan --feed "$BATS_TEST_TMPDIR/nothing" --inventory "$INV"
  assert_one_error_line "vmpatch: feed $BATS_TEST_TMPDIR/nothing: No such file or directory"
}

@test "scan: a bad inventory is refused in one line, exit 1; a missing one or an unknown target exit 3" {
  echo '{"format": "vmpatch-inventory", "version": 1, "targets": [{"name": "a"}]}' > "$INV"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  [ -z "$output" ]
  assert_one_error_line "vmpatch: inventory $INV: targets[0] has no 'kind'"
  echo '{"format": "vmpatch-inventory", "version": 2, "targets": []}' > "$INV"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "inventory version 2 is not supported"
  echo 'not json' > "$INV"
  run_tool 1 vmpatch scan --feed "$FEED" --inventory "$INV"
  assert_one_error_line "vmpatch: inventory $INV: not JSON"
  run_tool 3 vmpatch scan --feed "$FEED" --inventory "$BATS_TEST_TMPDIR/none.json"
  assert_one_error_line "vmpatch: inventory $BATS_TEST_TMPDIR/none.json: No such file or directory"
  make_inventory "$INV"
  run_tool 3 vmpatch scan --feed "$FEED" --inventory "$INV" web1 nosuch
  assert_one_error_line "vmpatch: no target 'nosuch' in inventory $INV"
}

@test "scan: --feed and --inventory are required" {
  run_tool 2 vmpatch scan --inventory "$INV"
  [[ "${stderr_lines[0]}" == "vmpatch: --feed PATH is required" ]]
  run_tool 2 vmpatch scan --feed "$FEED"
  [[ "${stderr_lines[0]}" == "vmpatch: --inventory FILE is required"* ]]
}
