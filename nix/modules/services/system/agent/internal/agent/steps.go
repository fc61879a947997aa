package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/lease"
	"nixfleet/agent/internal/settings"
	"nixfleet/agent/internal/status"
	"nixfleet/agent/internal/tool"
)

func refused(why string) error { return &Error{Kind: Refused, Why: why} }

// quietFail: exit 1, everything already said.
func quietFail() error { return &Error{Kind: Refused, Reported: true} }

// StepRun is the timer's run: the whole pipeline in one process, from `git pull`, no confirmation.
func (r *Run) StepRun() error {
	r.Mode = "timer"
	ok, err := r.takeLease(fmt.Sprintf("timer:%d", os.Getpid()))
	if err != nil {
		return refused("auto-upgrade: cannot take the lease: " + err.Error())
	}
	if !ok {
		r.log(fmt.Sprintf("auto-upgrade: skipped: a rollout holds the lease (%s); nothing changed", r.leaseFile.Raw()))
		return nil
	}
	for _, phase := range []func() error{r.resolveOwner, r.recoverInterrupted, r.recoverPending, r.checkHooksRan, r.pull, r.validate} {
		if err := phase(); err != nil {
			return err
		}
	}
	if decide.NeedsActivation(r.sys, link(r.P.Current), link(r.P.Profile)) {
		if err := r.activateSafely(); err != nil {
			return err
		}
	} else {
		r.log(fmt.Sprintf("=== %s is already the running system: nothing to activate ===", r.sys))
	}
	return r.finishCommit()
}

// DeployResult is push's one stdout line (docs/rollout.md §1).
type DeployResult struct {
	Rollout       string `json:"rollout"`
	ValidatedPath string `json:"validatedPath"`
	Action        string `json:"action"`
	NeedsReboot   bool   `json:"needsReboot"`
	Diff          string `json:"diff"`
}

// StepPush is push session 1: lease, files, hooks, validate, settings check, then the detached activator.
func (r *Run) StepPush(stage string, stdout io.Writer) error {
	r.Mode, r.stage = "push", stage
	r.Token = os.Getenv("NIXFLEET_ROLLOUT")
	if !settings.TokenRE.MatchString(r.Token) {
		return &Error{Kind: Usage, Why: fmt.Sprintf("auto-upgrade push: NIXFLEET_ROLLOUT must be the rollout token (16 hex, optional -r<N>), got '%s'", tool.Cut(r.Token, 40))}
	}
	if fi, err := os.Stat(stage); err != nil || !fi.IsDir() {
		return &Error{Kind: Usage, Why: fmt.Sprintf("auto-upgrade push: stage %s is not a directory", stage)}
	}
	if err := r.waitForLease(); err != nil {
		return err
	}
	if err := r.rootAgent(); err != nil {
		return err
	}
	for _, phase := range []func() error{r.resolveOwner, r.recoverInterrupted, r.recoverPending, func() error { return r.installFiles(stage) }, r.startHooks, r.validate, r.notePendingSystem, r.checkSettings} {
		if err := phase(); err != nil {
			return err
		}
	}
	action := "armed"
	if !decide.NeedsActivation(r.sys, link(r.P.Current), link(r.P.Profile)) {
		action = "unchanged"
		r.log(fmt.Sprintf("=== %s is already the running system: nothing to activate ===", r.sys))
		if err := r.finishCommit(); err != nil {
			return err
		}
	} else if err := r.startActivator(); err != nil {
		return err
	}
	r.final = true
	diff, _ := os.ReadFile(r.P.Diff)
	line, err := status.Line(DeployResult{r.Token, r.sys, action, r.needsReboot != nil && *r.needsReboot, string(diff)})
	if err != nil {
		return err
	}
	_, err = stdout.Write(line)
	return err
}

// waitForLease: a push waits at most LEASE_WAIT for another rollout's live lease, waking when the lease
// file changes or its holder exits.
func (r *Run) waitForLease() error {
	owner := "push:" + r.Token
	end := time.Now().Add(secs(r.S.LeaseWait))
	for first := true; ; first = false {
		ok, err := r.takeLease(owner)
		if err != nil {
			return refused("auto-upgrade: " + err.Error())
		}
		if ok {
			r.progress("")
			return nil
		}
		left := time.Until(end)
		if left <= 0 {
			return refused(fmt.Sprintf("=== lease FAILED: another rollout holds the host for more than AUTO_UPGRADE_LEASE_WAIT=%d s (%s) ===", r.S.LeaseWait, r.leaseFile.Raw()))
		}
		if first {
			r.progress(fmt.Sprintf("waiting up to %d s for the lease (%s)", r.S.LeaseWait, r.leaseFile.Raw()))
		}
		if err := r.wait(min(left, 5*time.Second), r.leaseFile.Read().Pid); err != nil {
			return err
		}
	}
}

// rootAgent keeps the agent this push runs (the store path the bootstrap built from the bundle) as
// $STATE_DIR/agent, a GC root: the activator and the deployer's `confirm` run it from there, never a file
// in the user-owned checkout.
func (r *Run) rootAgent() error {
	r.Phase = PhaseLease
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	rest, inStore := strings.CutPrefix(self, "/nix/store/")
	if err != nil || !inStore {
		return r.fail("the agent runs from %s, not from the Nix store: push mode runs the agent nix/push-bootstrap.sh built", self)
	}
	storePath := "/nix/store/" + strings.SplitN(rest, "/", 2)[0]
	// Nix refuses to replace a root that does not point into the store ("already exists"): a link of the
	// state dir altered or left half-written is nixfleet's own, so it goes first, or no push could heal it.
	if t, err := os.Readlink(r.P.Agent); err == nil && !strings.HasPrefix(t, "/nix/store/") {
		if err := os.Remove(r.P.Agent); err != nil {
			return r.fail("cannot replace %s (it points to %s, not the Nix store): %v", r.P.Agent, t, err)
		}
	}
	res, err := r.tool(r.S.SwitchTimeout, "nix-store", "--realise", storePath, "--add-root", r.P.Agent, "--indirect")
	if err != nil {
		return err
	}
	if !res.OK() {
		report("nix-store", res, true)
		return r.fail("cannot keep the agent %s at %s: %s", storePath, r.P.Agent, tool.Summary(res.Out))
	}
	return nil
}

// startActivator starts `activate T` detached in a transient unit (it survives this SSH session) with
// exactly this run's settings, then follows it until it awaits the confirmation or has ended.
func (r *Run) startActivator() error {
	unit := "auto-upgrade-activate-" + r.Token
	args := []string{"systemd-run", "--unit=" + unit, "--collect", "--quiet", "--setenv=PATH=" + os.Getenv("PATH")}
	if h := os.Getenv("HOME"); h != "" {
		args = append(args, "--setenv=HOME="+h)
	}
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		if strings.HasPrefix(kv, "AUTO_UPGRADE_") || strings.HasPrefix(kv, "NIX_") {
			args = append(args, "--setenv="+kv)
		}
	}
	args = append(args, "--", r.P.Agent+"/bin/nixfleet-agent", "activate", r.Token)
	_ = os.Remove(r.P.Confirm)
	// This run's warnings (hooks, a settled earlier activation) go on in the activator's record.
	if len(r.warnings) > 0 {
		var b bytes.Buffer
		for _, w := range r.warnings {
			b.WriteString(strings.ReplaceAll(w, "\n", " ") + "\n")
		}
		if err := os.WriteFile(r.P.Warnings, b.Bytes(), 0o644); err != nil {
			return r.fail("cannot hand the warnings to the activator: %v", err)
		}
	} else {
		_ = os.Remove(r.P.Warnings)
	}
	r.Phase = PhaseActivate
	r.writeStatus("running", "starting the activator")
	r.armed = true
	res, err := r.tool(60, args...)
	if err != nil {
		return err
	}
	if !res.OK() {
		report("systemd-run", res, true)
		return r.fail("systemd-run of the activator: %s", tool.Summary(res.Out))
	}
	bound := int64(r.S.SwitchTimeout + r.S.HealthTimeout + 60)
	start := time.Now()
	self := os.Getpid()
	for {
		// The lease before the record: the activator writes its final record, then releases the lease, so a
		// holder seen gone means the record read after it is final (read the other way round, an activator
		// that ended between the two reads looked dead).
		holder := r.leaseFile.Read().Pid
		alive := lease.Alive(holder)
		rec, _ := status.Read(r.P.Push)
		waited := int64(time.Since(start).Seconds())
		d := decide.Record{Rollout: status.Str(rec.Rollout), Result: rec.Result, Phase: rec.Phase}
		switch decide.FollowActivator(d, r.Token, holder, self, alive, waited, 30, bound) {
		case decide.FollowArmed:
			r.progress("")
			return nil
		case decide.FollowEnded:
			r.final = true
			r.log(fmt.Sprintf("=== %s: rollout %s %s: %s ===", r.S.FlakeHost, r.Token, rec.Result, tool.Cut(rec.Message, tool.EchoCut)))
			return quietFail()
		case decide.FollowTimeout:
			return r.fail("the activator did not reach the confirmation step within %d s (phase %s)", bound, rec.Phase)
		case decide.FollowNotStarted:
			return r.fail("the activator did not start within 30 s (journalctl -u %s)", unit)
		case decide.FollowDied:
			return r.fail("the activator (pid %d) died during %s (journalctl -u %s)", holder, rec.Phase, unit)
		}
		r.setActivity("activating: " + rec.Phase)
		watchPid := 0
		if holder != self {
			watchPid = holder
		}
		if err := r.wait(5*time.Second, watchPid); err != nil {
			return err
		}
	}
}

func (r *Run) setActivity(what string) {
	r.mu.Lock()
	r.activity = what
	r.mu.Unlock()
}

// StepActivate is the detached activator: it takes over its push's lease and activates the validated system.
func (r *Run) StepActivate(token string) error {
	r.Mode, r.Token, r.Phase = "push", token, PhaseActivate
	h := lease.NewHolder(r.leaseFile, "push:"+token)
	ok, err := h.TakeOver()
	if err != nil || !ok {
		return refused(fmt.Sprintf("=== activator %s: the lease is no longer this rollout's (%s); nothing activated ===", token, r.leaseFile.Raw()))
	}
	r.lease = h
	if rec, _ := status.Read(r.P.Push); status.Str(rec.Rollout) != token {
		return r.fail("push.json is not rollout %s's; nothing activated", token)
	}
	if b, err := os.ReadFile(r.P.Warnings); err == nil {
		for _, w := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if w != "" {
				r.warnings = append(r.warnings, w)
			}
		}
		_ = os.Remove(r.P.Warnings)
	}
	if r.sys = link(r.P.Validated); r.sys == "" {
		return r.fail("no validated system at %s; nothing activated", r.P.Validated)
	}
	r.setNeedsReboot()
	if err := r.resolveOwner(); err != nil {
		return err
	}
	if err := r.activateSafely(); err != nil {
		return err
	}
	return r.finishCommit()
}

// StepConfirm is push session 2: confirms rollout `token`, waits for the activator to end, prints
// push.json; exit 0 only for success. A commit-back that failed for this rollout is retried (it heals).
func (r *Run) StepConfirm(token string, stdout io.Writer) error {
	r.Mode, r.Token = "push", token
	if err := os.WriteFile(r.P.Confirm+".new", []byte(token+"\n"), 0o644); err != nil {
		return refused("=== confirm FAILED: cannot write " + r.P.Confirm + ": " + err.Error() + " ===")
	}
	if err := os.Rename(r.P.Confirm+".new", r.P.Confirm); err != nil {
		return refused("=== confirm FAILED: cannot write " + r.P.Confirm + ": " + err.Error() + " ===")
	}
	bound := int64(r.S.ConfirmTimeout + 2*r.S.SwitchTimeout + 4*r.S.CommitTimeout + 60)
	start := time.Now()
	var rec status.Record
wait:
	for {
		// The lease before the record, as in startActivator's loop: a lease released here means the
		// activator's final record is already written.
		live := r.leaseFile.Live()
		rec, _ = status.Read(r.P.Push)
		d := decide.Record{Rollout: status.Str(rec.Rollout), Result: rec.Result, Phase: rec.Phase}
		switch decide.ConfirmStep(d, token, live, int64(time.Since(start).Seconds()), bound) {
		case decide.ConfirmNotLast:
			return refused(fmt.Sprintf("=== confirm FAILED: rollout %s is not the host's last rollout (%s); run pulumi up again ===", token, d.Rollout))
		case decide.ConfirmEnded:
			break wait
		case decide.ConfirmReclaim:
			// Nobody holds the host: the activator died (reclaim rewrites its record as failed).
			if err := r.leaseFile.WithLock(func() error {
				if l := r.leaseFile.Read(); !lease.LiveLease(l) {
					r.reclaim(l)
					return r.leaseFile.Remove()
				}
				return nil
			}); err != nil {
				return refused("=== confirm FAILED: " + err.Error() + " ===")
			}
			continue
		case decide.ConfirmTimeout:
			return refused(fmt.Sprintf("=== confirm FAILED: the activator of %s is still at %s ===", token, d.Phase))
		}
		r.setActivity("waiting for the activator: " + d.Phase)
		if err := r.wait(5*time.Second, r.leaseFile.Read().Pid); err != nil {
			return err
		}
	}
	// The activator writes its final record, then releases the lease: wait for that too (at most 10 s), so
	// the host is free for the next run when confirm returns.
	free := time.Now().Add(10 * time.Second)
	for time.Now().Before(free) && r.leaseFile.Read().Owner == "push:"+token && r.leaseFile.Live() {
		if err := r.wait(time.Until(free), r.leaseFile.Read().Pid); err != nil {
			return err
		}
	}
	d := decide.Record{Rollout: status.Str(rec.Rollout), Result: rec.Result, Phase: rec.Phase}
	if decide.RetryCommit(d, token) {
		if ok, err := r.takeLease("push:" + token); err == nil && ok {
			r.sys = link(r.P.Current)
			r.setNeedsReboot()
			if err := r.resolveOwner(); err != nil {
				return err
			}
			_ = r.finishCommit()
			r.releaseLease()
			rec, _ = status.Read(r.P.Push)
		}
	}
	b, err := os.ReadFile(r.P.Push)
	if err != nil {
		return refused("=== confirm FAILED: cannot read " + r.P.Push + " ===")
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if _, err := stdout.Write(append(line, '\n')); err != nil {
		return err
	}
	r.final = true
	if rec.Result != "success" {
		return quietFail()
	}
	return nil
}

// Status prints status.json of dir (default: $AUTO_UPGRADE_STATE_DIR, else /var/lib/auto-upgrade); it
// needs no other setting.
func Status(dir string, stdout, stderr io.Writer) int {
	if dir == "" {
		dir = os.Getenv("AUTO_UPGRADE_STATE_DIR")
	}
	if dir == "" {
		dir = settings.DefaultStateDir
	}
	b, err := os.ReadFile(dir + "/status.json")
	if err != nil {
		fmt.Fprintf(stderr, "auto-upgrade: no status record yet (%s/status.json)\n", dir)
		return 1
	}
	_, _ = stdout.Write(b)
	return 0
}
