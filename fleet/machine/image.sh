#!/usr/bin/env bash
# Builds (once) and prints the root file system every simulated host boots: Debian trixie from Debian's
# packages (mmdebstrap), with Nix 2.26, systemd, OpenSSH and the files under fleet/machine/rootfs.
#
#   rootfs="$(fleet/machine/image.sh)"     # the last stdout line is the image directory
#
# Cached outside the repo in ${NIXFLEET_MACHINE_CACHE:-$HOME/.cache/nixfleet/machine}/<recipe hash>/rootfs and
# rebuilt only when this script or a file under rootfs/ changes (older images are removed). Needs root,
# mmdebstrap and a Debian mirror (apt's, or NIXFLEET_DEBIAN_MIRROR). The image is read-only for the
# machines: each boots it with a writable overlay layer of its own (fleet/machine/machine.ts).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'machine-image: %s\n' "$*" >&2; }

# Debian packages. golang-go: hosts build the nixfleet agent with the machine's own Go (buildGoModule of
# nixos-lite); it is not on any session's PATH (a stock NixOS host has no Go).
packages=(systemd systemd-sysv dbus nix-bin openssh-server git ca-certificates iproute2 golang-go
  procps less xz-utils bzip2 diffutils jq shellcheck)

# The stock NixOS toolset by nixpkgs name: the Debian packages whose programs stand in for each
# (nixos-lite's pkgs link them from /usr/share/nixfleet/stock/<name>). "-" = every program of the package.
stock=(
  "bash bash -"
  "coreutils coreutils -"
  "util-linux util-linux,bsdutils,mount -"
  "gnugrep grep -"
  "gnused sed -"
  "findutils findutils -"
  "gzip gzip -"
  "gnutar tar tar"
  "xz xz-utils -"
  "bzip2 bzip2 -"
  "diffutils diffutils -"
  "procps procps -"
  "less less less"
  "which debianutils -"
  "getent libc-bin getent"
  "gawk mawk -"
  "git git -"
  "git-minimal git -"
  "openssh openssh-client -"
  "nix nix-bin -"
  "systemd systemd,systemd-sysv -"
  "jq jq jq"
  "iproute2 iproute2 -"
)

recipe_hash() {
  {
    # By content only: every checkout of the same recipe (a CI clone, a worktree) shares one image.
    sha256sum <"$here/image.sh"
    (cd "$here/rootfs" && find . -type f -print0 | sort -z | xargs -0 sha256sum && find . -type f -perm -u+x | sort)
  } | sha256sum | cut -c1-16
}

cache="${NIXFLEET_MACHINE_CACHE:-$HOME/.cache/nixfleet/machine}"
dir="$cache/$(recipe_hash)"
if [[ -f $dir/rootfs/.complete ]]; then
  printf '%s\n' "$dir/rootfs"
  exit 0
fi
mkdir -p "$cache"
# One build at a time (parallel test files all ask for the image): the others wait, then find it.
exec 9>>"$cache/.lock"
flock 9
if [[ -f $dir/rootfs/.complete ]]; then
  printf '%s\n' "$dir/rootfs"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { log "building the machine image needs root (mmdebstrap, then systemd-nspawn)"; exit 1; }
command -v mmdebstrap >/dev/null || { log "needs mmdebstrap: apt-get install mmdebstrap systemd-container"; exit 1; }

mirror="${NIXFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tmp="$dir.tmp.$$"
mkdir -p "$tmp"
# --one-file-system: never into a mount mmdebstrap may have left (its /proc, /dev).
trap 'rm -rf --one-file-system "$tmp"' EXIT
stock_spec="$(printf '%s\n' "${stock[@]}")"
log "mmdebstrap trixie into $tmp (about a minute)"
started=$SECONDS
# shellcheck disable=SC2016 # the hooks are run by mmdebstrap's shell, with the root file system as $1
mmdebstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook="sync-in $here/rootfs /" \
  --customize-hook='chroot "$1" sh -ec "
    groupadd -r -g 30000 nixbld
    for i in 1 2 3 4 5 6 7 8; do
      useradd -r -u \$((30000 + i)) -g nixbld -G nixbld -d /var/empty -s /usr/sbin/nologin -c \"Nix build user \$i\" nixbld\$i
    done
    mkdir -p /nix/store /nix/var/nix/profiles /nix/var/nix/gcroots /boot /etc/ssh/sshd_config.d /etc/ssh/authorized_keys.d
    chown root:nixbld /nix/store; chmod 1775 /nix/store
    # Debian enables its own ssh.service on port 22; the machines run their system'"'"'s sshd.service.
    systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
    rm -f /etc/ssh/ssh_host_*
    # Nothing in a container needs these, and they fail or wait there.
    systemctl mask systemd-networkd-wait-online.service getty@tty1.service >/dev/null 2>&1 || true
  "' \
  --customize-hook="printf '%s\n' \"$stock_spec\" > \"\$1/tmp/stock.spec\"" \
  --customize-hook='chroot "$1" bash -ec "
    mkdir -p /usr/share/nixfleet/stock
    while read -r name debs only; do
      out=/usr/share/nixfleet/stock/\$name
      : > \"\$out\"
      for deb in \${debs//,/ }; do
        dpkg -L \"\$deb\" | grep -E \"^/(usr/)?s?bin/[^/]+\$\" | while read -r f; do
          p=\${f##*/}
          if [ \"\$only\" != - ] && [[ \",\$only,\" != *\",\$p,\"* ]]; then continue; fi
          [ -e \"\$f\" ] && printf \"%s %s\n\" \"\$p\" \"\$f\" >> \"\$out\"
        done
      done
      sort -u -k1,1 -o \"\$out\" \"\$out\"
    done < /tmp/stock.spec
    # Debian reaches these through alternatives (links in /etc), nixpkgs by these names.
    echo \"sh /usr/bin/bash\" >> /usr/share/nixfleet/stock/bash
    echo \"awk /usr/bin/mawk\" >> /usr/share/nixfleet/stock/gawk
    echo \"which /usr/bin/which.debianutils\" >> /usr/share/nixfleet/stock/which
    rm /tmp/stock.spec
  "' \
  trixie "$tmp/rootfs" "$mirror" >&2
touch "$tmp/rootfs/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
# Older images (a changed recipe): removed unless a machine still runs on one. Its overlay is mounted in
# nspawn's own mount namespace, invisible in /proc/mounts here; power.sh and nspawn name the image on their
# command lines, so those tell.
for old in "$cache"/*/rootfs/.complete; do
  old=${old%/rootfs/.complete}
  [[ $old != "$dir" ]] || continue
  pgrep -f -- "$old/rootfs" >/dev/null || rm -rf --one-file-system "$old"
done
log "built $dir/rootfs in $((SECONDS - started)) s ($(du -sh "$dir/rootfs" | cut -f1))"
printf '%s\n' "$dir/rootfs"
