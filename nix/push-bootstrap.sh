#!/usr/bin/env bash
# nixfleet push bootstrap (docs/rollout.md, section 5). Run as `bash -c <this text> nixfleet-push`
# with the bundle on stdin: unpacks it into a `mktemp -d` stage, checks every path and sha256, then
# execs the staged auto-upgrade.sh `push <stage>` (which removes the stage). Any problem: exit 1 with
# a one-line reason, nothing written outside the stage. Kept small: its text is stored per host.
set -euo pipefail
stage=""
die() {
  printf 'nixfleet bootstrap: %s\n' "$1" >&2
  [[ -z $stage ]] || rm -rf -- "$stage"
  exit 1
}
readonly SCRIPT=modules/services/system/auto-upgrade.sh
bundle=$(cat && printf x) || die "cannot read the bundle from stdin"
bundle=${bundle%x}
sum=$(printf '%s' "$bundle" | sha256sum) || die "sha256sum failed"
stage=$(mktemp -d -t nixfleet-stage.XXXXXX) || die "mktemp -d failed"
n=0
{
  IFS= read -r line || true
  [[ $line == "nixfleet-bundle 1" ]] || die "stdin is not a nixfleet bundle (first line '${line:0:40}')"
  while IFS= read -r line || die "the bundle ends without its 'end' line"; do
    [[ $line != end ]] || break
    re='^file (0644|0755) ([0-9a-f]{64}) (text|gzip-base64) ([0-9]{1,6}) ([A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*)$'
    [[ $line =~ $re ]] || die "bad file header: '${line:0:120}'"
    mode=${BASH_REMATCH[1]} sha=${BASH_REMATCH[2]} enc=${BASH_REMATCH[3]} count=${BASH_REMATCH[4]} rel=${BASH_REMATCH[5]}
    [[ ${#rel} -le 200 && ! $rel =~ (^|/)\.\.?(/|$) ]] || die "file path '${rel:0:120}' is not allowed (relative, no '.' or '..' segments, at most 200 characters)"
    ((n > 0)) || [[ $rel == "$SCRIPT" ]] || die "the first file must be $SCRIPT, not $rel"
    [[ ! -e $stage/$rel ]] || die "$rel appears twice"
    mkdir -p -- "$stage/$(dirname -- "$rel")"
    body=""
    for ((i = 0; i < 10#$count; i++)); do
      IFS= read -r l || die "the bundle ends inside $rel"
      body+=$l$'\n'
    done
    if [[ $enc == text ]]; then
      printf '%s' "$body" >"$stage/$rel"
    else
      printf '%s' "$body" | base64 -d | gzip -dc >"$stage/$rel" 2>/dev/null || die "$rel: bad gzip-base64 data"
    fi
    got=$(sha256sum <"$stage/$rel")
    [[ ${got%% *} == "$sha" ]] || die "$rel: sha256 mismatch (bundle says $sha, content is ${got%% *})"
    chmod "$mode" -- "$stage/$rel"
    n=$((n + 1))
  done
  rest=$(cat)
  [[ -z $rest ]] || die "data after the bundle's 'end' line"
} <<<"$bundle"
((n > 0)) || die "the bundle holds no files"
retry=${AUTO_UPGRADE_RETRY:-0}
[[ $retry =~ ^[0-9]{1,6}$ ]] || die "AUTO_UPGRADE_RETRY must be a number, got '${retry:0:20}'"
token=${sum:0:16}
((retry == 0)) || token+=-r$retry
NIXFLEET_ROLLOUT=$token exec bash "$stage/$SCRIPT" push "$stage"
