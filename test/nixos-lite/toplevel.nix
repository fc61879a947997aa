# ============================================================================
#  SIMULATION — nixos-lite toplevel. This is NOT NixOS.
#
#  Builds `config.system.build.toplevel` from the options base.nix declares: a
#  REAL derivation whose `bin/switch-to-configuration` only SIMULATES
#  activation inside $NIXFLEET_SIM_ROOT. Layout and interface: ./README.md.
# ============================================================================
{ config, lib, nixosLite, ... }:
let
  # Functions never reach JSON; derivations become their store path (with context).
  jsonable = v:
    if builtins.isFunction v then null
    else if lib.isDerivation v then "${v}"
    else if builtins.isAttrs v then
      lib.filterAttrs (_: x: !(builtins.isFunction x)) (builtins.mapAttrs (_: jsonable) v)
    else if builtins.isList v then map jsonable (builtins.filter (x: !(builtins.isFunction x)) v)
    else v;

  units = jsonable { services = config.systemd.services; timers = config.systemd.timers; };

  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);

  # Like NixOS' toplevel: fail on assertions; unlike (lazy) NixOS, also force and
  # type-check EVERY defined option so a type error anywhere fails the build.
  deepForce = v:
    if lib.isDerivation v || builtins.isFunction v then true
    else if builtins.isAttrs v then builtins.all deepForce (builtins.attrValues v)
    else if builtins.isList v then builtins.all deepForce v
    else builtins.seq v true;
  allTypeChecked = builtins.all
    (o: deepForce o.value)
    (builtins.filter (o: !(lib.hasPrefix "system.build" (lib.showOption o.loc))) nixosLite.evaluation.definedOptions);

  switchBody = ''
    # ====================================================================
    #  SIMULATED activation (nixos-lite). It never touches the real system:
    #  everything happens under $NIXFLEET_SIM_ROOT, the simulated host's root.
    # ====================================================================
    set -eu
    action="''${1:-}"
    case "$action" in
      switch|boot|test|dry-activate) ;;
      *) echo "usage: $0 {switch|boot|test|dry-activate}" >&2; exit 2 ;;
    esac
    if [ -z "''${NIXFLEET_SIM_ROOT:-}" ]; then
      echo "switch-to-configuration: this is a SIMULATED system (nixos-lite): set NIXFLEET_SIM_ROOT to the simulated host's root directory; refusing to run" >&2
      exit 1
    fi
    root="$NIXFLEET_SIM_ROOT"
    mkdir -p "$root/run" "$root/etc/systemd" "$root/log"
    stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [ -n "''${NIXFLEET_SIM_SWITCH_FAIL:-}" ]; then
      printf '%s %s %s FAILED\n' "$stamp" "$action" "$self" >> "$root/log/switch.log"
      echo "switch-to-configuration: simulated activation failure (NIXFLEET_SIM_SWITCH_FAIL is set)" >&2
      exit 4
    fi
    case "$action" in
      switch|test)
        ln -sfn "$self" "$root/run/current-system"
        cat "$self/etc/systemd/units.json" > "$root/etc/systemd/units.json.new"
        mv -f "$root/etc/systemd/units.json.new" "$root/etc/systemd/units.json"
        ;;
      dry-activate)
        echo "would activate $self" >&2
        ;;
    esac
    printf '%s %s %s\n' "$stamp" "$action" "$self" >> "$root/log/switch.log"
  '';
in
{
  config.system.build.toplevel =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatStringsSep "\n" (map (m: "- ${m}") failedAssertions)}"
    else
      assert allTypeChecked;
      builtins.foldl' (acc: w: builtins.trace "warning: ${w}" acc)
        (derivation {
          name = "nixos-system-${config.networking.hostName}-nixos-lite";
          system = nixosLite.system;
          builder = "/bin/sh";
          hostName = config.networking.hostName;
          unitsJson = builtins.toJSON units;
          inherit switchBody;
          swPackages = map (p: "${p}") config.environment.systemPackages;
          args = [
            "-c"
            ''
              set -e
              /bin/mkdir -p "$out/bin" "$out/etc/systemd" "$out/sw/bin"
              printf '%s\n' "$unitsJson" > "$out/etc/systemd/units.json"
              printf '%s\n' "$hostName" > "$out/etc/hostname"
              printf 'nixos-lite SIMULATED system, not NixOS\n' > "$out/nixos-lite"
              {
                printf '#!/bin/sh\nself=%s\n' "$out"
                printf '%s' "$switchBody"
              } > "$out/bin/switch-to-configuration"
              /bin/chmod 0555 "$out/bin/switch-to-configuration"
              for p in $swPackages; do
                for f in "$p"/bin/*; do
                  if [ -e "$f" ] && [ ! -e "$out/sw/bin/''${f##*/}" ]; then /bin/ln -s "$f" "$out/sw/bin/"; fi
                done
              done
            ''
          ];
        })
        config.warnings;
}
