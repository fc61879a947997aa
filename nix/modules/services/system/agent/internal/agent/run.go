// Package agent is the host side of docs/rollout.md: one run of `run` (timer), `push`, `activate` or
// `confirm`, as phases that return *Error. The decisions are in package decide; this package does the
// side effects: files, tools, the status record, the lease.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"nixfleet/agent/internal/decide"
	"nixfleet/agent/internal/lease"
	"nixfleet/agent/internal/settings"
	"nixfleet/agent/internal/status"
	"nixfleet/agent/internal/tool"
	"nixfleet/agent/internal/watch"
)

// Run is one invocation's state: what status.json says about it, and what its exit must clean up.
type Run struct {
	S     *settings.Settings
	P     settings.Paths
	Mode  string // "push" | "timer"
	Step  string // run | push | activate | confirm
	Token string // push rollout token
	Phase Phase

	warnings    []string
	needsReboot *bool
	sys         string // the validated system being activated
	prev        string // the system that ran before this activation
	inFlight    bool   // between `test` of the new system and its boot entry
	final       bool   // the final status record is written
	lease       *lease.Holder
	leaseFile   lease.File
	owner       string
	ownerHome   string
	me          string
	git         []string
	remoteOK    bool // the timer's fetch reached the remote
	stage       string
	armed       bool   // push: the activator was (being) started; it, or a later run, settles the files
	mustFinish  bool   // tools run to their end even when the run is being stopped (putting files back)
	rejected    string // where this run kept a rejected push's files

	ctx    context.Context
	cancel context.CancelCauseFunc
	dir    *watch.Dir

	mu       sync.Mutex
	activity string
}

// New prepares a run; signals from now on stop it through its context.
func New(s *settings.Settings, step string) (*Run, error) {
	r := &Run{S: s, P: s.Paths(), Step: step, remoteOK: true}
	r.leaseFile = lease.File{Path: r.P.Lease, LockPath: r.P.Lock}
	r.ctx, r.cancel = context.WithCancelCause(context.Background())
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(s.StateDir, 0o755); err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 4)
	// SIGPIPE included: a write to a gone SSH session then fails with EPIPE and ends the run here,
	// through the same clean-up as a SIGTERM, instead of killing the process outright.
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	go func() {
		for sig := range sigs {
			code := 128 + int(sig.(syscall.Signal))
			r.cancel(stopped{code})
		}
	}()
	if step == "push" || step == "confirm" {
		go r.ticker()
	}
	if step != "run" {
		// Watch before the first check a wait makes: a change between the check and the watch is not lost.
		r.watchDir()
	}
	return r, nil
}

// ticker writes a progress line every 15 s while a push or confirm runs: its stderr is the SSH session,
// and a write that fails (the session is gone) stops the run, which then releases the lease.
func (r *Run) ticker() {
	t0 := time.Now()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		what := r.activity
		r.mu.Unlock()
		if what == "" {
			what = fmt.Sprintf("%s running for %d s", r.Phase, int(time.Since(t0).Seconds()))
		}
		if _, err := fmt.Fprintf(os.Stderr, "auto-upgrade: %s\n", what); err != nil {
			r.cancel(stopped{141})
			return
		}
	}
}

// progress says what a wait is waiting for: now, and in the ticker's lines until the wait ends.
func (r *Run) progress(what string) {
	r.mu.Lock()
	r.activity = what
	r.mu.Unlock()
	if what != "" {
		if _, err := fmt.Fprintf(os.Stderr, "auto-upgrade: %s\n", what); err != nil {
			r.cancel(stopped{141})
		}
	}
}

func (r *Run) log(line string) { tool.Log(line) }

// warn records a warning for status.json (at most 1000 bytes each) and logs it.
func (r *Run) warn(msg string) {
	r.warnings = append(r.warnings, tool.Cut(msg, 1000))
	r.log("=== WARNING: " + msg + " ===")
}

func link(p string) string {
	t, err := filepath.EvalSymlinks(p)
	if err != nil {
		return ""
	}
	return t
}

// writeStatus rewrites status.json (and push.json in push mode). A record that cannot be written is logged
// and the run goes on: the same in every phase.
func (r *Run) writeStatus(result, msg string) {
	rec := status.Record{
		Host:          r.S.FlakeHost,
		Mode:          status.OrNull(r.Mode),
		Rollout:       status.OrNull(r.Token),
		LastRun:       time.Now().UTC().Format("2006-01-02T15:04:05Z"),
		Step:          r.Step,
		Phase:         string(r.Phase),
		Result:        result,
		Message:       tool.Cut(msg, 4000),
		ValidatedPath: status.OrNull(link(r.P.Validated)),
		RunningSystem: status.OrNull(link(r.P.Current)),
		ProfileSystem: status.OrNull(link(r.P.Profile)),
		BootedSystem:  status.OrNull(link(r.P.Booted)),
		GoldenPath:    status.OrNull(link(r.P.Golden)),
		NeedsReboot:   r.needsReboot,
		Warnings:      r.warnings,
		RejectedFiles: status.OrNull(r.rejected),
	}
	// At most 10 warnings: confirm prints this record as one line (the provider hangs on 64 KiB).
	if len(rec.Warnings) > 10 {
		rec.Warnings = rec.Warnings[:10]
	}
	if b, err := os.ReadFile(r.P.Diff); err == nil {
		d := string(b)
		rec.ClosureDiff = &d
	}
	files := []string{r.P.Status}
	if r.Mode == "push" {
		files = append(files, r.P.Push)
	}
	if err := status.Write(rec, files...); err != nil {
		r.log("=== WARNING: cannot write the status record: " + err.Error() + " ===")
	}
}

// enter starts a phase: log line, "running" status.
func (r *Run) enter(p Phase, msg string) {
	r.Phase = p
	r.log("=== " + msg + " ===")
	r.writeStatus("running", msg)
}

// fail is a failure before anything was activated.
func (r *Run) fail(format string, a ...any) error {
	return &Error{Phase: r.Phase, Kind: Failed, Why: fmt.Sprintf(format, a...)}
}

func (r *Run) interrupted() error {
	code := 143
	var s stopped
	if errors.As(context.Cause(r.ctx), &s) {
		code = s.code
	}
	return &Error{Phase: r.Phase, Kind: Interrupted, Code: code}
}

func secs(n int) time.Duration { return time.Duration(n) * time.Second }

// tool runs argv bounded by `bound` seconds; only a stop of the run is an error.
func (r *Run) tool(bound int, argv ...string) (tool.Result, error) {
	return r.run(r.ctx, tool.Spec{Bound: secs(bound), Argv: argv})
}

// toolSpec runs a full Spec under the run's context.
func (r *Run) toolSpec(s tool.Spec) (tool.Result, error) { return r.run(r.ctx, s) }

// must runs a tool that has to finish even when the run is being stopped (re-activating the old system).
func (r *Run) must(bound int, argv ...string) tool.Result {
	res, _ := r.run(context.Background(), tool.Spec{Bound: secs(bound), Argv: argv})
	return res
}

func (r *Run) run(ctx context.Context, s tool.Spec) (tool.Result, error) {
	if r.mustFinish {
		ctx = context.Background()
	}
	res, err := tool.Run(ctx, s)
	if err != nil {
		return res, r.interrupted()
	}
	return res, nil
}

// report sends a tool's output to the journal and, when echo, its tail to stderr.
func report(what string, res tool.Result, echo bool) {
	tool.Journal(what, res.Out)
	if echo {
		tool.Echo(res.Out)
	}
}

// watchDir is the state dir's change feed (created on first use).
func (r *Run) watchDir() *watch.Dir {
	if r.dir == nil {
		d, err := watch.WatchDir(r.S.StateDir)
		if err != nil {
			// Without inotify the waits still end: they also wake every second.
			r.log("auto-upgrade: no inotify on " + r.S.StateDir + ": " + err.Error())
			d = &watch.Dir{C: make(chan struct{})}
		}
		r.dir = d
	}
	return r.dir
}

// wait blocks until the state dir changes, process pid (when > 0) ends, `most` passes, or the run is
// stopped (an *Error). Waits re-check their condition after each wake, and wake at least every `most`.
func (r *Run) wait(most time.Duration, pid int) error {
	d := r.watchDir()
	var exited <-chan struct{}
	if pid > 0 {
		ch, stop := watch.Exit(pid, lease.Alive)
		defer stop()
		exited = ch
	}
	t := time.NewTimer(most)
	defer t.Stop()
	select {
	case <-d.C:
	case <-exited:
	case <-t.C:
	case <-r.ctx.Done():
		return r.interrupted()
	}
	return nil
}

// takeLease takes the lease for owner unless a live one is held.
func (r *Run) takeLease(owner string) (bool, error) {
	h := lease.NewHolder(r.leaseFile, owner)
	ok, err := h.Try(r.reclaim)
	if ok {
		r.lease = h
	}
	return ok, err
}

// reclaim: a lease that is not live is stale; the "running" status of its dead holder is rewritten failed.
func (r *Run) reclaim(stale decide.Lease) {
	pid := "unknown"
	if stale.Pid > 0 {
		pid = fmt.Sprint(stale.Pid)
	}
	old, err := status.Read(r.P.Status)
	if err != nil || old.Result != "running" {
		return
	}
	mode, token, step, phase := r.Mode, r.Token, r.Step, r.Phase
	r.Mode, r.Token, r.Step, r.Phase = status.Str(old.Mode), status.Str(old.Rollout), old.Step, Phase(old.Phase)
	r.log(fmt.Sprintf("=== previous run (pid %s) died during %s: lease reclaimed ===", pid, r.Phase))
	r.writeStatus("failed", fmt.Sprintf("previous run (pid %s) died during %s", pid, r.Phase))
	r.Mode, r.Token, r.Step, r.Phase = mode, token, step, phase
}

// releaseLease gives the lease back (if still this process's).
func (r *Run) releaseLease() {
	if r.lease != nil {
		if err := r.lease.Release(); err != nil {
			r.log("auto-upgrade: releasing the lease: " + err.Error())
		}
		r.lease = nil
	}
}

// Finish reports err (if the phase did not), settles an interrupted activation, releases the lease and
// removes the stage; it returns the process's exit code.
func (r *Run) Finish(err error) int {
	var e *Error
	if errors.As(err, &e) && !e.Reported {
		switch e.Kind {
		case Failed:
			o := decide.OutcomeFailed
			if r.armed {
				o = decide.OutcomeUnsettled
			}
			note := r.endPush(o)
			r.log(fmt.Sprintf("=== %s FAILED: %s%s ===", e.Phase, e.Why, note))
			r.writeStatus("failed", e.Error()+note)
			r.final = true
		case Interrupted:
			r.onInterrupt(e)
		case Refused, Usage:
			if e.Why != "" {
				r.log(e.Why)
			}
		}
	} else if err != nil && e == nil {
		r.log("auto-upgrade: " + err.Error())
		r.writeStatus("failed", err.Error())
	}
	r.releaseLease()
	if r.dir != nil {
		r.dir.Close()
	}
	if r.stage != "" {
		_ = os.RemoveAll(r.stage)
	}
	return ExitCode(err)
}

// onInterrupt: a stopped run rewrites its own "running" status; stopped between `test` and the boot entry,
// it first settles the activation so the host is not left half on the new system.
func (r *Run) onInterrupt(e *Error) {
	holds := r.lease != nil && r.lease.Holds()
	st, _ := status.Read(r.P.Status)
	switch decide.OnInterrupt(r.final, holds, st.Result == "running", r.inFlight) {
	case decide.InterruptSettle:
		how, settled, ok := r.settle()
		if ok && settled == "old" {
			note := r.endPush(decide.OutcomeInterrupted)
			r.log(fmt.Sprintf("=== interrupted during %s: ROLLED BACK (%s)%s ===", e.Phase, how, note))
			r.writeStatus("rolled-back", fmt.Sprintf("ROLLED BACK: interrupted (exit %d) during %s (%s; profile and boot entry untouched)%s", e.Code, e.Phase, how, note))
		} else {
			r.log(fmt.Sprintf("=== interrupted during %s: %s ===", e.Phase, how))
			r.writeStatus("failed", fmt.Sprintf("interrupted (exit %d) during %s: %s", e.Code, e.Phase, how))
		}
	case decide.InterruptMarkFailed:
		note := ""
		if !r.armed {
			note = r.endPush(decide.OutcomeInterrupted)
		}
		r.writeStatus("failed", e.Error()+note)
	}
	r.final = true
}

// shellQuote quotes s for a command line people copy (as bash's printf %q would need).
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_./@%+=:,-", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
