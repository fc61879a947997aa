// Package decide holds the agent's decisions as plain functions over data: no files, no processes.
// Each is covered by a table of cases in decide_test.go; the side effects live in package agent.
package decide

// Lease is the lease file's content: `owner=<push:T|timer:PID> pid=<pid> expires=<epoch>`, and in the
// agent's own leases `boot=<boot id> start=<the holder's start time>`, which name the holder exactly.
type Lease struct {
	Owner   string
	Pid     int
	Expires int64
	Boot    string
	Start   string
	Valid   bool // the file held a well-formed lease
}

// Proc is what the host says about a process: whether it is alive (a zombie is not) and when it started
// (clock ticks since boot, /proc/<pid>/stat).
type Proc struct {
	Alive bool
	Start string
}

// LeaseLive: a lease holds while its process is alive. When the lease names its holder exactly (boot id
// and start time), the very same process holds it even past its expiry (a host suspended mid-run, a
// stopped process: reclaiming it would let two runs interleave), and another process that got the pid
// does not. A lease without that identity holds until it expires. Anything else is reclaimable.
func LeaseLive(l Lease, now int64, boot string, proc func(pid int) Proc) bool {
	if !l.Valid || l.Pid <= 0 {
		return false
	}
	p := proc(l.Pid)
	switch {
	case !p.Alive:
		return false
	case l.Boot != "" && l.Start != "":
		return l.Boot == boot && l.Start == p.Start
	}
	return l.Expires > now
}

// LeaseMine: the process may renew or release only a lease it holds under its own owner name.
func LeaseMine(l Lease, owner string, pid int) bool {
	return l.Valid && owner != "" && l.Owner == owner && l.Pid == pid
}

// Settle is how an activation that never ended is brought to one side.
type Settle int

const (
	// SettleGone: the recorded previous system does not resolve; nothing can be re-activated.
	SettleGone Settle = iota
	// SettleAlreadyOld: the host runs the previous system (stopped before `test` changed anything, or a reboot).
	SettleAlreadyOld
	// SettleFinishBoot: the profile moved to the running system (gate passed, confirmed): write its boot entry.
	SettleFinishBoot
	// SettleReactivate: the profile never moved: re-activate the previous system (`test`).
	SettleReactivate
)

// SettleHow decides from the three links: previous (recorded before `test`), current, profile.
func SettleHow(prev, cur, prof string) Settle {
	switch {
	case prev == "":
		return SettleGone
	case cur == prev:
		return SettleAlreadyOld
	case cur != "" && prof == cur:
		return SettleFinishBoot
	default:
		return SettleReactivate
	}
}

// NeedsActivation: the validated system is activated unless it already runs and is the profile.
func NeedsActivation(validated, current, profile string) bool {
	return !(validated == current && validated == profile)
}

// NeedsReboot: the kernel, initrd or modules differ from the booted system's (each a resolved link target).
func NeedsReboot(newParts, bootedParts [3]string) bool {
	return newParts != bootedParts
}

// KeepPreviousRecord: after a rollback the record of the previous system stays only when re-activating it
// failed (the next run tries again first); with no previous system there is nothing to keep.
func KeepPreviousRecord(prev string, reactivated bool) bool {
	return prev != "" && !reactivated
}

// Interrupt is what a stopped run does on its way out.
type Interrupt int

const (
	// InterruptNothing: the run had ended (final status written) or never held the lease.
	InterruptNothing Interrupt = iota
	// InterruptMarkFailed: stopped before anything was activated: status failed, "interrupted during <phase>".
	InterruptMarkFailed
	// InterruptSettle: stopped between `test` and the boot entry: settle the activation first.
	InterruptSettle
)

// OnInterrupt decides from whether the run ended, holds the lease, has a running status and is mid-activation.
func OnInterrupt(final, holdsLease, statusRunning, inFlight bool) Interrupt {
	switch {
	case final || !holdsLease || !statusRunning:
		return InterruptNothing
	case inFlight:
		return InterruptSettle
	default:
		return InterruptMarkFailed
	}
}

// Sync is how a checkout relates to the fetched remote branch.
type Sync int

const (
	// SyncUpToDate: FETCH_HEAD is in HEAD's history (equal, or local commits not yet pushed).
	SyncUpToDate Sync = iota
	// SyncFastForward: HEAD is in FETCH_HEAD's history.
	SyncFastForward
	// SyncDiverged: both have commits of their own.
	SyncDiverged
)

// Relation from the two ancestry checks.
func Relation(fetchInHead, headInFetch bool) Sync {
	switch {
	case fetchInHead:
		return SyncUpToDate
	case headInFetch:
		return SyncFastForward
	default:
		return SyncDiverged
	}
}

// Pull is what the timer does with its checkout after fetching.
type Pull int

const (
	PullKeep Pull = iota // nothing to merge (ahead or equal)
	PullFastForward
	PullRebase // commit-back host: replay its own commits
	PullRefuse // diverged and commit-back is off: reconcile by hand
)

// PullAction decides the timer's pull.
func PullAction(s Sync, commitBack bool) Pull {
	switch s {
	case SyncUpToDate:
		return PullKeep
	case SyncFastForward:
		return PullFastForward
	}
	if commitBack {
		return PullRebase
	}
	return PullRefuse
}

// Push is one round of commit-back after a fetch.
type Push int

const (
	PushNothing     Push = iota // HEAD is in the remote branch: nothing to push
	PushNow                     // HEAD is ahead of it: push
	PushAfterRebase             // diverged: rebase onto it, then push
)

// PushAction decides one commit-back round (the ancestry checks are the other way round than a pull's).
func PushAction(headInFetch, fetchInHead bool) Push {
	switch {
	case headInFetch:
		return PushNothing
	case fetchInHead:
		return PushNow
	default:
		return PushAfterRebase
	}
}

// File is what install does with one staged file.
type File int

const (
	FileWrite        File = iota // absent, equal to what nixfleet last wrote, or already the content
	FileSame                     // already the wanted content
	FileNotOurs                  // present, and nixfleet never wrote it
	FileEditedOnHost             // changed since nixfleet last wrote it
)

// FileAction decides from the current content's sha256 (exists=false: absent), the wanted one and the
// record of what nixfleet last wrote ("" when none).
func FileAction(exists bool, cur, want, recorded string) File {
	switch {
	case !exists:
		return FileWrite
	case cur == want:
		return FileSame
	case recorded == "":
		return FileNotOurs
	case cur != recorded:
		return FileEditedOnHost
	default:
		return FileWrite
	}
}

// Record is the part of a status record the followers read.
type Record struct {
	Rollout, Result, Phase string
}

// Follow is what `push` does while it follows the activator it started.
type Follow int

const (
	FollowWait       Follow = iota
	FollowArmed             // awaiting confirmation: deploy succeeds
	FollowEnded             // rolled back or failed: deploy fails
	FollowNotStarted        // the lease is still the push's own after 30 s
	FollowDied              // the holder is dead and the record still says running
	FollowTimeout
)

// FollowActivator decides from push.json, the lease holder and the time spent.
func FollowActivator(r Record, token string, holder, self int, holderAlive bool, waited, startBound, bound int64) Follow {
	if r.Rollout == token {
		if r.Result == "running" && r.Phase == "awaiting-confirmation" {
			return FollowArmed
		}
		if r.Result == "rolled-back" || r.Result == "failed" {
			return FollowEnded
		}
	}
	switch {
	case waited >= bound:
		return FollowTimeout
	case holder == self && waited > startBound:
		return FollowNotStarted
	case holder != self && !holderAlive && r.Result == "running":
		return FollowDied
	}
	return FollowWait
}

// Confirm is what `confirm` does while it waits for the activator.
type Confirm int

const (
	ConfirmWait    Confirm = iota
	ConfirmNotLast         // push.json is another rollout's: this one is gone
	ConfirmEnded           // the activator wrote its final record
	ConfirmReclaim         // nobody holds the host: the activator died; reclaim rewrites its record
	ConfirmTimeout
)

// ConfirmStep decides from push.json, whether the lease is live and the time spent.
func ConfirmStep(r Record, token string, leaseLive bool, waited, bound int64) Confirm {
	switch {
	case r.Rollout != token:
		return ConfirmNotLast
	case r.Result != "running":
		return ConfirmEnded
	case !leaseLive:
		return ConfirmReclaim
	case waited >= bound:
		return ConfirmTimeout
	}
	return ConfirmWait
}

// RetryCommit: confirm retries a commit-back that failed for its own rollout (a resolved conflict heals).
func RetryCommit(r Record, token string) bool {
	return r.Rollout == token && r.Result == "failed" && r.Phase == "commit"
}

// Outcome is how a push (its deploy session or its activator) ended, for the files it installed.
type Outcome int

const (
	OutcomeConfirmed    Outcome = iota // activation passed: confirmed, profile and boot entry set
	OutcomeUnchanged                   // the validated system already ran: nothing to activate, nothing to confirm
	OutcomeCommitFailed                // the upgrade stands; only commit-back failed
	OutcomeRolledBack                  // test, gate, confirmation or boot entry failed: the old system runs again
	OutcomeFailed                      // a phase failed before anything was activated (hooks, build, settings check)
	OutcomeInterrupted                 // a signal stopped the run and it settled on the old system
	OutcomeUnsettled                   // the run ended without knowing the host's side (an activator it lost): leave it to the next run
)

// RestoreFiles: the files of a push that was not confirmed go back to the last confirmed state, so the
// host's timer (which builds the checkout) never activates what was rejected. A confirmed or unchanged push,
// or one whose commit-back alone failed, keeps them; an unsettled one is left for the next run to decide.
func RestoreFiles(o Outcome) bool {
	switch o {
	case OutcomeRolledBack, OutcomeFailed, OutcomeInterrupted:
		return true
	}
	return false
}

// PendingAccepted: a later run finds the file record of a push that never ended (its activator was killed,
// the power went). After settling, the push stands only if the host runs its system as the profile too
// (it was confirmed and the profile moved); otherwise its files are restored. No recorded system (stopped
// before its build finished) never stands.
func PendingAccepted(system, running, profile string) bool {
	return system != "" && running == system && profile == system
}
