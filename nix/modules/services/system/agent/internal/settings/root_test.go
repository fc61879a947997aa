//go:build !nixfleet_sim_root

package settings

import "testing"

func TestTheRealBuildIgnoresAUTO_UPGRADE_ROOT(t *testing.T) {
	m := map[string]string{"AUTO_UPGRADE_ROOT": "/tmp/sim"}
	for k, v := range minimal {
		m[k] = v
	}
	s, err := Parse(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if s.Root != "" || s.Paths().Current != "/run/current-system" {
		t.Fatalf("root %q, current %q", s.Root, s.Paths().Current)
	}
}
