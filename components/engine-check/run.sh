#!/usr/bin/env bash
# Prepares a throw-away copy of HEAD with the placeholder bootstrap and a fake `confirm`, then runs
# check.ts there. HOSTS=3 (default): the scripted failure/heal/wave scenario; HOSTS=N: state size.
set -euo pipefail
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d /tmp/nixfleet-engine-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The committed tree (HEAD), so what is checked is exactly what is committed.
git -C "$repo" archive HEAD | tar -x -C "$work"
ln -s "$(readlink -f "$repo/node_modules")" "$work/node_modules"
cp "$repo/components/engine-check/placeholder-bootstrap.sh" "$work/nix/push-bootstrap.sh"
script="$work/nix/modules/services/system/auto-upgrade.sh"
{
  head -n 1 "$script"
  cat <<'FAKE'
# ENGINE CHECK ONLY: fake `confirm` (knob: $AUTO_UPGRADE_STATE_DIR/fail-confirm)
if [ "${1:-}" = confirm ]; then
  echo "confirm $2" >> "$AUTO_UPGRADE_STATE_DIR/experiment.log"
  if [ -e "$AUTO_UPGRADE_STATE_DIR/fail-confirm" ]; then echo "rolled back: no confirmation (knob)" >&2; exit 1; fi
  printf '{"result":"success","rollout":"%s","goldenPath":"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x","needsReboot":false,"warnings":[]}\n' "$2"; exit 0
fi
FAKE
  tail -n +2 "$script"
} > "$work/script.tmp"
mv "$work/script.tmp" "$script"

CHECK_ROOT="$work" "$work/node_modules/.bin/tsx" "$work/components/engine-check/check.ts"
