# shellcheck shell=bash
# PLACEHOLDER bootstrap for components/engine-check only (NOT nix/push-bootstrap.sh): unpacks the bundle into the
# checkout, prints the deploy result line. Fault knob: $AUTO_UPGRADE_STATE_DIR/fail-deploy.
set -eu
b=$(mktemp); cat > "$b"
t=$(sha256sum < "$b" | cut -c1-16)${AUTO_UPGRADE_RETRY:+-r$AUTO_UPGRADE_RETRY}
st=$AUTO_UPGRADE_STATE_DIR; mkdir -p "$st"
exec 3< "$b"
read -r magic <&3; [ "$magic" = "nixfleet-bundle 1" ] || { echo "bad magic" >&2; exit 2; }
while read -r kind mode sum enc n rel <&3; do
  [ "$kind" = end ] && break
  f="$AUTO_UPGRADE_CONFIG_PATH/$rel"; mkdir -p "$(dirname "$f")"
  : > "$f.tmp"; i=0
  while [ "$i" -lt "$n" ]; do IFS= read -r line <&3; printf '%s\n' "$line" >> "$f.tmp"; i=$((i+1)); done
  if [ "$enc" = gzip-base64 ]; then base64 -d < "$f.tmp" | gunzip > "$f"; rm "$f.tmp"; else mv "$f.tmp" "$f"; fi
  [ "$(sha256sum < "$f" | cut -c1-64)" = "$sum" ] || { echo "sha mismatch $rel" >&2; exit 2; }
  chmod "$mode" "$f"
done
echo "deploy $t" >> "$st/experiment.log"
[ ! -e "$st/fail-deploy" ] || { echo "deploy failed by knob" >&2; exit 1; }
printf '{"rollout":"%s","validatedPath":"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x","action":"armed","needsReboot":false}\n' "$t"
