#!/bin/bash
# SIMULATED switch-to-configuration (script tests; not NixOS). Models what the agent depends on, under
# $FAKE_ROOT (the test host's root; the fake systemd-run passes it like a machine identity):
#   test|switch  runs the "activation": $FAKE_ROOT/run/current-system -> this system FIRST (as NixOS'
#                activate script does, so a failed activation leaves the host half on the new system),
#                the system's units become the active ones; faults (from the configuration):
#                failActivation -> prints the configured message, exit 2; failUnits -> those units end
#                failed, "warning: the following units failed", exit 4; lateFailUnits -> those units fail
#                after s-t-c returned 0 (a service that crashes a moment after it started); breakRemote PATH
#                -> the git remote at PATH becomes unreachable (moved to PATH.away) until a system without
#                the fault is activated (a switch that breaks networking, undone by re-activating the old).
#   boot|switch  the boot entry $FAKE_ROOT/boot/default -> this system (failBoot: "Failed to install
#                bootloader", exit 1, entry unchanged). The profile is never touched
#                (callers set it with nix-env, as on NixOS).
# Every call appends "<action> <self> <exit>" to $FAKE_ROOT/switch.log.
set -u
self=$(cd "$(dirname "$0")/.." && pwd -P)
root=${FAKE_ROOT:?switch-to-configuration (simulated): FAKE_ROOT is not set; refusing to run}
action=${1:-}
rc=0
finish() { echo "$action $self $1" >>"$root/switch.log"; exit "$1"; }
fault() { sed -n "s/^$1 //p" "$self/faults"; }
case $action in
  test | switch | boot) ;;
  *) echo "Usage: $0 [switch|boot|test]" >&2; exit 1 ;;
esac
mkdir -p "$root/run" "$root/boot" "$root/systemd/state"
if [ "$action" != test ] && [ "$(fault failBoot)" = 1 ]; then
  echo "Failed to install bootloader" >&2
  finish 1
fi
if [ "$action" != test ]; then
  if ! { ln -sfn "$self" "$root/boot/.new" && mv -Tf "$root/boot/.new" "$root/boot/default"; }; then finish 1; fi
fi
[ "$action" != boot ] || finish 0
echo "activating the configuration..."
ln -sfn "$self" "$root/run/.cs" && mv -Tf "$root/run/.cs" "$root/run/current-system"
broken=$(fault breakRemote)
if [ -n "$broken" ]; then
  [ ! -e "$broken" ] || mv -T "$broken" "$broken.away"
  printf '%s\n' "$broken" >"$root/remote-broken"
elif [ -f "$root/remote-broken" ]; then
  broken=$(cat "$root/remote-broken")
  [ ! -e "$broken.away" ] || mv -T "$broken.away" "$broken"
  rm -f "$root/remote-broken"
fi
ln -sfn "$self/units" "$root/systemd/.u" && mv -Tf "$root/systemd/.u" "$root/systemd/units"
# Units the new system no longer has are stopped (forgotten); its failed ones stay failed.
for f in "$root/systemd/state"/*; do
  [ -e "$f" ] || continue
  u=${f##*/}
  [ -e "$self/units/$u" ] || [ -e "$root/systemd/static/$u" ] || rm -f "$f"
done
if [ "$(fault failActivation)" = 1 ]; then
  cat "$self/activation-message" >&2
  echo "Activation script snippet 'broken' failed (1)" >&2
  rc=2
fi
for u in $(fault lateFailUnits); do echo failed >"$root/systemd/state/$u"; done
failed=""
for u in $(fault failUnits); do echo failed >"$root/systemd/state/$u"; failed="$failed $u"; done
if [ -n "$failed" ]; then
  echo "warning: the following units failed:$failed" >&2
  [ "$rc" != 0 ] || rc=4
fi
finish "$rc"
