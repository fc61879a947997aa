package watch

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestDirSeesRenameInto(t *testing.T) {
	d := t.TempDir()
	w, err := WatchDir(d)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tmp := filepath.Join(d, "x.new")
	if err := os.WriteFile(tmp, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d, "x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C:
	case <-time.After(5 * time.Second):
		t.Fatal("no event for a file written and renamed into the directory")
	}
}

func TestExitOfAChild(t *testing.T) {
	cmd := exec.Command("sleep", "0.3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch, stop := Exit(cmd.Process.Pid, func(int) bool { return true })
	defer stop()
	go cmd.Wait()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no exit seen for a process that ended")
	}
}

func TestExitStop(t *testing.T) {
	ch, stop := Exit(os.Getpid(), func(int) bool { return true })
	stop()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end the wait")
	}
}
