# ============================================================================
#  SIMULATION — nixos-lite `pkgs`. This is NOT nixpkgs.
#
#  Only what nixfleet's module uses. Everything here is a REAL derivation built
#  by `/bin/sh` on the host (Debian's Nix runs with `sandbox = false`, so the
#  builders may call /bin/mkdir, /bin/chmod, /bin/ln, /bin/bash and
#  /usr/bin/shellcheck by absolute path; PATH is unset inside builders).
#
#  Tool packages (coreutils, git, gitMinimal, gzip, nix, openssh, util-linux, …) are
#  STAND-INS: each is a derivation with an EMPTY `bin/`. writeShellApplication
#  puts their `bin/` first on PATH exactly like nixpkgs does, but since they are
#  empty every command falls through to the `$PATH` the script was started
#  with — i.e. the host's real tools (or the fleet's shims for `nh`,
#  `systemctl`, `logger`).
# ============================================================================
{ lib, system }:
let
  inherit (lib) concatStringsSep makeBinPath;

  # bash of the host stands in for nixpkgs' runtimeShell.
  runtimeShell = "/bin/bash";

  # `.out` is the package itself, as for a single-output nixpkgs package (`config.nix.package.out`).
  standIn = pname: mainProgram:
    let
      self = derivation {
        name = "${pname}-nixos-lite-standin";
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" "/bin/mkdir -p \"$out/bin\"" ];
      } // {
        pname = pname;
        out = self;
        meta = { inherit mainProgram; description = "nixos-lite stand-in: empty bin/, the host's ${mainProgram} is used via PATH"; };
      };
    in
    self;

  # nixpkgs: pkgs.writeShellApplication. Writes `$out/bin/<name>` with the
  # shebang, `set -o errexit/nounset/pipefail` and the PATH of runtimeInputs;
  # checks it with `bash -n` and, as nixpkgs does, with shellcheck (when the
  # host has /usr/bin/shellcheck): a script that fails shellcheck fails to build.
  writeShellApplication =
    { name
    , text
    , runtimeInputs ? [ ]
    , runtimeEnv ? null
    , bashOptions ? [ "errexit" "nounset" "pipefail" ]
    , excludeShellChecks ? [ ]
    , checkPhase ? null
    , meta ? { }
    , ...
    }:
    let
      script =
        "#!${runtimeShell}\n"
        + concatStringsSep "" (map (o: "set -o ${o}\n") bashOptions)
        + (if runtimeEnv == null then "" else
          concatStringsSep "" (map (n: "export ${n}=${lib.escapeShellArg runtimeEnv.${n}}\n") (builtins.attrNames runtimeEnv)))
        + (if runtimeInputs == [ ] then "" else "\nexport PATH=\"${makeBinPath runtimeInputs}:$PATH\"\n")
        + "\n" + text + "\n";
      excludes = if excludeShellChecks == [ ] then "" else "--exclude=${concatStringsSep "," excludeShellChecks}";
    in
    derivation {
      inherit name system;
      builder = "/bin/sh";
      exeName = name;
      inherit script excludes;
      args = [
        "-c"
        ''
          set -e
          /bin/mkdir -p "$out/bin"
          target="$out/bin/$exeName"
          printf '%s' "$script" > "$target"
          /bin/chmod 0555 "$target"
          if [ -x /bin/bash ]; then /bin/bash -n "$target"; fi
          if [ -x /usr/bin/shellcheck ]; then /usr/bin/shellcheck $excludes "$target"; fi
        ''
      ];
    } // {
      meta = { mainProgram = name; } // meta;
      inherit text runtimeInputs;
    };

  writeText = name: text: derivation {
    inherit name system text;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s' \"$text\" > \"$out\"" ];
  };
in
{
  inherit system lib runtimeShell writeShellApplication writeText;
  nixosLite = true; # marker: this is the simulation, not nixpkgs
  # Each name is a real nixpkgs attribute; a stock NixOS system has only those its configuration
  # pulls in (jq and nh are packages, not part of a host unless configured).
  bash = standIn "bash" "bash";
  coreutils = standIn "coreutils" "ls";
  findutils = standIn "findutils" "find";
  gnugrep = standIn "gnugrep" "grep";
  gnused = standIn "gnused" "sed";
  gzip = standIn "gzip" "gzip";
  git = standIn "git" "git";
  gitMinimal = standIn "git-minimal" "git";
  jq = standIn "jq" "jq";
  nh = standIn "nh" "nh";
  nix = standIn "nix" "nix";
  openssh = standIn "openssh" "ssh";
  systemd = standIn "systemd" "systemctl";
  util-linux = standIn "util-linux" "flock";
  # SIMULATED: the machine's own Go (see go.nix). Tag nixfleet_sim_root: this simulation's agent reads
  # AUTO_UPGRADE_ROOT (the sim root of a fleet host); the real build never does.
  buildGoModule = args: import ./go.nix { inherit system; } (args // { tags = (args.tags or [ ]) ++ [ "nixfleet_sim_root" ]; });
}
