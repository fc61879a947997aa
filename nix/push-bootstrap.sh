#!/usr/bin/env bash
# nixfleet push bootstrap (docs/rollout.md, section 5). Run as `bash -c <this text> nixfleet-push`
# with the bundle on stdin: unpacks it into a `mktemp -d` stage, checks every path and sha256, builds the
# agent from the staged source with the host's own Nix and nixpkgs (buildGoModule, via the checkout's
# nixosConfigurations.<host>.pkgs), then execs it: `nixfleet-agent push <stage>` (which removes the
# stage). Any problem: exit 1 with a one-line reason, nothing written outside the stage and the store.
# Kept small: its text is stored per host.
set -euo pipefail
stage="" home=""
die() {
  printf 'nixfleet bootstrap: %s\n' "$1" >&2
  [[ -z $stage ]] || rm -rf -- "$stage"
  [[ -z $home ]] || rm -rf -- "$home"
  exit 1
}
# A gone SSH session (SIGHUP) or a stop during the build leaves no stage behind (the agent removes it later).
trap 'die "stopped by a signal"' HUP INT TERM
readonly AGENT=modules/services/system/agent
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
[[ -f $stage/$AGENT/package.nix ]] || die "the bundle has no $AGENT/package.nix (the agent's source)"
retry=${AUTO_UPGRADE_RETRY:-0}
[[ $retry =~ ^[0-9]{1,6}$ ]] || die "AUTO_UPGRADE_RETRY must be a number, got '${retry:0:20}'"
token=${sum:0:16}
((retry == 0)) || token+=-r$retry
# The agent is built with the nixpkgs the host's configuration uses (its flake's own inputs), so the timer's
# unit runs the same store path. The values reach Nix as --argstr data; '#' and '?' would change the flake
# reference. Nix's git reads the user's checkout read-only (no locks, safe.directory for root).
cfg=${AUTO_UPGRADE_CONFIG_PATH:-} host=${AUTO_UPGRADE_FLAKE_HOST:-}
[[ $cfg == /* && $cfg != *[#?[:cntrl:]]* && -n $host ]] || die "AUTO_UPGRADE_CONFIG_PATH (absolute, no '#', '?' or control characters) and AUTO_UPGRADE_FLAKE_HOST are required to build the agent"
# Nix >= 2.20 reads a checkout another user owns only if the building user's ~/.gitconfig trusts it: the build
# gets a HOME of its own (a temp dir: its .gitconfig includes the real one and trusts this checkout), so
# root's own config is never changed. The XDG dirs stay the real HOME's (Nix's config and cache).
real=${HOME:-/root} envs=()
if [[ $(stat -c %u -- "$cfg" 2>/dev/null) != "$(id -u)" ]]; then
  home=$(mktemp -d -t nixfleet-home.XXXXXX) || die "mktemp -d failed"
  # Paths as git config values: double-quoted, '\' and '"' escaped (as the agent's gitConfigValue).
  quote() { local v=${1//\\/\\\\}; printf '"%s"' "${v//\"/\\\"}"; }
  printf '[include]\n\tpath = %s\n[safe]\n\tdirectory = %s\n' "$(quote "$real/.gitconfig")" "$(quote "$cfg")" >"$home/.gitconfig" || die "cannot write $home/.gitconfig"
  envs=("HOME=$home" "XDG_CONFIG_HOME=${XDG_CONFIG_HOME:-$real/.config}" "XDG_CACHE_HOME=${XDG_CACHE_HOME:-$real/.cache}")
fi
# shellcheck disable=SC2016 # a Nix expression: its ${…} are Nix's
expr='{ cfg, host, src }: import (/. + src + "/package.nix") { inherit ((builtins.getFlake ("git+file://" + cfg)).nixosConfigurations.${host}.pkgs) buildGoModule; }'
started=$SECONDS
if ! out=$(env "${envs[@]}" GIT_OPTIONAL_LOCKS=0 GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="$cfg" timeout 900 \
  nix --extra-experimental-features 'nix-command flakes' build --impure --out-link "$stage/.agent" \
  --argstr cfg "$cfg" --argstr host "$host" --argstr src "$stage/$AGENT" --expr "$expr" 2>&1); then
  printf '%s\n' "$out" | tail -n 5 | cut -c 1-400 >&2
  die "building the agent ($AGENT) failed"
fi
[[ -z $home ]] || rm -rf -- "$home"
printf 'nixfleet bootstrap: agent %s (%s s)\n' "$(readlink -- "$stage/.agent")" "$((SECONDS - started))" >&2
trap - HUP INT TERM
NIXFLEET_ROLLOUT=$token exec "$stage/.agent/bin/nixfleet-agent" push "$stage"
