#!/usr/bin/env bash
# SIMULATION: the power supply of one fleet machine (fleet/machine/machine.ts starts it detached).
#   power.sh IMAGE DISK NAME [nspawn option…]
# Runs the machine's container with systemd-nspawn: IMAGE read-only, DISK (the machine's own writable
# layer) over it, PID 1 the image's boot loader. A reboot inside the machine ends nspawn with exit 133: that
# is a reboot, so the machine is started again (a new boot, a new PID 1). Any other end (poweroff, the
# machine's PID 1 killed: a power cut) ends this script with nspawn's exit status.
set -uo pipefail
image=$1 disk=$2 name=$3
shift 3

# Cgroups of the machine's own. Without a machined, nspawn puts the machine in `payload` under its caller's
# cgroup: every machine would share one `payload/system.slice`, and one machine's systemd removing the cgroup
# of a unit it stopped takes it from another machine starting a unit of the same name ("Failed to spawn
# executor: No such file or directory", result 'resources'). So this script first moves into a cgroup named
# for itself, in each hierarchy nspawn uses (systemd's named v1 one and the unified v2 one), and removes them
# when the machine is off for good.
own=()
while IFS=: read -r _ controllers rel; do
  case $controllers in
    name=systemd) root=/sys/fs/cgroup/systemd ;;
    "") root=/sys/fs/cgroup/unified; [[ -d $root ]] || root=/sys/fs/cgroup ;;
    *) continue ;;
  esac
  dir=${root}${rel%/}/nixfleet-machine-$name-$$
  if ! mkdir -p -- "$dir" || ! printf '%s\n' "$$" >"$dir/cgroup.procs"; then
    printf 'power.sh: cannot move into a cgroup of its own (%s)\n' "$dir" >&2
    exit 1
  fi
  own+=("$dir")
done </proc/self/cgroup
release_cgroups() {
  local dir
  for dir in "${own[@]}"; do
    printf '%s\n' "$$" >"$(dirname -- "$dir")/cgroup.procs" 2>/dev/null
    find "$dir" -depth -type d -exec rmdir -- {} + 2>/dev/null
  done
}
trap release_cgroups EXIT

while :; do
  printf '=== power on %s at %s ===\n' "$name" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  # --register=no --keep-unit: this deployer's PID 1 is not systemd, there is no machined to register with.
  # --link-journal=no: the machine's journal stays in the machine. The network namespace is the deployer's
  # (loopback ports, iptables partitions).
  # The machine's console is this script's output (no terminal), so no getty on it (systemd reads its
  # arguments in a container as a kernel command line).
  systemd-nspawn --quiet --directory="$image" --overlay="$image:$disk:/" --machine="$name" --hostname="$name" \
    --register=no --keep-unit --link-journal=no --console=pipe --kill-signal=SIGRTMIN+3 \
    "$@" -- /usr/lib/nixfleet/boot-loader systemd.mask=console-getty.service </dev/null
  rc=$?
  printf '=== %s stopped: nspawn exit %s at %s ===\n' "$name" "$rc" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  [[ $rc -eq 133 ]] || exit "$rc"
done
