#!/usr/bin/env bash
# nixfleet auto-upgrade: the host side of docs/rollout.md (sections 1-5). One script, both modes.
#
#   auto-upgrade run               timer: lease, hooks check, git pull, validate, safe activation, commit-back
#   auto-upgrade push STAGE        push session 1 (exec'd by nix/push-bootstrap.sh): lease, file install,
#                                  hooks, validate, settings check, then the detached activator; stdout is
#                                  one JSON line {"rollout","validatedPath","action","needsReboot","diff"}
#   auto-upgrade activate TOKEN    the detached activator (systemd-run): test, health gate, confirmation,
#                                  profile + boot entry, golden root, commit-back
#   auto-upgrade confirm TOKEN     push session 2: confirms, waits for the activator, prints status.json
#   auto-upgrade status [DIR]      prints status.json; needs no settings (DIR or $AUTO_UPGRADE_STATE_DIR)
#
# Safe activation: `switch-to-configuration test` -> health gate -> [push: confirmation] -> profile ->
# `switch-to-configuration boot`. Any failure before the profile moved re-activates the system that ran
# before (its own switch-to-configuration test); profile and boot entry stay as they were.
# The system that ran before is recorded ($STATE_DIR/previous, a GC root) before `test` and removed when the
# activation ends either way: a run that finds it (the activator was SIGKILLed, the power went) settles
# that activation first, so a half-activated system is never taken for "the system that ran before".
# Validate also reports what the upgrade changes, package by package (`nix store diff-closures` of the
# running and the validated system): bounded, in the deploy's JSON line ("diff"), status.json
# (closureDiff) and, in full, the journal.
# Only stock NixOS tools (bash coreutils util-linux systemd nix git gnugrep gnused findutils gzip): no jq
# (JSON is written by json_str below), no nh. Stdout is machine output only; stderr gets `=== … ===` lines
# and short progress; full tool output goes to the journal (`logger -t auto-upgrade`).
#
# Bounds: every tool runs under `timeout` with its phase's AUTO_UPGRADE_*_TIMEOUT; the health gate as a whole
# under HEALTH_TIMEOUT; the confirmation wait under CONFIRM_TIMEOUT; a push waits at most LEASE_WAIT for
# another rollout's lease. The lease's expiry is renewed at each phase to that phase's bound + 60 s.
# Push/confirm print a progress line every 15 s while waiting: a dead SSH session (EPIPE) ends them.
# A push is handed its rollout token by the bootstrap (NIXFLEET_ROLLOUT); the activator runs from a
# root-owned copy of this script in $STATE_DIR, never from the user's checkout.
# AUTO_UPGRADE_VALIDATE=false changes nothing: activation needs a built store path, so the build always
# comes first (safe activation needs the path; there is no "switch without validating" any more).
set -euo pipefail
shopt -s inherit_errexit extglob
umask 022

readonly SELF=${BASH_SOURCE[0]}
readonly UNIT_RE='^[A-Za-z0-9:_.\\][-A-Za-z0-9:_.\\]*(@[-A-Za-z0-9:_.\\]*)?\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)$'
readonly USER_RE='^[A-Za-z0-9_][-A-Za-z0-9_.]*[$]?$'
readonly HOST_RE='^[A-Za-z0-9_][-A-Za-z0-9_.]*$'
readonly TOKEN_RE='^[0-9a-f]{16}(-r[0-9]{1,6})?$'
readonly REL_RE='^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$'
readonly NIX_FLAGS=(--extra-experimental-features 'nix-command flakes')
# Longest tool output line echoed to stderr: the real command provider hangs on a line over 64 KiB.
readonly ECHO_CUT=400
# The closure diff people see: at most this many lines and bytes, then "… N more". Small on purpose: the
# deploy's stdout line is kept in Pulumi's state (and in the confirm step's triggers). Bound of the diff.
readonly DIFF_LINES=40 DIFF_BYTES=2048 DIFF_LINE_CUT=200 DIFF_TIMEOUT=120

# ----------------------------------------------------------------------------------------------- output

# Under systemd (the timer, the activator) stderr is the journal already (JOURNAL_STREAM), so each line is
# written once; a push session's stderr goes to the deployer, so the journal gets its own copy.
to_journal() {
  if [[ -n ${JOURNAL_STREAM:-} ]]; then cat >&2; else logger -t auto-upgrade; fi
}

log() {
  printf '%s\n' "${1:0:2000}" >&2 || true
  [[ -n ${JOURNAL_STREAM:-} ]] || logger -t auto-upgrade -- "${1:0:8000}" 2>/dev/null || true
}

# JSON string literal of $1: quotes, backslashes and every control character escaped; other bytes
# (UTF-8 included) pass through. Bash strings cannot hold NUL, so there is none to escape.
json_str() {
  local s=$1 i c r
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  s=${s//$'\b'/\\b}
  s=${s//$'\f'/\\f}
  if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
    for ((i = 1; i < 32; i++)); do
      # shellcheck disable=SC2059 # the format is built from a number: it is \xNN, nothing else
      printf -v c "\\x$(printf %02x "$i")"
      printf -v r '\\u%04x' "$i"
      s=${s//"$c"/"$r"}
    done
  fi
  printf '"%s"' "$s"
}

json_or_null() { if [[ -n $1 ]]; then json_str "$1"; else printf null; fi; }

# Sends a tool's captured output to the journal and, cut short, its tail to stderr.
report_output() {
  local what=$1 file=$2 echo=${3:-false}
  [[ -s $file ]] || return 0
  sed "s/^/$what: /" -- "$file" | to_journal 2>/dev/null || true
  if [[ $echo == true ]]; then tail -n 15 -- "$file" | cut -c "1-$ECHO_CUT" >&2 || true; fi
}

# The last non-empty lines of a tool's output on one line, for messages.
summary_of() {
  local file=$1 line out=""
  while IFS= read -r line; do
    [[ -n ${line//[[:space:]]/} ]] && out+="${out:+ | }${line:0:$ECHO_CUT}"
  done < <(tail -n 3 -- "$file" 2>/dev/null)
  printf '%s' "$out"
}

# ----------------------------------------------------------------------------------------------- settings

ERRORS=()
bad() { ERRORS+=("$1"); }

check_bool() { [[ $2 == true || $2 == false ]] || bad "$1 must be 'true' or 'false', got '${2:0:100}'"; }
check_int() { [[ $2 =~ ^[1-9][0-9]{0,6}$ ]] || bad "$1 must be a whole number of seconds (1-9999999), got '${2:0:100}'"; }
check_abs() { [[ $2 == /* && ! $2 =~ (^|/)\.\.(/|$) ]] || bad "$1 must be an absolute path without '..', got '${2:0:200}'"; }

split_units() {
  local name=$1 value=$2 unit
  local -n into=$3
  into=()
  IFS=' ' read -r -d '' -a into < <(printf '%s' "$value") || true
  for unit in "${into[@]}"; do
    [[ ${#unit} -le 255 && $unit =~ $UNIT_RE ]] ||
      bad "$name: '${unit:0:100}' is not a systemd unit name (e.g. chezmoi-pre-update.service: letters, digits, ':', '-', '_', '.', optional @instance, a unit type suffix)"
  done
}

listed() {
  local needle=$1 x
  shift
  for x; do [[ $x == "$needle" ]] && return 0; done
  return 1
}

load_settings() {
  CFG=${AUTO_UPGRADE_CONFIG_PATH:-}
  HOST=${AUTO_UPGRADE_FLAKE_HOST:-}
  OWNER=${AUTO_UPGRADE_USER:-}
  REMOTE=${AUTO_UPGRADE_REMOTE:-origin}
  BRANCH=${AUTO_UPGRADE_BRANCH:-main}
  VALIDATE=${AUTO_UPGRADE_VALIDATE:-true}
  COMMIT=${AUTO_UPGRADE_COMMIT:-false}
  STATE_DIR=${AUTO_UPGRADE_STATE_DIR:-/var/lib/auto-upgrade}
  HEALTH_CHECK=${AUTO_UPGRADE_HEALTH_CHECK:-true}
  HEALTH_TIMEOUT=${AUTO_UPGRADE_HEALTH_TIMEOUT:-120}
  CONFIRM_TIMEOUT=${AUTO_UPGRADE_CONFIRM_TIMEOUT:-30}
  LEASE_WAIT=${AUTO_UPGRADE_LEASE_WAIT:-120}
  HOOKS_TIMEOUT=${AUTO_UPGRADE_HOOKS_TIMEOUT:-900}
  VALIDATE_TIMEOUT=${AUTO_UPGRADE_VALIDATE_TIMEOUT:-3600}
  SWITCH_TIMEOUT=${AUTO_UPGRADE_SWITCH_TIMEOUT:-600}
  COMMIT_TIMEOUT=${AUTO_UPGRADE_COMMIT_TIMEOUT:-300}
  ROOT=${AUTO_UPGRADE_ROOT:-}

  if [[ -z $CFG ]]; then bad "AUTO_UPGRADE_CONFIG_PATH is required (the absolute path of the nix-config checkout)"; else check_abs AUTO_UPGRADE_CONFIG_PATH "$CFG"; fi
  # It becomes a flake reference: '#' or '?' would select another attribute or flake.
  [[ $CFG != *[#?]* ]] || bad "AUTO_UPGRADE_CONFIG_PATH must not contain '#' or '?', got '${CFG:0:200}'"
  [[ $CFG != *[[:cntrl:]]* ]] || bad "AUTO_UPGRADE_CONFIG_PATH must not contain control characters"
  [[ $HOST =~ $HOST_RE ]] || bad "AUTO_UPGRADE_FLAKE_HOST must name nixosConfigurations.<name> (letters, digits, '-', '_', '.'), got '${HOST:0:100}'"
  [[ -z $OWNER || $OWNER =~ $USER_RE ]] || bad "AUTO_UPGRADE_USER must be a user name (letters, digits, '_', '-', '.') or empty, got '${OWNER:0:100}'"
  [[ -n $REMOTE && -n $BRANCH && $REMOTE != -* && $BRANCH != -* ]] || bad "AUTO_UPGRADE_REMOTE and AUTO_UPGRADE_BRANCH must be non-empty and not start with '-'"
  check_bool AUTO_UPGRADE_VALIDATE "$VALIDATE"
  check_bool AUTO_UPGRADE_COMMIT "$COMMIT"
  check_bool AUTO_UPGRADE_HEALTH_CHECK "$HEALTH_CHECK"
  check_abs AUTO_UPGRADE_STATE_DIR "$STATE_DIR"
  [[ -z $ROOT ]] || check_abs AUTO_UPGRADE_ROOT "$ROOT"
  local n
  for n in HEALTH_TIMEOUT CONFIRM_TIMEOUT LEASE_WAIT HOOKS_TIMEOUT VALIDATE_TIMEOUT SWITCH_TIMEOUT COMMIT_TIMEOUT; do
    check_int "AUTO_UPGRADE_$n" "${!n}"
  done
  split_units AUTO_UPGRADE_HOOKS "${AUTO_UPGRADE_HOOKS:-}" HOOKS
  split_units AUTO_UPGRADE_REQUIRED_HOOKS "${AUTO_UPGRADE_REQUIRED_HOOKS:-}" REQUIRED_HOOKS
  split_units AUTO_UPGRADE_HEALTH_UNITS "${AUTO_UPGRADE_HEALTH_UNITS:-}" HEALTH_UNITS
  local u
  for u in "${REQUIRED_HOOKS[@]}"; do
    listed "$u" "${HOOKS[@]}" || bad "AUTO_UPGRADE_REQUIRED_HOOKS: '$u' is not in AUTO_UPGRADE_HOOKS (required hooks must be a subset)"
  done
  if ((${#ERRORS[@]})); then
    local e
    for e in "${ERRORS[@]}"; do log "auto-upgrade: invalid settings: $e"; done
    exit 2
  fi
  CURRENT=$ROOT/run/current-system
  BOOTED=$ROOT/run/booted-system
  PROFILE=$ROOT/nix/var/nix/profiles/system
  STATUS_FILE=$STATE_DIR/status.json
  # The last push rollout's record alone: `confirm` reads it, so a timer run that starts the moment the
  # activator released the lease (and rewrites status.json) cannot hide the push's result.
  PUSH_FILE=$STATE_DIR/push.json
  LEASE_FILE=$STATE_DIR/lease
  VALIDATED=$STATE_DIR/validated
  GOLDEN=$STATE_DIR/golden
  PREVIOUS=$STATE_DIR/previous
  DIFF_FILE=$STATE_DIR/closure-diff
  mkdir -p -- "$STATE_DIR"
  chmod 0755 -- "$STATE_DIR"
  OUT=$(mktemp -- "$STATE_DIR/.output.XXXXXX")
}

# ----------------------------------------------------------------------------------------------- status.json

MODE="" ROLLOUT="" STEP="" PHASE="" RESULT="" NEEDS_REBOOT="" MESSAGE=""
WARNINGS=()

warn() {
  WARNINGS+=("${1:0:1000}")
  log "=== WARNING: $1 ==="
}

link_target() { readlink -e -- "$1" 2>/dev/null || true; }

# The closure diff that belongs to `validated` (computed by validate, removed with it): a JSON string, or
# null when there is none.
closure_diff_json() { if [[ -f $DIFF_FILE ]]; then json_str "$(<"$DIFF_FILE")"; else printf null; fi; }

write_status() {
  RESULT=$1 MESSAGE=${2:0:4000}
  local json w ws="" reboot=null file tmp
  [[ -z $NEEDS_REBOOT ]] || reboot=$NEEDS_REBOOT
  # At most 10 (each ≤ 1000 characters): confirm prints this record as one line, and the real provider
  # hangs on a line over 64 KiB.
  for w in "${WARNINGS[@]:0:10}"; do ws+="${ws:+,}$(json_str "$w")"; done
  json=$(
    printf '{"host":%s,"mode":%s,"rollout":%s,"lastRun":%s,"step":%s,"phase":%s,"result":%s,"message":%s,' \
      "$(json_str "$HOST")" "$(json_or_null "$MODE")" "$(json_or_null "$ROLLOUT")" "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" \
      "$(json_str "$STEP")" "$(json_str "$PHASE")" "$(json_str "$RESULT")" "$(json_str "$MESSAGE")"
    printf '"validatedPath":%s,"runningSystem":%s,"profileSystem":%s,"bootedSystem":%s,"goldenPath":%s,"needsReboot":%s,"closureDiff":%s,"warnings":[%s]}' \
      "$(json_or_null "$(link_target "$VALIDATED")")" "$(json_or_null "$(link_target "$CURRENT")")" \
      "$(json_or_null "$(link_target "$PROFILE")")" "$(json_or_null "$(link_target "$BOOTED")")" \
      "$(json_or_null "$(link_target "$GOLDEN")")" "$reboot" "$(closure_diff_json)" "$ws"
  )
  local files=("$STATUS_FILE")
  [[ $MODE != push ]] || files+=("$PUSH_FILE")
  for file in "${files[@]}"; do
    tmp=$(mktemp -- "$file.XXXXXX")
    printf '%s\n' "$json" >"$tmp"
    chmod 0644 -- "$tmp"
    mv -f -- "$tmp" "$file"
  done
}

# A field of our own status.json (string fields we wrote: an escaped value never contains `":"`). Bytes, not
# characters (LC_ALL=C): a tool's invalid UTF-8 in a message must not make the pattern miss.
status_field() {
  LC_ALL=C sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" -- "${2:-$STATUS_FILE}" 2>/dev/null || true
}

# The message of our own status.json, still JSON-escaped (enough for a log line).
status_message() { LC_ALL=C sed -n 's/.*"message":"\(\([^"\\]\|\\.\)*\)".*/\1/p' -- "$STATUS_FILE" 2>/dev/null | cut -c "1-$ECHO_CUT"; }

enter() {
  PHASE=$1
  log "=== $2 ==="
  write_status running "$2"
  lease_renew
}

# A failure before anything was activated: nothing changed on the host.
fail() {
  log "=== $PHASE FAILED: $1 ==="
  write_status failed "$PHASE FAILED: $1"
  FINAL=true
  exit 1
}

# ----------------------------------------------------------------------------------------------- lease

# Lease file: `owner=<push:T|timer:PID> pid=<pid> expires=<epoch>`, read and written under `flock lock`.
LEASE_OWNER="" FINAL=false

with_lock() {
  local rc=0
  exec 8>>"$STATE_DIR/lock"
  flock -w 30 8 || { log "auto-upgrade: $STATE_DIR/lock stayed locked for 30 s"; return 1; }
  "$@" || rc=$?
  exec 8>&-
  return "$rc"
}

lease_field() { LC_ALL=C sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" -- "$LEASE_FILE" 2>/dev/null || true; }

lease_live() {
  local pid expires
  [[ -s $LEASE_FILE ]] || return 1
  pid=$(lease_field pid) expires=$(lease_field expires)
  [[ $pid =~ ^[0-9]+$ && $expires =~ ^[0-9]+$ ]] || return 1
  ((expires > $(date +%s))) && pid_alive "$pid"
}

# A zombie is dead too (its parent has not reaped it yet).
pid_alive() {
  local st
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [[ -n $st && $st != Z ]]
}

write_lease() {
  printf 'owner=%s pid=%s expires=%s\n' "$1" "$2" "$(($(date +%s) + $3))" >"$LEASE_FILE.new"
  mv -f -- "$LEASE_FILE.new" "$LEASE_FILE"
}

# A lease that is not live is stale: its "running" status (if any) is rewritten as failed.
reclaim_stale() {
  local pid
  pid=$(lease_field pid)
  pid=${pid:-unknown}
  if [[ $(status_field result) == running ]]; then
    local saved_phase=$PHASE saved_step=$STEP saved_mode=$MODE saved_rollout=$ROLLOUT
    PHASE=$(status_field phase) STEP=$(status_field step) MODE=$(status_field mode) ROLLOUT=$(status_field rollout)
    log "=== previous run (pid $pid) died during $PHASE: lease reclaimed ==="
    write_status failed "previous run (pid $pid) died during $PHASE"
    PHASE=$saved_phase STEP=$saved_step MODE=$saved_mode ROLLOUT=$saved_rollout
  fi
  rm -f -- "$LEASE_FILE"
}

# Takes the lease for owner $1 unless a live one is held (return 1).
try_lease() {
  if lease_live; then return 1; fi
  reclaim_stale
  write_lease "$1" "$$" "$2"
  LEASE_OWNER=$1
}

# The activator takes over its own push's lease (its pid becomes the holder).
takeover_lease() {
  [[ $(lease_field owner) == "$1" ]] || return 1
  write_lease "$1" "$$" "$2"
  LEASE_OWNER=$1
}

lease_renew_locked() { [[ $(lease_field owner) == "$LEASE_OWNER" && $(lease_field pid) == "$$" ]] && write_lease "$LEASE_OWNER" "$$" "$LEASE_TTL"; }
lease_release_locked() { if [[ $(lease_field owner) == "$LEASE_OWNER" && $(lease_field pid) == "$$" ]]; then rm -f -- "$LEASE_FILE"; fi; }

# Heartbeat: each phase renews the lease for its own bound plus a margin.
LEASE_TTL=120
lease_renew() { [[ -z $LEASE_OWNER ]] || with_lock lease_renew_locked || true; }
lease_release() {
  [[ -z $LEASE_OWNER ]] || with_lock lease_release_locked || true
  LEASE_OWNER=""
}

# ----------------------------------------------------------------------------------------------- tools

CHILD="" TICKER="" STAGE="" IN_FLIGHT=false PREV="" REMOTE_REACHED=true

# Runs a tool bounded by $1 seconds, output captured in $OUT (never on our stdout). While it runs, push and
# confirm write a progress line every 15 s: if the SSH session is gone that write fails (EPIPE) and the
# ticker stops this process, which then releases the lease.
run_tool() { run_tool_to "$OUT" "$@"; }

# The same, with the tool's stdout in file $1 and only its stderr in $OUT (for output that is data).
run_tool_to() {
  local dest=$1 bound=$2 rc=0
  shift 2
  : >"$OUT"
  if [[ $dest == "$OUT" ]]; then
    timeout -k 10 "$bound" "$@" </dev/null >"$OUT" 2>&1 8>&- &
  else
    timeout -k 10 "$bound" "$@" </dev/null >"$dest" 2>"$OUT" 8>&- &
  fi
  CHILD=$!
  start_ticker
  wait "$CHILD" || rc=$?
  stop_ticker
  CHILD=""
  ((rc != 124)) || printf '%s\n' "(timed out after $bound s)" >>"$OUT"
  return "$rc"
}

start_ticker() {
  [[ $STEP == push || $STEP == confirm ]] || return 0
  local what=$PHASE main=$$ t0=$SECONDS
  (
    trap '' PIPE
    # sleep must not hold our stderr: an SSH session ends only when every holder closed it.
    while sleep 15 >/dev/null 2>&1; do
      printf 'auto-upgrade: %s running for %s s\n' "$what" "$((SECONDS - t0))" >&2 || kill -TERM "$main"
    done
  ) &
  TICKER=$!
}

stop_ticker() {
  [[ -z $TICKER ]] || { kill "$TICKER" 2>/dev/null || true; wait "$TICKER" 2>/dev/null || true; }
  TICKER=""
}

# A heartbeat while polling (push follows the activator, confirm waits for it): EPIPE ends the process.
progress() { printf 'auto-upgrade: %s\n' "$1" >&2; }

resolve_owner() {
  [[ -d $CFG ]] || fail "$CFG (AUTO_UPGRADE_CONFIG_PATH) is not a directory"
  # A stock NixOS system has no git (the timer's unit brings its own; a push session has the system's PATH).
  command -v git >/dev/null ||
    fail "git is not on this host's PATH ($PATH): nixfleet adds the files it writes to the checkout with git (a flake sees tracked files only). Add it to the host's configuration once (environment.systemPackages = [ pkgs.git ]; in hosts/$HOST/configuration.nix), rebuild the host (nixos-rebuild switch), then run pulumi up again. Nothing was changed"
  [[ -n $OWNER ]] || OWNER=$(stat -c %U -- "$CFG")
  id -u -- "$OWNER" >/dev/null || fail "user $OWNER (owner of $CFG) does not exist"
  OWNER_HOME=$(home_of "$OWNER")
  ME=$(id -un)
  if [[ $OWNER == "$ME" ]]; then
    GIT=(git -C "$CFG")
  else
    GIT=(runuser -u "$OWNER" -- env HOME="$OWNER_HOME" git -C "$CFG")
  fi
}

# A command as the checkout's owner: what is written into the checkout is written by its owner.
as_owner() { if [[ $OWNER == "$ME" ]]; then "$@"; else runuser -u "$OWNER" -- "$@"; fi; }

# git as the checkout's owner: root never writes into a user's checkout, and no "dubious ownership".
# The owner's home, for git's config and ssh keys. getent is not on the service's PATH on NixOS (glibc.bin
# is not in its runtime): fall back to /etc/passwd, where NixOS writes its users.
home_of() {
  local line
  if command -v getent >/dev/null; then
    line=$(getent passwd -- "$1") || line=""
  else
    line=$(grep -F -- "$1:" /etc/passwd | grep -m 1 -E "^${1//[.$]/\\&}:") || line=""
  fi
  line=$(cut -d: -f6 <<<"$line")
  printf '%s' "${line:-/}"
}

GIT=()
git_owner() { "${GIT[@]}" "$@"; }

# ----------------------------------------------------------------------------------------------- phases

check_hooks_ran() {
  enter hooks "Checking pre-update hooks"
  local h
  for h in "${HOOKS[@]}"; do
    if listed "$h" "${REQUIRED_HOOKS[@]}" && ! systemctl cat -- "$h" >/dev/null 2>&1; then
      fail "pre-update hook $h: unit not found and it is required (AUTO_UPGRADE_REQUIRED_HOOKS)"
    fi
    ! systemctl is-failed --quiet -- "$h" || fail "pre-update hook $h failed"
  done
}

start_hooks() {
  enter hooks "Running pre-update hooks"
  local h end=$((SECONDS + HOOKS_TIMEOUT)) left
  for h in "${HOOKS[@]}"; do
    if ! systemctl cat -- "$h" >/dev/null 2>&1; then
      listed "$h" "${REQUIRED_HOOKS[@]}" && fail "pre-update hook $h: unit not found and it is required (AUTO_UPGRADE_REQUIRED_HOOKS)"
      warn "pre-update hook $h: unit not found, skipped"
      continue
    fi
    left=$((end - SECONDS))
    ((left > 0)) || fail "pre-update hooks took longer than AUTO_UPGRADE_HOOKS_TIMEOUT=$HOOKS_TIMEOUT s"
    if ! run_tool "$left" systemctl start -- "$h"; then
      report_output "$h" "$OUT" true
      fail "pre-update hook $h failed: $(summary_of "$OUT")"
    fi
  done
}

# Timer: fetch, then fast-forward. A checkout ahead of the remote (unpushed commit-back commits) stays as
# it is; a diverged one is rebased only on a commit-back host (its own commits), never reset.
pull() {
  # The contract's phase for getting the config is "files" (push: installing them; timer: git pull).
  enter files "Pulling $REMOTE $BRANCH"
  if ! run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" fetch --quiet -- "$REMOTE" "$BRANCH"; then
    report_output git "$OUT"
    warn "cannot fetch $REMOTE $BRANCH ($(summary_of "$OUT")); building the checkout as it is"
    REMOTE_REACHED=false
    return 0
  fi
  if git_owner merge-base --is-ancestor FETCH_HEAD HEAD; then return 0; fi
  if git_owner merge-base --is-ancestor HEAD FETCH_HEAD; then
    run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" merge --ff-only --quiet FETCH_HEAD || { report_output git "$OUT"; fail "git merge --ff-only FETCH_HEAD: $(summary_of "$OUT")"; }
    return 0
  fi
  [[ $COMMIT == true ]] || fail "the checkout $CFG has diverged from $REMOTE/$BRANCH and commit-back is off: reconcile it by hand (git -C $(printf %q "$CFG") status)"
  rebase_onto_fetched || fail "$REBASE_WHY"
}

# Commit-back host, diverged: replay its own commits on the remote; a conflict is undone and reported.
rebase_onto_fetched() {
  if run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" rebase --autostash FETCH_HEAD; then return 0; fi
  report_output git "$OUT"
  local files
  files=$(git_owner diff --name-only --diff-filter=U 2>/dev/null | head -n 5 | tr '\n' ' ') || true
  git_owner rebase --abort >/dev/null 2>&1 || true
  REBASE_WHY="commit-back: rebase onto $REMOTE/$BRANCH hit a conflict${files:+ in ${files% }}: resolve it in $CFG as $OWNER (git pull --rebase $REMOTE $BRANCH), then run again"
  return 1
}

# The stage's files: every one is checked before any is written (nothing changes on a refusal).
install_files() {
  local stage=$1 rel dest want cur rec conflicts=() advice=() mine
  enter files "Checking and installing files"
  mapfile -t FILES < <(cd -- "$stage" && find . -type f -printf '%P\n' | LC_ALL=C sort)
  ((${#FILES[@]})) || fail "the stage $stage holds no files"
  for rel in "${FILES[@]}"; do
    [[ $rel =~ $REL_RE && ! $rel =~ (^|/)\.\.?(/|$) ]] || fail "stage file '${rel:0:200}' has a path that is not allowed"
    dest=$CFG/$rel
    [[ -e $dest || -L $dest ]] || continue
    want=$(sha256sum <"$stage/$rel" | cut -d' ' -f1)
    cur=$(sha256sum <"$dest" | cut -d' ' -f1) || cur=unreadable
    [[ $cur != "$want" ]] || continue
    rec=$(cat -- "$STATE_DIR/pushed/$rel.sha256" 2>/dev/null) || rec=""
    if [[ -z $rec ]]; then
      conflicts+=("$rel (not written by nixfleet)")
    elif [[ $cur != "$rec" ]]; then
      conflicts+=("$rel (edited on the host since nixfleet last wrote it)")
    else
      continue
    fi
    mine=$dest.mine
    while [[ -e $mine ]]; do mine=$mine.1; done
    advice+=("mv $(printf %q "$dest") $(printf %q "$mine")")
  done
  if ((${#conflicts[@]})); then
    local list joined
    list=$(printf '%s, ' "${conflicts[@]}")
    joined=$(printf '%s && ' "${advice[@]}")
    fail "refusing to overwrite: ${list%, }; nothing was changed. To keep your version beside it and take nixfleet's, run: ${joined% && } and run pulumi up again"
  fi
  for rel in "${FILES[@]}"; do install_one "$stage" "$rel"; done
  run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" add -- "${FILES[@]}" || { report_output git "$OUT" true; fail "git add of the installed files: $(summary_of "$OUT")"; }
}

# Atomic write (temp file + rename in the same directory), mode from the stage, all of it done AS THE OWNER:
# root never creates a file in the user's checkout (no root-owned file is left if we are stopped half way)
# and never writes through a path the user controls. A temp left by a stopped install is owner-owned and
# is removed by the next install of that file.
install_one() {
  local stage=$1 rel=$2 dest=$CFG/$2 tmp stale mode
  mode=$(stat -c %a -- "$stage/$rel")
  as_owner mkdir -p -- "${dest%/*}" || fail "cannot create ${dest%/*} as $OWNER"
  for stale in "$dest".nixfleet.??????; do
    [[ -f $stale || -L $stale ]] || continue
    as_owner rm -f -- "$stale" || fail "cannot remove $stale as $OWNER"
    log "auto-upgrade: removed $stale, a temp file left by an install that was stopped half way"
  done
  tmp=$(as_owner mktemp -- "$dest.nixfleet.XXXXXX") || fail "cannot create a temp file beside $dest as $OWNER"
  as_owner install -m "$mode" -- /dev/stdin "$tmp" <"$stage/$rel" || fail "cannot write $tmp as $OWNER"
  as_owner mv -f -- "$tmp" "$dest" || fail "cannot move $tmp to $dest as $OWNER"
  mkdir -p -- "$STATE_DIR/pushed/${rel%/*}"
  sha256sum <"$CFG/$rel" | cut -d' ' -f1 >"$STATE_DIR/pushed/$rel.sha256"
}

# `nix build` into the `validated` out-link (a GC root). The old link goes first: a failed build must not
# leave a stale path behind. Nix's own git runs read-only on the user's checkout.
# Nix >= 2.20 reads the checkout with libgit2, which refuses a repository another user owns unless the
# building user's ~/.gitconfig trusts it (it ignores GIT_CONFIG_COUNT and GIT_CONFIG_GLOBAL; checked with Nix
# 2.26). Rather than adding the checkout to root's own ~/.gitconfig for good (a silent, global change that
# would outlive nixfleet), the build gets a HOME of its own in the state dir: its .gitconfig includes the
# real one and trusts exactly this checkout; the XDG dirs stay the real HOME's, so Nix's own user config and
# cache are unchanged. Prints the env words for the build.
git_config_escape() { local v=${1//\\/\\\\}; printf '%s' "${v//\"/\\\"}"; }

build_home_env() {
  [[ $OWNER != "$ME" ]] || return 0
  local real=${HOME:-/root} home=$STATE_DIR/build-home
  mkdir -p -- "$home"
  # Paths as git config values: double-quoted with '\' and '"' escaped (settings refuse control characters).
  { printf '# nixfleet: the HOME of its nix builds (see auto-upgrade.sh, build_home_env)\n[include]\n\tpath = "%s"\n' "$(git_config_escape "$real/.gitconfig")"
    printf '[safe]\n\tdirectory = "%s"\n' "$(git_config_escape "$CFG")"; } >"$home/.gitconfig.new"
  mv -f -- "$home/.gitconfig.new" "$home/.gitconfig"
  printf '%s\n' "HOME=$home" "XDG_CONFIG_HOME=${XDG_CONFIG_HOME:-$real/.config}" "XDG_CACHE_HOME=${XDG_CACHE_HOME:-$real/.cache}" \
    "XDG_DATA_HOME=${XDG_DATA_HOME:-$real/.local/share}" "XDG_STATE_HOME=${XDG_STATE_HOME:-$real/.local/state}"
}

validate() {
  enter validate "Build validation of nixosConfigurations.$HOST"
  [[ $VALIDATE == true ]] || log "AUTO_UPGRADE_VALIDATE=false: the system is still built first (activation needs a store path)"
  rm -f -- "$VALIDATED" "$DIFF_FILE"
  local n=${GIT_CONFIG_COUNT:-0} home_env
  mapfile -t home_env < <(build_home_env)
  # GIT_CONFIG_*: for git itself (older Nix runs git); the build HOME: for libgit2 (Nix >= 2.20).
  if ! run_tool "$VALIDATE_TIMEOUT" env "${home_env[@]}" GIT_OPTIONAL_LOCKS=0 "GIT_CONFIG_COUNT=$((n + 1))" "GIT_CONFIG_KEY_$n=safe.directory" "GIT_CONFIG_VALUE_$n=$CFG" \
    nix "${NIX_FLAGS[@]}" build --no-write-lock-file --out-link "$VALIDATED" -- "$CFG#nixosConfigurations.\"$HOST\".config.system.build.toplevel"; then
    report_output "nix build" "$OUT" true
    fail "nix build of nixosConfigurations.$HOST: $(summary_of "$OUT")"
  fi
  report_output "nix build" "$OUT"
  P=$(link_target "$VALIDATED")
  [[ -n $P && -x $P/bin/switch-to-configuration ]] || fail "nix build left no NixOS system at $VALIDATED"
  NEEDS_REBOOT=$(needs_reboot "$P")
  log "=== Build validation PASSED: $P ==="
  closure_diff
}

# What the upgrade changes, package by package: `nix store diff-closures <running> <validated>`, colour codes
# and other control characters removed. The full text goes to the journal; $DIFF_FILE (beside `validated`)
# keeps it bounded for status.json and the deploy's JSON line. A diff that cannot be computed is a warning:
# it describes the build, it does not judge it.
# Colour codes (nix prints them even into a pipe) and other control characters out of text people read.
plain_text() { sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/[[:cntrl:]]//g' "$@"; }

closure_diff() {
  local running full=$STATE_DIR/.closure-diff.full
  running=$(link_target "$CURRENT")
  if [[ -z $running ]]; then
    warn "no closure diff: there is no running system at $CURRENT"
    return 0
  fi
  if ! run_tool_to "$full" "$DIFF_TIMEOUT" nix "${NIX_FLAGS[@]}" store diff-closures -- "$running" "$P"; then
    report_output "nix store diff-closures" "$OUT"
    warn "no closure diff of $running and $P: $(summary_of "$OUT" | plain_text)"
    rm -f -- "$full"
    return 0
  fi
  plain_text -i -- "$full"
  report_output "closure diff" "$full"
  bounded_lines "$full" >"$DIFF_FILE"
  rm -f -- "$full"
  log "=== Closure diff $running -> $P: $(grep -c '' "$DIFF_FILE" || true) line(s) ==="
  [[ ! -s $DIFF_FILE ]] || cut -c "1-$ECHO_CUT" -- "$DIFF_FILE" >&2 || true
}

# The lines of file $1, at most DIFF_LINES of them and DIFF_BYTES bytes in all, each cut at DIFF_LINE_CUT
# bytes (never inside a UTF-8 character), then "… N more" for the lines left out.
bounded_lines() {
  local LC_ALL=C line out="" n=0 total
  local -a lines
  mapfile -t lines <"$1"
  total=${#lines[@]}
  for line in "${lines[@]}"; do
    if ((${#line} > DIFF_LINE_CUT)); then
      line=${line:0:DIFF_LINE_CUT-3}
      line=${line%[$'\xc0'-$'\xff']*([$'\x80'-$'\xbf'])}…
    fi
    ((n < DIFF_LINES && ${#out} + ${#line} + 1 <= DIFF_BYTES - 24)) || break
    out+=${out:+$'\n'}$line
    n=$((n + 1))
  done
  ((n == total)) || out+=${out:+$'\n'}"… $((total - n)) more"
  printf '%s' "$out"
}

needs_reboot() {
  local f
  for f in kernel initrd kernel-modules; do
    [[ $(link_target "$1/$f") == "$(link_target "$BOOTED/$f")" ]] || { echo true; return; }
  done
  echo false
}

# JSON string body (as NixOS writes `Environment=` values with builtins.toJSON) back to text.
json_unescape() {
  local s=$1 out="" c
  while [[ $s == *\\* ]]; do
    out+=${s%%\\*}
    s=${s#*\\}
    c=${s:0:1}
    case $c in
      n) out+=$'\n' ;; t) out+=$'\t' ;; r) out+=$'\r' ;; b) out+=$'\b' ;; f) out+=$'\f' ;;
      u)
        # shellcheck disable=SC2059 # four hex digits, checked: the format is \uXXXX, nothing else
        if [[ ${s:1:4} =~ ^[0-9a-fA-F]{4}$ ]]; then printf -v c "\\u${s:1:4}"; out+=$c; s=${s:4}; else out+=u; fi
        ;;
      *) out+=$c ;;
    esac
    s=${s:1}
  done
  printf '%s' "$out$s"
}

# Push: the settings this process got must be the ones the validated system's timer will use.
check_settings() {
  local unit=$P/etc/systemd/system/auto-upgrade.service line body name value ours diffs=()
  [[ -f $unit ]] || fail "$P has no etc/systemd/system/auto-upgrade.service: is hosts/$HOST/nixfleet.nix imported?"
  while IFS= read -r line; do
    [[ $line =~ ^Environment=\"(.*)\"$ ]] || continue
    body=$(json_unescape "${BASH_REMATCH[1]}")
    body=${body//%%/%}
    name=${body%%=*} value=${body#*=}
    [[ $name =~ ^AUTO_UPGRADE_[A-Z0-9_]+$ ]] || continue
    ours=${!name-}
    [[ $ours == "$value" ]] || diffs+=("$name: this deploy has '${ours:0:200}', the validated system has '${value:0:200}'")
  done <"$unit"
  ((${#diffs[@]} == 0)) || fail "settings differ from the validated system (nothing activated): $(printf '%s; ' "${diffs[@]}")"
}

failed_units() { systemctl list-units --state=failed --plain --no-legend 2>/dev/null | cut -d' ' -f1 | LC_ALL=C sort -u; }

# ----------------------------------------------------------------------------------------------- activation

# The health gate, bounded by HEALTH_TIMEOUT as a whole. Sets GATE_WHY and returns 1 on failure.
health_gate() {
  local before=$1 end=$((SECONDS + HEALTH_TIMEOUT)) new u left
  new=$(comm -13 <(printf '%s\n' "$before") <(failed_units) | grep -v '^$' | tr '\n' ' ') || true
  if [[ -n $new ]]; then GATE_WHY="units failed after activation: ${new% }"; return 1; fi
  for u in "${HEALTH_UNITS[@]}"; do
    left=$((end - SECONDS))
    ((left > 0)) || { GATE_WHY="health gate took longer than AUTO_UPGRADE_HEALTH_TIMEOUT=$HEALTH_TIMEOUT s (at $u)"; return 1; }
    if ! run_tool "$left" systemctl start -- "$u" || systemctl is-failed --quiet -- "$u"; then
      report_output "$u" "$OUT"
      GATE_WHY="health unit $u failed: $(summary_of "$OUT")"
      return 1
    fi
  done
  # The timer's gate: the host still reaches its remote (a switch that breaks networking rolls back). If the
  # fetch before the build already failed, the switch did not break it: no reason to roll back.
  if [[ $MODE == timer && $REMOTE_REACHED == true ]]; then
    left=$((end - SECONDS))
    if ((left <= 0)) || ! run_tool "$left" "${GIT[@]}" ls-remote --quiet --exit-code -- "$REMOTE" >/dev/null; then
      report_output git "$OUT"
      GATE_WHY="cannot reach the git remote $REMOTE after activation (git ls-remote): $(summary_of "$OUT")"
      return 1
    fi
  fi
}

# Re-activates the system that ran before; profile and boot entry were never moved.
rollback() {
  local why=$1
  IN_FLIGHT=false
  log "=== Activation of $P ROLLED BACK: $why ==="
  PHASE=activate
  write_status running "rolling back: $why"
  local how="re-activated $PREV"
  if [[ -z $PREV || ! -x $PREV/bin/switch-to-configuration ]]; then
    how="no previous system to re-activate"
  elif ! run_tool "$SWITCH_TIMEOUT" "$PREV/bin/switch-to-configuration" test; then
    report_output "switch-to-configuration (rollback)" "$OUT" true
    how="re-activating $PREV ALSO FAILED: $(summary_of "$OUT")"
  fi
  # The activation has ended. A failed re-activation keeps the record: the next run tries it again first.
  [[ $how == "re-activated $PREV" || -z $PREV ]] && rm -f -- "$PREVIOUS"
  log "=== ROLLED BACK ($how); profile and boot entry untouched ==="
  write_status rolled-back "ROLLED BACK: $why ($how; profile and boot entry untouched)"
  FINAL=true
  lease_release
  exit 1
}

# Records the system running now as $PREVIOUS (a GC root, so it can still be re-activated) before `test`
# changes it. Without a running system there is nothing to record (and nothing to go back to).
record_previous() {
  rm -f -- "$PREVIOUS"
  [[ -n $PREV ]] || return 0
  if ! run_tool "$SWITCH_TIMEOUT" nix-store --realise "$PREV" --add-root "$PREVIOUS" --indirect; then
    report_output nix-store "$OUT" true
    fail "cannot record the running system $PREV at $PREVIOUS (nothing activated): $(summary_of "$OUT")"
  fi
}

# Ends an activation that was stopped before it ended (signal now, or SIGKILL / power loss found by a
# later run), so the host is on one side again. Sets SETTLED (old|new) and SETTLE_HOW; returns 1 if that
# failed ($PREVIOUS is then kept: the next run tries again).
#   running == previous: nothing to undo (stopped before `test` changed anything, or power loss + boot).
#   profile == running != previous: stopped after the profile moved (gate passed, confirmed) and before
#     the boot entry was written: finish it (the running system's `switch-to-configuration boot`).
#   otherwise the profile never moved: re-activate the previous system (`test`), profile and boot untouched.
settle_interrupted() {
  local prev cur prof
  prev=$(link_target "$PREVIOUS") cur=$(link_target "$CURRENT") prof=$(link_target "$PROFILE")
  SETTLED=old
  if [[ -z $prev ]]; then
    SETTLE_HOW="the recorded previous system is gone ($PREVIOUS does not resolve); nothing re-activated"
  elif [[ $cur == "$prev" ]]; then
    SETTLE_HOW="the host already runs the previous system $prev"
  elif [[ -n $cur && $prof == "$cur" ]]; then
    SETTLED=new
    if ! run_tool "$SWITCH_TIMEOUT" "$cur/bin/switch-to-configuration" boot; then
      report_output "switch-to-configuration (settle)" "$OUT" true
      SETTLE_HOW="the profile had moved to $cur; writing its boot entry FAILED: $(summary_of "$OUT")"
      return 1
    fi
    SETTLE_HOW="the profile had moved to $cur: wrote its boot entry"
  else
    if ! run_tool "$SWITCH_TIMEOUT" "$prev/bin/switch-to-configuration" test; then
      report_output "switch-to-configuration (settle)" "$OUT" true
      SETTLE_HOW="re-activating the previous system $prev FAILED: $(summary_of "$OUT")"
      return 1
    fi
    SETTLE_HOW="re-activated the previous system $prev (it ran before ${cur:-?} was half activated)"
  fi
  rm -f -- "$PREVIOUS"
}

# At the start of a run, under the lease: an activation that never ended (its activator was SIGKILLed, the
# power went) is settled first, loudly, so the half-activated system is never taken for the previous one.
recover_interrupted() {
  [[ -e $PREVIOUS || -L $PREVIOUS ]] || return 0
  local cur
  cur=$(link_target "$CURRENT")
  enter activate "An earlier activation never ended (running ${cur:-?}, previous $(link_target "$PREVIOUS")): settling it first"
  settle_interrupted || fail "an earlier activation never ended and settling it failed: $SETTLE_HOW. The host runs ${cur:-?}; fix the cause and run again, or accept the running system with: rm $(printf %q "$PREVIOUS")"
  warn "an earlier activation never ended (its activator was killed or the power went): $SETTLE_HOW"
}

# The whole safe activation of $P. Push mode waits for `confirm $ROLLOUT` between gate and profile.
activate_safely() {
  PREV=$(link_target "$CURRENT")
  # Every NixOS host runs a system; without one there is nothing to roll back to, so nothing is activated.
  [[ -n $PREV ]] || fail "no running system at $CURRENT: not a NixOS host (or AUTO_UPGRADE_ROOT is wrong); nothing activated"
  local before
  before=$(failed_units)
  LEASE_TTL=$((SWITCH_TIMEOUT + 60))
  enter activate "Activating $P (switch-to-configuration test)"
  record_previous
  local rc=0
  IN_FLIGHT=true
  run_tool "$SWITCH_TIMEOUT" "$P/bin/switch-to-configuration" test || rc=$?
  if ((rc != 0)); then
    report_output switch-to-configuration "$OUT" true
    rollback "switch-to-configuration test of $P exited $rc: $(summary_of "$OUT")"
  fi
  report_output switch-to-configuration "$OUT"
  if [[ $HEALTH_CHECK == true ]]; then
    LEASE_TTL=$((HEALTH_TIMEOUT + 60))
    enter health "Health gate"
    health_gate "$before" || rollback "health gate: $GATE_WHY"
  fi
  if [[ $MODE == push ]]; then
    LEASE_TTL=$((CONFIRM_TIMEOUT + 60))
    enter awaiting-confirmation "Awaiting confirmation of rollout $ROLLOUT (at most $CONFIRM_TIMEOUT s)"
    local end=$((SECONDS + CONFIRM_TIMEOUT))
    until [[ $(cat -- "$STATE_DIR/confirm" 2>/dev/null) == "$ROLLOUT" ]]; do
      ((SECONDS < end)) || rollback "no confirmation of rollout $ROLLOUT within $CONFIRM_TIMEOUT s (the deployer could not reach the host again)"
      sleep 0.5
    done
  fi
  LEASE_TTL=$((2 * SWITCH_TIMEOUT + 60))
  enter boot "Setting the profile and the boot entry to $P"
  if ! run_tool "$SWITCH_TIMEOUT" nix-env -p "$PROFILE" --set "$P"; then
    report_output nix-env "$OUT" true
    rollback "nix-env -p $PROFILE --set $P: $(summary_of "$OUT")"
  fi
  if ! run_tool "$SWITCH_TIMEOUT" "$P/bin/switch-to-configuration" boot; then
    report_output switch-to-configuration "$OUT" true
    local why
    why="switch-to-configuration boot of $P: $(summary_of "$OUT")"
    # The profile moved already: put it back (and the boot entry with it) before re-activating.
    if [[ -n $PREV ]] && run_tool "$SWITCH_TIMEOUT" nix-env -p "$PROFILE" --set "$PREV"; then
      run_tool "$SWITCH_TIMEOUT" "$PREV/bin/switch-to-configuration" boot || why+="; restoring the boot entry of $PREV FAILED too"
    fi
    rollback "$why"
  fi
  IN_FLIGHT=false
  rm -f -- "$PREVIOUS"
  if ! run_tool "$SWITCH_TIMEOUT" nix-store --realise "$P" --add-root "$GOLDEN" --indirect; then
    report_output nix-store "$OUT"
    warn "could not GC-root the golden system $P at $GOLDEN: $(summary_of "$OUT")"
  fi
  log "=== Activation PASSED: $P (profile and boot entry set) ==="
}

# ----------------------------------------------------------------------------------------------- commit-back

# Sets COMMIT_WHY and returns 1 on a loud failure (rebase conflict, commit refused); a remote that cannot
# be reached is a warning: the commits stay and the next run pushes them.
commit_back() {
  [[ $COMMIT == true ]] || return 0
  LEASE_TTL=$((4 * COMMIT_TIMEOUT + 60))
  enter commit "Commit-back to $REMOTE $BRANCH"
  run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" add -u || { report_output git "$OUT"; COMMIT_WHY="git add -u: $(summary_of "$OUT")"; return 1; }
  unstage_host_edits
  if ! git_owner diff --cached --quiet; then
    if ! run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" commit --quiet -m "chore($HOST): auto-update $(date -u +%Y-%m-%dT%H:%M:%SZ)"; then
      report_output git "$OUT"
      COMMIT_WHY="git commit: $(summary_of "$OUT")"
      return 1
    fi
  fi
  for _ in 1 2 3; do
    if ! run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" fetch --quiet -- "$REMOTE" "$BRANCH"; then
      report_output git "$OUT"
      warn "commit-back: cannot fetch $REMOTE $BRANCH ($(summary_of "$OUT")); local commits are kept and pushed by a later run"
      return 0
    fi
    git_owner merge-base --is-ancestor HEAD FETCH_HEAD && return 0
    if ! git_owner merge-base --is-ancestor FETCH_HEAD HEAD; then
      rebase_onto_fetched || { COMMIT_WHY=$REBASE_WHY; return 1; }
    fi
    if run_tool "$COMMIT_TIMEOUT" "${GIT[@]}" push --quiet -- "$REMOTE" "HEAD:refs/heads/$BRANCH"; then
      log "=== Commit-back PASSED: pushed to $REMOTE $BRANCH ==="
      return 0
    fi
    report_output git "$OUT"
  done
  warn "commit-back: git push to $REMOTE $BRANCH failed ($(summary_of "$OUT")); local commits are kept and pushed by a later run"
}

# A nixfleet-managed file whose content differs from what nixfleet last wrote is a host edit: it stays in
# the working tree and is never committed back (other hosts of the role would receive it).
unstage_host_edits() {
  local rec rel sha
  [[ -d $STATE_DIR/pushed ]] || return 0
  while IFS= read -r rec; do
    rel=${rec#"$STATE_DIR/pushed/"}
    rel=${rel%.sha256}
    # Not in the index: deleted (e.g. moved away to .mine): a host edit too, never committed back.
    sha=$(git_owner show ":$rel" 2>/dev/null | sha256sum | cut -d' ' -f1) || sha=absent
    if [[ $sha != "$(cat -- "$rec")" ]] && ! git_owner diff --cached --quiet -- "$rel"; then
      git_owner reset --quiet -- "$rel" || true
      warn "commit-back: $rel was edited on the host; nixfleet manages it, so the edit is not committed back"
    fi
  done < <(find "$STATE_DIR/pushed" -type f -name '*.sha256')
}

finish_commit() {
  if commit_back; then
    PHASE="done"
    local msg="upgrade PASSED: running $P${WARNINGS[*]:+ (warnings: ${#WARNINGS[@]})}"
    log "=== $msg ==="
    write_status success "$msg"
    return 0
  fi
  log "=== Commit-back FAILED: $COMMIT_WHY (the upgrade itself succeeded: the host runs $P, profile and boot entry set) ==="
  write_status failed "commit-back FAILED: $COMMIT_WHY (the upgrade itself succeeded: the host runs $P, profile and boot entry set)"
  return 1
}

# ----------------------------------------------------------------------------------------------- steps

on_exit() {
  local rc=$?
  trap - EXIT
  # A signal that reaches a forked subshell (the ticker) before bash reset its traps runs this in the
  # subshell: only the main process may touch the lease, the status and the stage.
  [[ $BASHPID == "$$" ]] || exit "$rc"
  stop_ticker
  [[ -z $CHILD ]] || { kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; }
  if [[ $FINAL != true && -n $LEASE_OWNER && $(lease_field pid) == "$$" && $(status_field result) == running ]]; then
    exec 2>/dev/null
    if [[ $IN_FLIGHT == true ]]; then
      # Stopped between `test` and the boot entry: the host must not stay half on the new system.
      if settle_interrupted && [[ $SETTLED == old ]]; then
        log "=== interrupted during $PHASE: ROLLED BACK ($SETTLE_HOW) ==="
        write_status rolled-back "ROLLED BACK: interrupted (exit $rc) during $PHASE ($SETTLE_HOW; profile and boot entry untouched)" || true
      else
        log "=== interrupted during $PHASE: $SETTLE_HOW ==="
        write_status failed "interrupted (exit $rc) during $PHASE: $SETTLE_HOW" || true
      fi
    else
      write_status failed "interrupted (exit $rc) during $PHASE" || true
    fi
  fi
  lease_release
  [[ -z ${OUT:-} ]] || rm -f -- "$OUT"
  # push: the stage is the bootstrap's temp dir, removed whatever happened.
  [[ -z $STAGE ]] || rm -rf -- "$STAGE"
  exit "$rc"
}

# A signal ends the run through on_exit (status rewritten, lease released, child stopped).
install_traps() {
  trap on_exit EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 141' PIPE
  trap 'exit 143' TERM
}

step_run() {
  MODE=timer STEP=run ROLLOUT=""
  LEASE_TTL=$((VALIDATE_TIMEOUT + 60))
  if ! with_lock try_lease "timer:$$" "$LEASE_TTL"; then
    log "auto-upgrade: skipped: a rollout holds the lease ($(cat -- "$LEASE_FILE" 2>/dev/null)); nothing changed"
    exit 0
  fi
  resolve_owner
  recover_interrupted
  check_hooks_ran
  pull
  validate
  if [[ $P == "$(link_target "$CURRENT")" && $P == "$(link_target "$PROFILE")" ]]; then
    log "=== $P is already the running system: nothing to activate ==="
  else
    activate_safely
  fi
  finish_commit || { FINAL=true; exit 1; }
  FINAL=true
}

step_push() {
  local stage=$1
  MODE=push STEP=push ROLLOUT=${NIXFLEET_ROLLOUT:-}
  [[ $ROLLOUT =~ $TOKEN_RE ]] || { log "auto-upgrade push: NIXFLEET_ROLLOUT must be the rollout token (16 hex, optional -r<N>), got '${ROLLOUT:0:40}'"; exit 2; }
  [[ -d $stage ]] || { log "auto-upgrade push: stage $stage is not a directory"; exit 2; }
  local end=$((SECONDS + LEASE_WAIT)) said=-15
  LEASE_TTL=$((HOOKS_TIMEOUT + 60))
  until with_lock try_lease "push:$ROLLOUT" "$LEASE_TTL"; do
    ((SECONDS < end)) || { log "=== lease FAILED: another rollout holds the host for more than AUTO_UPGRADE_LEASE_WAIT=$LEASE_WAIT s ($(cat -- "$LEASE_FILE" 2>/dev/null)) ==="; exit 1; }
    # Every 15 s, like the ticker: a dead SSH session (EPIPE) ends this wait too.
    if ((SECONDS - said >= 15)); then progress "waiting up to $LEASE_WAIT s for the lease ($(cat -- "$LEASE_FILE" 2>/dev/null))"; said=$SECONDS; fi
    sleep 1
  done
  # The root-owned copy of this script in the state dir: the activator and `confirm` run it, never the
  # copy in the user-owned checkout (its owner could swap it between a check and a run).
  install -m 0755 -- "$SELF" "$STATE_DIR/auto-upgrade.sh"
  resolve_owner
  recover_interrupted
  install_files "$stage"
  start_hooks
  LEASE_TTL=$((VALIDATE_TIMEOUT + 60))
  validate
  check_settings
  local action=armed
  if [[ $P == "$(link_target "$CURRENT")" && $P == "$(link_target "$PROFILE")" ]]; then
    action=unchanged
    log "=== $P is already the running system: nothing to activate ==="
    finish_commit || { FINAL=true; exit 1; }
  else
    start_activator
  fi
  FINAL=true
  printf '{"rollout":%s,"validatedPath":%s,"action":"%s","needsReboot":%s,"diff":%s}\n' "$(json_str "$ROLLOUT")" "$(json_str "$P")" "$action" "$NEEDS_REBOOT" "$(json_str "$(cat -- "$DIFF_FILE" 2>/dev/null)")"
}

# The activator runs from a root-owned copy of this script (never from the user's checkout), in a transient
# unit with exactly our settings: it survives this SSH session. Then this process follows it.
start_activator() {
  local copy=$STATE_DIR/auto-upgrade.sh args=(--unit="auto-upgrade-activate-$ROLLOUT" --collect --quiet "--setenv=PATH=$PATH") v
  [[ -z ${HOME:-} ]] || args+=("--setenv=HOME=$HOME")
  for v in $(compgen -e | grep -E '^(AUTO_UPGRADE_|NIX_)'); do args+=("--setenv=$v=${!v}"); done
  rm -f -- "$STATE_DIR/confirm"
  # This run's warnings (hooks, a settled earlier activation) go on in the activator's status.json.
  if ((${#WARNINGS[@]})); then printf '%s\n' "${WARNINGS[@]//$'\n'/ }" >"$STATE_DIR/warnings"; else rm -f -- "$STATE_DIR/warnings"; fi
  PHASE=activate
  write_status running "starting the activator"
  if ! run_tool 60 systemd-run "${args[@]}" -- bash "$copy" activate "$ROLLOUT"; then
    report_output systemd-run "$OUT" true
    fail "systemd-run of the activator: $(summary_of "$OUT")"
  fi
  local end=$((SECONDS + SWITCH_TIMEOUT + HEALTH_TIMEOUT + 60)) tick=$SECONDS started=$SECONDS r ph holder
  while :; do
    r=$(status_field result "$PUSH_FILE") ph=$(status_field phase "$PUSH_FILE")
    if [[ $(status_field rollout "$PUSH_FILE") == "$ROLLOUT" ]]; then
      [[ $r == running && $ph == awaiting-confirmation ]] && return 0
      if [[ $r == rolled-back || $r == failed ]]; then
        FINAL=true
        log "=== $HOST: rollout $ROLLOUT $r: $(status_message) ==="
        exit 1
      fi
    fi
    ((SECONDS < end)) || fail "the activator did not reach the confirmation step within $((SWITCH_TIMEOUT + HEALTH_TIMEOUT + 60)) s (phase $ph)"
    # The activator takes the lease over when it starts; one that never starts or dies is not waited for.
    holder=$(lease_field pid)
    if [[ $holder == "$$" ]] && ((SECONDS - started > 30)); then
      fail "the activator did not start within 30 s (journalctl -u auto-upgrade-activate-$ROLLOUT)"
    elif [[ $holder != "$$" ]] && ! pid_alive "$holder" && [[ $(status_field result "$PUSH_FILE") == running ]]; then
      fail "the activator (pid ${holder:-?}) died during $ph (journalctl -u auto-upgrade-activate-$ROLLOUT)"
    fi
    if ((SECONDS - tick >= 15)); then progress "activating: $ph"; tick=$SECONDS; fi
    sleep 0.5
  done
}

step_activate() {
  MODE=push STEP=activate ROLLOUT=$1
  LEASE_TTL=$((SWITCH_TIMEOUT + 60))
  with_lock takeover_lease "push:$ROLLOUT" "$LEASE_TTL" || { log "=== activator $ROLLOUT: the lease is no longer this rollout's ($(cat -- "$LEASE_FILE" 2>/dev/null)); nothing activated ==="; exit 1; }
  [[ $(status_field rollout "$PUSH_FILE") == "$ROLLOUT" ]] || fail "push.json is not rollout $ROLLOUT's; nothing activated"
  if [[ -f $STATE_DIR/warnings ]]; then mapfile -t WARNINGS <"$STATE_DIR/warnings"; rm -f -- "$STATE_DIR/warnings"; fi
  P=$(link_target "$VALIDATED")
  [[ -n $P ]] || fail "no validated system at $VALIDATED; nothing activated"
  NEEDS_REBOOT=$(needs_reboot "$P")
  resolve_owner
  activate_safely
  finish_commit || { FINAL=true; exit 1; }
  FINAL=true
}

step_confirm() {
  MODE=push STEP=confirm ROLLOUT=$1
  printf '%s\n' "$ROLLOUT" >"$STATE_DIR/confirm.new"
  mv -f -- "$STATE_DIR/confirm.new" "$STATE_DIR/confirm"
  local end=$((SECONDS + CONFIRM_TIMEOUT + 2 * SWITCH_TIMEOUT + 4 * COMMIT_TIMEOUT + 60)) tick=$SECONDS r
  while :; do
    r=$(status_field result "$PUSH_FILE")
    [[ $(status_field rollout "$PUSH_FILE") == "$ROLLOUT" ]] || { log "=== confirm FAILED: rollout $ROLLOUT is not the host's last rollout ($(status_field rollout "$PUSH_FILE")); run pulumi up again ==="; exit 1; }
    [[ $r == running ]] || break
    if ! with_lock lease_live; then
      # Nobody holds the host: the activator died (reclaim rewrites its status as failed).
      with_lock reclaim_stale
      continue
    fi
    ((SECONDS < end)) || { log "=== confirm FAILED: the activator of $ROLLOUT is still at $(status_field phase "$PUSH_FILE") ==="; exit 1; }
    if ((SECONDS - tick >= 15)); then progress "waiting for the activator: $(status_field phase "$PUSH_FILE")"; tick=$SECONDS; fi
    sleep 0.5
  done
  # The activator writes its final status, then releases the lease: wait for that too (at most 10 s), so the
  # host is free for the next run when confirm returns.
  local free_by=$((SECONDS + 10))
  while ((SECONDS < free_by)) && [[ $(lease_field owner) == "push:$ROLLOUT" ]] && with_lock lease_live; do sleep 0.2; done
  # A commit-back that failed (e.g. a conflict, now resolved) is retried by the next confirm: heal.
  if [[ $r == failed && $(status_field phase "$PUSH_FILE") == commit ]] && with_lock try_lease "push:$ROLLOUT" $((4 * COMMIT_TIMEOUT + 60)); then
    P=$(link_target "$CURRENT")
    NEEDS_REBOOT=$(needs_reboot "$P")
    resolve_owner
    STEP=confirm
    finish_commit || true
    FINAL=true
    r=$(status_field result "$PUSH_FILE")
  fi
  head -n 1 -- "$PUSH_FILE"
  [[ $r == success ]]
}

step_status() {
  local dir=${1:-${AUTO_UPGRADE_STATE_DIR:-/var/lib/auto-upgrade}}
  [[ -f $dir/status.json ]] || { printf 'auto-upgrade: no status record yet (%s/status.json)\n' "$dir" >&2; exit 1; }
  cat -- "$dir/status.json"
}

usage() {
  log "auto-upgrade: $1"
  log "usage: auto-upgrade run | push STAGE | activate TOKEN | confirm TOKEN | status [STATE_DIR]"
  exit 2
}

main() {
  local step=${1:-run}
  (($# == 0)) || shift
  case $step in
    status) (($# <= 1)) || usage "status takes at most a STATE_DIR"; step_status "$@"; return ;;
    run) (($# == 0)) || usage "run takes no arguments" ;;
    push) (($# == 1)) || usage "push takes the stage directory" ;;
    activate | confirm) [[ $# == 1 && $1 =~ $TOKEN_RE ]] || usage "$step takes a rollout token (16 hex, optional -r<N>)" ;;
    *) usage "unknown step '$step'" ;;
  esac
  [[ $step != push ]] || STAGE=$1
  load_settings
  install_traps
  case $step in
    run) step_run ;;
    push) step_push "$1" ;;
    activate) step_activate "$1" ;;
    confirm) step_confirm "$1" ;;
  esac
}

main "$@"
