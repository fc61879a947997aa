# shellcheck shell=bash
# shellcheck disable=SC2154 # `self` (this system's store path) is set by the line toplevel.nix puts before this file.
# ============================================================================
#  SIMULATED switch-to-configuration (nixos-lite). It never touches the real
#  system: everything happens under $NIXFLEET_SIM_ROOT, the simulated host's root.
#  Modelled on nixpkgs nixos/modules/system/activation/switch-to-configuration.pl:
#    boot|switch  the boot entry ($root/boot/default) -> this system (GRUB's
#                 default entry; the profile is never touched: callers set it
#                 with nix-env, as on NixOS)
#    test|switch  stop active units this system no longer has (X-StopOnRemoval),
#                 run $self/activate (failure: exit 2), restart changed active
#                 units, start the units multi-user.target wants (a failure:
#                 "warning: the following units failed: …", exit 4). Stopping
#                 sshd.service kills the host's sshd and its sessions.
#  Every run appends "<UTC time> <action> <self>[ units-failed| FAILED exit=N]"
#  to $root/log/switch.log.
# ============================================================================
set -u
action="${1:-}"
case "$action" in
  switch | boot | test | dry-activate) ;;
  *)
    echo "Usage: $0 [switch|boot|test|dry-activate]" >&2
    exit 1
    ;;
esac
if [ -z "${NIXFLEET_SIM_ROOT:-}" ]; then
  echo "switch-to-configuration: this is a SIMULATED system (nixos-lite): set NIXFLEET_SIM_ROOT to the simulated host's root directory; refusing to run" >&2
  exit 1
fi
root="$NIXFLEET_SIM_ROOT"
# The real script calls its tools by store path; here the host's stock toolset (a fleet host's sim/bin)
# stands in for them. Outside a fleet (no sim/bin), the caller's PATH is used and no unit is managed.
if [ -d "$root/sim/bin" ]; then
  PATH="$root/sim/bin"
  export PATH
fi
systemctl_bin="$root/sim/bin/systemctl"
systemctl() { "$systemctl_bin" "$@" 8>&-; }
mkdir -p "$root/run/nixos" "$root/etc/systemd" "$root/log" "$root/boot"
# One switch at a time per host, as switch-to-configuration.pl does (flock on
# /run/nixos/switch-to-configuration.lock, waiting). Children never inherit the lock (fd 8): a service
# started here must not hold it.
exec 8>>"$root/run/nixos/switch-to-configuration.lock"
flock 8
stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

finish() {
  local rc="$1" note=""
  if [ "$rc" -eq 4 ]; then note=" units-failed"; elif [ "$rc" -ne 0 ]; then note=" FAILED exit=$rc"; fi
  printf '%s %s %s%s\n' "$stamp" "$action" "$self" "$note" >>"$root/log/switch.log"
  exit "$rc"
}

# A unit file's value of KEY (last one wins), or nothing.
unit_value() { sed -n "s/^$2=//p" "$1" 2>/dev/null | tail -n 1; }

if [ "$action" = boot ] || [ "$action" = switch ]; then
  if ! { ln -sfn "$self" "$root/boot/.default.new" && mv -Tf "$root/boot/.default.new" "$root/boot/default"; }; then
    echo "switch-to-configuration: installing the boot entry $root/boot/default failed" >&2
    finish 1
  fi
fi
[ "$action" = boot ] && finish 0
if [ "$action" = dry-activate ]; then
  echo "would activate $self" >&2
  finish 0
fi

# ---- test | switch ----
have_systemd=false
[ -x "$systemctl_bin" ] && have_systemd=true
units="$root/etc/systemd/system" # the ACTIVE system's units (a link into its store path, set by activate)
active_before=()
if $have_systemd; then
  while read -r u _; do
    [ -n "$u" ] && active_before+=("$u")
  done < <(systemctl list-units --state=active,activating --plain --no-legend)
fi

# Units that are active now but gone from the new system: stopped before activation (X-StopOnRemoval).
# Changed ones are restarted after it (unless X-RestartIfChanged=false).
to_stop=()
to_restart=()
for u in "${active_before[@]}"; do
  new="$self/etc/systemd/system/$u"
  # Only units of the system (/etc/systemd/system); transient ones (systemd-run) are not its business.
  [ -e "$units/$u" ] || continue
  if [ ! -e "$new" ]; then
    [ "$(unit_value "$units/$u" X-StopOnRemoval)" = false ] || to_stop+=("$u")
  elif [ "$(readlink -f "$units/$u")" != "$(readlink -f "$new")" ]; then
    [ "$(unit_value "$new" X-RestartIfChanged)" = false ] || to_restart+=("$u")
  fi
done
if [ "${#to_stop[@]}" -gt 0 ]; then
  echo "stopping the following units: ${to_stop[*]}" >&2
  systemctl stop -- "${to_stop[@]}"
fi

res=0
"$self/activate" "$self" 8>&- || res=2

if $have_systemd; then
  systemctl reset-failed
  if [ "${#to_restart[@]}" -gt 0 ]; then
    echo "restarting the following units: ${to_restart[*]}" >&2
    systemctl restart -- "${to_restart[@]}" || true
  fi
  # Like starting multi-user.target: every unit it wants that is not running yet.
  to_start=()
  for w in "$units"/multi-user.target.wants/*; do
    [ -e "$w" ] || continue
    u="${w##*/}"
    state="$(systemctl is-active -- "$u" 2>/dev/null)"
    if [ "$state" != active ] && [ "$state" != activating ]; then to_start+=("$u"); fi
  done
  if [ "${#to_start[@]}" -gt 0 ]; then
    echo "starting the following units: ${to_start[*]}" >&2
    for u in "${to_start[@]}"; do systemctl start -- "$u" || true; done
  fi
  failed=()
  while read -r u _; do
    [ -n "$u" ] && failed+=("$u")
  done < <(systemctl list-units --state=failed --plain --no-legend)
  if [ "${#failed[@]}" -gt 0 ]; then
    list="${failed[*]}"
    echo "warning: the following units failed: ${list// /, }" >&2
    res=4
  fi
fi
finish "$res"
