# nixfleet-agent, built from this folder with nixpkgs' buildGoModule. Standard library only, so there is
# nothing to vendor (vendorHash = null). The tests need Nix, git and root: they run in nixfleet's own test
# suite, not in this build. Used by ../auto-upgrade.nix (the timer's unit) and by nix/push-bootstrap.sh
# (push mode's first contact), with the host's own pkgs, so both give the same store path.
{ buildGoModule }:
buildGoModule {
  pname = "nixfleet-agent";
  version = "0.1.0";
  src = ./.;
  vendorHash = null;
  subPackages = [ "cmd/nixfleet-agent" ];
  env.CGO_ENABLED = "0";
  ldflags = [ "-s" "-w" ];
  doCheck = false;
  meta.mainProgram = "nixfleet-agent";
}
