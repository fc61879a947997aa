package agent

import "fmt"

// Phase is the step of the contract a run is in (status.json "phase", docs/rollout.md §4).
type Phase string

const (
	PhaseLease    Phase = "lease"
	PhaseFiles    Phase = "files"
	PhaseHooks    Phase = "hooks"
	PhaseValidate Phase = "validate"
	PhaseActivate Phase = "activate"
	PhaseHealth   Phase = "health"
	PhaseAwaiting Phase = "awaiting-confirmation"
	PhaseBoot     Phase = "boot"
	PhaseCommit   Phase = "commit"
	PhaseDone     Phase = "done"
)

// Kind is how a run ended when it did not succeed; each has one exit code and one log line.
type Kind int

const (
	// Failed: a phase failed before anything was activated; nothing changed on the host.
	Failed Kind = iota
	// RolledBack: the previous system was re-activated; profile and boot entry never moved.
	RolledBack
	// CommitFailed: commit-back failed; the upgrade itself stands.
	CommitFailed
	// Interrupted: a signal (or a gone SSH session) stopped the run.
	Interrupted
	// Refused: nothing was started (the lease is another rollout's, a follower saw its rollout fail).
	Refused
	// Usage: bad command line or settings; nothing ran.
	Usage
)

// Error is the one error type of the agent: which phase, which kind, why.
type Error struct {
	Phase Phase
	Kind  Kind
	Why   string
	// Signal exit code for Interrupted (129 HUP, 130 INT, 141 PIPE, 143 TERM).
	Code int
	// Reported: the status record and the log line were written where the failure happened.
	Reported bool
}

func (e *Error) Error() string {
	switch e.Kind {
	case Failed:
		return fmt.Sprintf("%s FAILED: %s", e.Phase, e.Why)
	case RolledBack:
		return "ROLLED BACK: " + e.Why
	case CommitFailed:
		return "commit-back FAILED: " + e.Why
	case Interrupted:
		return fmt.Sprintf("interrupted (exit %d) during %s", e.Code, e.Phase)
	}
	return e.Why
}

// ExitCode is the process's exit status for err (nil: 0).
func ExitCode(err error) int {
	e, ok := err.(*Error)
	switch {
	case err == nil:
		return 0
	case !ok:
		return 1
	case e.Kind == Usage:
		return 2
	case e.Kind == Interrupted:
		return e.Code
	}
	return 1
}

// stopped is the cause a signal puts on the run's context.
type stopped struct{ code int }

func (s stopped) Error() string { return fmt.Sprintf("signal (exit %d)", s.code) }
