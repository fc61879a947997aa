# Shared by the fake executables: appends one JSON line {cmd, argv, user} to $FAKE_CALLS.
# argv goes through NUL-separated raw input so no argument is ever parsed as a jq option; the END
# sentinel is there because jq 1.6 drops a trailing NUL (and with it an empty last field).
record() {
  local cmd=$1
  shift
  local user=${FAKE_AS_USER:-}
  [[ -n $user ]] || user=$(whoami)
  { printf '%s\0' "$@"; printf 'END'; } | jq -Rsc --arg cmd "$cmd" --arg user "$user" \
    '{cmd: $cmd, argv: (split("\u0000") | .[:-1]), user: $user}' >>"$FAKE_CALLS"
}

# Is $1 one of the space-separated words in $2?
listed() {
  local w
  for w in $2; do [[ $w == "$1" ]] && return 0; done
  return 1
}
