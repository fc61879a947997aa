package tool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCutNeverSplitsACharacter(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"a∅b", 2, "a"}, // ∅ is 3 bytes: cut inside it drops it
		{"a∅b", 4, "a∅"},
		{"∅", 0, ""},
	} {
		if got := Cut(c.in, c.n); got != c.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestSummary(t *testing.T) {
	out := []byte("one\n\ntwo\n   \nthree\n" + strings.Repeat("x", 1000) + "\n")
	got := Summary(out)
	if got != "three | "+strings.Repeat("x", EchoCut) {
		t.Fatalf("Summary = %q", got)
	}
}

func TestRunExitCodeAndOutput(t *testing.T) {
	r, err := Run(context.Background(), Spec{Bound: 10 * time.Second, Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
	if err != nil || r.Code != 3 || !strings.Contains(string(r.Out), "out") || !strings.Contains(string(r.Out), "err") {
		t.Fatalf("%+v %v", r, err)
	}
	r, _ = Run(context.Background(), Spec{Bound: 10 * time.Second, Argv: []string{"sh", "-c", "echo data; echo noise >&2"}, SplitStdout: true})
	if string(r.Stdout) != "data\n" || string(r.Out) != "noise\n" {
		t.Fatalf("split: %+v", r)
	}
	r, _ = Run(context.Background(), Spec{Bound: time.Second, Argv: []string{"/nonexistent/tool"}})
	if r.Code != 127 {
		t.Fatalf("missing tool: %+v", r)
	}
}

func TestRunBoundStopsTheWholeGroup(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "late")
	start := time.Now()
	// The grandchild would write the marker after 3 s: the group is stopped at the bound (1 s).
	r, err := Run(context.Background(), Spec{Bound: time.Second, Argv: []string{"sh", "-c", "(sleep 3; touch " + marker + ") & wait"}})
	if err != nil || r.Code != 124 || !strings.HasSuffix(string(r.Out), "(timed out after 1 s)\n") {
		t.Fatalf("%+v %v", r, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	time.Sleep(3 * time.Second)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a grandchild outlived the bound")
	}
}

func TestRunStoppedByContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel(errors.New("SIGTERM")) }()
	_, err := Run(ctx, Spec{Bound: time.Minute, Argv: []string{"sleep", "30"}})
	var stopped *ErrStopped
	if !errors.As(err, &stopped) || stopped.Cause.Error() != "SIGTERM" {
		t.Fatalf("want ErrStopped(SIGTERM), got %v", err)
	}
	if _, err := Run(ctx, Spec{Bound: time.Minute, Argv: []string{"true"}}); !errors.As(err, &stopped) {
		t.Fatal("a stopped run starts no more tools")
	}
}

func TestRunKeepsABoundedOutput(t *testing.T) {
	r, _ := Run(context.Background(), Spec{Bound: time.Minute, Argv: []string{"sh", "-c", "head -c 9000000 /dev/zero"}})
	if len(r.Out) > outputCap+100 || !strings.Contains(string(r.Out[outputCap:]), "more bytes of output dropped") {
		t.Fatalf("kept %d bytes", len(r.Out))
	}
}
