# SIMULATED NixOS for the script tests (nixpkgs is not available offline; this is not NixOS).
# nixosConfigurations.<host>.config.system.build.toplevel is a REAL derivation (builder /bin/sh, built by the
# real `nix build`) whose output has what the agent reads of a NixOS system:
#   bin/switch-to-configuration   ./switch-to-configuration.sh (SIMULATED test/boot/switch, see there)
#   etc/systemd/system/auto-upgrade.service   `Environment=` lines exactly as NixOS writes them
#                                 (builtins.toJSON "NAME=VALUE", `%` doubled) from hosts/<h>/nixfleet.nix
#   kernel initrd kernel-modules  links to files named after the kernel version (needsReboot)
#   units/<name>                  the units this system defines: real systemd unit files (Type=oneshot, the
#                                 configured shell command run by bash from a store file), which
#                                 switch-to-configuration links into the machine's systemd
#   faults                        what the host's configuration breaks (read by switch-to-configuration)
#   sw/<name>                     packages in the system's closure: derivations named <name>-<version>
#                                 (what `nix store diff-closures` compares by name and version): hello
#                                 (helloKiB KiB of padding, so its size changes too) and `packages`
# nixosConfigurations.<host>.pkgs.buildGoModule: nixos-lite's SIMULATED buildGoModule over the machine's Go
# (test/nixos-lite/go.nix), with which nix/push-bootstrap.sh builds the agent as it does on any host.
# Built and activated on a booted fleet machine (test/script/harness.ts): real systemd, real paths.
# hosts/<h>/configuration.nix is an attrset: { version ? "1"; kernel ? "6.1"; failActivation ? false; failBoot ? false;
# activationMessage ? ""; failUnits ? []; lateFailUnits ? []; units ? {}; buildSleep ? 0; hello ? "2.10"; helloKiB ? 0;
# packages ? {}; breakRemote ? ""; }
{
  outputs = { self }:
    let
      names = builtins.attrNames (builtins.readDir ./hosts);
      cat = builtins.concatStringsSep "";
      system = name:
        let
          c = { version = "1"; kernel = "6.1"; failActivation = false; failBoot = false; activationMessage = ""; failUnits = [ ];
                lateFailUnits = [ ]; units = { }; buildSleep = 0; hello = "2.10"; helloKiB = 0; packages = { }; breakRemote = ""; }
              // import (./hosts + "/${name}/configuration.nix");
          settingsFile = ./hosts + "/${name}/nixfleet.nix";
          settings = if builtins.pathExists settingsFile then import settingsFile else null;
          escape = builtins.replaceStrings [ "%" ] [ "%%" ];
          unitText = if settings == null then "" else
            "[Service]\n" + cat (map (n: "Environment=${builtins.toJSON (escape "${n}=${settings.${n}}")}\n") (builtins.attrNames settings));
          package = name: version: kib: derivation {
            name = "${name}-${version}";
            system = "x86_64-linux";
            builder = "/bin/sh";
            args = [ "-c" "echo '${name} ${version} (stand-in)' > $out; /bin/head -c ${toString (kib * 1024)} /dev/zero >> $out" ];
          };
          pkgs = { hello = package "hello" c.hello c.helloKiB; } // builtins.mapAttrs (n: v: package n v 0) c.packages;
          pkgPairs = builtins.concatStringsSep " " (map (n: "${n}=${pkgs.${n}}") (builtins.attrNames pkgs));
          kpart = what: builtins.toFile "${what}-${c.kernel}" c.kernel;
          # A real unit: the command runs from a store file (no quoting of it into ExecStart=).
          unitFile = n: builtins.toFile "unit-${n}" ''
            [Unit]
            Description=script test unit ${n}
            [Service]
            Type=oneshot
            ExecStart=/bin/bash ${builtins.toFile "unit-${n}.sh" c.units.${n}}
          '';
          unitPairs = builtins.concatStringsSep " " (map (n: "${n}=${unitFile n}") (builtins.attrNames c.units));
          faults = builtins.toFile "faults" (cat [
            "failActivation ${if c.failActivation then "1" else "0"}\n"
            "failBoot ${if c.failBoot then "1" else "0"}\n"
            "failUnits ${toString c.failUnits}\n"
            "lateFailUnits ${toString c.lateFailUnits}\n"
            "breakRemote ${c.breakRemote}\n"
          ]);
        in derivation {
          name = "nixos-system-${name}-${c.version}";
          system = "x86_64-linux";
          builder = "/bin/sh";
          inherit unitPairs faults;
          stc = ./switch-to-configuration.sh;
          message = builtins.toFile "activation-message" c.activationMessage;
          unit = builtins.toFile "auto-upgrade.service" unitText;
          hasUnit = if settings == null then "0" else "1";
          kernel = kpart "bzImage";
          initrd = kpart "initrd";
          modules = kpart "modules";
          buildSleep = toString c.buildSleep;
          inherit pkgPairs;
          args = [ "-c" ''
            set -e
            [ "$buildSleep" = 0 ] || /bin/sleep "$buildSleep"
            /bin/mkdir -p "$out/bin" "$out/etc/systemd/system" "$out/units"
            /bin/cp "$stc" "$out/bin/switch-to-configuration"
            /bin/chmod 0555 "$out/bin/switch-to-configuration"
            [ "$hasUnit" = 0 ] || /bin/cp "$unit" "$out/etc/systemd/system/auto-upgrade.service"
            /bin/cp "$faults" "$out/faults"
            /bin/cp "$message" "$out/activation-message"
            /bin/ln -s "$kernel" "$out/kernel"
            /bin/ln -s "$initrd" "$out/initrd"
            /bin/ln -s "$modules" "$out/kernel-modules"
            /bin/mkdir "$out/sw"
            for p in $pkgPairs; do /bin/ln -s "''${p#*=}" "$out/sw/''${p%%=*}"; done
            for p in $unitPairs; do /bin/cp "''${p#*=}" "$out/units/''${p%%=*}"; done
          '' ];
        };
      # SIMULATED nixpkgs.buildGoModule: nixos-lite's (copied here by the harness), the build every host does.
      buildGoModule = import ./build-go-module.nix { system = "x86_64-linux"; };
    in {
      nixosConfigurations = builtins.listToAttrs (map (n: { name = n; value = { config.system.build.toplevel = system n; pkgs = { inherit buildGoModule; }; }; }) names);
    };
}
