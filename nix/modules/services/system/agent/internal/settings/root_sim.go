//go:build nixfleet_sim_root

package settings

// SIMULATION ONLY (build tag nixfleet_sim_root, added only by test/script's buildGoModule stand-in; never
// by package.nix, nor by nixos-lite, whose fleet machines have real paths): AUTO_UPGRADE_ROOT prefixes
// /run/current-system, /run/booted-system and /nix/var/nix/profiles/system, so a test host can live in a
// directory of the deployer.
func simRoot(lookup func(string) (string, bool)) string {
	v, _ := lookup("AUTO_UPGRADE_ROOT")
	return v
}
