#!/usr/bin/env bats
# Every tool's help, version and usage errors, and its man page against its --help
# (the podman/util-linux/libguestfs habit: documented options and real options
# agree). Only the binaries run: no libvirt, no VMs, no libguestfs.
# vmkit-test: no-vm

load helpers

# Nothing here makes VMs or files. The shared teardown removes VMs by the suite's
# name prefix, which is empty when this file runs on its own and would then match
# every VM on the host: replace it.
teardown() { :; }
teardown_file() { :; }

# help_of TOOL [VERB...]: the tool's --help (or a verb's), on stdout; fails unless it
# exits 0 with nothing on stderr.
help_of() {
  local tool=$1
  shift
  local out err rc
  err=$(mktemp)
  out=$("$TOP/$tool/$tool" "$@" --help 2>"$err") && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] || [ -s "$err" ]; then
    echo "$tool $* --help: exit $rc, stderr: $(cat "$err")" >&2
    rm -f "$err"
    return 1
  fi
  rm -f "$err"
  printf '%s\n' "$out"
}

# The verbs listed in the "Commands:" section of a help text on stdin.
commands_in() { awk '/^Commands:$/ { on = 1; next } on && /^$/ { exit } on { print $1 }'; }

# find_verbs TOOL: every verb path of the tool, one a line ("stop", "template",
# "template create" ...), found by reading its help and, one level down, the help
# of verbs that have verbs of their own.
find_verbs() {
  local tool=$1 v sub top
  top=$(help_of "$tool") || return 1
  for v in $(commands_in <<<"$top"); do
    echo "$v"
    for sub in $(help_of "$tool" "$v" | commands_in); do
      echo "$v $sub"
    done
  done
}

# Found once per file (each help run costs a dynamic link of libvirt and
# libguestfs); a tool whose help cannot be read leaves no list, and verbs fails.
setup_file() {
  local tool
  for tool in $TOOLS; do
    find_verbs "$tool" >"$BATS_FILE_TMPDIR/verbs.$tool" || rm -f "$BATS_FILE_TMPDIR/verbs.$tool"
  done
}

verbs() {
  [ -f "$BATS_FILE_TMPDIR/verbs.$1" ] || { echo "cannot list the verbs of $1" >&2; return 1; }
  cat "$BATS_FILE_TMPDIR/verbs.$1"
}

# Tools with verbs need one; a tool that does one job (p2v-agent may) has none,
# and the command tests below pass over it.
has_verbs() { [ -s "$BATS_FILE_TMPDIR/verbs.$1" ]; }

# A usage error: nothing on stdout, one line "TOOL: ..." and then the pointer to
# the help of the command that was given (CMD: "vmrun" or "vmrun template").
assert_usage_error() {
  local tool=$1 cmd=$2
  if [ -n "$output" ] || [ "${#stderr_lines[@]}" -ne 2 ] ||
    [[ "${stderr_lines[0]}" != "$tool: "* ]] ||
    [[ "${stderr_lines[1]}" != "Try '$cmd --help'"* ]]; then
    echo "expected no stdout and two stderr lines ('$tool: ...', \"Try '$cmd --help' ...\")" >&2
    echo "--- stdout"$'\n'"$output"$'\n'"--- stderr"$'\n'"$stderr" >&2
    return 1
  fi
}

@test "each tool has been built" {
  local tool
  for tool in $TOOLS; do
    [ -x "$TOP/$tool/$tool" ] || { echo "$TOP/$tool/$tool: not built (run make)" >&2; return 1; }
  done
}

@test "--help prints the usage on stdout, exits 0 and says nothing on stderr" {
  local tool
  for tool in $TOOLS; do
    run_tool 0 "$tool" --help
    [ -z "$stderr" ]
    [[ "${lines[0]}" == "Usage: $tool "* ]]
    run_tool 0 "$tool" -h
    [[ "${lines[0]}" == "Usage: $tool "* ]]
  done
}

@test "--version prints 'TOOL (vmkit) VERSION' and exits 0" {
  local tool version
  version=$(sed -n 's/^VERSION[[:space:]]*:*=[[:space:]]*//p' "$TOP/Makefile")
  [ -n "$version" ]
  for tool in $TOOLS; do
    run_tool 0 "$tool" --version
    [ "$output" = "$tool (vmkit) $version" ]
    [ -z "$stderr" ]
    run_tool 0 "$tool" -V
    [ "$output" = "$tool (vmkit) $version" ]
  done
}

@test "an unknown option exits 2 with one error line and a pointer to --help" {
  local tool
  for tool in $TOOLS; do
    run_tool 2 "$tool" --no-such-option
    assert_usage_error "$tool" "$tool"
    [[ "${stderr_lines[0]}" == *"--no-such-option"* ]]
  done
}

@test "an unknown option of a verb points at the verb's --help" {
  local tool v vl
  for tool in $TOOLS; do
    vl=$(verbs "$tool")
    while IFS= read -r v; do
      [ -n "$v" ] || continue
      run_tool 2 "$tool" $v --no-such-option
      assert_usage_error "$tool" "$tool $v"
    done <<<"$vl"
  done
}

@test "a missing command exits 2" {
  local tool v vl
  for tool in $TOOLS; do
    has_verbs "$tool" || continue
    run_tool 2 "$tool"
    assert_usage_error "$tool" "$tool"
    # Verbs that have verbs of their own need one too.
    vl=$(verbs "$tool")
    while IFS= read -r v; do
      [ -n "$v" ] || continue
      [[ "$v" == *" "* ]] || continue
      run_tool 2 "$tool" "${v%% *}"
      assert_usage_error "$tool" "$tool ${v%% *}"
    done <<<"$vl"
  done
}

@test "an unknown command exits 2" {
  local tool v vl
  for tool in $TOOLS; do
    has_verbs "$tool" || continue
    run_tool 2 "$tool" no-such-command
    assert_usage_error "$tool" "$tool"
    [[ "${stderr_lines[0]}" == *"no-such-command"* ]]
    vl=$(verbs "$tool")
    while IFS= read -r v; do
      [ -n "$v" ] || continue
      [[ "$v" == *" "* ]] || continue
      run_tool 2 "$tool" "${v%% *}" no-such-command
      assert_usage_error "$tool" "$tool ${v%% *}"
    done <<<"$vl"
  done
}

@test "every verb's --help prints its usage and exits 0" {
  local tool v vl
  for tool in $TOOLS; do
    vl=$(verbs "$tool")
    while IFS= read -r v; do
      [ -n "$v" ] || continue
      run_tool 0 "$tool" $v --help
      [ -z "$stderr" ] || { echo "$tool $v --help wrote on stderr: $stderr" >&2; return 1; }
      [[ "${lines[0]}" == "Usage: $tool $v "* ]] ||
        { echo "$tool $v --help: first line is '${lines[0]}'" >&2; return 1; }
    done <<<"$vl"
  done
}

@test "each man page documents exactly the options of --help" {
  local tool v vl page from_help from_man missing extra bad=0
  for tool in $TOOLS; do
    page=$TOP/man/$tool.1
    [ -f "$page" ] || { echo "$tool has no man page man/$tool.1" >&2; bad=1; continue; }
    vl=$(verbs "$tool")
    # Every --long option named anywhere in the tool's and its verbs' help.
    from_help=$( { help_of "$tool"; while IFS= read -r v; do [ -z "$v" ] || help_of "$tool" $v; done <<<"$vl"; } |
      grep -o -- '--[A-Za-z0-9][A-Za-z0-9-]*' | sort -u)
    # Every long option in the mdoc source: "Fl -name".
    from_man=$(grep -o 'Fl -[A-Za-z0-9][A-Za-z0-9-]*' "$page" | sed 's/^Fl /-/' | sort -u)
    missing=$(comm -23 <(echo "$from_help") <(echo "$from_man"))
    extra=$(comm -13 <(echo "$from_help") <(echo "$from_man"))
    if [ -n "$missing" ]; then
      echo "in '$tool --help' but not in man/$tool.1:" $missing >&2
      bad=1
    fi
    if [ -n "$extra" ]; then
      echo "in man/$tool.1 but in no '$tool ... --help':" $extra >&2
      bad=1
    fi
    # The short ones too: popt shows "-c, --connect"; mdoc writes "Fl c".
    from_help=$( { help_of "$tool"; while IFS= read -r v; do [ -z "$v" ] || help_of "$tool" $v; done <<<"$vl"; } |
      grep -oE -- '(^|[[:space:]])-[A-Za-z0-9],' | tr -d ' ,' | sort -u)
    from_man=$(grep -oE 'Fl [A-Za-z0-9]( |$)' "$page" | sed 's/^Fl /-/; s/ $//' | sort -u)
    missing=$(comm -23 <(echo "$from_help") <(echo "$from_man"))
    extra=$(comm -13 <(echo "$from_help") <(echo "$from_man"))
    if [ -n "$missing" ]; then
      echo "short options in '$tool --help' but not in man/$tool.1:" $missing >&2
      bad=1
    fi
    if [ -n "$extra" ]; then
      echo "short options in man/$tool.1 but in no '$tool ... --help':" $extra >&2
      bad=1
    fi
  done
  [ "$bad" -eq 0 ]
}

@test "each man page names every verb" {
  local tool v vl page bad=0
  for tool in $TOOLS; do
    page=$TOP/man/$tool.1
    [ -f "$page" ] || { echo "$tool has no man page man/$tool.1" >&2; bad=1; continue; }
    vl=$(verbs "$tool")
    while IFS= read -r v; do
      [ -n "$v" ] || continue
      # As a subsection heading (.Ss stop) or a command (.Cm template create).
      grep -Eq "^\.Ss ${v}\$|Cm ${v}( |\$)" "$page" ||
        { echo "man/$tool.1 does not name the verb '$v'" >&2; bad=1; }
    done <<<"$vl"
  done
  [ "$bad" -eq 0 ]
}

@test "the man pages are valid mdoc" {
  command -v mandoc >/dev/null || skip "mandoc is not installed (Debian package mandoc)"
  local page out
  for page in "$TOP"/man/*.[1-8]; do
    # Warnings and errors only: style notes such as "referenced manual not found"
    # depend on which pages this machine has installed.
    out=$(mandoc -T lint -W warning "$page" 2>&1) ||
      { echo "$out" >&2; return 1; }
  done
}

@test "each SYNOPSIS line gives only options its verb's --help knows" {
  local tool page bad=0 verb flag
  for tool in $TOOLS; do
    page=$TOP/man/$tool.1
    # One "verb<TAB>flag" line per flag of each synopsis block (.Nm ... up to the next .Nm).
    while IFS=$'\t' read -r verb flag; do
      [ -n "$verb" ] || continue
      # "a | b" alternatives (pause | resume | destroy) each have the flag.
      local v alts
      IFS='|' read -ra alts <<<"$verb"
      for v in "${alts[@]}"; do
        [ -n "$v" ] || continue
        case "$flag" in
          -?) help_of "$tool" $v | grep -qE -- "(^|[[:space:]])$flag," ;;
          *) help_of "$tool" $v | grep -q -- "$flag\\b" ;;
        esac || { echo "man/$tool.1 SYNOPSIS: '$tool $v' has no option $flag" >&2; bad=1; }
      done
    done < <(awk '
      /^\.Sh SYNOPSIS/ { on = 1; next }
      /^\.Sh / { on = 0 }
      !on { next }
      /^\.Nm/ { verb = "" ; next }
      /^\.Cm / { v = $0; sub(/^\.Cm /, "", v); gsub(/ \| /, "|", v); verb = (verb == "" ? v : verb " " v); next }
      verb != "" {
        for (i = 1; i < NF; i++) if (($i == "Fl" || $i == ".Fl") && $(i + 1) != "-") {
          f = $(i + 1); if (f == "h" || f == "V") continue
          print verb "\t-" f
        }
      }' "$page")
  done
  [ "$bad" -eq 0 ]
}
