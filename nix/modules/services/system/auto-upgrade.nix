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
#   3. validate (`preUpdateValidation`): `nix build` of `nixosConfigurations.<flakeHost>`; the
#      result is kept, GC-rooted, under `stateDir`. A failed build changes nothing on the host.
#   4. activate exactly that validated store path (never a fresh evaluation), safely:
#      `switch-to-configuration test`, then the health gate (`healthCheck`), and only then the
#      system profile and `switch-to-configuration boot`. A failed activation or gate re-activates
#      the previous system (profile and boot entry never moved), and systemd starts `onFailure`.
#   5. commit-back (`hostCanCommitConfig`): commit the checkout's changes to tracked files (e.g. an
#      updated flake.lock), rebase onto the remote branch, push; a failed push is a warning.
#
# The options added by nixfleet: `preUpdateValidation` (validate before switching, default on),
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
# This file is static source shipped verbatim to every host; it holds no user values. A host's
# values live in `roles/form-<role>.nix` (lib.mkDefault) and `hosts/<host>/nixfleet.nix`.
{ config, lib, pkgs, ... }:

let
  cfg = config.myModules.services.system.autoUpgrade;

  inherit (lib)
    mkOption mkEnableOption mkIf types
    concatStringsSep boolToString subtractLists hasPrefix mapAttrs replaceStrings;

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

  stockUpgradeEnabled = lib.attrByPath [ "system" "autoUpgrade" "enable" ] false config;

  missingRequired = subtractLists cfg.preUpdateHooks cfg.requiredHooks;
  # absolute, and no `..` path component
  isCleanAbsolute = p: hasPrefix "/" p && builtins.match "(.*/)?\\.\\.(/.*)?" p == null;
  quoteList = xs: concatStringsSep ", " (map (x: "\"${x}\"") xs);
in
{
  options.myModules.services.system.autoUpgrade = {
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

    remote = mkOption {
      type = types.nonEmptyStr;
      default = "origin";
      example = "upstream";
      description = "git remote that `git pull` and commit-back use.";
    };

    branch = mkOption {
      type = types.nonEmptyStr;
      default = "main";
      example = "stable";
      description = "Branch that `git pull` and commit-back use.";
    };

    schedule = mkOption {
      # One line: it becomes `OnCalendar=` in the timer unit.
      type = types.singleLineStr;
      default = "04:00";
      example = "Sat *-*-* 03:30:00";
      description = ''
        When the timer runs, as a systemd calendar expression (`OnCalendar=`, see
        {manpage}`systemd.time(7)`). Missed runs happen at next boot (`Persistent=true`).
      '';
    };

    randomizedDelaySec = mkOption {
      type = types.singleLineStr;
      default = "30min";
      example = "0";
      description = ''
        Random delay added to each run (`RandomizedDelaySec=`), so a fleet does not pull and build
        at the same second. A systemd time span, e.g. `"45min"`; `"0"` disables it.
      '';
    };

    preUpdateValidation = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Build the new system (`nix build`) before switching, keep that build GC-rooted under
        `stateDir`, and switch to exactly that store path. A failed build leaves the host unchanged.
      '';
    };

    preUpdateHooks = mkOption {
      type = types.listOf unitName;
      default = [ ];
      example = [ "chezmoi-pre-update.service" ];
      description = ''
        systemd units started, in this order, before the update (e.g. syncing dotfiles). The
        service is also ordered `After=` and `Wants=` them. A hook unit that does not exist is a
        warning unless it is listed in `requiredHooks`. Full unit names, e.g. `backup.service`.
      '';
    };

    requiredHooks = mkOption {
      type = types.listOf unitName;
      default = [ ];
      example = [ "chezmoi-pre-update.service" ];
      description = ''
        Hooks that must exist and succeed: the update stops before changing anything if one of
        them is missing. Every entry must also be listed in `preUpdateHooks`.
      '';
    };

    hostCanCommitConfig = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = ''
        After a successful switch, commit local changes of the checkout and push them to
        `remote`/`branch` (commit-back). A failed push is a warning, not a failed upgrade.
      '';
    };

    healthCheck = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        After `switch-to-configuration test` of the validated system, check its health before making
        it the boot default: no unit that was active before may have failed, every unit in
        `healthUnits` must be active, and (timer runs) `remote` must still be reachable. A failed
        check re-activates the previous system; profile and boot entry never moved.
      '';
    };

    healthUnits = mkOption {
      type = types.listOf unitName;
      default = [ ];
      example = [ "nginx.service" "postgresql.service" ];
      description = "systemd units that must be active (and not failed) after the new system is activated.";
    };

    healthTimeout = mkOption {
      type = types.ints.positive;
      default = 120;
      example = 300;
      description = "Seconds the whole health check may take; past it the check fails and the host rolls back.";
    };

    onFailure = mkOption {
      type = types.listOf unitName;
      default = [ ];
      example = [ "notify-admin@auto-upgrade.service" ];
      description = ''
        systemd units started when a timer run fails or rolls back (`OnFailure=` of
        `auto-upgrade.service`), e.g. a unit that sends a mail or an ntfy message.
      '';
    };

    stateDir = mkOption {
      type = types.nonEmptyStr;
      default = "/var/lib/auto-upgrade";
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
          AUTO_UPGRADE_REMOTE = cfg.remote;
          AUTO_UPGRADE_BRANCH = cfg.branch;
          AUTO_UPGRADE_HOOKS = concatStringsSep " " cfg.preUpdateHooks;
          AUTO_UPGRADE_REQUIRED_HOOKS = concatStringsSep " " cfg.requiredHooks;
          AUTO_UPGRADE_VALIDATE = boolToString cfg.preUpdateValidation;
          AUTO_UPGRADE_COMMIT = boolToString cfg.hostCanCommitConfig;
          AUTO_UPGRADE_STATE_DIR = cfg.stateDir;
          AUTO_UPGRADE_HEALTH_CHECK = boolToString cfg.healthCheck;
          AUTO_UPGRADE_HEALTH_UNITS = concatStringsSep " " cfg.healthUnits;
          AUTO_UPGRADE_HEALTH_TIMEOUT = toString cfg.healthTimeout;
        }
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
