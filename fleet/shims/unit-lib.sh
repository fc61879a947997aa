# shellcheck shell=bash
# SIMULATION: the service manager of a fleet host, shared by the `systemctl` and `systemd-run` shims (sourced,
# not run). There is no systemd: units are the ACTIVE system's unit files ($root/etc/systemd/system, a link
# into its store path set by switch-to-configuration) and transient units written by systemd-run
# ($root/run/systemd/transient). State per unit lives in $root/run/systemd/units/<unit>.{state,result,pid}.
#
# What is modelled (and how it differs from systemd) is in fleet/README.md, "systemd". In short: each unit
# runs under a supervisor in its own session (setsid, stdin /dev/null, output to the host's journal), with
# a CLEAN environment (Environment= lines, specifiers expanded, plus NIXFLEET_SIM_ROOT, the sim's machine
# identity); a session stands in for the unit's cgroup when it is stopped. Type=oneshot starts wait for the
# end (active/inactive per RemainAfterExit, or failed); other types return once started. OnFailure= units
# are started (asynchronously, as systemd queues them) when a unit fails.

root="${NIXFLEET_SIM_ROOT:?the simulated systemd needs NIXFLEET_SIM_ROOT, the sim root of the host}"
shims="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
stock="$(dirname "$shims")/stock" # the fleet's stock NixOS toolset (fleet/stock.ts)
unit_dir="$root/etc/systemd/system"
transient_dir="$root/run/systemd/transient"
state_dir="$root/run/systemd/units"
log_file="$root/log/systemctl.log"
mkdir -p "$state_dir" "$transient_dir" "$root/log"

# "foo" -> "foo.service", as systemctl completes unit names.
unit_name() {
  case "$1" in
    *.service | *.timer | *.target | *.socket | *.path | *.mount | *.scope | *.slice) printf '%s' "$1" ;;
    *) printf '%s.service' "$1" ;;
  esac
}

# The unit's file, or nothing (exit 1) if it is not loaded.
unit_file() {
  if [[ "$1" == */* ]]; then return 1; fi
  local f
  for f in "$unit_dir/$1" "$transient_dir/$1"; do
    if [[ -f "$f" ]]; then printf '%s' "$f"; return 0; fi
  done
  return 1
}

# Every value of KEY= in FILE, one per line, in order.
unit_values() { sed -n "s/^$2=//p" "$1"; }
unit_value() { unit_values "$1" "$2" | tail -n 1; }
is_true() { [[ "$1" == true || "$1" == yes || "$1" == 1 || "$1" == on ]]; }

now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
log_line() { printf '%s %s\n' "$(now)" "$*" >>"$log_file"; }

get_state() { if [[ -f "$state_dir/$1.state" ]]; then cat "$state_dir/$1.state"; else echo inactive; fi; }
set_state() { printf '%s\n' "$2" >"$state_dir/$1.state.new" && mv -f "$state_dir/$1.state.new" "$state_dir/$1.state"; }
get_result() { if [[ -f "$state_dir/$1.result" ]]; then cat "$state_dir/$1.result"; else echo success; fi; }

# False when the unit's supervisor is known to be gone without recording an end (killed from outside).
supervisor_alive() {
  local pid
  pid="$(cat "$state_dir/$1.pid" 2>/dev/null)" || return 0
  kill -0 "$pid" 2>/dev/null || [[ -f "$state_dir/$1.exit" ]]
}

host_name() { if [[ -f "$root/etc/hostname" ]]; then tr -d '\n' <"$root/etc/hostname"; else echo nixos; fi; }

# systemd.unit(5) specifiers of UNIT in TEXT, into REPLY. An unknown specifier fails (exit 1), as systemd
# refuses the setting. Directory specifiers point into the host's sim root, where its /run, /var… are.
expand_specifiers() {
  local unit="$1" rest="$2" out="" c v prefix="${1%.*}"
  prefix="${prefix%%@*}"
  local instance=""
  [[ "${1%.*}" == *@* ]] && instance="${1%.*}" && instance="${instance#*@}"
  while [[ "$rest" == *%* ]]; do
    out+="${rest%%\%*}"
    rest="${rest#*%}"
    c="${rest:0:1}"
    rest="${rest:1}"
    case "$c" in
      %) v="%" ;;
      a) v="x86-64" ;;
      A | B | M | q | w | W) v="" ;;
      b) v="$(tr -d - </proc/sys/kernel/random/boot_id)" ;;
      C) v="$root/var/cache" ;;
      d) v="" ;;
      E) v="$root/etc" ;;
      f) v="/${instance:-$prefix}" ;;
      g) v="root" ;;
      G | U) v="0" ;;
      h) v="/root" ;;
      H | l) v="$(host_name)" ;;
      i | I) v="$instance" ;;
      j | J) v="${prefix##*-}" ;;
      L) v="$root/var/log" ;;
      m) v="$(printf '%s' "$(host_name)" | md5sum | cut -c1-32)" ;;
      n) v="$unit" ;;
      N) v="${unit%.*}" ;;
      o) v="nixos" ;;
      p | P) v="$prefix" ;;
      s) v="/bin/sh" ;;
      S) v="$root/var/lib" ;;
      t) v="$root/run" ;;
      T) v="/tmp" ;;
      u) v="root" ;;
      v) v="$(uname -r)" ;;
      V) v="/var/tmp" ;;
      y) v="$(unit_file "$unit")" ;;
      Y) v="$(dirname "$(unit_file "$unit")")" ;;
      *) return 1 ;;
    esac
    out+="$v"
  done
  REPLY="$out$rest"
}

# systemd's word splitting with quotes and C escapes (what Environment= and ExecStart= values use; NixOS
# writes Environment= values as JSON strings, which this reads the same way). Into the array WORDS.
split_words() {
  local s="$1" i=0 n=${#1} c word="" inword=false quote="" bs=$'\x5c' # a backslash
  WORDS=()
  while ((i < n)); do
    c="${s:i:1}"
    if [[ -n "$quote" ]]; then
      if [[ "$c" == "$quote" ]]; then quote=""
      elif [[ "$c" == "$bs" ]]; then
        i=$((i + 1)); c="${s:i:1}"
        local hex
        case "$c" in
          n) word+=$'\n' ;; t) word+=$'\t' ;; r) word+=$'\r' ;; b) word+=$'\b' ;; f) word+=$'\f' ;;
          u | x)
            # Only hex digits reach printf's format: a value never becomes a format string.
            if [[ "$c" == u ]]; then hex="${s:i+1:4}"; else hex="${s:i+1:2}"; fi
            [[ "$hex" =~ ^[0-9a-fA-F]+$ && ${#hex} -eq $([[ "$c" == u ]] && echo 4 || echo 2) ]] || return 1
            # shellcheck disable=SC2059
            word+="$(printf "\\$c$hex")"
            i=$((i + ${#hex}))
            ;;
          *) word+="$c" ;;
        esac
      else word+="$c"; fi
    elif [[ "$c" == '"' || "$c" == "'" ]]; then quote="$c"; inword=true
    elif [[ "$c" == " " || "$c" == $'\t' ]]; then
      if $inword; then WORDS+=("$word"); word=""; inword=false; fi
    elif [[ "$c" == "$bs" ]]; then i=$((i + 1)); word+="${s:i:1}"; inword=true
    else word+="$c"; inword=true; fi
    i=$((i + 1))
  done
  if $inword; then WORDS+=("$word"); fi
}

# A PATH entry that is a nixos-lite stand-in package (an empty bin/) becomes the same package of the stock
# toolset, so a unit finds exactly the tools its `path` names, as on NixOS.
map_path() {
  local out="" e name
  local IFS=:
  for e in $1; do
    if [[ "$e" =~ ^/nix/store/[a-z0-9]{32}-(.+)-nixos-lite-standin/s?bin$ ]]; then
      name="${BASH_REMATCH[1]}"
      if [[ -d "$stock/pkgs/$name/bin" ]]; then e="$stock/pkgs/$name/bin"; fi
    fi
    out+="${out:+:}$e"
  done
  printf '%s' "$out"
}

# The environment of UNIT's processes, into the array ENVS ("NAME=VALUE").
unit_environment() {
  local unit="$1" file="$2" line w have_path=false
  # The sim's machine identity, and where this host's /run and system profile live (on NixOS: `/`, the
  # default); the sshd sessions get the same AUTO_UPGRADE_ROOT. JOURNAL_STREAM: stdout/stderr go to the
  # journal, as systemd tells its services.
  # NIX_CONFIG: no binary cache on the simulated hosts (fleet/sshd.ts, SIM_NIX_CONFIG).
  ENVS=("NIXFLEET_SIM_ROOT=$root" "AUTO_UPGRADE_ROOT=$root" "JOURNAL_STREAM=0:0" "NIX_CONFIG=substituters =")
  while IFS= read -r line; do
    if ! expand_specifiers "$unit" "$line"; then
      echo "$unit: Failed to resolve unit specifiers in Environment=$line, ignoring" | "$shims/logger" -t systemd
      continue
    fi
    split_words "$REPLY"
    for w in "${WORDS[@]}"; do
      [[ "$w" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || continue
      if [[ "$w" == PATH=* ]]; then w="PATH=$(map_path "${w#PATH=}")"; have_path=true; fi
      ENVS+=("$w")
    done
  done < <(unit_values "$file" Environment)
  ENVS+=("INVOCATION_ID=$(tr -d - </proc/sys/kernel/random/uuid)")
  if ! $have_path; then
    if [[ "$file" == "$transient_dir"/* ]]; then
      # systemd's own default PATH: on NixOS those directories hold nothing a script can use.
      ENVS+=("PATH=$stock/nothing")
    else
      # nixos/modules/system/boot/systemd.nix: every service's PATH holds its `path` plus these.
      ENVS+=("PATH=$stock/pkgs/coreutils/bin:$stock/pkgs/findutils/bin:$stock/pkgs/gnugrep/bin:$stock/pkgs/gnused/bin:$stock/pkgs/systemd/bin")
    fi
  fi
}

# Every process descending from PID (by parent pid), deepest last.
descendants() {
  local -A kids=()
  local stat pid ppid rest
  for stat in /proc/[0-9]*/stat; do
    read -r pid rest <"$stat" 2>/dev/null || continue
    rest="${rest##*) }"
    ppid="$(cut -d' ' -f2 <<<"$rest")"
    kids[$ppid]+=" $pid"
  done
  local queue=("$1") p c
  while ((${#queue[@]} > 0)); do
    p="${queue[0]}"
    queue=("${queue[@]:1}")
    for c in ${kids[$p]:-}; do
      printf '%s\n' "$c"
      queue+=("$c")
    done
  done
}

# Every process of session SID (a setsid'd supervisor's session stands in for the unit's cgroup).
session_members() {
  local stat pid rest sid
  for stat in /proc/[0-9]*/stat; do
    read -r pid rest <"$stat" 2>/dev/null || continue
    rest="${rest##*) }"
    sid="$(cut -d' ' -f4 <<<"$rest")"
    [[ "$sid" == "$1" ]] && printf '%s\n' "$pid"
  done
}

# SIGTERM the given pids, SIGKILL what is left after up to 5 s (systemd waits TimeoutStopSec=90s).
terminate() {
  (($# > 0)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i alive
  for ((i = 0; i < 50; i++)); do
    alive=false
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=true; done
    $alive || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

# ---- the host's sshd (sshd.service: the fleet's OpenSSH server, see toplevel.nix) ----
sshd_config="$root/etc/ssh/sshd_config"
sshd_pid() {
  local pid
  pid="$(cat "$root/run/sshd.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- " -f $sshd_config " || return 1
  printf '%s' "$pid"
}
sshd_start() {
  sshd_pid >/dev/null && return 0
  # Daemonizes and writes its PidFile ($root/run/sshd.pid), as `sshd` without -D does.
  /usr/sbin/sshd -f "$sshd_config" -E "$root/log/sshd.log" </dev/null
}
# Stops the listener AND kills its sessions (every process under it), as a host losing SSH would.
sshd_stop() {
  local pid
  pid="$(sshd_pid)" || return 0
  local kids
  mapfile -t kids < <(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  ((${#kids[@]} == 0)) || kill -KILL "${kids[@]}" 2>/dev/null || true
  terminate "$pid"
}
