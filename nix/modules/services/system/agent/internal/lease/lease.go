// Package lease is the host's upgrade lease (docs/rollout.md §4): one line
// `owner=<push:T|timer:PID> pid=<pid> expires=<epoch> boot=<boot id> start=<start time>` in
// $STATE_DIR/lease, read and written under an exclusive flock of $STATE_DIR/lock. A holder renews the
// expiry from a heartbeat goroutine for as long as it runs, whatever its phase is doing. A lease whose
// process died, or that another process's pid now carries, is reclaimable; one without the holder's
// identity (boot, start) also once it expired (decide.LeaseLive).
package lease

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"nixfleet/agent/internal/decide"
)

// TTL is how long a lease lives without a heartbeat; Interval is how often the holder renews it.
const (
	TTL      = 90 * time.Second
	Interval = 15 * time.Second
	// LockWait bounds the wait for the lock (it is only ever held for a few file operations).
	LockWait = 30 * time.Second
)

// File is a lease file and its lock.
type File struct {
	Path, LockPath string
}

// Read parses the lease file; an absent or malformed one is not Valid.
func (f File) Read() decide.Lease {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return decide.Lease{}
	}
	return Parse(string(b))
}

// Raw is the lease file's text (for messages), without its newline.
func (f File) Raw() string {
	b, _ := os.ReadFile(f.Path)
	return strings.TrimSpace(string(b))
}

// Parse reads `owner=X pid=N expires=E`.
func Parse(s string) decide.Lease {
	var l decide.Lease
	fields := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			fields[k] = v
		}
	}
	pid, perr := strconv.Atoi(fields["pid"])
	exp, eerr := strconv.ParseInt(fields["expires"], 10, 64)
	l.Owner, l.Pid, l.Expires, l.Boot, l.Start = fields["owner"], pid, exp, fields["boot"], fields["start"]
	l.Valid = perr == nil && eerr == nil && pid > 0
	return l
}

// Write replaces the lease (temp file + rename), naming the holder by boot id and start time when the
// host tells them.
func (f File) Write(owner string, pid int, ttl time.Duration) error {
	tmp := f.Path + ".new"
	line := fmt.Sprintf("owner=%s pid=%d expires=%d", owner, pid, time.Now().Add(ttl).Unix())
	if p := Process(pid); p.Alive && p.Start != "" && BootID() != "" {
		line += fmt.Sprintf(" boot=%s start=%s", BootID(), p.Start)
	}
	line += "\n"
	if err := os.WriteFile(tmp, []byte(line), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, f.Path)
}

// Remove deletes the lease file.
func (f File) Remove() error {
	err := os.Remove(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Process: whether pid exists and is not a zombie (its parent has not reaped it yet), and its start time.
func Process(pid int) decide.Proc {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return decide.Proc{}
	}
	// The fields follow the command name in parentheses, which may itself hold spaces or ')': state is
	// the 3rd field, starttime the 22nd.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return decide.Proc{}
	}
	rest := strings.Fields(s[i+2:])
	p := decide.Proc{Alive: len(rest) > 0 && rest[0] != "Z"}
	if len(rest) > 19 {
		p.Start = rest[19]
	}
	return p
}

// Alive: the process exists and is not a zombie.
func Alive(pid int) bool { return Process(pid).Alive }

var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// BootID is this boot's id ("" if the kernel does not say).
func BootID() string { return bootID() }

// LiveLease says whether l is held by a live process (decide.LeaseLive on this host, now).
func LiveLease(l decide.Lease) bool {
	return decide.LeaseLive(l, time.Now().Unix(), BootID(), Process)
}

// Live says whether the lease is held by a live process.
func (f File) Live() bool { return LiveLease(f.Read()) }

// WithLock runs fn holding the exclusive lock, waiting at most LockWait for it.
func (f File) WithLock(fn func() error) error {
	lf, err := os.OpenFile(f.LockPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() { got <- syscall.Flock(int(lf.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			lf.Close()
			return err
		}
	case <-time.After(LockWait):
		// The blocked flock gets the lock some day: release it then.
		go func() { <-got; lf.Close() }()
		return fmt.Errorf("%s stayed locked for %d s", f.LockPath, int(LockWait.Seconds()))
	}
	defer lf.Close() // closing the last descriptor releases the flock
	return fn()
}

// Holder is this process's hold of the lease under one owner name, kept alive by a heartbeat.
type Holder struct {
	File     File
	Owner    string
	Pid      int
	TTL      time.Duration
	Interval time.Duration

	mu   sync.Mutex
	stop chan struct{}
	done chan struct{}
}

// NewHolder prepares a hold for owner by this process with the default TTL and interval.
func NewHolder(f File, owner string) *Holder {
	return &Holder{File: f, Owner: owner, Pid: os.Getpid(), TTL: TTL, Interval: Interval}
}

// Try takes the lease unless a live one is held (false). A stale lease is handed to reclaim first (under
// the lock), which rewrites the dead holder's "running" status.
func (h *Holder) Try(reclaim func(stale decide.Lease)) (bool, error) {
	taken := false
	err := h.File.WithLock(func() error {
		l := h.File.Read()
		if LiveLease(l) {
			return nil
		}
		reclaim(l)
		if err := h.File.Remove(); err != nil {
			return err
		}
		taken = true
		return h.File.Write(h.Owner, h.Pid, h.TTL)
	})
	if err != nil || !taken {
		return false, err
	}
	h.start()
	return true, nil
}

// TakeOver: the activator takes its own push's lease (its pid becomes the holder); false if the lease is
// not that owner's any more.
func (h *Holder) TakeOver() (bool, error) {
	ok := false
	err := h.File.WithLock(func() error {
		if h.File.Read().Owner != h.Owner {
			return nil
		}
		ok = true
		return h.File.Write(h.Owner, h.Pid, h.TTL)
	})
	if err != nil || !ok {
		return false, err
	}
	h.start()
	return true, nil
}

// Renew extends the lease if this process still holds it.
func (h *Holder) Renew() error {
	return h.File.WithLock(func() error {
		if !decide.LeaseMine(h.File.Read(), h.Owner, h.Pid) {
			return nil
		}
		return h.File.Write(h.Owner, h.Pid, h.TTL)
	})
}

// Holds says whether the lease file names this process as holder.
func (h *Holder) Holds() bool { return decide.LeaseMine(h.File.Read(), h.Owner, h.Pid) }

// Release stops the heartbeat and removes the lease if this process still holds it.
func (h *Holder) Release() error {
	h.halt()
	return h.File.WithLock(func() error {
		if decide.LeaseMine(h.File.Read(), h.Owner, h.Pid) {
			return h.File.Remove()
		}
		return nil
	})
}

func (h *Holder) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop != nil {
		return
	}
	h.stop, h.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		t := time.NewTicker(h.Interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = h.Renew()
			}
		}
	}(h.stop, h.done)
}

func (h *Holder) halt() {
	h.mu.Lock()
	stop, done := h.stop, h.done
	h.stop, h.done = nil, nil
	h.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
