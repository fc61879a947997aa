//go:build !nixfleet_sim_root

package settings

// simRoot: a real host's paths are the real ones. AUTO_UPGRADE_ROOT is ignored by this build; only test/script's
// build (tag nixfleet_sim_root, see root_sim.go) reads it.
func simRoot(func(string) (string, bool)) string { return "" }
