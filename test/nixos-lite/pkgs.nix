# ============================================================================
#  SIMULATION — nixos-lite `pkgs`. This is NOT nixpkgs.
#
#  Only what nixfleet's module uses. Everything here is a REAL derivation built
#  by `/bin/sh` of the machine (its Nix sandbox shows the builders /usr, so
#  they may call /bin/mkdir, /bin/chmod, /bin/ln, /bin/bash and
#  /usr/bin/shellcheck by absolute path; PATH is unset inside builders).
#
#  Tool packages (coreutils, git, gitMinimal, gzip, nix, openssh, util-linux, …) are
#  STAND-INS: on a fleet machine each `bin/` links the machine's Debian programs
#  of the same package (Nix 2.26, systemd 257, git, …), so a system's sw/bin and
#  a unit's PATH hold exactly the packages its configuration names (the module
#  tests' Nix machine, fleet/machine/nix.ts, is of the same image). Built by a
#  Nix outside that image, `bin/` is empty and commands fall through to the
#  caller's PATH. jq and nh are packages too: a host has them only if its
#  configuration adds them.
# ============================================================================
{ lib, system }:
let
  inherit (lib) concatStringsSep makeBinPath;

  # bash of the host stands in for nixpkgs' runtimeShell.
  runtimeShell = "/bin/bash";

  # `.out` is the package itself, as for a single-output nixpkgs package (`config.nix.package.out`).
  # On a fleet machine (fleet/machine) its `bin/` links the machine's Debian programs of the same package
  # (listed by the image in /usr/share/nixfleet/stock/<pname>); elsewhere it is empty.
  standIn = pname: mainProgram:
    let
      self = derivation {
        name = "${pname}-nixos-lite-standin";
        inherit system pname;
        builder = "/bin/sh";
        args = [ "-c" ''
          /bin/mkdir -p "$out/bin"
          list=/usr/share/nixfleet/stock/$pname
          if [ -f "$list" ]; then
            while read -r prog target; do /bin/ln -s "$target" "$out/bin/$prog"; done < "$list"
          fi
        '' ];
      } // {
        pname = pname;
        out = self;
        meta = { inherit mainProgram; description = "nixos-lite stand-in: bin/ links the machine's (Debian's) ${mainProgram}"; };
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
  gnutar = standIn "gnutar" "tar";
  xz = standIn "xz" "xz";
  bzip2 = standIn "bzip2" "bzip2";
  diffutils = standIn "diffutils" "diff";
  procps = standIn "procps" "ps";
  less = standIn "less" "less";
  which = standIn "which" "which";
  getent = standIn "getent" "getent";
  gawk = standIn "gawk" "awk";
  iproute2 = standIn "iproute2" "ip";
  # SIMULATED: the machine's own Go (Debian's golang-go, see go.nix); the agent is built as on a real host
  # (no simulation tag: a machine has real paths, nothing to prefix).
  buildGoModule = import ./go.nix { inherit system; };
}
