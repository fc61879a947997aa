package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/tool"
)

// Nix always gets the flakes features: a stock host need not enable them.
var nixFlags = []string{"--extra-experimental-features", "nix-command flakes"}

// The closure diff people see: at most this many lines and bytes, each line cut, then "… N more". Small on
// purpose: the deploy's stdout line is kept in Pulumi's state (and in the confirm step's triggers).
const (
	diffLines   = 40
	diffBytes   = 2048
	diffLineCut = 200
	diffTimeout = 120
	systemdUnit = "etc/systemd/system/auto-upgrade.service"
)

// validate builds the system into the `validated` out-link (a GC root). The old link goes first: a failed
// build must not leave a stale path behind. Nix's own git runs read-only on the user's checkout.
func (r *Run) validate() error {
	r.enter(PhaseValidate, "Build validation of nixosConfigurations."+r.S.FlakeHost)
	if !r.S.Validate {
		r.log("AUTO_UPGRADE_VALIDATE=false: the system is still built first (activation needs a store path)")
	}
	_ = os.Remove(r.P.Validated)
	_ = os.Remove(r.P.Diff)
	n := 0
	if v, err := strconv.Atoi(os.Getenv("GIT_CONFIG_COUNT")); err == nil && v > 0 {
		n = v
	}
	home, err := r.buildHomeEnv()
	if err != nil {
		return r.fail("cannot prepare the build's HOME in %s: %v", r.S.StateDir, err)
	}
	ref := fmt.Sprintf("%s#nixosConfigurations.%q.config.system.build.toplevel", r.S.ConfigPath, r.S.FlakeHost)
	argv := append(append([]string{"nix"}, nixFlags...), "build", "--no-write-lock-file", "--out-link", r.P.Validated, "--", ref)
	res, err := r.toolSpec(tool.Spec{
		Bound: secs(r.S.ValidateTimeout),
		Argv:  argv,
		// GIT_CONFIG_*: for git itself (older Nix runs git); the build HOME: for libgit2 (Nix >= 2.20).
		Env: append(home, "GIT_OPTIONAL_LOCKS=0", fmt.Sprintf("GIT_CONFIG_COUNT=%d", n+1),
			fmt.Sprintf("GIT_CONFIG_KEY_%d=safe.directory", n), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", n, r.S.ConfigPath)),
	})
	if err != nil {
		return err
	}
	if !res.OK() {
		report("nix build", res, true)
		return r.fail("nix build of nixosConfigurations.%s: %s", r.S.FlakeHost, tool.Summary(res.Out))
	}
	report("nix build", res, false)
	r.sys = link(r.P.Validated)
	if fi, err := os.Stat(filepath.Join(r.sys, "bin/switch-to-configuration")); r.sys == "" || err != nil || fi.Mode()&0o111 == 0 {
		return r.fail("nix build left no NixOS system at %s", r.P.Validated)
	}
	r.setNeedsReboot()
	r.log("=== Build validation PASSED: " + r.sys + " ===")
	return r.closureDiff()
}

func (r *Run) setNeedsReboot() {
	var a, b [3]string
	for i, f := range []string{"kernel", "initrd", "kernel-modules"} {
		a[i] = link(filepath.Join(r.sys, f))
		b[i] = link(filepath.Join(r.P.Booted, f))
	}
	v := decide.NeedsReboot(a, b)
	r.needsReboot = &v
}

// Colour codes (nix prints them even into a pipe) and other control characters, out of text people read.
var ansi = regexp.MustCompile("\x1b\\[[0-9;?]*[A-Za-z]")

// PlainText removes colour codes and control characters from one line.
func PlainText(s string) string {
	s = ansi.ReplaceAllString(s, "")
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) {
			return -1
		}
		return c
	}, s)
}

// BoundedLines keeps at most diffLines lines and diffBytes bytes in all, each line cut at diffLineCut bytes
// (never inside a UTF-8 character, marked "…"), then "… N more" for the lines left out.
func BoundedLines(lines []string) string {
	var out strings.Builder
	n := 0
	for _, l := range lines {
		if len(l) > diffLineCut {
			l = tool.Cut(l, diffLineCut-3) + "…"
		}
		extra := len(l)
		if out.Len() > 0 {
			extra++
		}
		if n >= diffLines || out.Len()+extra > diffBytes-24 {
			break
		}
		if out.Len() > 0 {
			out.WriteByte('\n')
		}
		out.WriteString(l)
		n++
	}
	if n != len(lines) {
		if out.Len() > 0 {
			out.WriteByte('\n')
		}
		fmt.Fprintf(&out, "… %d more", len(lines)-n)
	}
	return out.String()
}

// closureDiff: what the upgrade changes, package by package (`nix store diff-closures <running>
// <validated>`). The journal gets every line; `closure-diff` beside `validated` keeps it bounded for
// status.json and the deploy's JSON line. A diff that cannot be computed is a warning: it describes the
// build, it does not judge it.
func (r *Run) closureDiff() error {
	running := link(r.P.Current)
	if running == "" {
		r.warn("no closure diff: there is no running system at " + r.P.Current)
		return nil
	}
	argv := append(append([]string{"nix"}, nixFlags...), "store", "diff-closures", "--", running, r.sys)
	res, err := r.toolSpec(tool.Spec{Bound: secs(diffTimeout), Argv: argv, SplitStdout: true})
	if err != nil {
		return err
	}
	if !res.OK() {
		report("nix store diff-closures", res, false)
		r.warn(fmt.Sprintf("no closure diff of %s and %s: %s", running, r.sys, PlainText(tool.Summary(res.Out))))
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(res.Stdout)))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		lines = append(lines, PlainText(sc.Text()))
	}
	tool.Journal("closure diff", []byte(strings.Join(lines, "\n")))
	diff := BoundedLines(lines)
	if err := os.WriteFile(r.P.Diff, []byte(diff), 0o644); err != nil {
		r.warn("cannot keep the closure diff: " + err.Error())
		return nil
	}
	r.log(fmt.Sprintf("=== Closure diff %s -> %s: %d line(s) ===", running, r.sys, countLines(diff)))
	if diff != "" {
		for _, l := range strings.Split(diff, "\n") {
			fmt.Fprintln(os.Stderr, tool.Cut(l, tool.EchoCut))
		}
	}
	return nil
}

func countLines(s string) int {
	if s == "" {
		return 0
	}
	return strings.Count(s, "\n") + 1
}

var envLine = regexp.MustCompile(`^Environment="(.*)"$`)
var settingName = regexp.MustCompile(`^AUTO_UPGRADE_[A-Z0-9_]+$`)

// checkSettings (push): the settings this process got must be the ones the validated system's timer will
// use. NixOS writes `Environment=${builtins.toJSON "${n}=${v}"}` with `%` doubled: undo both, compare.
func (r *Run) checkSettings() error {
	unit := filepath.Join(r.sys, systemdUnit)
	b, err := os.ReadFile(unit)
	if err != nil {
		return r.fail("%s has no %s: is hosts/%s/nixfleet.nix imported?", r.sys, systemdUnit, r.S.FlakeHost)
	}
	var diffs []string
	for _, line := range strings.Split(string(b), "\n") {
		m := envLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var body string
		if err := json.Unmarshal([]byte(`"`+m[1]+`"`), &body); err != nil {
			continue
		}
		body = strings.ReplaceAll(body, "%%", "%")
		name, value, _ := strings.Cut(body, "=")
		if !settingName.MatchString(name) {
			continue
		}
		if ours := os.Getenv(name); ours != value {
			diffs = append(diffs, fmt.Sprintf("%s: this deploy has '%s', the validated system has '%s'", name, tool.Cut(ours, 200), tool.Cut(value, 200)))
		}
	}
	if len(diffs) > 0 {
		return r.fail("settings differ from the validated system (nothing activated): %s; ", strings.Join(diffs, "; "))
	}
	return nil
}
