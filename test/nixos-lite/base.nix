# ============================================================================
#  SIMULATION — nixos-lite base module. This is NOT NixOS.
#
#  Declares the few NixOS options a nixfleet host uses (networking.hostName,
#  assertions, environment.systemPackages, systemd.services/timers with a
#  subset of their real sub-options, system.build) and builds
#  `config.system.build.toplevel`: a REAL derivation whose
#  `bin/switch-to-configuration` only SIMULATES activation inside
#  $NIXFLEET_SIM_ROOT. Layout and interface: ./README.md.
# ============================================================================
{ config, lib, pkgs, nixosLite, ... }:
let
  inherit (lib) mkOption types;

  # nixpkgs: lib.systemd unitOption — a primitive or a list of them; lists concatenate.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    description = "systemd unit option value (bool, int, string, path or a list of them)";
    check = x:
      let prim = v: builtins.isBool v || builtins.isInt v || builtins.isString v || builtins.isPath v || lib.isDerivation v;
      in prim x || (builtins.isList x && builtins.all prim x);
    merge = loc: defs:
      if builtins.any (d: builtins.isList d.value) defs
      then builtins.concatLists (map (d: lib.toList d.value) defs)
      else lib.mergeEqualOption loc defs;
  };

  unitList = description: mkOption { type = types.listOf types.str; default = [ ]; inherit description; };

  commonUnitOptions = {
    enable = mkOption { type = types.bool; default = true; description = "Whether the unit is installed."; };
    description = mkOption { type = types.str; default = ""; description = "Unit description."; };
    wantedBy = unitList "Units that want this one.";
    requiredBy = unitList "Units that require this one.";
    after = unitList "Start after these units.";
    before = unitList "Start before these units.";
    wants = unitList "Weak dependencies.";
    requires = unitList "Strong dependencies.";
    bindsTo = unitList "BindsTo dependencies.";
    partOf = unitList "PartOf dependencies.";
    conflicts = unitList "Conflicting units.";
    unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Unit] section."; };
  };

  serviceOptions = commonUnitOptions // {
    environment = mkOption {
      type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
      default = { };
      description = "Environment variables of the service.";
    };
    path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; description = "Packages on PATH."; };
    serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Service] section."; };
    script = mkOption { type = types.lines; default = ""; description = "Shell commands run as the service."; };
    preStart = mkOption { type = types.lines; default = ""; description = "Shell commands run before the service."; };
    postStart = mkOption { type = types.lines; default = ""; description = "Shell commands run after the service started."; };
    startAt = mkOption { type = types.either types.str (types.listOf types.str); default = [ ]; description = "Calendar times."; };
    restartIfChanged = mkOption { type = types.bool; default = true; description = "Restart the unit when it changed on switch."; };
    reloadIfChanged = mkOption { type = types.bool; default = false; description = "Reload instead of restart."; };
    stopIfChanged = mkOption { type = types.bool; default = true; description = "Stop then start instead of restart."; };
    restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; description = "Restart when these change."; };
  };

  timerOptions = commonUnitOptions // {
    timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Timer] section."; };
  };

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
  options = {
    networking.hostName = mkOption { type = types.str; default = "nixos"; description = "The host name."; };
    system.stateVersion = mkOption { type = types.str; default = "25.05"; description = "NixOS release of the first install."; };
    system.build = mkOption { type = types.lazyAttrsOf types.unspecified; default = { }; description = "Build results."; };
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
      description = "`{ assertion; message; }` pairs; a false assertion fails the build with its message.";
    };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; description = "Printed at build time."; };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; description = "Linked into `sw/bin` of the toplevel."; };
    systemd.services = mkOption { type = types.attrsOf (types.submodule { options = serviceOptions; }); default = { }; description = "systemd services."; };
    systemd.timers = mkOption { type = types.attrsOf (types.submodule { options = timerOptions; }); default = { }; description = "systemd timers."; };
  };

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
