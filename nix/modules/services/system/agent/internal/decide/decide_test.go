package decide

import "testing"

func TestLeaseLive(t *testing.T) {
	// pid 100 is alive, started at tick 555; pid 7 is dead.
	proc := func(pid int) Proc {
		if pid == 100 {
			return Proc{Alive: true, Start: "555"}
		}
		return Proc{}
	}
	lease := func(pid int, expires int64, boot, start string) Lease {
		return Lease{Owner: "push:x", Pid: pid, Expires: expires, Boot: boot, Start: start, Valid: true}
	}
	for _, c := range []struct {
		name string
		l    Lease
		want bool
	}{
		{"no identity: alive pid, not expired", lease(100, 2000, "", ""), true},
		{"no identity: expired, pid alive (maybe another process now)", lease(100, 1000, "", ""), false},
		{"no identity: dead pid, not expired", lease(7, 2000, "", ""), false},
		{"identity: the same process, not expired", lease(100, 2000, "b1", "555"), true},
		{"identity: the same process past its expiry (host suspended mid-run)", lease(100, 500, "b1", "555"), true},
		{"identity: another process got the pid", lease(100, 2000, "b1", "556"), false},
		{"identity: written before a reboot", lease(100, 2000, "b0", "555"), false},
		{"identity: dead", lease(7, 2000, "b1", "555"), false},
		{"malformed file", Lease{Pid: 100, Expires: 2000}, false},
		{"pid 0", lease(0, 2000, "", ""), false},
	} {
		if got := LeaseLive(c.l, 1000, "b1", proc); got != c.want {
			t.Errorf("%s: LeaseLive = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestLeaseMine(t *testing.T) {
	l := Lease{Owner: "push:abc", Pid: 42, Expires: 5, Valid: true}
	for _, c := range []struct {
		owner string
		pid   int
		want  bool
	}{
		{"push:abc", 42, true},
		{"push:abc", 43, false}, // the activator took it over: the push may no longer touch it
		{"push:abd", 42, false},
		{"", 42, false},
	} {
		if got := LeaseMine(l, c.owner, c.pid); got != c.want {
			t.Errorf("LeaseMine(%q, %d) = %v, want %v", c.owner, c.pid, got, c.want)
		}
	}
	if LeaseMine(Lease{}, "", 0) {
		t.Error("an absent lease is nobody's")
	}
}

func TestSettleHow(t *testing.T) {
	for _, c := range []struct {
		name            string
		prev, cur, prof string
		want            Settle
	}{
		{"record gone", "", "/s/new", "/s/old", SettleGone},
		{"still on the previous system", "/s/old", "/s/old", "/s/old", SettleAlreadyOld},
		{"rebooted into the previous system after power loss", "/s/old", "/s/old", "/s/old", SettleAlreadyOld},
		{"half activated: test ran, profile never moved", "/s/old", "/s/new", "/s/old", SettleReactivate},
		{"profile moved, boot entry not written", "/s/old", "/s/new", "/s/new", SettleFinishBoot},
		{"no running system, profile empty", "/s/old", "", "", SettleReactivate},
	} {
		if got := SettleHow(c.prev, c.cur, c.prof); got != c.want {
			t.Errorf("%s: SettleHow = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestNeedsActivation(t *testing.T) {
	for _, c := range []struct {
		v, cur, prof string
		want         bool
	}{
		{"/s/a", "/s/a", "/s/a", false},
		{"/s/a", "/s/b", "/s/b", true},
		{"/s/a", "/s/a", "/s/b", true}, // running but not the profile (a test-only activation): finish it
		{"/s/a", "/s/b", "/s/a", true},
	} {
		if got := NeedsActivation(c.v, c.cur, c.prof); got != c.want {
			t.Errorf("NeedsActivation(%v) = %v, want %v", c, got, c.want)
		}
	}
}

func TestNeedsReboot(t *testing.T) {
	same := [3]string{"/k/6.1", "/i/6.1", "/m/6.1"}
	if NeedsReboot(same, same) {
		t.Error("same kernel, initrd, modules: no reboot")
	}
	for i := 0; i < 3; i++ {
		other := same
		other[i] = "/x"
		if !NeedsReboot(other, same) {
			t.Errorf("part %d differs: reboot", i)
		}
	}
}

func TestKeepPreviousRecord(t *testing.T) {
	for _, c := range []struct {
		prev        string
		reactivated bool
		want        bool
	}{
		{"/s/old", true, false},
		{"/s/old", false, true},
		{"", false, false},
	} {
		if got := KeepPreviousRecord(c.prev, c.reactivated); got != c.want {
			t.Errorf("KeepPreviousRecord(%q, %v) = %v", c.prev, c.reactivated, got)
		}
	}
}

func TestOnInterrupt(t *testing.T) {
	for _, c := range []struct {
		final, holds, running, inFlight bool
		want                            Interrupt
	}{
		{true, true, true, true, InterruptNothing},
		{false, false, true, true, InterruptNothing},
		{false, true, false, true, InterruptNothing},
		{false, true, true, false, InterruptMarkFailed},
		{false, true, true, true, InterruptSettle},
	} {
		if got := OnInterrupt(c.final, c.holds, c.running, c.inFlight); got != c.want {
			t.Errorf("OnInterrupt(%+v) = %v, want %v", c, got, c.want)
		}
	}
}

func TestPullAction(t *testing.T) {
	for _, c := range []struct {
		fetchInHead, headInFetch, commit bool
		want                             Pull
	}{
		{true, true, false, PullKeep},  // equal
		{true, false, false, PullKeep}, // unpushed local commits
		{false, true, false, PullFastForward},
		{false, false, true, PullRebase},
		{false, false, false, PullRefuse},
	} {
		if got := PullAction(Relation(c.fetchInHead, c.headInFetch), c.commit); got != c.want {
			t.Errorf("PullAction(%+v) = %v, want %v", c, got, c.want)
		}
	}
}

func TestPushAction(t *testing.T) {
	for _, c := range []struct {
		headInFetch, fetchInHead bool
		want                     Push
	}{
		{true, true, PushNothing},
		{true, false, PushNothing},
		{false, true, PushNow},
		{false, false, PushAfterRebase},
	} {
		if got := PushAction(c.headInFetch, c.fetchInHead); got != c.want {
			t.Errorf("PushAction(%+v) = %v, want %v", c, got, c.want)
		}
	}
}

func TestFileAction(t *testing.T) {
	for _, c := range []struct {
		name                string
		exists              bool
		cur, want, recorded string
		out                 File
	}{
		{"absent", false, "", "w", "", FileWrite},
		{"already the content", true, "w", "w", "", FileSame},
		{"unchanged since nixfleet wrote it", true, "r", "w", "r", FileWrite},
		{"the user's own file", true, "u", "w", "", FileNotOurs},
		{"edited on the host", true, "e", "w", "r", FileEditedOnHost},
	} {
		if got := FileAction(c.exists, c.cur, c.want, c.recorded); got != c.out {
			t.Errorf("%s: FileAction = %v, want %v", c.name, got, c.out)
		}
	}
}

func TestFollowActivator(t *testing.T) {
	const tok = "0123456789abcdef"
	run := func(phase string) Record { return Record{tok, "running", phase} }
	for _, c := range []struct {
		name   string
		r      Record
		holder int
		alive  bool
		waited int64
		want   Follow
	}{
		{"armed", run("awaiting-confirmation"), 2, true, 1, FollowArmed},
		{"rolled back", Record{tok, "rolled-back", "activate"}, 2, false, 1, FollowEnded},
		{"failed", Record{tok, "failed", "activate"}, 2, false, 1, FollowEnded},
		{"activating", run("health"), 2, true, 5, FollowWait},
		{"not started yet", run("activate"), 1, true, 10, FollowWait},
		{"never started", run("activate"), 1, true, 31, FollowNotStarted},
		{"died (SIGKILL)", run("health"), 2, false, 5, FollowDied},
		{"too long", run("health"), 2, true, 700, FollowTimeout},
		{"another rollout's record", Record{"ffffffffffffffff", "failed", "x"}, 2, true, 5, FollowWait},
	} {
		if got := FollowActivator(c.r, tok, c.holder, 1, c.alive, c.waited, 30, 700); got != c.want {
			t.Errorf("%s: FollowActivator = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestConfirmStep(t *testing.T) {
	const tok = "0123456789abcdef"
	for _, c := range []struct {
		name   string
		r      Record
		live   bool
		waited int64
		want   Confirm
	}{
		{"another rollout", Record{"ffffffffffffffff", "success", "done"}, true, 0, ConfirmNotLast},
		{"ended", Record{tok, "success", "done"}, false, 0, ConfirmEnded},
		{"rolled back", Record{tok, "rolled-back", "activate"}, false, 0, ConfirmEnded},
		{"activator dead", Record{tok, "running", "boot"}, false, 0, ConfirmReclaim},
		{"working", Record{tok, "running", "boot"}, true, 3, ConfirmWait},
		{"too long", Record{tok, "running", "commit"}, true, 99, ConfirmTimeout},
	} {
		if got := ConfirmStep(c.r, tok, c.live, c.waited, 99); got != c.want {
			t.Errorf("%s: ConfirmStep = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestRetryCommit(t *testing.T) {
	const tok = "0123456789abcdef"
	for _, c := range []struct {
		r    Record
		want bool
	}{
		{Record{tok, "failed", "commit"}, true},
		{Record{tok, "failed", "activate"}, false},
		{Record{tok, "success", "done"}, false},
		{Record{"ffffffffffffffff", "failed", "commit"}, false},
	} {
		if got := RetryCommit(c.r, tok); got != c.want {
			t.Errorf("RetryCommit(%+v) = %v", c.r, got)
		}
	}
}

func TestRestoreFiles(t *testing.T) {
	cases := []struct {
		o    Outcome
		want bool
	}{
		{OutcomeConfirmed, false},
		{OutcomeUnchanged, false},
		{OutcomeCommitFailed, false},
		{OutcomeRolledBack, true},
		{OutcomeFailed, true},
		{OutcomeInterrupted, true},
		{OutcomeUnsettled, false},
	}
	for _, c := range cases {
		if got := RestoreFiles(c.o); got != c.want {
			t.Errorf("RestoreFiles(%d) = %v, want %v", c.o, got, c.want)
		}
	}
}

func TestPendingAccepted(t *testing.T) {
	cases := []struct {
		name                     string
		system, running, profile string
		want                     bool
	}{
		{"confirmed, profile moved, boot entry settled", "/new", "/new", "/new", true},
		{"killed before the profile moved: settled back to old", "/new", "/old", "/old", false},
		{"killed after test, before settling (running new, profile old)", "/new", "/new", "/old", false},
		{"killed during the build: no system recorded", "", "/old", "/old", false},
		{"killed during the build of a system equal to the running one", "", "/new", "/new", false},
		{"profile on it but another system runs", "/new", "/old", "/new", false},
	}
	for _, c := range cases {
		if got := PendingAccepted(c.system, c.running, c.profile); got != c.want {
			t.Errorf("%s: PendingAccepted = %v, want %v", c.name, got, c.want)
		}
	}
}
