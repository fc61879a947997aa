package settings

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var minimal = map[string]string{"AUTO_UPGRADE_CONFIG_PATH": "/home/evie/nix-config", "AUTO_UPGRADE_FLAKE_HOST": "malphas"}

func TestDefaults(t *testing.T) {
	s, err := Parse(env(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{ConfigPath: "/home/evie/nix-config", FlakeHost: "malphas", Remote: "origin", Branch: "main", Validate: true,
		StateDir: "/var/lib/auto-upgrade", HealthCheck: true, HealthTimeout: 120, ConfirmTimeout: 30, LeaseWait: 120,
		HooksTimeout: 900, ValidateTimeout: 3600, SwitchTimeout: 600, CommitTimeout: 300, Hooks: []string{}, RequiredHooks: []string{}, HealthUnits: []string{}}
	if got := *s; strings.Join(got.Hooks, "") != "" || got.ConfigPath != want.ConfigPath || got.Remote != want.Remote || got.Branch != want.Branch ||
		got.Validate != want.Validate || got.Commit || got.StateDir != want.StateDir || got.HealthCheck != want.HealthCheck ||
		got.HealthTimeout != 120 || got.ConfirmTimeout != 30 || got.LeaseWait != 120 || got.HooksTimeout != 900 ||
		got.ValidateTimeout != 3600 || got.SwitchTimeout != 600 || got.CommitTimeout != 300 {
		t.Fatalf("defaults: got %+v", got)
	}
	p := s.Paths()
	if p.Current != "/run/current-system" || p.Profile != "/nix/var/nix/profiles/system" || p.Status != "/var/lib/auto-upgrade/status.json" || p.Agent != "/var/lib/auto-upgrade/agent" {
		t.Fatalf("paths of a real host: %+v", p)
	}
}

func TestEmptyTakesTheDefault(t *testing.T) {
	m := map[string]string{"AUTO_UPGRADE_REMOTE": "", "AUTO_UPGRADE_HEALTH_TIMEOUT": ""}
	for k, v := range minimal {
		m[k] = v
	}
	s, err := Parse(env(m))
	if err != nil || s.Remote != "origin" || s.HealthTimeout != 120 {
		t.Fatalf("%v %+v", err, s)
	}
}

func TestErrorsNameTheVariableAndWhatIsAllowed(t *testing.T) {
	for _, c := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"AUTO_UPGRADE_CONFIG_PATH": ""}, "AUTO_UPGRADE_CONFIG_PATH is required"},
		{map[string]string{"AUTO_UPGRADE_CONFIG_PATH": "relative/x"}, "AUTO_UPGRADE_CONFIG_PATH must be an absolute path without '..', got 'relative/x'"},
		{map[string]string{"AUTO_UPGRADE_CONFIG_PATH": "/a/../b"}, "must be an absolute path without '..'"},
		{map[string]string{"AUTO_UPGRADE_CONFIG_PATH": "/a#b"}, "must not contain '#' or '?'"},
		{map[string]string{"AUTO_UPGRADE_CONFIG_PATH": "/a\nb"}, "AUTO_UPGRADE_CONFIG_PATH must not contain control characters"},
		{map[string]string{"AUTO_UPGRADE_FLAKE_HOST": "a b"}, "AUTO_UPGRADE_FLAKE_HOST must name nixosConfigurations.<name>"},
		{map[string]string{"AUTO_UPGRADE_USER": "evil;rm"}, "AUTO_UPGRADE_USER must be a user name"},
		{map[string]string{"AUTO_UPGRADE_BRANCH": "-x"}, "must be non-empty and not start with '-'"},
		{map[string]string{"AUTO_UPGRADE_COMMIT": "yes"}, "AUTO_UPGRADE_COMMIT must be 'true' or 'false', got 'yes'"},
		{map[string]string{"AUTO_UPGRADE_HEALTH_TIMEOUT": "soon"}, "AUTO_UPGRADE_HEALTH_TIMEOUT must be a whole number of seconds (1-9999999), got 'soon'"},
		{map[string]string{"AUTO_UPGRADE_SWITCH_TIMEOUT": "0"}, "AUTO_UPGRADE_SWITCH_TIMEOUT must be a whole number"},
		{map[string]string{"AUTO_UPGRADE_HEALTH_UNITS": "ok.service $(reboot)"}, "AUTO_UPGRADE_HEALTH_UNITS: '$(reboot)' is not a systemd unit name"},
		{map[string]string{"AUTO_UPGRADE_HOOKS": "a.service", "AUTO_UPGRADE_REQUIRED_HOOKS": "b.service"}, "AUTO_UPGRADE_REQUIRED_HOOKS: 'b.service' is not in AUTO_UPGRADE_HOOKS"},
		{map[string]string{"AUTO_UPGRADE_STATE_DIR": "state"}, "AUTO_UPGRADE_STATE_DIR must be an absolute path"},
	} {
		m := map[string]string{}
		for k, v := range minimal {
			m[k] = v
		}
		for k, v := range c.set {
			m[k] = v
		}
		_, err := Parse(env(m))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error containing %q", c.set, err, c.want)
		}
	}
}

func TestEveryProblemIsListed(t *testing.T) {
	_, err := Parse(env(map[string]string{"AUTO_UPGRADE_COMMIT": "yes", "AUTO_UPGRADE_HEALTH_TIMEOUT": "x"}))
	if errs, ok := err.(Errors); !ok || len(errs) != 4 {
		t.Fatalf("want 4 problems (path, host, commit, timeout), got %v", err)
	}
}

func TestUnitNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"chezmoi-pre-update.service": true, "getty@tty1.service": true, "foo\\x2dbar.mount": true, ":weird_.timer": true,
		"-x.service": false, "foo": false, "a b.service": false, "a@b@c.service": false, "$(x).service": false, "ünï.service": false,
		"foo.service\n": false, "a%i.service": false,
	} {
		if UnitRE.MatchString(name) != ok {
			t.Errorf("UnitRE(%q) = %v, want %v", name, !ok, ok)
		}
	}
}

func TestTokens(t *testing.T) {
	for tok, ok := range map[string]bool{"0123456789abcdef": true, "0123456789abcdef-r3": true, "0123456789ABCDEF": false, "../../x": false, "0123456789abcdef-r": false} {
		if TokenRE.MatchString(tok) != ok {
			t.Errorf("TokenRE(%q) = %v", tok, !ok)
		}
	}
}
