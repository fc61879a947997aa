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
}
