# shellcheck shell=bash
# shellcheck disable=SC2154 # `self` (this system's store path) is set by the line toplevel.nix puts before this file.
# ============================================================================
#  SIMULATED switch-to-configuration (nixos-lite), modelled on nixpkgs
#  nixos/modules/system/activation/switch-to-configuration.pl. On a fleet
#  machine (fleet/machine: /etc/nixfleet-machine exists) it drives the
#  machine's REAL systemd:
#    boot|switch  the boot entry (/boot/default) -> this system (the machine's
#                 boot loader boots it; the profile is never touched: callers
#                 set it with nix-env, as on NixOS)
#    test|switch  stop active units this system no longer has (unless
#                 X-StopOnRemoval=false), run $self/activate (failure: exit 2;
#                 it links the units into /etc/systemd/system and moves
#                 /run/current-system), `systemctl daemon-reload`, restart
#                 changed active units (unless X-RestartIfChanged=false), start
#                 the units multi-user.target and timers.target want that are
#                 not running; a failed unit: "warning: the following units
#                 failed: …", exit 4.
#  Elsewhere (no marker: the module tests' Nix machine, fleet/machine/nix.ts)
#  it only moves links under
#  $NIXFLEET_SIM_ROOT and manages no unit; without it, it refuses.
#  Every run logs "<action> <self>[ units-failed| FAILED exit=N]" to the
#  journal (tag switch-to-configuration) on a machine, else to
#  $NIXFLEET_SIM_ROOT/log/switch.log.
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
if [ -e /etc/nixfleet-machine ] && [ -z "${NIXFLEET_SIM_ROOT:-}" ]; then
  machine=true
  root=""
elif [ -n "${NIXFLEET_SIM_ROOT:-}" ]; then
  machine=false
  root="$NIXFLEET_SIM_ROOT"
else
  echo "switch-to-configuration: this is a SIMULATED system (nixos-lite): it runs on a fleet machine (fleet/machine), or with NIXFLEET_SIM_ROOT set to a directory standing for the host's root (links only); refusing to run" >&2
  exit 1
fi
# The real script calls its tools by store path; the machine's own (Debian's) stand in for them.
PATH=/usr/bin:/bin:/usr/sbin:/sbin
export PATH
mkdir -p "$root/run/nixos" "$root/boot"
# One switch at a time per host, as switch-to-configuration.pl does (flock on
# /run/nixos/switch-to-configuration.lock, waiting). Children never inherit the lock (fd 8): a service
# started here must not hold it.
exec 8>>"$root/run/nixos/switch-to-configuration.lock"
flock 8
systemctl() { command systemctl "$@" 8>&-; }

finish() {
  local rc="$1" note=""
  if [ "$rc" -eq 4 ]; then note=" units-failed"; elif [ "$rc" -ne 0 ]; then note=" FAILED exit=$rc"; fi
  if $machine; then
    logger -t switch-to-configuration -- "$action $self$note" 8>&- || true
  else
    mkdir -p "$root/log"
    printf '%s %s %s%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$action" "$self" "$note" >>"$root/log/switch.log"
  fi
  exit "$rc"
}

# A unit file's value of KEY (last one wins), or nothing.
unit_value() { sed -n "s/^$2=//p" "$1" 2>/dev/null | tail -n 1; }

if [ "$action" = boot ] || [ "$action" = switch ]; then
  # boot.loader.extraInstallCommands (the boot loader's install script, as NixOS runs it).
  if [ -x "$self/bin/install-boot-loader-hook" ] && ! "$self/bin/install-boot-loader-hook" 8>&-; then
    echo "switch-to-configuration: installing the boot loader failed (boot.loader.extraInstallCommands)" >&2
    finish 1
  fi
  if ! { ln -sfn "$self" "$root/boot/.default.new" && mv -Tf "$root/boot/.default.new" "$root/boot/default"; }; then
    echo "switch-to-configuration: installing the boot entry $root/boot/default failed" >&2
    finish 1
  fi
  sync "$root/boot" 2>/dev/null || true
fi
[ "$action" = boot ] && finish 0
if [ "$action" = dry-activate ]; then
  echo "would activate $self" >&2
  finish 0
fi

# ---- test | switch ----
if ! $machine; then
  res=0
  "$self/activate" "$self" 8>&- || res=2
  finish "$res"
fi

units=/etc/systemd/system # the ACTIVE system's units (a link into its store path, set by activate)
active_before=()
while read -r u _; do
  [ -n "$u" ] && active_before+=("$u")
done < <(systemctl list-units --state=active,activating,reloading --plain --no-legend --full)

# Units that are active now but gone from the new system: stopped before activation (X-StopOnRemoval).
# Changed ones are restarted after it (unless X-RestartIfChanged=false).
to_stop=()
to_restart=()
for u in "${active_before[@]}"; do
  new="$self/etc/systemd/system/$u"
  # Only units of the system (/etc/systemd/system); the machine's own and transient ones are not its business.
  if [ ! -L "$units" ] || [ ! -e "$units/$u" ]; then continue; fi
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

systemctl daemon-reload || res=2
systemctl reset-failed
if [ "${#to_restart[@]}" -gt 0 ]; then
  echo "restarting the following units: ${to_restart[*]}" >&2
  systemctl restart -- "${to_restart[@]}" || true
fi
# Like starting the targets again: every unit multi-user.target or timers.target wants that is not running.
to_start=()
for w in "$units"/multi-user.target.wants/* "$units"/timers.target.wants/*; do
  [ -e "$w" ] || continue
  u="${w##*/}"
  state="$(systemctl is-active -- "$u" 2>/dev/null)"
  if [ "$state" != active ] && [ "$state" != activating ] && [ "$state" != reloading ]; then to_start+=("$u"); fi
done
if [ "${#to_start[@]}" -gt 0 ]; then
  echo "starting the following units: ${to_start[*]}" >&2
  for u in "${to_start[@]}"; do systemctl start -- "$u" || true; done
fi
failed=()
while read -r u _; do
  [ -n "$u" ] && failed+=("$u")
done < <(systemctl list-units --state=failed --plain --no-legend --full)
if [ "${#failed[@]}" -gt 0 ]; then
  list="${failed[*]}"
  echo "warning: the following units failed: ${list// /, }" >&2
  res=4
fi
finish "$res"
