// Package tool runs the host's tools (nix, git, systemctl, switch-to-configuration…) bounded, with their
// output captured, and writes the agent's log: short lines on stderr, full tool output in the journal.
// Bounds: every line that reaches stderr is cut (the real command provider hangs on a line over 64 KiB).
package tool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	// EchoCut is the longest piece of a tool's line echoed to stderr or put in a message.
	EchoCut = 400
	// outputCap bounds what is kept of one tool's output in memory (the rest is dropped, and said so).
	outputCap = 8 << 20
	// killAfter: a tool that ignores SIGTERM this long is killed (as `timeout -k 10`).
	killAfter = 10 * time.Second
)

// Cut returns at most n bytes of s, never splitting a UTF-8 character.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// underJournal: under systemd (the timer, the activator) stderr is the journal already (JOURNAL_STREAM),
// so each line is written once; a push session's stderr goes to the deployer, so the journal gets a copy.
func underJournal() bool { return os.Getenv("JOURNAL_STREAM") != "" }

// Log writes one line to stderr and, outside systemd, to the journal (`logger -t auto-upgrade`).
// Neither can fail the run: a gone SSH session is noticed by the progress lines (see Ticker).
func Log(line string) {
	fmt.Fprintln(os.Stderr, Cut(line, 2000))
	if !underJournal() {
		cmd := exec.Command("logger", "-t", "auto-upgrade", "--", Cut(line, 8000))
		_ = cmd.Run()
	}
}

// Journal sends text to the journal, each line prefixed with `what: `.
func Journal(what string, out []byte) {
	if len(bytes.TrimSpace(out)) == 0 {
		return
	}
	var b bytes.Buffer
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		b.WriteString(what + ": " + l + "\n")
	}
	if underJournal() {
		_, _ = os.Stderr.Write(b.Bytes())
		return
	}
	cmd := exec.Command("logger", "-t", "auto-upgrade")
	cmd.Stdin = &b
	_ = cmd.Run()
}

// Echo writes the last 15 lines of out to stderr, each cut to EchoCut bytes.
func Echo(out []byte) {
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	for _, l := range lines {
		fmt.Fprintln(os.Stderr, Cut(l, EchoCut))
	}
}

// Summary is the last non-empty lines (at most 3) of out on one line, each cut, for messages.
func Summary(out []byte) string {
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	var keep []string
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			keep = append(keep, Cut(l, EchoCut))
		}
	}
	return strings.Join(keep, " | ")
}

// Result of one tool run.
type Result struct {
	Code   int    // exit status; 124 when the bound ran out
	Out    []byte // stderr (and stdout unless Stdout was given), bounded
	Stdout []byte // stdout when Spec.SplitStdout
}

// OK says whether the tool exited 0.
func (r Result) OK() bool { return r.Code == 0 }

// Spec is one tool invocation.
type Spec struct {
	Bound       time.Duration
	Argv        []string
	Env         []string  // added to the agent's environment
	Stdin       io.Reader // an *os.File is handed over as is (a tool may reopen /dev/stdin)
	SplitStdout bool      // stdout is data: keep it apart from stderr
}

// ErrStopped is returned when ctx ended (the agent was signalled): the tool was stopped.
type ErrStopped struct{ Cause error }

func (e *ErrStopped) Error() string { return "stopped: " + e.Cause.Error() }

type capped struct {
	b       bytes.Buffer
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := outputCap - c.b.Len(); room < len(p) {
		if room > 0 {
			c.b.Write(p[:room])
		}
		c.dropped += len(p) - max(room, 0)
		return len(p), nil
	}
	return c.b.Write(p)
}

// Run starts the tool in its own process group, stdin /dev/null unless given, and waits for it, at most
// Bound. Past the bound its group gets SIGTERM, then SIGKILL 10 s later, and the result is 124 with
// "(timed out after N s)" appended. When ctx ends first the group is stopped the same way and Run returns
// ErrStopped. A tool that cannot be started is exit 127 with the reason as its output.
func Run(ctx context.Context, s Spec) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{Code: -1}, &ErrStopped{context.Cause(ctx)}
	}
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if len(s.Env) > 0 {
		cmd.Env = append(os.Environ(), s.Env...)
	}
	if s.Stdin != nil {
		cmd.Stdin = s.Stdin
	}
	var out, stdout capped
	cmd.Stderr = &out
	if s.SplitStdout {
		cmd.Stdout = &stdout
	} else {
		cmd.Stdout = &out
	}
	if err := cmd.Start(); err != nil {
		return Result{Code: 127, Out: []byte(err.Error() + "\n")}, nil
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	bound := time.NewTimer(s.Bound)
	defer bound.Stop()
	timedOut := false
	var stopped error
	select {
	case err := <-done:
		return finish(cmd, err, &out, &stdout, false, s.Bound), nil
	case <-bound.C:
		timedOut = true
	case <-ctx.Done():
		stopped = context.Cause(ctx)
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	var err error
	select {
	case err = <-done:
	case <-time.After(killAfter):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		err = <-done
	}
	r := finish(cmd, err, &out, &stdout, timedOut, s.Bound)
	if stopped != nil {
		return r, &ErrStopped{stopped}
	}
	return r, nil
}

func finish(cmd *exec.Cmd, err error, out, stdout *capped, timedOut bool, bound time.Duration) Result {
	code := 0
	if err != nil {
		code = 1
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() >= 0 {
			code = cmd.ProcessState.ExitCode()
		} else if cmd.ProcessState != nil {
			code = 128 + int(cmd.ProcessState.Sys().(syscall.WaitStatus).Signal())
		}
	}
	if out.dropped > 0 {
		fmt.Fprintf(&out.b, "(%d more bytes of output dropped)\n", out.dropped)
	}
	if timedOut {
		code = 124
		fmt.Fprintf(&out.b, "(timed out after %d s)\n", int(bound.Seconds()))
	}
	return Result{Code: code, Out: out.b.Bytes(), Stdout: stdout.b.Bytes()}
}
