package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/tool"
)

func stc(system string) string { return filepath.Join(system, "bin/switch-to-configuration") }

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// failedUnits is the sorted set of units systemd lists as failed.
func (r *Run) failedUnits() ([]string, error) {
	res, err := r.toolSpec(toolSpecOut(60, "systemctl", "list-units", "--state=failed", "--plain", "--no-legend"))
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, l := range strings.Split(string(res.Stdout), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			set[f[0]] = true
		}
	}
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}

func toolSpecOut(bound int, argv ...string) tool.Spec {
	return tool.Spec{Bound: secs(bound), Argv: argv, SplitStdout: true}
}

// rolledBack ends the run after re-activating the system that ran before; profile and boot entry were
// never moved. It runs to its end even when the agent is being stopped.
func (r *Run) rollback(why string) error {
	r.inFlight = false
	r.log(fmt.Sprintf("=== Activation of %s ROLLED BACK: %s ===", r.sys, why))
	r.Phase = PhaseActivate
	r.writeStatus("running", "rolling back: "+why)
	how := "re-activated " + r.prev
	reactivated := false
	if r.prev == "" || !executable(stc(r.prev)) {
		how = "no previous system to re-activate"
	} else if res := r.must(r.S.SwitchTimeout, stc(r.prev), "test"); !res.OK() {
		report("switch-to-configuration (rollback)", res, true)
		how = fmt.Sprintf("re-activating %s ALSO FAILED: %s", r.prev, tool.Summary(res.Out))
	} else {
		reactivated = true
	}
	// The activation has ended. A failed re-activation keeps the record: the next run tries it again first.
	if !decide.KeepPreviousRecord(r.prev, reactivated) {
		_ = os.Remove(r.P.Previous)
	}
	note := r.endPush(decide.OutcomeRolledBack)
	r.log(fmt.Sprintf("=== ROLLED BACK (%s); profile and boot entry untouched%s ===", how, note))
	r.writeStatus("rolled-back", fmt.Sprintf("ROLLED BACK: %s (%s; profile and boot entry untouched)%s", why, how, note))
	r.final = true
	r.releaseLease()
	return &Error{Phase: r.Phase, Kind: RolledBack, Why: why, Reported: true}
}

// recordPrevious keeps the system running now as `previous` (a GC root, so it can still be re-activated)
// before `test` changes it.
func (r *Run) recordPrevious() error {
	_ = os.Remove(r.P.Previous)
	if r.prev == "" {
		return nil
	}
	res, err := r.tool(r.S.SwitchTimeout, "nix-store", "--realise", r.prev, "--add-root", r.P.Previous, "--indirect")
	if err != nil {
		return err
	}
	if !res.OK() {
		report("nix-store", res, true)
		return r.fail("cannot record the running system %s at %s (nothing activated): %s", r.prev, r.P.Previous, tool.Summary(res.Out))
	}
	return nil
}

// settle ends an activation that was stopped before it ended (a signal now, or SIGKILL / power loss found
// by a later run), so the host is on one side again: how it did, which side ("old"|"new"), and whether it
// worked (if not, `previous` is kept and the next run tries again).
func (r *Run) settle() (how, side string, ok bool) {
	prev, cur, prof := link(r.P.Previous), link(r.P.Current), link(r.P.Profile)
	side = "old"
	switch decide.SettleHow(prev, cur, prof) {
	case decide.SettleGone:
		how = fmt.Sprintf("the recorded previous system is gone (%s does not resolve); nothing re-activated", r.P.Previous)
	case decide.SettleAlreadyOld:
		how = "the host already runs the previous system " + prev
	case decide.SettleFinishBoot:
		side = "new"
		if res := r.must(r.S.SwitchTimeout, stc(cur), "boot"); !res.OK() {
			report("switch-to-configuration (settle)", res, true)
			return fmt.Sprintf("the profile had moved to %s; writing its boot entry FAILED: %s", cur, tool.Summary(res.Out)), side, false
		}
		how = fmt.Sprintf("the profile had moved to %s: wrote its boot entry", cur)
	case decide.SettleReactivate:
		if res := r.must(r.S.SwitchTimeout, stc(prev), "test"); !res.OK() {
			report("switch-to-configuration (settle)", res, true)
			return fmt.Sprintf("re-activating the previous system %s FAILED: %s", prev, tool.Summary(res.Out)), side, false
		}
		c := cur
		if c == "" {
			c = "?"
		}
		how = fmt.Sprintf("re-activated the previous system %s (it ran before %s was half activated)", prev, c)
	}
	_ = os.Remove(r.P.Previous)
	return how, side, true
}

// recoverInterrupted: at the start of a run, under the lease, an activation that never ended (its
// activator was SIGKILLed, the power went) is settled first, loudly, so the half-activated system is never
// taken for the previous one.
func (r *Run) recoverInterrupted() error {
	if !exists(r.P.Previous) {
		return nil
	}
	cur := link(r.P.Current)
	if cur == "" {
		cur = "?"
	}
	r.enter(PhaseActivate, fmt.Sprintf("An earlier activation never ended (running %s, previous %s): settling it first", cur, link(r.P.Previous)))
	how, _, ok := r.settle()
	if !ok {
		return r.fail("an earlier activation never ended and settling it failed: %s. The host runs %s; fix the cause and run again, or accept the running system with: rm %s", how, cur, shellQuote(r.P.Previous))
	}
	r.warn("an earlier activation never ended (its activator was killed or the power went): " + how)
	return nil
}

// healthGate: no unit newly failed, every health unit starts and is not failed, and (timer) the host still
// reaches its remote if it did before. Bounded by the health timeout as a whole. "" means healthy.
func (r *Run) healthGate(before []string) (string, error) {
	end := time.Now().Add(secs(r.S.HealthTimeout))
	after, err := r.failedUnits()
	if err != nil {
		return "", err
	}
	var newly []string
	for _, u := range after {
		if i := sort.SearchStrings(before, u); i >= len(before) || before[i] != u {
			newly = append(newly, u)
		}
	}
	if len(newly) > 0 {
		return "units failed after activation: " + strings.Join(newly, " "), nil
	}
	for _, u := range r.S.HealthUnits {
		left := int(time.Until(end).Seconds())
		if left <= 0 {
			return fmt.Sprintf("health gate took longer than AUTO_UPGRADE_HEALTH_TIMEOUT=%d s (at %s)", r.S.HealthTimeout, u), nil
		}
		res, err := r.tool(left, "systemctl", "start", "--", u)
		if err != nil {
			return "", err
		}
		failed := false
		if res.OK() {
			if failed, err = r.unitFailed(u); err != nil {
				return "", err
			}
		}
		if !res.OK() || failed {
			report(u, res, false)
			return fmt.Sprintf("health unit %s failed: %s", u, tool.Summary(res.Out)), nil
		}
	}
	// The timer's gate: the host still reaches its remote (a switch that breaks networking rolls back). If
	// the fetch before the build already failed, the switch did not break it: no reason to roll back.
	if r.Mode == "timer" && r.remoteOK {
		left := int(time.Until(end).Seconds())
		var res tool.Result
		if left > 0 {
			if res, err = r.tool(left, r.gitArgv("ls-remote", "--quiet", "--exit-code", "--", r.S.Remote)...); err != nil {
				return "", err
			}
		}
		if left <= 0 || !res.OK() {
			report("git", res, false)
			return fmt.Sprintf("cannot reach the git remote %s after activation (git ls-remote): %s", r.S.Remote, tool.Summary(res.Out)), nil
		}
	}
	return "", nil
}

// awaitConfirmation (push): the deployer's `confirm T` over a new connection writes the token.
func (r *Run) awaitConfirmation() (bool, error) {
	end := time.Now().Add(secs(r.S.ConfirmTimeout))
	for {
		if b, err := os.ReadFile(r.P.Confirm); err == nil && strings.TrimSpace(string(b)) == r.Token {
			return true, nil
		}
		left := time.Until(end)
		if left <= 0 {
			return false, nil
		}
		if err := r.wait(min(left, 5*time.Second), 0); err != nil {
			return false, err
		}
	}
}

// activateSafely: `test` → health gate → [push: confirmation] → profile → boot entry → golden root.
// Any failure before the profile moved re-activates the system that ran before.
func (r *Run) activateSafely() error {
	r.prev = link(r.P.Current)
	// Every NixOS host runs a system; without one there is nothing to roll back to: nothing is activated.
	if r.prev == "" {
		return r.fail("no running system at %s: not a NixOS host; nothing activated", r.P.Current)
	}
	before, err := r.failedUnits()
	if err != nil {
		return err
	}
	r.enter(PhaseActivate, fmt.Sprintf("Activating %s (switch-to-configuration test)", r.sys))
	if err := r.recordPrevious(); err != nil {
		return err
	}
	r.inFlight = true
	res, err := r.tool(r.S.SwitchTimeout, stc(r.sys), "test")
	if err != nil {
		return err
	}
	if !res.OK() {
		report("switch-to-configuration", res, true)
		return r.rollback(fmt.Sprintf("switch-to-configuration test of %s exited %d: %s", r.sys, res.Code, tool.Summary(res.Out)))
	}
	report("switch-to-configuration", res, false)
	if r.S.HealthCheck {
		r.enter(PhaseHealth, "Health gate")
		why, err := r.healthGate(before)
		if err != nil {
			return err
		}
		if why != "" {
			return r.rollback("health gate: " + why)
		}
	}
	if r.Mode == "push" {
		r.enter(PhaseAwaiting, fmt.Sprintf("Awaiting confirmation of rollout %s (at most %d s)", r.Token, r.S.ConfirmTimeout))
		ok, err := r.awaitConfirmation()
		if err != nil {
			return err
		}
		if !ok {
			return r.rollback(fmt.Sprintf("no confirmation of rollout %s within %d s (the deployer could not reach the host again)", r.Token, r.S.ConfirmTimeout))
		}
	}
	r.enter(PhaseBoot, "Setting the profile and the boot entry to "+r.sys)
	if res, err = r.tool(r.S.SwitchTimeout, "nix-env", "-p", r.P.Profile, "--set", r.sys); err != nil {
		return err
	}
	if !res.OK() {
		report("nix-env", res, true)
		return r.rollback(fmt.Sprintf("nix-env -p %s --set %s: %s", r.P.Profile, r.sys, tool.Summary(res.Out)))
	}
	if res, err = r.tool(r.S.SwitchTimeout, stc(r.sys), "boot"); err != nil {
		return err
	}
	if !res.OK() {
		report("switch-to-configuration", res, true)
		why := fmt.Sprintf("switch-to-configuration boot of %s: %s", r.sys, tool.Summary(res.Out))
		// The profile moved already: put it back (and the boot entry with it) before re-activating.
		if r.must(r.S.SwitchTimeout, "nix-env", "-p", r.P.Profile, "--set", r.prev).OK() {
			if !r.must(r.S.SwitchTimeout, stc(r.prev), "boot").OK() {
				why += "; restoring the boot entry of " + r.prev + " FAILED too"
			}
		}
		return r.rollback(why)
	}
	r.inFlight = false
	_ = os.Remove(r.P.Previous)
	if res, err = r.tool(r.S.SwitchTimeout, "nix-store", "--realise", r.sys, "--add-root", r.P.Golden, "--indirect"); err != nil {
		return err
	}
	if !res.OK() {
		report("nix-store", res, false)
		r.warn(fmt.Sprintf("could not GC-root the golden system %s at %s: %s", r.sys, r.P.Golden, tool.Summary(res.Out)))
	}
	r.log(fmt.Sprintf("=== Activation PASSED: %s (profile and boot entry set) ===", r.sys))
	return nil
}
