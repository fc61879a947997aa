// Package watch gives the agent's waits something to wait on instead of a sleep loop: changes in a
// directory (inotify) and the exit of a process (pidfd). Both are read through Go's poller, so a wait is
// one select over channels and timers.
package watch

import (
	"os"
	"syscall"
	"time"
	"unsafe"
)

// Dir reports changes of the entries of one directory on C (coalesced: one pending signal at most).
type Dir struct {
	C chan struct{}
	f *os.File
}

// WatchDir watches path for entries created, written, renamed or removed.
func WatchDir(path string) (*Dir, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	mask := uint32(syscall.IN_CREATE | syscall.IN_CLOSE_WRITE | syscall.IN_MOVED_TO | syscall.IN_MOVED_FROM | syscall.IN_DELETE)
	if _, err := syscall.InotifyAddWatch(fd, path, mask); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("inotify_add_watch", err)
	}
	d := &Dir{C: make(chan struct{}, 1), f: os.NewFile(uintptr(fd), "inotify")}
	go d.loop()
	return d, nil
}

func (d *Dir) loop() {
	buf := make([]byte, 64*(syscall.SizeofInotifyEvent+syscall.NAME_MAX+1))
	for {
		n, err := d.f.Read(buf)
		if err != nil {
			return // closed
		}
		if n >= int(unsafe.Sizeof(syscall.InotifyEvent{})) {
			select {
			case d.C <- struct{}{}:
			default:
			}
		}
	}
}

// Close stops the watch.
func (d *Dir) Close() { _ = d.f.Close() }

const sysPidfdOpen = 434 // the same number on every Linux architecture (since 5.3)

// Exit returns a channel closed when process pid ends. It waits on a pidfd; on kernels without
// pidfd_open it looks at /proc once a second instead. stop ends the wait early.
func Exit(pid int, alive func(int) bool) (ch <-chan struct{}, stop func()) {
	done := make(chan struct{})
	quit := make(chan struct{})
	var once bool
	stop = func() {
		if !once {
			once = true
			close(quit)
		}
	}
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno == 0 {
		if err := syscall.SetNonblock(int(fd), true); err == nil {
			f := os.NewFile(fd, "pidfd")
			go func() {
				<-quit
				f.Close()
			}()
			go func() {
				defer close(done)
				rc, err := f.SyscallConn()
				if err != nil {
					return
				}
				// The pidfd becomes readable when the process exits; nothing is read from it.
				first := true
				_ = rc.Read(func(uintptr) bool {
					if first {
						first = false
						return false // wait for readability
					}
					return true
				})
			}()
			return done, stop
		}
		syscall.Close(int(fd))
	}
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for alive(pid) {
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return done, stop
}
