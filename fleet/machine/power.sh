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
