#!/usr/bin/env bash
# nixfleet auto-upgrade: pre-update hooks, git pull, build validation, switch to exactly the validated
# build, optional commit-back.
#
# One script serves both modes (docs/architecture.md, "The upgrade script"):
#   pull mode: the systemd service runs `auto-upgrade run` (built with pkgs.writeShellApplication);
#   push mode: Pulumi runs `bash <checkout>/modules/services/system/auto-upgrade.sh <step>` per step.
#
# Usage: auto-upgrade [hooks|pull|validate|switch [STORE_PATH]|commit|run|status]   (default: run)
#
# Settings come only from AUTO_UPGRADE_* environment variables (validated below; exit 2 on bad settings).
# Stdout carries machine output only (a store path, or status.json); logs go to stderr and
# `logger -t auto-upgrade`. Every step except `status` rewrites $AUTO_UPGRADE_STATE_DIR/status.json.
# Only coreutils, git, jq, nh, nix, util-linux and systemd are used: the writeShellApplication runtimeInputs.

# writeShellApplication prepends the same options; kept so `bash auto-upgrade.sh` behaves identically.
set -euo pipefail
# ERR traps in functions too, so an unexpected failure is recorded with where it happened.
set -o errtrace

readonly STEPS=(hooks pull validate switch commit run status)
# systemd unit names: prefix[@instance].type, characters systemd allows (backslash for \x2d escapes),
# no leading '-'. The values are checked upstream too; re-checked here because they reach systemctl.
# (Regexes are the one unquoted expansion: `[[ x =~ "$re" ]]` would match the text literally.)
readonly UNIT_RE='^[A-Za-z0-9:_.\\][-A-Za-z0-9:_.\\]*(@[-A-Za-z0-9:_.\\]*)?\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)$'
readonly USER_RE='^[A-Za-z0-9_][-A-Za-z0-9_.]*[$]?$'

# ---------------------------------------------------------------------------------------------------------
# Logging: stderr and the journal. Never stdout (reserved for machine output).

log() {
  local msg=$1
  printf '%s\n' "$msg" >&2
  # A missing syslog socket must not abort an upgrade half way; the line is on stderr anyway.
  logger -t auto-upgrade -- "$msg" 2>/dev/null || true
}

# Tool output already went to stderr live; this copies its tail into the journal when a step fails,
# so `journalctl -t auto-upgrade` alone explains the failure (push mode's stderr is not in the journal).
journal_output() {
  local prefix=$1 line
  while IFS= read -r line; do
    logger -t auto-upgrade -- "$prefix: $line" 2>/dev/null || true
  done < <(tail -n 40 -- "$OUTPUT_FILE")
}

# Last few non-empty lines of the captured output on one line, for `=== … ===` lines and status.json.
output_summary() {
  local line summary=""
  while IFS= read -r line; do
    [[ -n "$line" ]] || continue
    summary+="${summary:+ | }$line"
  done < <(tail -n 3 -- "$OUTPUT_FILE")
  printf '%s' "$summary"
}

# Runs a command with stdout and stderr both sent to our stderr (stdout stays machine-only), keeping a
# copy in $OUTPUT_FILE for the failure message. Returns the command's status (pipefail).
# The lock fd (9) is closed for the command so nothing it leaves running can hold the lock.
run_captured() {
  : >"$OUTPUT_FILE"
  "$@" 9>&- 2>&1 | tee -- "$OUTPUT_FILE" >&2
}

usage_error() {
  log "auto-upgrade: $1"
  log "usage: auto-upgrade [hooks|pull|validate|switch [STORE_PATH]|commit|run|status] (default: run)"
  exit 2
}

# ---------------------------------------------------------------------------------------------------------
# Settings

SETTING_ERRORS=()
setting_error() { SETTING_ERRORS+=("$1"); }

require_bool() {
  local name=$1 value=$2
  if [[ "$value" != true && "$value" != false ]]; then
    setting_error "$name must be exactly 'true' or 'false', got '$value'"
  fi
}

require_absolute() {
  local name=$1 value=$2
  if [[ "$value" != /* ]]; then
    setting_error "$name must be an absolute path (starting with /), got '$value'"
  fi
}

# Splits on spaces only (no globbing, no other expansion) into the array named by $2, checking each unit.
split_units() {
  local name=$1 value=$2 unit
  local -n out=$3
  out=()
  # read -d '' consumes the whole value, newlines included, so a newline cannot hide a second name.
  IFS=' ' read -r -d '' -a out < <(printf '%s' "$value") || true
  for unit in "${out[@]}"; do
    if [[ ${#unit} -gt 255 || ! "$unit" =~ $UNIT_RE ]]; then
      setting_error "$name: '$unit' is not a systemd unit name (expected e.g. chezmoi-pre-update.service: letters, digits, ':', '-', '_', '.', '\\', optional @instance, a unit type suffix)"
    fi
  done
}

load_settings() {
  CFG=${AUTO_UPGRADE_CONFIG_PATH:-}
  HOST=${AUTO_UPGRADE_FLAKE_HOST:-}
  OWNER=${AUTO_UPGRADE_USER:-}
  REMOTE=${AUTO_UPGRADE_REMOTE:-origin}
  BRANCH=${AUTO_UPGRADE_BRANCH:-main}
  VALIDATE=${AUTO_UPGRADE_VALIDATE:-true}
  COMMIT=${AUTO_UPGRADE_COMMIT:-false}
  PROFILE=${AUTO_UPGRADE_PROFILE:-/nix/var/nix/profiles/system}
  STATE_DIR=${AUTO_UPGRADE_STATE_DIR:-/var/lib/auto-upgrade}
  HOOKS=()
  REQUIRED_HOOKS=()

  if [[ -z "$CFG" ]]; then
    setting_error "AUTO_UPGRADE_CONFIG_PATH is required (the absolute path of the nix-config checkout)"
  else
    require_absolute AUTO_UPGRADE_CONFIG_PATH "$CFG"
  fi
  [[ -n "$HOST" ]] || setting_error "AUTO_UPGRADE_FLAKE_HOST is required (the nixosConfigurations.<name> to build)"
  if [[ -n "$OWNER" && ! "$OWNER" =~ $USER_RE ]]; then
    setting_error "AUTO_UPGRADE_USER must be a user name (letters, digits, '_', '-', '.'), got '$OWNER'"
  fi
  require_bool AUTO_UPGRADE_VALIDATE "$VALIDATE"
  require_bool AUTO_UPGRADE_COMMIT "$COMMIT"
  require_absolute AUTO_UPGRADE_PROFILE "$PROFILE"
  require_absolute AUTO_UPGRADE_STATE_DIR "$STATE_DIR"
  split_units AUTO_UPGRADE_HOOKS "${AUTO_UPGRADE_HOOKS:-}" HOOKS
  split_units AUTO_UPGRADE_REQUIRED_HOOKS "${AUTO_UPGRADE_REQUIRED_HOOKS:-}" REQUIRED_HOOKS
  local unit
  for unit in "${REQUIRED_HOOKS[@]}"; do
    if ! is_listed "$unit" "${HOOKS[@]}"; then
      setting_error "AUTO_UPGRADE_REQUIRED_HOOKS: '$unit' is not in AUTO_UPGRADE_HOOKS (required hooks must be a subset)"
    fi
  done

  if ((${#SETTING_ERRORS[@]} > 0)); then
    local err
    for err in "${SETTING_ERRORS[@]}"; do log "auto-upgrade: invalid settings: $err"; done
    exit 2
  fi
  readonly CFG HOST REMOTE BRANCH VALIDATE COMMIT PROFILE STATE_DIR HOOKS REQUIRED_HOOKS
  VALIDATED_LINK=$STATE_DIR/validated
  STATUS_FILE=$STATE_DIR/status.json
  readonly VALIDATED_LINK STATUS_FILE
}

is_listed() {
  local needle=$1 item
  shift
  for item; do [[ "$item" == "$needle" ]] && return 0; done
  return 1
}

# ---------------------------------------------------------------------------------------------------------
# Status record and step bookkeeping

CURRENT_STEP=""
STATUS_FINAL=false
OUTPUT_FILE=""
ERR_AT=""
WARNINGS=""

now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Rewrites status.json atomically (temp file in the same directory, then mv), JSON built by jq only.
write_status() {
  local result=$1 message=$2 validated current tmp
  # -e: a dangling link (e.g. a garbage-collected path) reads as null rather than a path that isn't there.
  validated=$(readlink -e -- "$VALIDATED_LINK") || validated=""
  current=$(readlink -e -- "$PROFILE") || current=""
  tmp=$(mktemp -- "$STATE_DIR/status.json.XXXXXX")
  jq -n \
    --arg host "$HOST" \
    --arg lastRun "$(now_utc)" \
    --arg step "$CURRENT_STEP" \
    --arg result "$result" \
    --arg validatedPath "$validated" \
    --arg currentSystem "$current" \
    --arg message "$message" \
    '{host: $host, lastRun: $lastRun, step: $step, result: $result,
      validatedPath: (if $validatedPath == "" then null else $validatedPath end),
      currentSystem: (if $currentSystem == "" then null else $currentSystem end),
      message: $message}' >"$tmp"
  # mktemp creates 0600; the record holds no secrets and unprivileged tooling may read it.
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$STATUS_FILE"
}

begin_step() {
  CURRENT_STEP=$1
  log "=== $2 ==="
  write_status running "$2"
}

step_succeeded() {
  log "=== $1 ==="
  write_status success "$1"
}

# Logs `=== <message> ===`, records the failure and exits 1.
fail() {
  log "=== $1 ==="
  write_status failed "$1"
  STATUS_FINAL=true
  exit 1
}

on_exit() {
  local rc=$?
  if ((rc != 0)) && [[ "$STATUS_FINAL" != true && -n "$CURRENT_STEP" ]]; then
    STATUS_FINAL=true
    log "=== Step $CURRENT_STEP FAILED unexpectedly (exit $rc${ERR_AT:+, $ERR_AT}) ==="
    write_status failed "unexpected failure in step $CURRENT_STEP (exit $rc${ERR_AT:+, $ERR_AT})" || true
  fi
  [[ -z "$OUTPUT_FILE" ]] || rm -f -- "$OUTPUT_FILE"
  return "$rc"
}

# ---------------------------------------------------------------------------------------------------------
# Git, always as the owner of the checkout: root-run git on a user's repo fails with "dubious ownership"
# and would leave root-owned files in the user's checkout.

require_checkout() {
  [[ -d "$CFG" ]] || fail "$CURRENT_STEP FAILED: AUTO_UPGRADE_CONFIG_PATH $CFG is not a directory"
}

resolve_owner() {
  if [[ -z "$OWNER" ]]; then
    OWNER=$(stat -c %U -- "$CFG") || fail "$CURRENT_STEP FAILED: cannot read the owner of $CFG"
  fi
  ME=$(id -un)
}

git_as_owner() {
  if [[ "$OWNER" == "$ME" ]]; then
    git -C "$CFG" "$@"
  else
    runuser -u "$OWNER" -- git -C "$CFG" "$@"
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Steps

# Push mode: start each hook in order; a missing unit is skipped with a warning unless it is required.
step_hooks() {
  begin_step hooks "Running pre-update hooks"
  local hook
  for hook in "${HOOKS[@]}"; do
    if ! systemctl cat -- "$hook" >/dev/null 2>&1; then
      if is_listed "$hook" "${REQUIRED_HOOKS[@]}"; then
        fail "Pre-update hook $hook FAILED: unit not found and it is required (AUTO_UPGRADE_REQUIRED_HOOKS)"
      fi
      log "warning: pre-update hook $hook: unit not found, skipped"
      continue
    fi
    log "starting pre-update hook $hook"
    if ! run_captured systemctl start -- "$hook"; then
      journal_output systemctl
      fail "Pre-update hook $hook FAILED"
    fi
  done
  step_succeeded "Pre-update hooks PASSED"
}

# Pull mode: systemd already started the hooks (they are in the service's after/wants), so only check
# that none failed. A required hook that does not exist fails too: `wants` ignores missing units silently.
check_hooks_ran() {
  begin_step hooks "Checking pre-update hooks"
  local hook
  for hook in "${HOOKS[@]}"; do
    if is_listed "$hook" "${REQUIRED_HOOKS[@]}" && ! systemctl cat -- "$hook" >/dev/null 2>&1; then
      fail "Pre-update hook $hook FAILED: unit not found and it is required (AUTO_UPGRADE_REQUIRED_HOOKS)"
    fi
    if systemctl is-failed --quiet -- "$hook"; then
      fail "Pre-update hook $hook FAILED"
    fi
  done
  step_succeeded "Pre-update hooks PASSED"
}

# Fast-forward only: never resets, stashes or checks out files, so local edits are never discarded.
# One exception, for commit-back hosts: commits of an earlier run whose push failed make the checkout
# diverge from the remote; with a clean tree they are replayed on top (undone on conflict).
step_pull() {
  begin_step pull "Pulling config"
  require_checkout
  resolve_owner
  if ! run_captured git_as_owner pull --ff-only -- "$REMOTE" "$BRANCH"; then
    journal_output git
    local why
    why=$(output_summary)
    if [[ "$COMMIT" == true ]] && has_unpushed_commits && git_as_owner diff --quiet HEAD; then
      log "git pull --ff-only refused; replaying this host's unpushed commit-back commits onto $REMOTE/$BRANCH"
      if ! run_captured git_as_owner pull --rebase --no-autostash -- "$REMOTE" "$BRANCH"; then
        journal_output git
        why=$(output_summary)
        git_as_owner rebase --abort >/dev/null 2>&1 || true
      else
        step_succeeded "Pulling config PASSED (rebased unpushed commits)"
        return 0
      fi
    fi
    fail "git pull FAILED ($REMOTE $BRANCH): $why"
  fi
  step_succeeded "Pulling config PASSED"
}

# True when HEAD has commits the remote branch lacks (after the fetch that `pull` just did).
has_unpushed_commits() {
  local ahead
  ahead=$(git_as_owner rev-list --count "FETCH_HEAD..HEAD" 2>/dev/null) || return 1
  ((ahead > 0))
}

# nh runs as root, and Nix fetches the flake with git: on a checkout owned by a user that git refuses
# ("dubious ownership", exit 129; nixpkgs #169193). Trust exactly this checkout, for these calls only.
nh_trusting_checkout() {
  local n=${GIT_CONFIG_COUNT:-0}
  env "GIT_CONFIG_COUNT=$((n + 1))" "GIT_CONFIG_KEY_$n=safe.directory" "GIT_CONFIG_VALUE_$n=$CFG" nh "$@"
}

# Builds without updating flake inputs (no -u: updating after validation deploys something unvalidated).
# The out-link is a GC root, so the validated build survives until the next validation.
step_validate() {
  begin_step validate "Build Validation"
  require_checkout
  # A failed build must not leave an older `validated` link behind for `switch` to deploy.
  rm -f -- "$VALIDATED_LINK"
  if ! run_captured nh_trusting_checkout os build -R -H "$HOST" -o "$VALIDATED_LINK" -- "$CFG"; then
    journal_output nh
    fail "Build Validation FAILED"
  fi
  VALIDATED_PATH=$(readlink -e -- "$VALIDATED_LINK") ||
    fail "Build Validation FAILED: nh succeeded but left no out-link at $VALIDATED_LINK"
  step_succeeded "Build Validation PASSED: $VALIDATED_PATH"
}

# Switches to the validated build and nothing else; an explicit path must be that build.
step_switch() {
  begin_step switch "Switch"
  local validated path
  validated=$(readlink -e -- "$VALIDATED_LINK") ||
    fail "Switch REFUSED: no validated build at $VALIDATED_LINK (run validate first)"
  path=${1:-$validated}
  if [[ "$path" != "$validated" ]]; then
    fail "Switch REFUSED: $path is not the validated build ($validated)"
  fi
  [[ -x "$path/bin/switch-to-configuration" ]] ||
    fail "Switch REFUSED: $path has no bin/switch-to-configuration"
  log "=== Switching to $path ==="
  if ! run_captured nix-env -p "$PROFILE" --set "$path"; then
    journal_output nix-env
    fail "Switch FAILED: nix-env -p $PROFILE --set $path: $(output_summary)"
  fi
  if ! run_captured "$path/bin/switch-to-configuration" switch; then
    journal_output switch-to-configuration
    fail "Switch FAILED: switch-to-configuration switch exited non-zero (profile $PROFILE now points at $path)"
  fi
  SWITCHED_PATH=$path
  step_succeeded "Switch PASSED: $path"
}

# AUTO_UPGRADE_VALIDATE=false: let nh evaluate, build and switch in one go (no -u either).
switch_unvalidated() {
  begin_step switch "Switch"
  log "=== Build validation disabled (AUTO_UPGRADE_VALIDATE=false): nh os switch ==="
  require_checkout
  if ! run_captured nh_trusting_checkout os switch -R -H "$HOST" -- "$CFG"; then
    journal_output nh
    fail "Switch FAILED: nh os switch exited non-zero"
  fi
  SWITCHED_PATH=$(readlink -e -- "$PROFILE") || SWITCHED_PATH=""
  step_succeeded "Switch PASSED: ${SWITCHED_PATH:-unknown}"
}

# Commit-back: local config changes are committed and pushed; a failed push keeps the commit and warns.
step_commit() {
  begin_step commit "Commit-back"
  if [[ "$COMMIT" != true ]]; then
    step_succeeded "Commit-back skipped: commit-back disabled (AUTO_UPGRADE_COMMIT=false)"
    return 0
  fi
  require_checkout
  resolve_owner
  # Tracked files only (plus what is already staged, such as nixfleet's files): an untracked file was
  # invisible to the build, and may be something never meant for the forge.
  if ! run_captured git_as_owner add -u; then
    fail "Commit-back FAILED: git add: $(output_summary)"
  fi
  local rc=0
  git_as_owner diff --cached --quiet || rc=$?
  if ((rc == 0)); then
    step_succeeded "Commit-back PASSED: nothing to commit"
    return 0
  elif ((rc != 1)); then
    fail "Commit-back FAILED: git diff --cached exited $rc"
  fi
  if ! run_captured git_as_owner commit -m "chore($HOST): auto-update $(now_utc)"; then
    journal_output git
    fail "Commit-back FAILED: git commit: $(output_summary)"
  fi
  # Other hosts commit back to the same branch: replay ours on top of theirs first, or the push is
  # refused and the next `git pull --ff-only` finds the checkout diverged. The tree is clean here
  # (everything was just committed), so a rebase can lose nothing; on conflict it is undone. Hosts
  # rolled out together race for the branch, so a refused push is retried (after a new rebase).
  local why attempt
  for attempt in 1 2 3; do
    if ! run_captured git_as_owner pull --rebase --no-autostash -- "$REMOTE" "$BRANCH"; then
      journal_output git
      why=$(output_summary)
      git_as_owner rebase --abort >/dev/null 2>&1 || true
      log "=== Commit-back rebase FAILED (warning): $why ==="
      WARNINGS+="${WARNINGS:+; }commit-back could not rebase onto $REMOTE/$BRANCH, commit kept locally: $why"
      write_status success "Commit-back committed locally; rebase onto $REMOTE/$BRANCH FAILED (warning): $why"
      return 0
    fi
    if run_captured git_as_owner push -- "$REMOTE" "HEAD:$BRANCH"; then
      step_succeeded "Commit-back PASSED: pushed to $REMOTE $BRANCH"
      return 0
    fi
    journal_output git
    why=$(output_summary)
    ((attempt == 3)) || { log "Commit-back: push attempt $attempt refused, rebasing again: $why"; sleep "$attempt"; }
  done
  log "=== Commit-back push FAILED (warning): $why ==="
  WARNINGS+="${WARNINGS:+; }commit-back push failed, commit kept locally: $why"
  write_status success "Commit-back committed locally; push FAILED (warning): $why"
}

step_run() {
  check_hooks_ran
  step_pull
  if [[ "$VALIDATE" == true ]]; then
    step_validate
    step_switch "$VALIDATED_PATH"
  else
    switch_unvalidated
  fi
  step_commit
  CURRENT_STEP=run
  step_succeeded "Auto-upgrade PASSED: ${SWITCHED_PATH:-unknown}${WARNINGS:+ (warning: $WARNINGS)}"
}

step_status() {
  [[ -f "$STATUS_FILE" ]] || { log "auto-upgrade: no status record yet ($STATUS_FILE)"; exit 1; }
  cat -- "$STATUS_FILE"
}

# ---------------------------------------------------------------------------------------------------------

main() {
  local step=${1:-run}
  (($# == 0)) || shift
  is_listed "$step" "${STEPS[@]}" || usage_error "unknown step '$step'"
  if [[ "$step" == switch ]]; then
    (($# <= 1)) || usage_error "switch takes at most one STORE_PATH"
  else
    (($# == 0)) || usage_error "step '$step' takes no arguments"
  fi

  load_settings
  if [[ "$step" == status ]]; then
    step_status
    return 0
  fi

  mkdir -p -- "$STATE_DIR"
  # One upgrade at a time: the timer and a push-mode step must not build or switch concurrently.
  # Taken before the trap so a refused run does not overwrite the running one's status record.
  exec 9>>"$STATE_DIR/lock"
  if ! flock -n 9; then
    log "=== auto-upgrade: another run holds $STATE_DIR/lock; try again later ==="
    exit 1
  fi
  OUTPUT_FILE=$(mktemp -- "$STATE_DIR/output.XXXXXX")
  trap on_exit EXIT
  trap 'ERR_AT="line $LINENO: $BASH_COMMAND"' ERR
  # Make a stop or Ctrl-C go through on_exit, so the record says the step failed.
  trap 'exit 143' TERM
  trap 'exit 130' INT

  case "$step" in
    hooks) step_hooks ;;
    pull) step_pull ;;
    validate)
      step_validate
      printf '%s\n' "$VALIDATED_PATH"
      ;;
    switch)
      step_switch "${1:-}"
      printf '%s\n' "$SWITCHED_PATH"
      ;;
    commit) step_commit ;;
    run)
      step_run
      [[ -z "${SWITCHED_PATH:-}" ]] || printf '%s\n' "$SWITCHED_PATH"
      ;;
  esac
}

main "$@"
