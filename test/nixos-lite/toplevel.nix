# ============================================================================
#  SIMULATION — nixos-lite toplevel. This is NOT NixOS.
#
#  Builds `config.system.build.toplevel` like NixOS lays it out: real unit files
#  in etc/systemd/system (as nixos/lib/systemd-lib.nix writes them), an
#  `activate` script made of `system.activationScripts` (as
#  nixos/modules/system/activation/activation-script.nix does), kernel/initrd/
#  kernel-modules links, and a `bin/switch-to-configuration` that models
#  `test`, `boot` and `switch` inside $NIXFLEET_SIM_ROOT, the simulated host's
#  root. Its exit codes follow switch-to-configuration.pl: 2 when `activate`
#  fails, 4 when a unit fails to start. Layout and interface: ./README.md and
#  fleet/README.md ("Faults").
#
#  Also declares the few sim-only options a host configuration uses to cause
#  faults as it would on NixOS: services.openssh.enable,
#  system.activationScripts, boot.kernelPackages.kernel.version.
# ============================================================================
{ config, lib, nixosLite, ... }:
let
  inherit (lib) mkOption types;
  inherit (nixosLite) system;

  # Functions never reach JSON; derivations become their store path (with context).
  jsonable = v:
    if builtins.isFunction v then null
    else if lib.isDerivation v then "${v}"
    else if builtins.isAttrs v then
      lib.filterAttrs (_: x: !(builtins.isFunction x)) (builtins.mapAttrs (_: jsonable) v)
    else if builtins.isList v then map jsonable (builtins.filter (x: !(builtins.isFunction x)) v)
    else v;

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

  # A file in the store whose content is `text` (pkgs.writeText without pkgs).
  textFile = name: text: derivation {
    inherit name system text;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s' \"$text\" > \"$out\"" ];
  };

  # ---- unit files (nixpkgs nixos/lib/systemd-lib.nix: attrsToSection, serviceToUnit, timerToUnit) ----
  toOption = x: if x == true then "true" else if x == false then "false" else toString x;
  attrsToSection = as: builtins.concatStringsSep "" (builtins.concatLists (lib.mapAttrsToList
    (name: value: map (x: "${name}=${toOption x}\n") (if builtins.isList value then value else [ value ]))
    as));
  optionalAttrs = c: as: if c then as else { };

  # nixos/lib/systemd-unit-options.nix `unitConfig`: the dependency lists and the description become
  # [Unit] entries; what a definition sets in unitConfig itself wins.
  unitSection = def:
    optionalAttrs (def.requires != [ ]) { Requires = toString def.requires; }
    // optionalAttrs (def.wants != [ ]) { Wants = toString def.wants; }
    // optionalAttrs (def.after != [ ]) { After = toString def.after; }
    // optionalAttrs (def.before != [ ]) { Before = toString def.before; }
    // optionalAttrs (def.bindsTo != [ ]) { BindsTo = toString def.bindsTo; }
    // optionalAttrs (def.partOf != [ ]) { PartOf = toString def.partOf; }
    // optionalAttrs (def.conflicts != [ ]) { Conflicts = toString def.conflicts; }
    // optionalAttrs (def.description != "") { Description = def.description; }
    // def.unitConfig;

  # nixos/lib/systemd-lib.nix makeJobScript: `script`, `preStart`, `postStart` become store scripts run
  # with bash and `set -e` (here the host's /bin/bash stands in for nixpkgs' runtimeShell).
  jobScript = name: text:
    let
      drv = derivation {
        name = "unit-script-${name}";
        inherit system;
        builder = "/bin/sh";
        scriptName = name;
        text = "#!/bin/bash\nset -e\n${text}\n";
        args = [ "-c" "/bin/mkdir -p \"$out/bin\" && printf '%s' \"$text\" > \"$out/bin/$scriptName\" && /bin/chmod 0555 \"$out/bin/$scriptName\"" ];
      };
    in
    "${drv}/bin/${name}";

  serviceText = name: def:
    let
      hasExec = def.serviceConfig ? ExecStart;
      serviceCfg =
        if def.script != "" && hasExec then
          throw "systemd.services.${name}: set either `script` or `serviceConfig.ExecStart`, not both (nixos-lite, as NixOS' conflicting definitions)"
        else
          def.serviceConfig
          // optionalAttrs (def.script != "") { ExecStart = jobScript "${name}-start" def.script; }
          // optionalAttrs (def.preStart != "") { ExecStartPre = jobScript "${name}-pre-start" def.preStart; }
          // optionalAttrs (def.postStart != "") { ExecStartPost = jobScript "${name}-post-start" def.postStart; };
      env = def.environment;
    in
    "[Unit]\n" + attrsToSection (unitSection def)
    + "\n[Service]\n"
    + builtins.concatStringsSep "" (map
      (n: if env.${n} == null then "" else "Environment=${builtins.toJSON "${n}=${env.${n}}"}\n")
      (builtins.attrNames env))
    + (if def.reloadIfChanged or false then "X-ReloadIfChanged=true\n"
    else if !(def.restartIfChanged or true) then "X-RestartIfChanged=false\n" else "")
    + (if !(def.stopIfChanged or true) then "X-StopIfChanged=false\n" else "")
    + attrsToSection serviceCfg;

  timerText = def: "[Unit]\n" + attrsToSection (unitSection def) + "\n[Timer]\n" + attrsToSection def.timerConfig;

  # nixos/modules/system/boot/systemd.nix: a service with `startAt` gets a timer of the same name.
  servicesWithTimers = builtins.filter (n: config.systemd.services.${n}.enable && lib.toList config.systemd.services.${n}.startAt != [ ])
    (builtins.attrNames config.systemd.services);
  timers = config.systemd.timers // builtins.listToAttrs (map
    (n: {
      name = n;
      value = {
        enable = true; description = ""; wantedBy = [ "timers.target" ]; requiredBy = [ ]; after = [ ]; before = [ ];
        wants = [ ]; requires = [ ]; bindsTo = [ ]; partOf = [ ]; conflicts = [ ]; unitConfig = { };
        timerConfig = { OnCalendar = lib.toList config.systemd.services.${n}.startAt; };
      };
    })
    (builtins.filter (n: !(config.systemd.timers ? ${n})) servicesWithTimers));

  unitNameOk = n: builtins.match "[A-Za-z0-9:_.\\\\@-]+" n != null;
  checkName = n: if unitNameOk n then n else throw "nixos-lite: `${n}' is not a valid systemd unit name";

  enabled = lib.filterAttrs (_: d: d.enable);
  unitFiles =
    lib.mapAttrsToList (n: d: { name = checkName "${n}.service"; text = serviceText n d; wantedBy = d.wantedBy; })
      (enabled config.systemd.services)
    ++ lib.mapAttrsToList (n: d: { name = checkName "${n}.timer"; text = timerText d; wantedBy = d.wantedBy; })
      (enabled timers)
    # The machine's OpenSSH server (Debian's sshd: SIMULATED package), run like nixpkgs'
    # nixos/modules/services/networking/ssh/sshd.nix runs it: KillMode=process, so stopping it (a system
    # without openssh) ends the listener and spares open sessions. Port and ListenAddress: the machine's
    # /etc/ssh/sshd_config.d (fleet/machine), which stands for services.openssh.ports here.
    ++ lib.optional config.services.openssh.enable {
      name = "sshd.service";
      text = builtins.concatStringsSep "\n" [
        "[Unit]"
        "Description=SSH Daemon"
        "After=network.target"
        ""
        "[Service]"
        "ExecStartPre=/usr/bin/mkdir -p /run/sshd"
        "ExecStartPre=/usr/sbin/sshd -t -f /etc/ssh/sshd_config"
        "ExecStart=/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config"
        "KillMode=process"
        "Restart=always"
        "RestartSec=1"
        ""
      ];
      wantedBy = [ "multi-user.target" ];
    };

  # `name=store path` per unit (names are checked unit names, store paths have no spaces).
  # default.target: as NixOS links it to systemd.defaultUnit; the unit is this system's or, like
  # multi-user.target, the machine's own (Debian's /lib/systemd/system stands for systemd's package).
  defaultUnit = checkName config.systemd.defaultUnit;
  defaultLink = lib.optional (defaultUnit != "multi-user.target")
    "default.target=${if builtins.any (u: u.name == defaultUnit) unitFiles then defaultUnit else "/lib/systemd/system/${defaultUnit}"}";
  unitLinks = map (u: "${u.name}=${textFile "unit-${u.name}" u.text}") unitFiles ++ defaultLink;
  wantsLinks = builtins.concatLists (map (u: map (t: "${checkName t}.wants/${u.name}") u.wantedBy) unitFiles);

  units = jsonable { services = config.systemd.services; timers = config.systemd.timers; };

  # ---- activation (nixos/modules/system/activation/activation-script.nix) ----
  snippets =
    builtins.mapAttrs (_: v: if builtins.isString v then { text = v; deps = [ ]; } else { deps = [ ]; } // v)
      config.system.activationScripts
    // {
      # SIMULATION of NixOS' `etc` snippet: the host's /etc/systemd/system becomes this system's units (on
      # the first activation of a fresh machine it replaces the image's own directory, as NixOS owns it).
      etc = {
        deps = [ ];
        text = ''
          if [ -d "$root/etc/systemd/system" ] && [ ! -L "$root/etc/systemd/system" ]; then rm -rf "$root/etc/systemd/system"; fi
          ln -sfn "$systemConfig/etc/systemd/system" "$root/etc/systemd/.system.new"
          mv -Tf "$root/etc/systemd/.system.new" "$root/etc/systemd/system"
          # networking.hostName (systemd sets it from /etc/hostname at boot).
          cp "$systemConfig/etc/hostname" "$root/etc/.hostname.new" && mv -f "$root/etc/.hostname.new" "$root/etc/hostname"
        '';
      };
    };
  # lib.textClosureMap: each snippet after its deps, otherwise in attribute-name order.
  snippetOrder = builtins.foldl'
    (done: n:
      let
        visit = seen: m:
          if builtins.elem m seen then seen
          else if !(snippets ? ${m}) then throw "system.activationScripts.${n}: dependency `${m}' does not exist"
          else (builtins.foldl' visit seen snippets.${m}.deps) ++ [ m ];
      in
      visit done n)
    [ ]
    (builtins.attrNames snippets);
  activateScript = ''
    #!/bin/bash
    # SIMULATED NixOS activation (nixos-lite): like activation-script.nix, every snippet runs, a failing
    # command marks the activation failed (ERR trap), `exit` in a snippet ends it at once; the system
    # becomes current only at the end.
    systemConfig="$1"
    # On a fleet machine the machine's own /; elsewhere (module tests) a directory standing for it.
    if [ -e /etc/nixfleet-machine ] && [ -z "''${NIXFLEET_SIM_ROOT:-}" ]; then root=""
    else root="''${NIXFLEET_SIM_ROOT:?activate (simulated) runs on a fleet machine, or needs NIXFLEET_SIM_ROOT}"; fi
    _status=0
    trap "_status=1 _localstatus=\$?" ERR
    umask 0022
    mkdir -p "$root/etc/systemd" "$root/run"
  '' + builtins.concatStringsSep "" (map
    (n: ''

      #### Activation script snippet ${n}:
      _localstatus=0
      ${snippets.${n}.text}
      if (( _localstatus > 0 )); then
        printf "Activation script snippet '%s' failed (%s)\n" ${lib.escapeShellArg n} "$_localstatus"
      fi
    '')
    snippetOrder) + ''

    # Make this configuration the current configuration.
    ln -sfn "$(readlink -f "$systemConfig")" "$root/run/current-system"
    exit $_status
  '';

  # ---- kernel (SIMULATED: files that stand for a kernel, so a version change changes $out/kernel) ----
  kernelVersion = config.boot.kernelPackages.kernel.version;
  kernelPart = what: derivation {
    name = "${what}-${kernelVersion}";
    inherit system what;
    version = kernelVersion;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p \"$out\" && printf 'SIMULATED %s %s\\n' \"$what\" \"$version\" > \"$out/$what\"" ];
  };

  switchBody = builtins.readFile ./switch-to-configuration.sh;

  # NixOS's stage 2 (nixos/modules/system/boot/stage-2-init.sh), what the boot loader starts as PID 1:
  # activate this system, record it as booted, then become systemd. /run is a fresh tmpfs on each boot.
  initScript = ''
    #!/bin/sh
    # SIMULATED stage 2 of nixos-lite (a fleet machine's boot loader execs it as PID 1).
    systemConfig=@out@
    echo "<<< nixos-lite stage 2: activating $systemConfig >>>" >/dev/console 2>/dev/null || true
    "$systemConfig/activate" "$systemConfig" || echo "stage 2: activation of $systemConfig failed" >/dev/console 2>/dev/null || true
    ln -sfn "$systemConfig" /run/booted-system
    exec /lib/systemd/systemd "$@"
  '';
in
{
  options = {
    services.openssh.enable = mkOption {
      type = types.bool;
      default = true;
      description = "SIMULATED: whether this system runs the host's sshd. `false`: switching to it stops sshd and kills its sessions.";
    };
    systemd.defaultUnit = mkOption {
      type = types.str;
      default = "multi-user.target";
      description = "Default unit started when the system boots (default.target), as on NixOS. A unit that exists nowhere makes the boot fail: systemd falls back to its rescue or emergency target, with no sshd.";
    };
    system.activationScripts = mkOption {
      type = types.attrsOf types.unspecified;
      default = { };
      description = "Snippets (a string, or `{ text; deps; }`) run by `switch-to-configuration test|switch`, as on NixOS.";
    };
    boot.loader.extraInstallCommands = mkOption {
      type = types.lines;
      default = "";
      description = "Shell commands `switch-to-configuration boot|switch` runs while installing the boot loader, as NixOS's systemd-boot and GRUB modules do (here: before the default entry moves; failure: exit 1, the entry stays).";
    };
    boot.kernelPackages.kernel.version = mkOption {
      type = types.str;
      default = "6.6.0";
      description = "SIMULATED kernel version: changes $out/kernel, $out/initrd and $out/kernel-modules (a reboot is needed).";
    };
  };

  config.assertions = [{
    assertion = builtins.match "[0-9A-Za-z][0-9A-Za-z.+_-]*" kernelVersion != null;
    message = "boot.kernelPackages.kernel.version `${kernelVersion}': use letters, digits, '.', '+', '_' and '-' (nixos-lite)";
  }];

  config.system.build.toplevel =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatStringsSep "\n" (map (m: "- ${m}") failedAssertions)}"
    else
      assert allTypeChecked;
      builtins.foldl' (acc: w: builtins.trace "warning: ${w}" acc)
        (derivation {
          name = "nixos-system-${config.networking.hostName}-nixos-lite";
          inherit system;
          builder = "/bin/sh";
          hostName = config.networking.hostName;
          unitsJson = builtins.toJSON units;
          inherit switchBody activateScript initScript unitLinks wantsLinks;
          installHook = config.boot.loader.extraInstallCommands;
          kernel = "${kernelPart "bzImage"}/bzImage";
          initrd = "${kernelPart "initrd"}/initrd";
          kernelModules = "${kernelPart "modules"}";
          swPackages = map (p: "${p}") config.environment.systemPackages;
          args = [
            "-c"
            ''
              set -e
              /bin/mkdir -p "$out/bin" "$out/etc/systemd/system" "$out/sw/bin"
              printf '%s\n' "$unitsJson" > "$out/etc/systemd/units.json"
              printf '%s\n' "$hostName" > "$out/etc/hostname"
              printf 'nixos-lite SIMULATED system, not NixOS\n' > "$out/nixos-lite"
              for l in $unitLinks; do /bin/ln -s "''${l#*=}" "$out/etc/systemd/system/''${l%%=*}"; done
              for w in $wantsLinks; do
                /bin/mkdir -p "$out/etc/systemd/system/''${w%/*}"
                /bin/ln -s "../''${w##*/}" "$out/etc/systemd/system/$w"
              done
              /bin/ln -s "$kernel" "$out/kernel"
              /bin/ln -s "$initrd" "$out/initrd"
              /bin/ln -s "$kernelModules" "$out/kernel-modules"
              printf '%s' "$activateScript" > "$out/activate"
              /bin/chmod 0555 "$out/activate"
              if [ -n "$installHook" ]; then
                printf '#!/bin/bash\nset -e\n%s\n' "$installHook" > "$out/bin/install-boot-loader-hook"
                /bin/chmod 0555 "$out/bin/install-boot-loader-hook"
              fi
              printf '%s' "$initScript" | /bin/sed "s|@out@|$out|" > "$out/init"
              /bin/chmod 0555 "$out/init"
              { printf '#!/bin/bash\nself=%s\n' "$out"; printf '%s' "$switchBody"; } > "$out/bin/switch-to-configuration"
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
