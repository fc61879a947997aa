package main

// One command on the host, as pulumi-command v1.2.1 runs it (behaviour read from its source, not copied):
//   - `environment`: SSH "env" requests; one the server refuses (no AcceptEnv) is an error log and fails the command;
//   - PULUMI_COMMAND_STDOUT/STDERR (previous outputs, if non-empty) unless addPreviousOutputInEnv is false: a refusal
//     is a warning ("Unable to set 'PULUMI_COMMAND_STDOUT'. …") and the command runs anyway;
//   - stdin only when non-empty; no PTY;
//   - logged streams go through one line scanner with a 64 KiB line limit. In the real provider a longer line stops
//     the scanner, nothing reads the pipe any more and the operation hangs for good; the stand-in fails loudly;
//   - a failure reads "<ssh error>: running "<command>":\n<stdout and stderr, interleaved, in full>";
//   - neither cancellation nor customTimeouts stop a running command (the context only ends dial retries).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

type runSpec struct {
	conn    connection
	command string
	stdin   string
	env     map[string]string // `environment`
	prevEnv map[string]string // PULUMI_COMMAND_STDOUT/STDERR of the previous run, when offered
	logging string            // which streams are logged to the engine as status lines
	urn     string
}

// maxLogLine is bufio.Scanner's default token limit: the real provider's logger cannot pass a longer line.
const maxLogLine = bufio.MaxScanTokenSize

var errLongLine = errors.New("stand-in: output line over 64 KiB; the real provider would hang here " +
	"(its output logger stops at a line of 65536 bytes or more and the command never completes)")

const setenvHelp = `Unable to set '%s'. This only works if your SSH server is configured to accept
	these variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the remote host, you could
	prefix the command itself with the variables in the form 'VAR=value command'`

// lockedBuffer: stdout and stderr are copied by two goroutines into the one combined buffer.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runRemote runs spec.command over one new SSH connection and returns its stdout and stderr, one trailing newline
// trimmed from each.
func (p *provider) runRemote(ctx context.Context, spec runSpec) (string, string, error) {
	client, err := p.dial(ctx, spec.urn, spec.conn)
	if err != nil {
		return "", "", err
	}
	// Never closed, like the real provider: the client's reader goroutine keeps it alive, so the connection (and
	// the host's sshd process for it) lives until the provider exits at the end of the engine operation.

	sess, err := client.NewSession()
	if err != nil {
		return "", "", err
	}
	defer sess.Close()

	for _, k := range sortedKeys(spec.env) {
		if err := sess.Setenv(k, spec.env[k]); err != nil {
			p.log(ctx, spec.urn, pulumirpc.LogSeverity_ERROR, fmt.Sprintf(setenvHelp, k), false)
			return "", "", fmt.Errorf("could not set environment variable %q: %w", k, err)
		}
	}
	for _, k := range sortedKeys(spec.prevEnv) {
		if v := spec.prevEnv[k]; v != "" {
			if err := sess.Setenv(k, v); err != nil {
				p.log(ctx, spec.urn, pulumirpc.LogSeverity_WARNING, fmt.Sprintf(setenvHelp, k), false)
			}
		}
	}
	if spec.stdin != "" {
		sess.Stdin = strings.NewReader(spec.stdin)
	}

	var stdout, stderr bytes.Buffer
	var combined lockedBuffer
	pr, pw := io.Pipe()
	outs := []io.Writer{&stdout, &combined}
	errs := []io.Writer{&stderr, &combined}
	mode := spec.logging
	if mode == "" || mode == "stdout" || mode == "stdoutAndStderr" {
		outs = append(outs, pw)
	}
	if mode == "" || mode == "stderr" || mode == "stdoutAndStderr" {
		errs = append(errs, pw)
	}
	sess.Stdout = io.MultiWriter(outs...)
	sess.Stderr = io.MultiWriter(errs...)

	tooLong := make(chan struct{})
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.log(ctx, spec.urn, pulumirpc.LogSeverity_INFO, sc.Text(), true)
		}
		if errors.Is(sc.Err(), bufio.ErrTooLong) {
			close(tooLong)
			_, _ = io.Copy(io.Discard, pr) // keep the session's copiers moving so it can be torn down
		}
	}()

	done := make(chan error, 1)
	go func() { done <- sess.Run(spec.command) }()
	select {
	case err = <-done:
	case <-tooLong:
		// The real provider blocks here for ever. Stop instead: drop the connection (the remote command is not
		// killed; it gets EOF/SIGPIPE on its next write) and fail.
		_ = client.Close()
		<-done
	}
	_ = pw.Close()
	<-logged
	select {
	case <-tooLong:
		return "", "", errLongLine
	default:
	}
	if err != nil {
		return "", "", fmt.Errorf("%w: running %q:\n%s", err, spec.command, combined.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n"), strings.TrimSuffix(stderr.String(), "\n"), nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ---- engine logging ------------------------------------------------------------------------------------------

func (p *provider) log(ctx context.Context, urn string, sev pulumirpc.LogSeverity, msg string, ephemeral bool) {
	if p.engine == nil {
		return
	}
	// Not tied to cancellation: a cancelled operation's command keeps running and keeps logging.
	_, _ = p.engine.Log(context.WithoutCancel(ctx), &pulumirpc.LogRequest{
		Severity: sev, Message: msg, Urn: urn, Ephemeral: ephemeral,
	})
}
