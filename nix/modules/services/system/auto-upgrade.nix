# nixfleet auto-upgrade — safe, validated NixOS upgrades from a nix-config checkout.
#
# What it does: a systemd timer (`auto-upgrade.timer`) starts `auto-upgrade.service`, which runs
# `nixfleet-agent run`: the agent next to this file (./agent, a Go program using only the standard
# library, built with pkgs.buildGoModule). The workflow, in order:
#
#   1. pre-update hooks, e.g. `chezmoi-pre-update.service` to sync dotfiles: systemd starts the
#      units of `preUpdateHooks` before the service (they are in its `after`/`wants`, in order;
#      systemd does not order them among themselves), and the agent stops if one failed, or if
#      one listed in `requiredHooks` does not exist. Push mode starts them itself, one by one.
#   2. `git pull --ff-only` of `remote`/`branch` in the checkout at `configPath`, run as `user`.
#   3. validate (always): `nix build` of `nixosConfigurations.<flakeHost>`; the
#      result is kept, GC-rooted, under `stateDir`. A failed build changes nothing on the host.
#   4. activate exactly that validated store path (never a fresh evaluation), safely:
#      `switch-to-configuration test`, then the health gate (`healthCheck`), and only then the
#      system profile and `switch-to-configuration boot`. A failed activation or gate re-activates
#      the previous system (profile and boot entry never moved), and systemd starts `onFailure`.
#   5. commit-back (`hostCanCommitConfig`): commit the checkout's changes to tracked files (e.g. an
#      updated flake.lock), rebase onto the remote branch, push; a failed push is a warning.
#
# The options added by nixfleet: `preUpdateValidation` (deprecated: the build always comes first),
# `preUpdateHooks` (units started before the update, in order), `hostCanCommitConfig` (commit-back,
# default off), and the safe-activation gate: `healthCheck`, `healthUnits`, `healthTimeout`, and
# `onFailure` (units systemd starts when a timer run fails or rolls back).
#
# Push mode and pull mode share the agent: in pull mode this module's timer runs `nixfleet-agent run`
# with the settings below passed as AUTO_UPGRADE_* environment variables; in push mode nixfleet
# (Pulumi) builds the same agent from the same source (nix/push-bootstrap.sh, with this host's pkgs,
# so it is the same store path) and runs it with its own copy of them, and after validation compares that
# copy with the `Environment=` lines of this service in the system it built: a difference (e.g. a
# `lib.mkForce` in the user's own configuration) fails the deploy before anything is activated.
# The settings are data in `environment`, never spliced into shell text; systemd expands `%`
# specifiers in `Environment=`, so every `%` is written `%%`.
#
# Enabling nixpkgs' own `system.autoUpgrade` as well is refused: two upgraders would race.
#
# The settings a role sets and a host overrides (their names, types, defaults, docs and AUTO_UPGRADE_*
# variables) are declared from ./auto-upgrade.json, nixfleet's one table of settings and time bounds,
# which the TypeScript library reads too. Only the host facts (configPath, user, flakeHost) are here.
#
# This file is static source shipped verbatim to every host; it holds no user values. A host's
# values live in `roles/form-<role>.nix` (lib.mkDefault) and `hosts/<host>/nixfleet.nix`.
{ config, lib, pkgs, ... }:

let
  cfg = config.myModules.services.system.autoUpgrade;

  inherit (lib)
    mkOption mkEnableOption mkIf types
    concatStringsSep boolToString subtractLists hasPrefix mapAttrs replaceStrings
    filterAttrs mapAttrs' nameValuePair optionalAttrs;

  table = builtins.fromJSON (builtins.readFile ./auto-upgrade.json);

  # The runtime of nixpkgs' own upgrade service (nixos/modules/tasks/auto-upgrade.nix: nix, ssh for
  # git remotes, git, coreutils) plus what the agent starts: runuser/logger (util-linux),
  # systemctl/systemd-run, and install/mktemp/mv as the checkout's owner (coreutils). Nothing a stock
  # NixOS host lacks: no jq, no nh.
  runtime = [
    config.nix.package.out
    config.programs.ssh.package
    pkgs.gitMinimal
    pkgs.coreutils
    pkgs.util-linux
    pkgs.systemd
  ];

  # The agent, from its source shipped beside this file; the tests stay in nixfleet's repository.
  agent = import ./agent/package.nix { inherit (pkgs) buildGoModule; };

  # systemd unit names: prefix[@instance].type. The same rule as the stack config schema and
  # the agent's UnitRE (agent/internal/settings); every name it accepts is also one NixOS' unitNameType (the type of
  # `after`/`wants`/`onFailure`, nixos/lib/systemd-lib.nix) accepts, so the error names this option.
  unitNameRegex = "[A-Za-z0-9:_.\\\\][-A-Za-z0-9:_.\\\\]*(@[-A-Za-z0-9:_.\\\\]*)?\\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)";
  unitName = types.strMatching unitNameRegex;

  # systemd expands specifiers in `Environment=` (`%H` is the host name): `%%` is a literal `%`.
  escapeSpecifiers = v: if builtins.isString v then replaceStrings [ "%" ] [ "%%" ] v else v;

  # The table's setting types as option types. Calendar expressions and time spans become lines of the
  # timer unit, so they must be one line.
  optionType = s:
    if s.type == "bool" then types.bool
    else if s.type == "units" then types.listOf unitName
    else if s.type == "seconds" then types.ints.between s.min s.max
    else if s.type == "calendar" || s.type == "timespan" then types.singleLineStr
    else types.nonEmptyStr;
  settingOption = s: mkOption ({ type = optionType s; inherit (s) default; description = s.doc; }
    // optionalAttrs (s ? example) { inherit (s) example; });

  # A setting as the environment carries it (the same rule as components/remote.ts `envValue`).
  envValue = v: if builtins.isList v then concatStringsSep " " v else if builtins.isBool v then boolToString v else toString v;
  settingsEnv = mapAttrs' (n: s: nameValuePair s.env (envValue cfg.${n})) (filterAttrs (_: s: s ? env) table.settings);

  stockUpgradeEnabled = lib.attrByPath [ "system" "autoUpgrade" "enable" ] false config;

  missingRequired = subtractLists cfg.preUpdateHooks cfg.requiredHooks;
  # absolute, and no `..` path component
  isCleanAbsolute = p: hasPrefix "/" p && builtins.match "(.*/)?\\.\\.(/.*)?" p == null;
  quoteList = xs: concatStringsSep ", " (map (x: "\"${x}\"") xs);
in
{
  options.myModules.services.system.autoUpgrade = mapAttrs (_: settingOption) table.settings // {
    enable = mkEnableOption "nixfleet's validated automatic upgrades (timer + `auto-upgrade` service)";

    configPath = mkOption {
      type = types.nonEmptyStr;
      example = "/home/alice/nix-config";
      description = ''
        Absolute path of the host's nix-config checkout (a git clone of the flake). `git pull`,
        validation and commit-back run there. Must be absolute and must not contain `..`.
      '';
    };

    user = mkOption {
      type = types.nullOr types.nonEmptyStr;
      default = null;
      example = "alice";
      description = ''
        Owner of the checkout at `configPath`; `null` means whoever owns the directory. git runs as
        this user, so root never trips over "dubious ownership" and never leaves root-owned files in
        a user's checkout.
      '';
    };

    flakeHost = mkOption {
      type = types.nonEmptyStr;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      example = "workstation";
      description = "Name of the `nixosConfigurations.<name>` output to build and switch to.";
    };

    stateDir = mkOption {
      type = types.nonEmptyStr;
      inherit (table.host.stateDir) default;
      description = ''
        Where the agent keeps `status.json` (the machine-readable record of the last run) and the
        GC-rooted `validated` link to the build it validated.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = isCleanAbsolute cfg.configPath;
        message = "myModules.services.system.autoUpgrade.configPath must be an absolute path without `..` (got \"${cfg.configPath}\"); set it to the checkout's full path, e.g. \"/home/alice/nix-config\".";
      }
      {
        assertion = isCleanAbsolute cfg.stateDir;
        message = "myModules.services.system.autoUpgrade.stateDir must be an absolute path without `..` (got \"${cfg.stateDir}\"), e.g. \"/var/lib/auto-upgrade\".";
      }
      {
        assertion = missingRequired == [ ];
        message = "myModules.services.system.autoUpgrade.requiredHooks must be a subset of preUpdateHooks: ${quoteList missingRequired} not in preUpdateHooks; add them to preUpdateHooks or remove them from requiredHooks.";
      }
      {
        assertion = !stockUpgradeEnabled;
        message = "myModules.services.system.autoUpgrade and nixpkgs' system.autoUpgrade are both enabled: two upgraders (auto-upgrade.service and nixos-upgrade.service) would switch this host independently. Set system.autoUpgrade.enable = false; nixfleet's timer replaces it.";
      }
    ];

    warnings = lib.optional (!cfg.preUpdateValidation)
      "myModules.services.system.autoUpgrade.preUpdateValidation = false changes nothing and is deprecated: ${table.settings.preUpdateValidation.deprecated}.";

    # `nixfleet-agent status` (and the other steps) for the admin; git because push mode runs in an SSH
    # session, whose PATH is the system's (a stock NixOS system has no git).
    environment.systemPackages = [ agent pkgs.git ];

    systemd.services.auto-upgrade = {
      description = "nixfleet auto-upgrade: pre-update hooks, pull, validate, switch, commit-back";
      after = cfg.preUpdateHooks ++ [ "network-online.target" ];
      wants = cfg.preUpdateHooks ++ [ "network-online.target" ];
      # A failed or rolled-back timer run starts these (systemd: OnFailure= in [Unit]).
      inherit (cfg) onFailure;
      # Also the unit's PATH, as nixpkgs' own upgrade service has it: what the agent starts detached
      # (the activator, via systemd-run) gets this PATH handed on explicitly.
      path = runtime;
      # The service switches the system itself: switching must neither restart nor stop it.
      restartIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${lib.getExe agent} run";
      };
      # As nixpkgs' own upgrade service: Nix's settings, HOME for git and ssh, the proxy. Then the
      # settings: data, not shell text; `%` doubled so systemd passes each value verbatim.
      environment = mapAttrs (_: escapeSpecifiers) (
        config.nix.envVars // { HOME = "/root"; } // config.networking.proxy.envVars // {
          AUTO_UPGRADE_CONFIG_PATH = cfg.configPath;
          AUTO_UPGRADE_FLAKE_HOST = cfg.flakeHost;
          # Empty: the agent takes the owner of the checkout.
          AUTO_UPGRADE_USER = if cfg.user == null then "" else cfg.user;
          ${table.host.stateDir.env} = cfg.stateDir;
        } // settingsEnv
      );
    };

    systemd.timers.auto-upgrade = {
      description = "nixfleet auto-upgrade timer";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        Persistent = true;
        RandomizedDelaySec = cfg.randomizedDelaySec;
      };
    };
  };
}
