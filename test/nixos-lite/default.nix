# ============================================================================
#  SIMULATION — nixos-lite: a tiny stand-in for nixpkgs' lib, module system,
#  pkgs and nixosSystem, so real Nix can evaluate and build nixfleet's NixOS
#  module offline. This is NOT nixpkgs and NOT NixOS. See ./README.md.
#
#    let nixosLite = import ./nixos-lite; in
#    nixosLite.nixosSystem { system = "x86_64-linux"; modules = [ ./hosts/h/configuration.nix ]; }
# ============================================================================
let
  lib = import ./lib.nix;
  pkgsFor = system: import ./pkgs.nix { inherit lib system; };
  modulesPath = "${toString ./.}/nixos-modules-SIMULATED";
  defaultSystem = builtins.currentSystem or (throw
    "nixos-lite: pass `system` to nixosSystem (pure evaluation, e.g. in a flake, has no builtins.currentSystem)");

  # nixpkgs: lib.nixosSystem. Returns { config; options; pkgs; definedOptions; }.
  nixosSystem = { modules, system ? defaultSystem, specialArgs ? { } }:
    let
      pkgs = pkgsFor system;
      evaluation = lib.evalModules {
        modules = [ ./base.nix ./toplevel.nix ] ++ modules;
        # nixos/lib/eval-config.nix passes modulesPath (nixpkgs' nixos/modules). nixos-lite has no
        # such tree: the path only names the stand-ins keyed under it (base.nix), so that
        # `disabledModules = [ "tasks/auto-upgrade.nix" ]` works as on NixOS.
        specialArgs = { inherit pkgs modulesPath; nixosLite = { inherit system evaluation; }; } // specialArgs;
      };
    in
    evaluation // { inherit pkgs; };
in
{
  inherit lib pkgsFor nixosSystem;
  inherit (lib) evalModules;
}
