# SIMULATION — nixos-lite as a flake, shaped like nixpkgs' (`inputs.nixpkgs.lib.nixosSystem`).
# Not nixpkgs; see ./README.md.
{
  description = "nixos-lite: SIMULATED nixpkgs lib/module system/pkgs for offline tests of nixfleet";
  outputs = { self }:
    let lite = import ./default.nix; in
    {
      lib = lite.lib // { inherit (lite) nixosSystem; };
      legacyPackages = builtins.listToAttrs (map (system: { name = system; value = lite.pkgsFor system; })
        [ "x86_64-linux" "aarch64-linux" ]);
      nixosLite = lite;
    };
}
