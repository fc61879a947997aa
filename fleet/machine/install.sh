#!/usr/bin/env bash
# SIMULATION: installs a fleet machine, as nixos-install does, inside its not yet booted root (fleet.ts runs
# it with systemd-nspawn, like nixos-install's chroot). Runs as the machine's root, with the machine's own
# tools (Nix 2.26, git).
#   install.sh HOST OWNER CHECKOUT ORIGIN
# OWNER (root or a user, created here with a 0700 home) clones ORIGIN (the forge, bound into the machine)
# into CHECKOUT; the host's configuration is built, becomes generation 1 of the system profile and the boot
# entry (`switch-to-configuration boot`). The first boot activates it (the boot loader).
set -euo pipefail
host=$1 owner=$2 checkout=$3 origin=$4

as_owner() { if [[ $owner == root ]]; then "$@"; else runuser -u "$owner" -- "$@"; fi; }

if [[ $owner != root ]] && ! id -u "$owner" >/dev/null 2>&1; then
  useradd --create-home --user-group --shell /bin/bash "$owner"
  chmod 0700 "/home/$owner"
fi
if [[ ! -d $checkout/.git ]]; then
  parent=$(dirname "$checkout")
  mkdir -p "$parent"
  [[ $owner == root ]] || chown "$owner:" "$parent"
  # origin.git belongs to the deployer's root: git refuses another user's repository unless it is trusted,
  # and the forge it stands for is not a local directory on a real host. Only this clone trusts it.
  safe="safe.directory=$origin"
  as_owner git clone -q --no-local -u "git -c '$safe' upload-pack" --branch main "$origin" "$checkout"
  as_owner git -C "$checkout" config remote.origin.uploadpack "git -c '$safe' upload-pack"
  as_owner git -C "$checkout" config remote.origin.receivepack "git -c '$safe' receive-pack"
  as_owner git -C "$checkout" config user.name "$owner@$host"
  as_owner git -C "$checkout" config user.email "$owner@$host.fleet.invalid"
fi

if [[ ! -e /nix/var/nix/profiles/system ]]; then
  # Nix >= 2.20 reads the flake with libgit2, which refuses a checkout root does not own unless the
  # building user's ~/.gitconfig trusts it: the installer uses a HOME of its own for that (nothing global).
  home=$(mktemp -d)
  trap 'rm -rf "$home"' EXIT
  [[ $owner == root ]] || git config --file "$home/.gitconfig" --add safe.directory "$checkout"
  HOME=$home nix --extra-experimental-features 'nix-command flakes' build -o "$home/result" \
    "$checkout#nixosConfigurations.\"$host\".config.system.build.toplevel"
  system=$(readlink -f "$home/result")
  nix-env -p /nix/var/nix/profiles/system --set "$system"
  "$system/bin/switch-to-configuration" boot
  echo "installed $system"
fi
