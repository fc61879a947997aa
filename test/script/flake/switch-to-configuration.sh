#!/bin/bash
# SIMULATED switch-to-configuration (script tests; not NixOS), run on a booted fleet machine as root. It uses
# the machine's REAL paths and REAL systemd (test/script/harness.ts):
#   test|switch  the "activation": /run/current-system -> this system FIRST (as NixOS' activate script does,
#                so a failed activation leaves the host half on the new system); the system's units
#                (units/<name>, real unit files) replace the previous system's in /run/systemd/system
#                (units the new system lacks are stopped and removed), then `systemctl daemon-reload`.
#                Faults (from the configuration, file `faults`):
#                failActivation -> prints the configured message, exit 2; failUnits -> those units are
#                started and end failed (their command fails), "warning: the following units failed", exit 4;
#                lateFailUnits -> those units are started without waiting for their result and end failed while
#                s-t-c exits 0 (a service that crashes a moment after it started; s-t-c returns once systemd
#                has run them, so the caller's health gate sees them failed); breakRemote PATH -> the git remote at PATH
#                becomes unreachable (moved to PATH.away) until a system without the fault is activated (a
#                switch that breaks networking, undone by re-activating the old).
#   boot|switch  the boot entry /boot/default -> this system (failBoot: "Failed to install bootloader",
#                exit 1, entry unchanged). The profile is never touched (callers set it with nix-env, as on
#                NixOS).
# A simulated fault of the machine itself: while /run/nixfleet-script/stc-broken exists, every call fails
# before doing anything ("cannot run", exit 1), as a system whose switch-to-configuration is broken.
# Every call logs "<action> <self> <exit>" to the journal (tag switch-to-configuration).
set -u
self=$(cd "$(dirname "$0")/.." && pwd -P)
action=${1:-}
sim=/run/nixfleet-script
rc=0
finish() { logger -t switch-to-configuration -- "$action $self $1"; exit "$1"; }
fault() { sed -n "s/^$1 //p" "$self/faults"; }
case $action in
  test | switch | boot) ;;
  *) echo "Usage: $0 [switch|boot|test]" >&2; exit 1 ;;
esac
mkdir -p "$sim" /boot
if [ -e "$sim/stc-broken" ]; then
  echo "switch-to-configuration: cannot run ($sim/stc-broken)" >&2
  finish 1
fi
if [ "$action" != test ] && [ "$(fault failBoot)" = 1 ]; then
  echo "Failed to install bootloader" >&2
  finish 1
fi
if [ "$action" != test ]; then
  if ! { ln -sfn "$self" /boot/.new && mv -Tf /boot/.new /boot/default; }; then finish 1; fi
fi
[ "$action" != boot ] || finish 0
echo "activating the configuration..."
ln -sfn "$self" /run/.cs && mv -Tf /run/.cs /run/current-system
broken=$(fault breakRemote)
if [ -n "$broken" ]; then
  [ ! -e "$broken" ] || mv -T "$broken" "$broken.away"
  printf '%s\n' "$broken" >"$sim/remote-broken"
elif [ -f "$sim/remote-broken" ]; then
  broken=$(cat "$sim/remote-broken")
  [ ! -e "$broken.away" ] || mv -T "$broken.away" "$broken"
  rm -f "$sim/remote-broken"
fi
# The previous system's units the new one lacks are stopped and removed; the new system's are linked in.
touch "$sim/units"
while IFS= read -r u; do
  if [ -z "$u" ] || [ -e "$self/units/$u" ]; then continue; fi
  systemctl stop -- "$u" 2>/dev/null
  rm -f "/run/systemd/system/$u"
done <"$sim/units"
mkdir -p /run/systemd/system
: >"$sim/units.new"
for f in "$self/units"/*; do
  [ -e "$f" ] || continue
  ln -sfn "$f" "/run/systemd/system/${f##*/}"
  printf '%s\n' "${f##*/}" >>"$sim/units.new"
done
mv -f "$sim/units.new" "$sim/units"
systemctl daemon-reload
if [ "$(fault failActivation)" = 1 ]; then
  cat "$self/activation-message" >&2
  echo "Activation script snippet 'broken' failed (1)" >&2
  rc=2
fi
# Late failures: started without waiting for their result (this call does not notice them and exits 0);
# it returns once systemd has run them, so that they are failed when the caller looks (bounded: 10 s).
for u in $(fault lateFailUnits); do
  systemctl start --no-block -- "$u"
  for _ in $(seq 100); do
    case $(systemctl show -p ActiveState --value -- "$u") in activating | reloading | deactivating) sleep 0.1 ;; *) break ;; esac
  done
done
failed=""
for u in $(fault failUnits); do systemctl start -- "$u" 2>/dev/null || failed="$failed $u"; done
if [ -n "$failed" ]; then
  echo "warning: the following units failed:$failed" >&2
  [ "$rc" != 0 ] || rc=4
fi
finish "$rc"
