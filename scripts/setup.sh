#!/usr/bin/env bash
# Everything `npm test` and `npm run demo` need on a fresh machine, idempotent and quick when
# it is all there: Debian packages (as root), npm dependencies, the offline Pulumi toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages: the ssh client and keys, shellcheck, git, jq; the simulated fleet's machines: mmdebstrap
# (their image, which brings Nix 2.26: nothing runs the deployer's own Nix) and systemd-container
# (systemd-nspawn), iptables (partitions).
apt_packages=(openssh-server shellcheck git jq iptables mmdebstrap systemd-container)
missing=()
for tool in sshd:openssh-server shellcheck:shellcheck git:git jq:jq iptables:iptables \
  mmdebstrap:mmdebstrap systemd-nspawn:systemd-container; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "nixfleet needs: sudo apt-get install -y ${apt_packages[*]}" >&2
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# npm dependencies, exactly as locked.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The Pulumi CLI and command provider (built once, cached outside the repo).
bash toolchain/build.sh >/dev/null

# The image every simulated host boots (Debian trixie: systemd, Nix 2.26, sshd; built once, cached outside
# the repo, about a minute).
bash fleet/machine/image.sh >/dev/null
