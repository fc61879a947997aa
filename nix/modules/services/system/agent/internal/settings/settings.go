// Package settings reads the agent's settings: the AUTO_UPGRADE_* environment (docs/rollout.md §3), the
// only place they are parsed. The module writes them into auto-upgrade.service; push mode passes them as
// quoted words. Every problem is collected, each naming the variable and what is allowed.
package settings

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Patterns shared with the stack config schema and the module (test/unit-names.test.ts pins UnitRE).
var (
	UnitRE  = regexp.MustCompile(`^[A-Za-z0-9:_.\\][-A-Za-z0-9:_.\\]*(@[-A-Za-z0-9:_.\\]*)?\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)$`)
	userRE  = regexp.MustCompile(`^[A-Za-z0-9_][-A-Za-z0-9_.]*[$]?$`)
	hostRE  = regexp.MustCompile(`^[A-Za-z0-9_][-A-Za-z0-9_.]*$`)
	TokenRE = regexp.MustCompile(`^[0-9a-f]{16}(-r[0-9]{1,6})?$`)
	RelRE   = regexp.MustCompile(`^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$`)
	intRE   = regexp.MustCompile(`^[1-9][0-9]{0,6}$`)
	dotdot  = regexp.MustCompile(`(^|/)\.\.(/|$)`)
)

// DefaultStateDir is where the state lives unless AUTO_UPGRADE_STATE_DIR says otherwise.
const DefaultStateDir = "/var/lib/auto-upgrade"

// Settings are one run's settings; durations are whole seconds.
type Settings struct {
	ConfigPath      string
	FlakeHost       string
	Owner           string // empty: the checkout's owner
	Remote          string
	Branch          string
	Validate        bool
	Commit          bool
	StateDir        string
	HealthCheck     bool
	HealthTimeout   int
	ConfirmTimeout  int
	LeaseWait       int
	HooksTimeout    int
	ValidateTimeout int
	SwitchTimeout   int
	CommitTimeout   int
	Hooks           []string
	RequiredHooks   []string
	HealthUnits     []string
}

// Default values, as the module and docs/rollout.md §3 state them.
var defaults = map[string]string{
	"AUTO_UPGRADE_REMOTE":           "origin",
	"AUTO_UPGRADE_BRANCH":           "main",
	"AUTO_UPGRADE_VALIDATE":         "true",
	"AUTO_UPGRADE_COMMIT":           "false",
	"AUTO_UPGRADE_STATE_DIR":        DefaultStateDir,
	"AUTO_UPGRADE_HEALTH_CHECK":     "true",
	"AUTO_UPGRADE_HEALTH_TIMEOUT":   "120",
	"AUTO_UPGRADE_CONFIRM_TIMEOUT":  "30",
	"AUTO_UPGRADE_LEASE_WAIT":       "120",
	"AUTO_UPGRADE_HOOKS_TIMEOUT":    "900",
	"AUTO_UPGRADE_VALIDATE_TIMEOUT": "3600",
	"AUTO_UPGRADE_SWITCH_TIMEOUT":   "600",
	"AUTO_UPGRADE_COMMIT_TIMEOUT":   "300",
}

// Errors lists every problem found.
type Errors []string

func (e Errors) Error() string { return strings.Join(e, "; ") }

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// FromEnv reads the settings from the process environment.
func FromEnv() (*Settings, error) { return Parse(os.LookupEnv) }

// Parse reads the settings through lookup (os.LookupEnv, or a map in tests). An unset or empty variable
// takes its default, as the script's ${VAR:-default} did.
func Parse(lookup func(string) (string, bool)) (*Settings, error) {
	var errs Errors
	get := func(name string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return defaults[name]
	}
	boolean := func(name string) bool {
		v := get(name)
		if v != "true" && v != "false" {
			errs = append(errs, fmt.Sprintf("%s must be 'true' or 'false', got '%s'", name, cut(v, 100)))
		}
		return v == "true"
	}
	seconds := func(name string) int {
		v := get(name)
		if !intRE.MatchString(v) {
			errs = append(errs, fmt.Sprintf("%s must be a whole number of seconds (1-9999999), got '%s'", name, cut(v, 100)))
			return 0
		}
		n, _ := strconv.Atoi(v)
		return n
	}
	abs := func(name, v string) {
		if !strings.HasPrefix(v, "/") || dotdot.MatchString(v) {
			errs = append(errs, fmt.Sprintf("%s must be an absolute path without '..', got '%s'", name, cut(v, 200)))
		}
	}
	units := func(name string) []string {
		out := strings.Fields(get(name))
		for _, u := range out {
			if len(u) > 255 || !UnitRE.MatchString(u) {
				errs = append(errs, fmt.Sprintf("%s: '%s' is not a systemd unit name (e.g. chezmoi-pre-update.service: letters, digits, ':', '-', '_', '.', optional @instance, a unit type suffix)", name, cut(u, 100)))
			}
		}
		return out
	}
	s := &Settings{
		ConfigPath: get("AUTO_UPGRADE_CONFIG_PATH"),
		FlakeHost:  get("AUTO_UPGRADE_FLAKE_HOST"),
		Owner:      get("AUTO_UPGRADE_USER"),
		Remote:     get("AUTO_UPGRADE_REMOTE"),
		Branch:     get("AUTO_UPGRADE_BRANCH"),
		StateDir:   get("AUTO_UPGRADE_STATE_DIR"),
	}
	if s.ConfigPath == "" {
		errs = append(errs, "AUTO_UPGRADE_CONFIG_PATH is required (the absolute path of the nix-config checkout)")
	} else {
		abs("AUTO_UPGRADE_CONFIG_PATH", s.ConfigPath)
	}
	// It becomes a flake reference: '#' or '?' would select another attribute or flake.
	if strings.ContainsAny(s.ConfigPath, "#?") {
		errs = append(errs, fmt.Sprintf("AUTO_UPGRADE_CONFIG_PATH must not contain '#' or '?', got '%s'", cut(s.ConfigPath, 200)))
	}
	if strings.IndexFunc(s.ConfigPath, unicode.IsControl) >= 0 {
		errs = append(errs, "AUTO_UPGRADE_CONFIG_PATH must not contain control characters")
	}
	if !hostRE.MatchString(s.FlakeHost) {
		errs = append(errs, fmt.Sprintf("AUTO_UPGRADE_FLAKE_HOST must name nixosConfigurations.<name> (letters, digits, '-', '_', '.'), got '%s'", cut(s.FlakeHost, 100)))
	}
	if s.Owner != "" && !userRE.MatchString(s.Owner) {
		errs = append(errs, fmt.Sprintf("AUTO_UPGRADE_USER must be a user name (letters, digits, '_', '-', '.') or empty, got '%s'", cut(s.Owner, 100)))
	}
	if strings.HasPrefix(s.Remote, "-") || strings.HasPrefix(s.Branch, "-") {
		errs = append(errs, "AUTO_UPGRADE_REMOTE and AUTO_UPGRADE_BRANCH must be non-empty and not start with '-'")
	}
	s.Validate = boolean("AUTO_UPGRADE_VALIDATE")
	s.Commit = boolean("AUTO_UPGRADE_COMMIT")
	s.HealthCheck = boolean("AUTO_UPGRADE_HEALTH_CHECK")
	abs("AUTO_UPGRADE_STATE_DIR", s.StateDir)
	s.HealthTimeout = seconds("AUTO_UPGRADE_HEALTH_TIMEOUT")
	s.ConfirmTimeout = seconds("AUTO_UPGRADE_CONFIRM_TIMEOUT")
	s.LeaseWait = seconds("AUTO_UPGRADE_LEASE_WAIT")
	s.HooksTimeout = seconds("AUTO_UPGRADE_HOOKS_TIMEOUT")
	s.ValidateTimeout = seconds("AUTO_UPGRADE_VALIDATE_TIMEOUT")
	s.SwitchTimeout = seconds("AUTO_UPGRADE_SWITCH_TIMEOUT")
	s.CommitTimeout = seconds("AUTO_UPGRADE_COMMIT_TIMEOUT")
	s.Hooks = units("AUTO_UPGRADE_HOOKS")
	s.RequiredHooks = units("AUTO_UPGRADE_REQUIRED_HOOKS")
	s.HealthUnits = units("AUTO_UPGRADE_HEALTH_UNITS")
	for _, u := range s.RequiredHooks {
		if !Contains(s.Hooks, u) {
			errs = append(errs, fmt.Sprintf("AUTO_UPGRADE_REQUIRED_HOOKS: '%s' is not in AUTO_UPGRADE_HOOKS (required hooks must be a subset)", u))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// Contains says whether xs holds x.
func Contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Paths are the host's system links and the agent's state files.
type Paths struct {
	Current, Booted, Profile             string
	Status, Push, Lease, Lock, Validated string
	Golden, Previous, Diff, Confirm      string
	Warnings, Pushed, Agent              string
	Pending, Rejected                    string
}

// Paths of this host: the real ones (the simulated fleet's machines have them too).
func (s *Settings) Paths() Paths {
	d := s.StateDir
	return Paths{
		Current:   "/run/current-system",
		Booted:    "/run/booted-system",
		Profile:   "/nix/var/nix/profiles/system",
		Status:    d + "/status.json",
		Push:      d + "/push.json",
		Lease:     d + "/lease",
		Lock:      d + "/lock",
		Validated: d + "/validated",
		Golden:    d + "/golden",
		Previous:  d + "/previous",
		Diff:      d + "/closure-diff",
		Confirm:   d + "/confirm",
		Warnings:  d + "/warnings",
		Pushed:    d + "/pushed",
		Agent:     d + "/agent",
		Pending:   d + "/pending",
		Rejected:  d + "/rejected",
	}
}
