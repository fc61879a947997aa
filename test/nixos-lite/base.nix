# ============================================================================
#  SIMULATION — nixos-lite base module. This is NOT NixOS.
#
#  Declares the few NixOS options a nixfleet host uses (networking.hostName,
#  assertions, environment.systemPackages, systemd.services/timers with a
#  subset of their real sub-options, nix.package, nix.envVars,
#  networking.proxy.*, programs.ssh.package, system.autoUpgrade.*, system.build)
#  with the types and the per-unit defaults NixOS gives them (unitNameType,
#  singleLineStr, [Unit] entries, the default service PATH). The toplevel and its
#  SIMULATED activation are in ./toplevel.nix. Layout and interface: ./README.md.
# ============================================================================
{ config, lib, pkgs, modulesPath, ... }:
let
  inherit (lib) mkOption mkIf mkAfter types optionalAttrs makeBinPath makeSearchPathOutput;
  nixosConfig = config;

  # nixos/lib/systemd-lib.nix: a type for options that take a unit name.
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # nixos/lib/systemd-unit-options.nix unitOption: a primitive or a list of them; lists concatenate,
  # a mix of list and non-list definitions is an error, non-lists must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    description = "systemd option";
    check = x:
      let prim = v: builtins.isBool v || builtins.isInt v || builtins.isString v || builtins.isPath v || lib.isDerivation v;
      in prim x || (builtins.isList x && builtins.all prim x);
    merge = loc: defs:
      if builtins.isList (builtins.head defs).value then
        builtins.concatMap
          (d: if builtins.isList d.value then d.value else
          throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.showDefs defs}")
          defs
      else lib.mergeEqualOption loc defs;
  };

  unitList = description: mkOption { type = types.listOf unitNameType; default = [ ]; inherit description; };

  # nixos/lib/systemd-unit-options.nix sharedOptions + commonUnitOptions (a subset).
  commonUnitOptions = {
    enable = mkOption { type = types.bool; default = true; description = "Whether the unit is installed."; };
    description = mkOption { type = types.singleLineStr; default = ""; description = "Description of this unit used in systemd messages and progress indicators."; };
    documentation = mkOption { type = types.listOf types.str; default = [ ]; description = "URIs of the unit's documentation."; };
    wantedBy = unitList "Units that want this one.";
    requiredBy = unitList "Units that require this one.";
    aliases = unitList "Aliases of the unit.";
    after = unitList "Start after these units.";
    before = unitList "Start before these units.";
    wants = unitList "Weak dependencies.";
    requires = unitList "Strong dependencies.";
    requisite = unitList "Units that must already be active.";
    bindsTo = unitList "BindsTo dependencies.";
    partOf = unitList "PartOf dependencies.";
    conflicts = unitList "Conflicting units.";
    onFailure = unitList "Units activated when this unit enters the failed state.";
    onSuccess = unitList "Units activated when this unit deactivates successfully.";
    unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Unit] section."; };
  };

  # nixos/lib/systemd-lib.nix `unitConfig`: every unit's dependency lists, description and
  # onFailure become [Unit] entries, at normal priority (a different value set in unitConfig
  # conflicts, as on NixOS).
  unitConfigDefaults = { config, ... }: {
    config.unitConfig =
      optionalAttrs (config.requires != [ ]) { Requires = toString config.requires; }
      // optionalAttrs (config.wants != [ ]) { Wants = toString config.wants; }
      // optionalAttrs (config.after != [ ]) { After = toString config.after; }
      // optionalAttrs (config.before != [ ]) { Before = toString config.before; }
      // optionalAttrs (config.bindsTo != [ ]) { BindsTo = toString config.bindsTo; }
      // optionalAttrs (config.partOf != [ ]) { PartOf = toString config.partOf; }
      // optionalAttrs (config.conflicts != [ ]) { Conflicts = toString config.conflicts; }
      // optionalAttrs (config.requisite != [ ]) { Requisite = toString config.requisite; }
      // optionalAttrs (config.description != "") { Description = config.description; }
      // optionalAttrs (config.documentation != [ ]) { Documentation = toString config.documentation; }
      // optionalAttrs (config.onFailure != [ ]) { OnFailure = toString config.onFailure; }
      // optionalAttrs (config.onSuccess != [ ]) { OnSuccess = toString config.onSuccess; };
  };

  serviceOptions = {
    environment = mkOption {
      type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
      default = { };
      description = "Environment variables of the service.";
    };
    path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; description = "Packages whose bin/ and sbin/ go on the service's PATH."; };
    serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Service] section."; };
    script = mkOption { type = types.lines; default = ""; description = "Shell commands run as the service."; };
    preStart = mkOption { type = types.lines; default = ""; description = "Shell commands run before the service."; };
    postStart = mkOption { type = types.lines; default = ""; description = "Shell commands run after the service started."; };
    startAt = mkOption {
      type = types.either types.str (types.listOf types.str);
      default = [ ];
      description = "Calendar times; a timer of the same name starts the service (always a list, as on NixOS).";
      apply = v: if builtins.isList v then v else [ v ];
    };
    restartIfChanged = mkOption { type = types.bool; default = true; description = "Restart the unit when it changed on switch."; };
    reloadIfChanged = mkOption { type = types.bool; default = false; description = "Reload instead of restart."; };
    stopIfChanged = mkOption { type = types.bool; default = true; description = "Stop then start instead of restart."; };
    restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; description = "Restart when these change."; };
  };

  # nixos/lib/systemd-lib.nix serviceConfig + stage2ServiceConfig: every service gets
  # coreutils findutils gnugrep gnused systemd at the end of `path`, and PATH from `path`
  # (normal priority: a user's own environment.PATH conflicts, as on NixOS).
  serviceDefaults = { config, ... }: {
    config.path = mkAfter [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused nixosConfig.systemd.package ];
    config.environment.PATH = mkIf (config.path != [ ])
      "${makeBinPath config.path}:${makeSearchPathOutput "bin" "sbin" config.path}";
  };

  timerOptions = {
    timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; description = "[Timer] section."; };
  };

  unitsOf = extra: types.attrsOf (types.submodule ([ { options = commonUnitOptions; } unitConfigDefaults ] ++ extra));

  # nixos/modules/tasks/auto-upgrade.nix, keyed like the real file so that
  # `disabledModules = [ "tasks/auto-upgrade.nix" ]` finds it. SIMULATED: its service cannot
  # run nixos-rebuild here and says so.
  stockAutoUpgrade = { config, ... }:
    let cfg = config.system.autoUpgrade; in
    {
      key = "${toString modulesPath}/tasks/auto-upgrade.nix";
      _file = "${toString modulesPath}/tasks/auto-upgrade.nix";
      options.system.autoUpgrade = {
        enable = mkOption { type = types.bool; default = false; description = "Whether to periodically upgrade NixOS (nixos-upgrade.service)."; };
        flake = mkOption { type = types.nullOr types.str; default = null; description = "Flake URI of the configuration to build."; };
        flags = mkOption { type = types.listOf types.str; default = [ ]; description = "Extra nixos-rebuild flags."; };
        dates = mkOption { type = types.str; default = "04:40"; description = "When the upgrade runs (systemd.time(7))."; };
        randomizedDelaySec = mkOption { type = types.str; default = "0"; description = "Random delay before each upgrade."; };
        allowReboot = mkOption { type = types.bool; default = false; description = "Reboot when the kernel changed."; };
        persistent = mkOption { type = types.bool; default = true; description = "Catch up on missed runs."; };
      };
      config = mkIf cfg.enable {
        systemd.services.nixos-upgrade = {
          description = "NixOS Upgrade";
          restartIfChanged = false;
          unitConfig.X-StopOnRemoval = false;
          serviceConfig.Type = "oneshot";
          script = ''
            echo "nixos-upgrade.service: SIMULATED by nixos-lite, there is no nixos-rebuild here" >&2
            exit 1
          '';
          startAt = cfg.dates;
          after = [ "network-online.target" ];
          wants = [ "network-online.target" ];
        };
        systemd.timers.nixos-upgrade.timerConfig = {
          RandomizedDelaySec = cfg.randomizedDelaySec;
          Persistent = cfg.persistent;
        };
      };
    };

  proxy = config.networking.proxy;
  proxyOption = description: mkOption { type = types.nullOr types.str; default = proxy.default; inherit description; };
in
{
  imports = [ stockAutoUpgrade ];

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

    # nixos/modules/services/system/nix-daemon.nix and config/nix.nix
    nix.package = mkOption { type = types.package; default = pkgs.nix; description = "The Nix package the system uses."; };
    nix.envVars = mkOption { type = types.attrs; internal = true; default = { }; description = "Environment of the Nix daemon and of Nix-using services."; };
    # nixos/modules/programs/ssh.nix
    programs.ssh.package = mkOption { type = types.package; default = pkgs.openssh; description = "The package used for the openssh client."; };
    # nixos/modules/config/networking.nix
    networking.proxy = {
      default = mkOption { type = types.nullOr types.str; default = null; description = "Default for all *_proxy variables."; };
      httpProxy = proxyOption "http_proxy.";
      httpsProxy = proxyOption "https_proxy.";
      ftpProxy = proxyOption "ftp_proxy.";
      rsyncProxy = proxyOption "rsync_proxy.";
      noProxy = mkOption { type = types.nullOr types.str; default = null; description = "no_proxy."; };
      envVars = mkOption { type = types.attrs; internal = true; default = { }; description = "Proxy environment variables."; };
    };

    systemd.package = mkOption { type = types.package; default = pkgs.systemd; description = "The systemd package."; };
    systemd.services = mkOption { type = unitsOf [ { options = serviceOptions; } serviceDefaults ]; default = { }; description = "systemd services."; };
    systemd.timers = mkOption { type = unitsOf [ { options = timerOptions; } ]; default = { }; description = "systemd timers."; };
  };

  # nixos/modules/config/system-path.nix: requiredPackages are in every system's sw/bin (no git, no jq,
  # no nh: a configuration adds those).
  config.environment.systemPackages = with pkgs; [
    bash coreutils util-linux gnugrep gnused findutils gzip gnutar xz bzip2 diffutils procps less which
    getent gawk openssh config.nix.package config.systemd.package
  ];

  # nixos/modules/config/networking.nix
  config.networking.proxy.envVars =
    optionalAttrs (proxy.default != null) { no_proxy = "127.0.0.1,localhost"; }
    // optionalAttrs (proxy.httpProxy != null) { http_proxy = proxy.httpProxy; }
    // optionalAttrs (proxy.httpsProxy != null) { https_proxy = proxy.httpsProxy; }
    // optionalAttrs (proxy.rsyncProxy != null) { rsync_proxy = proxy.rsyncProxy; }
    // optionalAttrs (proxy.ftpProxy != null) { ftp_proxy = proxy.ftpProxy; }
    // optionalAttrs (proxy.noProxy != null) { no_proxy = proxy.noProxy; };
}
