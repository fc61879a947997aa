package lease

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"nixfleet/agent/internal/decide"
)

func files(t *testing.T) File {
	d := t.TempDir()
	return File{Path: filepath.Join(d, "lease"), LockPath: filepath.Join(d, "lock")}
}

// The child half of TestHeartbeatOutlivesTTL: a process that takes the lease with a 2 s TTL (the file keeps whole seconds) and then
// spends 4.5 s in one "phase" (a sleep that never renews anything itself).
func TestMain(m *testing.M) {
	if dir := os.Getenv("LEASE_TEST_HOLDER"); dir != "" {
		f := File{Path: filepath.Join(dir, "lease"), LockPath: filepath.Join(dir, "lock")}
		h := NewHolder(f, "push:0123456789abcdef")
		h.TTL, h.Interval = 2*time.Second, 200*time.Millisecond
		if ok, err := h.Try(func(decide.Lease) {}); !ok || err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("held\n")
		time.Sleep(4500 * time.Millisecond) // the phase: longer than the TTL
		_ = h.Release()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want decide.Lease
	}{
		{"owner=push:0123456789abcdef pid=42 expires=1700000000\n", decide.Lease{Owner: "push:0123456789abcdef", Pid: 42, Expires: 1700000000, Valid: true}},
		{"owner=timer:42 pid=42 expires=9 boot=b-1 start=777\n", decide.Lease{Owner: "timer:42", Pid: 42, Expires: 9, Boot: "b-1", Start: "777", Valid: true}},
		{"owner=timer:7 pid=7 expires=5", decide.Lease{Owner: "timer:7", Pid: 7, Expires: 5, Valid: true}},
		{"garbage", decide.Lease{}},
		{"owner=x pid=abc expires=5", decide.Lease{Owner: "x", Expires: 5}},
	} {
		if got := Parse(c.in); got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Fatal("this process is alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if Alive(cmd.Process.Pid) {
		t.Fatal("a reaped process is dead")
	}
	// A zombie (exited, not reaped) is dead too.
	z := exec.Command("true")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for Alive(z.Process.Pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if Alive(z.Process.Pid) {
		t.Fatal("a zombie counts as alive")
	}
	_ = z.Wait()
}

// A phase longer than the lease's TTL: the holder's heartbeat keeps the lease live, so nobody reclaims it;
// once the holder releases it, it is free.
func TestHeartbeatOutlivesTTL(t *testing.T) {
	f := files(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "LEASE_TEST_HOLDER="+filepath.Dir(f.Path))
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "held\n" {
		t.Fatalf("the holder did not take the lease: %q", line)
	}
	start := time.Now()
	other := NewHolder(f, "timer:1")
	for time.Since(start) < 4*time.Second {
		if !f.Live() {
			t.Fatalf("after %v (TTL 2 s) the holder's lease is not live: %q", time.Since(start), f.Raw())
		}
		// The heartbeat keeps the expiry ahead of the clock (a lease without identity would need it).
		if l := f.Read(); l.Expires <= time.Now().Unix() {
			t.Fatalf("after %v the expiry %d is not renewed", time.Since(start), l.Expires)
		}
		if ok, _ := other.Try(func(decide.Lease) { t.Error("a live lease was reclaimed") }); ok {
			t.Fatal("another owner took a live lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	if _, err := os.Stat(f.Path); !os.IsNotExist(err) {
		t.Fatalf("the holder released its lease, yet the file is there: %q", f.Raw())
	}
}

// A lease without the holder's identity (written by an older agent, or by hand) expires after its TTL
// and is reclaimed, and the reclaim sees the stale lease.
func TestNoIdentityExpires(t *testing.T) {
	f := files(t)
	line := fmt.Sprintf("owner=push:0123456789abcdef pid=%d expires=%d\n", os.Getpid(), time.Now().Add(time.Second).Unix())
	if err := os.WriteFile(f.Path, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if !f.Live() {
		t.Fatal("fresh lease of a live pid is live")
	}
	time.Sleep(1100 * time.Millisecond)
	var stale decide.Lease
	h := NewHolder(f, "timer:9")
	ok, err := h.Try(func(l decide.Lease) { stale = l })
	if !ok || err != nil {
		t.Fatalf("expired lease not reclaimed: %v %v", ok, err)
	}
	defer h.Release()
	if stale.Owner != "push:0123456789abcdef" {
		t.Fatalf("reclaim saw %+v", stale)
	}
	if got := f.Read(); got.Owner != "timer:9" || got.Pid != os.Getpid() || got.Boot != BootID() || got.Start != Process(os.Getpid()).Start {
		t.Fatalf("lease now %+v", got)
	}
}

// The agent's lease names its holder: the same process holds it past its expiry (a host suspended in the
// middle of a run resumes with every expiry in the past), and a process that got a dead holder's pid does not.
func TestIdentityOutlivesExpiryAndCatchesPidReuse(t *testing.T) {
	f := files(t)
	if err := f.Write("push:0123456789abcdef", os.Getpid(), -time.Minute); err != nil {
		t.Fatal(err)
	}
	l := f.Read()
	if l.Expires >= time.Now().Unix() || l.Boot == "" || l.Start == "" {
		t.Fatalf("want an expired lease with identity, got %+v", l)
	}
	if !f.Live() {
		t.Fatal("the same live process lost its lease to its expiry")
	}
	if ok, _ := NewHolder(f, "timer:1").Try(func(decide.Lease) { t.Error("reclaimed") }); ok {
		t.Fatal("another owner took it")
	}
	reused := fmt.Sprintf("owner=push:0123456789abcdef pid=%d expires=%d boot=%s start=1\n", os.Getpid(), time.Now().Add(time.Hour).Unix(), BootID())
	if err := os.WriteFile(f.Path, []byte(reused), 0o644); err != nil {
		t.Fatal(err)
	}
	if f.Live() {
		t.Fatal("a lease whose pid another process carries now is live")
	}
	otherBoot := fmt.Sprintf("owner=push:0123456789abcdef pid=%d expires=%d boot=another-boot start=%s\n", os.Getpid(), time.Now().Add(time.Hour).Unix(), Process(os.Getpid()).Start)
	if err := os.WriteFile(f.Path, []byte(otherBoot), 0o644); err != nil {
		t.Fatal(err)
	}
	if f.Live() {
		t.Fatal("a lease from before a reboot is live")
	}
}

func TestTakeOverAndRelease(t *testing.T) {
	f := files(t)
	// The push (another pid) holds it; the activator takes it over under the same owner name.
	if err := f.Write("push:0123456789abcdef", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	wrong := NewHolder(f, "push:ffffffffffffffff")
	if ok, _ := wrong.TakeOver(); ok {
		t.Fatal("took over another rollout's lease")
	}
	h := NewHolder(f, "push:0123456789abcdef")
	if ok, err := h.TakeOver(); !ok || err != nil {
		t.Fatalf("takeover: %v %v", ok, err)
	}
	if !h.Holds() {
		t.Fatal("after takeover this pid holds it")
	}
	// The push (pid 1 here) may no longer release it.
	old := &Holder{File: f, Owner: "push:0123456789abcdef", Pid: 1}
	if err := old.Release(); err != nil || !h.Holds() {
		t.Fatal("a former holder released the lease")
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Path); !os.IsNotExist(err) {
		t.Fatal("released lease still there")
	}
}

func TestLockTimesOut(t *testing.T) {
	f := files(t)
	inner := make(chan error, 1)
	err := f.WithLock(func() error {
		// flock locks belong to the open file description: a second open in this process conflicts.
		go func() { inner <- f.WithLock(func() error { return nil }) }()
		select {
		case e := <-inner:
			t.Errorf("second lock taken while held: %v", e)
		case <-time.After(300 * time.Millisecond):
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := <-inner; e != nil {
		t.Fatalf("the waiter gets the lock once it is free: %v", e)
	}
}
